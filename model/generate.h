/* generate: the prompt -> tokens loop shared by st-run, st-coordinator and
 * the HTTP API: prefill the prompt, then sample, stream and stop on an
 * end-of-generation token or after n_predict tokens. */
#ifndef ST_GENERATE_H
#define ST_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "forward.h"
#include "sampler.h"

/* Called for each generated token with its text bytes (empty for control
 * tokens); return false to stop early. */
typedef bool (*st_token_cb)(void *arg, int32_t token, const char *piece, int piece_len);

typedef struct {
    int n_prompt;
    int n_generated;    /* including a final end-of-generation token */
    bool stopped_eog;   /* ended on an end-of-generation token */
    double prompt_ms;   /* prefill wall time */
    double generate_ms; /* decode wall time */
} st_generate_result_t;

/* What st_generate calls back (any may be NULL): token for each generated
 * token, and between_steps before each pass through the model (the prompt,
 * then each token): where a cluster takes in nodes that join or come back. */
typedef struct {
    st_token_cb token;
    void *token_arg;
    void (*between_steps)(void *arg);
    void *between_steps_arg;
} st_generate_cb_t;

/* Runs prompt[0..n_prompt) through the model (appending to kv), then samples
 * up to n_predict tokens; generated ids go to out_tokens (capacity n_predict)
 * when not NULL. prompt_logits, when not NULL, receives n_prompt x n_vocab
 * teacher-forced logits. cb may be NULL. Returns 0 or a negative ST_E* code. */
int st_generate(st_ctx_t *c, st_kv_t *kv, st_sampler_t *smp, const int32_t *prompt, int n_prompt, int n_predict,
                float *prompt_logits, int32_t *out_tokens, const st_generate_cb_t *cb, st_generate_result_t *res);

/* UTF-8 at s[0..avail): length of the valid sequence starting there (1..4),
 * 0 if invalid, -1 if the bytes so far could still become a valid one. */
int st_utf8_seq_len(const unsigned char *s, size_t avail);

/* Copies len bytes into a malloc'd NUL-terminated string in which every
 * invalid UTF-8 sequence is replaced by U+FFFD (safe for JSON). */
char *st_utf8_sanitize(const char *s, size_t len);

#endif
