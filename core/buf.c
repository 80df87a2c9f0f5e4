#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reserve(struct rfs_buf *b, size_t extra)
{
	size_t need, ncap;
	char *p;

	if (b->oom)
		return -1;
	if (extra > (size_t)-1 - b->len - 1) {
		b->oom = 1;
		return -1;
	}
	need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	ncap = b->cap ? b->cap : 64;
	while (ncap < need)
		ncap = ncap > (size_t)-1 / 2 ? need : ncap * 2;
	p = realloc(b->data, ncap);
	if (!p) {
		b->oom = 1;
		return -1;
	}
	b->data = p;
	b->cap = ncap;
	return 0;
}

void rfs_buf_add(struct rfs_buf *b, const void *p, size_t n)
{
	if (reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = 0;
}

void rfs_buf_adds(struct rfs_buf *b, const char *s)
{
	rfs_buf_add(b, s, strlen(s));
}

void rfs_buf_addf(struct rfs_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* Writes the UTF-8 sequence at @p as \\uXXXX (surrogate pairs past the BMP);
 * returns the bytes consumed (1 for an invalid lead byte, written as is). */
static size_t add_u_escape(struct rfs_buf *b, const unsigned char *p)
{
	unsigned cp, len, k;

	if ((p[0] & 0xE0) == 0xC0) {
		len = 2;
		cp = p[0] & 0x1F;
	} else if ((p[0] & 0xF0) == 0xE0) {
		len = 3;
		cp = p[0] & 0x0F;
	} else if ((p[0] & 0xF8) == 0xF0) {
		len = 4;
		cp = p[0] & 0x07;
	} else {
		rfs_buf_add(b, p, 1);
		return 1;
	}
	for (k = 1; k < len; k++) {
		if ((p[k] & 0xC0) != 0x80) {
			rfs_buf_add(b, p, 1);
			return 1;
		}
		cp = (cp << 6) | (p[k] & 0x3F);
	}
	if (cp >= 0x10000) {
		cp -= 0x10000;
		rfs_buf_addf(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
	} else {
		rfs_buf_addf(b, "\\u%04x", cp);
	}
	return len;
}

static void add_json_str(struct rfs_buf *b, const char *s, int ascii)
{
	const unsigned char *p = (const unsigned char *)s;

	rfs_buf_add(b, "\"", 1);
	for (; *p; p++) {
		switch (*p) {
		case '"': rfs_buf_add(b, "\\\"", 2); break;
		case '\\': rfs_buf_add(b, "\\\\", 2); break;
		case '\n': rfs_buf_add(b, "\\n", 2); break;
		case '\r': rfs_buf_add(b, "\\r", 2); break;
		case '\t': rfs_buf_add(b, "\\t", 2); break;
		case '\b': rfs_buf_add(b, "\\b", 2); break;
		case '\f': rfs_buf_add(b, "\\f", 2); break;
		default:
			if (*p < 0x20)
				rfs_buf_addf(b, "\\u%04x", *p);
			else if (*p >= 0x80 && ascii)
				p += add_u_escape(b, p) - 1;
			else
				rfs_buf_add(b, p, 1);
		}
	}
	rfs_buf_add(b, "\"", 1);
}

void rfs_buf_add_json_str(struct rfs_buf *b, const char *s)
{
	add_json_str(b, s, 0);
}

void rfs_buf_add_json_str_ascii(struct rfs_buf *b, const char *s)
{
	add_json_str(b, s, 1);
}

int rfs_buf_ok(const struct rfs_buf *b)
{
	return !b->oom;
}

char *rfs_buf_detach(struct rfs_buf *b, size_t *len)
{
	char *p = b->data;

	if (!p)
		p = calloc(1, 1);
	if (len)
		*len = b->len;
	memset(b, 0, sizeof(*b));
	return p;
}

void rfs_buf_release(struct rfs_buf *b)
{
	if (!b)
		return;
	free(b->data);
	memset(b, 0, sizeof(*b));
}
