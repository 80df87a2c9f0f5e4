/*
 * Compute mode (compute.h): INSTRUCT-BASE as a residuals directory that
 * the `residuals` package loads.
 */
#include "compute.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "card.h"
#include "hfdir.h"
#include "util.h"
#include "vocab.h"

struct cout {
	struct rfs_pb_out o;
	const char *name;
};

static int cmp_cout(const void *a, const void *c)
{
	const struct cout *x = a, *y = c;
	unsigned ax = rfs_dtype_align(x->o.info->dtype);
	unsigned ay = rfs_dtype_align(y->o.info->dtype);

	if (ax != ay)
		return ax > ay ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Input embedding names, for models whose lm_head is tied and not saved. */
static const char *const embed_names[] = {
	"model.embed_tokens.weight", "transformer.wte.weight",
	"model.decoder.embed_tokens.weight", "transformer.word_embeddings.weight",
	"gpt_neox.embed_in.weight", "model.embed_in.weight", "embed_tokens.weight", NULL,
};

static int residuals_config(struct rfs_build *b, struct cout *c, size_t n)
{
	struct rfs_plan *p = b->p;
	struct rfs_buf names = { 0 }, shapes = { 0 }, o = { 0 };
	char nh[65], sh[65], when[48], shp[256];
	size_t i, cnt[3] = { 0 }, len;
	int best = 0;
	const struct cout **byname = calloc(n ? n : 1, sizeof(*byname));

	if (!byname)
		return rfs_pb_nomem(b);
	for (i = 0; i < n; i++)
		byname[i] = &c[i];
	/* c is sorted by (alignment, name); names must be sorted by name alone */
	for (i = 1; i < n; i++) {
		const struct cout *x = byname[i];
		size_t j = i;

		while (j > 0 && strcmp(byname[j - 1]->name, x->name) > 0) {
			byname[j] = byname[j - 1];
			j--;
		}
		byname[j] = x;
	}
	for (i = 0; i < n; i++) {
		const struct rfs_tinfo *ti = byname[i]->o.info;

		if (i) {
			rfs_buf_add(&names, "|", 1);
			rfs_buf_add(&shapes, "|", 1);
		}
		rfs_buf_adds(&names, byname[i]->name);
		rfs_shape_str(ti->shape, ti->ndim, shp, sizeof(shp));
		rfs_buf_addf(&shapes, "%s:%s", byname[i]->name, shp);
		cnt[rfs_dtype_kdt(ti->dtype)]++;
	}
	free(byname);
	for (i = 1; i < 3; i++)
		if (cnt[i] > cnt[best])
			best = (int)i;
	rfs_sha256_hex(names.data ? names.data : "", names.len, nh);
	rfs_sha256_hex(shapes.data ? shapes.data : "", shapes.len, sh);
	rfs_buf_release(&names);
	rfs_buf_release(&shapes);
	rfs_iso8601(p->mtime_ns, when, sizeof(when));
	rfs_buf_adds(&o, "{\n  \"residuals_version\": \"1.0\",\n  \"format\": \"pytorch\",\n");
	rfs_buf_addf(&o, "  \"dtype\": \"%s\",\n",
		     best == RFS_KDT_BF16 ? "bfloat16" : best == RFS_KDT_F16 ? "float16" : "float32");
	rfs_buf_addf(&o, "  \"param_count\": %zu,\n", n);
	rfs_buf_addf(&o, "  \"shapes_hash\": \"%s\",\n  \"parameter_names_hash\": \"%s\",\n", sh, nh);
	rfs_buf_adds(&o, "  \"tokenizer_name\": ");
	rfs_buf_add_json_str_ascii(&o, rfs_src_model_name(p->src[0]));
	rfs_buf_addf(&o, ",\n  \"created_at\": \"%s\",\n", when);
	rfs_buf_addf(&o, "  \"library\": {\n    \"package\": \"residfs\",\n    \"version\": \"%s\"\n  },\n",
		     RESIDFS_VERSION);
	rfs_buf_adds(&o, "  \"base_model_name\": ");
	rfs_buf_add_json_str_ascii(&o, rfs_src_model_name(p->src[1]));
	rfs_buf_adds(&o, ",\n  \"instruct_model_name\": ");
	rfs_buf_add_json_str_ascii(&o, rfs_src_model_name(p->src[0]));
	rfs_buf_adds(&o, ",\n  \"pipeline_tag\": \"text-generation\",\n  \"license\": null,\n"
		     "  \"language\": null,\n  \"tags\": [\n    \"residuals\",\n    \"delta\",\n"
		     "    \"task-arithmetic\",\n    \"finetune\"\n  ],\n"
		     "  \"base_model_relation\": \"adapter\"\n}");
	if (!rfs_buf_ok(&o)) {
		rfs_buf_release(&o);
		return rfs_pb_nomem(b);
	}
	{
		char *data = rfs_buf_detach(&o, &len);

		return rfs_pb_add_lit(b, "config.json", data, len,
				    p->src[0]->config_mode & p->src[1]->config_mode);
	}
}

int rfs_pb_compute(struct rfs_build *b)
{
	struct rfs_plan *p = b->p;
	const struct rfs_src *ins = p->src[0], *base = p->src[1];
	struct cout *c = calloc(base->ntensors + 1, sizeof(*c));
	struct rfs_strmap used = { 0 };
	enum rfs_dtype odt = p->opts.out_dtype >= 0 ? (enum rfs_dtype)p->opts.out_dtype : RFS_DT_F32;
	size_t i, n = 0, tied_from = (size_t)-1;
	int ret = 0;

	if (!c)
		return rfs_pb_nomem(b);
	for (i = 0; i < base->ntensors; i++) {
		const struct rfs_src_tensor *bt = &base->tensors[i];
		const struct rfs_src_tensor *it = rfs_src_find(ins, bt->t->name);
		struct rfs_tinfo *ti;
		char s1[128], s2[128];
		uint64_t numel;

		if (!it) {
			ret = rfs_errf(b->err, RFS_E_MISMATCH,
				       "tensor '%s' of the base %s is missing from the instruct model %s",
				       bt->t->name, bt->file->path, ins->dir);
			goto out;
		}
		if (rfs_strmap_put(&used, it->t->name, (void *)it) == RFS_PUT_NOMEM) {
			ret = rfs_pb_nomem(b);
			goto out;
		}
		if (rfs_dtype_kdt(bt->t->dtype) < 0 || rfs_dtype_kdt(it->t->dtype) < 0) {
			rfs_pb_note(b, "tensor '%s' is %s, which residfs does not compute (F32, BF16 and F16 only): left out of the residuals",
			     bt->t->name, rfs_dtype_name(bt->t->dtype));
			continue;
		}
		if (rfs_pb_shape_fit(bt->t, it->t) == RFS_FIT_GROWS && !rfs_pb_is_vocab(base, bt->t)) {
			rfs_shape_str(bt->t->shape, bt->t->ndim, s1, sizeof(s1));
			rfs_shape_str(it->t->shape, it->t->ndim, s2, sizeof(s2));
			ret = rfs_errf(b->err, RFS_E_MISMATCH,
				       "tensor '%s': instruct %s has shape %s but base %s has shape %s; only vocabulary tensors (%s) may grow",
				       bt->t->name, it->file->path, s2, bt->file->path, s1,
				       rfs_pb_vocab_rule(base, s1, sizeof(s1)));
			goto out;
		}
		if (rfs_pb_shape_fit(bt->t, it->t) == RFS_FIT_MISMATCH) {
			rfs_shape_str(bt->t->shape, bt->t->ndim, s1, sizeof(s1));
			rfs_shape_str(it->t->shape, it->t->ndim, s2, sizeof(s2));
			ret = rfs_errf(b->err, RFS_E_MISMATCH,
				       "tensor '%s': instruct %s has shape %s but base %s has shape %s%s",
				       bt->t->name, it->file->path, s2, bt->file->path, s1,
				       it->t->ndim == bt->t->ndim && it->t->ndim &&
						       it->t->shape[0] < bt->t->shape[0]
					       ? " (the instruct vocabulary cannot be smaller)" : "");
			goto out;
		}
		ti = rfs_pb_new_tinfo(b);
		if (!ti) {
			ret = rfs_pb_nomem(b);
			goto out;
		}
		ti->name = bt->t->name;
		ti->file = "model.safetensors";
		ti->dtype = odt;
		ti->ndim = it->t->ndim;
		memcpy(ti->shape, it->t->shape, sizeof(ti->shape));
		ti->how = RFS_HOW_COMPUTED;
		ti->nterms = 2;
		ti->srcmask = 3;
		if (it->t->ndim && it->t->shape[0] > bt->t->shape[0])
			ti->grown_rows = it->t->shape[0] - bt->t->shape[0];
		numel = it->t->numel;
		c[n].name = ti->name;
		c[n].o.info = ti;
		c[n].o.comp = rfs_pb_new_comp(b, ti->name, (enum rfs_kdt)rfs_dtype_kdt(odt), numel, 2);
		if (!c[n].o.comp) {
			ret = rfs_pb_nomem(b);
			goto out;
		}
		rfs_pb_comp_add(c[n].o.comp, it, 1.0f);
		rfs_pb_comp_add(c[n].o.comp, bt, -1.0f);
		c[n].o.bytes = rfs_pb_out_bytes(ti);
		for (size_t e = 0; embed_names[e]; e++)
			if (!strcmp(ti->name, embed_names[e]) && tied_from == (size_t)-1)
				tied_from = n;
		n++;
	}
	/* transformers' state_dict has lm_head.weight even when tied and unsaved */
	if (base->tie_word_embeddings && !rfs_src_find(base, "lm_head.weight") &&
	    tied_from != (size_t)-1) {
		struct rfs_tinfo *ti = rfs_pb_new_tinfo(b);

		if (!ti) {
			ret = rfs_pb_nomem(b);
			goto out;
		}
		*ti = *c[tied_from].o.info;
		ti->name = "lm_head.weight";
		c[n] = c[tied_from];
		c[n].name = ti->name;
		c[n].o.info = ti;
		n++;
		rfs_pb_note(b, "lm_head.weight is tied to %s in the base: written as a copy of its delta, as the residuals package does",
		     c[tied_from].name);
	}
	for (i = 0; i < ins->ntensors; i++)
		if (!rfs_strmap_get(&used, ins->tensors[i].t->name) &&
		    strcmp(ins->tensors[i].t->name, "lm_head.weight"))
			rfs_pb_note(b, "instruct tensor '%s' has no base tensor and is left out",
			     ins->tensors[i].t->name);
	if (n > 1)
		qsort(c, n, sizeof(*c), cmp_cout);
	{
		struct rfs_pb_out *o = calloc(n ? n : 1, sizeof(*o));

		if (!o) {
			ret = rfs_pb_nomem(b);
			goto out;
		}
		for (i = 0; i < n; i++)
			o[i] = c[i].o;
		ret = rfs_pb_emit_st(b, "model.safetensors", o, n, NULL, 0, NULL, 0);
		free(o);
	}
	if (!ret)
		ret = residuals_config(b, c, n);
	if (!ret)
		ret = rfs_pb_add_chat_files(b);
	if (!ret)
		ret = rfs_pb_add_card(b);
out:
	rfs_strmap_release(&used);
	free(c);
	return ret;
}
