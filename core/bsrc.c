/*
 * bsrc.c - byte sources (bsrc.h) and their first implementation, local
 * files: a descriptor opened once, read with pread and mapped with mmap,
 * checked by rfs_ident.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bsrc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util.h"

struct local {
	struct rfs_bsrc b;      /* first: the ops get a struct rfs_bsrc * */
	int fd;
	char *path;             /* b.name */
	struct rfs_ident ident; /* change detection */
};

static const struct rfs_bsrc_ops local_ops;

static struct local *as_local(struct rfs_bsrc *s)
{
	return s && s->ops == &local_ops ? (struct local *)s : NULL;
}

static enum rfs_code local_pread(struct rfs_bsrc *s, void *buf, size_t len, uint64_t off,
				 struct rfs_err *err)
{
	struct local *l = (struct local *)s;

	if (!rfs_pread_all(l->fd, buf, len, off))
		return 0;
	if (errno == EIO)
		return rfs_errf(err, RFS_E_IO,
				"%s: the file ends before %llu: it was truncated or replaced after it was checked",
				s->name, (unsigned long long)(off + len));
	return rfs_errsys(err, "%s: read of %zu bytes at %llu failed", s->name, len,
			  (unsigned long long)off);
}

static enum rfs_code local_map(struct rfs_bsrc *s, uint64_t off, size_t len, char **win,
			       size_t *winlen, const char **at, struct rfs_err *err)
{
	struct local *l = (struct local *)s;
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), pa = off & ~(page - 1);
	size_t n = (size_t)(off - pa) + len;
	void *m = mmap(NULL, n, PROT_READ, MAP_SHARED, l->fd, (off_t)pa);

	if (m == MAP_FAILED)
		return rfs_errsys(err, "%s: cannot map %zu bytes at %llu", s->name, len,
				  (unsigned long long)off);
	*win = m;
	*winlen = n;
	*at = (const char *)m + (off - pa);
	return 0;
}

static void local_unmap(struct rfs_bsrc *s, char *win, size_t winlen)
{
	(void)s;
	munmap(win, winlen);
}

static enum rfs_code local_check(struct rfs_bsrc *s, int force, struct rfs_err *err)
{
	return rfs_ident_check(&((struct local *)s)->ident, force, err);
}

static void local_close(struct rfs_bsrc *s)
{
	struct local *l = (struct local *)s;

	if (l->fd >= 0)
		close(l->fd);
	rfs_ident_release(&l->ident);
	free(l->path);
	free(l);
}

static const struct rfs_bsrc_ops local_ops = {
	.pread = local_pread, .map = local_map, .unmap = local_unmap,
	.check = local_check, .close = local_close,
};

enum rfs_code rfs_bsrc_local_fd(int fd, const struct stat *st, const char *path,
				struct rfs_bsrc **out, struct rfs_err *err)
{
	struct local *l = calloc(1, sizeof(*l));

	if (!l || !(l->path = strdup(path))) {
		free(l);
		close(fd);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	l->fd = fd;
	rfs_ident_init(&l->ident, l->path, fd, st);
	l->b.ops = &local_ops;
	l->b.size = (uint64_t)st->st_size;
	l->b.id = (struct rfs_bsrc_id){ .dev = (uint64_t)st->st_dev, .ino = (uint64_t)st->st_ino,
					.size = (uint64_t)st->st_size,
					.mtime_ns = rfs_ts_ns(&st->st_mtim) };
	l->b.name = l->path;
	l->b.mtime_ns = rfs_ts_ns(&st->st_mtim);
	l->b.mode = st->st_mode & 07777;
	*out = &l->b;
	return 0;
}

enum rfs_code rfs_bsrc_local_open(const struct rfs_root *root, const char *dir, const char *name,
				  struct rfs_bsrc **out, struct rfs_err *err)
{
	struct rfs_bsrc *s;
	struct stat st;
	char *path;
	int fd, ret;

	ret = rfs_root_open(root, dir, name, &fd, &st, err);
	if (ret)
		return ret;
	if (asprintf(&path, "%s/%s", dir, name) < 0) {
		close(fd);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	ret = rfs_bsrc_local_fd(fd, &st, path, &s, err);
	free(path);
	if (ret)
		return ret;
	/* a daemon changes its working directory: checks stat the absolute path */
	if (rfs_ident_locate(&((struct local *)s)->ident, root->dir, name)) {
		rfs_bsrc_close(s);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	*out = s;
	return 0;
}

int rfs_bsrc_fd(const struct rfs_bsrc *s)
{
	struct local *l = as_local((struct rfs_bsrc *)s);

	return l ? l->fd : -1;
}

int rfs_bsrc_first_report(struct rfs_bsrc *s)
{
	return __atomic_exchange_n(&s->reported, 1, __ATOMIC_ACQ_REL) == 0;
}

enum rfs_code rfs_bsrc_read_all(struct rfs_bsrc *s, size_t max, char **out, size_t *len,
				struct rfs_err *err)
{
	char *buf;
	int ret;

	if (s->size > max)
		return rfs_errf(err, RFS_E_FORMAT, "%s: %llu bytes is larger than the %zu allowed",
				s->name, (unsigned long long)s->size, max);
	buf = malloc((size_t)s->size + 1);
	if (!buf)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	ret = rfs_bsrc_pread(s, buf, (size_t)s->size, 0, err);
	if (ret) {
		free(buf);
		return ret;
	}
	buf[s->size] = 0;
	*out = buf;
	if (len)
		*len = (size_t)s->size;
	return 0;
}

void rfs_bsrc_close(struct rfs_bsrc *s)
{
	if (s)
		s->ops->close(s);
}
