/* fuzz_vocab: the small in-memory vocabulary of the tokenizer and API
 * harnesses (see fuzz_vocab.h). */
#include "fuzz_vocab.h"

#include <stdio.h>
#include <stdlib.h>

#include "gguf.h"
#include "gguf_writer.h"

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

st_tokenizer_t *st_fuzz_vocab(void) {
    if (g_tok) return g_tok;
    static char bytes[256][3];
    static const char *const extra[] = {"he",     "ll", "hell", "hello",        "Ġw",         "Ġwor",
                                        "Ġworld", "12", "123",  "<|im_start|>", "<|im_end|>", "<|endoftext|>",
                                        NULL};
    static const int32_t extra_type[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3};
    static const char *const merges[] = {"h e",     "l l", "he ll", "hell o", "Ġ w", "Ġw o",    "Ġwo r", "Ġwor l",
                                         "Ġworl d", "1 2", "12 3",  "o r",    "r l", "Ġwor ld", NULL};
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
        fprintf(stderr, "fuzz_vocab: cannot build the vocabulary\n");
        abort();
    }
    fclose(f);
    st_gguf_writer_destroy(&w);
    g_gguf = st_gguf_open_memory(g_mem, g_mem_len);
    atexit(s_cleanup);
    g_tok = g_gguf ? st_tokenizer_from_gguf(g_gguf, NULL) : NULL;
    if (!g_tok) {
        fprintf(stderr, "fuzz_vocab: vocabulary refused\n");
        abort();
    }
    return g_tok;
}
