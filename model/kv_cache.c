/* KV cache of one sequence: per layer, K and V rows of n_head_kv*head_dim
 * elements (F16 or F32). Global layers keep every position; sliding-window
 * layers keep a ring of n_swa + n_batch slots, enough for a whole batch to
 * write its keys before any of its tokens reads the window behind it.
 *
 * Position p lives in slot p % cap. A ring that has gone past position n by
 * more than its slack has overwritten part of the window that position n
 * reads, so such a cache cannot be rewound to n (st_kv_prefix_usable); the
 * prompt cache (server/prompt_cache.c) then prefills again. */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "forward_internal.h"
#include "st_log.h"

st_kv_t *st_kv_new(const st_ctx_t *c, int n_ctx) {
    const st_config_t *cfg = &c->m->cfg;
    if (n_ctx < 1 || n_ctx > c->p.n_ctx) {
        st_fail(ST_EINVAL, "n_ctx %d not in 1..%d (the context's limit)", n_ctx, c->p.n_ctx);
        return NULL;
    }
    st_kv_t *kv = st_calloc(1, sizeof *kv);
    if (!kv) {
        st_fail(ST_ENOMEM, "no memory for a KV cache of %d positions", n_ctx);
        return NULL;
    }
    kv->n_ctx = n_ctx;
    kv->n_swa = cfg->n_swa;
    kv->type = c->p.kv_type;
    kv->row = (size_t)cfg->n_head_kv * cfg->head_dim;
    size_t esz = kv->type == ST_TYPE_F32 ? 4 : 2;
    kv->layers = st_calloc((size_t)cfg->n_layer, sizeof *kv->layers);
    if (!kv->layers) goto fail;
    for (int il = 0; il < cfg->n_layer; il++) {
        int cap = n_ctx;
        if (cfg->is_swa[il] && cfg->n_swa + c->p.n_batch < cap) cap = cfg->n_swa + c->p.n_batch;
        kv->layers[il].cap = cap;
        kv->layers[il].k = st_malloc((size_t)cap * kv->row * esz);
        kv->layers[il].v = st_malloc((size_t)cap * kv->row * esz);
        if (!kv->layers[il].k || !kv->layers[il].v) goto fail;
    }
    kv->n_layer = cfg->n_layer;
    return kv;
fail:
    kv->n_layer = cfg->n_layer;
    st_kv_destroy(&kv);
    st_fail(ST_ENOMEM, "no memory for a KV cache of %d positions", n_ctx);
    return NULL;
}

void st_kv_destroy(st_kv_t **kvp) {
    if (!kvp || !*kvp) return;
    st_kv_t *kv = *kvp;
    if (kv->layers)
        for (int il = 0; il < kv->n_layer; il++) {
            free(kv->layers[il].k);
            free(kv->layers[il].v);
        }
    free(kv->layers);
    free(kv);
    *kvp = NULL;
}

int st_kv_pos(const st_kv_t *kv) { return kv->pos; }
int st_kv_capacity(const st_kv_t *kv) { return kv->n_ctx; }
void st_kv_clear(st_kv_t *kv) { kv->pos = 0; }

size_t st_kv_bytes(const st_kv_t *kv) {
    size_t esz = kv->type == ST_TYPE_F32 ? 4 : 2, n = 0;
    for (int il = 0; il < kv->n_layer; il++) n += (size_t)kv->layers[il].cap * kv->row * esz * 2;
    return n;
}

/* Positions [from, n) that continuing at n reads in layer il: all of them in a
 * global layer, the window's in a ring. */
static int s_needed_from(const st_kv_t *kv, int il, int n) {
    if (kv->layers[il].cap >= kv->n_ctx) return 0; /* never wraps */
    return n - kv->n_swa + 1 > 0 ? n - kv->n_swa + 1 : 0;
}

bool st_kv_prefix_usable(const st_kv_t *kv, int n) {
    if (n < 0 || n > kv->pos) return false;
    if (n == 0) return true;
    for (int il = 0; il < kv->n_layer; il++) /* slots hold positions [pos - cap, pos) */
        if (s_needed_from(kv, il, n) < kv->pos - kv->layers[il].cap) return false;
    return true;
}

int st_kv_copy_prefix(st_kv_t *dst, const st_kv_t *src, int n) {
    if (dst->n_layer != src->n_layer || dst->row != src->row || dst->type != src->type || dst->n_swa != src->n_swa)
        return st_fail(ST_EINVAL, "caches of different shapes");
    if (n < 0 || n > src->pos || n > dst->n_ctx)
        return st_fail(ST_EINVAL, "prefix of %d positions: the source holds %d, the destination %d", n, src->pos,
                       dst->n_ctx);
    if (!st_kv_prefix_usable(src, n))
        return st_fail(ST_EINVAL, "a sliding-window ring of %d positions cannot be rewound to %d", src->pos, n);
    const size_t rb = src->row * (src->type == ST_TYPE_F32 ? 4 : 2);
    for (int il = 0; il < src->n_layer; il++) {
        const st_kv_layer_t *S = &src->layers[il];
        st_kv_layer_t *D = &dst->layers[il];
        int from = s_needed_from(src, il, n); /* older positions are not read again */
        if (n - D->cap > from) from = n - D->cap;
        if (src->pos - S->cap > from) from = src->pos - S->cap;
        for (int p = from; p < n; p++) {
            memcpy((char *)D->k + (size_t)(p % D->cap) * rb, (const char *)S->k + (size_t)(p % S->cap) * rb, rb);
            memcpy((char *)D->v + (size_t)(p % D->cap) * rb, (const char *)S->v + (size_t)(p % S->cap) * rb, rb);
        }
    }
    dst->pos = n;
    return 0;
}

void st_kv_shrink(st_kv_t *kv) {
    int n = kv->pos > 0 ? kv->pos : 1;
    size_t esz = kv->type == ST_TYPE_F32 ? 4 : 2;
    for (int il = 0; il < kv->n_layer; il++) {
        st_kv_layer_t *L = &kv->layers[il];
        if (L->cap <= n) continue; /* full, or a ring that wrapped: its slots stay where they are */
        /* fewer positions than slots: position p sits in slot p, in the smaller buffer too */
        void *k = st_realloc(L->k, (size_t)n * kv->row * esz);
        if (!k) continue;
        L->k = k;
        void *v = st_realloc(L->v, (size_t)n * kv->row * esz);
        if (v) L->v = v; /* else v keeps its larger buffer */
        L->cap = n;
    }
    kv->n_ctx = n;
}
