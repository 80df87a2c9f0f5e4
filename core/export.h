/*
 * export.h - writes a plan's files to a directory, byte for byte what the
 * mount shows, without mounting.
 *
 * All or nothing: every file is first written, under its final name, into
 * a staging directory inside OUTDIR (".residfs-export-PID", mode 0700) and
 * fsynced; only then are the files moved into OUTDIR, each previous file of
 * the same name kept in the staging directory until the end.  A failure at
 * any point leaves OUTDIR with its previous files (the moves done so far
 * are undone) and removes the staging directory.  A process killed while
 * moving leaves a list of the moves (".residfs-export-PID/commit"): the
 * next export into OUTDIR undoes them; it also removes what any export
 * whose process is gone left there (staging directories, and the
 * ".NAME.residfs-tmp-PID" files of residfs versions before this one), and
 * says so through the note callback.
 *
 * OUTDIR must not be a directory of the SPEC's terms nor hold any source
 * file (same device and inode), whatever --force says.  Files of OUTDIR
 * that the export does not write are left as they are.  Exported files get
 * the virtual file's permission bits (struct rfs_vfile.mode), set with
 * fchmod so that the umask changes nothing.
 *
 * Test hook: RESIDFS_TEST_FAIL_RENAME=N makes the N-th move into OUTDIR
 * (1-based) fail with EIO, to test the undoing; "N,kill" kills the process
 * with SIGKILL there instead, to test the next export's undoing.
 */
#ifndef RFS_EXPORT_H
#define RFS_EXPORT_H

#include <signal.h>

#include "plan.h"

struct rfs_reader;

/** Progress callback: bytes done of total, current file. */
typedef void (*rfs_progress_fn)(uint64_t done, uint64_t total, const char *file, void *ctx);

/** A sentence about what export did besides writing files (leftovers removed). */
typedef void (*rfs_note_fn)(const char *msg, void *ctx);

struct rfs_export_opts {
	int force;                    /* allow a non-empty directory (files are replaced) */
	rfs_progress_fn progress;     /* may be NULL */
	void *progress_ctx;
	rfs_note_fn note;             /* may be NULL */
	void *note_ctx;
	volatile sig_atomic_t *stop;  /* set by a signal handler: abort cleanly */
	unsigned threads;             /* compute threads, 0: one per CPU */
};

/** The staging directory's name is this prefix followed by the pid. */
#define RFS_EXPORT_STAGING ".residfs-export-"

/**
 * Exports @plan into @outdir (created, with missing parents, when absent),
 * reading it with @rd (core/read.h): its backend computes, its cache is
 * normally NULL (an export reads every byte once).  Returns 0, or a
 * negative rfs_code with @err naming the file; on failure @outdir holds
 * what it held before (see above).
 */
enum rfs_code rfs_export(const struct rfs_plan *plan, const char *outdir, const struct rfs_reader *rd,
			 const struct rfs_export_opts *opts, struct rfs_err *err);

#endif
