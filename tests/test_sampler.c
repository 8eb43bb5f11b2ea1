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

/* ---- without top-k: the same tokens as sorting the whole vocabulary ---- */

typedef struct {
    int32_t id;
    float logit;
    float p;
} ref_cand_t;

static int s_ref_cmp(const void *a, const void *b) {
    const ref_cand_t *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

static uint64_t s_ref_splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The sampler as documented, written plainly: the whole vocabulary sorted (logit
 * descending, ties to the lower id), top-p on probabilities relative to the best,
 * min-p, temperature, one xoroshiro128+ draw (state from splitmix64 of the seed). */
typedef struct {
    uint64_t rng[2];
    ref_cand_t *c;
} ref_sampler_t;

static int32_t s_ref_sample(ref_sampler_t *r, const float *logits, int n_vocab, float temp, float top_p, float min_p) {
    ref_cand_t *c = r->c;
    for (int i = 0; i < n_vocab; i++) c[i] = (ref_cand_t){i, logits[i], 0.0f};
    qsort(c, (size_t)n_vocab, sizeof *c, s_ref_cmp);
    int n = n_vocab;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (c[i].p = expf(c[i].logit - c[0].logit));
    double acc = 0.0;
    for (int i = 0; top_p < 1.0f && i < n; i++)
        if ((acc += c[i].p / sum) >= top_p) n = i + 1;
    int keep = 1;
    while (min_p > 0.0f && keep < n && c[keep].p >= min_p * c[0].p) keep++;
    if (min_p > 0.0f) n = keep;
    sum = 0.0;
    for (int i = 0; i < n; i++) sum += (c[i].p = expf((c[i].logit - c[0].logit) / temp));
    uint64_t s0 = r->rng[0], s1 = r->rng[1], x = s0 + s1;
    s1 ^= s0;
    r->rng[0] = ((s0 << 24) | (s0 >> 40)) ^ s1 ^ (s1 << 16);
    r->rng[1] = (s1 << 37) | (s1 >> 27);
    const double u = (double)(x >> 11) * (1.0 / 9007199254740992.0) * sum;
    acc = 0.0;
    for (int i = 0; i < n; i++)
        if (u < (acc += c[i].p)) return c[i].id;
    while (n > 1 && c[n - 1].p == 0.0f) n--;
    return c[n - 1].id;
}

Test(sampler, no_top_k_draws_the_tokens_of_a_full_sort) {
    const int NV = 151936, N_DRAWS = 3;
    float *logits = malloc((size_t)NV * sizeof *logits), *copy = malloc((size_t)NV * sizeof *copy);
    ref_sampler_t ref = {.c = malloc((size_t)NV * sizeof *ref.c)};
    cr_assert(logits && copy && ref.c);
    /* top_p / min_p: both, top-p alone (wide and narrow), min-p alone, neither (the full sort) */
    const float cuts[][2] = {{0.95f, 0.05f}, {0.9f, 0.0f}, {0.3f, 0.0f}, {1.0f, 0.05f}, {1.0f, 0.0f}};
    const float temps[] = {0.7f, 1.3f};
    int n_diff_tokens = 0, last = -1;
    for (int shape = 0; shape < 4; shape++)
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++)
            for (size_t t = 0; t < sizeof temps / sizeof temps[0]; t++) {
                const uint64_t seed = 1000 + (uint64_t)shape * 100 + k * 10 + t;
                st_sampler_params_t p = st_sampler_default_params();
                p.temp = temps[t], p.top_k = 0, p.top_p = cuts[k][0], p.min_p = cuts[k][1], p.seed = seed;
                st_sampler_t *s = st_sampler_new(&p, NV);
                cr_assert_not_null(s);
                uint64_t x = seed;
                ref.rng[0] = s_ref_splitmix(&x);
                ref.rng[1] = s_ref_splitmix(&x);
                uint64_t g = seed * 7919;
                for (int d = 0; d < N_DRAWS; d++) {
                    for (int i = 0; i < NV; i++) {
                        g = g * 6364136223846793005ull + 1442695040888963407ull;
                        const float u = (float)(g >> 40) / 16777216.0f; /* [0, 1) */
                        switch (shape) {
                        case 0: logits[i] = 16.0f * u; break;                 /* flat: a wide nucleus */
                        case 1: logits[i] = 30.0f * u * u * u * u; break;     /* peaked: a few tokens lead */
                        case 2: logits[i] = floorf(8.0f * u) * 0.5f; break;   /* ties: the lower id first */
                        default: logits[i] = u < 0.9f ? -INFINITY : 4.0f * u; /* mostly masked */
                        }
                    }
                    memcpy(copy, logits, (size_t)NV * sizeof *copy);
                    const int32_t want = s_ref_sample(&ref, copy, NV, p.temp, p.top_p, p.min_p);
                    const int32_t got = st_sampler_sample(s, logits);
                    cr_assert_eq(got, want, "shape %d, top_p %.2f, min_p %.2f, temp %.1f, draw %d: %d, full sort %d",
                                 shape, p.top_p, p.min_p, p.temp, d, got, want);
                    n_diff_tokens += got != last, last = got;
                }
                st_sampler_destroy(&s);
            }
    cr_assert_gt(n_diff_tokens, 60, "the draws hardly vary: a weak comparison");
    free(logits), free(copy), free(ref.c);
}
