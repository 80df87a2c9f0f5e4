/*
 * remote.c - the engine behind remote byte sources (remote.h).
 *
 * One table of blocks, keyed by (content identity, block index), under one
 * mutex (E.lk) that is never held across network or disk I/O, nor while
 * bytes are copied.  A block is
 *
 *   FETCH  created by a reader, want or prefetch; a job owns it: a worker
 *          reads it from the disk cache or the network into ->data
 *   READY  ->data holds its bytes; on the LRU list while nobody holds it
 *   FAILED the job gave up: readers holding it fail with ->why; its buffer
 *          is gone, and it answers every read with its failure for
 *          RFS_TUNE_REMOTE_FAIL_HOLD_MS, then the next read fetches anew
 *
 * Readers take a reference on each block they need (creating the missing
 * ones as FETCH and queueing one job per run of them), wait on E.done until
 * none is FETCH, copy without the lock (a held READY block cannot change)
 * or compute from the block in place (pin), and drop the references.
 * Workers take demand jobs before prefetch jobs, receive straight into the
 * blocks' buffers, make them READY, then store them in the disk cache.
 *
 * Memory: buffers are mmap'd 1 MiB areas, recycled through E.pool; E.mem
 * counts every one, pooled or not, against --remote-memory.  A new block
 * takes a pooled buffer, else room under the budget, else the buffer of
 * an unreferenced READY block: one a reader has read (least recently used
 * first), then, for readers only, an unread prefetched one (the furthest
 * ahead first).  Readers never wait for memory (a read larger than the
 * budget overshoots it while it runs); prefetch stops where it finds none.
 */
#include "remote.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include "dcache.h"
#include "http.h"
#include "log.h"
#include "tunables.h"

#define BS RFS_TUNE_REMOTE_BLOCK
#define PART_BLOCKS (RFS_TUNE_REMOTE_PART / RFS_TUNE_REMOTE_BLOCK)
#define WANT_MAX_BLOCKS 64 /* blocks one reader holds at a time */
#define NBUCKETS 4096

enum bstate { B_FETCH, B_READY, B_FAILED };

struct blk {
	struct blk *hnext;
	struct blk *prev, *next; /* LRU, while READY and unreferenced */
	struct rfs_dcache_key key;
	uint64_t idx;
	uint32_t len;
	enum bstate st;
	int refs;
	int used;      /* a reader copied from it */
	int prefetch;  /* made by prefetch (counted when first used) */
	char *data;    /* NULL once FAILED */
	char *why;     /* FAILED */
	int code;
	uint64_t failed_at; /* FAILED: when (now_ns) */
	uint64_t started;   /* when its job began (now_ns) */
	int told;           /* FAILED: a reader was answered with it */
};

struct rfile {
	struct rfs_bsrc b;
	char *url, *name, *identity, *etag, *auth, *commit, *linked_etag;
	char *sigv4, *userpwd, *token_header; /* S3 */
	int hub;
	struct rgroup *grp; /* the source's counters, or NULL */
	struct rfs_dcache_key key;
	pthread_mutex_t lk; /* cdn, why */
	char *cdn;          /* where the resolve URL redirected, NULL: ask it */
	char why[512];
	atomic_int changed;
	atomic_int jobs;    /* queued or running */
	/* the sequential stream (E.lk): furthest byte read, prefetched up
	 * to, window, first byte read since the last seek, reads that moved
	 * hwm since then */
	uint64_t hwm, pf_end, window, start;
	unsigned moves;
};

struct job {
	struct job *next;
	struct rfile *f;
	uint64_t first;
	unsigned n;
	int prefetch;
};

struct jq {
	struct job *head, *tail;
	unsigned n;
};

static struct engine {
	pthread_mutex_t lk;
	pthread_cond_t done;    /* a block left FETCH, a job ended */
	pthread_cond_t work;    /* a job was queued */
	struct blk *tab[NBUCKETS];
	struct blk lru;         /* sentinel: lru.next is the oldest */
	uint64_t mem;
	struct jq demand, pref;
	pthread_t *workers;
	unsigned nworkers;
	int started, stop;
	atomic_int cancel;      /* rfs_remote_cancel: the mount is ending */
	int prefetch_on;        /* off while planning: headers need no window */
	char **pool;            /* recycled full-block buffers (their pages stay) */
	size_t npool, cappool;
	struct rfs_dcache *dc;
	struct rfs_remote_conf conf;
	int configured;
	struct rgroup *groups, **groups_tail; /* never freed before shutdown */
	/* counters (atomics: also bumped outside the lock) */
	atomic_uint_fast64_t requests, bytes, retries, failures, mem_hits, disk_hits, misses,
		prefetched, peak;
} E = {
	.lk = PTHREAD_MUTEX_INITIALIZER,
	.done = PTHREAD_COND_INITIALIZER,
	.work = PTHREAD_COND_INITIALIZER,
};

static const struct rfs_bsrc_ops rops;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void rfs_remote_conf_default(struct rfs_remote_conf *c)
{
	*c = (struct rfs_remote_conf){
		.connections = RFS_TUNE_REMOTE_CONNECTIONS,
		.memory = RFS_TUNE_REMOTE_MEMORY,
		.timeout_s = RFS_TUNE_REMOTE_TIMEOUT_S,
		.cache_size = RFS_TUNE_REMOTE_CACHE_SIZE,
	};
}

void rfs_remote_configure(const struct rfs_remote_conf *c)
{
	pthread_mutex_lock(&E.lk);
	E.conf = *c;
	if (!E.conf.connections)
		E.conf.connections = 1;
	if (E.conf.memory < 4ull * RFS_TUNE_REMOTE_PART)
		E.conf.memory = 4ull * RFS_TUNE_REMOTE_PART;
	E.configured = 1;
	pthread_mutex_unlock(&E.lk);
}

/* --remote-timeout (E.lk not held). */
static double timeout_s(void)
{
	double t;

	pthread_mutex_lock(&E.lk);
	if (!E.configured) {
		rfs_remote_conf_default(&E.conf);
		E.configured = 1;
	}
	t = E.conf.timeout_s;
	pthread_mutex_unlock(&E.lk);
	return t;
}

long rfs_remote_timeout_ms(void)
{
	return (long)(timeout_s() * 1000);
}

long rfs_remote_stall_s(void)
{
	long s = (long)(timeout_s() / 4);

	return s < 2 ? 2 : s > 15 ? 15 : s;
}

/* The counters of one source (a term), bumped with the engine's. */
struct rgroup {
	struct rgroup *next;
	char *name;
	atomic_uint_fast64_t requests, bytes, retries, failures, mem_hits, disk_hits, misses,
		prefetched;
};

/* Adds @n to counter @field of the engine and of @f's source. */
#define COUNT(f, field, n)                                                   \
	do {                                                                 \
		atomic_fetch_add(&E.field, (n));                             \
		if ((f)->grp)                                                \
			atomic_fetch_add(&(f)->grp->field, (n));             \
	} while (0)

/* ---- the block table (E.lk held) ------------------------------------------ */

static size_t bucket(const struct rfs_dcache_key *k, uint64_t idx)
{
	return (size_t)((k->lo ^ (k->hi * 31) ^ (idx * 0x9E3779B97F4A7C15ull)) >> 20) % NBUCKETS;
}

static struct blk *find(const struct rfs_dcache_key *k, uint64_t idx)
{
	struct blk *b;

	for (b = E.tab[bucket(k, idx)]; b; b = b->hnext)
		if (b->idx == idx && b->key.lo == k->lo && b->key.hi == k->hi)
			return b;
	return NULL;
}

static void lru_del(struct blk *b)
{
	b->prev->next = b->next;
	b->next->prev = b->prev;
	b->prev = b->next = NULL;
}

static void lru_add(struct blk *b)
{
	b->prev = E.lru.prev;
	b->next = &E.lru;
	E.lru.prev->next = b;
	E.lru.prev = b;
}

/*
 * Block buffers are mmap'd (malloc's per-thread arenas kept far more than
 * the budget) and recycled: a dropped block's buffer goes to E.pool and
 * the next block takes it, its pages already there (no page faults, no
 * zeroing).  E.mem counts every buffer, pooled ones too, so the budget
 * bounds what the engine holds.
 */
/* Gives @b's buffer back (to the pool, or to the system). */
static void drop_data(struct blk *b)
{
	if (!b->data)
		return;
	if (b->len == BS && E.npool < E.cappool) {
		E.pool[E.npool++] = b->data;
	} else {
		munmap(b->data, b->len);
		E.mem -= b->len;
	}
	b->data = NULL;
}

static void unlink_free(struct blk *b)
{
	struct blk **pp = &E.tab[bucket(&b->key, b->idx)];

	while (*pp != b)
		pp = &(*pp)->hnext;
	*pp = b->hnext;
	if (b->prev)
		lru_del(b);
	drop_data(b);
	free(b->why);
	free(b);
}

/* The unreferenced READY block to drop first: one a reader has read, least
 * recently used first; else, for a reader (!@prefetch), a prefetched one
 * nobody has read yet, the most recently fetched first (the furthest ahead:
 * wanted last).  NULL when none may go. */
static struct blk *victim(int prefetch)
{
	struct blk *b;

	for (b = E.lru.next; b != &E.lru; b = b->next)
		if (b->used)
			return b;
	return !prefetch && E.lru.prev != &E.lru ? E.lru.prev : NULL;
}

/* A buffer of @len bytes within the budget, dropping blocks for it; NULL
 * when a prefetch would need room that readers hold (a reader goes over
 * the budget instead: its read cannot wait), or when mmap fails. */
static char *take_buf(uint32_t len, int prefetch)
{
	struct blk *v;
	void *p;

	for (;;) {
		if (len == BS && E.npool)
			return E.pool[--E.npool];
		if (E.mem + len <= E.conf.memory)
			break;
		if (E.npool) { /* a short block: pooled full ones make room */
			munmap(E.pool[--E.npool], BS);
			E.mem -= BS;
			continue;
		}
		v = victim(prefetch);
		if (!v) {
			if (prefetch)
				return NULL;
			break;
		}
		unlink_free(v);
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	E.mem += len;
	if (E.mem > E.peak)
		E.peak = E.mem;
	return p;
}

static struct blk *create(struct rfile *f, uint64_t idx, int prefetch)
{
	uint64_t end = (idx + 1) * (uint64_t)BS;
	struct blk *b = calloc(1, sizeof(*b));
	size_t h;

	if (!b)
		return NULL;
	b->len = (uint32_t)((end > f->b.size ? f->b.size : end) - idx * (uint64_t)BS);
	b->data = take_buf(b->len, prefetch);
	if (!b->data) {
		free(b);
		return NULL;
	}
	b->key = f->key;
	b->idx = idx;
	b->st = B_FETCH;
	b->prefetch = prefetch;
	h = bucket(&b->key, idx);
	b->hnext = E.tab[h];
	E.tab[h] = b;
	return b;
}

/*
 * Marks @b FAILED with @code and @why (E.lk held).  Its buffer goes at
 * once.  Once a reader has been answered with the failure (block_err), the
 * block stays in the table for RFS_TUNE_REMOTE_FAIL_HOLD_MS: a read of it
 * meanwhile fails at once (the kernel retries a failed read right away,
 * and each retry would otherwise wait a whole deadline again); a read after
 * that, or of a failure nobody was told of, fetches anew.
 */
static void fail_block(struct blk *b, int code, const char *why)
{
	b->st = B_FAILED;
	b->code = code;
	free(b->why);
	b->why = why ? strdup(why) : NULL;
	b->failed_at = now_ns();
	drop_data(b);
}

/* A failed block stays (answering at once) only while its failure is
 * fresh and a reader was told of it: the kernel's retry of that read. */
static int fail_expired(const struct blk *b)
{
	if (!b->told)
		return 1;
	return now_ns() - b->failed_at > RFS_TUNE_REMOTE_FAIL_HOLD_MS * 1000000ull;
}

static void queue_job(struct rfile *f, uint64_t first, unsigned n, int prefetch)
{
	struct job *j = calloc(1, sizeof(*j));
	struct jq *q = prefetch ? &E.pref : &E.demand;
	unsigned i;

	if (!j) { /* the blocks fail: their readers see it */
		for (i = 0; i < n; i++)
			fail_block(find(&f->key, first + i), RFS_E_NOMEM, "out of memory");
		pthread_cond_broadcast(&E.done);
		return;
	}
	*j = (struct job){ .f = f, .first = first, .n = n, .prefetch = prefetch };
	atomic_fetch_add(&f->jobs, 1);
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	q->n++;
	pthread_cond_signal(&E.work);
}

/*
 * Makes the blocks [@b0, @b0 + @n) of @f present or coming: creates the
 * missing ones and queues jobs for their runs.  With @out, takes a
 * reference on each (out[i]).  Prefetch creates nothing it has no room for
 * and stops at the first such block; returns the blocks it covered.
 */
static unsigned want_locked(struct rfile *f, uint64_t b0, unsigned n, struct blk **out,
			    int prefetch)
{
	uint64_t run0 = 0;
	unsigned i, run = 0;

	for (i = 0; i < n; i++) {
		struct blk *b = find(&f->key, b0 + i);

		if (b && b->st == B_FAILED && !b->refs && fail_expired(b)) {
			unlink_free(b); /* an old failure: try again */
			b = NULL;
		}
		if (!b) {
			/* readers make room as they can and go on; prefetch
			 * only takes room that is free or already read */
			b = create(f, b0 + i, prefetch);
			if (!b)
				break;
			if (!run)
				run0 = b0 + i;
			/* one GET per aligned part at most */
			if (++run == PART_BLOCKS || (b0 + i + 1) % PART_BLOCKS == 0) {
				queue_job(f, run0, run, prefetch);
				run = 0;
			}
		} else if (run) {
			queue_job(f, run0, run, prefetch);
			run = 0;
		}
		if (out) {
			if (b->st == B_READY && !b->refs && b->prev)
				lru_del(b);
			b->refs++;
			out[i] = b;
		}
	}
	if (run)
		queue_job(f, run0, run, prefetch);
	return i;
}

static void release_locked(struct blk *b)
{
	if (--b->refs)
		return;
	if (b->st == B_FAILED && fail_expired(b))
		unlink_free(b);
	else if (b->st == B_READY)
		lru_add(b);
}

/* ---- fetching (workers; no lock held) ------------------------------------- */

static void mark_changed(struct rfile *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mark_changed(struct rfile *f, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&f->lk);
	if (!atomic_load(&f->changed)) {
		va_start(ap, fmt);
		vsnprintf(f->why, sizeof(f->why), fmt, ap);
		va_end(ap);
		atomic_store(&f->changed, 1);
		rfs_log(RFS_LOG_ERROR, "%s: %s; every read of it fails from now on", f->name, f->why);
	}
	pthread_mutex_unlock(&f->lk);
}

static int is_hex64(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[64] == 0;
}

/* A Hub resolve URL's answer must name the commit, content and size the
 * mount resolved; 0 when it does, else the file is marked changed. */
static int check_hub_headers(struct rfile *f, const struct rfs_http_req *r)
{
	char et[256];

	rfs_http_etag_norm(r->linked_etag[0] ? r->linked_etag : r->etag, et, sizeof(et));
	if (r->commit[0] && f->commit && strcmp(r->commit, f->commit)) {
		mark_changed(f, "the server now answers with commit %.64s, the mount resolved %s", r->commit,
			     f->commit);
		return -1;
	}
	if (et[0] && f->linked_etag && strcmp(et, f->linked_etag)) {
		mark_changed(f, "its content changed on the server (ETag %.80s, was %s)", et, f->linked_etag);
		return -1;
	}
	if (r->linked_size >= 0 && (uint64_t)r->linked_size != f->b.size) {
		mark_changed(f, "its size changed on the server (%lld bytes, was %llu)",
			     (long long)r->linked_size, (unsigned long long)f->b.size);
		return -1;
	}
	return 0;
}

enum verdict { V_OK, V_RETRY, V_AGAIN, V_FAIL };

/* What answer @r to a range request of @f at @url means. */
static enum verdict judge(struct rfile *f, struct rfs_http_req *r, int on_cdn, char *why,
			  size_t whylen)
{
	struct rfs_err e = { 0 };
	char et[256];

	switch (r->status) {
	case 206:
		if (r->has_range != 1 || r->cr_first != r->off || r->cr_last != r->off + r->len - 1) {
			snprintf(why, whylen, "the server answered another range (Content-Range %llu-%llu)",
				 (unsigned long long)r->cr_first, (unsigned long long)r->cr_last);
			return V_RETRY;
		}
		if (r->cr_total != f->b.size) {
			mark_changed(f, "its size changed on the server (%llu bytes, was %llu)",
				     (unsigned long long)r->cr_total, (unsigned long long)f->b.size);
			return V_FAIL;
		}
		if (r->got != r->len) {
			snprintf(why, whylen, "short body (%zu of %llu bytes)", r->got,
				 (unsigned long long)r->len);
			return V_RETRY;
		}
		rfs_http_etag_norm(r->etag, et, sizeof(et));
		if (f->hub && !on_cdn && check_hub_headers(f, r))
			return V_FAIL;
		if (f->hub && on_cdn && f->linked_etag && is_hex64(f->linked_etag) && is_hex64(et) &&
		    strcmp(et, f->linked_etag)) {
			mark_changed(f, "the CDN serves other content (ETag %s, expected %s)", et, f->linked_etag);
			return V_FAIL;
		}
		if (!f->hub && f->etag && et[0]) {
			char want[256];

			rfs_http_etag_norm(f->etag, want, sizeof(want));
			if (strcmp(et, want)) {
				mark_changed(f, "its ETag changed on the server (%.80s, was %s)", et, want);
				return V_FAIL;
			}
		}
		return V_OK;
	case 301: case 302: case 303: case 307: case 308: {
		char to[4096];

		if (f->hub && !on_cdn && check_hub_headers(f, r))
			return V_FAIL;
		if (!r->location[0] || rfs_http_join(r->url, r->location, to, sizeof(to), &e)) {
			snprintf(why, whylen, "redirect without a usable Location%s%.200s", e.msg[0] ? ": " : "", e.msg);
			return V_FAIL;
		}
		pthread_mutex_lock(&f->lk);
		free(f->cdn);
		f->cdn = strdup(to);
		pthread_mutex_unlock(&f->lk);
		return V_AGAIN;
	}
	case 200:
		snprintf(why, whylen, "the server ignored the Range and sent the whole file (200)");
		return V_RETRY;
	case 401: case 403: case 410:
		if (on_cdn) { /* an expired signed URL: ask the resolve URL again */
			pthread_mutex_lock(&f->lk);
			free(f->cdn);
			f->cdn = NULL;
			pthread_mutex_unlock(&f->lk);
			snprintf(why, whylen, "the CDN refused the signed URL (%ld): resolved again", r->status);
			return V_AGAIN;
		}
		if (r->status == 410) {
			mark_changed(f, "the server says it is gone (410)");
			return V_FAIL;
		}
		if (!strcmp(r->error_code, "GatedRepo"))
			snprintf(why, whylen,
				 "a gated repository (%ld): accept its conditions on the Hub, then set HF_TOKEN to a token of that account%s",
				 r->status, f->auth ? " (the token given has no access)" : "");
		else
			snprintf(why, whylen, "access refused (%ld%s%s)%s", r->status, r->error_code[0] ? " " : "",
				 r->error_code, f->auth ? "" : ": a token may be needed (HF_TOKEN)");
		return V_FAIL;
	case 404:
		mark_changed(f, "no longer on the server (404)");
		return V_FAIL;
	case 412:
		mark_changed(f, "its ETag changed on the server (If-Match failed: 412)");
		return V_FAIL;
	case 416:
		mark_changed(f, "the server says the range is past its end (416): the file is shorter now");
		return V_FAIL;
	case 408: case 429: case 500: case 502: case 503: case 504:
		snprintf(why, whylen, "the server answered %ld", r->status);
		return V_RETRY;
	default:
		snprintf(why, whylen, "unexpected answer %ld", r->status);
		return V_FAIL;
	}
}

/* Sleeps @ms, or less when the workers are being stopped. */
static void sleep_ms(uint64_t ms)
{
	while (ms && !atomic_load(&E.cancel)) {
		uint64_t step = ms < 100 ? ms : 100;
		struct timespec ts = { 0, (long)step * 1000000L };

		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
		ms -= step;
	}
}

/*
 * Reads [@off, @off + @len) of @f into @iov from the network, retrying until
 * @deadline.  0, or an rfs code with @why (or the file's change) saying why.
 */
static int fetch_range(struct rfile *f, const struct iovec *iov, int niov, uint64_t off, uint64_t len,
		       uint64_t deadline, char *why, size_t whylen)
{
	uint64_t backoff = 1000;
	unsigned attempts = 0, hops = 0;
	char url[4096], last[320] = "";
	const char *s3_headers[3] = { "x-amz-content-sha256: UNSIGNED-PAYLOAD", f->token_header, NULL };

	for (;;) {
		struct rfs_http_req r = { 0 };
		uint64_t now = now_ns(), wait;
		int on_cdn = 0;
		enum verdict v;

		if (atomic_load(&f->changed))
			return RFS_E_CHANGED;
		if (atomic_load(&E.cancel)) {
			snprintf(why, whylen, "the mount is ending");
			return RFS_E_IO;
		}
		pthread_mutex_lock(&f->lk);
		if (f->cdn) {
			snprintf(url, sizeof(url), "%s", f->cdn);
			on_cdn = 1;
		} else {
			snprintf(url, sizeof(url), "%s", f->url);
		}
		pthread_mutex_unlock(&f->lk);
		if (now >= deadline) {
			snprintf(why, whylen, "no answer within %.0f s%s%s", E.conf.timeout_s,
				 last[0] ? ": " : "", last);
			return RFS_E_IO;
		}
		r.url = url;
		r.off = off;
		r.len = len;
		r.iov = iov;
		r.niov = niov;
		r.auth = f->auth && rfs_http_same_origin(url, f->url) ? f->auth : NULL;
		if (f->sigv4 && rfs_http_same_origin(url, f->url)) {
			r.sigv4 = f->sigv4;
			r.userpwd = f->userpwd;
			r.extra = (const char *const *)s3_headers;
		}
		r.if_match = f->hub ? NULL : f->etag;
		r.timeout_ms = (long)((deadline - now) / 1000000ull) + 1;
		r.stall_s = rfs_remote_stall_s();
		r.cancel = &E.cancel;
		COUNT(f, requests, 1);
		switch (rfs_http_do(&r)) {
		case RFS_HTTP_FATAL:
			snprintf(why, whylen, "%s", r.why);
			rfs_http_reset(&r);
			return RFS_E_IO;
		case RFS_HTTP_TRANSIENT:
			snprintf(last, sizeof(last), "%s", r.why);
			v = V_RETRY;
			break;
		default:
			if (r.overflow) {
				snprintf(last, sizeof(last), "the server sent more bytes than asked for");
				v = V_RETRY;
			} else {
				v = judge(f, &r, on_cdn, last, sizeof(last));
			}
			if (v == V_OK)
				COUNT(f, bytes, len);
			break;
		}
		rfs_http_reset(&r);
		if (v == V_OK)
			return 0;
		if (v == V_FAIL) {
			snprintf(why, whylen, "%s", atomic_load(&f->changed) ? f->why : last);
			return atomic_load(&f->changed) ? RFS_E_CHANGED : RFS_E_IO;
		}
		if (v == V_AGAIN && ++hops <= RFS_TUNE_REMOTE_MAX_REDIRECTS)
			continue;
		/* V_RETRY, or redirects going round: back off */
		attempts++;
		COUNT(f, retries, 1);
		wait = r.retry_after >= 0 && (uint64_t)r.retry_after * 1000 > backoff
			       ? (uint64_t)r.retry_after * 1000 : backoff;
		rfs_log(RFS_LOG_DEBUG, "%s: bytes %llu-%llu: attempt %u: %s; again in %llu ms", f->name,
				       (unsigned long long)off, (unsigned long long)(off + len - 1), attempts,
				       last, (unsigned long long)wait);
		if (now_ns() + wait * 1000000ull >= deadline) {
			snprintf(why, whylen, "gave up within the %.0f s deadline after %u attempts: %s",
				 E.conf.timeout_s, attempts, last);
			return RFS_E_IO;
		}
		sleep_ms(wait);
		backoff = backoff * 2 > RFS_TUNE_REMOTE_BACKOFF_MAX_MS ? RFS_TUNE_REMOTE_BACKOFF_MAX_MS
								      : backoff * 2;
		hops = 0;
	}
}

static uint64_t deadline_from_now(void);

/* Gets the blocks of @j: from the disk cache, then the network in runs,
 * straight into the blocks' buffers.  Blocks are READY for their readers
 * before they are written to the disk cache (held meanwhile). */
static void run_job(struct job *j)
{
	struct rfile *f = j->f;
	struct blk *bl[PART_BLOCKS];
	struct iovec iov[PART_BLOCKS];
	int code[PART_BLOCKS], fetched[PART_BLOCKS];
	char why[512] = "";
	unsigned i, k, m;

	pthread_mutex_lock(&E.lk);
	for (i = 0; i < j->n; i++) {
		bl[i] = find(&f->key, j->first + i); /* FETCH blocks stay: this job owns them */
		bl[i]->started = now_ns();
	}
	pthread_mutex_unlock(&E.lk);
	for (i = 0; i < j->n; i++) {
		code[i] = 1; /* still needed */
		fetched[i] = 0;
		if (E.dc && rfs_dcache_get(E.dc, &f->key, bl[i]->idx, bl[i]->data, bl[i]->len)) {
			code[i] = 0;
			COUNT(f, disk_hits, 1);
		}
	}
	for (i = 0; i < j->n; i = k) {
		uint64_t off, len;
		int rc;

		if (code[i] != 1) {
			k = i + 1;
			continue;
		}
		for (k = i; k < j->n && code[k] == 1; k++) {
			iov[k - i].iov_base = bl[k]->data;
			iov[k - i].iov_len = bl[k]->len;
		}
		off = bl[i]->idx * (uint64_t)BS;
		len = bl[k - 1]->idx * (uint64_t)BS + bl[k - 1]->len - off;
		COUNT(f, misses, k - i);
		/* the deadline runs from the fetch's start: a job that waited in
		 * the queue still gets its time (readers bound their own wait) */
		rc = fetch_range(f, iov, (int)(k - i), off, len, deadline_from_now(), why, sizeof(why));
		if (rc && !atomic_load(&E.cancel)) {
			char key[600];

			/* once per file and range: the message counts attempts */
			snprintf(key, sizeof(key), "fetch\n%s\n%llu\n%llu", f->name, (unsigned long long)off,
				 (unsigned long long)len);
			COUNT(f, failures, 1);
			rfs_log_once_key(RFS_LOG_ERROR, key, "%s: bytes %llu-%llu: %s", f->name,
					 (unsigned long long)off, (unsigned long long)(off + len - 1), why);
		}
		for (m = i; m < k; m++) {
			code[m] = rc;
			fetched[m] = !rc;
		}
	}
	pthread_mutex_lock(&E.lk);
	for (i = 0; i < j->n; i++) {
		struct blk *b = bl[i];

		if (code[i]) {
			fail_block(b, code[i], why);
		} else {
			b->st = B_READY;
			b->refs++; /* released below */
		}
	}
	pthread_cond_broadcast(&E.done);
	pthread_mutex_unlock(&E.lk);
	for (i = 0; i < j->n; i++)
		if (fetched[i] && E.dc)
			rfs_dcache_put(E.dc, &f->key, bl[i]->idx, bl[i]->data, bl[i]->len);
	pthread_mutex_lock(&E.lk);
	for (i = 0; i < j->n; i++)
		if (!code[i])
			release_locked(bl[i]);
	atomic_fetch_sub(&f->jobs, 1);
	pthread_cond_broadcast(&E.done);
	pthread_mutex_unlock(&E.lk);
}

static void *worker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&E.lk);
	while (!E.stop) {
		struct jq *q = E.demand.head ? &E.demand : E.pref.head ? &E.pref : NULL;
		struct job *j;

		if (!q) {
			pthread_cond_wait(&E.work, &E.lk);
			continue;
		}
		j = q->head;
		q->head = j->next;
		if (!q->head)
			q->tail = NULL;
		q->n--;
		pthread_mutex_unlock(&E.lk);
		run_job(j);
		free(j);
		pthread_mutex_lock(&E.lk);
	}
	pthread_mutex_unlock(&E.lk);
	return NULL;
}

static const char *default_cache_dir(char *buf, size_t len)
{
	const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");

	if (x && *x == '/')
		snprintf(buf, len, "%s/residfs/blocks", x);
	else if (h && *h)
		snprintf(buf, len, "%s/.cache/residfs/blocks", h);
	else
		return NULL;
	return buf;
}

static int start_workers(void);

/* Starts the workers and opens the disk cache, once. */
static enum rfs_code start(struct rfs_err *err)
{
	int ret = 0;

	pthread_mutex_lock(&E.lk);
	if (E.started)
		goto out;
	if (!E.configured) {
		rfs_remote_conf_default(&E.conf);
		E.configured = 1;
	}
	rfs_http_global_init();
	E.lru.next = E.lru.prev = &E.lru;
	E.cappool = (size_t)(E.conf.memory / BS);
	E.pool = calloc(E.cappool ? E.cappool : 1, sizeof(*E.pool));
	if (!E.pool) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	if (E.conf.cache_size) {
		char dbuf[4096];
		const char *dir = E.conf.cache_dir ? E.conf.cache_dir : default_cache_dir(dbuf, sizeof(dbuf));
		struct rfs_dcache_conf dc = { .dir = dir, .max_bytes = E.conf.cache_size, .min_free_pct = 5,
					      .block_size = BS };
		struct rfs_err e = { 0 };

		if (!dir || rfs_dcache_open(&dc, &E.dc, &e)) {
			rfs_log(RFS_LOG_WARN, "no disk block cache: %s", dir ? e.msg : "no HOME");
			E.dc = NULL;
		}
	}
	if (start_workers()) {
		ret = rfs_errf(err, RFS_E_IO, "cannot start remote worker threads");
		goto out;
	}
	E.started = 1;
out:
	pthread_mutex_unlock(&E.lk);
	return ret;
}

/* Joins the workers; E.lk not held.  Queued jobs stay queued. */
static void stop_workers(void)
{
	unsigned i;

	pthread_mutex_lock(&E.lk);
	E.stop = 1;
	pthread_cond_broadcast(&E.work);
	pthread_mutex_unlock(&E.lk);
	for (i = 0; i < E.nworkers; i++)
		pthread_join(E.workers[i], NULL);
	pthread_mutex_lock(&E.lk);
	free(E.workers);
	E.workers = NULL;
	E.nworkers = 0;
	E.stop = 0;
	pthread_mutex_unlock(&E.lk);
}

static int start_workers(void)
{
	unsigned i;

	E.workers = calloc(E.conf.connections, sizeof(*E.workers));
	if (!E.workers)
		return -1;
	for (i = 0; i < E.conf.connections; i++) {
		if (pthread_create(&E.workers[i], NULL, worker, NULL))
			break;
		E.nworkers++;
	}
	return E.nworkers ? 0 : -1;
}

void rfs_remote_quiesce(void)
{
	if (E.started && E.nworkers)
		stop_workers();
}

enum rfs_code rfs_remote_resume(struct rfs_err *err)
{
	int ret = 0;

	pthread_mutex_lock(&E.lk);
	if (E.started && !E.nworkers && start_workers())
		ret = rfs_errf(err, RFS_E_IO, "cannot start remote worker threads");
	pthread_mutex_unlock(&E.lk);
	return ret;
}

void rfs_remote_cancel(void)
{
	atomic_store(&E.cancel, 1);
	pthread_mutex_lock(&E.lk);
	pthread_cond_broadcast(&E.done);
	pthread_mutex_unlock(&E.lk);
}

void rfs_remote_shutdown(void)
{
	size_t h;

	if (!E.started)
		return;
	stop_workers();
	for (h = 0; h < NBUCKETS; h++)
		while (E.tab[h])
			unlink_free(E.tab[h]);
	while (E.npool) {
		munmap(E.pool[--E.npool], BS);
		E.mem -= BS;
	}
	free(E.pool);
	E.pool = NULL;
	E.cappool = 0;
	rfs_dcache_close(E.dc);
	E.dc = NULL;
	while (E.groups) {
		struct rgroup *g = E.groups;

		E.groups = g->next;
		free(g->name);
		free(g);
	}
	E.groups_tail = NULL;
	E.started = 0;
	E.stop = 0;
}

/* ---- the byte source ------------------------------------------------------- */

static uint64_t deadline_from_now(void)
{
	return now_ns() + (uint64_t)(E.conf.timeout_s * 1e9);
}

/*
 * After a read of [@off, @off + @len): the file's sequential stream and
 * what it prefetches (E.lk held).  Reads from many threads arrive out of
 * order (the kernel's readahead sends several requests at once, each
 * wanting its ranges before it reads them in pieces), so a read counts as
 * part of the stream while it lies within a window behind the furthest
 * byte read (hwm), or at most a block past it (a part, once streaming);
 * anything else is a seek and starts a new stream.  A stream is the span it
 * covers, [start, hwm), and it takes two reads that each moved hwm: one
 * large read alone is not a stream, nor a jump over a block or more.
 */
static int streaming(const struct rfile *f)
{
	return E.prefetch_on && f->moves >= 2 && f->hwm - f->start >= RFS_TUNE_REMOTE_STREAM;
}

/* The end of the part that holds byte @x - 1 (parts are aligned to
 * RFS_TUNE_REMOTE_PART), at most the file's size. */
static uint64_t part_end(const struct rfile *f, uint64_t x)
{
	uint64_t e = (x + RFS_TUNE_REMOTE_PART - 1) / RFS_TUNE_REMOTE_PART * RFS_TUNE_REMOTE_PART;

	return e > f->b.size ? f->b.size : e;
}

/*
 * Prefetch starts once a stream spans RFS_TUNE_REMOTE_STREAM bytes.  When
 * the reader comes within half a window of what was prefetched, it
 * fetches up to hwm + window rounded up to a part boundary, so that every
 * GET after a stream's first is a whole aligned part (fewer, larger
 * requests: per-request costs dominate on object stores), and doubles the
 * window (up to RFS_TUNE_REMOTE_WINDOW) each time the reader catches up.
 */
static void prefetch_locked(struct rfile *f, uint64_t off, uint64_t len)
{
	uint64_t end = off + len, from, to, b0, b1, got;

	if (off + RFS_TUNE_REMOTE_WINDOW < f->hwm ||
	    off > f->hwm + (streaming(f) ? RFS_TUNE_REMOTE_PART : BS)) {
		f->start = off; /* a seek */
		f->hwm = end;
		f->pf_end = end;
		f->window = 0;
		f->moves = 1;
		return;
	}
	if (off < f->start)
		f->start = off;
	if (end > f->hwm) {
		f->hwm = end;
		f->moves++;
	}
	if (!streaming(f) || E.pref.n >= 4 * E.nworkers)
		return;
	if (f->pf_end >= f->hwm + f->window / 2 && f->window)
		return; /* far enough ahead */
	if (!f->window)
		f->window = RFS_TUNE_REMOTE_PART;
	else if (f->pf_end > f->hwm && f->window < RFS_TUNE_REMOTE_WINDOW)
		f->window *= 2;
	from = f->pf_end > f->hwm ? f->pf_end : f->hwm;
	to = part_end(f, f->hwm + f->window);
	if (from >= to)
		return;
	b0 = from / BS;
	b1 = (to - 1) / BS;
	got = want_locked(f, b0, (unsigned)(b1 - b0 + 1), NULL, 1);
	if (got)
		f->pf_end = (b0 + got) * (uint64_t)BS > to ? to : (b0 + got) * (uint64_t)BS;
}

void rfs_remote_set_prefetch(int on)
{
	pthread_mutex_lock(&E.lk);
	E.prefetch_on = on;
	pthread_mutex_unlock(&E.lk);
}

static enum rfs_code changed_err(struct rfile *f, struct rfs_err *err)
{
	pthread_mutex_lock(&f->lk);
	rfs_errf(err, RFS_E_CHANGED, "%s: %s", f->name, f->why);
	pthread_mutex_unlock(&f->lk);
	return RFS_E_CHANGED;
}

/* Starts a read of [@off, @off + @len): the window ahead, and its blocks:
 * to the end of their part when the read belongs to a stream (a GET of a
 * few MiB costs little more than one of a block), else exactly those
 * asked for (a lone read, and every read while planning) (E.lk held). */
static void start_read(struct rfile *f, uint64_t off, uint64_t len)
{
	uint64_t bend = (off + len - 1) / BS + 1, wend = bend;

	prefetch_locked(f, off, len);
	if (streaming(f))
		wend = (part_end(f, bend * (uint64_t)BS) + BS - 1) / BS;
	want_locked(f, off / BS, (unsigned)(wend - off / BS < 4096 ? wend - off / BS : 4096), NULL, 0);
}

/* Waits until none of @bl[0..@n) is FETCH, or one holds a failure just
 * reported to another reader (fail_block), or a little past @deadline
 * (the worker gives up by it) (E.lk held). */
static void wait_blocks(struct blk **bl, unsigned n, uint64_t deadline)
{
	struct timespec ts, now;
	uint64_t t;
	unsigned i;

	for (;;) {
		int fetching = 0;

		for (i = 0; i < n; i++) {
			if (bl[i]->st == B_FAILED && bl[i]->told && !fail_expired(bl[i]))
				return; /* a failure just reported: the read fails now */
			fetching |= bl[i]->st == B_FETCH;
		}
		if (!fetching || now_ns() > deadline + 2000000000ull || atomic_load(&E.cancel))
			return;
		clock_gettime(CLOCK_REALTIME, &now);
		t = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec + 500000000ull;
		ts.tv_sec = (time_t)(t / 1000000000ull);
		ts.tv_nsec = (long)(t % 1000000000ull);
		pthread_cond_timedwait(&E.done, &E.lk, &ts);
	}
}

/* Counts a read of READY block @x (E.lk held). */
static void count_use(struct rfile *f, struct blk *x)
{
	if (!x->used) {
		x->used = 1;
		if (x->prefetch)
			COUNT(f, prefetched, 1);
	} else {
		COUNT(f, mem_hits, 1);
	}
}

/* Why block @x (not READY) failed a read of [@off, @off + @len), in @err. */
static enum rfs_code block_err(struct rfile *f, struct blk *x, enum bstate st, uint64_t off,
			       uint64_t len, struct rfs_err *err)
{
	if (st == B_FAILED && !x->told) {
		x->told = 1;
		x->failed_at = now_ns(); /* held from when the reader heard of it */
	}
	if (st == B_FETCH && atomic_load(&E.cancel))
		return rfs_errf(err, RFS_E_IO, "%s: bytes %llu-%llu: the mount is ending", f->name,
				(unsigned long long)off, (unsigned long long)(off + len - 1));
	if (st == B_FETCH)
		return rfs_errf(err, RFS_E_IO, "%s: bytes %llu-%llu: no answer within %.0f s", f->name,
				(unsigned long long)off, (unsigned long long)(off + len - 1), E.conf.timeout_s);
	if (x->code == RFS_E_CHANGED)
		return RFS_E_CHANGED;
	return rfs_errf(err, x->code ? x->code : RFS_E_IO, "%s: bytes %llu-%llu: %s", f->name,
			(unsigned long long)off, (unsigned long long)(off + len - 1), x->why ? x->why : "failed");
}

/*
 * After a wait: when a block of @bl[0..@n) was being fetched before the
 * reader began (@since) and failed after, for a reason that may pass (not
 * a change of the file), and the reader's @deadline is not reached, lets
 * go of all of them, drops those failed blocks nobody else holds (so that
 * the next want fetches them anew) and returns 1: the reader asks again.
 * A fetch that was already under way when a fault ended (it stalled, say)
 * then does not fail a reader that came later with time left.  A fetch the
 * reader itself started answers it with its failure (it had its deadline),
 * and failures older than the reader answer at once (fail_block).
 * (E.lk held.)
 */
static int retry_failed(struct blk **bl, unsigned n, uint64_t since, uint64_t deadline)
{
	struct timespec ts;
	unsigned i, again = 0;

	if (now_ns() >= deadline)
		return 0;
	for (i = 0; i < n; i++)
		again |= bl[i]->st == B_FAILED && bl[i]->code != RFS_E_CHANGED && bl[i]->failed_at >= since &&
			 bl[i]->started < since;
	if (!again)
		return 0;
	for (i = 0; i < n; i++) {
		struct blk *b = bl[i];

		if (b->st == B_FAILED && b->refs == 1 && b->failed_at >= since && b->started < since) {
			unlink_free(b);
			continue;
		}
		release_locked(b);
	}
	/* another reader holding a failed block lets go of it soon */
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 50000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(&E.done, &E.lk, &ts);
	return 1;
}

static enum rfs_code rpread(struct rfs_bsrc *s, void *buf, size_t len, uint64_t off,
			    struct rfs_err *err)
{
	struct rfile *f = (struct rfile *)s;
	uint64_t since = now_ns(), deadline = deadline_from_now(), b, bend;
	struct blk *bl[WANT_MAX_BLOCKS];
	enum bstate st[WANT_MAX_BLOCKS];
	char *dst = buf;
	int ret = 0;

	if (atomic_load(&f->changed))
		return changed_err(f, err);
	if (off > s->size || len > s->size - off)
		return rfs_errf(err, RFS_E_IO, "%s: bytes %llu-%llu are past its end (%llu bytes)", f->name,
				(unsigned long long)off, (unsigned long long)(off + len),
				(unsigned long long)s->size);
	if (!len)
		return 0;
	bend = (off + len - 1) / BS + 1;
	pthread_mutex_lock(&E.lk);
	start_read(f, off, len);
	for (b = off / BS; b < bend && !ret;) {
		unsigned n = bend - b > WANT_MAX_BLOCKS ? WANT_MAX_BLOCKS : (unsigned)(bend - b), i, bad = 0;

		n = want_locked(f, b, n, bl, 0);
		if (!n) { /* out of memory creating a block */
			ret = rfs_errf(err, RFS_E_NOMEM, "%s: out of memory", f->name);
			break;
		}
		wait_blocks(bl, n, deadline);
		if (retry_failed(bl, n, since, deadline))
			continue;
		/* the blocks are held: READY ones cannot change or go, so
		 * their bytes are copied without the lock */
		for (i = 0; i < n; i++)
			st[i] = bl[i]->st;
		pthread_mutex_unlock(&E.lk);
		for (i = 0; i < n && !bad; i++) {
			struct blk *x = bl[i];
			uint64_t bo = x->idx * (uint64_t)BS;
			uint64_t from = off > bo ? off - bo : 0;
			uint64_t to = off + len < bo + x->len ? off + len - bo : x->len;

			if (st[i] == B_READY)
				memcpy(dst + (bo + from - off), x->data + from, to - from);
			else
				bad = i + 1;
		}
		pthread_mutex_lock(&E.lk);
		if (bad) {
			ret = block_err(f, bl[bad - 1], st[bad - 1], off, len, err);
			for (i = 0; i < n; i++) /* the kernel's retry fails at once */
				if (st[i] == B_FAILED && !bl[i]->told)
					block_err(f, bl[i], st[i], off, len, NULL);
		}
		for (i = 0; i < n; i++) {
			if (st[i] == B_READY)
				count_use(f, bl[i]);
			release_locked(bl[i]);
		}
		b += n;
	}
	pthread_mutex_unlock(&E.lk);
	if (ret == RFS_E_CHANGED)
		return changed_err(f, err);
	return ret;
}

static enum rfs_code rpin(struct rfs_bsrc *s, uint64_t off, size_t len, const char **at,
			  void **token, struct rfs_err *err)
{
	struct rfile *f = (struct rfile *)s;
	uint64_t since = now_ns(), deadline = deadline_from_now();
	struct blk *x;
	enum bstate st;
	int ret;

	*at = NULL;
	if (!len || off > s->size || len > s->size - off || off / BS != (off + len - 1) / BS)
		return 0; /* not in one block: the caller reads */
	if (atomic_load(&f->changed))
		return changed_err(f, err);
	pthread_mutex_lock(&E.lk);
	start_read(f, off, len);
	do {
		if (!want_locked(f, off / BS, 1, &x, 0)) {
			pthread_mutex_unlock(&E.lk);
			return 0;
		}
		wait_blocks(&x, 1, deadline);
	} while (retry_failed(&x, 1, since, deadline));
	st = x->st;
	if (st == B_READY) {
		count_use(f, x);
		*at = x->data + (off - x->idx * (uint64_t)BS);
		*token = x;
		pthread_mutex_unlock(&E.lk);
		return 0;
	}
	ret = block_err(f, x, st, off, len, err);
	release_locked(x);
	pthread_mutex_unlock(&E.lk);
	return ret == RFS_E_CHANGED ? changed_err(f, err) : ret;
}

static void runpin(struct rfs_bsrc *s, void *token)
{
	(void)s;
	pthread_mutex_lock(&E.lk);
	release_locked(token);
	pthread_mutex_unlock(&E.lk);
}

static void rwant(struct rfs_bsrc *s, uint64_t off, uint64_t len)
{
	struct rfile *f = (struct rfile *)s;

	if (!len || off >= s->size || atomic_load(&f->changed))
		return;
	if (len > s->size - off)
		len = s->size - off;
	/* a want is the first sight of a read: it counts for the stream (the
	 * readahead's requests come in together, each wanting its ranges
	 * before it reads them in pieces) */
	pthread_mutex_lock(&E.lk);
	start_read(f, off, len);
	pthread_mutex_unlock(&E.lk);
}

int rfs_bsrc_is_remote(const struct rfs_bsrc *s)
{
	return s && s->ops == &rops;
}

static enum rfs_code rcheck(struct rfs_bsrc *s, int force, struct rfs_err *err)
{
	struct rfile *f = (struct rfile *)s;

	(void)force;
	return atomic_load(&f->changed) ? changed_err(f, err) : 0;
}

static void rclose(struct rfs_bsrc *s)
{
	struct rfile *f = (struct rfile *)s;
	struct jq *qs[2] = { &E.demand, &E.pref };
	unsigned q;

	pthread_mutex_lock(&E.lk);
	/* queued jobs of this file go; running ones are waited for */
	for (q = 0; q < 2; q++) {
		struct job **pp = &qs[q]->head, *prev = NULL;

		while (*pp) {
			struct job *j = *pp;

			if (j->f != f) {
				prev = j;
				pp = &j->next;
				continue;
			}
			*pp = j->next;
			if (qs[q]->tail == j)
				qs[q]->tail = prev;
			qs[q]->n--;
			for (unsigned i = 0; i < j->n; i++) {
				struct blk *b = find(&f->key, j->first + i);

				/* not a failure of the bytes: nothing to hold */
				fail_block(b, RFS_E_IO, "the file was closed");
				if (!b->refs)
					unlink_free(b);
			}
			atomic_fetch_sub(&f->jobs, 1);
			free(j);
		}
	}
	pthread_cond_broadcast(&E.done);
	while (atomic_load(&f->jobs))
		pthread_cond_wait(&E.done, &E.lk);
	pthread_mutex_unlock(&E.lk);
	pthread_mutex_destroy(&f->lk);
	free(f->url);
	free(f->name);
	free(f->identity);
	free(f->etag);
	free(f->auth);
	free(f->commit);
	free(f->linked_etag);
	if (f->userpwd) /* a secret: not left in freed memory */
		explicit_bzero(f->userpwd, strlen(f->userpwd));
	free(f->userpwd);
	free(f->sigv4);
	free(f->token_header);
	free(f->cdn);
	free(f);
}

static const struct rfs_bsrc_ops rops = {
	.pread = rpread,
	.map = NULL,
	.unmap = NULL,
	.check = rcheck,
	.close = rclose,
	.want = rwant,
	.pin = rpin,
	.unpin = runpin,
};

static char *dup_or_null(const char *s, int *bad)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*bad = 1;
	return d;
}

/* The counters of source @name, made on first use; NULL on ENOMEM. */
static struct rgroup *group_of(const char *name)
{
	struct rgroup *g;

	pthread_mutex_lock(&E.lk);
	for (g = E.groups; g && strcmp(g->name, name); g = g->next)
		;
	if (!g && (g = calloc(1, sizeof(*g)))) {
		g->name = strdup(name);
		if (!g->name) {
			free(g);
			g = NULL;
		} else {
			if (!E.groups_tail)
				E.groups_tail = &E.groups;
			*E.groups_tail = g;
			E.groups_tail = &g->next;
		}
	}
	pthread_mutex_unlock(&E.lk);
	return g;
}

enum rfs_code rfs_remote_open(const struct rfs_remote_file *rf, struct rfs_bsrc **out,
			      struct rfs_err *err)
{
	struct rfile *f;
	int bad = 0, ret;

	ret = start(err);
	if (ret)
		return ret;
	f = calloc(1, sizeof(*f));
	if (!f)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	f->url = dup_or_null(rf->url, &bad);
	f->name = dup_or_null(rf->name, &bad);
	f->identity = dup_or_null(rf->identity, &bad);
	f->etag = dup_or_null(rf->etag, &bad);
	f->auth = dup_or_null(rf->auth, &bad);
	f->commit = dup_or_null(rf->commit, &bad);
	f->linked_etag = dup_or_null(rf->linked_etag, &bad);
	f->sigv4 = dup_or_null(rf->sigv4, &bad);
	f->userpwd = dup_or_null(rf->userpwd, &bad);
	f->token_header = dup_or_null(rf->token_header, &bad);
	pthread_mutex_init(&f->lk, NULL);
	f->hub = rf->hub;
	if (bad || !f->url || !f->name || !f->identity) {
		rclose(&f->b);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	if (rf->source && !(f->grp = group_of(rf->source))) {
		rclose(&f->b);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	f->key = rfs_dcache_key_of(f->identity, strlen(f->identity));
	f->b.ops = &rops;
	f->b.size = rf->size;
	f->b.name = f->name;
	f->b.mtime_ns = rf->mtime_ns;
	f->b.mode = 0444;
	f->b.id = (struct rfs_bsrc_id){ .dev = 0, .ino = XXH3_64bits(f->identity, strlen(f->identity)),
					.size = rf->size, .mtime_ns = rf->mtime_ns };
	*out = &f->b;
	return 0;
}

enum rfs_code rfs_remote_fill(struct rfs_bsrc *s, void (*progress)(uint64_t done, void *ctx),
			      void *ctx, struct rfs_err *err)
{
	uint64_t off;
	char *buf;
	int ret = 0;

	if (!rfs_bsrc_is_remote(s))
		return 0;
	buf = malloc(RFS_TUNE_REMOTE_PART);
	if (!buf)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	for (off = 0; off < s->size && !ret; off += RFS_TUNE_REMOTE_PART) {
		size_t n = s->size - off < RFS_TUNE_REMOTE_PART ? (size_t)(s->size - off) : RFS_TUNE_REMOTE_PART;

		ret = rpread(s, buf, n, off, err);
		if (!ret && progress)
			progress(off + n, ctx);
	}
	free(buf);
	return ret;
}

void rfs_remote_stats(struct rfs_remote_stats *o)
{
	pthread_mutex_lock(&E.lk);
	*o = (struct rfs_remote_stats){
		.requests = E.requests, .bytes_fetched = E.bytes, .retries = E.retries,
		.failures = E.failures, .mem_hits = E.mem_hits, .disk_hits = E.disk_hits,
		.misses = E.misses, .prefetched = E.prefetched, .mem_bytes = E.mem, .mem_peak = E.peak,
	};
	pthread_mutex_unlock(&E.lk);
}

int rfs_remote_source_stats(size_t i, const char **name, struct rfs_remote_stats *o)
{
	struct rgroup *g;

	pthread_mutex_lock(&E.lk);
	for (g = E.groups; g && i; g = g->next)
		i--;
	if (g) {
		*name = g->name;
		*o = (struct rfs_remote_stats){
			.requests = g->requests, .bytes_fetched = g->bytes, .retries = g->retries,
			.failures = g->failures, .mem_hits = g->mem_hits, .disk_hits = g->disk_hits,
			.misses = g->misses, .prefetched = g->prefetched,
		};
	}
	pthread_mutex_unlock(&E.lk);
	return g ? 0 : -1;
}
