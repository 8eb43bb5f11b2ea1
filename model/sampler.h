/* sampler: picks the next token from logits. Greedy when temp <= 0;
 * otherwise penalties (repetition, presence, frequency) -> top-k -> top-p -> min-p -> temperature ->
 * draw (llama.cpp's default order). Deterministic for a given seed. */
#ifndef ST_SAMPLER_H
#define ST_SAMPLER_H

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

#endif
