/*
 * test_cache.c - the block cache (cache.h) with a fake fill: single
 * flight, LRU eviction under a budget, a failing fill, prefetch through
 * a next function and its half-budget rule, budget 0, "no room" (the
 * reader fills its own buffer), whole-block reads, and keys that name
 * exactly the bytes of a block.
 *
 * The fake objects' bytes follow from (object, offset), so any byte read
 * back can be checked; a fill can be held at a gate, so that other
 * threads find its block being filled, or made to fail.
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

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "core/cache.h"

#define B RFS_CACHE_BLOCK
#define MAXBLK 16
#define NOBJ 8

/* ---------------------------------------------------------------- fakes */

struct obj {
	unsigned id;
	uint64_t nblocks;            /* for fake_next */
	int gated;                   /* fills wait at the gate while it is closed */
	atomic_int fail;             /* this many next fills fail */
	atomic_uint fills;           /* fills of any range */
	atomic_uint fills_at[MAXBLK]; /* fills of ranges starting in block k */
};

static struct obj objs[NOBJ];
static unsigned nobjs;           /* fake_next walks objs[0..nobjs) */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static int gate_closed;

static unsigned char byte_at(const struct obj *o, uint64_t p)
{
	uint64_t x = (p + 1) * 0x9E3779B97F4A7C15ull + o->id * 0xC2B2AE3D27D4EB4Full;

	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ull;
	return (unsigned char)(x >> 56);
}

static void gate_set(int closed)
{
	pthread_mutex_lock(&gate_lock);
	gate_closed = closed;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
}

static int fake_fill(void *arg, const struct rfs_cache_key *key, void *dstv,
		     struct rfs_err *err)
{
	struct obj *o = (struct obj *)key->obj; /* the test's own, writable */
	unsigned char *dst = dstv;
	uint64_t i;

	(void)arg;
	atomic_fetch_add(&o->fills, 1);
	if (key->start / B < MAXBLK)
		atomic_fetch_add(&o->fills_at[key->start / B], 1);
	if (o->gated) {
		pthread_mutex_lock(&gate_lock);
		while (gate_closed)
			pthread_cond_wait(&gate_cond, &gate_lock);
		pthread_mutex_unlock(&gate_lock);
	}
	if (atomic_fetch_sub(&o->fail, 1) > 0)
		return rfs_errf(err, RFS_E_IO, "object %u: fill failed", o->id);
	atomic_fetch_add(&o->fail, 1);
	for (i = 0; i < key->len; i++)
		dst[i] = byte_at(o, key->start + i);
	return 0;
}

static struct rfs_cache_key blk(struct obj *o, uint64_t k)
{
	return (struct rfs_cache_key){ o, k * B, B };
}

/* The block after (object pos->a, block pos->b): the object's next block,
 * then block 0 of the next object. */
static int fake_next(void *arg, struct rfs_cache_pos *pos, struct rfs_cache_key *key)
{
	(void)arg;
	if (pos->b + 1 < objs[pos->a].nblocks) {
		pos->b++;
	} else {
		if (pos->a + 1 >= nobjs)
			return -1;
		pos->a++;
		pos->b = 0;
	}
	*key = blk(&objs[pos->a], pos->b);
	return 0;
}

static const struct rfs_cache_src src = { fake_fill, fake_next, NULL };
static const struct rfs_cache_src src_nonext = { fake_fill, NULL, NULL };

static int setup(void **state)
{
	unsigned i, k;

	(void)state;
	for (i = 0; i < NOBJ; i++) {
		objs[i].id = i + 1;
		objs[i].nblocks = 1;
		objs[i].gated = 0;
		atomic_store(&objs[i].fail, 0);
		atomic_store(&objs[i].fills, 0);
		for (k = 0; k < MAXBLK; k++)
			atomic_store(&objs[i].fills_at[k], 0);
	}
	nobjs = 1;
	gate_set(0);
	return 0;
}

/* ---------------------------------------------------------------- helpers */

static void check_bytes(const struct obj *o, uint64_t start, const unsigned char *p, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < n; i++)
		if (p[i] != byte_at(o, start + i))
			fail_msg("object %u: byte %llu is %u, not %u", o->id,
				 (unsigned long long)(start + i), p[i], byte_at(o, start + i));
}

/* Reads [at, at + n) of block @key at position @pos and checks the bytes. */
static void rd_pos(struct rfs_cache *c, const struct rfs_cache_src *s, struct rfs_cache_key key,
		   struct rfs_cache_pos pos, uint64_t at, uint64_t n)
{
	unsigned char *buf = malloc(n ? n : 1);
	struct rfs_err err = { 0 };

	assert_non_null(buf);
	memset(buf, 0xAA, n);
	assert_int_equal(rfs_cache_read(c, s, &key, &pos, buf, at, n, &err), 0);
	check_bytes(key.obj, key.start + at, buf, n);
	free(buf);
}

static void rd(struct rfs_cache *c, struct rfs_cache_key key, uint64_t at, uint64_t n)
{
	rd_pos(c, &src_nonext, key, (struct rfs_cache_pos){ 0, 0 }, at, n);
}

/* take_whole: 1 (and the bytes checked) or 0. */
static int take(struct rfs_cache *c, struct rfs_cache_key key)
{
	unsigned char *buf = malloc(key.len);
	int r;

	assert_non_null(buf);
	r = rfs_cache_take_whole(c, &key, buf) == RFS_TAKE_COPIED;
	if (r)
		check_bytes(key.obj, key.start, buf, key.len);
	free(buf);
	return r;
}

static struct rfs_cache_stats stats(struct rfs_cache *c)
{
	struct rfs_cache_stats s;

	rfs_cache_get_stats(c, &s);
	return s;
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { 0, (long)ms * 1000000 };

	nanosleep(&ts, NULL);
}

/* Waits up to 10 s for a counter to reach @want; fails otherwise. */
#define WAIT_FOR(expr, want)                                                                 \
	do {                                                                                 \
		uint64_t t_end_ = ms_now() + 10000;                                          \
		while ((uint64_t)(expr) < (uint64_t)(want) && ms_now() < t_end_)             \
			sleep_ms(1);                                                         \
		if ((uint64_t)(expr) < (uint64_t)(want))                                     \
			fail_msg("timed out waiting for %s >= %llu (is %llu)", #expr,        \
				 (unsigned long long)(want), (unsigned long long)(expr));    \
	} while (0)

/* A thread reading part of one block. */
struct reader {
	pthread_t th;
	struct rfs_cache *c;
	struct rfs_cache_key key;
	uint64_t at, n;
	int ret;
	int bytes_ok;
	struct rfs_err err;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	unsigned char *buf = malloc(r->n);
	struct rfs_cache_pos pos = { 0, 0 };
	uint64_t i;

	r->bytes_ok = 0;
	if (!buf) {
		r->ret = RFS_E_NOMEM;
		return NULL;
	}
	r->ret = rfs_cache_read(r->c, &src_nonext, &r->key, &pos, buf, r->at, r->n, &r->err);
	if (!r->ret) {
		r->bytes_ok = 1;
		for (i = 0; i < r->n; i++)
			if (buf[i] != byte_at(r->key.obj, r->key.start + r->at + i))
				r->bytes_ok = 0;
	}
	free(buf);
	return NULL;
}

static void reader_start(struct reader *r, struct rfs_cache *c, struct rfs_cache_key key,
			 uint64_t at, uint64_t n)
{
	memset(r, 0, sizeof(*r));
	r->c = c;
	r->key = key;
	r->at = at;
	r->n = n;
	assert_int_equal(pthread_create(&r->th, NULL, reader_main, r), 0);
}

/* ---------------------------------------------------------------- tests */

/* Keys name exactly the bytes held: same object and start, other length
 * (or other start) is another block. */
static void test_exact_keys(void **state)
{
	struct rfs_cache *c = rfs_cache_new(16 * (uint64_t)B, 0, 0);
	struct obj *o = &objs[0];
	struct rfs_cache_key a = { o, 0, 4096 }, b = { o, 0, 8192 }, d = { o, 4096, 4096 };
	struct rfs_cache_stats s;

	(void)state;
	assert_non_null(c);
	rd(c, a, 0, 100);
	rd(c, b, 4096, 4096); /* served from a's 4096 bytes, it would be wrong */
	rd(c, d, 10, 20);
	assert_int_equal(atomic_load(&o->fills), 3);
	s = stats(c);
	assert_int_equal(s.misses, 3);
	assert_int_equal(s.hits, 0);
	assert_int_equal(s.used, 4096 + 8192 + 4096);
	rd(c, a, 1, 4095);
	rd(c, b, 0, 8191);
	rd(c, d, 0, 1);
	assert_int_equal(atomic_load(&o->fills), 3);
	assert_int_equal(stats(c).hits, 3);
	/* another object at the same place is another block too */
	rd(c, (struct rfs_cache_key){ &objs[1], 0, 4096 }, 0, 10);
	assert_int_equal(atomic_load(&objs[1].fills), 1);
	rfs_cache_free(c);
}

/* N readers of one block: one fill, the others wait for it and get its
 * bytes. */
static void test_single_flight(void **state)
{
	enum { N = 6 };
	struct rfs_cache *c = rfs_cache_new(16 * (uint64_t)B, 0, 0);
	struct obj *o = &objs[0];
	struct reader r[N];
	struct rfs_cache_stats s;
	unsigned i;

	(void)state;
	assert_non_null(c);
	o->gated = 1;
	gate_set(1);
	for (i = 0; i < N; i++)
		reader_start(&r[i], c, blk(o, 0), 100 + i, 5000);
	WAIT_FOR(atomic_load(&o->fills), 1);
	WAIT_FOR(stats(c).waits, N - 1);
	gate_set(0);
	for (i = 0; i < N; i++) {
		pthread_join(r[i].th, NULL);
		assert_int_equal(r[i].ret, 0);
		assert_true(r[i].bytes_ok);
	}
	assert_int_equal(atomic_load(&o->fills), 1);
	s = stats(c);
	assert_int_equal(s.misses, 1);
	assert_int_equal(s.hits, N - 1);
	assert_int_equal(s.computed_bytes, B);
	assert_int_equal(s.used, B);
	rfs_cache_free(c);
}

/* Least recently used first, and the budget is never exceeded. */
static void test_eviction_lru(void **state)
{
	struct rfs_cache *c = rfs_cache_new(4 * (uint64_t)B, 0, 0);
	struct rfs_cache_stats s;
	unsigned i;

	(void)state;
	assert_non_null(c);
	for (i = 0; i < 4; i++) /* A B C D */
		rd(c, blk(&objs[i], 0), 0, 10);
	assert_int_equal(stats(c).used, 4 * (uint64_t)B);
	rd(c, blk(&objs[0], 0), 5, 10); /* A is used again: B is now the oldest */
	rd(c, blk(&objs[4], 0), 0, 10); /* E: B goes */
	s = stats(c);
	assert_int_equal(s.evictions, 1);
	assert_int_equal(s.used, 4 * (uint64_t)B);
	assert_int_equal(take(c, blk(&objs[1], 0)), 0);
	assert_int_equal(take(c, blk(&objs[0], 0)), 1); /* newest to oldest: E D C A */
	assert_int_equal(take(c, blk(&objs[2], 0)), 1);
	assert_int_equal(take(c, blk(&objs[3], 0)), 1);
	assert_int_equal(take(c, blk(&objs[4], 0)), 1);
	rd(c, blk(&objs[1], 0), 0, 10); /* B again: A, now the oldest, goes */
	assert_int_equal(atomic_load(&objs[1].fills), 2);
	assert_int_equal(take(c, blk(&objs[0], 0)), 0);
	assert_int_equal(take(c, blk(&objs[2], 0)), 1);
	s = stats(c);
	assert_int_equal(s.evictions, 2);
	assert_true(s.used <= s.budget);
	for (i = 0; i < 5; i++)
		assert_int_equal(atomic_load(&objs[i].fills), i == 1 ? 2 : 1);
	rfs_cache_free(c);
}

/* A failed fill returns its error and leaves nothing; a retry fills. */
static void test_failing_fill(void **state)
{
	struct rfs_cache *c = rfs_cache_new(16 * (uint64_t)B, 0, 0);
	struct obj *o = &objs[0];
	struct rfs_cache_key k = blk(o, 0);
	struct rfs_cache_pos pos = { 0, 0 };
	struct rfs_err err = { 0 };
	unsigned char *buf = malloc(B);
	struct reader r[2];

	(void)state;
	assert_non_null(c);
	assert_non_null(buf);
	atomic_store(&o->fail, 1);
	assert_int_equal(rfs_cache_read(c, &src_nonext, &k, &pos, buf, 10, 100, &err), RFS_E_IO);
	assert_int_equal(err.code, RFS_E_IO);
	assert_non_null(strstr(err.msg, "fill failed"));
	assert_int_equal(stats(c).used, 0);
	assert_int_equal(take(c, k), 0);
	rd(c, k, 10, 100);
	assert_int_equal(atomic_load(&o->fills), 2);
	assert_int_equal(stats(c).used, B);
	rd(c, k, 0, 10);
	assert_int_equal(atomic_load(&o->fills), 2);

	/* a whole block filled straight into the reader's buffer fails too */
	atomic_store(&o->fail, 1);
	k = blk(o, 1);
	assert_int_equal(rfs_cache_read(c, &src_nonext, &k, &pos, buf, 0, B, &err), RFS_E_IO);
	assert_int_equal(stats(c).used, B);

	/* a reader waiting on a fill that fails fills the block itself */
	k = blk(o, 2);
	atomic_store(&o->fail, 1);
	o->gated = 1;
	gate_set(1);
	reader_start(&r[0], c, k, 0, 64);
	reader_start(&r[1], c, k, 64, 64);
	WAIT_FOR(stats(c).waits, 1);
	gate_set(0);
	pthread_join(r[0].th, NULL);
	pthread_join(r[1].th, NULL);
	assert_true((r[0].ret == RFS_E_IO && r[1].ret == 0 && r[1].bytes_ok) ||
		    (r[1].ret == RFS_E_IO && r[0].ret == 0 && r[0].bytes_ok));
	assert_int_equal(atomic_load(&o->fills_at[2]), 2);
	assert_int_equal(take(c, k), 1);
	free(buf);
	rfs_cache_free(c);
}

/* Partial reads queue the blocks the next function names; workers fill
 * them; reads then hit. */
static void test_prefetch(void **state)
{
	struct rfs_cache *c = rfs_cache_new(64 * (uint64_t)B, 2, 8);
	struct rfs_cache_stats s;
	unsigned i, k;

	(void)state;
	assert_non_null(c);
	nobjs = 2;
	objs[0].nblocks = 3;
	objs[1].nblocks = 3;
	rd_pos(c, &src, blk(&objs[0], 0), (struct rfs_cache_pos){ 0, 0 }, 0, 4096);
	/* o0: 1 2, then o1: 0 1 2, then the end */
	WAIT_FOR(stats(c).prefetched, 5);
	s = stats(c);
	assert_int_equal(s.misses, 1);
	assert_int_equal(s.prefetched, 5);
	rd_pos(c, &src, blk(&objs[0], 1), (struct rfs_cache_pos){ 0, 1 }, 7, 4096);
	for (i = 0; i < 2; i++)
		for (k = i ? 0 : 2; k < 3; k++)
			assert_int_equal(take(c, blk(&objs[i], k)), 1);
	s = stats(c);
	assert_int_equal(s.prefetch_hits, 5);
	assert_int_equal(s.hits, 5);
	assert_int_equal(s.misses, 1);
	for (i = 0; i < 2; i++)
		for (k = 0; k < 3; k++)
			assert_int_equal(atomic_load(&objs[i].fills_at[k]), 1);
	/* whole-block reads do not prefetch */
	rd_pos(c, &src, blk(&objs[0], 0), (struct rfs_cache_pos){ 0, 0 }, 0, B);
	assert_int_equal(stats(c).prefetched, 5);
	rfs_cache_free(c);
}

/* Blocks made ahead and not read yet (queued included) hold at most half
 * the budget. */
static void test_prefetch_half_budget(void **state)
{
	struct rfs_cache *c = rfs_cache_new(8 * (uint64_t)B, 1, 8);
	struct obj *o = &objs[0];

	(void)state;
	assert_non_null(c);
	o->nblocks = 12;
	rd_pos(c, &src, blk(o, 0), (struct rfs_cache_pos){ 0, 0 }, 0, 10);
	WAIT_FOR(stats(c).prefetched, 4); /* 4 MiB: half of 8 */
	sleep_ms(50);
	assert_int_equal(stats(c).prefetched, 4);
	assert_int_equal(atomic_load(&o->fills_at[5]), 0);
	/* reading block 1 leaves 3 unread: room for one more, block 5 */
	rd_pos(c, &src, blk(o, 1), (struct rfs_cache_pos){ 0, 1 }, 0, 10);
	assert_int_equal(stats(c).prefetch_hits, 1);
	WAIT_FOR(stats(c).prefetched, 5);
	sleep_ms(50);
	assert_int_equal(stats(c).prefetched, 5);
	assert_int_equal(atomic_load(&o->fills_at[5]), 1);
	assert_int_equal(atomic_load(&o->fills_at[6]), 0);
	assert_int_equal(take(c, blk(o, 6)), 0);
	assert_true(stats(c).used <= 8 * (uint64_t)B);
	rfs_cache_free(c);
}

/* Budget 0: nothing is kept, every read fills, nothing is prefetched. */
static void test_budget_zero(void **state)
{
	struct rfs_cache *c = rfs_cache_new(0, 4, 8);
	struct obj *o = &objs[0];
	struct rfs_cache_stats s;
	size_t len = 0;
	char *json;

	(void)state;
	assert_non_null(c);
	o->nblocks = 8;
	rd_pos(c, &src, blk(o, 0), (struct rfs_cache_pos){ 0, 0 }, 0, 10);
	rd_pos(c, &src, blk(o, 0), (struct rfs_cache_pos){ 0, 0 }, 5, 10);
	assert_int_equal(take(c, blk(o, 0)), 0);
	rd(c, blk(o, 0), 0, B);
	sleep_ms(20);
	assert_int_equal(atomic_load(&o->fills), 3);
	s = stats(c);
	assert_int_equal(s.used, 0);
	assert_int_equal(s.hits, 0);
	assert_int_equal(s.prefetched, 0);
	assert_int_equal(s.computed_bytes, 10 + 10 + B);
	json = rfs_cache_stats_json(c, &len);
	assert_non_null(json);
	assert_int_equal(strlen(json), len);
	assert_non_null(strstr(json, "\"cache_budget\": 0,"));
	assert_non_null(strstr(json, "\"block_size\": 1048576}"));
	free(json);
	rfs_cache_free(c);
}

/* No room: a block larger than the budget, or a budget held by blocks
 * being filled, is filled straight into the reader's buffer, not kept. */
static void test_no_room(void **state)
{
	struct rfs_cache *c = rfs_cache_new(B / 2, 0, 0);
	struct reader r;
	struct rfs_cache_stats s;

	(void)state;
	assert_non_null(c);
	rd(c, blk(&objs[0], 0), 0, 100);
	s = stats(c);
	assert_int_equal(s.uncached, 1);
	assert_int_equal(s.used, 0);
	rd(c, (struct rfs_cache_key){ &objs[0], 0, B / 4 }, 0, 100);
	assert_int_equal(stats(c).used, B / 4);
	rfs_cache_free(c);

	c = rfs_cache_new(B, 0, 0);
	assert_non_null(c);
	objs[2].gated = 1;
	gate_set(1);
	reader_start(&r, c, blk(&objs[2], 0), 0, 100); /* holds the whole budget */
	WAIT_FOR(atomic_load(&objs[2].fills), 1);
	rd(c, blk(&objs[3], 0), 0, 100); /* nothing to evict: not kept, no wait */
	rd(c, blk(&objs[3], 0), 0, 100);
	assert_int_equal(atomic_load(&objs[3].fills), 2);
	s = stats(c);
	assert_int_equal(s.uncached, 2);
	assert_int_equal(s.waits, 0);
	gate_set(0);
	pthread_join(r.th, NULL);
	assert_int_equal(r.ret, 0);
	assert_true(r.bytes_ok);
	rd(c, blk(&objs[3], 0), 0, 100); /* the filled block can go now */
	s = stats(c);
	assert_int_equal(s.evictions, 1);
	assert_int_equal(s.uncached, 2);
	assert_int_equal(take(c, blk(&objs[3], 0)), 1);
	rfs_cache_free(c);
}

/* A whole block is served from a ready block, otherwise filled into the
 * reader's buffer and not kept; the counters add up. */
static void test_whole_blocks(void **state)
{
	struct rfs_cache *c = rfs_cache_new(16 * (uint64_t)B, 0, 0);
	struct obj *o = &objs[0];
	struct rfs_cache_stats s;

	(void)state;
	assert_non_null(c);
	rd(c, blk(o, 0), 0, B);
	s = stats(c);
	assert_int_equal(s.used, 0);
	assert_int_equal(s.misses, 1);
	assert_int_equal(take(c, blk(o, 0)), 0);
	rd(c, blk(o, 0), 1, 10); /* partial: kept */
	rd(c, blk(o, 0), 0, B);  /* whole: copied from it */
	assert_int_equal(take(c, blk(o, 0)), 1);
	assert_int_equal(atomic_load(&o->fills), 2);
	s = stats(c);
	assert_int_equal(s.hits, 2);
	assert_int_equal(s.computed_bytes, 2 * (uint64_t)B);
	rfs_cache_count_computed(c, 5, 7);
	rfs_cache_count_request(c, 11);
	s = stats(c);
	assert_int_equal(s.computed_bytes, 2 * (uint64_t)B + 5);
	assert_int_equal(s.requests, 1);
	assert_int_equal(s.bytes, 11);
	rfs_cache_free(c);
	rfs_cache_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_exact_keys, setup),
		cmocka_unit_test_setup(test_single_flight, setup),
		cmocka_unit_test_setup(test_eviction_lru, setup),
		cmocka_unit_test_setup(test_failing_fill, setup),
		cmocka_unit_test_setup(test_prefetch, setup),
		cmocka_unit_test_setup(test_prefetch_half_budget, setup),
		cmocka_unit_test_setup(test_budget_zero, setup),
		cmocka_unit_test_setup(test_no_room, setup),
		cmocka_unit_test_setup(test_whole_blocks, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
