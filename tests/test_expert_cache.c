/* expert_cache: experts read from storage into a small cache give logits
 * bit-identical to the normal path (budgets that force evictions, O_DIRECT
 * and buffered reads, with and without prefetch, PowerInfer's transposed
 * down), the slots never exceed the budget, and budgets that cannot work are
 * refused with a clear message. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "expert_cache.h"
#include "forward.h"
#include "model.h"
#include "st_log.h"
#include "testutil.h"

#define N_PROMPT 11
#define N_GEN 6

/* Logits of a prompt (all positions, in batches of n_batch) then N_GEN greedy
 * single-token steps, each step's logits appended: (N_PROMPT + N_GEN) x n_vocab. */
static float *s_run(st_ctx_t *c) {
    const int V = st_ctx_model(c)->cfg.n_vocab;
    float *lg = malloc((size_t)(N_PROMPT + N_GEN) * V * sizeof *lg);
    cr_assert_not_null(lg);
    st_kv_t *kv = st_kv_new(c, N_PROMPT + N_GEN + 1);
    cr_assert_not_null(kv);
    int32_t toks[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++) toks[i] = (int32_t)((i * 7919 + 13) % V);
    cr_assert_eq(st_decode(c, kv, toks, N_PROMPT, lg, true), 0);
    for (int s = 0; s < N_GEN; s++) {
        const float *prev = lg + (size_t)(N_PROMPT + s - 1) * V;
        int32_t best = 0;
        for (int v = 1; v < V; v++)
            if (prev[v] > prev[best]) best = v;
        cr_assert_eq(st_decode(c, kv, &best, 1, lg + (size_t)(N_PROMPT + s) * V, false), 0);
    }
    st_kv_destroy(&kv);
    return lg;
}

/* Normal path vs a cache of `extra` slots more than one layer step needs. */
static void s_check_identical_model(st_model_t *m, int n_batch, int extra, bool no_direct, bool no_prefetch) {
    const st_config_t *cfg = &m->cfg;
    st_ctx_t *c = st_test_ctx(m, N_PROMPT + N_GEN + 1, n_batch);
    float *want = s_run(c);

    const uint64_t slot = st_expert_cache_slot_bytes(c);
    cr_assert_gt(slot, 0);
    const int need = cfg->n_expert < n_batch * cfg->n_expert_used ? cfg->n_expert : n_batch * cfg->n_expert_used;
    st_expert_cache_params_t p = {
        .cache_bytes = (uint64_t)(need + extra) * slot + slot / 2, .n_io_threads = 3, .no_direct = no_direct};
    st_expert_cache_t *ec = st_expert_cache_new(c, &p);
    cr_assert_not_null(ec);
    st_moe_backend_t b = st_expert_cache_backend(ec);
    if (no_prefetch) b.prefetch = NULL;
    st_ctx_set_moe(c, &b);
    float *got = s_run(c);
    const size_t n = (size_t)(N_PROMPT + N_GEN) * cfg->n_vocab;
    cr_assert_eq(memcmp(want, got, n * sizeof *got), 0, "logits differ from the normal path");

    st_expert_cache_stats_t s;
    st_expert_cache_stats(ec, &s);
    cr_assert_eq(s.n_slots, need + extra);
    cr_assert_leq(s.slots_used, s.n_slots);
    cr_assert_leq(s.resident_bytes, p.cache_bytes, "%llu bytes of slots over a %llu budget",
                  (unsigned long long)s.resident_bytes, (unsigned long long)p.cache_bytes);
    cr_assert_leq((uint64_t)s.n_slots * s.slot_bytes, p.cache_bytes);
    cr_assert_gt(s.loads, (uint64_t)s.n_slots, "no eviction happened (%llu loads)", (unsigned long long)s.loads);
    cr_assert_eq(s.hits + s.loads, s.lookups);
    cr_assert_eq(s.tokens, (uint64_t)(N_PROMPT + N_GEN));
    cr_assert_eq(s.direct, !no_direct);
    cr_assert_geq(s.bytes_read, s.loads * (uint64_t)(m->layers[0].gate_exps.mat_bytes * 3));

    st_ctx_set_moe(c, NULL);
    st_expert_cache_destroy(&ec);
    st_expert_cache_destroy(&ec); /* safe twice */
    cr_assert_null(ec);
    free(want);
    free(got);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

static void s_check_identical(const char *const *args, int n_batch, int extra, bool no_direct, bool no_prefetch) {
    s_check_identical_model(st_test_load(args), n_batch, extra, no_direct, no_prefetch);
}

/* The model of args requantized by llama-quantize (skipped where it is absent). */
static void s_check_identical_quantized(const char *const *args, const char *type, int n_batch, int extra) {
    char path[1200];
    if (!st_test_quantized_model(args, type, path, sizeof path)) cr_skip_test("llama-quantize not available");
    s_check_identical_model(st_test_load_path(path), n_batch, extra, false, false);
}

#define Q4 ST_SYNTH("--type", "q4_0", "--experts", "16", "--experts-used", "4", "--layers", "3", "--seed", "5")

Test(expert_cache, q4_0_bit_identical_with_evictions) { s_check_identical(Q4, 1, 2, false, false); }
Test(expert_cache, q4_0_batched_prompt) { s_check_identical(Q4, 4, 3, false, false); }
Test(expert_cache, buffered_reads_without_prefetch) { s_check_identical(Q4, 2, 1, true, true); }
Test(expert_cache, q8_0_powerinfer_transposed_down) {
    s_check_identical(ST_SYNTH("--type", "q8_0", "--powerinfer", "--gating", "sigmoid", "--seed", "3"), 3, 1, false,
                      false);
}
/* K-quant experts (Q4_K gate/up, Q6_K down on some layers; Q8_K activations)
 * and Q4_1 ones (Q8_1 activations) through the cache. */
#define KQ                                                                                                             \
    ST_SYNTH("--type", "f32", "--hidden", "256", "--expert-ffn", "256", "--experts", "16", "--experts-used", "4",      \
             "--layers", "3", "--seed", "5")
Test(expert_cache, q4_k_m_bit_identical_with_evictions) { s_check_identical_quantized(KQ, "Q4_K_M", 2, 2); }
Test(expert_cache, q4_1_bit_identical_with_evictions) {
    s_check_identical_quantized(
        ST_SYNTH("--type", "f32", "--experts", "16", "--experts-used", "4", "--layers", "3", "--seed", "6"), "Q4_1", 3,
        1);
}

Test(expert_cache, f32_odd_shapes) {
    s_check_identical(
        ST_SYNTH("--type", "f32", "--hidden", "96", "--expert-ffn", "40", "--experts", "6", "--seed", "9"), 1, 1, false,
        false);
}
Test(expert_cache, skewed_router) {
    s_check_identical(ST_SYNTH("--type", "q4_0", "--experts", "16", "--experts-used", "2", "--router-hot", "0.25:4"), 2,
                      4, false, false);
}

/* Reads the redirected stderr. */
static void s_log(char *buf, size_t cap) {
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
}

Test(expert_cache, too_small_budgets_refused, .init = cr_redirect_stderr) {
    st_model_t *m = st_test_load(Q4);
    st_ctx_t *c = st_test_ctx(m, N_PROMPT + N_GEN + 1, 2);
    const uint64_t slot = st_expert_cache_slot_bytes(c);
    /* 8 experts needed (2 tokens x top-4), 7 fit */
    st_expert_cache_params_t p = {.cache_bytes = 7 * slot + slot - 1};
    cr_assert_null(st_expert_cache_new(c, &p));
    p.cache_bytes = 0;
    cr_assert_null(st_expert_cache_new(c, &p));
    cr_assert_null(st_expert_cache_new(c, NULL));
    /* a whole-process budget below what the dense part needs: refused with the figures, nothing printed */
    st_expert_cache_budget_t b;
    st_expert_cache_t *ec = NULL;
    FILE *quiet = tmpfile(); /* stderr goes here while the library refuses */
    cr_assert_not_null(quiet);
    fflush(stderr);
    const int err_fd = fileno(stderr), saved = dup(err_fd); /* Criterion's redirection: not always fd 2 */
    cr_assert(saved >= 0 && dup2(fileno(quiet), err_fd) == err_fd);
    cr_assert_eq(st_expert_cache_install(c, 1 << 20, &b, &ec), ST_ERANGE);
    cr_assert_null(ec);
    cr_assert_eq(b.slot_bytes, slot);
    cr_assert_eq(b.min_slots, 8);
    cr_assert_eq(b.min_total, b.reserve + 8 * slot);
    cr_assert_gt(b.min_total, 1 << 20);
    cr_assert_eq(st_expert_cache_install(c, 0, &b, &ec), ST_ERANGE);
    fflush(stderr);
    cr_assert(dup2(saved, err_fd) == err_fd);
    close(saved);
    struct stat qs;
    cr_assert_eq(fstat(fileno(quiet), &qs), 0);
    cr_assert_eq(qs.st_size, 0, "st_expert_cache_install printed");
    fclose(quiet);
    /* the programs say why (cli/mem.c) */
    cr_assert_null(st_cli_mem_install("st-test", c, 1 << 20));
    char log[8192];
    s_log(log, sizeof log);
    cr_assert(strstr(log, "one layer step needs 8"), "log: %s", log);
    cr_assert(strstr(log, "st-test: --mem 1 MiB is too small for this model"), "log: %s", log);
    cr_assert(strstr(log, "use --mem"), "log: %s", log);
    /* a generous one works, and the reserve plus the slots fit in it */
    const uint64_t total = 512ull << 20;
    cr_assert_eq(st_expert_cache_install(c, total, &b, &ec), 0);
    cr_assert_not_null(ec);
    st_expert_cache_stats_t s;
    st_expert_cache_stats(ec, &s);
    cr_assert_leq(s.cache_bytes + st_expert_cache_reserve(c, total), total + (64u << 20)); /* RSS moved a little */
    /* the statistics line the programs print, from those counters */
    char line[512], want[64];
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    st_cli_mem_print_stats(ec, f);
    rewind(f);
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    snprintf(want, sizeof want, "expert cache: %d slots (", s.n_slots);
    cr_assert_eq(strncmp(line, want, strlen(want)), 0, "%s", line);
    cr_assert(strstr(line, "hit rate 0.0% (0 of 0)"), "%s", line);
    st_ctx_set_moe(c, NULL);
    st_expert_cache_destroy(&ec);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

Test(expert_cache, converted_weights_refused, .init = cr_redirect_stderr) {
    /* float PowerInfer files get de-transposed copies of down: not in the file as used */
    st_model_t *m = st_test_load(ST_SYNTH("--type", "f32", "--powerinfer"));
    st_ctx_t *c = st_test_ctx(m, N_PROMPT + N_GEN + 1, 1);
    cr_assert_eq(st_expert_cache_slot_bytes(c), 0);
    st_expert_cache_params_t p = {.cache_bytes = 1ull << 30};
    cr_assert_null(st_expert_cache_new(c, &p));
    st_expert_cache_budget_t b;
    st_expert_cache_t *ec = NULL;
    cr_assert_eq(st_expert_cache_install(c, 1ull << 30, &b, &ec), ST_EUNSUP);
    cr_assert_null(ec);
    cr_assert_null(st_cli_mem_install("st-test", c, 1ull << 30));
    char log[8192];
    s_log(log, sizeof log);
    cr_assert(strstr(log, "not stored in its GGUF file"), "log: %s", log);
    cr_assert(strstr(log, "st-test: --mem needs a model"), "log: %s", log);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

Test(expert_cache, cli_mem_flag, .init = cr_redirect_stderr) {
    st_cli_args_t a;
    char *ok[] = {"st-run", "-m", "x.gguf", "-p", "hi", "--mem", "1.5G", NULL};
    optind = 0;
    cr_assert_eq(st_cli_parse("st-run", 7, ok, &a, NULL), 0);
    cr_assert_eq(a.mem, 3ull << 29);
    char *bad[] = {"st-run", "-m", "x.gguf", "-p", "hi", "--mem", "lots", NULL};
    optind = 0; /* getopt starts over */
    cr_assert_eq(st_cli_parse("st-run", 7, bad, &a, NULL), 2);
    char *zero[] = {"st-run", "-m", "x.gguf", "-p", "hi", "--mem", "0", NULL};
    optind = 0;
    cr_assert_eq(st_cli_parse("st-run", 7, zero, &a, NULL), 2);
    char log[4096];
    s_log(log, sizeof log);
    cr_assert(strstr(log, "invalid value 'lots' for --mem"), "log: %s", log);
}
