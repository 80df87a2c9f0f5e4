/*
 * Backends (backend.h): the state of one backend lives in its struct, which
 * every read is handed (core/read.h); the CPU kernels (kern.c) and the CUDA
 * layer (kern_cuda.cu) are process-wide, for the reasons given in
 * backend.h.
 *
 * auto's verdict moves GPU_UNTRIED -> GPU_MEASURING (one thread, the first
 * big batch) -> GPU_USE or GPU_NO, or back to GPU_UNTRIED when measuring
 * could not allocate its buffers.  gpu_state is read and written with
 * atomics; the verdict's text is under verdict_lock, which is taken last
 * and never held while computing.
 */
#include "backend.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/log.h"

#ifdef RFS_HAVE_CUDA
#include "kern_cuda.h"
#endif

enum { GPU_UNTRIED, GPU_MEASURING, GPU_USE, GPU_NO };

struct rfs_backend {
	enum rfs_backend_mode mode;
	const struct rfs_kern_ops *cpu; /* rfs_kern_best(), the process's choice */
	size_t gpu_min;                 /* batches of fewer elements stay on the CPU */
	int gpu_state;                  /* auto's verdict (GPU_*), atomic */
	pthread_mutex_t verdict_lock;
	char verdict[160];              /* auto's verdict in words, under verdict_lock */
};

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

/* RESIDFS_GPU_MIN_ELEMENTS, for measurements and tests: digits only
 * (strtoull would take "-1" as 2^64-1), else RFS_BACKEND_GPU_MIN. */
static size_t gpu_min_from_env(void)
{
	const char *e = getenv("RESIDFS_GPU_MIN_ELEMENTS");
	char *end;
	unsigned long long x = e ? strtoull(e, &end, 10) : 0;

	return e && *e >= '0' && *e <= '9' && !*end && x ? (size_t)x : RFS_BACKEND_GPU_MIN;
}

struct rfs_backend *rfs_backend_new(enum rfs_backend_mode mode, struct rfs_err *err)
{
	struct rfs_backend *be;

	switch (mode) {
	case RFS_BACKEND_AUTO:
	case RFS_BACKEND_CPU:
		break;
	case RFS_BACKEND_CUDA:
#ifdef RFS_HAVE_CUDA
		if (!rfs_cuda_available()) {
			rfs_errf(err, RFS_E_IO, "--backend cuda: no CUDA device answers");
			return NULL;
		}
		break;
#else
		rfs_errf(err, RFS_E_IO, "--backend cuda: this residfs was built without CUDA");
		return NULL;
#endif
	default:
		rfs_errf(err, RFS_E_RANGE, "unknown backend %d", (int)mode);
		return NULL;
	}
	be = calloc(1, sizeof(*be));
	if (!be) {
		rfs_errf(err, RFS_E_NOMEM, "out of memory");
		return NULL;
	}
	be->mode = mode;
	be->cpu = rfs_kern_best();
	be->gpu_min = gpu_min_from_env();
	be->gpu_state = GPU_UNTRIED;
	pthread_mutex_init(&be->verdict_lock, NULL);
	snprintf(be->verdict, sizeof(be->verdict), "not measured yet");
	return be;
}

void rfs_backend_free(struct rfs_backend *be)
{
	if (!be)
		return;
	pthread_mutex_destroy(&be->verdict_lock);
	free(be);
}

static void cpu_batch(const struct rfs_kern_ops *cpu, const struct rfs_kern_job *jobs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		rfs_kern_run(cpu, &jobs[i]);
}

#ifdef RFS_HAVE_CUDA
static void set_verdict(struct rfs_backend *be, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_verdict(struct rfs_backend *be, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&be->verdict_lock);
	va_start(ap, fmt);
	vsnprintf(be->verdict, sizeof(be->verdict), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&be->verdict_lock);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* auto: the first big batch runs on both; the GPU wins only if it is
 * faster and returns the same bytes. */
static void measure(struct rfs_backend *be, const struct rfs_kern_job *jobs, size_t n,
		    size_t total)
{
	size_t bytes = 0, i, o;
	struct rfs_kern_job *g = malloc(n * sizeof(*g));
	double t0, tc, tg;
	char *out;
	int ok;

	for (i = 0; i < n; i++)
		bytes += jobs[i].n * rfs_kdt_size(jobs[i].out_dtype);
	out = malloc(bytes ? bytes : 1);
	t0 = now();
	cpu_batch(be->cpu, jobs, n);
	tc = now() - t0;
	if (!out || !g) {
		free(out);
		free(g);
		__atomic_store_n(&be->gpu_state, GPU_UNTRIED, __ATOMIC_RELEASE);
		return;
	}
	for (i = 0, o = 0; i < n; i++) {
		g[i] = jobs[i];
		g[i].out = out + o;
		o += jobs[i].n * rfs_kdt_size(jobs[i].out_dtype);
	}
	rfs_cuda_run_batch(g, n); /* warm-up: context, buffers */
	t0 = now();
	ok = rfs_cuda_run_batch(g, n) == 0;
	tg = now() - t0;
	for (i = 0, o = 0; ok && i < n; i++) {
		size_t b = jobs[i].n * rfs_kdt_size(jobs[i].out_dtype);

		if (memcmp(out + o, jobs[i].out, b))
			ok = -1;
		o += b;
	}
	if (ok < 0) {
		ok = 0;
		set_verdict(be, "cpu: the GPU returned different bytes; not used");
		rfs_log(RFS_LOG_WARN, "the CUDA backend disagrees with the CPU; using the CPU");
	} else if (!ok) {
		set_verdict(be, "cpu: the GPU failed; not used");
	} else {
		ok = tg < tc;
		set_verdict(be, "%s: %zu elements took %.2f ms on the GPU, %.2f ms on the CPU",
			    ok ? "cuda" : "cpu", total, tg * 1e3, tc * 1e3);
	}
	free(out);
	free(g);
	__atomic_store_n(&be->gpu_state, ok ? GPU_USE : GPU_NO, __ATOMIC_RELEASE);
}

/* The GPU's part of rfs_backend_run_batch: 1 when the batch was computed
 * (on the GPU, or on the CPU by auto's measurement), 0 when the caller
 * must compute it on the CPU. */
static int try_gpu(struct rfs_backend *be, const struct rfs_kern_job *jobs, size_t n)
{
	size_t total = 0, i;
	int st;

	if (be->mode == RFS_BACKEND_CPU)
		return 0;
	for (i = 0; i < n; i++)
		total += jobs[i].n;
	if (total < be->gpu_min)
		return 0;
	if (be->mode == RFS_BACKEND_CUDA) /* busy (all contexts taken) or failed: CPU */
		return rfs_cuda_try_batch(jobs, n) == 0;
	st = __atomic_load_n(&be->gpu_state, __ATOMIC_ACQUIRE);
	if (st == GPU_UNTRIED) {
		int expect = GPU_UNTRIED;

		if (!rfs_cuda_available()) {
			set_verdict(be, "cpu: no CUDA device answers");
			__atomic_store_n(&be->gpu_state, GPU_NO, __ATOMIC_RELEASE);
		} else if (__atomic_compare_exchange_n(&be->gpu_state, &expect, GPU_MEASURING, 0,
						       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			measure(be, jobs, n, total);
			return 1;
		}
		st = __atomic_load_n(&be->gpu_state, __ATOMIC_ACQUIRE);
	}
	return st == GPU_USE && rfs_cuda_try_batch(jobs, n) == 0;
}
#endif

void rfs_backend_run_batch(struct rfs_backend *be, const struct rfs_kern_job *jobs, size_t n)
{
#ifdef RFS_HAVE_CUDA
	if (try_gpu(be, jobs, n))
		return;
#endif
	cpu_batch(be->cpu, jobs, n);
}

void rfs_backend_run(struct rfs_backend *be, const struct rfs_kern_job *job)
{
	rfs_backend_run_batch(be, job, 1);
}

void rfs_backend_build_info(char *buf, size_t len)
{
#ifdef RFS_HAVE_CUDA
	int v = rfs_cuda_built_version();

	snprintf(buf, len, "CPU kernels %s (picked for this CPU); CUDA runtime %d.%d (built in)",
		 rfs_kern_best()->name, v / 1000, v % 1000 / 10);
#else
	snprintf(buf, len, "CPU kernels %s (picked for this CPU); CUDA: built without it",
		 rfs_kern_best()->name);
#endif
}

void rfs_backend_describe(struct rfs_backend *be, char *buf, size_t len)
{
	const char *cpu = be->cpu->name;

	switch (be->mode) {
	case RFS_BACKEND_CPU:
		snprintf(buf, len, "cpu (%s)", cpu);
		break;
	case RFS_BACKEND_CUDA:
#ifdef RFS_HAVE_CUDA
		snprintf(buf, len, "cuda (%s) for batches of %zu elements or more, cpu (%s) below",
			 rfs_cuda_device_name(), be->gpu_min, cpu);
#else
		snprintf(buf, len, "cpu (%s)", cpu); /* not made: rfs_backend_new refuses it */
#endif
		break;
	default:
#ifdef RFS_HAVE_CUDA
		pthread_mutex_lock(&be->verdict_lock);
		snprintf(buf, len, "auto: cpu (%s); %s", cpu, be->verdict);
		pthread_mutex_unlock(&be->verdict_lock);
#else
		snprintf(buf, len, "auto: cpu (%s); built without CUDA", cpu);
#endif
	}
}
