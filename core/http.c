#include "http.h"

#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* What a failed status's body is kept up to (for the message). */
#define ERR_BODY_MAX 4096
/* Redirects are never followed by libcurl (see http.h); the caller follows
 * at most this many itself. */
#define CONNECT_TIMEOUT_MS 10000L

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_key;

static void free_handle(void *h)
{
	curl_easy_cleanup(h);
}

static void init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	pthread_key_create(&g_key, free_handle);
}

void rfs_http_global_init(void)
{
	pthread_once(&g_once, init_once);
}

const char *rfs_http_version(void)
{
	return curl_version();
}

static CURL *thread_handle(void)
{
	CURL *h;

	rfs_http_global_init();
	h = pthread_getspecific(g_key);
	if (!h) {
		h = curl_easy_init();
		if (h && pthread_setspecific(g_key, h)) {
			curl_easy_cleanup(h);
			h = NULL;
		}
	}
	return h;
}

/* Copies header value @v (@n bytes, trailing white space dropped) into @dst. */
static void hcopy(char *dst, size_t cap, const char *v, size_t n)
{
	while (n && isspace((unsigned char)v[n - 1]))
		n--;
	while (n && isspace((unsigned char)*v)) {
		v++;
		n--;
	}
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = 0;
}

static int64_t hnum(const char *v, size_t n)
{
	char tmp[32], *end;
	long long x;

	hcopy(tmp, sizeof(tmp), v, n);
	if (!tmp[0] || !isdigit((unsigned char)tmp[0]))
		return -1;
	x = strtoll(tmp, &end, 10);
	return *end || x < 0 ? -1 : (int64_t)x;
}

/* "bytes A-B/T" */
static void parse_content_range(struct rfs_http_req *r, const char *v, size_t n)
{
	char tmp[128];
	unsigned long long a, b, t;
	char tail;

	hcopy(tmp, sizeof(tmp), v, n);
	if (sscanf(tmp, "bytes */%llu%c", &t, &tail) == 1) { /* with 416 */
		r->has_range = 2;
		r->cr_total = t;
	} else if (sscanf(tmp, "bytes %llu-%llu/%llu%c", &a, &b, &t, &tail) == 3 && a <= b && b < t) {
		r->has_range = 1;
		r->cr_first = a;
		r->cr_last = b;
		r->cr_total = t;
	} else {
		r->has_range = -1; /* present but unusable */
	}
}

/* Link: <url>; rel="next", ... */
static void parse_link(struct rfs_http_req *r, const char *v, size_t n)
{
	char tmp[8192];
	char *p, *q;

	hcopy(tmp, sizeof(tmp), v, n);
	for (p = tmp; (p = strchr(p, '<'));) {
		q = strchr(p, '>');
		if (!q)
			return;
		*q = 0;
		if (strstr(q + 1, "rel=\"next\"") || strstr(q + 1, "rel=next")) {
			char *end = strchr(q + 1, ',');

			if (!end || strstr(q + 1, "rel") < end) {
				snprintf(r->link_next, sizeof(r->link_next), "%s", p + 1);
				return;
			}
		}
		p = q + 1;
	}
}

static void clear_answer(struct rfs_http_req *r)
{
	r->status = 0;
	r->location[0] = r->etag[0] = r->linked_etag[0] = r->commit[0] = 0;
	r->error_code[0] = r->link_next[0] = 0;
	r->linked_size = r->content_length = r->retry_after = r->last_modified = -1;
	r->has_range = 0;
	r->cr_first = r->cr_last = r->cr_total = 0;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
	struct rfs_http_req *r = ud;
	size_t n = size * nitems, kl;
	const char *colon;

	if (n >= 5 && !memcmp(buf, "HTTP/", 5)) { /* a new answer (after 100 Continue) */
		long st = 0;
		const char *sp = memchr(buf, ' ', n);

		clear_answer(r);
		if (sp)
			st = strtol(sp + 1, NULL, 10);
		r->status = st;
		return n;
	}
	colon = memchr(buf, ':', n);
	if (!colon)
		return n;
	kl = (size_t)(colon - buf);
	colon++;
#define IS(name) (kl == sizeof(name) - 1 && !strncasecmp(buf, name, kl))
	if (IS("location"))
		hcopy(r->location, sizeof(r->location), colon, n - kl - 1);
	else if (IS("etag"))
		hcopy(r->etag, sizeof(r->etag), colon, n - kl - 1);
	else if (IS("x-linked-etag"))
		hcopy(r->linked_etag, sizeof(r->linked_etag), colon, n - kl - 1);
	else if (IS("x-repo-commit"))
		hcopy(r->commit, sizeof(r->commit), colon, n - kl - 1);
	else if (IS("x-error-code"))
		hcopy(r->error_code, sizeof(r->error_code), colon, n - kl - 1);
	else if (IS("x-linked-size"))
		r->linked_size = hnum(colon, n - kl - 1);
	else if (IS("content-length"))
		r->content_length = hnum(colon, n - kl - 1);
	else if (IS("retry-after"))
		r->retry_after = hnum(colon, n - kl - 1);
	else if (IS("content-range"))
		parse_content_range(r, colon, n - kl - 1);
	else if (IS("link"))
		parse_link(r, colon, n - kl - 1);
	else if (IS("last-modified")) {
		char d[128];
		time_t t;

		hcopy(d, sizeof(d), colon, n - kl - 1);
		t = curl_getdate(d, NULL);
		r->last_modified = t > 0 ? (int64_t)t : -1;
	}
#undef IS
	return n;
}

/* Copies @n body bytes to where byte r->got goes in r->iov. */
static void scatter(struct rfs_http_req *r, const char *p, size_t n)
{
	size_t at = r->got;
	int i;

	for (i = 0; i < r->niov && n; i++) {
		size_t l = r->iov[i].iov_len, k;

		if (at >= l) {
			at -= l;
			continue;
		}
		k = l - at < n ? l - at : n;
		memcpy((char *)r->iov[i].iov_base + at, p, k);
		p += k;
		n -= k;
		at = 0;
	}
}

/* A range's body goes to dst only with 206; any other answer keeps at
 * most ERR_BODY_MAX bytes of its body (for the message) and, past that,
 * ends the transfer rather than read a whole file nobody asked for. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct rfs_http_req *r = ud;
	size_t n = size * nmemb, cap;
	char *g;

	if (r->head)
		return n;
	if ((r->dst || r->iov) && r->status == 206) {
		if (r->got + n > r->len) {
			r->overflow = 1;
			return 0;
		}
		if (r->dst)
			memcpy((char *)r->dst + r->got, ptr, n);
		else
			scatter(r, ptr, n);
		r->got += n;
		return n;
	}
	cap = r->dst || r->iov || (r->status != 200 && r->status != 206) ? ERR_BODY_MAX : r->max_body;
	if (r->got + n > cap) {
		if (cap == ERR_BODY_MAX)
			r->cut = 1;
		else
			r->overflow = 1;
		n = cap - r->got;
	}
	if (n) {
		g = realloc(r->body, r->got + n + 1);
		if (!g)
			return 0;
		r->body = g;
		memcpy(r->body + r->got, ptr, n);
		r->got += n;
		r->body[r->got] = 0;
	}
	return r->cut || r->overflow ? 0 : size * nmemb;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Aborts a transfer whose body has not moved for r->stall_s seconds (no
 * byte at all: the server went quiet, not slow), or once r->cancel is set. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct rfs_http_req *r = ud;
	uint64_t t = mono_ns();

	(void)dltotal;
	(void)ultotal;
	(void)ulnow;
	if (r->cancel && atomic_load(r->cancel)) {
		r->cancelled = 1;
		return 1;
	}
	if (r->stall_s <= 0)
		return 0;
	if (dlnow != r->last_now) {
		r->last_now = dlnow;
		r->last_byte_ns = t;
		return 0;
	}
	if (t - r->last_byte_ns > (uint64_t)r->stall_s * 1000000000ull) {
		r->stalled = 1;
		return 1;
	}
	return 0;
}

static const char *ca_file(void)
{
	const char *f = getenv("CURL_CA_BUNDLE");

	if (!f || !*f)
		f = getenv("SSL_CERT_FILE");
	return f && *f ? f : NULL;
}

void rfs_http_reset(struct rfs_http_req *r)
{
	free(r->body);
	r->body = NULL;
	r->got = 0;
	r->overflow = 0;
	r->cut = 0;
	r->stalled = 0;
	r->cancelled = 0;
	r->why[0] = 0;
	clear_answer(r);
}

enum rfs_http_rc rfs_http_do(struct rfs_http_req *r)
{
	CURL *h = thread_handle();
	struct curl_slist *hdrs = NULL, *t;
	char range[64], im[300], ebuf[CURL_ERROR_SIZE] = "";
	CURLcode cc;
	int ok = 1, i;

	rfs_http_reset(r);
	if (!h) {
		snprintf(r->why, sizeof(r->why), "cannot make a libcurl handle");
		return RFS_HTTP_FATAL;
	}
	curl_easy_reset(h); /* keeps the connection cache */
	curl_easy_setopt(h, CURLOPT_URL, r->url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
	if (r->timeout_ms > 0)
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, r->timeout_ms);
	if (r->stall_s > 0) {
		/* libcurl's low-speed check averages over seconds; the progress
		 * callback sees a body that stopped within one */
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, r->stall_s);
	}
	if (r->stall_s > 0 || r->cancel) {
		r->last_byte_ns = mono_ns();
		r->last_now = 0;
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, r);
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	}
	curl_easy_setopt(h, CURLOPT_USERAGENT, "residfs/" RESIDFS_VERSION);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	if (ca_file())
		curl_easy_setopt(h, CURLOPT_CAINFO, ca_file());
	if (r->head)
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	if (r->len) {
		/* large receive calls for large ranges: fewer system calls and
		 * callbacks per MiB (the default is 16 KiB) */
		if (r->len >= (1u << 20))
			curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
		snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)r->off,
			 (unsigned long long)(r->off + r->len - 1));
		curl_easy_setopt(h, CURLOPT_RANGE, range);
	}
	/* no Accept-Encoding is sent unless asked for: nothing to switch off */
	if (r->auth) {
		t = curl_slist_append(hdrs, r->auth);
		ok = t != NULL;
		hdrs = t ? t : hdrs;
	}
	if (r->if_match && ok) {
		snprintf(im, sizeof(im), "If-Match: %s", r->if_match);
		t = curl_slist_append(hdrs, im);
		ok = t != NULL;
		hdrs = t ? t : hdrs;
	}
	for (i = 0; r->extra && r->extra[i] && ok; i++) {
		t = curl_slist_append(hdrs, r->extra[i]);
		ok = t != NULL;
		hdrs = t ? t : hdrs;
	}
	if (r->sigv4) {
		/* libcurl signs every header it sends, these included */
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, r->sigv4);
		/* the path is signed as written: libcurl must not tidy it */
		curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
		if (r->userpwd)
			curl_easy_setopt(h, CURLOPT_USERPWD, r->userpwd);
	}
	if (!ok) {
		curl_slist_free_all(hdrs);
		snprintf(r->why, sizeof(r->why), "out of memory");
		return RFS_HTTP_FATAL;
	}
	if (hdrs)
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	cc = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	curl_slist_free_all(hdrs);
	if (cc == CURLE_OK)
		return RFS_HTTP_ANSWER;
	if (cc == CURLE_WRITE_ERROR && (r->overflow || r->cut))
		return RFS_HTTP_ANSWER;
	if (r->cancelled)
		snprintf(r->why, sizeof(r->why), "cancelled");
	else if (r->stalled)
		snprintf(r->why, sizeof(r->why), "no byte for %ld s: the transfer stalled", r->stall_s);
	else
		snprintf(r->why, sizeof(r->why), "%s%s%s", curl_easy_strerror(cc), ebuf[0] ? ": " : "", ebuf);
	switch (cc) {
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_NOT_BUILT_IN:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_OUT_OF_MEMORY:
		r->status = 0;
		return RFS_HTTP_FATAL;
	default:
		/* a status may have come before the body broke off: the
		 * answer is incomplete, so it does not count */
		r->status = 0;
		return RFS_HTTP_TRANSIENT;
	}
}

/* [scheme://host[:port]] of @u: its length, 0 when not an http(s) URL. */
static size_t origin_len(const char *u)
{
	const char *p;

	if (!strncasecmp(u, "http://", 7))
		p = u + 7;
	else if (!strncasecmp(u, "https://", 8))
		p = u + 8;
	else
		return 0;
	p += strcspn(p, "/?#");
	return (size_t)(p - u);
}

int rfs_http_same_origin(const char *a, const char *b)
{
	size_t la = origin_len(a), lb = origin_len(b);

	return la && la == lb && !strncasecmp(a, b, la);
}

enum rfs_code rfs_http_join(const char *base, const char *loc, char *out, size_t outlen,
			    struct rfs_err *err)
{
	size_t ol = origin_len(base);
	int n;

	if (origin_len(loc)) {
		n = snprintf(out, outlen, "%s", loc);
	} else if (loc[0] == '/' && loc[1] != '/' && ol) {
		n = snprintf(out, outlen, "%.*s%s", (int)ol, base, loc);
	} else if (strstr(loc, "://") || !strncmp(loc, "//", 2) || !ol) {
		return rfs_errf(err, RFS_E_FORMAT, "redirect to '%.200s': not an http(s) URL", loc);
	} else {
		const char *slash = strrchr(base + ol, '/');
		size_t keep = slash ? (size_t)(slash - base) + 1 : ol;

		n = snprintf(out, outlen, "%.*s%s%s", (int)keep, base, slash ? "" : "/", loc);
	}
	if (n < 0 || (size_t)n >= outlen)
		return rfs_errf(err, RFS_E_FORMAT, "redirect to '%.200s...': URL too long", loc);
	return 0;
}

enum rfs_code rfs_http_quote(const char *s, const char *safe, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (isalnum(c) || strchr("-._~", c) || (safe && strchr(safe, c))) {
			if (o + 1 >= outlen)
				return RFS_E_RANGE;
			out[o++] = (char)c;
		} else {
			if (o + 3 >= outlen)
				return RFS_E_RANGE;
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	if (o >= outlen)
		return RFS_E_RANGE;
	out[o] = 0;
	return 0;
}

void rfs_http_etag_norm(const char *etag, char *out, size_t outlen)
{
	size_t n;

	if (!strncmp(etag, "W/", 2))
		etag += 2;
	n = strlen(etag);
	if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"') {
		etag++;
		n -= 2;
	}
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, etag, n);
	out[n] = 0;
}
