/*
 * Backend choice and the chunked driver shared by every CPU backend.
 */
#include "kern.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 2048 /* elements: two float32 work buffers = 16 KiB of stack */

#ifndef RFS_HAVE_X86_SIMD
const struct rfs_kern_ops *rfs_kern_avx2(void)
{
	return NULL;
}

const struct rfs_kern_ops *rfs_kern_avx512(void)
{
	return NULL;
}
#endif

static const struct rfs_kern_ops *best;
static pthread_once_t best_once = PTHREAD_ONCE_INIT;

static void pick_best(void)
{
	const char *want = getenv("RESIDFS_KERNEL");
	const struct rfs_kern_ops *z = rfs_kern_avx512();
	const struct rfs_kern_ops *y = rfs_kern_avx2();

	best = &rfs_kern_scalar;
	if (want && !strcmp(want, "scalar"))
		return;
	if (want && !strcmp(want, "avx2")) {
		if (y)
			best = y;
		return;
	}
	if (z)
		best = z;
	else if (y)
		best = y;
}

const struct rfs_kern_ops *rfs_kern_best(void)
{
	pthread_once(&best_once, pick_best);
	return best;
}

void rfs_kern_run(const struct rfs_kern_ops *ops, const struct rfs_kern_job *job)
{
	float acc[CHUNK], x[CHUNK];
	size_t osz = rfs_kdt_size(job->out_dtype);
	size_t pos = 0;
	unsigned k;

	if (ops->fused && !job->cast_first) {
		size_t full = job->n;

		for (k = 0; k < job->nterms; k++)
			if (job->terms[k].n < full)
				full = job->terms[k].n;
		if (full)
			pos = ops->fused(job, 0, full);
	}
	for (; pos < job->n; pos += CHUNK) {
		size_t len = job->n - pos < CHUNK ? job->n - pos : CHUNK;

		for (k = 0; k < job->nterms; k++) {
			const struct rfs_kern_term *t = &job->terms[k];
			size_t have = t->n > pos ? t->n - pos : 0;
			float *dst = k == 0 ? acc : x;
			const char *src = (const char *)t->data + pos * rfs_kdt_size(t->dtype);

			if (have > len)
				have = len;
			if (k > 0 && !job->cast_first && have == len && t->dtype == RFS_KDT_F32) {
				/* a whole float32 chunk: no need to copy it first */
				ops->axpy(acc, (const float *)src, t->scale, len);
				continue;
			}
			if (have)
				ops->to_f32(t->dtype, src, dst, have);
			if (have < len)
				memset(dst + have, 0, (len - have) * sizeof(float));
			if (k == 0) {
				/* cast-first: the package first casts the model itself
				 * to the output dtype (model_dtype) */
				if (job->cast_first)
					ops->round(job->out_dtype, acc, len);
				continue; /* terms[0].scale is 1 by contract */
			}
			if (job->cast_first) {
				if (t->scale != 1.0f) {
					size_t i;

					for (i = 0; i < len; i++)
						x[i] = t->scale * x[i];
					ops->round(t->dtype, x, len);
				}
				ops->round(job->out_dtype, x, len);
				ops->axpy(acc, x, 1.0f, len);
				ops->round(job->out_dtype, acc, len);
			} else {
				ops->axpy(acc, x, t->scale, len);
			}
		}
		ops->from_f32(job->out_dtype, acc, (char *)job->out + pos * osz, len);
	}
}
