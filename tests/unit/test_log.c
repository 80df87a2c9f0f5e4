/*
 * test_log.c - core/log.h: level names, the file sink's line format (UTC
 * time, pid, level), the level filter, lines dropped as repeats (by text
 * and by key), and the rate limit: a burst of 200 distinct lines writes at
 * most RFS_TUNE_LOG_BURST of them, and the next line that goes out after
 * a pause says exactly how many were dropped.  The log is process-wide:
 * the tests run in this order and each reads only what it wrote.
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

#include <unistd.h>

#include "core/log.h"
#include "core/tunables.h"

static char path[64];

/* What the log file holds from byte @from on (caller frees). */
static char *tail_from(long from)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f) - from;
	buf = calloc(1, (size_t)n + 1);
	assert_non_null(buf);
	fseek(f, from, SEEK_SET);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return buf;
}

static long fsize(void)
{
	FILE *f = fopen(path, "r");
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fclose(f);
	return n;
}

static int count(const char *text, const char *needle)
{
	int n = 0;

	for (; (text = strstr(text, needle)); text++)
		n++;
	return n;
}

static void test_levels(void **state)
{
	(void)state;
	assert_int_equal(rfs_log_level_parse("error"), RFS_LOG_ERROR);
	assert_int_equal(rfs_log_level_parse("warning"), RFS_LOG_WARN);
	assert_int_equal(rfs_log_level_parse("warn"), RFS_LOG_WARN);
	assert_int_equal(rfs_log_level_parse("info"), RFS_LOG_INFO);
	assert_int_equal(rfs_log_level_parse("debug"), RFS_LOG_DEBUG);
	assert_int_equal(rfs_log_level_parse("verbose"), -1);
	assert_int_equal(rfs_log_level_parse(""), -1);
	assert_string_equal(rfs_log_level_name(RFS_LOG_WARN), "warning");
}

static void test_file_format_and_filter(void **state)
{
	long at = fsize();
	char *t, pid[32];

	(void)state;
	rfs_log_set_level(RFS_LOG_INFO);
	rfs_log(RFS_LOG_INFO, "hello %d", 42);
	rfs_log(RFS_LOG_DEBUG, "not shown");
	rfs_log(RFS_LOG_ERROR, "bad %s", "thing");
	t = tail_from(at);
	snprintf(pid, sizeof(pid), "Z residfs[%ld] ", (long)getpid());
	/* 2026-11-30T01:02:03.456Z residfs[PID] info: hello 42 */
	assert_int_equal(count(t, "\n"), 2);
	assert_true(t[4] == '-' && t[10] == 'T' && t[19] == '.' && t[23] == 'Z');
	assert_non_null(strstr(t, pid));
	assert_non_null(strstr(t, "] info: hello 42\n"));
	assert_non_null(strstr(t, "] error: bad thing\n"));
	assert_null(strstr(t, "not shown"));
	free(t);
	rfs_log_set_level(RFS_LOG_DEBUG);
	at = fsize();
	rfs_log(RFS_LOG_DEBUG, "now shown");
	t = tail_from(at);
	assert_non_null(strstr(t, "] debug: now shown\n"));
	free(t);
	rfs_log_set_level(RFS_LOG_INFO);
}

static void test_repeats(void **state)
{
	unsigned long long lim0, rep0, lim1, rep1;
	long at = fsize();
	char *t;

	(void)state;
	rfs_log_counts(&lim0, &rep0);
	rfs_log_once(RFS_LOG_ERROR, "reading f at %d: cause", 1);
	rfs_log_once(RFS_LOG_ERROR, "reading f at %d: cause", 1);
	rfs_log_once(RFS_LOG_ERROR, "reading f at %d: cause", 2);
	rfs_log_once_key(RFS_LOG_ERROR, "k1", "attempt %d", 1);
	rfs_log_once_key(RFS_LOG_ERROR, "k1", "attempt %d", 2); /* same key, other text */
	rfs_log_once_key(RFS_LOG_ERROR, "k2", "attempt %d", 3);
	t = tail_from(at);
	assert_int_equal(count(t, "reading f at 1"), 1);
	assert_int_equal(count(t, "reading f at 2"), 1);
	assert_int_equal(count(t, "attempt 1"), 1);
	assert_int_equal(count(t, "attempt 2"), 0);
	assert_int_equal(count(t, "attempt 3"), 1);
	free(t);
	rfs_log_counts(&lim1, &rep1);
	assert_int_equal(rep1 - rep0, 2);
	assert_int_equal(lim1, lim0);
}

static void test_rate_limit(void **state)
{
	unsigned long long lim0, rep0, lim1, rep1, said;
	long at = fsize();
	const char *p;
	char *t;
	int i, written;

	(void)state;
	rfs_log_counts(&lim0, &rep0);
	for (i = 0; i < 200; i++)
		rfs_log(RFS_LOG_ERROR, "flood %d", i);
	t = tail_from(at);
	written = count(t, "flood ");
	free(t);
	assert_true(written <= RFS_TUNE_LOG_BURST + 1);
	assert_true(written >= RFS_TUNE_LOG_BURST - 12); /* the earlier tests used a few */
	rfs_log_counts(&lim1, &rep1);
	assert_int_equal(lim1 - lim0, 200 - written);
	sleep(1); /* RFS_TUNE_LOG_RATE lines come back */
	at = fsize();
	rfs_log(RFS_LOG_ERROR, "after the flood");
	t = tail_from(at);
	p = strstr(t, "] warning: ");
	assert_non_null(p);
	said = strtoull(p + strlen("] warning: "), NULL, 10);
	assert_int_equal(said, 200 - written);
	assert_non_null(strstr(t, "log lines dropped by the rate limit"));
	assert_non_null(strstr(t, "] error: after the flood\n"));
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_levels),
		cmocka_unit_test(test_file_format_and_filter),
		cmocka_unit_test(test_repeats),
		cmocka_unit_test(test_rate_limit),
	};
	struct rfs_err err = { 0 };
	int fd, ret;

	snprintf(path, sizeof(path), "/tmp/residfs-test-log.XXXXXX");
	fd = mkstemp(path);
	if (fd < 0 || rfs_log_set_file(path, &err)) {
		fprintf(stderr, "cannot make a log file: %s\n", err.msg);
		return 1;
	}
	close(fd);
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	unlink(path);
	return ret;
}
