/* The generation loop (model/generate.c): st_gen_step over several sequences
 * against each decoded alone with st_decode and a hand-written argmax; the
 * teacher-forced logits against st_decode's; the ends (length, the token
 * hook's stop, a failed pass). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "model.h"
#include "testutil.h"

#define SYNTH(...) ((const char *const[]){__VA_ARGS__, NULL})

static st_model_t *s_model(void) {
    char path[1024];
    cr_assert_not_null(
        st_test_model(SYNTH("--type", "q4_0", "--layers", "8", "--sliding-window", "4096", "--seed", "2"), path,
                      sizeof path),
        "st-synth failed");
    st_model_t *m = st_model_load(path);
    cr_assert_not_null(m, "cannot load %s", path);
    return m;
}

static st_ctx_t *s_ctx(const st_model_t *m, int n_batch) {
    st_ctx_params_t p = st_ctx_default_params();
    p.n_ctx = 64;
    p.n_batch = n_batch;
    p.n_threads = 2;
    st_ctx_t *c = st_ctx_new(m, &p);
    cr_assert_not_null(c);
    return c;
}

static st_sampler_t *s_greedy(int n_vocab) {
    st_sampler_params_t sp = st_sampler_default_params();
    sp.temp = 0;
    st_sampler_t *s = st_sampler_new(&sp, n_vocab);
    cr_assert_not_null(s);
    return s;
}

/* The reference: prompt alone through st_decode, then n tokens by argmax. */
static void s_greedy_alone(st_ctx_t *c, const int32_t *prompt, int n_prompt, int n, int32_t *out) {
    const int V = st_ctx_model(c)->cfg.n_vocab;
    st_kv_t *kv = st_kv_new(c, 64);
    float *lg = malloc((size_t)V * sizeof(float));
    cr_assert(kv && lg);
    cr_assert_eq(st_decode(c, kv, prompt, n_prompt, lg, false), 0);
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[best]) best = v;
        out[i] = best;
        if (i + 1 < n) cr_assert_eq(st_decode(c, kv, &out[i], 1, lg, false), 0);
    }
    free(lg);
    st_kv_destroy(&kv);
}

typedef struct {
    int between;     /* between_steps calls */
    int tokens[3];   /* token hook calls per sequence (q->arg is its index) */
    int ended_at[3]; /* the call that saw q->end set, 1-based */
    int stop_after;  /* > 0: the hook says stop at this many tokens */
} calls_t;

static void s_between(void *arg) { ((calls_t *)arg)->between++; }

static bool s_token(void *arg, st_gen_seq_t *q, int32_t tok, const char *piece, int len) {
    calls_t *k = arg;
    int i = (int)(intptr_t)q->arg;
    cr_assert_eq(tok, q->last);
    cr_assert(len >= 0 && (len == 0 || piece));
    k->tokens[i]++;
    if (q->end != ST_GEN_RUNNING && !k->ended_at[i]) k->ended_at[i] = k->tokens[i];
    return !(k->stop_after && k->tokens[i] >= k->stop_after);
}

Test(generate, several_sequences_equal_each_alone) {
    /* batches of 8 tokens: B's prompt takes passes of its own and next to A's
     * tokens; C starts from a cached prefix of 2 tokens */
    st_model_t *m = s_model();
    const int V = m->cfg.n_vocab;
    st_ctx_t *c = s_ctx(m, 8);
    const int32_t pa[3] = {785, 3974, 13876};
    const int32_t pb[13] = {9707, 11, 22, 33, 44, 55, 66, 77, 88, 99, 1000, 2000, 3000};
    const int32_t pc[5] = {100, 200, 300, 400, 500};
    const int32_t *prompts[3] = {pa, pb, pc};
    const int n_prompt[3] = {3, 13, 5}, n_predict[3] = {6, 4, 5};
    int32_t out[3][8], want[3][8];
    st_gen_seq_t q[3];
    st_gen_seq_t *seqs[3];
    for (int i = 0; i < 3; i++) {
        q[i] = (st_gen_seq_t){.kv = st_kv_new(c, 64),
                              .smp = s_greedy(V),
                              .prompt = prompts[i],
                              .n_prompt = n_prompt[i],
                              .n_predict = n_predict[i],
                              .out = out[i],
                              .arg = (void *)(intptr_t)i};
        seqs[i] = &q[i];
        s_greedy_alone(c, prompts[i], n_prompt[i], n_predict[i], want[i]);
    }
    cr_assert_eq(st_decode(c, q[2].kv, pc, 2, NULL, false), 0);
    q[2].n_fed = 2;

    st_gen_t *g = st_gen_new(c, 3);
    cr_assert_not_null(g);
    calls_t k = {0};
    const st_gen_hooks_t h = {s_between, s_token, &k};
    int passes = 0, rc;
    while ((rc = st_gen_step(g, seqs, 3, &h)) > 0) passes++;
    cr_assert_eq(rc, 0, "the last step has nothing to run");
    cr_assert_eq(k.between, passes, "between_steps once before each of the %d passes", passes);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(q[i].end, ST_GEN_LENGTH, "sequence %d ended with %d", i, q[i].end);
        cr_assert_eq(q[i].n_generated, n_predict[i]);
        cr_assert_eq(q[i].n_fed, n_prompt[i]);
        cr_assert_eq(k.tokens[i], n_predict[i]);
        cr_assert_eq(k.ended_at[i], n_predict[i], "the last token's call sees the end");
        for (int t = 0; t < n_predict[i]; t++)
            cr_assert_eq(out[i][t], want[i][t], "sequence %d token %d: %d, alone %d", i, t, out[i][t], want[i][t]);
        /* the last sampled token is not decoded */
        cr_assert_eq(st_kv_pos(q[i].kv), n_prompt[i] + n_predict[i] - 1);
        st_kv_destroy(&q[i].kv);
        st_sampler_destroy(&q[i].smp);
    }
    st_gen_destroy(&g);
    cr_assert_null(g);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

Test(generate, prompt_logits_equal_st_decode_bit_for_bit) {
    /* 13 tokens in passes of 4; n_predict 0: prefill only, nothing sampled */
    st_model_t *m = s_model();
    const int V = m->cfg.n_vocab;
    st_ctx_t *c = s_ctx(m, 4);
    const int32_t p[13] = {9707, 11, 22, 33, 44, 55, 66, 77, 88, 99, 1000, 2000, 3000};
    float *got = malloc((size_t)13 * V * sizeof(float)), *ref = malloc((size_t)13 * V * sizeof(float));
    st_kv_t *kv = st_kv_new(c, 64);
    cr_assert(got && ref && kv);
    cr_assert_eq(st_decode(c, kv, p, 13, ref, true), 0);
    st_kv_clear(kv);
    st_gen_seq_t q = {.kv = kv, .smp = s_greedy(V), .prompt = p, .n_prompt = 13, .prompt_logits = got};
    st_gen_seq_t *seqs[1] = {&q};
    st_gen_t *g = st_gen_new(c, 4);
    calls_t k = {0};
    const st_gen_hooks_t h = {s_between, s_token, &k};
    int passes = 0;
    while (q.end == ST_GEN_RUNNING) {
        cr_assert_gt(st_gen_step(g, seqs, 1, &h), 0);
        passes++;
    }
    cr_assert_eq(passes, 4, "13 tokens in passes of 4");
    cr_assert_eq(q.end, ST_GEN_LENGTH);
    cr_assert_eq(q.n_generated, 0);
    cr_assert_eq(k.tokens[0], 0, "nothing sampled");
    cr_assert_eq(st_kv_pos(kv), 13);
    cr_assert(memcmp(got, ref, (size_t)13 * V * sizeof(float)) == 0, "teacher-forced logits differ from st_decode's");
    st_gen_destroy(&g);
    st_sampler_destroy(&q.smp);
    st_kv_destroy(&kv);
    free(got);
    free(ref);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

Test(generate, token_hook_stops_and_failed_pass_is_an_error) {
    st_model_t *m = s_model();
    const int V = m->cfg.n_vocab;
    st_ctx_t *c = s_ctx(m, 8);
    const int32_t p[3] = {785, 3974, 13876};
    st_gen_t *g = st_gen_new(c, 1);
    cr_assert_not_null(g);

    /* the hook says stop at the second token: nothing more is decoded */
    calls_t k = {.stop_after = 2};
    const st_gen_hooks_t h = {s_between, s_token, &k};
    st_gen_seq_t q = {.kv = st_kv_new(c, 64), .smp = s_greedy(V), .prompt = p, .n_prompt = 3, .n_predict = 10};
    st_gen_seq_t *seqs[1] = {&q};
    while (q.end == ST_GEN_RUNNING) cr_assert_gt(st_gen_step(g, seqs, 1, &h), 0);
    cr_assert_eq(q.end, ST_GEN_STOP);
    cr_assert_eq(q.n_generated, 2);
    cr_assert_eq(st_kv_pos(q.kv), 4);
    cr_assert_eq(st_gen_step(g, seqs, 1, &h), 0, "an ended sequence is not stepped");
    st_kv_destroy(&q.kv);
    st_sampler_destroy(&q.smp);

    /* a cache of 4 positions: the pass for the second generated token fails */
    calls_t k2 = {0};
    const st_gen_hooks_t h2 = {s_between, s_token, &k2};
    q = (st_gen_seq_t){.kv = st_kv_new(c, 4), .smp = s_greedy(V), .prompt = p, .n_prompt = 3, .n_predict = 10};
    int rc = 0, steps = 0;
    while (q.end == ST_GEN_RUNNING && (rc = st_gen_step(g, seqs, 1, &h2)) >= 0) steps++;
    cr_assert_lt(rc, 0, "the pass past the cache fails");
    cr_assert_eq(steps, 2, "the prompt, then the first generated token");
    cr_assert_eq(q.end, ST_GEN_ERROR);
    cr_assert_eq(q.n_generated, 2);
    st_kv_destroy(&q.kv);
    st_sampler_destroy(&q.smp);

    /* a sequence with nothing left to prefill and nothing sampled cannot go on */
    q = (st_gen_seq_t){
        .kv = st_kv_new(c, 8), .smp = s_greedy(V), .prompt = p, .n_prompt = 3, .n_fed = 3, .n_predict = 2};
    cr_assert_eq(st_gen_step(g, seqs, 1, &h2), 0);
    cr_assert_eq(q.end, ST_GEN_ERROR);
    st_kv_destroy(&q.kv);
    st_sampler_destroy(&q.smp);

    st_gen_destroy(&g);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
}

/* A head backend that draws like the cluster's (stash, then one sample call for every
 * draw of a step) but computes here: st_ctx_head_rows and st_sampler_sample on whole
 * logits, the reference's arithmetic. It counts what it was asked. */
typedef struct {
    st_ctx_t *c;
    int E, V;
    float *xs, *row;
    int n_xs;
    int whole_rows;                  /* rows computed whole by logits() */
    int stashed, sample_calls, most; /* hidden states stashed; sample() calls; most draws in one */
} fake_head_t;

static int s_fake_logits(void *arg, const float *xn, int n_out, float *y, size_t y_stride) {
    fake_head_t *f = arg;
    st_ctx_head_rows(f->c, xn, n_out, 0, f->V, y, y_stride);
    f->whole_rows += n_out;
    return 0;
}

static int s_fake_stash(void *arg, const float *xn, int n) {
    fake_head_t *f = arg;
    cr_assert(n >= 1 && n <= 8);
    memcpy(f->xs, xn, (size_t)n * f->E * sizeof(float));
    f->n_xs = n;
    f->stashed += n;
    return 0;
}

static int s_fake_sample(void *arg, st_sampler_t *const *smp, const int *idx, int n, int32_t *tok) {
    fake_head_t *f = arg;
    f->sample_calls++;
    f->most = n > f->most ? n : f->most;
    for (int i = 0; i < n; i++) {
        cr_assert(idx[i] >= 0 && idx[i] < f->n_xs);
        st_ctx_head_rows(f->c, f->xs + (size_t)idx[i] * f->E, 1, 0, f->V, f->row, (size_t)f->V);
        tok[i] = st_sampler_sample(smp[i], f->row);
    }
    return 0;
}

/* Four sequences stepped together: A greedy, C seeded with penalties and D from a cached
 * prefix only draw, so their rows go to the backend's stash and are drawn in one sample()
 * call per step; B wants its prompt's logits, so its rows are computed whole, packed
 * between the others. Tokens and B's logits are the bits of the same run without the
 * backend. */
Test(generate, draw_only_rows_go_to_the_head_backend_together) {
    st_model_t *m = s_model();
    const int V = m->cfg.n_vocab, E = m->cfg.n_embd;
    const int32_t pa[3] = {785, 3974, 13876}, pb[5] = {9707, 11, 22, 33, 44}, pc[4] = {100, 200, 300, 400},
                  pd[5] = {500, 600, 700, 800, 900};
    const int32_t *prompts[4] = {pa, pb, pc, pd};
    const int n_prompt[4] = {3, 5, 4, 5}, n_predict[4] = {6, 3, 5, 4};
    int32_t out[2][4][8];
    float *blog[2];
    fake_head_t f = {0};
    for (int run = 0; run < 2; run++) { /* 0: no backend (the reference), 1: the fake backend */
        st_ctx_t *c = s_ctx(m, 8);
        if (run == 1) {
            f = (fake_head_t){.c = c, .E = E, .V = V};
            f.xs = malloc((size_t)8 * E * sizeof(float));
            f.row = malloc((size_t)V * sizeof(float));
            cr_assert(f.xs && f.row);
            const st_head_backend_t b = {&f, s_fake_logits, s_fake_stash, s_fake_sample};
            st_ctx_set_head(c, &b);
        }
        blog[run] = malloc((size_t)5 * V * sizeof(float));
        cr_assert_not_null(blog[run]);
        st_gen_seq_t q[4];
        st_gen_seq_t *seqs[4];
        for (int i = 0; i < 4; i++) {
            st_sampler_params_t sp = st_sampler_default_params();
            sp.temp = i == 2 ? 0.9f : 0.0f;
            sp.seed = 1234;
            sp.repeat_penalty = i == 2 ? 1.3f : 1.0f;
            sp.presence_penalty = i == 2 ? 0.4f : 0.0f;
            sp.frequency_penalty = i == 2 ? 0.3f : 0.0f;
            q[i] = (st_gen_seq_t){.kv = st_kv_new(c, 64),
                                  .smp = st_sampler_new(&sp, V),
                                  .prompt = prompts[i],
                                  .n_prompt = n_prompt[i],
                                  .n_predict = n_predict[i],
                                  .prompt_logits = i == 1 ? blog[run] : NULL,
                                  .out = out[run][i]};
            cr_assert(q[i].kv && q[i].smp);
            seqs[i] = &q[i];
        }
        cr_assert_eq(st_decode(c, q[3].kv, pd, 2, NULL, false), 0);
        q[3].n_fed = 2;
        st_gen_t *g = st_gen_new(c, 8);
        cr_assert_not_null(g);
        int rc;
        while ((rc = st_gen_step(g, seqs, 4, NULL)) > 0) {
        }
        cr_assert_eq(rc, 0);
        for (int i = 0; i < 4; i++) {
            cr_assert_eq(q[i].end, ST_GEN_LENGTH, "run %d, sequence %d ended with %d", run, i, q[i].end);
            st_kv_destroy(&q[i].kv);
            st_sampler_destroy(&q[i].smp);
        }
        st_gen_destroy(&g);
        st_ctx_destroy(&c);
    }
    for (int i = 0; i < 4; i++)
        for (int t = 0; t < n_predict[i]; t++)
            cr_assert_eq(out[1][i][t], out[0][i][t], "sequence %d token %d: %d, without the backend %d", i, t,
                         out[1][i][t], out[0][i][t]);
    cr_assert(memcmp(blog[1], blog[0], (size_t)5 * V * sizeof(float)) == 0, "B's prompt logits differ");
    /* B's rows whole: its 5 prompt rows and its 2 decoded tokens; every draw of A, C, D stashed */
    cr_assert_eq(f.whole_rows, 5 + 2);
    cr_assert_eq(f.stashed, 6 + 5 + 4);
    cr_assert_eq(f.most, 3, "A, C and D drawn in one call");
    cr_assert_eq(f.sample_calls, 6, "one call a step: %d", f.sample_calls);
    free(f.xs), free(f.row), free(blog[0]), free(blog[1]);
    st_model_destroy(&m);
}
