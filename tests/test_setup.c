/* The coordinator's setup steps (coordinator/setup.c) driven without
 * st-coordinator's main: st_coord_setup against real st-node processes
 * (plain TCP on 127.0.0.1, tests/util/harness), then the between-steps work as a generation
 * loop or an idle server calls it. Placement counts are checked against the
 * model's n_layer x n_expert experts, and what moves at a join against what
 * each node held before. */
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "harness.h"
#include "setup.h"
#include "st_log.h"
#include "testutil.h"

static st_test_cluster_t g_c; /* two --insecure nodes at most */

static void setup(void) {
    st_log_set_level(ST_LOG_ERROR);
    st_test_cluster_init(&g_c, "setup", false);
}

static void teardown(void) {
    st_test_cleanup();
    st_test_cluster_destroy(&g_c);
}

TestSuite(setup, .init = setup, .fini = teardown, .timeout = 120);

static st_model_t *s_model(void) {
    static char path[1024];
    const char *args[] = {"--type", "f32", NULL};
    cr_assert_not_null(st_test_model(args, path, sizeof path), "st-synth failed");
    st_model_t *m = st_model_load_streaming(path, true);
    cr_assert_not_null(m);
    return m;
}

static void s_node_start(int i, const char *listen) { st_test_cluster_node_start(&g_c, i, listen, NULL); }

/* The tests' coordinator options: plain TCP, replication 1, one thread,
 * quiet pushes, 1 s expert deadline; state in the test's dir. */
static st_coord_opts_t s_opts(void) {
    return (st_coord_opts_t){.insecure = true,
                             .state_dir = g_c.dir,
                             .model_path = "setup-test.gguf",
                             .quiet_push = true,
                             .replication = 1,
                             .timeout_ms = 1000,
                             .push_timeout_ms = 10000,
                             .threads = 1,
                             .pin_fraction = 0.5};
}

static int s_experts(const st_coord_t *c, int node) {
    const st_placement_t *pl = st_coord_placement(c);
    return pl && node < st_placement_n_nodes(pl) ? st_placement_node_experts(pl, node) : 0;
}

/* Node 0 answers at setup and is given every expert; node 1, listed but not
 * running, is in no placement. Started later, it is probed, answers and
 * joins while the loop calls st_coord_idle: it takes a share that node 0
 * gives up, and nothing else moves. */
Test(setup, a_node_that_answers_late_joins_and_takes_a_share) {
    st_model_t *m = s_model();
    const int total = m->cfg.n_layer * m->cfg.n_expert;
    s_node_start(0, "tcp://127.0.0.1:*");
    s_node_start(1, "tcp://127.0.0.1:*");
    char url1[128];
    snprintf(url1, sizeof url1, "%s", g_c.nodes[1].p.url);
    st_test_cluster_node_stop(&g_c, 1, SIGTERM); /* its address is known; it is down */

    st_node_addr_t addrs[2] = {0};
    snprintf(addrs[0].url, sizeof addrs[0].url, "%s", g_c.nodes[0].p.url);
    snprintf(addrs[1].url, sizeof addrs[1].url, "%s", url1);
    st_coord_opts_t o = s_opts();
    st_coord_t *c = st_coord_new(m, &o, addrs, 2);
    cr_assert_not_null(c);
    cr_assert_eq(st_coord_setup(c), 0);
    const st_cluster_t *cl = st_coord_cluster(c);
    cr_assert(st_cluster_is_up(cl, 0));
    cr_assert(!st_cluster_is_up(cl, 1));
    cr_assert_eq(s_experts(c, 0), total, "node 0 should hold all %d experts", total);
    cr_assert_eq(s_experts(c, 1), 0);
    cr_assert(!st_coord_waiting(c, NULL, 0), "no --min-nodes: nothing to wait for");

    s_node_start(1, url1);
    const double dl = st_now_ms() + 15000;
    while (!(st_cluster_is_up(cl, 1) && s_experts(c, 1) > 0)) {
        cr_assert_lt(st_now_ms(), dl, "node 1 did not join within 15 s");
        st_coord_idle(c);
        poll(NULL, 0, 20); /* the idle server's pace, bounded by the deadline */
    }
    const int e0 = s_experts(c, 0), e1 = s_experts(c, 1);
    cr_log_info("after the join: node 0 %d experts, node 1 %d", e0, e1);
    cr_assert_eq(e0 + e1, total, "each expert once (replication 1)");
    cr_assert_gt(e1, total / 4, "node 1 (same budget) should take about half, took %d of %d", e1, total);
    for (int l = 0; l < m->cfg.n_layer; l++) /* one owner each: nothing was copied instead of moved */
        for (int e = 0; e < m->cfg.n_expert; e++) cr_assert_eq(st_placement_n_owners(st_coord_placement(c), l, e), 1);
    st_coord_destroy(&c);
    st_model_destroy(&m);
}

/* --min-nodes 2 with one node up: st_coord_setup places nothing yet and
 * st_coord_waiting says why; the time limit ends the wait, and st_coord_wait
 * then places the experts on the node that is up. */
Test(setup, min_nodes_defers_the_placement_until_the_time_limit) {
    st_model_t *m = s_model();
    s_node_start(0, "tcp://127.0.0.1:*");
    st_node_addr_t addrs[2] = {0};
    snprintf(addrs[0].url, sizeof addrs[0].url, "%s", g_c.nodes[0].p.url);
    snprintf(addrs[1].url, sizeof addrs[1].url, "tcp://127.0.0.1:9"); /* nothing listens */
    st_coord_opts_t o = s_opts();
    o.min_nodes = 2;
    o.min_nodes_timeout_s = 1;
    st_coord_t *c = st_coord_new(m, &o, addrs, 2);
    cr_assert_not_null(c);
    cr_assert_eq(st_coord_setup(c), 0);
    cr_assert_null(st_coord_placement(c), "placed before --min-nodes were up");
    char why[200] = "";
    cr_assert(st_coord_waiting(c, why, sizeof why));
    cr_assert_str_eq(why, "1 of the 2 nodes of --min-nodes up, 1 answered");
    const double t0 = st_now_ms();
    cr_assert_eq(st_coord_wait(c), 0);
    cr_assert_geq(st_now_ms() - t0, 500, "the wait ended before its time limit");
    cr_assert(!st_coord_waiting(c, NULL, 0));
    cr_assert_eq(s_experts(c, 0), m->cfg.n_layer * m->cfg.n_expert, "the node up was not given the experts");
    st_coord_destroy(&c);
    st_model_destroy(&m);
}

/* The cluster file's lines are read whole: a comment longer than any buffer is one comment, not
 * a comment and then a "node" made of its tail (before: refused as a node with a bad key). */
Test(setup, long_comment_lines_in_the_cluster_file) {
    char path[300];
    snprintf(path, sizeof path, "%s/cluster", g_c.dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("# ", f);
    for (int i = 0; i < 1500; i++) fputc(i % 50 == 49 ? ' ' : 'x', f);
    fputs("\n127.0.0.1:5555 0123456789abcdefghij0123456789abcdefghij # a node\n", f);
    cr_assert_eq(fclose(f), 0);
    int n = 0;
    st_node_addr_t *v = st_coord_node_list(NULL, path, &n, false);
    cr_assert_not_null(v, "the cluster file was refused");
    cr_assert_eq(n, 1);
    cr_assert_str_eq(v[0].url, "tcp://127.0.0.1:5555");
    free(v);
}
