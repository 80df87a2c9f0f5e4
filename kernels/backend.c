#include "backend.h"

#include <pthread.h>
#include <stdarg.h>
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
static char verdict[160] = "not measured yet"; /* under verdict_lock */
static pthread_mutex_t verdict_lock = PTHREAD_MUTEX_INITIALIZER;

static void set_verdict(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_verdict(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&verdict_lock);
	va_start(ap, fmt);
	vsnprintf(verdict, sizeof(verdict), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&verdict_lock);
}
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

static void cpu_batch(const struct rfs_kern_ops *cpu, const struct rfs_kern_job *jobs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		rfs_kern_run(cpu, &jobs[i]);
}

#ifdef RFS_HAVE_CUDA
static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* auto: the first big batch runs on both; the GPU wins only if it is
 * faster and returns the same bytes. */
static void measure(const struct rfs_kern_ops *cpu, const struct rfs_kern_job *jobs, size_t n,
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
	cpu_batch(cpu, jobs, n);
	tc = now() - t0;
	if (!out || !g) {
		free(out);
		free(g);
		__atomic_store_n(&gpu_state, GPU_UNTRIED, __ATOMIC_RELEASE);
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
		set_verdict("cpu: the GPU returned different bytes; not used");
		fprintf(stderr, "residfs: warning: the CUDA backend disagrees with the CPU; using the CPU\n");
	} else if (!ok) {
		set_verdict("cpu: the GPU failed; not used");
	} else {
		ok = tg < tc;
		set_verdict("%s: %zu elements took %.2f ms on the GPU, %.2f ms on the CPU",
			 ok ? "cuda" : "cpu", total, tg * 1e3, tc * 1e3);
	}
	free(out);
	free(g);
	__atomic_store_n(&gpu_state, ok ? GPU_USE : GPU_NO, __ATOMIC_RELEASE);
}

/* Jobs of fewer elements than this stay on the CPU (RESIDFS_GPU_MIN_ELEMENTS
 * overrides RFS_BACKEND_GPU_MIN, for measurements). */
static size_t gpu_min(void)
{
	static size_t v;
	size_t m = __atomic_load_n(&v, __ATOMIC_RELAXED);

	if (!m) {
		const char *e = getenv("RESIDFS_GPU_MIN_ELEMENTS");
		char *end;
		unsigned long long x = e ? strtoull(e, &end, 10) : 0;

		/* digits only: strtoull would take "-1" as 2^64-1 */
		m = e && *e >= '0' && *e <= '9' && !*end && x ? (size_t)x : RFS_BACKEND_GPU_MIN;
		__atomic_store_n(&v, m, __ATOMIC_RELAXED);
	}
	return m;
}
#endif

void rfs_backend_run_batch(const struct rfs_kern_ops *cpu, const struct rfs_kern_job *jobs,
			   size_t n)
{
	if (!cpu)
		cpu = rfs_kern_best();
#ifdef RFS_HAVE_CUDA
	if (sel != RFS_BACKEND_CPU) {
		size_t total = 0, i;
		int st;

		for (i = 0; i < n; i++)
			total += jobs[i].n;
		if (total < gpu_min())
			goto on_cpu;
		if (sel == RFS_BACKEND_CUDA) {
			/* busy (all contexts taken) or failed: finish here */
			if (rfs_cuda_try_batch(jobs, n) == 0)
				return;
			goto on_cpu;
		}
		st = __atomic_load_n(&gpu_state, __ATOMIC_ACQUIRE);
		if (st == GPU_UNTRIED) {
			int expect = GPU_UNTRIED;

			if (!rfs_cuda_available()) {
				set_verdict("cpu: no CUDA device answers");
				__atomic_store_n(&gpu_state, GPU_NO, __ATOMIC_RELEASE);
			} else if (__atomic_compare_exchange_n(&gpu_state, &expect, GPU_MEASURING, 0,
							       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
				measure(cpu, jobs, n, total);
				return;
			}
			st = __atomic_load_n(&gpu_state, __ATOMIC_ACQUIRE);
		}
		if (st == GPU_USE && rfs_cuda_try_batch(jobs, n) == 0)
			return;
	}
on_cpu:
#endif
	cpu_batch(cpu, jobs, n);
}

void rfs_backend_run(const struct rfs_kern_ops *cpu, const struct rfs_kern_job *job)
{
	rfs_backend_run_batch(cpu, job, 1);
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
		snprintf(buf, len, "cuda (%s) for batches of %zu elements or more, cpu (%s) below",
			 rfs_cuda_device_name(), gpu_min(), cpu);
#endif
		break;
	default:
#ifdef RFS_HAVE_CUDA
		pthread_mutex_lock(&verdict_lock);
		snprintf(buf, len, "auto: cpu (%s); %s", cpu, verdict);
		pthread_mutex_unlock(&verdict_lock);
#else
		snprintf(buf, len, "auto: cpu (%s); built without CUDA", cpu);
#endif
	}
}
