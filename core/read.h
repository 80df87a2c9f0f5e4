/*
 * read.h - reading a plan's virtual files: literal and passthrough
 * segments, and computed tensors, through the block cache when given one.
 *
 * Invariants:
 *  - reads are thread-safe: the plan is immutable and scratch buffers are
 *    per thread;
 *  - a read returns the bytes of one version of every source, or fails
 *    (RFS_E_CHANGED, RFS_E_IO): never bytes of two versions, never zeros
 *    for a source that ended early;
 *  - operand ranges are mapped only under the SIGBUS guard: a process
 *    that has not called rfs_busguard_install() (core/busguard.h) reads
 *    every operand with pread, the same bytes, more slowly;
 *  - this is the only module that knows both a file's segments and the
 *    cache: it tells the cache what a block is (a computed tensor's bytes
 *    under one 1 MiB block of the virtual file) and which blocks follow it;
 *  - everything a read uses besides the plan comes in its struct
 *    rfs_reader (the backend, the cache): no process-global state but the
 *    per-thread scratch buffers and the CPU kernels chosen once.
 */
#ifndef RFS_READ_H
#define RFS_READ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bsrc.h"
#include "err.h"
#include "ident.h"
#include "plan.h"

struct rfs_backend;
struct rfs_comp;
struct rfs_cache;

/**
 * What reads are given besides the file: where the arithmetic runs and
 * the block cache.  The caller owns both (and the struct); they are shared
 * by every thread reading with them.
 *
 * Lifetimes: @be must outlive @cache, which computes with it on its
 * prefetch threads until rfs_cache_free(); the struct itself need only
 * live through each call.
 */
struct rfs_reader {
	struct rfs_backend *be;  /* required (kernels/backend.h) */
	struct rfs_cache *cache; /* NULL: no caching */
};

/**
 * Checks that no byte source of @vf changed since the plan was built
 * (its ops->check on each; @force: check now rather than trust a verdict
 * younger than RFS_IDENT_RECHECK_NS).  RFS_E_CHANGED names the source;
 * *@which, when non-NULL, is set to it.
 */
enum rfs_code rfs_vfile_check(const struct rfs_vfile *vf, int force, struct rfs_bsrc **which,
			      struct rfs_err *err);

/**
 * Reads @len bytes at @off of @vf into @buf, computed tensors on @rd->be
 * and through @rd->cache when non-NULL.  Returns the count read, which is
 * less than @len only at end of file, or a negative rfs_code with @err
 * filled.  Safe to call from many threads at once.  A source file that
 * changed since the plan was built fails the read with RFS_E_CHANGED
 * (checked before and after the read, see rfs_vfile_check), never bytes
 * of two versions.
 */
ssize_t rfs_vfile_read(const struct rfs_vfile *vf, void *buf, size_t len, uint64_t off,
		       const struct rfs_reader *rd, struct rfs_err *err);

/**
 * Computes bytes [@off, @off + @len) of the tensor @c into @dst on @rd->be
 * (@rd->cache is not used: this is what fills it).  Uses per-thread
 * scratch buffers; thread-safe.
 */
enum rfs_code rfs_comp_compute(const struct rfs_comp *c, void *dst, uint64_t off, uint64_t len,
			       const struct rfs_reader *rd, struct rfs_err *err);

#endif
