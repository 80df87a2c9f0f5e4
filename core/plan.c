/*
 * Building plans: opening the SPEC's sources and handing the plan to
 * apply mode (apply.c) or compute mode (compute.c).  All validation
 * happens while building; reading (core/read.c) only does I/O and
 * arithmetic on what was checked.
 *
 * The builder's parts, one decision each: pstore.c (storage of virtual
 * files, segments and computed tensors), apply.c (BASE+DELTA...: how each
 * tensor is made), compute.c (INSTRUCT-BASE and the residuals config),
 * match.c (delta names onto base names), vocab.c (when a shape may grow),
 * hfdir.c (config, index, tokenizer, generation config, other files),
 * card.c (README.md).
 */
#include "plan_int.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply.h"
#include "compute.h"
#include "merge.h"
#include "tokalign.h"
#include "pstore.h"

/* The plan's name map and mtimes once its files are all there. */
static int finish(struct rfs_build *b)
{
	struct rfs_plan *p = b->p;
	size_t i;

	/* the build's name map pointed into an array that grew: index the final one */
	for (i = 0; i < p->nfiles; i++)
		if (rfs_strmap_put(&p->byname, p->files[i].name, &p->files[i]) == RFS_PUT_NOMEM)
			return rfs_errf(b->err, RFS_E_NOMEM, "out of memory");
	for (i = 0; i < p->nfiles; i++)
		p->files[i].mtime_ns = p->mtime_ns;
	return 0;
}

enum rfs_code rfs_plan_build(struct rfs_spec *spec, const struct rfs_opts *opts,
			     struct rfs_plan **out, struct rfs_err *err)
{
	struct rfs_plan *p = calloc(1, sizeof(*p));
	struct rfs_build b = { .p = p, .err = err };
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
	ret = p->compute ? rfs_pb_compute(&b) : rfs_pb_apply(&b);
	if (!ret)
		ret = finish(&b);
	if (ret) {
		memset(&p->spec, 0, sizeof(p->spec));
		goto fail;
	}
	memset(spec, 0, sizeof(*spec));
	rfs_strmap_release(&b.names);
	*out = p;
	return 0;
fail:
	rfs_strmap_release(&b.names);
	rfs_plan_free(p);
	return ret;
}

enum rfs_code rfs_plan_build_recipe(struct rfs_recipe *r, const struct rfs_opts *opts,
				    struct rfs_plan **out, struct rfs_err *err)
{
	struct rfs_plan *p = calloc(1, sizeof(*p));
	struct rfs_build b = { .p = p, .err = err };
	struct rfs_spec spec = { 0 };
	size_t i, k;
	int ret = 0;

	if (!p)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	p->opts = *opts;
	/* the terms: the base (or, without one, the first model) first, as its
	 * layout is the result's, then every other model once */
	ret = rfs_spec_add(&spec, r->base_model ? r->base_model : r->models[0].ref, 1.0, err);
	for (k = 0; k < r->nmodels && !ret; k++) {
		for (i = 0; i < spec.nterms && strcmp(spec.terms[i].path, r->models[k].ref); i++)
			;
		if (i == spec.nterms)
			ret = rfs_spec_add(&spec, r->models[k].ref, 1.0, err);
	}
	for (i = 0; i < spec.nterms && !ret; i++) {
		ret = rfs_src_open(spec.terms[i].path, &p->src[i], err);
		if (ret)
			break;
		p->nsrc++;
		if (p->src[i]->mtime_ns > p->mtime_ns)
			p->mtime_ns = p->src[i]->mtime_ns;
	}
	if (ret) {
		rfs_spec_release(&spec);
		rfs_plan_free(p);
		return ret;
	}
	p->spec = spec;
	p->recipe = r;
	b.tinfo_cap = p->src[0]->ntensors + 1;
	p->tinfo = calloc(b.tinfo_cap, sizeof(*p->tinfo));
	ret = p->tinfo ? rfs_pb_merge(&b) : rfs_errf(err, RFS_E_NOMEM, "out of memory");
	if (!ret)
		ret = finish(&b);
	rfs_strmap_release(&b.names);
	if (ret) {
		p->recipe = NULL; /* the caller keeps it */
		rfs_plan_free(p);
		return ret;
	}
	*out = p;
	return 0;
}

void rfs_plan_free(struct rfs_plan *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < p->nfiles; i++) {
		free(p->files[i].name);
		free(p->files[i].segs);
		free(p->files[i].srcs);
	}
	free(p->files);
	for (i = 0; i < p->ncomp; i++) {
		if (p->comps[i]->merge)
			pthread_mutex_destroy(&p->comps[i]->merge->lk);
		free(p->comps[i]->merge);
		free(p->comps[i]);
	}
	free(p->comps);
	rfs_vmap_free(p->vmap);
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
		rfs_bsrc_close(p->pts[i]->src);
		free(p->pts[i]);
	}
	free(p->pts);
	for (i = 0; i < p->nsrc; i++)
		rfs_src_close(p->src[i]);
	rfs_spec_release(&p->spec);
	if (p->recipe) {
		rfs_recipe_release(p->recipe);
		free(p->recipe);
	}
	free(p);
}

const struct rfs_vfile *rfs_plan_find(const struct rfs_plan *p, const char *name)
{
	return rfs_strmap_get(&p->byname, name);
}

size_t rfs_plan_nfiles(const struct rfs_plan *p)
{
	return p->nfiles;
}

const struct rfs_vfile *rfs_plan_file(const struct rfs_plan *p, size_t i)
{
	return i < p->nfiles ? &p->files[i] : NULL;
}

uint64_t rfs_plan_bytes(const struct rfs_plan *p)
{
	uint64_t total = 0;
	size_t i;

	for (i = 0; i < p->nfiles; i++)
		total += p->files[i].size;
	return total;
}

int64_t rfs_plan_mtime_ns(const struct rfs_plan *p)
{
	return p->mtime_ns;
}

size_t rfs_plan_nnotes(const struct rfs_plan *p)
{
	return p->nnotes;
}

const char *rfs_plan_note(const struct rfs_plan *p, size_t i)
{
	return i < p->nnotes ? p->notes[i] : NULL;
}

const char *rfs_vfile_name(const struct rfs_vfile *vf)
{
	return vf->name;
}

uint64_t rfs_vfile_size(const struct rfs_vfile *vf)
{
	return vf->size;
}

uint64_t rfs_vfile_ino(const struct rfs_vfile *vf)
{
	return vf->ino;
}

unsigned rfs_vfile_mode(const struct rfs_vfile *vf)
{
	return vf->mode;
}

size_t rfs_vfile_index(const struct rfs_vfile *vf)
{
	return (size_t)(vf->ino - 2);
}

size_t rfs_vfile_nsrcs(const struct rfs_vfile *vf)
{
	return vf->nsrcs;
}

struct rfs_bsrc *rfs_vfile_src(const struct rfs_vfile *vf, size_t i)
{
	return vf->srcs[i];
}

size_t rfs_plan_nterms(const struct rfs_plan *p)
{
	return p->nsrc;
}

const char *rfs_plan_resolved(const struct rfs_plan *p, size_t i)
{
	return p->src[i] && p->src[i]->td ? p->src[i]->td->resolved : NULL;
}
