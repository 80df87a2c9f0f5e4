/*
 * The generated model card (card.h).
 */
#include "card.h"

#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "buf.h"
#include "recipe.h"
#include "util.h"

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

/* The last component of a local path; a Hub term's repository id whole. */
static const char *term_name(const struct rfs_src *s)
{
	const char *path = rfs_src_model_name(s);
	size_t n = strlen(path);

	if (s->td && s->td->repo_id)
		return path;
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

/* The sources table: each term with its fingerprint. */
static void sources_table(const struct rfs_plan *p, struct rfs_buf *o, int with_scale)
{
	char fp[256];
	size_t i;

	rfs_buf_adds(o, with_scale ? "## Sources\n\n| term | kind | scale | fingerprint |\n|---|---|---|---|\n"
				   : "## Sources\n\n| term | kind | fingerprint |\n|---|---|---|\n");
	for (i = 0; i < p->nsrc; i++) {
		fingerprint(p->src[i], fp, sizeof(fp));
		if (with_scale)
			rfs_buf_addf(o, "| `%s` | %s | %g | %s |\n", term_name(p->src[i]),
				     rfs_src_kind_name(p->src[i]->kind), p->spec.terms[i].scale, fp);
		else
			rfs_buf_addf(o, "| `%s` | %s | %s |\n", term_name(p->src[i]),
				     rfs_src_kind_name(p->src[i]->kind), fp);
	}
	for (i = 0; i < p->nsrc; i++)
		if (p->src[i]->td && p->src[i]->td->resolved)
			rfs_buf_addf(o, "%s- resolved: %s\n", i && p->src[i - 1]->td->resolved ? "" : "\n",
				     p->src[i]->td->resolved);
}

/*
 * A merge's card: mergekit's front matter (base_model: every model,
 * library_name, tags mergekit and merge) and its sections (method, models,
 * the recipe), then residfs's lineage: the sources and their fingerprints.
 */
static void recipe_card(const struct rfs_plan *p, struct rfs_buf *o)
{
	const struct rfs_recipe *r = p->recipe;
	size_t i;

	rfs_buf_adds(o, "---\nbase_model:\n");
	for (i = 0; i < p->nsrc; i++) {
		rfs_buf_adds(o, "- ");
		rfs_buf_add_json_str_ascii(o, term_name(p->src[i]));
		rfs_buf_adds(o, "\n");
	}
	rfs_buf_adds(o, "library_name: transformers\ntags:\n- mergekit\n- merge\n- residfs\n---\n");
	rfs_buf_adds(o, "# merged\n\nThis is a merge of pre-trained language models in the form "
		     "[mergekit](https://github.com/arcee-ai/mergekit) writes, computed on read by residfs: "
		     "no merged copy was written.\n\n## Merge Details\n### Merge Method\n\n");
	rfs_buf_addf(o, "This model was merged using the %s merge method", rfs_merge_method_name(r->method));
	if (r->base_model)
		rfs_buf_addf(o, " using %s as a base", term_name(p->src[0]));
	rfs_buf_adds(o, ".\n\n### Models Merged\n\nThe following models were included in the merge:\n");
	for (i = r->base_model ? 1 : 0; i < p->nsrc; i++)
		rfs_buf_addf(o, "* %s\n", term_name(p->src[i]));
	rfs_buf_adds(o, "\n### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n```yaml\n");
	rfs_buf_add(o, r->text, r->text_len);
	if (r->text_len && r->text[r->text_len - 1] != '\n')
		rfs_buf_adds(o, "\n");
	rfs_buf_addf(o, "```\n\n- residfs version: %s\n\n", RESIDFS_VERSION);
	sources_table(p, o, 0);
}

int rfs_pb_add_card(struct rfs_build *b)
{
	struct rfs_plan *p = b->p;
	struct rfs_buf o = { 0 };
	char spec[4096], bn[512];
	size_t i;

	rfs_spec_format(&p->spec, spec, sizeof(spec));
	if (p->recipe) {
		recipe_card(p, &o);
		goto done;
	}
	rfs_buf_adds(&o, "---\n");
	if (p->compute) {
		snprintf(bn, sizeof(bn), "%s", term_name(p->src[1]));
		card_yaml_str(&o, "library_name", "residfs");
		card_yaml_str(&o, "base_model", bn);
		rfs_buf_adds(&o, "base_model_relation: adapter\n");
		snprintf(bn, sizeof(bn), "%s", term_name(p->src[0]));
		card_yaml_str(&o, "instruct_model", bn);
		rfs_buf_adds(&o, "pipeline_tag: text-generation\n");
		rfs_buf_adds(&o, "tags:\n- residuals\n- delta\n- task-arithmetic\n- residfs\n");
	} else {
		snprintf(bn, sizeof(bn), "%s", term_name(p->src[0]));
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
	sources_table(p, &o, 1);
done:
	if (!rfs_buf_ok(&o)) {
		rfs_buf_release(&o);
		return rfs_pb_nomem(b);
	}
	{
		size_t len;
		char *data = rfs_buf_detach(&o, &len);

		unsigned mode = 0666;

		for (i = 0; i < p->nsrc; i++)
			mode &= p->src[i]->config_mode;
		return rfs_pb_add_lit(b, "README.md", data, len, mode);
	}
}
