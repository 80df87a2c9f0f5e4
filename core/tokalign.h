/*
 * tokalign.h - a recipe's tokenizer_source: the rows of the vocabulary
 * tensors (embeddings, output head) of every model aligned by token string,
 * as mergekit 0.1.5 aligns them (docs/merges.md, "Vocabularies").
 *
 * The output vocabulary is the base's (tokenizer_source: base), the
 * union of all the models' (union: the base's ids, then each model's
 * tokens the base lacks, appended), or one model's (a model reference).  For every source term and output
 * row, perm[] gives the term's own row of that token, or -1 when its
 * tokenizer lacks it; such a row is then filled, for that term, with a
 * default: the only model that has the token gives its row, else the
 * base's row when the base has it, else the average of the rows of the
 * models that have it (in the recipe's order), else zeros.
 *
 * Vocabularies are read from each term's tokenizer.json (the model's
 * vocabulary and its added tokens); tokens at ids at or past the term's
 * config vocab_size are padding and do not count.
 */
#ifndef RFS_TOKALIGN_H
#define RFS_TOKALIGN_H

#include <stdint.h>

#include "pstore.h"

enum rfs_vdef { RFS_VDEF_ZERO, RFS_VDEF_DONOR, RFS_VDEF_AVG };

struct rfs_vmap {
	uint32_t rows;                      /* the output vocabulary */
	unsigned nsrc;                      /* the plan's source terms */
	int32_t *perm[RFS_SPEC_MAX_TERMS];  /* per term: output row -> its row, or -1 */
	uint32_t need[RFS_SPEC_MAX_TERMS];  /* per term: the rows its tensors must have (largest + 1) */
	uint8_t *dkind;                     /* per row: enum rfs_vdef, for terms that lack it */
	uint8_t *donor;                     /* per row: the term whose row it is (RFS_VDEF_DONOR) */
	unsigned navg;
	uint8_t avg[RFS_SPEC_MAX_TERMS];    /* the terms in the order their rows are summed */
	int identity;                       /* every term has every row at the same index */
};

/**
 * Builds the alignment of the recipe b->p->recipe over the plan's terms
 * (p->src[0] is the tokenizer base) into b->p->vmap; the output vocabulary
 * is the base's, the union, or (b->p->tok_src > 0) that term's whole
 * tokenizer.  @avg_order lists the terms in mergekit's model order (the
 * recipe's, the base last when it is not listed), @base_pref is 1 when the
 * recipe has a base_model (its row is preferred).  For union, also adds
 * the output tokenizer.json.
 */
int rfs_pb_tokalign(struct rfs_build *b, const unsigned *avg_order, unsigned navg, int base_pref);

/** 1 when tensor @name is a vocabulary tensor (rows by token) of mergekit's architectures. */
int rfs_is_vocab_tensor_name(const char *name);

/**
 * 1 when tensor @name, with @rows rows, is not one rfs_is_vocab_tensor_name
 * knows but looks like one (a name of embeddings or heads, as many rows as
 * its model's vocabulary of @vocab): aligning by token cannot be done for it.
 */
int rfs_looks_like_vocab_tensor(const char *name, uint64_t rows, int64_t vocab);

/** The vocab_size of term @s's config.json: the top level's, else text_config's; -1 when none. */
int64_t rfs_src_vocab_size(const struct rfs_src *s);

/** Frees @v (NULL accepted). */
void rfs_vmap_free(struct rfs_vmap *v);

#endif
