/* cli: st-run's one-shot command line and flow, shared with st-coordinator
 * (see cli.h). Messages name the calling program; everything else is what
 * st-run has always printed. */
#include "cli.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chatml.h"
#include "expert_cache.h"
#include "file.h"
#include "parse.h"
#include "st_log.h"
#include "threadpool.h"
#include "version.h"

void st_cli_usage_options(FILE *f) {
    fprintf(f,
            "  -m, --model FILE       GGUF model (required)\n"
            "  -p, --prompt TEXT      prompt text (special tokens like <|im_start|> are parsed)\n"
            "  -f, --file FILE        read the prompt text from FILE\n"
            "      --tokens IDS       comma-separated prompt token ids instead of text\n"
            "      --chat             wrap the prompt as a ChatML user turn + assistant prompt (the message\n"
            "                         is tokenized as text: special tokens only from the template)\n"
            "      --system TEXT      system message for --chat (default: none)\n"
            "  -n, --n-predict N      tokens to generate (default 128; 0 with --logits-out)\n"
            "      --temp T           temperature, 0 = greedy (default 0.6)\n"
            "      --top-k K          top-k, 0 = off (default 20)\n"
            "      --top-p P          top-p, 1 = off (default 0.95)\n"
            "      --min-p P          min-p, 0 = off (default 0)\n"
            "      --repeat-penalty R repetition penalty, 1 = off (default 1)\n"
            "      --presence-penalty P  subtracted from each token seen in the last 64, 0 = off (default 0)\n"
            "      --frequency-penalty F subtracted per occurrence in the last 64, 0 = off (default 0)\n"
            "      --seed S           sampling seed (default 42)\n"
            "  -t, --threads N        threads (default: all %d CPUs)\n"
            "      --ctx N            context size (default: prompt + n-predict)\n"
            "      --batch N          tokens per prefill step (default 64)\n"
            "      --kv-type f16|f32  KV cache type (default f16)\n"
            "      --json             print {\"prompt_tokens\",\"generated_tokens\",\"text\"} instead of streaming\n"
            "      --logits-out FILE  write float32 LE logits [n_prompt x n_vocab], one row per prompt position\n"
            "      --no-special       do not parse special-token text in the prompt (without --chat)\n"
            "      --stats            print timings and expert statistics to stderr\n"
            "      --mem SIZE         memory budget of the whole process (e.g. 1G): dense weights mapped,\n"
            "                         experts read from storage into an LRU/LFU cache that fits the rest\n"
            "      --http HOST:PORT   serve the OpenAI-compatible HTTP API and web chat instead of a one-shot run\n"
            "                         (e.g. 127.0.0.1:8080; a non-loopback address needs --api-key)\n"
            "      --api-key KEY      bearer token the HTTP API requires (default: none, loopback only)\n"
            "      --parallel N       --http: sequences decoded together (default 8)\n"
            "      --queue N          --http: requests waiting for a free sequence at most (default 64)\n"
            "      --kv-budget SIZE   --http: memory for the KV caches of finished sequences, reused by prompts\n"
            "                         that start the same way (next turns of a conversation); 0 = off (default 512M)\n"
            "      --drop-old-turns   --http: a conversation too long for the context loses its oldest turns\n"
            "                         (default: it is refused with 400 and the numbers)\n"
            "      --http-max-conn N  --http: connections at once (default 512)\n"
            "      --http-max-conn-per-ip N  --http: connections at once from one address (default 32)\n"
            "      --http-header-timeout S  --http: seconds a client has to send its request line and headers,\n"
            "                         from connecting or from the previous answer (default 10)\n"
            "      --http-body-timeout S  --http: seconds to send the body after the headers (default 30)\n",
            st_cpu_count());
}

void st_cli_usage_tail(FILE *f) {
    fprintf(f, "  -v, --verbose          more log output\n"
               "      --version          print the version and exit\n"
               "  -h, --help             this help\n");
}

enum {
    OPT_TOKENS = 256,
    OPT_CHAT,
    OPT_SYSTEM,
    OPT_TEMP,
    OPT_TOPK,
    OPT_TOPP,
    OPT_MINP,
    OPT_REPEAT,
    OPT_PRESENCE,
    OPT_FREQUENCY,
    OPT_SEED,
    OPT_CTX,
    OPT_BATCH,
    OPT_KV,
    OPT_JSON,
    OPT_LOGITS,
    OPT_NOSPECIAL,
    OPT_STATS,
    OPT_HTTP,
    OPT_API_KEY,
    OPT_PARALLEL,
    OPT_QUEUE,
    OPT_KV_BUDGET,
    OPT_DROP_TURNS,
    OPT_HTTP_MAX_CONN,
    OPT_HTTP_MAX_CONN_IP,
    OPT_HTTP_HEADER_TIMEOUT,
    OPT_HTTP_BODY_TIMEOUT,
    OPT_MEM,
    OPT_VERSION
};

static const struct option s_opts[] = {{"model", required_argument, 0, 'm'},
                                       {"prompt", required_argument, 0, 'p'},
                                       {"file", required_argument, 0, 'f'},
                                       {"tokens", required_argument, 0, OPT_TOKENS},
                                       {"chat", no_argument, 0, OPT_CHAT},
                                       {"system", required_argument, 0, OPT_SYSTEM},
                                       {"n-predict", required_argument, 0, 'n'},
                                       {"temp", required_argument, 0, OPT_TEMP},
                                       {"top-k", required_argument, 0, OPT_TOPK},
                                       {"top-p", required_argument, 0, OPT_TOPP},
                                       {"min-p", required_argument, 0, OPT_MINP},
                                       {"repeat-penalty", required_argument, 0, OPT_REPEAT},
                                       {"presence-penalty", required_argument, 0, OPT_PRESENCE},
                                       {"frequency-penalty", required_argument, 0, OPT_FREQUENCY},
                                       {"seed", required_argument, 0, OPT_SEED},
                                       {"threads", required_argument, 0, 't'},
                                       {"ctx", required_argument, 0, OPT_CTX},
                                       {"batch", required_argument, 0, OPT_BATCH},
                                       {"kv-type", required_argument, 0, OPT_KV},
                                       {"json", no_argument, 0, OPT_JSON},
                                       {"logits-out", required_argument, 0, OPT_LOGITS},
                                       {"no-special", no_argument, 0, OPT_NOSPECIAL},
                                       {"stats", no_argument, 0, OPT_STATS},
                                       {"http", required_argument, 0, OPT_HTTP},
                                       {"api-key", required_argument, 0, OPT_API_KEY},
                                       {"parallel", required_argument, 0, OPT_PARALLEL},
                                       {"queue", required_argument, 0, OPT_QUEUE},
                                       {"kv-budget", required_argument, 0, OPT_KV_BUDGET},
                                       {"drop-old-turns", no_argument, 0, OPT_DROP_TURNS},
                                       {"http-max-conn", required_argument, 0, OPT_HTTP_MAX_CONN},
                                       {"http-max-conn-per-ip", required_argument, 0, OPT_HTTP_MAX_CONN_IP},
                                       {"http-header-timeout", required_argument, 0, OPT_HTTP_HEADER_TIMEOUT},
                                       {"http-body-timeout", required_argument, 0, OPT_HTTP_BODY_TIMEOUT},
                                       {"mem", required_argument, 0, OPT_MEM},
                                       {"verbose", no_argument, 0, 'v'},
                                       {"version", no_argument, 0, OPT_VERSION},
                                       {"help", no_argument, 0, 'h'}};
#define N_OPTS (sizeof s_opts / sizeof s_opts[0])

static int s_bad(const char *prog, const char *flag, const char *val) {
    fprintf(stderr, "%s: invalid value '%s' for %s (see --help)\n", prog, val, flag);
    return 2;
}

/* --http HOST:PORT as the server will bind it (server/http.c): the syntax, the name resolves, and
 * an address other than loopback comes with --api-key. Here, so that a typo is reported before a
 * model of many GB loads. 0 or 2 after saying why. */
static int s_check_http(const char *prog, const st_cli_args_t *a) {
    char host[256], numeric[INET6_ADDRSTRLEN] = "";
    int port;
    if (!st_parse_hostport(a->http, host, sizeof host, &port)) {
        fprintf(stderr, "%s: bad --http address '%s': want HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080\n", prog,
                a->http);
        return 2;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int gai = getaddrinfo(host, NULL, &hints, &ai);
    if (gai != 0 || !ai) {
        fprintf(stderr, "%s: --http %s: cannot resolve '%s': %s\n", prog, a->http, host, gai_strerror(gai));
        return 2;
    }
    const void *addr = ai->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                                                 : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
    inet_ntop(ai->ai_family, addr, numeric, sizeof numeric);
    freeaddrinfo(ai);
    if (!st_is_loopback_host(numeric) && (!a->api_key || !*a->api_key)) {
        fprintf(stderr,
                "%s: --http %s is reachable from other machines: give --api-key KEY (clients send it as a bearer "
                "token), or bind 127.0.0.1\n",
                prog, a->http);
        return 2;
    }
    return 0;
}

int st_cli_parse(const char *prog, int argc, char **argv, st_cli_args_t *a, const st_cli_extra_t *x) {
    size_t n_extra = 0;
    while (x && x->opts && x->opts[n_extra].name) n_extra++;
    struct option *opts = calloc(N_OPTS + n_extra + 1, sizeof *opts);
    if (!opts) return 2;
    memcpy(opts, s_opts, sizeof s_opts);
    if (n_extra) memcpy(opts + N_OPTS, x->opts, n_extra * sizeof *opts);
    memset(a, 0, sizeof *a);
    a->n_predict = -1;
    a->threads = st_cpu_count();
    a->kv_type = ST_TYPE_F16;
    a->sp = st_sampler_default_params();
    a->sp.temp = 0.6f;
    a->sp.top_k = 20;
    a->sp.top_p = 0.95f;
    a->sp.min_p = 0.0f;
    a->sp.seed = 42;
    a->parallel = 8;
    a->queue = 64;
    a->kv_budget = (uint64_t)512 << 20;
    a->http_max_conn = 512;
    a->http_max_conn_per_ip = 32;
    a->http_header_timeout = 10;
    a->http_body_timeout = 30;
    double d;
    long l;
    int c, rc = 0;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "m:p:f:n:t:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model = optarg; break;
        case 'p': a->prompt = optarg; break;
        case 'f': a->prompt_file = optarg; break;
        case OPT_TOKENS: a->tokens = optarg; break;
        case OPT_CHAT: a->chat = true; break;
        case OPT_SYSTEM: a->system = optarg; break;
        case 'n':
            if (!st_parse_int(optarg, 0, 1 << 24, &a->n_predict)) rc = s_bad(prog, "-n", optarg);
            break;
        case OPT_TEMP:
            if (!st_parse_float(optarg, 0, 100, &d))
                rc = s_bad(prog, "--temp", optarg);
            else
                a->sp.temp = (float)d;
            break;
        case OPT_TOPK:
            if (!st_parse_int(optarg, 0, 1 << 24, &l))
                rc = s_bad(prog, "--top-k", optarg);
            else
                a->sp.top_k = (int)l;
            break;
        case OPT_TOPP:
            if (!st_parse_float(optarg, 1e-6, 1, &d))
                rc = s_bad(prog, "--top-p", optarg);
            else
                a->sp.top_p = (float)d;
            break;
        case OPT_MINP:
            if (!st_parse_float(optarg, 0, 1, &d))
                rc = s_bad(prog, "--min-p", optarg);
            else
                a->sp.min_p = (float)d;
            break;
        case OPT_REPEAT:
            if (!st_parse_float(optarg, 1e-3, 100, &d))
                rc = s_bad(prog, "--repeat-penalty", optarg);
            else
                a->sp.repeat_penalty = (float)d;
            break;
        case OPT_PRESENCE:
            if (!st_parse_float(optarg, -2, 2, &d))
                rc = s_bad(prog, "--presence-penalty", optarg);
            else
                a->sp.presence_penalty = (float)d;
            break;
        case OPT_FREQUENCY:
            if (!st_parse_float(optarg, -2, 2, &d))
                rc = s_bad(prog, "--frequency-penalty", optarg);
            else
                a->sp.frequency_penalty = (float)d;
            break;
        case OPT_SEED:
            if (!st_parse_int(optarg, 0, 0x7fffffffffffffffL, &l))
                rc = s_bad(prog, "--seed", optarg);
            else
                a->sp.seed = (uint64_t)l;
            break;
        case 't':
            if (!st_parse_int(optarg, 1, 1024, &a->threads)) rc = s_bad(prog, "-t", optarg);
            break;
        case OPT_CTX:
            if (!st_parse_int(optarg, 1, 1 << 24, &a->ctx)) rc = s_bad(prog, "--ctx", optarg);
            break;
        case OPT_BATCH:
            if (!st_parse_int(optarg, 1, 4096, &a->batch)) rc = s_bad(prog, "--batch", optarg);
            break;
        case OPT_KV:
            if (!strcmp(optarg, "f16"))
                a->kv_type = ST_TYPE_F16;
            else if (!strcmp(optarg, "f32"))
                a->kv_type = ST_TYPE_F32;
            else
                rc = s_bad(prog, "--kv-type", optarg);
            break;
        case OPT_JSON: a->json = true; break;
        case OPT_LOGITS: a->logits_out = optarg; break;
        case OPT_NOSPECIAL: a->no_special = true; break;
        case OPT_STATS: a->stats = true; break;
        case OPT_HTTP: a->http = optarg; break;
        case OPT_API_KEY: a->api_key = optarg; break;
        case OPT_PARALLEL:
            if (!st_parse_int(optarg, 1, 256, &a->parallel)) rc = s_bad(prog, "--parallel", optarg);
            break;
        case OPT_QUEUE:
            if (!st_parse_int(optarg, 0, 1 << 16, &a->queue)) rc = s_bad(prog, "--queue", optarg);
            break;
        case OPT_DROP_TURNS: a->drop_old_turns = true; break;
        case OPT_KV_BUDGET:
            if (!st_parse_size(optarg, &a->kv_budget)) rc = s_bad(prog, "--kv-budget", optarg);
            break;
        case OPT_HTTP_MAX_CONN:
            if (!st_parse_int(optarg, 1, 100000, &a->http_max_conn)) rc = s_bad(prog, "--http-max-conn", optarg);
            break;
        case OPT_HTTP_MAX_CONN_IP:
            if (!st_parse_int(optarg, 1, 100000, &a->http_max_conn_per_ip))
                rc = s_bad(prog, "--http-max-conn-per-ip", optarg);
            break;
        case OPT_HTTP_HEADER_TIMEOUT:
            if (!st_parse_int(optarg, 1, 3600, &a->http_header_timeout))
                rc = s_bad(prog, "--http-header-timeout", optarg);
            break;
        case OPT_HTTP_BODY_TIMEOUT:
            if (!st_parse_int(optarg, 1, 3600, &a->http_body_timeout)) rc = s_bad(prog, "--http-body-timeout", optarg);
            break;
        case OPT_MEM:
            if (!st_parse_size(optarg, &a->mem) || a->mem == 0) rc = s_bad(prog, "--mem", optarg);
            break;
        case 'v': st_log_set_level(ST_LOG_DEBUG); break;
        case OPT_VERSION:
            free(opts);
            st_version_print(prog);
            exit(0);
        case 'h':
            free(opts);
            if (x && x->usage) {
                x->usage(stdout);
            } else {
                st_cli_usage_options(stdout);
                st_cli_usage_tail(stdout);
            }
            exit(0);
        default:
            if (c >= ST_CLI_OPT_EXTRA && x && x->handle) {
                rc = x->handle(x->arg, c, optarg);
                break;
            }
            fprintf(stderr, "%s: unknown or incomplete option '%s' (see --help)\n", prog, argv[optind - 1]);
            rc = 2;
        }
    }
    free(opts);
    if (rc) return rc;
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, argv[optind]);
        return 2;
    }
    if (!a->model) {
        fprintf(stderr, "%s: -m MODEL is required (see --help)\n", prog);
        return 2;
    }
    if (a->http && s_check_http(prog, a)) return 2;
    if (a->prompt_file && access(a->prompt_file, R_OK) != 0) {
        fprintf(stderr, "%s: cannot read the prompt file %s: %s\n", prog, a->prompt_file, strerror(errno));
        return 2;
    }
    if (a->http && !a->prompt && !a->prompt_file && !a->tokens) return 0; /* serve */
    if (!!a->prompt + !!a->prompt_file + !!a->tokens != 1) {
        fprintf(stderr, "%s: give exactly one of -p TEXT, -f FILE, --tokens IDS\n", prog);
        return 2;
    }
    if (a->n_predict < 0) a->n_predict = a->logits_out ? 0 : 128;
    return 0;
}

static bool s_stream_cb(void *arg, int32_t token, const char *piece, int len) {
    (void)arg;
    (void)token;
    fwrite(piece, 1, (size_t)len, stdout);
    fflush(stdout);
    return true;
}

typedef struct {
    char *buf;
    size_t len, cap;
} text_t;

static bool s_collect_cb(void *arg, int32_t token, const char *piece, int len) {
    (void)token;
    text_t *t = arg;
    if (t->len + (size_t)len + 1 > t->cap) {
        size_t cap = (t->cap + (size_t)len + 1) * 2;
        char *b = realloc(t->buf, cap);
        if (!b) return false;
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, piece, (size_t)len);
    t->len += (size_t)len;
    return true;
}

static cJSON *s_int_array(const int32_t *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* Tokenizes the prompt as asked: ids from --tokens, or text (file/flag, chat-wrapped). */
static int32_t *s_prompt_tokens(const char *prog, const st_cli_args_t *a, const st_model_t *m, int *n_out) {
    if (a->tokens) {
        int32_t *ids = st_parse_int_list(a->tokens, 0, m->cfg.n_vocab - 1, n_out);
        if (!ids) fprintf(stderr, "%s: --tokens needs comma-separated ids in 0..%d\n", prog, m->cfg.n_vocab - 1);
        return ids;
    }
    if (!m->tok) {
        fprintf(stderr, "%s: the model has no tokenizer; use --tokens\n", prog);
        return NULL;
    }
    size_t len = 0;
    char *text = NULL;
    if (a->prompt_file) {
        text = st_file_read(a->prompt_file, 0, &len);
        if (!text) {
            fprintf(stderr, "%s: cannot read %s\n", prog, a->prompt_file);
            return NULL;
        }
    } else {
        text = strdup(a->prompt);
        len = strlen(text);
    }
    if (!text) return NULL;
    /* --chat: the messages are text, as the HTTP API tokenizes them (special tokens come from the template) */
    st_chat_msg_t msgs[2] = {{"system", a->system, a->system ? strlen(a->system) : 0}, {"user", text, len}};
    int n = a->chat ? st_chatml_tokenize(m->tok, msgs + !a->system, 1 + !!a->system, NULL, 0)
                    : st_tokenize(m->tok, text, len, !a->no_special, NULL, 0);
    int32_t *ids = n >= 0 ? malloc(((size_t)n + 1) * sizeof *ids) : NULL;
    if (ids && (a->chat ? st_chatml_tokenize(m->tok, msgs + !a->system, 1 + !!a->system, ids, n)
                        : st_tokenize(m->tok, text, len, !a->no_special, ids, n)) != n) {
        free(ids);
        ids = NULL;
    }
    free(text);
    *n_out = n;
    return ids;
}

int st_cli_run(const char *prog, const st_cli_args_t *a, const st_model_t *m, const st_cli_hooks_t *h) {
    if (a->http && !a->prompt && !a->prompt_file && !a->tokens) {
        fprintf(stderr, "%s: this build has no HTTP server (install libmicrohttpd-dev and rebuild)\n", prog);
        return 1;
    }
    int n_prompt = 0, rc;
    int32_t *prompt = s_prompt_tokens(prog, a, m, &n_prompt);
    int status = 1;
    st_ctx_t *c = NULL;
    st_kv_t *kv = NULL;
    st_sampler_t *smp = NULL;
    float *plogits = NULL;
    int32_t *gen = NULL;
    text_t text = {0};
    st_expert_cache_t *ec = NULL;
    if (!prompt) goto out;
    if (a->mem && h && h->on_ctx) {
        fprintf(stderr, "%s: --mem is not supported here (the experts are computed elsewhere)\n", prog);
        goto out;
    }
    if (n_prompt == 0 && (a->n_predict > 0 || a->logits_out)) {
        fprintf(stderr, "%s: the prompt is empty: nothing to run\n", prog);
        goto out;
    }

    st_ctx_params_t cp = st_ctx_default_params();
    cp.n_threads = (int)a->threads;
    cp.kv_type = a->kv_type;
    if (a->batch) cp.n_batch = (int)a->batch;
    long need = n_prompt + a->n_predict;
    cp.n_ctx = (int)(a->ctx ? a->ctx : (need > 0 ? need : 1));
    if (need > cp.n_ctx) {
        fprintf(stderr, "%s: prompt (%d) + n-predict (%ld) exceeds --ctx %d\n", prog, n_prompt, a->n_predict, cp.n_ctx);
        goto out;
    }
    if (h && h->on_params && (status = h->on_params(h->arg, &cp)) != 0) goto out;
    status = 1;
    c = st_ctx_new(m, &cp);
    kv = c ? st_kv_new(c, cp.n_ctx) : NULL;
    smp = st_sampler_new(&a->sp, m->cfg.n_vocab);
    gen = malloc(((size_t)a->n_predict + 1) * sizeof *gen);
    if (!c || !kv || !smp || !gen) goto out;
    if (h && h->on_ctx && (status = h->on_ctx(h->arg, c)) != 0) goto out;
    status = 1;
    if (a->mem && !(ec = st_cli_mem_install(prog, c, a->mem))) goto out;

    st_generate_result_t res = {0};
    if (n_prompt > 0 && (a->n_predict > 0 || a->logits_out)) {
        if (a->logits_out) {
            plogits = malloc((size_t)n_prompt * m->cfg.n_vocab * sizeof(float));
            if (!plogits) {
                fprintf(stderr, "%s: no memory for %d x %d logits\n", prog, n_prompt, m->cfg.n_vocab);
                goto out;
            }
        }
        const st_generate_cb_t cb = {a->json ? s_collect_cb : s_stream_cb, a->json ? (void *)&text : NULL,
                                     h ? h->between_steps : NULL, h ? h->arg : NULL};
        rc = st_generate(c, kv, smp, prompt, n_prompt, (int)a->n_predict, plogits, gen, &cb, &res);
        if (rc < 0) {
            fprintf(stderr, "%s: generation failed: %s\n", prog, st_strerror(rc));
            goto out;
        }
    }
    if (a->logits_out) {
        FILE *f = fopen(a->logits_out, "wb");
        size_t nv = (size_t)n_prompt * m->cfg.n_vocab;
        if (!f || fwrite(plogits, sizeof(float), nv, f) != nv || fclose(f) != 0) {
            fprintf(stderr, "%s: cannot write %s\n", prog, a->logits_out);
            goto out;
        }
    }
    if (a->json) {
        cJSON *o = cJSON_CreateObject();
        char *clean = st_utf8_sanitize(text.buf ? text.buf : "", text.len);
        cJSON_AddItemToObject(o, "prompt_tokens", s_int_array(prompt, n_prompt));
        cJSON_AddItemToObject(o, "generated_tokens", s_int_array(gen, res.n_generated));
        cJSON_AddStringToObject(o, "text", clean ? clean : "");
        char *s = cJSON_PrintUnformatted(o);
        if (s) printf("%s\n", s);
        free(s);
        free(clean);
        cJSON_Delete(o);
    } else if (res.n_generated > 0) {
        printf("\n");
    }
    if (a->stats && n_prompt > 0) {
        const st_forward_stats_t *fs = st_ctx_stats(c);
        fprintf(stderr, "prompt: %d tokens in %.1f ms (%.1f tok/s); generated %d tokens in %.1f ms (%.2f tok/s)\n",
                n_prompt, res.prompt_ms, n_prompt * 1e3 / (res.prompt_ms > 0 ? res.prompt_ms : 1), res.n_generated,
                res.generate_ms, res.n_generated > 1 ? (res.n_generated - 1) * 1e3 / res.generate_ms : 0.0);
        if (fs->neurons)
            fprintf(stderr, "experts: %llu calls, %.1f%% of expert neurons inactive after relu(gate)\n",
                    (unsigned long long)fs->expert_calls, 100.0 * (1.0 - (double)fs->neurons_active / fs->neurons));
        if (ec) st_cli_mem_print_stats(ec, stderr);
        if (h && h->on_stats) h->on_stats(h->arg, c, &res);
    }
    status = 0;
out:
    free(text.buf);
    free(gen);
    free(plogits);
    free(prompt);
    st_sampler_destroy(&smp);
    st_kv_destroy(&kv);
    if (c) st_ctx_set_moe(c, NULL);
    st_expert_cache_destroy(&ec);
    st_ctx_destroy(&c);
    return status;
}
