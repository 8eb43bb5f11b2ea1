/* harness: the local cluster of the process tests (see harness.h). */
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void st_test_cluster_init(st_test_cluster_t *c, const char *tag, bool keyed) {
    memset(c, 0, sizeof *c);
    c->keyed = keyed;
    c->mem = "256M";
    snprintf(c->dir, sizeof c->dir, "/tmp/st-test-%s-XXXXXX", tag);
    cr_assert_not_null(mkdtemp(c->dir), "mkdtemp %s", c->dir);
    if (keyed)
        cr_assert_eq(
            st_test_system("%s'%s/st-keygen' '%s/coord' > /dev/null 2>&1", st_test_run_prefix(), ST_BINARY_DIR, c->dir),
            0, "st-keygen failed");
}

void st_test_cluster_node_start(st_test_cluster_t *c, int i, const char *listen, const char *const *extra) {
    cr_assert(i >= 0 && i < ST_TEST_MAX_NODES, "node %d", i);
    st_test_cnode_t *nd = &c->nodes[i];
    char store[sizeof nd->store];
    snprintf(store, sizeof store, "%s/store-%d", c->dir, i);
    memcpy(nd->store, store, sizeof store);
    mkdir(nd->store, 0755); /* kept when the node restarts on it */
    char log[320], allow[300];
    snprintf(log, sizeof log, "%s/node-%d.log", c->dir, i);
    snprintf(allow, sizeof allow, "%s/coord.pub", c->dir);
    const char *argv[32] = {
        ST_BINARY_DIR "/st-node", "--listen", listen, "--mem", c->mem, "--store", nd->store, "-t", "1"};
    int n = 9;
    if (c->keyed)
        argv[n++] = "--allow", argv[n++] = allow;
    else
        argv[n++] = "--insecure";
    for (int k = 0; extra && extra[k]; k++) {
        cr_assert_lt(n, 31, "too many node arguments");
        argv[n++] = extra[k];
    }
    argv[n] = NULL;
    cr_assert_eq(st_test_node_start(&nd->p, argv, log, 10000), 0, "node %d exited before listening (log %s)", i, log);
    if (i >= c->n) c->n = i + 1;
}

int st_test_cluster_node_stop(st_test_cluster_t *c, int i, int sig) { return st_test_node_stop(&c->nodes[i].p, sig); }

void st_test_cluster_start(st_test_cluster_t *c, const char *tag, bool keyed, int n) {
    st_test_cluster_init(c, tag, keyed);
    for (int i = 0; i < n; i++) st_test_cluster_node_start(c, i, "tcp://127.0.0.1:*", NULL);
}

void st_test_cluster_urls(const st_test_cluster_t *c, char *out, size_t cap) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < c->n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? "," : "", c->nodes[i].p.url);
}

const char *st_test_cluster_flags(st_test_cluster_t *c, char *out, size_t cap) {
    if (!c->keyed) {
        char urls[ST_TEST_MAX_NODES * 130];
        st_test_cluster_urls(c, urls, sizeof urls);
        snprintf(out, cap, "--nodes %s --insecure", urls);
        return out;
    }
    char path[300];
    snprintf(path, sizeof path, "%s/cluster", c->dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < c->n; i++) {
        cr_assert(c->nodes[i].p.pub[0], "node %d announced no public key", i);
        fprintf(f, "%s %s\n", c->nodes[i].p.url, c->nodes[i].p.pub);
    }
    cr_assert_eq(fclose(f), 0);
    snprintf(out, cap, "--cluster '%s' --key '%s/coord.key'", path, c->dir);
    return out;
}

void st_test_cluster_destroy(st_test_cluster_t *c) {
    for (int i = 0; i < c->n; i++) st_test_node_stop(&c->nodes[i].p, SIGTERM);
    if (c->dir[0]) st_test_system("rm -rf '%s'", c->dir);
    memset(c, 0, sizeof *c);
}

st_test_run_t st_test_run(const char *dir, const char *tag, const char *env, const char *prog, const char *args,
                          int timeout_s) {
    char out[320], err[320], lg[320];
    snprintf(out, sizeof out, "%s/%s.out", dir, tag);
    snprintf(err, sizeof err, "%s/%s.err", dir, tag);
    snprintf(lg, sizeof lg, "%s/%s.logits", dir, tag);
    unlink(lg);
    /* "@LOGITS" in args -> the logits path */
    char a[4096];
    size_t used = 0;
    for (const char *p = args ? args : ""; *p && used + 1 < sizeof a;) {
        if (!strncmp(p, "@LOGITS", 7)) {
            used += (size_t)snprintf(a + used, sizeof a - used, "'%s'", lg);
            p += 7;
        } else {
            a[used++] = *p++;
        }
    }
    a[used < sizeof a ? used : sizeof a - 1] = '\0';
    st_test_run_t r = {0};
    r.status = st_test_system("%s timeout %d %s'%s/%s' %s > '%s' 2> '%s'", env ? env : "", timeout_s,
                              st_test_run_prefix(), ST_BINARY_DIR, prog, a, out, err);
    r.out = st_file_read(out, 0, NULL);
    r.err = st_file_read(err, 0, NULL);
    r.logits = st_file_read(lg, 0, &r.logits_len);
    cr_assert_not_null(r.out, "%s: no stdout", tag);
    cr_assert_not_null(r.err, "%s: no stderr", tag);
    return r;
}

void st_test_run_free(st_test_run_t *r) {
    free(r->out);
    free(r->err);
    free(r->logits);
    memset(r, 0, sizeof *r);
}
