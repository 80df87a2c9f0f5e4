/*
 * merge.h - the plan of a mergekit recipe (recipe.h), and how its tensors
 * are computed on read (docs/merges.md).
 *
 * The mount shows what mergekit would write: the base's shards and
 * tensor order, config.json with torch_dtype updated, the tokenizer of
 * the base, mergekit_config.yml (the recipe) and a README.md with
 * mergekit's front matter.  Each floating tensor is a struct rfs_comp
 * whose @merge describes the method and the per-tensor parameters (the
 * recipe's gradients and filters resolved for that tensor); operand 0 is
 * the base (when the method has one), then the models in recipe order.
 *
 * Methods that need numbers of the whole tensor (ties and breadcrumbs:
 * magnitude thresholds; dare: L1 sums; slerp: norms and the dot product)
 * compute them on first access, once, under the tensor's lock; they are a
 * few numbers per tensor and are kept for the life of the mount.
 */
#ifndef RFS_MERGE_H
#define RFS_MERGE_H

#include <pthread.h>
#include <stdint.h>

#include "pstore.h"
#include "read.h"
#include "recipe.h"

struct rfs_mcomp {
	enum rfs_merge_method method;
	unsigned nmodels;          /* models after the base operand */
	int has_base;              /* operand 0 is the base */
	enum rfs_kdt cdt;          /* the dtype each operation is rounded to */
	float w[RFS_RECIPE_MAX_MODELS];
	float density[RFS_RECIPE_MAX_MODELS];
	float gamma[RFS_RECIPE_MAX_MODELS];
	float lambda;
	int normalize, rescale, consensus;
	float t;                   /* slerp */
	/* a vocabulary tensor whose rows are aligned by token (tokalign.h): NULL otherwise */
	const struct rfs_vmap *vmap;
	uint64_t row_w;            /* elements per row */
	uint8_t op_src[RFS_SPEC_MAX_TERMS];   /* operand -> the plan's source term */
	int8_t src_op[RFS_SPEC_MAX_TERMS];    /* source term -> its first operand, -1: none */
	uint64_t seed, name_hash;  /* dare */
	/* the per-tensor numbers, once */
	pthread_mutex_t lk;
	int ready;                 /* atomic */
	float wc[RFS_RECIPE_MAX_MODELS]; /* the weights in the compute dtype */
	float wsum;                /* their sum, rounded (the divisor without consensus) */
	float pc[RFS_RECIPE_MAX_MODELS]; /* dare: the densities in the compute dtype */
	uint64_t dkey[RFS_RECIPE_MAX_MODELS]; /* dare: each model's hash key */
	float hi[RFS_RECIPE_MAX_MODELS], lo[RFS_RECIPE_MAX_MODELS]; /* kept: lo <= |d| (< hi) */
	int hi_on[RFS_RECIPE_MAX_MODELS], lo_on[RFS_RECIPE_MAX_MODELS];
	float l1_scale[RFS_RECIPE_MAX_MODELS]; /* dare: sum|d| / sum|kept| */
	float s0, s1;              /* slerp coefficients */
	int lerp;                  /* slerp: |cos| > 0.9995: a plain lerp */
};

/** Builds the plan of the recipe b->p->recipe (its terms opened in b->p->src). */
int rfs_pb_merge(struct rfs_build *b);

/**
 * The per-tensor numbers of @c (c->merge set), computed once, on first
 * call, by reading its operands (later calls return at once).
 */
enum rfs_code rfs_merge_prepare(const struct rfs_comp *c, struct rfs_err *err);

/**
 * Bytes [@a, @a + @len) of the merged tensor @c (c->merge set) into @dst:
 * the per-tensor numbers first (once), then the elements, reading the
 * operands in chunks.
 */
enum rfs_code rfs_merge_compute(const struct rfs_comp *c, void *dst, uint64_t a, uint64_t len,
				const struct rfs_reader *rd, struct rfs_err *err);

#endif
