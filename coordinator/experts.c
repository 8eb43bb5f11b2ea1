/* experts: the experts' shape, model hash, bytes and hashes (see experts.h). */
#include "experts.h"

#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "st_log.h"
#include "threadpool.h"

static void s_u64le(uint64_t v, uint8_t out[8]) {
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (8 * i));
}

/* Experts are read through a file descriptor, not the mapping: a fault on the
 * mapping reads the device's whole read-around window (read_ahead_kb, 8 MiB on
 * this VM's disk) for a 4 KiB sample, and bytes read once for a hash or a push
 * would otherwise stay in the page cache, which a memory cgroup charges to the
 * coordinator: 10 GiB of experts through a 2 GiB limit evicted the pages it
 * does need, again and again. */

/* The file offset of p, a pointer into m's mapping. */
static uint64_t s_file_offset(const st_model_t *m, const void *p) {
    const st_gguf_tensor_t *t = st_gguf_tensor(m->gguf, 0);
    return (uint64_t)((const uint8_t *)p - ((const uint8_t *)t->data - t->file_offset));
}

/* n bytes of m's mapping at p, read from fd (or copied from the mapping when fd < 0); with
 * drop, their pages leave the page cache afterwards. */
static int s_read_mapped(const st_model_t *m, int fd, const void *p, size_t n, void *dst, bool drop) {
    if (fd < 0) {
        memcpy(dst, p, n);
        return 0;
    }
    const uint64_t off = s_file_offset(m, p);
    for (size_t done = 0; done < n;) {
        ssize_t r = pread(fd, (uint8_t *)dst + done, n - done, (off_t)(off + done));
        if (r <= 0) return st_fail(ST_EIO, "cannot read %zu B of the model at %llu", n, (unsigned long long)off);
        done += (size_t)r;
    }
    if (drop) posix_fadvise(fd, (off_t)off, (off_t)n, POSIX_FADV_DONTNEED);
    return 0;
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
    /* the samples: 4 KiB each, without readahead (through the mapping each cost 8 MiB here) */
    posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    int rc = 0;
    for (int il = 0; il < cfg->n_layer && !rc; il++) {
        const st_weight_t *ws[3] = {&m->layers[il].gate_exps, &m->layers[il].up_exps, &m->layers[il].down_exps};
        for (int k = 0; k < 3 && !rc; k++) {
            size_t n = ws[k]->mat_bytes * (size_t)cfg->n_expert, part = n < 4096 ? n : 4096;
            rc = s_read_mapped(m, fd, ws[k]->data, part, buf, false);
            if (!rc) crypto_generichash_update(&st, buf, part);
            if (!rc) rc = s_read_mapped(m, fd, ws[k]->data + n - part, part, buf, false);
            if (!rc) crypto_generichash_update(&st, buf, part);
        }
    }
    free(buf);
    close(fd);
    if (rc) return rc;
    crypto_generichash_final(&st, s->model_hash, ST_WIRE_HASH_BYTES);
    char why[160];
    if (st_wire_check_shape(s, why, sizeof why) < 0) return st_fail(ST_EUNSUP, "the model's experts: %s", why);
    return 0;
}

static int s_expert_read(const st_model_t *m, int fd, uint32_t layer, uint32_t e, uint64_t offset, void *dst,
                         size_t len) {
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
        int rc = s_read_mapped(m, fd, (const uint8_t *)st_weight_row(ws[k], e, 0) + offset, n, out, true);
        if (rc) return rc;
        out += n;
        len -= n;
        offset = 0;
    }
    return len == 0 ? 0 : ST_ERANGE;
}

#define HASH_MAGIC "STHASH01"

struct st_expert_hashes {
    const st_model_t *m;
    int fd; /* the model file, read outside the mapping (-1: copied from the mapping) */
    st_wire_shape_t shape;
    char *path;
    int64_t mtime_s, mtime_ns;
    size_t n;       /* n_layer * n_expert */
    uint8_t *known; /* n flags */
    uint8_t *hash;  /* n x 32 */
    bool dirty;
};

int st_expert_hashes_read(const st_expert_hashes_t *h, uint32_t layer, uint32_t e, uint64_t offset, void *dst,
                          size_t len) {
    return s_expert_read(h->m, h->fd, layer, e, offset, dst, len);
}

#define HASH_HEAD_BYTES (8 + 32 + 8 * 3 + 8)

/* The hash file's header for this model file: magic, model hash, file size,
 * mtime (s, ns), expert count. A file whose header differs is stale. */
static void s_hashes_head(const st_expert_hashes_t *h, uint8_t head[HASH_HEAD_BYTES]) {
    memcpy(head, HASH_MAGIC, 8);
    memcpy(head + 8, h->shape.model_hash, 32);
    s_u64le(st_gguf_file_size(h->m->gguf), head + 40);
    s_u64le((uint64_t)h->mtime_s, head + 48);
    s_u64le((uint64_t)h->mtime_ns, head + 56);
    s_u64le(h->n, head + 64);
}

static void s_hashes_load(st_expert_hashes_t *h) {
    FILE *f = h->path ? fopen(h->path, "rb") : NULL;
    if (!f) return;
    uint8_t head[HASH_HEAD_BYTES], want[HASH_HEAD_BYTES];
    s_hashes_head(h, want);
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
    if (!h) {
        st_fail(ST_ENOMEM, "no memory for the expert hashes");
        return NULL;
    }
    h->m = m;
    h->fd = *st_gguf_path(m->gguf) ? open(st_gguf_path(m->gguf), O_RDONLY | O_CLOEXEC) : -1;
    /* reads of whole matrices and chunks: readahead past them would outlive their drop */
    if (h->fd >= 0) posix_fadvise(h->fd, 0, 0, POSIX_FADV_RANDOM);
    h->shape = *shape;
    h->n = (size_t)shape->n_layer * shape->n_expert;
    h->known = st_calloc(h->n, 1);
    h->hash = st_calloc(h->n, 32);
    h->path = cache_path ? st_strdup(cache_path) : NULL;
    if (!h->known || !h->hash || (cache_path && !h->path)) {
        st_fail(ST_ENOMEM, "no memory for %zu expert hashes", h->n);
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
    if ((*hp)->fd >= 0) close((*hp)->fd);
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
    uint8_t **buf; /* per thread: one matrix of an expert */
    int rc;        /* the first read error */
} hash_job_t;

static void s_hash_expert(void *arg, int i, int ith) {
    hash_job_t *j = arg;
    const st_model_t *m = j->h->m;
    const int X = m->cfg.n_expert;
    const uint32_t s = j->todo[i];
    const st_layer_t *L = &m->layers[s / X];
    const st_weight_t *ws[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, ST_WIRE_HASH_BYTES);
    for (int k = 0; k < 3; k++) {
        const uint8_t *p = st_weight_row(ws[k], s % X, 0);
        if (j->h->fd >= 0) { /* read once and dropped: the push reads it again (see s_read_mapped) */
            int rc = s_read_mapped(m, j->h->fd, p, ws[k]->mat_bytes, j->buf[ith], true);
            if (rc) {
                __atomic_store_n(&j->rc, rc, __ATOMIC_RELAXED);
                return;
            }
            p = j->buf[ith];
        }
        crypto_generichash_update(&st, p, ws[k]->mat_bytes);
    }
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
        const int T = n_threads < 1 ? 1 : n_threads;
        size_t most = 0;
        for (int l = 0; l < h->m->cfg.n_layer; l++) {
            const st_layer_t *L = &h->m->layers[l];
            const size_t b[3] = {L->gate_exps.mat_bytes, L->up_exps.mat_bytes, L->down_exps.mat_bytes};
            for (int k = 0; k < 3; k++) most = b[k] > most ? b[k] : most;
        }
        hash_job_t j = {h, todo, n, st_calloc((size_t)T, sizeof *j.buf), 0};
        bool ok = j.buf != NULL;
        for (int t = 0; ok && t < T; t++) ok = (j.buf[t] = st_malloc(most)) != NULL;
        if (ok) st_pool_for(pool, n, s_hash_expert, &j);
        st_pool_destroy(&pool);
        for (int t = 0; j.buf && t < T; t++) free(j.buf[t]);
        free(j.buf);
        if (!ok || j.rc) {
            free(todo);
            return ok ? j.rc : st_fail(ST_ENOMEM, "no memory for hashing");
        }
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
    uint8_t head[HASH_HEAD_BYTES];
    s_hashes_head(h, head);
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
