/*
 * cache.h - a block cache: blocks of bytes kept in memory under a hard
 * byte budget, evicted least recently used first, made at most once at a
 * time (concurrent readers of a block being made wait for it instead of
 * making it again: single flight), and made ahead on worker threads.
 *
 * The cache knows nothing of what its bytes are or how they are made.  A
 * block is named by its key: an opaque object, and the byte range
 * [start, start + len) of that object's bytes it holds; two keys name the
 * same block only when all three are equal.  The caller hands the cache
 * a fill function that writes the bytes of any range of an object, and,
 * for prefetch, a next function that says which block follows a block
 * (core/read.c: a computed tensor, blocks of 1 MiB aligned to the
 * virtual file, and the file's order of tensors).
 *
 * Invariants:
 *  - the bytes held (reserved before a block is filled) never exceed the
 *    budget; a block that does not fit once nothing more can be evicted is
 *    filled straight into the reader's buffer and not kept;
 *  - no lock of the cache is held while the caller's functions run, nor
 *    while bytes are copied out of a block;
 *  - a failed fill leaves nothing behind: the next read fills again.
 */
#ifndef RFS_CACHE_H
#define RFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "tunables.h"

/** Block size: a key's len is at most this (the pool holds blocks of it). */
#define RFS_CACHE_BLOCK RFS_TUNE_BLOCK
#define RFS_CACHE_DEFAULT_BUDGET RFS_TUNE_CACHE_BUDGET
/** Prefetch looks at most this many blocks ahead. */
#define RFS_CACHE_MAX_DEPTH RFS_TUNE_PREFETCH_MAX_DEPTH

/** A block: bytes [start, start + len) of the caller's object @obj. */
struct rfs_cache_key {
	const void *obj;
	uint64_t start;
	uint32_t len;
};

/** Where a block lies for the caller (two words the cache only passes back). */
struct rfs_cache_pos {
	uint64_t a, b;
};

/**
 * Writes the bytes named by @key into @dst (@key->len bytes).  Returns 0,
 * or a negative rfs_code with @err filled (the cache then keeps nothing).
 * Called from readers' threads and from the prefetch workers, never with
 * a lock of the cache held; @key may be a part of a block (a reader's
 * range that the cache does not keep).
 */
typedef int (*rfs_cache_fill_fn)(void *arg, const struct rfs_cache_key *key, void *dst,
				 struct rfs_err *err);

/**
 * Steps *@pos to the block that follows it and sets *@key to that
 * block's key.  Returns 0, or -1 when nothing follows (*@pos and *@key
 * are then unspecified).  Must be cheap: it is called up to the prefetch
 * depth times after each partial read.
 */
typedef int (*rfs_cache_next_fn)(void *arg, struct rfs_cache_pos *pos, struct rfs_cache_key *key);

/**
 * How the caller's blocks are made.  @arg is passed to both functions; a
 * block queued for prefetch keeps @fill and @arg, so @arg must stay valid
 * until rfs_cache_free().  @next NULL: nothing is prefetched.
 */
struct rfs_cache_src {
	rfs_cache_fill_fn fill;
	rfs_cache_next_fn next;
	void *arg;
};

struct rfs_cache;

struct rfs_cache_stats {
	uint64_t requests;       /* reads served (all files) */
	uint64_t bytes;          /* bytes returned by those reads */
	uint64_t hits;           /* block found computed */
	uint64_t prefetch_hits;  /* ... and it was computed by prefetch */
	uint64_t waits;          /* block found being computed: waited */
	uint64_t misses;         /* block computed by the reader */
	uint64_t uncached;       /* computed without caching (budget full) */
	uint64_t prefetched;     /* blocks computed by prefetch */
	uint64_t computed_bytes; /* bytes computed, all paths */
	uint64_t evictions;
	uint64_t compute_ns;     /* time spent computing */
	uint64_t used, budget;   /* bytes held / allowed */
};

/**
 * New cache of @budget bytes (0: no caching, every read fills) with
 * @workers prefetch threads (0: no prefetch; none either under a budget
 * of 4 blocks) looking @depth blocks ahead (at most RFS_CACHE_MAX_DEPTH).
 * Returns NULL on ENOMEM.  Threads start at once: create it after fork.
 */
struct rfs_cache *rfs_cache_new(uint64_t budget, unsigned workers, unsigned depth);

/** Stops the workers and frees everything; accepts NULL. */
void rfs_cache_free(struct rfs_cache *c);

/**
 * Copies bytes [@at, @at + @n) of block @key (@at counted from the
 * block's start; the range lies inside it) into @dst.
 *
 * A part of a block is served from the cache: a ready block is copied, a
 * block being filled is waited for, an absent one is filled by this
 * thread (into memory reserved within the budget, or, when nothing more
 * can be evicted, straight into @dst and not kept); then the blocks that
 * follow @pos (@src->next) are queued for the workers, as long as the
 * blocks made ahead and not read yet hold at most half the budget.
 *
 * The whole block is copied only when it is ready (a block being filled
 * is waited for); otherwise it is filled straight into @dst and not kept:
 * a reader asking for whole blocks keeps them itself (the kernel's page
 * cache), and a second copy here would only cost a memcpy.
 *
 * Under a budget of 0 nothing is kept: every read fills straight into
 * @dst.  Returns 0, or the fill's error (nothing kept).
 */
enum rfs_code rfs_cache_read(struct rfs_cache *c, const struct rfs_cache_src *src,
			     const struct rfs_cache_key *key, const struct rfs_cache_pos *pos, void *dst,
			     uint64_t at, uint64_t n, struct rfs_err *err);

/**
 * What rfs_cache_take_whole did with a whole block.
 */
enum rfs_take {
	RFS_TAKE_MISS,   /* not held: the caller fills it (a queued prefetch is dropped) */
	RFS_TAKE_COPIED, /* held (or being filled, then waited for): copied */
};

/**
 * For a reader that fills whole blocks itself (in batches): copies block
 * @key into @dst (@key->len bytes) when the cache holds it ready, else
 * counts a miss and the caller fills it itself, straight into its buffer,
 * and reports that with rfs_cache_count_computed().
 */
enum rfs_take rfs_cache_take_whole(struct rfs_cache *c, const struct rfs_cache_key *key, void *dst);

/** Counts @bytes computed outside the cache in @ns nanoseconds. */
void rfs_cache_count_computed(struct rfs_cache *c, uint64_t bytes, uint64_t ns);

/** Counts one request of @bytes for the statistics. */
void rfs_cache_count_request(struct rfs_cache *c, uint64_t bytes);

/** A snapshot of the counters. */
void rfs_cache_get_stats(struct rfs_cache *c, struct rfs_cache_stats *out);

/** The counters as one JSON object (caller frees), or NULL on ENOMEM. */
char *rfs_cache_stats_json(struct rfs_cache *c, size_t *len);

struct rfs_buf;
/** The same counters as members ("requests": N, ...) appended to @b, for
 * a caller that puts them in an object of its own (the mount's stats file). */
void rfs_cache_stats_members(struct rfs_cache *c, struct rfs_buf *b);

#endif
