/*
 * compute.h - compute mode: the plan of INSTRUCT-BASE is a residuals
 * directory as the `residuals` package writes it: one model.safetensors
 * laid out as the safetensors writer does (dtype alignment, then name;
 * no __metadata__), each tensor f32(instruct) - f32(base) rounded once to
 * the output dtype (float32 by default); the base's keys drive, instruct
 * tensors the base lacks are left out with a note; the instruct's longer
 * vocabulary pads the base with zero rows; a tied lm_head.weight the base
 * file lacks is written as a copy of the embedding's delta (the package's
 * state_dict has both).  Then the package's config.json (names and shapes
 * hashes), the instruct's tokenizer and generation config, and a card.
 */
#ifndef RFS_COMPUTE_H
#define RFS_COMPUTE_H

#include "pstore.h"

/** Builds the compute-mode plan of b->p (src[0] instruct, src[1] base). */
int rfs_pb_compute(struct rfs_build *b);

#endif
