/*
 * plan.h - what a mount shows, as data: the public side.
 *
 * A plan is built once from the SPEC's sources and never changes after:
 * a list of virtual files, each a size plus an ordered list of segments
 * (literal bytes, a byte range of a source file, or a computed tensor).
 * The mount reads it, export writes it, inspect prints it, tests compare
 * it.  Reading a plan is thread-safe: the only shared state is the
 * sources' read-only file descriptors and each source file's change
 * verdict (an atomic).
 *
 * Outside core/ the plan and its files are opaque: the accessors below
 * are all fs/ sees.  Their bodies are in plan_int.h, for core/ alone.
 */
#ifndef RFS_PLAN_H
#define RFS_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../kernels/kern.h"
#include "err.h"
#include "source.h"
#include "spec.h"

enum rfs_rounding { RFS_ROUND_SINGLE = 0, RFS_ROUND_CAST_FIRST = 1 };

struct rfs_opts {
	int out_dtype;        /* enum rfs_dtype of floating outputs, -1: default */
	enum rfs_rounding rounding;
	int passthrough;      /* base floats without a delta pass through */
};

struct rfs_plan;
struct rfs_vfile;

/**
 * Opens the sources of @spec and builds the plan.  Everything that can be
 * wrong with the inputs is found here, before anything is mounted or
 * written.  On failure *@out is untouched and @err names file and tensor.
 * @spec is moved into the plan on success (and left to the caller on failure).
 */
enum rfs_code rfs_plan_build(struct rfs_spec *spec, const struct rfs_opts *opts,
			     struct rfs_plan **out, struct rfs_err *err);

struct rfs_recipe;

/**
 * The plan of a mergekit recipe (merge.h): opens the base and the models
 * and builds what mergekit would write.  On success the plan takes @r
 * over (a heap object, freed with the plan); on failure the caller keeps it.
 */
enum rfs_code rfs_plan_build_recipe(struct rfs_recipe *r, const struct rfs_opts *opts,
				    struct rfs_plan **out, struct rfs_err *err);

/** Frees everything; accepts NULL. */
void rfs_plan_free(struct rfs_plan *p);

/** Virtual file by name, or NULL (a hash look-up: cheap on every FUSE request). */
const struct rfs_vfile *rfs_plan_find(const struct rfs_plan *p, const char *name);

/** Number of files; rfs_plan_file(p, i) for i below it, in listing order. */
size_t rfs_plan_nfiles(const struct rfs_plan *p);
const struct rfs_vfile *rfs_plan_file(const struct rfs_plan *p, size_t i);
/** Sum of the files' sizes. */
uint64_t rfs_plan_bytes(const struct rfs_plan *p);
/** The newest mtime of the inputs (every file's mtime), in ns since the epoch. */
int64_t rfs_plan_mtime_ns(const struct rfs_plan *p);
/** Notes for the user (things left out, names matched with a prefix...). */
size_t rfs_plan_nnotes(const struct rfs_plan *p);
const char *rfs_plan_note(const struct rfs_plan *p, size_t i);

/** A file's name, size, inode number (stable: its index + 2) and permission bits. */
const char *rfs_vfile_name(const struct rfs_vfile *vf);
uint64_t rfs_vfile_size(const struct rfs_vfile *vf);
uint64_t rfs_vfile_ino(const struct rfs_vfile *vf);
unsigned rfs_vfile_mode(const struct rfs_vfile *vf);
/** Its index in the plan (rfs_plan_file(p, rfs_vfile_index(vf)) == vf). */
size_t rfs_vfile_index(const struct rfs_vfile *vf);
/** The byte sources its bytes come from (bsrc.h): rfs_vfile_src(vf, i) for
 * i below rfs_vfile_nsrcs(vf). */
size_t rfs_vfile_nsrcs(const struct rfs_vfile *vf);
struct rfs_bsrc *rfs_vfile_src(const struct rfs_vfile *vf, size_t i);
/** How each term was resolved (remote terms: the commit, the cache;
 * tdir.h), or NULL for local directories: rfs_plan_resolved(p, i) for i
 * below rfs_plan_nterms(p). */
size_t rfs_plan_nterms(const struct rfs_plan *p);
const char *rfs_plan_resolved(const struct rfs_plan *p, size_t i);

#endif
