/*
 * err.h - one error type for all of core/.
 *
 * Every fallible function of core/'s interface returns enum rfs_code
 * (RFS_OK, or a negative code) and takes a caller-owned struct rfs_err
 * that it fills with a message naming the file, the tensor and the offsets
 * involved.  Two kinds of function differ, each saying so: reads that
 * return a count (rfs_vfile_read: the count, or a negative code) and the
 * plan builder's internal helpers, whose rfs_err travels in their struct
 * rfs_build.  Results that are not failures but one of several outcomes
 * are named enums (enum rfs_put, rfs_fit, rfs_take, rfs_apply_how...),
 * never 1/0/-1.  errno values are produced only at the edges
 * (rfs_err_errno, for FUSE).  On failure, out-parameters are left
 * untouched unless stated otherwise.
 */
#ifndef RFS_ERR_H
#define RFS_ERR_H

#include <stddef.h>

enum rfs_code {
	RFS_OK = 0,
	RFS_E_IO = -1,       /* a system call failed (errno is kept in err->sys) */
	RFS_E_FORMAT = -2,   /* malformed input file */
	RFS_E_SPEC = -3,     /* unusable SPEC or command line */
	RFS_E_MISMATCH = -4, /* inputs do not fit together (names, shapes) */
	RFS_E_NOMEM = -5,
	RFS_E_RANGE = -6,    /* offset or size out of range */
	RFS_E_EXIST = -7,    /* target exists / not empty */
	RFS_E_INTR = -8,     /* interrupted by a signal */
	RFS_E_CHANGED = -9,  /* a source file changed after it was checked */
};

#define RFS_ERR_MSG_MAX 1024

struct rfs_err {
	int code;
	int sys; /* errno of the failing call for RFS_E_IO, else 0 */
	char msg[RFS_ERR_MSG_MAX];
};

/** Sets @err (may be NULL) and returns @code. */
int rfs_errf(struct rfs_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/** Like rfs_errf with code RFS_E_IO; appends strerror(errno) and keeps errno. */
int rfs_errsys(struct rfs_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/** Short static name of a code. */
const char *rfs_strerror(int code);

/** Maps a code (and err->sys) to a positive errno value for the FUSE edge. */
int rfs_err_errno(const struct rfs_err *err);

#endif
