/*
 * test_fallback.c - a CUDA error never costs a read its bytes.
 *
 * Runs kernels/backend.c over the CPU stand-in of the CUDA runtime with an
 * error injected into the n-th asynchronous copy (FAKE_FAIL_AT, set by
 * run.sh), in the middle of a batch of several chunks:
 *
 *   test_fallback cuda   --backend cuda: the batch is finished on the CPU
 *                        with the reference's bytes, the GPU is marked
 *                        unusable, one line is logged, later batches run on
 *                        the CPU and are right too.
 *   test_fallback auto   --backend auto: the measurement's GPU run fails; the
 *                        verdict says so and every batch is right.
 *
 * Either way, a backend made afterwards has a verdict of its own while the
 * GPU's failure is the process's (kernels/backend.h): a new auto backend
 * says that no device answers, a new cuda backend is refused.
 *
 * Exits 0 when all checks pass, 1 otherwise.
 */
#include "backend.h"
#include "kern.h"
#include "kern_cuda.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                      \
	do {                                                  \
		if (!(cond)) {                                \
			printf("FAIL: " __VA_ARGS__);         \
			printf("\n");                         \
			failures++;                           \
		}                                             \
	} while (0)

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

struct batch {
	size_t n;
	struct rfs_kern_job *jobs;
	struct rfs_kern_term *terms;
	void **ref;
};

/* @n jobs of bf16 base + f32 delta -> bf16, sizes from a few elements to
 * @big, random finite values. */
static void make_batch(struct batch *b, size_t n, size_t big, uint64_t seed)
{
	uint64_t s = seed;
	size_t i, e;

	b->n = n;
	b->jobs = calloc(n, sizeof(*b->jobs));
	b->terms = calloc(2 * n, sizeof(*b->terms));
	b->ref = calloc(n, sizeof(*b->ref));
	if (!b->jobs || !b->terms || !b->ref)
		exit(1);
	for (i = 0; i < n; i++) {
		size_t len = i % 3 ? 1 + rnd(&s) % 5000 : big / 2 + rnd(&s) % big;
		uint16_t *base = malloc(len * 2), *out = malloc(len * 2);
		float *delta = malloc(len * 4);

		b->ref[i] = malloc(len * 2);
		if (!base || !out || !delta || !b->ref[i])
			exit(1);
		for (e = 0; e < len; e++) {
			base[e] = rfs_f32_to_bf16((float)(int)(rnd(&s) % 2001 - 1000) / 64.0f);
			delta[e] = (float)(int)(rnd(&s) % 2001 - 1000) / 4096.0f;
		}
		memset(out, 0xA5, len * 2);
		b->terms[2 * i] = (struct rfs_kern_term){ RFS_KDT_BF16, base, len, 1.0f };
		b->terms[2 * i + 1] = (struct rfs_kern_term){ RFS_KDT_F32, delta, len, 0.5f };
		b->jobs[i] = (struct rfs_kern_job){ RFS_KDT_BF16, b->ref[i], len, 2,
						    &b->terms[2 * i], 0 };
		rfs_kern_run(&rfs_kern_scalar, &b->jobs[i]);
		b->jobs[i].out = out;
	}
}

static int batch_ok(const struct batch *b)
{
	size_t i;

	for (i = 0; i < b->n; i++)
		if (memcmp(b->ref[i], b->jobs[i].out, b->jobs[i].n * 2))
			return 0;
	return 1;
}

static void free_batch(struct batch *b)
{
	size_t i;

	for (i = 0; i < b->n; i++) {
		free((void *)b->terms[2 * i].data);
		free((void *)b->terms[2 * i + 1].data);
		free(b->jobs[i].out);
		free(b->ref[i]);
	}
	free(b->jobs);
	free(b->terms);
	free(b->ref);
}

/* Lines of @path that contain @what. */
static int count_lines(const char *path, const char *what)
{
	char line[512];
	int n = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, what) != NULL;
	fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	int cuda = argc > 1 && !strcmp(argv[1], "cuda");
	char desc[512], desc2[512], log[] = "/tmp/residfs-fallback.XXXXXX";
	struct rfs_err err = { 0 };
	struct rfs_backend *be, *be2;
	struct batch b1, b2;
	size_t i;
	int fd;

	/* every batch goes through the GPU decision, however small */
	setenv("RESIDFS_GPU_MIN_ELEMENTS", "1", 1);
	if (!getenv("FAKE_FAIL_AT")) {
		printf("FAIL: FAKE_FAIL_AT is not set (run through tests/cuda/emu/run.sh)\n");
		return 1;
	}
	fd = mkstemp(log);
	if (fd < 0 || dup2(fd, 2) < 0)
		return 1;
	be = rfs_backend_new(cuda ? RFS_BACKEND_CUDA : RFS_BACKEND_AUTO, &err);
	if (!be) {
		printf("FAIL: rfs_backend_new: %s\n", err.msg);
		return 1;
	}

	/* several chunks (over 24 MiB of input), so the error comes mid-batch */
	make_batch(&b1, 60, 1 << 20, 1);
	rfs_backend_run_batch(be, b1.jobs, b1.n);
	CHECK(batch_ok(&b1), "%s: the failed batch's bytes differ from the reference",
	      argv[1]);
	CHECK(!rfs_cuda_available(), "%s: the GPU is still marked usable after an error",
	      argv[1]);

	make_batch(&b2, 40, 1 << 18, 2);
	rfs_backend_run_batch(be, b2.jobs, b2.n);
	CHECK(batch_ok(&b2), "%s: a later batch's bytes differ", argv[1]);

	rfs_backend_describe(be, desc, sizeof(desc));
	if (cuda)
		CHECK(strstr(desc, "cuda (") == desc, "describe: %s", desc);
	else
		CHECK(strstr(desc, "the GPU failed; not used"), "auto's verdict: %s", desc);

	be2 = rfs_backend_new(RFS_BACKEND_CUDA, &err);
	CHECK(!be2 && err.code == RFS_E_IO && strstr(err.msg, "no CUDA device answers"),
	      "%s: a cuda backend made after the error: %s", argv[1], be2 ? "made" : err.msg);
	rfs_backend_free(be2);
	be2 = rfs_backend_new(RFS_BACKEND_AUTO, &err);
	CHECK(be2 != NULL, "%s: a new auto backend: %s", argv[1], err.msg);
	if (be2) {
		memset(desc2, 0, sizeof(desc2));
		rfs_backend_describe(be2, desc2, sizeof(desc2));
		CHECK(strstr(desc2, "not measured yet"), "a new auto backend's verdict: %s", desc2);
		for (i = 0; i < b2.n; i++)
			memset(b2.jobs[i].out, 0xA5, b2.jobs[i].n * 2);
		rfs_backend_run_batch(be2, b2.jobs, b2.n);
		CHECK(batch_ok(&b2), "%s: a new auto backend's bytes differ", argv[1]);
		rfs_backend_describe(be2, desc2, sizeof(desc2));
		CHECK(strstr(desc2, "cpu: no CUDA device answers"), "a new auto backend's verdict: %s",
		      desc2);
		rfs_backend_free(be2);
	}
	fflush(stderr);
	CHECK(count_lines(log, "residfs: error: CUDA error in") == 1,
	      "%s: %d lines logged about the CUDA error, want 1", argv[1],
	      count_lines(log, "residfs: error: CUDA error in"));
	unlink(log);
	free_batch(&b1);
	free_batch(&b2);
	rfs_backend_free(be);
	printf("%s fallback (%s): %s\n", argv[1], desc, failures ? "FAIL" : "PASS");
	return failures ? 1 : 0;
}
