/*
 * kern.h - element-wise arithmetic of residfs (docs/arithmetic.md).
 *
 * Invariants every backend keeps, bit for bit with the scalar reference:
 *  - inputs are widened exactly to float32;
 *  - out = to_out(t0 + s1*t1 + s2*t2 ...) evaluated left to right in
 *    float32, every product and sum rounded to float32, no fused
 *    multiply-add; a term with scale 1 is added without a multiply;
 *  - to_out rounds to nearest, ties to even; bf16 NaN keeps its sign and
 *    becomes quiet, fp16 NaN is sign|0x7E00|(mantissa >> 13);
 *  - elements of a term past its length count as +0.0 (grown vocabulary);
 *  - NaN + NaN keeps the accumulated NaN (quieted): the running sum's NaN
 *    wins over the term's, whatever the hardware would pick; scales are
 *    finite, so s*x is NaN only when x is and keeps x's payload;
 *  - cast-first rounding (the `residuals` package's bf16/fp16 path):
 *    acc = to_out(t0) first (the package casts the model to its dtype),
 *    then per term x = s*t rounded to the term's dtype (s != 1), then to
 *    the output dtype, then acc = to_out(acc + x).
 *
 * This module knows nothing of files or safetensors: it sees arrays.
 */
#ifndef RFS_KERN_H
#define RFS_KERN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum rfs_kdt {
	RFS_KDT_F32 = 0,
	RFS_KDT_BF16 = 1,
	RFS_KDT_F16 = 2,
	RFS_KDT_COUNT
};

/** Bytes per element of a kernel dtype. */
static inline size_t rfs_kdt_size(enum rfs_kdt t)
{
	return t == RFS_KDT_F32 ? 4 : 2;
}

struct rfs_kern_job;

/** One backend: four primitives over float32 work buffers. */
struct rfs_kern_ops {
	const char *name;
	/** dst[i] = widen(src[i]), exact. */
	void (*to_f32)(enum rfs_kdt t, const void *src, float *dst, size_t n);
	/** dst[i] = round_to_t(src[i]). */
	void (*from_f32)(enum rfs_kdt t, const float *src, void *dst, size_t n);
	/** acc[i] = acc[i] + s*x[i] (two roundings); s == 1: acc[i] + x[i]. */
	void (*axpy)(float *acc, const float *x, float s, size_t n);
	/** buf[i] = widen(round_to_t(buf[i])) in place. */
	void (*round)(enum rfs_kdt t, float *buf, size_t n);
	/**
	 * Optional: the single-rounding job in one pass over elements
	 * [from, to), where every term has data; returns the end reached
	 * (the rest goes through the primitives).  NULL when absent.
	 */
	size_t (*fused)(const struct rfs_kern_job *job, size_t from, size_t to);
};

/** Scalar reference backend. */
extern const struct rfs_kern_ops rfs_kern_scalar;
/** AVX2+F16C backend, or NULL when not compiled in or this CPU lacks it. */
const struct rfs_kern_ops *rfs_kern_avx2(void);
/** AVX-512 (F+BW+VL) backend, or NULL when not compiled in or this CPU lacks it. */
const struct rfs_kern_ops *rfs_kern_avx512(void);

/**
 * Best backend for this CPU, chosen once (thread-safe).  The environment
 * variable RESIDFS_KERNEL=scalar|avx2|avx512 forces a choice (for tests
 * and benchmarks); an unavailable choice falls back to scalar.
 */
const struct rfs_kern_ops *rfs_kern_best(void);

/** One operand of a combination. */
struct rfs_kern_term {
	enum rfs_kdt dtype;
	const void *data; /* elements [0, n) of the output range */
	size_t n;         /* elements past n count as +0.0 */
	float scale;
};

/** A combination: out[0..n) = to_out(sum of terms) as described above. */
struct rfs_kern_job {
	enum rfs_kdt out_dtype;
	void *out;
	size_t n;
	unsigned nterms; /* >= 1; terms[0].scale must be 1 */
	const struct rfs_kern_term *terms;
	int cast_first;
};

/** Runs @job with backend @ops; needs no allocation (uses stack chunks). */
void rfs_kern_run(const struct rfs_kern_ops *ops, const struct rfs_kern_job *job);

/** The bits of float32 @f, and back. */
static inline uint32_t rfs_f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

static inline float rfs_bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

/* Scalar conversions, exposed for tests and header code. */
float rfs_bf16_to_f32(uint16_t h);
uint16_t rfs_f32_to_bf16(float f);
float rfs_f16_to_f32(uint16_t h);
uint16_t rfs_f32_to_f16(float f);

#endif
