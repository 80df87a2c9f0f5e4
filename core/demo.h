/*
 * demo.h - a small deterministic base/instruct model pair, made here so
 * the demo and the tests need no downloads.
 *
 * Llama-shaped, bf16.  The base is sharded in two files; the instruct
 * model is one file whose vocabulary is grown by a few special tokens,
 * with its own tokenizer (WordLevel tokenizer.json), a chat template and a
 * generation config with an extra eos id.  The instruct weights are the
 * base's plus small perturbations, so a float32 residual reproduces them.
 */
#ifndef RFS_DEMO_H
#define RFS_DEMO_H

#include <stdint.h>

#include "err.h"

struct rfs_demo_cfg {
	unsigned hidden, intermediate, layers, heads, kv_heads, vocab, added;
	uint64_t seed;
};

/** The default (about 26M parameters). */
void rfs_demo_default(struct rfs_demo_cfg *c);

/** Writes DIR/base and DIR/instruct (DIR must exist).  Returns 0 or an rfs code. */
enum rfs_code rfs_demo_generate(const char *dir, const struct rfs_demo_cfg *c, struct rfs_err *err);

#endif
