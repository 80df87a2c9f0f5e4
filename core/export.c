#include "export.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
	uint64_t next;          /* next block offset to take */
	uint64_t done;          /* bytes written */
	int failed;
	struct rfs_err err;
	const char *tmp;
	pthread_mutex_t lock;
	volatile sig_atomic_t *stop;
};

static void *worker(void *arg)
{
	struct job *j = arg;
	char *buf = malloc(BLOCK);

	if (!buf) {
		pthread_mutex_lock(&j->lock);
		if (!j->failed) {
			j->failed = 1;
			rfs_errf(&j->err, RFS_E_NOMEM, "out of memory");
		}
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
				ssize_t k = pwrite(j->fd, buf + w, n - w, (off_t)(off + w));

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
		pthread_mutex_unlock(&j->lock);
	}
	free(buf);
	return NULL;
}

static int export_file(const struct rfs_vfile *vf, const char *outdir,
		       const struct rfs_export_opts *o, unsigned nthreads,
		       uint64_t *done_total, uint64_t total, struct rfs_err *err)
{
	char tmp[4096], fin[4096];
	struct job j = { .vf = vf, .stop = o->stop };
	pthread_t th[64];
	unsigned i, started = 0;
	int fd, ret = 0;

	snprintf(fin, sizeof(fin), "%s/%s", outdir, vf->name);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.residfs-tmp-%ld", outdir, vf->name,
			     (long)getpid()) >= sizeof(tmp))
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
	pthread_mutex_init(&j.lock, NULL);
	if (vf->size <= BLOCK)
		nthreads = 1;
	for (i = 0; i < nthreads && i < 64; i++)
		if (!pthread_create(&th[i], NULL, worker, &j))
			started++;
	if (!started)
		worker(&j);
	/* report progress while the workers run */
	for (;;) {
		uint64_t d;
		int fin_now;

		pthread_mutex_lock(&j.lock);
		d = j.done;
		fin_now = j.failed || d >= vf->size || (o->stop && *o->stop);
		pthread_mutex_unlock(&j.lock);
		if (o->progress)
			o->progress(*done_total + d, total, vf->name, o->progress_ctx);
		if (fin_now || !started)
			break;
		usleep(100000);
	}
	for (i = 0; i < started; i++)
		pthread_join(th[i], NULL);
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
	if (fsync(fd)) {
		ret = rfs_errsys(err, "%s: fsync failed", tmp);
		goto fail;
	}
	if (close(fd)) {
		fd = -1;
		ret = rfs_errsys(err, "%s: close failed", tmp);
		goto fail;
	}
	fd = -1;
	if (rename(tmp, fin)) {
		ret = rfs_errsys(err, "cannot rename %s to %s", tmp, fin);
		goto fail;
	}
	*done_total += vf->size;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return ret;
}

int rfs_export(const struct rfs_plan *plan, const char *outdir,
	       const struct rfs_export_opts *o, struct rfs_err *err)
{
	uint64_t total = 0, done = 0;
	struct stat st;
	unsigned nthreads = o->threads;
	size_t i;
	int ret, empty = 0, dfd;

	if (!nthreads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		nthreads = n > 0 ? (unsigned)(n > 16 ? 16 : n) : 1;
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
	} else if (errno != ENOENT || mkdir(outdir, 0755)) {
		return rfs_errsys(err, "%s: cannot create", outdir);
	}
	for (i = 0; i < plan->nfiles; i++)
		total += plan->files[i].size;
	for (i = 0; i < plan->nfiles; i++) {
		ret = export_file(&plan->files[i], outdir, o, nthreads, &done, total, err);
		if (ret)
			return ret;
	}
	dfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}
