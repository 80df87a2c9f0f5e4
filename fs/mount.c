/*
 * FUSE high-level operations over a plan.  Per-mount state lives in one
 * struct reached through fuse_get_context()->private_data, the backend and
 * the cache included (its struct rfs_reader, handed to every read); the
 * plan is immutable, so handlers take no locks and never hold one across
 * I/O.
 *
 * Settings (docs/architecture.md, "FUSE settings"): page-cache mode with keep_cache (a warm re-read
 * makes no requests), long entry/attr timeouts, max_background 64, a
 * multithreaded loop, and the mount's readahead raised through sysfs when
 * we may (root): requests then come in 1 MiB instead of 128 KiB.
 */
#include "mount.h"
#define FUSE_USE_VERSION FUSE_API_USED

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/bsrc.h"
#include "core/busguard.h"
#include "core/buf.h"
#include "core/cache.h"
#include "core/log.h"
#include "core/read.h"
#include "core/remote.h"
#include "core/tunables.h"
#include "core/util.h"
#include "kernels/backend.h"

/* Not listed, but readable: the cache and request counters as JSON. */
#define STATS_NAME ".residfs-stats"
#define STATS_FH ((uint64_t)-1)

struct mnt {
	struct rfs_plan *plan;
	struct rfs_reader rd;       /* backend (made after the fork) and cache */
	char mp[PATH_MAX];
	unsigned ra_kb;
	int notify_fd;              /* daemon: tells the parent the mount is live */
	uid_t uid;
	gid_t gid;
	unsigned long long errors;  /* reads and opens answered with an error */
	struct fuse_session *se;
	atomic_int ending;          /* the session ended: reads fail, quietly */
};

static struct mnt *ctx(void)
{
	return fuse_get_context()->private_data;
}

static const struct rfs_vfile *lookup(struct mnt *m, const char *path)
{
	if (path[0] != '/' || strchr(path + 1, '/'))
		return NULL;
	return rfs_plan_find(m->plan, path + 1);
}

static void fill_stat(struct mnt *m, const struct rfs_vfile *vf, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_uid = m->uid;
	st->st_gid = m->gid;
	st->st_mtim.tv_sec = (time_t)(rfs_plan_mtime_ns(m->plan) / 1000000000);
	st->st_mtim.tv_nsec = (long)(rfs_plan_mtime_ns(m->plan) % 1000000000);
	st->st_ctim = st->st_mtim;
	st->st_atim = st->st_mtim;
	if (!vf) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		st->st_ino = 1;
		return;
	}
	/* the sources' read bits: a 0600 source is not shown to everyone */
	st->st_mode = S_IFREG | (rfs_vfile_mode(vf) & 0444);
	st->st_nlink = 1;
	st->st_ino = rfs_vfile_ino(vf);
	st->st_size = (off_t)rfs_vfile_size(vf);
	st->st_blksize = 1 << 20;
	st->st_blocks = (blkcnt_t)((rfs_vfile_size(vf) + 511) / 512);
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct mnt *m = ctx();
	const struct rfs_vfile *vf;

	(void)fi;
	if (!strcmp(path, "/")) {
		fill_stat(m, NULL, st);
		return 0;
	}
	if (!strcmp(path, "/" STATS_NAME)) {
		fill_stat(m, NULL, st);
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_ino = (ino_t)rfs_plan_nfiles(m->plan) + 2;
		return 0;
	}
	vf = lookup(m, path);
	if (!vf)
		return -ENOENT;
	fill_stat(m, vf, st);
	return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct mnt *m = ctx();
	struct stat st;
	size_t i;

	(void)off;
	(void)fi;
	(void)flags;
	if (strcmp(path, "/"))
		return -ENOTDIR;
	fill_stat(m, NULL, &st);
	filler(buf, ".", &st, 0, 0);
	filler(buf, "..", NULL, 0, 0);
	for (i = 0; i < rfs_plan_nfiles(m->plan); i++) {
		const struct rfs_vfile *vf = rfs_plan_file(m->plan, i);

		fill_stat(m, vf, &st);
		if (filler(buf, rfs_vfile_name(vf), &st, 0, 0))
			break;
	}
	return 0;
}

/*
 * Logs an error about @vf: a changed source once for each source file
 * (@id), whatever came before; any other error once for each file, 1 MiB
 * block and kind of error (the kernel retries a failed readahead page by
 * page; log.h rate-limits the rest).  Counted for the stats.
 */
static void log_error(struct mnt *m, const struct rfs_vfile *vf, const char *what,
		      long long off, size_t size, const struct rfs_err *err, struct rfs_bsrc *id)
{
	char key[320];

	__atomic_fetch_add(&m->errors, 1, __ATOMIC_RELAXED);
	if (id) {
		if (rfs_bsrc_first_report(id))
			rfs_log(RFS_LOG_ERROR, "%s %s: %s", what, rfs_vfile_name(vf), err->msg);
		return;
	}
	snprintf(key, sizeof(key), "%s\n%s\n%lld\n%d", what, rfs_vfile_name(vf),
		 off >= 0 ? off / (long long)RFS_TUNE_BLOCK : -1, err->code);
	if (off >= 0)
		rfs_log_once_key(RFS_LOG_ERROR, key, "%s %s bytes %lld-%lld: %s", what, rfs_vfile_name(vf),
				 off, off + (long long)(size ? size - 1 : 0), err->msg);
	else
		rfs_log_once_key(RFS_LOG_ERROR, key, "%s %s: %s", what, rfs_vfile_name(vf), err->msg);
}

/* The source file of @vf that changed, if the error says one did. */
static struct rfs_bsrc *changed_source(const struct rfs_vfile *vf, const struct rfs_err *err)
{
	struct rfs_bsrc *id = NULL;
	struct rfs_err e = { 0 };

	if (err->code != RFS_E_CHANGED)
		return NULL;
	rfs_vfile_check(vf, 0, &id, &e);
	return id;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct mnt *m = ctx();
	const struct rfs_vfile *vf = lookup(m, path);
	struct rfs_err err = { 0 };
	struct rfs_bsrc *id = NULL;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EROFS;
	if (!vf && !strcmp(path, "/" STATS_NAME)) {
		fi->fh = STATS_FH;
		fi->direct_io = 1; /* its size changes: no page cache */
		return 0;
	}
	if (!vf)
		return -ENOENT;
	/* a source changed since mounting: refuse now rather than mid-read */
	if (rfs_vfile_check(vf, 1, &id, &err)) {
		log_error(m, vf, "opening", -1, 0, &err, id);
		return -EIO;
	}
	fi->fh = (uint64_t)rfs_vfile_index(vf);
	fi->keep_cache = 1;
	return 0;
}

/* One counter set of the remote engine as JSON members (no braces). */
static void remote_members(struct rfs_buf *b, const struct rfs_remote_stats *r)
{
	rfs_buf_addf(b,
		     "\"requests\": %llu, \"bytes\": %llu, \"retries\": %llu, \"errors\": %llu, "
		     "\"memory_hits\": %llu, \"disk_hits\": %llu, \"misses\": %llu, \"prefetched\": %llu",
		     (unsigned long long)r->requests, (unsigned long long)r->bytes_fetched,
		     (unsigned long long)r->retries, (unsigned long long)r->failures,
		     (unsigned long long)r->mem_hits, (unsigned long long)r->disk_hits,
		     (unsigned long long)r->misses, (unsigned long long)r->prefetched);
}

/*
 * The stats file: the backend, the block cache's counters, the errors
 * answered, and, when remote terms exist, the remote engine's counters in
 * all and per source (docs/cli.md, "residfs stats").
 */
static char *stats_json(struct mnt *m, size_t *len)
{
	struct rfs_remote_stats rs;
	struct rfs_buf b = { 0 };
	unsigned long long limited, repeats;
	const char *name;
	char be[256];
	size_t i;

	rfs_backend_describe(m->rd.be, be, sizeof(be));
	rfs_log_counts(&limited, &repeats);
	rfs_buf_addf(&b, "{\"version\": \"%s\", \"pid\": %ld, \"backend\": ", RESIDFS_VERSION,
		     (long)getpid());
	rfs_buf_add_json_str(&b, be);
	rfs_buf_adds(&b, ", ");
	rfs_cache_stats_members(m->rd.cache, &b);
	rfs_buf_addf(&b, ", \"files\": %zu, \"size\": %llu, \"errors\": %llu, \"log_lines_dropped\": %llu",
		     rfs_plan_nfiles(m->plan), (unsigned long long)rfs_plan_bytes(m->plan),
		     __atomic_load_n(&m->errors, __ATOMIC_RELAXED), limited);
	if (!rfs_remote_source_stats(0, &name, &rs)) {
		rfs_remote_stats(&rs);
		rfs_buf_addf(&b, ", \"remote\": {");
		remote_members(&b, &rs);
		rfs_buf_addf(&b, ", \"memory_used\": %llu, \"memory_peak\": %llu, \"sources\": [",
			     (unsigned long long)rs.mem_bytes, (unsigned long long)rs.mem_peak);
		for (i = 0; !rfs_remote_source_stats(i, &name, &rs); i++) {
			rfs_buf_addf(&b, "%s{\"source\": ", i ? ", " : "");
			rfs_buf_add_json_str(&b, name);
			rfs_buf_addf(&b, ", ");
			remote_members(&b, &rs);
			rfs_buf_addf(&b, "}");
		}
		rfs_buf_addf(&b, "]}");
	}
	rfs_buf_addf(&b, "}\n");
	if (!rfs_buf_ok(&b)) {
		rfs_buf_release(&b);
		return NULL;
	}
	return rfs_buf_detach(&b, len);
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	struct mnt *m = ctx();
	const struct rfs_vfile *vf;
	struct rfs_err err = { 0 };
	ssize_t r;

	if (off < 0)
		return -EINVAL;
	if (fi && fi->fh == STATS_FH) {
		size_t len;
		char *js = stats_json(m, &len);

		if (!js)
			return -ENOMEM;
		r = (uint64_t)off >= len ? 0 : (ssize_t)(len - (size_t)off < size ? len - (size_t)off : size);
		if (r > 0)
			memcpy(buf, js + off, (size_t)r);
		free(js);
		return (int)r;
	}
	vf = fi ? rfs_plan_file(m->plan, (size_t)fi->fh) : lookup(m, path);
	if (!vf)
		return -ENOENT;
	rfs_cache_count_request(m->rd.cache, size);
	r = rfs_vfile_read(vf, buf, size, (uint64_t)off, &m->rd, &err);
	if (r < 0) {
		/* the reader gets EIO (or SIGBUS in a mapping): say why; nobody
		 * is there to read the answer once the mount is ending */
		if (!atomic_load(&m->ending))
			log_error(m, vf, "reading", (long long)off, size, &err, changed_source(vf, &err));
		return -rfs_err_errno(&err);
	}
	return (int)r;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
	struct mnt *m = ctx();
	uint64_t total = rfs_plan_bytes(m->plan);

	(void)path;
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = 4096;
	sv->f_frsize = 4096;
	sv->f_blocks = (total + 4095) / 4096;
	sv->f_files = rfs_plan_nfiles(m->plan) + 1;
	sv->f_namemax = 255;
	sv->f_flag = ST_RDONLY;
	return 0;
}

static int ro_mknod(const char *p, mode_t m, dev_t d) { (void)p; (void)m; (void)d; return -EROFS; }
static int ro_mkdir(const char *p, mode_t m) { (void)p; (void)m; return -EROFS; }
static int ro_unlink(const char *p) { (void)p; return -EROFS; }
static int ro_symlink(const char *a, const char *b) { (void)a; (void)b; return -EROFS; }
static int ro_rename(const char *a, const char *b, unsigned int f) { (void)a; (void)b; (void)f; return -EROFS; }
static int ro_chmod(const char *p, mode_t m, struct fuse_file_info *fi) { (void)p; (void)m; (void)fi; return -EROFS; }
static int ro_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi) { (void)p; (void)u; (void)g; (void)fi; return -EROFS; }
static int ro_truncate(const char *p, off_t o, struct fuse_file_info *fi) { (void)p; (void)o; (void)fi; return -EROFS; }
static int ro_write(const char *p, const char *b, size_t s, off_t o, struct fuse_file_info *fi)
{ (void)p; (void)b; (void)s; (void)o; (void)fi; return -EROFS; }
static int ro_create(const char *p, mode_t m, struct fuse_file_info *fi) { (void)p; (void)m; (void)fi; return -EROFS; }
static int ro_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi)
{ (void)p; (void)tv; (void)fi; return -EROFS; }
static int ro_setxattr(const char *p, const char *n, const char *v, size_t s, int f)
{ (void)p; (void)n; (void)v; (void)s; (void)f; return -EROFS; }

static int ro_removexattr(const char *p, const char *n) { (void)p; (void)n; return -EROFS; }

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct mnt *m = fuse_get_context()->private_data;

	cfg->kernel_cache = 1;
	cfg->entry_timeout = RFS_TUNE_FUSE_TIMEOUT_S;
	cfg->attr_timeout = RFS_TUNE_FUSE_TIMEOUT_S;
	cfg->negative_timeout = RFS_TUNE_FUSE_TIMEOUT_S;
	cfg->use_ino = 1;
	cfg->nullpath_ok = 0; /* handlers look files up by path */
	conn->max_background = RFS_TUNE_FUSE_MAX_BACKGROUND;
	conn->congestion_threshold = 48;
	return m;
}

static const struct fuse_operations ops = {
	.init = op_init,
	.getattr = op_getattr,
	.readdir = op_readdir,
	.open = op_open,
	.read = op_read,
	.statfs = op_statfs,
	.mknod = ro_mknod,
	.mkdir = ro_mkdir,
	.unlink = ro_unlink,
	.rmdir = ro_unlink,
	.symlink = ro_symlink,
	.rename = ro_rename,
	.chmod = ro_chmod,
	.chown = ro_chown,
	.truncate = ro_truncate,
	.write = ro_write,
	.create = ro_create,
	.utimens = ro_utimens,
	.setxattr = ro_setxattr,
	.removexattr = ro_removexattr,
};

/* Finds "major:minor" of the mount at @mp in /proc/self/mountinfo (the
 * newest entry wins).  Stat-ing the mountpoint would deadlock: the loop
 * that answers it is not running yet. */
static int mount_devno(const char *mp, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	int found = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char devno[64], where[4096];

		if (sscanf(line, "%*d %*d %63s %*s %4095s", devno, where) != 2)
			continue;
		if (!strcmp(where, mp)) {
			snprintf(out, len, "%s", devno);
			found = 1;
		}
	}
	fclose(f);
	return found ? 0 : -1;
}

/* Raises the readahead of the mount (root only; a no-op elsewhere). */
static void raise_readahead(const char *mp, unsigned kb)
{
	char devno[64], path[128];
	FILE *f;

	if (!kb || mount_devno(mp, devno, sizeof(devno)))
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", devno);
	f = fopen(path, "re");
	if (f) {
		unsigned cur = 0;
		int same = fscanf(f, "%u", &cur) == 1 && cur == kb;

		fclose(f);
		if (same)
			return;
	}
	f = fopen(path, "we");
	if (!f)
		return;
	fprintf(f, "%u\n", kb);
	fclose(f);
}


/*
 * Runs in the mounted process once the loop is up.  The stat waits until
 * the kernel has the INIT reply (which lowers the readahead to the 128 KiB
 * it proposed), then the readahead is raised, and only then is the parent
 * told that the mount is live: files opened from then on get the larger
 * readahead, and the user cannot race an unmount against this stat.
 */
/*
 * Tells systemd (Type=notify units, contrib/systemd) that the mount is
 * live, or that it is stopping: one datagram to $NOTIFY_SOCKET, as
 * sd_notify(3) sends it, without linking libsystemd.  Nothing when the
 * variable is unset.
 */
static void notify_systemd(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n;
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@') || (n = strlen(path)) >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, n);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0; /* an abstract socket */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
		rfs_log(RFS_LOG_WARN, "cannot notify systemd at %s: %s", path, strerror(errno));
	close(fd);
}

static void *ready_thread(void *p)
{
	struct mnt *m = p;
	struct stat st;
	char ok = 0, hb[32];

	rfs_human_bytes(rfs_plan_bytes(m->plan), hb, sizeof(hb));
	if (stat(m->mp, &st)) {
		/* the mount does not answer: do not leave it behind */
		fprintf(stderr, "residfs: error: %s does not answer after mounting: %s\n", m->mp,
			strerror(errno));
		ok = 1;
		kill(getpid(), SIGTERM); /* the loop's handler ends it and unmounts */
	} else {
		char msg[PATH_MAX + 128];

		if (m->ra_kb)
			raise_readahead(m->mp, m->ra_kb);
		snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%ld\nSTATUS=serving %zu files (%s) at %s",
			 (long)getpid(), rfs_plan_nfiles(m->plan), hb, m->mp);
		notify_systemd(msg);
	}
	if (m->notify_fd >= 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);

		if (write(m->notify_fd, &ok, 1) != 1)
			ok = 1;
		close(m->notify_fd);
		m->notify_fd = -1;
		if (null >= 0) { /* a daemon: from now on, lines go to syslog or the log file */
			rfs_log_to_syslog();
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			close(null);
		}
	}
	if (!ok)
		rfs_log(RFS_LOG_INFO, "mounted at %s: %zu files, %s, pid %ld", m->mp,
			rfs_plan_nfiles(m->plan), hb, (long)getpid());
	return NULL;
}

/*
 * Watches for the end of the session (the mount gone, or a stop signal):
 * libfuse then waits for every request being answered before
 * fuse_loop_mt returns, and a read waiting on a remote block would hold
 * the exit for the whole fetch deadline (a minute, with the server gone).
 * So the remote engine is told at once: its waits and fetches end.
 */
static void *end_watch(void *p)
{
	struct mnt *m = p;
	struct timespec ts = { 0, 100 * 1000000L };

	/* libfuse clears the exit flag as its loop returns: the loop's
	 * caller sets ending then */
	while (!fuse_session_exited(m->se) && !atomic_load(&m->ending))
		nanosleep(&ts, NULL);
	atomic_store(&m->ending, 1);
	rfs_remote_cancel();
	return NULL;
}

/* In the parent: waits for the mounted child's word.  Returns the exit status. */
static int wait_for_child(int fd, pid_t child)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char status = 1;
	int r;

	do
		r = poll(&pfd, 1, 60000);
	while (r < 0 && errno == EINTR);
	if (r == 0) {
		fprintf(stderr, "residfs: error: the mount did not come up within 60 s\n");
		kill(child, SIGTERM);
		return 1;
	}
	if (read(fd, &status, 1) != 1)
		status = 1; /* the child died before saying anything; it printed why */
	return status ? 1 : 0;
}

const char *rfs_mount_fuse_version(void)
{
	return fuse_pkgversion();
}

int rfs_mount_run(struct rfs_plan *plan, const char *mountpoint,
		  const struct rfs_mount_opts *o)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config lc = { .clone_fd = 0, .max_idle_threads = RFS_TUNE_FUSE_IDLE_THREADS };
	struct mnt m = { .plan = plan, .uid = getuid(), .gid = getgid(), .notify_fd = -1 };
	pthread_t ready_th, end_th;
	int ready_started = 0, end_started = 0, foreground = o->foreground || o->debug, pipefd[2];
	char mp[PATH_MAX];
	struct fuse *f = NULL;
	struct stat st;
	int ret = 1;

	if (!realpath(mountpoint, mp) || stat(mp, &st)) {
		fprintf(stderr, "residfs: error: mountpoint %s: %s\n", mountpoint, strerror(errno));
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "residfs: error: mountpoint %s: not a directory\n", mountpoint);
		return 1;
	}
	/* building the plan parsed every header into JSON trees, now freed:
	 * give that memory back before the daemon settles (100k tensors: 60 MB) */
	malloc_trim(0);
	if (o->max_threads)
		lc.max_idle_threads = o->max_threads;
	snprintf(m.mp, sizeof(m.mp), "%s", mp);
	m.ra_kb = o->readahead_kb;
	if (!foreground) {
		/* our own daemonize: the parent returns only once the mount is live */
		pid_t pid;

		if (pipe2(pipefd, O_CLOEXEC)) {
			fprintf(stderr, "residfs: error: pipe: %s\n", strerror(errno));
			goto out;
		}
		fflush(NULL);
		rfs_remote_quiesce(); /* no thread survives the fork */
		pid = fork();
		if (pid < 0) {
			fprintf(stderr, "residfs: error: fork: %s\n", strerror(errno));
			goto out;
		}
		if (pid > 0) {
			close(pipefd[1]);
			_exit(wait_for_child(pipefd[0], pid));
		}
		close(pipefd[0]);
		m.notify_fd = pipefd[1];
		setsid();
		{
			struct rfs_err err = { 0 };

			if (rfs_remote_resume(&err)) {
				fprintf(stderr, "residfs: error: %s\n", err.msg);
				goto out;
			}
		}
	}
	{
		/* after the fork: a CUDA context does not survive one */
		struct rfs_err err = { 0 };

		m.rd.be = rfs_backend_new((enum rfs_backend_mode)o->backend, &err);
		if (!m.rd.be) {
			fprintf(stderr, "residfs: error: %s\n", err.msg);
			goto out;
		}
	}
	rfs_busguard_install(); /* before any read; -1: operands are read with pread */
	if (fuse_opt_add_arg(&args, "residfs") ||
	    fuse_opt_add_arg(&args, "-o") ||
	    fuse_opt_add_arg(&args, "ro,fsname=residfs,subtype=residfs,default_permissions") ||
	    (o->fuse_opts && (fuse_opt_add_arg(&args, "-o") || fuse_opt_add_arg(&args, o->fuse_opts))) ||
	    (o->debug && fuse_opt_add_arg(&args, "-d"))) {
		fprintf(stderr, "residfs: error: out of memory\n");
		goto out;
	}
	f = fuse_new(&args, &ops, sizeof(ops), &m);
	if (!f) {
		fprintf(stderr, "residfs: error: invalid FUSE options%s%s\n",
			o->fuse_opts ? ": " : "", o->fuse_opts ? o->fuse_opts : "");
		goto out;
	}
	if (fuse_mount(f, mp)) {
		fprintf(stderr, "residfs: error: cannot mount at %s (is /dev/fuse usable and fusermount3 installed?)\n", mp);
		goto out_destroy;
	}
	if (chdir("/")) {
		/* not fatal: only keeps the mount's cwd from pinning a directory */
	}
	{
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		m.rd.cache = rfs_cache_new(o->cache_bytes, ncpu > 0 ? (unsigned)(ncpu > 8 ? 8 : ncpu) : 1, 8);
		if (!m.rd.cache) {
			fprintf(stderr, "residfs: error: out of memory\n");
			goto out_unmount;
		}
	}
	if (fuse_set_signal_handlers(fuse_get_session(f)))
		goto out_unmount;
	{
		/* the helper threads leave the stop signals to libfuse's threads: a
		 * signal taken by a helper would wake none of them */
		sigset_t stop, old;

		sigemptyset(&stop);
		sigaddset(&stop, SIGTERM);
		sigaddset(&stop, SIGINT);
		sigaddset(&stop, SIGHUP);
		pthread_sigmask(SIG_BLOCK, &stop, &old);
		if (!pthread_create(&ready_th, NULL, ready_thread, &m))
			ready_started = 1;
		m.se = fuse_get_session(f);
		if (!pthread_create(&end_th, NULL, end_watch, &m))
			end_started = 1;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	/* a stop by SIGTERM/SIGINT/SIGHUP (systemctl stop) is clean: libfuse
	 * returns the signal's number then, and a negative errno on failure */
	ret = fuse_loop_mt(f, &lc) < 0 ? 1 : 0;
	atomic_store(&m.ending, 1);
	if (end_started)
		pthread_join(end_th, NULL);
	notify_systemd("STOPPING=1");
	fuse_remove_signal_handlers(fuse_get_session(f));
	if (ready_started)
		pthread_join(ready_th, NULL);
out_unmount:
	fuse_unmount(f);
	if (ready_started)
		rfs_log(RFS_LOG_INFO, "unmounted %s", mp);
out_destroy:
	fuse_destroy(f);
out:
	if (m.notify_fd >= 0) { /* failed before the mount was live */
		char bad = 1;

		if (write(m.notify_fd, &bad, 1) != 1) {
			/* the parent sees EOF and fails anyway */
		}
		close(m.notify_fd);
	}
	rfs_cache_free(m.rd.cache); /* first: its prefetch threads compute with the backend */
	rfs_backend_free(m.rd.be);
	fuse_opt_free_args(&args);
	return ret;
}
