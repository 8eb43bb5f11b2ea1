/* tokenizer_internal: what model/tokenizer.c (vocabulary, special tokens,
 * pieces) and model/tokenizer_bpe.c (pre-tokenizer regex, byte encoding, BPE
 * merges) share. Not part of the public API: include only from those files.
 */
#ifndef ST_TOKENIZER_INTERNAL_H
#define ST_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Token attributes: the bits of llama.cpp's llama_token_attr. */
enum {
    ST_TOK_UNKNOWN = 1 << 0,
    ST_TOK_UNUSED = 1 << 1,
    ST_TOK_NORMAL = 1 << 2,
    ST_TOK_CONTROL = 1 << 3,
    ST_TOK_USER_DEFINED = 1 << 4,
    ST_TOK_BYTE = 1 << 5,
};

typedef struct {
    uint32_t off; /* text in t->arena, NUL-terminated there */
    uint32_t len;
    uint16_t attr; /* ST_TOK_* */
} st_tok_entry_t;

typedef struct {
    uint32_t off;   /* "left right" in t->arena */
    uint32_t len_a; /* bytes of left; right starts at off + len_a + 1 */
    uint32_t len_b;
} st_tok_merge_t; /* rank = index in t->merge */

/* Open-addressing slot: the key's hash beside the index it maps to (-1: empty),
 * so probing compares hashes without touching the entries. */
typedef struct {
    uint32_t hash;
    int32_t idx;
} st_tok_slot_t;

struct st_pretok; /* compiled pre-tokenizer regex (tokenizer_bpe.c) */

struct st_tokenizer {
    int32_t n_vocab;
    st_tok_entry_t *tok; /* [n_vocab] */
    char *arena;         /* token texts, then merge strings */
    size_t arena_len, arena_cap;
    st_tok_slot_t *tok_slot; /* text -> id */
    uint32_t tok_mask;

    st_tok_merge_t *merge; /* [n_merge], by rank */
    int32_t n_merge;
    st_tok_slot_t *merge_slot; /* "left right" -> rank */
    uint32_t merge_mask;

    int32_t *special; /* CONTROL/USER_DEFINED/UNKNOWN ids, longest text first */
    int32_t n_special;
    int32_t *eog; /* end-of-generation ids */
    int32_t n_eog;

    int32_t bos_id, eos_id; /* -1 when none */
    bool add_bos;

    uint8_t byte_enc[256][2]; /* GPT-2 byte -> UTF-8 of its printable stand-in */
    uint8_t byte_enc_len[256];

    struct st_pretok *pre;
};

/* Sink for token ids: writes while there is room, counts everything. */
typedef struct {
    int32_t *ids;
    size_t cap;
    size_t n;
} st_tok_out_t;

static inline void st_tok_out_push(st_tok_out_t *o, int32_t id) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* FNV-1a over len bytes, continuing from h (start with ST_TOK_HASH_INIT). */
#define ST_TOK_HASH_INIT 2166136261u
static inline uint32_t st_tok_hash(uint32_t h, const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* Next code point of s[*i..n), decoded as llama.cpp's unicode_cpt_from_utf8:
 * no check for overlong forms or surrogates; a byte that does not start a
 * complete sequence is U+FFFD and advances one byte. One divergence: a 4-byte
 * form above U+10FFFF (llama.cpp throws on it later) is also U+FFFD + 1 byte. */
static inline uint32_t st_tok_utf8_next(const uint8_t *s, size_t n, size_t *i) {
    size_t p = *i;
    uint8_t c = s[p];
    if (c < 0x80) {
        *i = p + 1;
        return c;
    }
    size_t k = (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 0;
    uint32_t cpt = k == 1 ? (c & 0x1Fu) : k == 2 ? (c & 0x0Fu) : (c & 0x07u);
    if (k == 0 || n - p <= k) goto bad; /* lead byte of no form, or sequence cut by the end */
    for (size_t j = 1; j <= k; j++) {
        if ((s[p + j] & 0xC0) != 0x80) goto bad;
        cpt = (cpt << 6) | (s[p + j] & 0x3Fu);
    }
    if (cpt > 0x10FFFF) goto bad;
    *i = p + k + 1;
    return cpt;
bad:
    *i = p + 1;
    return 0xFFFD;
}

/* UTF-8 of cpt (<= 0x10FFFF, surrogates encoded as any other) into u; returns its length. */
static inline size_t st_tok_utf8_put(uint32_t cpt, uint8_t u[4]) {
    if (cpt < 0x80) {
        u[0] = (uint8_t)cpt;
        return 1;
    }
    if (cpt < 0x800) {
        u[0] = (uint8_t)(0xC0 | (cpt >> 6));
        u[1] = (uint8_t)(0x80 | (cpt & 0x3F));
        return 2;
    }
    if (cpt < 0x10000) {
        u[0] = (uint8_t)(0xE0 | (cpt >> 12));
        u[1] = (uint8_t)(0x80 | ((cpt >> 6) & 0x3F));
        u[2] = (uint8_t)(0x80 | (cpt & 0x3F));
        return 3;
    }
    u[0] = (uint8_t)(0xF0 | (cpt >> 18));
    u[1] = (uint8_t)(0x80 | ((cpt >> 12) & 0x3F));
    u[2] = (uint8_t)(0x80 | ((cpt >> 6) & 0x3F));
    u[3] = (uint8_t)(0x80 | (cpt & 0x3F));
    return 4;
}

/* Id of the token whose text is s[0..len), or -1. */
int32_t st_tok_lookup(const st_tokenizer_t *t, const char *s, size_t len);
/* Rank of the merge "a b" where a = s[0..len_a) and b = s[len_a..len_a+len_b), or -1. */
int32_t st_tok_merge_rank(const st_tokenizer_t *t, const char *s, size_t len_a, size_t len_b);

/* Pre-tokenizer (tokenizer_bpe.c). */
int st_pretok_new(st_tokenizer_t *t);
void st_pretok_destroy(st_tokenizer_t *t);

typedef struct st_tok_scratch st_tok_scratch_t;
/* Per-call working memory, so one tokenizer serves many threads. */
st_tok_scratch_t *st_tok_scratch_new(const st_tokenizer_t *t);
void st_tok_scratch_destroy(st_tok_scratch_t **s);

/* Tokenizes one fragment of plain text (no special tokens in it): UTF-8
 * decoding as llama.cpp, qwen2 regex split, byte encoding, BPE. 0 or ST_E*. */
int st_tok_bpe_fragment(const st_tokenizer_t *t, st_tok_scratch_t *s, const char *text, size_t len, st_tok_out_t *out);

#endif
