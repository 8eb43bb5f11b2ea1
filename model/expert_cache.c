/* expert_cache: experts read from storage into a bounded set of slots (see
 * expert_cache.h for what and why).
 *
 * Threads: the decoding thread owns every placement decision (which slot an
 * expert goes to, what is evicted) under the mutex; the I/O threads only take
 * (slot, matrix) jobs from a FIFO, pread them, and mark the slot ready when
 * its third matrix is in. A slot being read or used by the current layer is
 * never a victim, so no job can land in a slot that changed owner.
 *
 * Page cache: reads use O_DIRECT (4096-aligned buffer, offset and length: the
 * aligned superset of the matrix, the matrix found at its offset inside it),
 * or buffered reads followed by posix_fadvise(DONTNEED). The mapping gets
 * MADV_RANDOM so that faulting a dense page or an embedding row does not read
 * megabytes of experts around it, and MADV_WILLNEED on the dense tensors
 * (exact ranges) so they still come in with large reads.
 *
 * Dimension letters (model.h): E n_embd, F n_ff_exp, X n_expert, K
 * n_expert_used, L n_layer, B n_batch, N nodes, V n_vocab, D head_dim, H n_head.
 */
#include "expert_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "clock.h"
#include "forward_internal.h"
#include "moe.h"
#include "proc_mem.h"
#include "st_log.h"

#define ALIGN 4096u
#define DEFAULT_IO_THREADS 8
#define AGE_EVERY 4 /* halve all use counts after AGE_EVERY * n_slots lookups */

enum { SLOT_EMPTY, SLOT_LOADING, SLOT_READY, SLOT_ERROR };

typedef struct {
    int key; /* layer * n_expert + expert, -1 when empty */
    int state;
    int pending;        /* matrices still being read */
    uint64_t pin;       /* == ec->gen: used by the current layer step */
    uint32_t freq;      /* uses, aged */
    uint64_t last;      /* lookup tick of the last use */
    uint8_t *buf;       /* 3 spans: gate, up, down */
    const void *mat[3]; /* the matrices inside buf */
} slot_t;

typedef struct {
    int slot, kind;
} job_t;

struct st_expert_cache {
    st_ctx_t *c;
    const st_model_t *m;
    int X, L, K;
    int fd;
    bool direct;
    uint8_t *map_base; /* the GGUF mapping (advice only) */
    size_t map_size;
    size_t span[3]; /* aligned bytes reserved per matrix kind */
    size_t slot_bytes;
    uint8_t *arena; /* n_slots * slot_bytes, anonymous, faulted as filled */
    size_t arena_bytes;
    uint64_t cache_bytes;

    int n_slots;
    slot_t *slots;
    int *slot_of; /* L * X: slot of each expert, -1 */
    uint64_t gen, tick;

    /* I/O */
    pthread_mutex_t mu;
    pthread_cond_t job_cv, done_cv;
    job_t *q; /* ring of 3 * n_slots jobs */
    int q_head, q_len, q_cap;
    int n_io;
    pthread_t *io;
    int n_io_started;
    bool stop;
    int in_flight;
    double busy_t0;

    /* compute scratch */
    int *uniq;                       /* experts of the current step, routing order */
    int n_uniq, uniq_layer;          /* how many, for which layer (-1: none listed) */
    bool *done;                      /* per entry of uniq */
    const void **gate, **up, **down; /* X each */
    int32_t *ptok, *pids, *porig;    /* pairs of the ready experts */
    float *ysub, *y;                 /* n_batch * k * n_embd each */

    st_expert_cache_stats_t st;
};

static const st_weight_t *s_weight(const st_model_t *m, int il, int kind) {
    const st_layer_t *Ly = &m->layers[il];
    return kind == 0 ? &Ly->gate_exps : kind == 1 ? &Ly->up_exps : &Ly->down_exps;
}

/* The mapping of m's GGUF: base and size; false for memory buffers. */
static bool s_mapping(const st_model_t *m, uint8_t **base, size_t *size) {
    if (!m->gguf || !st_gguf_path(m->gguf)[0] || st_gguf_n_tensors(m->gguf) < 1) return false;
    const st_gguf_tensor_t *t = st_gguf_tensor(m->gguf, 0);
    *base = (uint8_t *)t->data - t->file_offset;
    *size = st_gguf_file_size(m->gguf);
    return true;
}

static size_t s_round_up(size_t v) { return (v + ALIGN - 1) / ALIGN * ALIGN; }

/* File offset of matrix e of w, or false when w is not inside the mapping. */
static bool s_file_offset(const uint8_t *base, size_t size, const st_weight_t *w, int e, uint64_t *off) {
    if (!w->data || w->data < base || w->data + (size_t)w->n_mat * w->mat_bytes > base + size) return false;
    *off = (uint64_t)(w->data - base) + (uint64_t)e * w->mat_bytes;
    return true;
}

/* Spans per matrix kind (max over layers); false when some expert is not in the file. */
static bool s_spans(const st_model_t *m, size_t span[3]) {
    uint8_t *base;
    size_t size;
    if (!s_mapping(m, &base, &size)) return false;
    for (int k = 0; k < 3; k++) span[k] = 0;
    for (int il = 0; il < m->cfg.n_layer; il++)
        for (int k = 0; k < 3; k++) {
            const st_weight_t *w = s_weight(m, il, k);
            uint64_t off;
            if (!s_file_offset(base, size, w, 0, &off) || w->n_mat < m->cfg.n_expert) return false;
            size_t s = s_round_up(w->mat_bytes) + ALIGN; /* any 32-aligned start */
            if (s > span[k]) span[k] = s;
        }
    return true;
}

uint64_t st_expert_cache_slot_bytes(const st_ctx_t *c) {
    size_t span[3];
    if (!s_spans(st_ctx_model(c), span)) return 0;
    return span[0] + span[1] + span[2];
}

static bool s_is_expert_tensor(const st_gguf_tensor_t *t) { return strstr(t->name, "_exps") != NULL; }

uint64_t st_expert_cache_reserve(const st_ctx_t *c, uint64_t mem_total) {
    const st_model_t *m = st_ctx_model(c);
    const st_config_t *cfg = &m->cfg;
    const st_ctx_params_t *p = st_ctx_params(c);
    uint64_t r;
    st_proc_memory(&r, NULL);
    /* dense tensors: all of them will be faulted in (counted twice if already resident: fine) */
    const bool tied = m->output.data == m->tok_embd.data;
    for (int64_t i = 0; m->gguf && i < st_gguf_n_tensors(m->gguf); i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(m->gguf, i);
        if (s_is_expert_tensor(t)) continue;
        if ((const uint8_t *)t->data == m->tok_embd.data && !tied) {
            /* rows touched one page (or two) each: a bound for a long run */
            uint64_t rows = (uint64_t)p->n_ctx * 2 * ALIGN;
            if (rows < (16u << 20)) rows = 16u << 20;
            r += rows < t->nbytes ? rows : t->nbytes;
            continue;
        }
        r += s_round_up(t->nbytes) + ALIGN;
    }
    /* KV cache (full size for every layer), logits, and the expert scratch of this module */
    const int KV = cfg->n_head_kv * cfg->head_dim;
    r += (uint64_t)cfg->n_layer * (uint64_t)p->n_ctx * 2 * (uint64_t)KV * (p->kv_type == ST_TYPE_F32 ? 4 : 2);
    r += (uint64_t)cfg->n_vocab * 4 * 2;
    r += (uint64_t)p->n_batch * cfg->n_expert_used * cfg->n_embd * 4 * 2;
    /* margin: libraries, thread stacks, kernel memory the cgroup counts */
    r += (32u << 20) + mem_total / 50;
    return r;
}

/* ---- I/O ------------------------------------------------------------------ */

/* Reads matrix kind of the expert in slot s into its span; 0 or ST_EIO. */
static int s_read(st_expert_cache_t *ec, const slot_t *s, int kind, const void **mat, uint64_t *nread) {
    const int il = s->key / ec->X, e = s->key % ec->X;
    const st_weight_t *w = s_weight(ec->m, il, kind);
    uint64_t off;
    if (!s_file_offset(ec->map_base, ec->map_size, w, e, &off)) return ST_EIO;
    const uint64_t a0 = off / ALIGN * ALIGN, need = off + w->mat_bytes - a0;
    const size_t len = s_round_up((size_t)need);
    uint8_t *dst = s->buf + (kind > 0 ? ec->span[0] : 0) + (kind > 1 ? ec->span[1] : 0);
    size_t got = 0;
    while (got < need) {
        ssize_t n = pread(ec->fd, dst + got, len - got, (off_t)(a0 + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return ST_EIO;
        got += (size_t)n;
        if (ec->direct && got % ALIGN) break; /* short read at the end of the file */
    }
    if (got < need) return ST_EIO;
    if (!ec->direct) posix_fadvise(ec->fd, (off_t)a0, (off_t)len, POSIX_FADV_DONTNEED);
    *mat = dst + (off - a0);
    *nread = got;
    return 0;
}

static void *s_io_main(void *arg) {
    st_expert_cache_t *ec = arg;
    pthread_mutex_lock(&ec->mu);
    for (;;) {
        while (!ec->stop && ec->q_len == 0) pthread_cond_wait(&ec->job_cv, &ec->mu);
        if (ec->stop) break;
        job_t j = ec->q[ec->q_head];
        ec->q_head = (ec->q_head + 1) % ec->q_cap;
        ec->q_len--;
        if (ec->in_flight++ == 0) ec->busy_t0 = st_now_s();
        slot_t *s = &ec->slots[j.slot];
        const slot_t copy = *s; /* key and buffer stay put while loading */
        pthread_mutex_unlock(&ec->mu);

        const void *mat = NULL;
        uint64_t nread = 0;
        int rc = s_read(ec, &copy, j.kind, &mat, &nread);

        pthread_mutex_lock(&ec->mu);
        if (--ec->in_flight == 0) ec->st.read_busy_s += st_now_s() - ec->busy_t0;
        ec->st.reads++;
        ec->st.bytes_read += nread;
        s->mat[j.kind] = mat;
        if (rc < 0) s->state = SLOT_ERROR;
        if (--s->pending == 0) {
            if (s->state == SLOT_LOADING) s->state = SLOT_READY;
            pthread_cond_broadcast(&ec->done_cv);
        }
    }
    pthread_mutex_unlock(&ec->mu);
    return NULL;
}

/* ---- placement (decoding thread, under the mutex) -------------------------- */

/* A slot for a new expert: an empty one, else the least used that is neither
 * loading nor pinned by the current step; -1 when all are busy. */
static int s_victim(st_expert_cache_t *ec) {
    int best = -1;
    for (int i = 0; i < ec->n_slots; i++) {
        const slot_t *s = &ec->slots[i];
        if (s->key < 0) return i;
        if (s->state == SLOT_LOADING || s->pin == ec->gen) continue;
        if (best < 0 || s->freq < ec->slots[best].freq ||
            (s->freq == ec->slots[best].freq && s->last < ec->slots[best].last))
            best = i;
    }
    return best;
}

/* Makes sure the experts of r are resident or on their way, pins them, and
 * lists them (routing order, each once) in ec->uniq; returns how many or < 0. */
static int s_request(st_expert_cache_t *ec, const st_route_t *r) {
    const int X = ec->X;
    if (r->layer < 0 || r->layer >= ec->L || r->k != ec->K || r->n_tok < 0 || r->n_tok > ec->c->p.n_batch)
        return st_fail(ST_EINVAL, "bad route: layer %d, %d tokens, k %d", r->layer, r->n_tok, r->k);
    int n = 0;
    pthread_mutex_lock(&ec->mu);
    ec->gen++;
    for (int i = 0; i < r->n_tok * r->k; i++) {
        const int e = r->ids[i];
        if (e < 0 || e >= X) {
            pthread_mutex_unlock(&ec->mu);
            return st_fail(ST_ERANGE, "expert %d of %d", e, X);
        }
        const int key = r->layer * X + e;
        int si = ec->slot_of[key];
        if (si >= 0 && ec->slots[si].pin == ec->gen) continue; /* already listed */
        ec->st.lookups++;
        if (si >= 0) {
            ec->st.hits++;
        } else {
            si = s_victim(ec);
            if (si < 0) {
                pthread_mutex_unlock(&ec->mu);
                return st_fail(ST_ENOMEM, "no free expert slot (%d slots)", ec->n_slots);
            }
            slot_t *s = &ec->slots[si];
            if (s->key >= 0)
                ec->slot_of[s->key] = -1;
            else
                ec->st.slots_used++;
            s->key = key;
            s->state = SLOT_LOADING;
            s->pending = 3;
            s->freq = 0;
            ec->slot_of[key] = si;
            ec->st.loads++;
            for (int k = 0; k < 3; k++) {
                ec->q[(ec->q_head + ec->q_len) % ec->q_cap] = (job_t){si, k};
                ec->q_len++;
            }
            pthread_cond_broadcast(&ec->job_cv);
        }
        slot_t *s = &ec->slots[si];
        s->pin = ec->gen;
        s->freq++;
        s->last = ++ec->tick;
        if (ec->tick % ((uint64_t)AGE_EVERY * ec->n_slots) == 0)
            for (int j = 0; j < ec->n_slots; j++) ec->slots[j].freq /= 2;
        ec->uniq[n++] = e;
    }
    pthread_mutex_unlock(&ec->mu);
    return n;
}

static int s_prefetch(void *arg, const st_route_t *r) {
    st_expert_cache_t *ec = arg;
    ec->n_uniq = s_request(ec, r);
    ec->uniq_layer = r->layer;
    return ec->n_uniq < 0 ? ec->n_uniq : 0;
}

/* Evaluates the experts of r as they become ready, then combines. */
static int s_compute(void *arg, const st_route_t *r, const float *m, float *out) {
    st_expert_cache_t *ec = arg;
    const int X = ec->X, E = ec->m->cfg.n_embd;
    /* prefetch listed (and pinned) this route's experts; without it, request them now */
    int n_uniq = ec->uniq_layer == r->layer ? ec->n_uniq : s_request(ec, r);
    ec->uniq_layer = -1;
    if (n_uniq < 0) return n_uniq;
    if (r->layer == 0) ec->st.tokens += (uint64_t)r->n_tok;
    for (int i = 0; i < n_uniq; i++) ec->done[i] = false;
    int n_done = 0;
    while (n_done < n_uniq) {
        for (int e = 0; e < X; e++) ec->gate[e] = ec->up[e] = ec->down[e] = NULL;
        bool any = false;
        const double t0 = st_now_s();
        pthread_mutex_lock(&ec->mu);
        for (;;) {
            for (int i = 0; i < n_uniq; i++) {
                if (ec->done[i]) continue;
                const slot_t *s = &ec->slots[ec->slot_of[r->layer * X + ec->uniq[i]]];
                if (s->state == SLOT_ERROR) {
                    pthread_mutex_unlock(&ec->mu);
                    return st_fail(ST_EIO, "layer %d expert %d: read failed", r->layer, ec->uniq[i]);
                }
                if (s->state != SLOT_READY) continue;
                const int e = ec->uniq[i];
                ec->gate[e] = s->mat[0];
                ec->up[e] = s->mat[1];
                ec->down[e] = s->mat[2];
                ec->done[i] = true;
                n_done++;
                any = true;
            }
            if (any) break;
            pthread_cond_wait(&ec->done_cv, &ec->mu);
        }
        ec->st.wait_s += st_now_s() - t0;
        pthread_mutex_unlock(&ec->mu);

        /* the pairs of the experts just ready, all pairs of each expert together */
        int np = 0;
        for (int i = 0; i < r->n_tok * r->k; i++) {
            const int e = r->ids[i];
            if (!ec->gate[e]) continue;
            ec->ptok[np] = i / r->k;
            ec->pids[np] = e;
            ec->porig[np] = i;
            np++;
        }
        const st_layer_t *Ly = &ec->m->layers[r->layer];
        st_expert_set_t set = {.gate_type = Ly->gate_exps.type,
                               .up_type = Ly->up_exps.type,
                               .down_type = Ly->down_exps.type,
                               .down_transposed = Ly->down_transposed,
                               .gate = ec->gate,
                               .up = ec->up,
                               .down = ec->down}; /* the cache holds the file's layout */
        int rc = st_experts_eval(ec->c, &set, np, ec->ptok, ec->pids, m, r->n_tok, ec->ysub);
        if (rc < 0) return rc;
        for (int i = 0; i < np; i++)
            memcpy(ec->y + (size_t)ec->porig[i] * E, ec->ysub + (size_t)i * E, (size_t)E * sizeof(float));
    }
    st_moe_combine(r, E, ec->y, out);
    return 0;
}

/* ---- lifetime --------------------------------------------------------------- */

/* Advice on the mapping: no readahead around faults, dense tensors read ahead exactly. */
static void s_advise(st_expert_cache_t *ec, bool on) {
    if (!on) {
        madvise(ec->map_base, ec->map_size, MADV_NORMAL);
        return;
    }
    madvise(ec->map_base, ec->map_size, MADV_RANDOM);
    const st_model_t *m = ec->m;
    const bool tied = m->output.data == m->tok_embd.data;
    for (int64_t i = 0; i < st_gguf_n_tensors(m->gguf); i++) {
        const st_gguf_tensor_t *t = st_gguf_tensor(m->gguf, i);
        if (s_is_expert_tensor(t) || ((const uint8_t *)t->data == m->tok_embd.data && !tied)) continue;
        const size_t a0 = t->file_offset / ALIGN * ALIGN;
        madvise(ec->map_base + a0, s_round_up(t->file_offset + t->nbytes - a0), MADV_WILLNEED);
    }
}

st_expert_cache_t *st_expert_cache_new(st_ctx_t *c, const st_expert_cache_params_t *p) {
    const st_model_t *m = st_ctx_model(c);
    const st_config_t *cfg = &m->cfg;
    if (!p) {
        st_fail(ST_EINVAL, "no parameters");
        return NULL;
    }
    size_t span[3];
    if (!s_spans(m, span)) {
        st_fail(ST_EUNSUP, "the model's experts are not stored in its GGUF file as they are used (memory buffer or "
                           "converted weights)");
        return NULL;
    }
    const size_t slot_bytes = span[0] + span[1] + span[2];
    const int need = cfg->n_expert < st_ctx_params(c)->n_batch * cfg->n_expert_used
                         ? cfg->n_expert
                         : st_ctx_params(c)->n_batch * cfg->n_expert_used;
    const uint64_t n_fit = p->cache_bytes / slot_bytes;
    if (n_fit < (uint64_t)need) {
        st_fail(ST_ENOMEM,
                "an expert cache of %.1f MiB holds %llu experts (%.2f MiB each); one layer step needs %d (%.1f MiB)",
                p->cache_bytes / 1048576.0, (unsigned long long)n_fit, slot_bytes / 1048576.0, need,
                (double)need * slot_bytes / 1048576.0);
        return NULL;
    }
    st_expert_cache_t *ec = calloc(1, sizeof *ec);
    if (!ec) return NULL;
    ec->c = c;
    ec->m = m;
    ec->X = cfg->n_expert;
    ec->L = cfg->n_layer;
    ec->K = cfg->n_expert_used;
    ec->fd = -1;
    memcpy(ec->span, span, sizeof span);
    ec->slot_bytes = slot_bytes;
    ec->cache_bytes = p->cache_bytes;
    s_mapping(m, &ec->map_base, &ec->map_size);
    const uint64_t total = (uint64_t)ec->X * ec->L;
    ec->n_slots = (int)(n_fit < total ? n_fit : total);
    ec->arena_bytes = (size_t)ec->n_slots * slot_bytes;
    pthread_mutex_init(&ec->mu, NULL);
    pthread_cond_init(&ec->job_cv, NULL);
    pthread_cond_init(&ec->done_cv, NULL);

    const char *path = st_gguf_path(m->gguf);
    if (!p->no_direct) ec->fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    ec->direct = ec->fd >= 0;
    if (ec->fd < 0) ec->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (ec->fd < 0) {
        st_fail(ST_EIO, "%s: %m", path);
        goto fail;
    }
    ec->arena = mmap(NULL, ec->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ec->arena == MAP_FAILED) {
        ec->arena = NULL;
        st_fail(ST_ENOMEM, "%zu bytes of expert slots", ec->arena_bytes);
        goto fail;
    }
    const size_t pairs = (size_t)st_ctx_params(c)->n_batch * ec->K;
    ec->slots = calloc((size_t)ec->n_slots, sizeof *ec->slots);
    ec->slot_of = malloc(total * sizeof *ec->slot_of);
    ec->q_cap = 3 * ec->n_slots;
    ec->q = malloc((size_t)ec->q_cap * sizeof *ec->q);
    ec->uniq = malloc(pairs * sizeof *ec->uniq);
    ec->done = malloc(pairs * sizeof *ec->done);
    ec->gate = calloc((size_t)ec->X, sizeof *ec->gate);
    ec->up = calloc((size_t)ec->X, sizeof *ec->up);
    ec->down = calloc((size_t)ec->X, sizeof *ec->down);
    ec->ptok = malloc(pairs * sizeof *ec->ptok);
    ec->pids = malloc(pairs * sizeof *ec->pids);
    ec->porig = malloc(pairs * sizeof *ec->porig);
    ec->ysub = malloc(pairs * (size_t)cfg->n_embd * sizeof(float));
    ec->y = malloc(pairs * (size_t)cfg->n_embd * sizeof(float));
    if (!ec->slots || !ec->slot_of || !ec->q || !ec->uniq || !ec->done || !ec->gate || !ec->up || !ec->down ||
        !ec->ptok || !ec->pids || !ec->porig || !ec->ysub || !ec->y) {
        st_fail(ST_ENOMEM, "expert cache bookkeeping");
        goto fail;
    }
    for (uint64_t i = 0; i < total; i++) ec->slot_of[i] = -1;
    for (int i = 0; i < ec->n_slots; i++) {
        ec->slots[i].key = -1;
        ec->slots[i].buf = ec->arena + (size_t)i * slot_bytes;
    }
    ec->gen = 1; /* slots start with pin 0: not pinned */
    ec->uniq_layer = -1;
    ec->n_io = p->n_io_threads > 0 ? p->n_io_threads : DEFAULT_IO_THREADS;
    ec->io = calloc((size_t)ec->n_io, sizeof *ec->io);
    if (!ec->io) goto fail;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 256u << 10);
    for (int i = 0; i < ec->n_io; i++) {
        if (pthread_create(&ec->io[i], &at, s_io_main, ec) != 0) {
            pthread_attr_destroy(&at);
            st_fail(ST_ENOMEM, "cannot start I/O thread %d", i);
            goto fail;
        }
        ec->n_io_started++;
    }
    pthread_attr_destroy(&at);
    s_advise(ec, true);
    ec->st.n_slots = ec->n_slots;
    ec->st.slot_bytes = slot_bytes;
    ec->st.cache_bytes = p->cache_bytes;
    ec->st.direct = ec->direct;
    st_log(ST_LOG_INFO, "expert cache: %d of %llu experts (%.1f MiB), %d I/O threads, %s", ec->n_slots,
           (unsigned long long)total, ec->arena_bytes / 1048576.0, ec->n_io,
           ec->direct ? "O_DIRECT" : "buffered + fadvise(DONTNEED)");
    return ec;
fail:
    st_expert_cache_destroy(&ec);
    return NULL;
}

void st_expert_cache_destroy(st_expert_cache_t **pec) {
    st_expert_cache_t *ec = pec ? *pec : NULL;
    if (!ec) return;
    pthread_mutex_lock(&ec->mu);
    ec->stop = true;
    pthread_cond_broadcast(&ec->job_cv);
    pthread_mutex_unlock(&ec->mu);
    for (int i = 0; i < ec->n_io_started; i++) pthread_join(ec->io[i], NULL);
    if (ec->n_io_started) s_advise(ec, false);
    if (ec->fd >= 0) close(ec->fd);
    if (ec->arena) munmap(ec->arena, ec->arena_bytes);
    pthread_mutex_destroy(&ec->mu);
    pthread_cond_destroy(&ec->job_cv);
    pthread_cond_destroy(&ec->done_cv);
    free(ec->io);
    free(ec->slots);
    free(ec->slot_of);
    free(ec->q);
    free(ec->uniq);
    free(ec->done);
    free(ec->gate);
    free(ec->up);
    free(ec->down);
    free(ec->ptok);
    free(ec->pids);
    free(ec->porig);
    free(ec->ysub);
    free(ec->y);
    free(ec);
    *pec = NULL;
}

st_moe_backend_t st_expert_cache_backend(st_expert_cache_t *ec) {
    return (st_moe_backend_t){.arg = ec, .prefetch = s_prefetch, .compute = s_compute};
}

void st_expert_cache_stats(st_expert_cache_t *ec, st_expert_cache_stats_t *s) {
    pthread_mutex_lock(&ec->mu);
    *s = ec->st;
    s->resident_bytes = (uint64_t)s->slots_used * s->slot_bytes;
    pthread_mutex_unlock(&ec->mu);
}

void st_expert_cache_budget(const st_ctx_t *c, uint64_t mem_total, st_expert_cache_budget_t *b) {
    const st_config_t *cfg = &st_ctx_model(c)->cfg;
    const int n_batch = st_ctx_params(c)->n_batch;
    b->slot_bytes = st_expert_cache_slot_bytes(c);
    b->reserve = st_expert_cache_reserve(c, mem_total);
    b->min_slots = cfg->n_expert < n_batch * cfg->n_expert_used ? cfg->n_expert : n_batch * cfg->n_expert_used;
    b->min_total = b->reserve + (uint64_t)b->min_slots * b->slot_bytes;
}

int st_expert_cache_install(st_ctx_t *c, uint64_t mem_total, st_expert_cache_budget_t *b, st_expert_cache_t **out) {
    *out = NULL;
    st_expert_cache_budget(c, mem_total, b);
    if (b->slot_bytes == 0) return ST_EUNSUP;
    if (mem_total < b->min_total) return ST_ERANGE;
    st_expert_cache_params_t p = {.cache_bytes = mem_total - b->reserve};
    st_expert_cache_t *ec = st_expert_cache_new(c, &p);
    if (!ec) return ST_EIO;
    st_moe_backend_t be = st_expert_cache_backend(ec);
    st_ctx_set_moe(c, &be);
    *out = ec;
    return 0;
}
