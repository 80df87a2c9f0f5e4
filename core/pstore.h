/*
 * pstore.h - the plan builder's storage (internal to the plan's modules:
 * plan.c, apply.c, compute.c, hfdir.c, card.c, vocab.c).
 *
 * While a plan is built, virtual files are assembled as a struct rfs_vfb
 * (segments in file order, a running size and the permission bits of
 * what they are made from) and handed to the plan by rfs_pb_add_vfile.
 * Everything allocated here belongs to the plan (struct rfs_plan's
 * storage fields) and is freed by rfs_plan_free, also when the build
 * fails half-way: a function that fails leaves nothing to its caller to
 * free.  Every fallible function returns 0 or a negative rfs_code with
 * b->err filled.
 */
#ifndef RFS_PSTORE_H
#define RFS_PSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "plan_int.h"

/* A virtual file being built. */
struct rfs_vfb {
	struct rfs_seg *segs;
	size_t n, cap;
	uint64_t size;
	int oom;         /* a segment could not be added: adding the file fails */
	int has_mode;
	unsigned mode;   /* AND of the modes of what it is made from */
};

/* The state of one rfs_plan_build. */
struct rfs_build {
	struct rfs_plan *p;
	struct rfs_err *err;
	struct rfs_strmap names; /* output file names */
	size_t tinfo_cap;        /* p->tinfo never moves: allocated once */
};

/* An output tensor of one safetensors file. */
struct rfs_pb_out {
	struct rfs_tinfo *info;
	struct rfs_comp *comp;               /* NULL: passthrough of src */
	const struct rfs_src_tensor *src;    /* passthrough source */
	uint64_t bytes;
};

/** RFS_E_NOMEM with the usual message. */
int rfs_pb_nomem(struct rfs_build *b);
/** Grows @arr (of *@cap elements of @elem bytes) to hold @need; NULL on ENOMEM (@arr kept). */
void *rfs_pb_grow(void *arr, size_t *cap, size_t need, size_t elem);
/** The plan takes @data over (freed with it); returns it, or NULL (and frees it) on ENOMEM. */
const char *rfs_pb_keep_lit(struct rfs_build *b, char *data);
/** Adds a note for the user (inspect, export and mount show them). */
int rfs_pb_note(struct rfs_build *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Narrows @v's permission bits to those of a source it is made from. */
void rfs_vfb_mode(struct rfs_vfb *v, unsigned mode);
/** Appends literal bytes (kept by the plan) to @v. */
void rfs_pb_seg_lit(struct rfs_vfb *v, const char *lit, uint64_t len);
/** Appends bytes [@off, @off + @len) of the byte source @src (merged with a contiguous previous one). */
void rfs_pb_seg_file(struct rfs_vfb *v, struct rfs_bsrc *src, uint64_t off, uint64_t len);
/** Appends the computed tensor @c, @len bytes. */
void rfs_pb_seg_comp(struct rfs_vfb *v, struct rfs_comp *c, uint64_t len);

/** 1 when the plan has a file named @name. */
int rfs_pb_has_vfile(struct rfs_build *b, const char *name);
/**
 * Adds @v as the file @name (refused when the name is taken); @v is
 * emptied whatever happens.  The file's sources and mode follow from its
 * segments and what rfs_vfb_mode gave it.
 */
int rfs_pb_add_vfile(struct rfs_build *b, const char *name, struct rfs_vfb *v);
/** A file of literal bytes @data (taken over) with permission bits @mode. */
int rfs_pb_add_lit(struct rfs_build *b, const char *name, char *data, size_t len, unsigned mode);
/** The file @name of the term @s shown as it is (contained, regular: rfs_bsrc_local_open). */
int rfs_pb_add_passthrough(struct rfs_build *b, const struct rfs_src *s, const char *name);

/** A computed tensor with room for @nops operands; NULL on ENOMEM. */
struct rfs_comp *rfs_pb_new_comp(struct rfs_build *b, const char *name, enum rfs_kdt out,
				 uint64_t numel, unsigned nops);
/** Adds the source tensor @t times @scale as @c's next operand. */
void rfs_pb_comp_add(struct rfs_comp *c, const struct rfs_src_tensor *t, float scale);
/** The next tensor info (zeroed); NULL when all b->tinfo_cap are used. */
struct rfs_tinfo *rfs_pb_new_tinfo(struct rfs_build *b);
/** Elements and bytes of an output tensor (checked: no overflow possible). */
uint64_t rfs_pb_out_numel(const struct rfs_tinfo *ti);
uint64_t rfs_pb_out_bytes(const struct rfs_tinfo *ti);

/**
 * Adds the safetensors file @name of the @n tensors @o (in this order):
 * its header (@orig's bytes untouched when non-NULL, else written with
 * @meta when @with_meta) and one segment per tensor.
 */
int rfs_pb_emit_st(struct rfs_build *b, const char *name, struct rfs_pb_out *o, size_t n,
		   const struct rfs_st_file *orig, int with_meta, const struct rfs_st_meta *meta,
		   size_t nmeta);

#endif
