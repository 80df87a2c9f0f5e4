/*
 * residfs stats: reads MOUNTPOINT/.residfs-stats (JSON made by the mount,
 * fs/mount.c) and shows it as a table, as JSON, or again and again.
 */
#include "stats.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"

#define STATS_FILE ".residfs-stats"

/* Undoes the octal escapes of /proc/self/mounts ("\040" for a space). */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

int rfs_is_residfs_mount(const char *path)
{
	char real[PATH_MAX], line[8192], mp[4096], type[256];
	FILE *f;
	int yes = 0;

	if (!realpath(path, real) || !(f = fopen("/proc/self/mounts", "re")))
		return 0;
	while (!yes && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*s %4095s %255s", mp, type) != 2)
			continue;
		unescape(mp);
		yes = !strcmp(mp, real) && !strcmp(type, "fuse.residfs");
	}
	fclose(f);
	return yes;
}

/* The stats file's text (caller frees), or NULL with a message printed. */
static char *read_stats(const char *mp)
{
	char path[PATH_MAX + 32], *buf = NULL;
	size_t len = 0, cap = 0;
	ssize_t n = -1;
	int fd;

	snprintf(path, sizeof(path), "%s/" STATS_FILE, mp);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "residfs: error: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			char *g = realloc(buf, cap = cap ? cap * 2 : 16384);

			if (!g) {
				fprintf(stderr, "residfs: error: out of memory\n");
				break;
			}
			buf = g;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0)
				fprintf(stderr, "residfs: error: %s: %s\n", path, strerror(errno));
			break;
		}
		len += (size_t)n;
	}
	close(fd);
	if (!buf || n < 0 || !len) {
		if (buf && !len && n == 0)
			fprintf(stderr, "residfs: error: %s is empty\n", path);
		free(buf);
		return NULL;
	}
	buf[len] = 0;
	return buf;
}

static double num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static const char *str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : "?";
}

static const char *hb(double v, char *buf)
{
	rfs_human_bytes(v > 0 ? (uint64_t)v : 0, buf, 32);
	return buf;
}

/* " (12.3 MB/s)" when watching, from the change since the last screen. */
static void rate(char *out, size_t len, double now_v, double prev_v, double dt)
{
	char b[32];

	if (dt <= 0 || prev_v < 0 || now_v < prev_v)
		*out = 0;
	else
		snprintf(out, len, ", %s/s", hb((now_v - prev_v) / dt, b));
}

struct prev {
	double t, bytes, computed, rbytes;
	int have;
};

static void print_table(const char *mp, const cJSON *j, struct prev *p, double t)
{
	const cJSON *rem = cJSON_GetObjectItemCaseSensitive(j, "remote"), *src;
	double dt = p->have ? t - p->t : 0;
	char a[32], b[32], r1[48] = "", r2[48] = "", r3[48] = "";

	rate(r1, sizeof(r1), num(j, "bytes"), p->have ? p->bytes : -1, dt);
	rate(r2, sizeof(r2), num(j, "computed_bytes"), p->have ? p->computed : -1, dt);
	printf("residfs mount %s (pid %.0f, residfs %s)\n", mp, num(j, "pid"), str(j, "version"));
	printf("  %-12s %s\n", "backend", str(j, "backend"));
	printf("  %-12s %.0f, %s\n", "files", num(j, "files"), hb(num(j, "size"), a));
	printf("  %-12s %.0f requests, %s served%s\n", "reads", num(j, "requests"),
	       hb(num(j, "bytes"), a), r1);
	printf("  %-12s %.0f hits (%.0f made by prefetch), %.0f misses, %.0f waits, %.0f uncached\n",
	       "block cache", num(j, "hits"), num(j, "prefetch_hits"), num(j, "misses"),
	       num(j, "waits"), num(j, "uncached"));
	printf("  %-12s %s of %s held, %.0f evictions\n", "", hb(num(j, "cache_used"), a),
	       hb(num(j, "cache_budget"), b), num(j, "evictions"));
	printf("  %-12s %s in %.2f s%s; %.0f blocks by prefetch\n", "computed",
	       hb(num(j, "computed_bytes"), a), num(j, "compute_seconds"), r2, num(j, "prefetched"));
	printf("  %-12s %.0f%s\n", "errors", num(j, "errors"),
	       num(j, "log_lines_dropped") > 0 ? " (some log lines dropped by the rate limit)" : "");
	if (cJSON_IsObject(rem)) {
		rate(r3, sizeof(r3), num(rem, "bytes"), p->have ? p->rbytes : -1, dt);
		printf("  %-12s %.0f requests, %s fetched%s, %.0f retries, %.0f errors\n", "remote",
		       num(rem, "requests"), hb(num(rem, "bytes"), a), r3, num(rem, "retries"),
		       num(rem, "errors"));
		printf("  %-12s %.0f memory hits, %.0f disk hits, %.0f misses, %.0f prefetched; "
		       "memory %s (peak %s)\n", "", num(rem, "memory_hits"), num(rem, "disk_hits"),
		       num(rem, "misses"), num(rem, "prefetched"), hb(num(rem, "memory_used"), a),
		       hb(num(rem, "memory_peak"), b));
		printf("\n  %-40s %9s %10s %9s %9s %8s %8s %7s\n", "source", "requests", "fetched",
		       "disk hits", "mem hits", "misses", "retries", "errors");
		cJSON_ArrayForEach(src, cJSON_GetObjectItemCaseSensitive(rem, "sources"))
			printf("  %-40s %9.0f %10s %9.0f %9.0f %8.0f %8.0f %7.0f\n", str(src, "source"),
			       num(src, "requests"), hb(num(src, "bytes"), a), num(src, "disk_hits"),
			       num(src, "memory_hits"), num(src, "misses"), num(src, "retries"),
			       num(src, "errors"));
		p->rbytes = num(rem, "bytes");
	}
	p->t = t;
	p->bytes = num(j, "bytes");
	p->computed = num(j, "computed_bytes");
	p->have = 1;
}

static volatile sig_atomic_t stop;

static void on_int(int sig)
{
	(void)sig;
	stop = 1;
}

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int rfs_stats_cmd(const char *mp, int json, int watch, double interval)
{
	struct sigaction sa = { .sa_handler = on_int };
	struct prev p = { 0 };
	int tty = isatty(1), first = 1;

	if (!rfs_is_residfs_mount(mp)) {
		fprintf(stderr, "residfs: error: %s is not a residfs mount (see /proc/mounts)\n", mp);
		return 1;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	do {
		char *text = read_stats(mp);
		cJSON *j;

		if (!text)
			return 1;
		j = cJSON_Parse(text);
		if (!cJSON_IsObject(j)) {
			fprintf(stderr, "residfs: error: %s/" STATS_FILE ": not the JSON of a residfs mount\n", mp);
			cJSON_Delete(j);
			free(text);
			return 1;
		}
		if (json) {
			char *line = cJSON_PrintUnformatted(j);

			/* one object per line: watch output is JSON lines */
			printf("%s\n", line ? line : text);
			free(line);
		} else {
			if (watch && tty)
				printf("\033[H\033[2J");
			else if (!first)
				printf("\n");
			print_table(mp, j, &p, mono());
		}
		fflush(stdout);
		cJSON_Delete(j);
		free(text);
		first = 0;
		if (watch && !stop) {
			struct timespec ts = { (time_t)interval,
					       (long)((interval - (double)(time_t)interval) * 1e9) };

			while (nanosleep(&ts, &ts) && errno == EINTR && !stop)
				;
		}
	} while (watch && !stop);
	return 0;
}
