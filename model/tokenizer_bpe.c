/* tokenizer_bpe: plain text -> token ids, the way llama.cpp's
 * llm_tokenizer_bpe_session does it for the "qwen2" pre-tokenizer.
 *
 * 1. Decode the bytes into code points as llama.cpp does (each byte that
 *    starts no complete UTF-8 sequence becomes U+FFFD; overlong forms and
 *    surrogates are taken as they come) and write them back as UTF-8.
 * 2. Split that with the qwen2 regex, run by PCRE2 (JIT when available).
 *    llama.cpp runs a hand-written equivalent with its own Unicode 15.1
 *    tables; the character classes below are written so PCRE2 agrees with
 *    those tables: an explicit whitespace set (llama.cpp's, which leaves out
 *    U+180E that PCRE2's \s has), and the letters and numbers Unicode 15.0/15.1
 *    added, which PCRE2 10.42 (Unicode 14) does not know.
 * 3. Byte-encode each piece (GPT-2 map: every byte becomes one printable code
 *    point) and merge adjacent symbols by rank, lowest first, leftmost among
 *    equals, with a binary heap: llama.cpp's queue order exactly.
 * 4. Each final symbol is a token; one that is not falls back to the tokens
 *    of its single bytes, skipping bytes that have none (as llama.cpp).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "st_log.h"
#include "tokenizer_internal.h"

/* llama.cpp's whitespace set (Unicode White_Space). */
#define S_WS                                                                                                           \
    "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
/* \p{L} plus the letters of Unicode 15.0 and 15.1 */
#define S_L                                                                                                            \
    "\\p{L}\\x{1123F}\\x{11240}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}\\x{13441}-\\x{13446}"    \
    "\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}\\x{2B739}"                    \
    "\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}"
/* \p{N} plus the numbers of Unicode 15.0 */
#define S_N "\\p{N}\\x{11F50}-\\x{11F59}\\x{1D2C0}-\\x{1D2D3}\\x{1E4F0}-\\x{1E4F9}"

/* (?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static const char s_qwen2_regex[] = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
                                    "|[^\\r\\n" S_L S_N "]?[" S_L "]+"
                                    "|[" S_N "]"
                                    "| ?[^" S_WS S_L S_N "]+[\\r\\n]*"
                                    "|[" S_WS "]*[\\r\\n]+"
                                    "|[" S_WS "]+(?![^" S_WS "])"
                                    "|[" S_WS "]+";

struct st_pretok {
    pcre2_code *re;
};

int st_pretok_new(st_tokenizer_t *t) {
    int err;
    PCRE2_SIZE at;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)s_qwen2_regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(err, msg, sizeof msg);
        return st_fail(ST_EUNSUP, "qwen2 regex at %zu: %s", (size_t)at, (const char *)msg);
    }
    int jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    char uver[32] = "?";
    pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, uver);
    /* a PCRE2 on Unicode 16+ knows letters llama.cpp's 15.1 tables do not: rare scripts may split differently */
    st_log(ST_LOG_DEBUG, "PCRE2 %s (Unicode %s)", jit == 0 ? "JIT" : "interpreter", uver);
    t->pre = st_malloc(sizeof *t->pre);
    if (!t->pre) {
        pcre2_code_free(re);
        return st_fail(ST_ENOMEM, "pre-tokenizer");
    }
    t->pre->re = re;
    return 0;
}

void st_pretok_destroy(st_tokenizer_t *t) {
    if (!t->pre) return;
    pcre2_code_free(t->pre->re);
    free(t->pre);
    t->pre = NULL;
}

/* ---------------------------------------------------------------- scratch */

typedef struct {
    int32_t start; /* in the byte-encoded word */
    int32_t n;     /* bytes; 0 once merged into its left neighbour */
    int32_t prev, next;
} s_sym_t;

typedef struct {
    int32_t rank, left, right, size;
} s_pair_t;

struct st_tok_scratch {
    char *norm, *re; /* the fragment re-encoded; re: copy for PCRE2 when norm holds surrogates */
    size_t norm_cap, re_cap;
    char *enc; /* byte-encoded word */
    size_t enc_cap;
    s_sym_t *sym;
    size_t sym_cap;
    s_pair_t *heap;
    size_t heap_cap, heap_n;
    pcre2_match_data *md;
};

st_tok_scratch_t *st_tok_scratch_new(const st_tokenizer_t *t) {
    st_tok_scratch_t *s = st_calloc(1, sizeof *s);
    if (!s) {
        st_fail(ST_ENOMEM, "scratch");
        return NULL;
    }
    s->md = pcre2_match_data_create_from_pattern(t->pre->re, NULL);
    if (!s->md) {
        free(s);
        st_fail(ST_ENOMEM, "match data");
        return NULL;
    }
    return s;
}

void st_tok_scratch_destroy(st_tok_scratch_t **sp) {
    if (!sp || !*sp) return;
    st_tok_scratch_t *s = *sp;
    pcre2_match_data_free(s->md);
    free(s->norm);
    free(s->re);
    free(s->enc);
    free(s->sym);
    free(s->heap);
    free(s);
    *sp = NULL;
}

/* p grown to hold need elements of size el (at least one), or NULL (logged; p is still valid). */
static void *s_grow(void *p, size_t *cap, size_t need, size_t el) {
    if (need == 0) need = 1;
    if (p && need <= *cap) return p;
    size_t c = *cap > 64 ? *cap : 64;
    while (c < need) c *= 2;
    void *q = c <= SIZE_MAX / el ? st_realloc(p, c * el) : NULL;
    if (!q) {
        st_fail(ST_ENOMEM, "%zu elements of %zu B", need, el);
        return NULL;
    }
    *cap = c;
    return q;
}

#define S_RESERVE(ptr, cap, need)                                                                                      \
    do {                                                                                                               \
        void *p_ = s_grow((ptr), &(cap), (need), sizeof *(ptr));                                                       \
        if (!p_) return ST_ENOMEM;                                                                                     \
        (ptr) = p_;                                                                                                    \
    } while (0)

/* ---------------------------------------------------------------- BPE */

static bool s_pair_less(const s_pair_t *a, const s_pair_t *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void s_heap_push(st_tok_scratch_t *s, s_pair_t p) {
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!s_pair_less(&p, &s->heap[up])) break;
        s->heap[i] = s->heap[up];
        i = up;
    }
    s->heap[i] = p;
}

static s_pair_t s_heap_pop(st_tok_scratch_t *s) {
    s_pair_t top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && s_pair_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!s_pair_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

/* Queues the merge of symbols l and r (adjacent, so their bytes are contiguous) if there is one. */
static void s_add_pair(const st_tokenizer_t *t, st_tok_scratch_t *s, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const s_sym_t *a = &s->sym[l], *b = &s->sym[r];
    int32_t rank = st_tok_merge_rank(t, s->enc + a->start, (size_t)a->n, (size_t)b->n);
    if (rank >= 0) s_heap_push(s, (s_pair_t){rank, l, r, a->n + b->n});
}

/* One pre-tokenized word (bytes w[0..n)) -> tokens. */
static int s_bpe_word(const st_tokenizer_t *t, st_tok_scratch_t *s, const uint8_t *w, size_t n, st_tok_out_t *out) {
    if (n > INT32_MAX / 3) return st_fail(ST_ERANGE, "word of %zu B", n);
    S_RESERVE(s->enc, s->enc_cap, 2 * n);
    S_RESERVE(s->sym, s->sym_cap, n);
    S_RESERVE(s->heap, s->heap_cap, 3 * n); /* n-1 pairs, then at most 2 per merge */

    /* byte-encode: every byte becomes one symbol of 1 or 2 bytes */
    int32_t e = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t len = t->byte_enc_len[w[i]];
        memcpy(s->enc + e, t->byte_enc[w[i]], len);
        s->sym[i] = (s_sym_t){e, len, (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
        e += len;
    }

    s->heap_n = 0;
    for (size_t i = 1; i < n; i++) s_add_pair(t, s, (int32_t)i - 1, (int32_t)i);
    while (s->heap_n) {
        s_pair_t p = s_heap_pop(s);
        s_sym_t *l = &s->sym[p.left], *r = &s->sym[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size) continue; /* outdated: a side has changed */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s->sym[r->next].prev = p.left;
        s_add_pair(t, s, l->prev, p.left);
        s_add_pair(t, s, p.left, l->next);
    }

    for (int32_t i = 0; i >= 0; i = s->sym[i].next) {
        const char *sym = s->enc + s->sym[i].start;
        int32_t id = st_tok_lookup(t, sym, (size_t)s->sym[i].n);
        if (id >= 0) {
            st_tok_out_push(out, id);
            continue;
        }
        for (int32_t k = 0; k < s->sym[i].n; k++) { /* llama.cpp: each byte of the encoded text alone */
            int32_t b = st_tok_lookup(t, sym + k, 1);
            if (b >= 0) st_tok_out_push(out, b);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- fragment */

int st_tok_bpe_fragment(const st_tokenizer_t *t, st_tok_scratch_t *s, const char *text, size_t len, st_tok_out_t *out) {
    if (len > (SIZE_MAX - 16) / 3 || len > (size_t)PCRE2_SIZE_MAX / 4) return st_fail(ST_ERANGE, "text of %zu B", len);
    S_RESERVE(s->norm, s->norm_cap, 3 * len); /* an invalid byte becomes 3 (U+FFFD) */
    int rc;

    /* 1. code points as llama.cpp reads them, written back as UTF-8 */
    const uint8_t *in = (const uint8_t *)text;
    size_t n = 0;
    bool surrogates = false;
    for (size_t i = 0; i < len;) {
        if (in[i] < 0x80) { /* ASCII fast path */
            s->norm[n++] = (char)in[i++];
            continue;
        }
        uint32_t cpt = st_tok_utf8_next(in, len, &i);
        surrogates |= cpt >= 0xD800 && cpt <= 0xDFFF;
        n += st_tok_utf8_put(cpt, (uint8_t *)s->norm + n);
    }
    /* PCRE2 wants valid UTF-8: stand in U+E000 (same length, same class: neither letter, number nor space) */
    const char *subject = s->norm;
    if (surrogates) {
        S_RESERVE(s->re, s->re_cap, n);
        memcpy(s->re, s->norm, n);
        for (size_t i = 0; i + 2 < n; i++) {
            uint8_t c = (uint8_t)s->re[i], c1 = (uint8_t)s->re[i + 1];
            if (c == 0xED && c1 >= 0xA0) { /* ED A0..BF xx = U+D800..DFFF */
                memcpy(s->re + i, "\xEE\x80\x80", 3);
                i += 2;
            } else if (c >= 0xC0) { /* skip the rest of any other sequence */
                i += c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
            }
        }
        subject = s->re;
    }

    /* 2. split; every character is matched by some alternative, so the words tile the text */
    size_t pos = 0;
    while (pos < n) {
        int m = pcre2_match(t->pre->re, (PCRE2_SPTR)subject, n, pos, PCRE2_NO_UTF_CHECK, s->md, NULL);
        size_t ws = n, we = n;
        if (m >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
            ws = ov[0];
            we = ov[1];
        } else if (m != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(m, msg, sizeof msg);
            return st_fail(ST_EINVAL, "pre-tokenizer regex at byte %zu: %s", pos, (const char *)msg);
        }
        if (ws > pos && (rc = s_bpe_word(t, s, (const uint8_t *)s->norm + pos, ws - pos, out)) < 0) return rc;
        if (we == ws && ws < n) /* cannot happen with this regex; never loop forever */
            for (we = ws + 1; we < n && ((uint8_t)subject[we] & 0xC0) == 0x80; we++) {
            }
        if (we > ws && (rc = s_bpe_word(t, s, (const uint8_t *)s->norm + ws, we - ws, out)) < 0) return rc;
        pos = we;
    }
    return 0;
}
