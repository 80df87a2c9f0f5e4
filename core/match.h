/*
 * match.h - how a delta's tensor names map onto the base's.  Exact by
 * default; when no name matches exactly but names do modulo a first
 * component, the delta was written from the model with its head
 * (`transformer.h.0...`, as the `residuals` package writes GPT-2) and the
 * base from the bare model (`h.0...`, as the hub's gpt2 file is), or the
 * other way round: the prefix that matches most names is taken.  Pure
 * functions of the two sources' name maps.
 */
#ifndef RFS_MATCH_H
#define RFS_MATCH_H

#include "err.h"
#include "source.h"

enum rfs_match_mode {
	RFS_MATCH_EXACT,        /* delta name = base name */
	RFS_MATCH_ADD_PREFIX,   /* delta name = prefix + base name */
	RFS_MATCH_STRIP_PREFIX, /* base name = prefix + delta name */
};

struct rfs_match {
	enum rfs_match_mode mode;
	char prefix[128];       /* with its trailing '.' */
};

/**
 * Chooses how @d's names match @base's.  RFS_E_MISMATCH (naming both
 * directories and an example of each) when no name matches either way.
 */
enum rfs_code rfs_match_choose(const struct rfs_src *base, const struct rfs_src *d, struct rfs_match *m,
			       struct rfs_err *err);

/** @d's tensor for the base tensor @name under @m, or NULL. */
const struct rfs_src_tensor *rfs_match_find(const struct rfs_src *d, const struct rfs_match *m,
					    const char *name);

#endif
