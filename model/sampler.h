/* sampler: picks the next token from logits. Greedy when temp <= 0;
 * otherwise penalties (repetition, presence, frequency) -> top-k -> top-p -> min-p -> temperature ->
 * draw (llama.cpp's default order). Deterministic for a given seed. */
#ifndef ST_SAMPLER_H
#define ST_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    float temp;              /* <= 0: greedy (argmax) */
    int top_k;               /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off */
    float repeat_penalty;    /* 1: off */
    float presence_penalty;  /* 0: off; subtracted once from each id seen in the window */
    float frequency_penalty; /* 0: off; subtracted once per occurrence in the window */
    int repeat_last_n;       /* tokens looked back for the penalties */
    uint64_t seed;
} st_sampler_params_t;

st_sampler_params_t st_sampler_default_params(void);

typedef struct st_sampler st_sampler_t;

/* NULL on bad parameters (logged) or no memory. */
st_sampler_t *st_sampler_new(const st_sampler_params_t *p, int n_vocab);
void st_sampler_destroy(st_sampler_t **s);

/* Records a token of the context (prompt or generated) for the penalty. */
void st_sampler_accept(st_sampler_t *s, int32_t token);
/* Picks a token; logits may be modified (penalties, constraint). -1 when the
 * constraint fails (no token allowed, or it refused the one drawn). */
int32_t st_sampler_sample(st_sampler_t *s, float *logits);

/* One id's logit after the penalties for count occurrences in the window
 * (the sampler's own arithmetic: a node that holds part of the vocabulary
 * applies it to get the same bits). */
float st_sampler_penalize_logit(float l, int count, float repeat, float presence, float frequency);

/* An optional limit on what may come next (a grammar: vocab_mask.h). mask
 * runs after the penalties and sets forbidden logits to -INFINITY, at least
 * among the n_best best allowed tokens (1 when greedy, top_k, 0 for all);
 * accept is told the token drawn. Both return 0 or a negative ST_E* code. */
typedef struct {
    int (*mask)(void *arg, float *logits, int n_vocab, int n_best);
    int (*accept)(void *arg, int32_t token);
    void *arg;
} st_sampler_constraint_t;
/* Sets (or with NULL removes) the constraint; arg is borrowed. */
void st_sampler_constrain(st_sampler_t *s, const st_sampler_constraint_t *c);

/* ---- the vocabulary in parts (an output head sharded over nodes) ----
 * Each part (a slice [lo, hi) of the vocabulary) sends its best candidates
 * after the penalties (st_sampler_best on st_sampler_penalize_logit'd
 * logits), its maximum and the sums of expf(l - max) and expf((l - max) / temp)
 * over the slice; st_sampler_sample_parts draws from them what
 * st_sampler_sample draws from the whole logits, or says that it needs more
 * candidates. */
#define ST_SAMPLER_MAX_PARTS 64

typedef struct {
    int32_t id;
    float logit;
} st_sampler_cand_t;

typedef struct {
    const st_sampler_cand_t *cand; /* best first, ties by lower id; ids of the whole vocabulary */
    int n_cand;                    /* >= 1 */
    bool complete;                 /* these are all of the part's ids */
    float max;                     /* = cand[0].logit */
    double sum, sum_temp;          /* over the part: expf(l - max), expf((l - max) / temp) */
} st_sampler_part_t;

/* The k best of n logits (ties: lower index first) as ids id0 + index and
 * their values, best first. Returns how many (min(k, n)), or ST_ENOMEM. */
int st_sampler_best(const float *logits, int n, int k, int32_t id0, int32_t *ids, float *vals);
/* A part's penalties: the window's (id, count) pairs (ids of the whole vocabulary). */
typedef struct {
    const uint32_t *id, *count;
    int n;
    float repeat, presence, frequency;
} st_sampler_part_pen_t;
/* What a part sends: applies pen (may be NULL) to its n logits (ids id0..),
 * then writes its k best (ids, vals; min(k, n) of them), its maximum and its
 * sums (st_sampler_part_t; sum_temp = sum when temp <= 0). Returns how many
 * candidates, or a negative ST_E* code. */
int st_sampler_part_eval(float *logits, int n, int32_t id0, const st_sampler_part_pen_t *pen, float temp, int k,
                         int32_t *ids, float *vals, float *max, double *sum, double *sum_temp);
/* The penalty window as distinct (id, count) pairs (at most cap); 0 when the
 * parameters apply no penalty. Returns how many. */
int st_sampler_penalties(const st_sampler_t *s, uint32_t *ids, uint32_t *counts, int cap);
/* The parameters s was made with (borrowed for s's lifetime). */
const st_sampler_params_t *st_sampler_params(const st_sampler_t *s);
/* Whether a constraint (grammar) is set: it needs whole logits (st_sampler_sample). */
bool st_sampler_constrained(const st_sampler_t *s);
/* Draws the token st_sampler_sample would draw from the parts' whole logits
 * (penalties already applied by the parts). The parts cover the vocabulary
 * once. Returns the token; ST_ERANGE when the candidates sent do not decide
 * the draw (*need = candidates per part to ask for; the random state is as
 * before the call, so the draw can be made again; INT_MAX: only the whole
 * logits decide, st_sampler_sample); ST_EINVAL with a constraint set or
 * empty parts. Without a top-k cut the sums over the whole vocabulary are
 * the parts' sums rescaled, which differ from st-run's in the last 1e-7: a
 * top-p or draw decision that comes within 1e-6 of them asks for the whole
 * logits (as st_sampler_sample itself sorts everything when its own sums
 * are that close). */
int32_t st_sampler_sample_parts(st_sampler_t *s, const st_sampler_part_t *parts, int n_parts, int *need);

#endif
