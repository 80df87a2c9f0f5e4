/*
 * test_spec.c - the SPEC grammar (spec.h): splitting only where every
 * operand is a directory, scales, ambiguity, errors, the long-flag form
 * (rfs_spec_add) and the canonical text (rfs_spec_format).
 *
 * A fake isdir callback answers from a fixed set of directory names, so
 * nothing here touches the file system except test_real_dirs.
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

#include <ftw.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/spec.h"

/* ---------------------------------------------------------------- helpers */

/* ctx: a NULL-terminated list of the directories that exist. */
static int fake_isdir(const char *path, void *ctx)
{
	const char *const *d;

	for (d = ctx; *d; d++)
		if (!strcmp(*d, path))
			return 1;
	return 0;
}

struct want_term {
	const char *path;
	double scale;
};

/* @text must parse into exactly @n terms @w with directories @dirs. */
static void parse_ok(const char *text, const char *const *dirs, const struct want_term *w,
		     size_t n)
{
	struct rfs_spec s;
	struct rfs_err err = { 0 };
	size_t i;
	int r = rfs_spec_parse(text, fake_isdir, (void *)dirs, &s, &err);

	if (r)
		fail_msg("'%s' refused (%d): %s", text, r, err.msg);
	if (s.nterms != n) {
		for (i = 0; i < s.nterms; i++)
			print_error("  term %zu: '%s' scale %g\n", i, s.terms[i].path,
				    s.terms[i].scale);
		rfs_spec_release(&s);
		fail_msg("'%s': %zu terms, want %zu", text, s.nterms, n);
	}
	for (i = 0; i < n; i++) {
		if (strcmp(s.terms[i].path, w[i].path) || s.terms[i].scale != w[i].scale) {
			print_error("'%s' term %zu: '%s' scale %g, want '%s' scale %g\n", text, i,
				    s.terms[i].path, s.terms[i].scale, w[i].path, w[i].scale);
			rfs_spec_release(&s);
			fail_msg("'%s' parsed wrongly", text);
		}
	}
	rfs_spec_release(&s);
	assert_int_equal(s.nterms, 0);
}

/*
 * @text must be refused with RFS_E_SPEC and a zeroed @out.  Returns the
 * message with the first copy of @text taken out, so that callers can
 * check what the message says beyond echoing the SPEC.
 */
static const char *parse_bad(const char *text, const char *const *dirs)
{
	static char rest[RFS_ERR_MSG_MAX];
	struct rfs_spec s;
	struct rfs_err err = { 0 };
	const char *echo;
	size_t i;
	int r;

	memset(&s, 0x5A, sizeof(s));
	r = rfs_spec_parse(text, fake_isdir, (void *)dirs, &s, &err);
	if (!r) {
		for (i = 0; i < s.nterms; i++)
			print_error("  term %zu: '%s' scale %g\n", i, s.terms[i].path,
				    s.terms[i].scale);
		rfs_spec_release(&s);
		fail_msg("'%s' accepted", text);
	}
	if (r != RFS_E_SPEC || err.code != RFS_E_SPEC)
		fail_msg("'%s': want RFS_E_SPEC, got %d (%s)", text, r, err.msg);
	assert_true(err.msg[0] != 0);
	/* on failure the spec is zeroed */
	assert_int_equal(s.nterms, 0);
	for (i = 0; i < RFS_SPEC_MAX_TERMS; i++)
		assert_null(s.terms[i].path);
	echo = *text ? strstr(err.msg, text) : NULL;
	if (echo) {
		size_t pre = (size_t)(echo - err.msg);

		memcpy(rest, err.msg, pre);
		snprintf(rest + pre, sizeof(rest) - pre, "%s", echo + strlen(text));
	} else {
		snprintf(rest, sizeof(rest), "%s", err.msg);
	}
	print_message("  '%.60s%s' -> %s\n", text, strlen(text) > 60 ? "..." : "", err.msg);
	return rest;
}

/* ------------------------------------------------------------ readings */

static void test_basic(void **state)
{
	static const char *const dirs[] = { "a", "b", "c", NULL };

	(void)state;
	parse_ok("a+b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 1 } }, 2);
	parse_ok("a-b", dirs, (struct want_term[]){ { "a", 1 }, { "b", -1 } }, 2);
	parse_ok("a+0.5*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 0.5 } }, 2);
	parse_ok("a+b+c", dirs, (struct want_term[]){ { "a", 1 }, { "b", 1 }, { "c", 1 } }, 3);
	parse_ok("a-0.25*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", -0.25 } }, 2);
	parse_ok("a+b-c", dirs, (struct want_term[]){ { "a", 1 }, { "b", 1 }, { "c", -1 } }, 3);
	parse_ok("a+2*b-0.5*c", dirs,
		 (struct want_term[]){ { "a", 1 }, { "b", 2 }, { "c", -0.5 } }, 3);
	/* the same directory twice is two terms */
	parse_ok("a+b+b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 1 }, { "b", 1 } }, 3);
}

static void test_scales(void **state)
{
	static const char *const dirs[] = { "a", "b", NULL };

	(void)state;
	parse_ok("a+1e-1*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 0.1 } }, 2);
	parse_ok("a-1e-1*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", -0.1 } }, 2);
	parse_ok("a+1.5e+0*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 1.5 } }, 2);
	parse_ok("a+.5*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 0.5 } }, 2);
	parse_ok("a+1*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 1 } }, 2);
	parse_ok("a+3*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 3 } }, 2);
	/* x*b is not a directory and x is not a number */
	parse_bad("a+x*b", dirs);
	parse_bad("a+0.5x*b", dirs);
	parse_bad("a+*b", dirs);
	parse_bad("a+0.5*", dirs);
	parse_bad("a+0.5**b", dirs);
	parse_bad("a+nan*b", dirs);
	parse_bad("a+inf*b", dirs);
	parse_bad("a+1e999*b", dirs);
	/* zero is a scale like any other (the term adds nothing) */
	parse_ok("a+0*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 0 } }, 2);
	parse_ok("a-0*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", -0.0 } }, 2);
	/* float32's normal range, just inside */
	parse_ok("a+3.4e38*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", 3.4e38 } }, 2);
	parse_ok("a-1.2e-38*b", dirs, (struct want_term[]){ { "a", 1 }, { "b", -1.2e-38 } }, 2);
}

/* A scale that does not survive the conversion to float32 (the arithmetic's
 * type) is refused, and the message names it and the term, not a missing
 * directory "1e39*b". */
static void test_scale_float32(void **state)
{
	static const char *const dirs[] = { "a", "b", "c", NULL };
	static const struct {
		const char *spec, *scale;
	} bad[] = {
		/* infinite in float32 (or in double) */
		{ "a+1e39*b", "'1e39'" }, { "a-1e39*b", "'1e39'" }, { "a+3.5e38*b", "'3.5e38'" },
		{ "a+1e999*b", "'1e999'" },
		/* 0 or subnormal in float32 (or in double) */
		{ "a+1e-46*b", "'1e-46'" }, { "a+1e-40*b", "'1e-40'" }, { "a-1e-39*b", "'1e-39'" },
		{ "a+1e-999*b", "'1e-999'" },
		{ "a+b+1e39*c", "'1e39'" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *rest = parse_bad(bad[i].spec, dirs);

		if (!strstr(rest, bad[i].scale) || !strstr(rest, "float32"))
			fail_msg("'%s': the message does not name the scale %s and float32: %s",
				 bad[i].spec, bad[i].scale, rest);
		if (strstr(rest, "no way to split"))
			fail_msg("'%s': refused as a missing directory: %s", bad[i].spec, rest);
	}
}

/* The long form's scale: rfs_spec_scale_parse (--scale) and rfs_spec_add. */
static void test_scale_parse(void **state)
{
	static const char *const good[] = { "0", "-0", "0.5", "-1", "1e-3", "3.4e38", "-1.2e-38", "2" };
	static const char *const bad[] = {
		"", " 1", "1 ", "x", "0.5x", "nan", "inf", "-inf", "1e39", "-3.5e38", "1e999",
		"1e-46", "1e-40", "1e-999", "-1e-310",
	};
	struct rfs_spec s = { 0 };
	struct rfs_err err = { 0 };
	double v;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		v = 42;
		if (rfs_spec_scale_parse(good[i], &v, &err))
			fail_msg("'%s' refused: %s", good[i], err.msg);
		assert_true(v == strtod(good[i], NULL));
		assert_int_equal(rfs_spec_scale_check(v, &err), 0);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[32];

		v = 42;
		memset(&err, 0, sizeof(err));
		if (!rfs_spec_scale_parse(bad[i], &v, &err))
			fail_msg("'%s' accepted as %g", bad[i], v);
		assert_int_equal(err.code, RFS_E_SPEC);
		assert_true(v == 42); /* untouched */
		snprintf(want, sizeof(want), "'%s'", bad[i]);
		if (!strstr(err.msg, want))
			fail_msg("'%s': the message does not quote it: %s", bad[i], err.msg);
	}
	assert_int_equal(rfs_spec_scale_check(1e39, &err), RFS_E_SPEC);
	assert_non_null(strstr(err.msg, "float32"));
	assert_int_equal(rfs_spec_scale_check(-1e-46, NULL), RFS_E_SPEC);
	assert_int_equal(rfs_spec_scale_check(0x1p128 - 0x1p103, NULL), RFS_E_SPEC); /* rounds to inf */
	assert_int_equal(rfs_spec_scale_check(0x1p128 - 0x1p104, NULL), 0);         /* FLT_MAX */
	assert_int_equal(rfs_spec_scale_check(0x1p-126, NULL), 0);                  /* FLT_MIN */
	assert_int_equal(rfs_spec_scale_check(0x1p-127, NULL), RFS_E_SPEC);         /* subnormal */
	/* rfs_spec_add checks too, and leaves the spec as it was */
	assert_int_equal(rfs_spec_add(&s, "base", 1.0, &err), 0);
	assert_int_equal(rfs_spec_add(&s, "delta", 1e39, &err), RFS_E_SPEC);
	assert_non_null(strstr(err.msg, "delta"));
	assert_int_equal(rfs_spec_add(&s, "delta", 1e-46, &err), RFS_E_SPEC);
	assert_int_equal(s.nterms, 1);
	assert_int_equal(rfs_spec_add(&s, "delta", 0.0, &err), 0);
	assert_int_equal(s.nterms, 2);
	rfs_spec_release(&s);
}

/* A path with '*' in it is a path when it exists. */
static void test_star_in_path(void **state)
{
	static const char *const dirs[] = { "a", "x*b", NULL };
	static const char *const both[] = { "a", "b", "0.5*b", NULL };
	const char *rest;

	(void)state;
	parse_ok("a+x*b", dirs, (struct want_term[]){ { "a", 1 }, { "x*b", 1 } }, 2);
	/* "0.5*b" is a directory and also 0.5 times b: two readings */
	rest = parse_bad("a+0.5*b", both);
	if (!strstr(rest, "--base"))
		fail_msg("ambiguity message does not show the flag form: %s", rest);
}

static void test_odd_paths(void **state)
{
	static const char *const llama[] = { "Meta-Llama-3-8B", "my-delta", NULL };
	static const char *const org[] = { "org/x+y-model", "d", "org/x", NULL };
	static const char *const absd[] = { "/data/base", "/data/delta-v2", "/data/d+2", NULL };
	static const char *const inst[] = { "Meta-Llama-3-8B-Instruct", "Meta-Llama-3-8B", NULL };

	(void)state;
	parse_ok("Meta-Llama-3-8B+my-delta", llama,
		 (struct want_term[]){ { "Meta-Llama-3-8B", 1 }, { "my-delta", 1 } }, 2);
	parse_ok("Meta-Llama-3-8B-my-delta", llama,
		 (struct want_term[]){ { "Meta-Llama-3-8B", 1 }, { "my-delta", -1 } }, 2);
	parse_ok("Meta-Llama-3-8B+0.5*my-delta", llama,
		 (struct want_term[]){ { "Meta-Llama-3-8B", 1 }, { "my-delta", 0.5 } }, 2);
	parse_ok("org/x+y-model+d", org,
		 (struct want_term[]){ { "org/x+y-model", 1 }, { "d", 1 } }, 2);
	parse_ok("/data/base+/data/delta-v2", absd,
		 (struct want_term[]){ { "/data/base", 1 }, { "/data/delta-v2", 1 } }, 2);
	parse_ok("/data/base-0.5*/data/d+2", absd,
		 (struct want_term[]){ { "/data/base", 1 }, { "/data/d+2", -0.5 } }, 2);
	parse_ok("/data/base+/data/d+2+/data/delta-v2", absd,
		 (struct want_term[]){ { "/data/base", 1 }, { "/data/d+2", 1 }, { "/data/delta-v2", 1 } }, 3);
	/* compute mode: INSTRUCT-BASE */
	parse_ok("Meta-Llama-3-8B-Instruct-Meta-Llama-3-8B", inst,
		 (struct want_term[]){ { "Meta-Llama-3-8B-Instruct", 1 }, { "Meta-Llama-3-8B", -1 } }, 2);
}

/*
 * A position found to start no reading when the terms ran out on the way
 * there must not be skipped when reached again with terms to spare: with
 * the directories b, b+b and a, "b+b+a+...+a" (fifteen a) has one reading,
 * b+b and fifteen a (16 terms), which a search that first tried b, b, a...
 * and hit the 16-term limit once refused (a fuzz finding).
 */
static void test_term_limit_memo(void **state)
{
	static const char *const dirs[] = { "b", "b+b", "a", NULL };
	struct want_term want[16] = { { "b+b", 1 } };
	char spec[64] = "b+b";
	int i;

	(void)state;
	for (i = 1; i < 16; i++) {
		strcat(spec, "+a");
		want[i] = (struct want_term){ "a", 1 };
	}
	parse_ok(spec, dirs, want, 16);
}

static void test_ambiguous(void **state)
{
	static const char *const dirs[] = { "a", "b", "a-b", "c", NULL };
	static const char *const many[] = { "x", "x-x", NULL };
	const char *rest;

	(void)state;
	/* a - b + c, or (a-b) + c */
	rest = parse_bad("a-b+c", dirs);
	if (!strstr(rest, "--base"))
		fail_msg("ambiguity message does not show the flag form: %s", rest);
	/* the readings are listed: the operand "a-b" of the second one and the
	 * lone "b" of the first one appear beyond the echoed SPEC */
	if (!strstr(rest, "a-b"))
		fail_msg("ambiguity message does not list the reading with 'a-b': %s", rest);
	if (!strstr(rest, "c"))
		fail_msg("ambiguity message does not list the readings: %s", rest);
	/* many readings */
	rest = parse_bad("x-x-x-x-x-x-x-x", many);
	if (!strstr(rest, "--base"))
		fail_msg("ambiguity message does not show the flag form: %s", rest);
	/* without the directory "a-b" there is one reading */
	parse_ok("a-b+c", (const char *const[]){ "a", "b", "c", NULL },
		 (struct want_term[]){ { "a", 1 }, { "b", -1 }, { "c", 1 } }, 3);
	/* without "a" and "b", another one */
	parse_ok("a-b+c", (const char *const[]){ "a-b", "c", NULL },
		 (struct want_term[]){ { "a-b", 1 }, { "c", 1 } }, 2);
}

static void test_no_reading(void **state)
{
	static const char *const dirs[] = { "a", "b", NULL };
	const char *rest;

	(void)state;
	/* the missing operand is named, beyond echoing the SPEC */
	rest = parse_bad("a+nosuchdir", dirs);
	if (!strstr(rest, "nosuchdir"))
		fail_msg("message does not name the missing operand 'nosuchdir': %s", rest);
	rest = parse_bad("gone-b", dirs);
	if (!strstr(rest, "gone"))
		fail_msg("message does not name the missing operand 'gone': %s", rest);
	rest = parse_bad("a+b+lost", dirs);
	if (!strstr(rest, "lost"))
		fail_msg("message does not name the missing operand 'lost': %s", rest);
	/* nothing exists */
	parse_bad("p+q", (const char *const[]){ NULL });
}

static void test_syntax(void **state)
{
	static const char *const dirs[] = { "a", "b", NULL };
	struct rfs_spec s;
	struct rfs_err err = { 0 };

	(void)state;
	parse_bad("", dirs);
	memset(&s, 0x5A, sizeof(s));
	assert_int_equal(rfs_spec_parse(NULL, fake_isdir, (void *)dirs, &s, &err), RFS_E_SPEC);
	assert_int_equal(s.nterms, 0);
	/* leading '+' / '-', trailing '+' / '-', doubled operators */
	parse_bad("+a+b", dirs);
	parse_bad("-a+b", dirs);
	parse_bad("a+b-", dirs);
	parse_bad("a+b+", dirs);
	parse_bad("a-b-", dirs);
	parse_bad("a++b", dirs);
	parse_bad("a+-b", dirs);
	parse_bad("+", dirs);
	parse_bad("-", dirs);
	parse_bad("a+", dirs);
}

static void test_term_limit(void **state)
{
	const char *dirs[RFS_SPEC_MAX_TERMS + 2];
	char names[RFS_SPEC_MAX_TERMS + 1][8];
	char text[512] = "";
	struct want_term w[RFS_SPEC_MAX_TERMS];
	size_t i;

	(void)state;
	for (i = 0; i <= RFS_SPEC_MAX_TERMS; i++) {
		snprintf(names[i], sizeof(names[i]), "t%zu", i);
		dirs[i] = names[i];
		if (i < RFS_SPEC_MAX_TERMS)
			w[i] = (struct want_term){ names[i], 1 };
	}
	dirs[RFS_SPEC_MAX_TERMS + 1] = NULL;
	for (i = 0; i < RFS_SPEC_MAX_TERMS; i++) {
		if (i)
			strcat(text, "+");
		strcat(text, names[i]);
	}
	parse_ok(text, dirs, w, RFS_SPEC_MAX_TERMS);
	strcat(text, "+");
	strcat(text, names[RFS_SPEC_MAX_TERMS]);
	parse_bad(text, dirs);
}

/* A long SPEC must not make the search explode. */
static void test_long_spec(void **state)
{
	static const char *const dirs[] = { "a", NULL };
	char text[2048];
	struct timespec t0, t1;
	double secs;
	size_t i;

	(void)state;
	for (i = 0; i + 2 < sizeof(text); i += 2) {
		text[i] = 'a';
		text[i + 1] = i % 4 ? '+' : '-';
	}
	text[i] = 'a';
	text[i + 1] = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	parse_bad(text, dirs); /* far more than RFS_SPEC_MAX_TERMS terms */
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (secs > 2.0)
		fail_msg("a %zu-byte SPEC took %.1f s to refuse", strlen(text), secs);
}

/*
 * In production every isdir question is a stat(2) (two with the strict
 * config.json test), so the search must not ask the same question over
 * and over: with many operands that are directories and no complete
 * reading (more terms than RFS_SPEC_MAX_TERMS), the number of questions
 * stays within a small multiple of the number of distinct spans.
 */
struct counting {
	const char *const *dirs;
	unsigned long calls;
};

static int counting_isdir(const char *path, void *ctx)
{
	struct counting *c = ctx;

	c->calls++;
	return fake_isdir(path, (void *)c->dirs);
}

static void test_isdir_calls(void **state)
{
	static const char *const dirs[] = { "a", "a-a", "a+a", "a-a-a", NULL };
	struct counting c = { dirs, 0 };
	struct rfs_spec s;
	struct rfs_err err = { 0 };
	char text[128];
	size_t i, ops, spans;

	(void)state;
	for (i = 0; i + 2 < sizeof(text); i += 2) {
		text[i] = 'a';
		text[i + 1] = (i / 2) % 3 ? '-' : '+';
	}
	text[i] = 'a';
	text[i + 1] = 0;
	ops = i / 2;
	spans = (ops + 1) * (ops + 2) / 2;
	assert_int_equal(rfs_spec_parse(text, counting_isdir, &c, &s, &err), RFS_E_SPEC);
	if (c.calls > 4 * spans)
		fail_msg("%zu-byte SPEC: %lu isdir questions for %zu distinct spans",
			 strlen(text), c.calls, spans);
}

/* Real directories through the default isdir (stat). */
static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void make_model(const char *root, const char *name)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, name);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/%s/config.json", root, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("{\"model_type\":\"llama\"}\n", f);
	fclose(f);
}

static void test_real_dirs(void **state)
{
	char root[] = "/tmp/rfs-test-spec.XXXXXX", text[1024], p1[300], p2[300];
	struct rfs_spec s;
	struct rfs_err err = { 0 };
	int r;

	(void)state;
	assert_non_null(mkdtemp(root));
	make_model(root, "Meta-Llama-3-8B");
	make_model(root, "my-delta");
	snprintf(p1, sizeof(p1), "%s/Meta-Llama-3-8B", root);
	snprintf(p2, sizeof(p2), "%s/my-delta", root);
	snprintf(text, sizeof(text), "%s+0.5*%s", p1, p2);
	r = rfs_spec_parse(text, NULL, NULL, &s, &err);
	if (r) {
		nftw(root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
		fail_msg("'%s' refused: %s", text, err.msg);
	}
	assert_int_equal(s.nterms, 2);
	assert_string_equal(s.terms[0].path, p1);
	assert_string_equal(s.terms[1].path, p2);
	assert_true(s.terms[1].scale == 0.5);
	rfs_spec_release(&s);
	snprintf(text, sizeof(text), "%s+%s/missing", p1, root);
	r = rfs_spec_parse(text, NULL, NULL, &s, &err);
	assert_int_equal(r, RFS_E_SPEC);
	assert_int_equal(s.nterms, 0);
	assert_int_equal(nftw(root, rm_one, 8, FTW_DEPTH | FTW_PHYS), 0);
}

/* ------------------------------------------------- long flags and format */

static void test_add(void **state)
{
	struct rfs_spec s = { 0 };
	struct rfs_err err = { 0 };
	char path[16];
	size_t i;

	(void)state;
	for (i = 0; i < RFS_SPEC_MAX_TERMS; i++) {
		snprintf(path, sizeof(path), "d%zu", i);
		assert_int_equal(rfs_spec_add(&s, path, i ? -0.5 : 1.0, &err), 0);
	}
	assert_int_equal(s.nterms, RFS_SPEC_MAX_TERMS);
	assert_ptr_not_equal(s.terms[0].path, path); /* copied */
	assert_string_equal(s.terms[0].path, "d0");
	assert_string_equal(s.terms[15].path, "d15");
	assert_true(s.terms[15].scale == -0.5);
	/* full */
	assert_int_equal(rfs_spec_add(&s, "one-too-many", 1.0, &err), RFS_E_SPEC);
	assert_int_equal(err.code, RFS_E_SPEC);
	assert_int_equal(s.nterms, RFS_SPEC_MAX_TERMS);
	assert_string_equal(s.terms[15].path, "d15");
	rfs_spec_release(&s);
	assert_int_equal(s.nterms, 0);
	assert_null(s.terms[0].path);
	rfs_spec_release(&s); /* twice is fine */
	rfs_spec_release(NULL);
	/* usable again after release */
	assert_int_equal(rfs_spec_add(&s, "again", 1.0, &err), 0);
	assert_int_equal(s.nterms, 1);
	rfs_spec_release(&s);
}

static void format_is(const struct want_term *t, size_t n, const char *want)
{
	struct rfs_spec s = { 0 };
	struct rfs_err err;
	char buf[256];
	size_t i;

	for (i = 0; i < n; i++)
		assert_int_equal(rfs_spec_add(&s, t[i].path, t[i].scale, &err), 0);
	memset(buf, 'X', sizeof(buf));
	rfs_spec_format(&s, buf, sizeof(buf));
	rfs_spec_release(&s);
	assert_string_equal(buf, want);
}

static void test_format(void **state)
{
	struct rfs_spec s = { 0 };
	struct rfs_err err;
	char buf[64];

	(void)state;
	format_is((struct want_term[]){ { "base", 1 }, { "delta", 0.5 } }, 2, "base+0.5*delta");
	format_is((struct want_term[]){ { "base", 1 }, { "delta", 1 } }, 2, "base+delta");
	format_is((struct want_term[]){ { "a", 1 }, { "b", -1 } }, 2, "a-b");
	format_is((struct want_term[]){ { "a", 1 }, { "b", 1 }, { "c", -0.25 } }, 3, "a+b-0.25*c");
	format_is((struct want_term[]){ { "a", 1 }, { "b", 2 } }, 2, "a+2*b");
	format_is((struct want_term[]){ { "a", 1 }, { "b", 0.1 } }, 2, "a+0.1*b");
	format_is((struct want_term[]){ { "Meta-Llama-3-8B", 1 }, { "my-delta", 1 } }, 2,
		  "Meta-Llama-3-8B+my-delta");
	format_is((struct want_term[]){ { "/abs/x+y", 1 }, { "/abs/d", -0.5 } }, 2,
		  "/abs/x+y-0.5*/abs/d");
	format_is(NULL, 0, "");

	/* truncation always leaves a NUL-terminated prefix */
	assert_int_equal(rfs_spec_add(&s, "base", 1, &err), 0);
	assert_int_equal(rfs_spec_add(&s, "delta", 0.5, &err), 0);
	memset(buf, 'X', sizeof(buf));
	rfs_spec_format(&s, buf, 5);
	assert_string_equal(buf, "base");
	memset(buf, 'X', sizeof(buf));
	rfs_spec_format(&s, buf, 7);
	assert_true(strlen(buf) <= 6);
	assert_memory_equal(buf, "base+0", strlen(buf));
	assert_int_equal(buf[7], 'X'); /* nothing written past len */
	memset(buf, 'X', sizeof(buf));
	rfs_spec_format(&s, buf, 1);
	assert_string_equal(buf, "");
	assert_int_equal(buf[1], 'X');
	buf[0] = 'X';
	rfs_spec_format(&s, buf, 0);
	assert_int_equal(buf[0], 'X');
	rfs_spec_release(&s);
}

/* format(parse(x)) == x for canonical SPECs. */
static void test_format_roundtrip(void **state)
{
	static const char *const dirs[] = { "base", "d1", "d-2", "x+y", NULL };
	static const char *const specs[] = {
		"base+d1", "base-d1", "base+0.5*d1", "base+d1-0.25*d-2", "base+3*x+y", "x+y-base",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct rfs_spec s;
		struct rfs_err err = { 0 };
		char buf[128];

		if (rfs_spec_parse(specs[i], fake_isdir, (void *)dirs, &s, &err))
			fail_msg("'%s' refused: %s", specs[i], err.msg);
		rfs_spec_format(&s, buf, sizeof(buf));
		rfs_spec_release(&s);
		assert_string_equal(buf, specs[i]);
	}
	/* scales that %g would round: the text reads back as the same scale,
	 * FLT_MIN included (as "1.17549e-38" it would be refused) */
	{
		static const double scales[] = { 0x1p-126, -0x1p-126, 1.0 / 3, 0x1p128 - 0x1p104, 0.1 };
		static const char *const two[] = { "base", "d1", NULL };

		for (i = 0; i < sizeof(scales) / sizeof(scales[0]); i++) {
			struct rfs_spec s = { 0 }, back;
			struct rfs_err err = { 0 };
			char buf[128];

			assert_int_equal(rfs_spec_add(&s, "base", 1.0, &err), 0);
			assert_int_equal(rfs_spec_add(&s, "d1", scales[i], &err), 0);
			rfs_spec_format(&s, buf, sizeof(buf));
			rfs_spec_release(&s);
			if (rfs_spec_parse(buf, fake_isdir, (void *)two, &back, &err))
				fail_msg("'%s' refused: %s", buf, err.msg);
			assert_true(back.terms[1].scale == scales[i]);
			rfs_spec_release(&back);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_scales),
		cmocka_unit_test(test_scale_float32),
		cmocka_unit_test(test_scale_parse),
		cmocka_unit_test(test_star_in_path),
		cmocka_unit_test(test_odd_paths),
		cmocka_unit_test(test_ambiguous),
		cmocka_unit_test(test_term_limit_memo),
		cmocka_unit_test(test_no_reading),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_term_limit),
		cmocka_unit_test(test_long_spec),
		cmocka_unit_test(test_isdir_calls),
		cmocka_unit_test(test_real_dirs),
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_format_roundtrip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
