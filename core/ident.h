/*
 * ident.h - an open source file, its identity and change detection.
 *
 * The plan reads every source file through a descriptor opened once, at
 * mount time, and checks the file's layout then.  A file that someone
 * rewrites in place afterwards (same inode, other bytes), replaces by
 * rename, truncates or deletes would otherwise be read with the old
 * header's offsets: silently wrong bytes.  So each file keeps the identity
 * it had when it was checked (device, inode, size, mtime, ctime) and
 * rfs_ident_check() compares it with both the descriptor (fstat: changed
 * in place, truncated) and the path (stat: replaced, deleted, something
 * else swapped in).  Once a change is seen the file stays "changed" for
 * the life of the plan: every read of bytes derived from it fails.
 *
 * What the descriptor shows is checked on every call (one fstat): a write
 * in place updates mtime and ctime before it copies its bytes, so a read
 * checked before and after saw no new byte.  The path (a stat and its
 * lookup) is checked at most once per RFS_IDENT_RECHECK_NS per file on read
 * paths, and on every open: a file replaced by rename or deleted leaves
 * our descriptor on the old, consistent bytes, so that can wait a moment.
 * Thread-safe: the fields after init are atomics or read-only.
 *
 * Readers do not call this directly: a local byte source (bsrc.h) wraps
 * one identity and its check is the source's ops->check.
 */
#ifndef RFS_IDENT_H
#define RFS_IDENT_H

#include <stdint.h>
#include <sys/stat.h>

#include "err.h"
#include "tunables.h"

/* How stale the path's verdict may get on read paths: reads that start
 * later than this after a file was replaced or deleted fail (until then
 * they get the old file's bytes, whole).  One stat a second per file. */
#define RFS_IDENT_RECHECK_NS RFS_TUNE_RECHECK_NS

struct rfs_ident {
	const char *path;     /* as the user named it, for messages; not owned */
	char *abs;            /* absolute path stat()ed by checks; owned, NULL: path */
	int fd;               /* not owned */
	uint64_t dev, ino, size;
	int64_t mtime_ns, ctime_ns;
	unsigned mode;        /* permission bits when checked */
	uint64_t next_check;  /* monotonic ns; atomic */
	int changed;          /* sticky; atomic */
	char why[160];        /* what changed: written once, before changed is set */
};

/** Records @st (an fstat of @fd, opened from @path) as the identity. */
void rfs_ident_init(struct rfs_ident *id, const char *path, int fd, const struct stat *st);

/**
 * Checks will stat @dir/@name (an absolute directory: a daemon changes its
 * working directory) rather than the path given to rfs_ident_init.
 * RFS_E_NOMEM on failure.
 */
int rfs_ident_locate(struct rfs_ident *id, const char *dir, const char *name);

/** Frees what rfs_ident_locate stored. */
void rfs_ident_release(struct rfs_ident *id);

/**
 * 0 while the file is as recorded; RFS_E_CHANGED once it is not, with
 * @err naming the file and what changed.  The descriptor is checked every
 * time; the path, without @force, only when its last check is older than
 * RFS_IDENT_RECHECK_NS.
 */
enum rfs_code rfs_ident_check(struct rfs_ident *id, int force, struct rfs_err *err);

/** Nanoseconds of a timespec, for identities and mtimes. */
int64_t rfs_ts_ns(const struct timespec *ts);

#endif
