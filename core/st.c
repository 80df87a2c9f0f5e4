/*
 * safetensors parsing.  Every size comes from a hostile file: lengths are
 * checked against what is left, products with __builtin_mul_overflow,
 * numbers are taken from cJSON's double only when whole and <= 2^53.
 */
#include "st.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "strmap.h"
#include "util.h"
#include "../kernels/kern.h"

static const struct {
	const char *name;
	unsigned bits;
} dtypes[RFS_DT_COUNT] = {
	[RFS_DT_BOOL] = { "BOOL", 8 },
	[RFS_DT_U8] = { "U8", 8 },
	[RFS_DT_I8] = { "I8", 8 },
	[RFS_DT_F8_E5M2] = { "F8_E5M2", 8 },
	[RFS_DT_F8_E4M3] = { "F8_E4M3", 8 },
	[RFS_DT_F8_E8M0] = { "F8_E8M0", 8 },
	[RFS_DT_F8_E4M3FNUZ] = { "F8_E4M3FNUZ", 8 },
	[RFS_DT_F8_E5M2FNUZ] = { "F8_E5M2FNUZ", 8 },
	[RFS_DT_F4] = { "F4", 4 },
	[RFS_DT_F6_E2M3] = { "F6_E2M3", 6 },
	[RFS_DT_F6_E3M2] = { "F6_E3M2", 6 },
	[RFS_DT_I16] = { "I16", 16 },
	[RFS_DT_U16] = { "U16", 16 },
	[RFS_DT_F16] = { "F16", 16 },
	[RFS_DT_BF16] = { "BF16", 16 },
	[RFS_DT_I32] = { "I32", 32 },
	[RFS_DT_U32] = { "U32", 32 },
	[RFS_DT_F32] = { "F32", 32 },
	[RFS_DT_C64] = { "C64", 64 },
	[RFS_DT_F64] = { "F64", 64 },
	[RFS_DT_I64] = { "I64", 64 },
	[RFS_DT_U64] = { "U64", 64 },
};

const char *rfs_dtype_name(enum rfs_dtype t)
{
	return (unsigned)t < RFS_DT_COUNT ? dtypes[t].name : "?";
}

const char *rfs_dtype_torch_name(enum rfs_dtype t)
{
	switch (t) {
	case RFS_DT_BF16: return "bfloat16";
	case RFS_DT_F16: return "float16";
	case RFS_DT_F32: return "float32";
	default: return NULL;
	}
}

int rfs_dtype_parse(const char *name)
{
	int i;

	for (i = 0; i < RFS_DT_COUNT; i++)
		if (!strcmp(name, dtypes[i].name))
			return i;
	return -1;
}

int rfs_dtype_parse_user(const char *s)
{
	if (!strcasecmp(s, "bf16") || !strcmp(s, "bfloat16"))
		return RFS_DT_BF16;
	if (!strcasecmp(s, "fp16") || !strcasecmp(s, "f16") ||
	    !strcmp(s, "float16") || !strcmp(s, "half"))
		return RFS_DT_F16;
	if (!strcasecmp(s, "fp32") || !strcasecmp(s, "f32") ||
	    !strcmp(s, "float32") || !strcmp(s, "float"))
		return RFS_DT_F32;
	return -1;
}

unsigned rfs_dtype_bits(enum rfs_dtype t)
{
	return (unsigned)t < RFS_DT_COUNT ? dtypes[t].bits : 0;
}

unsigned rfs_dtype_align(enum rfs_dtype t)
{
	unsigned b = rfs_dtype_bits(t) / 8;

	return b ? b : 1;
}

int rfs_dtype_kdt(enum rfs_dtype t)
{
	switch (t) {
	case RFS_DT_F32: return RFS_KDT_F32;
	case RFS_DT_BF16: return RFS_KDT_BF16;
	case RFS_DT_F16: return RFS_KDT_F16;
	default: return -1;
	}
}

uint64_t rfs_dtype_bytes(enum rfs_dtype t, uint64_t numel, int *ovf)
{
	uint64_t bits;

	*ovf = 0;
	if (__builtin_mul_overflow(numel, (uint64_t)rfs_dtype_bits(t), &bits) ||
	    bits % 8) {
		*ovf = 1;
		return 0;
	}
	return bits / 8;
}

/* Whole number in [0, 2^53) from a cJSON number; -2 when it is a whole
 * number too large for that (no file holds 2^53 bytes or elements), -1
 * for anything else. */
static int json_u64(const cJSON *j, uint64_t *out)
{
	double d;

	if (!cJSON_IsNumber(j))
		return -1;
	d = j->valuedouble;
	if (d >= 9007199254740992.0)
		return -2; /* the text was checked to be digits only: a huge integer */
	/* below 2^53: every such double is the integer that was written */
	if (!(d >= 0) || d != (double)(uint64_t)d)
		return -1;
	*out = (uint64_t)d;
	return 0;
}

static int utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t k, len;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			len = 2;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (n - i < len)
			return 0;
		for (k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3F);
		}
		if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
		    (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += len;
	}
	return 1;
}

/* Strings may not hold raw control characters (JSON forbids them; serde_json
 * refuses them) nor an escaped NUL (it would cut a C string short and make
 * two names equal).  Outside strings, the only numbers of a header are
 * shapes and offsets, which the reference reads as unsigned integers: a
 * number with a sign, a fraction, an exponent or a leading zero is refused
 * here, since cJSON would turn 1.0 into 1.  cJSON accepts all of these, so
 * the text is checked first. */
static const char *bad_text(const char *s, size_t n, char *key, size_t keylen)
{
	size_t i, kb = 0, ke = 0, sb = 0;
	int in = 0, depth = 0;
	const char *why = NULL;

	for (i = 0; i < n && !why; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!in) {
			if (c == '"') {
				in = 1;
				sb = i + 1;
			} else if (c == '{' || c == '[') {
				depth++;
			} else if (c == '}' || c == ']') {
				depth--;
			} else if (c == '-' || c == '+' || c == '.' ||
				   ((c == 'e' || c == 'E') && i && s[i - 1] >= '0' && s[i - 1] <= '9')) {
				why = "a number that is not a non-negative integer";
			} else if (c == '0' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9' &&
				   (!i || s[i - 1] < '0' || s[i - 1] > '9')) {
				why = "a number with a leading zero";
			}
			continue;
		}
		if (c < 0x20)
			why = "a raw control character inside a string";
		else if (c == '"') {
			in = 0;
			if (depth == 1) { /* a top-level key: the tensor named in errors */
				kb = sb;
				ke = i;
			}
		} else if (c == '\\' && i + 1 < n) {
			if (s[i + 1] == 'u' && n - i >= 6 && !memcmp(s + i + 2, "0000", 4))
				why = "an escaped NUL (\\u0000) inside a string";
			i++;
		}
	}
	if (why && key) {
		size_t l = ke - kb < keylen - 1 ? ke - kb : keylen - 1;

		memcpy(key, s + kb, l);
		key[l] = 0;
	}
	return why;
}

static int cmp_begin(const void *a, const void *b)
{
	const struct rfs_st_tensor *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

static int parse_tensor(const cJSON *e, struct rfs_st_tensor *t,
			struct rfs_err *err)
{
	const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
	const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
	const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
	const cJSON *d;
	uint64_t bytes;
	int type, ovf, i = 0, r0, r1;

	if (!cJSON_IsObject(e))
		return rfs_errf(err, RFS_E_FORMAT, "tensor '%s': entry is not an object", t->name);
	if (!cJSON_IsString(dt))
		return rfs_errf(err, RFS_E_FORMAT, "tensor '%s': missing or non-string dtype", t->name);
	type = rfs_dtype_parse(dt->valuestring);
	if (type < 0)
		return rfs_errf(err, RFS_E_FORMAT, "tensor '%s': unknown dtype '%s'",
				t->name, dt->valuestring);
	t->dtype = (enum rfs_dtype)type;
	if (!cJSON_IsArray(sh))
		return rfs_errf(err, RFS_E_FORMAT, "tensor '%s': missing or non-array shape", t->name);
	t->numel = 1;
	cJSON_ArrayForEach(d, sh) {
		uint64_t v;

		if (i >= RFS_ST_MAX_DIMS)
			return rfs_errf(err, RFS_E_FORMAT, "tensor '%s': more than %d dimensions",
					t->name, RFS_ST_MAX_DIMS);
		switch (json_u64(d, &v)) {
		case 0:
			break;
		case -2:
			return rfs_errf(err, RFS_E_FORMAT,
					"tensor '%s': shape[%d] is %.0f, too large for any file (the limit is 2^53)",
					t->name, i, d->valuedouble);
		default:
			return rfs_errf(err, RFS_E_FORMAT,
					"tensor '%s': shape[%d] is not a non-negative integer", t->name, i);
		}
		t->shape[i++] = v;
		if (__builtin_mul_overflow(t->numel, v, &t->numel))
			return rfs_errf(err, RFS_E_FORMAT,
					"tensor '%s': number of elements overflows", t->name);
	}
	t->ndim = (unsigned)i;
	if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
		return rfs_errf(err, RFS_E_FORMAT,
				"tensor '%s': data_offsets must be two non-negative integers", t->name);
	r0 = json_u64(cJSON_GetArrayItem(off, 0), &t->begin);
	r1 = json_u64(cJSON_GetArrayItem(off, 1), &t->end);
	if (r0 == -2 || r1 == -2)
		return rfs_errf(err, RFS_E_FORMAT,
				"tensor '%s': data_offsets lie beyond 2^53 bytes, past the end of any file",
				t->name);
	if (r0 || r1)
		return rfs_errf(err, RFS_E_FORMAT,
				"tensor '%s': data_offsets must be two non-negative integers", t->name);
	if (t->end < t->begin)
		return rfs_errf(err, RFS_E_FORMAT,
				"tensor '%s': data_offsets end %llu before begin %llu", t->name,
				(unsigned long long)t->end, (unsigned long long)t->begin);
	bytes = rfs_dtype_bytes(t->dtype, t->numel, &ovf);
	if (ovf)
		return rfs_errf(err, RFS_E_FORMAT,
				"tensor '%s': byte size of %llu x %s overflows or is not whole",
				t->name, (unsigned long long)t->numel, rfs_dtype_name(t->dtype));
	if (t->end - t->begin != bytes)
		return rfs_errf(err, RFS_E_FORMAT,
				"tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape and %s need %llu",
				t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
				(unsigned long long)(t->end - t->begin), rfs_dtype_name(t->dtype),
				(unsigned long long)bytes);
	return 0;
}

static int parse_meta(const cJSON *m, struct rfs_st_file *f, struct rfs_err *err)
{
	const cJSON *e;
	size_t n = 0;

	if (!cJSON_IsObject(m))
		return rfs_errf(err, RFS_E_FORMAT, "__metadata__ is not an object");
	cJSON_ArrayForEach(e, m)
		n++;
	f->meta = calloc(n ? n : 1, sizeof(*f->meta));
	if (!f->meta)
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	cJSON_ArrayForEach(e, m) {
		if (!cJSON_IsString(e))
			return rfs_errf(err, RFS_E_FORMAT,
					"__metadata__ value of '%s' is not a string", e->string);
		f->meta[f->nmeta].key = strdup(e->string);
		f->meta[f->nmeta].val = strdup(e->valuestring);
		if (!f->meta[f->nmeta].key || !f->meta[f->nmeta].val) {
			free(f->meta[f->nmeta].key);
			free(f->meta[f->nmeta].val);
			return rfs_errf(err, RFS_E_NOMEM, "out of memory");
		}
		f->nmeta++;
	}
	f->has_meta = 1;
	return 0;
}

static int parse_json(const char *hdr, uint64_t hlen, uint64_t file_size,
		      struct rfs_st_file *f, struct rfs_err *err)
{
	struct rfs_strmap seen = { 0 };
	cJSON *root = NULL;
	const cJSON *e;
	const char *end = NULL;
	size_t n = 0, i;
	uint64_t pos = 0;
	const char *why;
	char key[256];
	int ret = 0;

	if (!utf8_valid((const unsigned char *)hdr, hlen))
		return rfs_errf(err, RFS_E_FORMAT, "header is not valid UTF-8");
	if (hlen == 0 || hdr[0] != '{')
		return rfs_errf(err, RFS_E_FORMAT, "header does not start with '{'");
	if ((why = bad_text(hdr, hlen, key, sizeof(key)))) {
		if (key[0])
			return rfs_errf(err, RFS_E_FORMAT, "tensor '%s': header JSON has %s", key, why);
		return rfs_errf(err, RFS_E_FORMAT, "header JSON has %s", why);
	}
	root = cJSON_ParseWithLengthOpts(hdr, hlen, &end, 0);
	if (!root || !cJSON_IsObject(root)) {
		ret = rfs_errf(err, RFS_E_FORMAT, "header is not a JSON object (error near byte %lld)",
			       root || !end ? -1LL : (long long)(end - hdr));
		goto out;
	}
	/* only spaces may follow the object (writers pad with spaces) */
	for (; end && end < hdr + hlen; end++)
		if (*end != ' ' && *end != '\n' && *end != '\t' && *end != '\r') {
			ret = rfs_errf(err, RFS_E_FORMAT, "trailing bytes after the header JSON");
			goto out;
		}
	cJSON_ArrayForEach(e, root) {
		enum rfs_put r = rfs_strmap_put(&seen, e->string, (void *)e);

		if (r == RFS_PUT_NOMEM) {
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto out;
		}
		if (r == RFS_PUT_EXISTS) {
			ret = rfs_errf(err, RFS_E_FORMAT, "duplicate key '%s' in header", e->string);
			goto out;
		}
		if (strcmp(e->string, "__metadata__"))
			n++;
	}
	f->tensors = calloc(n ? n : 1, sizeof(*f->tensors));
	if (!f->tensors) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto out;
	}
	cJSON_ArrayForEach(e, root) {
		struct rfs_st_tensor *t;

		if (!strcmp(e->string, "__metadata__")) {
			if (cJSON_IsNull(e))
				continue; /* the reference reads null as no metadata */
			ret = parse_meta(e, f, err);
			if (ret)
				goto out;
			continue;
		}
		t = &f->tensors[f->ntensors];
		t->name = strdup(e->string);
		if (!t->name) {
			ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
			goto out;
		}
		f->ntensors++;
		ret = parse_tensor(e, t, err);
		if (ret)
			goto out;
	}
	if (f->ntensors > 1)
		qsort(f->tensors, f->ntensors, sizeof(*f->tensors), cmp_begin);
	for (i = 0; i < f->ntensors; i++) {
		const struct rfs_st_tensor *t = &f->tensors[i];

		if (t->end > file_size - 8 - hlen) {
			ret = rfs_errf(err, RFS_E_FORMAT,
				       "tensor '%s': data_offsets [%llu, %llu] end past the end of the file's data (%llu bytes after the header)",
				       t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
				       (unsigned long long)(file_size - 8 - hlen));
			goto out;
		}
		if (t->begin != pos) {
			ret = rfs_errf(err, RFS_E_FORMAT,
				       "tensor '%s': data_offsets begin at %llu but the previous tensor ends at %llu (%s)",
				       t->name, (unsigned long long)t->begin, (unsigned long long)pos,
				       t->begin > pos ? "hole" : "overlap");
			goto out;
		}
		pos = t->end;
	}
	if (file_size - 8 - hlen != pos) {
		ret = rfs_errf(err, RFS_E_FORMAT,
			       "file is %llu bytes but header and tensors need %llu",
			       (unsigned long long)file_size,
			       (unsigned long long)(8 + hlen + pos));
		goto out;
	}
out:
	rfs_strmap_release(&seen);
	cJSON_Delete(root);
	return ret;
}

enum rfs_code rfs_st_parse(const char *name, const char *hdr, uint64_t hlen,
			   uint64_t file_size, struct rfs_st_file *f, struct rfs_err *err)
{
	int ret;

	memset(f, 0, sizeof(*f));
	if (hlen > RFS_ST_MAX_HEADER)
		return rfs_errf(err, RFS_E_FORMAT,
				"%s: not a safetensors file: its first 8 bytes, read as the header length, give %llu, over the limit of %llu",
				name, (unsigned long long)hlen, RFS_ST_MAX_HEADER);
	if (file_size < 8 || hlen > file_size - 8)
		return rfs_errf(err, RFS_E_FORMAT,
				"%s: not a safetensors file: its first 8 bytes, read as the header length, give %llu, more than the file's %llu bytes can hold",
				name, (unsigned long long)hlen, (unsigned long long)file_size);
	f->path = strdup(name);
	f->header = malloc(hlen + 1);
	if (!f->path || !f->header) {
		rfs_st_release(f);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory");
	}
	memcpy(f->header, hdr, hlen);
	f->header[hlen] = 0;
	f->size = file_size;
	f->hlen = hlen;
	f->data_off = 8 + hlen;
	ret = parse_json(f->header, hlen, file_size, f, err);
	if (ret) {
		char tmp[RFS_ERR_MSG_MAX];

		if (err) {
			memcpy(tmp, err->msg, sizeof(tmp));
			snprintf(err->msg, sizeof(err->msg), "%s: %.*s", name,
				 (int)(sizeof(tmp) / 2), tmp);
		}
		rfs_st_release(f);
	}
	return ret;
}

enum rfs_code rfs_st_open(const char *path, struct rfs_st_file **out, struct rfs_err *err)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

	if (fd < 0)
		return rfs_errsys(err, "%s: cannot open", path);
	if (fstat(fd, &st)) {
		int ret = rfs_errsys(err, "%s: cannot stat", path);

		close(fd);
		return ret;
	}
	return rfs_st_open_fd(fd, &st, path, out, err);
}

enum rfs_code rfs_st_open_fd(int fd, const struct stat *st, const char *path, struct rfs_st_file **out,
			     struct rfs_err *err)
{
	struct rfs_bsrc *src;
	int ret;

	if (!S_ISREG(st->st_mode)) {
		close(fd);
		return rfs_errf(err, RFS_E_FORMAT, "%s: not a regular file", path);
	}
	ret = rfs_bsrc_local_fd(fd, st, path, &src, err);
	return ret ? ret : rfs_st_open_src(src, out, err);
}

enum rfs_code rfs_st_open_src(struct rfs_bsrc *src, struct rfs_st_file **out, struct rfs_err *err)
{
	const char *path = src->name;
	struct rfs_st_file *f = NULL;
	unsigned char lenb[8];
	uint64_t hlen = 0;
	char *hdr = NULL;
	int i, ret;

	if (src->size < 8) {
		ret = rfs_errf(err, RFS_E_FORMAT, "%s: file of %lld bytes is too short for a safetensors header",
			       path, (long long)src->size);
		goto fail;
	}
	if ((ret = rfs_bsrc_pread(src, lenb, 8, 0, err)))
		goto fail;
	for (i = 7; i >= 0; i--)
		hlen = (hlen << 8) | lenb[i];
	if (hlen > RFS_ST_MAX_HEADER || hlen > src->size - 8) {
		struct rfs_st_file tmp;

		ret = rfs_st_parse(path, "", hlen, src->size, &tmp, err);
		goto fail;
	}
	hdr = malloc(hlen ? hlen : 1);
	f = calloc(1, sizeof(*f));
	if (!hdr || !f) {
		ret = rfs_errf(err, RFS_E_NOMEM, "out of memory");
		goto fail;
	}
	if ((ret = rfs_bsrc_pread(src, hdr, hlen, 8, err)))
		goto fail;
	ret = rfs_st_parse(path, hdr, hlen, src->size, f, err);
	if (ret)
		goto fail;
	free(hdr);
	f->src = src;
	f->mtime_ns = src->mtime_ns;
	f->dev = src->id.dev;
	f->ino = src->id.ino;
	f->mode = src->mode;
	*out = f;
	return 0;
fail:
	free(hdr);
	free(f);
	rfs_bsrc_close(src);
	return ret;
}

void rfs_st_release(struct rfs_st_file *f)
{
	size_t i;

	if (!f)
		return;
	for (i = 0; i < f->ntensors; i++)
		free(f->tensors[i].name);
	free(f->tensors);
	for (i = 0; i < f->nmeta; i++) {
		free(f->meta[i].key);
		free(f->meta[i].val);
	}
	free(f->meta);
	free(f->header);
	free(f->path);
	f->tensors = NULL;
	f->meta = NULL;
	f->header = NULL;
	f->path = NULL;
	f->ntensors = f->nmeta = 0;
}

void rfs_st_close(struct rfs_st_file *f)
{
	if (!f)
		return;
	rfs_bsrc_close(f->src);
	rfs_st_release(f);
	free(f);
}

const struct rfs_st_tensor *rfs_st_find(const struct rfs_st_file *f, const char *name)
{
	size_t i;

	for (i = 0; i < f->ntensors; i++)
		if (!strcmp(f->tensors[i].name, name))
			return &f->tensors[i];
	return NULL;
}

enum rfs_code rfs_st_header_write(const struct rfs_st_out *t, size_t n,
				  const struct rfs_st_meta *meta, size_t nmeta, int with_meta,
				  char **out, size_t *len, struct rfs_err *err)
{
	struct rfs_buf b = { 0 };
	size_t i;
	unsigned d;
	int first = 1;

	rfs_buf_add(&b, "{", 1);
	if (with_meta) {
		rfs_buf_adds(&b, "\"__metadata__\":{");
		for (i = 0; i < nmeta; i++) {
			if (i)
				rfs_buf_add(&b, ",", 1);
			rfs_buf_add_json_str(&b, meta[i].key);
			rfs_buf_add(&b, ":", 1);
			rfs_buf_add_json_str(&b, meta[i].val);
		}
		rfs_buf_add(&b, "}", 1);
		first = 0;
	}
	for (i = 0; i < n; i++) {
		if (!first)
			rfs_buf_add(&b, ",", 1);
		first = 0;
		rfs_buf_add_json_str(&b, t[i].name);
		rfs_buf_addf(&b, ":{\"dtype\":\"%s\",\"shape\":[", rfs_dtype_name(t[i].dtype));
		for (d = 0; d < t[i].ndim; d++)
			rfs_buf_addf(&b, "%s%llu", d ? "," : "", (unsigned long long)t[i].shape[d]);
		rfs_buf_addf(&b, "],\"data_offsets\":[%llu,%llu]}",
			     (unsigned long long)t[i].begin, (unsigned long long)t[i].end);
	}
	rfs_buf_add(&b, "}", 1);
	while (b.len % 8)
		rfs_buf_add(&b, " ", 1);
	if (!rfs_buf_ok(&b)) {
		rfs_buf_release(&b);
		return rfs_errf(err, RFS_E_NOMEM, "out of memory writing a safetensors header");
	}
	*out = rfs_buf_detach(&b, len);
	return 0;
}
