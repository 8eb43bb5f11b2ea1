/* Tests of proto/wire: every message type round-trips, every truncation and
 * every malformed field is refused, requests are checked against the model's
 * shape, and the socket helpers keep a stream in sync after bad messages. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "st_kernels.h"
#include "st_log.h"
#include "wire.h"

/* A small Q4_0 model: 4 layers, n_embd 64, n_ff_exp 32, 8 experts, top 2. */
static st_wire_shape_t s_shape(void) {
    st_wire_shape_t s = {.n_layer = 4, .n_embd = 64, .n_ff_exp = 32, .n_expert = 8, .n_expert_used = 2};
    st_wire_shape_set_types(&s, ST_TYPE_Q4_0, ST_TYPE_Q4_0, ST_TYPE_Q4_0);
    for (int i = 0; i < ST_WIRE_HASH_BYTES; i++) s.model_hash[i] = (uint8_t)(i * 7 + 1);
    return s;
}

static st_wire_ref_t s_ref(uint32_t layer, uint32_t expert, bool hash) {
    st_wire_ref_t r = {.layer = layer, .expert = expert, .has_hash = hash};
    if (hash)
        for (int i = 0; i < ST_WIRE_HASH_BYTES; i++) r.hash[i] = (uint8_t)(layer * 31 + expert * 7 + i);
    return r;
}

/* One message of every type, with lists the caller's (static) arrays. */
static st_wire_ref_t g_refs[5], g_pins[2];
static uint32_t g_pref[3] = {1, 5, 7};
static int32_t g_tok[4] = {0, 0, 1, 2}, g_exp[4] = {1, 3, 3, 0};

/* The head: 1000 rows of n_embd 64 in Q4_0, this node holds [200, 450). */
static float g_temp[2] = {0.8f, 0.0f}, g_rp[2] = {1.1f, 1.0f}, g_pp[2] = {0.5f, 0.0f}, g_fp[2] = {0.25f, 0.0f};
static uint32_t g_pen_n[2] = {3, 0}, g_pen_id[3] = {5, 260, 999}, g_pen_count[3] = {1, 2, 7};
static float g_max[2] = {3.5f, -1.25f};
static double g_sum[2] = {17.25, 1.0}, g_sum_t[2] = {9.5, 1.0};

static st_wire_head_assign_t s_head(void) {
    st_wire_head_assign_t a = {.n_vocab = 1000, .type = ST_TYPE_Q4_0, .lo = 200, .hi = 450, .slot = 1, .n_slots = 3};
    memset(a.hash, 0x5c, ST_WIRE_HASH_BYTES);
    return a;
}

static st_wire_msg_t s_example(st_msg_type_t t) {
    for (int i = 0; i < 5; i++) g_refs[i] = s_ref((uint32_t)i % 4, (uint32_t)i, true);
    g_pins[0] = s_ref(1, 1, false);
    g_pins[1] = s_ref(2, 2, true);
    st_wire_msg_t m = {.type = t, .request_id = 0x123456789abcull + (uint64_t)t};
    switch (t) {
    case ST_MSG_HELLO:
        strcpy(m.hello.coordinator_id, "coord-1");
        m.hello.shape = s_shape();
        break;
    case ST_MSG_INVENTORY:
        strcpy(m.inventory.node_id, "node-a");
        m.inventory.mem_budget = 1536ull << 20;
        m.inventory.store_free = 1ull << 40;
        m.inventory.room = 1400ull << 20;
        m.inventory.expert_cost = 4096 + 64;
        m.inventory.threads = 4;
        m.inventory.n_held = 5;
        m.inventory.held = g_refs;
        break;
    case ST_MSG_ASSIGN:
        m.assign.shape = s_shape();
        m.assign.n_experts = 5;
        m.assign.experts = g_refs;
        m.assign.n_pinned = 2;
        m.assign.pinned = g_pins;
        break;
    case ST_MSG_ASSIGN_ACK:
        m.assign_ack.n_missing = 2;
        m.assign_ack.missing = g_pins;
        break;
    case ST_MSG_SHARD_PUT: {
        const st_wire_shape_t sh = s_shape();
        m.shard_put =
            (st_wire_shard_put_t){.layer = 3, .expert = 7, .offset = 100, .total = st_wire_expert_bytes(&sh, 3)};
        memset(m.shard_put.chunk_hash, 0xab, ST_WIRE_HASH_BYTES);
        break;
    }
    case ST_MSG_SHARD_ACK:
        m.shard_ack = (st_wire_shard_ack_t){.layer = 2, .expert = 6, .offset = 4096, .ok = true, .complete = true};
        break;
    case ST_MSG_EXPERT_PREFETCH:
        m.prefetch = (st_wire_prefetch_t){.layer = 3, .n_experts = 3, .experts = g_pref};
        break;
    case ST_MSG_EXPERT_COMPUTE:
        m.compute = (st_wire_compute_t){.layer = 1,
                                        .n_tokens = 3,
                                        .act_type = ST_TYPE_Q8_0,
                                        .n_pairs = 4,
                                        .pair_token = g_tok,
                                        .pair_expert = g_exp};
        break;
    case ST_MSG_EXPERT_RESULT:
        m.result = (st_wire_result_t){
            .n_pairs = 4, .compute_us = 1234567, .cache_hits = 3, .cache_misses = 1, .cache_prefetched = 2};
        break;
    case ST_MSG_HEARTBEAT: /* a node's answer: every reading, a negative temperature too */
        m.heartbeat.seq = 77;
        m.heartbeat.board = (st_wire_board_t){.rss = 1ull << 33,
                                              .rss_file = 5ull << 20,
                                              .cache_bytes = 3ull << 30,
                                              .has_cgroup = true,
                                              .cgroup_mem = (1ull << 33) + 12345,
                                              .cgroup_file = 777ull << 20,
                                              .cgroup_max = 2ull << 30,
                                              .has_temp = true,
                                              .temp_mc = -5250,
                                              .has_throttled = true,
                                              .throttled = 0x50005};
        break;
    case ST_MSG_ERROR:
        m.error.code = ST_EPROTO;
        strcpy(m.error.message, "bad header: layer 9 of 4");
        break;
    case ST_MSG_HEAD_ASSIGN: m.head_assign = s_head(); break;
    case ST_MSG_HEAD_PUT:
        m.head_put =
            (st_wire_head_put_t){.offset = 2048, .total = st_wire_head_bytes(ST_TYPE_Q4_0, 64, 200, 450), .lo = 200};
        memset(m.head_put.chunk_hash, 0x3e, ST_WIRE_HASH_BYTES);
        break;
    case ST_MSG_HEAD_ACK: m.head_ack = (st_wire_head_ack_t){.offset = 4096, .ok = true, .complete = false}; break;
    case ST_MSG_HEAD_COMPUTE:
        m.head_compute = (st_wire_head_compute_t){.n_seq = 2,
                                                  .n_cand = 40,
                                                  .lo = 200,
                                                  .temp = g_temp,
                                                  .repeat_penalty = g_rp,
                                                  .presence_penalty = g_pp,
                                                  .frequency_penalty = g_fp,
                                                  .pen_n = g_pen_n,
                                                  .n_pen = 3,
                                                  .pen_id = g_pen_id,
                                                  .pen_count = g_pen_count};
        break;
    case ST_MSG_HEAD_RESULT:
        m.head_result = (st_wire_head_result_t){
            .n_seq = 2, .n_cand = 3, .max = g_max, .sum = g_sum, .sum_temp = g_sum_t, .compute_us = 321};
        break;
    default: break;
    }
    return m;
}

static void s_assert_refs_eq(const st_wire_ref_t *a, const st_wire_ref_t *b, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(a[i].layer, b[i].layer);
        cr_assert_eq(a[i].expert, b[i].expert);
        cr_assert_eq(a[i].has_hash, b[i].has_hash);
        if (a[i].has_hash) cr_assert_arr_eq(a[i].hash, b[i].hash, ST_WIRE_HASH_BYTES);
    }
}

static void s_assert_shape_eq(const st_wire_shape_t *a, const st_wire_shape_t *b) {
    cr_assert_arr_eq(a->model_hash, b->model_hash, ST_WIRE_HASH_BYTES);
    cr_assert(a->n_layer == b->n_layer && a->n_embd == b->n_embd && a->n_ff_exp == b->n_ff_exp &&
              a->n_expert == b->n_expert && a->n_expert_used == b->n_expert_used &&
              a->down_transposed == b->down_transposed);
    cr_assert_arr_eq(a->gate_type, b->gate_type, a->n_layer);
    cr_assert_arr_eq(a->up_type, b->up_type, a->n_layer);
    cr_assert_arr_eq(a->down_type, b->down_type, a->n_layer);
    cr_assert(st_wire_shape_eq(a, b));
}

static void s_assert_msg_eq(const st_wire_msg_t *a, const st_wire_msg_t *b) {
    cr_assert_eq(a->type, b->type);
    cr_assert_eq(a->request_id, b->request_id);
    switch (a->type) {
    case ST_MSG_HELLO:
        cr_assert_str_eq(a->hello.coordinator_id, b->hello.coordinator_id);
        s_assert_shape_eq(&a->hello.shape, &b->hello.shape);
        break;
    case ST_MSG_INVENTORY:
        cr_assert_str_eq(a->inventory.node_id, b->inventory.node_id);
        cr_assert(a->inventory.mem_budget == b->inventory.mem_budget &&
                  a->inventory.store_free == b->inventory.store_free && a->inventory.threads == b->inventory.threads);
        cr_assert(a->inventory.room == b->inventory.room && a->inventory.expert_cost == b->inventory.expert_cost);
        cr_assert_eq(a->inventory.n_held, b->inventory.n_held);
        s_assert_refs_eq(a->inventory.held, b->inventory.held, a->inventory.n_held);
        break;
    case ST_MSG_ASSIGN:
        s_assert_shape_eq(&a->assign.shape, &b->assign.shape);
        cr_assert(a->assign.n_experts == b->assign.n_experts && a->assign.n_pinned == b->assign.n_pinned);
        s_assert_refs_eq(a->assign.experts, b->assign.experts, a->assign.n_experts);
        s_assert_refs_eq(a->assign.pinned, b->assign.pinned, a->assign.n_pinned);
        break;
    case ST_MSG_ASSIGN_ACK:
        cr_assert_eq(a->assign_ack.n_missing, b->assign_ack.n_missing);
        s_assert_refs_eq(a->assign_ack.missing, b->assign_ack.missing, a->assign_ack.n_missing);
        break;
    case ST_MSG_SHARD_PUT:
        cr_assert(a->shard_put.layer == b->shard_put.layer && a->shard_put.expert == b->shard_put.expert &&
                  a->shard_put.offset == b->shard_put.offset && a->shard_put.total == b->shard_put.total);
        cr_assert_arr_eq(a->shard_put.chunk_hash, b->shard_put.chunk_hash, ST_WIRE_HASH_BYTES);
        break;
    case ST_MSG_SHARD_ACK: cr_assert_arr_eq(&a->shard_ack, &b->shard_ack, sizeof a->shard_ack); break;
    case ST_MSG_EXPERT_PREFETCH:
        cr_assert_eq(a->prefetch.layer, b->prefetch.layer);
        cr_assert_eq(a->prefetch.n_experts, b->prefetch.n_experts);
        cr_assert_arr_eq(a->prefetch.experts, b->prefetch.experts, a->prefetch.n_experts * sizeof(uint32_t));
        break;
    case ST_MSG_EXPERT_COMPUTE:
        cr_assert(a->compute.layer == b->compute.layer && a->compute.n_tokens == b->compute.n_tokens &&
                  a->compute.act_type == b->compute.act_type && a->compute.n_pairs == b->compute.n_pairs);
        cr_assert_arr_eq(a->compute.pair_token, b->compute.pair_token, a->compute.n_pairs * sizeof(int32_t));
        cr_assert_arr_eq(a->compute.pair_expert, b->compute.pair_expert, a->compute.n_pairs * sizeof(int32_t));
        cr_assert_eq(a->compute.result_format, b->compute.result_format);
        cr_assert_eq(!a->compute.pair_weight, !b->compute.pair_weight);
        if (a->compute.pair_weight)
            cr_assert_arr_eq(a->compute.pair_weight, b->compute.pair_weight, a->compute.n_pairs * sizeof(float));
        break;
    case ST_MSG_EXPERT_RESULT: cr_assert_arr_eq(&a->result, &b->result, sizeof a->result); break;
    case ST_MSG_HEARTBEAT: {
        const st_wire_board_t *x = &a->heartbeat.board, *y = &b->heartbeat.board;
        cr_assert_eq(a->heartbeat.seq, b->heartbeat.seq);
        cr_assert(x->rss == y->rss && x->rss_file == y->rss_file && x->cache_bytes == y->cache_bytes);
        cr_assert(x->has_cgroup == y->has_cgroup && x->cgroup_mem == y->cgroup_mem &&
                  x->cgroup_file == y->cgroup_file && x->cgroup_max == y->cgroup_max);
        cr_assert(x->has_temp == y->has_temp && x->temp_mc == y->temp_mc);
        cr_assert(x->has_throttled == y->has_throttled && x->throttled == y->throttled);
        break;
    }
    case ST_MSG_ERROR:
        cr_assert_eq(a->error.code, b->error.code);
        cr_assert_str_eq(a->error.message, b->error.message);
        break;
    case ST_MSG_HEAD_ASSIGN: cr_assert_arr_eq(&a->head_assign, &b->head_assign, sizeof a->head_assign); break;
    case ST_MSG_HEAD_PUT: cr_assert_arr_eq(&a->head_put, &b->head_put, sizeof a->head_put); break;
    case ST_MSG_HEAD_ACK: cr_assert_arr_eq(&a->head_ack, &b->head_ack, sizeof a->head_ack); break;
    case ST_MSG_HEAD_COMPUTE: {
        const st_wire_head_compute_t *x = &a->head_compute, *y = &b->head_compute;
        cr_assert(x->n_seq == y->n_seq && x->n_cand == y->n_cand && x->full == y->full && x->n_pen == y->n_pen &&
                  x->lo == y->lo);
        cr_assert_arr_eq(x->temp, y->temp, x->n_seq * sizeof(float));
        cr_assert_arr_eq(x->repeat_penalty, y->repeat_penalty, x->n_seq * sizeof(float));
        cr_assert_arr_eq(x->presence_penalty, y->presence_penalty, x->n_seq * sizeof(float));
        cr_assert_arr_eq(x->frequency_penalty, y->frequency_penalty, x->n_seq * sizeof(float));
        cr_assert_arr_eq(x->pen_n, y->pen_n, x->n_seq * sizeof(uint32_t));
        cr_assert_arr_eq(x->pen_id, y->pen_id, x->n_pen * sizeof(uint32_t));
        cr_assert_arr_eq(x->pen_count, y->pen_count, x->n_pen * sizeof(uint32_t));
        break;
    }
    case ST_MSG_HEAD_RESULT: {
        const st_wire_head_result_t *x = &a->head_result, *y = &b->head_result;
        cr_assert(x->n_seq == y->n_seq && x->n_cand == y->n_cand && x->full == y->full &&
                  x->compute_us == y->compute_us);
        cr_assert_arr_eq(x->max, y->max, x->n_seq * sizeof(float));
        cr_assert_arr_eq(x->sum, y->sum, x->n_seq * sizeof(double));
        cr_assert_arr_eq(x->sum_temp, y->sum_temp, x->n_seq * sizeof(double));
        break;
    }
    default: cr_assert_fail("type %d", a->type);
    }
}

static size_t s_encode(const st_wire_msg_t *m, uint8_t *buf, size_t cap) {
    size_t len = 0;
    cr_assert_eq(st_wire_encode(m, buf, cap, &len), 0, "encode %s", st_wire_type_name(m->type));
    cr_assert_eq(len, st_wire_encoded_size(m));
    return len;
}

static void setup(void) { st_log_set_level(ST_LOG_ERROR); }
TestSuite(wire, .init = setup);

Test(wire, every_type_round_trips) {
    uint8_t buf[4096];
    for (int t = ST_MSG_HELLO; t < ST_MSG_COUNT; t++) {
        st_wire_msg_t m = s_example((st_msg_type_t)t), d;
        size_t len = s_encode(&m, buf, sizeof buf);
        char why[256];
        cr_assert_eq(st_wire_decode(buf, len, &d, why, sizeof why), 0, "%s: %s", st_wire_type_name(t), why);
        s_assert_msg_eq(&m, &d);
        st_wire_msg_clear(&d);
        cr_assert_eq(d.type, ST_MSG_NONE); /* clear zeroes */
        st_wire_msg_clear(&d);             /* and is safe twice */
    }
}

Test(wire, empty_lists_round_trip) {
    uint8_t buf[512];
    st_wire_msg_t m = {.type = ST_MSG_ASSIGN_ACK, .request_id = 5}, d;
    size_t len = s_encode(&m, buf, sizeof buf);
    cr_assert_eq(st_wire_decode(buf, len, &d, NULL, 0), 0);
    cr_assert_eq(d.assign_ack.n_missing, 0);
    st_wire_msg_clear(&d);
}

Test(wire, every_truncation_is_refused) {
    uint8_t buf[4096];
    for (int t = ST_MSG_HELLO; t < ST_MSG_COUNT; t++) {
        st_wire_msg_t m = s_example((st_msg_type_t)t), d;
        size_t len = s_encode(&m, buf, sizeof buf);
        for (size_t n = 0; n < len; n++) {
            uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees any read past the end */
            memcpy(copy, buf, n);
            int rc = st_wire_decode(copy, n, &d, NULL, 0);
            cr_assert_eq(rc, ST_EPROTO, "%s truncated to %zu of %zu B was accepted", st_wire_type_name(t), n, len);
            free(copy);
        }
    }
}

Test(wire, bad_version_is_refused_with_the_request_id) {
    uint8_t buf[512];
    st_wire_msg_t m = s_example(ST_MSG_HELLO), d;
    size_t len = s_encode(&m, buf, sizeof buf);
    cr_assert_eq(buf[0], 0x08); /* field 1 (version), varint */
    cr_assert_eq(buf[1], ST_WIRE_VERSION);
    buf[1] = ST_WIRE_VERSION + 1;
    char why[256];
    cr_assert_eq(st_wire_decode(buf, len, &d, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "version"), "%s", why);
    cr_assert_eq(d.type, ST_MSG_HELLO);
    cr_assert_eq(d.request_id, m.request_id);
}

Test(wire, garbage_and_oversized_envelopes_are_refused) {
    uint8_t junk[64];
    st_wire_msg_t d;
    for (int seed = 0; seed < 2000; seed++) {
        srand((unsigned)seed);
        size_t n = (size_t)(rand() % (int)sizeof junk);
        for (size_t i = 0; i < n; i++) junk[i] = (uint8_t)rand();
        if (st_wire_decode(junk, n, &d, NULL, 0) == 0) st_wire_msg_clear(&d); /* must not crash or leak */
    }
    uint8_t *big = calloc(1, ST_WIRE_MAX_ENVELOPE + 1);
    char why[256];
    cr_assert_eq(st_wire_decode(big, ST_WIRE_MAX_ENVELOPE + 1, &d, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "at most"), "%s", why);
    free(big);
    cr_assert_eq(st_wire_decode(junk, 0, &d, NULL, 0), ST_EPROTO);
}

/* ---- hand-made envelopes: fields the encoder would never produce ---------- */

typedef struct {
    uint8_t b[1 << 16];
    size_t n;
} pb_t;

static void pb_varint(pb_t *p, uint64_t v) {
    do {
        p->b[p->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}
static void pb_uint(pb_t *p, int field, uint64_t v) {
    pb_varint(p, (uint64_t)field << 3);
    pb_varint(p, v);
}
static void pb_bytes(pb_t *p, int field, const void *d, size_t n) {
    pb_varint(p, (uint64_t)field << 3 | 2);
    pb_varint(p, n);
    memcpy(p->b + p->n, d, n);
    p->n += n;
}
/* Envelope {version, type, request_id, body field = inner} */
static size_t pb_envelope(uint8_t *out, uint32_t version, int type, int body_field, const pb_t *inner) {
    pb_t *e = calloc(1, sizeof *e);
    pb_uint(e, 1, version);
    pb_uint(e, 2, (uint64_t)type);
    pb_uint(e, 3, 42);
    if (body_field) pb_bytes(e, body_field, inner->b, inner->n);
    memcpy(out, e->b, e->n);
    size_t n = e->n;
    free(e);
    return n;
}

static int s_decode_raw(const uint8_t *b, size_t n, char *why) {
    st_wire_msg_t d;
    int rc = st_wire_decode(b, n, &d, why, 256);
    if (rc == 0) st_wire_msg_clear(&d);
    return rc;
}

Test(wire, body_must_match_type) {
    static pb_t inner;
    static uint8_t out[1 << 16];
    char why[256];
    inner.n = 0;
    pb_uint(&inner, 1, 7); /* Heartbeat{seq=7} */
    cr_assert_eq(s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, ST_MSG_HEARTBEAT, 19, &inner), why), 0, "%s", why);
    cr_assert_eq(s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, ST_MSG_HELLO, 19, &inner), why), ST_EPROTO);
    cr_assert_eq(s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, ST_MSG_HEARTBEAT, 0, &inner), why), ST_EPROTO);
    cr_assert_eq(s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, 99, 19, &inner), why), ST_EPROTO);
    cr_assert_eq(s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, 0, 0, &inner), why), ST_EPROTO);
    cr_assert_eq(s_decode_raw(out, pb_envelope(out, 0, ST_MSG_HEARTBEAT, 19, &inner), why), ST_EPROTO);
}

Test(wire, hashes_must_be_32_bytes) {
    static pb_t inner;
    static uint8_t out[1 << 16];
    char why[256];
    uint8_t h[33] = {0};
    for (size_t len = 0; len <= 33; len++) {
        inner.n = 0; /* ShardPut{layer 1, expert 1, offset 0, total 10, chunk_hash} */
        pb_uint(&inner, 1, 1);
        pb_uint(&inner, 2, 1);
        pb_uint(&inner, 4, 10);
        pb_bytes(&inner, 5, h, len);
        int rc = s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, ST_MSG_SHARD_PUT, 14, &inner), why);
        cr_assert_eq(rc, len == 32 ? 0 : ST_EPROTO, "hash of %zu B: %d (%s)", len, rc, why);
    }
}

Test(wire, pair_lists_must_have_equal_length) {
    static pb_t inner;
    static uint8_t out[1 << 16];
    char why[256];
    inner.n = 0; /* ExpertCompute{layer 0, n_tokens 1, act Q8_0, tokens [0,0], experts [1]} */
    pb_uint(&inner, 2, 1);
    pb_uint(&inner, 3, ST_TYPE_Q8_0);
    uint8_t two_zeros[2] = {0, 0}, one[1] = {1};
    pb_bytes(&inner, 4, two_zeros, 2);
    pb_bytes(&inner, 5, one, 1);
    cr_assert_eq(s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, ST_MSG_EXPERT_COMPUTE, 17, &inner), why),
                 ST_EPROTO);
    cr_assert(strstr(why, "pair"), "%s", why);
}

/* ModelShape{hash, n_layer, 512, 256, 8, 2, per-layer types (packed)} with
 * n_gate/n_up/n_down entries of the given ids, in a HELLO (or a version-1
 * envelope when version says so). */
static size_t pb_hello(uint8_t *out, uint32_t version, uint32_t n_layer, const uint32_t *ids, size_t n_gate,
                       size_t n_up, size_t n_down, bool old_fields) {
    static pb_t shape, hello, packed;
    uint8_t hash[ST_WIRE_HASH_BYTES] = {1};
    shape.n = 0;
    pb_bytes(&shape, 1, hash, sizeof hash);
    pb_uint(&shape, 2, n_layer);
    pb_uint(&shape, 3, 512);
    pb_uint(&shape, 4, 256);
    pb_uint(&shape, 5, 8);
    pb_uint(&shape, 6, 2);
    if (old_fields) { /* version 1's one gate/up/down type and expert_bytes */
        pb_uint(&shape, 7, ST_TYPE_Q4_K);
        pb_uint(&shape, 8, ST_TYPE_Q4_K);
        pb_uint(&shape, 9, ST_TYPE_Q4_K);
        pb_uint(&shape, 11, 3 * 256 * 144 * 2);
    }
    const size_t n[3] = {n_gate, n_up, n_down};
    for (int f = 0; f < 3; f++) {
        packed.n = 0;
        for (size_t i = 0; i < n[f]; i++) pb_varint(&packed, ids[i * 3 + (size_t)f]);
        if (n[f]) pb_bytes(&shape, 12 + f, packed.b, packed.n);
    }
    hello.n = 0;
    pb_bytes(&hello, 1, "coord", 5);
    pb_bytes(&hello, 2, shape.b, shape.n);
    return pb_envelope(out, version, ST_MSG_HELLO, 10, &hello);
}

Test(wire, per_layer_type_lists_are_checked) {
    static uint8_t out[1 << 16];
    static uint32_t ids[3 * (ST_WIRE_MAX_LAYERS + 1)];
    char why[256];
    for (int l = 0; l < ST_WIRE_MAX_LAYERS + 1; l++)
        ids[3 * l] = ids[3 * l + 1] = ST_TYPE_Q4_K, ids[3 * l + 2] = l % 3 ? ST_TYPE_Q4_K : ST_TYPE_Q6_K;
    /* well formed: 4 layers, down Q6_K in layers 0 and 3 */
    st_wire_msg_t d;
    size_t n = pb_hello(out, ST_WIRE_VERSION, 4, ids, 4, 4, 4, false);
    cr_assert_eq(st_wire_decode(out, n, &d, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&d, NULL, 0, why, sizeof why), 0, "%s", why);
    cr_assert_eq(d.hello.shape.down_type[0], ST_TYPE_Q6_K);
    cr_assert_eq(d.hello.shape.down_type[1], ST_TYPE_Q4_K);
    cr_assert_eq(d.hello.shape.down_type[3], ST_TYPE_Q6_K);
    st_wire_msg_clear(&d);
    /* counts that are not n_layer, in each list */
    const size_t bad_counts[][3] = {{3, 4, 4}, {4, 5, 4}, {4, 4, 0}, {0, 0, 0}, {5, 5, 5}};
    for (size_t i = 0; i < sizeof bad_counts / sizeof bad_counts[0]; i++) {
        n = pb_hello(out, ST_WIRE_VERSION, 4, ids, bad_counts[i][0], bad_counts[i][1], bad_counts[i][2], false);
        cr_assert_eq(s_decode_raw(out, n, why), ST_EPROTO, "counts %zu/%zu/%zu", bad_counts[i][0], bad_counts[i][1],
                     bad_counts[i][2]);
        cr_assert(strstr(why, "per-layer"), "%s", why);
    }
    /* more layers than the limit, with as many types */
    n = pb_hello(out, ST_WIRE_VERSION, ST_WIRE_MAX_LAYERS + 1, ids, ST_WIRE_MAX_LAYERS + 1, ST_WIRE_MAX_LAYERS + 1,
                 ST_WIRE_MAX_LAYERS + 1, false);
    cr_assert_eq(s_decode_raw(out, n, why), ST_EPROTO);
    cr_assert(strstr(why, "n_layer"), "%s", why);
    /* type ids out of any table (decode), and unsupported or mismatched ones (check) */
    const uint32_t bad_ids[] = {ST_TYPE_COUNT, 255, 256, 1u << 31, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++)
        for (int f = 0; f < 3; f++) {
            static uint32_t t[12];
            memcpy(t, ids, sizeof t);
            t[2 * 3 + f] = bad_ids[i];
            n = pb_hello(out, ST_WIRE_VERSION, 4, t, 4, 4, 4, false);
            cr_assert_eq(s_decode_raw(out, n, why), ST_EPROTO, "id %u in list %d", bad_ids[i], f);
            cr_assert(strstr(why, "layer 2"), "%s", why);
        }
    static uint32_t t[12];
    memcpy(t, ids, sizeof t);
    t[1 * 3 + 1] = ST_TYPE_Q4_1; /* layer 1: gate takes Q8_K, up Q8_1 */
    n = pb_hello(out, ST_WIRE_VERSION, 4, t, 4, 4, 4, false);
    cr_assert_eq(st_wire_decode(out, n, &d, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&d, NULL, 0, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "layer 1"), "%s", why);
    st_wire_msg_clear(&d);
    memcpy(t, ids, sizeof t);
    t[3 * 3 + 0] = ST_TYPE_Q8_K; /* an activation format, not a weight type */
    n = pb_hello(out, ST_WIRE_VERSION, 4, t, 4, 4, 4, false);
    cr_assert_eq(st_wire_decode(out, n, &d, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&d, NULL, 0, why, sizeof why), ST_EPROTO);
    st_wire_msg_clear(&d);
    /* a version-1 peer (one type per matrix for the whole model) is refused by its version */
    n = pb_hello(out, 1, 4, ids, 0, 0, 0, true);
    cr_assert_eq(s_decode_raw(out, n, why), ST_EPROTO);
    cr_assert(strstr(why, "version 1"), "%s", why);
}

Test(wire, oversized_counts_are_refused) {
    static pb_t inner;
    static uint8_t out[1 << 17];
    char why[256];
    /* a prefetch of more experts than any model has */
    inner.n = 0;
    pb_uint(&inner, 1, 0);
    uint8_t ids[ST_WIRE_MAX_EXPERTS + 1];
    memset(ids, 1, sizeof ids);
    pb_bytes(&inner, 2, ids, sizeof ids); /* packed varints: 1025 ids */
    cr_assert_eq(s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, ST_MSG_EXPERT_PREFETCH, 16, &inner), why),
                 ST_EPROTO);
    /* a string longer than an id */
    inner.n = 0;
    char id[ST_WIRE_MAX_ID + 2];
    memset(id, 'x', sizeof id);
    pb_bytes(&inner, 1, id, sizeof id);
    cr_assert_eq(s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, ST_MSG_INVENTORY, 11, &inner), why), ST_EPROTO);
    cr_assert(strstr(why, "node id"), "%s", why);
    /* the encoder refuses what the decoder would refuse */
    st_wire_msg_t m = s_example(ST_MSG_EXPERT_COMPUTE);
    m.compute.n_pairs = ST_WIRE_MAX_TOKENS * ST_WIRE_MAX_EXPERT_USED + 1;
    uint8_t buf[64];
    size_t len;
    cr_assert_eq(st_wire_encode(&m, buf, sizeof buf, &len), ST_EINVAL);
    m = s_example(ST_MSG_INVENTORY);
    cr_assert_eq(st_wire_encode(&m, buf, 8, &len), ST_ERANGE); /* buffer too small */
}

/* ---- checks against the shape ---------------------------------------------- */

Test(wire, shape_checks) {
    st_wire_shape_t s = s_shape(), b;
    char why[256];
    cr_assert_eq(st_wire_check_shape(&s, why, sizeof why), 0, "%s", why);
    uint64_t sizes[3];
    cr_assert_eq(st_wire_matrix_bytes(&s, 3, sizes), 32 * 36 * 2 + 64 * 18); /* Q4_0: 18 B per 32 */
    cr_assert_eq(st_wire_matrix_bytes(&s, 4, sizes), 0);                     /* no layer 4 */
    cr_assert_eq(sizes[0] + sizes[1] + sizes[2], 0);
    cr_assert_eq(st_wire_act_type(&s, 4), -1);
    cr_assert_eq(st_wire_act_row_bytes(&s, 4), 0);
    b = s, b.n_expert_used = 9;
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), ST_EPROTO);
    b = s, b.n_layer = 0;
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), ST_EPROTO);
    b = s, b.n_embd = 48; /* not whole Q4_0 blocks */
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), ST_EPROTO);
    b = s, b.gate_type[0] = 99;
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), ST_EPROTO);
    b = s, b.down_type[3] = 99; /* the last layer is checked too */
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "layer 3"), "%s", why);
    b = s, b.up_type[2] = ST_TYPE_F32; /* gate Q8_0 input, up F32 input */
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), ST_EPROTO);
    b = s, b.n_expert = ST_WIRE_MAX_EXPERTS + 1;
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), ST_EPROTO);
    /* F32 experts: activations travel as F32 */
    b = s, st_wire_shape_set_types(&b, ST_TYPE_F32, ST_TYPE_F32, ST_TYPE_F32);
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_act_row_bytes(&b, 0), 64 * 4);
    cr_assert_eq(st_wire_max_tokens(&b), ST_WIRE_MAX_TOKENS);
    cr_assert_eq(st_wire_max_result_frame(&b), (uint64_t)ST_WIRE_MAX_TOKENS * 2 * 64 * 4);
}

Test(wire, k_quant_and_q8_1_shapes) {
    /* a Q4_K_M-style expert (Q4_K gate/up, Q6_K down): activations travel as Q8_K */
    st_wire_shape_t s = s_shape();
    s.n_embd = 512, s.n_ff_exp = 256;
    st_wire_shape_set_types(&s, ST_TYPE_Q4_K, ST_TYPE_Q4_K, ST_TYPE_Q6_K);
    char why[256];
    cr_assert_eq(st_wire_check_shape(&s, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_expert_bytes(&s, 0), 2 * 256 * 2 * 144 + 512 * 210);
    cr_assert_eq(st_wire_act_row_bytes(&s, 0), 2 * sizeof(st_block_q8_k));
    st_wire_shape_t b = s;
    b.n_embd = 384; /* 1.5 super-blocks */
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), ST_EPROTO);
    b = s, b.up_type[1] = ST_TYPE_Q4_1; /* Q8_K vs Q8_1 input in layer 1 */
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), ST_EPROTO);
    /* Q5_1 experts take Q8_1 rows: 36 B per 32 */
    b = s, st_wire_shape_set_types(&b, ST_TYPE_Q5_1, ST_TYPE_Q5_1, ST_TYPE_Q5_0);
    cr_assert_eq(st_wire_check_shape(&b, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_act_row_bytes(&b, 0), 512 / 32 * 36);
}

/* llama-quantize's mixes: Q4_K_M gives some layers' down Q6_K, Q3_K_M some
 * layers' gate/up Q3_K and down Q4_K/Q5_K; a Q4_0 layer beside K-quant
 * layers takes Q8_0 rows while the others take Q8_K. */
Test(wire, per_layer_types) {
    st_wire_shape_t s = s_shape();
    s.n_embd = 512, s.n_ff_exp = 256;
    st_wire_shape_set_types(&s, ST_TYPE_Q4_K, ST_TYPE_Q4_K, ST_TYPE_Q4_K);
    s.down_type[0] = s.down_type[3] = ST_TYPE_Q6_K;
    s.gate_type[2] = s.up_type[2] = ST_TYPE_Q4_0, s.down_type[2] = ST_TYPE_Q8_0;
    char why[256];
    cr_assert_eq(st_wire_check_shape(&s, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_expert_bytes(&s, 0), 2 * 256 * 2 * 144 + 512 * 210);
    cr_assert_eq(st_wire_expert_bytes(&s, 1), 2 * 256 * 2 * 144 + 512 * 144);
    cr_assert_eq(st_wire_expert_bytes(&s, 2), 2 * 256 * 16 * 18 + 512 * 8 * 34);
    cr_assert_eq(st_wire_max_expert_bytes(&s), st_wire_expert_bytes(&s, 2)); /* Q4_0 + Q8_0 is the widest */
    cr_assert_eq(st_wire_act_type(&s, 1), ST_TYPE_Q8_K);
    cr_assert_eq(st_wire_act_type(&s, 2), ST_TYPE_Q8_0);
    cr_assert_eq(st_wire_act_row_bytes(&s, 2), 16 * 34);
    cr_assert_eq(st_wire_max_act_row_bytes(&s), 2 * sizeof(st_block_q8_k)); /* 584 B > 16 Q8_0 blocks of 34 */
    /* round trip of the per-layer types in a HELLO */
    st_wire_msg_t m = {.type = ST_MSG_HELLO, .request_id = 3}, d;
    strcpy(m.hello.coordinator_id, "c");
    m.hello.shape = s;
    static uint8_t buf[1 << 16];
    size_t len;
    cr_assert_eq(st_wire_encode(&m, buf, sizeof buf, &len), 0);
    cr_assert_eq(st_wire_decode(buf, len, &d, why, sizeof why), 0, "%s", why);
    s_assert_shape_eq(&s, &d.hello.shape);
    cr_assert_eq(st_wire_check(&d, &s, 0, why, sizeof why), 0, "%s", why);
    st_wire_shape_t other = s;
    other.down_type[1] = ST_TYPE_Q6_K; /* a node expecting another mix refuses this one */
    cr_assert_eq(st_wire_check(&d, &other, 0, why, sizeof why), ST_EPROTO);
    cr_assert(!st_wire_shape_eq(&s, &other));
    st_wire_msg_clear(&d);
    /* compute: each layer's own activation format and row size */
    int32_t tok[2] = {0, 0}, ids[2] = {0, 1};
    m = (st_wire_msg_t){.type = ST_MSG_EXPERT_COMPUTE};
    m.compute = (st_wire_compute_t){
        .layer = 2, .n_tokens = 1, .act_type = ST_TYPE_Q8_0, .n_pairs = 2, .pair_token = tok, .pair_expert = ids};
    cr_assert_eq(st_wire_check(&m, &s, 16 * 34, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&m, &s, 2 * 292, why, sizeof why), ST_EPROTO);
    m.compute.layer = 1;
    cr_assert_eq(st_wire_check(&m, &s, 16 * 34, why, sizeof why), ST_EPROTO); /* layer 1 takes Q8_K */
    m.compute.act_type = ST_TYPE_Q8_K;
    cr_assert_eq(st_wire_check(&m, &s, 2 * 292, why, sizeof why), 0, "%s", why);
    /* shard totals are the layer's */
    m = (st_wire_msg_t){.type = ST_MSG_SHARD_PUT};
    m.shard_put = (st_wire_shard_put_t){.layer = 1, .total = st_wire_expert_bytes(&s, 1)};
    cr_assert_eq(st_wire_check(&m, &s, 100, why, sizeof why), 0, "%s", why);
    m.shard_put.total = st_wire_expert_bytes(&s, 0);
    cr_assert_eq(st_wire_check(&m, &s, 100, why, sizeof why), ST_EPROTO);
}

Test(wire, compute_checked_against_shape) {
    st_wire_shape_t s = s_shape();
    char why[256];
    const size_t frame = 3 * st_row_size(ST_TYPE_Q8_0, 64);
    st_wire_msg_t m = s_example(ST_MSG_EXPERT_COMPUTE);
    cr_assert_eq(st_wire_check(&m, &s, frame, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&m, &s, frame - 1, why, sizeof why), ST_EPROTO);
    cr_assert_eq(st_wire_check(&m, &s, frame + 1, why, sizeof why), ST_EPROTO);
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), ST_EPROTO);
    cr_assert_eq(st_wire_check(&m, NULL, frame, why, sizeof why), ST_EPROTO); /* no shape yet */
    st_wire_msg_t b = m;
    b.compute.layer = 4;
    cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), ST_EPROTO);
    b = m, b.compute.act_type = ST_TYPE_F32;
    cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "Q8_0"), "%s", why);
    b = m, b.compute.n_tokens = 0;
    cr_assert_eq(st_wire_check(&b, &s, 0, why, sizeof why), ST_EPROTO);
    b = m, b.compute.n_tokens = ST_WIRE_MAX_TOKENS + 1;
    cr_assert_eq(st_wire_check(&b, &s, (ST_WIRE_MAX_TOKENS + 1) * st_row_size(ST_TYPE_Q8_0, 64), why, sizeof why),
                 ST_EPROTO);
    b = m, b.compute.n_pairs = 0;
    cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), ST_EPROTO);
    b = m, b.compute.n_tokens = 1; /* 4 pairs > 1 token x top-2; tokens 1, 2 out of range too */
    cr_assert_eq(st_wire_check(&b, &s, frame / 3, why, sizeof why), ST_EPROTO);
    int32_t bad_tok[4] = {0, 0, 1, 3}, bad_exp[4] = {1, 3, 8, 0};
    b = m, b.compute.pair_token = bad_tok;
    cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), ST_EPROTO);
    b = m, b.compute.pair_expert = bad_exp;
    cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), ST_EPROTO);
}

/* Compact results: weights travel with a PER_TOKEN request, and the reply is n_rows partial sums. */
static float g_w[4] = {0.75f, 0.25f, 1.0f, 0.5f};

static st_wire_msg_t s_compact(uint32_t format) {
    st_wire_msg_t m = s_example(ST_MSG_EXPERT_COMPUTE);
    m.compute.result_format = format;
    m.compute.pair_weight = g_w;
    return m;
}

Test(wire, compact_requests_and_results_round_trip) {
    uint8_t buf[4096];
    char why[256];
    for (uint32_t f = ST_RESULT_PER_TOKEN_F32; f < ST_RESULT_FORMAT_COUNT; f++) {
        st_wire_msg_t m = s_compact(f), d;
        cr_assert_eq(st_wire_decode(buf, s_encode(&m, buf, sizeof buf), &d, why, sizeof why), 0, "%s", why);
        s_assert_msg_eq(&m, &d);
        st_wire_msg_clear(&d);
        m = s_example(ST_MSG_EXPERT_RESULT);
        m.result.result_format = f, m.result.n_rows = 3;
        cr_assert_eq(st_wire_decode(buf, s_encode(&m, buf, sizeof buf), &d, why, sizeof why), 0, "%s", why);
        s_assert_msg_eq(&m, &d);
        st_wire_msg_clear(&d);
    }
    st_wire_msg_t m = s_compact(ST_RESULT_PER_TOKEN_F16);
    m.compute.pair_weight = NULL; /* a PER_TOKEN request needs its weights */
    size_t len;
    cr_assert_eq(st_wire_encode(&m, buf, sizeof buf, &len), ST_EINVAL);
}

Test(wire, pair_weights_must_match_the_pairs) {
    static pb_t inner;
    static uint8_t out[1 << 16];
    char why[256];
    for (int n_w = 0; n_w <= 3;
         n_w++) { /* ExpertCompute{n_tokens 1, act Q8_0, tokens [0,0], experts [1,2], n_w weights} */
        inner.n = 0;
        pb_uint(&inner, 2, 1);
        pb_uint(&inner, 3, ST_TYPE_Q8_0);
        uint8_t two_zeros[2] = {0, 0}, ids[2] = {1, 2};
        pb_bytes(&inner, 4, two_zeros, 2);
        pb_bytes(&inner, 5, ids, 2);
        pb_uint(&inner, 6, ST_RESULT_PER_TOKEN_F16);
        const float w[3] = {0.5f, 0.25f, 0.125f};
        if (n_w) pb_bytes(&inner, 7, w, (size_t)n_w * sizeof(float)); /* packed floats, LE */
        int rc = s_decode_raw(out, pb_envelope(out, ST_WIRE_VERSION, ST_MSG_EXPERT_COMPUTE, 17, &inner), why);
        /* none: refused here too, as st_wire_encode refuses to send it (fuzz_wire: what decodes re-encodes) */
        cr_assert_eq(rc, n_w == 2 ? 0 : ST_EPROTO, "%d weights: %d (%s)", n_w, rc, why);
    }
}

Test(wire, compact_compute_checked_against_shape) {
    st_wire_shape_t s = s_shape();
    char why[256];
    const size_t frame = 3 * st_row_size(ST_TYPE_Q8_0, 64);
    st_wire_msg_t m = s_compact(ST_RESULT_PER_TOKEN_F16);
    cr_assert_eq(st_wire_check(&m, &s, frame, why, sizeof why), 0, "%s", why);
    st_wire_msg_t b = m;
    b.compute.pair_weight = NULL; /* decoded without weights */
    cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "without pair weights"), "%s", why);
    b = m, b.compute.result_format = ST_RESULT_PER_PAIR_F32; /* weights mean nothing there */
    cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), ST_EPROTO);
    b = m, b.compute.result_format = ST_RESULT_FORMAT_COUNT;
    cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "format"), "%s", why);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 3; i++) {
        float w[4] = {0.75f, 0.25f, 1.0f, 0.5f};
        w[i + 1] = bad[i];
        b = m, b.compute.pair_weight = w;
        cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), ST_EPROTO, "weight %g", (double)bad[i]);
    }
}

Test(wire, compact_results_checked_against_shape) {
    st_wire_shape_t s = s_shape();
    char why[256];
    st_wire_msg_t m = s_example(ST_MSG_EXPERT_RESULT); /* 4 pairs */
    const uint32_t formats[2] = {ST_RESULT_PER_TOKEN_F32, ST_RESULT_PER_TOKEN_F16};
    const size_t rb[2] = {64 * 4, 4 + 64 * 2}; /* f16 rows: a float32 scale, then the halves */
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(st_wire_result_row_bytes(formats[i], 64), rb[i]);
        st_wire_msg_t b = m;
        b.result.result_format = formats[i], b.result.n_rows = 3;
        const size_t frame = 3 * rb[i];
        cr_assert_eq(st_wire_check(&b, &s, frame, why, sizeof why), 0, "%s", why);
        cr_assert_eq(st_wire_check(&b, &s, frame - 2, why, sizeof why), ST_EPROTO);
        cr_assert_eq(st_wire_check(&b, &s, 4 * 64 * 4, why, sizeof why), ST_EPROTO); /* a per-pair frame */
        b.result.n_rows = 0;
        cr_assert_eq(st_wire_check(&b, &s, 0, why, sizeof why), ST_EPROTO);
        b.result.n_rows = 1; /* 4 pairs cannot come from 1 token x top-2 */
        cr_assert_eq(st_wire_check(&b, &s, rb[i], why, sizeof why), ST_EPROTO);
        b.result.n_rows = st_wire_max_tokens(&s) + 1;
        cr_assert_eq(st_wire_check(&b, &s, b.result.n_rows * rb[i], why, sizeof why), ST_EPROTO);
    }
    m.result.n_rows = 3; /* per pair: rows mean nothing */
    cr_assert_eq(st_wire_check(&m, &s, 4 * 64 * 4, why, sizeof why), ST_EPROTO);
    m.result.n_rows = 0, m.result.result_format = ST_RESULT_FORMAT_COUNT;
    cr_assert_eq(st_wire_check(&m, &s, 4 * 64 * 4, why, sizeof why), ST_EPROTO);
    cr_assert_str_eq(st_wire_result_format_name(ST_RESULT_PER_TOKEN_F16), "per-token-f16");
    cr_assert_str_eq(st_wire_result_format_name(99), "?");
}

Test(wire, shard_put_checked_against_shape) {
    st_wire_shape_t s = s_shape();
    char why[256];
    st_wire_msg_t m = s_example(ST_MSG_SHARD_PUT);
    const size_t rest = (size_t)(st_wire_expert_bytes(&s, m.shard_put.layer) - m.shard_put.offset);
    cr_assert_eq(st_wire_check(&m, &s, rest, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&m, &s, rest + 1, why, sizeof why), ST_EPROTO); /* past the end */
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), ST_EPROTO);
    st_wire_msg_t b = m;
    b.shard_put.total++;
    cr_assert_eq(st_wire_check(&b, &s, 10, why, sizeof why), ST_EPROTO);
    b = m, b.shard_put.offset = st_wire_expert_bytes(&s, m.shard_put.layer);
    cr_assert_eq(st_wire_check(&b, &s, 1, why, sizeof why), ST_EPROTO);
    b = m, b.shard_put.offset = UINT64_MAX; /* no wrap-around */
    cr_assert_eq(st_wire_check(&b, &s, 1, why, sizeof why), ST_EPROTO);
    b = m, b.shard_put.layer = 4;
    cr_assert_eq(st_wire_check(&b, &s, 1, why, sizeof why), ST_EPROTO);
}

Test(wire, other_types_checked_against_shape) {
    st_wire_shape_t s = s_shape(), other = s_shape();
    char why[256];
    other.model_hash[0] ^= 1;
    st_wire_msg_t m = s_example(ST_MSG_HELLO);
    cr_assert_eq(st_wire_check(&m, NULL, 0, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&m, &other, 0, why, sizeof why), ST_EPROTO);
    cr_assert_eq(st_wire_check(&m, NULL, 5, why, sizeof why), ST_EPROTO); /* HELLO takes no frame */
    m = s_example(ST_MSG_ASSIGN);
    cr_assert_eq(st_wire_check(&m, NULL, 0, why, sizeof why), 0, "%s", why);
    st_wire_ref_t bad[1] = {s_ref(0, 8, true)};
    m.assign.experts = bad, m.assign.n_experts = 1, m.assign.n_pinned = 0;
    cr_assert_eq(st_wire_check(&m, NULL, 0, why, sizeof why), ST_EPROTO);
    m = s_example(ST_MSG_EXPERT_PREFETCH);
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), 0, "%s", why);
    m.prefetch.layer = 4;
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), ST_EPROTO);
    m = s_example(ST_MSG_EXPERT_RESULT);
    cr_assert_eq(st_wire_check(&m, &s, 4 * 64 * 4, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&m, &s, 4 * 64 * 4 - 4, why, sizeof why), ST_EPROTO);
    m = s_example(ST_MSG_HEARTBEAT);
    cr_assert_eq(st_wire_check(&m, NULL, 0, why, sizeof why), 0, "%s", why);
    /* an INVENTORY's room: inside --mem, for experts of at least their bytes (3 matrices of
     * 64 x 32 Q4_0: 3 x 1152 = 3456 B); none told (0, 0) is a node before these fields */
    m = s_example(ST_MSG_INVENTORY);
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), 0, "%s", why);
    m.inventory.room = m.inventory.expert_cost = 0;
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), 0, "%s", why);
    m = s_example(ST_MSG_INVENTORY);
    m.inventory.room = m.inventory.mem_budget + 1;
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "room of"), "%s", why);
    m = s_example(ST_MSG_INVENTORY);
    m.inventory.expert_cost = 3455;
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), ST_EPROTO);
    m.inventory.expert_cost = 3456;
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), 0, "%s", why);
    m.inventory.expert_cost = 0; /* room without a cost */
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), ST_EPROTO);
    m.inventory.room = 0, m.inventory.expert_cost = 3456; /* no room at all (--mem below its own bytes) */
    cr_assert_eq(st_wire_check(&m, &s, 0, why, sizeof why), 0, "%s", why);
}

Test(wire, hash_is_blake2b_256) {
    /* BLAKE2b-256("abc"), RFC 7693 test vector family (digest length 32) */
    static const uint8_t want[32] = {0xbd, 0xdd, 0x81, 0x3c, 0x63, 0x42, 0x39, 0x72, 0x31, 0x71, 0xef,
                                     0x3f, 0xee, 0x98, 0x57, 0x9b, 0x94, 0x96, 0x4e, 0x3b, 0xb1, 0xcb,
                                     0x3e, 0x42, 0x72, 0x62, 0xc8, 0xc0, 0x68, 0xd5, 0x23, 0x19};
    uint8_t h[32];
    st_wire_hash("abc", 3, h);
    cr_assert_arr_eq(h, want, 32);
}

/* ---- sockets ------------------------------------------------------------------ */

typedef struct {
    void *ctx, *router, *dealer;
} pair_t;

static pair_t s_pair(void) {
    pair_t p;
    p.ctx = zmq_ctx_new();
    p.router = zmq_socket(p.ctx, ZMQ_ROUTER);
    p.dealer = zmq_socket(p.ctx, ZMQ_DEALER);
    cr_assert_eq(st_wire_socket_limits(p.router, ST_WIRE_MAX_ENVELOPE + 4096, 16), 0);
    cr_assert_eq(st_wire_socket_limits(p.dealer, ST_WIRE_MAX_FRAME, 16), 0);
    int timeout = 5000; /* deadline on every wait */
    zmq_setsockopt(p.router, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(p.dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    cr_assert_eq(zmq_bind(p.router, "tcp://127.0.0.1:*"), 0);
    char ep[256];
    size_t n = sizeof ep;
    zmq_getsockopt(p.router, ZMQ_LAST_ENDPOINT, ep, &n);
    cr_assert_eq(zmq_connect(p.dealer, ep), 0);
    return p;
}

static void s_pair_close(pair_t *p) {
    zmq_close(p->router);
    zmq_close(p->dealer);
    zmq_ctx_term(p->ctx);
}

Test(wire, socket_round_trip_with_frame_and_reply) {
    pair_t p = s_pair();
    st_wire_msg_t m = s_example(ST_MSG_EXPERT_COMPUTE);
    uint8_t act[3 * 68];
    for (size_t i = 0; i < sizeof act; i++) act[i] = (uint8_t)i;
    cr_assert_eq(st_wire_send(p.dealer, NULL, 0, &m, act, sizeof act, 0), 0);
    st_wire_rx_t rx;
    char why[256];
    cr_assert_eq(st_wire_recv(p.router, true, &rx, why, sizeof why), 0, "%s", why);
    s_assert_msg_eq(&m, &rx.msg);
    size_t len;
    const uint8_t *f = st_wire_rx_frame(&rx, &len);
    cr_assert_eq(len, sizeof act);
    cr_assert_arr_eq(f, act, sizeof act);
    st_wire_shape_t s = s_shape();
    cr_assert_eq(st_wire_check(&rx.msg, &s, len, why, sizeof why), 0, "%s", why);
    /* the reply goes back to the identity it came from, zero-copy */
    st_wire_msg_t r = s_example(ST_MSG_EXPERT_RESULT);
    r.request_id = rx.msg.request_id;
    zmq_msg_t out;
    zmq_msg_init_size(&out, 4 * 64 * sizeof(float));
    memset(zmq_msg_data(&out), 0, zmq_msg_size(&out));
    cr_assert_eq(st_wire_send_zmsg(p.router, rx.peer, rx.peer_len, &r, &out, 0), 0);
    st_wire_rx_clear(&rx);
    st_wire_rx_t back;
    cr_assert_eq(st_wire_recv(p.dealer, false, &back, why, sizeof why), 0, "%s", why);
    cr_assert_eq(back.msg.type, ST_MSG_EXPERT_RESULT);
    cr_assert_eq(back.msg.request_id, m.request_id);
    st_wire_rx_frame(&back, &len);
    cr_assert_eq(st_wire_check(&back.msg, &s, len, why, sizeof why), 0, "%s", why);
    st_wire_rx_clear(&back);
    s_pair_close(&p);
}

Test(wire, bad_messages_leave_the_stream_in_sync) {
    pair_t p = s_pair();
    st_wire_rx_t rx;
    char why[256];
    /* garbage envelope, then a good message */
    zmq_send(p.dealer, "\xff\xff\xff", 3, 0);
    /* three raw frames: one too many */
    st_wire_msg_t hb = s_example(ST_MSG_HEARTBEAT);
    uint8_t env[256];
    size_t n = s_encode(&hb, env, sizeof env);
    zmq_send(p.dealer, env, n, ZMQ_SNDMORE);
    zmq_send(p.dealer, "a", 1, ZMQ_SNDMORE);
    zmq_send(p.dealer, "b", 1, 0);
    /* empty envelope */
    zmq_send(p.dealer, "", 0, 0);
    cr_assert_eq(st_wire_send(p.dealer, NULL, 0, &hb, NULL, 0, 0), 0);

    cr_assert_eq(st_wire_recv(p.router, true, &rx, why, sizeof why), ST_EPROTO);
    cr_assert_gt(rx.peer_len, 0); /* can be answered */
    cr_assert_eq(st_wire_send_error(p.router, rx.peer, rx.peer_len, rx.msg.request_id, ST_EPROTO, "%s", why), 0);
    cr_assert_eq(st_wire_recv(p.router, true, &rx, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "raw frame"), "%s", why);
    cr_assert_eq(rx.msg.type, ST_MSG_HEARTBEAT);
    cr_assert_eq(rx.msg.request_id, hb.request_id);
    cr_assert_eq(st_wire_recv(p.router, true, &rx, why, sizeof why), ST_EPROTO);
    cr_assert_eq(st_wire_recv(p.router, true, &rx, why, sizeof why), 0, "%s", why);
    cr_assert_eq(rx.msg.type, ST_MSG_HEARTBEAT);
    st_wire_rx_clear(&rx);

    st_wire_rx_t e;
    cr_assert_eq(st_wire_recv(p.dealer, false, &e, why, sizeof why), 0, "%s", why);
    cr_assert_eq(e.msg.type, ST_MSG_ERROR);
    cr_assert_eq(e.msg.error.code, ST_EPROTO);
    st_wire_rx_clear(&e);
    s_pair_close(&p);
}

Test(wire, frames_over_maxmsgsize_are_never_delivered) {
    pair_t p = s_pair();
    st_wire_msg_t hb = s_example(ST_MSG_HEARTBEAT);
    size_t big = ST_WIRE_MAX_ENVELOPE + 4096 + 1;
    uint8_t *junk = calloc(1, big);
    cr_assert_eq(st_wire_send(p.dealer, NULL, 0, &hb, junk, big, 0), 0);
    free(junk);
    /* the router drops the connection instead of allocating the frame; nothing arrives */
    int t = 300;
    zmq_setsockopt(p.router, ZMQ_RCVTIMEO, &t, sizeof t);
    st_wire_rx_t rx;
    cr_assert_eq(st_wire_recv(p.router, true, &rx, NULL, 0), ST_ETIMEOUT);
    s_pair_close(&p);
}

/* ---- who sent it: Envelope.software ------------------------------------------------------- */

/* HELLO and INVENTORY name their sender: this program by default ("PROG 0.4.0 (git ...)"),
 * or what the caller sets; a name longer than ST_WIRE_MAX_SOFTWARE is refused. */
Test(wire, hello_and_inventory_name_their_sender) {
    uint8_t buf[4096];
    char why[256], want[64];
    snprintf(want, sizeof want, "%s %s", program_invocation_short_name, ST_TEST_PROJECT_VERSION);
    for (int t = ST_MSG_HELLO; t <= ST_MSG_INVENTORY; t++) {
        st_wire_msg_t m = s_example((st_msg_type_t)t), d;
        char *sw = t == ST_MSG_HELLO ? d.hello.software : d.inventory.software;
        size_t len = s_encode(&m, buf, sizeof buf);
        cr_assert_eq(st_wire_decode(buf, len, &d, why, sizeof why), 0, "%s", why);
        cr_assert(!strncmp(sw, want, strlen(want)), "%s names '%s'", st_wire_type_name(t), sw);
        st_wire_msg_clear(&d);
        strcpy(t == ST_MSG_HELLO ? m.hello.software : m.inventory.software, "st-node 1.2.3 (git abc)");
        len = s_encode(&m, buf, sizeof buf);
        cr_assert_eq(st_wire_decode(buf, len, &d, why, sizeof why), 0, "%s", why);
        cr_assert_str_eq(sw, "st-node 1.2.3 (git abc)");
        st_wire_msg_clear(&d);
    }
    /* a name of 97 bytes, appended to an encoded HELLO (protobuf takes fields in any order) */
    st_wire_msg_t m = s_example(ST_MSG_HELLO);
    size_t len = s_encode(&m, buf, sizeof buf);
    char name[ST_WIRE_MAX_SOFTWARE + 2];
    memset(name, 'v', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    buf[len++] = 0x22, buf[len++] = (uint8_t)strlen(name);
    memcpy(buf + len, name, strlen(name));
    len += strlen(name);
    cr_assert_eq(s_decode_raw(buf, len, why), ST_EPROTO);
    cr_assert(strstr(why, "software of 97 B"), "%s", why);
}

/* Another protocol version: refused, and the reason names the sender's program, version and
 * protocol and this program's, whatever the message type. */
Test(wire, another_protocol_version_names_both_sides) {
    static pb_t sw;
    uint8_t buf[512];
    char why[256], want[128];
    st_wire_msg_t d;
    size_t len = pb_envelope(buf, 4, ST_MSG_INVENTORY, 0, NULL);
    const char *name = "st-node 0.5.0 (git new)";
    sw.n = 0;
    pb_bytes(&sw, 4, name, strlen(name));
    memcpy(buf + len, sw.b, sw.n);
    cr_assert_eq(st_wire_decode(buf, len + sw.n, &d, why, sizeof why), ST_EPROTO);
    snprintf(want, sizeof want, "protocol version 4 from st-node 0.5.0 (git new), but this is %s %s",
             program_invocation_short_name, ST_TEST_PROJECT_VERSION);
    cr_assert(strstr(why, want) && strstr(why, "protocol version 3:"), "%s", why);
    cr_assert_eq(d.version, 4);
    /* the previous version (no head messages, no compact results), of the same release number */
    len = pb_envelope(buf, 2, ST_MSG_INVENTORY, 0, NULL);
    name = "st-node 0.4.0 (git 29140ea)";
    sw.n = 0;
    pb_bytes(&sw, 4, name, strlen(name));
    memcpy(buf + len, sw.b, sw.n);
    cr_assert_eq(st_wire_decode(buf, len + sw.n, &d, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "protocol version 2 from st-node 0.4.0 (git 29140ea), but this is") &&
                  strstr(why, "protocol version 3:"),
              "%s", why);
    cr_assert_eq(d.request_id, 42);
    /* a program before 0.4.0 names nothing */
    len = pb_envelope(buf, 1, ST_MSG_ERROR, 0, NULL);
    cr_assert_eq(st_wire_decode(buf, len, &d, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "protocol version 1 from a program before 0.4.0"), "%s", why);
}

/* A peer's strings reach logs, /health and st-ctl's table: control characters come out as '?'
 * (a node id "a\nst-coordinator: info: ..." forged a log line), UTF-8 stays. */
Test(wire, control_characters_of_a_peer_are_replaced) {
    uint8_t buf[1024];
    char why[256];
    st_wire_msg_t m = {.type = ST_MSG_INVENTORY, .request_id = 5}, d;
    strcpy(m.inventory.node_id, "pi\nst-coordinator: info: \x1b[2Jn\xc3\xb6"
                                "de\x7f");
    strcpy(m.inventory.software, "st-node\r\t0.4.0");
    cr_assert_eq(st_wire_decode(buf, s_encode(&m, buf, sizeof buf), &d, why, sizeof why), 0, "%s", why);
    cr_assert_str_eq(d.inventory.node_id, "pi?st-coordinator: info: ?[2Jn\xc3\xb6"
                                          "de?");
    cr_assert_str_eq(d.inventory.software, "st-node??0.4.0");
    st_wire_msg_clear(&d);
    m = (st_wire_msg_t){.type = ST_MSG_ERROR, .error = {.code = ST_EPROTO}};
    strcpy(m.error.message, "bad\nst-node: error: forged");
    cr_assert_eq(st_wire_decode(buf, s_encode(&m, buf, sizeof buf), &d, why, sizeof why), 0, "%s", why);
    cr_assert_str_eq(d.error.message, "bad?st-node: error: forged");
    st_wire_msg_clear(&d);
    /* the software string a refusal of another protocol version names */
    static pb_t sw;
    size_t len = pb_envelope(buf, 4, ST_MSG_INVENTORY, 0, NULL);
    const char *name = "st-node 9\n.0";
    sw.n = 0;
    pb_bytes(&sw, 4, name, strlen(name));
    memcpy(buf + len, sw.b, sw.n);
    cr_assert_eq(st_wire_decode(buf, len + sw.n, &d, why, sizeof why), ST_EPROTO);
    cr_assert(strstr(why, "from st-node 9?.0,") && !strchr(why, '\n'), "%s", why);
}

Test(wire, same_release_compares_the_release_word) {
    char v[64];
    snprintf(v, sizeof v, "st-node %s (git abc1234)", ST_TEST_PROJECT_VERSION);
    cr_assert(st_wire_same_release(v));
    snprintf(v, sizeof v, "st-node %s", ST_TEST_PROJECT_VERSION);
    cr_assert(st_wire_same_release(v));
    snprintf(v, sizeof v, "st-node %s1", ST_TEST_PROJECT_VERSION); /* 0.4.01 is another release */
    cr_assert_not(st_wire_same_release(v));
    cr_assert_not(st_wire_same_release("st-node 9.9.9 (git abc1234)"));
    cr_assert_not(st_wire_same_release(""));
    cr_assert_not(st_wire_same_release("st-node"));
    cr_assert_not(st_wire_same_release(ST_TEST_PROJECT_VERSION)); /* no program name */
}

/* ---- the output head's messages ---- */

Test(wire, head_requests_checked_against_the_slice) {
    const st_wire_head_assign_t a = s_head();
    char why[256];
    st_wire_msg_t m = s_example(ST_MSG_HEAD_ASSIGN);
    cr_assert_eq(st_wire_check_head(&m, 64, NULL, 0, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check_head(&m, 48, NULL, 0, why, sizeof why), ST_EPROTO); /* not whole Q4_0 blocks */
    cr_assert_eq(st_wire_check_head(&m, 64, NULL, 8, why, sizeof why), ST_EPROTO); /* no frame */
    st_wire_msg_t b = m;
    b.head_assign.hi = 1001;
    cr_assert_eq(st_wire_check_head(&b, 64, NULL, 0, why, sizeof why), ST_EPROTO);
    b = m, b.head_assign.lo = 450;
    cr_assert_eq(st_wire_check_head(&b, 64, NULL, 0, why, sizeof why), ST_EPROTO); /* empty */
    b = m, b.head_assign.type = ST_TYPE_COUNT;
    cr_assert_eq(st_wire_check_head(&b, 64, NULL, 0, why, sizeof why), ST_EPROTO);
    /* slots: slot < n_slots <= ST_WIRE_MAX_HEAD_SLOTS */
    b = m, b.head_assign.slot = 3;
    cr_assert_eq(st_wire_check_head(&b, 64, NULL, 0, why, sizeof why), ST_EPROTO);
    b = m, b.head_assign.slot = 0, b.head_assign.n_slots = 0;
    cr_assert_eq(st_wire_check_head(&b, 64, NULL, 0, why, sizeof why), ST_EPROTO);
    b = m, b.head_assign.slot = 0, b.head_assign.n_slots = ST_WIRE_MAX_HEAD_SLOTS + 1;
    cr_assert_eq(st_wire_check_head(&b, 64, NULL, 0, why, sizeof why), ST_EPROTO);
    b = m, b.head_assign.slot = ST_WIRE_MAX_HEAD_SLOTS - 1, b.head_assign.n_slots = ST_WIRE_MAX_HEAD_SLOTS;
    cr_assert_eq(st_wire_check_head(&b, 64, NULL, 0, why, sizeof why), 0, "%s", why);
    /* a chunk: inside the slice's bytes (250 rows x 36 B) */
    m = s_example(ST_MSG_HEAD_PUT);
    const uint64_t total = 250 * 36;
    cr_assert_eq(m.head_put.total, total);
    cr_assert_eq(st_wire_check_head(&m, 64, NULL, 100, why, sizeof why), ST_EPROTO); /* before HEAD_ASSIGN */
    cr_assert_eq(st_wire_check_head(&m, 64, &a, total - 2048, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check_head(&m, 64, &a, total - 2047, why, sizeof why), ST_EPROTO);
    cr_assert_eq(st_wire_check_head(&m, 64, &a, 0, why, sizeof why), ST_EPROTO);
    b = m, b.head_put.total++;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 1, why, sizeof why), ST_EPROTO);
    b = m, b.head_put.offset = UINT64_MAX;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 1, why, sizeof why), ST_EPROTO);
    b = m, b.head_put.lo = 201; /* another slice's chunk */
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 1, why, sizeof why), ST_EPROTO);
    /* a compute: the frame holds n_seq rows of n_embd floats; ids below n_vocab; finite parameters */
    m = s_example(ST_MSG_HEAD_COMPUTE);
    cr_assert_eq(st_wire_check_head(&m, 64, &a, 2 * 64 * 4, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check_head(&m, 64, &a, 2 * 64 * 4 - 1, why, sizeof why), ST_EPROTO);
    cr_assert_eq(st_wire_check(&m, NULL, 0, why, sizeof why), ST_EPROTO); /* not the expert check's */
    const st_wire_shape_t sh = s_shape();
    st_wire_msg_t res = s_example(ST_MSG_HEAD_RESULT); /* passed on to st_wire_check_head_result */
    cr_assert_eq(st_wire_check(&res, &sh, 48, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check(&res, &sh, ST_WIRE_MAX_FRAME + 1, why, sizeof why), ST_EPROTO);
    uint32_t bad_id[3] = {5, 260, 1000}, bad_n[2] = {2, 0}, zero[3] = {1, 0, 7};
    float nan_t[2] = {NAN, 0.0f}, neg_rp[2] = {0.0f, 1.0f};
    b = m, b.head_compute.pen_id = bad_id;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = m, b.head_compute.pen_n = bad_n;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = m, b.head_compute.pen_count = zero;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = m, b.head_compute.temp = nan_t;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = m, b.head_compute.repeat_penalty = neg_rp;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    /* penalties within what a coordinator takes (the API's ranges), else a node's logits could
     * overflow to infinities (fuzz_head found presence -1.6e38: its reply was refused) */
    float rp_edge[2] = {0.001f, 100.0f}, pen_edge[2] = {-2.0f, 2.0f}, rp_far[2] = {1e-6f, 1.0f},
          pen_far[2] = {0.0f, -2.5f}, pen_huge[2] = {-1.6e38f, 0.0f};
    b = m, b.head_compute.repeat_penalty = rp_edge, b.head_compute.presence_penalty = pen_edge;
    b.head_compute.frequency_penalty = pen_edge;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), 0, "%s", why);
    b = m, b.head_compute.repeat_penalty = rp_far;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = m, b.head_compute.presence_penalty = pen_huge;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = m, b.head_compute.frequency_penalty = pen_far;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = m, b.head_compute.lo = 0; /* another slice */
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = m, b.head_compute.n_cand = 0;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = m, b.head_compute.n_cand = ST_WIRE_MAX_HEAD_CAND + 1;
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 2 * 64 * 4, why, sizeof why), ST_EPROTO);
    b = (st_wire_msg_t){.type = ST_MSG_HEAD_COMPUTE, .head_compute = {.n_seq = 3, .full = true, .lo = 200}};
    cr_assert_eq(st_wire_check_head(&b, 64, &a, 3 * 64 * 4, why, sizeof why), 0, "%s", why);
}

/* a candidate frame: n pairs (id, logit) */
static void s_cands(uint8_t *f, const uint32_t *ids, const float *l, int n) {
    for (int i = 0; i < n; i++) memcpy(f + 8 * i, &ids[i], 4), memcpy(f + 8 * i + 4, &l[i], 4);
}

Test(wire, head_results_are_checked_before_use) {
    const st_wire_head_assign_t a = s_head();
    char why[256];
    st_wire_msg_t req = s_example(ST_MSG_HEAD_COMPUTE);
    req.head_compute.n_cand = 3;
    st_wire_msg_t m = s_example(ST_MSG_HEAD_RESULT);
    uint8_t f[2 * 3 * 8];
    const uint32_t ids0[3] = {210, 205, 449}, ids1[3] = {300, 301, 200};
    const float l0[3] = {3.5f, 2.0f, 2.0f}, l1[3] = {-1.25f, -1.25f, -7.0f};
    s_cands(f, ids0, l0, 3);
    s_cands(f + 24, ids1, l1, 3);
    cr_assert_eq(st_wire_check_head_result(&m, &req.head_compute, &a, f, sizeof f, why, sizeof why), 0, "%s", why);
    cr_assert_eq(st_wire_check_head_result(&m, &req.head_compute, &a, f, sizeof f - 8, why, sizeof why), ST_EPROTO);
    /* every single corruption of the frame is refused: an id outside [200, 450), order, a NaN */
    const uint32_t out_ids[3] = {199, 450, UINT32_MAX};
    for (int i = 0; i < 3; i++) {
        uint8_t g[sizeof f];
        memcpy(g, f, sizeof f);
        memcpy(g + 8 * i, &out_ids[i], 4);
        cr_assert_eq(st_wire_check_head_result(&m, &req.head_compute, &a, g, sizeof g, why, sizeof why), ST_EPROTO);
    }
    const float nan = NAN, inf = INFINITY, up = 2.5f;
    const float *bad[3] = {&nan, &inf, &up};
    for (int i = 0; i < 3; i++) {
        uint8_t g[sizeof f];
        memcpy(g, f, sizeof f);
        memcpy(g + 8 * 2 + 4, bad[i], 4); /* the third candidate of sequence 0 */
        cr_assert_eq(st_wire_check_head_result(&m, &req.head_compute, &a, g, sizeof g, why, sizeof why), ST_EPROTO);
    }
    uint8_t g[sizeof f];
    memcpy(g, f, sizeof f);
    const uint32_t lower = 204;
    memcpy(g + 16, &lower, 4); /* a tie in the wrong id order (204 after 205) */
    cr_assert_eq(st_wire_check_head_result(&m, &req.head_compute, &a, g, sizeof g, why, sizeof why), ST_EPROTO);
    memcpy(g, f, sizeof f);
    memcpy(g + 8, &ids0[0], 4); /* one id twice (210) */
    cr_assert_eq(st_wire_check_head_result(&m, &req.head_compute, &a, g, sizeof g, why, sizeof why), ST_EPROTO);
    /* the counts, sums and maxima */
    st_wire_msg_t b = m;
    b.head_result.n_cand = 2;
    cr_assert_eq(st_wire_check_head_result(&b, &req.head_compute, &a, f, sizeof f, why, sizeof why), ST_EPROTO);
    b = m, b.head_result.n_seq = 1;
    cr_assert_eq(st_wire_check_head_result(&b, &req.head_compute, &a, f, 24, why, sizeof why), ST_EPROTO);
    double low[2] = {0.5, 1.0}, high[2] = {251.0, 1.0}, nan_s[2] = {NAN, 1.0};
    float wrong_max[2] = {3.0f, -1.25f};
    b = m, b.head_result.sum = low;
    cr_assert_eq(st_wire_check_head_result(&b, &req.head_compute, &a, f, sizeof f, why, sizeof why), ST_EPROTO);
    b = m, b.head_result.sum_temp = high;
    cr_assert_eq(st_wire_check_head_result(&b, &req.head_compute, &a, f, sizeof f, why, sizeof why), ST_EPROTO);
    b = m, b.head_result.sum = nan_s;
    cr_assert_eq(st_wire_check_head_result(&b, &req.head_compute, &a, f, sizeof f, why, sizeof why), ST_EPROTO);
    b = m, b.head_result.max = wrong_max;
    cr_assert_eq(st_wire_check_head_result(&b, &req.head_compute, &a, f, sizeof f, why, sizeof why), ST_EPROTO);
    /* full logits: n_seq x 250 finite floats */
    st_wire_head_compute_t full = {.n_seq = 1, .full = true};
    st_wire_msg_t r = {.type = ST_MSG_HEAD_RESULT, .head_result = {.n_seq = 1, .full = true}};
    float lg[250] = {0};
    cr_assert_eq(st_wire_check_head_result(&r, &full, &a, (uint8_t *)lg, sizeof lg, why, sizeof why), 0, "%s", why);
    lg[249] = NAN;
    cr_assert_eq(st_wire_check_head_result(&r, &full, &a, (uint8_t *)lg, sizeof lg, why, sizeof why), ST_EPROTO);
    cr_assert_eq(st_wire_check_head_result(&r, &full, &a, (uint8_t *)lg, sizeof lg - 4, why, sizeof why), ST_EPROTO);
}

Test(wire, head_results_need_a_sequence) {
    uint8_t buf[4096];
    char why[256];
    st_wire_msg_t m = s_example(ST_MSG_HEAD_RESULT), d;
    m.head_result.n_seq = 1;
    size_t len = s_encode(&m, buf, sizeof buf);
    cr_assert_eq(st_wire_decode(buf, len, &d, why, sizeof why), 0, "%s", why); /* 1 of each */
    st_wire_msg_clear(&d);
    m.head_result.n_seq = 0;
    len = s_encode(&m, buf, sizeof buf);
    cr_assert_eq(st_wire_decode(buf, len, &d, why, sizeof why), ST_EPROTO);
}

/* Random corruption of a valid head result (frame and lists): never a
 * crash or a read past the frame (ASan), and whatever is accepted keeps
 * the promises the coordinator relies on. */
Test(wire, head_result_fuzz_keeps_the_invariants) {
    const st_wire_head_assign_t a = s_head();
    st_wire_msg_t req = s_example(ST_MSG_HEAD_COMPUTE);
    req.head_compute.n_cand = 3;
    const uint32_t ids0[3] = {210, 205, 449}, ids1[3] = {300, 301, 200};
    const float l0[3] = {3.5f, 2.0f, 2.0f}, l1[3] = {-1.25f, -1.25f, -7.0f};
    uint8_t good[48];
    s_cands(good, ids0, l0, 3);
    s_cands(good + 24, ids1, l1, 3);
    srand(18);
    int accepted = 0;
    for (int it = 0; it < 20000; it++) {
        st_wire_msg_t m = s_example(ST_MSG_HEAD_RESULT);
        float mx[2];
        double sum[2], st[2];
        memcpy(mx, g_max, sizeof mx), memcpy(sum, g_sum, sizeof sum), memcpy(st, g_sum_t, sizeof st);
        m.head_result.max = mx, m.head_result.sum = sum, m.head_result.sum_temp = st;
        size_t len = sizeof good - (rand() % 8 == 0 ? (size_t)(rand() % 48) : 0);
        uint8_t *f = malloc(len ? len : 1); /* exact size: ASan sees any read past it */
        memcpy(f, good, len);
        const int flips = 1 + rand() % 3;
        for (int k = 0; k < flips && len; k++) f[rand() % len] ^= (uint8_t)(1u << (rand() % 8));
        if (rand() % 4 == 0) ((uint8_t *)sum)[rand() % sizeof sum] ^= (uint8_t)(1u << (rand() % 8));
        if (rand() % 4 == 0) ((uint8_t *)mx)[rand() % sizeof mx] ^= (uint8_t)(1u << (rand() % 8));
        char why[256];
        if (st_wire_check_head_result(&m, &req.head_compute, &a, f, len, why, sizeof why) == 0) {
            accepted++;
            cr_assert_eq(len, sizeof good);
            for (int s = 0; s < 2; s++)
                for (int i = 0; i < 3; i++) {
                    uint32_t id;
                    float l;
                    memcpy(&id, f + 24 * s + 8 * i, 4), memcpy(&l, f + 24 * s + 8 * i + 4, 4);
                    cr_assert(id >= a.lo && id < a.hi && isfinite(l));
                }
            cr_assert(sum[0] >= 1.0 && sum[1] >= 1.0 && isfinite(mx[0]));
        }
        free(f);
    }
    cr_log_info("%d of 20000 corrupted head results accepted (a flip that keeps every invariant)", accepted);
}
