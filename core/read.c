/*
 * Reading a plan (read.h): literal and passthrough segments, and computed
 * tensors (operand windows mapped per request under the SIGBUS guard of
 * busguard.c where the source can map, or read with its pread; the
 * arithmetic on the reader's backend,
 * kernels/backend.c), through the reader's block cache when it has one:
 * this file tells the cache what a block is and which blocks follow it.
 * Everything here is thread-safe: the plan is immutable, the backend and
 * the cache come with each call (struct rfs_reader) and scratch buffers
 * are per thread.  Source bytes are reached only through byte sources
 * (bsrc.h): where they come from is no concern of this file.
 */
#include "read.h"
#include "merge.h"
#include "plan_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../kernels/backend.h"
#include "busguard.h"
#include "cache.h"
#include "tunables.h"
#include "util.h"

#define COMP_CHUNK RFS_TUNE_COMP_CHUNK /* elements computed per step */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct batch;

/* Per-thread operand buffers and batch, kept between reads so the read
 * path does not allocate (FUSE threads come and go: freed by the key's
 * destructor). */
struct scratch {
	char *buf[RFS_SPEC_MAX_TERMS + 1];
	struct batch *batch;
};

static void batch_free(struct batch *b);

/* The file's only process-wide state: the key of the per-thread scratch,
 * made once; what it points to belongs to each thread. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
	struct scratch *s = p;
	unsigned i;

	for (i = 0; i <= RFS_SPEC_MAX_TERMS; i++)
		free(s->buf[i]);
	batch_free(s->batch);
	free(s);
}

static void scratch_init(void)
{
	pthread_key_create(&scratch_key, scratch_free);
}

static struct scratch *get_scratch(void)
{
	struct scratch *s;

	pthread_once(&scratch_once, scratch_init);
	s = pthread_getspecific(scratch_key);
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (s && pthread_setspecific(scratch_key, s)) {
			free(s);
			s = NULL;
		}
	}
	return s;
}

/* Each buffer holds COMP_CHUNK float32 values (the widest dtype). */
static char *scratch_buf(struct scratch *s, unsigned i)
{
	if (!s->buf[i])
		s->buf[i] = malloc((size_t)COMP_CHUNK * 4);
	return s->buf[i];
}

/* ---- the mapped path ----------------------------------------------------
 * Reading operands with pread copies three bytes per output byte out of the
 * page cache; mapping the operand ranges of a request and computing from
 * the mappings removes that copy (it was half of the CPU time).  The
 * windows are unmapped at the end of each call, so the daemon's resident
 * size does not grow with the model.
 *
 * A source file truncated under us raises SIGBUS when a window's page past
 * the new end is touched: windows are read only while the SIGBUS guard is
 * armed over them (busguard.h), which maps a zero page over the fault and
 * records it; the computation runs to its end and its result is then
 * thrown away and the read fails with EIO, naming the tensor and file.
 * Without the guard installed (rfs_busguard_install) nothing is mapped.
 */

/* ---- batches --------------------------------------------------------------
 * The computed pieces of one request (a FUSE read, an export block, a cache
 * block) go to the backend as one batch of jobs, so that the GPU gets one
 * submission per request however many tensors it covers.  A batch holds
 * the operand windows of its tensors until it is run; it belongs to one
 * thread.
 */

#define BATCH_COMPS RFS_TUNE_BATCH_TENSORS

/*
 * Small operands are read, not mapped.  Mapping a window costs an mmap, a
 * page fault and a munmap (about 10 us); a model of 100k tensors of a few
 * dozen bytes was read at 2.5 MB/s that way.  An operand range under
 * STAGE_SMALL bytes is served from a staged chunk of its file instead:
 * one pread of STAGE_CHUNK bytes (or to the end of the file) that the
 * operands of the next tensors, which lie next to it in the file, share.
 * A batch stages at most STAGE_BYTES; past that, small operands are mapped
 * like the others.
 */
#define STAGE_SMALL RFS_TUNE_STAGE_SMALL
#define STAGE_CHUNK RFS_TUNE_STAGE_CHUNK
#define STAGE_BYTES RFS_TUNE_STAGE_BYTES
#define STAGE_SLOTS RFS_TUNE_STAGE_SLOTS

struct staged {
	struct rfs_bsrc *src;
	uint64_t off;
	size_t len;
	char *data;
};

struct edge { /* an element cut by the request's edge: computed aside */
	char *dst;
	unsigned skip, len;
	char tmp[8];
};

struct batch {
	unsigned ncomp, njobs, nwin, nedge;
	const struct rfs_comp *comp[BATCH_COMPS];
	unsigned win0[BATCH_COMPS];                 /* first window of each tensor */
	struct rfs_busguard_win win[BATCH_COMPS * RFS_SPEC_MAX_TERMS];
	struct rfs_kern_job jobs[BATCH_COMPS * 3];  /* left edge, middle, right edge */
	struct rfs_kern_term terms[BATCH_COMPS * 3][RFS_SPEC_MAX_TERMS];
	struct edge edge[BATCH_COMPS * 2];
	char *stage;                                /* STAGE_BYTES, on first use */
	size_t staged_bytes;
	unsigned nstaged;
	struct staged staged[STAGE_SLOTS];
};

/*
 * Bytes [off, off + len) of @src from a staged chunk, reading one when no
 * chunk holds them; NULL when the batch has no room left or the read fails
 * (the caller maps the range instead, or computes with pread, whose paths
 * report errors and a truncated source properly).
 */
static const char *stage_range(struct batch *b, struct rfs_bsrc *src, uint64_t off, size_t len)
{
	struct rfs_err e = { 0 };
	struct staged *c;
	size_t want = STAGE_CHUNK, got;
	unsigned i;

	for (i = 0; i < b->nstaged; i++) {
		c = &b->staged[i];
		if (c->src == src && off >= c->off && off + len <= c->off + c->len)
			return c->data + (off - c->off);
	}
	if (b->nstaged == STAGE_SLOTS || b->staged_bytes + want > STAGE_BYTES)
		return NULL;
	if (!b->stage && !(b->stage = malloc(STAGE_BYTES)))
		return NULL;
	c = &b->staged[b->nstaged];
	c->data = b->stage + b->staged_bytes;
	/* the chunk, or up to the end of the source */
	got = off >= src->size ? 0 : src->size - off < want ? (size_t)(src->size - off) : want;
	if (got < len || rfs_bsrc_pread(src, c->data, got, off, &e))
		return NULL;
	c->src = src;
	c->off = off;
	c->len = got;
	b->nstaged++;
	b->staged_bytes += want;
	return c->data;
}

static void batch_free(struct batch *b)
{
	if (b)
		free(b->stage);
	free(b);
}

static struct batch *get_batch(void)
{
	struct scratch *s = get_scratch();

	if (s && !s->batch)
		s->batch = calloc(1, sizeof(*s->batch));
	return s ? s->batch : NULL;
}

static int batch_full(const struct batch *b)
{
	return b->ncomp == BATCH_COMPS;
}

/* Adds the job for elements [rel, rel + n) of the tensor's window range. */
static void add_job(struct batch *b, const struct rfs_comp *c, const char *const *base,
		    const uint64_t *have, uint64_t rel, size_t n, void *out)
{
	struct rfs_kern_term *terms = b->terms[b->njobs];
	unsigned k;

	for (k = 0; k < c->nops; k++) {
		uint64_t h = have[k] > rel ? have[k] - rel : 0;

		terms[k] = (struct rfs_kern_term){
			c->ops[k].dtype, h ? base[k] + rel * rfs_kdt_size(c->ops[k].dtype) : NULL,
			(size_t)(h < n ? h : n), c->ops[k].scale,
		};
	}
	b->jobs[b->njobs++] = (struct rfs_kern_job){
		.out_dtype = c->out_dtype, .out = out, .n = n, .nterms = c->nops,
		.terms = terms, .cast_first = c->cast_first,
	};
}

/* The element at @rel, of which bytes [skip, skip + len) go to @dst. */
static void add_edge(struct batch *b, const struct rfs_comp *c, const char *const *base,
		     const uint64_t *have, uint64_t rel, char *dst, uint64_t skip, uint64_t len)
{
	struct edge *e = &b->edge[b->nedge++];

	e->dst = dst;
	e->skip = (unsigned)skip;
	e->len = (unsigned)len;
	add_job(b, c, base, have, rel, 1, e->tmp);
}

/*
 * Adds bytes [a, a + len) of tensor @c, to land at @dst, with its operand
 * windows mapped.  Returns 0, or 1 when a window could not be mapped
 * (nothing added: compute this one with pread).  The batch must not be
 * full.  Whole elements are computed straight into @dst, the partial
 * ones at either edge through a small buffer.
 */
static int batch_add(struct batch *b, const struct rfs_comp *c, char *dst, uint64_t a,
		     uint64_t len)
{
	size_t osz = rfs_kdt_size(c->out_dtype);
	uint64_t e0 = a / osz, e1 = (a + len + osz - 1) / osz;
	uint64_t first = (a + osz - 1) / osz, last = (a + len) / osz;
	struct rfs_busguard_win *win = b->win + b->nwin;
	struct rfs_err e = { 0 };
	const char *base[RFS_SPEC_MAX_TERMS];
	uint64_t have[RFS_SPEC_MAX_TERMS];
	unsigned k;

	if (c->merge)
		return 1; /* a recipe's method: rfs_merge_compute */
	memset(win, 0, c->nops * sizeof(*win));
	for (k = 0; k < c->nops; k++) {
		const struct rfs_operand *o = &c->ops[k];
		size_t isz = rfs_kdt_size(o->dtype);
		uint64_t off;

		have[k] = o->numel > e0 ? (o->numel < e1 ? o->numel : e1) - e0 : 0;
		base[k] = NULL;
		if (!have[k])
			continue;
		off = o->off + e0 * isz;
		if (have[k] * isz < STAGE_SMALL &&
		    (base[k] = stage_range(b, o->src, off, (size_t)(have[k] * isz))))
			continue;
		/* a source that cannot map (a remote one): compute with pread */
		if (!o->src->ops->map ||
		    o->src->ops->map(o->src, off, (size_t)(have[k] * isz), &win[k].map,
				     &win[k].maplen, &base[k], &e)) {
			win[k].map = NULL;
			while (k--)
				if (win[k].map)
					c->ops[k].src->ops->unmap(c->ops[k].src, win[k].map,
								 win[k].maplen);
			return 1;
		}
	}
	b->comp[b->ncomp] = c;
	b->win0[b->ncomp++] = b->nwin;
	b->nwin += c->nops;

	if (first > last) { /* inside one element */
		add_edge(b, c, base, have, 0, dst, a - e0 * osz, len);
		return 0;
	}
	if (a % osz)
		add_edge(b, c, base, have, 0, dst, a % osz, osz - a % osz);
	if (last > first)
		add_job(b, c, base, have, first - e0, (size_t)(last - first),
			dst + (first * osz - a));
	if ((a + len) % osz)
		add_edge(b, c, base, have, last - e0, dst + (last * osz - a), 0, (a + len) % osz);
	return 0;
}

/*
 * Runs the batch with the SIGBUS guard over its windows (see above), puts
 * the edge elements in place, unmaps the windows and empties the batch.
 * A source that ended early fails the whole batch with EIO, naming the
 * tensor and file.
 */
static int batch_run(struct batch *b, struct rfs_backend *be, struct rfs_err *err)
{
	void *bus_addr = NULL;
	unsigned i, k;
	int ret = 0;

	if (!b->njobs && !b->nwin)
		return 0;
	rfs_busguard_arm(b->win, b->nwin);
	rfs_backend_run_batch(be, b->jobs, b->njobs);
	if (rfs_busguard_disarm(&bus_addr)) {
		ret = rfs_errf(err, RFS_E_IO, "a source file ended early");
		for (i = 0; i < b->ncomp; i++)
			for (k = 0; k < b->comp[i]->nops; k++) {
				const struct rfs_busguard_win *w = &b->win[b->win0[i] + k];

				if (w->map && (char *)bus_addr >= w->map &&
				    (char *)bus_addr < w->map + w->maplen)
					ret = rfs_errf(err, RFS_E_IO,
						       "tensor '%s': %s ended early: it was truncated or replaced after it was checked",
						       b->comp[i]->name, b->comp[i]->ops[k].src->name);
			}
	} else {
		for (i = 0; i < b->nedge; i++)
			memcpy(b->edge[i].dst, b->edge[i].tmp + b->edge[i].skip, b->edge[i].len);
	}
	for (i = 0; i < b->ncomp; i++)
		for (k = 0; k < b->comp[i]->nops; k++) {
			struct rfs_busguard_win *w = &b->win[b->win0[i] + k];
			struct rfs_bsrc *src = b->comp[i]->ops[k].src;

			if (w->map)
				src->ops->unmap(src, w->map, w->maplen);
		}
	b->ncomp = b->njobs = b->nwin = b->nedge = 0;
	b->nstaged = 0;
	b->staged_bytes = 0;
	return ret;
}

/* Computes from mapped windows: 0 or an rfs code, with *@mapped 0 when
 * the windows could not be mapped (nothing done: use pread). */
static int compute_mapped(const struct rfs_comp *c, char *dst, uint64_t a, uint64_t len,
			  struct rfs_backend *be, int *mapped, struct rfs_err *err)
{
	struct batch *b = get_batch();

	/* a batch of the caller's still pending (not expected: callers run
	 * theirs first) is left alone; this piece is read with pread */
	*mapped = b && !b->ncomp && !batch_add(b, c, dst, a, len);
	return *mapped ? batch_run(b, be, err) : 0;
}

/* Lets go of the operands 0..@n of @c that are pinned (pin[k] set). */
static void unpin_all(const struct rfs_comp *c, void *const *pin, unsigned n)
{
	unsigned k;

	for (k = 0; k < n; k++)
		if (pin[k])
			c->ops[k].src->ops->unpin(c->ops[k].src, pin[k]);
}

enum rfs_code rfs_comp_compute(const struct rfs_comp *c, void *dstv, uint64_t a, uint64_t len,
			       const struct rfs_reader *rd, struct rfs_err *err)
{
	size_t osz = rfs_kdt_size(c->out_dtype);
	uint64_t e0 = a / osz, e1 = (a + len + osz - 1) / osz, pos;
	struct rfs_kern_term terms[RFS_SPEC_MAX_TERMS];
	void *pin[RFS_SPEC_MAX_TERMS];
	struct scratch *sc;
	char *in[RFS_SPEC_MAX_TERMS], *out, *dst = dstv;
	unsigned k;

	if (c->merge)
		return rfs_merge_compute(c, dstv, a, len, rd, err);
	if (rfs_busguard_ready()) {
		int mapped, ret = compute_mapped(c, dst, a, len, rd->be, &mapped, err);

		if (mapped)
			return ret;
	}
	/* could not map: read the operands into per-thread buffers */
	sc = get_scratch();
	if (!sc || !(out = scratch_buf(sc, RFS_SPEC_MAX_TERMS)))
		return rfs_errf(err, RFS_E_NOMEM, "out of memory computing '%s'", c->name);
	for (k = 0; k < c->nops; k++) {
		const struct rfs_operand *o = &c->ops[k];
		size_t isz = rfs_kdt_size(o->dtype);

		if (!(in[k] = scratch_buf(sc, k)))
			return rfs_errf(err, RFS_E_NOMEM, "out of memory computing '%s'", c->name);
		/* every operand's range at once: remote ones are fetched together */
		if (o->numel > e0)
			rfs_bsrc_want(o->src, o->off + e0 * isz,
				      ((o->numel < e1 ? o->numel : e1) - e0) * isz);
	}
	for (pos = e0; pos < e1; pos += COMP_CHUNK) {
		size_t n = e1 - pos < COMP_CHUNK ? (size_t)(e1 - pos) : COMP_CHUNK;
		uint64_t from = pos * osz < a ? a - pos * osz : 0;
		uint64_t to = (pos + n) * osz > a + len ? a + len - pos * osz : n * osz;
		/* whole elements asked for: compute in place, no copy */
		int direct = from == 0 && to == n * osz;
		struct rfs_kern_job job = {
			.out_dtype = c->out_dtype, .out = direct ? dst + (pos * osz - a) : out, .n = n,
			.nterms = c->nops, .terms = terms, .cast_first = c->cast_first,
		};
		int ret;

		for (k = 0; k < c->nops; k++) {
			const struct rfs_operand *o = &c->ops[k];
			size_t isz = rfs_kdt_size(o->dtype);
			size_t have = o->numel > pos ? (size_t)(o->numel - pos < n ? o->numel - pos : n) : 0;
			const char *at = NULL;

			ret = 0;
			/* a remote source's block in memory is used where it is */
			if (have && o->src->ops->pin)
				ret = o->src->ops->pin(o->src, o->off + pos * isz, have * isz, &at, &pin[k], err);
			if (!ret && have && !at)
				ret = rfs_bsrc_pread(o->src, in[k], have * isz, o->off + pos * isz, err);
			if (ret) {
				unpin_all(c, pin, k);
				return ret;
			}
			if (!at)
				pin[k] = NULL;
			terms[k] = (struct rfs_kern_term){ o->dtype, at ? at : in[k], have, o->scale };
		}
		rfs_backend_run(rd->be, &job);
		unpin_all(c, pin, c->nops);
		if (!direct)
			memcpy(dst + (pos * osz + from - a), out + from, (size_t)(to - from));
	}
	return 0;
}

/* batch_run, adding the time it took to *@ns. */
static int batch_run_timed(struct batch *b, struct rfs_backend *be, struct rfs_err *err,
			   uint64_t *ns)
{
	uint64_t t0 = now_ns();
	int ret = batch_run(b, be, err);

	*ns += now_ns() - t0;
	return ret;
}

/* The segment of @vf that holds byte @off (< vf->size): the last one that
 * starts at or before it (an empty segment is never that one, as the next
 * starts at the same offset). */
static size_t seg_at(const struct rfs_vfile *vf, uint64_t off)
{
	size_t lo = 0, hi = vf->nseg;

	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;

		if (vf->segs[mid].off <= off)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* ---- the block cache's view of a file ------------------------------------
 * The cache keeps blocks by the exact bytes they hold (cache.h); here a
 * block is the part of a computed tensor that lies in one block of the
 * virtual file.  Blocks are aligned to the virtual file, not to the
 * tensor: block k of segment s holds the part of its tensor in file bytes
 * [k*B, (k+1)*B).  The kernel asks for 1 MiB at 1 MiB-aligned offsets, so
 * its requests are whole blocks (or the whole piece of a block that a
 * tensor covers).  The key is the tensor and the byte range of it, not
 * the file block: two segments may share one tensor (compute mode writes
 * a tied lm_head.weight as the embedding's delta), and the same file
 * block of each holds different bytes of it.
 */

/* Block @k of computed segment @s. */
static struct rfs_cache_key seg_block(const struct rfs_seg *s, uint64_t k)
{
	uint64_t start = k * RFS_CACHE_BLOCK > s->off ? k * RFS_CACHE_BLOCK - s->off : 0;
	uint64_t end = (k + 1) * RFS_CACHE_BLOCK - s->off;

	if (end > s->len)
		end = s->len;
	return (struct rfs_cache_key){ s->comp, start, (uint32_t)(end - start) };
}

/*
 * The cache's position of block @k of segment @segi of @vf: the file, and
 * the offset in it where the block's part of the tensor starts, which
 * names the segment and the block.  The position carries the file so that
 * the cache's one argument is free for the backend, which its prefetch
 * threads compute with; the plan outlives the cache, so the file pointer
 * stays valid as long as the cache passes it back.
 */
static struct rfs_cache_pos seg_pos(const struct rfs_vfile *vf, size_t segi, uint64_t k)
{
	const struct rfs_seg *s = &vf->segs[segi];
	uint64_t at = k * RFS_CACHE_BLOCK;

	return (struct rfs_cache_pos){ (uint64_t)(uintptr_t)vf, at > s->off ? at : s->off };
}

/* rfs_cache_fill_fn over the backend @arg: bytes of the computed tensor
 * key->obj. */
static int comp_fill(void *arg, const struct rfs_cache_key *key, void *dst, struct rfs_err *err)
{
	const struct rfs_reader rd = { arg, NULL };

	return rfs_comp_compute(key->obj, dst, key->start, key->len, &rd, err);
}

/*
 * rfs_cache_next_fn: the block after the one at *@pos, in file order: the
 * tensor's next block, then the first block of the next computed tensor
 * (the header gives the order).  @arg (the backend) is not used.
 */
static int seg_next(void *arg, struct rfs_cache_pos *pos, struct rfs_cache_key *key)
{
	const struct rfs_vfile *vf = (const struct rfs_vfile *)(uintptr_t)pos->a;
	size_t segi = seg_at(vf, pos->b);
	uint64_t k = pos->b / RFS_CACHE_BLOCK;
	const struct rfs_seg *s = &vf->segs[segi];

	(void)arg;
	if ((k + 1) * RFS_CACHE_BLOCK < s->off + s->len) {
		k++;
	} else {
		for (segi++; segi < vf->nseg; segi++)
			if (vf->segs[segi].kind == RFS_SEG_COMP && vf->segs[segi].len)
				break;
		if (segi == vf->nseg)
			return -1;
		k = vf->segs[segi].off / RFS_CACHE_BLOCK;
	}
	*pos = seg_pos(vf, segi, k);
	*key = seg_block(&vf->segs[segi], k);
	return 0;
}

/*
 * Reads @len bytes at @off of computed segment @segi of @vf into @dst
 * through @rd's cache, block by block.  Blocks queued for prefetch keep
 * the backend (which outlives the cache, read.h) and are named by tensors
 * of the plan (which does too).
 */
static int cache_read(const struct rfs_reader *rd, const struct rfs_vfile *vf, size_t segi,
		      char *dst, uint64_t off, uint64_t len, struct rfs_err *err)
{
	const struct rfs_seg *s = &vf->segs[segi];
	const struct rfs_cache_src src = { comp_fill, seg_next, rd->be };
	uint64_t k, k0 = (s->off + off) / RFS_CACHE_BLOCK, k1;

	if (!len)
		return 0;
	k1 = (s->off + off + len - 1) / RFS_CACHE_BLOCK;
	for (k = k0; k <= k1; k++) {
		const struct rfs_cache_key key = seg_block(s, k);
		const struct rfs_cache_pos pos = seg_pos(vf, segi, k);
		uint64_t b0 = key.start, from = off > b0 ? off : b0;
		uint64_t to = b0 + key.len < off + len ? b0 + key.len : off + len;
		int ret = rfs_cache_read(rd->cache, &src, &key, &pos, dst + (from - off), from - b0,
					 to - from, err);

		if (ret)
			return ret;
	}
	return 0;
}

/* What a read does with a piece of a computed segment and the cache. */
enum whole {
	WHOLE_COPIED,  /* a whole block the cache held: copied */
	WHOLE_COMPUTE, /* a whole block the cache lacks: compute it into the buffer */
	WHOLE_PARTIAL, /* part of a block: through the cache (cache_read) */
};

/* Whether bytes [@off, @off + @len) of computed segment @s are exactly one
 * whole block, and if so whether the cache held it (copied into @dst). */
static enum whole cache_take_whole(struct rfs_cache *c, const struct rfs_seg *s, char *dst,
				   uint64_t off, uint64_t len)
{
	const struct rfs_cache_key key = seg_block(s, (s->off + off) / RFS_CACHE_BLOCK);

	if (!len || off != key.start || len != key.len)
		return WHOLE_PARTIAL;
	return rfs_cache_take_whole(c, &key, dst) == RFS_TAKE_COPIED ? WHOLE_COPIED : WHOLE_COMPUTE;
}

/* ---- reading a file ------------------------------------------------------ */

enum rfs_code rfs_vfile_check(const struct rfs_vfile *vf, int force, struct rfs_bsrc **which,
			      struct rfs_err *err)
{
	size_t i;

	for (i = 0; i < vf->nsrcs; i++) {
		int ret = rfs_bsrc_check(vf->srcs[i], force, err);

		if (ret) {
			if (which)
				*which = vf->srcs[i];
			return ret;
		}
	}
	return 0;
}

static ssize_t vfile_read(const struct rfs_vfile *vf, void *buf, size_t len, uint64_t off,
			  const struct rfs_reader *rd, struct rfs_err *err);

/*
 * A source rewritten under us would be read with the old header's offsets:
 * its identity is checked before the read (a change seen earlier fails at
 * once, without computing anything) and after it (a change during the
 * read throws the bytes away).  Between two stats of a file the check
 * trusts the last verdict for up to RFS_IDENT_RECHECK_NS.
 */
ssize_t rfs_vfile_read(const struct rfs_vfile *vf, void *buf, size_t len, uint64_t off,
		       const struct rfs_reader *rd, struct rfs_err *err)
{
	ssize_t r;
	int ret = rfs_vfile_check(vf, 0, NULL, err);

	if (ret)
		return ret;
	r = vfile_read(vf, buf, len, off, rd, err);
	if (r < 0 && err && err->code == RFS_E_IO) {
		/* a truncated source: say that it changed, not only that it ended */
		struct rfs_err e2 = { 0 };

		if (rfs_vfile_check(vf, 1, NULL, &e2)) {
			*err = e2;
			return e2.code;
		}
	}
	if (r >= 0 && (ret = rfs_vfile_check(vf, 0, NULL, err)))
		return ret;
	return r;
}

static ssize_t vfile_read(const struct rfs_vfile *vf, void *buf, size_t len, uint64_t off,
			  const struct rfs_reader *rd, struct rfs_err *err)
{
	struct rfs_cache *cache = rd->cache;
	struct rfs_backend *be = rd->be;
	size_t lo, done = 0;
	char *dst = buf;
	struct batch *b = NULL;
	uint64_t deferred = 0, ns = 0;
	int ret = 0;

	if (off >= vf->size || !len)
		return 0;
	if (len > vf->size - off)
		len = (size_t)(vf->size - off);
	lo = seg_at(vf, off);
	/* The computed pieces of the request form one batch: all of them
	 * without a cache; with one, the whole blocks it does not hold (a
	 * 1 MiB read of small tensors is then one GPU submission). */
	if (rfs_busguard_ready())
		b = get_batch();
	for (; !ret && done < len && lo < vf->nseg; lo++) {
		const struct rfs_seg *s = &vf->segs[lo];
		uint64_t in = off + done - s->off;
		size_t n = s->len - in < len - done ? (size_t)(s->len - in) : len - done;
		enum whole w;

		switch (s->kind) {
		case RFS_SEG_LIT:
			memcpy(dst + done, s->lit + in, n);
			break;
		case RFS_SEG_FILE:
			ret = rfs_bsrc_pread(s->src, dst + done, n, s->src_off + in, err);
			break;
		case RFS_SEG_COMP:
			w = cache && b ? cache_take_whole(cache, s, dst + done, in, n) : WHOLE_PARTIAL;
			if (w == WHOLE_COPIED)
				break;
			if (cache && w == WHOLE_PARTIAL) {
				/* the cache computes its block with this thread's
				 * batch: run what is pending first */
				ret = b ? batch_run_timed(b, be, err, &ns) : 0;
				if (!ret)
					ret = cache_read(rd, vf, lo, dst + done, in, n, err);
				break;
			}
			if (b && batch_full(b))
				ret = batch_run_timed(b, be, err, &ns);
			if (!ret && b && !batch_add(b, s->comp, dst + done, in, n)) {
				deferred += n;
				break;
			}
			if (!ret && b) /* unmappable: keep the batch's order simple */
				ret = batch_run_timed(b, be, err, &ns);
			if (!ret) {
				uint64_t t0 = now_ns();

				ret = rfs_comp_compute(s->comp, dst + done, in, n, rd, err);
				if (!ret && cache)
					rfs_cache_count_computed(cache, n, now_ns() - t0);
			}
			break;
		}
		done += n;
	}
	if (b) {
		int r = batch_run_timed(b, be, err, &ns);

		if (!ret)
			ret = r;
	}
	if (cache && deferred && !ret)
		rfs_cache_count_computed(cache, deferred, ns);
	return ret ? ret : (ssize_t)done;
}
