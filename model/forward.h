/* forward: the SmallThinker forward pass over a batch of tokens of one
 * sequence, with its KV cache.
 *
 * st_ctx_t holds what a forward pass needs besides the weights: the thread
 * pool, the kernels and scratch buffers sized once from the model and
 * n_batch (the hot path never allocates). st_kv_t is one sequence's KV cache:
 * full for global layers, a ring for sliding-window layers. The MoE step goes
 * through st_moe_backend_t so that experts can be computed elsewhere (the
 * cluster); the expert computation itself is in moe.h.
 */
#ifndef ST_FORWARD_H
#define ST_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "sampler.h"

typedef struct {
    int n_ctx;         /* positions a KV cache holds (default: model's n_ctx_train, capped at 4096) */
    int n_batch;       /* tokens per internal step (default 64) */
    int n_threads;     /* default: all CPUs */
    st_type_t kv_type; /* ST_TYPE_F16 (default, as llama.cpp) or ST_TYPE_F32 */
} st_ctx_params_t;

st_ctx_params_t st_ctx_default_params(void);

typedef struct st_ctx st_ctx_t;
typedef struct st_kv st_kv_t;

/* Routing of a batch in one layer: for token t, experts ids[t*k + j] with
 * weights w[t*k + j], j = 0..k-1 in the order their outputs are summed. */
typedef struct {
    int layer;
    int n_tok;
    int k;
    const int32_t *ids;
    const float *w;
    int slot;    /* the micro-batch (0 or 1) of an overlapped step (st_moe_backend_t.begin); else 0 */
    int n_step;  /* tokens of the whole step (both micro-batches of an overlapped one) */
    bool decode; /* each of the step's tokens is of another sequence: a decode step */
} st_route_t;

/* MoE hook. prefetch() is called right after routing, before attention (may
 * be NULL); compute() must write out[t*n_embd..] = sum_j w_tj * expert_j(m_t)
 * for every token, m being the ffn_norm-ed activations (n_tok x n_embd).
 *
 * Overlap (optional: both or neither). A backend whose experts run elsewhere
 * (the cluster) may split compute() in two: begin() sends the work of r
 * (m may be reused once it returns), end() waits for it and writes out. A
 * decode step of several sequences then runs as two micro-batches, r->slot 0
 * and 1, in a ping-pong: while one's experts run elsewhere, the other's
 * attention runs here. Per slot the calls keep their order (prefetch, begin,
 * end, layer by layer), and the two slots' calls interleave. */
typedef struct {
    void *arg;
    int (*prefetch)(void *arg, const st_route_t *r);
    int (*compute)(void *arg, const st_route_t *r, const float *m, float *out);
    int (*begin)(void *arg, const st_route_t *r, const float *m);
    int (*end)(void *arg, const st_route_t *r, float *out);
} st_moe_backend_t;

/* Output head hook: logits() must write n_out rows of n_vocab logits (row t
 * at y + t * y_stride) for the hidden states xn (n_out x n_embd, after the
 * output norm), the bits st_linear on output.weight gives (0 or a negative
 * ST_E* code). */
typedef struct {
    void *arg;
    int (*logits)(void *arg, const float *xn, int n_out, float *y, size_t y_stride);
    /* Optional (both or neither): the output rows st_ctx_defer_head marks
     * hand their hidden states to stash() instead (n of them, n x n_embd, in
     * row order), and st_ctx_sample_stashed then calls sample(), which draws
     * for stashed state idx[i] the token st_sampler_sample(smp[i], its whole
     * logits) would draw into tok[i], for all n at once and without whole
     * logits where it can. 0 or a negative ST_E* code (then no token is
     * drawn). */
    int (*stash)(void *arg, const float *xn, int n);
    int (*sample)(void *arg, st_sampler_t *const *smp, const int *idx, int n, int32_t *tok);
} st_head_backend_t;

typedef struct {
    uint64_t tokens;         /* tokens processed */
    uint64_t expert_calls;   /* (token, expert) pairs computed locally */
    uint64_t neurons;        /* expert neurons evaluated (gate rows) */
    uint64_t neurons_active; /* of those, with relu(gate) > 0 */
} st_forward_stats_t;

/* NULL (logged) on failure. The model must outlive the context. */
st_ctx_t *st_ctx_new(const st_model_t *m, const st_ctx_params_t *p);
void st_ctx_destroy(st_ctx_t **c);
const st_ctx_params_t *st_ctx_params(const st_ctx_t *c);
const st_model_t *st_ctx_model(const st_ctx_t *c);
/* Replaces the local expert computation (NULL restores it). */
void st_ctx_set_moe(st_ctx_t *c, const st_moe_backend_t *b);
/* Replaces the local output head (NULL restores it). */
void st_ctx_set_head(st_ctx_t *c, const st_head_backend_t *b);
/* Output rows of the next steps that need no whole logits, only a draw:
 * row i when rows[i] (n flags, copied; NULL or 0: none, the default). With a
 * head backend that can draw (stash, sample) their logits are not computed:
 * see st_ctx_head_stashed. */
void st_ctx_defer_head(st_ctx_t *c, const bool *rows, int n);
/* Output row row of the last step: its index among the stashed hidden
 * states, or -1 when its logits were computed. */
int st_ctx_head_stashed(const st_ctx_t *c, int row);
/* The head backend's draws for n stashed hidden states of the last step
 * (st_head_backend_t.sample: tok[i] for idx[i] with smp[i]). 0 or a
 * negative ST_E* code. */
int st_ctx_sample_stashed(st_ctx_t *c, st_sampler_t *const *smp, const int *idx, int n, int32_t *tok);
/* Rows [r0, r1) of the output head for n hidden states xn (after the output
 * norm) into y (row t at y + t * y_stride, columns r0..r1-1 written): the
 * bits of the whole head's rows. r0 and r1 are multiples of 16 (or r1 =
 * n_vocab); only those rows' pages are read. For a head backend's fallback. */
void st_ctx_head_rows(st_ctx_t *c, const float *xn, int n, int r0, int r1, float *y, size_t y_stride);
/* The caller is about to block (waiting for nodes, say): the context's worker
 * threads sleep now rather than spin, leaving the CPU to whoever it waits for.
 * The next parallel step starts without them and they join when awake. */
void st_ctx_park(st_ctx_t *c);
const st_forward_stats_t *st_ctx_stats(const st_ctx_t *c);

/* A KV cache for one sequence of up to n_ctx tokens (NULL on failure). */
st_kv_t *st_kv_new(const st_ctx_t *c, int n_ctx);
void st_kv_destroy(st_kv_t **kv);
int st_kv_pos(const st_kv_t *kv); /* tokens stored so far = next position */
int st_kv_capacity(const st_kv_t *kv);
void st_kv_clear(st_kv_t *kv);
/* Bytes of K and V rows the cache holds (its capacity, not only what is stored). */
size_t st_kv_bytes(const st_kv_t *kv);
/* Whether the first n stored positions can be continued from position n
 * exactly as after a fresh prefill of them: always for global layers; for a
 * sliding-window ring, when no position that the window of position n looks
 * back to has been overwritten by a later one (the cache went at most
 * n_batch + 1 positions past n, or never wrapped). */
bool st_kv_prefix_usable(const st_kv_t *kv, int n);
/* dst (same context) gets the first n positions of src and continues from
 * position n as src truncated to n would; dst's capacity may differ from src's.
 * 0, or ST_EINVAL when the shapes differ, n > st_kv_pos(src) or
 * st_kv_capacity(dst), or the prefix is not usable (dst unchanged then). */
int st_kv_copy_prefix(st_kv_t *dst, const st_kv_t *src, int n);
/* Gives back the room past the stored positions: the capacity becomes
 * st_kv_pos(kv) (at least 1), every stored position stays readable (a source
 * for st_kv_copy_prefix); nothing more can be appended. */
void st_kv_shrink(st_kv_t *kv);

/* Runs n_tok tokens at positions kv_pos.. and appends them to the cache.
 * logits: NULL, or n_vocab floats for the last token, or n_tok x n_vocab
 * floats when all_logits. Returns 0 or a negative ST_E* code (ST_ERANGE when
 * the cache is full; bad token ids are refused before anything changes). */
int st_decode(st_ctx_t *c, st_kv_t *kv, const int32_t *tokens, int n_tok, float *logits, bool all_logits);

/* One decode step for n_seq sequences at once (continuous batching): token i
 * is appended to kvs[i] at its own position; the weights are read once for
 * all. Each cache appears at most once; n_seq <= n_batch. logits: NULL or
 * n_seq x n_vocab. Same numbers as n_seq separate st_decode calls. */
int st_decode_batch(st_ctx_t *c, st_kv_t *const *kvs, const int32_t *tokens, int n_seq, float *logits);

/* Tokens of several sequences in one pass (mixed batching: prompts being
 * prefilled next to one-token decode steps). Token i is appended to kvs[i]; a
 * cache may appear several times, its tokens in order at consecutive
 * positions. n_tok <= n_batch. logits: NULL, or one row of n_vocab floats per
 * token with want[i] (every token when want is NULL), in token order. Same
 * numbers as decoding each sequence alone. */
int st_decode_mixed(st_ctx_t *c, st_kv_t *const *kvs, const int32_t *tokens, int n_tok, const bool *want,
                    float *logits);

/* Converts n_tok rows of n_embd floats to the vec_dot format of weight type wt
 * (what st_experts_eval_converted takes); rows of st_row_size(vec_dot_type, n) bytes. */
void st_convert_activations(const st_ctx_t *c, st_type_t wt, const float *x, int n_tok, int n, void *dst);

#endif
