/*
 * test_recipe.c - mergekit recipes (core/recipe.h): every accepted form
 * and every refusal the header documents, each refusal's message checked
 * for the key (and the model's index) it names.
 *
 * Methods (the 8 merged, mergekit's others and unknown names), base_model
 * where a method needs it, models as mappings and as bare references,
 * LoRA references, parameter values (numbers, YAML 1.1 booleans,
 * gradients, {filter, value} conditions), unknown keys, slices: and
 * tokenizer:, tokenizer_source, dtype and out_dtype, random_seed, the
 * ranges of density, gamma and t, weights, YAML documents, invalid YAML,
 * NUL bytes, the size bound, alias bombs (refused or accepted quickly, in
 * bounded memory), and rfs_recipe_load.  Then the lookup of
 * rfs_recipe_param (the model's value, else the global one; the first
 * matching condition) and rfs_rval_at's interpolation of gradients, whose
 * expected values were computed with mergekit's formula in Python:
 *   t = layer / (nlayers - 1) (1 with a single layer, 0 with no layer)
 *   scaled = t * (n - 1); i0 = int(scaled)
 *   v = (1 - frac) * L[i0] + frac * L[min(n - 1, i0 + 1)]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/recipe.h"
#include "core/st.h"

#define PATH "r.yml"

/* ---------------------------------------------------------------- helpers */

/* printf into one of a few rotating buffers (valid for the next 7 calls). */
static const char *F(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *F(const char *fmt, ...)
{
	static char bufs[8][16384];
	static unsigned next;
	char *b = bufs[next++ % 8];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b, sizeof(bufs[0]), fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(bufs[0]));
	return b;
}

/* @text (@len bytes) must parse; the text is kept as given. */
static void ok_n(const char *text, size_t len, struct rfs_recipe *r)
{
	struct rfs_err err = { 0 };
	int ret;

	memset(r, 0, sizeof(*r));
	ret = rfs_recipe_parse(text, len, PATH, r, &err);
	if (ret)
		fail_msg("refused (%d): %s\n--- the recipe:\n%.2000s", ret, err.msg, text);
	assert_int_equal(r->text_len, len);
	assert_non_null(r->text);
	assert_memory_equal(r->text, text, len);
	assert_int_equal(r->text[len], 0);
	assert_string_equal(r->path, PATH);
	assert_true(r->nmodels >= 1 && r->nmodels <= RFS_RECIPE_MAX_MODELS);
}

static void ok(const char *text, struct rfs_recipe *r)
{
	ok_n(text, strlen(text), r);
}

/* Parses and releases at once. */
static void ok_only(const char *text)
{
	struct rfs_recipe r;

	ok(text, &r);
	rfs_recipe_release(&r);
}

/* @text (@len bytes) must be refused with RFS_E_SPEC, leaving the recipe
 * empty, and a message that names the file and holds every string of the
 * NULL-terminated list @ap. */
static void bad_v(const char *text, size_t len, va_list ap)
{
	struct rfs_recipe r;
	struct rfs_err err = { 0 };
	const char *want;
	int ret;

	memset(&r, 0, sizeof(r));
	ret = rfs_recipe_parse(text, len, PATH, &r, &err);
	if (!ret) {
		rfs_recipe_release(&r);
		fail_msg("accepted:\n%.2000s", text);
	}
	if (ret != RFS_E_SPEC)
		fail_msg("code %d, not RFS_E_SPEC (%s)\n--- the recipe:\n%.2000s", ret, err.msg, text);
	assert_int_equal(err.code, RFS_E_SPEC);
	if (strncmp(err.msg, PATH, strlen(PATH)))
		fail_msg("the message does not name the file: %s", err.msg);
	while ((want = va_arg(ap, const char *)))
		if (!strstr(err.msg, want))
			fail_msg("message '%s' lacks '%s'\n--- the recipe:\n%.2000s", err.msg, want, text);
	/* "On failure @out is left empty" */
	assert_int_equal(r.nmodels, 0);
	assert_null(r.base_model);
	assert_null(r.text);
	assert_null(r.params.p);
	assert_null(r.chat_template);
	rfs_recipe_release(&r);
}

static void bad_n_(const char *text, size_t len, ...)
{
	va_list ap;

	va_start(ap, len);
	bad_v(text, len, ap);
	va_end(ap);
}

static void bad_(const char *text, ...)
{
	va_list ap;

	va_start(ap, text);
	bad_v(text, strlen(text), ap);
	va_end(ap);
}

/* BAD(text, "substring", ...): refused, the message holding each substring. */
#define BAD(text, ...) bad_((text), __VA_ARGS__, (const char *)NULL)
#define BAD_N(text, len, ...) bad_n_((text), (len), __VA_ARGS__, (const char *)NULL)

static const struct rfs_rparam *param(const struct rfs_rparams *ps, const char *name)
{
	size_t i;

	for (i = 0; i < ps->n; i++)
		if (!strcmp(ps->p[i].name, name))
			return &ps->p[i];
	return NULL;
}

/* A plain (not conditional, not gradient) value of @name in @ps. */
static double num(const struct rfs_rparams *ps, const char *name)
{
	const struct rfs_rparam *q = param(ps, name);

	if (!q)
		fail_msg("no parameter %s", name);
	assert_false(q->conditional);
	assert_false(q->val.is_gradient);
	return q->val.num;
}

/* A recipe of one model m with parameter line @params (flow style). */
static const char *one(const char *method, const char *params)
{
	return F("merge_method: %s\nbase_model: base\nmodels:\n  - model: m\n    parameters: %s\n", method,
		 params);
}

static const char *const methods8[] = {
	"task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "linear", "slerp",
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long maxrss_kb(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return u.ru_maxrss;
}

/* ---------------------------------------------------------------- methods */

static void test_methods(void **state)
{
	static const enum rfs_merge_method want[] = {
		RFS_MERGE_TASK_ARITHMETIC, RFS_MERGE_TIES, RFS_MERGE_DARE_TIES, RFS_MERGE_DARE_LINEAR,
		RFS_MERGE_BREADCRUMBS, RFS_MERGE_BREADCRUMBS_TIES, RFS_MERGE_LINEAR, RFS_MERGE_SLERP,
	};
	struct rfs_recipe r;
	size_t i;

	(void)state;
	for (i = 0; i < 8; i++) {
		ok(F("merge_method: %s\n"
		     "base_model: org/base\n"
		     "models:\n"
		     "  - model: org/a\n"
		     "    parameters:\n"
		     "      weight: 0.5\n"
		     "      density: 0.5\n"
		     "      t: 0.5\n",
		     methods8[i]),
		   &r);
		assert_int_equal(r.method, want[i]);
		assert_string_equal(rfs_merge_method_name(r.method), methods8[i]);
		assert_string_equal(r.base_model, "org/base");
		assert_int_equal(r.nmodels, 1);
		assert_string_equal(r.models[0].ref, "org/a");
		assert_int_equal(r.models[0].params.n, 3);
		assert_true(num(&r.models[0].params, "weight") == 0.5);
		assert_int_equal(r.params.n, 0);
		assert_int_equal(r.dtype, -1);
		assert_int_equal(r.out_dtype, -1);
		assert_int_equal(r.tokenizer_union, 0);
		assert_null(r.chat_template);
		assert_int_equal(r.has_seed, 0);
		rfs_recipe_release(&r);
	}
	assert_string_equal(rfs_merge_method_name((enum rfs_merge_method)99), "?");

	/* linear needs no base_model; its weights may be global */
	ok("merge_method: linear\nmodels:\n  - model: a\n  - model: b\nparameters:\n  weight: 0.5\n", &r);
	assert_int_equal(r.method, RFS_MERGE_LINEAR);
	assert_null(r.base_model);
	assert_int_equal(r.nmodels, 2);
	assert_true(num(&r.params, "weight") == 0.5);
	rfs_recipe_release(&r);
}

static void test_methods_refused(void **state)
{
	static const char *const other[] = {
		"passthrough", "model_stock", "della", "della_linear", "nuslerp", "nearswap", "sce",
		"karcher", "arcee_fusion", "multislerp",
	};
	static const char *const unknown[] = { "frobnicate", "TIES", "Linear", "task-arithmetic", "''", "'slerp '" };
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(other) / sizeof(*other); i++)
		BAD(one(other[i], "{weight: 1}"), F("merge_method '%s' is not supported", other[i]),
		    "task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, linear and slerp");
	for (i = 0; i < sizeof(unknown) / sizeof(*unknown); i++)
		BAD(one(unknown[i], "{weight: 1}"), "merge_method '", "' is unknown");
	BAD(one("frobnicate", "{weight: 1}"), "merge_method 'frobnicate' is unknown");
	BAD("base_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n", "merge_method is missing");
	BAD("merge_method:\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n",
	    "merge_method is missing");
	BAD("merge_method: [ties]\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n",
	    "merge_method is a list, not a string");
	BAD("merge_method: {ties: 1}\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n",
	    "merge_method is a mapping, not a string");
}

static void test_base_model(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < 8; i++) {
		const char *m = methods8[i];

		if (!strcmp(m, "linear"))
			continue;
		BAD(F("merge_method: %s\nmodels:\n  - model: a\n    parameters: {weight: 1, t: 0.5}\n", m),
		    F("merge_method %s needs a base_model", m));
		BAD(F("merge_method: %s\nbase_model: null\nmodels:\n  - model: a\n    parameters: {weight: 1, t: 0.5}\n",
		      m),
		    F("merge_method %s needs a base_model", m));
		BAD(F("merge_method: %s\nbase_model: ~\nmodels:\n  - model: a\n    parameters: {weight: 1, t: 0.5}\n", m),
		    F("merge_method %s needs a base_model", m));
	}
	BAD("merge_method: ties\nbase_model: [a]\nmodels:\n  - model: a\n    parameters: {weight: 1}\n",
	    "base_model is a list, not a string");
	BAD("merge_method: ties\nbase_model: ''\nmodels:\n  - model: a\n    parameters: {weight: 1}\n",
	    "base_model: an empty model reference");
}

/* ---------------------------------------------------------------- models */

static void test_models_forms(void **state)
{
	struct rfs_recipe r;
	size_t i;
	char text[4096];
	int n;

	(void)state;
	/* mappings, bare references, and the forms of a reference */
	ok("merge_method: ties\n"
	   "base_model: hf://org/base@v1.0\n"
	   "models:\n"
	   "  - model: org/instruct@main\n"
	   "    parameters:\n"
	   "      weight: 1\n"
	   "  - ./local/dir\n"
	   "  - model: hf://org/base@v1.0\n"
	   "  - model: /abs/path\n"
	   "    parameters: null\n"
	   "  - \"quoted/ref\"\n"
	   "  - {model: 'flow/ref', parameters: {weight: 0.25}}\n"
	   "parameters:\n"
	   "  weight: 0.5\n",
	   &r);
	assert_int_equal(r.nmodels, 6);
	assert_string_equal(r.base_model, "hf://org/base@v1.0");
	assert_string_equal(r.models[0].ref, "org/instruct@main");
	assert_true(num(&r.models[0].params, "weight") == 1);
	assert_string_equal(r.models[1].ref, "./local/dir");
	assert_int_equal(r.models[1].params.n, 0);
	assert_string_equal(r.models[2].ref, "hf://org/base@v1.0");
	assert_int_equal(r.models[2].params.n, 0);
	assert_string_equal(r.models[3].ref, "/abs/path");
	assert_int_equal(r.models[3].params.n, 0);
	assert_string_equal(r.models[4].ref, "quoted/ref");
	assert_string_equal(r.models[5].ref, "flow/ref");
	assert_true(num(&r.models[5].params, "weight") == 0.25);
	assert_true(num(&r.params, "weight") == 0.5);
	rfs_recipe_release(&r);

	/* a number as a reference is its text */
	ok("merge_method: linear\nmodels: [{model: 123, parameters: {weight: 1}}]\n", &r);
	assert_string_equal(r.models[0].ref, "123");
	rfs_recipe_release(&r);

	/* 15 models, and no more */
	n = snprintf(text, sizeof(text), "merge_method: linear\nparameters: {weight: 1}\nmodels:\n");
	for (i = 0; i < RFS_RECIPE_MAX_MODELS; i++)
		n += snprintf(text + n, sizeof(text) - (size_t)n, "  - model: m%zu\n", i);
	ok(text, &r);
	assert_int_equal(r.nmodels, RFS_RECIPE_MAX_MODELS);
	assert_string_equal(r.models[14].ref, "m14");
	rfs_recipe_release(&r);
	snprintf(text + n, sizeof(text) - (size_t)n, "  - model: m15\n");
	BAD(text, "more than 15 models");

	/* refusals, naming the model's index */
	BAD("merge_method: linear\nparameters: {weight: 1}\n", "models is missing");
	BAD("merge_method: linear\nmodels:\nparameters: {weight: 1}\n", "models is a scalar, not a list");
	BAD("merge_method: linear\nmodels: a\nparameters: {weight: 1}\n", "models is a scalar, not a list");
	BAD("merge_method: linear\nmodels: {model: a}\nparameters: {weight: 1}\n", "models is a mapping, not a list");
	BAD("merge_method: linear\nmodels: []\nparameters: {weight: 1}\n", "models is empty");
	BAD("merge_method: linear\nmodels:\n  - a\n  - [b]\nparameters: {weight: 1}\n",
	    "models[1] is a list, not a mapping");
	BAD("merge_method: linear\nmodels:\n  - a\n  - parameters: {weight: 1}\n", "models[1] has no model");
	BAD("merge_method: linear\nmodels:\n  - model: null\nparameters: {weight: 1}\n", "models[0] has no model");
	BAD("merge_method: linear\nmodels:\n  - model:\nparameters: {weight: 1}\n", "models[0] has no model");
	BAD("merge_method: linear\nmodels:\n  - a\n  - ~\nparameters: {weight: 1}\n", "models[1] has no model");
	BAD("merge_method: linear\nmodels:\n  - model: [a]\nparameters: {weight: 1}\n", "models[0] has no model");
	BAD("merge_method: linear\nmodels:\n  - model: ''\nparameters: {weight: 1}\n",
	    "models[0]: an empty model reference");
	/* weight: beside model: rather than under parameters: */
	BAD("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n  - model: b\n    weight: 1\n",
	    "models[1]: unknown key 'weight'");
	BAD("merge_method: linear\nmodels:\n  - {model: a, parameters: 1}\n",
	    "models[0].parameters is a scalar, not a mapping");
	BAD("merge_method: linear\nmodels:\n  - {model: a, parameters: [weight]}\n",
	    "models[0].parameters is a list, not a mapping");
}

static void test_lora(void **state)
{
	(void)state;
	BAD("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
	    "  - model: org/model+org/lora\n    parameters: {weight: 1}\n",
	    "models[1]: 'org/model+org/lora' names a LoRA ('MODEL+LORA'), which residfs does not merge");
	BAD("merge_method: linear\nmodels:\n  - a+b\nparameters: {weight: 1}\n", "models[0]: 'a+b' names a LoRA");
	BAD("merge_method: ties\nbase_model: base+lora\nmodels:\n  - model: a\n    parameters: {weight: 1}\n",
	    "base_model: 'base+lora' names a LoRA");
	BAD("merge_method: linear\nmodels:\n  - model: +\nparameters: {weight: 1}\n", "models[0]: '+' names a LoRA");
}

/* ---------------------------------------------------------------- values */

static void test_numbers(void **state)
{
	static const struct {
		const char *text;
		double v;
	} good[] = {
		{ "1", 1 }, { "0", 0 }, { "0.5", 0.5 }, { "-0.25", -0.25 }, { "+2", 2 }, { ".5", 0.5 },
		{ "1e-3", 1e-3 }, { "1.5E+2", 150 }, { "-0", 0 }, { "1e308", 1e308 },
	};
	static const char *const refused[] = {
		"'0.5'", "\"0.5\"", "'1'", "abc", "0x10", "0X1p3", "inf", ".inf", "nan", ".nan", "-inf",
		"1e999", "1.5.2", "1 5", "~", "null", "''", "!!float '1'",
	};
	struct rfs_recipe r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(*good); i++) {
		ok(one("linear", F("{weight: %s}", good[i].text)), &r);
		assert_true(num(&r.models[0].params, "weight") == good[i].v);
		rfs_recipe_release(&r);
	}
	for (i = 0; i < sizeof(refused) / sizeof(*refused); i++)
		BAD(one("linear", F("{weight: %s}", refused[i])), "models[0].parameters.weight is ",
		    ", not a number, a boolean or a gradient");
	/* the message quotes the text, or names the kind */
	BAD(one("linear", "{weight: '0.5'}"), "models[0].parameters.weight is '0.5', not a number");
	BAD(one("linear", "{weight: abc}"), "models[0].parameters.weight is 'abc', not a number");
	BAD(one("linear", "{weight: {a: 1}}"), "models[0].parameters.weight is a mapping, not a number");
	BAD(one("linear", "{weight: }"), "models[0].parameters.weight is '', not a number");
	BAD(F("merge_method: linear\nmodels: [a]\nparameters: {weight: \"1\"}\n"),
	    "r.yml: parameters.weight is '1', not a number");
	/* an empty block value */
	BAD("merge_method: linear\nmodels: [a]\nparameters:\n  weight:\n", "parameters.weight is '', not a number");
}

static void test_booleans(void **state)
{
	static const char *const yes[] = { "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON" };
	static const char *const no[] = { "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF" };
	struct rfs_recipe r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(yes) / sizeof(*yes); i++) {
		ok(F("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n"
		     "parameters:\n  normalize: %s\n  int8_mask: %s\n  rescale: %s\n",
		     yes[i], no[i], yes[i]),
		   &r);
		assert_true(num(&r.params, "normalize") == 1);
		assert_true(num(&r.params, "int8_mask") == 0);
		assert_true(num(&r.params, "rescale") == 1);
		rfs_recipe_release(&r);
	}
	/* booleans in a gradient and as a condition's value */
	ok(one("linear", "{weight: 1, normalize: [true, false, on]}"), &r);
	{
		const struct rfs_rparam *q = param(&r.models[0].params, "normalize");

		assert_non_null(q);
		assert_true(q->val.is_gradient);
		assert_int_equal(q->val.ngrad, 3);
		assert_true(q->val.grad[0] == 1 && q->val.grad[1] == 0 && q->val.grad[2] == 1);
	}
	rfs_recipe_release(&r);
	ok(one("linear", "{weight: 1, normalize: [{filter: mlp, value: yes}, {value: no}]}"), &r);
	{
		const struct rfs_rparam *q = param(&r.models[0].params, "normalize");

		assert_non_null(q);
		assert_true(q->conditional);
		assert_true(q->conds[0].val.num == 1 && q->conds[1].val.num == 0);
	}
	rfs_recipe_release(&r);
	/* quoted, they are strings */
	BAD(one("linear", "{weight: 1, normalize: 'true'}"), "models[0].parameters.normalize is 'true', not a number");
	BAD(one("linear", "{weight: 1, normalize: \"no\"}"), "models[0].parameters.normalize is 'no', not a number");
	BAD(one("linear", "{weight: 1, normalize: maybe}"), "models[0].parameters.normalize is 'maybe'");
	/* PyYAML's set exactly: y, n and mixed case are strings there */
	BAD(one("linear", "{weight: y}"), "models[0].parameters.weight is 'y'");
	BAD(one("linear", "{weight: 1, normalize: tRuE}"), "normalize is 'tRuE'");
	BAD(one("linear", "{weight: 1, normalize: N}"), "normalize is 'N'");
	/* decimal numbers only */
	BAD(one("linear", "{weight: -0x10}"), "weight is '-0x10'");
	BAD(one("linear", "{weight: -0x1p3}"), "weight is '-0x1p3'");
	BAD(one("linear", "{weight: -inf}"), "weight is '-inf'");
}

static void test_duplicate_keys(void **state)
{
	(void)state;
	/* YAML readers differ on a repeated key (PyYAML keeps the last): refused */
	BAD("merge_method: ties\nmerge_method: linear\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n",
	    "the recipe: 'merge_method' given twice");
	BAD("merge_method: linear\nmodels: [{model: a, model: c, parameters: {weight: 1}}]\n",
	    "models[0]: 'model' given twice");
	BAD("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\nparameters: {}\nparameters: {}\n",
	    "'parameters' given twice");
	BAD(one("linear", "{weight: [{filter: a, filter: b, value: 1}]}"), "'filter' given twice");
}

static void test_walk_limit_everywhere(void **state)
{
	/* a recipe that spends the walk's budget on shared gradients, then more keys:
	 * refused as too large wherever the budget runs out, never a crash or a
	 * silently dropped key */
	char *g = malloc(1024 * 3 + 8), *head, *text;
	size_t i, n = 0;

	(void)state;
	assert_non_null(g);
	n += (size_t)sprintf(g + n, "[");
	for (i = 0; i < 1024; i++)
		n += (size_t)sprintf(g + n, i ? ", 1" : "1");
	sprintf(g + n, "]");
	head = malloc(200000);
	assert_non_null(head);
	n = (size_t)sprintf(head, "merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: [{value: &g %s}", g);
	for (i = 0; i < 96; i++)
		n += (size_t)sprintf(head + n, ", {value: *g}");
	sprintf(head + n, "]\n");
	text = malloc(400000);
	assert_non_null(text);
	for (i = 150; i < 162; i++) {
		size_t j, m = (size_t)sprintf(text, "%sparameters: {", head);

		for (j = 0; j < i; j++)
			m += (size_t)sprintf(text + m, j ? ", t: 1" : "t: 1");
		sprintf(text + m, "}\n");
		BAD(text, "r.yml");
	}
	for (i = 120; i < 134; i++) {
		size_t j, m = (size_t)sprintf(text, "%sparameters: {lambda: [", head);

		for (j = 0; j < i; j++)
			m += (size_t)sprintf(text + m, j ? ", 1" : "1");
		sprintf(text + m, "]}\nrandom_seed: 42\n");
		{
			struct rfs_recipe r;
			struct rfs_err err = { 0 };

			memset(&r, 0, sizeof(r));
			if (!rfs_recipe_parse(text, strlen(text), "r.yml", &r, &err)) {
				assert_true(r.has_seed && r.random_seed == 42);
				rfs_recipe_release(&r);
			}
		}
	}
	free(text);
	free(head);
	free(g);
}

static void test_gradients(void **state)
{
	struct rfs_recipe r;
	const struct rfs_rparam *q;
	static char text[(RFS_RECIPE_MAX_GRADIENT + 1) * 8 + 256];
	char *p;
	size_t i, n;

	(void)state;
	ok(one("linear", "{weight: [0, 0.5, 1], density: [0.25]}"), &r);
	q = param(&r.models[0].params, "weight");
	assert_non_null(q);
	assert_false(q->conditional);
	assert_true(q->val.is_gradient);
	assert_int_equal(q->val.ngrad, 3);
	assert_true(q->val.grad[0] == 0 && q->val.grad[1] == 0.5 && q->val.grad[2] == 1);
	q = param(&r.models[0].params, "density");
	assert_true(q->val.is_gradient);
	assert_int_equal(q->val.ngrad, 1);
	assert_true(q->val.grad[0] == 0.25);
	rfs_recipe_release(&r);

	/* block style */
	ok("merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight:\n        - 0.1\n        - 0.9\n",
	   &r);
	q = param(&r.models[0].params, "weight");
	assert_true(q->val.is_gradient && q->val.ngrad == 2 && q->val.grad[1] == 0.9);
	rfs_recipe_release(&r);

	BAD(one("linear", "{weight: []}"), "models[0].parameters.weight: a gradient needs 1 to 1024 numbers, not 0");
	BAD("merge_method: linear\nmodels: [a]\nparameters: {weight: []}\n",
	    "r.yml: parameters.weight: a gradient needs 1 to 1024 numbers, not 0");
	BAD(one("linear", "{weight: [1, x, 2]}"),
	    "models[0].parameters.weight: gradient element 1 is 'x', not a number");
	BAD(one("linear", "{weight: [1, '2']}"), "models[0].parameters.weight: gradient element 1 is '2', not a number");
	BAD(one("linear", "{weight: [1, [2]]}"), "models[0].parameters.weight: gradient element 1 is a list, not a number");
	BAD(one("linear", "{weight: [1, {filter: a, value: 1}]}"),
	    "models[0].parameters.weight: gradient element 1 is a mapping, not a number");
	BAD(one("linear", "{weight: [1, .nan]}"), "gradient element 1 is '.nan', not a number");

	/* 1024 numbers, and 1025 */
	for (n = RFS_RECIPE_MAX_GRADIENT; n <= RFS_RECIPE_MAX_GRADIENT + 1; n++) {
		p = text + sprintf(text, "merge_method: linear\nmodels: [a]\nparameters:\n  weight: [");
		for (i = 0; i < n; i++)
			p += sprintf(p, "%s%zu", i ? ", " : "", i);
		sprintf(p, "]\n");
		if (n == RFS_RECIPE_MAX_GRADIENT) {
			ok(text, &r);
			q = param(&r.params, "weight");
			assert_true(q->val.is_gradient);
			assert_int_equal(q->val.ngrad, n);
			for (i = 0; i < n; i++)
				assert_true(q->val.grad[i] == (double)i);
			rfs_recipe_release(&r);
		} else {
			BAD(text, "parameters.weight: a gradient needs 1 to 1024 numbers, not 1025");
		}
	}
}

static void test_conditions(void **state)
{
	struct rfs_recipe r;
	const struct rfs_rparam *q;

	(void)state;
	ok("merge_method: ties\n"
	   "base_model: b\n"
	   "models:\n"
	   "  - model: a\n"
	   "    parameters:\n"
	   "      weight:\n"
	   "        - filter: self_attn\n"
	   "          value: 0.5\n"
	   "        - filter: mlp\n"
	   "          value: [0, 1]\n"
	   "        - filter: '*'\n"
	   "          value: 0.25\n"
	   "        - value: 0.125\n"
	   "        - filter: null\n"
	   "          value: 2\n"
	   "        - filter: ~\n"
	   "          value: 3\n"
	   "        - filter:\n"
	   "          value: 4\n"
	   "        - {value: 5, filter: embed_tokens}\n",
	   &r);
	q = param(&r.models[0].params, "weight");
	assert_non_null(q);
	assert_true(q->conditional);
	assert_int_equal(q->nconds, 8);
	assert_string_equal(q->conds[0].filter, "self_attn");
	assert_false(q->conds[0].val.is_gradient);
	assert_true(q->conds[0].val.num == 0.5);
	assert_string_equal(q->conds[1].filter, "mlp");
	assert_true(q->conds[1].val.is_gradient);
	assert_int_equal(q->conds[1].val.ngrad, 2);
	assert_true(q->conds[1].val.grad[0] == 0 && q->conds[1].val.grad[1] == 1);
	/* '*', no filter and a null filter all match everything: NULL */
	assert_null(q->conds[2].filter);
	assert_true(q->conds[2].val.num == 0.25);
	assert_null(q->conds[3].filter);
	assert_true(q->conds[3].val.num == 0.125);
	assert_null(q->conds[4].filter);
	assert_null(q->conds[5].filter);
	assert_null(q->conds[6].filter);
	assert_true(q->conds[6].val.num == 4);
	assert_string_equal(q->conds[7].filter, "embed_tokens");
	assert_true(q->conds[7].val.num == 5);
	rfs_recipe_release(&r);

	/* a quoted '*' and a literal '**' */
	ok(one("linear", "{weight: [{filter: \"*\", value: 1}, {filter: '**', value: 2}]}"), &r);
	q = param(&r.models[0].params, "weight");
	assert_null(q->conds[0].filter);
	assert_string_equal(q->conds[1].filter, "**");
	rfs_recipe_release(&r);

	/* refusals, naming the model, the parameter and the condition */
	BAD(one("linear", "{weight: [{filter: a, value: 1}, {filter: b}]}"),
	    "models[0].parameters.weight[1] has no value");
	BAD(one("linear", "{weight: [{filter: a, value: 1}, {filter: b, valu: 1}]}"),
	    "models[0].parameters.weight[1]: unknown key 'valu'");
	BAD(one("linear", "{weight: [{filter: [a], value: 1}]}"),
	    "models[0].parameters.weight[0].filter is a list, not a name");
	BAD(one("linear", "{weight: [{filter: {a: b}, value: 1}]}"),
	    "models[0].parameters.weight[0].filter is a mapping, not a name");
	BAD(one("linear", "{weight: [{filter: a, value: x}]}"),
	    "models[0].parameters.weight[0].value is 'x', not a number");
	BAD(one("linear", "{weight: [{filter: a, value: []}]}"),
	    "models[0].parameters.weight[0].value: a gradient needs 1 to 1024 numbers, not 0");
	BAD(one("linear", "{weight: [{filter: a, value: [1, z]}]}"),
	    "models[0].parameters.weight[0].value: gradient element 1 is 'z', not a number");
	BAD(one("linear", "{weight: [{filter: a, value: 1}, 2]}"),
	    "models[0].parameters.weight[1] is a scalar: conditions are {filter, value} mappings");
	BAD(one("linear", "{weight: [{filter: a, value: 1}, [2]]}"),
	    "models[0].parameters.weight[1] is a list: conditions are {filter, value} mappings");
	BAD(one("linear", "{weight: [{value: [{value: 1}]}]}"),
	    "models[0].parameters.weight[0].value: gradient element 0 is a mapping, not a number");
	BAD(one("linear", "{weight: [{[a]: 1, value: 1}]}"), "models[0].parameters.weight[0]: a key is a list, not a name");
	BAD("merge_method: linear\nmodels: [a, b]\nparameters:\n  weight:\n    - {filter: x, value: 1}\n"
	    "    - {filter: y, value: 2, other: 3}\n",
	    "r.yml: parameters.weight[1]: unknown key 'other'");
	/* the second model's index */
	BAD("merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1}}\n"
	    "  - {model: b, parameters: {weight: [{filter: x}]}}\n",
	    "models[1].parameters.weight[0] has no value");
}

static void test_param_names(void **state)
{
	struct rfs_recipe r;

	(void)state;
	/* every name mergekit's methods take */
	ok("merge_method: ties\nbase_model: b\nmodels:\n  - model: a\n    parameters:\n"
	   "      weight: 1\n      density: 0.5\n      gamma: 0.01\n      lambda: 1.5\n      normalize: true\n"
	   "      rescale: false\n      t: 0.5\n      int8_mask: true\n"
	   "parameters: {weight: 0.5, density: 1, gamma: 0, lambda: 1, normalize: 0, rescale: 1, t: 1, int8_mask: 0}\n",
	   &r);
	assert_int_equal(r.models[0].params.n, 8);
	assert_int_equal(r.params.n, 8);
	assert_true(num(&r.models[0].params, "gamma") == 0.01);
	assert_true(num(&r.models[0].params, "lambda") == 1.5);
	assert_true(num(&r.params, "density") == 1);
	rfs_recipe_release(&r);

	/* parameters: null and {} are none */
	ok("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\nparameters:\n", &r);
	assert_int_equal(r.params.n, 0);
	rfs_recipe_release(&r);
	ok("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\nparameters: {}\n", &r);
	assert_int_equal(r.params.n, 0);
	rfs_recipe_release(&r);

	BAD(one("linear", "{weight: 1, epsilon: 0.1}"), "models[0].parameters: unknown key 'epsilon'");
	BAD(one("linear", "{weights: 1}"), "models[0].parameters: unknown key 'weights'");
	BAD(one("linear", "{Weight: 1}"), "models[0].parameters: unknown key 'Weight'");
	BAD("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\nparameters: {lamda: 1}\n",
	    "r.yml: parameters: unknown key 'lamda'");
	BAD("merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1}}\n"
	    "  - {model: b, parameters: {weight: 1, select_topk: 0.5}}\n",
	    "models[1].parameters: unknown key 'select_topk'");
	BAD("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\nparameters: [weight]\n",
	    "r.yml: parameters is a list, not a mapping");
	BAD("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\nparameters: 1\n",
	    "r.yml: parameters is a scalar, not a mapping");
	BAD(one("linear", "{weight: 1, [t]: 1}"), "models[0].parameters: a key is a list, not a name");

	/* a parameter given twice */
	BAD(one("linear", "{weight: 1, density: 0.5, weight: 2}"), "models[0].parameters: 'weight' given twice");
	BAD("merge_method: linear\nmodels: [a]\nparameters:\n  weight: 1\n  weight: [1, 2]\n",
	    "r.yml: parameters: 'weight' given twice");
	BAD("merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1}}\n"
	    "  - model: b\n    parameters:\n      t: 1\n      t: 1\n",
	    "models[1].parameters: 't' given twice");
}

/* ---------------------------------------------------------------- the rest */

static void test_top_keys(void **state)
{
	static const char *const base = "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n";
	struct rfs_recipe r;

	(void)state;
	/* name: and chat_template: */
	ok(F("%sname: my-merge\nchat_template: chatml\n", base), &r);
	assert_string_equal(r.chat_template, "chatml");
	rfs_recipe_release(&r);
	ok(F("%schat_template: \"{%% for m in messages %%}{{ m.content }}{%% endfor %%}\"\n", base), &r);
	assert_string_equal(r.chat_template, "{% for m in messages %}{{ m.content }}{% endfor %}");
	rfs_recipe_release(&r);
	ok(F("%schat_template: null\n", base), &r);
	assert_null(r.chat_template);
	rfs_recipe_release(&r);
	BAD(F("%schat_template: [a]\n", base), "chat_template is a list, not a string");
	BAD(F("%stokenizer_source: {a: 1}\n", base), "tokenizer_source is a mapping, not a string");

	/* unknown keys, by name */
	BAD(F("%smerge_methods: ties\n", base), "the recipe: unknown key 'merge_methods'");
	BAD(F("%sbase_models: a\n", base), "the recipe: unknown key 'base_models'");
	BAD(F("%sparameter: {weight: 1}\n", base), "the recipe: unknown key 'parameter'");
	BAD(F("%sMODELS: []\n", base), "the recipe: unknown key 'MODELS'");
	BAD(F("%s[a]: 1\n", base), "the recipe: a key is a list, not a name");
	BAD(F("%s? {a: 1}\n: 1\n", base), "the recipe: a key is a mapping, not a name");
	/* a merge key is no known key either */
	BAD(F("%s<<: {name: x}\n", base), "the recipe: unknown key '<<'");

	/* slices: and tokenizer:, with and without models: */
	BAD(F("%sslices:\n  - sources:\n      - model: a\n        layer_range: [0, 16]\n", base),
	    "r.yml: slices: layer-range merges (frankenmerges) are not supported; use models:");
	BAD("merge_method: passthrough\nslices:\n  - sources:\n      - model: a\n        layer_range: [0, 16]\n",
	    "slices: layer-range merges (frankenmerges) are not supported; use models:");
	BAD(F("%sslices:\n", base), "slices: layer-range merges");
	BAD(F("%stokenizer:\n  source: union\n", base),
	    "r.yml: tokenizer: is not supported; use tokenizer_source: base, union or a model");
	BAD(F("%stokenizer: null\n", base), "tokenizer: is not supported");

	/* not a mapping */
	BAD("", "a recipe is a YAML mapping (merge_method, models, ...), not nothing");
	BAD("# only a comment\n", "a recipe is a YAML mapping", "not nothing");
	BAD("- merge_method: linear\n", "a recipe is a YAML mapping", "not a list");
	BAD("linear\n", "a recipe is a YAML mapping", "not a scalar");
}

static void test_tokenizer_source(void **state)
{
	static const char *const base = "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n";
	struct rfs_recipe r;

	(void)state;
	ok(F("%stokenizer_source: base\n", base), &r);
	assert_int_equal(r.tokenizer_union, 0);
	rfs_recipe_release(&r);
	ok(F("%stokenizer_source: union\n", base), &r);
	assert_int_equal(r.tokenizer_union, 1);
	rfs_recipe_release(&r);
	ok(F("%stokenizer_source:\n", base), &r);
	assert_int_equal(r.tokenizer_union, 0);
	assert_null(r.tokenizer_model);
	rfs_recipe_release(&r);
	/* anything else names a model: the plan checks it is one of the recipe's */
	ok(F("%stokenizer_source: org/a\n", base), &r);
	assert_string_equal(r.tokenizer_model, "org/a");
	assert_int_equal(r.tokenizer_given, 1);
	rfs_recipe_release(&r);
	ok(F("%stokenizer_source: Union\n", base), &r);
	assert_string_equal(r.tokenizer_model, "Union");
	rfs_recipe_release(&r);
}

static void test_dtypes(void **state)
{
	static const struct {
		const char *name;
		int dt;
	} good[] = {
		{ "float32", RFS_DT_F32 }, { "bfloat16", RFS_DT_BF16 }, { "float16", RFS_DT_F16 },
		{ "bf16", RFS_DT_BF16 },   { "fp16", RFS_DT_F16 },      { "fp32", RFS_DT_F32 },
	};
	static const struct {
		const char *text, *shown;
	} refused[] = {
		{ "float64", "float64" }, { "int8", "int8" }, { "fp8", "fp8" }, { "'float 32'", "float 32" },
		{ "''", "" }, { "bfloat", "bfloat" }, { "FLOAT32", "FLOAT32" },
	};
	static const char *const base = "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n";
	struct rfs_recipe r;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(*good); i++) {
		ok(F("%sdtype: %s\n", base, good[i].name), &r);
		assert_int_equal(r.dtype, good[i].dt);
		assert_int_equal(r.out_dtype, -1);
		rfs_recipe_release(&r);
		ok(F("%sout_dtype: %s\n", base, good[i].name), &r);
		assert_int_equal(r.dtype, -1);
		assert_int_equal(r.out_dtype, good[i].dt);
		rfs_recipe_release(&r);
	}
	ok(F("%sdtype: float32\nout_dtype: bfloat16\n", base), &r);
	assert_int_equal(r.dtype, RFS_DT_F32);
	assert_int_equal(r.out_dtype, RFS_DT_BF16);
	rfs_recipe_release(&r);
	ok(F("%sdtype: null\nout_dtype: ~\n", base), &r);
	assert_int_equal(r.dtype, -1);
	assert_int_equal(r.out_dtype, -1);
	rfs_recipe_release(&r);
	for (i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
		BAD(F("%sdtype: %s\n", base, refused[i].text),
		    F("r.yml: dtype '%s' is not one of float32, bfloat16, float16", refused[i].shown));
		BAD(F("%sout_dtype: %s\n", base, refused[i].text),
		    F("r.yml: out_dtype '%s' is not one of float32, bfloat16, float16", refused[i].shown));
	}
	BAD(F("%sdtype: [float32]\n", base), "dtype is a list, not a string");
}

static void test_random_seed(void **state)
{
	static const char *const base = "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n";
	static const char *const refused[] = {
		"-1", "1.5", "abc", "18446744073709551616", "99999999999999999999999", "[1]", "{a: 1}", "0x10",
		"1e3", "+1", "' 1'",
	};
	struct rfs_recipe r;
	size_t i;

	(void)state;
	ok(F("%srandom_seed: 42\n", base), &r);
	assert_int_equal(r.has_seed, 1);
	assert_true(r.random_seed == 42);
	rfs_recipe_release(&r);
	ok(F("%srandom_seed: 0\n", base), &r);
	assert_int_equal(r.has_seed, 1);
	assert_true(r.random_seed == 0);
	rfs_recipe_release(&r);
	ok(F("random_seed: 18446744073709551615\n%s", base), &r);
	assert_int_equal(r.has_seed, 1);
	assert_true(r.random_seed == UINT64_MAX);
	rfs_recipe_release(&r);
	ok(base, &r);
	assert_int_equal(r.has_seed, 0);
	rfs_recipe_release(&r);
	ok(F("%srandom_seed:\n", base), &r);
	assert_int_equal(r.has_seed, 0);
	rfs_recipe_release(&r);
	for (i = 0; i < sizeof(refused) / sizeof(*refused); i++)
		BAD(F("%srandom_seed: %s\n", base, refused[i]), "r.yml: random_seed must be a whole number");
}

static void test_ranges(void **state)
{
	struct rfs_recipe r;

	(void)state;
	/* density: (0, 1] */
	ok_only(one("ties", "{weight: 1, density: 1}"));
	ok_only(one("ties", "{weight: 1, density: 0.001}"));
	ok_only(one("ties", "{weight: 1, density: [0.1, 1, 0.5]}"));
	ok_only(one("ties", "{weight: 1, density: [{filter: mlp, value: 0.2}, {value: [0.5, 1]}]}"));
	BAD(one("ties", "{weight: 1, density: 0}"), "models[0].parameters.density: 0 is outside (0, 1]");
	BAD(one("ties", "{weight: 1, density: 1.5}"), "models[0].parameters.density: 1.5 is outside (0, 1]");
	BAD(one("ties", "{weight: 1, density: -0.5}"), "models[0].parameters.density: -0.5 is outside (0, 1]");
	BAD(one("ties", "{weight: 1, density: false}"), "models[0].parameters.density: 0 is outside (0, 1]");
	BAD(one("ties", "{weight: 1, density: [0.5, 0, 0.5]}"), "models[0].parameters.density: 0 is outside (0, 1]");
	BAD(one("ties", "{weight: 1, density: [0.5, 1.5]}"), "models[0].parameters.density: 1.5 is outside (0, 1]");
	BAD(one("ties", "{weight: 1, density: [{filter: mlp, value: 0.5}, {value: 0}]}"),
	    "models[0].parameters.density: 0 is outside (0, 1]");
	BAD(one("ties", "{weight: 1, density: [{filter: mlp, value: [0.5, 2]}]}"),
	    "models[0].parameters.density: 2 is outside (0, 1]");
	BAD("merge_method: dare_ties\nbase_model: b\nmodels:\n  - {model: a, parameters: {weight: 1, density: 0.5}}\n"
	    "  - {model: c, parameters: {weight: 1, density: 0.5}}\n  - {model: d, parameters: {weight: 1, density: 3}}\n",
	    "models[2].parameters.density: 3 is outside (0, 1]");
	BAD("merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n"
	    "parameters: {density: 0}\n",
	    "r.yml: parameters.density: 0 is outside (0, 1]");
	/* whatever the method */
	BAD(one("linear", "{weight: 1, density: 0}"), "density: 0 is outside (0, 1]");

	/* gamma: [0, 1] */
	ok_only(one("breadcrumbs", "{weight: 1, density: 0.9, gamma: 0}"));
	ok_only(one("breadcrumbs", "{weight: 1, density: 0.9, gamma: 1}"));
	ok_only(one("breadcrumbs", "{weight: 1, density: 0.9, gamma: [0, 0.5, 1]}"));
	BAD(one("breadcrumbs", "{weight: 1, gamma: -0.1}"), "models[0].parameters.gamma: -0.1 is outside [0, 1]");
	BAD(one("breadcrumbs", "{weight: 1, gamma: 1.1}"), "models[0].parameters.gamma: 1.1 is outside [0, 1]");
	BAD(one("breadcrumbs", "{weight: 1, gamma: [0.5, 1.1]}"), "models[0].parameters.gamma: 1.1 is outside [0, 1]");
	BAD("merge_method: breadcrumbs_ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n"
	    "parameters: {gamma: [{filter: x, value: 2}]}\n",
	    "r.yml: parameters.gamma: 2 is outside [0, 1]");

	/* t: [0, 1] for slerp */
	ok_only("merge_method: slerp\nbase_model: b\nmodels: [b, c]\nparameters: {t: 0}\n");
	ok_only("merge_method: slerp\nbase_model: b\nmodels: [b, c]\nparameters: {t: 1}\n");
	ok_only("merge_method: slerp\nbase_model: b\nmodels: [b, c]\nparameters: {t: [0, 0.5, 0.3, 0.7, 1]}\n");
	BAD("merge_method: slerp\nbase_model: b\nmodels: [b, c]\nparameters: {t: 1.5}\n",
	    "r.yml: parameters.t: 1.5 is outside [0, 1]");
	BAD("merge_method: slerp\nbase_model: b\nmodels: [b, c]\nparameters: {t: -0.5}\n",
	    "r.yml: parameters.t: -0.5 is outside [0, 1]");
	BAD("merge_method: slerp\nbase_model: b\nmodels: [b, c]\nparameters: {t: [0, 2]}\n",
	    "r.yml: parameters.t: 2 is outside [0, 1]");
	BAD("merge_method: slerp\nbase_model: b\nmodels: [b, c]\n"
	    "parameters: {t: [{filter: self_attn, value: [0, 0.5]}, {value: 1.01}]}\n",
	    "r.yml: parameters.t: 1.01 is outside [0, 1]");
	BAD("merge_method: slerp\nbase_model: b\nmodels:\n  - b\n  - {model: c, parameters: {t: 7}}\n",
	    "models[1].parameters.t: 7 is outside [0, 1]");

	/* the parsed values themselves */
	ok(one("ties", "{weight: 1, density: 0.7, gamma: 0.01}"), &r);
	assert_true(num(&r.models[0].params, "density") == 0.7);
	assert_true(num(&r.models[0].params, "gamma") == 0.01);
	rfs_recipe_release(&r);
}

static void test_slerp(void **state)
{
	struct rfs_recipe r;

	(void)state;
	/* slerp needs no weights, and t may be the model's own */
	ok("merge_method: slerp\nbase_model: org/a\nmodels:\n  - model: org/a\n  - model: org/b\n"
	   "parameters:\n  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n"
	   "    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5\n",
	   &r);
	assert_int_equal(r.method, RFS_MERGE_SLERP);
	assert_int_equal(r.nmodels, 2);
	assert_true(param(&r.params, "t")->conditional);
	rfs_recipe_release(&r);
	ok("merge_method: slerp\nbase_model: a\nmodels:\n  - a\n  - {model: b, parameters: {t: 0.25}}\n", &r);
	assert_true(num(&r.models[1].params, "t") == 0.25);
	rfs_recipe_release(&r);

	BAD("merge_method: slerp\nbase_model: a\nmodels: [a, b]\n", "r.yml: slerp needs a parameter t");
	BAD("merge_method: slerp\nbase_model: a\nmodels: [a, b]\nparameters: {weight: 0.5}\n",
	    "slerp needs a parameter t");
	BAD("merge_method: slerp\nbase_model: a\nmodels:\n  - {model: a, parameters: {weight: 1}}\n  - b\n",
	    "slerp needs a parameter t");
	BAD("merge_method: slerp\nmodels: [a, b]\nparameters: {t: 0.5}\n", "merge_method slerp needs a base_model");
}

static void test_weights(void **state)
{
	struct rfs_recipe r;
	size_t i;

	(void)state;
	for (i = 0; i < 8; i++) {
		const char *m = methods8[i];

		if (!strcmp(m, "slerp"))
			continue;
		BAD(F("merge_method: %s\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
		      "  - model: org/b\n    parameters: {density: 0.5}\n",
		      m),
		    "models[1] (org/b) has no weight");
		BAD(F("merge_method: %s\nbase_model: base\nmodels:\n  - org/c\n", m), "models[0] (org/c) has no weight");
		/* the base's own entry needs none */
		ok(F("merge_method: %s\nbase_model: base\nmodels:\n  - model: base\n  - model: a\n"
		     "    parameters: {weight: 1}\n",
		     m),
		   &r);
		assert_int_equal(r.nmodels, 2);
		assert_string_equal(r.models[0].ref, "base");
		assert_int_equal(r.models[0].params.n, 0);
		rfs_recipe_release(&r);
		/* a global weight covers every model */
		ok_only(F("merge_method: %s\nbase_model: base\nmodels: [a, b, c]\nparameters: {weight: 0.3}\n", m));
		/* a conditional weight is a weight */
		ok_only(F("merge_method: %s\nbase_model: base\nmodels:\n  - {model: a, parameters: "
			  "{weight: [{filter: mlp, value: 1}]}}\n",
			  m));
	}
	/* linear without base_model: every model needs one */
	BAD("merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 1}}\n  - b\n", "models[1] (b) has no weight");
	/* a weight under another model does not count */
	BAD("merge_method: ties\nbase_model: base\nmodels:\n  - {model: a, parameters: {weight: 1}}\n"
	    "  - {model: b, parameters: {density: 1}}\n",
	    "models[1] (b) has no weight");
}

static void test_documents(void **state)
{
	static const char *const base = "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n";
	struct rfs_recipe r;

	(void)state;
	ok(F("---\n%s", base), &r);
	rfs_recipe_release(&r);
	ok(F("%%YAML 1.1\n---\n%s...\n", base), &r);
	rfs_recipe_release(&r);
	ok(F("# a comment\n%s# another\n\n", base), &r);
	rfs_recipe_release(&r);
	BAD(F("%s---\n%s", base, base), "r.yml: more than one YAML document");
	BAD(F("---\n%s---\nmerge_method: ties\n", base), "more than one YAML document");
	BAD(F("%s---\n", base), "more than one YAML document");
	BAD(F("%s...\n---\n", base), "more than one YAML document");
	BAD(F("%s---\nfoo: [\n", base), "r.yml: not valid YAML after the recipe");
}

static void test_invalid_yaml(void **state)
{
	static const char *const base = "merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\n";
	char *big;
	size_t len;
	struct rfs_recipe r;

	(void)state;
	BAD("merge_method: linear\nmodels: [a,\n  b\n  c: 1\n", "r.yml:4:4: not valid YAML: ");
	BAD("merge_method: linear\nmodels:\n  - model: a\n   parameters: {weight: 1}\n", "r.yml:4:", "not valid YAML");
	BAD("merge_method: linear\n\tmodels: [a]\n", "r.yml:2:1: not valid YAML: ");
	BAD("merge_method: linear\nmodels: *nope\n", "r.yml:2:9: not valid YAML: found undefined alias");
	BAD("merge_method: 'linear\n", "r.yml:2:1: not valid YAML: found unexpected end of stream");
	BAD("a: b: c\n", "r.yml:1:5: not valid YAML: mapping values are not allowed in this context");
	BAD("merge_method: linear\nmodels: {a\n", "r.yml:", "not valid YAML");
	BAD_N("merge_method: li\xff\xfe", 18, "r.yml: not valid YAML at byte 16");

	/* a NUL byte, wherever it is */
	{
		static const char nul[] = "merge_method: linear\0\nmodels: [{model: a, parameters: {weight: 1}}]\n";

		BAD_N(nul, sizeof(nul) - 1, "r.yml: a NUL byte: not a YAML recipe");
	}
	BAD_N("\0", 1, "a NUL byte");
	len = strlen(base);
	big = malloc(len + 1);
	assert_non_null(big);
	memcpy(big, base, len + 1);
	BAD_N(big, len + 1, "a NUL byte"); /* the terminator counted in */
	free(big);

	/* RFS_RECIPE_MAX_BYTES: a recipe padded with a comment up to it, and one byte more */
	big = malloc(RFS_RECIPE_MAX_BYTES + 2);
	assert_non_null(big);
	memset(big, ' ', RFS_RECIPE_MAX_BYTES + 1);
	memcpy(big, base, len);
	big[len] = '#';
	big[RFS_RECIPE_MAX_BYTES - 1] = '\n';
	big[RFS_RECIPE_MAX_BYTES] = '\n';
	big[RFS_RECIPE_MAX_BYTES + 1] = 0;
	ok_n(big, RFS_RECIPE_MAX_BYTES, &r);
	assert_int_equal(r.text_len, RFS_RECIPE_MAX_BYTES);
	rfs_recipe_release(&r);
	BAD_N(big, RFS_RECIPE_MAX_BYTES + 1, F("r.yml: more than %u bytes: not a recipe", RFS_RECIPE_MAX_BYTES));
	free(big);
}

/* "Billion laughs": l0 a list of 10 numbers, each l(i) a list of 10 aliases
 * of l(i-1), 10 levels: 10^10 numbers if expanded.  Wherever it is put,
 * the recipe is answered at once and in bounded memory. */
static const char *laughs(int levels)
{
	static char buf[4096];
	int i, j, n;

	n = snprintf(buf, sizeof(buf), "[&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]");
	for (i = 1; i < levels; i++) {
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, ", &l%d [", i);
		for (j = 0; j < 10; j++)
			n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%s*l%d", j ? ", " : "", i - 1);
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "]");
	}
	snprintf(buf + n, sizeof(buf) - (size_t)n, "]");
	return buf;
}

static void test_alias_bomb(void **state)
{
	struct rfs_recipe r;
	char *text, *p;
	double t0 = now();
	long rss0 = maxrss_kb();
	int i;

	(void)state;
	/* kept under name:, which is never read */
	ok(F("merge_method: linear\nname: %s\nmodels: [{model: a, parameters: {weight: 1}}]\n", laughs(10)), &r);
	rfs_recipe_release(&r);
	/* where a gradient is read */
	BAD(F("merge_method: linear\nname: %s\nmodels: [{model: a, parameters: {weight: *l9}}]\n", laughs(10)),
	    "models[0].parameters.weight: gradient element 0 is a list, not a number");
	/* as a condition's value, a condition, a model, the models */
	BAD(F("merge_method: linear\nname: %s\nmodels: [{model: a, parameters: {weight: [{value: *l9}]}}]\n",
	      laughs(10)),
	    "models[0].parameters.weight[0].value: gradient element 0 is a list, not a number");
	BAD(F("merge_method: linear\nname: %s\nmodels: [{model: a, parameters: {weight: [{value: 1}, *l9]}}]\n",
	      laughs(10)),
	    "models[0].parameters.weight[1] is a list: conditions are {filter, value} mappings");
	BAD(F("merge_method: linear\nname: %s\nmodels: [a, *l9]\nparameters: {weight: 1}\n", laughs(10)),
	    "models[1] is a list, not a mapping");
	BAD(F("merge_method: linear\nname: %s\nmodels: *l9\nparameters: {weight: 1}\n", laughs(10)),
	    "models[0] is a list, not a mapping");
	BAD(F("merge_method: linear\nname: %s\nmodels: [a]\nparameters: *l9\n", laughs(10)),
	    "parameters is a list, not a mapping");

	/* Aliases where every node is read: 15 models share one parameters
	 * mapping of 8 names, each a list of 1000 conditions that share one
	 * gradient of 1024 numbers: 1.2e8 numbers (and 8 GiB of gradients)
	 * if walked; refused instead. */
	text = malloc(64 << 10);
	assert_non_null(text);
	p = text + sprintf(text, "merge_method: linear\nname:\n  - &g [");
	for (i = 0; i < RFS_RECIPE_MAX_GRADIENT; i++)
		p += sprintf(p, "%s0.5", i ? ", " : "");
	p += sprintf(p, "]\n  - &k {value: *g}\n  - &c [");
	for (i = 0; i < 1000; i++)
		p += sprintf(p, "%s*k", i ? ", " : "");
	p += sprintf(p, "]\n  - &p {weight: *c, density: *c, gamma: *c, lambda: *c, normalize: *c, "
			"rescale: *c, t: *c, int8_mask: *c}\nmodels:\n");
	for (i = 0; i < RFS_RECIPE_MAX_MODELS; i++)
		p += sprintf(p, "  - {model: m%d, parameters: *p}\n", i);
	BAD(text, "r.yml: the recipe is too large or too deeply aliased");
	/* the same with one model, one parameter and 40 conditions is walked whole (about 41000 numbers) */
	p = strstr(text, "  - &c [") + 8;
	for (i = 0; i < 40; i++)
		p += sprintf(p, "%s*k", i ? ", " : "");
	sprintf(p, "]\nmodels:\n  - {model: m, parameters: {weight: *c}}\n");
	ok(text, &r);
	assert_int_equal(r.models[0].params.n, 1);
	assert_int_equal(r.models[0].params.p[0].nconds, 40);
	assert_true(r.models[0].params.p[0].conds[39].val.grad[1023] == 0.5);
	rfs_recipe_release(&r);
	free(text);

	if (now() - t0 > 10)
		fail_msg("the alias bombs took %.1f s", now() - t0);
	if (maxrss_kb() - rss0 > 256 * 1024)
		fail_msg("the alias bombs grew the peak memory by %ld MiB", (maxrss_kb() - rss0) / 1024);
}

/* ---------------------------------------------------------------- text, load, release */

static void test_text_and_release(void **state)
{
	static const char *const text = "merge_method: linear  # the comment stays\nmodels: [{model: a, parameters: {weight: 1}}]\n";
	struct rfs_recipe r, empty;
	struct rfs_err err = { 0 };

	(void)state;
	ok(text, &r);
	assert_string_equal(r.text, text);
	rfs_recipe_release(&r);
	/* release leaves an empty recipe, which it accepts again */
	assert_null(r.text);
	assert_null(r.path);
	assert_int_equal(r.nmodels, 0);
	assert_int_equal(r.dtype, -1);
	assert_int_equal(r.out_dtype, -1);
	rfs_recipe_release(&r);
	memset(&empty, 0, sizeof(empty));
	rfs_recipe_release(&empty);

	/* only @len bytes are read: what follows is not the recipe's */
	assert_int_equal(rfs_recipe_parse("merge_method: linear\nmodels: [a]\nparameters: {weight: 1}\ngarbage: [",
					  strlen("merge_method: linear\nmodels: [a]\nparameters: {weight: 1}\n"), PATH,
					  &r, &err),
			 0);
	assert_int_equal(r.text_len, strlen("merge_method: linear\nmodels: [a]\nparameters: {weight: 1}\n"));
	assert_null(strstr(r.text, "garbage"));
	rfs_recipe_release(&r);
}

static void test_load(void **state)
{
	char path[] = "/tmp/residfs-test-recipe-XXXXXX";
	static const char *const text = "merge_method: ties\nbase_model: b\nmodels: [{model: a, parameters: {weight: 1}}]\n";
	struct rfs_recipe r;
	struct rfs_err err = { 0 };
	FILE *f;
	int fd;
	size_t i;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	memset(&r, 0, sizeof(r));
	assert_int_equal(rfs_recipe_load(path, &r, &err), 0);
	assert_int_equal(r.method, RFS_MERGE_TIES);
	assert_string_equal(r.text, text);
	assert_string_equal(r.path, path);
	rfs_recipe_release(&r);

	/* refusals name the file */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("merge_method: passthrough\n", f);
	fclose(f);
	assert_int_equal(rfs_recipe_load(path, &r, &err), RFS_E_SPEC);
	assert_non_null(strstr(err.msg, path));

	/* more than RFS_RECIPE_MAX_BYTES */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	for (i = 0; i <= RFS_RECIPE_MAX_BYTES / 64; i++)
		fputs("# .............................................................\n", f);
	fclose(f);
	memset(&err, 0, sizeof(err));
	assert_true(rfs_recipe_load(path, &r, &err) < 0);
	assert_true(err.msg[0] != 0);
	unlink(path);

	memset(&err, 0, sizeof(err));
	assert_int_equal(rfs_recipe_load(path, &r, &err), RFS_E_IO);
	assert_true(err.msg[0] != 0);
}

/* ---------------------------------------------------------------- lookup */

static const char *const lookup_recipe =
	"merge_method: ties\n"
	"base_model: base\n"
	"models:\n"
	"  - model: base\n"
	"  - model: m1\n"
	"    parameters:\n"
	"      weight: 0.7\n"
	"      density:\n"
	"        - filter: self_attn\n"
	"          value: 0.3\n"
	"        - filter: mlp\n"
	"          value: [0.2, 0.6]\n"
	"  - model: m2\n"
	"    parameters:\n"
	"      density: 0.9\n"
	"      lambda: [{filter: '*', value: 3}]\n"
	"parameters:\n"
	"  weight:\n"
	"    - filter: embed\n"
	"      value: 0.1\n"
	"    - filter: layers.1\n"
	"      value: 0.4\n"
	"    - filter: layers\n"
	"      value: [0, 1]\n"
	"  density: 0.5\n"
	"  normalize: true\n"
	"  lambda: [{filter: q_proj, value: 2}]\n"
	"  gamma: [0, 0.5, 1]\n";

static double P(const struct rfs_recipe *r, int model, const char *name, const char *tensor, long layer,
		long nlayers)
{
	double v = -12345;

	if (!rfs_recipe_param(r, model, name, tensor, layer, nlayers, &v))
		fail_msg("no %s for model %d, tensor %s", name, model, tensor);
	return v;
}

static void test_param_lookup(void **state)
{
	struct rfs_recipe r;
	double v = -12345;

	(void)state;
	ok(lookup_recipe, &r);

	/* the model's own value beats the global one */
	assert_true(P(&r, 1, "weight", "model.embed_tokens.weight", -1, 32) == 0.7);
	assert_true(P(&r, 1, "weight", "model.layers.3.mlp.up_proj.weight", 3, 32) == 0.7);
	assert_true(P(&r, 2, "density", "lm_head.weight", -1, 32) == 0.9);
	/* a model without it: the global value */
	assert_true(P(&r, 2, "weight", "model.embed_tokens.weight", -1, 32) == 0.1);
	assert_true(P(&r, 0, "density", "model.norm.weight", -1, 32) == 0.5);
	assert_true(P(&r, 1, "normalize", "x", -1, 32) == 1);
	/* the first condition that matches, by plain substring (not a glob) */
	assert_true(P(&r, 2, "weight", "model.layers.1.self_attn.q_proj.weight", 1, 32) == 0.4);
	assert_true(P(&r, 2, "weight", "model.layers.12.mlp.down_proj.weight", 12, 32) == 0.4); /* "layers.1" in "layers.12" */
	assert_true(P(&r, 2, "weight", "model.layers.0.mlp.down_proj.weight", 0, 32) == 0);
	assert_true(P(&r, 2, "weight", "model.layers.31.mlp.down_proj.weight", 31, 32) == 1);
	assert_true(P(&r, 2, "weight", "model.embed_tokens.layers.1", -1, 32) == 0.1); /* embed comes first */
	assert_true(P(&r, 1, "density", "model.layers.5.self_attn.o_proj.weight", 5, 32) == 0.3);
	assert_true(P(&r, 1, "density", "model.layers.0.mlp.gate_proj.weight", 0, 5) == 0.2);
	assert_true(P(&r, 1, "density", "model.layers.4.mlp.gate_proj.weight", 4, 5) == 0.6);
	assert_true(P(&r, 1, "density", "model.layers.2.mlp.gate_proj.weight", 2, 5) == 0.5 * 0.2 + 0.5 * 0.6);
	/* the model's conditions match nothing: the global value */
	assert_true(P(&r, 1, "density", "model.norm.weight", -1, 32) == 0.5);
	assert_true(P(&r, 1, "density", "lm_head.weight", -1, 32) == 0.5);
	/* '*' matches everything */
	assert_true(P(&r, 2, "lambda", "lm_head.weight", -1, 32) == 3);
	assert_true(P(&r, 1, "lambda", "model.layers.0.self_attn.q_proj.weight", 0, 32) == 2);
	/* no condition matches anywhere: absent */
	v = -12345;
	assert_int_equal(rfs_recipe_param(&r, 1, "lambda", "model.layers.0.mlp.up_proj.weight", 0, 32, &v), 0);
	assert_int_equal(rfs_recipe_param(&r, 0, "weight", "lm_head.weight", -1, 32, &v), 0);
	assert_int_equal(rfs_recipe_param(&r, -1, "weight", "model.norm.weight", -1, 32, &v), 0);
	/* not given at all */
	assert_int_equal(rfs_recipe_param(&r, 1, "rescale", "x", -1, 32, &v), 0);
	assert_int_equal(rfs_recipe_param(&r, -1, "t", "x", -1, 32, &v), 0);
	assert_true(v == -12345);
	/* model -1 (and one out of range): the global parameters only */
	assert_true(P(&r, -1, "density", "model.layers.0.mlp.up_proj.weight", 0, 32) == 0.5);
	assert_true(P(&r, -1, "weight", "model.embed_tokens.weight", -1, 32) == 0.1);
	assert_true(P(&r, 99, "density", "x", -1, 32) == 0.5);
	/* a global gradient, at the first, middle and last layer; -1 is position 0 */
	assert_true(P(&r, 1, "gamma", "model.layers.0.x", 0, 5) == 0);
	assert_true(P(&r, 1, "gamma", "model.layers.2.x", 2, 5) == 0.5);
	assert_true(P(&r, 1, "gamma", "model.layers.4.x", 4, 5) == 1);
	assert_true(P(&r, 1, "gamma", "model.norm.weight", -1, 5) == 0);
	rfs_recipe_release(&r);
}

/* ---------------------------------------------------------------- gradients */

struct interp_case {
	double list[5];
	size_t n;
	/* at layers -1, 0, 1, 15, 16, 31 of 32 */
	double at32[6];
	/* at layers 0..4 of 5 */
	double at5[5];
};

/* Computed with mergekit's formula in Python (doubles). */
static const struct interp_case interp[] = {
	{ { 0.3 }, 1, { 0.3, 0.3, 0.3, 0.3, 0.3, 0.3 }, { 0.3, 0.3, 0.3, 0.3, 0.3 } },
	{ { 0.0, 1.0 }, 2,
	  { 0.0, 0.0, 0.03225806451612903, 0.4838709677419355, 0.5161290322580645, 1.0 },
	  { 0.0, 0.25, 0.5, 0.75, 1.0 } },
	{ { 0.1, 0.9 }, 2,
	  { 0.1, 0.1, 0.12580645161290324, 0.4870967741935484, 0.5129032258064516, 0.9 },
	  { 0.1, 0.30000000000000004, 0.5, 0.7000000000000001, 0.9 } },
	{ { 0.0, 0.5, 1.0 }, 3,
	  { 0.0, 0.0, 0.03225806451612903, 0.4838709677419355, 0.5161290322580645, 1.0 },
	  { 0.0, 0.25, 0.5, 0.75, 1.0 } },
	{ { 1.0, 0.0, 1.0 }, 3,
	  { 1.0, 1.0, 0.935483870967742, 0.032258064516129004, 0.032258064516129004, 1.0 },
	  { 1.0, 0.5, 0.0, 0.5, 1.0 } },
	{ { 0.1, 0.2, 0.4, 0.8, 1.6 }, 5,
	  { 0.1, 0.1, 0.11290322580645161, 0.38709677419354843, 0.42580645161290326, 1.6 },
	  { 0.1, 0.2, 0.4, 0.8, 1.6 } },
};

static void test_rval_at(void **state)
{
	static const long layers32[] = { -1, 0, 1, 15, 16, 31 };
	size_t c, i;

	(void)state;
	for (c = 0; c < sizeof(interp) / sizeof(*interp); c++) {
		const struct interp_case *k = &interp[c];
		struct rfs_rval v = { .is_gradient = 1, .grad = (double *)k->list, .ngrad = k->n };

		for (i = 0; i < 6; i++) {
			double got = rfs_rval_at(&v, layers32[i], 32);

			if (got != k->at32[i])
				fail_msg("list of %zu, layer %ld of 32: %.17g, want %.17g", k->n, layers32[i], got,
					 k->at32[i]);
		}
		for (i = 0; i < 5; i++) {
			double got = rfs_rval_at(&v, (long)i, 5);

			if (got != k->at5[i])
				fail_msg("list of %zu, layer %zu of 5: %.17g, want %.17g", k->n, i, got, k->at5[i]);
		}
		/* a single layer is at t = 1 (mergekit's plan_slice); no layer at t = 0 */
		assert_true(rfs_rval_at(&v, 0, 1) == k->list[k->n - 1]);
		assert_true(rfs_rval_at(&v, -1, 1) == k->list[0]);
	}
	/* a plain number is itself at every layer */
	{
		struct rfs_rval v = { .num = 0.625 };

		assert_true(rfs_rval_at(&v, -1, 32) == 0.625);
		assert_true(rfs_rval_at(&v, 0, 32) == 0.625);
		assert_true(rfs_rval_at(&v, 31, 32) == 0.625);
	}
}

/* The same values through the parser and rfs_recipe_param. */
static void test_gradient_lookup(void **state)
{
	static const long layers32[] = { -1, 0, 1, 15, 16, 31 };
	struct rfs_recipe r;
	char list[128];
	size_t c, i;
	int n;

	(void)state;
	for (c = 0; c < sizeof(interp) / sizeof(*interp); c++) {
		const struct interp_case *k = &interp[c];

		n = 0;
		for (i = 0; i < k->n; i++)
			n += snprintf(list + n, sizeof(list) - (size_t)n, "%s%.17g", i ? ", " : "", k->list[i]);
		ok(F("merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: [%s]\n"
		     "      lambda: [{filter: mlp, value: [%s]}]\n",
		     list, list),
		   &r);
		for (i = 0; i < 6; i++) {
			assert_true(P(&r, 0, "weight", "model.layers.x.self_attn.q_proj.weight", layers32[i], 32) ==
				    k->at32[i]);
			assert_true(P(&r, 0, "lambda", "model.layers.x.mlp.up_proj.weight", layers32[i], 32) ==
				    k->at32[i]);
		}
		for (i = 0; i < 5; i++)
			assert_true(P(&r, 0, "weight", "model.layers.x.self_attn.q_proj.weight", (long)i, 5) ==
				    k->at5[i]);
		rfs_recipe_release(&r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_methods_refused),
		cmocka_unit_test(test_base_model),
		cmocka_unit_test(test_models_forms),
		cmocka_unit_test(test_lora),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_booleans),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_walk_limit_everywhere),
		cmocka_unit_test(test_gradients),
		cmocka_unit_test(test_conditions),
		cmocka_unit_test(test_param_names),
		cmocka_unit_test(test_top_keys),
		cmocka_unit_test(test_tokenizer_source),
		cmocka_unit_test(test_dtypes),
		cmocka_unit_test(test_random_seed),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_slerp),
		cmocka_unit_test(test_weights),
		cmocka_unit_test(test_documents),
		cmocka_unit_test(test_invalid_yaml),
		cmocka_unit_test(test_alias_bomb),
		cmocka_unit_test(test_text_and_release),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_param_lookup),
		cmocka_unit_test(test_rval_at),
		cmocka_unit_test(test_gradient_lookup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
