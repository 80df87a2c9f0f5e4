#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int vset(struct rfs_err *err, int code, int sys, const char *fmt,
		va_list ap)
{
	if (!err)
		return code;
	err->code = code;
	err->sys = sys;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	if (sys) {
		size_t len = strlen(err->msg);
		snprintf(err->msg + len, sizeof(err->msg) - len, ": %s",
			 strerror(sys));
	}
	return code;
}

int rfs_errf(struct rfs_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(err, code, 0, fmt, ap);
	va_end(ap);
	return code;
}

int rfs_errsys(struct rfs_err *err, const char *fmt, ...)
{
	int sys = errno ? errno : EIO;
	va_list ap;

	va_start(ap, fmt);
	vset(err, RFS_E_IO, sys, fmt, ap);
	va_end(ap);
	errno = sys;
	return RFS_E_IO;
}

const char *rfs_strerror(int code)
{
	switch (code) {
	case RFS_OK: return "success";
	case RFS_E_IO: return "I/O error";
	case RFS_E_FORMAT: return "malformed input";
	case RFS_E_SPEC: return "invalid specification";
	case RFS_E_MISMATCH: return "inputs do not match";
	case RFS_E_NOMEM: return "out of memory";
	case RFS_E_RANGE: return "out of range";
	case RFS_E_EXIST: return "already exists";
	case RFS_E_INTR: return "interrupted";
	case RFS_E_CHANGED: return "source changed";
	}
	return "unknown error";
}

int rfs_err_errno(const struct rfs_err *err)
{
	if (!err)
		return EIO;
	switch ((enum rfs_code)err->code) {
	case RFS_OK: return 0;
	case RFS_E_IO: return err->sys ? err->sys : EIO;
	case RFS_E_NOMEM: return ENOMEM;
	case RFS_E_RANGE: return EINVAL;
	case RFS_E_EXIST: return EEXIST;
	case RFS_E_INTR: return EINTR;
	case RFS_E_CHANGED: return EIO;     /* as for any read of bad bytes */
	case RFS_E_FORMAT: return EIO;      /* a source's bytes are malformed */
	case RFS_E_SPEC: return EINVAL;     /* the user's request itself */
	case RFS_E_MISMATCH: return EIO;    /* sources that do not fit together */
	}
	return EIO; /* a code outside the enum: never made by core/ */
}
