/* cluster: the coordinator's connections to its nodes.
 *
 * One DEALER socket per node, all owned by the calling thread and polled
 * together, so requests to different nodes are in flight at once and every
 * wait has a deadline. Every request gets a fresh request id; a reply that
 * does not match a request still waited for (e.g. one that arrives after its
 * deadline) is counted as stale and dropped. Bytes are counted per node as
 * they pass: Envelope + raw frame (ZeroMQ's own framing, a few bytes per
 * part, is not included).
 *
 * The setup exchanges live here too, both ends' expectations in one place:
 * HELLO -> INVENTORY, ASSIGN -> ASSIGN_ACK, and the shard push (SHARD_PUT
 * chunks, a window of them in flight per node, each answered by SHARD_ACK).
 */
#ifndef ST_CLUSTER_H
#define ST_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "clock.h"
#include "wire.h"

#define ST_Z85_KEY_LEN 40

typedef struct {
    char url[256];
    char server_key[ST_Z85_KEY_LEN + 1]; /* the node's CURVE public key (Z85), "" when insecure */
} st_node_addr_t;

typedef struct {
    bool insecure;                       /* plain TCP: no keys at all */
    char public_key[ST_Z85_KEY_LEN + 1]; /* the coordinator's CURVE key pair (when !insecure) */
    char secret_key[ST_Z85_KEY_LEN + 1];
    int timeout_ms;    /* default deadline of a reply (HELLO, ASSIGN) */
    int64_t max_frame; /* largest frame accepted from a node (ZMQ_MAXMSGSIZE) */
    const char *id;    /* coordinator id sent in HELLO */
} st_cluster_opts_t;

typedef struct {
    uint64_t requests; /* messages that expect a reply (round trips) */
    uint64_t oneway;   /* messages that do not (prefetch) */
    uint64_t replies;  /* matching replies received */
    uint64_t bytes_out, bytes_in;
    uint64_t timeouts; /* requests abandoned at their deadline */
    uint64_t errors;   /* ERROR replies */
    uint64_t stale;    /* replies to no pending request, dropped */
} st_node_stats_t;

typedef struct st_cluster st_cluster_t;

/* Opens one DEALER per node and connects (ZeroMQ connects in the background:
 * nothing waits here). n_nodes may be 0 (--pair: boards are added as they
 * pair, st_cluster_add). NULL (logged) on a bad address or key. */
st_cluster_t *st_cluster_new(const st_node_addr_t *nodes, int n_nodes, const st_cluster_opts_t *o);
void st_cluster_destroy(st_cluster_t **c);

int st_cluster_n_nodes(const st_cluster_t *c);
const char *st_cluster_url(const st_cluster_t *c, int node);
bool st_cluster_is_up(const st_cluster_t *c, int node);
/* Whether to log one more refusal or bad answer of node (a line per message
 * would let a broken node flood the log): its first 3, then only counted,
 * with one line a minute "N more refused messages from URL" (log_limit.h). */
bool st_cluster_log_ok(st_cluster_t *c, int node);
int st_cluster_n_up(const st_cluster_t *c);
/* Marks a node down (logs a warning with why, once); nothing but its rejoin
 * exchanges (see st_cluster_maintain) is sent to it afterwards. */
void st_cluster_set_down(st_cluster_t *c, int node, const char *why);
/* Counters since st_cluster_new (borrowed, live). */
const st_node_stats_t *st_cluster_stats(const st_cluster_t *c, int node);

/* Sends m to node: a request (expects a reply) or one-way. A fresh request id
 * is written to m->request_id. frame: raw bytes (copied) or NULL. 0, or a
 * negative ST_E* code (ST_ETIMEOUT when the node's queue is full). */
int st_cluster_send(st_cluster_t *c, int node, st_wire_msg_t *m, const void *frame, size_t frame_len, bool request);
/* The same taking ownership of *frame (no copy; closed in every case). */
int st_cluster_send_zmsg(st_cluster_t *c, int node, st_wire_msg_t *m, zmq_msg_t *frame, bool request);

/* Called for every reply that matches a waited-for request; rx (message and
 * frame) is valid during the call only. Return 0, or a negative code to stop
 * waiting (the wait returns it). */
typedef int (*st_cluster_reply_fn)(void *arg, int node, st_wire_rx_t *rx);

/* Waits for the replies to rids[node] (0: nothing awaited from that node)
 * until each arrived or deadline_ms (st_now_ms, clock.h)
 * passed; an ERROR reply also answers its request. rids[node] is zeroed as
 * its reply arrives. Returns 0 when all arrived, ST_ETIMEOUT when some did not
 * (their rids stay set; counted as timeouts), or fn's negative code. */
int st_cluster_gather(st_cluster_t *c, uint64_t *rids, double deadline_ms, st_cluster_reply_fn fn, void *arg);
/* The same, and meanwhile the replies to other[node] (requests of another
 * round still in flight, not waited for) go to other_fn and zero other[node]
 * instead of being dropped as stale. */
int st_cluster_gather_also(st_cluster_t *c, uint64_t *rids, double deadline_ms, st_cluster_reply_fn fn, void *arg,
                           uint64_t *other, st_cluster_reply_fn other_fn, void *other_arg);
/* The same with up to depth requests in flight per node: rids[node * depth
 * + d], 0 where nothing is awaited (the callback tells them apart by
 * rx->msg.request_id). */
int st_cluster_gather_many(st_cluster_t *c, uint64_t *rids, int depth, double deadline_ms, st_cluster_reply_fn fn,
                           void *arg);

/* HELLO to every node, then waits up to opts.timeout_ms (at least 5 s: a
 * first contact includes connecting) for each INVENTORY.
 * A node that does not answer (or answers wrongly) is marked down, naming it.
 * Returns the number of nodes up (0 is for the caller to judge). */
int st_cluster_hello(st_cluster_t *c, const st_wire_shape_t *shape);
/* The node's INVENTORY (borrowed until the next st_cluster_add or
 * st_cluster_destroy; NULL when it did not answer). */
const st_wire_inventory_t *st_cluster_inventory(const st_cluster_t *c, int node);
/* The experts last assigned to the node (st_cluster_assign): *n of them,
 * borrowed until the next st_cluster_assign or st_cluster_add. */
const st_wire_ref_t *st_cluster_share(const st_cluster_t *c, int node, uint32_t *n);

/* Adds nodes to a running cluster (after st_cluster_hello): they take the
 * next indices (one with a bad address or key is left out, logged), down
 * until they answer the probe that goes out at once (see st_cluster_maintain):
 * nothing waits here. Returns how many were added, or a negative ST_E* code. */
int st_cluster_add(st_cluster_t *c, const st_node_addr_t *nodes, int n);

/* Gives node a new CURVE public key (Z85: it paired again, e.g. on a wiped
 * store): it is reconnected with that key and is down until it answers its
 * probe, then rejoins (its share is pushed where its store lacks it). 0 when
 * the key is the one it has (nothing done), 1 when changed, or a negative
 * ST_E* code. */
int st_cluster_rekey(st_cluster_t *c, int node, const char *server_key);

/* Per node: the experts to assign (each with its hash) and the pinned ones. */
typedef struct {
    uint32_t n_experts, n_pinned;
    st_wire_ref_t *experts, *pinned;
    uint32_t n_missing;     /* filled by st_cluster_assign: what the node asks for */
    st_wire_ref_t *missing; /* malloc'd; free with st_cluster_assign_free */
    bool keep;              /* not sent this time: the node keeps its share (a drain tells it last) */
} st_cluster_assign_t;

/* ASSIGN to every node up (all at once) but those marked keep, waits for
 * each ASSIGN_ACK; the share of every node not marked keep, up or not, is
 * kept for its rejoin. A node that fails is marked down. Returns the number
 * of nodes that acknowledged. */
int st_cluster_assign(st_cluster_t *c, st_cluster_assign_t *a);
void st_cluster_assign_free(st_cluster_assign_t *a, int n_nodes);

/* Reads len bytes at offset of expert (layer, e)'s gate|up|down stream into dst. */
typedef int (*st_shard_read_fn)(void *arg, uint32_t layer, uint32_t expert, uint64_t offset, void *dst, size_t len);

/* Pushes every node's missing experts in chunks (window of chunks in flight
 * per node, all nodes at once), with a progress line on stderr unless quiet.
 * A chunk refused is resent (the expert restarts) up to 3 times. Each ack must
 * come within ack_timeout_ms of the previous progress of that node, else the
 * node is marked down. Returns the bytes pushed, or a negative ST_E* code
 * when nothing could be pushed at all (no memory, no reader). */
int64_t st_cluster_push(st_cluster_t *c, const st_cluster_assign_t *a, st_shard_read_fn read, void *arg,
                        int ack_timeout_ms, bool quiet);

/* Nodes that are down are probed (HELLO) 500 ms after they went down (or at
 * once when added), backing off to 8 s each time they go down again or a
 * probe fails; the probes go out and their answers come in during the
 * cluster's waits (st_cluster_gather, pushes, st_cluster_idle), so nothing
 * ever waits for a node that is down. A node that cannot be reached is sent
 * one HELLO, which ZeroMQ delivers when it connects; its deadline runs from
 * the handshake.
 *
 * Rejoin: a node that answers and had a share (st_cluster_assign) gets its
 * ASSIGN again; when its store holds every assigned expert with the right
 * hash, it is up again at once with no shard sent. Experts it lacks are
 * pushed by st_cluster_maintain (with st_cluster_push's reader), which the
 * caller runs between steps; it returns how many nodes came back that way,
 * or a negative ST_E* code.
 * Join: a node that answers with no share (it never answered before, or was
 * added) waits for the caller: st_cluster_n_joining counts it, and
 * st_cluster_admit marks it up, for the caller's next placement (ASSIGN and
 * push as at setup). */
int st_cluster_maintain(st_cluster_t *c);
/* Nodes that answered a probe with no share, waiting for st_cluster_admit;
 * *first_ms (may be NULL) gets when the first of them answered
 * (st_now_ms). */
int st_cluster_n_joining(const st_cluster_t *c, double *first_ms);
/* Marks the nodes counted by st_cluster_n_joining up (their INVENTORY is
 * kept: st_cluster_inventory); returns how many. */
int st_cluster_admit(st_cluster_t *c);
/* For a caller with no request in flight (a server between requests, a
 * coordinator waiting for its nodes): takes in what the nodes send for up to
 * wait_ms (connection losses, the probe exchanges, probes that are due),
 * then st_cluster_maintain. Returns as that. */
int st_cluster_idle(st_cluster_t *c, int wait_ms);
/* Takes a node out of the cluster for good (st-ctl remove): disconnected,
 * down, never probed again; its index stays (indices never move). */
void st_cluster_remove(st_cluster_t *c, int node);
bool st_cluster_is_removed(const st_cluster_t *c, int node);

/* Asks every node that is up and was not asked within every_ms how its
 * board is doing (a HEARTBEAT; the answer comes in during the cluster's
 * waits, outside the byte counters). Returns how many were asked. */
int st_cluster_ask_board(st_cluster_t *c, int every_ms);
/* The node's last board answer (borrowed, live), with its age in *age_ms
 * (may be NULL); NULL while it is down or has not answered since it came up:
 * a down node's figures are stale. */
const st_wire_board_t *st_cluster_board(const st_cluster_t *c, int node, double *age_ms);

/* Nodes that came back so far, and the shard bytes pushed to them (*bytes, may be NULL). */
uint64_t st_cluster_rejoins(const st_cluster_t *c, uint64_t *bytes);

#endif
