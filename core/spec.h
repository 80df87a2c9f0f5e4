/*
 * spec.h - the SPEC grammar of `residfs mount|export|inspect` (DESIGN 1).
 *
 *   SPEC  := TERM (('+' | '-') TERM)*
 *   TERM  := [NUMBER '*'] PATH
 *
 * Paths contain '+', '-' and '*' all the time (Meta-Llama-3-8B), so a SPEC
 * is split only where every operand is an existing directory.  When more
 * than one split works the SPEC is ambiguous and refused, with the
 * readings listed and the long-flag form suggested.  What a term *is*
 * (model or residuals) is decided later from its content, not here.
 */
#ifndef RFS_SPEC_H
#define RFS_SPEC_H

#include <stddef.h>

#include "err.h"

#define RFS_SPEC_MAX_TERMS 16

struct rfs_spec_term {
	char *path;   /* owned */
	double scale; /* sign included: "A-B" gives B scale -1 */
};

struct rfs_spec {
	size_t nterms;
	struct rfs_spec_term terms[RFS_SPEC_MAX_TERMS];
};

/**
 * Test hook: how the parser asks whether an operand is a directory.
 * NULL means stat(2) + S_ISDIR.
 */
typedef int (*rfs_spec_isdir_fn)(const char *path, void *ctx);

/**
 * Parses @text into @out.  Returns 0, or RFS_E_SPEC with @err describing
 * the problem: no reading at all (which operands are missing), or several
 * readings (each one listed).  On failure @out is zeroed.
 */
int rfs_spec_parse(const char *text, rfs_spec_isdir_fn isdir, void *ctx,
		   struct rfs_spec *out, struct rfs_err *err);

/** Appends a term (for the long-flag form).  RFS_E_SPEC when full. */
int rfs_spec_add(struct rfs_spec *s, const char *path, double scale, struct rfs_err *err);

/** Frees the paths; accepts NULL; the spec is empty after. */
void rfs_spec_release(struct rfs_spec *s);

/** Writes a canonical text form ("base+0.5*delta") into @buf. */
void rfs_spec_format(const struct rfs_spec *s, char *buf, size_t len);

#endif
