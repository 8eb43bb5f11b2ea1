/* cluster: DEALER sockets to the nodes, request/reply matching with
 * deadlines, byte counters, and the setup exchanges (see cluster.h).
 *
 * Receiving never blocks: each socket has ZMQ_RCVTIMEO 0 and the only place
 * that sleeps is zmq_poll() with the time left until a deadline. A message
 * that fails the wire checks is counted and dropped, like a stale reply, so a
 * confused or hostile node can delay an answer (until its deadline) but never
 * corrupt one.
 */
#include "cluster.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "log_limit.h"
#include "st_log.h"

#define CLUSTER_HB_MS 1000  /* ZMTP heartbeat interval; a silent connection is dropped after 3 */
#define REJOIN_PROBE_MS 500 /* a node that went down is asked for its INVENTORY after this... */
#define REJOIN_MAX_MS 8000  /* ...doubled each time it goes down again, up to this */
#define REDIAL_MS 1000      /* a connection libzmq dropped without retrying is dialled after this, doubled up to 8 s */

/* A node that is down is probed: HELLO, and when it answers with its
 * INVENTORY, either its ASSIGN again (it had a share: a rejoin; a node whose
 * store still holds its share is back with no shard sent, missing experts
 * are pushed by st_cluster_maintain) or, when it never had a share (it
 * never answered, or was added later), it waits to be admitted with a
 * placement of the caller's (RJ_JOIN, see st_cluster_admit). */
enum { RJ_IDLE, RJ_HELLO, RJ_ASSIGN, RJ_PUSH, RJ_JOIN };

typedef struct {
    st_node_addr_t addr;
    void *sock;
    void *mon; /* PAIR on the socket's monitor: tells when the connection drops */
    bool up;
    st_node_stats_t stats;
    bool has_inventory;
    st_wire_inventory_t inv; /* held: our copy */

    /* its share, kept from st_cluster_assign for a rejoin */
    uint32_t n_experts, n_pinned;
    st_wire_ref_t *experts, *pinned;
    int rj;                /* RJ_* */
    uint64_t rj_rid;       /* the rejoin request waited for */
    double rj_deadline;    /* of that request */
    double rj_next;        /* next probe */
    int n_down;            /* times marked down (backoff) */
    int rj_fails;          /* probes in a row that failed (backoff) */
    uint32_t rj_n_missing; /* RJ_PUSH: what the node asked for */
    st_wire_ref_t *rj_missing;
    double rj_answered; /* RJ_JOIN: when its INVENTORY came */
    /* ZeroMQ queues what is sent to a node it cannot reach and delivers it
     * once connected: one HELLO waits there at most (hello_queued), and the
     * wait for its answer starts when the handshake succeeds */
    bool connected;
    uint64_t hello_queued; /* request id of a HELLO sent while not connected */
    /* libzmq dials again after a connection error, never after a protocol
     * error (garbage from whatever answered at the address): when it drops a
     * connection and does not retry, we dial (s_redial) */
    double lost_ms; /* when the connection dropped with no retry announced since, or 0 */
    int n_redials;  /* dialled by us in a row (backoff) */
    /* the board as its last HEARTBEAT answer said (st_cluster_ask_board) */
    bool removed; /* st_cluster_remove: disconnected for good */
    bool has_board;
    st_wire_board_t board;
    double board_ms, board_asked_ms; /* when it came, when it was last asked for */
} node_t;

struct st_cluster {
    void *zctx;
    node_t *nodes;
    int n;
    st_cluster_opts_t o;
    st_wire_shape_t shape;
    bool has_shape;
    uint64_t next_rid;
    int n_mon; /* monitor endpoints made */
    /* the shard reader of st_cluster_push, for pushes at a rejoin */
    st_shard_read_fn read;
    void *read_arg;
    int push_timeout_ms;
    uint64_t rejoins, rejoin_bytes;
    st_log_limit_t *log_refused; /* messages of a node refused: its first lines, then counts (NULL: all) */
};

static int s_open_socket(st_cluster_t *c, node_t *nd) {
    nd->sock = zmq_socket(c->zctx, ZMQ_DEALER);
    if (!nd->sock) return st_fail(ST_EIO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int64_t max_frame = c->o.max_frame > ST_WIRE_MAX_ENVELOPE ? c->o.max_frame : ST_WIRE_MAX_ENVELOPE;
    int zero = 0, ivl = 100, ivl_max = 1000;
    /* No receive limit (RCVHWM 0): libzmq 4.3.4 stops reading a connection
     * whose receive queue is full, keeps it after a reset until the queue is
     * read, and then aborts (`!_io_error`) when its heartbeat timer or a
     * node's PING writes to it (zeromq/libzmq#4841). A node that floods us
     * and resets could end the coordinator; with no limit the queue is never
     * full, so that state never arises. The messages are read at every poll;
     * each is at most max_frame (ZMQ_MAXMSGSIZE) either way. */
    if (st_wire_socket_limits(nd->sock, max_frame, 1000) < 0 ||
        zmq_setsockopt(nd->sock, ZMQ_RCVHWM, &zero, sizeof zero) ||
        zmq_setsockopt(nd->sock, ZMQ_RCVTIMEO, &zero, sizeof zero) ||
        zmq_setsockopt(nd->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) ||
        zmq_setsockopt(nd->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max))
        return st_fail(ST_EIO, "socket options for %s: %s", nd->addr.url, zmq_strerror(zmq_errno()));
    if (!c->o.insecure) {
        if (!nd->addr.server_key[0])
            return st_fail(ST_EINVAL, "no public key for node %s (give one in the cluster file, or --insecure)",
                           nd->addr.url);
        if (zmq_setsockopt(nd->sock, ZMQ_CURVE_SERVERKEY, nd->addr.server_key, ST_Z85_KEY_LEN) ||
            zmq_setsockopt(nd->sock, ZMQ_CURVE_PUBLICKEY, c->o.public_key, ST_Z85_KEY_LEN) ||
            zmq_setsockopt(nd->sock, ZMQ_CURVE_SECRETKEY, c->o.secret_key, ST_Z85_KEY_LEN))
            return st_fail(ST_EINVAL, "CURVE keys for node %s refused: %s", nd->addr.url, zmq_strerror(zmq_errno()));
    }
    /* a dead node is noticed without waiting for a deadline: its connection drops
     * (at once after kill -9; after the ZMTP heartbeat timeout when the link is cut
     * or the node hangs). The heartbeat timer cannot hit #4841 with RCVHWM 0. */
    const int hb_ivl = CLUSTER_HB_MS, hb_timeout = 3 * CLUSTER_HB_MS, linger = 0;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://st-cluster-mon-%p-%d", (void *)c, c->n_mon++); /* nodes move (realloc) */
    if (zmq_setsockopt(nd->sock, ZMQ_HEARTBEAT_IVL, &hb_ivl, sizeof hb_ivl) ||
        zmq_setsockopt(nd->sock, ZMQ_HEARTBEAT_TIMEOUT, &hb_timeout, sizeof hb_timeout) ||
        zmq_socket_monitor(nd->sock, ep,
                           ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_CONNECT_DELAYED |
                               ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_CONNECTED) ||
        !(nd->mon = zmq_socket(c->zctx, ZMQ_PAIR)) || zmq_setsockopt(nd->mon, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_connect(nd->mon, ep))
        return st_fail(ST_EIO, "monitor for %s: %s", nd->addr.url, zmq_strerror(zmq_errno()));
    if (zmq_connect(nd->sock, nd->addr.url))
        return st_fail(ST_EINVAL, "cannot connect to %s: %s", nd->addr.url, zmq_strerror(zmq_errno()));
    return 0;
}

st_cluster_t *st_cluster_new(const st_node_addr_t *nodes, int n_nodes, const st_cluster_opts_t *o) {
    if (n_nodes < 0 || n_nodes > 4096) {
        st_fail(ST_EINVAL, "%d nodes (0..4096)", n_nodes);
        return NULL;
    }
    st_cluster_t *c = st_calloc(1, sizeof *c);
    if (!c) {
        st_fail(ST_ENOMEM, "no memory for %d node connections", n_nodes);
        return NULL;
    }
    c->o = *o;
    if (c->o.timeout_ms <= 0) c->o.timeout_ms = 10000;
    c->n = n_nodes;
    c->next_rid = 1;
    c->log_refused = st_log_limit_new(&(st_log_limit_opts_t){.what = "refused messages"});
    c->nodes = st_calloc((size_t)n_nodes + 1, sizeof *c->nodes); /* + 1: no zero-size allocation when empty */
    c->zctx = zmq_ctx_new();
    if (!c->nodes || !c->zctx) {
        st_fail(ST_ENOMEM, "no memory for %d node connections", n_nodes);
        st_cluster_destroy(&c);
        return NULL;
    }
    for (int i = 0; i < n_nodes; i++) {
        c->nodes[i].addr = nodes[i];
        c->nodes[i].up = true;
        if (s_open_socket(c, &c->nodes[i]) < 0) {
            st_cluster_destroy(&c);
            return NULL;
        }
    }
    return c;
}

void st_cluster_destroy(st_cluster_t **cp) {
    if (!cp || !*cp) return;
    st_cluster_t *c = *cp;
    for (int i = 0; c->nodes && i < c->n; i++) {
        if (c->nodes[i].mon) zmq_close(c->nodes[i].mon);
        if (c->nodes[i].sock) zmq_close(c->nodes[i].sock);
        free(c->nodes[i].inv.held);
        free(c->nodes[i].experts);
        free(c->nodes[i].pinned);
        free(c->nodes[i].rj_missing);
    }
    if (c->zctx) zmq_ctx_term(c->zctx);
    st_log_limit_destroy(&c->log_refused); /* the counts still held are summed up */
    free(c->nodes);
    free(c);
    *cp = NULL;
}

int st_cluster_n_nodes(const st_cluster_t *c) { return c->n; }
const char *st_cluster_url(const st_cluster_t *c, int node) { return c->nodes[node].addr.url; }
bool st_cluster_is_up(const st_cluster_t *c, int node) { return c->nodes[node].up; }
bool st_cluster_log_ok(st_cluster_t *c, int node) {
    return st_log_limit_ok(c->log_refused, c->nodes[node].addr.url, st_now_ms());
}
const st_node_stats_t *st_cluster_stats(const st_cluster_t *c, int node) { return &c->nodes[node].stats; }

int st_cluster_n_up(const st_cluster_t *c) {
    int n = 0;
    for (int i = 0; i < c->n; i++) n += c->nodes[i].up;
    return n;
}

/* When a node that is down is probed again: later each time it goes down
 * and each time a probe fails. */
static void s_rejoin_later(node_t *nd) {
    int shift = (nd->n_down > 1 ? nd->n_down - 1 : 0) + nd->rj_fails;
    double wait = shift >= 5 ? REJOIN_MAX_MS : REJOIN_PROBE_MS * (double)(1 << shift);
    nd->rj = RJ_IDLE;
    nd->rj_next = st_now_ms() + (wait < REJOIN_MAX_MS ? wait : REJOIN_MAX_MS);
}

void st_cluster_set_down(st_cluster_t *c, int node, const char *why) {
    node_t *nd = &c->nodes[node];
    if (!nd->up) return;
    nd->up = false;
    nd->has_board = false; /* what it said before going down is stale */
    nd->n_down++;
    s_rejoin_later(nd);
    st_log(ST_LOG_WARN, "node %d (%s) is down: %s", node, nd->addr.url, why);
}

/* Counts a message sent to the node: a request (a reply will come) or one-way. */
static void s_count_sent(node_t *nd, const st_wire_msg_t *m, size_t frame_len, bool request) {
    nd->stats.bytes_out += st_wire_encoded_size(m) + frame_len;
    if (request)
        nd->stats.requests++;
    else
        nd->stats.oneway++;
}

/* Sends to the node whether up or not (the rejoin exchanges). */
static int s_send(st_cluster_t *c, node_t *nd, st_wire_msg_t *m, const void *frame, size_t frame_len, bool request) {
    m->request_id = c->next_rid++;
    int rc = st_wire_send(nd->sock, NULL, 0, m, frame, frame_len, ZMQ_DONTWAIT);
    if (rc < 0) return rc;
    s_count_sent(nd, m, frame_len, request);
    return 0;
}

int st_cluster_send(st_cluster_t *c, int node, st_wire_msg_t *m, const void *frame, size_t frame_len, bool request) {
    node_t *nd = &c->nodes[node];
    if (!nd->up) return st_fail(ST_EIO, "node %d (%s) is down", node, nd->addr.url);
    return s_send(c, nd, m, frame, frame_len, request);
}

/* HELLO to the node, up or not; *rid gets the request id to wait for. While
 * the node is not connected, a HELLO already queued for it is that request:
 * no second one queues behind it (a node down for a day would otherwise get
 * thousands when it comes back). */
static int s_send_hello(st_cluster_t *c, node_t *nd, uint64_t *rid) {
    if (!nd->connected && nd->hello_queued) {
        *rid = nd->hello_queued;
        return 0;
    }
    st_wire_msg_t m = {.type = ST_MSG_HELLO};
    snprintf(m.hello.coordinator_id, sizeof m.hello.coordinator_id, "%s", c->o.id ? c->o.id : "st-coordinator");
    m.hello.shape = c->shape;
    int rc = s_send(c, nd, &m, NULL, 0, true);
    if (rc < 0) return rc;
    if (!nd->connected) nd->hello_queued = m.request_id;
    *rid = m.request_id;
    return 0;
}

/* A monitor event of node i: its connection dropped, or a handshake (TCP and
 * CURVE) succeeded, which delivers a HELLO queued while it was unreachable:
 * the wait for its answer starts now. */
static void s_on_monitor(st_cluster_t *c, int i, uint16_t event) {
    node_t *nd = &c->nodes[i];
    if (nd->removed) return;
    if (event == ZMQ_EVENT_CONNECT_DELAYED || event == ZMQ_EVENT_CONNECT_RETRIED || event == ZMQ_EVENT_CONNECTED) {
        nd->lost_ms = 0; /* libzmq is dialling */
    } else if (event == ZMQ_EVENT_DISCONNECTED) {
        nd->lost_ms = st_now_ms();
        nd->connected = false;
        nd->hello_queued = 0;
        st_cluster_set_down(c, i, "connection lost");
        if (nd->rj == RJ_HELLO || nd->rj == RJ_ASSIGN || nd->rj == RJ_JOIN) s_rejoin_later(nd);
    } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        nd->connected = true;
        nd->n_redials = 0;
        if (!nd->up && nd->hello_queued &&
            (nd->rj == RJ_IDLE || (nd->rj == RJ_HELLO && nd->rj_rid == nd->hello_queued))) {
            nd->rj = RJ_HELLO;
            nd->rj_rid = nd->hello_queued;
            nd->rj_deadline = st_now_ms() + c->o.timeout_ms;
        }
        nd->hello_queued = 0;
    }
}

int st_cluster_send_zmsg(st_cluster_t *c, int node, st_wire_msg_t *m, zmq_msg_t *frame, bool request) {
    node_t *nd = &c->nodes[node];
    if (!nd->up) {
        zmq_msg_close(frame);
        return st_fail(ST_EIO, "node %d (%s) is down", node, nd->addr.url);
    }
    m->request_id = c->next_rid++;
    size_t frame_len = zmq_msg_size(frame);
    int rc = st_wire_send_zmsg(nd->sock, NULL, 0, m, frame, ZMQ_DONTWAIT);
    if (rc < 0) return rc;
    s_count_sent(nd, m, frame_len, request);
    return 0;
}

/* Waits up to timeout_ms for messages, then hands every well-formed one to
 * on_msg. Returns the number handled (0 on timeout) or a negative code. */
typedef int (*s_msg_fn)(st_cluster_t *c, int node, st_wire_rx_t *rx, void *arg);

static void s_rejoin_tick(st_cluster_t *c);
static void s_rejoin_msg(st_cluster_t *c, int node, st_wire_rx_t *rx);

/* A node's HEARTBEAT answer (only a node that is up has a board to show). */
static void s_keep_board(node_t *nd, const st_wire_heartbeat_t *hb) {
    if (!nd->up) return;
    nd->board = hb->board;
    nd->has_board = true;
    nd->board_ms = st_now_ms();
}

static int s_poll(st_cluster_t *c, int timeout_ms, s_msg_fn on_msg, void *arg) {
    s_rejoin_tick(c);
    zmq_pollitem_t stack_items[128], *items = stack_items;
    if (c->n > 64 && !(items = st_malloc((size_t)c->n * 2 * sizeof *items))) return st_fail(ST_ENOMEM, "no memory");
    for (int i = 0; i < c->n; i++) {
        items[i] = (zmq_pollitem_t){.socket = c->nodes[i].sock, .events = ZMQ_POLLIN};
        items[c->n + i] = (zmq_pollitem_t){.socket = c->nodes[i].mon, .events = ZMQ_POLLIN};
    }
    int handled = 0, rc = zmq_poll(items, 2 * c->n, timeout_ms < 0 ? 0 : timeout_ms);
    /* a signal (SIGHUP: re-read the cluster file) only cuts the wait short: the caller polls again */
    if (rc < 0) rc = zmq_errno() == EINTR ? 0 : st_fail(ST_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
    for (int i = 0; rc > 0 && i < c->n; i++) {
        if (!(items[c->n + i].revents & ZMQ_POLLIN)) continue;
        for (;;) { /* monitor events: [u16 event, u32 value], endpoint */
            uint8_t ev[6];
            char ep[256];
            if (zmq_recv(c->nodes[i].mon, ev, sizeof ev, ZMQ_DONTWAIT) < 0) break;
            zmq_recv(c->nodes[i].mon, ep, sizeof ep, ZMQ_DONTWAIT);
            uint16_t event;
            memcpy(&event, ev, 2);
            s_on_monitor(c, i, event);
        }
    }
    for (int i = 0; rc > 0 && i < c->n; i++) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        for (;;) { /* drain this socket */
            st_wire_rx_t rx;
            char why[320] = "";
            int r = st_wire_recv(c->nodes[i].sock, false, &rx, why, sizeof why);
            if (r == ST_ETIMEOUT) break;
            if (r == ST_EPROTO && rx.msg.version && rx.msg.version != ST_WIRE_VERSION) {
                st_cluster_set_down(c, i, why); /* another protocol: the log names both versions */
                continue;
            }
            if (r < 0) {
                c->nodes[i].stats.stale++;
                st_log(ST_LOG_DEBUG, "node %d: bad message dropped: %s", i, why);
                if (r != ST_EPROTO) break;
                continue;
            }
            if (rx.msg.type == ST_MSG_HEARTBEAT) { /* a board answer: kept, not counted as expert traffic */
                s_keep_board(&c->nodes[i], &rx.msg.heartbeat);
                st_wire_rx_clear(&rx);
                continue;
            }
            size_t flen;
            st_wire_rx_frame(&rx, &flen);
            c->nodes[i].stats.bytes_in += st_wire_encoded_size(&rx.msg) + flen;
            if (c->has_shape && st_wire_check(&rx.msg, &c->shape, flen, why, sizeof why) < 0) {
                c->nodes[i].stats.stale++;
                if (st_cluster_log_ok(c, i))
                    st_log(ST_LOG_WARN, "node %d (%s): %s refused: %s", i, c->nodes[i].addr.url,
                           st_wire_type_name(rx.msg.type), why);
                st_wire_rx_clear(&rx);
                continue;
            }
            if (!c->nodes[i].up) { /* nothing is waited for from a node that is down, but its rejoin */
                s_rejoin_msg(c, i, &rx);
                st_wire_rx_clear(&rx);
                continue;
            }
            int hr = on_msg(c, i, &rx, arg);
            st_wire_rx_clear(&rx);
            if (hr < 0) {
                rc = hr;
                break;
            }
            handled++;
        }
    }
    if (items != stack_items) free(items);
    return rc < 0 ? rc : handled;
}

typedef struct {
    uint64_t *rids; /* depth per node: rids[node * depth + d] */
    int depth, pending;
    st_cluster_reply_fn fn;
    void *arg;
    uint64_t *other; /* replies taken in passing (st_cluster_gather_also) */
    st_cluster_reply_fn other_fn;
    void *other_arg;
} gather_t;

static int s_gather_msg(st_cluster_t *c, int node, st_wire_rx_t *rx, void *arg) {
    gather_t *g = arg;
    node_t *nd = &c->nodes[node];
    if (g->other && g->other[node] && rx->msg.request_id == g->other[node]) {
        g->other[node] = 0;
        nd->stats.replies++;
        if (rx->msg.type == ST_MSG_ERROR) nd->stats.errors++;
        return g->other_fn ? g->other_fn(g->other_arg, node, rx) : 0;
    }
    uint64_t *mine = g->rids + (size_t)node * (size_t)g->depth;
    int d = 0;
    while (d < g->depth && !(mine[d] && rx->msg.request_id == mine[d])) d++;
    if (d == g->depth) {
        if (rx->msg.type != ST_MSG_HEARTBEAT) nd->stats.stale++;
        return 0;
    }
    mine[d] = 0;
    g->pending--;
    nd->stats.replies++;
    if (rx->msg.type == ST_MSG_ERROR) nd->stats.errors++;
    return g->fn ? g->fn(g->arg, node, rx) : 0;
}

static int s_gather(st_cluster_t *c, gather_t *g, double deadline_ms) {
    const size_t D = (size_t)g->depth;
    for (size_t j = 0; j < (size_t)c->n * D; j++) g->pending += g->rids[j] != 0;
    while (g->pending > 0) {
        double left = deadline_ms - st_now_ms();
        if (left <= 0) break;
        int rc = s_poll(c, (int)(left + 0.999), s_gather_msg, g);
        if (rc < 0) return rc;
        int alive = 0; /* a node whose connection dropped will not answer: stop waiting for it */
        for (size_t j = 0; j < (size_t)c->n * D; j++) alive += g->rids[j] && c->nodes[j / D].up;
        if (alive == 0) break;
    }
    if (g->pending == 0) return 0;
    for (size_t j = 0; j < (size_t)c->n * D; j++)
        if (g->rids[j]) c->nodes[j / D].stats.timeouts++;
    return ST_ETIMEOUT;
}

int st_cluster_gather(st_cluster_t *c, uint64_t *rids, double deadline_ms, st_cluster_reply_fn fn, void *arg) {
    return st_cluster_gather_also(c, rids, deadline_ms, fn, arg, NULL, NULL, NULL);
}

int st_cluster_gather_also(st_cluster_t *c, uint64_t *rids, double deadline_ms, st_cluster_reply_fn fn, void *arg,
                           uint64_t *other, st_cluster_reply_fn other_fn, void *other_arg) {
    gather_t g = {rids, 1, 0, fn, arg, other, other_fn, other_arg};
    return s_gather(c, &g, deadline_ms);
}

int st_cluster_gather_many(st_cluster_t *c, uint64_t *rids, int depth, double deadline_ms, st_cluster_reply_fn fn,
                           void *arg) {
    if (depth < 1) return st_fail(ST_EINVAL, "depth %d", depth);
    gather_t g = {rids, depth, 0, fn, arg, NULL, NULL, NULL};
    return s_gather(c, &g, deadline_ms);
}

/* ---- HELLO -> INVENTORY ------------------------------------------------- */

static int s_keep_inventory(node_t *nd, const st_wire_inventory_t *inv) {
    free(nd->inv.held);
    nd->inv = *inv;
    nd->inv.held = NULL;
    nd->has_inventory = false;
    if (inv->n_held) {
        nd->inv.held = st_malloc(inv->n_held * sizeof *inv->held);
        if (!nd->inv.held) return st_fail(ST_ENOMEM, "no memory for an inventory");
        memcpy(nd->inv.held, inv->held, inv->n_held * sizeof *inv->held);
    }
    nd->has_inventory = true;
    return 0;
}

static int s_on_inventory(void *arg, int node, st_wire_rx_t *rx) {
    st_cluster_t *c = arg;
    node_t *nd = &c->nodes[node];
    if (rx->msg.type != ST_MSG_INVENTORY) {
        char why[400];
        snprintf(why, sizeof why, "answered HELLO with %s%s%s", st_wire_type_name(rx->msg.type),
                 rx->msg.type == ST_MSG_ERROR ? ": " : "", rx->msg.type == ST_MSG_ERROR ? rx->msg.error.message : "");
        st_cluster_set_down(c, node, why);
        return 0;
    }
    const st_wire_inventory_t *inv = &rx->msg.inventory;
    if (!st_wire_same_release(inv->software)) {
        char me[ST_WIRE_MAX_SOFTWARE + 1];
        st_log(ST_LOG_WARN,
               "node %d (%s) runs %s and this coordinator %s: same protocol, but upgrade both to one version", node,
               nd->addr.url, inv->software[0] ? inv->software : "a version before 0.4.0",
               st_wire_software(me, sizeof me));
    }
    return s_keep_inventory(nd, inv);
}

/* A first contact waits at least this long: it includes TCP's connect (a lost
 * SYN alone is retried after 1 s) and the CURVE handshake, which a short
 * steady-state --timeout-ms for expert round trips should not cut off. */
#define FIRST_CONTACT_MIN_MS 5000

/* HELLO to the nodes that are up; waits for their INVENTORY. */
static int s_hello_all(st_cluster_t *c) {
    uint64_t *rids = st_calloc((size_t)c->n, sizeof *rids);
    if (!rids) return st_fail(ST_ENOMEM, "no memory");
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].up && s_send_hello(c, &c->nodes[i], &rids[i]) < 0)
            st_cluster_set_down(c, i, "HELLO could not be sent");
    const int wait_ms = c->o.timeout_ms > FIRST_CONTACT_MIN_MS ? c->o.timeout_ms : FIRST_CONTACT_MIN_MS;
    int rc = st_cluster_gather(c, rids, st_now_ms() + wait_ms, s_on_inventory, c);
    for (int i = 0; rc == ST_ETIMEOUT && i < c->n; i++) {
        if (!rids[i]) continue;
        char why[256], first_contact[128] = "";
        if (wait_ms > c->o.timeout_ms) /* --timeout-ms 2000 must not look ignored */
            snprintf(first_contact, sizeof first_contact, "; a first contact waits %d ms, not --timeout-ms %d", wait_ms,
                     c->o.timeout_ms);
        snprintf(why, sizeof why, "no answer to HELLO within %d ms (not running, wrong address or key?%s)", wait_ms,
                 first_contact);
        st_cluster_set_down(c, i, why);
    }
    free(rids);
    if (rc < 0 && rc != ST_ETIMEOUT) return rc;
    return st_cluster_n_up(c);
}

int st_cluster_hello(st_cluster_t *c, const st_wire_shape_t *shape) {
    c->shape = *shape;
    c->has_shape = true;
    return s_hello_all(c);
}

int st_cluster_add(st_cluster_t *c, const st_node_addr_t *nodes, int n) {
    if (n < 1 || c->n + n > 4096 || !c->has_shape) return st_fail(ST_EINVAL, "cannot add %d nodes", n);
    node_t *nv = st_realloc(c->nodes, (size_t)(c->n + n) * sizeof *nv);
    if (!nv) return st_fail(ST_ENOMEM, "no memory for %d more nodes", n);
    c->nodes = nv;
    memset(nv + c->n, 0, (size_t)n * sizeof *nv);
    const int first = c->n;
    for (int i = 0; i < n; i++) {
        node_t *nd = &c->nodes[c->n];
        nd->addr = nodes[i];
        nd->rj_next = st_now_ms();      /* down until it answers the probe, sent at once */
        if (s_open_socket(c, nd) < 0) { /* a bad address or key: that node is left out */
            if (nd->mon) zmq_close(nd->mon);
            if (nd->sock) zmq_close(nd->sock);
            st_log(ST_LOG_WARN, "node %s not added (see above)", nodes[i].url);
            memset(nd, 0, sizeof *nd);
            continue;
        }
        c->n++;
    }
    return c->n - first;
}

int st_cluster_rekey(st_cluster_t *c, int node, const char *key) {
    node_t *nd = &c->nodes[node];
    if (c->o.insecure || nd->removed || strlen(key) != ST_Z85_KEY_LEN)
        return st_fail(ST_EINVAL, "no new key for node %s", nd->addr.url);
    if (!strcmp(key, nd->addr.server_key)) return 0;
    st_cluster_set_down(c, node, "it paired again, with a new key");
    /* the same socket (the poll set keeps its shape), connected again: the key applies to the new connection */
    zmq_disconnect(nd->sock, nd->addr.url);
    memcpy(nd->addr.server_key, key, ST_Z85_KEY_LEN + 1);
    nd->connected = false;
    nd->hello_queued = 0;
    nd->rj = RJ_IDLE;
    nd->rj_next = st_now_ms(); /* probed at once */
    if (zmq_setsockopt(nd->sock, ZMQ_CURVE_SERVERKEY, key, ST_Z85_KEY_LEN) || zmq_connect(nd->sock, nd->addr.url))
        return st_fail(ST_EIO, "node %s: cannot reconnect with its new key: %s", nd->addr.url,
                       zmq_strerror(zmq_errno()));
    st_log(ST_LOG_INFO, "node %d (%s) has a new key: reconnecting", node, nd->addr.url);
    return 1;
}

const st_wire_inventory_t *st_cluster_inventory(const st_cluster_t *c, int node) {
    return c->nodes[node].has_inventory ? &c->nodes[node].inv : NULL;
}

const st_wire_ref_t *st_cluster_share(const st_cluster_t *c, int node, uint32_t *n) {
    *n = c->nodes[node].n_experts;
    return c->nodes[node].experts;
}

/* ---- ASSIGN -> ASSIGN_ACK ----------------------------------------------- */

/* Whether every expert the node asks for is one of those assigned to it. */
static bool s_missing_ok(const st_wire_assign_ack_t *ack, const st_wire_ref_t *experts, uint32_t n_experts) {
    for (uint32_t i = 0; i < ack->n_missing; i++) {
        bool ok = false;
        for (uint32_t j = 0; !ok && j < n_experts; j++)
            ok = experts[j].layer == ack->missing[i].layer && experts[j].expert == ack->missing[i].expert;
        if (!ok) return false;
    }
    return true;
}

typedef struct {
    st_cluster_t *c;
    st_cluster_assign_t *a;
    int acked;
} assign_ctx_t;

static int s_on_assign_ack(void *arg, int node, st_wire_rx_t *rx) {
    assign_ctx_t *x = arg;
    if (rx->msg.type != ST_MSG_ASSIGN_ACK) {
        char why[400];
        snprintf(why, sizeof why, "answered ASSIGN with %s%s%s", st_wire_type_name(rx->msg.type),
                 rx->msg.type == ST_MSG_ERROR ? ": " : "", rx->msg.type == ST_MSG_ERROR ? rx->msg.error.message : "");
        st_cluster_set_down(x->c, node, why);
        return 0;
    }
    st_cluster_assign_t *a = &x->a[node];
    const st_wire_assign_ack_t *ack = &rx->msg.assign_ack;
    /* the node may only ask for experts it was assigned */
    if (!s_missing_ok(ack, a->experts, a->n_experts)) {
        st_cluster_set_down(x->c, node, "asked for an expert it was not assigned");
        return 0;
    }
    free(a->missing);
    a->missing = NULL;
    a->n_missing = ack->n_missing;
    if (ack->n_missing) {
        a->missing = st_malloc(ack->n_missing * sizeof *a->missing);
        if (!a->missing) return st_fail(ST_ENOMEM, "no memory");
        memcpy(a->missing, ack->missing, ack->n_missing * sizeof *a->missing);
    }
    x->acked++;
    return 0;
}

/* Our copy of the node's share, for its ASSIGN at a rejoin. */
static int s_keep_share(node_t *nd, const st_cluster_assign_t *a) {
    free(nd->experts);
    free(nd->pinned);
    nd->experts = st_malloc(((size_t)a->n_experts + 1) * sizeof *nd->experts);
    nd->pinned = st_malloc(((size_t)a->n_pinned + 1) * sizeof *nd->pinned);
    nd->n_experts = nd->n_pinned = 0;
    if (!nd->experts || !nd->pinned) return st_fail(ST_ENOMEM, "no memory");
    memcpy(nd->experts, a->experts, a->n_experts * sizeof *nd->experts);
    memcpy(nd->pinned, a->pinned, a->n_pinned * sizeof *nd->pinned);
    nd->n_experts = a->n_experts;
    nd->n_pinned = a->n_pinned;
    return 0;
}

int st_cluster_assign(st_cluster_t *c, st_cluster_assign_t *a) {
    uint64_t *rids = st_calloc((size_t)c->n, sizeof *rids);
    if (!rids) return st_fail(ST_ENOMEM, "no memory");
    for (int i = 0; i < c->n; i++)
        if (!a[i].keep && s_keep_share(&c->nodes[i], &a[i]) < 0) {
            free(rids);
            return ST_ENOMEM;
        }
    for (int i = 0; i < c->n; i++) {
        if (!c->nodes[i].up || a[i].keep) continue;
        st_wire_msg_t m = {.type = ST_MSG_ASSIGN};
        m.assign.shape = c->shape;
        m.assign.n_experts = a[i].n_experts;
        m.assign.experts = a[i].experts;
        m.assign.n_pinned = a[i].n_pinned;
        m.assign.pinned = a[i].pinned;
        if (st_cluster_send(c, i, &m, NULL, 0, true) < 0)
            st_cluster_set_down(c, i, "ASSIGN could not be sent");
        else
            rids[i] = m.request_id;
    }
    assign_ctx_t x = {c, a, 0};
    int rc = st_cluster_gather(c, rids, st_now_ms() + c->o.timeout_ms, s_on_assign_ack, &x);
    for (int i = 0; rc == ST_ETIMEOUT && i < c->n; i++)
        if (rids[i]) st_cluster_set_down(c, i, "no answer to ASSIGN");
    free(rids);
    if (rc < 0 && rc != ST_ETIMEOUT) return rc;
    return x.acked;
}

void st_cluster_assign_free(st_cluster_assign_t *a, int n_nodes) {
    for (int i = 0; a && i < n_nodes; i++) {
        free(a[i].experts);
        free(a[i].pinned);
        free(a[i].missing);
        memset(&a[i], 0, sizeof a[i]);
    }
}

/* ---- rejoin ---------------------------------------------------------------- */

static void s_rejoin_fail(st_cluster_t *c, int i, const char *why) {
    st_log(ST_LOG_DEBUG, "node %d (%s): rejoin failed: %s", i, c->nodes[i].addr.url, why);
    if (c->nodes[i].rj_fails < 16) c->nodes[i].rj_fails++;
    s_rejoin_later(&c->nodes[i]);
}

static void s_rejoined(st_cluster_t *c, int i, int64_t pushed) {
    node_t *nd = &c->nodes[i];
    nd->up = true;
    nd->rj = RJ_IDLE;
    nd->rj_fails = 0;
    c->rejoins++;
    c->rejoin_bytes += (uint64_t)(pushed > 0 ? pushed : 0);
    st_log(ST_LOG_INFO, "node %d (%s) rejoined: store verified against its %u assigned experts, %lld shard bytes sent",
           i, nd->addr.url, nd->n_experts, (long long)pushed);
}

/* Probes the nodes that went down (a HELLO each, when due); abandons rejoin
 * requests past their deadline. */
/* A connection libzmq dropped and will not dial again (a protocol error
 * ends its session): a new one, and a HELLO waiting for the old one's
 * handshake is sent again. */
static void s_redial(st_cluster_t *c, int i) {
    node_t *nd = &c->nodes[i];
    const int shift = nd->n_redials < 3 ? nd->n_redials : 3;
    if (st_now_ms() - nd->lost_ms < REDIAL_MS * (double)(1 << shift)) return;
    nd->lost_ms = 0;
    nd->n_redials++;
    st_log(ST_LOG_WARN, "node %d (%s): its connection broke the protocol and was dropped; connecting again", i,
           nd->addr.url);
    zmq_disconnect(nd->sock, nd->addr.url); /* the dead session's endpoint, if libzmq still lists it */
    if (zmq_connect(nd->sock, nd->addr.url) != 0)
        st_log(ST_LOG_WARN, "node %d: cannot connect to %s again: %s", i, nd->addr.url, zmq_strerror(zmq_errno()));
    if (nd->rj == RJ_HELLO && nd->rj_rid == nd->hello_queued) s_rejoin_later(nd);
    nd->hello_queued = 0;
}

static void s_rejoin_tick(st_cluster_t *c) {
    const double now = st_now_ms();
    for (int i = 0; i < c->n; i++) {
        node_t *nd = &c->nodes[i];
        if (nd->lost_ms && !nd->removed) s_redial(c, i);
        if (nd->up || nd->removed || !c->has_shape) continue;
        if ((nd->rj == RJ_HELLO || nd->rj == RJ_ASSIGN) && now > nd->rj_deadline) {
            s_rejoin_fail(c, i, "no answer within the deadline");
            continue;
        }
        if (nd->rj != RJ_IDLE || now < nd->rj_next) continue;
        uint64_t rid;
        if (s_send_hello(c, nd, &rid) < 0) {
            s_rejoin_fail(c, i, "HELLO could not be queued");
            continue;
        }
        nd->rj = RJ_HELLO;
        nd->rj_rid = rid;
        nd->rj_deadline = nd->connected ? now + c->o.timeout_ms : INFINITY; /* see s_on_monitor */
    }
}

/* A message from a node that is down: the answer to its rejoin request, or stale. */
static void s_rejoin_msg(st_cluster_t *c, int i, st_wire_rx_t *rx) {
    node_t *nd = &c->nodes[i];
    if ((nd->rj != RJ_HELLO && nd->rj != RJ_ASSIGN) || rx->msg.request_id != nd->rj_rid) {
        if (rx->msg.type != ST_MSG_HEARTBEAT) nd->stats.stale++;
        return;
    }
    nd->stats.replies++;
    if (rx->msg.type == ST_MSG_ERROR) {
        nd->stats.errors++;
        s_rejoin_fail(c, i, rx->msg.error.message);
        return;
    }
    if (nd->rj == RJ_HELLO) {
        if (rx->msg.type != ST_MSG_INVENTORY || s_keep_inventory(nd, &rx->msg.inventory) < 0) {
            s_rejoin_fail(c, i, "no INVENTORY");
            return;
        }
        if (nd->n_experts == 0) { /* nothing to rejoin with: it joins, with a placement of the caller's */
            nd->rj = RJ_JOIN;
            nd->rj_answered = st_now_ms();
            st_log(ST_LOG_INFO, "node %d (%s) answered: it joins at the next placement", i, nd->addr.url);
            return;
        }
        st_wire_msg_t m = {.type = ST_MSG_ASSIGN};
        m.assign.shape = c->shape;
        m.assign.n_experts = nd->n_experts;
        m.assign.experts = nd->experts;
        m.assign.n_pinned = nd->n_pinned;
        m.assign.pinned = nd->pinned;
        if (s_send(c, nd, &m, NULL, 0, true) < 0) {
            s_rejoin_fail(c, i, "ASSIGN could not be queued");
            return;
        }
        nd->rj = RJ_ASSIGN;
        nd->rj_rid = m.request_id;
        nd->rj_deadline = st_now_ms() + c->o.timeout_ms;
        return;
    }
    const st_wire_assign_ack_t *ack = &rx->msg.assign_ack;
    if (rx->msg.type != ST_MSG_ASSIGN_ACK || !s_missing_ok(ack, nd->experts, nd->n_experts)) {
        s_rejoin_fail(c, i, "no valid ASSIGN_ACK");
        return;
    }
    if (ack->n_missing == 0) {
        s_rejoined(c, i, 0);
        return;
    }
    free(nd->rj_missing);
    nd->rj_missing = st_malloc(ack->n_missing * sizeof *nd->rj_missing);
    if (!nd->rj_missing) {
        s_rejoin_fail(c, i, "no memory");
        return;
    }
    memcpy(nd->rj_missing, ack->missing, ack->n_missing * sizeof *nd->rj_missing);
    nd->rj_n_missing = ack->n_missing;
    nd->rj = RJ_PUSH; /* st_cluster_maintain pushes them */
}

int st_cluster_maintain(st_cluster_t *c) {
    int back = 0;
    for (int i = 0; i < c->n; i++) {
        node_t *nd = &c->nodes[i];
        if (nd->up || nd->rj != RJ_PUSH) continue;
        if (!c->read) {
            s_rejoin_fail(c, i, "no shard reader to push its missing experts");
            continue;
        }
        st_cluster_assign_t *a = st_calloc((size_t)c->n, sizeof *a);
        if (!a) return st_fail(ST_ENOMEM, "no memory");
        a[i] = (st_cluster_assign_t){.n_experts = nd->n_experts,
                                     .n_pinned = nd->n_pinned,
                                     .experts = nd->experts,
                                     .pinned = nd->pinned,
                                     .n_missing = nd->rj_n_missing,
                                     .missing = nd->rj_missing};
        st_log(ST_LOG_INFO, "node %d (%s) rejoins without %u of its experts: pushing them", i, nd->addr.url,
               nd->rj_n_missing);
        nd->up = true; /* for the push only; it marks the node down again if it fails */
        int64_t pushed = st_cluster_push(c, a, c->read, c->read_arg, c->push_timeout_ms, true);
        free(a);
        if (pushed >= 0 && nd->up) {
            s_rejoined(c, i, pushed);
            back++;
        } else {
            nd->up = false;
            s_rejoin_fail(c, i, "push failed");
        }
    }
    return back;
}

int st_cluster_n_joining(const st_cluster_t *c, double *first_ms) {
    int n = 0;
    double first = INFINITY;
    for (int i = 0; i < c->n; i++) {
        const node_t *nd = &c->nodes[i];
        if (nd->up || nd->rj != RJ_JOIN) continue;
        n++;
        first = nd->rj_answered < first ? nd->rj_answered : first;
    }
    if (first_ms) *first_ms = first;
    return n;
}

int st_cluster_admit(st_cluster_t *c) {
    int n = 0;
    for (int i = 0; i < c->n; i++) {
        node_t *nd = &c->nodes[i];
        if (nd->up || nd->rj != RJ_JOIN) continue;
        nd->up = true;
        nd->rj = RJ_IDLE;
        nd->rj_fails = 0;
        n++;
    }
    return n;
}

static int s_idle_msg(st_cluster_t *c, int node, st_wire_rx_t *rx, void *arg) {
    (void)arg;
    if (rx->msg.type != ST_MSG_HEARTBEAT) c->nodes[node].stats.stale++; /* nothing is waited for */
    return 0;
}

int st_cluster_idle(st_cluster_t *c, int wait_ms) {
    int rc = s_poll(c, wait_ms, s_idle_msg, NULL);
    return rc < 0 ? rc : st_cluster_maintain(c);
}

void st_cluster_remove(st_cluster_t *c, int node) {
    node_t *nd = &c->nodes[node];
    if (nd->removed) return;
    nd->removed = true;
    nd->up = false;
    nd->has_board = false;
    nd->rj = RJ_IDLE;
    nd->hello_queued = 0;
    zmq_disconnect(nd->sock, nd->addr.url); /* the socket stays, silent: the poll set keeps its shape */
    st_log(ST_LOG_INFO, "node %d (%s) removed from the cluster", node, nd->addr.url);
}

bool st_cluster_is_removed(const st_cluster_t *c, int node) { return c->nodes[node].removed; }

int st_cluster_ask_board(st_cluster_t *c, int every_ms) {
    const double now = st_now_ms();
    int asked = 0;
    for (int i = 0; i < c->n; i++) {
        node_t *nd = &c->nodes[i];
        if (!nd->up || now - nd->board_asked_ms < every_ms) continue;
        st_wire_msg_t m = {.type = ST_MSG_HEARTBEAT, .request_id = c->next_rid++};
        m.heartbeat.seq = m.request_id;
        nd->board_asked_ms = now;
        /* outside the byte counters: the per-token figures count expert traffic only */
        if (st_wire_send(nd->sock, NULL, 0, &m, NULL, 0, ZMQ_DONTWAIT) == 0) asked++;
    }
    return asked;
}

const st_wire_board_t *st_cluster_board(const st_cluster_t *c, int node, double *age_ms) {
    const node_t *nd = &c->nodes[node];
    if (!nd->up || !nd->has_board) return NULL;
    if (age_ms) *age_ms = st_now_ms() - nd->board_ms;
    return &nd->board;
}

uint64_t st_cluster_rejoins(const st_cluster_t *c, uint64_t *bytes) {
    if (bytes) *bytes = c->rejoin_bytes;
    return c->rejoins;
}

/* ---- shard push ----------------------------------------------------------- */

#define PUSH_WINDOW 4  /* chunks in flight per node */
#define PUSH_RETRIES 3 /* restarts of one expert */

typedef struct {
    uint64_t rid;
    uint32_t k; /* index in the node's missing list */
    uint64_t offset;
    uint32_t len;
} inflight_t;

typedef struct {
    uint32_t k;      /* next expert to send */
    uint64_t offset; /* next offset in it */
    inflight_t fl[PUSH_WINDOW];
    int n_fl;
    int retries;
    double last_progress;
    uint32_t done; /* experts completed */
} push_node_t;

typedef struct {
    const st_cluster_assign_t *a;
    push_node_t *pn;
    uint64_t bytes_done;
    uint32_t experts_done;
    const st_wire_shape_t *shape; /* an expert's bytes depend on its layer */
} push_t;

static void s_push_restart(st_cluster_t *c, push_t *p, int node, uint32_t k, const char *why) {
    push_node_t *pn = &p->pn[node];
    if (++pn->retries > PUSH_RETRIES) {
        char msg[300];
        snprintf(msg, sizeof msg, "shard push failed %d times (%s)", pn->retries, why);
        st_cluster_set_down(c, node, msg);
        return;
    }
    st_log(ST_LOG_WARN, "node %d: resending expert %u/%u: %s", node, p->a[node].missing[k].layer,
           p->a[node].missing[k].expert, why);
    pn->n_fl = 0; /* later acks are stale now */
    pn->k = k;
    pn->offset = 0;
}

static int s_on_shard_ack(st_cluster_t *c, int node, st_wire_rx_t *rx, void *arg) {
    push_t *p = arg;
    push_node_t *pn = &p->pn[node];
    int f = -1;
    for (int i = 0; i < pn->n_fl; i++)
        if (pn->fl[i].rid == rx->msg.request_id) f = i;
    if (f < 0) {
        c->nodes[node].stats.stale++;
        return 0;
    }
    inflight_t fl = pn->fl[f];
    memmove(&pn->fl[f], &pn->fl[f + 1], (size_t)(pn->n_fl - f - 1) * sizeof *pn->fl);
    pn->n_fl--;
    c->nodes[node].stats.replies++;
    pn->last_progress = st_now_ms();
    const st_wire_shard_ack_t *ack = &rx->msg.shard_ack;
    const st_wire_ref_t *ref = &p->a[node].missing[fl.k];
    if (rx->msg.type == ST_MSG_ERROR) {
        c->nodes[node].stats.errors++;
        s_push_restart(c, p, node, fl.k, rx->msg.error.message);
    } else if (rx->msg.type != ST_MSG_SHARD_ACK || !ack->ok || ack->layer != ref->layer || ack->expert != ref->expert ||
               ack->offset != fl.offset) {
        s_push_restart(c, p, node, fl.k, "chunk refused");
    } else {
        p->bytes_done += fl.len;
        if (fl.offset + fl.len == st_wire_expert_bytes(p->shape, ref->layer)) {
            if (!ack->complete)
                s_push_restart(c, p, node, fl.k, "expert not verified after its last chunk");
            else
                pn->done++, p->experts_done++;
        }
    }
    return 0;
}

static void s_progress(const push_t *p, uint32_t total_experts, uint64_t total_bytes, double t0, bool final) {
    double s = (st_now_ms() - t0) / 1e3;
    fprintf(stderr, "\rpushing shards: %u/%u experts, %.1f/%.1f MiB, %.1f MiB/s%s", p->experts_done, total_experts,
            (double)p->bytes_done / (1 << 20), (double)total_bytes / (1 << 20),
            s > 0 ? (double)p->bytes_done / (1 << 20) / s : 0.0, final ? "\n" : "   ");
    fflush(stderr);
}

int64_t st_cluster_push(st_cluster_t *c, const st_cluster_assign_t *a, st_shard_read_fn read, void *arg,
                        int ack_timeout_ms, bool quiet) {
    if (!c->has_shape || !read) return st_fail(ST_EINVAL, "push before HELLO, or no reader");
    c->read = read; /* kept for the pushes of a rejoin */
    c->read_arg = arg;
    c->push_timeout_ms = ack_timeout_ms;
    push_t p = {a, st_calloc((size_t)c->n, sizeof *p.pn), 0, 0, &c->shape};
    uint8_t *buf = st_malloc(ST_WIRE_MAX_CHUNK);
    if (!p.pn || !buf) {
        free(p.pn);
        free(buf);
        return st_fail(ST_ENOMEM, "no memory for the shard push");
    }
    uint32_t total_experts = 0;
    uint64_t total_bytes = 0;
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].up) {
            total_experts += a[i].n_missing;
            for (uint32_t k = 0; k < a[i].n_missing; k++) {
                const uint64_t eb = st_wire_expert_bytes(&c->shape, a[i].missing[k].layer);
                if (eb == 0) {
                    free(p.pn);
                    free(buf);
                    return st_fail(ST_EINVAL, "node %d misses expert %u/%u, outside the model", i,
                                   a[i].missing[k].layer, a[i].missing[k].expert);
                }
                total_bytes += eb;
            }
        }
    if (total_experts == 0) {
        free(p.pn);
        free(buf);
        return 0;
    }
    const bool tty = isatty(2);
    const double t0 = st_now_ms();
    double last_print = 0;
    for (int i = 0; i < c->n; i++) p.pn[i].last_progress = t0;
    int rc = 0;
    for (;;) {
        bool busy = false;
        for (int i = 0; i < c->n; i++) { /* fill each node's window */
            push_node_t *pn = &p.pn[i];
            while (c->nodes[i].up && pn->n_fl < PUSH_WINDOW && pn->k < a[i].n_missing) {
                const st_wire_ref_t *ref = &a[i].missing[pn->k];
                const uint64_t EB = st_wire_expert_bytes(&c->shape, ref->layer);
                uint64_t len = EB - pn->offset < ST_WIRE_MAX_CHUNK ? EB - pn->offset : ST_WIRE_MAX_CHUNK;
                if (read(arg, ref->layer, ref->expert, pn->offset, buf, (size_t)len) < 0) {
                    rc = st_fail(ST_EIO, "cannot read expert %u/%u", ref->layer, ref->expert);
                    goto out;
                }
                st_wire_msg_t m = {.type = ST_MSG_SHARD_PUT};
                m.shard_put = (st_wire_shard_put_t){ref->layer, ref->expert, pn->offset, EB, {0}};
                st_wire_hash(buf, (size_t)len, m.shard_put.chunk_hash);
                if (st_cluster_send(c, i, &m, buf, (size_t)len, true) < 0) {
                    st_cluster_set_down(c, i, "shard chunk could not be sent");
                    break;
                }
                if (pn->n_fl == 0) pn->last_progress = st_now_ms();
                pn->fl[pn->n_fl++] = (inflight_t){m.request_id, pn->k, pn->offset, (uint32_t)len};
                pn->offset += len;
                if (pn->offset == EB) pn->k++, pn->offset = 0;
            }
            if (!c->nodes[i].up) continue;
            if (pn->n_fl > 0) {
                busy = true;
                if (st_now_ms() - pn->last_progress > ack_timeout_ms) {
                    char why[128];
                    snprintf(why, sizeof why, "no shard acknowledgement within %d ms", ack_timeout_ms);
                    st_cluster_set_down(c, i, why);
                }
            }
        }
        if (!busy) break;
        int r = s_poll(c, 100, s_on_shard_ack, &p);
        if (r < 0) {
            rc = r;
            goto out;
        }
        double now = st_now_ms();
        if (!quiet && tty && now - last_print > 200) {
            s_progress(&p, total_experts, total_bytes, t0, false);
            last_print = now;
        }
    }
out:
    if (!quiet) s_progress(&p, total_experts, total_bytes, t0, true);
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].up && p.pn[i].done < a[i].n_missing)
            st_cluster_set_down(c, i, "did not receive all its experts");
    int64_t done = (int64_t)p.bytes_done;
    free(p.pn);
    free(buf);
    return rc < 0 ? rc : done;
}
