/*
 * s3.c - S3 (and S3-compatible) prefixes as terms (tdir.h, docs/remote.md):
 * s3://BUCKET/PREFIX holds a model's files as objects PREFIX/NAME.
 *
 * Configuration as the AWS tools read it: the endpoint from
 * AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (any S3-compatible store,
 * addressed path-style: ENDPOINT/BUCKET/KEY), else AWS itself
 * (https://BUCKET.s3.REGION.amazonaws.com/KEY); the region from AWS_REGION,
 * AWS_DEFAULT_REGION, the profile's `region` in the config file, else
 * us-east-1; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
 * AWS_SESSION_TOKEN, else the profile (AWS_PROFILE, default "default") in
 * the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, default
 * ~/.aws/credentials), else none: unsigned (anonymous) requests, for
 * public buckets.  Requests are signed by libcurl (CURLOPT_AWS_SIGV4) with
 * what libcurl 7.88 leaves to the caller: the x-amz-content-sha256 header,
 * keys percent-encoded in the path, the list query sorted and encoded.
 *
 * Resolution, once: ListObjectsV2 of PREFIX/ with the delimiter '/' (all
 * pages) gives each top-level object's size and ETag.  Every range GET
 * then carries If-Match with that ETag: an object overwritten under the
 * mount answers 412 and fails (remote.c), never mixing old and new bytes.
 * Secrets are never printed.
 */
#include "tdir.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "remote.h"
#include "strmap.h"

#define LIST_MAX_BODY (16u << 20)
#define LIST_ATTEMPTS 3
#define MAX_PAGES 10000
#define MAX_OBJECTS 200000 /* top-level objects of one prefix */

struct sfile {
	char *name;      /* the key less the prefix */
	uint64_t size;
	char *etag;      /* as listed, quotes included */
	int64_t mtime;   /* LastModified, seconds; 0 when unknown */
};

struct s3 {
	struct rfs_tdir t;
	char bucket[64];
	char prefix[1024];     /* "" or ending with '/' */
	char endpoint[1024];   /* no trailing '/' */
	int path_style;
	char region[64];
	char sigv4[128];
	char *userpwd;         /* "KEY:SECRET", or NULL: anonymous */
	char *token_header;    /* "x-amz-security-token: ...", or NULL */
	size_t n;
	struct sfile *files;
	struct rfs_strmap by_name; /* name -> index + 1 in files */
};

/* ---- names and configuration ---------------------------------------------- */

static int bucket_ok(const char *b, size_t n)
{
	size_t i;

	if (n < 3 || n > 63 || !isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
		return 0;
	for (i = 0; i < n; i++)
		if (!(islower((unsigned char)b[i]) || isdigit((unsigned char)b[i]) || b[i] == '-' ||
		      b[i] == '.'))
			return 0;
	return 1;
}

/* s3://BUCKET[/PREFIX] into @bucket and @prefix ("" or ending with '/'). */
static int s3_parse(const char *term, char *bucket, size_t blen, char *prefix, size_t plen)
{
	const char *p, *slash;
	size_t n;

	if (strncmp(term, "s3://", 5))
		return 0;
	p = term + 5;
	slash = strchr(p, '/');
	n = slash ? (size_t)(slash - p) : strlen(p);
	if (!bucket_ok(p, n) || n >= blen || strstr(p, "://"))
		return 0;
	memcpy(bucket, p, n);
	bucket[n] = 0;
	p = slash ? slash + 1 : "";
	n = strlen(p);
	if (n + 2 > plen)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return 0;
	snprintf(prefix, plen, "%s%s", p, n && p[n - 1] != '/' ? "/" : "");
	return 1;
}

int rfs_s3_form(const char *term)
{
	char b[64], p[1024];

	return s3_parse(term, b, sizeof(b), p, sizeof(p));
}

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* The value of @key in section @section of the INI file @path, into @out. */
static int ini_get(const char *path, const char *section, const char *key, char *out, size_t len)
{
	char line[4096], cur[256] = "";
	FILE *f = fopen(path, "re");
	int found = 0;

	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char *s = line, *e, *eq;

		while (isspace((unsigned char)*s))
			s++;
		e = s + strlen(s);
		while (e > s && isspace((unsigned char)e[-1]))
			*--e = 0;
		if (*s == '[' && e > s && e[-1] == ']') {
			snprintf(cur, sizeof(cur), "%.*s", (int)(e - s - 2), s + 1);
			continue;
		}
		if (strcmp(cur, section) || !(eq = strchr(s, '=')))
			continue;
		for (e = eq; e > s && isspace((unsigned char)e[-1]); e--)
			;
		if ((size_t)(e - s) != strlen(key) || strncmp(s, key, strlen(key)))
			continue;
		for (eq++; isspace((unsigned char)*eq); eq++)
			;
		snprintf(out, len, "%s", eq);
		found = 1;
	}
	fclose(f);
	return found;
}

static void aws_file(const char *var, const char *name, char *out, size_t len)
{
	const char *v = env(var), *home = env("HOME");

	if (v)
		snprintf(out, len, "%s", v);
	else
		snprintf(out, len, "%s/.aws/%s", home ? home : "", name);
}

/* Region, endpoint and credentials, as the AWS tools find them. */
static enum rfs_code configure(struct s3 *s, struct rfs_err *err)
{
	const char *profile = env("AWS_PROFILE") ? env("AWS_PROFILE") : "default";
	const char *ep = env("AWS_ENDPOINT_URL_S3") ? env("AWS_ENDPOINT_URL_S3") : env("AWS_ENDPOINT_URL");
	char cfg[4096], creds[4096], section[300], key[256] = "", secret[256] = "", token[4096] = "";
	size_t n;

	aws_file("AWS_CONFIG_FILE", "config", cfg, sizeof(cfg));
	aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials", creds, sizeof(creds));
	snprintf(section, sizeof(section), strcmp(profile, "default") ? "profile %s" : "%s", profile);
	if (env("AWS_REGION"))
		snprintf(s->region, sizeof(s->region), "%s", env("AWS_REGION"));
	else if (env("AWS_DEFAULT_REGION"))
		snprintf(s->region, sizeof(s->region), "%s", env("AWS_DEFAULT_REGION"));
	else if (!ini_get(cfg, section, "region", s->region, sizeof(s->region)))
		snprintf(s->region, sizeof(s->region), "us-east-1");
	for (n = 0; s->region[n]; n++)
		if (!isalnum((unsigned char)s->region[n]) && s->region[n] != '-')
			return rfs_errf(err, RFS_E_SPEC, "%s: region '%s' is not a region name", s->t.label,
					s->region);
	if (ep) {
		snprintf(s->endpoint, sizeof(s->endpoint), "%s", ep);
		n = strlen(s->endpoint);
		while (n && s->endpoint[n - 1] == '/')
			s->endpoint[--n] = 0;
		if (strncasecmp(s->endpoint, "http://", 7) && strncasecmp(s->endpoint, "https://", 8))
			return rfs_errf(err, RFS_E_SPEC, "%s: the endpoint '%s' is not an http(s) URL",
					s->t.label, s->endpoint);
		s->path_style = 1;
	} else {
		/* a bucket with dots cannot be a host name under TLS */
		s->path_style = strchr(s->bucket, '.') != NULL;
		if (s->path_style)
			snprintf(s->endpoint, sizeof(s->endpoint), "https://s3.%s.amazonaws.com", s->region);
		else
			snprintf(s->endpoint, sizeof(s->endpoint), "https://%s.s3.%s.amazonaws.com", s->bucket,
				 s->region);
	}
	snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3", s->region);
	if (env("AWS_ACCESS_KEY_ID") && env("AWS_SECRET_ACCESS_KEY")) {
		snprintf(key, sizeof(key), "%s", env("AWS_ACCESS_KEY_ID"));
		snprintf(secret, sizeof(secret), "%s", env("AWS_SECRET_ACCESS_KEY"));
		if (env("AWS_SESSION_TOKEN"))
			snprintf(token, sizeof(token), "%s", env("AWS_SESSION_TOKEN"));
	} else if (ini_get(creds, profile, "aws_access_key_id", key, sizeof(key)) &&
		   ini_get(creds, profile, "aws_secret_access_key", secret, sizeof(secret))) {
		ini_get(creds, profile, "aws_session_token", token, sizeof(token));
	} else if (env("AWS_PROFILE")) {
		return rfs_errf(err, RFS_E_SPEC, "%s: AWS_PROFILE=%s but %s has no keys for it",
				s->t.label, profile, creds);
	}
	if (key[0]) {
		for (n = 0; key[n]; n++)
			if (key[n] == ':' || (unsigned char)key[n] <= ' ')
				return rfs_errf(err, RFS_E_SPEC, "%s: the access key id is not one", s->t.label);
		if (asprintf(&s->userpwd, "%s:%s", key, secret) < 0) {
			s->userpwd = NULL;
			return rfs_errf(err, RFS_E_NOMEM, "out of memory");
		}
		explicit_bzero(secret, sizeof(secret));
		if (token[0] && asprintf(&s->token_header, "x-amz-security-token: %s", token) < 0) {
			s->token_header = NULL;
			return rfs_errf(err, RFS_E_NOMEM, "out of memory");
		}
		explicit_bzero(token, sizeof(token));
	}
	return 0;
}

/* The URL of object @key (percent-encoded, '/' kept) or of the bucket when
 * @key is NULL, into @out. */
static int object_url(const struct s3 *s, const char *key, char *out, size_t len)
{
	char q[3200] = "";

	if (key && rfs_http_quote(key, "/", q, sizeof(q)))
		return -1;
	if (s->path_style)
		return (size_t)snprintf(out, len, "%s/%s%s%s", s->endpoint, s->bucket, key ? "/" : "", q) >= len
			       ? -1 : 0;
	return (size_t)snprintf(out, len, "%s/%s", s->endpoint, q) >= len ? -1 : 0;
}

/* ---- ListObjectsV2 ------------------------------------------------------------ */

/* The text of the first <@tag>...</@tag> in [@p, @end), entities decoded,
 * into @out; the position after it, or NULL. */
static const char *xml_get(const char *p, const char *end, const char *tag, char *out, size_t len)
{
	char open[64], close[64];
	const char *a, *b;
	size_t o = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	a = memmem(p, (size_t)(end - p), open, strlen(open));
	if (!a)
		return NULL;
	a += strlen(open);
	b = memmem(a, (size_t)(end - a), close, strlen(close));
	if (!b)
		return NULL;
	while (a < b && o + 5 < len) {
		if (*a != '&') {
			out[o++] = *a++;
			continue;
		}
		if (!strncmp(a, "&amp;", 5)) { out[o++] = '&'; a += 5; }
		else if (!strncmp(a, "&lt;", 4)) { out[o++] = '<'; a += 4; }
		else if (!strncmp(a, "&gt;", 4)) { out[o++] = '>'; a += 4; }
		else if (!strncmp(a, "&quot;", 6)) { out[o++] = '"'; a += 6; }
		else if (!strncmp(a, "&apos;", 6)) { out[o++] = '\''; a += 6; }
		else if (a[1] == '#') {
			char *e;
			unsigned long c = a[2] == 'x' ? strtoul(a + 3, &e, 16) : strtoul(a + 2, &e, 10);

			if (*e != ';' || c == 0 || c > 0x10FFFF)
				return NULL;
			if (c < 0x80) {
				out[o++] = (char)c;
			} else if (c < 0x800) {
				out[o++] = (char)(0xC0 | (c >> 6));
				out[o++] = (char)(0x80 | (c & 0x3F));
			} else if (c < 0x10000) {
				out[o++] = (char)(0xE0 | (c >> 12));
				out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
				out[o++] = (char)(0x80 | (c & 0x3F));
			} else {
				out[o++] = (char)(0xF0 | (c >> 18));
				out[o++] = (char)(0x80 | ((c >> 12) & 0x3F));
				out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
				out[o++] = (char)(0x80 | (c & 0x3F));
			}
			a = e + 1;
		} else {
			return NULL;
		}
	}
	if (a < b)
		return NULL; /* too long */
	out[o] = 0;
	return b + strlen(close);
}

static int64_t iso_seconds(const char *v)
{
	struct tm tm = { 0 };
	time_t t;

	if (!strptime(v, "%Y-%m-%dT%H:%M:%S", &tm))
		return 0;
	t = timegm(&tm);
	return t > 0 ? (int64_t)t : 0;
}

static enum rfs_code s3_error(const struct s3 *s, const struct rfs_http_req *r, struct rfs_err *err)
{
	char code[128] = "", msg[300] = "";
	const char *b = r->body ? r->body : "", *e = b + r->got;

	xml_get(b, e, "Code", code, sizeof(code));
	xml_get(b, e, "Message", msg, sizeof(msg));
	if (!strcmp(code, "NoSuchBucket"))
		return rfs_errf(err, RFS_E_SPEC, "%s: no bucket '%s' at %s", s->t.label, s->bucket, s->endpoint);
	if (!strcmp(code, "SignatureDoesNotMatch"))
		return rfs_errf(err, RFS_E_SPEC,
				"%s: the secret key does not match the access key (check AWS_SECRET_ACCESS_KEY or the profile's aws_secret_access_key)",
				s->t.label);
	if (!strcmp(code, "InvalidAccessKeyId"))
		return rfs_errf(err, RFS_E_SPEC, "%s: the access key id is not known to %s (check AWS_ACCESS_KEY_ID or the profile)",
				s->t.label, s->endpoint);
	if (!strcmp(code, "ExpiredToken") || !strcmp(code, "InvalidToken") || !strcmp(code, "TokenRefreshRequired"))
		return rfs_errf(err, RFS_E_SPEC, "%s: the session token is expired or invalid (%s): get new credentials",
				s->t.label, code);
	if (!strcmp(code, "AccessDenied") || r->status == 403)
		return rfs_errf(err, RFS_E_SPEC, "%s: access denied by %s%s", s->t.label, s->endpoint,
				s->userpwd ? " for these credentials" : " (no credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)");
	return rfs_errf(err, RFS_E_IO, "%s: %s answered %ld%s%s%s%s to the listing", s->t.label, s->endpoint,
			r->status, code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
}

/* Adds the top-level objects of one ListObjectsV2 page; the continuation
 * token (or "") into @next. */
static enum rfs_code parse_page(struct s3 *s, const char *body, size_t len, char *next, size_t nlen,
				struct rfs_err *err)
{
	const char *p = body, *end = body + len, *c, *ce;
	char trunc[16] = "";
	size_t pl = strlen(s->prefix);

	next[0] = 0;
	if (!memmem(body, len, "<ListBucketResult", 17))
		return rfs_errf(err, RFS_E_FORMAT, "%s: the listing is not a ListBucketResult", s->t.label);
	while ((c = memmem(p, (size_t)(end - p), "<Contents>", 10))) {
		char key[2048], size[32], etag[300], lm[64] = "", *x;
		struct sfile *g;
		unsigned long long sz;

		ce = memmem(c, (size_t)(end - c), "</Contents>", 11);
		if (!ce)
			return rfs_errf(err, RFS_E_FORMAT, "%s: a listing entry does not end", s->t.label);
		if (!xml_get(c, ce, "Key", key, sizeof(key)) || !xml_get(c, ce, "Size", size, sizeof(size)) ||
		    !xml_get(c, ce, "ETag", etag, sizeof(etag)) || !etag[0] || !strcmp(etag, "\"\""))
			return rfs_errf(err, RFS_E_FORMAT, "%s: a listing entry lacks a key, size or ETag",
					s->t.label);
		xml_get(c, ce, "LastModified", lm, sizeof(lm));
		p = ce + 11;
		sz = strtoull(size, &x, 10);
		if (!size[0] || *x || !isdigit((unsigned char)size[0]) || sz >= (1ull << 53))
			return rfs_errf(err, RFS_E_FORMAT, "%s: '%s' has size '%s'", s->t.label, key, size);
		if (strncmp(key, s->prefix, pl) || !key[pl] || strchr(key + pl, '/'))
			continue; /* not a top-level object of the prefix */
		for (x = key + pl; *x; x++)
			if ((unsigned char)*x < 0x20 || *x == 0x7f)
				break;
		if (*x || key[pl] == '.')
			continue;
		if (rfs_strmap_get(&s->by_name, key + pl))
			return rfs_errf(err, RFS_E_FORMAT, "%s: '%s' listed twice", s->t.label, key);
		if (s->n >= MAX_OBJECTS)
			return rfs_errf(err, RFS_E_FORMAT, "%s: more than %d objects under the prefix",
					s->t.label, MAX_OBJECTS);
		g = realloc(s->files, (s->n + 1) * sizeof(*g));
		if (!g)
			return rfs_errf(err, RFS_E_NOMEM, "out of memory");
		s->files = g;
		g[s->n] = (struct sfile){ .name = strdup(key + pl), .size = sz, .etag = strdup(etag),
					  .mtime = iso_seconds(lm) };
		s->n++;
		if (!g[s->n - 1].name || !g[s->n - 1].etag ||
		    rfs_strmap_put(&s->by_name, g[s->n - 1].name, (void *)(uintptr_t)s->n) != RFS_PUT_NEW)
			return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	xml_get(body, end, "IsTruncated", trunc, sizeof(trunc));
	if (!strcmp(trunc, "true") &&
	    !xml_get(body, end, "NextContinuationToken", next, nlen))
		return rfs_errf(err, RFS_E_FORMAT, "%s: a truncated listing without a continuation token",
				s->t.label);
	return 0;
}

enum rfs_code rfs_s3_parse_listing(const char *body, size_t len, const char *prefix,
				   void (*each)(const char *name, uint64_t size, const char *etag,
						void *ctx),
				   void *ctx, char *next, size_t nlen, struct rfs_err *err)
{
	struct s3 s = { 0 };
	size_t i;
	int ret;

	s.t.label = (char *)"s3://fuzz/";
	snprintf(s.prefix, sizeof(s.prefix), "%s", prefix);
	ret = parse_page(&s, body, len, next, nlen, err);
	for (i = 0; i < s.n; i++) {
		if (!ret)
			each(s.files[i].name, s.files[i].size, s.files[i].etag, ctx);
		free(s.files[i].name);
		free(s.files[i].etag);
	}
	free(s.files);
	rfs_strmap_release(&s.by_name);
	return ret;
}

static enum rfs_code list_prefix(struct s3 *s, struct rfs_err *err)
{
	const char *hdr[3] = { "x-amz-content-sha256: UNSIGNED-PAYLOAD", s->token_header, NULL };
	char base[2200], url[8192], qp[3200], qt[3000], token[2048] = "";
	unsigned page, attempt;
	int ret;

	if (object_url(s, NULL, base, sizeof(base)) || rfs_http_quote(s->prefix, "", qp, sizeof(qp)))
		return rfs_errf(err, RFS_E_SPEC, "%s: prefix too long", s->t.label);
	for (page = 0; page < MAX_PAGES; page++) {
		struct rfs_http_req r = { 0 };

		/* the query sorted by name and encoded: what the signature covers */
		if (rfs_http_quote(token, "", qt, sizeof(qt)))
			return rfs_errf(err, RFS_E_FORMAT, "%s: continuation token too long", s->t.label);
		/* path-style: ENDPOINT/BUCKET?...; virtual-hosted: https://BUCKET.HOST/?... */
		if ((size_t)snprintf(url, sizeof(url), "%s?%s%s%sdelimiter=%%2F&list-type=2&prefix=%s", base,
				     token[0] ? "continuation-token=" : "", qt, token[0] ? "&" : "", qp) >=
		    sizeof(url))
			return rfs_errf(err, RFS_E_FORMAT, "%s: listing URL too long", s->t.label);
		for (attempt = 1;; attempt++) {
			enum rfs_http_rc rc;

			r = (struct rfs_http_req){
				.url = url, .max_body = LIST_MAX_BODY, .timeout_ms = rfs_remote_timeout_ms(),
				.stall_s = rfs_remote_stall_s(), .sigv4 = s->userpwd ? s->sigv4 : NULL,
				.userpwd = s->userpwd, .extra = s->userpwd ? hdr : NULL,
			};
			rc = rfs_http_do(&r);
			if (rc == RFS_HTTP_ANSWER && !r.overflow &&
			    !(r.status == 429 || r.status == 408 || r.status >= 500))
				break;
			if (rc == RFS_HTTP_FATAL || attempt == LIST_ATTEMPTS) {
				ret = rfs_errf(err, RFS_E_IO, "%s: cannot list it at %s: %s", s->t.label, s->endpoint,
					       r.overflow ? "the listing is too large"
					       : r.status ? "it answers with an error" : r.why);
				rfs_http_reset(&r);
				return ret;
			}
			rfs_http_reset(&r);
			sleep(attempt);
		}
		ret = r.status == 200 ? parse_page(s, r.body ? r.body : "", r.got, token, sizeof(token), err)
				      : s3_error(s, &r, err);
		rfs_http_reset(&r);
		if (ret || !token[0])
			return ret;
	}
	return rfs_errf(err, RFS_E_FORMAT, "%s: more than %d pages of listing", s->t.label, MAX_PAGES);
}

/* ---- the term ------------------------------------------------------------------ */

static struct sfile *sfind(struct s3 *s, const char *name)
{
	uintptr_t i = (uintptr_t)rfs_strmap_get(&s->by_name, name);

	return i ? &s->files[i - 1] : NULL;
}

static int s_exists(struct rfs_tdir *t, const char *name)
{
	return sfind((struct s3 *)t, name) != NULL;
}

static enum rfs_code s_open(struct rfs_tdir *t, const char *name, struct rfs_bsrc **out,
			    struct rfs_err *err)
{
	struct s3 *s = (struct s3 *)t;
	struct sfile *f = sfind(s, name);
	char key[2200], url[8192], id[9000], label[2300], norm[300];
	struct rfs_remote_file rf;

	if (!f)
		return rfs_errf(err, RFS_E_IO, "%s%s: no such object", t->label, name);
	snprintf(key, sizeof(key), "%s%s", s->prefix, name);
	if (object_url(s, key, url, sizeof(url)))
		return rfs_errf(err, RFS_E_RANGE, "%s%s: URL too long", t->label, name);
	rfs_http_etag_norm(f->etag, norm, sizeof(norm));
	snprintf(id, sizeof(id), "s3:%s:%s:%llu", url, norm, (unsigned long long)f->size);
	snprintf(label, sizeof(label), "%s%s", t->label, name);
	rf = (struct rfs_remote_file){
		.url = url, .name = label, .source = t->label, .size = f->size, .identity = id, .etag = f->etag,
		.mtime_ns = f->mtime * 1000000000ll, .sigv4 = s->userpwd ? s->sigv4 : NULL,
		.userpwd = s->userpwd, .token_header = s->token_header,
	};
	return rfs_remote_open(&rf, out, err);
}

static enum rfs_code s_list(struct rfs_tdir *t, char ***names, size_t *n, struct rfs_err *err)
{
	struct s3 *s = (struct s3 *)t;
	char **v = calloc(s->n ? s->n : 1, sizeof(*v));
	size_t i;

	if (!v)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	for (i = 0; i < s->n; i++)
		if (!(v[i] = strdup(s->files[i].name))) {
			while (i)
				free(v[--i]);
			free(v);
			return rfs_errf(err, RFS_E_NOMEM, "out of memory");
		}
	*names = v;
	*n = s->n;
	return 0;
}

static void s_close(struct rfs_tdir *t)
{
	struct s3 *s = (struct s3 *)t;
	size_t i;

	for (i = 0; i < s->n; i++) {
		free(s->files[i].name);
		free(s->files[i].etag);
	}
	free(s->files);
	rfs_strmap_release(&s->by_name);
	if (s->userpwd)
		explicit_bzero(s->userpwd, strlen(s->userpwd));
	free(s->userpwd);
	free(s->token_header);
	rfs_tdir_free_common(t);
	free(s);
}

int rfs_s3_probe(const char *term)
{
	struct s3 *s = calloc(1, sizeof(*s));
	struct rfs_err e = { 0 };
	int yes = 1;

	if (!s)
		return 0;
	if (!s3_parse(term, s->bucket, sizeof(s->bucket), s->prefix, sizeof(s->prefix))) {
		free(s);
		return 0;
	}
	/* a prefix without '+' or '-' cannot be two terms run together: its
	 * form is enough (and the term is listed once, when opened); else
	 * only a listing without config.json says no: any other failure
	 * (credentials, the network) is for the open to report, naming it */
	if (strpbrk(s->prefix, "+-")) {
		if (asprintf(&s->t.label, "s3://%s/%s", s->bucket, s->prefix) < 0)
			s->t.label = NULL;
		else if (!configure(s, &e) && !list_prefix(s, &e))
			yes = sfind(s, "config.json") != NULL;
	}
	s_close(&s->t);
	return yes;
}

static const struct rfs_tdir_ops s3_ops = {
	.exists = s_exists, .is_file = s_exists, .open = s_open, .list = s_list, .close = s_close,
};

enum rfs_code rfs_tdir_s3(const char *term, struct rfs_tdir **out, struct rfs_err *err)
{
	struct s3 *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	s->t.ops = &s3_ops;
	if (!s3_parse(term, s->bucket, sizeof(s->bucket), s->prefix, sizeof(s->prefix))) {
		free(s);
		return rfs_errf(err, RFS_E_SPEC,
				"'%s' is not an S3 term (s3://BUCKET/PREFIX, a bucket name of 3 to 63 lower-case letters, digits, '-' and '.')",
				term);
	}
	if (asprintf(&s->t.label, "s3://%s/%s", s->bucket, s->prefix) < 0) {
		s->t.label = NULL;
		s_close(&s->t);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	ret = configure(s, err);
	if (!ret)
		ret = list_prefix(s, err);
	if (!ret && !sfind(s, "config.json"))
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "%s: no config.json under this prefix at %s (%zu objects there): not a model directory",
			       s->t.label, s->endpoint, s->n);
	if (!ret && asprintf(&s->t.resolved, "%s = %zu objects listed at %s (%s, %s), each fixed by its ETag",
			     s->t.label, s->n, s->endpoint, s->region,
			     s->userpwd ? (s->token_header ? "session credentials" : "signed") : "anonymous") < 0) {
		s->t.resolved = NULL;
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	if (ret) {
		s_close(&s->t);
		return ret;
	}
	*out = &s->t;
	return 0;
}
