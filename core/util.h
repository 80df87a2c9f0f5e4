/*
 * util.h - small helpers shared by core/: reading whole files, a JSON
 * scanner that finds where a value sits in a text (so files can be
 * patched without re-serializing them), SHA-256, and time formatting.
 */
#ifndef RFS_UTIL_H
#define RFS_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "err.h"

/** Reads a whole file (at most @max bytes) into a NUL-terminated buffer the caller frees. */
enum rfs_code rfs_read_file(const char *path, size_t max, char **out, size_t *len, struct rfs_err *err);

/** Reads a file whose path is DIR/NAME; see rfs_read_file. */
enum rfs_code rfs_read_file_at(const char *dir, const char *name, size_t max, char **out,
			       size_t *len, struct rfs_err *err);

/**
 * Finds the value of the key path @keys[0].@keys[1]... in the JSON @text
 * (objects only).  On success stores the byte span [*beg, *end) of the
 * value and returns 0; -1 when absent or the text is not valid JSON.
 */
int rfs_json_span(const char *text, size_t len, const char *const *keys, size_t nkeys,
		  size_t *beg, size_t *end);

/** A replacement of the value at a key path (see rfs_json_span). */
struct rfs_json_patch {
	const char *const *keys;
	size_t nkeys;
	const char *value; /* replacement text (already JSON) */
};

/**
 * Applies the patches of @pt whose key path exists in @text (at most 8),
 * leaving every other byte as it was.  Returns a new buffer (caller frees,
 * length in *@olen) or NULL on ENOMEM.
 */
char *rfs_json_patch(const char *text, size_t len, const struct rfs_json_patch *pt, size_t n,
		     size_t *olen);

/**
 * pread of exactly @len bytes at @off, retrying EINTR and short reads.
 * Returns 0, or -1 with errno set (EIO when the file ends first: a source
 * that ends early has changed under us, which is an error, never zeros).
 */
int rfs_pread_all(int fd, void *buf, size_t len, uint64_t off);

/** 1 when DIR/NAME is a regular file (links followed). */
int rfs_file_exists_at(const char *dir, const char *name);

/** 1 when DIR/NAME names anything at all (a dangling link included). */
int rfs_entry_exists_at(const char *dir, const char *name);

/**
 * A term's directory as a containment boundary.  Model files come from
 * strangers: a file of a term must resolve inside the term's directory
 * (a link to /etc/shadow must not be served or exported), except that in
 * a Hugging Face cache snapshot (.../snapshots/REV/) the links into the
 * repository's blobs/ directory are how files are stored, so that
 * directory counts as inside too.
 */
struct rfs_root {
	char *dir;   /* the directory, resolved (realpath) */
	char *blobs; /* .../blobs beside snapshots/, resolved; NULL otherwise */
};

/** Resolves @dir (which must be a directory).  On failure @r is zeroed. */
enum rfs_code rfs_root_init(struct rfs_root *r, const char *dir, struct rfs_err *err);
/** Frees what rfs_root_init stored; accepts a zeroed root. */
void rfs_root_release(struct rfs_root *r);

/**
 * Opens @dir/@name for reading, where @dir is the path the user gave for
 * @r and @name a plain file name.  Refused (RFS_E_FORMAT, nothing left
 * open): anything that is not a regular file (a FIFO or a device is
 * refused without blocking or reading it) and a file that resolves
 * outside @r.  On success *@fd is open (close-on-exec) and *@st its fstat.
 */
enum rfs_code rfs_root_open(const struct rfs_root *r, const char *dir, const char *name, int *fd,
			    struct stat *st, struct rfs_err *err);

/**
 * Reads the whole regular file open as @fd (at most @max bytes, size from
 * @st) into a NUL-terminated buffer the caller frees; @path names it in
 * messages.  The descriptor stays open.
 */
enum rfs_code rfs_read_fd(int fd, const struct stat *st, const char *path, size_t max, char **out,
			  size_t *len, struct rfs_err *err);

/** Formats a shape as Python's list repr: "[128256, 4096]", "[]". */
void rfs_shape_str(const uint64_t *shape, unsigned ndim, char *buf, size_t len);

/** SHA-256 of @len bytes into 32 bytes; hex variant writes 65 bytes. */
void rfs_sha256(const void *data, size_t len, uint8_t out[32]);
void rfs_sha256_hex(const void *data, size_t len, char out[65]);

/** Formats @ns since the epoch as Python's datetime.isoformat() in UTC ("...+00:00"). */
void rfs_iso8601(int64_t ns, char *buf, size_t len);

/** "1.50 GiB" style. */
void rfs_human_bytes(uint64_t n, char *buf, size_t len);

#endif
