/* MoE: routing and the expert computation.
 *
 * Routing follows llama.cpp's build_moe_ffn: probabilities (softmax over all
 * experts, or sigmoid), the k largest taken in descending order, weights
 * renormalised over the k (sum clamped at 2^-14), optional scale. Selection
 * runs on the logits (same order, no sigmoid saturation ties).
 *
 * Experts: (token, expert) pairs are grouped by expert so each expert matrix
 * is streamed once per batch: gate and up rows for all of an expert's
 * tokens, z = relu(gate) * up, then down. Outputs are weighted and summed per
 * token in routing order, as ggml adds its expert views (st_moe_combine).
 *
 * Dimension letters (model.h): E n_embd, F n_ff_exp, X n_expert, K
 * n_expert_used, L n_layer, B n_batch, N nodes, V n_vocab, D head_dim, H n_head.
 */
#include "moe.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "forward_internal.h"
#include "st_log.h"

void st_moe_route(st_ctx_t *c, int layer, int n_tok, st_route_t *r) {
    const st_config_t *cfg = &c->m->cfg;
    const int X = cfg->n_expert, K = cfg->n_expert_used;
    float *prob = c->scratch; /* X floats; thread 0's scratch is free between jobs */
    for (int t = 0; t < n_tok; t++) {
        const float *lg = c->router + (size_t)t * X;
        if (cfg->gating == ST_GATING_SOFTMAX) {
            float mx = -INFINITY;
            for (int e = 0; e < X; e++) mx = lg[e] > mx ? lg[e] : mx;
            double sum = 0.0;
            for (int e = 0; e < X; e++) sum += (double)(prob[e] = expf(lg[e] - mx));
            const float inv = (float)(1.0 / sum);
            for (int e = 0; e < X; e++) prob[e] *= inv;
        } else {
            for (int e = 0; e < X; e++) prob[e] = 1.0f / (1.0f + expf(-lg[e]));
        }
        int32_t *ids = c->ids + (size_t)t * K;
        float *w = c->wts + (size_t)t * K;
        /* top-k by logit, descending; ties keep the lower id first */
        for (int j = 0; j < K; j++) {
            int best = -1;
            for (int e = 0; e < X; e++) {
                bool taken = false;
                for (int i = 0; i < j; i++) taken |= ids[i] == e;
                if (!taken && (best < 0 || lg[e] > lg[best])) best = e;
            }
            ids[j] = best;
        }
        float sum = 0.0f;
        for (int j = 0; j < K; j++) sum += (w[j] = prob[ids[j]]);
        if (sum < 6.103515625e-5f) sum = 6.103515625e-5f;
        for (int j = 0; j < K; j++) w[j] /= sum;
        if (cfg->expert_weights_scale != 0.0f && cfg->expert_weights_scale != 1.0f)
            for (int j = 0; j < K; j++) w[j] *= cfg->expert_weights_scale;
    }
    r->layer = layer;
    r->n_tok = n_tok;
    r->k = K;
    r->ids = c->ids;
    r->w = c->wts;
    r->slot = 0;
}

st_expert_set_t st_model_expert_set(const st_ctx_t *c, int il) {
    const st_layer_t *L = &c->m->layers[il];
    const size_t X = (size_t)c->m->cfg.n_expert;
    st_expert_set_t s = {.gate_type = L->gate_exps.type,
                         .up_type = L->up_exps.type,
                         .down_type = L->down_exps.type,
                         .down_transposed = L->down_transposed,
                         .gate = (const void *const *)c->exp_ptrs + (size_t)il * 3 * X,
                         .up = (const void *const *)c->exp_ptrs + ((size_t)il * 3 + 1) * X,
                         .down = (const void *const *)c->exp_ptrs + ((size_t)il * 3 + 2) * X,
                         .gate_packed = L->gate_exps.pack_rows > 0,
                         .up_packed = L->up_exps.pack_rows > 0,
                         .down_packed = L->down_exps.pack_rows > 0};
    return s;
}

/* Rows of an expert matrix are shared between threads in granules (32 rows, or
 * ROW_CHUNK rounded to whole quant blocks for a transposed down). */
#define ROW_CHUNK 64
_Static_assert(32 % ST_PACK_MAX_ROWS == 0, "granules of 32 rows are whole packed groups");

typedef struct {
    st_ctx_t *c;
    const st_expert_set_t *set;
    int phase; /* 0: gate+up, 1: down */
    int n_rows;
    int gran;                /* rows per granule: 32, or whole quant blocks of a transposed down */
    int ng;                  /* granules per expert */
    bool z_in_threads;       /* phase 0 also forms z = relu(gate) * up and converts it for down */
    _Atomic uint64_t active; /* phase 0 with z_in_threads: neurons with z != 0 */
    const int *act;          /* the experts with pairs, in id order */
    const int *bounds;       /* parts of the granules of all of them, end to end */
} expert_job_t;

/* z = relu(gate) * up for neurons [r0, r1) of the np pairs from p0 (kept in
 * gate); with zq, also converted for down, block by block (r0 and r1 on block
 * bounds of that format). Returns how many z are not zero. */
static uint64_t s_form_z(st_ctx_t *c, const st_expert_set_t *set, int p0, int np, int r0, int r1, bool convert) {
    const int F = c->m->cfg.n_ff_exp;
    uint64_t active = 0;
    const st_type_t vt = st_type_traits(set->down_type)->vec_dot_type;
    const st_type_traits_t *vtr = st_type_traits(vt);
    for (int p = p0; p < p0 + np; p++) {
        float *g = c->gate + (size_t)p * F;
        const float *u = c->up + (size_t)p * F;
        for (int i = r0; i < r1; i++) {
            g[i] = g[i] > 0.0f ? g[i] * u[i] : 0.0f;
            active += g[i] != 0.0f;
        }
        if (convert)
            c->k->from_float[vt](r1 - r0, g + r0, c->zq + (size_t)p * c->xq_row + (size_t)(r0 / vtr->blck) * vtr->size);
    }
    return active;
}

/* Whether relu(gate) > 0 for a neuron of [r0, r1) in any of np pairs (gate rows F apart). */
static bool s_any_active(const float *gate, int F, int np, int r0, int r1) {
    for (int p = 0; p < np; p++)
        for (int r = r0; r < r1; r++)
            if (gate[(size_t)p * F + r] > 0.0f) return true;
    return false;
}

/* Rows [r0, r1) of expert e (its pairs from p0) in the job's phase. */
static void s_expert_rows(const expert_job_t *j, int e, int r0, int r1, int ith) {
    st_ctx_t *c = j->c;
    const st_expert_set_t *set = j->set;
    const st_config_t *cfg = &c->m->cfg;
    const int F = cfg->n_ff_exp, E = cfg->n_embd;
    const int p0 = c->exp_start[e], np = c->exp_start[e + 1] - p0;
    const uint8_t *x = c->xq + (size_t)p0 * c->xq_row;
    if (j->phase == 0) {
        /* ReGLU: up row r only matters where relu(gate_r) > 0 for some pair;
         * skipping the others is exact (their z is 0 whatever up gives) */
        float *gate = c->gate + (size_t)p0 * F, *up = c->up + (size_t)p0 * F;
        (set->gate_packed ? st_matmul_packed : st_matmul)(c->k, set->gate_type, set->gate[e], E, r0, r1, x, c->xq_row,
                                                          np, gate, (size_t)F);
        if (set->up_packed) { /* whole groups: the runs of groups with an active row */
            const int R = c->k->pack_rows[set->up_type];
            for (int g0 = r0; g0 < r1;) {
                int g1 = g0;
                while (g1 < r1 && s_any_active(gate, F, np, g1, g1 + R)) g1 += R;
                if (g1 > g0)
                    st_matmul_packed(c->k, set->up_type, set->up[e], E, g0, g1, x, c->xq_row, np, up, (size_t)F);
                g0 = g1 > g0 ? g1 : g0 + R;
            }
        } else { /* the active rows, listed for one call (the thread's scratch is free in this phase) */
            int32_t *list = (int32_t *)(c->scratch + (size_t)ith * c->scratch_n);
            int n_list = 0;
            for (int r = r0; r < r1; r++)
                if (s_any_active(gate, F, np, r, r + 1)) list[n_list++] = r;
            st_matmul_rows(c->k, set->up_type, set->up[e], E, list, n_list, x, c->xq_row, np, up, (size_t)F);
        }
        if (j->z_in_threads)
            atomic_fetch_add_explicit(&((expert_job_t *)j)->active,
                                      s_form_z(c, set, p0, np, r0, r1, !set->down_transposed), memory_order_relaxed);
    } else if (!set->down_transposed) {
        const uint8_t *zq = c->zq + (size_t)p0 * c->xq_row;
        (set->down_packed ? st_matmul_packed : st_matmul)(c->k, set->down_type, set->down[e], F, r0, r1, zq, c->xq_row,
                                                          np, c->ybuf + (size_t)p0 * E, (size_t)E);
    } else {
        /* transposed quantized down: y[r0..r1) = sum_j z_j * row_j[r0..r1) */
        const st_type_traits_t *tr = st_type_traits(set->down_type);
        const size_t row_bytes = st_row_size(set->down_type, E);
        float *tmp = c->scratch + (size_t)ith * c->scratch_n;
        const int n = r1 - r0; /* r0 is a multiple of the block size */
        for (int p = p0; p < p0 + np; p++) {
            float *y = c->ybuf + (size_t)p * E;
            const float *z = c->gate + (size_t)p * F; /* z kept in gate for this layout */
            for (int i = r0; i < r1; i++) y[i] = 0.0f;
            for (int nj = 0; nj < F; nj++) {
                if (z[nj] == 0.0f) continue;
                const uint8_t *row = (const uint8_t *)set->down[e] + (size_t)nj * row_bytes;
                c->k->to_float[set->down_type](n, row + (size_t)(r0 / tr->blck) * tr->size, tmp);
                for (int i = r0; i < r1; i++) y[i] += z[nj] * tmp[i - r0];
            }
        }
    }
}

/* One part of the job: a run of granules over the active experts' rows laid
 * end to end (long runs first, for the prefetchers; see st_split_guided). */
static void s_expert_part(void *arg, int part, int ith) {
    const expert_job_t *j = arg;
    for (int g = j->bounds[part]; g < j->bounds[part + 1];) {
        const int a = g / j->ng, g1 = (a + 1) * j->ng < j->bounds[part + 1] ? (a + 1) * j->ng : j->bounds[part + 1];
        const int r0 = (g - a * j->ng) * j->gran, r1 = (g1 - a * j->ng) * j->gran;
        s_expert_rows(j, j->act[a], r0, r1 < j->n_rows ? r1 : j->n_rows, ith);
        g = g1;
    }
}

/* Runs one phase over the active experts' rows on the pool. */
static void s_expert_phase(st_ctx_t *c, expert_job_t *j, int n_act) {
    j->ng = (j->n_rows + j->gran - 1) / j->gran;
    const int n = st_split_guided(n_act * j->ng, st_pool_size(c->pool), 2, c->part_bounds, ST_MAX_PARTS);
    j->bounds = c->part_bounds;
    st_pool_for(c->pool, n, s_expert_part, j);
}

/* Shared by both entry points: m (floats) or xq (rows already converted to the
 * gate's vec_dot format, xq_stride bytes apart) is the input. */
static int s_experts_eval(st_ctx_t *c, const st_expert_set_t *set, int n_pairs, const int32_t *tok, const int32_t *ids,
                          const float *m, const uint8_t *xq, size_t xq_stride, int n_tok, float *y) {
    const st_config_t *cfg = &c->m->cfg;
    if (st_type_traits(set->gate_type)->vec_dot_type != st_type_traits(set->up_type)->vec_dot_type)
        return st_fail(ST_EUNSUP, "expert gate (%s) and up (%s) need different activation formats",
                       st_type_name(set->gate_type), st_type_name(set->up_type));
    const int X = cfg->n_expert, F = cfg->n_ff_exp, E = cfg->n_embd;
    if (n_pairs < 0 || n_pairs > c->p.n_batch * cfg->n_expert_used)
        return st_fail(ST_EINVAL, "%d expert pairs (at most %d)", n_pairs, c->p.n_batch * cfg->n_expert_used);

    /* group pairs by expert (counting sort keeps pair order within an expert) */
    memset(c->exp_start, 0, (size_t)(X + 1) * sizeof(int));
    for (int i = 0; i < n_pairs; i++) {
        if (ids[i] < 0 || ids[i] >= X || !set->gate[ids[i]] || !set->up[ids[i]] || !set->down[ids[i]])
            return st_fail(ST_ERANGE, "expert %d is not available", ids[i]);
        if (tok[i] < 0 || tok[i] >= n_tok) return st_fail(ST_ERANGE, "pair token %d of %d", tok[i], n_tok);
        c->exp_start[ids[i] + 1]++;
    }
    for (int e = 0; e < X; e++) c->exp_start[e + 1] += c->exp_start[e];
    for (int e = 0; e < X; e++) c->exp_fill[e] = c->exp_start[e];
    for (int i = 0; i < n_pairs; i++) {
        const int p = c->exp_fill[ids[i]]++;
        c->pair_tok[p] = tok[i];
        c->pair_of[i] = p;
    }

    /* gate and up for every pair */
    const size_t in_row = st_row_size(st_type_traits(set->gate_type)->vec_dot_type, E);
    for (int p = 0; p < n_pairs; p++) {
        if (m)
            st_convert_rows(c, set->gate_type, m + (size_t)c->pair_tok[p] * E, 0, 1, E, c->xq + (size_t)p * c->xq_row);
        else
            memcpy(c->xq + (size_t)p * c->xq_row, xq + (size_t)c->pair_tok[p] * xq_stride, in_row);
    }
    /* z = relu(gate) * up, converted for down: by each thread for its own
     * 32-neuron granules when down's activation blocks fit in one (Q8_0, F16),
     * else here after the gate and up rows are all done */
    int n_act = 0;
    for (int e = 0; e < X; e++)
        if (c->exp_start[e + 1] > c->exp_start[e]) c->exp_fill[n_act++] = e; /* exp_fill is free again */
    const int zblck = st_type_traits(st_type_traits(set->down_type)->vec_dot_type)->blck;
    expert_job_t j = {.c = c,
                      .set = set,
                      .phase = 0,
                      .n_rows = F,
                      .gran = 32,
                      .z_in_threads = 32 % zblck == 0 && F % zblck == 0,
                      .act = c->exp_fill};
    s_expert_phase(c, &j, n_act);
    uint64_t active = atomic_load(&j.active);
    if (!j.z_in_threads)
        for (int e = 0; e < X; e++)
            active +=
                s_form_z(c, set, c->exp_start[e], c->exp_start[e + 1] - c->exp_start[e], 0, F, !set->down_transposed);
    int gran = 32;
    if (set->down_transposed) { /* columns of a transposed row: whole blocks per unit */
        const int blck = st_type_traits(set->down_type)->blck;
        gran = (ROW_CHUNK + blck - 1) / blck * blck;
    }
    expert_job_t jd = {.c = c, .set = set, .phase = 1, .n_rows = E, .gran = gran, .act = c->exp_fill};
    s_expert_phase(c, &jd, n_act);

    for (int i = 0; i < n_pairs; i++)
        memcpy(y + (size_t)i * E, c->ybuf + (size_t)c->pair_of[i] * E, (size_t)E * sizeof(float));
    c->stats.expert_calls += (uint64_t)n_pairs;
    c->stats.neurons += (uint64_t)n_pairs * F;
    c->stats.neurons_active += active;
    return 0;
}

int st_experts_eval(st_ctx_t *c, const st_expert_set_t *set, int n_pairs, const int32_t *tok, const int32_t *ids,
                    const float *m, int n_tok, float *y) {
    return s_experts_eval(c, set, n_pairs, tok, ids, m, NULL, 0, n_tok, y);
}

int st_experts_eval_converted(st_ctx_t *c, const st_expert_set_t *set, int n_pairs, const int32_t *tok,
                              const int32_t *ids, const void *xq, size_t xq_stride, int n_tok, float *y) {
    return s_experts_eval(c, set, n_pairs, tok, ids, NULL, xq, xq_stride, n_tok, y);
}

void st_moe_combine(const st_route_t *r, int n_embd, const float *y, float *out) {
    const int K = r->k, E = n_embd;
    for (int t = 0; t < r->n_tok; t++) {
        float *o = out + (size_t)t * E;
        for (int jx = 0; jx < K; jx++) {
            const float w = r->w[t * K + jx];
            const float *yy = y + ((size_t)t * K + jx) * E;
            if (jx == 0)
                for (int i = 0; i < E; i++) o[i] = yy[i] * w;
            else
                for (int i = 0; i < E; i++) o[i] += yy[i] * w;
        }
    }
}

int st_moe_local(st_ctx_t *c, const st_route_t *r, const float *m, float *out) {
    const st_config_t *cfg = &c->m->cfg;
    if (r->n_tok > c->p.n_batch || r->k != cfg->n_expert_used || r->layer < 0 || r->layer >= cfg->n_layer)
        return st_fail(ST_EINVAL, "bad route: layer %d, %d tokens, k %d", r->layer, r->n_tok, r->k);
    const int n_pairs = r->n_tok * r->k;
    for (int i = 0; i < n_pairs; i++) c->pair_tokidx[i] = i / r->k;
    st_expert_set_t set = st_model_expert_set(c, r->layer);
    int rc = st_experts_eval(c, &set, n_pairs, c->pair_tokidx, r->ids, m, r->n_tok, c->yout);
    if (rc < 0) return rc;
    st_moe_combine(r, cfg->n_embd, c->yout, out);
    return 0;
}
