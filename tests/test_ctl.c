/* st-ctl against a real st-coordinator --http (with an API key) over three
 * st-node processes (CURVE, as deployed), on the tiny synthetic model.
 *
 * A node is drained while a 200-token completion runs: st-ctl says it moved
 * the node's experts between two steps of that one generation, and the text
 * is exactly st-run's (the reference: one process, no cluster). Afterwards
 * the drained node holds no expert and gets no request, and the answers are
 * still st-run's. st-ctl's table shows every node with its state and real
 * memory; undrained, it takes its share back with nothing sent (its store
 * kept it) and serves again. A node that is killed shows no stale figure,
 * and the experts the coordinator computes for it; rebalance gives them to
 * the node up (the coordinator computes none), and remove takes the drained
 * node (drained again, named by its address) out, of the cluster file too
 * (its other lines and comments kept), so a restart does not bring it
 * back. Refusals:
 * no API key, a node that still serves, an unknown node or action, a body
 * that is not JSON. And st-ctl against a stand-in server whose /health has
 * numbers no int holds.
 */
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define PROMPT "Tell me about foxes"
#define KEY "ctl-test-key"

TestSuite(ctl, .fini = st_test_cleanup);

/* ---- HTTP through curl(1): the coordinator is a separate process anyway ----------- */

typedef struct {
    const char *dir;
    char url[128];
} coord_t;

/* The body curl got for METHOD url+path (with the key unless no_key), and
 * the HTTP status in *status. malloc'd; NULL when curl failed. It asserts
 * nothing, so that s_gen's thread can call it (an assertion fails a test
 * only from the test's own thread; from another it crashes the process). */
static char *s_curl(const coord_t *c, const char *path, const char *body, bool no_key, int *status) {
    static atomic_int seq; /* s_gen's thread asks too, while this one polls /health: names of its own */
    const int k = atomic_fetch_add(&seq, 1);
    char out[400], code[400];
    snprintf(out, sizeof out, "%s/http-%d.out", c->dir, k);
    snprintf(code, sizeof code, "%s/http-%d.code", c->dir, k);
    FILE *b = NULL;
    char bodyf[400] = "";
    if (body) {
        snprintf(bodyf, sizeof bodyf, "%s/http-%d.body", c->dir, k);
        b = fopen(bodyf, "w");
        if (!b || fputs(body, b) < 0 || fclose(b) != 0) return NULL;
    }
    int rc = st_test_system("curl -s -m 120 %s%s%s %s%s%s -o '%s' -w '%%{http_code}' '%s%s' > '%s'",
                            no_key ? "" : "-H 'Authorization: Bearer ", no_key ? "" : KEY, no_key ? "" : "'",
                            body ? "-H 'Content-Type: application/json' --data-binary @'" : "", body ? bodyf : "",
                            body ? "'" : "", out, c->url, path, code);
    if (rc != 0) return NULL;
    char *s = st_file_read(code, 0, NULL);
    *status = s ? atoi(s) : -1;
    free(s);
    char *r = st_file_read(out, 0, NULL);
    return r ? r : strdup("");
}

/* s_curl from the test's own thread: curl failing fails the test. */
static char *s_http(const coord_t *c, const char *path, const char *body, bool no_key, int *status) {
    char *r = s_curl(c, path, body, no_key, status);
    cr_assert_not_null(r, "curl %s%s failed", c->url, path);
    return r;
}

static cJSON *s_health(const coord_t *c) {
    int st;
    char *b = s_http(c, "/health", NULL, false, &st);
    cr_assert_eq(st, 200, "/health: %d %s", st, b);
    cJSON *o = cJSON_Parse(b);
    free(b);
    cr_assert_not_null(o);
    return o;
}

static const cJSON *s_node(const cJSON *h, int index) {
    const cJSON *n;
    cJSON_ArrayForEach(n, cJSON_GetObjectItem(h, "nodes")) if (cJSON_GetNumberValue(cJSON_GetObjectItem(n, "index")) ==
                                                               index) return n;
    return NULL;
}

static double s_num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItem(o, k);
    cr_assert(cJSON_IsNumber(v), "no number '%s'", k);
    return v->valuedouble;
}

/* The request of a completion of n tokens at temperature 0. */
static const char *s_completion_body(char *body, size_t cap, int n) {
    snprintf(body, cap, "{\"prompt\":\"%s\",\"max_tokens\":%d,\"temperature\":0}", PROMPT, n);
    return body;
}

/* The text of a completion's answer b (status st; freed), asserting its form. */
static char *s_completion_text(char *b, int st) {
    cr_assert_eq(st, 200, "completion: %d %s", st, b);
    cJSON *o = cJSON_Parse(b);
    const char *t =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "text"));
    cr_assert_not_null(t, "no text in %s", b);
    char *r = strdup(t);
    cJSON_Delete(o);
    free(b);
    return r;
}

/* A completion at temperature 0, its text. */
static char *s_complete(const coord_t *c, int n) {
    char body[256];
    int st;
    char *b = s_http(c, "/v1/completions", s_completion_body(body, sizeof body, n), false, &st);
    return s_completion_text(b, st);
}

/* st-run's text for the same prompt: the reference. */
static char *s_reference(const char *dir, int n) {
    char args[1024];
    snprintf(args, sizeof args, "-m '%s' -p '%s' --temp 0 -n %d -t 1 --json", st_test_tiny_model(), PROMPT, n);
    st_test_run_t r = st_test_run(dir, "ref", NULL, "st-run", args, 300);
    cr_assert_eq(r.status, 0, "st-run: %s", r.err);
    cJSON *o = cJSON_Parse(r.out);
    char *t = strdup(cJSON_GetStringValue(cJSON_GetObjectItem(o, "text")));
    cJSON_Delete(o);
    st_test_run_free(&r);
    return t;
}

static st_test_run_t s_ctl(const coord_t *c, const char *tag, const char *args) {
    char a[512];
    snprintf(a, sizeof a, "--url %s %s", c->url, args);
    return st_test_run(c->dir, tag, NULL, "st-ctl", a, 300);
}

typedef struct {
    const coord_t *c;
    int n, status;
    char *answer; /* NULL: curl failed (the thread asserts nothing: checked after the join) */
} gen_t;

static void *s_gen(void *arg) {
    gen_t *g = arg;
    char body[256];
    g->answer = s_curl(g->c, "/v1/completions", s_completion_body(body, sizeof body, g->n), false, &g->status);
    return NULL;
}

Test(ctl, drain_remove_rebalance_keep_the_tokens, .timeout = 600) {
    st_test_cluster_t cl;
    st_test_cluster_start(&cl, "ctl", true, 3);
    coord_t c = {.dir = cl.dir};
    const int N_LONG = 200, N_SHORT = 24;
    char *want_long = s_reference(cl.dir, N_LONG), *want_short = s_reference(cl.dir, N_SHORT);

    /* the coordinator, serving with an API key */
    char flags[2048], cmd[4096], log[300], cluster[300];
    st_test_cluster_flags(&cl, flags, sizeof flags);
    snprintf(cluster, sizeof cluster, "%s/cluster", cl.dir); /* with comments, as people write it */
    char *listed = st_file_read(cluster, 0, NULL);
    cr_assert_not_null(listed);
    FILE *cf = fopen(cluster, "w");
    cr_assert_not_null(cf);
    fprintf(cf, "# the rack\n%s\n  # last line, no newline", listed);
    cr_assert_eq(fclose(cf), 0);
    free(listed);
    snprintf(log, sizeof log, "%s/coord.log", cl.dir);
    snprintf(cmd, sizeof cmd,
             "exec '%s/st-coordinator' -m '%s' %s --http 127.0.0.1:0 --api-key " KEY " -t 1 --state-dir '%s'",
             ST_BINARY_DIR, st_test_tiny_model(), flags, cl.dir);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    int out;
    pid_t pid = st_test_spawn(argv, &out, log, SIGTERM);
    char buf[512] = "";
    size_t len = 0;
    for (double dl = st_now_ms() + 120000; !strstr(buf, "/\n");) {
        struct pollfd p = {out, POLLIN, 0};
        cr_assert_lt(st_now_ms(), dl, "the coordinator did not serve within 120 s (log %s)", log);
        if (poll(&p, 1, 200) <= 0) continue;
        ssize_t n = read(out, buf + len, sizeof buf - 1 - len);
        cr_assert_gt(n, 0, "the coordinator exited (log %s)", log);
        buf[len += (size_t)n] = '\0';
    }
    const char *u = strstr(buf, "serving on http://");
    cr_assert_not_null(u, "%s", buf);
    snprintf(c.url, sizeof c.url, "%.*s", (int)strcspn(u + 11, "\n") - 1, u + 11); /* without the last '/' */

    /* refused without the key; bad requests get their 4xx */
    st_test_run_t r = st_test_run(cl.dir, "nokey", "ST_API_KEY=", "st-ctl", "--url http://127.0.0.1:1 status", 30);
    cr_assert_eq(r.status, 1, "an unreachable server");
    cr_assert(strstr(r.err, "cannot reach the coordinator"), "%s", r.err);
    st_test_run_free(&r);
    char a[512];
    snprintf(a, sizeof a, "--url %s drain 1", c.url);
    r = st_test_run(cl.dir, "nokey", "ST_API_KEY=", "st-ctl", a, 30);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.err, "wants the API key"), "%s", r.err);
    st_test_run_free(&r);
    int st;
    char *b = s_http(&c, "/admin/drain", "{\"node\":1}", true, &st);
    cr_assert_eq(st, 401, "admin without the key: %d %s", st, b);
    free(b);
    b = s_http(&c, "/admin/explode", "{}", false, &st);
    cr_assert_eq(st, 404, "%d %s", st, b);
    free(b);
    b = s_http(&c, "/admin/drain", "{\"node\":", false, &st);
    cr_assert_eq(st, 400, "%d %s", st, b);
    free(b);
    b = s_http(&c, "/admin/drain", "{\"node\":\"no-such-node\"}", false, &st);
    cr_assert_eq(st, 400, "%d %s", st, b);
    cr_assert(strstr(b, "no node is called 'no-such-node'"), "%s", b);
    free(b);
    r = s_ctl(&c, "remove0", "--api-key " KEY " remove 0");
    cr_assert_eq(r.status, 1, "removing a node that serves");
    cr_assert(strstr(r.err, "drain it first"), "%s", r.err);
    st_test_run_free(&r);

    cJSON *h = s_health(&c);
    const int total =
        (int)(s_num(s_node(h, 0), "experts") + s_num(s_node(h, 1), "experts") + s_num(s_node(h, 2), "experts"));
    const int held1 = (int)s_num(s_node(h, 1), "experts");
    cr_assert_gt(held1, 0);
    cJSON_Delete(h);

    /* drain node 1 while a long completion runs: it is mid-run once tokens come out */
    gen_t g = {.c = &c, .n = N_LONG};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, s_gen, &g), 0);
    for (double dl = st_now_ms() + 120000;;) {
        h = s_health(&c);
        bool going = s_num(h, "generated_tokens") > 0 && s_num(h, "active") > 0;
        cJSON_Delete(h);
        if (going) break;
        cr_assert_lt(st_now_ms(), dl, "the completion did not start within 120 s");
        poll(NULL, 0, 20); /* polling /health with a deadline */
    }
    r = s_ctl(&c, "drain", "--api-key " KEY " drain 1");
    cr_log_info("st-ctl drain 1:\n%s", r.out);
    cr_assert_eq(r.status, 0, "drain: %s%s", r.out, r.err);
    char moved[128];
    snprintf(moved, sizeof moved, "drained: its %d experts moved to 2 other node(s)", held1);
    cr_assert(strstr(r.out, moved), "%s", r.out);
    cr_assert(strstr(r.out, "between two steps of the 1 generation(s) in progress"),
              "the drain must happen during the run: %s", r.out);
    st_test_run_free(&r);
    pthread_join(th, NULL);
    cr_assert_not_null(g.answer, "curl failed for the completion the drain happened in");
    char *long_text = s_completion_text(g.answer, g.status);
    cr_assert_str_eq(long_text, want_long, "the text of the run the drain happened in");
    free(long_text);

    /* drained: no expert, no request, the same tokens */
    h = s_health(&c);
    const cJSON *n1 = s_node(h, 1);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(n1, "state")), "drained");
    cr_assert_eq(s_num(n1, "experts"), 0);
    cr_assert_eq(s_num(s_node(h, 0), "experts") + s_num(s_node(h, 2), "experts"), total);
    /* its slices of the output head moved too: the others hold every slice */
    cr_assert_eq(s_num(n1, "head_slices"), 0, "a drained node holds no head slice");
    cr_assert_eq(s_num(s_node(h, 0), "head_slices") + s_num(s_node(h, 2), "head_slices"), 2,
                 "the head is not cut over the two nodes left");
    const double req1 = s_num(n1, "requests");
    cJSON_Delete(h);
    int mst;
    char *metrics = s_http(&c, "/metrics", NULL, false, &mst), series[256];
    snprintf(series, sizeof series, "st_node_drained{node=\"%s\"} 1\n", cl.nodes[1].p.url);
    cr_assert(mst == 200 && strstr(metrics, series), "no %s in /metrics", series);
    free(metrics);
    char *t = s_complete(&c, N_SHORT);
    cr_assert_str_eq(t, want_short);
    free(t);
    h = s_health(&c);
    cr_assert_eq(s_num(s_node(h, 1), "requests"), req1, "a drained node gets no request");
    cJSON_Delete(h);

    /* the table: every node, its state and real memory (its RSS here: no cgroup of its own), its hit and
     * prefetch rates as /health has them just before and after (the last results of the completion may
     * still come in: until both agree) */
    for (double dl = st_now_ms() + 30000;;) {
        cJSON *before = s_health(&c);
        r = s_ctl(&c, "status", "--api-key " KEY);
        h = s_health(&c);
        bool same = true;
        for (int i = 0; i < 3; i++)
            same &= s_num(s_node(before, i), "cache_hits") == s_num(s_node(h, i), "cache_hits") &&
                    s_num(s_node(before, i), "cache_misses") == s_num(s_node(h, i), "cache_misses") &&
                    s_num(s_node(before, i), "cache_prefetched") == s_num(s_node(h, i), "cache_prefetched");
        cJSON_Delete(before);
        if (same) break;
        cr_assert_lt(st_now_ms(), dl, "the nodes' cache figures did not settle within 30 s");
        cJSON_Delete(h);
        st_test_run_free(&r);
    }
    cr_log_info("st-ctl:\n%s", r.out);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "3 node(s), 3 up"), "%s", r.out);
    cr_assert(strstr(r.out, "#   address"), "%s", r.out);
    for (int i = 0; i < 3; i++) {
        char *line = strstr(r.out, cl.nodes[i].p.url), url[128], id[64], state[16];
        cr_assert_not_null(line, "node %d missing:\n%s", i, r.out);
        cr_assert_eq(sscanf(line, "%127s %63s %15s", url, id, state), 3);
        cr_assert_str_eq(state, i == 1 ? "drained" : "up", "node %d: %.100s", i, line);
        char used[16], rss[16], pc[16], budget[16], temp[16], thr[16], hit[16], pre[16];
        int experts, head; /* the columns after the version's "(git REV)" */
        cr_assert_eq(sscanf(strchr(line, ')') + 1, "%15s %15s %15s %15s %15s %15s %d %d %15s %15s", used, rss, pc,
                            budget, temp, thr, &experts, &head, hit, pre),
                     10, "%.200s", line);
        cr_assert(used[0] != '-' && !strcmp(used, rss), "node %d: used = RSS without a cgroup: %.160s", i, line);
        cr_assert_str_eq(pc, "-", "no page cache figure without a cgroup of its own");
        cr_assert_str_eq(budget, "256.0M");
        const cJSON *nh = s_node(h, i);
        cr_assert_eq(experts, (int)s_num(nh, "experts"), "%.200s", line);
        char want_hit[16] = "-", want_pre[16] = "-"; /* "-": nothing asked of it yet */
        if (s_num(nh, "cache_hits") + s_num(nh, "cache_misses") + s_num(nh, "cache_prefetched") > 0) {
            snprintf(want_hit, sizeof want_hit, "%.0f%%", 100 * s_num(nh, "hit_rate"));
            snprintf(want_pre, sizeof want_pre, "%.0f%%", 100 * s_num(nh, "prefetch_rate"));
        }
        cr_assert_str_eq(hit, want_hit, "node %d's hit rate, want %s: %.200s", i, want_hit, line);
        cr_assert_str_eq(pre, want_pre, "node %d's prefetch rate: %.200s", i, line);
    }
    cJSON_Delete(h);
    st_test_run_free(&r);

    /* undrain: node 1 takes a share again and serves, the answers still st-run's; then drained again */
    r = s_ctl(&c, "undrain", "--api-key " KEY " undrain 1");
    cr_log_info("st-ctl undrain 1:\n%s", r.out);
    cr_assert_eq(r.status, 0, "undrain: %s%s", r.out, r.err);
    cr_assert(strstr(r.out, "is back in placement: it takes"), "%s", r.out);
    cr_assert(strstr(r.out, ", 0 pushed (0 shard bytes)"), "its store still holds its old share: %s", r.out);
    st_test_run_free(&r);
    h = s_health(&c);
    cr_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(s_node(h, 1), "state")), "up");
    cr_assert_gt(s_num(s_node(h, 1), "experts"), 0);
    cr_assert_eq(s_num(s_node(h, 0), "experts") + s_num(s_node(h, 1), "experts") + s_num(s_node(h, 2), "experts"),
                 total);
    cr_assert_eq(s_num(s_node(h, 1), "head_slices"), 1, "an undrained node takes a head slice again");
    cJSON_Delete(h);
    t = s_complete(&c, N_SHORT);
    cr_assert_str_eq(t, want_short);
    free(t);
    h = s_health(&c);
    cr_assert_gt(s_num(s_node(h, 1), "requests"), req1, "an undrained node serves again");
    cJSON_Delete(h);
    char again[256]; /* by its address this time, without tcp:// as st-node --listen takes it */
    snprintf(again, sizeof again, "--api-key " KEY " drain %.120s", cl.nodes[1].p.url + strlen("tcp://"));
    r = s_ctl(&c, "drain-again", again);
    cr_assert_eq(r.status, 0, "drain by address: %s%s", r.out, r.err);
    st_test_run_free(&r);

    /* a node that dies: no stale figures, the coordinator computes its experts; rebalance moves them */
    st_test_cluster_node_stop(&cl, 2, SIGKILL);
    double here = 0;
    for (double dl = st_now_ms() + 30000;;) {
        h = s_health(&c);
        const cJSON *n2 = s_node(h, 2);
        if (!cJSON_IsTrue(cJSON_GetObjectItem(n2, "up"))) {
            cr_assert_null(cJSON_GetObjectItem(n2, "mem_used"), "a down node's memory is stale");
            cr_assert_null(cJSON_GetObjectItem(n2, "hit_rate"));
            cr_assert_null(cJSON_GetObjectItem(n2, "rtt_ms"));
            here = s_num(n2, "computed_here");
            cr_assert_eq(here, s_num(n2, "experts"), "no replica: the coordinator computes all of them");
            cJSON_Delete(h);
            break;
        }
        cJSON_Delete(h);
        cr_assert_lt(st_now_ms(), dl, "node 2 not seen down within 30 s");
        poll(NULL, 0, 50); /* polling /health with a deadline */
    }
    r = s_ctl(&c, "status-down", "--api-key " KEY);
    char computes[128];
    snprintf(computes, sizeof computes, "the coordinator computes %.0f experts of nodes that are down", here);
    cr_assert(strstr(r.out, computes), "%s", r.out);
    st_test_run_free(&r);
    r = s_ctl(&c, "rebalance", "--api-key " KEY " rebalance");
    cr_log_info("st-ctl rebalance:\n%s", r.out);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    st_test_run_free(&r);
    h = s_health(&c);
    cr_assert_eq(s_num(s_node(h, 0), "experts"), total, "node 0 serves every expert");
    cr_assert_eq(s_num(s_node(h, 2), "computed_here"), 0);
    cJSON_Delete(h);
    t = s_complete(&c, N_SHORT);
    cr_assert_str_eq(t, want_short);
    free(t);

    /* remove the drained node: gone from the view and from the cluster file, the rest of it kept */
    char *before = st_file_read(cluster, 0, NULL);
    cr_assert_not_null(before);
    r = s_ctl(&c, "remove", "--api-key " KEY " remove 1");
    cr_log_info("st-ctl remove 1:\n%s", r.out);
    cr_assert_eq(r.status, 0, "%s%s", r.out, r.err);
    char said[1024];
    snprintf(said, sizeof said, "node 1 (%s) removed (it held no experts); taken out of the cluster file %s",
             cl.nodes[1].p.url, cluster);
    cr_assert(strstr(r.out, said), "want '%s' in: %s", said, r.out);
    st_test_run_free(&r);
    char *after = st_file_read(cluster, 0, NULL);
    cr_assert_not_null(after);
    char want_file[2048] = "";
    for (const char *line = before; *line;) { /* every line of before but node 1's */
        const size_t n = strcspn(line, "\n");
        const bool node1 = !strncmp(line, cl.nodes[1].p.url, strlen(cl.nodes[1].p.url));
        if (!node1)
            snprintf(want_file + strlen(want_file), sizeof want_file - strlen(want_file), "%.*s\n", (int)n, line);
        line += n + (line[n] == '\n');
    }
    cr_assert_str_eq(after, want_file, "the cluster file before:\n%s", before);
    cr_assert(strstr(before, cl.nodes[1].p.url) && strstr(after, cl.nodes[0].p.url) &&
              strstr(after, cl.nodes[2].p.url));
    cr_assert(strstr(after, "# the rack\n") && strstr(after, "  # last line, no newline\n"), "%s", after);
    free(before);
    free(after);
    h = s_health(&c);
    cr_assert_null(s_node(h, 1), "a removed node is not shown");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(h, "nodes")), 2);
    cJSON_Delete(h);

    cr_assert_eq(st_test_stop(pid, SIGTERM, 10000), 0, "the coordinator's exit (log %s)", log);
    close(out);
    /* the next start reads the cluster file: nodes 0 and 2, not the removed one */
    snprintf(cmd, sizeof cmd,
             "exec '%s/st-coordinator' -m '%s' %s -p '%s' -n 4 --temp 0 -t 1 --state-dir '%s' > '%s/coord2.out'",
             ST_BINARY_DIR, st_test_tiny_model(), flags, PROMPT, cl.dir, cl.dir);
    char log2[300];
    snprintf(log2, sizeof log2, "%s/coord2.log", cl.dir);
    pid = st_test_spawn(argv, NULL, log2, SIGTERM);
    cr_assert_eq(st_test_wait(pid, 120000), 0, "the restarted coordinator (log %s)", log2);
    cr_assert(st_test_file_has(log2, cl.nodes[0].p.url, 0), "node 0 is not in the restart's log %s", log2);
    cr_assert(!st_test_file_has(log2, cl.nodes[1].p.url, 0), "the removed node is back after a restart (log %s)", log2);
    free(want_long);
    free(want_short);
    st_test_cluster_destroy(&cl);
}

/* A stand-in server (python's http.server over a directory holding a file called health) answering
 * /health with json: its port; *pid and *out to stop it with (st_test_stop, then close(out)). */
static int s_stand_in(const char *dir, const char *json, pid_t *pid, int *out) {
    char path[300], log[300];
    snprintf(path, sizeof path, "%s/health", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(json, f);
    cr_assert_eq(fclose(f), 0);
    snprintf(log, sizeof log, "%s/server.err", dir);
    const char *argv[] = {"/usr/bin/env", "python3",   "-u",          "-m", "http.server", "0",
                          "--bind",       "127.0.0.1", "--directory", dir,  NULL};
    *out = -1;
    *pid = st_test_spawn(argv, out, log, SIGKILL);
    char buf[256] = "";
    size_t len = 0;
    const double dl = st_now_ms() + 30000;
    while (!strstr(buf, " (http")) { /* "Serving HTTP on 127.0.0.1 port N (http://...) ..." */
        struct pollfd p = {*out, POLLIN, 0};
        cr_assert_lt(st_now_ms(), dl, "http.server did not start (%s)", log);
        if (poll(&p, 1, 200) <= 0) continue;
        ssize_t n = read(*out, buf + len, sizeof buf - 1 - len);
        cr_assert_gt(n, 0, "http.server exited (%s)", log);
        buf[len += (size_t)n] = '\0';
    }
    int port = 0;
    cr_assert_eq(sscanf(strstr(buf, "port ") + 5, "%d", &port), 1, "%s", buf);
    return port;
}

/* A server whose /health has numbers out of an int's range (a stand-in): st-ctl prints them
 * clamped, and sums them without overflow. Before, the conversions were undefined: -2147483648
 * nodes up, "computes -2 experts". */
Test(ctl, numbers_out_of_range_are_clamped, .timeout = 60) {
    char dir[256];
    st_test_tmpdir(dir, sizeof dir, "ctl-odd");
    pid_t srv;
    int out;
    const int port = s_stand_in(dir,
                                "{\"status\":\"ok\",\"nodes_up\":1e300,\"active\":-1e300,\"nodes\":["
                                "{\"index\":1e300,\"url\":\"tcp://a:1\",\"up\":true,\"throttled\":-5,\"experts\":1e20,"
                                "\"computed_here\":2147483647},"
                                "{\"index\":1,\"url\":\"tcp://b:1\",\"up\":true,\"computed_here\":2147483647}]}",
                                &srv, &out);
    char args[128];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d status", port);
    st_test_run_t r = st_test_run(dir, "odd", "ST_API_KEY=", "st-ctl", args, 30);
    st_test_stop(srv, SIGKILL, 5000);
    close(out); /* only now: a server writing to a closed pipe dies of it */
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "2147483647 up, ") && strstr(r.out, "-2147483648 running"), "%s", r.out);
    cr_assert(strstr(r.out, "2147483647 tcp://a:1"), "the index: %s", r.out);
    cr_assert(strstr(r.out, "computes 4294967294 experts"), "the sum: %s", r.out);
    cr_assert(strstr(r.out, " 0x0 "), "negative throttled bits: %s", r.out);
    st_test_run_free(&r);
}

/* The prefetch column beside the hit rate, as the web view shows them (a stand-in /health, as
 * tests/browser/cluster.mjs makes it): node i up has hit rate 0.9999 and prefetch rate
 * (1 + i) / (12 + i), 8% for node 0 to 50% for node 10, each written out here by hand; a node
 * that is down shows neither, one that was asked for nothing yet shows "-" for both. */
Test(ctl, status_shows_each_nodes_prefetch_rate, .timeout = 60) {
    char dir[256];
    st_test_tmpdir(dir, sizeof dir, "ctl-prefetch");
    cJSON *h = cJSON_CreateObject(), *nodes = cJSON_AddArrayToObject(h, "nodes");
    cJSON_AddStringToObject(h, "status", "degraded");
    const int N = 13; /* 11 up and asked, node 11 down (stale rates in its JSON), node 12 up but never asked */
    for (int i = 0; i < N; i++) {
        cJSON *n = cJSON_CreateObject();
        char url[32];
        snprintf(url, sizeof url, "tcp://10.0.0.%d:7000", i + 1);
        cJSON_AddNumberToObject(n, "index", i);
        cJSON_AddStringToObject(n, "url", url);
        cJSON_AddBoolToObject(n, "up", i != 11);
        cJSON_AddNumberToObject(n, "experts", 3);
        if (i < 12) {
            cJSON_AddNumberToObject(n, "cache_hits", 10);
            cJSON_AddNumberToObject(n, "cache_misses", 1);
            cJSON_AddNumberToObject(n, "cache_prefetched", 1 + i);
            cJSON_AddNumberToObject(n, "hit_rate", 0.9999);
            cJSON_AddNumberToObject(n, "prefetch_rate", (1.0 + i) / (12.0 + i));
            cJSON_AddNumberToObject(n, "rtt_ms", 1.25);
        } else {
            cJSON_AddNumberToObject(n, "cache_hits", 0);
            cJSON_AddNumberToObject(n, "cache_misses", 0);
            cJSON_AddNumberToObject(n, "cache_prefetched", 0);
            cJSON_AddNumberToObject(n, "hit_rate", 0);
            cJSON_AddNumberToObject(n, "prefetch_rate", 0);
        }
        cJSON_AddItemToArray(nodes, n);
    }
    char *json = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    pid_t srv;
    int out;
    const int port = s_stand_in(dir, json, &srv, &out);
    free(json);
    char args[128];
    snprintf(args, sizeof args, "--url http://127.0.0.1:%d status", port);
    st_test_run_t r = st_test_run(dir, "prefetch", "ST_API_KEY=", "st-ctl", args, 30);
    st_test_stop(srv, SIGKILL, 5000);
    close(out);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_log_info("st-ctl:\n%s", r.out);
    const char *header = strstr(r.out, "#   address");
    cr_assert(header && strstr(header, " hit prefetch   rtt ms\n"), "no prefetch column after hit: %s", r.out);
    /* round((1 + i) / (12 + i) * 100) by hand: 1/12, 2/13, ..., 11/22 */
    static const char *want[] = {"8%", "15%", "21%", "27%", "31%", "35%", "39%", "42%", "45%", "48%", "50%"};
    for (int i = 0; i < N; i++) {
        char url[32], line_want[96];
        snprintf(url, sizeof url, "tcp://10.0.0.%d:7000", i + 1);
        const char *line = strstr(r.out, url);
        cr_assert_not_null(line, "node %d missing: %s", i, r.out);
        const char *experts = strstr(line, " 3 ");
        cr_assert_not_null(experts, "%.200s", line);
        char head[16], hit[16], pre[16], rtt[16];
        cr_assert_eq(sscanf(experts, " 3 %15s %15s %15s %15s", head, hit, pre, rtt), 4, "%.200s", line);
        snprintf(line_want, sizeof line_want, "%s %s %s", i < 11 ? "100%" : "-", i < 11 ? want[i] : "-",
                 i < 11 ? "1.25" : "-");
        char got[64];
        snprintf(got, sizeof got, "%s %s %s", hit, pre, rtt);
        cr_assert_str_eq(got, line_want, "node %d: hit, prefetch, rtt in %.200s", i, line);
    }
    st_test_run_free(&r);
}
