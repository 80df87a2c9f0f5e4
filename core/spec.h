/*
 * spec.h - the SPEC grammar of `residfs mount|export|inspect` (docs/cli.md).
 *
 *   SPEC  := TERM (('+' | '-') TERM)*
 *   TERM  := [NUMBER '*'] PATH
 *
 * NUMBER is what strtod reads (not "nan" or "inf"); the arithmetic is
 * float32, so a scale must survive the conversion to float32: zero, or a
 * magnitude in float32's normal range (rfs_spec_scale_check).  A SPEC
 * whose only reading has a scale outside it is refused, naming the scale.
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
enum rfs_code rfs_spec_parse(const char *text, rfs_spec_isdir_fn isdir, void *ctx,
			     struct rfs_spec *out, struct rfs_err *err);

/**
 * 0 when @scale survives the conversion to float32 (the arithmetic is
 * float32): exactly zero, of either sign (a term that adds nothing, with
 * no special meaning: its shapes and files still count), or a finite value
 * whose float32 rounding is a normal number, a magnitude from FLT_MIN
 * (1.1754944e-38) to FLT_MAX (3.4028235e38).  Otherwise RFS_E_SPEC with
 * @err (may be NULL) saying "scale S is ..." and why.
 */
enum rfs_code rfs_spec_scale_check(double scale, struct rfs_err *err);

/**
 * Reads a scale from the whole of @text (a number as strtod reads it, with
 * nothing before or after) and checks it as rfs_spec_scale_check does; a
 * number out of double's range counts as out of float32's.  On success
 * stores it in *@out; otherwise returns RFS_E_SPEC, leaves *@out alone and
 * @err says "'TEXT' is ..." (the caller puts the option's name before it).
 */
enum rfs_code rfs_spec_scale_parse(const char *text, double *out, struct rfs_err *err);

/**
 * Appends a term (for the long-flag form).  RFS_E_SPEC when full or when
 * @scale fails rfs_spec_scale_check; @s is unchanged on failure.
 */
enum rfs_code rfs_spec_add(struct rfs_spec *s, const char *path, double scale, struct rfs_err *err);

/** Frees the paths; accepts NULL; the spec is empty after. */
void rfs_spec_release(struct rfs_spec *s);

/**
 * Writes a canonical text form ("base+0.5*delta") into @buf: scales as %g,
 * or with all 17 digits where %g would not read back as the same double.
 */
void rfs_spec_format(const struct rfs_spec *s, char *buf, size_t len);

#endif
