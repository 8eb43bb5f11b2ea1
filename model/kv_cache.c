/* KV cache of one sequence: per layer, K and V rows of n_head_kv*head_dim
 * elements (F16 or F32). Global layers keep every position; sliding-window
 * layers keep a ring of n_swa + n_batch slots, enough for a whole batch to
 * write its keys before any of its tokens reads the window behind it. */
#include <stdlib.h>
#include <string.h>

#include "forward_internal.h"
#include "st_log.h"

st_kv_t *st_kv_new(const st_ctx_t *c, int n_ctx) {
    const st_config_t *cfg = &c->m->cfg;
    if (n_ctx < 1 || n_ctx > c->p.n_ctx) {
        st_fail(ST_EINVAL, "n_ctx %d not in 1..%d (the context's limit)", n_ctx, c->p.n_ctx);
        return NULL;
    }
    st_kv_t *kv = calloc(1, sizeof *kv);
    if (!kv) return NULL;
    kv->n_ctx = n_ctx;
    kv->type = c->p.kv_type;
    kv->row = (size_t)cfg->n_head_kv * cfg->head_dim;
    size_t esz = kv->type == ST_TYPE_F32 ? 4 : 2;
    kv->layers = calloc((size_t)cfg->n_layer, sizeof *kv->layers);
    if (!kv->layers) goto fail;
    for (int il = 0; il < cfg->n_layer; il++) {
        int cap = n_ctx;
        if (cfg->is_swa[il] && cfg->n_swa + c->p.n_batch < cap) cap = cfg->n_swa + c->p.n_batch;
        kv->layers[il].cap = cap;
        kv->layers[il].k = malloc((size_t)cap * kv->row * esz);
        kv->layers[il].v = malloc((size_t)cap * kv->row * esz);
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
