/*
 * log.h - where residfs's messages go once it runs unattended, and how
 * many of them.
 *
 * A command writes its messages to stderr ("residfs: error: ...").  A
 * mount's daemon has no terminal: from the moment it is live, its lines
 * go to syslog (the journal on systemd machines), or to the file of
 * --log-file, appended with a timestamp and the pid.  A foreground mount
 * (-f, e.g. under systemd) keeps stderr.
 *
 * Levels (--log-level): error, warning, info (the default: also the mount
 * and unmount), debug (also each retry of a remote read).  Lines are rate
 * limited so that a loader hammering a broken file cannot flood the
 * journal: a burst of RFS_TUNE_LOG_BURST lines, then RFS_TUNE_LOG_RATE a
 * second; what was dropped is counted in the next line that goes out.
 * rfs_log_once drops a line it has already written (the same file, range
 * and cause), so every distinct read error is logged once.
 *
 * Thread safe; nothing here allocates after rfs_log_set_file.
 */
#ifndef RFS_LOG_H
#define RFS_LOG_H

#include "err.h"

enum rfs_log_level { RFS_LOG_ERROR = 0, RFS_LOG_WARN, RFS_LOG_INFO, RFS_LOG_DEBUG };

/** "error", "warning" (or "warn"), "info", "debug" -> the level; -1 otherwise. */
int rfs_log_level_parse(const char *s);

/** The name of @l as rfs_log_level_parse takes it. */
const char *rfs_log_level_name(enum rfs_log_level l);

/** Lines above @l are dropped (default RFS_LOG_INFO). */
void rfs_log_set_level(enum rfs_log_level l);

/** 1 when a line at @l would be written. */
int rfs_log_enabled(enum rfs_log_level l);

/**
 * Appends every later line to @path (created 0640 if absent) instead of
 * stderr or syslog.  Opened now, so a bad path fails before mounting, and
 * kept open across the daemon's fork.
 */
enum rfs_code rfs_log_set_file(const char *path, struct rfs_err *err);

/** Daemonized: lines go to syslog from now on, unless a log file is set. */
void rfs_log_to_syslog(void);

/** Writes one line at @l (printf format), rate limited. */
void rfs_log(enum rfs_log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** The same, but a line already written (same text) is dropped. */
void rfs_log_once(enum rfs_log_level l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/**
 * The same, but what counts as already written is @key: a read error is
 * keyed by its file, block and kind, so the kernel's retry of a smaller
 * range, or a message that counts attempts, is not a new line.
 */
void rfs_log_once_key(enum rfs_log_level l, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/** Lines dropped so far by the rate limit and as repeats (for stats). */
void rfs_log_counts(unsigned long long *limited, unsigned long long *repeats);

#endif
