/*
 * plan_int.h - the plan's bodies, for core/ alone (plan.h is the public
 * side).  Who owns what: the plan owns everything reachable from it (its
 * sources and their descriptors, literal buffers, computed tensors,
 * passthrough files, tensor infos, notes); rfs_plan_free releases all of
 * it.  Nothing in it changes after rfs_plan_build returns, except each
 * source's change verdict (inside its struct rfs_bsrc, atomics).  Source
 * bytes are reached only through byte sources (bsrc.h): segments and
 * operands name a source, never a descriptor or a path.
 */
#ifndef RFS_PLAN_INT_H
#define RFS_PLAN_INT_H

#include "bsrc.h"
#include "plan.h"
#include "strmap.h"

/* One operand of a computed tensor: elements of a source tensor. */
struct rfs_operand {
	struct rfs_bsrc *src; /* the bytes (owned by its st file or the plan) */
	uint64_t off;         /* absolute offset in @src of element 0 */
	enum rfs_kdt dtype;
	uint64_t numel;       /* elements available; past it they count +0.0 */
	float scale;
};

struct rfs_comp {
	const char *name;     /* tensor name */
	enum rfs_kdt out_dtype;
	uint64_t numel;
	unsigned nops;        /* at most RFS_SPEC_MAX_TERMS */
	int cast_first;
	struct rfs_mcomp *merge; /* a recipe's method (merge.h; owned), NULL: the sum of ops */
	struct rfs_operand ops[]; /* nops of them (allocated for the count) */
};

enum rfs_seg_kind { RFS_SEG_LIT, RFS_SEG_FILE, RFS_SEG_COMP };

struct rfs_seg {
	enum rfs_seg_kind kind;
	uint64_t off, len;    /* place in the virtual file */
	const char *lit;      /* RFS_SEG_LIT */
	struct rfs_bsrc *src; /* RFS_SEG_FILE: the source */
	uint64_t src_off;     /* RFS_SEG_FILE: offset in @src */
	struct rfs_comp *comp; /* RFS_SEG_COMP */
};

struct rfs_vfile {
	char *name;
	uint64_t size;
	int64_t mtime_ns;
	uint64_t ino;
	unsigned mode;        /* permission bits: never wider than its sources' */
	size_t nseg;
	struct rfs_seg *segs; /* sorted by off, contiguous, covering [0, size) */
	size_t nsrcs;
	struct rfs_bsrc **srcs; /* every source its bytes come from */
};

/* What inspect reports about each output tensor. */
enum rfs_how { RFS_HOW_MERGED, RFS_HOW_PASSTHROUGH, RFS_HOW_CONVERTED, RFS_HOW_COMPUTED };

struct rfs_tinfo {
	const char *name;
	const char *file;     /* output file name */
	enum rfs_dtype dtype;
	unsigned ndim;
	uint64_t shape[RFS_ST_MAX_DIMS];
	enum rfs_how how;
	unsigned nterms;      /* sources feeding it */
	unsigned srcmask;     /* which: bit k for the SPEC's term k */
	uint64_t grown_rows;  /* rows beyond the base (vocabulary growth) */
	const struct rfs_comp *comp; /* a recipe's merged tensor (its parameters), or NULL */
};

struct rfs_plan {
	int compute;          /* 1: result is a residuals directory */
	struct rfs_recipe *recipe; /* a mergekit recipe's merge (merge.h; owned), or NULL */
	struct rfs_spec spec;
	struct rfs_opts opts;
	size_t nsrc;
	struct rfs_src *src[RFS_SPEC_MAX_TERMS];
	size_t nfiles;
	struct rfs_vfile *files;
	size_t ntinfo;
	struct rfs_tinfo *tinfo;
	size_t nnotes;
	char **notes;         /* warnings and notes for the user */
	size_t nignored;
	char **ignored;       /* delta keys that no output uses */
	int64_t mtime_ns;
	/* storage owned by the plan */
	size_t ncomp;
	struct rfs_comp **comps;
	size_t nlits;
	char **lits;
	size_t npt;
	struct rfs_pt **pts;  /* passthrough files kept open */
	struct rfs_strmap byname; /* file name -> struct rfs_vfile * */
	struct rfs_vmap *vmap;    /* a recipe's vocabularies aligned by token (tokalign.h), or NULL */
	unsigned tok_src;         /* a recipe's: the source term whose tokenizer it shows */
};

/** A source file passed through whole (tokenizer files, other files). */
struct rfs_pt {
	struct rfs_bsrc *src; /* owned */
};

#endif
