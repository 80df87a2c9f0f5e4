/*
 * AVX-512 (F, BW, VL) kernels: 16 lanes, masked tails, no scalar tail.
 * Compiled apart with -mavx512f -mavx512bw -mavx512vl (no FMA contraction:
 * -ffp-contract=off is global).
 */
#include "kern.h"

#include <immintrin.h>
#include <string.h>

static inline __m512 bf16x16_to_f32(__m256i h)
{
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __m256i f32x16_to_bf16(__m512 v)
{
	__m512i u = _mm512_castps_si512(v);
	__m512i absu = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
	__mmask16 nan = _mm512_cmpgt_epu32_mask(absu, _mm512_set1_epi32(0x7F800000));
	__m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
	__m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));

	r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
	return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

static inline __mmask16 tail(size_t left)
{
	return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}

static void z_to_f32(enum rfs_kdt t, const void *src, float *dst, size_t n)
{
	const uint16_t *h = src;
	size_t i;

	if (t == RFS_KDT_F32) {
		memcpy(dst, src, n * 4);
		return;
	}
	for (i = 0; i < n; i += 16) {
		__mmask16 m = tail(n - i);
		__m256i x = _mm256_maskz_loadu_epi16(m, h + i);
		__m512 f = t == RFS_KDT_BF16 ? bf16x16_to_f32(x) : _mm512_cvtph_ps(x);

		_mm512_mask_storeu_ps(dst + i, m, f);
	}
}

static inline __m256i to16(enum rfs_kdt t, __m512 v)
{
	if (t == RFS_KDT_BF16)
		return f32x16_to_bf16(v);
	return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static void z_from_f32(enum rfs_kdt t, const float *src, void *dst, size_t n)
{
	uint16_t *h = dst;
	size_t i;

	if (t == RFS_KDT_F32) {
		memcpy(dst, src, n * 4);
		return;
	}
	for (i = 0; i < n; i += 16) {
		__mmask16 m = tail(n - i);

		_mm256_mask_storeu_epi16(h + i, m, to16(t, _mm512_maskz_loadu_ps(m, src + i)));
	}
}

static void z_axpy(float *acc, const float *x, float s, size_t n)
{
	__m512 vs = _mm512_set1_ps(s);
	size_t i;

	for (i = 0; i < n; i += 16) {
		__mmask16 m = tail(n - i);
		__m512 a = _mm512_maskz_loadu_ps(m, acc + i);
		__m512 v = _mm512_maskz_loadu_ps(m, x + i);

		__mmask16 nan = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
		__m512i r;

		if (s != 1.0f)
			v = _mm512_mul_ps(vs, v);
		/* a NaN in acc wins, quieted (see kern_scalar.c) */
		r = _mm512_mask_or_epi32(_mm512_castps_si512(_mm512_add_ps(a, v)), nan,
					 _mm512_castps_si512(a), _mm512_set1_epi32(0x400000));
		_mm512_mask_storeu_ps(acc + i, m, _mm512_castsi512_ps(r));
	}
}

static void z_round(enum rfs_kdt t, float *buf, size_t n)
{
	size_t i;

	if (t == RFS_KDT_F32)
		return;
	for (i = 0; i < n; i += 16) {
		__mmask16 m = tail(n - i);
		__m256i h = to16(t, _mm512_maskz_loadu_ps(m, buf + i));
		__m512 f = t == RFS_KDT_BF16 ? bf16x16_to_f32(h) : _mm512_cvtph_ps(h);

		_mm512_mask_storeu_ps(buf + i, m, f);
	}
}

static inline __m512 load16(enum rfs_kdt t, const void *p, size_t i, __mmask16 m)
{
	if (t == RFS_KDT_F32)
		return _mm512_maskz_loadu_ps(m, (const float *)p + i);
	if (t == RFS_KDT_BF16)
		return bf16x16_to_f32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
	return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i));
}

/* The whole single-rounding job in registers, 16 elements at a time. */
static size_t z_fused(const struct rfs_kern_job *job, size_t from, size_t to)
{
	const struct rfs_kern_term *t = job->terms;
	size_t i;
	unsigned k;

	for (i = from; i < to; i += 16) {
		__mmask16 m = tail(to - i);
		__m512 acc = load16(t[0].dtype, t[0].data, i, m);

		for (k = 1; k < job->nterms; k++) {
			__m512 v = load16(t[k].dtype, t[k].data, i, m);
			__mmask16 nan = _mm512_cmp_ps_mask(acc, acc, _CMP_UNORD_Q);
			__m512i r;

			if (t[k].scale != 1.0f)
				v = _mm512_mul_ps(_mm512_set1_ps(t[k].scale), v);
			r = _mm512_mask_or_epi32(_mm512_castps_si512(_mm512_add_ps(acc, v)), nan,
						 _mm512_castps_si512(acc), _mm512_set1_epi32(0x400000));
			acc = _mm512_castsi512_ps(r);
		}
		if (job->out_dtype == RFS_KDT_F32)
			_mm512_mask_storeu_ps((float *)job->out + i, m, acc);
		else
			_mm256_mask_storeu_epi16((uint16_t *)job->out + i, m, to16(job->out_dtype, acc));
	}
	return to;
}

static const struct rfs_kern_ops avx512_ops = {
	.name = "avx512",
	.to_f32 = z_to_f32,
	.from_f32 = z_from_f32,
	.axpy = z_axpy,
	.round = z_round,
	.fused = z_fused,
};

const struct rfs_kern_ops *rfs_kern_avx512(void)
{
	int ok;

	__builtin_cpu_init();
	ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") &&
	     __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	     __builtin_cpu_supports("avx512vl");
	return ok ? &avx512_ops : NULL;
}
