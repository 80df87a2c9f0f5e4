/*
 * Block cache.  One mutex guards the table, the LRU and the queue; it is
 * never held across a computation, a read or an allocation of block data.
 * Memory is reserved (->used) before a block is computed, so the budget
 * is a hard bound on block data; when nothing can be evicted, the reader
 * computes straight into its own buffer instead of waiting for memory.
 */
#include "cache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "buf.h"

#define NBUCKETS 4096
#define POOL_MAX 16
#define QCAP 256

enum { E_QUEUED, E_COMPUTING, E_READY };

/*
 * An entry holds bytes [start, start + len) of the computed tensor comp,
 * and (comp, start, len) is its key: exactly the bytes it holds.  Two
 * segments may share one tensor (compute mode writes a tied lm_head.weight
 * as the embedding's delta), and the same file block of each holds
 * different bytes of it, so the file block cannot be the key.
 */
struct entry {
	const struct rfs_comp *comp;
	uint64_t start;            /* where the block starts in the tensor's bytes */
	int state;
	int refs;
	int prefetched;            /* computed ahead and not read yet */
	uint32_t len;              /* bytes of this block (reserved when computing) */
	char *data;
	struct entry *hnext;
	struct entry *prev, *next; /* LRU, READY entries only; head = newest */
};

struct job {
	const struct rfs_vfile *vf;
	size_t segi;
	uint64_t k;
};

struct rfs_cache {
	pthread_mutex_t lock;
	pthread_cond_t done;   /* a block finished computing */
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
 * does not fault in and zero fresh pages for every block).  Lock held. */
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

static size_t bucket(const struct rfs_comp *comp, uint64_t start)
{
	uint64_t h = ((uint64_t)(uintptr_t)comp >> 4) * 0x9E3779B97F4A7C15ull ^
		     (start * 0xC2B2AE3D27D4EB4Full);

	return (size_t)(h >> 40) & (NBUCKETS - 1);
}

static uint64_t block_start(const struct rfs_seg *s, uint64_t k);
static uint32_t block_len(const struct rfs_seg *s, uint64_t k);

/* The entry of file block @k of segment @s, or NULL. */
static struct entry *find(struct rfs_cache *c, const struct rfs_seg *s, uint64_t k)
{
	uint64_t start = block_start(s, k);
	uint32_t len = block_len(s, k);
	struct entry *e;

	for (e = c->ht[bucket(s->comp, start)]; e; e = e->hnext)
		if (e->comp == s->comp && e->start == start && e->len == len)
			return e;
	return NULL;
}

static void ht_insert(struct rfs_cache *c, struct entry *e)
{
	size_t b = bucket(e->comp, e->start);

	e->hnext = c->ht[b];
	c->ht[b] = e;
}

static void ht_remove(struct rfs_cache *c, struct entry *e)
{
	struct entry **p = &c->ht[bucket(e->comp, e->start)];

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
			c->used -= e->len;
			c->st.evictions++;
			if (e->prefetched)
				c->unread--;
			block_free(c, e->data, e->len);
			free(e);
		}
		e = prev;
	}
	return c->used + need <= c->budget ? 0 : -1;
}

/*
 * Blocks are aligned to the virtual file, not to the tensor: block k holds
 * the part of the tensor in file bytes [k*B, (k+1)*B).  The kernel asks
 * for 1 MiB at 1 MiB-aligned offsets, so its requests are whole blocks
 * (or the whole piece of a block that a tensor covers).
 */
static uint64_t block_start(const struct rfs_seg *s, uint64_t k)
{
	return k * RFS_CACHE_BLOCK > s->off ? k * RFS_CACHE_BLOCK - s->off : 0;
}

static uint32_t block_len(const struct rfs_seg *s, uint64_t k)
{
	uint64_t end = (k + 1) * RFS_CACHE_BLOCK - s->off;

	if (end > s->len)
		end = s->len;
	return (uint32_t)(end - block_start(s, k));
}

/* Computes block @e (state COMPUTING, reserved, referenced by the caller)
 * with the lock released; on return the lock is held again. */
static int compute_block(struct rfs_cache *c, struct entry *e, struct rfs_err *err)
{
	uint64_t t0;
	int ret;

	e->data = block_take(c, e->len);
	pthread_mutex_unlock(&c->lock);
	if (!e->data)
		e->data = block_map(e->len);
	t0 = now_ns();
	ret = e->data ? rfs_comp_compute(e->comp, e->data, e->start, e->len, err)
		      : rfs_errf(err, RFS_E_NOMEM, "out of memory");
	t0 = now_ns() - t0;
	pthread_mutex_lock(&c->lock);
	c->st.compute_ns += t0;
	if (ret) {
		ht_remove(c, e);
		c->used -= e->len;
		block_free(c, e->data, e->len);
		e->data = NULL;
		e->state = -1; /* the caller frees it */
	} else {
		c->st.computed_bytes += e->len;
		e->state = E_READY;
		lru_push(c, e);
	}
	pthread_cond_broadcast(&c->done);
	return ret;
}

/* The next block after (segi, k) in file order that is computed, or -1. */
static int next_block(const struct rfs_vfile *vf, size_t *segi, uint64_t *k)
{
	const struct rfs_seg *s = &vf->segs[*segi];

	if ((*k + 1) * RFS_CACHE_BLOCK < s->off + s->len) {
		(*k)++;
		return 0;
	}
	for ((*segi)++; *segi < vf->nseg; (*segi)++)
		if (vf->segs[*segi].kind == RFS_SEG_COMP && vf->segs[*segi].len) {
			*k = vf->segs[*segi].off / RFS_CACHE_BLOCK;
			return 0;
		}
	return -1;
}

/* Queues the blocks after (segi, k).  Lock held. */
static void prefetch_after(struct rfs_cache *c, const struct rfs_vfile *vf, size_t segi, uint64_t k)
{
	unsigned i;

	if (!c->nworkers)
		return;
	for (i = 0; i < c->depth; i++) {
		struct entry *e;

		if (next_block(vf, &segi, &k))
			return;
		if (find(c, &vf->segs[segi], k))
			continue;
		/* blocks computed ahead (queued or not read yet) may take half the
		 * budget; the LRU makes room for them like for any other block */
		if (c->qlen >= QCAP ||
		    (uint64_t)(c->unread + c->qlen + 1) * RFS_CACHE_BLOCK > c->budget / 2)
			return;
		e = calloc(1, sizeof(*e));
		if (!e)
			return;
		e->comp = vf->segs[segi].comp;
		e->state = E_QUEUED;
		e->start = block_start(&vf->segs[segi], k);
		e->len = block_len(&vf->segs[segi], k);
		ht_insert(c, e);
		c->q[(c->qhead + c->qlen) % QCAP] = (struct job){ vf, segi, k };
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
		e = find(c, &j.vf->segs[j.segi], j.k);
		if (!e || e->state != E_QUEUED)
			continue; /* a reader took it */
		if (make_room(c, e->len)) {
			ht_remove(c, e);
			free(e);
			continue;
		}
		c->used += e->len;
		e->state = E_COMPUTING;
		e->refs = 1;
		if (compute_block(c, e, &err)) {
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
	c->depth = depth;
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
				munmap(e->data, e->len ? e->len : 1);
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

/* Finds block k, waiting while it is being computed.  Lock held. */
static struct entry *find_settled(struct rfs_cache *c, const struct rfs_seg *s, uint64_t k)
{
	struct entry *e;

	while ((e = find(c, s, k)) && e->state == E_COMPUTING) {
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

/* Takes block k if it is READY (prefetched, say) or being computed;
 * otherwise NULL (a queued one is taken off the queue).  Never computes. */
static struct entry *take_ready(struct rfs_cache *c, const struct rfs_seg *s, uint64_t k)
{
	struct entry *e, *out = NULL;

	pthread_mutex_lock(&c->lock);
	e = find_settled(c, s, k);
	if (e && e->state == E_READY) {
		out = take_hit(c, e);
	} else if (e && e->state == E_QUEUED) {
		ht_remove(c, e); /* the reader computes it now; the queue skips it */
		free(e);
	}
	if (!out)
		c->st.misses++;
	pthread_mutex_unlock(&c->lock);
	return out;
}

/* Finds block k READY and referenced (*out), or computes it.  *out NULL
 * means: no room, compute it yourself without caching. */
static int acquire(struct rfs_cache *c, const struct rfs_seg *s, uint64_t k,
		   struct entry **out, struct rfs_err *err)
{
	struct entry *e;
	int ret;

	*out = NULL;
	pthread_mutex_lock(&c->lock);
	e = find_settled(c, s, k);
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
		e->comp = s->comp;
		e->start = block_start(s, k);
		e->len = block_len(s, k);
		ht_insert(c, e);
	}
	/* e is new or QUEUED (taken over from the prefetch queue) */
	if (make_room(c, e->len)) {
		ht_remove(c, e);
		free(e);
		c->st.uncached++;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	c->used += e->len;
	e->state = E_COMPUTING;
	e->refs = 1;
	c->st.misses++;
	ret = compute_block(c, e, err);
	pthread_mutex_unlock(&c->lock);
	if (ret) {
		free(e);
		return ret;
	}
	*out = e;
	return 0;
}

int rfs_cache_read(struct rfs_cache *c, const struct rfs_vfile *vf, size_t segi,
		   char *dst, uint64_t off, uint64_t len, struct rfs_err *err)
{
	const struct rfs_seg *s = &vf->segs[segi];
	uint64_t k, k0 = (s->off + off) / RFS_CACHE_BLOCK, k1 = (s->off + off + len - 1) / RFS_CACHE_BLOCK;

	for (k = k0; k <= k1; k++) {
		uint64_t b0 = block_start(s, k), from = off > b0 ? off : b0;
		uint64_t to = b0 + block_len(s, k) < off + len ? b0 + block_len(s, k) : off + len;
		struct entry *e = NULL;
		/* a whole block asked for is computed straight into the reader's
		 * buffer: the kernel's page cache keeps it, ours need not */
		int whole = from == b0 && to == b0 + block_len(s, k);
		int ret = 0;

		if (whole)
			e = take_ready(c, s, k);
		else if (c->budget && (ret = acquire(c, s, k, &e, err)))
			return ret;
		/* Prefetch follows small reads (page faults of a mapping, a
		 * reader with a small buffer): whole-block reads already come
		 * in parallel from the kernel's readahead, and computing them
		 * ahead would only add a copy. */
		if (e) {
			memcpy(dst + (from - off), e->data + (from - b0), (size_t)(to - from));
			pthread_mutex_lock(&c->lock);
			e->refs--;
			if (!whole)
				prefetch_after(c, vf, segi, k);
			pthread_mutex_unlock(&c->lock);
		} else {
			uint64_t t0 = now_ns();

			ret = rfs_comp_compute(s->comp, dst + (from - off), from, to - from, err);
			if (ret)
				return ret;
			pthread_mutex_lock(&c->lock);
			c->st.compute_ns += now_ns() - t0;
			c->st.computed_bytes += to - from;
			if (!whole)
				prefetch_after(c, vf, segi, k);
			pthread_mutex_unlock(&c->lock);
		}
	}
	return 0;
}

int rfs_cache_take_whole(struct rfs_cache *c, const struct rfs_vfile *vf, size_t segi,
			 char *dst, uint64_t off, uint64_t len)
{
	const struct rfs_seg *s = &vf->segs[segi];
	uint64_t k = (s->off + off) / RFS_CACHE_BLOCK;
	struct entry *e;

	if (!len || off != block_start(s, k) || len != block_len(s, k))
		return -1;
	e = take_ready(c, s, k);
	if (!e)
		return 0;
	memcpy(dst, e->data, (size_t)len);
	pthread_mutex_lock(&c->lock);
	e->refs--;
	pthread_mutex_unlock(&c->lock);
	return 1;
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

char *rfs_cache_stats_json(struct rfs_cache *c, size_t *len)
{
	struct rfs_cache_stats s;
	struct rfs_buf b = { 0 };

	rfs_cache_get_stats(c, &s);
	rfs_buf_addf(&b,
		     "{\"requests\": %llu, \"bytes\": %llu, \"hits\": %llu, \"prefetch_hits\": %llu, "
		     "\"waits\": %llu, \"misses\": %llu, \"uncached\": %llu, \"prefetched\": %llu, "
		     "\"computed_bytes\": %llu, \"evictions\": %llu, \"compute_seconds\": %.6f, "
		     "\"cache_used\": %llu, \"cache_budget\": %llu, \"block_size\": %u}\n",
		     (unsigned long long)s.requests, (unsigned long long)s.bytes,
		     (unsigned long long)s.hits, (unsigned long long)s.prefetch_hits,
		     (unsigned long long)s.waits, (unsigned long long)s.misses,
		     (unsigned long long)s.uncached, (unsigned long long)s.prefetched,
		     (unsigned long long)s.computed_bytes, (unsigned long long)s.evictions,
		     (double)s.compute_ns / 1e9, (unsigned long long)s.used,
		     (unsigned long long)s.budget, RFS_CACHE_BLOCK);
	if (!rfs_buf_ok(&b)) {
		rfs_buf_release(&b);
		return NULL;
	}
	return rfs_buf_detach(&b, len);
}
