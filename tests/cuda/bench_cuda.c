/*
 * bench_cuda.c - output throughput of the kernels: scalar, best CPU SIMD,
 * CUDA with the data already on the device, CUDA end to end (host memory
 * in and out, transfers included).  Single CPU thread for the CPU rows.
 *
 * usage: bench_cuda [MiB of output per case, default 1024] [repeats, 3]
 * (the scalar row is timed once: it is slow and only the reference).
 * Exits 77 without a CUDA device (the CPU rows are printed anyway).
 */
#include "kern.h"
#include "kern_cuda.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct bcase {
	const char *name;
	enum rfs_kdt out;
	enum rfs_kdt d0, d1;
	float scale;
	int cast;
};

static const struct bcase cases[] = {
	{ "bf16 = bf16 + bf16", RFS_KDT_BF16, RFS_KDT_BF16, RFS_KDT_BF16, 1.0f, 0 },
	{ "bf16 = bf16 + f32 delta", RFS_KDT_BF16, RFS_KDT_BF16, RFS_KDT_F32, 1.0f, 0 },
	{ "bf16 = bf16 + 0.5*bf16 cast-first", RFS_KDT_BF16, RFS_KDT_BF16, RFS_KDT_BF16, 0.5f, 1 },
	{ "f32 = bf16 + f32 delta", RFS_KDT_F32, RFS_KDT_BF16, RFS_KDT_F32, 1.0f, 0 },
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fill(enum rfs_kdt t, void *dst, size_t n, uint64_t seed)
{
	uint64_t s = seed;
	size_t i;

	for (i = 0; i < n; i++) {
		uint32_t u;
		float f;

		s ^= s >> 12;
		s ^= s << 25;
		s ^= s >> 27;
		/* finite values of moderate size, random signs */
		u = (uint32_t)((s * 0x2545F4914F6CDD1DULL) >> 32);
		u = (u & 0x807FFFFFu) | ((120u + (u >> 23) % 12) << 23);
		memcpy(&f, &u, 4);
		if (t == RFS_KDT_F32)
			((float *)dst)[i] = f;
		else if (t == RFS_KDT_BF16)
			((uint16_t *)dst)[i] = rfs_f32_to_bf16(f);
		else
			((uint16_t *)dst)[i] = rfs_f32_to_f16(f);
	}
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (!p) {
		fprintf(stderr, "bench_cuda: out of memory (%zu bytes)\n", n);
		exit(1);
	}
	memset(p, 0, n); /* fault the pages in before timing */
	return p;
}

/** Best time of @reps runs of the CPU backend @ops. */
static double time_cpu(const struct rfs_kern_ops *ops,
		       const struct rfs_kern_job *job, int reps)
{
	double best = 1e30;
	int r;

	for (r = 0; r < reps; r++) {
		double t = now();

		rfs_kern_run(ops, job);
		t = now() - t;
		if (t < best)
			best = t;
	}
	return best;
}

static void row(const char *what, double sec, size_t out_bytes,
		size_t all_bytes, const char *match)
{
	if (sec <= 0) {
		printf("  %-26s %10s %12s %14s  %s\n", what, "-", "-", "-", match);
		return;
	}
	printf("  %-26s %10.2f %12.2f %14.2f  %s\n", what, sec * 1e3,
	       (double)out_bytes / sec / 1e9, (double)all_bytes / sec / 1e9,
	       match);
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 1024;
	int reps = argc > 2 ? atoi(argv[2]) : 3;
	const struct rfs_kern_ops *simd = rfs_kern_best();
	int gpu = rfs_cuda_available();
	unsigned c;

	if (!mib)
		mib = 1;
	if (reps < 1)
		reps = 1;
	printf("residfs kernel benchmark: %zu MiB of output per case, best of %d (scalar: 1)\n",
	       mib, reps);
	printf("CPU SIMD backend: %s (one thread); CUDA device: %s\n",
	       simd->name, gpu ? rfs_cuda_device_name() : "none");
	for (c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		const struct bcase *bc = &cases[c];
		size_t osz = rfs_kdt_size(bc->out);
		size_t n = (mib << 20) / osz;
		size_t s0 = rfs_kdt_size(bc->d0), s1 = rfs_kdt_size(bc->d1);
		size_t ob = n * osz, all = n * (osz + s0 + s1);
		struct rfs_kern_term t[2];
		struct rfs_kern_job job;
		void *ref = xmalloc(ob), *out = xmalloc(ob);
		void *h0 = xmalloc(n * s0), *h1 = xmalloc(n * s1);
		double ts, tv, td = -1, te = -1;
		const char *m_simd, *m_dev = "-", *m_e2e = "-";

		fill(bc->d0, h0, n, 1 + c);
		fill(bc->d1, h1, n, 77 + c);
		t[0].dtype = bc->d0;
		t[0].data = h0;
		t[0].n = n;
		t[0].scale = 1.0f;
		t[1].dtype = bc->d1;
		t[1].data = h1;
		t[1].n = n;
		t[1].scale = bc->scale;
		job.out_dtype = bc->out;
		job.n = n;
		job.nterms = 2;
		job.terms = t;
		job.cast_first = bc->cast;

		printf("\n%s  (%zu elements, %.2f GB in + out)\n", bc->name, n,
		       (double)all / 1e9);
		printf("  %-26s %10s %12s %14s  %s\n", "backend", "ms",
		       "GB/s out", "GB/s in+out", "same bytes as scalar");
		job.out = ref;
		ts = time_cpu(&rfs_kern_scalar, &job, 1);
		row("scalar", ts, ob, all, "(reference)");
		job.out = out;
		tv = time_cpu(simd, &job, reps);
		m_simd = memcmp(ref, out, ob) ? "NO" : "yes";
		row(simd->name, tv, ob, all, m_simd);

		if (gpu) {
			void *d0 = rfs_cuda_dev_alloc(n * s0);
			void *d1 = rfs_cuda_dev_alloc(n * s1);
			void *dout = rfs_cuda_dev_alloc(ob);
			struct rfs_kern_term dt[2] = { t[0], t[1] };
			struct rfs_kern_job dj = job;
			int r;

			if (d0 && d1 && dout && !rfs_cuda_upload(d0, h0, n * s0) &&
			    !rfs_cuda_upload(d1, h1, n * s1)) {
				dt[0].data = d0;
				dt[1].data = d1;
				dj.terms = dt;
				dj.out = dout;
				if (!rfs_cuda_run_device(&dj)) { /* warm-up */
					td = 1e30;
					for (r = 0; r < reps; r++) {
						double tt = now();

						if (rfs_cuda_run_device(&dj))
							break;
						tt = now() - tt;
						if (tt < td)
							td = tt;
					}
					memset(out, 0, ob);
					m_dev = rfs_cuda_download(out, dout, ob) ? "error" :
						memcmp(ref, out, ob) ? "NO" : "yes";
				}
			}
			rfs_cuda_dev_free(d0);
			rfs_cuda_dev_free(d1);
			rfs_cuda_dev_free(dout);
			if (td >= 1e30)
				td = -1;
			row("cuda, data on device", td, ob, all, m_dev);

			memset(out, 0, ob);
			job.out = out;
			if (!rfs_cuda_run(&job)) { /* warm-up: pinned buffers */
				te = 1e30;
				for (r = 0; r < reps; r++) {
					double tt = now();

					if (rfs_cuda_run(&job))
						break;
					tt = now() - tt;
					if (tt < te)
						te = tt;
				}
				m_e2e = memcmp(ref, out, ob) ? "NO" : "yes";
			}
			if (te >= 1e30)
				te = -1;
			row("cuda, end to end", te, ob, all, m_e2e);
		} else {
			row("cuda, data on device", -1, ob, all, "no device");
			row("cuda, end to end", -1, ob, all, "no device");
		}
		free(ref);
		free(out);
		free(h0);
		free(h1);
	}
	return gpu ? 0 : 77;
}
