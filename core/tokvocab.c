/*
 * A tokenizer.json's vocabulary (tokvocab.h): untrusted input, read with
 * cJSON, checked entry by entry, and kept as plain strings.
 */
#include "tokvocab.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Token strings, copied out of the parsed tree: chunks that never move. */
struct rfs_tokchunk {
	struct rfs_tokchunk *next;
	size_t used, size;
	char data[];
};

#define CHUNK_BYTES (1u << 20)

static const char *keep(struct rfs_tokvocab *v, const char *s)
{
	size_t n = strlen(s) + 1;
	struct rfs_tokchunk *c = v->chunks;
	char *o;

	if (!c || c->size - c->used < n) {
		size_t sz = n > CHUNK_BYTES ? n : CHUNK_BYTES;

		c = malloc(sizeof(*c) + sz);
		if (!c)
			return NULL;
		c->used = 0;
		c->size = sz;
		c->next = v->chunks;
		v->chunks = c;
	}
	o = c->data + c->used;
	memcpy(o, s, n);
	c->used += n;
	return o;
}

void rfs_tokvocab_release(struct rfs_tokvocab *v)
{
	struct rfs_tokchunk *c, *n;

	rfs_strmap_release(&v->ids);
	free(v->tok);
	free(v->flags);
	for (c = v->chunks; c; c = n) {
		n = c->next;
		free(c);
	}
	memset(v, 0, sizeof(*v));
}

long rfs_tokvocab_id(const struct rfs_tokvocab *v, const char *tok)
{
	void *x = rfs_strmap_get(&v->ids, tok);

	return x ? (long)((uintptr_t)x - 1) : -1;
}

/* @t for a message: printable ASCII as it is, other bytes as \xNN, at most
 * about 60 characters. */
static const char *shown(const char *t, char *buf, size_t len)
{
	size_t o = 0;

	for (; *t && o + 8 < len && o < 60; t++) {
		unsigned char c = (unsigned char)*t;

		if (c >= 0x20 && c < 0x7f && c != '\\')
			buf[o++] = (char)c;
		else
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
	}
	if (*t && o + 4 < len)
		memcpy(buf + o, "...", 4);
	else
		buf[o] = 0;
	return buf;
}

static int nomem(struct rfs_err *err, const char *dir)
{
	return rfs_errf(err, RFS_E_NOMEM, "out of memory reading %s/tokenizer.json", dir);
}

/* Room for id @id in the tables. */
static int grow(struct rfs_tokvocab *v, uint32_t id)
{
	size_t ncap = v->cap ? v->cap : 1024;
	const char **nt;
	uint8_t *nf;

	if (id < v->cap)
		return 0;
	while (ncap <= id)
		ncap *= 2;
	nt = realloc(v->tok, ncap * sizeof(*nt));
	if (!nt)
		return -1;
	v->tok = nt;
	nf = realloc(v->flags, ncap);
	if (!nf)
		return -1;
	v->flags = nf;
	memset(v->tok + v->cap, 0, (ncap - v->cap) * sizeof(*nt));
	memset(v->flags + v->cap, 0, ncap - v->cap);
	v->cap = (uint32_t)ncap;
	return 0;
}

/* Records a new token @tok (a copy) at @id; an id given to two tokens is refused. */
static int put(struct rfs_err *err, struct rfs_tokvocab *v, const char *dir, const char *tok, uint32_t id,
	       int *exists)
{
	const char *k;

	*exists = 0;
	if (rfs_strmap_get(&v->ids, tok)) {
		*exists = 1;
		return 0;
	}
	if (grow(v, id))
		return nomem(err, dir);
	if (v->tok[id]) {
		char b1[96], b2[96];

		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: id %u is both '%s' and '%s'", dir, id,
				shown(v->tok[id], b1, sizeof(b1)), shown(tok, b2, sizeof(b2)));
	}
	if (!(k = keep(v, tok)) || rfs_strmap_put(&v->ids, k, (void *)(uintptr_t)(id + 1)) != RFS_PUT_NEW)
		return nomem(err, dir);
	v->tok[id] = k;
	if (id >= v->end)
		v->end = id + 1;
	return 0;
}

/* The name of a key @obj has twice, or NULL; *@nomem set when the table
 * could not grow.  A hash table: the file may give millions of keys. */
static const char *dup_key(const cJSON *obj, int *nomem)
{
	struct rfs_strmap seen = { 0 };
	const cJSON *a;
	const char *dup = NULL;

	for (a = obj ? obj->child : NULL; a && !dup && !*nomem; a = a->next) {
		if (!a->string)
			continue;
		switch (rfs_strmap_put(&seen, a->string, (void *)1)) {
		case RFS_PUT_EXISTS:
			dup = a->string;
			break;
		case RFS_PUT_NOMEM:
			*nomem = 1;
			break;
		case RFS_PUT_NEW:
			break;
		}
	}
	rfs_strmap_release(&seen);
	return dup;
}

/* 1 when the JSON text has an escaped NUL (\u0000) in a string: cJSON would cut the string there. */
static int has_nul_escape(const char *t, size_t len)
{
	size_t i, run = 0;

	for (i = 0; i < len; i++) {
		if (t[i] == '\\') {
			run++;
			continue;
		}
		if (run % 2 && t[i] == 'u' && i + 4 < len && t[i + 1] == '0' && t[i + 2] == '0' && t[i + 3] == '0' &&
		    t[i + 4] == '0')
			return 1;
		run = 0;
	}
	return 0;
}

static int is_whole(double x)
{
	return x >= 0 && x < RFS_TOKVOCAB_MAX_ID && x == (double)(uint32_t)x;
}

/* The model's vocabulary: an object of token -> id, or Unigram's list. */
static int model_vocab(struct rfs_tokvocab *v, const cJSON *voc, const char *dir, uint32_t *size,
		       struct rfs_err *err)
{
	const cJSON *it;
	char b1[96];
	uint32_t n = 0;
	int ret, exists;

	if (!cJSON_IsObject(voc) && !cJSON_IsArray(voc))
		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: no model.vocab to align by", dir);
	cJSON_ArrayForEach(it, voc) {
		const cJSON *piece = cJSON_IsArray(voc) ? cJSON_GetArrayItem(it, 0) : it;
		const char *tok = cJSON_IsArray(voc) ? (cJSON_IsString(piece) ? piece->valuestring : NULL) : it->string;
		double id = cJSON_IsArray(voc) ? n : cJSON_IsNumber(it) ? it->valuedouble : -1;

		if (!tok)
			return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: model.vocab[%u] is not [piece, score]", dir,
					n);
		if (!is_whole(id))
			return rfs_errf(err, RFS_E_FORMAT,
					"%s/tokenizer.json: model.vocab: token '%s' has id %s (not a whole number below %u)",
					dir, shown(tok, b1, sizeof(b1)), cJSON_IsNumber(it) ? "out of range" : "not a number",
					RFS_TOKVOCAB_MAX_ID);
		if ((ret = put(err, v, dir, tok, (uint32_t)id, &exists)))
			return ret;
		if (exists)
			return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: model.vocab: token '%s' is listed twice", dir,
					shown(tok, b1, sizeof(b1)));
		n++;
	}
	*size = n;
	return 0;
}

/* added_tokens, as `tokenizers` adds them on load (tokvocab.h). */
static int added_tokens(struct rfs_tokvocab *v, const cJSON *added, const char *dir, uint32_t model_size,
			struct rfs_err *err)
{
	static const struct { const char *key; uint8_t bit; } fl[] = {
		{ "single_word", RFS_TOK_SINGLE_WORD }, { "lstrip", RFS_TOK_LSTRIP }, { "rstrip", RFS_TOK_RSTRIP },
		{ "normalized", RFS_TOK_NORMALIZED }, { "special", RFS_TOK_SPECIAL },
	};
	const cJSON *it;
	char b1[96];
	long max_added = -1;
	int ret, exists;

	if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added))
		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: added_tokens is not a list", dir);
	if (!cJSON_IsArray(added))
		return 0;
	cJSON_ArrayForEach(it, added) {
		const cJSON *idv = cJSON_GetObjectItemCaseSensitive(it, "id");
		const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
		long id;
		size_t k;

		if (!cJSON_IsNumber(idv) || !cJSON_IsString(content))
			return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: an added token without an id or content", dir);
		if (!*content->valuestring)
			continue; /* tokenizers skips an empty one */
		id = rfs_tokvocab_id(v, content->valuestring);
		if (id < 0)
			id = max_added >= (long)model_size ? max_added + 1 : (long)model_size;
		if (!is_whole((double)id) || idv->valuedouble != (double)id)
			return rfs_errf(err, RFS_E_FORMAT,
					"%s/tokenizer.json: added token '%s' says id %g, but a tokenizer loading this file gives it id %ld",
					dir, shown(content->valuestring, b1, sizeof(b1)), idv->valuedouble, id);
		if ((ret = put(err, v, dir, content->valuestring, (uint32_t)id, &exists)))
			return ret;
		if (id > max_added)
			max_added = id;
		v->flags[id] = RFS_TOK_ADDED;
		for (k = 0; k < sizeof(fl) / sizeof(*fl); k++) {
			const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, fl[k].key);

			/* absent: what tokenizers assumes (normalized: not for a special token) */
			if (f ? cJSON_IsTrue(f) : fl[k].bit == RFS_TOK_NORMALIZED &&
						     !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special")))
				v->flags[id] |= fl[k].bit;
		}
	}
	return 0;
}

enum rfs_code rfs_tokvocab_parse(struct rfs_tokvocab *v, const char *text, size_t len, const char *dir,
				 int64_t vocab_size, struct rfs_err *err)
{
	cJSON *root;
	const cJSON *model;
	const char *dup;
	uint32_t model_size = 0;
	int ret, full = 0;

	memset(v, 0, sizeof(*v));
	if (has_nul_escape(text, len))
		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: a string with a NUL character (\\u0000)", dir);
	root = cJSON_ParseWithLength(text, len);
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: not a JSON object", dir);
	}
	model = cJSON_GetObjectItemCaseSensitive(root, "model");
	dup = dup_key(root, &full);
	if (!dup && !full)
		dup = dup_key(cJSON_IsObject(model) ? model : NULL, &full);
	if (dup) {
		char b1[96];

		ret = rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: key '%s' is given twice", dir,
			       shown(dup, b1, sizeof(b1)));
	} else if (full) {
		ret = nomem(err, dir);
	} else {
		ret = model_vocab(v, cJSON_GetObjectItemCaseSensitive(model, "vocab"), dir, &model_size, err);
	}
	if (!ret)
		ret = added_tokens(v, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), dir, model_size, err);
	cJSON_Delete(root);
	if (ret)
		return ret;
	v->limit = vocab_size >= 0 && (uint64_t)vocab_size < v->end ? (uint32_t)vocab_size : v->end;
	return 0;
}

/* The content of a special token value: a string, or {"content": ...}. */
static const char *token_content(const cJSON *x)
{
	if (cJSON_IsString(x))
		return x->valuestring;
	x = cJSON_GetObjectItemCaseSensitive(x, "content");
	return cJSON_IsString(x) ? x->valuestring : NULL;
}

enum rfs_code rfs_tokvocab_check_config(const struct rfs_tokvocab *v, const char *text, size_t len,
					const char *dir, struct rfs_err *err)
{
	static const char *const keys[] = { "bos_token", "eos_token", "unk_token", "sep_token",
					    "pad_token", "cls_token", "mask_token" };
	cJSON *root = cJSON_ParseWithLength(text, len);
	const cJSON *it;
	const char *missing = NULL, *key = NULL;
	char b1[96];
	long want = -1, got = -1;
	size_t i;
	int ret = 0;

	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer_config.json: not a JSON object", dir);
	}
	for (i = 0; i < sizeof(keys) / sizeof(*keys) && !missing; i++) {
		const char *c = token_content(cJSON_GetObjectItemCaseSensitive(root, keys[i]));

		if (c && *c && rfs_tokvocab_id(v, c) < 0)
			missing = c, key = keys[i];
	}
	for (i = 0; i < 2 && !missing; i++) {
		key = i ? "extra_special_tokens" : "additional_special_tokens";
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, key)) {
			const char *c = token_content(it);

			if (c && *c && rfs_tokvocab_id(v, c) < 0) {
				missing = c;
				break;
			}
		}
	}
	if (!missing) {
		key = "added_tokens_decoder";
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, key)) {
			const char *c = token_content(it);
			char *end;

			if (!c || !*c || !it->string)
				continue;
			want = strtol(it->string, &end, 10);
			got = rfs_tokvocab_id(v, c);
			if (got < 0 || *end || want != got) {
				missing = c;
				break;
			}
		}
	}
	if (missing && got >= 0 && !strcmp(key, "added_tokens_decoder"))
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "%s/tokenizer_config.json: added_tokens_decoder puts '%s' at id %ld, but tokenizer.json has it at %ld",
			       dir, shown(missing, b1, sizeof(b1)), want, got);
	else if (missing)
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "%s/tokenizer_config.json: %s names '%s', which tokenizer.json lacks (transformers would add it when loading, at an id of its own): add it to tokenizer.json",
			       dir, key, shown(missing, b1, sizeof(b1)));
	cJSON_Delete(root);
	return ret;
}
