#include "ident.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Guards the one-time write of an identity's why (rare: once per change). */
static pthread_mutex_t why_lock = PTHREAD_MUTEX_INITIALIZER;

int64_t rfs_ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void rfs_ident_init(struct rfs_ident *id, const char *path, int fd, const struct stat *st)
{
	memset(id, 0, sizeof(*id));
	id->path = path;
	id->fd = fd;
	id->dev = (uint64_t)st->st_dev;
	id->ino = (uint64_t)st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_ns = rfs_ts_ns(&st->st_mtim);
	id->ctime_ns = rfs_ts_ns(&st->st_ctim);
	id->mode = st->st_mode & 07777;
	id->next_check = mono_ns() + RFS_IDENT_RECHECK_NS;
}

int rfs_ident_locate(struct rfs_ident *id, const char *dir, const char *name)
{
	free(id->abs);
	if (asprintf(&id->abs, "%s/%s", dir, name) < 0) {
		id->abs = NULL;
		return RFS_E_NOMEM;
	}
	return 0;
}

void rfs_ident_release(struct rfs_ident *id)
{
	free(id->abs);
	id->abs = NULL;
}

/* What differs between the recorded identity and @st, or NULL. */
static const char *differs(const struct rfs_ident *id, const struct stat *st, char *buf,
			   size_t len)
{
	if (!S_ISREG(st->st_mode))
		return "is no longer a regular file";
	if ((uint64_t)st->st_dev != id->dev || (uint64_t)st->st_ino != id->ino)
		return "was replaced by another file";
	if ((uint64_t)st->st_size != id->size) {
		snprintf(buf, len, "changed size from %llu to %llu bytes",
			 (unsigned long long)id->size, (unsigned long long)st->st_size);
		return buf;
	}
	if (rfs_ts_ns(&st->st_mtim) != id->mtime_ns)
		return "was modified (mtime changed)";
	if (rfs_ts_ns(&st->st_ctim) != id->ctime_ns)
		return "was modified (ctime changed)";
	return NULL;
}

static int changed_err(struct rfs_ident *id, struct rfs_err *err)
{
	return rfs_errf(err, RFS_E_CHANGED,
			"%s %s after residfs checked it: remount to use the new version",
			id->path, id->why);
}

enum rfs_code rfs_ident_check(struct rfs_ident *id, int force, struct rfs_err *err)
{
	struct stat st;
	const char *why = NULL;
	char buf[96];
	uint64_t now;

	if (__atomic_load_n(&id->changed, __ATOMIC_ACQUIRE))
		return changed_err(id, err);
	/* the descriptor every time: a write in place changes mtime and ctime
	 * before it copies its bytes, so a read whose last check saw neither
	 * changed read no new byte */
	if (fstat(id->fd, &st))
		why = "cannot be checked (fstat failed)";
	else
		why = differs(id, &st, buf, sizeof(buf));
	now = mono_ns();
	if (!why && !force && now < __atomic_load_n(&id->next_check, __ATOMIC_RELAXED))
		return 0;
	if (!why) {
		if (stat(id->abs ? id->abs : id->path, &st))
			why = "was deleted or renamed";
		else
			why = differs(id, &st, buf, sizeof(buf));
	}
	if (!why) {
		__atomic_store_n(&id->next_check, now + RFS_IDENT_RECHECK_NS, __ATOMIC_RELAXED);
		return 0;
	}
	/* the first finder writes why; readers see it only after changed is set */
	pthread_mutex_lock(&why_lock);
	if (!__atomic_load_n(&id->changed, __ATOMIC_RELAXED)) {
		snprintf(id->why, sizeof(id->why), "%s", why);
		__atomic_store_n(&id->changed, 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&why_lock);
	return changed_err(id, err);
}
