/* server: the OpenAI-compatible HTTP API, the web chat and the metrics of
 * st-coordinator and st-run (`--http HOST:PORT`).
 *
 * One program serves one model. Requests are queued (with a limit) and a
 * single scheduler thread decodes all running sequences together: each step
 * is one st_gen_step (model/generate.c, the loop st-run runs too), one token
 * of each running sequence and prompt tokens of new ones up to the batch
 * size (one KV cache per sequence; see scheduler.c). That thread is the only
 * one that touches the context and hence the cluster's sockets; HTTP threads
 * (libmicrohttpd, one per connection) only queue requests and read their
 * output. The only difference between st-run and st-coordinator is the MoE
 * backend the hooks install and the cluster view they report.
 */
#ifndef ST_SERVER_H
#define ST_SERVER_H

#include <cjson/cJSON.h>

#include "cli.h"
#include "model.h"

typedef struct {
    void *arg;
    /* Called on the scheduler thread (the one that owns the context) between
     * decode steps and about once a second when idle: appends one object per
     * node to nodes (see README "Serving": url, up, mem_budget, experts, ...).
     * May be NULL (single process). */
    void (*nodes)(void *arg, cJSON *nodes);
    /* Called on the scheduler thread about ten times a second while no
     * sequence runs (may be NULL): a cluster notices nodes that leave, come
     * back or join without waiting for the next request. */
    void (*idle)(void *idle_arg);
    void *idle_arg;
    /* Called on the scheduler thread before each step (one pass of the
     * running sequences through the model; may be NULL): where a cluster
     * takes in nodes that join or come back while requests run. */
    void (*between_steps)(void *idle_arg);
    /* Called on the scheduler thread before it starts a request and when
     * idle (may be NULL): true while the program is not ready to serve (a
     * cluster waiting for --min-nodes), with the reason in why. Requests wait
     * in the queue meanwhile, and /health says status "waiting" and why. */
    bool (*waiting)(void *idle_arg, char *why, size_t cap);
    /* Called on the scheduler thread between two steps (or while idle) for
     * POST /admin/ACTION (st-ctl: "drain", "remove", "rebalance"; may be
     * NULL: no such routes): body is the request's JSON, running the
     * sequences in progress (the action happens between two of their steps).
     * Returns an HTTP status with a malloc'd JSON answer in *reply. */
    int (*admin)(void *idle_arg, const char *action, const char *body, size_t len, int running, char **reply);
    /* Called from the HTTP threads for /health (may be NULL; must be
     * thread-safe): the pairing code boards can join with now and its
     * seconds left, false when there is none (st-coordinator --pair). */
    bool (*pairing)(void *arg, char *code, size_t cap, int *seconds_left);
} st_server_view_t;

/* Serves a->http until SIGINT or SIGTERM: creates the context through hooks
 * (on_params, on_ctx, as st_cli_run does; hooks and view may be NULL), starts
 * the scheduler and the HTTP daemon, prints "serving on http://HOST:PORT/"
 * on stdout once it answers. Refuses a non-loopback address without
 * a->api_key. Returns the process exit status. */
int st_server_main(const char *prog, const st_cli_args_t *a, const st_model_t *m, const st_cli_hooks_t *hooks,
                   const st_server_view_t *view);

#endif
