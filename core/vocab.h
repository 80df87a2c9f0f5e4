/*
 * vocab.h - shape rules: a delta fits its base tensor when the shapes are
 * equal, or when it has more rows and the tensor is a vocabulary tensor
 * (its first dimension is the base's vocab_size): an instruct model whose
 * tokenizer added tokens has a larger embedding and output head.  No other
 * tensor may change shape.
 */
#ifndef RFS_VOCAB_H
#define RFS_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "pstore.h"

/** How a delta's shape fits its base tensor's. */
enum rfs_fit {
	RFS_FIT_EQUAL,    /* the same shape */
	RFS_FIT_GROWS,    /* more rows, the other dimensions equal */
	RFS_FIT_MISMATCH, /* anything else */
};

/** Compares the shapes of @base and its delta @d. */
enum rfs_fit rfs_pb_shape_fit(const struct rfs_st_tensor *base, const struct rfs_st_tensor *d);
/** 1 when @t of @base may grow: its first dimension is the base's vocab_size. */
int rfs_pb_is_vocab(const struct rfs_src *base, const struct rfs_st_tensor *t);
/** The rule of rfs_pb_is_vocab in words, for messages; returns @buf. */
const char *rfs_pb_vocab_rule(const struct rfs_src *base, char *buf, size_t len);
/**
 * When the vocabulary grows to @vocab rows, every vocabulary tensor of the
 * plan's tensor infos from index @t0 on must have grown to it: an error
 * names the first that has not.
 */
int rfs_pb_check_vocab(struct rfs_build *b, const struct rfs_src *base, int64_t vocab, size_t t0);

#endif
