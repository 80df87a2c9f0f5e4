/*
 * backend.h - where element-wise jobs run: the CPU backend chosen once
 * (rfs_kern_best) or a CUDA device.
 *
 * auto (the default) uses the GPU only when a device answers and only for
 * batches of at least RFS_BACKEND_GPU_MIN elements, and only after the
 * first such batch measured the GPU faster than the CPU on the same data
 * and returned the same bits.  Any CUDA error is logged once by the CUDA layer,
 * the GPU is marked unusable and the job is finished on the CPU: a read
 * never fails because of the GPU.  Nothing CUDA is touched before the
 * first job, so a process may fork (daemonize) first.
 */
#ifndef RFS_BACKEND_H
#define RFS_BACKEND_H

#include <stddef.h>

#include "kern.h"

enum rfs_backend { RFS_BACKEND_AUTO = 0, RFS_BACKEND_CPU = 1, RFS_BACKEND_CUDA = 2 };

#define RFS_BACKEND_GPU_MIN (1u << 20)

/** Parses "auto", "cpu", "cuda"; -1 otherwise. */
int rfs_backend_parse(const char *s);

/**
 * Selects the backend for this process.  RFS_BACKEND_CUDA fails (returns
 * -1 with a reason in @why) when the build has no CUDA or no device
 * answers; it then uses the GPU for every job of RFS_BACKEND_GPU_MIN
 * elements or more, without the auto mode's measurement.
 */
int rfs_backend_select(enum rfs_backend b, char *why, size_t len);

/** Runs @job on the selected backend (CPU: @cpu, or rfs_kern_best() when NULL). */
void rfs_backend_run(const struct rfs_kern_ops *cpu, const struct rfs_kern_job *job);

/**
 * Runs @n jobs (outputs disjoint) as one batch.  The GPU rules above apply
 * to the batch's total element count, so a read or an export block that
 * covers many small tensors is one GPU submission instead of many CPU
 * jobs; on the CPU the jobs run one after another.  A batch meant for the
 * GPU runs on the CPU when all of the GPU's contexts are taken by other
 * threads, so that threads beyond what the GPU serves at once do not queue
 * behind it.
 */
void rfs_backend_run_batch(const struct rfs_kern_ops *cpu, const struct rfs_kern_job *jobs,
			   size_t n);

/** One line: "cpu (avx512)", "cuda (NVIDIA H100 ...)", "auto: cpu (no CUDA device)". */
void rfs_backend_describe(char *buf, size_t len);

#endif
