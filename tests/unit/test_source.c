/*
 * test_source.c - untrusted files of a term: the config.json and index
 * parsers (source.h), containment and file types of rfs_root_open
 * (util.h), and change detection of a source file's identity (ident.h).
 * Files live in a mkdtemp directory removed at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/ident.h"
#include "core/source.h"
#include "core/util.h"

/* ---------------------------------------------------------------- helpers */

static char tmpdir[256];

static void put(const char *rel, const char *text, mode_t mode)
{
	char p[512];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", tmpdir, rel);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, mode);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	chmod(p, mode);
}

static void mkd(const char *rel)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", tmpdir, rel);
	assert_int_equal(mkdir(p, 0755), 0);
}

static void lnk(const char *target, const char *rel)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/%s", tmpdir, rel);
	assert_int_equal(symlink(target, p), 0);
}

static char *at(const char *rel)
{
	static char p[512];

	snprintf(p, sizeof(p), "%s/%s", tmpdir, rel);
	return p;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/residfs-test-source-XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int config(const char *text, struct rfs_src_config *c, struct rfs_err *err)
{
	memset(err, 0, sizeof(*err));
	return rfs_src_parse_config(text, strlen(text), "d/config.json", c, err);
}

/* ---------------------------------------------------------------- config */

static void test_config_kinds(void **state)
{
	struct rfs_src_config c;
	struct rfs_err err;

	(void)state;
	assert_int_equal(config("{\"model_type\": \"llama\", \"vocab_size\": 32000}", &c, &err), 0);
	assert_int_equal(c.kind, RFS_SRC_MODEL);
	assert_int_equal(c.vocab_size, 32000);
	assert_int_equal(c.tie_word_embeddings, 1);
	assert_int_equal(config("{\"architectures\": [\"X\"], \"tie_word_embeddings\": false}\n\n",
				&c, &err), 0);
	assert_int_equal(c.kind, RFS_SRC_MODEL);
	assert_int_equal(c.vocab_size, -1);
	assert_int_equal(c.tie_word_embeddings, 0);
	assert_int_equal(config("{\"residuals_version\": \"0.3.2\", \"param_count\": 3, \"tags\": [\"a\"]}",
				&c, &err), 0);
	assert_int_equal(c.kind, RFS_SRC_RESIDUALS);
	assert_int_equal(config("{\"model_type\": \"llama\", \"vocab_size\": null}", &c, &err), 0);
	assert_int_equal(c.vocab_size, -1);
}

static void test_config_refused(void **state)
{
	static const struct { const char *text, *says; } bad[] = {
		{ "{\"model_type\": \"x\"} junk", "after the JSON" },
		{ "{\"model_type\": \"x\"}}", "after the JSON" },
		{ "[1, 2]", "not a JSON object" },
		{ "{\"model_type\": ", "not valid JSON" },
		{ "{\"name\": \"x\"}", "neither" },
		{ "{\"model_type\": \"x\", \"vocab_size\": 1e300}", "vocab_size" },
		{ "{\"model_type\": \"x\", \"vocab_size\": -1}", "vocab_size" },
		{ "{\"model_type\": \"x\", \"vocab_size\": 0}", "vocab_size" },
		{ "{\"model_type\": \"x\", \"vocab_size\": 2.5}", "vocab_size" },
		{ "{\"model_type\": \"x\", \"vocab_size\": \"7\"}", "vocab_size" },
		{ "{\"model_type\": \"x\", \"vocab_size\": 2147483648}", "vocab_size" },
		{ "{\"model_type\": \"x\", \"tie_word_embeddings\": 1}", "tie_word_embeddings" },
		{ "{\"residuals_version\": {}}", "residuals_version" },
		{ "{\"residuals_version\": \"1\", \"param_count\": \"3\"}", "param_count" },
		{ "{\"residuals_version\": \"1\", \"param_count\": 1.5}", "param_count" },
		{ "{\"residuals_version\": \"1\", \"tags\": [1]}", "tags" },
		{ "{\"residuals_version\": \"1\", \"dtype\": 16}", "dtype" },
	};
	struct rfs_src_config c = { .kind = 99 };
	struct rfs_err err;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = config(bad[i].text, &c, &err);

		if (r != RFS_E_FORMAT || !strstr(err.msg, bad[i].says) || !strstr(err.msg, "d/config.json"))
			fail_msg("'%s' -> %d '%s', want a format error saying '%s'", bad[i].text, r,
				 err.msg, bad[i].says);
		assert_int_equal(c.kind, 99); /* untouched on failure */
	}
	/* a NUL inside the text */
	memset(&err, 0, sizeof(err));
	assert_int_equal(rfs_src_parse_config("{\"model_type\": \"x\"}\0", 21, "d/config.json", &c, &err),
			 RFS_E_FORMAT);
	assert_non_null(strstr(err.msg, "NUL"));
}


/* What a loader and residfs could read differently is refused (fuzz findings). */
static void test_config_ambiguities(void **state)
{
	static const struct { const char *text; size_t len; const char *says; } bad[] = {
		{ "{\"model_type\":\"llama\",\"vocab_size\":\x05 300}", 0, "control byte" },
		{ "{\"model_type\":\"ll\x01ama\"}", 0, "inside a string" },
		{ "{\"model_type\":\"llama\",\"vocab_size\":300,\"vocab_size\":312}", 0, "twice" },
		{ "{\"model_type\":\"llama\",\"x\":{\"a\":1,\"a\":2}}", 0, "twice" },
		{ "{\"model_type\":\"llama\",\"vocab_size\\u0000\":3}", 0, "escaped NUL" },
		{ "{\"model_type\":\"x\",\"vocab_size\\u00E)c\":3}", 0, "hex digits" },
	};
	struct rfs_src_config c;
	struct rfs_err err;
	char deep[1024];
	size_t i, n = 0, depth;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (config(bad[i].text, &c, &err) != RFS_E_FORMAT || !strstr(err.msg, bad[i].says))
			fail_msg("'%s' -> '%s', want a format error saying '%s'", bad[i].text, err.msg,
				 bad[i].says);
	/* nesting: 200 levels are fine, 201 are not */
	for (depth = 200; depth <= 201; depth++) {
		n = (size_t)snprintf(deep, sizeof(deep), "{\"model_type\":\"x\",\"a\":");
		for (i = 1; i < depth; i++)
			deep[n++] = '[';
		for (i = 1; i < depth; i++)
			deep[n++] = ']';
		deep[n++] = '}';
		deep[n] = 0;
		assert_int_equal(config(deep, &c, &err), depth == 200 ? 0 : RFS_E_FORMAT);
	}
	assert_non_null(strstr(err.msg, "nesting"));
	/* white space of JSON after a value is fine */
	assert_int_equal(config("{\"model_type\":\"x\",\t\"vocab_size\":\r\n 3}", &c, &err), 0);
	assert_int_equal(c.vocab_size, 3);
}

/* The span scanner decodes keys as a JSON parser does: the key a loader
 * reads is the one rewritten. */
static void test_json_span_escaped_keys(void **state)
{
	static const char text[] = "{\"model_type\":\"llama\",\"vocab\\u005fsize\":300,\"n\\\"q\":1}";
	static const char *const k1[] = { "vocab_size" };
	static const char *const k2[] = { "n\"q" };
	static const char *const k3[] = { "vocab_sizes" };
	struct rfs_json_patch pt = { k1, 1, "312" };
	struct rfs_src_config c;
	struct rfs_err err;
	size_t b, e, olen;
	char *out;

	(void)state;
	assert_int_equal(config(text, &c, &err), 0);
	assert_int_equal(c.vocab_size, 300);
	assert_int_equal(rfs_json_span(text, strlen(text), k1, 1, &b, &e), 0);
	assert_int_equal(e - b, 3);
	assert_memory_equal(text + b, "300", 3);
	assert_int_equal(rfs_json_span(text, strlen(text), k2, 1, &b, &e), 0);
	assert_memory_equal(text + b, "1", 1);
	assert_int_equal(rfs_json_span(text, strlen(text), k3, 1, &b, &e), -1);
	out = rfs_json_patch(text, strlen(text), &pt, 1, &olen);
	assert_non_null(out);
	assert_int_equal(config(out, &c, &err), 0);
	assert_int_equal(c.vocab_size, 312);
	free(out);
}

/* ---------------------------------------------------------------- index */

static int index_parse(const char *text, struct rfs_src_index *ix, struct rfs_err *err)
{
	memset(err, 0, sizeof(*err));
	return rfs_src_parse_index(text, strlen(text), "d/model.safetensors.index.json", ix, err);
}

static void test_index_ok(void **state)
{
	struct rfs_src_index ix;
	struct rfs_err err;

	(void)state;
	assert_int_equal(index_parse("{\"metadata\": {\"total_size\": 10}, \"weight_map\": {"
				     "\"b\": \"m-2.safetensors\", \"a\": \"m-1.safetensors\", "
				     "\"c\": \"m-2.safetensors\"}}", &ix, &err), 0);
	assert_int_equal(ix.nfiles, 2);
	assert_string_equal(ix.files[0], "m-1.safetensors");
	assert_string_equal(ix.files[1], "m-2.safetensors");
	assert_int_equal(ix.nmap, 3);
	assert_string_equal(ix.map[0].tensor, "b");
	assert_int_equal(ix.map[0].file, 1);
	assert_int_equal(ix.map[1].file, 0);
	rfs_src_index_release(&ix);
	assert_int_equal(ix.nfiles, 0);
}

static void test_index_refused(void **state)
{
	static const struct { const char *text, *says; } bad[] = {
		{ "{\"weight_map\": {\"a\": \"config.json\"}}", "shard name" },
		{ "{\"weight_map\": {\"a\": \"README.md\"}}", "shard name" },
		{ "{\"weight_map\": {\"a\": \"model.safetensors.index.json\"}}", "shard name" },
		{ "{\"weight_map\": {\"a\": \"model.safetensors\"}}", "shard name" },
		{ "{\"weight_map\": {\"a\": \"../x.safetensors\"}}", "shard name" },
		{ "{\"weight_map\": {\"a\": \".safetensors\"}}", "shard name" },
		{ "{\"weight_map\": {\"a\": 3}}", "shard name" },
		{ "{\"weight_map\": {\"a\": \"x.safetensors\", \"a\": \"y.safetensors\"}}", "twice" },
		{ "{\"weight_map\": {}}", "empty" },
		{ "{\"weight_map\": []}", "weight_map" },
		{ "{\"metadata\": 5, \"weight_map\": {\"a\": \"x.safetensors\"}}", "metadata" },
		{ "{\"weight_map\": {\"a\": \"x.safetensors\"}} x", "after the JSON" },
	};
	struct rfs_src_index ix;
	struct rfs_err err;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = index_parse(bad[i].text, &ix, &err);

		if (r != RFS_E_FORMAT || !strstr(err.msg, bad[i].says))
			fail_msg("'%s' -> %d '%s', want a format error saying '%s'", bad[i].text, r,
				 err.msg, bad[i].says);
		assert_int_equal(ix.nfiles, 0);
		assert_null(ix.files);
	}
}

/* ---------------------------------------------------------------- containment */

static int root_open(const struct rfs_root *r, const char *dir, const char *name,
		     struct rfs_err *err)
{
	struct stat st;
	int fd = -1, ret;

	memset(err, 0, sizeof(*err));
	ret = rfs_root_open(r, dir, name, &fd, &st, err);
	if (!ret) {
		assert_true(S_ISREG(st.st_mode));
		close(fd);
	}
	return ret;
}

static void test_root_containment(void **state)
{
	struct rfs_root r;
	struct rfs_err err;
	char dir[512];

	(void)state;
	mkd("m");
	put("secret", "s", 0600);
	put("m/file", "f", 0644);
	lnk("file", "m/inside");
	lnk("../secret", "m/outside");
	lnk(at("secret"), "m/outside-abs");
	lnk("/etc/passwd", "m/passwd");
	lnk("nowhere", "m/dangling");
	mkd("m/sub");
	assert_int_equal(mkfifo(at("m/fifo"), 0644), 0);
	snprintf(dir, sizeof(dir), "%s", at("m"));
	assert_int_equal(rfs_root_init(&r, dir, &err), 0);
	assert_null(r.blobs);
	assert_int_equal(root_open(&r, dir, "file", &err), 0);
	assert_int_equal(root_open(&r, dir, "inside", &err), 0);
	assert_int_equal(root_open(&r, dir, "outside", &err), RFS_E_FORMAT);
	assert_non_null(strstr(err.msg, "outside"));
	assert_int_equal(root_open(&r, dir, "outside-abs", &err), RFS_E_FORMAT);
	assert_int_equal(root_open(&r, dir, "passwd", &err), RFS_E_FORMAT);
	assert_int_equal(root_open(&r, dir, "dangling", &err), RFS_E_IO);
	/* a FIFO is refused at once, not opened for a writer that never comes */
	assert_int_equal(root_open(&r, dir, "fifo", &err), RFS_E_FORMAT);
	assert_non_null(strstr(err.msg, "not a regular file"));
	assert_int_equal(root_open(&r, dir, "sub", &err), RFS_E_FORMAT);
	rfs_root_release(&r);
}

static void test_root_hf_snapshot(void **state)
{
	struct rfs_root r;
	struct rfs_err err;
	char dir[512];

	(void)state;
	mkd("hub");
	mkd("hub/models--o--n");
	mkd("hub/models--o--n/blobs");
	mkd("hub/models--o--n/snapshots");
	mkd("hub/models--o--n/snapshots/abc");
	put("hub/models--o--n/blobs/123", "{}", 0644);
	put("hub/secret", "s", 0644);
	lnk("../../blobs/123", "hub/models--o--n/snapshots/abc/config.json");
	lnk("../../../secret", "hub/models--o--n/snapshots/abc/x.json");
	snprintf(dir, sizeof(dir), "%s", at("hub/models--o--n/snapshots/abc"));
	assert_int_equal(rfs_root_init(&r, dir, &err), 0);
	assert_non_null(r.blobs);
	assert_int_equal(root_open(&r, dir, "config.json", &err), 0);
	assert_int_equal(root_open(&r, dir, "x.json", &err), RFS_E_FORMAT);
	rfs_root_release(&r);
}

/* ---------------------------------------------------------------- identity */

static void test_ident_changes(void **state)
{
	static const char *const how[] = { "in place", "rename", "truncate", "delete", "fifo" };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(how) / sizeof(how[0]); i++) {
		struct rfs_ident id;
		struct rfs_err err = { 0 };
		struct stat st;
		char name[64], path[512];
		int fd;

		snprintf(name, sizeof(name), "id-%zu", i);
		put(name, "0123456789", 0644);
		snprintf(path, sizeof(path), "%s", at(name));
		fd = open(path, O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(fstat(fd, &st), 0);
		rfs_ident_init(&id, path, fd, &st);
		assert_int_equal(rfs_ident_check(&id, 1, &err), 0);
		assert_int_equal(rfs_ident_check(&id, 0, &err), 0);
		usleep(20000); /* past the file system's timestamp granularity */
		if (!strcmp(how[i], "in place")) {
			int w = open(path, O_WRONLY);

			assert_int_equal(pwrite(w, "9876543210", 10, 0), 10);
			close(w);
		} else if (!strcmp(how[i], "rename")) {
			put("new", "0123456789", 0644);
			assert_int_equal(rename(at("new"), path), 0);
		} else if (!strcmp(how[i], "truncate")) {
			assert_int_equal(truncate(path, 4), 0);
		} else if (!strcmp(how[i], "delete")) {
			assert_int_equal(unlink(path), 0);
		} else {
			assert_int_equal(unlink(path), 0);
			assert_int_equal(mkfifo(path, 0644), 0);
		}
		/* a change of the descriptor is seen at once; of the path, when forced */
		if (rfs_ident_check(&id, 1, &err) != RFS_E_CHANGED || !strstr(err.msg, path))
			fail_msg("%s: not seen as a change: '%s'", how[i], err.msg);
		/* sticky (reporting once is the byte source's: test_bsrc) */
		assert_int_equal(rfs_ident_check(&id, 0, &err), RFS_E_CHANGED);
		close(fd);
		unlink(path);
	}
}

static void test_ident_unchanged_touch_atime(void **state)
{
	struct rfs_ident id;
	struct rfs_err err = { 0 };
	struct stat st;
	char buf[4];
	int fd;

	(void)state;
	put("quiet", "abcd", 0644);
	fd = open(at("quiet"), O_RDONLY);
	assert_int_equal(fstat(fd, &st), 0);
	rfs_ident_init(&id, at("quiet"), fd, &st);
	assert_int_equal(pread(fd, buf, 4, 0), 4); /* reading changes nothing */
	assert_int_equal(rfs_ident_check(&id, 1, &err), 0);
	assert_int_equal(id.mode, 0644);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_kinds),
		cmocka_unit_test(test_config_refused),
		cmocka_unit_test(test_config_ambiguities),
		cmocka_unit_test(test_json_span_escaped_keys),
		cmocka_unit_test(test_index_ok),
		cmocka_unit_test(test_index_refused),
		cmocka_unit_test(test_root_containment),
		cmocka_unit_test(test_root_hf_snapshot),
		cmocka_unit_test(test_ident_changes),
		cmocka_unit_test(test_ident_unchanged_touch_atime),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
