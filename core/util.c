#include "util.h"

#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum rfs_code rfs_read_fd(int fd, const struct stat *st, const char *path, size_t max, char **out,
			  size_t *len, struct rfs_err *err)
{
	char *buf;

	if ((uint64_t)st->st_size > max)
		return rfs_errf(err, RFS_E_FORMAT, "%s: %lld bytes is larger than the %zu allowed",
				path, (long long)st->st_size, max);
	buf = malloc((size_t)st->st_size + 1);
	if (!buf)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	if (rfs_pread_all(fd, buf, (size_t)st->st_size, 0)) {
		int ret = errno == EIO ? rfs_errf(err, RFS_E_IO, "%s: shorter than its size: it is changing", path)
				       : rfs_errsys(err, "%s: cannot read", path);

		free(buf);
		return ret;
	}
	buf[st->st_size] = 0;
	*out = buf;
	if (len)
		*len = (size_t)st->st_size;
	return 0;
}

enum rfs_code rfs_read_file(const char *path, size_t max, char **out, size_t *len, struct rfs_err *err)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY), ret;

	if (fd < 0)
		return rfs_errsys(err, "%s: cannot open", path);
	if (fstat(fd, &st))
		ret = rfs_errsys(err, "%s: cannot stat", path);
	else if (!S_ISREG(st.st_mode))
		ret = rfs_errf(err, RFS_E_FORMAT, "%s: not a regular file", path);
	else
		ret = rfs_read_fd(fd, &st, path, max, out, len, err);
	close(fd);
	return ret;
}

enum rfs_code rfs_read_file_at(const char *dir, const char *name, size_t max, char **out,
			       size_t *len, struct rfs_err *err)
{
	char path[4096];

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return rfs_errf(err, RFS_E_RANGE, "%s/%s: path too long", dir, name);
	return rfs_read_file(path, max, out, len, err);
}

int rfs_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t r = pread(fd, p, len, (off_t)off);

		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			errno = EIO;
			return -1;
		}
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

int rfs_file_exists_at(const char *dir, const char *name)
{
	char path[4096];
	struct stat st;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return 0;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int rfs_entry_exists_at(const char *dir, const char *name)
{
	char path[4096];
	struct stat st;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return 0;
	return lstat(path, &st) == 0;
}

/* Is @path (resolved) @root itself or below it? */
static int path_within(const char *path, const char *root)
{
	size_t n = strlen(root);

	if (n == 1 && root[0] == '/')
		return 1;
	return !strncmp(path, root, n) && (path[n] == '/' || path[n] == 0);
}

enum rfs_code rfs_root_init(struct rfs_root *r, const char *dir, struct rfs_err *err)
{
	char *slash, *blobs = NULL;
	struct stat st;

	memset(r, 0, sizeof(*r));
	r->dir = realpath(dir, NULL);
	if (!r->dir)
		return rfs_errsys(err, "%s", dir);
	if (stat(r->dir, &st) || !S_ISDIR(st.st_mode)) {
		rfs_root_release(r);
		return rfs_errf(err, RFS_E_FORMAT, "%s: not a directory", dir);
	}
	/* a Hugging Face cache snapshot: REPO/snapshots/REV -> REPO/blobs */
	slash = strrchr(r->dir, '/');
	if (slash && slash > r->dir) {
		const char *p = slash;

		while (p > r->dir && p[-1] != '/')
			p--;
		if ((size_t)(slash - p) == 9 && !strncmp(p, "snapshots", 9) &&
		    asprintf(&blobs, "%.*sblobs", (int)(p - r->dir), r->dir) > 0) {
			r->blobs = realpath(blobs, NULL);
			free(blobs);
			if (r->blobs && (stat(r->blobs, &st) || !S_ISDIR(st.st_mode))) {
				free(r->blobs);
				r->blobs = NULL;
			}
		}
	}
	return 0;
}

void rfs_root_release(struct rfs_root *r)
{
	free(r->dir);
	free(r->blobs);
	memset(r, 0, sizeof(*r));
}

static int root_contains(const struct rfs_root *r, const char *real)
{
	return path_within(real, r->dir) || (r->blobs && path_within(real, r->blobs));
}

enum rfs_code rfs_root_open(const struct rfs_root *r, const char *dir, const char *name, int *fd,
			    struct stat *st, struct rfs_err *err)
{
	char path[4096], link[64], real[4096], *res;
	struct stat pre;
	ssize_t n;
	int f, ret;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return rfs_errf(err, RFS_E_RANGE, "%s/%s: path too long", dir, name);
	/* resolve first, so that nothing outside is even opened (a device's
	 * open can have effects), and refuse what is not a regular file */
	res = realpath(path, NULL);
	if (!res)
		return rfs_errsys(err, "%s: cannot open", path);
	if (!root_contains(r, res)) {
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "%s: is a link to %s, outside the directory %s: refused (a model directory's files must be inside it)",
			       path, res, r->dir);
		free(res);
		return ret;
	}
	if (stat(res, &pre))
		ret = rfs_errsys(err, "%s: cannot open", path);
	else if (!S_ISREG(pre.st_mode))
		ret = rfs_errf(err, RFS_E_FORMAT, "%s: not a regular file", path);
	else
		ret = 0;
	if (ret) {
		free(res);
		return ret;
	}
	/* O_NONBLOCK: a FIFO swapped in meanwhile must not block us */
	f = open(res, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW);
	free(res);
	if (f < 0)
		return rfs_errsys(err, "%s: cannot open", path);
	if (fstat(f, st)) {
		ret = rfs_errsys(err, "%s: cannot stat", path);
		goto fail;
	}
	if (!S_ISREG(st->st_mode) || st->st_dev != pre.st_dev || st->st_ino != pre.st_ino) {
		ret = rfs_errf(err, RFS_E_FORMAT, "%s: changed while it was being opened", path);
		goto fail;
	}
	/* what was opened, not what a path said a moment ago */
	snprintf(link, sizeof(link), "/proc/self/fd/%d", f);
	n = readlink(link, real, sizeof(real) - 1);
	if (n > 0) {
		real[n] = 0;
		if (!root_contains(r, real)) {
			ret = rfs_errf(err, RFS_E_FORMAT, "%s: resolves to %s, outside the directory %s: refused",
				       path, real, r->dir);
			goto fail;
		}
	}
	fcntl(f, F_SETFL, fcntl(f, F_GETFL) & ~O_NONBLOCK);
	*fd = f;
	return 0;
fail:
	close(f);
	return ret;
}

char *rfs_json_patch(const char *text, size_t len, const struct rfs_json_patch *pt, size_t n,
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

void rfs_shape_str(const uint64_t *shape, unsigned ndim, char *buf, size_t len)
{
	size_t off;
	unsigned i;

	snprintf(buf, len, "[");
	for (i = 0; i < ndim; i++) {
		off = strlen(buf);
		snprintf(buf + off, len - off, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
	}
	off = strlen(buf);
	snprintf(buf + off, len - off, "]");
}

/* ---- a minimal JSON scanner ------------------------------------------ */

struct scan {
	const char *s;
	size_t n, i;
};

static void ws(struct scan *c)
{
	while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' ||
			       c->s[c->i] == '\n' || c->s[c->i] == '\r'))
		c->i++;
}

static int skip_string(struct scan *c)
{
	if (c->i >= c->n || c->s[c->i] != '"')
		return -1;
	for (c->i++; c->i < c->n; c->i++) {
		if (c->s[c->i] == '\\')
			c->i++;
		else if (c->s[c->i] == '"') {
			c->i++;
			return 0;
		}
	}
	return -1;
}

static int skip_value(struct scan *c, int depth)
{
	char open, close;

	ws(c);
	if (c->i >= c->n || depth > 200)
		return -1;
	switch (c->s[c->i]) {
	case '"':
		return skip_string(c);
	case '{':
	case '[':
		open = c->s[c->i];
		close = open == '{' ? '}' : ']';
		c->i++;
		ws(c);
		if (c->i < c->n && c->s[c->i] == close) {
			c->i++;
			return 0;
		}
		for (;;) {
			if (open == '{') {
				ws(c);
				if (skip_string(c))
					return -1;
				ws(c);
				if (c->i >= c->n || c->s[c->i] != ':')
					return -1;
				c->i++;
			}
			if (skip_value(c, depth + 1))
				return -1;
			ws(c);
			if (c->i >= c->n)
				return -1;
			if (c->s[c->i] == ',') {
				c->i++;
				continue;
			}
			if (c->s[c->i] == close) {
				c->i++;
				return 0;
			}
			return -1;
		}
	default:
		while (c->i < c->n && !strchr(",}] \t\r\n", c->s[c->i]))
			c->i++;
		return 0;
	}
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Is the JSON string body @s (@n bytes, escapes undecoded) the ASCII
 * @key?  Escapes are decoded as a JSON parser would ("vocab\u005fsize"
 * is vocab_size): the key a loader reads is the one rewritten. */
static int key_is(const char *s, size_t n, const char *key)
{
	size_t i = 0;

	for (; i < n; key++) {
		unsigned ch = (unsigned char)s[i++];

		if (ch == '\\') {
			if (i >= n)
				return 0;
			ch = (unsigned char)s[i++];
			switch (ch) {
			case 'b': ch = '\b'; break;
			case 'f': ch = '\f'; break;
			case 'n': ch = '\n'; break;
			case 'r': ch = '\r'; break;
			case 't': ch = '\t'; break;
			case 'u': {
				int k, v = 0;

				if (i + 4 > n)
					return 0;
				for (k = 0; k < 4; k++) {
					int h = hexval(s[i + k]);

					if (h < 0)
						return 0;
					v = v * 16 + h;
				}
				i += 4;
				if (v >= 0x80)
					return 0; /* the keys looked for are ASCII */
				ch = (unsigned)v;
				break;
			}
			default: /* '"', '\\', '/' stand for themselves */
				break;
			}
		}
		if (!*key || (unsigned char)*key != ch)
			return 0;
	}
	return !*key;
}

int rfs_json_span(const char *text, size_t len, const char *const *keys, size_t nkeys,
		  size_t *beg, size_t *end)
{
	struct scan c = { text, len, 0 };
	size_t k;

	for (k = 0; k < nkeys; k++) {
		int found = 0;

		ws(&c);
		if (c.i >= c.n || c.s[c.i] != '{')
			return -1;
		c.i++;
		ws(&c);
		if (c.i < c.n && c.s[c.i] == '}')
			return -1;
		while (!found) {
			size_t kb, ke, klen = strlen(keys[k]);

			ws(&c);
			kb = c.i;
			if (skip_string(&c))
				return -1;
			ke = c.i;
			ws(&c);
			if (c.i >= c.n || c.s[c.i] != ':')
				return -1;
			c.i++;
			if (ke - kb - 2 >= klen && key_is(c.s + kb + 1, ke - kb - 2, keys[k])) {
				found = 1;
				break;
			}
			if (skip_value(&c, 0))
				return -1;
			ws(&c);
			if (c.i < c.n && c.s[c.i] == ',') {
				c.i++;
				continue;
			}
			return -1;
		}
	}
	ws(&c);
	*beg = c.i;
	if (skip_value(&c, 0))
		return -1;
	*end = c.i;
	return 0;
}

/* ---- SHA-256 (FIPS 180-4) -------------------------------------------- */

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha_block(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, hh;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++) {
		uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
	for (i = 0; i < 64; i++) {
		uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));

		hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
	}
	h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

void rfs_sha256(const void *data, size_t len, uint8_t out[32])
{
	uint32_t h[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
			  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	const uint8_t *p = data;
	uint8_t tail[128] = { 0 };
	size_t full = len / 64 * 64, rest = len - full, tl;
	uint64_t bits = (uint64_t)len * 8;
	size_t i;

	for (i = 0; i < full; i += 64)
		sha_block(h, p + i);
	memcpy(tail, p + full, rest);
	tail[rest] = 0x80;
	tl = rest < 56 ? 64 : 128;
	for (i = 0; i < 8; i++)
		tail[tl - 1 - i] = (uint8_t)(bits >> (8 * i));
	sha_block(h, tail);
	if (tl == 128)
		sha_block(h, tail + 64);
	for (i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(h[i] >> 8);
		out[4 * i + 3] = (uint8_t)h[i];
	}
}

void rfs_sha256_hex(const void *data, size_t len, char out[65])
{
	uint8_t d[32];
	int i;

	rfs_sha256(data, len, d);
	for (i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

void rfs_iso8601(int64_t ns, char *buf, size_t len)
{
	time_t sec = (time_t)(ns / 1000000000);
	long us = (long)(ns % 1000000000 / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	if (us)
		snprintf(buf, len, "%s.%06ld+00:00", base, us);
	else
		snprintf(buf, len, "%s+00:00", base);
}

void rfs_human_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int i = 0;

	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, len, "%.2f %s", v, u[i]);
}
