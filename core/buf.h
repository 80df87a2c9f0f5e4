/*
 * buf.h - a growable byte buffer (like git's strbuf).
 * After any failed append the buffer keeps its old contents and ->oom is
 * set; callers check once at the end with rfs_buf_ok().
 */
#ifndef RFS_BUF_H
#define RFS_BUF_H

#include <stddef.h>

struct rfs_buf {
	char *data; /* NUL-terminated when non-NULL */
	size_t len;
	size_t cap;
	int oom;
};

void rfs_buf_add(struct rfs_buf *b, const void *p, size_t n);
void rfs_buf_adds(struct rfs_buf *b, const char *s);
void rfs_buf_addf(struct rfs_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/** Appends @s as a JSON string literal, escaped as serde_json and Python's json do. */
void rfs_buf_add_json_str(struct rfs_buf *b, const char *s);
/** Same, but non-ASCII as \uXXXX escapes, as Python's json.dump does by default. */
void rfs_buf_add_json_str_ascii(struct rfs_buf *b, const char *s);
/** 1 when no allocation failed. */
int rfs_buf_ok(const struct rfs_buf *b);
/** Returns the storage (caller frees) and resets @b. */
char *rfs_buf_detach(struct rfs_buf *b, size_t *len);
/** Frees the storage; accepts NULL. */
void rfs_buf_release(struct rfs_buf *b);

#endif
