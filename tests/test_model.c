/* Model loading (configuration rules, PowerInfer variants, refusals with a
 * clear message) and forward-pass invariants that need no reference: batch
 * vs one-token decoding, error paths of st_decode. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "gguf_writer.h"
#include "model.h"
#include "moe.h"
#include "testutil.h"

Test(model, tiny_config_from_metadata) {
    st_model_t *m = st_test_load(ST_SYNTH("--type", "f32"));
    const st_config_t *c = &m->cfg;
    cr_assert_eq(c->n_layer, 4);
    cr_assert_eq(c->n_embd, 64);
    cr_assert_eq(c->n_head, 4);
    cr_assert_eq(c->n_head_kv, 2);
    cr_assert_eq(c->head_dim, 16);
    cr_assert_eq(c->n_expert, 8);
    cr_assert_eq(c->n_expert_used, 2);
    cr_assert_eq(c->n_ff_exp, 64);
    cr_assert_eq(c->n_vocab, 151669);
    cr_assert_eq(c->gating, ST_GATING_SOFTMAX);
    cr_assert_eq(c->n_swa, 0);
    cr_assert_float_eq(c->rms_eps, 1e-6f, 1e-12);
    cr_assert_float_eq(c->rope_base, 1e6f, 1.0f);
    for (int il = 0; il < 4; il++) cr_assert(c->use_rope[il] && !c->is_swa[il]);
    cr_assert_not_null(m->tok);
    cr_assert_neq(m->output.data, m->tok_embd.data, "untied model uses output.weight");
    st_model_destroy(&m);
    cr_assert_null(m);
}

Test(model, head_dim_from_key_length_and_tied_output) {
    st_model_t *m = st_test_load(ST_SYNTH("--hidden", "64", "--heads", "2", "--kv-heads", "1", "--head-dim", "48",
                                          "--tied", "--gating", "sigmoid"));
    cr_assert_eq(m->cfg.head_dim, 48); /* not n_embd / n_head = 32 */
    cr_assert_eq(m->cfg.gating, ST_GATING_SIGMOID);
    cr_assert_eq(m->output.data, m->tok_embd.data, "tied: token_embd is the output head");
    st_model_destroy(&m);
}

Test(model, swa_pattern_default_period_4_with_nope_layers) {
    st_model_t *m = st_test_load(ST_SYNTH("--layers", "8", "--sliding-window", "4096"));
    cr_assert_eq(m->cfg.n_swa, 4096);
    for (int il = 0; il < 8; il++) {
        cr_assert_eq(m->cfg.is_swa[il], il % 4 != 0, "layer %d", il);
        cr_assert_eq(m->cfg.use_rope[il], il % 4 != 0, "layer %d", il);
    }
    st_model_destroy(&m);
}

Test(model, swa_with_exactly_4_layers_keeps_rope_everywhere) {
    /* llama.cpp: n_no_rope_layer_step (4) == n_layer means RoPE on every layer */
    st_model_t *m = st_test_load(ST_SYNTH("--layers", "4", "--sliding-window", "4096"));
    for (int il = 0; il < 4; il++) {
        cr_assert_eq(m->cfg.is_swa[il], il % 4 != 0);
        cr_assert(m->cfg.use_rope[il]);
    }
    st_model_destroy(&m);
}

Test(model, swa_window_value_is_forced_to_4096) {
    st_model_t *m = st_test_load(ST_SYNTH("--layers", "8", "--sliding-window", "128"));
    cr_assert_eq(m->cfg.n_swa, 4096);
    st_model_destroy(&m);
}

Test(model, swa_pattern_key_and_per_layer_array) {
    st_model_t *m = st_test_load(ST_SYNTH("--layers", "8", "--sliding-window", "4096", "--swa-pattern", "2"));
    for (int il = 0; il < 8; il++) cr_assert_eq(m->cfg.is_swa[il], il % 2 != 0, "layer %d", il);
    st_model_destroy(&m);
    m = st_test_load(ST_SYNTH("--layers", "8", "--sliding-window", "4096", "--swa-layers", "0,1,1,0,1,1,0,1"));
    const bool want[8] = {0, 1, 1, 0, 1, 1, 0, 1};
    for (int il = 0; il < 8; il++) {
        cr_assert_eq(m->cfg.is_swa[il], want[il], "layer %d", il);
        cr_assert_eq(m->cfg.use_rope[il], il % 4 != 0, "layer %d", il); /* NoPE still every 4th */
    }
    st_model_destroy(&m);
}

Test(model, powerinfer_file_gives_identical_logits) {
    /* same weights written by PowerInfer's converter: transposed down (F32: transposed
     * back exactly at load), no gating key (sigmoid assumed), extra lm_head_profiler */
    st_model_t *a = st_test_load(ST_SYNTH("--type", "f32", "--hidden", "96", "--heads", "4", "--gating", "sigmoid"));
    st_model_t *b = st_test_load(
        ST_SYNTH("--type", "f32", "--hidden", "96", "--heads", "4", "--gating", "sigmoid", "--powerinfer"));
    cr_assert_eq(b->cfg.gating, ST_GATING_SIGMOID);
    cr_assert_not_null(st_gguf_find_tensor(b->gguf, "lm_head_profiler"));
    const int V = a->cfg.n_vocab;
    int32_t toks[10] = {785, 3974, 13876, 38835, 34208, 916, 279, 15678, 5562, 13};
    float *la = malloc((size_t)10 * V * sizeof(float)), *lb = malloc((size_t)10 * V * sizeof(float));
    st_model_t *models[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        st_ctx_params_t p = st_ctx_default_params();
        p.n_ctx = 16;
        p.n_threads = 2;
        st_ctx_t *c = st_ctx_new(models[i], &p);
        st_kv_t *kv = st_kv_new(c, 16);
        cr_assert_eq(st_decode(c, kv, toks, 10, i ? lb : la, true), 0);
        st_kv_destroy(&kv);
        st_ctx_destroy(&c);
    }
    cr_assert_eq(memcmp(la, lb, (size_t)10 * V * sizeof(float)), 0, "logits differ");
    free(la);
    free(lb);
    st_model_destroy(&a);
    st_model_destroy(&b);
}

/* Last-position logits of a short prompt. */
static float *s_logits(const st_model_t *m) {
    const int V = m->cfg.n_vocab;
    int32_t toks[6] = {785, 3974, 13876, 38835, 34208, 916};
    float *l = malloc((size_t)V * sizeof(float));
    st_ctx_params_t p = st_ctx_default_params();
    p.n_ctx = 8;
    p.n_threads = 2;
    st_ctx_t *c = st_ctx_new(m, &p);
    st_kv_t *kv = st_kv_new(c, 8);
    cr_assert_eq(st_decode(c, kv, toks, 6, l, false), 0);
    st_kv_destroy(&kv);
    st_ctx_destroy(&c);
    return l;
}

static double s_max_diff(const float *a, const float *b, int n) {
    double worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    return worst;
}

Test(model, powerinfer_quantized_transposed_down_is_as_close_as_quantization_noise) {
    /* Q8_0 transposed down is quantized along the other axis (other weights, not the
     * same file): its distance to the F32 model must be of the order of the standard
     * Q8_0 model's distance to it */
    const char *const f32[] = {"--type", "f32", "--hidden", "96", "--heads", "4", "--seed", "4", NULL};
    const char *const q8[] = {"--type", "q8_0", "--hidden", "96", "--heads", "4", "--seed", "4", NULL};
    const char *const q8p[] = {"--type", "q8_0", "--hidden", "96", "--heads", "4", "--seed", "4", "--powerinfer", NULL};
    st_model_t *m[3] = {st_test_load(f32), st_test_load(q8), st_test_load(q8p)};
    cr_assert(m[2]->layers[0].down_transposed && !m[1]->layers[0].down_transposed);
    float *l[3];
    for (int i = 0; i < 3; i++) l[i] = s_logits(m[i]);
    const int V = m[0]->cfg.n_vocab;
    double d_std = s_max_diff(l[0], l[1], V), d_pi = s_max_diff(l[0], l[2], V);
    cr_log_info("max |d| to F32: Q8_0 %g, PowerInfer Q8_0 %g", d_std, d_pi);
    cr_assert(d_pi < 3 * d_std + 1e-3, "transposed Q8_0: %g vs quantization noise %g", d_pi, d_std);
    for (int i = 0; i < 3; i++) {
        free(l[i]);
        st_model_destroy(&m[i]);
    }
}

Test(model, transposed_down_axpy_path_matches_dot_path) {
    /* the axpy path (down stored neuron-major) against the dot path on the same F32
     * weights, at the level of one expert evaluation */
    st_model_t *m = st_test_load(ST_SYNTH("--type", "f32", "--hidden", "96", "--heads", "4"));
    const st_config_t *cfg = &m->cfg;
    const int E = cfg->n_embd, F = cfg->n_ff_exp, X = cfg->n_expert;
    st_ctx_params_t p = st_ctx_default_params();
    p.n_threads = 2;
    p.n_ctx = 8;
    st_ctx_t *c = st_ctx_new(m, &p);
    st_expert_set_t dot = st_model_expert_set(c, 1), axpy = dot;
    float *downT = malloc((size_t)X * E * F * sizeof(float));
    const void **ptrs = malloc((size_t)X * sizeof(void *));
    for (int e = 0; e < X; e++) {
        const float *d = dot.down[e];
        for (int i = 0; i < E; i++)
            for (int j = 0; j < F; j++) downT[(size_t)e * E * F + (size_t)j * E + i] = d[(size_t)i * F + j];
        ptrs[e] = downT + (size_t)e * E * F;
    }
    axpy.down = ptrs;
    axpy.down_transposed = true;
    float m_in[3 * 96];
    for (int i = 0; i < 3 * E; i++) m_in[i] = sinf(0.37f * i) * 1.5f;
    int32_t tok[6] = {0, 0, 1, 1, 2, 2}, ids[6] = {0, 5, 2, 7, 5, 3};
    float *y1 = malloc(6 * (size_t)E * sizeof(float)), *y2 = malloc(6 * (size_t)E * sizeof(float));
    cr_assert_eq(st_experts_eval(c, &dot, 6, tok, ids, m_in, 3, y1), 0);
    cr_assert_eq(st_experts_eval(c, &axpy, 6, tok, ids, m_in, 3, y2), 0);
    double worst = 0, mag = 0;
    for (int i = 0; i < 6 * E; i++) worst = fmax(worst, fabs(y1[i] - y2[i])), mag = fmax(mag, fabs(y1[i]));
    /* F32 sums over 64 neurons in another order */
    cr_assert(mag > 0 && worst <= 1e-5 * mag, "axpy vs dot: max |d| %g (max |y| %g)", worst, mag);
    free(y1);
    free(y2);
    free(downT);
    free(ptrs);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

/* ---- refusals: a copy of a valid file with one thing changed ---------------- */

typedef struct {
    const char *drop_key;
    const char *drop_tensor;
    const char *retype_tensor;
    int new_type;
    const char *arch;
} edit_t;

static void s_rewrite(const char *src, const char *dst, const edit_t *ed) {
    st_gguf_t *g = st_gguf_open(src);
    cr_assert_not_null(g);
    st_gguf_writer_t *w = st_gguf_writer_new(0);
    for (int64_t i = 0; i < st_gguf_n_kv(g); i++) {
        st_str_t key;
        st_gguf_vtype_t t;
        cr_assert(st_gguf_kv_at(g, i, &key, &t));
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)key.len, key.data);
        if (ed->drop_key && !strcmp(name, ed->drop_key)) continue;
        if (ed->arch && !strcmp(name, "general.architecture")) {
            cr_assert_eq(st_gguf_writer_add_str(w, name, ed->arch), 0);
            continue;
        }
        cr_assert_eq(st_gguf_writer_copy_kv(w, name, g, name), 0);
    }
    for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(g, i);
        if (ed->drop_tensor && !strcmp(t->name, ed->drop_tensor)) continue;
        int type = ed->retype_tensor && !strcmp(t->name, ed->retype_tensor) ? ed->new_type : t->type;
        cr_assert_eq(st_gguf_writer_add_tensor(w, t->name, t->n_dims, t->ne, type), 0);
    }
    cr_assert_eq(st_gguf_writer_begin(w, dst), 0);
    size_t k = 0;
    for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(g, i);
        if (ed->drop_tensor && !strcmp(t->name, ed->drop_tensor)) continue;
        size_t n = st_gguf_writer_tensor_nbytes(w, k++);
        if (n == t->nbytes) {
            cr_assert_eq(st_gguf_writer_write(w, t->data, n), 0);
        } else {
            void *zero = calloc(1, n);
            cr_assert_eq(st_gguf_writer_write(w, zero, n), 0);
            free(zero);
        }
    }
    cr_assert_eq(st_gguf_writer_finish(w, NULL), 0);
    st_gguf_writer_destroy(&w);
    st_gguf_destroy(&g);
}

/* Loads an edited copy of the tiny model; asserts it is refused with want in the log. */
static void s_expect_refused(const edit_t *ed, const char *want) {
    char src[1024], dst[1100];
    cr_assert_not_null(st_test_model(ST_SYNTH("--type", "q8_0"), src, sizeof src));
    snprintf(dst, sizeof dst, "%s/edited-%d.gguf", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    s_rewrite(src, dst, ed);
    cr_redirect_stderr();
    st_model_t *m = st_model_load(dst);
    fflush(stderr);
    remove(dst);
    cr_assert_null(m, "an edited file was accepted");
    char log[8192] = "";
    FILE *f = cr_get_redirected_stderr();
    size_t n = fread(log, 1, sizeof log - 1, f);
    log[n] = '\0';
    cr_assert(strstr(log, want), "log lacks \"%s\":\n%s", want, log);
}

Test(model, unsupported_tensor_type_is_named) {
    edit_t ed = {.retype_tensor = "blk.1.ffn_up_exps.weight", .new_type = 20 /* IQ4_NL */};
    s_expect_refused(&ed, "unsupported tensor type IQ4_NL in tensor blk.1.ffn_up_exps.weight");
}

Test(model, gate_and_up_with_different_activation_formats_refused) {
    /* Q8_0 gate (Q8_0 activations) with a Q4_1 up (Q8_1 activations) */
    edit_t ed = {.retype_tensor = "blk.1.ffn_up_exps.weight", .new_type = 3 /* Q4_1 */};
    s_expect_refused(&ed, "layer 1: expert gate Q8_0 and up Q4_1 take different activation formats");
}

Test(model, missing_required_key) {
    edit_t ed = {.drop_key = "smallthinker.expert_count"};
    s_expect_refused(&ed, "missing required key smallthinker.expert_count");
}

Test(model, missing_tensor) {
    edit_t ed = {.drop_tensor = "blk.2.attn_v.weight"};
    s_expect_refused(&ed, "missing tensor blk.2.attn_v.weight");
}

Test(model, other_architecture) {
    edit_t ed = {.arch = "llama"};
    s_expect_refused(&ed, "architecture 'llama' is not supported");
}

Test(model, norm_weights_must_be_f32) {
    edit_t ed = {.retype_tensor = "output_norm.weight", .new_type = 1 /* F16 */};
    s_expect_refused(&ed, "norm weights must be F32");
}

/* ---- forward-pass invariants ---------------------------------------------- */

Test(forward, batch_equals_one_token_at_a_time) {
    st_model_t *m = st_test_load(ST_SYNTH("--type", "q4_0", "--layers", "8", "--sliding-window", "4096"));
    const int n = 40, V = m->cfg.n_vocab;
    int32_t toks[40];
    for (int i = 0; i < n; i++) toks[i] = (i * 7919 + 13) % 151000;
    float *a = malloc((size_t)n * V * sizeof(float)), *b = malloc((size_t)V * sizeof(float));
    st_ctx_t *c = st_test_ctx(m, 64, 16); /* batches of 16: 3 chunks */
    st_kv_t *kv = st_kv_new(c, 64);
    cr_assert_eq(st_decode(c, kv, toks, n, a, true), 0);
    cr_assert_eq(st_kv_pos(kv), n);
    st_kv_clear(kv);
    double worst = 0;
    for (int t = 0; t < n; t++) {
        cr_assert_eq(st_decode(c, kv, &toks[t], 1, b, false), 0);
        for (int i = 0; i < V; i++) worst = fmax(worst, fabs(a[(size_t)t * V + i] - b[i]));
    }
    /* same arithmetic per row; only kernels that group tokens may sum in another order */
    cr_assert(worst < 1e-3, "batch vs single-token logits differ by %g", worst);
    free(a);
    free(b);
    st_kv_destroy(&kv);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

Test(forward, bad_token_and_full_context_are_refused_without_side_effects) {
    st_model_t *m = st_test_load(ST_SYNTH("--type", "f32"));
    st_ctx_t *c = st_test_ctx(m, 8, 4);
    st_kv_t *kv = st_kv_new(c, 8);
    int32_t good[3] = {1, 2, 3}, bad[2] = {5, 999999};
    cr_assert_eq(st_decode(c, kv, good, 3, NULL, false), 0);
    cr_assert_lt(st_decode(c, kv, bad, 2, NULL, false), 0);
    cr_assert_eq(st_kv_pos(kv), 3, "a refused batch must not advance the cache");
    int32_t many[6] = {1, 2, 3, 4, 5, 6};
    cr_assert_lt(st_decode(c, kv, many, 6, NULL, false), 0, "3 + 6 > n_ctx 8");
    cr_assert_eq(st_kv_pos(kv), 3);
    cr_assert_null(st_kv_new(c, 9), "a cache larger than the context's limit");
    st_kv_destroy(&kv);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

Test(forward, kv_f32_and_f16_agree_closely) {
    st_model_t *m = st_test_load(ST_SYNTH("--type", "f32", "--seed", "21"));
    const int V = m->cfg.n_vocab;
    int32_t toks[12] = {785, 3974, 13876, 38835, 34208, 916, 279, 15678, 5562, 13, 100, 200};
    float *l16 = malloc((size_t)V * sizeof(float)), *l32 = malloc((size_t)V * sizeof(float));
    for (int pass = 0; pass < 2; pass++) {
        st_ctx_params_t p = st_ctx_default_params();
        p.n_ctx = 16;
        p.n_threads = 2;
        p.kv_type = pass ? ST_TYPE_F32 : ST_TYPE_F16;
        st_ctx_t *c = st_ctx_new(m, &p);
        st_kv_t *kv = st_kv_new(c, 16);
        cr_assert_eq(st_decode(c, kv, toks, 12, pass ? l32 : l16, false), 0);
        st_kv_destroy(&kv);
        st_ctx_destroy(&c);
    }
    double worst = 0;
    for (int i = 0; i < V; i++) worst = fmax(worst, fabs(l16[i] - l32[i]));
    /* llama.cpp measures 0.003 between F16 and F32 KV on this shape (oracle README) */
    cr_assert(worst > 0 && worst < 0.02, "F16 vs F32 KV: max |d| %g", worst);
    free(l16);
    free(l32);
    st_model_destroy(&m);
}

Test(forward, mixed_prefill_and_decode_equal_separate_decoding) {
    /* one pass with: sequence 0's next token, sequence 1's whole prompt and
     * sequence 2's prompt cut in two passes; logits only where asked */
    st_model_t *m =
        st_test_load(ST_SYNTH("--type", "q4_0", "--layers", "8", "--sliding-window", "4096", "--seed", "2"));
    const int V = m->cfg.n_vocab;
    st_ctx_t *c = st_test_ctx(m, 32, 16);
    st_kv_t *kv[3], *solo = st_kv_new(c, 32);
    for (int i = 0; i < 3; i++) kv[i] = st_kv_new(c, 32);
    const int32_t p0[3] = {785, 3974, 13876}, next0 = 38835;
    const int32_t p1[5] = {100, 200, 300, 400, 500}, p2[6] = {9707, 11, 22, 33, 44, 55};
    cr_assert_eq(st_decode(c, kv[0], p0, 3, NULL, false), 0);
    /* pass 1: seq 0 one token (logits), seq 1 all 5 (logits of the last), seq 2 first 4 (none) */
    st_kv_t *kvs[10] = {kv[0], kv[1], kv[1], kv[1], kv[1], kv[1], kv[2], kv[2], kv[2], kv[2]};
    const int32_t toks[10] = {next0, p1[0], p1[1], p1[2], p1[3], p1[4], p2[0], p2[1], p2[2], p2[3]};
    const bool want[10] = {true, false, false, false, false, true, false, false, false, false};
    float *got = malloc((size_t)3 * V * sizeof(float)), *one = malloc((size_t)V * sizeof(float));
    cr_assert_eq(st_decode_mixed(c, kvs, toks, 10, want, got), 0);
    cr_assert_eq(st_kv_pos(kv[0]), 4);
    cr_assert_eq(st_kv_pos(kv[1]), 5);
    cr_assert_eq(st_kv_pos(kv[2]), 4);
    /* pass 2: the rest of seq 2's prompt, logits of its last token */
    st_kv_t *kvs2[2] = {kv[2], kv[2]};
    const bool want2[2] = {false, true};
    cr_assert_eq(st_decode_mixed(c, kvs2, p2 + 4, 2, want2, got + (size_t)2 * V), 0);
    cr_assert_eq(st_kv_pos(kv[2]), 6);
    for (int i = 0; i < 3; i++) {
        st_kv_clear(solo);
        if (i == 0) {
            cr_assert_eq(st_decode(c, solo, p0, 3, NULL, false), 0);
            cr_assert_eq(st_decode(c, solo, &next0, 1, one, false), 0);
        } else {
            cr_assert_eq(st_decode(c, solo, i == 1 ? p1 : p2, i == 1 ? 5 : 6, one, false), 0);
        }
        double worst = 0;
        for (int v = 0; v < V; v++) worst = fmax(worst, fabs(got[(size_t)i * V + v] - one[v]));
        cr_assert(worst < 1e-3, "sequence %d: mixed vs alone max |d| %g", i, worst);
    }
    st_kv_t *full[1] = {kv[0]};
    const int32_t big[1] = {(int32_t)V};
    cr_assert_lt(st_decode_mixed(c, full, big, 1, NULL, NULL), 0, "a token id out of range");
    for (int i = 0; i < 3; i++) st_kv_destroy(&kv[i]);
    st_kv_destroy(&solo);
    free(got);
    free(one);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

Test(forward, batched_sequences_equal_separate_decoding) {
    /* three users at different positions, one decode step together (continuous
     * batching) vs each alone: same logits */
    st_model_t *m =
        st_test_load(ST_SYNTH("--type", "q4_0", "--layers", "8", "--sliding-window", "4096", "--seed", "2"));
    const int V = m->cfg.n_vocab;
    st_ctx_t *c = st_test_ctx(m, 32, 16);
    st_kv_t *kv[3], *solo = st_kv_new(c, 32);
    const int32_t prompts[3][5] = {{785, 3974, 13876, 0, 0}, {100, 200, 300, 400, 500}, {9707, 0, 0, 0, 0}};
    const int plen[3] = {3, 5, 1};
    const int32_t next[3] = {38835, 600, 11};
    float *batch = malloc((size_t)3 * V * sizeof(float)), *one = malloc((size_t)V * sizeof(float));
    for (int i = 0; i < 3; i++) {
        kv[i] = st_kv_new(c, 32);
        cr_assert_eq(st_decode(c, kv[i], prompts[i], plen[i], NULL, false), 0);
    }
    cr_assert_eq(st_decode_batch(c, kv, next, 3, batch), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(st_kv_pos(kv[i]), plen[i] + 1);
        st_kv_clear(solo);
        cr_assert_eq(st_decode(c, solo, prompts[i], plen[i], NULL, false), 0);
        cr_assert_eq(st_decode(c, solo, &next[i], 1, one, false), 0);
        double worst = 0;
        for (int v = 0; v < V; v++) worst = fmax(worst, fabs(batch[(size_t)i * V + v] - one[v]));
        /* kernels that tile tokens may sum in another order */
        cr_assert(worst < 1e-3, "sequence %d: batched vs alone max |d| %g", i, worst);
    }
    st_kv_t *dup[2] = {kv[0], kv[0]};
    cr_assert_lt(st_decode_batch(c, dup, next, 2, NULL), 0, "one cache twice in a batch");
    for (int i = 0; i < 3; i++) st_kv_destroy(&kv[i]);
    st_kv_destroy(&solo);
    free(batch);
    free(one);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

/* Logits of a 21-token prompt in one batch, then 4 single-token steps. */
static float *s_run_logits(st_model_t *m, int *n_rows) {
    const int V = m->cfg.n_vocab, n = 21, steps = 4;
    int32_t toks[25];
    for (int i = 0; i < n + steps; i++) toks[i] = (i * 7919 + 13) % 151000;
    float *out = malloc((size_t)(n + steps) * V * sizeof(float));
    st_ctx_t *c = st_test_ctx(m, 64, 32);
    st_kv_t *kv = st_kv_new(c, 64);
    cr_assert_eq(st_decode(c, kv, toks, n, out, true), 0);
    for (int t = 0; t < steps; t++)
        cr_assert_eq(st_decode(c, kv, &toks[n + t], 1, out + (size_t)(n + t) * V, false), 0);
    st_kv_destroy(&kv);
    st_ctx_destroy(&c);
    *n_rows = n + steps;
    return out;
}

/* Every table that packs Q4_0: a resident model packed for it (st_model_pack)
 * decodes to the bits of the file's layout with the same table, prompt batch
 * and single tokens; attention, experts and the head (vocabulary padded to
 * whole groups, or left unpacked when it is not) all take the packed path. */
static void s_packed_equals_plain(const char *path, bool head_packed) {
    static const char *const names[] = {"avx2", "avx512", "neon", "neon-dotprod"};
    int n_tables = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const st_kernels_t *k = st_kernels_by_name(names[i]);
        st_model_t *probe = st_model_load(path);
        cr_assert_not_null(probe);
        const bool packs = k && k->pack_rows[probe->layers[1].wq.type] && k->pack_rows[probe->layers[1].gate_exps.type];
        st_model_destroy(&probe);
        if (!packs) continue;
        n_tables++;
        st_model_t *plain = st_model_load(path);
        st_gguf_t *g = st_gguf_open_resident(path);
        st_model_t *packed = st_model_from_gguf(&g);
        cr_assert(plain && packed);
        plain->kernels = k; /* same table, file layout */
        cr_assert_eq(st_model_pack(packed, k, true), 0);
        const st_layer_t *L = &packed->layers[1];
        const st_weight_t *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate_exps, &L->up_exps, &L->down_exps};
        for (size_t w = 0; w < sizeof ws / sizeof ws[0]; w++) /* every matmul weight the table can pack */
            cr_assert_eq(ws[w]->pack_rows > 0, st_packable(k, ws[w]->type, (int)ws[w]->n_cols, ws[w]->n_rows),
                         "%s: %s (%s) packed %d", k->name, ws[w]->name, st_type_name(ws[w]->type), ws[w]->pack_rows);
        cr_assert(L->wq.pack_rows && L->gate_exps.pack_rows && L->down_exps.pack_rows, "%s: nothing packed", k->name);
        cr_assert_eq(packed->output.pack_rows > 0, head_packed, "%s: head packed %d", k->name,
                     packed->output.pack_rows);
        cr_assert_eq(packed->tok_embd.pack_rows, 0, "the embedding table is read by rows");
        cr_assert_eq(plain->layers[1].wq.pack_rows, 0);
        int n_a, n_b;
        float *a = s_run_logits(plain, &n_a), *b = s_run_logits(packed, &n_b);
        cr_assert(memcmp(a, b, (size_t)n_a * plain->cfg.n_vocab * sizeof(float)) == 0,
                  "%s: packed weights give other logits", k->name);
        free(a);
        free(b);
        st_model_destroy(&plain);
        st_model_destroy(&packed);
    }
    if (n_tables == 0) cr_skip_test("no kernel table of this build and CPU packs these weights");
}

static void s_packed_synth(const char *const *args, bool head_packed) {
    char path[1024];
    cr_assert_not_null(st_test_model(args, path, sizeof path), "st-synth failed");
    s_packed_equals_plain(path, head_packed);
}

Test(model, packed_weights_decode_bit_for_bit_as_the_file_layout) {
    s_packed_synth(ST_SYNTH("--type", "q4_0", "--vocab-size", "151680"), true);
}
Test(model, packed_weights_with_an_unpacked_head) {
    s_packed_synth(ST_SYNTH("--type", "q4_0", "--seed", "3"), false); /* 151669 rows: not whole groups */
}
Test(model, packed_weights_with_fused_qkv_and_tied_head) {
    /* q, k and v are row ranges of one tensor, each packed on its own; the tied head is the embedding table */
    s_packed_synth(ST_SYNTH("--type", "q4_0", "--fused-qkv", "--tied", "--seed", "4"), false);
}
Test(model, packed_k_quant_mix_decodes_bit_for_bit) {
    /* llama-quantize's Q4_K_M: Q4_K, Q6_K for half of attn_v and ffn_down and for the head (8-row groups) */
    char path[1024];
    if (!st_test_quantized_model(ST_SYNTH("--type", "f32", "--hidden", "256", "--expert-ffn", "256", "--vocab-size",
                                          "151680", "--seed", "5"),
                                 "Q4_K_M", path, sizeof path))
        cr_skip_test("llama-quantize not available");
    s_packed_equals_plain(path, true);
}

/* A backend with begin/end (what the cluster's remote MoE offers): begin keeps the route and the
 * activations, end computes them here. It checks the ping-pong: each slot begins and ends its
 * layers in order, and while slot 0 waits for layer l, slot 1 has begun layer l. */
typedef struct {
    st_ctx_t *c;
    float *m[2];
    int begun[2], ended[2]; /* last layer begun / ended per slot (-1: none) */
    int begins, overlapped; /* begin calls; ends of slot 0 that found slot 1 in flight on the same layer */
    bool order_ok;
} pingpong_t;

static int s_pp_compute(void *arg, const st_route_t *r, const float *m, float *out) {
    pingpong_t *p = arg;
    return st_moe_local(p->c, r, m, out);
}

static int s_pp_begin(void *arg, const st_route_t *r, const float *m) {
    pingpong_t *p = arg;
    const int E = st_ctx_model(p->c)->cfg.n_embd;
    p->order_ok &=
        (r->slot == 0 || r->slot == 1) && p->begun[r->slot] == p->ended[r->slot] && r->layer == p->begun[r->slot] + 1;
    p->begun[r->slot] = r->layer;
    memcpy(p->m[r->slot], m, (size_t)r->n_tok * E * sizeof(float)); /* m may be reused once begin returns */
    p->begins++;
    return 0;
}

static int s_pp_end(void *arg, const st_route_t *r, float *out) {
    pingpong_t *p = arg;
    p->order_ok &= p->begun[r->slot] == r->layer && p->ended[r->slot] == r->layer - 1;
    p->overlapped += r->slot == 0 && p->begun[1] == r->layer && p->ended[1] < r->layer;
    p->ended[r->slot] = r->layer;
    return st_moe_local(p->c, r, p->m[r->slot], out);
}

Test(forward, overlapped_micro_batches_give_the_batch_s_logits) {
    /* five users at different positions, one decode step: in one batch, then as two micro-batches
     * in a ping-pong through a begin/end backend; every logit the same */
    st_model_t *m = st_test_load(
        ST_SYNTH("--type", "q4_0", "--layers", "8", "--experts", "16", "--experts-used", "4", "--seed", "9"));
    const int V = m->cfg.n_vocab, L = m->cfg.n_layer, E = m->cfg.n_embd, S = 5;
    st_ctx_t *c = st_test_ctx(m, 32, 16);
    st_kv_t *kv[5];
    const int32_t next[5] = {38835, 600, 11, 9707, 42};
    float *want = malloc((size_t)S * V * sizeof(float)), *got = malloc((size_t)S * V * sizeof(float));
    pingpong_t p = {.c = c, .begun = {-1, -1}, .ended = {-1, -1}, .order_ok = true};
    p.m[0] = malloc((size_t)16 * E * sizeof(float));
    p.m[1] = malloc((size_t)16 * E * sizeof(float));
    for (int pass = 0; pass < 2; pass++) {
        const st_moe_backend_t b = {
            .arg = &p, .compute = s_pp_compute, .begin = pass ? s_pp_begin : NULL, .end = pass ? s_pp_end : NULL};
        st_ctx_set_moe(c, &b);
        for (int i = 0; i < S; i++) {
            const int32_t prompt[4] = {785 + i, 3974, 13876, 100 * i};
            if (pass == 0) kv[i] = st_kv_new(c, 32);
            st_kv_clear(kv[i]);
            cr_assert_eq(st_decode(c, kv[i], prompt, 1 + i % 4, NULL, false), 0); /* alone: no overlap */
        }
        cr_assert_eq(p.begins, 0, "a single sequence's prompt went through begin()");
        cr_assert_eq(st_decode_batch(c, kv, next, S, pass ? got : want), 0);
    }
    cr_assert(p.order_ok, "begin/end out of order");
    cr_assert_eq(p.begins, 2 * L, "%d begin() calls for 2 micro-batches x %d layers", p.begins, L);
    cr_assert_eq(p.overlapped, L, "slot 1 was in flight during %d of slot 0's %d waits", p.overlapped, L);
    cr_assert_eq(memcmp(got, want, (size_t)S * V * sizeof(float)), 0, "overlapped logits differ from the batch's");
    for (int i = 0; i < S; i++) st_kv_destroy(&kv[i]);
    free(want), free(got), free(p.m[0]), free(p.m[1]);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}
