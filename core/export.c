#include "export.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (8u << 20) /* bytes per read-compute-write step */

static int dir_is_empty(const char *dir, int *empty, struct rfs_err *err)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return rfs_errsys(err, "%s: cannot list", dir);
	*empty = 1;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			*empty = 0;
			break;
		}
	closedir(d);
	return 0;
}

/* Work shared by the threads exporting one file: blocks are computed in
 * parallel (any order) and written with pwrite at their offsets. */
struct job {
	const struct rfs_vfile *vf;
	int fd;
	int dfd;                /* the same file opened O_DIRECT, or -1 */
	uint64_t next;          /* next block offset to take */
	uint64_t done;          /* bytes written */
	int failed;
	struct rfs_err err;
	const char *tmp;
	pthread_mutex_t lock;
	pthread_cond_t changed;  /* a block was written or a worker ended */
	unsigned running;
	volatile sig_atomic_t *stop;
};

static void *worker(void *arg)
{
	struct job *j = arg;
	char *buf = NULL;

	if (posix_memalign((void **)&buf, 4096, BLOCK))
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
		r = rfs_vfile_read(j->vf, buf, n, off, NULL, &e);
		if (r == (ssize_t)n) {
			size_t w = 0;

			while (w < n) {
				/* whole 4 KiB blocks go through the O_DIRECT descriptor
				 * (no copy into the page cache), the file's tail not */
				int fd = j->dfd >= 0 && !((off + w) % 4096) && (n - w) >= 4096 ? j->dfd : j->fd;
				size_t len = fd == j->dfd ? (n - w) / 4096 * 4096 : n - w;
				ssize_t k = pwrite(fd, buf + w, len, (off_t)(off + w));

				if (k < 0 && fd == j->dfd && errno == EINVAL) {
					j->dfd = -1; /* the filesystem refuses: buffered from now on */
					continue;
				}

				if (k < 0 && errno == EINTR)
					continue;
				if (k < 0) {
					rfs_errsys(&e, "%s: write failed", j->tmp);
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

/* A file written under its temporary name, waiting to be synced and renamed. */
struct pending {
	int fd;
	char tmp[4096], fin[4096];
};

/* Writes @vf to a temporary file in @outdir and starts its writeback; on
 * success *@pd holds the open file, on failure nothing is left behind. */
static int export_file(const struct rfs_vfile *vf, const char *outdir,
		       const struct rfs_export_opts *o, unsigned nthreads,
		       uint64_t *done_total, uint64_t total, struct pending *pd,
		       struct rfs_err *err)
{
	char *tmp = pd->tmp, *fin = pd->fin;
	struct job j = { .vf = vf, .stop = o->stop };
	pthread_t th[64];
	unsigned i, started = 0;
	int fd, ret = 0;

	snprintf(fin, sizeof(pd->fin), "%s/%s", outdir, vf->name);
	if ((size_t)snprintf(tmp, sizeof(pd->tmp), "%s/.%s.residfs-tmp-%ld", outdir, vf->name,
			     (long)getpid()) >= sizeof(pd->tmp))
		return rfs_errf(err, RFS_E_RANGE, "%s: path too long", fin);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return rfs_errsys(err, "%s: cannot create", tmp);
	if (vf->size && ftruncate(fd, (off_t)vf->size)) {
		ret = rfs_errsys(err, "%s: cannot size to %llu bytes", tmp,
				 (unsigned long long)vf->size);
		goto fail;
	}
	j.fd = fd;
	j.tmp = tmp;
	/* the bulk is written with O_DIRECT: computed bytes go to the disk without
	 * a copy into the page cache (that copy was most of the export's CPU) */
	j.dfd = vf->size >= BLOCK ? open(tmp, O_WRONLY | O_DIRECT | O_CLOEXEC) : -1;
	pthread_mutex_init(&j.lock, NULL);
	pthread_cond_init(&j.changed, NULL);
	if (vf->size <= BLOCK)
		nthreads = 1;
	pthread_mutex_lock(&j.lock);
	for (i = 0; i < nthreads && i < 64; i++)
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
		ret = rfs_errf(err, RFS_E_INTR, "interrupted while writing %s", fin);
		goto fail;
	}
	/* start writing it back now; the fsyncs come once all files are written */
	sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	pd->fd = fd;
	*done_total += vf->size;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
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

int rfs_export(const struct rfs_plan *plan, const char *outdir,
	       const struct rfs_export_opts *o, struct rfs_err *err)
{
	uint64_t total = 0, done = 0;
	struct pending *pd;
	struct stat st;
	unsigned nthreads = o->threads;
	size_t i, n = 0;
	int ret, empty = 0, dfd;

	if (!nthreads) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		nthreads = ncpu > 0 ? (unsigned)(ncpu > 16 ? 16 : ncpu) : 1;
	}
	if (stat(outdir, &st) == 0) {
		if (!S_ISDIR(st.st_mode))
			return rfs_errf(err, RFS_E_EXIST, "%s exists and is not a directory", outdir);
		ret = dir_is_empty(outdir, &empty, err);
		if (ret)
			return ret;
		if (!empty && !o->force)
			return rfs_errf(err, RFS_E_EXIST,
					"%s is not empty; use --force to write into it (files of the same name are replaced)",
					outdir);
	} else if (errno != ENOENT || mkdir_p(outdir)) {
		return rfs_errsys(err, "%s: cannot create", outdir);
	}
	for (i = 0; i < plan->nfiles; i++)
		total += plan->files[i].size;
	pd = calloc(plan->nfiles ? plan->nfiles : 1, sizeof(*pd));
	if (!pd)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	/* 1. every file under its temporary name; 2. fsync each; 3. rename
	 * each: a final name only ever holds a complete, synced file */
	for (n = 0; n < plan->nfiles; n++) {
		ret = export_file(&plan->files[n], outdir, o, nthreads, &done, total, &pd[n], err);
		if (ret)
			goto fail;
	}
	for (i = 0; i < n; i++) {
		if (fsync(pd[i].fd)) {
			ret = rfs_errsys(err, "%s: fsync failed", pd[i].tmp);
			goto fail;
		}
	}
	for (i = 0; i < n; i++) {
		int bad = close(pd[i].fd);

		pd[i].fd = -1;
		if (bad) {
			ret = rfs_errsys(err, "%s: close failed", pd[i].tmp);
			goto fail;
		}
		if (rename(pd[i].tmp, pd[i].fin)) {
			ret = rfs_errsys(err, "cannot rename %s to %s", pd[i].tmp, pd[i].fin);
			goto fail;
		}
		pd[i].tmp[0] = 0;
	}
	free(pd);
	dfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
fail:
	for (i = 0; i < n; i++) {
		if (pd[i].fd >= 0)
			close(pd[i].fd);
		if (pd[i].tmp[0])
			unlink(pd[i].tmp);
	}
	free(pd);
	return ret;
}
