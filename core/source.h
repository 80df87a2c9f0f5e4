/*
 * source.h - a term of a SPEC opened from a local directory: a model
 * (config.json with model_type/architectures) or a residuals directory
 * (config.json with residuals_version), its safetensors files (one
 * model.safetensors, preferred as transformers does, or the shards named by
 * model.safetensors.index.json) and a name -> tensor map over all of them.
 *
 * Everything is validated when opened; afterwards a source is read-only
 * and may be shared by any number of threads (reads use pread on the
 * files' descriptors).
 */
#ifndef RFS_SOURCE_H
#define RFS_SOURCE_H

#include <stdint.h>

#include "err.h"
#include "st.h"
#include "strmap.h"

enum rfs_src_kind { RFS_SRC_MODEL = 1, RFS_SRC_RESIDUALS = 2 };

struct rfs_src_tensor {
	const struct rfs_st_file *file;
	const struct rfs_st_tensor *t;
	size_t file_idx;
};

struct rfs_src {
	char *dir;               /* as given */
	enum rfs_src_kind kind;
	char *config;            /* raw config.json */
	size_t config_len;
	int sharded;             /* layout came from an index */
	char *index;             /* raw index.json when sharded */
	size_t index_len;
	size_t nfiles;
	struct rfs_st_file **files; /* in layout order */
	char **file_names;       /* base names, same order */
	size_t ntensors;
	struct rfs_src_tensor *tensors; /* file order, then offset order */
	struct rfs_strmap by_name;      /* name -> struct rfs_src_tensor * */
	int64_t mtime_ns;        /* newest of the files read */
	int tie_word_embeddings; /* from config.json, default 1 as transformers */
	int64_t vocab_size;      /* from config.json, -1 if absent */
};

/** Opens @dir (see above).  On failure nothing is left open and @err names the file. */
int rfs_src_open(const char *dir, struct rfs_src **out, struct rfs_err *err);
/** Closes everything; accepts NULL. */
void rfs_src_close(struct rfs_src *s);
/** Tensor by name, or NULL. */
const struct rfs_src_tensor *rfs_src_find(const struct rfs_src *s, const char *name);
/** "model" or "residuals". */
const char *rfs_src_kind_name(enum rfs_src_kind k);

#endif
