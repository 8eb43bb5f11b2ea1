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
#include "fuzz_vocab.h"
#include "st_log.h"
#include "tokenizer.h"

static st_tokenizer_t *g_tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (g_tok) return 0;
    if (!getenv("ST_LOG")) st_log_set_level((st_log_level_t)-1); /* silent: refusals are the normal case */
    g_tok = st_fuzz_vocab();
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
