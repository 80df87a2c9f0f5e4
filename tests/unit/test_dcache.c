/*
 * test_dcache.c - the disk block cache (core/dcache.h): round trips of
 * full and short blocks, requests that name another block (a miss), every
 * kind of damage to a block file (a flipped payload or header byte, a
 * truncated or extended file, another block's file under its name, a
 * link, a directory, a FIFO: each a miss counted as corrupt, the file gone
 * after), a fan-out directory replaced by a link (never followed),
 * eviction under max_bytes least recently used first, the free-space rule,
 * a write that fails, reopening (the blocks, their bytes and their LRU
 * order from mtimes; touched on hits at most once a minute; stale
 * temporary files removed, foreign files left alone), the disabled cache,
 * refused configurations, and 8 threads on two caches sharing a directory
 * putting and getting overlapping blocks while evicting, never reading
 * wrong bytes.
 *
 * Every payload byte follows from (key, block, offset), so any byte read
 * back is checked.  Each test works in its own mkdtemp directory under
 * /tmp, removed after it.
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

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/dcache.h"

#define BS 4096u                          /* the tests' block size */
#define HS RFS_DCACHE_HDR_SIZE
#define FULL ((uint64_t)HS + BS)          /* file bytes of a full block */
#define SHORT 1000u                       /* a short last block */

static char tmp[64];   /* this test's directory */
static char cdir[128]; /* the cache's directory below it (made by open) */

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static int mk_tmp(void **state)
{
	strcpy(tmp, "/tmp/residfs-test-dcache-XXXXXX");
	if (!mkdtemp(tmp))
		return -1;
	snprintf(cdir, sizeof(cdir), "%s/a/cache", tmp);
	return 0;
}

static int rm_tmp(void **state)
{
	return nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct rfs_dcache *dc_open(uint64_t max, unsigned min_free)
{
	struct rfs_dcache_conf conf = {
		.dir = cdir, .max_bytes = max, .min_free_pct = min_free, .block_size = BS,
	};
	struct rfs_dcache *dc = NULL;
	struct rfs_err err = { 0 };

	if (rfs_dcache_open(&conf, &dc, &err))
		fail_msg("open: %s", err.msg);
	return dc;
}

static struct rfs_dcache_key key_n(unsigned n)
{
	char id[80];

	snprintf(id, sizeof(id), "sha256:%064x", n);
	return rfs_dcache_key_of(id, strlen(id));
}

static void payload(unsigned char *p, const struct rfs_dcache_key *k, uint64_t block, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		uint64_t x = k->lo ^ (block * BS + i) * 0x9E3779B97F4A7C15ull;

		x *= 0xBF58476D1CE4E5B9ull;
		p[i] = (unsigned char)(x >> 56 ^ x >> 17);
	}
}

static void put(struct rfs_dcache *dc, unsigned n, uint64_t block, size_t len)
{
	struct rfs_dcache_key k = key_n(n);
	unsigned char buf[BS];

	payload(buf, &k, block, len);
	rfs_dcache_put(dc, &k, block, buf, len);
}

/* rfs_dcache_get of block @block of key @n; a hit must hold its bytes. */
static int get(struct rfs_dcache *dc, unsigned n, uint64_t block, size_t len)
{
	struct rfs_dcache_key k = key_n(n);
	unsigned char buf[BS + 64], want[BS + 64];
	int r;

	memset(buf, 0xee, sizeof(buf));
	r = rfs_dcache_get(dc, &k, block, buf, len);
	if (r == 1) {
		payload(want, &k, block, len);
		assert_memory_equal(buf, want, len);
	} else {
		assert_int_equal(r, 0);
	}
	return r;
}

/* The documented path of a block: DIR/v1/<first byte>/<hi><lo>-<block>. */
static char *path_of(unsigned n, uint64_t block)
{
	static char p[256];
	struct rfs_dcache_key k = key_n(n);

	snprintf(p, sizeof(p), "%s/v1/%02x/%016" PRIx64 "%016" PRIx64 "-%016" PRIx64, cdir,
		 (unsigned)(k.hi >> 56), k.hi, k.lo, block);
	return p;
}

static char *fan_of(unsigned n)
{
	static char p[256];

	snprintf(p, sizeof(p), "%s/v1/%02x", cdir, (unsigned)(key_n(n).hi >> 56));
	return p;
}

static int exists(const char *p)
{
	struct stat st;

	return !lstat(p, &st);
}

static struct rfs_dcache_stats stats(struct rfs_dcache *dc)
{
	struct rfs_dcache_stats s;

	rfs_dcache_stats(dc, &s);
	return s;
}

static void stats_str(const struct rfs_dcache_stats *s, char *buf, size_t len)
{
	snprintf(buf, len, "hits %" PRIu64 ", misses %" PRIu64 ", corrupt %" PRIu64
		 ", writes %" PRIu64 ", write errors %" PRIu64 ", evictions %" PRIu64
		 ", bytes %" PRIu64 ", blocks %" PRIu64, s->hits, s->misses, s->corrupt, s->writes,
		 s->write_errors, s->evictions, s->bytes, s->blocks);
}

/* Every counter of @dc is @want's (the fields not named are 0). */
static void check_stats(struct rfs_dcache *dc, struct rfs_dcache_stats want)
{
	struct rfs_dcache_stats s = stats(dc);
	char have[256], exp[256];

	if (memcmp(&s, &want, sizeof(s))) {
		stats_str(&s, have, sizeof(have));
		stats_str(&want, exp, sizeof(exp));
		fail_msg("stats: %s; expected %s", have, exp);
	}
}
#define expect_stats(dc, ...) check_stats(dc, (struct rfs_dcache_stats){ __VA_ARGS__ })

static void set_mtime(const char *p, time_t when)
{
	struct timespec ts[2] = { { when, 0 }, { when, 0 } };

	assert_int_equal(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static time_t mtime_of(const char *p)
{
	struct stat st;

	assert_int_equal(lstat(p, &st), 0);
	return st.st_mtim.tv_sec;
}

static void copy_file(const char *from, const char *to)
{
	char buf[FULL];
	int a = open(from, O_RDONLY), b;
	ssize_t n;

	assert_true(a >= 0);
	n = read(a, buf, sizeof(buf));
	assert_true(n > 0);
	close(a);
	b = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(b >= 0);
	assert_int_equal(write(b, buf, (size_t)n), n);
	close(b);
}

/* Overwrites the byte at @off of file @p with its complement. */
static void flip(const char *p, off_t off)
{
	unsigned char c;
	int fd = open(p, O_RDWR);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c = (unsigned char)~c;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

/* Temporary files in the fan-out directory of key @n. */
static unsigned count_tmp(unsigned n)
{
	DIR *d = opendir(fan_of(n));
	struct dirent *e;
	unsigned c = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		c += strstr(e->d_name, ".tmp.") != NULL;
	closedir(d);
	return c;
}

/* ------------------------------------------------------------------ tests */

static void test_round_trip(void **state)
{
	struct rfs_dcache *dc = dc_open(1 << 20, 1);
	struct rfs_dcache_key a = key_n(1), b = key_n(1), c = key_n(2);
	char hdr[8];
	int fd;

	(void)state;
	assert_true(a.hi == b.hi && a.lo == b.lo);
	assert_false(a.hi == c.hi && a.lo == c.lo);
	assert_int_equal(get(dc, 1, 0, BS), 0);
	put(dc, 1, 0, BS);
	put(dc, 1, 1, SHORT);
	put(dc, 1, 2, 0);
	assert_int_equal(get(dc, 1, 0, BS), 1);
	assert_int_equal(get(dc, 1, 1, SHORT), 1);
	assert_int_equal(get(dc, 1, 2, 0), 1);
	assert_int_equal(get(dc, 1, 0, BS), 1);
	expect_stats(dc, .hits = 4, .misses = 1, .writes = 3, .blocks = 3,
		     .bytes = FULL + HS + SHORT + HS);
	/* the documented layout and magic */
	fd = open(path_of(1, 1), O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, hdr, 8), 8);
	assert_memory_equal(hdr, "rfsdcblk", 8);
	assert_int_equal(lseek(fd, 0, SEEK_END), HS + SHORT);
	close(fd);
	/* a second put of a stored block writes nothing */
	put(dc, 1, 0, BS);
	assert_int_equal(stats(dc).writes, 3);
	rfs_dcache_close(dc);
	rfs_dcache_close(NULL);
}

static void test_other_block(void **state)
{
	struct rfs_dcache *dc = dc_open(1 << 20, 1);
	struct rfs_dcache_key k = key_n(3);
	static unsigned char big[BS + 1];

	(void)state;
	put(dc, 1, 0, BS);
	assert_int_equal(get(dc, 1, 1, BS), 0);     /* another index */
	assert_int_equal(get(dc, 2, 0, BS), 0);     /* another key */
	assert_int_equal(get(dc, 1, 0, BS + 1), 0); /* longer than a block */
	assert_int_equal(stats(dc).corrupt, 0);
	assert_int_equal(get(dc, 1, 0, BS), 1);
	/* a stored block of another length fails its check: deleted */
	assert_int_equal(get(dc, 1, 0, BS - 1), 0);
	assert_false(exists(path_of(1, 0)));
	/* a put longer than the block size is not stored */
	rfs_dcache_put(dc, &k, 0, big, sizeof(big));
	expect_stats(dc, .hits = 1, .misses = 4, .corrupt = 1, .writes = 1);
	rfs_dcache_close(dc);
}

enum damage {
	D_PAYLOAD, D_HEADER_MAGIC, D_HEADER_INDEX, D_HEADER_SUM, D_TRUNCATE, D_TRUNCATE_HDR,
	D_EXTEND, D_EMPTY, D_OTHER_BLOCK, D_SYMLINK, D_DIRECTORY, D_FIFO, D_COUNT,
};

static const char *const damage_name[D_COUNT] = {
	"payload byte", "magic", "block index", "header checksum", "truncated", "truncated header",
	"extended", "empty", "another block's file", "symlink", "directory", "fifo",
};

static void damage(enum damage d, const char *p, const char *spare)
{
	int fd;

	switch (d) {
	case D_PAYLOAD: flip(p, HS + 100); break;
	case D_HEADER_MAGIC: flip(p, 0); break;
	case D_HEADER_INDEX: flip(p, 32); break;
	case D_HEADER_SUM: flip(p, 57); break;
	case D_TRUNCATE: assert_int_equal(truncate(p, FULL - 1), 0); break;
	case D_TRUNCATE_HDR: assert_int_equal(truncate(p, 10), 0); break;
	case D_EMPTY: assert_int_equal(truncate(p, 0), 0); break;
	case D_EXTEND:
		fd = open(p, O_WRONLY | O_APPEND);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, "x", 1), 1);
		close(fd);
		break;
	case D_OTHER_BLOCK: /* block 7's file, well formed, under this name */
		assert_int_equal(rename(spare, p), 0);
		break;
	case D_SYMLINK: /* to a good copy of the very block: still not followed */
		copy_file(p, spare);
		assert_int_equal(unlink(p), 0);
		assert_int_equal(symlink(spare, p), 0);
		break;
	case D_DIRECTORY:
		assert_int_equal(unlink(p), 0);
		assert_int_equal(mkdir(p, 0700), 0);
		break;
	case D_FIFO:
		assert_int_equal(unlink(p), 0);
		assert_int_equal(mkfifo(p, 0600), 0);
		break;
	case D_COUNT: break;
	}
}

static void test_damage(void **state)
{
	struct rfs_dcache *dc = dc_open(1 << 20, 1);
	char spare[256];
	unsigned d;

	(void)state;
	snprintf(spare, sizeof(spare), "%s/spare", tmp);
	for (d = 0; d < D_COUNT; d++) {
		uint64_t corrupt = stats(dc).corrupt;
		const char *p;

		print_message("damage: %s\n", damage_name[d]);
		put(dc, 1, 0, BS);
		assert_int_equal(get(dc, 1, 0, BS), 1);
		if (d == D_OTHER_BLOCK) {
			put(dc, 1, 7, BS);
			strcpy(spare, path_of(1, 7));
		}
		p = path_of(1, 0);
		damage((enum damage)d, p, spare);
		assert_int_equal(get(dc, 1, 0, BS), 0);
		assert_int_equal(stats(dc).corrupt, corrupt + 1);
		assert_false(exists(p));
		if (d == D_SYMLINK) { /* the link went, not what it pointed to */
			assert_true(exists(spare));
			unlink(spare);
		}
		if (d == D_OTHER_BLOCK) { /* block 7 is gone (renamed): a plain miss */
			assert_int_equal(get(dc, 1, 7, BS), 0);
			assert_int_equal(stats(dc).corrupt, corrupt + 1);
			snprintf(spare, sizeof(spare), "%s/spare", tmp);
		}
		/* the index forgot it: a new put stores it again */
		put(dc, 1, 0, BS);
		assert_int_equal(get(dc, 1, 0, BS), 1);
		/* the next round damages a fresh copy */
		assert_int_equal(unlink(p), 0);
		assert_int_equal(get(dc, 1, 0, BS), 0);
	}
	assert_int_equal(stats(dc).corrupt, D_COUNT);
	assert_int_equal(stats(dc).bytes, 0);
	rfs_dcache_close(dc);
}

static void test_fanout_link(void **state)
{
	struct rfs_dcache *dc = dc_open(1 << 20, 1);
	char away[256], moved[512];

	(void)state;
	put(dc, 1, 0, BS);
	snprintf(away, sizeof(away), "%s/away", tmp);
	assert_int_equal(rename(fan_of(1), away), 0);
	assert_int_equal(symlink(away, fan_of(1)), 0);
	snprintf(moved, sizeof(moved), "%s/%s", away, strrchr(path_of(1, 0), '/') + 1);
	assert_true(exists(moved));
	assert_int_equal(get(dc, 1, 0, BS), 0); /* not followed */
	put(dc, 1, 1, BS);                       /* nor written through */
	expect_stats(dc, .misses = 1, .writes = 1, .write_errors = 1);
	assert_true(exists(moved));
	rfs_dcache_close(dc);
	/* open removes a link where a fan-out directory belongs */
	dc = dc_open(1 << 20, 1);
	assert_false(exists(fan_of(1)));
	assert_true(exists(moved));
	put(dc, 1, 1, BS);
	assert_int_equal(get(dc, 1, 1, BS), 1);
	rfs_dcache_close(dc);
}

static void test_eviction_lru(void **state)
{
	struct rfs_dcache *dc = dc_open(3 * FULL, 1);
	struct rfs_dcache_stats s;
	unsigned i;

	(void)state;
	put(dc, 0, 0, BS);
	put(dc, 1, 0, BS);
	put(dc, 2, 0, BS);
	assert_int_equal(stats(dc).bytes, 3 * FULL);
	assert_int_equal(get(dc, 0, 0, BS), 1); /* 0 is now the most recent */
	put(dc, 3, 0, BS);                      /* evicts 1, the oldest */
	expect_stats(dc, .hits = 1, .writes = 4, .evictions = 1, .bytes = 3 * FULL, .blocks = 3);
	assert_false(exists(path_of(1, 0)));
	assert_int_equal(get(dc, 0, 0, BS), 1);
	assert_int_equal(get(dc, 2, 0, BS), 1);
	assert_int_equal(get(dc, 3, 0, BS), 1);
	assert_int_equal(get(dc, 1, 0, BS), 0);
	/* short blocks free exactly their bytes; never above max_bytes */
	for (i = 10; i < 40; i++) {
		put(dc, i, 0, i % 3 ? BS : SHORT);
		assert_true(stats(dc).bytes <= 3 * FULL);
		assert_int_equal(get(dc, i, 0, i % 3 ? BS : SHORT), 1);
	}
	/* the three newest survive */
	assert_int_equal(get(dc, 39, 0, SHORT), 1);
	assert_int_equal(get(dc, 38, 0, BS), 1);
	assert_int_equal(get(dc, 37, 0, BS), 1);
	assert_int_equal(get(dc, 35, 0, BS), 0); /* 36 may fit beside them, 35 not */
	assert_int_equal(stats(dc).corrupt, 0);
	rfs_dcache_close(dc);
	/* a block larger than the whole cache is not stored, nor makes room */
	dc = dc_open(FULL - 1, 1);
	s = stats(dc);
	assert_true(s.blocks >= 3);
	put(dc, 50, 0, BS);
	expect_stats(dc, .write_errors = 1, .bytes = s.bytes, .blocks = s.blocks);
	rfs_dcache_close(dc);
}

static void test_reopen(void **state)
{
	struct rfs_dcache *dc = dc_open(5 * FULL, 1);
	struct rfs_dcache_stats s;
	char stale[320], fresh[320], foreign[320], wrongfan[320];
	time_t now = time(NULL);
	unsigned i;
	int fd;

	(void)state;
	for (i = 0; i < 4; i++)
		put(dc, i, 0, BS);
	put(dc, 4, 0, SHORT);
	s = stats(dc);
	rfs_dcache_close(dc);
	/* last uses: block 2 the oldest, then 0, 1, 3, 4 */
	set_mtime(path_of(2, 0), now - 5000);
	set_mtime(path_of(0, 0), now - 4000);
	set_mtime(path_of(1, 0), now - 3000);
	set_mtime(path_of(3, 0), now - 2000);
	set_mtime(path_of(4, 0), now - 30);
	/* a crashed writer's temporary file, a live one, a foreign file */
	snprintf(stale, sizeof(stale), "%s.tmp.1.1", path_of(0, 0));
	snprintf(fresh, sizeof(fresh), "%s.tmp.1.2", path_of(0, 0));
	snprintf(foreign, sizeof(foreign), "%s/notes", fan_of(0));
	for (i = 0; i < 3; i++) {
		const char *p = i == 0 ? stale : i == 1 ? fresh : foreign;

		fd = open(p, O_WRONLY | O_CREAT, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, "junk", 4), 4);
		close(fd);
	}
	set_mtime(stale, now - 7200);
	/* a well-formed block name in the wrong fan-out directory */
	snprintf(wrongfan, sizeof(wrongfan), "%s/v1/%02x", cdir,
		 (unsigned)((key_n(0).hi >> 56) ^ 1));
	mkdir(wrongfan, 0700);
	strcat(wrongfan, strrchr(path_of(0, 0), '/'));
	copy_file(path_of(0, 0), wrongfan);

	dc = dc_open(5 * FULL, 1);
	assert_int_equal(stats(dc).bytes, s.bytes);
	assert_int_equal(stats(dc).blocks, 5);
	assert_false(exists(stale));
	assert_true(exists(fresh));
	assert_true(exists(foreign));
	assert_true(exists(wrongfan));
	/* a hit marks a block used once its last use is a minute old */
	assert_int_equal(get(dc, 0, 0, BS), 1);
	assert_true(mtime_of(path_of(0, 0)) >= now - 5);
	assert_int_equal(get(dc, 4, 0, SHORT), 1);
	assert_int_equal(mtime_of(path_of(4, 0)), now - 30);
	/* the LRU order came from the mtimes: 2, then 1 go first (0 was read) */
	put(dc, 10, 0, BS);
	assert_false(exists(path_of(2, 0)));
	assert_true(exists(path_of(1, 0)));
	put(dc, 11, 0, BS);
	assert_false(exists(path_of(1, 0)));
	for (i = 0; i < 5; i++)
		if (i != 1 && i != 2)
			assert_int_equal(get(dc, i, 0, i == 4 ? SHORT : BS), 1);
	rfs_dcache_close(dc);
}

static void test_disabled(void **state)
{
	struct rfs_dcache_conf conf = { .dir = cdir, .max_bytes = 0, .block_size = BS };
	struct rfs_dcache *dc = NULL;
	struct rfs_err err;

	(void)state;
	assert_int_equal(rfs_dcache_open(&conf, &dc, &err), 0);
	put(dc, 1, 0, BS);
	assert_int_equal(get(dc, 1, 0, BS), 0);
	expect_stats(dc, .misses = 1);
	assert_false(exists(cdir)); /* nothing on disk touched */
	rfs_dcache_close(dc);
	conf.dir = NULL;
	assert_int_equal(rfs_dcache_open(&conf, &dc, &err), 0);
	assert_int_equal(get(dc, 1, 0, BS), 0);
	rfs_dcache_close(dc);
}

static void test_bad_conf(void **state)
{
	struct rfs_dcache_conf conf = { .dir = cdir, .max_bytes = 1 << 20, .block_size = BS };
	struct rfs_dcache *dc = NULL;
	struct rfs_err err;
	char file[256];
	int fd;

	(void)state;
	conf.block_size = 0;
	assert_int_equal(rfs_dcache_open(&conf, &dc, &err), RFS_E_RANGE);
	conf.block_size = (64u << 20) + 1;
	assert_int_equal(rfs_dcache_open(&conf, &dc, &err), RFS_E_RANGE);
	conf.block_size = BS;
	conf.min_free_pct = 101;
	assert_int_equal(rfs_dcache_open(&conf, &dc, &err), RFS_E_RANGE);
	conf.min_free_pct = 0;
	conf.dir = NULL;
	assert_int_equal(rfs_dcache_open(&conf, &dc, &err), RFS_E_RANGE);
	/* a file where the directory should be */
	snprintf(file, sizeof(file), "%s/file", tmp);
	fd = open(file, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	conf.dir = file;
	assert_int_equal(rfs_dcache_open(&conf, &dc, &err), RFS_E_IO);
	/* v1 a link: refused, not followed */
	conf.dir = cdir;
	snprintf(file, sizeof(file), "%s/a", tmp);
	assert_int_equal(mkdir(file, 0700), 0);
	assert_int_equal(mkdir(cdir, 0700), 0);
	snprintf(file, sizeof(file), "%s/v1", cdir);
	assert_int_equal(symlink(tmp, file), 0);
	assert_int_equal(rfs_dcache_open(&conf, &dc, &err), RFS_E_IO);
	assert_non_null(strstr(err.msg, "v1"));
	assert_null(dc);
}

static void test_low_space(void **state)
{
	struct rfs_dcache *dc = dc_open(1 << 20, 1);

	(void)state;
	put(dc, 1, 0, BS);
	put(dc, 2, 0, BS);
	assert_int_equal(stats(dc).blocks, 2);
	rfs_dcache_close(dc);
	/* a file system is never 100 % free: everything goes, nothing is stored */
	dc = dc_open(1 << 20, 100);
	assert_int_equal(stats(dc).blocks, 2);
	put(dc, 3, 0, BS);
	expect_stats(dc, .write_errors = 1, .evictions = 2);
	assert_false(exists(path_of(1, 0)));
	assert_false(exists(path_of(3, 0)));
	rfs_dcache_close(dc);
}

static void test_write_error(void **state)
{
	struct rfs_dcache *dc = dc_open(1 << 20, 1);
	char inner[320];

	(void)state;
	put(dc, 2, 0, BS); /* makes v1 */
	/* a directory with something in it where the block goes: rename fails */
	mkdir(fan_of(1), 0700);
	assert_int_equal(mkdir(path_of(1, 0), 0700), 0);
	snprintf(inner, sizeof(inner), "%s/x", path_of(1, 0));
	assert_int_equal(mkdir(inner, 0700), 0);
	put(dc, 1, 0, BS);
	expect_stats(dc, .writes = 1, .write_errors = 1, .bytes = FULL, .blocks = 1);
	assert_int_equal(count_tmp(1), 0); /* no temporary file left */
	/* read: not a block, a miss (it cannot be removed, and stays) */
	assert_int_equal(get(dc, 1, 0, BS), 0);
	assert_int_equal(stats(dc).corrupt, 1);
	rfs_dcache_close(dc);
}

/* ---- threads ---------------------------------------------------------- */

#define NTHREADS 8
#define NKEYS 4
#define NBLOCKS 6
#define ITERS 3000

struct worker {
	struct rfs_dcache *dc;
	unsigned seed;
	unsigned hits, wrong;
};

static size_t len_of(uint64_t block)
{
	return block == NBLOCKS - 1 ? SHORT : BS;
}

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	unsigned char buf[BS], want[BS];
	unsigned i;

	for (i = 0; i < ITERS; i++) {
		unsigned r = rand_r(&w->seed);
		struct rfs_dcache_key k = key_n(r % NKEYS);
		uint64_t block = (r >> 8) % NBLOCKS;
		size_t len = len_of(block);

		payload(want, &k, block, len);
		if ((r >> 16) % 3 == 0) {
			rfs_dcache_put(w->dc, &k, block, want, len);
		} else if (rfs_dcache_get(w->dc, &k, block, buf, len)) {
			w->hits++;
			w->wrong += memcmp(buf, want, len) != 0;
		}
	}
	return NULL;
}

static void test_threads(void **state)
{
	/* two caches on one directory stand for two processes sharing it */
	uint64_t max = 10 * FULL;
	struct rfs_dcache *dc[2] = { dc_open(max, 1), dc_open(max, 1) };
	struct worker w[NTHREADS];
	pthread_t t[NTHREADS];
	unsigned i, hits = 0, wrong = 0;
	int j;

	(void)state;
	for (i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .dc = dc[i >= 6], .seed = 12345 + i };
		assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
	}
	for (i = 0; i < NTHREADS; i++) {
		pthread_join(t[i], NULL);
		hits += w[i].hits;
		wrong += w[i].wrong;
	}
	assert_int_equal(wrong, 0);
	assert_true(hits > 0);
	for (j = 0; j < 2; j++) {
		struct rfs_dcache_stats s = stats(dc[j]);
		char line[256];

		stats_str(&s, line, sizeof(line));
		print_message("cache %d: %s\n", j, line);
		assert_int_equal(s.corrupt, 0);
		assert_true(s.bytes <= max);
		assert_true(s.evictions > 0);
		rfs_dcache_close(dc[j]);
	}
	/* what is left on disk reads back right */
	dc[0] = dc_open(NKEYS * NBLOCKS * FULL, 1);
	for (i = 0; i < NKEYS; i++)
		for (j = 0; j < NBLOCKS; j++)
			get(dc[0], i, (uint64_t)j, len_of((uint64_t)j));
	assert_int_equal(stats(dc[0]).corrupt, 0);
	rfs_dcache_close(dc[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_other_block, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_damage, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_fanout_link, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_eviction_lru, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_reopen, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_disabled, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_bad_conf, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_low_space, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_write_error, mk_tmp, rm_tmp),
		cmocka_unit_test_setup_teardown(test_threads, mk_tmp, rm_tmp),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
