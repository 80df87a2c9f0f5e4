/*
 * test_read.c - virtual-file reads (read.h) on a plan built by hand: a
 * literal header, a passthrough range of a file, computed tensors (one
 * that starts 2 bytes past an element edge, one whose second operand is
 * shorter: rows past it count as zero) and a literal tail.  Every range
 * [off, off + len) that crosses segment and element edges is read and
 * compared with bytes computed here, in float32 without fused
 * multiply-add, independently of residfs's kernels: with and without the
 * block cache, with mapped windows (the SIGBUS guard installed) and with
 * pread (the guard not installed yet: first half of the run).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/busguard.h"
#include "core/cache.h"
#include "core/plan_int.h"
#include "core/read.h"
#include "kernels/backend.h"

#define N1 1000 /* elements of the first tensor */
#define N2 300  /* of the second; its delta has only D2 */
#define D2 200

static char path_a[64], path_b[64], path_t[64];
static int fd_a = -1, fd_b = -1, fd_t = -1;
static struct rfs_bsrc *src_a, *src_b, *src_t; /* byte sources over them (own the fds) */
static float *A, *B;              /* operands: A base, B delta */
static unsigned char *expect;     /* the whole virtual file */
static size_t size;
static struct rfs_comp *c1, *c2;
static struct rfs_seg segs[6];
static struct rfs_vfile vf;
static const char head[] = "HEADER!";   /* 7 bytes: the tensor starts unaligned */
static const char tail[] = "tail.";
static unsigned char text[64];           /* the passthrough file's bytes */

static int tmpfile_with(char *path, const void *data, size_t len)
{
	int fd;

	snprintf(path, 64, "/tmp/residfs-test-read-XXXXXX");
	fd = mkstemp(path);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len)
		return -1;
	return fd;
}

static int local_src(int fd, const char *path, struct rfs_bsrc **out)
{
	struct rfs_err err = { 0 };
	struct stat st;

	if (fstat(fd, &st))
		return -1;
	return rfs_bsrc_local_fd(fd, &st, path, out, &err);
}

static struct rfs_comp *comp(const char *name, uint64_t numel, uint64_t a_el, uint64_t b_off,
			     uint64_t b_numel, float scale)
{
	struct rfs_comp *c = calloc(1, sizeof(*c) + 2 * sizeof(c->ops[0]));

	c->name = name;
	c->out_dtype = RFS_KDT_F32;
	c->numel = numel;
	c->nops = 2;
	c->ops[0] = (struct rfs_operand){ src_a, a_el * 4, RFS_KDT_F32, numel, 1.0f };
	c->ops[1] = (struct rfs_operand){ src_b, b_off * 4, RFS_KDT_F32, b_numel, scale };
	return c;
}

static int setup(void **state)
{
	size_t i, pos = 0;
	float v;

	(void)state;
	A = malloc((N1 + N2) * sizeof(float));
	B = malloc((N1 + D2) * sizeof(float));
	for (i = 0; i < N1 + N2; i++)
		A[i] = (float)i * 0.37f - 100.0f;
	for (i = 0; i < N1 + D2; i++)
		B[i] = (float)(i % 17) * 0.011f + 0.5f;
	for (i = 0; i < sizeof(text); i++)
		text[i] = (unsigned char)(i * 7 + 1);
	fd_a = tmpfile_with(path_a, A, (N1 + N2) * sizeof(float));
	fd_b = tmpfile_with(path_b, B, (N1 + D2) * sizeof(float));
	fd_t = tmpfile_with(path_t, text, sizeof(text));
	if (fd_a < 0 || fd_b < 0 || fd_t < 0)
		return -1;
	if (local_src(fd_a, path_a, &src_a) || local_src(fd_b, path_b, &src_b) ||
	    local_src(fd_t, path_t, &src_t))
		return -1;
	c1 = comp("t1", N1, 0, 0, N1, 1.0f);
	c2 = comp("t2", N2, N1, N1, D2, 0.5f);
	size = (sizeof(head) - 1) + 40 + N1 * 4 + N2 * 4 + (sizeof(tail) - 1);
	expect = malloc(size);
	/* the expected bytes, computed here */
	memcpy(expect, head, sizeof(head) - 1);
	pos = sizeof(head) - 1;
	memcpy(expect + pos, text + 5, 40);
	pos += 40;
	for (i = 0; i < N1; i++, pos += 4) {
		v = A[i] + B[i];
		memcpy(expect + pos, &v, 4);
	}
	for (i = 0; i < N2; i++, pos += 4) {
		float d = i < D2 ? 0.5f * B[N1 + i] : 0.0f;

		v = A[N1 + i] + d;
		memcpy(expect + pos, &v, 4);
	}
	memcpy(expect + pos, tail, sizeof(tail) - 1);
	/* the same file as segments */
	pos = 0;
	segs[0] = (struct rfs_seg){ .kind = RFS_SEG_LIT, .off = 0, .len = sizeof(head) - 1, .lit = head };
	pos += segs[0].len;
	segs[1] = (struct rfs_seg){ .kind = RFS_SEG_FILE, .off = pos, .len = 40, .src = src_t,
				    .src_off = 5 };
	pos += 40;
	segs[2] = (struct rfs_seg){ .kind = RFS_SEG_COMP, .off = pos, .len = N1 * 4, .comp = c1 };
	pos += N1 * 4;
	segs[3] = (struct rfs_seg){ .kind = RFS_SEG_COMP, .off = pos, .len = N2 * 4, .comp = c2 };
	pos += N2 * 4;
	segs[4] = (struct rfs_seg){ .kind = RFS_SEG_LIT, .off = pos, .len = sizeof(tail) - 1, .lit = tail };
	vf.name = "hand.safetensors";
	vf.size = size;
	vf.nseg = 5;
	vf.segs = segs;
	vf.ino = 2;
	vf.mode = 0444;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	rfs_bsrc_close(src_a);
	rfs_bsrc_close(src_b);
	rfs_bsrc_close(src_t);
	unlink(path_a);
	unlink(path_b);
	unlink(path_t);
	free(A);
	free(B);
	free(expect);
	free(c1);
	free(c2);
	return 0;
}

/* Reads every range of lengths @lens at offsets around every edge. */
static void read_all_edges(const struct rfs_reader *rd)
{
	static const size_t lens[] = { 1, 2, 3, 4, 5, 7, 64, 999, 4001, 1 << 20 };
	uint64_t edges[16];
	size_t ne = 0, i, j;
	int d;
	unsigned char *buf = malloc(size + 16);

	for (i = 0; i < vf.nseg; i++)
		edges[ne++] = segs[i].off;
	edges[ne++] = segs[2].off + 4 * 500 + 1; /* inside a tensor, off an element edge */
	edges[ne++] = size;
	for (i = 0; i < ne; i++)
		for (d = -6; d <= 6; d++) {
			int64_t off = (int64_t)edges[i] + d;

			if (off < 0)
				continue;
			for (j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
				struct rfs_err err = { 0 };
				size_t want = (uint64_t)off >= size ? 0
					      : lens[j] < size - (size_t)off ? lens[j] : size - (size_t)off;
				ssize_t r;

				memset(buf, 0xEE, size + 16);
				r = rfs_vfile_read(&vf, buf, lens[j], (uint64_t)off, rd, &err);
				if (r != (ssize_t)want)
					fail_msg("read of %zu at %lld: %zd, want %zu (%s)", lens[j],
						 (long long)off, r, want, err.msg);
				if (memcmp(buf, expect + off, want))
					fail_msg("read of %zu at %lld: wrong bytes", lens[j], (long long)off);
				if (buf[want] != 0xEE)
					fail_msg("read of %zu at %lld: wrote past the count", lens[j],
						 (long long)off);
			}
		}
	free(buf);
}

static void test_reads(void **state)
{
	struct rfs_err err = { 0 };
	struct rfs_backend *be = rfs_backend_new(RFS_BACKEND_CPU, &err);
	struct rfs_cache *cache;
	struct rfs_reader rd = { be, NULL };
	int pass;

	(void)state;
	assert_non_null(be);
	/* pass 0: pread (no guard yet); pass 1: mapped windows */
	for (pass = 0; pass < 2; pass++) {
		if (pass == 1)
			assert_int_equal(rfs_busguard_install(), 0);
		rd.cache = NULL;
		read_all_edges(&rd);
		cache = rfs_cache_new(8 << 20, 2, 8);
		assert_non_null(cache);
		rd.cache = cache;
		read_all_edges(&rd);
		read_all_edges(&rd); /* again: from cached blocks */
		rfs_cache_free(cache);
		cache = rfs_cache_new(0, 0, 0); /* budget 0: never caches */
		rd.cache = cache;
		read_all_edges(&rd);
		rfs_cache_free(cache);
	}
	rfs_backend_free(be);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reads),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
