/*
 * tlocal.c - local directories as terms (tdir.h): a thin layer over the
 * containment of util.h (rfs_root) and local byte sources (bsrc.h).
 */
#include "tdir.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

struct local {
	struct rfs_tdir t;
	struct rfs_root root;
	char *dir;
};

static int l_exists(struct rfs_tdir *t, const char *name)
{
	return rfs_entry_exists_at(((struct local *)t)->dir, name);
}

static int l_is_file(struct rfs_tdir *t, const char *name)
{
	return rfs_file_exists_at(((struct local *)t)->dir, name);
}

static enum rfs_code l_open(struct rfs_tdir *t, const char *name, struct rfs_bsrc **out,
			    struct rfs_err *err)
{
	struct local *l = (struct local *)t;

	if (strlen(l->dir) + 1 + strlen(name) >= 4096)
		return rfs_errf(err, RFS_E_RANGE, "%s/%s: path too long", l->dir, name);
	return rfs_bsrc_local_open(&l->root, l->dir, name, out, err);
}

static enum rfs_code l_list(struct rfs_tdir *t, char ***names, size_t *n, struct rfs_err *err)
{
	struct local *l = (struct local *)t;
	DIR *d = opendir(l->dir);
	struct dirent *e;
	char **v = NULL, **g;
	size_t cnt = 0, cap = 0;

	if (!d)
		return rfs_errsys(err, "%s: cannot list", l->dir);
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			g = realloc(v, cap * sizeof(*v));
			if (!g)
				goto nomem;
			v = g;
		}
		if (!(v[cnt] = strdup(e->d_name)))
			goto nomem;
		cnt++;
	}
	closedir(d);
	*names = v;
	*n = cnt;
	return 0;
nomem:
	closedir(d);
	while (cnt)
		free(v[--cnt]);
	free(v);
	return rfs_errf(err, RFS_E_NOMEM, "out of memory");
}

void rfs_tdir_free_common(struct rfs_tdir *t)
{
	free(t->label);
	free(t->resolved);
	free(t->repo_id);
	free(t->local_dir);
}

static void l_close(struct rfs_tdir *t)
{
	struct local *l = (struct local *)t;

	rfs_root_release(&l->root);
	free(l->dir);
	rfs_tdir_free_common(t);
	free(l);
}

static const struct rfs_tdir_ops local_ops = {
	.exists = l_exists, .is_file = l_is_file, .open = l_open, .list = l_list, .close = l_close,
};

enum rfs_code rfs_tdir_local(const char *dir, const char *label, struct rfs_tdir **out,
			     struct rfs_err *err)
{
	struct local *l = calloc(1, sizeof(*l));
	struct stat st;
	int ret;

	if (!l)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	l->t.ops = &local_ops;
	if (stat(dir, &st)) {
		ret = rfs_errsys(err, "%s", dir);
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		ret = rfs_errf(err, RFS_E_FORMAT, "%s: not a directory", dir);
		goto fail;
	}
	l->dir = strdup(dir);
	l->t.label = strdup(label ? label : dir);
	l->t.local_dir = strdup(dir);
	if (!l->dir || !l->t.label || !l->t.local_dir) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto fail;
	}
	ret = rfs_root_init(&l->root, dir, err);
	if (ret)
		goto fail;
	*out = &l->t;
	return 0;
fail:
	l_close(&l->t);
	return ret;
}
