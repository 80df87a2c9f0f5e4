/*
 * Shape rules of the plan (vocab.h): when a delta's tensor fits a base
 * tensor, and the one case where it may be larger (vocabulary growth).
 */
#include "vocab.h"

#include <stdio.h>

/* Compares shapes allowing growth of dim 0: 0 equal, 1 @d has more rows, -1 mismatch. */
enum rfs_fit rfs_pb_shape_fit(const struct rfs_st_tensor *base, const struct rfs_st_tensor *d)
{
	unsigned i;

	if (base->ndim != d->ndim)
		return RFS_FIT_MISMATCH;
	for (i = 1; i < base->ndim; i++)
		if (base->shape[i] != d->shape[i])
			return RFS_FIT_MISMATCH;
	if (base->ndim == 0 || base->shape[0] == d->shape[0])
		return RFS_FIT_EQUAL;
	return d->shape[0] > base->shape[0] ? RFS_FIT_GROWS : RFS_FIT_MISMATCH;
}

/*
 * Vocabulary growth: residuals of an instruct model whose tokenizer added
 * tokens have more rows in the embedding and the output head.  Only those
 * tensors may grow: their first dimension is the base's vocab_size (from
 * its config.json) and the rows past it count as zero in the base.  Any
 * other tensor with more rows in a delta is an error, never a silent
 * change of the model's shape.
 */
int rfs_pb_is_vocab(const struct rfs_src *base, const struct rfs_st_tensor *t)
{
	return base->vocab_size > 0 && t->ndim >= 1 && t->shape[0] == (uint64_t)base->vocab_size;
}

/* What is_vocab_tensor allows, for messages. */
const char *rfs_pb_vocab_rule(const struct rfs_src *base, char *buf, size_t len)
{
	if (base->vocab_size > 0)
		snprintf(buf, len, "first dimension = vocab_size %lld of %s/config.json",
			 (long long)base->vocab_size, base->dir);
	else
		snprintf(buf, len, "first dimension = vocab_size, which %s/config.json lacks",
			 base->dir);
	return buf;
}

/* After vocabulary growth to @vocab rows, every vocabulary tensor of the
 * output must have grown to it: a model whose embedding and head disagree
 * on the vocabulary does not load. */
int rfs_pb_check_vocab(struct rfs_build *b, const struct rfs_src *base, int64_t vocab,
			     size_t t0)
{
	struct rfs_plan *p = b->p;
	size_t i;

	if (vocab <= base->vocab_size)
		return 0;
	for (i = t0; i < p->ntinfo; i++) {
		const struct rfs_tinfo *ti = &p->tinfo[i];

		if (!ti->ndim || ti->shape[0] - ti->grown_rows != (uint64_t)base->vocab_size)
			continue;
		if (ti->shape[0] != (uint64_t)vocab)
			return rfs_errf(b->err, RFS_E_MISMATCH,
					"tensor '%s': the vocabulary grows from %lld to %lld rows, but this vocabulary tensor has %llu in the result (its deltas disagree, or it has none)",
					ti->name, (long long)base->vocab_size, (long long)vocab,
					(unsigned long long)ti->shape[0]);
	}
	return 0;
}
