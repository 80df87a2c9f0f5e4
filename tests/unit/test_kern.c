/*
 * test_kern.c - golden vectors for the element-wise arithmetic (docs/arithmetic.md)
 * and bit-exact agreement of every SIMD backend with the scalar reference.
 *
 * Expected bits are hard-coded: derived by hand from IEEE 754 and checked
 * against numpy's astype(float16) for the non-NaN fp16 cases.  NaN bits
 * follow kern.h's definition (bf16: sign kept, quiet bit 0x40 set; fp16:
 * sign|0x7E00|(mantissa >> 13); fp16 -> f32: payload kept, quieted).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/kern.h"

/* ---------------------------------------------------------------- helpers */

/* xorshift64*: deterministic, so a failure can be replayed. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd64(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

static uint32_t rnd32(void)
{
	return (uint32_t)(rnd64() >> 32);
}

/*
 * A float32 bit pattern that hits interesting places often: NaNs (quiet,
 * signalling, both signs), infinities, zeros, float32 subnormals, fp16
 * subnormal and overflow ranges, exact rounding ties for bf16 and fp16, and
 * plain random bits.
 */
static uint32_t special_f32(void)
{
	uint32_t r = rnd32(), s = rnd32() & 0x80000000u;

	switch (rnd32() % 16) {
	case 0: return r; /* anything */
	case 1: return s | 0x7F800000u | (r & 0x7FFFFF) | 1; /* NaN (any payload) */
	case 2: return s | 0x7F800000u | (r & 0x3FFFFF) | 1; /* signalling NaN */
	case 3: return s | (rnd32() & 1 ? 0x7F800000u : 0); /* inf or zero */
	case 4: return s | (r & 0x7FFFFF); /* float32 subnormal */
	case 5: return s | ((uint32_t)(101 + r % 14) << 23) | (rnd32() & 0x7FFFFF); /* fp16 subnormal range */
	case 6: return s | (r & 0xFFFF0000u & 0x7FFFFFFFu) | 0x8000; /* bf16 tie */
	case 7: return s | (((uint32_t)(112 + r % 31) << 23) | (rnd32() & 0x7FE000)) | 0x1000; /* fp16 tie */
	case 8: return s | (0x477FE000u + (r % 0x2000)); /* around fp16 max */
	case 9: return s | ((uint32_t)(101 + r % 14) << 23) | (rnd32() & 0x7FC000u) | (1u << (13 + r % 10)); /* fp16 subnormal ties-ish */
	case 10: return s | 0x7F7F0000u | (r & 0xFFFF); /* around float max (bf16 overflow) */
	default: return s | ((uint32_t)(112 + r % 31) << 23) | (rnd32() & 0x7FFFFF); /* fp16 normal range */
	}
}

static uint16_t special_u16(void)
{
	uint16_t r = (uint16_t)rnd32(), s = (uint16_t)(rnd32() & 0x8000);

	switch (rnd32() % 6) {
	case 0: return s | 0x7C00 | (r & 0x3FF); /* fp16 inf/NaN */
	case 1: return s | 0x7F80 | (r & 0x7F);  /* bf16 inf/NaN */
	case 2: return s | (r & 0x3FF);          /* fp16 subnormal */
	case 3: return s | (r & 0x7F);           /* bf16 subnormal */
	default: return r;
	}
}

/* A "realistic" weight: small magnitude, random sign, all mantissa bits. */
static uint32_t weight_f32(void)
{
	return (rnd32() & 0x80000000u) | ((uint32_t)(110 + rnd32() % 18) << 23) | (rnd32() & 0x7FFFFF);
}

struct backend {
	const char *name;
	const struct rfs_kern_ops *ops;
};

/* Scalar first, then every SIMD backend compiled in and runnable here. */
static size_t backends(struct backend *b)
{
	size_t n = 0;

	b[n++] = (struct backend){ "scalar", &rfs_kern_scalar };
	if (rfs_kern_avx2())
		b[n++] = (struct backend){ "avx2", rfs_kern_avx2() };
	if (rfs_kern_avx512())
		b[n++] = (struct backend){ "avx512", rfs_kern_avx512() };
	return n;
}

/* ------------------------------------------------- scalar conversions */

struct v32_16 {
	uint32_t in;
	uint16_t want;
	const char *what;
};

struct v16_32 {
	uint16_t in;
	uint32_t want;
	const char *what;
};

static void test_f32_to_bf16(void **state)
{
	static const struct v32_16 v[] = {
		{ 0x00000000, 0x0000, "+0" },
		{ 0x80000000, 0x8000, "-0" },
		{ 0x3F800000, 0x3F80, "1.0" },
		{ 0xBF800000, 0xBF80, "-1.0" },
		{ 0x3F808000, 0x3F80, "tie, even below: stays" },
		{ 0x3F818000, 0x3F82, "tie, odd below: rounds up" },
		{ 0xBF808000, 0xBF80, "negative tie to even (down)" },
		{ 0xBF818000, 0xBF82, "negative tie to even (up)" },
		{ 0x3F807FFF, 0x3F80, "just below half" },
		{ 0x3F808001, 0x3F81, "just above half" },
		{ 0x3F80FFFF, 0x3F81, "round up" },
		{ 0x3FFF8000, 0x4000, "tie carries into the exponent" },
		{ 0x7F800000, 0x7F80, "+inf" },
		{ 0xFF800000, 0xFF80, "-inf" },
		{ 0x7F7F7FFF, 0x7F7F, "largest bf16 finite" },
		{ 0x7F7F8000, 0x7F80, "tie above largest finite: inf" },
		{ 0x7F7FFFFF, 0x7F80, "FLT_MAX overflows to inf" },
		{ 0xFF7FFFFF, 0xFF80, "-FLT_MAX overflows to -inf" },
		{ 0x00000001, 0x0000, "smallest f32 subnormal" },
		{ 0x00008000, 0x0000, "subnormal tie to even (0)" },
		{ 0x00018000, 0x0002, "subnormal tie to even (up)" },
		{ 0x00010000, 0x0001, "smallest bf16 subnormal" },
		{ 0x807FFFFF, 0x8080, "-largest subnormal rounds to -min normal" },
		{ 0x7FC00000, 0x7FC0, "quiet NaN" },
		{ 0xFFC00000, 0xFFC0, "negative quiet NaN" },
		{ 0x7F800001, 0x7FC0, "signalling NaN, low payload: quieted" },
		{ 0xFF800001, 0xFFC0, "negative signalling NaN: sign kept" },
		{ 0x7FA00000, 0x7FE0, "signalling NaN with payload" },
		{ 0x7F80FFFF, 0x7FC0, "NaN must not round into inf" },
		{ 0x7FFFFFFF, 0x7FFF, "all-ones NaN must not wrap" },
		{ 0xFFFFFFFF, 0xFFFF, "negative all-ones NaN" },
		{ 0x7FBF8000, 0x7FFF, "sNaN payload 0x3F: quieted, no rounding" },
	};
	size_t i, bad = 0;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint16_t got = rfs_f32_to_bf16(rfs_bits_f32(v[i].in));

		if (got != v[i].want) {
			print_error("rfs_f32_to_bf16(0x%08x) = 0x%04x, want 0x%04x (%s)\n",
				    v[i].in, got, v[i].want, v[i].what);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

static void test_bf16_to_f32(void **state)
{
	static const struct v16_32 v[] = {
		{ 0x0000, 0x00000000, "+0" },
		{ 0x8000, 0x80000000, "-0" },
		{ 0x3F80, 0x3F800000, "1.0" },
		{ 0x0001, 0x00010000, "subnormal" },
		{ 0x7F7F, 0x7F7F0000, "largest finite" },
		{ 0x7F80, 0x7F800000, "+inf" },
		{ 0xFF80, 0xFF800000, "-inf" },
		{ 0x7FC0, 0x7FC00000, "quiet NaN" },
		{ 0xFFC1, 0xFFC10000, "negative NaN with payload" },
		{ 0x7F81, 0x7F810000, "signalling NaN: widening is exact" },
	};
	size_t i, bad = 0;
	uint32_t h;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint32_t got = rfs_f32_bits(rfs_bf16_to_f32(v[i].in));

		if (got != v[i].want) {
			print_error("rfs_bf16_to_f32(0x%04x) = 0x%08x, want 0x%08x (%s)\n",
				    v[i].in, got, v[i].want, v[i].what);
			bad++;
		}
	}
	/* exhaustive: widening is a shift, and narrowing it back is the identity
	 * except that signalling NaNs come back quiet */
	for (h = 0; h < 0x10000; h++) {
		uint16_t back = rfs_f32_to_bf16(rfs_bf16_to_f32((uint16_t)h));
		uint16_t want = (h & 0x7FFF) > 0x7F80 ? (uint16_t)(h | 0x40) : (uint16_t)h;

		if (rfs_f32_bits(rfs_bf16_to_f32((uint16_t)h)) != h << 16 || back != want) {
			if (bad++ < 10)
				print_error("bf16 0x%04x: widen/narrow gives 0x%04x\n", h, back);
		}
	}
	assert_int_equal(bad, 0);
}

static void test_f32_to_f16(void **state)
{
	static const struct v32_16 v[] = {
		{ 0x00000000, 0x0000, "+0" },
		{ 0x80000000, 0x8000, "-0" },
		{ 0x3F800000, 0x3C00, "1.0" },
		{ 0xC0000000, 0xC000, "-2.0" },
		{ 0x3F801000, 0x3C00, "1+2^-11: tie, even below" },
		{ 0x3F803000, 0x3C02, "1+3*2^-11: tie, odd below, rounds up" },
		{ 0x3F801001, 0x3C01, "just above a tie" },
		{ 0x3F800FFF, 0x3C00, "just below a tie" },
		{ 0xBF803000, 0xBC02, "negative tie" },
		{ 0x45001000, 0x6800, "2049: tie to 2048" },
		{ 0x45003000, 0x6802, "2051: tie to 2052" },
		{ 0x3FFFF000, 0x4000, "tie carries into the exponent" },
		{ 0x477FE000, 0x7BFF, "65504: largest finite" },
		{ 0x477FEFFD, 0x7BFF, "65519.99f (nearest float32) stays finite" },
		{ 0x477FEFFF, 0x7BFF, "largest float below 65520" },
		{ 0x477FF000, 0x7C00, "65520 rounds (tie to even) to inf" },
		{ 0xC77FF000, 0xFC00, "-65520 -> -inf" },
		{ 0x47800000, 0x7C00, "65536 -> inf" },
		{ 0x7F7FFFFF, 0x7C00, "FLT_MAX -> inf" },
		{ 0x7F800000, 0x7C00, "+inf" },
		{ 0xFF800000, 0xFC00, "-inf" },
		{ 0x38800000, 0x0400, "2^-14 smallest normal" },
		{ 0x387FC000, 0x03FF, "largest subnormal" },
		{ 0x387FE000, 0x0400, "tie between largest subnormal and smallest normal" },
		{ 0x33800000, 0x0001, "2^-24 smallest subnormal" },
		{ 0xB3800000, 0x8001, "-2^-24" },
		{ 0x33000000, 0x0000, "2^-25: tie, rounds to 0" },
		{ 0xB3000000, 0x8000, "-2^-25: tie, rounds to -0" },
		{ 0x33000001, 0x0001, "just above 2^-25 rounds up" },
		{ 0x32FFFFFF, 0x0000, "just below 2^-25" },
		{ 0x33400000, 0x0001, "0.75*2^-24 rounds up" },
		{ 0x33C00000, 0x0002, "1.5*2^-24: tie, rounds to even 2" },
		{ 0x34200000, 0x0002, "2.5*2^-24: tie, rounds to even 2" },
		{ 0x32800000, 0x0000, "2^-26 -> 0" },
		{ 0x00000001, 0x0000, "f32 subnormal -> 0" },
		{ 0x80000001, 0x8000, "negative f32 subnormal -> -0" },
		{ 0x7FC00000, 0x7E00, "quiet NaN" },
		{ 0xFFC00000, 0xFE00, "negative quiet NaN" },
		{ 0x7F800001, 0x7E00, "signalling NaN, payload below fp16: quiet NaN" },
		{ 0xFF800001, 0xFE00, "negative signalling NaN: sign kept" },
		{ 0x7FA00000, 0x7F00, "signalling NaN with payload: quieted, payload kept" },
		{ 0x7F802000, 0x7E01, "payload low bit" },
		{ 0x7FFFFFFF, 0x7FFF, "all-ones NaN" },
		{ 0xFFFFFFFF, 0xFFFF, "negative all-ones NaN" },
	};
	size_t i, bad = 0;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint16_t got = rfs_f32_to_f16(rfs_bits_f32(v[i].in));

		if (got != v[i].want) {
			print_error("rfs_f32_to_f16(0x%08x) = 0x%04x, want 0x%04x (%s)\n",
				    v[i].in, got, v[i].want, v[i].what);
			bad++;
		}
	}
	/* 65519.99 as a C literal is the same float as 0x477FEFFD */
	assert_int_equal(rfs_f32_to_f16(65519.99f), 0x7BFF);
	assert_int_equal(rfs_f32_to_f16(65520.0f), 0x7C00);
	assert_int_equal(bad, 0);
}

static void test_f16_to_f32(void **state)
{
	static const struct v16_32 v[] = {
		{ 0x0000, 0x00000000, "+0" },
		{ 0x8000, 0x80000000, "-0" },
		{ 0x3C00, 0x3F800000, "1.0" },
		{ 0x3555, 0x3EAAA000, "0.33325" },
		{ 0x0001, 0x33800000, "2^-24 smallest subnormal" },
		{ 0x8001, 0xB3800000, "-2^-24" },
		{ 0x0002, 0x34000000, "2^-23" },
		{ 0x0155, 0x37AA8000, "subnormal 341*2^-24" },
		{ 0x03FF, 0x387FC000, "largest subnormal" },
		{ 0x0400, 0x38800000, "2^-14 smallest normal" },
		{ 0x7BFF, 0x477FE000, "65504 largest finite" },
		{ 0xFBFF, 0xC77FE000, "-65504" },
		{ 0x7C00, 0x7F800000, "+inf" },
		{ 0xFC00, 0xFF800000, "-inf" },
		{ 0x7E00, 0x7FC00000, "quiet NaN" },
		{ 0xFE00, 0xFFC00000, "negative quiet NaN" },
		{ 0x7C01, 0x7FC02000, "signalling NaN: payload kept, quieted" },
		{ 0xFC01, 0xFFC02000, "negative signalling NaN" },
		{ 0x7DFF, 0x7FFFE000, "signalling NaN, full payload" },
		{ 0xFFFF, 0xFFFFE000, "negative all-ones NaN" },
	};
	size_t i, bad = 0;
	uint32_t h;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		uint32_t got = rfs_f32_bits(rfs_f16_to_f32(v[i].in));

		if (got != v[i].want) {
			print_error("rfs_f16_to_f32(0x%04x) = 0x%08x, want 0x%08x (%s)\n",
				    v[i].in, got, v[i].want, v[i].what);
			bad++;
		}
	}
	/* exhaustive round trip: every non-NaN half comes back unchanged, every
	 * NaN comes back quiet with sign and payload */
	for (h = 0; h < 0x10000; h++) {
		uint16_t back = rfs_f32_to_f16(rfs_f16_to_f32((uint16_t)h));
		uint16_t want = (h & 0x7FFF) > 0x7C00 ? (uint16_t)(h | 0x200) : (uint16_t)h;

		if (back != want && bad++ < 10)
			print_error("fp16 0x%04x: widen/narrow gives 0x%04x, want 0x%04x\n",
				    h, back, want);
	}
	assert_int_equal(bad, 0);
}

/* ----------------------------------------------------- rfs_kern_run golden */

static uint16_t bf(float f)
{
	return rfs_f32_to_bf16(f);
}

static void run_all(const struct rfs_kern_job *job, const void *want, size_t bytes,
		    const char *what)
{
	struct backend b[4];
	size_t nb = backends(b), k;
	void *out = malloc(bytes ? bytes : 1);

	assert_non_null(out);
	for (k = 0; k < nb; k++) {
		struct rfs_kern_job j = *job;

		memset(out, 0xA5, bytes);
		j.out = out;
		rfs_kern_run(b[k].ops, &j);
		if (memcmp(out, want, bytes)) {
			size_t i, esz = rfs_kdt_size(job->out_dtype);

			for (i = 0; i < bytes / esz; i++) {
				uint32_t g = 0, w = 0;

				memcpy(&g, (char *)out + i * esz, esz);
				memcpy(&w, (const char *)want + i * esz, esz);
				if (g != w)
					print_error("%s [%s]: element %zu = 0x%x, want 0x%x\n",
						    what, b[k].name, i, g, w);
			}
			free(out);
			fail_msg("%s: backend %s differs from the golden result", what, b[k].name);
		}
	}
	free(out);
}

/* bf16 base + f32 delta -> bf16, rounded once; cast-first differs. */
static void test_run_bf16_single(void **state)
{
	/* 1 + (2^-8 + 2^-20): exact in f32, above the bf16 tie -> 0x3F81.
	 * cast-first rounds the delta to bf16 (2^-8), then 1 + 2^-8 is a tie
	 * that goes to even -> 0x3F80 */
	const uint16_t base[] = { 0x3F80, 0x3F80, 0xC000, 0x8000, 0x7F7F };
	const float d[] = { 0x1p-8f + 0x1p-20f, 0.25f, 0.5f, 0.0f, 3.4e38f };
	struct rfs_kern_term t[2] = {
		{ RFS_KDT_BF16, base, 5, 1.0f },
		{ RFS_KDT_F32, d, 5, 1.0f },
	};
	struct rfs_kern_job j = { RFS_KDT_BF16, NULL, 5, 2, t, 0 };
	/* 1.25, -1.5, -0 + +0 = +0, overflow to +inf */
	const uint16_t want[] = { 0x3F81, 0x3FA0, 0xBFC0, 0x0000, 0x7F80 };
	const uint16_t want_cf[] = { 0x3F80, 0x3FA0, 0xBFC0, 0x0000, 0x7F80 };

	(void)state;
	run_all(&j, want, sizeof(want), "bf16 single rounding");
	j.cast_first = 1;
	run_all(&j, want_cf, sizeof(want_cf), "bf16 cast-first");
}

/* cast-first casts the model to the output dtype before adding (as the
 * package's apply with model_dtype does): an f32 base on a bf16 tie. */
static void test_run_cast_first_rounds_base(void **state)
{
	/* base 1 + 2^-8 (a bf16 tie), delta 2^-20:
	 * single: 1 + 2^-8 + 2^-20 is above the tie -> 0x3F81;
	 * cast-first: bf16(base) = 1.0, 1.0 + 2^-20 -> 1.0 = 0x3F80 */
	const float base[] = { 1.0f + 0x1p-8f, 1.0f + 0x1p-8f, 3.0f };
	const float d[] = { 0x1p-20f, 0.0f, 0.0f };
	struct rfs_kern_term t[2] = {
		{ RFS_KDT_F32, base, 3, 1.0f },
		{ RFS_KDT_F32, d, 3, 1.0f },
	};
	struct rfs_kern_job j = { RFS_KDT_BF16, NULL, 3, 2, t, 0 };
	const uint16_t want[] = { 0x3F81, 0x3F80, 0x4040 };
	const uint16_t want_cf[] = { 0x3F80, 0x3F80, 0x4040 };

	(void)state;
	run_all(&j, want, sizeof(want), "f32 base -> bf16 single");
	j.cast_first = 1;
	run_all(&j, want_cf, sizeof(want_cf), "f32 base -> bf16 cast-first");
}

static void test_run_scale_half(void **state)
{
	const uint16_t base[] = { bf(1.0f), bf(-2.0f), bf(1.0f) };
	const float d[] = { 3.0f, 1.0f, 0x1p-7f + 0x1p-19f };
	struct rfs_kern_term t[2] = {
		{ RFS_KDT_BF16, base, 3, 1.0f },
		{ RFS_KDT_F32, d, 3, 0.5f },
	};
	struct rfs_kern_job j = { RFS_KDT_BF16, NULL, 3, 2, t, 0 };
	/* 1 + 1.5 = 2.5; -2 + 0.5 = -1.5; 1 + (2^-8 + 2^-20) -> 0x3F81 */
	const uint16_t want[] = { 0x4020, 0xBFC0, 0x3F81 };

	(void)state;
	run_all(&j, want, sizeof(want), "scale 0.5");
}

static void test_run_two_deltas(void **state)
{
	/* left to right: (1 + 2^-24) + 2^-24 = 1 (two ties to even); summing
	 * the deltas first would give 1 + 2^-23 */
	const float base[] = { 1.0f, 1.0f };
	const float d1[] = { 0x1p-24f, 0x1p-8f };
	const float d2[] = { 0x1p-24f, 0x1p-20f };
	struct rfs_kern_term t[3] = {
		{ RFS_KDT_F32, base, 2, 1.0f },
		{ RFS_KDT_F32, d1, 2, 1.0f },
		{ RFS_KDT_F32, d2, 2, 1.0f },
	};
	struct rfs_kern_job j = { RFS_KDT_F32, NULL, 2, 3, t, 0 };
	const uint32_t want[] = { 0x3F800000, 0x3F808008 };
	const uint16_t base16[] = { 0x3F80 };
	struct rfs_kern_term tb[3] = {
		{ RFS_KDT_BF16, base16, 1, 1.0f },
		{ RFS_KDT_F32, d1 + 1, 1, 1.0f },
		{ RFS_KDT_F32, d2 + 1, 1, 1.0f },
	};
	struct rfs_kern_job jb = { RFS_KDT_BF16, NULL, 1, 3, tb, 0 };
	/* 1 + 2^-8 (a tie alone) + 2^-20 -> above the tie -> 0x3F81 */
	const uint16_t wantb[] = { 0x3F81 };
	/* cast-first rounds after each term: 1 + 2^-8 -> 1, then 1 + 2^-20 -> 1 */
	const uint16_t wantb_cf[] = { 0x3F80 };

	(void)state;
	run_all(&j, want, sizeof(want), "two deltas f32");
	run_all(&jb, wantb, sizeof(wantb), "two deltas bf16");
	jb.cast_first = 1;
	run_all(&jb, wantb_cf, sizeof(wantb_cf), "two deltas bf16 cast-first");
}

static void test_run_negation(void **state)
{
	const uint16_t base[] = { bf(1.0f), bf(1.0f), 0x8000, 0x0000, bf(2.0f) };
	const float d[] = { 0.25f, 1.0f, 0.0f, 0.0f, -0.5f };
	struct rfs_kern_term t[2] = {
		{ RFS_KDT_BF16, base, 5, 1.0f },
		{ RFS_KDT_F32, d, 5, -1.0f },
	};
	struct rfs_kern_job j = { RFS_KDT_BF16, NULL, 5, 2, t, 0 };
	/* 0.75; 1 - 1 = +0; -0 + (-1 * +0 = -0) = -0; +0 + -0 = +0; 2.5 */
	const uint16_t want[] = { 0x3F40, 0x0000, 0x8000, 0x0000, 0x4020 };

	(void)state;
	run_all(&j, want, sizeof(want), "negation");
	j.cast_first = 1;
	run_all(&j, want, sizeof(want), "negation cast-first");
}

static void test_run_grown(void **state)
{
	/* the base is shorter than the job (grown vocabulary) */
	const uint16_t base[] = { bf(1.0f), 0x8000 };
	const float d[] = { 0.5f, 0.5f, 2.0f, -0.0f, -3.0f };
	struct rfs_kern_term t[2] = {
		{ RFS_KDT_BF16, base, 2, 1.0f },
		{ RFS_KDT_F32, d, 5, 1.0f },
	};
	struct rfs_kern_job j = { RFS_KDT_BF16, NULL, 5, 2, t, 0 };
	/* missing base elements are +0.0: +0 + -0 = +0 */
	const uint16_t want[] = { 0x3FC0, 0x3F00, 0x4000, 0x0000, 0xC040 };
	/* the delta is shorter than the job */
	const uint16_t base2[] = { bf(1.0f), 0x8000, bf(3.0f), 0x8000 };
	const float d2[] = { 0.5f };
	struct rfs_kern_term t2[2] = {
		{ RFS_KDT_BF16, base2, 4, 1.0f },
		{ RFS_KDT_F32, d2, 1, -1.0f },
	};
	struct rfs_kern_job j2 = { RFS_KDT_BF16, NULL, 4, 2, t2, 0 };
	/* a missing element is +0.0 and is still scaled: -0 + (-1 * +0) = -0 */
	const uint16_t want2[] = { 0x3F00, 0x8000, 0x4040, 0x8000 };
	/* a term with n == 0 */
	struct rfs_kern_term t3[2] = {
		{ RFS_KDT_BF16, base2, 4, 1.0f },
		{ RFS_KDT_F32, NULL, 0, 0.5f },
	};
	struct rfs_kern_job j3 = { RFS_KDT_BF16, NULL, 4, 2, t3, 0 };
	const uint16_t want3[] = { 0x3F80, 0x0000, 0x4040, 0x0000 };

	(void)state;
	run_all(&j, want, sizeof(want), "grown base");
	j.cast_first = 1;
	run_all(&j, want, sizeof(want), "grown base cast-first");
	run_all(&j2, want2, sizeof(want2), "short delta");
	run_all(&j3, want3, sizeof(want3), "empty delta");
}

/* Grown terms across CHUNK boundaries, checked against the formula. */
static void test_run_grown_long(void **state)
{
	enum { N = 5000, NB = 3000, ND = 4500 };
	uint16_t *base = malloc(NB * 2), *want = malloc(N * 2);
	float *d = malloc(ND * 4);
	size_t i;
	struct rfs_kern_term t[2] = {
		{ RFS_KDT_BF16, base, NB, 1.0f },
		{ RFS_KDT_F32, d, ND, 0.75f },
	};
	struct rfs_kern_job j = { RFS_KDT_BF16, NULL, N, 2, t, 0 };

	(void)state;
	assert_true(base && want && d);
	for (i = 0; i < NB; i++)
		base[i] = (uint16_t)(weight_f32() >> 16);
	for (i = 0; i < ND; i++)
		d[i] = rfs_bits_f32(weight_f32());
	for (i = 0; i < N; i++) {
		float a = i < NB ? rfs_bf16_to_f32(base[i]) : 0.0f;
		float x = i < ND ? d[i] : 0.0f;
		float p = 0.75f * x;

		want[i] = rfs_f32_to_bf16(a + p);
	}
	run_all(&j, want, N * 2, "grown across chunks");
	free(base);
	free(want);
	free(d);
}

static void test_run_cast_first_f16(void **state)
{
	/* bf16 term 1.0 with scale 0.3f, f16 base 1.0, f16 output.
	 * single: 1 + 0.3f = 0x3FA66666 -> f16 0x3D33.
	 * cast-first: 0.3f -> bf16 0x3E9A (0.30078125) -> f16 0x34D0, then
	 * 1 + 0.30078125 -> f16 0x3D34. */
	const uint16_t base[] = { 0x3C00, 0x3C00 };
	const uint16_t d[] = { 0x3F80, 0x0000 };
	struct rfs_kern_term t[2] = {
		{ RFS_KDT_F16, base, 2, 1.0f },
		{ RFS_KDT_BF16, d, 2, 0.3f },
	};
	struct rfs_kern_job j = { RFS_KDT_F16, NULL, 2, 2, t, 0 };
	const uint16_t want[] = { 0x3D33, 0x3C00 };
	const uint16_t want_cf[] = { 0x3D34, 0x3C00 };

	(void)state;
	run_all(&j, want, sizeof(want), "f16 single");
	j.cast_first = 1;
	run_all(&j, want_cf, sizeof(want_cf), "f16 cast-first");
}

static void test_run_f16_out(void **state)
{
	const uint16_t base[] = { 0x3C00, 0x7BFF, 0x7BFF, 0x0001, 0x8001, 0x3C00 };
	/* 1 + 2^-11 + 2^-22: above the tie; 65504 + 16 = 65520 -> inf;
	 * 65504 + 15 stays; 2^-24 + 2^-25 = tie -> 2^-23; -2^-24 + 2^-24 = +0;
	 * NaN delta -> NaN */
	const float d[] = { 0x1p-11f + 0x1p-22f, 16.0f, 15.0f, 0x1p-25f, 0x1p-24f, rfs_bits_f32(0x7FC00000) };
	struct rfs_kern_term t[2] = {
		{ RFS_KDT_F16, base, 6, 1.0f },
		{ RFS_KDT_F32, d, 6, 1.0f },
	};
	struct rfs_kern_job j = { RFS_KDT_F16, NULL, 6, 2, t, 0 };
	const uint16_t want[] = { 0x3C01, 0x7C00, 0x7BFF, 0x0002, 0x0000, 0x7E00 };
	/* cast-first: 2^-11 + 2^-22 -> f16 2^-11, then 1 + 2^-11 ties to 1;
	 * 2^-25 -> f16 0 (tie to even), then 2^-24 + 0 = 2^-24 */
	const uint16_t want_cf[] = { 0x3C00, 0x7C00, 0x7BFF, 0x0001, 0x0000, 0x7E00 };

	(void)state;
	run_all(&j, want, sizeof(want), "f16 output");
	j.cast_first = 1;
	run_all(&j, want_cf, sizeof(want_cf), "f16 output cast-first");
}

static void test_run_f32_out(void **state)
{
	const uint16_t base[] = { 0x3F80, 0xBF80, 0x7F80, 0x3F80 };
	const float d[] = { 0x1p-20f, 0.3f, -1.0f, 0.0f };
	struct rfs_kern_term t[2] = {
		{ RFS_KDT_BF16, base, 4, 1.0f },
		{ RFS_KDT_F32, d, 4, 2.0f },
	};
	struct rfs_kern_job j = { RFS_KDT_F32, NULL, 4, 2, t, 0 };
	/* 1 + 2^-19; -1 + 0.6f (0x3F19999A) = -0.39999998 (0xBECCCCCC); inf; 1 */
	const uint32_t want[] = { 0x3F800010, 0xBECCCCCC, 0x7F800000, 0x3F800000 };
	/* the f32 path of `residuals` computes in f32: f32 base + f32 delta */
	const float fb[] = { 1.5f, -0.0f };
	const float fd[] = { 0x1p-23f, 0.0f };
	struct rfs_kern_term tf[2] = {
		{ RFS_KDT_F32, fb, 2, 1.0f },
		{ RFS_KDT_F32, fd, 2, 1.0f },
	};
	struct rfs_kern_job jf = { RFS_KDT_F32, NULL, 2, 2, tf, 0 };
	const uint32_t wantf[] = { 0x3FC00001, 0x00000000 };

	(void)state;
	assert_int_equal(rfs_f32_bits(-1.0f + 2.0f * 0.3f), 0xBECCCCCC);
	run_all(&j, want, sizeof(want), "f32 output");
	j.cast_first = 1; /* rounding to f32 is the identity */
	run_all(&j, want, sizeof(want), "f32 output cast-first");
	run_all(&jf, wantf, sizeof(wantf), "f32 in, f32 out");
}

/* Compute mode: instruct - base, f32 out; base + delta gives instruct back. */
static void test_run_compute_roundtrip(void **state)
{
	enum { N = 4099 };
	uint16_t *ins = malloc(N * 2), *base = malloc(N * 2), *back = malloc(N * 2);
	float *delta = malloc(N * 4);
	struct rfs_kern_term tc[2] = {
		{ RFS_KDT_BF16, ins, N, 1.0f },
		{ RFS_KDT_BF16, base, N, -1.0f },
	};
	struct rfs_kern_job jc = { RFS_KDT_F32, delta, N, 2, tc, 0 };
	struct rfs_kern_term ta[2] = {
		{ RFS_KDT_BF16, base, N, 1.0f },
		{ RFS_KDT_F32, delta, N, 1.0f },
	};
	struct rfs_kern_job ja = { RFS_KDT_BF16, back, N, 2, ta, 0 };
	struct backend b[4];
	size_t nb = backends(b), k, i;

	(void)state;
	assert_true(ins && base && back && delta);
	for (i = 0; i < N; i++) {
		uint32_t w = weight_f32();

		base[i] = (uint16_t)(w >> 16);
		/* an instruct weight near the base one */
		ins[i] = (uint16_t)(base[i] + (int)(rnd32() % 64) - 32);
	}
	for (k = 0; k < nb; k++) {
		memset(back, 0, N * 2);
		rfs_kern_run(b[k].ops, &jc);
		rfs_kern_run(b[k].ops, &ja);
		for (i = 0; i < N; i++)
			if (back[i] != ins[i])
				fail_msg("[%s] element %zu: base 0x%04x + delta gives 0x%04x, instruct 0x%04x",
					 b[k].name, i, base[i], back[i], ins[i]);
	}
	free(ins);
	free(base);
	free(back);
	free(delta);
}

/* -------------------------------------------------- SIMD against scalar */

#define NF32 (65536 * 16)
#define NCORPUS (NF32 + NF32 / 4)
#define JOB_MAXN (4099 + 8)

static uint32_t *f32_corpus(void)
{
	static const uint16_t lows[16] = {
		0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x4000,
		0x6000, 0x7FFF, 0x8000, 0x8001, 0xA000, 0xE000, 0xFFFF, 0,
	};
	uint32_t *v = malloc(NCORPUS * sizeof(*v));
	size_t i;

	assert_non_null(v);
	/* every high half with the low halves that make ties and near-ties for
	 * bf16 (bit 15) and for fp16 normals and subnormals (bits 13..23) */
	for (i = 0; i < NF32; i++) {
		uint16_t lo = lows[i % 16];

		if (i % 16 == 15)
			lo = (uint16_t)rnd32();
		v[i] = (uint32_t)(i / 16) << 16 | lo;
	}
	/* then random NaNs, infinities, subnormals, ties */
	for (; i < NCORPUS; i++)
		v[i] = special_f32();
	return v;
}

static size_t report_diff(const char *what, const char *be, const void *in, size_t in_sz,
			  const void *want, const void *got, size_t out_sz, size_t n, size_t *shown)
{
	size_t i, bad = 0;

	for (i = 0; i < n; i++) {
		uint32_t a = 0, w = 0, g = 0;

		memcpy(&w, (const char *)want + i * out_sz, out_sz);
		memcpy(&g, (const char *)got + i * out_sz, out_sz);
		if (w == g)
			continue;
		bad++;
		if (in)
			memcpy(&a, (const char *)in + i * in_sz, in_sz);
		if ((*shown)++ < 20)
			print_error("%s [%s]: element %zu input 0x%0*x: scalar 0x%0*x, %s 0x%0*x\n",
				    what, be, i, (int)in_sz * 2, a, (int)out_sz * 2, w, be,
				    (int)out_sz * 2, g);
	}
	return bad;
}

/* Lengths and misalignments for tail handling. */
static const size_t tails[] = { 0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33, 63, 65, 1000, 4099 };

static void test_simd_to_f32(void **state)
{
	struct backend b[4];
	size_t nb = backends(b), k, i, bad = 0, shown = 0;
	uint16_t *in = malloc(2 * 65536 * 2);
	float *want = malloc(2 * 65536 * 4), *got = malloc(2 * 65536 * 4);
	int t;

	(void)state;
	assert_true(in && want && got);
	for (i = 0; i < 65536; i++) {
		in[i] = (uint16_t)i;
		in[65536 + i] = special_u16();
	}
	if (nb == 1)
		print_message("no SIMD backend on this machine/build: nothing to compare\n");
	for (k = 1; k < nb; k++) {
		for (t = 0; t < RFS_KDT_COUNT; t++) {
			size_t total = t == RFS_KDT_F32 ? 65536 : 2 * 65536, o, m;
			const char *what = t == RFS_KDT_F32 ? "to_f32(F32)" : t == RFS_KDT_BF16 ?
					   "to_f32(BF16)" : "to_f32(F16)";

			rfs_kern_scalar.to_f32(t, in, want, total);
			memset(got, 0x5A, total * 4);
			b[k].ops->to_f32(t, in, got, total);
			bad += report_diff(what, b[k].name, in, t == RFS_KDT_F32 ? 4 : 2,
					   want, got, 4, total, &shown);
			/* tails at every misalignment; nothing past n is written */
			for (o = 0; o < 4; o++)
				for (m = 0; m < sizeof(tails) / sizeof(tails[0]); m++) {
					size_t n = tails[m], esz = rfs_kdt_size(t);
					const char *src = (const char *)in + (o * 37) * esz;

					memset(want, 0x5A, (n + 24) * 4);
					memset(got, 0x5A, (n + 24) * 4);
					rfs_kern_scalar.to_f32(t, src, want + o, n);
					b[k].ops->to_f32(t, src, got + o, n);
					bad += report_diff(what, b[k].name, NULL, 0, want, got, 4,
							   n + o + 20, &shown);
				}
		}
	}
	free(in);
	free(want);
	free(got);
	assert_int_equal(bad, 0);
}

static void test_simd_from_f32(void **state)
{
	struct backend b[4];
	size_t nb = backends(b), k, bad = 0, shown = 0;
	uint32_t *in = f32_corpus();
	size_t total = NCORPUS;
	void *want = malloc(total * 4 + 256), *got = malloc(total * 4 + 256);
	int t;

	(void)state;
	assert_true(want && got);
	for (k = 1; k < nb; k++) {
		for (t = 0; t < RFS_KDT_COUNT; t++) {
			size_t esz = rfs_kdt_size(t), o, m;
			const char *what = t == RFS_KDT_F32 ? "from_f32(F32)" : t == RFS_KDT_BF16 ?
					   "from_f32(BF16)" : "from_f32(F16)";

			rfs_kern_scalar.from_f32(t, (const float *)in, want, total);
			memset(got, 0x5A, total * esz);
			b[k].ops->from_f32(t, (const float *)in, got, total);
			bad += report_diff(what, b[k].name, in, 4, want, got, esz, total, &shown);
			for (o = 0; o < 4; o++)
				for (m = 0; m < sizeof(tails) / sizeof(tails[0]); m++) {
					size_t n = tails[m];
					const float *src = (const float *)in + o * 4099 + 5;

					memset(want, 0x5A, (n + 40) * esz);
					memset(got, 0x5A, (n + 40) * esz);
					rfs_kern_scalar.from_f32(t, src, (char *)want + o * esz, n);
					b[k].ops->from_f32(t, src, (char *)got + o * esz, n);
					bad += report_diff(what, b[k].name, NULL, 0, want, got, esz,
							   n + o + 20, &shown);
				}
		}
	}
	free(in);
	free(want);
	free(got);
	assert_int_equal(bad, 0);
}

static void test_simd_round(void **state)
{
	struct backend b[4];
	size_t nb = backends(b), k, bad = 0, shown = 0;
	uint32_t *in = f32_corpus();
	size_t total = NCORPUS;
	float *want = malloc(total * 4 + 256), *got = malloc(total * 4 + 256);
	int t;

	(void)state;
	assert_true(want && got);
	for (k = 1; k < nb; k++) {
		for (t = 0; t < RFS_KDT_COUNT; t++) {
			size_t o, m;
			const char *what = t == RFS_KDT_F32 ? "round(F32)" : t == RFS_KDT_BF16 ?
					   "round(BF16)" : "round(F16)";

			memcpy(want, in, total * 4);
			memcpy(got, in, total * 4);
			rfs_kern_scalar.round(t, want, total);
			b[k].ops->round(t, got, total);
			bad += report_diff(what, b[k].name, in, 4, want, got, 4, total, &shown);
			for (o = 0; o < 4; o++)
				for (m = 0; m < sizeof(tails) / sizeof(tails[0]); m++) {
					size_t n = tails[m];
					const uint32_t *src = in + o * 8191 + 3;

					memcpy(want, src, (n + 20) * 4);
					memcpy(got, src, (n + 20) * 4);
					rfs_kern_scalar.round(t, want + o, n);
					b[k].ops->round(t, got + o, n);
					bad += report_diff(what, b[k].name, NULL, 0, want, got, 4,
							   n + 20, &shown);
				}
		}
	}
	free(in);
	free(want);
	free(got);
	assert_int_equal(bad, 0);
}

/*
 * axpy: acc and x from three kinds of data.  "nan_pairs" chooses whether
 * both operands of one product or sum may be NaN at once (NaN scale
 * included): x86 then returns the payload of the first source operand, so
 * the backends must also agree on operand order.
 */
static void fill_axpy(uint32_t *acc, uint32_t *x, size_t n, int nan_pairs)
{
	size_t i;

	for (i = 0; i < n; i++) {
		switch (rnd32() % 3) {
		case 0:
			acc[i] = weight_f32();
			x[i] = weight_f32();
			break;
		case 1:
			acc[i] = special_f32();
			x[i] = weight_f32();
			break;
		default:
			acc[i] = special_f32();
			x[i] = special_f32();
		}
		/* a NaN acc meets a finite non-zero x, so no product or sum
		 * with a finite scale sees two NaNs */
		if (!nan_pairs && (acc[i] & 0x7FFFFFFF) > 0x7F800000u)
			x[i] = weight_f32();
	}
}

static void axpy_compare(int nan_pairs, void **state)
{
	static const uint32_t scales[] = {
		0x3F800000, /* 1 */
		0xBF800000, /* -1 */
		0x3F000000, /* 0.5 */
		0x3E99999A, /* 0.3 */
		0x40400000, /* 3 */
		0x0DA24260, /* 1e-30: products go subnormal */
		0x7149F2CA, /* 1e30: products overflow */
		0x00000000, /* +0 */
		0x80000000, /* -0 */
		0x00000001, /* smallest subnormal */
		0x7F800000, /* inf */
	};
	/* no NaN scale: scales are finite by contract (the CLI refuses others) */
	size_t nscales = sizeof(scales) / sizeof(scales[0]);
	enum { N = 1 << 16 };
	struct backend b[4];
	size_t nb = backends(b), k, s, bad = 0, shown = 0;
	uint32_t *acc = malloc(N * 4), *x = malloc(N * 4);
	float *want = malloc(N * 4 + 128), *got = malloc(N * 4 + 128);

	(void)state;
	assert_true(acc && x && want && got);
	fill_axpy(acc, x, N, nan_pairs);
	for (k = 1; k < nb; k++) {
		for (s = 0; s < nscales; s++) {
			float sc = rfs_bits_f32(scales[s]);
			char what[64];
			size_t o, m, i;

			size_t before = bad;

			snprintf(what, sizeof(what), "axpy(s=0x%08x%s)", scales[s],
				 nan_pairs ? ", NaN+NaN" : "");
			memcpy(want, acc, N * 4);
			memcpy(got, acc, N * 4);
			rfs_kern_scalar.axpy(want, (const float *)x, sc, N);
			b[k].ops->axpy(got, (const float *)x, sc, N);
			for (i = 0; i < N; i++) {
				if (rfs_f32_bits(want[i]) != rfs_f32_bits(got[i])) {
					bad++;
					if (shown++ < 20)
						print_error("%s [%s]: element %zu acc 0x%08x x 0x%08x: scalar 0x%08x, %s 0x%08x\n",
							    what, b[k].name, i, acc[i], x[i],
							    rfs_f32_bits(want[i]), b[k].name, rfs_f32_bits(got[i]));
				}
			}
			for (o = 0; o < 4; o++)
				for (m = 0; m < sizeof(tails) / sizeof(tails[0]); m++) {
					size_t n = tails[m];
					const float *xs = (const float *)x + 7 + o;

					memcpy(want, acc + 7, (n + 20) * 4);
					memcpy(got, acc + 7, (n + 20) * 4);
					rfs_kern_scalar.axpy(want + o, xs, sc, n);
					b[k].ops->axpy(got + o, xs, sc, n);
					bad += report_diff(what, b[k].name, NULL, 0, want, got, 4,
							   n + 20, &shown);
				}
			if (bad != before)
				print_error("%s [%s]: %zu elements differ from scalar\n", what,
					    b[k].name, bad - before);
		}
	}
	free(acc);
	free(x);
	free(want);
	free(got);
	assert_int_equal(bad, 0);
}

static void test_simd_axpy(void **state)
{
	axpy_compare(0, state);
}

static void test_simd_axpy_nan_pairs(void **state)
{
	axpy_compare(1, state);
}

/*
 * Fills the terms of a random job.  Without @nan_pairs an element carries
 * specials (NaN, inf, ...) in at most one term, so no sum ever sees two
 * NaNs (or inf - inf followed by a NaN); with it, anything goes.
 */
static void fill_terms(void **data, const unsigned *dts, unsigned nt, int nan_pairs)
{
	size_t e;
	unsigned q;

	for (e = 0; e < JOB_MAXN; e++) {
		unsigned sp = rnd32() % (nt + 2); /* the one term allowed specials */

		for (q = 0; q < nt; q++) {
			int special = (nan_pairs || q == sp) && rnd32() % 4 == 0;
			uint32_t r = special ? special_f32() : weight_f32();

			if (dts[q] == RFS_KDT_F32)
				((uint32_t *)data[q])[e] = r;
			else if (special && rnd32() % 2)
				((uint16_t *)data[q])[e] = special_u16();
			else
				((uint16_t *)data[q])[e] = (uint16_t)(dts[q] == RFS_KDT_BF16 ?
					r >> 16 : rfs_f32_to_f16(rfs_bits_f32(r)));
		}
	}
}

/* Whole jobs with odd lengths: every dtype mix, scales, grown terms. */
static void jobs_compare(int nan_pairs)
{
	static const size_t lens[] = { 1, 7, 8, 9, 15, 16, 17, 1000, 2047, 2048, 2049, 4099 };
	static const float scales[] = { 1.0f, -1.0f, 0.5f, 0.3f, -0.25f, 3.0f };
	struct backend b[4];
	size_t nb = backends(b), k, li, bad = 0, shown = 0, jobs = 0;
	void *data[3];
	void *want = malloc(JOB_MAXN * 4), *got = malloc(JOB_MAXN * 4);
	unsigned out, cf, nt, combo;
	size_t i;

	assert_true(want && got);
	for (i = 0; i < 3; i++) {
		data[i] = malloc(JOB_MAXN * 4);
		assert_non_null(data[i]);
	}
	for (li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
		size_t n = lens[li];

		for (out = 0; out < RFS_KDT_COUNT; out++)
			for (cf = 0; cf < 2; cf++)
				for (nt = 1; nt <= 3; nt++)
					for (combo = 0; combo < (nt == 1 ? 3u : nt == 2 ? 9u : 27u); combo++) {
						struct rfs_kern_term t[3];
						struct rfs_kern_job j = { out, NULL, n, nt, t, (int)cf };
						unsigned q, dts[3] = { combo % 3, combo / 3 % 3, combo / 9 % 3 };

						fill_terms(data, dts, nt, nan_pairs);
						for (q = 0; q < nt; q++) {
							size_t tn;

							switch (rnd32() % 4) {
							case 0: tn = n / 2; break;
							case 1: tn = n + 8; break;
							case 2: tn = rnd32() % 3 ? n : 0; break;
							default: tn = n;
							}
							t[q] = (struct rfs_kern_term){
								(enum rfs_kdt)dts[q], data[q], tn,
								q == 0 ? 1.0f : scales[rnd32() % 6]
							};
						}
						memset(want, 0x5A, JOB_MAXN * 4);
						j.out = want;
						rfs_kern_run(&rfs_kern_scalar, &j);
						for (k = 1; k < nb; k++) {
							size_t esz = rfs_kdt_size(out), d;

							memset(got, 0x5A, JOB_MAXN * 4);
							j.out = got;
							rfs_kern_run(b[k].ops, &j);
							jobs++;
							/* n + 4: nothing is written past the end */
							d = report_diff("job", b[k].name, NULL, 0, want, got, esz,
									n + 4, &shown);
							if (d && shown <= 20)
								print_error("  in job n=%zu out=%u cast_first=%u terms=%u dtypes=%u,%u,%u lens=%zu,%zu,%zu scales=%g,%g\n",
									    n, out, cf, nt, dts[0], dts[1], dts[2],
									    t[0].n, nt > 1 ? t[1].n : 0, nt > 2 ? t[2].n : 0,
									    nt > 1 ? t[1].scale : 0.0, nt > 2 ? t[2].scale : 0.0);
							bad += d;
						}
					}
	}
	if (nb > 1)
		print_message("compared %zu jobs, %zu elements differ\n", jobs, bad);
	for (i = 0; i < 3; i++)
		free(data[i]);
	free(want);
	free(got);
	assert_int_equal(bad, 0);
}

/* NaN, inf and subnormals, but never two NaNs meeting in one operation. */
static void test_simd_jobs(void **state)
{
	(void)state;
	jobs_compare(0);
}

/* Also NaN + NaN: which payload survives must not depend on the backend. */
static void test_simd_jobs_nan_pairs(void **state)
{
	(void)state;
	jobs_compare(1);
}

static void test_best(void **state)
{
	const struct rfs_kern_ops *best = rfs_kern_best();
	struct backend b[4];
	size_t nb = backends(b);

	(void)state;
	assert_non_null(best);
	assert_non_null(best->to_f32);
	assert_non_null(best->from_f32);
	assert_non_null(best->axpy);
	assert_non_null(best->round);
	assert_ptr_equal(rfs_kern_best(), best); /* chosen once */
	if (!getenv("RESIDFS_KERNEL"))
		assert_ptr_equal(best, b[nb - 1].ops); /* the widest the CPU runs */
	assert_int_equal(rfs_kdt_size(RFS_KDT_F32), 4);
	assert_int_equal(rfs_kdt_size(RFS_KDT_BF16), 2);
	assert_int_equal(rfs_kdt_size(RFS_KDT_F16), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_f32_to_bf16),
		cmocka_unit_test(test_bf16_to_f32),
		cmocka_unit_test(test_f32_to_f16),
		cmocka_unit_test(test_f16_to_f32),
		cmocka_unit_test(test_run_bf16_single),
		cmocka_unit_test(test_run_cast_first_rounds_base),
		cmocka_unit_test(test_run_scale_half),
		cmocka_unit_test(test_run_two_deltas),
		cmocka_unit_test(test_run_negation),
		cmocka_unit_test(test_run_grown),
		cmocka_unit_test(test_run_grown_long),
		cmocka_unit_test(test_run_cast_first_f16),
		cmocka_unit_test(test_run_f16_out),
		cmocka_unit_test(test_run_f32_out),
		cmocka_unit_test(test_run_compute_roundtrip),
		cmocka_unit_test(test_simd_to_f32),
		cmocka_unit_test(test_simd_from_f32),
		cmocka_unit_test(test_simd_round),
		cmocka_unit_test(test_simd_axpy),
		cmocka_unit_test(test_simd_axpy_nan_pairs),
		cmocka_unit_test(test_simd_jobs),
		cmocka_unit_test(test_simd_jobs_nan_pairs),
		cmocka_unit_test(test_best),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
