/* Tests of the output head sharded by vocabulary: the distributed draw
 * (st_sampler_sample_parts over the parts' st_sampler_part_eval summaries)
 * against the sampler itself on the whole logits (st-run's sampler), for
 * greedy, temperature, top-k, top-p, min-p and the three penalties, with the
 * vocabulary cut in 1, 2, 3 and 5 parts, and candidates asked again when the
 * first ones do not decide the draw. */
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "st_log.h"

static uint64_t g_x;
static double s_rand(void) { /* splitmix64 -> [0, 1) */
    uint64_t z = (g_x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
}

static float g_skew; /* added to the first fifth of the ids */

/* logits of V ids: scale sets how flat (small: nearly uniform), some exact ties */
static void s_logits(float *l, int V, float scale) {
    for (int i = 0; i < V; i++)
        l[i] = (float)(scale * (s_rand() * 2 - 1) * (s_rand() < 0.01 ? 4 : 1)) + (i < V / 5 ? g_skew : 0.0f);
    for (int i = 0; i < V / 50; i++) l[(int)(s_rand() * V)] = l[(int)(s_rand() * V)]; /* ties */
}

typedef struct {
    int V, n_parts, bounds[6];
    int32_t *ids[5];
    float *vals[5];
    st_sampler_cand_t *cand[5];
    st_sampler_part_t parts[5];
} parts_t;

/* what each node computes for its slice, asking k candidates */
static void s_eval_parts(parts_t *p, const st_sampler_t *s, const float *logits, int k, float *scratch) {
    const st_sampler_params_t *sp = st_sampler_params(s);
    uint32_t pid[256], pcount[256];
    const int n_pen = st_sampler_penalties(s, pid, pcount, 256);
    st_sampler_part_pen_t pen = {pid, pcount, n_pen, sp->repeat_penalty, sp->presence_penalty, sp->frequency_penalty};
    for (int q = 0; q < p->n_parts; q++) {
        const int lo = p->bounds[q], n = p->bounds[q + 1] - lo;
        memcpy(scratch, logits + lo, (size_t)n * sizeof(float));
        st_sampler_part_t *r = &p->parts[q];
        const int got = st_sampler_part_eval(scratch, n, lo, n_pen ? &pen : NULL, sp->temp, k, p->ids[q], p->vals[q],
                                             &r->max, &r->sum, &r->sum_temp);
        cr_assert_gt(got, 0);
        for (int i = 0; i < got; i++) p->cand[q][i] = (st_sampler_cand_t){p->ids[q][i], p->vals[q][i]};
        r->cand = p->cand[q];
        r->n_cand = got;
        r->complete = got == n;
    }
}

typedef struct {
    int asked_again, tokens, whole;
} run_t;

/* n_steps draws with both samplers from the same logits; every token must agree */
static run_t s_run(const st_sampler_params_t *sp, int V, int n_parts, float scale, int k0, int n_steps) {
    parts_t p = {.V = V, .n_parts = n_parts};
    p.bounds[0] = 0;
    for (int q = 1; q < n_parts; q++) p.bounds[q] = V * q / n_parts + (int)(s_rand() * 7) - 3; /* uneven */
    p.bounds[n_parts] = V;
    for (int q = 0; q < n_parts; q++) {
        p.ids[q] = malloc((size_t)V * sizeof(int32_t));
        p.vals[q] = malloc((size_t)V * sizeof(float));
        p.cand[q] = malloc((size_t)V * sizeof(st_sampler_cand_t));
    }
    float *logits = malloc((size_t)V * sizeof(float)), *whole = malloc((size_t)V * sizeof(float));
    float *scratch = malloc((size_t)V * sizeof(float));
    st_sampler_t *ref = st_sampler_new(sp, V), *dist = st_sampler_new(sp, V);
    cr_assert(ref && dist);
    run_t r = {0};
    int32_t recent[8];
    for (int t = 0; t < 8; t++) { /* a prompt for the penalties */
        recent[t] = (int32_t)(s_rand() * V);
        st_sampler_accept(ref, recent[t]), st_sampler_accept(dist, recent[t]);
    }
    for (int step = 0; step < n_steps; step++) {
        s_logits(logits, V, scale);
        for (int t = 0; t < 8; t++) logits[recent[t]] += scale; /* the penalties must matter */
        memcpy(whole, logits, (size_t)V * sizeof(float));
        const int32_t want = st_sampler_sample(ref, whole);
        int k = k0, need = 0;
        int32_t got;
        for (;;) {
            s_eval_parts(&p, dist, logits, k, scratch);
            got = st_sampler_sample_parts(dist, p.parts, n_parts, &need);
            if (got != ST_ERANGE) break;
            cr_assert_gt(need, k, "asks for more than it had");
            if (need == INT_MAX) { /* the whole logits decide: what the coordinator then gathers */
                memcpy(whole, logits, (size_t)V * sizeof(float));
                got = st_sampler_sample(dist, whole);
                r.whole++;
                break;
            }
            k = need;
            r.asked_again++;
        }
        cr_assert_eq(got, want, "step %d: %d parts drew %d, the whole logits %d (temp %g top_k %d top_p %g min_p %g)",
                     step, n_parts, got, want, sp->temp, sp->top_k, sp->top_p, sp->min_p);
        st_sampler_accept(ref, want), st_sampler_accept(dist, got);
        recent[step % 8] = want;
        r.tokens++;
    }
    st_sampler_destroy(&ref), st_sampler_destroy(&dist);
    free(logits), free(whole), free(scratch);
    for (int q = 0; q < n_parts; q++) free(p.ids[q]), free(p.vals[q]), free(p.cand[q]);
    return r;
}

static void setup(void) { st_log_set_level(ST_LOG_ERROR); }
TestSuite(head_parts, .init = setup);

static const int g_parts[4] = {1, 2, 3, 5};

Test(head_parts, greedy_with_penalties) {
    g_x = 1;
    st_sampler_params_t sp = st_sampler_default_params();
    sp.temp = 0.0f;
    sp.repeat_penalty = 1.3f, sp.presence_penalty = 0.4f, sp.frequency_penalty = 0.2f;
    for (int i = 0; i < 4; i++) s_run(&sp, 3001, g_parts[i], 5.0f, 1, 40);
}

Test(head_parts, default_sampling_top_k_top_p_min_p) {
    for (int i = 0; i < 4; i++)
        for (uint64_t seed = 1; seed <= 3; seed++) {
            g_x = seed * 100 + (uint64_t)i;
            st_sampler_params_t sp = st_sampler_default_params(); /* temp 0.8, top-k 40, top-p 0.95, min-p 0.05 */
            sp.seed = seed;
            sp.repeat_penalty = 1.1f, sp.presence_penalty = 0.3f, sp.frequency_penalty = 0.1f;
            s_run(&sp, 3001, g_parts[i], 3.0f, sp.top_k, 60);
        }
}

/* top-p without top-k over flat logits: the first candidates do not reach p, so more are asked */
Test(head_parts, top_p_over_a_flat_distribution_asks_again) {
    int again = 0;
    for (int i = 0; i < 4; i++) {
        g_x = 7 + (uint64_t)i;
        st_sampler_params_t sp = st_sampler_default_params();
        sp.top_k = 0, sp.top_p = 0.9f, sp.min_p = 0.0f, sp.temp = 1.0f, sp.seed = 42 + (uint64_t)i;
        sp.frequency_penalty = 0.5f;
        again += s_run(&sp, 2003, g_parts[i], 0.5f, 16, 40).asked_again;
    }
    cr_assert_gt(again, 0, "the flat case never needed more candidates: the test does not test that");
}

/* one part holds all the likely ids: its unsent candidates outrank the
 * others' first ones, so only the merged prefix up to its last one is known */
Test(head_parts, one_part_holds_the_likely_ids) {
    int again = 0;
    for (int i = 1; i < 4; i++) {
        g_x = 17 + (uint64_t)i;
        g_skew = 4.0f;
        st_sampler_params_t sp = st_sampler_default_params();
        sp.top_k = 0, sp.top_p = 0.5f, sp.min_p = 0.0f, sp.temp = 1.0f, sp.seed = 3 + (uint64_t)i;
        again += s_run(&sp, 2003, g_parts[i], 1.0f, 4, 40).asked_again;
        sp.top_p = 1.0f, sp.min_p = 0.3f;
        again += s_run(&sp, 2003, g_parts[i], 1.0f, 4, 40).asked_again;
        g_skew = 0.0f;
    }
    cr_assert_gt(again, 0);
}

/* no cut at all: the draw walks the whole vocabulary's mass, from the parts' sums */
Test(head_parts, pure_temperature_and_min_p) {
    for (int i = 0; i < 4; i++) {
        g_x = 70 + (uint64_t)i;
        st_sampler_params_t sp = st_sampler_default_params();
        sp.top_k = 0, sp.top_p = 1.0f, sp.min_p = 0.0f, sp.temp = 0.7f, sp.seed = 9 + (uint64_t)i;
        s_run(&sp, 2003, g_parts[i], 4.0f, 8, 40);
        sp.min_p = 0.1f, sp.temp = 1.5f;
        s_run(&sp, 2003, g_parts[i], 2.0f, 8, 40);
    }
}

/* a top-k above the vocabulary, and a vocabulary smaller than the candidates asked */
Test(head_parts, small_vocabulary) {
    g_x = 5;
    st_sampler_params_t sp = st_sampler_default_params();
    sp.top_k = 100;
    for (int i = 0; i < 4; i++) s_run(&sp, 37, g_parts[i], 2.0f, 100, 30);
}

Test(head_parts, refuses_a_constraint_and_empty_parts) {
    st_sampler_params_t sp = st_sampler_default_params();
    st_sampler_t *s = st_sampler_new(&sp, 10);
    st_sampler_cand_t c = {3, 1.0f};
    st_sampler_part_t part = {.cand = &c, .n_cand = 0, .complete = false, .max = 1.0f, .sum = 1, .sum_temp = 1};
    int need;
    cr_assert_eq(st_sampler_sample_parts(s, &part, 1, &need), ST_EINVAL);
    cr_assert_eq(st_sampler_sample_parts(s, &part, 0, &need), ST_EINVAL);
    st_sampler_destroy(&s);
}
