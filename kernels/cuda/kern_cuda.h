/*
 * kern_cuda.h - CUDA backend of the residfs kernels (docs/arithmetic.md, docs/cuda.md).
 *
 * Plain C interface.  rfs_cuda_run() computes exactly what
 * rfs_kern_run(&rfs_kern_scalar, job) computes, bit for bit, on the GPU:
 * the same widening, the same float32 evaluation order without fused
 * multiply-add, the same rounding to the output dtype and the same
 * cast-first sequence, NaN payloads included: a NaN operand propagates
 * quieted, NaN + NaN keeps the accumulator's (the kern.h contract), an
 * invalid operation (Inf - Inf, 0 * Inf) gives the host CPU's default NaN.
 *
 * The CUDA runtime is linked statically: programs using this start on
 * machines without a GPU or driver, where rfs_cuda_available() is 0 and
 * every run function returns -1 at once.
 *
 * The CUDA runtime is not fork-safe: call none of these functions before
 * a fork (e.g. fuse_daemonize()) in a process that uses them after it.
 *
 * State is per process, as the device and its runtime context are: the
 * probe's result, the flag that marks the GPU unusable after an error, and
 * the pool of contexts with their pinned buffers, set up on first use.
 * Every struct rfs_backend of the process shares them (kernels/backend.h).
 *
 * Environment: RESIDFS_CUDA=0 makes the backend report no device;
 * RESIDFS_CUDA_DEVICE=N picks device N (default 0).
 */
#ifndef RFS_KERN_CUDA_H
#define RFS_KERN_CUDA_H

#include <stddef.h>

#include "kern.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Whether a CUDA device answers.
 *
 * Probed once (thread-safe) with cudaGetDeviceCount() and friends; never
 * aborts.  Returns 0 without a driver or GPU, or when RESIDFS_CUDA=0, and
 * 0 once a CUDA error has marked the GPU unusable.
 *
 * @return 1 if the backend can be used, else 0.
 */
int rfs_cuda_available(void);

/**
 * Name of the device in use, e.g. "NVIDIA H100 80GB HBM3".
 *
 * @return a static string; "none" when no device answers.
 */
const char *rfs_cuda_device_name(void);

/** CUDART_VERSION of the toolkit this was built with (e.g. 13000). */
int rfs_cuda_built_version(void);

/**
 * Runs @job on the GPU; host pointers in, host pointers out.
 *
 * Same contract and result as rfs_kern_run(&rfs_kern_scalar, job).  The
 * data are staged through pinned buffers in chunks of a few MiB on
 * several streams, so upload, compute and download overlap.  Safe to call
 * from several threads at once (a small pool of contexts).
 *
 * On any CUDA error it logs once (core/log.h), marks the GPU unusable and
 * returns -1; later calls then return -1 at once and the caller computes
 * on the CPU.  @job->out may then hold partial results.
 *
 * @param job the combination; @job->out and every term's data are host
 *            memory.
 * @return 0 on success; -1 on a CUDA error, without a device, or for an
 *         invalid job (nterms 0, unknown dtype, NULL pointers).
 */
int rfs_cuda_run(const struct rfs_kern_job *job);

/**
 * Runs several jobs as one batch: what rfs_cuda_run() does for each, with
 * the pieces of small jobs packed together into the same chunks (one
 * upload, one kernel launch per piece, one download per chunk), so that a
 * read covering many small tensors pays the transfer latencies once.
 *
 * Same contract, result and errors as rfs_cuda_run() for every job; the
 * jobs' outputs must not overlap each other or any input.
 *
 * @param jobs  @njobs jobs with host pointers.
 * @param njobs number of jobs; 0 is a successful no-op.
 * @return 0 on success; -1 on a CUDA error, without a device, or when any
 *         job is invalid (then nothing is computed).
 */
int rfs_cuda_run_batch(const struct rfs_kern_job *jobs, size_t njobs);

/**
 * rfs_cuda_run_batch() without waiting: when every context of the pool is
 * taken by other threads, returns 1 at once and computes nothing, so the
 * caller can use the CPU instead of queueing behind the GPU.
 *
 * @return 0 on success, 1 when all contexts are busy, -1 as
 *         rfs_cuda_run_batch().
 */
int rfs_cuda_try_batch(const struct rfs_kern_job *jobs, size_t njobs);

/**
 * Runs @job with data already on the device (for benchmarks and for
 * callers that keep tensors on the GPU).
 *
 * @job->out and every term's data are device pointers (from
 * rfs_cuda_dev_alloc()).  Waits for the kernels to finish.  Jobs of more
 * than a handful of terms take a temporary float32 buffer of @job->n
 * elements on the device.  Errors as for rfs_cuda_run().
 *
 * @param job the combination, with device pointers.
 * @return 0 on success, -1 on error.
 */
int rfs_cuda_run_device(const struct rfs_kern_job *job);

/**
 * Allocates @bytes of device memory.
 *
 * @return the device pointer, or NULL on error or without a device.
 */
void *rfs_cuda_dev_alloc(size_t bytes);

/**
 * Frees memory from rfs_cuda_dev_alloc(); NULL is ignored.
 */
void rfs_cuda_dev_free(void *dptr);

/**
 * Copies @bytes from host @src to device @dst (synchronous).
 *
 * @return 0 on success, -1 on error.
 */
int rfs_cuda_upload(void *dst, const void *src, size_t bytes);

/**
 * Copies @bytes from device @src to host @dst (synchronous).
 *
 * @return 0 on success, -1 on error.
 */
int rfs_cuda_download(void *dst, const void *src, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif
