/* The output head sharded by vocabulary over the nodes (see remote_head.h). */
#include "remote_head.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "head_hashes.h"
#include "st_log.h"

#define HEAD_ALIGN 16        /* slice bounds: whole packed groups (ST_PACK_MAX_ROWS) */
#define HEAD_RETRY_MS 2000.0 /* a node that lost its slice is assigned it again at most this often */

typedef struct {
    st_wire_head_assign_t a;
    bool has;        /* a slice was cut for this node */
    bool serves;     /* the node holds it: HEAD_COMPUTE goes there */
    bool failed;     /* this step's answer is unusable */
    double retry_ms; /* lost its slice: HEAD_ASSIGN again from then on (st_now_ms) */
    /* a draw's candidates from this slice (node's, or computed here) */
    st_sampler_cand_t *cand;
    uint32_t n_cand, cap;
    float max;
    double sum, sum_temp;
} hnode_t;

struct st_remote_head {
    const st_model_t *m;
    st_cluster_t *cl;
    st_ctx_t *ctx;
    st_head_hashes_t *hashes;
    int N, timeout_ms, push_timeout_ms;
    hnode_t *nodes;
    uint64_t *rids;
    st_remote_head_totals_t tot;
    /* the current step (the reply callback's view) */
    st_wire_head_compute_t req;
    float *y;
    size_t y_stride;
    uint32_t s0; /* first hidden state of this request */
    /* a deferred draw (stash, sample) */
    float *xs;                /* n_embd: the stashed hidden state */
    uint32_t *pen_id, *pen_n; /* the penalty window, distinct ids and counts */
    int pen_cap;
    int32_t *tmp_id; /* candidates computed here */
    float *tmp_val;
    int tmp_cap;
};

st_remote_head_t *st_remote_head_new(const st_model_t *m, st_cluster_t *cl, int timeout_ms, int push_timeout_ms,
                                     const uint8_t model_hash[ST_WIRE_HASH_BYTES], const char *hash_cache) {
    st_remote_head_t *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    if (!(h->hashes = st_head_hashes_new(m, model_hash, hash_cache))) {
        free(h);
        return NULL;
    }
    h->m = m;
    h->cl = cl;
    h->timeout_ms = timeout_ms;
    h->push_timeout_ms = push_timeout_ms;
    h->N = st_cluster_n_nodes(cl);
    h->nodes = calloc((size_t)h->N + 1, sizeof *h->nodes);
    h->rids = calloc((size_t)h->N + 1, sizeof *h->rids);
    if (!h->nodes || !h->rids) st_remote_head_destroy(&h);
    return h;
}

void st_remote_head_destroy(st_remote_head_t **hp) {
    if (!hp || !*hp) return;
    st_remote_head_t *h = *hp;
    for (int i = 0; h->nodes && i < h->N; i++) free(h->nodes[i].cand);
    free(h->xs), free(h->pen_id), free(h->pen_n), free(h->tmp_id), free(h->tmp_val);
    st_head_hashes_destroy(&h->hashes);
    free((*hp)->nodes);
    free((*hp)->rids);
    free(*hp);
    *hp = NULL;
}

/* Bounds of slice i of n over V rows: multiples of HEAD_ALIGN, the last ends at V. */
static uint32_t s_bound(uint32_t V, int i, int n) {
    if (i >= n) return V;
    uint64_t b = (uint64_t)V * (uint64_t)i / (uint64_t)n;
    return (uint32_t)(b / HEAD_ALIGN * HEAD_ALIGN);
}

uint64_t st_remote_head_slice_bytes(const st_model_t *m, int n) {
    if (n < 1) return 0;
    const uint32_t V = (uint32_t)m->cfg.n_vocab;
    uint32_t most = 0;
    for (int i = 0; i < n; i++) {
        const uint32_t r = s_bound(V, i + 1, n) - s_bound(V, i, n);
        most = r > most ? r : most;
    }
    return (uint64_t)most * m->output.row_bytes;
}

const st_remote_head_totals_t *st_remote_head_totals(const st_remote_head_t *h) { return &h->tot; }

static const uint8_t *s_rows(const st_remote_head_t *h, uint32_t lo) {
    return h->m->output.data + (size_t)lo * h->m->output.row_bytes;
}

/* Nodes added to the cluster since (st_cluster_add) get entries. */
static int s_follow_cluster(st_remote_head_t *h) {
    const int n = st_cluster_n_nodes(h->cl);
    if (n <= h->N) return 0;
    hnode_t *nv = realloc(h->nodes, ((size_t)n + 1) * sizeof *nv);
    if (nv) h->nodes = nv;
    uint64_t *rv = nv ? realloc(h->rids, ((size_t)n + 1) * sizeof *rv) : NULL;
    if (rv) h->rids = rv;
    if (!nv || !rv) return ST_ENOMEM;
    memset(h->nodes + h->N, 0, ((size_t)(n - h->N) + 1) * sizeof *nv);
    memset(h->rids + h->N, 0, ((size_t)(n - h->N) + 1) * sizeof *rv);
    h->N = n;
    return 0;
}

/* ---- placement and push ---- */

typedef struct {
    st_remote_head_t *h;
    bool *pushing; /* per node: still to receive chunks */
    bool *restart; /* per node: a chunk was refused, the slice starts again */
} push_ctx_t;

/* HEAD_ACK to an assign or a chunk. */
static int s_on_ack(void *arg, int i, st_wire_rx_t *rx) {
    push_ctx_t *x = arg;
    hnode_t *nd = &x->h->nodes[i];
    if (rx->msg.type != ST_MSG_HEAD_ACK) {
        st_log(ST_LOG_WARN, "node %d (%s) refused its head slice: %s", i, st_cluster_url(x->h->cl, i),
               rx->msg.type == ST_MSG_ERROR ? rx->msg.error.message : st_wire_type_name(rx->msg.type));
        x->pushing[i] = nd->serves = false;
    } else if (rx->msg.head_ack.complete) {
        x->pushing[i] = false;
        nd->serves = true;
    } else if (!rx->msg.head_ack.ok) {
        x->restart[i] = true;
    }
    return 0;
}

static uint64_t s_slice_bytes(const st_remote_head_t *h, int i) {
    const hnode_t *nd = &h->nodes[i];
    return st_wire_head_bytes(nd->a.type, (uint32_t)h->m->cfg.n_embd, nd->a.lo, nd->a.hi);
}

/* Rounds of one chunk to every node still pushing, until each says complete
 * (or refused one chunk too often, or stopped answering: its slice stays here). */
static int s_push_rounds(st_remote_head_t *h, push_ctx_t *x, bool quiet) {
    const int N = h->N;
    uint64_t *next = calloc((size_t)N + 1, sizeof *next); /* next chunk's offset per node */
    int *tries = calloc((size_t)N + 1, sizeof *tries);
    if (!next || !tries) {
        free(next), free(tries);
        return ST_ENOMEM;
    }
    uint64_t total = 0, sent = 0;
    for (int i = 0; i < N; i++)
        if (x->pushing[i]) total += s_slice_bytes(h, i);
    double last_print = st_now_ms();
    for (;;) {
        bool any = false;
        memset(h->rids, 0, (size_t)N * sizeof *h->rids);
        for (int i = 0; i < N; i++) {
            if (!x->pushing[i] || !st_cluster_is_up(h->cl, i)) continue;
            const uint64_t size = s_slice_bytes(h, i);
            if (x->restart[i] || next[i] >= size) { /* refused, or all sent without "complete" */
                x->restart[i] = false;
                next[i] = 0;
                if (++tries[i] > 3) {
                    st_log(ST_LOG_WARN, "node %d (%s): its head slice does not arrive whole; it stays here", i,
                           st_cluster_url(h->cl, i));
                    x->pushing[i] = false;
                    continue;
                }
            }
            const size_t len = size - next[i] < ST_WIRE_MAX_CHUNK ? (size_t)(size - next[i]) : ST_WIRE_MAX_CHUNK;
            const uint8_t *data = s_rows(h, h->nodes[i].a.lo) + next[i];
            st_wire_msg_t m = {.type = ST_MSG_HEAD_PUT,
                               .head_put = {.offset = next[i], .total = size, .lo = h->nodes[i].a.lo}};
            st_wire_hash(data, len, m.head_put.chunk_hash);
            if (st_cluster_send(h->cl, i, &m, data, len, true) < 0) {
                x->pushing[i] = false;
                continue;
            }
            h->rids[i] = m.request_id;
            next[i] += len;
            sent += len;
            h->tot.push_bytes += len;
            any = true;
        }
        if (!any) break;
        int rc = st_cluster_gather(h->cl, h->rids, st_now_ms() + h->push_timeout_ms, s_on_ack, x);
        for (int i = 0; i < N; i++)
            if (h->rids[i]) { /* no ack in time */
                st_cluster_set_down(h->cl, i, "no answer to a head chunk in time");
                x->pushing[i] = false;
            }
        if (rc < 0 && rc != ST_ETIMEOUT) break;
        if (!quiet && st_now_ms() - last_print > 1000) {
            fprintf(stderr, "cluster: head: %.1f of %.1f MiB pushed\n", (double)sent / (1 << 20),
                    (double)total / (1 << 20));
            last_print = st_now_ms();
        }
    }
    if (!quiet && total) fprintf(stderr, "cluster: head: %.1f MiB pushed\n", (double)sent / (1 << 20));
    free(next), free(tries);
    return 0;
}

/* HEAD_ASSIGN to the nodes flagged in want (their slices cut), waits for the acks. */
static void s_assign(st_remote_head_t *h, const bool *want, push_ctx_t *x) {
    memset(h->rids, 0, (size_t)h->N * sizeof *h->rids);
    for (int i = 0; i < h->N; i++) {
        x->pushing[i] = false;
        if (!want[i] || !st_cluster_is_up(h->cl, i)) continue;
        st_wire_msg_t m = {.type = ST_MSG_HEAD_ASSIGN, .head_assign = h->nodes[i].a};
        if (st_cluster_send(h->cl, i, &m, NULL, 0, true) == 0) h->rids[i] = m.request_id, x->pushing[i] = true;
    }
    st_cluster_gather(h->cl, h->rids, st_now_ms() + h->timeout_ms, s_on_ack, x);
    for (int i = 0; i < h->N; i++)
        if (h->rids[i]) x->pushing[i] = false; /* no answer: the slice stays here */
}

/* The head's pages, read to hash and push the slices, leave this process
 * (the file's pages stay in the page cache): its resident memory is then
 * the head's only where a fallback reads it. Whole pages inside the matrix
 * only: a neighbour's packed (private, written) pages must stay. */
static void s_drop_pages(const st_remote_head_t *h, uint32_t lo, uint32_t hi) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)s_rows(h, lo) + page - 1) & ~(page - 1);
    const uintptr_t b = (uintptr_t)s_rows(h, hi) & ~(page - 1);
    if (h->m->head_mapped && b > a && madvise((void *)a, b - a, MADV_DONTNEED) != 0)
        st_log(ST_LOG_DEBUG, "head pages not dropped: madvise failed");
}

int st_remote_head_place(st_remote_head_t *h, const bool *take, bool quiet) {
    if (s_follow_cluster(h) < 0) return ST_ENOMEM;
    const int N = h->N;
    const uint32_t V = (uint32_t)h->m->cfg.n_vocab;
    int up = 0;
    for (int i = 0; i < N; i++) up += st_cluster_is_up(h->cl, i) && take[i];
    bool *want = calloc((size_t)N + 1, sizeof *want);
    push_ctx_t x = {h, calloc((size_t)N + 1, sizeof *x.pushing), calloc((size_t)N + 1, sizeof *x.restart)};
    if (!want || !x.pushing || !x.restart) {
        free(want), free(x.pushing), free(x.restart);
        return ST_ENOMEM;
    }
    int k = 0;
    for (int i = 0; i < N; i++) {
        hnode_t *nd = &h->nodes[i];
        free(nd->cand);
        memset(nd, 0, sizeof *nd);
        if (!st_cluster_is_up(h->cl, i) || !take[i]) continue;
        nd->a = (st_wire_head_assign_t){.n_vocab = V,
                                        .type = (uint32_t)h->m->output.type,
                                        .lo = s_bound(V, k, up),
                                        .hi = s_bound(V, k + 1, up),
                                        .n_slots = 1};
        k++;
        const int hr = st_head_hashes_get(h->hashes, nd->a.lo, nd->a.hi, nd->a.hash);
        if (hr < 0) continue;                            /* not reached: the cut is inside the head */
        if (hr > 0) s_drop_pages(h, nd->a.lo, nd->a.hi); /* read to hash it: one slice resident at a time */
        nd->has = want[i] = true;
    }
    const uint64_t hashed = st_head_hashes_read_bytes(h->hashes) - h->tot.hashed_bytes;
    h->tot.hashed_bytes += hashed;
    st_head_hashes_save(h->hashes);
    if (k)
        st_log(ST_LOG_INFO, "head: %llu B read to hash %d slices (the rest from the cache)", (unsigned long long)hashed,
               k);
    s_assign(h, want, &x);
    int rc = s_push_rounds(h, &x, quiet);
    s_drop_pages(h, 0, V);
    int serving = 0;
    for (int i = 0; i < N; i++) serving += h->nodes[i].serves;
    if (up)
        st_log(ST_LOG_INFO, "head: %d of %d slices on nodes (%llu B of %s each at most)", serving, up,
               (unsigned long long)st_remote_head_slice_bytes(h->m, up), st_type_name(h->m->output.type));
    free(want), free(x.pushing), free(x.restart);
    return rc < 0 ? rc : serving;
}

void st_remote_head_between_steps(st_remote_head_t *h) {
    if (s_follow_cluster(h) < 0) return;
    bool *want = calloc((size_t)h->N + 1, sizeof *want);
    push_ctx_t x = {h, calloc((size_t)h->N + 1, sizeof *x.pushing), calloc((size_t)h->N + 1, sizeof *x.restart)};
    bool any = false;
    const double now = st_now_ms();
    for (int i = 0; want && i < h->N; i++) {
        hnode_t *nd = &h->nodes[i];
        any |= want[i] = nd->has && !nd->serves && st_cluster_is_up(h->cl, i) && now >= nd->retry_ms;
        if (want[i]) nd->retry_ms = now + HEAD_RETRY_MS; /* a node without its slice is not asked every step */
    }
    if (any && x.pushing && x.restart) s_assign(h, want, &x); /* from its store only: no push mid-generation */
    free(want), free(x.pushing), free(x.restart);
}

/* ---- the step ---- */

/* Node i's reply to a head request, counted and checked (st_wire_check_head_result);
 * false when it refused or answered wrongly: the node is marked failed. */
static bool s_reply_ok(st_remote_head_t *h, int i, st_wire_rx_t *rx, const char *what, const uint8_t **frame,
                       size_t *len) {
    hnode_t *nd = &h->nodes[i];
    *frame = st_wire_rx_frame(rx, len);
    h->tot.bytes_in += st_wire_encoded_size(&rx->msg) + *len;
    char why[256];
    if (rx->msg.type == ST_MSG_ERROR) {
        st_log(ST_LOG_WARN, "node %d (%s) refused its head slice's %s: %s", i, st_cluster_url(h->cl, i), what,
               rx->msg.error.message);
        nd->failed = true;
        nd->serves = false; /* e.g. it restarted without it: assigned again between steps */
        return false;
    }
    if (st_wire_check_head_result(&rx->msg, &h->req, &nd->a, *frame, *len, why, sizeof why)) {
        st_log(ST_LOG_WARN, "node %d (%s): bad head %s: %s", i, st_cluster_url(h->cl, i), what, why);
        nd->failed = true;
        return false;
    }
    return true;
}

static int s_on_result(void *arg, int i, st_wire_rx_t *rx) {
    st_remote_head_t *h = arg;
    hnode_t *nd = &h->nodes[i];
    size_t len;
    const uint8_t *frame;
    if (!s_reply_ok(h, i, rx, "logits", &frame, &len)) return 0;
    const uint32_t rows = nd->a.hi - nd->a.lo;
    for (uint32_t s = 0; s < h->req.n_seq; s++) /* frames are LE f32; so is every host we build for */
        memcpy(h->y + (size_t)(h->s0 + s) * h->y_stride + nd->a.lo, frame + (size_t)s * rows * 4u, (size_t)rows * 4u);
    return 0;
}

static int s_logits(void *arg, const float *xn, int n_out, float *y, size_t y_stride) {
    st_remote_head_t *h = arg;
    if (s_follow_cluster(h) < 0) return ST_ENOMEM; /* the gather reads one request id per node */
    const int N = h->N, E = h->m->cfg.n_embd;
    h->tot.calls++;
    h->tot.rows += (uint64_t)n_out;
    bool placed = false;
    for (int i = 0; i < N; i++) placed |= h->nodes[i].has;
    if (!placed) { /* no node was up to take a slice: the whole head here */
        st_ctx_head_rows(h->ctx, xn, n_out, 0, h->m->cfg.n_vocab, y, y_stride);
        h->tot.fallback_rows += (uint64_t)n_out * (uint64_t)h->m->cfg.n_vocab;
        h->tot.fallback_weight_bytes += (uint64_t)h->m->cfg.n_vocab * h->m->output.row_bytes;
        return 0;
    }
    /* hidden states per request: the largest slice's reply must fit a frame */
    uint32_t most = 1;
    for (int i = 0; i < N; i++) {
        const uint32_t r = h->nodes[i].has ? h->nodes[i].a.hi - h->nodes[i].a.lo : 1;
        most = r > most ? r : most;
    }
    uint32_t per = ST_WIRE_MAX_FRAME / (most * 4u);
    per = per < 1 ? 1 : per > ST_WIRE_MAX_HEAD_SEQ ? ST_WIRE_MAX_HEAD_SEQ : per;
    h->y = y;
    h->y_stride = y_stride;
    for (uint32_t s0 = 0; s0 < (uint32_t)n_out; s0 += per) {
        const uint32_t cnt = (uint32_t)n_out - s0 < per ? (uint32_t)n_out - s0 : per;
        h->req = (st_wire_head_compute_t){.n_seq = cnt, .full = true};
        h->s0 = s0;
        memset(h->rids, 0, (size_t)N * sizeof *h->rids);
        for (int i = 0; i < N; i++) {
            hnode_t *nd = &h->nodes[i];
            nd->failed = false;
            if (!nd->has || !nd->serves || !st_cluster_is_up(h->cl, i)) continue;
            st_wire_msg_t m = {.type = ST_MSG_HEAD_COMPUTE, .head_compute = h->req};
            m.head_compute.lo = nd->a.lo;
            const size_t flen = (size_t)cnt * E * sizeof(float);
            if (st_cluster_send(h->cl, i, &m, xn + (size_t)s0 * E, flen, true) < 0) {
                nd->failed = true;
                continue;
            }
            h->tot.bytes_out += st_wire_encoded_size(&m) + flen;
            h->rids[i] = m.request_id;
        }
        st_ctx_park(h->ctx);
        const double t0 = st_now_ms();
        int rc = st_cluster_gather(h->cl, h->rids, t0 + h->timeout_ms, s_on_result, h);
        h->tot.wait_ms += st_now_ms() - t0;
        if (rc < 0 && rc != ST_ETIMEOUT) return rc;
        /* every slice no node delivered: computed here */
        for (int i = 0; i < N; i++) {
            hnode_t *nd = &h->nodes[i];
            if (!nd->has) continue;
            const bool delivered = nd->serves && st_cluster_is_up(h->cl, i) && !nd->failed && !h->rids[i];
            if (delivered) continue;
            if (h->rids[i]) {
                char why[96];
                snprintf(why, sizeof why, "no head result within %d ms", h->timeout_ms);
                st_cluster_set_down(h->cl, i, why);
                nd->serves = false;
            }
            st_ctx_head_rows(h->ctx, xn + (size_t)s0 * E, (int)cnt, (int)nd->a.lo, (int)nd->a.hi,
                             y + (size_t)s0 * y_stride, y_stride);
            h->tot.fallback_rows += (uint64_t)cnt * (nd->a.hi - nd->a.lo);
            h->tot.fallback_weight_bytes += (uint64_t)(nd->a.hi - nd->a.lo) * h->m->output.row_bytes;
        }
    }
    return 0;
}

/* ---- a draw from the nodes' candidates (st_ctx_defer_head) ---- */

static int s_stash(void *arg, const float *xn) {
    st_remote_head_t *h = arg;
    memcpy(h->xs, xn, (size_t)h->m->cfg.n_embd * sizeof(float));
    return 0;
}

static bool s_cand_room(hnode_t *nd, uint32_t k) {
    if (nd->cap >= k) return true;
    st_sampler_cand_t *c = realloc(nd->cand, (size_t)k * sizeof *c);
    if (!c) return false;
    nd->cand = c, nd->cap = k;
    return true;
}

/* One node's candidates (checked: ids in its slice, order, finite values, sums). */
static int s_on_cands(void *arg, int i, st_wire_rx_t *rx) {
    st_remote_head_t *h = arg;
    hnode_t *nd = &h->nodes[i];
    size_t len;
    const uint8_t *frame;
    if (!s_reply_ok(h, i, rx, "candidates", &frame, &len)) return 0;
    if (!s_cand_room(nd, rx->msg.head_result.n_cand)) {
        st_log(ST_LOG_WARN, "node %d (%s): no memory for its %u head candidates", i, st_cluster_url(h->cl, i),
               (unsigned)rx->msg.head_result.n_cand);
        nd->failed = true;
        return 0;
    }
    const st_wire_head_result_t *r = &rx->msg.head_result;
    for (uint32_t k = 0; k < r->n_cand; k++) {
        memcpy(&nd->cand[k].id, frame + 8u * k, 4);
        memcpy(&nd->cand[k].logit, frame + 8u * k + 4, 4);
    }
    nd->n_cand = r->n_cand;
    nd->max = r->max[0], nd->sum = r->sum[0], nd->sum_temp = r->sum_temp[0];
    return 0;
}

/* The slice of node i computed here: its logits into scratch, then what the node would send. */
static int s_cands_here(st_remote_head_t *h, int i, const st_sampler_part_pen_t *pen, float temp, uint32_t k,
                        float *scratch) {
    hnode_t *nd = &h->nodes[i];
    const uint32_t rows = nd->a.hi - nd->a.lo;
    if (k > rows) k = rows;
    if ((int)k > h->tmp_cap) {
        int32_t *ti = realloc(h->tmp_id, (size_t)k * sizeof *ti);
        if (ti) h->tmp_id = ti;
        float *tv = ti ? realloc(h->tmp_val, (size_t)k * sizeof *tv) : NULL;
        if (tv) h->tmp_val = tv;
        if (!ti || !tv) return ST_ENOMEM;
        h->tmp_cap = (int)k;
    }
    if (!s_cand_room(nd, k)) return ST_ENOMEM;
    st_ctx_head_rows(h->ctx, h->xs, 1, (int)nd->a.lo, (int)nd->a.hi, scratch, (size_t)h->m->cfg.n_vocab);
    const int got = st_sampler_part_eval(scratch + nd->a.lo, (int)rows, (int32_t)nd->a.lo, pen, temp, (int)k, h->tmp_id,
                                         h->tmp_val, &nd->max, &nd->sum, &nd->sum_temp);
    if (got < 1) return got < 0 ? got : ST_EIO;
    for (int j = 0; j < got; j++) nd->cand[j] = (st_sampler_cand_t){h->tmp_id[j], h->tmp_val[j]};
    nd->n_cand = (uint32_t)got;
    h->tot.fallback_rows += rows;
    h->tot.fallback_weight_bytes += (uint64_t)rows * h->m->output.row_bytes;
    return 0;
}

/* The whole logits (a constraint, a decision that needs every candidate): gathered, then the sampler. */
static int32_t s_sample_whole(st_remote_head_t *h, st_sampler_t *smp, float *logits) {
    const int rc = s_logits(h, h->xs, 1, logits, (size_t)h->m->cfg.n_vocab);
    h->tot.rows--; /* counted once, by the draw */
    h->tot.whole++;
    if (rc < 0) return rc == -1 ? ST_EIO : rc;
    return st_sampler_sample(smp, logits);
}

static int32_t s_sample(void *arg, st_sampler_t *smp, float *logits) {
    st_remote_head_t *h = arg;
    if (s_follow_cluster(h) < 0) return ST_ENOMEM;
    const st_sampler_params_t *sp = st_sampler_params(smp);
    h->tot.rows++;
    int n_parts = 0;
    for (int i = 0; i < h->N; i++) n_parts += h->nodes[i].has;
    if (n_parts < 1 || n_parts > ST_SAMPLER_MAX_PARTS) return s_sample_whole(h, smp, logits);
    /* the penalty window: the nodes apply it to their slices */
    if (h->pen_cap < sp->repeat_last_n + 1) {
        const int cap = sp->repeat_last_n + 1;
        uint32_t *a = realloc(h->pen_id, (size_t)cap * sizeof *a);
        if (a) h->pen_id = a;
        uint32_t *b = a ? realloc(h->pen_n, (size_t)cap * sizeof *b) : NULL;
        if (b) h->pen_n = b;
        if (!a || !b) return ST_ENOMEM;
        h->pen_cap = cap;
    }
    const int n_pen = st_sampler_penalties(smp, h->pen_id, h->pen_n, h->pen_cap);
    const st_sampler_part_pen_t pen = {
        h->pen_id, h->pen_n, n_pen, sp->repeat_penalty, sp->presence_penalty, sp->frequency_penalty};
    float temp = sp->temp, rp = sp->repeat_penalty, pp = sp->presence_penalty, fp = sp->frequency_penalty;
    uint32_t pen_n = (uint32_t)n_pen;
    uint32_t k = sp->temp <= 0.0f ? 1 : sp->top_k > 0 ? (uint32_t)sp->top_k : 64;
    const int E = h->m->cfg.n_embd;
    for (;;) {
        if (k > ST_WIRE_MAX_HEAD_CAND) return s_sample_whole(h, smp, logits);
        h->req = (st_wire_head_compute_t){.n_seq = 1,
                                          .n_cand = k,
                                          .temp = &temp,
                                          .repeat_penalty = &rp,
                                          .presence_penalty = &pp,
                                          .frequency_penalty = &fp,
                                          .pen_n = &pen_n,
                                          .n_pen = pen_n,
                                          .pen_id = h->pen_id,
                                          .pen_count = h->pen_n};
        memset(h->rids, 0, (size_t)h->N * sizeof *h->rids);
        for (int i = 0; i < h->N; i++) {
            hnode_t *nd = &h->nodes[i];
            nd->failed = false;
            nd->n_cand = 0;
            if (!nd->has || !nd->serves || !st_cluster_is_up(h->cl, i)) continue;
            st_wire_msg_t m = {.type = ST_MSG_HEAD_COMPUTE, .head_compute = h->req};
            m.head_compute.lo = nd->a.lo;
            if (st_cluster_send(h->cl, i, &m, h->xs, (size_t)E * sizeof(float), true) < 0) {
                nd->failed = true;
                continue;
            }
            h->tot.bytes_out += st_wire_encoded_size(&m) + (size_t)E * sizeof(float);
            h->rids[i] = m.request_id;
        }
        st_ctx_park(h->ctx);
        const double t0 = st_now_ms();
        int rc = st_cluster_gather(h->cl, h->rids, t0 + h->timeout_ms, s_on_cands, h);
        h->tot.wait_ms += st_now_ms() - t0;
        if (rc < 0 && rc != ST_ETIMEOUT) return rc == -1 ? ST_EIO : rc;
        st_sampler_part_t parts[ST_SAMPLER_MAX_PARTS];
        int np = 0;
        for (int i = 0; i < h->N; i++) {
            hnode_t *nd = &h->nodes[i];
            if (!nd->has) continue;
            const bool delivered = nd->serves && st_cluster_is_up(h->cl, i) && !nd->failed && !h->rids[i];
            if (!delivered) {
                if (h->rids[i]) {
                    char why[96];
                    snprintf(why, sizeof why, "no head result within %d ms", h->timeout_ms);
                    st_cluster_set_down(h->cl, i, why);
                    nd->serves = false;
                }
                int frc = s_cands_here(h, i, n_pen ? &pen : NULL, temp, k, logits);
                if (frc < 0) return frc == -1 ? ST_EIO : frc;
            }
            parts[np++] = (st_sampler_part_t){.cand = nd->cand,
                                              .n_cand = (int)nd->n_cand,
                                              .complete = nd->n_cand == nd->a.hi - nd->a.lo,
                                              .max = nd->max,
                                              .sum = nd->sum,
                                              .sum_temp = nd->sum_temp};
        }
        int need = 0;
        const int32_t tok = st_sampler_sample_parts(smp, parts, np, &need);
        if (tok >= 0) return tok;
        /* past an eighth of the vocabulary the whole logits cost about as much, in one more round */
        if (tok != ST_ERANGE || need == INT_MAX || (uint64_t)need * (uint64_t)np > (uint64_t)h->m->cfg.n_vocab / 8)
            return s_sample_whole(h, smp, logits);
        h->tot.asked_again++;
        k = (uint32_t)need;
    }
}

st_head_backend_t st_remote_head_backend(st_remote_head_t *h, st_ctx_t *ctx) {
    h->ctx = ctx;
    if (!h->xs) h->xs = malloc((size_t)h->m->cfg.n_embd * sizeof(float));
    if (!h->xs) return (st_head_backend_t){.arg = h, .logits = s_logits}; /* whole logits only */
    return (st_head_backend_t){.arg = h, .logits = s_logits, .stash = s_stash, .sample = s_sample};
}

void st_remote_head_print_stats(const st_remote_head_t *h, FILE *f) {
    const st_remote_head_totals_t *t = &h->tot;
    const double R = t->rows ? (double)t->rows : 1.0;
    int serving = 0;
    for (int i = 0; i < h->N; i++) serving += h->nodes[i].has && h->nodes[i].serves;
    fprintf(f,
            "cluster: head sharded over %d nodes: per hidden state %.0f B on the wire (%.0f out, %.0f in), %.0f B "
            "of head weights read here (fallback; the whole head is %zu B); waiting %.2f ms; %llu B pushed, %llu B "
            "hashed\n",
            serving, (double)(t->bytes_out + t->bytes_in) / R, (double)t->bytes_out / R, (double)t->bytes_in / R,
            (double)t->fallback_weight_bytes / R, (size_t)h->m->output.row_bytes * (size_t)h->m->cfg.n_vocab,
            t->wait_ms / R, (unsigned long long)t->push_bytes, (unsigned long long)t->hashed_bytes);
    fprintf(f, "cluster: head draws from candidates: %llu asked again for more, %llu needed the whole logits\n",
            (unsigned long long)t->asked_again, (unsigned long long)t->whole);
}
