/* server: st_server_main, the serving counterpart of st_cli_run (see
 * server.h). It makes the context the way the one-shot run does (so the
 * coordinator's hooks set up the cluster and install its MoE backend), then
 * runs the scheduler and the HTTP daemon until SIGINT or SIGTERM, which it
 * takes with sigwait (blocked in every thread, so no handler runs anywhere).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"
#include "st_log.h"

int st_server_main(const char *prog, const st_cli_args_t *a, const st_model_t *m, const st_cli_hooks_t *hooks,
                   const st_server_view_t *view) {
    /* --http and --api-key were checked with the other flags, before the model loaded (cli.c) */
    if (!m->tok) {
        fprintf(stderr, "%s: the model has no tokenizer: nothing to serve\n", prog);
        return 1;
    }
    st_ctx_params_t cp = st_ctx_default_params();
    cp.n_threads = (int)a->threads;
    cp.kv_type = a->kv_type;
    if (a->batch) cp.n_batch = (int)a->batch;
    if (cp.n_batch < a->parallel) cp.n_batch = (int)a->parallel;
    int n_train = m->cfg.n_ctx_train > 0 ? m->cfg.n_ctx_train : 4096;
    cp.n_ctx = (int)(a->ctx ? a->ctx : (n_train < 4096 ? n_train : 4096));
    int status = 1;
    if (hooks && hooks->on_params && (status = hooks->on_params(hooks->arg, &cp)) != 0) return status;
    st_ctx_t *c = st_ctx_new(m, &cp);
    if (!c) return 1;
    if (hooks && hooks->on_ctx && (status = hooks->on_ctx(hooks->arg, c)) != 0) {
        st_ctx_destroy(&c);
        return status;
    }

    const char *base = strrchr(a->model, '/');
    st_api_t api = {.m = m,
                    .model_name = base ? base + 1 : a->model,
                    .sp = a->sp,
                    .default_max_tokens = a->n_predict > 0 ? (int)a->n_predict : 0,
                    .drop_old_turns = a->drop_old_turns,
                    .n_ctx = cp.n_ctx};

    /* signals go to sigwait below, in no thread a handler */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    status = 1;
    st_sched_t *s = st_sched_new(c, (int)a->parallel, (int)a->queue, cp.n_ctx, (size_t)a->kv_budget, view);
    st_http_limits_t lim = {a->http_max_conn, a->http_max_conn_per_ip, a->http_header_timeout, a->http_body_timeout};
    st_http_t *h = s ? st_http_new(a->http, a->api_key, &lim, s, &api) : NULL;
    if (h) {
        st_log(ST_LOG_INFO, "%d sequences of up to %d tokens decoded together, %ld requests may wait",
               st_ctx_params(c)->n_batch < a->parallel ? st_ctx_params(c)->n_batch : (int)a->parallel, cp.n_ctx,
               a->queue);
        printf("serving on %s/\n", st_http_url(h));
        fflush(stdout);
        int sig = 0;
        sigwait(&set, &sig);
        st_log(ST_LOG_INFO, "signal %d: stopping", sig);
        status = 0;
    }
    if (s) st_sched_stop(s);
    st_http_destroy(&h);
    st_sched_destroy(&s);
    if (a->stats && hooks && hooks->on_stats) {
        st_generate_result_t res = {0};
        hooks->on_stats(hooks->arg, c, &res);
    }
    st_ctx_destroy(&c);
    return status;
}
