/*
 * strmap.h - a small string -> pointer hash map (open addressing, xxh3).
 * Keys are borrowed: they must outlive the map.  Not thread-safe for
 * writers; concurrent readers of a map nobody writes are fine.
 */
#ifndef RFS_STRMAP_H
#define RFS_STRMAP_H

#include <stddef.h>

struct rfs_strmap {
	size_t cap;   /* power of two, or 0 */
	size_t count;
	const char **keys;
	void **vals;
};

/** Inserts @key; returns 0, 1 when the key was already there (value kept), -1 on ENOMEM. */
int rfs_strmap_put(struct rfs_strmap *m, const char *key, void *val);
/** Value for @key or NULL. */
void *rfs_strmap_get(const struct rfs_strmap *m, const char *key);
/** Frees the table (not the keys); the map may be reused after. Accepts NULL. */
void rfs_strmap_release(struct rfs_strmap *m);

#endif
