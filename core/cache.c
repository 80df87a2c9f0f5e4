/*
 * Block cache (cache.h).
 *
 * ENTRIES
 *
 * An entry is the block named by its key (obj, start, len): exactly the
 * bytes it holds.  Its state (enum entry_state):
 *
 *   QUEUED   In the table, and its key in the prefetch queue.  No memory
 *            is reserved, no data.  Nobody holds a reference.
 *   FILLING  In the table, not in the LRU.  len bytes are reserved in
 *            ->used and one thread, the filler, writes ->data with the
 *            lock released; it holds the one reference.  Any other thread
 *            that finds it waits on ->done and looks the key up again.
 *   READY    In the table and the LRU; ->data holds the bytes and never
 *            changes.  ->refs counts threads copying out of it (without
 *            the lock); only an entry with no reference is evicted.
 *            ->prefetched: filled by a worker and not read yet.
 *   FAILED   The fill failed: out of the table, its reservation and memory
 *            given back.  Only the filler still points at it; it frees it.
 *
 * Transitions (all under the lock):
 *
 *   absent  -> QUEUED    a partial read queues the blocks after its own
 *                        (prefetch_queue), while the blocks made ahead and
 *                        not read yet hold at most half the budget
 *   absent  -> FILLING   a partial read misses and memory could be reserved
 *                        (acquire); without room nothing is inserted and the
 *                        reader fills its own buffer ("uncached")
 *   QUEUED  -> FILLING   a worker takes the job, or a partial read wants the
 *                        block now (acquire: the job, when it comes, skips it)
 *   QUEUED  -> freed     a whole-block read takes it over (take_ready), or a
 *                        worker or a partial read finds no room for it
 *   FILLING -> READY     the fill succeeded: pushed to the LRU head
 *   FILLING -> FAILED    the fill failed
 *   READY   -> freed     evicted, oldest first, when room is needed
 *                        (make_room); at rfs_cache_free
 *
 * LOCKING
 *
 * One mutex, rfs_cache.lock, protects every field of struct rfs_cache but
 * the ones fixed by rfs_cache_new (budget, depth, nworkers, workers), and
 * every field of every entry but ->key (fixed while the entry exists) and
 * ->data, which the filler writes without the lock while FILLING and
 * anyone holding a reference reads without it once READY (taking the lock
 * to set READY, and to take the reference, orders the two).  Two condition
 * variables go with it: ->done (a fill ended: waiters look again) and
 * ->work (the queue has jobs, or the workers must stop).
 *
 * The lock is the cache's only lock and the innermost: it is never held
 * while the caller's fill or next functions run, while bytes are copied
 * out of a block, or while new block memory is mapped (block_map); block
 * memory beyond the pool is unmapped under it.  The caller's functions may
 * take their own locks, since none is held across a call to them.
 *
 * Memory is reserved (->used) before a block is filled, so the budget is
 * a hard bound on block data; when nothing can be evicted, the reader
 * fills straight into its own buffer instead of waiting for memory.
 */
#include "cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "buf.h"

#define NBUCKETS RFS_TUNE_CACHE_BUCKETS
#define POOL_MAX RFS_TUNE_CACHE_POOL
#define QCAP RFS_TUNE_PREFETCH_QUEUE

enum entry_state { E_QUEUED, E_FILLING, E_READY, E_FAILED };

struct entry {
	struct rfs_cache_key key;  /* exactly the bytes it holds */
	enum entry_state state;
	int refs;
	int prefetched;            /* filled ahead and not read yet */
	char *data;                /* key.len bytes, FILLING and READY */
	struct entry *hnext;
	struct entry *prev, *next; /* LRU, READY entries only; head = newest */
};

/* A block to fill ahead; its entry is found again by key (a reader may
 * have taken it over meanwhile). */
struct job {
	rfs_cache_fill_fn fill;
	void *arg;
	struct rfs_cache_key key;
};

struct rfs_cache {
	pthread_mutex_t lock;
	pthread_cond_t done;   /* a block finished filling */
	pthread_cond_t work;   /* the queue has jobs, or stop */
	uint64_t budget, used;
	struct entry *ht[NBUCKETS];
	struct entry lru;      /* sentinel */
	struct job q[QCAP];
	size_t qhead, qlen;
	unsigned depth, nworkers;
	unsigned unread;       /* prefetched blocks nobody has read yet */
	int stop;
	pthread_t *workers;
	char *pool[POOL_MAX];
	unsigned npool;
	struct rfs_cache_stats st;
};

/* Block buffers come from mmap (so an eviction gives memory back to the
 * system at once) through a small pool of whole blocks (so a busy cache
 * does not fault in and zero fresh pages for every block). */

/* A block from the pool, or NULL (lock held). */
static char *block_take(struct rfs_cache *c, uint32_t len)
{
	return len == RFS_CACHE_BLOCK && c->npool ? c->pool[--c->npool] : NULL;
}

/* Fresh block memory (lock not held). */
static char *block_map(uint32_t len)
{
	void *p = mmap(NULL, len ? len : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Back to the pool, or unmapped (lock held). */
static void block_free(struct rfs_cache *c, char *p, uint32_t len)
{
	if (!p)
		return;
	if (len == RFS_CACHE_BLOCK && c->npool < POOL_MAX) {
		c->pool[c->npool++] = p;
		return;
	}
	munmap(p, len ? len : 1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t bucket(const struct rfs_cache_key *k)
{
	uint64_t h = ((uint64_t)(uintptr_t)k->obj >> 4) * 0x9E3779B97F4A7C15ull ^
		     (k->start * 0xC2B2AE3D27D4EB4Full);

	return (size_t)(h >> 40) & (NBUCKETS - 1);
}

/* The entry of block @k, or NULL (lock held). */
static struct entry *find(struct rfs_cache *c, const struct rfs_cache_key *k)
{
	struct entry *e;

	for (e = c->ht[bucket(k)]; e; e = e->hnext)
		if (e->key.obj == k->obj && e->key.start == k->start && e->key.len == k->len)
			return e;
	return NULL;
}

static void ht_insert(struct rfs_cache *c, struct entry *e)
{
	size_t b = bucket(&e->key);

	e->hnext = c->ht[b];
	c->ht[b] = e;
}

static void ht_remove(struct rfs_cache *c, struct entry *e)
{
	struct entry **p = &c->ht[bucket(&e->key)];

	while (*p && *p != e)
		p = &(*p)->hnext;
	if (*p)
		*p = e->hnext;
}

static void lru_unlink(struct entry *e)
{
	if (e->prev) {
		e->prev->next = e->next;
		e->next->prev = e->prev;
		e->prev = e->next = NULL;
	}
}

static void lru_push(struct rfs_cache *c, struct entry *e)
{
	e->next = c->lru.next;
	e->prev = &c->lru;
	c->lru.next->prev = e;
	c->lru.next = e;
}

/* Frees READY blocks, oldest first, until @need more bytes fit.  0 or -1. */
static int make_room(struct rfs_cache *c, uint64_t need)
{
	struct entry *e = c->lru.prev;

	if (need > c->budget)
		return -1;
	while (c->used + need > c->budget && e != &c->lru) {
		struct entry *prev = e->prev;

		if (e->refs == 0) {
			lru_unlink(e);
			ht_remove(c, e);
			c->used -= e->key.len;
			c->st.evictions++;
			if (e->prefetched)
				c->unread--;
			block_free(c, e->data, e->key.len);
			free(e);
		}
		e = prev;
	}
	return c->used + need <= c->budget ? 0 : -1;
}

/*
 * Fills entry @e (FILLING, reserved, referenced by the caller) with the
 * lock released; on return the lock is held again and @e is READY (0) or
 * FAILED (the fill's error: the caller frees @e).
 */
static int fill_block(struct rfs_cache *c, struct entry *e, rfs_cache_fill_fn fill, void *arg,
		      struct rfs_err *err)
{
	struct rfs_cache_key key = e->key;
	uint64_t t0;
	int ret;

	e->data = block_take(c, key.len);
	pthread_mutex_unlock(&c->lock);
	if (!e->data)
		e->data = block_map(key.len);
	t0 = now_ns();
	ret = e->data ? fill(arg, &key, e->data, err) : rfs_errf(err, RFS_E_NOMEM, "out of memory");
	t0 = now_ns() - t0;
	pthread_mutex_lock(&c->lock);
	c->st.compute_ns += t0;
	if (ret) {
		ht_remove(c, e);
		c->used -= key.len;
		block_free(c, e->data, key.len);
		e->data = NULL;
		e->state = E_FAILED;
	} else {
		c->st.computed_bytes += key.len;
		e->state = E_READY;
		lru_push(c, e);
	}
	pthread_cond_broadcast(&c->done);
	return ret;
}

/* The keys of up to c->depth blocks after @pos, into @keys; their count.
 * Lock not held: the caller's next function runs here. */
static unsigned prefetch_plan(const struct rfs_cache *c, const struct rfs_cache_src *src,
			      const struct rfs_cache_pos *pos, struct rfs_cache_key *keys)
{
	struct rfs_cache_pos p = *pos;
	unsigned n = 0;

	if (!c->nworkers || !src->next)
		return 0;
	while (n < c->depth && !src->next(src->arg, &p, &keys[n]))
		n++;
	return n;
}

/* Queues the blocks @keys[0..n) that are not in the table yet.  Lock held. */
static void prefetch_queue(struct rfs_cache *c, const struct rfs_cache_src *src,
			   const struct rfs_cache_key *keys, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		struct entry *e;

		if (find(c, &keys[i]))
			continue;
		/* blocks filled ahead (queued or not read yet) may take half the
		 * budget; the LRU makes room for them like for any other block */
		if (c->qlen >= QCAP ||
		    (uint64_t)(c->unread + c->qlen + 1) * RFS_CACHE_BLOCK > c->budget / 2)
			return;
		e = calloc(1, sizeof(*e));
		if (!e)
			return;
		e->key = keys[i];
		e->state = E_QUEUED;
		ht_insert(c, e);
		c->q[(c->qhead + c->qlen) % QCAP] = (struct job){ src->fill, src->arg, keys[i] };
		c->qlen++;
		pthread_cond_signal(&c->work);
	}
}

static void *worker(void *arg)
{
	struct rfs_cache *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		struct rfs_err err = { 0 };
		struct entry *e;
		struct job j;

		while (!c->stop && !c->qlen)
			pthread_cond_wait(&c->work, &c->lock);
		if (c->stop)
			break;
		j = c->q[c->qhead];
		c->qhead = (c->qhead + 1) % QCAP;
		c->qlen--;
		e = find(c, &j.key);
		if (!e || e->state != E_QUEUED)
			continue; /* a reader took it */
		if (make_room(c, e->key.len)) {
			ht_remove(c, e);
			free(e);
			continue;
		}
		c->used += e->key.len;
		e->state = E_FILLING;
		e->refs = 1;
		if (fill_block(c, e, j.fill, j.arg, &err)) {
			free(e);
			continue;
		}
		e->refs = 0;
		e->prefetched = 1;
		c->unread++;
		c->st.prefetched++;
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

struct rfs_cache *rfs_cache_new(uint64_t budget, unsigned workers, unsigned depth)
{
	struct rfs_cache *c = calloc(1, sizeof(*c));
	unsigned i;

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->done, NULL);
	pthread_cond_init(&c->work, NULL);
	c->budget = budget;
	c->st.budget = budget;
	c->lru.next = c->lru.prev = &c->lru;
	c->depth = depth < RFS_CACHE_MAX_DEPTH ? depth : RFS_CACHE_MAX_DEPTH;
	if (budget < 4 * (uint64_t)RFS_CACHE_BLOCK)
		workers = 0; /* prefetch needs room to work ahead */
	c->workers = workers ? calloc(workers, sizeof(*c->workers)) : NULL;
	for (i = 0; c->workers && i < workers; i++) {
		if (pthread_create(&c->workers[i], NULL, worker, c))
			break;
		c->nworkers++;
	}
	return c;
}

void rfs_cache_free(struct rfs_cache *c)
{
	unsigned i;
	size_t b;

	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stop = 1;
	pthread_cond_broadcast(&c->work);
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < c->nworkers; i++)
		pthread_join(c->workers[i], NULL);
	free(c->workers);
	for (b = 0; b < NBUCKETS; b++) {
		struct entry *e = c->ht[b], *n;

		for (; e; e = n) {
			n = e->hnext;
			if (e->data)
				munmap(e->data, e->key.len ? e->key.len : 1);
			free(e);
		}
	}
	while (c->npool)
		munmap(c->pool[--c->npool], RFS_CACHE_BLOCK);
	pthread_cond_destroy(&c->work);
	pthread_cond_destroy(&c->done);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Finds block @k, waiting while it is being filled.  Lock held. */
static struct entry *find_settled(struct rfs_cache *c, const struct rfs_cache_key *k)
{
	struct entry *e;

	while ((e = find(c, k)) && e->state == E_FILLING) {
		c->st.waits++;
		pthread_cond_wait(&c->done, &c->lock);
	}
	return e;
}

/* A hit on READY block @e: referenced for the caller, newest in the LRU. */
static struct entry *take_hit(struct rfs_cache *c, struct entry *e)
{
	e->refs++;
	if (e->prefetched) {
		e->prefetched = 0;
		c->unread--;
		c->st.prefetch_hits++;
	}
	c->st.hits++;
	lru_unlink(e);
	lru_push(c, e);
	return e;
}

/* Takes block @k if it is READY (prefetched, say) or being filled;
 * otherwise NULL (a queued one is taken off the queue).  Never fills. */
static struct entry *take_ready(struct rfs_cache *c, const struct rfs_cache_key *k)
{
	struct entry *e, *out = NULL;

	pthread_mutex_lock(&c->lock);
	e = find_settled(c, k);
	if (e && e->state == E_READY) {
		out = take_hit(c, e);
	} else if (e && e->state == E_QUEUED) {
		ht_remove(c, e); /* the reader fills it now; the queue skips it */
		free(e);
	}
	if (!out)
		c->st.misses++;
	pthread_mutex_unlock(&c->lock);
	return out;
}

/* Finds block @k READY and referenced (*out), or fills it.  *out NULL
 * means: no room, fill it yourself without caching. */
static int acquire(struct rfs_cache *c, const struct rfs_cache_src *src,
		   const struct rfs_cache_key *k, struct entry **out, struct rfs_err *err)
{
	struct entry *e;
	int ret;

	*out = NULL;
	pthread_mutex_lock(&c->lock);
	e = find_settled(c, k);
	if (e && e->state == E_READY) {
		*out = take_hit(c, e);
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e) {
			pthread_mutex_unlock(&c->lock);
			return rfs_errf(err, RFS_E_NOMEM, "out of memory");
		}
		e->key = *k;
		ht_insert(c, e);
	}
	/* e is new or QUEUED (taken over from the prefetch queue) */
	if (make_room(c, e->key.len)) {
		ht_remove(c, e);
		free(e);
		c->st.uncached++;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	c->used += e->key.len;
	e->state = E_FILLING;
	e->refs = 1;
	c->st.misses++;
	ret = fill_block(c, e, src->fill, src->arg, err);
	pthread_mutex_unlock(&c->lock);
	if (ret) {
		free(e);
		return ret;
	}
	*out = e;
	return 0;
}

enum rfs_code rfs_cache_read(struct rfs_cache *c, const struct rfs_cache_src *src,
			     const struct rfs_cache_key *key, const struct rfs_cache_pos *pos, void *dstv,
			     uint64_t at, uint64_t n, struct rfs_err *err)
{
	struct rfs_cache_key ahead[RFS_CACHE_MAX_DEPTH];
	char *dst = dstv;
	struct entry *e = NULL;
	/* a whole block asked for is filled straight into the reader's
	 * buffer: the kernel's page cache keeps it, ours need not */
	int whole = at == 0 && n == key->len;
	unsigned nahead = 0;
	int ret = 0;

	if (whole)
		e = take_ready(c, key);
	else if (c->budget && (ret = acquire(c, src, key, &e, err)))
		return ret;
	if (e) {
		memcpy(dst, e->data + at, (size_t)n);
	} else {
		struct rfs_cache_key part = { key->obj, key->start + at, (uint32_t)n };
		uint64_t t0 = now_ns();

		ret = src->fill(src->arg, &part, dst, err);
		if (ret)
			return ret;
		t0 = now_ns() - t0;
		pthread_mutex_lock(&c->lock);
		c->st.compute_ns += t0;
		c->st.computed_bytes += n;
		pthread_mutex_unlock(&c->lock);
	}
	/* Prefetch follows small reads (page faults of a mapping, a reader
	 * with a small buffer): whole-block reads already come in parallel
	 * from the kernel's readahead, and filling them ahead would only add
	 * a copy. */
	if (!whole)
		nahead = prefetch_plan(c, src, pos, ahead);
	if (e || nahead) {
		pthread_mutex_lock(&c->lock);
		if (e)
			e->refs--;
		prefetch_queue(c, src, ahead, nahead);
		pthread_mutex_unlock(&c->lock);
	}
	return 0;
}

enum rfs_take rfs_cache_take_whole(struct rfs_cache *c, const struct rfs_cache_key *key, void *dst)
{
	struct entry *e = take_ready(c, key);

	if (!e)
		return RFS_TAKE_MISS;
	memcpy(dst, e->data, key->len);
	pthread_mutex_lock(&c->lock);
	e->refs--;
	pthread_mutex_unlock(&c->lock);
	return RFS_TAKE_COPIED;
}

void rfs_cache_count_computed(struct rfs_cache *c, uint64_t bytes, uint64_t ns)
{
	pthread_mutex_lock(&c->lock);
	c->st.compute_ns += ns;
	c->st.computed_bytes += bytes;
	pthread_mutex_unlock(&c->lock);
}

void rfs_cache_count_request(struct rfs_cache *c, uint64_t bytes)
{
	pthread_mutex_lock(&c->lock);
	c->st.requests++;
	c->st.bytes += bytes;
	pthread_mutex_unlock(&c->lock);
}

void rfs_cache_get_stats(struct rfs_cache *c, struct rfs_cache_stats *out)
{
	pthread_mutex_lock(&c->lock);
	*out = c->st;
	out->used = c->used;
	pthread_mutex_unlock(&c->lock);
}

void rfs_cache_stats_members(struct rfs_cache *c, struct rfs_buf *b)
{
	struct rfs_cache_stats s;

	rfs_cache_get_stats(c, &s);
	rfs_buf_addf(b,
		     "\"requests\": %llu, \"bytes\": %llu, \"hits\": %llu, \"prefetch_hits\": %llu, "
		     "\"waits\": %llu, \"misses\": %llu, \"uncached\": %llu, \"prefetched\": %llu, "
		     "\"computed_bytes\": %llu, \"evictions\": %llu, \"compute_seconds\": %.6f, "
		     "\"cache_used\": %llu, \"cache_budget\": %llu, \"block_size\": %u",
		     (unsigned long long)s.requests, (unsigned long long)s.bytes,
		     (unsigned long long)s.hits, (unsigned long long)s.prefetch_hits,
		     (unsigned long long)s.waits, (unsigned long long)s.misses,
		     (unsigned long long)s.uncached, (unsigned long long)s.prefetched,
		     (unsigned long long)s.computed_bytes, (unsigned long long)s.evictions,
		     (double)s.compute_ns / 1e9, (unsigned long long)s.used,
		     (unsigned long long)s.budget, RFS_CACHE_BLOCK);
}

char *rfs_cache_stats_json(struct rfs_cache *c, size_t *len)
{
	struct rfs_buf b = { 0 };

	rfs_buf_adds(&b, "{");
	rfs_cache_stats_members(c, &b);
	rfs_buf_adds(&b, "}\n");
	if (!rfs_buf_ok(&b)) {
		rfs_buf_release(&b);
		return NULL;
	}
	return rfs_buf_detach(&b, len);
}
