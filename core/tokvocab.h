/*
 * tokvocab.h - the vocabulary of a Hugging Face tokenizer.json, as
 * transformers' get_vocab() gives it: the model's vocabulary (model.vocab:
 * an object of token -> id, or Unigram's list of [piece, score] whose ids
 * are the positions) and the added tokens (added_tokens: {id, content,
 * ...}), an added token's id winning over the model's.
 *
 * The file is untrusted input: ids must be whole numbers below
 * RFS_TOKVOCAB_MAX_ID, a plain token may not be listed twice, and anything
 * malformed is an error naming the file.  Several tokens may share an id;
 * the id's token (tok[]) is the first that claims it.
 */
#ifndef RFS_TOKVOCAB_H
#define RFS_TOKVOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "strmap.h"

#define RFS_TOKVOCAB_MAX_ID (1u << 22) /* 4M tokens: at most 64 MiB of tables */

struct cJSON;

struct rfs_tokvocab {
	struct cJSON *root;
	struct rfs_strmap ids;      /* token -> (void *)(id + 1) */
	const char **tok;           /* id -> its token (NULL: none), cap of them */
	const struct cJSON **added; /* id -> its added_tokens entry (NULL: a plain token) */
	uint32_t cap;
	uint32_t end;               /* the largest id + 1 */
	uint32_t limit;             /* ids at or past it are padding: the config's vocab_size, else end */
};

/**
 * Parses @text (@len bytes, not NUL-terminated, not kept) of
 * @dir/tokenizer.json; @vocab_size is the model's config vocab_size (-1:
 * none).  On error @v holds what was read so far: release it either way.
 */
enum rfs_code rfs_tokvocab_parse(struct rfs_tokvocab *v, const char *text, size_t len, const char *dir,
				 int64_t vocab_size, struct rfs_err *err);
/** The id of @tok, or -1. */
long rfs_tokvocab_id(const struct rfs_tokvocab *v, const char *tok);
/** Frees everything of @v and empties it. */
void rfs_tokvocab_release(struct rfs_tokvocab *v);

#endif
