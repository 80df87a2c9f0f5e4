/*
 * Delta-to-base name matching (match.h).
 */
#include "match.h"

#include <stdio.h>
#include <string.h>

const struct rfs_src_tensor *rfs_match_find(const struct rfs_src *d, const struct rfs_match *m,
					    const char *name)
{
	char buf[1024];
	size_t plen;

	switch (m->mode) {
	case RFS_MATCH_ADD_PREFIX:
		if ((size_t)snprintf(buf, sizeof(buf), "%s%s", m->prefix, name) >= sizeof(buf))
			return NULL;
		return rfs_src_find(d, buf);
	case RFS_MATCH_STRIP_PREFIX:
		plen = strlen(m->prefix);
		return strncmp(name, m->prefix, plen) ? NULL : rfs_src_find(d, name + plen);
	case RFS_MATCH_EXACT:
		break;
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

enum rfs_code rfs_match_choose(const struct rfs_src *base, const struct rfs_src *d, struct rfs_match *m,
			       struct rfs_err *err)
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
		return rfs_errf(err, RFS_E_MISMATCH,
				"%s: none of its %zu tensors has a name of the base %s (e.g. '%s' vs '%s'): these residuals are not for this model",
				d->dir, d->ntensors, base->dir, d->tensors[0].t->name,
				base->ntensors ? base->tensors[0].t->name : "");
	m->mode = add >= strip ? RFS_MATCH_ADD_PREFIX : RFS_MATCH_STRIP_PREFIX;
	snprintf(m->prefix, sizeof(m->prefix), "%s", add >= strip ? padd : pstrip);
	return 0;
}
