/*
 * Apply mode (apply.h): BASE + s1*D1 + ... as a model directory with the
 * base's layout.
 */
#include "apply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "card.h"
#include "hfdir.h"
#include "match.h"
#include "util.h"
#include "vocab.h"

/* A shape mismatch of @in's base and delta @k, with both shapes. */
static int shape_error(const struct rfs_apply_in *in, unsigned k, const char *why,
		       struct rfs_err *err)
{
	const struct rfs_st_tensor *t = in->base, *d = in->delta[k];
	char s1[128], s2[128];

	rfs_shape_str(t->shape, t->ndim, s1, sizeof(s1));
	rfs_shape_str(d->shape, d->ndim, s2, sizeof(s2));
	return rfs_errf(err, RFS_E_MISMATCH, "tensor '%s': base %s has shape %s but delta %s has shape %s%s",
			t->name, in->base_file, s1, in->delta_file[k], s2, why);
}

enum rfs_code rfs_apply_classify(const struct rfs_apply_in *in, struct rfs_apply_out *out,
				 struct rfs_err *err)
{
	const struct rfs_st_tensor *t = in->base;
	int floating = rfs_dtype_kdt(t->dtype) >= 0;
	struct rfs_apply_out o = { .dtype = t->dtype, .rows = t->ndim ? t->shape[0] : 0 };
	char why[256], rule[200];
	unsigned k;

	for (k = 1; k < in->nterms; k++) {
		const struct rfs_st_tensor *d = in->delta[k];

		if (!d)
			continue;
		o.ndelta++;
		if (!floating)
			return rfs_errf(err, RFS_E_MISMATCH,
					"%s: delta for tensor '%s', but the base tensor in %s is %s; residfs merges F32, BF16 and F16 tensors only (others pass through unchanged and take no delta)",
					in->delta_file[k], t->name, in->base_file, rfs_dtype_name(t->dtype));
		if (rfs_dtype_kdt(d->dtype) < 0)
			return rfs_errf(err, RFS_E_FORMAT,
					"%s: delta tensor '%s' is %s; deltas must be F32, BF16 or F16",
					in->delta_file[k], t->name, rfs_dtype_name(d->dtype));
		switch (rfs_pb_shape_fit(t, d)) {
		case RFS_FIT_EQUAL:
			break;
		case RFS_FIT_GROWS:
			if (!in->vocab_rows || t->shape[0] != in->vocab_rows) {
				if (in->vocab_rows)
					snprintf(rule, sizeof(rule), "first dimension = vocab_size %llu of %s",
						 (unsigned long long)in->vocab_rows, in->vocab_from);
				else
					snprintf(rule, sizeof(rule), "first dimension = vocab_size, which %s lacks",
						 in->vocab_from);
				snprintf(why, sizeof(why), "; only vocabulary tensors (%s) may grow", rule);
				return shape_error(in, k, why, err);
			}
			if (d->shape[0] > o.rows)
				o.rows = d->shape[0];
			break;
		case RFS_FIT_MISMATCH:
			return shape_error(in, k, "", err);
		}
	}
	if (floating && in->out_dtype >= 0)
		o.dtype = (enum rfs_dtype)in->out_dtype;
	if (floating && !o.ndelta && !in->passthrough)
		o.how = RFS_APPLY_MISSING;
	else if (floating && o.ndelta)
		o.how = RFS_APPLY_MERGE;
	else if (floating && o.dtype != t->dtype)
		o.how = RFS_APPLY_CONVERT;
	else
		o.how = RFS_APPLY_PASS;
	*out = o;
	return 0;
}

/*
 * Plans the base's file @fi: each tensor classified (rfs_apply_classify),
 * merged ones computed from the base and the deltas that have it, the
 * header rewritten only when a dtype or a shape changed.  Delta tensors
 * used are recorded in @used[k]; *@total sums output bytes, *@vocab the
 * largest vocabulary; base tensors without a delta are counted in
 * *@nmissing (the first named in *@first_missing) and the file is then
 * not emitted (the caller fails the build).
 */
static int apply_file(struct rfs_build *b, size_t fi, struct rfs_strmap *used,
		      const struct rfs_match *dm, uint64_t *total, int64_t *vocab,
		      size_t *nmissing, const char **first_missing)
{
	struct rfs_plan *p = b->p;
	const struct rfs_src *base = p->src[0];
	const struct rfs_st_file *f = base->files[fi];
	struct rfs_pb_out *o = calloc(f->ntensors ? f->ntensors : 1, sizeof(*o));
	int changed = !f->has_meta, ret = 0;
	static const struct rfs_st_meta pt_meta = { "format", "pt" };
	char cfg[4200];
	size_t i, k;

	if (!o)
		return rfs_pb_nomem(b);
	snprintf(cfg, sizeof(cfg), "%s/config.json", base->dir);
	for (i = 0; i < f->ntensors; i++) {
		const struct rfs_st_tensor *t = &f->tensors[i];
		const struct rfs_src_tensor *dt[RFS_SPEC_MAX_TERMS] = { 0 };
		struct rfs_apply_in in = {
			.base = t, .base_file = f->path, .nterms = (unsigned)p->nsrc,
			.out_dtype = p->opts.out_dtype, .passthrough = p->opts.passthrough,
			.vocab_rows = base->vocab_size > 0 ? (uint64_t)base->vocab_size : 0,
			.vocab_from = cfg,
		};
		struct rfs_apply_out how;
		struct rfs_tinfo *ti = rfs_pb_new_tinfo(b);

		if (!ti) {
			ret = rfs_pb_nomem(b);
			goto out;
		}
		for (k = 1; k < p->nsrc; k++) {
			dt[k] = rfs_match_find(p->src[k], &dm[k], t->name);
			if (!dt[k])
				continue;
			in.delta[k] = dt[k]->t;
			in.delta_file[k] = dt[k]->file->path;
			if (rfs_strmap_put(&used[k], dt[k]->t->name, (void *)dt[k]) == RFS_PUT_NOMEM) {
				ret = rfs_pb_nomem(b);
				goto out;
			}
		}
		ret = rfs_apply_classify(&in, &how, b->err);
		if (ret)
			goto out;
		ti->name = t->name;
		ti->file = base->file_names[fi];
		ti->dtype = how.dtype;
		ti->ndim = t->ndim;
		memcpy(ti->shape, t->shape, sizeof(t->shape));
		o[i].info = ti;
		o[i].src = rfs_src_find(base, t->name);
		if (how.how == RFS_APPLY_MISSING) {
			if (!*nmissing)
				*first_missing = t->name;
			(*nmissing)++;
		}
		if (how.how == RFS_APPLY_MERGE || how.how == RFS_APPLY_CONVERT) {
			if (how.rows != (t->ndim ? t->shape[0] : 0)) {
				ti->grown_rows = how.rows - t->shape[0];
				ti->shape[0] = how.rows;
				if ((int64_t)how.rows > *vocab)
					*vocab = (int64_t)how.rows;
			}
			o[i].comp = rfs_pb_new_comp(b, t->name, (enum rfs_kdt)rfs_dtype_kdt(ti->dtype),
						    rfs_pb_out_numel(ti), 1 + how.ndelta);
			if (!o[i].comp) {
				ret = rfs_pb_nomem(b);
				goto out;
			}
			rfs_pb_comp_add(o[i].comp, o[i].src, 1.0f);
			ti->srcmask = 1;
			for (k = 1; k < p->nsrc; k++)
				if (dt[k]) {
					rfs_pb_comp_add(o[i].comp, dt[k], (float)p->spec.terms[k].scale);
					ti->srcmask |= 1u << k;
				}
			ti->how = how.how == RFS_APPLY_MERGE ? RFS_HOW_MERGED : RFS_HOW_CONVERTED;
			ti->nterms = o[i].comp->nops;
		} else {
			ti->how = RFS_HOW_PASSTHROUGH;
			ti->nterms = 1;
			ti->srcmask = 1;
		}
		o[i].bytes = rfs_pb_out_bytes(ti);
		*total += o[i].bytes;
		if (ti->dtype != t->dtype || ti->grown_rows)
			changed = 1;
	}
	if (*nmissing)
		goto out;
	if (changed)
		ret = rfs_pb_emit_st(b, base->file_names[fi], o, f->ntensors, NULL, 1,
				     f->has_meta ? f->meta : &pt_meta, f->has_meta ? f->nmeta : 1);
	else
		ret = rfs_pb_emit_st(b, base->file_names[fi], o, f->ntensors, f, 1, NULL, 0);
out:
	free(o);
	return ret;
}

int rfs_pb_apply(struct rfs_build *b)
{
	struct rfs_plan *p = b->p;
	const struct rfs_src *base = p->src[0];
	struct rfs_strmap used[RFS_SPEC_MAX_TERMS];
	struct rfs_match dm[RFS_SPEC_MAX_TERMS];
	const char *first_missing = NULL;
	size_t i, k, nmissing = 0;
	uint64_t total = 0;
	int64_t vocab = base->vocab_size;
	int ret = 0;

	memset(used, 0, sizeof(used));
	for (k = 1; k < p->nsrc && !ret; k++) {
		ret = rfs_match_choose(base, p->src[k], &dm[k], b->err);
		if (!ret && dm[k].mode != RFS_MATCH_EXACT)
			ret = rfs_pb_note(b, "%s: names matched with the prefix '%s' %s (the base and the delta come from the model with and without its head)",
					  p->src[k]->dir, dm[k].prefix,
					  dm[k].mode == RFS_MATCH_ADD_PREFIX ? "added to the base's"
									    : "taken off the base's");
	}
	for (i = 0; i < base->nfiles && !ret; i++)
		ret = apply_file(b, i, used, dm, &total, &vocab, &nmissing, &first_missing);
	if (!ret && nmissing) {
		char list[1024] = "";

		for (k = 1; k < p->nsrc; k++) {
			size_t off = strlen(list);

			snprintf(list + off, sizeof(list) - off, "%s%s", k > 1 ? ", " : "", p->src[k]->dir);
		}
		ret = rfs_errf(b->err, RFS_E_MISMATCH,
			       "base tensor '%s' (%s) has no delta in %s%s; use --passthrough to show base tensors without a delta unchanged",
			       first_missing, base->dir, list,
			       nmissing > 1 ? " (nor do other tensors)" : "");
		if (nmissing > 1) {
			size_t off = strlen(b->err->msg);

			snprintf(b->err->msg + off, sizeof(b->err->msg) - off,
				 " [%zu base tensors without a delta]", nmissing);
		}
	}
	for (k = 1; k < p->nsrc && !ret; k++) {
		const struct rfs_src *d = p->src[k];

		for (i = 0; i < d->ntensors; i++) {
			const char *nm = d->tensors[i].t->name;
			char **g;

			if (rfs_strmap_get(&used[k], nm))
				continue;
			g = realloc(p->ignored, (p->nignored + 1) * sizeof(*g));
			if (!g || asprintf(&g[p->nignored], "%s: %s", d->dir, nm) < 0) {
				if (g)
					p->ignored = g;
				ret = rfs_pb_nomem(b);
				break;
			}
			p->ignored = g;
			p->nignored++;
			if (!strcmp(nm, "lm_head.weight") && base->tie_word_embeddings)
				rfs_pb_note(b, "%s: lm_head.weight ignored: the base ties it to the input embeddings, which the delta updates",
				     d->dir);
			else
				rfs_pb_note(b, "%s: delta tensor '%s' has no base tensor and is ignored", d->dir, nm);
		}
	}
	for (k = 0; k < RFS_SPEC_MAX_TERMS; k++)
		rfs_strmap_release(&used[k]);
	if (ret)
		return ret;
	if (base->sharded) {
		ret = rfs_pb_add_index(b, total);
		if (ret)
			return ret;
	}
	ret = rfs_pb_check_vocab(b, base, vocab, 0);
	if (!ret)
		ret = rfs_pb_add_config(b, vocab, 0);
	if (ret)
		return ret;
	ret = rfs_pb_add_chat_files(b);
	if (!ret)
		ret = rfs_pb_add_card(b);
	if (!ret)
		ret = rfs_pb_add_other_files(b, base);
	return ret;
}
