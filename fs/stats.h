/*
 * stats.h - `residfs stats MOUNTPOINT`: the counters of a live mount, read
 * from the mount's hidden stats file (docs/cli.md).
 */
#ifndef RFS_FS_STATS_H
#define RFS_FS_STATS_H

/** 1 when @path is the root of a residfs mount (/proc/self/mounts). */
int rfs_is_residfs_mount(const char *path);

/**
 * Prints the stats of the mount at @mp: a table, or with @json the JSON
 * the mount gives; with @watch again every @interval seconds (a table
 * redrawn with rates, or one JSON line each time) until interrupted.
 * Returns the exit status.
 */
int rfs_stats_cmd(const char *mp, int json, int watch, double interval);

#endif
