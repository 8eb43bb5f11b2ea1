/* Node failures survived, with real processes on 127.0.0.1 and CURVE keys as
 * deployed: three st-node processes, st-coordinator generating 64 tokens,
 * and one node killed with SIGKILL in the middle of the generation. With
 * replication 2 its requests (its experts' pairs and its slice of the
 * output head) go to the replicas and the coordinator computes none of its
 * head slice; with replication 1 the coordinator computes them from its own
 * copy; the tokens are those of st-run either way. The node restarted on its store
 * rejoins and is sent zero shard bytes.
 *
 * "In the middle": the coordinator prints a line per decode token (--stats);
 * when token 8 shows, the test stops it (SIGSTOP), kills the node, checks
 * that the generation was not over, and lets it go on (SIGCONT). Every wait
 * has a deadline. ST_TEST_LIGHT=1 (sanitizer builds) keeps replication 2 only. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "st_log.h"
#include "testutil.h"

#define BIN ST_BINARY_DIR
#define N_NODES 3
#define N_PREDICT 64
/* the rejoin test generates longer: the restarted node is probed 500 ms after
 * it went down, and must come back while tokens are still to come */
#define N_PREDICT_LONG 400
#define N_PREDICT_LONG_LIGHT 160 /* sanitizer builds: each token is several times slower already */
static int g_n_predict = N_PREDICT;
#define PROMPT "The quick brown fox jumps over the lazy dog"
#define DEADLINE_MS 120000 /* per coordinator run: a hang guard, far above a run's time */

static st_test_cluster_t g_c; /* N_NODES nodes, and one that joins; CURVE keys */

static void setup(void) {
    st_log_set_level(ST_LOG_ERROR);
    st_test_cluster_init(&g_c, "failures", true);
}

static void teardown(void) {
    st_test_cleanup();
    st_test_cluster_destroy(&g_c);
}

TestSuite(failures, .init = setup, .fini = teardown, .timeout = 240);

/* Starts node i (CURVE, allowing DIR/coord.pub) on listen; waits for its URL. */
static void s_node_start(int i, const char *listen) { st_test_cluster_node_start(&g_c, i, listen, NULL); }

/* Three nodes, and the cluster file "URL NODE_PUBLIC_KEY". */
static void s_cluster(void) {
    for (int i = 0; i < N_NODES; i++) s_node_start(i, "tcp://127.0.0.1:*");
    char path[300];
    st_test_cluster_write(&g_c, path, sizeof path);
}

static const char *s_model(void) {
    static char path[1024];
    const char *args[] = {"--type",         "q4_0", "--hidden",     "512", "--layers", "8", "--experts", "16",
                          "--experts-used", "4",    "--expert-ffn", "512", "--seed",   "5", NULL};
    cr_assert_not_null(st_test_model(args, path, sizeof path), "st-synth failed");
    return path;
}

/* st-run's output (the reference) for the test's prompt. */
static char *s_reference(const char *model) { return st_test_reference(g_c.dir, model, PROMPT, g_n_predict); }

typedef struct {
    char *out, *err;
    bool killed_mid; /* the node died while tokens were still to come */
} run_t;

typedef enum { STAY_DEAD, RESTART, WIPE_AND_RESTART, JOIN, ABORT } after_kill_t;

/* Runs st-coordinator; kill_node >= 0: SIGKILL that node when decode token 8
 * is printed, then (while the coordinator is stopped) restart it on its port
 * and store, or on an emptied store; or (JOIN) add that node to the cluster
 * file and send the coordinator SIGHUP; or (ABORT) send the node SIGABRT, on
 * which it executes itself again. */
static run_t s_run_ex(const char *model, const char *tag, int replication, int kill_node, after_kill_t after) {
    char args[2048]; /* DIR/cluster as s_cluster wrote it (a node that joins is added by hand) */
    snprintf(args, sizeof args,
             "-m '%s' --cluster '%s/cluster' --key '%s/coord.key' --replication %d --state-dir '%s' --quiet-push "
             "--stats --timeout-ms 5000 -p '%s' -n %d --temp 0 --json -t 1",
             model, g_c.dir, g_c.dir, replication, g_c.dir, PROMPT, g_n_predict);
    st_test_bg_t bg;
    st_test_run_start(&bg, g_c.dir, tag, NULL, "st-coordinator", args);
    run_t r = {0};
    if (kill_node >= 0 && st_test_run_wait_err(&bg, "stats: token 8:", DEADLINE_MS)) {
        kill(bg.pid, SIGSTOP);
        char *e = st_file_read(bg.err, 0, NULL), last[32];
        snprintf(last, sizeof last, "stats: token %d:", g_n_predict - 1);
        r.killed_mid = e && !strstr(e, last);
        free(e);
        char url[128];
        snprintf(url, sizeof url, "%s", g_c.nodes[kill_node].p.url);
        if (after == JOIN) {
            char path[400];
            snprintf(path, sizeof path, "%s/cluster", g_c.dir);
            FILE *f = fopen(path, "a");
            cr_assert_not_null(f);
            fprintf(f, "tcp://no-such-host:notaport %s\n", g_c.nodes[kill_node].p.pub); /* left out, logged */
            fprintf(f, "%s %s\n", url, g_c.nodes[kill_node].p.pub);
            fclose(f);
            kill(bg.pid, SIGHUP);
        } else if (after == ABORT) {
            kill(g_c.nodes[kill_node].p.pid, SIGABRT);
        } else {
            st_test_node_stop(&g_c.nodes[kill_node].p, SIGKILL);
            if (after == WIPE_AND_RESTART) /* its experts gone; its key (node.key) kept */
                st_test_system("find '%s' -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +",
                               g_c.nodes[kill_node].store);
            if (after != STAY_DEAD) s_node_start(kill_node, url);
        }
        kill(bg.pid, SIGCONT);
    } else if (kill_node >= 0) {
        cr_assert_geq(st_test_run_wait(&bg, 0), 0, "the coordinator did not reach decode token 8");
    }
    st_test_run_t done = st_test_run_finish(&bg, (int)(bg.t0 + DEADLINE_MS - st_now_ms()));
    r.out = done.out, r.err = done.err;
    free(done.logits);
    cr_assert_eq(done.status, 0, "%s: the coordinator failed:\n%s", tag, r.err);
    return r;
}

static run_t s_run(const char *model, const char *tag, int replication, int kill_node) {
    return s_run_ex(model, tag, replication, kill_node, STAY_DEAD);
}

/* The start of the tests that act mid-run: N_PREDICT_LONG tokens (fewer
 * under sanitizers), the reference, three nodes, and a first run that fills
 * their stores. Returns the reference; the model in *model. */
static char *s_filled_cluster(const char **model) {
    g_n_predict = getenv("ST_TEST_LIGHT") && atoi(getenv("ST_TEST_LIGHT")) ? N_PREDICT_LONG_LIGHT : N_PREDICT_LONG;
    *model = s_model();
    char *ref = s_reference(*model);
    s_cluster();
    run_t a = s_run(*model, "fill", 2, -1);
    cr_assert_str_eq(a.out, ref);
    free(a.out), free(a.err);
    return ref;
}

static unsigned long long s_count(const char *err, const char *fmt) {
    const char *p = strstr(err, "cluster: ") ? strstr(err, " pairs on nodes, ") : NULL;
    unsigned long long remote = 0, fb = 0, resent = 0;
    cr_assert_not_null(p, "no cluster summary:\n%s", err);
    while (p > err && p[-1] != ' ') p--;
    cr_assert_eq(sscanf(p, "%llu pairs on nodes, %llu computed here (fallback), %llu re-sent to a replica", &remote,
                        &fb, &resent),
                 3, "%.300s", p);
    return !strcmp(fmt, "fallback") ? fb : !strcmp(fmt, "resent") ? resent : remote;
}

/* The sharded head's --stats line: head bytes read here per hidden state
 * (slices no node delivered, computed from the coordinator's copy). */
static double s_head_here(const char *err) {
    const char *p = strstr(err, "cluster: head sharded over ");
    cr_assert_not_null(p, "the head is not sharded:\n%s", err);
    p = strstr(p, " B on the wire");
    double here = -1;
    cr_assert(p && (p = strstr(p, "), ")) && sscanf(p, "), %lf B of head weights read here", &here) == 1, "%s", err);
    return here;
}

/* The sharded head's round trips (--stats): steps, rounds, and the steps
 * that needed a second round (an owner failed in them). */
typedef struct {
    unsigned long long steps, rounds, asks, retried, last;
} head_rounds_t;

static head_rounds_t s_head_rounds(const char *err) {
    head_rounds_t r = {0};
    const char *p = strstr(err, "cluster: head round trips: ");
    double per;
    cr_assert(p && sscanf(p,
                          "cluster: head round trips: %lf per step (%llu steps, %llu rounds in %llu requests); %llu "
                          "steps asked a replica in a second round (the last: step %llu)",
                          &per, &r.steps, &r.rounds, &r.asks, &r.retried, &r.last) == 6,
              "no head round trips:\n%s", err);
    return r;
}

Test(failures, kill_9_mid_generation_keeps_the_tokens) {
    const char *model = s_model();
    char *ref = s_reference(model);
    s_cluster();
    const bool light = getenv("ST_TEST_LIGHT") && atoi(getenv("ST_TEST_LIGHT"));

    /* undisturbed, replication 2 */
    run_t a = s_run(model, "undisturbed", 2, -1);
    cr_assert_str_eq(a.out, ref, "cluster output differs from st-run's");
    cr_assert_eq(s_count(a.err, "fallback"), 0);

    /* node 1 killed at decode token 8, replication 2: its pairs go to the replicas */
    double t0 = st_now_ms();
    run_t b = s_run(model, "kill-r2", 2, 1);
    cr_log_info("replication 2 with a node killed: %.0f ms", st_now_ms() - t0);
    cr_assert(b.killed_mid, "the generation was over before the node was killed");
    cr_assert_str_eq(b.out, ref, "tokens changed after kill -9 with replication 2:\n%s", b.err);
    cr_assert_not_null(strstr(b.err, "is down"), "the dead node was not marked down:\n%s", b.err);
    /* its pairs went to the replicas: re-sent, or (when the head's step saw it die first, between two
     * tokens) sent there from the start; none computed here */
    cr_assert(s_count(b.err, "resent") > 0 || s_count(b.err, "fallback") == 0,
              "the replicas did not take the dead node's pairs:\n%s", b.err);
    cr_assert_eq(s_head_here(a.err), 0.0, "head rows computed here with every node up:\n%s", a.err);
    cr_assert_eq(st_test_head_by_replica(a.err), 0, "replicas answered with every node up:\n%s", a.err);
    /* the dead node's head slice: from its replica, never computed here */
    cr_assert_eq(s_head_here(b.err), 0.0, "the dead node's head slice was computed here:\n%s", b.err);
    cr_assert_gt(st_test_head_by_replica(b.err), 0, "no replica answered for the dead node's slice:\n%s", b.err);
    /* one round per step with every node up; with one dead, its replica is asked in the first round once
     * the node is known down: a second round at most in the step it died in (and the next, when its
     * connection's end came in between), never in the ~55 after */
    const head_rounds_t ra = s_head_rounds(a.err), rb = s_head_rounds(b.err);
    cr_assert_geq(ra.steps, N_PREDICT, "%s", a.err);
    cr_assert_eq(ra.rounds, ra.steps, "more than one head round a step with every node up:\n%s", a.err);
    cr_assert_geq(rb.steps, N_PREDICT, "%s", b.err);
    cr_assert_leq(rb.retried, 2, "the dead node's slice went to its replica in a second round in %llu steps:\n%s",
                  rb.retried, b.err);
    cr_assert_leq(rb.rounds, rb.steps + 2, "%s", b.err);

    /* the node restarts on its store and port: rejoins with zero shard bytes */
    char url[128];
    snprintf(url, sizeof url, "%s", g_c.nodes[1].p.url);
    s_node_start(1, url);
    run_t c = s_run(model, "restarted", 2, -1);
    cr_assert_str_eq(c.out, ref);
    cr_assert_not_null(strstr(c.err, "3 of 3 nodes up"), "%s", c.err);
    cr_assert_eq(st_test_pushed(c.err), 0, "the restarted node was sent shards again:\n%s", c.err);

    if (!light) { /* replication 1: node 2 killed, the coordinator computes its experts */
        run_t d = s_run(model, "kill-r1", 1, 2);
        cr_assert(d.killed_mid, "the generation was over before the node was killed");
        cr_assert_str_eq(d.out, ref, "tokens changed after kill -9 with replication 1:\n%s", d.err);
        cr_assert_gt(s_count(d.err, "fallback"), 0, "nothing computed by the coordinator:\n%s", d.err);
        /* no replica of its head slice either: its own copy of the head takes over */
        cr_assert_gt(s_head_here(d.err), 0.0, "the dead node's head slice was not computed here:\n%s", d.err);
        free(d.out), free(d.err);
    }
    free(b.out), free(b.err), free(c.out), free(c.err), free(ref);
}

/* A node killed mid-generation and restarted while the coordinator still
 * generates comes back in the same run: on its store with zero shard bytes,
 * on an emptied store with its experts pushed again; it serves the last
 * tokens, and the tokens are st-run's. */
Test(failures, node_restarted_mid_generation_rejoins_the_run) {
    const char *model;
    char *ref = s_filled_cluster(&model);

    double t0 = st_now_ms();
    run_t b = s_run_ex(model, "restart", 2, 1, RESTART);
    const char *gen = strstr(b.err, "generated ");
    cr_log_info("node 1 killed and restarted mid-run: %.0f ms (%.*s)", st_now_ms() - t0,
                gen ? (int)strcspn(gen, "\n") : 0, gen ? gen : "");
    cr_assert(b.killed_mid, "the generation was over before the node was killed");
    cr_assert_str_eq(b.out, ref, "tokens changed:\n%s", b.err);
    cr_assert_not_null(strstr(b.err, "is down"), "%s", b.err);
    unsigned long long bytes = 1;
    cr_assert_geq(st_test_rejoins(b.err, &bytes), 1, "node 1 did not rejoin:\n%s", b.err);
    cr_assert_eq(bytes, 0, "shards were sent to a node whose store was intact:\n%s", b.err);
    cr_assert_not_null(strstr(b.err, "3 of 3 nodes up;"), "%s", b.err);
    cr_assert_gt(st_test_last_rt(b.err, 1), 0, "node 1 does not serve after its rejoin:\n%s", b.err);
    cr_assert_not_null(strstr(b.err, "cluster: head sharded over 3 nodes"),
                       "node 1 does not serve its head slice (from its store) after its rejoin:\n%s", b.err);
    /* and is asked for it again: its replica answered for some of the steps after the kill only */
    const head_rounds_t hr = s_head_rounds(b.err);
    cr_assert_lt(st_test_head_by_replica(b.err) + 10, hr.steps, "node 1's slice stayed with its replica:\n%s", b.err);
    cr_assert_leq(hr.retried, 2, "%s", b.err);

    run_t c = s_run_ex(model, "wipe", 2, 2, WIPE_AND_RESTART);
    cr_assert(c.killed_mid, "the generation was over before the node was killed");
    cr_assert_str_eq(c.out, ref, "tokens changed:\n%s", c.err);
    cr_assert_geq(st_test_rejoins(c.err, &bytes), 1, "node 2 did not rejoin:\n%s", c.err);
    cr_assert_gt(bytes, 0, "nothing pushed to a node whose store was emptied:\n%s", c.err);
    cr_assert_gt(st_test_last_rt(c.err, 2), 0, "node 2 does not serve after its rejoin:\n%s", c.err);
    cr_log_info("node 2 rejoined on an empty store: %llu shard bytes pushed to it during the run", bytes);
    free(b.out), free(b.err), free(c.out), free(c.err), free(ref);
}

/* A node that aborts mid-generation (libzmq 4.3.4 can, on what a peer sends:
 * issue 12; here SIGABRT, the signal its assertion raises) executes itself
 * again: the same process, port and store. The coordinator sees it go down
 * and come back in the same run, sends it nothing, and the tokens are
 * st-run's; the node's log says it restarted. */
Test(failures, node_that_aborts_restarts_itself_and_rejoins) {
    const char *model;
    char *ref = s_filled_cluster(&model);
    const pid_t pid = g_c.nodes[1].p.pid;
    run_t b = s_run_ex(model, "abort", 2, 1, ABORT);
    cr_assert(b.killed_mid, "the generation was over before the node aborted");
    cr_assert_str_eq(b.out, ref, "tokens changed:\n%s", b.err);
    cr_assert_not_null(strstr(b.err, "is down"), "the coordinator did not see the node go:\n%s", b.err);
    unsigned long long bytes = 1;
    cr_assert_geq(st_test_rejoins(b.err, &bytes), 1, "node 1 did not rejoin:\n%s", b.err);
    cr_assert_eq(bytes, 0, "shards were sent to a node whose store was intact:\n%s", b.err);
    cr_assert_gt(st_test_last_rt(b.err, 1), 0, "node 1 does not serve after its restart:\n%s", b.err);
    char log[300];
    snprintf(log, sizeof log, "%s/node-1.log", g_c.dir);
    cr_assert(st_test_file_has(log, "restarted after an abort (restart 1 of this process)", 10000), "no restart in %s",
              log);
    cr_assert_lt(st_test_wait(pid, 0), 0, "node 1 exited instead of restarting");
    free(b.out), free(b.err), free(ref);
}

/* A node added to the cluster file while the coordinator generates joins
 * on SIGHUP: it gets a share of the experts, and only that share moves (the
 * other nodes are sent nothing and keep a subset of what they had); it
 * serves the last tokens, and the tokens are st-run's. */
Test(failures, node_joining_mid_generation_takes_a_share_and_only_that_moves) {
    const char *model;
    char *ref = s_filled_cluster(&model);
    s_node_start(N_NODES, "tcp://127.0.0.1:*");
    cr_assert_eq(strlen(g_c.nodes[N_NODES].p.pub), 40);

    run_t b = s_run_ex(model, "join", 2, N_NODES, JOIN);
    cr_assert(b.killed_mid, "the generation was over before the node joined");
    cr_assert_str_eq(b.out, ref, "tokens changed by the join:\n%s", b.err);
    cr_assert_not_null(strstr(b.err, "node tcp://no-such-host:notaport not added"), "%s", b.err);
    const char *j = strstr(b.err, "cluster: join: ");
    cr_assert_not_null(j, "no join summary:\n%s", b.err);
    cr_log_info("%.*s", (int)strcspn(j, "\n"), j);
    unsigned before[N_NODES + 1], after[N_NODES + 1], pushed[N_NODES + 1];
    long given_up = 0;
    for (int i = 0; i <= N_NODES; i++) {
        char key[32];
        snprintf(key, sizeof key, " node %d ", i);
        const char *p = strstr(j, key);
        cr_assert(p && sscanf(p + strlen(key), "%u -> %u experts, %u pushed;", &before[i], &after[i], &pushed[i]) == 3,
                  "%.400s", j);
        if (i < N_NODES) {
            cr_assert_eq(pushed[i], 0, "node %d was sent experts at the join:\n%.400s", i, j);
            cr_assert_leq(after[i], before[i]);
            given_up += (long)before[i] - (long)after[i];
        }
    }
    cr_assert_eq(before[N_NODES], 0);
    cr_assert_gt(after[N_NODES], 0, "the new node got no share");
    cr_assert_eq(pushed[N_NODES], after[N_NODES], "the new node was not sent exactly its share");
    cr_assert_eq(given_up, (long)after[N_NODES], "experts moved between the old nodes too");
    cr_assert_not_null(strstr(b.err, "4 of 4 nodes up;"), "%s", b.err);
    cr_assert_gt(st_test_last_rt(b.err, N_NODES), 0, "the new node does not serve after joining");
    free(b.out), free(b.err), free(ref);
}
