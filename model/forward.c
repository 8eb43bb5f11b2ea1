/* The SmallThinker forward pass, one batch of tokens of one
 * sequence at a time. Read st_decode() top to bottom: embedding, then per
 * layer the router on the raw input, attention (RMSNorm, q/k/v, RoPE or NoPE,
 * global or sliding-window causal attention, output projection, residual),
 * the MoE (RMSNorm, experts, weighted sum, residual); then the output head.
 *
 * Numerics follow llama.cpp's CPU backend where it matters for matching its
 * logits: activations are converted to the weight type's vec_dot format
 * (Q8_0 for Q4_0/Q5_0/Q8_0 weights, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants), RMSNorm sums in double, q and the
 * attention probabilities are rounded to F16 when the KV cache is F16 (ggml converts them for its F16 matmuls), expert
 * outputs are summed in routing order.
 *
 * Dimension letters (model.h): E n_embd, F n_ff_exp, X n_expert, K
 * n_expert_used, L n_layer, B n_batch, N nodes, V n_vocab, D head_dim, H n_head.
 */
#include "forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "forward_internal.h"
#include "moe.h"
#include "st_log.h"

st_ctx_params_t st_ctx_default_params(void) {
    st_ctx_params_t p = {.n_ctx = 4096, .n_batch = 64, .n_threads = st_cpu_count(), .kv_type = ST_TYPE_F16};
    return p;
}

static void *s_alloc(size_t n, size_t size, bool *ok) {
    void *p = st_calloc(n ? n : 1, size);
    if (!p) *ok = false;
    return p;
}

static size_t s_max(size_t a, size_t b) { return a > b ? a : b; }

/* Bytes of one activation row converted for any weight of the model, for widths up to n. */
static size_t s_conv_row_bytes(int64_t n) {
    size_t b = (size_t)n * sizeof(float);
    const st_type_t fmts[] = {ST_TYPE_Q8_0, ST_TYPE_Q8_1, ST_TYPE_Q8_K, ST_TYPE_F16, ST_TYPE_BF16};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        const st_type_traits_t *t = st_type_traits(fmts[i]);
        size_t nb = ((size_t)n + (size_t)t->blck - 1) / (size_t)t->blck;
        b = s_max(b, nb * t->size);
    }
    return b;
}

/* m may be a shell with only cfg set (st-node): then st_decode is unavailable
 * and only st_experts_eval works. */
st_ctx_t *st_ctx_new(const st_model_t *m, const st_ctx_params_t *params) {
    st_ctx_params_t p = params ? *params : st_ctx_default_params();
    if (p.n_threads < 1) p.n_threads = st_cpu_count();
    if (p.n_batch < 1 || p.n_batch > 4096 || p.n_ctx < 1 || p.n_ctx > (1 << 24)) {
        st_fail(ST_EINVAL, "n_batch %d / n_ctx %d out of range", p.n_batch, p.n_ctx);
        return NULL;
    }
    if (p.kv_type != ST_TYPE_F16 && p.kv_type != ST_TYPE_F32) {
        st_fail(ST_EINVAL, "KV cache type must be F16 or F32");
        return NULL;
    }
    st_ctx_t *c = st_calloc(1, sizeof *c);
    if (!c) {
        st_fail(ST_ENOMEM, "no memory for a context");
        return NULL;
    }
    const st_config_t *cfg = &m->cfg;
    c->m = m;
    c->p = p;
    c->k = m->kernels ? m->kernels : st_kernels_select(); /* packed weights need their table */
    c->pool = st_pool_new(p.n_threads);
    bool ok = c->pool != NULL;
    size_t B = (size_t)p.n_batch, K = (size_t)cfg->n_expert_used;
    size_t nq = (size_t)cfg->n_head * cfg->head_dim, nkv = (size_t)cfg->n_head_kv * cfg->head_dim;
    size_t widest = s_max(s_max((size_t)cfg->n_embd, nq), (size_t)cfg->n_ff_exp);
    c->x = s_alloc(B * cfg->n_embd, sizeof(float), &ok);
    c->xn = s_alloc(B * widest, sizeof(float), &ok);
    c->q = s_alloc(B * nq, sizeof(float), &ok);
    c->kx = s_alloc(B * nkv, sizeof(float), &ok);
    c->vx = s_alloc(B * nkv, sizeof(float), &ok);
    c->attn = s_alloc(B * nq, sizeof(float), &ok);
    c->proj = s_alloc(B * cfg->n_embd, sizeof(float), &ok);
    c->moe_out = s_alloc(B * cfg->n_embd, sizeof(float), &ok);
    c->router = s_alloc(B * cfg->n_expert, sizeof(float), &ok);
    c->ids = s_alloc(B * K, sizeof(int32_t), &ok);
    c->wts = s_alloc(B * K, sizeof(float), &ok);
    c->xq_row = s_conv_row_bytes((int64_t)widest);
    c->xq = s_alloc(B * K, c->xq_row, &ok);
    c->pair_tok = s_alloc(B * K, sizeof(int), &ok);
    c->pair_of = s_alloc(B * K, sizeof(int), &ok);
    c->exp_start = s_alloc((size_t)cfg->n_expert + 1, sizeof(int), &ok);
    c->exp_fill = s_alloc((size_t)cfg->n_expert, sizeof(int), &ok);
    c->part_bounds = s_alloc(ST_MAX_PARTS + 1, sizeof(int), &ok);
    c->tok_kv = s_alloc(B, sizeof(st_kv_t *), &ok);
    c->tok_pos = s_alloc(B, sizeof(int), &ok);
    c->out_rows = s_alloc(B, sizeof(int32_t), &ok);
    c->head_defer = s_alloc(B, sizeof(bool), &ok);
    c->head_stash = s_alloc(B, sizeof(int), &ok);
    c->pair_tokidx = s_alloc(B * K, sizeof(int32_t), &ok);
    c->yout = s_alloc(B * K * cfg->n_embd, sizeof(float), &ok);
    if (m->layers) { /* a loaded model: pointers to every expert matrix, by layer */
        size_t X = (size_t)cfg->n_expert;
        c->exp_ptrs = s_alloc((size_t)cfg->n_layer * 3 * X, sizeof(void *), &ok);
        for (int il = 0; ok && il < cfg->n_layer; il++) {
            const st_layer_t *L = &m->layers[il];
            for (size_t e = 0; e < X; e++) {
                c->exp_ptrs[((size_t)il * 3 + 0) * X + e] = st_weight_row(&L->gate_exps, (int64_t)e, 0);
                c->exp_ptrs[((size_t)il * 3 + 1) * X + e] = st_weight_row(&L->up_exps, (int64_t)e, 0);
                c->exp_ptrs[((size_t)il * 3 + 2) * X + e] = st_weight_row(&L->down_exps, (int64_t)e, 0);
            }
        }
    }
    c->gate = s_alloc(B * K * cfg->n_ff_exp, sizeof(float), &ok);
    c->up = s_alloc(B * K * cfg->n_ff_exp, sizeof(float), &ok);
    c->zq = s_alloc(B * K, c->xq_row, &ok);
    c->ybuf = s_alloc(B * K * cfg->n_embd, sizeof(float), &ok);
    c->scratch_n =
        s_max(s_max((size_t)p.n_ctx, (size_t)cfg->head_dim), s_max((size_t)cfg->n_embd, (size_t)cfg->n_ff_exp));
    c->scratch = s_alloc((size_t)p.n_threads * c->scratch_n, sizeof(float), &ok);
    if (!ok) {
        st_ctx_destroy(&c);
        st_fail(ST_ENOMEM, "no memory for the forward-pass buffers (n_batch %d)", p.n_batch);
        return NULL;
    }
    return c;
}

void st_ctx_destroy(st_ctx_t **cp) {
    if (!cp || !*cp) return;
    st_ctx_t *c = *cp;
    st_pool_destroy(&c->pool);
    float *bufs[] = {c->x,      c->xn,  c->q,    c->kx, c->vx,   c->attn,    c->proj, c->moe_out,
                     c->router, c->wts, c->gate, c->up, c->ybuf, c->scratch, c->yout};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(c->ids);
    free(c->xq);
    free(c->zq);
    free(c->pair_tok);
    free(c->pair_of);
    free(c->exp_start);
    free(c->exp_fill);
    free(c->part_bounds);
    free(c->tok_kv);
    free(c->tok_pos);
    free(c->out_rows);
    free(c->head_defer);
    free(c->head_stash);
    free(c->pair_tokidx);
    free(c->exp_ptrs);
    free(c);
    *cp = NULL;
}

const st_ctx_params_t *st_ctx_params(const st_ctx_t *c) { return &c->p; }
const st_model_t *st_ctx_model(const st_ctx_t *c) { return c->m; }
const st_forward_stats_t *st_ctx_stats(const st_ctx_t *c) { return &c->stats; }

void st_ctx_set_moe(st_ctx_t *c, const st_moe_backend_t *b) {
    if (b)
        c->moe = *b;
    else
        memset(&c->moe, 0, sizeof c->moe);
}

void st_ctx_set_head(st_ctx_t *c, const st_head_backend_t *b) {
    if (b)
        c->head = *b;
    else
        memset(&c->head, 0, sizeof c->head);
    c->head_deferred = false;
}

void st_ctx_defer_head(st_ctx_t *c, const bool *rows, int n) {
    n = !rows || n < 0 ? 0 : n > c->p.n_batch ? c->p.n_batch : n;
    if (n) memcpy(c->head_defer, rows, (size_t)n * sizeof *rows);
    c->n_head_defer = n;
    c->head_deferred = false;
}

int st_ctx_head_stashed(const st_ctx_t *c, int row) {
    return c->head_deferred && row >= 0 && row < c->p.n_batch ? c->head_stash[row] : -1;
}

int st_ctx_sample_stashed(st_ctx_t *c, st_sampler_t *const *smp, const int *idx, int n, int32_t *tok) {
    if (!c->head_deferred) return st_fail(ST_EINVAL, "the last step stashed no hidden state");
    return c->head.sample(c->head.arg, smp, idx, n, tok);
}

void st_ctx_park(st_ctx_t *c) { st_pool_park(c->pool); }

/* ---- building blocks ---------------------------------------------------- */

/* y = (x / rms(x)) * w, summing squares in double like ggml. */
static void s_rmsnorm(const float *x, const float *w, int n, float eps, float *y) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++) y[i] = (x[i] * scale) * w[i];
}

/* Converts n_tok rows of n floats (x_stride apart) into the vec_dot format of
 * weight type wt, rows c->xq_row bytes apart in dst. */
void st_convert_rows(const st_ctx_t *c, st_type_t wt, const float *x, size_t x_stride, int n_tok, int n, uint8_t *dst) {
    st_type_t vt = st_type_traits(wt)->vec_dot_type;
    for (int t = 0; t < n_tok; t++) c->k->from_float[vt](n, x + (size_t)t * x_stride, dst + (size_t)t * c->xq_row);
}

void st_convert_activations(const st_ctx_t *c, st_type_t wt, const float *x, int n_tok, int n, void *dst) {
    st_type_t vt = st_type_traits(wt)->vec_dot_type;
    size_t row = st_row_size(vt, n);
    for (int t = 0; t < n_tok; t++) c->k->from_float[vt](n, x + (size_t)t * n, (uint8_t *)dst + (size_t)t * row);
}

#define LINEAR_MAX_OUTS 3
#define UNIT ST_PACK_MAX_ROWS /* rows: linear jobs are cut at its multiples, whole groups of any packed layout */

/* One matrix of a linear job: y[t] = W_e · x[t], y rows y_stride floats apart. */
typedef struct {
    const st_weight_t *w;
    int64_t e;
    float *y;
    size_t y_stride;
} linear_out_t;

typedef struct {
    const st_kernels_t *k;
    const uint8_t *x;
    size_t x_stride;
    int n_tok;
    int n_out;
    linear_out_t out[LINEAR_MAX_OUTS];
    int first[LINEAR_MAX_OUTS + 1]; /* first 16-row unit of each matrix, end to end (whole packed groups) */
    const int *bounds;              /* parts of those units */
} linear_job_t;

static void s_linear_part(void *arg, int part, int ith) {
    (void)ith;
    const linear_job_t *j = arg;
    for (int o = 0; o < j->n_out; o++) {
        const int g0 = j->bounds[part] > j->first[o] ? j->bounds[part] : j->first[o];
        const int g1 = j->bounds[part + 1] < j->first[o + 1] ? j->bounds[part + 1] : j->first[o + 1];
        if (g0 >= g1) continue;
        const linear_out_t *u = &j->out[o];
        const int n = (int)u->w->n_rows, r0 = UNIT * (g0 - j->first[o]);
        const int r1 = UNIT * (g1 - j->first[o]) < n ? UNIT * (g1 - j->first[o]) : n;
        (u->w->pack_rows ? st_matmul_packed : st_matmul)(j->k, u->w->type, st_weight_row(u->w, u->e, 0),
                                                         (int)u->w->n_cols, r0, r1, j->x, j->x_stride, j->n_tok, u->y,
                                                         u->y_stride);
    }
}

/* The matmuls of n_out matrices that read the same rows, already converted
 * into c->xq, as one job: one barrier instead of n_out, and the prefetchers
 * run from one matrix into the next. Results do not depend on the split (see
 * st_matmul). */
static void s_linear_converted_n(st_ctx_t *c, int n_out, const linear_out_t *out, int n_tok) {
    linear_job_t j = {
        .k = c->k, .x = c->xq, .x_stride = c->xq_row, .n_tok = n_tok, .n_out = n_out, .bounds = c->part_bounds};
    for (int o = 0; o < n_out; o++) {
        j.out[o] = out[o];
        j.first[o + 1] = j.first[o] + ((int)out[o].w->n_rows + UNIT - 1) / UNIT;
    }
    const int n = st_split_guided(j.first[n_out], st_pool_size(c->pool), 64 / UNIT, c->part_bounds, ST_MAX_PARTS);
    st_pool_for(c->pool, n, s_linear_part, &j);
}

static void s_linear_converted(st_ctx_t *c, const st_weight_t *w, int64_t e, int n_tok, float *y, size_t y_stride) {
    const linear_out_t out = {w, e, y, y_stride};
    s_linear_converted_n(c, 1, &out, n_tok);
}

/* y[t] = W_e · x[t] for n_tok rows of x (n_cols floats each, contiguous). */
void st_linear(st_ctx_t *c, const st_weight_t *w, int64_t e, const float *x, int n_tok, float *y, size_t y_stride) {
    st_convert_rows(c, w->type, x, (size_t)w->n_cols, n_tok, (int)w->n_cols, c->xq);
    s_linear_converted(c, w, e, n_tok, y, y_stride);
}

void st_ctx_head_rows(st_ctx_t *c, const float *xn, int n, int r0, int r1, float *y, size_t y_stride) {
    st_weight_t w = c->m->output; /* a view of rows [r0, r1): packed groups of 16 rows at most stay whole */
    w.data += (size_t)r0 * w.row_bytes;
    w.n_rows = r1 - r0;
    w.n_mat = 1;
    w.mat_bytes = (size_t)w.n_rows * w.row_bytes;
    st_linear(c, &w, 0, xn, n, y + r0, y_stride);
}

static bool s_same_input_format(st_type_t a, st_type_t b) {
    return st_type_traits(a)->vec_dot_type == st_type_traits(b)->vec_dot_type;
}

/* NEOX RoPE rotation factors for position pos: theta advanced by repeated
 * multiplication as ggml does, the same for every head, so computed once. */
static void s_rope_factors(int d, int pos, float base, float *cs, float *sn) {
    const float theta_scale = powf(base, -2.0f / (float)d);
    float theta = (float)pos;
    for (int i = 0; i < d / 2; i++) {
        cs[i] = cosf(theta);
        sn[i] = sinf(theta);
        theta *= theta_scale;
    }
}

/* NEOX RoPE in place on n_heads heads of d dims. */
static void s_rope(float *v, int n_heads, int d, const float *cs, const float *sn) {
    for (int h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * d;
        for (int i = 0; i < d / 2; i++) {
            const float x0 = x[i], x1 = x[i + d / 2];
            x[i] = x0 * cs[i] - x1 * sn[i];
            x[i + d / 2] = x0 * sn[i] + x1 * cs[i];
        }
    }
}

static void s_kv_put(st_kv_t *kv, void *base, size_t idx, const float *src, size_t n) {
    if (kv->type == ST_TYPE_F16)
        for (size_t i = 0; i < n; i++) ((uint16_t *)base)[idx + i] = st_fp32_to_fp16(src[i]);
    else
        memcpy((float *)base + idx, src, n * sizeof(float));
}

typedef struct {
    st_ctx_t *c;
    int layer;
    int n_tok; /* token t belongs to cache c->tok_kv[t] at position c->tok_pos[t] */
} attn_job_t;

/* Attention for one (token, head) item: scores over the allowed past
 * positions, softmax, weighted sum of values. Items are taken last token
 * first: causal rows grow with the position, and the longest ones should not
 * be left for the end of the job. With an F16 cache,
 * q is rounded to F16 and dotted with the F16 keys, and the probabilities are
 * rounded to F16 before weighting the values: what ggml's F16 matmuls do. */
static void s_attn_item(void *arg, int item, int ith) {
    const attn_job_t *j = arg;
    const st_ctx_t *c = j->c;
    const st_config_t *cfg = &c->m->cfg;
    const int D = cfg->head_dim, H = cfg->n_head, group = cfg->n_head / cfg->n_head_kv;
    const st_type_t kt = c->p.kv_type; /* every cache of a context has its type */
    const bool f16 = kt == ST_TYPE_F16;
    const size_t esz = f16 ? 2 : 4, row_bytes = (size_t)cfg->n_head_kv * D * esz;
    const st_vec_dot_fn dot = c->k->vec_dot[kt];
    const float scale = 1.0f / sqrtf((float)D);
    float *scores = c->scratch + (size_t)ith * c->scratch_n;
    uint8_t qh[1024 * 4];
    const int it = j->n_tok * H - 1 - item, t = it / H, h = it % H, g = h / group;
    const st_kv_layer_t *L = &c->tok_kv[t]->layers[j->layer];
    const int pos = c->tok_pos[t];
    const int first = cfg->is_swa[j->layer] && pos - cfg->n_swa + 1 > 0 ? pos - cfg->n_swa + 1 : 0;
    c->k->from_float[kt](D, c->q + (size_t)t * H * D + (size_t)h * D, qh);
    const uint8_t *kbase = (const uint8_t *)L->k + (size_t)g * D * esz;
    const uint8_t *vbase = (const uint8_t *)L->v + (size_t)g * D * esz;
    float mx = -INFINITY;
    for (int p = first; p <= pos; p++) {
        float s;
        dot(D, &s, kbase + (size_t)(p % L->cap) * row_bytes, qh);
        s *= scale;
        scores[p - first] = s;
        if (s > mx) mx = s;
    }
    const int n = pos - first + 1;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        const float e = expf(scores[i] - mx);
        scores[i] = e;
        sum += (double)e;
    }
    const float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) scores[i] *= inv;
    if (f16) /* through fp16 and back, a stretch at a time (the kernels round as st_fp32_to_fp16) */
        for (int i = 0; i < n; i += (int)(sizeof qh / 2)) {
            const int m = n - i < (int)(sizeof qh / 2) ? n - i : (int)(sizeof qh / 2);
            c->k->from_float[ST_TYPE_F16](m, scores + i, qh);
            c->k->to_float[ST_TYPE_F16](m, qh, scores + i);
        }
    /* o = sum of a_p * v_p, position by position (the kernel multiplies, then adds) */
    float acc[1024];
    for (int i = 0; i < D; i++) acc[i] = 0.0f;
    for (int p = first; p <= pos; p++)
        c->k->axpy[kt](D, scores[p - first], vbase + (size_t)(p % L->cap) * row_bytes, acc);
    memcpy(c->attn + (size_t)t * H * D + (size_t)h * D, acc, (size_t)D * sizeof(float));
}

/* Attention block of one layer for n_tok tokens: c->x -> c->x (residual added). */
static void s_attention(st_ctx_t *c, int il, int n_tok) {
    const st_model_t *m = c->m;
    const st_config_t *cfg = &m->cfg;
    const st_layer_t *L = &m->layers[il];
    const int E = cfg->n_embd, D = cfg->head_dim;
    const size_t nq = (size_t)cfg->n_head * D, nkv = (size_t)cfg->n_head_kv * D;

    for (int t = 0; t < n_tok; t++)
        s_rmsnorm(c->x + (size_t)t * E, (const float *)L->attn_norm.data, E, cfg->rms_eps, c->xn + (size_t)t * E);
    /* q, k and v read the same normed rows: converted once, one job, when the formats agree */
    if (s_same_input_format(L->wq.type, L->wk.type) && s_same_input_format(L->wq.type, L->wv.type)) {
        const linear_out_t qkv[3] = {{&L->wq, 0, c->q, nq}, {&L->wk, 0, c->kx, nkv}, {&L->wv, 0, c->vx, nkv}};
        st_convert_rows(c, L->wq.type, c->xn, (size_t)E, n_tok, E, c->xq);
        s_linear_converted_n(c, 3, qkv, n_tok);
    } else {
        st_linear(c, &L->wq, 0, c->xn, n_tok, c->q, nq);
        st_linear(c, &L->wk, 0, c->xn, n_tok, c->kx, nkv);
        st_linear(c, &L->wv, 0, c->xn, n_tok, c->vx, nkv);
    }

    const float base = cfg->is_swa[il] ? cfg->rope_base_swa : cfg->rope_base;
    for (int t = 0; t < n_tok; t++) {
        st_kv_t *kv = c->tok_kv[t];
        st_kv_layer_t *KL = &kv->layers[il];
        const int pos = c->tok_pos[t];
        if (cfg->use_rope[il]) {
            float *cs = c->scratch, *sn = c->scratch + D / 2; /* thread 0's scratch is free between jobs */
            s_rope_factors(D, pos, base, cs, sn);
            s_rope(c->q + (size_t)t * nq, cfg->n_head, D, cs, sn);
            s_rope(c->kx + (size_t)t * nkv, cfg->n_head_kv, D, cs, sn);
        }
        const size_t slot = (size_t)(pos % KL->cap) * kv->row;
        s_kv_put(kv, KL->k, slot, c->kx + (size_t)t * nkv, nkv);
        s_kv_put(kv, KL->v, slot, c->vx + (size_t)t * nkv, nkv);
    }

    attn_job_t j = {c, il, n_tok};
    st_pool_for(c->pool, n_tok * cfg->n_head, s_attn_item, &j);

    st_linear(c, &L->wo, 0, c->attn, n_tok, c->proj, (size_t)E);
    for (size_t i = 0; i < (size_t)n_tok * E; i++) c->x[i] += c->proj[i];
}

/* Moves the per-token buffers by dt rows: a micro-batch starting at row t0 is
 * shifted by t0, runs the layer code unchanged on rows 0..n, and is shifted
 * back by -t0. Rows are independent in every step it runs (norms, matmuls,
 * attention of distinct sequences, routing), so its tokens get the numbers
 * they get in the whole batch. */
static void s_shift_rows(st_ctx_t *c, ptrdiff_t dt) {
    const st_config_t *cfg = &c->m->cfg;
    const ptrdiff_t E = cfg->n_embd, nq = (ptrdiff_t)cfg->n_head * cfg->head_dim,
                    nkv = (ptrdiff_t)cfg->n_head_kv * cfg->head_dim, K = cfg->n_expert_used;
    c->x += dt * E, c->xn += dt * E, c->proj += dt * E, c->moe_out += dt * E;
    c->q += dt * nq, c->attn += dt * nq, c->kx += dt * nkv, c->vx += dt * nkv;
    c->router += dt * cfg->n_expert, c->ids += dt * K, c->wts += dt * K;
    c->tok_kv += dt, c->tok_pos += dt;
}

/* Whether the chunk's tokens are each of another sequence (a decode step). */
static bool s_one_per_seq(const st_ctx_t *c, int n_tok) {
    for (int i = 0; i < n_tok; i++)
        for (int j = 0; j < i; j++)
            if (c->tok_kv[i] == c->tok_kv[j]) return false;
    return true;
}

/* Whether a decode chunk can run as two overlapped micro-batches: the backend
 * can (begin/end); its tokens being of distinct sequences, neither
 * micro-batch's attention needs the other's keys of the same layer. */
static bool s_can_overlap(const st_ctx_t *c, int n_tok, bool decode) {
    return c->moe.begin && c->moe.end && n_tok >= 2 && decode;
}

/* The layers for two micro-batches (rows [0, h) and [h, n_tok)) in a
 * ping-pong: per layer, micro-batch s takes its previous layer's expert
 * results, then routes, runs attention and sends its experts' work; the
 * other's attention runs while the backend computes. */
static int s_layers_overlapped(st_ctx_t *c, int n_tok, bool decode) {
    const st_config_t *cfg = &c->m->cfg;
    const int E = cfg->n_embd, h = n_tok / 2;
    const int t0[2] = {0, h}, n[2] = {h, n_tok - h};
    st_route_t route[2];
    int rc = 0;
    for (int il = 0; il <= cfg->n_layer && rc == 0; il++)
        for (int s = 0; s < 2 && rc == 0; s++) {
            s_shift_rows(c, t0[s]);
            if (il > 0 && (rc = c->moe.end(c->moe.arg, &route[s], c->moe_out)) == 0)
                for (size_t i = 0; i < (size_t)n[s] * E; i++) c->x[i] += c->moe_out[i];
            if (il < cfg->n_layer && rc == 0) {
                const st_layer_t *L = &c->m->layers[il];
                st_linear(c, &L->router, 0, c->x, n[s], c->router, (size_t)cfg->n_expert);
                st_moe_route(c, il, n[s], &route[s]);
                route[s].slot = s;
                route[s].n_step = n_tok;
                route[s].decode = decode;
                if (c->moe.prefetch) rc = c->moe.prefetch(c->moe.arg, &route[s]);
                if (rc == 0) {
                    s_attention(c, il, n[s]);
                    for (int t = 0; t < n[s]; t++)
                        s_rmsnorm(c->x + (size_t)t * E, (const float *)L->ffn_norm.data, E, cfg->rms_eps,
                                  c->xn + (size_t)t * E);
                    rc = c->moe.begin(c->moe.arg, &route[s], c->xn);
                }
            }
            s_shift_rows(c, -t0[s]);
        }
    return rc;
}

/* The output head for the n_out normed hidden states in c->xn: rows that
 * st_ctx_defer_head marked go to the backend's stash() (when it can draw),
 * the others' logits to their rows of logits. */
static int s_head(st_ctx_t *c, int n_out, float *logits) {
    const st_model_t *m = c->m;
    const size_t E = (size_t)m->cfg.n_embd, V = (size_t)m->cfg.n_vocab;
    int n_def = 0, n_whole = 0;
    const bool can = c->head.stash && c->head.sample;
    for (int t = 0; t < c->p.n_batch; t++)
        c->head_stash[t] = can && t < n_out && t < c->n_head_defer && c->head_defer[t] ? n_def++ : -1;
    c->head_deferred = false;
    if (n_def > 0) { /* stashed rows out (moe_out is free after the layers), the others packed in xn */
        for (int t = 0; t < n_out; t++)
            if (c->head_stash[t] >= 0)
                memcpy(c->moe_out + (size_t)c->head_stash[t] * E, c->xn + (size_t)t * E, E * sizeof(float));
            else if (n_whole++ != t)
                memmove(c->xn + (size_t)(n_whole - 1) * E, c->xn + (size_t)t * E, E * sizeof(float));
        int rc = c->head.stash(c->head.arg, c->moe_out, n_def);
        if (rc < 0) return rc;
        c->head_deferred = true;
    } else {
        n_whole = n_out;
    }
    if (n_whole > 0) {
        if (c->head.logits) {
            int rc = c->head.logits(c->head.arg, c->xn, n_whole, logits, V);
            if (rc < 0) return rc;
        } else {
            st_linear(c, &m->output, 0, c->xn, n_whole, logits, V);
        }
    }
    /* packed logits rows to their places, the last first (a row only moves down) */
    for (int t = n_out - 1, w = n_whole - 1; n_def > 0 && t >= 0 && w >= 0; t--) {
        if (c->head_stash[t] >= 0) continue;
        if (w != t) memmove(logits + (size_t)t * V, logits + (size_t)w * V, V * sizeof(float));
        w--;
    }
    return 0;
}

/* One chunk of at most n_batch tokens; token t goes to cache c->tok_kv[t] at
 * position c->tok_pos[t] (one sequence's prompt, one token of several, or a
 * mix). logits: NULL, or one row per token listed in c->out_rows[0..n_out). */
static int s_decode_chunk(st_ctx_t *c, const int32_t *tokens, int n_tok, float *logits, int n_out) {
    const st_model_t *m = c->m;
    const st_config_t *cfg = &m->cfg;
    const int E = cfg->n_embd;

    /* embedding */
    for (int t = 0; t < n_tok; t++)
        c->k->to_float[m->tok_embd.type](E, st_weight_row(&m->tok_embd, 0, tokens[t]), c->x + (size_t)t * E);

    const bool decode = s_one_per_seq(c, n_tok), overlap = s_can_overlap(c, n_tok, decode);
    if (overlap) {
        int rc = s_layers_overlapped(c, n_tok, decode);
        if (rc < 0) return rc;
    }
    for (int il = 0; !overlap && il < cfg->n_layer; il++) {
        const st_layer_t *L = &m->layers[il];
        /* router on the raw layer input, before attention */
        st_linear(c, &L->router, 0, c->x, n_tok, c->router, (size_t)cfg->n_expert);
        st_route_t route;
        st_moe_route(c, il, n_tok, &route);
        route.n_step = n_tok;
        route.decode = decode;
        if (c->moe.prefetch) {
            int rc = c->moe.prefetch(c->moe.arg, &route);
            if (rc < 0) return rc;
        }

        s_attention(c, il, n_tok);

        /* MoE on the normed post-attention state, then the residual */
        for (int t = 0; t < n_tok; t++)
            s_rmsnorm(c->x + (size_t)t * E, (const float *)L->ffn_norm.data, E, cfg->rms_eps, c->xn + (size_t)t * E);
        int rc = c->moe.compute ? c->moe.compute(c->moe.arg, &route, c->xn, c->moe_out)
                                : st_moe_local(c, &route, c->xn, c->moe_out);
        if (rc < 0) return rc;
        for (size_t i = 0; i < (size_t)n_tok * E; i++) c->x[i] += c->moe_out[i];
    }

    /* output head: the listed rows only */
    if (logits && n_out > 0) {
        for (int t = 0; t < n_out; t++)
            s_rmsnorm(c->x + (size_t)c->out_rows[t] * E, (const float *)m->output_norm.data, E, cfg->rms_eps,
                      c->xn + (size_t)t * E);
        int rc = s_head(c, n_out, logits);
        if (rc < 0) return rc;
    }
    for (int t = 0; t < n_tok; t++) c->tok_kv[t]->pos = c->tok_pos[t] + 1;
    c->stats.tokens += (uint64_t)n_tok;
    return 0;
}

int st_decode(st_ctx_t *c, st_kv_t *kv, const int32_t *tokens, int n_tok, float *logits, bool all_logits) {
    const st_config_t *cfg = &c->m->cfg;
    if (n_tok < 1) return st_fail(ST_EINVAL, "no tokens");
    if (n_tok > kv->n_ctx - kv->pos)
        return st_fail(ST_ERANGE, "context full: %d tokens + %d new > %d", kv->pos, n_tok, kv->n_ctx);
    for (int t = 0; t < n_tok; t++)
        if (tokens[t] < 0 || tokens[t] >= cfg->n_vocab)
            return st_fail(ST_ERANGE, "token id %d not in 0..%d", tokens[t], cfg->n_vocab - 1);
    for (int done = 0; done < n_tok;) {
        int n = n_tok - done < c->p.n_batch ? n_tok - done : c->p.n_batch;
        bool last = done + n == n_tok;
        float *out = NULL;
        if (logits && all_logits)
            out = logits + (size_t)done * cfg->n_vocab;
        else if (logits && last)
            out = logits;
        for (int t = 0; t < n; t++) {
            c->tok_kv[t] = kv;
            c->tok_pos[t] = kv->pos + t;
            c->out_rows[t] = t;
        }
        int n_out = !out ? 0 : all_logits ? n : 1;
        if (out && !all_logits) c->out_rows[0] = n - 1;
        int rc = s_decode_chunk(c, tokens + done, n, out, n_out);
        if (rc < 0) return rc;
        done += n;
    }
    return 0;
}

int st_decode_batch(st_ctx_t *c, st_kv_t *const *kvs, const int32_t *tokens, int n_seq, float *logits) {
    for (int i = 0; i < n_seq; i++)
        for (int j = 0; j < i; j++)
            if (kvs[j] == kvs[i]) return st_fail(ST_EINVAL, "sequence %d appears twice in one batch", i);
    return st_decode_mixed(c, kvs, tokens, n_seq, NULL, logits);
}

int st_decode_mixed(st_ctx_t *c, st_kv_t *const *kvs, const int32_t *tokens, int n_tok, const bool *want,
                    float *logits) {
    const st_config_t *cfg = &c->m->cfg;
    if (n_tok < 1 || n_tok > c->p.n_batch) return st_fail(ST_EINVAL, "%d tokens (1..%d)", n_tok, c->p.n_batch);
    int n_out = 0;
    for (int i = 0; i < n_tok; i++) {
        if (tokens[i] < 0 || tokens[i] >= cfg->n_vocab)
            return st_fail(ST_ERANGE, "token id %d not in 0..%d", tokens[i], cfg->n_vocab - 1);
        int pos = kvs[i]->pos; /* after this sequence's earlier tokens in the chunk */
        for (int j = 0; j < i; j++) pos += kvs[j] == kvs[i];
        if (pos >= kvs[i]->n_ctx) return st_fail(ST_ERANGE, "token %d: context full (%d)", i, kvs[i]->n_ctx);
        c->tok_kv[i] = kvs[i];
        c->tok_pos[i] = pos;
        if (!want || want[i]) c->out_rows[n_out++] = i;
    }
    return s_decode_chunk(c, tokens, n_tok, logits, n_out);
}
