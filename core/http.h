/*
 * http.h - one HTTP request with libcurl, and what residfs reads from the
 * answer.
 *
 * Everything remote (the Hub's APIs, resolve URLs, a CDN, a web directory)
 * goes through rfs_http_do: one attempt, no redirect followed (the caller
 * decides where a Location leads and whether a token may go there), no
 * Accept-Encoding (a compressed answer ignores Range), only http and https,
 * a connect timeout, a whole-attempt timeout and a low-speed abort for
 * stalled bodies.  Retrying, backoff and what a status means belong to the
 * caller (remote.c for byte ranges, hub.c and webdir.c for resolution).
 *
 * Each thread uses its own easy handle (libcurl's rule), kept for the
 * thread's life so that its connections are reused; handles are freed
 * when their thread ends.
 *
 * A body goes into the caller's buffer of exactly the expected size (a
 * range: more bytes than asked for abort the transfer) or into a growing
 * buffer up to a maximum (API answers, small files).  The body of a status
 * other than the one expected (200/206) is kept only up to 4 KiB, for the
 * message, and never written to a range buffer.
 *
 * TLS: libcurl's default CA store, or the file named by CURL_CA_BUNDLE or
 * SSL_CERT_FILE (as the curl tool reads them).
 */
#ifndef RFS_HTTP_H
#define RFS_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "err.h"

struct rfs_http_req {
	/* in */
	const char *url;
	int head;                /* HEAD instead of GET */
	uint64_t off, len;       /* a Range of @len bytes at @off when len > 0 */
	const char *auth;        /* a whole "Authorization: ..." line, or NULL */
	const char *if_match;    /* an ETag, sent as If-Match, or NULL */
	const char *sigv4;       /* S3: libcurl's CURLOPT_AWS_SIGV4 ("aws:amz:REGION:s3"), or NULL */
	const char *userpwd;     /* S3: "KEY:SECRET" for the signer (never printed) */
	const char *const *extra;/* more header lines, NULL-terminated, or NULL */
	void *dst;               /* range body: exactly @len bytes; NULL: @body */
	const struct iovec *iov; /* or scattered over these (@niov, @len in all) */
	int niov;
	size_t max_body;         /* GET without @dst: largest body kept */
	long timeout_ms;         /* the whole attempt */
	long stall_s;            /* abort when no byte comes for this long (or under
				  * 1 KiB/s for it, as libcurl measures) */
	const atomic_int *cancel;/* abort (within about a second) once this is set */
	/* out: the last answer's status line and headers */
	long status;             /* 0 when no answer came */
	char location[4096];
	char etag[256];          /* as sent, quotes included */
	char linked_etag[256];   /* X-Linked-Etag */
	char commit[96];         /* X-Repo-Commit */
	char error_code[64];     /* X-Error-Code */
	char link_next[4096];    /* the rel="next" URL of a Link header */
	int64_t linked_size;     /* X-Linked-Size, -1 when absent */
	int64_t content_length;  /* -1 when absent */
	int64_t retry_after;     /* seconds, -1 when absent */
	int64_t last_modified;   /* Last-Modified, seconds since the epoch; -1 when absent */
	int has_range;           /* 1: a Content-Range "bytes A-B/T"; 2: only the
				  * total T (with 416); -1: one that does not parse */
	uint64_t cr_first, cr_last, cr_total;
	size_t got;              /* body bytes received into @dst or @body */
	char *body;              /* malloc'd, NUL-terminated (caller frees) */
	int overflow;            /* more body than @len / @max_body: aborted */
	int cut;                 /* an error body past 4 KiB: the rest not read */
	char why[320];           /* the transport error when status is 0 */
	int stalled;             /* aborted: no byte for @stall_s seconds */
	int cancelled;           /* aborted: @cancel was set */
	/* private */
	uint64_t last_byte_ns;
	int64_t last_now;
};

/** What one attempt gave. */
enum rfs_http_rc {
	RFS_HTTP_ANSWER = 0,     /* a status line and headers came (status set) */
	RFS_HTTP_TRANSIENT = 1,  /* timeout, reset, stall, short body: worth another try */
	RFS_HTTP_FATAL = 2,      /* a bad URL, an unsupported protocol, TLS refused */
};

/** libcurl's global initialisation; call once before any thread starts. */
void rfs_http_global_init(void);

/**
 * Performs @r once (see above).  A transfer aborted because the body was
 * larger than allowed is RFS_HTTP_ANSWER with @r->overflow set.  The
 * caller frees @r->body.
 */
enum rfs_http_rc rfs_http_do(struct rfs_http_req *r);

/** Frees @r->body (safe to call twice) and readies @r for another attempt
 * with the same inputs. */
void rfs_http_reset(struct rfs_http_req *r);

/**
 * 1 when @a and @b have the same scheme, host and port (where a token may
 * go), else 0.
 */
int rfs_http_same_origin(const char *a, const char *b);

/**
 * @loc (a Location, absolute or relative) resolved against @base into
 * @out.  RFS_E_FORMAT when it is not http(s) or too long.
 */
enum rfs_code rfs_http_join(const char *base, const char *loc, char *out, size_t outlen,
			    struct rfs_err *err);

/** Percent-encodes @s into @out with nothing left unencoded but the
 * unreserved characters and those in @safe. */
enum rfs_code rfs_http_quote(const char *s, const char *safe, char *out, size_t outlen);

/** An ETag without W/ and quotes (huggingface_hub's normalisation). */
void rfs_http_etag_norm(const char *etag, char *out, size_t outlen);

/** The versions of libcurl this program runs with, for --version. */
const char *rfs_http_version(void);

#endif
