/*
 * libFuzzer target for the safetensors header parser and the JSON span
 * scanner: arbitrary bytes as a header must never crash, leak or read out
 * of bounds; whatever parses must satisfy the layout rules.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -ffp-contract=off -D_GNU_SOURCE \
 *     -I. tests/fuzz/fuzz_st.c core/st.c core/err.c core/buf.c core/strmap.c \
 *     core/util.c kernels/kern_scalar.c -lcjson -lxxhash -o /tmp/fuzz_st
 *   /tmp/fuzz_st -max_total_time=300
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/st.h"
#include "core/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rfs_st_file f;
	struct rfs_err err;
	uint64_t file_size, end = 0;
	size_t i, b, e;
	static const char *const keys[] = { "metadata", "total_size" };

	if (size < 8)
		return 0;
	/* the first 8 bytes choose the file size the header claims to sit in */
	memcpy(&file_size, data, 8);
	data += 8;
	size -= 8;
	file_size %= (uint64_t)1 << 40;
	if (rfs_st_parse("fuzz", (const char *)data, size, file_size, &f, &err) == 0) {
		for (i = 0; i < f.ntensors; i++) {
			if (f.tensors[i].begin != end)
				abort();
			end = f.tensors[i].end;
		}
		if (8 + size + end != file_size)
			abort();
		rfs_st_release(&f);
	}
	rfs_json_span((const char *)data, size, keys, 2, &b, &e);
	return 0;
}
