/*
 * Export: a plan written into a directory, all or nothing (export.h).
 *
 * With S the staging directory OUTDIR/.residfs-export-PID:
 *  1. every file is written to S/new/NAME (blocks computed in parallel and
 *     written with pwrite at their offsets, mode 0600) and its writeback
 *     started; then each file gets its mode and is fsynced, and S/new.
 *  2. the commit list S/commit is written and fsynced: for each name 'R'
 *     when OUTDIR/NAME exists (it will be replaced) or 'N', the name, a
 *     NUL.  From here on a killed process leaves moves to undo.
 *  3. for each name, a previous OUTDIR/NAME is hard-linked to S/old/NAME
 *     (moved there where the file system has no hard links), then
 *     S/new/NAME is renamed over OUTDIR/NAME: one atomic replacement, so a
 *     reader opens the old file or the new one.
 *  4. OUTDIR is fsynced, S/commit removed, then S with what is left in it
 *     (the previous files).
 * Undoing (a failure in 3, or the next export finding the list of a dead
 * process) goes through the list backwards: an 'R' name whose S/old/NAME
 * exists is renamed back over OUTDIR/NAME (a no-op while both are still
 * the same file); an 'N' name whose S/new/NAME is gone was moved, and
 * OUTDIR/NAME is unlinked.  Undoing twice is undoing once, so an undo that
 * is itself interrupted is finished by the next export.
 *
 * Names: the staging directory's name is short and fixed, the files keep
 * their final names inside it, so no temporary name is ever longer than a
 * final one (a 255-byte file name exports).  Everything below OUTDIR goes
 * through directory descriptors (openat, renameat, ...), so the length of
 * OUTDIR's path does not matter either.
 */
#include "export.h"
#include "plan_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "busguard.h"
#include "read.h"
#include "tunables.h"
#include "util.h"

#define BLOCK RFS_TUNE_EXPORT_BLOCK /* bytes per read-compute-write step */
#define ALIGN RFS_TUNE_DIRECT_ALIGN /* of O_DIRECT writes */
#define COMMIT_LIST "commit"
#define COMMIT_LIST_MAX (64u << 20) /* a longer list is not one of ours */
#define OLD_TMP_MARK ".residfs-tmp-" /* temporary files of versions before the staging directory */

/* Work shared by the threads exporting one file: blocks are computed in
 * parallel (any order) and written with pwrite at their offsets. */
struct job {
	const struct rfs_vfile *vf;
	const struct rfs_reader *rd;
	int fd;
	int dfd;                /* the same file opened O_DIRECT, or -1 */
	uint64_t next;          /* next block offset to take */
	uint64_t done;          /* bytes written */
	int failed;
	struct rfs_err err;
	const char *what;       /* OUTDIR/NAME, for messages */
	pthread_mutex_t lock;
	pthread_cond_t changed;  /* a block was written or a worker ended */
	unsigned running;
	volatile sig_atomic_t *stop;
};

static void *worker(void *arg)
{
	struct job *j = arg;
	char *buf = NULL;

	if (posix_memalign((void **)&buf, ALIGN, BLOCK))
		buf = NULL;

	if (!buf) {
		pthread_mutex_lock(&j->lock);
		if (!j->failed) {
			j->failed = 1;
			rfs_errf(&j->err, RFS_E_NOMEM, "out of memory");
		}
		j->running--;
		pthread_cond_broadcast(&j->changed);
		pthread_mutex_unlock(&j->lock);
		return NULL;
	}
	for (;;) {
		struct rfs_err e = { 0 };
		uint64_t off;
		size_t n;
		ssize_t r;

		pthread_mutex_lock(&j->lock);
		if (j->failed || j->next >= j->vf->size || (j->stop && *j->stop)) {
			pthread_mutex_unlock(&j->lock);
			break;
		}
		off = j->next;
		n = j->vf->size - off < BLOCK ? (size_t)(j->vf->size - off) : BLOCK;
		j->next += n;
		pthread_mutex_unlock(&j->lock);
		r = rfs_vfile_read(j->vf, buf, n, off, j->rd, &e);
		if (r == (ssize_t)n) {
			size_t w = 0;

			while (w < n) {
				/* whole 4 KiB blocks go through the O_DIRECT descriptor
				 * (no copy into the page cache), the file's tail not */
				int fd = j->dfd >= 0 && !((off + w) % ALIGN) && (n - w) >= ALIGN ? j->dfd : j->fd;
				size_t len = fd == j->dfd ? (n - w) / ALIGN * ALIGN : n - w;
				ssize_t k = pwrite(fd, buf + w, len, (off_t)(off + w));

				if (k < 0 && fd == j->dfd && errno == EINVAL) {
					j->dfd = -1; /* the filesystem refuses: buffered from now on */
					continue;
				}

				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0) {
					rfs_errsys(&e, "%s: write failed", j->what);
					r = -1;
					break;
				}
				w += (size_t)k;
			}
		} else if (r >= 0) {
			rfs_errf(&e, RFS_E_IO, "%s: short read at %llu", j->vf->name,
				 (unsigned long long)off);
			r = -1;
		}
		pthread_mutex_lock(&j->lock);
		if (r < 0 && !j->failed) {
			j->failed = 1;
			j->err = e;
		} else if (r >= 0) {
			j->done += n;
		}
		pthread_cond_broadcast(&j->changed);
		pthread_mutex_unlock(&j->lock);
	}
	free(buf);
	pthread_mutex_lock(&j->lock);
	j->running--;
	pthread_cond_broadcast(&j->changed);
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* The permission bits of an exported file: the plan's (never wider than
 * its sources'), the special bits never. */
static mode_t file_mode(const struct rfs_vfile *vf)
{
	return (mode_t)(vf->mode & 0777);
}

/* Writes @vf, read with @rd, to @nfd/NAME (the staging directory's new/)
 * and starts its writeback; @outdir only names it in messages.  On failure
 * the file is removed. */
static int export_file(const struct rfs_vfile *vf, const struct rfs_reader *rd, int nfd,
		       const char *outdir, const struct rfs_export_opts *o, unsigned nthreads,
		       uint64_t *done_total, uint64_t total, struct rfs_err *err)
{
	struct job j = { .vf = vf, .rd = rd, .stop = o->stop };
	char what[4096 + 256];
	pthread_t th[64];
	unsigned i, started = 0;
	int fd, ret = 0;

	snprintf(what, sizeof(what), "%s/%s", outdir, vf->name);
	/* 0600 while written (it is reopened, and the staging directory is
	 * 0700); its own mode comes with the fsync */
	fd = openat(nfd, vf->name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return rfs_errsys(err, "%s: cannot create", what);
	if (vf->size && ftruncate(fd, (off_t)vf->size)) {
		ret = rfs_errsys(err, "%s: cannot size to %llu bytes", what,
				 (unsigned long long)vf->size);
		goto fail;
	}
	j.fd = fd;
	j.what = what;
	/* the bulk is written with O_DIRECT: computed bytes go to the disk without
	 * a copy into the page cache (that copy was most of the export's CPU) */
	j.dfd = vf->size >= BLOCK ? openat(nfd, vf->name, O_WRONLY | O_DIRECT | O_CLOEXEC) : -1;
	pthread_mutex_init(&j.lock, NULL);
	pthread_cond_init(&j.changed, NULL);
	if (vf->size <= BLOCK)
		nthreads = 1;
	pthread_mutex_lock(&j.lock);
	for (i = 0; i < nthreads && i < RFS_TUNE_EXPORT_MAX_THREADS; i++)
		if (!pthread_create(&th[i], NULL, worker, &j)) {
			started++;
			j.running++;
		}
	pthread_mutex_unlock(&j.lock);
	if (!started) {
		j.running = 1;
		worker(&j);
	}
	/* report progress while the workers run (at most 10 times a second) */
	pthread_mutex_lock(&j.lock);
	while (j.running) {
		struct timespec ts;
		uint64_t d = j.done;

		pthread_mutex_unlock(&j.lock);
		if (o->progress)
			o->progress(*done_total + d, total, vf->name, o->progress_ctx);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&j.lock);
		if (j.running)
			pthread_cond_timedwait(&j.changed, &j.lock, &ts);
	}
	pthread_mutex_unlock(&j.lock);
	if (o->progress)
		o->progress(*done_total + j.done, total, vf->name, o->progress_ctx);
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (j.dfd >= 0)
		close(j.dfd);
	pthread_cond_destroy(&j.changed);
	pthread_mutex_destroy(&j.lock);
	if (j.failed) {
		*err = j.err;
		ret = err->code ? err->code : RFS_E_IO;
		goto fail;
	}
	if (o->stop && *o->stop) {
		ret = rfs_errf(err, RFS_E_INTR, "interrupted while writing %s", what);
		goto fail;
	}
	/* start writing it back now; the fsyncs come once all files are
	 * written (reopened then: a thousand shards keep no thousand
	 * descriptors open) */
	sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	ret = close(fd);
	fd = -1;
	if (ret) {
		ret = rfs_errsys(err, "%s: close failed", what);
		goto fail;
	}
	*done_total += vf->size;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlinkat(nfd, vf->name, 0);
	return ret;
}

/* mkdir -p: creates @path and its missing parents (0755). */
static int mkdir_p(const char *path)
{
	char buf[4096];
	size_t i, n = strlen(path);

	if (n >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, n + 1);
	for (i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != 0)
			continue;
		buf[i] = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			return -1;
		buf[i] = path[i];
	}
	return 0;
}

/* Removes @name of @dfd and everything under it, never following a
 * symbolic link.  Returns 0, or -1 with errno set when something stayed. */
static int rm_tree(int dfd, const char *name, unsigned depth)
{
	struct dirent *e;
	DIR *d;
	int fd, ret = 0;

	if (!unlinkat(dfd, name, 0) || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -1;
	if (depth >= 8) { /* ours are two deep */
		errno = ELOOP;
		return -1;
	}
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -1;
	}
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
		    rm_tree(fd, e->d_name, depth + 1))
			ret = -1;
	closedir(d);
	if (unlinkat(dfd, name, AT_REMOVEDIR) && errno != ENOENT)
		ret = -1;
	return ret;
}

/* 1 when @name exists in @dfd (a link is not followed), 0 when it does
 * not, -1 on another error (errno set). */
static int exists_at(int dfd, const char *name)
{
	struct stat st;

	if (dfd < 0)
		return 0;
	if (!fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW))
		return 1;
	return errno == ENOENT ? 0 : -1;
}

/* ---- the commit list ---------------------------------------------------- */

struct entry {
	char how;             /* 'R': replaces OUTDIR/NAME; 'N': a new name */
	const char *name;
};

/* Writes the list to @sdfd/commit (through commit.tmp, fsynced). */
static int write_list(int sdfd, const struct entry *en, size_t n, const char *sdir,
		      struct rfs_err *err)
{
	size_t i, len = 0, off = 0;
	char *buf;
	int fd, ret = 0;

	for (i = 0; i < n; i++)
		len += strlen(en[i].name) + 2;
	buf = malloc(len ? len : 1);
	if (!buf)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	for (i = 0; i < n; i++) {
		size_t k = strlen(en[i].name);

		buf[off++] = en[i].how;
		memcpy(buf + off, en[i].name, k + 1);
		off += k + 1;
	}
	fd = openat(sdfd, COMMIT_LIST ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = rfs_errsys(err, "%s/" COMMIT_LIST ".tmp: cannot create", sdir);
		goto out;
	}
	for (off = 0; off < len;) {
		ssize_t w = write(fd, buf + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			ret = rfs_errsys(err, "%s/" COMMIT_LIST ".tmp: write failed", sdir);
			break;
		}
		off += (size_t)w;
	}
	if (!ret && fsync(fd))
		ret = rfs_errsys(err, "%s/" COMMIT_LIST ".tmp: fsync failed", sdir);
	if (close(fd) && !ret)
		ret = rfs_errsys(err, "%s/" COMMIT_LIST ".tmp: close failed", sdir);
	if (!ret && renameat(sdfd, COMMIT_LIST ".tmp", sdfd, COMMIT_LIST))
		ret = rfs_errsys(err, "%s/" COMMIT_LIST ": cannot create", sdir);
	if (!ret && fsync(sdfd))
		ret = rfs_errsys(err, "%s: fsync failed", sdir);
out:
	free(buf);
	return ret;
}

/* Reads a dead export's list.  On success *@en and *@buf are the caller's
 * to free (the names point into *@buf); 1 when there is no list. */
static int read_list(int sdfd, const char *sdir, struct entry **en, size_t *n, char **buf,
		     struct rfs_err *err)
{
	struct entry *v = NULL;
	struct stat st;
	size_t len = 0, off, cnt = 0;
	char *b = NULL;
	int fd, ret = 0;

	fd = openat(sdfd, COMMIT_LIST, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 1;
	if (fd < 0)
		return rfs_errsys(err, "%s/" COMMIT_LIST ": cannot open", sdir);
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > COMMIT_LIST_MAX) {
		ret = rfs_errf(err, RFS_E_FORMAT, "%s/" COMMIT_LIST ": not a commit list of residfs", sdir);
		goto out;
	}
	len = (size_t)st.st_size;
	b = malloc(len + 1);
	v = calloc(len / 2 + 1, sizeof(*v));
	if (!b || !v) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	if (rfs_pread_all(fd, b, len, 0)) {
		ret = rfs_errsys(err, "%s/" COMMIT_LIST ": cannot read", sdir);
		goto out;
	}
	b[len] = 0;
	for (off = 0; off < len;) {
		const char *nm = b + off + 1;
		size_t k = strnlen(nm, len - off - 1);

		if ((b[off] != 'R' && b[off] != 'N') || off + 1 + k >= len || !k ||
		    strchr(nm, '/') || !strcmp(nm, ".") || !strcmp(nm, "..")) {
			ret = rfs_errf(err, RFS_E_FORMAT,
				       "%s/" COMMIT_LIST ": damaged at byte %zu; undo by hand", sdir, off);
			goto out;
		}
		v[cnt].how = b[off];
		v[cnt++].name = nm;
		off += k + 2;
	}
	*en = v;
	*n = cnt;
	*buf = b;
	v = NULL;
	b = NULL;
out:
	close(fd);
	free(v);
	free(b);
	return ret;
}

/* Undoes the moves of a list (see the top of the file).  @ofd, @nfd: the
 * staging directory's old/ and new/ (-1 when absent). */
static int undo(int odfd, int nfd, int ofd, const struct entry *en, size_t n,
		const char *outdir, struct rfs_err *err)
{
	size_t i;
	int ret = 0, r;

	for (i = n; i-- > 0;) {
		const char *nm = en[i].name;

		if (en[i].how == 'R') {
			if (ofd >= 0 && renameat(ofd, nm, odfd, nm) && errno != ENOENT && !ret)
				ret = rfs_errsys(err, "cannot put the previous %s/%s back", outdir, nm);
			continue;
		}
		r = exists_at(nfd, nm);
		if (r < 0 && !ret)
			ret = rfs_errsys(err, "cannot look for %s/%s in the staging directory", outdir, nm);
		if (!r && unlinkat(odfd, nm, 0) && errno != ENOENT && !ret)
			ret = rfs_errsys(err, "cannot remove %s/%s", outdir, nm);
	}
	if (!ret && fsync(odfd))
		ret = rfs_errsys(err, "%s: fsync failed", outdir);
	return ret;
}

/* Moves every listed file from new/ into OUTDIR and removes the list from
 * @sdfd (phases 3 and 4); on failure the moves are undone.  *@undo_failed:
 * undoing failed too, the staging directory holds previous files and its
 * list and must stay. */
static int commit(int odfd, int sdfd, int nfd, int ofd, const struct entry *en, size_t n,
		  const char *outdir, int *undo_failed, struct rfs_err *err)
{
	const char *hook = getenv("RESIDFS_TEST_FAIL_RENAME"); /* test hook, export.h */
	char *hook_end = NULL;
	long fail_at = hook && *hook ? strtol(hook, &hook_end, 10) : 0;
	int hook_kill = hook_end && !strcmp(hook_end, ",kill");
	struct rfs_err e2 = { 0 };
	size_t i;
	int ret = 0, r;

	for (i = 0; i < n; i++) {
		const char *nm = en[i].name;

		if (en[i].how == 'R' && linkat(odfd, nm, ofd, nm, 0) &&
		    (errno == ENOENT || errno == EEXIST || renameat(odfd, nm, ofd, nm))) {
			ret = rfs_errsys(err, "cannot set the previous %s/%s aside", outdir, nm);
			goto undo;
		}
		if ((long)i + 1 == fail_at) {
			if (hook_kill)
				raise(SIGKILL);
			errno = EIO;
			ret = rfs_errsys(err, "cannot move %s/%s into place (RESIDFS_TEST_FAIL_RENAME=%ld)",
					 outdir, nm, fail_at);
			goto undo;
		}
		if (en[i].how == 'N') {
			/* something that appeared meanwhile is not replaced unseen */
			r = renameat2(nfd, nm, odfd, nm, RENAME_NOREPLACE);
			if (r && (errno == EINVAL || errno == ENOSYS))
				r = renameat(nfd, nm, odfd, nm);
		} else {
			r = renameat(nfd, nm, odfd, nm);
		}
		if (r) {
			ret = rfs_errsys(err, "cannot move %s/%s into place", outdir, nm);
			goto undo;
		}
	}
	if (fsync(odfd)) {
		ret = rfs_errsys(err, "%s: fsync failed", outdir);
		goto undo;
	}
	/* done: a list left behind would have the next export undo this one */
	if (unlinkat(sdfd, COMMIT_LIST, 0)) {
		ret = rfs_errsys(err, "%s/" RFS_EXPORT_STAGING "%ld/" COMMIT_LIST ": cannot remove",
				 outdir, (long)getpid());
		goto undo;
	}
	if (fsync(sdfd)) {
		/* best effort: only a crash before the staging directory's
		 * removal reaches the disk could bring the list back */
	}
	return 0;
undo:
	if (undo(odfd, nfd, ofd, en, n, outdir, &e2)) {
		size_t k = strlen(err->msg);

		*undo_failed = 1;
		snprintf(err->msg + k, sizeof(err->msg) - k,
			 "; putting the previous files back failed too (%s): the next export into %s finishes it",
			 e2.msg, outdir);
	}
	return ret;
}

/* ---- what OUTDIR may be ------------------------------------------------- */

struct srcfile {
	uint64_t dev, ino;
	const char *path;
};

static int by_id(const void *a, const void *b)
{
	const struct srcfile *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return (x->ino > y->ino) - (x->ino < y->ino);
}

/* Every source file the plan reads, by device and inode (the identities
 * recorded when it was opened), sorted by them.  The caller frees *@out. */
static int source_files(const struct rfs_plan *plan, struct srcfile **out, size_t *nout,
			struct rfs_err *err)
{
	struct srcfile *v;
	size_t n = 0, i, k;

	for (i = 0; i < plan->nfiles; i++)
		n += plan->files[i].nsrcs;
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	n = 0;
	for (i = 0; i < plan->nfiles; i++)
		for (k = 0; k < plan->files[i].nsrcs; k++) {
			const struct rfs_bsrc *src = plan->files[i].srcs[k];

			if (rfs_bsrc_fd(src) >= 0) /* a local file: OUTDIR could hold it */
				v[n++] = (struct srcfile){ .dev = src->id.dev, .ino = src->id.ino,
							   .path = src->name };
		}
	if (n)
		qsort(v, n, sizeof(*v), by_id);
	*out = v;
	*nout = n;
	return 0;
}

/* OUTDIR (open as @odfd) must be no term's directory and hold no source
 * file: an export there would replace the files it reads. */
static int check_not_source(const struct rfs_plan *plan, int odfd, const char *outdir,
			    struct rfs_err *err)
{
	struct srcfile *src = NULL;
	struct dirent *e;
	struct stat ost, st;
	size_t i, nsrc = 0;
	DIR *d;
	int fd, ret;

	if (fstat(odfd, &ost))
		return rfs_errsys(err, "%s: cannot stat", outdir);
	for (i = 0; i < plan->nsrc; i++)
		if (plan->src[i] && plan->src[i]->td->local_dir && !stat(plan->src[i]->td->local_dir, &st) &&
		    st.st_dev == ost.st_dev &&
		    st.st_ino == ost.st_ino)
			return rfs_errf(err, RFS_E_EXIST,
					"%s is the directory of the SPEC's term '%s': an export there would replace the files it reads; export into another directory",
					outdir, plan->src[i]->dir);
	ret = source_files(plan, &src, &nsrc, err);
	if (ret)
		return ret;
	fd = openat(odfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		free(src);
		return rfs_errsys(err, "%s: cannot list", outdir);
	}
	while ((e = readdir(d))) {
		struct srcfile key, *hit;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
		    fstatat(odfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		key.dev = (uint64_t)st.st_dev;
		key.ino = (uint64_t)st.st_ino;
		hit = nsrc ? bsearch(&key, src, nsrc, sizeof(*src), by_id) : NULL;
		if (hit) {
			ret = rfs_errf(err, RFS_E_EXIST,
				       "%s holds %s, which is the source file %s: an export there would replace the files it reads; export into another directory",
				       outdir, e->d_name, hit->path ? hit->path : "of the SPEC");
			break;
		}
	}
	closedir(d);
	free(src);
	return ret;
}

/* The pid in a leftover's name: ".residfs-export-PID" (*@staging = 1) or
 * ".NAME.residfs-tmp-PID" (0); 0 when @name is neither. */
static long leftover_pid(const char *name, int *staging)
{
	const char *p;
	long pid = 0;

	if (!strncmp(name, RFS_EXPORT_STAGING, strlen(RFS_EXPORT_STAGING))) {
		p = name + strlen(RFS_EXPORT_STAGING);
		*staging = 1;
	} else if (name[0] == '.' && (p = strstr(name, OLD_TMP_MARK)) && p > name + 1) {
		const char *q;

		while ((q = strstr(p + 1, OLD_TMP_MARK)))
			p = q;
		p += strlen(OLD_TMP_MARK);
		*staging = 0;
	} else {
		return 0;
	}
	if (!*p || strlen(p) > 9)
		return 0;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		pid = pid * 10 + (*p - '0');
	}
	return pid;
}

/* Whether the export that left something under @pid may still run.  Our
 * own pid is an earlier process's: this one has not written anything. */
static int pid_alive(long pid)
{
	if (pid == (long)getpid())
		return 0;
	return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

static void note(const struct rfs_export_opts *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void note(const struct rfs_export_opts *o, const char *fmt, ...)
{
	char msg[RFS_ERR_MSG_MAX];
	va_list ap;

	if (!o->note)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	o->note(msg, o->note_ctx);
}

/* A dead export's staging directory @name: undoes its moves when it left a
 * commit list, then removes it. */
static int recover(int odfd, const char *name, long pid, const char *outdir,
		   const struct rfs_export_opts *o, struct rfs_err *err)
{
	struct entry *en = NULL;
	char sdir[4096 + 64], *buf = NULL;
	size_t n = 0;
	int sdfd, nfd = -1, ofd = -1, ret = 0;

	snprintf(sdir, sizeof(sdir), "%s/%s", outdir, name);
	sdfd = openat(odfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sdfd >= 0) {
		ret = read_list(sdfd, sdir, &en, &n, &buf, err);
		if (ret < 0)
			goto out;
		if (!ret) {
			nfd = openat(sdfd, "new", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			ofd = openat(sdfd, "old", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			ret = undo(odfd, nfd, ofd, en, n, outdir, err);
			if (ret) {
				size_t k = strlen(err->msg);

				snprintf(err->msg + k, sizeof(err->msg) - k,
					 " (undoing the unfinished export of process %ld, whose previous files are in %s)",
					 pid, sdir);
				goto out;
			}
			note(o, "%s: put back the files that an unfinished export (process %ld, gone) had replaced",
			     outdir, pid);
		}
		ret = 0;
	}
	if (rm_tree(odfd, name, 0))
		ret = rfs_errsys(err, "%s: cannot remove what an unfinished export (process %ld, gone) left",
				 sdir, pid);
	else
		note(o, "removed %s, left by an export that did not finish (process %ld is gone)", sdir, pid);
out:
	if (nfd >= 0)
		close(nfd);
	if (ofd >= 0)
		close(ofd);
	if (sdfd >= 0)
		close(sdfd);
	free(en);
	free(buf);
	return ret;
}

/* Removes what exports whose process is gone left in OUTDIR; refuses when
 * a running export is writing there. */
static int clean_leftovers(int odfd, const char *outdir, const struct rfs_export_opts *o,
			   struct rfs_err *err)
{
	struct dirent *e;
	char **names = NULL, **nn;
	size_t n = 0, i;
	DIR *d;
	int fd, ret = 0, staging;

	fd = openat(odfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return rfs_errsys(err, "%s: cannot list", outdir);
	}
	while ((e = readdir(d))) {
		if (!leftover_pid(e->d_name, &staging))
			continue;
		nn = realloc(names, (n + 1) * sizeof(*names));
		if (!nn || !(nn[n] = strdup(e->d_name))) {
			names = nn ? nn : names;
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			break;
		}
		names = nn;
		n++;
	}
	closedir(d);
	for (i = 0; i < n && !ret; i++) {
		long pid = leftover_pid(names[i], &staging);
		struct stat st;

		if (pid_alive(pid)) {
			if (staging)
				ret = rfs_errf(err, RFS_E_EXIST,
					       "%s/%s belongs to an export into %s that is still running (process %ld): wait for it to end (or remove that directory if no export runs)",
					       outdir, names[i], outdir, pid);
			continue;
		}
		if (staging) {
			ret = recover(odfd, names[i], pid, outdir, o, err);
		} else if (!fstatat(odfd, names[i], &st, AT_SYMLINK_NOFOLLOW) && S_ISREG(st.st_mode)) {
			if (unlinkat(odfd, names[i], 0) && errno != ENOENT)
				ret = rfs_errsys(err, "%s/%s: cannot remove", outdir, names[i]);
			else
				note(o, "removed %s/%s, left by an export that did not finish (process %ld is gone)",
				     outdir, names[i], pid);
		}
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return ret;
}

/* Without --force OUTDIR must be empty; with it, no file the export
 * writes may be a directory there. */
static int check_targets(const struct rfs_plan *plan, int odfd, const char *outdir, int force,
			 struct rfs_err *err)
{
	struct dirent *e;
	struct stat st;
	size_t i;
	DIR *d;
	int fd, empty = 1;

	fd = openat(odfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return rfs_errsys(err, "%s: cannot list", outdir);
	}
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			empty = 0;
			break;
		}
	closedir(d);
	if (empty)
		return 0;
	if (!force)
		return rfs_errf(err, RFS_E_EXIST,
				"%s is not empty; use --force to write into it (files of the same name are replaced, others kept)",
				outdir);
	for (i = 0; i < plan->nfiles; i++)
		if (!fstatat(odfd, plan->files[i].name, &st, AT_SYMLINK_NOFOLLOW) && S_ISDIR(st.st_mode))
			return rfs_errf(err, RFS_E_EXIST,
					"%s/%s is a directory: the export has a file of that name", outdir,
					plan->files[i].name);
	return 0;
}

/* ---- the export ---------------------------------------------------------- */

enum rfs_code rfs_export(const struct rfs_plan *plan, const char *outdir, const struct rfs_reader *rd,
			 const struct rfs_export_opts *o, struct rfs_err *err)
{
	struct entry *en = NULL;
	char sname[64], sdir[4096 + 64];
	uint64_t total = 0, done = 0;
	struct stat st;
	unsigned nthreads = o->threads;
	size_t i;
	int ret = 0, existed = 0, keep = 0, made = 0, odfd = -1, sdfd = -1, nfd = -1, ofd = -1;

	if (!nthreads) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		nthreads = ncpu > 0 ? (unsigned)(ncpu > RFS_TUNE_EXPORT_DEFAULT_THREADS ? RFS_TUNE_EXPORT_DEFAULT_THREADS : ncpu) : 1;
	}
	rfs_busguard_install(); /* before any read; -1: operands are read with pread */
	if (stat(outdir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return rfs_errf(err, RFS_E_EXIST, "%s exists and is not a directory", outdir);
		existed = 1;
	} else if (errno != ENOENT || mkdir_p(outdir)) {
		return rfs_errsys(err, "%s: cannot create", outdir);
	}
	odfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (odfd < 0)
		return rfs_errsys(err, "%s: cannot open", outdir);
	if (existed && ((ret = check_not_source(plan, odfd, outdir, err)) ||
			(ret = clean_leftovers(odfd, outdir, o, err)) ||
			(ret = check_targets(plan, odfd, outdir, o->force, err))))
		goto out;
	snprintf(sname, sizeof(sname), "%s%ld", RFS_EXPORT_STAGING, (long)getpid());
	snprintf(sdir, sizeof(sdir), "%s/%s", outdir, sname);
	if (mkdirat(odfd, sname, 0700)) {
		ret = rfs_errsys(err, "%s: cannot create", sdir);
		goto out;
	}
	made = 1;
	sdfd = openat(odfd, sname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sdfd < 0 || mkdirat(sdfd, "new", 0700) || mkdirat(sdfd, "old", 0700) ||
	    (nfd = openat(sdfd, "new", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
	    (ofd = openat(sdfd, "old", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		ret = rfs_errsys(err, "%s: cannot set up", sdir);
		goto out;
	}
	/* 1. every file under its final name in new/, then fsynced */
	for (i = 0; i < plan->nfiles; i++)
		total += plan->files[i].size;
	for (i = 0; i < plan->nfiles; i++) {
		ret = export_file(&plan->files[i], rd, nfd, outdir, o, nthreads, &done, total, err);
		if (ret)
			goto out;
	}
	for (i = 0; i < plan->nfiles; i++) {
		const struct rfs_vfile *vf = &plan->files[i];
		int fd = openat(nfd, vf->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

		/* fchmod sets the mode exactly: the umask neither widens
		 * nor narrows it */
		if (fd < 0 || fchmod(fd, file_mode(vf)) || fsync(fd)) {
			ret = rfs_errsys(err, "%s/%s: cannot set its mode to %04o and fsync it", outdir,
					 vf->name, (unsigned)file_mode(vf));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		close(fd);
	}
	if (fsync(nfd)) {
		ret = rfs_errsys(err, "%s/new: fsync failed", sdir);
		goto out;
	}
	/* 2. the commit list; an interruption after it lets the moves finish */
	if (o->stop && *o->stop) {
		ret = rfs_errf(err, RFS_E_INTR, "interrupted before the files were moved into %s", outdir);
		goto out;
	}
	en = calloc(plan->nfiles ? plan->nfiles : 1, sizeof(*en));
	if (!en) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < plan->nfiles; i++) {
		int r = exists_at(odfd, plan->files[i].name);

		if (r < 0) {
			ret = rfs_errsys(err, "%s/%s: cannot stat", outdir, plan->files[i].name);
			goto out;
		}
		en[i].how = r ? 'R' : 'N';
		en[i].name = plan->files[i].name;
	}
	ret = write_list(sdfd, en, plan->nfiles, sdir, err);
	if (ret)
		goto out;
	/* 3. the moves; 4. the list removed */
	ret = commit(odfd, sdfd, nfd, ofd, en, plan->nfiles, outdir, &keep, err);
out:
	if (nfd >= 0)
		close(nfd);
	if (ofd >= 0)
		close(ofd);
	if (sdfd >= 0)
		close(sdfd);
	if (made && !keep)
		rm_tree(odfd, sname, 0); /* what stays is removed by the next export */
	close(odfd);
	free(en);
	return ret;
}
