/*
 * The plan of a mergekit recipe (merge.h): which sources, which tensors,
 * which files.  The arithmetic is in merge_math.c.
 */
#include "merge.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "buf.h"
#include "card.h"
#include "hfdir.h"
#include "tokalign.h"
#include "util.h"

/* The layer index of tensor @name ("model.layers.12.mlp..." -> 12,
 * "transformer.h.3.attn..." -> 3), or -1 when it has none. */
static long layer_of(const char *name)
{
	static const char *const marks[] = { ".layers.", ".h.", ".blocks.", "layers.", "h." };
	size_t i;

	for (i = 0; i < sizeof(marks) / sizeof(*marks); i++) {
		const char *p = strstr(name, marks[i]);

		if (i >= 3 && p != name)
			continue; /* without the dot: only at the start */
		if (p) {
			const char *d = p + strlen(marks[i]);
			long v = 0;

			if (*d < '0' || *d > '9')
				continue;
			while (*d >= '0' && *d <= '9' && v < 1000000)
				v = v * 10 + (*d++ - '0');
			if (*d == '.' || !*d)
				return v;
		}
	}
	return -1;
}

/* num_hidden_layers (or n_layer) of a config.json; 0 when absent. */
static long num_layers(const struct rfs_src *s)
{
	cJSON *j = cJSON_ParseWithLength(s->config, s->config_len), *v;
	long n = 0;

	if (!j)
		return 0;
	v = cJSON_GetObjectItemCaseSensitive(j, "num_hidden_layers");
	if (!cJSON_IsNumber(v))
		v = cJSON_GetObjectItemCaseSensitive(j, "n_layer");
	if (cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble < 1e6)
		n = (long)v->valuedouble;
	cJSON_Delete(j);
	return n;
}

static int is_float(enum rfs_dtype d)
{
	return rfs_dtype_kdt(d) >= 0;
}

/* torch.promote_types over the inputs' dtypes: the compute dtype when the
 * recipe names none (bf16 with f16, or anything with f32: f32). */
static enum rfs_dtype promote(enum rfs_dtype base, const struct rfs_src_tensor *const *mt, unsigned n)
{
	enum rfs_dtype d = base;
	unsigned k;

	for (k = 0; k < n; k++)
		if (mt[k]->t->dtype != d)
			d = RFS_DT_F32;
	return d;
}

/* The recipe's model @m's source in p->src, or the base. */
struct terms {
	int src_of[RFS_RECIPE_MAX_MODELS]; /* recipe model -> p->src index */
	int base_src;                       /* -1: no base (linear without one) */
	long nlayers;
	int64_t vocab;                      /* the layout's vocab_size (rfs_src_vocab_size), -1: none */
	struct rfs_buf *flat;               /* tensors without a layer that a gradient applies to */
	unsigned nflat;
};

/* The parameters of tensor @name resolved into @mc (model k is operand
 * k + has_base); refuses what the method cannot use, naming the key. */
static int resolve_params(struct rfs_build *b, const struct rfs_recipe *r, struct terms *tm,
			  const char *name, const int *model_idx, unsigned nmodels, struct rfs_mcomp *mc)
{
	long layer = layer_of(name);
	double v;
	unsigned k;

	if (layer < 0) {
		/* mergekit takes a gradient's first value (t = 0) for such tensors: noted */
		static const char *const gk[] = { "lambda", "normalize", "rescale", "t", "weight", "density", "gamma" };
		int grad = 0;
		size_t i;

		for (i = 0; i < sizeof(gk) / sizeof(*gk) && !grad; i++) {
			grad = rfs_recipe_param_is_gradient(r, -1, gk[i], name);
			for (k = 0; i >= 4 && k < nmodels && !grad; k++)
				grad = model_idx[k] >= 0 && rfs_recipe_param_is_gradient(r, model_idx[k], gk[i], name);
		}
		if (grad && tm->nflat++ < 8)
			rfs_buf_addf(tm->flat, "%s%s", tm->nflat > 1 ? ", " : "", name);
	}
	mc->lambda = rfs_recipe_param(r, -1, "lambda", name, layer, tm->nlayers, &v) ? (float)v : 1.0f;
	/* mergekit's defaults: normalize for ties (and linear), rescale for dare */
	mc->normalize = r->method == RFS_MERGE_TIES || r->method == RFS_MERGE_LINEAR;
	mc->consensus = r->method == RFS_MERGE_TIES || r->method == RFS_MERGE_DARE_TIES ||
			r->method == RFS_MERGE_BREADCRUMBS_TIES;
	if (rfs_recipe_param(r, -1, "normalize", name, layer, tm->nlayers, &v))
		mc->normalize = v != 0;
	mc->rescale = r->method == RFS_MERGE_DARE_TIES || r->method == RFS_MERGE_DARE_LINEAR;
	if (rfs_recipe_param(r, -1, "rescale", name, layer, tm->nlayers, &v))
		mc->rescale = v != 0;
	if (r->method == RFS_MERGE_SLERP) {
		if (!rfs_recipe_param(r, -1, "t", name, layer, tm->nlayers, &v))
			return rfs_errf(b->err, RFS_E_SPEC, "%s: tensor '%s': no value of t applies to it", r->path,
					name);
		mc->t = (float)v;
	}
	for (k = 0; k < nmodels; k++) {
		int m = model_idx[k]; /* -1: the base, appended (linear) */
		const char *ref = m >= 0 ? r->models[m].ref : r->base_model;

		mc->density[k] = 1.0f;
		mc->gamma[k] = 0.01f;
		if (r->method == RFS_MERGE_SLERP)
			continue;
		if (!rfs_recipe_param(r, m, "weight", name, layer, tm->nlayers, &v)) {
			if (m < 0)
				return rfs_errf(b->err, RFS_E_SPEC,
						"%s: base_model (%s) is not in models: linear adds it with the global weight, and no weight applies to tensor '%s'",
						r->path, ref, name);
			return rfs_errf(b->err, RFS_E_SPEC, "%s: models[%d] (%s): no weight applies to tensor '%s'",
					r->path, m, ref, name);
		}
		mc->w[k] = (float)v;
		if (rfs_recipe_param(r, m, "density", name, layer, tm->nlayers, &v)) {
			if (!(v > 0 && v <= 1))
				return rfs_errf(b->err, RFS_E_SPEC,
						"%s: models[%d] (%s): density %g for tensor '%s' is outside (0, 1]",
						r->path, m, ref, v, name);
			mc->density[k] = (float)v;
		}
		if (rfs_recipe_param(r, m, "gamma", name, layer, tm->nlayers, &v))
			mc->gamma[k] = (float)v;
	}
	return 0;
}

/*
 * A vocabulary tensor @t of aligned vocabularies, its operands' tensors
 * @ot from the plan's terms @opsrc: every operand must hold the rows the
 * alignment takes from it, and every term the alignment takes rows from
 * must be an operand; the output has the aligned vocabulary's rows.  *@vt
 * is cleared when the alignment changes nothing for it (the same rows
 * everywhere).
 */
static int vocab_rows(struct rfs_build *b, const struct rfs_st_tensor *t, const struct rfs_src_tensor *const *ot,
		      const unsigned *opsrc, unsigned nops, struct rfs_tinfo *ti, int *vt)
{
	const struct rfs_vmap *vm = b->p->vmap;
	int same = vm->identity && t->shape[0] == vm->rows;
	unsigned k, j;

	for (k = 0; k < nops; k++) {
		uint64_t rows = ot[k]->t->shape[0];

		if (rows < vm->need[opsrc[k]])
			return rfs_errf(b->err, RFS_E_MISMATCH,
					"tensor '%s' of %s has %llu rows, but its tokenizer has tokens up to id %u",
					t->name, b->p->src[opsrc[k]]->dir, (unsigned long long)rows, vm->need[opsrc[k]] - 1);
		same = same && rows == vm->rows;
	}
	for (k = 0; k < b->p->nsrc && !same; k++) {
		for (j = 0; j < nops && opsrc[j] != k; j++)
			;
		if (vm->need[k] && j == nops)
			return rfs_errf(b->err, RFS_E_MISMATCH, "tensor '%s': %s gives no operand to align by", t->name,
					b->p->src[k]->dir);
	}
	ti->shape[0] = vm->rows;
	*vt = !same;
	return 0;
}

/* The output tensors of the layout's file @fi, every floating one merged,
 * into @o (f->ntensors of them, zeroed by the caller). */
static int merge_file(struct rfs_build *b, struct terms *tm, size_t fi, struct rfs_pb_out *o,
		      uint64_t *total)
{
	struct rfs_plan *p = b->p;
	const struct rfs_recipe *r = p->recipe;
	const struct rfs_src *lay = p->src[tm->base_src >= 0 ? tm->base_src : tm->src_of[0]];
	const struct rfs_st_file *f = lay->files[fi];
	int model_idx[RFS_RECIPE_MAX_MODELS], ret = 0, has_base = r->method != RFS_MERGE_LINEAR;
	unsigned nm = 0, nops = 0, opsrc[RFS_SPEC_MAX_TERMS]; /* operand -> its term in p->src */
	size_t i, k;

	/* the operands after the base: the models that are not the base */
	for (k = 0; k < r->nmodels; k++)
		if (tm->src_of[k] != tm->base_src || r->method == RFS_MERGE_LINEAR)
			model_idx[nm++] = (int)k;
	if (r->method == RFS_MERGE_LINEAR && r->base_model) {
		for (k = 0; k < r->nmodels && tm->src_of[k] != tm->base_src; k++)
			;
		if (k == r->nmodels) /* mergekit appends an unlisted base as the last input */
			model_idx[nm++] = -1;
	}
	if (has_base)
		opsrc[nops++] = (unsigned)tm->base_src;
	for (k = 0; k < nm; k++)
		opsrc[nops++] = model_idx[k] >= 0 ? (unsigned)tm->src_of[model_idx[k]] : (unsigned)tm->base_src;
	for (i = 0; i < f->ntensors && !ret; i++) {
		const struct rfs_st_tensor *t = &f->tensors[i];
		const struct rfs_src_tensor *bt = rfs_src_find(lay, t->name), *ot[RFS_SPEC_MAX_TERMS];
		const struct rfs_src_tensor **mt = ot + has_base; /* the operands after the base */
		struct rfs_tinfo *ti = rfs_pb_new_tinfo(b);
		struct rfs_mcomp *mc;
		enum rfs_dtype cdt;
		int vt;

		if (!ti) {
			ret = rfs_pb_nomem(b);
			break;
		}
		ti->name = t->name;
		ti->file = lay->file_names[fi];
		ti->ndim = t->ndim;
		memcpy(ti->shape, t->shape, sizeof(t->shape));
		o[i].info = ti;
		o[i].src = bt;
		if (!is_float(t->dtype)) { /* integer buffers: the base's, as mergekit copies them */
			ti->dtype = t->dtype;
			ti->how = RFS_HOW_PASSTHROUGH;
			ti->nterms = 1;
			ti->srcmask = 1;
			o[i].bytes = rfs_pb_out_bytes(ti);
			*total += o[i].bytes;
			continue;
		}
		/* a vocabulary tensor of aligned vocabularies: rows by token (tokalign.h) */
		vt = p->vmap && t->ndim >= 1 && t->shape[0] && rfs_is_vocab_tensor_name(t->name) &&
		     (tm->vocab < 0 || t->shape[0] == (uint64_t)tm->vocab);
		if (p->vmap && !p->vmap->identity && t->ndim >= 1 &&
		    rfs_looks_like_vocab_tensor(t->name, t->shape[0], tm->vocab)) {
			ret = rfs_errf(b->err, RFS_E_SPEC,
				       "%s: tensor '%s' has a row per token of %s's vocabulary, but is none of the vocabulary tensors residfs aligns by token: the vocabularies differ, and its rows cannot be merged as they are",
				       r->path, t->name, lay->dir);
			break;
		}
		for (k = 0; k < nm; k++) {
			const struct rfs_src *ms = p->src[opsrc[has_base + k]];

			mt[k] = rfs_src_find(ms, t->name);
			if (!mt[k]) {
				ret = rfs_errf(b->err, RFS_E_MISMATCH, "tensor '%s' of %s is missing from %s", t->name,
					       lay->dir, ms->dir);
				break;
			}
			if (mt[k]->t->ndim != t->ndim ||
			    memcmp(mt[k]->t->shape + vt, t->shape + vt, (t->ndim - vt) * sizeof(t->shape[0]))) {
				char s1[128], s2[128];

				rfs_shape_str(t->shape, t->ndim, s1, sizeof(s1));
				rfs_shape_str(mt[k]->t->shape, mt[k]->t->ndim, s2, sizeof(s2));
				ret = rfs_errf(b->err, RFS_E_MISMATCH, "tensor '%s': shape %s in %s but %s in %s%s",
					       t->name, s1, lay->dir, s2, ms->dir,
					       strstr(t->name, "embed") || strstr(t->name, "lm_head") || strstr(t->name, "wte")
						       ? " (the vocabularies differ: tokenizer_source: union aligns them)"
						       : "");
				break;
			}
			if (!is_float(mt[k]->t->dtype)) {
				ret = rfs_errf(b->err, RFS_E_MISMATCH, "tensor '%s' is %s in %s: not a floating dtype",
					       t->name, rfs_dtype_name(mt[k]->t->dtype), ms->dir);
				break;
			}
		}
		if (ret)
			break;
		if (has_base)
			ot[0] = bt;
		if (vt && (ret = vocab_rows(b, t, ot, opsrc, nops, ti, &vt)))
			break;
		cdt = r->dtype >= 0 ? (enum rfs_dtype)r->dtype : promote(t->dtype, mt, nm);
		ti->dtype = r->out_dtype >= 0 ? (enum rfs_dtype)r->out_dtype : cdt;
		o[i].comp = rfs_pb_new_comp(b, t->name, (enum rfs_kdt)rfs_dtype_kdt(ti->dtype), rfs_pb_out_numel(ti),
					    nops);
		mc = calloc(1, sizeof(*mc));
		if (!o[i].comp || !mc) {
			free(mc);
			ret = rfs_pb_nomem(b);
			break;
		}
		o[i].comp->merge = mc;
		ti->comp = o[i].comp;
		pthread_mutex_init(&mc->lk, NULL);
		mc->method = r->method;
		mc->nmodels = nm;
		mc->has_base = has_base;
		mc->cdt = (enum rfs_kdt)rfs_dtype_kdt(cdt);
		mc->seed = r->has_seed ? r->random_seed : 0;
		mc->name_hash = XXH3_64bits(t->name, strlen(t->name));
		ti->srcmask = 0;
		for (k = 0; k < nops; k++) {
			rfs_pb_comp_add(o[i].comp, ot[k], 1.0f);
			ti->srcmask |= 1u << opsrc[k];
		}
		if (vt) {
			mc->vmap = p->vmap;
			mc->row_w = rfs_pb_out_numel(ti) / p->vmap->rows;
			memset(mc->src_op, -1, sizeof(mc->src_op));
			for (k = 0; k < nops; k++) {
				mc->op_src[k] = (uint8_t)opsrc[k];
				if (mc->src_op[opsrc[k]] < 0)
					mc->src_op[opsrc[k]] = (int8_t)k;
			}
		}
		ret = resolve_params(b, r, tm, t->name, model_idx, nm, mc);
		ti->how = RFS_HOW_MERGED;
		ti->nterms = nops;
		o[i].bytes = rfs_pb_out_bytes(ti);
		*total += o[i].bytes;
	}
	return ret;
}

static const struct rfs_st_meta pt_meta = { "format", "pt" };

/* qsort: mergekit's write order, Python's order of the names (bytes). */
static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct rfs_pb_out *)a)->info->name, ((const struct rfs_pb_out *)b)->info->name);
}

/* qsort: the order safetensors' writer lays tensors out in a file:
 * larger alignment first, then by name. */
static int st_order(const void *a, const void *b)
{
	const struct rfs_tinfo *x = ((const struct rfs_pb_out *)a)->info, *y = ((const struct rfs_pb_out *)b)->info;
	unsigned ax = rfs_dtype_align(x->dtype), ay = rfs_dtype_align(y->dtype);

	return ax != ay ? (ax > ay ? -1 : 1) : strcmp(x->name, y->name);
}

/*
 * mergekit's layout (--out-shard-size): tensors in name order, a shard
 * closed before a tensor that would take it past @size bytes (a larger one
 * alone), model-0000i-of-0000N.safetensors (model.safetensors when one),
 * and mergekit's index.  @o holds all @n outputs.
 */
static int emit_mergekit_shards(struct rfs_build *b, struct rfs_pb_out *o, size_t n, uint64_t size,
				uint64_t total)
{
	size_t *first = calloc(n + 1, sizeof(*first)), nsh = 0, i, s;
	struct rfs_buf ix = { 0 };
	char name[64];
	uint64_t cur = 0;
	int ret = 0;

	if (!first)
		return rfs_pb_nomem(b);
	qsort(o, n, sizeof(*o), by_name);
	for (i = 0; i < n; i++) {
		if (!i || (cur && cur + o[i].bytes > size)) {
			first[nsh++] = i;
			cur = 0;
		}
		cur += o[i].bytes;
	}
	first[nsh] = n;
	for (s = 0; s < nsh && !ret; s++) {
		if (nsh == 1)
			snprintf(name, sizeof(name), "model.safetensors");
		else
			snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", s + 1, nsh);
		for (i = first[s]; i < first[s + 1]; i++)
			o[i].info->file = NULL; /* set below, once the name is kept */
		/* the index lists tensors in write order: before the layout sort */
		for (i = first[s]; i < first[s + 1] && nsh > 1; i++) {
			rfs_buf_addf(&ix, "%s    ", ix.len ? ",\n" : "");
			rfs_buf_add_json_str_ascii(&ix, o[i].info->name);
			rfs_buf_addf(&ix, ": \"%s\"", name);
		}
		qsort(o + first[s], first[s + 1] - first[s], sizeof(*o), st_order);
		ret = rfs_pb_emit_st(b, name, o + first[s], first[s + 1] - first[s], NULL, 1, &pt_meta, 1);
		if (!ret) {
			const char *kept = b->p->files[b->p->nfiles - 1].name;

			for (i = first[s]; i < first[s + 1]; i++)
				o[i].info->file = kept;
		}
	}
	if (!ret && nsh > 1) {
		/* json.dumps(..., indent=2), no newline at the end, as mergekit writes it */
		struct rfs_buf out = { 0 };

		rfs_buf_addf(&out, "{\n  \"metadata\": {\n    \"total_size\": %llu,\n"
			     "    \"mergekit_version\": \"0.1.5\"\n  },\n  \"weight_map\": {\n",
			     (unsigned long long)total);
		rfs_buf_add(&out, ix.data, ix.len);
		rfs_buf_adds(&out, "\n  }\n}");
		if (!rfs_buf_ok(&out)) {
			rfs_buf_release(&out);
			ret = rfs_pb_nomem(b);
		} else {
			size_t len;
			char *data = rfs_buf_detach(&out, &len);

			ret = rfs_pb_add_lit(b, "model.safetensors.index.json", data, len, 0444);
		}
	}
	rfs_buf_release(&ix);
	free(first);
	return ret;
}

/* The file @name of term @s into *@out (rfs_src_read_file); 1 when the term has none. */
static int read_term_file(struct rfs_build *b, const struct rfs_src *s, const char *name, char **out, size_t *len)
{
	*out = NULL;
	if (!s->td->ops->exists(s->td, name))
		return 1;
	return rfs_src_read_file(s, name, out, len, b->err);
}

/* Python's str.isspace() on an ASCII byte. */
static int py_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* @t (@len bytes) without leading and trailing whitespace (Python's
 * str.strip() on ASCII), as a new string. */
static char *strip_dup(const char *t, size_t len)
{
	size_t a = 0;
	char *o;

	while (a < len && py_space(t[a]))
		a++;
	while (len > a && py_space(t[len - 1]))
		len--;
	o = malloc(len - a + 1);
	if (o) {
		memcpy(o, t + a, len - a);
		o[len - a] = 0;
	}
	return o;
}

/* Term @s's chat template as transformers reads it (chat_template.jinja,
 * else tokenizer_config.json's chat_template: a string, or the "default"
 * entry of a list of {name, template}), stripped; NULL in *@out when none. */
static int term_template(struct rfs_build *b, const struct rfs_src *s, char **out)
{
	char *text = NULL;
	size_t len = 0;
	int ret;

	*out = NULL;
	ret = read_term_file(b, s, "chat_template.jinja", &text, &len);
	if (!ret) {
		*out = strip_dup(text, len);
	} else if (ret == 1 && !(ret = read_term_file(b, s, "tokenizer_config.json", &text, &len))) {
		cJSON *j = cJSON_ParseWithLength(text, len), *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
		const cJSON *it, *list = cJSON_IsArray(ct) ? ct : NULL;

		cJSON_ArrayForEach(it, list) {
			const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");

			if (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default"))
				ct = cJSON_GetObjectItemCaseSensitive(it, "template");
		}
		if (cJSON_IsString(ct))
			*out = strip_dup(ct->valuestring, strlen(ct->valuestring));
		else
			ret = 1;
		cJSON_Delete(j);
	}
	free(text);
	if (ret < 0)
		return ret;
	if (!ret && !*out)
		return rfs_pb_nomem(b);
	return 0;
}

/*
 * chat_template: the template of the mount's tokenizer, as mergekit sets
 * it: Jinja text as given; auto: the most common template of the models
 * (the first of the recipe's order among equals), none when no model has
 * one.  mergekit's named built-in templates (chatml, llama3, ...) are not
 * shipped with residfs: refused, asking for the text.  It is shown as
 * chat_template.jinja, and in tokenizer_config.json when that has the key.
 */
static int add_chat_template(struct rfs_build *b, const unsigned *order, unsigned n)
{
	const struct rfs_recipe *r = b->p->recipe;
	const struct rfs_src *ts = b->p->src[b->p->tok_src];
	char *t = NULL, *tpl[RFS_SPEC_MAX_TERMS] = { NULL };
	size_t len = strlen(r->chat_template), i, j;
	int ret = 0;

	if (!strcmp(r->chat_template, "auto")) {
		unsigned best = 0, cnt[RFS_SPEC_MAX_TERMS] = { 0 };

		for (i = 0; i < n && !ret; i++)
			ret = term_template(b, b->p->src[order[i]], &tpl[i]);
		for (i = 0; i < n && !ret; i++)
			for (j = 0; tpl[i] && j < n; j++)
				cnt[i] += tpl[j] && !strcmp(tpl[i], tpl[j]);
		for (i = 1; i < n; i++)
			if (cnt[i] > cnt[best])
				best = (unsigned)i;
		if (!ret && cnt[best]) {
			t = tpl[best];
			tpl[best] = NULL;
		}
		for (i = 0; i < n; i++)
			free(tpl[i]);
		if (ret || !t)
			return ret;
		ret = rfs_pb_note(b, "chat_template: auto: the template of %s", b->p->src[order[best]]->dir);
	} else if (len < 256 && !strchr(r->chat_template, '\n') && !strchr(r->chat_template, '{')) {
		return rfs_errf(b->err, RFS_E_SPEC,
				"%s: chat_template '%s' is not a Jinja template (mergekit's named templates, such as chatml or llama3, are not shipped with residfs): give the template's text, or auto",
				r->path, r->chat_template);
	} else if (len < 20) {
		return rfs_errf(b->err, RFS_E_SPEC, "%s: chat_template '%s' is not a Jinja template (shorter than 20 bytes)",
				r->path, r->chat_template);
	} else if (!(t = strdup(r->chat_template))) {
		return rfs_pb_nomem(b);
	}
	if (!ret) {
		char *cfg = NULL;
		size_t clen = 0;
		int has = read_term_file(b, ts, "tokenizer_config.json", &cfg, &clen);

		ret = has < 0 ? has : 0;
		if (!has) {
			static const char *const k_ct[] = { "chat_template" };
			size_t beg, end, olen;

			if (!rfs_json_span(cfg, clen, k_ct, 1, &beg, &end)) {
				struct rfs_buf v = { 0 };
				struct rfs_json_patch pt = { k_ct, 1, NULL };
				char *o;

				rfs_buf_add_json_str(&v, t);
				pt.value = v.data;
				o = rfs_buf_ok(&v) ? rfs_json_patch(cfg, clen, &pt, 1, &olen) : NULL;
				ret = o ? rfs_pb_add_lit(b, "tokenizer_config.json", o, olen, 0444) : rfs_pb_nomem(b);
				rfs_buf_release(&v);
			}
		}
		free(cfg);
	}
	if (!ret) {
		ret = rfs_pb_add_lit(b, "chat_template.jinja", t, strlen(t), 0444);
		t = NULL;
	}
	free(t);
	return ret;
}

/* mergekit_config.yml: the recipe as given. */
static int add_recipe_file(struct rfs_build *b)
{
	const struct rfs_recipe *r = b->p->recipe;
	char *copy = malloc(r->text_len + 1);

	if (!copy)
		return rfs_pb_nomem(b);
	memcpy(copy, r->text, r->text_len + 1);
	return rfs_pb_add_lit(b, "mergekit_config.yml", copy, r->text_len, 0444);
}

int rfs_pb_merge(struct rfs_build *b)
{
	struct rfs_plan *p = b->p;
	const struct rfs_recipe *r = p->recipe;
	const struct rfs_src *lay;
	struct rfs_buf flat = { 0 };
	struct terms tm = { .base_src = -1, .flat = &flat };
	unsigned order[RFS_SPEC_MAX_TERMS], norder = 0;
	uint64_t total = 0;
	size_t i, k;
	int ret = 0;

	/* p->src: the base first (when there is one), then each other model once */
	for (k = 0; k < r->nmodels; k++) {
		tm.src_of[k] = -1;
		for (i = 0; i < p->spec.nterms; i++)
			if (!strcmp(p->spec.terms[i].path, r->models[k].ref))
				tm.src_of[k] = (int)i;
	}
	if (r->base_model)
		tm.base_src = 0;
	for (i = 0; i < p->nsrc; i++)
		if (p->src[i]->kind == RFS_SRC_RESIDUALS)
			return rfs_errf(b->err, RFS_E_SPEC,
					"%s: %s is a residuals directory: residuals are deltas, not models; mount it as a SPEC (BASE+%s) instead",
					r->path, p->src[i]->dir, p->src[i]->dir);
	lay = p->src[tm.base_src >= 0 ? tm.base_src : tm.src_of[0]];
	tm.nlayers = num_layers(lay);
	tm.vocab = rfs_src_vocab_size(lay);
	if (r->method == RFS_MERGE_SLERP) {
		unsigned others = 0;

		for (k = 0; k < r->nmodels; k++)
			others += tm.src_of[k] != tm.base_src;
		if (others != 1)
			return rfs_errf(b->err, RFS_E_SPEC,
					"%s: slerp merges exactly two models: the base_model and one other (%u others given)",
					r->path, others);
	}
	if (r->method != RFS_MERGE_LINEAR && r->method != RFS_MERGE_SLERP) {
		unsigned others = 0;

		for (k = 0; k < r->nmodels; k++)
			others += tm.src_of[k] != tm.base_src;
		if (!others)
			return rfs_errf(b->err, RFS_E_SPEC, "%s: %s needs at least one model besides the base_model",
					r->path, rfs_merge_method_name(r->method));
	}
	if (r->tokenizer_model) {
		/* tokenizer_source: a model: one the recipe merges */
		int s = r->base_model && !strcmp(r->tokenizer_model, r->base_model) ? 0 : -1;

		for (k = 0; k < r->nmodels && s < 0; k++)
			if (!strcmp(r->tokenizer_model, r->models[k].ref))
				s = tm.src_of[k];
		if (s < 0)
			return rfs_errf(b->err, RFS_E_SPEC,
					"%s: tokenizer_source '%s' is neither base, union nor one of the recipe's models (base_model or a models: entry, written the same way)",
					r->path, r->tokenizer_model);
		p->tok_src = (unsigned)s;
	}
	/* mergekit's model order: the recipe's, the base last when it is not listed */
	for (k = 0; k < r->nmodels; k++) {
		for (i = 0; i < norder && order[i] != (unsigned)tm.src_of[k]; i++)
			;
		if (i == norder)
			order[norder++] = (unsigned)tm.src_of[k];
	}
	for (i = 0; i < norder && order[i] != 0; i++)
		;
	if (i == norder)
		order[norder++] = 0;
	if (r->tokenizer_given && (ret = rfs_pb_tokalign(b, order, norder, r->base_model != NULL)))
		return ret;
	if (r->out_dtype >= 0 || r->dtype >= 0)
		p->opts.out_dtype = r->out_dtype >= 0 ? r->out_dtype : r->dtype;
	{
		struct rfs_pb_out *o = calloc(lay->ntensors ? lay->ntensors : 1, sizeof(*o));
		size_t at = 0;

		if (!o)
			return rfs_pb_nomem(b);
		for (i = 0; i < lay->nfiles && !ret; i++) {
			const struct rfs_st_file *f = lay->files[i];

			ret = merge_file(b, &tm, i, o + at, &total);
			if (!ret && !r->out_shard_size)
				ret = rfs_pb_emit_st(b, lay->file_names[i], o + at, f->ntensors, NULL, 1,
						     f->has_meta ? f->meta : &pt_meta, f->has_meta ? f->nmeta : 1);
			at += f->ntensors;
		}
		if (!ret && r->out_shard_size)
			ret = emit_mergekit_shards(b, o, at, r->out_shard_size, total);
		free(o);
	}
	if (!ret && tm.nflat)
		ret = rfs_buf_ok(&flat) ? rfs_pb_note(b,
			"gradients: %u tensor(s) without a layer index take each gradient's first value, as mergekit does: %s%s",
			tm.nflat, flat.data, tm.nflat > 8 ? ", ..." : "") : rfs_pb_nomem(b);
	rfs_buf_release(&flat);
	/* the layout's term is p->src[0] (rfs_plan_build_recipe): the
	 * index, config and tokenizer are its */
	if (!ret && lay->sharded && !r->out_shard_size)
		ret = rfs_pb_add_index(b, total);
	if (!ret)
		ret = rfs_pb_add_config(b, p->vmap ? (int64_t)p->vmap->rows : -1, p->vmap != NULL);
	if (!ret && r->chat_template)
		ret = add_chat_template(b, order, norder);
	if (!ret)
		ret = rfs_pb_add_chat_files(b);
	if (!ret)
		ret = add_recipe_file(b);
	if (!ret)
		ret = rfs_pb_add_card(b);
	return ret;
}
