/*
 * hfdir.h - the Hugging Face directory policy: besides the safetensors
 * files, the result shows config.json (the base's, with vocab_size and
 * torch_dtype patched when they change, byte for byte otherwise), the
 * index (total_size recomputed), the tokenizer and generation config that
 * make instruct behaviour, and the base's other files (weights in other
 * formats excepted: a loader that picked them would get unmerged weights).
 */
#ifndef RFS_HFDIR_H
#define RFS_HFDIR_H

#include <stdint.h>

#include "pstore.h"

/**
 * config.json of the base, vocab_size patched to @vocab when larger (apply
 * mode), or with @exact when different (a recipe's aligned vocabulary).
 */
int rfs_pb_add_config(struct rfs_build *b, int64_t vocab, int exact);
/** Apply mode, sharded base: its index with total_size = @total. */
int rfs_pb_add_index(struct rfs_build *b, uint64_t total);
/** Tokenizer files and generation_config.json (see hfdir.c for which term's). */
int rfs_pb_add_chat_files(struct rfs_build *b);
/**
 * The other regular files of the base @s, in name order; one that resolves
 * outside the directory is left out with a note.
 */
int rfs_pb_add_other_files(struct rfs_build *b, const struct rfs_src *s);

#endif
