/*
 * libFuzzer target for the Hub's revision answer as residfs reads it
 * (core/hub.c, rfs_hub_parse_revision): the JSON a server sends for
 * GET /api/models/REPO/revision/REV?blobs=true, ending right before an
 * inaccessible page (fuzz.h).
 *
 * Checks, beyond "no crash, no leak, no undefined behaviour":
 *   - on failure: RFS_E_FORMAT or RFS_E_NOMEM with a message;
 *   - on success: the commit is 40 lower-case hex digits; every file kept
 *     has a plain top-level name (no '/', no control byte, no leading '.',
 *     at most 255 bytes), no name twice, a size below 2^53, and an
 *     identity "sha256:" + 64 characters or "git:" + 40 hex digits;
 *   - the same text read by cJSON itself: every file kept is a sibling
 *     whose rfilename is that name and whose size is that size.
 *
 * By hand (from the repository root): tests/fuzz/build.sh (it lists the
 * sources every target links), then
 *   build-fuzz/fuzz_hub -max_total_time=300 -dict=tests/fuzz/json.dict \
 *     "$(mktemp -d)" tests/fuzz/corpus/fuzz_hub
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tdir.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	cJSON *doc;    /* cJSON's own reading of the text */
	char **names;
	size_t n;
};

static int plain_name(const char *n)
{
	size_t i, len = strlen(n);

	if (!len || len > 255 || n[0] == '.')
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)n[i] < 0x20 || n[i] == '/' || n[i] == 0x7f)
			return 0;
	return 1;
}

static int hex_n(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return 0;
	return s[n] == 0;
}

static void each(const char *name, uint64_t size, const char *identity, void *ctx)
{
	struct seen *s = ctx;
	cJSON *sib = cJSON_GetObjectItemCaseSensitive(s->doc, "siblings"), *e;
	size_t i;
	int found = 0;

	CHECK(plain_name(name), "kept a file named '%s'", name);
	CHECK(size < (1ull << 53), "'%s': size %llu", name, (unsigned long long)size);
	CHECK((!strncmp(identity, "sha256:", 7) && strlen(identity) == 71) ||
	      (!strncmp(identity, "git:", 4) && hex_n(identity + 4, 40)),
	      "'%s': identity '%s'", name, identity);
	for (i = 0; i < s->n; i++)
		CHECK(strcmp(s->names[i], name), "'%s' kept twice", name);
	s->names = realloc(s->names, (s->n + 1) * sizeof(*s->names));
	if (!s->names || !(s->names[s->n] = strdup(name)))
		abort();
	s->n++;
	cJSON_ArrayForEach(e, sib) {
		cJSON *rn = cJSON_GetObjectItemCaseSensitive(e, "rfilename");
		cJSON *sz = cJSON_GetObjectItemCaseSensitive(e, "size");

		if (cJSON_IsString(rn) && !strcmp(rn->valuestring, name) && cJSON_IsNumber(sz) &&
		    sz->valuedouble == (double)size)
			found = 1;
	}
	CHECK(found, "'%s' (%llu bytes) is no sibling cJSON finds", name, (unsigned long long)size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = rfs_fuzz_guarded(data, size);
	struct seen s = { 0 };
	struct rfs_err err = { 0 };
	char commit[41] = "";
	size_t i;
	int r;

	if (!text)
		return 0;
	s.doc = cJSON_ParseWithLength(text, size);
	r = rfs_hub_parse_revision(text, size, commit, each, &s, &err);
	if (r) {
		CHECK(r == RFS_E_FORMAT || r == RFS_E_NOMEM, "code %d", r);
		CHECK(err.code == r && err.msg[0], "code %d without a message", r);
	} else {
		CHECK(strlen(commit) == 40 && hex_n(commit, 40), "commit '%s'", commit);
		for (i = 0; i < 40; i++)
			CHECK(!isupper((unsigned char)commit[i]), "commit '%s'", commit);
	}
	for (i = 0; i < s.n; i++)
		free(s.names[i]);
	free(s.names);
	cJSON_Delete(s.doc);
	return 0;
}
