/* wire: Envelope <-> st_wire_msg_t, with every field checked (see wire.h).
 *
 * This is the one file that includes the generated protobuf-c header, so the
 * rest of the program only ever handles checked plain structs. Decoding is in
 * three guarded steps: the frame length is checked against
 * ST_WIRE_MAX_ENVELOPE before protobuf-c parses it (its allocations are then
 * bounded by that length), the parsed message is checked field by field
 * (version, type matching the body, hash lengths, string lengths, list
 * counts), and only then are our own lists allocated, as one block.
 * st_wire_check() adds what needs the model's shape.
 */
#include "wire.h"

#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "st.pb-c.h"
#include "st_kernels.h"
#include "st_log.h"
#include "version.h"

/* ---- small helpers ---------------------------------------------------- */

static int s_why(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int s_why(char *why, size_t cap, const char *fmt, ...) {
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return ST_EPROTO;
}

const char *st_wire_software(char *buf, size_t cap) {
    snprintf(buf, cap, "%s %s", program_invocation_short_name, st_version());
    return buf;
}

bool st_wire_same_release(const char *software) {
    const char *rel = strchr(software, ' '); /* "PROGRAM RELEASE[ (git REV)]" */
    size_t n = strlen(st_version_release());
    return rel && !strncmp(rel + 1, st_version_release(), n) && (rel[1 + n] == '\0' || rel[1 + n] == ' ');
}

const char *st_wire_type_name(int type) {
    static const char *names[ST_MSG_COUNT] = {
        "NONE",        "HELLO",           "INVENTORY",      "ASSIGN",        "ASSIGN_ACK", "SHARD_PUT",
        "SHARD_ACK",   "EXPERT_PREFETCH", "EXPERT_COMPUTE", "EXPERT_RESULT", "HEARTBEAT",  "ERROR",
        "HEAD_ASSIGN", "HEAD_PUT",        "HEAD_ACK",       "HEAD_COMPUTE",  "HEAD_RESULT"};
    return type >= 0 && type < ST_MSG_COUNT ? names[type] : "?";
}

/* body case of each message type */
static const St__Envelope__BodyCase s_case_of[ST_MSG_COUNT] = {
    [ST_MSG_NONE] = ST__ENVELOPE__BODY__NOT_SET,           [ST_MSG_HELLO] = ST__ENVELOPE__BODY_HELLO,
    [ST_MSG_INVENTORY] = ST__ENVELOPE__BODY_INVENTORY,     [ST_MSG_ASSIGN] = ST__ENVELOPE__BODY_ASSIGN,
    [ST_MSG_ASSIGN_ACK] = ST__ENVELOPE__BODY_ASSIGN_ACK,   [ST_MSG_SHARD_PUT] = ST__ENVELOPE__BODY_SHARD_PUT,
    [ST_MSG_SHARD_ACK] = ST__ENVELOPE__BODY_SHARD_ACK,     [ST_MSG_EXPERT_PREFETCH] = ST__ENVELOPE__BODY_PREFETCH,
    [ST_MSG_EXPERT_COMPUTE] = ST__ENVELOPE__BODY_COMPUTE,  [ST_MSG_EXPERT_RESULT] = ST__ENVELOPE__BODY_RESULT,
    [ST_MSG_HEARTBEAT] = ST__ENVELOPE__BODY_HEARTBEAT,     [ST_MSG_ERROR] = ST__ENVELOPE__BODY_ERROR,
    [ST_MSG_HEAD_ASSIGN] = ST__ENVELOPE__BODY_HEAD_ASSIGN, [ST_MSG_HEAD_PUT] = ST__ENVELOPE__BODY_HEAD_PUT,
    [ST_MSG_HEAD_ACK] = ST__ENVELOPE__BODY_HEAD_ACK,       [ST_MSG_HEAD_COMPUTE] = ST__ENVELOPE__BODY_HEAD_COMPUTE,
    [ST_MSG_HEAD_RESULT] = ST__ENVELOPE__BODY_HEAD_RESULT,
};

void st_wire_hash(const void *data, size_t len, uint8_t out[ST_WIRE_HASH_BYTES]) {
    crypto_generichash(out, ST_WIRE_HASH_BYTES, data, len, NULL, 0);
}

/* ---- encoding ---------------------------------------------------------- */

/* Everything a St__Envelope built from a msg points to. */
typedef struct {
    St__Envelope env;
    St__ModelShape shape;
    union {
        St__Hello hello;
        St__Inventory inventory;
        St__Assign assign;
        St__AssignAck assign_ack;
        St__ShardPut shard_put;
        St__ShardAck shard_ack;
        St__ExpertPrefetch prefetch;
        St__ExpertCompute compute;
        St__ExpertResult result;
        St__Heartbeat heartbeat;
        St__Error error;
        St__HeadAssign head_assign;
        St__HeadPut head_put;
        St__HeadAck head_ack;
        St__HeadCompute head_compute;
        St__HeadResult head_result;
    } b;
    char software[ST_WIRE_MAX_SOFTWARE + 1]; /* Envelope.software, when the message carries it */
    void *block;                             /* ExpertRef structs and pointer arrays */
    uint32_t types[3][ST_WIRE_MAX_LAYERS];   /* the shape's per-layer type ids, widened */
} pb_build_t;

/* A HEARTBEAT's board readings, both ways: plain numbers, nothing to check
 * (a figure is shown, never used to size or index anything). */
static void s_board_to_pb(const st_wire_board_t *b, St__Heartbeat *p) {
    p->mem_used = b->rss;
    p->rss_file = b->rss_file;
    p->cache_bytes = b->cache_bytes;
    p->has_cgroup = b->has_cgroup;
    p->cgroup_mem = b->cgroup_mem;
    p->cgroup_file = b->cgroup_file;
    p->cgroup_max = b->cgroup_max;
    p->has_temp = b->has_temp;
    p->temp_mc = b->temp_mc;
    p->has_throttled = b->has_throttled;
    p->throttled = b->throttled;
}

static void s_board_from_pb(const St__Heartbeat *p, st_wire_board_t *b) {
    *b = (st_wire_board_t){.rss = p->mem_used,
                           .rss_file = p->rss_file,
                           .cache_bytes = p->cache_bytes,
                           .has_cgroup = p->has_cgroup,
                           .cgroup_mem = p->cgroup_mem,
                           .cgroup_file = p->cgroup_file,
                           .cgroup_max = p->cgroup_max,
                           .has_temp = p->has_temp,
                           .temp_mc = p->temp_mc,
                           .has_throttled = p->has_throttled,
                           .throttled = p->throttled};
}

static void s_shape_to_pb(const st_wire_shape_t *s, St__ModelShape *p, uint32_t types[3][ST_WIRE_MAX_LAYERS]) {
    st__model_shape__init(p);
    p->model_hash.len = ST_WIRE_HASH_BYTES;
    p->model_hash.data = (uint8_t *)s->model_hash;
    p->n_layer = s->n_layer;
    p->n_embd = s->n_embd;
    p->n_ff_exp = s->n_ff_exp;
    p->n_expert = s->n_expert;
    p->n_expert_used = s->n_expert_used;
    p->down_transposed = s->down_transposed;
    /* a shape with more layers than the arrays hold goes out with none: the peer refuses it */
    const size_t n = s->n_layer <= ST_WIRE_MAX_LAYERS ? s->n_layer : 0;
    for (size_t l = 0; l < n; l++) {
        types[0][l] = s->gate_type[l];
        types[1][l] = s->up_type[l];
        types[2][l] = s->down_type[l];
    }
    p->n_layer_gate_type = p->n_layer_up_type = p->n_layer_down_type = n;
    p->layer_gate_type = types[0];
    p->layer_up_type = types[1];
    p->layer_down_type = types[2];
}

/* Builds ref lists a (na) and b (nb) into one allocation. */
static int s_refs_to_pb(pb_build_t *pb, const st_wire_ref_t *a, uint32_t na, St__ExpertRef ***pa,
                        const st_wire_ref_t *b, uint32_t nb, St__ExpertRef ***pbb) {
    if (na > ST_WIRE_MAX_REFS || nb > ST_WIRE_MAX_REFS || (na && !a) || (nb && !b)) return ST_EINVAL;
    size_t n = (size_t)na + nb;
    pb->block = st_malloc((n ? n : 1) * (sizeof(St__ExpertRef) + sizeof(St__ExpertRef *)));
    if (!pb->block) return ST_ENOMEM;
    St__ExpertRef **ptrs = pb->block;
    St__ExpertRef *refs = (St__ExpertRef *)(ptrs + n);
    for (size_t i = 0; i < n; i++) {
        const st_wire_ref_t *r = i < na ? &a[i] : &b[i - na];
        st__expert_ref__init(&refs[i]);
        refs[i].layer = r->layer;
        refs[i].expert = r->expert;
        if (r->has_hash) {
            refs[i].hash.len = ST_WIRE_HASH_BYTES;
            refs[i].hash.data = (uint8_t *)r->hash;
        }
        ptrs[i] = &refs[i];
    }
    *pa = ptrs;
    if (pbb) *pbb = ptrs + na;
    return 0;
}

static int s_build(const st_wire_msg_t *m, pb_build_t *pb) {
    memset(pb, 0, sizeof *pb);
    if (m->type <= ST_MSG_NONE || m->type >= ST_MSG_COUNT) return ST_EINVAL;
    St__Envelope *e = &pb->env;
    st__envelope__init(e);
    e->version = ST_WIRE_VERSION;
    e->type = (St__MsgType)m->type;
    e->request_id = m->request_id;
    e->body_case = s_case_of[m->type];
    /* who sends: what a peer of another version names in its refusal (not on the hot path) */
    const char *sw = m->type == ST_MSG_HELLO       ? m->hello.software
                     : m->type == ST_MSG_INVENTORY ? m->inventory.software
                                                   : "";
    if (m->type == ST_MSG_HELLO || m->type == ST_MSG_INVENTORY || m->type == ST_MSG_ERROR)
        e->software = sw[0] ? (char *)sw : (char *)st_wire_software(pb->software, sizeof pb->software);
    int rc = 0;
    switch (m->type) {
    case ST_MSG_HELLO:
        st__hello__init(&pb->b.hello);
        pb->b.hello.coordinator_id = (char *)m->hello.coordinator_id;
        s_shape_to_pb(&m->hello.shape, &pb->shape, pb->types);
        pb->b.hello.shape = &pb->shape;
        e->hello = &pb->b.hello;
        break;
    case ST_MSG_INVENTORY: {
        St__Inventory *p = &pb->b.inventory;
        st__inventory__init(p);
        p->node_id = (char *)m->inventory.node_id;
        p->mem_budget = m->inventory.mem_budget;
        p->store_free = m->inventory.store_free;
        p->room = m->inventory.room;
        p->expert_cost = m->inventory.expert_cost;
        p->threads = m->inventory.threads;
        p->n_held = m->inventory.n_held;
        rc = s_refs_to_pb(pb, m->inventory.held, m->inventory.n_held, &p->held, NULL, 0, NULL);
        e->inventory = p;
        break;
    }
    case ST_MSG_ASSIGN: {
        St__Assign *p = &pb->b.assign;
        st__assign__init(p);
        s_shape_to_pb(&m->assign.shape, &pb->shape, pb->types);
        p->shape = &pb->shape;
        p->n_experts = m->assign.n_experts;
        p->n_pinned = m->assign.n_pinned;
        rc = s_refs_to_pb(pb, m->assign.experts, m->assign.n_experts, &p->experts, m->assign.pinned, m->assign.n_pinned,
                          &p->pinned);
        e->assign = p;
        break;
    }
    case ST_MSG_ASSIGN_ACK: {
        St__AssignAck *p = &pb->b.assign_ack;
        st__assign_ack__init(p);
        p->n_missing = m->assign_ack.n_missing;
        rc = s_refs_to_pb(pb, m->assign_ack.missing, m->assign_ack.n_missing, &p->missing, NULL, 0, NULL);
        e->assign_ack = p;
        break;
    }
    case ST_MSG_SHARD_PUT: {
        St__ShardPut *p = &pb->b.shard_put;
        st__shard_put__init(p);
        p->layer = m->shard_put.layer;
        p->expert = m->shard_put.expert;
        p->offset = m->shard_put.offset;
        p->total = m->shard_put.total;
        p->chunk_hash.len = ST_WIRE_HASH_BYTES;
        p->chunk_hash.data = (uint8_t *)m->shard_put.chunk_hash;
        e->shard_put = p;
        break;
    }
    case ST_MSG_SHARD_ACK: {
        St__ShardAck *p = &pb->b.shard_ack;
        st__shard_ack__init(p);
        p->layer = m->shard_ack.layer;
        p->expert = m->shard_ack.expert;
        p->offset = m->shard_ack.offset;
        p->ok = m->shard_ack.ok;
        p->complete = m->shard_ack.complete;
        e->shard_ack = p;
        break;
    }
    case ST_MSG_EXPERT_PREFETCH: {
        St__ExpertPrefetch *p = &pb->b.prefetch;
        st__expert_prefetch__init(p);
        if (m->prefetch.n_experts > ST_WIRE_MAX_REFS || (m->prefetch.n_experts && !m->prefetch.experts))
            return ST_EINVAL;
        p->layer = m->prefetch.layer;
        p->n_experts = m->prefetch.n_experts;
        p->experts = m->prefetch.experts;
        e->prefetch = p;
        break;
    }
    case ST_MSG_EXPERT_COMPUTE: {
        St__ExpertCompute *p = &pb->b.compute;
        st__expert_compute__init(p);
        const st_wire_compute_t *c = &m->compute;
        const bool weighted = c->result_format != ST_RESULT_PER_PAIR_F32;
        if (c->n_pairs > ST_WIRE_MAX_TOKENS * ST_WIRE_MAX_EXPERT_USED ||
            (c->n_pairs && (!c->pair_token || !c->pair_expert || (weighted && !c->pair_weight))))
            return ST_EINVAL;
        p->layer = c->layer;
        p->n_tokens = c->n_tokens;
        p->act_type = c->act_type;
        p->n_pair_token = p->n_pair_expert = c->n_pairs;
        /* int32 and uint32 share their representation; values are checked non-negative on decode */
        p->pair_token = (uint32_t *)c->pair_token;
        p->pair_expert = (uint32_t *)c->pair_expert;
        p->result_format = c->result_format;
        p->n_pair_weight = weighted ? c->n_pairs : 0;
        p->pair_weight = weighted ? c->pair_weight : NULL;
        e->compute = p;
        break;
    }
    case ST_MSG_EXPERT_RESULT: {
        St__ExpertResult *p = &pb->b.result;
        st__expert_result__init(p);
        p->n_pairs = m->result.n_pairs;
        p->compute_us = m->result.compute_us;
        p->cache_hits = m->result.cache_hits;
        p->cache_misses = m->result.cache_misses;
        p->result_format = m->result.result_format;
        p->n_rows = m->result.n_rows;
        p->cache_prefetched = m->result.cache_prefetched;
        e->result = p;
        break;
    }
    case ST_MSG_HEARTBEAT:
        st__heartbeat__init(&pb->b.heartbeat);
        pb->b.heartbeat.seq = m->heartbeat.seq;
        s_board_to_pb(&m->heartbeat.board, &pb->b.heartbeat);
        e->heartbeat = &pb->b.heartbeat;
        break;
    case ST_MSG_ERROR:
        st__error__init(&pb->b.error);
        pb->b.error.code = m->error.code;
        pb->b.error.message = (char *)m->error.message;
        e->error = &pb->b.error;
        break;
    case ST_MSG_HEAD_ASSIGN: {
        St__HeadAssign *p = &pb->b.head_assign;
        st__head_assign__init(p);
        p->n_vocab = m->head_assign.n_vocab;
        p->type = m->head_assign.type;
        p->lo = m->head_assign.lo;
        p->hi = m->head_assign.hi;
        p->hash.len = ST_WIRE_HASH_BYTES;
        p->hash.data = (uint8_t *)m->head_assign.hash;
        p->slot = m->head_assign.slot;
        p->n_slots = m->head_assign.n_slots;
        e->head_assign = p;
        break;
    }
    case ST_MSG_HEAD_PUT: {
        St__HeadPut *p = &pb->b.head_put;
        st__head_put__init(p);
        p->offset = m->head_put.offset;
        p->total = m->head_put.total;
        p->chunk_hash.len = ST_WIRE_HASH_BYTES;
        p->chunk_hash.data = (uint8_t *)m->head_put.chunk_hash;
        p->lo = m->head_put.lo;
        e->head_put = p;
        break;
    }
    case ST_MSG_HEAD_ACK: {
        St__HeadAck *p = &pb->b.head_ack;
        st__head_ack__init(p);
        p->offset = m->head_ack.offset;
        p->ok = m->head_ack.ok;
        p->complete = m->head_ack.complete;
        e->head_ack = p;
        break;
    }
    case ST_MSG_HEAD_COMPUTE: {
        St__HeadCompute *p = &pb->b.head_compute;
        st__head_compute__init(p);
        const st_wire_head_compute_t *c = &m->head_compute;
        const size_t ns = c->full ? 0 : c->n_seq, np = c->full ? 0 : c->n_pen;
        if (c->n_seq > ST_WIRE_MAX_HEAD_SEQ || np > ST_WIRE_MAX_REFS ||
            (ns && (!c->temp || !c->repeat_penalty || !c->presence_penalty || !c->frequency_penalty || !c->pen_n)) ||
            (np && (!c->pen_id || !c->pen_count)))
            return ST_EINVAL;
        p->n_seq = c->n_seq;
        p->full = c->full;
        p->n_cand = c->n_cand;
        p->lo = c->lo;
        p->n_temp = p->n_repeat_penalty = p->n_presence_penalty = p->n_frequency_penalty = p->n_pen_n = ns;
        p->temp = c->temp;
        p->repeat_penalty = c->repeat_penalty;
        p->presence_penalty = c->presence_penalty;
        p->frequency_penalty = c->frequency_penalty;
        p->pen_n = c->pen_n;
        p->n_pen_id = p->n_pen_count = np;
        p->pen_id = c->pen_id;
        p->pen_count = c->pen_count;
        e->head_compute = p;
        break;
    }
    case ST_MSG_HEAD_RESULT: {
        St__HeadResult *p = &pb->b.head_result;
        st__head_result__init(p);
        const st_wire_head_result_t *r = &m->head_result;
        const size_t ns = r->full ? 0 : r->n_seq;
        if (r->n_seq > ST_WIRE_MAX_HEAD_SEQ || (ns && (!r->max || !r->sum || !r->sum_temp))) return ST_EINVAL;
        p->n_seq = r->n_seq;
        p->full = r->full;
        p->n_cand = r->n_cand;
        p->n_max = p->n_sum = p->n_sum_temp = ns;
        p->max = r->max;
        p->sum = r->sum;
        p->sum_temp = r->sum_temp;
        p->compute_us = r->compute_us;
        e->head_result = p;
        break;
    }
    default: return ST_EINVAL;
    }
    return rc;
}

/* ids and strings are NUL-terminated arrays inside the struct: bound them */
static bool s_strings_ok(const st_wire_msg_t *m) {
    switch (m->type) {
    case ST_MSG_HELLO:
        return memchr(m->hello.coordinator_id, 0, sizeof m->hello.coordinator_id) &&
               memchr(m->hello.software, 0, sizeof m->hello.software);
    case ST_MSG_INVENTORY:
        return memchr(m->inventory.node_id, 0, sizeof m->inventory.node_id) &&
               memchr(m->inventory.software, 0, sizeof m->inventory.software);
    case ST_MSG_ERROR: return memchr(m->error.message, 0, sizeof m->error.message) != NULL;
    default: return true;
    }
}

size_t st_wire_encoded_size(const st_wire_msg_t *m) {
    pb_build_t pb = {.block = NULL};
    if (!s_strings_ok(m) || s_build(m, &pb)) {
        free(pb.block);
        return 0;
    }
    size_t n = st__envelope__get_packed_size(&pb.env);
    free(pb.block);
    return n;
}

int st_wire_encode(const st_wire_msg_t *m, uint8_t *buf, size_t cap, size_t *len) {
    pb_build_t pb = {.block = NULL};
    if (!s_strings_ok(m)) return st_fail(ST_EINVAL, "unterminated string in %s", st_wire_type_name(m->type));
    int rc = s_build(m, &pb);
    if (rc) {
        free(pb.block);
        return st_fail(rc, "cannot encode a %s message", st_wire_type_name(m->type));
    }
    size_t n = st__envelope__get_packed_size(&pb.env);
    if (n > cap || n > ST_WIRE_MAX_ENVELOPE) {
        free(pb.block);
        return st_fail(ST_ERANGE, "%s message of %zu B (room for %zu)", st_wire_type_name(m->type), n, cap);
    }
    *len = st__envelope__pack(&pb.env, buf);
    free(pb.block);
    return 0;
}

/* ---- decoding ---------------------------------------------------------- */

static int s_hash_from_pb(const ProtobufCBinaryData *b, uint8_t *out, const char *what, char *why, size_t cap) {
    if (b->len != ST_WIRE_HASH_BYTES) return s_why(why, cap, "%s of %zu B (want %d)", what, b->len, ST_WIRE_HASH_BYTES);
    memcpy(out, b->data, ST_WIRE_HASH_BYTES);
    return 0;
}

/* A peer's string (an id, a program's name, an error message), which the logs, /health and st-ctl
 * print: its first cap - 1 bytes into out, control characters as '?', so that it cannot end a log
 * line and forge the next one, or drive the terminal. */
static void s_printable_copy(char *out, size_t cap, const char *s) {
    size_t n = 0;
    for (; s && s[n] && n + 1 < cap; n++) out[n] = (unsigned char)s[n] < 0x20 || s[n] == 0x7f ? '?' : s[n];
    out[n] = '\0';
}

static int s_string_from_pb(const char *s, char *out, size_t cap, const char *what, char *why, size_t why_cap) {
    size_t n = s ? strlen(s) : 0;
    if (n >= cap) return s_why(why, why_cap, "%s of %zu B (at most %zu)", what, n, cap - 1);
    s_printable_copy(out, cap, s);
    return 0;
}

static int s_shape_from_pb(const St__ModelShape *p, st_wire_shape_t *s, char *why, size_t cap) {
    if (!p) return s_why(why, cap, "no model shape");
    memset(s, 0, sizeof *s);
    if (s_hash_from_pb(&p->model_hash, s->model_hash, "model hash", why, cap)) return ST_EPROTO;
    s->n_layer = p->n_layer;
    s->n_embd = p->n_embd;
    s->n_ff_exp = p->n_ff_exp;
    s->n_expert = p->n_expert;
    s->n_expert_used = p->n_expert_used;
    s->down_transposed = p->down_transposed;
    if (p->n_layer < 1 || p->n_layer > ST_WIRE_MAX_LAYERS) return s_why(why, cap, "n_layer %u", p->n_layer);
    if (p->n_layer_gate_type != p->n_layer || p->n_layer_up_type != p->n_layer || p->n_layer_down_type != p->n_layer)
        return s_why(why, cap, "%zu/%zu/%zu per-layer gate/up/down types for %u layers", p->n_layer_gate_type,
                     p->n_layer_up_type, p->n_layer_down_type, p->n_layer);
    for (uint32_t l = 0; l < p->n_layer; l++) {
        if (p->layer_gate_type[l] >= ST_TYPE_COUNT || p->layer_up_type[l] >= ST_TYPE_COUNT ||
            p->layer_down_type[l] >= ST_TYPE_COUNT)
            return s_why(why, cap, "layer %u: type ids %u/%u/%u", l, p->layer_gate_type[l], p->layer_up_type[l],
                         p->layer_down_type[l]);
        s->gate_type[l] = (uint8_t)p->layer_gate_type[l];
        s->up_type[l] = (uint8_t)p->layer_up_type[l];
        s->down_type[l] = (uint8_t)p->layer_down_type[l];
    }
    return 0;
}

static int s_refs_from_pb(St__ExpertRef *const *p, size_t n, st_wire_ref_t *out, bool need_hash, const char *what,
                          char *why, size_t cap) {
    for (size_t i = 0; i < n; i++) {
        const St__ExpertRef *r = p[i];
        out[i].layer = r->layer;
        out[i].expert = r->expert;
        out[i].has_hash = r->hash.len != 0;
        if (out[i].has_hash || need_hash) {
            if (s_hash_from_pb(&r->hash, out[i].hash, what, why, cap)) return ST_EPROTO;
        } else {
            memset(out[i].hash, 0, ST_WIRE_HASH_BYTES);
        }
    }
    return 0;
}

/* Checks the counts of a parsed envelope and sums the bytes our lists need. */
static int s_list_bytes(const St__Envelope *e, size_t *bytes, char *why, size_t cap) {
    size_t refs = 0, ints = 0;
    switch (e->body_case) {
    case ST__ENVELOPE__BODY_HEAD_COMPUTE: {
        const St__HeadCompute *c = e->head_compute;
        const size_t ns = c->full ? 0 : c->n_seq;
        if (c->n_seq < 1 || c->n_seq > ST_WIRE_MAX_HEAD_SEQ)
            return s_why(why, cap, "head compute of %u sequences (1..%d)", c->n_seq, ST_WIRE_MAX_HEAD_SEQ);
        if (c->n_temp != ns || c->n_repeat_penalty != ns || c->n_presence_penalty != ns ||
            c->n_frequency_penalty != ns || c->n_pen_n != ns)
            return s_why(why, cap, "head compute lists of %zu/%zu/%zu/%zu/%zu entries for %zu sequences", c->n_temp,
                         c->n_repeat_penalty, c->n_presence_penalty, c->n_frequency_penalty, c->n_pen_n, ns);
        if (c->n_pen_id != c->n_pen_count || c->n_pen_id > ST_WIRE_MAX_REFS || (c->full && c->n_pen_id))
            return s_why(why, cap, "%zu penalty ids and %zu counts", c->n_pen_id, c->n_pen_count);
        *bytes = ns * (4 * sizeof(float) + sizeof(uint32_t)) + 2 * c->n_pen_id * sizeof(uint32_t);
        return 0;
    }
    case ST__ENVELOPE__BODY_HEAD_RESULT: {
        const St__HeadResult *r = e->head_result;
        const size_t ns = r->full ? 0 : r->n_seq;
        if (r->n_seq < 1 || r->n_seq > ST_WIRE_MAX_HEAD_SEQ)
            return s_why(why, cap, "head result of %u sequences (1..%d)", r->n_seq, ST_WIRE_MAX_HEAD_SEQ);
        if (r->n_max != ns || r->n_sum != ns || r->n_sum_temp != ns)
            return s_why(why, cap, "head result lists of %zu/%zu/%zu entries for %zu sequences", r->n_max, r->n_sum,
                         r->n_sum_temp, ns);
        *bytes = ns * (2 * sizeof(double) + sizeof(float)); /* doubles first: aligned */
        return 0;
    }
    case ST__ENVELOPE__BODY_INVENTORY: refs = e->inventory->n_held; break;
    case ST__ENVELOPE__BODY_ASSIGN:
        if (e->assign->n_experts > ST_WIRE_MAX_REFS || e->assign->n_pinned > ST_WIRE_MAX_REFS)
            return s_why(why, cap, "assign lists of %zu and %zu experts (at most %d)", e->assign->n_experts,
                         e->assign->n_pinned, ST_WIRE_MAX_REFS);
        refs = e->assign->n_experts + e->assign->n_pinned;
        break;
    case ST__ENVELOPE__BODY_ASSIGN_ACK: refs = e->assign_ack->n_missing; break;
    case ST__ENVELOPE__BODY_PREFETCH: ints = e->prefetch->n_experts; break;
    case ST__ENVELOPE__BODY_COMPUTE:
        if (e->compute->n_pair_token != e->compute->n_pair_expert)
            return s_why(why, cap, "%zu pair tokens but %zu pair experts", e->compute->n_pair_token,
                         e->compute->n_pair_expert);
        if (e->compute->n_pair_token > (size_t)ST_WIRE_MAX_TOKENS * ST_WIRE_MAX_EXPERT_USED)
            return s_why(why, cap, "%zu pairs (at most %d)", e->compute->n_pair_token,
                         ST_WIRE_MAX_TOKENS * ST_WIRE_MAX_EXPERT_USED);
        if (e->compute->n_pair_weight && e->compute->n_pair_weight != e->compute->n_pair_token)
            return s_why(why, cap, "%zu pair weights for %zu pairs", e->compute->n_pair_weight,
                         e->compute->n_pair_token);
        /* as st_wire_encode, which sends no compact request without them */
        if (e->compute->result_format != ST_RESULT_PER_PAIR_F32 && e->compute->n_pair_token &&
            !e->compute->n_pair_weight)
            return s_why(why, cap, "%s result without pair weights",
                         st_wire_result_format_name(e->compute->result_format));
        ints = 2 * e->compute->n_pair_token + e->compute->n_pair_weight; /* floats are ints' size */
        break;
    default: break;
    }
    if (refs > 2 * (size_t)ST_WIRE_MAX_REFS || (e->body_case != ST__ENVELOPE__BODY_ASSIGN && refs > ST_WIRE_MAX_REFS))
        return s_why(why, cap, "list of %zu experts (at most %d)", refs, ST_WIRE_MAX_REFS);
    if (ints > 3 * (size_t)ST_WIRE_MAX_TOKENS * ST_WIRE_MAX_EXPERT_USED)
        return s_why(why, cap, "list of %zu ids", ints);
    if (e->body_case == ST__ENVELOPE__BODY_PREFETCH && ints > ST_WIRE_MAX_EXPERTS)
        return s_why(why, cap, "prefetch of %zu experts (at most %d)", ints, ST_WIRE_MAX_EXPERTS);
    *bytes = refs * sizeof(st_wire_ref_t) + ints * sizeof(int32_t);
    return 0;
}

static int s_from_pb(const St__Envelope *e, st_wire_msg_t *m, char *why, size_t cap) {
    if (e->version != ST_WIRE_VERSION) { /* name both sides: the reader of a log sees one */
        char me[ST_WIRE_MAX_SOFTWARE + 1], sw[ST_WIRE_MAX_SOFTWARE + 1];
        s_printable_copy(sw, sizeof sw, e->software);
        const char *peer = sw[0] ? sw : "a program before 0.4.0 (it names no version)";
        return s_why(why, cap,
                     "protocol version %u from %s, but this is %s, protocol version %d: run the same version "
                     "on both sides",
                     e->version, peer, st_wire_software(me, sizeof me), ST_WIRE_VERSION);
    }
    if ((int)e->type <= ST_MSG_NONE || (int)e->type >= ST_MSG_COUNT)
        return s_why(why, cap, "unknown message type %d", (int)e->type);
    if (e->body_case != s_case_of[e->type])
        return s_why(why, cap, "%s message without its body", st_wire_type_name((int)e->type));
    size_t bytes = 0;
    if (s_list_bytes(e, &bytes, why, cap)) return ST_EPROTO;
    uint8_t *block = NULL;
    if (bytes) {
        block = st_malloc(bytes);
        if (!block) return s_why(why, cap, "no memory for %zu B of lists", bytes);
    }
    m->owned_ = block;
    int rc = 0;
    switch (m->type) {
    case ST_MSG_HELLO:
        rc = s_string_from_pb(e->hello->coordinator_id, m->hello.coordinator_id, sizeof m->hello.coordinator_id,
                              "coordinator id", why, cap);
        if (!rc) rc = s_string_from_pb(e->software, m->hello.software, sizeof m->hello.software, "software", why, cap);
        if (!rc) rc = s_shape_from_pb(e->hello->shape, &m->hello.shape, why, cap);
        break;
    case ST_MSG_INVENTORY: {
        st_wire_inventory_t *v = &m->inventory;
        rc = s_string_from_pb(e->inventory->node_id, v->node_id, sizeof v->node_id, "node id", why, cap);
        if (!rc) rc = s_string_from_pb(e->software, v->software, sizeof v->software, "software", why, cap);
        v->mem_budget = e->inventory->mem_budget;
        v->store_free = e->inventory->store_free;
        v->room = e->inventory->room;
        v->expert_cost = e->inventory->expert_cost;
        v->threads = e->inventory->threads;
        v->n_held = (uint32_t)e->inventory->n_held;
        v->held = (st_wire_ref_t *)block;
        if (!rc) rc = s_refs_from_pb(e->inventory->held, v->n_held, v->held, true, "held expert hash", why, cap);
        break;
    }
    case ST_MSG_ASSIGN: {
        st_wire_assign_t *a = &m->assign;
        rc = s_shape_from_pb(e->assign->shape, &a->shape, why, cap);
        a->n_experts = (uint32_t)e->assign->n_experts;
        a->n_pinned = (uint32_t)e->assign->n_pinned;
        a->experts = (st_wire_ref_t *)block;
        a->pinned = block ? a->experts + a->n_experts : NULL; /* NULL + 0 is undefined */
        if (!rc) rc = s_refs_from_pb(e->assign->experts, a->n_experts, a->experts, true, "expert hash", why, cap);
        if (!rc) rc = s_refs_from_pb(e->assign->pinned, a->n_pinned, a->pinned, false, "pinned hash", why, cap);
        break;
    }
    case ST_MSG_ASSIGN_ACK:
        m->assign_ack.n_missing = (uint32_t)e->assign_ack->n_missing;
        m->assign_ack.missing = (st_wire_ref_t *)block;
        rc = s_refs_from_pb(e->assign_ack->missing, m->assign_ack.n_missing, m->assign_ack.missing, false,
                            "missing hash", why, cap);
        break;
    case ST_MSG_SHARD_PUT: {
        st_wire_shard_put_t *s = &m->shard_put;
        s->layer = e->shard_put->layer;
        s->expert = e->shard_put->expert;
        s->offset = e->shard_put->offset;
        s->total = e->shard_put->total;
        rc = s_hash_from_pb(&e->shard_put->chunk_hash, s->chunk_hash, "chunk hash", why, cap);
        break;
    }
    case ST_MSG_SHARD_ACK:
        m->shard_ack.layer = e->shard_ack->layer;
        m->shard_ack.expert = e->shard_ack->expert;
        m->shard_ack.offset = e->shard_ack->offset;
        m->shard_ack.ok = e->shard_ack->ok;
        m->shard_ack.complete = e->shard_ack->complete;
        break;
    case ST_MSG_EXPERT_PREFETCH:
        m->prefetch.layer = e->prefetch->layer;
        m->prefetch.n_experts = (uint32_t)e->prefetch->n_experts;
        m->prefetch.experts = (uint32_t *)block;
        if (m->prefetch.n_experts)
            memcpy(m->prefetch.experts, e->prefetch->experts, m->prefetch.n_experts * sizeof(uint32_t));
        break;
    case ST_MSG_EXPERT_COMPUTE: {
        st_wire_compute_t *c = &m->compute;
        c->layer = e->compute->layer;
        c->n_tokens = e->compute->n_tokens;
        c->act_type = e->compute->act_type;
        c->n_pairs = (uint32_t)e->compute->n_pair_token;
        c->pair_token = (int32_t *)block;
        c->pair_expert = block ? c->pair_token + c->n_pairs : NULL; /* NULL + 0 is undefined */
        for (uint32_t i = 0; i < c->n_pairs && !rc; i++) {
            if (e->compute->pair_token[i] > INT32_MAX || e->compute->pair_expert[i] > INT32_MAX)
                rc = s_why(why, cap, "pair %u: id out of range", i);
            c->pair_token[i] = (int32_t)e->compute->pair_token[i];
            c->pair_expert[i] = (int32_t)e->compute->pair_expert[i];
        }
        c->result_format = e->compute->result_format;
        c->pair_weight = NULL;
        if (e->compute->n_pair_weight) {
            c->pair_weight = (float *)(c->pair_expert + c->n_pairs);
            memcpy(c->pair_weight, e->compute->pair_weight, c->n_pairs * sizeof(float));
        }
        break;
    }
    case ST_MSG_EXPERT_RESULT:
        m->result.n_pairs = e->result->n_pairs;
        m->result.compute_us = e->result->compute_us;
        m->result.cache_hits = e->result->cache_hits;
        m->result.cache_misses = e->result->cache_misses;
        m->result.result_format = e->result->result_format;
        m->result.n_rows = e->result->n_rows;
        m->result.cache_prefetched = e->result->cache_prefetched;
        break;
    case ST_MSG_HEARTBEAT:
        m->heartbeat.seq = e->heartbeat->seq;
        s_board_from_pb(e->heartbeat, &m->heartbeat.board);
        break;
    case ST_MSG_ERROR:
        m->error.code = e->error->code;
        rc = s_string_from_pb(e->error->message, m->error.message, sizeof m->error.message, "error message", why, cap);
        break;
    case ST_MSG_HEAD_ASSIGN: {
        st_wire_head_assign_t *a = &m->head_assign;
        a->n_vocab = e->head_assign->n_vocab;
        a->type = e->head_assign->type;
        a->lo = e->head_assign->lo;
        a->hi = e->head_assign->hi;
        a->slot = e->head_assign->slot;
        a->n_slots = e->head_assign->n_slots;
        rc = s_hash_from_pb(&e->head_assign->hash, a->hash, "head hash", why, cap);
        break;
    }
    case ST_MSG_HEAD_PUT:
        m->head_put.offset = e->head_put->offset;
        m->head_put.total = e->head_put->total;
        m->head_put.lo = e->head_put->lo;
        rc = s_hash_from_pb(&e->head_put->chunk_hash, m->head_put.chunk_hash, "chunk hash", why, cap);
        break;
    case ST_MSG_HEAD_ACK:
        m->head_ack.offset = e->head_ack->offset;
        m->head_ack.ok = e->head_ack->ok;
        m->head_ack.complete = e->head_ack->complete;
        break;
    case ST_MSG_HEAD_COMPUTE: {
        const St__HeadCompute *p = e->head_compute;
        st_wire_head_compute_t *c = &m->head_compute;
        c->n_seq = p->n_seq;
        c->n_cand = p->n_cand;
        c->lo = p->lo;
        c->full = p->full;
        const size_t ns = p->n_temp; /* checked: n_seq, or 0 when full */
        c->n_pen = (uint32_t)p->n_pen_id;
        if (!block) break;
        float *f = (float *)block;
        c->temp = f, c->repeat_penalty = f + ns, c->presence_penalty = f + 2 * ns, c->frequency_penalty = f + 3 * ns;
        c->pen_n = (uint32_t *)(f + 4 * ns);
        c->pen_id = c->pen_n + ns;
        c->pen_count = c->pen_id + c->n_pen;
        if (ns) {
            memcpy(c->temp, p->temp, ns * sizeof(float));
            memcpy(c->repeat_penalty, p->repeat_penalty, ns * sizeof(float));
            memcpy(c->presence_penalty, p->presence_penalty, ns * sizeof(float));
            memcpy(c->frequency_penalty, p->frequency_penalty, ns * sizeof(float));
            memcpy(c->pen_n, p->pen_n, ns * sizeof(uint32_t));
        }
        if (c->n_pen) {
            memcpy(c->pen_id, p->pen_id, c->n_pen * sizeof(uint32_t));
            memcpy(c->pen_count, p->pen_count, c->n_pen * sizeof(uint32_t));
        }
        break;
    }
    case ST_MSG_HEAD_RESULT: {
        const St__HeadResult *p = e->head_result;
        st_wire_head_result_t *r = &m->head_result;
        r->n_seq = p->n_seq;
        r->n_cand = p->n_cand;
        r->full = p->full;
        r->compute_us = p->compute_us;
        const size_t ns = p->n_max;
        if (!block) break;
        r->sum = (double *)block;
        r->sum_temp = r->sum + ns;
        r->max = (float *)(r->sum_temp + ns);
        memcpy(r->sum, p->sum, ns * sizeof(double));
        memcpy(r->sum_temp, p->sum_temp, ns * sizeof(double));
        memcpy(r->max, p->max, ns * sizeof(float));
        break;
    }
    default: rc = s_why(why, cap, "unknown message type");
    }
    return rc;
}

int st_wire_decode(const uint8_t *buf, size_t len, st_wire_msg_t *m, char *why, size_t why_cap) {
    memset(m, 0, sizeof *m);
    if (why && why_cap) why[0] = '\0';
    if (len == 0) return s_why(why, why_cap, "empty envelope");
    if (len > ST_WIRE_MAX_ENVELOPE)
        return s_why(why, why_cap, "envelope of %zu B (at most %u)", len, ST_WIRE_MAX_ENVELOPE);
    St__Envelope *e = st__envelope__unpack(NULL, len, buf);
    if (!e) return s_why(why, why_cap, "envelope of %zu B does not parse", len);
    if ((int)e->type > ST_MSG_NONE && (int)e->type < ST_MSG_COUNT) m->type = (st_msg_type_t)e->type;
    m->request_id = e->request_id;
    m->version = e->version;
    int rc = s_from_pb(e, m, why, why_cap);
    st__envelope__free_unpacked(e, NULL);
    if (rc) {
        free(m->owned_);
        st_msg_type_t t = m->type;
        uint64_t id = m->request_id;
        uint32_t version = m->version;
        memset(m, 0, sizeof *m);
        m->type = t;
        m->request_id = id;
        m->version = version;
        return ST_EPROTO;
    }
    return 0;
}

void st_wire_msg_clear(st_wire_msg_t *m) {
    if (!m) return;
    free(m->owned_);
    memset(m, 0, sizeof *m);
}

/* ---- checks against the model's shape ------------------------------------ */

/* bytes of a row of n elements of type, 0 for an unknown type or a partial block
 * (st_row_size asserts instead: these shapes come from the network) */
static uint64_t s_row_bytes(uint32_t type, uint32_t n) {
    const st_type_traits_t *t = st_type_traits((int)type);
    if (!t || !t->name || t->blck <= 0 || n % (uint32_t)t->blck) return 0;
    return (uint64_t)(n / (uint32_t)t->blck) * t->size;
}

uint64_t st_wire_matrix_bytes(const st_wire_shape_t *s, uint32_t l, uint64_t sizes[3]) {
    sizes[0] = sizes[1] = sizes[2] = 0;
    if (l >= s->n_layer || l >= ST_WIRE_MAX_LAYERS) return 0;
    sizes[0] = (uint64_t)s->n_ff_exp * s_row_bytes(s->gate_type[l], s->n_embd);
    sizes[1] = (uint64_t)s->n_ff_exp * s_row_bytes(s->up_type[l], s->n_embd);
    sizes[2] = s->down_transposed ? (uint64_t)s->n_ff_exp * s_row_bytes(s->down_type[l], s->n_embd)
                                  : (uint64_t)s->n_embd * s_row_bytes(s->down_type[l], s->n_ff_exp);
    if (!sizes[0] || !sizes[1] || !sizes[2]) return sizes[0] = sizes[1] = sizes[2] = 0;
    return sizes[0] + sizes[1] + sizes[2];
}

uint64_t st_wire_expert_bytes(const st_wire_shape_t *s, uint32_t layer) {
    uint64_t sizes[3];
    return st_wire_matrix_bytes(s, layer, sizes);
}

uint64_t st_wire_max_expert_bytes(const st_wire_shape_t *s) {
    uint64_t max = 0;
    for (uint32_t l = 0; l < s->n_layer && l < ST_WIRE_MAX_LAYERS; l++) {
        uint64_t b = st_wire_expert_bytes(s, l);
        max = b > max ? b : max;
    }
    return max;
}

int st_wire_act_type(const st_wire_shape_t *s, uint32_t l) {
    if (l >= s->n_layer || l >= ST_WIRE_MAX_LAYERS) return -1;
    const st_type_traits_t *g = st_type_traits((int)s->gate_type[l]);
    return g && g->name ? (int)g->vec_dot_type : -1;
}

size_t st_wire_act_row_bytes(const st_wire_shape_t *s, uint32_t l) {
    const int a = st_wire_act_type(s, l);
    return a < 0 ? 0 : (size_t)s_row_bytes((uint32_t)a, s->n_embd);
}

size_t st_wire_max_act_row_bytes(const st_wire_shape_t *s) {
    size_t max = 0;
    for (uint32_t l = 0; l < s->n_layer && l < ST_WIRE_MAX_LAYERS; l++) {
        size_t b = st_wire_act_row_bytes(s, l);
        max = b > max ? b : max;
    }
    return max;
}

uint32_t st_wire_max_tokens(const st_wire_shape_t *s) {
    size_t row = st_wire_max_act_row_bytes(s);
    if (!row) return 0;
    size_t n = ST_WIRE_MAX_FRAME / row;
    return n < ST_WIRE_MAX_TOKENS ? (uint32_t)n : ST_WIRE_MAX_TOKENS;
}

size_t st_wire_result_row_bytes(uint32_t format, uint32_t n_embd) {
    switch (format) {
    case ST_RESULT_PER_PAIR_F32:
    case ST_RESULT_PER_TOKEN_F32: return (size_t)n_embd * 4;
    case ST_RESULT_PER_TOKEN_F16: return 4 + (size_t)n_embd * 2;
    default: return 0;
    }
}

const char *st_wire_result_format_name(uint32_t format) {
    static const char *names[ST_RESULT_FORMAT_COUNT] = {"per-pair-f32", "per-token-f32", "per-token-f16"};
    return format < ST_RESULT_FORMAT_COUNT ? names[format] : "?";
}

uint64_t st_wire_max_result_frame(const st_wire_shape_t *s) {
    return (uint64_t)st_wire_max_tokens(s) * s->n_expert_used * s->n_embd * sizeof(float);
}

void st_wire_shape_set_types(st_wire_shape_t *s, uint32_t gate, uint32_t up, uint32_t down) {
    for (uint32_t l = 0; l < s->n_layer && l < ST_WIRE_MAX_LAYERS; l++) {
        s->gate_type[l] = (uint8_t)(gate < 255 ? gate : 255);
        s->up_type[l] = (uint8_t)(up < 255 ? up : 255);
        s->down_type[l] = (uint8_t)(down < 255 ? down : 255);
    }
}

/* a weight type we have kernels for, with n a whole number of its blocks */
static bool s_type_fits(uint32_t type, uint32_t n) {
    const st_type_traits_t *t = st_type_traits((int)type);
    return t && t->name && t->supported && t->blck > 0 && n % (uint32_t)t->blck == 0;
}

int st_wire_check_shape(const st_wire_shape_t *s, char *why, size_t cap) {
    if (s->n_layer < 1 || s->n_layer > ST_WIRE_MAX_LAYERS) return s_why(why, cap, "n_layer %u", s->n_layer);
    if (s->n_embd < 1 || s->n_embd > ST_WIRE_MAX_EMBD) return s_why(why, cap, "n_embd %u", s->n_embd);
    if (s->n_ff_exp < 1 || s->n_ff_exp > ST_WIRE_MAX_EMBD) return s_why(why, cap, "n_ff_exp %u", s->n_ff_exp);
    if (s->n_expert < 1 || s->n_expert > ST_WIRE_MAX_EXPERTS) return s_why(why, cap, "n_expert %u", s->n_expert);
    if (s->n_expert_used < 1 || s->n_expert_used > s->n_expert || s->n_expert_used > ST_WIRE_MAX_EXPERT_USED)
        return s_why(why, cap, "n_expert_used %u of %u", s->n_expert_used, s->n_expert);
    for (uint32_t l = 0; l < s->n_layer; l++) {
        const uint32_t gt = s->gate_type[l], ut = s->up_type[l], dt = s->down_type[l];
        if (!s_type_fits(gt, s->n_embd) || !s_type_fits(ut, s->n_embd))
            return s_why(why, cap, "layer %u: gate/up types %u/%u with n_embd %u", l, gt, ut, s->n_embd);
        if (!s_type_fits(dt, s->down_transposed ? s->n_embd : s->n_ff_exp))
            return s_why(why, cap, "layer %u: down type %u with %s rows", l, dt,
                         s->down_transposed ? "n_embd" : "n_ff_exp");
        const st_type_traits_t *g = st_type_traits((int)gt), *u = st_type_traits((int)ut);
        if (g->vec_dot_type != u->vec_dot_type)
            return s_why(why, cap, "layer %u: gate and up take different activation types", l);
        const st_type_traits_t *a = st_type_traits(g->vec_dot_type); /* Q8_0, Q8_1, Q8_K...: not weight types */
        if (!a || !a->name || a->blck <= 0 || s->n_embd % (uint32_t)a->blck)
            return s_why(why, cap, "layer %u: activation type with n_embd %u", l, s->n_embd);
        if (st_wire_expert_bytes(s, l) == 0) return s_why(why, cap, "layer %u: experts of no size", l);
    }
    if (st_wire_max_tokens(s) < 1) return s_why(why, cap, "one activation row is larger than a frame");
    return 0;
}

bool st_wire_shape_eq(const st_wire_shape_t *a, const st_wire_shape_t *b) {
    if (memcmp(a->model_hash, b->model_hash, ST_WIRE_HASH_BYTES) || a->n_layer != b->n_layer ||
        a->n_embd != b->n_embd || a->n_ff_exp != b->n_ff_exp || a->n_expert != b->n_expert ||
        a->n_expert_used != b->n_expert_used || a->down_transposed != b->down_transposed ||
        a->n_layer > ST_WIRE_MAX_LAYERS)
        return false;
    const size_t n = a->n_layer;
    return !memcmp(a->gate_type, b->gate_type, n) && !memcmp(a->up_type, b->up_type, n) &&
           !memcmp(a->down_type, b->down_type, n);
}

static int s_check_refs(const st_wire_ref_t *r, uint32_t n, const st_wire_shape_t *s, const char *what, char *why,
                        size_t cap) {
    for (uint32_t i = 0; i < n; i++)
        if (r[i].layer >= s->n_layer || r[i].expert >= s->n_expert)
            return s_why(why, cap, "%s %u: expert %u.%u outside %u layers x %u experts", what, i, r[i].layer,
                         r[i].expert, s->n_layer, s->n_expert);
    return 0;
}

int st_wire_check(const st_wire_msg_t *m, const st_wire_shape_t *s, size_t frame_len, char *why, size_t cap) {
    if (m->type == ST_MSG_HEAD_ASSIGN || m->type == ST_MSG_HEAD_PUT || m->type == ST_MSG_HEAD_COMPUTE)
        return s_why(why, cap, "%s is checked against the head's slice", st_wire_type_name(m->type));
    if (m->type == ST_MSG_HEAD_RESULT) /* its frame: st_wire_check_head_result, against the request */
        return frame_len <= ST_WIRE_MAX_FRAME ? 0 : s_why(why, cap, "head result frame of %zu B", frame_len);
    const bool has_frame =
        m->type == ST_MSG_SHARD_PUT || m->type == ST_MSG_EXPERT_COMPUTE || m->type == ST_MSG_EXPERT_RESULT;
    if (!has_frame && frame_len) return s_why(why, cap, "%s with a %zu B frame", st_wire_type_name(m->type), frame_len);
    if (m->type == ST_MSG_HELLO || m->type == ST_MSG_ASSIGN) {
        const st_wire_shape_t *own = m->type == ST_MSG_HELLO ? &m->hello.shape : &m->assign.shape;
        if (st_wire_check_shape(own, why, cap)) return ST_EPROTO;
        if (s && !st_wire_shape_eq(s, own)) return s_why(why, cap, "model shape differs from the expected one");
        s = own;
    }
    if (m->type == ST_MSG_HEARTBEAT || m->type == ST_MSG_ERROR || m->type == ST_MSG_HELLO ||
        m->type == ST_MSG_SHARD_ACK || m->type == ST_MSG_HEAD_ACK)
        return 0;
    if (!s) return s_why(why, cap, "%s before the model's shape is known", st_wire_type_name(m->type));
    switch (m->type) {
    case ST_MSG_INVENTORY: {
        const st_wire_inventory_t *v = &m->inventory;
        if ((v->room && !v->expert_cost) || v->room > v->mem_budget ||
            (v->expert_cost && v->expert_cost < st_wire_max_expert_bytes(s)))
            return s_why(why, cap, "room of %llu B for experts of %llu B each with --mem of %llu B",
                         (unsigned long long)v->room, (unsigned long long)v->expert_cost,
                         (unsigned long long)v->mem_budget);
        return s_check_refs(v->held, v->n_held, s, "held", why, cap);
    }
    case ST_MSG_ASSIGN_ACK: return s_check_refs(m->assign_ack.missing, m->assign_ack.n_missing, s, "missing", why, cap);
    case ST_MSG_ASSIGN: {
        const st_wire_assign_t *a = &m->assign;
        if (a->n_experts > s->n_layer * s->n_expert || a->n_pinned > a->n_experts)
            return s_why(why, cap, "%u experts, %u pinned", a->n_experts, a->n_pinned);
        if (s_check_refs(a->experts, a->n_experts, s, "expert", why, cap)) return ST_EPROTO;
        return s_check_refs(a->pinned, a->n_pinned, s, "pinned", why, cap);
    }
    case ST_MSG_SHARD_PUT: {
        const st_wire_shard_put_t *p = &m->shard_put;
        if (p->layer >= s->n_layer || p->expert >= s->n_expert)
            return s_why(why, cap, "shard of expert %u.%u", p->layer, p->expert);
        const uint64_t eb = st_wire_expert_bytes(s, p->layer);
        if (p->total != eb)
            return s_why(why, cap, "shard total %llu (an expert of layer %u is %llu B)", (unsigned long long)p->total,
                         p->layer, (unsigned long long)eb);
        if (frame_len == 0 || frame_len > ST_WIRE_MAX_CHUNK)
            return s_why(why, cap, "shard chunk of %zu B (1..%u)", frame_len, ST_WIRE_MAX_CHUNK);
        if (p->offset >= p->total || frame_len > p->total - p->offset)
            return s_why(why, cap, "chunk [%llu, +%zu) outside the expert's %llu B", (unsigned long long)p->offset,
                         frame_len, (unsigned long long)p->total);
        return 0;
    }
    case ST_MSG_EXPERT_PREFETCH:
        if (m->prefetch.layer >= s->n_layer) return s_why(why, cap, "prefetch of layer %u", m->prefetch.layer);
        for (uint32_t i = 0; i < m->prefetch.n_experts; i++)
            if (m->prefetch.experts[i] >= s->n_expert)
                return s_why(why, cap, "prefetch of expert %u", m->prefetch.experts[i]);
        return 0;
    case ST_MSG_EXPERT_COMPUTE: {
        const st_wire_compute_t *c = &m->compute;
        if (c->layer >= s->n_layer) return s_why(why, cap, "layer %u of %u", c->layer, s->n_layer);
        if (c->n_tokens < 1 || c->n_tokens > st_wire_max_tokens(s))
            return s_why(why, cap, "%u tokens (1..%u)", c->n_tokens, st_wire_max_tokens(s));
        const int act = st_wire_act_type(s, c->layer);
        if (act < 0 || c->act_type != (uint32_t)act)
            return s_why(why, cap, "activation type %u (layer %u's experts take %s)", c->act_type, c->layer,
                         act < 0 ? "?" : st_type_name(act));
        if (c->n_pairs < 1 || c->n_pairs > c->n_tokens * s->n_expert_used)
            return s_why(why, cap, "%u pairs for %u tokens", c->n_pairs, c->n_tokens);
        for (uint32_t i = 0; i < c->n_pairs; i++)
            if ((uint32_t)c->pair_token[i] >= c->n_tokens || (uint32_t)c->pair_expert[i] >= s->n_expert)
                return s_why(why, cap, "pair %u: token %d, expert %d", i, c->pair_token[i], c->pair_expert[i]);
        size_t want = (size_t)c->n_tokens * st_wire_act_row_bytes(s, c->layer);
        if (frame_len != want) return s_why(why, cap, "activation frame of %zu B (want %zu)", frame_len, want);
        if (c->result_format >= ST_RESULT_FORMAT_COUNT)
            return s_why(why, cap, "unknown result format %u", c->result_format);
        if ((c->result_format != ST_RESULT_PER_PAIR_F32) != (c->pair_weight != NULL))
            return s_why(why, cap, "%s result %s pair weights", st_wire_result_format_name(c->result_format),
                         c->pair_weight ? "with" : "without");
        for (uint32_t i = 0; c->pair_weight && i < c->n_pairs; i++)
            if (!isfinite(c->pair_weight[i])) return s_why(why, cap, "pair %u: weight not finite", i);
        return 0;
    }
    case ST_MSG_EXPERT_RESULT: {
        const st_wire_result_t *r = &m->result;
        const uint32_t max_rows = st_wire_max_tokens(s);
        const uint64_t max = (uint64_t)max_rows * s->n_expert_used;
        if (r->n_pairs < 1 || r->n_pairs > max) return s_why(why, cap, "result of %u pairs", r->n_pairs);
        const size_t rb = st_wire_result_row_bytes(r->result_format, s->n_embd);
        if (!rb) return s_why(why, cap, "unknown result format %u", r->result_format);
        size_t rows = r->n_pairs;
        if (r->result_format != ST_RESULT_PER_PAIR_F32) {
            if (r->n_rows < 1 || r->n_rows > max_rows || r->n_pairs > (uint64_t)r->n_rows * s->n_expert_used)
                return s_why(why, cap, "result of %u rows for %u pairs", r->n_rows, r->n_pairs);
            rows = r->n_rows;
        } else if (r->n_rows) {
            return s_why(why, cap, "per-pair result with %u rows", r->n_rows);
        }
        size_t want = rows * rb;
        if (frame_len != want) return s_why(why, cap, "result frame of %zu B (want %zu)", frame_len, want);
        return 0;
    }
    default: return s_why(why, cap, "unknown message type %d", (int)m->type);
    }
}

/* ---- the output head's messages ----------------------------------------- */

uint64_t st_wire_head_bytes(uint32_t type, uint32_t n_embd, uint32_t lo, uint32_t hi) {
    return hi > lo ? (uint64_t)(hi - lo) * s_row_bytes(type, n_embd) : 0;
}

static bool s_finite(float x) { return x - x == 0.0f; }

int st_wire_check_head(const st_wire_msg_t *m, uint32_t n_embd, const st_wire_head_assign_t *a, size_t frame_len,
                       char *why, size_t cap) {
    if (m->type == ST_MSG_HEAD_ASSIGN) a = &m->head_assign;
    if (!a) return s_why(why, cap, "%s before HEAD_ASSIGN", st_wire_type_name(m->type));
    if (n_embd < 1 || n_embd > ST_WIRE_MAX_EMBD) return s_why(why, cap, "n_embd %u", n_embd);
    if (a->n_vocab < 1 || a->n_vocab > ST_WIRE_MAX_VOCAB) return s_why(why, cap, "n_vocab %u", a->n_vocab);
    if (a->lo >= a->hi || a->hi > a->n_vocab)
        return s_why(why, cap, "head rows [%u, %u) of %u", a->lo, a->hi, a->n_vocab);
    if (!s_type_fits(a->type, n_embd)) return s_why(why, cap, "head type %u with n_embd %u", a->type, n_embd);
    if (a->n_slots < 1 || a->n_slots > ST_WIRE_MAX_HEAD_SLOTS || a->slot >= a->n_slots)
        return s_why(why, cap, "head slot %u of %u (at most %d)", a->slot, a->n_slots, ST_WIRE_MAX_HEAD_SLOTS);
    const uint64_t total = st_wire_head_bytes(a->type, n_embd, a->lo, a->hi);
    switch (m->type) {
    case ST_MSG_HEAD_ASSIGN:
        if (frame_len) return s_why(why, cap, "HEAD_ASSIGN with a %zu B frame", frame_len);
        return 0;
    case ST_MSG_HEAD_PUT: {
        const st_wire_head_put_t *p = &m->head_put;
        if (p->lo != a->lo) return s_why(why, cap, "a head chunk of the slice at %u sent to %u's", p->lo, a->lo);
        if (p->total != total)
            return s_why(why, cap, "head chunk total %llu (the slice is %llu B)", (unsigned long long)p->total,
                         (unsigned long long)total);
        if (frame_len == 0 || frame_len > ST_WIRE_MAX_CHUNK)
            return s_why(why, cap, "head chunk of %zu B (1..%u)", frame_len, ST_WIRE_MAX_CHUNK);
        if (p->offset >= total || frame_len > total - p->offset)
            return s_why(why, cap, "chunk [%llu, +%zu) outside the slice's %llu B", (unsigned long long)p->offset,
                         frame_len, (unsigned long long)total);
        return 0;
    }
    case ST_MSG_HEAD_COMPUTE: {
        const st_wire_head_compute_t *c = &m->head_compute;
        const uint64_t rows = a->hi - a->lo;
        if (c->lo != a->lo) return s_why(why, cap, "the head slice at %u computed with %u's", c->lo, a->lo);
        if (c->n_seq < 1 || c->n_seq > ST_WIRE_MAX_HEAD_SEQ) return s_why(why, cap, "%u sequences", c->n_seq);
        if (!c->full && (c->n_cand < 1 || c->n_cand > ST_WIRE_MAX_HEAD_CAND))
            return s_why(why, cap, "%u candidates (1..%d)", c->n_cand, ST_WIRE_MAX_HEAD_CAND);
        const uint64_t reply =
            c->full ? c->n_seq * rows * sizeof(float) : c->n_seq * (uint64_t)(c->n_cand < rows ? c->n_cand : rows) * 8u;
        if (reply > ST_WIRE_MAX_FRAME) return s_why(why, cap, "a reply of %llu B", (unsigned long long)reply);
        if (frame_len != (size_t)c->n_seq * n_embd * sizeof(float))
            return s_why(why, cap, "hidden-state frame of %zu B (want %zu)", frame_len,
                         (size_t)c->n_seq * n_embd * sizeof(float));
        if (c->full) return 0;
        uint64_t n_pen = 0;
        for (uint32_t s = 0; s < c->n_seq; s++) {
            const float rp = c->repeat_penalty[s], pp = c->presence_penalty[s], fp = c->frequency_penalty[s];
            if (!s_finite(c->temp[s]) || !(rp >= ST_WIRE_MIN_REPEAT_PENALTY && rp <= ST_WIRE_MAX_REPEAT_PENALTY) ||
                !(fabsf(pp) <= ST_WIRE_MAX_PENALTY) || !(fabsf(fp) <= ST_WIRE_MAX_PENALTY))
                return s_why(why, cap, "sequence %u: sampling parameters (temperature %g, penalties %g %g %g)", s,
                             (double)c->temp[s], (double)rp, (double)pp, (double)fp);
            n_pen += c->pen_n[s];
        }
        if (n_pen != c->n_pen)
            return s_why(why, cap, "%llu penalty entries listed, %u sent", (unsigned long long)n_pen, c->n_pen);
        for (uint32_t i = 0; i < c->n_pen; i++)
            if (c->pen_id[i] >= a->n_vocab || c->pen_count[i] < 1 || c->pen_count[i] > (1u << 20))
                return s_why(why, cap, "penalty entry %u: id %u, count %u", i, c->pen_id[i], c->pen_count[i]);
        return 0;
    }
    default: return s_why(why, cap, "%s is not a head request", st_wire_type_name(m->type));
    }
}

static int s_check_cands(const st_wire_head_result_t *r, uint32_t s, const uint8_t *c, uint32_t k,
                         const st_wire_head_assign_t *a, uint8_t *seen, char *why, size_t cap);

int st_wire_check_head_result(const st_wire_msg_t *m, const st_wire_head_compute_t *req, const st_wire_head_assign_t *a,
                              const uint8_t *frame, size_t frame_len, char *why, size_t cap) {
    if (m->type != ST_MSG_HEAD_RESULT) return s_why(why, cap, "%s is not a HEAD_RESULT", st_wire_type_name(m->type));
    const st_wire_head_result_t *r = &m->head_result;
    const uint32_t rows = a->hi - a->lo;
    if (r->n_seq != req->n_seq || r->full != req->full)
        return s_why(why, cap, "head result of %u sequences (full %d) for %u (full %d)", r->n_seq, r->full, req->n_seq,
                     req->full);
    if (r->full) {
        if (frame_len != (size_t)r->n_seq * rows * sizeof(float))
            return s_why(why, cap, "head logits frame of %zu B", frame_len);
        for (size_t i = 0; i < (size_t)r->n_seq * rows; i++) {
            float x;
            memcpy(&x, frame + i * 4, 4);
            if (!s_finite(x)) return s_why(why, cap, "head logit %zu is not finite", i);
        }
        return 0;
    }
    const uint32_t k = req->n_cand < rows ? req->n_cand : rows;
    if (r->n_cand != k) return s_why(why, cap, "%u head candidates (want %u)", r->n_cand, k);
    if (frame_len != (size_t)r->n_seq * k * 8u) return s_why(why, cap, "head candidate frame of %zu B", frame_len);
    uint8_t *seen = calloc((rows + 7u) / 8u, 1); /* ids of one sequence, each once */
    if (!seen) return s_why(why, cap, "no memory to check a head result");
    int rc = 0;
    for (uint32_t s = 0; s < r->n_seq && !rc; s++) {
        memset(seen, 0, (rows + 7u) / 8u);
        rc = s_check_cands(r, s, frame + (size_t)s * k * 8u, k, a, seen, why, cap);
    }
    free(seen);
    return rc;
}

/* sequence s's k candidates of a head result */
static int s_check_cands(const st_wire_head_result_t *r, uint32_t s, const uint8_t *c, uint32_t k,
                         const st_wire_head_assign_t *a, uint8_t *seen, char *why, size_t cap) {
    const uint32_t rows = a->hi - a->lo;
    uint32_t prev_id = 0;
    float prev = 0.0f;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t id;
        float l;
        memcpy(&id, c + 8u * i, 4);
        memcpy(&l, c + 8u * i + 4, 4);
        if (id < a->lo || id >= a->hi || !s_finite(l))
            return s_why(why, cap, "sequence %u, candidate %u: id %u (slice [%u, %u)), logit %g", s, i, id, a->lo,
                         a->hi, (double)l);
        if (i > 0 && (l > prev || (l == prev && id <= prev_id)))
            return s_why(why, cap, "sequence %u: candidates out of order at %u", s, i);
        if (i == 0 && l != r->max[s]) return s_why(why, cap, "sequence %u: maximum is not the best candidate", s);
        const uint32_t j = id - a->lo;
        if (seen[j / 8] & (1u << (j % 8))) return s_why(why, cap, "sequence %u: id %u twice", s, id);
        seen[j / 8] |= (uint8_t)(1u << (j % 8));
        prev_id = id, prev = l;
    }
    const double n = rows;
    if (!(r->sum[s] >= 1.0 && r->sum[s] <= n * (1 + 1e-6)) ||
        !(r->sum_temp[s] >= 1.0 && r->sum_temp[s] <= n * (1 + 1e-6)))
        return s_why(why, cap, "sequence %u: sums %g, %g for %u rows", s, r->sum[s], r->sum_temp[s], rows);
    return 0;
}

/* ---- sockets ------------------------------------------------------------- */

int st_wire_socket_limits(void *sock, int64_t max_frame, int hwm) {
    int linger = 0;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame) ||
        zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm) || zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger))
        return st_fail(ST_EIO, "zmq_setsockopt: %s", zmq_strerror(zmq_errno()));
    return 0;
}

static int s_errno_code(void) {
    int e = zmq_errno();
    return e == EAGAIN ? ST_ETIMEOUT : ST_EIO;
}

/* discards the rest of a multipart message */
static void s_drain(void *sock, zmq_msg_t *part) {
    int more = 1;
    size_t sz = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
    while (more) {
        if (zmq_msg_recv(part, sock, 0) < 0) break;
        more = zmq_msg_more(part);
    }
}

int st_wire_recv(void *sock, bool router, st_wire_rx_t *rx, char *why, size_t cap) {
    memset(&rx->msg, 0, sizeof rx->msg);
    rx->peer_len = 0;
    rx->has_frame = false;
    if (why && cap) why[0] = '\0';
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, sock, 0) < 0) {
        zmq_msg_close(&part);
        return s_errno_code();
    }
    /* from here on the message is consumed whole, whatever it holds */
    if (router) {
        size_t n = zmq_msg_size(&part);
        if (n > sizeof rx->peer) n = sizeof rx->peer; /* zmq identities are at most 255 B */
        memcpy(rx->peer, zmq_msg_data(&part), n);
        rx->peer_len = n;
        if (!zmq_msg_more(&part)) {
            zmq_msg_close(&part);
            return s_why(why, cap, "message without an envelope");
        }
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            return s_errno_code();
        }
    }
    int rc = st_wire_decode(zmq_msg_data(&part), zmq_msg_size(&part), &rx->msg, why, cap);
    if (rc == 0 && zmq_msg_more(&part)) {
        zmq_msg_init(&rx->frame);
        if (zmq_msg_recv(&rx->frame, sock, 0) < 0) {
            zmq_msg_close(&rx->frame);
            st_msg_type_t t = rx->msg.type;
            uint64_t id = rx->msg.request_id;
            st_wire_msg_clear(&rx->msg);
            rx->msg.type = t;
            rx->msg.request_id = id;
            zmq_msg_close(&part);
            return s_errno_code();
        }
        rx->has_frame = true;
        if (zmq_msg_more(&rx->frame)) rc = s_why(why, cap, "more than one raw frame");
    }
    s_drain(sock, &part);
    zmq_msg_close(&part);
    if (rc) {
        st_msg_type_t t = rx->msg.type;
        uint64_t id = rx->msg.request_id;
        uint32_t version = rx->msg.version;
        st_wire_rx_clear(rx);
        rx->msg.type = t;
        rx->msg.request_id = id;
        rx->msg.version = version;
        return ST_EPROTO;
    }
    return 0;
}

void st_wire_rx_clear(st_wire_rx_t *rx) {
    if (!rx) return;
    st_wire_msg_clear(&rx->msg);
    if (rx->has_frame) zmq_msg_close(&rx->frame);
    rx->has_frame = false;
}

static int s_send_env(void *sock, const void *peer, size_t peer_len, const st_wire_msg_t *m, bool more, int flags) {
    pb_build_t pb = {.block = NULL};
    int rc = s_strings_ok(m) ? s_build(m, &pb) : ST_EINVAL;
    if (rc) {
        free(pb.block);
        return st_fail(ST_EINVAL, "cannot encode a %s message", st_wire_type_name(m->type));
    }
    zmq_msg_t env;
    size_t n = st__envelope__get_packed_size(&pb.env);
    if (n > ST_WIRE_MAX_ENVELOPE || zmq_msg_init_size(&env, n)) {
        free(pb.block);
        return st_fail(ST_ENOMEM, "%s envelope of %zu B", st_wire_type_name(m->type), n);
    }
    st__envelope__pack(&pb.env, zmq_msg_data(&env));
    free(pb.block);
    if (peer && zmq_send(sock, peer, peer_len, ZMQ_SNDMORE | flags) < 0) {
        zmq_msg_close(&env);
        return s_errno_code();
    }
    /* once the first part is queued, zmq queues the rest of the message atomically */
    if (zmq_msg_send(&env, sock, (more ? ZMQ_SNDMORE : 0) | (peer ? 0 : flags)) < 0) {
        rc = s_errno_code();
        zmq_msg_close(&env);
        return rc;
    }
    return 0;
}

int st_wire_send(void *sock, const void *peer, size_t peer_len, const st_wire_msg_t *m, const void *frame,
                 size_t frame_len, int flags) {
    const bool more = frame != NULL || frame_len != 0;
    int rc = s_send_env(sock, peer, peer_len, m, more, flags);
    if (rc || !more) return rc;
    if (zmq_send(sock, frame, frame_len, 0) < 0) return s_errno_code();
    return 0;
}

int st_wire_send_zmsg(void *sock, const void *peer, size_t peer_len, const st_wire_msg_t *m, zmq_msg_t *frame,
                      int flags) {
    int rc = s_send_env(sock, peer, peer_len, m, frame != NULL, flags);
    if (!frame) return rc;
    if (rc) {
        zmq_msg_close(frame);
        return rc;
    }
    if (zmq_msg_send(frame, sock, 0) < 0) {
        rc = s_errno_code();
        zmq_msg_close(frame);
    }
    return rc;
}

int st_wire_send_error(void *sock, const void *peer, size_t peer_len, uint64_t request_id, int code, const char *fmt,
                       ...) {
    st_wire_msg_t m = {.type = ST_MSG_ERROR, .request_id = request_id};
    m.error.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m.error.message, sizeof m.error.message, fmt, ap);
    va_end(ap);
    return st_wire_send(sock, peer, peer_len, &m, NULL, 0, 0);
}
