/*
 * dcache.h - a disk block cache for remote bytes: blocks of blobs fetched
 * from the network (Hugging Face Hub, HTTP) kept as files on disk, so a
 * second mount, another repository holding the same blob, or a remount
 * after a reboot reads them from disk instead of the network.
 *
 * A blob is named by its content identity (struct rfs_dcache_key: the
 * 128-bit XXH3 of a string such as "sha256:<hex>" or
 * "etag:<host>:<etag>:<size>"), and cut into blocks of the cache's block
 * size: block i holds bytes [i * bs, (i + 1) * bs) of the blob, the last
 * one may be shorter.  The cache knows nothing of where the bytes come
 * from: the caller asks for a block (rfs_dcache_get) and, on a miss,
 * fetches it and hands it over (rfs_dcache_put).
 *
 * ON DISK
 *
 * Under the configured directory DIR (created, mode 0700, when missing):
 *
 *   DIR/v1/                      the format version
 *   DIR/v1/ab/                   fan-out by the key's first byte (hi >> 56)
 *   DIR/v1/ab/<hi><lo>-<block>   one block: hi, lo and the block index as
 *                                16 lowercase hex digits each (49 bytes)
 *   DIR/v1/ab/<name>.tmp.<pid>.<n>  a block being written
 *
 * A block file is a header of RFS_DCACHE_HDR_SIZE (64) bytes, all
 * integers little-endian, then the payload:
 *
 *   0  magic "rfsdcblk" (8 bytes)    32  block index (u64)
 *   8  format version, 1 (u32)       40  payload length (u32)
 *  12  block size (u32)              44  zero (u32)
 *  16  key.hi (u64)                  48  XXH3-64 of the payload (u64)
 *  24  key.lo (u64)                  56  XXH3-64 of bytes [0, 56) (u64)
 *
 * A block is served only when every field matches what the reader asks
 * for (magic, version, header checksum, key, index, block size, length)
 * and the payload hashes to the header's value.
 *
 * RULES
 *
 *  - The directory's contents are untrusted: a foreign, truncated or
 *    corrupt file is a miss, never a crash or wrong bytes; a block file
 *    that fails a check (or is not a regular file: a link, a directory, a
 *    FIFO) is deleted and counted as corrupt.  Files are opened with
 *    O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, the fan-out directories with
 *    O_NOFOLLOW too, so no symbolic link below DIR/v1 is ever followed
 *    (rfs_dcache_open deletes a link or a file where a fan-out directory
 *    belongs).  A directory under a block's name is removed only when
 *    empty, and is a miss while it stays.  Unknown names are left alone
 *    and not counted.
 *  - A block is written to a temporary file in its fan-out directory and
 *    renamed into place: a reader (of this process or another sharing the
 *    directory) sees a whole block or none.  Nothing is fsynced: a block
 *    torn by a crash fails its checksum and is deleted on its first read.
 *    Temporary files older than an hour (of crashed writers) are removed
 *    by rfs_dcache_open.
 *  - Least recently used blocks are evicted first.  The last use of a
 *    block is its file's mtime: a hit sets it to now (at most once a
 *    minute per block, to stay cheap), rfs_dcache_open orders the blocks it
 *    finds by it.  Before a block is stored, blocks are evicted while the
 *    bytes of block files (headers included) would exceed max_bytes, and
 *    while the file system has less than min_free_pct percent free; when
 *    eviction cannot make room the block is not stored.
 *  - Several processes may share a directory.  Each keeps its own index
 *    of the blocks (built by rfs_dcache_open, grown by its puts and by
 *    hits on blocks the others wrote), so the bytes it counts are
 *    approximate then: blocks written by the others are counted only once
 *    read (and only while they fit under max_bytes), and a block another
 *    process evicted is simply a miss (and leaves the index then).  Each
 *    process keeps its own count under max_bytes, so the directory may
 *    hold up to max_bytes per process sharing it.
 *  - Blocks of one directory are meant for one block size: a block of
 *    another size fails the header check and is deleted.
 *
 * Thread-safety: every function but rfs_dcache_close may be called from
 * many threads at once.  One mutex guards the index (a hash table and the
 * LRU list) and the counters; it is never held while a payload is read or
 * written, and no call waits for another thread's I/O: two threads
 * missing the same block both fetch it, and the second put is dropped.
 */
#ifndef RFS_DCACHE_H
#define RFS_DCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/** Bytes of a block file's header (the payload follows it). */
#define RFS_DCACHE_HDR_SIZE 64

struct rfs_dcache;

struct rfs_dcache_conf {
	/* the cache's own directory; created (mkdir -p, mode 0700) when missing */
	const char *dir;
	/* bound on the bytes of block files (headers included); 0: disabled */
	uint64_t max_bytes;
	/* also evict while the file system has less than this % free (0: the
	 * default, 5; at most 100) */
	unsigned min_free_pct;
	/* bytes per block (1 MiB in practice); blocks are [i*bs, (i+1)*bs) of
	 * a blob, the last may be shorter */
	uint32_t block_size;
};

/* The content identity of a blob: the 128-bit XXH3 of an identity string
 * such as "sha256:<hex>" or "etag:<host>:<etag>:<size>". */
struct rfs_dcache_key {
	uint64_t hi, lo;
};

struct rfs_dcache_stats {
	uint64_t hits;         /* gets served from disk */
	uint64_t misses;       /* gets not served (corrupt ones included) */
	uint64_t corrupt;      /* block files that failed a check, deleted */
	uint64_t writes;       /* blocks stored */
	uint64_t write_errors; /* blocks not stored: I/O errors (ENOSPC...), no room */
	uint64_t evictions;    /* blocks deleted to make room */
	uint64_t bytes;        /* bytes of block files counted (and being written) */
	uint64_t blocks;       /* block files counted */
};

/** The key of the identity string @identity (@len bytes): its XXH3-128. */
struct rfs_dcache_key rfs_dcache_key_of(const void *identity, size_t len);

/**
 * Opens the cache described by @conf: creates its directory when missing,
 * removes stale temporary files and reads the blocks already there (their
 * sizes and, from their mtimes, the LRU order).  max_bytes 0 disables the
 * cache: it opens without touching the disk (@conf->dir may be NULL), get
 * always misses and put does nothing.  Refused: no directory, a block size
 * of 0 or over 64 MiB, min_free_pct over 100 (RFS_E_RANGE); a directory
 * that cannot be made or opened, or whose v1 is not a directory
 * (RFS_E_IO).  On success *@out is the cache (rfs_dcache_close frees it).
 */
enum rfs_code rfs_dcache_open(const struct rfs_dcache_conf *conf, struct rfs_dcache **out,
			      struct rfs_err *err);

/** Frees @dc (the files stay); accepts NULL.  No other call may be running. */
void rfs_dcache_close(struct rfs_dcache *dc);

/**
 * Reads block @block of @key into @buf.  Returns 1 with exactly @len
 * payload bytes in @buf when the block is stored, its header matches
 * (magic, version, key, block index, block size, payload length == @len)
 * and the XXH3-64 of the payload matches; 0 otherwise, @buf's contents
 * then unspecified.  A block that fails any check is deleted (counted as
 * corrupt) and is a miss.  Never blocks on another thread's I/O.
 */
int rfs_dcache_get(struct rfs_dcache *dc, const struct rfs_dcache_key *key, uint64_t block,
		   void *buf, size_t len);

/**
 * Stores @len bytes of @buf as block @block of @key (@len at most the
 * block size).  Best effort: errors such as ENOSPC are counted, never
 * fatal, and so is a block that eviction cannot make room for (one larger
 * than max_bytes evicts nothing).  A block already indexed (stored, or
 * being stored by another thread) is not written again.  Written to a
 * temporary file in the same directory and renamed into place, so a reader
 * (in this or another process sharing the directory) sees a whole block or
 * none.  Evicts least recently used blocks first to stay under max_bytes
 * and above min_free_pct free.
 */
void rfs_dcache_put(struct rfs_dcache *dc, const struct rfs_dcache_key *key, uint64_t block,
		    const void *buf, size_t len);

/** A snapshot of the counters. */
void rfs_dcache_stats(struct rfs_dcache *dc, struct rfs_dcache_stats *out);

#endif
