/* The cluster over shaped links between network namespaces: no hang, no lost
 * or changed token, every wait bounded by its deadline.
 *
 * Topology (made here, names unique per run, removed at the end even when
 * the test fails; namespaces left by a killed earlier run are removed first):
 *
 *   ns C: st-coordinator --- lo --- st-delay-proxy k --- veth k ---+
 *                                                                   |
 *   ns N0..N2:                                   st-node k on 10.77.k.2
 *
 * Each link: tbf bandwidth limit on both veth ends, 1% loss both ways by an
 * nftables rule on the node side (`numgen random mod 100 < 1 drop`; this
 * kernel has no netem), and DELAY_MS each way from the delaying proxy the
 * coordinator connects through. CURVE as deployed.
 *
 * Phases: setup (namespaces, nodes, a first run that pushes the shards with
 * the links unshaped); then the shaped run: N_PREDICT greedy tokens with
 * replication 2, and at decode token 8 node 1 is cut off completely (nft
 * drop all) for PARTITION_MS, then healed: it is marked down, its pairs go
 * to the replicas, and after the heal it rejoins on its verified store (no
 * shard sent) and serves again. The tokens must be st-run's; the
 * coordinator's longest wait for node results must stay within its deadline
 * (--timeout-ms) and the whole run within a bound. Needs root, ip, tc and
 * nft; skipped with the reason otherwise. Nodes and runs go through
 * tests/util/harness, wrapped in `ip netns exec NS`. */
#include <criterion/criterion.h>
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
#define PROMPT "The quick brown fox jumps over the lazy dog"
#define DELAY_MS 20       /* each way, from the proxy */
#define RATE "100mbit"    /* tbf on each veth end */
#define TIMEOUT_MS 1500   /* the coordinator's deadline per expert round trip */
#define PARTITION_MS 4000 /* node 1 cut off this long */
#define RUN_DEADLINE_MS 120000

static st_test_cluster_t g_c; /* N_NODES nodes, CURVE keys */
static char g_ip[64];
static char g_ns_c[32], g_ns_n[N_NODES][32];
static bool g_made;

/* Path of an administration tool, or NULL. */
static const char *s_tool(const char *name, char *buf, size_t cap) {
    const char *dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(buf, cap, "%s/%s", dirs[i], name);
        if (access(buf, X_OK) == 0) return buf;
    }
    return NULL;
}

/* Runs a command inside namespace ns (shell syntax); its exit status. */
#define NS(ns, fmt, ...) st_test_system("'%s' netns exec %s " fmt, g_ip, ns, __VA_ARGS__)

static void s_cleanup_namespaces(void) {
    /* ours, and those of earlier runs whose process is gone (stnt-PID-...) */
    st_test_system("'%s' netns list 2>/dev/null | awk '{print $1}' | grep '^stnt-' | while read ns; do "
                   "pid=${ns#stnt-}; pid=${pid%%%%-*}; "
                   "if [ \"$pid\" = %d ] || ! kill -0 \"$pid\" 2>/dev/null; then '%s' netns del \"$ns\"; fi; done",
                   g_ip, (int)getpid(), g_ip);
}

static void setup(void) {
    st_log_set_level(ST_LOG_ERROR);
    st_test_cluster_init(&g_c, "netns", true);
}

static void teardown(void) {
    st_test_cleanup();
    if (g_made) s_cleanup_namespaces();
    st_test_cluster_destroy(&g_c);
}

TestSuite(netns, .init = setup, .fini = teardown, .timeout = 300);

/* Skips the test unless namespaces, tc and nft can be used here. */
static void s_require(void) {
    char buf[64];
    if (geteuid() != 0) cr_skip_test("needs root (network namespaces, tc, nftables)");
    if (!s_tool("ip", g_ip, sizeof g_ip)) cr_skip_test("needs `ip` (iproute2; scripts/setup installs it)");
    if (!s_tool("tc", buf, sizeof buf)) cr_skip_test("needs `tc` (iproute2; scripts/setup installs it)");
    if (!s_tool("nft", buf, sizeof buf)) cr_skip_test("needs `nft` (nftables; scripts/setup installs it)");
    char probe[64];
    snprintf(probe, sizeof probe, "stnt-%d-probe", (int)getpid());
    g_made = true;
    if (st_test_system("'%s' netns add %s 2>/dev/null", g_ip, probe) != 0)
        cr_skip_test("cannot create a network namespace here (no CAP_NET_ADMIN?)");
    int nft_ok = NS(probe, "nft add table inet st-probe %s", "2>/dev/null");
    st_test_system("'%s' netns del %s", g_ip, probe);
    if (nft_ok != 0) cr_skip_test("nftables does not work in a namespace here (no nf_tables?)");
}

/* Namespaces C and N0..N2, one veth pair per node, addresses, loopback up. */
static void s_topology(void) {
    s_cleanup_namespaces();
    const int pid = (int)getpid();
    snprintf(g_ns_c, sizeof g_ns_c, "stnt-%d-c", pid);
    cr_assert_eq(st_test_system("'%s' netns add %s", g_ip, g_ns_c), 0);
    cr_assert_eq(NS(g_ns_c, "ip link set lo up%s", ""), 0);
    for (int k = 0; k < N_NODES; k++) {
        snprintf(g_ns_n[k], sizeof g_ns_n[k], "stnt-%d-n%d", pid, k);
        cr_assert_eq(st_test_system("'%s' netns add %s", g_ip, g_ns_n[k]), 0);
        /* veth names are per namespace: created inside C, one end moved to Nk */
        cr_assert_eq(NS(g_ns_c, "ip link add vc%d type veth peer name vn%d netns %s", k, k, g_ns_n[k]), 0);
        cr_assert_eq(NS(g_ns_c, "sh -c 'ip addr add 10.77.%d.1/24 dev vc%d && ip link set vc%d up'", k, k, k), 0);
        cr_assert_eq(NS(g_ns_n[k],
                        "sh -c 'ip link set lo up && ip addr add 10.77.%d.2/24 dev vn%d && "
                        "ip link set vn%d up'",
                        k, k, k),
                     0);
    }
}

/* tbf on both ends, and the node-side nftables table: loss, and an empty
 * "part" chain that a partition fills with one drop rule. */
static void s_shape(void) {
    char rules[300];
    snprintf(rules, sizeof rules, "%s/shape.nft", g_c.dir);
    FILE *f = fopen(rules, "w");
    cr_assert_not_null(f);
    fprintf(f, "table inet st {\n"
               "  chain part { }\n"
               "  chain input { type filter hook input priority 0; policy accept;\n"
               "    iifname \"lo\" accept; jump part; numgen random mod 100 < 1 drop; }\n"
               "  chain output { type filter hook output priority 0; policy accept;\n"
               "    oifname \"lo\" accept; jump part; numgen random mod 100 < 1 drop; }\n"
               "}\n");
    fclose(f);
    for (int k = 0; k < N_NODES; k++) {
        cr_assert_eq(NS(g_ns_c, "tc qdisc add dev vc%d root tbf rate %s burst 64kb latency 100ms", k, RATE), 0);
        cr_assert_eq(NS(g_ns_n[k], "tc qdisc add dev vn%d root tbf rate %s burst 64kb latency 100ms", k, RATE), 0);
        cr_assert_eq(NS(g_ns_n[k], "nft -f '%s'", rules), 0);
    }
}

static void s_partition(int k, bool on) {
    if (on)
        cr_assert_eq(NS(g_ns_n[k], "nft add rule inet st part drop%s", ""), 0);
    else
        cr_assert_eq(NS(g_ns_n[k], "nft flush chain inet st part%s", ""), 0);
}

/* Nodes in their namespaces, and a proxy per node in C that the coordinator
 * reaches each node through. */
static void s_cluster(void) {
    for (int k = 0; k < N_NODES; k++) {
        char listen[64], to[64], log[300], delay[16];
        snprintf(listen, sizeof listen, "tcp://10.77.%d.2:*", k);
        const char *wrap[] = {g_ip, "netns", "exec", g_ns_n[k], NULL};
        const st_test_node_opts_t o = {.listen = listen, .wrap = wrap};
        cr_assert_eq(st_test_cluster_node_try(&g_c, k, &o), 0, "node %d exited (log %s)", k, g_c.nodes[k].log);
        cr_assert_eq(sscanf(g_c.nodes[k].p.url, "tcp://%63s", to), 1);
        st_test_node_t proxy; /* "listening on HOST:PORT" like a node */
        snprintf(log, sizeof log, "%s/proxy-%d.log", g_c.dir, k);
        snprintf(delay, sizeof delay, "%d", DELAY_MS);
        const char *pargv[] = {g_ip,       "netns",       "exec", g_ns_c, BIN "/st-delay-proxy",
                               "--listen", "127.0.0.1:0", "--to", to,     "--delay",
                               delay,      NULL};
        cr_assert_eq(st_test_node_start(&proxy, pargv, log, 10000), 0, "proxy %d exited (log %s)", k, log);
        snprintf(g_c.nodes[k].via, sizeof g_c.nodes[k].via, "tcp://%s", proxy.url);
    }
}

typedef struct {
    st_test_run_t r;
    double ms;
    double partition_at, heal_at; /* ms since the start, 0: none */
    double rejoin_ms;             /* from the heal to the coordinator's "rejoined" line, -1: not seen */
} run_t;

/* st-coordinator in namespace C; partition >= 0: cut that node off at decode
 * token 8 for PARTITION_MS, then heal it. Waits with RUN_DEADLINE_MS. */
static run_t s_run(const char *model, const char *tag, int partition) {
    char flags[700], args[2048], wrap[128];
    snprintf(args, sizeof args,
             "-m '%s' %s --replication 2 --state-dir '%s' --quiet-push --stats --timeout-ms %d -p '%s' -n %d "
             "--temp 0 --json -t 1",
             model, st_test_cluster_flags(&g_c, flags, sizeof flags), g_c.dir, TIMEOUT_MS, PROMPT, N_PREDICT);
    snprintf(wrap, sizeof wrap, "'%s' netns exec %s", g_ip, g_ns_c);
    st_test_bg_t b;
    st_test_run_start(&b, g_c.dir, tag, wrap, "st-coordinator", args);
    run_t r = {0};
    if (partition >= 0) {
        cr_assert(st_test_run_wait_err(&b, "stats: token 8:", RUN_DEADLINE_MS), "%s: decode token 8 never came", tag);
        s_partition(partition, true);
        r.partition_at = st_now_ms() - b.t0;
        /* the partition lasts PARTITION_MS unless the run ends first */
        const int st = st_test_run_wait(&b, PARTITION_MS);
        s_partition(partition, false);
        r.heal_at = st_now_ms() - b.t0;
        r.rejoin_ms = -1;
        if (st < 0 && st_test_run_wait_err(&b, " rejoined: ", (int)(b.t0 + RUN_DEADLINE_MS - st_now_ms())))
            r.rejoin_ms = st_now_ms() - b.t0 - r.heal_at;
    }
    r.r = st_test_run_finish(&b, (int)(b.t0 + RUN_DEADLINE_MS - st_now_ms()));
    r.ms = st_now_ms() - b.t0;
    cr_assert_eq(r.r.status, 0, "%s: the coordinator failed:\n%s", tag, r.r.err);
    return r;
}

/* "longest wait for node results X ms of N waits (deadline D ms)" */
static double s_max_wait(const char *err, unsigned long long *waits) {
    const char *p = strstr(err, "longest wait for node results ");
    double ms = -1;
    int deadline = 0;
    cr_assert_not_null(p, "no wait summary:\n%s", err);
    cr_assert_eq(
        sscanf(p, "longest wait for node results %lf ms of %llu waits (deadline %d ms)", &ms, waits, &deadline), 3);
    cr_assert_eq(deadline, TIMEOUT_MS);
    return ms;
}

Test(netns, shaped_links_loss_and_a_healed_partition_keep_the_tokens) {
    s_require();
    const char *model = st_test_cluster_model();
    char *ref = st_test_reference(g_c.dir, model, PROMPT, N_PREDICT);

    double t = st_now_ms();
    s_topology();
    s_cluster();
    const double t_setup = st_now_ms() - t;

    /* shards pushed over the delayed but otherwise clean links */
    run_t push = s_run(model, "push", -1);
    cr_assert_str_eq(push.r.out, ref, "output over the delayed links differs from st-run's");
    cr_assert_gt(st_test_pushed(push.r.err), 0);

    s_shape();
    run_t shaped = s_run(model, "shaped", -1);
    cr_assert_str_eq(shaped.r.out, ref, "output over shaped links (1%% loss) differs from st-run's:\n%s", shaped.r.err);
    cr_assert_geq(st_test_pushed(shaped.r.err), 0, "no push summary:\n%s", shaped.r.err);
    for (const char *l = shaped.r.err; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, "warn:", 5)) cr_log_info("shaped run: %.*s", (int)strcspn(l, "\n"), l);
    unsigned long long waits_shaped = 0;
    const double wait_shaped = s_max_wait(shaped.r.err, &waits_shaped);

    run_t part = s_run(model, "partition", 1);
    cr_assert_str_eq(part.r.out, ref, "tokens changed by the partition:\n%s", part.r.err);
    cr_assert_not_null(strstr(part.r.err, "is down"), "the cut-off node was never marked down:\n%s", part.r.err);
    /* healed: node 1 comes back on its verified store and serves again */
    unsigned long long rejoin_bytes = 0;
    cr_assert_geq(st_test_rejoins(part.r.err, &rejoin_bytes), 1, "node 1 did not rejoin after the heal:\n%s",
                  part.r.err);
    cr_assert_eq(rejoin_bytes, 0, "shards were sent to the node that rejoined");
    cr_assert_not_null(strstr(part.r.err, "3 of 3 nodes up;"), "%s", part.r.err);
    cr_assert_gt(st_test_last_rt(part.r.err, 1), 0, "node 1 is not used after it rejoined");
    for (const char *l = part.r.err; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, "warn:", 5) || !strncmp(l, "cluster: ", 9) || strstr(l, "rejoin"))
            cr_log_info("%.*s", (int)strcspn(l, "\n"), l);
    unsigned long long waits_part = 0;
    const double wait_part = s_max_wait(part.r.err, &waits_part);

    cr_log_info("setup %.0f ms; push run %.0f ms; shaped run %.0f ms (longest wait %.1f ms of %llu); partition run "
                "%.0f ms (cut at %.0f ms, healed at %.0f ms, rejoined %.0f ms after the heal; longest wait %.1f ms of "
                "%llu; deadline %d ms)",
                t_setup, push.ms, shaped.ms, wait_shaped, waits_shaped, part.ms, part.partition_at, part.heal_at,
                part.rejoin_ms, wait_part, waits_part, TIMEOUT_MS);
    /* a wait ends at its deadline: zmq_poll's wake-up and the reply handling are the slack */
    cr_assert_leq(wait_shaped, TIMEOUT_MS + 100, "a wait overran its deadline");
    cr_assert_leq(wait_part, TIMEOUT_MS + 100, "a wait overran its deadline");
    cr_assert_lt(part.ms, RUN_DEADLINE_MS);
    st_test_run_free(&push.r), st_test_run_free(&shaped.r), st_test_run_free(&part.r), free(ref);
}
