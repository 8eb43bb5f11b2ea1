/* wire: the coordinator <-> node protocol as plain C structs.
 *
 * A message on a ZeroMQ socket is, in order: [the peer identity, added and
 * removed by ROUTER sockets], one Envelope frame (protobuf, proto/st.proto),
 * and at most one raw frame of little-endian bytes (activations, expert
 * outputs, shard bytes). There is no empty delimiter frame: the coordinator
 * uses a DEALER, the node a ROUTER.
 *
 * This module is the only one that sees the generated protobuf-c code. It
 * converts an Envelope to st_wire_msg_t and checks it in two steps:
 *   st_wire_decode()  structure: version, type/body agreement, hash and string
 *                     lengths, list counts against ST_WIRE_MAX_*; nothing is
 *                     allocated from a length before that length is checked.
 *   st_wire_check()   meaning, against the model's shape: layer and expert ids,
 *                     token counts, activation type, exact raw frame sizes.
 * st_wire_recv() does both socket-side steps (all parts are always consumed,
 * so a bad message never desynchronises the stream) and st_wire_send() builds
 * and sends one message.
 *
 * Conventions the two ends share (see also the comments in st.proto):
 *  - Every reply carries the request_id of its request. EXPERT_PREFETCH is
 *    one-way: it gets no reply unless it is malformed (then an ERROR).
 *  - Errors: ERROR with code = a negative ST_E* value and a short message.
 *  - Expert types are per layer (llama-quantize's mixes vary ffn_down's type
 *    by layer). An expert's bytes are gate | up | down, each matrix exactly as
 *    in the GGUF (st_wire_matrix_bytes of its layer); its hash is BLAKE2b-256
 *    of those bytes.
 *  - SHARD_PUT chunks of one expert come in order (offset = bytes sent so
 *    far; offset 0 restarts that expert), each at most ST_WIRE_MAX_CHUNK bytes.
 *  - EXPERT_COMPUTE: frame = n_tokens rows of st_row_size(act_type, n_embd)
 *    bytes, act_type = vec_dot type of the layer's gate type (Q8_0 for Q4_0
 *    weights, Q8_K for K-quants: st_wire_act_type);
 *    n_tokens <= st_wire_max_tokens(shape). EXPERT_RESULT: frame = n_pairs x
 *    n_embd float32 LE, unweighted expert outputs in request order. A node
 *    computes all pairs of one expert in one kernel call, in request order;
 *    so list pairs token-major (t*k + j, as st-run routes them) for the same
 *    tokens st-run computes in one step, and the outputs are bit-identical.
 *  - Compact results: an EXPERT_COMPUTE with a PER_TOKEN result format also
 *    carries each pair's routing weight; the EXPERT_RESULT frame is then
 *    n_tokens rows (n_rows) of the node's partial sums, row t = sum over the
 *    request's pairs of token t, in request order, of weight x output, in
 *    float32 or in f16 scaled per row: a float32 power of two s, then the
 *    n_embd halves h of value / s (s puts the row's largest value just below
 *    2^15, so no value overflows f16 and small rows keep its 11 bits; bf16,
 *    3 bits fewer, moved the logits 3.5x as much).
 *    st_wire_result_row_bytes gives a row's size.
 */
#ifndef ST_WIRE_H
#define ST_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

/* 2: expert types per layer; 3: the HEAD_* messages (an output head sharded by vocabulary) and
 * compact EXPERT_RESULTs (result_format): a version-2 node would answer a compact request with
 * one row per pair, so peers of another version are refused at HELLO, both versions named; a
 * node holds several head slices (slots: its own and replicas), named by their first row */
#define ST_WIRE_VERSION 3
#define ST_WIRE_HASH_BYTES 32           /* BLAKE2b-256 */
#define ST_WIRE_MAX_ENVELOPE (1u << 20) /* bytes of one Envelope frame */
#define ST_WIRE_MAX_FRAME (4u << 20)    /* bytes of one raw frame a node accepts */
#define ST_WIRE_MAX_CHUNK (1u << 20)    /* bytes of one SHARD_PUT chunk */
#define ST_WIRE_MAX_TOKENS 512          /* tokens of one EXPERT_COMPUTE */
#define ST_WIRE_MAX_LAYERS 512
#define ST_WIRE_MAX_EXPERTS 1024     /* n_expert */
#define ST_WIRE_MAX_EXPERT_USED 64   /* n_expert_used */
#define ST_WIRE_MAX_EMBD 65536       /* n_embd, n_ff_exp */
#define ST_WIRE_MAX_REFS 65536       /* entries of one expert list */
#define ST_WIRE_MAX_ID 64            /* bytes of a node or coordinator id */
#define ST_WIRE_MAX_ERRMSG 256       /* bytes of an error message */
#define ST_WIRE_MAX_SOFTWARE 96      /* bytes of a program's name and version */
#define ST_WIRE_MAX_VOCAB (1u << 22) /* n_vocab of a sharded output head */
#define ST_WIRE_MAX_HEAD_SEQ 256     /* sequences of one HEAD_COMPUTE */
#define ST_WIRE_MAX_HEAD_CAND 8192   /* candidates per sequence of one HEAD_COMPUTE */
#define ST_WIRE_MAX_HEAD_SLOTS 16    /* head slices one node holds (its own and replicas) */
/* A HEAD_COMPUTE's penalties lie in the ranges a coordinator takes (--repeat-penalty 0.001..100,
 * --presence-penalty and --frequency-penalty -2..2, in cli/cli.c and the API's fields): beyond
 * them a node's penalised logits could overflow to infinities its coordinator then refuses. */
#define ST_WIRE_MIN_REPEAT_PENALTY 1e-3f
#define ST_WIRE_MAX_REPEAT_PENALTY 100.0f
#define ST_WIRE_MAX_PENALTY 2.0f /* |presence|, |frequency| */

typedef enum {
    ST_MSG_NONE = 0,
    ST_MSG_HELLO = 1,           /* coordinator -> node: model shape + hash */
    ST_MSG_INVENTORY = 2,       /* node -> coordinator: answers HELLO */
    ST_MSG_ASSIGN = 3,          /* coordinator -> node: its experts and pinned ones */
    ST_MSG_ASSIGN_ACK = 4,      /* node -> coordinator: experts still missing */
    ST_MSG_SHARD_PUT = 5,       /* coordinator -> node: one chunk (frame: bytes) */
    ST_MSG_SHARD_ACK = 6,       /* node -> coordinator */
    ST_MSG_EXPERT_PREFETCH = 7, /* coordinator -> node, one-way */
    ST_MSG_EXPERT_COMPUTE = 8,  /* coordinator -> node (frame: activations) */
    ST_MSG_EXPERT_RESULT = 9,   /* node -> coordinator (frame: f32 outputs) */
    ST_MSG_HEARTBEAT = 10,      /* both ways; a node answers with its own */
    ST_MSG_ERROR = 11,          /* node -> coordinator: a request was refused */
    ST_MSG_HEAD_ASSIGN = 12,    /* coordinator -> node: its rows [lo, hi) of the output head */
    ST_MSG_HEAD_PUT = 13,       /* coordinator -> node: one chunk of them (frame: bytes) */
    ST_MSG_HEAD_ACK = 14,       /* node -> coordinator: answers HEAD_ASSIGN and HEAD_PUT */
    ST_MSG_HEAD_COMPUTE = 15,   /* coordinator -> node (frame: f32 hidden states) */
    ST_MSG_HEAD_RESULT = 16,    /* node -> coordinator (frame: candidates or logits) */
    ST_MSG_COUNT
} st_msg_type_t;

/* Shapes of a model's experts; every request is checked against them. */
typedef struct {
    uint8_t model_hash[ST_WIRE_HASH_BYTES];
    uint32_t n_layer, n_embd, n_ff_exp, n_expert, n_expert_used;
    bool down_transposed; /* down stored as n_ff_exp rows of n_embd */
    /* ggml type ids of layer l's expert matrices, l < n_layer (entries past
     * n_layer mean nothing; st_wire_shape_eq ignores them) */
    uint8_t gate_type[ST_WIRE_MAX_LAYERS], up_type[ST_WIRE_MAX_LAYERS], down_type[ST_WIRE_MAX_LAYERS];
} st_wire_shape_t;

typedef struct {
    uint32_t layer, expert;
    bool has_hash; /* hash is optional in lists where it means nothing */
    uint8_t hash[ST_WIRE_HASH_BYTES];
} st_wire_ref_t;

typedef struct {
    char coordinator_id[ST_WIRE_MAX_ID + 1];
    /* the sender's program and version ("st-coordinator 0.4.0 (git abc1234)"; "" from a program
     * before 0.4.0); when sending, "" means this program (st_wire_software) */
    char software[ST_WIRE_MAX_SOFTWARE + 1];
    st_wire_shape_t shape;
} st_wire_hello_t;

typedef struct {
    char node_id[ST_WIRE_MAX_ID + 1];
    char software[ST_WIRE_MAX_SOFTWARE + 1]; /* as in HELLO: "st-node 0.4.0 (git abc1234)" */
    uint64_t mem_budget, store_free;
    uint64_t room;        /* of mem_budget, for the HELLO model's experts and head slices (0: not told) */
    uint64_t expert_cost; /* bytes of room one cached expert of that model takes (0: not told) */
    uint32_t threads;
    uint32_t n_held;
    st_wire_ref_t *held; /* experts of the HELLO's model in the store, verified, with hashes */
} st_wire_inventory_t;

typedef struct {
    st_wire_shape_t shape;
    uint32_t n_experts, n_pinned;
    st_wire_ref_t *experts; /* each with the hash it must have */
    st_wire_ref_t *pinned;  /* subset of experts to keep in RAM (hash not needed) */
} st_wire_assign_t;

typedef struct {
    uint32_t n_missing;
    st_wire_ref_t *missing;
} st_wire_assign_ack_t;

typedef struct {
    uint32_t layer, expert;
    uint64_t offset, total; /* total = st_wire_expert_bytes(shape, layer) */
    uint8_t chunk_hash[ST_WIRE_HASH_BYTES];
} st_wire_shard_put_t;

typedef struct {
    uint32_t layer, expert;
    uint64_t offset;
    bool ok;       /* chunk accepted */
    bool complete; /* the whole expert is stored and verified */
} st_wire_shard_ack_t;

typedef struct {
    uint32_t layer;
    uint32_t n_experts;
    uint32_t *experts;
} st_wire_prefetch_t;

/* What an EXPERT_RESULT's frame holds (st.proto's ResultFormat). */
typedef enum {
    ST_RESULT_PER_PAIR_F32 = 0,  /* n_pairs x n_embd float32, unweighted (exact: st-run's bits) */
    ST_RESULT_PER_TOKEN_F32 = 1, /* n_rows x n_embd float32 weighted partial sums */
    ST_RESULT_PER_TOKEN_F16 = 2, /* the same in IEEE half, with a float32 scale per row */
    ST_RESULT_FORMAT_COUNT
} st_wire_result_format_t;

typedef struct {
    uint32_t layer, n_tokens, act_type;
    uint32_t n_pairs;
    int32_t *pair_token;    /* n_pairs, each < n_tokens */
    int32_t *pair_expert;   /* n_pairs, each < n_expert */
    uint32_t result_format; /* st_wire_result_format_t */
    float *pair_weight;     /* n_pairs finite weights with a PER_TOKEN format, else NULL */
} st_wire_compute_t;

/* Of the request's distinct experts: hits were in RAM before the request or
 * its prefetch hint named them, prefetched were read from the store on the
 * hint before the request came, misses were read while it waited. */
typedef struct {
    uint32_t n_pairs;
    uint64_t compute_us;
    uint32_t cache_hits, cache_misses, cache_prefetched;
    uint32_t result_format; /* st_wire_result_format_t of the frame */
    uint32_t n_rows;        /* PER_TOKEN formats: rows of the frame (the request's n_tokens); else 0 */
} st_wire_result_t;

/* The board's state a node reports (common/board.h reads it). */
typedef struct {
    uint64_t rss, rss_file; /* VmRSS and its RssFile part */
    uint64_t cache_bytes;   /* experts in the node's RAM cache */
    bool has_cgroup;        /* alone in its memory cgroup: cgroup_* are its own */
    uint64_t cgroup_mem, cgroup_file, cgroup_max;
    bool has_temp;
    int32_t temp_mc; /* CPU temperature, millidegrees C */
    bool has_throttled;
    uint32_t throttled; /* Raspberry Pi get_throttled bits */
} st_wire_board_t;

typedef struct {
    uint64_t seq;
    st_wire_board_t board; /* a node's answer; zero in a coordinator's request */
} st_wire_heartbeat_t;

typedef struct {
    int32_t code; /* negative ST_E* */
    char message[ST_WIRE_MAX_ERRMSG + 1];
} st_wire_error_t;

/* The output head sharded by vocabulary: a slice is rows [lo, hi) of the
 * n_vocab x n_embd head (the model's output.weight, in the file's type), the
 * bytes of those rows as in the file, hashed with BLAKE2b-256. A node holds
 * n_slots slices (its own and replicas of others'), this one in slot slot;
 * HEAD_PUT and HEAD_COMPUTE name the slice by its lo. */
typedef struct {
    uint32_t n_vocab, type, lo, hi;
    uint8_t hash[ST_WIRE_HASH_BYTES];
    uint32_t slot, n_slots; /* slot < n_slots <= ST_WIRE_MAX_HEAD_SLOTS */
} st_wire_head_assign_t;

typedef struct {
    uint64_t offset, total; /* total = st_wire_head_bytes() of the assigned slice */
    uint8_t chunk_hash[ST_WIRE_HASH_BYTES];
    uint32_t lo; /* the slice's first row */
} st_wire_head_put_t;

typedef struct {
    uint64_t offset;
    bool ok;       /* HEAD_PUT: chunk accepted */
    bool complete; /* the whole slice is held and verified */
} st_wire_head_ack_t;

/* frame: n_seq x n_embd float32 LE, the hidden states after the output norm.
 * full: the reply carries the slice's raw logits. Else, for each sequence s,
 * the node applies the penalties (entries pen_first[s] .. + pen_n[s] of
 * pen_id/pen_count; st_sampler_penalize_logit) and answers with the n_cand best
 * (id, logit) pairs, the slice's maximum and the sums of exp((l - max) / t) for
 * t = 1 and t = temp[s] (t <= 0: the sum at t = 1 again). Lists are n_seq long
 * (empty when full); pen_id/pen_count are n_pen long. */
typedef struct {
    uint32_t n_seq, n_cand;
    uint32_t lo; /* the held slice to compute (its first row) */
    bool full;
    float *temp, *repeat_penalty, *presence_penalty, *frequency_penalty;
    uint32_t *pen_n;
    uint32_t n_pen;
    uint32_t *pen_id, *pen_count;
} st_wire_head_compute_t;

/* frame: full: n_seq x (hi - lo) float32; else n_seq x n_cand pairs of
 * (uint32 id, float32 logit), best first, ties by lower id. Lists: n_seq. */
typedef struct {
    uint32_t n_seq, n_cand;
    bool full;
    float *max;
    double *sum, *sum_temp;
    uint64_t compute_us;
} st_wire_head_result_t;

/* One message. To send, fill type, request_id and the body of that type; list
 * pointers are the caller's. A decoded message owns its lists until
 * st_wire_msg_clear(). */
typedef struct {
    st_msg_type_t type;
    uint64_t request_id;
    /* decoded: the Envelope's protocol version. Other than ST_WIRE_VERSION (and not 0) only when
     * st_wire_decode refused it for that: the why then names both sides' versions. */
    uint32_t version;
    union {
        st_wire_hello_t hello;
        st_wire_inventory_t inventory;
        st_wire_assign_t assign;
        st_wire_assign_ack_t assign_ack;
        st_wire_shard_put_t shard_put;
        st_wire_shard_ack_t shard_ack;
        st_wire_prefetch_t prefetch;
        st_wire_compute_t compute;
        st_wire_result_t result;
        st_wire_heartbeat_t heartbeat;
        st_wire_error_t error;
        st_wire_head_assign_t head_assign;
        st_wire_head_put_t head_put;
        st_wire_head_ack_t head_ack;
        st_wire_head_compute_t head_compute;
        st_wire_head_result_t head_result;
    };
    void *owned_; /* lists allocated by st_wire_decode (one block) */
} st_wire_msg_t;

/* This program as its messages name it: "st-node 0.4.0 (git abc1234)". */
const char *st_wire_software(char *buf, size_t cap);

/* Whether a peer's software string ("st-node 0.4.1 (git ...)") is of this program's release
 * (0.4.0): false for another release, and for "" (a program before 0.4.0). */
bool st_wire_same_release(const char *software);

/* "HELLO", ... ("?" for an unknown type). */
const char *st_wire_type_name(int type);

/* Bytes of the encoded Envelope (0 when m is not encodable: unknown type). */
size_t st_wire_encoded_size(const st_wire_msg_t *m);
/* Encodes m into buf (cap bytes); *len receives the size. 0, ST_EINVAL for an
 * unknown type or a list above the limits, ST_ERANGE when cap is too small. */
int st_wire_encode(const st_wire_msg_t *m, uint8_t *buf, size_t cap, size_t *len);

/* Decodes and structurally checks one Envelope. 0, or ST_EPROTO with a reason
 * in why (may be NULL). On failure m->type and m->request_id are still set
 * when they could be read (so an ERROR reply can name the request), and
 * nothing needs clearing; on success call st_wire_msg_clear(m). */
int st_wire_decode(const uint8_t *buf, size_t len, st_wire_msg_t *m, char *why, size_t why_cap);
/* Frees what st_wire_decode allocated; zeroes m. Safe on a zeroed msg. */
void st_wire_msg_clear(st_wire_msg_t *m);

/* Checks a shape on its own: sizes in range, each layer's types supported,
 * with block-aligned widths and gate and up taking the same activation
 * format. 0 or ST_EPROTO with why. */
int st_wire_check_shape(const st_wire_shape_t *s, char *why, size_t why_cap);
/* Checks a decoded message against a (checked) shape and the size of its raw
 * frame (0 when it has none): ids, counts, types, exact frame sizes. For
 * HELLO/ASSIGN the message's own shape is checked and must equal *s when s is
 * not NULL; other types need s (ST_EPROTO without it). */
int st_wire_check(const st_wire_msg_t *m, const st_wire_shape_t *s, size_t frame_len, char *why, size_t why_cap);

/* The head messages need the head's shape and the slice, which st_wire_check
 * does not know (it refuses the requests, and passes a HEAD_RESULT whose
 * frame fits ST_WIRE_MAX_FRAME: st_wire_check_head_result checks it): checks a HEAD_ASSIGN's own fields against n_embd;
 * a HEAD_PUT against the assigned slice a; a HEAD_COMPUTE against a (ids below n_vocab, finite parameters, the frame's
 * size). 0 or ST_EPROTO with why. */
int st_wire_check_head(const st_wire_msg_t *m, uint32_t n_embd, const st_wire_head_assign_t *a, size_t frame_len,
                       char *why, size_t why_cap);
/* Checks a HEAD_RESULT against the request it answers (req) and the slice a:
 * counts, sizes, ids inside [lo, hi) in order (logit descending, ties by id),
 * finite values, sums in [1, hi - lo], maxima equal to the best candidate.
 * frame is read. 0 or ST_EPROTO with why. */
int st_wire_check_head_result(const st_wire_msg_t *m, const st_wire_head_compute_t *req, const st_wire_head_assign_t *a,
                              const uint8_t *frame, size_t frame_len, char *why, size_t why_cap);
/* Bytes of rows [lo, hi) of a head of type with n_embd columns (0 when the
 * type is unknown or n_embd not a whole number of its blocks). */
uint64_t st_wire_head_bytes(uint32_t type, uint32_t n_embd, uint32_t lo, uint32_t hi);

/* Equal model hash, sizes and per-layer types. */
bool st_wire_shape_eq(const st_wire_shape_t *a, const st_wire_shape_t *b);
/* Sets every layer's (n_layer) gate, up and down type ids (ids above 255 are
 * stored as 255, which no type has). */
void st_wire_shape_set_types(st_wire_shape_t *s, uint32_t gate, uint32_t up, uint32_t down);

/* Bytes of the gate, up and down matrices of one expert of layer (sizes[0..2]);
 * returns their sum (0, sizes zeroed, if a type is unknown or layer >= n_layer). */
uint64_t st_wire_matrix_bytes(const st_wire_shape_t *s, uint32_t layer, uint64_t sizes[3]);
/* The same sum alone: the bytes of one expert of layer (its shard). */
uint64_t st_wire_expert_bytes(const st_wire_shape_t *s, uint32_t layer);
/* Largest st_wire_expert_bytes over the layers. */
uint64_t st_wire_max_expert_bytes(const st_wire_shape_t *s);
/* The activation type of layer's EXPERT_COMPUTE (vec_dot type of its gate;
 * -1 for an unknown type or layer). */
int st_wire_act_type(const st_wire_shape_t *s, uint32_t layer);
/* Bytes of one activation row of layer on the wire (0 when unknown). */
size_t st_wire_act_row_bytes(const st_wire_shape_t *s, uint32_t layer);
/* Largest activation row over the layers. */
size_t st_wire_max_act_row_bytes(const st_wire_shape_t *s);
/* Largest n_tokens of an EXPERT_COMPUTE whose frame fits ST_WIRE_MAX_FRAME
 * in every layer. */
uint32_t st_wire_max_tokens(const st_wire_shape_t *s);
/* Largest raw frame a coordinator may receive for this shape (an
 * EXPERT_RESULT of st_wire_max_tokens tokens, all experts used). */
uint64_t st_wire_max_result_frame(const st_wire_shape_t *s);

/* Bytes of one row (one pair's output, or one token's sum) of a result format's frame
 * (0 for an unknown format). */
size_t st_wire_result_row_bytes(uint32_t format, uint32_t n_embd);
/* "per-pair-f32", "per-token-f16", ... ("?" for an unknown format). */
const char *st_wire_result_format_name(uint32_t format);

/* BLAKE2b-256 of len bytes (libsodium). */
void st_wire_hash(const void *data, size_t len, uint8_t out[ST_WIRE_HASH_BYTES]);

/* Socket limits: ZMQ_MAXMSGSIZE = max_frame (every frame of every message
 * must fit, so pass at least ST_WIRE_MAX_ENVELOPE), receive/send HWM in
 * messages, linger 0. Call before bind/connect. 0 or ST_EIO. */
int st_wire_socket_limits(void *sock, int64_t max_frame, int hwm);

/* A received message. The raw frame (if any) stays in frame until cleared. */
typedef struct {
    uint8_t peer[256]; /* ROUTER: identity of the sender */
    size_t peer_len;
    st_wire_msg_t msg;
    zmq_msg_t frame;
    bool has_frame;
} st_wire_rx_t;

/* Raw frame of a received message (NULL, 0 when none). Valid until st_wire_rx_clear. */
static inline const uint8_t *st_wire_rx_frame(st_wire_rx_t *rx, size_t *len) {
    *len = rx->has_frame ? zmq_msg_size(&rx->frame) : 0;
    return rx->has_frame ? (const uint8_t *)zmq_msg_data(&rx->frame) : NULL;
}

/* Receives one whole message (router: the socket is a ROUTER, first part is
 * the peer identity). flags: 0 or ZMQ_DONTWAIT. Returns 0 (call
 * st_wire_rx_clear after use); ST_EPROTO for a malformed message, which has
 * been consumed entirely (rx->peer and, where readable, rx->msg.type and
 * request_id are set so the caller can answer with an ERROR); ST_ETIMEOUT when
 * nothing arrived (EAGAIN: ZMQ_DONTWAIT or ZMQ_RCVTIMEO); ST_EIO on other
 * socket errors, incl. EINTR. Structural checks only: st_wire_check() next. */
int st_wire_recv(void *sock, bool router, st_wire_rx_t *rx, char *why, size_t why_cap);
void st_wire_rx_clear(st_wire_rx_t *rx);

/* Sends [peer], Envelope, [frame]. peer: NULL for a DEALER. frame: copied by
 * zmq (NULL/0: no frame). Returns 0, ST_EINVAL (unencodable), ST_ETIMEOUT
 * (ZMQ_SNDTIMEO / HWM with ZMQ_DONTWAIT in flags), ST_EIO. */
int st_wire_send(void *sock, const void *peer, size_t peer_len, const st_wire_msg_t *m, const void *frame,
                 size_t frame_len, int flags);
/* The same without copying the frame: takes ownership of *frame (a
 * zmq_msg_t, e.g. from zmq_msg_init_size) in every case. */
int st_wire_send_zmsg(void *sock, const void *peer, size_t peer_len, const st_wire_msg_t *m, zmq_msg_t *frame,
                      int flags);

/* Convenience: an ERROR reply to request_id with code and a printf message
 * (waits at most the socket's ZMQ_SNDTIMEO when the peer's queue is full). */
int st_wire_send_error(void *sock, const void *peer, size_t peer_len, uint64_t request_id, int code, const char *fmt,
                       ...) __attribute__((format(printf, 6, 7)));

#endif
