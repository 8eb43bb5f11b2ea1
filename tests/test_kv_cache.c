/* KV cache prefixes (model/kv_cache.c), what the prompt cache is built on: a
 * sequence continued from a copied prefix of another sequence's cache must
 * give exactly the logits of a fresh prefill of the same tokens (the
 * reference: the cache-free path), for global layers and for sliding-window
 * rings that wrapped; a ring rewound past what it still holds is refused. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "model.h"
#include "st_log.h"
#include "testutil.h"

static void s_tokens(int32_t *t, int n, int seed) {
    for (int i = 0; i < n; i++) t[i] = (int32_t)(((int64_t)(i + seed) * 7919 + 13 * seed) % 151000);
}

/* Logits of `more` decoded after the first n_prefix tokens of src have been
 * copied into a new cache of capacity cap (tested), and after a fresh prefill
 * of those n_prefix tokens (reference): they must be the same bits. */
static void s_check_continuation(st_ctx_t *c, const st_kv_t *src, const int32_t *seq, int n_prefix, const int32_t *more,
                                 int n_more, int cap) {
    const size_t V = (size_t)st_ctx_model(c)->cfg.n_vocab;
    float *got = malloc((size_t)n_more * V * sizeof(float)), *want = malloc((size_t)n_more * V * sizeof(float));
    st_kv_t *a = st_kv_new(c, cap), *b = st_kv_new(c, cap);
    cr_assert(a && b && got && want);
    cr_assert_eq(st_kv_copy_prefix(a, src, n_prefix), 0);
    cr_assert_eq(st_kv_pos(a), n_prefix);
    cr_assert_eq(st_decode(c, a, more, n_more, got, true), 0);
    if (n_prefix) cr_assert_eq(st_decode(c, b, seq, n_prefix, NULL, false), 0);
    cr_assert_eq(st_decode(c, b, more, n_more, want, true), 0);
    for (int t = 0; t < n_more; t++)
        cr_assert(!memcmp(got + t * V, want + t * V, V * sizeof(float)),
                  "prefix %d, token %d after it: logits differ from a fresh prefill", n_prefix, t);
    st_kv_destroy(&a);
    st_kv_destroy(&b);
    free(got);
    free(want);
}

Test(kv_cache, copied_prefix_continues_as_a_fresh_prefill) {
    st_model_t *m =
        st_test_load(ST_SYNTH("--type", "q4_0", "--layers", "8", "--sliding-window", "4096", "--seed", "5"));
    st_ctx_t *c = st_test_ctx(m, 64, 16);
    int32_t seq[40], more[13];
    s_tokens(seq, 40, 1);
    s_tokens(more, 13, 2);
    st_kv_t *src = st_kv_new(c, 64);
    cr_assert_eq(st_decode(c, src, seq, 40, NULL, false), 0);
    /* the whole sequence, a prefix cut inside a batch, nothing; into caches larger and smaller than src */
    s_check_continuation(c, src, seq, 40, more, 13, 64);
    s_check_continuation(c, src, seq, 25, more, 13, 40);
    s_check_continuation(c, src, seq, 0, more, 13, 20);
    /* given back its room, src still serves the same prefixes */
    size_t before = st_kv_bytes(src);
    st_kv_shrink(src);
    cr_assert_eq(st_kv_capacity(src), 40);
    cr_assert_eq(st_kv_bytes(src), before / 64 * 40, "%zu bytes of %zu", st_kv_bytes(src), before);
    s_check_continuation(c, src, seq, 25, more, 13, 64);
    s_check_continuation(c, src, seq, 40, more, 13, 64);
    int32_t one = 7;
    cr_assert_lt(st_decode(c, src, &one, 1, NULL, false), 0, "a shrunk cache is full");
    st_kv_destroy(&src);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

Test(kv_cache, bad_prefix_copies_are_refused) {
    st_model_t *m = st_test_load(ST_SYNTH("--type", "f32"));
    st_ctx_t *c = st_test_ctx(m, 32, 8);
    int32_t seq[10];
    s_tokens(seq, 10, 3);
    st_kv_t *src = st_kv_new(c, 32), *dst = st_kv_new(c, 8);
    cr_assert_eq(st_decode(c, src, seq, 10, NULL, false), 0);
    cr_assert_eq(st_kv_copy_prefix(dst, src, 11), ST_EINVAL, "more than src holds");
    cr_assert_eq(st_kv_copy_prefix(dst, src, 9), ST_EINVAL, "more than dst holds");
    cr_assert_eq(st_kv_pos(dst), 0);
    cr_assert_eq(st_kv_copy_prefix(dst, src, 8), 0);
    cr_assert_eq(st_kv_pos(dst), 8);
    st_kv_destroy(&src);
    st_kv_destroy(&dst);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

/* 4 layers, 3 of them sliding-window (window 4096, as llama.cpp forces it);
 * n_batch 16, so a ring holds 4112 positions and a sequence of 4200 has
 * overwritten its first 88. Three prefills of 4200 tokens: minutes under
 * ASan on a busy machine, hence the timeout. */
Test(kv_cache, wrapped_ring_rewinds_only_within_its_slack, .timeout = 600) {
    /* the ring's bookkeeping is the same C on every machine; under qemu these
     * prefills took over 5 minutes of the aarch64 run (release, asan, ref run it) */
    if (*st_test_run_prefix()) cr_skip_test("12600 prompt tokens under an emulator");
    st_model_t *m = st_test_load(ST_SYNTH(
        "--hidden", "64", "--layers", "4", "--heads", "4", "--kv-heads", "2", "--experts", "8", "--experts-used", "2",
        "--expert-ffn", "64", "--sliding-window", "4096", "--type", "f32", "--ctx", "8192", "--seed", "17"));
    const int L = 4200, n_batch = 16;
    st_ctx_t *c = st_test_ctx(m, 4300, n_batch);
    int32_t *seq = malloc(L * sizeof *seq), more[20];
    s_tokens(seq, L, 4);
    s_tokens(more, 20, 5);
    st_kv_t *src = st_kv_new(c, 4300);
    cr_assert_eq(st_decode(c, src, seq, L, NULL, false), 0);
    /* position P reads [P - 4095, P): slots hold [L - 4112, L) = [88, 4200) */
    const int first_ok = L - n_batch - 1; /* 4183: 4183 - 4095 = 88 */
    cr_assert(st_kv_prefix_usable(src, L));
    cr_assert(st_kv_prefix_usable(src, first_ok));
    cr_assert(!st_kv_prefix_usable(src, first_ok - 1));
    cr_assert(!st_kv_prefix_usable(src, 100), "position 0..87 are gone");
    cr_assert(st_kv_prefix_usable(src, 0));
    st_kv_t *dst = st_kv_new(c, 4300);
    cr_assert_eq(st_kv_copy_prefix(dst, src, first_ok - 1), ST_EINVAL);
    cr_assert_eq(st_kv_pos(dst), 0);
    st_kv_destroy(&dst);
    s_check_continuation(c, src, seq, first_ok, more, 20, 4300);
    st_kv_shrink(src); /* the global layers give back 100 positions, the wrapped rings nothing */
    cr_assert_eq(st_kv_capacity(src), L);
    s_check_continuation(c, src, seq, 4190, more, 20, 4250);
    cr_assert(!st_kv_prefix_usable(src, first_ok - 1));
    free(seq);
    st_kv_destroy(&src);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

/* A ring that never wrapped keeps every position: any prefix can be reused. */
Test(kv_cache, ring_that_did_not_wrap_rewinds_anywhere, .timeout = 120) {
    st_model_t *m = st_test_load(ST_SYNTH(
        "--hidden", "64", "--layers", "8", "--heads", "4", "--kv-heads", "2", "--experts", "8", "--experts-used", "2",
        "--expert-ffn", "64", "--sliding-window", "4096", "--type", "f32", "--ctx", "8192", "--seed", "17"));
    st_ctx_t *c = st_test_ctx(m, 4300, 16);
    int32_t seq[300], more[10];
    s_tokens(seq, 300, 6);
    s_tokens(more, 10, 7);
    st_kv_t *src = st_kv_new(c, 4300);
    cr_assert_eq(st_decode(c, src, seq, 300, NULL, false), 0);
    for (int p = 0; p <= 300; p += 50) cr_assert(st_kv_prefix_usable(src, p), "prefix %d", p);
    s_check_continuation(c, src, seq, 150, more, 10, 4300);
    st_kv_destroy(&src);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}
