/*
 * apply.h - apply mode: the plan of BASE + s1*D1 + s2*D2 ... is the base's
 * directory with each floating tensor that has a delta computed as
 * f32(base) + s1*f32(d1) + ... rounded once (docs/arithmetic.md), in the
 * base's shard layout and tensor order.
 *
 * What happens to one base tensor is decided by rfs_apply_classify, a pure
 * function of the base tensor, the deltas found for it and the options:
 *   - a non-floating base tensor (I64 buffers, U8 masks) passes through and
 *     may take no delta;
 *   - a floating one with deltas is merged (its dtype the output dtype,
 *     its rows grown when it is a vocabulary tensor and a delta has more);
 *   - a floating one without deltas is missing (an error naming it) unless
 *     --passthrough, then passes through, or is converted when --dtype
 *     changes its dtype.
 */
#ifndef RFS_APPLY_H
#define RFS_APPLY_H

#include <stdint.h>

#include "pstore.h"
#include "st.h"

/** How an output tensor is made from a base tensor. */
enum rfs_apply_how {
	RFS_APPLY_PASS,     /* the base's bytes */
	RFS_APPLY_MERGE,    /* base + scaled deltas */
	RFS_APPLY_CONVERT,  /* the base in another dtype, no delta */
	RFS_APPLY_MISSING,  /* a floating tensor without a delta, no --passthrough */
};

struct rfs_apply_in {
	const struct rfs_st_tensor *base;
	const char *base_file;             /* for messages */
	unsigned nterms;                   /* terms of the SPEC; deltas are 1..nterms-1 */
	const struct rfs_st_tensor *delta[RFS_SPEC_MAX_TERMS]; /* NULL: none in that term */
	const char *delta_file[RFS_SPEC_MAX_TERMS];
	int out_dtype;                     /* enum rfs_dtype of floating outputs, -1: the base's */
	int passthrough;
	uint64_t vocab_rows;               /* the base's vocab_size, 0 when unknown */
	const char *vocab_from;            /* where vocab_rows comes from, for messages */
};

struct rfs_apply_out {
	enum rfs_apply_how how;
	enum rfs_dtype dtype;              /* of the output tensor */
	uint64_t rows;                     /* its first dimension (grown or not) */
	unsigned ndelta;                   /* deltas that apply */
};

/**
 * Decides how the output tensor of @in->base is made.  An error
 * (RFS_E_MISMATCH, RFS_E_FORMAT) names the tensor, the files and both
 * shapes: a delta for a non-floating tensor, a delta that is not F32, BF16
 * or F16, a delta whose shape does not fit (only vocabulary tensors may
 * grow).  @out is set on success only.
 */
enum rfs_code rfs_apply_classify(const struct rfs_apply_in *in, struct rfs_apply_out *out,
				 struct rfs_err *err);

/** Builds the apply-mode plan of b->p (src[0] the base, the others residuals). */
int rfs_pb_apply(struct rfs_build *b);

#endif
