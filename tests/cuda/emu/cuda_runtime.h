/*
 * cuda_runtime.h - a CPU stand-in for the parts of CUDA that
 * kernels/cuda/kern_cuda.cu uses, so that its kernels and its stream
 * pipeline can be tested on machines without a GPU (see run.sh).
 *
 * Kernels run as plain loops over blocks and threads.  Stream operations
 * are queued and run only at cudaStreamSynchronize(), which exposes a
 * missing synchronisation as wrong bytes.  __fadd_rn/__fmul_rn return the
 * GPU's canonical NaN (0x7FFFFFFF) for every NaN result, as the hardware
 * does, so the kernel's own NaN handling is exercised.
 * Not a CUDA emulator: only what kern_cuda.cu needs.
 */
#ifndef RFS_FAKE_CUDA_RUNTIME_H
#define RFS_FAKE_CUDA_RUNTIME_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(x)
#define __grid_constant__

struct fake_dim {
	unsigned x, y, z;
};

/* static: one set per translation unit (launches and kernels share one);
 * an extern thread_local trips UBSan's null check through its TLS wrapper */
static thread_local fake_dim blockIdx, threadIdx, blockDim, gridDim;

struct uint2 {
	unsigned x, y;
};

struct uint4 {
	unsigned x, y, z, w;
};

static inline float __uint_as_float(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

static inline uint32_t __float_as_uint(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

static inline int __clz(uint32_t x)
{
	return x ? __builtin_clz(x) : 32;
}

static inline float fake_canonical(float r)
{
	uint32_t u = __float_as_uint(r);

	return (u & 0x7FFFFFFFu) > 0x7F800000u ? __uint_as_float(0x7FFFFFFFu) : r;
}

static inline float __fadd_rn(float a, float b)
{
	volatile float r = a + b;

	return fake_canonical(r);
}

static inline float __fmul_rn(float a, float b)
{
	volatile float r = a * b;

	return fake_canonical(r);
}

typedef enum {
	cudaSuccess = 0,
	cudaErrorMemoryAllocation = 2,
	cudaErrorNoDevice = 100,
	cudaErrorFake = 999,
} cudaError_t;

struct fake_stream {
	std::vector<std::function<void()>> q;
};

typedef fake_stream *cudaStream_t;

enum cudaMemcpyKind {
	cudaMemcpyHostToDevice = 1,
	cudaMemcpyDeviceToHost = 2,
};

#define cudaStreamNonBlocking 1
#define cudaHostAllocDefault 0

struct cudaDeviceProp {
	char name[256];
	int multiProcessorCount;
};

struct cudaFuncAttributes {
	int dummy;
};

/* FAKE_NDEV=0: no device; FAKE_FAIL_AT=n: the n-th async copy fails */
extern int fake_ndev;
cudaError_t fake_err(void);

static inline cudaError_t cudaGetDeviceCount(int *n)
{
	*n = fake_ndev;
	return fake_ndev ? cudaSuccess : cudaErrorNoDevice;
}

static inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int)
{
	strcpy(p->name, "CPU stand-in (tests/cuda/emu)");
	p->multiProcessorCount = 2;
	return cudaSuccess;
}

static inline cudaError_t cudaSetDevice(int)
{
	return cudaSuccess;
}

template <class F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *, F)
{
	return cudaSuccess;
}

static inline cudaError_t cudaGetLastError(void)
{
	return cudaSuccess;
}

static inline const char *cudaGetErrorName(cudaError_t)
{
	return "cudaErrorFake";
}

static inline const char *cudaGetErrorString(cudaError_t)
{
	return "injected error";
}

static inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
	*s = new fake_stream;
	return cudaSuccess;
}

static inline cudaError_t cudaStreamDestroy(cudaStream_t s)
{
	delete s;
	return cudaSuccess;
}

static inline cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
	for (auto &f : s->q)
		f();
	s->q.clear();
	return cudaSuccess;
}

static inline cudaError_t cudaHostAlloc(void **p, size_t n, unsigned)
{
	*p = aligned_alloc(4096, (n + 4095) / 4096 * 4096);
	if (!*p)
		return cudaErrorMemoryAllocation;
	memset(*p, 0x5A, n); /* garbage, as fresh memory may hold */
	return cudaSuccess;
}

static inline cudaError_t cudaFreeHost(void *p)
{
	free(p);
	return cudaSuccess;
}

static inline cudaError_t cudaMalloc(void **p, size_t n)
{
	*p = aligned_alloc(256, (n + 255) / 256 * 256);
	if (!*p)
		return cudaErrorMemoryAllocation;
	memset(*p, 0x6B, n);
	return cudaSuccess;
}

static inline cudaError_t cudaFree(void *p)
{
	free(p);
	return cudaSuccess;
}

static inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n,
				     cudaMemcpyKind)
{
	memcpy(d, s, n);
	return cudaSuccess;
}

static inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n,
					  cudaMemcpyKind, cudaStream_t st)
{
	cudaError_t e = fake_err();

	if (e)
		return e;
	st->q.push_back([=]() { memcpy(d, s, n); });
	return cudaSuccess;
}

/* kernel<<<nb, bs, 0, st>>>(a) becomes fake_launch(kernel, nb, bs, st, a) */
template <class A>
void fake_launch(void (*k)(A), unsigned nb, unsigned bs, cudaStream_t st, A a)
{
	st->q.push_back([=]() {
		gridDim.x = nb;
		blockDim.x = bs;
		for (unsigned b = 0; b < nb; b++) {
			blockIdx.x = b;
			for (unsigned t = 0; t < bs; t++) {
				threadIdx.x = t;
				k(a);
			}
		}
	});
}

#endif
