/* harness: a cluster for the tests that run our programs (test_cluster,
 * test_failures, test_faults, test_netns, test_security): a temp dir, st-node
 * processes each on its own store (CURVE keys as deployed, or --insecure; on
 * loopback, or under a wrapper such as `ip netns exec NS`), and program runs,
 * in the foreground or the background, whose stdout, stderr and logits land
 * in files of that dir and are read back. Every wait has a deadline; nodes
 * die with the test process. */
#ifndef ST_TEST_HARNESS_H
#define ST_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "testutil.h"

#define ST_TEST_MAX_NODES 8

typedef struct {
    st_test_node_t p; /* pid, url, public key */
    char store[320];  /* DIR/store-i */
    char log[320];    /* DIR/node-i.log: its stderr, appended to over restarts */
    char via[160];    /* the URL the coordinator is given for it (a proxy's), "": p.url */
} st_test_cnode_t;

typedef struct {
    char dir[256];   /* /tmp/st-test-TAG.pPID-XXXXXX (st_test_tmpdir): stores, logs, outputs */
    bool keyed;      /* CURVE: DIR/coord.key, nodes --allow DIR/coord.pub */
    const char *mem; /* each node's --mem (default "256M") */
    int n;           /* nodes started so far (slots 0..n-1) */
    st_test_cnode_t nodes[ST_TEST_MAX_NODES];
} st_test_cluster_t;

/* Makes the temp dir (tag names it) and, keyed, the coordinator's key pair
 * (st-keygen). No nodes yet. */
void st_test_cluster_init(st_test_cluster_t *c, const char *tag, bool keyed);
/* How a node starts, beyond the cluster's settings; every field may be 0. */
typedef struct {
    const char *listen;       /* NULL: "tcp://127.0.0.1:*"; or the URL of a node restarted on its port */
    const char *const *extra; /* more st-node arguments, NULL-terminated */
    const char *const *wrap;  /* a command st-node runs under, NULL-terminated: {"ip", "netns", "exec", NS, NULL} */
    bool no_auth;             /* neither --allow nor --insecure (the node must refuse to start) */
} st_test_node_opts_t;

/* Starts node i (its store DIR/store-i made when absent) as o says (NULL: the
 * defaults) and waits up to 10 s for its "listening on" line. 0 once it
 * listens; its exit status (> 0) when it exited first, for the tests of a
 * node that must refuse to start. */
int st_test_cluster_node_try(st_test_cluster_t *c, int i, const st_test_node_opts_t *o);
/* st_test_cluster_node_try that fails the test unless the node listens:
 * listen as in st_test_node_opts_t, extra arguments (NULL-terminated, or NULL). */
void st_test_cluster_node_start(st_test_cluster_t *c, int i, const char *listen, const char *const *extra);
/* Stops node i with sig (st_test_node_stop); its status. */
int st_test_cluster_node_stop(st_test_cluster_t *c, int i, int sig);
/* init, then n nodes on loopback ports. */
void st_test_cluster_start(st_test_cluster_t *c, const char *tag, bool keyed, int n);
/* The nodes' URLs, comma-separated, into out. */
void st_test_cluster_urls(const st_test_cluster_t *c, char *out, size_t cap);
/* Writes DIR/cluster, the file st-coordinator --cluster reads, for nodes
 * 0..n-1: "URL" lines, or (keyed) "URL NODE_PUBLIC_KEY"; a node's via URL
 * stands for its own. Written again after a node starts, it adds that node
 * (st-coordinator reads it again on SIGHUP). Returns path (DIR/cluster). */
const char *st_test_cluster_write(st_test_cluster_t *c, char *path, size_t cap);
/* The st-coordinator flags that reach the nodes: "--nodes URLS --insecure",
 * or (keyed) "--cluster DIR/cluster --key DIR/coord.key" after writing
 * DIR/cluster ("URL NODE_PUBLIC_KEY" lines). A node's via URL, when set,
 * stands for its own. Returns out. */
const char *st_test_cluster_flags(st_test_cluster_t *c, char *out, size_t cap);
/* Stops every node (SIGTERM) and removes the dir. */
void st_test_cluster_destroy(st_test_cluster_t *c);

/* One program run: exit status as a shell gives it (124: timed out), its
 * stdout and stderr, and the file --logits-out wrote (NULL when none). */
typedef struct {
    int status;
    char *out, *err, *logits;
    size_t logits_len;
} st_test_run_t;

/* Runs `ENV BIN/PROG ARGS` under `timeout TIMEOUT_S` in the shell, stdout and
 * stderr to DIR/TAG.out and .err; in args, "@LOGITS" stands for DIR/TAG.logits.
 * env may be NULL ("NAME=VALUE ..." otherwise). Fails the test when the
 * outputs cannot be read back. */
st_test_run_t st_test_run(const char *dir, const char *tag, const char *env, const char *prog, const char *args,
                          int timeout_s);
void st_test_run_free(st_test_run_t *r);

/* st-run's greedy output (-p PROMPT -n N --temp 0 --json -t 1) for model:
 * the reference a cluster's output must equal (the test fails when st-run
 * does). The caller frees it. */
char *st_test_reference(const char *dir, const char *model, const char *prompt, int n);

/* A program run in the background, for a test that acts while it runs. */
typedef struct {
    pid_t pid;    /* 0 once reaped */
    int status;   /* as st_test_wait, once reaped */
    double t0;    /* st_now_ms() at the start */
    char tag[64]; /* names it in failures */
    char out[320], err[320], logits[320];
} st_test_bg_t;

/* Starts `WRAP BIN/PROG ARGS` (wrap: shell words such as "ip netns exec NS",
 * or NULL) without waiting; outputs and "@LOGITS" as st_test_run. */
void st_test_run_start(st_test_bg_t *b, const char *dir, const char *tag, const char *wrap, const char *prog,
                       const char *args);
/* Polls its stderr until it holds text (true), or it exits or ms pass (false). */
bool st_test_run_wait_err(st_test_bg_t *b, const char *text, int ms);
/* Waits up to ms for it to exit; its status, or -1 while it still runs. */
int st_test_run_wait(st_test_bg_t *b, int ms);
/* Waits up to ms for it to exit (fails the test as hung after SIGKILL
 * otherwise) and reads its outputs back, as st_test_run returns them. */
st_test_run_t st_test_run_finish(st_test_bg_t *b, int ms);

#endif
