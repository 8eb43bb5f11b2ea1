/* remote_moe: experts computed by the nodes, results combined exactly as the
 * single-process path does (see remote_moe.h).
 *
 * Bytes on the wire per layer and involved node: one Envelope (layer, token
 * count, pair lists: a few dozen bytes in decode) plus the tokens' rows in the
 * gate's vec_dot format (Q8_0: 34 B per 32 values) out, and one Envelope plus
 * n_pairs x n_embd float32 back. Per-pair vectors cost k x n_embd x 4 B per
 * token and layer (against involved_nodes x n_embd x 4 B for partial sums),
 * and buy bit-identical logits: st_moe_combine() adds them in routing order,
 * which partial sums per node cannot reproduce.
 *
 * The compact formats (o.result_format) trade those bits for bytes: each
 * request carries its pairs' routing weights, and a node answers one row per
 * token, the weighted sum of its pairs (in f32 or scaled f16). The row is kept
 * in y at the slot of the node's first pair for that token (PAIR_SUM; the
 * node's other pairs of the token are PAIR_COVERED) and s_combine adds the
 * slots in routing order, so the result does not depend on arrival order.
 */
#include "remote_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "moe.h"
#include "st_kernels.h"
#include "st_log.h"

/* What y holds at a pair's slot once the pair is done. */
typedef enum {
    PAIR_OUTPUT = 0, /* the expert's unweighted output (exact replies, pairs computed here) */
    PAIR_SUM,        /* a node's weighted sum over its pairs of this token */
    PAIR_COVERED     /* nothing: the pair is in the PAIR_SUM of another slot */
} pair_kind_t;

/* Counters of one node, per step (a batch through all layers) and summed
 * over decode and prefill steps. */
typedef struct {
    uint64_t rt, involved, us, hits, misses, prefetched, bytes_out, bytes_in, pairs;
    double rtt_ms; /* its requests' round trips, sending to result */
} node_acc_t;

/* One node as the backend sees it. */
typedef struct {
    int rt_layer;              /* requests sent to it in this layer */
    node_acc_t step, dec, pre; /* this step's (bytes: a snapshot at its start), decode's, prefill's */
} rnode_t;

/* One node's request of a slot's round. */
typedef struct {
    int load;                  /* pairs given to it in this layer (the least-loaded owner gets the next) */
    int n;                     /* pairs */
    int32_t *tok, *exp, *pair; /* B*K: per pair, its token's row in the request, its expert, its index */
    float *w;                  /* B*K: per pair, its routing weight (compact formats) */
    int rows;                  /* token rows */
    int32_t *row_tok;          /* B: the step's token of each row */
    bool failed;               /* no usable answer */
    double t_sent;
} req_t;

/* The work of one batch (or micro-batch: two are in flight with overlap) in one layer. */
typedef struct {
    int B;                              /* tokens it can hold */
    req_t *req;                         /* N */
    uint64_t *rids;                     /* N: the request awaited from each node (st_cluster_gather's form) */
    int assigned_layer;                 /* layer whose pair_node is valid (-1: none) */
    bool in_flight;                     /* begun, not ended */
    st_type_t gate_type;                /* of the layer being computed */
    size_t row;                         /* its activation row: bytes of one token in its gate's vec_dot format */
    int *pair_node;                     /* B*K: node computing the pair, -1 = here */
    uint8_t *pair_done;                 /* B*K: output in y */
    uint8_t *pair_kind;                 /* B*K: what y holds at the pair's slot (pair_kind_t) */
    uint8_t *conv;                      /* B rows of the current layer's row bytes */
    float *y;                           /* B*K x E per-pair outputs, routing order */
    int n_fb;                           /* pairs computed here: */
    int32_t *fb_tok, *fb_exp, *fb_pair; /* B*K */
} slot_t;

struct st_remote_moe {
    st_ctx_t *ctx;
    const st_model_t *m;
    st_cluster_t *cl;
    const st_placement_t *pl; /* NULL: nobody placed yet, every pair is computed here */
    st_remote_opts_t o;
    int N, E, K, X, L, B;
    size_t act_row; /* largest activation row over the layers (conv's stride) */

    rnode_t *nodes;       /* N */
    slot_t slots[2];      /* [1] only with o.overlap: the second micro-batch */
    st_route_t routes[2]; /* each slot's route, while it is in flight */
    int32_t *tok_local;   /* B: the step's token -> row in the request being built */
    float *fb_y;          /* B*K x E: pairs computed here */
    uint32_t *pf;         /* X: experts of one prefetch message */

    /* statistics */
    int cur_layer;
    bool step_open, step_decode;
    uint64_t n_decode_steps;
    st_remote_totals_t tot;
    uint64_t *route_counts; /* L x X */
};

/* The step's byte counters start now for node i (a snapshot of the cluster's). */
static void s_step_start(st_remote_moe_t *r, int i) {
    const st_node_stats_t *ns = st_cluster_stats(r->cl, i);
    r->nodes[i].step = (node_acc_t){.bytes_out = ns->bytes_out, .bytes_in = ns->bytes_in};
}

/* Follows the cluster's node count (nodes added by st_cluster_add: down
 * until they answer, outside the placement until they are placed). */
static int s_follow_cluster(st_remote_moe_t *r) {
    const int n = st_cluster_n_nodes(r->cl);
    if (n <= r->N) return 0;
    rnode_t *nv = st_realloc(r->nodes, (size_t)n * sizeof *nv);
    if (!nv) return st_fail(ST_ENOMEM, "no memory for the buffers of %d nodes", n);
    r->nodes = nv;
    for (int k = 0; k < 2; k++) {
        slot_t *s = &r->slots[k];
        if (!s->B) continue;
        req_t *qv = st_realloc(s->req, (size_t)n * sizeof *qv);
        if (qv) s->req = qv;
        uint64_t *rv = qv ? st_realloc(s->rids, (size_t)n * sizeof *rv) : NULL;
        if (!rv) return st_fail(ST_ENOMEM, "no memory for the buffers of %d nodes", n);
        s->rids = rv;
    }
    for (int i = r->N; i < n; i++) {
        for (int k = 0; k < 2; k++) {
            slot_t *s = &r->slots[k];
            if (!s->B) continue;
            const size_t P = (size_t)s->B * r->K;
            req_t *q = &s->req[i];
            memset(q, 0, sizeof *q);
            q->tok = st_calloc(P, sizeof *q->tok);
            q->exp = st_calloc(P, sizeof *q->exp);
            q->pair = st_calloc(P, sizeof *q->pair);
            q->w = st_calloc(P, sizeof *q->w);
            q->row_tok = st_calloc((size_t)s->B, sizeof *q->row_tok);
            if (!q->tok || !q->exp || !q->pair || !q->w || !q->row_tok) { /* not counted: a later call tries again */
                for (int j = 0; j <= k; j++) {
                    req_t *f = &r->slots[j].req[i];
                    if (r->slots[j].B) free(f->tok), free(f->exp), free(f->pair), free(f->w), free(f->row_tok);
                }
                return st_fail(ST_ENOMEM, "no memory for the buffers of %d nodes", n);
            }
            s->rids[i] = 0;
        }
        memset(&r->nodes[i], 0, sizeof r->nodes[i]);
        s_step_start(r, i);
        r->N = i + 1;
    }
    return 0;
}

int st_remote_moe_set_placement(st_remote_moe_t *r, const st_placement_t *pl) {
    const int n = st_cluster_n_nodes(r->cl);
    if (st_placement_n_nodes(pl) > n)
        return st_fail(ST_EINVAL, "placement over %d nodes, cluster of %d", st_placement_n_nodes(pl), n);
    if (s_follow_cluster(r) < 0) return ST_ENOMEM;
    r->pl = pl;
    r->slots[0].assigned_layer = r->slots[1].assigned_layer = -1;
    return 0;
}

st_remote_moe_t *st_remote_moe_new(st_ctx_t *ctx, st_cluster_t *cl, const st_placement_t *pl,
                                   const st_remote_opts_t *o) {
    st_remote_moe_t *r = st_calloc(1, sizeof *r);
    if (!r) {
        st_fail(ST_ENOMEM, "no memory for the remote MoE backend");
        return NULL;
    }
    const st_model_t *m = st_ctx_model(ctx);
    r->ctx = ctx;
    r->m = m;
    r->cl = cl;
    r->pl = pl;
    r->o = *o;
    if (r->o.timeout_ms <= 0) r->o.timeout_ms = 10000;
    r->E = m->cfg.n_embd;
    r->K = m->cfg.n_expert_used;
    r->X = m->cfg.n_expert;
    r->L = m->cfg.n_layer;
    r->B = st_ctx_params(ctx)->n_batch;
    r->act_row = 0;
    for (int il = 0; il < r->L; il++) { /* gate types may differ per layer: the widest row sizes conv */
        size_t row = st_row_size(st_type_traits(m->layers[il].gate_exps.type)->vec_dot_type, r->E);
        r->act_row = row > r->act_row ? row : r->act_row;
    }
    r->cur_layer = -1;
    const size_t P = (size_t)r->B * r->K;
    bool ok = true;
#define ALLOC(p, n) ok = ok && ((p) = st_calloc((size_t)(n) + 1, sizeof *(p))) != NULL
    /* the second micro-batch holds the larger half of a batch (s_layers_overlapped's split) */
    for (int k = 0; k < (r->o.overlap ? 2 : 1); k++) {
        slot_t *s = &r->slots[k];
        s->B = k ? r->B - r->B / 2 : r->B;
        s->assigned_layer = -1;
        const size_t Ps = (size_t)s->B * r->K;
        ALLOC(s->pair_node, Ps);
        ALLOC(s->pair_done, Ps);
        ALLOC(s->pair_kind, Ps);
        ALLOC(s->conv, (size_t)s->B * r->act_row);
        ALLOC(s->y, Ps * r->E);
        ALLOC(s->fb_tok, Ps);
        ALLOC(s->fb_exp, Ps);
        ALLOC(s->fb_pair, Ps);
    }
    ok = ok && s_follow_cluster(r) == 0;
    ALLOC(r->tok_local, (size_t)r->B);
    ALLOC(r->fb_y, P * r->E);
    ALLOC(r->pf, (size_t)r->X);
    ALLOC(r->route_counts, (size_t)r->L * r->X);
#undef ALLOC
    if (!ok) {
        st_remote_moe_destroy(&r);
        st_fail(ST_ENOMEM, "no memory for the remote MoE buffers");
    }
    return r;
}

void st_remote_moe_destroy(st_remote_moe_t **rp) {
    if (!rp || !*rp) return;
    st_remote_moe_t *r = *rp;
    for (int k = 0; k < 2; k++) {
        slot_t *s = &r->slots[k];
        for (int i = 0; s->req && i < r->N; i++) {
            req_t *q = &s->req[i];
            free(q->tok), free(q->exp), free(q->pair), free(q->w), free(q->row_tok);
        }
        void *bufs[] = {s->req,  s->rids, s->pair_node, s->pair_done, s->pair_kind,
                        s->conv, s->y,    s->fb_tok,    s->fb_exp,    s->fb_pair};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    }
    void *bufs[] = {r->nodes, r->tok_local, r->fb_y, r->pf, r->route_counts};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(r);
    *rp = NULL;
}

/* -- statistics: a step is one pass of a batch through all layers -- */

static void s_step_close(st_remote_moe_t *r) {
    if (!r->step_open) return;
    r->step_open = false;
    if (r->step_decode) r->n_decode_steps++;
    if (r->o.stats && r->step_decode) fprintf(stderr, "stats: token %llu:", (unsigned long long)r->n_decode_steps);
    for (int i = 0; i < r->N; i++) {
        node_acc_t *s = &r->nodes[i].step, *acc = r->step_decode ? &r->nodes[i].dec : &r->nodes[i].pre;
        const st_node_stats_t *ns = st_cluster_stats(r->cl, i);
        s->bytes_out = ns->bytes_out - s->bytes_out; /* held the snapshot at the step's start */
        s->bytes_in = ns->bytes_in - s->bytes_in;
        acc->rt += s->rt;
        acc->involved += s->involved;
        acc->us += s->us;
        acc->hits += s->hits;
        acc->misses += s->misses;
        acc->prefetched += s->prefetched;
        acc->bytes_out += s->bytes_out;
        acc->bytes_in += s->bytes_in;
        acc->pairs += s->pairs;
        acc->rtt_ms += s->rtt_ms;
        if (r->step_decode) {
            r->tot.rt_decode += s->rt;
            r->tot.involved_decode += s->involved;
            r->tot.bytes_out_decode += s->bytes_out;
            r->tot.bytes_in_decode += s->bytes_in;
            if (r->o.stats)
                fprintf(stderr, " node %d rt %llu layers %llu out %llu in %llu us %llu hits %llu/%llu prefetched %llu;",
                        i, (unsigned long long)s->rt, (unsigned long long)s->involved, (unsigned long long)s->bytes_out,
                        (unsigned long long)s->bytes_in, (unsigned long long)s->us, (unsigned long long)s->hits,
                        (unsigned long long)(s->hits + s->misses + s->prefetched), (unsigned long long)s->prefetched);
        }
    }
    if (r->o.stats && r->step_decode) fprintf(stderr, "\n");
}

/* Called at the start of every layer's work (prefetch or compute). */
static void s_layer_begin(st_remote_moe_t *r, const st_route_t *rt) {
    if (rt->layer == r->cur_layer) return;
    if (rt->layer <= r->cur_layer || !r->step_open) { /* a new batch through the layers */
        s_step_close(r);
        if (s_follow_cluster(r) < 0) st_log(ST_LOG_WARN, "no memory to follow the nodes added to the cluster");
        r->step_open = true;
        r->slots[0].in_flight = r->slots[1].in_flight = false; /* what a failed step left */
        r->step_decode = rt->decode;                           /* one token per sequence, however many sequences */
        if (r->step_decode)
            r->tot.decode_tokens += (uint64_t)rt->n_step;
        else
            r->tot.prefill_steps++, r->tot.prefill_tokens += (uint64_t)rt->n_step;
        for (int i = 0; i < r->N; i++) s_step_start(r, i);
    }
    r->cur_layer = rt->layer;
    for (int i = 0; i < r->N; i++) r->nodes[i].rt_layer = 0;
}

/* -- which node computes each pair -- */

/* The owner of (layer, e) that is up with the fewest of s's pairs so far in
 * this layer, or -1: none (or no placement yet: no node has answered). */
static int s_best_owner(const st_remote_moe_t *r, const slot_t *s, int layer, int e) {
    int best = -1;
    for (int o = 0; r->pl && o < st_placement_n_owners(r->pl, layer, e); o++) {
        int nd = st_placement_owner(r->pl, layer, e, o);
        if (nd < r->N && st_cluster_is_up(r->cl, nd) && (best < 0 || s->req[nd].load < s->req[best].load)) best = nd;
    }
    return best;
}

static void s_assign(st_remote_moe_t *r, slot_t *s, const st_route_t *rt) {
    for (int i = 0; i < r->N; i++) s->req[i].load = 0;
    for (int p = 0; p < rt->n_tok * rt->k; p++) {
        int best = s_best_owner(r, s, rt->layer, rt->ids[p]);
        s->pair_node[p] = best;
        if (best >= 0) s->req[best].load++;
    }
    s->assigned_layer = rt->layer;
}

/* The slot of rt's micro-batch, or NULL (after st_fail) when it cannot hold rt. */
static slot_t *s_slot(st_remote_moe_t *r, const st_route_t *rt) {
    slot_t *s = rt->slot == 0 || rt->slot == 1 ? &r->slots[rt->slot] : NULL;
    if (!s || !s->B || rt->n_tok > s->B || rt->k != r->K) {
        st_fail(ST_EINVAL, "route of %d tokens x %d experts for micro-batch %d (%d x %d)", rt->n_tok, rt->k, rt->slot,
                s ? s->B : 0, r->K);
        return NULL;
    }
    return s;
}

static int s_prefetch(void *arg, const st_route_t *rt) {
    st_remote_moe_t *r = arg;
    slot_t *s = s_slot(r, rt);
    if (!s) return ST_EINVAL;
    s_layer_begin(r, rt);
    s_assign(r, s, rt);
    if (!r->o.prefetch) return 0;
    for (int nd = 0; nd < r->N; nd++) {
        if (!s->req[nd].load) continue;
        uint32_t n = 0;
        for (int p = 0; p < rt->n_tok * rt->k; p++) {
            if (s->pair_node[p] != nd) continue;
            bool dup = false;
            for (uint32_t i = 0; i < n && !dup; i++) dup = r->pf[i] == (uint32_t)rt->ids[p];
            if (!dup) r->pf[n++] = (uint32_t)rt->ids[p];
        }
        st_wire_msg_t m = {.type = ST_MSG_EXPERT_PREFETCH};
        m.prefetch = (st_wire_prefetch_t){(uint32_t)rt->layer, n, r->pf};
        st_cluster_send(r->cl, nd, &m, NULL, 0, false); /* a hint: losing it costs only speed */
    }
    return 0;
}

/* -- the steps of compute -- */

/* Queues pair p to be computed here. */
static void s_to_fallback(slot_t *s, const st_route_t *rt, int p) {
    s->fb_tok[s->n_fb] = p / rt->k;
    s->fb_exp[s->n_fb] = rt->ids[p];
    s->fb_pair[s->n_fb++] = p;
}

/* Groups the pairs not done yet by their node (each node's request: its
 * pairs and the rows of their tokens); those with no node go to fallback. */
static void s_build_requests(st_remote_moe_t *r, slot_t *s, const st_route_t *rt) {
    const int n_pairs = rt->n_tok * rt->k;
    s->n_fb = 0;
    for (int i = 0; i < r->N; i++) {
        s->rids[i] = 0;
        s->req[i].n = s->req[i].rows = 0;
        s->req[i].failed = false;
    }
    for (int p = 0; p < n_pairs; p++) {
        if (s->pair_done[p]) continue;
        if (s->pair_node[p] < 0) {
            s_to_fallback(s, rt, p);
            continue;
        }
        req_t *q = &s->req[s->pair_node[p]];
        q->exp[q->n] = rt->ids[p];
        q->w[q->n] = rt->w[p];
        q->pair[q->n++] = p;
    }
    for (int i = 0; i < r->N; i++) { /* each pair's token -> a row of the node's request */
        req_t *q = &s->req[i];
        for (int t = 0; q->n && t < rt->n_tok; t++) r->tok_local[t] = -1;
        for (int k = 0; k < q->n; k++) {
            int t = q->pair[k] / rt->k;
            if (r->tok_local[t] < 0) r->tok_local[t] = q->rows++, q->row_tok[r->tok_local[t]] = t;
            q->tok[k] = r->tok_local[t];
        }
    }
}

/* Sends each involved node one EXPERT_COMPUTE: its pairs and its token rows
 * of the converted activations. A node the send fails for is marked failed. */
static int s_send_round(st_remote_moe_t *r, slot_t *s, const st_route_t *rt) {
    for (int i = 0; i < r->N; i++) {
        req_t *q = &s->req[i];
        rnode_t *nd = &r->nodes[i];
        if (!q->n) continue;
        zmq_msg_t frame;
        if (zmq_msg_init_size(&frame, (size_t)q->rows * s->row)) return st_fail(ST_ENOMEM, "no memory");
        uint8_t *fd = zmq_msg_data(&frame);
        for (int j = 0; j < q->rows; j++)
            memcpy(fd + (size_t)j * s->row, s->conv + (size_t)q->row_tok[j] * s->row, s->row);
        st_wire_msg_t msg = {.type = ST_MSG_EXPERT_COMPUTE};
        msg.compute = (st_wire_compute_t){(uint32_t)rt->layer,
                                          (uint32_t)q->rows,
                                          st_type_traits(s->gate_type)->vec_dot_type,
                                          (uint32_t)q->n,
                                          q->tok,
                                          q->exp,
                                          r->o.result_format,
                                          r->o.result_format != ST_RESULT_PER_PAIR_F32 ? q->w : NULL};
        if (st_cluster_send_zmsg(r->cl, i, &msg, &frame, true) < 0) {
            q->failed = true;
            continue;
        }
        s->rids[i] = msg.request_id;
        q->t_sent = st_now_ms();
        nd->step.rt++;
        nd->step.involved++;
        nd->step.pairs += (uint64_t)q->n;
        if (++nd->rt_layer > r->tot.max_rt_per_layer_node) r->tot.max_rt_per_layer_node = nd->rt_layer;
    }
    return 0;
}

typedef struct {
    st_remote_moe_t *r;
    slot_t *s;
    const st_route_t *rt;
} result_ctx_t;

/* A node's compact reply (rows of format, one per row of its request): each row into y at the slot of
 * the node's first pair of that token, its pairs marked. ST_ERANGE when a value is not finite (then no
 * pair is marked). */
static int s_take_sums(st_remote_moe_t *r, slot_t *s, const req_t *q, uint32_t format, const uint8_t *frame) {
    const size_t E = (size_t)r->E;
    /* s_build_requests numbers the rows in the order of their tokens' first pairs: row j's lead pair
     * (where its sum goes) is the first pair naming row j once rows 0..j-1 have theirs */
    for (int k = 0, j = 0; k < q->n && j < q->rows; k++) {
        if (q->tok[k] != j) continue;
        float *o = s->y + (size_t)q->pair[k] * E;
        const uint8_t *row = frame + (size_t)j * st_wire_result_row_bytes(format, (uint32_t)E);
        if (format == ST_RESULT_PER_TOKEN_F32) {
            memcpy(o, row, E * sizeof(float));
        } else { /* f16: a float32 scale, then the halves */
            float scale;
            memcpy(&scale, row, sizeof scale);
            for (size_t e = 0; e < E; e++) {
                uint16_t h;
                memcpy(&h, row + 4 + 2 * e, 2);
                o[e] = st_fp16_to_fp32(h) * scale;
            }
        }
        for (size_t e = 0; e < E; e++)
            if (!isfinite(o[e])) return ST_ERANGE;
        j++;
    }
    for (int k = 0, j = 0; k < q->n; k++) {
        const bool lead = q->tok[k] == j;
        s->pair_kind[q->pair[k]] = lead ? PAIR_SUM : PAIR_COVERED;
        j += lead;
    }
    return 0;
}

/* out[t] = the slots of token t's pairs in routing order: outputs weighted, node sums as they are. */
static void s_combine(const st_remote_moe_t *r, const slot_t *s, const st_route_t *rt, float *out) {
    const int K = rt->k, E = r->E;
    for (int t = 0; t < rt->n_tok; t++) {
        float *o = out + (size_t)t * E;
        bool first = true;
        for (int j = 0; j < K; j++) {
            const int p = t * K + j;
            if (s->pair_kind[p] == PAIR_COVERED) continue;
            const float w = s->pair_kind[p] == PAIR_SUM ? 1.0f : rt->w[p];
            const float *yy = s->y + (size_t)p * E;
            if (first)
                for (int i = 0; i < E; i++) o[i] = yy[i] * w;
            else
                for (int i = 0; i < E; i++) o[i] += yy[i] * w;
            first = false;
        }
    }
}

/* One node's EXPERT_RESULT: its pairs' vectors (or its per-token sums) into y. */
static int s_on_result(void *arg, int i, st_wire_rx_t *rx) {
    result_ctx_t *x = arg;
    st_remote_moe_t *r = x->r;
    req_t *q = &x->s->req[i];
    rnode_t *nd = &r->nodes[i];
    if (rx->msg.type == ST_MSG_ERROR) {
        if (st_cluster_log_ok(r->cl, i))
            st_log(ST_LOG_WARN, "node %d (%s) refused layer %d: %s", i, st_cluster_url(r->cl, i), x->rt->layer,
                   rx->msg.error.message);
        q->failed = true;
        return 0;
    }
    size_t flen;
    const uint8_t *frame = st_wire_rx_frame(rx, &flen);
    const st_wire_result_t *res = &rx->msg.result;
    const uint32_t want = r->o.result_format;
    const bool compact = want != ST_RESULT_PER_PAIR_F32;
    const bool format_ok = res->result_format == want;
    const size_t rows = compact ? (size_t)q->rows : (size_t)q->n;
    const size_t row = st_wire_result_row_bytes(want, (uint32_t)r->E);
    if (rx->msg.type != ST_MSG_EXPERT_RESULT || !format_ok || res->n_pairs != (uint32_t)q->n ||
        (compact && res->n_rows != (uint32_t)q->rows) || flen != rows * row) {
        if (st_cluster_log_ok(r->cl, i))
            st_log(ST_LOG_WARN, "node %d (%s) answered layer %d with %s of %u pairs (%s, %zu B), %d expected (%s)", i,
                   st_cluster_url(r->cl, i), x->rt->layer, st_wire_type_name(rx->msg.type), res->n_pairs,
                   st_wire_result_format_name(res->result_format), flen, q->n, st_wire_result_format_name(want));
        q->failed = true;
        return 0;
    }
    if (!compact) {
        for (int k = 0; k < q->n; k++) /* frames are LE f32; so is every host we build for */
            memcpy(x->s->y + (size_t)q->pair[k] * r->E, frame + (size_t)k * row, row);
    } else if (s_take_sums(r, x->s, q, res->result_format, frame) < 0) {
        if (st_cluster_log_ok(r->cl, i))
            st_log(ST_LOG_WARN, "node %d (%s) answered layer %d with sums that are not finite", i,
                   st_cluster_url(r->cl, i), x->rt->layer);
        q->failed = true;
        return 0;
    }
    nd->step.rtt_ms += st_now_ms() - q->t_sent;
    nd->step.us += res->compute_us;
    nd->step.hits += res->cache_hits;
    nd->step.misses += res->cache_misses;
    nd->step.prefetched += res->cache_prefetched;
    return 0;
}

/* Waits for the round's results of s until the deadline, our workers asleep
 * (the nodes may share our CPUs). The other slot's results that come
 * meanwhile (overlap: its round is in flight) are taken too. */
static int s_gather_round(st_remote_moe_t *r, slot_t *s, const st_route_t *rt) {
    result_ctx_t x = {r, s, rt};
    slot_t *o = &r->slots[s == &r->slots[0]];
    result_ctx_t ox = {r, o, &r->routes[o == &r->slots[1]]};
    st_ctx_park(r->ctx);
    const double t_wait = st_now_ms();
    int rc = st_cluster_gather_also(r->cl, s->rids, t_wait + r->o.timeout_ms, s_on_result, &x,
                                    o->in_flight ? o->rids : NULL, s_on_result, &ox);
    const double waited = st_now_ms() - t_wait;
    if (r->step_decode) r->tot.wait_ms_decode += waited;
    if (waited > r->tot.max_wait_ms) r->tot.max_wait_ms = waited;
    r->tot.waits++;
    return rc == ST_ETIMEOUT ? 0 : rc;
}

/* After a round: the pairs of nodes that answered are done; a node that
 * missed the deadline, lost its connection or answered wrongly is marked
 * down and its pairs go to another owner that is up (a replica). Returns
 * whether another round is needed. */
static bool s_reassign_failed(st_remote_moe_t *r, slot_t *s, const st_route_t *rt) {
    bool again = false;
    for (int i = 0; i < r->N; i++) {
        req_t *q = &s->req[i];
        if (!q->n) continue;
        const bool ok = !s->rids[i] && !q->failed;
        if (ok) {
            r->tot.remote_pairs += (uint64_t)q->n;
            for (int k = 0; k < q->n; k++) s->pair_done[q->pair[k]] = 1;
            continue;
        }
        char why[160];
        if (s->rids[i] && !st_cluster_is_up(r->cl, i))
            snprintf(why, sizeof why, "connection lost during layer %d", rt->layer);
        else if (s->rids[i])
            snprintf(why, sizeof why, "no answer to layer %d within %d ms", rt->layer, r->o.timeout_ms);
        else
            snprintf(why, sizeof why, "no usable answer for layer %d", rt->layer);
        st_cluster_set_down(r->cl, i, why);
        for (int k = 0; k < q->n; k++) {
            const int p = q->pair[k], best = s_best_owner(r, s, rt->layer, rt->ids[p]);
            s->pair_node[p] = best;
            if (best >= 0) s->req[best].load++, r->tot.resent_pairs++, again = true;
        }
    }
    return again;
}

/* Computes the fallback pairs of s here, from the model file. */
static int s_fallback(st_remote_moe_t *r, slot_t *s, const st_route_t *rt, const char *why) {
    const int n = s->n_fb;
    if (n == 0) return 0;
    if (!r->o.fallback)
        return st_fail(ST_EIO, "layer %d: %d expert pairs have no node to run on (%s) and fallback is off", rt->layer,
                       n, why);
    st_expert_set_t set = st_model_expert_set(r->ctx, rt->layer);
    int rc = st_experts_eval_converted(r->ctx, &set, n, s->fb_tok, s->fb_exp, s->conv, s->row, rt->n_tok, r->fb_y);
    if (rc < 0) return rc;
    for (int i = 0; i < n; i++) {
        memcpy(s->y + (size_t)s->fb_pair[i] * r->E, r->fb_y + (size_t)i * r->E, (size_t)r->E * sizeof(float));
        s->pair_done[s->fb_pair[i]] = 1;
        s->pair_kind[s->fb_pair[i]] = PAIR_OUTPUT;
    }
    r->tot.fallback_pairs += (uint64_t)n;
    s->n_fb = 0;
    return 0;
}

/* The first half of a layer's MoE step for rt's slot: the activations in
 * this layer's gate format, converted once for every node, the first round
 * of requests sent, and the pairs no node can take computed here meanwhile. */
static int s_begin(void *arg, const st_route_t *rt, const float *m) {
    st_remote_moe_t *r = arg;
    slot_t *s = s_slot(r, rt);
    if (!s) return ST_EINVAL;
    const int n_pairs = rt->n_tok * rt->k;
    s_layer_begin(r, rt);
    if (s->assigned_layer != rt->layer) s_assign(r, s, rt);
    s->assigned_layer = -1;
    for (int p = 0; p < n_pairs; p++) r->route_counts[(size_t)rt->layer * r->X + rt->ids[p]]++;

    s->gate_type = r->m->layers[rt->layer].gate_exps.type;
    s->row = st_row_size(st_type_traits(s->gate_type)->vec_dot_type, r->E);
    st_convert_activations(r->ctx, s->gate_type, m, rt->n_tok, r->E, s->conv);

    memset(s->pair_done, 0, (size_t)n_pairs);
    memset(s->pair_kind, PAIR_OUTPUT, (size_t)n_pairs);
    r->routes[rt->slot] = *rt;
    s->in_flight = true;
    if (rt->slot == 1 && rt->layer == 0 && r->tot.overlapped_steps++ == 0)
        st_log(ST_LOG_INFO, "decode steps of several sequences run as two overlapped micro-batches (--overlap off: "
                            "one batch)");
    s_build_requests(r, s, rt);
    int rc = s_send_round(r, s, rt);
    if (rc == 0) rc = s_fallback(r, s, rt, "no owner up"); /* while the nodes work */
    if (rc < 0) s->in_flight = false;
    return rc;
}

/* The second half: the results gathered, the pairs of a node that fails sent
 * to a replica in another round, what every owner failed computed here at the
 * end, and the sum into out. Each pair's output is the same whoever computes
 * it, so in exact mode the result never changes. */
static int s_end(void *arg, const st_route_t *rt, float *out) {
    st_remote_moe_t *r = arg;
    slot_t *s = s_slot(r, rt);
    if (!s) return ST_EINVAL;
    if (!s->in_flight) return st_fail(ST_EINVAL, "micro-batch %d: nothing begun", rt->slot);
    const int n_pairs = rt->n_tok * rt->k;
    int rc = s_gather_round(r, s, rt);
    while (rc == 0 && s_reassign_failed(r, s, rt)) {
        s_build_requests(r, s, rt);
        if ((rc = s_send_round(r, s, rt)) < 0) break;
        if ((rc = s_fallback(r, s, rt, "no owner up")) < 0) break;
        rc = s_gather_round(r, s, rt);
    }
    s->in_flight = false;
    if (rc < 0) return rc;
    for (int p = 0; p < n_pairs; p++) /* left: pairs whose every owner failed in the last round */
        if (!s->pair_done[p]) s_to_fallback(s, rt, p);
    const int left = s->n_fb;
    if ((rc = s_fallback(r, s, rt, "every owner failed")) < 0)
        return st_fail(rc, "layer %d: %d pairs could not be computed anywhere", rt->layer, left);

    if (r->o.result_format == ST_RESULT_PER_PAIR_F32)
        st_moe_combine(rt, r->E, s->y, out); /* st-run's sum, bit for bit */
    else
        s_combine(r, s, rt, out);
    if (rt->layer == r->L - 1 && !r->slots[!rt->slot].in_flight) s_step_close(r); /* the batch is through */
    return 0;
}

/* The whole MoE step of one layer, without overlap. */
static int s_compute(void *arg, const st_route_t *rt, const float *m, float *out) {
    int rc = s_begin(arg, rt, m);
    return rc < 0 ? rc : s_end(arg, rt, out);
}

st_moe_backend_t st_remote_moe_backend(st_remote_moe_t *r) {
    st_moe_backend_t b = {.arg = r, .prefetch = s_prefetch, .compute = s_compute};
    if (r->o.overlap) b.begin = s_begin, b.end = s_end;
    return b;
}

void st_remote_moe_finish(st_remote_moe_t *r) {
    s_step_close(r);
    r->cur_layer = -1;
}

const uint64_t *st_remote_moe_route_counts(const st_remote_moe_t *r) { return r->route_counts; }

void st_remote_moe_print_stats(const st_remote_moe_t *r, FILE *f) {
    const st_remote_totals_t *t = &r->tot;
    const double T = t->decode_tokens ? (double)t->decode_tokens : 1.0;
    fprintf(f,
            "cluster: %d of %d nodes up; prefill %llu steps (%llu tokens), decode %llu tokens; %llu pairs on "
            "nodes, %llu computed here (fallback), %llu re-sent to a replica\n",
            st_cluster_n_up(r->cl), r->N, (unsigned long long)t->prefill_steps, (unsigned long long)t->prefill_tokens,
            (unsigned long long)t->decode_tokens, (unsigned long long)t->remote_pairs,
            (unsigned long long)t->fallback_pairs, (unsigned long long)t->resent_pairs);
    for (int i = 0; i < r->N; i++) {
        const node_acc_t *d = &r->nodes[i].dec, *p = &r->nodes[i].pre;
        const uint64_t look = d->hits + d->misses + d->prefetched + p->hits + p->misses + p->prefetched;
        const double pct = look ? 100.0 / (double)look : 0.0;
        fprintf(f,
                "cluster: node %d %s: per decode token %.2f round trips (%.2f layers involved), %.0f B out, "
                "%.0f B in, node compute %.3f ms; prefill %llu round trips, %llu B out, %llu B in; of %llu expert "
                "uses %.1f%% were in RAM, %.1f%% read ahead on the prefetch hint, %.1f%% read on demand\n",
                i, st_cluster_url(r->cl, i), d->rt / T, d->involved / T, d->bytes_out / T, d->bytes_in / T,
                d->us / T / 1e3, (unsigned long long)p->rt, (unsigned long long)p->bytes_out,
                (unsigned long long)p->bytes_in, (unsigned long long)look, pct * (double)(d->hits + p->hits),
                pct * (double)(d->prefetched + p->prefetched), pct * (double)(d->misses + p->misses));
    }
    fprintf(f,
            "cluster: decode: %.2f round trips per token for %.2f involved (layer, node) pairs, at most %d round "
            "trip per layer per node; %.0f B per token (%.0f out, %.0f in); waiting for nodes %.2f ms per token\n",
            t->rt_decode / T, t->involved_decode / T, t->max_rt_per_layer_node,
            (t->bytes_out_decode + t->bytes_in_decode) / T, t->bytes_out_decode / T, t->bytes_in_decode / T,
            t->wait_ms_decode / T);
    fprintf(f,
            "cluster: longest wait for node results %.1f ms of %llu waits (deadline %d ms); %llu steps ran as two "
            "overlapped micro-batches\n",
            t->max_wait_ms, (unsigned long long)t->waits, r->o.timeout_ms, (unsigned long long)t->overlapped_steps);
    uint64_t rejoin_bytes = 0, rejoins = st_cluster_rejoins(r->cl, &rejoin_bytes);
    fprintf(f, "cluster: %llu rejoins of nodes that were down (%llu shard bytes sent to them)\n",
            (unsigned long long)rejoins, (unsigned long long)rejoin_bytes);
}

st_remote_node_totals_t st_remote_moe_node_totals(const st_remote_moe_t *r, int node) {
    st_remote_node_totals_t t = {0};
    if (node < 0 || node >= r->N) return t;
    const node_acc_t *d = &r->nodes[node].dec, *p = &r->nodes[node].pre;
    t = (st_remote_node_totals_t){
        d->rt + p->rt,        d->us + p->us, d->hits + p->hits, d->misses + p->misses, d->prefetched + p->prefetched,
        d->rtt_ms + p->rtt_ms};
    return t;
}
