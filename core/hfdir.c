/*
 * The Hugging Face directory policy (hfdir.h): which files besides the
 * weights the result shows, and from which term.
 */
#include "hfdir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokalign.h"
#include "util.h"

static const char *const tokenizer_files[] = {
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
	"tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
	"chat_template.jinja", "chat_template.json", "vocab.txt", "spiece.model",
	"sentencepiece.bpe.model", NULL,
};

static int is_tokenizer_file(const char *name)
{
	size_t i;

	for (i = 0; tokenizer_files[i]; i++)
		if (!strcmp(name, tokenizer_files[i]))
			return 1;
	return 0;
}

static int has_tokenizer(struct rfs_tdir *t)
{
	return t->ops->exists(t, "tokenizer_config.json") || t->ops->exists(t, "tokenizer.json") ||
	       t->ops->exists(t, "tokenizer.model") || t->ops->exists(t, "vocab.json");
}

/* The tokenizer files of @s: each one there must be a regular file inside
 * the term's directory (anything else is refused, not skipped: a loader
 * would silently use another tokenizer). */
static int add_tokenizer(struct rfs_build *b, const struct rfs_src *s)
{
	size_t i;
	int ret;

	for (i = 0; tokenizer_files[i]; i++) {
		if (!s->td->ops->exists(s->td, tokenizer_files[i]) || rfs_pb_has_vfile(b, tokenizer_files[i]))
			continue;
		ret = rfs_pb_add_passthrough(b, s, tokenizer_files[i]);
		if (ret)
			return ret;
	}
	return 0;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), c = strlen(suffix);

	return a >= c && !strcmp(s + a - c, suffix);
}

static int is_weight_file(const char *name)
{
	static const char *const sfx[] = {
		".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json",
		".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".pkl", NULL,
	};
	size_t i;

	for (i = 0; sfx[i]; i++)
		if (ends_with(name, sfx[i]))
			return 1;
	return 0;
}

static int cmp_cstr(const void *a, const void *c)
{
	return strcmp(*(char *const *)a, *(char *const *)c);
}

/* Other regular files of the base directory, in name order.  One that
 * resolves outside the directory (or stops being a regular file) is left
 * out with a note: it is nobody's model file. */
int rfs_pb_add_other_files(struct rfs_build *b, const struct rfs_src *s)
{
	struct rfs_tdir *t = s->td;
	char **names = NULL;
	size_t n = 0, i, keep = 0;
	int ret;

	ret = t->ops->list(t, &names, &n, b->err);
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		const char *nm = names[i];

		if (nm[0] == '.' || rfs_pb_has_vfile(b, nm) || is_weight_file(nm) || is_tokenizer_file(nm) ||
		    !strcmp(nm, "generation_config.json") || !strcmp(nm, "README.md") ||
		    !strcmp(nm, "config.json") || !t->ops->is_file(t, nm))
			free(names[i]);
		else
			names[keep++] = names[i];
	}
	n = keep;
	if (n > 1) /* qsort wants a non-NULL array even for none */
		qsort(names, n, sizeof(*names), cmp_cstr);
	for (i = 0; i < n && !ret; i++) {
		ret = rfs_pb_add_passthrough(b, s, names[i]);
		if (ret == RFS_E_FORMAT) {
			ret = rfs_pb_note(b, "%s: not shown: %s", names[i], b->err->msg);
			b->err->code = 0;
			b->err->msg[0] = 0;
		}
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return ret;
}

int rfs_pb_add_config(struct rfs_build *b, int64_t vocab, int exact)
{
	struct rfs_plan *p = b->p;
	const struct rfs_src *base = p->src[0];
	static const char *const k_vocab[] = { "vocab_size" };
	static const char *const k_tvocab[] = { "text_config", "vocab_size" };
	static const char *const k_tdt[] = { "torch_dtype" };
	static const char *const k_dt[] = { "dtype" };
	struct rfs_json_patch pt[4];
	char vbuf[32], dbuf[32];
	size_t n = 0, len;
	char *out;

	/* a recipe's aligned vocabulary: also a multimodal config's text_config.vocab_size */
	int64_t had = exact ? rfs_src_vocab_size(base) : base->vocab_size;

	if (had >= 0 && (exact ? vocab >= 0 && vocab != had : vocab > had)) {
		int ret;

		snprintf(vbuf, sizeof(vbuf), "%lld", (long long)vocab);
		pt[n++] = (struct rfs_json_patch){ k_vocab, 1, vbuf };
		if (exact)
			pt[n++] = (struct rfs_json_patch){ k_tvocab, 2, vbuf };
		ret = rfs_pb_note(b, "vocabulary %s from %lld to %lld rows; config.json vocab_size follows",
				  vocab > had ? "grows" : "shrinks", (long long)had, (long long)vocab);
		if (ret)
			return ret;
	}
	if (p->opts.out_dtype >= 0) {
		snprintf(dbuf, sizeof(dbuf), "\"%s\"", rfs_dtype_torch_name(p->opts.out_dtype));
		pt[n++] = (struct rfs_json_patch){ k_tdt, 1, dbuf };
		pt[n++] = (struct rfs_json_patch){ k_dt, 1, dbuf };
	}
	out = rfs_json_patch(base->config, base->config_len, pt, n, &len);
	if (!out)
		return rfs_pb_nomem(b);
	return rfs_pb_add_lit(b, "config.json", out, len, base->config_mode);
}

int rfs_pb_add_index(struct rfs_build *b, uint64_t total)
{
	const struct rfs_src *base = b->p->src[0];
	static const char *const k_total[] = { "metadata", "total_size" };
	struct rfs_json_patch pt = { k_total, 2, NULL };
	char tbuf[32];
	size_t len;
	char *out;

	snprintf(tbuf, sizeof(tbuf), "%llu", (unsigned long long)total);
	pt.value = tbuf;
	out = rfs_json_patch(base->index, base->index_len, &pt, 1, &len);
	if (!out)
		return rfs_pb_nomem(b);
	return rfs_pb_add_lit(b, "model.safetensors.index.json", out, len, base->index_mode);
}

/*
 * The files that make instruct behaviour: tokenizer (chat template, added
 * tokens) and generation config (eos ids).  Apply mode: the first delta
 * that has a tokenizer, else the base's; the first delta that has a
 * generation config, else the base's.  Compute mode: the instruct's.
 */
int rfs_pb_add_chat_files(struct rfs_build *b)
{
	struct rfs_plan *p = b->p;
	const struct rfs_src *tok = p->src[0], *gen = NULL;
	size_t k;
	int ret;

	/* a merge's tokenizer is its tokenizer source's, its generation config the base's */
	if (p->recipe)
		tok = p->src[p->tok_src];
	for (k = 1; !p->compute && !p->recipe && k < p->nsrc; k++)
		if (has_tokenizer(p->src[k]->td)) {
			tok = p->src[k];
			break;
		}
	for (k = 1; !p->compute && !p->recipe && k < p->nsrc && !gen; k++)
		if (p->src[k]->td->ops->exists(p->src[k]->td, "generation_config.json"))
			gen = p->src[k];
	if (!gen && p->src[0]->td->ops->exists(p->src[0]->td, "generation_config.json"))
		gen = p->src[0];
	ret = add_tokenizer(b, tok);
	if (!ret && gen)
		ret = rfs_pb_add_passthrough(b, gen, "generation_config.json");
	return ret;
}
