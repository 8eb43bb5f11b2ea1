/* Token sampling. Candidates are (id, logit) pairs; each stage narrows them.
 * Sorts happen only when temp > 0, after top-k has cut the list; without
 * top-k, only the part of the vocabulary that top-p and min-p can keep is
 * sorted (s_nucleus), with the tokens a full sort gives. */
#include "sampler.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "st_log.h"

typedef struct {
    int32_t id;
    float logit;
    float p;
} cand_t;

struct st_sampler {
    st_sampler_params_t p;
    int n_vocab;
    cand_t *cand;
    int32_t *recent; /* ring of the last repeat_last_n tokens */
    int32_t *count;  /* per id, occurrences in the ring: zero outside st_sampler_sample */
    int n_recent, recent_head;
    uint64_t rng[2];
    st_sampler_constraint_t con;
};

st_sampler_params_t st_sampler_default_params(void) {
    st_sampler_params_t p = {.temp = 0.8f,
                             .top_k = 40,
                             .top_p = 0.95f,
                             .min_p = 0.05f,
                             .repeat_penalty = 1.0f,
                             .repeat_last_n = 64,
                             .seed = 0xC0FFEE};
    return p;
}

static uint64_t s_splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* xoroshiro128+ -> uniform double in [0, 1) */
static double s_uniform(st_sampler_t *s) {
    uint64_t s0 = s->rng[0], s1 = s->rng[1], r = s0 + s1;
    s1 ^= s0;
    s->rng[0] = ((s0 << 24) | (s0 >> 40)) ^ s1 ^ (s1 << 16);
    s->rng[1] = (s1 << 37) | (s1 >> 27);
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

st_sampler_t *st_sampler_new(const st_sampler_params_t *p, int n_vocab) {
    if (n_vocab < 1 || !(p->temp == p->temp) || p->repeat_penalty <= 0.0f || p->repeat_last_n < 0 ||
        p->repeat_last_n > 1 << 20 || p->top_p <= 0.0f) {
        st_fail(ST_EINVAL, "bad sampling parameters");
        return NULL;
    }
    st_sampler_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->recent = malloc(((size_t)p->repeat_last_n + 1) * sizeof *s->recent);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    if (!s->cand || !s->recent || !s->count) {
        st_sampler_destroy(&s);
        return NULL;
    }
    uint64_t x = p->seed;
    s->rng[0] = s_splitmix(&x);
    s->rng[1] = s_splitmix(&x);
    return s;
}

void st_sampler_destroy(st_sampler_t **sp) {
    if (!sp || !*sp) return;
    free((*sp)->cand);
    free((*sp)->recent);
    free((*sp)->count);
    free(*sp);
    *sp = NULL;
}

void st_sampler_accept(st_sampler_t *s, int32_t token) {
    if (s->p.repeat_last_n == 0) return;
    s->recent[s->recent_head] = token;
    s->recent_head = (s->recent_head + 1) % s->p.repeat_last_n;
    if (s->n_recent < s->p.repeat_last_n) s->n_recent++;
}

static int s_by_logit_desc(const void *a, const void *b) {
    const cand_t *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id;
}

/* The k best of the n logits as candidates in c, sorted descending (ties: lower
 * id first); all n when k <= 0 or k >= n. For a small k one pass over the
 * logits keeps a sorted prefix: most values lose to its last entry at once. */
static int s_top_k(cand_t *c, const float *logits, int n, int k) {
    if (k <= 0 || k >= n) {
        for (int i = 0; i < n; i++) c[i] = (cand_t){i, logits[i], 0.0f};
        qsort(c, (size_t)n, sizeof *c, s_by_logit_desc);
        return n;
    }
    for (int i = 0; i < k; i++) c[i] = (cand_t){i, logits[i], 0.0f};
    qsort(c, (size_t)k, sizeof *c, s_by_logit_desc);
    for (int i = k; i < n; i++) {
        if (!(logits[i] > c[k - 1].logit)) continue; /* a later id loses a tie */
        int j = k - 1;
        while (j > 0 && logits[i] > c[j - 1].logit) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = (cand_t){i, logits[i], 0.0f};
    }
    return k;
}

/* First index of the largest value (NaNs never win). Two passes: eight
 * running maxima the compiler turns into vector max instructions, then the
 * first position holding the maximum: several times faster over a 150k vocab
 * than one compare-and-branch per element. */
static int32_t s_argmax(const float *x, int n) {
    float m8[8];
    for (int j = 0; j < 8; j++) m8[j] = -INFINITY;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) m8[j] = x[i + j] > m8[j] ? x[i + j] : m8[j];
    float m = -INFINITY;
    for (int j = 0; j < 8; j++) m = m8[j] > m ? m8[j] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    for (i = 0; i < n; i++)
        if (x[i] == m) return i;
    return 0; /* all NaN or -inf */
}

void st_sampler_constrain(st_sampler_t *s, const st_sampler_constraint_t *c) {
    s->con = c ? *c : (st_sampler_constraint_t){0};
}

/* Penalties over the window, as llama.cpp's penalties sampler: repetition
 * divides a positive logit (multiplies a negative one), then
 * logit -= count * frequency + (count > 0) * presence; once per distinct id. */
static void s_penalize(st_sampler_t *s, float *logits) {
    const int V = s->n_vocab;
    if (s->p.repeat_penalty == 1.0f && s->p.presence_penalty == 0.0f && s->p.frequency_penalty == 0.0f) return;
    for (int i = 0; i < s->n_recent; i++)
        if (s->recent[i] >= 0 && s->recent[i] < V) s->count[s->recent[i]]++;
    for (int i = 0; i < s->n_recent; i++) {
        const int32_t id = s->recent[i];
        if (id < 0 || id >= V || s->count[id] == 0) continue; /* out of range, or done */
        logits[id] = st_sampler_penalize_logit(logits[id], s->count[id], s->p.repeat_penalty, s->p.presence_penalty,
                                               s->p.frequency_penalty);
        s->count[id] = 0;
    }
}

float st_sampler_penalize_logit(float l, int count, float repeat, float presence, float frequency) {
    if (repeat != 1.0f) l = l > 0 ? l / repeat : l * repeat;
    return l - ((float)count * frequency + presence);
}

static int32_t s_draw(st_sampler_t *s, float *logits);

int32_t st_sampler_sample(st_sampler_t *s, float *logits) {
    s_penalize(s, logits);
    if (!s->con.mask) return s_draw(s, logits);
    int n_best = s->p.temp <= 0.0f ? 1 : s->p.top_k > 0 ? s->p.top_k : 0;
    if (s->con.mask(s->con.arg, logits, s->n_vocab, n_best) < 0) return -1;
    int32_t tok = s_draw(s, logits);
    return s->con.accept(s->con.arg, tok) < 0 ? -1 : tok;
}

/* Without top-k (top_k 0, or >= the vocabulary): the candidates that top-p
 * and min-p can keep, sorted as s_top_k sorts them, without sorting the
 * whole vocabulary (151936 entries: ~23 ms a token). One pass gives each
 * token's probability relative to the best (the p s_draw computes) and their
 * sum, in id order. Min-p keeps exactly {p >= min_p}: a prefix of the sorted
 * order, so that set holds the final cut whatever top-p does. Top-p alone
 * needs the prefix whose mass reaches top_p: the set {p >= t} for t lowered
 * 256-fold until its mass clears top_p * sum with a margin. Returns
 * the set's size with the candidates in s->cand and the sum in *sum, or -1
 * when only the full sort will do (top_p >= 1 without min-p, a logit that is
 * NaN or infinite, t down to 2^-44). */
static int s_nucleus(st_sampler_t *s, const float *logits, double *sum) {
    const int V = s->n_vocab;
    const float top_p = s->p.top_p, min_p = s->p.min_p;
    if (s->p.top_k > 0 && s->p.top_k < V) return -1;
    if (!(top_p < 1.0f) && !(min_p > 0.0f)) return -1;
    const float best = logits[s_argmax(logits, V)];
    if (!isfinite(best)) return -1;
    cand_t *c = s->cand;
    double total = 0.0;
    for (int i = 0; i < V; i++) total += (c[i] = (cand_t){i, logits[i], expf(logits[i] - best)}).p;
    if (!isfinite(total)) return -1; /* a NaN or +inf logit */
    float t = min_p > 0.0f ? min_p : 0.0f;
    if (top_p < 1.0f)
        for (float tt = 1.0f / 16; tt > t && tt >= 0x1p-44f; tt /= 256) {
            double mass = 0.0;
            for (int i = 0; i < V; i++) mass += c[i].p >= tt ? c[i].p : 0.0;
            if (mass >= (double)top_p * total * (1.0 + 1e-6)) {
                t = tt;
                break;
            }
        }
    if (!(t > 0.0f && t <= 1.0f)) return -1; /* (min_p above 1 keeps the best token only) */
    int n = 0;
    for (int i = 0; i < V; i++)
        if (c[i].p >= t) c[n++] = c[i];
    qsort(c, (size_t)n, sizeof *c, s_by_logit_desc);
    *sum = total;
    return n;
}

/* Top-p over the sorted candidates: the count to keep (n when the mass never
 * reaches top_p). With slack > 0 (a sum taken in another order than the
 * sorted one), -1 when a partial mass comes within slack of top_p, where the
 * two sums' rounding could decide differently. */
static int s_top_p(const cand_t *c, int n, double sum, float top_p, double slack) {
    double acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += c[i].p / sum;
        if (slack > 0.0 && fabs(acc - (double)top_p) <= slack) return -1;
        if (acc >= top_p) return i + 1;
    }
    return n;
}

/* Greedy, or top-k -> top-p -> min-p -> temperature -> draw. */
static int32_t s_draw(st_sampler_t *s, float *logits) {
    const int V = s->n_vocab;
    if (s->p.temp <= 0.0f) return s_argmax(logits, V);
    cand_t *c = s->cand;
    double sum = 0.0;
    int n = s_nucleus(s, logits, &sum);
    /* two orders of summing V terms differ by at most 2 V eps of the sum: unsure within 8 V eps, sort it all */
    if (n > 0 && s->p.top_p < 1.0f) n = s_top_p(c, n, sum, s->p.top_p, 8.0 * V * DBL_EPSILON);
    if (n < 0) {
        n = s_top_k(c, logits, V, s->p.top_k);
        /* probabilities at temperature 1 for top-p / min-p */
        sum = 0.0;
        for (int i = 0; i < n; i++) sum += (c[i].p = expf(c[i].logit - c[0].logit));
        if (s->p.top_p < 1.0f) n = s_top_p(c, n, sum, s->p.top_p, 0.0);
    }
    if (s->p.min_p > 0.0f) {
        int keep = 1;
        while (keep < n && c[keep].p >= s->p.min_p * c[0].p) keep++;
        n = keep;
    }
    sum = 0.0;
    for (int i = 0; i < n; i++) sum += (c[i].p = expf((c[i].logit - c[0].logit) / s->p.temp));
    double r = s_uniform(s) * sum, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += c[i].p;
        if (r < acc) return c[i].id;
    }
    while (n > 1 && c[n - 1].p == 0.0) n--; /* rounding: the last one with a chance (never a masked one) */
    return c[n - 1].id;
}

/* ---- the vocabulary in parts (the output head sharded over nodes) ---- */

int st_sampler_best(const float *logits, int n, int k, int32_t id0, int32_t *ids, float *vals) {
    if (n < 1 || k < 1) return 0;
    if (k > n) k = n;
    cand_t *c = malloc((size_t)(k < n ? k : n) * sizeof *c);
    if (!c) return ST_ENOMEM;
    k = s_top_k(c, logits, n, k); /* k < n keeps k entries; k == n sorts them all */
    for (int i = 0; i < k; i++) ids[i] = id0 + c[i].id, vals[i] = c[i].logit;
    free(c);
    return k;
}

int st_sampler_penalties(const st_sampler_t *s, uint32_t *ids, uint32_t *counts, int cap) {
    if (s->p.repeat_penalty == 1.0f && s->p.presence_penalty == 0.0f && s->p.frequency_penalty == 0.0f) return 0;
    int n = 0;
    for (int i = 0; i < s->n_recent; i++) {
        const int32_t id = s->recent[i];
        if (id < 0 || id >= s->n_vocab) continue;
        int j = 0;
        while (j < n && ids[j] != (uint32_t)id) j++;
        if (j < n) {
            counts[j]++;
        } else if (n < cap) {
            ids[n] = (uint32_t)id, counts[n] = 1;
            n++;
        }
    }
    return n;
}

const st_sampler_params_t *st_sampler_params(const st_sampler_t *s) { return &s->p; }

bool st_sampler_constrained(const st_sampler_t *s) { return s->con.mask != NULL; }

/* Relative difference allowed between a sum over the whole vocabulary made
 * from the parts' rescaled sums and st-run's: each term expf(l - max) is
 * rounded once to float against its part's maximum instead of the overall
 * one (2^-23 twice), plus the additions' rounding. */
#define PARTS_SLACK 1e-6

/* whether candidate a comes before b in the sampler's order */
static bool s_before(int32_t ia, float la, int32_t ib, float lb) { return la > lb || (la == lb && ia < ib); }

/* Merges the parts' sorted candidates into s->cand (at most s->n_vocab);
 * *valid = how many of the first ones are surely the vocabulary's best
 * (up to the earliest last candidate of a part that has more). */
static int s_merge_parts(st_sampler_t *s, const st_sampler_part_t *parts, int n_parts, int *valid) {
    int n = 0, pos[ST_SAMPLER_MAX_PARTS] = {0}, bound = -1; /* bound: the part whose last sent comes first */
    for (int p = 0; p < n_parts; p++) {
        const st_sampler_part_t *q = &parts[p];
        if (q->complete || q->n_cand < 1) continue;
        const st_sampler_cand_t *l = &q->cand[q->n_cand - 1],
                                *b = bound < 0 ? NULL : &parts[bound].cand[parts[bound].n_cand - 1];
        if (!b || s_before(l->id, l->logit, b->id, b->logit)) bound = p;
    }
    *valid = -1;
    for (;;) {
        int best = -1;
        for (int p = 0; p < n_parts; p++) {
            if (pos[p] >= parts[p].n_cand) continue;
            const st_sampler_cand_t *x = &parts[p].cand[pos[p]];
            if (best < 0 ||
                s_before(x->id, x->logit, parts[best].cand[pos[best]].id, parts[best].cand[pos[best]].logit))
                best = p;
        }
        if (best < 0 || n >= s->n_vocab) break;
        const st_sampler_cand_t *x = &parts[best].cand[pos[best]++];
        s->cand[n++] = (cand_t){x->id, x->logit, 0.0f};
        if (best == bound && pos[best] == parts[best].n_cand) *valid = n;
    }
    if (*valid < 0) *valid = n;
    return n;
}

int32_t st_sampler_sample_parts(st_sampler_t *s, const st_sampler_part_t *parts, int n_parts, int *need) {
    *need = 0;
    if (n_parts < 1 || n_parts > ST_SAMPLER_MAX_PARTS || s->con.mask) return ST_EINVAL;
    for (int p = 0; p < n_parts; p++)
        if (parts[p].n_cand < 1) return ST_EINVAL;
    const int V = s->n_vocab;
    int valid;
    s_merge_parts(s, parts, n_parts, &valid);
    cand_t *c = s->cand;
    if (s->p.temp <= 0.0f) return c[0].id; /* the first of the largest: as s_argmax */
    const uint64_t rng0 = s->rng[0], rng1 = s->rng[1];
    int n = s->p.top_k > 0 && s->p.top_k < V ? s->p.top_k : V;
    if (n < V && n > valid) goto more; /* top-k needs its k best */
    /* probabilities at temperature 1 for top-p / min-p, as s_draw; without a
     * top-k cut their sum spans the whole vocabulary: the parts' sums,
     * rescaled to the overall maximum */
    const float l0 = c[0].logit;
    double sum = 0.0;
    const int known = n < valid ? n : valid;
    for (int i = 0; i < known; i++) sum += (c[i].p = expf(c[i].logit - l0));
    /* rescaled sums differ from st-run's by the expf roundings of the terms:
     * where a decision comes this close, the whole logits decide it */
    const double slack = n > valid ? PARTS_SLACK : 0.0;
    if (n > valid) {
        sum = 0.0;
        for (int p = 0; p < n_parts; p++) sum += parts[p].sum * exp((double)parts[p].max - (double)l0);
    }
    if (s->p.top_p < 1.0f) {
        double acc = 0.0;
        int i = 0;
        for (; i < n; i++) {
            if (i >= valid) goto more;
            acc += c[i].p / sum;
            if (slack > 0.0 && fabs(acc - (double)s->p.top_p) <= slack) goto whole;
            if (acc >= s->p.top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (s->p.min_p > 0.0f) {
        int keep = 1;
        while (keep < n) {
            if (keep >= valid) goto more;
            if (!(c[keep].p >= s->p.min_p * c[0].p)) break;
            keep++;
        }
        n = keep;
    }
    double tsum = 0.0;
    if (n <= valid) {
        for (int i = 0; i < n; i++) tsum += (c[i].p = expf((c[i].logit - l0) / s->p.temp));
    } else { /* no cut: the whole vocabulary at temperature, from the parts' sums */
        for (int i = 0; i < valid; i++) c[i].p = expf((c[i].logit - l0) / s->p.temp);
        for (int p = 0; p < n_parts; p++)
            tsum += parts[p].sum_temp * exp(((double)parts[p].max - (double)l0) / (double)s->p.temp);
    }
    double r = s_uniform(s) * tsum, acc = 0.0;
    const double margin = n > valid ? PARTS_SLACK * tsum : 0.0;
    for (int i = 0; i < n; i++) {
        if (i >= valid) goto more;
        if (margin > 0.0 && fabs(r - acc) <= margin) goto whole;
        acc += c[i].p;
        if (r < acc) {
            if (margin > 0.0 && acc - r <= margin) goto whole;
            return c[i].id;
        }
    }
    while (n > 1 && c[n - 1].p == 0.0) n--;
    return c[n - 1].id;
more:
    s->rng[0] = rng0, s->rng[1] = rng1; /* the draw is made again with more candidates */
    for (int p = 0; p < n_parts; p++) *need = parts[p].n_cand > *need ? parts[p].n_cand : *need;
    *need *= 2;
    return ST_ERANGE;
whole:
    s->rng[0] = rng0, s->rng[1] = rng1;
    *need = INT_MAX;
    return ST_ERANGE;
}

int st_sampler_part_eval(float *logits, int n, int32_t id0, const st_sampler_part_pen_t *pen, float temp, int k,
                         int32_t *ids, float *vals, float *max, double *sum, double *sum_temp) {
    for (int i = 0; pen && i < pen->n; i++) {
        const int64_t j = (int64_t)pen->id[i] - id0;
        if (j >= 0 && j < n)
            logits[j] =
                st_sampler_penalize_logit(logits[j], (int)pen->count[i], pen->repeat, pen->presence, pen->frequency);
    }
    const int got = st_sampler_best(logits, n, k, id0, ids, vals);
    if (got < 1) return got < 0 ? got : ST_EINVAL;
    const float m = vals[0];
    double s1 = 0.0, st = 0.0;
    for (int i = 0; i < n; i++) s1 += expf(logits[i] - m);
    if (temp > 0.0f)
        for (int i = 0; i < n; i++) st += expf((logits[i] - m) / temp);
    *max = m, *sum = s1, *sum_temp = temp > 0.0f ? st : s1;
    return got;
}
