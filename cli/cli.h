/* cli: the one-shot command line shared by st-run and st-coordinator, so the
 * two accept the same flags and print the same outputs (and can be compared
 * byte for byte): prompt options, sampling, context, --json, --logits-out,
 * --stats. A program adds its own options through st_cli_extra_t and hooks
 * into the run through st_cli_hooks_t (st-coordinator installs its MoE
 * backend on the context and adds cluster statistics).
 */
#ifndef ST_CLI_H
#define ST_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "expert_cache.h"
#include "forward.h"
#include "generate.h"
#include "model.h"
#include "sampler.h"

typedef struct {
    const char *model, *prompt, *prompt_file, *tokens, *system, *logits_out;
    const char *http, *api_key; /* --http HOST:PORT serves instead of a one-shot run (server/) */
    bool chat, json, no_special, stats;
    long n_predict, threads, ctx, batch;
    long parallel, queue; /* --http: sequences decoded together, requests waiting at most */
    uint64_t kv_budget;   /* --http: bytes of finished sequences' KV kept for prompt reuse (0: off) */
    bool drop_old_turns;  /* --http: cut a chat too long for the context to its newest turns (else 400) */
    long http_max_conn, http_max_conn_per_ip, http_header_timeout, http_body_timeout; /* --http: limits */
    uint64_t mem; /* --mem SIZE: whole-process budget, experts read from storage (0: off) */
    st_type_t kv_type;
    st_sampler_params_t sp;
} st_cli_args_t;

/* First option value a program may use for its own long options. */
#define ST_CLI_OPT_EXTRA 1000

typedef struct {
    const struct option *opts; /* {0}-terminated; values >= ST_CLI_OPT_EXTRA */
    /* Handles one of opts: 0, or 2 after printing a usage error. */
    int (*handle)(void *arg, int opt, const char *val);
    void *arg;
    void (*usage)(FILE *f); /* the program's whole --help text */
} st_cli_extra_t;

/* Parses argv into a (defaults first). prog names the program in messages;
 * extra may be NULL (st-run). With --http no prompt is needed (a->http set,
 * a->n_predict stays -1 unless -n is given: the API's default max_tokens). --help prints usage and exits 0. Returns 0,
 * or 2 after printing why the command line is wrong. */
int st_cli_parse(const char *prog, int argc, char **argv, st_cli_args_t *a, const st_cli_extra_t *extra);

/* The shared option lines of --help (from -m to --stats, then the --http
 * serving options), and the closing
 * -v/-h lines, as st-run prints them. */
void st_cli_usage_options(FILE *f);
void st_cli_usage_tail(FILE *f);

typedef struct {
    void *arg;
    /* After the prompt is tokenized, before the context exists: may change
     * the context parameters. Nonzero stops the run with that status. */
    int (*on_params)(void *arg, st_ctx_params_t *p);
    /* After the context is created (install a MoE backend here). Nonzero stops. */
    int (*on_ctx)(void *arg, st_ctx_t *c);
    /* After generation, with --stats: extra statistics lines on stderr. */
    void (*on_stats)(void *arg, st_ctx_t *c, const st_generate_result_t *res);
    /* Before each pass through the model (st_generate_cb_t.between_steps). */
    void (*between_steps)(void *arg);
} st_cli_hooks_t;

/* Runs the one-shot flow on a loaded model: tokenize the prompt, generate
 * (streaming to stdout, or --json), write --logits-out, print --stats.
 * hooks may be NULL. Returns the process exit status (0 or 1). */
int st_cli_run(const char *prog, const st_cli_args_t *a, const st_model_t *m, const st_cli_hooks_t *hooks);

/* --mem (cli/mem.c): installs the memory-budgeted expert cache on c under the
 * whole-process budget mem_total (st_expert_cache_install); NULL after
 * printing why to stderr (prog names the program). The caller owns the cache. */
st_expert_cache_t *st_cli_mem_install(const char *prog, st_ctx_t *c, uint64_t mem_total);
/* The cache's statistics line on f: slots, hit rate, bytes per token, read bandwidth. */
void st_cli_mem_print_stats(st_expert_cache_t *ec, FILE *f);

#endif
