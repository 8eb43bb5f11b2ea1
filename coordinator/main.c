/* st-coordinator: runs a SmallThinker model with its experts on st-node
 * processes. Same one-shot flags and output as st-run (cli/cli.c), so the
 * two can be compared byte for byte; the experts go through remote_moe.
 *
 * main() is the list of steps: parse the command line, load the model
 * (mmap; expert bytes are read only to hash, push or compute them as a
 * fallback), connect to the nodes, place the experts and push them
 * (setup.c), run (one-shot, or serve HTTP), save the routing profile.
 * Between two steps of a generation the loop calls s_between_steps: nodes
 * added on SIGHUP, nodes coming back or joining.
 */
#include <errno.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "parse.h"
#include "setup.h"
#include "st_log.h"
#ifdef ST_HAVE_SERVER
#include "cluster_view.h"
#endif

#define PROG "st-coordinator"

enum {
    OPT_NODES = ST_CLI_OPT_EXTRA,
    OPT_CLUSTER,
    OPT_KEY,
    OPT_INSECURE,
    OPT_REPL,
    OPT_TIMEOUT,
    OPT_PUSH_TIMEOUT,
    OPT_NO_FALLBACK,
    OPT_NO_PREFETCH,
    OPT_STATE_DIR,
    OPT_PIN,
    OPT_ID,
    OPT_HTTP,
    OPT_QUIET_PUSH,
    OPT_MIN_NODES,
    OPT_MIN_NODES_TIMEOUT
};

static const struct option s_opts[] = {{"nodes", required_argument, 0, OPT_NODES},
                                       {"cluster", required_argument, 0, OPT_CLUSTER},
                                       {"key", required_argument, 0, OPT_KEY},
                                       {"insecure", no_argument, 0, OPT_INSECURE},
                                       {"replication", required_argument, 0, OPT_REPL},
                                       {"timeout-ms", required_argument, 0, OPT_TIMEOUT},
                                       {"push-timeout-ms", required_argument, 0, OPT_PUSH_TIMEOUT},
                                       {"no-fallback", no_argument, 0, OPT_NO_FALLBACK},
                                       {"no-prefetch", no_argument, 0, OPT_NO_PREFETCH},
                                       {"state-dir", required_argument, 0, OPT_STATE_DIR},
                                       {"pin-fraction", required_argument, 0, OPT_PIN},
                                       {"id", required_argument, 0, OPT_ID},
                                       {"http", required_argument, 0, OPT_HTTP},
                                       {"quiet-push", no_argument, 0, OPT_QUIET_PUSH},
                                       {"min-nodes", required_argument, 0, OPT_MIN_NODES},
                                       {"min-nodes-timeout", required_argument, 0, OPT_MIN_NODES_TIMEOUT},
                                       {0, 0, 0, 0}};

static void s_usage(FILE *f) {
    fprintf(
        f, "usage: st-coordinator -m MODEL (--nodes URL,... | --cluster FILE) (--insecure | --key FILE)\n"
           "                      (-p TEXT | -f FILE | --tokens IDS) [options]\n"
           "\n"
           "Runs a SmallThinker GGUF model with its experts on st-node processes; prints exactly what\n"
           "st-run prints for the same flags.\n"
           "\n"
           "cluster\n"
           "      --nodes URLS       comma-separated node endpoints (only with --insecure), e.g.\n"
           "                         tcp://10.0.0.2:5555,tcp://10.0.0.3:5555\n"
           "      --cluster FILE     one node per line: URL NODE_PUBLIC_KEY (Z85, the node's node.pub); lines\n"
           "                         starting with '#' are comments. A node that is down or not started yet is\n"
           "                         probed (500 ms, backing off to 8 s) and joins when it answers: the experts\n"
           "                         are placed again, keeping each where it is. Re-read on SIGHUP (systemctl\n"
           "                         reload): nodes added to it are probed and join the same way\n"
           "      --min-nodes N      generate (or serve: requests wait, /health says \"waiting\") only once N\n"
           "                         nodes are up; the experts are placed once N have answered (default: at once)\n"
           "      --min-nodes-timeout S  wait at most S seconds for --min-nodes, then go on with the nodes that are\n"
           "                         up, the others joining when they answer (default: no limit)\n"
           "      --insecure         plain TCP: no encryption, no authentication (logs a warning)\n"
           "      --key FILE         the coordinator's CURVE secret key file (from st-keygen; give the nodes its\n"
           "                         .pub in their --allow file)\n"
           "      --replication R    copies of each expert, where the nodes' RAM allows (default 1)\n"
           "      --timeout-ms N     deadline of each expert round trip and of ASSIGN (default 10000); the first\n"
           "                         HELLO to a node waits at least 5000 ms (TCP connect and CURVE handshake)\n"
           "      --push-timeout-ms N  deadline of each shard chunk acknowledgement (default 60000)\n"
           "      --no-fallback      fail when a node is down instead of computing its experts here\n"
           "      --no-prefetch      do not send EXPERT_PREFETCH hints after routing\n"
           "      --pin-fraction F   share of a node's RAM for pinned hot experts, with a profile (default 0.5)\n"
           "      --state-dir DIR    where MODEL.placement.json/.st-hashes/.st-profile go (default: beside the model)\n"
           "      --id NAME          coordinator id sent to the nodes (default st-coordinator)\n"
           "      --quiet-push       no shard push progress line\n"
           "      --stats            also: per decode token round trips, bytes and node compute per node\n"
           "\n"
           "generation (as st-run)\n");
    st_cli_usage_options(f);
    st_cli_usage_tail(f);
}

static int s_bad(const char *flag, const char *val) {
    fprintf(stderr, PROG ": invalid value '%s' for %s (see --help)\n", val, flag);
    return 2;
}

static int s_handle(void *arg, int opt, const char *v) {
    st_coord_opts_t *c = arg;
    double d;
    switch (opt) {
    case OPT_NODES: c->nodes = v; break;
    case OPT_CLUSTER: c->cluster_file = v; break;
    case OPT_KEY: c->key_file = v; break;
    case OPT_INSECURE: c->insecure = true; break;
    case OPT_REPL:
        if (!st_parse_int(v, 1, 64, &c->replication)) return s_bad("--replication", v);
        break;
    case OPT_TIMEOUT:
        if (!st_parse_int(v, 1, 86400000, &c->timeout_ms)) return s_bad("--timeout-ms", v);
        break;
    case OPT_PUSH_TIMEOUT:
        if (!st_parse_int(v, 1, 86400000, &c->push_timeout_ms)) return s_bad("--push-timeout-ms", v);
        break;
    case OPT_NO_FALLBACK: c->no_fallback = true; break;
    case OPT_NO_PREFETCH: c->no_prefetch = true; break;
    case OPT_STATE_DIR: c->state_dir = v; break;
    case OPT_PIN:
        if (!st_parse_float(v, 0, 1, &d)) return s_bad("--pin-fraction", v);
        c->pin_fraction = d;
        break;
    case OPT_ID: c->id = v; break;
    case OPT_QUIET_PUSH: c->quiet_push = true; break;
    case OPT_MIN_NODES:
        if (!st_parse_int(v, 1, 4096, &c->min_nodes)) return s_bad("--min-nodes", v);
        break;
    case OPT_MIN_NODES_TIMEOUT:
        if (!st_parse_int(v, 1, 100000000, &c->min_nodes_timeout_s)) return s_bad("--min-nodes-timeout", v);
        break;
    case OPT_HTTP:
        fprintf(stderr, PROG ": the HTTP API (--http) is not built yet; use the one-shot flags (-p ...)\n");
        return 2;
    default: return 2;
    }
    return 0;
}

/* What can be checked before the model loads (minutes for 12 GB on a Pi): the key, each node's
 * public key, --min-nodes, the state directory, st-run's flags. 0, or 2 after saying what is wrong. */
static int s_check_args(const st_coord_opts_t *ca, const st_cli_args_t *a, const st_node_addr_t *nodes, int n) {
    if (a->mem) { /* st-run's flag: said before the load, not after */
        fprintf(stderr, PROG ": --mem is st-run's (experts read from storage in one process); here the nodes hold\n"
                             "  the experts: give each st-node its --mem\n");
        return 2;
    }
#ifndef ST_HAVE_SERVER
    if (a->http && !a->prompt && !a->prompt_file && !a->tokens) {
        fprintf(stderr, PROG ": this build has no HTTP server (install libmicrohttpd-dev and rebuild)\n");
        return 2;
    }
#endif
    if (!ca->insecure) {
        if (!ca->key_file) {
            fprintf(stderr,
                    PROG ": encrypted transport needs --key FILE and each node's public key in --cluster FILE;\n"
                         "  pass --insecure to talk plain TCP on a network you trust\n");
            return 2;
        }
        if (access(ca->key_file, R_OK) != 0) { /* loaded (and its mode checked) when the nodes are contacted */
            fprintf(stderr, PROG ": cannot read the key file %s: %s\n", ca->key_file, strerror(errno));
            return 2;
        }
        for (int i = 0; i < n; i++)
            if (!nodes[i].server_key[0]) {
                fprintf(stderr, PROG ": node %s has no public key in %s (lines 'URL NODE_PUBLIC_KEY')\n", nodes[i].url,
                        ca->cluster_file);
                return 2;
            }
    }
    if (ca->min_nodes > n) {
        fprintf(stderr, PROG ": --min-nodes %ld, but %s lists %d node(s)\n", ca->min_nodes,
                ca->cluster_file ? "the cluster file" : "--nodes", n);
        return 2;
    }
    if (ca->state_dir && access(ca->state_dir, W_OK | X_OK) != 0) {
        fprintf(stderr, PROG ": --state-dir %s: %s (it must be a directory this user can write)\n", ca->state_dir,
                strerror(errno));
        return 2;
    }
    return 0;
}

/* ---- the run's hooks ---------------------------------------------------------- */

static volatile sig_atomic_t s_hup; /* SIGHUP (systemctl reload): re-read the cluster file */

static void s_on_hup(int sig) {
    (void)sig;
    s_hup = 1;
}

/* The cluster file again after SIGHUP. */
static void s_sighup(st_coord_t *c) {
    if (!s_hup) return;
    s_hup = 0;
    st_coord_reread(c);
}

/* Before each step of a generation (st_generate, the HTTP scheduler): the
 * cluster file after SIGHUP, then nodes that come back or join. */
static void s_between_steps(void *arg) {
    s_sighup(arg);
    st_coord_between_steps(arg);
}

static int s_on_params(void *arg, st_ctx_params_t *p) {
    p->n_batch = st_coord_max_batch(arg, p->n_batch);
    return 0;
}

static int s_on_ctx(void *arg, st_ctx_t *ctx) { return st_coord_attach(arg, ctx) < 0 ? 1 : 0; }

static void s_on_stats(void *arg, st_ctx_t *ctx, const st_generate_result_t *res) {
    (void)ctx;
    (void)res;
    st_coord_print_stats(arg, stderr);
}

#ifdef ST_HAVE_SERVER
/* The server with no request: as between steps, and what the nodes sent. */
static void s_idle(void *arg) {
    s_sighup(arg);
    st_coord_idle(arg);
}

static bool s_waiting(void *arg, char *why, size_t cap) { return st_coord_waiting(arg, why, cap); }

/* Serves the HTTP API until SIGINT or SIGTERM (server/); requests wait for --min-nodes. */
static int s_serve(st_coord_t *c, const st_cli_args_t *a, const st_model_t *m, const st_cli_hooks_t *hooks) {
    st_cluster_view_t *view = st_cluster_view_new(c);
    if (!view) return 1;
    st_server_view_t sv = st_cluster_view_server(view);
    sv.idle = s_idle;
    sv.idle_arg = c;
    sv.between_steps = s_between_steps;
    sv.waiting = s_waiting;
    int status = st_server_main(PROG, a, m, hooks, &sv);
    st_cluster_view_destroy(&view);
    return status;
}
#endif

static int s_run(st_coord_t *c, const st_cli_args_t *a, const st_model_t *m) {
    const st_cli_hooks_t hooks = {c, s_on_params, s_on_ctx, s_on_stats, s_between_steps};
#ifdef ST_HAVE_SERVER
    if (a->http && !a->prompt && !a->prompt_file && !a->tokens) return s_serve(c, a, m, &hooks);
#endif
    int status = st_coord_wait(c);
    return status ? status : st_cli_run(PROG, a, m, &hooks);
}

int main(int argc, char **argv) {
    /* parse */
    st_coord_opts_t o = {.replication = 1, .timeout_ms = 10000, .push_timeout_ms = 60000, .pin_fraction = 0.5};
    st_cli_args_t a;
    const st_cli_extra_t extra = {s_opts, s_handle, &o, s_usage};
    int status = st_cli_parse(PROG, argc, argv, &a, &extra);
    if (status) return status;
    o.model_path = a.model;
    o.threads = a.threads;
    o.stats = a.stats;
    if (sodium_init() < 0) {
        fprintf(stderr, PROG ": libsodium failed to initialise\n");
        return 1;
    }
    if (o.nodes && !o.insecure) {
        fprintf(stderr, PROG ": --nodes carries no node keys: use --cluster FILE (lines 'URL NODE_PUBLIC_KEY') with\n"
                             "  --key FILE, or add --insecure for plain TCP on a network you trust\n");
        return 2;
    }
    int n_nodes = 0;
    st_node_addr_t *nodes = st_coord_node_list(o.nodes, o.cluster_file, &n_nodes);
    if (!nodes) return 2;
    if ((status = s_check_args(&o, &a, nodes, n_nodes)) != 0) {
        free(nodes);
        return status;
    }
    /* SIGHUP (systemctl reload): the cluster file's new nodes join (between steps); with --nodes it only logs */
    struct sigaction sa = {.sa_handler = s_on_hup, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);

    /* load: attention and the head run here, packed for the kernels; the experts stay as the file
     * has them, to be pushed to the nodes and, for a fallback, computed in that layout */
    st_model_t *m = st_model_load_streaming(a.model);
    st_coord_t *c = NULL;
    if (m) {
        char desc[512];
        st_model_describe(m, desc, sizeof desc);
        st_log(ST_LOG_INFO, "%s", desc);
        c = st_coord_new(m, &o, nodes, n_nodes);
    }
    free(nodes);
    status = c ? 0 : 1;

    /* connect, place, push */
    if (status == 0) status = st_coord_setup(c);

    /* run: serve HTTP until SIGINT or SIGTERM, or one-shot once --min-nodes are up */
    if (status == 0) status = s_run(c, &a, m);

    /* save */
    if (c) st_coord_save(c);
    st_coord_destroy(&c);
    st_model_destroy(&m);
    return status;
}
