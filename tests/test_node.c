/* Integration tests of st-node: a real st-node process on 127.0.0.1, driven
 * by a DEALER socket from the test. Experts come from a synthetic model made
 * by st-synth; every EXPERT_RESULT is compared bit for bit with
 * st_experts_eval on the same model loaded in the test. Every wait has a
 * deadline: the node's "listening on" line, each reply, its exit. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "file.h"
#include "forward.h"
#include "model.h"
#include "moe.h"
#include "sampler.h"
#include "st_log.h"
#include "testutil.h"
#include "wire.h"

#define DEADLINE_MS 20000

static double s_now(void) { return st_now_ms() / 1e3; }

/* ---- the node process ---- */

typedef struct {
    st_test_node_t p;
    bool wrapped; /* under with-mem-limit */
} node_proc_t;

/* Starts st-node (optionally under with-mem-limit) and waits for its endpoint. */
static node_proc_t s_start(const char *store, const char *mem, const char *report) {
    node_proc_t p = {0};
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/st-node", ST_BINARY_DIR);
    char tool[1024];
    snprintf(tool, sizeof tool, "%s/../shared/tools/with-mem-limit", ST_SOURCE_DIR);
    const char *argv_plain[] = {bin,  "--listen", "tcp://127.0.0.1:*", "--mem", mem,         "--store", store,
                                "-t", "2",        "--insecure",        "--id",  "test-node", NULL};
    const char *argv_limit[] = {tool,        mem, "--report", report, "--", bin, "--listen",   "tcp://127.0.0.1:*",
                                "--mem",     mem, "--store",  store,  "-t", "2", "--insecure", "--id",
                                "test-node", NULL};
    cr_assert_eq(st_test_node_start(&p.p, report ? argv_limit : argv_plain, NULL, DEADLINE_MS), 0,
                 "st-node exited before listening");
    p.wrapped = report != NULL;
    return p;
}

/* SIGTERM, then waits (with a deadline) for a clean exit; the exit status.
 * Under with-mem-limit the signal goes to st-node itself: a SIGTERM to the
 * wrapper interrupts its `wait`, and it may report 143 for a node that
 * stopped cleanly. */
static int s_stop(node_proc_t *p) {
    if (p->wrapped) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)p->p.pid, (int)p->p.pid);
        char *kids = st_file_read(path, 0, NULL);
        int child = kids ? atoi(kids) : 0;
        free(kids);
        if (child > 0) {
            kill(child, SIGTERM);
            int st = st_test_wait(p->p.pid, DEADLINE_MS);
            if (st >= 0) {
                p->p.pid = 0;
                close(p->p.out);
                return st;
            }
        }
    }
    return st_test_node_stop(&p->p, SIGTERM);
}

/* ---- the client ---- */

typedef struct {
    void *ctx, *sock;
    uint64_t next_id;
    uint64_t bytes_out, bytes_in;
} client_t;

static void s_connect(client_t *c, const char *endpoint) {
    if (!c->ctx) c->ctx = zmq_ctx_new();
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    cr_assert_eq(st_wire_socket_limits(c->sock, 64 << 20, 100), 0);
    int t = DEADLINE_MS;
    zmq_setsockopt(c->sock, ZMQ_RCVTIMEO, &t, sizeof t);
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &t, sizeof t);
    cr_assert_eq(zmq_connect(c->sock, endpoint), 0);
    if (!c->next_id) c->next_id = 1;
}

static void s_disconnect(client_t *c) {
    zmq_close(c->sock);
    c->sock = NULL;
}

static void s_client_close(client_t *c) {
    if (c->sock) s_disconnect(c);
    zmq_ctx_term(c->ctx);
}

/* Sends m (+ frame) and receives the reply into rx; asserts the reply's id. */
static void s_call(client_t *c, st_wire_msg_t *m, const void *frame, size_t frame_len, st_wire_rx_t *rx) {
    m->request_id = c->next_id++;
    cr_assert_eq(st_wire_send(c->sock, NULL, 0, m, frame, frame_len, 0), 0);
    c->bytes_out += st_wire_encoded_size(m) + frame_len;
    char why[256];
    int rc = st_wire_recv(c->sock, false, rx, why, sizeof why);
    cr_assert_eq(rc, 0, "no valid reply to %s: %d %s", st_wire_type_name(m->type), rc, why);
    cr_assert_eq(rx->msg.request_id, m->request_id);
    size_t len;
    st_wire_rx_frame(rx, &len);
    c->bytes_in += st_wire_encoded_size(&rx->msg) + len;
}

/* Expects an ERROR reply to m. */
static void s_expect_error(client_t *c, st_wire_msg_t *m, const void *frame, size_t len, const char *what) {
    st_wire_rx_t rx;
    s_call(c, m, frame, len, &rx);
    cr_assert_eq(rx.msg.type, ST_MSG_ERROR, "%s: got %s", what, st_wire_type_name(rx.msg.type));
    cr_assert_lt(rx.msg.error.code, 0);
    cr_log_info("%s -> ERROR %d: %s", what, rx.msg.error.code, rx.msg.error.message);
    st_wire_rx_clear(&rx);
}

/* ---- the model ---- */

typedef struct {
    st_model_t *m;
    st_ctx_t *ctx;
    st_wire_shape_t shape;
    uint8_t (*hash)[32]; /* per (layer, expert) */
    uint8_t *bytes;      /* scratch: one expert's gate|up|down */
} model_t;

static const uint8_t *s_expert(model_t *md, int l, int e) {
    const st_layer_t *L = &md->m->layers[l];
    const st_weight_t *w[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        size_t n = (size_t)w[i]->n_rows * w[i]->row_bytes;
        memcpy(md->bytes + off, st_weight_row(w[i], e, 0), n);
        off += n;
    }
    cr_assert_eq(off, st_wire_expert_bytes(&md->shape, (uint32_t)l));
    return md->bytes;
}

static void s_load_model(model_t *md, const char *const *args) {
    char path[1024];
    cr_assert_not_null(st_test_model(args, path, sizeof path), "st-synth failed");
    md->m = st_model_load(path);
    cr_assert_not_null(md->m);
    st_ctx_params_t p = st_ctx_default_params();
    p.n_threads = 2;
    p.n_batch = 512;
    p.n_ctx = 16;
    md->ctx = st_ctx_new(md->m, &p);
    cr_assert_not_null(md->ctx);
    const st_config_t *cfg = &md->m->cfg;
    st_wire_shape_t *s = &md->shape;
    memset(s, 0, sizeof *s);
    s->n_layer = (uint32_t)cfg->n_layer, s->n_embd = (uint32_t)cfg->n_embd, s->n_ff_exp = (uint32_t)cfg->n_ff_exp;
    s->n_expert = (uint32_t)cfg->n_expert, s->n_expert_used = (uint32_t)cfg->n_expert_used;
    s->down_transposed = md->m->layers[0].down_transposed;
    for (int l = 0; l < cfg->n_layer; l++) {
        const st_layer_t *L = &md->m->layers[l];
        s->gate_type[l] = (uint8_t)L->gate_exps.type;
        s->up_type[l] = (uint8_t)L->up_exps.type;
        s->down_type[l] = (uint8_t)L->down_exps.type;
    }
    md->bytes = malloc(st_wire_max_expert_bytes(s));
    md->hash = malloc((size_t)cfg->n_layer * cfg->n_expert * 32);
    /* model hash: BLAKE2b of all expert hashes in order */
    uint8_t *all = malloc((size_t)cfg->n_layer * cfg->n_expert * 32);
    for (int l = 0; l < cfg->n_layer; l++)
        for (int e = 0; e < cfg->n_expert; e++) {
            st_wire_hash(s_expert(md, l, e), st_wire_expert_bytes(s, (uint32_t)l), md->hash[l * cfg->n_expert + e]);
            memcpy(all + (size_t)(l * cfg->n_expert + e) * 32, md->hash[l * cfg->n_expert + e], 32);
        }
    st_wire_hash(all, (size_t)cfg->n_layer * cfg->n_expert * 32, s->model_hash);
    free(all);
    char why[256];
    cr_assert_eq(st_wire_check_shape(s, why, sizeof why), 0, "%s", why);
}

static void s_free_model(model_t *md) {
    st_ctx_destroy(&md->ctx);
    st_model_destroy(&md->m);
    free(md->bytes);
    free(md->hash);
}

/* ---- protocol steps ---- */

static st_wire_msg_t s_hello(const model_t *md) {
    st_wire_msg_t m = {.type = ST_MSG_HELLO};
    strcpy(m.hello.coordinator_id, "test");
    m.hello.shape = md->shape;
    return m;
}

/* HELLO; returns the number of experts the node holds (and checks their hashes). */
static uint32_t s_do_hello(client_t *c, model_t *md) {
    st_wire_msg_t m = s_hello(md);
    st_wire_rx_t rx;
    s_call(c, &m, NULL, 0, &rx);
    cr_assert_eq(rx.msg.type, ST_MSG_INVENTORY, "%s: %s", st_wire_type_name(rx.msg.type), rx.msg.error.message);
    const st_wire_inventory_t *v = &rx.msg.inventory;
    cr_assert_str_eq(v->node_id, "test-node");
    cr_assert_gt(v->mem_budget, 0);
    cr_assert_gt(v->store_free, 0);
    for (uint32_t i = 0; i < v->n_held; i++)
        cr_assert_arr_eq(v->held[i].hash, md->hash[v->held[i].layer * md->shape.n_expert + v->held[i].expert], 32);
    uint32_t n = v->n_held;
    st_wire_rx_clear(&rx);
    return n;
}

/* ASSIGN the first n experts (layer by layer), pinning the first n_pin; returns how many are missing. */
static uint32_t s_do_assign_first(client_t *c, model_t *md, uint32_t n, uint32_t n_pin) {
    st_wire_ref_t *refs = calloc(n, sizeof *refs);
    for (uint32_t k = 0; k < n; k++) {
        refs[k] = (st_wire_ref_t){.layer = k / md->shape.n_expert, .expert = k % md->shape.n_expert, .has_hash = true};
        memcpy(refs[k].hash, md->hash[k], 32);
    }
    st_wire_msg_t m = {.type = ST_MSG_ASSIGN};
    m.assign =
        (st_wire_assign_t){.shape = md->shape, .n_experts = n, .experts = refs, .n_pinned = n_pin, .pinned = refs};
    st_wire_rx_t rx;
    s_call(c, &m, NULL, 0, &rx);
    cr_assert_eq(rx.msg.type, ST_MSG_ASSIGN_ACK, "%s: %s", st_wire_type_name(rx.msg.type), rx.msg.error.message);
    uint32_t missing = rx.msg.assign_ack.n_missing;
    st_wire_rx_clear(&rx);
    free(refs);
    return missing;
}

/* ASSIGN every expert of the model, pinning the first n_pin; returns how many are missing. */
static uint32_t s_do_assign(client_t *c, model_t *md, uint32_t n_pin) {
    return s_do_assign_first(c, md, md->shape.n_layer * md->shape.n_expert, n_pin);
}

/* Pushes one expert in chunks; returns the bytes sent. */
static uint64_t s_push_expert(client_t *c, model_t *md, uint32_t l, uint32_t e, size_t chunk) {
    const uint8_t *b = s_expert(md, (int)l, (int)e);
    const uint64_t total = st_wire_expert_bytes(&md->shape, l);
    for (uint64_t off = 0; off < total; off += chunk) {
        const size_t n = total - off < chunk ? (size_t)(total - off) : chunk;
        st_wire_msg_t m = {.type = ST_MSG_SHARD_PUT};
        m.shard_put = (st_wire_shard_put_t){.layer = l, .expert = e, .offset = off, .total = total};
        st_wire_hash(b + off, n, m.shard_put.chunk_hash);
        st_wire_rx_t rx;
        s_call(c, &m, b + off, n, &rx);
        cr_assert_eq(rx.msg.type, ST_MSG_SHARD_ACK, "%s: %s", st_wire_type_name(rx.msg.type), rx.msg.error.message);
        cr_assert(rx.msg.shard_ack.ok);
        cr_assert_eq(rx.msg.shard_ack.complete, off + n == total);
        st_wire_rx_clear(&rx);
    }
    return total;
}

static void s_push_all(client_t *c, model_t *md, size_t chunk) {
    for (uint32_t l = 0; l < md->shape.n_layer; l++)
        for (uint32_t e = 0; e < md->shape.n_expert; e++) s_push_expert(c, md, l, e, chunk);
}

/* What a coordinator does with a node before computing: c connected to p
 * (unless it is already), HELLO, every expert ASSIGNed with the first n_pin
 * pinned, and when some are missing all of them pushed in chunks of chunk
 * bytes. Returns how many were missing. */
static uint32_t s_ready(client_t *c, const node_proc_t *p, model_t *md, uint32_t n_pin, size_t chunk) {
    if (!c->sock) s_connect(c, p->p.url);
    s_do_hello(c, md);
    const uint32_t missing = s_do_assign(c, md, n_pin);
    if (missing) s_push_all(c, md, chunk);
    return missing;
}

/* One EXPERT_COMPUTE of n_tok random tokens with top-k distinct experts each
 * (random, or when all, spread so that the tokens use every expert),
 * compared bit for bit with st_experts_eval. */
typedef struct {
    double seconds;
    uint64_t compute_us;
    size_t bytes_out, bytes_in;
    uint32_t hits, misses, prefetched;
} compute_stats_t;

/* One EXPERT_COMPUTE of n_tok random rows, checked bit for bit; the pairs'
 * experts are `given` (n_tok x k), or drawn: all (covering every expert) or
 * at random from seed. */
static compute_stats_t s_compute_with(client_t *c, model_t *md, uint32_t layer, int n_tok, const int32_t *given,
                                      bool all, unsigned seed) {
    const int E = (int)md->shape.n_embd, X = (int)md->shape.n_expert;
    const int k = (int)md->shape.n_expert_used;
    const int n_pairs = n_tok * k;
    float *x = malloc((size_t)n_tok * E * sizeof(float));
    int32_t *tok = malloc((size_t)n_pairs * sizeof(int32_t)), *ids = malloc((size_t)n_pairs * sizeof(int32_t));
    srand(seed);
    for (int i = 0; i < n_tok * E; i++) x[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
    for (int t = 0; t < n_tok; t++)
        for (int j = 0; j < k; j++) {
            tok[t * k + j] = t;
            int e;
            bool dup;
            do { /* distinct experts per token, as the router picks them; all: the tokens cover every expert */
                e = given ? given[t * k + j] : all ? (t * k + j) % X : rand() % X;
                dup = false;
                for (int i = 0; i < j; i++) dup |= ids[t * k + i] == e;
            } while (dup);
            ids[t * k + j] = e;
        }
    /* what one process computes */
    float *want = malloc((size_t)n_pairs * E * sizeof(float));
    st_expert_set_t set = st_model_expert_set(md->ctx, (int)layer);
    cr_assert_eq(st_experts_eval(md->ctx, &set, n_pairs, tok, ids, x, n_tok, want), 0);
    /* what the node computes from the activations converted as a coordinator sends them */
    const size_t row = st_wire_act_row_bytes(&md->shape, layer);
    uint8_t *act = malloc((size_t)n_tok * row);
    st_convert_activations(md->ctx, (st_type_t)md->shape.gate_type[layer], x, n_tok, E, act);
    st_wire_msg_t m = {.type = ST_MSG_EXPERT_COMPUTE};
    m.compute = (st_wire_compute_t){.layer = layer,
                                    .n_tokens = (uint32_t)n_tok,
                                    .act_type = (uint32_t)st_wire_act_type(&md->shape, layer),
                                    .n_pairs = (uint32_t)n_pairs,
                                    .pair_token = tok,
                                    .pair_expert = ids};
    st_wire_rx_t rx;
    const uint64_t out0 = c->bytes_out, in0 = c->bytes_in;
    const double t0 = s_now();
    s_call(c, &m, act, (size_t)n_tok * row, &rx);
    compute_stats_t st = {.seconds = s_now() - t0};
    cr_assert_eq(rx.msg.type, ST_MSG_EXPERT_RESULT, "%s: %s", st_wire_type_name(rx.msg.type), rx.msg.error.message);
    size_t len;
    const uint8_t *got = st_wire_rx_frame(&rx, &len);
    char why[256];
    cr_assert_eq(st_wire_check(&rx.msg, &md->shape, len, why, sizeof why), 0, "%s", why);
    cr_assert_eq(len, (size_t)n_pairs * E * sizeof(float));
    cr_assert_eq(memcmp(got, want, len), 0, "layer %u, %d tokens: node output differs from st_experts_eval", layer,
                 n_tok);
    st.compute_us = rx.msg.result.compute_us;
    st.hits = rx.msg.result.cache_hits;
    st.misses = rx.msg.result.cache_misses;
    st.prefetched = rx.msg.result.cache_prefetched;
    st.bytes_out = (size_t)(c->bytes_out - out0);
    st.bytes_in = (size_t)(c->bytes_in - in0);
    st_wire_rx_clear(&rx);
    free(x), free(tok), free(ids), free(want), free(act);
    return st;
}

static compute_stats_t s_check_compute(client_t *c, model_t *md, uint32_t layer, int n_tok, bool all, unsigned seed) {
    return s_compute_with(c, md, layer, n_tok, NULL, all, seed);
}

static char g_store[256];

static void setup(void) {
    st_log_set_level(ST_LOG_ERROR);
    st_test_tmpdir(g_store, sizeof g_store, "node");
}
static void teardown(void) {
    st_test_cleanup(); /* a failed test's node (SIGTERM, which with-mem-limit passes on, then SIGKILL); g_store */
}
TestSuite(node, .init = setup, .fini = teardown, .timeout = 300);

#define SYNTH(...) ((const char *const[]){__VA_ARGS__, NULL})

Test(node, serves_experts_bit_identical_to_one_process) {
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "q4_0"));
    node_proc_t p = s_start(g_store, "256M", NULL);
    client_t c = {0};
    s_connect(&c, p.p.url);
    cr_assert_eq(s_do_hello(&c, &md), 0);
    const uint32_t n_all = md.shape.n_layer * md.shape.n_expert;
    cr_assert_eq(s_do_assign(&c, &md, 4), n_all);
    const uint64_t pushed0 = c.bytes_out;
    s_push_all(&c, &md, 1000);
    cr_log_info("pushed %u experts of %llu B: %llu B on the wire", n_all,
                (unsigned long long)st_wire_expert_bytes(&md.shape, 0), (unsigned long long)(c.bytes_out - pushed0));
    cr_assert_eq(s_do_assign(&c, &md, 4), 0); /* nothing missing now */

    /* decode-sized requests on every layer, then prefill-sized ones (chunked inside the node) */
    compute_stats_t d = {0};
    for (uint32_t l = 0; l < md.shape.n_layer; l++) d = s_check_compute(&c, &md, l, 1, false, 100 + l);
    for (int rep = 0; rep < 20; rep++) d = s_check_compute(&c, &md, 1, 1, false, 200 + (unsigned)rep);
    cr_log_info("decode (1 token, top-%u): node compute %llu us, round trip %.0f us, %zu B out, %zu B back",
                md.shape.n_expert_used, (unsigned long long)d.compute_us, d.seconds * 1e6, d.bytes_out, d.bytes_in);
    s_check_compute(&c, &md, 2, 7, false, 300);
    compute_stats_t pf = s_check_compute(&c, &md, 3, 300, false, 301);
    cr_log_info("prefill (300 tokens): node compute %llu us, %zu B out, %zu B back", (unsigned long long)pf.compute_us,
                pf.bytes_out, pf.bytes_in);
    s_check_compute(&c, &md, 0, 64, true, 302); /* every expert of the layer */

    /* a heartbeat reports the node's memory */
    st_wire_msg_t hb = {.type = ST_MSG_HEARTBEAT};
    hb.heartbeat.seq = 9;
    st_wire_rx_t rx;
    s_call(&c, &hb, NULL, 0, &rx);
    cr_assert_eq(rx.msg.type, ST_MSG_HEARTBEAT);
    cr_assert_eq(rx.msg.heartbeat.seq, 9);
    cr_assert_gt(rx.msg.heartbeat.board.rss, 0);
    cr_assert_lt(rx.msg.heartbeat.board.rss, 256u << 20);
    cr_assert_gt(rx.msg.heartbeat.board.cache_bytes, 0, "the experts just computed are in its cache");
    cr_assert_leq(rx.msg.heartbeat.board.cache_bytes, 256u << 20, "within --mem");
    st_wire_rx_clear(&rx);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0, "st-node did not exit cleanly");
    s_free_model(&md);
}

/* Experts are kept packed for the kernels only while all the assigned ones
 * fit in --mem (else every miss would pay the packing again): an assignment
 * that outgrows the budget switches the node to the file's layout and
 * empties its cache, and the results stay bit for bit one process's. */
Test(node, layout_follows_whether_the_assignment_fits) {
    /* the node charges its own RSS to --mem: under qemu-user that is the emulator's too */
    if (*st_test_run_prefix()) cr_skip_test("under an emulator: its memory would count as the node's");
    if (!st_kernels_select()->pack_rows[ST_TYPE_Q4_0])
        cr_skip_test("the %s kernels do not pack", st_kernels_select()->name);
    model_t md = {0};
    /* Q4_0 experts of 442 KB (packable), 32 layers x 8: 113 MB in all, one layer 3.5 MB; the node's
     * fixed share is 45-70 MB (ASan's own memory included), so one layer fits in 96M and all do not */
    s_load_model(&md, SYNTH("--type", "q4_0", "--hidden", "512", "--expert-ffn", "512", "--layers", "32", "--heads",
                            "4", "--kv-heads", "2"));
    node_proc_t p = s_start(g_store, "96M", NULL);
    client_t c = {0};
    s_connect(&c, p.p.url);
    s_do_hello(&c, &md);
    const uint32_t X = md.shape.n_expert, n_all = md.shape.n_layer * X;
    cr_assert_eq(s_do_assign_first(&c, &md, X, 0), X); /* layer 0 only: fits, packed */
    for (uint32_t e = 0; e < X; e++) s_push_expert(&c, &md, 0, e, ST_WIRE_MAX_CHUNK);
    s_check_compute(&c, &md, 0, 5, true, 41);
    s_check_compute(&c, &md, 0, 1, false, 42);
    cr_assert_eq(s_do_assign(&c, &md, 0), n_all - X); /* everything: does not fit, the file's layout */
    s_check_compute(&c, &md, 0, 5, true, 43);
    s_check_compute(&c, &md, 0, 1, false, 44);
    cr_assert_eq(s_do_assign_first(&c, &md, X, 0), 0); /* back to one layer: packed again */
    s_check_compute(&c, &md, 0, 5, true, 45);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0, "st-node did not exit cleanly");
    s_free_model(&md);
}

/* INVENTORY tells the room a coordinator places on: --mem less what the node keeps for itself,
 * and one cached expert's cost. The layout test's model: Q4_0 experts of 3 x 512 x 512 weights,
 * 3 x 147456 = 442368 B (108 blocks of 4 KiB: no padding), costing 442368 rounded up to whole
 * pages + a 64-byte entry (442432 B on 4 KiB pages). The node's own bytes are at least its store
 * index (256 keys x 37 + 16 + a record) and its message reserves (4 x 4.06 MiB in, 3 replies of
 * 512 tokens x 2 experts x 512 floats out = 6 MiB, 4.5 MiB of slack): over 27 MiB. Given exactly
 * room / cost experts, the node holds them all: a second pass over them reads nothing from its
 * store. One more and it cannot: it keeps the file's layout and a pass misses in its cache. */
Test(node, an_assignment_of_exactly_its_room_stays_in_ram) {
    if (*st_test_run_prefix()) cr_skip_test("under an emulator: its memory would count as the node's");
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "q4_0", "--hidden", "512", "--expert-ffn", "512", "--layers", "32", "--heads",
                            "4", "--kv-heads", "2"));
    cr_assert_eq(st_wire_max_expert_bytes(&md.shape), 442368);
    node_proc_t p = s_start(g_store, "96M", NULL);
    client_t c = {0};
    s_connect(&c, p.p.url);
    st_wire_msg_t m = s_hello(&md);
    st_wire_rx_t rx;
    s_call(&c, &m, NULL, 0, &rx);
    cr_assert_eq(rx.msg.type, ST_MSG_INVENTORY);
    const uint64_t room = rx.msg.inventory.room, cost = rx.msg.inventory.expert_cost;
    st_wire_rx_clear(&rx);
    const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    cr_assert_eq(cost, (442368 + page - 1) / page * page + 64, "cost %llu B", (unsigned long long)cost);
    cr_assert_lt(room, (96u << 20) - (27u << 20), "room %llu B of --mem 96M", (unsigned long long)room);
    const uint32_t X = md.shape.n_expert, fit = (uint32_t)(room / cost);
    cr_log_info("room %llu B: %u experts of %llu B", (unsigned long long)room, fit, (unsigned long long)cost);
    cr_assert(fit >= 2 * X && fit + 1 < md.shape.n_layer * X, "the test needs a room of 2 to 31 layers: %u", fit);
    for (int more = 0; more < 2; more++) {
        const uint32_t n = fit + (uint32_t)more;
        const uint32_t missing = s_do_assign_first(&c, &md, n, 0);
        for (uint32_t k = n - missing; k < n; k++) s_push_expert(&c, &md, k / X, k % X, ST_WIRE_MAX_CHUNK);
        /* one pair a request, as a coordinator sends a node the pairs it owns (s_compute_with
         * draws k per token: 1 here) */
        const uint32_t k_used = md.shape.n_expert_used;
        md.shape.n_expert_used = 1;
        uint32_t misses = 0; /* of the second pass over every expert assigned, in order */
        for (int pass = 0; pass < 2; pass++)
            for (uint32_t k = 0; k < n; k++) {
                const int32_t e = (int32_t)(k % X);
                compute_stats_t st = s_compute_with(&c, &md, k / X, 1, &e, false, 50 + k);
                if (pass) misses += st.misses;
            }
        md.shape.n_expert_used = k_used;
        cr_log_info("%u experts assigned (room for %u): %u misses in the second pass", n, fit, misses);
        if (more)
            cr_assert_gt(misses, 0, "one expert over the room, and nothing is read from the store");
        else
            cr_assert_eq(misses, 0, "%u experts, exactly the room the node told: %u read from its store", n, misses);
    }
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0, "st-node did not exit cleanly");
    s_free_model(&md);
}

Test(node, f32_experts_with_prefetch) {
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "f32", "--layers", "2"));
    node_proc_t p = s_start(g_store, "128M", NULL);
    client_t c = {0};
    s_ready(&c, &p, &md, 0, ST_WIRE_MAX_CHUNK);
    /* one-way prefetch: no reply; the next request finds them in RAM */
    st_wire_msg_t pf = {.type = ST_MSG_EXPERT_PREFETCH, .request_id = 777};
    uint32_t ex[3] = {1, 2, 5};
    pf.prefetch = (st_wire_prefetch_t){.layer = 1, .n_experts = 3, .experts = ex};
    cr_assert_eq(st_wire_send(c.sock, NULL, 0, &pf, NULL, 0, 0), 0);
    s_check_compute(&c, &md, 1, 3, false, 5);
    s_check_compute(&c, &md, 0, 33, true, 6);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);
    s_free_model(&md);
}

/* An expert the prefetch hint had read from the store is reported as
 * prefetched, not as a hit: a hit is an expert that was in RAM before it was
 * named. The test waits (with a deadline) until the node's expert cache
 * holds the hinted experts, so a node that counted them as hits would fail. */
Test(node, prefetched_experts_are_not_hits) {
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "f32", "--layers", "2"));
    node_proc_t p = s_start(g_store, "128M", NULL);
    client_t c = {0};
    s_ready(&c, &p, &md, 0, ST_WIRE_MAX_CHUNK); /* nothing pinned: no expert in RAM after the push */
    const int k = (int)md.shape.n_expert_used;
    cr_assert_leq(2 * k, (int)md.shape.n_expert);
    int32_t hinted[64], other[64];
    uint32_t ex[64];
    for (int j = 0; j < k; j++) hinted[j] = j, ex[j] = (uint32_t)j, other[j] = k + j;
    st_wire_msg_t hb = {.type = ST_MSG_HEARTBEAT};
    st_wire_rx_t rx;
    s_call(&c, &hb, NULL, 0, &rx);
    const uint64_t held0 = rx.msg.heartbeat.board.cache_bytes, want = (uint64_t)k * st_wire_expert_bytes(&md.shape, 1);
    st_wire_rx_clear(&rx);

    st_wire_msg_t pf = {.type = ST_MSG_EXPERT_PREFETCH, .request_id = 778};
    pf.prefetch = (st_wire_prefetch_t){.layer = 1, .n_experts = (uint32_t)k, .experts = ex};
    cr_assert_eq(st_wire_send(c.sock, NULL, 0, &pf, NULL, 0, 0), 0);
    uint64_t held = held0;
    for (const double end = s_now() + DEADLINE_MS / 1e3; held < held0 + want && s_now() < end;) {
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL); /* idle turns load the queue */
        s_call(&c, &hb, NULL, 0, &rx);
        held = rx.msg.heartbeat.board.cache_bytes;
        st_wire_rx_clear(&rx);
    }
    cr_assert_geq(held, held0 + want, "the hinted experts were not read within %d ms (cache %llu -> %llu B)",
                  DEADLINE_MS, (unsigned long long)held0, (unsigned long long)held);

    compute_stats_t st = s_compute_with(&c, &md, 1, 1, hinted, false, 1);
    cr_expect_eq(st.hits, 0, "%u experts read on the hint were reported as hits", st.hits);
    cr_expect_eq(st.prefetched, (uint32_t)k);
    cr_expect_eq(st.misses, 0);
    st = s_compute_with(&c, &md, 1, 1, hinted, false, 2); /* now they were in RAM before being named */
    cr_expect_eq(st.hits, (uint32_t)k);
    cr_expect_eq(st.prefetched, 0);
    cr_expect_eq(st.misses, 0);
    st = s_compute_with(&c, &md, 1, 1, other, false, 3); /* never hinted nor read: read on demand */
    cr_expect_eq(st.hits, 0);
    cr_expect_eq(st.prefetched, 0);
    cr_expect_eq(st.misses, (uint32_t)k);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);
    s_free_model(&md);
}

Test(node, bad_messages_get_errors_and_the_node_keeps_serving) {
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "q4_0"));
    node_proc_t p = s_start(g_store, "256M", NULL);
    client_t c = {0};
    s_connect(&c, p.p.url);

    /* before any model: compute is refused */
    int32_t tok[2] = {0, 0}, ids[2] = {0, 1};
    const size_t row = st_wire_act_row_bytes(&md.shape, 0);
    uint8_t *act = calloc(4, row);
    st_wire_msg_t cm = {.type = ST_MSG_EXPERT_COMPUTE};
    cm.compute = (st_wire_compute_t){
        .layer = 0, .n_tokens = 1, .act_type = ST_TYPE_Q8_0, .n_pairs = 2, .pair_token = tok, .pair_expert = ids};
    s_expect_error(&c, &cm, act, row, "compute before ASSIGN");

    s_do_hello(&c, &md);
    s_do_assign(&c, &md, 0);
    /* a tampered shard chunk: SHARD_ACK ok=false, nothing stored */
    const uint8_t *b = s_expert(&md, 0, 0);
    const uint64_t EB = st_wire_expert_bytes(&md.shape, 0);
    uint8_t *bad = malloc(EB);
    memcpy(bad, b, EB);
    st_wire_msg_t sp = {.type = ST_MSG_SHARD_PUT};
    sp.shard_put = (st_wire_shard_put_t){.layer = 0, .expert = 0, .offset = 0, .total = EB};
    st_wire_hash(bad, EB, sp.shard_put.chunk_hash);
    bad[10] ^= 4; /* flipped after hashing: in transit */
    st_wire_rx_t rx;
    s_call(&c, &sp, bad, EB, &rx);
    cr_assert_eq(rx.msg.type, ST_MSG_SHARD_ACK);
    cr_assert(!rx.msg.shard_ack.ok && !rx.msg.shard_ack.complete);
    st_wire_rx_clear(&rx);
    /* a consistent chunk of the wrong bytes: the whole-expert hash (from ASSIGN) refuses it */
    st_wire_hash(bad, EB, sp.shard_put.chunk_hash);
    s_call(&c, &sp, bad, EB, &rx);
    cr_assert_eq(rx.msg.type, ST_MSG_SHARD_ACK);
    cr_assert(!rx.msg.shard_ack.ok && !rx.msg.shard_ack.complete);
    st_wire_rx_clear(&rx);
    free(bad);
    cr_assert_eq(s_do_hello(&c, &md), 0); /* not stored */
    s_expect_error(&c, &cm, act, row, "compute of an expert not pushed yet");
    s_push_all(&c, &md, 4096);

    /* garbage, truncated and wrong-version envelopes */
    zmq_send(c.sock, "\x01\x02\x03garbage", 10, 0);
    st_wire_rx_t e;
    cr_assert_eq(st_wire_recv(c.sock, false, &e, NULL, 0), 0);
    cr_assert_eq(e.msg.type, ST_MSG_ERROR);
    st_wire_rx_clear(&e);
    uint8_t env[256];
    size_t env_len;
    cm.request_id = 4242;
    cr_assert_eq(st_wire_encode(&cm, env, sizeof env, &env_len), 0);
    for (size_t cut = 1; cut < env_len; cut += 3) {
        zmq_send(c.sock, env, cut, ZMQ_SNDMORE);
        zmq_send(c.sock, act, row, 0);
        cr_assert_eq(st_wire_recv(c.sock, false, &e, NULL, 0), 0, "no answer to a %zu B truncation", cut);
        cr_assert_eq(e.msg.type, ST_MSG_ERROR);
        st_wire_rx_clear(&e);
    }
    env[1] = ST_WIRE_VERSION + 1;
    zmq_send(c.sock, env, env_len, 0);
    cr_assert_eq(st_wire_recv(c.sock, false, &e, NULL, 0), 0);
    cr_assert_eq(e.msg.type, ST_MSG_ERROR);
    cr_assert_eq(e.msg.request_id, 4242);
    cr_assert(strstr(e.msg.error.message, "version"), "%s", e.msg.error.message);
    st_wire_rx_clear(&e);

    /* requests that parse but do not fit the model or the assignment */
    st_wire_msg_t b2 = cm;
    s_expect_error(&c, &b2, act, row - 1, "activation frame one byte short");
    s_expect_error(&c, &b2, act, row + 1, "activation frame one byte long");
    s_expect_error(&c, &b2, NULL, 0, "no activation frame");
    b2.compute.layer = md.shape.n_layer;
    s_expect_error(&c, &b2, act, row, "layer out of range");
    b2 = cm, b2.compute.act_type = ST_TYPE_F32;
    s_expect_error(&c, &b2, act, 64 * 4, "wrong activation type");
    int32_t bad_tok[2] = {0, 1}, bad_ids[2] = {0, 8};
    b2 = cm, b2.compute.pair_token = bad_tok;
    s_expect_error(&c, &b2, act, row, "pair token beyond n_tokens");
    b2 = cm, b2.compute.pair_expert = bad_ids;
    s_expect_error(&c, &b2, act, row, "expert id beyond n_expert");
    b2 = cm, b2.compute.n_tokens = ST_WIRE_MAX_TOKENS + 1;
    s_expect_error(&c, &b2, act, row, "too many tokens");
    st_wire_msg_t inv = {.type = ST_MSG_INVENTORY};
    s_expect_error(&c, &inv, NULL, 0, "a message type a node does not take");
    st_wire_msg_t other = s_hello(&md);
    other.hello.shape.gate_type[0] = 99; /* no such type */
    s_expect_error(&c, &other, NULL, 0, "inconsistent shape");
    st_wire_msg_t sp2 = sp;
    sp2.shard_put.offset = EB;
    s_expect_error(&c, &sp2, "x", 1, "shard chunk past the end");

    /* a frame above ZMQ_MAXMSGSIZE: the node drops that connection instead of reading it */
    size_t huge = ST_WIRE_MAX_FRAME + 1;
    uint8_t *big = calloc(1, huge);
    st_wire_msg_t bm = cm;
    bm.request_id = 99;
    cr_assert_eq(st_wire_send(c.sock, NULL, 0, &bm, big, huge, 0), 0);
    free(big);
    s_disconnect(&c);

    /* the node still serves a new connection, correctly */
    s_connect(&c, p.p.url);
    s_check_compute(&c, &md, 2, 3, false, 11);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);
    free(act);
    s_free_model(&md);
}

/* A coordinator pipelines requests (heartbeats, a window of shard chunks):
 * the node answers every one, in order, none dropped on a full queue. */
Test(node, pipelined_requests_all_get_replies) {
    node_proc_t p = s_start(g_store, "64M", NULL);
    client_t c = {0};
    s_connect(&c, p.p.url);
    enum { N = 200 };
    for (uint64_t i = 0; i < N; i++) {
        st_wire_msg_t hb = {.type = ST_MSG_HEARTBEAT, .request_id = 1000 + i};
        hb.heartbeat.seq = i;
        cr_assert_eq(st_wire_send(c.sock, NULL, 0, &hb, NULL, 0, 0), 0);
    }
    for (uint64_t i = 0; i < N; i++) {
        st_wire_rx_t rx;
        cr_assert_eq(st_wire_recv(c.sock, false, &rx, NULL, 0), 0, "reply %llu of %d missing", (unsigned long long)i,
                     N);
        cr_assert_eq(rx.msg.type, ST_MSG_HEARTBEAT);
        cr_assert_eq(rx.msg.request_id, 1000 + i); /* in order */
        cr_assert_eq(rx.msg.heartbeat.seq, i);
        st_wire_rx_clear(&rx);
    }
    /* shard chunks with a window of 4 in flight, as the coordinator pushes them */
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "f32"));
    s_do_hello(&c, &md);
    s_do_assign(&c, &md, 0);
    const uint32_t n_all = md.shape.n_layer * md.shape.n_expert;
    const uint64_t EB = st_wire_expert_bytes(&md.shape, 0); /* st-synth: the same types in every layer */
    const size_t chunk = 16384, per = (size_t)((EB + chunk - 1) / chunk);
    size_t sent = 0, acked = 0, complete = 0;
    while (acked < n_all * per) {
        while (sent < n_all * per && sent - acked < 4) {
            const uint32_t k = (uint32_t)(sent / per);
            const uint64_t off = (sent % per) * chunk;
            const uint8_t *b = s_expert(&md, (int)(k / md.shape.n_expert), (int)(k % md.shape.n_expert));
            const size_t n = EB - off < chunk ? (size_t)(EB - off) : chunk;
            st_wire_msg_t m = {.type = ST_MSG_SHARD_PUT, .request_id = 5000 + sent};
            m.shard_put = (st_wire_shard_put_t){
                .layer = k / md.shape.n_expert, .expert = k % md.shape.n_expert, .offset = off, .total = EB};
            st_wire_hash(b + off, n, m.shard_put.chunk_hash);
            cr_assert_eq(st_wire_send(c.sock, NULL, 0, &m, b + off, n, 0), 0);
            sent++;
        }
        st_wire_rx_t rx;
        cr_assert_eq(st_wire_recv(c.sock, false, &rx, NULL, 0), 0, "ack %zu of %zu missing", acked, n_all * per);
        cr_assert_eq(rx.msg.type, ST_MSG_SHARD_ACK);
        cr_assert_eq(rx.msg.request_id, 5000 + acked);
        cr_assert(rx.msg.shard_ack.ok);
        complete += rx.msg.shard_ack.complete;
        st_wire_rx_clear(&rx);
        acked++;
    }
    cr_assert_eq(complete, n_all);
    s_check_compute(&c, &md, 1, 4, false, 3);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);
    s_free_model(&md);
}

Test(node, restart_reports_its_store_and_needs_no_shards) {
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "q4_0"));
    const uint32_t n_all = md.shape.n_layer * md.shape.n_expert;
    node_proc_t p = s_start(g_store, "256M", NULL);
    client_t c = {0};
    cr_assert_eq(s_ready(&c, &p, &md, 2, 2048), n_all, "a new store holds an expert");
    s_check_compute(&c, &md, 1, 2, false, 1);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);

    p = s_start(g_store, "256M", NULL);
    client_t c2 = {0};
    s_connect(&c2, p.p.url);
    cr_assert_eq(s_do_hello(&c2, &md), n_all); /* everything is still there, hashes checked */
    cr_assert_eq(s_do_assign(&c2, &md, 2), 0); /* so no shard needs sending */
    s_check_compute(&c2, &md, 1, 2, false, 1);
    s_check_compute(&c2, &md, 3, 5, false, 2);
    s_client_close(&c2);
    cr_assert_eq(s_stop(&p), 0);
    s_free_model(&md);
}

/* Bigger F32 experts (3 MiB each) under a small --mem: a request that needs
 * more experts than fit is computed in batches, still bit-identical, and the
 * node's peak memory (page cache included) stays under --mem. */
Test(node, small_memory_budget_is_respected) {
    /* the node charges its own RSS to --mem: under qemu-user (cross builds) that is the emulator's too */
    if (*st_test_run_prefix()) cr_skip_test("under an emulator: its memory would count as the node's");
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "f32", "--hidden", "512", "--expert-ffn", "512", "--layers", "2", "--heads", "4",
                            "--kv-heads", "2", "--embd-type", "q4_0", "--tied"));
    char tool[1024], report[300];
    snprintf(tool, sizeof tool, "%s/../shared/tools/with-mem-limit", ST_SOURCE_DIR);
    snprintf(report, sizeof report, "%s/mem.json", g_store);
    /* measure peak memory when the cgroup tool can run here */
#ifdef __SANITIZE_ADDRESS__
    const bool limit = false; /* ASan's shadow memory and quarantine are not the node's */
#else
    const bool limit = access(tool, X_OK) == 0 && st_test_system("'%s' 64M -- true 2>/dev/null", tool) == 0;
#endif
    if (!limit) cr_log_info("with-mem-limit unavailable or sanitized build: peak memory not measured");
        /* ASan's own memory counts in the node's RSS (17-25 MB of the fixed part,
         * varying by run): a larger budget there, still room for few experts */
#ifdef __SANITIZE_ADDRESS__
    const char *mem = "64M";
#else
    const char *mem = "48M";
#endif
    node_proc_t p = s_start(g_store, mem, limit ? report : NULL);
    client_t c = {0};
    cr_assert_eq(s_ready(&c, &p, &md, 1, ST_WIRE_MAX_CHUNK), md.shape.n_layer * md.shape.n_expert);
    compute_stats_t st = s_check_compute(&c, &md, 0, 40, true, 21); /* 40 tokens over all 8 experts */
    cr_log_info("all experts of a layer under --mem %s: %u from RAM, %u from the store, %llu us", mem, st.hits,
                st.misses, (unsigned long long)st.compute_us);
    for (int rep = 0; rep < 4; rep++) s_check_compute(&c, &md, (uint32_t)rep % 2, 3, false, 30 + (unsigned)rep);
    st_wire_msg_t hb = {.type = ST_MSG_HEARTBEAT};
    st_wire_rx_t rx;
    s_call(&c, &hb, NULL, 0, &rx);
    cr_log_info("node RSS %llu B under --mem %s", (unsigned long long)rx.msg.heartbeat.board.rss, mem);
#ifndef __SANITIZE_ADDRESS__
    cr_assert_lt(rx.msg.heartbeat.board.rss, 48u << 20);
#endif
    if (limit) { /* alone in with-mem-limit's cgroup: the node reports that cgroup's figures */
        const st_wire_board_t *b = &rx.msg.heartbeat.board;
        cr_log_info("node cgroup: %llu B charged, %llu B of it page cache, limit %llu B",
                    (unsigned long long)b->cgroup_mem, (unsigned long long)b->cgroup_file,
                    (unsigned long long)b->cgroup_max);
        cr_assert(b->has_cgroup, "a node alone in a memory cgroup reports it");
        cr_assert_eq(b->cgroup_max, 48u << 20, "the limit with-mem-limit set (--mem %s)", mem);
        cr_assert(b->cgroup_mem > 0 && b->cgroup_mem < 48u << 20 && b->cgroup_file <= b->cgroup_mem);
    }
    st_wire_rx_clear(&rx);
    s_client_close(&c);
    int stop_st = s_stop(&p);
    /* under the wrapper, its status is the node's except that it sometimes
     * reports 143 for a node that stopped cleanly (its wait is interrupted by
     * a TERM it receives; seen about 1 run in 8 under load, cause not found):
     * the other tests check the node's own clean exit without a wrapper.
     * Logged as info: Criterion's runner exits 1 after any cr_log_warn. */
    if (limit && stop_st == 143)
        cr_log_info("with-mem-limit reported 143 for the stopped node");
    else
        cr_assert_eq(stop_st, 0, "st-node (under with-mem-limit: %d) exited with %d", limit, stop_st);
    if (limit) {
        cJSON *j = st_test_read_json(report);
        cr_assert_not_null(j);
        const double peak = cJSON_GetObjectItem(j, "peak_bytes")->valuedouble;
        const double hits = cJSON_GetObjectItem(j, "limit_hits")->valuedouble;
        cr_log_info("peak %.0f B (page cache included) under --mem %s, limit hit %.0f times", peak, mem, hits);
        cr_assert_lt(peak, 48.0 * 1024 * 1024);
        cr_assert_eq(hits, 0);
        cJSON_Delete(j);
    }
    s_free_model(&md);
}

/* Numbers on a 4B-shaped layer (n_embd 1536, 32 experts of 768, top-4, Q4_0):
 * set ST_NODE_BENCH=1 to run it (it generates a ~300 MB model once). */
Test(node, bench_4b_shaped) {
    if (!getenv("ST_NODE_BENCH")) cr_skip_test("set ST_NODE_BENCH=1 to run");
    model_t md = {0};
    s_load_model(&md, SYNTH("--preset", "4b", "--layers", "1", "--type", "q4_0"));
    node_proc_t p = s_start(g_store, "1G", NULL);
    client_t c = {0};
    s_connect(&c, p.p.url);
    s_do_hello(&c, &md);
    s_do_assign(&c, &md, 0);
    const double t0 = s_now();
    s_push_all(&c, &md, ST_WIRE_MAX_CHUNK);
    const double push = s_now() - t0;
    cr_log_info("4b-shaped: pushed %u experts of %llu B in %.2f s (%.0f MB/s)", md.shape.n_expert,
                (unsigned long long)st_wire_expert_bytes(&md.shape, 0), push,
                (double)md.shape.n_expert * (double)st_wire_expert_bytes(&md.shape, 0) / push / 1e6);
    s_check_compute(&c, &md, 0, 8, true, 1); /* warm: every expert in RAM */
    double rt = 0, comp = 0;
    const int reps = 50;
    compute_stats_t st = {0};
    for (int i = 0; i < reps; i++) {
        st = s_check_compute(&c, &md, 0, 1, false, 10 + (unsigned)i);
        rt += st.seconds, comp += (double)st.compute_us;
    }
    cr_log_info("4b-shaped decode (1 token x top-%u on one node): node compute %.0f us, round trip %.0f us, "
                "%zu B out, %zu B back",
                md.shape.n_expert_used, comp / reps, rt / reps * 1e6, st.bytes_out, st.bytes_in);
    st = s_check_compute(&c, &md, 0, 128, false, 99);
    cr_log_info(
        "4b-shaped prefill (128 tokens x top-%u): node compute %llu us, round trip %.0f us, %zu B out, %zu B back",
        md.shape.n_expert_used, (unsigned long long)st.compute_us, st.seconds * 1e6, st.bytes_out, st.bytes_in);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);
    s_free_model(&md);
}

/* A coordinator of the previous protocol version (2: no head messages, no compact results; same
 * release number) is refused with an ERROR that names both sides' versions, and the node's log
 * says the same; a coordinator of the same protocol but another release is served, with a
 * warning. The INVENTORY names the node's version. */
Test(node, another_version_is_named_on_both_sides) {
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "q4_0"));
    char bin[1024], log[300];
    snprintf(bin, sizeof bin, "%s/st-node", ST_BINARY_DIR);
    snprintf(log, sizeof log, "%s.log", g_store);
    const char *argv[] = {bin,  "--listen", "tcp://127.0.0.1:*", "--mem", "256M",      "--store", g_store,
                          "-t", "1",        "--insecure",        "--id",  "test-node", NULL};
    node_proc_t p = {0};
    cr_assert_eq(st_test_node_start(&p.p, argv, log, DEADLINE_MS), 0);
    client_t c = {0};
    s_connect(&c, p.p.url);

    uint8_t env[256];
    size_t len = st_test_foreign_envelope(env, 2, ST_MSG_HELLO, 7, "st-coordinator 0.4.0 (git 29140ea)");
    cr_assert_eq(zmq_send(c.sock, env, len, 0), (int)len);
    st_wire_rx_t rx;
    char why[256];
    cr_assert_eq(st_wire_recv(c.sock, false, &rx, why, sizeof why), 0, "%s", why);
    cr_assert_eq(rx.msg.type, ST_MSG_ERROR);
    cr_assert_eq(rx.msg.request_id, 7);
    char want_me[128];
    snprintf(want_me, sizeof want_me, "this is st-node %s", ST_TEST_PROJECT_VERSION);
    cr_assert(strstr(rx.msg.error.message, "protocol version 2 from st-coordinator 0.4.0 (git 29140ea)") &&
                  strstr(rx.msg.error.message, want_me) && strstr(rx.msg.error.message, "protocol version 3:"),
              "%s", rx.msg.error.message);
    st_wire_rx_clear(&rx);
    cr_assert(st_test_file_has(log, "protocol version 2 from st-coordinator 0.4.0 (git 29140ea)", DEADLINE_MS));
    cr_assert(st_test_file_has(log, want_me, DEADLINE_MS));

    /* same protocol, another release: served, and the node warns */
    st_wire_msg_t m = s_hello(&md);
    strcpy(m.hello.software, "st-coordinator 9.9.9 (git fake)");
    s_call(&c, &m, NULL, 0, &rx);
    cr_assert_eq(rx.msg.type, ST_MSG_INVENTORY);
    char want_sw[128];
    snprintf(want_sw, sizeof want_sw, "st-node %s", ST_TEST_PROJECT_VERSION);
    cr_assert(!strncmp(rx.msg.inventory.software, want_sw, strlen(want_sw)), "INVENTORY software '%s'",
              rx.msg.inventory.software);
    st_wire_rx_clear(&rx);
    cr_assert(st_test_file_has(log, "the coordinator runs st-coordinator 9.9.9 (git fake) and this node st-node",
                               DEADLINE_MS));
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);
    if (getenv("ST_TEST_KEEP_LOG"))
        cr_log_info("node log: %s", log);
    else
        remove(log);
    s_free_model(&md);
}

/* ---- hostile peers ---- */

/* Sends one EXPERT_COMPUTE of n_tok tokens on sock without waiting for its
 * reply (zero activations: only the traffic matters here). */
static void s_send_compute(void *sock, const model_t *md, uint32_t layer, int n_tok, uint64_t id) {
    const int k = (int)md->shape.n_expert_used, X = (int)md->shape.n_expert;
    int32_t *tok = malloc((size_t)n_tok * k * sizeof(int32_t)), *ids = malloc((size_t)n_tok * k * sizeof(int32_t));
    for (int t = 0; t < n_tok; t++)
        for (int j = 0; j < k; j++) tok[t * k + j] = t, ids[t * k + j] = (t + j) % X;
    const size_t row = st_wire_act_row_bytes(&md->shape, layer);
    uint8_t *act = calloc((size_t)n_tok, row);
    st_wire_msg_t m = {.type = ST_MSG_EXPERT_COMPUTE, .request_id = id};
    m.compute = (st_wire_compute_t){.layer = layer,
                                    .n_tokens = (uint32_t)n_tok,
                                    .act_type = (uint32_t)st_wire_act_type(&md->shape, layer),
                                    .n_pairs = (uint32_t)(n_tok * k),
                                    .pair_token = tok,
                                    .pair_expert = ids};
    cr_assert_eq(st_wire_send(sock, NULL, 0, &m, act, (size_t)n_tok * row, 0), 0);
    free(tok), free(ids), free(act);
}

/* CURVE for a client socket: the node's public key and a key pair the node allows. */
typedef struct {
    bool on;
    char node_pub[41], pub[41], sec[41];
} curve_t;

static void s_curve_client(void *sock, const curve_t *cv) {
    if (!cv->on) return;
    cr_assert_eq(zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, cv->node_pub, 40), 0);
    cr_assert_eq(zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, cv->pub, 40), 0);
    cr_assert_eq(zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, cv->sec, 40), 0);
}

/* Starts st-node on g_store, CURVE (allowing cv's key) or --insecure; its
 * stderr goes to log (NULL: the test's). */
static node_proc_t s_start_node(curve_t *cv, const char *log) {
    node_proc_t p = {0};
    char bin[1024], allow[300];
    snprintf(bin, sizeof bin, "%s/st-node", ST_BINARY_DIR);
    snprintf(allow, sizeof allow, "%s/allow.pub", g_store);
    const char *argv[] = {bin,
                          "--listen",
                          "tcp://127.0.0.1:*",
                          "--mem",
                          "256M",
                          "--store",
                          g_store,
                          "-t",
                          "2",
                          "--id",
                          "test-node",
                          cv->on ? "--allow" : "--insecure",
                          cv->on ? allow : NULL,
                          NULL};
    if (cv->on) {
        FILE *f = fopen(allow, "w");
        cr_assert_not_null(f);
        fprintf(f, "%s\n", cv->pub);
        fclose(f);
    }
    cr_assert_eq(st_test_node_start(&p.p, argv, log, DEADLINE_MS), 0, "st-node exited before listening");
    if (cv->on) snprintf(cv->node_pub, sizeof cv->node_pub, "%s", p.p.pub);
    return p;
}

/* s_ready over a connection with CURVE per cv. */
static void s_join(client_t *c, const node_proc_t *p, const curve_t *cv, model_t *md) {
    s_connect(c, p->p.url);
    s_curve_client(c->sock, cv);
    cr_assert_eq(zmq_disconnect(c->sock, p->p.url), 0); /* the keys apply to connections made after them */
    cr_assert_eq(zmq_connect(c->sock, p->p.url), 0);
    s_ready(c, p, md, 0, ST_WIRE_MAX_CHUNK);
}

/* Whether the node answers a HEARTBEAT on c within the deadline; *status is
 * its exit status when it died meanwhile (then false), else -1. */
static bool s_answers(node_proc_t *p, client_t *c, int *status) {
    st_wire_msg_t hb = {.type = ST_MSG_HEARTBEAT, .request_id = c->next_id++};
    *status = -1;
    cr_assert_eq(st_wire_send(c->sock, NULL, 0, &hb, NULL, 0, 0), 0);
    const double deadline = st_now_ms() + DEADLINE_MS;
    while (st_now_ms() < deadline) {
        zmq_pollitem_t it = {.socket = c->sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 100) == 1) {
            st_wire_rx_t rx;
            cr_assert_eq(st_wire_recv(c->sock, false, &rx, NULL, 0), 0);
            const bool ok = rx.msg.type == ST_MSG_HEARTBEAT && rx.msg.request_id == hb.request_id;
            st_wire_rx_clear(&rx);
            if (ok) return true;
            continue; /* a late reply to something else */
        }
        if ((*status = st_test_wait(p->p.pid, 0)) >= 0) {
            p->p.pid = 0;
            close(p->p.out);
            return false;
        }
    }
    cr_assert_fail("st-node neither answered nor exited within %d ms", DEADLINE_MS);
    return false;
}

/* One hostile connection: n_req large (512-token) compute requests whose
 * replies it does not read (libzmq holds one, the kernel's buffers a few;
 * then the node's queue to it is full and its replies wait), then it hangs up
 * with unread data, which resets the connection while the node's queue from
 * it is full. */
static void s_flood_and_vanish(const char *url, const curve_t *cv, const model_t *md, int n_req) {
    void *ctx = zmq_ctx_new(), *s = zmq_socket(ctx, ZMQ_DEALER);
    cr_assert_eq(st_wire_socket_limits(s, 64 << 20, 1), 0);
    const int sndhwm = 100, rcvbuf = 64 << 10;
    zmq_setsockopt(s, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
    zmq_setsockopt(s, ZMQ_RCVBUF, &rcvbuf, sizeof rcvbuf);
    s_curve_client(s, cv);
    cr_assert_eq(zmq_connect(s, url), 0);
    for (int i = 0; i < n_req; i++) s_send_compute(s, md, (uint32_t)i % md->shape.n_layer, 512, 100 + (uint64_t)i);
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
    cr_assert_eq(zmq_poll(&it, 1, DEADLINE_MS), 1, "no reply to the hostile peer");
    /* the node is busy with the rest (its replies soon wait for this peer): the pause is the
     * attack's pacing, not a condition of the test; a slower node is only more exposed */
    poll(NULL, 0, 500);
    zmq_close(s); /* linger 0: what was not sent is dropped */
    zmq_ctx_term(ctx);
}

/* Issue 12: a peer that sent several large compute requests without reading
 * the replies and then hung up made st-node abort in libzmq's I/O thread
 * (`Assertion failed: !_io_error (src/stream_engine_base.cpp:331)`): the
 * connection's input was stopped (full queue) when the reset came, so libzmq
 * kept the broken connection until the node read from that queue again, and
 * the node's ZMTP heartbeat timer fired meanwhile and wrote to it. The node
 * now sends no ZMTP heartbeats (TCP keepalive finds dead peers). Each try is a
 * new hostile connection; after each, a well-behaved client must get an answer
 * from the same process. A node that died is counted and restarted so that
 * the count covers every try. ST_NODE_HOSTILE_TRIES sets the tries (default 4). */
static void s_hostile_tries(bool curve) {
    /* the attack is paced against the node's 2 s send timeout and native compute times */
    if (*st_test_run_prefix()) cr_skip_test("under an emulator: 10-30x slower, the attack's pacing means nothing");
    model_t md = {0};
    /* 1.7 MB Q4_0 experts: a 512-token request is 0.5 MB, its reply 4 MB */
    s_load_model(&md, SYNTH("--type", "q4_0", "--hidden", "1024", "--expert-ffn", "1024", "--layers", "2", "--heads",
                            "4", "--kv-heads", "2"));
    curve_t cv = {.on = curve};
    if (curve) cr_assert_eq(zmq_curve_keypair(cv.pub, cv.sec), 0);
    node_proc_t p = s_start_node(&cv, NULL);
    client_t good = {0};
    s_join(&good, &p, &cv, &md);
    const char *env = getenv("ST_NODE_HOSTILE_TRIES");
    const int tries = env && atoi(env) > 0 ? atoi(env) : 4;
    int deaths = 0, status = -1;
    for (int t = 0; t < tries; t++) {
        s_flood_and_vanish(p.p.url, &cv, &md, 8);
        if (s_answers(&p, &good, &status)) continue;
        deaths++;
        cr_log_info("try %d: st-node exited with %d; restarting it", t, status);
        s_disconnect(&good);
        p = s_start_node(&cv, NULL);
        s_join(&good, &p, &cv, &md);
    }
    cr_log_info("%s: st-node died in %d of %d tries", curve ? "CURVE" : "--insecure", deaths, tries);
    cr_assert_eq(deaths, 0, "st-node died (last exit status %d) in %d of %d tries", status, deaths, tries);
    s_check_compute(&good, &md, 1, 3, false, 7); /* and still computes right */
    s_client_close(&good);
    cr_assert_eq(s_stop(&p), 0);
    s_free_model(&md);
}

Test(node, peer_that_floods_and_vanishes_cannot_kill_it) { s_hostile_tries(false); }
Test(node, curve_peer_that_floods_and_vanishes_cannot_kill_it) { s_hostile_tries(true); }

/* Number of model stores (directories named by a 64-digit hex hash) under dir. */
static int s_model_dirs(const char *dir) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "find '%s' -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{64}'",
             dir);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    int n = 0;
    char line[512];
    while (fgets(line, sizeof line, f)) n++;
    pclose(f);
    return n;
}

/* ASSIGN of every expert of md's shape under another model hash; the reply's type. */
static int s_assign_as(client_t *c, model_t *md, const uint8_t hash[32], char err[ST_WIRE_MAX_ERRMSG + 1]) {
    const uint32_t n = md->shape.n_layer * md->shape.n_expert;
    st_wire_ref_t *refs = calloc(n, sizeof *refs);
    for (uint32_t k = 0; k < n; k++) {
        refs[k] = (st_wire_ref_t){.layer = k / md->shape.n_expert, .expert = k % md->shape.n_expert, .has_hash = true};
        memcpy(refs[k].hash, md->hash[k], 32);
    }
    st_wire_msg_t m = {.type = ST_MSG_ASSIGN};
    m.assign = (st_wire_assign_t){.shape = md->shape, .n_experts = n, .experts = refs};
    memcpy(m.assign.shape.model_hash, hash, 32);
    st_wire_rx_t rx;
    s_call(c, &m, NULL, 0, &rx);
    const int type = rx.msg.type;
    memcpy(err, type == ST_MSG_ERROR ? rx.msg.error.message : "", type == ST_MSG_ERROR ? ST_WIRE_MAX_ERRMSG + 1 : 1);
    st_wire_rx_clear(&rx);
    free(refs);
    return type;
}

/* Issue 12: 200 HELLOs with random model hashes left 200 empty store
 * directories. A model's directory is now made at its first ASSIGN only, a
 * HELLO for an unknown model leaves the model being served alone, and
 * --max-models bounds the stores kept: the least recently used empty one is
 * removed (logged), and an ASSIGN that would need more than that is refused. */
Test(node, store_directories_only_for_assigned_models_and_bounded) {
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "q4_0"));
    char bin[1024], log[300];
    snprintf(bin, sizeof bin, "%s/st-node", ST_BINARY_DIR);
    snprintf(log, sizeof log, "%s.log", g_store); /* beside the store: not a model directory */
    const char *argv[] = {bin,  "--listen", "tcp://127.0.0.1:*", "--mem", "256M",      "--store",      g_store,
                          "-t", "2",        "--insecure",        "--id",  "test-node", "--max-models", "3",
                          NULL};
    node_proc_t p = {0};
    cr_assert_eq(st_test_node_start(&p.p, argv, log, DEADLINE_MS), 0);
    client_t c = {0};
    s_connect(&c, p.p.url);
    cr_assert_eq(s_do_hello(&c, &md), 0);
    cr_assert_eq(s_model_dirs(g_store), 0, "a HELLO made a store directory");
    s_do_assign(&c, &md, 0);
    s_push_all(&c, &md, ST_WIRE_MAX_CHUNK);
    cr_assert_eq(s_model_dirs(g_store), 1);

    /* 200 HELLOs naming random models: nothing held, nothing made, the model still served */
    srand(12);
    for (int i = 0; i < 200; i++) {
        st_wire_msg_t m = s_hello(&md);
        for (int j = 0; j < 32; j++) m.hello.shape.model_hash[j] = (uint8_t)rand();
        st_wire_rx_t rx;
        s_call(&c, &m, NULL, 0, &rx);
        cr_assert_eq(rx.msg.type, ST_MSG_INVENTORY);
        cr_assert_eq(rx.msg.inventory.n_held, 0);
        cr_assert_gt(rx.msg.inventory.store_free, 0);
        st_wire_rx_clear(&rx);
    }
    cr_assert_eq(s_model_dirs(g_store), 1, "HELLOs for unknown models made store directories");
    s_check_compute(&c, &md, 1, 3, false, 1);

    /* ASSIGNs of new models: directories made, at most 3 kept */
    uint8_t r[4][32];
    for (int i = 0; i < 4; i++) memset(r[i], 0xa0 + i, 32);
    char err[ST_WIRE_MAX_ERRMSG + 1];
    cr_assert_eq(s_assign_as(&c, &md, r[0], err), ST_MSG_ASSIGN_ACK, "%s", err);
    cr_assert_eq(s_assign_as(&c, &md, r[1], err), ST_MSG_ASSIGN_ACK, "%s", err);
    cr_assert_eq(s_model_dirs(g_store), 3);
    /* a fourth: the least recently used empty one (r[0]) goes; r[1] is the current model */
    cr_assert_eq(s_assign_as(&c, &md, r[2], err), ST_MSG_ASSIGN_ACK, "%s", err);
    cr_assert_eq(s_model_dirs(g_store), 3);
    cr_assert(st_test_file_has(log, "removed the empty store of model a0a0a0a0", DEADLINE_MS));
    cr_assert_not(st_test_file_has(log, "removed the empty store of model a1a1a1a1", 0));
    /* with an expert in each of the three stores, a new model is refused */
    s_push_expert(&c, &md, 0, 0, ST_WIRE_MAX_CHUNK); /* into r[2]'s store */
    cr_assert_eq(s_assign_as(&c, &md, r[1], err), ST_MSG_ASSIGN_ACK, "%s", err);
    s_push_expert(&c, &md, 0, 0, ST_WIRE_MAX_CHUNK); /* into r[1]'s */
    cr_assert_eq(s_assign_as(&c, &md, r[3], err), ST_MSG_ERROR);
    cr_assert(strstr(err, "at most 3 models"), "%s", err);
    cr_assert_eq(s_model_dirs(g_store), 3);
    /* the node goes on: the real model's store was kept whole */
    cr_assert_eq(s_do_hello(&c, &md), md.shape.n_layer * md.shape.n_expert);
    cr_assert_eq(s_do_assign(&c, &md, 0), 0);
    s_check_compute(&c, &md, 2, 4, false, 2);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);
    remove(log);
    s_free_model(&md);
}

/* ---- a peer that speaks ZMTP itself ---- */

/* Writes all of buf to fd (a blocking socket); false when the node dropped
 * the connection (then the attack stops there). MSG_NOSIGNAL: a write after
 * the node's reset must fail with EPIPE, not kill the test with SIGPIPE. */
static bool s_write_all(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w, n -= (size_t)w;
    }
    return true;
}

/* One ZMTP 3 frame: flags (0x01 more, 0x04 command), short or long size, body. */
static bool s_zmtp_frame(int fd, uint8_t flags, const void *body, size_t n) {
    uint8_t h[9] = {flags};
    size_t hl = 2;
    if (n > 255) {
        h[0] |= 0x02;
        for (int i = 0; i < 8; i++) h[1 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 9;
    } else {
        h[1] = (uint8_t)n;
    }
    return s_write_all(fd, h, hl) && (!n || s_write_all(fd, body, n));
}

/* A plain TCP connection to url with a 4 KB receive buffer that has said its
 * ZMTP 3.0 greeting (NULL mechanism) and READY as a DEALER. */
static int s_zmtp_connect(const char *url) {
    int port = 0;
    cr_assert_eq(sscanf(url, "tcp://127.0.0.1:%d", &port), 1, "%s", url);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    const int rcvbuf = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "%s", strerror(errno));
    uint8_t g[64] = {0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0, 'N', 'U', 'L', 'L'};
    static const char ready[] = "\x05READY\x0bSocket-Type\x00\x00\x00\x06"
                                "DEALER";
    cr_assert(s_write_all(fd, g, sizeof g) && s_zmtp_frame(fd, 0x04, ready, sizeof ready - 1), "%s", strerror(errno));
    return fd;
}

/* One of our messages (envelope, then the frame if any) as raw ZMTP frames. */
static bool s_zmtp_send(int fd, const st_wire_msg_t *m, const void *frame, size_t len) {
    uint8_t env[4096];
    size_t n;
    cr_assert_eq(st_wire_encode(m, env, sizeof env, &n), 0);
    return s_zmtp_frame(fd, frame ? 0x01 : 0, env, n) && (!frame || s_zmtp_frame(fd, 0, frame, len));
}

/* A peer that reads nothing and sends four large compute requests (their 4 MB
 * replies fill the kernel's buffers and the node's queue to it), then small
 * requests each followed by a ZMTP PING command, and resets the connection.
 * The node waits (up to 2 s) to send the reply to the first small request.
 * With a receive limit (it was 2), libzmq meanwhile stopped reading at the
 * request that did not fit the node's full receive queue, with a PING behind
 * it in its buffer; after the reset it kept the broken connection until the
 * node read from that queue again, then answered that PING on it (out_event):
 * `!_io_error` aborted (zeromq/libzmq#4841). With no limit (node.c) the
 * queue never fills, libzmq reads on and sees the reset at once. */
static void s_ping_behind_a_full_queue(const char *url, const model_t *md, int pause_ms) {
    int fd = s_zmtp_connect(url);
    const int n_tok = 512, k = (int)md->shape.n_expert_used;
    int32_t *tok = malloc((size_t)n_tok * k * sizeof(int32_t)), *ids = malloc((size_t)n_tok * k * sizeof(int32_t));
    for (int t = 0; t < n_tok; t++)
        for (int j = 0; j < k; j++) tok[t * k + j] = t, ids[t * k + j] = (t + j) % (int)md->shape.n_expert;
    const size_t row = st_wire_act_row_bytes(&md->shape, 0);
    uint8_t *act = calloc((size_t)n_tok, row);
    bool ok = true;
    for (int i = 0; i < 4 && ok; i++) {
        st_wire_msg_t m = {.type = ST_MSG_EXPERT_COMPUTE, .request_id = 200 + (uint64_t)i};
        m.compute = (st_wire_compute_t){.layer = 0,
                                        .n_tokens = (uint32_t)n_tok,
                                        .act_type = (uint32_t)st_wire_act_type(&md->shape, 0),
                                        .n_pairs = (uint32_t)(n_tok * k),
                                        .pair_token = tok,
                                        .pair_expert = ids};
        ok = s_zmtp_send(fd, &m, act, (size_t)n_tok * row);
    }
    free(tok), free(ids), free(act);
    static const char ping[] = "\x04PING\x00\x00"; /* TTL 0, no context */
    for (int i = 0; i < 16 && ok; i++) {
        st_wire_msg_t hb = {.type = ST_MSG_HEARTBEAT, .request_id = 300 + (uint64_t)i};
        ok = s_zmtp_send(fd, &hb, NULL, 0) && s_zmtp_frame(fd, 0x04, ping, sizeof ping - 1);
    }
    if (!ok) cr_log_info("the node dropped the hostile connection: %s", strerror(errno));
    poll(NULL, 0, pause_ms); /* the attack's pacing: the node waits on a reply to us by now */
    const struct linger rst = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
    close(fd);
}

/* Open file descriptors of process pid. */
static int s_fd_count(pid_t pid) {
    char cmd[64];
    snprintf(cmd, sizeof cmd, "ls /proc/%d/fd", (int)pid);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    int n = 0;
    char line[64];
    while (fgets(line, sizeof line, f)) n++;
    pclose(f);
    return n;
}

/* Occurrences of text in file path. */
static int s_count_in(const char *path, const char *text) {
    char *s = st_file_read(path, 0, NULL);
    int n = 0;
    for (const char *p = s; p && (p = strstr(p, text)); p += strlen(text)) n++;
    free(s);
    return n;
}

/* The abort of s_ping_behind_a_full_queue: with the node's receive queue
 * unlimited, no try may make libzmq abort (with the old limit of 2 about one
 * try in three did, so 6 tries all pass by chance in 9 runs of 100). Should
 * libzmq abort all the same, st-node executes itself again (same pid, same
 * port, store verified again) and says so in its log: a last abort that is
 * certain (SIGABRT) checks that. After each try, and after it, a client that
 * says HELLO and ASSIGN again, as a coordinator does when a node comes back,
 * is sent nothing (the store is intact) and gets results bit for bit
 * st_experts_eval's. The test fails if libzmq aborts, if the node ever exits,
 * if the abort is not followed by a restart, or if file descriptors pile up. */
Test(node, peer_pinging_behind_a_full_queue_cannot_kill_it) {
    /* qemu-user without binfmt_misc cannot execute an aarch64 program: the restart needs the real machine */
    if (*st_test_run_prefix()) cr_skip_test("under an emulator: st-node cannot execute itself again");
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "q4_0", "--hidden", "1024", "--expert-ffn", "1024", "--layers", "2", "--heads",
                            "4", "--kv-heads", "2"));
    char log[300];
    snprintf(log, sizeof log, "%s.log", g_store); /* beside the store */
    curve_t cv = {0};
    node_proc_t p = s_start_node(&cv, log);
    const pid_t pid = p.p.pid;
    client_t good = {0};
    s_join(&good, &p, &cv, &md);
    const int fds0 = s_fd_count(pid);
    const char *env = getenv("ST_NODE_HOSTILE_TRIES");
    const int tries = env && atoi(env) > 0 ? atoi(env) : 6;
    for (int t = 0; t < tries; t++) {
        s_ping_behind_a_full_queue(p.p.url, &md, 1000);
        /* the node is done with the hostile connection when its socket is closed: at once after
         * a restart, else once the node has read that peer's queue (a request sent before then
         * could be lost with a restart, as it can be to a coordinator, which sends it again) */
        const double deadline = st_now_ms() + DEADLINE_MS;
        while (s_fd_count(pid) > fds0) {
            cr_assert_lt(st_now_ms(), deadline, "st-node kept the hostile connection open");
            cr_assert_lt(st_test_wait(pid, 50), 0, "st-node exited");
        }
        s_disconnect(&good); /* a new connection: the old one may be gone with a restart */
        s_join(&good, &p, &cv, &md);
        cr_assert_lt(st_test_wait(pid, 0), 0, "st-node exited");
        s_check_compute(&good, &md, (uint32_t)t % md.shape.n_layer, 5, false, 40 + (unsigned)t);
    }
    const int aborts = s_count_in(log, "Assertion failed: !_io_error");
    cr_assert_eq(aborts, 0, "libzmq aborted in %d of %d tries (log %s)", aborts, tries, log);
    cr_assert_eq(s_count_in(log, "restarted after an abort"), 0, "(log %s)", log);
    /* one abort for certain, with the signal libzmq's assertion raises */
    kill(pid, SIGABRT);
    const double deadline = st_now_ms() + DEADLINE_MS;
    while (s_count_in(log, "restarted after an abort") < 1) {
        cr_assert_lt(st_now_ms(), deadline, "no restart after SIGABRT (log %s)", log);
        cr_assert_lt(st_test_wait(pid, 50), 0, "st-node exited on SIGABRT");
    }
    s_disconnect(&good);
    s_join(&good, &p, &cv, &md);
    s_check_compute(&good, &md, 1, 5, false, 60);
    const int fds1 = s_fd_count(pid);
    cr_log_info("%d tries: libzmq aborted %d times; after one SIGABRT st-node restarted (pid %d throughout); %d open "
                "files before, %d after",
                tries, aborts, (int)pid, fds0, fds1);
    cr_assert_leq(fds1, fds0 + 2, "open files grew from %d to %d", fds0, fds1);
    s_client_close(&good);
    cr_assert_eq(s_stop(&p), 0);
    if (getenv("ST_TEST_KEEP_LOG"))
        cr_log_info("node log: %s", log);
    else
        remove(log);
    s_free_model(&md);
}

/* ---- the output head's slice ---- */

static st_wire_rx_t s_head_call(client_t *c, st_wire_msg_t *m, const void *frame, size_t len) {
    st_wire_rx_t rx;
    s_call(c, m, frame, len, &rx);
    return rx;
}

/* HEAD_ASSIGN of rows [lo, hi) of the model's output.weight in slot slot of
 * n_slots; whether the node holds them already */
static bool s_head_assign_slot(client_t *c, const model_t *md, uint32_t lo, uint32_t hi, uint32_t slot,
                               uint32_t n_slots, st_wire_head_assign_t *a) {
    const st_weight_t *w = &md->m->output;
    *a = (st_wire_head_assign_t){.n_vocab = (uint32_t)w->n_rows,
                                 .type = (uint32_t)w->type,
                                 .lo = lo,
                                 .hi = hi,
                                 .slot = slot,
                                 .n_slots = n_slots};
    st_wire_hash(w->data + (size_t)lo * w->row_bytes, (size_t)(hi - lo) * w->row_bytes, a->hash);
    st_wire_msg_t m = {.type = ST_MSG_HEAD_ASSIGN, .head_assign = *a};
    st_wire_rx_t rx = s_head_call(c, &m, NULL, 0);
    cr_assert_eq(rx.msg.type, ST_MSG_HEAD_ACK, "%s: %s", st_wire_type_name(rx.msg.type), rx.msg.error.message);
    bool complete = rx.msg.head_ack.complete;
    st_wire_rx_clear(&rx);
    return complete;
}

static bool s_head_assign(client_t *c, const model_t *md, uint32_t lo, uint32_t hi, st_wire_head_assign_t *a) {
    return s_head_assign_slot(c, md, lo, hi, 0, 1, a);
}

/* Pushes rows [a->lo, a->hi) in chunks; the last ack says complete. */
static void s_head_push(client_t *c, const model_t *md, const st_wire_head_assign_t *a) {
    const st_weight_t *w = &md->m->output;
    const uint8_t *bytes = w->data + (size_t)a->lo * w->row_bytes;
    const uint64_t total = (uint64_t)(a->hi - a->lo) * w->row_bytes;
    for (uint64_t off = 0; off < total; off += 5000) {
        const size_t n = total - off < 5000 ? (size_t)(total - off) : 5000;
        st_wire_msg_t put = {.type = ST_MSG_HEAD_PUT, .head_put = {.offset = off, .total = total, .lo = a->lo}};
        st_wire_hash(bytes + off, n, put.head_put.chunk_hash);
        st_wire_rx_t rx = s_head_call(c, &put, bytes + off, n);
        cr_assert_eq(rx.msg.type, ST_MSG_HEAD_ACK, "%s: %s", st_wire_type_name(rx.msg.type), rx.msg.error.message);
        cr_assert(rx.msg.head_ack.ok && rx.msg.head_ack.complete == (off + n == total));
        st_wire_rx_clear(&rx);
    }
}

/* the rows [lo, hi) of W for n hidden states, as one process computes them (the whole matrix) */
static float *s_head_reference(const model_t *md, const float *x, int n, uint32_t lo, uint32_t hi) {
    const st_weight_t *w = &md->m->output;
    const st_kernels_t *k = st_kernels_select();
    const int E = (int)w->n_cols, V = (int)w->n_rows;
    const st_type_t vt = st_type_traits(w->type)->vec_dot_type;
    const size_t row = st_row_size(vt, E);
    uint8_t *xq = malloc((size_t)n * row);
    for (int t = 0; t < n; t++) k->from_float[vt](E, x + (size_t)t * E, xq + (size_t)t * row);
    float *all = malloc((size_t)n * V * sizeof(float)), *y = malloc((size_t)n * (hi - lo) * sizeof(float));
    st_matmul(k, w->type, w->data, E, 0, V, xq, row, n, all, (size_t)V);
    for (int t = 0; t < n; t++) memcpy(y + (size_t)t * (hi - lo), all + (size_t)t * V + lo, (hi - lo) * sizeof(float));
    free(xq), free(all);
    return y;
}

/* The slice is pushed in hashed chunks (a bad chunk is refused and the push
 * goes on), its logits are bit for bit the whole matrix's rows, the
 * candidates are the best of them after the penalties, bad requests get
 * errors, and a restarted node has the slice from its store. */
Test(node, head_slice_logits_candidates_and_restart) {
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "q4_0"));
    const st_weight_t *w = &md.m->output;
    const uint32_t V = (uint32_t)w->n_rows, E = md.shape.n_embd, lo = V / 3, hi = V - 5, rows = hi - lo;
    node_proc_t p = s_start(g_store, "256M", NULL);
    client_t c = {0};
    s_connect(&c, p.p.url);
    s_do_hello(&c, &md);
    st_wire_msg_t m = {.type = ST_MSG_HEAD_ASSIGN};
    m.head_assign = (st_wire_head_assign_t){.n_vocab = V, .type = (uint32_t)w->type, .lo = lo, .hi = hi};
    s_expect_error(&c, &m, NULL, 0, "HEAD_ASSIGN before ASSIGN");
    s_do_assign(&c, &md, 0);
    float *x = malloc(3 * E * sizeof(float));
    srand(5);
    for (uint32_t i = 0; i < 3 * E; i++) x[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
    st_wire_msg_t hc = {.type = ST_MSG_HEAD_COMPUTE, .head_compute = {.n_seq = 3, .full = true, .lo = lo}};
    s_expect_error(&c, &hc, x, 3 * E * sizeof(float), "HEAD_COMPUTE before HEAD_ASSIGN");

    st_wire_head_assign_t a;
    cr_assert_not(s_head_assign(&c, &md, lo, hi, &a));
    const uint8_t *bytes = w->data + (size_t)lo * w->row_bytes;
    const uint64_t total = (uint64_t)rows * w->row_bytes;
    s_expect_error(&c, &hc, x, 3 * E * sizeof(float), "HEAD_COMPUTE before the slice is whole");
    const size_t chunk = 5000;
    for (uint64_t off = 0; off < total; off += chunk) {
        const size_t n = total - off < chunk ? (size_t)(total - off) : chunk;
        st_wire_msg_t put = {.type = ST_MSG_HEAD_PUT, .head_put = {.offset = off, .total = total, .lo = lo}};
        st_wire_hash(bytes + off, n, put.head_put.chunk_hash);
        if (off == chunk) { /* a chunk that does not match its hash: refused, the push goes on */
            put.head_put.chunk_hash[0] ^= 1;
            st_wire_rx_t rx = s_head_call(&c, &put, bytes + off, n);
            cr_assert_eq(rx.msg.type, ST_MSG_HEAD_ACK);
            cr_assert_not(rx.msg.head_ack.ok);
            st_wire_rx_clear(&rx);
            put.head_put.chunk_hash[0] ^= 1;
        }
        st_wire_rx_t rx = s_head_call(&c, &put, bytes + off, n);
        cr_assert_eq(rx.msg.type, ST_MSG_HEAD_ACK, "%s: %s", st_wire_type_name(rx.msg.type), rx.msg.error.message);
        cr_assert(rx.msg.head_ack.ok);
        cr_assert_eq(rx.msg.head_ack.complete, off + n == total);
        st_wire_rx_clear(&rx);
    }

    /* whole rows: the same bits as the whole matrix */
    float *want = s_head_reference(&md, x, 3, lo, hi);
    st_wire_rx_t rx = s_head_call(&c, &hc, x, 3 * E * sizeof(float));
    cr_assert_eq(rx.msg.type, ST_MSG_HEAD_RESULT, "%s: %s", st_wire_type_name(rx.msg.type), rx.msg.error.message);
    size_t len;
    const uint8_t *f = st_wire_rx_frame(&rx, &len);
    char why[256];
    cr_assert_eq(st_wire_check_head_result(&rx.msg, &hc.head_compute, &a, f, len, why, sizeof why), 0, "%s", why);
    cr_assert_eq(memcmp(f, want, (size_t)3 * rows * sizeof(float)), 0, "slice logits differ from one process's");
    st_wire_rx_clear(&rx);

    /* candidates after the penalties: ids in and out of the slice */
    float temp[3] = {0.7f, 0.0f, 1.3f}, rp[3] = {1.3f, 1.0f, 1.1f}, pp[3] = {0.5f, 0.0f, 0.2f}, fp[3] = {0.2f, 0, 0};
    uint32_t pen_n[3] = {3, 0, 1}, pen_id[4] = {lo, 0, hi - 1, lo + 7}, pen_count[4] = {2, 1, 1, 3};
    st_wire_msg_t cc = {.type = ST_MSG_HEAD_COMPUTE};
    cc.head_compute = (st_wire_head_compute_t){.n_seq = 3,
                                               .n_cand = 12,
                                               .lo = lo,
                                               .temp = temp,
                                               .repeat_penalty = rp,
                                               .presence_penalty = pp,
                                               .frequency_penalty = fp,
                                               .pen_n = pen_n,
                                               .n_pen = 4,
                                               .pen_id = pen_id,
                                               .pen_count = pen_count};
    rx = s_head_call(&c, &cc, x, 3 * E * sizeof(float));
    cr_assert_eq(rx.msg.type, ST_MSG_HEAD_RESULT, "%s: %s", st_wire_type_name(rx.msg.type), rx.msg.error.message);
    f = st_wire_rx_frame(&rx, &len);
    cr_assert_eq(st_wire_check_head_result(&rx.msg, &cc.head_compute, &a, f, len, why, sizeof why), 0, "%s", why);
    uint32_t pen0 = 0;
    for (int s = 0; s < 3; s++) {
        int32_t ids[12];
        float vals[12], mx;
        double sum, sum_t;
        const st_sampler_part_pen_t pen = {pen_id + pen0, pen_count + pen0, (int)pen_n[s], rp[s], pp[s], fp[s]};
        pen0 += pen_n[s];
        float *ls = malloc(rows * sizeof(float)); /* penalised in place */
        memcpy(ls, want + (size_t)s * rows, rows * sizeof(float));
        cr_assert_eq(st_sampler_part_eval(ls, (int)rows, (int32_t)lo, &pen, temp[s], 12, ids, vals, &mx, &sum, &sum_t),
                     12);
        for (int i = 0; i < 12; i++) {
            uint32_t id;
            float l;
            memcpy(&id, f + ((size_t)s * 12 + (size_t)i) * 8, 4);
            memcpy(&l, f + ((size_t)s * 12 + (size_t)i) * 8 + 4, 4);
            cr_assert(id == (uint32_t)ids[i] && l == vals[i], "sequence %d candidate %d: %u %g, want %d %g", s, i, id,
                      (double)l, ids[i], (double)vals[i]);
        }
        free(ls);
        cr_assert(rx.msg.head_result.max[s] == mx && rx.msg.head_result.sum[s] == sum &&
                  rx.msg.head_result.sum_temp[s] == sum_t);
    }
    st_wire_rx_clear(&rx);

    /* bad requests: errors, and the node goes on */
    s_expect_error(&c, &hc, x, 3 * E * sizeof(float) - 4, "HEAD_COMPUTE with a short frame");
    pen_id[0] = V;
    s_expect_error(&c, &cc, x, 3 * E * sizeof(float), "HEAD_COMPUTE with a penalty id past the vocabulary");
    pen_id[0] = lo;
    st_wire_msg_t put = {.type = ST_MSG_HEAD_PUT, .head_put = {.offset = 0, .total = total + 1, .lo = lo}};
    s_expect_error(&c, &put, bytes, 100, "HEAD_PUT with another total");
    put.head_put.total = total, put.head_put.lo = lo + 1;
    s_expect_error(&c, &put, bytes, 100, "HEAD_PUT of a slice not assigned");
    hc.head_compute.lo = 0;
    s_expect_error(&c, &hc, x, 3 * E * sizeof(float), "HEAD_COMPUTE of a slice not held");
    hc.head_compute.lo = lo;
    rx = s_head_call(&c, &hc, x, 3 * E * sizeof(float));
    cr_assert_eq(rx.msg.type, ST_MSG_HEAD_RESULT);
    st_wire_rx_clear(&rx);
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);

    /* restarted: the slice comes from the store, checked against its hash */
    p = s_start(g_store, "256M", NULL);
    client_t c2 = {0};
    s_connect(&c2, p.p.url);
    s_do_hello(&c2, &md);
    s_do_assign(&c2, &md, 0);
    cr_assert(s_head_assign(&c2, &md, lo, hi, &a), "the restarted node lost its head slice");
    rx = s_head_call(&c2, &hc, x, 3 * E * sizeof(float));
    cr_assert_eq(rx.msg.type, ST_MSG_HEAD_RESULT);
    f = st_wire_rx_frame(&rx, &len);
    cr_assert_eq(memcmp(f, want, (size_t)3 * rows * sizeof(float)), 0);
    st_wire_rx_clear(&rx);
    /* a corrupted file is not trusted: another slice first, then this one again */
    char path[512], hex[65];
    sodium_bin2hex(hex, sizeof hex, a.hash, 32);
    snprintf(path, sizeof path, "%s/head-%s.dat", g_store, hex);
    FILE *fh = fopen(path, "r+b");
    cr_assert_not_null(fh);
    fseek(fh, 100, SEEK_SET);
    fputc(0x55 ^ bytes[100], fh);
    fclose(fh);
    st_wire_head_assign_t b;
    cr_assert_not(s_head_assign(&c2, &md, 0, 10, &b));
    cr_assert_not(s_head_assign(&c2, &md, lo, hi, &a), "a corrupted slice file was used");
    s_client_close(&c2);
    cr_assert_eq(s_stop(&p), 0);
    free(x), free(want);
    s_free_model(&md);
}

/* A node holds several slices (its own and replicas): each is pushed and
 * computed by its first row, both stay in the store across a restart, and a
 * HEAD_ASSIGN with fewer slots drops the others. */
Test(node, several_head_slices_on_one_node) {
    model_t md = {0};
    s_load_model(&md, SYNTH("--type", "q4_0"));
    const st_weight_t *w = &md.m->output;
    const uint32_t V = (uint32_t)w->n_rows, E = md.shape.n_embd;
    const uint32_t cut[3] = {0, V / 2 / 16 * 16, V}; /* two slices */
    node_proc_t p = s_start(g_store, "256M", NULL);
    client_t c = {0};
    s_connect(&c, p.p.url);
    s_do_hello(&c, &md);
    s_do_assign(&c, &md, 0);
    float *x = malloc(2 * E * sizeof(float));
    srand(9);
    for (uint32_t i = 0; i < 2 * E; i++) x[i] = (float)rand() / RAND_MAX * 2.0f - 1.0f;
    st_wire_head_assign_t a[2];
    for (uint32_t k = 0; k < 2; k++) {
        cr_assert_not(s_head_assign_slot(&c, &md, cut[k], cut[k + 1], k, 2, &a[k]));
        s_head_push(&c, &md, &a[k]);
    }
    for (int round = 0; round < 2; round++) { /* then after a restart, from the store */
        for (uint32_t k = 0; k < 2; k++) {
            float *want = s_head_reference(&md, x, 2, cut[k], cut[k + 1]);
            st_wire_msg_t hc = {.type = ST_MSG_HEAD_COMPUTE, .head_compute = {.n_seq = 2, .full = true, .lo = cut[k]}};
            st_wire_rx_t rx = s_head_call(&c, &hc, x, 2 * E * sizeof(float));
            cr_assert_eq(rx.msg.type, ST_MSG_HEAD_RESULT, "slice %u: %s", k, rx.msg.error.message);
            size_t len;
            const uint8_t *f = st_wire_rx_frame(&rx, &len);
            char why[256];
            cr_assert_eq(st_wire_check_head_result(&rx.msg, &hc.head_compute, &a[k], f, len, why, sizeof why), 0, "%s",
                         why);
            cr_assert_eq(memcmp(f, want, (size_t)2 * (cut[k + 1] - cut[k]) * sizeof(float)), 0, "slice %u differs", k);
            st_wire_rx_clear(&rx);
            free(want);
        }
        if (round) break;
        s_client_close(&c);
        cr_assert_eq(s_stop(&p), 0);
        p = s_start(g_store, "256M", NULL);
        c = (client_t){0};
        s_connect(&c, p.p.url);
        s_do_hello(&c, &md);
        s_do_assign(&c, &md, 0);
        for (uint32_t k = 0; k < 2; k++)
            cr_assert(s_head_assign_slot(&c, &md, cut[k], cut[k + 1], k, 2, &a[k]), "slice %u not kept in the store",
                      k);
    }
    /* one slot from now on: the slice in slot 1 is dropped */
    cr_assert(s_head_assign_slot(&c, &md, cut[0], cut[1], 0, 1, &a[0]));
    st_wire_msg_t hc = {.type = ST_MSG_HEAD_COMPUTE, .head_compute = {.n_seq = 2, .full = true, .lo = cut[1]}};
    s_expect_error(&c, &hc, x, 2 * E * sizeof(float), "HEAD_COMPUTE of a dropped slot");
    s_client_close(&c);
    cr_assert_eq(s_stop(&p), 0);
    free(x);
    s_free_model(&md);
}
