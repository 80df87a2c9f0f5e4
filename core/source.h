/*
 * source.h - a term of a SPEC (a local directory, a Hub repository or a web
 * directory: tdir.h) opened as a model
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
#include "tdir.h"

enum rfs_src_kind { RFS_SRC_MODEL = 1, RFS_SRC_RESIDUALS = 2 };

struct rfs_src_tensor {
	const struct rfs_st_file *file;
	const struct rfs_st_tensor *t;
	size_t file_idx;
};

struct rfs_src {
	char *dir;               /* what messages call the term (tdir.h: its label) */
	struct rfs_tdir *td;     /* its files: local, HF cache, Hub, web (tdir.h) */
	unsigned config_mode;    /* permission bits of config.json */
	unsigned index_mode;     /* ... and of the index when sharded */
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

/** What config.json says that residfs uses. */
struct rfs_src_config {
	enum rfs_src_kind kind;
	int tie_word_embeddings; /* default 1, as transformers */
	int64_t vocab_size;      /* -1 when absent */
};

/**
 * Parses the text of a config.json (@path only names it in messages): one
 * JSON object and nothing after it but white space; a model's (model_type
 * or architectures) or a residuals directory's (residuals_version, whose
 * known keys must have the types the `residuals` package writes).
 * vocab_size, when present, must be a whole number in [1, 2^31).
 */
enum rfs_code rfs_src_parse_config(const char *text, size_t len, const char *path,
				   struct rfs_src_config *out, struct rfs_err *err);

/** A parsed model.safetensors.index.json. */
struct rfs_src_index {
	size_t nfiles;
	char **files;           /* shard names, sorted, unique */
	size_t nmap;
	struct rfs_src_index_entry {
		char *tensor;
		size_t file;    /* index into files */
	} *map;                 /* weight_map in file order */
};

/**
 * Parses the text of a model.safetensors.index.json: a JSON object whose
 * "weight_map" maps tensor names to shard names.  A shard name must be a
 * plain file name ending in ".safetensors" (no '/', not "." or "..", not
 * "model.safetensors", under 256 bytes).  On success *@out owns its
 * storage (rfs_src_index_release); on failure it is zeroed.
 */
enum rfs_code rfs_src_parse_index(const char *text, size_t len, const char *path,
				  struct rfs_src_index *out, struct rfs_err *err);
/** Frees what rfs_src_parse_index stored; accepts a zeroed index. */
void rfs_src_index_release(struct rfs_src_index *ix);

/** Opens the term @term (a directory, a Hub id, a URL: tdir.h).  On
 * failure nothing is left open and @err names the file. */
enum rfs_code rfs_src_open(const char *term, struct rfs_src **out, struct rfs_err *err);
/** Closes everything; accepts NULL. */
void rfs_src_close(struct rfs_src *s);
/** Tensor by name, or NULL. */
const struct rfs_src_tensor *rfs_src_find(const struct rfs_src *s, const char *name);
/**
 * The term's file @name whole (contained, regular: what tdir.h's open
 * gives; at most RFS_TUNE_MAX_JSON_FILE bytes) into a NUL-terminated buffer
 * the caller frees.
 */
enum rfs_code rfs_src_read_file(const struct rfs_src *s, const char *name, char **out, size_t *len,
				struct rfs_err *err);
/** The name a model card or residuals config gives the term: the Hub
 * repository id of a Hub term, else what messages call it (s->dir). */
const char *rfs_src_model_name(const struct rfs_src *s);
/** "model" or "residuals". */
const char *rfs_src_kind_name(enum rfs_src_kind k);

#endif
