/*
 * bench_cuda.c - output throughput of the kernels: scalar, best CPU SIMD,
 * CUDA with the data already on the device, CUDA end to end (host memory
 * in and out, transfers included).  Single CPU thread for the CPU rows.
 * With a device, also a job size sweep (CPU vs CUDA end to end, where the
 * GPU starts to pay) and a batch of many small tensors (one job at a time
 * vs one batch).
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

static void make_job(struct rfs_kern_job *job, struct rfs_kern_term *t,
		     enum rfs_kdt out, enum rfs_kdt d1, void *h0, void *h1, void *o, size_t n)
{
	t[0] = (struct rfs_kern_term){ RFS_KDT_BF16, h0, n, 1.0f };
	t[1] = (struct rfs_kern_term){ d1, h1, n, 1.0f };
	*job = (struct rfs_kern_job){ out, o, n, 2, t, 0 };
}

/*
 * Job size sweep: where the GPU, transfers included, starts to beat one
 * CPU thread (what RFS_BACKEND_GPU_MIN should be).  bf16 = bf16 + bf16 and
 * bf16 = bf16 + f32, output sizes from 64 KiB to 64 MiB, each timed over
 * a quarter of the benchmark's size of output (256 MiB by default).
 */
static void sweep(const struct rfs_kern_ops *simd, size_t mib)
{
	static const size_t kib[] = { 64, 256, 1024, 4096, 16384, 65536 };
	static const enum rfs_kdt d1s[] = { RFS_KDT_BF16, RFS_KDT_F32 };
	size_t maxn = (kib[5] << 10) / 2;
	void *h0 = xmalloc(maxn * 2), *h1 = xmalloc(maxn * 4);
	void *ref = xmalloc(maxn * 2), *out = xmalloc(maxn * 2);
	unsigned d, i;

	fill(RFS_KDT_BF16, h0, maxn, 11);
	printf("\njob size sweep (GB/s of output; one CPU thread vs CUDA end to end)\n");
	printf("  %-22s %10s %12s %12s %8s  %s\n", "case", "out size", "CPU GB/s",
	       "CUDA GB/s", "ratio", "same bytes");
	for (d = 0; d < 2; d++) {
		fill(d1s[d], h1, maxn, 12 + d);
		for (i = 0; i < sizeof(kib) / sizeof(kib[0]); i++) {
			size_t n = (kib[i] << 10) / 2, it = (mib << 18) / (kib[i] << 10), r;
			struct rfs_kern_term t[2];
			struct rfs_kern_job job;
			double tc, tg;
			int ok = 1;

			if (!it)
				it = 1;
			make_job(&job, t, RFS_KDT_BF16, d1s[d], h0, h1, ref, n);
			rfs_kern_run(simd, &job);
			tc = now();
			for (r = 0; r < it; r++)
				rfs_kern_run(simd, &job);
			tc = now() - tc;
			job.out = out;
			ok = !rfs_cuda_run(&job); /* warm-up */
			tg = now();
			for (r = 0; ok && r < it; r++)
				ok = !rfs_cuda_run(&job);
			tg = now() - tg;
			printf("  %-22s %7zu KiB %12.2f %12.2f %8.2f  %s\n",
			       d ? "bf16 = bf16 + f32" : "bf16 = bf16 + bf16", kib[i],
			       (double)(n * 2 * it) / tc / 1e9,
			       ok ? (double)(n * 2 * it) / tg / 1e9 : 0.0, ok ? tc / tg : 0.0,
			       !ok ? "error" : memcmp(ref, out, n * 2) ? "NO" : "yes");
		}
	}
	free(h0);
	free(h1);
	free(ref);
	free(out);
}

/*
 * Many small tensors (16 KiB of bf16 output each, 64 MiB in all, as norm
 * weights and biases come): one CPU thread, the GPU one job at a time,
 * and the GPU with all of them as one batch.
 */
static void small_batch(const struct rfs_kern_ops *simd)
{
	size_t nj = 4096, n = 8192, i;
	char *h0 = xmalloc(nj * n * 2), *h1 = xmalloc(nj * n * 2);
	char *ref = xmalloc(nj * n * 2), *out = xmalloc(nj * n * 2);
	struct rfs_kern_term *t = calloc(nj * 2, sizeof(*t));
	struct rfs_kern_job *jobs = calloc(nj, sizeof(*jobs));
	double tc, t1, tb;
	int ok1 = 1, okb;

	if (!t || !jobs)
		exit(1);
	fill(RFS_KDT_BF16, h0, nj * n, 21);
	fill(RFS_KDT_BF16, h1, nj * n, 22);
	for (i = 0; i < nj; i++)
		make_job(&jobs[i], t + 2 * i, RFS_KDT_BF16, RFS_KDT_BF16, h0 + i * n * 2,
			 h1 + i * n * 2, ref + i * n * 2, n);
	tc = now();
	for (i = 0; i < nj; i++)
		rfs_kern_run(simd, &jobs[i]);
	tc = now() - tc;
	for (i = 0; i < nj; i++)
		jobs[i].out = out + i * n * 2;
	rfs_cuda_run_batch(jobs, 16); /* warm-up */
	t1 = now();
	for (i = 0; ok1 && i < nj; i++)
		ok1 = !rfs_cuda_run(&jobs[i]);
	t1 = now() - t1;
	ok1 = ok1 && !memcmp(ref, out, nj * n * 2);
	memset(out, 0, nj * n * 2);
	tb = now();
	okb = !rfs_cuda_run_batch(jobs, nj);
	tb = now() - tb;
	okb = okb && !memcmp(ref, out, nj * n * 2);
	printf("\n%zu small tensors of %zu bf16 elements (bf16 + bf16), %zu MiB of output\n",
	       nj, n, nj * n * 2 >> 20);
	printf("  %-26s %10s %12s  %s\n", "backend", "ms", "GB/s out", "same bytes as CPU");
	printf("  %-26s %10.2f %12.2f  %s\n", simd->name, tc * 1e3,
	       (double)(nj * n * 2) / tc / 1e9, "(reference)");
	printf("  %-26s %10.2f %12.2f  %s\n", "cuda, one job at a time", t1 * 1e3,
	       (double)(nj * n * 2) / t1 / 1e9, ok1 ? "yes" : "NO");
	printf("  %-26s %10.2f %12.2f  %s\n", "cuda, one batch", tb * 1e3,
	       (double)(nj * n * 2) / tb / 1e9, okb ? "yes" : "NO");
	free(h0);
	free(h1);
	free(ref);
	free(out);
	free(t);
	free(jobs);
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
	if (gpu) {
		sweep(simd, mib);
		small_batch(simd);
	}
	return gpu ? 0 : 77;
}
