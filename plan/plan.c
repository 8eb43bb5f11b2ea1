/* plan: the placement and the predicted speed of a cluster (see plan.h).
 *
 * Everything is arithmetic on the model's shapes and the boards' rates; the
 * only search is the expected slowest node of a layer, computed exactly by
 * counting: for a time T, the number of ways to pick the layer's used experts
 * so that every node finishes by T is the coefficient of z^d in the product
 * of the nodes' polynomials sum C(ram, h) C(disk, g) z^(h+g) over the (h, g)
 * that finish by T. E[max] = sum over the distinct times T of T x the jump of
 * that probability. Identical layers (the usual case) are computed once.
 */
#include "plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "node_mem.h"
#include "st_log.h"
#include "wire.h"

#define MAX_THRESHOLDS 512          /* more distinct finishing times are rounded up onto this many */
#define TCP_PAYLOAD 1448.0          /* bytes of a full TCP segment on Ethernet */
#define COORD_PROCESS (64ull << 20) /* the coordinator's own memory beside its weights and caches */
#define TLP_MIN 0.010               /* s: Linux's shortest tail-loss probe timeout */
#define HEAD_CANDIDATES 64          /* a sampled draw's candidates per slice (remote_head.c: top-k, else 64) */

/* ---- links --------------------------------------------------------------- */

static bool s_scaled(const char *s, const char *const *units, const double *mul, int n_units, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v) || v < 0) return false;
    if (!*end) {
        *out = v;
        return true;
    }
    for (int i = 0; i < n_units; i++)
        if (!strcasecmp(end, units[i])) {
            *out = v * mul[i];
            return true;
        }
    return false;
}

bool st_link_parse(const char *s, st_link_t *link) {
    static const char *const rate_u[] = {"bit", "bps", "kbit", "kbps", "mbit", "mbps", "gbit", "gbps"};
    static const double rate_m[] = {1, 1, 1e3, 1e3, 1e6, 1e6, 1e9, 1e9};
    static const char *const time_u[] = {"s", "ms", "us"};
    static const double time_m[] = {1, 1e-3, 1e-6};
    char buf[128];
    if (!s || strlen(s) >= sizeof buf) return false;
    strcpy(buf, s);
    char *parts[4] = {0};
    int n = 0;
    for (char *save, *t = strtok_r(buf, ":", &save); t && n < 4; t = strtok_r(NULL, ":", &save)) parts[n++] = t;
    if (n < 2 || n > 3) return false;
    double bits, delay, loss = 0;
    if (!s_scaled(parts[0], rate_u, rate_m, 8, &bits) || bits < 1e3) return false;
    if (!s_scaled(parts[1], time_u, time_m, 3, &delay) || delay > 10) return false;
    if (n == 3) {
        char *pct = strchr(parts[2], '%');
        if (pct && pct[1]) return false;
        if (pct) *pct = 0;
        char *end;
        loss = strtod(parts[2], &end);
        if (end == parts[2] || *end || !isfinite(loss) || loss < 0 || loss >= 50) return false;
        loss /= 100;
    }
    *link = (st_link_t){bits / 8, delay, loss};
    return true;
}

/* ---- the model's shapes --------------------------------------------------- */

static uint64_t s_bytes(const st_weight_t *w) { return w->data ? (uint64_t)w->row_bytes * (uint64_t)w->n_rows : 0; }

int st_plan_model_from(const st_model_t *m, st_plan_model_t *pm) {
    memset(pm, 0, sizeof *pm);
    const st_config_t *c = &m->cfg;
    st_model_describe(m, pm->desc, sizeof pm->desc);
    pm->n_layer = c->n_layer;
    pm->n_expert = c->n_expert;
    pm->n_expert_used = c->n_expert_used;
    pm->n_embd = c->n_embd;
    pm->n_ff = c->n_ff_exp;
    pm->n_vocab = c->n_vocab;
    pm->n_head_kv = c->n_head_kv;
    pm->head_dim = c->head_dim;
    pm->n_head = c->n_head;
    pm->n_swa = c->n_swa;
    for (int l = 0; l < c->n_layer && l < ST_MAX_LAYERS; l++) pm->is_swa[l] = c->is_swa[l];
    pm->file_bytes = st_gguf_file_size(m->gguf);
    for (int64_t i = 0; i < st_gguf_n_tensors(m->gguf); i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(m->gguf, i);
        if (strstr(t->name, "_exps."))
            pm->expert_bytes += t->nbytes;
        else if (!strcmp(t->name, "token_embd.weight"))
            pm->embd_bytes += t->nbytes;
        else if (strcmp(t->name, "lm_head_profiler.weight")) /* PowerInfer's extra tensor is never read */
            pm->dense_bytes += t->nbytes;
    }
    if (m->output.data == m->tok_embd.data) pm->dense_bytes += pm->embd_bytes; /* tied: the head reads it all */
    pm->head.type = m->output.type;
    pm->head.rows = m->output.n_rows;
    pm->head.cols = m->output.n_cols;
    pm->head_bytes = s_bytes(&m->output);
    for (int l = 0; l < c->n_layer; l++) {
        const st_layer_t *L = &m->layers[l];
        const st_weight_t *d[5] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->router};
        for (int k = 0; k < 5; k++) {
            pm->dense[l][k].type = d[k]->type;
            pm->dense[l][k].rows = d[k]->data ? d[k]->n_rows : 0;
            pm->dense[l][k].cols = d[k]->n_cols;
        }
        const st_weight_t *e[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (int k = 0; k < 3; k++) {
            pm->exp[l][k].type = e[k]->type;
            /* as computed: gate/up n_ff x n_embd, down n_embd x n_ff (PowerInfer stores it transposed) */
            pm->exp[l][k].rows = k < 2 ? c->n_ff_exp : c->n_embd;
            pm->exp[l][k].cols = k < 2 ? c->n_embd : c->n_ff_exp;
            pm->layer_expert_bytes[l] += e[k]->mat_bytes ? e[k]->mat_bytes : s_bytes(e[k]) / (uint64_t)c->n_expert;
        }
        if (!pm->layer_expert_bytes[l]) return st_fail(ST_EUNSUP, "layer %d has no experts", l);
    }
    const st_type_traits_t *tr = st_type_traits(m->layers[0].gate_exps.type);
    pm->act_bytes = tr ? st_row_size(tr->vec_dot_type, c->n_embd) : (uint64_t)c->n_embd * 4;
    return 0;
}

/* ---- the expected slowest node ------------------------------------------- */

static double s_binom(int n, int k) {
    if (k < 0 || k > n) return 0;
    if (k > n - k) k = n - k;
    double r = 1;
    for (int i = 1; i <= k; i++) r = r * (n - k + i) / i;
    return r;
}

static double s_node_time(double compute, double read, double hide, int h, int g) {
    return fmax(0.0, g * read - hide) + (h + g) * compute;
}

static int s_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double st_plan_expected_max(int n, const int *ram, const int *disk, const double *compute, const double *read,
                            double hide, int d) {
    int X = 0;
    for (int i = 0; i < n; i++) {
        if (ram[i] < 0 || disk[i] < 0 || compute[i] < 0 || read[i] < 0) return -1;
        X += ram[i] + disk[i];
    }
    if (n < 1 || d < 0 || d > X || X > 1000) return -1; /* C(1000, 500) is still a double */
    if (d == 0) return 0;
    size_t nv = 0, cap = 0;
    for (int i = 0; i < n; i++) cap += (size_t)(ram[i] + 1) * (disk[i] + 1);
    double *vals = malloc(cap * sizeof *vals), *poly = malloc((size_t)(d + 1) * 2 * sizeof *poly);
    if (!vals || !poly) {
        free(vals);
        free(poly);
        return -1;
    }
    for (int i = 0; i < n; i++)
        for (int h = 0; h <= ram[i] && h <= d; h++)
            for (int g = 0; g <= disk[i] && h + g <= d; g++) vals[nv++] = s_node_time(compute[i], read[i], hide, h, g);
    qsort(vals, nv, sizeof *vals, s_cmp_double);
    size_t nu = 0;
    for (size_t i = 0; i < nv; i++)
        if (nu == 0 || vals[i] != vals[nu - 1]) vals[nu++] = vals[i];
    size_t nt = nu < MAX_THRESHOLDS ? nu : MAX_THRESHOLDS;
    const double total = s_binom(X, d);
    double *q = poly + d + 1, e = 0, f_prev = 0;
    for (size_t j = 0; j < nt; j++) {
        /* kept thresholds: every value rounds up to the next one kept (the largest always is) */
        const double T = vals[nt == nu ? j : ((j + 1) * nu + nt - 1) / nt - 1];
        memset(poly, 0, (size_t)(d + 1) * sizeof *poly);
        poly[0] = 1;
        for (int i = 0; i < n; i++) {
            memset(q, 0, (size_t)(d + 1) * sizeof *q);
            for (int h = 0; h <= ram[i] && h <= d; h++)
                for (int g = 0; g <= disk[i] && h + g <= d; g++)
                    if (s_node_time(compute[i], read[i], hide, h, g) <= T)
                        q[h + g] += s_binom(ram[i], h) * s_binom(disk[i], g);
            for (int a = d; a >= 0; a--) { /* poly *= q, truncated at z^d, in place from the top */
                double s = 0;
                for (int b = 0; b <= a; b++) s += poly[a - b] * q[b];
                poly[a] = s;
            }
        }
        const double F = poly[d] / total;
        e += T * (F - f_prev);
        f_prev = F;
    }
    free(vals);
    free(poly);
    return e;
}

/* ---- one step ------------------------------------------------------------ */

typedef struct {
    const st_plan_model_t *m;
    const st_plan_params_t *p;
    const st_placement_t *pl;
    const st_plan_node_t *pn;
    int **per_layer; /* [node][layer]: experts of the layer on the node */
} ctx_t;

/* Positions a batch of n tokens attends over in layer l, summed: with seq (a
 * prompt chunk) token i sits at pos + i, else (users' tokens) each at pos;
 * a sliding-window layer sees at most n_swa of them. */
static double s_attn_positions(const st_plan_model_t *m, int l, double n, double pos, bool seq) {
    const double w = m->is_swa[l] && m->n_swa > 0 ? m->n_swa : INFINITY;
    if (!seq) return n * fmin(pos + 1, w);
    double sum = 0;
    for (double i = 0; i < n; i++) sum += fmin(pos + i + 1, w);
    return sum;
}

/* Seconds of the coordinator's work on layer l for n tokens: its dense
 * matrices, and attention over the KV cache (forward.c: per query head a dot
 * and an axpy of head_dim per position, f16 cache) at the board's 1-token f16
 * rate, or its bandwidth for the cache's bytes when that is slower. */
static double s_coord_layer(const ctx_t *c, int l, double n, double pos, bool seq) {
    const st_plan_model_t *m = c->m;
    const double ctx = s_attn_positions(m, l, n, pos, seq);
    const double macs = 2.0 * m->n_head * m->head_dim * ctx, bytes = 2.0 * m->n_head_kv * m->head_dim * 2 * ctx;
    double t = fmax(macs / c->p->coord->matmul[ST_TYPE_F16][0], bytes / c->p->coord->mem_bw);
    for (int k = 0; k < 5; k++)
        t += st_board_matmul_s(c->p->coord, c->m->dense[l][k].type, c->m->dense[l][k].rows, c->m->dense[l][k].cols, n,
                               true);
    return t;
}

/* Seconds of one expert of layer l with b tokens on board bd; `unpacked`: in the file's
 * layout, as a node computes its experts when they do not all fit in its RAM. */
static double s_expert(const ctx_t *c, const st_board_t *bd, int l, double b, bool unpacked) {
    double t = 0;
    for (int k = 0; k < 3; k++) {
        const st_type_t ty = c->m->exp[l][k].type;
        const int64_t rows = c->m->exp[l][k].rows, cols = c->m->exp[l][k].cols;
        t += unpacked ? st_board_matmul_unpacked_s(bd, ty, rows, cols, b)
                      : st_board_matmul_s(bd, ty, rows, cols, b, false);
    }
    return t;
}

/* Expected slowest node of layer l with d distinct experts used (fractional:
 * interpolated), b tokens each; reads free when `no_reads`. */
static double s_layer_nodes(const ctx_t *c, int l, double d, double b, double hide, bool no_reads) {
    const int N = c->p->n_nodes;
    int *ram = calloc((size_t)N * 2, sizeof *ram), *disk = ram + N;
    double *cmp = calloc((size_t)N * 2, sizeof *cmp), *rd = cmp + N;
    if (!ram || !cmp) {
        free(ram);
        free(cmp);
        return 0;
    }
    for (int i = 0; i < N; i++) {
        const int held = c->per_layer[i][l];
        ram[i] = (int)floor(c->pn[i].ram_fraction * held + 0.5);
        disk[i] = held - ram[i];
        cmp[i] = s_expert(c, &c->p->nodes[i], l, b, c->pn[i].over_budget);
        rd[i] = no_reads ? 0 : (double)c->m->layer_expert_bytes[l] / c->p->nodes[i].disk_direct;
    }
    const int lo = (int)floor(d), hi = (int)ceil(d);
    double e = st_plan_expected_max(N, ram, disk, cmp, rd, hide, lo);
    if (hi != lo) e += (d - lo) * (st_plan_expected_max(N, ram, disk, cmp, rd, hide, hi) - e);
    free(ram);
    free(cmp);
    return e > 0 ? e : 0;
}

/* Expected cost of lost segments of one message of `bytes` (see s_layer). */
static double s_lost(const st_link_t *link, double bytes) {
    const double segs = ceil(bytes / TCP_PAYLOAD), rtt = 2 * link->delay, pto = fmax(2 * rtt, TLP_MIN);
    return segs > 0 ? (1 - pow(1 - link->loss, segs - 1)) * rtt + link->loss * (pto + rtt) : 0;
}

/* The rate of node i's port and the coordinator's. */
static double s_node_rate(const st_plan_params_t *p, int i) {
    return p->link.rate > 0 ? fmin(p->link.rate, p->nodes[i].net_bps) : p->nodes[i].net_bps;
}
static double s_coord_rate(const st_plan_params_t *p) {
    return fmin(p->link.rate > 0 ? fmin(p->link.rate, p->coord->net_bps) : p->coord->net_bps, p->coord->msg_bps);
}

/* The slowest-node values of the last layer computed, reused while layers are alike. */
typedef struct {
    double key[2], val[2];
    int layer;
} layer_cache_t;

/* Layer l of a step with n tokens: coordinator, slowest node, storage,
 * transfer and latency (no overlap, no head). */
static st_plan_step_t s_layer(const ctx_t *c, int l, double n, double pos, bool seq, layer_cache_t *lc) {
    const st_plan_model_t *m = c->m;
    const st_plan_params_t *p = c->p;
    const int X = m->n_expert, k = m->n_expert_used, N = p->n_nodes;
    st_plan_step_t s = {0};
    /* distinct experts that n tokens use, and tokens per used expert */
    const double d = X * (1 - pow(1 - (double)k / X, n)), b = n * k / d;
    const double rc = s_coord_rate(p), E = m->n_embd;
    const double attn = s_coord_layer(c, l, n, pos, seq);
    /* bytes each way: a node gets the rows of the tokens that use it (and
     * with compact results each pair's weight), returns one row per (token,
     * expert), or per token that uses it when compact */
    double out = 0, back = 0, out_max = 0, back_max = 0, lost = 0;
    for (int i = 0; i < N; i++) {
        const int held = c->per_layer[i][l];
        const double use = 1 - s_binom(X - held, k) / s_binom(X, k); /* a token uses node i */
        const double pairs = n * k * held / (double)X;
        const double o = n * use * m->act_bytes + (p->wire != ST_PLAN_WIRE_EXACT ? pairs * 4 : 0);
        const double r = p->wire == ST_PLAN_WIRE_EXACT     ? pairs * E * 4
                         : p->wire == ST_PLAN_WIRE_COMPACT ? n * use * E * 4
                                                           : n * use * (E * 2 + 4);
        out += o, back += r;
        out_max = fmax(out_max, o / s_node_rate(p, i));
        back_max = fmax(back_max, r / s_node_rate(p, i));
        /* lost segments: those inside a message come again after duplicate
         * ACKs, all of them within about one round trip (SACK); the last one
         * of a message gets no duplicate ACKs, so a tail-loss probe goes out
         * after max(2 round trips, 10 ms), then the round trip. Summed over
         * the layer's messages (an upper bound: they travel in parallel) */
        lost += s_lost(&p->link, o) + s_lost(&p->link, r);
    }
    const double t_out = fmax(out / rc, out_max);
    s.coord = attn;
    s.transfer = t_out + fmax(back / rc, back_max);
    s.latency = 2 * p->link.delay + p->coord->rtt + lost;
    /* the prefetch hint leaves before attention: reads overlap it and the send */
    const double hide = attn + t_out + p->link.delay;
    bool same = lc->layer >= 0 && lc->key[0] == hide && lc->key[1] == d;
    for (int i = 0; same && i < N; i++) same = c->per_layer[i][l] == c->per_layer[i][lc->layer];
    for (int kk = 0; same && kk < 3; kk++) same = m->exp[l][kk].type == m->exp[lc->layer][kk].type;
    if (!same) {
        lc->val[0] = s_layer_nodes(c, l, d, b, hide, true);
        lc->val[1] = s_layer_nodes(c, l, d, b, hide, false);
        lc->key[0] = hide, lc->key[1] = d, lc->layer = l;
    }
    s.node = lc->val[0];
    s.storage = fmax(0.0, lc->val[1] - lc->val[0]);
    s.total = s.coord + s.node + s.storage + s.transfer + s.latency;
    return s;
}

/* The output head for n drawn tokens: on the coordinator, or one round trip
 * to every slice's primary for all n (remote_head.c draws a step's sequences
 * together): their hidden states out (f32), the slowest primary's matmul of
 * n rows, per sequence HEAD_CANDIDATES (id, logit) pairs and the slice's
 * maximum and two sums back. */
static st_plan_step_t s_head(const ctx_t *c, double n) {
    const st_plan_model_t *m = c->m;
    const st_plan_params_t *p = c->p;
    st_plan_step_t s = {0};
    if (n <= 0) return s;
    const int S = st_placement_head_slices(c->pl), N = p->n_nodes;
    if (S == 0) {
        s.coord = st_board_matmul_s(p->coord, m->head.type, m->head.rows, m->head.cols, n, true);
    } else {
        const double out = n * m->n_embd * 4.0, back = n * (HEAD_CANDIDATES * 8.0 + 4 + 16);
        double *busy = calloc((size_t)N, sizeof *busy), *msgs = calloc((size_t)N, sizeof *msgs);
        if (!busy || !msgs) {
            free(busy);
            free(msgs);
            return s;
        }
        for (int k = 0; k < S; k++) {
            const int i = st_placement_head_owner(c->pl, k, 0);
            uint32_t lo, hi;
            st_placement_head_slice(c->pl, k, &lo, &hi);
            if (i < 0 || i >= N) continue;
            busy[i] += st_board_matmul_s(&p->nodes[i], m->head.type, hi - lo, m->head.cols, n, true);
            msgs[i] += 1;
            s.latency += s_lost(&p->link, out) + s_lost(&p->link, back);
        }
        double slow = 0, out_max = 0, back_max = 0;
        for (int i = 0; i < N; i++) {
            slow = fmax(slow, busy[i]);
            out_max = fmax(out_max, msgs[i] * out / s_node_rate(p, i));
            back_max = fmax(back_max, msgs[i] * back / s_node_rate(p, i));
        }
        free(busy);
        free(msgs);
        s.node = slow;
        s.transfer = fmax(S * out / s_coord_rate(p), out_max) + fmax(S * back / s_coord_rate(p), back_max);
        s.latency = 2 * p->link.delay + p->coord->rtt + s.latency;
    }
    s.total = s.coord + s.node + s.storage + s.transfer + s.latency;
    return s;
}

static void s_add(st_plan_step_t *a, const st_plan_step_t *b);

/* One step over the cluster with n tokens (one per user, or a prompt chunk);
 * `head_tokens` rows of logits at the end. With overlap (and n >= 2) each
 * layer runs two micro-batches of n/2: the coordinator's work of one hides
 * the other's wait (see plan.h). */
static st_plan_step_t s_step(const ctx_t *c, double n, double pos, bool seq, double head_tokens, bool overlap) {
    st_plan_step_t s = {0};
    layer_cache_t lc[2] = {{.layer = -1}, {.layer = -1}};
    overlap = overlap && n >= 2;
    for (int l = 0; l < c->m->n_layer; l++) {
        if (!overlap) {
            st_plan_step_t a = s_layer(c, l, n, pos, seq, &lc[0]);
            s_add(&s, &a);
            continue;
        }
        const double na = ceil(n / 2), nb = n - na;
        st_plan_step_t a = s_layer(c, l, na, pos, seq, &lc[0]), b = s_layer(c, l, nb, pos, seq, &lc[1]);
        const double wait_a = a.total - a.coord, wait_b = b.total - b.coord;
        /* each resource serves both halves (the coordinator's CPU, the wire, the nodes), and each
         * half waits for its own results before its next layer */
        const double layer =
            fmax(fmax(fmax(a.coord + b.coord, a.transfer + b.transfer), a.node + a.storage + b.node + b.storage),
                 fmax(a.total, b.total));
        s_add(&s, &a);
        s_add(&s, &b);
        s.overlap += a.coord + b.coord + wait_a + wait_b - layer;
    }
    st_plan_step_t h = s_head(c, head_tokens);
    s_add(&s, &h);
    s.total = s.coord + s.node + s.storage + s.transfer + s.latency - s.overlap;
    return s;
}

static void s_add(st_plan_step_t *a, const st_plan_step_t *b) {
    a->coord += b->coord, a->node += b->node, a->storage += b->storage, a->transfer += b->transfer;
    a->latency += b->latency, a->overlap += b->overlap, a->total += b->total;
}

const char *st_plan_bottleneck(const st_plan_step_t *s) {
    const double v[5] = {s->coord, s->node, s->storage, s->transfer, s->latency};
    static const char *const names[5] = {"coordinator", "nodes", "storage", "network", "round trips"};
    int best = 0;
    for (int i = 1; i < 5; i++)
        if (v[i] > v[best]) best = i;
    return names[best];
}

/* ---- the plan ------------------------------------------------------------ */

static uint64_t s_type_bit(st_type_t t) { return (unsigned)t < 64 ? 1ull << t : 0; }

static void s_warn(st_plan_t *pl, const char *fmt, const char *a, double x, double y) {
    if (pl->n_warnings < 4) snprintf(pl->warnings[pl->n_warnings++], sizeof pl->warnings[0], fmt, a, x, y);
}

st_plan_t *st_plan_new(const st_plan_model_t *m, const st_plan_params_t *p) {
    if (!m || !p || !p->coord || !p->nodes || p->n_nodes < 1 || p->n_nodes > 4096 || p->users < 1 || p->users > 4096 ||
        p->prompt < 1 || p->n_batch < 1 || p->n_ctx < 1) {
        st_fail(ST_EINVAL, "bad plan parameters");
        return NULL;
    }
    const int N = p->n_nodes, L = m->n_layer, X = m->n_expert;
    const uint64_t row_bytes = m->head.rows > 0 ? m->head_bytes / (uint64_t)m->head.rows : 0;
    /* st-node's own rule (node_mem.h): its process, compute buffers, store index and message
     * reserves come out of --mem; the rest, its room, holds its head slices and a cache of whole
     * experts, each a store record in whole pages of the board's kernel */
    uint64_t max_expert = 0; /* a node's cache entry holds the largest expert (store.c's record) */
    for (int l = 0; l < L; l++)
        max_expert = m->layer_expert_bytes[l] > max_expert ? m->layer_expert_bytes[l] : max_expert;
    const uint64_t fit = m->act_bytes ? ST_WIRE_MAX_FRAME / m->act_bytes : ST_WIRE_MAX_TOKENS;
    const uint32_t max_tokens = fit < ST_WIRE_MAX_TOKENS ? (uint32_t)fit : ST_WIRE_MAX_TOKENS; /* st_wire_max_tokens */
    uint64_t *fixed = calloc((size_t)N, sizeof *fixed), *room = calloc((size_t)N, sizeof *room);
    if (!fixed || !room) {
        free(fixed), free(room);
        st_fail(ST_ENOMEM, "no memory");
        return NULL;
    }
    for (int i = 0; i < N; i++) {
        fixed[i] = st_node_fixed_bytes((uint32_t)(L * X), max_expert, max_tokens, (uint32_t)m->n_expert_used,
                                       (uint32_t)m->n_embd, p->nodes[i].threads);
        room[i] = p->nodes[i].mem > fixed[i] ? p->nodes[i].mem - fixed[i] : 0;
    }
    /* --head auto: sharded when every node's room is at least 4 of its slices (setup.c's rule) */
    bool sharded = p->head == ST_PLAN_HEAD_SHARDED;
    if (p->head == ST_PLAN_HEAD_AUTO) {
        const uint64_t slice = st_placement_head_slice_bytes((uint32_t)m->head.rows, row_bytes, N);
        sharded = row_bytes > 0;
        for (int i = 0; i < N; i++) sharded = sharded && room[i] / 4 >= slice;
    }
    if (sharded && row_bytes == 0) {
        free(fixed), free(room);
        st_fail(ST_EINVAL, "the model's head has no rows to shard");
        return NULL;
    }
    /* the coordinator keeps the dense weights, the users' KV caches and the logits */
    const uint64_t kv = (uint64_t)p->users * p->n_ctx * L * 2ull * m->n_head_kv * m->head_dim * 2;
    /* a sharded head leaves the coordinator (tied embeddings: one row read per token) */
    const uint64_t cut = sharded ? m->head_bytes : 0, dense = m->dense_bytes > cut ? m->dense_bytes - cut : 0;
    const uint64_t coord_ram = dense + kv + (uint64_t)p->users * m->n_vocab * 4 + COORD_PROCESS;
    if (coord_ram > p->coord->ram) {
        free(fixed), free(room);
        st_fail(ST_ENOMEM,
                "the coordinator's board %s has %.1f GiB of RAM; it needs %.2f GiB (dense weights %.2f GiB, KV "
                "caches of %d users x %d tokens %.2f GiB): choose a board with more RAM",
                p->coord->name, p->coord->ram / 1073741824.0, coord_ram / 1073741824.0, dense / 1073741824.0, p->users,
                p->n_ctx, kv / 1073741824.0);
        return NULL;
    }
    st_plan_t *pl = calloc(1, sizeof *pl);
    st_place_node_t *pn = calloc((size_t)N, sizeof *pn);
    ctx_t c = {m, p, NULL, NULL, calloc((size_t)N, sizeof(int *))};
    if (!pl || !pn || !c.per_layer || !(pl->nodes = calloc((size_t)N, sizeof *pl->nodes))) goto fail;
    pl->n_nodes = N;
    pl->coord_ram = coord_ram;
    pl->head_sharded = sharded;
    /* the coordinator's own placement over the same room and expert cost as st-node reports them */
    for (int i = 0; i < N; i++)
        pn[i] = (st_place_node_t){.mem_budget = p->nodes[i].mem,
                                  .room = room[i],
                                  .expert_cost = st_node_expert_cost(max_expert, p->nodes[i].page_size),
                                  .store_cap = p->nodes[i].disk,
                                  .head = sharded};
    st_place_params_t pp = {.n_layer = L,
                            .n_expert = X,
                            .replication = p->replication > 1 ? p->replication : 1,
                            .layer_bytes = m->layer_expert_bytes,
                            .head_rows = sharded ? (uint32_t)m->head.rows : 0,
                            .head_row_bytes = row_bytes};
    if (!(pl->placement = st_placement_new(&pp, pn, N))) {
        st_log(ST_LOG_ERROR, "impossible setup: the experts (%.2f GiB) do not fit on the nodes' storage",
               m->expert_bytes / 1073741824.0);
        goto fail;
    }
    for (int i = 0; i < N; i++) {
        st_plan_node_t *n = &pl->nodes[i];
        n->head_slices = st_placement_node_head_slices(pl->placement, i);
        n->head_bytes = st_placement_node_head_bytes(pl->placement, i);
        n->fixed = fixed[i];
        const uint64_t one = st_node_expert_cost(max_expert, p->nodes[i].page_size);
        if (n->fixed + n->head_bytes + one > p->nodes[i].mem) {
            st_log(ST_LOG_ERROR,
                   "impossible setup: node %d's --mem (%.3f GiB) cannot hold its own %.3f GiB, its head slice "
                   "(%.3f GiB) and one expert (%.3f MiB)",
                   i, p->nodes[i].mem / 1073741824.0, n->fixed / 1073741824.0, n->head_bytes / 1073741824.0,
                   one / 1048576.0);
            goto fail;
        }
        const uint64_t node_room = st_placement_node_room(pl->placement, i); /* (--mem - fixed - head) / one */
        /* a layer's compute runs on the primaries (see plan.h) */
        if (!(c.per_layer[i] = calloc((size_t)L, sizeof(int)))) goto fail;
        for (int l = 0; l < L; l++)
            for (int e = 0; e < X; e++) c.per_layer[i][l] += st_placement_owner(pl->placement, l, e, 0) == i;
        n->experts = st_placement_node_experts(pl->placement, i);
        n->bytes = st_placement_node_bytes(pl->placement, i);
        n->room = node_room;
        n->over_budget = (uint64_t)n->experts > node_room;
        n->ram = n->over_budget ? n->bytes * node_room / (uint64_t)n->experts : n->bytes;
        n->stream = n->bytes - n->ram;
        n->ram_fraction = n->experts ? (n->over_budget ? (double)node_room / n->experts : 1.0) : 1.0;
    }
    c.pl = pl->placement;
    c.pn = pl->nodes;

    /* decode: each user's token after its prompt */
    pl->decode1 = s_step(&c, 1, p->prompt, false, 1, false);
    pl->decodeN = p->users > 1 ? s_step(&c, p->users, p->prompt, false, p->users, p->overlap) : pl->decode1;
    for (int done = 0; done < p->prompt; done += p->n_batch) { /* logits of the last token only */
        const int n = p->prompt - done < p->n_batch ? p->prompt - done : p->n_batch;
        st_plan_step_t s = s_step(&c, n, done, true, done + n >= p->prompt ? 1 : 0, false);
        s_add(&pl->prefill, &s);
    }
    pl->decode_tps_1 = 1 / pl->decode1.total;
    pl->decode_tps_n = p->users / pl->decodeN.total;
    pl->prefill_tps = p->prompt / pl->prefill.total;
    pl->ttft_s = pl->prefill.total;
    pl->bottleneck = st_plan_bottleneck(&pl->decode1);

    int over = 0, worst = 0; /* the node that streams the largest part of its share */
    for (int i = 0; i < N; i++) {
        over += pl->nodes[i].over_budget;
        if (pl->nodes[i].ram_fraction < pl->nodes[worst].ram_fraction) worst = i;
    }
    if (over)
        s_warn(pl,
               "%s nodes hold more experts than their budget: up to %.0f%% of a node's share streams from its "
               "storage at %.0f MB/s",
               over == N ? "all" : "some", 100 * (1 - pl->nodes[worst].ram_fraction),
               p->nodes[worst].disk_direct / 1e6);
    if (coord_ram + COORD_PROCESS > p->coord->ram - (p->coord->ram > (1ull << 30) ? (512ull << 20) : 0))
        s_warn(pl, "the coordinator (%s) needs %.2f of its %.2f GiB: little room for the OS and the page cache",
               p->coord->name, coord_ram / 1073741824.0, p->coord->ram / 1073741824.0);
    /* a profile taken on a busy machine: its rates, and so this plan, may be low
     * (the rates of the model's weight types, and F16's for attention over the cache) */
    uint64_t types = m->n_head_kv > 0 ? s_type_bit(ST_TYPE_F16) : 0;
    for (int l = 0; l < L; l++) {
        for (int k = 0; k < 5; k++) types |= m->dense[l][k].rows > 0 ? s_type_bit(m->dense[l][k].type) : 0;
        for (int k = 0; k < 3; k++) types |= s_type_bit(m->exp[l][k].type);
    }
    types |= s_type_bit(m->head.type);
    for (int i = -1; i < N; i++) {
        const st_board_t *b = i < 0 ? p->coord : &p->nodes[i];
        char what[64], role[32] = "the coordinator's board";
        const double spread = st_board_worst_spread(b, types, what, sizeof what, NULL);
        bool seen = false; /* one warning for the nodes of one profile */
        for (int j = 0; i > 0 && j < i && !seen; j++)
            seen = !strcmp(p->nodes[j].name, b->name) &&
                   st_board_worst_spread(&p->nodes[j], types, NULL, 0, NULL) == spread;
        if (i >= 0) snprintf(role, sizeof role, "node %d's board", i);
        if (!seen && spread > ST_BOARD_BUSY_SPREAD && pl->n_warnings < 4)
            snprintf(pl->warnings[pl->n_warnings++], sizeof pl->warnings[0],
                     "%s %.40s was profiled on a busy machine (%.40s: its timed blocks spread %.2fx): its "
                     "rates, and so this plan, may be low; profile it again when nothing else runs",
                     role, b->name, what, spread);
    }
    for (int i = 0; i < N; i++) free(c.per_layer[i]);
    free(c.per_layer);
    free(pn);
    free(fixed), free(room);
    return pl;
fail:
    for (int i = 0; c.per_layer && i < N; i++) free(c.per_layer[i]);
    free(c.per_layer);
    free(pn);
    free(fixed), free(room);
    st_plan_destroy(&pl);
    return NULL;
}

void st_plan_destroy(st_plan_t **plp) {
    if (!plp || !*plp) return;
    st_placement_destroy(&(*plp)->placement);
    free((*plp)->nodes);
    free(*plp);
    *plp = NULL;
}
