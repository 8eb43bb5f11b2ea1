/* fuzz_gguf: any bytes as a GGUF file in memory (st_gguf_open_memory), then
 * what a loader does with an accepted file: every key by index and by name,
 * every array element (strings and integers), every tensor info and lookup by
 * name, and a tokenizer built from its vocabulary keys. Must never crash,
 * leak or read outside the input. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gguf.h"
#include "st_log.h"
#include "tokenizer.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!getenv("ST_LOG")) st_log_set_level((st_log_level_t)-1); /* silent: refusals are the normal case */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_gguf_t *g = st_gguf_open_memory(data, size);
    if (!g) return 0;
    volatile uint64_t sink = st_gguf_version(g) + st_gguf_alignment(g) + st_gguf_file_size(g);
    for (int64_t i = 0; i < st_gguf_n_kv(g); i++) {
        st_str_t k;
        st_gguf_vtype_t type;
        if (!st_gguf_kv_at(g, i, &k, &type)) continue;
        char key[256];
        if (k.len >= sizeof key) continue;
        memcpy(key, k.data, (size_t)k.len);
        key[k.len] = '\0';
        sink += (uint64_t)st_gguf_kv_type(g, key);
        st_gguf_vtype_t st;
        const void *p = st_gguf_get_scalar(g, key, &st);
        if (p) sink += *(const uint8_t *)p;
        st_str_t s;
        if (st_gguf_get_str(g, key, &s) == 1 && s.len) sink += (uint8_t)s.data[s.len - 1];
        uint32_t u32;
        int64_t i64;
        float f;
        bool b;
        if (st_gguf_get_u32(g, key, &u32) == 1) sink += u32;
        if (st_gguf_get_i64(g, key, &i64) == 1) sink += (uint64_t)i64;
        if (st_gguf_get_f32(g, key, &f) == 1) sink += (uint64_t)(f == f);
        if (st_gguf_get_bool(g, key, &b) == 1) sink += b;
        st_gguf_vtype_t et;
        uint64_t n;
        const void *arr;
        if (st_gguf_get_arr(g, key, &et, &n, &arr) == 1) {
            for (uint64_t j = 0; j < n && j < 4096; j++) {
                if (st_gguf_arr_str(g, key, j, &s) == 1 && s.len) sink += (uint8_t)s.data[0];
                if (st_gguf_arr_int(g, key, j, &i64) == 1) sink += (uint64_t)i64;
            }
            st_gguf_arr_str(g, key, n, &s); /* one past the end: must be refused */
            st_gguf_arr_int(g, key, n, &i64);
        }
    }
    for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(g, i);
        if (!t) continue;
        sink += t->file_offset + t->nbytes;
        if (t->nbytes) sink += ((const uint8_t *)t->data)[t->nbytes - 1]; /* data must be inside the input */
        if (st_gguf_find_tensor(g, t->name) == NULL) abort();             /* every listed tensor is found by name */
    }
    st_tokenizer_t *tok = st_tokenizer_from_gguf(g, NULL);
    if (tok) {
        int32_t ids[64];
        sink += (uint64_t)st_tokenize(tok, "Hello, world! 123", 17, true, ids, 64);
        st_tokenizer_destroy(&tok);
    }
    (void)sink;
    st_gguf_destroy(&g);
    return 0;
}
