/*
 * Parsing mergekit recipes (recipe.h) with libyaml's document loader.
 *
 * The loader resolves aliases to shared nodes, so a hostile document can
 * describe an exponential tree in a few lines: the walk below counts the
 * nodes it visits and gives up past a bound, and it never recurses deeper
 * than a parameter's shape allows.
 */
#include "recipe.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "st.h"
#include "util.h"

#define MAX_VISITS 100000

struct rp {
	yaml_document_t *doc;
	const char *path;
	struct rfs_err *err;
	size_t visits;
};

static const struct {
	const char *name;
	enum rfs_merge_method m;
} methods[] = {
	{ "task_arithmetic", RFS_MERGE_TASK_ARITHMETIC },
	{ "ties", RFS_MERGE_TIES },
	{ "dare_ties", RFS_MERGE_DARE_TIES },
	{ "dare_linear", RFS_MERGE_DARE_LINEAR },
	{ "breadcrumbs", RFS_MERGE_BREADCRUMBS },
	{ "breadcrumbs_ties", RFS_MERGE_BREADCRUMBS_TIES },
	{ "linear", RFS_MERGE_LINEAR },
	{ "slerp", RFS_MERGE_SLERP },
};

/* mergekit's other methods: named in the refusal */
static const char *const other_methods[] = {
	"passthrough", "model_stock", "della", "della_linear", "nuslerp", "nearswap", "sce",
	"karcher", "arcee_fusion", "multislerp",
};

/* Parameters mergekit's methods take (docs/merges.md); others are refused. */
static const char *const param_names[] = {
	"weight", "density", "gamma", "lambda", "normalize", "rescale", "t", "int8_mask",
};

const char *rfs_merge_method_name(enum rfs_merge_method m)
{
	size_t i;

	for (i = 0; i < sizeof(methods) / sizeof(*methods); i++)
		if (methods[i].m == m)
			return methods[i].name;
	return "?";
}

static yaml_node_t *node(struct rp *p, int id)
{
	p->visits++;
	return p->visits > MAX_VISITS ? NULL : yaml_document_get_node(p->doc, id);
}

static int too_big(struct rp *p)
{
	return rfs_errf(p->err, RFS_E_SPEC, "%s: the recipe is too large or too deeply aliased", p->path);
}

static const char *kind_name(const yaml_node_t *n)
{
	return !n ? "nothing" : n->type == YAML_SCALAR_NODE ? "a scalar" :
	       n->type == YAML_SEQUENCE_NODE ? "a list" : "a mapping";
}

/* The scalar's text (NUL-terminated by libyaml), or NULL when @n is none. */
static const char *scalar(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A plain (unquoted) null: "", "~", "null". */
static int is_null(const yaml_node_t *n)
{
	const char *s = scalar(n);

	return s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	       (!*s || !strcmp(s, "~") || !strcasecmp(s, "null"));
}

/* YAML 1.1 booleans, exactly as PyYAML reads them (plain scalars only). */
static int parse_bool(const yaml_node_t *n, double *out)
{
	static const char *const yes[] = { "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON" };
	static const char *const no[] = { "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF" };
	const char *s = scalar(n);
	size_t i;

	if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return -1;
	for (i = 0; i < sizeof(yes) / sizeof(*yes); i++) {
		if (!strcmp(s, yes[i])) {
			*out = 1;
			return 0;
		}
		if (!strcmp(s, no[i])) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

/* A finite number written plainly (no quotes). */
static int parse_num(const yaml_node_t *n, double *out)
{
	const char *s = scalar(n);
	char *end;
	double v;

	if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || !*s)
		return parse_bool(n, out);
	/* decimal only: strtod's hexadecimal and inf/nan forms are not numbers here */
	if (strpbrk(s, "xXpP") || strpbrk(s, "iInN"))
		return parse_bool(n, out);
	errno = 0;
	v = strtod(s, &end);
	if (*end || errno == ERANGE || !isfinite(v))
		return parse_bool(n, out);
	*out = v;
	return 0;
}

/* A number or a gradient (a non-empty list of numbers). */
static int parse_val(struct rp *p, yaml_node_t *n, const char *what, struct rfs_rval *v)
{
	yaml_node_item_t *it;
	size_t i = 0, cnt;

	if (n && n->type == YAML_SEQUENCE_NODE) {
		cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
		if (!cnt || cnt > RFS_RECIPE_MAX_GRADIENT)
			return rfs_errf(p->err, RFS_E_SPEC, "%s: %s: a gradient needs 1 to %u numbers, not %zu",
					p->path, what, RFS_RECIPE_MAX_GRADIENT, cnt);
		v->grad = calloc(cnt, sizeof(*v->grad));
		if (!v->grad)
			return rfs_errf(p->err, RFS_E_NOMEM, "out of memory");
		v->is_gradient = 1;
		v->ngrad = cnt;
		for (it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++, i++) {
			yaml_node_t *e = node(p, *it);

			if (!e)
				return too_big(p);
			if (parse_num(e, &v->grad[i]))
				return rfs_errf(p->err, RFS_E_SPEC,
						"%s: %s: gradient element %zu is %s%s%s, not a number", p->path, what, i,
						scalar(e) ? "'" : kind_name(e), scalar(e) ? scalar(e) : "",
						scalar(e) ? "'" : "");
		}
		return 0;
	}
	if (parse_num(n, &v->num))
		return rfs_errf(p->err, RFS_E_SPEC, "%s: %s is %s%s%s, not a number, a boolean or a gradient",
				p->path, what, scalar(n) ? "'" : kind_name(n), scalar(n) ? scalar(n) : "",
				scalar(n) ? "'" : "");
	return 0;
}

/* Looks @key up in mapping @n; NULL when absent. */
static yaml_node_t *get(struct rp *p, yaml_node_t *n, const char *key, int *bad)
{
	yaml_node_pair_t *pr;

	for (pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = node(p, pr->key);

		if (!k) {
			*bad = 1;
			return NULL;
		}
		if (scalar(k) && !strcmp(scalar(k), key)) {
			yaml_node_t *v = node(p, pr->value);

			if (!v)
				*bad = 1;
			return v;
		}
	}
	return NULL;
}

/* Every key of mapping @n must be in @known (@n keys); names the first that is not. */
static int check_keys(struct rp *p, yaml_node_t *n, const char *where, const char *const *known,
		      size_t nknown)
{
	yaml_node_pair_t *pr;
	size_t i;

	for (pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = node(p, pr->key);
		const char *s = scalar(k);

		if (!k)
			return too_big(p);
		if (!s)
			return rfs_errf(p->err, RFS_E_SPEC, "%s: %s: a key is %s, not a name", p->path, where,
					kind_name(k));
		for (i = 0; i < nknown && strcmp(s, known[i]); i++)
			;
		if (i == nknown)
			return rfs_errf(p->err, RFS_E_SPEC, "%s: %s: unknown key '%s'", p->path, where, s);
		{
			/* YAML readers differ on a repeated key (PyYAML keeps the last) */
			yaml_node_pair_t *q;

			for (q = n->data.mapping.pairs.start; q < pr; q++) {
				const char *o = scalar(node(p, q->key));

				if (p->visits > MAX_VISITS)
					return too_big(p);
				if (o && !strcmp(o, s))
					return rfs_errf(p->err, RFS_E_SPEC, "%s: %s: '%s' given twice", p->path,
							where, s);
			}
		}
	}
	return 0;
}

static void release_val(struct rfs_rval *v)
{
	free(v->grad);
	memset(v, 0, sizeof(*v));
}

static void release_params(struct rfs_rparams *ps)
{
	size_t i, j;

	for (i = 0; i < ps->n; i++) {
		struct rfs_rparam *q = &ps->p[i];

		free(q->name);
		release_val(&q->val);
		for (j = 0; j < q->nconds; j++) {
			free(q->conds[j].filter);
			release_val(&q->conds[j].val);
		}
		free(q->conds);
	}
	free(ps->p);
	memset(ps, 0, sizeof(*ps));
}

/* One parameter's value: plain, or a list of {filter, value}. */
static int parse_param(struct rp *p, yaml_node_t *n, const char *what, struct rfs_rparam *q)
{
	static const char *const cond_keys[] = { "filter", "value" };
	yaml_node_item_t *it;
	yaml_node_t *first;
	char w[400];
	int bad = 0, ret;

	if (!n || n->type != YAML_SEQUENCE_NODE || n->data.sequence.items.top == n->data.sequence.items.start ||
	    !(first = node(p, *n->data.sequence.items.start)) || first->type != YAML_MAPPING_NODE)
		return bad ? too_big(p) : parse_val(p, n, what, &q->val);
	q->conditional = 1;
	q->nconds = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	q->conds = calloc(q->nconds, sizeof(*q->conds));
	if (!q->conds)
		return rfs_errf(p->err, RFS_E_NOMEM, "out of memory");
	for (it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
		size_t i = (size_t)(it - n->data.sequence.items.start);
		yaml_node_t *c = node(p, *it), *f, *v;

		if (!c)
			return too_big(p);
		snprintf(w, sizeof(w), "%s[%zu]", what, i);
		if (c->type != YAML_MAPPING_NODE)
			return rfs_errf(p->err, RFS_E_SPEC, "%s: %s is %s: conditions are {filter, value} mappings",
					p->path, w, kind_name(c));
		if ((ret = check_keys(p, c, w, cond_keys, 2)))
			return ret;
		f = get(p, c, "filter", &bad);
		v = get(p, c, "value", &bad);
		if (bad)
			return too_big(p);
		if (!v)
			return rfs_errf(p->err, RFS_E_SPEC, "%s: %s has no value", p->path, w);
		if (f && !is_null(f)) {
			if (!scalar(f))
				return rfs_errf(p->err, RFS_E_SPEC, "%s: %s.filter is %s, not a name", p->path, w,
						kind_name(f));
			/* "*" matches everything, as no filter does */
			if (strcmp(scalar(f), "*") && !(q->conds[i].filter = strdup(scalar(f))))
				return rfs_errf(p->err, RFS_E_NOMEM, "out of memory");
		}
		snprintf(w, sizeof(w), "%s[%zu].value", what, i);
		if ((ret = parse_val(p, v, w, &q->conds[i].val)))
			return ret;
	}
	return 0;
}

/* A `parameters` mapping (@where names it in messages). */
static int parse_params(struct rp *p, yaml_node_t *n, const char *where, struct rfs_rparams *out)
{
	yaml_node_pair_t *pr;
	char what[320];
	int ret;

	if (!n || is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE)
		return rfs_errf(p->err, RFS_E_SPEC, "%s: %s is %s, not a mapping", p->path, where, kind_name(n));
	if ((ret = check_keys(p, n, where, param_names, sizeof(param_names) / sizeof(*param_names))))
		return ret;
	out->p = calloc((size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start) + 1, sizeof(*out->p));
	if (!out->p)
		return rfs_errf(p->err, RFS_E_NOMEM, "out of memory");
	for (pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
		const char *k = scalar(node(p, pr->key));
		struct rfs_rparam *q = &out->p[out->n];
		size_t i;

		if (!k)
			return too_big(p);
		for (i = 0; i < out->n; i++)
			if (!strcmp(out->p[i].name, k))
				return rfs_errf(p->err, RFS_E_SPEC, "%s: %s: '%s' given twice", p->path, where, k);
		if (!(q->name = strdup(k)))
			return rfs_errf(p->err, RFS_E_NOMEM, "out of memory");
		out->n++;
		snprintf(what, sizeof(what), "%s.%s", where, k);
		if ((ret = parse_param(p, node(p, pr->value), what, q)))
			return ret;
	}
	return 0;
}

/* A string value of key @key (NULL when absent or null). */
static int get_str(struct rp *p, yaml_node_t *map, const char *key, const char *where, char **out)
{
	int bad = 0;
	yaml_node_t *n = get(p, map, key, &bad);

	if (bad)
		return too_big(p);
	if (!n || is_null(n))
		return 0;
	if (!scalar(n))
		return rfs_errf(p->err, RFS_E_SPEC, "%s: %s%s%s is %s, not a string", p->path, where,
				*where ? "." : "", key, kind_name(n));
	*out = strdup(scalar(n));
	return *out ? 0 : rfs_errf(p->err, RFS_E_NOMEM, "out of memory");
}

/* A model reference: a path, hf://ORG/NAME or ORG/NAME[@REV]; not a LoRA. */
static int check_ref(struct rp *p, const char *ref, const char *where)
{
	if (!*ref)
		return rfs_errf(p->err, RFS_E_SPEC, "%s: %s: an empty model reference", p->path, where);
	if (strchr(ref, '+'))
		return rfs_errf(p->err, RFS_E_SPEC,
				"%s: %s: '%s' names a LoRA ('MODEL+LORA'), which residfs does not merge",
				p->path, where, ref);
	return 0;
}

static int parse_models(struct rp *p, yaml_node_t *n, struct rfs_recipe *r)
{
	static const char *const model_keys[] = { "model", "parameters" };
	yaml_node_item_t *it;
	char where[64];
	int ret, bad = 0;

	if (!n || n->type != YAML_SEQUENCE_NODE)
		return rfs_errf(p->err, RFS_E_SPEC, "%s: models is %s, not a list", p->path, kind_name(n));
	for (it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
		yaml_node_t *m = node(p, *it), *ref;
		struct rfs_rmodel *rm;

		if (!m)
			return too_big(p);
		snprintf(where, sizeof(where), "models[%zu]", r->nmodels);
		if (r->nmodels == RFS_RECIPE_MAX_MODELS)
			return rfs_errf(p->err, RFS_E_SPEC, "%s: more than %d models", p->path,
					RFS_RECIPE_MAX_MODELS);
		rm = &r->models[r->nmodels];
		if (m->type == YAML_SCALAR_NODE) { /* "- org/model": mergekit takes a bare reference too */
			ref = m;
		} else {
			if (m->type != YAML_MAPPING_NODE)
				return rfs_errf(p->err, RFS_E_SPEC, "%s: %s is %s, not a mapping", p->path, where,
						kind_name(m));
			if ((ret = check_keys(p, m, where, model_keys, 2)))
				return ret;
			ref = get(p, m, "model", &bad);
			if (bad)
				return too_big(p);
		}
		if (!scalar(ref) || is_null(ref))
			return rfs_errf(p->err, RFS_E_SPEC, "%s: %s has no model", p->path, where);
		if ((ret = check_ref(p, scalar(ref), where)))
			return ret;
		if (!(rm->ref = strdup(scalar(ref))))
			return rfs_errf(p->err, RFS_E_NOMEM, "out of memory");
		r->nmodels++;
		if (m->type == YAML_MAPPING_NODE) {
			yaml_node_t *ps = get(p, m, "parameters", &bad);

			strncat(where, ".parameters", sizeof(where) - strlen(where) - 1);
			if (bad)
				return too_big(p);
			if ((ret = parse_params(p, ps, where, &rm->params)))
				return ret;
		}
	}
	return 0;
}

static const struct rfs_rparam *find_param(const struct rfs_rparams *ps, const char *name)
{
	size_t i;

	for (i = 0; i < ps->n; i++)
		if (!strcmp(ps->p[i].name, name))
			return &ps->p[i];
	return NULL;
}

/* Every value of @name (plain or conditional, model or global) lies in
 * [@lo, @hi] (@lo_open: excluded).  Gradients are checked element-wise. */
static int check_range(struct rp *p, const struct rfs_recipe *r, const char *name, double lo, int lo_open,
		       double hi)
{
	size_t m, i, j;

	for (m = 0; m <= r->nmodels; m++) {
		const struct rfs_rparam *q = find_param(m < r->nmodels ? &r->models[m].params : &r->params, name);

		if (!q)
			continue;
		for (i = 0; i < (q->conditional ? q->nconds : 1); i++) {
			const struct rfs_rval *v = q->conditional ? &q->conds[i].val : &q->val;

			for (j = 0; j < (v->is_gradient ? v->ngrad : 1); j++) {
				double x = v->is_gradient ? v->grad[j] : v->num;

				if (x > hi || x < lo || (lo_open && x == lo)) {
					char where[48];

					if (m < r->nmodels)
						snprintf(where, sizeof(where), "models[%zu].parameters", m);
					else
						snprintf(where, sizeof(where), "parameters");
					return rfs_errf(p->err, RFS_E_SPEC, "%s: %s.%s: %g is outside %c%g, %g]",
							p->path, where, name, x, lo_open ? '(' : '[', lo, hi);
				}
			}
		}
	}
	return 0;
}

static int parse_doc(struct rp *p, struct rfs_recipe *r)
{
	static const char *const top_keys[] = {
		"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype",
		"tokenizer_source", "tokenizer", "chat_template", "random_seed", "name", "slices",
	};
	yaml_node_t *root = yaml_document_get_root_node(p->doc), *n;
	char *s = NULL;
	size_t i;
	int ret, bad = 0;

	if (!root || root->type != YAML_MAPPING_NODE)
		return rfs_errf(p->err, RFS_E_SPEC, "%s: a recipe is a YAML mapping (merge_method, models, ...), not %s",
				p->path, kind_name(root));
	if ((ret = check_keys(p, root, "the recipe", top_keys, sizeof(top_keys) / sizeof(*top_keys))))
		return ret;
	if (get(p, root, "slices", &bad))
		return rfs_errf(p->err, RFS_E_SPEC,
				"%s: slices: layer-range merges (frankenmerges) are not supported; use models:", p->path);
	if ((ret = get_str(p, root, "merge_method", "", &s)))
		return ret;
	if (!s)
		return rfs_errf(p->err, RFS_E_SPEC, "%s: merge_method is missing", p->path);
	for (i = 0; i < sizeof(methods) / sizeof(*methods) && strcmp(s, methods[i].name); i++)
		;
	if (i == sizeof(methods) / sizeof(*methods)) {
		size_t j;

		for (j = 0; j < sizeof(other_methods) / sizeof(*other_methods) && strcmp(s, other_methods[j]); j++)
			;
		ret = rfs_errf(p->err, RFS_E_SPEC, "%s: merge_method '%s' %s (residfs merges task_arithmetic, ties, "
			       "dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, linear and slerp)",
			       p->path, s, j < sizeof(other_methods) / sizeof(*other_methods)
			       ? "is not supported" : "is unknown");
		free(s);
		return ret;
	}
	free(s);
	r->method = methods[i].m;
	if ((ret = get_str(p, root, "base_model", "", &r->base_model)))
		return ret;
	if (r->base_model && (ret = check_ref(p, r->base_model, "base_model")))
		return ret;
	n = get(p, root, "models", &bad);
	if (bad)
		return too_big(p);
	if (!n)
		return rfs_errf(p->err, RFS_E_SPEC, "%s: models is missing", p->path);
	if ((ret = parse_models(p, n, r)))
		return ret;
	n = get(p, root, "parameters", &bad);
	if (bad)
		return too_big(p);
	if ((ret = parse_params(p, n, "parameters", &r->params)))
		return ret;
	r->dtype = r->out_dtype = -1;
	for (i = 0; i < 2; i++) {
		const char *key = i ? "out_dtype" : "dtype";

		s = NULL;
		if ((ret = get_str(p, root, key, "", &s)))
			return ret;
		if (s) {
			int d = rfs_dtype_parse_user(s);

			if (d < 0) {
				ret = rfs_errf(p->err, RFS_E_SPEC, "%s: %s '%s' is not one of float32, bfloat16, float16",
					       p->path, key, s);
				free(s);
				return ret;
			}
			*(i ? &r->out_dtype : &r->dtype) = d;
			free(s);
		}
	}
	s = NULL;
	if ((ret = get_str(p, root, "tokenizer_source", "", &s)))
		return ret;
	if (s) {
		r->tokenizer_given = 1;
		if (!strcmp(s, "union"))
			r->tokenizer_union = 1;
		else if (strcmp(s, "base")) {
			r->tokenizer_model = s; /* a model reference: one of the recipe's (merge.c) */
			s = NULL;
		}
		free(s);
	}
	if (get(p, root, "tokenizer", &bad))
		return rfs_errf(p->err, RFS_E_SPEC,
				"%s: tokenizer: is not supported; use tokenizer_source: base, union or a model", p->path);
	if ((ret = get_str(p, root, "chat_template", "", &r->chat_template)))
		return ret;
	n = get(p, root, "random_seed", &bad);
	if (bad)
		return too_big(p);
	if (n && !is_null(n)) {
		const char *t = scalar(n);
		char *end;

		errno = 0;
		r->random_seed = t && *t >= '0' && *t <= '9' ? strtoull(t, &end, 10) : 0;
		if (!t || *t < '0' || *t > '9' || *end || errno)
			return rfs_errf(p->err, RFS_E_SPEC, "%s: random_seed must be a whole number", p->path);
		r->has_seed = 1;
	}
	/* what each method needs */
	if (!r->nmodels)
		return rfs_errf(p->err, RFS_E_SPEC, "%s: models is empty", p->path);
	if (r->method != RFS_MERGE_LINEAR && !r->base_model)
		return rfs_errf(p->err, RFS_E_SPEC, "%s: merge_method %s needs a base_model", p->path,
				rfs_merge_method_name(r->method));
	if (r->method == RFS_MERGE_SLERP) {
		if (!find_param(&r->params, "t"))
			for (i = 0; i < r->nmodels && !find_param(&r->models[i].params, "t"); i++)
				;
		if (!find_param(&r->params, "t") && i == r->nmodels)
			return rfs_errf(p->err, RFS_E_SPEC, "%s: slerp needs a parameter t", p->path);
		if ((ret = check_range(p, r, "t", 0, 0, 1)))
			return ret;
	} else {
		for (i = 0; i < r->nmodels; i++) {
			if (r->base_model && !strcmp(r->models[i].ref, r->base_model))
				continue; /* the base's own entry needs no weight */
			if (!find_param(&r->models[i].params, "weight") && !find_param(&r->params, "weight"))
				return rfs_errf(p->err, RFS_E_SPEC, "%s: models[%zu] (%s) has no weight", p->path, i,
						r->models[i].ref);
		}
	}
	if ((ret = check_range(p, r, "density", 0, 1, 1)) || (ret = check_range(p, r, "gamma", 0, 0, 1)))
		return ret;
	return 0;
}

void rfs_recipe_release(struct rfs_recipe *r)
{
	size_t i;

	free(r->base_model);
	for (i = 0; i < r->nmodels; i++) {
		free(r->models[i].ref);
		release_params(&r->models[i].params);
	}
	release_params(&r->params);
	free(r->chat_template);
	free(r->tokenizer_model);
	free(r->text);
	free(r->path);
	memset(r, 0, sizeof(*r));
	r->dtype = r->out_dtype = -1;
}

enum rfs_code rfs_recipe_parse(const char *text, size_t len, const char *path,
			       struct rfs_recipe *out, struct rfs_err *err)
{
	struct rfs_recipe r = { .dtype = -1, .out_dtype = -1 };
	yaml_parser_t parser;
	yaml_document_t doc;
	struct rp p = { .doc = &doc, .path = path, .err = err };
	int ret;

	if (len > RFS_RECIPE_MAX_BYTES)
		return rfs_errf(err, RFS_E_SPEC, "%s: more than %u bytes: not a recipe", path, RFS_RECIPE_MAX_BYTES);
	if (memchr(text, 0, len))
		return rfs_errf(err, RFS_E_SPEC, "%s: a NUL byte: not a YAML recipe", path);
	if (!yaml_parser_initialize(&parser))
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		if (parser.error == YAML_READER_ERROR) /* no line yet: the byte */
			ret = rfs_errf(err, RFS_E_SPEC, "%s: not valid YAML at byte %zu: %s", path,
				       parser.problem_offset, parser.problem ? parser.problem : "error");
		else
			ret = rfs_errf(err, RFS_E_SPEC, "%s:%zu:%zu: not valid YAML: %s", path,
				       parser.problem_mark.line + 1, parser.problem_mark.column + 1,
				       parser.problem ? parser.problem : "error");
		yaml_parser_delete(&parser);
		return ret;
	}
	ret = parse_doc(&p, &r);
	if (!ret) { /* one document only */
		yaml_document_t next;

		if (!yaml_parser_load(&parser, &next))
			ret = rfs_errf(err, RFS_E_SPEC, "%s: not valid YAML after the recipe", path);
		else {
			if (yaml_document_get_root_node(&next))
				ret = rfs_errf(err, RFS_E_SPEC, "%s: more than one YAML document", path);
			yaml_document_delete(&next);
		}
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	if (!ret) {
		r.text = malloc(len + 1);
		r.path = strdup(path);
		if (!r.text || !r.path)
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		else {
			memcpy(r.text, text, len);
			r.text[len] = 0;
			r.text_len = len;
		}
	}
	if (ret) {
		rfs_recipe_release(&r);
		return ret;
	}
	*out = r;
	return 0;
}

enum rfs_code rfs_recipe_load(const char *path, struct rfs_recipe *out, struct rfs_err *err)
{
	char *text = NULL;
	size_t len = 0;
	int ret = rfs_read_file(path, RFS_RECIPE_MAX_BYTES, &text, &len, err);

	if (ret)
		return ret;
	ret = rfs_recipe_parse(text, len, path, out, err);
	free(text);
	return ret;
}

double rfs_rval_at(const struct rfs_rval *v, long layer, long nlayers)
{
	double t, scaled, frac;
	size_t i0, i1;

	if (!v->is_gradient)
		return v->num;
	if (v->ngrad == 1)
		return v->grad[0];
	/* mergekit: t = i/(L-1) over the layers, 1 with a single layer, 0
	 * outside the layers (embeddings, final norm, lm_head) */
	t = layer < 0 ? 0.0 : nlayers <= 1 ? 1.0 : (double)layer / (double)(nlayers - 1);
	scaled = t * (double)(v->ngrad - 1);
	i0 = (size_t)scaled;
	if (i0 > v->ngrad - 1)
		i0 = v->ngrad - 1;
	i1 = i0 + 1 < v->ngrad ? i0 + 1 : v->ngrad - 1;
	frac = scaled - (double)i0;
	return (1 - frac) * v->grad[i0] + frac * v->grad[i1];
}

/* The value of @q for @tensor: the first matching condition's. */
/* The value of @q that applies to @tensor, or NULL. */
static const struct rfs_rval *param_value(const struct rfs_rparam *q, const char *tensor)
{
	size_t i;

	if (!q->conditional)
		return &q->val;
	for (i = 0; i < q->nconds; i++)
		if (!q->conds[i].filter || strstr(tensor, q->conds[i].filter))
			return &q->conds[i].val;
	return NULL;
}

/* The value of parameter @name that applies to @tensor for model @model. */
static const struct rfs_rval *param_for(const struct rfs_recipe *r, int model, const char *name,
					const char *tensor)
{
	const struct rfs_rparam *q;
	const struct rfs_rval *v;

	if (model >= 0 && (size_t)model < r->nmodels && (q = find_param(&r->models[model].params, name)) &&
	    (v = param_value(q, tensor)))
		return v;
	q = find_param(&r->params, name);
	return q ? param_value(q, tensor) : NULL;
}

int rfs_recipe_param(const struct rfs_recipe *r, int model, const char *name,
		     const char *tensor, long layer, long nlayers, double *out)
{
	const struct rfs_rval *v = param_for(r, model, name, tensor);

	if (v)
		*out = rfs_rval_at(v, layer, nlayers);
	return v != NULL;
}

int rfs_recipe_param_is_gradient(const struct rfs_recipe *r, int model, const char *name, const char *tensor)
{
	const struct rfs_rval *v = param_for(r, model, name, tensor);

	return v && v->is_gradient;
}
