/* The output head sharded by vocabulary over the nodes (see remote_head.h). */
#include "remote_head.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "head_hashes.h"
#include "st_log.h"

#define HEAD_RETRY_MS 2000.0 /* a node that lost a slice is assigned it again at most this often */

_Static_assert(ST_PLACE_MAX_HEAD_SLICES == ST_WIRE_MAX_HEAD_SLOTS, "a node's slices are the wire's slots");
_Static_assert(ST_PLACE_MAX_HEAD_COPIES <= 32, "tried is a bit mask of owners");

/* One slice of the head: its rows and owners (placement), and this step's answer. */
typedef struct {
    st_wire_head_assign_t a;                       /* rows, type, hash (slot fields: set per holder when assigned) */
    int n_owners, owner[ST_PLACE_MAX_HEAD_COPIES]; /* nodes, primary first */
    bool done;                                     /* this step: its logits or candidates are in */
    uint32_t tried;                                /* this step: owners asked (bit r) */
    bool asked;                                    /* this round: a request for it is out */
    int asked_node;                                /* this round: to that node, */
    uint64_t rid;                                  /* with that request id */
    /* a draw round's candidates from this slice (an owner's, or computed here): n_cand per
     * sequence of the request, sequence s's at cand + s * n_cand, with its maximum and sums */
    st_sampler_cand_t *cand;
    size_t cap;
    uint32_t n_cand, seq_cap;
    float *max;
    double *sum, *sum_temp;
} hslice_t;

/* One deferred draw of a step (st_head_backend_t.sample). */
typedef struct {
    uint32_t k;      /* candidates per slice to ask for next */
    bool pending;    /* still to draw from candidates */
    bool whole;      /* left to the whole logits */
    int pen0, n_pen; /* its penalty window: entries [pen0, pen0 + n_pen) of pen_id / pen_n */
    float temp, rp, pp, fp;
} draw_t;

/* One node's slices: slot k holds slice slice[k]. */
typedef struct {
    int n_slots;
    int slice[ST_WIRE_MAX_HEAD_SLOTS];
    bool serves[ST_WIRE_MAX_HEAD_SLOTS];  /* it holds the slot's rows: HEAD_COMPUTE may go there */
    bool pushing[ST_WIRE_MAX_HEAD_SLOTS]; /* placing: still to receive the slot's rows */
    double retry_ms;                      /* lost a slot: HEAD_ASSIGN again from then on (st_now_ms) */
    int asked;                            /* placing: the slot of the request in flight (-1: none) */
    int n_asked;                          /* this round of a step: its HEAD_COMPUTEs in flight */
    bool restart;                         /* placing: a chunk was refused, the slot starts again */
} hnode_t;

struct st_remote_head {
    const st_model_t *m;
    st_cluster_t *cl;
    st_ctx_t *ctx;
    st_head_hashes_t *hashes;
    int N, timeout_ms, push_timeout_ms;
    hnode_t *nodes;
    uint64_t *rids;  /* N: one request per node (assign, push) */
    uint64_t *crids; /* N x ST_WIRE_MAX_HEAD_SLOTS: a step's HEAD_COMPUTEs, one per slice asked of a node */
    hslice_t *slices;
    int n_slices;
    st_remote_head_totals_t tot;
    uint64_t last_retried_step; /* the last step (tot.steps) that needed a second round */
    bool sampling;              /* in s_sample: its whole logits are part of its step */
    /* the current step (the reply callback's view) */
    st_wire_head_compute_t req;
    float *y;
    size_t y_stride;
    uint32_t s0; /* first hidden state of this request */
    /* deferred draws (stash, sample) */
    float *xs;                /* n_xs x n_embd: the stashed hidden states */
    int n_xs, xs_cap;         /* (xs_cap: rows of xs, xsend, draws, the request lists) */
    float *xsend;             /* the hidden states of one request's sequences, in its order */
    draw_t *draws;            /* one per draw of the current call */
    int *rq_draw;             /* the draws of the current request, in its order */
    uint32_t *pen_id, *pen_n; /* the draws' penalty windows, distinct ids and counts, end to end */
    int pen_cap;
    /* the current request's lists (st_wire_head_compute_t) */
    float *rq_temp, *rq_rp, *rq_pp, *rq_fp;
    uint32_t *rq_pen_n, *rq_pen_id, *rq_pen_count;
    int rq_pen_cap;
    float *wbuf; /* whole logits rows, here: slices computed here, draws that need them */
    int wbuf_rows;
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
    h->crids = calloc(((size_t)h->N + 1) * ST_WIRE_MAX_HEAD_SLOTS, sizeof *h->crids);
    if (!h->nodes || !h->rids || !h->crids) st_remote_head_destroy(&h);
    return h;
}

static void s_free_slices(st_remote_head_t *h) {
    for (int k = 0; h->slices && k < h->n_slices; k++) {
        hslice_t *sl = &h->slices[k];
        free(sl->cand), free(sl->max), free(sl->sum), free(sl->sum_temp);
    }
    free(h->slices);
    h->slices = NULL;
    h->n_slices = 0;
}

void st_remote_head_destroy(st_remote_head_t **hp) {
    if (!hp || !*hp) return;
    st_remote_head_t *h = *hp;
    s_free_slices(h);
    free(h->xs), free(h->xsend), free(h->draws), free(h->rq_draw), free(h->pen_id), free(h->pen_n);
    free(h->rq_temp), free(h->rq_rp), free(h->rq_pp), free(h->rq_fp), free(h->rq_pen_n);
    free(h->rq_pen_id), free(h->rq_pen_count), free(h->wbuf), free(h->tmp_id), free(h->tmp_val);
    st_head_hashes_destroy(&h->hashes);
    free(h->nodes);
    free(h->rids);
    free(h->crids);
    free(h);
    *hp = NULL;
}

uint64_t st_remote_head_slice_bytes(const st_model_t *m, int n) {
    return n < 1 ? 0 : st_placement_head_slice_bytes((uint32_t)m->cfg.n_vocab, m->output.row_bytes, n);
}

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
    uint64_t *cv = rv ? realloc(h->crids, ((size_t)n + 1) * ST_WIRE_MAX_HEAD_SLOTS * sizeof *cv) : NULL;
    if (cv) h->crids = cv;
    if (!nv || !rv || !cv) return ST_ENOMEM;
    memset(h->nodes + h->N, 0, ((size_t)(n - h->N) + 1) * sizeof *nv);
    memset(h->rids + h->N, 0, ((size_t)(n - h->N) + 1) * sizeof *rv);
    h->N = n;
    return 0;
}

/* The slot of node i that holds slice k, or -1. */
static int s_slot_of(const st_remote_head_t *h, int i, int k) {
    for (int q = 0; q < h->nodes[i].n_slots; q++)
        if (h->nodes[i].slice[q] == k) return q;
    return -1;
}

/* The HEAD_ASSIGN of node i's slot q. */
static st_wire_head_assign_t s_assign_of(const st_remote_head_t *h, int i, int q) {
    st_wire_head_assign_t a = h->slices[h->nodes[i].slice[q]].a;
    a.slot = (uint32_t)q;
    a.n_slots = (uint32_t)h->nodes[i].n_slots;
    return a;
}

/* ---- placement and push ---- */

/* HEAD_ACK to an assign or a chunk of the slot asked. */
static int s_on_ack(void *arg, int i, st_wire_rx_t *rx) {
    st_remote_head_t *h = arg;
    hnode_t *nd = &h->nodes[i];
    const int q = nd->asked;
    if (q < 0) return 0;
    if (rx->msg.type != ST_MSG_HEAD_ACK) {
        st_log(ST_LOG_WARN, "node %d (%s) refused a head slice: %s", i, st_cluster_url(h->cl, i),
               rx->msg.type == ST_MSG_ERROR ? rx->msg.error.message : st_wire_type_name(rx->msg.type));
        nd->pushing[q] = nd->serves[q] = false;
    } else if (rx->msg.head_ack.complete) {
        nd->pushing[q] = false;
        nd->serves[q] = true;
    } else if (!rx->msg.head_ack.ok) {
        nd->restart = true;
    }
    return 0;
}

static uint64_t s_slice_bytes(const st_remote_head_t *h, int k) {
    const hslice_t *sl = &h->slices[k];
    return st_wire_head_bytes(sl->a.type, (uint32_t)h->m->cfg.n_embd, sl->a.lo, sl->a.hi);
}

/* The first slot node i still has to receive, or -1. */
static int s_pushing_slot(const hnode_t *nd) {
    for (int q = 0; q < nd->n_slots; q++)
        if (nd->pushing[q]) return q;
    return -1;
}

/* Rounds of one chunk to every node still receiving a slot, until each says
 * complete (or refused one chunk too often, or stopped answering: that slot
 * is not served by it). A node receives its slots one after the other. */
static int s_push_rounds(st_remote_head_t *h, bool quiet) {
    const int N = h->N;
    uint64_t *next = calloc((size_t)N + 1, sizeof *next); /* next chunk's offset per node */
    int *tries = calloc((size_t)N + 1, sizeof *tries), *cur = calloc((size_t)N + 1, sizeof *cur);
    if (!next || !tries || !cur) {
        free(next), free(tries), free(cur);
        return ST_ENOMEM;
    }
    uint64_t total = 0, sent = 0;
    for (int i = 0; i < N; i++) {
        cur[i] = -1;
        for (int q = 0; q < h->nodes[i].n_slots; q++)
            if (h->nodes[i].pushing[q]) total += s_slice_bytes(h, h->nodes[i].slice[q]);
    }
    double last_print = st_now_ms();
    for (;;) {
        bool any = false;
        memset(h->rids, 0, (size_t)N * sizeof *h->rids);
        for (int i = 0; i < N; i++) {
            hnode_t *nd = &h->nodes[i];
            nd->asked = -1;
            int q = s_pushing_slot(nd);
            if (q < 0 || !st_cluster_is_up(h->cl, i)) continue;
            if (q != cur[i]) cur[i] = q, next[i] = 0, tries[i] = 0, nd->restart = false;
            const int k = nd->slice[q];
            const uint64_t size = s_slice_bytes(h, k);
            if (nd->restart || next[i] >= size) { /* refused, or all sent without "complete" */
                nd->restart = false;
                next[i] = 0;
                if (++tries[i] > 3) {
                    st_log(ST_LOG_WARN, "node %d (%s): head slice %d does not arrive whole; it is not served there", i,
                           st_cluster_url(h->cl, i), k);
                    nd->pushing[q] = false;
                    continue;
                }
            }
            const size_t len = size - next[i] < ST_WIRE_MAX_CHUNK ? (size_t)(size - next[i]) : ST_WIRE_MAX_CHUNK;
            const uint8_t *data = s_rows(h, h->slices[k].a.lo) + next[i];
            st_wire_msg_t m = {.type = ST_MSG_HEAD_PUT,
                               .head_put = {.offset = next[i], .total = size, .lo = h->slices[k].a.lo}};
            st_wire_hash(data, len, m.head_put.chunk_hash);
            if (st_cluster_send(h->cl, i, &m, data, len, true) < 0) {
                nd->pushing[q] = false;
                continue;
            }
            h->rids[i] = m.request_id;
            nd->asked = q;
            next[i] += len;
            sent += len;
            h->tot.push_bytes += len;
            any = true;
        }
        if (!any) break;
        int rc = st_cluster_gather(h->cl, h->rids, st_now_ms() + h->push_timeout_ms, s_on_ack, h);
        for (int i = 0; i < N; i++)
            if (h->rids[i]) { /* no ack in time */
                st_cluster_set_down(h->cl, i, "no answer to a head chunk in time");
                memset(h->nodes[i].pushing, 0, sizeof h->nodes[i].pushing);
            }
        if (rc < 0 && rc != ST_ETIMEOUT) break;
        if (!quiet && st_now_ms() - last_print > 1000) {
            fprintf(stderr, "cluster: head: %.1f of %.1f MiB pushed\n", (double)sent / (1 << 20),
                    (double)total / (1 << 20));
            last_print = st_now_ms();
        }
    }
    if (!quiet && total) fprintf(stderr, "cluster: head: %.1f MiB pushed\n", (double)sent / (1 << 20));
    free(next), free(tries), free(cur);
    return 0;
}

/* HEAD_ASSIGN of the slots flagged in want[i * ST_WIRE_MAX_HEAD_SLOTS + q],
 * one slot per node per round; a slot acked but not complete is flagged
 * pushing (from_store: not pushed, it stays unserved). */
static void s_assign(st_remote_head_t *h, const bool *want, bool from_store) {
    for (int q = 0; q < ST_WIRE_MAX_HEAD_SLOTS; q++) {
        bool any = false;
        memset(h->rids, 0, (size_t)h->N * sizeof *h->rids);
        for (int i = 0; i < h->N; i++) {
            hnode_t *nd = &h->nodes[i];
            nd->asked = -1;
            if (q >= nd->n_slots || !want[i * ST_WIRE_MAX_HEAD_SLOTS + q] || !st_cluster_is_up(h->cl, i)) continue;
            st_wire_msg_t m = {.type = ST_MSG_HEAD_ASSIGN, .head_assign = s_assign_of(h, i, q)};
            nd->pushing[q] = nd->serves[q] = false;
            if (st_cluster_send(h->cl, i, &m, NULL, 0, true) == 0) {
                h->rids[i] = m.request_id;
                nd->asked = q;
                nd->pushing[q] = !from_store; /* until its ack says complete */
                any = true;
            }
        }
        if (!any) continue;
        st_cluster_gather(h->cl, h->rids, st_now_ms() + h->timeout_ms, s_on_ack, h);
        for (int i = 0; i < h->N; i++)
            if (h->rids[i]) h->nodes[i].pushing[q] = false; /* no answer: not served there */
        if (from_store)
            for (int i = 0; i < h->N; i++) h->nodes[i].pushing[q] = false;
    }
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

int st_remote_head_place(st_remote_head_t *h, const st_placement_t *pl, bool quiet) {
    if (s_follow_cluster(h) < 0) return ST_ENOMEM;
    const int N = h->N, S = pl ? st_placement_head_slices(pl) : 0;
    const uint32_t V = (uint32_t)h->m->cfg.n_vocab;
    s_free_slices(h);
    for (int i = 0; i < N; i++) memset(&h->nodes[i], 0, sizeof h->nodes[i]);
    if (S < 1) return 0;
    bool *want = calloc((size_t)N * ST_WIRE_MAX_HEAD_SLOTS + 1, sizeof *want);
    h->slices = calloc((size_t)S, sizeof *h->slices);
    if (!want || !h->slices) {
        free(want);
        s_free_slices(h);
        return ST_ENOMEM;
    }
    h->n_slices = S;
    for (int k = 0; k < S; k++) {
        hslice_t *sl = &h->slices[k];
        sl->a = (st_wire_head_assign_t){.n_vocab = V, .type = (uint32_t)h->m->output.type};
        st_placement_head_slice(pl, k, &sl->a.lo, &sl->a.hi);
        const int hr = st_head_hashes_get(h->hashes, sl->a.lo, sl->a.hi, sl->a.hash);
        if (hr < 0) { /* not reached: the placement cuts inside the head */
            free(want);
            s_free_slices(h);
            return hr;
        }
        if (hr > 0) s_drop_pages(h, sl->a.lo, sl->a.hi); /* read to hash it: one slice resident at a time */
        for (int r = 0; r < st_placement_head_n_owners(pl, k) && r < ST_PLACE_MAX_HEAD_COPIES; r++) {
            const int i = st_placement_head_owner(pl, k, r);
            if (i < 0 || i >= N || h->nodes[i].n_slots >= ST_WIRE_MAX_HEAD_SLOTS) continue;
            sl->owner[sl->n_owners++] = i;
            h->nodes[i].slice[h->nodes[i].n_slots++] = k;
        }
    }
    const uint64_t hashed = st_head_hashes_read_bytes(h->hashes) - h->tot.hashed_bytes;
    h->tot.hashed_bytes += hashed;
    st_head_hashes_save(h->hashes);
    st_log(ST_LOG_INFO, "head: %llu B read to hash %d slices (the rest from the cache)", (unsigned long long)hashed, S);
    for (int i = 0; i < N; i++)
        for (int q = 0; q < h->nodes[i].n_slots; q++) want[i * ST_WIRE_MAX_HEAD_SLOTS + q] = true;
    s_assign(h, want, false);
    int rc = s_push_rounds(h, quiet);
    s_drop_pages(h, 0, V);
    int served = 0, copies = 0, held = 0;
    for (int k = 0; k < S; k++) {
        bool any = false;
        for (int r = 0; r < h->slices[k].n_owners; r++) {
            const int i = h->slices[k].owner[r], q = s_slot_of(h, i, k);
            copies++;
            held += q >= 0 && h->nodes[i].serves[q];
            any |= q >= 0 && h->nodes[i].serves[q];
        }
        served += any;
    }
    st_log(ST_LOG_INFO, "head: %d of %d slices on nodes, %d of %d copies held (%llu B of %s each at most)", served, S,
           held, copies, (unsigned long long)st_remote_head_slice_bytes(h->m, S), st_type_name(h->m->output.type));
    free(want);
    return rc < 0 ? rc : served;
}

void st_remote_head_between_steps(st_remote_head_t *h) {
    if (s_follow_cluster(h) < 0) return;
    bool *want = calloc((size_t)h->N * ST_WIRE_MAX_HEAD_SLOTS + 1, sizeof *want);
    bool any = false;
    const double now = st_now_ms();
    for (int i = 0; want && i < h->N; i++) {
        hnode_t *nd = &h->nodes[i];
        if (!st_cluster_is_up(h->cl, i) || now < nd->retry_ms) continue;
        bool lost = false;
        for (int q = 0; q < nd->n_slots; q++) lost |= want[i * ST_WIRE_MAX_HEAD_SLOTS + q] = !nd->serves[q];
        if (lost) nd->retry_ms = now + HEAD_RETRY_MS; /* a node without its slices is not asked every step */
        any |= lost;
    }
    if (any) s_assign(h, want, true); /* from its store only: no push mid-generation */
    free(want);
}

/* ---- the step ---- */

/* Node i's reply to a head request for slice k, counted and checked
 * (st_wire_check_head_result); false when it refused or answered wrongly:
 * then its slot is not asked again until a HEAD_ASSIGN between steps, at
 * once after a refusal (it may have restarted without the slice), at most
 * every HEAD_RETRY_MS after a bad answer, so meanwhile its replica is asked
 * in the first round. */
static bool s_reply_ok(st_remote_head_t *h, int i, int k, st_wire_rx_t *rx, const char *what, const uint8_t **frame,
                       size_t *len) {
    *frame = st_wire_rx_frame(rx, len);
    h->tot.bytes_in += st_wire_encoded_size(&rx->msg) + *len;
    char why[256];
    const int q = s_slot_of(h, i, k);
    if (rx->msg.type == ST_MSG_ERROR) {
        st_log(ST_LOG_WARN, "node %d (%s) refused head slice %d's %s: %s", i, st_cluster_url(h->cl, i), k, what,
               rx->msg.error.message);
        if (q >= 0) h->nodes[i].serves[q] = false;
        return false;
    }
    if (st_wire_check_head_result(&rx->msg, &h->req, &h->slices[k].a, *frame, *len, why, sizeof why)) {
        st_log(ST_LOG_WARN, "node %d (%s): bad head %s for slice %d: %s", i, st_cluster_url(h->cl, i), what, k, why);
        if (q >= 0) h->nodes[i].serves[q] = false;
        h->nodes[i].retry_ms = st_now_ms() + HEAD_RETRY_MS;
        return false;
    }
    return true;
}

/* The slice whose request rx answers (node i's, this round), or -1. */
static int s_asked_slice(const st_remote_head_t *h, int i, const st_wire_rx_t *rx) {
    for (int k = 0; k < h->n_slices; k++) {
        const hslice_t *sl = &h->slices[k];
        if (sl->asked && sl->asked_node == i && sl->rid == rx->msg.request_id) return k;
    }
    return -1;
}

/* A slice answered: by its primary, or by a replica (counted). */
static void s_answered(st_remote_head_t *h, int i, int k) {
    h->slices[k].done = true;
    if (h->slices[k].owner[0] != i) h->tot.by_replica++;
}

/* The copy of slice k to ask next: r of an owner that is up, serves it, was
 * not asked for it this step and has room for one more request this round;
 * the primary when it qualifies, else the replica with the fewest requests
 * this round (as experts go to their least loaded owner); -1: none. */
static int s_pick_owner(const st_remote_head_t *h, int k, bool primary_only) {
    const hslice_t *sl = &h->slices[k];
    int best = -1;
    for (int r = 0; r < sl->n_owners && r < (primary_only ? 1 : ST_PLACE_MAX_HEAD_COPIES); r++) {
        const int i = sl->owner[r], q = s_slot_of(h, i, k);
        if ((sl->tried >> r & 1u) || q < 0 || !h->nodes[i].serves[q] || !st_cluster_is_up(h->cl, i) ||
            h->nodes[i].n_asked >= ST_WIRE_MAX_HEAD_SLOTS)
            continue;
        if (r == 0) return 0;
        if (best < 0 || h->nodes[i].n_asked < h->nodes[sl->owner[best]].n_asked) best = r;
    }
    return best;
}

/* Asks for every slice not done (h->req, the hidden states x of xlen bytes)
 * in rounds, each slice of one owner per round: the primaries that serve it
 * first, and in the same round a live replica for each slice whose primary
 * is known down (marked down by the cluster, late or failed earlier, not
 * serving it); a node may be asked for several slices at once. A slice
 * whose owner refuses, answers wrongly or late goes to the next owner not
 * asked yet in another round, until every slice is done or no owner is left
 * to ask. A node that misses the deadline is marked down. */
static int s_ask_owners(st_remote_head_t *h, const float *x, size_t xlen, st_cluster_reply_fn on_reply) {
    const size_t D = ST_WIRE_MAX_HEAD_SLOTS;
    for (int k = 0; k < h->n_slices; k++) h->slices[k].tried = 0;
    h->tot.asks++;
    for (int round = 0;; round++) {
        bool any = false;
        memset(h->crids, 0, (size_t)h->N * D * sizeof *h->crids);
        for (int i = 0; i < h->N; i++) h->nodes[i].n_asked = 0;
        for (int k = 0; k < h->n_slices; k++) h->slices[k].asked = false;
        for (int pass = 0; pass < 2; pass++) /* the primaries first: each node's own slice before a replica's */
            for (int k = 0; k < h->n_slices; k++) {
                hslice_t *sl = &h->slices[k];
                for (int r; !sl->done && !sl->asked && (r = s_pick_owner(h, k, pass == 0)) >= 0;) {
                    sl->tried |= 1u << r;
                    const int i = sl->owner[r];
                    st_wire_msg_t m = {.type = ST_MSG_HEAD_COMPUTE, .head_compute = h->req};
                    m.head_compute.lo = sl->a.lo;
                    if (st_cluster_send(h->cl, i, &m, x, xlen, true) < 0) continue; /* the next owner */
                    h->tot.bytes_out += st_wire_encoded_size(&m) + xlen;
                    h->crids[(size_t)i * D + (size_t)h->nodes[i].n_asked++] = m.request_id;
                    sl->asked_node = i;
                    sl->rid = m.request_id;
                    sl->asked = any = true;
                }
            }
        if (!any) return 0;
        h->tot.rounds++;
        if (round == 1) { /* a second round: some owner failed this step */
            h->tot.retried_steps += h->last_retried_step != h->tot.steps;
            h->last_retried_step = h->tot.steps;
        }
        st_ctx_park(h->ctx);
        const double t0 = st_now_ms();
        int rc = st_cluster_gather_many(h->cl, h->crids, (int)D, t0 + h->timeout_ms, on_reply, h);
        h->tot.wait_ms += st_now_ms() - t0;
        if (rc < 0 && rc != ST_ETIMEOUT) return rc;
        for (int i = 0; i < h->N; i++) {
            bool late = false;
            for (size_t d = 0; d < D; d++) late |= h->crids[(size_t)i * D + d] != 0;
            if (!late) continue;
            char why[96];
            snprintf(why, sizeof why, "no head result within %d ms", h->timeout_ms);
            st_cluster_set_down(h->cl, i, why);
            memset(h->nodes[i].serves, 0, sizeof h->nodes[i].serves);
        }
    }
}

static int s_on_result(void *arg, int i, st_wire_rx_t *rx) {
    st_remote_head_t *h = arg;
    const int k = s_asked_slice(h, i, rx);
    size_t len;
    const uint8_t *frame;
    if (k < 0 || !s_reply_ok(h, i, k, rx, "logits", &frame, &len)) return 0;
    const hslice_t *sl = &h->slices[k];
    const uint32_t rows = sl->a.hi - sl->a.lo;
    for (uint32_t s = 0; s < h->req.n_seq; s++) /* frames are LE f32; so is every host we build for */
        memcpy(h->y + (size_t)(h->s0 + s) * h->y_stride + sl->a.lo, frame + (size_t)s * rows * 4u, (size_t)rows * 4u);
    s_answered(h, i, k);
    return 0;
}

static int s_logits(void *arg, const float *xn, int n_out, float *y, size_t y_stride) {
    st_remote_head_t *h = arg;
    if (s_follow_cluster(h) < 0) return ST_ENOMEM; /* the gather reads one request id per node */
    const int E = h->m->cfg.n_embd;
    h->tot.calls++;
    h->tot.steps += !h->sampling;
    h->tot.rows += (uint64_t)n_out;
    if (h->n_slices < 1) { /* no node was up to take a slice: the whole head here */
        st_ctx_head_rows(h->ctx, xn, n_out, 0, h->m->cfg.n_vocab, y, y_stride);
        h->tot.fallback_rows += (uint64_t)n_out * (uint64_t)h->m->cfg.n_vocab;
        h->tot.fallback_weight_bytes += (uint64_t)h->m->cfg.n_vocab * h->m->output.row_bytes;
        return 0;
    }
    /* hidden states per request: the largest slice's reply must fit a frame */
    uint32_t most = 1;
    for (int k = 0; k < h->n_slices; k++) {
        const uint32_t r = h->slices[k].a.hi - h->slices[k].a.lo;
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
        for (int k = 0; k < h->n_slices; k++) h->slices[k].done = false;
        int rc = s_ask_owners(h, xn + (size_t)s0 * E, (size_t)cnt * E * sizeof(float), s_on_result);
        if (rc < 0) return rc;
        for (int k = 0; k < h->n_slices; k++) { /* every slice no owner delivered: computed here */
            const hslice_t *sl = &h->slices[k];
            if (sl->done) continue;
            st_ctx_head_rows(h->ctx, xn + (size_t)s0 * E, (int)cnt, (int)sl->a.lo, (int)sl->a.hi,
                             y + (size_t)s0 * y_stride, y_stride);
            h->tot.fallback_rows += (uint64_t)cnt * (sl->a.hi - sl->a.lo);
            h->tot.fallback_weight_bytes += (uint64_t)(sl->a.hi - sl->a.lo) * h->m->output.row_bytes;
        }
    }
    return 0;
}

/* ---- draws from the nodes' candidates (st_ctx_defer_head) ---- */

/* Grows *p to n elements of size sz (kept when it fails). */
static bool s_grow(void *p, size_t n, size_t sz) {
    void *q = realloc(*(void **)p, n * sz);
    if (!q) return false;
    *(void **)p = q;
    return true;
}

/* Room for n stashed hidden states and n draws of one call. */
static bool s_draw_room(st_remote_head_t *h, int n) {
    if (n <= h->xs_cap) return true;
    const size_t E = (size_t)h->m->cfg.n_embd, N = (size_t)n;
    if (!s_grow(&h->xs, N * E, sizeof(float)) || !s_grow(&h->xsend, N * E, sizeof(float)) ||
        !s_grow(&h->draws, N, sizeof(draw_t)) || !s_grow(&h->rq_draw, N, sizeof(int)) ||
        !s_grow(&h->rq_temp, N, sizeof(float)) || !s_grow(&h->rq_rp, N, sizeof(float)) ||
        !s_grow(&h->rq_pp, N, sizeof(float)) || !s_grow(&h->rq_fp, N, sizeof(float)) ||
        !s_grow(&h->rq_pen_n, N, sizeof(uint32_t)))
        return false;
    h->xs_cap = n;
    return true;
}

/* Rows of n_vocab floats for whole logits here (h->wbuf). */
static bool s_wbuf_room(st_remote_head_t *h, int rows) {
    if (rows <= h->wbuf_rows) return true;
    if (!s_grow(&h->wbuf, (size_t)rows * (size_t)h->m->cfg.n_vocab, sizeof(float))) return false;
    h->wbuf_rows = rows;
    return true;
}

static int s_stash(void *arg, const float *xn, int n) {
    st_remote_head_t *h = arg;
    if (n < 1 || !s_draw_room(h, n)) return st_fail(ST_ENOMEM, "no memory to stash %d hidden states", n);
    memcpy(h->xs, xn, (size_t)n * (size_t)h->m->cfg.n_embd * sizeof(float));
    h->n_xs = n;
    return 0;
}

/* Room in slice sl for n_seq sequences of k candidates. */
static bool s_cand_room(hslice_t *sl, uint32_t n_seq, uint32_t k) {
    const size_t want = (size_t)n_seq * k;
    if (sl->cap < want) {
        if (!s_grow(&sl->cand, want, sizeof *sl->cand)) return false;
        sl->cap = want;
    }
    if (sl->seq_cap < n_seq) {
        if (!s_grow(&sl->max, n_seq, sizeof *sl->max) || !s_grow(&sl->sum, n_seq, sizeof *sl->sum) ||
            !s_grow(&sl->sum_temp, n_seq, sizeof *sl->sum_temp))
            return false;
        sl->seq_cap = n_seq;
    }
    return true;
}

/* One owner's candidates for the slice asked, every sequence's (checked: ids in the slice,
 * order, finite values, sums). */
static int s_on_cands(void *arg, int i, st_wire_rx_t *rx) {
    st_remote_head_t *h = arg;
    const int k = s_asked_slice(h, i, rx);
    size_t len;
    const uint8_t *frame;
    if (k < 0 || !s_reply_ok(h, i, k, rx, "candidates", &frame, &len)) return 0;
    hslice_t *sl = &h->slices[k];
    const st_wire_head_result_t *r = &rx->msg.head_result;
    if (!s_cand_room(sl, r->n_seq, r->n_cand)) {
        st_log(ST_LOG_WARN, "node %d (%s): no memory for its %u x %u head candidates", i, st_cluster_url(h->cl, i),
               (unsigned)r->n_seq, (unsigned)r->n_cand);
        return 0;
    }
    for (size_t c = 0; c < (size_t)r->n_seq * r->n_cand; c++) {
        memcpy(&sl->cand[c].id, frame + 8u * c, 4);
        memcpy(&sl->cand[c].logit, frame + 8u * c + 4, 4);
    }
    sl->n_cand = r->n_cand;
    memcpy(sl->max, r->max, r->n_seq * sizeof *sl->max);
    memcpy(sl->sum, r->sum, r->n_seq * sizeof *sl->sum);
    memcpy(sl->sum_temp, r->sum_temp, r->n_seq * sizeof *sl->sum_temp);
    s_answered(h, i, k);
    return 0;
}

/* Draw d's penalties as a slice applies them. */
static st_sampler_part_pen_t s_pen(const st_remote_head_t *h, const draw_t *d) {
    return (st_sampler_part_pen_t){h->pen_id + d->pen0, h->pen_n + d->pen0, d->n_pen, d->rp, d->pp, d->fp};
}

/* Slice k for the current request computed here (its logits into h->wbuf, then
 * what an owner would send for each sequence). */
static int s_cands_here(st_remote_head_t *h, int k, uint32_t n) {
    hslice_t *sl = &h->slices[k];
    const uint32_t rows = sl->a.hi - sl->a.lo, S = h->req.n_seq;
    const size_t V = (size_t)h->m->cfg.n_vocab;
    if (n > rows) n = rows;
    if ((int)n > h->tmp_cap) {
        if (!s_grow(&h->tmp_id, n, sizeof *h->tmp_id) || !s_grow(&h->tmp_val, n, sizeof *h->tmp_val)) return ST_ENOMEM;
        h->tmp_cap = (int)n;
    }
    if (!s_cand_room(sl, S, n) || !s_wbuf_room(h, (int)S)) return ST_ENOMEM;
    st_ctx_head_rows(h->ctx, h->xsend, (int)S, (int)sl->a.lo, (int)sl->a.hi, h->wbuf, V);
    for (uint32_t s = 0; s < S; s++) {
        const draw_t *d = &h->draws[h->rq_draw[s]];
        const st_sampler_part_pen_t pen = s_pen(h, d);
        const int got =
            st_sampler_part_eval(h->wbuf + s * V + sl->a.lo, (int)rows, (int32_t)sl->a.lo, d->n_pen ? &pen : NULL,
                                 d->temp, (int)n, h->tmp_id, h->tmp_val, &sl->max[s], &sl->sum[s], &sl->sum_temp[s]);
        if (got != (int)n) return got < 0 ? got : ST_EIO;
        for (uint32_t j = 0; j < n; j++) sl->cand[s * n + j] = (st_sampler_cand_t){h->tmp_id[j], h->tmp_val[j]};
    }
    sl->n_cand = n;
    h->tot.fallback_rows += (uint64_t)S * rows;
    h->tot.fallback_weight_bytes += (uint64_t)rows * h->m->output.row_bytes;
    return 0;
}

/* The draws left to the whole logits: gathered in one go, then each sampler. */
static int s_draw_whole(st_remote_head_t *h, st_sampler_t *const *smp, const int *idx, int n, int32_t *tok) {
    const size_t E = (size_t)h->m->cfg.n_embd, V = (size_t)h->m->cfg.n_vocab;
    int w = 0;
    for (int j = 0; j < n; j++)
        if (h->draws[j].whole) memcpy(h->xsend + (size_t)w++ * E, h->xs + (size_t)idx[j] * E, E * sizeof(float));
    if (w == 0) return 0;
    if (!s_wbuf_room(h, w)) return st_fail(ST_ENOMEM, "no memory for %d rows of logits", w);
    const int rc = s_logits(h, h->xsend, w, h->wbuf, V);
    h->tot.rows -= (uint64_t)w; /* counted once, by the draw */
    h->tot.whole += (uint64_t)w;
    if (rc < 0) return rc == -1 ? ST_EIO : rc;
    w = 0;
    for (int j = 0; j < n; j++)
        if (h->draws[j].whole) tok[j] = st_sampler_sample(smp[j], h->wbuf + (size_t)w++ * V);
    return 0;
}

/* Each draw's parameters, penalty window and first candidate count. */
static int s_draws_init(st_remote_head_t *h, st_sampler_t *const *smp, int n) {
    int total = 0;
    for (int j = 0; j < n; j++) total += st_sampler_params(smp[j])->repeat_last_n + 1;
    if (h->pen_cap < total) {
        if (!s_grow(&h->pen_id, (size_t)total, sizeof *h->pen_id) ||
            !s_grow(&h->pen_n, (size_t)total, sizeof *h->pen_n))
            return ST_ENOMEM;
        h->pen_cap = total;
    }
    if (h->rq_pen_cap < total) {
        if (!s_grow(&h->rq_pen_id, (size_t)total, sizeof *h->rq_pen_id) ||
            !s_grow(&h->rq_pen_count, (size_t)total, sizeof *h->rq_pen_count))
            return ST_ENOMEM;
        h->rq_pen_cap = total;
    }
    int pen0 = 0;
    for (int j = 0; j < n; j++) {
        const st_sampler_params_t *sp = st_sampler_params(smp[j]);
        draw_t *d = &h->draws[j];
        *d = (draw_t){.k = sp->temp <= 0.0f ? 1
                           : sp->top_k > 0  ? (uint32_t)sp->top_k
                                            : 64,
                      .pen0 = pen0,
                      .temp = sp->temp,
                      .rp = sp->repeat_penalty,
                      .pp = sp->presence_penalty,
                      .fp = sp->frequency_penalty};
        d->n_pen = st_sampler_penalties(smp[j], h->pen_id + pen0, h->pen_n + pen0, sp->repeat_last_n + 1);
        pen0 += d->n_pen;
    }
    return 0;
}

/* One round: a HEAD_COMPUTE for the pending draws (as many as one request
 * holds) to an owner of each slice (s_ask_owners: replicas after a failed
 * primary), each slice no owner delivered computed here, then each of those
 * draws from the merged candidates: drawn, asking for more next round, or
 * left to the whole logits. */
static int s_draw_round(st_remote_head_t *h, st_sampler_t *const *smp, const int *idx, int n, int32_t *tok) {
    const size_t E = (size_t)h->m->cfg.n_embd;
    uint32_t k = 1;
    for (int j = 0; j < n; j++)
        if (h->draws[j].pending) k = h->draws[j].k > k ? h->draws[j].k : k;
    /* sequences per request: the hidden states and the candidates must each fit a frame */
    uint32_t per = ST_WIRE_MAX_FRAME / (uint32_t)(E * sizeof(float));
    per = per < ST_WIRE_MAX_FRAME / (k * 8u) ? per : ST_WIRE_MAX_FRAME / (k * 8u);
    per = per < 1 ? 1 : per > ST_WIRE_MAX_HEAD_SEQ ? ST_WIRE_MAX_HEAD_SEQ : per;
    uint32_t S = 0, n_pen = 0;
    for (int j = 0; j < n && S < per; j++) {
        const draw_t *d = &h->draws[j];
        if (!d->pending) continue;
        memcpy(h->xsend + (size_t)S * E, h->xs + (size_t)idx[j] * E, E * sizeof(float));
        h->rq_temp[S] = d->temp, h->rq_rp[S] = d->rp, h->rq_pp[S] = d->pp, h->rq_fp[S] = d->fp;
        h->rq_pen_n[S] = (uint32_t)d->n_pen;
        memcpy(h->rq_pen_id + n_pen, h->pen_id + d->pen0, (size_t)d->n_pen * sizeof(uint32_t));
        memcpy(h->rq_pen_count + n_pen, h->pen_n + d->pen0, (size_t)d->n_pen * sizeof(uint32_t));
        n_pen += (uint32_t)d->n_pen;
        h->rq_draw[S++] = j;
    }
    h->req = (st_wire_head_compute_t){.n_seq = S,
                                      .n_cand = k,
                                      .temp = h->rq_temp,
                                      .repeat_penalty = h->rq_rp,
                                      .presence_penalty = h->rq_pp,
                                      .frequency_penalty = h->rq_fp,
                                      .pen_n = h->rq_pen_n,
                                      .n_pen = n_pen,
                                      .pen_id = h->rq_pen_id,
                                      .pen_count = h->rq_pen_count};
    for (int s = 0; s < h->n_slices; s++) h->slices[s].done = false, h->slices[s].n_cand = 0;
    int rc = s_ask_owners(h, h->xsend, (size_t)S * E * sizeof(float), s_on_cands);
    if (rc < 0) return rc == -1 ? ST_EIO : rc;
    for (int s = 0; s < h->n_slices; s++)
        if (!h->slices[s].done && (rc = s_cands_here(h, s, k)) < 0) return rc == -1 ? ST_EIO : rc;
    for (uint32_t s = 0; s < S; s++) {
        const int j = h->rq_draw[s];
        draw_t *d = &h->draws[j];
        st_sampler_part_t parts[ST_SAMPLER_MAX_PARTS];
        for (int p = 0; p < h->n_slices; p++) {
            const hslice_t *sl = &h->slices[p];
            parts[p] = (st_sampler_part_t){.cand = sl->cand + (size_t)s * sl->n_cand,
                                           .n_cand = (int)sl->n_cand,
                                           .complete = sl->n_cand == sl->a.hi - sl->a.lo,
                                           .max = sl->max[s],
                                           .sum = sl->sum[s],
                                           .sum_temp = sl->sum_temp[s]};
        }
        int need = 0;
        const int32_t t = st_sampler_sample_parts(smp[j], parts, h->n_slices, &need);
        if (t >= 0) {
            tok[j] = t;
            d->pending = false;
            continue;
        }
        /* past an eighth of the vocabulary the whole logits cost about as much, in one more round */
        if (t != ST_ERANGE || need == INT_MAX ||
            (uint64_t)need * (uint64_t)h->n_slices > (uint64_t)h->m->cfg.n_vocab / 8 ||
            (uint32_t)need > ST_WIRE_MAX_HEAD_CAND) {
            d->pending = false;
            d->whole = true;
            continue;
        }
        h->tot.asked_again++;
        d->k = (uint32_t)need;
    }
    return 0;
}

static int s_sample(void *arg, st_sampler_t *const *smp, const int *idx, int n, int32_t *tok) {
    st_remote_head_t *h = arg;
    if (s_follow_cluster(h) < 0 || !s_draw_room(h, n)) return ST_ENOMEM;
    for (int j = 0; j < n; j++)
        if (idx[j] < 0 || idx[j] >= h->n_xs) return st_fail(ST_EINVAL, "no stashed hidden state %d", idx[j]);
    h->tot.rows += (uint64_t)n;
    h->tot.steps++;
    int rc = s_draws_init(h, smp, n);
    if (rc < 0) return rc;
    bool pending = false;
    for (int j = 0; j < n; j++) { /* no slices, or more candidates than a request holds: the whole logits */
        draw_t *d = &h->draws[j];
        d->pending = h->n_slices >= 1 && h->n_slices <= ST_SAMPLER_MAX_PARTS && d->k <= ST_WIRE_MAX_HEAD_CAND;
        d->whole = !d->pending;
        pending |= d->pending;
    }
    while (pending) {
        if ((rc = s_draw_round(h, smp, idx, n, tok)) < 0) return rc;
        pending = false;
        for (int j = 0; j < n; j++) pending |= h->draws[j].pending;
    }
    h->sampling = true;
    rc = s_draw_whole(h, smp, idx, n, tok);
    h->sampling = false;
    return rc;
}

st_head_backend_t st_remote_head_backend(st_remote_head_t *h, st_ctx_t *ctx) {
    h->ctx = ctx;
    return (st_head_backend_t){.arg = h, .logits = s_logits, .stash = s_stash, .sample = s_sample};
}

void st_remote_head_print_stats(const st_remote_head_t *h, FILE *f) {
    const st_remote_head_totals_t *t = &h->tot;
    const double R = t->rows ? (double)t->rows : 1.0;
    int serving = 0;
    for (int i = 0; i < h->N; i++) {
        bool any = false;
        for (int q = 0; q < h->nodes[i].n_slots; q++) any |= h->nodes[i].serves[q];
        serving += any;
    }
    fprintf(f,
            "cluster: head sharded over %d nodes: per hidden state %.0f B on the wire (%.0f out, %.0f in), %.0f B "
            "of head weights read here (fallback; the whole head is %zu B); waiting %.2f ms; %llu B pushed, %llu B "
            "hashed\n",
            serving, (double)(t->bytes_out + t->bytes_in) / R, (double)t->bytes_out / R, (double)t->bytes_in / R,
            (double)t->fallback_weight_bytes / R, (size_t)h->m->output.row_bytes * (size_t)h->m->cfg.n_vocab,
            t->wait_ms / R, (unsigned long long)t->push_bytes, (unsigned long long)t->hashed_bytes);
    fprintf(f,
            "cluster: head draws from candidates: %llu asked again for more, %llu needed the whole logits; %llu "
            "slices answered by a replica\n",
            (unsigned long long)t->asked_again, (unsigned long long)t->whole, (unsigned long long)t->by_replica);
    fprintf(f,
            "cluster: head round trips: %.2f per step (%llu steps, %llu rounds in %llu requests); %llu steps asked a "
            "replica in a second round (the last: step %llu)\n",
            t->steps ? (double)t->rounds / (double)t->steps : 0.0, (unsigned long long)t->steps,
            (unsigned long long)t->rounds, (unsigned long long)t->asks, (unsigned long long)t->retried_steps,
            (unsigned long long)h->last_retried_step);
}
