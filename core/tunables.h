/*
 * tunables.h - every number residfs chose rather than was given by a
 * format, in one place, each with the reason (or the measurement) behind
 * it.  Formats' own limits (the safetensors header cap, the 16 terms of a
 * SPEC) stay with their parsers; these are the ones a person tuning
 * residfs would look for.
 */
#ifndef RFS_TUNABLES_H
#define RFS_TUNABLES_H

/* ---- block cache (core/cache.c) ------------------------------------------ */

/* Block size, aligned to the virtual file: the kernel's read requests are
 * 1 MiB at 1 MiB-aligned offsets once the mount's readahead is raised, so
 * its requests are whole blocks (docs/architecture.md). */
#define RFS_TUNE_BLOCK (1u << 20)
/* Default --cache-size: enough for the partial reads of loaders (page
 * faults of mappings) with prefetch ahead; the daemon measured 281 MiB
 * peak RSS with it (docs/performance.md). */
#define RFS_TUNE_CACHE_BUDGET (256ull << 20)
/* Whole blocks kept mapped after eviction, so a busy cache does not fault
 * in and zero fresh pages for every block (16 MiB at most). */
#define RFS_TUNE_CACHE_POOL 16
/* Hash buckets of the block table: a 256 MiB budget is 256 blocks. */
#define RFS_TUNE_CACHE_BUCKETS 4096
/* Prefetch jobs queued at most (blocks are also bounded by half the budget). */
#define RFS_TUNE_PREFETCH_QUEUE 256
/* Blocks read ahead after a partial read, and the most a caller may ask. */
#define RFS_TUNE_PREFETCH_DEPTH 8
#define RFS_TUNE_PREFETCH_MAX_DEPTH 64
/* Prefetch worker threads: one per CPU, at most this many. */
#define RFS_TUNE_PREFETCH_WORKERS 8

/* ---- computing (core/read.c) --------------------------------------------- */

/* Elements per step of the pread fallback: 64 Ki float32 = 256 KiB per
 * operand buffer, per thread. */
#define RFS_TUNE_COMP_CHUNK (64u * 1024u)
/* Tensors in one batch for the backend: a 1 MiB read of small tensors is
 * one GPU submission (docs/cuda.md). */
#define RFS_TUNE_BATCH_TENSORS 64
/* Operand ranges under this are read, not mapped: a mapping costs an mmap,
 * a fault and a munmap (100k tensors of 38 bytes: 5.8 MB/s mapped, about
 * 300 MB/s staged); chunks of STAGE_CHUNK bytes are shared by neighbours;
 * a batch stages at most STAGE_BYTES in STAGE_SLOTS chunks. */
#define RFS_TUNE_STAGE_SMALL (16u << 10)
#define RFS_TUNE_STAGE_CHUNK (64u << 10)
#define RFS_TUNE_STAGE_BYTES (1u << 20)
#define RFS_TUNE_STAGE_SLOTS 16

/* ---- sources ------------------------------------------------------------- */

/* The largest config.json or index read (real ones are kilobytes; an index
 * of 100k tensors is a few MB). */
#define RFS_TUNE_MAX_JSON_FILE (64u << 20)
/* How long the path of a source file may go unchecked on read paths (its
 * descriptor is checked on every read; core/ident.h). */
#define RFS_TUNE_RECHECK_NS 1000000000ull

/* ---- FUSE (fs/mount.c) --------------------------------------------------- */

/* Entry, attribute and negative timeouts: the plan never changes while
 * mounted, so the kernel may keep every answer (a day). */
#define RFS_TUNE_FUSE_TIMEOUT_S 86400.0
/* Requests in flight: libfuse's default of 12 was the bottleneck of
 * parallel loaders (measured; docs/architecture.md, "FUSE settings"). */
#define RFS_TUNE_FUSE_MAX_BACKGROUND 64
/* Idle FUSE worker threads kept (--threads changes it for mounts). */
#define RFS_TUNE_FUSE_IDLE_THREADS 16
/* Readahead of the mount's device once mounted (--readahead-kb): makes
 * the kernel's requests 1 MiB (measured: 16,384 requests of 128 KiB for
 * 2 GiB became 2,048 of 1 MiB). */
#define RFS_TUNE_READAHEAD_KB 4096

/* ---- logging (core/log.c) ----------------------------------------------- */

/* Lines written at once before the rate limit applies, then lines a
 * second: a failing loader retries the same read many times a second. */
#define RFS_TUNE_LOG_BURST 50
#define RFS_TUNE_LOG_RATE 5
/* Distinct lines remembered by rfs_log_once (oldest forgotten first). */
#define RFS_TUNE_LOG_SEEN 4096

/* ---- export (core/export.c) ---------------------------------------------- */

/* Bytes per read-compute-write step: large enough for O_DIRECT writes and
 * GPU batches, small enough for 16 threads' buffers (128 MiB). */
#define RFS_TUNE_EXPORT_BLOCK (8u << 20)
/* Most export threads (--threads); the default is one per CPU, at most 16. */
#define RFS_TUNE_EXPORT_MAX_THREADS 64
#define RFS_TUNE_EXPORT_DEFAULT_THREADS 16
/* O_DIRECT alignment of export writes (the logical block size of every
 * disk and file system in use is at most this). */
#define RFS_TUNE_DIRECT_ALIGN 4096

/* ---- remote sources (core/remote.c, docs/remote.md) ---------------------- */

/* Unit of remote bytes in memory and in the disk block cache: what the lazy
 * mounts that came before use (mountpoint-s3, hf-mount); a 16 GB model is
 * 16k block files. */
#define RFS_TUNE_REMOTE_BLOCK (1u << 20)
/* Largest range of one GET: enough to amortise a request's latency (a
 * 20 ms round trip at 1 GB/s moves 20 MB), small enough that the
 * connections share a tensor. */
#define RFS_TUNE_REMOTE_PART (8u << 20)
/* The span a file's reads must cover, in two reads or more, before they
 * count as a stream (reads widened to whole parts, prefetch): two blocks.
 * A lone read fetches exactly its blocks; a stream's first parts come in
 * large GETs (per GET costs dominate small ones: an S3 server measured
 * 0.35x of curl's 8 MiB parts when a stream began only after a whole part,
 * docs/performance.md). */
#define RFS_TUNE_REMOTE_STREAM (2u << 20)
/* Sequential prefetch window: doubles from one part up to this. */
#define RFS_TUNE_REMOTE_WINDOW (64u << 20)
/* Worker threads, each one connection (--remote-connections). */
#define RFS_TUNE_REMOTE_CONNECTIONS 8
/* Remote blocks kept in memory, all files together (--remote-memory). */
#define RFS_TUNE_REMOTE_MEMORY (256ull << 20)
/* Deadline of one read before it fails with EIO (--remote-timeout). */
#define RFS_TUNE_REMOTE_TIMEOUT_S 60.0
/* Disk block cache bound (--remote-cache-size); it also keeps 5 % of its
 * file system free. */
#define RFS_TUNE_REMOTE_CACHE_SIZE (10ull << 30)
/* Backoff between attempts: 1 s doubling up to this (Retry-After wins). */
#define RFS_TUNE_REMOTE_BACKOFF_MAX_MS 8000
/* A range that failed answers at once for this long: the kernel retries a
 * failed read right away (readahead, then the read itself), and each retry
 * would otherwise wait a whole --remote-timeout again (measured: a stalled
 * range took 24 s to fail with a 6 s deadline). */
#define RFS_TUNE_REMOTE_FAIL_HOLD_MS 1000
/* Redirects followed for one request (Hub resolve -> CDN is one). */
#define RFS_TUNE_REMOTE_MAX_REDIRECTS 5

/* ---- GPU (kernels/backend.c) --------------------------------------------- */

/* Batches smaller than this run on the CPU even when a GPU is there:
 * below it the transfers cost more than the CPU sum (docs/cuda.md);
 * RESIDFS_GPU_MIN_ELEMENTS overrides it. */
#define RFS_TUNE_GPU_MIN_ELEMENTS (1u << 20)

#endif
