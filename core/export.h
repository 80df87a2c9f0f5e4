/*
 * export.h - writes a plan's files to a directory, byte for byte what the
 * mount shows, without mounting.
 *
 * Atomic per file: each file is written to a hidden temporary name in the
 * output directory, fsynced, then renamed; on failure or interruption the
 * temporary file is removed, so no final name ever holds partial bytes.
 */
#ifndef RFS_EXPORT_H
#define RFS_EXPORT_H

#include <signal.h>

#include "plan.h"

/** Progress callback: bytes done of total, current file. */
typedef void (*rfs_progress_fn)(uint64_t done, uint64_t total, const char *file, void *ctx);

struct rfs_export_opts {
	int force;                    /* allow a non-empty directory (files are replaced) */
	rfs_progress_fn progress;     /* may be NULL */
	void *progress_ctx;
	volatile sig_atomic_t *stop;  /* set by a signal handler: abort cleanly */
	unsigned threads;             /* compute threads, 0: one per CPU */
};

/** Exports @plan into @outdir (created, with missing parents, when absent). */
int rfs_export(const struct rfs_plan *plan, const char *outdir,
	       const struct rfs_export_opts *opts, struct rfs_err *err);

#endif
