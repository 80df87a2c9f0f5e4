/*
 * kern_cuda.cu - CUDA backend of the residfs kernels (see kern_cuda.h).
 *
 * Built with nvcc --fmad=false --ftz=false: every product and sum is
 * rounded to float32 on its own (__fmul_rn/__fadd_rn make that explicit),
 * subnormals are kept.  The conversions are integer code that mirrors
 * kern_scalar.c line for line, NaN payloads included.  The GPU's own
 * conversion and arithmetic instructions return a canonical NaN
 * (0x7FFFFFFF), so NaN results are rebuilt by hand as the CPU gives them:
 * the first NaN operand, quieted (for acc + x that is the accumulator's,
 * as kern.h requires), else the host's default NaN (Inf - Inf, 0 * Inf).
 *
 * Host side: a small pool of contexts, each with NSLOT streams and their
 * pinned staging buffers.  A batch of jobs is cut into chunks of a few
 * MiB: a big job spans several chunks, small jobs share one (each chunk is
 * one upload, a kernel launch per piece and one download).  Chunk i goes
 * to slot i % NSLOT, so copying chunk i+1 into pinned memory overlaps the
 * upload, kernels and download of chunk i and the copy-out of i-2.
 */
#include <cuda_runtime.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "kern.h"
#include "../../core/log.h"
}
#include "kern_cuda.h"

#define RFS_CUDA_MAXT 16          /* terms per kernel pass */
#define RFS_CUDA_NSLOT 3          /* streams per context */
#define RFS_CUDA_NCTX 4           /* contexts (concurrent callers) */
#define RFS_CUDA_IN_BUDGET (24u << 20) /* staged input bytes per chunk */
#define RFS_CUDA_OUT_BUDGET (16u << 20) /* output bytes per chunk */
#define RFS_CUDA_CHUNK_MAX (4u << 20)  /* elements of one job per chunk */
#define RFS_CUDA_CHUNK_MIN (64u << 10)
#define RFS_CUDA_VEC 8            /* elements per thread (16-byte loads) */
#define RFS_CUDA_BLOCK 256
#define RFS_CUDA_ALIGN 256

/* ------------------------------------------------------------------ */
/* Device arithmetic: the exact twins of kern_scalar.c                 */

/** One term as a kernel sees it. */
struct rfs_cuda_kterm {
	const void *p;          /* device data of this range */
	unsigned long long have; /* elements present; the rest are +0.0 */
	float scale;
	int dtype;
	int vec;                /* p aligned for RFS_CUDA_VEC-element loads */
};

/** Arguments of one pass over at most RFS_CUDA_MAXT terms. */
struct rfs_cuda_kargs {
	struct rfs_cuda_kterm t[RFS_CUDA_MAXT];
	void *out;             /* out dtype if last, else float32 accumulator */
	const float *acc_in;   /* accumulator of the previous pass, if !first */
	unsigned long long n;
	int nt;
	int first;             /* t[0] is the base: loaded, not added */
	int last;              /* store to_out(acc), not the float32 acc */
	int out_vec;           /* out aligned for RFS_CUDA_VEC-element stores */
	uint32_t dnan;         /* the host CPU's default NaN */
};

static __device__ __forceinline__ float rfs_cuda_u2f(uint32_t u)
{
	return __uint_as_float(u);
}

static __device__ __forceinline__ uint32_t rfs_cuda_f2u(float f)
{
	return __float_as_uint(f);
}

static __device__ __forceinline__ int rfs_cuda_isnan_u(uint32_t u)
{
	return (u & 0x7FFFFFFFu) > 0x7F800000u;
}

static __device__ __forceinline__ float rfs_cuda_bf16_to_f32(uint32_t h)
{
	return rfs_cuda_u2f(h << 16);
}

static __device__ __forceinline__ uint32_t rfs_cuda_f32_to_bf16(float f)
{
	uint32_t u = rfs_cuda_f2u(f);

	if (rfs_cuda_isnan_u(u))
		return ((u >> 16) | 0x40) & 0xFFFFu; /* quiet NaN, sign kept */
	u += 0x7FFFu + ((u >> 16) & 1);
	return u >> 16;
}

static __device__ __forceinline__ float rfs_cuda_f16_to_f32(uint32_t h)
{
	uint32_t sign = (h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1F;
	uint32_t man = h & 0x3FF;
	int sh;

	if (exp == 0x1F) /* Inf or NaN; NaN payload kept, quieted */
		return rfs_cuda_u2f(sign | 0x7F800000u | (man << 13) |
				    (man ? 0x400000u : 0));
	if (exp == 0) {
		if (man == 0)
			return rfs_cuda_u2f(sign);
		/* subnormal: shift the leading one to bit 10 */
		sh = __clz(man) - 21;
		man = (man << sh) & 0x3FF;
		return rfs_cuda_u2f(sign | ((uint32_t)(113 - sh) << 23) |
				    (man << 13));
	}
	return rfs_cuda_u2f(sign | ((exp + 127 - 15) << 23) | (man << 13));
}

static __device__ __forceinline__ uint32_t rfs_cuda_f32_to_f16(float f)
{
	uint32_t u = rfs_cuda_f2u(f);
	uint32_t sign = (u >> 16) & 0x8000u;
	uint32_t abs = u & 0x7FFFFFFFu;
	int32_t exp;
	uint32_t man, res, shift, rest, half;

	if (abs >= 0x7F800000u) {
		if (abs == 0x7F800000u)
			return sign | 0x7C00u;
		return sign | 0x7E00u | ((abs & 0x7FFFFFu) >> 13);
	}
	if (abs >= 0x477FF000u) /* rounds to >= 65520: overflow */
		return sign | 0x7C00u;
	exp = (int32_t)(abs >> 23) - 127 + 15;
	man = abs & 0x7FFFFFu;
	if (exp >= 1) {
		res = ((uint32_t)exp << 10) | (man >> 13);
		rest = man & 0x1FFFu;
		if (rest > 0x1000u || (rest == 0x1000u && (res & 1)))
			res++;
		return sign | res;
	}
	if (exp < -10)
		return sign;
	man |= 0x800000u;
	shift = (uint32_t)(14 - exp);
	res = man >> shift;
	rest = man & ((1u << shift) - 1);
	half = 1u << (shift - 1);
	if (rest > half || (rest == half && (res & 1)))
		res++;
	return sign | res;
}

/** The NaN result of op(a, b) as the CPU gives it: a's, else b's, quieted;
 * neither NaN: the host's default NaN. */
static __device__ __noinline__ float rfs_cuda_nan2(float a, float b,
						   uint32_t dnan)
{
	uint32_t ua = rfs_cuda_f2u(a), ub = rfs_cuda_f2u(b);

	if (rfs_cuda_isnan_u(ua))
		return rfs_cuda_u2f(ua | 0x400000u);
	if (rfs_cuda_isnan_u(ub))
		return rfs_cuda_u2f(ub | 0x400000u);
	return rfs_cuda_u2f(dnan);
}

static __device__ __forceinline__ float rfs_cuda_add(float a, float b,
						     uint32_t dnan)
{
	float r = __fadd_rn(a, b);

	if (rfs_cuda_isnan_u(rfs_cuda_f2u(r)))
		r = rfs_cuda_nan2(a, b, dnan);
	return r;
}

static __device__ __forceinline__ float rfs_cuda_mul(float a, float b,
						     uint32_t dnan)
{
	float r = __fmul_rn(a, b);

	if (rfs_cuda_isnan_u(rfs_cuda_f2u(r)))
		r = rfs_cuda_nan2(a, b, dnan);
	return r;
}

/** widen(round_to_t(x)), as kern_scalar.c's sc_round. */
static __device__ __forceinline__ float rfs_cuda_round(int t, float x)
{
	if (t == RFS_KDT_BF16)
		return rfs_cuda_bf16_to_f32(rfs_cuda_f32_to_bf16(x));
	if (t == RFS_KDT_F16)
		return rfs_cuda_f16_to_f32(rfs_cuda_f32_to_f16(x));
	return x;
}

static __device__ __forceinline__ float rfs_cuda_widen(int t, uint32_t v)
{
	if (t == RFS_KDT_F32)
		return rfs_cuda_u2f(v);
	if (t == RFS_KDT_BF16)
		return rfs_cuda_bf16_to_f32(v);
	return rfs_cuda_f16_to_f32(v);
}

/** Widens the two 16-bit elements packed in @w (low one first). */
static __device__ __forceinline__ void rfs_cuda_widen2(int t, uint32_t w,
						       float *x)
{
	x[0] = rfs_cuda_widen(t, w & 0xFFFFu);
	x[1] = rfs_cuda_widen(t, w >> 16);
}

/** x[0..VEC) = elements e.. of term @t, +0.0 past its length. */
static __device__ __forceinline__ void
rfs_cuda_load(const struct rfs_cuda_kterm &t, unsigned long long e, float *x)
{
	int j;

	if (t.vec && e + RFS_CUDA_VEC <= t.have) {
		/* 16-byte loads: e is a multiple of 8, t.p 16-byte aligned */
		if (t.dtype == RFS_KDT_F32) {
			const uint4 *q = (const uint4 *)t.p + e / 4;
			uint4 v = q[0], w = q[1];

			x[0] = rfs_cuda_u2f(v.x);
			x[1] = rfs_cuda_u2f(v.y);
			x[2] = rfs_cuda_u2f(v.z);
			x[3] = rfs_cuda_u2f(v.w);
			x[4] = rfs_cuda_u2f(w.x);
			x[5] = rfs_cuda_u2f(w.y);
			x[6] = rfs_cuda_u2f(w.z);
			x[7] = rfs_cuda_u2f(w.w);
		} else {
			uint4 v = *((const uint4 *)t.p + e / 8);

			rfs_cuda_widen2(t.dtype, v.x, x);
			rfs_cuda_widen2(t.dtype, v.y, x + 2);
			rfs_cuda_widen2(t.dtype, v.z, x + 4);
			rfs_cuda_widen2(t.dtype, v.w, x + 6);
		}
		return;
	}
	for (j = 0; j < RFS_CUDA_VEC; j++) {
		unsigned long long i = e + j;

		if (i >= t.have)
			x[j] = 0.0f;
		else if (t.dtype == RFS_KDT_F32)
			x[j] = rfs_cuda_u2f(((const uint32_t *)t.p)[i]);
		else
			x[j] = rfs_cuda_widen(t.dtype,
					      ((const uint16_t *)t.p)[i]);
	}
}

static __device__ __forceinline__ uint32_t rfs_cuda_narrow(int t, float x)
{
	if (t == RFS_KDT_BF16)
		return rfs_cuda_f32_to_bf16(x);
	return rfs_cuda_f32_to_f16(x);
}

/** Two elements of dtype @t packed in one word (low one first). */
static __device__ __forceinline__ uint32_t rfs_cuda_narrow2(int t,
							   const float *x)
{
	return rfs_cuda_narrow(t, x[0]) | (rfs_cuda_narrow(t, x[1]) << 16);
}

/** Stores acc[0..VEC) at elements e.. of the output (dtype OUT). */
template <int OUT>
static __device__ __forceinline__ void
rfs_cuda_store(void *out, int vec, unsigned long long n, unsigned long long e,
	       const float *acc)
{
	int j;

	if (vec && e + RFS_CUDA_VEC <= n) {
		if (OUT == RFS_KDT_F32) {
			uint4 *q = (uint4 *)out + e / 4;
			uint4 v, w;

			v.x = rfs_cuda_f2u(acc[0]);
			v.y = rfs_cuda_f2u(acc[1]);
			v.z = rfs_cuda_f2u(acc[2]);
			v.w = rfs_cuda_f2u(acc[3]);
			w.x = rfs_cuda_f2u(acc[4]);
			w.y = rfs_cuda_f2u(acc[5]);
			w.z = rfs_cuda_f2u(acc[6]);
			w.w = rfs_cuda_f2u(acc[7]);
			q[0] = v;
			q[1] = w;
		} else {
			uint4 v;

			v.x = rfs_cuda_narrow2(OUT, acc);
			v.y = rfs_cuda_narrow2(OUT, acc + 2);
			v.z = rfs_cuda_narrow2(OUT, acc + 4);
			v.w = rfs_cuda_narrow2(OUT, acc + 6);
			*((uint4 *)out + e / 8) = v;
		}
		return;
	}
	for (j = 0; j < RFS_CUDA_VEC && e + j < n; j++) {
		if (OUT == RFS_KDT_F32)
			((uint32_t *)out)[e + j] = rfs_cuda_f2u(acc[j]);
		else
			((uint16_t *)out)[e + j] =
				(uint16_t)rfs_cuda_narrow(OUT, acc[j]);
	}
}

/**
 * One pass: acc = base or previous accumulator, then the terms in order,
 * exactly as rfs_kern_run() does per element.
 */
template <int OUT, int CAST>
static __global__ void __launch_bounds__(RFS_CUDA_BLOCK)
rfs_cuda_kernel(const __grid_constant__ struct rfs_cuda_kargs a)
{
	unsigned long long groups = (a.n + RFS_CUDA_VEC - 1) / RFS_CUDA_VEC;
	unsigned long long g = (unsigned long long)blockIdx.x * blockDim.x +
			       threadIdx.x;
	unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;

	for (; g < groups; g += stride) {
		unsigned long long e = g * RFS_CUDA_VEC;
		float acc[RFS_CUDA_VEC], x[RFS_CUDA_VEC];
		int k = 0, j;

		if (a.first) {
			rfs_cuda_load(a.t[0], e, acc);
			k = 1;
			if (CAST) /* the model is in the output dtype first */
#pragma unroll
				for (j = 0; j < RFS_CUDA_VEC; j++)
					acc[j] = rfs_cuda_round(OUT, acc[j]);
		} else {
			struct rfs_cuda_kterm prev;

			prev.p = a.acc_in;
			prev.have = a.n;
			prev.scale = 1.0f;
			prev.dtype = RFS_KDT_F32;
			prev.vec = 1;
			rfs_cuda_load(prev, e, acc);
		}
		for (; k < a.nt; k++) {
			const struct rfs_cuda_kterm &t = a.t[k];
			float s = t.scale;

			rfs_cuda_load(t, e, x);
#pragma unroll
			for (j = 0; j < RFS_CUDA_VEC; j++) {
				float v = x[j];

				if (CAST) {
					if (s != 1.0f) {
						v = rfs_cuda_mul(s, v, a.dnan);
						v = rfs_cuda_round(t.dtype, v);
					}
					v = rfs_cuda_round(OUT, v);
					acc[j] = rfs_cuda_round(OUT,
						rfs_cuda_add(acc[j], v, a.dnan));
				} else if (s == 1.0f) {
					acc[j] = rfs_cuda_add(acc[j], v, a.dnan);
				} else {
					v = rfs_cuda_mul(s, v, a.dnan);
					acc[j] = rfs_cuda_add(acc[j], v, a.dnan);
				}
			}
		}
		if (a.last)
			rfs_cuda_store<OUT>(a.out, a.out_vec, a.n, e, acc);
		else
			rfs_cuda_store<RFS_KDT_F32>(a.out, 1, a.n, e, acc);
	}
}

/* ------------------------------------------------------------------ */
/* Host side                                                          */

/** A piece of one job inside a chunk: elements [pos, pos + len). */
struct rfs_cuda_seg {
	const struct rfs_kern_job *job;
	size_t pos, len;
	size_t in_off;  /* its terms' data in the chunk's input, one after another */
	size_t out_off; /* its result in the chunk's output */
};

/** One stream with its staging buffers and the chunk it is working on. */
struct rfs_cuda_slot {
	cudaStream_t st;
	char *h_in, *h_out, *d_in, *d_out;
	char *d_acc; /* float32 accumulator, for jobs of many terms */
	size_t cap_hin, cap_hout, cap_din, cap_dout, cap_acc;
	struct rfs_cuda_seg *seg; /* pieces in flight; copied out on drain */
	size_t nseg, capseg;
	size_t in_bytes, out_bytes, acc_need;
};

/** A context: one caller at a time. */
struct rfs_cuda_ctx {
	pthread_mutex_t lock;
	int ready;
	struct rfs_cuda_slot s[RFS_CUDA_NSLOT];
};

static pthread_once_t rfs_cuda_once = PTHREAD_ONCE_INIT;
static int rfs_cuda_ok;       /* probe result */
static int rfs_cuda_broken;   /* set on the first CUDA error */
static int rfs_cuda_logged;
static int rfs_cuda_dev;
static uint32_t rfs_cuda_dnan = 0x7FC00000u;
static char rfs_cuda_name[256] = "none";
static unsigned rfs_cuda_rr;
static struct rfs_cuda_ctx rfs_cuda_pool[RFS_CUDA_NCTX];

/** Logs @e once, marks the GPU unusable; returns -1. */
static int rfs_cuda_fail(cudaError_t e, const char *what)
{
	if (!__atomic_exchange_n(&rfs_cuda_logged, 1, __ATOMIC_ACQ_REL))
		rfs_log(RFS_LOG_ERROR,
			"CUDA error in %s: %s (%s); using the CPU from now on",
			what, cudaGetErrorName(e), cudaGetErrorString(e));
	__atomic_store_n(&rfs_cuda_broken, 1, __ATOMIC_RELEASE);
	return -1;
}

#define RFS_CUDA_CK(call)                                              \
	do {                                                           \
		cudaError_t rfs_e_ = (call);                           \
		if (rfs_e_ != cudaSuccess) {                           \
			rfs_cuda_fail(rfs_e_, #call);                  \
			goto fail;                                     \
		}                                                      \
	} while (0)

static void rfs_cuda_probe(void)
{
	const char *env = getenv("RESIDFS_CUDA");
	const char *dev = getenv("RESIDFS_CUDA_DEVICE");
	struct cudaDeviceProp prop;
	struct cudaFuncAttributes fa;
	volatile float inf = INFINITY;
	float dn = inf - inf;
	int count = 0, i;

	memcpy(&rfs_cuda_dnan, &dn, 4);
	for (i = 0; i < RFS_CUDA_NCTX; i++)
		pthread_mutex_init(&rfs_cuda_pool[i].lock, NULL);
	if (env && (!strcmp(env, "0") || !strcmp(env, "off") ||
		    !strcmp(env, "no")))
		return;
	if (dev)
		rfs_cuda_dev = atoi(dev);
	/* Quiet: no driver or no GPU is the normal case on many machines. */
	if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0 ||
	    rfs_cuda_dev < 0 || rfs_cuda_dev >= count) {
		cudaGetLastError();
		return;
	}
	if (cudaGetDeviceProperties(&prop, rfs_cuda_dev) != cudaSuccess ||
	    cudaSetDevice(rfs_cuda_dev) != cudaSuccess ||
	    cudaFuncGetAttributes(&fa, rfs_cuda_kernel<RFS_KDT_BF16, 0>) !=
		    cudaSuccess) {
		/* e.g. no kernel image for this architecture */
		cudaGetLastError();
		return;
	}
	snprintf(rfs_cuda_name, sizeof(rfs_cuda_name), "%s", prop.name);
	rfs_cuda_ok = 1;
}

extern "C" int rfs_cuda_available(void)
{
	pthread_once(&rfs_cuda_once, rfs_cuda_probe);
	return rfs_cuda_ok && !__atomic_load_n(&rfs_cuda_broken, __ATOMIC_ACQUIRE);
}

extern "C" int rfs_cuda_built_version(void)
{
#ifdef CUDART_VERSION
	return CUDART_VERSION;
#else
	return 0; /* the CPU emulation of tests/cuda/emu */
#endif
}

extern "C" const char *rfs_cuda_device_name(void)
{
	pthread_once(&rfs_cuda_once, rfs_cuda_probe);
	return rfs_cuda_name;
}

static int rfs_cuda_job_ok(const struct rfs_kern_job *job)
{
	unsigned k;

	if (!job || job->nterms < 1 || !job->terms ||
	    (unsigned)job->out_dtype >= RFS_KDT_COUNT || (job->n && !job->out))
		return 0;
	for (k = 0; k < job->nterms; k++) {
		const struct rfs_kern_term *t = &job->terms[k];

		if ((unsigned)t->dtype >= RFS_KDT_COUNT || (t->n && !t->data))
			return 0;
	}
	return 1;
}

static int rfs_cuda_aligned(const void *p, size_t esz)
{
	return ((uintptr_t)p % 16) == 0 && (RFS_CUDA_VEC * esz) % 16 == 0;
}

/** Launches one pass with the kernel for @out_dtype and @cast. */
static cudaError_t rfs_cuda_launch(const struct rfs_cuda_kargs *a,
				   int out_dtype, int cast, cudaStream_t st)
{
	unsigned long long groups = (a->n + RFS_CUDA_VEC - 1) / RFS_CUDA_VEC;
	unsigned long long blocks = (groups + RFS_CUDA_BLOCK - 1) / RFS_CUDA_BLOCK;
	unsigned nb;

	/* one group of VEC elements per thread; the kernel loops beyond */
	if (blocks > 0x7FFFFFFFull)
		blocks = 0x7FFFFFFFull;
	if (blocks < 1)
		blocks = 1;
	nb = (unsigned)blocks;
	switch (out_dtype * 2 + !!cast) {
	case RFS_KDT_F32 * 2:
		rfs_cuda_kernel<RFS_KDT_F32, 0><<<nb, RFS_CUDA_BLOCK, 0, st>>>(*a);
		break;
	case RFS_KDT_F32 * 2 + 1:
		rfs_cuda_kernel<RFS_KDT_F32, 1><<<nb, RFS_CUDA_BLOCK, 0, st>>>(*a);
		break;
	case RFS_KDT_BF16 * 2:
		rfs_cuda_kernel<RFS_KDT_BF16, 0><<<nb, RFS_CUDA_BLOCK, 0, st>>>(*a);
		break;
	case RFS_KDT_BF16 * 2 + 1:
		rfs_cuda_kernel<RFS_KDT_BF16, 1><<<nb, RFS_CUDA_BLOCK, 0, st>>>(*a);
		break;
	case RFS_KDT_F16 * 2:
		rfs_cuda_kernel<RFS_KDT_F16, 0><<<nb, RFS_CUDA_BLOCK, 0, st>>>(*a);
		break;
	default:
		rfs_cuda_kernel<RFS_KDT_F16, 1><<<nb, RFS_CUDA_BLOCK, 0, st>>>(*a);
		break;
	}
	return cudaGetLastError();
}

/**
 * Runs all passes over one range of @n elements.  @ptrs[k] is term k's
 * device data for the range, @have[k] its element count there; @acc is a
 * float32 buffer of @n elements (needed when nterms > RFS_CUDA_MAXT).
 */
static cudaError_t rfs_cuda_passes(const struct rfs_kern_job *job,
				   const void *const *ptrs,
				   const unsigned long long *have, void *out,
				   float *acc, unsigned long long n,
				   cudaStream_t st)
{
	struct rfs_cuda_kargs a;
	unsigned k0, k;
	cudaError_t e;

	for (k0 = 0; k0 < job->nterms; k0 += RFS_CUDA_MAXT) {
		unsigned k1 = job->nterms - k0 > RFS_CUDA_MAXT ?
			      k0 + RFS_CUDA_MAXT : job->nterms;

		memset(&a, 0, sizeof(a));
		for (k = k0; k < k1; k++) {
			struct rfs_cuda_kterm *t = &a.t[k - k0];

			t->p = ptrs[k];
			t->have = have[k];
			t->scale = job->terms[k].scale;
			t->dtype = job->terms[k].dtype;
			t->vec = rfs_cuda_aligned(ptrs[k],
						  rfs_kdt_size(job->terms[k].dtype));
		}
		a.nt = (int)(k1 - k0);
		a.n = n;
		a.first = k0 == 0;
		a.last = k1 == job->nterms;
		a.acc_in = acc;
		a.out = a.last ? out : acc;
		a.out_vec = rfs_cuda_aligned(out, rfs_kdt_size(job->out_dtype));
		a.dnan = rfs_cuda_dnan;
		e = rfs_cuda_launch(&a, job->out_dtype, job->cast_first, st);
		if (e != cudaSuccess)
			return e;
	}
	return cudaSuccess;
}

static size_t rfs_cuda_round_up(size_t v, size_t a)
{
	return (v + a - 1) / a * a;
}

/** Grows pinned buffer *@p of capacity *@cap to at least @need bytes. */
static cudaError_t rfs_cuda_grow_host(char **p, size_t *cap, size_t need)
{
	cudaError_t e;

	if (*cap >= need)
		return cudaSuccess;
	need = rfs_cuda_round_up(need, 1u << 20);
	if (*p)
		cudaFreeHost(*p);
	*p = NULL;
	*cap = 0;
	e = cudaHostAlloc((void **)p, need, cudaHostAllocDefault);
	if (e == cudaSuccess)
		*cap = need;
	return e;
}

/** Grows device buffer *@p of capacity *@cap to at least @need bytes. */
static cudaError_t rfs_cuda_grow_dev(char **p, size_t *cap, size_t need)
{
	cudaError_t e;

	if (*cap >= need)
		return cudaSuccess;
	need = rfs_cuda_round_up(need, 1u << 20);
	if (*p)
		cudaFree(*p);
	*p = NULL;
	*cap = 0;
	e = cudaMalloc((void **)p, need);
	if (e == cudaSuccess)
		*cap = need;
	return e;
}

/** Takes a context: a free one if any, else waits for one (@wait) or
 * returns NULL. */
static struct rfs_cuda_ctx *rfs_cuda_get_ctx(int wait)
{
	unsigned start = __atomic_fetch_add(&rfs_cuda_rr, 1, __ATOMIC_RELAXED);
	unsigned i;

	for (i = 0; i < RFS_CUDA_NCTX; i++) {
		struct rfs_cuda_ctx *c =
			&rfs_cuda_pool[(start + i) % RFS_CUDA_NCTX];

		if (!pthread_mutex_trylock(&c->lock))
			return c;
	}
	if (!wait)
		return NULL;
	pthread_mutex_lock(&rfs_cuda_pool[start % RFS_CUDA_NCTX].lock);
	return &rfs_cuda_pool[start % RFS_CUDA_NCTX];
}

/** Elements per chunk of a job whose terms take @esum bytes per element,
 * when it has a chunk to itself. */
static size_t rfs_cuda_job_chunk(size_t esum)
{
	size_t ch = RFS_CUDA_IN_BUDGET / esum;

	if (ch > RFS_CUDA_CHUNK_MAX)
		ch = RFS_CUDA_CHUNK_MAX;
	if (ch < RFS_CUDA_CHUNK_MIN)
		ch = RFS_CUDA_CHUNK_MIN;
	return ch - ch % 4096;
}

/** Elements term @t has among [pos, pos + len) of its job. */
static size_t rfs_cuda_have(const struct rfs_kern_term *t, size_t pos, size_t len)
{
	size_t h = t->n > pos ? t->n - pos : 0;

	return h < len ? h : len;
}

/** Bytes term @t takes in a chunk for [pos, pos + len): padded to the alignment. */
static size_t rfs_cuda_staged(const struct rfs_kern_term *t, size_t pos, size_t len)
{
	return rfs_cuda_round_up(rfs_cuda_have(t, pos, len) * rfs_kdt_size(t->dtype),
				 RFS_CUDA_ALIGN);
}

/** Staged input bytes of elements [pos, pos + len) of @job. */
static size_t rfs_cuda_seg_in(const struct rfs_kern_job *job, size_t pos,
			      size_t len)
{
	size_t b = 0;
	unsigned k;

	for (k = 0; k < job->nterms; k++)
		b += rfs_cuda_staged(&job->terms[k], pos, len);
	return b;
}

/**
 * Fills slot @s with the next chunk of the batch from (*@j, *@pos) on:
 * pieces of one or more jobs, packed while the staged input stays within
 * RFS_CUDA_IN_BUDGET and the output within RFS_CUDA_OUT_BUDGET (a piece
 * alone may pass them by its alignment padding).  Records the pieces in
 * s->seg and the sizes the chunk needs; advances the cursor.
 */
static cudaError_t rfs_cuda_pack(struct rfs_cuda_slot *s,
				 const struct rfs_kern_job *jobs, size_t njobs,
				 size_t *j, size_t *pos)
{
	size_t in_used = 0, out_used = 0;

	s->nseg = 0;
	s->acc_need = 0;
	while (*j < njobs) {
		const struct rfs_kern_job *job = &jobs[*j];
		size_t osz = rfs_kdt_size(job->out_dtype), esum = 0, len, sin, sout;
		struct rfs_cuda_seg *g;
		unsigned k;

		if (*pos >= job->n) {
			(*j)++;
			*pos = 0;
			continue;
		}
		for (k = 0; k < job->nterms; k++)
			esum += rfs_kdt_size(job->terms[k].dtype);
		len = job->n - *pos;
		if (len > rfs_cuda_job_chunk(esum))
			len = rfs_cuda_job_chunk(esum);
		sin = rfs_cuda_seg_in(job, *pos, len);
		sout = rfs_cuda_round_up(len * osz, RFS_CUDA_ALIGN);
		if (s->nseg && (in_used + sin > RFS_CUDA_IN_BUDGET ||
				out_used + sout > RFS_CUDA_OUT_BUDGET)) {
			/* the part of this job that still fits, in whole pages */
			size_t room_in = RFS_CUDA_IN_BUDGET - in_used;
			size_t room_out = RFS_CUDA_OUT_BUDGET - out_used;
			size_t pad = (size_t)job->nterms * RFS_CUDA_ALIGN;

			if (in_used > RFS_CUDA_IN_BUDGET || out_used > RFS_CUDA_OUT_BUDGET ||
			    room_in <= pad || room_out <= RFS_CUDA_ALIGN)
				break;
			len = (room_in - pad) / esum;
			if (len > (room_out - RFS_CUDA_ALIGN) / osz)
				len = (room_out - RFS_CUDA_ALIGN) / osz;
			len -= len % 4096;
			if (!len)
				break;
			sin = rfs_cuda_seg_in(job, *pos, len);
			sout = rfs_cuda_round_up(len * osz, RFS_CUDA_ALIGN);
		}
		if (s->nseg == s->capseg) {
			size_t cap = s->capseg ? 2 * s->capseg : 16;
			void *p = realloc(s->seg, cap * sizeof(*s->seg));

			if (!p)
				return cudaErrorMemoryAllocation;
			s->seg = (struct rfs_cuda_seg *)p;
			s->capseg = cap;
		}
		g = &s->seg[s->nseg++];
		g->job = job;
		g->pos = *pos;
		g->len = len;
		g->in_off = in_used;
		g->out_off = out_used;
		in_used += sin;
		out_used += sout;
		if (job->nterms > RFS_CUDA_MAXT && len * 4 > s->acc_need)
			s->acc_need = len * 4;
		*pos += len;
	}
	s->in_bytes = in_used;
	s->out_bytes = out_used;
	return cudaSuccess;
}

/** Copies the finished chunk of slot @s out of its pinned buffer. */
static cudaError_t rfs_cuda_drain(struct rfs_cuda_slot *s)
{
	cudaError_t e;
	size_t i;

	if (!s->nseg)
		return cudaSuccess;
	e = cudaStreamSynchronize(s->st);
	if (e == cudaSuccess)
		for (i = 0; i < s->nseg; i++) {
			const struct rfs_cuda_seg *g = &s->seg[i];
			size_t osz = rfs_kdt_size(g->job->out_dtype);

			memcpy((char *)g->job->out + g->pos * osz, s->h_out + g->out_off,
			       g->len * osz);
		}
	s->nseg = 0;
	return e;
}

/** Stages, uploads, computes and starts the download of slot @s's chunk. */
static cudaError_t rfs_cuda_issue(struct rfs_cuda_slot *s, const void **ptrs,
				  unsigned long long *have)
{
	size_t i;
	cudaError_t e;

	if ((e = rfs_cuda_grow_host(&s->h_in, &s->cap_hin, s->in_bytes)) ||
	    (e = rfs_cuda_grow_host(&s->h_out, &s->cap_hout, s->out_bytes)) ||
	    (e = rfs_cuda_grow_dev(&s->d_in, &s->cap_din, s->in_bytes)) ||
	    (e = rfs_cuda_grow_dev(&s->d_out, &s->cap_dout, s->out_bytes)) ||
	    (e = rfs_cuda_grow_dev(&s->d_acc, &s->cap_acc, s->acc_need)))
		return e;
	for (i = 0; i < s->nseg; i++) {
		const struct rfs_cuda_seg *g = &s->seg[i];
		size_t off = g->in_off;
		unsigned k;

		for (k = 0; k < g->job->nterms; k++) {
			const struct rfs_kern_term *t = &g->job->terms[k];
			size_t tsz = rfs_kdt_size(t->dtype);
			size_t h = rfs_cuda_have(t, g->pos, g->len);

			if (h)
				memcpy(s->h_in + off, (const char *)t->data + g->pos * tsz, h * tsz);
			off += rfs_cuda_staged(t, g->pos, g->len);
		}
	}
	e = cudaMemcpyAsync(s->d_in, s->h_in, s->in_bytes, cudaMemcpyHostToDevice, s->st);
	for (i = 0; e == cudaSuccess && i < s->nseg; i++) {
		const struct rfs_cuda_seg *g = &s->seg[i];
		size_t off = g->in_off;
		unsigned k;

		for (k = 0; k < g->job->nterms; k++) {
			const struct rfs_kern_term *t = &g->job->terms[k];

			ptrs[k] = s->d_in + off;
			have[k] = rfs_cuda_have(t, g->pos, g->len);
			off += rfs_cuda_staged(t, g->pos, g->len);
		}
		e = rfs_cuda_passes(g->job, ptrs, have, s->d_out + g->out_off,
				    (float *)s->d_acc, g->len, s->st);
	}
	if (e == cudaSuccess)
		e = cudaMemcpyAsync(s->h_out, s->d_out, s->out_bytes, cudaMemcpyDeviceToHost,
				    s->st);
	return e;
}

/* rfs_cuda_run_batch and rfs_cuda_try_batch: 1 when !@wait and every
 * context is busy. */
static int rfs_cuda_batch(const struct rfs_kern_job *jobs, size_t njobs, int wait)
{
	const void **ptrs = NULL;
	unsigned long long *have = NULL;
	struct rfs_cuda_ctx *c;
	size_t i, j = 0, pos = 0, total = 0, nchunk = 0;
	unsigned maxt = 1;
	int ret = -1;

	if (!rfs_cuda_available() || (njobs && !jobs))
		return -1;
	for (i = 0; i < njobs; i++) {
		if (!rfs_cuda_job_ok(&jobs[i]))
			return -1;
		total += jobs[i].n;
		if (jobs[i].nterms > maxt)
			maxt = jobs[i].nterms;
	}
	if (!total)
		return 0;
	ptrs = (const void **)malloc(maxt * sizeof(*ptrs));
	have = (unsigned long long *)malloc(maxt * sizeof(*have));
	if (!ptrs || !have)
		goto out_free;

	c = rfs_cuda_get_ctx(wait);
	if (!c) {
		ret = 1;
		goto out_free;
	}
	RFS_CUDA_CK(cudaSetDevice(rfs_cuda_dev));
	if (!c->ready) {
		for (i = 0; i < RFS_CUDA_NSLOT; i++)
			RFS_CUDA_CK(cudaStreamCreateWithFlags(&c->s[i].st,
							     cudaStreamNonBlocking));
		c->ready = 1;
	}
	/* chunk i on slot i % NSLOT: staging chunk i+1 overlaps the transfers
	 * and kernels of chunk i and the copy-out of chunk i-2 */
	while (j < njobs) {
		struct rfs_cuda_slot *s = &c->s[nchunk++ % RFS_CUDA_NSLOT];

		RFS_CUDA_CK(rfs_cuda_drain(s));
		RFS_CUDA_CK(rfs_cuda_pack(s, jobs, njobs, &j, &pos));
		if (!s->nseg)
			break; /* only empty jobs were left */
		RFS_CUDA_CK(rfs_cuda_issue(s, ptrs, have));
	}
	for (i = 0; i < RFS_CUDA_NSLOT; i++) /* oldest first */
		RFS_CUDA_CK(rfs_cuda_drain(&c->s[(nchunk + i) % RFS_CUDA_NSLOT]));
	ret = 0;
fail:
	if (ret) /* leave nothing pending for the next caller */
		for (i = 0; i < RFS_CUDA_NSLOT; i++)
			c->s[i].nseg = 0;
	pthread_mutex_unlock(&c->lock);
out_free:
	free(ptrs);
	free(have);
	return ret;
}

extern "C" int rfs_cuda_run_batch(const struct rfs_kern_job *jobs, size_t njobs)
{
	return rfs_cuda_batch(jobs, njobs, 1);
}

extern "C" int rfs_cuda_try_batch(const struct rfs_kern_job *jobs, size_t njobs)
{
	return rfs_cuda_batch(jobs, njobs, 0);
}

extern "C" int rfs_cuda_run(const struct rfs_kern_job *job)
{
	if (!job)
		return -1;
	return rfs_cuda_run_batch(job, 1);
}

extern "C" int rfs_cuda_run_device(const struct rfs_kern_job *job)
{
	const void **ptrs = NULL;
	unsigned long long *have = NULL;
	float *acc = NULL;
	cudaStream_t st = NULL;
	unsigned k;
	int ret = -1;

	if (!rfs_cuda_available() || !rfs_cuda_job_ok(job))
		return -1;
	if (!job->n)
		return 0;
	ptrs = (const void **)malloc(job->nterms * sizeof(*ptrs));
	have = (unsigned long long *)malloc(job->nterms * sizeof(*have));
	if (!ptrs || !have)
		goto out_free;
	for (k = 0; k < job->nterms; k++) {
		ptrs[k] = job->terms[k].data;
		have[k] = job->terms[k].n < job->n ? job->terms[k].n : job->n;
	}
	RFS_CUDA_CK(cudaSetDevice(rfs_cuda_dev));
	RFS_CUDA_CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
	if (job->nterms > RFS_CUDA_MAXT)
		RFS_CUDA_CK(cudaMalloc((void **)&acc, job->n * sizeof(float)));
	RFS_CUDA_CK(rfs_cuda_passes(job, ptrs, have, job->out, acc, job->n, st));
	RFS_CUDA_CK(cudaStreamSynchronize(st));
	ret = 0;
fail:
	if (acc)
		cudaFree(acc);
	if (st)
		cudaStreamDestroy(st);
out_free:
	free(ptrs);
	free(have);
	return ret;
}

extern "C" void *rfs_cuda_dev_alloc(size_t bytes)
{
	void *p = NULL;
	cudaError_t e;

	if (!rfs_cuda_available())
		return NULL;
	e = cudaSetDevice(rfs_cuda_dev);
	if (e == cudaSuccess)
		e = cudaMalloc(&p, bytes ? bytes : 1);
	if (e == cudaErrorMemoryAllocation) {
		cudaGetLastError(); /* not sticky: the GPU stays usable */
		return NULL;
	}
	if (e != cudaSuccess) {
		rfs_cuda_fail(e, "cudaMalloc");
		return NULL;
	}
	return p;
}

extern "C" void rfs_cuda_dev_free(void *dptr)
{
	if (dptr && rfs_cuda_ok)
		cudaFree(dptr);
}

extern "C" int rfs_cuda_upload(void *dst, const void *src, size_t bytes)
{
	cudaError_t e;

	if (!rfs_cuda_available())
		return -1;
	e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
	return e == cudaSuccess ? 0 : rfs_cuda_fail(e, "cudaMemcpy (upload)");
}

extern "C" int rfs_cuda_download(void *dst, const void *src, size_t bytes)
{
	cudaError_t e;

	if (!rfs_cuda_available())
		return -1;
	e = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
	return e == cudaSuccess ? 0 : rfs_cuda_fail(e, "cudaMemcpy (download)");
}
