/* harness: a cluster on loopback for the tests that run our programs
 * (test_cluster, test_failures, test_faults...): a temp dir, st-node
 * processes each on its own store (CURVE keys as deployed, or --insecure),
 * and program runs whose stdout, stderr and logits land in files of that dir
 * and are read back. Every wait has a deadline; nodes die with the test
 * process. */
#ifndef ST_TEST_HARNESS_H
#define ST_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

#include "testutil.h"

#define ST_TEST_MAX_NODES 8

typedef struct {
    st_test_node_t p; /* pid, url, public key */
    char store[320];  /* DIR/store-i */
} st_test_cnode_t;

typedef struct {
    char dir[256];   /* /tmp/st-test-TAG-XXXXXX: stores, logs, outputs */
    bool keyed;      /* CURVE: DIR/coord.key, nodes --allow DIR/coord.pub */
    const char *mem; /* each node's --mem (default "256M") */
    int n;           /* nodes started so far (slots 0..n-1) */
    st_test_cnode_t nodes[ST_TEST_MAX_NODES];
} st_test_cluster_t;

/* Makes the temp dir (tag names it) and, keyed, the coordinator's key pair
 * (st-keygen). No nodes yet. */
void st_test_cluster_init(st_test_cluster_t *c, const char *tag, bool keyed);
/* Starts node i (its store DIR/store-i made when absent) listening on listen
 * ("tcp://127.0.0.1:*", or the URL of a node restarted on its port), with
 * extra arguments (NULL-terminated, or NULL); waits up to 10 s for its URL. */
void st_test_cluster_node_start(st_test_cluster_t *c, int i, const char *listen, const char *const *extra);
/* Stops node i with sig (st_test_node_stop); its status. */
int st_test_cluster_node_stop(st_test_cluster_t *c, int i, int sig);
/* init, then n nodes on loopback ports. */
void st_test_cluster_start(st_test_cluster_t *c, const char *tag, bool keyed, int n);
/* The nodes' URLs, comma-separated, into out. */
void st_test_cluster_urls(const st_test_cluster_t *c, char *out, size_t cap);
/* The st-coordinator flags that reach the nodes: "--nodes URLS --insecure",
 * or (keyed) "--cluster DIR/cluster --key DIR/coord.key" after writing
 * DIR/cluster ("URL NODE_PUBLIC_KEY" lines). Returns out. */
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

#endif
