/* tokenizer: the vocabulary side of the byte-level BPE tokenizer, built to give
 * the ids llama.cpp gives (src/llama-vocab.cpp, tokenizer.ggml.model "gpt2",
 * pre "qwen2").
 *
 * Everything the GGUF holds is copied into one arena, so the tokenizer
 * outlives the file. Two open-addressing hash tables index it: token text ->
 * id, and merge string "left right" -> rank (the merge's index in
 * tokenizer.ggml.merges). Merges are looked up by their text, as llama.cpp's
 * bpe_ranks map does, so a merge whose halves are not tokens behaves exactly
 * as there (it may fire; its result falls back to byte tokens).
 *
 * Token attributes follow llama.cpp: the GGUF token type, then overrides by
 * text (EOT/FIM/EOG-looking tokens become CONTROL, CONTROL tokens containing
 * "unused" become UNUSED). The end-of-generation set is derived by text as
 * llama.cpp does it. Special-token text is split out of the input before the
 * regex: every CONTROL/UNKNOWN token when parse_special, USER_DEFINED tokens
 * always, longest token text first over the whole input
 * (tokenizer_st_partition). Plain text goes to tokenizer_bpe.c.
 *
 * Deliberately not reproduced: llama.cpp's fixes for other families
 * (gpt-oss <|channel|>..., <|end|> vs <|return|>, gemma4 </s>), LSTRIP/RSTRIP
 * attributes (set only for phi-3 and BERT-like models), add_eos_token.
 */
#include "tokenizer.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "st_log.h"
#include "tokenizer_internal.h"

/* GGUF token types (llama_token_type). */
enum {
    S_TYPE_UNDEFINED,
    S_TYPE_NORMAL,
    S_TYPE_UNKNOWN,
    S_TYPE_CONTROL,
    S_TYPE_USER_DEFINED,
    S_TYPE_UNUSED,
    S_TYPE_BYTE,
};

#define S_KEY_TOKENS "tokenizer.ggml.tokens"
#define S_KEY_TYPES "tokenizer.ggml.token_type"
#define S_KEY_MERGES "tokenizer.ggml.merges"

/* ---------------------------------------------------------------- arena, hash tables */

static int s_arena_add(st_tokenizer_t *t, const char *s, size_t len, uint32_t *off) {
    if (len > UINT32_MAX - 1 || t->arena_len + len + 1 > UINT32_MAX)
        return st_fail(ST_ERANGE, "tokenizer strings exceed 4 GiB");
    if (t->arena_len + len + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : (size_t)1 << 20;
        while (cap < t->arena_len + len + 1) cap *= 2;
        char *p = st_realloc(t->arena, cap);
        if (!p) return st_fail(ST_ENOMEM, "tokenizer arena of %zu B", cap);
        t->arena = p;
        t->arena_cap = cap;
    }
    if (len) memcpy(t->arena + t->arena_len, s, len);
    t->arena[t->arena_len + len] = '\0';
    *off = (uint32_t)t->arena_len;
    t->arena_len += len + 1;
    return 0;
}

/* Power of two >= 2n (load factor <= 1/2), at least 16. */
static int s_table_new(size_t n, st_tok_slot_t **slot, uint32_t *mask) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    if (cap > (size_t)1 << 31) return st_fail(ST_ERANGE, "hash table for %zu entries", n);
    *slot = st_malloc(cap * sizeof **slot);
    if (!*slot) return st_fail(ST_ENOMEM, "hash table of %zu slots", cap);
    for (size_t i = 0; i < cap; i++) (*slot)[i] = (st_tok_slot_t){0, -1};
    *mask = (uint32_t)(cap - 1);
    return 0;
}

/* First slot to probe: FNV-1a's low bits mixed with its high ones. */
static uint32_t s_home(uint32_t h, uint32_t mask) {
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    return h & mask;
}

/* Slot holding text s (hash h), or the empty slot where it would go. */
static uint32_t s_tok_slot(const st_tokenizer_t *t, const char *s, size_t len, uint32_t h) {
    for (uint32_t i = s_home(h, t->tok_mask);; i = (i + 1) & t->tok_mask) {
        const st_tok_slot_t *sl = &t->tok_slot[i];
        if (sl->idx < 0) return i;
        if (sl->hash != h) continue;
        const st_tok_entry_t *e = &t->tok[sl->idx];
        if (e->len == len && !memcmp(t->arena + e->off, s, len)) return i;
    }
}

int32_t st_tok_lookup(const st_tokenizer_t *t, const char *s, size_t len) {
    return t->tok_slot[s_tok_slot(t, s, len, st_tok_hash(ST_TOK_HASH_INIT, s, len))].idx;
}

static uint32_t s_merge_slot(const st_tokenizer_t *t, const char *a, size_t len_a, const char *b, size_t len_b,
                             uint32_t h) {
    for (uint32_t i = s_home(h, t->merge_mask);; i = (i + 1) & t->merge_mask) {
        const st_tok_slot_t *sl = &t->merge_slot[i];
        if (sl->idx < 0) return i;
        if (sl->hash != h) continue;
        const st_tok_merge_t *m = &t->merge[sl->idx];
        const char *ms = t->arena + m->off;
        if (m->len_a == len_a && m->len_b == len_b && !memcmp(ms, a, len_a) && !memcmp(ms + len_a + 1, b, len_b))
            return i;
    }
}

int32_t st_tok_merge_rank(const st_tokenizer_t *t, const char *s, size_t len_a, size_t len_b) {
    uint32_t h = st_tok_hash(ST_TOK_HASH_INIT, s, len_a);
    h = st_tok_hash(h, " ", 1);
    h = st_tok_hash(h, s + len_a, len_b);
    return t->merge_slot[s_merge_slot(t, s, len_a, s + len_a, len_b, h)].idx;
}

/* ---------------------------------------------------------------- loading */

static uint16_t s_attr_of_type(int64_t type) {
    switch (type) {
    case S_TYPE_NORMAL: return ST_TOK_NORMAL;
    case S_TYPE_UNKNOWN: return ST_TOK_UNKNOWN;
    case S_TYPE_CONTROL: return ST_TOK_CONTROL;
    case S_TYPE_USER_DEFINED: return ST_TOK_USER_DEFINED;
    case S_TYPE_UNUSED: return ST_TOK_UNUSED;
    case S_TYPE_BYTE: return ST_TOK_BYTE;
    default: return 0; /* UNDEFINED, and unknown types as llama.cpp */
    }
}

static int s_load_tokens(st_tokenizer_t *t, const st_gguf_t *g) {
    st_gguf_vtype_t et;
    uint64_t n;
    const void *data;
    int rc = st_gguf_get_arr(g, S_KEY_TOKENS, &et, &n, &data);
    if (rc < 0) return rc;
    if (rc == 0) return st_fail(ST_EFORMAT, "no %s", S_KEY_TOKENS);
    if (et != ST_GGUF_STRING) return st_fail(ST_EFORMAT, "%s: elements of type %d, not strings", S_KEY_TOKENS, et);
    if (n == 0 || n > INT32_MAX) return st_fail(ST_EFORMAT, "%s: %llu tokens", S_KEY_TOKENS, (unsigned long long)n);

    st_gguf_vtype_t tt = ST_GGUF_INT32;
    uint64_t n_types = 0;
    const void *types = NULL;
    rc = st_gguf_get_arr(g, S_KEY_TYPES, &tt, &n_types, &types);
    if (rc < 0) return rc;
    if (rc == 1 && tt != ST_GGUF_INT32)
        return st_fail(ST_EFORMAT, "%s: elements of type %d, not int32", S_KEY_TYPES, tt);
    if (rc == 1 && n_types < n)
        return st_fail(ST_EFORMAT, "%s: %llu types for %llu tokens", S_KEY_TYPES, (unsigned long long)n_types,
                       (unsigned long long)n);
    if (rc == 1 && !types) return st_fail(ST_EFORMAT, "%s: no data", S_KEY_TYPES);

    t->n_vocab = (int32_t)n;
    t->tok = st_calloc(n, sizeof *t->tok);
    if (!t->tok) return st_fail(ST_ENOMEM, "%llu tokens", (unsigned long long)n);
    if ((rc = s_table_new(n, &t->tok_slot, &t->tok_mask)) < 0) return rc;

    for (uint32_t i = 0; i < (uint32_t)n; i++) {
        st_str_t s;
        if ((rc = st_gguf_arr_str(g, S_KEY_TOKENS, i, &s)) != 1)
            return rc < 0 ? rc : st_fail(ST_EFORMAT, "%s[%u] unreadable", S_KEY_TOKENS, i);
        char empty[32];
        if (s.len == 0) { /* llama.cpp renames empty tokens so they stay unique */
            snprintf(empty, sizeof empty, "[EMPTY_%u]", i);
            s.data = empty;
            s.len = strlen(empty);
        }
        st_tok_entry_t *e = &t->tok[i];
        if ((rc = s_arena_add(t, s.data, s.len, &e->off)) < 0) return rc;
        e->len = (uint32_t)s.len;
        uint32_t h = st_tok_hash(ST_TOK_HASH_INIT, s.data, s.len);
        uint32_t slot = s_tok_slot(t, s.data, s.len, h);
        if (t->tok_slot[slot].idx >= 0)
            return st_fail(ST_EFORMAT, "%s[%u] duplicates token %d", S_KEY_TOKENS, i, t->tok_slot[slot].idx);
        t->tok_slot[slot] = (st_tok_slot_t){h, (int32_t)i};
        e->attr = ST_TOK_NORMAL;
        if (types) {
            int32_t ty;
            memcpy(&ty, (const char *)types + 4 * (size_t)i, 4); /* little-endian host */
            e->attr = s_attr_of_type(ty);
        }
    }
    return 0;
}

static int s_load_merges(st_tokenizer_t *t, const st_gguf_t *g) {
    st_gguf_vtype_t et;
    uint64_t n;
    const void *data;
    int rc = st_gguf_get_arr(g, S_KEY_MERGES, &et, &n, &data);
    if (rc < 0) return rc;
    if (rc == 0) return st_fail(ST_EFORMAT, "no %s (a BPE vocabulary needs them)", S_KEY_MERGES);
    if (et != ST_GGUF_STRING) return st_fail(ST_EFORMAT, "%s: elements of type %d, not strings", S_KEY_MERGES, et);
    if (n > INT32_MAX) return st_fail(ST_EFORMAT, "%s: %llu merges", S_KEY_MERGES, (unsigned long long)n);

    t->merge = st_calloc(n ? n : 1, sizeof *t->merge);
    if (!t->merge) return st_fail(ST_ENOMEM, "%llu merges", (unsigned long long)n);
    if ((rc = s_table_new(n, &t->merge_slot, &t->merge_mask)) < 0) return rc;

    uint32_t n_malformed = 0, n_dup = 0;
    for (uint32_t i = 0; i < (uint32_t)n; i++) {
        st_str_t s;
        if ((rc = st_gguf_arr_str(g, S_KEY_MERGES, i, &s)) != 1)
            return rc < 0 ? rc : st_fail(ST_EFORMAT, "%s[%u] unreadable", S_KEY_MERGES, i);
        /* "left right", split at the first space after the first byte (llama.cpp: find(' ', 1)) */
        const char *sp = s.len > 1 ? memchr(s.data + 1, ' ', s.len - 1) : NULL;
        st_tok_merge_t *m = &t->merge[t->n_merge];
        if (!sp) { /* llama.cpp stores an empty pair, which never matches */
            n_malformed++;
            continue;
        }
        m->len_a = (uint32_t)(sp - s.data);
        m->len_b = (uint32_t)(s.len - m->len_a - 1);
        uint32_t h = st_tok_hash(ST_TOK_HASH_INIT, s.data, s.len);
        uint32_t slot = s_merge_slot(t, s.data, m->len_a, sp + 1, m->len_b, h);
        if (t->merge_slot[slot].idx >= 0) { /* the first (lowest rank) wins, as std::map::emplace */
            n_dup++;
            continue;
        }
        if ((rc = s_arena_add(t, s.data, s.len, &m->off)) < 0) return rc;
        /* rank = index among the kept merges: same order as the GGUF's, which is all that is compared */
        t->merge_slot[slot] = (st_tok_slot_t){h, t->n_merge};
        t->n_merge++;
    }
    if (n_malformed || n_dup)
        st_log(ST_LOG_WARN, "%s: %u without a separator, %u duplicates (ignored, as llama.cpp does)", S_KEY_MERGES,
               n_malformed, n_dup);
    return 0;
}

/* Special ids and the end-of-generation set (llama.cpp: llama_vocab::impl::load). */
typedef struct {
    int32_t bos, eos, eot, eom, fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
} s_ids_t;

/* Texts llama.cpp recognizes when the GGUF does not name the id. */
static const char *const s_eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",         "<|endoftext|>",      "<|end_of_text|>",
    "<EOT>",      "_<EOT>",     "[EOT]",   "<｜end▁of▁sentence｜>", "<end_of_utterance>", NULL};
static const char *const s_eom_texts[] = {"<|eom_id|>", NULL};
static const char *const s_fim_pre_texts[] = {"<|fim_prefix|>",  "<fim-prefix>", "<fim_prefix>",
                                              "<｜fim▁begin｜>", "<PRE>",        "▁<PRE>",
                                              "<|code_prefix|>", "<|prefix|>",   NULL};
static const char *const s_fim_suf_texts[] = {"<|fim_suffix|>",  "<fim-suffix>", "<fim_suffix>",
                                              "<｜fim▁hole｜>",  "<SUF>",        "▁<SUF>",
                                              "<|code_suffix|>", "<|suffix|>",   NULL};
static const char *const s_fim_mid_texts[] = {"<|fim_middle|>",  "<fim-middle>", "<fim_middle>",
                                              "<｜fim▁end｜>",   "<MID>",        "▁<MID>",
                                              "<|code_middle|>", "<|middle|>",   NULL};
static const char *const s_fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const s_fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                              "<REPO>",       "<reponame>",    NULL};
static const char *const s_fim_sep_texts[] = {"<|file_sep|>", NULL};
/* Tokens that end generation wherever they are (they also become CONTROL). */
static const char *const s_eog_texts[] = {"<|eot_id|>",
                                          "<|im_end|>",
                                          "<|end|>",
                                          "<|return|>",
                                          "<|call|>",
                                          "<|flush|>",
                                          "<|calls|>",
                                          "<end_of_turn>",
                                          "<|endoftext|>",
                                          "</s>",
                                          "<|eom_id|>",
                                          "<EOT>",
                                          "_<EOT>",
                                          "[EOT]",
                                          "[EOS]",
                                          "<|end_of_text|>",
                                          "<end_of_utterance>",
                                          "<eos>",
                                          "<turn|>",
                                          "<|tool_response>",
                                          "<｜end▁of▁sentence｜>",
                                          "[e~[",
                                          NULL};

/* Reads an id key; out-of-range values keep the default (llama.cpp warns the same way). */
static int s_get_id(const st_tokenizer_t *t, const st_gguf_t *g, const char *key, int32_t *id) {
    int64_t v;
    int rc = st_gguf_get_i64(g, key, &v);
    if (rc <= 0) return rc;
    if (v < 0 || v >= t->n_vocab) {
        st_log(ST_LOG_WARN, "%s = %lld outside the vocabulary, using %d", key, (long long)v, *id);
        return 0;
    }
    *id = (int32_t)v;
    return 0;
}

/* Lowest id among the tokens whose text is in list (llama.cpp takes the first it meets), or -1. */
static int32_t s_find_any(const st_tokenizer_t *t, const char *const *list) {
    int32_t best = -1;
    for (; *list; list++) {
        int32_t id = st_tok_lookup(t, *list, strlen(*list));
        if (id >= 0 && (best < 0 || id < best)) best = id;
    }
    return best;
}

/* When the GGUF names no id for this role, detect it by text and make it CONTROL. */
static void s_detect(st_tokenizer_t *t, int32_t *id, const char *const *list) {
    if (*id >= 0) return;
    *id = s_find_any(t, list);
    if (*id >= 0) t->tok[*id].attr |= ST_TOK_CONTROL;
}

static int s_eog_add(st_tokenizer_t *t, int32_t id) {
    if (id < 0) return 0;
    for (int32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 0;
    int32_t *p = st_realloc(t->eog, (size_t)(t->n_eog + 1) * sizeof *p);
    if (!p) return st_fail(ST_ENOMEM, "eog list");
    t->eog = p;
    t->eog[t->n_eog++] = id;
    return 0;
}

static int s_load_special(st_tokenizer_t *t, const st_gguf_t *g) {
    /* llama.cpp's defaults for a gpt2 vocabulary: bos = eos = 11 (if it exists) */
    int32_t def = t->n_vocab > 11 ? 11 : -1;
    s_ids_t ids = {def, def, -1, -1, -1, -1, -1, -1, -1, -1};
    static const struct {
        const char *key;
        size_t field;
    } keys[] = {
        {"tokenizer.ggml.bos_token_id", offsetof(s_ids_t, bos)},
        {"tokenizer.ggml.eos_token_id", offsetof(s_ids_t, eos)},
        {"tokenizer.ggml.eot_token_id", offsetof(s_ids_t, eot)},
        {"tokenizer.ggml.eom_token_id", offsetof(s_ids_t, eom)},
        {"tokenizer.ggml.fim_pre_token_id", offsetof(s_ids_t, fim_pre)},
        {"tokenizer.ggml.fim_suf_token_id", offsetof(s_ids_t, fim_suf)},
        {"tokenizer.ggml.fim_mid_token_id", offsetof(s_ids_t, fim_mid)},
        {"tokenizer.ggml.fim_pad_token_id", offsetof(s_ids_t, fim_pad)},
        {"tokenizer.ggml.fim_rep_token_id", offsetof(s_ids_t, fim_rep)},
        {"tokenizer.ggml.fim_sep_token_id", offsetof(s_ids_t, fim_sep)},
        {"tokenizer.ggml.prefix_token_id", offsetof(s_ids_t, fim_pre)}, /* deprecated names */
        {"tokenizer.ggml.suffix_token_id", offsetof(s_ids_t, fim_suf)},
        {"tokenizer.ggml.middle_token_id", offsetof(s_ids_t, fim_mid)},
    };
    int rc;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if ((rc = s_get_id(t, g, keys[i].key, (int32_t *)((char *)&ids + keys[i].field))) < 0) return rc;

    bool add_bos = false;
    if ((rc = st_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos)) < 0) return rc;
    if (add_bos && ids.bos < 0) return st_fail(ST_EFORMAT, "add_bos_token is true but there is no BOS token");
    bool add_eos = false;
    if (st_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos) == 1 && add_eos)
        st_log(ST_LOG_WARN, "tokenizer.ggml.add_eos_token is true: ignored (no EOS is appended)");

    s_detect(t, &ids.eot, s_eot_texts);
    s_detect(t, &ids.eom, s_eom_texts);
    s_detect(t, &ids.fim_pre, s_fim_pre_texts);
    s_detect(t, &ids.fim_suf, s_fim_suf_texts);
    s_detect(t, &ids.fim_mid, s_fim_mid_texts);
    s_detect(t, &ids.fim_pad, s_fim_pad_texts);
    s_detect(t, &ids.fim_rep, s_fim_rep_texts);
    s_detect(t, &ids.fim_sep, s_fim_sep_texts);

    /* control tokens named "...unused..." are unused */
    for (int32_t i = 0; i < t->n_vocab; i++) {
        st_tok_entry_t *e = &t->tok[i];
        if ((e->attr & ST_TOK_CONTROL) && !(e->attr & ST_TOK_UNUSED) && strstr(t->arena + e->off, "unused"))
            e->attr |= ST_TOK_UNUSED;
    }

    if ((rc = s_eog_add(t, ids.fim_pad)) < 0 || (rc = s_eog_add(t, ids.fim_rep)) < 0 ||
        (rc = s_eog_add(t, ids.fim_sep)) < 0)
        return rc;
    for (const char *const *p = s_eog_texts; *p; p++) {
        int32_t id = st_tok_lookup(t, *p, strlen(*p));
        if (id < 0) continue;
        if ((rc = s_eog_add(t, id)) < 0) return rc;
        t->tok[id].attr |= ST_TOK_CONTROL;
    }
    if ((rc = s_eog_add(t, ids.eos)) < 0 || (rc = s_eog_add(t, ids.eot)) < 0 || (rc = s_eog_add(t, ids.eom)) < 0)
        return rc;

    t->bos_id = ids.bos;
    t->eos_id = ids.eos;
    t->add_bos = add_bos;
    return 0;
}

typedef struct {
    uint32_t len;
    int32_t id;
} s_special_key_t;

static int s_cmp_special(const void *a, const void *b) {
    const s_special_key_t *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1; /* longest first */
    return (x->id > y->id) - (x->id < y->id);
}

/* Tokens split out of the text before the regex, longest text first. */
static int s_build_special(st_tokenizer_t *t) {
    int32_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->tok[i].attr & (ST_TOK_CONTROL | ST_TOK_USER_DEFINED | ST_TOK_UNKNOWN)) n++;
    s_special_key_t *keys = st_malloc((size_t)(n ? n : 1) * sizeof *keys);
    t->special = st_malloc((size_t)(n ? n : 1) * sizeof *t->special);
    if (!keys || !t->special) {
        free(keys);
        return st_fail(ST_ENOMEM, "%d special tokens", n);
    }
    n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (t->tok[i].attr & (ST_TOK_CONTROL | ST_TOK_USER_DEFINED | ST_TOK_UNKNOWN))
            keys[n++] = (s_special_key_t){t->tok[i].len, i};
    qsort(keys, (size_t)n, sizeof *keys, s_cmp_special);
    for (int32_t i = 0; i < n; i++) t->special[i] = keys[i].id;
    t->n_special = n;
    free(keys);
    return 0;
}

/* GPT-2's byte -> code point map: printable Latin-1 bytes stand for
 * themselves, the other 68 bytes are moved to U+0100..U+0143 in byte order. */
static uint32_t s_byte_to_cpt(uint8_t b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 0x100 + b;
    if (b <= 0xA0) return 0x100 + 33 + (b - 0x7F);
    return 0x100 + 67; /* 0xAD */
}

/* Inverse of s_byte_to_cpt, or -1 when cpt stands for no byte. */
static int s_cpt_to_byte(uint32_t cpt) {
    if ((cpt >= 0x21 && cpt <= 0x7E) || (cpt >= 0xA1 && cpt <= 0xAC) || (cpt >= 0xAE && cpt <= 0xFF)) return (int)cpt;
    if (cpt >= 0x100 && cpt <= 0x100 + 32) return (int)(cpt - 0x100);
    if (cpt >= 0x100 + 33 && cpt <= 0x100 + 66) return (int)(cpt - 0x100 - 33 + 0x7F);
    if (cpt == 0x100 + 67) return 0xAD;
    return -1;
}

/* The tokenizer, or NULL after logging; *err gets the code (see tokenizer.h). */
static st_tokenizer_t *s_from_gguf(const st_gguf_t *g, int *err) {
    if (!g) {
        *err = st_fail(ST_EINVAL, "no GGUF");
        return NULL;
    }
    st_str_t model, pre;
    int rc = st_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc == 0) rc = st_fail(ST_EFORMAT, "no tokenizer.ggml.model");
    if (rc < 0) {
        *err = rc;
        return NULL;
    }
    if (!st_str_eq(model, "gpt2")) {
        *err = st_fail(ST_EUNSUP, "tokenizer.ggml.model \"%.*s\": only \"gpt2\" (byte-level BPE) is supported",
                       (int)(model.len < 64 ? model.len : 64), model.data);
        return NULL;
    }
    rc = st_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
    if (rc == 0) rc = st_fail(ST_EUNSUP, "no tokenizer.ggml.pre: only the \"qwen2\" pre-tokenizer is supported");
    if (rc < 0) {
        *err = rc;
        return NULL;
    }
    /* the names llama.cpp maps to LLAMA_VOCAB_PRE_TYPE_QWEN2 */
    if (!st_str_eq(pre, "qwen2") && !st_str_eq(pre, "deepseek-r1-qwen") && !st_str_eq(pre, "kormo") &&
        !st_str_eq(pre, "f2llmv2")) {
        *err = st_fail(ST_EUNSUP, "tokenizer.ggml.pre \"%.*s\": only \"qwen2\" is supported",
                       (int)(pre.len < 64 ? pre.len : 64), pre.data);
        return NULL;
    }

    st_tokenizer_t *t = st_calloc(1, sizeof *t);
    if (!t) {
        *err = st_fail(ST_ENOMEM, "tokenizer");
        return NULL;
    }
    t->bos_id = t->eos_id = -1;
    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        size_t n = st_tok_utf8_put(s_byte_to_cpt((uint8_t)b), u); /* 1 or 2 bytes: code points < U+0144 */
        memcpy(t->byte_enc[b], u, 2);
        t->byte_enc_len[b] = (uint8_t)n;
    }
    if ((rc = s_load_tokens(t, g)) < 0 || (rc = s_load_merges(t, g)) < 0 || (rc = s_load_special(t, g)) < 0 ||
        (rc = s_build_special(t)) < 0 || (rc = st_pretok_new(t)) < 0) {
        st_tokenizer_destroy(&t);
        *err = rc;
        return NULL;
    }
    st_log(ST_LOG_DEBUG, "%d tokens, %d merges, %d special, %d end-of-generation", t->n_vocab, t->n_merge, t->n_special,
           t->n_eog);
    return t;
}

st_tokenizer_t *st_tokenizer_from_gguf(const st_gguf_t *g, int *err) {
    int rc = 0;
    st_tokenizer_t *t = s_from_gguf(g, &rc);
    if (err) *err = t ? 0 : rc;
    return t;
}

void st_tokenizer_destroy(st_tokenizer_t **tp) {
    if (!tp || !*tp) return;
    st_tokenizer_t *t = *tp;
    st_pretok_destroy(t);
    free(t->tok);
    free(t->arena);
    free(t->tok_slot);
    free(t->merge);
    free(t->merge_slot);
    free(t->special);
    free(t->eog);
    free(t);
    *tp = NULL;
}

/* ---------------------------------------------------------------- queries */

int32_t st_tokenizer_n_vocab(const st_tokenizer_t *t) { return t ? t->n_vocab : 0; }
int32_t st_tokenizer_bos(const st_tokenizer_t *t) { return t ? t->bos_id : -1; }
int32_t st_tokenizer_eos(const st_tokenizer_t *t) { return t ? t->eos_id : -1; }

bool st_token_is_eog(const st_tokenizer_t *t, int32_t id) {
    if (!t || id < 0) return false;
    for (int32_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

int32_t st_tokenizer_find(const st_tokenizer_t *t, const char *text) {
    if (!t || !text) return -1;
    return st_tok_lookup(t, text, strlen(text));
}

/* ---------------------------------------------------------------- detokenization */

typedef struct {
    char *buf;
    size_t cap, n;
} s_writer_t;

static void s_put(s_writer_t *w, const void *p, size_t len) {
    if (w->n < w->cap) memcpy(w->buf + w->n, p, len < w->cap - w->n ? len : w->cap - w->n);
    w->n += len;
}

/* A NORMAL token's bytes: each code point back to the byte it stands for
 * (llama_decode_text, including its "[UNK_BYTE_0x..]" for code points that
 * stand for none). */
static void s_decode_normal(const st_tokenizer_t *t, const st_tok_entry_t *e, s_writer_t *w) {
    const uint8_t *s = (const uint8_t *)t->arena + e->off;
    for (size_t i = 0; i < e->len;) {
        uint32_t cpt = st_tok_utf8_next(s, e->len, &i);
        int b = s_cpt_to_byte(cpt);
        if (b >= 0) {
            uint8_t c = (uint8_t)b;
            s_put(w, &c, 1);
            continue;
        }
        uint8_t u[4];
        size_t n = st_tok_utf8_put(cpt, u);
        char hex[3];
        s_put(w, "[UNK_BYTE_0x", 12);
        for (size_t k = 0; k < n; k++) {
            snprintf(hex, sizeof hex, "%02x", u[k]);
            s_put(w, hex, 2);
        }
        s_put(w, s, e->len);
        s_put(w, "]", 1);
    }
}

static int s_hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int st_token_to_piece(const st_tokenizer_t *t, int32_t id, bool render_special, char *buf, int cap) {
    if (!t) return st_fail(ST_EINVAL, "no tokenizer");
    if (id < 0 || id >= t->n_vocab) return st_fail(ST_ERANGE, "token id %d outside [0, %d)", id, t->n_vocab);
    if (cap < 0 || (cap > 0 && !buf)) return st_fail(ST_EINVAL, "buffer of %d bytes", cap);
    const st_tok_entry_t *e = &t->tok[id];
    const char *text = t->arena + e->off;
    s_writer_t w = {buf, (size_t)cap, 0};
    if (e->attr & (ST_TOK_UNKNOWN | ST_TOK_CONTROL)) {
        if (render_special) s_put(&w, text, e->len);
    } else if (e->attr & ST_TOK_USER_DEFINED) {
        s_put(&w, text, e->len);
    } else if (e->attr & ST_TOK_NORMAL) {
        s_decode_normal(t, e, &w);
    } else if (e->attr & ST_TOK_BYTE) { /* "<0xAB>": strtol of text[3..4], as llama.cpp */
        int hi = e->len > 3 ? s_hex_digit(text[3]) : -1, lo = e->len > 4 ? s_hex_digit(text[4]) : -1;
        uint8_t c = (uint8_t)(hi < 0 ? 0 : lo < 0 ? hi : hi * 16 + lo);
        s_put(&w, &c, 1);
    } /* UNUSED ([PADn]) and UNDEFINED tokens: nothing */
    if (w.n > INT_MAX) return st_fail(ST_ERANGE, "piece of token %d is %zu B", id, w.n);
    return (int)w.n;
}

/* ---------------------------------------------------------------- tokenization */

typedef struct {
    size_t off, len;
    int32_t id; /* special token, or -1 for text still to tokenize */
} s_frag_t;

typedef struct {
    s_frag_t *v;
    size_t n, cap;
} s_frags_t;

static int s_frag_push(s_frags_t *f, size_t off, size_t len, int32_t id) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        s_frag_t *p = st_realloc(f->v, cap * sizeof *p);
        if (!p) return st_fail(ST_ENOMEM, "%zu fragments", cap);
        f->v = p;
        f->cap = cap;
    }
    f->v[f->n++] = (s_frag_t){off, len, id};
    return 0;
}

/* Splits the special tokens out of text (llama.cpp: tokenizer_st_partition):
 * one special token at a time, longest first, every occurrence in every
 * fragment still made of text. */
static int s_partition(const st_tokenizer_t *t, const char *text, size_t len, bool parse_special, s_frags_t *cur) {
    s_frags_t next = {0};
    int rc = s_frag_push(cur, 0, len, -1);
    for (int32_t k = 0; rc == 0 && k < t->n_special; k++) {
        const st_tok_entry_t *e = &t->tok[t->special[k]];
        if (!parse_special && (e->attr & (ST_TOK_CONTROL | ST_TOK_UNKNOWN))) continue;
        const char *st = t->arena + e->off;
        next.n = 0;
        for (size_t i = 0; rc == 0 && i < cur->n; i++) {
            s_frag_t f = cur->v[i];
            if (f.id >= 0 || f.len < e->len) {
                rc = s_frag_push(&next, f.off, f.len, f.id);
                continue;
            }
            size_t pos = f.off, end = f.off + f.len;
            const char *m;
            while (rc == 0 && end - pos >= e->len && (m = memmem(text + pos, end - pos, st, e->len))) {
                size_t at = (size_t)(m - text);
                if (at > pos) rc = s_frag_push(&next, pos, at - pos, -1);
                if (rc == 0) rc = s_frag_push(&next, at, e->len, t->special[k]);
                pos = at + e->len;
            }
            if (rc == 0 && pos < end) rc = s_frag_push(&next, pos, end - pos, -1);
        }
        s_frags_t tmp = *cur;
        *cur = next;
        next = tmp;
    }
    free(next.v);
    return rc;
}

int st_tokenize(const st_tokenizer_t *t, const char *text, size_t len, bool parse_special, int32_t *ids, int cap) {
    if (!t) return st_fail(ST_EINVAL, "no tokenizer");
    if ((!text && len) || cap < 0 || (cap > 0 && !ids))
        return st_fail(ST_EINVAL, "text %p of %zu B, ids %p of %d", (const void *)text, len, (void *)ids, cap);
    st_tok_out_t out = {ids, (size_t)cap, 0};
    if (t->add_bos) st_tok_out_push(&out, t->bos_id);
    if (len == 0) return (int)out.n;

    s_frags_t frags = {0};
    st_tok_scratch_t *s = NULL;
    int rc = s_partition(t, text, len, parse_special, &frags);
    if (rc == 0 && !(s = st_tok_scratch_new(t))) rc = ST_ENOMEM;
    for (size_t i = 0; rc == 0 && i < frags.n; i++) {
        if (frags.v[i].id >= 0)
            st_tok_out_push(&out, frags.v[i].id);
        else
            rc = st_tok_bpe_fragment(t, s, text + frags.v[i].off, frags.v[i].len, &out);
    }
    st_tok_scratch_destroy(&s);
    free(frags.v);
    if (rc < 0) return rc;
    if (out.n > INT_MAX) return st_fail(ST_ERANGE, "%zu tokens", out.n);
    return (int)out.n;
}
