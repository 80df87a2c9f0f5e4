/*
 * libFuzzer target for the config.json parser (core/source.c,
 * rfs_src_parse_config): a model's config.json or a residuals directory's.
 * The input is the file's text, not NUL-terminated, ending right before an
 * inaccessible page (fuzz.h), so that reads past its end fault even inside
 * the uninstrumented libcjson.
 *
 * Checks, beyond "no crash, no leak, no undefined behaviour":
 *   - on failure: RFS_E_FORMAT or RFS_E_NOMEM and a message, *out untouched;
 *   - on success: kind is model or residuals, tie_word_embeddings 0 or 1,
 *     vocab_size -1 or in [1, 2^31);
 *   - the same text read by cJSON itself agrees: residuals iff it has
 *     "residuals_version", else a model with model_type or architectures;
 *     vocab_size is the number there (-1 when absent or null);
 *     tie_word_embeddings the boolean there (1 when absent or null);
 *   - the keys the mount rewrites with rfs_json_span (vocab_size,
 *     torch_dtype, dtype): where cJSON finds one at the top level,
 *     rfs_json_span finds the same value, and where cJSON finds none,
 *     rfs_json_span finds none (else config.json would be patched in the
 *     wrong place, or not at all while residfs believes it was; check tag
 *     json-span, see fuzz.h);
 *   - no key that residfs reads twice in what parses: cJSON reads the
 *     first, Python's json (transformers) the last (tag json-dup).
 *
 * By hand (from the repository root): tests/fuzz/build.sh (it lists the
 * sources every target links), then
 *   build-fuzz/fuzz_config -max_total_time=300 -dict=tests/fuzz/json.dict \
 *     "$(mktemp -d)" tests/fuzz/corpus/fuzz_config
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

static void check_against_cjson(const char *text, size_t size, const struct rfs_src_config *c)
{
	static const char *const patched[] = { "vocab_size", "torch_dtype", "dtype" };
	static const char *const read_keys[] = { "residuals_version", "model_type", "architectures",
						 "vocab_size", "tie_word_embeddings",
						 "torch_dtype", "dtype" };
	cJSON *root = cJSON_ParseWithLength(text, size);
	const cJSON *v;
	size_t i;

	CHECK(root && cJSON_IsObject(root), "parsed, but cJSON reads no object");
	/* json-dup: a key residfs reads or rewrites, twice: Python's json (what
	 * transformers reads) keeps the last, cJSON the first */
	for (i = 0; i < sizeof(read_keys) / sizeof(read_keys[0]); i++)
		CHECK(count_key(root, read_keys[i]) < 2 || rfs_fuzz_skip("json-dup"),
		      "accepted with \"%s\" %d times", read_keys[i], count_key(root, read_keys[i]));
	if (cJSON_GetObjectItemCaseSensitive(root, "residuals_version"))
		CHECK(c->kind == RFS_SRC_RESIDUALS, "has residuals_version, kind %d", c->kind);
	else
		CHECK(c->kind == RFS_SRC_MODEL &&
			      (cJSON_GetObjectItemCaseSensitive(root, "model_type") ||
			       cJSON_GetObjectItemCaseSensitive(root, "architectures")),
		      "kind %d without residuals_version", c->kind);

	v = cJSON_GetObjectItemCaseSensitive(root, "vocab_size");
	if (!v || cJSON_IsNull(v))
		CHECK(c->vocab_size == -1, "no vocab_size, but %lld", (long long)c->vocab_size);
	else
		CHECK(cJSON_IsNumber(v) && (double)c->vocab_size == v->valuedouble,
		      "vocab_size %lld, cJSON reads %g", (long long)c->vocab_size,
		      cJSON_IsNumber(v) ? v->valuedouble : -1.0);

	v = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
	if (!v || cJSON_IsNull(v))
		CHECK(c->tie_word_embeddings == 1, "no tie_word_embeddings, but %d",
		      c->tie_word_embeddings);
	else
		CHECK(cJSON_IsBool(v) && c->tie_word_embeddings == cJSON_IsTrue(v),
		      "tie_word_embeddings %d, cJSON reads another value", c->tie_word_embeddings);

	for (i = 0; i < sizeof(patched) / sizeof(patched[0]); i++) {
		const cJSON *want = cJSON_GetObjectItemCaseSensitive(root, patched[i]);
		size_t b = 0, e = 0;
		int r = rfs_json_span(text, size, &patched[i], 1, &b, &e);

		/* json-span: docs/testing.md, "Findings" */
		if (want && r)
			CHECK(rfs_fuzz_skip("json-span"), "cJSON finds \"%s\", rfs_json_span does not",
			      patched[i]);
		else if (want)
			CHECK((b < e && e <= size && same_value(text, b, e, want)) ||
				      rfs_fuzz_skip("json-span"),
			      "\"%s\": rfs_json_span finds [%zu, %zu) '%.*s', not cJSON's value",
			      patched[i], b, e, (int)(e - b), text + b);
		else
			CHECK(r != 0 || rfs_fuzz_skip("json-span"),
			      "rfs_json_span finds \"%s\" at [%zu, %zu), cJSON does not", patched[i], b, e);
	}
	cJSON_Delete(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = rfs_fuzz_guarded(data, size);
	struct rfs_src_config c, untouched;
	struct rfs_err err;
	int r;

	if (!text)
		return 0;
	memset(&err, 0, sizeof(err));
	memset(&c, 0x5a, sizeof(c));
	untouched = c;
	r = rfs_src_parse_config(text, size, "fuzz/config.json", &c, &err);
	if (r) {
		CHECK(r == RFS_E_FORMAT || r == RFS_E_NOMEM, "code %d", r);
		CHECK(err.code == r && err.msg[0], "code %d without a message", r);
		CHECK(!memcmp(&c, &untouched, sizeof(c)), "*out changed on failure");
		return 0;
	}
	CHECK(c.kind == RFS_SRC_MODEL || c.kind == RFS_SRC_RESIDUALS, "kind %d", c.kind);
	CHECK(c.tie_word_embeddings == 0 || c.tie_word_embeddings == 1, "tie_word_embeddings %d",
	      c.tie_word_embeddings);
	CHECK(c.vocab_size == -1 || (c.vocab_size >= 1 && c.vocab_size < ((int64_t)1 << 31)),
	      "vocab_size %lld", (long long)c.vocab_size);
	check_against_cjson(text, size, &c);
	return 0;
}
