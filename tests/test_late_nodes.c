/* Nodes that come late, with real processes on 127.0.0.1 and CURVE keys as
 * deployed: st-coordinator --http starts before its nodes (a power cut, the
 * coordinator's board booting first), so at first every expert is computed
 * by the coordinator; the nodes started a while later are probed, join and
 * serve within seconds, and the answers are st-run's. A node's "reboot"
 * (kill -9, started again on its store) and a node added to the cluster file
 * that never starts (no stall: it is not placed until it answers) follow.
 * Also --min-nodes (requests wait, /health says why; one-shot with a time
 * limit) and SIGHUP with --nodes (harmless).
 *
 * The nodes' addresses must be known before they run: each node is started
 * once on a free port to make its key pair and learn its URL, then stopped;
 * the cluster file lists those URLs and keys. Every wait has a deadline. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "st_log.h"
#include "testutil.h"

#define BIN ST_BINARY_DIR
#define N_NODES 3
#define PROMPT "Once upon a time"
#define N_PREDICT 16
#define TIMEOUT_MS "8000" /* --timeout-ms: a stalled generation would cost this (the HELLO wait of old) */

typedef struct {
    st_test_node_t p;
    char url[128], pub[41], store[300];
} node_t;

static char g_dir[64];
static node_t g_nodes[N_NODES + 1];

static void setup(void) {
    st_log_set_level(ST_LOG_ERROR);
    st_test_tmpdir(g_dir, sizeof g_dir, "late");
}

static void teardown(void) { st_test_cleanup(); /* and g_dir */ }

TestSuite(late_nodes, .init = setup, .fini = teardown, .timeout = 240);

/* st-run's text (--json) for the prompt: the reference. */
static char *s_reference(void) {
    char out[300];
    snprintf(out, sizeof out, "%s/ref.json", g_dir);
    cr_assert_eq(st_test_system("timeout 60 '%s/st-run' -m '%s' -p '%s' -n %d --temp 0 --json -t 1 > '%s' 2>/dev/null",
                                BIN, st_test_tiny_model(), PROMPT, N_PREDICT, out),
                 0);
    cJSON *o = st_test_read_json(out);
    cr_assert_not_null(o);
    char *t = strdup(cJSON_GetObjectItem(o, "text")->valuestring);
    cJSON_Delete(o);
    return t;
}

/* Starts node i on listen (its URL, or a free port), CURVE, allowing DIR/coord.pub. */
static void s_node_start(int i, const char *listen) {
    node_t *nd = &g_nodes[i];
    char log[300], allow[300];
    snprintf(log, sizeof log, "%s/node-%d.log", g_dir, i);
    snprintf(allow, sizeof allow, "%s/coord.pub", g_dir);
    snprintf(nd->store, sizeof nd->store, "%s/store-%d", g_dir, i);
    const char *argv[] = {BIN "/st-node", "--listen", listen, "--mem",   "256M", "--store",
                          nd->store,      "-t",       "1",    "--allow", allow,  NULL};
    cr_assert_eq(st_test_node_start(&nd->p, argv, log, 10000), 0, "node %d exited (log %s)", i, log);
}

/* The coordinator's key, n nodes' keys and URLs (each started once, then
 * stopped), and the cluster file "URL KEY" listing them. */
static void s_cluster_file(int n) {
    cr_assert_eq(st_test_system("'%s/st-keygen' '%s/coord' > /dev/null 2>&1", BIN, g_dir), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/cluster", g_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < n; i++) {
        s_node_start(i, "tcp://127.0.0.1:*");
        snprintf(g_nodes[i].url, sizeof g_nodes[i].url, "%s", g_nodes[i].p.url);
        snprintf(g_nodes[i].pub, sizeof g_nodes[i].pub, "%s", g_nodes[i].p.pub);
        cr_assert_eq(strlen(g_nodes[i].pub), 40, "node %d printed no public key", i);
        fprintf(f, "%s %s\n", g_nodes[i].url, g_nodes[i].pub);
    }
    fclose(f);
    for (int i = 0; i < n; i++) cr_assert_eq(st_test_node_stop(&g_nodes[i].p, SIGTERM), 0);
}

/* ---- the coordinator and its HTTP API ---------------------------------------- */

typedef struct {
    pid_t pid;
    int port;
    char log[300];
} coord_t;

/* Starts st-coordinator --http 127.0.0.1:0 with the given cluster flags and
 * waits up to 30 s for its "serving on" line. */
static void s_coord_start(coord_t *c, const char *const *flags) {
    const char *argv[40] = {BIN "/st-coordinator", "-m",       st_test_tiny_model(),
                            "--state-dir",         g_dir,      "--quiet-push",
                            "--timeout-ms",        TIMEOUT_MS, "--http",
                            "127.0.0.1:0",         "-t",       "1"};
    int n = 12;
    for (int i = 0; flags[i]; i++) argv[n++] = flags[i];
    argv[n] = NULL;
    snprintf(c->log, sizeof c->log, "%s/coord.log", g_dir);
    int out = -1;
    c->pid = st_test_spawn(argv, &out, c->log, SIGTERM);
    c->port = st_test_serving_port(out, 30000, c->log);
}

/* One HTTP/1.0 request (the server closes after answering) within 60 s: the body of a 200
 * answer (malloc'd), or NULL and why in err. It asserts nothing, so that a thread can call it
 * (an assertion fails a test only from the test's own thread; from another it crashes it). */
static char *s_request(int port, const char *method, const char *path, const char *body, char *err, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        snprintf(err, cap, "%s %s: connect: %s", method, path, strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, body ? strlen(body) : 0, body ? body : "");
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) { /* a server gone: a failure, not SIGPIPE */
        snprintf(err, cap, "%s %s: sending the request: %s", method, path, strerror(errno));
        close(fd);
        return NULL;
    }
    size_t len = 0, buf_cap = 1 << 16;
    char *buf = malloc(buf_cap);
    const double deadline = st_now_ms() + 60000;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        int left = (int)(deadline - st_now_ms());
        if (left <= 0) {
            snprintf(err, cap, "no answer to %s %s within 60 s", method, path);
            close(fd);
            free(buf);
            return NULL;
        }
        if (poll(&p, 1, left) <= 0) continue;
        if (len + 4096 > buf_cap) buf = realloc(buf, buf_cap *= 2);
        ssize_t r = read(fd, buf + len, buf_cap - len - 1);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    int status = 0;
    char *b = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || status != 200 || !b) {
        snprintf(err, cap, "%s %s: %.300s", method, path, buf);
        free(buf);
        return NULL;
    }
    char *out = strdup(b + 4);
    free(buf);
    return out;
}

/* s_request from the test's own thread: the body of a 200 answer, or the test fails. */
static char *s_http(int port, const char *method, const char *path, const char *body) {
    char err[400];
    char *out = s_request(port, method, path, body, err, sizeof err);
    cr_assert_not_null(out, "%s", err);
    return out;
}

/* The text of a completion's answer r (freed), asserting its form. */
static char *s_completion_text(char *r) {
    cJSON *o = cJSON_Parse(r);
    cr_assert_not_null(o, "not JSON: %s", r);
    cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "text");
    cr_assert(cJSON_IsString(t), "%s", r);
    char *text = strdup(t->valuestring);
    cJSON_Delete(o);
    free(r);
    return text;
}

/* The request of a greedy completion of PROMPT. */
static const char *s_completion_body(char *body, size_t cap) {
    snprintf(body, cap, "{\"prompt\":\"%s\",\"temperature\":0,\"max_tokens\":%d}", PROMPT, N_PREDICT);
    return body;
}

/* The text of a greedy completion of PROMPT. */
static char *s_complete(int port) {
    char body[256];
    return s_completion_text(s_http(port, "POST", "/v1/completions", s_completion_body(body, sizeof body)));
}

static cJSON *s_health(int port) {
    char *r = s_http(port, "GET", "/health", NULL);
    cJSON *o = cJSON_Parse(r);
    cr_assert_not_null(o, "not JSON: %s", r);
    free(r);
    return o;
}

static const char *s_status(const cJSON *h) {
    const cJSON *s = cJSON_GetObjectItem(h, "status");
    cr_assert(cJSON_IsString(s));
    return s->valuestring;
}

/* Polls /health (the view refreshes once a second) until status is want
 * and every node but `except` is up with experts placed on it, within ms.
 * Returns the milliseconds it took. */
static double s_wait_health(int port, const char *want, int except, int ms) {
    const double t0 = st_now_ms();
    char last[600] = "";
    for (;;) {
        cJSON *h = s_health(port);
        bool ok = !strcmp(s_status(h), want);
        const cJSON *nd;
        int i = 0;
        cJSON_ArrayForEach(nd, cJSON_GetObjectItem(h, "nodes")) {
            const cJSON *experts = cJSON_GetObjectItem(nd, "experts");
            if (i++ != except)
                ok = ok && cJSON_IsTrue(cJSON_GetObjectItem(nd, "up")) && cJSON_IsNumber(experts) &&
                     experts->valueint > 0;
        }
        char *j = cJSON_PrintUnformatted(h);
        snprintf(last, sizeof last, "%s", j);
        free(j);
        cJSON_Delete(h);
        if (ok) return st_now_ms() - t0;
        cr_assert_lt(st_now_ms() - t0, ms, "/health not '%s' with the nodes up within %d ms: %s", want, ms, last);
        poll(NULL, 0, 50); /* polling /health with a deadline */
    }
}

/* Whether every node's expert cache saw lookups (it computed experts), as
 * /health shows within ms. */
static bool s_all_nodes_computed(int port, int n, int ms) {
    for (const double dl = st_now_ms() + ms;;) {
        cJSON *h = s_health(port);
        int busy = 0;
        const cJSON *nd;
        cJSON_ArrayForEach(nd, cJSON_GetObjectItem(h, "nodes")) {
            const cJSON *hits = cJSON_GetObjectItem(nd, "cache_hits"), *miss = cJSON_GetObjectItem(nd, "cache_misses"),
                        *pf = cJSON_GetObjectItem(nd, "cache_prefetched");
            busy += cJSON_IsNumber(hits) && cJSON_IsNumber(miss) && cJSON_IsNumber(pf) &&
                    hits->valuedouble + miss->valuedouble + pf->valuedouble > 0;
        }
        cJSON_Delete(h);
        if (busy >= n) return true;
        if (st_now_ms() > dl) return false;
        poll(NULL, 0, 50); /* polling /health with a deadline */
    }
}

/* ---- tests ------------------------------------------------------------------ */

/* The coordinator serves first (every expert computed here), the three nodes
 * start later: within seconds all are up with a share and compute, and the
 * answer is st-run's. Node 1 killed and started again on its store rejoins
 * with no shard sent. A fourth node listed in the cluster file and never
 * started (SIGHUP) costs a generation nothing: it is not placed. */
Test(late_nodes, nodes_started_after_the_coordinator_join_and_serve) {
    char *want = s_reference();
    s_cluster_file(N_NODES);
    char cluster[300], key[300];
    snprintf(cluster, sizeof cluster, "%s/cluster", g_dir);
    snprintf(key, sizeof key, "%s/coord.key", g_dir);
    coord_t c;
    const char *flags[] = {"--cluster", cluster, "--key", key, NULL};
    s_coord_start(&c, flags);

    cJSON *h = s_health(c.port); /* no node yet: the coordinator computes every expert */
    cr_assert_str_eq(s_status(h), "fallback");
    cr_assert_eq(cJSON_GetObjectItem(h, "nodes_up")->valueint, 0);
    cJSON_Delete(h);
    char *got = s_complete(c.port);
    cr_assert_str_eq(got, want, "the answer without nodes differs from st-run's");
    free(got);

    for (int i = 0; i < N_NODES; i++) s_node_start(i, g_nodes[i].url);
    double ms = s_wait_health(c.port, "ok", -1, 15000);
    cr_log_info("three late nodes up with their shares %.0f ms after the last one started", ms);
    got = s_complete(c.port);
    cr_assert_str_eq(got, want, "the answer with the late nodes differs from st-run's");
    free(got);
    cr_assert(s_all_nodes_computed(c.port, N_NODES, 5000), "not every late node computed experts");
    cr_assert(st_test_file_has(c.log, "cluster: join: 3 of 3 nodes up", 0), "no join of the three (log %s)", c.log);

    /* node 1 "reboots": down, then back on its store with nothing pushed */
    cr_assert_eq(st_test_node_stop(&g_nodes[1].p, SIGKILL), 128 + SIGKILL);
    s_wait_health(c.port, "degraded", 1, 10000);
    s_node_start(1, g_nodes[1].url);
    ms = s_wait_health(c.port, "ok", -1, 15000);
    cr_log_info("node 1 back %.0f ms after its restart", ms);
    cr_assert(st_test_file_has(c.log, "rejoined: store verified against its", 0), "no rejoin (log %s)", c.log);
    cr_assert(st_test_file_has(c.log, "experts, 0 shard bytes sent", 0), "shards sent to an intact store");
    got = s_complete(c.port);
    cr_assert_str_eq(got, want, "the answer after the reboot differs from st-run's");
    free(got);

    /* a node listed, never started: a generation costs what it cost before */
    double t0 = st_now_ms();
    free(s_complete(c.port));
    const double before = st_now_ms() - t0;
    cr_assert_eq(st_test_system("'%s/st-keygen' '%s/ghost' > /dev/null 2>&1", BIN, g_dir), 0);
    char path[300];
    snprintf(path, sizeof path, "%s/ghost.pub", g_dir);
    char *ghost = st_file_read(path, 0, NULL);
    cr_assert_not_null(ghost);
    FILE *f = fopen(cluster, "a");
    cr_assert_not_null(f);
    fprintf(f, "tcp://127.0.0.1:9 %.40s\n", ghost); /* the discard port: nothing listens there */
    fclose(f);
    free(ghost);
    kill(c.pid, SIGHUP);
    t0 = st_now_ms();
    got = s_complete(c.port);
    const double after = st_now_ms() - t0;
    cr_log_info("a generation: %.0f ms before, %.0f ms with an unreachable node added (deadline " TIMEOUT_MS " ms)",
                before, after);
    cr_assert_str_eq(got, want);
    free(got);
    cr_assert(st_test_file_has(c.log, "SIGHUP: 1 new node(s)", 5000), "the SIGHUP was not taken (log %s)", c.log);
    t0 = st_now_ms();
    free(s_complete(c.port));
    const double later = st_now_ms() - t0;
    cr_assert_lt(after, before + 4000, "the unreachable node stalled a generation: %.0f ms, %.0f before", after,
                 before);
    cr_assert_lt(later, before + 4000, "the unreachable node stalled a generation: %.0f ms, %.0f before", later,
                 before);
    s_wait_health(c.port, "degraded", N_NODES, 5000); /* listed, down, and the others up with their shares */
    h = s_health(c.port);
    cr_assert_eq(cJSON_GetObjectItem(h, "nodes_up")->valueint, N_NODES);
    cJSON_Delete(h);
    cr_assert_eq(st_test_stop(c.pid, SIGTERM, 10000), 0);
    free(want);
}

typedef struct {
    int port;
    char *answer, err[400]; /* the thread asserts nothing: checked after the join */
    atomic_bool done;
} bg_req_t;

static void *s_bg_complete(void *arg) {
    bg_req_t *b = arg;
    char body[256];
    b->answer =
        s_request(b->port, "POST", "/v1/completions", s_completion_body(body, sizeof body), b->err, sizeof b->err);
    atomic_store(&b->done, true);
    return NULL;
}

/* --min-nodes 2: the server answers /health at once with status "waiting"
 * and why; a request waits in the queue while one node is up; the experts
 * are placed once, when both nodes have answered, and the request is
 * answered with st-run's text. */
Test(late_nodes, min_nodes_makes_requests_wait_and_health_says_why) {
    char *want = s_reference();
    s_cluster_file(2);
    char cluster[300], key[300];
    snprintf(cluster, sizeof cluster, "%s/cluster", g_dir);
    snprintf(key, sizeof key, "%s/coord.key", g_dir);
    coord_t c;
    const char *flags[] = {"--cluster", cluster, "--key", key, "--min-nodes", "2", NULL};
    s_coord_start(&c, flags);
    cJSON *h = s_health(c.port);
    cr_assert_str_eq(s_status(h), "waiting");
    const cJSON *why = cJSON_GetObjectItem(h, "waiting_for");
    cr_assert(cJSON_IsString(why) && strstr(why->valuestring, "0 of the 2 nodes"), "%s",
              cJSON_IsString(why) ? why->valuestring : "no waiting_for");
    cJSON_Delete(h);

    bg_req_t b = {.port = c.port};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, s_bg_complete, &b), 0);
    s_node_start(0, g_nodes[0].url);
    for (const double dl = st_now_ms() + 10000;;) { /* node 0 answered; still waiting, the request queued */
        h = s_health(c.port);
        why = cJSON_GetObjectItem(h, "waiting_for");
        bool seen = cJSON_IsString(why) && strstr(why->valuestring, "1 answered") &&
                    cJSON_GetObjectItem(h, "queued")->valueint == 1;
        cr_assert_str_eq(s_status(h), "waiting");
        cJSON_Delete(h);
        if (seen) break;
        cr_assert_lt(st_now_ms(), dl, "node 0's answer or the queued request not shown in /health");
        poll(NULL, 0, 50); /* polling /health with a deadline */
    }
    cr_assert(!atomic_load(&b.done), "a request was served before --min-nodes were up");
    s_node_start(1, g_nodes[1].url);
    s_wait_health(c.port, "ok", -1, 15000);
    pthread_join(th, NULL);
    cr_assert_not_null(b.answer, "the request that waited: %s", b.err);
    char *text = s_completion_text(b.answer);
    cr_assert_str_eq(text, want, "the answer after the wait differs from st-run's");
    free(text);
    char *log = st_file_read(c.log, 0, NULL);
    cr_assert_not_null(log);
    const char *j = strstr(log, "cluster: join: 2 of 2 nodes up");
    cr_assert_not_null(j, "the two nodes were not placed together:\n%s", log);
    cr_assert_null(strstr(j + 1, "cluster: join:"), "placed more than once:\n%s", log);
    free(log);
    cr_assert_eq(st_test_stop(c.pid, SIGTERM, 10000), 0);
    free(want);
}

/* One-shot --min-nodes with a time limit: with one of two nodes up it gives
 * up waiting after --min-nodes-timeout and generates st-run's tokens with the
 * node that is up; more than the cluster lists is refused before loading. */
Test(late_nodes, min_nodes_timeout_goes_on_with_the_nodes_up) {
    s_cluster_file(2);
    s_node_start(0, g_nodes[0].url);
    char ref[300], out[300], err[300];
    snprintf(ref, sizeof ref, "%s/ref.out", g_dir);
    snprintf(out, sizeof out, "%s/coord.out", g_dir);
    snprintf(err, sizeof err, "%s/coord.err", g_dir);
    cr_assert_eq(st_test_system("timeout 60 '%s/st-run' -m '%s' -p '%s' -n %d --temp 0 --json -t 1 > '%s' 2>/dev/null",
                                BIN, st_test_tiny_model(), PROMPT, N_PREDICT, ref),
                 0);
    const double t0 = st_now_ms();
    int st = st_test_system("timeout 120 '%s/st-coordinator' -m '%s' --cluster '%s/cluster' --key '%s/coord.key' "
                            "--state-dir '%s' --quiet-push --timeout-ms 1000 --min-nodes 2 --min-nodes-timeout 2 "
                            "-p '%s' -n %d --temp 0 --json -t 1 > '%s' 2> '%s'",
                            BIN, st_test_tiny_model(), g_dir, g_dir, g_dir, PROMPT, N_PREDICT, out, err);
    const double ms = st_now_ms() - t0;
    char *e = st_file_read(err, 0, NULL), *o = st_file_read(out, 0, NULL), *r = st_file_read(ref, 0, NULL);
    cr_assert_eq(st, 0, "%s", e);
    cr_assert_str_eq(o, r, "the tokens differ from st-run's:\n%s", e);
    cr_assert_not_null(strstr(e, "--min-nodes 2: only 1 node(s) up after 2 s"), "%s", e);
    cr_assert_not_null(strstr(e, "cluster: join: 1 of 2 nodes up"), "the node up was not placed:\n%s", e);
    cr_assert_geq(ms, 2000, "did not wait for --min-nodes-timeout");
    free(e), free(o);

    st = st_test_system("'%s/st-coordinator' -m '%s' --cluster '%s/cluster' --key '%s/coord.key' "
                        "--min-nodes 3 -p hi 2> '%s'",
                        BIN, st_test_tiny_model(), g_dir, g_dir, err);
    e = st_file_read(err, 0, NULL);
    cr_assert_eq(st, 2, "%s", e);
    cr_assert_not_null(strstr(e, "--min-nodes 3, but the cluster file lists 2 node(s)"), "%s", e);
    free(e), free(r);
}

/* SIGHUP with --nodes (no cluster file to re-read) is logged and changes
 * nothing: the coordinator keeps serving st-run's text. */
Test(late_nodes, sighup_with_nodes_is_harmless) {
    char *want = s_reference();
    char log[300], store[300];
    snprintf(log, sizeof log, "%s/node.log", g_dir);
    snprintf(store, sizeof store, "%s/store", g_dir);
    const char *argv[] = {BIN "/st-node", "--listen", "tcp://127.0.0.1:*", "--mem", "256M", "--store", store,
                          "-t",           "1",        "--insecure",        NULL};
    cr_assert_eq(st_test_node_start(&g_nodes[0].p, argv, log, 10000), 0);
    coord_t c;
    const char *flags[] = {"--nodes", g_nodes[0].p.url, "--insecure", NULL};
    s_coord_start(&c, flags);
    s_wait_health(c.port, "ok", -1, 10000);
    for (int k = 0; k < 2; k++) {
        kill(c.pid, SIGHUP);
        char *got = s_complete(c.port);
        cr_assert_str_eq(got, want);
        free(got);
    }
    cr_assert(st_test_file_has(c.log, "SIGHUP: the nodes come from --nodes", 5000), "SIGHUP not logged (log %s)",
              c.log);
    cr_assert_eq(st_test_wait(c.pid, 0), -1, "the coordinator exited on SIGHUP");
    s_wait_health(c.port, "ok", -1, 5000);
    cr_assert_eq(st_test_stop(c.pid, SIGTERM, 10000), 0);
    free(want);
}
