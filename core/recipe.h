/*
 * recipe.h - a mergekit YAML recipe (docs/merges.md), parsed and checked.
 *
 * The recipe is hostile input like the model files: the text is bounded
 * (RFS_RECIPE_MAX_BYTES), YAML aliases are not followed into a blow-up
 * (a bounded walk), and every key is known or refused by name.  What is
 * kept is only what the merge needs; the text itself is kept too, for
 * the mount's mergekit_config.yml.
 *
 * Parameters follow mergekit's lookup: a model's own `parameters`, else
 * the recipe's global ones.  A value is a number (or a boolean), a
 * gradient (a list of numbers interpolated over the layers), or a list of
 * {filter, value} conditions whose first matching filter (a plain
 * substring of the tensor name; none or "*" matches everything) gives
 * the value.
 */
#ifndef RFS_RECIPE_H
#define RFS_RECIPE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define RFS_RECIPE_MAX_BYTES (1u << 20)
#define RFS_RECIPE_MAX_MODELS 15   /* plus the base: a SPEC's 16 terms */
#define RFS_RECIPE_MAX_GRADIENT 1024

enum rfs_merge_method {
	RFS_MERGE_TASK_ARITHMETIC,
	RFS_MERGE_TIES,
	RFS_MERGE_DARE_TIES,
	RFS_MERGE_DARE_LINEAR,
	RFS_MERGE_BREADCRUMBS,
	RFS_MERGE_BREADCRUMBS_TIES,
	RFS_MERGE_LINEAR,
	RFS_MERGE_SLERP,
};

/** A value: a number (booleans are 0 and 1) or a gradient. */
struct rfs_rval {
	int is_gradient;
	double num;
	double *grad;
	size_t ngrad;
};

/** One condition of a conditional parameter; @filter NULL matches all. */
struct rfs_rcond {
	char *filter;
	struct rfs_rval val;
};

/** A named parameter: a plain value, or a list of conditions. */
struct rfs_rparam {
	char *name;
	int conditional;
	struct rfs_rval val;       /* !conditional */
	struct rfs_rcond *conds;   /* conditional: in the recipe's order */
	size_t nconds;
};

struct rfs_rparams {
	struct rfs_rparam *p;
	size_t n;
};

struct rfs_rmodel {
	char *ref;                 /* a directory, hf://ORG/NAME or ORG/NAME[@REV] */
	struct rfs_rparams params;
};

struct rfs_recipe {
	enum rfs_merge_method method;
	char *base_model;          /* NULL only for linear (and slerp names it too) */
	size_t nmodels;
	struct rfs_rmodel models[RFS_RECIPE_MAX_MODELS];
	struct rfs_rparams params; /* global */
	int dtype;                 /* enum rfs_dtype of the arithmetic, -1: not given */
	int out_dtype;             /* enum rfs_dtype written, -1: not given */
	int tokenizer_union;       /* tokenizer_source: union (else base, or the model below) */
	char *tokenizer_model;     /* tokenizer_source: one of the recipe's models, or NULL */
	int tokenizer_given;       /* tokenizer_source was given: rows are aligned by token */
	char *chat_template;       /* NULL: the tokenizer source's */
	int has_seed;
	uint64_t random_seed;
	uint64_t out_shard_size;   /* --out-shard-size: mergekit's shards; 0: the base's layout */
	char *text;                /* the recipe as given */
	size_t text_len;
	char *path;                /* for messages */
};

/** The method's name as mergekit writes it. */
const char *rfs_merge_method_name(enum rfs_merge_method m);

/**
 * Parses recipe @text (@len bytes; @path names it in messages) into @out.
 * Refused with RFS_E_SPEC and a message naming the key: an unknown or
 * unsupported method or key (slices:, LoRA references "a+b"), a missing
 * base_model where the method needs one, a model without a reference, a
 * parameter of the wrong type, a weight missing where the method needs
 * one, a density outside (0, 1], t outside [0, 1].  On failure @out is
 * left empty.
 */
enum rfs_code rfs_recipe_parse(const char *text, size_t len, const char *path,
			       struct rfs_recipe *out, struct rfs_err *err);

/** Reads the file at @path and parses it. */
enum rfs_code rfs_recipe_load(const char *path, struct rfs_recipe *out, struct rfs_err *err);

/** Frees what @r holds (not @r); accepts an empty recipe. */
void rfs_recipe_release(struct rfs_recipe *r);

/**
 * The value of parameter @name for tensor @tensor of model @model (-1:
 * the global parameters only): the model's, else the global one.  @layer
 * is the tensor's layer index (-1: none, the gradient position is 0) of
 * @nlayers.  Returns 1 and sets *@out when found, 0 when absent.
 */
int rfs_recipe_param(const struct rfs_recipe *r, int model, const char *name,
		     const char *tensor, long layer, long nlayers, double *out);

/** 1 when the value of @name that applies to @tensor for @model is a gradient list. */
int rfs_recipe_param_is_gradient(const struct rfs_recipe *r, int model, const char *name, const char *tensor);

/** A gradient's value at layer @layer of @nlayers, as mergekit computes it. */
double rfs_rval_at(const struct rfs_rval *v, long layer, long nlayers);

#endif
