/*
 * tdir.h - the files of a SPEC term, wherever they are.
 *
 * A term names a directory of model files: a local directory, a Hugging
 * Face Hub repository (hf://ORG/NAME[@REV], or a bare ORG/NAME that is no
 * local path), a snapshot in the local HF cache, or a web directory
 * (http(s)://HOST/PATH/).  Planning (source.c, hfdir.c) asks a term only
 * what this interface offers: whether a name exists and is a file, the
 * names at its top level, and a byte source (bsrc.h) for a file.  Remote
 * terms are resolved once, when opened: the revision becomes a commit and
 * every file has a size and an identity from then on (docs/remote.md).
 *
 * rfs_tdir_open decides what a term is:
 *   hf://...                   a Hub repository (hub.c)
 *   http://... or https://...  a web directory (webdir.c)
 *   s3://BUCKET/PREFIX         an S3 (or S3-compatible) prefix (s3.c)
 *   an existing local path     a local directory
 *   ORG/NAME[@REV] otherwise   a Hub repository, as the residuals package
 *                              decides (a name with a '/' that is no path)
 * A Hub term whose files are all in the local HF cache is read from there
 * with no request; files missing from it are read remotely, unless
 * HF_HUB_OFFLINE is set, which makes the term fail with the list of files
 * the cache lacks.
 */
#ifndef RFS_TDIR_H
#define RFS_TDIR_H

#include <stddef.h>
#include <stdint.h>

#include "bsrc.h"
#include "err.h"

struct rfs_tdir;

struct rfs_tdir_ops {
	/* 1 when @name is an entry of the term (anything, a dangling link too) */
	int (*exists)(struct rfs_tdir *t, const char *name);
	/* 1 when @name is a regular file (links followed) */
	int (*is_file)(struct rfs_tdir *t, const char *name);
	/* @name as a byte source: contained and regular, or an error naming it */
	enum rfs_code (*open)(struct rfs_tdir *t, const char *name, struct rfs_bsrc **out,
			      struct rfs_err *err);
	/* the names at the top level (unsorted, no "." or ".."); the caller
	 * frees each and the array */
	enum rfs_code (*list)(struct rfs_tdir *t, char ***names, size_t *n, struct rfs_err *err);
	void (*close)(struct rfs_tdir *t);
};

struct rfs_tdir {
	const struct rfs_tdir_ops *ops;
	char *label;          /* what messages call it: the path, hf://ORG/NAME@REV, the URL */
	char *resolved;       /* how it was resolved (inspect, model card), NULL for local dirs */
	char *repo_id;        /* ORG/NAME of a Hub term, else NULL */
	char *local_dir;      /* the local directory holding it (a path, an HF cache
			       * snapshot), NULL for remote terms */
};

/** Opens @term (see above); on failure @err names the term and what to do. */
enum rfs_code rfs_tdir_open(const char *term, struct rfs_tdir **out, struct rfs_err *err);

/** Closes @t; accepts NULL. */
static inline void rfs_tdir_close(struct rfs_tdir *t)
{
	if (t)
		t->ops->close(t);
}

/**
 * For splitting a SPEC (spec.c): 1 when @term is a remote term that can be
 * opened: hf://... and http(s)://.../ terms by their form (no request), a
 * bare ORG/NAME[@REV] that is no local path when the HF cache has it or
 * the Hub answers for it.  0 otherwise (local paths are spec.c's business).
 */
int rfs_tdir_probe(const char *term);

/** 1 when @term has the form of a remote term (no request made). */
int rfs_tdir_is_remote(const char *term);

/* The constructors behind rfs_tdir_open. */
enum rfs_code rfs_tdir_local(const char *dir, const char *label, struct rfs_tdir **out,
			     struct rfs_err *err);
enum rfs_code rfs_tdir_hub(const char *term, struct rfs_tdir **out, struct rfs_err *err);
enum rfs_code rfs_tdir_web(const char *url, struct rfs_tdir **out, struct rfs_err *err);
enum rfs_code rfs_tdir_s3(const char *term, struct rfs_tdir **out, struct rfs_err *err);

/* s3.c: 1 when @term has the form s3://BUCKET[/PREFIX] */
int rfs_s3_form(const char *term);
/* s3.c: for splitting a SPEC: 1 when @term has that form and, if its prefix
 * holds a '+' or '-' (it could be two terms run together), its listing has
 * a config.json (or fails for another reason, which the open reports) */
int rfs_s3_probe(const char *term);

/* s3.c, for tests and the fuzz target: reads one ListObjectsV2 page as
 * resolution does for the prefix @prefix ("" or ending with '/'), calling
 * @each for every top-level object kept; the continuation token (or "")
 * into @next.  0 or the error resolution would give. */
enum rfs_code rfs_s3_parse_listing(const char *body, size_t len, const char *prefix,
				   void (*each)(const char *name, uint64_t size, const char *etag,
						void *ctx),
				   void *ctx, char *next, size_t nlen, struct rfs_err *err);

/* hub.c: is @term a Hub id (hf://... or ORG/NAME[@REV])?  Fills @repo and
 * @rev (default "main") when it is. */
int rfs_hub_parse(const char *term, char *repo, size_t repolen, char *rev, size_t revlen);
/* hub.c: 1 when ORG/NAME@REV is in the HF cache or the Hub knows it */
int rfs_hub_probe(const char *repo, const char *rev);

/* hub.c, for tests and the fuzz target: parses a revision answer as
 * resolution does (the commit, then each top-level sibling's name, size and
 * identity) and calls @each for every file kept; 0 or the error resolution
 * would give. */
enum rfs_code rfs_hub_parse_revision(const char *body, size_t len, char commit[41],
				     void (*each)(const char *name, uint64_t size, const char *identity,
						  void *ctx),
				     void *ctx, struct rfs_err *err);

/** Frees the common fields (for implementations). */
void rfs_tdir_free_common(struct rfs_tdir *t);

#endif
