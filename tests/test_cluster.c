/* The cluster end to end: real st-node processes on loopback and
 * st-coordinator against st-run, the single-process reference.
 *
 * For synthetic models (tiny F32, tiny Q4_0, 8 layers with a sliding window)
 * on 1, 2, 3 and 5 nodes: the greedy tokens and the teacher-forced logits
 * are bit-identical to st-run's (the coordinator sums per-pair expert outputs
 * in routing order, exactly as one process does), a second run gives the
 * same bytes again and pushes no shard (the stores persist), and --stats
 * shows exactly one round trip per layer per involved node per decode token.
 * A node restarted on its store re-announces it and gets zero shard bytes. A
 * node down at start is named and its share placed elsewhere; a node that
 * passes setup and then fails (a fake node in a thread here: silent, or
 * answering ERROR) is named and its experts are computed by the coordinator
 * (same bytes), or with --no-fallback the run fails clearly within deadline.
 *
 * Nodes bind tcp://127.0.0.1:* and print the port they got; every wait has
 * a deadline (poll on the node's stdout, `timeout` around each command), no
 * sleeps. Nodes die with the test process (PR_SET_PDEATHSIG).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "harness.h"
#include "st_kernels.h"
#include "testutil.h"
#include "wire.h"

#define BIN ST_BINARY_DIR
#define MAX_NODES 5
#define PROMPT "The quick brown fox jumps over the lazy dog"
#define N_PREDICT 12

typedef st_test_cluster_t cluster_t;
typedef st_test_run_t run_t;

TestSuite(cluster, .fini = st_test_cleanup);

/* Restarts node i on its store, listening on listen (its old URL). */
static void s_node_start(cluster_t *c, int i, const char *listen) { st_test_cluster_node_start(c, i, listen, NULL); }
static void s_node_stop(cluster_t *c, int i, int sig) { st_test_cluster_node_stop(c, i, sig); }
static void s_cluster_start(cluster_t *c, int n) { st_test_cluster_start(c, "cluster", false, n); }
static void s_cluster_stop(cluster_t *c) { st_test_cluster_destroy(c); }
static void s_node_list(const cluster_t *c, char *out, size_t cap) { st_test_cluster_urls(c, out, cap); }
static void s_run_free(run_t *r) { st_test_run_free(r); }

/* Runs st-run (nodes NULL) or st-coordinator on the model with the test's
 * one-shot flags plus extra; a 120 s timeout keeps a hang from hanging the test. */
static run_t s_run(const char *dir, const char *tag, const char *model, const char *nodes, const char *extra) {
    char args[4096];
    const char *flags = "-p '" PROMPT "' --temp 0 --json -t 1";
    if (nodes)
        snprintf(args, sizeof args,
                 "-m '%s' --nodes %s --insecure --state-dir '%s' --quiet-push -n %d --logits-out @LOGITS %s %s", model,
                 nodes, dir, N_PREDICT, flags, extra);
    else
        snprintf(args, sizeof args, "-m '%s' -n %d --logits-out @LOGITS %s %s", model, N_PREDICT, flags, extra);
    return st_test_run(dir, tag, NULL, nodes ? "st-coordinator" : "st-run", args, 120);
}

static const char *s_model(const char *const *args) {
    static char path[8][1024];
    static int next;
    char *p = path[next++ % 8];
    cr_assert_not_null(st_test_model(args, p, 1024), "st-synth failed");
    return p;
}

/* Every "stats: token" line: for each node, round trips == layers involved;
 * returns the number of decode tokens seen. */
static int s_check_round_trips(const char *err, int n_nodes) {
    int tokens = 0;
    for (const char *l = strstr(err, "stats: token "); l; l = strstr(l + 1, "stats: token ")) {
        tokens++;
        const char *eol = strchr(l, '\n');
        int seen = 0;
        for (const char *p = strstr(l, " node "); p && (!eol || p < eol); p = strstr(p + 1, " node ")) {
            int node;
            unsigned long long rt, layers;
            cr_assert_eq(sscanf(p, " node %d rt %llu layers %llu", &node, &rt, &layers), 3, "bad stats line: %.200s",
                         l);
            cr_assert_eq(rt, layers, "decode token %d: node %d made %llu round trips for %llu involved layers", tokens,
                         node, rt, layers);
            seen++;
        }
        cr_assert_eq(seen, n_nodes, "stats line without every node: %.200s", l);
    }
    cr_assert_not_null(strstr(err, "at most 1 round trip per layer per node"), "%s", err);
    return tokens;
}

static void s_same(const run_t *want, const run_t *got, const char *what) {
    cr_assert_eq(got->status, 0, "%s failed:\n%s", what, got->err);
    cr_assert_str_eq(got->out, want->out, "%s: tokens/text differ from st-run", what);
    cr_assert_not_null(got->logits, "%s wrote no logits", what);
    cr_assert_eq(got->logits_len, want->logits_len, "%s: logits size", what);
    if (memcmp(got->logits, want->logits, want->logits_len)) { /* say by how much before failing */
        const float *a = (const float *)want->logits, *b = (const float *)got->logits;
        size_t n = want->logits_len / sizeof(float), at = 0;
        float worst = 0;
        for (size_t i = 0; i < n; i++)
            if (fabsf(a[i] - b[i]) > worst) worst = fabsf(a[i] - b[i]), at = i;
        cr_assert_fail("%s: logits not bit-identical to st-run (max |diff| %g at %zu)", what, worst, at);
    }
}

/* The --stats line of the sharded head: the nodes serving it, and the head
 * bytes read here per hidden state (fallback). */
static int s_head_nodes(const char *err, double *read_here) {
    const char *p = strstr(err, "cluster: head sharded over ");
    cr_assert_not_null(p, "the head is not sharded:\n%s", err);
    int n = -1;
    double wire, out, in;
    cr_assert_eq(sscanf(p,
                        "cluster: head sharded over %d nodes: per hidden state %lf B on the wire (%lf out, %lf in), "
                        "%lf B of head weights read here",
                        &n, &wire, &out, &in, read_here),
                 5, "%.300s", p);
    return n;
}

/* The whole matrix for one model: 1, 2, 3, 5 nodes. */
static void s_matrix_model(const char *model) {
    char dir[256];
    st_test_tmpdir(dir, sizeof dir, "ref");
    run_t ref = s_run(dir, "ref", model, NULL, "");
    cr_assert_eq(ref.status, 0, "st-run failed:\n%s", ref.err);
    cr_assert_not_null(ref.logits);
    const int counts[] = {1, 2, 3, 5};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        cluster_t c;
        s_cluster_start(&c, counts[k]);
        char nodes[1024], what[64];
        s_node_list(&c, nodes, sizeof nodes);
        snprintf(what, sizeof what, "%d node(s), first run", counts[k]);
        run_t r1 = s_run(c.dir, "run1", model, nodes, "--stats");
        s_same(&ref, &r1, what);
        cr_assert_gt(st_test_pushed(r1.err), 0, "%s: nothing pushed to fresh stores", what);
        cr_assert_eq(s_check_round_trips(r1.err, counts[k]), N_PREDICT - 1, "%s: decode tokens in --stats", what);
        double head_here;
        cr_assert_eq(s_head_nodes(r1.err, &head_here), counts[k], "%s: the head is not on every node", what);
        cr_assert_eq(head_here, 0.0, "%s: head rows computed here with every node up", what);
        snprintf(what, sizeof what, "%d node(s), second run", counts[k]);
        run_t r2 = s_run(c.dir, "run2", model, nodes, "");
        s_same(&ref, &r2, what);
        cr_assert_eq(st_test_pushed(r2.err), 0, "%s: shards pushed again", what);
        s_run_free(&r1);
        s_run_free(&r2);
        s_cluster_stop(&c);
    }
    s_run_free(&ref);
    st_test_tmpdir_remove(dir);
}

static void s_matrix(const char *const *synth) { s_matrix_model(s_model(synth)); }

Test(cluster, tiny_f32_matches_st_run_on_1_2_3_5_nodes, .timeout = 300) {
    const char *synth[] = {"--type", "f32", NULL};
    s_matrix(synth);
}

Test(cluster, tiny_q4_0_matches_st_run_on_1_2_3_5_nodes, .timeout = 300) {
    const char *synth[] = {"--type", "q4_0", "--seed", "3", NULL};
    s_matrix(synth);
}

Test(cluster, swa_8_layers_matches_st_run_on_1_2_3_5_nodes, .timeout = 300) {
    const char *synth[] = {"--type", "q4_0", "--layers", "8", "--sliding-window", "4096", "--seed", "7", NULL};
    s_matrix(synth);
}

/* K-quant experts, whose activations travel as Q8_K rows (skipped where
 * llama-quantize is absent). llama-quantize's Q4_K_S on 4 layers: Q4_K experts
 * in every layer. */
Test(cluster, q4_k_s_matches_st_run_on_1_2_3_5_nodes, .timeout = 300) {
    const char *synth[] = {"--type", "f32",    "--hidden", "256", "--expert-ffn", "256", "--experts",
                           "16",     "--seed", "3",        NULL};
    static char model[1200];
    if (!st_test_quantized_model(synth, "Q4_K_S", model, sizeof model)) cr_skip_test("llama-quantize not available");
    s_matrix_model(model);
}

/* The output head sharded by vocabulary (issue 18): the matrices above show
 * it on every node with the greedy tokens and all logits of st-run; here
 * seeded sampling with top-k, top-p, min-p and the three penalties gives
 * st-run's tokens on 1, 2, 3 and 5 nodes, and --head local (the head here)
 * the same. Five nodes are started once; a run on k of them lists the first k. */
Test(cluster, sharded_head_samples_like_st_run_on_1_2_3_5_nodes, .timeout = 400) {
    const char *synth[] = {"--type", "q4_0", "--seed", "11", NULL};
    const char *model = s_model(synth);
    const char *sampling = "--temp 0.9 --seed 1234 --top-k 50 --top-p 0.9 --min-p 0.02 --repeat-penalty 1.3 "
                           "--presence-penalty 0.4 --frequency-penalty 0.3";
    char dir[256];
    st_test_tmpdir(dir, sizeof dir, "ref");
    run_t ref = s_run(dir, "ref", model, NULL, sampling);
    cr_assert_eq(ref.status, 0, "st-run failed:\n%s", ref.err);
    cluster_t c;
    s_cluster_start(&c, 5);
    char all[1024];
    s_node_list(&c, all, sizeof all);
    const int counts[] = {1, 2, 3, 5};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        char nodes[1024], extra[512], what[64], tag[16];
        snprintf(nodes, sizeof nodes, "%s", all);
        char *cut = nodes;
        for (int i = 0; i < counts[k] && cut; i++) cut = strchr(cut + 1, ',');
        if (cut) *cut = '\0'; /* the first counts[k] URLs */
        snprintf(extra, sizeof extra, "%s --stats --head sharded", sampling);
        snprintf(tag, sizeof tag, "s%d", counts[k]);
        snprintf(what, sizeof what, "sampling on %d node(s)", counts[k]);
        run_t r = s_run(c.dir, tag, model, nodes, extra);
        s_same(&ref, &r, what);
        double head_here;
        cr_assert_eq(s_head_nodes(r.err, &head_here), counts[k], "%s", what);
        cr_assert_eq(head_here, 0.0, "%s: head rows computed here", what);
        s_run_free(&r);
    }
    char extra[512];
    snprintf(extra, sizeof extra, "%s --stats --head local", sampling);
    run_t loc = s_run(c.dir, "local", model, all, extra);
    s_same(&ref, &loc, "--head local");
    cr_assert_null(strstr(loc.err, "head sharded"), "--head local sharded the head:\n%s", loc.err);
    cr_assert_not_null(strstr(loc.err, "cluster: head computed here (--head local)"), "%s", loc.err);
    s_run_free(&loc);
    s_cluster_stop(&c);
    s_run_free(&ref);
    st_test_tmpdir_remove(dir);
}

/* Counts the distinct ffn_down_exps types of model's layers (printing them). */
static int s_down_type_count(const char *model) {
    st_gguf_t *g = st_gguf_open(model);
    cr_assert_not_null(g, "%s", model);
    int seen[ST_TYPE_COUNT] = {0}, n = 0;
    char line[1024] = "";
    for (int64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(g, i);
        int layer;
        char what[32];
        if (sscanf(t->name, "blk.%d.%31[a-z_].weight", &layer, what) != 2) continue;
        if (!strcmp(what, "ffn_down_exps")) {
            cr_assert(t->type >= 0 && t->type < ST_TYPE_COUNT);
            n += !seen[t->type]++;
            snprintf(line + strlen(line), sizeof line - strlen(line), " %d:%s", layer, st_type_name(t->type));
        }
    }
    cr_log_info("%s: ffn_down_exps by layer:%s", model, line);
    st_gguf_destroy(&g);
    return n;
}

/* llama-quantize's mixes, as the published SmallThinker GGUFs are made:
 * expert types differ by layer. Q4_K_M on 8 layers: use_more_bits() in
 * llama-quant.cpp gives layers 0, 3, 6, 7 a Q6_K ffn_down, the rest Q4_K.
 * Q3_K_M needs 16 layers (layer < n_layer/16 gets a Q5_K down, the rest Q4_K;
 * gate and up Q3_K). The cluster carries types per layer; tokens and logits
 * match st-run's. */
static void s_mix_matrix(const char *type, const char *layers) {
    const char *synth[] = {"--type", "f32",       "--layers", layers,   "--hidden", "256", "--expert-ffn",
                           "256",    "--experts", "16",       "--seed", "5",        NULL};
    static char model[1200];
    if (!st_test_quantized_model(synth, type, model, sizeof model)) cr_skip_test("llama-quantize not available");
    cr_assert_geq(s_down_type_count(model), 2,
                  "%s: every layer's ffn_down has one type: the test "
                  "would not test per-layer types",
                  type);
    s_matrix_model(model);
}

Test(cluster, q4_k_m_mixed_layer_types_match_st_run_on_1_2_3_5_nodes, .timeout = 400) { s_mix_matrix("Q4_K_M", "8"); }

Test(cluster, q3_k_m_mixed_layer_types_match_st_run_on_1_2_3_5_nodes, .timeout = 400) { s_mix_matrix("Q3_K_M", "16"); }

Test(cluster, restarted_node_gets_zero_shard_bytes, .timeout = 120) {
    const char *synth[] = {"--type", "q4_0", "--seed", "3", NULL};
    const char *model = s_model(synth);
    cluster_t c;
    s_cluster_start(&c, 3);
    char nodes[1024];
    s_node_list(&c, nodes, sizeof nodes);
    run_t r1 = s_run(c.dir, "before", model, nodes, "");
    cr_assert_eq(r1.status, 0, "%s", r1.err);
    cr_assert_gt(st_test_pushed(r1.err), 0);
    /* kill -9 node 1 and start it again on the same port and store */
    char url[128];
    snprintf(url, sizeof url, "%s", c.nodes[1].p.url);
    s_node_stop(&c, 1, SIGKILL);
    s_node_start(&c, 1, url);
    cr_assert_str_eq(c.nodes[1].p.url, url);
    run_t r2 = s_run(c.dir, "after", model, nodes, "");
    cr_assert_eq(r2.status, 0, "%s", r2.err);
    cr_assert_not_null(strstr(r2.err, "3 of 3 nodes up"), "%s", r2.err);
    cr_assert_eq(st_test_pushed(r2.err), 0, "the restarted node was sent shards again:\n%s", r2.err);
    cr_assert_str_eq(r2.out, r1.out);
    cr_assert_eq(memcmp(r1.logits, r2.logits, r1.logits_len), 0);
    s_run_free(&r1);
    s_run_free(&r2);
    s_cluster_stop(&c);
}

/* The --stats head line's bytes read to hash the head's slices at start, and the whole head's bytes. */
static unsigned long long s_head_hashed(const char *err, unsigned long long *whole) {
    const char *p = strstr(err, "cluster: head sharded over ");
    cr_assert_not_null(p, "the head is not sharded:\n%s", err);
    const char *w = strstr(p, "the whole head is "), *q = strstr(p, " B pushed, ");
    unsigned long long hashed = 0;
    cr_assert(w && sscanf(w, "the whole head is %llu B", whole) == 1, "%.400s", p);
    cr_assert(q && sscanf(q, " B pushed, %llu B hashed", &hashed) == 1, "%.400s", p);
    return hashed;
}

/* The head's slice hashes are cached beside the model (here --state-dir): a
 * second start reads nothing of the head to hash it, and a model file that
 * changed (its mtime) is hashed again. The tokens and logits are st-run's. */
Test(cluster, head_hashes_are_cached_across_starts, .timeout = 120) {
    const char *synth[] = {"--type", "q4_0", "--seed", "3", NULL};
    const char *model = s_model(synth);
    cluster_t c;
    s_cluster_start(&c, 3);
    char nodes[1024], copy[512];
    s_node_list(&c, nodes, sizeof nodes);
    snprintf(copy, sizeof copy, "%s/model.gguf", c.dir); /* its own file: the test changes its mtime */
    st_test_system("cp '%s' '%s'", model, copy);
    run_t ref = s_run(c.dir, "ref", copy, NULL, "");
    cr_assert_eq(ref.status, 0, "%s", ref.err);
    unsigned long long whole = 0;
    run_t r1 = s_run(c.dir, "first", copy, nodes, "--stats");
    s_same(&ref, &r1, "first start");
    cr_assert_eq(s_head_hashed(r1.err, &whole), whole, "the first start did not hash the whole head:\n%s", r1.err);
    cr_assert_gt(whole, 0);
    run_t r2 = s_run(c.dir, "second", copy, nodes, "--stats");
    s_same(&ref, &r2, "second start");
    cr_assert_eq(s_head_hashed(r2.err, &whole), 0, "the second start hashed the head again:\n%s", r2.err);
    st_test_system("touch -d @1000000000 '%s'", copy); /* the file changed: its cache entry is stale */
    run_t r3 = s_run(c.dir, "changed", copy, nodes, "--stats");
    s_same(&ref, &r3, "start after the model changed");
    cr_assert_eq(s_head_hashed(r3.err, &whole), whole, "a changed model was not hashed again:\n%s", r3.err);
    s_run_free(&ref), s_run_free(&r1), s_run_free(&r2), s_run_free(&r3);
    s_cluster_stop(&c);
}

Test(cluster, node_down_at_start_is_named_and_skipped, .timeout = 120) {
    const char *synth[] = {"--type", "f32", NULL};
    const char *model = s_model(synth);
    cluster_t c;
    s_cluster_start(&c, 2);
    char nodes[1024];
    s_node_list(&c, nodes, sizeof nodes);
    run_t ref = s_run(c.dir, "ref", model, NULL, "");
    s_node_stop(&c, 1, SIGKILL);
    /* the live node takes every expert at placement, same answer, the dead one named */
    run_t r = s_run(c.dir, "down", model, nodes, "--timeout-ms 500 --no-fallback");
    s_same(&ref, &r, "one node of two down at start");
    cr_assert_not_null(strstr(r.err, "1 of 2 nodes up"), "%s", r.err);
    cr_assert_not_null(strstr(r.err, c.nodes[1].p.url), "the dead node is not named:\n%s", r.err);
    s_run_free(&ref);
    s_run_free(&r);
    s_cluster_stop(&c);
}

/* A node that passes setup (answers HELLO and ASSIGN, claims to hold every
 * expert) and then fails every EXPERT_COMPUTE: silently, or with an ERROR. */
typedef struct {
    void *zctx, *sock;
    char url[128];
    bool answer_error;
    bool foreign;         /* answers HELLO in protocol version 2, as "st-node 0.4.0 (git 29140ea)" */
    const char *software; /* its INVENTORY's, when not NULL (same protocol) */
    bool bad_head;        /* claims a head slice, answers HEAD_COMPUTE with NaN logits / ids outside it */
    uint64_t mem_budget;  /* its INVENTORY's (0: 256 MiB) */
    st_wire_head_assign_t head;
    int head_answers;                              /* bad HEAD_RESULTs sent */
    char hello_software[ST_WIRE_MAX_SOFTWARE + 1]; /* what the coordinator's HELLO named */
    volatile int stop;
    pthread_t thread;
} fake_node_t;

static void *s_fake_node(void *arg) {
    fake_node_t *f = arg;
    while (!f->stop) {
        st_wire_rx_t rx;
        if (st_wire_recv(f->sock, true, &rx, NULL, 0) < 0) continue; /* RCVTIMEO: re-checks stop */
        st_wire_msg_t m = {.request_id = rx.msg.request_id};
        bool reply = true;
        if (rx.msg.type == ST_MSG_HELLO && f->foreign) {
            snprintf(f->hello_software, sizeof f->hello_software, "%s", rx.msg.hello.software);
            uint8_t env[256];
            size_t len = st_test_foreign_envelope(env, 2, ST_MSG_INVENTORY, (uint32_t)rx.msg.request_id % 128,
                                                  "st-node 0.4.0 (git 29140ea)");
            zmq_send(f->sock, rx.peer, rx.peer_len, ZMQ_SNDMORE);
            zmq_send(f->sock, env, len, 0);
            reply = false;
        } else if (rx.msg.type == ST_MSG_HELLO) {
            m.type = ST_MSG_INVENTORY;
            snprintf(m.inventory.node_id, sizeof m.inventory.node_id, "fake");
            if (f->software) snprintf(m.inventory.software, sizeof m.inventory.software, "%s", f->software);
            m.inventory.mem_budget = f->mem_budget ? f->mem_budget : 256u << 20;
            m.inventory.store_free = 1u << 30;
            m.inventory.threads = 1;
        } else if (rx.msg.type == ST_MSG_ASSIGN) {
            m.type = ST_MSG_ASSIGN_ACK; /* "I hold them all" */
        } else if (rx.msg.type == ST_MSG_HEAD_ASSIGN && f->bad_head) {
            f->head = rx.msg.head_assign;
            m.type = ST_MSG_HEAD_ACK;
            m.head_ack.complete = true; /* "I hold it" */
        } else if (rx.msg.type == ST_MSG_HEAD_COMPUTE && f->bad_head) {
            const st_wire_head_compute_t *c = &rx.msg.head_compute;
            const uint32_t rows = f->head.hi - f->head.lo, k = c->full ? 0 : (c->n_cand < rows ? c->n_cand : rows);
            const size_t n = c->full ? (size_t)c->n_seq * rows : (size_t)c->n_seq * k * 2;
            uint32_t *frame = malloc(n * 4 + 4);
            float mx[ST_WIRE_MAX_HEAD_SEQ];
            double sum[ST_WIRE_MAX_HEAD_SEQ];
            for (size_t i = 0; i < n; i++) {
                const float nan = NAN, one = 1.0f;
                if (c->full)
                    memcpy(&frame[i], &nan, 4); /* logits that are not numbers */
                else if (i % 2 == 0)
                    frame[i] = f->head.hi + (uint32_t)i; /* ids outside its slice */
                else
                    memcpy(&frame[i], &one, 4);
            }
            for (uint32_t q = 0; q < c->n_seq && q < ST_WIRE_MAX_HEAD_SEQ; q++) mx[q] = 1.0f, sum[q] = 1.0;
            m.type = ST_MSG_HEAD_RESULT;
            m.head_result = (st_wire_head_result_t){
                .n_seq = c->n_seq, .n_cand = k, .full = c->full, .max = mx, .sum = sum, .sum_temp = sum};
            st_wire_send(f->sock, rx.peer, rx.peer_len, &m, frame, n * 4, 0);
            f->head_answers++;
            free(frame);
            reply = false;
        } else if (rx.msg.type == ST_MSG_EXPERT_COMPUTE && f->answer_error) {
            st_wire_send_error(f->sock, rx.peer, rx.peer_len, rx.msg.request_id, -5, "disk on fire");
            reply = false;
        } else {
            reply = false;
        }
        if (reply) st_wire_send(f->sock, rx.peer, rx.peer_len, &m, NULL, 0, 0);
        st_wire_rx_clear(&rx);
    }
    return NULL;
}

static void s_fake_start(fake_node_t *f, bool answer_error, bool foreign, const char *software) {
    const bool bad_head = f->bad_head;
    const uint64_t budget = f->mem_budget;
    memset(f, 0, sizeof *f);
    f->bad_head = bad_head, f->mem_budget = budget;
    f->answer_error = answer_error;
    f->foreign = foreign;
    f->software = software;
    f->zctx = zmq_ctx_new();
    f->sock = zmq_socket(f->zctx, ZMQ_ROUTER);
    int t = 100;
    cr_assert_eq(st_wire_socket_limits(f->sock, 8 << 20, 1000), 0);
    zmq_setsockopt(f->sock, ZMQ_RCVTIMEO, &t, sizeof t);
    cr_assert_eq(zmq_bind(f->sock, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof f->url;
    zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->url, &len);
    cr_assert_eq(pthread_create(&f->thread, NULL, s_fake_node, f), 0);
}

static void s_fake_stop(fake_node_t *f) {
    f->stop = 1;
    pthread_join(f->thread, NULL);
    zmq_close(f->sock);
    zmq_ctx_term(f->zctx);
}

static void s_failing_node(bool answer_error) {
    const char *synth[] = {"--type", "q4_0", "--seed", "3", NULL};
    const char *model = s_model(synth);
    cluster_t c;
    s_cluster_start(&c, 1);
    fake_node_t f = {0}; /* s_fake_start keeps bad_head and mem_budget */
    s_fake_start(&f, answer_error, false, NULL);
    char nodes[1024];
    snprintf(nodes, sizeof nodes, "%s,%s", c.nodes[0].p.url, f.url);
    run_t ref = s_run(c.dir, "ref", model, NULL, "");
    /* fallback: the coordinator computes the failing node's experts, same bytes */
    run_t r = s_run(c.dir, "fail", model, nodes, "--timeout-ms 300 --stats");
    s_same(&ref, &r, answer_error ? "a node answering ERROR" : "a silent node");
    cr_assert_not_null(strstr(r.err, f.url), "the failing node is not named:\n%s", r.err);
    unsigned long long here = 0;
    const char *p = strstr(r.err, " pairs on nodes, ");
    cr_assert(p && sscanf(p, " pairs on nodes, %llu computed here", &here) == 1 && here > 0, "%s", r.err);
    /* without fallback: a clear error naming it, within the deadline */
    double t0 = st_now_ms();
    run_t n = s_run(c.dir, "nofb", model, nodes, "--timeout-ms 300 --no-fallback");
    cr_assert_neq(n.status, 0);
    cr_assert_lt(st_now_ms() - t0, 30000);
    cr_assert_not_null(strstr(n.err, f.url), "the failing node is not named:\n%s", n.err);
    s_run_free(&ref);
    s_run_free(&r);
    s_run_free(&n);
    s_fake_stop(&f);
    s_cluster_stop(&c);
}

Test(cluster, silent_node_times_out_and_its_experts_are_computed_here, .timeout = 120) { s_failing_node(false); }

/* A node that claims its head slice and answers with NaN logits, or with
 * candidates outside its slice: each answer is refused (named in the log);
 * the logits and tokens are st-run's, for whole logits (--logits-out) and for
 * draws from candidates (without). Its budget is all slice: it gets no
 * expert, only head requests. Without replicas its slice is computed here;
 * with --replication 2 the good node (whose budget has room) holds a replica,
 * so each refused answer goes there and the coordinator computes none. */
static void s_hostile_head(bool replica) {
    const char *synth[] = {"--type", "q4_0", "--seed", "3", NULL};
    const char *model = s_model(synth);
    const char *opts = replica ? "--head sharded --replication 2 --stats" : "--head sharded --stats";
    cluster_t c;
    s_cluster_start(&c, 1);
    fake_node_t f = {.bad_head = true, .mem_budget = 1u << 20};
    s_fake_start(&f, false, false, NULL);
    char nodes[1024];
    snprintf(nodes, sizeof nodes, "%s,%s", c.nodes[0].p.url, f.url);
    run_t ref = s_run(c.dir, "ref", model, NULL, "");
    run_t r = s_run(c.dir, replica ? "bad-head-r2" : "bad-head", model, nodes, opts);
    s_same(&ref, &r, "a node sending bad head results (whole logits)");
    cr_assert_not_null(strstr(r.err, "bad head logits"), "the bad results were not refused:\n%s", r.err);
    char args[2048];
    snprintf(args, sizeof args,
             "-m '%s' --nodes %s --insecure --state-dir '%s' --quiet-push %s -n %d -p '" PROMPT
             "' --temp 0 --json -t 1",
             model, nodes, c.dir, opts, N_PREDICT);
    st_test_run_t d = st_test_run(c.dir, replica ? "bad-cands-r2" : "bad-cands", NULL, "st-coordinator", args, 120);
    cr_assert_eq(d.status, 0, "%s", d.err);
    cr_assert_str_eq(d.out, ref.out, "draws from candidates changed the tokens");
    cr_assert_not_null(strstr(d.err, "bad head candidates"), "the bad candidates were not refused:\n%s", d.err);
    cr_assert_gt(f.head_answers, 1);
    const char *logs[] = {r.err, d.err};
    for (int i = 0; i < 2; i++) {
        double here;
        s_head_nodes(logs[i], &here);
        if (replica) {
            cr_assert_eq(here, 0.0, "head rows computed here though a replica holds the slice:\n%s", logs[i]);
            cr_assert_eq(st_test_head_by_replica(logs[i]), N_PREDICT, "one replica answer per token:\n%s", logs[i]);
        } else if (i == 0) {
            cr_assert_gt(here, 0.0, "the bad node's slice was not computed here:\n%s", logs[i]);
        }
    }
    st_test_run_free(&d);
    s_run_free(&ref);
    s_run_free(&r);
    s_fake_stop(&f);
    s_cluster_stop(&c);
}

Test(cluster, hostile_head_replies_are_refused_and_computed_here, .timeout = 120) { s_hostile_head(false); }

Test(cluster, hostile_head_replies_go_to_a_replica, .timeout = 120) { s_hostile_head(true); }

Test(cluster, node_answering_errors_is_replaced_by_the_coordinator, .timeout = 120) { s_failing_node(true); }

/* A node of the previous protocol version (2: it would answer a compact request with one row
 * per pair): the coordinator's log names both sides' versions (the node's log does too:
 * test_node another_version_is_named_on_both_sides), and its HELLO said which version it is. */
Test(cluster, node_of_another_protocol_version_is_named, .timeout = 60) {
    const char *synth[] = {"--type", "f32", NULL};
    const char *model = s_model(synth);
    char dir[256];
    st_test_tmpdir(dir, sizeof dir, "foreign");
    fake_node_t f = {0}; /* s_fake_start keeps bad_head and mem_budget */
    s_fake_start(&f, false, true, NULL);
    run_t r = s_run(dir, "foreign", model, f.url, "--no-fallback");
    s_fake_stop(&f);
    cr_assert_neq(r.status, 0);
    char want[256];
    snprintf(want, sizeof want, "protocol version 2 from st-node 0.4.0 (git 29140ea), but this is st-coordinator %s",
             ST_TEST_PROJECT_VERSION);
    cr_assert(strstr(r.err, want) && strstr(r.err, f.url), "want '%s' with the node's address in:\n%s", want, r.err);
    cr_assert(strstr(r.err, "protocol version 3:"), "this side's version in:\n%s", r.err);
    snprintf(want, sizeof want, "st-coordinator %s", ST_TEST_PROJECT_VERSION);
    cr_assert(!strncmp(f.hello_software, want, strlen(want)), "HELLO named '%s'", f.hello_software);
    s_run_free(&r);
    st_test_tmpdir_remove(dir);
}

/* The same protocol, another release: served (here the node answers ERROR to every request, so
 * the coordinator computes its experts), and the coordinator's log warns, naming both. */
Test(cluster, node_of_another_release_is_served_with_a_warning, .timeout = 60) {
    const char *synth[] = {"--type", "f32", NULL};
    const char *model = s_model(synth);
    char dir[256];
    st_test_tmpdir(dir, sizeof dir, "release");
    fake_node_t f = {0}; /* s_fake_start keeps bad_head and mem_budget */
    s_fake_start(&f, true, false, "st-node 9.9.9 (git fake)");
    run_t r = s_run(dir, "release", model, f.url, "");
    s_fake_stop(&f);
    cr_assert_eq(r.status, 0, "%s", r.err);
    char want[256];
    snprintf(want, sizeof want, "runs st-node 9.9.9 (git fake) and this coordinator st-coordinator %s",
             ST_TEST_PROJECT_VERSION);
    cr_assert(strstr(r.err, want), "want '%s' in:\n%s", want, r.err);
    s_run_free(&r);
    st_test_tmpdir_remove(dir);
}

Test(cluster, no_node_at_all_gives_a_clear_error_quickly, .timeout = 60) {
    const char *synth[] = {"--type", "f32", NULL};
    const char *model = s_model(synth);
    char dir[256];
    st_test_tmpdir(dir, sizeof dir, "none");
    run_t f = s_run(dir, "none", model, "tcp://127.0.0.1:1", "--timeout-ms 300 --no-fallback");
    cr_assert_neq(f.status, 0);
    cr_assert_not_null(strstr(f.err, "tcp://127.0.0.1:1"), "%s", f.err);
    s_run_free(&f);
    st_test_tmpdir_remove(dir);
}

Test(cluster, local_cluster_script_answers_like_st_run, .timeout = 120) {
    const char *synth[] = {"--type", "q4_0", "--seed", "3", NULL};
    const char *model = s_model(synth);
    char dir[256];
    st_test_tmpdir(dir, sizeof dir, "lc");
    run_t ref = s_run(dir, "ref", model, NULL, "");
    int rc = st_test_system("ST_BIN='%s' timeout 120 '%s/deploy/local-cluster' -m '%s' -n 3 --mem 256M -- "
                            "-p '" PROMPT "' --temp 0 --json -t 1 -n %d --state-dir '%s' > '%s/lc.out' 2> '%s/lc.err'",
                            BIN, ST_SOURCE_DIR, model, N_PREDICT, dir, dir, dir);
    char path[600];
    snprintf(path, sizeof path, "%s/lc.out", dir);
    char *out = st_file_read(path, 0, NULL);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(out, ref.out);
    free(out);
    s_run_free(&ref);
    st_test_tmpdir_remove(dir);
}
