/* harness: the local cluster of the process tests (see harness.h). */
#include "harness.h"

#include <criterion/criterion.h>
#include <poll.h>
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
    st_test_tmpdir(c->dir, sizeof c->dir, tag);
    if (keyed)
        cr_assert_eq(
            st_test_system("%s'%s/st-keygen' '%s/coord' > /dev/null 2>&1", st_test_run_prefix(), ST_BINARY_DIR, c->dir),
            0, "st-keygen failed");
}

int st_test_cluster_node_try(st_test_cluster_t *c, int i, const st_test_node_opts_t *o) {
    static const st_test_node_opts_t defaults = {0};
    if (!o) o = &defaults;
    cr_assert(i >= 0 && i < ST_TEST_MAX_NODES, "node %d", i);
    st_test_cnode_t *nd = &c->nodes[i];
    char store[sizeof nd->store], log[sizeof nd->log]; /* (snprintf from c->dir into c itself: -Wrestrict) */
    snprintf(store, sizeof store, "%s/store-%d", c->dir, i);
    snprintf(log, sizeof log, "%s/node-%d.log", c->dir, i);
    memcpy(nd->store, store, sizeof store);
    memcpy(nd->log, log, sizeof log);
    mkdir(nd->store, 0755); /* kept when the node restarts on it */
    char allow[300];
    snprintf(allow, sizeof allow, "%s/coord.pub", c->dir);
    const char *argv[48];
    int n = 0;
    for (int k = 0; o->wrap && o->wrap[k]; k++) {
        cr_assert_lt(n, 8, "too long a wrapper");
        argv[n++] = o->wrap[k];
    }
    const char *listen = o->listen ? o->listen : "tcp://127.0.0.1:*";
    const char *base[] = {
        ST_BINARY_DIR "/st-node", "--listen", listen, "--mem", c->mem, "--store", nd->store, "-t", "1"};
    for (size_t k = 0; k < sizeof base / sizeof base[0]; k++) argv[n++] = base[k];
    if (c->keyed && !o->no_auth)
        argv[n++] = "--allow", argv[n++] = allow;
    else if (!o->no_auth)
        argv[n++] = "--insecure";
    for (int k = 0; o->extra && o->extra[k]; k++) {
        cr_assert_lt(n, 47, "too many node arguments");
        argv[n++] = o->extra[k];
    }
    argv[n] = NULL;
    const int st = st_test_node_start(&nd->p, argv, nd->log, 10000);
    if (st == 0 && i >= c->n) c->n = i + 1;
    return st;
}

void st_test_cluster_node_start(st_test_cluster_t *c, int i, const char *listen, const char *const *extra) {
    const st_test_node_opts_t o = {.listen = listen, .extra = extra};
    cr_assert_eq(st_test_cluster_node_try(c, i, &o), 0, "node %d exited before listening (log %s)", i, c->nodes[i].log);
}

int st_test_cluster_node_stop(st_test_cluster_t *c, int i, int sig) { return st_test_node_stop(&c->nodes[i].p, sig); }

void st_test_cluster_start(st_test_cluster_t *c, const char *tag, bool keyed, int n) {
    st_test_cluster_init(c, tag, keyed);
    for (int i = 0; i < n; i++) st_test_cluster_node_start(c, i, "tcp://127.0.0.1:*", NULL);
}

/* The URL the coordinator is given for a node. */
static const char *s_url(const st_test_cnode_t *nd) { return nd->via[0] ? nd->via : nd->p.url; }

void st_test_cluster_urls(const st_test_cluster_t *c, char *out, size_t cap) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < c->n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? "," : "", s_url(&c->nodes[i]));
}

const char *st_test_cluster_write(st_test_cluster_t *c, char *path, size_t cap) {
    snprintf(path, cap, "%s/cluster", c->dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    for (int i = 0; i < c->n; i++) {
        cr_assert(!c->keyed || c->nodes[i].p.pub[0], "node %d announced no public key", i);
        fprintf(f, "%s%s%s\n", s_url(&c->nodes[i]), c->keyed ? " " : "", c->keyed ? c->nodes[i].p.pub : "");
    }
    cr_assert_eq(fclose(f), 0);
    return path;
}

const char *st_test_cluster_flags(st_test_cluster_t *c, char *out, size_t cap) {
    if (!c->keyed) {
        char urls[ST_TEST_MAX_NODES * 130];
        st_test_cluster_urls(c, urls, sizeof urls);
        snprintf(out, cap, "--nodes %s --insecure", urls);
        return out;
    }
    char path[300];
    snprintf(out, cap, "--cluster '%s' --key '%s/coord.key'", st_test_cluster_write(c, path, sizeof path), c->dir);
    return out;
}

void st_test_cluster_destroy(st_test_cluster_t *c) {
    for (int i = 0; i < c->n; i++) st_test_node_stop(&c->nodes[i].p, SIGTERM);
    st_test_tmpdir_remove(c->dir);
    memset(c, 0, sizeof *c);
}

/* args with "@LOGITS" replaced by the quoted path lg, into a. */
static void s_args(char *a, size_t cap, const char *args, const char *lg) {
    size_t used = 0;
    for (const char *p = args ? args : ""; *p && used + 1 < cap;) {
        if (!strncmp(p, "@LOGITS", 7)) {
            used += (size_t)snprintf(a + used, cap - used, "'%s'", lg);
            p += 7;
        } else {
            a[used++] = *p++;
        }
    }
    a[used < cap ? used : cap - 1] = '\0';
}

/* The output paths DIR/TAG.{out,err,logits}; the old logits removed. */
static void s_paths(const char *dir, const char *tag, char out[320], char err[320], char lg[320]) {
    snprintf(out, 320, "%s/%s.out", dir, tag);
    snprintf(err, 320, "%s/%s.err", dir, tag);
    snprintf(lg, 320, "%s/%s.logits", dir, tag);
    unlink(lg);
}

/* Reads the outputs back into r (status set by the caller). */
static void s_read_back(st_test_run_t *r, const char *tag, const char *out, const char *err, const char *lg) {
    r->out = st_file_read(out, 0, NULL);
    r->err = st_file_read(err, 0, NULL);
    r->logits = st_file_read(lg, 0, &r->logits_len);
    cr_assert_not_null(r->out, "%s: no stdout", tag);
    cr_assert_not_null(r->err, "%s: no stderr", tag);
}

st_test_run_t st_test_run(const char *dir, const char *tag, const char *env, const char *prog, const char *args,
                          int timeout_s) {
    char out[320], err[320], lg[320], a[4096];
    s_paths(dir, tag, out, err, lg);
    s_args(a, sizeof a, args, lg);
    st_test_run_t r = {0};
    r.status = st_test_system("%s timeout %d %s'%s/%s' %s > '%s' 2> '%s'", env ? env : "", timeout_s,
                              st_test_run_prefix(), ST_BINARY_DIR, prog, a, out, err);
    s_read_back(&r, tag, out, err, lg);
    return r;
}

char *st_test_reference(const char *dir, const char *model, const char *prompt, int n) {
    char args[2048];
    snprintf(args, sizeof args, "-m '%s' -p '%s' -n %d --temp 0 --json -t 1", model, prompt, n);
    st_test_run_t r = st_test_run(dir, "ref", NULL, "st-run", args, 120);
    cr_assert_eq(r.status, 0, "st-run (the reference) failed:\n%s", r.err);
    char *out = r.out;
    r.out = NULL;
    st_test_run_free(&r);
    return out;
}

void st_test_run_start(st_test_bg_t *b, const char *dir, const char *tag, const char *wrap, const char *prog,
                       const char *args) {
    memset(b, 0, sizeof *b);
    snprintf(b->tag, sizeof b->tag, "%s", tag);
    s_paths(dir, tag, b->out, b->err, b->logits);
    char a[4096], cmd[8192];
    s_args(a, sizeof a, args, b->logits);
    snprintf(cmd, sizeof cmd, "exec %s %s'%s/%s' %s > '%s' 2> '%s'", wrap ? wrap : "", st_test_run_prefix(),
             ST_BINARY_DIR, prog, a, b->out, b->err);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    b->t0 = st_now_ms();
    b->pid = st_test_spawn(argv, NULL, NULL, SIGKILL);
}

int st_test_run_wait(st_test_bg_t *b, int ms) {
    if (b->pid <= 0) return b->status;
    const int st = st_test_wait(b->pid, ms);
    if (st >= 0) b->status = st, b->pid = 0;
    return st;
}

bool st_test_run_wait_err(st_test_bg_t *b, const char *text, int ms) {
    const double deadline = st_now_ms() + ms;
    for (;;) {
        char *e = st_file_read(b->err, 0, NULL);
        const bool seen = e && strstr(e, text);
        free(e);
        if (seen) return true;
        if (st_test_run_wait(b, 0) >= 0 || st_now_ms() >= deadline) return false;
        poll(NULL, 0, 1); /* polling a file for a line, bounded by the deadline */
    }
}

st_test_run_t st_test_run_finish(st_test_bg_t *b, int ms) {
    if (st_test_run_wait(b, ms > 0 ? ms : 0) < 0) {
        st_test_stop(b->pid, SIGKILL, 5000);
        b->pid = 0;
        cr_assert_fail("%s: the program hung (no exit within %d ms)", b->tag, ms);
    }
    st_test_run_t r = {.status = b->status};
    s_read_back(&r, b->tag, b->out, b->err, b->logits);
    return r;
}

void st_test_run_free(st_test_run_t *r) {
    free(r->out);
    free(r->err);
    free(r->logits);
    memset(r, 0, sizeof *r);
}
