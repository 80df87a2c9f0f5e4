/*
 * mount.h - the FUSE layer: serves a built plan read-only.
 */
#ifndef RFS_FS_MOUNT_H
#define RFS_FS_MOUNT_H

#include "core/plan.h"

struct rfs_mount_opts {
	int foreground;
	int debug;
	const char *fuse_opts;   /* extra -o options, or NULL */
	unsigned readahead_kb;   /* 0: leave the kernel's default */
	unsigned max_threads;    /* idle FUSE worker threads kept */
	uint64_t cache_bytes;    /* block cache budget */
	int backend;             /* enum rfs_backend_mode: the backend is made after the fork */
};

/**
 * Mounts @plan at @mountpoint and serves it until unmounted.  Returns only
 * in the foreground process (or in the daemon when it ends): 0 after a
 * clean unmount, 1 on failure (a message was printed).  Without
 * @opts->foreground the calling process exits 0 once the mount is live.
 */
int rfs_mount_run(struct rfs_plan *plan, const char *mountpoint,
		  const struct rfs_mount_opts *opts);

/** The libfuse this runs with ("3.14.0"), and the API version it asks for. */
const char *rfs_mount_fuse_version(void);
#define FUSE_API_USED 35

#endif
