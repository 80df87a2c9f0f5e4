/*
 * Disk block cache (dcache.h).
 *
 * THE INDEX
 *
 * Each block the cache knows of is an entry (struct dent) in a hash table
 * keyed by (key, block index), holding the size of its file.  An entry is
 *
 *   WRITING  inserted by a put before its file is written: its size is
 *            counted in ->bytes (a reservation, so concurrent puts cannot
 *            together overshoot max_bytes), it is not in the LRU list and
 *            cannot be evicted; another put of the same block is dropped.
 *   READY    its file was written (or found by open, or by a hit on a
 *            block another process wrote): in the LRU list, head = most
 *            recently used.
 *
 * Transitions: absent -> WRITING (put, after evicting for room) -> READY
 * (the file is renamed into place) or -> absent (the write failed);
 * absent -> READY (open's scan, a hit on an unindexed file); READY ->
 * absent (evicted, or a get found the file gone or corrupt).  A get
 * removes only the very entry it looked at (->gen tells a re-inserted
 * entry of the same block apart), so a stale verdict never drops a block
 * written meanwhile.
 *
 * LOCKING
 *
 * One mutex, rfs_dcache.lock, protects the table, the LRU list, every
 * entry, ->gen and the counters.  It is never held across a system call:
 * a get looks the block up (and marks it used), reads and checks the file
 * unlocked, then records the verdict; a put reserves room and collects the
 * blocks it evicts under the lock, deletes their files and writes its own
 * unlocked, then marks its entry READY.  No thread ever waits for another's
 * I/O.  The files themselves need no lock: a block appears by a rename
 * (whole or not at all), and a reader holding a descriptor of a file that
 * is deleted meanwhile still reads the whole of it.
 *
 * A corrupt file is deleted only while its name still refers to the inode
 * that was checked (a writer may have renamed a good block over it).
 */
#include "dcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "util.h"

/*
 * The numbers this module chose.  They stay here rather than in
 * tunables.h: they describe this cache's format and housekeeping, and
 * nothing else in residfs depends on them.
 */
/* The format version, and the directory it lives in: a new format gets a
 * new directory, so a downgrade never reads (nor deletes) a newer one's
 * blocks. */
#define FORMAT_VERSION 1
#define VERSION_DIR "v1"
#define MAGIC "rfsdcblk" /* 8 bytes, no NUL stored */
#define HDR RFS_DCACHE_HDR_SIZE
/* <hi:16 hex><lo:16 hex>-<block:16 hex> */
#define NAME_LEN 49
#define TMP_MARK ".tmp."
/* A block is read into the caller's buffer in one go and its length is a
 * u32 in the header; remote sources use 1 MiB.  64 MiB leaves room for
 * larger blocks while refusing a size that is surely a mistake. */
#define BLOCK_MAX (64u << 20)
/* Keep this much of the file system free by default: a cache must not be
 * what fills a disk (other programs, and the model files themselves, need
 * the room more than the cache does). */
#define DEFAULT_MIN_FREE_PCT 5
/* A hit sets the block file's mtime (its last use) only when it is older
 * than this: an LRU order to the minute is plenty for blocks that take
 * a network fetch to replace, and most hits then cost no metadata write. */
#define TOUCH_EVERY_S 60
/* Temporary files older than this belong to a writer that died (a block is
 * written in well under a second); open removes them. */
#define STALE_TMP_S 3600
/* First size of the hash table (it doubles as entries are added): 1024
 * blocks of 1 MiB, the size of a small cache. */
#define BUCKETS_MIN 1024
#define FANOUT 256

struct dent {
	struct rfs_dcache_key key;
	uint64_t block;
	uint64_t size;             /* bytes of its file, header included */
	uint64_t gen;              /* tells re-inserted entries of a block apart */
	int writing;               /* WRITING: counted in bytes, not in the LRU */
	struct dent *hnext;
	TAILQ_ENTRY(dent) lru;     /* READY entries only; head = newest */
};

struct rfs_dcache {
	pthread_mutex_t lock;
	int vfd;                   /* DIR/v1; -1 when the cache is disabled */
	uint64_t max_bytes;
	unsigned min_free_pct;
	uint32_t bs;
	struct dent **ht;
	size_t nb, n;              /* buckets (a power of 2), entries */
	TAILQ_HEAD(lru_list, dent) lru;
	uint64_t gen;
	struct rfs_dcache_stats st; /* bytes: READY and WRITING; blocks: READY */
};

/* Makes temporary names unique in the process (with the pid, among the
 * processes of the machine); shared by all caches, which may share a
 * directory. */
static atomic_ulong tmp_seq;

enum verdict {
	V_HIT,
	V_ABSENT,  /* no such file (evicted, maybe by another process) */
	V_MISS,    /* not read for want of resources: the file may be fine */
	V_CORRUPT, /* failed a check: deleted */
};

/* ------------------------------------------------------------ format */

static void le_put(unsigned char *p, uint64_t v, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t le_get(const unsigned char *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

/* The header of block @block of @key, @len bytes hashing to @sum. */
static void header_make(unsigned char h[HDR], uint32_t bs, const struct rfs_dcache_key *key,
			uint64_t block, size_t len, uint64_t sum)
{
	memcpy(h, MAGIC, 8);
	le_put(h + 8, FORMAT_VERSION, 4);
	le_put(h + 12, bs, 4);
	le_put(h + 16, key->hi, 8);
	le_put(h + 24, key->lo, 8);
	le_put(h + 32, block, 8);
	le_put(h + 40, len, 4);
	le_put(h + 44, 0, 4);
	le_put(h + 48, sum, 8);
	le_put(h + 56, XXH3_64bits(h, 56), 8);
}

/* 1 when @h is exactly the header of that block (every field, the header's
 * checksum included); *@sum is then the payload's hash it states. */
static int header_ok(const unsigned char h[HDR], uint32_t bs, const struct rfs_dcache_key *key,
		     uint64_t block, size_t len, uint64_t *sum)
{
	unsigned char want[HDR];

	*sum = le_get(h + 48, 8);
	header_make(want, bs, key, block, len, *sum);
	return !memcmp(want, h, HDR);
}

static void block_name(char name[NAME_LEN + 1], const struct rfs_dcache_key *key, uint64_t block)
{
	snprintf(name, NAME_LEN + 1, "%016" PRIx64 "%016" PRIx64 "-%016" PRIx64, key->hi, key->lo,
		 block);
}

/* 16 lowercase hex digits at @s into *@v; 0, or -1 when they are not. */
static int hex16(const char *s, uint64_t *v)
{
	unsigned i;

	*v = 0;
	for (i = 0; i < 16; i++) {
		char c = s[i];

		if (c >= '0' && c <= '9')
			*v = *v << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			*v = *v << 4 | (uint64_t)(c - 'a' + 10);
		else
			return -1;
	}
	return 0;
}

/* The key and index named by a block file's name; 0, or -1 for another name. */
static int name_parse(const char *name, struct rfs_dcache_key *key, uint64_t *block)
{
	if (strlen(name) != NAME_LEN || name[32] != '-')
		return -1;
	if (hex16(name, &key->hi) || hex16(name + 16, &key->lo))
		return -1;
	return hex16(name + 33, block);
}

/* ------------------------------------------------------------- files */

static int64_t now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec;
}

/* The name of fan-out directory @byte: two lowercase hex digits. */
static void fan_name(char f[3], unsigned byte)
{
	static const char hex[] = "0123456789abcdef";

	f[0] = hex[byte >> 4 & 15];
	f[1] = hex[byte & 15];
	f[2] = 0;
}

/* The fan-out directory of keys whose first byte is @hi's, never through a
 * link: a descriptor, or -1 (errno set).  @create: made when missing. */
static int fan_open(struct rfs_dcache *dc, uint64_t hi, int create)
{
	char f[3];
	int fd;

	fan_name(f, (unsigned)(hi >> 56));
	fd = openat(dc->vfd, f, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0 || errno != ENOENT || !create)
		return fd;
	if (mkdirat(dc->vfd, f, 0700) && errno != EEXIST)
		return -1;
	return openat(dc->vfd, f, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Deletes @name of @dfd, which failed a check, unless it is no longer the
 * file @seen that was checked (NULL: whatever it is now). */
static void drop_file(int dfd, const char *name, const struct stat *seen)
{
	struct stat st;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW))
		return;
	if (seen && (st.st_dev != seen->st_dev || st.st_ino != seen->st_ino))
		return;
	unlinkat(dfd, name, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
}

/* Reads and checks block @block of @key (@len bytes) into @buf; deletes it
 * when it fails a check; marks it used when its last use is a minute old. */
static enum verdict block_read(struct rfs_dcache *dc, const struct rfs_dcache_key *key,
			       uint64_t block, void *buf, size_t len)
{
	char name[NAME_LEN + 1];
	unsigned char h[HDR];
	enum verdict v = V_CORRUPT;
	struct stat st;
	uint64_t sum;
	int dfd, fd;

	dfd = fan_open(dc, key->hi, 0);
	if (dfd < 0)
		return errno == EMFILE || errno == ENFILE || errno == ENOMEM ? V_MISS : V_ABSENT;
	block_name(name, key, block);
	fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			v = V_ABSENT;
		else if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == EINTR)
			v = V_MISS;
		else
			drop_file(dfd, name, NULL); /* a link (ELOOP), a socket (ENXIO)... */
		close(dfd);
		return v;
	}
	if (fstat(fd, &st)) {
		v = V_MISS;
	} else if (S_ISREG(st.st_mode) && (uint64_t)st.st_size == HDR + (uint64_t)len &&
		   !rfs_pread_all(fd, h, HDR, 0) && header_ok(h, dc->bs, key, block, len, &sum) &&
		   !rfs_pread_all(fd, buf, len, HDR) && XXH3_64bits(buf, len) == sum) {
		v = V_HIT;
		if (now_s() - st.st_mtim.tv_sec >= TOUCH_EVERY_S)
			futimens(fd, NULL);
	} else {
		drop_file(dfd, name, &st);
	}
	close(fd);
	close(dfd);
	return v;
}

/* Writes all of @iov[0..@n) (advancing it), through short writes and EINTR. */
static int writev_full(int fd, struct iovec *iov, int n)
{
	for (;;) {
		ssize_t w;

		while (n && !iov->iov_len) {
			iov++;
			n--;
		}
		if (!n)
			return 0;
		w = writev(fd, iov, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (!w)
				errno = EIO;
			return -1;
		}
		for (; n && (size_t)w >= iov->iov_len; iov++, n--)
			w -= (ssize_t)iov->iov_len;
		if (n) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
}

/* Writes block @block of @key to a temporary file and renames it into
 * place.  0, or -1 (nothing left behind). */
static int block_write(struct rfs_dcache *dc, const struct rfs_dcache_key *key, uint64_t block,
		       const void *buf, size_t len)
{
	char name[NAME_LEN + 1], tmp[NAME_LEN + 64];
	unsigned char h[HDR];
	struct iovec iov[2];
	int dfd, fd, ret = -1;

	dfd = fan_open(dc, key->hi, 1);
	if (dfd < 0)
		return -1;
	block_name(name, key, block);
	snprintf(tmp, sizeof(tmp), "%s" TMP_MARK "%ld.%lu", name, (long)getpid(),
		 atomic_fetch_add(&tmp_seq, 1));
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		header_make(h, dc->bs, key, block, len, XXH3_64bits(buf, len));
		iov[0] = (struct iovec){ .iov_base = h, .iov_len = HDR };
		iov[1] = (struct iovec){ .iov_base = (void *)buf, .iov_len = len };
		ret = writev_full(fd, iov, 2);
		if (close(fd))
			ret = -1;
		if (!ret)
			ret = renameat(dfd, tmp, dfd, name);
		if (ret)
			unlinkat(dfd, tmp, 0);
	}
	close(dfd);
	return ret;
}

/* 1 when the cache's file system has less than min_free_pct % free. */
static int low_on_space(struct rfs_dcache *dc)
{
	struct statvfs sv;

	if (fstatvfs(dc->vfd, &sv) || !sv.f_blocks)
		return 0;
	return (double)sv.f_bavail * 100.0 < (double)dc->min_free_pct * (double)sv.f_blocks;
}

/* ------------------------------------------------------------- index */

static size_t bucket(const struct rfs_dcache *dc, const struct rfs_dcache_key *key, uint64_t block)
{
	uint64_t h = key->lo ^ key->hi >> 7 ^ block * 0x9E3779B97F4A7C15ull;

	h *= 0xC2B2AE3D27D4EB4Full;

	return (size_t)(h >> 29) & (dc->nb - 1);
}

/* The entry of block @block of @key, or NULL (lock held). */
static struct dent *find(struct rfs_dcache *dc, const struct rfs_dcache_key *key, uint64_t block)
{
	struct dent *e;

	for (e = dc->ht[bucket(dc, key, block)]; e; e = e->hnext)
		if (e->block == block && e->key.lo == key->lo && e->key.hi == key->hi)
			return e;
	return NULL;
}

/* Doubles the table when it holds as many entries as buckets; on ENOMEM
 * the chains just grow longer (lock held). */
static void ht_grow(struct rfs_dcache *dc)
{
	struct dent **old = dc->ht, *e, *next;
	size_t i, onb = dc->nb;

	if (dc->n < dc->nb || !(dc->ht = calloc(onb * 2, sizeof(*dc->ht)))) {
		dc->ht = old;
		return;
	}
	dc->nb = onb * 2;
	for (i = 0; i < onb; i++)
		for (e = old[i]; e; e = next) {
			size_t b = bucket(dc, &e->key, e->block);

			next = e->hnext;
			e->hnext = dc->ht[b];
			dc->ht[b] = e;
		}
	free(old);
}

/* A new entry of @size bytes, WRITING or READY (then the LRU's newest);
 * NULL on ENOMEM (lock held). */
static struct dent *index_add(struct rfs_dcache *dc, const struct rfs_dcache_key *key,
			      uint64_t block, uint64_t size, int writing)
{
	struct dent *e = calloc(1, sizeof(*e));
	size_t b;

	if (!e)
		return NULL;
	ht_grow(dc);
	e->key = *key;
	e->block = block;
	e->size = size;
	e->gen = ++dc->gen;
	e->writing = writing;
	b = bucket(dc, key, block);
	e->hnext = dc->ht[b];
	dc->ht[b] = e;
	dc->n++;
	dc->st.bytes += size;
	if (!writing) {
		TAILQ_INSERT_HEAD(&dc->lru, e, lru);
		dc->st.blocks++;
	}
	return e;
}

/* Takes @e out of the index; the caller frees it (lock held). */
static void index_unlink(struct rfs_dcache *dc, struct dent *e)
{
	struct dent **p = &dc->ht[bucket(dc, &e->key, e->block)];

	while (*p != e)
		p = &(*p)->hnext;
	*p = e->hnext;
	e->hnext = NULL;
	dc->n--;
	dc->st.bytes -= e->size;
	if (!e->writing) {
		TAILQ_REMOVE(&dc->lru, e, lru);
		dc->st.blocks--;
	}
}

/* The least recently used block, taken out of the index to be deleted, or
 * NULL when there is none (lock held). */
static struct dent *evict_one(struct rfs_dcache *dc)
{
	struct dent *e = TAILQ_LAST(&dc->lru, lru_list);

	if (!e)
		return NULL;
	index_unlink(dc, e);
	dc->st.evictions++;
	return e;
}

/* Deletes the files of the evicted entries chained on ->hnext, and frees
 * them (lock not held). */
static void victims_drop(struct rfs_dcache *dc, struct dent *v)
{
	char name[NAME_LEN + 1];

	while (v) {
		struct dent *next = v->hnext;
		int dfd = fan_open(dc, v->key.hi, 0);

		if (dfd >= 0) {
			block_name(name, &v->key, v->block);
			unlinkat(dfd, name, 0);
			close(dfd);
		}
		free(v);
		v = next;
	}
}

/* -------------------------------------------------------------- open */

/* mkdir -p @path (a writable copy, restored on return), mode 0700. */
static int make_dirs(char *path)
{
	char *slash;
	int r;

	if (!mkdir(path, 0700) || errno == EEXIST)
		return 0;
	slash = strrchr(path, '/');
	if (errno != ENOENT || !slash || slash == path)
		return -1;
	*slash = 0;
	r = make_dirs(path);
	*slash = '/';
	if (r)
		return -1;
	return mkdir(path, 0700) && errno != EEXIST ? -1 : 0;
}

/* A block file found by the scan. */
struct found {
	struct rfs_dcache_key key;
	uint64_t block, size;
	struct timespec mtime;
};

struct found_list {
	struct found *v;
	size_t n, cap;
};

static int found_cmp(const void *a, const void *b)
{
	const struct timespec *x = &((const struct found *)a)->mtime;
	const struct timespec *y = &((const struct found *)b)->mtime;

	if (x->tv_sec != y->tv_sec)
		return x->tv_sec < y->tv_sec ? -1 : 1;
	return (x->tv_nsec > y->tv_nsec) - (x->tv_nsec < y->tv_nsec);
}

/* Lists the blocks of fan-out directory @fan (number @i) into @fl and
 * removes its stale temporary files.  0, or -1 on ENOMEM. */
static int scan_fan(struct rfs_dcache *dc, const char *fan, unsigned i, int64_t now,
		    struct found_list *fl)
{
	struct dirent *de;
	struct stat st;
	struct found f;
	int fd, ret = 0;
	DIR *d;

	fd = openat(dc->vfd, fan, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return 0;
	}
	while (!ret && (de = readdir(d))) {
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		if (strstr(de->d_name, TMP_MARK)) {
			if (now - st.st_mtim.tv_sec > STALE_TMP_S)
				unlinkat(fd, de->d_name, 0);
			continue;
		}
		/* anything else is checked when read: only plausible blocks count */
		if (name_parse(de->d_name, &f.key, &f.block) || f.key.hi >> 56 != i ||
		    !S_ISREG(st.st_mode) || (uint64_t)st.st_size < HDR ||
		    (uint64_t)st.st_size > HDR + (uint64_t)dc->bs)
			continue;
		if (fl->n == fl->cap) {
			size_t cap = fl->cap ? fl->cap * 2 : 256;
			struct found *v = realloc(fl->v, cap * sizeof(*v));

			if (!v) {
				ret = -1;
				break;
			}
			fl->v = v;
			fl->cap = cap;
		}
		f.size = (uint64_t)st.st_size;
		f.mtime = st.st_mtim;
		fl->v[fl->n++] = f;
	}
	closedir(d);
	return ret;
}

/* Indexes the blocks under DIR/v1, oldest use first so the newest ends
 * at the LRU's head.  0, or -1 on ENOMEM. */
static int scan(struct rfs_dcache *dc)
{
	struct found_list fl = { 0 };
	int64_t now = now_s();
	struct stat st;
	unsigned i;
	size_t k;
	int ret = 0;

	for (i = 0; i < FANOUT && !ret; i++) {
		char fan[3];

		fan_name(fan, i);
		if (fstatat(dc->vfd, fan, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		if (!S_ISDIR(st.st_mode))
			unlinkat(dc->vfd, fan, 0); /* a link or a file where a directory belongs */
		else
			ret = scan_fan(dc, fan, i, now, &fl);
	}
	if (!ret && fl.n)
		qsort(fl.v, fl.n, sizeof(*fl.v), found_cmp);
	for (k = 0; !ret && k < fl.n; k++)
		if (!index_add(dc, &fl.v[k].key, fl.v[k].block, fl.v[k].size, 0))
			ret = -1;
	free(fl.v);
	return ret;
}

/* Makes DIR and DIR/v1 and opens the latter into dc->vfd. */
static enum rfs_code open_dirs(struct rfs_dcache *dc, const char *dir, struct rfs_err *err)
{
	char *copy = strdup(dir);
	int rfd, r;

	if (!copy)
		return rfs_errf(err, RFS_E_NOMEM, "%s: out of memory", dir);
	r = make_dirs(copy);
	free(copy);
	if (r)
		return rfs_errsys(err, "%s: cannot create the disk cache directory", dir);
	rfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rfd < 0)
		return rfs_errsys(err, "%s: cannot open the disk cache directory", dir);
	if (mkdirat(rfd, VERSION_DIR, 0700) && errno != EEXIST) {
		r = rfs_errsys(err, "%s/" VERSION_DIR ": cannot create", dir);
		close(rfd);
		return r;
	}
	dc->vfd = openat(rfd, VERSION_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	r = 0;
	if (dc->vfd < 0)
		r = rfs_errsys(err, "%s/" VERSION_DIR ": cannot open (not a directory?)", dir);
	close(rfd);
	return r;
}

/* ------------------------------------------------------------ public */

struct rfs_dcache_key rfs_dcache_key_of(const void *identity, size_t len)
{
	XXH128_hash_t h = XXH3_128bits(identity, len);

	return (struct rfs_dcache_key){ .hi = h.high64, .lo = h.low64 };
}

enum rfs_code rfs_dcache_open(const struct rfs_dcache_conf *conf, struct rfs_dcache **out,
			      struct rfs_err *err)
{
	struct rfs_dcache *dc;
	int r;

	if (conf->max_bytes && (!conf->dir || !*conf->dir))
		return rfs_errf(err, RFS_E_RANGE, "disk cache: no directory given");
	if (!conf->block_size || conf->block_size > BLOCK_MAX)
		return rfs_errf(err, RFS_E_RANGE, "disk cache: block size %" PRIu32
				" out of range (1 to %u)", conf->block_size, BLOCK_MAX);
	if (conf->min_free_pct > 100)
		return rfs_errf(err, RFS_E_RANGE, "disk cache: min_free_pct %u over 100",
				conf->min_free_pct);
	dc = calloc(1, sizeof(*dc));
	if (!dc)
		return rfs_errf(err, RFS_E_NOMEM, "disk cache: out of memory");
	pthread_mutex_init(&dc->lock, NULL);
	dc->vfd = -1;
	dc->max_bytes = conf->max_bytes;
	dc->min_free_pct = conf->min_free_pct ? conf->min_free_pct : DEFAULT_MIN_FREE_PCT;
	dc->bs = conf->block_size;
	TAILQ_INIT(&dc->lru);
	if (!dc->max_bytes) {
		*out = dc; /* disabled: nothing on disk is touched */
		return RFS_OK;
	}
	dc->nb = BUCKETS_MIN;
	dc->ht = calloc(dc->nb, sizeof(*dc->ht));
	if (!dc->ht)
		r = rfs_errf(err, RFS_E_NOMEM, "disk cache: out of memory");
	else
		r = open_dirs(dc, conf->dir, err);
	if (!r && scan(dc))
		r = rfs_errf(err, RFS_E_NOMEM, "%s: out of memory reading the disk cache",
			     conf->dir);
	if (r) {
		rfs_dcache_close(dc);
		return r;
	}
	*out = dc;
	return RFS_OK;
}

void rfs_dcache_close(struct rfs_dcache *dc)
{
	struct dent *e;

	if (!dc)
		return;
	/* with no call running, every entry is READY: all are in the LRU */
	while ((e = TAILQ_FIRST(&dc->lru))) {
		TAILQ_REMOVE(&dc->lru, e, lru);
		free(e);
	}
	free(dc->ht);
	if (dc->vfd >= 0)
		close(dc->vfd);
	pthread_mutex_destroy(&dc->lock);
	free(dc);
}

int rfs_dcache_get(struct rfs_dcache *dc, const struct rfs_dcache_key *key, uint64_t block,
		   void *buf, size_t len)
{
	enum verdict v = V_ABSENT;
	struct dent *e;
	uint64_t gen = 0;

	if (dc->vfd >= 0 && len <= dc->bs) {
		pthread_mutex_lock(&dc->lock);
		e = find(dc, key, block);
		if (e && !e->writing) {
			gen = e->gen;
			TAILQ_REMOVE(&dc->lru, e, lru);
			TAILQ_INSERT_HEAD(&dc->lru, e, lru);
		}
		pthread_mutex_unlock(&dc->lock);
		v = block_read(dc, key, block, buf, len);
	}
	pthread_mutex_lock(&dc->lock);
	e = dc->vfd >= 0 ? find(dc, key, block) : NULL;
	if (v == V_HIT) {
		dc->st.hits++;
		/* a block another process wrote, indexed when it fits (not
		 * one this process evicted while it was being read) */
		if (!e && !gen && dc->st.bytes + HDR + len <= dc->max_bytes)
			index_add(dc, key, block, HDR + (uint64_t)len, 0);
	} else {
		dc->st.misses++;
		dc->st.corrupt += v == V_CORRUPT;
		if (e && e->gen == gen && (v == V_ABSENT || v == V_CORRUPT)) {
			index_unlink(dc, e);
			free(e);
		}
	}
	pthread_mutex_unlock(&dc->lock);
	return v == V_HIT;
}

void rfs_dcache_put(struct rfs_dcache *dc, const struct rfs_dcache_key *key, uint64_t block,
		    const void *buf, size_t len)
{
	uint64_t need = HDR + (uint64_t)len;
	struct dent *e = NULL, *v, *victims = NULL;
	int ok;

	if (dc->vfd < 0 || len > dc->bs)
		return;
	pthread_mutex_lock(&dc->lock);
	if (find(dc, key, block) || need > dc->max_bytes) {
		dc->st.write_errors += need > dc->max_bytes; /* never fits: evict nothing */
		pthread_mutex_unlock(&dc->lock);
		return;
	}
	while (dc->st.bytes + need > dc->max_bytes && (v = evict_one(dc))) {
		v->hnext = victims;
		victims = v;
	}
	if (dc->st.bytes + need <= dc->max_bytes)
		e = index_add(dc, key, block, need, 1);
	if (!e)
		dc->st.write_errors++;
	pthread_mutex_unlock(&dc->lock);
	victims_drop(dc, victims);
	if (!e)
		return;
	ok = 1;
	while (ok && low_on_space(dc)) {
		pthread_mutex_lock(&dc->lock);
		v = evict_one(dc);
		pthread_mutex_unlock(&dc->lock);
		ok = v != NULL;
		victims_drop(dc, v);
	}
	ok = ok && !block_write(dc, key, block, buf, len);
	pthread_mutex_lock(&dc->lock);
	if (ok) {
		e->writing = 0;
		TAILQ_INSERT_HEAD(&dc->lru, e, lru);
		dc->st.blocks++;
		dc->st.writes++;
	} else {
		index_unlink(dc, e);
		free(e);
		dc->st.write_errors++;
	}
	pthread_mutex_unlock(&dc->lock);
}

void rfs_dcache_stats(struct rfs_dcache *dc, struct rfs_dcache_stats *out)
{
	pthread_mutex_lock(&dc->lock);
	*out = dc->st;
	pthread_mutex_unlock(&dc->lock);
}
