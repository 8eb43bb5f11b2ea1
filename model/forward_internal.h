/* Private structures shared by forward.c, moe.c and kv_cache.c. */
#ifndef ST_FORWARD_INTERNAL_H
#define ST_FORWARD_INTERNAL_H

#include "forward.h"
#include "threadpool.h"

typedef struct {
    int cap;     /* slots: n_ctx, or the SWA ring size */
    void *k, *v; /* cap x row elements of the cache type */
} st_kv_layer_t;

struct st_kv {
    int n_ctx;
    int pos;
    int n_layer;
    int n_swa; /* the model's window: what a ring layer's next position looks back to */
    st_type_t type;
    size_t row; /* elements per slot: n_head_kv * head_dim */
    st_kv_layer_t *layers;
};

/* Parts of one pool job at most (see st_split_guided): the context's
 * part_bounds holds ST_MAX_PARTS + 1 entries, used by one job at a time. */
#define ST_MAX_PARTS 256

struct st_ctx {
    const st_model_t *m;
    st_ctx_params_t p;
    const st_kernels_t *k;
    st_pool_t *pool;
    st_moe_backend_t moe;   /* compute == NULL: local */
    st_head_backend_t head; /* logits == NULL: local */
    bool *head_defer;       /* n_batch: output rows st_ctx_defer_head marks */
    int n_head_defer;       /* how many of them it set (0: none) */
    int *head_stash;        /* n_batch: per output row of the last step, its stashed index or -1 */
    bool head_deferred;     /* the last step stashed rows: st_ctx_sample_stashed asks the backend */
    st_forward_stats_t stats;
    int *part_bounds; /* the current job's parts (ST_MAX_PARTS + 1) */

    /* activations, n_batch rows each */
    float *x;       /* residual stream, n_embd */
    float *xn;      /* normed input of a matmul, max(n_embd, q width) */
    float *q;       /* n_head*head_dim */
    float *kx, *vx; /* n_head_kv*head_dim */
    float *attn;    /* n_head*head_dim */
    float *proj;    /* n_embd */
    float *moe_out; /* n_embd */
    float *router;  /* n_expert */
    int32_t *ids;   /* n_expert_used */
    float *wts;     /* n_expert_used */
    uint8_t *xq;    /* activations converted for a matmul: n_batch*k rows of the widest row */
    size_t xq_row;  /* bytes of one converted row (max over formats and widths) */

    /* experts, n_batch*k (token, expert) pairs */
    int *pair_tok;         /* token of each pair, pairs grouped by expert */
    int *pair_of;          /* for (t, j): index of its pair */
    int *exp_start;        /* n_expert+1: pairs of expert e are [exp_start[e], exp_start[e+1]) */
    int *exp_fill;         /* n_expert: next free pair slot of each expert while grouping */
    int32_t *pair_tokidx;  /* token of pair i in routing order (t*k + j -> t) */
    float *yout;           /* pairs x n_embd: expert outputs in routing order */
    const void **exp_ptrs; /* n_layer x 3 x n_expert: gate, up, down matrix of each expert (loaded model) */
    float *gate, *up;      /* pairs x n_ff_exp */
    uint8_t *zq;           /* pairs x xq_row: relu(gate) * up converted for down */
    float *ybuf;           /* pairs x n_embd */

    st_kv_t **tok_kv;  /* n_batch: cache of each token of the current chunk */
    int *tok_pos;      /* n_batch: its position */
    int32_t *out_rows; /* n_batch: tokens of the chunk whose logits are wanted */

    float *scratch; /* per thread: max(n_ctx, n_embd) floats */
    size_t scratch_n;
};

/* Converts n_tok rows of n floats (x_stride apart) to weight type wt's vec_dot
 * format, rows c->xq_row bytes apart in dst. */
void st_convert_rows(const st_ctx_t *c, st_type_t wt, const float *x, size_t x_stride, int n_tok, int n, uint8_t *dst);
/* y[t] = W_e . x[t] for n_tok contiguous rows of x; y rows y_stride floats apart. Uses c->xq. */
void st_linear(st_ctx_t *c, const st_weight_t *w, int64_t e, const float *x, int n_tok, float *y, size_t y_stride);

/* Routing (moe.c): picks the experts of n_tok tokens from c->router
 * (n_tok x n_expert logits; top-k, sigmoid or softmax weights renormalised over
 * the k) into c->ids / c->wts and describes them in *r. */
void st_moe_route(st_ctx_t *c, int layer, int n_tok, st_route_t *r);

#endif
