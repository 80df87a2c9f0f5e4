/*
 * tdir.c - what a term is (tdir.h): the choice among local directories
 * (tlocal.c), Hub repositories (hub.c) and web directories (webdir.c).
 */
#include "tdir.h"

#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

int rfs_tdir_is_remote(const char *term)
{
	return !strncmp(term, "hf://", 5) || !strncmp(term, "s3://", 5) ||
	       !strncasecmp(term, "http://", 7) || !strncasecmp(term, "https://", 8);
}

/* A web directory term in a SPEC: http(s)://HOST/.../ with nothing that
 * could start another term's URL. */
static int web_form(const char *t)
{
	const char *rest = strstr(t, "://") + 3;
	size_t n = strlen(t);

	return n > 0 && t[n - 1] == '/' && *rest && *rest != '/' && !strstr(rest, "://");
}

int rfs_tdir_probe(const char *term)
{
	char repo[256], rev[256];
	struct stat st;

	if (!strncasecmp(term, "http://", 7) || !strncasecmp(term, "https://", 8))
		return web_form(term);
	if (!strncmp(term, "hf://", 5))
		return rfs_hub_parse(term, repo, sizeof(repo), rev, sizeof(rev));
	if (!strncmp(term, "s3://", 5))
		return rfs_s3_probe(term);
	if (lstat(term, &st) == 0 || !rfs_hub_parse(term, repo, sizeof(repo), rev, sizeof(rev)))
		return 0;
	return rfs_hub_probe(repo, rev);
}

enum rfs_code rfs_tdir_open(const char *term, struct rfs_tdir **out, struct rfs_err *err)
{
	char repo[256], rev[256];
	struct stat st;

	if (!strncasecmp(term, "http://", 7) || !strncasecmp(term, "https://", 8))
		return rfs_tdir_web(term, out, err);
	if (!strncmp(term, "hf://", 5))
		return rfs_tdir_hub(term, out, err);
	if (!strncmp(term, "s3://", 5))
		return rfs_tdir_s3(term, out, err);
	if (lstat(term, &st) && errno == ENOENT &&
	    rfs_hub_parse(term, repo, sizeof(repo), rev, sizeof(rev)))
		return rfs_tdir_hub(term, out, err);
	return rfs_tdir_local(term, NULL, out, err);
}
