/* gguf_writer: streaming GGUF writer (v3 by default, v2 on request).
 *
 * Add every key and every tensor description first, then st_gguf_writer_begin()
 * writes the header in one go, then the tensors' bytes are streamed in file
 * order with st_gguf_writer_write() in chunks of any size; padding between
 * tensors is inserted automatically when a tensor's last byte arrives. Nothing
 * but the header is buffered, so a multi-GB model never sits in memory.
 *
 * Little-endian on disk whatever the host. Errors: negative ST_E* codes (logged);
 * after an error the writer refuses further calls except destroy.
 */
#ifndef ST_GGUF_WRITER_H
#define ST_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "gguf.h"

typedef struct st_gguf_writer st_gguf_writer_t;

/* alignment: power of two (0 = the default 32; another value is written as
 * general.alignment after the other keys). NULL on bad alignment / no memory. */
st_gguf_writer_t *st_gguf_writer_new(uint32_t alignment);
/* Closes the file if begin() opened one (the partial file is left on disk), frees, sets *w = NULL. */
void st_gguf_writer_destroy(st_gguf_writer_t **w);
/* GGUF version to write: 2 or 3 (default 3). Before begin(). */
int st_gguf_writer_set_version(st_gguf_writer_t *w, uint32_t version);

/* Metadata, written in the order added. Duplicate keys are refused (ST_EINVAL). */
int st_gguf_writer_add_u8(st_gguf_writer_t *w, const char *key, uint8_t v);
int st_gguf_writer_add_i8(st_gguf_writer_t *w, const char *key, int8_t v);
int st_gguf_writer_add_u16(st_gguf_writer_t *w, const char *key, uint16_t v);
int st_gguf_writer_add_i16(st_gguf_writer_t *w, const char *key, int16_t v);
int st_gguf_writer_add_u32(st_gguf_writer_t *w, const char *key, uint32_t v);
int st_gguf_writer_add_i32(st_gguf_writer_t *w, const char *key, int32_t v);
int st_gguf_writer_add_u64(st_gguf_writer_t *w, const char *key, uint64_t v);
int st_gguf_writer_add_i64(st_gguf_writer_t *w, const char *key, int64_t v);
int st_gguf_writer_add_f32(st_gguf_writer_t *w, const char *key, float v);
int st_gguf_writer_add_f64(st_gguf_writer_t *w, const char *key, double v);
int st_gguf_writer_add_bool(st_gguf_writer_t *w, const char *key, bool v);
int st_gguf_writer_add_str(st_gguf_writer_t *w, const char *key, const char *v);
int st_gguf_writer_add_strn(st_gguf_writer_t *w, const char *key, const char *v, size_t len);
/* Numeric/bool array: n elements of elem_type in host order at data (bools: one byte each). */
int st_gguf_writer_add_arr(st_gguf_writer_t *w, const char *key, st_gguf_vtype_t elem_type, const void *data,
                           uint64_t n);
/* String array: n strings; lens may be NULL (then each is NUL-terminated). */
int st_gguf_writer_add_arr_str(st_gguf_writer_t *w, const char *key, const char *const *strs, const size_t *lens,
                               uint64_t n);
/* Copies key src_key of g (any type, arrays included) under the name key. 0, or ST_EINVAL when absent. */
int st_gguf_writer_copy_kv(st_gguf_writer_t *w, const char *key, const st_gguf_t *g, const char *src_key);

/* Describes the next tensor (data written later, in this order). ne[0] must be a
 * multiple of the type's block size. Returns 0; ST_EINVAL on a bad name, shape or type. */
int st_gguf_writer_add_tensor(st_gguf_writer_t *w, const char *name, uint32_t n_dims, const int64_t *ne, int type);
/* Bytes of tensor i as described (0 if i is out of range). */
size_t st_gguf_writer_tensor_nbytes(const st_gguf_writer_t *w, size_t i);

/* Opens path for writing (truncates) and writes the header. */
int st_gguf_writer_begin(st_gguf_writer_t *w, const char *path);
/* Same to a stream the caller owns (not closed by the writer); e.g. open_memstream(). */
int st_gguf_writer_begin_stream(st_gguf_writer_t *w, FILE *f);
/* Appends n bytes of tensor data; may cross tensor boundaries. ST_EINVAL past the last tensor. */
int st_gguf_writer_write(st_gguf_writer_t *w, const void *data, size_t n);
/* Checks that every tensor's bytes were written, flushes and closes (file opened by begin()).
 * Total file size in *total if non-NULL. */
int st_gguf_writer_finish(st_gguf_writer_t *w, uint64_t *total);

#endif
