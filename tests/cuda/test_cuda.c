/*
 * test_cuda.c - the CUDA backend against the scalar reference, bit for bit.
 *
 * Exits 77 (meson's "skipped") when no CUDA device answers.  Every output
 * element is compared bit for bit, NaNs included: the contract (kern.h)
 * fixes which NaN a NaN + NaN keeps (the accumulator's, quieted), what an
 * invalid operation gives (the host's default NaN) and every conversion.
 */
#include "kern.h"
#include "kern_cuda.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXSHOW 8

static int failures;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- random numbers (xorshift64*, per caller state) ---- */

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

/* ---- special values ---- */

static const uint32_t spec_f32[] = {
	0x00000000, 0x80000000, 0x7F800000, 0xFF800000, /* zeros, Inf */
	0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF, /* NaNs */
	0x7FC12345, 0x7FA00001, 0xFF812345, 0x7FFFFFFF,
	0x00000001, 0x807FFFFF, 0x00800000, 0x80800001, /* subnormal, min */
	0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x7F7F7FFF, /* FLT_MAX, bf16 ovf */
	0x3F808000, 0x3F818000, 0xBF808000, 0x3F808001, /* bf16 ties */
	0x3F801000, 0x3F803000, 0xBF801000, 0x3F801001, /* fp16 ties */
	0x477FE000, 0x477FEFFF, 0x477FF000, 0xC77FF000, /* fp16 max, ovf */
	0x33800000, 0x33000000, 0x33000001, 0x33C00000, /* fp16 subnormal */
	0x387FC000, 0x38800000, 0x387FE000, 0x00008000, /* fp16 min normal */
	0x00400000, 0x3F800000, 0xBF800000, 0x40490FDB,
	0x3EAAAAAB, 0xC0000000, 0x46FFFE00, 0x47000000,
};

static const uint16_t spec_bf16[] = {
	0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81, 0xFFA5,
	0x0001, 0x807F, 0x0080, 0x7F7F, 0xFF7F, 0x3F80, 0xBF81, 0x4049,
	0x4780, 0x477F, 0x3380, 0x3F81,
};

static const uint16_t spec_f16[] = {
	0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x7C01, 0x7D55,
	0x0001, 0x83FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0x3555, 0x0200,
	0x3C01, 0xBC03, 0x7800, 0x0401,
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

enum fill { FILL_PLAIN, FILL_MIXED, FILL_SPECIAL };

/** A finite value of moderate size (about 2^-8 .. 2^8). */
static float plain_value(uint64_t *s)
{
	uint64_t r = rnd(s);
	uint32_t exp = 119 + (uint32_t)(r % 17);

	return rfs_bits_f32((uint32_t)((r >> 8) & 0x80000000u) | (exp << 23) |
		   (uint32_t)((r >> 20) & 0x7FFFFF));
}

static void fill(enum rfs_kdt t, void *dst, size_t n, enum fill f, uint64_t *s)
{
	uint32_t *w = dst;
	uint16_t *h = dst;
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t r = rnd(s);
		int pick = f == FILL_SPECIAL ? (int)(r % 3) :
			   f == FILL_MIXED ? (int)(r % 16) : 9;
		uint32_t v;

		if (pick == 0 || pick == 1) { /* a special of this dtype */
			if (t == RFS_KDT_F32)
				v = spec_f32[(r >> 8) % NELEM(spec_f32)];
			else if (t == RFS_KDT_BF16)
				v = spec_bf16[(r >> 8) % NELEM(spec_bf16)];
			else
				v = spec_f16[(r >> 8) % NELEM(spec_f16)];
		} else if (pick == 2) { /* any bit pattern */
			v = (uint32_t)(r >> 16);
		} else {
			float p = plain_value(s);

			v = t == RFS_KDT_F32 ? rfs_f32_bits(p) :
			    t == RFS_KDT_BF16 ? rfs_f32_to_bf16(p) : rfs_f32_to_f16(p);
		}
		if (t == RFS_KDT_F32)
			w[i] = v;
		else
			h[i] = (uint16_t)v;
	}
}

/* ---- comparison ---- */

static uint32_t out_bits(enum rfs_kdt t, const void *p, size_t i)
{
	return t == RFS_KDT_F32 ? ((const uint32_t *)p)[i] :
				  ((const uint16_t *)p)[i];
}

static void show_term_bits(const struct rfs_kern_job *job, size_t i)
{
	unsigned k;

	for (k = 0; k < job->nterms && k < 6; k++) {
		const struct rfs_kern_term *t = &job->terms[k];

		if (i < t->n)
			fprintf(stderr, " t%u[dt%d s=%g]=%08x", k, t->dtype,
				(double)t->scale, out_bits(t->dtype, t->data, i));
		else
			fprintf(stderr, " t%u=(absent)", k);
	}
	fprintf(stderr, "\n");
}

/** Compares @got with @ref for @job; returns the number of mismatches. */
static long compare(const char *what, const struct rfs_kern_job *job,
		    const void *ref, const void *got)
{
	long bad = 0;
	size_t i;

	for (i = 0; i < job->n; i++) {
		uint32_t r = out_bits(job->out_dtype, ref, i);
		uint32_t g = out_bits(job->out_dtype, got, i);

		if (r == g)
			continue;
		if (bad++ < MAXSHOW) {
			pthread_mutex_lock(&report_lock);
			fprintf(stderr, "FAIL %s: out dt%d cast %d elem %zu: ref %08x cuda %08x;",
				what, job->out_dtype, job->cast_first, i, r, g);
			show_term_bits(job, i);
			pthread_mutex_unlock(&report_lock);
		}
	}
	if (bad) {
		pthread_mutex_lock(&report_lock);
		fprintf(stderr, "FAIL %s: %ld of %zu elements differ\n", what,
			bad, job->n);
		failures++;
		pthread_mutex_unlock(&report_lock);
	}
	return bad;
}

/** Runs @job (host pointers, job->out ignored) both ways and compares. */
static long check_job(const char *what, const struct rfs_kern_job *job)
{
	size_t osz = rfs_kdt_size(job->out_dtype);
	struct rfs_kern_job j = *job;
	void *ref = malloc(job->n * osz + 1), *got = malloc(job->n * osz + 1);
	long bad;

	if (!ref || !got) {
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	memset(got, 0xA5, job->n * osz);
	j.out = ref;
	rfs_kern_run(&rfs_kern_scalar, &j);
	j.out = got;
	if (rfs_cuda_run(&j)) {
		pthread_mutex_lock(&report_lock);
		fprintf(stderr, "FAIL %s: rfs_cuda_run returned -1\n", what);
		failures++;
		pthread_mutex_unlock(&report_lock);
		bad = 1;
	} else {
		bad = compare(what, &j, ref, got);
	}
	free(ref);
	free(got);
	return bad;
}

/* ---- a job with its own term buffers ---- */

struct tjob {
	struct rfs_kern_job job;
	struct rfs_kern_term *terms;
	void **bufs;
};

static void tjob_init(struct tjob *tj, enum rfs_kdt out, size_t n,
		      unsigned nterms, int cast)
{
	memset(tj, 0, sizeof(*tj));
	tj->terms = calloc(nterms, sizeof(*tj->terms));
	tj->bufs = calloc(nterms, sizeof(*tj->bufs));
	if (!tj->terms || !tj->bufs)
		exit(1);
	tj->job.out_dtype = out;
	tj->job.n = n;
	tj->job.nterms = nterms;
	tj->job.terms = tj->terms;
	tj->job.cast_first = cast;
}

/** Term @k: @tn elements of @dt filled with @f, starting @skew elements
 * into its buffer (so that the data need not be aligned). */
static void tjob_term(struct tjob *tj, unsigned k, enum rfs_kdt dt, size_t tn,
		      float scale, enum fill f, size_t skew, uint64_t *s)
{
	size_t esz = rfs_kdt_size(dt);
	char *b = malloc((tn + skew + 1) * esz);

	if (!b)
		exit(1);
	fill(dt, b + skew * esz, tn, f, s);
	tj->bufs[k] = b;
	tj->terms[k].dtype = dt;
	tj->terms[k].data = b + skew * esz;
	tj->terms[k].n = tn;
	tj->terms[k].scale = k ? scale : 1.0f;
}

static void tjob_free(struct tjob *tj)
{
	unsigned k;

	for (k = 0; k < tj->job.nterms; k++)
		free(tj->bufs[k]);
	free(tj->bufs);
	free(tj->terms);
}

static const float scales[] = { 1.0f, 0.5f, -1.75f, 3.0f, 0.1f, -1.0f, 0.0f };

static float random_scale(uint64_t *s)
{
	return scales[rnd(s) % NELEM(scales)];
}

/* ---- the tests ---- */

/** Conversions alone (one term): every 16-bit pattern, many float32. */
static void test_conversions(void)
{
	uint64_t s = 1;
	enum rfs_kdt in, out;
	char what[64];

	for (in = RFS_KDT_BF16; in <= RFS_KDT_F16; in++) {
		for (out = 0; out < RFS_KDT_COUNT; out++) {
			struct tjob tj;
			uint16_t *h;
			size_t i;

			tjob_init(&tj, out, 65536, 1, 0);
			tjob_term(&tj, 0, in, 65536, 1.0f, FILL_PLAIN, 0, &s);
			h = tj.bufs[0];
			for (i = 0; i < 65536; i++)
				h[i] = (uint16_t)i;
			snprintf(what, sizeof(what), "all 16-bit dt%d -> dt%d", in, out);
			check_job(what, &tj.job);
			tjob_free(&tj);
		}
	}
	for (out = 0; out < RFS_KDT_COUNT; out++) {
		const uint32_t mans[] = { 0, 1, 0xFFF, 0x1000, 0x1001, 0x2000,
					  0x3000, 0x7FFF, 0x8000, 0x8001, 0x18000,
					  0x7FF000, 0x7FFFFF, 0x400000, 0x3FFFFF };
		size_t n = (1u << 21) + 2 * 256 * NELEM(mans);
		struct tjob tj;
		uint32_t *w, e, m, sg;
		size_t i = 0;

		tjob_init(&tj, out, n, 1, 0);
		tjob_term(&tj, 0, RFS_KDT_F32, n, 1.0f, FILL_PLAIN, 0, &s);
		w = tj.bufs[0];
		for (sg = 0; sg < 2; sg++)
			for (e = 0; e < 256; e++)
				for (m = 0; m < NELEM(mans); m++)
					w[i++] = (sg << 31) | (e << 23) | mans[m];
		for (; i < n; i++)
			w[i] = (uint32_t)rnd(&s);
		snprintf(what, sizeof(what), "float32 patterns -> dt%d", out);
		check_job(what, &tj.job);
		tjob_free(&tj);
	}
}

/** Every dtype combination of two terms, every scale, both roundings. */
static void test_pairs(void)
{
	uint64_t s = 2;
	int out, d0, d1, cast;
	unsigned sc;
	char what[96];

	for (out = 0; out < RFS_KDT_COUNT; out++)
	for (d0 = 0; d0 < RFS_KDT_COUNT; d0++)
	for (d1 = 0; d1 < RFS_KDT_COUNT; d1++)
	for (cast = 0; cast < 2; cast++)
	for (sc = 0; sc < NELEM(scales); sc++) {
		enum fill f;

		for (f = FILL_PLAIN; f <= FILL_SPECIAL; f++) {
			size_t n = 3001 + rnd(&s) % 4000;
			struct tjob tj;

			tjob_init(&tj, out, n, 2, cast);
			tjob_term(&tj, 0, d0, n, 1.0f, f, 0, &s);
			tjob_term(&tj, 1, d1, n, scales[sc], f, 0, &s);
			snprintf(what, sizeof(what),
				 "pair out%d dt%d+dt%d*%g cast%d fill%d",
				 out, d0, d1, (double)scales[sc], cast, f);
			check_job(what, &tj.job);
			tjob_free(&tj);
		}
	}
}

/** A random job: random dtypes, scales, lengths (growth), alignment. */
static void random_job(struct tjob *tj, size_t n, unsigned nterms, uint64_t *s)
{
	unsigned k;

	tjob_init(tj, rnd(s) % RFS_KDT_COUNT, n, nterms, (int)(rnd(s) & 1));
	for (k = 0; k < nterms; k++) {
		size_t tn;

		switch (rnd(s) % 6) {
		case 0:
			tn = 0;
			break;
		case 1:
			tn = rnd(s) % (n + 1); /* short: grown vocabulary */
			break;
		case 2:
			tn = n + 1 + rnd(s) % 9; /* longer than the job */
			break;
		default:
			tn = n;
		}
		tjob_term(tj, k, rnd(s) % RFS_KDT_COUNT, tn, random_scale(s),
			  rnd(s) % 4 ? FILL_MIXED : FILL_PLAIN, rnd(s) % 3, s);
	}
}

static void test_random(void)
{
	static const unsigned nts[] = { 1, 2, 3, 5, 8, 16, 17, 33 };
	uint64_t s = 3;
	int i;
	char what[64];

	for (i = 0; i < 240; i++) {
		unsigned nt = nts[i % NELEM(nts)];
		size_t n = 1 + rnd(&s) % 40000;
		struct tjob tj;

		random_job(&tj, n, nt, &s);
		snprintf(what, sizeof(what), "random #%d (%u terms, n %zu)", i, nt, n);
		check_job(what, &tj.job);
		tjob_free(&tj);
	}
	/* tiny sizes, below one vector of four */
	for (i = 1; i <= 9; i++) {
		struct tjob tj;

		random_job(&tj, (size_t)i, 1 + i % 4, &s);
		snprintf(what, sizeof(what), "tiny n %d", i);
		check_job(what, &tj.job);
		tjob_free(&tj);
	}
}

/** Jobs of many chunks: the stream pipeline and slot reuse. */
static void test_large(void)
{
	uint64_t s = 4;
	struct tjob tj;
	size_t n = 13000003;
	unsigned k;

	tjob_init(&tj, RFS_KDT_F32, n, 3, 0);
	tjob_term(&tj, 0, RFS_KDT_BF16, n, 1.0f, FILL_MIXED, 1, &s);
	tjob_term(&tj, 1, RFS_KDT_F32, n, 0.5f, FILL_MIXED, 0, &s);
	tjob_term(&tj, 2, RFS_KDT_F16, n - 5000000, -1.0f, FILL_MIXED, 1, &s);
	check_job("large 3 terms -> f32", &tj.job);
	tj.job.out_dtype = RFS_KDT_BF16;
	tj.job.cast_first = 1;
	check_job("large 3 terms -> bf16 cast-first", &tj.job);
	tjob_free(&tj);

	n = 3000001;
	tjob_init(&tj, RFS_KDT_BF16, n, 20, 0);
	for (k = 0; k < 20; k++)
		tjob_term(&tj, k, k % 3 ? RFS_KDT_BF16 : RFS_KDT_F16,
			  k == 7 ? n / 3 : n, random_scale(&s), FILL_PLAIN, 0, &s);
	check_job("large 20 terms -> bf16", &tj.job);
	tj.job.cast_first = 1;
	tj.job.out_dtype = RFS_KDT_F16;
	check_job("large 20 terms -> f16 cast-first", &tj.job);
	tjob_free(&tj);
}

/** rfs_cuda_run_device() with data uploaded first; unaligned pointers. */
static void test_device(void)
{
	static const unsigned nts[] = { 1, 2, 4, 19 };
	uint64_t s = 5;
	unsigned i, k;
	char what[64];

	for (i = 0; i < 16; i++) {
		unsigned nt = nts[i % NELEM(nts)];
		size_t n = 1 + rnd(&s) % 300000;
		size_t osz, oskew = i & 1;
		struct tjob tj;
		struct rfs_kern_job dj;
		struct rfs_kern_term *dt;
		void **dbuf, *dout, *ref, *got;

		random_job(&tj, n, nt, &s);
		osz = rfs_kdt_size(tj.job.out_dtype);
		dj = tj.job;
		dt = calloc(nt, sizeof(*dt));
		dbuf = calloc(nt, sizeof(*dbuf));
		ref = malloc(n * osz);
		got = malloc(n * osz);
		dout = rfs_cuda_dev_alloc((n + 1) * osz);
		if (!dt || !dbuf || !ref || !got || !dout) {
			fprintf(stderr, "FAIL device: allocation\n");
			failures++;
			return;
		}
		for (k = 0; k < nt; k++) {
			size_t esz = rfs_kdt_size(tj.terms[k].dtype);
			size_t skew = (i >> 1) & 1;

			dt[k] = tj.terms[k];
			dbuf[k] = rfs_cuda_dev_alloc((dt[k].n + 1) * esz);
			if (!dbuf[k] || rfs_cuda_upload((char *)dbuf[k] + skew * esz,
							tj.terms[k].data,
							dt[k].n * esz)) {
				fprintf(stderr, "FAIL device: upload\n");
				failures++;
				return;
			}
			dt[k].data = (char *)dbuf[k] + skew * esz;
		}
		dj.terms = dt;
		dj.out = (char *)dout + oskew * osz;
		tj.job.out = ref;
		rfs_kern_run(&rfs_kern_scalar, &tj.job);
		snprintf(what, sizeof(what), "device #%u (%u terms, n %zu)", i, nt, n);
		if (rfs_cuda_run_device(&dj) ||
		    rfs_cuda_download(got, dj.out, n * osz)) {
			fprintf(stderr, "FAIL %s: run or download failed\n", what);
			failures++;
		} else {
			compare(what, &tj.job, ref, got);
		}
		for (k = 0; k < nt; k++)
			rfs_cuda_dev_free(dbuf[k]);
		rfs_cuda_dev_free(dout);
		free(dt);
		free(dbuf);
		free(ref);
		free(got);
		tjob_free(&tj);
	}
}

/** One batch of @nj random jobs of up to @maxn elements, against the
 * scalar reference job by job. */
static void check_batch(const char *what, size_t nj, size_t maxn, uint64_t *s)
{
	struct tjob *tj = calloc(nj, sizeof(*tj));
	struct rfs_kern_job *jobs = calloc(nj, sizeof(*jobs));
	void **ref = calloc(nj, sizeof(*ref));
	size_t i;
	char w[96];

	if (!tj || !jobs || !ref)
		exit(1);
	for (i = 0; i < nj; i++) {
		static const unsigned nts[] = { 1, 2, 2, 3, 17 };
		/* mostly small tensors (norms, biases), some empty, some big */
		size_t n = rnd(s) % 8 == 0 ? 0 : rnd(s) % 5 == 0 ? 1 + rnd(s) % maxn :
				1 + rnd(s) % 5000;
		size_t osz;

		random_job(&tj[i], n, nts[rnd(s) % NELEM(nts)], s);
		osz = rfs_kdt_size(tj[i].job.out_dtype);
		ref[i] = malloc(n * osz + 1);
		jobs[i] = tj[i].job;
		jobs[i].out = malloc(n * osz + 1);
		if (!ref[i] || !jobs[i].out)
			exit(1);
		memset(jobs[i].out, 0xA5, n * osz);
		tj[i].job.out = ref[i];
		rfs_kern_run(&rfs_kern_scalar, &tj[i].job);
	}
	if (rfs_cuda_run_batch(jobs, nj)) {
		fprintf(stderr, "FAIL %s: rfs_cuda_run_batch returned -1\n", what);
		failures++;
	} else {
		for (i = 0; i < nj; i++) {
			snprintf(w, sizeof(w), "%s job %zu (n %zu, %u terms)", what, i,
				 jobs[i].n, jobs[i].nterms);
			compare(w, &jobs[i], ref[i], jobs[i].out);
		}
	}
	for (i = 0; i < nj; i++) {
		free(ref[i]);
		free(jobs[i].out);
		tjob_free(&tj[i]);
	}
	free(tj);
	free(jobs);
	free(ref);
}

/** Batches: many small jobs packed into shared chunks, jobs split across
 * chunks, empty jobs, invalid batches. */
static void test_batch(void)
{
	uint64_t s = 6;
	struct rfs_kern_term t = { RFS_KDT_F32, NULL, 0, 1.0f };
	struct rfs_kern_job bad[2] = { { RFS_KDT_F32, NULL, 0, 1, &t, 0 },
				       { RFS_KDT_F32, NULL, 4, 0, &t, 0 } };
	int i;

	for (i = 0; i < 6; i++)
		check_batch("batch of small jobs", 2 + (size_t)rnd(&s) % 300, 20000, &s);
	/* several chunks: big jobs between small ones */
	check_batch("batch with big jobs", 40, 3000000, &s);
	check_batch("batch with big jobs", 7, 9000000, &s);
	if (rfs_cuda_run_batch(NULL, 0) != 0 || rfs_cuda_run_batch(bad, 1) != 0) {
		fprintf(stderr, "FAIL empty batch: not 0\n");
		failures++;
	}
	if (rfs_cuda_run_batch(bad, 2) != -1) {
		fprintf(stderr, "FAIL batch with an invalid job: not -1\n");
		failures++;
	}
}

static struct tjob busy_job;
static void *busy_ref;
static int busy_seen, busy_bad;

static void *busy_main(void *arg)
{
	size_t osz = rfs_kdt_size(busy_job.job.out_dtype);
	struct rfs_kern_job j = busy_job.job;
	void *out = malloc(j.n * osz);
	int i, r;

	(void)arg;
	if (!out)
		exit(1);
	j.out = out;
	for (i = 0; i < 6; i++) {
		memset(out, 0xA5, j.n * osz);
		r = rfs_cuda_try_batch(&j, 1);
		if (r == 1)
			__atomic_add_fetch(&busy_seen, 1, __ATOMIC_RELAXED);
		else if (r != 0 || memcmp(out, busy_ref, j.n * osz))
			__atomic_add_fetch(&busy_bad, 1, __ATOMIC_RELAXED);
	}
	free(out);
	return NULL;
}

/** rfs_cuda_try_batch: more threads than contexts; each call either
 * computes the right bytes or says busy (1) at once. */
static void test_try_batch(void)
{
	pthread_t th[12];
	uint64_t s = 7;
	size_t n = 3000000, osz;
	unsigned i;

	tjob_init(&busy_job, RFS_KDT_BF16, n, 2, 0);
	tjob_term(&busy_job, 0, RFS_KDT_BF16, n, 1.0f, FILL_PLAIN, 0, &s);
	tjob_term(&busy_job, 1, RFS_KDT_F32, n, 0.5f, FILL_PLAIN, 0, &s);
	osz = rfs_kdt_size(busy_job.job.out_dtype);
	busy_ref = malloc(n * osz);
	if (!busy_ref)
		exit(1);
	busy_job.job.out = busy_ref;
	rfs_kern_run(&rfs_kern_scalar, &busy_job.job);
	for (i = 0; i < NELEM(th); i++)
		if (pthread_create(&th[i], NULL, busy_main, NULL))
			exit(1);
	for (i = 0; i < NELEM(th); i++)
		pthread_join(th[i], NULL);
	if (busy_bad) {
		fprintf(stderr, "FAIL try_batch: %d calls failed or gave wrong bytes\n", busy_bad);
		failures++;
	}
	/* the stand-in's kernels are slow enough that 12 threads always
	 * collide; a real GPU may serve them all in turn */
	if (!busy_seen && strstr(rfs_cuda_device_name(), "stand-in")) {
		fprintf(stderr, "FAIL try_batch: never busy with 12 threads on 4 contexts\n");
		failures++;
	}
	printf("try_batch: %d of %zu calls found every context busy\n", busy_seen,
	       NELEM(th) * 6);
	free(busy_ref);
	tjob_free(&busy_job);
}

static void *thread_main(void *arg)
{
	uint64_t s = 100 + (uintptr_t)arg;
	int i;
	char what[64];

	for (i = 0; i < 24; i++) {
		size_t n = 1 + rnd(&s) % (i % 4 ? 70000 : 2500000);
		struct tjob tj;

		random_job(&tj, n, 1 + (unsigned)(rnd(&s) % 4), &s);
		snprintf(what, sizeof(what), "thread %u job %d",
			 (unsigned)(uintptr_t)arg, i);
		check_job(what, &tj.job);
		tjob_free(&tj);
	}
	return NULL;
}

/** Several callers at once, more than the pool has contexts. */
static void test_threads(void)
{
	pthread_t th[8];
	uintptr_t i;

	for (i = 0; i < 8; i++)
		if (pthread_create(&th[i], NULL, thread_main, (void *)i)) {
			fprintf(stderr, "FAIL pthread_create\n");
			failures++;
			return;
		}
	for (i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
}

static void test_edges(void)
{
	struct rfs_kern_term t = { RFS_KDT_F32, NULL, 0, 1.0f };
	struct rfs_kern_job j = { RFS_KDT_F32, NULL, 0, 1, &t, 0 };

	if (rfs_cuda_run(&j) != 0) {
		fprintf(stderr, "FAIL empty job: not 0\n");
		failures++;
	}
	j.nterms = 0;
	j.n = 4;
	if (rfs_cuda_run(&j) != -1 || rfs_cuda_run(NULL) != -1) {
		fprintf(stderr, "FAIL invalid job: not -1\n");
		failures++;
	}
	if (!rfs_cuda_available()) {
		fprintf(stderr, "FAIL an invalid job made the GPU unusable\n");
		failures++;
	}
}

int main(void)
{
	if (!rfs_cuda_available()) {
		printf("no CUDA device (%s): skipped\n", rfs_cuda_device_name());
		return 77;
	}
	printf("device: %s\n", rfs_cuda_device_name());
	test_edges();
	test_conversions();
	test_pairs();
	test_random();
	test_large();
	test_device();
	test_batch();
	test_try_batch();
	test_threads();
	if (!rfs_cuda_available()) {
		fprintf(stderr, "FAIL the GPU was marked unusable\n");
		failures++;
	}
	printf("%s: %d failing checks\n", failures ? "FAIL" : "PASS", failures);
	return failures ? 1 : 0;
}
