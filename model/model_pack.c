/* model_pack: a model's matrices rearranged for the kernel table (st_pack),
 * in place, once at load.
 *
 * Only matrices that nothing reads row by row are packed: attention's q, k,
 * v and output projections, the output head unless it is the embedding
 * table (tied), and, in a resident copy, the experts' gate, up and down
 * (down only in the file's standard layout). A coordinator packs only the
 * dense ones, in its private file mapping: their pages become its own
 * (copy-on-write) while the experts it pushes to nodes stay the file's. A
 * matrix the table cannot pack (type, rows not whole groups) stays as it
 * is, pack_rows 0; the forward pass reads each matrix in its own layout,
 * with the same bits either way. Matrices are packed by a few threads, each
 * claiming the next one. */
#include "model.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "alloc.h"
#include "st_log.h"

#define PACK_THREADS 4

typedef struct {
    st_weight_t *w;
    int64_t e; /* matrix of w */
} pack_item_t;

typedef struct {
    const st_kernels_t *k;
    pack_item_t *items;
    int n;
    atomic_int next;
    atomic_int n_failed; /* matrices left unpacked although eligible (no memory for a group) */
} pack_job_t;

static void *s_pack_worker(void *arg) {
    pack_job_t *j = arg;
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < j->n;) {
        st_weight_t *w = j->items[i].w;
        if (!st_pack(j->k, w->type, (int)w->n_cols, w->n_rows, (void *)st_weight_row(w, j->items[i].e, 0)))
            atomic_fetch_add(&j->n_failed, 1);
    }
    return NULL;
}

static bool s_packable(const st_kernels_t *k, const st_weight_t *w) {
    return w->data && w->n_cols <= INT32_MAX && st_packable(k, w->type, (int)w->n_cols, w->n_rows);
}

/* The weights that nothing reads row by row and k packs (at most 7 per
 * layer + 1); the experts' only with `experts`. */
static int s_packable_weights(const st_kernels_t *k, st_model_t *m, bool experts, st_weight_t **out) {
    int n = 0;
    for (int il = 0; il < m->cfg.n_layer; il++) {
        st_layer_t *L = &m->layers[il];
        st_weight_t *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate_exps, &L->up_exps, &L->down_exps};
        const size_t n_ws = !experts ? 4 : L->down_transposed ? 6 : 7;
        for (size_t i = 0; i < n_ws; i++)
            if (s_packable(k, ws[i])) out[n++] = ws[i];
    }
    if (m->output.data != m->tok_embd.data && !m->head_mapped && s_packable(k, &m->output)) out[n++] = &m->output;
    return n;
}

/* Makes w's bytes writable: a no-op on a resident copy; on a private file
 * mapping, the pages become copy-on-write (the file is never written). */
static int s_writable(const st_weight_t *w) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = (uintptr_t)w->data & ~(page - 1);
    const uintptr_t b = ((uintptr_t)w->data + (size_t)w->n_mat * w->mat_bytes + page - 1) & ~(page - 1);
    if (mprotect((void *)a, b - a, PROT_READ | PROT_WRITE) != 0)
        return st_fail(ST_EIO, "%s: cannot make its pages writable: %s", w->name, strerror(errno));
    return 0;
}

int st_model_pack(st_model_t *m, const st_kernels_t *k, bool experts) {
    m->kernels = k;
    st_weight_t **ws = st_calloc((size_t)m->cfg.n_layer * 7 + 1, sizeof *ws);
    if (!ws) return st_fail(ST_ENOMEM, "no memory to list the matrices to pack");
    const int n_w = s_packable_weights(k, m, experts, ws);
    int n = 0;
    for (int i = 0; i < n_w; i++) {
        const int rc = s_writable(ws[i]);
        if (rc < 0) {
            free(ws);
            return rc;
        }
        n += (int)ws[i]->n_mat;
    }
    pack_job_t j = {.k = k, .items = st_calloc((size_t)n + 1, sizeof *j.items), .n = n};
    if (!j.items) {
        free(ws);
        return st_fail(ST_ENOMEM, "no memory to list %d matrices to pack", n);
    }
    for (int i = 0, at = 0; i < n_w; i++)
        for (int64_t e = 0; e < ws[i]->n_mat; e++) j.items[at++] = (pack_item_t){ws[i], e};
    pthread_t th[PACK_THREADS - 1];
    int started = 0;
    for (; started < PACK_THREADS - 1 && started < n - 1; started++)
        if (pthread_create(&th[started], NULL, s_pack_worker, &j) != 0) break;
    s_pack_worker(&j);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    free(j.items);
    if (atomic_load(&j.n_failed) > 0) { /* some matrices packed, some not: the model is unusable */
        free(ws);
        return st_fail(ST_ENOMEM, "no memory to pack %d of %d matrices", atomic_load(&j.n_failed), n);
    }
    for (int i = 0; i < n_w; i++) ws[i]->pack_rows = k->pack_rows[ws[i]->type];
    free(ws);
    st_log(ST_LOG_INFO, "packed %d matrices for the %s kernels", n, k->name);
    return 0;
}
