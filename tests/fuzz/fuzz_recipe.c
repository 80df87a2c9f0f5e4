/*
 * libFuzzer target for mergekit recipes (core/recipe.c, rfs_recipe_parse):
 * YAML read with libyaml's document loader, then checked key by key.  The
 * input is the recipe's text, not NUL-terminated, ending right before an
 * inaccessible page (fuzz.h), so that reads past its end fault even inside
 * the uninstrumented libyaml.
 *
 * Checks, beyond "no crash, no leak, no undefined behaviour" (and no hang:
 * aliases are walked a bounded number of times):
 *   - on failure: RFS_E_SPEC or RFS_E_NOMEM with a message, the recipe
 *     left empty;
 *   - on success: a method of enum rfs_merge_method, a base_model unless
 *     linear, 1 to RFS_RECIPE_MAX_MODELS models each with a non-empty
 *     reference without '+' (no LoRA), parameters of known names given
 *     once, every value finite, every gradient of 1 to
 *     RFS_RECIPE_MAX_GRADIENT numbers, every condition list non-empty,
 *     density in (0, 1], gamma in [0, 1], t in [0, 1] for slerp (and
 *     present somewhere), a weight for every model but the base's own
 *     entry (slerp aside), dtypes -1 or a float type, the text kept
 *     byte for byte with text_len the input's length;
 *   - rfs_recipe_param answers every name for every model (and -1) at a
 *     few layers with a finite value;
 *   - rfs_recipe_release leaves an empty recipe.
 *
 * By hand (from the repository root): tests/fuzz/build.sh (it lists the
 * sources every target links), then
 *   build-fuzz/fuzz_recipe -max_total_time=300 -dict=tests/fuzz/yaml.dict \
 *     "$(mktemp -d)" tests/fuzz/corpus/fuzz_recipe
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/recipe.h"
#include "core/st.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const names[] = {
	"weight", "density", "gamma", "lambda", "normalize", "rescale", "t", "int8_mask",
};
#define NNAMES (sizeof(names) / sizeof(*names))

static int known(const char *name)
{
	size_t i;

	for (i = 0; i < NNAMES; i++)
		if (!strcmp(names[i], name))
			return 1;
	return 0;
}

static const struct rfs_rparam *find(const struct rfs_rparams *ps, const char *name)
{
	size_t i;

	for (i = 0; i < ps->n; i++)
		if (!strcmp(ps->p[i].name, name))
			return &ps->p[i];
	return NULL;
}

/* Every number of @v is finite (and within [@lo, @hi], @lo excluded when @lo_open). */
static void check_val(const struct rfs_rval *v, const char *where, const char *name, int ranged, double lo,
		      int lo_open, double hi)
{
	size_t j, n = v->is_gradient ? v->ngrad : 1;

	CHECK(v->is_gradient == 0 || v->is_gradient == 1, "%s.%s: is_gradient %d", where, name, v->is_gradient);
	if (v->is_gradient) {
		CHECK(v->ngrad >= 1 && v->ngrad <= RFS_RECIPE_MAX_GRADIENT && v->grad, "%s.%s: a gradient of %zu",
		      where, name, v->ngrad);
	}
	for (j = 0; j < n; j++) {
		double x = v->is_gradient ? v->grad[j] : v->num;

		CHECK(isfinite(x), "%s.%s: value %zu is %g", where, name, j, x);
		if (ranged)
			CHECK(x <= hi && x >= lo && !(lo_open && x == lo), "%s.%s: %g outside %c%g, %g]", where,
			      name, x, lo_open ? '(' : '[', lo, hi);
	}
}

static void check_params(const struct rfs_recipe *r, const struct rfs_rparams *ps, const char *where)
{
	size_t i, j, c;

	CHECK(ps->n == 0 || ps->p, "%s: %zu parameters, no array", where, ps->n);
	for (i = 0; i < ps->n; i++) {
		const struct rfs_rparam *q = &ps->p[i];
		int ranged = 0, lo_open = 0;
		double lo = 0, hi = 0;

		CHECK(q->name && known(q->name), "%s: parameter '%s'", where, q->name ? q->name : "(null)");
		for (j = 0; j < i; j++)
			CHECK(strcmp(ps->p[j].name, q->name), "%s: '%s' kept twice", where, q->name);
		if (!strcmp(q->name, "density"))
			ranged = 1, lo = 0, lo_open = 1, hi = 1;
		else if (!strcmp(q->name, "gamma"))
			ranged = 1, lo = 0, hi = 1;
		else if (!strcmp(q->name, "t") && r->method == RFS_MERGE_SLERP)
			ranged = 1, lo = 0, hi = 1;
		if (!q->conditional) {
			CHECK(q->conds == NULL && q->nconds == 0, "%s.%s: plain, with %zu conditions", where, q->name,
			      q->nconds);
			check_val(&q->val, where, q->name, ranged, lo, lo_open, hi);
			continue;
		}
		CHECK(q->conditional == 1 && q->nconds >= 1 && q->conds, "%s.%s: conditional, %zu conditions", where,
		      q->name, q->nconds);
		CHECK(!q->val.is_gradient && !q->val.grad, "%s.%s: conditional with a plain value", where, q->name);
		for (c = 0; c < q->nconds; c++) {
			const char *f = q->conds[c].filter;

			/* "*" is kept as NULL: it matches everything */
			CHECK(!f || strcmp(f, "*"), "%s.%s[%zu]: filter '*' kept", where, q->name, c);
			check_val(&q->conds[c].val, where, q->name, ranged, lo, lo_open, hi);
		}
	}
}

static void check_ref(const char *ref, const char *what)
{
	CHECK(ref && *ref, "%s: an empty reference", what);
	CHECK(!strchr(ref, '+'), "%s: '%s' is a LoRA reference", what, ref);
}

static int float_dtype(int d)
{
	return d == -1 || d == RFS_DT_F32 || d == RFS_DT_BF16 || d == RFS_DT_F16;
}

static void check_recipe(const struct rfs_recipe *r, const char *text, size_t size)
{
	static const char *const tensors[] = {
		"model.embed_tokens.weight", "model.layers.3.self_attn.q_proj.weight",
		"model.layers.0.mlp.down_proj.weight", "lm_head.weight", "",
	};
	static const long layers[][2] = { { -1, 32 }, { 0, 32 }, { 15, 32 }, { 31, 32 }, { 0, 1 }, { 2, 5 } };
	char where[48];
	size_t i, n, t, l;
	int m, has_t = 0;

	CHECK((unsigned)r->method <= RFS_MERGE_SLERP, "method %d", (int)r->method);
	CHECK(strcmp(rfs_merge_method_name(r->method), "?"), "method %d has no name", (int)r->method);
	CHECK(r->nmodels >= 1 && r->nmodels <= RFS_RECIPE_MAX_MODELS, "%zu models", r->nmodels);
	if (r->method != RFS_MERGE_LINEAR)
		CHECK(r->base_model, "%s without a base_model", rfs_merge_method_name(r->method));
	if (r->base_model)
		check_ref(r->base_model, "base_model");
	for (i = 0; i < r->nmodels; i++) {
		snprintf(where, sizeof(where), "models[%zu]", i);
		check_ref(r->models[i].ref, where);
		check_params(r, &r->models[i].params, where);
		if (find(&r->models[i].params, "t"))
			has_t = 1;
		if (r->method != RFS_MERGE_SLERP && !(r->base_model && !strcmp(r->models[i].ref, r->base_model)))
			CHECK(find(&r->models[i].params, "weight") || find(&r->params, "weight"),
			      "%s (%s) has no weight", where, r->models[i].ref);
	}
	check_params(r, &r->params, "parameters");
	if (r->method == RFS_MERGE_SLERP)
		CHECK(has_t || find(&r->params, "t"), "slerp without t");
	CHECK(float_dtype(r->dtype), "dtype %d", r->dtype);
	CHECK(float_dtype(r->out_dtype), "out_dtype %d", r->out_dtype);
	CHECK(r->tokenizer_union == 0 || r->tokenizer_union == 1, "tokenizer_union %d", r->tokenizer_union);
	CHECK(r->has_seed == 0 || r->has_seed == 1, "has_seed %d", r->has_seed);
	CHECK(r->has_seed || r->random_seed == 0, "a seed %llu without has_seed", (unsigned long long)r->random_seed);
	CHECK(r->text_len == size, "text_len %zu of %zu bytes", r->text_len, size);
	CHECK(r->text && !memcmp(r->text, text, size) && r->text[size] == 0, "the text is not kept as given");
	CHECK(r->path && !strcmp(r->path, "fuzz.yml"), "path '%s'", r->path ? r->path : "(null)");

	/* the lookup answers every name, finite, wherever it is asked */
	for (m = -1; m <= (int)r->nmodels; m++)
		for (n = 0; n < NNAMES; n++)
			for (t = 0; t < sizeof(tensors) / sizeof(*tensors); t++)
				for (l = 0; l < sizeof(layers) / sizeof(*layers); l++) {
					double v = NAN;

					if (rfs_recipe_param(r, m, names[n], tensors[t], layers[l][0], layers[l][1],
							     &v))
						CHECK(isfinite(v), "model %d %s of %s at %ld/%ld: %g", m, names[n],
						      tensors[t], layers[l][0], layers[l][1], v);
				}
}

/* An empty recipe, as parse leaves it on failure and release after. */
static int empty(const struct rfs_recipe *r)
{
	return !r->nmodels && !r->base_model && !r->params.p && !r->params.n && !r->text && !r->path &&
	       !r->chat_template && !r->tokenizer_model && !r->text_len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = rfs_fuzz_guarded(data, size);
	struct rfs_recipe r;
	struct rfs_err err = { 0 };
	int ret;

	if (!text)
		return 0;
	memset(&r, 0, sizeof(r));
	ret = rfs_recipe_parse(text, size, "fuzz.yml", &r, &err);
	if (ret) {
		CHECK(ret == RFS_E_SPEC || ret == RFS_E_NOMEM, "code %d (%s)", ret, err.msg);
		CHECK(err.code == ret && err.msg[0], "code %d without a message", ret);
		CHECK(empty(&r), "refused (%s), the recipe not left empty", err.msg);
		return 0;
	}
	check_recipe(&r, text, size);
	rfs_recipe_release(&r);
	CHECK(empty(&r) && r.dtype == -1 && r.out_dtype == -1, "release left something behind");
	return 0;
}
