/*
 * hub.c - Hugging Face Hub repositories as terms (tdir.h, docs/remote.md).
 *
 * Resolution, once per term:
 *   1. The local HF cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
 *      ~/.cache/huggingface/hub): models--ORG--NAME/refs/REV holds the
 *      commit (or REV is a commit with a snapshot).  When the snapshot has
 *      config.json and the weights (model.safetensors, or the index and
 *      every shard it names), the term is that directory: no request.
 *   2. Otherwise, unless HF_HUB_OFFLINE is set, the revision API
 *      ({endpoint}/api/models/REPO/revision/REV?blobs=true) gives the commit
 *      and each file's size and identity (the sha256 of LFS files, the git
 *      blob id of others).  Files the cache's snapshot of that commit holds
 *      with the right size are read from there; the others through
 *      {endpoint}/REPO/resolve/COMMIT/FILE (remote.h), so the mount never
 *      mixes revisions.
 * The token (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, the file $HF_TOKEN_PATH or
 * $HF_HOME/token) goes only to the endpoint's origin and is never printed.
 * Nothing is ever written into the HF cache.
 */
#include "tdir.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "remote.h"
#include "tunables.h"
#include "util.h"

#define API_MAX_BODY (64u << 20)   /* a revision answer lists every file */
#define API_ATTEMPTS 3

struct hfile {
	char *name;
	uint64_t size;
	char *identity;     /* sha256:HEX or git:BLOBID */
	char *etag;         /* what the resolve URL's X-Linked-Etag / ETag must be */
	int local;          /* in the cache's snapshot of the commit */
};

struct hub {
	struct rfs_tdir t;
	char repo[256], rev[256], commit[41];
	char endpoint[1024];
	int64_t mtime_ns;   /* the commit's lastModified, 0 when not given */
	char *auth;         /* Authorization line, or NULL */
	char *snap;         /* the cache's snapshot directory of the commit, or NULL */
	struct rfs_root root; /* of snap */
	int all_local;      /* no remote file at all */
	size_t nfiles;
	struct hfile *files;
};

/* ---- names and configuration ---------------------------------------------- */

static int name_part_ok(const char *s, size_t n)
{
	size_t i;

	if (!n || n > 96 || s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.')
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!isalnum(c) && c != '-' && c != '_' && c != '.')
			return 0;
		if (i && (c == '-' || c == '.') && s[i - 1] == c)
			return 0;
	}
	return 1;
}

static int rev_ok(const char *r)
{
	size_t n = strlen(r), i;

	if (!n || n > 200 || strstr(r, "..") || r[0] == '/' || r[n - 1] == '/')
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)r[i] <= ' ' || r[i] == 0x7f || strchr("~^:?*[\\", r[i]))
			return 0;
	return 1;
}

int rfs_hub_parse(const char *term, char *repo, size_t repolen, char *rev, size_t revlen)
{
	int explicit = !strncmp(term, "hf://", 5);
	const char *p = explicit ? term + 5 : term, *at = strchr(p, '@'), *slash;
	size_t rl = at ? (size_t)(at - p) : strlen(p);

	if (explicit && !strncmp(p, "models/", 7)) {
		p += 7;
		rl -= 7;
	}
	slash = memchr(p, '/', rl);
	if (slash) {
		if (!name_part_ok(p, (size_t)(slash - p)) ||
		    !name_part_ok(slash + 1, rl - (size_t)(slash - p) - 1))
			return 0;
	} else if (!explicit || !name_part_ok(p, rl)) {
		return 0; /* a bare id needs ORG/NAME */
	}
	if (rl >= repolen || (at && strlen(at + 1) >= revlen))
		return 0;
	memcpy(repo, p, rl);
	repo[rl] = 0;
	snprintf(rev, revlen, "%s", at ? at + 1 : "main");
	return rev_ok(rev);
}

static int env_true(const char *name)
{
	const char *v = getenv(name);

	return v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
		     !strcasecmp(v, "on"));
}

static void hf_home(char *buf, size_t len)
{
	const char *h = getenv("HF_HOME"), *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");

	if (h && *h)
		snprintf(buf, len, "%s", h);
	else if (x && *x)
		snprintf(buf, len, "%s/huggingface", x);
	else
		snprintf(buf, len, "%s/.cache/huggingface", home && *home ? home : "/");
}

static void hub_cache(char *buf, size_t len)
{
	const char *c = getenv("HF_HUB_CACHE");
	char home[4000];

	if (!c || !*c)
		c = getenv("HUGGINGFACE_HUB_CACHE");
	if (c && *c) {
		snprintf(buf, len, "%s", c);
		return;
	}
	hf_home(home, sizeof(home));
	if ((size_t)snprintf(buf, len, "%s/hub", home) >= len)
		buf[0] = 0;
}

static void endpoint(char *buf, size_t len)
{
	const char *e = getenv("HF_ENDPOINT");
	size_t n;

	snprintf(buf, len, "%s", e && *e ? e : "https://huggingface.co");
	n = strlen(buf);
	while (n && buf[n - 1] == '/')
		buf[--n] = 0;
}

/* "Authorization: Bearer TOKEN" from the environment or the token file. */
static char *auth_line(void)
{
	const char *t = getenv("HF_TOKEN");
	char path[4096], tok[4096], *line = NULL;
	size_t n;

	if (!t || !*t)
		t = getenv("HUGGING_FACE_HUB_TOKEN");
	if (t && *t) {
		snprintf(tok, sizeof(tok), "%s", t);
	} else {
		const char *p = getenv("HF_TOKEN_PATH");
		FILE *f;

		if (p && *p) {
			snprintf(path, sizeof(path), "%s", p);
		} else {
			char home[4000];

			hf_home(home, sizeof(home));
			snprintf(path, sizeof(path), "%s/token", home);
		}
		f = fopen(path, "re");
		if (!f)
			return NULL;
		n = fread(tok, 1, sizeof(tok) - 1, f);
		fclose(f);
		tok[n] = 0;
	}
	/* trimmed; a token with inner white space or control bytes is not sent */
	t = tok;
	while (isspace((unsigned char)*t))
		t++;
	n = strlen(t);
	while (n && isspace((unsigned char)t[n - 1]))
		n--;
	if (!n)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)t[i] <= ' ' || t[i] == 0x7f)
			return NULL;
	if (asprintf(&line, "Authorization: Bearer %.*s", (int)n, t) < 0)
		return NULL;
	return line;
}

/* ---- the local HF cache ----------------------------------------------------- */

static int is_commit(const char *s)
{
	size_t i;

	for (i = 0; i < 40; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return 0;
	return s[40] == 0;
}

/* The repository's directory in the cache: CACHE/models--ORG--NAME. */
static void repo_dir(const char *repo, char *buf, size_t len)
{
	char cache[4000], flat[300];
	size_t i, o = 0;

	hub_cache(cache, sizeof(cache));
	for (i = 0; repo[i] && o + 3 < sizeof(flat); i++) {
		if (repo[i] == '/') {
			flat[o++] = '-';
			flat[o++] = '-';
		} else {
			flat[o++] = repo[i];
		}
	}
	flat[o] = 0;
	if ((size_t)snprintf(buf, len, "%s/models--%s", cache, flat) >= len)
		buf[0] = 0;
}

/* The commit the cache knows for REPO@REV (refs/REV, or REV itself when it
 * is a commit with a snapshot); 0 when it knows one. */
static int cache_commit(const char *repo, const char *rev, char commit[41])
{
	char dir[4096], path[4400], buf[64];
	struct stat st;
	FILE *f;
	size_t n;

	repo_dir(repo, dir, sizeof(dir));
	if (is_commit(rev)) {
		snprintf(path, sizeof(path), "%s/snapshots/%s", dir, rev);
		if (stat(path, &st) || !S_ISDIR(st.st_mode))
			return -1;
		memcpy(commit, rev, 41);
		return 0;
	}
	snprintf(path, sizeof(path), "%s/refs/%s", dir, rev);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	while (n && isspace((unsigned char)buf[n - 1]))
		buf[--n] = 0;
	if (!is_commit(buf))
		return -1;
	memcpy(commit, buf, 41);
	snprintf(path, sizeof(path), "%s/snapshots/%s", dir, commit);
	return stat(path, &st) || !S_ISDIR(st.st_mode) ? -1 : 0;
}

/* Appends @name to the comma-separated @list. */
static void note_missing(char *list, size_t len, const char *name)
{
	size_t o = strlen(list);

	snprintf(list + o, len - o, "%s%s", o ? ", " : "", name);
}

/*
 * What the snapshot @snap lacks of what a term needs (config.json and the
 * weights), as a list in @missing (empty when nothing).
 */
static void snapshot_missing(const char *snap, char *missing, size_t len)
{
	char *text = NULL;
	size_t tl;
	cJSON *j, *wm, *e;
	struct rfs_err err = { 0 };
	char path[4400];

	missing[0] = 0;
	if (!rfs_file_exists_at(snap, "config.json"))
		note_missing(missing, len, "config.json");
	if (rfs_file_exists_at(snap, "model.safetensors"))
		return;
	if ((size_t)snprintf(path, sizeof(path), "%s/model.safetensors.index.json", snap) >= sizeof(path) ||
	    !rfs_file_exists_at(snap, "model.safetensors.index.json") ||
	    rfs_read_file(path, RFS_TUNE_MAX_JSON_FILE, &text, &tl, &err)) {
		note_missing(missing, len, "model.safetensors (or model.safetensors.index.json)");
		return;
	}
	j = cJSON_ParseWithLength(text, tl);
	wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
	cJSON_ArrayForEach(e, wm) {
		if (cJSON_IsString(e) && !strchr(e->valuestring, '/') && !rfs_file_exists_at(snap, e->valuestring) &&
		    !strstr(missing, e->valuestring))
			note_missing(missing, len, e->valuestring);
	}
	cJSON_Delete(j);
	free(text);
}

/* ---- the revision API --------------------------------------------------------- */

static int api_url(const struct hub *h, char *url, size_t len)
{
	char qrev[800];

	if (rfs_http_quote(h->rev, "", qrev, sizeof(qrev)))
		return -1;
	return (size_t)snprintf(url, len, "%s/api/models/%s/revision/%s?blobs=true", h->endpoint, h->repo,
				qrev) >= len ? -1 : 0;
}

static enum rfs_code api_error(const struct hub *h, const struct rfs_http_req *r, struct rfs_err *err)
{
	const char *label = h->t.label;

	if (!strcmp(r->error_code, "GatedRepo"))
		return rfs_errf(err, RFS_E_SPEC,
				"%s: a gated repository: accept its conditions on the Hub, then set HF_TOKEN to a token of that account%s",
				label, h->auth ? " (the token given has no access)" : "");
	if (!strcmp(r->error_code, "RevisionNotFound"))
		return rfs_errf(err, RFS_E_SPEC, "%s: the repository %s has no revision '%s' (a branch, tag or commit)",
				label, h->repo, h->rev);
	if (!strcmp(r->error_code, "RepoNotFound") || r->status == 401 || r->status == 404)
		return rfs_errf(err, RFS_E_SPEC,
				"%s: no repository %s on %s%s", label, h->repo, h->endpoint,
				h->auth ? " (or the token given has no access to it)"
					: " (or it is private or gated: set HF_TOKEN to a token with access)");
	if (r->status == 403)
		return rfs_errf(err, RFS_E_SPEC, "%s: access refused by %s (403)%s", label, h->endpoint,
				h->auth ? "" : ": set HF_TOKEN to a token with access");
	return rfs_errf(err, RFS_E_IO, "%s: %s answered %ld to the revision request", label, h->endpoint,
			r->status);
}

static int valid_file_name(const char *n)
{
	size_t i, len = strlen(n);

	if (!len || len > 255 || !strcmp(n, ".") || !strcmp(n, "..") || n[0] == '.')
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)n[i] < 0x20 || n[i] == '/' || n[i] == 0x7f)
			return 0;
	return 1;
}

/* "2024-05-01T12:34:56.000Z" (the Hub's lastModified) in ns since the
 * epoch, 0 when it is not such a time. */
static int64_t iso_time_ns(const cJSON *v)
{
	struct tm tm = { 0 };
	const char *end;
	time_t t;

	if (!cJSON_IsString(v) || !(end = strptime(v->valuestring, "%Y-%m-%dT%H:%M:%S", &tm)))
		return 0;
	t = timegm(&tm);
	return t > 0 ? (int64_t)t * 1000000000ll : 0;
}

/* Reads the siblings of a revision answer into @h. */
static enum rfs_code parse_revision(struct hub *h, const char *body, size_t len, struct rfs_err *err)
{
	cJSON *j = cJSON_ParseWithLength(body, len), *sha, *sib, *e;
	size_t cap, i;
	int ret = 0;

	sha = cJSON_GetObjectItemCaseSensitive(j, "sha");
	sib = cJSON_GetObjectItemCaseSensitive(j, "siblings");
	if (!cJSON_IsObject(j) || !cJSON_IsString(sha) || !is_commit(sha->valuestring) || !cJSON_IsArray(sib)) {
		cJSON_Delete(j);
		return rfs_errf(err, RFS_E_FORMAT,
				"%s: the answer of %s to the revision request is not what the Hub sends (no commit sha or siblings)",
				h->t.label, h->endpoint);
	}
	memcpy(h->commit, sha->valuestring, 41);
	h->mtime_ns = iso_time_ns(cJSON_GetObjectItemCaseSensitive(j, "lastModified"));
	cap = (size_t)cJSON_GetArraySize(sib);
	h->files = calloc(cap ? cap : 1, sizeof(*h->files));
	if (!h->files) {
		cJSON_Delete(j);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	cJSON_ArrayForEach(e, sib) {
		cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "rfilename");
		cJSON *size = cJSON_GetObjectItemCaseSensitive(e, "size");
		cJSON *blob = cJSON_GetObjectItemCaseSensitive(e, "blobId");
		cJSON *lfs = cJSON_GetObjectItemCaseSensitive(e, "lfs");
		cJSON *sha256 = cJSON_GetObjectItemCaseSensitive(lfs, "sha256");
		struct hfile *f;
		char id[128];

		if (!cJSON_IsString(name) || strchr(name->valuestring, '/'))
			continue; /* files in subdirectories are not the model's */
		if (!valid_file_name(name->valuestring))
			continue;
		if (!cJSON_IsNumber(size) || size->valuedouble < 0 || size->valuedouble > 0x1p53 ||
		    size->valuedouble != (double)(uint64_t)size->valuedouble) {
			ret = rfs_errf(err, RFS_E_FORMAT, "%s: the Hub gives '%s' no usable size", h->t.label,
				       name->valuestring);
			break;
		}
		if (lfs && cJSON_IsString(sha256) && strlen(sha256->valuestring) == 64) {
			snprintf(id, sizeof(id), "sha256:%s", sha256->valuestring);
		} else if (cJSON_IsString(blob) && strlen(blob->valuestring) == 40 && is_commit(blob->valuestring)) {
			snprintf(id, sizeof(id), "git:%s", blob->valuestring);
		} else {
			ret = rfs_errf(err, RFS_E_FORMAT, "%s: the Hub gives '%s' no identity (sha256 or blobId)",
				       h->t.label, name->valuestring);
			break;
		}
		for (i = 0; i < h->nfiles; i++)
			if (!strcmp(h->files[i].name, name->valuestring))
				break;
		if (i < h->nfiles) {
			ret = rfs_errf(err, RFS_E_FORMAT, "%s: the Hub lists '%s' twice", h->t.label,
				       name->valuestring);
			break;
		}
		f = &h->files[h->nfiles];
		f->name = strdup(name->valuestring);
		f->identity = strdup(id);
		f->etag = strdup(strchr(id, ':') + 1);
		f->size = (uint64_t)size->valuedouble;
		h->nfiles++;
		if (!f->name || !f->identity || !f->etag) {
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			break;
		}
	}
	cJSON_Delete(j);
	return ret;
}

static enum rfs_code resolve_online(struct hub *h, struct rfs_err *err)
{
	struct rfs_http_req r = { 0 };
	char url[2048];
	unsigned attempt;
	int ret = 0;

	if (api_url(h, url, sizeof(url)))
		return rfs_errf(err, RFS_E_SPEC, "%s: revision too long", h->t.label);
	for (attempt = 1;; attempt++) {
		enum rfs_http_rc rc;

		r = (struct rfs_http_req){ .url = url, .auth = h->auth, .max_body = API_MAX_BODY,
					   .timeout_ms = rfs_remote_timeout_ms(), .stall_s = rfs_remote_stall_s() };
		rc = rfs_http_do(&r);
		if (rc == RFS_HTTP_ANSWER && !r.overflow &&
		    !(r.status == 429 || r.status == 408 || r.status >= 500))
			break;
		if (rc == RFS_HTTP_FATAL || attempt == API_ATTEMPTS) {
			ret = rfs_errf(err, RFS_E_IO,
				       "%s: cannot get the revision from %s: %s (HF_HUB_OFFLINE=1 uses the HF cache only)",
				       h->t.label, h->endpoint,
				       r.overflow ? "the answer is too large"
				       : r.status ? "it answers with an error" : r.why);
			if (r.status && !r.overflow)
				snprintf(err->msg + strlen(err->msg), sizeof(err->msg) - strlen(err->msg),
					 " (%ld)", r.status);
			rfs_http_reset(&r);
			return ret;
		}
		rfs_http_reset(&r);
		sleep(r.retry_after > 0 && r.retry_after < 10 ? (unsigned)r.retry_after : attempt);
	}
	if (r.status == 200)
		ret = parse_revision(h, r.body ? r.body : "", r.got, err);
	else
		ret = api_error(h, &r, err);
	rfs_http_reset(&r);
	return ret;
}

enum rfs_code rfs_hub_parse_revision(const char *body, size_t len, char commit[41],
				     void (*each)(const char *name, uint64_t size, const char *identity,
						  void *ctx),
				     void *ctx, struct rfs_err *err)
{
	struct hub h = { 0 };
	size_t i;
	int ret;

	h.t.label = (char *)"hf://fuzz";
	snprintf(h.endpoint, sizeof(h.endpoint), "the endpoint");
	ret = parse_revision(&h, body, len, err);
	if (!ret) {
		memcpy(commit, h.commit, 41);
		for (i = 0; i < h.nfiles; i++)
			each(h.files[i].name, h.files[i].size, h.files[i].identity, ctx);
	}
	for (i = 0; i < h.nfiles; i++) {
		free(h.files[i].name);
		free(h.files[i].identity);
		free(h.files[i].etag);
	}
	free(h.files);
	return ret;
}

/* ---- the term ----------------------------------------------------------------- */

static struct hfile *hfind(struct hub *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->nfiles; i++)
		if (!strcmp(h->files[i].name, name))
			return &h->files[i];
	return NULL;
}

static int h_exists(struct rfs_tdir *t, const char *name)
{
	struct hub *h = (struct hub *)t;

	return h->all_local ? rfs_entry_exists_at(h->snap, name) : hfind(h, name) != NULL;
}

static int h_is_file(struct rfs_tdir *t, const char *name)
{
	struct hub *h = (struct hub *)t;

	return h->all_local ? rfs_file_exists_at(h->snap, name) : hfind(h, name) != NULL;
}

static enum rfs_code h_open(struct rfs_tdir *t, const char *name, struct rfs_bsrc **out,
			    struct rfs_err *err)
{
	struct hub *h = (struct hub *)t;
	struct hfile *f = h->all_local ? NULL : hfind(h, name);
	char url[4096], qname[1024], label[1024];
	struct rfs_remote_file rf;

	if (h->all_local || (f && f->local))
		return rfs_bsrc_local_open(&h->root, h->snap, name, out, err);
	if (!f)
		return rfs_errf(err, RFS_E_IO, "%s/%s: no such file in commit %s", t->label, name, h->commit);
	if (rfs_http_quote(name, "", qname, sizeof(qname)) ||
	    (size_t)snprintf(url, sizeof(url), "%s/%s/resolve/%s/%s", h->endpoint, h->repo, h->commit, qname) >=
		    sizeof(url))
		return rfs_errf(err, RFS_E_RANGE, "%s/%s: URL too long", t->label, name);
	snprintf(label, sizeof(label), "%s/%s", t->label, name);
	rf = (struct rfs_remote_file){
		.url = url, .name = label, .source = t->label, .size = f->size, .identity = f->identity, .auth = h->auth,
		.hub = 1, .commit = h->commit, .linked_etag = f->etag, .mtime_ns = h->mtime_ns,
	};
	return rfs_remote_open(&rf, out, err);
}

static enum rfs_code h_list(struct rfs_tdir *t, char ***names, size_t *n, struct rfs_err *err)
{
	struct hub *h = (struct hub *)t;
	char **v;
	size_t i;

	if (h->all_local) { /* a local directory: list it as one */
		struct rfs_tdir *l;
		int ret = rfs_tdir_local(h->snap, t->label, &l, err);

		if (!ret) {
			ret = l->ops->list(l, names, n, err);
			rfs_tdir_close(l);
		}
		return ret;
	}
	v = calloc(h->nfiles ? h->nfiles : 1, sizeof(*v));
	if (!v)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	for (i = 0; i < h->nfiles; i++) {
		if (!(v[i] = strdup(h->files[i].name))) {
			while (i)
				free(v[--i]);
			free(v);
			return rfs_errf(err, RFS_E_NOMEM, "out of memory");
		}
	}
	*names = v;
	*n = h->nfiles;
	return 0;
}

static void h_close(struct rfs_tdir *t)
{
	struct hub *h = (struct hub *)t;
	size_t i;

	for (i = 0; i < h->nfiles; i++) {
		free(h->files[i].name);
		free(h->files[i].identity);
		free(h->files[i].etag);
	}
	free(h->files);
	free(h->auth);
	free(h->snap);
	rfs_root_release(&h->root);
	rfs_tdir_free_common(t);
	free(h);
}

static const struct rfs_tdir_ops hub_ops = {
	.exists = h_exists, .is_file = h_is_file, .open = h_open, .list = h_list, .close = h_close,
};

/* Marks the files the cache's snapshot of the commit holds (a regular file
 * of the size the Hub gives); returns how many. */
static size_t mark_local(struct hub *h)
{
	char rd[4096], snap[4400], path[4700];
	struct rfs_err e = { 0 };
	struct stat st;
	size_t i, n = 0;

	repo_dir(h->repo, rd, sizeof(rd));
	snprintf(snap, sizeof(snap), "%s/snapshots/%s", rd, h->commit);
	if (stat(snap, &st) || !S_ISDIR(st.st_mode) || rfs_root_init(&h->root, snap, &e))
		return 0;
	h->snap = strdup(snap);
	if (!h->snap)
		return 0;
	for (i = 0; i < h->nfiles; i++) {
		snprintf(path, sizeof(path), "%s/%s", snap, h->files[i].name);
		if (!stat(path, &st) && S_ISREG(st.st_mode) && (uint64_t)st.st_size == h->files[i].size) {
			h->files[i].local = 1;
			n++;
		}
	}
	return n;
}

enum rfs_code rfs_tdir_hub(const char *term, struct rfs_tdir **out, struct rfs_err *err)
{
	struct hub *h = calloc(1, sizeof(*h));
	char rd[4096], missing[2048];
	int offline = env_true("HF_HUB_OFFLINE"), ret;

	if (!h)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	h->t.ops = &hub_ops;
	if (!rfs_hub_parse(term, h->repo, sizeof(h->repo), h->rev, sizeof(h->rev))) {
		free(h);
		return rfs_errf(err, RFS_E_SPEC,
				"'%s' is not a Hub repository id (hf://ORG/NAME[@REVISION], names of letters, digits, '-', '_' and '.')",
				term);
	}
	if (asprintf(&h->t.label, "hf://%s@%s", h->repo, h->rev) < 0 || !(h->t.repo_id = strdup(h->repo))) {
		h->t.label = NULL;
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto fail;
	}
	endpoint(h->endpoint, sizeof(h->endpoint));
	/* 1. the cache alone */
	if (!cache_commit(h->repo, h->rev, h->commit)) {
		char snap[4400];

		repo_dir(h->repo, rd, sizeof(rd));
		snprintf(snap, sizeof(snap), "%s/snapshots/%s", rd, h->commit);
		snapshot_missing(snap, missing, sizeof(missing));
		if (!missing[0]) {
			ret = rfs_root_init(&h->root, snap, err);
			if (ret)
				goto fail;
			h->snap = strdup(snap);
			h->all_local = 1;
			h->t.local_dir = strdup(snap);
			if (!h->snap || !h->t.local_dir ||
			    asprintf(&h->t.resolved, "%s = commit %s, from the HF cache (%s), no request",
				     h->t.label, h->commit, snap) < 0) {
				h->t.resolved = NULL;
				ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
				goto fail;
			}
			*out = &h->t;
			return 0;
		}
		if (offline) {
			ret = rfs_errf(err, RFS_E_SPEC,
				       "%s: HF_HUB_OFFLINE is set and the HF cache's snapshot %s lacks: %s",
				       h->t.label, snap, missing);
			goto fail;
		}
	} else if (offline) {
		repo_dir(h->repo, rd, sizeof(rd));
		ret = rfs_errf(err, RFS_E_SPEC,
			       "%s: HF_HUB_OFFLINE is set and the HF cache (%s) has no snapshot of revision '%s'; missing: config.json, model.safetensors",
			       h->t.label, rd, h->rev);
		goto fail;
	}
	/* 2. the Hub */
	h->auth = auth_line();
	ret = resolve_online(h, err);
	if (ret)
		goto fail;
	{
		size_t nlocal = mark_local(h);

		if (asprintf(&h->t.resolved, "%s = commit %s from %s (%zu files, %zu of them read from the HF cache)",
			     h->t.label, h->commit, h->endpoint, h->nfiles, nlocal) < 0) {
			h->t.resolved = NULL;
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto fail;
		}
	}
	*out = &h->t;
	return 0;
fail:
	h_close(&h->t);
	return ret;
}

int rfs_hub_probe(const char *repo, const char *rev)
{
	struct hub h = { 0 };
	struct rfs_http_req r = { 0 };
	char url[2048], commit[41];
	int ok;

	if (!cache_commit(repo, rev, commit))
		return 1;
	if (env_true("HF_HUB_OFFLINE"))
		return 0;
	snprintf(h.repo, sizeof(h.repo), "%s", repo);
	snprintf(h.rev, sizeof(h.rev), "%s", rev);
	endpoint(h.endpoint, sizeof(h.endpoint));
	if (api_url(&h, url, sizeof(url)))
		return 0;
	h.auth = auth_line();
	r = (struct rfs_http_req){ .url = url, .auth = h.auth, .head = 0, .max_body = API_MAX_BODY,
				   .timeout_ms = rfs_remote_timeout_ms(), .stall_s = rfs_remote_stall_s() };
	ok = rfs_http_do(&r) == RFS_HTTP_ANSWER && r.status == 200;
	rfs_http_reset(&r);
	free(h.auth);
	return ok;
}
