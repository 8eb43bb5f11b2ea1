/* generate: the one generation loop, shared by st-run, st-coordinator and
 * the HTTP scheduler. st_gen_step is one step of it for any number of
 * sequences: one pass through the model (a token of each running sequence,
 * then prompt tokens of those still prefilling, up to the batch size), then
 * each sequence whose logits came out samples its next token and is checked
 * for its end (end-of-generation token, n_predict, the caller's stop).
 * st_generate is that loop for one sequence (st-run, the one-shot
 * coordinator); server/scheduler.c runs it for the HTTP requests. */
#ifndef ST_GENERATE_H
#define ST_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "forward.h"
#include "sampler.h"

/* Why a sequence ended (ST_GEN_RUNNING while it goes on). */
typedef enum {
    ST_GEN_RUNNING = 0,
    ST_GEN_EOG,    /* it sampled an end-of-generation token (counted, not printed) */
    ST_GEN_LENGTH, /* it sampled n_predict tokens */
    ST_GEN_STOP,   /* the token hook said stop */
    ST_GEN_ERROR,  /* its step failed, or the sampler's constraint allowed nothing (logged) */
} st_gen_end_t;

/* One sequence: the caller sets the first fields (the rest zero), then
 * st_gen_step moves it on until end is not ST_GEN_RUNNING. */
typedef struct {
    st_kv_t *kv;       /* holds prompt[0..n_fed) already; the sequence is appended */
    st_sampler_t *smp; /* sees the prompt, then each sampled token */
    const int32_t *prompt;
    int n_prompt;         /* >= 1; n_fed < n_prompt to start */
    int n_fed;            /* prompt tokens in kv (a cached prefix to start, then kept by the step) */
    int n_predict;        /* tokens to sample at most (0: prefill only) */
    float *prompt_logits; /* NULL, or n_prompt x n_vocab teacher-forced logits (n_fed 0 to start) */
    int32_t *out;         /* NULL, or room for n_predict sampled ids */
    void *arg;            /* the caller's */
    /* kept by st_gen_step */
    int n_generated; /* sampled so far, a final end-of-generation token included */
    int32_t last;    /* the last sampled token, decoded at the next step */
    st_gen_end_t end;
} st_gen_seq_t;

/* What st_gen_step calls back (any may be NULL), with arg. */
typedef struct {
    /* Before each pass through the model: where a cluster takes in nodes
     * that join or come back. */
    void (*between_steps)(void *arg);
    /* Each sampled token, with its text (empty for an end-of-generation or
     * control token); q->end already says ST_GEN_EOG or ST_GEN_LENGTH if the
     * token ends it. Return false to end the sequence here (ST_GEN_STOP). */
    bool (*token)(void *arg, st_gen_seq_t *q, int32_t tok, const char *piece, int len);
    void *arg;
} st_gen_hooks_t;

/* The step buffers for a context. n_rows: logits rows a step can give out:
 * one per sequence stepped together, or the batch size when a sequence
 * wants prompt_logits. NULL (logged) on failure. */
typedef struct st_gen st_gen_t;
st_gen_t *st_gen_new(st_ctx_t *c, int n_rows);
void st_gen_destroy(st_gen_t **g);

/* One step of seqs[0..n_seqs) (those ended are skipped; each kv at most
 * once): running sequences first, then prompts in order, as many tokens as
 * the batch and the logits rows hold. Returns the tokens decoded (0 when none ran), or
 * a negative ST_E* code when the pass failed: then every sequence with
 * tokens in its cache from this run ends with ST_GEN_ERROR. */
int st_gen_step(st_gen_t *g, st_gen_seq_t *const *seqs, int n_seqs, const st_gen_hooks_t *h);

/* Called for each generated token with its text bytes (empty for control
 * tokens); return false to stop early. */
typedef bool (*st_token_cb)(void *arg, int32_t token, const char *piece, int piece_len);

typedef struct {
    int n_prompt;
    int n_generated;    /* including a final end-of-generation token */
    double prompt_ms;   /* wall time to the first token (the prompt's passes, its sampling) */
    double generate_ms; /* wall time of the other tokens */
} st_generate_result_t;

/* What st_generate calls back (any may be NULL): token for each generated
 * token, and between_steps before each pass through the model (see
 * st_gen_hooks_t). */
typedef struct {
    st_token_cb token;
    void *token_arg;
    void (*between_steps)(void *arg);
    void *between_steps_arg;
} st_generate_cb_t;

/* The loop for one sequence: runs prompt[0..n_prompt) through the model
 * (appending to kv), then samples up to n_predict tokens; generated ids go to
 * out_tokens (capacity n_predict) when not NULL. prompt_logits, when not
 * NULL, receives n_prompt x n_vocab teacher-forced logits. cb may be NULL. Returns 0 or a negative ST_E* code. */
int st_generate(st_ctx_t *c, st_kv_t *kv, st_sampler_t *smp, const int32_t *prompt, int n_prompt, int n_predict,
                float *prompt_logits, int32_t *out_tokens, const st_generate_cb_t *cb, st_generate_result_t *res);

/* UTF-8 at s[0..avail): length of the valid sequence starting there (1..4),
 * 0 if invalid, -1 if the bytes so far could still become a valid one. */
int st_utf8_seq_len(const unsigned char *s, size_t avail);

/* Copies len bytes into a malloc'd NUL-terminated string in which every
 * invalid UTF-8 sequence is replaced by U+FFFD (safe for JSON). */
char *st_utf8_sanitize(const char *s, size_t len);

#endif
