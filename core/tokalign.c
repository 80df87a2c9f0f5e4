/*
 * Vocabularies aligned by token string for a recipe's tokenizer_source
 * (tokalign.h).  mergekit 0.1.5's rules (tokenizer/build.py, embed.py),
 * with two choices of ours where its own are not reproducible:
 *  - union: mergekit walks the models in the order of a Python set and
 *    each vocabulary in the order of a Rust hash map, so the ids its new
 *    tokens get change from run to run.  residfs appends them in the
 *    recipe's model order, each model's plain tokens by id, then its added
 *    tokens by id.  Every row still belongs to the same token string.
 *  - a base tokenizer with tokens past its config's vocab_size (mergekit
 *    strips them from the tokenizer it writes) is refused.
 */
#include "tokalign.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "recipe.h"
#include "strmap.h"
#include "tokvocab.h"
#include "util.h"

/* Reads the term @s's tokenizer.json (tokvocab.h) into @v and checks its
 * tokenizer_config.json against it; the text into *@text when @text. */
static int vocab_load(struct rfs_build *b, const struct rfs_src *s, struct rfs_tokvocab *v, char **text,
		      size_t *len)
{
	char *t = NULL, why[sizeof(b->err->msg)];
	size_t n = 0;
	int ret;

	memset(v, 0, sizeof(*v));
	ret = rfs_src_read_file(s, "tokenizer.json", &t, &n, b->err);
	if (ret) { /* a term without one is the recipe's error */
		snprintf(why, sizeof(why), "%s", b->err->msg);
		return rfs_errf(b->err, RFS_E_SPEC,
				"%s: tokenizer_source aligns the vocabularies by token, and %s has no usable tokenizer.json (%s)",
				b->p->recipe->path, s->dir, why);
	}
	ret = rfs_tokvocab_parse(v, t, n, s->dir, rfs_src_vocab_size(s), b->err);
	if (text && !ret) {
		*text = t;
		*len = n;
		t = NULL;
	}
	free(t);
	if (!ret && s->td->ops->exists(s->td, "tokenizer_config.json")) {
		ret = rfs_src_read_file(s, "tokenizer_config.json", &t, &n, b->err);
		if (!ret)
			ret = rfs_tokvocab_check_config(v, t, n, s->dir, b->err);
		free(t);
	}
	return ret;
}

/* Token @tok's row in @v, or -1 when absent or padding. */
static int32_t row_of(const struct rfs_tokvocab *v, const char *tok)
{
	long id = rfs_tokvocab_id(v, tok);

	return id >= 0 && (uint32_t)id < v->limit ? (int32_t)id : -1;
}

/* One {...} entry of tokenizer.json's added_tokens with the settings
 * @flags (RFS_TOK_*): a model's added token's, or for a plain token those
 * of transformers' add_tokens(str) (normalized, not special). */
static void added_entry(struct rfs_buf *o, uint32_t id, const char *tok, uint8_t flags)
{
	static const struct { const char *key; uint8_t bit; } fl[] = {
		{ "single_word", RFS_TOK_SINGLE_WORD }, { "lstrip", RFS_TOK_LSTRIP }, { "rstrip", RFS_TOK_RSTRIP },
		{ "normalized", RFS_TOK_NORMALIZED }, { "special", RFS_TOK_SPECIAL },
	};
	size_t i;

	if (!(flags & RFS_TOK_ADDED))
		flags = RFS_TOK_NORMALIZED;
	rfs_buf_addf(o, "{\"id\": %u, \"content\": ", id);
	rfs_buf_add_json_str_ascii(o, tok);
	for (i = 0; i < sizeof(fl) / sizeof(*fl); i++)
		rfs_buf_addf(o, ", \"%s\": %s", fl[i].key, flags & fl[i].bit ? "true" : "false");
	rfs_buf_adds(o, "}");
}

/*
 * The union's tokenizer.json: the base's bytes, with the appended tokens
 * (rows @first to @rows) added to its added_tokens list, as transformers'
 * add_tokens leaves them.
 */
static int union_tokenizer(struct rfs_build *b, const char *text, size_t len, const char *const *tok,
			   const uint8_t *from, uint32_t first, uint32_t rows)
{
	static const char *const k_added[] = { "added_tokens" };
	struct rfs_buf o = { 0 };
	size_t beg, end, head, tail, i;
	const char *open = "", *close = "";
	int empty = 1;
	uint32_t r;

	if (!rfs_json_span(text, len, k_added, 1, &beg, &end) && text[beg] == '[') {
		for (i = beg + 1; i + 1 < end; i++)
			if (!strchr(" \t\r\n", text[i]))
				empty = 0;
		head = tail = end - 1; /* the new entries before the closing ']' */
		close = "\n  ";
	} else if (!rfs_json_span(text, len, k_added, 1, &beg, &end)) {
		head = beg; /* added_tokens: null */
		tail = end;
		open = "[";
		close = "]";
	} else { /* none: the key first in the object */
		head = tail = (size_t)(strchr(text, '{') - text) + 1;
		open = "\"added_tokens\": [";
		close = "], ";
	}
	rfs_buf_add(&o, text, head);
	rfs_buf_adds(&o, open);
	for (r = first; r < rows; r++) {
		rfs_buf_adds(&o, empty ? "\n    " : ",\n    ");
		empty = 0;
		added_entry(&o, r, tok[r], from[r - first]);
	}
	rfs_buf_adds(&o, close);
	rfs_buf_add(&o, text + tail, len - tail);
	if (!rfs_buf_ok(&o)) {
		rfs_buf_release(&o);
		return rfs_pb_nomem(b);
	}
	{
		size_t olen;
		char *data = rfs_buf_detach(&o, &olen);

		return rfs_pb_add_lit(b, "tokenizer.json", data, olen, 0444);
	}
}

void rfs_vmap_free(struct rfs_vmap *v)
{
	unsigned i;

	if (!v)
		return;
	for (i = 0; i < v->nsrc; i++)
		free(v->perm[i]);
	free(v->dkind);
	free(v->donor);
	free(v);
}

/* The output vocabulary: rows -> token (borrowed from the vocabularies),
 * and for union the settings (RFS_TOK_*) each appended token copies. */
struct outvoc {
	const char **tok;
	uint8_t *from;
	uint32_t rows, cap, base_rows;
	struct rfs_strmap has;
};

static int out_push(struct rfs_build *b, struct outvoc *ov, const char *tok, uint8_t from)
{
	if (rfs_strmap_get(&ov->has, tok))
		return 0;
	if (ov->rows == ov->cap) {
		size_t ncap = ov->cap ? 2 * (size_t)ov->cap : 1024;
		const char **nt;
		uint8_t *nf;

		if (ncap > (size_t)RFS_RECIPE_MAX_MODELS * 2 * RFS_TOKVOCAB_MAX_ID)
			return rfs_errf(b->err, RFS_E_SPEC, "%s: tokenizer_source: more than %u tokens in all",
					b->p->recipe->path, (unsigned)(ncap / 2));
		nt = realloc(ov->tok, ncap * sizeof(*nt));
		if (!nt)
			return rfs_pb_nomem(b);
		ov->tok = nt;
		nf = realloc(ov->from, ncap);
		if (!nf)
			return rfs_pb_nomem(b);
		ov->from = nf;
		ov->cap = (uint32_t)ncap;
	}
	if (rfs_strmap_put(&ov->has, tok, (void *)1) == RFS_PUT_NOMEM)
		return rfs_pb_nomem(b);
	ov->from[ov->rows] = from;
	ov->tok[ov->rows++] = tok;
	return 0;
}

/*
 * union: mergekit's build_union_tokenizer.  The plain tokens of every
 * model first, then the added tokens (the first model's settings win);
 * those the base lacks are appended.
 */
static int union_vocab(struct rfs_build *b, struct rfs_tokvocab *vs, unsigned n, struct outvoc *ov)
{
	struct outvoc plain = { 0 }, added = { 0 };
	unsigned s;
	uint32_t id;
	int ret = 0;

	/* an empty token is skipped, as transformers' add_tokens skips it */
	for (s = 0; s < n && !ret; s++)
		for (id = 0; id < vs[s].limit && !ret; id++)
			if (vs[s].tok[id] && *vs[s].tok[id] && !(vs[s].flags[id] & RFS_TOK_ADDED))
				ret = out_push(b, &plain, vs[s].tok[id], 0);
	for (s = 0; s < n && !ret; s++)
		for (id = 0; id < vs[s].limit && !ret; id++)
			if (vs[s].tok[id] && (vs[s].flags[id] & RFS_TOK_ADDED))
				ret = out_push(b, &added, vs[s].tok[id], vs[s].flags[id]);
	for (id = 0; id < plain.rows && !ret; id++)
		if (!rfs_strmap_get(&added.has, plain.tok[id]) && rfs_tokvocab_id(&vs[0], plain.tok[id]) < 0)
			ret = out_push(b, ov, plain.tok[id], 0);
	for (id = 0; id < added.rows && !ret; id++)
		if (rfs_tokvocab_id(&vs[0], added.tok[id]) < 0)
			ret = out_push(b, ov, added.tok[id], added.from[id]);
	free(plain.tok);
	free(plain.from);
	rfs_strmap_release(&plain.has);
	free(added.tok);
	free(added.from);
	rfs_strmap_release(&added.has);
	return ret;
}

int rfs_pb_tokalign(struct rfs_build *b, const unsigned *avg_order, unsigned navg, int base_pref)
{
	struct rfs_plan *p = b->p;
	const struct rfs_recipe *r = p->recipe;
	struct rfs_tokvocab vs[RFS_SPEC_MAX_TERMS];
	char *btext = NULL;  /* the base's tokenizer.json, for a union's */
	size_t blen = 0;
	struct outvoc ov = { 0 };
	struct rfs_vmap *vm = NULL;
	unsigned s, nsrc = (unsigned)p->nsrc, k, src0;
	uint32_t id, row;
	int ret = 0;

	memset(vs, 0, sizeof(vs));
	for (s = 0; s < nsrc && !ret; s++)
		ret = vocab_load(b, p->src[s], &vs[s], !s && r->tokenizer_union ? &btext : NULL, &blen);
	if (ret)
		goto out;
	/* the output's first rows: the base's ids (or the source model's), a token each, none missing */
	src0 = p->tok_src;
	if (!src0 && vs[0].limit < vs[0].end) {
		ret = rfs_errf(b->err, RFS_E_SPEC,
			       "%s: tokenizer_source: the tokenizer of %s has tokens at ids %u..%u, past its config's vocab_size %u; residfs does not strip tokenizers (mergekit does): remove them or raise vocab_size",
			       r->path, p->src[0]->dir, vs[0].limit, vs[0].end - 1, vs[0].limit);
		goto out;
	}
	for (id = 0; id < vs[src0].end && !ret; id++)
		if (!vs[src0].tok[id])
			ret = rfs_errf(b->err, RFS_E_SPEC,
				       "%s: tokenizer_source: the tokenizer of %s has no token at id %u (below its largest, %u): its ids are not rows",
				       r->path, p->src[src0]->dir, id, vs[src0].end - 1);
		else
			ret = out_push(b, &ov, vs[src0].tok[id], 0);
	if (!ret && !ov.rows)
		ret = rfs_errf(b->err, RFS_E_SPEC, "%s: tokenizer_source: the tokenizer of %s has no tokens", r->path,
			       p->src[src0]->dir);
	if (ret)
		goto out;
	ov.base_rows = ov.rows;
	if (r->tokenizer_union && (ret = union_vocab(b, vs, nsrc, &ov)))
		goto out;

	vm = calloc(1, sizeof(*vm));
	if (!vm) {
		ret = rfs_pb_nomem(b);
		goto out;
	}
	vm->rows = ov.rows;
	vm->nsrc = nsrc;
	vm->navg = navg;
	for (k = 0; k < navg; k++)
		vm->avg[k] = (uint8_t)avg_order[k];
	vm->dkind = malloc(ov.rows);
	vm->donor = calloc(ov.rows, 1);
	for (s = 0; s < nsrc; s++)
		vm->perm[s] = malloc((size_t)ov.rows * sizeof(int32_t));
	for (s = 0; s < nsrc; s++)
		if (!vm->perm[s])
			break;
	if (s < nsrc || !vm->dkind || !vm->donor) {
		ret = rfs_pb_nomem(b);
		goto out;
	}
	vm->identity = 1;
	for (row = 0; row < ov.rows; row++) {
		unsigned present = 0, last = 0;

		for (s = 0; s < nsrc; s++) {
			int32_t x = row_of(&vs[s], ov.tok[row]);

			vm->perm[s][row] = x;
			if (x >= 0 && (uint32_t)x >= vm->need[s])
				vm->need[s] = (uint32_t)x + 1;
			if (x >= 0) {
				present++;
				last = s;
			}
			if (x != (int32_t)row)
				vm->identity = 0;
		}
		/* embed.py's assign_embedding_sources */
		if (present == 1) {
			vm->dkind[row] = RFS_VDEF_DONOR;
			vm->donor[row] = (uint8_t)last;
		} else if (!present) {
			vm->dkind[row] = RFS_VDEF_ZERO;
		} else if (base_pref && vm->perm[0][row] >= 0) {
			vm->dkind[row] = RFS_VDEF_DONOR;
			vm->donor[row] = 0;
		} else {
			vm->dkind[row] = RFS_VDEF_AVG;
		}
	}
	if (ov.rows > ov.base_rows) {
		ret = union_tokenizer(b, btext, blen, ov.tok, ov.from + ov.base_rows, ov.base_rows, ov.rows);
		if (!ret) {
			struct rfs_buf note = { 0 };

			rfs_buf_addf(&note, "tokenizer_source: union: %u tokens, the %u of %s and %u more (", ov.rows,
				     ov.base_rows, p->src[0]->dir, ov.rows - ov.base_rows);
			for (row = ov.base_rows; row < ov.rows && row < ov.base_rows + 8; row++) {
				rfs_buf_adds(&note, row > ov.base_rows ? ", " : "");
				rfs_buf_add_json_str_ascii(&note, ov.tok[row]);
			}
			rfs_buf_adds(&note, ov.rows - ov.base_rows > 8 ? ", ...)" : ")");
			ret = rfs_buf_ok(&note) ? rfs_pb_note(b, "%s", note.data) : rfs_pb_nomem(b);
			rfs_buf_release(&note);
		}
	}
	if (!ret && src0)
		ret = rfs_pb_note(b, "tokenizer_source: %s: its %u tokens are the rows of the vocabulary tensors",
				  p->src[src0]->dir, ov.rows);
	if (!ret) {
		p->vmap = vm;
		vm = NULL;
	}
out:
	rfs_vmap_free(vm);
	free(ov.tok);
	free(ov.from);
	rfs_strmap_release(&ov.has);
	for (s = 0; s < nsrc; s++)
		rfs_tokvocab_release(&vs[s]);
	free(btext);
	return ret;
}

int rfs_is_vocab_tensor_name(const char *name)
{
	/* the tensors with a vocabulary_axis in mergekit 0.1.5's architectures (all axis 0) */
	static const char *const names[] = {
		"model.embed_tokens.weight", "lm_head.weight", "embed_tokens.weight",
		"decoder.embed_tokens.weight", "encoder.embed_tokens.weight",
		"model.language_model.embed_tokens.weight", "shared.weight", "backbone.embeddings.weight",
		"language_model.model.embed_tokens.weight", "language_model.lm_head.weight",
		"model.language_model.lm_head.weight", "cls.predictions.decoder.weight", "layers.0.wte.weight",
		"bert.embeddings.word_embeddings.weight", "cls.predictions.bias",
		"distilbert.embeddings.word_embeddings.weight", "embed_out.weight",
		"embeddings.word_embeddings.weight", "gpt_neox.embed_in.weight", "lm_head.bias",
		"lm_head.decoder.weight", "lm_head.linear.weight", "lm_head.linear.bias",
		"model.tok_embeddings.weight", "output.weight", "roberta.embeddings.word_embeddings.weight",
		"transformer.embd.wte.weight", "transformer.embedding.word_embeddings.weight",
		"transformer.output_layer.weight", "transformer.word_embeddings.weight", "transformer.wte.weight",
		"vocab_projector.weight", "vocab_projector.bias",
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(*names); i++)
		if (!strcmp(name, names[i]))
			return 1;
	return 0;
}

int rfs_looks_like_vocab_tensor(const char *name, uint64_t rows, int64_t vocab)
{
	static const char *const words[] = { "embed", "wte", "lm_head", "word", "vocab", "tok", "output",
					     "decoder", "shared", "linear", "head", "logit", "classifier" };
	size_t i;

	if (vocab < 1 || rows != (uint64_t)vocab || rfs_is_vocab_tensor_name(name))
		return 0;
	for (i = 0; i < sizeof(words) / sizeof(*words); i++)
		if (strstr(name, words[i]))
			return 1;
	return 0;
}

int64_t rfs_src_vocab_size(const struct rfs_src *s)
{
	cJSON *j, *v;
	int64_t n = -1;

	if (s->vocab_size >= 0)
		return s->vocab_size;
	j = cJSON_ParseWithLength(s->config, s->config_len);
	v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "text_config"), "vocab_size");
	if (cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble < 2147483648.0 &&
	    v->valuedouble == (double)(int64_t)v->valuedouble)
		n = (int64_t)v->valuedouble;
	cJSON_Delete(j);
	return n;
}
