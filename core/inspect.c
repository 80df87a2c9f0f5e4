#include "inspect.h"
#include "plan_int.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "merge.h"
#include "tokalign.h"
#include "util.h"

enum rfs_code rfs_inspect_numbers(const struct rfs_plan *p, struct rfs_err *err)
{
	size_t i;
	int ret;

	for (i = 0; i < p->ntinfo; i++) {
		const struct rfs_comp *c = p->recipe ? p->tinfo[i].comp : NULL;

		if (c && c->merge && (ret = rfs_merge_prepare(c, err)))
			return ret;
	}
	return 0;
}

/* Which whole-tensor numbers @mc's method has (none: 0), once computed. */
static int has_numbers(const struct rfs_mcomp *mc)
{
	if (!__atomic_load_n(&mc->ready, __ATOMIC_ACQUIRE))
		return 0;
	switch (mc->method) {
	case RFS_MERGE_TIES: case RFS_MERGE_BREADCRUMBS: case RFS_MERGE_BREADCRUMBS_TIES:
	case RFS_MERGE_SLERP:
		return 1;
	case RFS_MERGE_DARE_TIES: case RFS_MERGE_DARE_LINEAR:
		return mc->rescale;
	default:
		return 0;
	}
}

/* Model @m's kept band of |delta| as text: "all", "none", ">=lo", "[lo,hi)". */
static const char *band(const struct rfs_mcomp *mc, unsigned m, char *buf, size_t len)
{
	int bc = mc->method != RFS_MERGE_TIES;

	if (mc->density[m] >= 1.0f)
		return "all";
	if (bc && !mc->lo_on[m])
		return "none";
	if (bc && mc->hi_on[m])
		snprintf(buf, len, "[%.9g,%.9g)", mc->lo[m], mc->hi[m]);
	else
		snprintf(buf, len, ">=%.9g", mc->lo[m]);
	return buf;
}

static const char *how_name(enum rfs_how h)
{
	switch (h) {
	case RFS_HOW_MERGED: return "merged";
	case RFS_HOW_PASSTHROUGH: return "passthrough";
	case RFS_HOW_CONVERTED: return "converted";
	case RFS_HOW_COMPUTED: return "computed";
	}
	return "?";
}

/* A recipe's parameters of tensor @t, as resolved for it. */
static void merge_params_text(const struct rfs_plan *p, const struct rfs_tinfo *t, FILE *out)
{
	const struct rfs_comp *c = p->recipe ? t->comp : NULL;
	const struct rfs_mcomp *mc = c ? c->merge : NULL;
	unsigned m;

	if (!mc)
		return;
	if (mc->method == RFS_MERGE_SLERP) {
		fprintf(out, "  t=%g", mc->t);
		if (has_numbers(mc) && mc->lerp)
			fprintf(out, " lerp (|cos| > 0.9995)");
		else if (has_numbers(mc))
			fprintf(out, " s0=%.9g s1=%.9g", mc->s0, mc->s1);
		if (mc->vmap)
			fprintf(out, " rows-by-token");
		return;
	}
	fprintf(out, "  w=");
	for (m = 0; m < mc->nmodels; m++)
		fprintf(out, "%s%g", m ? "," : "", mc->w[m]);
	if (mc->method != RFS_MERGE_TASK_ARITHMETIC && mc->method != RFS_MERGE_LINEAR) {
		fprintf(out, " density=");
		for (m = 0; m < mc->nmodels; m++)
			fprintf(out, "%s%g", m ? "," : "", mc->density[m]);
	}
	if (mc->lambda != 1.0f)
		fprintf(out, " lambda=%g", mc->lambda);
	if (mc->normalize && mc->method != RFS_MERGE_LINEAR)
		fprintf(out, " normalized");
	if (has_numbers(mc) && mc->method != RFS_MERGE_SLERP) {
		char b[80];
		int dare = mc->method == RFS_MERGE_DARE_TIES || mc->method == RFS_MERGE_DARE_LINEAR;

		fprintf(out, dare ? " l1_rescale=" : " kept|d|=");
		for (m = 0; m < mc->nmodels; m++) {
			if (dare)
				fprintf(out, "%s%.9g", m ? "," : "", mc->l1_scale[m]);
			else
				fprintf(out, "%s%s", m ? "," : "", band(mc, m, b, sizeof(b)));
		}
	}
	if (mc->vmap)
		fprintf(out, " rows-by-token");
}

void rfs_inspect_text(const struct rfs_plan *p, FILE *out)
{
	char spec[4096], hb[32], shp[160];
	uint64_t total = 0;
	size_t i;

	rfs_spec_format(&p->spec, spec, sizeof(spec));
	if (p->recipe)
		fprintf(out, "recipe    %s\nmode      merge: %s (mergekit recipe; the result is a model)\n",
			p->recipe->path, rfs_merge_method_name(p->recipe->method));
	else
		fprintf(out, "SPEC      %s\nmode      %s\n", spec,
			p->compute ? "compute (the result is a residuals directory)"
				   : "apply (the result is a model)");
	fprintf(out, "dtype     %s\nrounding  %s\n\nsources:\n",
		p->opts.out_dtype >= 0 ? rfs_dtype_torch_name(p->opts.out_dtype)
				       : (p->compute ? "float32" : "as the base"),
		p->opts.rounding == RFS_ROUND_CAST_FIRST ? "cast-first" : "single");
	for (i = 0; i < p->nsrc; i++)
		if (p->recipe)
			fprintf(out, "  %-9s %-12s %zu file(s), %zu tensors  %s\n",
				rfs_src_kind_name(p->src[i]->kind),
				i == 0 && p->recipe->base_model ? "(base)" : "", p->src[i]->nfiles,
				p->src[i]->ntensors, p->src[i]->dir);
		else
			fprintf(out, "  %-9s scale %-6g %zu file(s), %zu tensors  %s\n",
				rfs_src_kind_name(p->src[i]->kind), p->spec.terms[i].scale,
				p->src[i]->nfiles, p->src[i]->ntensors, p->src[i]->dir);
	for (i = 0; i < p->nsrc; i++)
		if (p->src[i]->td->resolved)
			fprintf(out, "  resolved: %s\n", p->src[i]->td->resolved);
	fprintf(out, "\nfiles:\n");
	for (i = 0; i < p->nfiles; i++) {
		rfs_human_bytes(p->files[i].size, hb, sizeof(hb));
		fprintf(out, "  %14llu  %-11s %s\n", (unsigned long long)p->files[i].size, hb,
			p->files[i].name);
		total += p->files[i].size;
	}
	rfs_human_bytes(total, hb, sizeof(hb));
	fprintf(out, "  %14llu  %-11s total\n\ntensors (terms: indices of the sources above, 0 first):\n",
		(unsigned long long)total, hb);
	for (i = 0; i < p->ntinfo; i++) {
		const struct rfs_tinfo *t = &p->tinfo[i];

		rfs_shape_str(t->shape, t->ndim, shp, sizeof(shp));
		char from[64] = "";
		unsigned k;

		for (k = 0; k < p->nsrc && k < 16; k++)
			if (t->srcmask & (1u << k)) {
				size_t off = strlen(from);

				snprintf(from + off, sizeof(from) - off, "%s%u", off ? "+" : "", k);
			}
		fprintf(out, "  %-48s %-5s %-16s %-11s terms %-6s", t->name,
			rfs_dtype_name(t->dtype), shp, how_name(t->how), from);
		if (t->grown_rows)
			fprintf(out, "  +%llu grown rows", (unsigned long long)t->grown_rows);
		fprintf(out, "  [%s]", t->file);
		merge_params_text(p, t, out);
		fprintf(out, "\n");
	}
	if (p->nignored) {
		fprintf(out, "\nignored delta keys:\n");
		for (i = 0; i < p->nignored; i++)
			fprintf(out, "  %s\n", p->ignored[i]);
	}
	if (p->nnotes) {
		fprintf(out, "\nnotes:\n");
		for (i = 0; i < p->nnotes; i++)
			fprintf(out, "  %s\n", p->notes[i]);
	}
}

static void merge_params_json(const struct rfs_plan *p, const struct rfs_tinfo *t, cJSON *o)
{
	const struct rfs_comp *c = p->recipe ? t->comp : NULL;
	const struct rfs_mcomp *mc = c ? c->merge : NULL;
	cJSON *m, *w, *d;
	unsigned k;

	if (!mc || !(m = cJSON_AddObjectToObject(o, "merge")))
		return;
	if (mc->vmap)
		cJSON_AddBoolToObject(m, "rows_by_token", 1);
	if (mc->method == RFS_MERGE_SLERP) {
		cJSON_AddNumberToObject(m, "t", mc->t);
		if (has_numbers(mc)) {
			cJSON_AddBoolToObject(m, "lerp", mc->lerp);
			cJSON_AddNumberToObject(m, "s0", mc->s0);
			cJSON_AddNumberToObject(m, "s1", mc->s1);
		}
		return;
	}
	w = cJSON_AddArrayToObject(m, "weight");
	d = cJSON_AddArrayToObject(m, "density");
	for (k = 0; k < mc->nmodels; k++) {
		cJSON_AddItemToArray(w, cJSON_CreateNumber(mc->w[k]));
		cJSON_AddItemToArray(d, cJSON_CreateNumber(mc->density[k]));
	}
	cJSON_AddNumberToObject(m, "lambda", mc->lambda);
	cJSON_AddBoolToObject(m, "normalize", mc->normalize);
	cJSON_AddBoolToObject(m, "consensus", mc->consensus);
	if (has_numbers(mc)) {
		int dare = mc->method == RFS_MERGE_DARE_TIES || mc->method == RFS_MERGE_DARE_LINEAR;
		cJSON *a = cJSON_AddArrayToObject(m, dare ? "l1_rescale" : "kept_abs_delta");

		for (k = 0; k < mc->nmodels; k++) {
			cJSON *x;

			if (dare) {
				cJSON_AddItemToArray(a, cJSON_CreateNumber(mc->l1_scale[k]));
				continue;
			}
			/* {"min": lo, "below": hi}: kept when min <= |d| (< below); null: all kept */
			if (mc->density[k] >= 1.0f) {
				cJSON_AddItemToArray(a, cJSON_CreateNull());
				continue;
			}
			x = cJSON_CreateObject();
			cJSON_AddItemToArray(a, x);
			if (mc->method != RFS_MERGE_TIES && !mc->lo_on[k]) {
				cJSON_AddBoolToObject(x, "none", 1);
				continue;
			}
			cJSON_AddNumberToObject(x, "min", mc->lo[k]);
			if (mc->method != RFS_MERGE_TIES && mc->hi_on[k])
				cJSON_AddNumberToObject(x, "below", mc->hi[k]);
		}
	}
}

enum rfs_code rfs_inspect_json(const struct rfs_plan *p, FILE *out, struct rfs_err *err)
{
	cJSON *root = cJSON_CreateObject(), *a, *o, *s;
	char spec[4096], *text;
	size_t i;
	unsigned d;

	if (!root)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	rfs_spec_format(&p->spec, spec, sizeof(spec));
	cJSON_AddStringToObject(root, "spec", spec);
	cJSON_AddStringToObject(root, "mode", p->recipe ? "merge" : p->compute ? "compute" : "apply");
	if (p->recipe) {
		cJSON_AddStringToObject(root, "recipe", p->recipe->path);
		cJSON_AddStringToObject(root, "merge_method", rfs_merge_method_name(p->recipe->method));
	}
	if (p->opts.out_dtype >= 0)
		cJSON_AddStringToObject(root, "dtype", rfs_dtype_torch_name(p->opts.out_dtype));
	else
		cJSON_AddNullToObject(root, "dtype");
	cJSON_AddStringToObject(root, "rounding",
				p->opts.rounding == RFS_ROUND_CAST_FIRST ? "cast-first" : "single");
	a = cJSON_AddArrayToObject(root, "sources");
	for (i = 0; a && i < p->nsrc; i++) {
		o = cJSON_CreateObject();
		cJSON_AddItemToArray(a, o);
		cJSON_AddStringToObject(o, "path", p->src[i]->dir);
		if (p->src[i]->td->resolved)
			cJSON_AddStringToObject(o, "resolved", p->src[i]->td->resolved);
		else
			cJSON_AddNullToObject(o, "resolved");
		cJSON_AddStringToObject(o, "kind", rfs_src_kind_name(p->src[i]->kind));
		cJSON_AddNumberToObject(o, "scale", p->spec.terms[i].scale);
		cJSON_AddNumberToObject(o, "files", (double)p->src[i]->nfiles);
		cJSON_AddNumberToObject(o, "tensors", (double)p->src[i]->ntensors);
	}
	a = cJSON_AddArrayToObject(root, "files");
	for (i = 0; a && i < p->nfiles; i++) {
		o = cJSON_CreateObject();
		cJSON_AddItemToArray(a, o);
		cJSON_AddStringToObject(o, "name", p->files[i].name);
		cJSON_AddNumberToObject(o, "size", (double)p->files[i].size);
	}
	a = cJSON_AddArrayToObject(root, "tensors");
	for (i = 0; a && i < p->ntinfo; i++) {
		const struct rfs_tinfo *t = &p->tinfo[i];

		o = cJSON_CreateObject();
		cJSON_AddItemToArray(a, o);
		cJSON_AddStringToObject(o, "name", t->name);
		cJSON_AddStringToObject(o, "file", t->file);
		cJSON_AddStringToObject(o, "dtype", rfs_dtype_name(t->dtype));
		s = cJSON_AddArrayToObject(o, "shape");
		for (d = 0; s && d < t->ndim; d++)
			cJSON_AddItemToArray(s, cJSON_CreateNumber((double)t->shape[d]));
		cJSON_AddStringToObject(o, "how", how_name(t->how));
		cJSON_AddNumberToObject(o, "terms", t->nterms);
		s = cJSON_AddArrayToObject(o, "sources");
		for (d = 0; s && d < p->nsrc && d < 16; d++)
			if (t->srcmask & (1u << d))
				cJSON_AddItemToArray(s, cJSON_CreateNumber(d));
		cJSON_AddNumberToObject(o, "grown_rows", (double)t->grown_rows);
		merge_params_json(p, t, o);
	}
	a = cJSON_AddArrayToObject(root, "ignored");
	for (i = 0; a && i < p->nignored; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(p->ignored[i]));
	a = cJSON_AddArrayToObject(root, "notes");
	for (i = 0; a && i < p->nnotes; i++)
		cJSON_AddItemToArray(a, cJSON_CreateString(p->notes[i]));
	text = cJSON_Print(root);
	cJSON_Delete(root);
	if (!text)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	if (fprintf(out, "%s\n", text) < 0 || fflush(out)) {
		free(text);
		return rfs_errsys(err, "writing the JSON");
	}
	free(text);
	return 0;
}
