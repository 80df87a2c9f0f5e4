/*
 * SPEC parsing: split only where every operand is an existing directory.
 * A depth-first search over the '+'/'-' positions collects readings; more
 * than one reading is an error that lists them.
 */
#include "spec.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tdir.h"

#define MAX_READINGS 4
#define SPAN_MEMO 8192 /* answers remembered; past that, asked again */

struct reading {
	size_t nterms;
	size_t beg[RFS_SPEC_MAX_TERMS], end[RFS_SPEC_MAX_TERMS]; /* path span */
	double scale[RFS_SPEC_MAX_TERMS];
	size_t sbeg[RFS_SPEC_MAX_TERMS]; /* scale text [sbeg, beg - 1) when beg > sbeg */
	const char *bad[RFS_SPEC_MAX_TERMS]; /* why the scale is unusable, or NULL */
};

struct search {
	const char *text;
	size_t len;
	rfs_spec_isdir_fn isdir;
	void *ctx;
	struct reading cur;
	struct reading found[MAX_READINGS];
	size_t nfound;
	size_t nvisits;
	/* dead[pos] = k + 1: no reading starts at pos using at most
	 * RFS_SPEC_MAX_TERMS - k more terms (found with k terms already used;
	 * reached again with k or more, it is skipped); 0: not known */
	unsigned char *dead;
	size_t furthest;     /* furthest position a valid prefix reached */
	/* the isdir answers already given, by span (a stat each otherwise;
	 * a position is searched again when reached with terms to spare) */
	struct span_memo {
		size_t b, e;  /* e == 0: free slot */
		int isdir;
	} memo[SPAN_MEMO];
};

/* A local directory, or a remote term that resolves (tdir.h: hf://...,
 * http(s)://.../, a bare ORG/NAME the HF cache or the Hub knows). */
static int default_isdir(const char *path, void *ctx)
{
	struct stat st;

	(void)ctx;
	if (rfs_tdir_is_remote(path))
		return rfs_tdir_probe(path);
	if (stat(path, &st) == 0)
		return S_ISDIR(st.st_mode);
	return rfs_tdir_probe(path);
}

/* The default test, strict form: a directory with a config.json (a model
 * or a residuals directory).  Tried first, so that a stray directory named
 * like a prefix of a path does not make a SPEC ambiguous. */
static int strict_isdir(const char *path, void *ctx)
{
	char cfg[4096];
	struct stat st;

	(void)ctx;
	if (rfs_tdir_is_remote(path) || stat(path, &st) != 0)
		return default_isdir(path, NULL);
	if (!default_isdir(path, NULL))
		return 0;
	snprintf(cfg, sizeof(cfg), "%s/config.json", path);
	return stat(cfg, &st) == 0 && S_ISREG(st.st_mode);
}

static int span_isdir(struct search *s, size_t b, size_t e)
{
	size_t h = ((b * 0x9E3779B97F4A7C15ull) ^ (e * 0xC2B2AE3D27D4EB4Full)) >> 7, i;
	struct span_memo *m = NULL;
	char *p;
	int r;

	for (i = 0; i < 8; i++) { /* a short probe: a full table just asks again */
		struct span_memo *c = &s->memo[(h + i) % SPAN_MEMO];

		if (c->e == e && c->b == b)
			return c->isdir;
		if (!c->e) {
			m = c;
			break;
		}
	}
	p = strndup(s->text + b, e - b);
	if (!p)
		return 0;
	r = s->isdir(p, s->ctx);
	free(p);
	if (m)
		*m = (struct span_memo){ b, e, r };
	return r;
}

/*
 * Why @v (read by strtod, @erange: it set ERANGE) does not survive the
 * conversion to float32, or NULL when it does.  Doubles from FLT_MAX plus
 * half an ulp (2^128 - 2^103) up round to infinity; that bound is checked
 * before converting, so the conversion itself is always in range.
 */
static const char *scale_why(double v, int erange)
{
	if (isnan(v))
		return "is not a number";
	if ((erange && fabs(v) >= 1) || fabs(v) >= 0x1p128 - 0x1p103)
		return "is too large for float32 (the arithmetic is float32; the largest magnitude is FLT_MAX, 3.4028235e38)";
	if (erange || (v != 0 && fpclassify((float)v) != FP_NORMAL))
		return "is too small for float32 (the arithmetic is float32; a non-zero magnitude below "
		       "FLT_MIN, 1.1754944e-38, becomes 0 or loses precision)";
	return NULL;
}

enum rfs_code rfs_spec_scale_check(double scale, struct rfs_err *err)
{
	const char *why = scale_why(scale, 0);

	return why ? rfs_errf(err, RFS_E_SPEC, "scale %g %s", scale, why) : 0;
}

enum rfs_code rfs_spec_scale_parse(const char *text, double *out, struct rfs_err *err)
{
	const char *why;
	char *end;
	double v;

	if (!*text || isspace((unsigned char)*text))
		return rfs_errf(err, RFS_E_SPEC, "'%s' is not a number", text);
	errno = 0;
	v = strtod(text, &end);
	if (*end || end == text)
		return rfs_errf(err, RFS_E_SPEC, "'%s' is not a number", text);
	why = scale_why(v, errno == ERANGE);
	if (why)
		return rfs_errf(err, RFS_E_SPEC, "'%s' %s", text, why);
	*out = v;
	return 0;
}

/* Parses "NUMBER*" at [b, e); returns the offset after '*' or 0 (no
 * number: the span can only be a path).  A number that does not survive
 * float32 is still a scale, with *@bad saying why, so that a SPEC using it
 * is refused naming it rather than read as a missing path. */
static size_t scale_prefix(const char *t, size_t b, size_t e, double *scale, const char **bad)
{
	const char *star = memchr(t + b, '*', e - b);
	char num[64], *endp;
	size_t n;

	if (!star)
		return 0;
	n = (size_t)(star - (t + b));
	if (n == 0 || n >= sizeof(num))
		return 0;
	memcpy(num, t + b, n);
	num[n] = 0;
	errno = 0;
	*scale = strtod(num, &endp);
	if (*endp || (errno != ERANGE && !isfinite(*scale)))
		return 0; /* not a number, or "nan"/"inf" spelled out */
	*bad = scale_why(*scale, errno == ERANGE);
	return (size_t)(star - t) + 1;
}

static void dfs(struct search *s, size_t pos, double sign)
{
	size_t e;

	size_t before = s->nfound;

	if (s->nfound >= MAX_READINGS || s->cur.nterms >= RFS_SPEC_MAX_TERMS ||
	    (s->dead[pos] && s->cur.nterms + 1 >= s->dead[pos]) || ++s->nvisits > 100000)
		return;
	for (e = pos + 1; e <= s->len; e++) {
		size_t k = s->cur.nterms, pb;
		double sc = 1.0;
		const char *bad = NULL;
		int variant;

		if (e < s->len && s->text[e] != '+' && s->text[e] != '-')
			continue;
		/* two readings of an operand: "N*path" and the literal path */
		for (variant = 0; variant < 2; variant++) {
			if (variant == 0) {
				pb = scale_prefix(s->text, pos, e, &sc, &bad);
				if (!pb || pb >= e)
					continue;
			} else {
				pb = pos;
				sc = 1.0;
				bad = NULL;
			}
			if (!span_isdir(s, pb, e))
				continue;
			s->cur.beg[k] = pb;
			s->cur.end[k] = e;
			s->cur.scale[k] = sign * sc;
			s->cur.sbeg[k] = pos;
			s->cur.bad[k] = bad;
			s->cur.nterms = k + 1;
			if (e == s->len) {
				if (s->nfound < MAX_READINGS)
					s->found[s->nfound++] = s->cur;
			} else if (e + 1 < s->len) {
				if (e + 1 > s->furthest)
					s->furthest = e + 1;
				dfs(s, e + 1, s->text[e] == '-' ? -1.0 : 1.0);
			}
			s->cur.nterms = k;
		}
	}
	/* nothing from here with this many terms left: nor with fewer */
	if (s->nfound == before && (!s->dead[pos] || s->cur.nterms + 1 < s->dead[pos]))
		s->dead[pos] = (unsigned char)(s->cur.nterms + 1);
}

static void describe(const struct search *s, const struct reading *r, char *buf, size_t len)
{
	size_t i, off = 0;

	buf[0] = 0;
	for (i = 0; i < r->nterms && off < len; i++) {
		double sc = r->scale[i] < 0 ? -r->scale[i] : r->scale[i];
		char num[40] = "";
		int n;

		if (sc != 1.0)
			snprintf(num, sizeof(num), "%g*", sc);
		n = snprintf(buf + off, len - off, "%s%s'%.*s'",
			     i ? (r->scale[i] < 0 ? " - " : " + ") : "", num,
			     (int)(r->end[i] - r->beg[i]), s->text + r->beg[i]);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}

enum rfs_code rfs_spec_add(struct rfs_spec *s, const char *path, double scale, struct rfs_err *err)
{
	const char *why = scale_why(scale, 0);
	char *p;

	if (s->nterms >= RFS_SPEC_MAX_TERMS)
		return rfs_errf(err, RFS_E_SPEC, "too many terms (at most %d)", RFS_SPEC_MAX_TERMS);
	if (why)
		return rfs_errf(err, RFS_E_SPEC, "%s: scale %g %s", path, scale, why);
	p = strdup(path);
	if (!p)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	s->terms[s->nterms].path = p;
	s->terms[s->nterms].scale = scale;
	s->nterms++;
	return 0;
}

void rfs_spec_release(struct rfs_spec *s)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < s->nterms; i++)
		free(s->terms[i].path);
	memset(s, 0, sizeof(*s));
}

enum rfs_code rfs_spec_parse(const char *text, rfs_spec_isdir_fn isdir, void *ctx,
			     struct rfs_spec *out, struct rfs_err *err)
{
	struct search *s;
	struct rfs_spec res = { 0 };
	size_t i;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (!text || !*text)
		return rfs_errf(err, RFS_E_SPEC, "empty SPEC");
	s = calloc(1, sizeof(*s));
	if (!s)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	s->text = text;
	s->len = strlen(text);
	s->dead = calloc(s->len + 1, 1);
	if (!s->dead) {
		free(s);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	s->isdir = isdir ? isdir : strict_isdir;
	s->ctx = ctx;
	dfs(s, 0, 1.0);
	if (!isdir && s->nfound == 0) {
		/* no reading of model directories: fall back to any directory,
		 * so that the error names what is wrong with the operand */
		s->isdir = default_isdir;
		s->nvisits = 0;
		s->furthest = 0;
		memset(s->dead, 0, s->len + 1);
		memset(s->memo, 0, sizeof(s->memo)); /* other answers now */
		dfs(s, 0, 1.0);
	}
	if (s->nfound == 0) {
		if (s->isdir(text, ctx))
			ret = rfs_errf(err, RFS_E_SPEC,
				       "SPEC '%s' is a single directory: say what to add to it (BASE+DELTA) or subtract from it (INSTRUCT-BASE)",
				       text);
		else
			ret = rfs_errf(err, RFS_E_SPEC,
				       "SPEC '%s': no way to split it into existing directories or remote terms joined by '+' or '-': "
				       "no directory or Hub repository '%s'%s (for unusual paths use --base/--delta/--instruct; "
				       "hf://ORG/NAME names a Hub repository outright)",
				       text, text + s->furthest,
				       s->furthest ? " (nor any that a '+' or '-' in it would start)" : "");
		goto out;
	}
	if (s->found[0].nterms == 1) {
		ret = rfs_errf(err, RFS_E_SPEC,
			       "SPEC '%s' is a single directory: say what to add to it (BASE+DELTA) or subtract from it (INSTRUCT-BASE)",
			       text);
		goto out;
	}
	if (s->nfound > 1) {
		char r1[400], r2[400];

		describe(s, &s->found[0], r1, sizeof(r1));
		describe(s, &s->found[1], r2, sizeof(r2));
		ret = rfs_errf(err, RFS_E_SPEC,
			       "SPEC '%s' is ambiguous: it reads as %s and as %s%s; "
			       "name the terms with --base DIR --delta DIR [--scale S] (or --instruct DIR --base DIR)",
			       text, r1, r2, s->nfound > 2 ? " (and more)" : "");
		goto out;
	}
	if (s->found[0].scale[0] != 1.0) {
		ret = rfs_errf(err, RFS_E_SPEC, "SPEC '%s': the first term cannot be scaled", text);
		goto out;
	}
	for (i = 0; i < s->found[0].nterms; i++) {
		const struct reading *r = &s->found[0];

		if (r->bad[i]) {
			ret = rfs_errf(err, RFS_E_SPEC, "SPEC '%s': scale '%.*s' of '%.*s' %s", text,
				       (int)(r->beg[i] - 1 - r->sbeg[i]), text + r->sbeg[i],
				       (int)(r->end[i] - r->beg[i]), text + r->beg[i], r->bad[i]);
			goto out;
		}
	}
	for (i = 0; i < s->found[0].nterms; i++) {
		char *p = strndup(text + s->found[0].beg[i], s->found[0].end[i] - s->found[0].beg[i]);

		if (!p) {
			rfs_spec_release(&res);
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto out;
		}
		res.terms[i].path = p;
		res.terms[i].scale = s->found[0].scale[i];
		res.nterms = i + 1;
	}
	*out = res;
out:
	free(s->dead);
	free(s);
	return ret;
}

void rfs_spec_format(const struct rfs_spec *s, char *buf, size_t len)
{
	size_t i, off = 0;

	if (!len)
		return;
	buf[0] = 0;
	for (i = 0; i < s->nterms && off < len; i++) {
		double sc = s->terms[i].scale;
		const char *op = i == 0 ? "" : (sc < 0 ? "-" : "+");
		int n;

		if (sc < 0)
			sc = -sc;
		if (sc == 1.0) {
			n = snprintf(buf + off, len - off, "%s%s", op, s->terms[i].path);
		} else {
			char num[40];

			/* %g unless it loses digits: FLT_MIN as "1.17549e-38"
			 * would read back below FLT_MIN, and be refused */
			snprintf(num, sizeof(num), "%g", sc);
			if (strtod(num, NULL) != sc)
				snprintf(num, sizeof(num), "%.17g", sc);
			n = snprintf(buf + off, len - off, "%s%s*%s", op, num, s->terms[i].path);
		}
		if (n < 0)
			break;
		off += (size_t)n;
	}
}
