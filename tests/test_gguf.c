/* Tests of the GGUF reader (model/gguf.c) and writer (model/gguf_writer.c).
 *
 * Valid files come from two independent sources: a byte builder in this file
 * that spells the format out field by field, and the writer. The builder is
 * what corrupt files are made from (one bad field each); the writer's output is
 * compared byte for byte with the builder's so that the two cannot share a
 * misunderstanding of the format. Corrupt inputs are always opened from an
 * exact-size heap copy, so that ASan catches any read past the end.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "st_log.h"

/* ---- byte builder */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}
static void put_le(buf_t *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) {
        uint8_t x = (uint8_t)(v >> (8 * i));
        put(b, &x, 1);
    }
}
static void put_u32(buf_t *b, uint32_t v) { put_le(b, v, 4); }
static void put_u64(buf_t *b, uint64_t v) { put_le(b, v, 8); }
static void put_str(buf_t *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_zeros(buf_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) put_le(b, 0, 1);
}
static void pad_to(buf_t *b, size_t align) { put_zeros(b, (align - b->len % align) % align); }

static void header(buf_t *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}
static void kv_u32(buf_t *b, const char *key, uint32_t v) {
    put_str(b, key);
    put_u32(b, ST_GGUF_UINT32);
    put_u32(b, v);
}
static void tensor_info(buf_t *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                        uint64_t offset) {
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) put_u64(b, ne[d]);
    put_u32(b, type);
    put_u64(b, offset);
}

/* One F32 tensor "t" of ne0 floats, one u32 key; data bytes 0, 1, 2... */
static buf_t one_tensor_file(uint32_t version, uint64_t ne0) {
    buf_t b = {0};
    header(&b, version, 1, 1);
    kv_u32(&b, "general.k", 7);
    tensor_info(&b, "t", 1, &ne0, ST_TYPE_F32, 0);
    pad_to(&b, 32);
    for (uint64_t i = 0; i < ne0 * 4; i++) put_le(&b, i & 0xff, 1);
    return b;
}

/* ---- opening helpers */

/* Opens len bytes at p in place, capturing stderr into *log (caller frees) when log is not NULL. */
static st_gguf_t *open_logged(const void *p, size_t len, char **log) {
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    cr_assert_not_null(tmp);
    dup2(fileno(tmp), 2);
    st_gguf_t *g = st_gguf_open_memory(p, len);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    if (log) {
        long n = ftell(tmp);
        rewind(tmp);
        *log = calloc((size_t)n + 1, 1);
        if (fread(*log, 1, (size_t)n, tmp) != (size_t)n) (*log)[0] = 0;
    }
    fclose(tmp);
    return g;
}

/* Opens an exact-size heap copy of len bytes of p (so ASan sees any over-read); *copy must
 * outlive the result and be freed by the caller. */
static st_gguf_t *open_copy(const void *p, size_t len, char **log, uint8_t **copy) {
    *copy = malloc(len ? len : 1);
    cr_assert_not_null(*copy);
    if (len) memcpy(*copy, p, len);
    return open_logged(*copy, len, log);
}

static void expect_fail(const buf_t *b, const char *needle) {
    char *log = NULL;
    uint8_t *copy;
    st_gguf_t *g = open_copy(b->p, b->len, &log, &copy);
    free(copy);
    cr_assert_null(g, "expected a failure mentioning '%s'", needle);
    cr_assert_not_null(strstr(log, needle), "error line '%s' does not mention '%s'", log, needle);
    cr_assert_not_null(strstr(log, "<memory>"), "error line '%s' does not name the file", log);
    cr_assert_eq(strchr(log, '\n'), strrchr(log, '\n'), "more than one line: '%s'", log);
    free(log);
}

static st_gguf_t *expect_ok(const buf_t *b) {
    char *log = NULL;
    st_gguf_t *g = open_logged(b->p, b->len, &log);
    cr_assert_not_null(g, "expected success, got '%s'", log);
    free(log);
    return g;
}

/* ---- a rich valid file made with the writer */

static const char *const k_strs[] = {"alpha", "", "gamma\xce\xb3", "delta"};

static st_gguf_writer_t *rich_writer(uint32_t version, uint32_t alignment) {
    st_gguf_writer_t *w = st_gguf_writer_new(alignment);
    cr_assert_not_null(w);
    cr_assert_eq(st_gguf_writer_set_version(w, version), 0);
    cr_assert_eq(st_gguf_writer_add_str(w, "general.architecture", "smallthinker"), 0);
    cr_assert_eq(st_gguf_writer_add_u8(w, "v.u8", 200), 0);
    cr_assert_eq(st_gguf_writer_add_i8(w, "v.i8", -100), 0);
    cr_assert_eq(st_gguf_writer_add_u16(w, "v.u16", 60000), 0);
    cr_assert_eq(st_gguf_writer_add_i16(w, "v.i16", -30000), 0);
    cr_assert_eq(st_gguf_writer_add_u32(w, "v.u32", 4000000000u), 0);
    cr_assert_eq(st_gguf_writer_add_i32(w, "v.i32", -2000000000), 0);
    cr_assert_eq(st_gguf_writer_add_u64(w, "v.u64", UINT64_MAX), 0);
    cr_assert_eq(st_gguf_writer_add_i64(w, "v.i64", -5000000000ll), 0);
    cr_assert_eq(st_gguf_writer_add_f32(w, "v.f32", 1.5e6f), 0);
    cr_assert_eq(st_gguf_writer_add_f64(w, "v.f64", 1e-6), 0);
    cr_assert_eq(st_gguf_writer_add_bool(w, "v.bool", true), 0);
    int32_t i32s[] = {1, -2, 3};
    float f32s[] = {0.5f, -0.25f};
    bool bools[] = {false, true, true, false};
    uint64_t u64s[] = {1, UINT64_MAX};
    cr_assert_eq(st_gguf_writer_add_arr(w, "a.i32", ST_GGUF_INT32, i32s, 3), 0);
    cr_assert_eq(st_gguf_writer_add_arr(w, "a.f32", ST_GGUF_FLOAT32, f32s, 2), 0);
    cr_assert_eq(st_gguf_writer_add_arr(w, "a.bool", ST_GGUF_BOOL, bools, 4), 0);
    cr_assert_eq(st_gguf_writer_add_arr(w, "a.u64", ST_GGUF_UINT64, u64s, 2), 0);
    cr_assert_eq(st_gguf_writer_add_arr(w, "a.empty", ST_GGUF_UINT8, NULL, 0), 0);
    cr_assert_eq(st_gguf_writer_add_arr_str(w, "a.str", k_strs, NULL, 4), 0);
    int64_t ne_a[] = {4, 3}, ne_b[] = {64, 2}, ne_c[] = {8}, ne_d[] = {32, 1, 1, 2};
    cr_assert_eq(st_gguf_writer_add_tensor(w, "a.weight", 2, ne_a, ST_TYPE_F32), 0);
    cr_assert_eq(st_gguf_writer_add_tensor(w, "b.weight", 2, ne_b, ST_TYPE_Q8_0), 0);
    cr_assert_eq(st_gguf_writer_add_tensor(w, "c.weight", 1, ne_c, ST_TYPE_F16), 0);
    cr_assert_eq(st_gguf_writer_add_tensor(w, "d.weight", 4, ne_d, ST_TYPE_Q4_0), 0);
    return w;
}

/* Writes the rich file to memory; tensor i's byte j is (i * 31 + j) & 0xff. */
static buf_t rich_file(uint32_t version, uint32_t alignment) {
    st_gguf_writer_t *w = rich_writer(version, alignment);
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    cr_assert_not_null(f);
    cr_assert_eq(st_gguf_writer_begin_stream(w, f), 0);
    for (size_t i = 0; i < 4; i++) {
        size_t n = st_gguf_writer_tensor_nbytes(w, i);
        uint8_t *d = malloc(n);
        for (size_t j = 0; j < n; j++) d[j] = (uint8_t)(i * 31 + j);
        /* odd chunk sizes: the writer must not care */
        for (size_t off = 0; off < n; off += 7)
            cr_assert_eq(st_gguf_writer_write(w, d + off, n - off < 7 ? n - off : 7), 0);
        free(d);
    }
    uint64_t total = 0;
    cr_assert_eq(st_gguf_writer_finish(w, &total), 0);
    st_gguf_writer_destroy(&w);
    cr_assert_null(w);
    fclose(f);
    cr_assert_eq(total, len);
    return (buf_t){(uint8_t *)mem, len, len};
}

static void check_rich(const st_gguf_t *g, uint32_t version, size_t alignment) {
    cr_assert_eq(st_gguf_version(g), version);
    cr_assert_eq(st_gguf_alignment(g), alignment);
    st_str_t s;
    cr_assert_eq(st_gguf_get_str(g, "general.architecture", &s), 1);
    cr_assert(st_str_eq(s, "smallthinker"));
    int64_t i64;
    uint32_t u32;
    float f;
    bool b;
    cr_assert_eq(st_gguf_get_i64(g, "v.u8", &i64), 1);
    cr_assert_eq(i64, 200);
    cr_assert_eq(st_gguf_get_i64(g, "v.i8", &i64), 1);
    cr_assert_eq(i64, -100);
    cr_assert_eq(st_gguf_get_u32(g, "v.u16", &u32), 1);
    cr_assert_eq(u32, 60000);
    cr_assert_eq(st_gguf_get_i64(g, "v.i16", &i64), 1);
    cr_assert_eq(i64, -30000);
    cr_assert_eq(st_gguf_get_u32(g, "v.u32", &u32), 1);
    cr_assert_eq(u32, 4000000000u);
    cr_assert_eq(st_gguf_get_i64(g, "v.i32", &i64), 1);
    cr_assert_eq(i64, -2000000000);
    cr_assert_eq(st_gguf_get_i64(g, "v.i64", &i64), 1);
    cr_assert_eq(i64, -5000000000ll);
    cr_assert_eq(st_gguf_get_f32(g, "v.f32", &f), 1);
    cr_assert_eq(f, 1.5e6f);
    cr_assert_eq(st_gguf_get_f32(g, "v.f64", &f), 1);
    cr_assert_eq(f, 1e-6f);
    cr_assert_eq(st_gguf_get_bool(g, "v.bool", &b), 1);
    cr_assert(b);

    st_gguf_vtype_t et;
    uint64_t n;
    const void *data;
    cr_assert_eq(st_gguf_get_arr(g, "a.i32", &et, &n, &data), 1);
    cr_assert_eq(et, ST_GGUF_INT32);
    cr_assert_eq(n, 3);
    cr_assert_not_null(data);
    cr_assert_eq(st_gguf_arr_int(g, "a.i32", 1, &i64), 1);
    cr_assert_eq(i64, -2);
    cr_assert_eq(st_gguf_get_arr(g, "a.f32", &et, &n, &data), 1);
    float f1;
    memcpy(&f1, (const char *)data + 4, 4);
    cr_assert_eq(f1, -0.25f);
    cr_assert_eq(st_gguf_arr_int(g, "a.bool", 2, &i64), 1);
    cr_assert_eq(i64, 1);
    cr_assert_eq(st_gguf_arr_int(g, "a.bool", 3, &i64), 1);
    cr_assert_eq(i64, 0);
    cr_assert_eq(st_gguf_get_arr(g, "a.empty", &et, &n, &data), 1);
    cr_assert_eq(n, 0);
    cr_assert_eq(st_gguf_get_arr(g, "a.str", &et, &n, &data), 1);
    cr_assert_eq(et, ST_GGUF_STRING);
    cr_assert_eq(n, 4);
    cr_assert_null(data);
    for (uint64_t i = 0; i < 4; i++) {
        cr_assert_eq(st_gguf_arr_str(g, "a.str", i, &s), 1);
        cr_assert(st_str_eq(s, k_strs[i]), "element %llu", (unsigned long long)i);
    }

    cr_assert_eq(st_gguf_n_tensors(g), 4);
    static const char *names[] = {"a.weight", "b.weight", "c.weight", "d.weight"};
    static const int types[] = {ST_TYPE_F32, ST_TYPE_Q8_0, ST_TYPE_F16, ST_TYPE_Q4_0};
    static const size_t nbytes[] = {48, 4 * 34, 16, 2 * 18};
    static const uint32_t dims[] = {2, 2, 1, 4};
    for (int i = 0; i < 4; i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(g, i);
        cr_assert_not_null(t);
        cr_assert_str_eq(t->name, names[i]);
        cr_assert_eq(st_gguf_find_tensor(g, names[i]), t);
        cr_assert_eq(t->type, types[i]);
        cr_assert_eq(t->nbytes, nbytes[i]);
        cr_assert_eq(t->n_dims, dims[i]);
        cr_assert_eq(t->file_offset % alignment, 0);
        cr_assert_eq((const uint8_t *)t->data - (const uint8_t *)st_gguf_tensor(g, 0)->data,
                     (ptrdiff_t)(t->file_offset - st_gguf_tensor(g, 0)->file_offset));
        for (size_t j = 0; j < t->nbytes; j++)
            cr_assert_eq(((const uint8_t *)t->data)[j], (uint8_t)(i * 31 + j), "tensor %d byte %zu", i, j);
    }
    const st_gguf_tensor_t *d = st_gguf_find_tensor(g, "d.weight");
    cr_assert_eq(d->ne[0], 32);
    cr_assert_eq(d->ne[3], 2);
    const st_gguf_tensor_t *c = st_gguf_find_tensor(g, "c.weight");
    cr_assert_eq(c->ne[1], 1, "unused dims are 1");
    cr_assert_null(st_gguf_find_tensor(g, "nope"));
    cr_assert_null(st_gguf_tensor(g, 4));
    cr_assert_null(st_gguf_tensor(g, -1));
}

/* ---- valid files */

Test(gguf, reads_every_key_type_and_tensor_v3) {
    buf_t b = rich_file(3, 0);
    st_gguf_t *g = expect_ok(&b);
    check_rich(g, 3, 32);
    cr_assert_eq(st_gguf_file_size(g), b.len);
    cr_assert_str_eq(st_gguf_path(g), "");
    st_gguf_destroy(&g);
    cr_assert_null(g);
    st_gguf_destroy(&g); /* safe twice */
    free(b.p);
}

Test(gguf, reads_v2) {
    buf_t b = rich_file(2, 0);
    st_gguf_t *g = expect_ok(&b);
    check_rich(g, 2, 32);
    st_gguf_destroy(&g);
    free(b.p);
}

Test(gguf, honours_general_alignment) {
    buf_t b = rich_file(3, 256);
    st_gguf_t *g = expect_ok(&b);
    check_rich(g, 3, 256);
    uint32_t a;
    cr_assert_eq(st_gguf_get_u32(g, "general.alignment", &a), 1);
    cr_assert_eq(a, 256);
    st_gguf_destroy(&g);
    free(b.p);
}

Test(gguf, opens_files_by_path) {
    buf_t b = rich_file(3, 0);
    char path[] = "/tmp/test_gguf_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, b.p, b.len), (ssize_t)b.len);
    close(fd);
    st_gguf_t *g = st_gguf_open(path);
    cr_assert_not_null(g);
    check_rich(g, 3, 32);
    cr_assert_str_eq(st_gguf_path(g), path);
    cr_assert_eq(st_gguf_file_size(g), b.len);
    /* the resident copy reads the same, tensor bytes included, from 2 MiB-aligned memory */
    st_gguf_t *r = st_gguf_open_resident(path);
    cr_assert_not_null(r);
    check_rich(r, 3, 32);
    cr_assert_str_eq(st_gguf_path(r), path);
    cr_assert_eq(st_gguf_file_size(r), b.len);
    cr_assert_eq(st_gguf_n_tensors(r), st_gguf_n_tensors(g));
    for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_gguf_tensor_t *a = st_gguf_tensor(g, i), *c = st_gguf_tensor(r, i);
        cr_assert_eq(a->nbytes, c->nbytes);
        cr_assert_neq(a->data, c->data);
        cr_assert_eq(memcmp(a->data, c->data, a->nbytes), 0, "tensor %lld differs in the resident copy", (long long)i);
    }
    st_gguf_destroy(&r);
    st_gguf_destroy(&g);
    /* a truncated file is refused either way */
    fd = open(path, O_WRONLY | O_TRUNC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, b.p, b.len / 2), (ssize_t)(b.len / 2));
    close(fd);
    cr_assert_null(st_gguf_open(path));
    cr_assert_null(st_gguf_open_resident(path));
    unlink(path);
    free(b.p);
}

Test(gguf, open_fails_on_missing_empty_and_directory) {
    cr_assert_null(st_gguf_open("/nonexistent/x.gguf"));
    cr_assert_null(st_gguf_open("/tmp"));
    char path[] = "/tmp/test_gguf_empty_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    cr_assert_null(st_gguf_open(path));
    cr_assert_null(st_gguf_open_resident(path));
    cr_assert_null(st_gguf_open_resident("/tmp"));
    cr_assert_null(st_gguf_open_resident("/nonexistent/x.gguf"));
    cr_assert_null(st_gguf_open_resident(NULL));
    unlink(path);
    cr_assert_null(st_gguf_open_memory(NULL, 0));
}

Test(gguf, writer_output_matches_the_format_byte_for_byte) {
    /* builder: the reference spelling of the format */
    buf_t want = one_tensor_file(3, 3);
    st_gguf_writer_t *w = st_gguf_writer_new(0);
    cr_assert_eq(st_gguf_writer_add_u32(w, "general.k", 7), 0);
    int64_t ne = 3;
    cr_assert_eq(st_gguf_writer_add_tensor(w, "t", 1, &ne, ST_TYPE_F32), 0);
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    cr_assert_eq(st_gguf_writer_begin_stream(w, f), 0);
    uint8_t d[12];
    for (int i = 0; i < 12; i++) d[i] = (uint8_t)i;
    cr_assert_eq(st_gguf_writer_write(w, d, 12), 0);
    cr_assert_eq(st_gguf_writer_finish(w, NULL), 0);
    st_gguf_writer_destroy(&w);
    fclose(f);
    pad_to(&want, 32); /* the writer pads after the last tensor too (as llama.cpp's writer does) */
    cr_assert_eq(len, want.len);
    cr_assert_eq(memcmp(mem, want.p, len), 0);
    free(mem);
    free(want.p);
}

Test(gguf, getters_report_absent_and_mistyped_keys) {
    buf_t b = rich_file(3, 0);
    st_gguf_t *g = expect_ok(&b);
    uint32_t u32 = 99;
    int64_t i64;
    float f;
    bool bo;
    st_str_t s;
    cr_assert_eq(st_gguf_get_u32(g, "absent", &u32), 0);
    cr_assert_eq(u32, 99, "untouched when absent");
    cr_assert_eq(st_gguf_get_u32(g, "general.architecture", &u32), ST_EFORMAT);
    cr_assert_eq(st_gguf_get_u32(g, "v.i8", &u32), ST_EFORMAT, "negative does not fit u32");
    cr_assert_eq(st_gguf_get_u32(g, "v.u64", &u32), ST_EFORMAT, "too big for u32");
    cr_assert_eq(st_gguf_get_i64(g, "v.u64", &i64), ST_EFORMAT, "too big for i64");
    cr_assert_eq(st_gguf_get_i64(g, "v.f32", &i64), ST_EFORMAT);
    cr_assert_eq(st_gguf_get_f32(g, "v.u32", &f), ST_EFORMAT);
    cr_assert_eq(st_gguf_get_bool(g, "v.u8", &bo), ST_EFORMAT);
    cr_assert_eq(st_gguf_get_str(g, "a.str", &s), ST_EFORMAT);
    cr_assert_eq(st_gguf_get_arr(g, "v.u8", NULL, NULL, NULL), ST_EFORMAT);
    cr_assert_eq(st_gguf_arr_str(g, "a.i32", 0, &s), ST_EFORMAT);
    cr_assert_eq(st_gguf_arr_str(g, "a.str", 4, &s), ST_ERANGE);
    cr_assert_eq(st_gguf_arr_int(g, "a.i32", 3, &i64), ST_ERANGE);
    cr_assert_eq(st_gguf_arr_int(g, "a.f32", 0, &i64), ST_EFORMAT);
    cr_assert_eq(st_gguf_arr_int(g, "a.u64", 1, &i64), ST_EFORMAT, "u64 max does not fit i64");
    cr_assert_eq(st_gguf_arr_int(g, "a.str", 0, &i64), ST_EFORMAT);
    cr_assert_eq(st_gguf_arr_str(g, "absent", 0, &s), 0);
    cr_assert_eq(st_gguf_kv_type(g, "a.str"), ST_GGUF_ARRAY);
    cr_assert_eq(st_gguf_kv_type(g, "absent"), ST_GGUF_VTYPE_COUNT);
    st_str_t key;
    st_gguf_vtype_t t;
    cr_assert_eq(st_gguf_n_kv(g), 18);
    cr_assert(st_gguf_kv_at(g, 1, &key, &t));
    cr_assert(st_str_eq(key, "v.u8"));
    cr_assert_eq(t, ST_GGUF_UINT8);
    cr_assert_not(st_gguf_kv_at(g, 18, &key, &t));
    st_gguf_destroy(&g);
    free(b.p);
}

/* ---- truncation and fuzzing */

Test(gguf, every_truncation_fails_cleanly) {
    buf_t b = rich_file(3, 0);
    st_gguf_t *g = expect_ok(&b);
    const st_gguf_tensor_t *last = st_gguf_tensor(g, st_gguf_n_tensors(g) - 1);
    size_t data_end = last->file_offset + last->nbytes; /* the padding after it is optional */
    st_gguf_destroy(&g);
    for (size_t len = 0; len < b.len; len++) {
        uint8_t *copy;
        g = open_copy(b.p, len, NULL, &copy);
        if (len < data_end)
            cr_assert_null(g, "prefix of %zu of %zu bytes opened", len, b.len);
        else
            cr_assert_not_null(g, "prefix of %zu bytes (all tensor data present) refused", len);
        st_gguf_destroy(&g);
        free(copy);
    }
    free(b.p);
}

static uint32_t xorshift(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Reads everything an accepted file exposes, through the accessors. */
static unsigned walk(const st_gguf_t *g) {
    unsigned sum = 0;
    for (int64_t i = 0; i < st_gguf_n_kv(g); i++) {
        st_str_t key, s;
        st_gguf_vtype_t t, et;
        cr_assert(st_gguf_kv_at(g, i, &key, &t));
        char k[128];
        if (key.len >= sizeof k || memchr(key.data, 0, (size_t)key.len)) continue;
        memcpy(k, key.data, (size_t)key.len);
        k[key.len] = 0;
        uint64_t n;
        const void *data;
        int64_t v;
        if (t == ST_GGUF_STRING && st_gguf_get_str(g, k, &s) == 1)
            for (uint64_t j = 0; j < s.len; j++) sum += (uint8_t)s.data[j];
        if (t == ST_GGUF_ARRAY && st_gguf_get_arr(g, k, &et, &n, &data) == 1)
            for (uint64_t j = 0; j < n; j++) {
                if (et == ST_GGUF_STRING && st_gguf_arr_str(g, k, j, &s) == 1 && s.len)
                    sum += (uint8_t)s.data[s.len - 1];
                else if (st_gguf_arr_int(g, k, j, &v) == 1)
                    sum += (unsigned)v;
            }
    }
    for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(g, i);
        for (size_t j = 0; j < t->nbytes; j++) sum += ((const uint8_t *)t->data)[j];
    }
    return sum;
}

/* What st_gguf_open promises about any file it accepts (gguf.h), checked
 * from the outside on an accepted mutant of the len bytes at m. */
static void check_accepted(const st_gguf_t *g, const uint8_t *m, size_t len, int it) {
    const uint32_t version = st_gguf_version(g);
    cr_assert(version == 2 || version == 3, "mutant %d: version %u accepted", it, version);
    const size_t align = st_gguf_alignment(g);
    cr_assert(align > 0 && (align & (align - 1)) == 0, "mutant %d: alignment %zu", it, align);
    for (int64_t i = 0; i < st_gguf_n_kv(g); i++) {
        st_str_t key;
        st_gguf_vtype_t t;
        cr_assert(st_gguf_kv_at(g, i, &key, &t));
        cr_assert(t < ST_GGUF_VTYPE_COUNT, "mutant %d: key %lld of type %d", it, (long long)i, (int)t);
        const uint8_t *k = (const uint8_t *)key.data;
        cr_assert(k >= m && key.len <= len && (size_t)(k - m) <= len - key.len, "mutant %d: key %lld outside the file",
                  it, (long long)i);
    }
    const int64_t n = st_gguf_n_tensors(g);
    const st_gguf_tensor_t **by_offset = malloc(((size_t)n + 1) * sizeof *by_offset);
    cr_assert_not_null(by_offset);
    for (int64_t i = 0; i < n; i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(g, i);
        cr_assert_lt(strnlen(t->name, ST_GGUF_MAX_NAME), ST_GGUF_MAX_NAME, "mutant %d", it);
        cr_assert_eq(st_gguf_find_tensor(g, t->name), t, "mutant %d: tensor name '%s' not unique", it, t->name);
        cr_assert(t->n_dims >= 1 && t->n_dims <= ST_GGUF_MAX_DIMS, "mutant %d: %u dims", it, t->n_dims);
        int64_t count = 1;
        for (uint32_t d = 0; d < ST_GGUF_MAX_DIMS; d++) {
            cr_assert_geq(t->ne[d], 1, "mutant %d: %s dim %u = %lld", it, t->name, d, (long long)t->ne[d]);
            if (d >= t->n_dims) cr_assert_eq(t->ne[d], 1, "mutant %d: unused dim %u", it, d);
            cr_assert_leq(t->ne[d], INT64_MAX / count, "mutant %d: %s element count overflows", it, t->name);
            count *= t->ne[d];
        }
        cr_assert_eq(t->file_offset % align, 0, "mutant %d: %s at %llu, alignment %zu", it, t->name,
                     (unsigned long long)t->file_offset, align);
        cr_assert(t->file_offset <= len && t->nbytes <= len - t->file_offset, "mutant %d: %s outside the file", it,
                  t->name);
        cr_assert_eq((const uint8_t *)t->data, m + t->file_offset, "mutant %d", it);
        const st_type_traits_t *tr = st_type_traits(t->type);
        cr_assert_not_null(tr, "mutant %d: %s of unknown type id %d accepted", it, t->name, t->type);
        if (tr->blck > 0 && t->ne[0] % tr->blck == 0)
            cr_assert_eq(t->nbytes, st_row_size(t->type, t->ne[0]) * (size_t)(count / t->ne[0]), "mutant %d: %s nbytes",
                         it, t->name);
        by_offset[i] = t;
    }
    for (int64_t i = 0; i < n; i++) /* no two overlap: each ends before any later one starts */
        for (int64_t j = 0; j < n; j++)
            if (i != j && by_offset[i]->file_offset <= by_offset[j]->file_offset && by_offset[i]->nbytes)
                cr_assert_leq(by_offset[i]->file_offset + by_offset[i]->nbytes, by_offset[j]->file_offset,
                              "mutant %d: %s and %s overlap", it, by_offset[i]->name, by_offset[j]->name);
    free(by_offset);
    walk(g);
}

Test(gguf, byte_flip_fuzz_accepts_only_valid_files) {
    buf_t b = rich_file(3, 0);
    uint32_t seed = 12345;
    st_gguf_t *g = expect_ok(&b);
    size_t header_len = st_gguf_tensor(g, 0)->file_offset;
    st_gguf_destroy(&g);
    int accepted = 0;
    uint8_t *m = malloc(b.len);
    fflush(stderr);
    int saved = dup(2);
    FILE *null = fopen("/dev/null", "w");
    dup2(fileno(null), 2); /* thousands of expected error lines */
    for (int it = 0; it < 4000; it++) {
        memcpy(m, b.p, b.len);
        int flips = 1 + (int)(xorshift(&seed) % 3);
        for (int k = 0; k < flips; k++) {
            size_t pos = xorshift(&seed) % header_len;
            uint32_t r = xorshift(&seed);
            /* mostly small deltas and bit flips: they keep lengths plausible and reach deeper */
            m[pos] = (r & 3) == 0   ? (uint8_t)(r >> 8)
                     : (r & 3) == 1 ? m[pos] ^ (uint8_t)(1u << ((r >> 8) & 7))
                                    : (uint8_t)(m[pos] + ((r >> 8) & 1 ? 1 : -1));
        }
        g = st_gguf_open_memory(m, b.len); /* m is exactly b.len bytes */
        if (g) {
            accepted++;
            check_accepted(g, m, b.len, it);
            st_gguf_destroy(&g);
        }
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(null);
    cr_log_info("byte-flip fuzz: %d of 4000 mutants accepted, each valid", accepted);
    /* flips in string bytes and unused padding pass: a fuzz that accepted none
     * would not have reached the checks above */
    cr_assert_gt(accepted, 0);
    cr_assert_lt(accepted, 4000);
    free(m);
    free(b.p);
}

/* Offset of tensor name's info (its u64 name length) in the header of b. */
static size_t tensor_info_at(const buf_t *b, const char *name) {
    const size_t n = strlen(name);
    for (size_t i = 24; i + 8 + n <= b->len; i++) {
        uint64_t l;
        memcpy(&l, b->p + i, 8);
        if (l == n && !memcmp(b->p + i + 8, name, n)) return i;
    }
    cr_assert_fail("no tensor info for %s", name);
    return 0;
}

/* One change to a field the reader checks, each of which must be refused:
 * the file, the field's offset, its width and the value written there. */
static void expect_refused(const buf_t *b, size_t at, int width, uint64_t value, const char *what) {
    uint8_t *m = malloc(b->len);
    cr_assert_not_null(m);
    memcpy(m, b->p, b->len);
    for (int i = 0; i < width; i++) m[at + (size_t)i] = (uint8_t)(value >> (8 * i));
    char *log = NULL;
    st_gguf_t *g = open_logged(m, b->len, &log);
    cr_assert_null(g, "accepted with %s", what);
    cr_assert(log && *log, "refused without an error line: %s", what);
    free(log);
    free(m);
}

Test(gguf, flips_in_checked_fields_are_refused) {
    buf_t b = rich_file(3, 0);
    st_gguf_t *g = expect_ok(&b);
    const st_gguf_tensor_t *t_b = st_gguf_find_tensor(g, "b.weight");
    const uint64_t b_off = t_b->file_offset - st_gguf_tensor(g, 0)->file_offset; /* relative, as stored */
    st_gguf_destroy(&g);
    /* magic, version (4 bytes each), then the tensor and key counts (8 bytes each) */
    expect_refused(&b, 0, 1, 'X', "magic");
    expect_refused(&b, 4, 4, 1, "version 1");
    expect_refused(&b, 4, 4, 4, "version 4");
    expect_refused(&b, 8, 8, 5, "one tensor more than listed");
    expect_refused(&b, 8, 8, UINT64_MAX, "2^64-1 tensors");
    expect_refused(&b, 16, 8, UINT64_MAX / 2, "2^63 keys");
    /* tensor info of b.weight: name (u64 length, bytes), n_dims (u32), ne (u64 each), type (u32), offset (u64) */
    const size_t info = tensor_info_at(&b, "b.weight"), dims = info + 8 + strlen("b.weight");
    const size_t ne0 = dims + 4, type = ne0 + 2 * 8, off = type + 4;
    expect_refused(&b, dims, 4, 0, "0 dims");
    expect_refused(&b, dims, 4, 5, "5 dims");
    expect_refused(&b, ne0, 8, 0, "a dim of 0");
    expect_refused(&b, ne0, 8, (uint64_t)1 << 62, "2^62 elements per row");
    expect_refused(&b, ne0, 8, 63, "a Q8_0 row that is not whole blocks");
    expect_refused(&b, type, 4, 1000, "type id 1000");
    expect_refused(&b, off, 8, b_off + 1, "an unaligned offset");
    expect_refused(&b, off, 8, b_off + b.len, "data past the end");
    expect_refused(&b, off, 8, 0, "data overlapping a.weight");
    expect_refused(&b, info + 8, 1, 'a', "a second tensor named a.weight");
    expect_refused(&b, info, 8, 200, "a name longer than the header allows");
    free(b.p);
}

/* ---- one bad field at a time */

Test(gguf, refuses_bad_magic) {
    buf_t b = one_tensor_file(3, 8);
    b.p[3] = 'X';
    expect_fail(&b, "bad magic");
    buf_t tiny = {(uint8_t *)"GG", 2, 2};
    expect_fail(&tiny, "too small");
    free(b.p);
}

Test(gguf, refuses_bad_versions) {
    buf_t b = one_tensor_file(1, 8);
    expect_fail(&b, "v1 is not supported");
    free(b.p);
    b = one_tensor_file(4, 8);
    expect_fail(&b, "unsupported GGUF version 4");
    free(b.p);
    b = one_tensor_file(0x03000000u, 8);
    expect_fail(&b, "big-endian");
    free(b.p);
    b = one_tensor_file(2, 8);
    st_gguf_t *g = expect_ok(&b);
    cr_assert_eq(st_gguf_version(g), 2);
    st_gguf_destroy(&g);
    free(b.p);
}

Test(gguf, refuses_huge_counts) {
    uint64_t counts[][2] = {
        {UINT64_MAX, 1}, {1, UINT64_MAX}, {1ull << 40, 1}, {1, 1ull << 40}, {1ull << 62, 1ull << 62}};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        buf_t b = one_tensor_file(3, 8);
        for (int k = 0; k < 8; k++) {
            b.p[8 + k] = (uint8_t)(counts[i][0] >> (8 * k));
            b.p[16 + k] = (uint8_t)(counts[i][1] >> (8 * k));
        }
        expect_fail(&b, "cannot fit");
        free(b.p);
    }
}

Test(gguf, refuses_huge_string_lengths) {
    uint64_t lens[] = {UINT64_MAX, 1ull << 63, 1000000};
    for (size_t i = 0; i < 3; i++) {
        buf_t b = {0};
        header(&b, 3, 0, 1);
        put_u64(&b, lens[i]); /* key length */
        put(&b, "general.k", 9);
        put_u32(&b, ST_GGUF_UINT32);
        put_u32(&b, 1);
        expect_fail(&b, "past end of file");
        free(b.p);
        b = (buf_t){0};
        header(&b, 3, 0, 1);
        put_str(&b, "general.s");
        put_u32(&b, ST_GGUF_STRING);
        put_u64(&b, lens[i]); /* value length */
        put(&b, "abc", 3);
        expect_fail(&b, "past end of file");
        free(b.p);
        b = (buf_t){0};
        header(&b, 3, 1, 0);
        put_u64(&b, lens[i]); /* tensor name length */
        put(&b, "t", 1);
        put_zeros(&b, 40);
        expect_fail(&b, "past end of file");
        free(b.p);
    }
}

Test(gguf, refuses_huge_array_lengths) {
    uint64_t ns[] = {UINT64_MAX, UINT64_MAX / 4 + 1, 1ull << 40, 3};
    for (size_t i = 0; i < 4; i++) {
        buf_t b = {0};
        header(&b, 3, 0, 1);
        put_str(&b, "a");
        put_u32(&b, ST_GGUF_ARRAY);
        put_u32(&b, ST_GGUF_UINT32);
        put_u64(&b, i < 3 ? ns[i] : 5);
        put_zeros(&b, 16); /* only 4 elements */
        expect_fail(&b, "past end of file");
        free(b.p);
        b = (buf_t){0};
        header(&b, 3, 0, 1);
        put_str(&b, "a");
        put_u32(&b, ST_GGUF_ARRAY);
        put_u32(&b, ST_GGUF_STRING);
        put_u64(&b, ns[i]);
        put_str(&b, "x");
        put_str(&b, "yyyyyyyyyyyyyyyyyyyy"); /* room for 3 lengths, but the third is missing */
        expect_fail(&b, i < 3 ? "does not fit" : "element 2: truncated string length");
        free(b.p);
    }
    /* a string element that claims more than is left */
    buf_t b = {0};
    header(&b, 3, 0, 1);
    put_str(&b, "a");
    put_u32(&b, ST_GGUF_ARRAY);
    put_u32(&b, ST_GGUF_STRING);
    put_u64(&b, 2);
    put_str(&b, "x");
    put_u64(&b, 1ull << 60);
    put_zeros(&b, 8);
    expect_fail(&b, "element 1: string of");
    free(b.p);
}

static void expect_kv_fail(uint32_t type, const void *value, size_t n, const char *needle) {
    buf_t b = {0};
    header(&b, 3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, type);
    put(&b, value, n);
    expect_fail(&b, needle);
    free(b.p);
}

Test(gguf, refuses_bad_value_types) {
    uint8_t four[4] = {0};
    expect_kv_fail(13, four, 4, "bad value type 13");
    expect_kv_fail(0xffffffffu, four, 4, "bad value type");
    uint8_t nested[12] = {ST_GGUF_ARRAY, 0, 0, 0, 0};
    expect_kv_fail(ST_GGUF_ARRAY, nested, 12, "nested arrays");
    uint8_t badelem[12] = {77, 0, 0, 0, 0};
    expect_kv_fail(ST_GGUF_ARRAY, badelem, 12, "bad array element type 77");
    uint8_t two = 2;
    expect_kv_fail(ST_GGUF_BOOL, &two, 1, "not 0 or 1");
    uint8_t boolarr[14] = {ST_GGUF_BOOL, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 3};
    expect_kv_fail(ST_GGUF_ARRAY, boolarr, 14, "element 1: bool value 3");
    expect_kv_fail(ST_GGUF_UINT64, four, 4, "truncated u64");
}

Test(gguf, refuses_duplicate_keys) {
    buf_t b = {0};
    header(&b, 3, 0, 2);
    kv_u32(&b, "general.k", 1);
    kv_u32(&b, "general.k", 2);
    expect_fail(&b, "duplicate key 'general.k'");
    free(b.p);
}

Test(gguf, validates_general_alignment) {
    uint32_t bad[] = {0, 48, 3};
    for (int i = 0; i < 3; i++) {
        buf_t b = {0};
        header(&b, 3, 0, 1);
        kv_u32(&b, "general.alignment", bad[i]);
        expect_fail(&b, "not a power of two");
        free(b.p);
    }
    buf_t b = {0};
    header(&b, 3, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, ST_GGUF_UINT64);
    put_u64(&b, 32);
    expect_fail(&b, "not u32");
    free(b.p);
    /* 64: offsets must follow it */
    uint64_t ne = 16;
    b = (buf_t){0};
    header(&b, 3, 2, 1);
    kv_u32(&b, "general.alignment", 64);
    tensor_info(&b, "a", 1, &ne, ST_TYPE_F32, 0);
    tensor_info(&b, "b", 1, &ne, ST_TYPE_F32, 64);
    pad_to(&b, 64);
    put_zeros(&b, 128);
    st_gguf_t *g = expect_ok(&b);
    cr_assert_eq(st_gguf_alignment(g), 64);
    cr_assert_eq(st_gguf_tensor(g, 1)->file_offset % 64, 0);
    st_gguf_destroy(&g);
    b.len = 0;
    header(&b, 3, 2, 1);
    kv_u32(&b, "general.alignment", 64);
    tensor_info(&b, "a", 1, &ne, ST_TYPE_F32, 0);
    tensor_info(&b, "b", 1, &ne, ST_TYPE_F32, 96); /* multiple of 32, not of 64 */
    pad_to(&b, 64);
    put_zeros(&b, 192);
    expect_fail(&b, "tensor 'b': data offset 96 is not a multiple of the alignment 64");
    free(b.p);
}

/* A file with tensors described by (name, n_dims, ne, type, offset), data area of data_len bytes. */
typedef struct {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[5];
    uint32_t type;
    uint64_t offset;
} tdesc_t;

static buf_t tensors_file(const tdesc_t *t, int n, size_t data_len) {
    buf_t b = {0};
    header(&b, 3, (uint64_t)n, 0);
    for (int i = 0; i < n; i++) tensor_info(&b, t[i].name, t[i].n_dims, t[i].ne, t[i].type, t[i].offset);
    pad_to(&b, 32);
    put_zeros(&b, data_len);
    return b;
}

static void expect_tensors_fail(const tdesc_t *t, int n, size_t data_len, const char *needle) {
    buf_t b = tensors_file(t, n, data_len);
    expect_fail(&b, needle);
    free(b.p);
}

Test(gguf, refuses_duplicate_tensor_names) {
    tdesc_t t[] = {{"w", 1, {8}, ST_TYPE_F32, 0}, {"w", 1, {8}, ST_TYPE_F32, 32}};
    expect_tensors_fail(t, 2, 64, "duplicate tensor name 'w'");
}

Test(gguf, refuses_bad_names) {
    char long_name[65];
    memset(long_name, 'x', 64);
    long_name[64] = 0;
    tdesc_t t[] = {{long_name, 1, {8}, ST_TYPE_F32, 0}};
    expect_tensors_fail(t, 1, 32, "limit 63");
    long_name[63] = 0; /* 63 bytes: the longest allowed */
    buf_t b = tensors_file(t, 1, 32);
    st_gguf_t *g = expect_ok(&b);
    cr_assert_eq(strlen(st_gguf_tensor(g, 0)->name), 63);
    st_gguf_destroy(&g);
    free(b.p);
    tdesc_t e[] = {{"", 1, {8}, ST_TYPE_F32, 0}};
    expect_tensors_fail(e, 1, 32, "empty name");
}

Test(gguf, refuses_bad_dims) {
    tdesc_t zero_dims[] = {{"w", 0, {8}, ST_TYPE_F32, 0}};
    expect_tensors_fail(zero_dims, 1, 32, "n_dims 0 not in 1..4");
    tdesc_t five[] = {{"w", 5, {8, 1, 1, 1, 1}, ST_TYPE_F32, 0}};
    expect_tensors_fail(five, 1, 32, "n_dims 5");
    tdesc_t zero[] = {{"w", 2, {8, 0}, ST_TYPE_F32, 0}};
    expect_tensors_fail(zero, 1, 32, "ne[1] = 0 is not positive");
    tdesc_t neg[] = {{"w", 2, {8, (uint64_t)-3}, ST_TYPE_F32, 0}};
    expect_tensors_fail(neg, 1, 32, "ne[1] = -3 is not positive");
    tdesc_t ovf[] = {{"w", 3, {1ull << 32, 1ull << 32, 1ull << 32}, ST_TYPE_F32, 0}};
    expect_tensors_fail(ovf, 1, 32, "overflows");
    tdesc_t ovf_bytes[] = {{"w", 1, {1ull << 62}, ST_TYPE_F32, 0}}; /* elements fit, bytes do not */
    expect_tensors_fail(ovf_bytes, 1, 32, "overflows");
    tdesc_t blk[] = {{"w", 2, {16, 2}, ST_TYPE_Q4_0, 0}};
    expect_tensors_fail(blk, 1, 64, "ne[0]=16 is not a multiple of the Q4_0 block size 32");
}

Test(gguf, refuses_unknown_type_ids_and_accepts_unsupported_ones) {
    uint32_t unknown[] = {4, 5, 31, ST_TYPE_COUNT, 0xffffffffu};
    for (int i = 0; i < 5; i++) {
        tdesc_t t[] = {{"blk.0.attn_q.weight", 1, {256}, unknown[i], 0}};
        char needle[96];
        snprintf(needle, sizeof needle, "tensor 'blk.0.attn_q.weight': unknown type id %u", unknown[i]);
        expect_tensors_fail(t, 1, 1024, needle);
    }
    tdesc_t q2k[] = {{"w", 1, {256}, ST_TYPE_Q2_K, 0}, {"v", 1, {32}, ST_TYPE_Q5_1, 96}};
    buf_t b = tensors_file(q2k, 2, 128);
    st_gguf_t *g = expect_ok(&b);
    cr_assert_eq(st_gguf_tensor(g, 0)->nbytes, 84);
    cr_assert_eq(st_gguf_tensor(g, 1)->type, ST_TYPE_Q5_1);
    st_gguf_destroy(&g);
    free(b.p);
}

Test(gguf, refuses_bad_offsets) {
    tdesc_t mis[] = {{"w", 1, {8}, ST_TYPE_F32, 8}};
    expect_tensors_fail(mis, 1, 64, "not a multiple of the alignment 32");
    tdesc_t past[] = {{"blk.0.attn_q.weight", 1, {8}, ST_TYPE_F32, 32}};
    buf_t b = tensors_file(past, 1, 48);
    char needle[128];
    size_t start = b.len - 48 + 32;
    snprintf(needle, sizeof needle, "tensor 'blk.0.attn_q.weight': data [%zu,%zu) past end of file (%zu bytes)", start,
             start + 32, b.len);
    expect_fail(&b, needle);
    free(b.p);
    tdesc_t far[] = {{"w", 1, {8}, ST_TYPE_F32, UINT64_MAX - 31}};
    expect_tensors_fail(far, 1, 64, "past end of file");
    tdesc_t huge[] = {{"w", 2, {1ull << 20, 1ull << 20}, ST_TYPE_F32, 0}};
    expect_tensors_fail(huge, 1, 64, "past end of file");
    /* tensors but no data section at all */
    buf_t nodata = {0};
    uint64_t ne = 8;
    header(&nodata, 3, 1, 0);
    tensor_info(&nodata, "w", 1, &ne, ST_TYPE_F32, 0);
    expect_fail(&nodata, "past end of file");
    free(nodata.p);
}

Test(gguf, refuses_overlapping_tensors) {
    tdesc_t same[] = {{"a", 1, {8}, ST_TYPE_F32, 0}, {"b", 1, {8}, ST_TYPE_F32, 0}};
    expect_tensors_fail(same, 2, 64, "overlap");
    tdesc_t part[] = {{"a", 1, {16}, ST_TYPE_F32, 0}, {"b", 1, {8}, ST_TYPE_F32, 32}, {"c", 1, {8}, ST_TYPE_F32, 96}};
    expect_tensors_fail(part, 3, 160, "tensors 'a'");
    /* out of file order but disjoint: fine */
    tdesc_t order[] = {{"a", 1, {8}, ST_TYPE_F32, 64}, {"b", 1, {8}, ST_TYPE_F32, 0}};
    buf_t b = tensors_file(order, 2, 96);
    st_gguf_t *g = expect_ok(&b);
    cr_assert_gt(st_gguf_tensor(g, 0)->file_offset, st_gguf_tensor(g, 1)->file_offset);
    st_gguf_destroy(&g);
    free(b.p);
}

/* ---- writer errors */

Test(gguf, writer_refuses_misuse) {
    st_gguf_writer_t *w = st_gguf_writer_new(0);
    cr_assert_eq(st_gguf_writer_add_u32(w, "k", 1), 0);
    cr_assert_eq(st_gguf_writer_add_u32(w, "k", 2), ST_EINVAL);
    int64_t ne[] = {16, 2};
    cr_assert_eq(st_gguf_writer_add_tensor(w, "q", 2, ne, ST_TYPE_Q4_0), ST_EINVAL, "16 is not a block multiple");
    cr_assert_eq(st_gguf_writer_add_tensor(w, "t", 2, ne, ST_TYPE_F32), 0);
    cr_assert_eq(st_gguf_writer_add_tensor(w, "t", 2, ne, ST_TYPE_F32), ST_EINVAL, "duplicate");
    cr_assert_eq(st_gguf_writer_add_tensor(w, "u", 2, ne, 4), ST_EINVAL, "unknown type");
    cr_assert_eq(st_gguf_writer_add_tensor(w, "u", 0, ne, ST_TYPE_F32), ST_EINVAL);
    int64_t zero[] = {0};
    cr_assert_eq(st_gguf_writer_add_tensor(w, "u", 1, zero, ST_TYPE_F32), ST_EINVAL);
    cr_assert_eq(st_gguf_writer_set_version(w, 1), ST_EINVAL);
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    cr_assert_eq(st_gguf_writer_begin_stream(w, f), 0);
    cr_assert_eq(st_gguf_writer_add_u32(w, "late", 1), ST_EINVAL);
    uint8_t d[200] = {0};
    cr_assert_eq(st_gguf_writer_write(w, d, 100), 0);
    cr_assert_eq(st_gguf_writer_finish(w, NULL), ST_EINVAL, "28 bytes missing");
    st_gguf_writer_destroy(&w);
    w = st_gguf_writer_new(0);
    cr_assert_eq(st_gguf_writer_add_tensor(w, "t", 2, ne, ST_TYPE_F32), 0);
    cr_assert_eq(st_gguf_writer_begin_stream(w, f), 0);
    cr_assert_eq(st_gguf_writer_write(w, d, 129), ST_EINVAL, "one byte too many");
    st_gguf_writer_destroy(&w);
    fclose(f);
    free(mem);
    cr_assert_null(st_gguf_writer_new(48));
}

Test(gguf, writer_copies_keys_between_files) {
    buf_t b = rich_file(3, 0);
    st_gguf_t *src = expect_ok(&b);
    st_gguf_writer_t *w = st_gguf_writer_new(0);
    for (int64_t i = 0; i < st_gguf_n_kv(src); i++) {
        st_str_t key;
        cr_assert(st_gguf_kv_at(src, i, &key, NULL));
        char k[64];
        snprintf(k, sizeof k, "%.*s", (int)key.len, key.data);
        cr_assert_eq(st_gguf_writer_copy_kv(w, k, src, k), 0, "%s", k);
    }
    int64_t ne_a[] = {4, 3}, ne_b[] = {64, 2}, ne_c[] = {8}, ne_d[] = {32, 1, 1, 2};
    cr_assert_eq(st_gguf_writer_add_tensor(w, "a.weight", 2, ne_a, ST_TYPE_F32), 0);
    cr_assert_eq(st_gguf_writer_add_tensor(w, "b.weight", 2, ne_b, ST_TYPE_Q8_0), 0);
    cr_assert_eq(st_gguf_writer_add_tensor(w, "c.weight", 1, ne_c, ST_TYPE_F16), 0);
    cr_assert_eq(st_gguf_writer_add_tensor(w, "d.weight", 4, ne_d, ST_TYPE_Q4_0), 0);
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    cr_assert_eq(st_gguf_writer_begin_stream(w, f), 0);
    for (int64_t i = 0; i < 4; i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(src, i);
        cr_assert_eq(st_gguf_writer_write(w, t->data, t->nbytes), 0);
    }
    cr_assert_eq(st_gguf_writer_finish(w, NULL), 0);
    st_gguf_writer_destroy(&w);
    fclose(f);
    cr_assert_eq(len, b.len);
    cr_assert_eq(memcmp(mem, b.p, len), 0, "copy of every key gives the same file");
    cr_assert_eq(st_gguf_writer_copy_kv(w = st_gguf_writer_new(0), "x", src, "absent"), ST_EINVAL);
    st_gguf_writer_destroy(&w);
    st_gguf_destroy(&src);
    free(mem);
    free(b.p);
}
