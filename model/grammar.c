/* grammar: the node graph and the byte matcher (see grammar.h).
 *
 * The matcher is a stack of frames, one per node being matched. Each step
 * looks at the top frame only: it takes the byte, takes it and ends (pop),
 * pushes a child that gets the byte next, or, when it is complete and the
 * byte is not its own (a number followed by ','), pops and hands the byte to
 * its parent. A parent moves to its "after the child" phase when it pushes
 * the child, so the bytes still needed are a plain sum over the frames.
 *
 * Numbers are checked as integers scaled by 10^frac: a prefix is taken only
 * if some completion within the digit caps lies in [lo, hi], which keeps
 * every accepted prefix completable.
 */
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"

/* ---- building ----------------------------------------------------------------- */

#define GROW(arr, n, cap)                                                                                              \
    do {                                                                                                               \
        if ((n) == (cap)) {                                                                                            \
            int nc = (cap) ? (cap)*2 : 16;                                                                             \
            void *p = realloc((arr), (size_t)nc * sizeof *(arr));                                                      \
            if (!p) return -1;                                                                                         \
            (arr) = p;                                                                                                 \
            (cap) = nc;                                                                                                \
        }                                                                                                              \
    } while (0)

st_grammar_t *g_new(void) {
    st_grammar_t *g = calloc(1, sizeof *g);
    if (g) g->root = g->any = -1;
    return g;
}

void st_grammar_destroy(st_grammar_t **gp) {
    st_grammar_t *g = *gp;
    if (!g) return;
    for (int i = 0; i < g->n_keys; i++) free(g->keys[i].text);
    for (int i = 0; i < g->n_lits; i++) free(g->lits[i].text);
    free(g->nodes);
    free(g->keys);
    free(g->lits);
    free(g->kids);
    free(g);
    *gp = NULL;
}

int32_t g_add_node(st_grammar_t *g, g_kind_t kind) {
    GROW(g->nodes, g->n_nodes, g->cap_nodes);
    g_node_t *nd = &g->nodes[g->n_nodes];
    memset(nd, 0, sizeof *nd);
    nd->kind = kind;
    nd->max = -1;
    for (int i = 0; i < G_C_COUNT; i++) nd->alt[i] = -1;
    return g->n_nodes++;
}

static char *s_dup(const char *t, size_t len) {
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, t, len);
        p[len] = '\0';
    }
    return p;
}

int32_t g_add_key(st_grammar_t *g, const char *text, size_t len, int32_t node, bool required) {
    GROW(g->keys, g->n_keys, g->cap_keys);
    char *t = s_dup(text, len);
    if (!t) return -1;
    g->keys[g->n_keys] = (g_key_t){.text = t, .len = (int32_t)len, .node = node, .required = required};
    g->text_bytes += len;
    return g->n_keys++;
}

int32_t g_add_lit(st_grammar_t *g, const char *text, size_t len) {
    GROW(g->lits, g->n_lits, g->cap_lits);
    char *t = s_dup(text, len);
    if (!t) return -1;
    g->lits[g->n_lits] = (g_lit_t){.text = t, .len = (int32_t)len};
    g->text_bytes += len;
    return g->n_lits++;
}

int32_t g_add_kid(st_grammar_t *g, int32_t node) {
    GROW(g->kids, g->n_kids, g->cap_kids);
    g->kids[g->n_kids] = node;
    return g->n_kids++;
}

static int s_lit_cmp(const void *a, const void *b) {
    const g_lit_t *x = a, *y = b;
    int n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->text, y->text, (size_t)n); /* memcmp compares as unsigned char */
    return c ? c : x->len - y->len;
}

void g_sort_lits(st_grammar_t *g, int32_t node) {
    g_node_t *nd = &g->nodes[node];
    g_lit_t *l = g->lits + nd->first;
    qsort(l, (size_t)nd->count, sizeof *l, s_lit_cmp);
    int k = 0;
    for (int i = 0; i < nd->count; i++) {
        if (k > 0 && s_lit_cmp(&l[k - 1], &l[i]) == 0) {
            free(l[i].text);
            continue;
        }
        l[k++] = l[i];
    }
    for (int i = k; i < nd->count; i++) l[i] = (g_lit_t){0}; /* moved or freed */
    nd->count = k;
    nd->minlen = k ? l[0].len : 0;
    for (int i = 0; i < k; i++)
        if (l[i].len < nd->minlen) nd->minlen = l[i].len;
}

int g_class_of(unsigned char c) {
    switch (c) {
    case '{': return G_C_OBJECT;
    case '[': return G_C_ARRAY;
    case '"': return G_C_STRING;
    case 't': return G_C_TRUE;
    case 'f': return G_C_FALSE;
    case 'n': return G_C_NULL;
    default: return c == '-' || (c >= '0' && c <= '9') ? G_C_NUMBER : -1;
    }
}

unsigned g_first_classes(const st_grammar_t *g, int32_t node) {
    const g_node_t *nd = &g->nodes[node];
    unsigned m = 0;
    switch (nd->kind) {
    case G_OBJECT:
    case G_OBJECT_ANY: return 1u << G_C_OBJECT;
    case G_ARRAY: return 1u << G_C_ARRAY;
    case G_STRING: return 1u << G_C_STRING;
    case G_NUMBER: return 1u << G_C_NUMBER;
    case G_LITERAL:
        for (int i = 0; i < nd->count; i++) {
            int c = g_class_of((unsigned char)g->lits[nd->first + i].text[0]);
            m |= c < 0 ? 0x80u : 1u << c;
        }
        return m;
    case G_UNION:
        for (int i = 0; i < G_C_COUNT; i++)
            if (nd->alt[i] >= 0) m |= 1u << i;
        return m;
    default: return 0x80u; /* sequences and alternatives do not start a JSON value */
    }
}

static int32_t s_lit_node(st_grammar_t *g, const char *text) {
    int32_t n = g_add_node(g, G_LITERAL);
    if (n < 0) return -1;
    int32_t l = g_add_lit(g, text, strlen(text));
    if (l < 0) return -1;
    g->nodes[n].first = l;
    g->nodes[n].count = 1;
    g->nodes[n].minlen = (int32_t)strlen(text);
    return n;
}

int32_t g_any(st_grammar_t *g) {
    if (g->any >= 0) return g->any;
    int32_t u = g_add_node(g, G_UNION), o = g_add_node(g, G_OBJECT_ANY), a = g_add_node(g, G_ARRAY),
            s = g_add_node(g, G_STRING), n = g_add_node(g, G_NUMBER);
    int32_t t = s_lit_node(g, "true"), f = s_lit_node(g, "false"), z = s_lit_node(g, "null");
    if (u < 0 || o < 0 || a < 0 || s < 0 || n < 0 || t < 0 || f < 0 || z < 0) return -1;
    g_node_t *nd = g->nodes;
    nd[o].minlen = 2;
    nd[a].item = u, nd[a].min = 0, nd[a].max = -1, nd[a].minlen = 2;
    nd[s].min = 0, nd[s].max = -1, nd[s].minlen = 2;
    nd[n].frac = 6, nd[n].idig = 12;
    nd[n].hi = 999999999999999999LL, nd[n].lo = -nd[n].hi, nd[n].minlen = 1;
    int32_t alts[G_C_COUNT] = {o, a, s, n, t, f, z};
    memcpy(nd[u].alt, alts, sizeof alts);
    nd[u].minlen = 1;
    return g->any = u;
}

/* ---- numbers --------------------------------------------------------------------- */

static const int64_t P10[19] = {1LL,
                                10LL,
                                100LL,
                                1000LL,
                                10000LL,
                                100000LL,
                                1000000LL,
                                10000000LL,
                                100000000LL,
                                1000000000LL,
                                10000000000LL,
                                100000000000LL,
                                1000000000000LL,
                                10000000000000LL,
                                100000000000000LL,
                                1000000000000000LL,
                                10000000000000000LL,
                                100000000000000000LL,
                                1000000000000000000LL};

typedef struct {
    bool empty, neg, dot;
    int n, k; /* integer and fraction digits */
    int64_t I, R;
} num_t;

static num_t s_num_parse(const char *t, int len) {
    num_t p = {.empty = len == 0};
    int i = 0;
    if (i < len && t[i] == '-') p.neg = true, i++;
    for (; i < len && t[i] != '.'; i++) p.I = p.I * 10 + (t[i] - '0'), p.n++;
    if (i < len) {
        p.dot = true;
        for (i++; i < len; i++) p.R = p.R * 10 + (t[i] - '0'), p.k++;
    }
    return p;
}

/* Some multiple of step in [a, b] ∩ [lo, hi] (values signed as given). */
static bool s_hits(int64_t a, int64_t b, int64_t step, int64_t lo, int64_t hi) {
    if (a < lo) a = lo;
    if (b > hi) b = hi;
    if (a > b) return false;
    int64_t m = a >= 0 ? (a + step - 1) / step * step : -((-a) / step * step);
    return m <= b;
}

/* Magnitudes [x, y] in steps of step, with the prefix's sign, within bounds. */
static bool s_hits_signed(const g_node_t *nd, bool neg, int64_t x, int64_t y, int64_t step) {
    return neg ? s_hits(-y, -x, step, nd->lo, nd->hi) : s_hits(x, y, step, nd->lo, nd->hi);
}

/* Can exactly L more bytes complete the number p within bounds? */
static bool s_num_reach(const g_node_t *nd, const num_t *p, int L) {
    const int F = nd->frac, ND = nd->idig;
    if (p->empty) { /* the sign is still open */
        num_t q = *p;
        q.empty = false;
        if (s_num_reach(nd, &q, L)) return true;
        q.neg = true;
        return L >= 1 && s_num_reach(nd, &q, L - 1);
    }
    if (p->dot) {
        int k = p->k + L;
        if (k < 1 || k > F) return false;
        int64_t step = P10[F - k], base = p->I * P10[F] + p->R * P10[F - p->k];
        return s_hits_signed(nd, p->neg, base, base + P10[F - p->k] - step, step);
    }
    for (int j = 0; j <= L; j++) { /* j more integer digits, then maybe '.' and fraction digits */
        int rest = L - j, k = 0;
        if (rest > 0) {
            k = rest - 1;
            if (k < 1 || k > F) continue;
        }
        if (p->n + j < 1 || p->n + j > ND) continue;
        int64_t ilo, ihi;
        if (p->n == 0)
            ilo = j == 1 ? 0 : P10[j - 1], ihi = P10[j] - 1;
        else if (p->I == 0) { /* "0" takes no more digits */
            if (j > 0) continue;
            ilo = ihi = 0;
        } else
            ilo = p->I * P10[j], ihi = ilo + P10[j] - 1;
        int64_t step = P10[F - k];
        if (s_hits_signed(nd, p->neg, ilo * P10[F], ihi * P10[F] + (k ? P10[F] - step : 0), step)) return true;
    }
    return false;
}

static int s_num_maxlen(const g_node_t *nd) { return nd->idig + nd->frac + 2; }

static int s_num_min_from(const g_node_t *nd, const num_t *p) {
    for (int L = 0; L <= s_num_maxlen(nd); L++)
        if (s_num_reach(nd, p, L)) return L;
    return -1;
}

int g_number_minlen(const g_node_t *nd) {
    num_t p = {.empty = true};
    return s_num_min_from(nd, &p);
}

/* The syntax of one more byte c after the valid prefix p. */
static bool s_num_syntax(const g_node_t *nd, const num_t *p, unsigned char c) {
    if (c == '-') return p->empty;
    if (c == '.') return !p->dot && p->n >= 1 && nd->frac > 0;
    if (c < '0' || c > '9') return false;
    if (p->dot) return p->k < nd->frac;
    return !(p->n == 1 && p->I == 0) && p->n < nd->idig;
}

/* ---- the matcher ------------------------------------------------------------------ */

enum { R_REJECT, R_TAKEN, R_DONE, R_PASS, R_PUSHED };

enum { O_OPEN, O_FIRST, O_KEY, O_COLON, O_AFTER_COLON, O_VAL, O_AFTER_VALUE, O_AFTER_COMMA, O_KEYSTART };
enum { A_OPEN, A_FIRST, A_AFTER_VALUE, A_AFTER_COMMA, A_VAL };
enum { S_OPEN, S_BODY, S_ESC, S_UTF8 };

static void s_frame_init(st_gframe_t *f, const st_grammar_t *g, int32_t node) {
    const g_node_t *nd = &g->nodes[node];
    memset(f, 0, offsetof(st_gframe_t, text));
    f->node = node;
    if (nd->kind == G_LITERAL) f->a = nd->first, f->b = nd->first + nd->count - 1;
    if (nd->kind == G_ALT) f->cand = nd->count >= 64 ? ~0ull : (1ull << nd->count) - 1;
}

static bool s_push(st_gstate_t *s, const st_grammar_t *g, int32_t node) {
    if (s->depth >= ST_GRAMMAR_MAX_DEPTH) return false;
    s_frame_init(&s->f[s->depth++], g, node);
    return true;
}

void st_gstate_init(st_gstate_t *s, const st_grammar_t *g) {
    s->depth = 0;
    s->ended = false;
    s_push(s, g, g->root);
}

void st_gstate_copy(st_gstate_t *dst, const st_gstate_t *src) {
    dst->depth = src->depth;
    dst->ended = src->ended;
    memcpy(dst->f, src->f, (size_t)src->depth * sizeof src->f[0]);
}

/* A node's keys (NULL for an object without properties: no offset on a NULL array). */
static const g_key_t *s_keys(const st_grammar_t *g, const g_node_t *nd) { return g->keys ? g->keys + nd->first : NULL; }

/* Object: the properties that may come next from index a: the optional ones
 * up to and including the first required one (the order is the schema's). */
static uint64_t s_obj_cands(const st_grammar_t *g, const g_node_t *nd, int a) {
    uint64_t m = 0;
    for (int j = a; j < nd->count; j++) {
        m |= 1ull << j;
        if (g->keys[nd->first + j].required) break;
    }
    return m;
}

static int s_req_len(const st_grammar_t *g, const g_node_t *nd, int a) {
    return a < nd->count ? g->keys[nd->first + a].suf_len + g->keys[nd->first + a].suf_n : 0;
}

static bool s_req_left(const st_grammar_t *g, const g_node_t *nd, int a) {
    return a < nd->count && g->keys[nd->first + a].suf_n > 0;
}

/* Narrows the candidate texts of keys[first..] by byte c at position pos. */
static uint64_t s_narrow(const g_key_t *k, uint64_t cand, int pos, unsigned char c) {
    uint64_t out = 0;
    for (uint64_t m = cand; m; m &= m - 1) {
        int j = __builtin_ctzll(m);
        if (k[j].len > pos && (unsigned char)k[j].text[pos] == c) out |= 1ull << j;
    }
    return out;
}

/* One byte of a key text among the candidates f->cand of k, of which f->c
 * bytes matched: R_REJECT, or R_TAKEN with the candidates narrowed and *key
 * the key that c completes (texts are JSON strings: none is a prefix of
 * another), else -1. Objects' keys and alternatives' texts both. */
static int s_key_byte(st_gframe_t *f, const g_key_t *k, unsigned char c, int *key) {
    *key = -1;
    uint64_t m = s_narrow(k, f->cand, f->c, c);
    if (!m) return R_REJECT;
    f->cand = m;
    f->c++;
    int j = __builtin_ctzll(m);
    if (!(m & (m - 1)) && k[j].len == f->c) *key = j;
    return R_TAKEN;
}

/* A phase that takes exactly the byte want, then goes on to phase next. */
static int s_expect(st_gframe_t *f, unsigned char c, unsigned char want, int next) {
    if (c != want) return R_REJECT;
    f->phase = next;
    return R_TAKEN;
}

/* The optional space after ',' or ':': taken (phase next) when c is one. */
static bool s_space(st_gframe_t *f, unsigned char c, int next) {
    if (c != ' ') return false;
    f->phase = next;
    return true;
}

/* An object's phases after a key (either kind): ':', an optional space, then
 * the value, a node of its own. */
static int s_step_colon_value(st_gstate_t *s, const st_grammar_t *g, st_gframe_t *f, unsigned char c, int32_t value) {
    if (f->phase == O_COLON) return s_expect(f, c, ':', O_AFTER_COLON);
    if (f->phase == O_AFTER_COLON && s_space(f, c, O_VAL)) return R_TAKEN;
    f->phase = O_AFTER_VALUE;
    return s_push(s, g, value) ? R_PUSHED : R_REJECT;
}

static int s_step_object(st_gstate_t *s, const st_grammar_t *g, st_gframe_t *f, const g_node_t *nd, unsigned char c) {
    const g_key_t *k = s_keys(g, nd);
    switch (f->phase) {
    case O_OPEN: return s_expect(f, c, '{', O_FIRST);
    case O_AFTER_VALUE:
        if (c == ',') {
            if (!s_obj_cands(g, nd, f->a)) return R_REJECT;
            f->phase = O_AFTER_COMMA;
            return R_TAKEN;
        }
        /* or the closing brace: */
        /* fall through */
    case O_FIRST:
        if (c == '}') return s_req_left(g, nd, f->a) ? R_REJECT : R_DONE;
        if (f->phase == O_AFTER_VALUE) return R_REJECT;
        /* or a quote that starts a key: */
        /* fall through */
    case O_AFTER_COMMA:
        if (f->phase == O_AFTER_COMMA && s_space(f, c, O_KEYSTART)) return R_TAKEN;
        /* fall through */
    case O_KEYSTART:
        if (c != '"' || !(f->cand = s_obj_cands(g, nd, f->a))) return R_REJECT;
        f->phase = O_KEY;
        f->c = 1;
        return R_TAKEN;
    case O_KEY: {
        int j;
        if (s_key_byte(f, k, c, &j) == R_REJECT) return R_REJECT;
        if (j >= 0) f->b = j, f->a = j + 1, f->phase = O_COLON;
        return R_TAKEN;
    }
    default: return s_step_colon_value(s, g, f, c, k[f->b].node);
    }
}

static int s_step_object_any(st_gstate_t *s, const st_grammar_t *g, st_gframe_t *f, unsigned char c) {
    const int32_t key = g->nodes[g->any].alt[G_C_STRING];
    switch (f->phase) {
    case O_OPEN: return s_expect(f, c, '{', O_FIRST);
    case O_FIRST:
    case O_AFTER_VALUE:
        if (c == '}') return R_DONE;
        if (f->phase == O_FIRST) goto key;
        return s_expect(f, c, ',', O_AFTER_COMMA);
    case O_AFTER_COMMA:
        if (s_space(f, c, O_KEYSTART)) return R_TAKEN;
        /* fall through */
    case O_KEYSTART:
    key:
        if (c != '"') return R_REJECT;
        f->phase = O_COLON;
        return s_push(s, g, key) ? R_PUSHED : R_REJECT; /* the key is a string node */
    default: return s_step_colon_value(s, g, f, c, g->any);
    }
}

static int s_step_array(st_gstate_t *s, const st_grammar_t *g, st_gframe_t *f, const g_node_t *nd, unsigned char c) {
    switch (f->phase) {
    case A_OPEN: return s_expect(f, c, '[', A_FIRST);
    case A_FIRST:
        if (c == ']') return nd->min == 0 ? R_DONE : R_REJECT;
        break;
    case A_AFTER_VALUE:
        if (c == ']') return f->a >= nd->min ? R_DONE : R_REJECT;
        if (nd->max >= 0 && f->a >= nd->max) return R_REJECT;
        return s_expect(f, c, ',', A_AFTER_COMMA);
    case A_AFTER_COMMA:
        if (s_space(f, c, A_VAL)) return R_TAKEN;
        break;
    default: break;
    }
    if (nd->max >= 0 && f->a >= nd->max) return R_REJECT;
    f->a++;
    f->phase = A_AFTER_VALUE;
    return s_push(s, g, nd->item) ? R_PUSHED : R_REJECT;
}

static int s_step_string(st_gframe_t *f, const g_node_t *nd, unsigned char c) {
    switch (f->phase) {
    case S_OPEN: return s_expect(f, c, '"', S_BODY);
    case S_ESC:
        if (!strchr("\"\\/bfnrt", c) || c == 0) return R_REJECT;
        f->phase = S_BODY;
        return R_TAKEN;
    case S_UTF8:
        if (c < f->lo || c > f->hi) return R_REJECT;
        f->lo = 0x80, f->hi = 0xBF;
        if (--f->n == 0) f->phase = S_BODY;
        return R_TAKEN;
    default: break;
    }
    if (c == '"') return f->a >= nd->min ? R_DONE : R_REJECT;
    if (c < 0x20) return R_REJECT;
    if (nd->max >= 0 && f->a >= nd->max) return R_REJECT;
    if (c == '\\') {
        f->phase = S_ESC;
    } else if (c >= 0x80) { /* UTF-8: no overlong forms, surrogates or code points past U+10FFFF */
        f->lo = 0x80, f->hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            f->n = 1;
        else if (c >= 0xE0 && c <= 0xEF)
            f->n = 2, f->lo = c == 0xE0 ? 0xA0 : 0x80, f->hi = c == 0xED ? 0x9F : 0xBF;
        else if (c >= 0xF0 && c <= 0xF4)
            f->n = 3, f->lo = c == 0xF0 ? 0x90 : 0x80, f->hi = c == 0xF4 ? 0x8F : 0xBF;
        else
            return R_REJECT;
        f->phase = S_UTF8;
    }
    f->a++;
    return R_TAKEN;
}

static int s_step_number(st_gframe_t *f, const g_node_t *nd, unsigned char c) {
    num_t p = s_num_parse(f->text, f->n);
    if (f->n + 1 < (int)sizeof f->text && s_num_syntax(nd, &p, c)) {
        char t[sizeof f->text];
        memcpy(t, f->text, f->n);
        t[f->n] = (char)c;
        num_t q = s_num_parse(t, f->n + 1);
        if (s_num_min_from(nd, &q) >= 0) {
            f->text[f->n++] = (char)c;
            for (int L = 1; L <= s_num_maxlen(nd); L++)
                if (s_num_reach(nd, &q, L)) return R_TAKEN;
            return R_DONE; /* nothing can follow: the number is over */
        }
    }
    return s_num_reach(nd, &p, 0) ? R_PASS : R_REJECT;
}

static int s_step_literal(st_gframe_t *f, const st_grammar_t *g, unsigned char c) {
    const g_lit_t *l = g->lits;
    int lo = -1, hi = -1;
    for (int i = f->a; i <= f->b; i++) /* sorted: the texts that go on with c are contiguous */
        if (l[i].len > f->c && (unsigned char)l[i].text[f->c] == c) {
            if (lo < 0) lo = i;
            hi = i;
        }
    if (lo < 0) return l[f->a].len == f->c ? R_PASS : R_REJECT;
    f->a = lo, f->b = hi, f->c++;
    return lo == hi && l[lo].len == f->c ? R_DONE : R_TAKEN;
}

static int s_step(st_gstate_t *s, const st_grammar_t *g, unsigned char c) {
    st_gframe_t *f = &s->f[s->depth - 1];
    const g_node_t *nd = &g->nodes[f->node];
    switch (nd->kind) {
    case G_OBJECT: return s_step_object(s, g, f, nd, c);
    case G_OBJECT_ANY: return s_step_object_any(s, g, f, c);
    case G_ARRAY: return s_step_array(s, g, f, nd, c);
    case G_STRING: return s_step_string(f, nd, c);
    case G_NUMBER: return s_step_number(f, nd, c);
    case G_LITERAL: return s_step_literal(f, g, c);
    case G_UNION: {
        int cls = g_class_of(c);
        if (cls < 0 || nd->alt[cls] < 0) return R_REJECT;
        s_frame_init(f, g, nd->alt[cls]);
        return R_PUSHED; /* the chosen node takes the byte */
    }
    case G_SEQ:
        if (f->a >= nd->count) return R_PASS;
        f->a++;
        return s_push(s, g, g->kids[nd->first + f->a - 1]) ? R_PUSHED : R_REJECT;
    case G_ALT: {
        int j;
        if (s_key_byte(f, s_keys(g, nd), c, &j) == R_REJECT) return R_REJECT;
        if (j >= 0) s_frame_init(f, g, g->keys[nd->first + j].node); /* the text chose its node */
        return R_TAKEN;
    }
    }
    return R_REJECT;
}

/* A sequence whose last part has ended is over too. */
static void s_pop(st_gstate_t *s, const st_grammar_t *g) {
    s->depth--;
    while (s->depth > 0) {
        const st_gframe_t *f = &s->f[s->depth - 1];
        const g_node_t *nd = &g->nodes[f->node];
        if (nd->kind != G_SEQ || f->a < nd->count) break;
        s->depth--;
    }
    if (s->depth == 0) s->ended = true;
}

bool st_gstate_feed(st_gstate_t *s, const st_grammar_t *g, unsigned char c) {
    while (s->depth > 0) {
        switch (s_step(s, g, c)) {
        case R_TAKEN: return true;
        case R_DONE: s_pop(s, g); return true;
        case R_PASS: s_pop(s, g); continue;
        case R_PUSHED: continue;
        default: return false;
        }
    }
    return false;
}

bool st_gstate_feed_bytes(st_gstate_t *s, const st_grammar_t *g, const char *p, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (!st_gstate_feed(s, g, (unsigned char)p[i])) return false;
    return true;
}

static bool s_frame_complete(const st_grammar_t *g, const st_gframe_t *f) {
    const g_node_t *nd = &g->nodes[f->node];
    switch (nd->kind) {
    case G_NUMBER: {
        num_t p = s_num_parse(f->text, f->n);
        return s_num_reach(nd, &p, 0);
    }
    case G_LITERAL: return g->lits[f->a].len == f->c;
    case G_SEQ: return f->a >= nd->count;
    default: return false;
    }
}

bool st_gstate_complete(const st_gstate_t *s, const st_grammar_t *g) {
    if (s->depth == 0) return s->ended;
    for (int i = s->depth - 1; i >= 0; i--)
        if (!s_frame_complete(g, &s->f[i])) return false;
    return true;
}

bool st_gstate_finished(const st_gstate_t *s) { return s->depth == 0 && s->ended; }

/* The fewest bytes that finish one of the candidate texts cand of nd from
 * byte pos and its node; in an object (G_OBJECT) also the ':' after the key,
 * the required keys after it and the closing brace. */
static int s_min_key(const st_grammar_t *g, const g_node_t *nd, uint64_t cand, int pos) {
    const g_key_t *k = s_keys(g, nd);
    int best = -1;
    for (uint64_t m = cand; m; m &= m - 1) {
        int j = __builtin_ctzll(m);
        int v = k[j].len - pos + g->nodes[k[j].node].minlen;
        if (nd->kind == G_OBJECT) v += 1 + s_req_len(g, nd, j + 1) + 1;
        if (best < 0 || v < best) best = v;
    }
    return best < 0 ? 0 : best;
}

static int s_frame_min(const st_grammar_t *g, const st_gframe_t *f) {
    const g_node_t *nd = &g->nodes[f->node];
    switch (nd->kind) {
    case G_OBJECT: {
        const g_key_t *k = s_keys(g, nd);
        switch (f->phase) {
        case O_OPEN: return nd->minlen;
        case O_FIRST: return nd->minlen - 1;
        case O_KEY: return s_min_key(g, nd, f->cand, f->c);
        case O_COLON: return 1 + g->nodes[k[f->b].node].minlen + s_req_len(g, nd, f->a) + 1;
        case O_AFTER_COLON:
        case O_VAL: return g->nodes[k[f->b].node].minlen + s_req_len(g, nd, f->a) + 1;
        case O_AFTER_VALUE: return s_req_len(g, nd, f->a) + 1;
        default: return s_min_key(g, nd, s_obj_cands(g, nd, f->a), 0);
        }
    }
    case G_OBJECT_ANY: {
        static const int m[] = {
            [O_OPEN] = 2, [O_FIRST] = 1,       [O_COLON] = 3,       [O_AFTER_COLON] = 2, [O_VAL] = 2,
            [O_KEY] = 3,  [O_AFTER_VALUE] = 1, [O_AFTER_COMMA] = 5, [O_KEYSTART] = 5};
        return m[f->phase];
    }
    case G_ARRAY: {
        int ml = g->nodes[nd->item].minlen, rem;
        switch (f->phase) {
        case A_OPEN: return nd->minlen;
        case A_FIRST: return nd->minlen - 1;
        case A_AFTER_VALUE: rem = nd->min > f->a ? nd->min - f->a : 0; return rem * (ml + 1) + 1;
        default: rem = nd->min > f->a ? nd->min - f->a : 1; return rem * ml + rem;
        }
    }
    case G_STRING: {
        int rem = nd->min > f->a ? nd->min - f->a : 0;
        switch (f->phase) {
        case S_OPEN: return nd->minlen;
        case S_ESC: return 2 + rem;
        case S_UTF8: return f->n + rem + 1;
        default: return rem + 1;
        }
    }
    case G_NUMBER: {
        num_t p = s_num_parse(f->text, f->n);
        int L = s_num_min_from(nd, &p);
        return L < 0 ? 0 : L;
    }
    case G_LITERAL: {
        int best = g->lits[f->a].len - f->c;
        for (int i = f->a + 1; i <= f->b; i++)
            if (g->lits[i].len - f->c < best) best = g->lits[i].len - f->c;
        return best;
    }
    case G_SEQ: {
        int sum = 0;
        for (int i = f->a; i < nd->count; i++) sum += g->nodes[g->kids[nd->first + i]].minlen;
        return sum;
    }
    case G_ALT: return s_min_key(g, nd, f->cand, f->c);
    case G_UNION: return nd->minlen;
    }
    return 0;
}

int st_gstate_min_remaining(const st_gstate_t *s, const st_grammar_t *g) {
    int sum = 0;
    for (int i = 0; i < s->depth; i++) sum += s_frame_min(g, &s->f[i]);
    return sum;
}

int st_grammar_min_length(const st_grammar_t *g) { return g->nodes[g->root].minlen; }
