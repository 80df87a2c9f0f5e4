/*
 * fuzz_json.h - what the JSON fuzz targets (fuzz_config, fuzz_index) share
 * to compare residfs's reading of a text with cJSON's.
 */
#ifndef RFS_FUZZ_JSON_H
#define RFS_FUZZ_JSON_H

#include <cjson/cJSON.h>
#include <string.h>

/* How many members of object @o are named @key (a JSON reader such as
 * Python's json keeps the last of duplicates, cJSON the first). */
static inline int count_key(const cJSON *o, const char *key)
{
	const cJSON *e;
	int n = 0;

	cJSON_ArrayForEach(e, o)
		n += e->string && !strcmp(e->string, key);
	return n;
}

/* Does the JSON text [@b, @e) of @text hold the value @want?  Compared as
 * cJSON prints both (cJSON_Compare finds inf unequal to itself). */
static inline int same_value(const char *text, size_t b, size_t e, const cJSON *want)
{
	cJSON *got = e > b ? cJSON_ParseWithLength(text + b, e - b) : NULL;
	char *x = got ? cJSON_PrintUnformatted(got) : NULL;
	char *y = cJSON_PrintUnformatted(want);
	int same = x && y && !strcmp(x, y);

	cJSON_free(x);
	cJSON_free(y);
	cJSON_Delete(got);
	return same;
}

#endif
