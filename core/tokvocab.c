/*
 * A tokenizer.json's vocabulary (tokvocab.h): untrusted input, read with
 * cJSON and checked entry by entry.
 */
#include "tokvocab.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

void rfs_tokvocab_release(struct rfs_tokvocab *v)
{
	rfs_strmap_release(&v->ids);
	free(v->tok);
	free(v->added);
	cJSON_Delete(v->root);
	memset(v, 0, sizeof(*v));
}

long rfs_tokvocab_id(const struct rfs_tokvocab *v, const char *tok)
{
	void *x = rfs_strmap_get(&v->ids, tok);

	return x ? (long)((uintptr_t)x - 1) : -1;
}

/* Records @tok at @id (the first claim of a token wins: added tokens come
 * first); a plain token listed twice is refused.  Several tokens may share
 * an id (an added token over a plain one): the row is the first's. */
static int vocab_put(struct rfs_err *err, struct rfs_tokvocab *v, const char *dir, const char *tok, double idv,
		     const cJSON *added)
{
	uint32_t id;

	if (!(idv >= 0 && idv < RFS_TOKVOCAB_MAX_ID) || idv != (double)(uint32_t)idv)
		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: token '%.60s' has id %g (not a whole number below %u)",
				dir, tok, idv, RFS_TOKVOCAB_MAX_ID);
	id = (uint32_t)idv;
	if (id >= v->cap) {
		size_t ncap = v->cap ? v->cap : 1024;
		const char **nt;
		const cJSON **na;

		while (ncap <= id)
			ncap *= 2;
		nt = realloc(v->tok, ncap * sizeof(*nt));
		if (nt)
			v->tok = nt;
		na = nt ? realloc(v->added, ncap * sizeof(*na)) : NULL;
		if (!na)
			return rfs_errf(err, RFS_E_NOMEM, "out of memory reading %s/tokenizer.json", dir);
		v->added = na;
		memset(v->tok + v->cap, 0, (ncap - v->cap) * sizeof(*nt));
		memset(v->added + v->cap, 0, (ncap - v->cap) * sizeof(*na));
		v->cap = (uint32_t)ncap;
	}
	switch (rfs_strmap_put(&v->ids, tok, (void *)(uintptr_t)(id + 1))) {
	case RFS_PUT_NOMEM:
		return rfs_errf(err, RFS_E_NOMEM, "out of memory reading %s/tokenizer.json", dir);
	case RFS_PUT_EXISTS:
		if (!added && !v->added[rfs_tokvocab_id(v, tok)])
			return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: token '%.60s' is listed twice", dir, tok);
		return 0; /* an added token that is also in the model's vocabulary: the added id */
	case RFS_PUT_NEW:
		break;
	}
	if (!v->tok[id]) { /* a row's token: the first that claims the id (added ones come first) */
		v->tok[id] = tok;
		v->added[id] = added;
	}
	if (id >= v->end)
		v->end = id + 1;
	return 0;
}

enum rfs_code rfs_tokvocab_parse(struct rfs_tokvocab *v, const char *text, size_t len, const char *dir,
				 int64_t vocab_size, struct rfs_err *err)
{
	const cJSON *model, *voc, *it, *added;
	int ret;

	memset(v, 0, sizeof(*v));
	v->root = cJSON_ParseWithLength(text, len);
	if (!cJSON_IsObject(v->root))
		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: not a JSON object", dir);
	added = cJSON_GetObjectItemCaseSensitive(v->root, "added_tokens");
	if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added))
		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: added_tokens is not a list", dir);
	if (!cJSON_IsArray(added))
		added = NULL;
	cJSON_ArrayForEach(it, added) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
		const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");

		if (!cJSON_IsNumber(id) || !cJSON_IsString(content))
			return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: an added token without an id or content",
					dir);
		if ((ret = vocab_put(err, v, dir, content->valuestring, id->valuedouble, it)))
			return ret;
	}
	model = cJSON_GetObjectItemCaseSensitive(v->root, "model");
	voc = cJSON_GetObjectItemCaseSensitive(model, "vocab");
	if (cJSON_IsObject(voc)) {
		cJSON_ArrayForEach(it, voc) {
			if (!cJSON_IsNumber(it))
				return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: model.vocab['%.60s'] is not a number",
						dir, it->string);
			if ((ret = vocab_put(err, v, dir, it->string, it->valuedouble, NULL)))
				return ret;
		}
	} else if (cJSON_IsArray(voc)) {
		double i = 0;

		cJSON_ArrayForEach(it, voc) {
			const cJSON *piece = cJSON_GetArrayItem(it, 0);

			if (!cJSON_IsString(piece))
				return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: model.vocab[%.0f] is not [piece, score]",
						dir, i);
			if ((ret = vocab_put(err, v, dir, piece->valuestring, i++, NULL)))
				return ret;
		}
	} else {
		return rfs_errf(err, RFS_E_FORMAT, "%s/tokenizer.json: no model.vocab to align by", dir);
	}
	v->limit = vocab_size >= 0 && (uint64_t)vocab_size < v->end ? (uint32_t)vocab_size : v->end;
	return 0;
}
