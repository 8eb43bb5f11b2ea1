/* st-run: the whole model in one process. Tokenizes a prompt (optionally as
 * a ChatML chat turn), runs it, streams the generated text to stdout; or
 * prints JSON, or writes teacher-forced logits for every prompt position.
 * The command line and the run live in cli/cli.c, shared with
 * st-coordinator so that both take the same flags and print the same output. */
#include <stdio.h>

#include "cli.h"
#include "model.h"
#include "st_log.h"
#ifdef ST_HAVE_SERVER
#include "server.h"
#endif

static void s_usage(FILE *f) {
    fprintf(f, "usage: st-run -m MODEL (-p TEXT | -f FILE | --tokens IDS) [options]\n"
               "\n"
               "Runs a SmallThinker GGUF model in one process and streams the generated text.\n"
               "\n");
    st_cli_usage_options(f);
    st_cli_usage_tail(f);
}

int main(int argc, char **argv) {
    st_cli_args_t a;
    const st_cli_extra_t extra = {.usage = s_usage};
    int rc = st_cli_parse("st-run", argc, argv, &a, &extra);
    if (rc) return rc;
#ifndef ST_HAVE_SERVER
    if (a.http && !a.prompt && !a.prompt_file && !a.tokens) { /* said before a long load, not after */
        fprintf(stderr, "st-run: this build has no HTTP server (install libmicrohttpd-dev and rebuild)\n");
        return 2;
    }
#endif

    /* every weight in RAM: a resident copy (huge pages); under --mem the file stays mapped */
    st_model_t *m = a.mem ? st_model_load(a.model) : st_model_load_resident(a.model);
    if (!m) return 1;
    char desc[512];
    st_model_describe(m, desc, sizeof desc);
    st_log(ST_LOG_INFO, "%s", desc);

    int status;
#ifdef ST_HAVE_SERVER
    if (a.http && !a.prompt && !a.prompt_file && !a.tokens) /* serve the HTTP API (server/) */
        status = st_server_main("st-run", &a, m, NULL, NULL);
    else
#endif
        status = st_cli_run("st-run", &a, m, NULL);
    st_model_destroy(&m);
    return status;
}
