/*
 * backend.h - where element-wise jobs run: the CPU kernels chosen once per
 * process (rfs_kern_best) or a CUDA device.
 *
 * A struct rfs_backend holds every decision about where jobs run: its mode
 * (auto, cpu, cuda), the GPU threshold, and auto's verdict.  The caller
 * makes one (a mount's daemon, an export) and hands it to every read
 * (core/read.h, struct rfs_reader); nothing here is process-global but the
 * CPU feature detection of kern.c and the CUDA layer (below).
 *
 * auto (the default) uses the GPU only when a device answers and only for
 * batches of at least the threshold (RFS_BACKEND_GPU_MIN elements), and
 * only after the first such batch measured the GPU faster than the CPU on
 * the same data and returned the same bits.  Any CUDA error is logged once
 * by the CUDA layer, the GPU is marked unusable and the job is finished on
 * the CPU: a read never fails because of the GPU.  Nothing CUDA is touched
 * before the first job (auto) or before rfs_backend_new (cuda), so a
 * process may fork (daemonize) first and make its backend after.
 *
 * The CUDA layer (kernels/cuda/kern_cuda.h) stays process-wide on purpose:
 * the device, its runtime context and its sticky errors belong to the
 * process (an error that marks the GPU unusable does so for every backend
 * of the process), and its pool of contexts with their pinned staging
 * buffers is page-locked memory that every backend of the process shares
 * rather than multiplies.  It is set up on first use, never before.
 *
 * Thread safety: a backend is used by many threads at once (run, describe);
 * only rfs_backend_new and rfs_backend_free are not concurrent with them.
 */
#ifndef RFS_BACKEND_H
#define RFS_BACKEND_H

#include <stddef.h>

#include "../core/err.h"
#include "../core/tunables.h"
#include "kern.h"

enum rfs_backend_mode { RFS_BACKEND_AUTO = 0, RFS_BACKEND_CPU = 1, RFS_BACKEND_CUDA = 2 };

/** Default GPU threshold, in elements per batch (RESIDFS_GPU_MIN_ELEMENTS overrides it). */
#define RFS_BACKEND_GPU_MIN RFS_TUNE_GPU_MIN_ELEMENTS

struct rfs_backend;

/** Parses "auto", "cpu", "cuda" into an enum rfs_backend_mode; -1 otherwise. */
int rfs_backend_parse(const char *s);

/**
 * A new backend of @mode.
 *
 * Reads RESIDFS_GPU_MIN_ELEMENTS (a whole number, digits only; anything
 * else keeps RFS_BACKEND_GPU_MIN) here, once.  RFS_BACKEND_CUDA probes the
 * device now (the CUDA runtime starts: make the backend after any fork)
 * and fails when the build has no CUDA or no device answers; it then uses
 * the GPU for every batch at or above the threshold, without auto's
 * measurement.  RFS_BACKEND_AUTO and RFS_BACKEND_CPU touch nothing CUDA.
 *
 * @return the backend (the caller frees it with rfs_backend_free), or NULL
 *         with @err filled: RFS_E_IO when --backend cuda cannot be had
 *         here, RFS_E_RANGE for an unknown @mode, RFS_E_NOMEM.
 */
struct rfs_backend *rfs_backend_new(enum rfs_backend_mode mode, struct rfs_err *err);

/**
 * Frees @be; accepts NULL.  No job may be running on it, and no cache
 * that still computes with it may be alive (core/read.h).
 */
void rfs_backend_free(struct rfs_backend *be);

/** Runs @job on @be (see rfs_backend_run_batch). */
void rfs_backend_run(struct rfs_backend *be, const struct rfs_kern_job *job);

/**
 * Runs @n jobs (outputs disjoint) as one batch on @be.  The GPU rules above
 * apply to the batch's total element count, so a read or an export block
 * that covers many small tensors is one GPU submission instead of many CPU
 * jobs; on the CPU the jobs run one after another.  A batch meant for the
 * GPU runs on the CPU when all of the GPU's contexts are taken by other
 * threads, so that threads beyond what the GPU serves at once do not queue
 * behind it.  Never fails: whatever the GPU does, the outputs hold the CPU
 * kernels' bytes.
 */
void rfs_backend_run_batch(struct rfs_backend *be, const struct rfs_kern_job *jobs, size_t n);

/**
 * One line about @be into @buf (@len bytes, truncated, NUL-terminated):
 * "cpu (avx512)", "cuda (NVIDIA H100 ...) for batches of ...",
 * "auto: cpu (avx512); cpu: no CUDA device answers".
 */
void rfs_backend_describe(struct rfs_backend *be, char *buf, size_t len);

/**
 * What this build computes with, for --version: the CPU kernels picked
 * for this CPU and the CUDA runtime it was built with (or that it was
 * built without CUDA).  Touches nothing CUDA at run time.
 */
void rfs_backend_build_info(char *buf, size_t len);

#endif
