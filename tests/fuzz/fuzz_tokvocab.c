/*
 * libFuzzer target for tokenizer.json vocabularies (core/tokvocab.c,
 * rfs_tokvocab_parse): what a recipe's tokenizer_source aligns rows by.
 * The input is the file's text, not NUL-terminated, ending right before an
 * inaccessible page (fuzz.h).  The first byte, when the input has one,
 * picks the config's vocab_size (-1, or 0..254), the rest is the text.
 *
 * Checks, beyond "no crash, no leak, no undefined behaviour":
 *   - on failure: RFS_E_FORMAT or RFS_E_NOMEM with a message naming the
 *     file;
 *   - on success: end <= cap, every id below end and no more than
 *     RFS_TOKVOCAB_MAX_ID; limit = min(vocab_size, end) (end without one);
 *     every id's token maps back to that id and is not empty unless it is
 *     a plain token; flags only where a token is, settings only on added
 *     tokens; nothing past end;
 *   - rfs_tokvocab_check_config on the same text (as a tokenizer_config.json)
 *     either passes or fails with RFS_E_FORMAT naming the file;
 *   - release leaves an empty vocabulary.
 *
 * By hand (from the repository root): tests/fuzz/build.sh, then
 *   build-fuzz/fuzz_tokvocab -max_total_time=300 -dict=tests/fuzz/json.dict \
 *     "$(mktemp -d)" tests/fuzz/corpus/fuzz_tokvocab
 */
#include <stdint.h>
#include <string.h>

#include "core/tokvocab.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rfs_tokvocab v;
	struct rfs_err err = { 0 };
	int64_t vs = size ? (data[0] == 255 ? -1 : (int64_t)data[0]) : -1;
	const char *text = rfs_fuzz_guarded(size ? data + 1 : data, size ? size - 1 : 0);
	uint32_t id;
	int ret;

	if (!text)
		return 0;
	ret = rfs_tokvocab_parse(&v, text, size ? size - 1 : 0, "fuzz", vs, &err);
	if (ret) {
		CHECK(ret == RFS_E_FORMAT || ret == RFS_E_NOMEM, "code %d (%s)", ret, err.msg);
		CHECK(err.code == ret && strstr(err.msg, "fuzz/tokenizer.json"), "code %d, message '%s'", ret,
		      err.msg);
	} else {
		CHECK(v.end <= v.cap && v.end <= RFS_TOKVOCAB_MAX_ID, "end %u, cap %u", v.end, v.cap);
		CHECK(v.limit == (vs >= 0 && (uint64_t)vs < v.end ? (uint32_t)vs : v.end), "limit %u (vocab_size %lld, end %u)",
		      v.limit, (long long)vs, v.end);
		for (id = 0; id < v.end; id++) {
			if (!v.tok[id]) {
				CHECK(!v.flags[id], "id %u: flags without a token", id);
				continue;
			}
			CHECK(rfs_tokvocab_id(&v, v.tok[id]) == (long)id, "id %u's token maps to %ld", id,
			      rfs_tokvocab_id(&v, v.tok[id]));
			CHECK((v.flags[id] & RFS_TOK_ADDED) || v.flags[id] == 0, "id %u: settings on a plain token",
			      id);
			CHECK(!(v.flags[id] & RFS_TOK_ADDED) || v.tok[id][0], "id %u: an empty added token", id);
		}
		for (id = v.end; id < v.cap; id++)
			CHECK(!v.tok[id] && !v.flags[id], "id %u past end %u holds a token", id, v.end);
		ret = rfs_tokvocab_check_config(&v, text, size - 1, "fuzz", &err);
		CHECK(!ret || (ret == RFS_E_FORMAT && strstr(err.msg, "fuzz/tokenizer_config.json")),
		      "check_config: code %d, message '%s'", ret, err.msg);
	}
	rfs_tokvocab_release(&v);
	CHECK(!v.tok && !v.flags && !v.chunks && !v.end && !v.cap && !v.ids.count, "release left something behind");
	return 0;
}
