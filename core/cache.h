/*
 * cache.h - the block cache of a mount: computed tensor bytes in blocks of
 * RFS_CACHE_BLOCK, an LRU with a hard byte budget, single-flight misses
 * (concurrent readers of a block being computed wait for it instead of
 * computing it again) and prefetch on worker threads.
 *
 * Prefetch is sequential and safetensors-aware: after a read of block k
 * of a tensor, the next blocks of that tensor and then of the tensors that
 * follow it in the file (the header gives the order) are queued, as long
 * as the cache has room.  No lock is held while computing or reading.
 */
#ifndef RFS_CACHE_H
#define RFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "plan.h"

#define RFS_CACHE_BLOCK (1u << 20)
#define RFS_CACHE_DEFAULT_BUDGET (256ull << 20)

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
 * New cache of @budget bytes (0: no caching, every read computes) with
 * @workers prefetch threads (0: no prefetch) looking @depth blocks ahead.
 * Returns NULL on ENOMEM.  Threads start at once: create it after fork.
 */
struct rfs_cache *rfs_cache_new(uint64_t budget, unsigned workers, unsigned depth);

/** Stops the workers and frees everything; accepts NULL. */
void rfs_cache_free(struct rfs_cache *c);

/**
 * Reads @len bytes at @off of segment @segi (a computed one) of @vf into
 * @dst through the cache.  Same contract as rfs_vfile_read for that range.
 */
int rfs_cache_read(struct rfs_cache *c, const struct rfs_vfile *vf, size_t segi,
		   char *dst, uint64_t off, uint64_t len, struct rfs_err *err);

/**
 * For a reader that batches its computations: when bytes [@off, @off +
 * @len) of segment @segi are exactly one whole block, copies it into @dst
 * if the cache holds it ready (returns 1) or returns 0: the caller
 * computes it itself, straight into its buffer, and reports that with
 * rfs_cache_count_computed().  Returns -1 for any other range (use
 * rfs_cache_read()).
 */
int rfs_cache_take_whole(struct rfs_cache *c, const struct rfs_vfile *vf, size_t segi,
			 char *dst, uint64_t off, uint64_t len);

/** Counts @bytes computed outside the cache in @ns nanoseconds. */
void rfs_cache_count_computed(struct rfs_cache *c, uint64_t bytes, uint64_t ns);

/** Counts one request of @bytes for the statistics. */
void rfs_cache_count_request(struct rfs_cache *c, uint64_t bytes);

/** A snapshot of the counters. */
void rfs_cache_get_stats(struct rfs_cache *c, struct rfs_cache_stats *out);

/** The counters as one JSON object (caller frees), or NULL on ENOMEM. */
char *rfs_cache_stats_json(struct rfs_cache *c, size_t *len);

#endif
