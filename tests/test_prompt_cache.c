/* The prompt cache's bookkeeping (server/prompt_cache.c): the longest
 * common prefix wins, the last prompt token is always decoded, a sequence
 * supersedes the entries it continues, the budget evicts the least recently
 * used, a zero budget keeps nothing, and a reused prefix continues exactly
 * as a fresh prefill (same logits bits; the end-to-end answers are checked
 * by tests/prompt_cache/run). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "model.h"
#include "prompt_cache.h"
#include "testutil.h"

typedef struct {
    st_model_t *m;
    st_ctx_t *c;
} fix_t;

static fix_t s_fix(void) {
    char path[1024];
    const char *args[] = {"--type", "f32", NULL};
    cr_assert_not_null(st_test_model(args, path, sizeof path));
    fix_t f = {.m = st_model_load(path)};
    cr_assert_not_null(f.m);
    st_ctx_params_t p = st_ctx_default_params();
    p.n_ctx = 128;
    p.n_batch = 16;
    p.n_threads = 2;
    f.c = st_ctx_new(f.m, &p);
    cr_assert_not_null(f.c);
    return f;
}

static void s_unfix(fix_t *f) {
    st_ctx_destroy(&f->c);
    st_model_destroy(&f->m);
}

/* A finished sequence of toks[0..n) kept in pc. */
static void s_finish(fix_t *f, st_pcache_t *pc, const int32_t *toks, int n) {
    st_kv_t *kv = st_kv_new(f->c, 128);
    cr_assert_eq(st_decode(f->c, kv, toks, n, NULL, false), 0);
    st_pcache_keep(pc, toks, &kv);
    cr_assert_null(kv);
}

static int s_take(st_pcache_t *pc, const int32_t *prompt, int n) {
    int n_cached = -1;
    st_kv_t *kv = st_pcache_take(pc, prompt, n, 128, &n_cached);
    cr_assert_not_null(kv);
    cr_assert_eq(st_kv_pos(kv), n_cached);
    cr_assert_eq(st_kv_capacity(kv), 128);
    st_kv_destroy(&kv);
    return n_cached;
}

Test(prompt_cache, longest_prefix_wins_and_the_last_token_is_decoded) {
    fix_t f = s_fix();
    st_pcache_t *pc = st_pcache_new(f.c, 64 << 20);
    int32_t a[20], b[20];
    for (int i = 0; i < 20; i++) a[i] = 100 + i, b[i] = i < 6 ? a[i] : 500 + i;
    cr_assert_eq(s_take(pc, a, 10), 0, "empty cache");
    s_finish(&f, pc, a, 12);
    s_finish(&f, pc, b, 9);
    cr_assert_eq(s_take(pc, a, 20), 12, "a's 12 tokens");
    cr_assert_eq(s_take(pc, b, 20), 9, "b's 9 tokens");
    cr_assert_eq(s_take(pc, a, 8), 7, "the whole prompt is cached: all but its last token");
    int32_t c[10] = {100, 101, 102, 103, 7, 7, 7, 7, 7, 7};
    cr_assert_eq(s_take(pc, c, 10), 4, "shared with both, longest 4");
    st_pcache_stats_t st;
    st_pcache_stats(pc, &st);
    cr_assert_eq(st.hits, 4);
    cr_assert_eq(st.misses, 1);
    cr_assert_eq(st.cached_tokens, 12 + 9 + 7 + 4);
    cr_assert_eq(st.entries, 2);
    st_pcache_destroy(&pc);
    cr_assert_null(pc);
    s_unfix(&f);
}

Test(prompt_cache, a_continued_sequence_supersedes_its_prefix) {
    fix_t f = s_fix();
    st_pcache_t *pc = st_pcache_new(f.c, 64 << 20);
    int32_t a[30];
    for (int i = 0; i < 30; i++) a[i] = 300 + i;
    s_finish(&f, pc, a, 10); /* turn 1 */
    s_finish(&f, pc, a, 25); /* turn 2 starts with turn 1 */
    st_pcache_stats_t st;
    st_pcache_stats(pc, &st);
    cr_assert_eq(st.entries, 1, "turn 1's entry is dropped: turn 2's serves it");
    cr_assert_eq(s_take(pc, a, 11), 10);
    cr_assert_eq(s_take(pc, a, 30), 25);
    st_pcache_destroy(&pc);
    s_unfix(&f);
}

Test(prompt_cache, budget_evicts_the_least_recently_used) {
    fix_t f = s_fix();
    int32_t t[3][20];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 20; i++) t[k][i] = 1000 * (k + 1) + i;
    st_kv_t *probe = st_kv_new(f.c, 20);
    size_t one = st_kv_bytes(probe); /* an entry of 20 tokens once shrunk */
    st_kv_destroy(&probe);
    st_pcache_t *pc = st_pcache_new(f.c, 2 * one + one / 2);
    s_finish(&f, pc, t[0], 20);
    s_finish(&f, pc, t[1], 20);
    cr_assert_eq(s_take(pc, t[0], 20), 19, "t0 used: t1 is now the oldest");
    s_finish(&f, pc, t[2], 20);
    st_pcache_stats_t st;
    st_pcache_stats(pc, &st);
    cr_assert_eq(st.entries, 2);
    cr_assert_eq(st.evictions, 1);
    cr_assert_eq(st.bytes, 2 * one);
    cr_assert_eq(s_take(pc, t[1], 20), 0, "t1 was evicted");
    cr_assert_eq(s_take(pc, t[0], 20), 19);
    cr_assert_eq(s_take(pc, t[2], 20), 19);
    st_pcache_destroy(&pc);

    pc = st_pcache_new(f.c, one / 2); /* an entry larger than the whole budget is not kept */
    s_finish(&f, pc, t[0], 20);
    st_pcache_stats(pc, &st);
    cr_assert_eq(st.entries, 0);
    cr_assert_eq(st.bytes, 0);
    st_pcache_destroy(&pc);

    pc = st_pcache_new(f.c, 0); /* off */
    s_finish(&f, pc, t[0], 20);
    cr_assert_eq(s_take(pc, t[0], 20), 0);
    st_pcache_destroy(&pc);
    s_unfix(&f);
}

Test(prompt_cache, reused_prefix_gives_the_logits_of_a_fresh_prefill) {
    fix_t f = s_fix();
    const size_t V = (size_t)f.m->cfg.n_vocab;
    st_pcache_t *pc = st_pcache_new(f.c, 64 << 20);
    int32_t turn1[40], turn2[60];
    for (int i = 0; i < 40; i++) turn1[i] = 2000 + 37 * i;
    memcpy(turn2, turn1, 33 * sizeof *turn2); /* the next turn diverges at 33 */
    for (int i = 33; i < 60; i++) turn2[i] = 9000 + i;
    s_finish(&f, pc, turn1, 40);
    int n_cached = 0;
    st_kv_t *kv = st_pcache_take(pc, turn2, 60, 128, &n_cached), *fresh = st_kv_new(f.c, 128);
    cr_assert_eq(n_cached, 33);
    float *got = malloc(V * sizeof(float)), *want = malloc(V * sizeof(float));
    cr_assert_eq(st_decode(f.c, kv, turn2 + 33, 27, got, false), 0);
    cr_assert_eq(st_decode(f.c, fresh, turn2, 60, want, false), 0);
    cr_assert(!memcmp(got, want, V * sizeof(float)), "the last token's logits differ");
    free(got);
    free(want);
    st_kv_destroy(&kv);
    st_kv_destroy(&fresh);
    st_pcache_destroy(&pc);
    s_unfix(&f);
}
