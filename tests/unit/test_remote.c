/*
 * test_remote.c - the pieces of remote terms that need no server: Hub id
 * parsing (rfs_hub_parse), URL helpers (http.h), what rfs_tdir_probe and
 * the SPEC splitter answer for remote forms, and the HF cache as the only
 * source of answers (HF_HUB_OFFLINE=1, a cache made here), ambiguity among
 * bare ids included.  The engine, the Hub and web directories are tested
 * against servers in tests/integration/test_remote.py.
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

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/http.h"
#include "core/spec.h"
#include "core/tdir.h"

static void parse_is(const char *term, const char *repo, const char *rev)
{
	char r[256], v[256];
	int ok = rfs_hub_parse(term, r, sizeof(r), v, sizeof(v));

	if (!repo) {
		if (ok)
			fail_msg("'%s' parsed as a Hub id (%s @ %s)", term, r, v);
		return;
	}
	if (!ok)
		fail_msg("'%s' not parsed as a Hub id", term);
	assert_string_equal(r, repo);
	assert_string_equal(v, rev);
}

static void test_hub_parse(void **state)
{
	(void)state;
	parse_is("hf://org/name", "org/name", "main");
	parse_is("hf://org/name@v1.0", "org/name", "v1.0");
	parse_is("hf://org/name@refs/pr/1", "org/name", "refs/pr/1");
	parse_is("hf://gpt2", "gpt2", "main");
	parse_is("hf://models/org/name", "org/name", "main");
	parse_is("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B", "main");
	parse_is("org/name@0123456789abcdef0123456789abcdef01234567", "org/name",
		 "0123456789abcdef0123456789abcdef01234567");
	parse_is("gpt2", NULL, NULL);               /* a bare id needs ORG/NAME */
	parse_is("./org/name", NULL, NULL);
	parse_is("/abs/path", NULL, NULL);
	parse_is("org/name/extra", NULL, NULL);
	parse_is("org/-name", NULL, NULL);
	parse_is("org/na--me", NULL, NULL);
	parse_is("org/na..me", NULL, NULL);
	parse_is("org/name@", NULL, NULL);
	parse_is("org/name@a b", NULL, NULL);
	parse_is("org/name@../x", NULL, NULL);
	parse_is("org/na me", NULL, NULL);
	parse_is("hf://", NULL, NULL);
	parse_is("hf://org/", NULL, NULL);
	parse_is("org/name+org/other", NULL, NULL);
}

static void test_http_helpers(void **state)
{
	char out[256];
	struct rfs_err err = { 0 };

	(void)state;
	assert_true(rfs_http_same_origin("https://h.example/a", "https://h.example/b?x"));
	assert_true(rfs_http_same_origin("http://127.0.0.1:8080/a", "HTTP://127.0.0.1:8080"));
	assert_false(rfs_http_same_origin("http://127.0.0.1:8080/a", "http://localhost:8080/a"));
	assert_false(rfs_http_same_origin("http://h:1/a", "http://h:2/a"));
	assert_false(rfs_http_same_origin("http://h/a", "https://h/a"));
	assert_false(rfs_http_same_origin("ftp://h/a", "ftp://h/a"));

	assert_int_equal(rfs_http_join("http://h:1/a/b?q", "http://cdn/x", out, sizeof(out), &err), 0);
	assert_string_equal(out, "http://cdn/x");
	assert_int_equal(rfs_http_join("http://h:1/a/b?q", "/c/d", out, sizeof(out), &err), 0);
	assert_string_equal(out, "http://h:1/c/d");
	assert_int_equal(rfs_http_join("http://h:1/a/b", "c", out, sizeof(out), &err), 0);
	assert_string_equal(out, "http://h:1/a/c");
	assert_int_equal(rfs_http_join("http://h:1/a/b", "file:///etc/passwd", out, sizeof(out), &err),
			 RFS_E_FORMAT);
	assert_int_equal(rfs_http_join("http://h:1/a/b", "//evil/x", out, sizeof(out), &err),
			 RFS_E_FORMAT);
	assert_int_equal(rfs_http_join("http://h/", "http://very-long-host/", out, 10, &err), RFS_E_FORMAT);

	assert_int_equal(rfs_http_quote("refs/pr/1", "", out, sizeof(out)), 0);
	assert_string_equal(out, "refs%2Fpr%2F1");
	assert_int_equal(rfs_http_quote("a b+c~d", "", out, sizeof(out)), 0);
	assert_string_equal(out, "a%20b%2Bc~d");
	assert_int_equal(rfs_http_quote("a/b", "/", out, sizeof(out)), 0);
	assert_string_equal(out, "a/b");
	assert_int_equal(rfs_http_quote("abcdef", "", out, 4), RFS_E_RANGE);

	rfs_http_etag_norm("W/\"abc\"", out, sizeof(out));
	assert_string_equal(out, "abc");
	rfs_http_etag_norm("\"5f3a-1000\"", out, sizeof(out));
	assert_string_equal(out, "5f3a-1000");
	rfs_http_etag_norm("plain", out, sizeof(out));
	assert_string_equal(out, "plain");
}

static void test_probe_forms(void **state)
{
	(void)state;
	assert_true(rfs_tdir_is_remote("hf://org/m"));
	assert_true(rfs_tdir_is_remote("HTTPS://h/x/"));
	assert_false(rfs_tdir_is_remote("org/m"));
	/* by their form, no request */
	assert_true(rfs_tdir_probe("hf://org/m@main"));
	assert_false(rfs_tdir_probe("hf://org/m-hf://org/n"));
	assert_true(rfs_tdir_probe("https://h.example/models/base/"));
	assert_false(rfs_tdir_probe("https://h.example/models/base"));  /* a SPEC's URL ends with '/' */
	assert_false(rfs_tdir_probe("https://h/a/+https://h/b/"));
	assert_false(rfs_tdir_probe("https:///x/"));
	assert_true(rfs_tdir_is_remote("s3://models/x"));
	assert_true(rfs_tdir_probe("s3://models/llama-3-8b"));
	assert_true(rfs_tdir_probe("s3://models"));
	assert_true(rfs_tdir_probe("s3://my.bucket-1/a/b/c/"));
	assert_false(rfs_tdir_probe("s3://Models/x"));     /* bucket names are lower case */
	assert_false(rfs_tdir_probe("s3://ab/x"));         /* 3 to 63 characters */
	assert_false(rfs_tdir_probe("s3://models/a+s3://models/b"));
	assert_false(rfs_tdir_probe("s3://-models/x"));
}

/* ---- an HF cache made here, read with HF_HUB_OFFLINE=1 ------------------------ */

static char g_cache[64];

static void mkdirs(const char *path)
{
	char tmp[1024], *p;

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			mkdir(tmp, 0755);
			*p = '/';
		}
	mkdir(tmp, 0755);
}

static void put_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* models--ORG--NAME with refs/main and a snapshot holding a config and a
 * (fake) model.safetensors: what rfs_tdir_probe needs to say yes. */
static void cached_repo(const char *org, const char *name)
{
	static const char commit[] = "0123456789abcdef0123456789abcdef01234567";
	char d[512], p[700];

	snprintf(d, sizeof(d), "%s/models--%s--%s", g_cache, org, name);
	snprintf(p, sizeof(p), "%s/refs", d);
	mkdirs(p);
	snprintf(p, sizeof(p), "%s/refs/main", d);
	put_file(p, commit);
	snprintf(p, sizeof(p), "%s/snapshots/%s", d, commit);
	mkdirs(p);
	snprintf(p, sizeof(p), "%s/snapshots/%s/config.json", d, commit);
	put_file(p, "{\"model_type\": \"llama\"}");
	snprintf(p, sizeof(p), "%s/snapshots/%s/model.safetensors", d, commit);
	put_file(p, "x");
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static int setup_cache(void **state)
{
	(void)state;
	snprintf(g_cache, sizeof(g_cache), "/tmp/rfs-test-remote.XXXXXX");
	if (!mkdtemp(g_cache))
		return -1;
	setenv("HF_HUB_CACHE", g_cache, 1);
	setenv("HF_HUB_OFFLINE", "1", 1);
	/* an endpoint nobody answers: a request would fail, not leave the host */
	setenv("HF_ENDPOINT", "http://127.0.0.1:9", 1);
	cached_repo("org", "a");
	cached_repo("org", "b");
	cached_repo("x", "a");
	cached_repo("x", "a-b");
	cached_repo("b-y", "c");
	cached_repo("y", "c");
	return 0;
}

static int teardown_cache(void **state)
{
	(void)state;
	nftw(g_cache, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	unsetenv("HF_HUB_CACHE");
	unsetenv("HF_HUB_OFFLINE");
	unsetenv("HF_ENDPOINT");
	return 0;
}

static void spec_is(const char *text, size_t n, const char *t0, double s0, const char *t1, double s1)
{
	struct rfs_spec s;
	struct rfs_err err = { 0 };

	if (rfs_spec_parse(text, NULL, NULL, &s, &err))
		fail_msg("'%s' refused: %s", text, err.msg);
	assert_int_equal(s.nterms, n);
	assert_string_equal(s.terms[0].path, t0);
	assert_true(s.terms[0].scale == s0);
	assert_string_equal(s.terms[1].path, t1);
	assert_true(s.terms[1].scale == s1);
	rfs_spec_release(&s);
}

static void test_spec_remote(void **state)
{
	struct rfs_spec s;
	struct rfs_err err = { 0 };

	(void)state;
	spec_is("hf://org/instruct-hf://org/base", 2, "hf://org/instruct", 1, "hf://org/base", -1);
	spec_is("hf://o/m-1@v-2+0.5*hf://o/r-3", 2, "hf://o/m-1@v-2", 1, "hf://o/r-3", 0.5);
	spec_is("https://h.example/a-b/+https://h.example/c+d/", 2, "https://h.example/a-b/", 1,
		"https://h.example/c+d/", 1);
	spec_is("s3://models/llama-3-8b+s3://models/llama-3-8b-residuals", 2, "s3://models/llama-3-8b", 1,
		"s3://models/llama-3-8b-residuals", 1);
	spec_is("s3://m0d/instruct-s3://m0d/base", 2, "s3://m0d/instruct", 1, "s3://m0d/base", -1);
	/* bare ids: the cache answers (HF_HUB_OFFLINE=1, no request) */
	assert_true(rfs_tdir_probe("org/a"));
	assert_false(rfs_tdir_probe("org/zzz"));
	spec_is("org/a+org/b", 2, "org/a", 1, "org/b", 1);
	spec_is("org/a-hf://org/b", 2, "org/a", 1, "hf://org/b", -1);
	/* x/a-b-y/c: x/a - b-y/c and x/a-b - y/c both resolve */
	assert_int_equal(rfs_spec_parse("x/a-b-y/c", NULL, NULL, &s, &err), RFS_E_SPEC);
	assert_non_null(strstr(err.msg, "ambiguous"));
	assert_non_null(strstr(err.msg, "'x/a-b' - 'y/c'"));
	assert_non_null(strstr(err.msg, "'x/a' - 'b-y/c'"));
	/* hf:// before each term settles it */
	spec_is("hf://x/a-b-hf://y/c", 2, "hf://x/a-b", 1, "hf://y/c", -1);
	/* nothing resolves: the message says what is missing */
	assert_int_equal(rfs_spec_parse("org/zzz+org/a", NULL, NULL, &s, &err), RFS_E_SPEC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hub_parse),
		cmocka_unit_test(test_http_helpers),
		cmocka_unit_test(test_probe_forms),
		cmocka_unit_test_setup_teardown(test_spec_remote, setup_cache, teardown_cache),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
