/*
 * libFuzzer target for an S3 ListObjectsV2 page as residfs reads it
 * (core/s3.c, rfs_s3_parse_listing): the XML a server sends, ending right
 * before an inaccessible page (fuzz.h).  Byte 0 picks the prefix the
 * listing is read for ("", "base/" or "a b+c/").
 *
 * Checks, beyond "no crash, no leak, no undefined behaviour":
 *   - on failure: RFS_E_FORMAT or RFS_E_NOMEM with a message;
 *   - on success: every object kept is a plain top-level name (no '/',
 *     no control byte, not starting with '.'), no name twice, a size below
 *     2^53, a non-empty ETag; the continuation token, when there is one,
 *     is NUL-terminated within its buffer.
 *
 * By hand (from the repository root): tests/fuzz/build.sh (it lists the
 * sources every target links), then
 *   build-fuzz/fuzz_s3list -max_total_time=300 "$(mktemp -d)" tests/fuzz/corpus/fuzz_s3list
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tdir.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	char **names;
	size_t n;
};

static void each(const char *name, uint64_t size, const char *etag, void *ctx)
{
	struct seen *s = ctx;
	size_t i;

	CHECK(name[0] && name[0] != '.', "kept '%s'", name);
	for (i = 0; name[i]; i++)
		CHECK(name[i] != '/' && (unsigned char)name[i] >= 0x20 && name[i] != 0x7f,
		      "kept '%s'", name);
	CHECK(size < (1ull << 53), "'%s': size %llu", name, (unsigned long long)size);
	CHECK(etag && etag[0], "'%s' without an ETag", name);
	for (i = 0; i < s->n; i++)
		CHECK(strcmp(s->names[i], name), "'%s' kept twice", name);
	s->names = realloc(s->names, (s->n + 1) * sizeof(*s->names));
	if (!s->names || !(s->names[s->n] = strdup(name)))
		abort();
	s->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const prefixes[] = { "", "base/", "a b+c/" };
	struct seen s = { 0 };
	struct rfs_err err = { 0 };
	char next[2048];
	const char *text;
	size_t i;
	int r;

	if (!size)
		return 0;
	text = rfs_fuzz_guarded(data + 1, size - 1);
	if (!text)
		return 0;
	memset(next, 'x', sizeof(next));
	r = rfs_s3_parse_listing(text, size - 1, prefixes[data[0] % 3], each, &s, next, sizeof(next), &err);
	if (r) {
		CHECK(r == RFS_E_FORMAT || r == RFS_E_NOMEM, "code %d", r);
		CHECK(err.code == r && err.msg[0], "code %d without a message", r);
	} else {
		CHECK(memchr(next, 0, sizeof(next)) != NULL, "continuation token not terminated");
	}
	for (i = 0; i < s.n; i++)
		free(s.names[i]);
	free(s.names);
	return 0;
}
