/*
 * busguard.h - the SIGBUS guard over mapped windows of source files.
 *
 * A source file truncated under a mapping raises SIGBUS when a page past
 * its new end is touched.  While a thread has armed the guard over its
 * windows, a SIGBUS at an address inside one of them maps a zero page
 * there and is recorded: the access is retried and reads zeros, the
 * computation runs to its end (no jump out of code that may hold a lock,
 * the CUDA layer's included), and disarming tells the thread that its
 * result must be thrown away.
 *
 * Invariants:
 *  - the handler is installed once per process, by rfs_busguard_install()
 *    (the mount's daemon at start, export); nothing installs it lazily;
 *  - a SIGBUS outside the faulting thread's armed windows goes to the
 *    action installed before ours: its handler is called, or, when it was
 *    the default or ignored, the default is restored and the signal
 *    raised again, so the process dies of it as it would have;
 *  - windows are per thread: arming in one thread never covers another.
 */
#ifndef RFS_BUSGUARD_H
#define RFS_BUSGUARD_H

#include <stddef.h>

/** A mapped range: [map, map + maplen).  map NULL: an unused slot. */
struct rfs_busguard_win {
	char *map;
	size_t maplen;
};

/**
 * Installs the SIGBUS handler, saving the previous action; later calls do
 * nothing and return the first one's result.  Returns 0, or -1 when the
 * guard cannot work here (pages other than 4 KiB, or sigaction failed):
 * then nothing may be mapped under it, see rfs_busguard_ready().  Call it
 * before starting the threads that read, and after any library that sets
 * its own SIGBUS handler, so that ours chains to it.
 */
int rfs_busguard_install(void);

/** 1 when the guard is installed and windows may be read under it, else 0. */
int rfs_busguard_ready(void);

/**
 * Arms the guard over the calling thread's @n windows @w (kept by the
 * caller, unchanged, until rfs_busguard_disarm()) and clears its record
 * of a fault.
 */
void rfs_busguard_arm(const struct rfs_busguard_win *w, unsigned n);

/**
 * Disarms the calling thread's guard.  Returns 1 when a fault was caught
 * in one of its windows since rfs_busguard_arm(), with *@addr (when
 * non-NULL) set to the address of the last one; else 0.
 */
int rfs_busguard_disarm(void **addr);

#endif
