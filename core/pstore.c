/*
 * Plan storage while building (pstore.h): virtual files made of segments,
 * literal buffers, notes, passthrough files, computed tensors and tensor
 * infos, and the safetensors output file.  Everything belongs to the plan.
 */
#include "pstore.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* Narrows @v's permission bits to those of a source it is made from. */
void rfs_vfb_mode(struct rfs_vfb *v, unsigned mode)
{
	v->mode = v->has_mode ? v->mode & mode : mode;
	v->has_mode = 1;
}

int rfs_pb_nomem(struct rfs_build *b)
{
	return rfs_errf(b->err, RFS_E_NOMEM, "out of memory");
}

void *rfs_pb_grow(void *arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap;
	void *p;

	if (need <= *cap)
		return arr;
	ncap = *cap ? *cap * 2 : 16;
	while (ncap < need)
		ncap *= 2;
	p = realloc(arr, ncap * elem);
	if (p)
		*cap = ncap;
	return p;
}

const char *rfs_pb_keep_lit(struct rfs_build *b, char *data)
{
	struct rfs_plan *p = b->p;
	char **n = realloc(p->lits, (p->nlits + 1) * sizeof(*n));

	if (!n) {
		free(data);
		return NULL;
	}
	p->lits = n;
	p->lits[p->nlits++] = data;
	return data;
}

int rfs_pb_note(struct rfs_build *b, const char *fmt, ...)
{
	struct rfs_plan *p = b->p;
	char **n, *s;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	n = s ? realloc(p->notes, (p->nnotes + 1) * sizeof(*n)) : NULL;
	if (!n) {
		free(s);
		return rfs_pb_nomem(b);
	}
	p->notes = n;
	p->notes[p->nnotes++] = s;
	return 0;
}

static struct rfs_seg *seg_new(struct rfs_vfb *v, enum rfs_seg_kind kind, uint64_t len)
{
	struct rfs_seg *s, *n = rfs_pb_grow(v->segs, &v->cap, v->n + 1, sizeof(*v->segs));

	if (!n) {
		v->oom = 1;
		return NULL;
	}
	v->segs = n;
	s = &v->segs[v->n++];
	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->off = v->size;
	s->len = len;
	v->size += len;
	return s;
}

void rfs_pb_seg_lit(struct rfs_vfb *v, const char *lit, uint64_t len)
{
	struct rfs_seg *s;

	if (!len)
		return;
	s = seg_new(v, RFS_SEG_LIT, len);
	if (s)
		s->lit = lit;
}

void rfs_pb_seg_file(struct rfs_vfb *v, struct rfs_bsrc *src, uint64_t off, uint64_t len)
{
	struct rfs_seg *s = v->n ? &v->segs[v->n - 1] : NULL;

	if (!len)
		return;
	if (s && s->kind == RFS_SEG_FILE && s->src == src && s->src_off + s->len == off) {
		s->len += len; /* contiguous passthrough: one segment */
		v->size += len;
		return;
	}
	s = seg_new(v, RFS_SEG_FILE, len);
	if (s) {
		s->src = src;
		s->src_off = off;
	}
}

void rfs_pb_seg_comp(struct rfs_vfb *v, struct rfs_comp *c, uint64_t len)
{
	struct rfs_seg *s;

	if (!len)
		return;
	s = seg_new(v, RFS_SEG_COMP, len);
	if (s)
		s->comp = c;
}

int rfs_pb_has_vfile(struct rfs_build *b, const char *name)
{
	return rfs_strmap_get(&b->names, name) != NULL;
}

/* Adds @id to the list of @f's source files unless it is there. */
static int vfile_add_src(struct rfs_vfile *f, size_t *cap, struct rfs_bsrc *src)
{
	struct rfs_bsrc **n;
	size_t i;

	for (i = 0; i < f->nsrcs; i++)
		if (f->srcs[i] == src)
			return 0;
	n = rfs_pb_grow(f->srcs, cap, f->nsrcs + 1, sizeof(*f->srcs));
	if (!n)
		return -1;
	f->srcs = n;
	f->srcs[f->nsrcs++] = src;
	return 0;
}

/* The source files @f's bytes come from, and its mode: the AND of theirs
 * and of what @v was given (rfs_vfb_mode), 0644 for what comes from nothing. */
static int vfile_sources(struct rfs_vfile *f, const struct rfs_vfb *v)
{
	size_t i, cap = 0;
	unsigned k, mode = v->has_mode ? v->mode : 0644;

	for (i = 0; i < f->nseg; i++) {
		const struct rfs_seg *s = &f->segs[i];

		if (s->kind == RFS_SEG_FILE && vfile_add_src(f, &cap, s->src))
			return -1;
		if (s->kind == RFS_SEG_COMP)
			for (k = 0; k < s->comp->nops; k++)
				if (vfile_add_src(f, &cap, s->comp->ops[k].src))
					return -1;
	}
	for (i = 0; i < f->nsrcs; i++)
		mode &= f->srcs[i]->mode;
	f->mode = mode & 0666;
	return 0;
}

int rfs_pb_add_vfile(struct rfs_build *b, const char *name, struct rfs_vfb *v)
{
	struct rfs_plan *p = b->p;
	struct rfs_vfile *n, *f;

	if (v->oom)
		goto oom;
	if (rfs_pb_has_vfile(b, name)) {
		free(v->segs);
		memset(v, 0, sizeof(*v));
		return rfs_errf(b->err, RFS_E_FORMAT,
				"two files of the result would be named %s: refused", name);
	}
	n = realloc(p->files, (p->nfiles + 1) * sizeof(*n));
	if (!n)
		goto oom;
	p->files = n;
	f = &p->files[p->nfiles];
	memset(f, 0, sizeof(*f));
	f->name = strdup(name);
	if (!f->name)
		goto oom;
	f->size = v->size;
	f->segs = v->segs;
	f->nseg = v->n;
	f->ino = p->nfiles + 2; /* 1 is the root */
	p->nfiles++;
	if (vfile_sources(f, v)) {
		memset(v, 0, sizeof(*v));
		return rfs_pb_nomem(b);
	}
	memset(v, 0, sizeof(*v));
	if (rfs_strmap_put(&b->names, f->name, f) == RFS_PUT_NOMEM)
		return rfs_pb_nomem(b);
	return 0;
oom:
	free(v->segs);
	memset(v, 0, sizeof(*v));
	return rfs_pb_nomem(b);
}

/* A literal file from a buffer the plan takes over, with permission bits
 * @mode (those of the source files it is derived from). */
int rfs_pb_add_lit(struct rfs_build *b, const char *name, char *data, size_t len,
			unsigned mode)
{
	struct rfs_vfb v = { 0 };
	const char *lit = rfs_pb_keep_lit(b, data);

	if (!lit)
		return rfs_pb_nomem(b);
	rfs_pb_seg_lit(&v, lit, len);
	rfs_vfb_mode(&v, mode);
	return rfs_pb_add_vfile(b, name, &v);
}

/* Opens @name of the term @s for passing through: contained in the term's
 * directory and a regular file (the term's open: tdir.h).  The plan keeps it. */
static int open_passthrough(struct rfs_build *b, const struct rfs_src *s, const char *name,
			    struct rfs_pt **out)
{
	struct rfs_plan *p = b->p;
	struct rfs_pt *pt, **n;
	struct rfs_bsrc *src;
	int ret;

	ret = s->td->ops->open(s->td, name, &src, b->err);
	if (ret)
		return ret;
	pt = calloc(1, sizeof(*pt));
	n = pt ? realloc(p->pts, (p->npt + 1) * sizeof(*n)) : NULL;
	if (!n) {
		free(pt);
		rfs_bsrc_close(src);
		return rfs_pb_nomem(b);
	}
	p->pts = n;
	p->pts[p->npt++] = pt;
	pt->src = src;
	if (src->mtime_ns > p->mtime_ns)
		p->mtime_ns = src->mtime_ns;
	*out = pt;
	return 0;
}

/* A file of a source directory shown as is (kept open for reads). */
int rfs_pb_add_passthrough(struct rfs_build *b, const struct rfs_src *s, const char *name)
{
	struct rfs_vfb v = { 0 };
	struct rfs_pt *pt = NULL;
	int ret = open_passthrough(b, s, name, &pt);

	if (ret)
		return ret;
	rfs_pb_seg_file(&v, pt->src, 0, pt->src->size);
	return rfs_pb_add_vfile(b, name, &v);
}

/* A computed tensor with room for @nops operands (a model of 100k small
 * tensors holds 100k of these: no fixed array of the maximum). */
struct rfs_comp *rfs_pb_new_comp(struct rfs_build *b, const char *name, enum rfs_kdt out,
				 uint64_t numel, unsigned nops)
{
	struct rfs_plan *p = b->p;
	struct rfs_comp *c = calloc(1, sizeof(*c) + nops * sizeof(c->ops[0])), **n;

	if (!c)
		return NULL;
	n = realloc(p->comps, (p->ncomp + 1) * sizeof(*n));
	if (!n) {
		free(c);
		return NULL;
	}
	p->comps = n;
	p->comps[p->ncomp++] = c;
	c->name = name;
	c->out_dtype = out;
	c->numel = numel;
	c->cast_first = p->opts.rounding == RFS_ROUND_CAST_FIRST;
	return c;
}

void rfs_pb_comp_add(struct rfs_comp *c, const struct rfs_src_tensor *t, float scale)
{
	struct rfs_operand *o = &c->ops[c->nops++];

	o->src = t->file->src;
	o->off = t->file->data_off + t->t->begin;
	o->dtype = (enum rfs_kdt)rfs_dtype_kdt(t->t->dtype);
	o->numel = t->t->numel;
	o->scale = scale;
}

/* Tensor infos are allocated once (see rfs_plan_build) so pointers to them stay valid. */
struct rfs_tinfo *rfs_pb_new_tinfo(struct rfs_build *b)
{
	struct rfs_plan *p = b->p;

	if (p->ntinfo >= b->tinfo_cap)
		return NULL;
	memset(&p->tinfo[p->ntinfo], 0, sizeof(*p->tinfo));
	return &p->tinfo[p->ntinfo++];
}

/* Elements of an output tensor (no overflow: each operand's was checked and
 * the shape grows only to a delta's row count). */
uint64_t rfs_pb_out_numel(const struct rfs_tinfo *ti)
{
	uint64_t n = 1;
	unsigned i;

	for (i = 0; i < ti->ndim; i++)
		n *= ti->shape[i];
	return n;
}

uint64_t rfs_pb_out_bytes(const struct rfs_tinfo *ti)
{
	int ovf;

	return rfs_dtype_bytes(ti->dtype, rfs_pb_out_numel(ti), &ovf);
}

int rfs_pb_emit_st(struct rfs_build *b, const char *name, struct rfs_pb_out *o, size_t n,
			const struct rfs_st_file *orig, int with_meta,
			const struct rfs_st_meta *meta, size_t nmeta)
{
	struct rfs_st_out *hdr = calloc(n ? n : 1, sizeof(*hdr));
	struct rfs_vfb v = { 0 };
	uint64_t pos = 0;
	char *json = NULL, *lit;
	size_t jlen, i;
	int k;

	if (!hdr)
		return rfs_pb_nomem(b);
	for (i = 0; i < n; i++) {
		hdr[i].name = o[i].info->name;
		hdr[i].dtype = o[i].info->dtype;
		hdr[i].ndim = o[i].info->ndim;
		hdr[i].shape = o[i].info->shape;
		hdr[i].begin = pos;
		pos += o[i].bytes;
		hdr[i].end = pos;
	}
	if (orig) {
		/* nothing changed: the original header bytes, untouched */
		jlen = orig->hlen;
		json = malloc(jlen + 1);
		if (json)
			memcpy(json, orig->header, jlen);
	} else if (rfs_st_header_write(hdr, n, meta, nmeta, with_meta, &json, &jlen, b->err)) {
		json = NULL;
	}
	free(hdr);
	lit = json ? malloc(8 + jlen) : NULL;
	if (!lit) {
		free(json);
		return rfs_pb_nomem(b);
	}
	for (k = 0; k < 8; k++)
		lit[k] = (char)(((uint64_t)jlen >> (8 * k)) & 0xFF);
	memcpy(lit + 8, json, jlen);
	free(json);
	if (!rfs_pb_keep_lit(b, lit))
		return rfs_pb_nomem(b);
	rfs_pb_seg_lit(&v, lit, 8 + jlen);
	for (i = 0; i < n; i++) {
		if (o[i].comp)
			rfs_pb_seg_comp(&v, o[i].comp, o[i].bytes);
		else
			rfs_pb_seg_file(&v, o[i].src->file->src,
				 o[i].src->file->data_off + o[i].src->t->begin, o[i].bytes);
	}
	return rfs_pb_add_vfile(b, name, &v);
}
