/* vocab_mask: grammar masks over the vocabulary (see vocab_mask.h). */
#include "vocab_mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "st_log.h"

#define ST_VOCAB_MAX_PIECE 255 /* longer pieces are never allowed (the scheduler copies 256 bytes a token) */

typedef struct {
    int32_t id;
    uint32_t off;
    uint16_t len, lcp; /* bytes, and bytes shared with the token before in sorted order */
    int32_t next[2];   /* the first token after this one that does not share its first 1 (2) bytes */
} vtok_t;

struct st_vocab {
    int n_vocab;
    char *bytes;
    uint32_t *off; /* by id */
    uint16_t *len; /* by id; 0: never allowed */
    bool *eog;     /* by id */
    int32_t *eog_ids;
    int n_eog;
    vtok_t *sorted;
    int n_sorted, max_len;
    bool all_bytes;
};

static int s_cmp(const void *a, const void *b, void *bytes) {
    const vtok_t *x = a, *y = b;
    int n = x->len < y->len ? x->len : y->len;
    int c = memcmp((const char *)bytes + x->off, (const char *)bytes + y->off, (size_t)n);
    return c ? c : x->len - y->len;
}

st_vocab_t *st_vocab_new(const st_tokenizer_t *tok) {
    st_vocab_t *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    int n = v->n_vocab = st_tokenizer_n_vocab(tok);
    v->off = calloc((size_t)n, sizeof *v->off);
    v->len = calloc((size_t)n, sizeof *v->len);
    v->eog = calloc((size_t)n, sizeof *v->eog);
    v->sorted = calloc((size_t)n, sizeof *v->sorted);
    v->eog_ids = calloc((size_t)n, sizeof *v->eog_ids);
    size_t cap = (size_t)n * 8 + 1024, used = 0;
    v->bytes = malloc(cap);
    if (!v->off || !v->len || !v->eog || !v->sorted || !v->eog_ids || !v->bytes) goto fail;
    bool single[256] = {0};
    for (int id = 0; id < n; id++) {
        v->eog[id] = st_token_is_eog(tok, id);
        if (v->eog[id]) v->eog_ids[v->n_eog++] = id;
        if (used + ST_VOCAB_MAX_PIECE + 1 > cap) {
            char *p = realloc(v->bytes, cap * 2);
            if (!p) goto fail;
            v->bytes = p;
            cap *= 2;
        }
        int len = st_token_to_piece(tok, id, false, v->bytes + used, ST_VOCAB_MAX_PIECE + 1);
        if (v->eog[id] || len <= 0 || len > ST_VOCAB_MAX_PIECE) continue;
        v->off[id] = (uint32_t)used;
        v->len[id] = (uint16_t)len;
        if (len == 1) single[(unsigned char)v->bytes[used]] = true;
        v->sorted[v->n_sorted++] = (vtok_t){.id = id, .off = (uint32_t)used, .len = (uint16_t)len};
        used += (size_t)len;
        if (len > v->max_len) v->max_len = len;
    }
    qsort_r(v->sorted, (size_t)v->n_sorted, sizeof *v->sorted, s_cmp, v->bytes);
    for (int i = 1; i < v->n_sorted; i++) {
        const vtok_t *a = &v->sorted[i - 1], *b = &v->sorted[i];
        int k = 0, m = a->len < b->len ? a->len : b->len;
        while (k < m && v->bytes[a->off + k] == v->bytes[b->off + k]) k++;
        v->sorted[i].lcp = (uint16_t)k;
    }
    for (int i = v->n_sorted - 1; i >= 0; i--) /* the tokens that share a prefix follow each other */
        for (int d = 0; d < 2; d++)
            v->sorted[i].next[d] = i + 1 < v->n_sorted && v->sorted[i + 1].lcp > d ? v->sorted[i + 1].next[d] : i + 1;
    v->all_bytes = true;
    for (int b = 0; b < 256; b++) v->all_bytes &= single[b];
    return v;
fail:
    st_vocab_destroy(&v);
    return NULL;
}

void st_vocab_destroy(st_vocab_t **vp) {
    st_vocab_t *v = *vp;
    if (!v) return;
    free(v->bytes);
    free(v->off);
    free(v->len);
    free(v->eog);
    free(v->eog_ids);
    free(v->sorted);
    free(v);
    *vp = NULL;
}

bool st_vocab_has_all_bytes(const st_vocab_t *v) { return v->all_bytes; }

/* ---- one sequence's constraint ------------------------------------------------------ */

struct st_gmask {
    const st_grammar_t *g;
    const st_vocab_t *v;
    int left; /* tokens the answer may still take */
    st_gstate_t cur;
    st_gstate_t *walk; /* max_len + 1 states: after each byte of the token being tried */
    int32_t *best;     /* the best tokens by logit, for the first try */
    float *best_v;
    int best_cap;
    uint8_t *ok; /* by id, for the whole walk */
    st_gmask_stats_t st;
};

st_gmask_t *st_gmask_new(const st_grammar_t *g, const st_vocab_t *v, int max_tokens) {
    st_gmask_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->g = g;
    m->v = v;
    m->left = max_tokens;
    st_gstate_init(&m->cur, g);
    m->walk = malloc(((size_t)v->max_len + 1) * sizeof *m->walk);
    m->ok = malloc((size_t)v->n_vocab);
    if (!m->walk || !m->ok) st_gmask_destroy(&m);
    return m;
}

void st_gmask_destroy(st_gmask_t **mp) {
    st_gmask_t *m = *mp;
    if (!m) return;
    free(m->walk);
    free(m->best);
    free(m->best_v);
    free(m->ok);
    free(m);
    *mp = NULL;
}

/* The answer can still be completed in the tokens left after this one. */
static bool s_fits(const st_gmask_t *m, const st_gstate_t *s) {
    return st_gstate_finished(s) || st_gstate_min_remaining(s, m->g) <= m->left - 1;
}

static bool s_token_ok(st_gmask_t *m, int32_t id) {
    const st_vocab_t *v = m->v;
    if (id < 0 || id >= v->n_vocab) return false;
    if (v->eog[id]) return st_gstate_complete(&m->cur, m->g);
    if (!v->len[id]) return false;
    m->st.tokens_checked++;
    m->st.bytes_fed += v->len[id];
    st_gstate_t *s = &m->walk[0];
    st_gstate_copy(s, &m->cur);
    return st_gstate_feed_bytes(s, m->g, v->bytes + v->off[id], v->len[id]) && s_fits(m, s);
}

/* The k best logits' ids, best first (ties: lower id first). */
static int s_best(st_gmask_t *m, const float *logits, int n, int k) {
    if (k > n) k = n;
    if (k > m->best_cap) {
        int32_t *b = realloc(m->best, (size_t)k * sizeof *b);
        if (b) m->best = b;
        float *bv = realloc(m->best_v, (size_t)k * sizeof *bv);
        if (bv) m->best_v = bv;
        if (!b || !bv) return 0;
        m->best_cap = k;
    }
    int cnt = 0;
    for (int i = 0; i < n; i++) {
        float x = logits[i];
        if (cnt == k && !(x > m->best_v[k - 1])) continue;
        int j = cnt < k ? cnt++ : k - 1;
        while (j > 0 && x > m->best_v[j - 1]) {
            m->best[j] = m->best[j - 1];
            m->best_v[j] = m->best_v[j - 1];
            j--;
        }
        m->best[j] = i;
        m->best_v[j] = x;
    }
    return cnt;
}

/* Every allowed token marked in m->ok: the vocabulary in sorted order, each
 * token fed from the state after the bytes it shares with the one before. */
static void s_walk(st_gmask_t *m) {
    const st_vocab_t *v = m->v;
    m->st.full_walks++;
    memset(m->ok, 0, (size_t)v->n_vocab);
    bool complete = st_gstate_complete(&m->cur, m->g);
    for (int i = 0; i < v->n_eog; i++) m->ok[v->eog_ids[i]] = complete;
    st_gstate_copy(&m->walk[0], &m->cur);
    int good = 0; /* walk[0..good] hold the states after the first bytes of the token before */
    for (int i = 0; i < v->n_sorted; i++) {
        const vtok_t *t = &v->sorted[i];
        if (t->lcp > good) continue; /* it starts with the prefix the grammar refused (deeper than 2 bytes) */
        const unsigned char *p = (const unsigned char *)v->bytes + t->off;
        int d = t->lcp;
        for (; d < t->len; d++) {
            st_gstate_copy(&m->walk[d + 1], &m->walk[d]);
            if (!st_gstate_feed(&m->walk[d + 1], m->g, p[d])) break;
        }
        m->st.bytes_fed += (uint64_t)(d - t->lcp + (d < t->len));
        m->st.tokens_checked++;
        good = d;
        if (d == t->len && s_fits(m, &m->walk[d])) m->ok[t->id] = 1;
        if (d < t->len && d < 2) i = t->next[d] - 1; /* refused at byte d: so is every token that shares it */
    }
}

/* First index of the largest logit (eight running maxima: vector max instructions). */
static int s_argmax(const float *x, int n) {
    float m8[8];
    for (int j = 0; j < 8; j++) m8[j] = -INFINITY;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) m8[j] = x[i + j] > m8[j] ? x[i + j] : m8[j];
    float mx = -INFINITY;
    for (int j = 0; j < 8; j++) mx = m8[j] > mx ? m8[j] : mx;
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (i = 0; i < n; i++)
        if (x[i] == mx) return i;
    return 0;
}

/* Greedy: the best token is usually allowed; a few tries cost less than
 * sorting out the best 64. When they fail, few tokens fit: the walk is cheap. */
static bool s_greedy(st_gmask_t *m, float *logits, int n_vocab) {
    int32_t tried[4];
    float saved[4];
    int n = 0, found = -1;
    for (; n < 4 && found < 0; n++) {
        tried[n] = s_argmax(logits, n_vocab);
        saved[n] = logits[tried[n]];
        if (s_token_ok(m, tried[n])) found = tried[n];
        logits[tried[n]] = -INFINITY;
    }
    for (int i = n - 1; i >= 0; i--) logits[tried[i]] = saved[i];
    if (found < 0) return false;
    float keep = logits[found];
    for (int i = 0; i < n_vocab; i++) logits[i] = -INFINITY;
    logits[found] = keep;
    return true;
}

int st_gmask_apply(st_gmask_t *m, float *logits, int n_vocab, int n_best) {
    m->st.applies++;
    if (n_best == 1 && s_greedy(m, logits, n_vocab)) return 0;
    if (n_best > 1) { /* the best tokens first: usually enough of them are allowed */
        int k = n_best * 4 > 64 ? n_best * 4 : 64;
        int n = s_best(m, logits, n_vocab, k), found = 0;
        for (int i = 0; i < n && found < n_best; i++)
            if (s_token_ok(m, m->best[i])) {
                m->best[found] = m->best[i];
                m->best_v[found++] = m->best_v[i];
            }
        if (found == n_best) {
            for (int i = 0; i < n_vocab; i++) logits[i] = -INFINITY;
            for (int i = 0; i < found; i++) logits[m->best[i]] = m->best_v[i];
            return 0;
        }
    }
    s_walk(m);
    int allowed = 0;
    for (int i = 0; i < n_vocab; i++) {
        bool ok = i < m->v->n_vocab && m->ok[i];
        allowed += ok;
        if (!ok) logits[i] = -INFINITY;
    }
    return allowed ? 0 : st_fail(ST_ERANGE, "the grammar allows no token (%d left)", m->left);
}

int st_gmask_accept(st_gmask_t *m, int32_t id) {
    const st_vocab_t *v = m->v;
    m->left--;
    if (id >= 0 && id < v->n_vocab && v->eog[id]) return 0;
    if (id < 0 || id >= v->n_vocab || !v->len[id] ||
        !st_gstate_feed_bytes(&m->cur, m->g, v->bytes + v->off[id], v->len[id]))
        return st_fail(ST_EINVAL, "token %d breaks the grammar", id);
    return 0;
}

static int s_mask_cb(void *m, float *logits, int n_vocab, int n_best) {
    return st_gmask_apply(m, logits, n_vocab, n_best);
}

static int s_accept_cb(void *m, int32_t token) { return st_gmask_accept(m, token); }

st_sampler_constraint_t st_gmask_constraint(st_gmask_t *m) {
    return (st_sampler_constraint_t){.mask = s_mask_cb, .accept = s_accept_cb, .arg = m};
}

bool st_gmask_finished(const st_gmask_t *m) { return st_gstate_finished(&m->cur); }

bool st_gmask_complete(const st_gmask_t *m) { return st_gstate_complete(&m->cur, m->g); }

st_gmask_stats_t st_gmask_stats(const st_gmask_t *m) { return m->st; }
