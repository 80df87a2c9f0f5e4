/*
 * Scalar reference kernels.  Everything else must match these bit for bit.
 * Built with -ffp-contract=off so a*b+c is never fused.
 */
#include "kern.h"

#include <string.h>

float rfs_bf16_to_f32(uint16_t h)
{
	return rfs_bits_f32((uint32_t)h << 16);
}

uint16_t rfs_f32_to_bf16(float f)
{
	uint32_t u = rfs_f32_bits(f);

	if ((u & 0x7FFFFFFFu) > 0x7F800000u)
		return (uint16_t)((u >> 16) | 0x40); /* quiet NaN, sign kept */
	u += 0x7FFFu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

float rfs_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1F;
	uint32_t man = h & 0x3FF;

	if (exp == 0x1F) /* Inf or NaN; NaN payload kept, quieted */
		return rfs_bits_f32(sign | 0x7F800000u | (man << 13) |
			   (man ? 0x400000u : 0));
	if (exp == 0) {
		if (man == 0)
			return rfs_bits_f32(sign);
		/* subnormal: value = man * 2^-24, exact in float32 */
		exp = 127 - 15 + 1;
		while (!(man & 0x400)) {
			man <<= 1;
			exp--;
		}
		man &= 0x3FF;
		return rfs_bits_f32(sign | (exp << 23) | (man << 13));
	}
	return rfs_bits_f32(sign | ((exp + 127 - 15) << 23) | (man << 13));
}

uint16_t rfs_f32_to_f16(float f)
{
	uint32_t u = rfs_f32_bits(f);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	uint32_t abs = u & 0x7FFFFFFFu;
	int32_t exp;
	uint32_t man, res, shift, rest, half;

	if (abs >= 0x7F800000u) {
		if (abs == 0x7F800000u)
			return sign | 0x7C00;
		return sign | 0x7E00 | (uint16_t)((abs & 0x7FFFFF) >> 13);
	}
	if (abs >= 0x477FF000u) /* rounds to >= 65520: overflow */
		return sign | 0x7C00;
	exp = (int32_t)(abs >> 23) - 127 + 15;
	man = abs & 0x7FFFFF;
	if (exp >= 1) {
		/* normal: keep 10 bits, round the 13 dropped bits to even */
		res = ((uint32_t)exp << 10) | (man >> 13);
		rest = man & 0x1FFF;
		if (rest > 0x1000 || (rest == 0x1000 && (res & 1)))
			res++; /* may carry into the exponent: still correct */
		return sign | (uint16_t)res;
	}
	if (exp < -10) /* below half the smallest subnormal */
		return sign;
	/* subnormal: value = (man|implicit) >> shift in units of 2^-24 */
	man |= 0x800000;
	shift = (uint32_t)(14 - exp);
	res = man >> shift;
	rest = man & ((1u << shift) - 1);
	half = 1u << (shift - 1);
	if (rest > half || (rest == half && (res & 1)))
		res++;
	return sign | (uint16_t)res;
}

static void sc_to_f32(enum rfs_kdt t, const void *src, float *dst, size_t n)
{
	const uint16_t *h = src;
	size_t i;

	switch (t) {
	case RFS_KDT_F32:
		memcpy(dst, src, n * 4);
		break;
	case RFS_KDT_BF16:
		for (i = 0; i < n; i++)
			dst[i] = rfs_bf16_to_f32(h[i]);
		break;
	case RFS_KDT_F16:
		for (i = 0; i < n; i++)
			dst[i] = rfs_f16_to_f32(h[i]);
		break;
	default:
		break;
	}
}

static void sc_from_f32(enum rfs_kdt t, const float *src, void *dst, size_t n)
{
	uint16_t *h = dst;
	size_t i;

	switch (t) {
	case RFS_KDT_F32:
		memcpy(dst, src, n * 4);
		break;
	case RFS_KDT_BF16:
		for (i = 0; i < n; i++)
			h[i] = rfs_f32_to_bf16(src[i]);
		break;
	case RFS_KDT_F16:
		for (i = 0; i < n; i++)
			h[i] = rfs_f32_to_f16(src[i]);
		break;
	default:
		break;
	}
}

/* acc + p, where a NaN in acc wins (quieted) over a NaN in p: x86 and
 * compilers do not fix which operand's payload a NaN + NaN keeps. */
static inline float add_nan_acc(float a, float p)
{
	float r = a + p;

	if (a != a)
		r = rfs_bits_f32(rfs_f32_bits(a) | 0x400000u);
	return r;
}

static void sc_axpy(float *acc, const float *x, float s, size_t n)
{
	size_t i;

	if (s == 1.0f) {
		for (i = 0; i < n; i++)
			acc[i] = add_nan_acc(acc[i], x[i]);
		return;
	}
	for (i = 0; i < n; i++) {
		float p = s * x[i];

		acc[i] = add_nan_acc(acc[i], p);
	}
}

static void sc_round(enum rfs_kdt t, float *buf, size_t n)
{
	size_t i;

	switch (t) {
	case RFS_KDT_BF16:
		for (i = 0; i < n; i++)
			buf[i] = rfs_bf16_to_f32(rfs_f32_to_bf16(buf[i]));
		break;
	case RFS_KDT_F16:
		for (i = 0; i < n; i++)
			buf[i] = rfs_f16_to_f32(rfs_f32_to_f16(buf[i]));
		break;
	default:
		break;
	}
}

const struct rfs_kern_ops rfs_kern_scalar = {
	.name = "scalar",
	.to_f32 = sc_to_f32,
	.from_f32 = sc_from_f32,
	.axpy = sc_axpy,
	.round = sc_round,
};
