/*
 * st.h - safetensors files: hostile-input parsing and header writing.
 *
 * Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then
 * the data buffer.  Parsing enforces every rule of the reference parser:
 * N <= 100,000,000 and within the file; the JSON is an object whose
 * entries are tensors {dtype, shape, data_offsets} plus an optional
 * "__metadata__" str->str map; offsets sorted are contiguous from 0 with
 * no hole or overlap; end - begin == numel * dtype bits / 8 (checked
 * arithmetic); file size == 8 + N + end of the last tensor.  Numbers are
 * taken from the JSON as whole non-negative values <= 2^53.
 */
#ifndef RFS_ST_H
#define RFS_ST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "err.h"
#include "bsrc.h"

#define RFS_ST_MAX_HEADER 100000000ull
#define RFS_ST_MAX_DIMS 16

enum rfs_dtype {
	RFS_DT_BOOL, RFS_DT_U8, RFS_DT_I8, RFS_DT_F8_E5M2, RFS_DT_F8_E4M3,
	RFS_DT_F8_E8M0, RFS_DT_F8_E4M3FNUZ, RFS_DT_F8_E5M2FNUZ, RFS_DT_F4,
	RFS_DT_F6_E2M3, RFS_DT_F6_E3M2, RFS_DT_I16, RFS_DT_U16, RFS_DT_F16,
	RFS_DT_BF16, RFS_DT_I32, RFS_DT_U32, RFS_DT_F32, RFS_DT_C64,
	RFS_DT_F64, RFS_DT_I64, RFS_DT_U64,
	RFS_DT_COUNT
};

/** "BF16" etc. */
const char *rfs_dtype_name(enum rfs_dtype t);
/** torch-style name: "bfloat16", "float16", "float32"; NULL for others. */
const char *rfs_dtype_torch_name(enum rfs_dtype t);
/** Parses a safetensors dtype name; -1 when unknown. */
int rfs_dtype_parse(const char *name);
/** Parses bf16/bfloat16, fp16/f16/float16/half, fp32/f32/float32/float; -1 otherwise. */
int rfs_dtype_parse_user(const char *name);
/** Bits per element. */
unsigned rfs_dtype_bits(enum rfs_dtype t);
/** Alignment used by the safetensors writer to order tensors (bytes, >= 1). */
unsigned rfs_dtype_align(enum rfs_dtype t);
/** Kernel dtype (enum rfs_kdt) for BF16/F16/F32, -1 for other dtypes. */
int rfs_dtype_kdt(enum rfs_dtype t);

struct rfs_st_tensor {
	char *name;
	enum rfs_dtype dtype;
	unsigned ndim;
	uint64_t shape[RFS_ST_MAX_DIMS];
	uint64_t numel;
	uint64_t begin, end; /* relative to the data buffer */
};

struct rfs_st_meta {
	char *key, *val;
};

struct rfs_st_file {
	char *path;       /* as given, for messages */
	struct rfs_bsrc *src; /* the bytes, owned; NULL when parsed from memory */
	uint64_t size;    /* whole file */
	uint64_t hlen;    /* N */
	uint64_t data_off; /* 8 + N */
	char *header;     /* the N raw header bytes (+ NUL) */
	size_t ntensors;
	struct rfs_st_tensor *tensors; /* sorted by begin */
	int has_meta;
	size_t nmeta;
	struct rfs_st_meta *meta; /* in file order */
	int64_t mtime_ns;
	uint64_t dev, ino;
	unsigned mode;    /* permission bits of the file */
};

/**
 * Reads the header of the byte source @src (its pread alone) and
 * validates it.  The file takes @src over, also on failure (closed then);
 * @err names the source and what is wrong.
 */
enum rfs_code rfs_st_open_src(struct rfs_bsrc *src, struct rfs_st_file **out, struct rfs_err *err);

/**
 * Opens and validates @path (a local source: rfs_st_open_src).  On
 * success *@out owns an open fd and
 * everything parsed; on failure *@out is untouched and @err names the file
 * and what is wrong.
 */
enum rfs_code rfs_st_open(const char *path, struct rfs_st_file **out, struct rfs_err *err);

/**
 * rfs_st_open on a descriptor already open on a regular file (@st its
 * fstat); @path names it.  The file takes @fd over on success; on failure
 * @fd is closed.
 */
enum rfs_code rfs_st_open_fd(int fd, const struct stat *st, const char *path, struct rfs_st_file **out,
			     struct rfs_err *err);

/**
 * Validates a header held in memory: @hdr (N = @hlen bytes) for a file of
 * @file_size bytes named @name.  Fills @f (fd = -1) on success.
 */
enum rfs_code rfs_st_parse(const char *name, const char *hdr, uint64_t hlen,
			   uint64_t file_size, struct rfs_st_file *f, struct rfs_err *err);

/** Closes the source and frees everything; accepts NULL. */
void rfs_st_close(struct rfs_st_file *f);
/** Frees what rfs_st_parse filled (not @f itself). */
void rfs_st_release(struct rfs_st_file *f);

/** Tensor by name or NULL (linear; use a map for many look-ups). */
const struct rfs_st_tensor *rfs_st_find(const struct rfs_st_file *f, const char *name);

/** A tensor as a header writer sees it. */
struct rfs_st_out {
	const char *name;
	enum rfs_dtype dtype;
	unsigned ndim;
	const uint64_t *shape;
	uint64_t begin, end;
};

/**
 * Serializes a header as the safetensors writer does: compact JSON,
 * "__metadata__" first when @meta is non-NULL (even if empty), then the
 * tensors in the given order, padded with spaces so 8 + N is a multiple
 * of 8.  Stores the N bytes (caller frees) in *@out and N in *@len; on
 * failure (RFS_E_NOMEM, @err set) both are untouched.
 */
enum rfs_code rfs_st_header_write(const struct rfs_st_out *t, size_t n,
				  const struct rfs_st_meta *meta, size_t nmeta, int with_meta,
				  char **out, size_t *len, struct rfs_err *err);

/** Bytes of @numel elements of @t, 0 with *ovf set on overflow or a partial byte. */
uint64_t rfs_dtype_bytes(enum rfs_dtype t, uint64_t numel, int *ovf);

#endif
