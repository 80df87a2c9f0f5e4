/*
 * libFuzzer target for the SPEC parser (core/spec.c, rfs_spec_parse).
 *
 * Input: byte 0 chooses how the isdir test hook answers, the text up to
 * the first '\n' (or NUL) is the SPEC, every further line names a
 * "directory":
 *   flags & 3 == 0  a path is a directory when it is one of the lines
 *   flags & 3 == 1  ... when a hash of it has a chosen residue (density
 *                   from flags bits 2-4: 1 in 2 .. 1 in 9 paths)
 *   flags & 3 >= 2  either
 * so the fuzzer controls which substrings of the SPEC are directories and
 * the depth-first split search is explored (several readings, dead ends,
 * scale prefixes, many terms).
 *
 * Checks, beyond "no crash, no leak, no undefined behaviour":
 *   - a differential against a reference count of readings (dynamic
 *     programming over the '+'/'-' positions, each operand read as
 *     "NUMBER*PATH" or as a literal PATH, at most RFS_SPEC_MAX_TERMS
 *     terms): the SPEC parses iff there is exactly one reading, it has at
 *     least two terms, its first term is unscaled and every scale is
 *     usable (rfs_spec_scale_check; a number out of double's range is a
 *     scale, never a usable one); skipped for SPECs over 512 bytes and
 *     when the search hit its visit limit;
 *   - what parses: 2 <= nterms <= RFS_SPEC_MAX_TERMS, every path non-empty
 *     and a directory for the hook, every scale finite, zero or normal
 *     in float32 and accepted by rfs_spec_scale_check, the first 1, and
 *     the text is exactly that reading (paths, operators with the scales'
 *     signs, "NUMBER*" prefixes whose value is the scale);
 *   - rfs_spec_format() then rfs_spec_parse() again (directories: just the
 *     parsed paths), held to the same reference: when the canonical text
 *     has exactly one reading it parses, into the same paths and exactly
 *     the same scales (the format prints as many digits as that takes);
 *   - on failure: RFS_E_SPEC (or RFS_E_NOMEM), a message, and an empty spec.
 *
 * By hand (from the repository root): tests/fuzz/build.sh (it lists the
 * sources every target links), then
 *   build-fuzz/fuzz_spec -max_total_time=300 -timeout=10 -dict=tests/fuzz/spec.dict \
 *     "$(mktemp -d)" tests/fuzz/corpus/fuzz_spec
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/spec.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DIRS 32
#define DIFF_MAX_LEN 512
#define VISIT_LIMIT 100000 /* core/spec.c gives up after this many visits */

struct oracle {
	int use_list, use_hash;
	unsigned modulus;
	size_t ndirs;
	const char *dirs[MAX_DIRS];
	size_t calls;
};

static int is_dir(struct oracle *o, const char *p, size_t n)
{
	size_t i;

	if (o->use_list)
		for (i = 0; i < o->ndirs; i++)
			if (strlen(o->dirs[i]) == n && !memcmp(o->dirs[i], p, n))
				return 1;
	if (o->use_hash && n) {
		uint32_t h = 2166136261u;

		for (i = 0; i < n; i++)
			h = (h ^ (uint8_t)p[i]) * 16777619u;
		if ((h >> 7) % o->modulus == 0)
			return 1;
	}
	return 0;
}

static int hook(const char *path, void *ctx)
{
	struct oracle *o = ctx;

	o->calls++;
	return is_dir(o, path, strlen(path));
}

/* The "NUMBER*" prefix of t[b, e) as the parser reads it: returns the offset
 * of the path after '*' (0 when there is no number: the operand can only be
 * a path), *scale its value, *bad whether the scale is unusable (out of
 * double's range, or rfs_spec_scale_check refuses it). */
static size_t prefix(const char *t, size_t b, size_t e, double *scale, int *bad)
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
		return 0;
	*bad = errno == ERANGE || rfs_spec_scale_check(*scale, NULL) != 0;
	return (size_t)(star - t) + 1;
}

/* Readings of operand t[b, e): bit 0 literal, bit 1 "NUMBER*PATH". */
static unsigned operand(struct oracle *o, const char *t, size_t b, size_t e, double *scale,
			int *bad)
{
	unsigned r = 0;
	size_t pb;

	if (is_dir(o, t + b, e - b))
		r |= 1;
	pb = prefix(t, b, e, scale, bad);
	if (pb && pb < e && is_dir(o, t + pb, e - pb))
		r |= 2;
	return r;
}

static unsigned nvariants(unsigned v)
{
	return (v & 1) + (v >> 1 & 1);
}

struct expect {
	unsigned readings; /* 0, 1, or 2 meaning "more than one" */
	size_t nterms;     /* of the only reading */
	double scale0;     /* its first term's scale */
	int bad;           /* one of its scales is unusable */
};

static int op_end(const char *t, size_t len, size_t e)
{
	return e == len || ((t[e] == '+' || t[e] == '-') && e + 1 < len);
}

/* Reference: counts the readings of @t (capped at 2) by dynamic programming
 * over operand starts: f[p][k] = readings of t[p..] as exactly k operands;
 * then walks the only reading, if there is one. */
static struct expect reference(struct oracle *o, const char *t, size_t len)
{
	enum { K = RFS_SPEC_MAX_TERMS };
	struct expect x = { 0, 0, 1.0, 0 };
	unsigned (*f)[K + 1] = calloc(len + 2, sizeof(*f));
	unsigned char *alive = calloc(len + 2, 1); /* some f[p][k] != 0 */
	size_t p, e, k;

	if (!f || !alive)
		abort();
	for (p = len; p-- > 0;) {
		if (p > 0 && t[p - 1] != '+' && t[p - 1] != '-')
			continue; /* no operand starts here */
		for (e = p + 1; e <= len; e++) {
			double sc;
			int bad;
			unsigned v;

			if (!op_end(t, len, e) || (e < len && !alive[e + 1]))
				continue; /* no reading of the rest starts after this operand */
			v = nvariants(operand(o, t, p, e, &sc, &bad));
			if (!v)
				continue;
			if (e == len) {
				f[p][1] += v;
			} else {
				for (k = 2; k <= K; k++)
					f[p][k] += v * f[e + 1][k - 1];
			}
			for (k = 1; k <= K; k++) {
				if (f[p][k] > 2)
					f[p][k] = 2;
				alive[p] |= f[p][k] != 0;
			}
		}
	}
	for (k = 1; k <= K; k++) {
		x.readings += f[0][k];
		if (f[0][k])
			x.nterms = k;
	}
	if (x.readings > 2)
		x.readings = 2;
	if (x.readings == 1) {
		/* walk the only reading: at each start exactly one operand fits */
		for (p = 0, k = x.nterms; k > 0; k--) {
			for (e = p + 1; e <= len; e++) {
				double sc = 1.0;
				int bad = 0;
				unsigned v;

				if (!op_end(t, len, e) || (e == len ? k != 1 : !f[e + 1][k - 1]))
					continue;
				v = operand(o, t, p, e, &sc, &bad);
				if (!v)
					continue;
				if (v & 2)
					x.bad |= bad;
				else
					sc = 1.0;
				if (p == 0)
					x.scale0 = sc;
				break;
			}
			if (e > len)
				abort(); /* the count said there was one */
			p = e + 1;
		}
	}
	free(alive);
	free(f);
	return x;
}

/* Is @t exactly the reading @s: path0 (op [NUMBER '*'] path)* ? */
static int matches(const char *t, size_t len, size_t p, const struct rfs_spec *s, size_t i)
{
	const char *path;
	size_t n, pb, e;
	double want, sc, sign = 1.0;
	int bad;

	if (i == s->nterms)
		return p == len;
	path = s->terms[i].path;
	n = strlen(path);
	want = s->terms[i].scale;
	if (i > 0) {
		if (p >= len || (t[p] != '+' && t[p] != '-'))
			return 0;
		sign = t[p] == '-' ? -1.0 : 1.0;
		p++;
	}
	/* literal */
	if (want == sign && len - p >= n && !memcmp(t + p, path, n) &&
	    matches(t, len, p + n, s, i + 1))
		return 1;
	/* NUMBER*path */
	for (e = p + 1; e <= len; e++) {
		if (e < len && t[e] != '+' && t[e] != '-')
			continue;
		pb = prefix(t, p, e, &sc, &bad);
		if (!pb || bad || e - pb != n || memcmp(t + pb, path, n) || sign * sc != want)
			continue;
		if (matches(t, len, e, s, i + 1))
			return 1;
	}
	return 0;
}

static size_t nops(const char *t)
{
	size_t n = 0;

	for (; *t; t++)
		n += *t == '+' || *t == '-';
	return n;
}

/* Parses @t with @o, checks the result against the reference; returns 0 and
 * the spec in *@s when it parsed. */
static int check(struct oracle *o, const char *t, struct rfs_spec *s)
{
	struct rfs_err err;
	size_t len = strlen(t), i;
	int r;

	memset(&err, 0, sizeof(err));
	o->calls = 0;
	r = rfs_spec_parse(t, hook, o, s, &err);
	if (r) {
		CHECK(r == RFS_E_SPEC || r == RFS_E_NOMEM, "'%s': code %d", t, r);
		CHECK(err.code == r && err.msg[0], "'%s': code %d without a message", t, r);
		CHECK(s->nterms == 0, "'%s' refused with %zu terms left", t, s->nterms);
	} else {
		CHECK(s->nterms >= 2 && s->nterms <= RFS_SPEC_MAX_TERMS, "'%s': %zu terms", t,
		      s->nterms);
		CHECK(s->terms[0].scale == 1.0, "'%s': first scale %g", t, s->terms[0].scale);
		for (i = 0; i < s->nterms; i++) {
			CHECK(s->terms[i].path && s->terms[i].path[0], "'%s': empty term %zu", t, i);
			CHECK(isfinite(s->terms[i].scale) &&
				      rfs_spec_scale_check(s->terms[i].scale, NULL) == 0 &&
				      (s->terms[i].scale == 0 ||
				       fpclassify((float)s->terms[i].scale) == FP_NORMAL),
			      "'%s': term %zu scale %g", t, i, s->terms[i].scale);
			CHECK(is_dir(o, s->terms[i].path, strlen(s->terms[i].path)),
			      "'%s': term %zu '%s' is no directory", t, i, s->terms[i].path);
		}
		CHECK(matches(t, len, 0, s, 0), "'%s' is not the reading it parsed into", t);
	}
	if (len <= DIFF_MAX_LEN && o->calls <= VISIT_LIMIT) {
		struct expect x = reference(o, t, len);
		int want_ok = x.readings == 1 && x.nterms >= 2 && x.scale0 == 1.0 && !x.bad;

		if (r != RFS_E_NOMEM)
			/* spec-depth: docs/testing.md, "Findings" */
			CHECK(want_ok == (r == 0) ||
				      (nops(t) >= RFS_SPEC_MAX_TERMS && rfs_fuzz_skip("spec-depth")),
			      "'%s': %s, but the reference finds %u reading(s) (%zu terms, first scale %g%s)%s%s",
			      t, r ? "refused" : "parsed", x.readings, x.nterms, x.scale0,
			      x.bad ? ", an unusable scale" : "",
			      r ? ": " : "", r ? err.msg : "");
	}
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct oracle o, o2;
	struct rfs_spec s, s2;
	char *buf, *text, *line, *fmt;
	size_t i, fmtlen;

	if (size < 2)
		return 0;
	memset(&o, 0, sizeof(o));
	o.use_list = (data[0] & 3) != 1;
	o.use_hash = (data[0] & 3) != 0;
	o.modulus = 2 + (data[0] >> 2 & 7);
	buf = malloc(size);
	if (!buf)
		return 0;
	memcpy(buf, data + 1, size - 1);
	buf[size - 1] = 0;
	text = buf;
	line = strchr(buf, '\n');
	if (line) {
		*line++ = 0;
		while (line && o.ndirs < MAX_DIRS) {
			char *nl = strchr(line, '\n');

			if (nl)
				*nl = 0;
			o.dirs[o.ndirs++] = line;
			line = nl ? nl + 1 : NULL;
		}
	}
	if (check(&o, text, &s)) {
		free(buf);
		return 0;
	}

	/* canonical text, parsed again with just its own paths as directories */
	fmtlen = 1;
	for (i = 0; i < s.nterms; i++)
		fmtlen += strlen(s.terms[i].path) + 40;
	fmt = malloc(fmtlen);
	if (!fmt)
		abort();
	rfs_spec_format(&s, fmt, fmtlen);
	memset(&o2, 0, sizeof(o2));
	o2.use_list = 1;
	o2.ndirs = s.nterms;
	for (i = 0; i < s.nterms; i++)
		o2.dirs[i] = s.terms[i].path;
	/* check() holds the canonical text to the reference (so it must parse
	 * when it has exactly one reading); what parses must be the same terms */
	if (check(&o2, fmt, &s2) == 0) {
		CHECK(s2.nterms == s.nterms, "'%s' -> '%s': %zu terms, then %zu", text, fmt,
		      s.nterms, s2.nterms);
		for (i = 0; i < s.nterms; i++) {
			CHECK(!strcmp(s.terms[i].path, s2.terms[i].path),
			      "'%s' -> '%s': term %zu '%s' became '%s'", text, fmt, i,
			      s.terms[i].path, s2.terms[i].path);
			CHECK(s2.terms[i].scale == s.terms[i].scale,
			      "'%s' -> '%s': term %zu scale %.17g became %.17g", text, fmt, i,
			      s.terms[i].scale, s2.terms[i].scale);
		}
		rfs_spec_release(&s2);
	}
	free(fmt);
	rfs_spec_release(&s);
	CHECK(s.nterms == 0, "release left %zu terms", s.nterms);
	free(buf);
	return 0;
}
