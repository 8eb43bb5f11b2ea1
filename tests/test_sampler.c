/* Sampler: greedy, truncation stages, temperature, penalties and seeds. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "st_log.h"

#define V 8

static st_sampler_t *s_new(float temp, int top_k, float top_p, float min_p, float rep, uint64_t seed) {
    st_sampler_params_t p = st_sampler_default_params();
    p.temp = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repeat_penalty = rep;
    p.seed = seed;
    st_sampler_t *s = st_sampler_new(&p, V);
    cr_assert_not_null(s);
    return s;
}

Test(sampler, greedy_is_argmax) {
    st_sampler_t *s = s_new(0.0f, 0, 1.0f, 0.0f, 1.0f, 1);
    float l[V] = {0.1f, 3.0f, -1.0f, 2.9f, 0, 0, 0, 0};
    cr_assert_eq(st_sampler_sample(s, l), 1);
    float l2[V] = {-5, -4, -3, -2, -1, -0.5f, -0.25f, -0.125f};
    cr_assert_eq(st_sampler_sample(s, l2), 7);
    st_sampler_destroy(&s);
    cr_assert_null(s);
}

Test(sampler, top_k_one_is_greedy_at_any_temperature) {
    st_sampler_t *s = s_new(5.0f, 1, 1.0f, 0.0f, 1.0f, 7);
    for (int i = 0; i < 50; i++) {
        float l[V] = {0, 1, 2, 3, 2.5f, 0, 0, 0};
        cr_assert_eq(st_sampler_sample(s, l), 3);
    }
    st_sampler_destroy(&s);
}

Test(sampler, same_seed_same_sequence_other_seed_differs) {
    int a[64], b[64], c[64];
    for (int run = 0; run < 3; run++) {
        st_sampler_t *s = s_new(1.0f, 0, 1.0f, 0.0f, 1.0f, run == 2 ? 99 : 42);
        for (int i = 0; i < 64; i++) {
            float l[V] = {0, 0, 0, 0, 0, 0, 0, 0}; /* uniform: every draw is random */
            int t = st_sampler_sample(s, l);
            (run == 0 ? a : run == 1 ? b : c)[i] = t;
        }
        st_sampler_destroy(&s);
    }
    cr_assert_arr_eq(a, b, sizeof a);
    cr_assert(memcmp(a, c, sizeof a) != 0);
}

Test(sampler, frequencies_follow_softmax) {
    /* logits log(1..4) over 4 live tokens: probabilities 0.1 0.2 0.3 0.4 */
    st_sampler_t *s = s_new(1.0f, 0, 1.0f, 0.0f, 1.0f, 3);
    int count[V] = {0};
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        float l[V] = {logf(1), logf(2), logf(3), logf(4), -1e9f, -1e9f, -1e9f, -1e9f};
        count[st_sampler_sample(s, l)]++;
    }
    for (int i = 0; i < 4; i++) {
        double want = (i + 1) / 10.0, got = (double)count[i] / N;
        /* binomial sd <= sqrt(.25/N) = 0.0035: 5 sd */
        cr_expect(fabs(got - want) < 0.018, "token %d: %.3f vs %.3f", i, got, want);
    }
    cr_assert_eq(count[4] + count[5] + count[6] + count[7], 0);
    st_sampler_destroy(&s);
}

Test(sampler, top_p_and_min_p_cut_the_tail) {
    /* probabilities ~ 0.64 0.24 0.09 0.03 ...: top-p 0.6 keeps only token 0 */
    st_sampler_t *s = s_new(1.0f, 0, 0.6f, 0.0f, 1.0f, 5);
    for (int i = 0; i < 200; i++) {
        float l[V] = {3, 2, 1, 0, -10, -10, -10, -10};
        cr_assert_eq(st_sampler_sample(s, l), 0);
    }
    st_sampler_destroy(&s);
    /* min-p 0.5: tokens with p < 0.5 * p_max are dropped -> only 0 and 1 (equal logits) */
    s = s_new(1.0f, 0, 1.0f, 0.5f, 1.0f, 5);
    int seen[V] = {0};
    for (int i = 0; i < 400; i++) {
        float l[V] = {2, 2, 1, 0, -10, -10, -10, -10};
        seen[st_sampler_sample(s, l)]++;
    }
    cr_assert(seen[0] > 0 && seen[1] > 0);
    cr_assert_eq(seen[2] + seen[3], 0);
    st_sampler_destroy(&s);
}

Test(sampler, repetition_penalty_changes_greedy_choice) {
    st_sampler_t *s = s_new(0.0f, 0, 1.0f, 0.0f, 2.0f, 1);
    st_sampler_accept(s, 1);
    float l[V] = {1.5f, 2.0f, 0, 0, 0, 0, 0, 0}; /* token 1 penalised: 2.0 / 2 = 1.0 < 1.5 */
    cr_assert_eq(st_sampler_sample(s, l), 0);
    cr_assert_float_eq(l[1], 1.0f, 1e-6);
    float n[V] = {-3.0f, -2.0f, -2.5f, -9, -9, -9, -9, -9}; /* negative logits are multiplied */
    cr_assert_eq(st_sampler_sample(s, n), 2);
    st_sampler_destroy(&s);
}

Test(sampler, bad_parameters_are_refused) {
    st_sampler_params_t p = st_sampler_default_params();
    p.repeat_penalty = 0;
    cr_assert_null(st_sampler_new(&p, V));
    p = st_sampler_default_params();
    p.top_p = 0;
    cr_assert_null(st_sampler_new(&p, V));
    p = st_sampler_default_params();
    cr_assert_null(st_sampler_new(&p, 0));
}

/* llama.cpp's penalties sampler: logit -= count * frequency + (count > 0) * presence,
 * after the repetition penalty, over the last repeat_last_n accepted tokens */
Test(sampler, presence_and_frequency_penalties) {
    st_sampler_params_t p = st_sampler_default_params();
    p.temp = 0.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.repeat_last_n = 4;
    st_sampler_t *s = st_sampler_new(&p, V);
    cr_assert_not_null(s);
    const int32_t ctx[] = {6, 2, 2, 2, 5}; /* 6 falls out of the window of 4 */
    for (size_t i = 0; i < sizeof ctx / sizeof ctx[0]; i++) st_sampler_accept(s, ctx[i]);
    float l[V] = {0, 0, 2.0f, 0, 0, 1.0f, 1.0f, 0};
    /* 2: 2.0 - (3 * 0.25 + 0.5) = 0.75; 5: 1.0 - (0.25 + 0.5) = 0.25; 6: untouched 1.0 */
    cr_assert_eq(st_sampler_sample(s, l), 6);
    cr_assert_float_eq(l[2], 0.75f, 1e-6);
    cr_assert_float_eq(l[5], 0.25f, 1e-6);
    cr_assert_float_eq(l[6], 1.0f, 0);
    /* twice in a row: the counts start from zero again */
    float l2[V] = {0, 0, 2.0f, 0, 0, 1.0f, 1.0f, 0};
    st_sampler_sample(s, l2);
    cr_assert_float_eq(l2[2], 0.75f, 1e-6);
    st_sampler_destroy(&s);
}

Test(sampler, penalties_combine_with_repetition) {
    st_sampler_params_t p = st_sampler_default_params();
    p.temp = 0.0f;
    p.repeat_penalty = 2.0f;
    p.presence_penalty = -1.0f; /* negative: encourages */
    st_sampler_t *s = st_sampler_new(&p, V);
    st_sampler_accept(s, 3);
    st_sampler_accept(s, 4);
    float l[V] = {1.2f, 0, 0, 4.0f, -1.0f, 0, 0, 0};
    /* 3: 4 / 2 + 1 = 3; 4: -1 * 2 + 1 = -1 */
    cr_assert_eq(st_sampler_sample(s, l), 3);
    cr_assert_float_eq(l[3], 3.0f, 1e-6);
    cr_assert_float_eq(l[4], -1.0f, 1e-6);
    st_sampler_destroy(&s);
}

/* A constraint that allows even ids only, and records what it is told. */
typedef struct {
    int n_best, accepted, masks;
    int32_t last;
} evens_t;

static int s_evens_mask(void *arg, float *logits, int n_vocab, int n_best) {
    evens_t *e = arg;
    e->n_best = n_best;
    e->masks++;
    for (int i = 1; i < n_vocab; i += 2) logits[i] = -INFINITY;
    return 0;
}

static int s_evens_accept(void *arg, int32_t tok) {
    evens_t *e = arg;
    e->accepted++;
    e->last = tok;
    return tok % 2 ? ST_EINVAL : 0;
}

static int s_refuse_all(void *arg, float *logits, int n_vocab, int n_best) {
    (void)arg, (void)logits, (void)n_vocab, (void)n_best;
    return ST_ERANGE;
}

Test(sampler, constraint_masks_before_the_draw_and_hears_the_token) {
    float logits[V] = {0.1f, 5.0f, 0.3f, 4.0f, 0.2f, 3.0f, -9.0f, -9.0f}; /* odd ids lead; best even: 2 */
    evens_t e = {0};
    st_sampler_t *s = s_new(0.0f, 0, 1.0f, 0.0f, 1.0f, 1);
    st_sampler_constrain(s, &(st_sampler_constraint_t){s_evens_mask, s_evens_accept, &e});
    cr_assert_eq(st_sampler_sample(s, logits), 2);
    cr_assert_eq(e.n_best, 1); /* greedy needs the best allowed token only */
    cr_assert_eq(e.accepted, 1);
    cr_assert_eq(e.last, 2);
    st_sampler_destroy(&s);
    s = s_new(1.0f, 2, 1.0f, 0.0f, 1.0f, 7);
    st_sampler_constrain(s, &(st_sampler_constraint_t){s_evens_mask, s_evens_accept, &e});
    for (int i = 0; i < 200; i++) {
        float l[V] = {0.1f, 5.0f, 0.3f, 4.0f, 0.2f, 3.0f, -9.0f, -9.0f};
        int32_t t = st_sampler_sample(s, l);
        cr_assert(t == 2 || t == 4, "token %d: top-2 of the even ids are 2 and 4", t);
    }
    cr_assert_eq(e.n_best, 2);
    st_sampler_constrain(s, &(st_sampler_constraint_t){s_refuse_all, s_evens_accept, &e});
    cr_assert_eq(st_sampler_sample(s, logits), -1);
    st_sampler_constrain(s, NULL);
    float l[V] = {0.1f, 5.0f, 0.3f, 4.0f, 0.2f, 3.0f, -9.0f, -9.0f};
    int32_t t = st_sampler_sample(s, l);
    cr_assert(t >= 0 && t < V);
    st_sampler_destroy(&s);
}
