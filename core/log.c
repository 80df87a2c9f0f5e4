/*
 * Logging: stderr, then syslog or a file once daemonized (log.h).
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "tunables.h"

static struct {
	pthread_mutex_t lk;
	enum rfs_log_level level;
	int fd;          /* --log-file, or -1 */
	int syslog;      /* daemonized, no file */
	double tokens;   /* rate limit: lines that may go out now */
	double last;     /* when tokens were last refilled */
	unsigned long long limited, repeats, dropped_since;
	XXH64_hash_t seen[RFS_TUNE_LOG_SEEN];
	size_t nseen, seen_next;
} L = {
	.lk = PTHREAD_MUTEX_INITIALIZER,
	.level = RFS_LOG_INFO,
	.fd = -1,
	.tokens = RFS_TUNE_LOG_BURST,
	.last = -1,
};

static const char *const names[] = { "error", "warning", "info", "debug" };

int rfs_log_level_parse(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(s, names[i]))
			return (int)i;
	return !strcmp(s, "warn") ? RFS_LOG_WARN : -1;
}

const char *rfs_log_level_name(enum rfs_log_level l)
{
	return (unsigned)l < 4 ? names[l] : "?";
}

void rfs_log_set_level(enum rfs_log_level l)
{
	__atomic_store_n(&L.level, l, __ATOMIC_RELAXED);
}

int rfs_log_enabled(enum rfs_log_level l)
{
	return l <= __atomic_load_n(&L.level, __ATOMIC_RELAXED);
}

enum rfs_code rfs_log_set_file(const char *path, struct rfs_err *err)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);

	if (fd < 0)
		return rfs_errsys(err, "--log-file %s", path);
	pthread_mutex_lock(&L.lk);
	if (L.fd >= 0)
		close(L.fd);
	L.fd = fd;
	pthread_mutex_unlock(&L.lk);
	return RFS_OK;
}

void rfs_log_to_syslog(void)
{
	pthread_mutex_lock(&L.lk);
	if (L.fd < 0 && !L.syslog) {
		openlog("residfs", LOG_PID, LOG_DAEMON);
		L.syslog = 1;
	}
	pthread_mutex_unlock(&L.lk);
}

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Has @line been written before?  Remembers it if not (L.lk held). */
static int seen_before(const char *line)
{
	XXH64_hash_t h = XXH3_64bits(line, strlen(line));
	size_t i;

	for (i = 0; i < L.nseen; i++)
		if (L.seen[i] == h)
			return 1;
	L.seen[L.seen_next] = h;
	L.seen_next = (L.seen_next + 1) % RFS_TUNE_LOG_SEEN;
	if (L.nseen < RFS_TUNE_LOG_SEEN)
		L.nseen++;
	return 0;
}

/* Writes @line at @l to the sink (L.lk held). */
static void emit(enum rfs_log_level l, const char *line)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

	if (L.fd >= 0) {
		char out[1400], stamp[40];
		struct timespec ts;
		struct tm tm;
		int n;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
		n = snprintf(out, sizeof(out), "%s.%03ldZ residfs[%ld] %s: %s\n", stamp,
			     ts.tv_nsec / 1000000, (long)getpid(), names[l], line);
		if (n > (int)sizeof(out) - 1) {
			n = (int)sizeof(out) - 1;
			out[n - 1] = '\n';
		}
		if (write(L.fd, out, (size_t)n) != n) {
			/* nowhere left to say it */
		}
	} else if (L.syslog) {
		syslog(prio[l], "%s: %s", names[l], line);
	} else {
		fprintf(stderr, "residfs: %s: %s\n", names[l], line);
	}
}

/* @key: NULL, or what makes the line a repeat ("" : its text). */
static void vlog(enum rfs_log_level l, const char *key, const char *fmt, va_list ap)
{
	char line[1200];
	double t;

	if (!rfs_log_enabled(l))
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	pthread_mutex_lock(&L.lk);
	if (key && seen_before(*key ? key : line)) {
		L.repeats++;
		pthread_mutex_unlock(&L.lk);
		return;
	}
	t = mono();
	if (L.last >= 0) {
		L.tokens += (t - L.last) * RFS_TUNE_LOG_RATE;
		if (L.tokens > RFS_TUNE_LOG_BURST)
			L.tokens = RFS_TUNE_LOG_BURST;
	}
	L.last = t;
	if (L.tokens < 1) {
		L.limited++;
		L.dropped_since++;
		pthread_mutex_unlock(&L.lk);
		return;
	}
	L.tokens -= 1;
	if (L.dropped_since) {
		char note[128];

		snprintf(note, sizeof(note), "%llu log lines dropped by the rate limit (%d a second)",
			 L.dropped_since, RFS_TUNE_LOG_RATE);
		emit(RFS_LOG_WARN, note);
		L.dropped_since = 0;
	}
	emit(l, line);
	pthread_mutex_unlock(&L.lk);
}

void rfs_log(enum rfs_log_level l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(l, NULL, fmt, ap);
	va_end(ap);
}

void rfs_log_once(enum rfs_log_level l, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(l, "", fmt, ap);
	va_end(ap);
}

void rfs_log_once_key(enum rfs_log_level l, const char *key, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(l, key, fmt, ap);
	va_end(ap);
}

void rfs_log_counts(unsigned long long *limited, unsigned long long *repeats)
{
	pthread_mutex_lock(&L.lk);
	*limited = L.limited;
	*repeats = L.repeats;
	pthread_mutex_unlock(&L.lk);
}
