/* prompt_cache: finished sequences' KV caches, reused by the next prompts
 * that start with their tokens (see prompt_cache.h).
 *
 * An entry is the token sequence a KV cache holds, shrunk to what it stores.
 * A lookup takes the entry with the longest common prefix that the cache can
 * continue from exactly (st_kv_prefix_usable: a sliding-window ring can only
 * be rewound within its slack) and copies that prefix into a new KV cache of
 * the request's size, so the entry stays for other requests (a system prompt
 * shared by many users, a conversation branched at an earlier turn). The
 * copy costs a memcpy of the prefix's rows, far less than prefilling it.
 * Entries are kept most recently used first; the oldest go when the budget
 * is exceeded. A few hundred entries at most fit any sensible budget, so the
 * lookup compares tokens linearly.
 */
#include <stdlib.h>
#include <string.h>

#include "prompt_cache.h"
#include "st_log.h"

typedef struct entry {
    int32_t *toks;
    int n;
    st_kv_t *kv;
    size_t bytes;
    struct entry *prev, *next;
} entry_t;

struct st_pcache {
    st_ctx_t *c;
    entry_t *head, *tail; /* most recently used first */
    st_pcache_stats_t st;
};

st_pcache_t *st_pcache_new(st_ctx_t *c, size_t budget) {
    st_pcache_t *pc = calloc(1, sizeof *pc);
    if (!pc) return NULL;
    pc->c = c;
    pc->st.budget = budget;
    return pc;
}

static void s_unlink(st_pcache_t *pc, entry_t *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        pc->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        pc->tail = e->prev;
    e->prev = e->next = NULL;
}

static void s_push_front(st_pcache_t *pc, entry_t *e) {
    e->prev = NULL;
    e->next = pc->head;
    if (pc->head) pc->head->prev = e;
    pc->head = e;
    if (!pc->tail) pc->tail = e;
}

static void s_drop(st_pcache_t *pc, entry_t *e) {
    s_unlink(pc, e);
    pc->st.bytes -= e->bytes;
    pc->st.entries--;
    st_kv_destroy(&e->kv);
    free(e->toks);
    free(e);
}

void st_pcache_destroy(st_pcache_t **pcp) {
    st_pcache_t *pc = *pcp;
    if (!pc) return;
    while (pc->head) s_drop(pc, pc->head);
    free(pc);
    *pcp = NULL;
}

static int s_common(const int32_t *a, const int32_t *b, int n) {
    int i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

st_kv_t *st_pcache_take(st_pcache_t *pc, const int32_t *prompt, int n, int n_ctx, int *n_cached) {
    *n_cached = 0;
    entry_t *best = NULL;
    int best_n = 0;
    for (entry_t *e = pc->head; e; e = e->next) {
        int p = s_common(e->toks, prompt, e->n < n - 1 ? e->n : n - 1);
        if (p > best_n && st_kv_prefix_usable(e->kv, p)) best = e, best_n = p;
    }
    st_kv_t *kv = st_kv_new(pc->c, n_ctx);
    if (!kv) return NULL;
    if (best && st_kv_copy_prefix(kv, best->kv, best_n) == 0) {
        s_unlink(pc, best);
        s_push_front(pc, best);
        *n_cached = best_n;
        pc->st.hits++;
        pc->st.cached_tokens += (uint64_t)best_n;
    } else {
        pc->st.misses++;
    }
    return kv;
}

void st_pcache_keep(st_pcache_t *pc, const int32_t *tokens, st_kv_t **kvp) {
    st_kv_t *kv = *kvp;
    *kvp = NULL;
    int n = kv ? st_kv_pos(kv) : 0;
    if (!kv || n == 0 || pc->st.budget == 0) {
        st_kv_destroy(&kv);
        return;
    }
    /* an entry that this one continues exactly from its end is superseded */
    for (entry_t *e = pc->head, *nx; e; e = nx) {
        nx = e->next;
        if (e->n <= n && s_common(e->toks, tokens, e->n) == e->n && st_kv_prefix_usable(kv, e->n)) s_drop(pc, e);
    }
    st_kv_shrink(kv);
    entry_t *e = calloc(1, sizeof *e);
    if (e) e->toks = malloc((size_t)n * sizeof *e->toks);
    size_t bytes = st_kv_bytes(kv);
    if (!e || !e->toks || bytes > pc->st.budget) {
        if (e) free(e->toks);
        free(e);
        st_kv_destroy(&kv);
        return;
    }
    memcpy(e->toks, tokens, (size_t)n * sizeof *e->toks);
    e->n = n;
    e->kv = kv;
    e->bytes = bytes;
    while (pc->tail && pc->st.bytes + bytes > pc->st.budget) {
        s_drop(pc, pc->tail);
        pc->st.evictions++;
    }
    s_push_front(pc, e);
    pc->st.bytes += bytes;
    pc->st.entries++;
}

void st_pcache_stats(const st_pcache_t *pc, st_pcache_stats_t *out) { *out = pc->st; }
