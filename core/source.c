#include "source.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

#define MAX_JSON_FILE (64u << 20)

const char *rfs_src_kind_name(enum rfs_src_kind k)
{
	return k == RFS_SRC_RESIDUALS ? "residuals" : "model";
}

/* The newest mtime of every input counts, patched files included. */
static void note_mtime(struct rfs_src *s, const char *name)
{
	char path[4096];
	struct stat st;
	int64_t t;

	snprintf(path, sizeof(path), "%s/%s", s->dir, name);
	if (stat(path, &st))
		return;
	t = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
	if (t > s->mtime_ns)
		s->mtime_ns = t;
}

static int read_config(struct rfs_src *s, struct rfs_err *err)
{
	cJSON *root;
	const cJSON *v;
	int ret;

	if (!rfs_file_exists_at(s->dir, "config.json"))
		return rfs_errf(err, RFS_E_FORMAT,
				"%s: no config.json, so it is neither a model nor a residuals directory",
				s->dir);
	ret = rfs_read_file_at(s->dir, "config.json", MAX_JSON_FILE, &s->config,
			       &s->config_len, err);
	if (ret)
		return ret;
	note_mtime(s, "config.json");
	root = cJSON_ParseWithLength(s->config, s->config_len);
	if (!root || !cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return rfs_errf(err, RFS_E_FORMAT, "%s/config.json: not a JSON object", s->dir);
	}
	if (cJSON_GetObjectItemCaseSensitive(root, "residuals_version"))
		s->kind = RFS_SRC_RESIDUALS;
	else if (cJSON_GetObjectItemCaseSensitive(root, "model_type") ||
		 cJSON_GetObjectItemCaseSensitive(root, "architectures"))
		s->kind = RFS_SRC_MODEL;
	s->tie_word_embeddings = 1;
	v = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
	if (cJSON_IsBool(v))
		s->tie_word_embeddings = cJSON_IsTrue(v);
	s->vocab_size = -1;
	v = cJSON_GetObjectItemCaseSensitive(root, "vocab_size");
	if (cJSON_IsNumber(v))
		s->vocab_size = (int64_t)v->valuedouble;
	cJSON_Delete(root);
	if (!s->kind)
		return rfs_errf(err, RFS_E_FORMAT,
				"%s/config.json: has neither residuals_version (residuals) nor model_type/architectures (model)",
				s->dir);
	return 0;
}

static int add_file(struct rfs_src *s, const char *name, struct rfs_err *err)
{
	char path[4096];
	struct rfs_st_file *f;
	int ret;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", s->dir, name) >= sizeof(path))
		return rfs_errf(err, RFS_E_RANGE, "%s/%s: path too long", s->dir, name);
	ret = rfs_st_open(path, &f, err);
	if (ret)
		return ret;
	s->files[s->nfiles] = f;
	s->file_names[s->nfiles] = strdup(name);
	s->nfiles++;
	if (!s->file_names[s->nfiles - 1])
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	if (f->mtime_ns > s->mtime_ns)
		s->mtime_ns = f->mtime_ns;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int valid_shard_name(const char *n)
{
	return *n && !strchr(n, '/') && strcmp(n, ".") && strcmp(n, "..") &&
	       strlen(n) < 256;
}

static int build_map(struct rfs_src *s, struct rfs_err *err);

/* Opens the shards named by the index; checks the map against them. */
static int open_sharded(struct rfs_src *s, struct rfs_err *err)
{
	cJSON *root = NULL;
	const cJSON *wm, *e;
	char **names = NULL;
	size_t n = 0, i, u = 0;
	int ret;

	ret = rfs_read_file_at(s->dir, "model.safetensors.index.json", MAX_JSON_FILE,
			       &s->index, &s->index_len, err);
	if (ret)
		return ret;
	note_mtime(s, "model.safetensors.index.json");
	root = cJSON_ParseWithLength(s->index, s->index_len);
	wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
	if (!cJSON_IsObject(wm)) {
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "%s/model.safetensors.index.json: no weight_map object", s->dir);
		goto out;
	}
	cJSON_ArrayForEach(e, wm)
		n++;
	names = calloc(n ? n : 1, sizeof(*names));
	if (!names) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	cJSON_ArrayForEach(e, wm) {
		if (!cJSON_IsString(e) || !valid_shard_name(e->valuestring)) {
			ret = rfs_errf(err, RFS_E_FORMAT,
				       "%s/model.safetensors.index.json: tensor '%s' maps to an invalid file name",
				       s->dir, e->string);
			goto out;
		}
		names[u++] = e->valuestring;
	}
	if (u > 1)
		qsort(names, u, sizeof(*names), cmp_str);
	for (i = 0, n = 0; i < u; i++)
		if (!n || strcmp(names[n - 1], names[i]))
			names[n++] = names[i];
	if (!n) {
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "%s/model.safetensors.index.json: weight_map is empty", s->dir);
		goto out;
	}
	s->files = calloc(n, sizeof(*s->files));
	s->file_names = calloc(n, sizeof(*s->file_names));
	if (!s->files || !s->file_names) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		ret = add_file(s, names[i], err);
		if (ret)
			goto out;
	}
	ret = build_map(s, err);
	if (ret)
		goto out;
	/* every mapped tensor must be in the file the map names */
	cJSON_ArrayForEach(e, wm) {
		const struct rfs_src_tensor *t = rfs_src_find(s, e->string);

		if (!t || strcmp(s->file_names[t->file_idx], e->valuestring)) {
			ret = rfs_errf(err, RFS_E_FORMAT,
				       "%s/model.safetensors.index.json: tensor '%s' is mapped to %s, which does not contain it",
				       s->dir, e->string, e->valuestring);
			goto out;
		}
	}
	s->sharded = 1;
out:
	free(names);
	cJSON_Delete(root);
	return ret;
}

static int build_map(struct rfs_src *s, struct rfs_err *err)
{
	size_t i, j, n = 0, k = 0;

	for (i = 0; i < s->nfiles; i++)
		n += s->files[i]->ntensors;
	s->tensors = calloc(n ? n : 1, sizeof(*s->tensors));
	if (!s->tensors)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	for (i = 0; i < s->nfiles; i++) {
		for (j = 0; j < s->files[i]->ntensors; j++) {
			struct rfs_src_tensor *t = &s->tensors[k];
			const struct rfs_src_tensor *prev;
			int r;

			t->file = s->files[i];
			t->t = &s->files[i]->tensors[j];
			t->file_idx = i;
			r = rfs_strmap_put(&s->by_name, t->t->name, t);
			if (r < 0)
				return rfs_errf(err, RFS_E_NOMEM, "out of memory");
			if (r > 0) {
				prev = rfs_strmap_get(&s->by_name, t->t->name);
				return rfs_errf(err, RFS_E_FORMAT,
						"%s: tensor '%s' is in both %s and %s", s->dir,
						t->t->name, prev->file->path, t->file->path);
			}
			k++;
		}
	}
	s->ntensors = k;
	return 0;
}

int rfs_src_open(const char *dir, struct rfs_src **out, struct rfs_err *err)
{
	struct rfs_src *s = calloc(1, sizeof(*s));
	struct stat st;
	int ret;

	if (!s)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	s->dir = strdup(dir);
	if (!s->dir) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto fail;
	}
	if (stat(dir, &st)) {
		ret = rfs_errsys(err, "%s", dir);
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		ret = rfs_errf(err, RFS_E_FORMAT, "%s: not a directory", dir);
		goto fail;
	}
	ret = read_config(s, err);
	if (ret)
		goto fail;
	if (rfs_file_exists_at(dir, "model.safetensors")) {
		s->files = calloc(1, sizeof(*s->files));
		s->file_names = calloc(1, sizeof(*s->file_names));
		if (!s->files || !s->file_names) {
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto fail;
		}
		ret = add_file(s, "model.safetensors", err);
		if (!ret)
			ret = build_map(s, err);
	} else if (rfs_file_exists_at(dir, "model.safetensors.index.json")) {
		ret = open_sharded(s, err);
	} else {
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "%s: no model.safetensors or model.safetensors.index.json", dir);
	}
	if (ret)
		goto fail;
	*out = s;
	return 0;
fail:
	rfs_src_close(s);
	return ret;
}

void rfs_src_close(struct rfs_src *s)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < s->nfiles; i++) {
		rfs_st_close(s->files[i]);
		free(s->file_names[i]);
	}
	free(s->files);
	free(s->file_names);
	free(s->tensors);
	rfs_strmap_release(&s->by_name);
	free(s->config);
	free(s->index);
	free(s->dir);
	free(s);
}

const struct rfs_src_tensor *rfs_src_find(const struct rfs_src *s, const char *name)
{
	return rfs_strmap_get(&s->by_name, name);
}
