/* st-coordinator: runs a SmallThinker model with its experts on st-node
 * processes. Same one-shot flags and output as st-run (cli/cli.c), so the
 * two can be compared byte for byte; the experts go through remote_moe.
 *
 * main() is the list of steps: parse the command line (args.c), load the
 * model (mmap; expert bytes are read only to hash, push or compute them as
 * a fallback), connect to the nodes, place the experts and push them
 * (setup.c), run (one-shot, or serve HTTP), save the routing profile.
 * Between two steps of a generation the loop calls s_between_steps: nodes
 * added on SIGHUP, nodes coming back or joining.
 */
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#include "args.h"
#include "cli.h"
#include "setup.h"
#include "st_log.h"
#ifdef ST_HAVE_SERVER
#include "cluster_view.h"
#include "steer.h"
#endif

#define PROG "st-coordinator"

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
    st_coord_reread(c, "SIGHUP");
}

/* Before each step of a generation (st_gen_step, one-shot or HTTP): the
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
/* The server with no request: as between steps, and what the nodes sent;
 * the nodes' boards for the view. */
static void s_idle(void *arg) {
    s_sighup(arg);
    st_coord_ask_board(arg);
    st_coord_idle(arg);
}

/* The server between two steps: as one-shot, and the nodes' boards for the view. */
static void s_serve_between_steps(void *arg) {
    s_between_steps(arg);
    st_coord_ask_board(arg);
}

static bool s_waiting(void *arg, char *why, size_t cap) { return st_coord_waiting(arg, why, cap); }

/* Serves the HTTP API until SIGINT or SIGTERM (server/); requests wait for --min-nodes. */
static int s_serve(st_coord_t *c, const st_cli_args_t *a, const st_model_t *m, const st_cli_hooks_t *hooks) {
    st_cluster_view_t *view = st_cluster_view_new(c);
    if (!view) return 1;
    st_server_view_t sv = st_cluster_view_server(view);
    sv.idle = s_idle;
    sv.idle_arg = c;
    sv.between_steps = s_serve_between_steps;
    sv.waiting = s_waiting;
    sv.admin = st_steer_admin; /* st-ctl: drain, remove, rebalance, between steps */
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
    /* parse: the command line, and what can be checked before the load */
    st_coord_opts_t o;
    st_cli_args_t a;
    st_node_addr_t *nodes = NULL;
    int n_nodes = 0, status = st_coord_args(argc, argv, &o, &a, &nodes, &n_nodes);
    if (status) return status;
    if (sodium_init() < 0) {
        fprintf(stderr, PROG ": libsodium failed to initialise\n");
        free(nodes);
        return 1;
    }
    /* SIGHUP (systemctl reload): the cluster file's new nodes join (between steps); with --nodes it only logs */
    struct sigaction sa = {.sa_handler = s_on_hup, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);

    /* load: attention and the head run here, packed for the kernels; the experts stay as the file
     * has them, to be pushed to the nodes and, for a fallback, computed in that layout */
    st_model_t *m = st_model_load_streaming(a.model, o.head == ST_HEAD_LOCAL); /* a sharded head stays mapped */
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
