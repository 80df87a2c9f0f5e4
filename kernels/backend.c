#include "backend.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef RFS_HAVE_CUDA
#include "kern_cuda.h"
#endif

static enum rfs_backend sel = RFS_BACKEND_AUTO;

#ifdef RFS_HAVE_CUDA
enum { GPU_UNTRIED, GPU_MEASURING, GPU_USE, GPU_NO };

static int gpu_state = GPU_UNTRIED; /* auto mode's verdict, atomic */
static char verdict[160] = "not measured yet";
#endif

int rfs_backend_parse(const char *s)
{
	if (!strcmp(s, "auto"))
		return RFS_BACKEND_AUTO;
	if (!strcmp(s, "cpu"))
		return RFS_BACKEND_CPU;
	if (!strcmp(s, "cuda"))
		return RFS_BACKEND_CUDA;
	return -1;
}

int rfs_backend_select(enum rfs_backend b, char *why, size_t len)
{
	if (b == RFS_BACKEND_CUDA) {
#ifdef RFS_HAVE_CUDA
		if (!rfs_cuda_available()) {
			snprintf(why, len, "--backend cuda: no CUDA device answers");
			return -1;
		}
#else
		snprintf(why, len, "--backend cuda: this residfs was built without CUDA");
		return -1;
#endif
	}
	sel = b;
	return 0;
}

#ifdef RFS_HAVE_CUDA
static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* auto: the first big job runs on both; the GPU wins only if it is faster
 * and returns the same bytes. */
static void measure(const struct rfs_kern_ops *cpu, const struct rfs_kern_job *job)
{
	size_t bytes = job->n * rfs_kdt_size(job->out_dtype);
	struct rfs_kern_job g = *job;
	double t0, tc, tg;
	void *out = malloc(bytes);
	int ok;

	t0 = now();
	rfs_kern_run(cpu, job);
	tc = now() - t0;
	if (!out) {
		__atomic_store_n(&gpu_state, GPU_UNTRIED, __ATOMIC_RELEASE);
		return;
	}
	g.out = out;
	rfs_cuda_run(&g); /* warm-up: context, buffers */
	t0 = now();
	ok = rfs_cuda_run(&g) == 0;
	tg = now() - t0;
	if (ok && memcmp(out, job->out, bytes)) {
		ok = 0;
		snprintf(verdict, sizeof(verdict), "cpu: the GPU returned different bytes; not used");
		fprintf(stderr, "residfs: warning: the CUDA backend disagrees with the CPU; using the CPU\n");
	} else if (!ok) {
		snprintf(verdict, sizeof(verdict), "cpu: the GPU failed; not used");
	} else {
		ok = tg < tc;
		snprintf(verdict, sizeof(verdict), "%s: %zu elements took %.2f ms on the GPU, %.2f ms on the CPU",
			 ok ? "cuda" : "cpu", job->n, tg * 1e3, tc * 1e3);
	}
	free(out);
	__atomic_store_n(&gpu_state, ok ? GPU_USE : GPU_NO, __ATOMIC_RELEASE);
}
#endif

void rfs_backend_run(const struct rfs_kern_ops *cpu, const struct rfs_kern_job *job)
{
	if (!cpu)
		cpu = rfs_kern_best();
#ifdef RFS_HAVE_CUDA
	if (sel != RFS_BACKEND_CPU && job->n >= RFS_BACKEND_GPU_MIN) {
		int st;

		if (sel == RFS_BACKEND_CUDA) {
			if (rfs_cuda_run(job) == 0)
				return;
			rfs_kern_run(cpu, job); /* the GPU failed: finish here */
			return;
		}
		st = __atomic_load_n(&gpu_state, __ATOMIC_ACQUIRE);
		if (st == GPU_UNTRIED) {
			int expect = GPU_UNTRIED;

			if (!rfs_cuda_available()) {
				snprintf(verdict, sizeof(verdict), "cpu: no CUDA device answers");
				__atomic_store_n(&gpu_state, GPU_NO, __ATOMIC_RELEASE);
			} else if (__atomic_compare_exchange_n(&gpu_state, &expect, GPU_MEASURING, 0,
							       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
				measure(cpu, job);
				return;
			}
			st = __atomic_load_n(&gpu_state, __ATOMIC_ACQUIRE);
		}
		if (st == GPU_USE && rfs_cuda_run(job) == 0)
			return;
	}
#endif
	rfs_kern_run(cpu, job);
}

void rfs_backend_describe(char *buf, size_t len)
{
	const char *cpu = rfs_kern_best()->name;

	switch (sel) {
	case RFS_BACKEND_CPU:
		snprintf(buf, len, "cpu (%s)", cpu);
		break;
	case RFS_BACKEND_CUDA:
#ifdef RFS_HAVE_CUDA
		snprintf(buf, len, "cuda (%s) for jobs of %u elements or more, cpu (%s) below",
			 rfs_cuda_device_name(), RFS_BACKEND_GPU_MIN, cpu);
#endif
		break;
	default:
#ifdef RFS_HAVE_CUDA
		snprintf(buf, len, "auto: cpu (%s); %s", cpu, verdict);
#else
		snprintf(buf, len, "auto: cpu (%s); built without CUDA", cpu);
#endif
	}
}
