/* st-bench: prompt-processing and decode speed of one model, in the terms
 * llama-bench uses so that the two tables sit side by side.
 *
 * pp<P>: P random tokens decoded as one batch into an empty cache (tok/s).
 * tg<N>: N single-token steps into an empty cache, logits every step (tok/s).
 * tg<N>x<S> (--seqs S): S sequences decoded together, N steps of one token
 *   each (st_decode_batch: the server's steps once no prompt is being
 *   prefilled); aggregate tok/s.
 * Both are repeated -r times after one warm-up of each (which also faults the
 * mapped weights in), and reported as mean +- sample sd of the per-run t/s, as
 * llama-bench does. Also reported: model load time, peak RSS (VmHWM), and how
 * close decode is to the memory-bandwidth limit: the bytes of weights one
 * decode step reads (dense matrices, k experts per layer, output head, one
 * embedding row) times tok/s, over the read bandwidth measured here with all
 * threads on a buffer much bigger than the last-level cache, in a child process
 * before the model is loaded (so the buffer raises neither our peak RSS nor a
 * --mem budget).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "clock.h"
#include "expert_cache.h"
#include "forward.h"
#include "measure.h"
#include "model.h"
#include "parse.h"
#include "proc_mem.h"
#include "st_log.h"
#include "threadpool.h"
#include "version.h"

#define MAX_REPS 100

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: st-bench -m MODEL [options]\n"
            "       st-bench --profile FILE [-t N] [--disk-dir DIR] [--block SIZE] [--types LIST]\n"
            "\n"
            "Measures prompt processing (ppP) and decode (tgN) tokens/s like llama-bench,\n"
            "plus load time, peak RSS and decode speed against the memory-bandwidth limit.\n"
            "\n"
            "  -m, --model FILE   GGUF model (required)\n"
            "  -p, --n-prompt P   prompt tokens of the pp test, one batch; 0 skips it (default 64)\n"
            "  -n, --n-gen N      decode steps of the tg test; 0 skips it (default 32)\n"
            "  -t, --threads N    threads (default: all %d CPUs)\n"
            "  -r, --repetitions R  runs of each test after one warm-up (default 3)\n"
            "  -s, --seqs S       also run tgNxS: S sequences decoded together (aggregate tok/s)\n"
            "      --kv-type f16|f32  KV cache type (default f16, as llama-bench)\n"
            "      --no-bw        skip the memory-bandwidth measurement\n"
            "      --mem SIZE     whole-process memory budget (e.g. 1G): experts read from storage into a cache\n"
            "      --json         print one JSON object instead of a markdown table\n"
            "      --profile FILE measure this machine as a board for st-plan instead (no model needed):\n"
            "                     memory bandwidth (1..N threads), matmul rates per weight type at 1, 8\n"
            "                     and 64 tokens, storage reads, a ZeroMQ + CURVE round trip; writes FILE.\n"
            "                     Each rate is the fastest of timed blocks; their spread is kept and a\n"
            "                     large one (a busy machine) warned of\n"
            "      --disk-dir DIR where the node's store would be: reads of a scratch file there\n"
            "                     (default: FILE's directory)\n"
            "      --block SIZE   bytes per storage read: one expert (default 3317760, the 21B's Q4_0)\n"
            "      --types LIST   weight types to measure, e.g. q4_0,q6_k (default: all; st-plan uses\n"
            "                     Q4_0's rates for a type not measured)\n"
            "  -v, --verbose      more log output\n"
            "      --version      print the version and exit\n"
            "  -h, --help         this help\n",
            st_cpu_count());
}

typedef struct {
    const char *model;
    long n_prompt, n_gen, threads, reps, seqs;
    st_type_t kv_type;
    bool json, no_bw;
    uint64_t mem; /* --mem: 0 = off */
    const char *profile, *disk_dir;
    uint64_t block;
    uint64_t types; /* --types: bit t = weight type t; 0 = all */
} args_t;

enum { OPT_MEM = 256, OPT_JSON, OPT_KV, OPT_NOBW, OPT_VERSION, OPT_PROFILE, OPT_DISK_DIR, OPT_BLOCK, OPT_TYPES };

static int s_bad(const char *flag, const char *val) {
    fprintf(stderr, "st-bench: invalid value '%s' for %s (see --help)\n", val, flag);
    return 2;
}

/* "q4_0,Q6_K" -> one bit per weight type (names as st_type_name gives them,
 * any case); false on an unknown or empty name. */
static bool s_parse_types(const char *list, uint64_t *mask) {
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", list) >= (int)sizeof buf) return false;
    *mask = 0;
    char *save = NULL;
    for (char *name = strtok_r(buf, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        int t = 0;
        while (t < ST_TYPE_COUNT && (!st_type_traits(t) || strcasecmp(name, st_type_name(t)) != 0)) t++;
        if (t == ST_TYPE_COUNT) return false;
        *mask |= 1ull << t;
    }
    return *mask != 0;
}

static int s_parse_args(int argc, char **argv, args_t *a) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"n-prompt", required_argument, 0, 'p'},
                                         {"n-gen", required_argument, 0, 'n'},
                                         {"threads", required_argument, 0, 't'},
                                         {"repetitions", required_argument, 0, 'r'},
                                         {"seqs", required_argument, 0, 's'},
                                         {"kv-type", required_argument, 0, OPT_KV},
                                         {"no-bw", no_argument, 0, OPT_NOBW},
                                         {"mem", required_argument, 0, OPT_MEM},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"version", no_argument, 0, OPT_VERSION},
                                         {"profile", required_argument, 0, OPT_PROFILE},
                                         {"disk-dir", required_argument, 0, OPT_DISK_DIR},
                                         {"block", required_argument, 0, OPT_BLOCK},
                                         {"types", required_argument, 0, OPT_TYPES},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    a->n_prompt = 64;
    a->n_gen = 32;
    a->threads = st_cpu_count();
    a->reps = 3;
    a->kv_type = ST_TYPE_F16;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:p:n:t:r:s:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model = optarg; break;
        case 'p':
            if (!st_parse_int(optarg, 0, 4096, &a->n_prompt)) return s_bad("-p", optarg);
            break;
        case 'n':
            if (!st_parse_int(optarg, 0, 1 << 16, &a->n_gen)) return s_bad("-n", optarg);
            break;
        case 't':
            if (!st_parse_int(optarg, 1, 1024, &a->threads)) return s_bad("-t", optarg);
            break;
        case 'r':
            if (!st_parse_int(optarg, 1, MAX_REPS, &a->reps)) return s_bad("-r", optarg);
            break;
        case 's':
            if (!st_parse_int(optarg, 2, 256, &a->seqs)) return s_bad("-s", optarg);
            break;
        case OPT_KV:
            if (!strcmp(optarg, "f16"))
                a->kv_type = ST_TYPE_F16;
            else if (!strcmp(optarg, "f32"))
                a->kv_type = ST_TYPE_F32;
            else
                return s_bad("--kv-type", optarg);
            break;
        case OPT_NOBW: a->no_bw = true; break;
        case OPT_MEM:
            if (!st_parse_size(optarg, &a->mem) || a->mem == 0) return s_bad("--mem", optarg);
            break;
        case OPT_JSON: a->json = true; break;
        case OPT_PROFILE: a->profile = optarg; break;
        case OPT_DISK_DIR: a->disk_dir = optarg; break;
        case OPT_BLOCK: /* O_DIRECT reads whole 4 KiB pages */
            if (!st_parse_size(optarg, &a->block) || a->block == 0 || a->block % 4096 || a->block > (256u << 20))
                return s_bad("--block", optarg);
            break;
        case OPT_TYPES:
            if (!s_parse_types(optarg, &a->types)) return s_bad("--types", optarg);
            break;
        case 'v': st_log_set_level(ST_LOG_DEBUG); break;
        case 'h': s_usage(stdout); exit(0);
        case OPT_VERSION: st_version_print("st-bench"); exit(0);
        default:
            fprintf(stderr, "st-bench: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "st-bench: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if ((a->disk_dir || a->block || a->types) && !a->profile) {
        fprintf(stderr, "st-bench: --disk-dir, --block and --types go with --profile\n");
        return 2;
    }
    if (a->profile) {
        if (a->model) fprintf(stderr, "st-bench: --profile measures the machine; -m %s is not used\n", a->model);
        if (a->threads > ST_BOARD_MAX_THREADS) return s_bad("-t", "(more than 64 with --profile)");
        return 0;
    }
    if (!a->model) {
        fprintf(stderr, "st-bench: -m MODEL is required (see --help)\n");
        return 2;
    }
    if (a->seqs && a->n_gen == 0) {
        fprintf(stderr, "st-bench: --seqs needs decode steps (-n > 0)\n");
        return 2;
    }
    if (a->n_prompt == 0 && a->n_gen == 0) {
        fprintf(stderr, "st-bench: -p 0 and -n 0: nothing to measure\n");
        return 2;
    }
    return 0;
}

/* CPU seconds used by the whole process: with -t 1 on a busy machine, a steadier
 * measure of the work per token than wall time. */
static double s_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Peak resident set in bytes: VmHWM, or ru_maxrss when /proc is absent. */
static uint64_t s_peak_rss(void) {
    uint64_t peak;
    st_proc_memory(NULL, &peak);
    struct rusage ru;
    if (peak == 0 && getrusage(RUSAGE_SELF, &ru) == 0) peak = (uint64_t)ru.ru_maxrss * 1024;
    return peak;
}

/* ---- bytes of weights a decode step reads -------------------------------- */

static uint64_t s_matrix_bytes(const st_weight_t *w) {
    return w->data ? (uint64_t)w->row_bytes * (uint64_t)w->n_rows : 0;
}

/* Per decode token: every dense matrix and norm once, n_expert_used experts'
 * gate, up and down per layer, the output head, one embedding row. Matrices
 * that are views of one fused tensor (attn_qkv) are counted by their rows, so
 * nothing twice. */
static uint64_t s_decode_bytes(const st_model_t *m) {
    const st_config_t *cfg = &m->cfg;
    uint64_t b = (uint64_t)m->tok_embd.row_bytes + s_matrix_bytes(&m->output_norm) + s_matrix_bytes(&m->output);
    for (int il = 0; il < cfg->n_layer; il++) {
        const st_layer_t *L = &m->layers[il];
        const st_weight_t *dense[] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_norm, &L->router};
        for (size_t i = 0; i < sizeof dense / sizeof dense[0]; i++) b += s_matrix_bytes(dense[i]);
        b += (uint64_t)cfg->n_expert_used *
             (s_matrix_bytes(&L->gate_exps) + s_matrix_bytes(&L->up_exps) + s_matrix_bytes(&L->down_exps));
    }
    return b;
}

/* ---- the tests ----------------------------------------------------------- */

typedef struct {
    char name[32];
    int n_prompt, n_gen, n_seq; /* n_seq > 1: batched decode */
    int n;
    double ts[MAX_REPS];
    double mean, sd;
    double cpu_s; /* process CPU time over all runs (all threads, spinning included) */
} test_result_t;

static void s_stats(test_result_t *r) {
    double s = 0.0, ss = 0.0;
    for (int i = 0; i < r->n; i++) s += r->ts[i];
    r->mean = s / r->n;
    for (int i = 0; i < r->n; i++) ss += (r->ts[i] - r->mean) * (r->ts[i] - r->mean);
    r->sd = r->n > 1 ? sqrt(ss / (r->n - 1)) : 0.0;
}

/* Tokens one run of the test decodes. */
static int s_test_tokens(const test_result_t *r) {
    return r->n_prompt ? r->n_prompt : r->n_gen * (r->n_seq > 1 ? r->n_seq : 1);
}

static uint64_t s_rng = 0x853c49e6748fea9bull;
static int32_t s_random_token(int n_vocab) {
    s_rng ^= s_rng << 13;
    s_rng ^= s_rng >> 7;
    s_rng ^= s_rng << 17;
    return (int32_t)(s_rng % (uint64_t)n_vocab);
}

/* Maps every weight page in before timing, as llama.cpp's loader does by copying
 * its weights: the tests then measure steady-state decoding, not the first
 * page faults on each expert. Returns a checksum so the reads stay. */
static unsigned s_touch_weights(const st_model_t *m) {
    unsigned sum = 0;
    for (int64_t i = 0; i < st_gguf_n_tensors(m->gguf); i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(m->gguf, i);
        const volatile uint8_t *p = t->data;
        for (size_t o = 0; o < t->nbytes; o += 4096) sum += p[o];
    }
    return sum;
}

/* One pp run: n_prompt random tokens in one batch into an empty cache; seconds or < 0. */
static double s_run_pp(st_ctx_t *c, st_kv_t *kv, int n_prompt, int32_t *toks, float *logits) {
    const int n_vocab = st_ctx_model(c)->cfg.n_vocab;
    for (int i = 0; i < n_prompt; i++) toks[i] = s_random_token(n_vocab);
    st_kv_clear(kv);
    double t0 = st_now_s();
    int rc = st_decode(c, kv, toks, n_prompt, logits, false);
    return rc < 0 ? -1.0 : st_now_s() - t0;
}

/* One tg run: n_gen single-token steps into an empty cache; seconds or < 0. */
static double s_run_tg(st_ctx_t *c, st_kv_t *kv, int n_gen, float *logits) {
    const int n_vocab = st_ctx_model(c)->cfg.n_vocab;
    st_kv_clear(kv);
    double t0 = st_now_s();
    for (int i = 0; i < n_gen; i++) {
        int32_t tok = s_random_token(n_vocab);
        if (st_decode(c, kv, &tok, 1, logits, false) < 0) return -1.0;
    }
    return st_now_s() - t0;
}

/* One batched tg run: n_seq sequences, n_gen steps of one token each, all
 * sequences in every step; seconds or < 0. */
static double s_run_tg_batch(st_ctx_t *c, st_kv_t **kvs, int n_seq, int n_gen, float *logits) {
    const int n_vocab = st_ctx_model(c)->cfg.n_vocab;
    int32_t toks[256];
    for (int s = 0; s < n_seq; s++) st_kv_clear(kvs[s]);
    double t0 = st_now_s();
    for (int i = 0; i < n_gen; i++) {
        for (int s = 0; s < n_seq; s++) toks[s] = s_random_token(n_vocab);
        if (st_decode_batch(c, kvs, toks, n_seq, logits) < 0) return -1.0;
    }
    return st_now_s() - t0;
}

static void s_print_markdown(const args_t *a, const st_model_t *m, const char *kname, uint64_t file_size,
                             const test_result_t *res, int n_res, double load_ms, uint64_t rss, uint64_t dec_bytes,
                             double bw) {
    char desc[256];
    snprintf(desc, sizeof desc, "smallthinker %dx%d %s", m->cfg.n_embd, m->cfg.n_layer,
             st_type_name(m->layers[0].wq.type));
    printf("| model | size | threads | kernels | test | t/s | CPU ms/token |\n");
    printf("| --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
    for (int i = 0; i < n_res; i++)
        printf("| %s | %.2f GiB | %ld | %s | %s | %.2f ± %.2f | %.2f |\n", desc, file_size / 1073741824.0, a->threads,
               kname, res[i].name, res[i].mean, res[i].sd, 1e3 * res[i].cpu_s / (res[i].n * s_test_tokens(&res[i])));
    printf("\n");
    printf("load: %.1f ms; peak RSS: %.1f MiB (%.3fx the %.1f MiB file)\n", load_ms, rss / 1048576.0,
           (double)rss / (double)file_size, file_size / 1048576.0);
    printf("decode reads %.1f MiB of weights per token", dec_bytes / 1048576.0);
    if (bw > 0) {
        printf("; memory bandwidth (%ld threads, read): %.2f GB/s", a->threads, bw / 1e9);
        for (int i = 0; i < n_res; i++)
            if (res[i].n_gen > 0 && res[i].n_seq <= 1)
                printf("; %s at %.2f GB/s = %.1f%% of it", res[i].name, res[i].mean * dec_bytes / 1e9,
                       100.0 * res[i].mean * dec_bytes / bw);
    }
    printf("\n");
}

static void s_print_json(const args_t *a, const char *kname, uint64_t file_size, const test_result_t *res, int n_res,
                         double load_ms, uint64_t rss, uint64_t dec_bytes, double bw) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model_filename", a->model);
    cJSON_AddNumberToObject(o, "model_size", (double)file_size);
    cJSON_AddNumberToObject(o, "n_threads", (double)a->threads);
    cJSON_AddStringToObject(o, "kernels", kname);
    cJSON_AddNumberToObject(o, "load_ms", load_ms);
    cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)rss);
    cJSON_AddNumberToObject(o, "decode_weight_bytes_per_token", (double)dec_bytes);
    cJSON_AddNumberToObject(o, "mem_bandwidth_bytes_per_s", bw);
    cJSON *tests = cJSON_AddArrayToObject(o, "tests");
    for (int i = 0; i < n_res; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddStringToObject(t, "name", res[i].name);
        cJSON_AddNumberToObject(t, "n_prompt", res[i].n_prompt);
        cJSON_AddNumberToObject(t, "n_gen", res[i].n_gen);
        cJSON_AddNumberToObject(t, "n_seq", res[i].n_seq > 1 ? res[i].n_seq : 1);
        cJSON_AddNumberToObject(t, "avg_ts", res[i].mean);
        cJSON_AddNumberToObject(t, "stddev_ts", res[i].sd);
        cJSON_AddNumberToObject(t, "cpu_ms_per_token", 1e3 * res[i].cpu_s / (res[i].n * s_test_tokens(&res[i])));
        cJSON *s = cJSON_AddArrayToObject(t, "samples_ts");
        for (int k = 0; k < res[i].n; k++) cJSON_AddItemToArray(s, cJSON_CreateNumber(res[i].ts[k]));
        if (res[i].n_gen > 0 && res[i].n_seq <= 1 && bw > 0)
            cJSON_AddNumberToObject(t, "bandwidth_fraction", res[i].mean * dec_bytes / bw);
        cJSON_AddItemToArray(tests, t);
    }
    char *txt = cJSON_Print(o);
    if (txt) printf("%s\n", txt);
    free(txt);
    cJSON_Delete(o);
}

/* --profile: measures this machine (plan/measure.c) and writes the board
 * profile atomically; also prints it. */
static int s_profile(const args_t *a) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", a->profile);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = 0;
    else
        strcpy(dir, ".");
    st_measure_opts_t o = {
        .threads = (int)a->threads, .disk_dir = a->disk_dir ? a->disk_dir : dir, .block = a->block, .types = a->types};
    st_board_t b;
    if (st_measure_board(&o, &b) < 0) return 1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", a->profile, (int)getpid());
    FILE *f = fopen(tmp, "w");
    int rc = f ? st_board_save(&b, f) : -1;
    if (f && fclose(f) != 0) rc = -1;
    if (rc < 0 || rename(tmp, a->profile) != 0) {
        fprintf(stderr, "st-bench: cannot write %s: %s\n", a->profile, strerror(errno));
        unlink(tmp);
        return 1;
    }
    st_board_save(&b, stdout);
    fprintf(stderr, "st-bench: wrote %s (use it as a board: st-plan --boards %s:N)\n", a->profile, a->profile);
    return 0;
}

int main(int argc, char **argv) {
    args_t a = {0};
    int rc = s_parse_args(argc, argv, &a);
    if (rc) return rc;
    if (a.profile) return s_profile(&a);

    /* bandwidth first, while the model is not resident, in a child process */
    const double bw = a.no_bw ? 0.0 : st_measure_bandwidth((int)a.threads, NULL);

    double t0 = st_now_s();
    st_model_t *m = a.mem ? st_model_load(a.model) : st_model_load_resident(a.model); /* as st-run */
    double load_ms = 1e3 * (st_now_s() - t0);
    if (!m) return 1;
    const uint64_t file_size = st_gguf_file_size(m->gguf);

    int status = 1;
    st_ctx_params_t cp = st_ctx_default_params();
    cp.n_threads = (int)a.threads;
    cp.kv_type = a.kv_type;
    cp.n_batch = a.n_prompt > 0 ? (int)a.n_prompt : 1; /* the prompt in one batch, as llama-bench */
    if (a.seqs > cp.n_batch) cp.n_batch = (int)a.seqs;
    cp.n_ctx = (int)(a.n_prompt > a.n_gen ? a.n_prompt : a.n_gen) + 1;
    st_ctx_t *c = st_ctx_new(m, &cp);
    st_kv_t *kv = c ? st_kv_new(c, cp.n_ctx) : NULL;
    const int n_seq = a.seqs > 1 ? (int)a.seqs : 1;
    float *logits = malloc((size_t)n_seq * m->cfg.n_vocab * sizeof *logits);
    int32_t *toks = malloc((size_t)(a.n_prompt + 1) * sizeof *toks);
    st_kv_t **kvs = calloc((size_t)n_seq, sizeof *kvs);
    test_result_t res[3];
    int n_res = 0;
    st_expert_cache_t *ec = NULL;
    if (!c || !kv || !logits || !toks || !kvs) goto out;
    for (int s = 0; s < n_seq && a.seqs; s++)
        if (!(kvs[s] = st_kv_new(c, (int)a.n_gen + 1))) goto out;
    /* --mem: experts come from storage through a bounded cache; touching them
     * through the mapping would fill the page cache */
    if (a.mem && !(ec = st_cli_mem_install("st-bench", c, a.mem))) goto out;

    /* warm-up: faults the mapped weights in and wakes the threads */
    if (!ec) st_log(ST_LOG_DEBUG, "weights touched (%u)", s_touch_weights(m));
    if ((a.n_prompt > 0 && s_run_pp(c, kv, (int)a.n_prompt, toks, logits) < 0) ||
        (a.n_gen > 0 && s_run_tg(c, kv, a.n_gen < 4 ? (int)a.n_gen : 4, logits) < 0)) {
        fprintf(stderr, "st-bench: decoding failed\n");
        goto out;
    }
    if (a.n_prompt > 0) {
        test_result_t *r = &res[n_res++];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "pp%ld", a.n_prompt);
        r->n_prompt = (int)a.n_prompt;
    }
    if (a.n_gen > 0) {
        test_result_t *r = &res[n_res++];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "tg%ld", a.n_gen);
        r->n_gen = (int)a.n_gen;
    }
    if (a.seqs) {
        test_result_t *r = &res[n_res++];
        memset(r, 0, sizeof *r);
        snprintf(r->name, sizeof r->name, "tg%ldx%d", a.n_gen, n_seq);
        r->n_gen = (int)a.n_gen;
        r->n_seq = n_seq;
    }
    /* repetitions interleave the tests so that a noisy neighbour hits both alike */
    for (int rep = 0; rep < a.reps; rep++) {
        for (int i = 0; i < n_res; i++) {
            test_result_t *r = &res[i];
            const double c0 = s_cpu_now();
            double dt = r->n_prompt    ? s_run_pp(c, kv, r->n_prompt, toks, logits)
                        : r->n_seq > 1 ? s_run_tg_batch(c, kvs, r->n_seq, r->n_gen, logits)
                                       : s_run_tg(c, kv, r->n_gen, logits);
            r->cpu_s += s_cpu_now() - c0;
            if (dt <= 0) {
                fprintf(stderr, "st-bench: decoding failed\n");
                goto out;
            }
            r->ts[r->n++] = s_test_tokens(r) / dt;
        }
    }
    for (int i = 0; i < n_res; i++) s_stats(&res[i]);

    const uint64_t rss = s_peak_rss();
    const uint64_t dec_bytes = s_decode_bytes(m);
    const char *kname = st_kernels_select()->name;
    if (a.json)
        s_print_json(&a, kname, file_size, res, n_res, load_ms, rss, dec_bytes, bw);
    else
        s_print_markdown(&a, m, kname, file_size, res, n_res, load_ms, rss, dec_bytes, bw);
    if (ec) st_cli_mem_print_stats(ec, a.json ? stderr : stdout);
    status = 0;
out:
    if (c) st_ctx_set_moe(c, NULL);
    st_expert_cache_destroy(&ec);
    for (int s = 0; kvs && s < n_seq; s++) st_kv_destroy(&kvs[s]);
    free(kvs);
    free(toks);
    free(logits);
    st_kv_destroy(&kv);
    st_ctx_destroy(&c);
    st_model_destroy(&m);
    return status;
}
