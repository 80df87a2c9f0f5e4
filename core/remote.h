/*
 * remote.h - byte sources whose bytes are on an HTTP(S) server: files of a
 * Hugging Face Hub repository (through its resolve URLs and the CDN they
 * redirect to) and files of a plain web directory.  docs/remote.md.
 *
 * A remote file is resolved once, when a term is opened (hub.c,
 * webdir.c): its URL, size and content identity (the sha256 of an LFS
 * file, the git blob id, or a web server's ETag) are fixed then, and every
 * byte read afterwards must come from that content.  rfs_remote_open makes
 * it a byte source (bsrc.h) that the plan reads like a local file, without
 * map: reads go through one engine per process:
 *
 *   - Bytes are handled in blocks of RFS_TUNE_REMOTE_BLOCK (1 MiB).  A
 *     block in memory is shared by every reader; the blocks kept in memory
 *     stay within the memory budget (--remote-memory), however many files
 *     are open: blocks nobody is reading are dropped, least recently used
 *     first.
 *   - A missing block is looked up in the disk block cache (dcache.h) by
 *     the file's content identity, so another mount, another repository
 *     with the same blob, or a remount after reboot reads it from disk;
 *     otherwise it is fetched.  Contiguous missing blocks are fetched
 *     together, in parts of at most RFS_TUNE_REMOTE_PART, by a pool of
 *     worker threads (--remote-connections), each with its own connection
 *     reused from request to request.  No lock is held across network I/O.
 *   - rfs_remote_want starts fetching a range without waiting: compute
 *     asks for the base and delta ranges of a tensor before reading either,
 *     so they travel together.
 *   - Sequential reading of a file prefetches ahead in a window that
 *     doubles from RFS_TUNE_REMOTE_PART to RFS_TUNE_REMOTE_WINDOW and
 *     resets on a seek; prefetch only uses memory the budget has free.
 *   - Each range GET must answer 206 with exactly the Content-Range asked
 *     for and the file's size; web directory files also send If-Match with
 *     their ETag.  Timeouts, resets, short bodies, stalls, 408/429/5xx and
 *     answers that ignore Range are retried with backoff (1 s doubling,
 *     Retry-After honoured) until the read's deadline (--remote-timeout);
 *     then the read fails with EIO, logged with the file, range and cause.
 *     An expired CDN URL (401/403/410) is resolved again.  A file whose
 *     size or identity is seen to change fails every later read
 *     (RFS_E_CHANGED): no read mixes old and new bytes.
 */
#ifndef RFS_REMOTE_H
#define RFS_REMOTE_H

#include <stdint.h>

#include "bsrc.h"
#include "err.h"

/* How remote reads behave (set once, before the first remote term). */
struct rfs_remote_conf {
	unsigned connections;     /* worker threads / connections */
	uint64_t memory;          /* budget for blocks in memory */
	double timeout_s;         /* deadline of one read */
	const char *cache_dir;    /* disk block cache directory, NULL: default */
	uint64_t cache_size;      /* its bound; 0 disables it */
};

/** The defaults (docs/remote.md). */
void rfs_remote_conf_default(struct rfs_remote_conf *c);

/**
 * Sets the configuration; takes effect for files opened after.  Copies
 * @c.  Called by the command line before terms are opened.
 */
void rfs_remote_configure(const struct rfs_remote_conf *c);

/** The deadline of one request or read (--remote-timeout) in ms, and how
 * long a transfer may go without a byte before it counts as stalled: a
 * quarter of it, from 2 to 15 s.  Resolution uses them too. */
long rfs_remote_timeout_ms(void);
long rfs_remote_stall_s(void);

/** What a resolved remote file is. */
struct rfs_remote_file {
	const char *url;          /* what to GET (a resolve URL, a file URL) */
	const char *name;         /* for messages: "hf://org/name@commit/file" */
	const char *source;       /* the term it belongs to, for the per-source
				   * counters: "hf://org/name@commit" */
	uint64_t size;
	const char *identity;     /* "sha256:<hex>", "git:<blob id>" or "etag:<origin>:<etag>" */
	const char *etag;         /* web files: the strong ETag sent as If-Match; NULL */
	const char *auth;         /* "Authorization: ..." for URLs of the same origin as @url */
	int hub;                  /* a Hub resolve URL: may redirect; headers are checked */
	const char *commit;       /* hub: the commit the URL names */
	const char *linked_etag;  /* hub: expected X-Linked-Etag or ETag (normalised) */
	int64_t mtime_ns;         /* shown as the file's mtime */
	/* S3 objects: requests to @url's origin are signed by libcurl */
	const char *sigv4;        /* "aws:amz:REGION:s3", or NULL */
	const char *userpwd;      /* "KEY:SECRET" */
	const char *token_header; /* "x-amz-security-token: ...", or NULL */
};

/** A byte source for @f (copied).  Opening makes no request. */
enum rfs_code rfs_remote_open(const struct rfs_remote_file *f, struct rfs_bsrc **out,
			      struct rfs_err *err);

/**
 * Fetches all of @s into the disk block cache (rfs_remote prefetch);
 * @progress (may be NULL) is called with the bytes done so far.  Local
 * sources return 0 at once.
 */
enum rfs_code rfs_remote_fill(struct rfs_bsrc *s, void (*progress)(uint64_t done, void *ctx),
			      void *ctx, struct rfs_err *err);

/** 1 when @s is a remote source. */
int rfs_bsrc_is_remote(const struct rfs_bsrc *s);

/**
 * Turns sequential prefetch (and the widening of reads to whole parts) on
 * or off; off at first: planning reads headers, which need neither.  The
 * command line turns it on once the plan is built.
 */
void rfs_remote_set_prefetch(int on);

/** Counters of the engine, for stats and tests. */
struct rfs_remote_stats {
	uint64_t requests, bytes_fetched, retries, failures;
	uint64_t mem_hits, disk_hits, misses, prefetched;
	uint64_t mem_bytes, mem_peak;
};
void rfs_remote_stats(struct rfs_remote_stats *out);

/**
 * The same counters for each source (the @source of the files opened),
 * in the order first opened: @i from 0 until it returns -1.  @name stays
 * valid until rfs_remote_shutdown.  mem_bytes and mem_peak are 0.
 */
int rfs_remote_source_stats(size_t i, const char **name, struct rfs_remote_stats *out);

/** Stops the workers (at exit); sources must be closed first. */
void rfs_remote_shutdown(void);

/**
 * The mount is ending (unmounted, or stopped by a signal): fetches under
 * way end at their next check (within about a second), waiting readers
 * and any later read fail at once, and failed fetches are not logged.
 * For the daemon's exit: libfuse waits for every request being answered,
 * and one waiting on a remote block would otherwise hold it for the
 * fetch's whole deadline.  Cannot be undone.
 */
void rfs_remote_cancel(void);

/**
 * Threads do not survive fork(2): before one, rfs_remote_quiesce lets the
 * running fetches finish and stops the workers (queued work and the blocks
 * stay); rfs_remote_resume, in the process that goes on, starts them
 * again.  Both do nothing when no remote source was opened.
 */
void rfs_remote_quiesce(void);
enum rfs_code rfs_remote_resume(struct rfs_err *err);

#endif
