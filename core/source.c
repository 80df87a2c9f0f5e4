#include "source.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tunables.h"
#include "util.h"

#define MAX_JSON_FILE RFS_TUNE_MAX_JSON_FILE

const char *rfs_src_kind_name(enum rfs_src_kind k)
{
	return k == RFS_SRC_RESIDUALS ? "residuals" : "model";
}

/* The term's file @name whole, with its mtime and mode (either may be NULL). */
static int read_whole(const struct rfs_src *s, const char *name, char **out, size_t *len, int64_t *mtime_ns,
		      unsigned *mode, struct rfs_err *err)
{
	struct rfs_bsrc *src;
	int ret;

	ret = s->td->ops->open(s->td, name, &src, err);
	if (ret)
		return ret;
	ret = rfs_bsrc_read_all(src, MAX_JSON_FILE, out, len, err);
	if (!ret && mtime_ns)
		*mtime_ns = src->mtime_ns;
	if (!ret && mode)
		*mode = src->mode;
	rfs_bsrc_close(src);
	return ret;
}

enum rfs_code rfs_src_read_file(const struct rfs_src *s, const char *name, char **out, size_t *len,
				struct rfs_err *err)
{
	return read_whole(s, name, out, len, NULL, NULL, err);
}

/* Reads the term's file @name whole; its mtime counts into the term's. */
static int read_json_file(struct rfs_src *s, const char *name, char **out, size_t *len,
			  unsigned *mode, struct rfs_err *err)
{
	int64_t mt = 0;
	int ret = read_whole(s, name, out, len, &mt, mode, err);

	if (!ret && mt > s->mtime_ns)
		s->mtime_ns = mt;
	return ret;
}

/* The deepest nesting accepted: what rfs_json_span (util.c) follows, so
 * that a key cJSON finds is one the rewrite of config.json finds too. */
#define JSON_MAX_DEPTH 200

/*
 * What, in @text, a JSON parser and residfs's span scanner could read
 * differently, or NULL: a byte below 0x20 outside a string other than
 * JSON white space (cJSON takes any as white space, the scanner and
 * Python's json do not), one inside a string (not JSON), an escaped NUL
 * (cJSON ends the string there, Python does not), nesting deeper than
 * JSON_MAX_DEPTH.  *@at is where.
 */
static const char *unclean(const char *text, size_t len, size_t *at)
{
	int in = 0, esc = 0, depth = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)text[i];

		*at = i;
		if (in) {
			if (ch < 0x20)
				return "a control byte inside a string";
			if (esc && ch == 'u') {
				/* four hex digits, not 0000: cJSON reads a bad or
				 * NUL escape as the end of the string, Python not */
				size_t k;

				for (k = 1; k <= 4; k++)
					if (i + k >= len || !isxdigit((unsigned char)text[i + k]))
						return "a \\u escape without four hex digits";
				if (!memcmp(text + i + 1, "0000", 4))
					return "an escaped NUL inside a string (cJSON would cut the string there)";
			}
			if (esc)
				esc = 0;
			else if (ch == '\\')
				esc = 1;
			else if (ch == '"')
				in = 0;
			continue;
		}
		if (ch == '"')
			in = 1;
		else if (ch == '{' || ch == '[') {
			if (++depth > JSON_MAX_DEPTH)
				return "nesting deeper than 200";
		} else if (ch == '}' || ch == ']')
			depth--;
		else if (ch < 0x20 && ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
			return "a control byte that is not JSON white space";
	}
	return NULL;
}

/* The first key found twice in one object of @v, or NULL. */
static const char *dup_key(const cJSON *v, struct rfs_err *err, int *nomem)
{
	const cJSON *e;
	const char *d = NULL;

	if (cJSON_IsObject(v)) {
		struct rfs_strmap seen = { 0 };

		cJSON_ArrayForEach(e, v) {
			enum rfs_put r = rfs_strmap_put(&seen, e->string, (void *)e);

			if (r == RFS_PUT_NOMEM)
				*nomem = 1;
			if (r != RFS_PUT_NEW) {
				d = e->string;
				break;
			}
		}
		rfs_strmap_release(&seen);
		if (d)
			return d;
	}
	if (cJSON_IsObject(v) || cJSON_IsArray(v))
		cJSON_ArrayForEach(e, v)
			if ((d = dup_key(e, err, nomem)))
				return d;
	return NULL;
}

/* Parses one JSON document that must fill @text but for white space;
 * NULL with @err set otherwise.  Refused besides what is not JSON: what a
 * loader (Python's json) and residfs could read differently: bytes after
 * the value, a NUL, control bytes (unclean), a key twice in one object
 * (cJSON keeps the first, Python the last). */
static cJSON *parse_whole(const char *text, size_t len, const char *path, struct rfs_err *err)
{
	const char *end = NULL, *why, *dup;
	cJSON *root;
	size_t at;
	int nomem = 0;

	if (memchr(text, 0, len)) {
		rfs_errf(err, RFS_E_FORMAT, "%s: contains a NUL byte at %zu: not a JSON text", path,
			 (size_t)((const char *)memchr(text, 0, len) - text));
		return NULL;
	}
	if ((why = unclean(text, len, &at))) {
		rfs_errf(err, RFS_E_FORMAT, "%s: %s at byte %zu: refused (loaders could read it otherwise)",
			 path, why, at);
		return NULL;
	}
	root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (!root) {
		rfs_errf(err, RFS_E_FORMAT, "%s: not valid JSON (at byte %zu)", path,
			 end && end >= text ? (size_t)(end - text) : (size_t)0);
		return NULL;
	}
	while (end && end < text + len && strchr(" \t\r\n", *end))
		end++;
	if (end && end < text + len) {
		rfs_errf(err, RFS_E_FORMAT, "%s: text after the JSON value (at byte %zu)", path,
			 (size_t)(end - text));
		cJSON_Delete(root);
		return NULL;
	}
	if (!cJSON_IsObject(root)) {
		rfs_errf(err, RFS_E_FORMAT, "%s: not a JSON object", path);
		cJSON_Delete(root);
		return NULL;
	}
	if ((dup = dup_key(root, err, &nomem)) || nomem) {
		if (nomem)
			rfs_errf(err, RFS_E_NOMEM, "out of memory");
		else
			rfs_errf(err, RFS_E_FORMAT,
				 "%s: key \"%s\" appears twice in one object: refused (loaders keep the last, residfs would read the first)",
				 path, dup);
		cJSON_Delete(root);
		return NULL;
	}
	return root;
}

/* Keys of a residuals config.json that residfs or the package reads, with
 * the JSON types they must have when present (null allowed where the
 * package writes it). */
static const struct {
	const char *key;
	int types; /* cJSON type bits */
} residuals_keys[] = {
	{ "residuals_version", cJSON_String | cJSON_Number },
	{ "format", cJSON_String | cJSON_NULL },
	{ "dtype", cJSON_String | cJSON_NULL },
	{ "param_count", cJSON_Number | cJSON_NULL },
	{ "shapes_hash", cJSON_String | cJSON_NULL },
	{ "parameter_names_hash", cJSON_String | cJSON_NULL },
	{ "tokenizer_name", cJSON_String | cJSON_NULL },
	{ "created_at", cJSON_String | cJSON_NULL },
	{ "library", cJSON_Object | cJSON_String | cJSON_NULL },
	{ "base_model_name", cJSON_String | cJSON_NULL },
	{ "instruct_model_name", cJSON_String | cJSON_NULL },
	{ "pipeline_tag", cJSON_String | cJSON_NULL },
	{ "license", cJSON_String | cJSON_NULL },
	{ "language", cJSON_String | cJSON_Array | cJSON_NULL },
	{ "tags", cJSON_Array | cJSON_NULL },
	{ "base_model_relation", cJSON_String | cJSON_NULL },
};

static const char *json_type_name(const cJSON *v)
{
	if (cJSON_IsString(v))
		return "a string";
	if (cJSON_IsNumber(v))
		return "a number";
	if (cJSON_IsBool(v))
		return "a boolean";
	if (cJSON_IsNull(v))
		return "null";
	if (cJSON_IsArray(v))
		return "an array";
	return "an object";
}

static int check_residuals_config(const cJSON *root, const char *path, struct rfs_err *err)
{
	size_t i;

	for (i = 0; i < sizeof(residuals_keys) / sizeof(residuals_keys[0]); i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, residuals_keys[i].key);

		if (v && !(v->type & residuals_keys[i].types & 0xFF))
			return rfs_errf(err, RFS_E_FORMAT,
					"%s: \"%s\" is %s, which a residuals config never has", path,
					residuals_keys[i].key, json_type_name(v));
	}
	{
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "param_count");
		const cJSON *t;

		if (cJSON_IsNumber(v) && !(v->valuedouble >= 0 && v->valuedouble < 9007199254740992.0 &&
					   v->valuedouble == (double)(uint64_t)v->valuedouble))
			return rfs_errf(err, RFS_E_FORMAT,
					"%s: \"param_count\" is %g, not a count", path, v->valuedouble);
		v = cJSON_GetObjectItemCaseSensitive(root, "tags");
		cJSON_ArrayForEach(t, v)
			if (!cJSON_IsString(t))
				return rfs_errf(err, RFS_E_FORMAT,
						"%s: \"tags\" holds %s; tags are strings", path,
						json_type_name(t));
	}
	return 0;
}

enum rfs_code rfs_src_parse_config(const char *text, size_t len, const char *path,
				   struct rfs_src_config *out, struct rfs_err *err)
{
	struct rfs_src_config c = { .kind = 0, .tie_word_embeddings = 1, .vocab_size = -1 };
	cJSON *root = parse_whole(text, len, path, err);
	const cJSON *v;
	int ret = 0;

	if (!root)
		return err ? err->code : RFS_E_FORMAT;
	if (cJSON_GetObjectItemCaseSensitive(root, "residuals_version")) {
		c.kind = RFS_SRC_RESIDUALS;
		ret = check_residuals_config(root, path, err);
		if (ret)
			goto out;
	} else if (cJSON_GetObjectItemCaseSensitive(root, "model_type") ||
		   cJSON_GetObjectItemCaseSensitive(root, "architectures")) {
		c.kind = RFS_SRC_MODEL;
	} else {
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "%s: has neither residuals_version (residuals) nor model_type/architectures (model)",
			       path);
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
	if (v && !cJSON_IsNull(v)) {
		if (!cJSON_IsBool(v)) {
			ret = rfs_errf(err, RFS_E_FORMAT, "%s: \"tie_word_embeddings\" is %s, not true or false",
				       path, json_type_name(v));
			goto out;
		}
		c.tie_word_embeddings = cJSON_IsTrue(v);
	}
	v = cJSON_GetObjectItemCaseSensitive(root, "vocab_size");
	if (v && !cJSON_IsNull(v)) {
		double d = cJSON_IsNumber(v) ? v->valuedouble : -1;

		if (!(d >= 1 && d < 2147483648.0 && d == (double)(int64_t)d)) {
			if (cJSON_IsNumber(v))
				ret = rfs_errf(err, RFS_E_FORMAT,
					       "%s: \"vocab_size\" is %g, not a whole number from 1 to 2^31-1",
					       path, d);
			else
				ret = rfs_errf(err, RFS_E_FORMAT, "%s: \"vocab_size\" is %s, not a number",
					       path, json_type_name(v));
			goto out;
		}
		c.vocab_size = (int64_t)d;
	}
	*out = c;
out:
	cJSON_Delete(root);
	return ret;
}

static int read_config(struct rfs_src *s, struct rfs_err *err)
{
	struct rfs_src_config c;
	char path[4096];
	int ret;

	if (!s->td->ops->exists(s->td, "config.json"))
		return rfs_errf(err, RFS_E_FORMAT,
				"%s: no config.json, so it is neither a model nor a residuals directory",
				s->dir);
	ret = read_json_file(s, "config.json", &s->config, &s->config_len, &s->config_mode, err);
	if (ret)
		return ret;
	snprintf(path, sizeof(path), "%s/config.json", s->dir);
	ret = rfs_src_parse_config(s->config, s->config_len, path, &c, err);
	if (ret)
		return ret;
	s->kind = c.kind;
	s->tie_word_embeddings = c.tie_word_embeddings;
	s->vocab_size = c.vocab_size;
	return 0;
}

static int add_file(struct rfs_src *s, const char *name, struct rfs_err *err)
{
	struct rfs_st_file *f;
	struct rfs_bsrc *src;
	int ret;

	ret = s->td->ops->open(s->td, name, &src, err);
	if (ret)
		return ret;
	ret = rfs_st_open_src(src, &f, err);
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
	size_t len = strlen(n);

	return len > 12 && len < 256 && !strchr(n, '/') && !strcmp(n + len - 12, ".safetensors") &&
	       strcmp(n, "model.safetensors");
}

void rfs_src_index_release(struct rfs_src_index *ix)
{
	size_t i;

	for (i = 0; i < ix->nfiles; i++)
		free(ix->files[i]);
	for (i = 0; i < ix->nmap; i++)
		free(ix->map[i].tensor);
	free(ix->files);
	free(ix->map);
	memset(ix, 0, sizeof(*ix));
}

enum rfs_code rfs_src_parse_index(const char *text, size_t len, const char *path,
				  struct rfs_src_index *out, struct rfs_err *err)
{
	struct rfs_src_index ix = { 0 };
	struct rfs_strmap seen = { 0 };
	cJSON *root = parse_whole(text, len, path, err);
	const cJSON *wm, *e, *md;
	char **names = NULL;
	size_t n = 0, i, u = 0;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (!root)
		return err ? err->code : RFS_E_FORMAT;
	md = cJSON_GetObjectItemCaseSensitive(root, "metadata");
	if (md && !cJSON_IsObject(md) && !cJSON_IsNull(md)) {
		ret = rfs_errf(err, RFS_E_FORMAT, "%s: \"metadata\" is %s, not an object", path,
			       json_type_name(md));
		goto out;
	}
	wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
	if (!cJSON_IsObject(wm)) {
		ret = rfs_errf(err, RFS_E_FORMAT, "%s: no weight_map object", path);
		goto out;
	}
	cJSON_ArrayForEach(e, wm)
		n++;
	if (!n) {
		ret = rfs_errf(err, RFS_E_FORMAT, "%s: weight_map is empty", path);
		goto out;
	}
	names = calloc(n, sizeof(*names));
	ix.map = calloc(n, sizeof(*ix.map));
	if (!names || !ix.map) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	cJSON_ArrayForEach(e, wm) {
		int r;

		if (!cJSON_IsString(e) || !valid_shard_name(e->valuestring)) {
			ret = rfs_errf(err, RFS_E_FORMAT,
				       "%s: tensor '%s' maps to %s%s%s, not a shard name (a plain file name ending in .safetensors, other than model.safetensors)",
				       path, e->string, cJSON_IsString(e) ? "'" : "",
				       cJSON_IsString(e) ? e->valuestring : json_type_name(e),
				       cJSON_IsString(e) ? "'" : "");
			goto out;
		}
		r = rfs_strmap_put(&seen, e->string, (void *)e);
		if (r == RFS_PUT_NOMEM) {
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto out;
		}
		if (r == RFS_PUT_EXISTS) {
			ret = rfs_errf(err, RFS_E_FORMAT, "%s: tensor '%s' is listed twice in weight_map",
				       path, e->string);
			goto out;
		}
		names[u++] = e->valuestring;
	}
	if (u > 1)
		qsort(names, u, sizeof(*names), cmp_str);
	for (i = 0, n = 0; i < u; i++)
		if (!n || strcmp(names[n - 1], names[i]))
			names[n++] = names[i];
	ix.files = calloc(n, sizeof(*ix.files));
	if (!ix.files) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (!(ix.files[i] = strdup(names[i]))) {
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto out;
		}
		ix.nfiles++;
	}
	cJSON_ArrayForEach(e, wm) {
		const char *const *hit = bsearch(&e->valuestring, ix.files, ix.nfiles,
						 sizeof(*ix.files), cmp_str);

		ix.map[ix.nmap].file = (size_t)(hit - (const char *const *)ix.files);
		if (!(ix.map[ix.nmap].tensor = strdup(e->string))) {
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto out;
		}
		ix.nmap++;
	}
	*out = ix;
	memset(&ix, 0, sizeof(ix));
out:
	rfs_src_index_release(&ix);
	rfs_strmap_release(&seen);
	free(names);
	cJSON_Delete(root);
	return ret;
}

static int build_map(struct rfs_src *s, struct rfs_err *err);

/* Opens the shards named by the index; checks the map against them. */
static int open_sharded(struct rfs_src *s, struct rfs_err *err)
{
	struct rfs_src_index ix = { 0 };
	char path[4096];
	size_t i;
	int ret;

	ret = read_json_file(s, "model.safetensors.index.json", &s->index, &s->index_len,
			     &s->index_mode, err);
	if (ret)
		return ret;
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", s->dir);
	ret = rfs_src_parse_index(s->index, s->index_len, path, &ix, err);
	if (ret)
		return ret;
	s->files = calloc(ix.nfiles, sizeof(*s->files));
	s->file_names = calloc(ix.nfiles, sizeof(*s->file_names));
	if (!s->files || !s->file_names) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < ix.nfiles; i++) {
		ret = add_file(s, ix.files[i], err);
		if (ret)
			goto out;
	}
	ret = build_map(s, err);
	if (ret)
		goto out;
	/* every mapped tensor must be in the file the map names */
	for (i = 0; i < ix.nmap; i++) {
		const struct rfs_src_tensor *t = rfs_src_find(s, ix.map[i].tensor);

		if (!t || t->file_idx != ix.map[i].file) {
			ret = rfs_errf(err, RFS_E_FORMAT,
				       "%s: tensor '%s' is mapped to %s, which does not contain it",
				       path, ix.map[i].tensor, ix.files[ix.map[i].file]);
			goto out;
		}
	}
	s->sharded = 1;
out:
	rfs_src_index_release(&ix);
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
			if (r == RFS_PUT_NOMEM)
				return rfs_errf(err, RFS_E_NOMEM, "out of memory");
			if (r == RFS_PUT_EXISTS) {
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

enum rfs_code rfs_src_open(const char *term, struct rfs_src **out, struct rfs_err *err)
{
	struct rfs_src *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	ret = rfs_tdir_open(term, &s->td, err);
	if (ret)
		goto fail;
	s->dir = strdup(s->td->label);
	if (!s->dir) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto fail;
	}
	ret = read_config(s, err);
	if (ret)
		goto fail;
	if (s->td->ops->exists(s->td, "model.safetensors")) {
		s->files = calloc(1, sizeof(*s->files));
		s->file_names = calloc(1, sizeof(*s->file_names));
		if (!s->files || !s->file_names) {
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto fail;
		}
		ret = add_file(s, "model.safetensors", err);
		if (!ret)
			ret = build_map(s, err);
	} else if (s->td->ops->exists(s->td, "model.safetensors.index.json")) {
		ret = open_sharded(s, err);
	} else {
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "%s: no model.safetensors or model.safetensors.index.json", s->dir);
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
	rfs_tdir_close(s->td);
	free(s);
}

const char *rfs_src_model_name(const struct rfs_src *s)
{
	return s->td && s->td->repo_id ? s->td->repo_id : s->dir;
}

const struct rfs_src_tensor *rfs_src_find(const struct rfs_src *s, const char *name)
{
	return rfs_strmap_get(&s->by_name, name);
}
