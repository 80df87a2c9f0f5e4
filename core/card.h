/*
 * card.h - the README.md residfs writes into the result: front matter a
 * hub understands (base_model, relation, tags), the SPEC, scales, dtype,
 * rounding, the residfs version, and a fingerprint of each source (bytes,
 * newest mtime, xxh3 of its safetensors headers).
 */
#ifndef RFS_CARD_H
#define RFS_CARD_H

#include "pstore.h"

/** Adds README.md; its mode is the AND of every term's config.json mode. */
int rfs_pb_add_card(struct rfs_build *b);

#endif
