/*
 * fuzz.h - shared by the fuzz targets:
 *
 * CHECK(cond, fmt, ...): an invariant; when it fails, the target prints
 * what and where and aborts (libFuzzer then saves the input).
 *
 * rfs_fuzz_skip("tag"): 1 when RFS_FUZZ_SKIP (a list of tags separated by
 * spaces or commas) names the tag.  Each check of a known, reported and not
 * yet fixed bug has a tag (docs/testing.md lists them), so that a long run
 * can look past it for other bugs; CI sets none.
 *
 * rfs_fuzz_guarded(data, size): copies an input so that it ends right
 * before an inaccessible page.  Code built with AddressSanitizer reports an
 * out-of-bounds read by itself, but libcjson is the system's shared library,
 * built without it: a read past the end of the text from inside cJSON
 * faults on the guard page instead of going unnoticed.
 */
#ifndef RFS_FUZZ_H
#define RFS_FUZZ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "%s:%d: check failed: %s\n   ", __FILE__, \
				__LINE__, #cond);                               \
			fprintf(stderr, __VA_ARGS__);                           \
			fputc('\n', stderr);                                    \
			abort();                                                \
		}                                                               \
	} while (0)

static inline int rfs_fuzz_skip(const char *tag)
{
	const char *v = getenv("RFS_FUZZ_SKIP"), *p;
	size_t n = strlen(tag);

	for (p = v; p && (p = strstr(p, tag)); p += n)
		if ((p == v || strchr(" ,", p[-1])) && (!p[n] || strchr(" ,", p[n])))
			return 1;
	return 0;
}

#define RFS_FUZZ_GUARD_MAX (4u << 20) /* longer inputs are not guarded */

/* Returns a copy of @data ending at a PROT_NONE page, or NULL
 * when @size is over RFS_FUZZ_GUARD_MAX.  Valid until the next call. */
static inline const char *rfs_fuzz_guarded(const void *data, size_t size)
{
	static char *region;
	static size_t span;
	char *at;

	if (size > RFS_FUZZ_GUARD_MAX)
		return NULL;
	if (!region) {
		size_t page = (size_t)sysconf(_SC_PAGESIZE);

		span = (RFS_FUZZ_GUARD_MAX + page - 1) / page * page;
		region = mmap(NULL, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			      -1, 0);
		if (region == MAP_FAILED || mprotect(region + span, page, PROT_NONE))
			abort();
	}
	at = region + span - size;
	if (size)
		memcpy(at, data, size);
	return at;
}

#endif /* RFS_FUZZ_H */
