/* remote_moe: experts computed by the nodes, results combined exactly as the
 * single-process path does (see remote_moe.h).
 *
 * Bytes on the wire per layer and involved node: one Envelope (layer, token
 * count, pair lists: a few dozen bytes in decode) plus the tokens' rows in the
 * gate's vec_dot format (Q8_0: 34 B per 32 values) out, and one Envelope plus
 * n_pairs x n_embd float32 back. Per-pair vectors cost k x n_embd x 4 B per
 * token and layer (against involved_nodes x n_embd x 4 B for partial sums),
 * and buy bit-identical logits: st_moe_combine() adds them in routing order,
 * which partial sums per node cannot reproduce.
 */
#include "remote_moe.h"

#include <fcntl.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "moe.h"
#include "st_log.h"
#include "threadpool.h"

/* ---- the model's experts ---------------------------------------------------- */

static void s_u64le(uint64_t v, uint8_t out[8]) {
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (8 * i));
}

int st_remote_model_shape(const st_model_t *m, st_wire_shape_t *s) {
    const st_config_t *cfg = &m->cfg;
    const st_layer_t *L0 = &m->layers[0];
    memset(s, 0, sizeof *s);
    if (cfg->n_layer < 1 || cfg->n_layer > ST_WIRE_MAX_LAYERS)
        return st_fail(ST_EUNSUP, "%d layers (the wire carries at most %d)", cfg->n_layer, ST_WIRE_MAX_LAYERS);
    s->n_layer = (uint32_t)cfg->n_layer;
    s->n_embd = (uint32_t)cfg->n_embd;
    s->n_ff_exp = (uint32_t)cfg->n_ff_exp;
    s->n_expert = (uint32_t)cfg->n_expert;
    s->n_expert_used = (uint32_t)cfg->n_expert_used;
    s->down_transposed = L0->down_transposed;
    /* types per layer (llama-quantize's mixes vary them); the layout (down transposed or not) is the model's */
    for (int il = 0; il < cfg->n_layer; il++) {
        const st_layer_t *L = &m->layers[il];
        if (L->down_transposed != L0->down_transposed)
            return st_fail(ST_EUNSUP, "layer %d's down experts are laid out unlike layer 0's", il);
        if (L->gate_exps.type >= 255 || L->up_exps.type >= 255 || L->down_exps.type >= 255)
            return st_fail(ST_EUNSUP, "layer %d: expert type ids %d/%d/%d", il, L->gate_exps.type, L->up_exps.type,
                           L->down_exps.type);
        s->gate_type[il] = (uint8_t)L->gate_exps.type;
        s->up_type[il] = (uint8_t)L->up_exps.type;
        s->down_type[il] = (uint8_t)L->down_exps.type;
        uint64_t sizes[3];
        st_wire_matrix_bytes(s, (uint32_t)il, sizes);
        if (sizes[0] != L->gate_exps.mat_bytes || sizes[1] != L->up_exps.mat_bytes ||
            sizes[2] != L->down_exps.mat_bytes)
            return st_fail(ST_EUNSUP, "layer %d: expert matrices of %zu/%zu/%zu B do not match the wire's layout", il,
                           (size_t)L->gate_exps.mat_bytes, (size_t)L->up_exps.mat_bytes,
                           (size_t)L->down_exps.mat_bytes);
    }

    /* the model hash: tag, file size, header bytes, expert tensor samples */
    const char *path = st_gguf_path(m->gguf);
    uint64_t size = st_gguf_file_size(m->gguf), data_start = size;
    for (int64_t i = 0; i < st_gguf_n_tensors(m->gguf); i++) {
        uint64_t off = st_gguf_tensor(m->gguf, i)->file_offset;
        data_start = off < data_start ? off : data_start;
    }
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, ST_WIRE_HASH_BYTES);
    uint8_t num[8];
    crypto_generichash_update(&st, (const uint8_t *)"st-model-hash-v2", 16); /* v2: per-layer expert types */
    s_u64le(size, num);
    crypto_generichash_update(&st, num, 8);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return st_fail(ST_EIO, "cannot open %s", path);
    uint8_t *buf = st_malloc(1 << 20);
    if (!buf) {
        close(fd);
        return st_fail(ST_ENOMEM, "no memory");
    }
    for (uint64_t off = 0; off < data_start;) {
        size_t want = data_start - off < (1u << 20) ? (size_t)(data_start - off) : (1u << 20);
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n <= 0) {
            free(buf);
            close(fd);
            return st_fail(ST_EIO, "cannot read the header of %s", path);
        }
        crypto_generichash_update(&st, buf, (size_t)n);
        off += (uint64_t)n;
    }
    free(buf);
    close(fd);
    for (int il = 0; il < cfg->n_layer; il++) {
        const st_weight_t *ws[3] = {&m->layers[il].gate_exps, &m->layers[il].up_exps, &m->layers[il].down_exps};
        for (int k = 0; k < 3; k++) {
            size_t n = ws[k]->mat_bytes * (size_t)cfg->n_expert, part = n < 4096 ? n : 4096;
            crypto_generichash_update(&st, ws[k]->data, part);
            crypto_generichash_update(&st, ws[k]->data + n - part, part);
        }
    }
    crypto_generichash_final(&st, s->model_hash, ST_WIRE_HASH_BYTES);
    char why[160];
    if (st_wire_check_shape(s, why, sizeof why) < 0) return st_fail(ST_EUNSUP, "the model's experts: %s", why);
    return 0;
}

int st_remote_expert_read(const st_model_t *m, uint32_t layer, uint32_t e, uint64_t offset, void *dst, size_t len) {
    if (layer >= (uint32_t)m->cfg.n_layer || e >= (uint32_t)m->cfg.n_expert) return ST_ERANGE;
    const st_layer_t *L = &m->layers[layer];
    const st_weight_t *ws[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    uint8_t *out = dst;
    for (int k = 0; k < 3 && len > 0; k++) {
        uint64_t mb = ws[k]->mat_bytes;
        if (offset >= mb) {
            offset -= mb;
            continue;
        }
        size_t n = mb - offset < len ? (size_t)(mb - offset) : len;
        memcpy(out, (const uint8_t *)st_weight_row(ws[k], e, 0) + offset, n);
        out += n;
        len -= n;
        offset = 0;
    }
    return len == 0 ? 0 : ST_ERANGE;
}

#define HASH_MAGIC "STHASH01"

struct st_expert_hashes {
    const st_model_t *m;
    st_wire_shape_t shape;
    char *path;
    int64_t mtime_s, mtime_ns;
    size_t n;       /* n_layer * n_expert */
    uint8_t *known; /* n flags */
    uint8_t *hash;  /* n x 32 */
    bool dirty;
};

static void s_hashes_load(st_expert_hashes_t *h) {
    FILE *f = h->path ? fopen(h->path, "rb") : NULL;
    if (!f) return;
    uint8_t head[8 + 32 + 8 * 3 + 8];
    uint8_t want[sizeof head];
    memcpy(want, HASH_MAGIC, 8);
    memcpy(want + 8, h->shape.model_hash, 32);
    s_u64le(st_gguf_file_size(h->m->gguf), want + 40);
    s_u64le((uint64_t)h->mtime_s, want + 48);
    s_u64le((uint64_t)h->mtime_ns, want + 56);
    s_u64le(h->n, want + 64);
    bool ok = fread(head, 1, sizeof head, f) == sizeof head && memcmp(head, want, sizeof head) == 0 &&
              fread(h->known, 1, h->n, f) == h->n && fread(h->hash, 32, h->n, f) == h->n;
    fclose(f);
    if (!ok) {
        memset(h->known, 0, h->n);
        st_log(ST_LOG_DEBUG, "%s does not match the model: hashes recomputed", h->path);
    }
}

st_expert_hashes_t *st_expert_hashes_new(const st_model_t *m, const st_wire_shape_t *shape, const char *cache_path) {
    st_expert_hashes_t *h = st_calloc(1, sizeof *h);
    if (!h) return NULL;
    h->m = m;
    h->shape = *shape;
    h->n = (size_t)shape->n_layer * shape->n_expert;
    h->known = st_calloc(h->n, 1);
    h->hash = st_calloc(h->n, 32);
    h->path = cache_path ? st_strdup(cache_path) : NULL;
    if (!h->known || !h->hash || (cache_path && !h->path)) {
        st_expert_hashes_destroy(&h);
        return NULL;
    }
    struct stat sb;
    if (stat(st_gguf_path(m->gguf), &sb) == 0) {
        h->mtime_s = (int64_t)sb.st_mtim.tv_sec;
        h->mtime_ns = (int64_t)sb.st_mtim.tv_nsec;
    }
    s_hashes_load(h);
    return h;
}

void st_expert_hashes_destroy(st_expert_hashes_t **hp) {
    if (!hp || !*hp) return;
    free((*hp)->known);
    free((*hp)->hash);
    free((*hp)->path);
    free(*hp);
    *hp = NULL;
}

typedef struct {
    st_expert_hashes_t *h;
    const uint32_t *todo;
    int n_todo;
} hash_job_t;

static void s_hash_expert(void *arg, int i, int ith) {
    (void)ith;
    const hash_job_t *j = arg;
    const st_model_t *m = j->h->m;
    const int X = m->cfg.n_expert;
    const uint32_t s = j->todo[i];
    const st_layer_t *L = &m->layers[s / X];
    const st_weight_t *ws[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, ST_WIRE_HASH_BYTES);
    for (int k = 0; k < 3; k++) crypto_generichash_update(&st, st_weight_row(ws[k], s % X, 0), ws[k]->mat_bytes);
    crypto_generichash_final(&st, j->h->hash + (size_t)s * 32, ST_WIRE_HASH_BYTES);
}

int st_expert_hashes_fill(st_expert_hashes_t *h, const uint8_t *want, int n_threads) {
    uint32_t *todo = st_malloc(h->n * sizeof *todo);
    if (!todo) return st_fail(ST_ENOMEM, "no memory");
    int n = 0;
    for (size_t s = 0; s < h->n; s++)
        if (!h->known[s] && (!want || want[s])) todo[n++] = (uint32_t)s;
    if (n > 0) {
        double t0 = st_now_ms();
        st_pool_t *pool = st_pool_new(n_threads < 1 ? 1 : n_threads);
        if (!pool) {
            free(todo);
            return st_fail(ST_ENOMEM, "no threads for hashing");
        }
        hash_job_t j = {h, todo, n};
        st_pool_for(pool, n, s_hash_expert, &j);
        st_pool_destroy(&pool);
        for (int i = 0; i < n; i++) h->known[todo[i]] = 1;
        h->dirty = true;
        st_log(ST_LOG_INFO, "hashed %d experts (%.1f MiB) in %.0f ms", n,
               (double)n * st_wire_max_expert_bytes(&h->shape) / (1 << 20), st_now_ms() - t0);
    }
    free(todo);
    return n;
}

const uint8_t *st_expert_hash(const st_expert_hashes_t *h, int layer, int e) {
    size_t s = (size_t)layer * h->shape.n_expert + (size_t)e;
    return s < h->n && h->known[s] ? h->hash + s * 32 : NULL;
}

void st_expert_hashes_save(st_expert_hashes_t *h) {
    if (!h->dirty || !h->path) return;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", h->path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    uint8_t head[8 + 32 + 8 * 3 + 8];
    memcpy(head, HASH_MAGIC, 8);
    memcpy(head + 8, h->shape.model_hash, 32);
    s_u64le(st_gguf_file_size(h->m->gguf), head + 40);
    s_u64le((uint64_t)h->mtime_s, head + 48);
    s_u64le((uint64_t)h->mtime_ns, head + 56);
    s_u64le(h->n, head + 64);
    bool ok = f && fwrite(head, 1, sizeof head, f) == sizeof head && fwrite(h->known, 1, h->n, f) == h->n &&
              fwrite(h->hash, 32, h->n, f) == h->n;
    if (f) ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, h->path) != 0) {
        unlink(tmp);
        st_log(ST_LOG_WARN, "cannot write the hash cache %s (hashes will be computed again next time)", h->path);
        return;
    }
    h->dirty = false;
}

/* ---- the backend ------------------------------------------------------------ */

typedef struct {
    uint64_t rt, involved, us, hits, misses, bytes_out, bytes_in, pairs;
} node_acc_t;

struct st_remote_moe {
    st_ctx_t *ctx;
    const st_model_t *m;
    st_cluster_t *cl;
    const st_placement_t *pl;
    st_remote_opts_t o;
    int N, E, K, X, L, B;
    size_t act_row;      /* largest activation row over the layers (conv's stride) */
    st_type_t gate_type; /* of the layer being computed */
    size_t row;          /* its activation row: bytes of one token in its gate's vec_dot format */

    int assigned_layer;                 /* layer whose pair_node is valid (-1: none) */
    int *pair_node;                     /* B*K: node computing the pair, -1 = here */
    uint8_t *pair_done;                 /* B*K: output in y */
    int *load;                          /* N: pairs per node in this layer */
    int *nd_n;                          /* N: pairs in the node's request */
    int32_t *nd_tok, *nd_exp, *nd_pair; /* N x B*K */
    int *nd_rows;                       /* N: token rows in the request */
    int32_t *nd_row_tok;                /* N x B: global token of each row */
    int32_t *tok_local;                 /* B: global token -> row in the current node's request */
    uint64_t *rids;                     /* N */
    bool *failed;                       /* N: no usable answer in this layer */
    uint8_t *conv;                      /* B rows of the current layer's row bytes */
    float *y;                           /* B*K x E per-pair outputs, routing order */
    int32_t *fb_tok, *fb_exp, *fb_pair;
    float *fb_y;
    uint32_t *pf; /* X: experts of one prefetch message */

    /* statistics */
    int cur_layer;
    bool step_open, step_decode;
    uint64_t n_decode_steps;
    node_acc_t *step, *dec, *pre; /* N each */
    int *rt_layer;                /* N: round trips in the current layer */
    st_remote_totals_t tot;
    uint64_t *route_counts; /* L x X */
};

/* (Re)sizes the per-node arrays for n nodes (more than before: a node
 * joined), keeping what they hold and zeroing the new entries. */
static int s_alloc_nodes(st_remote_moe_t *r, int n) {
    const size_t P = (size_t)r->B * r->K, B = (size_t)r->B, o = (size_t)r->N, N = (size_t)n;
    bool ok = true;
#define GROW(p, per)                                                                                                   \
    do {                                                                                                               \
        void *np_ = ok ? st_realloc((p), (N * (per) + 1) * sizeof *(p)) : NULL;                                        \
        if (!np_) {                                                                                                    \
            ok = false;                                                                                                \
            break;                                                                                                     \
        }                                                                                                              \
        (p) = np_;                                                                                                     \
        memset((p) + o * (per), 0, ((N - o) * (per) + 1) * sizeof *(p));                                               \
    } while (0)
    GROW(r->load, 1);
    GROW(r->nd_n, 1);
    GROW(r->nd_tok, P);
    GROW(r->nd_exp, P);
    GROW(r->nd_pair, P);
    GROW(r->nd_rows, 1);
    GROW(r->nd_row_tok, B);
    GROW(r->rids, 1);
    GROW(r->failed, 1);
    GROW(r->step, 1);
    GROW(r->dec, 1);
    GROW(r->pre, 1);
    GROW(r->rt_layer, 1);
#undef GROW
    if (!ok) return st_fail(ST_ENOMEM, "no memory for the buffers of %d nodes", n);
    r->N = n;
    return 0;
}

/* Per-node buffers for nodes added to the cluster since (st_cluster_add:
 * down until they answer, outside the placement until they are placed). */
static int s_follow_cluster(st_remote_moe_t *r) {
    const int n = st_cluster_n_nodes(r->cl), old = r->N;
    if (n <= old) return 0;
    if (s_alloc_nodes(r, n) < 0) return ST_ENOMEM;
    for (int i = old; i < n; i++) { /* the step's byte snapshot starts now for a new node */
        const st_node_stats_t *ns = st_cluster_stats(r->cl, i);
        r->step[i] = (node_acc_t){.bytes_out = ns->bytes_out, .bytes_in = ns->bytes_in};
    }
    return 0;
}

int st_remote_moe_set_placement(st_remote_moe_t *r, const st_placement_t *pl) {
    const int n = st_cluster_n_nodes(r->cl);
    if (st_placement_n_nodes(pl) > n)
        return st_fail(ST_EINVAL, "placement over %d nodes, cluster of %d", st_placement_n_nodes(pl), n);
    if (s_follow_cluster(r) < 0) return ST_ENOMEM;
    r->pl = pl;
    r->assigned_layer = -1;
    return 0;
}

st_remote_moe_t *st_remote_moe_new(st_ctx_t *ctx, st_cluster_t *cl, const st_placement_t *pl,
                                   const st_remote_opts_t *o) {
    st_remote_moe_t *r = st_calloc(1, sizeof *r);
    if (!r) return NULL;
    const st_model_t *m = st_ctx_model(ctx);
    r->ctx = ctx;
    r->m = m;
    r->cl = cl;
    r->pl = pl;
    r->o = *o;
    if (r->o.timeout_ms <= 0) r->o.timeout_ms = 10000;
    r->N = st_cluster_n_nodes(cl);
    r->E = m->cfg.n_embd;
    r->K = m->cfg.n_expert_used;
    r->X = m->cfg.n_expert;
    r->L = m->cfg.n_layer;
    r->B = st_ctx_params(ctx)->n_batch;
    r->act_row = 0;
    for (int il = 0; il < r->L; il++) { /* gate types may differ per layer: the widest row sizes conv */
        size_t row = st_row_size(st_type_traits(m->layers[il].gate_exps.type)->vec_dot_type, r->E);
        r->act_row = row > r->act_row ? row : r->act_row;
    }
    r->assigned_layer = -1;
    r->cur_layer = -1;
    const size_t P = (size_t)r->B * r->K;
    const int N = r->N;
    r->N = 0;
    bool ok = s_alloc_nodes(r, N) == 0;
#define ALLOC(p, n) ok = ok && ((p) = st_calloc((size_t)(n) + 1, sizeof *(p))) != NULL
    ALLOC(r->pair_node, P);
    ALLOC(r->pair_done, P);
    ALLOC(r->tok_local, (size_t)r->B);
    ALLOC(r->conv, (size_t)r->B * r->act_row);
    ALLOC(r->y, P * r->E);
    ALLOC(r->fb_tok, P);
    ALLOC(r->fb_exp, P);
    ALLOC(r->fb_pair, P);
    ALLOC(r->fb_y, P * r->E);
    ALLOC(r->pf, (size_t)r->X);
    ALLOC(r->route_counts, (size_t)r->L * r->X);
#undef ALLOC
    if (!ok) {
        st_remote_moe_destroy(&r);
        st_fail(ST_ENOMEM, "no memory for the remote MoE buffers");
    }
    return r;
}

void st_remote_moe_destroy(st_remote_moe_t **rp) {
    if (!rp || !*rp) return;
    st_remote_moe_t *r = *rp;
    void *bufs[] = {r->pair_node, r->pair_done, r->load,       r->nd_n,      r->nd_tok,   r->nd_exp,
                    r->nd_pair,   r->nd_rows,   r->nd_row_tok, r->tok_local, r->rids,     r->failed,
                    r->conv,      r->y,         r->fb_tok,     r->fb_exp,    r->fb_pair,  r->fb_y,
                    r->pf,        r->step,      r->dec,        r->pre,       r->rt_layer, r->route_counts};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(r);
    *rp = NULL;
}

/* -- statistics: a step is one pass of a batch through all layers -- */

static void s_step_close(st_remote_moe_t *r) {
    if (!r->step_open) return;
    r->step_open = false;
    node_acc_t *acc = r->step_decode ? r->dec : r->pre;
    if (r->step_decode) r->n_decode_steps++;
    if (r->o.stats && r->step_decode) fprintf(stderr, "stats: token %llu:", (unsigned long long)r->n_decode_steps);
    for (int i = 0; i < r->N; i++) {
        node_acc_t *s = &r->step[i];
        const st_node_stats_t *ns = st_cluster_stats(r->cl, i);
        s->bytes_out = ns->bytes_out - s->bytes_out; /* held the snapshot at the step's start */
        s->bytes_in = ns->bytes_in - s->bytes_in;
        acc[i].rt += s->rt;
        acc[i].involved += s->involved;
        acc[i].us += s->us;
        acc[i].hits += s->hits;
        acc[i].misses += s->misses;
        acc[i].bytes_out += s->bytes_out;
        acc[i].bytes_in += s->bytes_in;
        acc[i].pairs += s->pairs;
        if (r->step_decode) {
            r->tot.rt_decode += s->rt;
            r->tot.involved_decode += s->involved;
            r->tot.bytes_out_decode += s->bytes_out;
            r->tot.bytes_in_decode += s->bytes_in;
            if (r->o.stats)
                fprintf(stderr, " node %d rt %llu layers %llu out %llu in %llu us %llu hits %llu/%llu;", i,
                        (unsigned long long)s->rt, (unsigned long long)s->involved, (unsigned long long)s->bytes_out,
                        (unsigned long long)s->bytes_in, (unsigned long long)s->us, (unsigned long long)s->hits,
                        (unsigned long long)(s->hits + s->misses));
        }
    }
    if (r->o.stats && r->step_decode) fprintf(stderr, "\n");
}

/* Called at the start of every layer's work (prefetch or compute). */
static void s_layer_begin(st_remote_moe_t *r, const st_route_t *rt) {
    if (rt->layer == r->cur_layer) return;
    if (rt->layer <= r->cur_layer || !r->step_open) { /* a new batch through the layers */
        s_step_close(r);
        if (s_follow_cluster(r) < 0) st_log(ST_LOG_WARN, "no memory to follow the nodes added to the cluster");
        r->step_open = true;
        r->step_decode = rt->n_tok == 1;
        if (r->step_decode)
            r->tot.decode_tokens++;
        else
            r->tot.prefill_steps++, r->tot.prefill_tokens += (uint64_t)rt->n_tok;
        for (int i = 0; i < r->N; i++) {
            const st_node_stats_t *ns = st_cluster_stats(r->cl, i);
            r->step[i] = (node_acc_t){.bytes_out = ns->bytes_out, .bytes_in = ns->bytes_in};
        }
    }
    r->cur_layer = rt->layer;
    memset(r->rt_layer, 0, (size_t)r->N * sizeof *r->rt_layer);
}

/* -- which node computes each pair -- */

/* The owner of (layer, e) that is up with the fewest pairs so far in this
 * layer, or -1: none (or no placement yet: no node has answered). */
static int s_best_owner(const st_remote_moe_t *r, int layer, int e) {
    int best = -1;
    for (int o = 0; r->pl && o < st_placement_n_owners(r->pl, layer, e); o++) {
        int nd = st_placement_owner(r->pl, layer, e, o);
        if (st_cluster_is_up(r->cl, nd) && (best < 0 || r->load[nd] < r->load[best])) best = nd;
    }
    return best;
}

static void s_assign(st_remote_moe_t *r, const st_route_t *rt) {
    memset(r->load, 0, (size_t)r->N * sizeof *r->load);
    for (int p = 0; p < rt->n_tok * rt->k; p++) {
        int best = s_best_owner(r, rt->layer, rt->ids[p]);
        r->pair_node[p] = best;
        if (best >= 0) r->load[best]++;
    }
    r->assigned_layer = rt->layer;
}

static int s_prefetch(void *arg, const st_route_t *rt) {
    st_remote_moe_t *r = arg;
    s_layer_begin(r, rt);
    s_assign(r, rt);
    if (!r->o.prefetch) return 0;
    for (int nd = 0; nd < r->N; nd++) {
        if (!r->load[nd]) continue;
        uint32_t n = 0;
        for (int p = 0; p < rt->n_tok * rt->k; p++) {
            if (r->pair_node[p] != nd) continue;
            bool dup = false;
            for (uint32_t i = 0; i < n && !dup; i++) dup = r->pf[i] == (uint32_t)rt->ids[p];
            if (!dup) r->pf[n++] = (uint32_t)rt->ids[p];
        }
        st_wire_msg_t m = {.type = ST_MSG_EXPERT_PREFETCH};
        m.prefetch = (st_wire_prefetch_t){(uint32_t)rt->layer, n, r->pf};
        st_cluster_send(r->cl, nd, &m, NULL, 0, false); /* a hint: losing it costs only speed */
    }
    return 0;
}

typedef struct {
    st_remote_moe_t *r;
    const st_route_t *rt;
} result_ctx_t;

static int s_on_result(void *arg, int nd, st_wire_rx_t *rx) {
    result_ctx_t *x = arg;
    st_remote_moe_t *r = x->r;
    if (rx->msg.type == ST_MSG_ERROR) {
        st_log(ST_LOG_WARN, "node %d (%s) refused layer %d: %s", nd, st_cluster_url(r->cl, nd), x->rt->layer,
               rx->msg.error.message);
        r->failed[nd] = true;
        return 0;
    }
    size_t flen;
    const uint8_t *frame = st_wire_rx_frame(rx, &flen);
    const st_wire_result_t *res = &rx->msg.result;
    const size_t row = (size_t)r->E * sizeof(float);
    if (rx->msg.type != ST_MSG_EXPERT_RESULT || res->n_pairs != (uint32_t)r->nd_n[nd] ||
        flen != (size_t)r->nd_n[nd] * row) {
        st_log(ST_LOG_WARN, "node %d (%s) answered layer %d with %s of %u pairs (%zu B), %d expected", nd,
               st_cluster_url(r->cl, nd), x->rt->layer, st_wire_type_name(rx->msg.type), res->n_pairs, flen,
               r->nd_n[nd]);
        r->failed[nd] = true;
        return 0;
    }
    for (int i = 0; i < r->nd_n[nd]; i++) /* frames are LE f32; so is every host we build for */
        memcpy(r->y + (size_t)r->nd_pair[(size_t)nd * r->B * r->K + i] * r->E, frame + (size_t)i * row, row);
    r->step[nd].us += res->compute_us;
    r->step[nd].hits += res->cache_hits;
    r->step[nd].misses += res->cache_misses;
    return 0;
}

/* Computes the listed pairs here, from the model file. */
static int s_fallback(st_remote_moe_t *r, const st_route_t *rt, int n, const char *why) {
    if (n == 0) return 0;
    if (!r->o.fallback)
        return st_fail(ST_EIO, "layer %d: %d expert pairs have no node to run on (%s) and fallback is off", rt->layer,
                       n, why);
    st_expert_set_t set = st_model_expert_set(r->ctx, rt->layer);
    int rc = st_experts_eval_converted(r->ctx, &set, n, r->fb_tok, r->fb_exp, r->conv, r->row, rt->n_tok, r->fb_y);
    if (rc < 0) return rc;
    for (int i = 0; i < n; i++)
        memcpy(r->y + (size_t)r->fb_pair[i] * r->E, r->fb_y + (size_t)i * r->E, (size_t)r->E * sizeof(float));
    r->tot.fallback_pairs += (uint64_t)n;
    return 0;
}

static int s_compute(void *arg, const st_route_t *rt, const float *m, float *out) {
    st_remote_moe_t *r = arg;
    const int n_pairs = rt->n_tok * rt->k, P = r->B * r->K;
    if (rt->n_tok > r->B || rt->k != r->K)
        return st_fail(ST_EINVAL, "route of %d tokens x %d experts (batch %d x %d)", rt->n_tok, rt->k, r->B, r->K);
    s_layer_begin(r, rt);
    if (r->assigned_layer != rt->layer) s_assign(r, rt);
    r->assigned_layer = -1;
    for (int p = 0; p < n_pairs; p++) r->route_counts[(size_t)rt->layer * r->X + rt->ids[p]]++;

    /* activations in this layer's gate format, converted once for every node */
    r->gate_type = r->m->layers[rt->layer].gate_exps.type;
    r->row = st_row_size(st_type_traits(r->gate_type)->vec_dot_type, r->E);
    st_convert_activations(r->ctx, r->gate_type, m, rt->n_tok, r->E, r->conv);

    /* Rounds: one request per involved node (its pairs and the rows of their
     * tokens); the pairs of a node that fails (deadline, dropped connection,
     * ERROR) go to another node holding those experts (a replica) in the next
     * round, or are computed here at the end. Each pair's output is the same
     * whoever computes it, so the combined result never changes. */
    memset(r->pair_done, 0, (size_t)n_pairs);
    for (int round = 0;; round++) {
        int n_fb = 0;
        for (int nd = 0; nd < r->N; nd++) {
            r->rids[nd] = 0;
            r->failed[nd] = false;
            r->nd_n[nd] = 0;
            r->nd_rows[nd] = 0;
        }
        for (int p = 0; p < n_pairs; p++) {
            if (r->pair_done[p]) continue;
            int nd = r->pair_node[p];
            if (nd < 0) {
                r->fb_tok[n_fb] = p / rt->k;
                r->fb_exp[n_fb] = rt->ids[p];
                r->fb_pair[n_fb++] = p;
                continue;
            }
            int i = r->nd_n[nd]++;
            r->nd_exp[(size_t)nd * P + i] = rt->ids[p];
            r->nd_pair[(size_t)nd * P + i] = p;
        }
        for (int nd = 0; nd < r->N; nd++) {
            if (!r->nd_n[nd]) continue;
            int32_t *tok = r->nd_tok + (size_t)nd * P, *rows = r->nd_row_tok + (size_t)nd * r->B;
            for (int t = 0; t < rt->n_tok; t++) r->tok_local[t] = -1;
            for (int i = 0; i < r->nd_n[nd]; i++) {
                int t = r->nd_pair[(size_t)nd * P + i] / rt->k;
                if (r->tok_local[t] < 0) r->tok_local[t] = r->nd_rows[nd]++, rows[r->tok_local[t]] = t;
                tok[i] = r->tok_local[t];
            }
            zmq_msg_t frame;
            if (zmq_msg_init_size(&frame, (size_t)r->nd_rows[nd] * r->row)) return st_fail(ST_ENOMEM, "no memory");
            uint8_t *fd = zmq_msg_data(&frame);
            for (int j = 0; j < r->nd_rows[nd]; j++)
                memcpy(fd + (size_t)j * r->row, r->conv + (size_t)rows[j] * r->row, r->row);
            st_wire_msg_t msg = {.type = ST_MSG_EXPERT_COMPUTE};
            msg.compute = (st_wire_compute_t){(uint32_t)rt->layer,
                                              (uint32_t)r->nd_rows[nd],
                                              st_type_traits(r->gate_type)->vec_dot_type,
                                              (uint32_t)r->nd_n[nd],
                                              tok,
                                              r->nd_exp + (size_t)nd * P};
            if (st_cluster_send_zmsg(r->cl, nd, &msg, &frame, true) < 0) {
                r->failed[nd] = true;
                continue;
            }
            r->rids[nd] = msg.request_id;
            r->step[nd].rt++;
            r->step[nd].involved++;
            r->step[nd].pairs += (uint64_t)r->nd_n[nd];
            if (++r->rt_layer[nd] > r->tot.max_rt_per_layer_node) r->tot.max_rt_per_layer_node = r->rt_layer[nd];
        }

        /* pairs no node can take: computed here while the nodes work */
        int rc = s_fallback(r, rt, n_fb, "no owner up");
        if (rc < 0) return rc;
        for (int i = 0; i < n_fb; i++) r->pair_done[r->fb_pair[i]] = 1;

        result_ctx_t x = {r, rt};
        st_ctx_park(r->ctx); /* our workers sleep while we wait: the nodes may share our CPUs */
        double t_wait = st_now_ms();
        rc = st_cluster_gather(r->cl, r->rids, t_wait + r->o.timeout_ms, s_on_result, &x);
        const double waited = st_now_ms() - t_wait;
        if (r->step_decode) r->tot.wait_ms_decode += waited;
        if (waited > r->tot.max_wait_ms) r->tot.max_wait_ms = waited;
        r->tot.waits++;
        if (rc < 0 && rc != ST_ETIMEOUT) return rc;

        /* nodes that missed the deadline, lost their connection or failed: down;
         * their pairs to a replica (next round), else here */
        bool again = false;
        for (int nd = 0; nd < r->N; nd++) {
            if (!r->nd_n[nd]) continue;
            const bool ok = !r->rids[nd] && !r->failed[nd];
            if (ok)
                r->tot.remote_pairs += (uint64_t)r->nd_n[nd];
            else {
                char why[160];
                if (r->rids[nd] && !st_cluster_is_up(r->cl, nd))
                    snprintf(why, sizeof why, "connection lost during layer %d", rt->layer);
                else if (r->rids[nd])
                    snprintf(why, sizeof why, "no answer to layer %d within %d ms", rt->layer, r->o.timeout_ms);
                else
                    snprintf(why, sizeof why, "no usable answer for layer %d", rt->layer);
                st_cluster_set_down(r->cl, nd, why);
            }
            for (int i = 0; i < r->nd_n[nd]; i++) {
                int p = r->nd_pair[(size_t)nd * P + i];
                if (ok) {
                    r->pair_done[p] = 1;
                    continue;
                }
                int best = s_best_owner(r, rt->layer, rt->ids[p]); /* another owner that is up */
                r->pair_node[p] = best;
                if (best >= 0) r->load[best]++, r->tot.resent_pairs++, again = true;
            }
        }
        if (!again) break;
    }
    /* what is left (pairs whose every owner failed in the last round) is computed here */
    int n_fb = 0;
    for (int p = 0; p < n_pairs; p++) {
        if (r->pair_done[p]) continue;
        r->fb_tok[n_fb] = p / rt->k;
        r->fb_exp[n_fb] = rt->ids[p];
        r->fb_pair[n_fb++] = p;
    }
    int rc = s_fallback(r, rt, n_fb, "every owner failed");
    if (rc < 0) return st_fail(rc, "layer %d: %d pairs could not be computed anywhere", rt->layer, n_fb);

    st_moe_combine(rt, r->E, r->y, out);
    if (rt->layer == r->L - 1) s_step_close(r); /* the batch is through */
    return 0;
}

st_moe_backend_t st_remote_moe_backend(st_remote_moe_t *r) {
    st_moe_backend_t b = {r, s_prefetch, s_compute};
    return b;
}

void st_remote_moe_finish(st_remote_moe_t *r) {
    s_step_close(r);
    r->cur_layer = -1;
}

const st_remote_totals_t *st_remote_moe_totals(const st_remote_moe_t *r) { return &r->tot; }
const uint64_t *st_remote_moe_route_counts(const st_remote_moe_t *r) { return r->route_counts; }

void st_remote_moe_print_stats(const st_remote_moe_t *r, FILE *f) {
    const st_remote_totals_t *t = &r->tot;
    const double T = t->decode_tokens ? (double)t->decode_tokens : 1.0;
    fprintf(f,
            "cluster: %d of %d nodes up; prefill %llu steps (%llu tokens), decode %llu tokens; %llu pairs on "
            "nodes, %llu computed here (fallback), %llu re-sent to a replica\n",
            st_cluster_n_up(r->cl), r->N, (unsigned long long)t->prefill_steps, (unsigned long long)t->prefill_tokens,
            (unsigned long long)t->decode_tokens, (unsigned long long)t->remote_pairs,
            (unsigned long long)t->fallback_pairs, (unsigned long long)t->resent_pairs);
    for (int i = 0; i < r->N; i++) {
        const node_acc_t *d = &r->dec[i], *p = &r->pre[i];
        uint64_t look = d->hits + d->misses + p->hits + p->misses;
        fprintf(f,
                "cluster: node %d %s: per decode token %.2f round trips (%.2f layers involved), %.0f B out, "
                "%.0f B in, node compute %.3f ms; prefill %llu round trips, %llu B out, %llu B in; expert cache "
                "hits %.1f%% of %llu\n",
                i, st_cluster_url(r->cl, i), d->rt / T, d->involved / T, d->bytes_out / T, d->bytes_in / T,
                d->us / T / 1e3, (unsigned long long)p->rt, (unsigned long long)p->bytes_out,
                (unsigned long long)p->bytes_in, look ? 100.0 * (double)(d->hits + p->hits) / (double)look : 0.0,
                (unsigned long long)look);
    }
    fprintf(f,
            "cluster: decode: %.2f round trips per token for %.2f involved (layer, node) pairs, at most %d round "
            "trip per layer per node; %.0f B per token (%.0f out, %.0f in); waiting for nodes %.2f ms per token\n",
            t->rt_decode / T, t->involved_decode / T, t->max_rt_per_layer_node,
            (t->bytes_out_decode + t->bytes_in_decode) / T, t->bytes_out_decode / T, t->bytes_in_decode / T,
            t->wait_ms_decode / T);
    fprintf(f, "cluster: longest wait for node results %.1f ms of %llu waits (deadline %d ms)\n", t->max_wait_ms,
            (unsigned long long)t->waits, r->o.timeout_ms);
    uint64_t rejoin_bytes = 0, rejoins = st_cluster_rejoins(r->cl, &rejoin_bytes);
    fprintf(f, "cluster: %llu rejoins of nodes that were down (%llu shard bytes sent to them)\n",
            (unsigned long long)rejoins, (unsigned long long)rejoin_bytes);
}

st_remote_node_totals_t st_remote_moe_node_totals(const st_remote_moe_t *r, int node) {
    st_remote_node_totals_t t = {0};
    if (node < 0 || node >= r->N) return t;
    const node_acc_t *d = &r->dec[node], *p = &r->pre[node];
    t = (st_remote_node_totals_t){d->rt + p->rt, d->us + p->us, d->hits + p->hits, d->misses + p->misses};
    return t;
}
