/* st-ctl: sees and steers a running cluster through its coordinator's HTTP
 * server (st-coordinator --http), as st-chat talks to it: the same --url and
 * --api-key, no keys of the cluster itself.
 *
 *   st-ctl [status]     every node from /health: state, version, the memory
 *                       it really uses against its budget, page cache, CPU
 *                       temperature and throttling (absent: "-", never 0),
 *                       experts held, hit and prefetch rates, round trip
 *   st-ctl drain NODE   its experts move to the others first, then it leaves
 *                       the placement (POST /admin/drain)
 *   st-ctl undrain NODE a drained node takes a share again
 *   st-ctl remove NODE  a drained or down node leaves the cluster, and the
 *                       coordinator's cluster file (it stays out at the
 *                       next start)
 *   st-ctl rebalance    places the experts again over the nodes up
 *
 * The coordinator runs an action between two steps of the generations in
 * progress, so their tokens do not change. A separate program rather than
 * an st-coordinator subcommand: it needs only libcurl and cJSON, runs on any
 * machine that reaches the HTTP port, and is built beside st-chat.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "version.h"

typedef struct {
    const char *url, *api_key;
    bool json;
} ctl_t;

static void s_usage(FILE *f) {
    fprintf(f, "usage: st-ctl [--url URL] [--api-key KEY] [--json] [COMMAND [NODE]]\n"
               "\n"
               "Sees and steers a SmallThinker cluster through its coordinator (st-coordinator --http).\n"
               "\n"
               "commands:\n"
               "  status             every node: state, version, memory used / budget, page cache,\n"
               "                     CPU temperature, throttling, experts, head slices, hit and prefetch\n"
               "                     rates, round trip\n"
               "                     (default)\n"
               "  drain NODE         move the node's experts and head slices to the others, then take it out\n"
               "                     of placement\n"
               "  undrain NODE       put a drained node back in placement: it takes a share again\n"
               "  remove NODE        take a drained (or down) node out of the cluster and out of the\n"
               "                     coordinator's cluster file, so it stays out at the next start\n"
               "  rebalance          place the experts again over the nodes up (a down node's share moves)\n"
               "NODE is a node's index (#), address or id as status shows them. Actions run between two\n"
               "steps of the generations in progress: their tokens do not change.\n"
               "\n"
               "options:\n"
               "      --url URL      the coordinator's HTTP server (default http://127.0.0.1:8080)\n"
               "      --api-key KEY  its API key (default: $ST_API_KEY); a server off loopback needs one\n"
               "      --json         print the server's JSON answer instead of a table\n"
               "  -h, --help         this help\n"
               "      --version      print the version\n"
               "exit status: 0 done, 1 refused or unreachable, 2 bad usage\n");
}

/* GET (body NULL) or POST path; the answer in *out (its data malloc'd). The
 * HTTP status, or -1 after saying why the server could not be reached or its
 * answer was refused. */
static long s_request(const ctl_t *c, const char *path, const char *body, st_client_body_t *out) {
    const st_client_t cl = {.prog = "st-ctl",
                            .hint =
                                "is st-coordinator running with --http on that address (--url), and the network up?",
                            .url = c->url,
                            .api_key = c->api_key};
    return st_client_request(&cl, path, body, st_client_body_cb, out);
}

/* ---- status ------------------------------------------------------------------ */

static const cJSON *s_get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }
static bool s_has(const cJSON *o, const char *k) { return cJSON_IsNumber(s_get(o, k)); }
static double s_num(const cJSON *o, const char *k) { return s_has(o, k) ? s_get(o, k)->valuedouble : 0; }
/* a count or an index, within [lo, hi]: a double outside an int's range does not convert (undefined) */
static long long s_whole(const cJSON *o, const char *k, long long lo, long long hi) {
    const double v = s_num(o, k);
    return v < (double)lo ? lo : v > (double)hi ? hi : (long long)v;
}
static int s_int(const cJSON *o, const char *k) { return (int)s_whole(o, k, INT_MIN, INT_MAX); }
static const char *s_str(const cJSON *o, const char *k, const char *dflt) {
    const char *s = cJSON_GetStringValue(s_get(o, k));
    return s && *s ? s : dflt;
}

/* bytes as "123.4M" / "1.9G" into buf, or "-" when absent */
static const char *s_size(const cJSON *o, const char *k, char *buf, size_t cap) {
    if (!s_has(o, k)) return "-";
    double b = s_num(o, k);
    if (b >= 1000.0 * (1 << 20))
        snprintf(buf, cap, "%.2fG", b / (1 << 30));
    else
        snprintf(buf, cap, "%.1fM", b / (1 << 20));
    return buf;
}

static int s_status(const ctl_t *c, const char *body) {
    cJSON *h = cJSON_Parse(body);
    const cJSON *nodes = s_get(h, "nodes");
    if (!cJSON_IsObject(h) || !cJSON_IsArray(nodes)) {
        fprintf(stderr, "st-ctl: %s/health is not the coordinator's JSON\n", c->url);
        cJSON_Delete(h);
        return 1;
    }
    const int n = cJSON_GetArraySize(nodes);
    printf("%s: %s, %s, st-coordinator %s, %d node(s), %d up, %.1f tok/s, %d running, %d queued\n", c->url,
           s_str(h, "status", "?"), s_str(h, "model", "?"), s_str(h, "version", "?"), n, s_int(h, "nodes_up"),
           s_num(h, "tokens_per_s"), s_int(h, "active"), s_int(h, "queued"));
    const char *waiting = s_str(h, "waiting_for", NULL);
    if (waiting) printf("waiting for %s\n", waiting);
    if (n == 0) {
        printf("a single process (st-run --http): no nodes to show\n");
        cJSON_Delete(h);
        return 0;
    }
    printf("%-3s %-22s %-16s %-8s %-20s %8s %8s %8s %8s %6s %9s %7s %5s %6s %8s %8s\n", "#", "address", "id", "state",
           "version", "used", "rss", "p.cache", "budget", "temp", "throttled", "experts", "head", "hit", "prefetch",
           "rtt ms");
    const cJSON *x;
    long long computed_here = 0;
    cJSON_ArrayForEach(x, nodes) {
        char used[32], rss[32], budget[32], pc[32], temp[16] = "-", thr[16] = "-", hit[16] = "-", pre[16] = "-",
                                                    rtt[16] = "-", ver[24];
        const bool up = cJSON_IsTrue(s_get(x, "up"));
        if (s_has(x, "temp_c")) snprintf(temp, sizeof temp, "%.1fC", s_num(x, "temp_c"));
        if (s_has(x, "throttled")) snprintf(thr, sizeof thr, "0x%x", (unsigned)s_whole(x, "throttled", 0, UINT32_MAX));
        /* of the experts asked for: in RAM already (hit), or read ahead on the coordinator's hint (prefetch) */
        const bool asked = s_num(x, "cache_hits") + s_num(x, "cache_misses") + s_num(x, "cache_prefetched") > 0;
        if (up && asked && s_has(x, "hit_rate")) snprintf(hit, sizeof hit, "%.0f%%", 100 * s_num(x, "hit_rate"));
        if (up && asked && s_has(x, "prefetch_rate"))
            snprintf(pre, sizeof pre, "%.0f%%", 100 * s_num(x, "prefetch_rate"));
        if (up && s_has(x, "rtt_ms") && s_num(x, "rtt_ms") > 0) snprintf(rtt, sizeof rtt, "%.2f", s_num(x, "rtt_ms"));
        snprintf(ver, sizeof ver, "%s", s_str(x, "version", "?")); /* "0.4.0 (git abc1234)" */
        printf("%-3d %-22s %-16.16s %-8s %-20s %8s %8s %8s %8s %6s %9s %7d %5d %6s %8s %8s\n", s_int(x, "index"),
               s_str(x, "url", "?"), s_str(x, "id", "-"), s_str(x, "state", up ? "up" : "down"), ver,
               s_size(x, "mem_used", used, sizeof used), s_size(x, "rss", rss, sizeof rss),
               s_size(x, "page_cache", pc, sizeof pc), s_size(x, "mem_budget", budget, sizeof budget), temp, thr,
               s_int(x, "experts"), s_int(x, "head_slices"), hit, pre, rtt);
        computed_here += s_int(x, "computed_here");
    }
    printf("used: the node's memory cgroup (RSS + page cache) when it has one of its own, else its RSS;"
           " '-': not reported; head: slices of the output head it holds%s\n",
           n > s_int(h, "nodes_up") ? " (a node that is down shows none of its stale figures)" : "");
    if (computed_here) printf("the coordinator computes %lld experts of nodes that are down\n", computed_here);
    cJSON_Delete(h);
    return 0;
}

/* ---- actions ------------------------------------------------------------------ */

static int s_action(const ctl_t *c, const char *action, const char *node) {
    cJSON *req = cJSON_CreateObject();
    if (node) cJSON_AddStringToObject(req, "node", node);
    char *body = cJSON_PrintUnformatted(req), path[64];
    cJSON_Delete(req);
    snprintf(path, sizeof path, "/admin/%s", action);
    st_client_body_t ans = {0};
    long st = s_request(c, path, body ? body : "{}", &ans);
    char *out = ans.data;
    free(body);
    int rc = st == 200 ? 0 : 1;
    cJSON *o = out ? cJSON_Parse(out) : NULL;
    const char *msg = s_str(o, "message", NULL);
    if (!msg) msg = s_str(s_get(o, "error"), "message", NULL);
    if (st < 0) {
        /* said already */
    } else if (c->json && out) {
        printf("%s\n", out);
    } else if (st == 200) {
        printf("%s\n", msg ? msg : "done");
        int running = s_int(o, "running");
        if (running)
            printf("done between two steps of the %d generation(s) in progress: their tokens do not change\n", running);
    } else if (st == 401) {
        fprintf(stderr, "st-ctl: %s wants the API key: pass --api-key KEY (or set ST_API_KEY)\n", c->url);
    } else if (st == 404 && !msg) {
        fprintf(stderr, "st-ctl: %s has no /admin routes: is it an st-coordinator of this version?\n", c->url);
    } else {
        fprintf(stderr, "st-ctl: %s refused: %s\n", action, msg ? msg : "(no reason given)");
    }
    cJSON_Delete(o);
    free(out);
    return rc;
}

int main(int argc, char **argv) {
    ctl_t c = {.url = "http://127.0.0.1:8080", .api_key = getenv("ST_API_KEY")};
    static const struct option opts[] = {{"url", required_argument, 0, 'u'}, {"api-key", required_argument, 0, 'k'},
                                         {"json", no_argument, 0, 'j'},      {"help", no_argument, 0, 'h'},
                                         {"version", no_argument, 0, 'V'},   {0, 0, 0, 0}};
    int o;
    opterr = 0; /* our own messages, in the style of the other programs */
    while ((o = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (o) {
        case 'u': c.url = optarg; break;
        case 'k': c.api_key = optarg; break;
        case 'j': c.json = true; break;
        case 'h': s_usage(stdout); return 0;
        case 'V': st_version_print("st-ctl"); return 0;
        default:
            fprintf(stderr, "st-ctl: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (c.api_key && !*c.api_key) c.api_key = NULL; /* ST_API_KEY= */
    const char *cmd = optind < argc ? argv[optind++] : "status", *node = NULL;
    const bool needs_node = !strcmp(cmd, "drain") || !strcmp(cmd, "undrain") || !strcmp(cmd, "remove");
    if (!needs_node && strcmp(cmd, "status") && strcmp(cmd, "rebalance"))
        return fprintf(stderr, "st-ctl: unknown command '%s' (status, drain, undrain, remove, rebalance; see --help)\n",
                       cmd),
               2;
    if (needs_node && optind >= argc)
        return fprintf(stderr, "st-ctl: %s needs a NODE: its index, address or id as 'st-ctl status' shows\n", cmd), 2;
    if (needs_node) node = argv[optind++];
    if (optind < argc) return fprintf(stderr, "st-ctl: unexpected argument '%s' (see --help)\n", argv[optind]), 2;
    char *url = strdup(c.url);
    if (!url) return 1;
    for (size_t ul = strlen(url); ul && url[ul - 1] == '/';) url[--ul] = '\0'; /* "http://h:8080/" works too */
    c.url = url;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc;
    if (!strcmp(cmd, "status")) {
        st_client_body_t ans = {0};
        long st = s_request(&c, "/health", NULL, &ans);
        char *body = ans.data;
        if (st == 200)
            rc = c.json ? (printf("%s\n", body ? body : ""), 0) : s_status(&c, body ? body : "");
        else {
            if (st == 401)
                fprintf(stderr, "st-ctl: %s wants the API key: pass --api-key KEY (or set ST_API_KEY)\n", c.url);
            else if (st > 0)
                fprintf(stderr, "st-ctl: %s answered HTTP %ld to /health: is it an st-coordinator?\n", c.url, st);
            rc = 1;
        }
        free(body);
    } else {
        rc = s_action(&c, cmd, node);
    }
    curl_global_cleanup();
    free(url);
    return rc;
}
