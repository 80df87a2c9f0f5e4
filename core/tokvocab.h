/*
 * tokvocab.h - the vocabulary of a Hugging Face tokenizer.json, as the
 * `tokenizers` library loads it and transformers' get_vocab() gives it:
 *
 *  - the model's vocabulary (model.vocab: an object of token -> id, or
 *    Unigram's list of [piece, score] whose ids are the positions); its
 *    size is its number of entries;
 *  - then the added tokens (added_tokens), in list order, as `tokenizers`
 *    adds them: an empty content is skipped; a content already known keeps
 *    its id; a new one gets max(model size, largest added id + 1).  The
 *    file's own "id" must equal that id (a file whose ids lie is refused:
 *    its rows would not be the tokens it names).
 *
 * The file is untrusted input: whole-number ids below RFS_TOKVOCAB_MAX_ID,
 * no key given twice (at the top, in model, in model.vocab), no id given
 * to two tokens, no NUL in a token, else an error naming the file.  The
 * parsed tree is freed before returning: only the token strings are kept.
 */
#ifndef RFS_TOKVOCAB_H
#define RFS_TOKVOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "strmap.h"

#define RFS_TOKVOCAB_MAX_ID (1u << 22) /* 4M tokens: at most 40 MiB of tables */

/* flags[] bits of an id */
enum {
	RFS_TOK_ADDED = 1,       /* an added token (added_tokens) */
	RFS_TOK_SINGLE_WORD = 2, /* its settings, as the file gives them */
	RFS_TOK_LSTRIP = 4,
	RFS_TOK_RSTRIP = 8,
	RFS_TOK_NORMALIZED = 16,
	RFS_TOK_SPECIAL = 32,
};

struct rfs_tokchunk;

struct rfs_tokvocab {
	struct rfs_strmap ids;       /* token -> (void *)(id + 1) */
	const char **tok;            /* id -> its token (NULL: none), cap of them */
	uint8_t *flags;              /* id -> RFS_TOK_* */
	uint32_t cap;
	uint32_t end;                /* the largest id + 1 */
	uint32_t limit;              /* ids at or past it are padding: the config's vocab_size, else end */
	struct rfs_tokchunk *chunks; /* the token strings */
};

/**
 * Parses @text (@len bytes, not NUL-terminated, not kept) of
 * @dir/tokenizer.json; @vocab_size is the model's config vocab_size (-1:
 * none).  On error @v holds what was read so far: release it either way.
 */
enum rfs_code rfs_tokvocab_parse(struct rfs_tokvocab *v, const char *text, size_t len, const char *dir,
				 int64_t vocab_size, struct rfs_err *err);
/**
 * Checks @dir/tokenizer_config.json (@text, @len bytes) against @v: every
 * special token it names (bos_token ... mask_token, additional_special_tokens,
 * extra_special_tokens, added_tokens_decoder) must be a token of @v (at the
 * id added_tokens_decoder gives): transformers would otherwise add it at
 * load, and rows would no longer be that tokenizer's ids.
 */
enum rfs_code rfs_tokvocab_check_config(const struct rfs_tokvocab *v, const char *text, size_t len,
					const char *dir, struct rfs_err *err);
/** The id of @tok, or -1. */
long rfs_tokvocab_id(const struct rfs_tokvocab *v, const char *tok);
/** Frees everything of @v and empties it. */
void rfs_tokvocab_release(struct rfs_tokvocab *v);

#endif
