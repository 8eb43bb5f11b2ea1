/* gguf: read-only view of a GGUF v2/v3 file (mmapped) with every field validated.
 *
 * st_gguf_open() checks the whole header before returning: magic, version,
 * counts against the file size, every string and array length, value types,
 * tensor names (unique, < 64 bytes), dims (1..4, positive, no overflow), types
 * (known ids; unsupported ones are accepted here and refused by the model
 * loader with a clear message), data offsets (aligned, inside the file, no two
 * tensors overlapping). Any violation: NULL and one error line naming the
 * problem. Nothing in the file is trusted after that either: accessors check
 * types and bounds.
 *
 * Strings (st_str_t) point into the mapping and are NOT NUL-terminated; they
 * stay valid until st_gguf_destroy(). Numeric array data may be unaligned:
 * read elements with memcpy or the st_gguf_arr_* helpers.
 */
#ifndef ST_GGUF_H
#define ST_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "st_kernels.h"

typedef enum {
    ST_GGUF_UINT8 = 0,
    ST_GGUF_INT8 = 1,
    ST_GGUF_UINT16 = 2,
    ST_GGUF_INT16 = 3,
    ST_GGUF_UINT32 = 4,
    ST_GGUF_INT32 = 5,
    ST_GGUF_FLOAT32 = 6,
    ST_GGUF_BOOL = 7,
    ST_GGUF_STRING = 8,
    ST_GGUF_ARRAY = 9,
    ST_GGUF_UINT64 = 10,
    ST_GGUF_INT64 = 11,
    ST_GGUF_FLOAT64 = 12,
    ST_GGUF_VTYPE_COUNT
} st_gguf_vtype_t;

typedef struct {
    const char *data; /* not NUL-terminated */
    uint64_t len;
} st_str_t;

#define ST_GGUF_MAX_DIMS 4
#define ST_GGUF_MAX_NAME 64

typedef struct {
    char name[ST_GGUF_MAX_NAME]; /* NUL-terminated copy */
    uint32_t n_dims;
    int64_t ne[ST_GGUF_MAX_DIMS]; /* ne[0] contiguous; unused dims are 1 */
    int type;                     /* ggml type id (st_type_t when known) */
    uint64_t file_offset;         /* absolute offset of the data in the file */
    size_t nbytes;
    const void *data; /* inside the mapping */
} st_gguf_tensor_t;

typedef struct st_gguf st_gguf_t;

/* Opens and validates path. NULL (after logging why) on any problem. */
st_gguf_t *st_gguf_open(const char *path);
/* The same, but the whole file is read into anonymous memory (2 MiB pages
 * where the kernel gives them) instead of mapped: for a process that keeps
 * every weight in RAM and streams them all per token, where 4 KiB pages of a
 * file mapping cost a TLB miss every 4 KiB. One copy in the process; the
 * file's page cache stays reclaimable. */
st_gguf_t *st_gguf_open_resident(const char *path);
/* Same checks on a buffer the caller owns and keeps alive (tests, fuzzing). */
st_gguf_t *st_gguf_open_memory(const void *buf, size_t len);
/* Unmaps and frees; sets *g = NULL; safe on NULL. */
void st_gguf_destroy(st_gguf_t **g);

uint32_t st_gguf_version(const st_gguf_t *g);
size_t st_gguf_alignment(const st_gguf_t *g);
size_t st_gguf_file_size(const st_gguf_t *g);
const char *st_gguf_path(const st_gguf_t *g); /* "" for memory buffers */

/* Metadata. Each getter returns 1 when the key exists with a usable type and
 * stores the value, 0 when the key is absent, ST_EFORMAT (negative, logged)
 * when it exists with an incompatible type. Integer getters accept any integer
 * type whose value fits; st_gguf_get_f32 accepts f32 and f64. */
int st_gguf_get_u32(const st_gguf_t *g, const char *key, uint32_t *out);
int st_gguf_get_i64(const st_gguf_t *g, const char *key, int64_t *out);
int st_gguf_get_f32(const st_gguf_t *g, const char *key, float *out);
int st_gguf_get_bool(const st_gguf_t *g, const char *key, bool *out);
int st_gguf_get_str(const st_gguf_t *g, const char *key, st_str_t *out);
/* Arrays: element type and count. For numeric arrays *data points at the
 * packed little-endian elements (maybe unaligned); for string arrays it is NULL
 * and elements come from st_gguf_arr_str. */
int st_gguf_get_arr(const st_gguf_t *g, const char *key, st_gguf_vtype_t *elem_type, uint64_t *n, const void **data);
/* Element i of a string array key (O(1): offsets are indexed at open). 1/0/negative as above;
 * ST_ERANGE when i is out of range. */
int st_gguf_arr_str(const st_gguf_t *g, const char *key, uint64_t i, st_str_t *out);
/* Element i of an integer/bool array as int64 (1/0/negative as above). */
int st_gguf_arr_int(const st_gguf_t *g, const char *key, uint64_t i, int64_t *out);

/* Keys in file order, for tools that list or copy metadata. */
int64_t st_gguf_n_kv(const st_gguf_t *g);
/* Name and value type of key i (arrays: ST_GGUF_ARRAY); false when i is out of range. */
bool st_gguf_kv_at(const st_gguf_t *g, int64_t i, st_str_t *key, st_gguf_vtype_t *type);
/* Value type of key, or ST_GGUF_VTYPE_COUNT when absent. */
st_gguf_vtype_t st_gguf_kv_type(const st_gguf_t *g, const char *key);
/* Packed little-endian bytes of a numeric or bool scalar key (maybe unaligned), with its type;
 * NULL for strings, arrays and absent keys. Valid until st_gguf_destroy(). */
const void *st_gguf_get_scalar(const st_gguf_t *g, const char *key, st_gguf_vtype_t *type);

/* Tensors, in file order. */
int64_t st_gguf_n_tensors(const st_gguf_t *g);
const st_gguf_tensor_t *st_gguf_tensor(const st_gguf_t *g, int64_t i);
/* Tensor by name, or NULL. */
const st_gguf_tensor_t *st_gguf_find_tensor(const st_gguf_t *g, const char *name);

/* Compares a GGUF string with a C string. */
bool st_str_eq(st_str_t s, const char *cstr);

#endif
