/* gguf_writer: builds the GGUF header in memory, writes it once, then streams
 * tensor data straight to the file.
 *
 * Keys and tensor infos are serialized as they are added (into two growing
 * buffers), so begin() only has to glue magic, counts, the two buffers and
 * the alignment padding together. Tensor offsets are known at add time: each
 * tensor starts at the previous one's end rounded up to the alignment, which
 * is also the padding write() inserts when a tensor's last byte goes out.
 */
#include "gguf_writer.h"

#include <stdlib.h>
#include <string.h>

#include "st_log.h"

#define S_DEFAULT_ALIGNMENT 32

typedef struct {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} s_buf_t;

typedef struct {
    char name[ST_GGUF_MAX_NAME];
    size_t nbytes;
} s_tensor_t;

struct st_gguf_writer {
    uint32_t version;
    uint32_t alignment;
    s_buf_t kv; /* serialized key/value pairs */
    s_buf_t ti; /* serialized tensor infos */
    uint64_t n_kv;
    char **keys; /* for duplicate checks */
    size_t keys_cap;
    s_tensor_t *tensors;
    size_t n_tensors, tensors_cap;
    uint64_t data_size; /* running, padded */
    FILE *f;
    bool own_file;
    bool begun, failed;
    size_t cur;         /* tensor receiving bytes */
    size_t cur_written; /* bytes of it written so far */
    uint64_t total;     /* bytes written to the file */
};

static const uint8_t s_vsize[ST_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* ---- byte buffer */

static void s_put(s_buf_t *b, const void *p, size_t n) {
    if (b->oom) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void s_put_le(s_buf_t *b, uint64_t v, int n) {
    uint8_t t[8];
    for (int i = 0; i < n; i++) t[i] = (uint8_t)(v >> (8 * i));
    s_put(b, t, (size_t)n);
}

static void s_put_str(s_buf_t *b, const char *s, size_t n) {
    s_put_le(b, n, 8);
    s_put(b, s, n);
}

/* ---- lifecycle */

st_gguf_writer_t *st_gguf_writer_new(uint32_t alignment) {
    if (alignment == 0) alignment = S_DEFAULT_ALIGNMENT;
    if (alignment & (alignment - 1)) {
        st_fail(ST_EINVAL, "alignment %u is not a power of two", alignment);
        return NULL;
    }
    st_gguf_writer_t *w = calloc(1, sizeof *w);
    if (!w) {
        st_fail(ST_ENOMEM, "out of memory");
        return NULL;
    }
    w->version = 3;
    w->alignment = alignment;
    return w;
}

void st_gguf_writer_destroy(st_gguf_writer_t **wp) {
    if (!wp || !*wp) return;
    st_gguf_writer_t *w = *wp;
    if (w->f && w->own_file) fclose(w->f);
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    free(w->kv.p);
    free(w->ti.p);
    free(w->tensors);
    free(w);
    *wp = NULL;
}

int st_gguf_writer_set_version(st_gguf_writer_t *w, uint32_t version) {
    if (w->begun || (version != 2 && version != 3)) return st_fail(ST_EINVAL, "cannot write GGUF version %u", version);
    w->version = version;
    return 0;
}

/* ---- metadata */

/* Checks the key and writes its name and value type. */
static int s_key(st_gguf_writer_t *w, const char *key, st_gguf_vtype_t type) {
    static const char *fn = "st_gguf_writer_add";
    if (w->failed) return st_fail_at(ST_EINVAL, fn, "writer failed earlier");
    if (w->begun) return st_fail_at(ST_EINVAL, fn, "key '%s' added after the header was written", key ? key : "");
    if (!key) return st_fail_at(ST_EINVAL, fn, "NULL key");
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return st_fail_at(ST_EINVAL, fn, "duplicate key '%s'", key);
    if (w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? w->keys_cap * 2 : 64;
        char **k = realloc(w->keys, cap * sizeof *k);
        if (!k) return st_fail(ST_ENOMEM, "out of memory");
        w->keys = k;
        w->keys_cap = cap;
    }
    char *copy = strdup(key);
    if (!copy) return st_fail(ST_ENOMEM, "out of memory");
    w->keys[w->n_kv++] = copy;
    s_put_str(&w->kv, key, strlen(key));
    s_put_le(&w->kv, (uint32_t)type, 4);
    return 0;
}

static int s_done(st_gguf_writer_t *w) {
    if (w->kv.oom) {
        w->failed = true;
        return st_fail(ST_ENOMEM, "out of memory for the header");
    }
    return 0;
}

static int s_scalar(st_gguf_writer_t *w, const char *key, st_gguf_vtype_t type, uint64_t bits) {
    int rc = s_key(w, key, type);
    if (rc) return rc;
    s_put_le(&w->kv, bits, s_vsize[type]);
    return s_done(w);
}

int st_gguf_writer_add_u8(st_gguf_writer_t *w, const char *k, uint8_t v) { return s_scalar(w, k, ST_GGUF_UINT8, v); }
int st_gguf_writer_add_i8(st_gguf_writer_t *w, const char *k, int8_t v) {
    return s_scalar(w, k, ST_GGUF_INT8, (uint8_t)v);
}
int st_gguf_writer_add_u16(st_gguf_writer_t *w, const char *k, uint16_t v) { return s_scalar(w, k, ST_GGUF_UINT16, v); }
int st_gguf_writer_add_i16(st_gguf_writer_t *w, const char *k, int16_t v) {
    return s_scalar(w, k, ST_GGUF_INT16, (uint16_t)v);
}
int st_gguf_writer_add_u32(st_gguf_writer_t *w, const char *k, uint32_t v) { return s_scalar(w, k, ST_GGUF_UINT32, v); }
int st_gguf_writer_add_i32(st_gguf_writer_t *w, const char *k, int32_t v) {
    return s_scalar(w, k, ST_GGUF_INT32, (uint32_t)v);
}
int st_gguf_writer_add_u64(st_gguf_writer_t *w, const char *k, uint64_t v) { return s_scalar(w, k, ST_GGUF_UINT64, v); }
int st_gguf_writer_add_i64(st_gguf_writer_t *w, const char *k, int64_t v) {
    return s_scalar(w, k, ST_GGUF_INT64, (uint64_t)v);
}
int st_gguf_writer_add_f32(st_gguf_writer_t *w, const char *k, float v) {
    uint32_t b;
    memcpy(&b, &v, 4);
    return s_scalar(w, k, ST_GGUF_FLOAT32, b);
}
int st_gguf_writer_add_f64(st_gguf_writer_t *w, const char *k, double v) {
    uint64_t b;
    memcpy(&b, &v, 8);
    return s_scalar(w, k, ST_GGUF_FLOAT64, b);
}
int st_gguf_writer_add_bool(st_gguf_writer_t *w, const char *k, bool v) {
    return s_scalar(w, k, ST_GGUF_BOOL, v ? 1 : 0);
}

int st_gguf_writer_add_strn(st_gguf_writer_t *w, const char *key, const char *v, size_t len) {
    if (!v && len) return st_fail(ST_EINVAL, "key '%s': NULL string", key ? key : "");
    int rc = s_key(w, key, ST_GGUF_STRING);
    if (rc) return rc;
    s_put_str(&w->kv, v ? v : "", len);
    return s_done(w);
}

int st_gguf_writer_add_str(st_gguf_writer_t *w, const char *key, const char *v) {
    return st_gguf_writer_add_strn(w, key, v ? v : "", v ? strlen(v) : 0);
}

/* Array header, then the elements come from the caller. */
static int s_arr_head(st_gguf_writer_t *w, const char *key, st_gguf_vtype_t elem, uint64_t n) {
    if (elem >= ST_GGUF_VTYPE_COUNT || elem == ST_GGUF_ARRAY)
        return st_fail(ST_EINVAL, "key '%s': bad array element type %d", key ? key : "", (int)elem);
    int rc = s_key(w, key, ST_GGUF_ARRAY);
    if (rc) return rc;
    s_put_le(&w->kv, (uint32_t)elem, 4);
    s_put_le(&w->kv, n, 8);
    return 0;
}

int st_gguf_writer_add_arr(st_gguf_writer_t *w, const char *key, st_gguf_vtype_t elem_type, const void *data,
                           uint64_t n) {
    if (elem_type == ST_GGUF_STRING) return st_fail(ST_EINVAL, "key '%s': use add_arr_str", key ? key : "");
    if (n && !data) return st_fail(ST_EINVAL, "key '%s': NULL data", key ? key : "");
    int rc = s_arr_head(w, key, elem_type, n);
    if (rc) return rc;
    size_t es = s_vsize[elem_type];
    const uint8_t *p = data;
    for (uint64_t i = 0; i < n && !w->kv.oom; i++, p += es) {
        uint64_t v = 0;
        switch (es) {
        case 1: v = p[0]; break;
        case 2: {
            uint16_t x;
            memcpy(&x, p, 2);
            v = x;
        } break;
        case 4: {
            uint32_t x;
            memcpy(&x, p, 4);
            v = x;
        } break;
        default: memcpy(&v, p, 8); break;
        }
        if (elem_type == ST_GGUF_BOOL) v = v != 0;
        s_put_le(&w->kv, v, (int)es);
    }
    return s_done(w);
}

int st_gguf_writer_add_arr_str(st_gguf_writer_t *w, const char *key, const char *const *strs, const size_t *lens,
                               uint64_t n) {
    if (n && !strs) return st_fail(ST_EINVAL, "key '%s': NULL strings", key ? key : "");
    int rc = s_arr_head(w, key, ST_GGUF_STRING, n);
    if (rc) return rc;
    for (uint64_t i = 0; i < n && !w->kv.oom; i++) {
        const char *s = strs[i] ? strs[i] : "";
        s_put_str(&w->kv, s, lens ? lens[i] : strlen(s));
    }
    return s_done(w);
}

int st_gguf_writer_copy_kv(st_gguf_writer_t *w, const char *key, const st_gguf_t *g, const char *src_key) {
    st_gguf_vtype_t type = st_gguf_kv_type(g, src_key);
    if (type == ST_GGUF_VTYPE_COUNT) return st_fail(ST_EINVAL, "no key '%s' to copy", src_key);
    if (type == ST_GGUF_STRING) {
        st_str_t s;
        st_gguf_get_str(g, src_key, &s);
        return st_gguf_writer_add_strn(w, key, s.data, (size_t)s.len);
    }
    if (type != ST_GGUF_ARRAY) {
        const uint8_t *p = st_gguf_get_scalar(g, src_key, &type);
        int rc = s_key(w, key, type);
        if (rc) return rc;
        s_put(&w->kv, p, s_vsize[type]); /* already little-endian */
        return s_done(w);
    }
    st_gguf_vtype_t elem;
    uint64_t n;
    const void *data;
    st_gguf_get_arr(g, src_key, &elem, &n, &data);
    int rc = s_arr_head(w, key, elem, n);
    if (rc) return rc;
    if (elem != ST_GGUF_STRING) {
        s_put(&w->kv, data, (size_t)n * s_vsize[elem]); /* bounded by the source file */
        return s_done(w);
    }
    for (uint64_t i = 0; i < n && !w->kv.oom; i++) {
        st_str_t s;
        st_gguf_arr_str(g, src_key, i, &s);
        s_put_str(&w->kv, s.data, (size_t)s.len);
    }
    return s_done(w);
}

/* ---- tensors */

int st_gguf_writer_add_tensor(st_gguf_writer_t *w, const char *name, uint32_t n_dims, const int64_t *ne, int type) {
    if (w->failed || w->begun) return st_fail(ST_EINVAL, "tensor added after the header was written or an error");
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len >= ST_GGUF_MAX_NAME) return st_fail(ST_EINVAL, "bad tensor name '%s'", name ? name : "");
    if (n_dims < 1 || n_dims > ST_GGUF_MAX_DIMS || !ne)
        return st_fail(ST_EINVAL, "tensor '%s': n_dims %u not in 1..%d", name, n_dims, ST_GGUF_MAX_DIMS);
    const st_type_traits_t *tr = st_type_traits(type);
    if (!tr || tr->blck <= 0 || tr->size == 0) return st_fail(ST_EINVAL, "tensor '%s': unknown type %d", name, type);
    uint64_t rows = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] <= 0) return st_fail(ST_EINVAL, "tensor '%s': ne[%u] = %lld", name, d, (long long)ne[d]);
        if (d && (uint64_t)ne[d] > (uint64_t)INT64_MAX / rows)
            return st_fail(ST_EINVAL, "tensor '%s': shape overflows", name);
        if (d) rows *= (uint64_t)ne[d];
    }
    if (ne[0] % tr->blck)
        return st_fail(ST_EINVAL, "tensor '%s': ne[0]=%lld not a multiple of the %s block size %d", name,
                       (long long)ne[0], tr->name, tr->blck);
    uint64_t row_bytes = (uint64_t)(ne[0] / tr->blck) * tr->size;
    if (rows > (uint64_t)SIZE_MAX / row_bytes || rows * row_bytes > UINT64_MAX - w->data_size - w->alignment)
        return st_fail(ST_EINVAL, "tensor '%s': size overflows", name);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].name, name)) return st_fail(ST_EINVAL, "duplicate tensor '%s'", name);
    if (w->n_tensors == w->tensors_cap) {
        size_t cap = w->tensors_cap ? w->tensors_cap * 2 : 64;
        s_tensor_t *t = realloc(w->tensors, cap * sizeof *t);
        if (!t) return st_fail(ST_ENOMEM, "out of memory");
        w->tensors = t;
        w->tensors_cap = cap;
    }
    s_tensor_t *t = &w->tensors[w->n_tensors++];
    memcpy(t->name, name, len + 1);
    t->nbytes = (size_t)(rows * row_bytes);

    s_put_str(&w->ti, name, len);
    s_put_le(&w->ti, n_dims, 4);
    for (uint32_t d = 0; d < n_dims; d++) s_put_le(&w->ti, (uint64_t)ne[d], 8);
    s_put_le(&w->ti, (uint32_t)type, 4);
    s_put_le(&w->ti, w->data_size, 8);
    w->data_size += (t->nbytes + w->alignment - 1) / w->alignment * w->alignment;
    if (w->ti.oom) {
        w->failed = true;
        return st_fail(ST_ENOMEM, "out of memory for the header");
    }
    return 0;
}

size_t st_gguf_writer_tensor_nbytes(const st_gguf_writer_t *w, size_t i) {
    return i < w->n_tensors ? w->tensors[i].nbytes : 0;
}

/* ---- output */

static int s_emit(st_gguf_writer_t *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->f) != n) {
        w->failed = true;
        return st_fail(ST_EIO, "write failed after %llu bytes: %m", (unsigned long long)w->total);
    }
    w->total += n;
    return 0;
}

static int s_pad(st_gguf_writer_t *w) {
    static const uint8_t zeros[256];
    size_t pad = (size_t)((w->alignment - w->total % w->alignment) % w->alignment);
    while (pad) {
        size_t n = pad < sizeof zeros ? pad : sizeof zeros;
        int rc = s_emit(w, zeros, n);
        if (rc) return rc;
        pad -= n;
    }
    return 0;
}

int st_gguf_writer_begin_stream(st_gguf_writer_t *w, FILE *f) {
    if (w->failed || w->begun || !f) return st_fail(ST_EINVAL, "writer already begun, failed, or no stream");
    if (w->alignment != S_DEFAULT_ALIGNMENT) {
        bool have = false;
        for (uint64_t i = 0; i < w->n_kv; i++) have |= !strcmp(w->keys[i], "general.alignment");
        if (!have) {
            int rc = st_gguf_writer_add_u32(w, "general.alignment", w->alignment);
            if (rc) return rc;
        }
    }
    w->f = f;
    w->begun = true;
    s_buf_t h = {0};
    s_put(&h, "GGUF", 4);
    s_put_le(&h, w->version, 4);
    s_put_le(&h, w->n_tensors, 8);
    s_put_le(&h, w->n_kv, 8);
    s_put(&h, w->kv.p, w->kv.len);
    s_put(&h, w->ti.p, w->ti.len);
    if (h.oom) {
        free(h.p);
        w->failed = true;
        return st_fail(ST_ENOMEM, "out of memory for the header");
    }
    int rc = s_emit(w, h.p, h.len);
    free(h.p);
    if (!rc) rc = s_pad(w);
    return rc;
}

int st_gguf_writer_begin(st_gguf_writer_t *w, const char *path) {
    if (w->failed || w->begun) return st_fail(ST_EINVAL, "writer already begun or failed");
    FILE *f = fopen(path, "wb");
    if (!f) return st_fail(ST_EIO, "%s: cannot create: %m", path);
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    w->own_file = true;
    int rc = st_gguf_writer_begin_stream(w, f);
    if (rc && !w->f) fclose(f); /* not attached: close here */
    return rc;
}

int st_gguf_writer_write(st_gguf_writer_t *w, const void *data, size_t n) {
    if (w->failed || !w->begun) return st_fail(ST_EINVAL, "writer not begun or failed");
    const uint8_t *p = data;
    while (n) {
        if (w->cur >= w->n_tensors) {
            w->failed = true;
            return st_fail(ST_EINVAL, "%zu bytes written past the last tensor", n);
        }
        size_t room = w->tensors[w->cur].nbytes - w->cur_written;
        size_t k = n < room ? n : room;
        int rc = s_emit(w, p, k);
        if (rc) return rc;
        p += k;
        n -= k;
        w->cur_written += k;
        if (w->cur_written == w->tensors[w->cur].nbytes) {
            rc = s_pad(w);
            if (rc) return rc;
            w->cur++;
            w->cur_written = 0;
        }
    }
    return 0;
}

int st_gguf_writer_finish(st_gguf_writer_t *w, uint64_t *total) {
    if (w->failed || !w->begun) return st_fail(ST_EINVAL, "writer not begun or failed");
    if (w->cur < w->n_tensors) {
        w->failed = true;
        return st_fail(ST_EINVAL, "tensor '%s': %zu of %zu bytes written", w->tensors[w->cur].name, w->cur_written,
                       w->tensors[w->cur].nbytes);
    }
    int rc = 0;
    if (fflush(w->f)) rc = st_fail(ST_EIO, "flush failed: %m");
    if (w->own_file) {
        if (fclose(w->f) && !rc) rc = st_fail(ST_EIO, "close failed: %m");
        w->f = NULL;
    }
    if (rc)
        w->failed = true;
    else if (total)
        *total = w->total;
    return rc;
}
