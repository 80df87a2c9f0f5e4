/*
 * webdir.c - a plain web directory as a term (tdir.h, docs/remote.md):
 * http(s)://HOST/PATH/ holding config.json, model.safetensors or the index
 * and its shards, and the tokenizer files.  A web server lists nothing, so
 * the term knows the names it asks for: each is probed once with a GET of
 * its first byte (Range: bytes=0-0), which gives the size (Content-Range),
 * the ETag, and proves that the server answers ranges.  The ETag (when the
 * server sends one) is the file's identity: later range GETs carry it in
 * If-Match and an answer with another ETag or size fails the file.
 */
#include "tdir.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "http.h"
#include "remote.h"
#include "tunables.h"

#define PROBE_ATTEMPTS 3

/* What list() offers: the files a model directory may have that planning
 * asks about (the weights are found from config/index). */
static const char *const known[] = {
	"config.json", "model.safetensors", "model.safetensors.index.json", "generation_config.json",
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
	"vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
	"vocab.txt", "spiece.model", "sentencepiece.bpe.model", NULL,
};

struct wfile {
	char *name;
	int present;
	uint64_t size;
	int64_t mtime;   /* Last-Modified, -1 when not sent */
	char *etag;      /* as sent, or NULL */
	char *url;       /* after redirects */
};

struct web {
	struct rfs_tdir t;
	char base[4096];  /* ends with '/' */
	pthread_mutex_t lk;
	size_t n, cap;
	struct wfile *files;
	struct rfs_err probe_err; /* the first probe that failed for another reason than absence */
};

static int name_ok(const char *n)
{
	size_t i;

	if (!*n || !strcmp(n, ".") || !strcmp(n, "..") || strlen(n) > 255)
		return 0;
	for (i = 0; n[i]; i++)
		if ((unsigned char)n[i] < 0x20 || n[i] == '/' || n[i] == 0x7f)
			return 0;
	return 1;
}

static int is_redirect(long st)
{
	return st == 301 || st == 302 || st == 303 || st == 307 || st == 308;
}

/* What one answer to a probe of @url means: 1 present (@f filled), 0
 * absent, -1 an error in @err, -2 try again, -3 follow r->location. */
static int judge_probe(struct rfs_http_req *r, const char *url, struct wfile *f, struct rfs_err *err)
{
	switch (r->status) {
	case 206:
	case 416:
		if (r->has_range < 1) {
			rfs_errf(err, RFS_E_FORMAT, "%s: the server's Content-Range does not parse", url);
			return -1;
		}
		f->size = r->cr_total;
		f->mtime = r->last_modified;
		f->etag = r->etag[0] ? strdup(r->etag) : NULL;
		f->url = strdup(url);
		if (!f->url || (r->etag[0] && !f->etag)) {
			rfs_errf(err, RFS_E_NOMEM, "out of memory");
			return -1;
		}
		return 1;
	case 200:
		rfs_errf(err, RFS_E_FORMAT,
			 "%s: the server ignores Range requests (it answered 200); residfs reads byte ranges", url);
		return -1;
	case 404:
	case 410:
		return 0;
	case 401:
	case 403:
		rfs_errf(err, RFS_E_SPEC, "%s: access refused (%ld)", url, r->status);
		return -1;
	default:
		if (is_redirect(r->status))
			return -3;
		if (r->status == 408 || r->status == 429 || r->status >= 500)
			return -2;
		rfs_errf(err, RFS_E_IO, "%s: the server answered %ld", url, r->status);
		return -1;
	}
}

/* Probes @name: 1 present (size, ETag), 0 absent, -1 an error in @err. */
static int probe(struct web *w, const char *name, struct wfile *f, struct rfs_err *err)
{
	char qn[1024], url[4096], next[4096];
	unsigned attempt = 0, hops = 0;
	unsigned char one;

	if (rfs_http_quote(name, "", qn, sizeof(qn)) ||
	    (size_t)snprintf(url, sizeof(url), "%s%s", w->base, qn) >= sizeof(url)) {
		rfs_errf(err, RFS_E_RANGE, "%s%s: URL too long", w->base, name);
		return -1;
	}
	for (;;) {
		struct rfs_http_req r = { .url = url, .off = 0, .len = 1, .dst = &one,
					  .timeout_ms = rfs_remote_timeout_ms(), .stall_s = rfs_remote_stall_s() };
		enum rfs_http_rc rc = rfs_http_do(&r);
		int ret = rc == RFS_HTTP_ANSWER ? judge_probe(&r, url, f, err) : -2;

		if (rc == RFS_HTTP_FATAL) {
			rfs_errf(err, RFS_E_IO, "%s: %s", url, r.why);
			ret = -1;
		}
		if (ret == -3) {
			if (++hops > RFS_TUNE_REMOTE_MAX_REDIRECTS) {
				rfs_errf(err, RFS_E_IO, "%s: too many redirects", url);
				ret = -1;
			} else if (rfs_http_join(url, r.location, next, sizeof(next), err)) {
				ret = -1;
			} else {
				snprintf(url, sizeof(url), "%s", next);
			}
		} else if (ret == -2 && ++attempt >= PROBE_ATTEMPTS) {
			rfs_errf(err, RFS_E_IO, "%s: no usable answer after %u attempts: %s", url, attempt,
				 r.status ? "the server answers with an error" : r.why);
			ret = -1;
		}
		rfs_http_reset(&r);
		if (ret >= -1)
			return ret;
		if (ret == -2)
			sleep(attempt);
	}
}

/* The memo entry of @name, probing it on first use; NULL when absent or
 * when the probe failed (then @e, when given, says why; e->code is 0 for
 * a file that is simply not there).  A failed probe is not remembered:
 * the next lookup asks again. */
static struct wfile *lookup_err(struct web *w, const char *name, struct rfs_err *ep)
{
	struct wfile f = { 0 }, *r = NULL;
	struct rfs_err e = { 0 };
	size_t i;
	int got;

	if (!name_ok(name))
		return NULL;
	pthread_mutex_lock(&w->lk);
	for (i = 0; i < w->n; i++)
		if (!strcmp(w->files[i].name, name)) {
			r = w->files[i].present ? &w->files[i] : NULL;
			pthread_mutex_unlock(&w->lk);
			return r;
		}
	pthread_mutex_unlock(&w->lk);
	got = probe(w, name, &f, &e);
	if (ep)
		*ep = e;
	pthread_mutex_lock(&w->lk);
	if (got < 0) {
		if (!w->probe_err.code)
			w->probe_err = e;
		pthread_mutex_unlock(&w->lk);
		return NULL;
	}
	if (w->n == w->cap) {
		size_t nc = w->cap ? w->cap * 2 : 16;
		struct wfile *g = realloc(w->files, nc * sizeof(*g));

		if (!g)
			goto out;
		w->files = g;
		w->cap = nc;
	}
	f.name = strdup(name);
	if (!f.name)
		goto out;
	f.present = got == 1;
	w->files[w->n] = f;
	r = f.present ? &w->files[w->n] : NULL;
	w->n++;
	pthread_mutex_unlock(&w->lk);
	return r;
out:
	pthread_mutex_unlock(&w->lk);
	free(f.etag);
	free(f.url);
	return NULL;
}

struct prober {
	struct web *w;
	const char *name;
	pthread_t th;
	int started;
};

static struct wfile *lookup(struct web *w, const char *name)
{
	return lookup_err(w, name, NULL);
}

static void *probe_one(void *arg)
{
	struct prober *p = arg;

	lookup(p->w, p->name);
	return NULL;
}

/* Probes the known names at once, each on its own thread (and
 * connection): a mount pays one round trip for them, not one each. */
static void probe_known(struct web *w)
{
	struct prober p[sizeof(known) / sizeof(known[0])];
	size_t i;

	for (i = 0; known[i]; i++) {
		p[i] = (struct prober){ .w = w, .name = known[i] };
		p[i].started = !pthread_create(&p[i].th, NULL, probe_one, &p[i]);
	}
	for (i = 0; known[i]; i++)
		if (p[i].started)
			pthread_join(p[i].th, NULL);
}

static int w_exists(struct rfs_tdir *t, const char *name)
{
	return lookup((struct web *)t, name) != NULL;
}

static enum rfs_code w_open(struct rfs_tdir *t, const char *name, struct rfs_bsrc **out,
			    struct rfs_err *err)
{
	struct web *w = (struct web *)t;
	struct rfs_err e = { 0 };
	struct wfile *f = lookup_err(w, name, &e);
	char id[4600], label[4400], norm[256];
	struct rfs_remote_file rf;

	if (!f) {
		if (e.code)
			return rfs_errf(err, e.code, "%s", e.msg);
		return rfs_errf(err, RFS_E_IO, "%s%s: not on the server (404)", w->base, name);
	}
	rfs_http_etag_norm(f->etag ? f->etag : "", norm, sizeof(norm));
	snprintf(id, sizeof(id), "%s:%s:%s:%llu", f->etag ? "etag" : "url", f->url, norm,
		 (unsigned long long)f->size);
	snprintf(label, sizeof(label), "%s%s", w->base, name);
	rf = (struct rfs_remote_file){
		.url = f->url, .name = label, .source = t->label, .size = f->size, .identity = id,
		/* a weak ETag cannot be used with If-Match */
		.etag = f->etag && strncmp(f->etag, "W/", 2) ? f->etag : NULL,
		.mtime_ns = f->mtime > 0 ? f->mtime * 1000000000ll : 0,
	};
	return rfs_remote_open(&rf, out, err);
}

static enum rfs_code w_list(struct rfs_tdir *t, char ***names, size_t *n, struct rfs_err *err)
{
	struct web *w = (struct web *)t;
	char **v = calloc(sizeof(known) / sizeof(known[0]), sizeof(*v));
	size_t i, k = 0;

	if (!v)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	for (i = 0; known[i]; i++) {
		if (!lookup(w, known[i]))
			continue;
		if (!(v[k] = strdup(known[i]))) {
			while (k)
				free(v[--k]);
			free(v);
			return rfs_errf(err, RFS_E_NOMEM, "out of memory");
		}
		k++;
	}
	*names = v;
	*n = k;
	return 0;
}

static void w_close(struct rfs_tdir *t)
{
	struct web *w = (struct web *)t;
	size_t i;

	for (i = 0; i < w->n; i++) {
		free(w->files[i].name);
		free(w->files[i].etag);
		free(w->files[i].url);
	}
	free(w->files);
	pthread_mutex_destroy(&w->lk);
	rfs_tdir_free_common(t);
	free(w);
}

static const struct rfs_tdir_ops web_ops = {
	.exists = w_exists, .is_file = w_exists, .open = w_open, .list = w_list, .close = w_close,
};

enum rfs_code rfs_tdir_web(const char *url, struct rfs_tdir **out, struct rfs_err *err)
{
	struct web *w = calloc(1, sizeof(*w));
	size_t n = strlen(url);
	int ret;

	if (!w)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	w->t.ops = &web_ops;
	pthread_mutex_init(&w->lk, NULL);
	if (n + 2 > sizeof(w->base) || !strstr(url, "://")[3] || strstr(url, "://")[3] == '/') {
		w_close(&w->t);
		return rfs_errf(err, RFS_E_SPEC, "'%.200s': not a usable http(s) URL", url);
	}
	snprintf(w->base, sizeof(w->base), "%s%s", url, url[n - 1] == '/' ? "" : "/");
	w->t.label = strdup(w->base);
	if (!w->t.label) {
		w_close(&w->t);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	if (!lookup(w, "config.json")) {
		ret = w->probe_err.code
			      ? rfs_errf(err, w->probe_err.code, "%s", w->probe_err.msg)
			      : rfs_errf(err, RFS_E_FORMAT,
					 "%s: no config.json there (a web directory of model files: config.json, model.safetensors or its index and shards, tokenizer files)",
					 w->base);
		w_close(&w->t);
		return ret;
	}
	/* a probe that failed (not a 404) leaves the term unknown: refused
	 * rather than guessed at (a missing tokenizer would change the model) */
	probe_known(w);
	if (w->probe_err.code) {
		ret = rfs_errf(err, w->probe_err.code, "%s", w->probe_err.msg);
		w_close(&w->t);
		return ret;
	}
	if (asprintf(&w->t.resolved, "%s = a web directory; each file's size and ETag fixed at mount",
		     w->base) < 0) {
		w->t.resolved = NULL;
		w_close(&w->t);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	*out = &w->t;
	return 0;
}
