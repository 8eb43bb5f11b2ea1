/* node: the st-node serve loop (see node.h).
 *
 * One thread owns the ROUTER socket and handles one message at a time: a
 * node serves one coordinator's layer at a time anyway, and keeping the
 * socket, the store and the cache on one thread needs no locks. Compute runs
 * on the context's thread pool. While the socket is idle the loop loads
 * queued experts (prefetch hints, pinned experts) from the store, one per
 * turn, so a request that arrives meanwhile waits for at most one read.
 *
 * A request's experts are taken from the cache or read into it and held
 * until its pairs are computed. If they do not all fit in the cache at once
 * (a prefill touching many experts on a small node), the request is computed
 * in batches of experts that fit; every pair's output depends only on its own
 * activation row and expert, so batching and chunking to the context's
 * n_batch never change a bit of the result.
 *
 * Dimension letters (model.h): E n_embd, F n_ff_exp, X n_expert, K
 * n_expert_used, L n_layer, B n_batch, N nodes, V n_vocab, D head_dim, H n_head.
 */
#include "node.h"

#include <errno.h>
#include <math.h>
#include <limits.h>
#include <malloc.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zmq.h>

#include "machine.h"
#include "clock.h"
#include "forward.h"
#include "forward_internal.h"
#include "log_limit.h"
#include "lru.h"
#include "node_mem.h"
#include "moe.h"
#include "proc_mem.h"
#include "sampler.h"
#include "st_kernels.h"
#include "st_log.h"
#include "store.h"
#include "threadpool.h"
#include "wire.h"
#include "zap.h"

#define NODE_POLL_MS 200    /* longest wait before the stop flag is looked at */
#define NODE_KEEPALIVE_S 3  /* idle seconds before TCP keepalive probes (dead peer after 3 more) */
#define NODE_MAXRT_MS 30000 /* sent data unacknowledged this long: the peer is gone */
#define NODE_SEND_MS 2000   /* longest wait for a peer to take a reply (then it is dropped) */
#define NODE_MAX_MODELS 8   /* model stores kept under --store by default */

/* One slice of the output head: rows [a.lo, a.hi) in the file's type. */
typedef struct {
    bool assigned, complete;
    st_wire_head_assign_t a;
    uint8_t *rows; /* bytes, charged to the cache's budget */
    uint64_t bytes, got;
} head_slice_t;

struct st_node {
    st_node_opts_t o;
    char id[ST_WIRE_MAX_ID + 1];
    char endpoint[256];
    void *zctx, *sock;
    st_zap_t *zap;     /* CURVE: the ZAP handler thread (NULL when --insecure) */
    uint64_t base_rss; /* resident bytes after start-up, before any model */

    /* the model: shape and store (from HELLO or ASSIGN) */
    bool have_shape;
    st_wire_shape_t shape;
    st_store_t *store;
    uint32_t n_keys;

    /* the assignment and what computing it needs (from ASSIGN) */
    bool assigned;
    uint8_t *flags; /* per key: ASSIGNED | PINNED | HINTED | PREFETCHED */
    uint8_t (*want)[ST_WIRE_HASH_BYTES];
    st_model_t shell; /* cfg only: the context needs shapes, never weights */
    st_ctx_t *ctx;
    st_lru_t *lru;
    int max_pairs;                   /* pairs per st_experts_eval_converted call */
    uint32_t max_req_pairs;          /* pairs of one request */
    const void **gate, **up, **down; /* n_expert pointers each: the current batch */
    float *ybuf;                     /* max_pairs x n_embd */
    int32_t *sub_tok, *sub_exp;      /* max_pairs */
    uint32_t *sub_idx;               /* max_req_pairs */
    uint32_t *distinct;              /* n_expert */
    uint32_t *mark;                  /* n_expert: stamp of the request that saw it */
    uint8_t *in_batch;               /* n_expert */
    uint32_t stamp;
    uint32_t *queue; /* keys to load when idle (ring) */
    uint32_t q_head, q_len, q_cap;
    uint64_t fixed; /* bytes charged to --mem besides the cached experts */
    /* the fixed bytes the last INVENTORY announced (room = --mem less them) and for which model:
     * the node then charges no less, so it holds what the coordinator placed on that room */
    uint64_t told_fixed;
    uint8_t told_model[ST_WIRE_HASH_BYTES];
    bool pack; /* cached experts are packed for the kernels: only when every assigned one fits in
                * --mem, so that packing (about 10 GB/s) is paid once, not again at every miss */
    int batch; /* rows of one st_linear call (the context's n_batch) */

    /* the output head's slices (HEAD_ASSIGN), one per slot: its own and replicas */
    head_slice_t head[ST_WIRE_MAX_HEAD_SLOTS];

    /* counters */
    uint64_t requests, errors;
    st_log_limit_t *log_bad; /* refusals: the first lines, then counts (common/log_limit.h) */
};

/* HINTED: queued by a prefetch hint; PREFETCHED: read on that hint and not
 * used since (its next use is reported as prefetched, not as a hit) */
enum { ASSIGNED = 1, PINNED = 2, HINTED = 4, PREFETCHED = 8 };

static uint64_t s_heap_bytes(void) {
    struct mallinfo2 mi = mallinfo2();
    return (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
}

static int s_threads(const st_node_t *n) { return n->o.threads > 0 ? n->o.threads : st_cpu_count(); }

/* Bad input is logged, its first lines, then one line a minute with the count: a hostile or
 * broken peer cannot flood the log. */
static void s_log_bad(st_node_t *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_log_bad(st_node_t *n, const char *fmt, ...) {
    if (!st_log_limit_ok(n->log_bad, NULL, st_now_ms())) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    st_log(ST_LOG_WARN, "%s", line);
}

static int s_reply_error(st_node_t *n, const st_wire_rx_t *rx, int code, const char *why) {
    n->errors++;
    s_log_bad(n, "refused %s #%llu: %s", st_wire_type_name(rx->msg.type), (unsigned long long)rx->msg.request_id, why);
    return st_wire_send_error(n->sock, rx->peer, rx->peer_len, rx->msg.request_id, code, "%s", why);
}

static int s_reply(st_node_t *n, const st_wire_rx_t *rx, st_wire_msg_t *m) {
    m->request_id = rx->msg.request_id;
    return st_wire_send(n->sock, rx->peer, rx->peer_len, m, NULL, 0, 0);
}

/* ---- model set-up and tear-down ---- */

static void s_head_drop(st_node_t *n, head_slice_t *hs) {
    if (hs->rows && n->lru) st_lru_charge(n->lru, -(int64_t)hs->bytes);
    free(hs->rows);
    memset(hs, 0, sizeof *hs);
}

/* bytes of every head slice held in RAM */
static uint64_t s_head_held(const st_node_t *n) {
    uint64_t b = 0;
    for (int k = 0; k < ST_WIRE_MAX_HEAD_SLOTS; k++) b += n->head[k].rows ? n->head[k].bytes : 0;
    return b;
}

static void s_teardown_assignment(st_node_t *n) {
    for (int k = 0; k < ST_WIRE_MAX_HEAD_SLOTS; k++) s_head_drop(n, &n->head[k]);
    st_lru_destroy(&n->lru);
    st_ctx_destroy(&n->ctx);
    free(n->gate), free(n->up), free(n->down), free(n->ybuf), free(n->sub_tok), free(n->sub_exp), free(n->sub_idx);
    free(n->distinct), free(n->mark), free(n->in_batch), free(n->queue);
    n->gate = n->up = n->down = NULL;
    n->ybuf = NULL;
    n->sub_tok = n->sub_exp = NULL;
    n->sub_idx = n->distinct = n->mark = n->queue = NULL;
    n->in_batch = NULL;
    n->q_head = n->q_len = n->q_cap = 0;
    n->assigned = false;
}

static void s_teardown_model(st_node_t *n) {
    s_teardown_assignment(n);
    st_store_close(&n->store);
    free(n->flags), free(n->want);
    n->flags = NULL;
    n->want = NULL;
    n->have_shape = false;
}

static bool s_same_model(const st_node_t *n, const st_wire_shape_t *s) {
    return n->have_shape && st_wire_shape_eq(&n->shape, s);
}

/* Opens the store of shape's model (closing another model's); a new model's
 * directory is made only when the number of model stores allows it. */
static int s_use_model(st_node_t *n, const st_wire_shape_t *s, char *why, size_t cap) {
    if (s_same_model(n, s)) return 0;
    if (!st_store_exists(n->o.store_dir, s)) {
        const int max = n->o.max_models > 0 ? n->o.max_models : NODE_MAX_MODELS;
        int rc = st_store_make_room(n->o.store_dir, max, n->have_shape ? n->shape.model_hash : NULL);
        if (rc) {
            snprintf(why, cap, "this node keeps the stores of at most %d models and cannot drop one for a new model",
                     max);
            return rc;
        }
    }
    s_teardown_model(n);
    snprintf(why, cap, "cannot open the store for this model");
    n->store = st_store_open(n->o.store_dir, s);
    if (!n->store) return ST_EIO;
    n->shape = *s;
    n->n_keys = s->n_layer * s->n_expert;
    n->flags = calloc(n->n_keys, 1);
    n->want = calloc(n->n_keys, sizeof *n->want);
    if (!n->flags || !n->want) {
        s_teardown_model(n);
        return ST_ENOMEM;
    }
    n->have_shape = true;
    return 0;
}

/* Matrix i (gate, up, down) of layer l: type, input width and rows, as the kernels see it. */
static void s_matrix_dims(const st_node_t *n, uint32_t l, int i, st_type_t *t, int *n_in, int *rows) {
    const st_wire_shape_t *s = &n->shape;
    const int E = (int)s->n_embd, F = (int)s->n_ff_exp;
    const uint8_t types[3] = {s->gate_type[l], s->up_type[l], s->down_type[l]};
    *t = (st_type_t)types[i];
    *n_in = i < 2 || s->down_transposed ? E : F;
    *rows = i < 2 || s->down_transposed ? F : E;
}

/* Whether the kernels read matrix i of layer l packed (st_pack): the node
 * packs (n->pack), the table packs its type and shape, and the store's
 * layout is the standard one. */
static bool s_packed(const st_node_t *n, uint32_t l, int i) {
    if (!n->pack || (i == 2 && n->shape.down_transposed)) return false; /* a transposed down is read by rows */
    st_type_t t;
    int n_in, rows;
    s_matrix_dims(n, l, i, &t, &n_in, &rows);
    return st_packable(n->shell.kernels, t, n_in, rows);
}

/* Context and compute buffers for shape s; *heap: their bytes, as malloc counts them. */
static int s_build_compute(st_node_t *n, const st_wire_shape_t *s, uint64_t *heap, char *why, size_t cap) {
    /* one call must hold every pair of one expert: up to a request's tokens */
    const int k_used = (int)s->n_expert_used, max_tok = (int)st_wire_max_tokens(s);
    int batch = n->o.batch > 0 ? n->o.batch : 64;
    if (batch * k_used < max_tok) batch = (max_tok + k_used - 1) / k_used;
    memset(&n->shell, 0, sizeof n->shell);
    st_config_t *cfg = &n->shell.cfg;
    cfg->n_layer = (int)s->n_layer;
    cfg->n_embd = (int)s->n_embd;
    cfg->n_ff_exp = (int)s->n_ff_exp;
    cfg->n_expert = (int)s->n_expert;
    cfg->n_expert_used = (int)s->n_expert_used;
    cfg->n_vocab = 1;
    cfg->n_ctx_train = 1;

    const uint64_t heap0 = s_heap_bytes();
    st_ctx_params_t p = st_ctx_default_params();
    p.n_ctx = 1; /* no attention here: keeps the per-thread scratch small */
    p.n_batch = batch;
    p.n_threads = s_threads(n);
    p.kv_type = ST_TYPE_F32;
    n->shell.kernels = st_kernels_select(); /* the context's, and the one cached experts are packed for */
    n->ctx = st_ctx_new(&n->shell, &p);
    if (!n->ctx) {
        snprintf(why, cap, "cannot create the compute context");
        return ST_ENOMEM;
    }
    const int X = cfg->n_expert, E = cfg->n_embd;
    n->batch = batch;
    n->max_pairs = batch * cfg->n_expert_used;
    n->max_req_pairs = st_wire_max_tokens(s) * s->n_expert_used;
    n->gate = calloc((size_t)X, sizeof *n->gate);
    n->up = calloc((size_t)X, sizeof *n->up);
    n->down = calloc((size_t)X, sizeof *n->down);
    n->ybuf = malloc((size_t)n->max_pairs * E * sizeof(float));
    n->sub_tok = malloc((size_t)n->max_pairs * sizeof(int32_t));
    n->sub_exp = malloc((size_t)n->max_pairs * sizeof(int32_t));
    n->sub_idx = malloc((size_t)n->max_req_pairs * sizeof(uint32_t));
    n->distinct = malloc((size_t)X * sizeof(uint32_t));
    n->mark = calloc((size_t)X, sizeof(uint32_t));
    n->in_batch = calloc((size_t)X, 1);
    n->q_cap = s->n_layer * s->n_expert;
    n->queue = malloc((size_t)n->q_cap * sizeof(uint32_t));
    if (!n->gate || !n->up || !n->down || !n->ybuf || !n->sub_tok || !n->sub_exp || !n->sub_idx || !n->distinct ||
        !n->mark || !n->in_batch || !n->queue) {
        snprintf(why, cap, "no memory for compute buffers");
        return ST_ENOMEM;
    }
    *heap = s_heap_bytes() - heap0;
    return 0;
}

/* Bytes of --mem the node keeps for itself with shape s's model, its process and compute taking
 * `runtime`: those, the store's index, the cache's own table and the message reserves (the
 * planner's bound for runtime holds the table's few KiB). Receive: what a coordinator sends
 * ahead of our replies (the receive queue has no limit, see st_node_new), the one being read
 * among them, each at most a max frame; send: replies of at most a request's outputs, HWM queued
 * plus one being written (node_mem.c: st-plan charges the same, with a bound for runtime). */
static uint64_t s_fixed_bytes(const st_node_t *n, const st_wire_shape_t *s, uint64_t runtime) {
    return runtime + st_store_mem_bytes_for(s) + st_lru_own_bytes(s->n_layer * s->n_expert) +
           st_node_reserve_bytes(st_wire_max_tokens(s), s->n_expert_used, s->n_embd, s_threads(n));
}

/* Context, buffers and cache for the current shape, all charged to --mem. */
static int s_setup_compute(st_node_t *n, char *why, size_t cap) {
    const st_wire_shape_t *s = &n->shape;
    uint64_t heap;
    int rc = s_build_compute(n, s, &heap, why, cap);
    if (rc) return rc;
    uint64_t fixed = s_fixed_bytes(n, s, n->base_rss + heap);
    if (n->base_rss + heap > ST_NODE_RUNTIME_BYTES)
        st_log(ST_LOG_WARN, "process and compute take %llu B, more than the %llu B st-plan assumes",
               (unsigned long long)(n->base_rss + heap), (unsigned long long)ST_NODE_RUNTIME_BYTES);
    if (!memcmp(n->told_model, s->model_hash, ST_WIRE_HASH_BYTES) && n->told_fixed) {
        if (fixed > n->told_fixed) /* malloc's count moved since HELLO: less room than the placement counted */
            st_log(ST_LOG_WARN, "the node keeps %llu B for itself, %llu B more than its INVENTORY said",
                   (unsigned long long)fixed, (unsigned long long)(fixed - n->told_fixed));
        else
            fixed = n->told_fixed;
    }
    const uint64_t one = st_lru_entry_cost(st_store_record_bytes(n->store));
    if (fixed + one > n->o.mem) {
        snprintf(why, cap,
                 "--mem %llu B is too small for this model: the node needs %llu B plus %llu B per cached expert",
                 (unsigned long long)n->o.mem, (unsigned long long)fixed, (unsigned long long)one);
        return ST_ENOMEM;
    }
    n->fixed = fixed;
    n->lru = st_lru_new(n->o.mem, n->n_keys); /* charges its own table, part of fixed */
    if (!n->lru || st_lru_charge(n->lru, (int64_t)(fixed - st_lru_own_bytes(n->n_keys)))) {
        snprintf(why, cap, "cannot set up the expert cache");
        return ST_ENOMEM;
    }
    st_log(ST_LOG_INFO,
           "model %u layers x %u experts, up to %llu B per expert: %llu B fixed (%llu B process, %llu B compute), "
           "room for %llu experts in RAM; %s kernels",
           s->n_layer, s->n_expert, (unsigned long long)st_wire_max_expert_bytes(s), (unsigned long long)fixed,
           (unsigned long long)n->base_rss, (unsigned long long)heap, (unsigned long long)((n->o.mem - fixed) / one),
           n->shell.kernels->name);
    return 0;
}

/* What INVENTORY tells of shape s's model: the bytes of --mem left for cached experts and head
 * slices, and one cached expert's cost. The node's own bytes are the ones it charges when it
 * serves that model: measured when it does; else, when it serves none, measured by building
 * the compute context (and freeing it); else (another model's cache fills --mem) st-plan's
 * bound for the process and compute. The node charges no less when the ASSIGN comes. */
static void s_room(st_node_t *n, const st_wire_shape_t *s, uint64_t *room, uint64_t *cost) {
    uint64_t fixed = 0, heap;
    char why[128];
    if (n->assigned && s_same_model(n, s))
        fixed = n->fixed;
    else if (!n->assigned && !s_build_compute(n, s, &heap, why, sizeof why))
        fixed = s_fixed_bytes(n, s, n->base_rss + heap);
    else
        fixed = s_fixed_bytes(n, s, ST_NODE_RUNTIME_BYTES);
    if (!n->assigned) s_teardown_assignment(n); /* the context built to measure it */
    n->told_fixed = fixed;
    memcpy(n->told_model, s->model_hash, ST_WIRE_HASH_BYTES);
    *cost = st_lru_entry_cost(st_store_record_bytes_for(s));
    *room = n->o.mem > fixed ? n->o.mem - fixed : 0;
}

static uint32_t s_key(const st_node_t *n, uint32_t layer, uint32_t expert) {
    return layer * n->shape.n_expert + expert;
}

/* assigned and in the store with the assigned hash */
static bool s_present(const st_node_t *n, uint32_t key) {
    if (!(n->flags[key] & ASSIGNED)) return false;
    const uint8_t *h = st_store_hash(n->store, key / n->shape.n_expert, key % n->shape.n_expert);
    return h && !memcmp(h, n->want[key], ST_WIRE_HASH_BYTES);
}

static bool s_enqueue(st_node_t *n, uint32_t key) {
    if (!n->queue || n->q_len >= n->q_cap) return false;
    n->queue[(n->q_head + n->q_len++) % n->q_cap] = key;
    return true;
}

/* An expert record just read from the store, packed where the kernels read it packed. */
static int s_pack_record(const st_node_t *n, uint32_t l, uint8_t *p) {
    uint64_t sizes[3];
    st_wire_matrix_bytes(&n->shape, l, sizes);
    for (int i = 0; i < 3; p += sizes[i], i++) {
        st_type_t t;
        int n_in, rows;
        s_matrix_dims(n, l, i, &t, &n_in, &rows);
        if (s_packed(n, l, i) && !st_pack(n->shell.kernels, t, n_in, rows, p)) return ST_ENOMEM;
    }
    return 0;
}

/* Cached data of an expert, read from the store when needed (and packed); held. */
static const uint8_t *s_acquire(st_node_t *n, uint32_t key, int *rc, bool *hit) {
    uint8_t *p = st_lru_get(n->lru, key);
    *hit = p != NULL;
    if (p) return p;
    p = st_lru_insert(n->lru, key, st_store_record_bytes(n->store), (n->flags[key] & PINNED) != 0);
    if (!p) {
        *rc = ST_ENOMEM;
        return NULL;
    }
    *rc = st_store_read(n->store, key / n->shape.n_expert, key % n->shape.n_expert, p);
    if (!*rc) *rc = s_pack_record(n, key / n->shape.n_expert, p);
    if (*rc) {
        st_lru_remove(n->lru, key);
        return NULL;
    }
    return p;
}

/* Loads one queued expert (idle time). */
static void s_load_one(st_node_t *n) {
    const uint32_t key = n->queue[n->q_head];
    n->q_head = (n->q_head + 1) % n->q_cap;
    n->q_len--;
    const bool hinted = (n->flags[key] & HINTED) != 0;
    n->flags[key] &= (uint8_t)~HINTED;
    if (!n->lru || !s_present(n, key) || st_lru_contains(n->lru, key)) return;
    int rc;
    bool hit;
    if (!s_acquire(n, key, &rc, &hit)) return;
    st_lru_release(n->lru, key);
    if (hinted) n->flags[key] |= PREFETCHED;
}

/* ---- handlers ---- */

static int s_on_hello(st_node_t *n, st_wire_rx_t *rx) {
    char why[256];
    const st_wire_shape_t *s = &rx->msg.hello.shape;
    if (st_wire_check(&rx->msg, NULL, 0, why, sizeof why)) return s_reply_error(n, rx, ST_EPROTO, why);
    /* a model this node has never stored: nothing held, and nothing made on disk (its
     * directory waits for an ASSIGN) nor closed (the current model stays served) */
    const bool known = s_same_model(n, s) || st_store_exists(n->o.store_dir, s);
    int rc = known ? s_use_model(n, s, why, sizeof why) : 0;
    if (rc) return s_reply_error(n, rx, rc, why);
    const int count = known ? st_store_count(n->store) : 0;
    st_wire_ref_t *held = malloc((size_t)(count ? count : 1) * sizeof *held);
    if (!held) return s_reply_error(n, rx, ST_ENOMEM, "no memory for the inventory");
    if (known) st_store_list(n->store, held, count);
    struct statvfs v;
    st_wire_msg_t m = {.type = ST_MSG_INVENTORY};
    snprintf(m.inventory.node_id, sizeof m.inventory.node_id, "%s", n->id);
    m.inventory.mem_budget = n->o.mem;
    s_room(n, s, &m.inventory.room, &m.inventory.expert_cost);
    m.inventory.store_free = known                              ? st_store_free_bytes(n->store)
                             : statvfs(n->o.store_dir, &v) == 0 ? (uint64_t)v.f_bavail * v.f_frsize
                                                                : 0;
    m.inventory.threads = (uint32_t)s_threads(n);
    m.inventory.n_held = (uint32_t)count;
    m.inventory.held = held;
    const char *sw = rx->msg.hello.software[0] ? rx->msg.hello.software : "a version before 0.4.0";
    st_log(ST_LOG_INFO,
           "HELLO from %s (%s): %d experts of this model in the store; %llu B of --mem for them (%llu B each)",
           rx->msg.hello.coordinator_id, sw, count, (unsigned long long)m.inventory.room,
           (unsigned long long)m.inventory.expert_cost);
    if (!st_wire_same_release(rx->msg.hello.software)) { /* the protocol matches, or decode would have refused */
        char me[ST_WIRE_MAX_SOFTWARE + 1];
        st_log(ST_LOG_WARN, "the coordinator runs %s and this node %s: same protocol, but upgrade both to one version",
               sw, st_wire_software(me, sizeof me));
    }
    rc = s_reply(n, rx, &m);
    free(held);
    return rc;
}

static int s_on_assign(st_node_t *n, st_wire_rx_t *rx) {
    char why[512];
    const st_wire_assign_t *a = &rx->msg.assign;
    if (st_wire_check(&rx->msg, NULL, 0, why, sizeof why)) return s_reply_error(n, rx, ST_EPROTO, why);
    int rc = s_use_model(n, &a->shape, why, sizeof why);
    if (rc) return s_reply_error(n, rx, rc, why);
    if (!n->assigned) {
        rc = s_setup_compute(n, why, sizeof why);
        if (rc) {
            s_teardown_assignment(n);
            return s_reply_error(n, rx, rc, why);
        }
        n->assigned = true;
    }
    memset(n->flags, 0, n->n_keys);
    for (uint32_t i = 0; i < a->n_experts; i++) {
        const uint32_t k = s_key(n, a->experts[i].layer, a->experts[i].expert);
        n->flags[k] = ASSIGNED;
        memcpy(n->want[k], a->experts[i].hash, ST_WIRE_HASH_BYTES);
    }
    /* pin in the order given (hottest first) while room for a request's
     * worth of unpinned experts (n_expert_used, at least one) remains */
    const uint64_t cost = st_lru_entry_cost(st_store_record_bytes(n->store));
    const uint64_t used = n->fixed + s_head_held(n), room = n->o.mem > used ? (n->o.mem - used) / cost : 0;
    const uint64_t keep = room > n->shape.n_expert_used ? n->shape.n_expert_used : 1;
    const uint64_t pin_cap = room > keep ? room - keep : 0;
    uint32_t n_pin_asked = 0;
    uint64_t n_pin = 0;
    for (uint32_t i = 0; i < a->n_pinned; i++) {
        const uint32_t k = s_key(n, a->pinned[i].layer, a->pinned[i].expert);
        if (!(n->flags[k] & ASSIGNED) || (n->flags[k] & PINNED)) continue;
        n_pin_asked++;
        if (n_pin < pin_cap) n->flags[k] |= PINNED, n_pin++;
    }
    if (n_pin < n_pin_asked)
        st_log(ST_LOG_WARN, "only %llu of %u pinned experts fit in --mem; the rest are cached as usual",
               (unsigned long long)n_pin, n_pin_asked);
    /* packed only when every expert stays in RAM; a change of layout empties the cache */
    const bool pack = a->n_experts <= room, relayout = pack != n->pack;
    n->pack = pack;
    /* drop cached experts that are no longer ours (or have another hash now); re-pin the rest */
    st_wire_ref_t *missing = malloc((size_t)(a->n_experts ? a->n_experts : 1) * sizeof *missing);
    if (!missing) return s_reply_error(n, rx, ST_ENOMEM, "no memory for the missing list");
    uint32_t n_missing = 0, n_pinned = 0;
    n->q_len = 0;
    for (uint32_t k = 0; k < n->n_keys; k++) {
        if (st_lru_contains(n->lru, k)) {
            if (relayout || !s_present(n, k))
                st_lru_remove(n->lru, k);
            else
                st_lru_pin(n->lru, k, (n->flags[k] & PINNED) != 0);
        }
        if (!(n->flags[k] & ASSIGNED)) continue;
        if (!s_present(n, k)) {
            missing[n_missing++] = (st_wire_ref_t){.layer = k / n->shape.n_expert, .expert = k % n->shape.n_expert};
        } else if (n->flags[k] & PINNED) {
            s_enqueue(n, k); /* loaded while idle */
        }
        n_pinned += (n->flags[k] & PINNED) != 0;
    }
    uint32_t n_packed = 0; /* layers whose experts the kernels read packed */
    for (uint32_t l = 0; l < n->shape.n_layer; l++)
        n_packed += s_packed(n, l, 0) || s_packed(n, l, 1) || s_packed(n, l, 2);
    st_log(ST_LOG_INFO, "ASSIGN: %u experts (%u pinned), %u missing; room for %llu in RAM, %s: %u of %u layers packed",
           a->n_experts, n_pinned, n_missing, (unsigned long long)room,
           pack ? "all fit" : "not all fit (the file's layout)", n_packed, n->shape.n_layer);
    st_wire_msg_t m = {.type = ST_MSG_ASSIGN_ACK};
    m.assign_ack.n_missing = n_missing;
    m.assign_ack.missing = missing;
    rc = s_reply(n, rx, &m);
    free(missing);
    return rc;
}

static int s_on_shard(st_node_t *n, st_wire_rx_t *rx) {
    char why[256];
    size_t len;
    const uint8_t *data = st_wire_rx_frame(rx, &len);
    if (!n->assigned) return s_reply_error(n, rx, ST_EPROTO, "SHARD_PUT before ASSIGN");
    if (st_wire_check(&rx->msg, &n->shape, len, why, sizeof why)) return s_reply_error(n, rx, ST_EPROTO, why);
    const st_wire_shard_put_t *p = &rx->msg.shard_put;
    const uint32_t k = s_key(n, p->layer, p->expert);
    if (!(n->flags[k] & ASSIGNED)) {
        snprintf(why, sizeof why, "expert %u.%u is not assigned to this node", p->layer, p->expert);
        return s_reply_error(n, rx, ST_ERANGE, why);
    }
    bool complete = false;
    int rc = st_store_put(n->store, p->layer, p->expert, n->want[k], p->offset, data, len, p->chunk_hash, &complete);
    if (rc && rc != ST_EPROTO) {
        snprintf(why, sizeof why, "store: %s", st_strerror(rc));
        return s_reply_error(n, rx, rc, why);
    }
    if (rc) {
        n->errors++;
        s_log_bad(n, "SHARD_PUT %u.%u at %llu rejected (hash or order)", p->layer, p->expert,
                  (unsigned long long)p->offset);
    }
    if (complete) {
        st_lru_remove(n->lru, k); /* an older version may be cached */
        if (n->flags[k] & PINNED) s_enqueue(n, k);
    }
    st_wire_msg_t m = {.type = ST_MSG_SHARD_ACK};
    m.shard_ack = (st_wire_shard_ack_t){
        .layer = p->layer, .expert = p->expert, .offset = p->offset, .ok = rc == 0, .complete = complete};
    return s_reply(n, rx, &m);
}

static int s_on_prefetch(st_node_t *n, st_wire_rx_t *rx) {
    char why[256];
    if (!n->assigned) return s_reply_error(n, rx, ST_EPROTO, "EXPERT_PREFETCH before ASSIGN");
    if (st_wire_check(&rx->msg, &n->shape, 0, why, sizeof why)) return s_reply_error(n, rx, ST_EPROTO, why);
    /* one-way: experts that are not ours or not there are ignored */
    for (uint32_t i = 0; i < rx->msg.prefetch.n_experts; i++) {
        const uint32_t k = s_key(n, rx->msg.prefetch.layer, rx->msg.prefetch.experts[i]);
        if (s_present(n, k) && !st_lru_contains(n->lru, k) && !(n->flags[k] & HINTED) && s_enqueue(n, k))
            n->flags[k] |= HINTED;
    }
    return 0;
}

/* Computes the pairs whose expert is in the current batch (experts[0..nb))
 * into y, in request order. The kernels may group an expert's tokens (tiles
 * of rows), so an expert's pairs are never split over two calls and keep
 * their request order: the node then computes exactly what st-run computes
 * for the same tokens. (Only an expert named twice for one token can exceed
 * a call; such a request is split and still answered.) */
static int s_eval_batch(st_node_t *n, const st_wire_compute_t *c, const uint8_t *xq, size_t stride, float *y,
                        const uint32_t *experts, uint32_t nb) {
    const uint32_t l = c->layer; /* checked against the shape */
    const st_expert_set_t set = {.gate_type = (st_type_t)n->shape.gate_type[l],
                                 .up_type = (st_type_t)n->shape.up_type[l],
                                 .down_type = (st_type_t)n->shape.down_type[l],
                                 .down_transposed = n->shape.down_transposed,
                                 .gate = n->gate,
                                 .up = n->up,
                                 .down = n->down,
                                 .gate_packed = s_packed(n, l, 0),
                                 .up_packed = s_packed(n, l, 1),
                                 .down_packed = s_packed(n, l, 2)};
    const size_t E = n->shape.n_embd;
    const uint32_t max = (uint32_t)n->max_pairs;
    uint32_t m = 0;
    for (uint32_t i = 0; i < c->n_pairs; i++) m += n->in_batch[c->pair_expert[i]];
    if (m == c->n_pairs && m <= max) /* the common case: one call, straight into the reply */
        return st_experts_eval_converted(n->ctx, &set, (int)m, c->pair_token, c->pair_expert, xq, stride,
                                         (int)c->n_tokens, y);
    /* pairs grouped by expert, request order within each */
    m = 0;
    for (uint32_t b = 0; b < nb; b++)
        for (uint32_t i = 0; i < c->n_pairs; i++)
            if ((uint32_t)c->pair_expert[i] == experts[b]) n->sub_idx[m++] = i;
    for (uint32_t i0 = 0; i0 < m;) {
        /* as many whole experts as fit in one call */
        uint32_t j = i0;
        while (j < m) {
            const int32_t e = c->pair_expert[n->sub_idx[j]];
            uint32_t g = j;
            while (g < m && c->pair_expert[n->sub_idx[g]] == e) g++;
            if (g - i0 > max) {
                if (j == i0) j = i0 + max; /* one expert alone is too many: split it */
                break;
            }
            j = g;
        }
        const uint32_t cnt = j - i0;
        for (uint32_t k = 0; k < cnt; k++) {
            n->sub_tok[k] = c->pair_token[n->sub_idx[i0 + k]];
            n->sub_exp[k] = c->pair_expert[n->sub_idx[i0 + k]];
        }
        int rc = st_experts_eval_converted(n->ctx, &set, (int)cnt, n->sub_tok, n->sub_exp, xq, stride, (int)c->n_tokens,
                                           n->ybuf);
        if (rc) return rc;
        for (uint32_t k = 0; k < cnt; k++)
            memcpy(y + (size_t)n->sub_idx[i0 + k] * E, n->ybuf + (size_t)k * E, E * sizeof(float));
        i0 = j;
    }
    return 0;
}

/* One row of sums in f16 with its scale (wire.h): s = 2^(e-15) for a largest |value| of f x 2^e,
 * f in [0.5, 1), so every value / s is below 2^15 (f16's largest finite value is 65504) and the
 * largest ones keep f16's 11 significant bits. A row that is not finite keeps that scale: the
 * coordinator refuses it. */
static void s_row_to_f16(const float *v, size_t E, uint8_t *d) {
    float m = 0.0f;
    for (size_t j = 0; j < E; j++) m = fabsf(v[j]) > m || isnan(v[j]) ? fabsf(v[j]) : m;
    int e = 0;
    if (isfinite(m) && m > 0.0f) frexpf(m, &e);
    const float scale = isfinite(m) ? ldexpf(1.0f, e - 15) : m;
    memcpy(d, &scale, sizeof scale);
    for (size_t j = 0; j < E; j++) {
        const uint16_t h = st_fp32_to_fp16(ldexpf(v[j], 15 - e));
        memcpy(d + 4 + 2 * j, &h, 2);
    }
}

/* A compact reply: each token row's sum of its pairs' weighted outputs y (request order), in the
 * request's format, into *out. 0 or ST_ENOMEM. */
static int s_partial_sums(const st_wire_compute_t *c, size_t E, const float *y, zmq_msg_t *out) {
    float *sum = calloc((size_t)c->n_tokens * E, sizeof *sum);
    if (!sum) return ST_ENOMEM;
    for (uint32_t i = 0; i < c->n_pairs; i++) {
        float *o = sum + (size_t)c->pair_token[i] * E;
        const float w = c->pair_weight[i], *yy = y + (size_t)i * E;
        for (size_t j = 0; j < E; j++) o[j] += yy[j] * w;
    }
    const size_t n = (size_t)c->n_tokens * E, rb = st_wire_result_row_bytes(c->result_format, (uint32_t)E);
    if (zmq_msg_init_size(out, c->n_tokens * rb)) {
        free(sum);
        return ST_ENOMEM;
    }
    uint8_t *d = zmq_msg_data(out);
    if (c->result_format == ST_RESULT_PER_TOKEN_F32) {
        memcpy(d, sum, n * sizeof *sum); /* frames are LE; so is every host we build for */
    } else {
        for (uint32_t t = 0; t < c->n_tokens; t++) s_row_to_f16(sum + t * E, E, d + t * rb);
    }
    free(sum);
    return 0;
}

static int s_on_compute(st_node_t *n, st_wire_rx_t *rx) {
    char why[256];
    size_t len;
    const uint8_t *xq = st_wire_rx_frame(rx, &len);
    if (!n->assigned) return s_reply_error(n, rx, ST_EPROTO, "EXPERT_COMPUTE before ASSIGN");
    if (st_wire_check(&rx->msg, &n->shape, len, why, sizeof why)) return s_reply_error(n, rx, ST_EPROTO, why);
    const uint64_t t0 = st_now_us();
    const st_wire_compute_t *c = &rx->msg.compute;
    const uint32_t X = n->shape.n_expert;
    /* distinct experts, in order of first use; all must be ours and stored */
    if (++n->stamp == 0) memset(n->mark, 0, X * sizeof *n->mark), n->stamp = 1;
    uint32_t nd = 0;
    for (uint32_t i = 0; i < c->n_pairs; i++) {
        const uint32_t e = (uint32_t)c->pair_expert[i];
        if (n->mark[e] == n->stamp) continue;
        n->mark[e] = n->stamp;
        const uint32_t k = s_key(n, c->layer, e);
        if (!(n->flags[k] & ASSIGNED)) {
            snprintf(why, sizeof why, "expert %u.%u is not assigned to this node", c->layer, e);
            return s_reply_error(n, rx, ST_ERANGE, why);
        }
        if (!s_present(n, k)) {
            snprintf(why, sizeof why, "expert %u.%u is not in the store yet", c->layer, e);
            return s_reply_error(n, rx, ST_ERANGE, why);
        }
        n->distinct[nd++] = e;
    }
    /* exact: the pairs' outputs go straight into the reply; compact: summed into it at the end */
    const bool compact = c->result_format != ST_RESULT_PER_PAIR_F32;
    zmq_msg_t out;
    const size_t E = n->shape.n_embd, y_bytes = (size_t)c->n_pairs * E * sizeof(float);
    float *y = compact ? malloc(y_bytes) : NULL;
    if (compact ? !y : zmq_msg_init_size(&out, y_bytes) != 0)
        return s_reply_error(n, rx, ST_ENOMEM, "no memory for the result");
    if (!compact) y = zmq_msg_data(&out);
    const size_t stride = st_wire_act_row_bytes(&n->shape, c->layer);
    uint64_t sizes[3]; /* the layer's gate, up and down bytes: where each matrix starts in a record */
    st_wire_matrix_bytes(&n->shape, c->layer, sizes);
    uint32_t hits = 0, misses = 0, prefetched = 0, i = 0;
    int rc = 0;
    while (i < nd && !rc) {
        /* hold as many of the remaining experts as fit, then compute their pairs */
        const uint32_t first = i;
        while (i < nd) {
            const uint32_t e = n->distinct[i], k = s_key(n, c->layer, e);
            bool hit;
            int arc = 0;
            const uint8_t *p = s_acquire(n, k, &arc, &hit);
            if (!p) {
                if (arc == ST_ENOMEM && i > first) break; /* compute what we hold first */
                rc = arc;
                snprintf(why, sizeof why,
                         arc == ST_ENOMEM ? "expert %u.%u does not fit in --mem"
                                          : "expert %u.%u could not be read from the store",
                         c->layer, e);
                break;
            }
            /* a read the hint started is not a hit: the expert was not in RAM before it was needed */
            const bool pf = hit && (n->flags[k] & PREFETCHED);
            hits += hit && !pf, prefetched += pf, misses += !hit;
            n->flags[k] &= (uint8_t) ~(PREFETCHED | HINTED);
            n->gate[e] = p;
            n->up[e] = p + sizes[0];
            n->down[e] = p + sizes[0] + sizes[1];
            n->in_batch[e] = 1;
            i++;
        }
        if (!rc && i > first) {
            rc = s_eval_batch(n, c, xq, stride, y, n->distinct + first, i - first);
            if (rc) snprintf(why, sizeof why, "expert computation failed: %s", st_strerror(rc));
        }
        for (uint32_t j = first; j < i; j++) {
            const uint32_t e = n->distinct[j];
            st_lru_release(n->lru, s_key(n, c->layer, e));
            n->gate[e] = n->up[e] = n->down[e] = NULL;
            n->in_batch[e] = 0;
        }
    }
    if (!rc && compact && (rc = s_partial_sums(c, E, y, &out)) != 0)
        snprintf(why, sizeof why, "no memory for the result");
    if (compact)
        free(y);
    else if (rc)
        zmq_msg_close(&out);
    if (rc) return s_reply_error(n, rx, rc, why);
    st_wire_msg_t m = {.type = ST_MSG_EXPERT_RESULT, .request_id = rx->msg.request_id};
    m.result = (st_wire_result_t){.n_pairs = c->n_pairs,
                                  .compute_us = st_now_us() - t0,
                                  .cache_hits = hits,
                                  .cache_misses = misses,
                                  .cache_prefetched = prefetched,
                                  .result_format = c->result_format,
                                  .n_rows = compact ? c->n_tokens : 0};
    st_log(ST_LOG_DEBUG, "layer %u: %u tokens, %u pairs in %llu us (%u hits, %u prefetched, %u misses)", c->layer,
           c->n_tokens, c->n_pairs, (unsigned long long)m.result.compute_us, hits, prefetched, misses);
    return st_wire_send_zmsg(n->sock, rx->peer, rx->peer_len, &m, &out, 0);
}

/* ---- the output head's slices ----
 * Up to ST_WIRE_MAX_HEAD_SLOTS slices (the node's own and replicas of
 * others'), each held in RAM (charged to --mem: the expert cache shrinks by
 * its size) and in the store (st_store_head_*), so that a restarted node
 * needs nothing pushed again; a file is hashed again when it is loaded, and
 * files of slices no longer assigned are removed. The logits come from the same
 * st_linear as the single process's head, on rows cut from the same matrix:
 * the same bits. */

/* the assigned slice whose first row is lo, or NULL */
static head_slice_t *s_head_find(st_node_t *n, uint32_t lo) {
    for (int k = 0; k < ST_WIRE_MAX_HEAD_SLOTS; k++)
        if (n->head[k].assigned && n->head[k].a.lo == lo) return &n->head[k];
    return NULL;
}

/* Writes a complete slice to the store, then removes the files of slices no slot is assigned. */
static void s_head_save(const st_node_t *n, const head_slice_t *hs) {
    if (st_store_head_save(n->o.store_dir, hs->a.hash, hs->rows, hs->bytes) < 0) return; /* logged: kept in RAM */
    uint8_t keep[ST_WIRE_MAX_HEAD_SLOTS][ST_WIRE_HASH_BYTES];
    int n_keep = 0;
    for (int k = 0; k < ST_WIRE_MAX_HEAD_SLOTS; k++)
        if (n->head[k].assigned) memcpy(keep[n_keep++], n->head[k].a.hash, ST_WIRE_HASH_BYTES);
    st_store_head_prune(n->o.store_dir, (const uint8_t(*)[ST_WIRE_HASH_BYTES])keep, n_keep);
}

static int s_head_ack(st_node_t *n, st_wire_rx_t *rx, const head_slice_t *hs, uint64_t offset, bool ok) {
    st_wire_msg_t m = {.type = ST_MSG_HEAD_ACK};
    m.head_ack = (st_wire_head_ack_t){.offset = offset, .ok = ok, .complete = hs->complete};
    return s_reply(n, rx, &m);
}

/* the same rows of the same head (slot numbers aside) */
static bool s_same_slice(const st_wire_head_assign_t *x, const st_wire_head_assign_t *y) {
    return x->n_vocab == y->n_vocab && x->type == y->type && x->lo == y->lo && x->hi == y->hi &&
           !memcmp(x->hash, y->hash, ST_WIRE_HASH_BYTES);
}

static int s_on_head_assign(st_node_t *n, st_wire_rx_t *rx) {
    char why[256];
    if (!n->assigned) return s_reply_error(n, rx, ST_EPROTO, "HEAD_ASSIGN before ASSIGN");
    if (st_wire_check_head(&rx->msg, n->shape.n_embd, NULL, 0, why, sizeof why))
        return s_reply_error(n, rx, ST_EPROTO, why);
    const st_wire_head_assign_t *a = &rx->msg.head_assign;
    for (uint32_t k = a->n_slots; k < ST_WIRE_MAX_HEAD_SLOTS; k++) s_head_drop(n, &n->head[k]);
    for (uint32_t k = 0; k < a->n_slots; k++) /* another slot with overlapping rows: from an older cut */
        if (k != a->slot && n->head[k].assigned && n->head[k].a.lo < a->hi && a->lo < n->head[k].a.hi)
            s_head_drop(n, &n->head[k]);
    head_slice_t *hs = &n->head[a->slot];
    if (hs->assigned && s_same_slice(&hs->a, a)) { /* the same slice again */
        hs->a = *a;
        if (!hs->complete) hs->got = 0;
        return s_head_ack(n, rx, hs, 0, true);
    }
    s_head_drop(n, hs);
    const uint64_t bytes = st_wire_head_bytes(a->type, n->shape.n_embd, a->lo, a->hi);
    if (bytes > SIZE_MAX / 2 || st_lru_charge(n->lru, (int64_t)bytes)) {
        snprintf(why, sizeof why, "a head slice of %llu B does not fit in --mem beside the pinned experts",
                 (unsigned long long)bytes);
        return s_reply_error(n, rx, ST_ENOMEM, why);
    }
    hs->rows = malloc(bytes);
    if (!hs->rows) {
        st_lru_charge(n->lru, -(int64_t)bytes);
        return s_reply_error(n, rx, ST_ENOMEM, "no memory for the head slice");
    }
    hs->a = *a;
    hs->bytes = bytes;
    hs->assigned = true;
    /* no pruning here: the node's other slots may come next */
    hs->complete = st_store_head_load(n->o.store_dir, hs->a.hash, hs->rows, hs->bytes);
    st_log(ST_LOG_INFO, "HEAD_ASSIGN: slot %u of %u, rows [%u, %u) of %u, %s, %llu B: %s", a->slot, a->n_slots, a->lo,
           a->hi, a->n_vocab, st_type_name((int)a->type), (unsigned long long)bytes,
           hs->complete ? "in the store" : "missing");
    return s_head_ack(n, rx, hs, 0, true);
}

static int s_on_head_put(st_node_t *n, st_wire_rx_t *rx) {
    char why[256];
    size_t len;
    const uint8_t *data = st_wire_rx_frame(rx, &len);
    head_slice_t *hs = s_head_find(n, rx->msg.head_put.lo);
    if (!hs) return s_reply_error(n, rx, ST_EPROTO, "HEAD_PUT of a slice not assigned");
    if (st_wire_check_head(&rx->msg, n->shape.n_embd, &hs->a, len, why, sizeof why))
        return s_reply_error(n, rx, ST_EPROTO, why);
    const st_wire_head_put_t *p = &rx->msg.head_put;
    if (hs->complete) return s_head_ack(n, rx, hs, p->offset, true);
    uint8_t h[ST_WIRE_HASH_BYTES];
    st_wire_hash(data, len, h);
    if (p->offset != 0 && p->offset != hs->got)
        snprintf(why, sizeof why, "chunk at %llu, expected %llu", (unsigned long long)p->offset,
                 (unsigned long long)hs->got);
    else if (memcmp(h, p->chunk_hash, ST_WIRE_HASH_BYTES))
        snprintf(why, sizeof why, "chunk at %llu does not match its hash", (unsigned long long)p->offset);
    else
        why[0] = '\0';
    if (why[0]) {
        n->errors++;
        s_log_bad(n, "HEAD_PUT rejected: %s", why);
        return s_head_ack(n, rx, hs, p->offset, false);
    }
    memcpy(hs->rows + p->offset, data, len);
    hs->got = p->offset + len;
    if (hs->got == hs->bytes) {
        st_wire_hash(hs->rows, hs->bytes, h);
        if (memcmp(h, hs->a.hash, ST_WIRE_HASH_BYTES)) {
            hs->got = 0;
            n->errors++;
            s_log_bad(n, "the head slice's bytes do not match its hash: discarded");
            return s_head_ack(n, rx, hs, p->offset, false);
        }
        hs->complete = true;
        s_head_save(n, hs);
    }
    return s_head_ack(n, rx, hs, p->offset, true);
}

int st_node_head_cands(const st_wire_head_compute_t *c, uint32_t s, uint32_t pen0, float *y, uint32_t rows, uint32_t lo,
                       uint32_t k, uint8_t *out, float *max, double *sum, double *sum_temp) {
    const st_sampler_part_pen_t pen = {.id = c->pen_id + pen0,
                                       .count = c->pen_count + pen0,
                                       .n = (int)c->pen_n[s],
                                       .repeat = c->repeat_penalty[s],
                                       .presence = c->presence_penalty[s],
                                       .frequency = c->frequency_penalty[s]};
    int32_t *id = malloc(k * sizeof *id);
    float *val = malloc(k * sizeof *val);
    int got = id && val ? st_sampler_part_eval(y, (int)rows, (int32_t)lo, &pen, c->temp[s], (int)k, id, val, max, sum,
                                               sum_temp)
                        : ST_ENOMEM;
    if (got >= 0 && got != (int)k) got = ST_EINVAL; /* k <= rows: cannot happen */
    for (uint32_t i = 0; got >= 0 && i < k; i++) {
        memcpy(out + 8u * i, &id[i], 4);
        memcpy(out + 8u * i + 4, &val[i], 4);
    }
    free(id), free(val);
    return got < 0 ? got : 0;
}

/* A held slice's logits for n_seq hidden states, then per sequence the whole
 * slice (full) or its best candidates after the penalties. */
static int s_on_head_compute(st_node_t *n, st_wire_rx_t *rx) {
    char why[256];
    size_t len;
    const uint8_t *frame = st_wire_rx_frame(rx, &len);
    const head_slice_t *hs = s_head_find(n, rx->msg.head_compute.lo);
    if (!hs || !hs->complete) return s_reply_error(n, rx, ST_ERANGE, "no head slice held");
    if (st_wire_check_head(&rx->msg, n->shape.n_embd, &hs->a, len, why, sizeof why))
        return s_reply_error(n, rx, ST_EPROTO, why);
    const uint64_t t0 = st_now_us();
    const st_wire_head_compute_t *c = &rx->msg.head_compute;
    const uint32_t E = n->shape.n_embd, rows = hs->a.hi - hs->a.lo, S = c->n_seq;
    const uint32_t k = c->full ? rows : (c->n_cand < rows ? c->n_cand : rows);
    const uint32_t chunk = S < (uint32_t)n->batch ? S : (uint32_t)n->batch;
    const size_t out_bytes = (size_t)S * k * (c->full ? 4u : 8u);
    const size_t tmp = ((size_t)S * E + (size_t)chunk * rows) * sizeof(float) + out_bytes; /* with the reply */
    if (st_lru_charge(n->lru, (int64_t)tmp)) return s_reply_error(n, rx, ST_ENOMEM, "no room in --mem for the logits");
    float *x = malloc((size_t)S * E * sizeof(float)), *y = malloc((size_t)chunk * rows * sizeof(float));
    float *mx = malloc(S * sizeof(float));
    double *sum = malloc(S * 2 * sizeof(double));
    zmq_msg_t out;
    int rc = !x || !y || !mx || !sum || zmq_msg_init_size(&out, out_bytes) ? ST_ENOMEM : 0;
    if (!rc) {
        memcpy(x, frame, (size_t)S * E * sizeof(float));
        const st_weight_t w = {.type = (st_type_t)hs->a.type,
                               .data = hs->rows,
                               .n_cols = E,
                               .n_rows = rows,
                               .n_mat = 1,
                               .row_bytes = (size_t)(hs->bytes / rows),
                               .mat_bytes = (size_t)hs->bytes,
                               .name = "output (slice)"};
        uint8_t *o = zmq_msg_data(&out);
        uint32_t pen0 = 0;
        for (uint32_t s0 = 0; s0 < S && !rc; s0 += chunk) {
            const uint32_t cnt = S - s0 < chunk ? S - s0 : chunk;
            st_linear(n->ctx, &w, 0, x + (size_t)s0 * E, (int)cnt, y, rows);
            for (uint32_t s = s0; s < s0 + cnt && !rc; s++) {
                float *ys = y + (size_t)(s - s0) * rows;
                if (c->full) {
                    memcpy(o + (size_t)s * rows * 4u, ys, (size_t)rows * 4u);
                    continue;
                }
                rc = st_node_head_cands(c, s, pen0, ys, rows, hs->a.lo, k, o + (size_t)s * k * 8u, &mx[s], &sum[s],
                                        &sum[S + s]);
                pen0 += c->pen_n[s];
            }
        }
        if (rc) zmq_msg_close(&out);
    }
    free(x), free(y);
    st_lru_charge(n->lru, -(int64_t)tmp);
    if (rc) {
        free(mx), free(sum);
        return s_reply_error(n, rx, rc, "head computation failed");
    }
    st_wire_msg_t m = {.type = ST_MSG_HEAD_RESULT, .request_id = rx->msg.request_id};
    m.head_result = (st_wire_head_result_t){.n_seq = S,
                                            .n_cand = c->full ? 0 : k,
                                            .full = c->full,
                                            .max = mx,
                                            .sum = sum,
                                            .sum_temp = sum + S,
                                            .compute_us = st_now_us() - t0};
    rc = st_wire_send_zmsg(n->sock, rx->peer, rx->peer_len, &m, &out, 0);
    free(mx), free(sum);
    return rc;
}

static int s_on_heartbeat(st_node_t *n, st_wire_rx_t *rx) {
    st_wire_msg_t m = {.type = ST_MSG_HEARTBEAT};
    m.heartbeat.seq = rx->msg.heartbeat.seq;
    st_machine_t b;
    st_machine_read("", &b);
    m.heartbeat.board = (st_wire_board_t){.rss = b.rss,
                                          .rss_file = b.rss_file,
                                          .has_cgroup = b.has_cgroup,
                                          .cgroup_mem = b.cgroup_mem,
                                          .cgroup_file = b.cgroup_file,
                                          .cgroup_max = b.cgroup_max,
                                          .has_temp = b.has_temp,
                                          .temp_mc = b.temp_mc,
                                          .has_throttled = b.has_throttled,
                                          .throttled = b.throttled};
    if (n->lru && n->store)
        m.heartbeat.board.cache_bytes =
            (uint64_t)st_lru_count(n->lru) * st_lru_entry_cost(st_store_record_bytes(n->store));
    return s_reply(n, rx, &m);
}

/* Receives and answers one message. */
static void s_handle_one(st_node_t *n) {
    st_wire_rx_t rx;
    char why[256];
    int rc = st_wire_recv(n->sock, true, &rx, why, sizeof why);
    if (rc == ST_EPROTO) {
        if (rx.peer_len) s_reply_error(n, &rx, ST_EPROTO, why);
        return;
    }
    if (rc) return; /* nothing there after all, or interrupted */
    n->requests++;
    switch (rx.msg.type) {
    case ST_MSG_HELLO: s_on_hello(n, &rx); break;
    case ST_MSG_ASSIGN: s_on_assign(n, &rx); break;
    case ST_MSG_SHARD_PUT: s_on_shard(n, &rx); break;
    case ST_MSG_EXPERT_PREFETCH: s_on_prefetch(n, &rx); break;
    case ST_MSG_EXPERT_COMPUTE: s_on_compute(n, &rx); break;
    case ST_MSG_HEARTBEAT: s_on_heartbeat(n, &rx); break;
    case ST_MSG_HEAD_ASSIGN: s_on_head_assign(n, &rx); break;
    case ST_MSG_HEAD_PUT: s_on_head_put(n, &rx); break;
    case ST_MSG_HEAD_COMPUTE: s_on_head_compute(n, &rx); break;
    default:
        snprintf(why, sizeof why, "a node does not take %s messages", st_wire_type_name(rx.msg.type));
        s_reply_error(n, &rx, ST_EPROTO, why);
    }
    st_wire_rx_clear(&rx);
}

/* ---- life cycle ---- */

st_node_t *st_node_new(st_node_opts_t *o) {
    if (!o->listen || !o->store_dir || o->mem == 0) {
        st_fail(ST_EINVAL, "--listen, --store and --mem are required");
        return NULL;
    }
    if (!o->insecure && (o->n_allow < 1 || strlen(o->secret_key) != 40)) {
        st_fail(ST_EINVAL, "CURVE needs the node's secret key and at least one allowed coordinator key");
        return NULL;
    }
    if (mkdir(o->store_dir, 0700) && errno != EEXIST) {
        st_fail(ST_EIO, "--store %s: %s", o->store_dir, strerror(errno));
        return NULL;
    }
    st_node_t *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->o = *o;
    sodium_memzero(n->o.secret_key, sizeof n->o.secret_key); /* the socket keeps its own copy */
    n->o.allow = NULL;
    if (o->id && *o->id)
        snprintf(n->id, sizeof n->id, "%s", o->id);
    else if (gethostname(n->id, sizeof n->id - 1))
        snprintf(n->id, sizeof n->id, "st-node");
    if (!(n->log_bad = st_log_limit_new(&(st_log_limit_opts_t){.what = "refused requests"}))) goto fail;
    n->zctx = zmq_ctx_new();
    n->sock = n->zctx ? zmq_socket(n->zctx, ZMQ_ROUTER) : NULL;
    if (!n->sock) {
        st_fail(ST_EIO, "zmq: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    const int64_t max_frame = ST_WIRE_MAX_FRAME > ST_WIRE_MAX_ENVELOPE ? ST_WIRE_MAX_FRAME : ST_WIRE_MAX_ENVELOPE;
    if (st_wire_socket_limits(n->sock, max_frame, ST_NODE_HWM)) goto fail;
    /* No receive limit (RCVHWM 0), as the coordinator's sockets (cluster.c): libzmq 4.3.4 stops
     * reading a connection whose receive queue is full, keeps it after a reset until the queue is
     * read again, then answers a PING found behind the queued requests on the broken connection,
     * and `!_io_error` aborts (zeromq/libzmq#4841, issue 12). With HWM 2 a coordinator's push (4
     * chunks in flight) fills the queue, and a peer can fill it on purpose; with no limit it is
     * never full, so that state never arises. The queue then holds what a peer sends before it
     * reads our replies: a coordinator's window (ST_NODE_RX_MSGS, reserved in the budget), each
     * message at most max_frame; only a peer with an allowed key (or anyone with --insecure) can
     * send more. A reply to a peer whose queue is full waits (NODE_SEND_MS at most) instead of
     * being dropped silently, as a ROUTER does by default; an unknown peer is an error. */
    const int mandatory = 1, send_ms = NODE_SEND_MS, unlimited = 0;
    if (zmq_setsockopt(n->sock, ZMQ_RCVHWM, &unlimited, sizeof unlimited) ||
        zmq_setsockopt(n->sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory) ||
        zmq_setsockopt(n->sock, ZMQ_SNDTIMEO, &send_ms, sizeof send_ms)) {
        st_fail(ST_EIO, "zmq_setsockopt: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    /* A coordinator that vanishes without closing its connection is dropped by
     * TCP keepalive (idle), or when sent data stay unacknowledged. Not by ZMTP
     * heartbeats: their timer writes to a connection libzmq keeps broken, the
     * other way to the abort above (issue 12); the coordinator's own heartbeats
     * still get their PONGs. Should libzmq abort all the same, st-node executes
     * itself again (restart.h). */
    const int ka = 1, ka_idle = NODE_KEEPALIVE_S, ka_intvl = 1, ka_cnt = 3, maxrt = NODE_MAXRT_MS;
    if (zmq_setsockopt(n->sock, ZMQ_TCP_KEEPALIVE, &ka, sizeof ka) ||
        zmq_setsockopt(n->sock, ZMQ_TCP_KEEPALIVE_IDLE, &ka_idle, sizeof ka_idle) ||
        zmq_setsockopt(n->sock, ZMQ_TCP_KEEPALIVE_INTVL, &ka_intvl, sizeof ka_intvl) ||
        zmq_setsockopt(n->sock, ZMQ_TCP_KEEPALIVE_CNT, &ka_cnt, sizeof ka_cnt) ||
        zmq_setsockopt(n->sock, ZMQ_TCP_MAXRT, &maxrt, sizeof maxrt)) {
        st_fail(ST_EIO, "zmq_setsockopt: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (!o->insecure) {
        /* CURVE server; the ZAP handler must be bound before the first client arrives */
        const int server = 1;
        n->zap = st_zap_new(n->zctx, n->sock, o->allow, o->n_allow);
        int rc = !n->zap || zmq_setsockopt(n->sock, ZMQ_CURVE_SERVER, &server, sizeof server) ||
                 zmq_setsockopt(n->sock, ZMQ_CURVE_SECRETKEY, o->secret_key, 40) ||
                 zmq_setsockopt(n->sock, ZMQ_ZAP_DOMAIN, "st", 2);
        sodium_memzero(o->secret_key, sizeof o->secret_key);
        if (rc) {
            st_fail(ST_EIO, "CURVE set-up: %s", zmq_strerror(zmq_errno()));
            goto fail;
        }
    }
    if (zmq_bind(n->sock, o->listen)) {
        st_fail(ST_EIO, "cannot listen on %s: %s", o->listen, zmq_strerror(zmq_errno()));
        goto fail;
    }
    size_t len = sizeof n->endpoint;
    zmq_getsockopt(n->sock, ZMQ_LAST_ENDPOINT, n->endpoint, &len);
    st_proc_memory(&n->base_rss, NULL);
    return n;
fail:
    st_node_destroy(&n);
    return NULL;
}

void st_node_destroy(st_node_t **np) {
    if (!np || !*np) return;
    st_node_t *n = *np;
    s_teardown_model(n);
    st_zap_destroy(&n->zap);
    if (n->sock) zmq_close(n->sock);
    if (n->zctx) zmq_ctx_term(n->zctx);
    st_log_limit_destroy(&n->log_bad); /* the counts still held are summed up */
    free(n);
    *np = NULL;
}

const char *st_node_endpoint(const st_node_t *n) { return n->endpoint; }

int st_node_run(st_node_t *n, volatile sig_atomic_t *stop) {
    while (!*stop) {
        zmq_pollitem_t it = {.socket = n->sock, .events = ZMQ_POLLIN};
        const int r = zmq_poll(&it, 1, n->q_len ? 0 : NODE_POLL_MS);
        if (r < 0) {
            if (zmq_errno() == EINTR) continue;
            return st_fail(ST_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        if (r > 0 && (it.revents & ZMQ_POLLIN))
            s_handle_one(n);
        else if (n->q_len)
            s_load_one(n);
        else
            st_log_limit_tick(n->log_bad, st_now_ms()); /* idle: a flood that stopped is summed up */
    }
    st_log(ST_LOG_INFO, "stopping: %llu requests served, %llu refused, %llu connections refused",
           (unsigned long long)n->requests, (unsigned long long)n->errors,
           (unsigned long long)(n->zap ? st_zap_refused(n->zap) : 0));
    return 0;
}
