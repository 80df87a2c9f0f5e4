/*
 * bsrc.h - byte sources: the one seam through which residfs reads the
 * bytes of its inputs (safetensors headers, tensor data, passthrough
 * files).
 *
 * A source has a size, an identity a cache can key on, a name for
 * messages, and operations: a positional read, a mapping where the bytes
 * are a local file, and a change check.  Planning (st.c reading headers,
 * pstore.c recording segments and operands) and compute (read.c) see only
 * this interface, so a remote source (Hub, HTTP, S3) is one more ops table
 * and constructor: nothing else changes.
 *
 * Local files are the first implementation (rfs_bsrc_local_open): a
 * descriptor opened once through rfs_root_open (contained, regular), its
 * fstat as the identity, and change detection by rfs_ident (ident.h).
 *
 * Thread-safety: every op may be called from many threads at once on the
 * same source (the plan is shared by the mount's threads); only
 * rfs_bsrc_close needs the source to be idle.
 */
#ifndef RFS_BSRC_H
#define RFS_BSRC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "err.h"
#include "ident.h"

struct rfs_root;
struct rfs_bsrc;

/*
 * What a cache keys a source's bytes on: the same identity means the same
 * bytes.  Local files: device, inode, size and mtime.  A remote source
 * fills it from what names its content (dev 0, ino a hash of the URL and
 * revision or ETag, size, the last-modified time or 0).
 */
struct rfs_bsrc_id {
	uint64_t dev, ino, size;
	int64_t mtime_ns;
};

struct rfs_bsrc_ops {
	/* Exactly @len bytes at @off into @buf, or an error: never short.  A
	 * source that ends before @off + @len is RFS_E_IO (or RFS_E_CHANGED)
	 * with @err naming it. */
	enum rfs_code (*pread)(struct rfs_bsrc *s, void *buf, size_t len, uint64_t off,
			       struct rfs_err *err);
	/* Maps bytes [@off, @off + @len) read-only: *@win (page-aligned) of
	 * *@winlen bytes holds them from *@at.  NULL for sources that cannot
	 * map (remote ones): callers then use pread.  A mapped page past a
	 * truncated file's end raises SIGBUS (callers arm busguard.h). */
	enum rfs_code (*map)(struct rfs_bsrc *s, uint64_t off, size_t len, char **win,
			     size_t *winlen, const char **at, struct rfs_err *err);
	/* Releases what map returned. */
	void (*unmap)(struct rfs_bsrc *s, char *win, size_t winlen);
	/* 0 while the source still holds the bytes it had when opened;
	 * RFS_E_CHANGED (sticky) once it does not, @err naming it and what
	 * changed.  @force: check everything now rather than trust a recent
	 * verdict (see rfs_ident_check). */
	enum rfs_code (*check)(struct rfs_bsrc *s, int force, struct rfs_err *err);
	/* Frees the source (its descriptor, connection, ...). */
	void (*close)(struct rfs_bsrc *s);
	/* Starts getting [@off, @off + @len) without waiting (remote sources:
	 * the fetches of several operands then travel together); NULL for
	 * sources whose bytes are at hand. */
	void (*want)(struct rfs_bsrc *s, uint64_t off, uint64_t len);
	/* Remote sources: points *@at at [@off, @off + @len) in memory the
	 * source holds until unpin(*@token), without a copy, when the range
	 * lies in one of its blocks; *@at NULL (and 0) when it does not (the
	 * caller reads with pread).  An error only when the bytes cannot be
	 * had.  NULL for sources that map. */
	enum rfs_code (*pin)(struct rfs_bsrc *s, uint64_t off, size_t len, const char **at,
			     void **token, struct rfs_err *err);
	void (*unpin)(struct rfs_bsrc *s, void *token);
};

struct rfs_bsrc {
	const struct rfs_bsrc_ops *ops;
	uint64_t size;          /* bytes */
	struct rfs_bsrc_id id;
	const char *name;       /* for messages (a path, a URL); owned by the source */
	int64_t mtime_ns;       /* shown as the mount's mtime */
	unsigned mode;          /* permission bits a copy of its bytes may have */
	int reported;           /* rfs_bsrc_first_report; atomic */
};

/**
 * Opens @dir/@name of the term rooted at @root (contained, regular:
 * rfs_root_open) as a local source; checks will stat @root->dir/@name.
 */
enum rfs_code rfs_bsrc_local_open(const struct rfs_root *root, const char *dir, const char *name,
				  struct rfs_bsrc **out, struct rfs_err *err);

/**
 * A local source of the regular file open as @fd (@st its fstat), named
 * @path (checks stat it).  Takes @fd over, also on failure.
 */
enum rfs_code rfs_bsrc_local_fd(int fd, const struct stat *st, const char *path,
				struct rfs_bsrc **out, struct rfs_err *err);

/** The descriptor of a local source, -1 for other sources. */
int rfs_bsrc_fd(const struct rfs_bsrc *s);

/** rfs_ident_check's verdict for any source: s->ops->check. */
static inline enum rfs_code rfs_bsrc_check(struct rfs_bsrc *s, int force, struct rfs_err *err)
{
	return s->ops->check(s, force, err);
}

/** s->ops->pread. */
static inline enum rfs_code rfs_bsrc_pread(struct rfs_bsrc *s, void *buf, size_t len, uint64_t off,
					   struct rfs_err *err)
{
	return s->ops->pread(s, buf, len, off, err);
}

/** s->ops->want when the source has one. */
static inline void rfs_bsrc_want(struct rfs_bsrc *s, uint64_t off, uint64_t len)
{
	if (s->ops->want)
		s->ops->want(s, off, len);
}

/**
 * Reads all of @s (at most @max bytes, else RFS_E_FORMAT) into a
 * NUL-terminated buffer the caller frees; *@len, when non-NULL, its size.
 */
enum rfs_code rfs_bsrc_read_all(struct rfs_bsrc *s, size_t max, char **out, size_t *len,
				struct rfs_err *err);

/** 1 for the first caller (to log a change once), else 0. */
int rfs_bsrc_first_report(struct rfs_bsrc *s);

/** Frees @s; accepts NULL. */
void rfs_bsrc_close(struct rfs_bsrc *s);

#endif
