/*
 * test_bsrc.c - the byte-source seam (core/bsrc.h): compute and virtual-
 * file reads do not care where bytes come from.  A fake in-memory source
 * without map (as a remote one will be) and local files holding the same
 * bytes back the same hand-built virtual file (a literal, a passthrough
 * range, a large computed tensor that local sources map, small ones that
 * are staged, one that mixes both kinds of source); every read through
 * the memory sources must give the bytes read through the files and the
 * bytes computed here, with and without the block cache, the SIGBUS guard
 * installed or not.  Then the memory source's change verdict and a source
 * that ends early fail reads naming it.
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

#include "core/bsrc.h"
#include "core/busguard.h"
#include "core/cache.h"
#include "core/plan_int.h"
#include "core/read.h"
#include "kernels/backend.h"

/* ---- a fake source: bytes in memory, no map ------------------------------ */

struct mem {
	struct rfs_bsrc b;
	const char *data;
	size_t have;     /* bytes really there (b.size may claim more) */
	int changed;
	unsigned long preads;
};

static enum rfs_code mem_pread(struct rfs_bsrc *s, void *buf, size_t len, uint64_t off,
			       struct rfs_err *err)
{
	struct mem *m = (struct mem *)s;

	__atomic_fetch_add(&m->preads, 1, __ATOMIC_RELAXED);
	if (off > m->have || len > m->have - off)
		return rfs_errf(err, RFS_E_IO, "%s: ends before %llu", s->name,
				(unsigned long long)(off + len));
	memcpy(buf, m->data + off, len);
	return 0;
}

static enum rfs_code mem_check(struct rfs_bsrc *s, int force, struct rfs_err *err)
{
	(void)force;
	if (((struct mem *)s)->changed)
		return rfs_errf(err, RFS_E_CHANGED, "%s changed", s->name);
	return 0;
}

static void mem_close(struct rfs_bsrc *s)
{
	free(s);
}

static const struct rfs_bsrc_ops mem_ops = {
	.pread = mem_pread, .map = NULL, .unmap = NULL, .check = mem_check, .close = mem_close,
};

static struct rfs_bsrc *mem_new(const char *name, const void *data, size_t len)
{
	struct mem *m = calloc(1, sizeof(*m));

	m->b.ops = &mem_ops;
	m->b.size = len;
	m->b.id = (struct rfs_bsrc_id){ .ino = 1, .size = len };
	m->b.name = name;
	m->b.mode = 0644;
	m->data = data;
	m->have = len;
	return &m->b;
}

/* ---- the virtual file ----------------------------------------------------- */

#define NBIG 20000  /* elements of the big tensor: 80 KB, mapped when local */
#define NSMALL 100  /* of each small one: staged */
#define NA (NBIG + 3 * NSMALL)

static float *A, *B;
static unsigned char text[256];
static const char head[] = "HEAD";
static char path_a[64], path_b[64], path_t[64];

struct side { /* one vfile and its sources */
	struct rfs_bsrc *a, *b, *t;
	struct rfs_comp *comp[4];
	struct rfs_seg segs[8];
	struct rfs_bsrc *srcs[3];
	struct rfs_vfile vf;
};

static struct side mem, loc;
static unsigned char *expect;
static size_t size;

static struct rfs_comp *comp(const char *name, struct rfs_bsrc *a, uint64_t a_el,
			     struct rfs_bsrc *b, uint64_t b_el, uint64_t numel, float scale)
{
	struct rfs_comp *c = calloc(1, sizeof(*c) + 2 * sizeof(c->ops[0]));

	c->name = name;
	c->out_dtype = RFS_KDT_F32;
	c->numel = numel;
	c->nops = 2;
	c->ops[0] = (struct rfs_operand){ a, a_el * 4, RFS_KDT_F32, numel, 1.0f };
	c->ops[1] = (struct rfs_operand){ b, b_el * 4, RFS_KDT_F32, numel, scale };
	return c;
}

static void build(struct side *s, struct rfs_bsrc *mix_b)
{
	uint64_t pos = 0;
	unsigned i, n = 0;

	s->comp[0] = comp("big", s->a, 0, s->b, 0, NBIG, 1.0f);
	s->comp[1] = comp("s1", s->a, NBIG, s->b, NBIG, NSMALL, 0.5f);
	s->comp[2] = comp("s2", s->a, NBIG + NSMALL, s->b, NBIG + NSMALL, NSMALL, 1.0f);
	/* operand b from the other kind of source: mixed in one tensor */
	s->comp[3] = comp("mix", s->a, NBIG + 2 * NSMALL, mix_b, NBIG + 2 * NSMALL, NSMALL, 0.5f);
	s->segs[n++] = (struct rfs_seg){ .kind = RFS_SEG_LIT, .off = pos, .len = 4, .lit = head };
	pos += 4;
	s->segs[n++] = (struct rfs_seg){ .kind = RFS_SEG_FILE, .off = pos, .len = 201, .src = s->t,
					 .src_off = 3 };
	pos += 201;
	for (i = 0; i < 4; i++) {
		s->segs[n] = (struct rfs_seg){ .kind = RFS_SEG_COMP, .off = pos,
					       .len = s->comp[i]->numel * 4, .comp = s->comp[i] };
		pos += s->segs[n++].len;
	}
	s->srcs[0] = s->a;
	s->srcs[1] = s->b;
	s->srcs[2] = s->t;
	s->vf = (struct rfs_vfile){ .name = "seam.safetensors", .size = pos, .ino = 2, .mode = 0444,
				    .nseg = n, .segs = s->segs, .nsrcs = 3, .srcs = s->srcs };
}

static struct rfs_bsrc *local(char *path, const void *data, size_t len)
{
	struct rfs_err err = { 0 };
	struct rfs_bsrc *s = NULL;
	struct stat st;
	int fd;

	snprintf(path, 64, "/tmp/residfs-test-bsrc-XXXXXX");
	fd = mkstemp(path);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len || fstat(fd, &st) ||
	    rfs_bsrc_local_fd(fd, &st, path, &s, &err))
		return NULL;
	return s;
}

static int setup(void **state)
{
	size_t i, pos;
	float v;

	(void)state;
	A = malloc(NA * sizeof(float));
	B = malloc(NA * sizeof(float));
	for (i = 0; i < NA; i++) {
		A[i] = (float)i * 0.37f - 1000.0f;
		B[i] = (float)(i % 29) * 0.013f + 0.25f;
	}
	for (i = 0; i < sizeof(text); i++)
		text[i] = (unsigned char)(i * 11 + 3);
	mem.a = mem_new("mem:A", A, NA * sizeof(float));
	mem.b = mem_new("mem:B", B, NA * sizeof(float));
	mem.t = mem_new("mem:T", text, sizeof(text));
	loc.a = local(path_a, A, NA * sizeof(float));
	loc.b = local(path_b, B, NA * sizeof(float));
	loc.t = local(path_t, text, sizeof(text));
	if (!loc.a || !loc.b || !loc.t)
		return -1;
	build(&mem, loc.b);
	build(&loc, mem.b);
	size = mem.vf.size;
	expect = malloc(size);
	memcpy(expect, head, 4);
	memcpy(expect + 4, text + 3, 201);
	pos = 205;
	for (i = 0; i < NA; i++, pos += 4) {
		int half = i >= NBIG && ((i - NBIG) / NSMALL) % 2 == 0;

		v = A[i] + (half ? 0.5f * B[i] : B[i]);
		memcpy(expect + pos, &v, 4);
	}
	return pos == size ? 0 : -1;
}

static int teardown(void **state)
{
	unsigned i;

	(void)state;
	for (i = 0; i < 4; i++) {
		free(mem.comp[i]);
		free(loc.comp[i]);
	}
	rfs_bsrc_close(mem.a);
	rfs_bsrc_close(mem.b);
	rfs_bsrc_close(mem.t);
	rfs_bsrc_close(loc.a);
	rfs_bsrc_close(loc.b);
	rfs_bsrc_close(loc.t);
	unlink(path_a);
	unlink(path_b);
	unlink(path_t);
	free(A);
	free(B);
	free(expect);
	return 0;
}

/* Reads ranges of @s->vf around every segment edge and compares. */
static void read_ranges(struct side *s, const struct rfs_reader *rd)
{
	static const size_t lens[] = { 1, 3, 4, 5, 255, 4096, 70001, 1 << 20 };
	unsigned char *buf = malloc(size + 16);
	size_t i, j;
	int d;

	for (i = 0; i <= s->vf.nseg; i++)
		for (d = -5; d <= 5; d++) {
			int64_t off = (int64_t)(i < s->vf.nseg ? s->segs[i].off : size) + d;

			if (off < 0)
				continue;
			for (j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
				struct rfs_err err = { 0 };
				size_t want = (uint64_t)off >= size ? 0
					      : lens[j] < size - (size_t)off ? lens[j] : size - (size_t)off;
				ssize_t r = rfs_vfile_read(&s->vf, buf, lens[j], (uint64_t)off, rd, &err);

				if (r != (ssize_t)want)
					fail_msg("%s: read of %zu at %lld: %zd, want %zu (%s)",
						 s->a->name, lens[j], (long long)off, r, want, err.msg);
				if (memcmp(buf, expect + off, want))
					fail_msg("%s: read of %zu at %lld: wrong bytes", s->a->name,
						 lens[j], (long long)off);
			}
		}
	free(buf);
}

/* rfs_comp_compute straight, on both sides, against each other and @expect. */
static void compute_ranges(const struct rfs_reader *rd)
{
	unsigned char *x = malloc(NBIG * 4), *y = malloc(NBIG * 4);
	unsigned i;

	for (i = 0; i < 4; i++) {
		uint64_t a, len = mem.comp[i]->numel * 4;

		for (a = 0; a < len; a += len / 7 + 3) {
			uint64_t n = len - a < 5003 ? len - a : 5003;
			struct rfs_err err = { 0 };

			assert_int_equal(rfs_comp_compute(mem.comp[i], x, a, n, rd, &err), 0);
			assert_int_equal(rfs_comp_compute(loc.comp[i], y, a, n, rd, &err), 0);
			assert_memory_equal(x, y, n);
			assert_memory_equal(x, expect + mem.segs[2 + i].off + a, n);
		}
	}
	free(x);
	free(y);
}

static void test_same_bytes(void **state)
{
	struct rfs_err err = { 0 };
	struct rfs_backend *be = rfs_backend_new(RFS_BACKEND_CPU, &err);
	struct rfs_reader rd = { be, NULL };
	int pass;

	(void)state;
	assert_non_null(be);
	assert_null(mem.a->ops->map); /* like a remote source */
	assert_non_null(loc.a->ops->map);
	assert_int_equal(rfs_bsrc_fd(mem.a), -1);
	assert_true(rfs_bsrc_fd(loc.a) >= 0);
	/* pass 0: everything with pread; pass 1: the guard installed, local
	 * operands mapped or staged, memory ones staged or read */
	for (pass = 0; pass < 2; pass++) {
		struct rfs_cache *cache;

		if (pass == 1)
			assert_int_equal(rfs_busguard_install(), 0);
		rd.cache = NULL;
		compute_ranges(&rd);
		read_ranges(&mem, &rd);
		read_ranges(&loc, &rd);
		cache = rfs_cache_new(8 << 20, 2, 8);
		assert_non_null(cache);
		rd.cache = cache;
		read_ranges(&mem, &rd);
		read_ranges(&loc, &rd);
		rfs_cache_free(cache);
	}
	assert_true(((struct mem *)mem.a)->preads > 0);
	rfs_backend_free(be);
}

static void test_changed_and_short(void **state)
{
	struct rfs_err err = { 0 };
	struct rfs_backend *be = rfs_backend_new(RFS_BACKEND_CPU, &err);
	struct rfs_reader rd = { be, NULL };
	struct mem *mb = (struct mem *)mem.b, *mt = (struct mem *)mem.t;
	struct rfs_bsrc *which = NULL;
	char buf[64];

	(void)state;
	assert_non_null(be);
	/* a change of any source fails the read before any byte is read */
	mb->changed = 1;
	assert_int_equal(rfs_vfile_read(&mem.vf, buf, sizeof(buf), 0, &rd, &err), RFS_E_CHANGED);
	assert_non_null(strstr(err.msg, "mem:B"));
	assert_int_equal(rfs_vfile_check(&mem.vf, 1, &which, &err), RFS_E_CHANGED);
	assert_ptr_equal(which, mem.b);
	assert_int_equal(rfs_bsrc_first_report(mem.b), 1);
	assert_int_equal(rfs_bsrc_first_report(mem.b), 0);
	mb->changed = 0;
	/* a source that ends before its size: the read fails, naming it */
	mt->have = 100;
	memset(&err, 0, sizeof(err));
	assert_int_equal(rfs_vfile_read(&mem.vf, buf, sizeof(buf), 150, &rd, &err), RFS_E_IO);
	assert_non_null(strstr(err.msg, "mem:T"));
	mt->have = sizeof(text);
	assert_int_equal(rfs_vfile_read(&mem.vf, buf, sizeof(buf), 150, &rd, &err), (ssize_t)sizeof(buf));
	assert_memory_equal(buf, expect + 150, sizeof(buf));
	rfs_backend_free(be);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_bytes),
		cmocka_unit_test(test_changed_and_short),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
