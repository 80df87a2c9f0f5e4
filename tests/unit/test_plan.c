/*
 * test_plan.c - the pure decisions of the plan builder: how an output
 * tensor is made in apply mode (rfs_apply_classify, apply.h) and how a
 * delta's names map onto the base's (rfs_match_*, match.h).  Tensors and
 * sources are built by hand; nothing touches the file system.
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

#include "core/apply.h"
#include "core/match.h"

/* ---------------------------------------------------------------- helpers */

static struct rfs_st_tensor tensor(const char *name, enum rfs_dtype dt, unsigned ndim,
				   uint64_t d0, uint64_t d1)
{
	struct rfs_st_tensor t = { .name = (char *)name, .dtype = dt, .ndim = ndim };

	t.shape[0] = d0;
	t.shape[1] = d1;
	t.numel = ndim == 0 ? 1 : ndim == 1 ? d0 : d0 * d1;
	return t;
}

static struct rfs_apply_in input(const struct rfs_st_tensor *base, uint64_t vocab)
{
	struct rfs_apply_in in = {
		.base = base, .base_file = "base/model.safetensors", .nterms = 3,
		.out_dtype = -1, .vocab_rows = vocab, .vocab_from = "base/config.json",
	};

	return in;
}

static void with_delta(struct rfs_apply_in *in, unsigned k, const struct rfs_st_tensor *d)
{
	in->delta[k] = d;
	in->delta_file[k] = k == 1 ? "d1/model.safetensors" : "d2/model.safetensors";
}

/* ---------------------------------------------------------------- classify */

static void test_merge_and_passthrough(void **state)
{
	struct rfs_st_tensor b = tensor("w", RFS_DT_BF16, 2, 8, 4);
	struct rfs_st_tensor d = tensor("w", RFS_DT_F32, 2, 8, 4);
	struct rfs_st_tensor ids = tensor("pos", RFS_DT_I64, 2, 1, 16);
	struct rfs_apply_in in = input(&b, 0);
	struct rfs_apply_out o;
	struct rfs_err err = { 0 };

	(void)state;
	with_delta(&in, 1, &d);
	with_delta(&in, 2, &d);
	assert_int_equal(rfs_apply_classify(&in, &o, &err), 0);
	assert_int_equal(o.how, RFS_APPLY_MERGE);
	assert_int_equal(o.dtype, RFS_DT_BF16);
	assert_int_equal(o.ndelta, 2);
	assert_int_equal(o.rows, 8);
	/* a non-floating tensor without a delta passes through */
	in = input(&ids, 0);
	assert_int_equal(rfs_apply_classify(&in, &o, &err), 0);
	assert_int_equal(o.how, RFS_APPLY_PASS);
	assert_int_equal(o.dtype, RFS_DT_I64);
	/* --dtype changes floating outputs only */
	in.out_dtype = RFS_DT_F32;
	assert_int_equal(rfs_apply_classify(&in, &o, &err), 0);
	assert_int_equal(o.dtype, RFS_DT_I64);
}

static void test_missing_passthrough_convert(void **state)
{
	struct rfs_st_tensor b = tensor("w", RFS_DT_F16, 1, 8, 0);
	struct rfs_apply_in in = input(&b, 0);
	struct rfs_apply_out o;
	struct rfs_err err = { 0 };

	(void)state;
	assert_int_equal(rfs_apply_classify(&in, &o, &err), 0);
	assert_int_equal(o.how, RFS_APPLY_MISSING);
	in.passthrough = 1;
	assert_int_equal(rfs_apply_classify(&in, &o, &err), 0);
	assert_int_equal(o.how, RFS_APPLY_PASS);
	in.out_dtype = RFS_DT_BF16;
	assert_int_equal(rfs_apply_classify(&in, &o, &err), 0);
	assert_int_equal(o.how, RFS_APPLY_CONVERT);
	assert_int_equal(o.dtype, RFS_DT_BF16);
	in.out_dtype = RFS_DT_F16; /* the same dtype: nothing to convert */
	assert_int_equal(rfs_apply_classify(&in, &o, &err), 0);
	assert_int_equal(o.how, RFS_APPLY_PASS);
}

static void test_vocabulary_growth(void **state)
{
	struct rfs_st_tensor emb = tensor("embed", RFS_DT_BF16, 2, 100, 16);
	struct rfs_st_tensor d1 = tensor("embed", RFS_DT_F32, 2, 108, 16);
	struct rfs_st_tensor d2 = tensor("embed", RFS_DT_F32, 2, 104, 16);
	struct rfs_st_tensor norm = tensor("norm", RFS_DT_BF16, 1, 16, 0);
	struct rfs_st_tensor dn = tensor("norm", RFS_DT_F32, 1, 64, 0);
	struct rfs_apply_in in = input(&emb, 100);
	struct rfs_apply_out o = { .how = RFS_APPLY_PASS };
	struct rfs_err err = { 0 };

	(void)state;
	with_delta(&in, 1, &d1);
	with_delta(&in, 2, &d2);
	assert_int_equal(rfs_apply_classify(&in, &o, &err), 0);
	assert_int_equal(o.how, RFS_APPLY_MERGE);
	assert_int_equal(o.rows, 108); /* the largest delta's rows */
	/* the same growth for a tensor whose rows are not the vocabulary */
	in = input(&norm, 100);
	with_delta(&in, 1, &dn);
	o.how = RFS_APPLY_CONVERT;
	assert_int_equal(rfs_apply_classify(&in, &o, &err), RFS_E_MISMATCH);
	assert_int_equal(o.how, RFS_APPLY_CONVERT); /* untouched */
	assert_non_null(strstr(err.msg, "'norm'"));
	assert_non_null(strstr(err.msg, "[16]"));
	assert_non_null(strstr(err.msg, "[64]"));
	assert_non_null(strstr(err.msg, "vocab_size 100"));
	/* no vocab_size known: nothing may grow */
	in = input(&emb, 0);
	with_delta(&in, 1, &d1);
	assert_int_equal(rfs_apply_classify(&in, &o, &err), RFS_E_MISMATCH);
	assert_non_null(strstr(err.msg, "lacks"));
}

static void test_refusals(void **state)
{
	struct rfs_st_tensor b = tensor("w", RFS_DT_BF16, 2, 8, 4);
	struct rfs_st_tensor f64 = tensor("w", RFS_DT_F64, 2, 8, 4);
	struct rfs_st_tensor i8 = tensor("w", RFS_DT_I8, 2, 8, 4);
	struct rfs_st_tensor other = tensor("w", RFS_DT_F32, 2, 8, 5);
	struct rfs_st_tensor fewer = tensor("w", RFS_DT_F32, 2, 7, 4);
	struct rfs_st_tensor flat = tensor("w", RFS_DT_F32, 1, 32, 0);
	struct rfs_st_tensor d = tensor("w", RFS_DT_F32, 2, 8, 4);
	const struct { const struct rfs_st_tensor *base, *delta; int code; const char *says; } c[] = {
		{ &f64, &d, RFS_E_MISMATCH, "F64" },        /* delta for a non-merged dtype */
		{ &b, &i8, RFS_E_FORMAT, "I8" },            /* delta of a non-float dtype */
		{ &b, &other, RFS_E_MISMATCH, "[8, 5]" },    /* other dims differ */
		{ &b, &fewer, RFS_E_MISMATCH, "[7, 4]" },    /* fewer rows */
		{ &b, &flat, RFS_E_MISMATCH, "[32]" },       /* other rank */
	};
	struct rfs_err err;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct rfs_apply_in in = input(c[i].base, 8);
		struct rfs_apply_out o;

		memset(&err, 0, sizeof(err));
		with_delta(&in, 2, c[i].delta);
		if (rfs_apply_classify(&in, &o, &err) != c[i].code || !strstr(err.msg, c[i].says) ||
		    !strstr(err.msg, "d2/model.safetensors"))
			fail_msg("case %zu: '%s', want code %d saying '%s' and naming the delta file", i,
				 err.msg, c[i].code, c[i].says);
	}
}

/* ---------------------------------------------------------------- match */

struct fake_src {
	struct rfs_src src;
	struct rfs_st_tensor t[8];
	struct rfs_src_tensor st[8];
};

static void fake(struct fake_src *f, const char *dir, const char *const *names)
{
	size_t i;

	memset(f, 0, sizeof(*f));
	f->src.dir = (char *)dir;
	f->src.tensors = f->st;
	for (i = 0; names[i]; i++) {
		f->t[i] = tensor(names[i], RFS_DT_F32, 1, 4, 0);
		f->st[i].t = &f->t[i];
		assert_int_equal(rfs_strmap_put(&f->src.by_name, f->t[i].name, &f->st[i]), RFS_PUT_NEW);
	}
	f->src.ntensors = i;
}

static void test_match_modes(void **state)
{
	static const char *const bare[] = { "h.0.w", "h.1.w", "wte.weight", NULL };
	static const char *const head[] = { "transformer.h.0.w", "transformer.h.1.w",
					    "transformer.wte.weight", "lm_head.weight", NULL };
	static const char *const none[] = { "x", "y", NULL };
	struct fake_src a, b, c;
	struct rfs_match m;
	struct rfs_err err = { 0 };
	const struct rfs_src_tensor *t;

	(void)state;
	fake(&a, "bare", bare);
	fake(&b, "head", head);
	fake(&c, "none", none);
	/* exact */
	assert_int_equal(rfs_match_choose(&a.src, &a.src, &m, &err), 0);
	assert_int_equal(m.mode, RFS_MATCH_EXACT);
	t = rfs_match_find(&a.src, &m, "h.1.w");
	assert_non_null(t);
	assert_string_equal(t->t->name, "h.1.w");
	/* the delta has the head's names: a prefix is added to the base's */
	assert_int_equal(rfs_match_choose(&a.src, &b.src, &m, &err), 0);
	assert_int_equal(m.mode, RFS_MATCH_ADD_PREFIX);
	assert_string_equal(m.prefix, "transformer.");
	t = rfs_match_find(&b.src, &m, "wte.weight");
	assert_non_null(t);
	assert_string_equal(t->t->name, "transformer.wte.weight");
	/* the other way round: taken off */
	assert_int_equal(rfs_match_choose(&b.src, &a.src, &m, &err), 0);
	assert_int_equal(m.mode, RFS_MATCH_STRIP_PREFIX);
	t = rfs_match_find(&a.src, &m, "transformer.h.0.w");
	assert_non_null(t);
	assert_string_equal(t->t->name, "h.0.w");
	assert_null(rfs_match_find(&a.src, &m, "lm_head.weight"));
	/* nothing in common */
	assert_int_equal(rfs_match_choose(&a.src, &c.src, &m, &err), RFS_E_MISMATCH);
	assert_non_null(strstr(err.msg, "none"));
	assert_non_null(strstr(err.msg, "bare"));
	rfs_strmap_release(&a.src.by_name);
	rfs_strmap_release(&b.src.by_name);
	rfs_strmap_release(&c.src.by_name);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merge_and_passthrough),
		cmocka_unit_test(test_missing_passthrough_convert),
		cmocka_unit_test(test_vocabulary_growth),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_match_modes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
