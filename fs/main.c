/*
 * residfs command line: mount, export, inspect, demo.
 *
 * Usage errors exit 2, runtime errors 1; messages go to stderr as
 * "residfs: error: ..." and name the file and tensor concerned.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/bsrc.h"
#include "core/cache.h"
#include "kernels/backend.h"
#include "core/demo.h"
#include "core/export.h"
#include "core/inspect.h"
#include "core/plan.h"
#include "core/http.h"
#include "core/log.h"
#include "core/remote.h"
#include "core/read.h"
#include "core/recipe.h"
#include "core/spec.h"
#include "core/tunables.h"
#include "core/util.h"
#include "mount.h"
#include "stats.h"

#define EXIT_USAGE 2

static const char usage_text[] =
	"usage: residfs <command> [options]\n"
	"\n"
	"commands:\n"
	"  mount   SPEC MOUNTPOINT   mount the result of SPEC read-only at MOUNTPOINT\n"
	"  export  SPEC OUTDIR       write exactly what the mount would show into OUTDIR\n"
	"  inspect SPEC              print what the mount would contain\n"
	"  prefetch SPEC|MOUNTPOINT  fill the disk block cache with the remote files of\n"
	"                            SPEC (or read all of a mount), with a progress display\n"
	"  stats   MOUNTPOINT        the counters of a live mount: reads, cache, compute,\n"
	"                            errors, remote requests per source\n"
	"  demo                      build a small model pair, compute its residuals,\n"
	"                            mount base+residuals and check it bit for bit\n"
	"\n"
	"SPEC:\n"
	"  BASE+DELTA        base model plus residuals      BASE+0.5*DELTA   scaled\n"
	"  BASE+D1+D2        several residuals              BASE-DELTA       negated\n"
	"  INSTRUCT-BASE     compute mode: the result is a residuals directory\n"
	"  A term is a local directory, a Hugging Face Hub repository (hf://ORG/NAME[@REV],\n"
	"  or ORG/NAME when no such local path exists; REV a branch, tag or commit,\n"
	"  default main), a web directory (https://HOST/PATH/) or an S3 prefix\n"
	"  (s3://BUCKET/PREFIX).  Paths and names may contain '+' and '-': a SPEC is\n"
	"  split only where every operand resolves.\n"
	"  Long form instead of SPEC: --base DIR --delta DIR [--scale S] ... | --instruct DIR --base DIR\n"
	"  Merges: --config RECIPE.yml instead of a SPEC (mount, export, inspect) shows\n"
	"  the merged model of a mergekit recipe, computed on read (docs/merges.md).\n"
	"  A scale must survive float32: 0, or a magnitude from 1.1754944e-38 to 3.4028235e38.\n"
	"\n"
	"options (mount, export, inspect):\n"
	"  --dtype bf16|fp16|fp32        output dtype of floating tensors\n"
	"                                (default: the base tensor's; fp32 in compute mode)\n"
	"  --rounding single|cast-first  single (default): one rounding of the float32 sum;\n"
	"                                cast-first: as the residuals package on bf16/fp16\n"
	"  --passthrough                 show base tensors that no delta names unchanged\n"
	"                                (default: that is an error)\n"
	"  --random-seed N               seed of the dare methods' masks (with --config;\n"
	"                                default: the recipe's random_seed, else 0)\n"
	"  --out-shard-size SIZE         with --config: mergekit's shards (model-0000N-of-\n"
	"                                0000M, name order) of at most SIZE bytes (K, M, B:\n"
	"                                thousands, millions, billions; default: the base's\n"
	"                                layout)\n"
	"  --backend auto|cpu|cuda       where merges are computed (mount and export; default\n"
	"                                $RESIDFS_BACKEND, else auto: the GPU only if\n"
	"                                present and measured faster)\n"
	"remote terms (mount, export, inspect, prefetch; docs/remote.md):\n"
	"  --remote-cache-dir DIR        disk block cache (default\n"
	"                                $XDG_CACHE_HOME/residfs/blocks or ~/.cache/residfs/blocks)\n"
	"  --remote-cache-size SIZE      its bound, 0 to turn it off (default 10G; it also\n"
	"                                keeps 5% of its file system free)\n"
	"  --remote-connections N        parallel connections, 1 to 64 (default 8)\n"
	"  --remote-memory SIZE          remote bytes kept in memory (default 256M)\n"
	"  --remote-timeout SECONDS      deadline of one read before EIO, 1 to 3600 (default 60)\n"
	"  Environment: HF_ENDPOINT, HF_TOKEN / HUGGING_FACE_HUB_TOKEN / HF_TOKEN_PATH,\n"
	"  HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE=1 (HF cache only), CURL_CA_BUNDLE;\n"
	"  for S3: AWS_ENDPOINT_URL[_S3], AWS_REGION, AWS_ACCESS_KEY_ID,\n"
	"  AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE (~/.aws/credentials).\n"
	"mount:\n"
	"  -f, --foreground              do not daemonize (systemd units: Type=notify)\n"
	"  -o OPT[,OPT...]               mount options; repeated -o options add up.  FUSE\n"
	"                                options (allow_other, ...), residfs options as\n"
	"                                NAME=VALUE (cache_size=1G, backend=cpu, ...: every\n"
	"                                mount option above and below, '_' for '-'); fstab's\n"
	"                                defaults, noauto, nofail, _netdev, user, rw, x-*,\n"
	"                                comment=* are accepted and ignored\n"
	"  -d, --debug                   FUSE debug output (implies -f)\n"
	"  --readahead-kb N              readahead of the mount when root, 0 to 1048576\n"
	"                                (default 4096)\n"
	"  --cache-size SIZE             block cache budget, e.g. 512M, 1.5G, 0; whole bytes,\n"
	"                                at most the machine's memory (default 256M)\n"
	"  --log-level LEVEL             error, warning, info (default) or debug (every\n"
	"                                command; a mount's lines matter most)\n"
	"  --log-file FILE               append log lines to FILE (default: stderr, then\n"
	"                                syslog once the mount runs in the background)\n"
	"  Also: residfs SPEC MOUNTPOINT [-o OPTS], the form mount.fuse3 runs for\n"
	"  'mount -t fuse.residfs SPEC MOUNTPOINT' and /etc/fstab (type fuse.residfs).\n"
	"export:\n"
	"  --force                       write into a non-empty OUTDIR (never a SPEC's\n"
	"                                directory)\n"
	"  --quiet                       no progress display (export, prefetch)\n"
	"  --threads N                   compute threads, 1 to 64 (default: one per CPU,\n"
	"                                at most 16)\n"
	"inspect:\n"
	"  --numbers                     with --config: compute each merged tensor's\n"
	"                                whole-tensor numbers (ties and breadcrumbs\n"
	"                                thresholds, dare's L1 rescales, slerp's\n"
	"                                coefficients) and show them; reads every input\n"
	"inspect, stats:\n"
	"  --json                        JSON output\n"
	"stats:\n"
	"  --watch                       show again every --interval until interrupted\n"
	"                                (with --json: one JSON object per line)\n"
	"  --interval SECONDS            0.1 to 3600 (default 1)\n"
	"demo:\n"
	"  --dir DIR                     work in DIR (default: a new temporary directory)\n"
	"  --keep                        keep the generated files\n"
	"\n"
	"residfs --help shows this, residfs --version the versions.\n"
	"Unmount with: fusermount3 -u MOUNTPOINT (or umount as root)\n"
	"Version: residfs --version (libfuse, libcurl, CUDA, the CPU kernels picked)\n"
	"Exit status: 0 success, 1 error, 2 usage error.\n";

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "residfs: error: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'residfs --help'.\n");
	exit(EXIT_USAGE);
}

static int fail(const struct rfs_err *err)
{
	fprintf(stderr, "residfs: error: %s\n", err->msg);
	return err->code == RFS_E_SPEC ? EXIT_USAGE : 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum {
	OPT_BASE = 256, OPT_DELTA, OPT_SCALE, OPT_INSTRUCT, OPT_DTYPE, OPT_ROUNDING,
	OPT_PASSTHROUGH, OPT_FORCE, OPT_QUIET, OPT_JSON, OPT_DIR, OPT_KEEP,
	OPT_READAHEAD, OPT_THREADS, OPT_CACHE, OPT_BACKEND, OPT_RCACHE_DIR, OPT_RCACHE_SIZE,
	OPT_RCONN, OPT_RMEM, OPT_RTIMEOUT, OPT_LOG_LEVEL, OPT_LOG_FILE, OPT_WATCH, OPT_INTERVAL,
	OPT_CONFIG, OPT_SEED, OPT_SHARD, OPT_NUMBERS,
};

static const struct option long_opts[] = {
	{ "base", required_argument, NULL, OPT_BASE },
	{ "delta", required_argument, NULL, OPT_DELTA },
	{ "scale", required_argument, NULL, OPT_SCALE },
	{ "instruct", required_argument, NULL, OPT_INSTRUCT },
	{ "dtype", required_argument, NULL, OPT_DTYPE },
	{ "rounding", required_argument, NULL, OPT_ROUNDING },
	{ "passthrough", no_argument, NULL, OPT_PASSTHROUGH },
	{ "foreground", no_argument, NULL, 'f' },
	{ "debug", no_argument, NULL, 'd' },
	{ "force", no_argument, NULL, OPT_FORCE },
	{ "quiet", no_argument, NULL, OPT_QUIET },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "numbers", no_argument, NULL, OPT_NUMBERS },
	{ "dir", required_argument, NULL, OPT_DIR },
	{ "keep", no_argument, NULL, OPT_KEEP },
	{ "readahead-kb", required_argument, NULL, OPT_READAHEAD },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "cache-size", required_argument, NULL, OPT_CACHE },
	{ "backend", required_argument, NULL, OPT_BACKEND },
	{ "remote-cache-dir", required_argument, NULL, OPT_RCACHE_DIR },
	{ "remote-cache-size", required_argument, NULL, OPT_RCACHE_SIZE },
	{ "remote-connections", required_argument, NULL, OPT_RCONN },
	{ "remote-memory", required_argument, NULL, OPT_RMEM },
	{ "remote-timeout", required_argument, NULL, OPT_RTIMEOUT },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "log-file", required_argument, NULL, OPT_LOG_FILE },
	{ "watch", no_argument, NULL, OPT_WATCH },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "random-seed", required_argument, NULL, OPT_SEED },
	{ "out-shard-size", required_argument, NULL, OPT_SHARD },
	{ "interval", required_argument, NULL, OPT_INTERVAL },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

struct cli {
	const char *cmd;
	struct rfs_opts opts;
	struct rfs_mount_opts mount;
	const char *base, *instruct;
	const char *delta[RFS_SPEC_MAX_TERMS];
	double scale[RFS_SPEC_MAX_TERMS];
	int scale_set[RFS_SPEC_MAX_TERMS];
	size_t ndelta;
	int force, quiet, json, keep;
	unsigned threads;
	const char *dir;
	const char *pos[4];
	size_t npos;
	char *fuse_opts;        /* the FUSE options of every -o joined with ',' (owned) */
	struct rfs_remote_conf remote;
	int watch;
	double interval;
	const char *config;     /* --config: a mergekit recipe instead of a SPEC */
	int has_seed;
	int numbers;            /* inspect --numbers */
	unsigned long long seed;
	uint64_t shard_size;    /* --out-shard-size, 0: the base's layout */
	int helper;             /* invoked as mount.fuse3 runs a filesystem: SPEC MP -o ... */
};

/* A whole number in [@min, @max], decimal digits only (no sign, no space). */
static unsigned parse_uint(const char *opt, const char *s, unsigned min, unsigned max)
{
	unsigned long v = 0;
	const char *p;

	if (!*s)
		die_usage("%s: '' is not a whole number", opt);
	for (p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			die_usage("%s: '%s' is not a whole number", opt, s);
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > max)
			die_usage("%s: '%s' is more than %u", opt, s, max);
	}
	if (v < min)
		die_usage("%s: '%s' is less than %u", opt, s, min);
	return (unsigned)v;
}

/* The machine's physical memory in bytes; 2^50 when unknown. */
static uint64_t phys_mem(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);

	if (pages <= 0 || psz <= 0 || (uint64_t)pages > (1ull << 50) / (uint64_t)psz)
		return 1ull << 50;
	return (uint64_t)pages * (uint64_t)psz;
}

/*
 * "256M", "1.5G", "1048576", "0" -> bytes: digits with an optional
 * fraction, an optional K, M, G or T (powers of 1024, either case), then an
 * optional "B" or "iB" ("iB" only after a letter).  The result must be a
 * whole number of bytes, at most the machine's physical memory.
 */
/* A size: digits, an optional fraction and K, M, G or T (powers of 1024);
 * with @mem_bound, at most the machine's memory. */
static uint64_t parse_size(const char *opt, const char *s, int mem_bound)
{
	const char *p = s, *num_end;
	double v, mult = 1;
	char hb[32];

	while (*p >= '0' && *p <= '9')
		p++;
	if (p == s)
		die_usage("%s: '%s' is not a size (a number with an optional K, M, G or T)", opt, s);
	if (*p == '.') {
		const char *f = ++p;

		while (*p >= '0' && *p <= '9')
			p++;
		if (p == f)
			die_usage("%s: '%s' is not a size (a number with an optional K, M, G or T)", opt, s);
	}
	num_end = p;
	switch (*p) {
	case 'k': case 'K': mult = 0x1p10; p++; break;
	case 'm': case 'M': mult = 0x1p20; p++; break;
	case 'g': case 'G': mult = 0x1p30; p++; break;
	case 't': case 'T': mult = 0x1p40; p++; break;
	}
	if (p != num_end && p[0] == 'i' && p[1] == 'B')
		p += 2;
	else if (*p == 'B')
		p++;
	if (*p || num_end - s > 30)
		die_usage("%s: '%s' is not a size (a number with an optional K, M, G or T)", opt, s);
	v = strtod(s, NULL) * mult; /* the text is digits and one '.': strtod reads it all */
	if (v != floor(v))
		die_usage("%s: '%s' is not a whole number of bytes", opt, s);
	if (v > 0x1p62)
		die_usage("%s: '%s' is too large", opt, s);
	if (mem_bound && v > (double)phys_mem()) {
		rfs_human_bytes(phys_mem(), hb, sizeof(hb));
		die_usage("%s: '%s' is more than this machine's memory (%s)", opt, s, hb);
	}
	return (uint64_t)v;
}

/* FUSE options: added to those of earlier -o, as mount(8) does. */
static void add_fuse_opts(struct cli *c, const char *opts)
{
	size_t old = c->fuse_opts ? strlen(c->fuse_opts) : 0, n = strlen(opts);
	char *p;

	if (!n)
		die_usage("-o: an empty option list");
	p = realloc(c->fuse_opts, old + n + 2);
	if (!p) {
		fprintf(stderr, "residfs: error: out of memory\n");
		exit(1);
	}
	if (old)
		p[old++] = ',';
	memcpy(p + old, opts, n + 1);
	c->fuse_opts = p;
	c->mount.fuse_opts = p;
}

static void apply_opt(struct cli *c, int o, const char *optarg, const char *name);

/* The residfs options that -o takes too (as NAME=VALUE, '_' or '-'). */
static const char *const o_residfs[] = {
	"dtype", "rounding", "passthrough", "backend", "readahead-kb", "cache-size",
	"remote-cache-dir", "remote-cache-size", "remote-connections", "remote-memory",
	"remote-timeout", "log-level", "log-file",
};

/* Options that mount(8), mount.fuse3, systemd and fstab pass along and
 * that mean nothing here: accepted and dropped.  "rw" too: mount(8) adds
 * it when no "ro" is given, and the mount is read-only whatever it says. */
static const char *const o_ignored[] = {
	"defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users", "owner",
	"group", "rw", "ro", "nobootwait", "noauto_unmount",
	/* access-time flags: nothing is ever written, and libfuse 3 refuses them */
	"diratime", "nodiratime", "lazytime", "nolazytime", "relatime", "norelatime",
	"strictatime", "nostrictatime",
};
/* ... and these prefixes (x-systemd.automount, comment=systemd.foo). */
static const char *const o_ignored_prefix[] = { "x-", "comment=" };

/* FUSE and kernel mount options handed to libfuse as they are: those
 * libfuse 3 takes and that residfs does not set itself (its timeouts,
 * kernel_cache, subtype: `stats` finds mounts by the type fuse.residfs). */
static const char *const o_fuse[] = {
	"allow_other", "allow_root", "auto_unmount", "default_permissions", "fsname", "umask",
	"uid", "gid", "auto_cache", "noforget", "remember", "debug", "suid", "nosuid", "dev",
	"nodev", "exec", "noexec", "async", "sync", "atime", "noatime", "dirsync", "context",
	"fscontext", "defcontext", "rootcontext",
};

static int in_list(const char *const *list, size_t n, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strlen(list[i]) == len && !strncmp(list[i], name, len))
			return 1;
	return 0;
}

/*
 * One -o list: residfs options are applied as their long forms, the
 * generic mount options of o_ignored are dropped, FUSE options are kept
 * for libfuse (added to those of earlier -o, as mount(8) does), and
 * anything else is an error that names it.
 */
static void parse_o_list(struct cli *c, const char *list)
{
	char *copy = strdup(list), *save = NULL, *item;

	if (!copy) {
		fprintf(stderr, "residfs: error: out of memory\n");
		exit(1);
	}
	if (!*list)
		die_usage("-o: an empty option list");
	for (item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		const char *eq = strchr(item, '=');
		size_t len = eq ? (size_t)(eq - item) : strlen(item), i;
		char norm[64], label[96];
		const struct option *lo;

		for (i = 0; i < sizeof(o_ignored_prefix) / sizeof(*o_ignored_prefix); i++)
			if (!strncmp(item, o_ignored_prefix[i], strlen(o_ignored_prefix[i])))
				break;
		if (i < sizeof(o_ignored_prefix) / sizeof(*o_ignored_prefix) ||
		    in_list(o_ignored, sizeof(o_ignored) / sizeof(*o_ignored), item, len))
			continue;
		if (in_list(o_fuse, sizeof(o_fuse) / sizeof(*o_fuse), item, len)) {
			add_fuse_opts(c, item);
			continue;
		}
		if (len >= sizeof(norm))
			die_usage("-o %s: unknown mount option (residfs(1), MOUNT OPTIONS)", item);
		for (i = 0; i < len; i++)
			norm[i] = item[i] == '_' ? '-' : item[i];
		norm[len] = 0;
		if (!in_list(o_residfs, sizeof(o_residfs) / sizeof(*o_residfs), norm, len))
			die_usage("-o %s: unknown mount option (residfs(1), MOUNT OPTIONS)", item);
		for (lo = long_opts; strcmp(lo->name, norm); lo++)
			;
		snprintf(label, sizeof(label), "-o %.*s", (int)len, item);
		if (lo->has_arg == required_argument && (!eq || !eq[1]))
			die_usage("%s needs a value: %.*s=VALUE", label, (int)len, item);
		if (lo->has_arg == no_argument && eq)
			die_usage("%s takes no value", label);
		apply_opt(c, lo->val, eq ? eq + 1 : NULL, label);
	}
	free(copy);
}

/*
 * Applies option @o (an OPT_ code or a short option) with @arg; @name is
 * how the user wrote it ("--cache-size", "-o cache_size"), for messages.
 */
static void apply_opt(struct cli *c, int o, const char *optarg, const char *name)
{
	switch (o) {
	case OPT_BASE:
		c->base = optarg;
		break;
	case OPT_DELTA:
		if (c->ndelta >= RFS_SPEC_MAX_TERMS - 1)
			die_usage("too many --delta (at most %d)", RFS_SPEC_MAX_TERMS - 1);
		c->scale[c->ndelta] = 1.0;
		c->delta[c->ndelta++] = optarg;
		break;
	case OPT_SCALE: {
		struct rfs_err err = { 0 };
		double v;

		if (!c->ndelta || c->scale_set[c->ndelta - 1])
			die_usage("--scale must follow the --delta it applies to");
		if (rfs_spec_scale_parse(optarg, &v, &err))
			die_usage("--scale: %s", err.msg);
		c->scale[c->ndelta - 1] = v;
		c->scale_set[c->ndelta - 1] = 1;
		break;
	}
	case OPT_INSTRUCT:
		c->instruct = optarg;
		break;
	case OPT_DTYPE:
		c->opts.out_dtype = rfs_dtype_parse_user(optarg);
		if (c->opts.out_dtype < 0)
			die_usage("%s: '%s' is not one of bf16, fp16, fp32", name, optarg);
		break;
	case OPT_ROUNDING:
		if (!strcmp(optarg, "single"))
			c->opts.rounding = RFS_ROUND_SINGLE;
		else if (!strcmp(optarg, "cast-first"))
			c->opts.rounding = RFS_ROUND_CAST_FIRST;
		else
			die_usage("%s: '%s' is not single or cast-first", name, optarg);
		break;
	case OPT_PASSTHROUGH:
		c->opts.passthrough = 1;
		break;
	case 'f':
		c->mount.foreground = 1;
		break;
	case 'd':
		c->mount.debug = 1;
		break;
	case 'o':
		parse_o_list(c, optarg);
		break;
	case OPT_FORCE:
		c->force = 1;
		break;
	case OPT_QUIET:
		c->quiet = 1;
		break;
	case OPT_NUMBERS:
		c->numbers = 1;
		break;
	case OPT_JSON:
		c->json = 1;
		break;
	case OPT_DIR:
		c->dir = optarg;
		break;
	case OPT_KEEP:
		c->keep = 1;
		break;
	case OPT_READAHEAD:
		c->mount.readahead_kb = parse_uint(name, optarg, 0, 1u << 20);
		break;
	case OPT_THREADS:
		c->threads = parse_uint(name, optarg, 1, RFS_TUNE_EXPORT_MAX_THREADS);
		break;
	case OPT_CACHE:
		c->mount.cache_bytes = parse_size(name, optarg, 1);
		break;
	case OPT_RCACHE_DIR:
		if (!*optarg)
			die_usage("%s: an empty path", name);
		c->remote.cache_dir = optarg;
		break;
	case OPT_RCACHE_SIZE:
		c->remote.cache_size = parse_size(name, optarg, 0);
		break;
	case OPT_RCONN:
		c->remote.connections = parse_uint(name, optarg, 1, 64);
		break;
	case OPT_RMEM:
		c->remote.memory = parse_size(name, optarg, 1);
		if (c->remote.memory < (32ull << 20))
			die_usage("%s: '%s' is less than 32M (four parts of 8 MiB)", name,
				  optarg);
		break;
	case OPT_RTIMEOUT:
		c->remote.timeout_s = parse_uint(name, optarg, 1, 3600);
		break;
	case OPT_BACKEND:
		c->mount.backend = rfs_backend_parse(optarg);
		if (c->mount.backend < 0)
			die_usage("%s: '%s' is not one of auto, cpu, cuda", name, optarg);
		break;
	case OPT_LOG_LEVEL: {
		int l = rfs_log_level_parse(optarg);

		if (l < 0)
			die_usage("%s: '%s' is not one of error, warning, info, debug", name, optarg);
		rfs_log_set_level((enum rfs_log_level)l);
		break;
	}
	case OPT_LOG_FILE: {
		struct rfs_err err = { 0 };

		if (!*optarg)
			die_usage("%s: an empty path", name);
		if (rfs_log_set_file(optarg, &err)) {
			fprintf(stderr, "residfs: error: %s\n", err.msg);
			exit(1);
		}
		break;
	}
	case OPT_WATCH:
		c->watch = 1;
		break;
	case OPT_CONFIG:
		if (!*optarg)
			die_usage("%s: an empty path", name);
		c->config = optarg;
		break;
	case OPT_SHARD: {
		/* mergekit's units: a number with K, M or B for thousands, millions,
		 * billions ("5B" is its default, 5e9 bytes) */
		char *end;
		double v;

		errno = 0;
		v = strtod(optarg, &end);
		if (*end == 'K' || *end == 'k')
			v *= 1e3, end++;
		else if (*end == 'M' || *end == 'm')
			v *= 1e6, end++;
		else if (*end == 'B' || *end == 'b')
			v *= 1e9, end++;
		if (*optarg < '0' || *optarg > '9' || *end || errno || !(v >= 1 && v <= 0x1p62))
			die_usage("%s: '%s' is not a size in bytes (a number with an optional K, M or B, as mergekit takes it)",
				  name, optarg);
		c->shard_size = (uint64_t)v;
		break;
	}
	case OPT_SEED: {
		char *end;

		errno = 0;
		c->seed = strtoull(optarg, &end, 10);
		if (*optarg < '0' || *optarg > '9' || *end || errno)
			die_usage("%s: '%s' is not a whole number", name, optarg);
		c->has_seed = 1;
		break;
	}
	case OPT_INTERVAL: {
		char *end;

		errno = 0;
		c->interval = strtod(optarg, &end);
		if (!*optarg || *end || errno || !(c->interval >= 0.1 && c->interval <= 3600))
			die_usage("%s: '%s' is not a number of seconds from 0.1 to 3600", name, optarg);
		break;
	}
	case 'h':
		fputs(usage_text, stdout);
		exit(0);
	default:
		fprintf(stderr, "Try 'residfs --help'.\n");
		exit(EXIT_USAGE);
	}
}

/* Which commands each option applies to (a bit per entry of commands[]). */
enum { C_MOUNT = 1, C_EXPORT = 2, C_INSPECT = 4, C_PREFETCH = 8, C_STATS = 16, C_DEMO = 32 };
#define C_SPEC (C_MOUNT | C_EXPORT | C_INSPECT | C_PREFETCH)

static unsigned opt_commands(int o)
{
	switch (o) {
	case OPT_BACKEND: return C_MOUNT | C_EXPORT;
	case 'f': case 'd': case 'o': case OPT_READAHEAD: case OPT_CACHE: return C_MOUNT;
	case OPT_FORCE: case OPT_THREADS: return C_EXPORT;
	case OPT_QUIET: return C_EXPORT | C_PREFETCH;
	case OPT_JSON: return C_INSPECT | C_STATS;
	case OPT_NUMBERS: return C_INSPECT;
	case OPT_WATCH: case OPT_INTERVAL: return C_STATS;
	case OPT_DIR: case OPT_KEEP: return C_DEMO;
	case OPT_LOG_LEVEL: case OPT_LOG_FILE: case 'h': return ~0u;
	case OPT_CONFIG: case OPT_SEED: case OPT_SHARD: return C_MOUNT | C_EXPORT | C_INSPECT;
	default: return C_SPEC;  /* the SPEC's long form, its options, remote terms */
	}
}

static const char *const commands[] = { "mount", "export", "inspect", "prefetch", "stats", "demo" };

static unsigned command_bit(const char *cmd)
{
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(*commands); i++)
		if (!strcmp(cmd, commands[i]))
			return 1u << i;
	return 0;
}

static void parse_args(int argc, char **argv, struct cli *c)
{
	unsigned cmd = command_bit(c->cmd);
	int o;

	c->opts.out_dtype = -1;
	c->mount.readahead_kb = RFS_TUNE_READAHEAD_KB;
	c->mount.cache_bytes = RFS_CACHE_DEFAULT_BUDGET;
	c->mount.backend = -1;
	c->interval = 1.0;
	rfs_remote_conf_default(&c->remote);
	optind = 2; /* after the command, or after the SPEC of the helper form */
	while ((o = getopt_long(argc, argv, "fdo:h", long_opts, NULL)) != -1) {
		const struct option *lo;
		char nm[64] = "";

		for (lo = long_opts; lo->name && lo->val != o; lo++)
			;
		if (lo->name)
			snprintf(nm, sizeof(nm), "--%s", lo->name);
		else
			snprintf(nm, sizeof(nm), "-%c", o);
		if (cmd && o != '?' && !(opt_commands(o) & cmd))
			die_usage("%s does not apply to %s", nm, c->cmd);
		apply_opt(c, o, optarg, nm);
	}
	for (; optind < argc; optind++) {
		if (c->npos >= 4)
			die_usage("too many arguments");
		c->pos[c->npos++] = argv[optind];
	}
	if (c->helper && c->npos != 2)
		die_usage("unknown command '%s'", argv[1]);
	rfs_remote_configure(&c->remote);
	if (c->mount.backend < 0 && getenv("RESIDFS_BACKEND") && *getenv("RESIDFS_BACKEND")) {
		c->mount.backend = rfs_backend_parse(getenv("RESIDFS_BACKEND"));
		if (c->mount.backend < 0)
			die_usage("RESIDFS_BACKEND: '%s' is not one of auto, cpu, cuda",
				  getenv("RESIDFS_BACKEND"));
	}
	if (c->mount.backend < 0)
		c->mount.backend = RFS_BACKEND_AUTO;
}

/* The SPEC from the positional argument or the long flags; @npos_spec is
 * how many positionals the command takes besides the SPEC. */
static int build_spec(struct cli *c, size_t nrest, struct rfs_spec *spec, const char **rest)
{
	struct rfs_err err = { 0 };
	int longform = c->base || c->instruct || c->ndelta;
	size_t i;

	if (longform) {
		if (c->npos != nrest)
			die_usage("%s: expected %zu argument(s) after the options", c->cmd, nrest);
		if (!c->base)
			die_usage("--base is required with --delta/--instruct");
		if (c->instruct && c->ndelta)
			die_usage("--instruct (compute mode) and --delta (apply mode) do not go together");
		if (!c->instruct && !c->ndelta)
			die_usage("--base needs --delta DIR (apply) or --instruct DIR (compute)");
		if (c->instruct) {
			if (rfs_spec_add(spec, c->instruct, 1.0, &err) ||
			    rfs_spec_add(spec, c->base, -1.0, &err))
				return fail(&err);
		} else {
			if (rfs_spec_add(spec, c->base, 1.0, &err))
				return fail(&err);
			for (i = 0; i < c->ndelta; i++)
				if (rfs_spec_add(spec, c->delta[i], c->scale[i], &err))
					return fail(&err);
		}
		for (i = 0; i < nrest; i++)
			rest[i] = c->pos[i];
		return 0;
	}
	if (c->npos != nrest + 1)
		die_usage("%s: expected SPEC%s", c->cmd,
			  nrest ? (strcmp(c->cmd, "mount") ? " OUTDIR" : " MOUNTPOINT") : "");
	if (rfs_spec_parse(c->pos[0], NULL, NULL, spec, &err))
		return fail(&err);
	for (i = 0; i < nrest; i++)
		rest[i] = c->pos[i + 1];
	return 0;
}

/* The plan of a mergekit recipe (--config FILE). */
static int make_recipe_plan(struct cli *c, size_t nrest, const char **rest, struct rfs_plan **plan)
{
	struct rfs_recipe *r = calloc(1, sizeof(*r));
	struct rfs_err err = { 0 };
	size_t i;

	if (c->base || c->instruct || c->ndelta)
		die_usage("--config takes the place of a SPEC: no --base, --delta or --instruct with it");
	if (c->npos != nrest)
		die_usage("%s --config FILE: expected %s", c->cmd,
			  nrest ? (strcmp(c->cmd, "mount") ? "OUTDIR" : "MOUNTPOINT") : "no other argument");
	if (!r) {
		fprintf(stderr, "residfs: error: out of memory\n");
		return 1;
	}
	for (i = 0; i < nrest; i++)
		rest[i] = c->pos[i];
	if (rfs_recipe_load(c->config, r, &err)) {
		free(r);
		return fail(&err);
	}
	if (c->has_seed) {
		r->has_seed = 1;
		r->random_seed = c->seed;
	}
	r->out_shard_size = c->shard_size;
	if (rfs_plan_build_recipe(r, &c->opts, plan, &err)) {
		rfs_recipe_release(r);
		free(r);
		return fail(&err);
	}
	rfs_remote_set_prefetch(1);
	return 0;
}

static int make_plan(struct cli *c, size_t nrest, const char **rest, struct rfs_plan **plan)
{
	struct rfs_spec spec = { 0 };
	struct rfs_err err = { 0 };
	int ret;

	if (c->config)
		return make_recipe_plan(c, nrest, rest, plan);
	if (c->has_seed)
		die_usage("--random-seed goes with --config (a recipe's dare methods)");
	if (c->numbers)
		die_usage("--numbers goes with --config (a recipe's per-tensor numbers)");
	if (c->shard_size)
		die_usage("--out-shard-size goes with --config (mergekit's layout of a recipe's result)");
	ret = build_spec(c, nrest, &spec, rest);

	if (ret) {
		rfs_spec_release(&spec);
		return ret;
	}
	if (rfs_plan_build(&spec, &c->opts, plan, &err)) {
		rfs_spec_release(&spec);
		return fail(&err);
	}
	rfs_remote_set_prefetch(1); /* headers are read: readers stream now */
	return 0;
}

/* What kind of file @m is, in words. */
static const char *file_kind(mode_t m)
{
	return S_ISREG(m) ? "a regular file" : S_ISCHR(m) ? "a character device" :
	       S_ISBLK(m) ? "a block device" : S_ISFIFO(m) ? "a FIFO" :
	       S_ISSOCK(m) ? "a socket" : "not a directory";
}

/* The mountpoint must be an existing directory; says what is wrong. */
static int check_mountpoint(const char *mp)
{
	struct stat st;

	if (stat(mp, &st)) {
		if (errno == ENOENT)
			fprintf(stderr, "residfs: error: mountpoint %s does not exist (create the directory first)\n",
				mp);
		else
			fprintf(stderr, "residfs: error: mountpoint %s: %s\n", mp, strerror(errno));
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "residfs: error: mountpoint %s is %s, not a directory\n", mp,
			file_kind(st.st_mode));
		return 1;
	}
	return 0;
}

static int cmd_mount(struct cli *c)
{
	struct rfs_plan *plan = NULL;
	const char *mp;
	size_t i;
	int ret = make_plan(c, 1, &mp, &plan);

	if (ret)
		return ret;
	if (check_mountpoint(mp)) {
		rfs_plan_free(plan);
		return 1;
	}
	for (i = 0; i < rfs_plan_nnotes(plan) && (c->mount.foreground || c->mount.debug || isatty(2)); i++)
		fprintf(stderr, "residfs: note: %s\n", rfs_plan_note(plan, i));
	ret = rfs_mount_run(plan, mp, &c->mount);
	rfs_plan_free(plan);
	return ret;
}

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

struct progress {
	double t0, last;
	int ended;
};

static void show_progress(uint64_t done, uint64_t total, const char *file, void *ctx)
{
	struct progress *p = ctx;
	double t = now();
	char a[32], b[32];

	if ((t - p->last < 0.2 && done < total) || p->ended)
		return;
	p->last = t;
	rfs_human_bytes(done, a, sizeof(a));
	rfs_human_bytes(total, b, sizeof(b));
	fprintf(stderr, "\r\033[K%5.1f%%  %s / %s  %.0f MB/s  %s", total ? 100.0 * (double)done / (double)total : 100.0,
		a, b, (double)done / 1e6 / (t - p->t0 > 1e-6 ? t - p->t0 : 1e-6), file);
	if (done >= total) {
		fprintf(stderr, "\n");
		p->ended = 1;
	}
}

/* What export did besides writing (leftovers of earlier exports removed,
 * before any progress is shown): said even with --quiet, files disappear. */
static void show_note(const char *msg, void *ctx)
{
	(void)ctx;
	fprintf(stderr, "residfs: note: %s\n", msg);
}

/* Exports @plan into @out computing on @be (no cache: every byte is read once). */
static int do_export(struct rfs_plan *plan, struct rfs_backend *be, const char *out, int force,
		     int quiet, unsigned threads, double *secs)
{
	const struct rfs_reader rd = { .be = be, .cache = NULL };
	struct progress pr = { now(), 0, 0 };
	struct rfs_export_opts eo = {
		.force = force, .stop = &stop_flag, .threads = threads,
		.progress = (!quiet && isatty(2)) ? show_progress : NULL, .progress_ctx = &pr,
		.note = show_note,
	};
	struct sigaction sa = { .sa_handler = on_signal };
	struct rfs_err err = { 0 };
	int ret;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	ret = rfs_export(plan, out, &rd, &eo, &err);
	if (secs)
		*secs = now() - pr.t0;
	if (ret) {
		if (eo.progress)
			fprintf(stderr, "\n");
		return fail(&err);
	}
	return 0;
}

/* The backend of --backend (RESIDFS_BACKEND); NULL when it cannot be had
 * here (said on stderr). */
static struct rfs_backend *make_backend(const struct cli *c)
{
	struct rfs_err err = { 0 };
	struct rfs_backend *be = rfs_backend_new((enum rfs_backend_mode)c->mount.backend, &err);

	if (!be)
		fprintf(stderr, "residfs: error: %s\n", err.msg);
	return be;
}

static int cmd_export(struct cli *c)
{
	struct rfs_plan *plan = NULL;
	struct rfs_backend *be;
	const char *out;
	uint64_t total = 0;
	double secs = 0;
	int ret = make_plan(c, 1, &out, &plan);

	if (ret)
		return ret;
	be = make_backend(c);
	if (!be) {
		rfs_plan_free(plan);
		return 1;
	}
	ret = do_export(plan, be, out, c->force, c->quiet, c->threads, &secs);
	if (!ret && !c->quiet) {
		total = rfs_plan_bytes(plan);
		fprintf(stderr, "residfs: exported %zu files, %llu bytes to %s in %.2f s (%.0f MB/s)\n",
			rfs_plan_nfiles(plan), (unsigned long long)total, out, secs,
			secs > 0 ? (double)total / 1e6 / secs : 0.0);
		{
			char desc[256];

			rfs_backend_describe(be, desc, sizeof(desc));
			fprintf(stderr, "residfs: backend %s\n", desc);
		}
	}
	rfs_backend_free(be);
	rfs_plan_free(plan);
	return ret;
}

static int cmd_inspect(struct cli *c)
{
	struct rfs_plan *plan = NULL;
	int ret = make_plan(c, 0, NULL, &plan);

	if (ret)
		return ret;
	if (c->numbers) {
		struct rfs_err err = { 0 };

		if (rfs_inspect_numbers(plan, &err)) {
			rfs_plan_free(plan);
			return fail(&err);
		}
	}
	if (c->json) {
		struct rfs_err err = { 0 };

		ret = rfs_inspect_json(plan, stdout, &err) ? fail(&err) : 0;
	} else
		rfs_inspect_text(plan, stdout);
	rfs_plan_free(plan);
	return ret;
}

/* ---- prefetch ------------------------------------------------------------- */

/* The export's progress display over several files. */
struct pfprog {
	struct progress pr;
	int quiet;
	uint64_t base, total;
	const char *file;
};

static void pf_progress(uint64_t done, void *ctx)
{
	struct pfprog *p = ctx;

	if (!p->quiet)
		show_progress(p->base + done, p->total, p->file, &p->pr);
}

/* prefetch MOUNTPOINT: every file of the mount read once, which fills the
 * disk block cache (and the page cache) on the way. */
static int prefetch_mount(struct cli *c, const char *mp)
{
	struct pfprog pr = { .pr = { now(), 0, 0 }, .quiet = c->quiet };
	DIR *d = opendir(mp);
	struct dirent *e;
	char *buf = malloc(RFS_TUNE_REMOTE_PART), path[PATH_MAX];
	struct stat st;
	int ret = 0;

	if (!d || !buf) {
		fprintf(stderr, "residfs: error: %s: %s\n", mp, strerror(errno));
		free(buf);
		if (d)
			closedir(d);
		return 1;
	}
	while ((e = readdir(d)))
		if (snprintf(path, sizeof(path), "%s/%s", mp, e->d_name) < (int)sizeof(path) &&
		    !stat(path, &st) && S_ISREG(st.st_mode))
			pr.total += (uint64_t)st.st_size;
	rewinddir(d);
	while (!ret && (e = readdir(d))) {
		uint64_t done = 0;
		ssize_t n;
		int fd;

		if (snprintf(path, sizeof(path), "%s/%s", mp, e->d_name) >= (int)sizeof(path) ||
		    stat(path, &st) || !S_ISREG(st.st_mode))
			continue;
		pr.file = e->d_name;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "\nresidfs: error: %s: %s\n", path, strerror(errno));
			ret = 1;
			break;
		}
		while ((n = read(fd, buf, RFS_TUNE_REMOTE_PART)) > 0) {
			done += (uint64_t)n;
			pf_progress(done, &pr);
		}
		if (n < 0) {
			fprintf(stderr, "\nresidfs: error: %s at %llu: %s\n", path, (unsigned long long)done,
				strerror(errno));
			ret = 1;
		}
		pr.base += done;
		close(fd);
	}
	closedir(d);
	free(buf);
	if (!ret && !pr.total)
		pf_progress(0, &pr);
	return ret;
}

/* prefetch SPEC: every remote file of the SPEC's terms into the disk block
 * cache, without mounting. */
static int cmd_prefetch(struct cli *c)
{
	struct pfprog pr = { .quiet = c->quiet };
	struct rfs_plan *plan = NULL;
	struct rfs_bsrc **seen = NULL;
	size_t nseen = 0, i, j, k;
	int ret;

	if (c->npos == 1 && !c->base && !c->instruct && rfs_is_residfs_mount(c->pos[0]))
		return prefetch_mount(c, c->pos[0]);
	if (!c->remote.cache_size)
		die_usage("prefetch: the disk block cache is off (--remote-cache-size 0): nothing to fill");
	ret = make_plan(c, 0, NULL, &plan);
	if (ret)
		return ret;
	for (i = 0; i < rfs_plan_nfiles(plan); i++) {
		const struct rfs_vfile *vf = rfs_plan_file(plan, i);

		for (j = 0; j < rfs_vfile_nsrcs(vf); j++) {
			struct rfs_bsrc *s = rfs_vfile_src(vf, j), **g;

			for (k = 0; k < nseen && seen[k] != s; k++)
				;
			if (k < nseen || !rfs_bsrc_is_remote(s))
				continue;
			g = realloc(seen, (nseen + 1) * sizeof(*seen));
			if (!g) {
				fprintf(stderr, "residfs: error: out of memory\n");
				free(seen);
				rfs_plan_free(plan);
				return 1;
			}
			seen = g;
			seen[nseen++] = s;
			pr.total += s->size;
		}
	}
	pr.pr.t0 = now();
	for (i = 0; i < nseen && !ret; i++) {
		struct rfs_err err = { 0 };

		pr.file = seen[i]->name;
		if (rfs_remote_fill(seen[i], pf_progress, &pr, &err)) {
			if (!c->quiet)
				fprintf(stderr, "\n");
			ret = fail(&err);
		}
		pr.base += seen[i]->size;
	}
	if (!ret && !c->quiet) {
		char tb[32];

		rfs_human_bytes(pr.total, tb, sizeof(tb));
		fprintf(stderr, "prefetch: %zu remote files, %s, in the disk block cache\n", nseen, tb);
	}
	free(seen);
	rfs_plan_free(plan);
	return ret;
}

/* ---- demo ---------------------------------------------------------------- */

static int run_cmd(char *const argv[])
{
	pid_t pid = fork();
	int st;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		execvp(argv[0], argv);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int rm_rf(const char *path)
{
	char *const argv[] = { "rm", "-rf", "--", (char *)path, NULL };

	return run_cmd(argv);
}

/* Reads a whole file through the mount with read(2). */
/* Reads a whole file through the mount as a loader would: sequential
 * 4 MiB reads (one huge read() defeats the readahead's pipelining). */
static int slurp(const char *path, char **buf, size_t *len)
{
	struct stat st;
	size_t got = 0;
	char *b;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) || !(b = malloc((size_t)st.st_size + 1))) {
		close(fd);
		return -1;
	}
	while (got < (size_t)st.st_size) {
		size_t want = (size_t)st.st_size - got < (4u << 20) ? (size_t)st.st_size - got : 4u << 20;
		ssize_t r = read(fd, b + got, want);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (got != (size_t)st.st_size) {
		free(b);
		return -1;
	}
	*buf = b;
	*len = got;
	return 0;
}

static int same_tensors(const char *mnt_file, const struct rfs_src *inst, size_t *ntensors,
			uint64_t *bytes, double *read_s, char *why, size_t whylen)
{
	struct rfs_st_file f;
	struct rfs_err err = { 0 };
	char *data = NULL;
	size_t len, i;
	uint64_t hlen = 0;
	int k, ret = -1;

	double t0 = now();

	if (slurp(mnt_file, &data, &len) || len < 8) {
		snprintf(why, whylen, "%.900s: cannot read through the mount", mnt_file);
		free(data);
		return -1;
	}
	*read_s += now() - t0;
	*bytes += len;
	for (k = 7; k >= 0; k--)
		hlen = (hlen << 8) | (unsigned char)data[k];
	if (rfs_st_parse(mnt_file, data + 8, hlen, len, &f, &err)) {
		snprintf(why, whylen, "%s", err.msg);
		free(data);
		return -1;
	}
	for (i = 0; i < f.ntensors; i++) {
		const struct rfs_st_tensor *t = &f.tensors[i];
		const struct rfs_src_tensor *it = rfs_src_find(inst, t->name);
		char *want;

		if (!it || it->t->end - it->t->begin != t->end - t->begin || it->t->dtype != t->dtype) {
			snprintf(why, whylen, "tensor '%s': missing or different shape in the instruct model", t->name);
			goto out;
		}
		want = malloc(t->end - t->begin + 1);
		if (!want || rfs_bsrc_pread(it->file->src, want, t->end - t->begin,
					    it->file->data_off + it->t->begin, NULL)) {
			free(want);
			snprintf(why, whylen, "cannot read the instruct tensor '%s'", t->name);
			goto out;
		}
		if (memcmp(want, data + f.data_off + t->begin, t->end - t->begin)) {
			free(want);
			snprintf(why, whylen, "tensor '%s' differs from the instruct model", t->name);
			goto out;
		}
		free(want);
		(*ntensors)++;
	}
	ret = 0;
out:
	rfs_st_release(&f);
	free(data);
	return ret;
}

static int cmd_demo(struct cli *c, const char *self)
{
	struct rfs_demo_cfg cfg;
	struct rfs_err err = { 0 };
	struct rfs_plan *plan = NULL;
	struct rfs_spec spec = { 0 };
	struct rfs_src *inst = NULL;
	struct rfs_backend *be = NULL;
	char dir[PATH_MAX], base[PATH_MAX + 16], ins[PATH_MAX + 16], res[PATH_MAX + 16];
	char mnt[PATH_MAX + 16], specs[3 * PATH_MAX + 64], why[1024] = "", hb[32];
	uint64_t bytes = 0, rbytes = 0;
	size_t i, ntensors = 0;
	double t0, tgen, texp, tmount, tread;
	int ret = 1, mounted = 0, made_dir = 0;

	if (c->npos)
		die_usage("demo takes no arguments");
	rfs_demo_default(&cfg);
	if (c->dir) {
		if (mkdir(c->dir, 0755) && errno != EEXIST) {
			fprintf(stderr, "residfs: error: %s: %s\n", c->dir, strerror(errno));
			return 1;
		}
		if (!realpath(c->dir, dir)) {
			fprintf(stderr, "residfs: error: %s: %s\n", c->dir, strerror(errno));
			return 1;
		}
	} else {
		const char *tmp = getenv("TMPDIR");

		snprintf(dir, sizeof(dir), "%s/residfs-demo.XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(dir)) {
			fprintf(stderr, "residfs: error: cannot create a temporary directory: %s\n", strerror(errno));
			return 1;
		}
		made_dir = 1;
	}
	snprintf(base, sizeof(base), "%s/base", dir);
	snprintf(ins, sizeof(ins), "%s/instruct", dir);
	snprintf(res, sizeof(res), "%s/residuals", dir);
	snprintf(mnt, sizeof(mnt), "%s/merged", dir);
	printf("residfs demo in %s\n", dir);

	t0 = now();
	if (rfs_demo_generate(dir, &cfg, &err))
		goto err;
	tgen = now() - t0;
	printf("1. generated a Llama-shaped bf16 pair (hidden %u, %u layers, vocab %u -> %u) in %.2f s\n",
	       cfg.hidden, cfg.layers, cfg.vocab, cfg.vocab + cfg.added, tgen);

	/* 2. residuals = instruct - base, with residfs's compute mode */
	if (rfs_spec_add(&spec, ins, 1.0, &err) || rfs_spec_add(&spec, base, -1.0, &err))
		goto err;
	{
		struct rfs_opts o = { .out_dtype = -1 };

		if (rfs_plan_build(&spec, &o, &plan, &err))
			goto err;
	}
	rbytes = rfs_plan_bytes(plan);
	/* auto: the demo's own export ignores --backend (its mount, a child
	 * process, follows RESIDFS_BACKEND) */
	be = rfs_backend_new(RFS_BACKEND_AUTO, &err);
	if (!be)
		goto err;
	if (do_export(plan, be, res, 1, 1, 0, &texp))
		goto out;
	rfs_plan_free(plan);
	plan = NULL;
	rfs_human_bytes(rbytes, hb, sizeof(hb));
	printf("2. computed residuals instruct-base (float32): %s in %.2f s (%.0f MB/s) -> %s\n",
	       hb, texp, (double)rbytes / 1e6 / texp, res);

	/* 3. mount base+residuals */
	if (mkdir(mnt, 0755) && errno != EEXIST) {
		fprintf(stderr, "residfs: error: %s: %s\n", mnt, strerror(errno));
		goto out;
	}
	snprintf(specs, sizeof(specs), "%s+%s", base, res);
	t0 = now();
	{
		char *const argv[] = { (char *)self, "mount", specs, mnt, NULL };

		if (run_cmd(argv) != 0) {
			fprintf(stderr, "residfs: error: the mount failed\n");
			goto out;
		}
	}
	tmount = now() - t0;
	mounted = 1;
	printf("3. mounted %s at %s in %.0f ms\n", specs, mnt, tmount * 1e3);

	/* 4. every merged tensor must equal the instruct model's, bit for bit */
	if (rfs_src_open(ins, &inst, &err))
		goto err;
	tread = 0;
	for (i = 1; i <= 2; i++) {
		char f[PATH_MAX + 64];

		snprintf(f, sizeof(f), "%s/model-0000%zu-of-00002.safetensors", mnt, i);
		if (same_tensors(f, inst, &ntensors, &bytes, &tread, why, sizeof(why))) {
			fprintf(stderr, "residfs: error: demo check failed: %s\n", why);
			goto out;
		}
	}
	if (ntensors != inst->ntensors) {
		fprintf(stderr, "residfs: error: demo check failed: %zu merged tensors, the instruct model has %zu\n",
			ntensors, inst->ntensors);
		goto out;
	}
	rfs_human_bytes(bytes, hb, sizeof(hb));
	printf("4. read %s of merged shards through the mount in %.2f s (%.0f MB/s, cold): "
	       "all %zu tensors equal the instruct model bit for bit\n",
	       hb, tread, (double)bytes / 1e6 / tread, ntensors);
	ret = 0;
	goto out;
err:
	fprintf(stderr, "residfs: error: %s\n", err.msg);
out:
	if (mounted) {
		char *const argv[] = { "fusermount3", "-u", mnt, NULL };

		if (run_cmd(argv) == 0)
			printf("5. unmounted %s\n", mnt);
		else
			ret = 1;
	}
	rfs_src_close(inst);
	rfs_backend_free(be);
	rfs_plan_free(plan);
	rfs_spec_release(&spec);
	if (!c->keep && !ret && made_dir)
		rm_rf(dir);
	else if (c->keep || ret)
		printf("files kept in %s\n", dir);
	printf(ret ? "demo FAILED\n" : "demo OK\n");
	return ret;
}

/*
 * Every shard of every term is one open file for the life of the command
 * (a mount's daemon included), and the usual soft limit of 1024 stops a
 * model of a thousand shards: the soft limit goes up to the hard one,
 * which is what the administrator allows.  Best effort.
 */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl)) {
		/* stay with the soft limit: a model that needs more fails
		 * with "Too many open files" naming the file */
	}
}

static int is_command(const char *s)
{
	return command_bit(s) != 0;
}

static int run_command(struct cli *c, const char *argv0)
{
	char self[PATH_MAX];
	ssize_t n;

	if (!strcmp(c->cmd, "mount"))
		return cmd_mount(c);
	if (!strcmp(c->cmd, "export"))
		return cmd_export(c);
	if (!strcmp(c->cmd, "inspect"))
		return cmd_inspect(c);
	if (!strcmp(c->cmd, "prefetch"))
		return cmd_prefetch(c);
	if (!strcmp(c->cmd, "stats")) {
		if (c->npos != 1)
			die_usage("stats: expected MOUNTPOINT");
		return rfs_stats_cmd(c->pos[0], c->json, c->watch, c->interval);
	}
	if (!strcmp(c->cmd, "demo")) {
		n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n <= 0)
			snprintf(self, sizeof(self), "%s", argv0);
		else
			self[n] = 0;
		return cmd_demo(c, self);
	}
	die_usage("unknown command '%s'", c->cmd);
}

/*
 * Invoked as /sbin/mount.residfs (a link installed by meson install) for
 * `mount -t residfs` and fstab lines of type residfs: mount(8) runs
 * "mount.residfs SPEC MP [-sfnv] [-N NS] [-o OPTS] [-t TYPE]".  The
 * arguments become "residfs SPEC MP -o OPTS" (the form mount.fuse3 runs);
 * -n, -s, -v and -t mean nothing here, -f (fake) checks and exits 0.
 */
static int mount_helper(int argc, char **argv, int *fake, char ***out)
{
	char **v = calloc((size_t)argc + 2, sizeof(*v));
	int i, n = 0;

	if (!v)
		return -1;
	v[n++] = argv[0];
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-o") || !strcmp(a, "-t") || !strcmp(a, "-N")) {
			if (i + 1 >= argc)
				die_usage("%s needs a value", a);
			if (!strcmp(a, "-N"))
				die_usage("-N (another mount namespace) is not supported");
			if (!strcmp(a, "-o")) {
				v[n++] = argv[i];
				v[n++] = argv[i + 1];
			}
			i++;
		} else if (a[0] == '-' && a[1] && strspn(a + 1, "sfnv") == strlen(a + 1)) {
			if (strchr(a, 'f'))
				*fake = 1;
		} else {
			v[n++] = argv[i];
		}
	}
	*out = v;
	return n;
}

int main(int argc, char **argv)
{
	struct cli c = { 0 };
	char **hv = NULL;
	const char *me = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	int ret, fake = 0;

	if (!strncmp(me, "mount.", 6)) {
		argc = mount_helper(argc, argv, &fake, &hv);
		if (argc < 0) {
			fprintf(stderr, "residfs: error: out of memory\n");
			return 1;
		}
		argv = hv;
		if (argc != 3 && (argc < 5 || strcmp(argv[3], "-o"))) {
			free(hv);
			die_usage("usage: %s SPEC MOUNTPOINT [-o OPTIONS]", me);
		}
	}
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		char info[256];

		rfs_backend_build_info(info, sizeof(info));
		printf("residfs %s\nlibfuse %s (FUSE API %d)\n%s\n%s\n", RESIDFS_VERSION,
		       rfs_mount_fuse_version(), FUSE_API_USED, rfs_http_version(), info);
		return 0;
	}
	rfs_http_global_init(); /* before any thread */
	c.cmd = argv[1];
	if (hv || (!is_command(argv[1]) && argv[1][0] != '-' &&
		   (strpbrk(argv[1], "/+-:") || !access(argv[1], F_OK)))) {
		/* mount.fuse3 (mount -t fuse.residfs, fstab) runs "residfs SPEC MP -o OPTS" */
		c.cmd = "mount";
		c.helper = 1;
		c.pos[c.npos++] = argv[1];
	}
	parse_args(argc, argv, &c);
	raise_nofile();
	if (fake) { /* mount -f: check everything, mount nothing */
		struct rfs_plan *plan = NULL;
		const char *mp;

		ret = make_plan(&c, 1, &mp, &plan);
		if (!ret)
			ret = check_mountpoint(mp);
		rfs_plan_free(plan);
	} else {
		ret = run_command(&c, argv[0]);
	}
	free(c.fuse_opts);
	free(hv);
	return ret;
}
