/*
 * The arithmetic of mergekit's methods, element by element (merge.h,
 * docs/merges.md).
 *
 * Every operation is rounded to the compute dtype (cdt) as torch rounds a
 * tensor operation in that dtype: in float32 each product and sum is a
 * float32 operation (no fused multiply-add, but where mergekit's own CPU
 * kernel fuses one: linear's addcmul); in bfloat16 or float16 each result
 * is rounded to that dtype, and reductions over the models (torch's sum
 * of a stacked tensor) accumulate in float32 and round once.  The result
 * is rounded once more to the output dtype.
 *
 * Sparsification by magnitude (ties, breadcrumbs) needs thresholds over
 * the whole tensor: they are found by a radix select on the float32 bit
 * patterns of |delta| (two passes of a 65536-bucket histogram, no copy of
 * the tensor), once per tensor, on first access.  Elements tied at a
 * threshold are all kept: a rule that does not depend on read order
 * (mergekit's choice among them is torch's sort order).  dare's random
 * mask is a counter-based hash of (seed, tensor name, model, element):
 * the same bytes on every mount and read order.
 */
#include "merge.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/kern.h"
#include "tokalign.h"

#define CHUNK 16384u /* elements per step */

/* Rounds @x to dtype @t and back (exact for F32). */
static inline float rnd(enum rfs_kdt t, float x)
{
	switch (t) {
	case RFS_KDT_BF16: return rfs_bf16_to_f32(rfs_f32_to_bf16(x));
	case RFS_KDT_F16: return rfs_f16_to_f32(rfs_f32_to_f16(x));
	default: return x;
	}
}

/* splitmix64's finalizer: dare's counter-based hash. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The operands of elements [pos, pos + n) as float32 values rounded to the
 * compute dtype (mergekit converts the inputs to `dtype` on load). */
struct chunk {
	float *v[RFS_SPEC_MAX_TERMS];
	char *raw;
	float *tmp;  /* aligned vocabularies: one model's row of an average */
};

static int chunk_alloc(struct chunk *k, unsigned nops)
{
	unsigned i;

	memset(k, 0, sizeof(*k));
	k->raw = malloc((size_t)CHUNK * 4);
	k->tmp = malloc((size_t)CHUNK * sizeof(float));
	for (i = 0; i < nops; i++)
		k->v[i] = malloc((size_t)CHUNK * sizeof(float));
	for (i = 0; i < nops; i++)
		if (!k->v[i])
			return -1;
	return k->raw && k->tmp ? 0 : -1;
}

static void chunk_free(struct chunk *k, unsigned nops)
{
	unsigned i;

	for (i = 0; i < nops; i++)
		free(k->v[i]);
	free(k->raw);
	free(k->tmp);
}

/* Elements [@e, @e + @n) of operand @i's own tensor into @dst, rounded to
 * the compute dtype; with @want (@dst NULL), only asks for them (bsrc.h). */
static enum rfs_code load_own(const struct rfs_comp *c, unsigned i, char *raw, uint64_t e, size_t n, float *dst,
			      struct rfs_err *err)
{
	const struct rfs_operand *o = &c->ops[i];
	enum rfs_kdt cdt = c->merge->cdt;
	size_t isz = rfs_kdt_size(o->dtype), j;
	int ret;

	if (!dst) {
		rfs_bsrc_want(o->src, o->off + e * isz, n * isz);
		return 0;
	}
	ret = rfs_bsrc_pread(o->src, raw, n * isz, o->off + e * isz, err);
	if (ret)
		return ret;
	rfs_kern_best()->to_f32(o->dtype, raw, dst, n);
	if (cdt != RFS_KDT_F32 && o->dtype != cdt)
		for (j = 0; j < n; j++)
			dst[j] = rnd(cdt, dst[j]);
	return 0;
}

/*
 * Columns [@col, @col + @n) of output row @row for an operand whose model
 * lacks the token (tokalign.h): the donor's row, the average of the rows
 * of the models that have it (summed in model order and divided, each
 * operation rounded, as mergekit computes it), or zeros.
 */
static enum rfs_code load_default(const struct rfs_comp *c, struct chunk *k, uint64_t row, uint64_t col, size_t n,
				  float *dst, struct rfs_err *err)
{
	const struct rfs_mcomp *mc = c->merge;
	const struct rfs_vmap *vm = mc->vmap;
	uint64_t w = mc->row_w;
	unsigned a, cnt = 0;
	size_t j;
	int ret = 0;

	switch (vm->dkind[row]) {
	case RFS_VDEF_DONOR:
		return load_own(c, (unsigned)mc->src_op[vm->donor[row]], k ? k->raw : NULL,
				(uint64_t)vm->perm[vm->donor[row]][row] * w + col, n, dst, err);
	case RFS_VDEF_AVG:
		if (dst)
			memset(dst, 0, n * sizeof(float));
		for (a = 0; a < vm->navg && !ret; a++) {
			unsigned s = vm->avg[a];

			if (vm->perm[s][row] < 0)
				continue;
			ret = load_own(c, (unsigned)mc->src_op[s], k ? k->raw : NULL, (uint64_t)vm->perm[s][row] * w + col, n,
				       dst ? k->tmp : NULL, err);
			for (j = 0; dst && j < n; j++)
				dst[j] = rnd(mc->cdt, dst[j] + k->tmp[j]);
			cnt++;
		}
		for (j = 0; dst && !ret && j < n; j++)
			dst[j] = rnd(mc->cdt, dst[j] / (float)cnt);
		return ret;
	default:
		if (dst)
			memset(dst, 0, n * sizeof(float));
		return 0;
	}
}

/* Elements [@pos, @pos + @n) of operand @i of a tensor whose rows are
 * aligned by token, into @dst (or, NULL, only asked for): runs of rows
 * that follow each other in the model are read at once. */
static enum rfs_code load_aligned(const struct rfs_comp *c, struct chunk *k, unsigned i, uint64_t pos, uint64_t n,
				  float *dst, struct rfs_err *err)
{
	const struct rfs_mcomp *mc = c->merge;
	const int32_t *perm = mc->vmap->perm[mc->op_src[i]];
	uint64_t w = mc->row_w, at = 0;
	int ret = 0;

	while (w && at < n && !ret) {
		uint64_t e = pos + at, row = e / w, col = e % w, rr = row + 1;
		uint64_t span = n - at < w - col ? n - at : w - col;

		if (perm[row] >= 0) {
			while (at + span < n && (!dst || span < CHUNK) && perm[rr] == perm[row] + (int32_t)(rr - row)) {
				span += n - at - span < w ? n - at - span : w;
				rr++;
			}
			ret = load_own(c, i, k ? k->raw : NULL, (uint64_t)perm[row] * w + col, (size_t)span,
				       dst ? dst + at : NULL, err);
		} else {
			ret = load_default(c, k, row, col, (size_t)span, dst ? dst + at : NULL, err);
		}
		at += span;
	}
	return ret;
}

static enum rfs_code chunk_load(const struct rfs_comp *c, struct chunk *k, uint64_t pos, size_t n,
				struct rfs_err *err)
{
	unsigned i;
	int ret = 0;

	for (i = 0; i < c->nops && !ret; i++)
		ret = c->merge->vmap ? load_aligned(c, k, i, pos, n, k->v[i], err)
				     : load_own(c, i, k->raw, pos, n, k->v[i], err);
	return ret;
}

/* Asks every operand's elements [@e0, @e1) at once: remote ones are
 * fetched together (bsrc.h). */
static void want_range(const struct rfs_comp *c, uint64_t e0, uint64_t e1)
{
	unsigned i;

	for (i = 0; i < c->nops; i++) {
		const struct rfs_operand *o = &c->ops[i];

		if (c->merge->vmap)
			(void)load_aligned(c, NULL, i, e0, e1 - e0, NULL, NULL);
		else if (o->numel > e0)
			load_own(c, i, NULL, e0, (size_t)((o->numel < e1 ? o->numel : e1) - e0), NULL, NULL);
	}
}

/* ---- per-tensor numbers ---------------------------------------------------- */

/* Model @m's delta at element @j of chunk @k, in the compute dtype. */
static inline float delta(const struct rfs_mcomp *mc, const struct chunk *k, unsigned m, size_t j)
{
	return rnd(mc->cdt, k->v[1 + m][j] - k->v[0][j]);
}

/* The magnitude of @x as an ordered key: NaN above everything. */
static inline uint32_t mag_key(float x)
{
	uint32_t u = rfs_f32_bits(x) & 0x7FFFFFFFu;

	return u > 0x7F800000u ? 0x7FC00000u : u;
}

/* One order statistic asked of a tensor: model @m's |delta| at ascending
 * rank @rank (0-based), found into *@out. */
struct rank_q {
	unsigned m;
	uint64_t rank;
	float *out;
};

/*
 * Answers @nq order statistics of the tensor's |delta|s at once: two
 * passes over the tensor, each reading every operand once, with a
 * 65536-bucket histogram per question (first the high 16 bits of the
 * float32 pattern, then the low 16 within the bucket found).
 */
static enum rfs_code select_ranks(const struct rfs_comp *c, struct chunk *k, struct rank_q *q, unsigned nq,
				  struct rfs_err *err)
{
	uint64_t *h, below[2 * RFS_RECIPE_MAX_MODELS], pos;
	uint32_t hi[2 * RFS_RECIPE_MAX_MODELS] = { 0 };
	unsigned pass, i, x;
	int ret = 0;

	if (!nq)
		return 0;
	h = malloc((size_t)nq * 65536 * sizeof(*h));
	if (!h)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory computing '%s'", c->name);
	for (pass = 0; pass < 2 && !ret; pass++) {
		memset(h, 0, (size_t)nq * 65536 * sizeof(*h));
		for (pos = 0; pos < c->numel && !ret; pos += CHUNK) {
			size_t n = c->numel - pos < CHUNK ? (size_t)(c->numel - pos) : CHUNK, j;

			ret = chunk_load(c, k, pos, n, err);
			for (x = 0; !ret && x < nq; x++) {
				uint64_t *hx = h + (size_t)x * 65536;

				for (j = 0; j < n; j++) {
					uint32_t u = mag_key(delta(c->merge, k, q[x].m, j));

					if (!pass)
						hx[u >> 16]++;
					else if ((u >> 16) == hi[x])
						hx[u & 0xFFFF]++;
				}
			}
		}
		for (x = 0; !ret && x < nq; x++) {
			uint64_t *hx = h + (size_t)x * 65536;

			if (!pass)
				below[x] = 0;
			for (i = 0; i < 65536; i++) {
				if (below[x] + hx[i] > q[x].rank)
					break;
				below[x] += hx[i];
			}
			if (i == 65536)
				i = 65535;
			if (!pass)
				hi[x] = i;
			else
				*q[x].out = rfs_bits_f32(hi[x] << 16 | i);
		}
	}
	free(h);
	return ret;
}

/* dare: sum|d| and sum|kept d| of model @m, for the L1 rescale. */
static int dare_keep(const struct rfs_mcomp *mc, unsigned m, uint64_t j);

static enum rfs_code l1_sums(const struct rfs_comp *c, struct chunk *k, struct rfs_err *err)
{
	struct rfs_mcomp *mc = c->merge;
	double all[RFS_RECIPE_MAX_MODELS] = { 0 }, kept[RFS_RECIPE_MAX_MODELS] = { 0 };
	uint64_t pos;
	unsigned m;
	int ret = 0;

	for (pos = 0; pos < c->numel && !ret; pos += CHUNK) {
		size_t n = c->numel - pos < CHUNK ? (size_t)(c->numel - pos) : CHUNK, j;

		ret = chunk_load(c, k, pos, n, err);
		for (m = 0; !ret && m < mc->nmodels; m++)
			for (j = 0; j < n; j++) {
				double a = fabs((double)delta(mc, k, m, j));

				all[m] += a;
				if (dare_keep(mc, m, pos + j))
					kept[m] += a;
			}
	}
	/* rescaled_masked_tensor: before = r(sum|d|), after = r(sum|kept|); either
	 * below 1e-7: no rescale; else r(before / after) */
	for (m = 0; !ret && m < mc->nmodels; m++) {
		float before = rnd(mc->cdt, (float)all[m]), after = rnd(mc->cdt, (float)kept[m]);

		mc->l1_scale[m] = before < 1e-7f || after < 1e-7f ? 1.0f : rnd(mc->cdt, before / after);
	}
	return ret;
}

/* slerp: the coefficients of the two operands from their norms and dot. */
static enum rfs_code slerp_coefs(const struct rfs_comp *c, struct chunk *k, struct rfs_err *err)
{
	struct rfs_mcomp *mc = c->merge;
	double n0 = 0, n1 = 0, dot = 0, theta, s;
	uint64_t pos;
	int ret = 0;

	for (pos = 0; pos < c->numel && !ret; pos += CHUNK) {
		size_t n = c->numel - pos < CHUNK ? (size_t)(c->numel - pos) : CHUNK, j;

		ret = chunk_load(c, k, pos, n, err);
		for (j = 0; !ret && j < n; j++) {
			double x = k->v[0][j], y = k->v[1][j];

			n0 += x * x;
			n1 += y * y;
			dot += x * y;
		}
	}
	if (ret)
		return ret;
	n0 = sqrt(n0);
	n1 = sqrt(n1);
	/* mergekit normalises each by its norm (eps 1e-8 where it is 0) */
	dot /= (n0 > 1e-8 ? n0 : 1) * (n1 > 1e-8 ? n1 : 1);
	if (fabs(dot) > 0.9995) {
		mc->lerp = 1;
		return 0;
	}
	theta = acos(dot);
	s = sin(theta);
	mc->s0 = (float)(sin(theta - theta * mc->t) / s);
	mc->s1 = (float)(sin(theta * mc->t) / s);
	return 0;
}

/* The tensor's numbers, once (any thread; the others wait). */
enum rfs_code rfs_merge_prepare(const struct rfs_comp *c, struct rfs_err *err)
{
	struct rfs_mcomp *mc = c->merge;
	struct rank_q q[2 * RFS_RECIPE_MAX_MODELS];
	struct chunk k;
	unsigned m, nq = 0;
	int ret = 0;

	if (__atomic_load_n(&mc->ready, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&mc->lk);
	if (mc->ready) {
		pthread_mutex_unlock(&mc->lk);
		return 0;
	}
	/* what every element would otherwise derive again */
	mc->wsum = 0.0f;
	for (m = 0; m < mc->nmodels; m++) {
		mc->wc[m] = rnd(mc->cdt, mc->w[m]);
		mc->wsum += mc->wc[m];
		mc->pc[m] = rnd(mc->cdt, mc->density[m]);
		mc->dkey[m] = mix64(mix64(mix64(mc->seed ^ 0x5245534944465321ull) ^ mc->name_hash) ^ m);
	}
	mc->wsum = rnd(mc->cdt, mc->wsum);
	if (chunk_alloc(&k, c->nops)) {
		chunk_free(&k, c->nops);
		pthread_mutex_unlock(&mc->lk);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory computing '%s'", c->name);
	}
	switch (mc->method) {
	case RFS_MERGE_TIES:
		for (m = 0; m < mc->nmodels; m++) {
			/* the k largest: ascending rank numel - k */
			double want = (double)mc->density[m] * (double)c->numel;
			uint64_t kk = want < 1 ? 1 : (uint64_t)want;

			if (kk < c->numel) /* else density 1: everything */
				q[nq++] = (struct rank_q){ m, c->numel - kk, &mc->lo[m] };
		}
		ret = select_ranks(c, &k, q, nq, err);
		break;
	case RFS_MERGE_BREADCRUMBS:
	case RFS_MERGE_BREADCRUMBS_TIES:
		/* keep ascending ranks [bot, bot + target) of |d| */
		for (m = 0; m < mc->nmodels; m++) {
			uint64_t target = (uint64_t)((double)c->numel * (double)mc->density[m]);
			uint64_t top = (uint64_t)((double)c->numel * (double)mc->gamma[m]);
			uint64_t bot = c->numel > target + top ? c->numel - target - top : 0;

			if (mc->density[m] >= 1.0f || !target)
				continue; /* unchanged, or nothing kept (sparse_delta) */
			mc->lo_on[m] = 1;
			q[nq++] = (struct rank_q){ m, bot, &mc->lo[m] };
			if (bot + target < c->numel) {
				mc->hi_on[m] = 1;
				q[nq++] = (struct rank_q){ m, bot + target, &mc->hi[m] };
			}
		}
		ret = select_ranks(c, &k, q, nq, err);
		break;
	case RFS_MERGE_DARE_TIES:
	case RFS_MERGE_DARE_LINEAR:
		if (mc->rescale)
			ret = l1_sums(c, &k, err);
		break;
	case RFS_MERGE_SLERP:
		ret = slerp_coefs(c, &k, err);
		break;
	default:
		break;
	}
	chunk_free(&k, c->nops);
	if (!ret)
		__atomic_store_n(&mc->ready, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&mc->lk);
	return ret;
}

/* ---- elements ---------------------------------------------------------------- */

/* dare: is element @j of model @m kept?  u in [0, 1) from 24 bits of a
 * hash of (seed, tensor, model, element), kept when u < density. */
static int dare_keep(const struct rfs_mcomp *mc, unsigned m, uint64_t j)
{
	float u = (float)(mix64(mc->dkey[m] ^ j) >> 40) * 0x1p-24f;

	/* a bf16 tensor holds the probability rounded to bf16, as torch's does */
	return u < mc->pc[m];
}

/* Model @m's sparsified delta at element @j (absolute index @gj). */
static inline float sparse_delta(const struct rfs_mcomp *mc, unsigned m, float d, uint64_t gj)
{
	float a;

	switch (mc->method) {
	case RFS_MERGE_TIES:
		if (mc->density[m] >= 1.0f)
			return d;
		a = rfs_bits_f32(mag_key(d));
		return a >= mc->lo[m] ? d : 0.0f;
	case RFS_MERGE_BREADCRUMBS:
	case RFS_MERGE_BREADCRUMBS_TIES:
		if (mc->density[m] >= 1.0f)
			return d;
		if (!mc->lo_on[m])
			return 0.0f; /* int(density * numel) == 0: nothing kept */
		a = rfs_bits_f32(mag_key(d));
		return a >= mc->lo[m] && (!mc->hi_on[m] || a < mc->hi[m]) ? d : 0.0f;
	case RFS_MERGE_DARE_TIES:
	case RFS_MERGE_DARE_LINEAR:
		if (!dare_keep(mc, m, gj))
			return 0.0f;
		return mc->rescale ? rnd(mc->cdt, d * mc->l1_scale[m]) : d;
	default:
		return d;
	}
}

/* The task-arithmetic family at one element. */
static float task_element(const struct rfs_mcomp *mc, const struct chunk *k, size_t j, uint64_t gj)
{
	enum rfs_kdt t = mc->cdt;
	float b = k->v[0][j], wd[RFS_RECIPE_MAX_MODELS], mixed = 0.0f, div = 0.0f, sum = 0.0f;
	unsigned m;

	for (m = 0; m < mc->nmodels; m++) {
		float d = sparse_delta(mc, m, delta(mc, k, m, j), gj);

		wd[m] = rnd(t, mc->wc[m] * d);
	}
	if (mc->consensus) {
		int plus;

		for (m = 0; m < mc->nmodels; m++)
			sum += wd[m];
		sum = rnd(t, sum);
		plus = sum >= 0.0f; /* 0 counts as +, NaN as - */
		for (m = 0; m < mc->nmodels; m++)
			if (plus ? wd[m] > 0.0f : wd[m] < 0.0f) {
				mixed += wd[m];
				div += mc->wc[m];
			}
		mixed = rnd(t, mixed);
		div = rnd(t, div);
	} else {
		for (m = 0; m < mc->nmodels; m++)
			mixed += wd[m];
		mixed = rnd(t, mixed);
		div = fabsf(mc->wsum) < 1e-8f ? 1.0f : mc->wsum;
	}
	if (mc->normalize)
		mixed = rnd(t, mixed / (div == 0.0f ? 1.0f : div));
	if (mc->lambda != 1.0f) /* a Python scalar: float32, not rounded to the dtype */
		mixed = rnd(t, mixed * mc->lambda);
	return rnd(t, b + mixed);
}

static float linear_element(const struct rfs_mcomp *mc, const struct chunk *k, size_t j)
{
	float r = 0.0f, div = 0.0f;
	unsigned m;

	for (m = 0; m < mc->nmodels; m++) {
		r = fmaf(k->v[m][j], mc->w[m], r); /* torch's addcmul_ on the CPU */
		div += mc->w[m];
	}
	return rnd(mc->cdt, mc->normalize ? r / div : r);
}

static float slerp_element(const struct rfs_mcomp *mc, const struct chunk *k, size_t j)
{
	float x = k->v[0][j], y = k->v[1][j];

	if (mc->lerp)
		return rnd(mc->cdt, (1.0f - mc->t) * x + mc->t * y);
	return rnd(mc->cdt, mc->s0 * x + mc->s1 * y);
}

enum rfs_code rfs_merge_compute(const struct rfs_comp *c, void *dstv, uint64_t a, uint64_t len,
				const struct rfs_reader *rd, struct rfs_err *err)
{
	const struct rfs_kern_ops *ops = rfs_kern_best();
	const struct rfs_mcomp *mc = c->merge;
	size_t osz = rfs_kdt_size(c->out_dtype);
	uint64_t e0 = a / osz, e1 = (a + len + osz - 1) / osz, pos;
	char *dst = dstv, *out = NULL;
	float *res = NULL;
	struct chunk k;
	int ret;

	(void)rd;
	ret = rfs_merge_prepare(c, err);
	if (ret)
		return ret;
	if (chunk_alloc(&k, c->nops) || !(res = malloc(CHUNK * sizeof(float))) ||
	    !(out = malloc((size_t)CHUNK * osz))) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory computing '%s'", c->name);
		goto out;
	}
	want_range(c, e0, e1);
	for (pos = e0; pos < e1 && !ret; pos += CHUNK) {
		size_t n = e1 - pos < CHUNK ? (size_t)(e1 - pos) : CHUNK, j;
		uint64_t from = pos * osz < a ? a - pos * osz : 0;
		uint64_t to = (pos + n) * osz > a + len ? a + len - pos * osz : n * osz;

		ret = chunk_load(c, &k, pos, n, err);
		if (ret)
			break;
		for (j = 0; j < n; j++)
			res[j] = mc->method == RFS_MERGE_LINEAR ? linear_element(mc, &k, j)
				 : mc->method == RFS_MERGE_SLERP ? slerp_element(mc, &k, j)
				 : task_element(mc, &k, j, pos + j);
		ops->from_f32(c->out_dtype, res, out, n);
		memcpy(dst + (pos * osz + from - a), out + from, (size_t)(to - from));
	}
out:
	chunk_free(&k, c->nops);
	free(res);
	free(out);
	return ret;
}
