/* Model loading: configuration from GGUF metadata (llama.cpp's rules and
 * defaults) and weight views bound to the mapping, every
 * shape and type checked against the configuration. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "alloc.h"
#include "st_log.h"

#define ARCH "smallthinker"

/* Reads ARCH.<key> as u32 into *out; required keys fail when absent. */
static int s_key_u32(const st_gguf_t *g, const char *key, int *out, bool required) {
    char full[128];
    snprintf(full, sizeof full, ARCH ".%s", key);
    uint32_t v;
    int rc = st_gguf_get_u32(g, full, &v);
    if (rc < 0) return rc;
    if (rc == 0) return required ? st_fail(ST_EFORMAT, "missing required key %s", full) : 0;
    if (v > (1u << 30)) return st_fail(ST_ERANGE, "key %s = %u is out of range", full, v);
    *out = (int)v;
    return 1;
}

static int s_key_f32(const st_gguf_t *g, const char *key, float *out, bool required) {
    char full[128];
    snprintf(full, sizeof full, ARCH ".%s", key);
    int rc = st_gguf_get_f32(g, full, out);
    if (rc == 0 && required) return st_fail(ST_EFORMAT, "missing required key %s", full);
    return rc;
}

/* Per-layer SWA / RoPE pattern, as llama.cpp derives it. */
static int s_layer_pattern(const st_gguf_t *g, st_config_t *c) {
    int window = 0;
    int rc = s_key_u32(g, "attention.sliding_window", &window, false);
    if (rc < 0) return rc;
    for (int il = 0; il < c->n_layer; il++) {
        c->is_swa[il] = false;
        c->use_rope[il] = true;
    }
    c->n_swa = 0;
    if (rc == 0 || window == 0) return 0;
    if (window != 4096) st_log(ST_LOG_WARN, "attention.sliding_window = %d; using 4096 as llama.cpp does", window);
    c->n_swa = 4096;

    const char *pkey = ARCH ".attention.sliding_window_pattern";
    st_gguf_vtype_t et;
    uint64_t n;
    const void *data;
    uint32_t period = 4;
    if (st_gguf_kv_type(g, pkey) == ST_GGUF_ARRAY) { /* one bool per layer */
        if (st_gguf_get_arr(g, pkey, &et, &n, &data) != 1) return ST_EFORMAT;
        if (n != (uint64_t)c->n_layer)
            return st_fail(ST_EFORMAT, "%s has %llu entries for %d layers", pkey, (unsigned long long)n, c->n_layer);
        for (int il = 0; il < c->n_layer; il++) {
            int64_t v;
            if (st_gguf_arr_int(g, pkey, (uint64_t)il, &v) != 1)
                return st_fail(ST_EFORMAT, "%s: bad element %d", pkey, il);
            c->is_swa[il] = v != 0;
        }
    } else {
        rc = st_gguf_get_u32(g, pkey, &period);
        if (rc < 0) return rc;
        for (int il = 0; il < c->n_layer; il++) c->is_swa[il] = period == 0 || il % (int)period != 0;
    }
    /* NoPE every 4th layer (n_no_rope_layer_step = 4), unless that step equals n_layer. */
    for (int il = 0; il < c->n_layer; il++) c->use_rope[il] = c->n_layer == 4 || il % 4 != 0;
    return 0;
}

static int s_read_config(const st_gguf_t *g, st_config_t *c) {
    memset(c, 0, sizeof *c);
    st_str_t arch;
    if (st_gguf_get_str(g, "general.architecture", &arch) != 1)
        return st_fail(ST_EFORMAT, "missing general.architecture");
    if (!st_str_eq(arch, ARCH))
        return st_fail(ST_EUNSUP, "architecture '%.*s' is not supported (expected " ARCH ")",
                       (int)(arch.len > 64 ? 64 : arch.len), arch.data);
    int rc;
    if ((rc = s_key_u32(g, "block_count", &c->n_layer, true)) < 0) return rc;
    if ((rc = s_key_u32(g, "embedding_length", &c->n_embd, true)) < 0) return rc;
    if ((rc = s_key_u32(g, "attention.head_count", &c->n_head, true)) < 0) return rc;
    c->n_ctx_train = 4096;
    if ((rc = s_key_u32(g, "context_length", &c->n_ctx_train, false)) < 0) return rc;
    c->n_head_kv = c->n_head;
    if ((rc = s_key_u32(g, "attention.head_count_kv", &c->n_head_kv, false)) < 0) return rc;
    if (c->n_layer < 1 || c->n_layer > ST_MAX_LAYERS)
        return st_fail(ST_EUNSUP, "block_count %d not in 1..%d", c->n_layer, ST_MAX_LAYERS);
    if (c->n_embd < 1 || c->n_head < 1 || c->n_head_kv < 1 || c->n_head % c->n_head_kv)
        return st_fail(ST_EFORMAT, "bad shape: n_embd %d, heads %d, kv heads %d", c->n_embd, c->n_head, c->n_head_kv);
    c->head_dim = c->n_embd / c->n_head;
    if ((rc = s_key_u32(g, "attention.key_length", &c->head_dim, false)) < 0) return rc;
    int vlen = c->head_dim, n_rot = c->head_dim;
    if ((rc = s_key_u32(g, "attention.value_length", &vlen, false)) < 0) return rc;
    if ((rc = s_key_u32(g, "rope.dimension_count", &n_rot, false)) < 0) return rc;
    if (c->head_dim < 2 || c->head_dim > 1024 || c->head_dim % 2 || vlen != c->head_dim || n_rot != c->head_dim)
        return st_fail(ST_EUNSUP, "head dims key %d / value %d / rope %d: only equal even sizes are supported",
                       c->head_dim, vlen, n_rot);
    if ((rc = s_key_u32(g, "expert_count", &c->n_expert, true)) < 0) return rc;
    if ((rc = s_key_u32(g, "expert_used_count", &c->n_expert_used, true)) < 0) return rc;
    if (c->n_expert < 1 || c->n_expert_used < 1 || c->n_expert_used > c->n_expert)
        return st_fail(ST_EFORMAT, "expert_used_count %d with expert_count %d", c->n_expert_used, c->n_expert);
    c->n_ff_exp = 0;
    if ((rc = s_key_u32(g, "expert_feed_forward_length", &c->n_ff_exp, false)) < 0) return rc;
    if (c->n_ff_exp == 0 && (rc = s_key_u32(g, "feed_forward_length", &c->n_ff_exp, false)) < 0) return rc;
    c->rope_base = 10000.0f;
    if ((rc = s_key_f32(g, "rope.freq_base", &c->rope_base, false)) < 0) return rc;
    c->rope_base_swa = c->rope_base;
    if ((rc = s_key_f32(g, "rope.freq_base_swa", &c->rope_base_swa, false)) < 0) return rc;
    if ((rc = s_key_f32(g, "attention.layer_norm_rms_epsilon", &c->rms_eps, true)) < 0) return rc;
    if ((rc = s_key_f32(g, "expert_weights_scale", &c->expert_weights_scale, false)) < 0) return rc;
    int gating = 0;
    if ((rc = s_key_u32(g, "expert_gating_func", &gating, false)) < 0) return rc;
    if (rc == 0) {
        /* PowerInfer's converter omits the key for sigmoid models (model.h). */
        st_log(ST_LOG_WARN, "no " ARCH ".expert_gating_func key: assuming sigmoid (PowerInfer file)");
        gating = ST_GATING_SIGMOID;
    }
    if (gating != ST_GATING_SOFTMAX && gating != ST_GATING_SIGMOID)
        return st_fail(ST_EUNSUP, "expert_gating_func %d (only 1 softmax, 2 sigmoid)", gating);
    c->gating = (st_gating_t)gating;
    return s_layer_pattern(g, c);
}

/* Binds a weight to a tensor with exactly the expected dims (ne2 = 1 for 2-D). */
static int s_bind(const st_gguf_t *g, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, st_weight_t *w) {
    const st_gguf_tensor_t *t = st_gguf_find_tensor(g, name);
    if (!t) return st_fail(ST_EFORMAT, "missing tensor %s", name);
    const st_type_traits_t *tr = st_type_traits(t->type);
    if (!tr || !tr->supported)
        return st_fail(ST_EUNSUP, "unsupported tensor type %s in tensor %s", st_type_name(t->type), name);
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != ne2 || t->ne[3] != 1)
        return st_fail(ST_EFORMAT, "tensor %s has shape [%lld,%lld,%lld,%lld], expected [%lld,%lld,%lld]", name,
                       (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                       (long long)ne0, (long long)ne1, (long long)ne2);
    const size_t row_bytes = st_row_size((st_type_t)t->type, ne0);
    *w = (st_weight_t){.type = (st_type_t)t->type,
                       .data = t->data,
                       .n_cols = ne0,
                       .n_rows = ne1,
                       .n_mat = ne2,
                       .row_bytes = row_bytes,
                       .mat_bytes = row_bytes * (size_t)ne1,
                       .name = t->name}; /* the file's layout: pack_rows 0 */
    return 0;
}

static int s_bind_f32(const st_gguf_t *g, const char *name, int64_t n, st_weight_t *w) {
    int rc = s_bind(g, name, n, 1, 1, w);
    if (rc == 0 && w->type != ST_TYPE_F32)
        return st_fail(ST_EUNSUP, "tensor %s is %s; norm weights must be F32", name, st_type_name(w->type));
    return rc;
}

static void *s_own(st_model_t *m, size_t bytes) {
    void **grown = st_realloc(m->owned, (size_t)(m->n_owned + 1) * sizeof *grown);
    if (!grown) return NULL;
    m->owned = grown;
    void *p = st_malloc(bytes);
    if (p) m->owned[m->n_owned++] = p;
    return p;
}

/* PowerInfer's transposed down {n_embd, n_ff, E}: float types are transposed
 * back into the standard layout (exact); quantized ones stay transposed and
 * the forward pass uses an axpy over neurons. */
static int s_bind_down(st_model_t *m, const char *name, st_layer_t *L) {
    const st_config_t *c = &m->cfg;
    const st_gguf_tensor_t *t = st_gguf_find_tensor(m->gguf, name);
    if (!t) return st_fail(ST_EFORMAT, "missing tensor %s", name);
    bool transposed = t->ne[0] == c->n_embd && t->ne[1] == c->n_ff_exp &&
                      (c->n_embd != c->n_ff_exp || st_gguf_find_tensor(m->gguf, "lm_head_profiler"));
    if (!transposed) return s_bind(m->gguf, name, c->n_ff_exp, c->n_embd, c->n_expert, &L->down_exps);
    int rc = s_bind(m->gguf, name, c->n_embd, c->n_ff_exp, c->n_expert, &L->down_exps);
    if (rc < 0) return rc;
    st_weight_t *w = &L->down_exps;
    size_t esz = w->type == ST_TYPE_F32 ? 4 : (w->type == ST_TYPE_F16 || w->type == ST_TYPE_BF16) ? 2 : 0;
    if (esz == 0) {
        L->down_transposed = true;
        return 0;
    }
    int64_t E = c->n_expert, F = c->n_ff_exp, D = c->n_embd;
    uint8_t *dst = s_own(m, (size_t)(E * F * D) * esz);
    if (!dst) return st_fail(ST_ENOMEM, "no memory to transpose %s", name);
    for (int64_t e = 0; e < E; e++)
        for (int64_t j = 0; j < F; j++)
            for (int64_t i = 0; i < D; i++)
                memcpy(dst + ((size_t)(e * D * F + i * F + j)) * esz, w->data + ((size_t)(e * F * D + j * D + i)) * esz,
                       esz);
    w->data = dst;
    w->n_cols = F;
    w->n_rows = D;
    w->row_bytes = (size_t)F * esz;
    w->mat_bytes = w->row_bytes * (size_t)D;
    return 0;
}

static int s_bind_layer(st_model_t *m, int il) {
    const st_config_t *c = &m->cfg;
    st_layer_t *L = &m->layers[il];
    const st_gguf_t *g = m->gguf;
    int64_t nq = (int64_t)c->n_head * c->head_dim, nkv = (int64_t)c->n_head_kv * c->head_dim;
    char name[ST_GGUF_MAX_NAME];
    int rc;
#define NAME(suffix) (snprintf(name, sizeof name, "blk.%d." suffix, il), name)
    if ((rc = s_bind_f32(g, NAME("attn_norm.weight"), c->n_embd, &L->attn_norm)) < 0) return rc;
    if (st_gguf_find_tensor(g, NAME("attn_qkv.weight"))) {
        st_weight_t qkv;
        if ((rc = s_bind(g, name, c->n_embd, nq + 2 * nkv, 1, &qkv)) < 0) return rc;
        L->wq = L->wk = L->wv = qkv;
        L->wq.n_rows = nq;
        L->wk.n_rows = L->wv.n_rows = nkv;
        L->wk.data = qkv.data + (size_t)nq * qkv.row_bytes;
        L->wv.data = qkv.data + (size_t)(nq + nkv) * qkv.row_bytes;
        L->wq.mat_bytes = (size_t)nq * qkv.row_bytes;
        L->wk.mat_bytes = L->wv.mat_bytes = (size_t)nkv * qkv.row_bytes;
    } else {
        if ((rc = s_bind(g, NAME("attn_q.weight"), c->n_embd, nq, 1, &L->wq)) < 0) return rc;
        if ((rc = s_bind(g, NAME("attn_k.weight"), c->n_embd, nkv, 1, &L->wk)) < 0) return rc;
        if ((rc = s_bind(g, NAME("attn_v.weight"), c->n_embd, nkv, 1, &L->wv)) < 0) return rc;
    }
    if ((rc = s_bind(g, NAME("attn_output.weight"), nq, c->n_embd, 1, &L->wo)) < 0) return rc;
    if ((rc = s_bind_f32(g, NAME("ffn_norm.weight"), c->n_embd, &L->ffn_norm)) < 0) return rc;
    if ((rc = s_bind(g, NAME("ffn_gate_inp.weight"), c->n_embd, c->n_expert, 1, &L->router)) < 0) return rc;
    if ((rc = s_bind(g, NAME("ffn_gate_exps.weight"), c->n_embd, c->n_ff_exp, c->n_expert, &L->gate_exps)) < 0)
        return rc;
    if ((rc = s_bind(g, NAME("ffn_up_exps.weight"), c->n_embd, c->n_ff_exp, c->n_expert, &L->up_exps)) < 0) return rc;
    /* gate and up read one conversion of the input (llama-quantize gives them one type) */
    if (st_type_traits(L->gate_exps.type)->vec_dot_type != st_type_traits(L->up_exps.type)->vec_dot_type)
        return st_fail(ST_EUNSUP, "layer %d: expert gate %s and up %s take different activation formats", il,
                       st_type_name(L->gate_exps.type), st_type_name(L->up_exps.type));
    if ((rc = s_bind_down(m, NAME("ffn_down_exps.weight"), L)) < 0) return rc;
#undef NAME
    return 0;
}

st_model_t *st_model_from_gguf(st_gguf_t **gp) {
    st_model_t *m = st_calloc(1, sizeof *m);
    if (!m) {
        st_gguf_destroy(gp);
        return NULL;
    }
    m->gguf = *gp;
    *gp = NULL;
    st_config_t *c = &m->cfg;
    if (s_read_config(m->gguf, c) < 0) goto fail;

    const st_gguf_tensor_t *emb = st_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!emb) {
        st_fail(ST_EFORMAT, "missing tensor token_embd.weight");
        goto fail;
    }
    if (emb->ne[1] < 1 || emb->ne[1] > (1 << 24)) {
        st_fail(ST_EFORMAT, "token_embd.weight has %lld rows", (long long)emb->ne[1]);
        goto fail;
    }
    c->n_vocab = (int)emb->ne[1];
    if (c->n_ff_exp == 0) { /* no FFN length key: take it from the expert tensors */
        const st_gguf_tensor_t *up = st_gguf_find_tensor(m->gguf, "blk.0.ffn_up_exps.weight");
        if (up && up->ne[1] > 0 && up->ne[1] < (1 << 20)) c->n_ff_exp = (int)up->ne[1];
    }
    if (c->n_ff_exp < 1) {
        st_fail(ST_EFORMAT, "no expert_feed_forward_length and no blk.0.ffn_up_exps.weight");
        goto fail;
    }
    if (s_bind(m->gguf, "token_embd.weight", c->n_embd, c->n_vocab, 1, &m->tok_embd) < 0) goto fail;
    if (s_bind_f32(m->gguf, "output_norm.weight", c->n_embd, &m->output_norm) < 0) goto fail;
    if (st_gguf_find_tensor(m->gguf, "output.weight")) {
        if (s_bind(m->gguf, "output.weight", c->n_embd, c->n_vocab, 1, &m->output) < 0) goto fail;
    } else {
        m->output = m->tok_embd; /* tied */
    }
    if (m->output.data != m->tok_embd.data) { /* untied: read one row per token, never streamed */
        /* a fault on the mapping would read the disk's whole read-around window (read_ahead_kb:
         * 8 MiB on this VM's disk) for a row of a few KiB */
        const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = (uintptr_t)m->tok_embd.data & ~(pg - 1);
        const uintptr_t b = (uintptr_t)m->tok_embd.data + (uintptr_t)m->tok_embd.row_bytes * m->tok_embd.n_rows;
        madvise((void *)a, b - a, MADV_RANDOM); /* a hint: only speed depends on it */
    }
    m->layers = st_calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) goto fail;
    for (int il = 0; il < c->n_layer; il++)
        if (s_bind_layer(m, il) < 0) goto fail;

    int rc = 0;
    m->tok = st_tokenizer_from_gguf(m->gguf, &rc);
    if (rc == ST_ENOMEM) goto fail; /* the file has one: running without it would change what a prompt means */
    if (!m->tok) st_log(ST_LOG_WARN, "no usable tokenizer in the file: token ids only");
    return m;
fail:
    st_model_destroy(&m);
    return NULL;
}

static st_model_t *s_load(const char *path, st_gguf_t *g) {
    if (!g) return NULL;
    st_model_t *m = st_model_from_gguf(&g);
    if (!m) st_log(ST_LOG_ERROR, "%s: not a usable SmallThinker model", path);
    return m;
}

st_model_t *st_model_load(const char *path) { return s_load(path, st_gguf_open(path)); }
/* m packed for this CPU's kernels (its experts too, or not), or NULL (logged). */
static st_model_t *s_packed(const char *path, st_model_t *m, bool experts) {
    if (m && st_model_pack(m, st_kernels_select(), experts) < 0) {
        st_log(ST_LOG_ERROR, "%s: cannot pack the weights", path);
        st_model_destroy(&m);
    }
    return m;
}

st_model_t *st_model_load_streaming(const char *path, bool pack_head) {
    st_model_t *m = st_model_load(path);
    if (m && !pack_head) m->head_mapped = true;
    return s_packed(path, m, false);
}
st_model_t *st_model_load_resident(const char *path) {
    return s_packed(path, s_load(path, st_gguf_open_resident(path)), true);
}

void st_model_destroy(st_model_t **mp) {
    if (!mp || !*mp) return;
    st_model_t *m = *mp;
    st_tokenizer_destroy(&m->tok);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    st_gguf_destroy(&m->gguf);
    free(m);
    *mp = NULL;
}

void st_model_describe(const st_model_t *m, char *buf, size_t cap) {
    const st_config_t *c = &m->cfg;
    int n_swa_layers = 0, n_nope = 0;
    for (int il = 0; il < c->n_layer; il++) {
        n_swa_layers += c->is_swa[il];
        n_nope += !c->use_rope[il];
    }
    snprintf(buf, cap,
             "smallthinker: %d layers, n_embd %d, %d/%d heads x %d, %d experts (top %d, %s), expert ffn %d, "
             "vocab %d, %d SWA layers, %d NoPE layers, weights %s",
             c->n_layer, c->n_embd, c->n_head, c->n_head_kv, c->head_dim, c->n_expert, c->n_expert_used,
             c->gating == ST_GATING_SIGMOID ? "sigmoid" : "softmax", c->n_ff_exp, c->n_vocab, n_swa_layers, n_nope,
             st_type_name(m->layers[0].gate_exps.type));
}
