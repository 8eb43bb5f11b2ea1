/* fuzz_tokenizer: st_tokenize on any bytes (invalid UTF-8, NULs, special-token
 * fragments) with a small byte-level BPE vocabulary built in memory at start:
 * the 256 byte tokens, a few merges, and Qwen's chat special tokens, with
 * the qwen2 pre-tokenizer (the same regex path as the real model). First
 * input byte: bit 0 = parse_special, bit 1 = a too-small output buffer. The
 * ids must all be in the vocabulary and their pieces must render. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "st_log.h"
#include "tokenizer.h"

static st_tokenizer_t *g_tok;
static st_gguf_t *g_gguf;
static char *g_mem;
static size_t g_mem_len;

/* GPT-2's printable stand-in for byte b, as UTF-8. */
static void s_byte_text(unsigned b, char out[3]) {
    unsigned c = b;
    if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE))
        c = 0x100 + (b <= 0x20 ? b : b <= 0xA0 ? 33 + (b - 0x7F) : 67);
    if (c < 0x80) {
        out[0] = (char)c, out[1] = '\0';
    } else {
        out[0] = (char)(0xC0 | (c >> 6)), out[1] = (char)(0x80 | (c & 0x3F)), out[2] = '\0';
    }
}

/* Frees the vocabulary at exit (also keeps LeakSanitizer from reporting it). */
static void s_cleanup(void) {
    st_tokenizer_destroy(&g_tok);
    st_gguf_destroy(&g_gguf);
    free(g_mem);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (g_tok) return 0;
    if (!getenv("ST_LOG")) st_log_set_level((st_log_level_t)-1); /* silent: refusals are the normal case */
    static char bytes[256][3];
    static const char *const extra[] = {"he", "ll", "hell", "hello", "Ġw", "Ġwor", "Ġworld", "12", "123",
                                        "<|im_start|>", "<|im_end|>", "<|endoftext|>", NULL};
    static const int32_t extra_type[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3};
    static const char *const merges[] = {"h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "Ġwo r", "Ġwor l",
                                         "Ġworl d", "1 2", "12 3", "o r", "r l", "Ġwor ld", NULL};
    const char *toks[512];
    int32_t types[512];
    int n = 0;
    for (unsigned b = 0; b < 256; b++) {
        s_byte_text(b, bytes[b]);
        types[n] = 1;
        toks[n++] = bytes[b];
    }
    for (int i = 0; extra[i]; i++) types[n] = extra_type[i], toks[n++] = extra[i];
    int n_merges = 0;
    while (merges[n_merges]) n_merges++;
    st_gguf_writer_t *w = st_gguf_writer_new(0);
    FILE *f = open_memstream(&g_mem, &g_mem_len);
    if (!w || !f || st_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2") ||
        st_gguf_writer_add_str(w, "tokenizer.ggml.pre", "qwen2") ||
        st_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, (uint64_t)n) ||
        st_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", ST_GGUF_INT32, types, (uint64_t)n) ||
        st_gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, NULL, (uint64_t)n_merges) ||
        st_gguf_writer_add_i64(w, "tokenizer.ggml.eos_token_id", 266) || st_gguf_writer_begin_stream(w, f) ||
        st_gguf_writer_finish(w, NULL)) {
        fprintf(stderr, "fuzz_tokenizer: cannot build the vocabulary\n");
        abort();
    }
    fclose(f);
    st_gguf_writer_destroy(&w);
    g_gguf = st_gguf_open_memory(g_mem, g_mem_len);
    atexit(s_cleanup);
    g_tok = g_gguf ? st_tokenizer_from_gguf(g_gguf) : NULL;
    if (!g_tok) {
        fprintf(stderr, "fuzz_tokenizer: vocabulary refused\n");
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) LLVMFuzzerInitialize(NULL, NULL);
    if (size < 1) return 0;
    const bool special = data[0] & 1, small = data[0] & 2;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    int n = st_tokenize(g_tok, text, len, special, NULL, 0);
    if (n < 0) return 0;
    const int cap = small && n > 0 ? n - 1 : n;
    int32_t *ids = malloc(((size_t)cap + 1) * sizeof *ids);
    if (!ids) return 0;
    int got = st_tokenize(g_tok, text, len, special, ids, cap);
    if (got != n) abort(); /* the count must not depend on the buffer */
    const int32_t V = st_tokenizer_n_vocab(g_tok);
    char piece[256];
    for (int i = 0; i >= 0 && i < got && i < cap; i++) {
        if (ids[i] < 0 || ids[i] >= V) abort();
        (void)st_token_to_piece(g_tok, ids[i], true, piece, sizeof piece);
        (void)st_token_is_eog(g_tok, ids[i]);
    }
    free(ids);
    return 0;
}
