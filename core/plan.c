/*
 * Building plans.  All validation happens in rfs_plan_build; reading
 * (core/read.c) only does I/O and arithmetic on what was checked.
 */
#include "plan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "buf.h"
#include "util.h"

#define MAX_JSON_FILE (64u << 20)

/* ---- plan-owned storage ---------------------------------------------- */

struct vfb { /* a virtual file being built */
	struct rfs_seg *segs;
	size_t n, cap;
	uint64_t size;
	int oom;
	int has_mode;
	unsigned mode;   /* AND of the modes of what it is made from */
};

struct build {
	struct rfs_plan *p;
	struct rfs_err *err;
	struct rfs_strmap names; /* output file names */
	size_t tinfo_cap;
};

/* Narrows @v's permission bits to those of a source it is made from. */
static void vfb_mode(struct vfb *v, unsigned mode)
{
	v->mode = v->has_mode ? v->mode & mode : mode;
	v->has_mode = 1;
}

static int nomem(struct build *b)
{
	return rfs_errf(b->err, RFS_E_NOMEM, "out of memory");
}

static void *grow_array(void *arr, size_t *cap, size_t need, size_t elem)
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

static const char *keep_lit(struct build *b, char *data)
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

static int note(struct build *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int note(struct build *b, const char *fmt, ...)
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
		return nomem(b);
	}
	p->notes = n;
	p->notes[p->nnotes++] = s;
	return 0;
}

static struct rfs_seg *seg_new(struct vfb *v, enum rfs_seg_kind kind, uint64_t len)
{
	struct rfs_seg *s, *n = grow_array(v->segs, &v->cap, v->n + 1, sizeof(*v->segs));

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

static void seg_lit(struct vfb *v, const char *lit, uint64_t len)
{
	struct rfs_seg *s;

	if (!len)
		return;
	s = seg_new(v, RFS_SEG_LIT, len);
	if (s)
		s->lit = lit;
}

static void seg_file(struct vfb *v, struct rfs_ident *id, uint64_t off, uint64_t len)
{
	struct rfs_seg *s = v->n ? &v->segs[v->n - 1] : NULL;

	if (!len)
		return;
	if (s && s->kind == RFS_SEG_FILE && s->ident == id && s->src_off + s->len == off) {
		s->len += len; /* contiguous passthrough: one segment */
		v->size += len;
		return;
	}
	s = seg_new(v, RFS_SEG_FILE, len);
	if (s) {
		s->fd = id->fd;
		s->src_off = off;
		s->src_path = id->path;
		s->ident = id;
	}
}

static void seg_comp(struct vfb *v, struct rfs_comp *c, uint64_t len)
{
	struct rfs_seg *s;

	if (!len)
		return;
	s = seg_new(v, RFS_SEG_COMP, len);
	if (s)
		s->comp = c;
}

static int has_vfile(struct build *b, const char *name)
{
	return rfs_strmap_get(&b->names, name) != NULL;
}

/* Adds @id to the list of @f's source files unless it is there. */
static int vfile_add_ident(struct rfs_vfile *f, size_t *cap, struct rfs_ident *id)
{
	struct rfs_ident **n;
	size_t i;

	for (i = 0; i < f->nident; i++)
		if (f->idents[i] == id)
			return 0;
	n = grow_array(f->idents, cap, f->nident + 1, sizeof(*f->idents));
	if (!n)
		return -1;
	f->idents = n;
	f->idents[f->nident++] = id;
	return 0;
}

/* The source files @f's bytes come from, and its mode: the AND of theirs
 * and of what @v was given (vfb_mode), 0644 for what comes from nothing. */
static int vfile_sources(struct rfs_vfile *f, const struct vfb *v)
{
	size_t i, cap = 0;
	unsigned k, mode = v->has_mode ? v->mode : 0644;

	for (i = 0; i < f->nseg; i++) {
		const struct rfs_seg *s = &f->segs[i];

		if (s->kind == RFS_SEG_FILE && vfile_add_ident(f, &cap, s->ident))
			return -1;
		if (s->kind == RFS_SEG_COMP)
			for (k = 0; k < s->comp->nops; k++)
				if (vfile_add_ident(f, &cap, s->comp->ops[k].ident))
					return -1;
	}
	for (i = 0; i < f->nident; i++)
		mode &= f->idents[i]->mode;
	f->mode = mode & 0666;
	return 0;
}

static int add_vfile(struct build *b, const char *name, struct vfb *v)
{
	struct rfs_plan *p = b->p;
	struct rfs_vfile *n, *f;
	int r;

	if (v->oom)
		goto oom;
	if (has_vfile(b, name)) {
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
		return nomem(b);
	}
	memset(v, 0, sizeof(*v));
	r = rfs_strmap_put(&b->names, f->name, f);
	if (r < 0)
		return nomem(b);
	return 0;
oom:
	free(v->segs);
	memset(v, 0, sizeof(*v));
	return nomem(b);
}

/* A literal file from a buffer the plan takes over, with permission bits
 * @mode (those of the source files it is derived from). */
static int add_lit_file(struct build *b, const char *name, char *data, size_t len,
			unsigned mode)
{
	struct vfb v = { 0 };
	const char *lit = keep_lit(b, data);

	if (!lit)
		return nomem(b);
	seg_lit(&v, lit, len);
	vfb_mode(&v, mode);
	return add_vfile(b, name, &v);
}

/* Opens @name of the term @s for passing through: contained in the term's
 * directory and a regular file (rfs_root_open).  The plan keeps it. */
static int open_passthrough(struct build *b, const struct rfs_src *s, const char *name,
			    struct rfs_pt **out)
{
	struct rfs_plan *p = b->p;
	struct rfs_pt *pt, **n;
	struct stat st;
	int fd, ret;

	ret = rfs_root_open(&s->root, s->dir, name, &fd, &st, b->err);
	if (ret)
		return ret;
	pt = calloc(1, sizeof(*pt));
	n = pt ? realloc(p->pts, (p->npt + 1) * sizeof(*n)) : NULL;
	if (!n) {
		free(pt);
		close(fd);
		return nomem(b);
	}
	p->pts = n;
	p->pts[p->npt++] = pt;
	pt->fd = fd;
	if (asprintf(&pt->path, "%s/%s", s->dir, name) < 0) {
		pt->path = NULL;
		return nomem(b);
	}
	rfs_ident_init(&pt->ident, pt->path, fd, &st);
	if (rfs_ident_locate(&pt->ident, s->root.dir, name))
		return nomem(b);
	if (rfs_ts_ns(&st.st_mtim) > p->mtime_ns)
		p->mtime_ns = rfs_ts_ns(&st.st_mtim);
	*out = pt;
	return 0;
}

/* A file of a source directory shown as is (kept open for reads). */
static int add_passthrough_file(struct build *b, const struct rfs_src *s, const char *name)
{
	struct vfb v = { 0 };
	struct rfs_pt *pt = NULL;
	int ret = open_passthrough(b, s, name, &pt);

	if (ret)
		return ret;
	seg_file(&v, &pt->ident, 0, pt->ident.size);
	return add_vfile(b, name, &v);
}

/* A computed tensor with room for @nops operands (a model of 100k small
 * tensors holds 100k of these: no fixed array of the maximum). */
static struct rfs_comp *new_comp(struct build *b, const char *name, enum rfs_kdt out,
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

static void comp_add(struct rfs_comp *c, const struct rfs_src_tensor *t, float scale)
{
	struct rfs_operand *o = &c->ops[c->nops++];

	o->fd = t->file->fd;
	o->off = t->file->data_off + t->t->begin;
	o->dtype = (enum rfs_kdt)rfs_dtype_kdt(t->t->dtype);
	o->numel = t->t->numel;
	o->scale = scale;
	o->file = t->file->path;
	/* the identity is the one mutable part of a source: its verdict */
	o->ident = (struct rfs_ident *)&t->file->ident;
}

/* Tensor infos are allocated once (see rfs_plan_build) so pointers to them stay valid. */
static struct rfs_tinfo *new_tinfo(struct build *b)
{
	struct rfs_plan *p = b->p;

	if (p->ntinfo >= b->tinfo_cap)
		return NULL;
	memset(&p->tinfo[p->ntinfo], 0, sizeof(*p->tinfo));
	return &p->tinfo[p->ntinfo++];
}

/* Compares shapes allowing growth of dim 0: 0 equal, 1 @d has more rows, -1 mismatch. */
static int shape_fit(const struct rfs_st_tensor *base, const struct rfs_st_tensor *d)
{
	unsigned i;

	if (base->ndim != d->ndim)
		return -1;
	for (i = 1; i < base->ndim; i++)
		if (base->shape[i] != d->shape[i])
			return -1;
	if (base->ndim == 0 || base->shape[0] == d->shape[0])
		return 0;
	return d->shape[0] > base->shape[0] ? 1 : -1;
}

/*
 * Vocabulary growth: residuals of an instruct model whose tokenizer added
 * tokens have more rows in the embedding and the output head.  Only those
 * tensors may grow: their first dimension is the base's vocab_size (from
 * its config.json) and the rows past it count as zero in the base.  Any
 * other tensor with more rows in a delta is an error, never a silent
 * change of the model's shape.
 */
static int is_vocab_tensor(const struct rfs_src *base, const struct rfs_st_tensor *t)
{
	return base->vocab_size > 0 && t->ndim >= 1 && t->shape[0] == (uint64_t)base->vocab_size;
}

/* What is_vocab_tensor allows, for messages. */
static const char *vocab_rule(const struct rfs_src *base, char *buf, size_t len)
{
	if (base->vocab_size > 0)
		snprintf(buf, len, "first dimension = vocab_size %lld of %s/config.json",
			 (long long)base->vocab_size, base->dir);
	else
		snprintf(buf, len, "first dimension = vocab_size, which %s/config.json lacks",
			 base->dir);
	return buf;
}

/* After vocabulary growth to @vocab rows, every vocabulary tensor of the
 * output must have grown to it: a model whose embedding and head disagree
 * on the vocabulary does not load. */
static int check_vocab_grown(struct build *b, const struct rfs_src *base, int64_t vocab,
			     size_t t0)
{
	struct rfs_plan *p = b->p;
	size_t i;

	if (vocab <= base->vocab_size)
		return 0;
	for (i = t0; i < p->ntinfo; i++) {
		const struct rfs_tinfo *ti = &p->tinfo[i];

		if (!ti->ndim || ti->shape[0] - ti->grown_rows != (uint64_t)base->vocab_size)
			continue;
		if (ti->shape[0] != (uint64_t)vocab)
			return rfs_errf(b->err, RFS_E_MISMATCH,
					"tensor '%s': the vocabulary grows from %lld to %lld rows, but this vocabulary tensor has %llu in the result (its deltas disagree, or it has none)",
					ti->name, (long long)base->vocab_size, (long long)vocab,
					(unsigned long long)ti->shape[0]);
	}
	return 0;
}

/* ---- safetensors output file ------------------------------------------ */

struct outt { /* an output tensor of one file */
	struct rfs_tinfo *info;
	struct rfs_comp *comp;               /* NULL: passthrough */
	const struct rfs_src_tensor *src;    /* passthrough source */
	uint64_t bytes;
};

static int emit_st_file(struct build *b, const char *name, struct outt *o, size_t n,
			const struct rfs_st_file *orig, int with_meta,
			const struct rfs_st_meta *meta, size_t nmeta)
{
	struct rfs_st_out *hdr = calloc(n ? n : 1, sizeof(*hdr));
	struct vfb v = { 0 };
	uint64_t pos = 0;
	char *json = NULL, *lit;
	size_t jlen, i;
	int k;

	if (!hdr)
		return nomem(b);
	for (i = 0; i < n; i++) {
		hdr[i].name = o[i].info->name;
		hdr[i].dtype = (enum rfs_dtype)o[i].info->dtype;
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
	} else if (rfs_st_header_write(hdr, n, meta, nmeta, with_meta, &json, &jlen)) {
		json = NULL;
	}
	free(hdr);
	lit = json ? malloc(8 + jlen) : NULL;
	if (!lit) {
		free(json);
		return nomem(b);
	}
	for (k = 0; k < 8; k++)
		lit[k] = (char)(((uint64_t)jlen >> (8 * k)) & 0xFF);
	memcpy(lit + 8, json, jlen);
	free(json);
	if (!keep_lit(b, lit))
		return nomem(b);
	seg_lit(&v, lit, 8 + jlen);
	for (i = 0; i < n; i++) {
		if (o[i].comp)
			seg_comp(&v, o[i].comp, o[i].bytes);
		else
			seg_file(&v, (struct rfs_ident *)&o[i].src->file->ident,
				 o[i].src->file->data_off + o[i].src->t->begin, o[i].bytes);
	}
	return add_vfile(b, name, &v);
}

/* ---- JSON text patching ----------------------------------------------- */

struct patch {
	const char *const *keys;
	size_t nkeys;
	const char *value; /* replacement text (already JSON) */
};

/* Applies patches whose key exists; returns a new buffer or NULL (ENOMEM). */
static char *patch_json(const char *text, size_t len, const struct patch *pt, size_t n,
			size_t *olen)
{
	struct rfs_buf out = { 0 };
	size_t pos = 0, i, beg[8], end[8], order[8], m = 0;

	for (i = 0; i < n && m < 8; i++) {
		if (rfs_json_span(text, len, pt[i].keys, pt[i].nkeys, &beg[m], &end[m]))
			continue;
		order[m++] = i;
	}
	/* apply in text order */
	for (i = 0; i < m; i++) {
		size_t j, best = i;

		for (j = i + 1; j < m; j++)
			if (beg[j] < beg[best])
				best = j;
		if (best != i) {
			size_t t;

			t = beg[i]; beg[i] = beg[best]; beg[best] = t;
			t = end[i]; end[i] = end[best]; end[best] = t;
			t = order[i]; order[i] = order[best]; order[best] = t;
		}
	}
	for (i = 0; i < m; i++) {
		rfs_buf_add(&out, text + pos, beg[i] - pos);
		rfs_buf_adds(&out, pt[order[i]].value);
		pos = end[i];
	}
	rfs_buf_add(&out, text + pos, len - pos);
	if (!rfs_buf_ok(&out)) {
		rfs_buf_release(&out);
		return NULL;
	}
	return rfs_buf_detach(&out, olen);
}

/* ---- auxiliary files --------------------------------------------------- */

static const char *const tokenizer_files[] = {
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
	"tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
	"chat_template.jinja", "chat_template.json", "vocab.txt", "spiece.model",
	"sentencepiece.bpe.model", NULL,
};

static int is_tokenizer_file(const char *name)
{
	size_t i;

	for (i = 0; tokenizer_files[i]; i++)
		if (!strcmp(name, tokenizer_files[i]))
			return 1;
	return 0;
}

static int has_tokenizer(const char *dir)
{
	return rfs_entry_exists_at(dir, "tokenizer_config.json") ||
	       rfs_entry_exists_at(dir, "tokenizer.json") ||
	       rfs_entry_exists_at(dir, "tokenizer.model") || rfs_entry_exists_at(dir, "vocab.json");
}

/* The tokenizer files of @s: each one there must be a regular file inside
 * the term's directory (anything else is refused, not skipped: a loader
 * would silently use another tokenizer). */
static int add_tokenizer_files(struct build *b, const struct rfs_src *s)
{
	size_t i;
	int ret;

	for (i = 0; tokenizer_files[i]; i++) {
		if (!rfs_entry_exists_at(s->dir, tokenizer_files[i]) || has_vfile(b, tokenizer_files[i]))
			continue;
		ret = add_passthrough_file(b, s, tokenizer_files[i]);
		if (ret)
			return ret;
	}
	return 0;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), c = strlen(suffix);

	return a >= c && !strcmp(s + a - c, suffix);
}

static int is_weight_file(const char *name)
{
	static const char *const sfx[] = {
		".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json",
		".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".pkl", NULL,
	};
	size_t i;

	for (i = 0; sfx[i]; i++)
		if (ends_with(name, sfx[i]))
			return 1;
	return 0;
}

static int cmp_cstr(const void *a, const void *c)
{
	return strcmp(*(char *const *)a, *(char *const *)c);
}

/* Other regular files of the base directory, in name order.  One that
 * resolves outside the directory (or stops being a regular file) is left
 * out with a note: it is nobody's model file. */
static int add_other_base_files(struct build *b, const struct rfs_src *s)
{
	const char *dir = s->dir;
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0, i;
	int ret = 0;

	if (!d)
		return rfs_errsys(b->err, "%s: cannot list", dir);
	while ((e = readdir(d))) {
		char **g;

		if (e->d_name[0] == '.' || has_vfile(b, e->d_name) || is_weight_file(e->d_name) ||
		    is_tokenizer_file(e->d_name) || !strcmp(e->d_name, "generation_config.json") ||
		    !strcmp(e->d_name, "README.md") || !strcmp(e->d_name, "config.json") ||
		    !rfs_file_exists_at(dir, e->d_name))
			continue;
		g = grow_array(names, &cap, n + 1, sizeof(*names));
		if (!g || !(g[n] = strdup(e->d_name))) {
			names = g ? g : names;
			ret = nomem(b);
			goto out;
		}
		names = g;
		n++;
	}
	if (n > 1) /* qsort wants a non-NULL array even for none */
		qsort(names, n, sizeof(*names), cmp_cstr);
	for (i = 0; i < n && !ret; i++) {
		ret = add_passthrough_file(b, s, names[i]);
		if (ret == RFS_E_FORMAT) {
			ret = note(b, "%s: not shown: %s", names[i], b->err->msg);
			b->err->code = 0;
			b->err->msg[0] = 0;
		}
	}
out:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return ret;
}

/* Fingerprint of a source for the model card: bytes, mtime, xxh3 of headers. */
static void fingerprint(const struct rfs_src *s, char *buf, size_t len)
{
	XXH3_state_t *st = XXH3_createState();
	uint64_t bytes = 0, h = 0;
	char when[48], hb[32];
	size_t i;

	if (st) {
		XXH3_64bits_reset(st);
		for (i = 0; i < s->nfiles; i++) {
			XXH3_64bits_update(st, s->files[i]->header, s->files[i]->hlen);
			bytes += s->files[i]->size;
		}
		h = XXH3_64bits_digest(st);
		XXH3_freeState(st);
	}
	rfs_iso8601(s->mtime_ns, when, sizeof(when));
	rfs_human_bytes(bytes, hb, sizeof(hb));
	snprintf(buf, len, "%llu bytes (%s) in %zu file%s, newest mtime %s, header xxh3 %016llx",
		 (unsigned long long)bytes, hb, s->nfiles, s->nfiles == 1 ? "" : "s", when,
		 (unsigned long long)h);
}

static const char *base_name(const char *path)
{
	size_t n = strlen(path);
	const char *p;

	while (n > 1 && path[n - 1] == '/')
		n--;
	for (p = path + n; p > path && p[-1] != '/'; p--)
		;
	return p;
}

static void card_yaml_str(struct rfs_buf *o, const char *key, const char *val)
{
	rfs_buf_addf(o, "%s: ", key);
	rfs_buf_add_json_str_ascii(o, val); /* a JSON string is a valid YAML scalar */
	rfs_buf_adds(o, "\n");
}

static int add_model_card(struct build *b)
{
	struct rfs_plan *p = b->p;
	struct rfs_buf o = { 0 };
	char spec[4096], fp[256], bn[512];
	size_t i;

	rfs_spec_format(&p->spec, spec, sizeof(spec));
	rfs_buf_adds(&o, "---\n");
	if (p->compute) {
		snprintf(bn, sizeof(bn), "%s", base_name(p->src[1]->dir));
		card_yaml_str(&o, "library_name", "residfs");
		card_yaml_str(&o, "base_model", bn);
		rfs_buf_adds(&o, "base_model_relation: adapter\n");
		snprintf(bn, sizeof(bn), "%s", base_name(p->src[0]->dir));
		card_yaml_str(&o, "instruct_model", bn);
		rfs_buf_adds(&o, "pipeline_tag: text-generation\n");
		rfs_buf_adds(&o, "tags:\n- residuals\n- delta\n- task-arithmetic\n- residfs\n");
	} else {
		snprintf(bn, sizeof(bn), "%s", base_name(p->src[0]->dir));
		card_yaml_str(&o, "base_model", bn);
		rfs_buf_adds(&o, "base_model_relation: merge\n");
		rfs_buf_adds(&o, "library_name: transformers\n");
		rfs_buf_adds(&o, "tags:\n- merge\n- task-arithmetic\n- residuals\n- residfs\n");
	}
	rfs_buf_adds(&o, "---\n\n");
	if (p->compute)
		rfs_buf_adds(&o, "# Instruction residuals computed by residfs\n\n"
			     "Each tensor is `instruct - base`, computed in float32 and rounded once "
			     "to the output dtype. Load with `Residuals.from_pretrained(path)` from the "
			     "`residuals` package, or mount `BASE+THIS_DIR` with residfs.\n\n");
	else
		rfs_buf_adds(&o, "# Merged model computed by residfs\n\n"
			     "Each floating tensor is `base + s1*delta1 + ...`, evaluated in float32 "
			     "and rounded to the output dtype. Nothing of it was written by a merge "
			     "script: residfs computed these bytes from the sources below.\n\n");
	rfs_buf_addf(&o, "- SPEC: `%s`\n", spec);
	rfs_buf_addf(&o, "- output dtype: %s\n",
		     p->opts.out_dtype >= 0 ? rfs_dtype_torch_name(p->opts.out_dtype)
					    : (p->compute ? "float32" : "same as the base tensor"));
	rfs_buf_addf(&o, "- rounding: %s\n",
		     p->opts.rounding == RFS_ROUND_CAST_FIRST ? "cast-first" : "single");
	rfs_buf_addf(&o, "- residfs version: %s\n\n", RESIDFS_VERSION);
	rfs_buf_adds(&o, "## Sources\n\n| term | kind | scale | fingerprint |\n|---|---|---|---|\n");
	for (i = 0; i < p->nsrc; i++) {
		fingerprint(p->src[i], fp, sizeof(fp));
		rfs_buf_addf(&o, "| `%s` | %s | %g | %s |\n", base_name(p->src[i]->dir),
			     rfs_src_kind_name(p->src[i]->kind), p->spec.terms[i].scale, fp);
	}
	if (!rfs_buf_ok(&o)) {
		rfs_buf_release(&o);
		return nomem(b);
	}
	{
		size_t len;
		char *data = rfs_buf_detach(&o, &len);

		unsigned mode = 0666;

		for (i = 0; i < p->nsrc; i++)
			mode &= p->src[i]->config_mode;
		return add_lit_file(b, "README.md", data, len, mode);
	}
}

/* ---- apply mode -------------------------------------------------------- */

/* Elements of an output tensor (no overflow: each operand's was checked and
 * the shape grows only to a delta's row count). */
static uint64_t out_numel(const struct rfs_tinfo *ti)
{
	uint64_t n = 1;
	unsigned i;

	for (i = 0; i < ti->ndim; i++)
		n *= ti->shape[i];
	return n;
}

static uint64_t out_bytes(const struct rfs_tinfo *ti)
{
	int ovf;

	return rfs_dtype_bytes((enum rfs_dtype)ti->dtype, out_numel(ti), &ovf);
}

/*
 * How a delta's names map onto the base's.  Exact by default; when no name
 * matches exactly but all do modulo a first component, the delta was
 * written from the model with its head (`transformer.h.0...`, as the
 * `residuals` package writes GPT-2) and the base from the bare model
 * (`h.0...`, as the hub's gpt2 file is), or the other way round.
 */
struct dmatch {
	int mode; /* 0: exact; 1: delta = prefix + base; 2: base = prefix + delta */
	char prefix[128];
};

static const struct rfs_src_tensor *find_delta(const struct rfs_src *d, const struct dmatch *m,
					       const char *name)
{
	char buf[1024];
	size_t plen;

	switch (m->mode) {
	case 1:
		if ((size_t)snprintf(buf, sizeof(buf), "%s%s", m->prefix, name) >= sizeof(buf))
			return NULL;
		return rfs_src_find(d, buf);
	case 2:
		plen = strlen(m->prefix);
		return strncmp(name, m->prefix, plen) ? NULL : rfs_src_find(d, name + plen);
	}
	return rfs_src_find(d, name);
}

/* Counts, for each first component "P." of @a's names, how many names
 * P.rest have rest in @bsrc; keeps the best. */
static void best_prefix(const struct rfs_src *a, const struct rfs_src *bsrc, char *prefix,
			size_t len, size_t *count)
{
	struct { char p[128]; size_t n; } cand[8];
	size_t nc = 0, i, j;

	*count = 0;
	for (i = 0; i < a->ntensors; i++) {
		const char *nm = a->tensors[i].t->name, *dot = strchr(nm, '.');
		size_t pl;

		if (!dot || !rfs_src_find(bsrc, dot + 1))
			continue;
		pl = (size_t)(dot - nm) + 1;
		if (pl >= sizeof(cand[0].p))
			continue;
		for (j = 0; j < nc; j++)
			if (strlen(cand[j].p) == pl && !strncmp(cand[j].p, nm, pl))
				break;
		if (j == nc) {
			if (nc == 8)
				continue;
			memcpy(cand[nc].p, nm, pl);
			cand[nc].p[pl] = 0;
			cand[nc++].n = 0;
		}
		cand[j].n++;
	}
	for (j = 0; j < nc; j++)
		if (cand[j].n > *count && strlen(cand[j].p) < len) {
			*count = cand[j].n;
			memcpy(prefix, cand[j].p, strlen(cand[j].p) + 1);
		}
}

static int choose_match(struct build *b, const struct rfs_src *base, const struct rfs_src *d,
			struct dmatch *m)
{
	size_t i, exact = 0, add = 0, strip = 0;
	char padd[128] = "", pstrip[128] = "";

	memset(m, 0, sizeof(*m));
	for (i = 0; i < base->ntensors; i++)
		if (rfs_src_find(d, base->tensors[i].t->name))
			exact++;
	if (exact || !d->ntensors)
		return 0;
	best_prefix(d, base, padd, sizeof(padd), &add);     /* delta = P + base */
	best_prefix(base, d, pstrip, sizeof(pstrip), &strip); /* base = P + delta */
	if (!add && !strip)
		return rfs_errf(b->err, RFS_E_MISMATCH,
				"%s: none of its %zu tensors has a name of the base %s (e.g. '%s' vs '%s'): these residuals are not for this model",
				d->dir, d->ntensors, base->dir, d->tensors[0].t->name,
				base->ntensors ? base->tensors[0].t->name : "");
	m->mode = add >= strip ? 1 : 2;
	snprintf(m->prefix, sizeof(m->prefix), "%s", add >= strip ? padd : pstrip);
	return note(b, "%s: names matched with the prefix '%s' %s (the base and the delta come from the model with and without its head)",
		    d->dir, m->prefix, m->mode == 1 ? "added to the base's" : "taken off the base's");
}

static int plan_apply_file(struct build *b, size_t fi, struct rfs_strmap *used,
			   const struct dmatch *dm, uint64_t *total, int64_t *vocab,
			   size_t *nmissing, const char **first_missing)
{
	struct rfs_plan *p = b->p;
	const struct rfs_src *base = p->src[0];
	const struct rfs_st_file *f = base->files[fi];
	struct outt *o = calloc(f->ntensors ? f->ntensors : 1, sizeof(*o));
	int changed = !f->has_meta, ret = 0;
	static const struct rfs_st_meta pt_meta = { "format", "pt" };
	size_t i, k;

	if (!o)
		return nomem(b);
	for (i = 0; i < f->ntensors; i++) {
		const struct rfs_st_tensor *t = &f->tensors[i];
		const struct rfs_src_tensor *bt = rfs_src_find(base, t->name);
		const struct rfs_src_tensor *dt[RFS_SPEC_MAX_TERMS];
		struct rfs_tinfo *ti = new_tinfo(b);
		int kdt = rfs_dtype_kdt(t->dtype), nd = 0;
		uint64_t rows = t->ndim ? t->shape[0] : 0;
		char s1[128], s2[128];

		if (!ti) {
			ret = nomem(b);
			goto out;
		}
		ti->name = t->name;
		ti->file = base->file_names[fi];
		ti->dtype = t->dtype;
		ti->ndim = t->ndim;
		memcpy(ti->shape, t->shape, sizeof(t->shape));
		for (k = 1; k < p->nsrc; k++) {
			const struct rfs_src_tensor *d = find_delta(p->src[k], &dm[k], t->name);

			dt[k] = d;
			if (!d)
				continue;
			if (rfs_strmap_put(&used[k], d->t->name, (void *)d) < 0) {
				ret = nomem(b);
				goto out;
			}
			nd++;
			if (kdt < 0) {
				ret = rfs_errf(b->err, RFS_E_MISMATCH,
					       "%s: delta for tensor '%s', but the base tensor in %s is %s; residfs merges F32, BF16 and F16 tensors only (others pass through unchanged and take no delta)",
					       d->file->path, t->name, f->path, rfs_dtype_name(t->dtype));
				goto out;
			}
			if (rfs_dtype_kdt(d->t->dtype) < 0) {
				ret = rfs_errf(b->err, RFS_E_FORMAT,
					       "%s: delta tensor '%s' is %s; deltas must be F32, BF16 or F16",
					       d->file->path, t->name, rfs_dtype_name(d->t->dtype));
				goto out;
			}
			switch (shape_fit(t, d->t)) {
			case 1:
				if (!is_vocab_tensor(base, t)) {
					rfs_shape_str(t->shape, t->ndim, s1, sizeof(s1));
					rfs_shape_str(d->t->shape, d->t->ndim, s2, sizeof(s2));
					ret = rfs_errf(b->err, RFS_E_MISMATCH,
						       "tensor '%s': base %s has shape %s but delta %s has shape %s; only vocabulary tensors (%s) may grow",
						       t->name, f->path, s1, d->file->path, s2,
						       vocab_rule(base, s1, sizeof(s1)));
					goto out;
				}
				if (d->t->shape[0] > rows)
					rows = d->t->shape[0];
				break;
			case 0:
				break;
			default:
				rfs_shape_str(t->shape, t->ndim, s1, sizeof(s1));
				rfs_shape_str(d->t->shape, d->t->ndim, s2, sizeof(s2));
				ret = rfs_errf(b->err, RFS_E_MISMATCH,
					       "tensor '%s': base %s has shape %s but delta %s has shape %s",
					       t->name, f->path, s1, d->file->path, s2);
				goto out;
			}
		}
		o[i].info = ti;
		o[i].src = bt;
		if (kdt >= 0 && p->opts.out_dtype >= 0)
			ti->dtype = p->opts.out_dtype;
		if (kdt >= 0 && !nd && !p->opts.passthrough) {
			if (!*nmissing)
				*first_missing = t->name;
			(*nmissing)++;
		}
		if (kdt >= 0 && (nd || ti->dtype != (int)t->dtype)) {
			if (rows != (t->ndim ? t->shape[0] : 0)) {
				ti->grown_rows = rows - t->shape[0];
				ti->shape[0] = rows;
				if (base->vocab_size >= 0 && (uint64_t)base->vocab_size == t->shape[0] &&
				    (int64_t)rows > *vocab)
					*vocab = (int64_t)rows;
			}
			o[i].comp = new_comp(b, t->name, (enum rfs_kdt)rfs_dtype_kdt(ti->dtype),
					     out_numel(ti), 1 + (unsigned)nd);
			if (!o[i].comp) {
				ret = nomem(b);
				goto out;
			}
			comp_add(o[i].comp, bt, 1.0f);
			ti->srcmask = 1;
			for (k = 1; k < p->nsrc; k++)
				if (dt[k]) {
					comp_add(o[i].comp, dt[k], (float)p->spec.terms[k].scale);
					ti->srcmask |= 1u << k;
				}
			ti->how = nd ? RFS_HOW_MERGED : RFS_HOW_CONVERTED;
			ti->nterms = o[i].comp->nops;
		} else {
			ti->how = RFS_HOW_PASSTHROUGH;
			ti->nterms = 1;
			ti->srcmask = 1;
		}
		o[i].bytes = out_bytes(ti);
		*total += o[i].bytes;
		if (ti->dtype != (int)t->dtype || ti->grown_rows)
			changed = 1;
	}
	if (*nmissing)
		goto out;
	if (changed)
		ret = emit_st_file(b, base->file_names[fi], o, f->ntensors, NULL, 1,
				   f->has_meta ? f->meta : &pt_meta, f->has_meta ? f->nmeta : 1);
	else
		ret = emit_st_file(b, base->file_names[fi], o, f->ntensors, f, 1, NULL, 0);
out:
	free(o);
	return ret;
}

static int plan_apply_config(struct build *b, int64_t vocab)
{
	struct rfs_plan *p = b->p;
	const struct rfs_src *base = p->src[0];
	static const char *const k_vocab[] = { "vocab_size" };
	static const char *const k_tdt[] = { "torch_dtype" };
	static const char *const k_dt[] = { "dtype" };
	struct patch pt[3];
	char vbuf[32], dbuf[32];
	size_t n = 0, len;
	char *out;

	if (vocab > base->vocab_size && base->vocab_size >= 0) {
		snprintf(vbuf, sizeof(vbuf), "%lld", (long long)vocab);
		pt[n++] = (struct patch){ k_vocab, 1, vbuf };
		note(b, "vocabulary grows from %lld to %lld rows; config.json vocab_size follows",
		     (long long)base->vocab_size, (long long)vocab);
	}
	if (p->opts.out_dtype >= 0) {
		snprintf(dbuf, sizeof(dbuf), "\"%s\"", rfs_dtype_torch_name(p->opts.out_dtype));
		pt[n++] = (struct patch){ k_tdt, 1, dbuf };
		pt[n++] = (struct patch){ k_dt, 1, dbuf };
	}
	out = patch_json(base->config, base->config_len, pt, n, &len);
	if (!out)
		return nomem(b);
	return add_lit_file(b, "config.json", out, len, base->config_mode);
}

static int plan_apply_index(struct build *b, uint64_t total)
{
	const struct rfs_src *base = b->p->src[0];
	static const char *const k_total[] = { "metadata", "total_size" };
	struct patch pt = { k_total, 2, NULL };
	char tbuf[32];
	size_t len;
	char *out;

	snprintf(tbuf, sizeof(tbuf), "%llu", (unsigned long long)total);
	pt.value = tbuf;
	out = patch_json(base->index, base->index_len, &pt, 1, &len);
	if (!out)
		return nomem(b);
	return add_lit_file(b, "model.safetensors.index.json", out, len, base->index_mode);
}

static int plan_apply(struct build *b)
{
	struct rfs_plan *p = b->p;
	const struct rfs_src *base = p->src[0];
	struct rfs_strmap used[RFS_SPEC_MAX_TERMS];
	struct dmatch dm[RFS_SPEC_MAX_TERMS];
	const char *first_missing = NULL;
	size_t i, k, nmissing = 0;
	uint64_t total = 0;
	int64_t vocab = base->vocab_size;
	const struct rfs_src *tok_src = base, *gen_src = NULL;
	int ret = 0;

	memset(used, 0, sizeof(used));
	for (k = 1; k < p->nsrc && !ret; k++)
		ret = choose_match(b, base, p->src[k], &dm[k]);
	for (i = 0; i < base->nfiles && !ret; i++)
		ret = plan_apply_file(b, i, used, dm, &total, &vocab, &nmissing, &first_missing);
	if (!ret && nmissing) {
		char list[1024] = "";

		for (k = 1; k < p->nsrc; k++) {
			size_t off = strlen(list);

			snprintf(list + off, sizeof(list) - off, "%s%s", k > 1 ? ", " : "", p->src[k]->dir);
		}
		ret = rfs_errf(b->err, RFS_E_MISMATCH,
			       "base tensor '%s' (%s) has no delta in %s%s; use --passthrough to show base tensors without a delta unchanged",
			       first_missing, base->dir, list,
			       nmissing > 1 ? " (nor do other tensors)" : "");
		if (nmissing > 1) {
			size_t off = strlen(b->err->msg);

			snprintf(b->err->msg + off, sizeof(b->err->msg) - off,
				 " [%zu base tensors without a delta]", nmissing);
		}
	}
	for (k = 1; k < p->nsrc && !ret; k++) {
		const struct rfs_src *d = p->src[k];

		for (i = 0; i < d->ntensors; i++) {
			const char *nm = d->tensors[i].t->name;
			char **g;

			if (rfs_strmap_get(&used[k], nm))
				continue;
			g = realloc(p->ignored, (p->nignored + 1) * sizeof(*g));
			if (!g || asprintf(&g[p->nignored], "%s: %s", d->dir, nm) < 0) {
				if (g)
					p->ignored = g;
				ret = nomem(b);
				break;
			}
			p->ignored = g;
			p->nignored++;
			if (!strcmp(nm, "lm_head.weight") && base->tie_word_embeddings)
				note(b, "%s: lm_head.weight ignored: the base ties it to the input embeddings, which the delta updates",
				     d->dir);
			else
				note(b, "%s: delta tensor '%s' has no base tensor and is ignored", d->dir, nm);
		}
	}
	for (k = 0; k < RFS_SPEC_MAX_TERMS; k++)
		rfs_strmap_release(&used[k]);
	if (ret)
		return ret;
	if (base->sharded) {
		ret = plan_apply_index(b, total);
		if (ret)
			return ret;
	}
	ret = check_vocab_grown(b, base, vocab, 0);
	if (!ret)
		ret = plan_apply_config(b, vocab);
	if (ret)
		return ret;
	for (k = 1; k < p->nsrc; k++)
		if (has_tokenizer(p->src[k]->dir)) {
			tok_src = p->src[k];
			break;
		}
	for (k = 1; k < p->nsrc && !gen_src; k++)
		if (rfs_entry_exists_at(p->src[k]->dir, "generation_config.json"))
			gen_src = p->src[k];
	if (!gen_src && rfs_entry_exists_at(base->dir, "generation_config.json"))
		gen_src = base;
	ret = add_tokenizer_files(b, tok_src);
	if (!ret && gen_src)
		ret = add_passthrough_file(b, gen_src, "generation_config.json");
	if (!ret)
		ret = add_model_card(b);
	if (!ret)
		ret = add_other_base_files(b, base);
	return ret;
}

/* ---- compute mode ------------------------------------------------------ */

struct cout {
	struct outt o;
	const char *name;
};

static int cmp_cout(const void *a, const void *c)
{
	const struct cout *x = a, *y = c;
	unsigned ax = rfs_dtype_align((enum rfs_dtype)x->o.info->dtype);
	unsigned ay = rfs_dtype_align((enum rfs_dtype)y->o.info->dtype);

	if (ax != ay)
		return ax > ay ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Input embedding names, for models whose lm_head is tied and not saved. */
static const char *const embed_names[] = {
	"model.embed_tokens.weight", "transformer.wte.weight",
	"model.decoder.embed_tokens.weight", "transformer.word_embeddings.weight",
	"gpt_neox.embed_in.weight", "model.embed_in.weight", "embed_tokens.weight", NULL,
};

static int residuals_config(struct build *b, struct cout *c, size_t n)
{
	struct rfs_plan *p = b->p;
	struct rfs_buf names = { 0 }, shapes = { 0 }, o = { 0 };
	char nh[65], sh[65], when[48], shp[256];
	size_t i, cnt[3] = { 0 }, len;
	int best = 0;
	const struct cout **byname = calloc(n ? n : 1, sizeof(*byname));

	if (!byname)
		return nomem(b);
	for (i = 0; i < n; i++)
		byname[i] = &c[i];
	/* c is sorted by (alignment, name); names must be sorted by name alone */
	for (i = 1; i < n; i++) {
		const struct cout *x = byname[i];
		size_t j = i;

		while (j > 0 && strcmp(byname[j - 1]->name, x->name) > 0) {
			byname[j] = byname[j - 1];
			j--;
		}
		byname[j] = x;
	}
	for (i = 0; i < n; i++) {
		const struct rfs_tinfo *ti = byname[i]->o.info;

		if (i) {
			rfs_buf_add(&names, "|", 1);
			rfs_buf_add(&shapes, "|", 1);
		}
		rfs_buf_adds(&names, byname[i]->name);
		rfs_shape_str(ti->shape, ti->ndim, shp, sizeof(shp));
		rfs_buf_addf(&shapes, "%s:%s", byname[i]->name, shp);
		cnt[rfs_dtype_kdt((enum rfs_dtype)ti->dtype)]++;
	}
	free(byname);
	for (i = 1; i < 3; i++)
		if (cnt[i] > cnt[best])
			best = (int)i;
	rfs_sha256_hex(names.data ? names.data : "", names.len, nh);
	rfs_sha256_hex(shapes.data ? shapes.data : "", shapes.len, sh);
	rfs_buf_release(&names);
	rfs_buf_release(&shapes);
	rfs_iso8601(p->mtime_ns, when, sizeof(when));
	rfs_buf_adds(&o, "{\n  \"residuals_version\": \"1.0\",\n  \"format\": \"pytorch\",\n");
	rfs_buf_addf(&o, "  \"dtype\": \"%s\",\n",
		     best == RFS_KDT_BF16 ? "bfloat16" : best == RFS_KDT_F16 ? "float16" : "float32");
	rfs_buf_addf(&o, "  \"param_count\": %zu,\n", n);
	rfs_buf_addf(&o, "  \"shapes_hash\": \"%s\",\n  \"parameter_names_hash\": \"%s\",\n", sh, nh);
	rfs_buf_adds(&o, "  \"tokenizer_name\": ");
	rfs_buf_add_json_str_ascii(&o, p->src[0]->dir);
	rfs_buf_addf(&o, ",\n  \"created_at\": \"%s\",\n", when);
	rfs_buf_addf(&o, "  \"library\": {\n    \"package\": \"residfs\",\n    \"version\": \"%s\"\n  },\n",
		     RESIDFS_VERSION);
	rfs_buf_adds(&o, "  \"base_model_name\": ");
	rfs_buf_add_json_str_ascii(&o, p->src[1]->dir);
	rfs_buf_adds(&o, ",\n  \"instruct_model_name\": ");
	rfs_buf_add_json_str_ascii(&o, p->src[0]->dir);
	rfs_buf_adds(&o, ",\n  \"pipeline_tag\": \"text-generation\",\n  \"license\": null,\n"
		     "  \"language\": null,\n  \"tags\": [\n    \"residuals\",\n    \"delta\",\n"
		     "    \"task-arithmetic\",\n    \"finetune\"\n  ],\n"
		     "  \"base_model_relation\": \"adapter\"\n}");
	if (!rfs_buf_ok(&o)) {
		rfs_buf_release(&o);
		return nomem(b);
	}
	{
		char *data = rfs_buf_detach(&o, &len);

		return add_lit_file(b, "config.json", data, len,
				    p->src[0]->config_mode & p->src[1]->config_mode);
	}
}

static int plan_compute(struct build *b)
{
	struct rfs_plan *p = b->p;
	const struct rfs_src *ins = p->src[0], *base = p->src[1];
	struct cout *c = calloc(base->ntensors + 1, sizeof(*c));
	struct rfs_strmap used = { 0 };
	enum rfs_dtype odt = p->opts.out_dtype >= 0 ? (enum rfs_dtype)p->opts.out_dtype : RFS_DT_F32;
	size_t i, n = 0, tied_from = (size_t)-1;
	int ret = 0;

	if (!c)
		return nomem(b);
	for (i = 0; i < base->ntensors; i++) {
		const struct rfs_src_tensor *bt = &base->tensors[i];
		const struct rfs_src_tensor *it = rfs_src_find(ins, bt->t->name);
		struct rfs_tinfo *ti;
		char s1[128], s2[128];
		uint64_t numel;

		if (!it) {
			ret = rfs_errf(b->err, RFS_E_MISMATCH,
				       "tensor '%s' of the base %s is missing from the instruct model %s",
				       bt->t->name, bt->file->path, ins->dir);
			goto out;
		}
		if (rfs_strmap_put(&used, it->t->name, (void *)it) < 0) {
			ret = nomem(b);
			goto out;
		}
		if (rfs_dtype_kdt(bt->t->dtype) < 0 || rfs_dtype_kdt(it->t->dtype) < 0) {
			note(b, "tensor '%s' is %s, which residfs does not compute (F32, BF16 and F16 only): left out of the residuals",
			     bt->t->name, rfs_dtype_name(bt->t->dtype));
			continue;
		}
		if (shape_fit(bt->t, it->t) > 0 && !is_vocab_tensor(base, bt->t)) {
			rfs_shape_str(bt->t->shape, bt->t->ndim, s1, sizeof(s1));
			rfs_shape_str(it->t->shape, it->t->ndim, s2, sizeof(s2));
			ret = rfs_errf(b->err, RFS_E_MISMATCH,
				       "tensor '%s': instruct %s has shape %s but base %s has shape %s; only vocabulary tensors (%s) may grow",
				       bt->t->name, it->file->path, s2, bt->file->path, s1,
				       vocab_rule(base, s1, sizeof(s1)));
			goto out;
		}
		if (shape_fit(bt->t, it->t) < 0) {
			rfs_shape_str(bt->t->shape, bt->t->ndim, s1, sizeof(s1));
			rfs_shape_str(it->t->shape, it->t->ndim, s2, sizeof(s2));
			ret = rfs_errf(b->err, RFS_E_MISMATCH,
				       "tensor '%s': instruct %s has shape %s but base %s has shape %s%s",
				       bt->t->name, it->file->path, s2, bt->file->path, s1,
				       it->t->ndim == bt->t->ndim && it->t->ndim &&
						       it->t->shape[0] < bt->t->shape[0]
					       ? " (the instruct vocabulary cannot be smaller)" : "");
			goto out;
		}
		ti = new_tinfo(b);
		if (!ti) {
			ret = nomem(b);
			goto out;
		}
		ti->name = bt->t->name;
		ti->file = "model.safetensors";
		ti->dtype = odt;
		ti->ndim = it->t->ndim;
		memcpy(ti->shape, it->t->shape, sizeof(ti->shape));
		ti->how = RFS_HOW_COMPUTED;
		ti->nterms = 2;
		ti->srcmask = 3;
		if (it->t->ndim && it->t->shape[0] > bt->t->shape[0])
			ti->grown_rows = it->t->shape[0] - bt->t->shape[0];
		numel = it->t->numel;
		c[n].name = ti->name;
		c[n].o.info = ti;
		c[n].o.comp = new_comp(b, ti->name, (enum rfs_kdt)rfs_dtype_kdt(odt), numel, 2);
		if (!c[n].o.comp) {
			ret = nomem(b);
			goto out;
		}
		comp_add(c[n].o.comp, it, 1.0f);
		comp_add(c[n].o.comp, bt, -1.0f);
		c[n].o.bytes = out_bytes(ti);
		for (size_t e = 0; embed_names[e]; e++)
			if (!strcmp(ti->name, embed_names[e]) && tied_from == (size_t)-1)
				tied_from = n;
		n++;
	}
	/* transformers' state_dict has lm_head.weight even when tied and unsaved */
	if (base->tie_word_embeddings && !rfs_src_find(base, "lm_head.weight") &&
	    tied_from != (size_t)-1) {
		struct rfs_tinfo *ti = new_tinfo(b);

		if (!ti) {
			ret = nomem(b);
			goto out;
		}
		*ti = *c[tied_from].o.info;
		ti->name = "lm_head.weight";
		c[n] = c[tied_from];
		c[n].name = ti->name;
		c[n].o.info = ti;
		n++;
		note(b, "lm_head.weight is tied to %s in the base: written as a copy of its delta, as the residuals package does",
		     c[tied_from].name);
	}
	for (i = 0; i < ins->ntensors; i++)
		if (!rfs_strmap_get(&used, ins->tensors[i].t->name) &&
		    strcmp(ins->tensors[i].t->name, "lm_head.weight"))
			note(b, "instruct tensor '%s' has no base tensor and is left out",
			     ins->tensors[i].t->name);
	if (n > 1)
		qsort(c, n, sizeof(*c), cmp_cout);
	{
		struct outt *o = calloc(n ? n : 1, sizeof(*o));

		if (!o) {
			ret = nomem(b);
			goto out;
		}
		for (i = 0; i < n; i++)
			o[i] = c[i].o;
		ret = emit_st_file(b, "model.safetensors", o, n, NULL, 0, NULL, 0);
		free(o);
	}
	if (!ret)
		ret = residuals_config(b, c, n);
	if (!ret)
		ret = add_tokenizer_files(b, ins);
	if (!ret && rfs_entry_exists_at(ins->dir, "generation_config.json"))
		ret = add_passthrough_file(b, ins, "generation_config.json");
	if (!ret)
		ret = add_model_card(b);
out:
	rfs_strmap_release(&used);
	free(c);
	return ret;
}

/* ---- build ------------------------------------------------------------- */

int rfs_plan_build(struct rfs_spec *spec, const struct rfs_opts *opts,
		   struct rfs_plan **out, struct rfs_err *err)
{
	struct rfs_plan *p = calloc(1, sizeof(*p));
	struct build b = { .p = p, .err = err };
	size_t i;
	int ret = 0;

	if (!p)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	p->opts = *opts;
	if (spec->nterms < 2) {
		ret = rfs_errf(err, RFS_E_SPEC, "a SPEC needs at least two terms (BASE+DELTA or INSTRUCT-BASE)");
		goto fail;
	}
	for (i = 0; i < spec->nterms; i++) {
		ret = rfs_src_open(spec->terms[i].path, &p->src[i], err);
		if (ret)
			goto fail;
		p->nsrc++;
		if (p->src[i]->mtime_ns > p->mtime_ns)
			p->mtime_ns = p->src[i]->mtime_ns;
	}
	if (p->src[0]->kind != RFS_SRC_MODEL) {
		ret = rfs_errf(err, RFS_E_SPEC,
			       "%s is a residuals directory; the first term must be a model (BASE+DELTA or INSTRUCT-BASE)",
			       spec->terms[0].path);
		goto fail;
	}
	if (p->src[1]->kind == RFS_SRC_MODEL) {
		if (spec->nterms != 2 || spec->terms[1].scale != -1.0) {
			ret = rfs_errf(err, RFS_E_SPEC,
				       "%s is a model: the only form with two models is INSTRUCT-BASE (compute mode); "
				       "to apply residuals, the terms after the base must be residuals directories",
				       spec->terms[1].path);
			goto fail;
		}
		p->compute = 1;
	} else {
		for (i = 1; i < spec->nterms; i++)
			if (p->src[i]->kind != RFS_SRC_RESIDUALS) {
				ret = rfs_errf(err, RFS_E_SPEC,
					       "%s is a model, but after the base only residuals directories can be added or subtracted",
					       spec->terms[i].path);
				goto fail;
			}
	}
	/* one per base tensor, and the tied lm_head compute mode may add */
	b.tinfo_cap = p->src[p->compute ? 1 : 0]->ntensors + 1;
	p->tinfo = calloc(b.tinfo_cap, sizeof(*p->tinfo));
	if (!p->tinfo) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto fail;
	}
	p->spec = *spec;
	ret = p->compute ? plan_compute(&b) : plan_apply(&b);
	/* the build's name map pointed into an array that grew: index the final one */
	for (i = 0; i < p->nfiles && !ret; i++)
		if (rfs_strmap_put(&p->byname, p->files[i].name, &p->files[i]) < 0)
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
	if (ret) {
		memset(&p->spec, 0, sizeof(p->spec));
		goto fail;
	}
	for (i = 0; i < p->nfiles; i++)
		p->files[i].mtime_ns = p->mtime_ns;
	memset(spec, 0, sizeof(*spec));
	rfs_strmap_release(&b.names);
	*out = p;
	return 0;
fail:
	rfs_strmap_release(&b.names);
	rfs_plan_free(p);
	return ret;
}

void rfs_plan_free(struct rfs_plan *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < p->nfiles; i++) {
		free(p->files[i].name);
		free(p->files[i].segs);
		free(p->files[i].idents);
	}
	free(p->files);
	for (i = 0; i < p->ncomp; i++)
		free(p->comps[i]);
	free(p->comps);
	for (i = 0; i < p->nlits; i++)
		free(p->lits[i]);
	free(p->lits);
	for (i = 0; i < p->nnotes; i++)
		free(p->notes[i]);
	free(p->notes);
	for (i = 0; i < p->nignored; i++)
		free(p->ignored[i]);
	free(p->ignored);
	free(p->tinfo);
	rfs_strmap_release(&p->byname);
	for (i = 0; i < p->npt; i++) {
		close(p->pts[i]->fd);
		rfs_ident_release(&p->pts[i]->ident);
		free(p->pts[i]->path);
		free(p->pts[i]);
	}
	free(p->pts);
	for (i = 0; i < p->nsrc; i++)
		rfs_src_close(p->src[i]);
	rfs_spec_release(&p->spec);
	free(p);
}

const struct rfs_vfile *rfs_plan_find(const struct rfs_plan *p, const char *name)
{
	return rfs_strmap_get(&p->byname, name);
}
