/*
 * residfs-stubfs: the FUSE ceiling for the benchmark.  Serves one file,
 * /data, of N bytes from memory (a 1 MiB pattern block copied out), with
 * the same FUSE settings as residfs: page cache with keep_cache, long
 * timeouts, max_background 64, multithreaded loop, readahead raised after
 * INIT when root.  Usage: residfs-stubfs SIZE MOUNTPOINT [--readahead-kb N]
 */
#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLK (1u << 20)

static uint64_t size;
static char *pattern;
static char mp[PATH_MAX];
static unsigned ra_kb = 4096;

static int st_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	(void)fi;
	memset(st, 0, sizeof(*st));
	if (!strcmp(path, "/")) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return 0;
	}
	if (strcmp(path, "/data"))
		return -ENOENT;
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	return 0;
}

static int st_open(const char *path, struct fuse_file_info *fi)
{
	if (strcmp(path, "/data"))
		return -ENOENT;
	fi->keep_cache = 1;
	return 0;
}

static int st_read(const char *path, char *buf, size_t n, off_t off, struct fuse_file_info *fi)
{
	size_t done = 0;

	(void)path;
	(void)fi;
	if ((uint64_t)off >= size)
		return 0;
	if (n > size - (uint64_t)off)
		n = (size_t)(size - (uint64_t)off);
	while (done < n) {
		size_t in = (size_t)((uint64_t)(off + (off_t)done) % BLK);
		size_t k = BLK - in < n - done ? BLK - in : n - done;

		memcpy(buf + done, pattern + in, k);
		done += k;
	}
	return (int)n;
}

static void *st_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	cfg->kernel_cache = 1;
	cfg->entry_timeout = cfg->attr_timeout = 86400.0;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	return NULL;
}

static void *ra_thread(void *arg)
{
	char line[8192], devno[64], where[4096], path[128];
	struct stat st;
	FILE *f;

	(void)arg;
	if (stat(mp, &st) || !(f = fopen("/proc/self/mountinfo", "re")))
		return NULL;
	devno[0] = 0;
	while (fgets(line, sizeof(line), f)) {
		char d[64];

		if (sscanf(line, "%*d %*d %63s %*s %4095s", d, where) == 2 && !strcmp(where, mp))
			snprintf(devno, sizeof(devno), "%s", d);
	}
	fclose(f);
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", devno);
	if (devno[0] && (f = fopen(path, "we"))) {
		fprintf(f, "%u\n", ra_kb);
		fclose(f);
	}
	return NULL;
}

static const struct fuse_operations ops = {
	.init = st_init, .getattr = st_getattr, .open = st_open, .read = st_read,
};

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config lc = { .clone_fd = 0, .max_idle_threads = 16 };
	struct fuse *f;
	pthread_t th;
	size_t i;
	int ret;

	if (argc < 3) {
		fprintf(stderr, "usage: residfs-stubfs SIZE MOUNTPOINT [--readahead-kb N]\n");
		return 2;
	}
	size = strtoull(argv[1], NULL, 10);
	if (!realpath(argv[2], mp))
		return 1;
	if (argc >= 5 && !strcmp(argv[3], "--readahead-kb"))
		ra_kb = (unsigned)atoi(argv[4]);
	pattern = malloc(BLK);
	if (!pattern)
		return 1;
	for (i = 0; i < BLK; i++)
		pattern[i] = (char)(i * 131 + 7);
	fuse_opt_add_arg(&args, "residfs-stubfs");
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, "ro,fsname=residfs-stub,subtype=residfs-stub");
	f = fuse_new(&args, &ops, sizeof(ops), NULL);
	if (!f || fuse_mount(f, mp))
		return 1;
	if (fuse_daemonize(0))
		return 1;
	if (ra_kb && !pthread_create(&th, NULL, ra_thread, NULL))
		pthread_detach(th);
	fuse_set_signal_handlers(fuse_get_session(f));
	ret = fuse_loop_mt(f, &lc);
	fuse_remove_signal_handlers(fuse_get_session(f));
	fuse_unmount(f);
	fuse_destroy(f);
	fuse_opt_free_args(&args);
	return ret ? 1 : 0;
}
