#include "strmap.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

/* Keys come from untrusted files (tensor names, tokens): the hash is seeded
 * with a secret of the process, so no input can be made to pile its keys
 * into one run of slots (linear probing would then take quadratic time). */
static uint64_t seed;
static pthread_once_t seed_once = PTHREAD_ONCE_INIT;

static void seed_init(void)
{
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		seed = XXH3_64bits_withSeed(&ts, sizeof(ts), (uint64_t)getpid() ^ (uint64_t)(uintptr_t)&ts);
	}
}

static size_t slot_of(const struct rfs_strmap *m, const char *key)
{
	return (size_t)XXH3_64bits_withSeed(key, strlen(key), seed) & (m->cap - 1);
}

static int grow(struct rfs_strmap *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 64;
	const char **keys = calloc(ncap, sizeof(*keys));
	void **vals = calloc(ncap, sizeof(*vals));
	struct rfs_strmap n = { .cap = ncap, .count = m->count, .keys = keys, .vals = vals };
	size_t i;

	if (!keys || !vals) {
		free(keys);
		free(vals);
		return -1;
	}
	for (i = 0; i < m->cap; i++) {
		size_t s;

		if (!m->keys[i])
			continue;
		s = slot_of(&n, m->keys[i]);
		while (keys[s])
			s = (s + 1) & (ncap - 1);
		keys[s] = m->keys[i];
		vals[s] = m->vals[i];
	}
	free(m->keys);
	free(m->vals);
	*m = n;
	return 0;
}

enum rfs_put rfs_strmap_put(struct rfs_strmap *m, const char *key, void *val)
{
	size_t s;

	pthread_once(&seed_once, seed_init); /* before any key is placed */
	if ((m->count + 1) * 2 > m->cap && grow(m))
		return RFS_PUT_NOMEM;
	s = slot_of(m, key);
	while (m->keys[s]) {
		if (!strcmp(m->keys[s], key))
			return RFS_PUT_EXISTS;
		s = (s + 1) & (m->cap - 1);
	}
	m->keys[s] = key;
	m->vals[s] = val;
	m->count++;
	return RFS_PUT_NEW;
}

void *rfs_strmap_get(const struct rfs_strmap *m, const char *key)
{
	size_t s;

	if (!m->cap)
		return NULL;
	s = slot_of(m, key);
	while (m->keys[s]) {
		if (!strcmp(m->keys[s], key))
			return m->vals[s];
		s = (s + 1) & (m->cap - 1);
	}
	return NULL;
}

void rfs_strmap_release(struct rfs_strmap *m)
{
	if (!m)
		return;
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}
