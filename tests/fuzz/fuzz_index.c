/*
 * libFuzzer target for the model.safetensors.index.json parser
 * (core/source.c, rfs_src_parse_index): the input is the file's text, not
 * NUL-terminated, ending right before an inaccessible page (fuzz.h), so
 * that reads past its end fault even inside the uninstrumented libcjson.
 *
 * Checks, beyond "no crash, no leak, no undefined behaviour":
 *   - on failure: RFS_E_FORMAT or RFS_E_NOMEM, a message, a zeroed index;
 *   - on success: at least one shard and one entry; shard names sorted,
 *     unique, each a plain file name (no '/', not "." or "..", not
 *     "model.safetensors", ending in ".safetensors", under 256 bytes);
 *     every entry's file index in range, every shard used by an entry,
 *     tensor names unique;
 *   - the same text read by cJSON itself: weight_map has exactly the
 *     entries of the map, in the same order, with the same tensor and shard
 *     names;
 *   - metadata.total_size: when cJSON finds it, rfs_json_span (what the
 *     mount uses to patch it) finds the same value; an index that parses
 *     and has no total_size must make rfs_json_span say so too (check tag
 *     json-span, see fuzz.h);
 *   - no weight_map, metadata or metadata.total_size twice in what parses:
 *     cJSON reads the first, Python's json the last (tag json-dup).
 *
 * By hand (from the repository root): tests/fuzz/build.sh (it lists the
 * sources every target links), then
 *   build-fuzz/fuzz_index -max_total_time=300 -dict=tests/fuzz/json.dict \
 *     "$(mktemp -d)" tests/fuzz/corpus/fuzz_index
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/source.h"
#include "core/util.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int plain_shard_name(const char *n)
{
	size_t len = strlen(n);

	return len > 12 && len < 256 && !strchr(n, '/') && strcmp(n, ".") && strcmp(n, "..") &&
	       !strcmp(n + len - 12, ".safetensors") && strcmp(n, "model.safetensors");
}

static void check_index(const struct rfs_src_index *ix)
{
	char **names;
	unsigned char *used;
	size_t i;

	CHECK(ix->nfiles >= 1 && ix->files, "%zu shards", ix->nfiles);
	CHECK(ix->nmap >= 1 && ix->map, "%zu entries", ix->nmap);
	CHECK(ix->nfiles <= ix->nmap, "%zu shards for %zu entries", ix->nfiles, ix->nmap);
	for (i = 0; i < ix->nfiles; i++) {
		CHECK(ix->files[i] && plain_shard_name(ix->files[i]), "shard %zu '%s'", i,
		      ix->files[i] ? ix->files[i] : "(null)");
		if (i)
			CHECK(strcmp(ix->files[i - 1], ix->files[i]) < 0,
			      "shards %zu '%s' and %zu '%s' not sorted and unique", i - 1,
			      ix->files[i - 1], i, ix->files[i]);
	}
	used = calloc(ix->nfiles, 1);
	names = malloc(ix->nmap * sizeof(*names));
	if (!used || !names)
		abort();
	for (i = 0; i < ix->nmap; i++) {
		CHECK(ix->map[i].file < ix->nfiles, "entry %zu: file %zu of %zu", i, ix->map[i].file,
		      ix->nfiles);
		CHECK(ix->map[i].tensor, "entry %zu without a name", i);
		used[ix->map[i].file] = 1;
		names[i] = ix->map[i].tensor;
	}
	for (i = 0; i < ix->nfiles; i++)
		CHECK(used[i], "shard '%s' is not used by any entry", ix->files[i]);
	qsort(names, ix->nmap, sizeof(*names), cmp_str);
	for (i = 1; i < ix->nmap; i++)
		CHECK(strcmp(names[i - 1], names[i]), "tensor '%s' twice", names[i]);
	free(names);
	free(used);
}

/* The index as cJSON reads it must be the map, entry for entry. */
static void check_against_cjson(const char *text, size_t size, const struct rfs_src_index *ix)
{
	cJSON *root = cJSON_ParseWithLength(text, size), *wm, *e;
	size_t i = 0;

	CHECK(root, "parsed, but cJSON_ParseWithLength refuses it");
	/* json-dup: Python's json (what transformers reads) keeps the last of
	 * duplicate keys, cJSON the first: two weight_maps would make the loader
	 * use another map than the one residfs checked */
	CHECK((count_key(root, "weight_map") < 2 && count_key(root, "metadata") < 2) ||
		      rfs_fuzz_skip("json-dup"),
	      "accepted with weight_map %d times, metadata %d times", count_key(root, "weight_map"),
	      count_key(root, "metadata"));
	wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	CHECK(cJSON_IsObject(wm), "parsed without a weight_map object");
	cJSON_ArrayForEach(e, wm) {
		CHECK(i < ix->nmap, "weight_map has more than %zu entries", ix->nmap);
		CHECK(cJSON_IsString(e), "entry %zu is no string", i);
		CHECK(!strcmp(e->string, ix->map[i].tensor), "entry %zu: '%s', cJSON reads '%s'", i,
		      ix->map[i].tensor, e->string);
		CHECK(!strcmp(e->valuestring, ix->files[ix->map[i].file]),
		      "entry %zu '%s': shard '%s', cJSON reads '%s'", i, e->string,
		      ix->files[ix->map[i].file], e->valuestring);
		i++;
	}
	CHECK(i == ix->nmap, "weight_map has %zu entries, the map %zu", i, ix->nmap);

	/* metadata.total_size, which the mount rewrites through rfs_json_span */
	{
		static const char *const keys[] = { "metadata", "total_size" };
		const cJSON *md = cJSON_GetObjectItemCaseSensitive(root, "metadata");
		const cJSON *ts = cJSON_IsObject(md) ? cJSON_GetObjectItemCaseSensitive(md, "total_size")
						     : NULL;

		CHECK(!cJSON_IsObject(md) || count_key(md, "total_size") < 2 ||
			      rfs_fuzz_skip("json-dup"),
		      "accepted with metadata.total_size %d times", count_key(md, "total_size"));
		size_t b = 0, en = 0;
		int r = rfs_json_span(text, size, keys, 2, &b, &en);

		/* json-span: docs/testing.md, "Findings" */
		if (ts && r)
			CHECK(rfs_fuzz_skip("json-span"),
			      "cJSON finds metadata.total_size, rfs_json_span does not");
		else if (ts)
			CHECK((b < en && en <= size && same_value(text, b, en, ts)) ||
				      rfs_fuzz_skip("json-span"),
			      "metadata.total_size: rfs_json_span finds [%zu, %zu) '%.*s', not cJSON's value",
			      b, en, (int)(en - b), text + b);
		else
			CHECK(r != 0 || rfs_fuzz_skip("json-span"),
			      "rfs_json_span finds metadata.total_size at [%zu, %zu), cJSON does not", b, en);
	}
	cJSON_Delete(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = rfs_fuzz_guarded(data, size);
	struct rfs_src_index ix;
	struct rfs_err err;
	int r;

	if (!text)
		return 0;
	memset(&err, 0, sizeof(err));
	memset(&ix, 0x5a, sizeof(ix)); /* must be zeroed on failure */
	r = rfs_src_parse_index(text, size, "fuzz/model.safetensors.index.json", &ix, &err);
	if (r) {
		CHECK(r == RFS_E_FORMAT || r == RFS_E_NOMEM, "code %d", r);
		CHECK(err.code == r && err.msg[0], "code %d without a message", r);
		CHECK(!ix.nfiles && !ix.files && !ix.nmap && !ix.map, "index not zeroed on failure");
		rfs_src_index_release(&ix); /* accepts a zeroed index */
		return 0;
	}
	check_index(&ix);
	check_against_cjson(text, size, &ix);
	rfs_src_index_release(&ix);
	CHECK(!ix.nfiles && !ix.files && !ix.nmap && !ix.map, "index not zeroed by release");
	return 0;
}
