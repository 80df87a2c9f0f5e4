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

/** What rfs_strmap_put did. */
enum rfs_put {
	RFS_PUT_NEW,    /* inserted */
	RFS_PUT_EXISTS, /* the key was there: its value is kept */
	RFS_PUT_NOMEM,  /* out of memory: nothing changed */
};

/** Inserts @key with @val unless it is there. */
enum rfs_put rfs_strmap_put(struct rfs_strmap *m, const char *key, void *val);
/** Value for @key or NULL. */
void *rfs_strmap_get(const struct rfs_strmap *m, const char *key);
/** Frees the table (not the keys); the map may be reused after. Accepts NULL. */
void rfs_strmap_release(struct rfs_strmap *m);

#endif
