/*
 * libFuzzer target for the safetensors header parser (core/st.c,
 * rfs_st_parse), the header writer (rfs_st_header_write) and the JSON span
 * scanner (core/util.c, rfs_json_span).
 *
 * Input: 8 bytes choosing the size of the file the header claims to sit in
 * (little-endian, modulo 2^40), then the header text.
 *
 * Checks, beyond "no crash, no leak, no undefined behaviour":
 *   - on failure: RFS_E_FORMAT or RFS_E_NOMEM and a message;
 *   - what parses obeys the layout rules: every dtype known, at most
 *     RFS_ST_MAX_DIMS dimensions, numel the product of the shape,
 *     end - begin its byte size, tensors sorted by offset and contiguous
 *     from 0, 8 + N + the last end == the file size, tensor names unique;
 *   - writing the parsed header again (rfs_st_header_write, as the mount
 *     does for a merged file) gives a header whose length pads 8 + N to a
 *     multiple of 8 and that parses back into the same tensors (names,
 *     dtypes, shapes, offsets) and the same metadata, in the same order;
 *   - rfs_json_span on the text: a span it returns lies inside the text.
 *
 * By hand (from the repository root): tests/fuzz/build.sh (it lists the
 * sources every target links), then
 *   build-fuzz/fuzz_st -max_total_time=300 -dict=tests/fuzz/json.dict \
 *     "$(mktemp -d)" tests/fuzz/corpus/fuzz_st
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/st.h"
#include "core/util.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void check_layout(const struct rfs_st_file *f, uint64_t hlen, uint64_t file_size)
{
	uint64_t end = 0;
	char **names;
	size_t i;

	CHECK(!f->src && f->hlen == hlen && f->data_off == 8 + hlen && f->size == file_size,
	      "hlen %llu data_off %llu size %llu", (unsigned long long)f->hlen,
	      (unsigned long long)f->data_off, (unsigned long long)f->size);
	names = malloc((f->ntensors + 1) * sizeof(*names));
	if (!names)
		abort();
	for (i = 0; i < f->ntensors; i++) {
		const struct rfs_st_tensor *t = &f->tensors[i];
		uint64_t numel = 1, bytes;
		unsigned d;
		int ovf;

		CHECK(t->name, "tensor %zu has no name", i);
		CHECK((unsigned)t->dtype < RFS_DT_COUNT, "'%s': dtype %d", t->name, (int)t->dtype);
		CHECK(t->ndim <= RFS_ST_MAX_DIMS, "'%s': %u dimensions", t->name, t->ndim);
		for (d = 0; d < t->ndim; d++)
			CHECK(!__builtin_mul_overflow(numel, t->shape[d], &numel),
			      "'%s': shape overflows", t->name);
		CHECK(numel == t->numel, "'%s': numel %llu, shape gives %llu", t->name,
		      (unsigned long long)t->numel, (unsigned long long)numel);
		bytes = rfs_dtype_bytes(t->dtype, numel, &ovf);
		CHECK(!ovf && t->end - t->begin == bytes && t->end >= t->begin,
		      "'%s': [%llu, %llu) for %llu bytes", t->name, (unsigned long long)t->begin,
		      (unsigned long long)t->end, (unsigned long long)bytes);
		CHECK(t->begin == end, "'%s' begins at %llu, the previous one ends at %llu", t->name,
		      (unsigned long long)t->begin, (unsigned long long)end);
		end = t->end;
		names[i] = t->name;
	}
	CHECK(8 + hlen + end == file_size, "8 + %llu + %llu != %llu", (unsigned long long)hlen,
	      (unsigned long long)end, (unsigned long long)file_size);
	qsort(names, f->ntensors, sizeof(*names), cmp_str);
	for (i = 1; i < f->ntensors; i++)
		CHECK(strcmp(names[i - 1], names[i]), "tensor '%s' twice", names[i]);
	for (i = 0; i < f->nmeta; i++)
		CHECK(f->has_meta && f->meta[i].key && f->meta[i].val, "metadata %zu", i);
	free(names);
}

/* The header the mount would write for these tensors parses back into them. */
static void check_rewrite(const struct rfs_st_file *f)
{
	struct rfs_st_out *o = calloc(f->ntensors + 1, sizeof(*o));
	struct rfs_st_file g;
	struct rfs_err err;
	char *hdr = NULL;
	size_t hlen = 0, i;
	uint64_t end = f->ntensors ? f->tensors[f->ntensors - 1].end : 0;
	int r;

	if (!o)
		abort();
	for (i = 0; i < f->ntensors; i++) {
		o[i].name = f->tensors[i].name;
		o[i].dtype = f->tensors[i].dtype;
		o[i].ndim = f->tensors[i].ndim;
		o[i].shape = f->tensors[i].shape;
		o[i].begin = f->tensors[i].begin;
		o[i].end = f->tensors[i].end;
	}
	r = rfs_st_header_write(o, f->ntensors, f->meta, f->nmeta, f->has_meta, &hdr, &hlen, NULL);
	free(o);
	if (r == RFS_E_NOMEM)
		return;
	CHECK(r == 0 && hdr, "rfs_st_header_write: %d", r);
	CHECK((8 + hlen) % 8 == 0, "written header of %zu bytes", hlen);
	memset(&err, 0, sizeof(err));
	r = rfs_st_parse("rewritten", hdr, hlen, 8 + hlen + end, &g, &err);
	CHECK(r == 0, "the rewritten header does not parse: %s\n   %.*s", err.msg, (int)hlen, hdr);
	CHECK(g.ntensors == f->ntensors && g.nmeta == f->nmeta && g.has_meta == f->has_meta,
	      "%zu tensors and %zu metadata, rewritten %zu and %zu", f->ntensors, f->nmeta,
	      g.ntensors, g.nmeta);
	for (i = 0; i < f->ntensors; i++) {
		const struct rfs_st_tensor *a = &f->tensors[i], *b = &g.tensors[i];

		CHECK(!strcmp(a->name, b->name) && a->dtype == b->dtype && a->ndim == b->ndim &&
			      !memcmp(a->shape, b->shape, a->ndim * sizeof(a->shape[0])) &&
			      a->begin == b->begin && a->end == b->end,
		      "tensor %zu '%s' rewritten as '%s'", i, a->name, b->name);
	}
	for (i = 0; i < f->nmeta; i++)
		CHECK(!strcmp(f->meta[i].key, g.meta[i].key) && !strcmp(f->meta[i].val, g.meta[i].val),
		      "metadata '%s' rewritten as '%s'", f->meta[i].key, g.meta[i].key);
	rfs_st_release(&g);
	free(hdr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rfs_st_file f;
	struct rfs_err err;
	uint64_t file_size;
	size_t b, e;
	int r;
	static const char *const keys[] = { "metadata", "total_size" };

	if (size < 8)
		return 0;
	/* the first 8 bytes choose the file size the header claims to sit in */
	memcpy(&file_size, data, 8);
	data += 8;
	size -= 8;
	file_size %= (uint64_t)1 << 40;
	memset(&err, 0, sizeof(err));
	r = rfs_st_parse("fuzz", (const char *)data, size, file_size, &f, &err);
	if (r == 0) {
		check_layout(&f, size, file_size);
		check_rewrite(&f);
		rfs_st_release(&f);
	} else {
		CHECK(r == RFS_E_FORMAT || r == RFS_E_NOMEM, "code %d", r);
		CHECK(err.code == r && err.msg[0], "code %d without a message", r);
	}
	if (rfs_json_span((const char *)data, size, keys, 2, &b, &e) == 0)
		CHECK(b <= e && e <= size, "span [%zu, %zu) of %zu bytes", b, e, size);
	return 0;
}
