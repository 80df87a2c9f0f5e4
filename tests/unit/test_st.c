/*
 * test_st.c - safetensors parsing (every rule of the reference parser, each
 * with an input that breaks it) and header writing (round trip, padding,
 * JSON escaping).  In-memory headers go through rfs_st_parse; files written
 * to a mkdtemp directory go through rfs_st_open.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/bsrc.h"
#include "core/st.h"

#define NAME "unit.safetensors"

static char tmpdir[64];

/* ---------------------------------------------------------------- helpers */

/*
 * JSON written with ' for " so the tests stay readable.  Returns one of a
 * few static buffers, so nothing leaks when an assertion jumps out.
 */
static char *q(const char *s)
{
	static char ring[4][4096];
	static unsigned next;
	char *r = ring[next++ % 4], *p;

	assert_true(strlen(s) < sizeof(ring[0]));
	strcpy(r, s);
	for (p = r; *p; p++)
		if (*p == '\'')
			*p = '"';
	return r;
}

/* Parses @json (N = @len bytes) for a file of 8 + N + @data bytes. */
static int parse_n(const char *json, size_t len, uint64_t data, struct rfs_st_file *f,
		   struct rfs_err *err)
{
	memset(err, 0, sizeof(*err));
	return rfs_st_parse(NAME, json, len, 8 + len + data, f, err);
}

/* Parses a '-quoted header that must be valid; @f must be released. */
static void good(const char *sq, uint64_t data, struct rfs_st_file *f)
{
	char *j = q(sq);
	struct rfs_err err;
	int r = parse_n(j, strlen(j), data, f, &err);

	if (r)
		fail_msg("valid header refused (%d): %s\n  header: %s", r, err.msg, j);
}

static int has(const char *buf, size_t len, const char *lit)
{
	return memmem(buf, len, lit, strlen(lit)) != NULL;
}

static void check_err(int r, const struct rfs_err *err, const char *file, const char *tensor,
		      const char *hdr)
{
	if (r != RFS_E_FORMAT || err->code != RFS_E_FORMAT)
		fail_msg("want RFS_E_FORMAT, got %d (err.code %d, msg '%s')\n  header: %s",
			 r, err->code, err->msg, hdr);
	if (!strstr(err->msg, file))
		fail_msg("message does not name the file '%s': %s", file, err->msg);
	if (tensor && !strstr(err->msg, tensor))
		fail_msg("message does not name '%s': %s", tensor, err->msg);
}

/* A header of @len bytes that must be refused, naming the file and @tensor. */
static void bad_n(const char *json, size_t len, uint64_t data, const char *tensor)
{
	struct rfs_st_file f;
	struct rfs_err err;
	int r = parse_n(json, len, data, &f, &err);

	if (!r) {
		rfs_st_release(&f);
		fail_msg("accepted an invalid header: %.*s", (int)len, json);
	}
	check_err(r, &err, NAME, tensor, json);
}

static void bad(const char *sq, uint64_t data, const char *tensor)
{
	char *j = q(sq);

	bad_n(j, strlen(j), data, tensor);
}

/* Writes u64le(@hlen) + @hdr + zeros up to a file of @size bytes. */
static char *write_file(const char *name, uint64_t hlen, const void *hdr, size_t hdr_len,
			uint64_t size)
{
	unsigned char le[8];
	char *path;
	int fd, i;

	assert_true(asprintf(&path, "%s/%s", tmpdir, name) > 0);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	for (i = 0; i < 8; i++)
		le[i] = (unsigned char)(hlen >> (8 * i));
	if (size >= 8)
		assert_int_equal(write(fd, le, 8), 8);
	else
		assert_int_equal(write(fd, le, size), (ssize_t)size);
	if (hdr_len && size > 8)
		assert_int_equal(write(fd, hdr, hdr_len), (ssize_t)hdr_len);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
	return path;
}

/* A file from a '-quoted header and @data bytes of zeros after it. */
static char *write_st(const char *name, const char *sq, uint64_t data)
{
	char *j = q(sq);

	return write_file(name, strlen(j), j, strlen(j), 8 + strlen(j) + data);
}

static void open_bad(const char *path, int code)
{
	struct rfs_st_file *f = (struct rfs_st_file *)0x1;
	struct rfs_err err = { 0 };
	int r = rfs_st_open(path, &f, &err);

	if (r != code) {
		if (!r)
			rfs_st_close(f);
		fail_msg("rfs_st_open(%s) = %d, want %d (%s)", path, r, code, err.msg);
	}
	assert_int_equal(err.code, code);
	assert_ptr_equal(f, (struct rfs_st_file *)0x1); /* untouched */
	if (!strstr(err.msg, path))
		fail_msg("message does not name the file '%s': %s", path, err.msg);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int setup(void **state)
{
	(void)state;
	strcpy(tmpdir, "/tmp/rfs-test-st.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ------------------------------------------------------------ valid files */

static void test_valid_basic(void **state)
{
	struct rfs_st_file f;
	const struct rfs_st_tensor *t;
	char *j = q("{'__metadata__':{'format':'pt','b':'x'},"
		    "'w':{'dtype':'BF16','shape':[2,3],'data_offsets':[16,28]},"
		    "'e':{'dtype':'F32','shape':[4],'data_offsets':[0,16]}}");
	struct rfs_err err;

	(void)state;
	assert_int_equal(parse_n(j, strlen(j), 28, &f, &err), 0);
	assert_string_equal(f.path, NAME);
	assert_null(f.src); /* parsed from memory: no source */
	assert_int_equal(f.hlen, strlen(j));
	assert_int_equal(f.data_off, 8 + strlen(j));
	assert_int_equal(f.size, 8 + strlen(j) + 28);
	assert_memory_equal(f.header, j, strlen(j));
	assert_int_equal(f.header[f.hlen], 0);
	assert_int_equal(f.ntensors, 2);
	/* sorted by begin */
	assert_string_equal(f.tensors[0].name, "e");
	assert_string_equal(f.tensors[1].name, "w");
	t = rfs_st_find(&f, "w");
	assert_ptr_equal(t, &f.tensors[1]);
	assert_int_equal(t->dtype, RFS_DT_BF16);
	assert_int_equal(t->ndim, 2);
	assert_int_equal(t->shape[0], 2);
	assert_int_equal(t->shape[1], 3);
	assert_int_equal(t->numel, 6);
	assert_int_equal(t->begin, 16);
	assert_int_equal(t->end, 28);
	assert_null(rfs_st_find(&f, "x"));
	assert_null(rfs_st_find(&f, "__metadata__"));
	/* metadata in file order */
	assert_true(f.has_meta);
	assert_int_equal(f.nmeta, 2);
	assert_string_equal(f.meta[0].key, "format");
	assert_string_equal(f.meta[0].val, "pt");
	assert_string_equal(f.meta[1].key, "b");
	assert_string_equal(f.meta[1].val, "x");
	rfs_st_release(&f);
	rfs_st_release(&f); /* idempotent */
	rfs_st_close(NULL);
}

static void test_valid_empty(void **state)
{
	struct rfs_st_file f;

	(void)state;
	good("{}", 0, &f);
	assert_int_equal(f.ntensors, 0);
	assert_false(f.has_meta);
	rfs_st_release(&f);

	good("{'__metadata__':{}}", 0, &f);
	assert_int_equal(f.ntensors, 0);
	assert_true(f.has_meta);
	assert_int_equal(f.nmeta, 0);
	rfs_st_release(&f);
}

static void test_valid_zero_size(void **state)
{
	struct rfs_st_file f;
	const struct rfs_st_tensor *t;

	(void)state;
	good("{'z0':{'dtype':'F32','shape':[0],'data_offsets':[0,0]},"
	     "'a':{'dtype':'F32','shape':[],'data_offsets':[0,4]},"
	     "'z1':{'dtype':'BF16','shape':[2,0,3],'data_offsets':[4,4]},"
	     "'z2':{'dtype':'F4','shape':[0],'data_offsets':[4,4]},"
	     "'b':{'dtype':'U8','shape':[1,1,1],'data_offsets':[4,5]},"
	     "'z3':{'dtype':'I64','shape':[7,0],'data_offsets':[5,5]}}",
	     5, &f);
	assert_int_equal(f.ntensors, 6);
	t = rfs_st_find(&f, "a");
	assert_non_null(t);
	assert_int_equal(t->ndim, 0); /* a scalar has one element */
	assert_int_equal(t->numel, 1);
	t = rfs_st_find(&f, "z1");
	assert_non_null(t);
	assert_int_equal(t->ndim, 3);
	assert_int_equal(t->numel, 0);
	assert_int_equal(rfs_st_find(&f, "z3")->begin, 5);
	rfs_st_release(&f);

	/* only zero-size tensors: the data buffer is empty */
	good("{'z':{'dtype':'F16','shape':[0,4096],'data_offsets':[0,0]}}", 0, &f);
	assert_int_equal(f.ntensors, 1);
	rfs_st_release(&f);
}

static void test_valid_padding(void **state)
{
	struct rfs_st_file f;

	(void)state;
	/* writers pad with spaces so that 8 + N is a multiple of 8 */
	good("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}       ", 1, &f);
	assert_int_equal(f.ntensors, 1);
	rfs_st_release(&f);
	/* JSON whitespace after the object is fine too */
	good("{} \n\t\r ", 0, &f);
	rfs_st_release(&f);
	/* and inside it */
	good("{ 'a' : { 'dtype' : 'U8' , 'shape' : [ 1 ] , 'data_offsets' : [ 0 , 1 ] } }", 1, &f);
	rfs_st_release(&f);
}

static void test_valid_all_dtypes(void **state)
{
	static const struct {
		const char *name;
		unsigned bits;
	} d[] = {
		{ "BOOL", 8 }, { "U8", 8 }, { "I8", 8 }, { "F8_E5M2", 8 }, { "F8_E4M3", 8 },
		{ "F8_E8M0", 8 }, { "F8_E4M3FNUZ", 8 }, { "F8_E5M2FNUZ", 8 }, { "F4", 4 },
		{ "F6_E2M3", 6 }, { "F6_E3M2", 6 }, { "I16", 16 }, { "U16", 16 }, { "F16", 16 },
		{ "BF16", 16 }, { "I32", 32 }, { "U32", 32 }, { "F32", 32 }, { "C64", 64 },
		{ "F64", 64 }, { "I64", 64 }, { "U64", 64 },
	};
	size_t i;

	(void)state;
	assert_int_equal(sizeof(d) / sizeof(d[0]), RFS_DT_COUNT);
	for (i = 0; i < RFS_DT_COUNT; i++) {
		char hdr[256];
		struct rfs_st_file f;
		struct rfs_err err;
		int dt = rfs_dtype_parse(d[i].name), ovf;

		assert_true(dt >= 0);
		assert_string_equal(rfs_dtype_name((enum rfs_dtype)dt), d[i].name);
		assert_int_equal(rfs_dtype_bits((enum rfs_dtype)dt), d[i].bits);
		/* 8 elements: whole bytes for every dtype */
		assert_int_equal(rfs_dtype_bytes((enum rfs_dtype)dt, 8, &ovf), d[i].bits);
		assert_int_equal(ovf, 0);
		snprintf(hdr, sizeof(hdr),
			 "{\"t\":{\"dtype\":\"%s\",\"shape\":[2,4],\"data_offsets\":[0,%u]}}",
			 d[i].name, d[i].bits);
		if (parse_n(hdr, strlen(hdr), d[i].bits, &f, &err))
			fail_msg("%s refused: %s", d[i].name, err.msg);
		assert_int_equal(f.tensors[0].dtype, dt);
		rfs_st_release(&f);
	}
}

/* Offsets and sizes past INT_MAX and 2^32 are kept exactly (no valueint). */
static void test_valid_huge_offsets(void **state)
{
	struct rfs_st_file f;
	const struct rfs_st_tensor *t;

	(void)state;
	good("{'a':{'dtype':'U8','shape':[3000000000],'data_offsets':[0,3000000000]},"
	     "'b':{'dtype':'F32','shape':[1250000000],'data_offsets':[3000000000,8000000000]}}",
	     8000000000ull, &f);
	t = rfs_st_find(&f, "b");
	assert_non_null(t);
	assert_int_equal(t->begin, 3000000000ull);
	assert_int_equal(t->end, 8000000000ull);
	assert_int_equal(t->numel, 1250000000ull);
	rfs_st_release(&f);
	/* 2^53 - 1 is the largest value allowed */
	good("{'a':{'dtype':'U8','shape':[9007199254740991],'data_offsets':[0,9007199254740991]}}",
	     9007199254740991ull, &f);
	assert_int_equal(f.tensors[0].end, 9007199254740991ull);
	rfs_st_release(&f);
}

/* ------------------------------------------------------- header length */

static void test_header_too_long(void **state)
{
	struct rfs_st_file f;
	struct rfs_err err;
	char *big, *path;
	int r;

	(void)state;
	/* in memory: N > 100,000,000 is refused whatever the bytes are */
	big = calloc(1, RFS_ST_MAX_HEADER + 2);
	assert_non_null(big);
	memcpy(big, "{}", 2);
	memset(big + 2, ' ', RFS_ST_MAX_HEADER - 1);
	r = rfs_st_parse(NAME, big, RFS_ST_MAX_HEADER + 1, 8 + RFS_ST_MAX_HEADER + 1, &f, &err);
	check_err(r, &err, NAME, NULL, "N = 100,000,001");
	/* exactly 100,000,000 is allowed */
	r = rfs_st_parse(NAME, big, RFS_ST_MAX_HEADER, 8 + RFS_ST_MAX_HEADER, &f, &err);
	if (r)
		fail_msg("N = 100,000,000 refused: %s", err.msg);
	rfs_st_release(&f);
	free(big);
	r = rfs_st_parse(NAME, "{}", UINT64_MAX, UINT64_MAX, &f, &err);
	check_err(r, &err, NAME, NULL, "N = 2^64-1");

	/* a file whose length field says 100,000,001 (sparse, so it fits) */
	path = write_file("toolong.safetensors", RFS_ST_MAX_HEADER + 1, "{}", 2,
			  8 + RFS_ST_MAX_HEADER + 1);
	open_bad(path, RFS_E_FORMAT);
	free(path);
	path = write_file("hugelen.safetensors", UINT64_MAX, "{}", 2, 64);
	open_bad(path, RFS_E_FORMAT);
	free(path);
}

static void test_header_beyond_file(void **state)
{
	struct rfs_st_file f;
	struct rfs_err err;
	char *path;
	int r;

	(void)state;
	r = rfs_st_parse(NAME, "{}", 2, 8 + 1, &f, &err);
	check_err(r, &err, NAME, NULL, "N = 2, file 9");
	r = rfs_st_parse(NAME, "{}", 2, 8, &f, &err);
	check_err(r, &err, NAME, NULL, "N = 2, file 8");
	r = rfs_st_parse(NAME, "{}", 2, 3, &f, &err);
	check_err(r, &err, NAME, NULL, "file of 3 bytes");

	path = write_file("beyond.safetensors", 1000, "{}", 2, 50);
	open_bad(path, RFS_E_FORMAT);
	free(path);
	path = write_file("beyond1.safetensors", 3, "{}", 2, 10);
	open_bad(path, RFS_E_FORMAT);
	free(path);
}

static void test_short_file(void **state)
{
	char *path;
	size_t n;

	(void)state;
	for (n = 0; n < 8; n++) {
		char name[32];

		snprintf(name, sizeof(name), "short%zu.safetensors", n);
		path = write_file(name, 0, NULL, 0, n);
		open_bad(path, RFS_E_FORMAT);
		free(path);
	}
	/* exactly 8 bytes: N = 0, an empty header is not a JSON object */
	path = write_file("eight.safetensors", 0, NULL, 0, 8);
	open_bad(path, RFS_E_FORMAT);
	free(path);
}

static void test_open(void **state)
{
	struct rfs_st_file *f = NULL;
	struct rfs_err err = { 0 };
	char *path, *dir;
	struct stat st;

	(void)state;
	path = write_st("ok.safetensors",
			"{'__metadata__':{'format':'pt'},"
			"'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]}}    ", 8);
	assert_int_equal(rfs_st_open(path, &f, &err), 0);
	assert_non_null(f);
	assert_true(rfs_bsrc_fd(f->src) >= 0);
	assert_string_equal(f->path, path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(f->size, (uint64_t)st.st_size);
	assert_int_equal(f->ino, st.st_ino);
	assert_int_equal(f->dev, st.st_dev);
	assert_int_equal(f->mtime_ns, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
	assert_int_equal(f->ntensors, 1);
	assert_int_equal(f->data_off, 8 + f->hlen);
	rfs_st_close(f);
	free(path);

	/* missing file: an I/O error naming it */
	assert_true(asprintf(&path, "%s/missing.safetensors", tmpdir) > 0);
	open_bad(path, RFS_E_IO);
	free(path);

	/* a directory is not a safetensors file */
	assert_true(asprintf(&dir, "%s/dir.safetensors", tmpdir) > 0);
	assert_int_equal(mkdir(dir, 0755), 0);
	open_bad(dir, RFS_E_FORMAT);
	free(dir);
}

/* Every parse rule through a real file as well, with the path in the message. */
static void test_open_rules(void **state)
{
	static const struct {
		const char *hdr;
		uint64_t data;
	} v[] = {
		{ "[]", 0 },
		{ "{}x", 0 },
		{ "{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,4]}}", 4 },
		{ "{'a':{'dtype':'F32','shape':[1],'data_offsets':[4,8]}}", 8 },
		{ "{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", 3 },
		{ "{'a':{'dtype':'F32','shape':[1],'data_offsets':[0,4]}}", 5 },
		{ "{'__metadata__':[]}", 0 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char name[32], *path;

		snprintf(name, sizeof(name), "rule%zu.safetensors", i);
		path = write_st(name, v[i].hdr, v[i].data);
		open_bad(path, RFS_E_FORMAT);
		free(path);
	}
}

/* ---------------------------------------------------------- JSON level */

static void test_not_utf8(void **state)
{
	static const char *const v[] = {
		"{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\xc3\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",   /* truncated */
		"{\"\xc0\xaf\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", /* overlong */
		"{\"\xe0\x80\xaf\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"\xed\xa0\x80\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", /* surrogate */
		"{\"\xf4\x90\x80\x80\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", /* > U+10FFFF */
		"{\"\x80\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", /* lone continuation */
		"{\"__metadata__\":{\"k\":\"\xfe\"}}",
		"{}   \xff",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		bad_n(v[i], strlen(v[i]), i < 7 ? 1 : 0, NULL);
	/* the header ends with an incomplete sequence */
	bad_n("{}\xe2\x82", 4, 0, NULL);
}

static void test_not_object(void **state)
{
	static const char *const v[] = {
		"[]", "'x'", "1", "null", "true", "{", "{'a'}", "{'a':}", " {}", "\n{}",
		"[{}]", "{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},}",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		bad(v[i], 0, NULL);
	bad_n("", 0, 0, NULL);
}

static void test_trailing_garbage(void **state)
{
	(void)state;
	bad("{}x", 0, NULL);
	bad("{}{}", 0, NULL);
	bad("{} ,", 0, NULL);
	bad("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}}", 1, NULL);
	bad_n("{}\0", 3, 0, NULL);
	bad_n("{}  \0  ", 7, 0, NULL);
	bad_n("{}\x01", 3, 0, NULL);
	/* a NUL inside the header must not end it early */
	bad_n("{}\0{'x':1}", 10, 0, NULL);
}

static void test_duplicate_key(void **state)
{
	(void)state;
	bad("{'dup.a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},"
	    "'dup.a':{'dtype':'U8','shape':[1],'data_offsets':[1,2]}}", 2, "dup.a");
	bad("{'dup.w':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},"
	    "'x':{'dtype':'U8','shape':[0],'data_offsets':[1,1]},"
	    "'dup.w':{'dtype':'U8','shape':[0],'data_offsets':[1,1]}}", 1, "dup.w");
	bad("{'__metadata__':{},'__metadata__':{}}", 0, "__metadata__");
}

/* Raw control characters are not JSON (the reference's serde_json refuses them). */
static void test_json_raw_control(void **state)
{
	struct rfs_st_file f;

	(void)state;
	bad("{'a\nb':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 1, NULL);
	bad("{'a\tb':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 1, NULL);
	bad("{'a\x1f':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 1, NULL);
	bad("{'__metadata__':{'k':'v\x01'}}", 0, NULL);
	/* escaped control characters are fine */
	good("{'a\\nb':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 1, &f);
	assert_string_equal(f.tensors[0].name, "a\nb");
	rfs_st_release(&f);
}

/*
 * An escaped NUL must not cut a name short: "a\u0000b" read as "a" would
 * match another tensor.  Refusing such names is fine.
 */
static void test_json_escaped_nul(void **state)
{
	struct rfs_st_file f;
	struct rfs_err err;
	char *j;
	int r;

	(void)state;
	j = q("{'a\\u0000b':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}");
	r = parse_n(j, strlen(j), 1, &f, &err);
	if (!r) {
		int truncated = !strcmp(f.tensors[0].name, "a");

		rfs_st_release(&f);
		if (truncated)
			fail_msg("tensor name \"a\\u0000b\" was read as \"a\"");
	} else {
		check_err(r, &err, NAME, NULL, j);
	}
	/* "a" and "a\u0000x" are two names: accepted as two tensors, or
	 * refused for the NUL, but not as duplicates of each other */
	j = q("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},"
	      "'a\\u0000x':{'dtype':'U8','shape':[1],'data_offsets':[1,2]}}");
	r = parse_n(j, strlen(j), 2, &f, &err);
	if (!r) {
		int same = !strcmp(f.tensors[0].name, f.tensors[1].name);

		rfs_st_release(&f);
		if (same)
			fail_msg("\"a\" and \"a\\u0000x\" parsed as two tensors named \"a\"");
	} else if (strstr(err.msg, "duplicate")) {
		fail_msg("\"a\" and \"a\\u0000x\" taken for the same name: %s", err.msg);
	}
}

static void test_json_surrogates(void **state)
{
	struct rfs_st_file f;

	(void)state;
	/* a lone surrogate escape is not a character */
	bad("{'\\ud800':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 1, NULL);
	bad("{'\\udc00':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 1, NULL);
	bad("{'\\ud800x':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 1, NULL);
	/* a valid pair is */
	good("{'\\ud83d\\ude00':{'dtype':'U8','shape':[1],'data_offsets':[0,1]}}", 1, &f);
	assert_string_equal(f.tensors[0].name, "\xf0\x9f\x98\x80");
	rfs_st_release(&f);
}

/* --------------------------------------------------------- tensor entries */

static void test_entry_not_object(void **state)
{
	(void)state;
	bad("{'blk.0.w':[]}", 0, "blk.0.w");
	bad("{'blk.0.w':'F32'}", 0, "blk.0.w");
	bad("{'blk.0.w':1}", 0, "blk.0.w");
	bad("{'blk.0.w':null}", 0, "blk.0.w");
	bad("{'blk.0.w':{}}", 0, "blk.0.w");
}

static void test_dtype(void **state)
{
	(void)state;
	bad("{'blk.0.w':{'dtype':'F8','shape':[1],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'bf16','shape':[1],'data_offsets':[0,2]}}", 2, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'F32 ','shape':[1],'data_offsets':[0,4]}}", 4, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'','shape':[1],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'F3','shape':[1],'data_offsets':[0,4]}}", 4, "blk.0.w");
	/* dtype not a string */
	bad("{'blk.0.w':{'dtype':1,'shape':[1],'data_offsets':[0,4]}}", 4, "blk.0.w");
	bad("{'blk.0.w':{'dtype':null,'shape':[1],'data_offsets':[0,4]}}", 4, "blk.0.w");
	bad("{'blk.0.w':{'dtype':['F32'],'shape':[1],'data_offsets':[0,4]}}", 4, "blk.0.w");
	bad("{'blk.0.w':{'shape':[1],'data_offsets':[0,4]}}", 4, "blk.0.w");
	/* keys are case-sensitive */
	bad("{'blk.0.w':{'DTYPE':'F32','shape':[1],'data_offsets':[0,4]}}", 4, "blk.0.w");

	assert_int_equal(rfs_dtype_parse("F8"), -1);
	assert_int_equal(rfs_dtype_parse("bf16"), -1);
	assert_int_equal(rfs_dtype_parse(""), -1);
}

static void test_shape(void **state)
{
	struct rfs_st_file f;

	(void)state;
	/* not an array */
	bad("{'blk.0.w':{'dtype':'U8','shape':1,'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':'[1]','data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':{},'data_offsets':[0,0]}}", 0, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':null,'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','data_offsets':[0,1]}}", 1, "blk.0.w");
	/* bad dimensions */
	bad("{'blk.0.w':{'dtype':'U8','shape':[-1],'data_offsets':[0,0]}}", 0, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[2,-3],'data_offsets':[0,0]}}", 0, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1.5],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[2,0.5],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':['1'],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[null],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[[1]],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[true],'data_offsets':[0,1]}}", 1, "blk.0.w");
	/* > 2^53 */
	bad("{'blk.0.w':{'dtype':'U8','shape':[1e300],'data_offsets':[0,0]}}", 0, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1e999],'data_offsets':[0,0]}}", 0, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[18446744073709551616],'data_offsets':[0,0]}}", 0, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[9007199254740994],'data_offsets':[0,9007199254740994]}}",
	    9007199254740994ull, "blk.0.w");
	/* 16 dimensions are fine */
	good("{'blk.0.w':{'dtype':'U8','shape':[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,2],'data_offsets':[0,2]}}",
	     2, &f);
	assert_int_equal(f.tensors[0].ndim, 16);
	assert_int_equal(f.tensors[0].numel, 2);
	rfs_st_release(&f);
}

/*
 * 2^53 + 1 has no double: strtod gives 2^53, which passes a "<= 2^53"
 * check, so the number is silently read as another one.
 */
static void test_above_2p53(void **state)
{
	(void)state;
	bad("{'blk.0.w':{'dtype':'U8','shape':[9007199254740993],'data_offsets':[0,9007199254740992]}}",
	    9007199254740992ull, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[9007199254740992],'data_offsets':[0,9007199254740993]}}",
	    9007199254740992ull, "blk.0.w");
	bad("{'a':{'dtype':'U8','shape':[9007199254740991],'data_offsets':[0,9007199254740991]},"
	    "'blk.0.w':{'dtype':'U8','shape':[0],'data_offsets':[9007199254740993,9007199254740993]}}",
	    9007199254740991ull, "blk.0.w");
	/* 2^53 itself: a double cannot tell it from 2^53 + 1, so it is refused */
	bad("{'blk.0.w':{'dtype':'U8','shape':[9007199254740992],'data_offsets':[0,9007199254740992]}}",
	    9007199254740992ull, "blk.0.w");
}

/* The reference reads shapes and offsets as unsigned integers: 1.0, 1e0,
 * -0 and 01 are refused, though cJSON reads them as whole numbers. */
static void test_integer_spelling(void **state)
{
	(void)state;
	bad("{'blk.0.w':{'dtype':'U8','shape':[1.0],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1e0],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[-0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[01],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[0,1E0]}}", 1, "blk.0.w");
}

static void test_offsets(void **state)
{
	(void)state;
	/* wrong arity / type */
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[0,1,2]}}", 2, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':0}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':{'0':0,'1':1}}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':['0','1']}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[0,null]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1]}}", 1, "blk.0.w");
	/* negative, fractional */
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[-1,0]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[0.5,1.5]}}", 1, "blk.0.w");
	/* end < begin */
	bad("{'blk.0.w':{'dtype':'U8','shape':[0],'data_offsets':[4,0]}}", 4, "blk.0.w");
	bad("{'s':{'dtype':'U8','shape':[4],'data_offsets':[0,4]},"
	    "'blk.0.w':{'dtype':'U8','shape':[0],'data_offsets':[4,3]}}", 4, "blk.0.w");
	/* huge */
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[0,1e300]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[1e300,1e300]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[18446744073709551615,18446744073709551616]}}",
	    1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[1],'data_offsets':[9007199254740994,9007199254740995]}}",
	    1, "blk.0.w");
}

static void test_byte_length(void **state)
{
	(void)state;
	bad("{'blk.0.w':{'dtype':'F32','shape':[2],'data_offsets':[0,4]}}", 4, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'F32','shape':[2],'data_offsets':[0,12]}}", 12, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'BF16','shape':[3,5],'data_offsets':[0,15]}}", 15, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'U8','shape':[0],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'F64','shape':[],'data_offsets':[0,0]}}", 0, "blk.0.w");
	bad("{'a':{'dtype':'U8','shape':[2],'data_offsets':[0,2]},"
	    "'lay.bb':{'dtype':'I32','shape':[1],'data_offsets':[2,5]}}", 5, "lay.bb");
}

static void test_numel_overflow(void **state)
{
	int ovf;

	(void)state;
	/* 2^32 * 2^32 overflows u64 */
	bad("{'blk.0.w':{'dtype':'U8','shape':[4294967296,4294967296,16],'data_offsets':[0,0]}}", 0, "blk.0.w");
	/* 0 somewhere after the overflow does not save it */
	bad("{'blk.0.w':{'dtype':'U8','shape':[4294967296,4294967296,16,0],'data_offsets':[0,0]}}", 0, "blk.0.w");
	/* numel fits (2^62) but numel * 32 bits does not */
	bad("{'blk.0.w':{'dtype':'F32','shape':[2147483648,2147483648],'data_offsets':[0,0]}}", 0, "blk.0.w");
	/* bytes wrap to a small number if computed unchecked: 2^61 * 8 bytes */
	bad("{'blk.0.w':{'dtype':'F64','shape':[2147483648,1073741824],'data_offsets':[0,0]}}", 0, "blk.0.w");
	rfs_dtype_bytes(RFS_DT_F32, UINT64_MAX / 8, &ovf);
	assert_int_equal(ovf, 1);
	assert_int_equal(rfs_dtype_bytes(RFS_DT_F32, UINT64_MAX / 32, &ovf), UINT64_MAX / 32 * 4);
	assert_int_equal(ovf, 0);
	rfs_dtype_bytes(RFS_DT_F32, UINT64_MAX / 32 + 1, &ovf);
	assert_int_equal(ovf, 1);
}

static void test_subbyte(void **state)
{
	struct rfs_st_file f;
	int ovf;

	(void)state;
	/* F4: two elements per byte */
	bad("{'blk.0.w':{'dtype':'F4','shape':[3],'data_offsets':[0,2]}}", 2, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'F4','shape':[3],'data_offsets':[0,1]}}", 1, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'F4','shape':[1],'data_offsets':[0,0]}}", 0, "blk.0.w");
	good("{'blk.0.w':{'dtype':'F4','shape':[4],'data_offsets':[0,2]}}", 2, &f);
	rfs_st_release(&f);
	good("{'blk.0.w':{'dtype':'F4','shape':[2,3],'data_offsets':[0,3]}}", 3, &f);
	rfs_st_release(&f);
	bad("{'blk.0.w':{'dtype':'F4','shape':[4],'data_offsets':[0,4]}}", 4, "blk.0.w");
	/* F6: numel * 6 must be a multiple of 8 */
	good("{'blk.0.w':{'dtype':'F6_E2M3','shape':[4],'data_offsets':[0,3]}}", 3, &f);
	rfs_st_release(&f);
	good("{'blk.0.w':{'dtype':'F6_E3M2','shape':[2,8],'data_offsets':[0,12]}}", 12, &f);
	rfs_st_release(&f);
	bad("{'blk.0.w':{'dtype':'F6_E2M3','shape':[2],'data_offsets':[0,2]}}", 2, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'F6_E3M2','shape':[5],'data_offsets':[0,4]}}", 4, "blk.0.w");
	bad("{'blk.0.w':{'dtype':'F6_E3M2','shape':[6],'data_offsets':[0,5]}}", 5, "blk.0.w");

	assert_int_equal(rfs_dtype_bytes(RFS_DT_F4, 2, &ovf), 1);
	assert_int_equal(ovf, 0);
	assert_int_equal(rfs_dtype_bytes(RFS_DT_F4, 3, &ovf), 0);
	assert_int_equal(ovf, 1);
	assert_int_equal(rfs_dtype_bytes(RFS_DT_F6_E2M3, 4, &ovf), 3);
	assert_int_equal(ovf, 0);
	rfs_dtype_bytes(RFS_DT_F6_E2M3, 6, &ovf);
	assert_int_equal(ovf, 1);
	assert_int_equal(rfs_dtype_bytes(RFS_DT_F4, 0, &ovf), 0);
	assert_int_equal(ovf, 0);
}

/* --------------------------------------------------------------- layout */

static void test_holes_overlaps(void **state)
{
	(void)state;
	/* not starting at 0 */
	bad("{'blk.0.w':{'dtype':'U8','shape':[4],'data_offsets':[4,8]}}", 8, "blk.0.w");
	/* hole between tensors */
	bad("{'a':{'dtype':'U8','shape':[4],'data_offsets':[0,4]},"
	    "'lay.b':{'dtype':'U8','shape':[4],'data_offsets':[8,12]}}", 12, "lay.b");
	/* overlap */
	bad("{'a':{'dtype':'U8','shape':[8],'data_offsets':[0,8]},"
	    "'lay.b':{'dtype':'U8','shape':[8],'data_offsets':[4,12]}}", 12, "lay.b");
	/* the same bytes twice */
	bad("{'a':{'dtype':'U8','shape':[4],'data_offsets':[0,4]},"
	    "'b':{'dtype':'U8','shape':[4],'data_offsets':[0,4]}}", 4, NULL);
	/* one inside another */
	bad("{'a':{'dtype':'U8','shape':[8],'data_offsets':[0,8]},"
	    "'lay.b':{'dtype':'U8','shape':[2],'data_offsets':[2,4]}}", 8, "lay.b");
	/* a zero-size tensor inside another one, or in a hole */
	bad("{'a':{'dtype':'U8','shape':[8],'data_offsets':[0,8]},"
	    "'zero.z':{'dtype':'U8','shape':[0],'data_offsets':[3,3]}}", 8, "zero.z");
	bad("{'a':{'dtype':'U8','shape':[4],'data_offsets':[0,4]},"
	    "'zero.z':{'dtype':'U8','shape':[0],'data_offsets':[6,6]}}", 4, "zero.z");
	/* a zero-size tensor past the end */
	bad("{'a':{'dtype':'U8','shape':[4],'data_offsets':[0,4]},"
	    "'zero.z':{'dtype':'U8','shape':[0],'data_offsets':[9,9]}}", 4, "zero.z");
}

static void test_file_length(void **state)
{
	static const char *h = "{'a':{'dtype':'F32','shape':[2],'data_offsets':[0,8]},"
			       "'b':{'dtype':'U8','shape':[3],'data_offsets':[8,11]}}";
	struct rfs_st_file f;
	char *path;
	const uint64_t lens[] = { 0, 1, 10, 12, 100 };
	size_t i;

	(void)state;
	good(h, 11, &f);
	rfs_st_release(&f);
	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		bad(h, lens[i], NULL);
	/* empty tensor list with data after the header */
	bad("{}", 1, NULL);
	bad("{'__metadata__':{'a':'b'}}", 4, NULL);
	/* and through files */
	path = write_st("len-short.safetensors", h, 10);
	open_bad(path, RFS_E_FORMAT);
	free(path);
	path = write_st("len-long.safetensors", h, 12);
	open_bad(path, RFS_E_FORMAT);
	free(path);
}

static void test_metadata(void **state)
{
	struct rfs_st_file f;

	(void)state;
	/* not an object */
	bad("{'__metadata__':'pt'}", 0, "__metadata__");
	bad("{'__metadata__':[]}", 0, "__metadata__");
	bad("{'__metadata__':[['format','pt']]}", 0, "__metadata__");
	bad("{'__metadata__':1}", 0, "__metadata__");
	/* non-string values */
	bad("{'__metadata__':{'format':'pt','num_key':1}}", 0, "num_key");
	bad("{'__metadata__':{'obj_key':{}}}", 0, "obj_key");
	bad("{'__metadata__':{'arr_key':['a']}}", 0, "arr_key");
	bad("{'__metadata__':{'null_key':null}}", 0, "null_key");
	bad("{'__metadata__':{'bool_key':true}}", 0, "bool_key");
	/* with tensors */
	bad("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},'__metadata__':{'k':2}}", 1, NULL);
	/* valid: metadata anywhere, strings with escapes, empty strings */
	good("{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1]},"
	     "'__metadata__':{'format':'pt','':'','q':'\\'\\\\\\u00e9'}}", 1, &f);
	assert_true(f.has_meta);
	assert_int_equal(f.nmeta, 3);
	assert_string_equal(f.meta[0].key, "format");
	assert_string_equal(f.meta[1].key, "");
	assert_string_equal(f.meta[1].val, "");
	assert_string_equal(f.meta[2].val, "\"\\\xc3\xa9");
	assert_int_equal(f.ntensors, 1);
	rfs_st_release(&f);
}

/* ------------------------------------------------------------ header writer */

static void test_write_exact(void **state)
{
	static const uint64_t shp[] = { 2 };
	const struct rfs_st_out t[] = { { "a", RFS_DT_F32, 1, shp, 0, 8 } };
	const struct rfs_st_meta m[] = { { "format", "pt" } };
	const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
			   "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
	char *out = NULL;
	size_t len = 0, wl = strlen(want), i;

	(void)state;
	/* byte for byte what the safetensors writer produces */
	assert_int_equal(rfs_st_header_write(t, 1, m, 1, 1, &out, &len, NULL), 0);
	assert_int_equal(len % 8, 0);
	assert_true(len >= wl && len < wl + 8);
	assert_memory_equal(out, want, wl);
	for (i = wl; i < len; i++)
		assert_int_equal(out[i], ' ');
	free(out);

	/* no metadata */
	assert_int_equal(rfs_st_header_write(t, 1, NULL, 0, 0, &out, &len, NULL), 0);
	assert_int_equal(len % 8, 0);
	assert_memory_equal(out, "{\"a\":{", 6);
	free(out);

	/* empty metadata when asked for */
	assert_int_equal(rfs_st_header_write(t, 1, NULL, 0, 1, &out, &len, NULL), 0);
	assert_memory_equal(out, "{\"__metadata__\":{},\"a\":", 23);
	free(out);

	/* nothing at all */
	assert_int_equal(rfs_st_header_write(NULL, 0, NULL, 0, 0, &out, &len, NULL), 0);
	assert_int_equal(len, 8);
	assert_memory_equal(out, "{}      ", 8);
	free(out);
	assert_int_equal(rfs_st_header_write(NULL, 0, NULL, 0, 1, &out, &len, NULL), 0);
	assert_int_equal(len, 24);
	assert_memory_equal(out, "{\"__metadata__\":{}}     ", 24);
	free(out);
}

static void test_write_padding(void **state)
{
	static const uint64_t shp[] = { 1 };
	char name[32];
	size_t k;

	(void)state;
	/* every padding length 0..7 */
	for (k = 0; k < 16; k++) {
		struct rfs_st_out t = { name, RFS_DT_U8, 1, shp, 0, 1 };
		struct rfs_st_file f;
		struct rfs_err err;
		char *out;
		size_t len, end;

		memset(name, 'n', k + 1);
		name[k + 1] = 0;
		assert_int_equal(rfs_st_header_write(&t, 1, NULL, 0, 0, &out, &len, NULL), 0);
		assert_int_equal((8 + len) % 8, 0);
		end = len;
		while (end && out[end - 1] == ' ')
			end--;
		assert_true(len - end < 8);
		assert_int_equal(out[end - 1], '}');
		assert_int_equal(rfs_st_parse(NAME, out, len, 8 + len + 1, &f, &err), 0);
		assert_string_equal(f.tensors[0].name, name);
		rfs_st_release(&f);
		free(out);
	}
}

static void test_write_roundtrip(void **state)
{
	static const uint64_t s0[] = { 128256, 4096 }, s1[] = { 4096 }, s2[] = { 0 },
			      s3[] = { 3, 5, 7 }, s4[] = { 1 };
	static const char *const names[] = {
		"model.embed_tokens.weight",
		"quote\"in\"name",
		"back\\slash\\",
		"ctl\x01\x02\x1f\x7f",
		"nl\n tab\t cr\r bs\b ff\f",
		"utf8 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
		"/slash/ and '",
	};
	uint64_t off = 0;
	struct rfs_st_out t[7];
	const struct rfs_st_meta m[] = {
		{ "format", "pt" },
		{ "k\"ey", "v\\al\n\x01" },
		{ "\xe2\x82\xac", "" },
	};
	const uint64_t *shapes[] = { s0, s1, s2, s3, s4, s1, s2 };
	const unsigned ndims[] = { 2, 1, 1, 3, 1, 1, 1 };
	const enum rfs_dtype dts[] = { RFS_DT_BF16, RFS_DT_F32, RFS_DT_F16, RFS_DT_U8,
				       RFS_DT_F64, RFS_DT_F4, RFS_DT_I32 };
	struct rfs_st_file f;
	struct rfs_err err;
	char *out;
	size_t len, i;

	(void)state;
	for (i = 0; i < 7; i++) {
		uint64_t numel = 1, bytes;
		unsigned d;
		int ovf;

		for (d = 0; d < ndims[i]; d++)
			numel *= shapes[i][d];
		bytes = rfs_dtype_bytes(dts[i], numel, &ovf);
		assert_int_equal(ovf, 0);
		t[i] = (struct rfs_st_out){ names[i], dts[i], ndims[i], shapes[i], off, off + bytes };
		off += bytes;
	}
	assert_int_equal(rfs_st_header_write(t, 7, m, 3, 1, &out, &len, NULL), 0);
	assert_int_equal((8 + len) % 8, 0);
	/* metadata first */
	assert_memory_equal(out, "{\"__metadata__\":{\"format\":\"pt\",", 31);
	/* escaping as serde_json does it */
	assert_true(has(out, len, "\"quote\\\"in\\\"name\""));
	assert_true(has(out, len, "\"back\\\\slash\\\\\""));
	assert_true(has(out, len, "\"ctl\\u0001\\u0002\\u001f\x7f\""));
	assert_true(has(out, len, "\"nl\\n tab\\t cr\\r bs\\b ff\\f\""));
	assert_true(has(out, len, "\"utf8 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""));
	assert_true(has(out, len, "\"k\\\"ey\":\"v\\\\al\\n\\u0001\""));
	/* parses back into the same tensors, in the same order */
	if (rfs_st_parse(NAME, out, len, 8 + len + off, &f, &err))
		fail_msg("written header does not parse: %s\n%.*s", err.msg, (int)len, out);
	assert_int_equal(f.ntensors, 7);
	for (i = 0; i < 7; i++) {
		const struct rfs_st_tensor *p = &f.tensors[i];
		unsigned d;

		assert_string_equal(p->name, names[i]);
		assert_int_equal(p->dtype, dts[i]);
		assert_int_equal(p->ndim, ndims[i]);
		for (d = 0; d < ndims[i]; d++)
			assert_int_equal(p->shape[d], shapes[i][d]);
		assert_int_equal(p->begin, t[i].begin);
		assert_int_equal(p->end, t[i].end);
	}
	assert_true(f.has_meta);
	assert_int_equal(f.nmeta, 3);
	for (i = 0; i < 3; i++) {
		assert_string_equal(f.meta[i].key, m[i].key);
		assert_string_equal(f.meta[i].val, m[i].val);
	}
	rfs_st_release(&f);
	free(out);
}

/* Round trip through a real file, with the writer's dtype/name order. */
static void test_write_file_roundtrip(void **state)
{
	static const uint64_t s0[] = { 3 }, s1[] = { 2, 2 };
	const struct rfs_st_out t[] = {
		{ "b", RFS_DT_F32, 1, s0, 0, 12 },
		{ "a", RFS_DT_BF16, 2, s1, 12, 20 },
	};
	struct rfs_st_file *f;
	struct rfs_err err;
	char *out, *path;
	size_t len;

	(void)state;
	assert_int_equal(rfs_st_header_write(t, 2, NULL, 0, 0, &out, &len, NULL), 0);
	path = write_file("written.safetensors", len, out, len, 8 + len + 20);
	if (rfs_st_open(path, &f, &err))
		fail_msg("%s", err.msg);
	assert_int_equal(f->ntensors, 2);
	assert_string_equal(f->tensors[0].name, "b");
	assert_string_equal(f->tensors[1].name, "a");
	assert_int_equal(f->data_off % 8, 0);
	assert_false(f->has_meta);
	rfs_st_close(f);
	free(path);
	free(out);
}

static void test_dtype_helpers(void **state)
{
	(void)state;
	assert_int_equal(rfs_dtype_align(RFS_DT_F32), 4);
	assert_int_equal(rfs_dtype_align(RFS_DT_BF16), 2);
	assert_int_equal(rfs_dtype_align(RFS_DT_F64), 8);
	assert_int_equal(rfs_dtype_align(RFS_DT_U8), 1);
	assert_int_equal(rfs_dtype_align(RFS_DT_F4), 1);
	assert_int_equal(rfs_dtype_align(RFS_DT_F6_E2M3), 1);
	assert_int_equal(rfs_dtype_parse_user("bf16"), RFS_DT_BF16);
	assert_int_equal(rfs_dtype_parse_user("BF16"), RFS_DT_BF16);
	assert_int_equal(rfs_dtype_parse_user("bfloat16"), RFS_DT_BF16);
	assert_int_equal(rfs_dtype_parse_user("fp16"), RFS_DT_F16);
	assert_int_equal(rfs_dtype_parse_user("f16"), RFS_DT_F16);
	assert_int_equal(rfs_dtype_parse_user("float16"), RFS_DT_F16);
	assert_int_equal(rfs_dtype_parse_user("half"), RFS_DT_F16);
	assert_int_equal(rfs_dtype_parse_user("fp32"), RFS_DT_F32);
	assert_int_equal(rfs_dtype_parse_user("f32"), RFS_DT_F32);
	assert_int_equal(rfs_dtype_parse_user("float32"), RFS_DT_F32);
	assert_int_equal(rfs_dtype_parse_user("float"), RFS_DT_F32);
	assert_int_equal(rfs_dtype_parse_user("int8"), -1);
	assert_int_equal(rfs_dtype_parse_user(""), -1);
	assert_string_equal(rfs_dtype_torch_name(RFS_DT_BF16), "bfloat16");
	assert_string_equal(rfs_dtype_torch_name(RFS_DT_F16), "float16");
	assert_string_equal(rfs_dtype_torch_name(RFS_DT_F32), "float32");
	assert_null(rfs_dtype_torch_name(RFS_DT_I64));
	assert_int_equal(rfs_dtype_kdt(RFS_DT_F32), 0);  /* RFS_KDT_F32 */
	assert_int_equal(rfs_dtype_kdt(RFS_DT_BF16), 1); /* RFS_KDT_BF16 */
	assert_int_equal(rfs_dtype_kdt(RFS_DT_F16), 2);  /* RFS_KDT_F16 */
	assert_int_equal(rfs_dtype_kdt(RFS_DT_F64), -1);
	assert_int_equal(rfs_dtype_kdt(RFS_DT_U8), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_basic),
		cmocka_unit_test(test_valid_empty),
		cmocka_unit_test(test_valid_zero_size),
		cmocka_unit_test(test_valid_padding),
		cmocka_unit_test(test_valid_all_dtypes),
		cmocka_unit_test(test_valid_huge_offsets),
		cmocka_unit_test(test_header_too_long),
		cmocka_unit_test(test_header_beyond_file),
		cmocka_unit_test(test_short_file),
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_open_rules),
		cmocka_unit_test(test_not_utf8),
		cmocka_unit_test(test_not_object),
		cmocka_unit_test(test_trailing_garbage),
		cmocka_unit_test(test_duplicate_key),
		cmocka_unit_test(test_json_raw_control),
		cmocka_unit_test(test_json_escaped_nul),
		cmocka_unit_test(test_json_surrogates),
		cmocka_unit_test(test_entry_not_object),
		cmocka_unit_test(test_dtype),
		cmocka_unit_test(test_shape),
		cmocka_unit_test(test_above_2p53),
		cmocka_unit_test(test_integer_spelling),
		cmocka_unit_test(test_offsets),
		cmocka_unit_test(test_byte_length),
		cmocka_unit_test(test_numel_overflow),
		cmocka_unit_test(test_subbyte),
		cmocka_unit_test(test_holes_overlaps),
		cmocka_unit_test(test_file_length),
		cmocka_unit_test(test_metadata),
		cmocka_unit_test(test_write_exact),
		cmocka_unit_test(test_write_padding),
		cmocka_unit_test(test_write_roundtrip),
		cmocka_unit_test(test_write_file_roundtrip),
		cmocka_unit_test(test_dtype_helpers),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
