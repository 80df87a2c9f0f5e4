/*
 * AVX2 + F16C kernels, compiled in their own static library with
 * -mavx2 -mf16c (never -mfma: GCC would contract mul+add).  Tails go
 * through the scalar reference so the two always agree.
 */
#include "kern.h"

#include <immintrin.h>
#include <string.h>

static inline __m256 bf16x8_to_f32(const uint16_t *p)
{
	__m128i h = _mm_loadu_si128((const __m128i *)p);

	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline __m128i f32x8_to_bf16(__m256 v)
{
	__m256i u = _mm256_castps_si256(v);
	__m256i absu = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
	__m256i nan = _mm256_cmpgt_epi32(absu, _mm256_set1_epi32(0x7F800000));
	__m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
	__m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
	__m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));

	r = _mm256_srli_epi32(_mm256_blendv_epi8(r, q, nan), 16);
	/* pack 8 x u32 (< 65536) into 8 x u16 */
	r = _mm256_packus_epi32(r, r);
	r = _mm256_permute4x64_epi64(r, 0x08);
	return _mm256_castsi256_si128(r);
}

static inline __m256 f16x8_to_f32(const uint16_t *p)
{
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m128i f32x8_to_f16(__m256 v)
{
	return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

static void v_to_f32(enum rfs_kdt t, const void *src, float *dst, size_t n)
{
	const uint16_t *h = src;
	size_t i = 0;

	if (t == RFS_KDT_F32) {
		memcpy(dst, src, n * 4);
		return;
	}
	if (t == RFS_KDT_BF16)
		for (; i + 8 <= n; i += 8)
			_mm256_storeu_ps(dst + i, bf16x8_to_f32(h + i));
	else
		for (; i + 8 <= n; i += 8)
			_mm256_storeu_ps(dst + i, f16x8_to_f32(h + i));
	rfs_kern_scalar.to_f32(t, h + i, dst + i, n - i);
}

static void v_from_f32(enum rfs_kdt t, const float *src, void *dst, size_t n)
{
	uint16_t *h = dst;
	size_t i = 0;

	if (t == RFS_KDT_F32) {
		memcpy(dst, src, n * 4);
		return;
	}
	if (t == RFS_KDT_BF16)
		for (; i + 8 <= n; i += 8)
			_mm_storeu_si128((__m128i *)(h + i),
					 f32x8_to_bf16(_mm256_loadu_ps(src + i)));
	else
		for (; i + 8 <= n; i += 8)
			_mm_storeu_si128((__m128i *)(h + i),
					 f32x8_to_f16(_mm256_loadu_ps(src + i)));
	rfs_kern_scalar.from_f32(t, src + i, h + i, n - i);
}

/* acc + p with a NaN in acc winning, quieted (see kern_scalar.c) */
static inline __m256 add_nan_acc(__m256 a, __m256 p)
{
	__m256 nan = _mm256_cmp_ps(a, a, _CMP_UNORD_Q);
	__m256 q = _mm256_or_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x400000)));

	return _mm256_blendv_ps(_mm256_add_ps(a, p), q, nan);
}

static void v_axpy(float *acc, const float *x, float s, size_t n)
{
	__m256 vs = _mm256_set1_ps(s);
	size_t i = 0;

	if (s == 1.0f) {
		for (; i + 8 <= n; i += 8)
			_mm256_storeu_ps(acc + i, add_nan_acc(_mm256_loadu_ps(acc + i),
							       _mm256_loadu_ps(x + i)));
	} else {
		for (; i + 8 <= n; i += 8) {
			__m256 p = _mm256_mul_ps(vs, _mm256_loadu_ps(x + i));

			_mm256_storeu_ps(acc + i, add_nan_acc(_mm256_loadu_ps(acc + i), p));
		}
	}
	rfs_kern_scalar.axpy(acc + i, x + i, s, n - i);
}

static void v_round(enum rfs_kdt t, float *buf, size_t n)
{
	size_t i = 0;

	if (t == RFS_KDT_BF16) {
		for (; i + 8 <= n; i += 8) {
			uint16_t tmp[8];

			_mm_storeu_si128((__m128i *)tmp, f32x8_to_bf16(_mm256_loadu_ps(buf + i)));
			_mm256_storeu_ps(buf + i, bf16x8_to_f32(tmp));
		}
	} else if (t == RFS_KDT_F16) {
		for (; i + 8 <= n; i += 8)
			_mm256_storeu_ps(buf + i, _mm256_cvtph_ps(f32x8_to_f16(_mm256_loadu_ps(buf + i))));
	}
	rfs_kern_scalar.round(t, buf + i, n - i);
}

static inline __m256 load8(enum rfs_kdt t, const void *p, size_t i)
{
	if (t == RFS_KDT_F32)
		return _mm256_loadu_ps((const float *)p + i);
	if (t == RFS_KDT_BF16)
		return bf16x8_to_f32((const uint16_t *)p + i);
	return f16x8_to_f32((const uint16_t *)p + i);
}

/* The whole single-rounding job in registers, 8 elements at a time; the
 * tail (fewer than 8) is left to the primitives. */
static size_t v_fused(const struct rfs_kern_job *job, size_t from, size_t to)
{
	const struct rfs_kern_term *t = job->terms;
	size_t i;
	unsigned k;

	for (i = from; i + 8 <= to; i += 8) {
		__m256 acc = load8(t[0].dtype, t[0].data, i);

		for (k = 1; k < job->nterms; k++) {
			__m256 v = load8(t[k].dtype, t[k].data, i);

			if (t[k].scale != 1.0f)
				v = _mm256_mul_ps(_mm256_set1_ps(t[k].scale), v);
			acc = add_nan_acc(acc, v);
		}
		if (job->out_dtype == RFS_KDT_F32)
			_mm256_storeu_ps((float *)job->out + i, acc);
		else if (job->out_dtype == RFS_KDT_BF16)
			_mm_storeu_si128((__m128i *)((uint16_t *)job->out + i), f32x8_to_bf16(acc));
		else
			_mm_storeu_si128((__m128i *)((uint16_t *)job->out + i), f32x8_to_f16(acc));
	}
	return i;
}

static const struct rfs_kern_ops avx2_ops = {
	.name = "avx2",
	.to_f32 = v_to_f32,
	.from_f32 = v_from_f32,
	.axpy = v_axpy,
	.round = v_round,
	.fused = v_fused,
};

const struct rfs_kern_ops *rfs_kern_avx2(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c") ? &avx2_ops : NULL;
}
