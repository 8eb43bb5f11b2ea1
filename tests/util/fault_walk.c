/* st-fault-walk: fails the N-th allocation (common/alloc.h) for every N that
 * a step makes, one run per N, and checks what each failure left behind:
 *   - the step reports the failure (NULL or a negative code) and an error
 *     line was logged, or it recovered and its logits are bit for bit those
 *     of a run without failures;
 *   - the heap holds what it held before (mallinfo2; under ASan, where
 *     mallinfo2 does not see the heap, LeakSanitizer checks at exit);
 *   - no crash (the test that runs this sees the exit status).
 * A separate program so that LeakSanitizer checks it in full: inside a
 * Criterion test, the suppression of Criterion's own leaks hides ours too.
 *
 *   GLIBC_TUNABLES=glibc.malloc.tcache_count=0 st-fault-walk load|resident|streaming|ctx MODEL 2>LOG
 * load, resident, streaming: the step is that loader; ctx: st_ctx_new and
 * st_kv_new on a model loaded once. Each step then decodes 4 tokens.
 * Prints one summary line; exit 0 when every check held, 1 otherwise. */
#include <limits.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "forward.h"
#include "model.h"
#include "st_log.h"

#define ST_FAULT_TUNABLES "glibc.malloc.tcache_count=0"

enum { N_TOK = 4 };
static const int32_t s_tokens[N_TOK] = {9707, 11, 1879, 0};

typedef enum { LOAD, RESIDENT, STREAMING, CTX } walk_t;

static st_model_t *s_load(walk_t mode, const char *path) {
    switch (mode) {
    case RESIDENT: return st_model_load_resident(path);
    case STREAMING: return st_model_load_streaming(path, true);
    default: return st_model_load(path);
    }
}

/* Context, cache and the logits of the last of N_TOK tokens; 0 or a negative code. */
static int s_decode(const st_model_t *m, float *logits) {
    st_ctx_params_t p = st_ctx_default_params();
    p.n_ctx = 64;
    p.n_batch = 8;
    p.n_threads = 2;
    st_ctx_t *c = st_ctx_new(m, &p);
    st_kv_t *kv = c ? st_kv_new(c, p.n_ctx) : NULL;
    int rc = kv ? st_decode(c, kv, s_tokens, N_TOK, logits, false) : ST_ENOMEM;
    st_kv_destroy(&kv);
    st_ctx_destroy(&c);
    return rc;
}

static bool s_has_tok; /* the model loaded without failures has a tokenizer */

/* One step with the N-th allocation failing (n = 0: none). Returns 0 (ran,
 * logits written), 1 (reported a failure), -1 (loaded but does not decode),
 * or -2 (loaded without the tokenizer a run without failures has). */
static int s_step(walk_t mode, const char *path, const st_model_t *shared, long n, float *logits) {
    int rc;
    if (mode == CTX) {
        st_alloc_fail_at(n, 0);
        rc = s_decode(shared, logits);
        st_alloc_fail_at(0, 0);
        return rc < 0 ? 1 : 0;
    }
    st_alloc_fail_at(n, 0);
    st_model_t *m = s_load(mode, path);
    st_alloc_fail_at(0, 0);
    if (!m) return 1;
    if (n == 0) s_has_tok = m->tok != NULL;
    const bool tok_lost = s_has_tok && !m->tok;
    rc = s_decode(m, logits);
    st_model_destroy(&m);
    return rc < 0 ? -1 : tok_lost ? -2 : 0; /* the model loaded: it must be whole */
}

static size_t s_heap(void) {
    const struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static long s_log_size(void) {
    struct stat st;
    return fstat(2, &st) == 0 && S_ISREG(st.st_mode) ? (long)st.st_size : -1;
}

int main(int argc, char **argv) {
    static const char *names[] = {"load", "resident", "streaming", "ctx"};
    int mode = -1;
    for (int i = 0; argc == 3 && i < 4; i++)
        if (!strcmp(argv[1], names[i])) mode = i;
    if (mode < 0) {
        fprintf(stderr, "usage: st-fault-walk load|resident|streaming|ctx MODEL 2>LOG\n");
        return 2;
    }
    const char *path = argv[2];
    /* mallinfo2 counts what the per-thread caches hold and the headers of the
     * arenas new threads get as in use: the heap check needs neither */
    const char *tun = getenv("GLIBC_TUNABLES");
    if (!tun || !strstr(tun, ST_FAULT_TUNABLES)) {
        fprintf(stderr, "st-fault-walk: run with GLIBC_TUNABLES=%s\n", ST_FAULT_TUNABLES);
        return 2;
    }
    mallopt(M_ARENA_MAX, 1);
    setvbuf(stdout, NULL, _IONBF, 0); /* a buffer allocated at the first report is no leak */
    st_model_t *shared = mode == CTX ? st_model_load(path) : NULL;
    if (mode == CTX && !shared) return 1;
    const st_model_t *probe = shared ? shared : NULL;
    int n_vocab = 0;
    if (!probe) {
        st_model_t *m = st_model_load(path);
        if (!m) return 1;
        n_vocab = m->cfg.n_vocab;
        st_model_destroy(&m);
    } else {
        n_vocab = probe->cfg.n_vocab;
    }
    float *ref = malloc((size_t)n_vocab * sizeof *ref), *got = malloc((size_t)n_vocab * sizeof *got);
    if (!ref || !got) return 1;

    /* the reference run, twice: the first warms what lives for the process
     * (kernel tables, log level); the second counts the allocations */
    if (s_step(mode, path, shared, 0, ref) != 0) return 1;
    if (s_step(mode, path, shared, LONG_MAX, ref) != 0) return 1; /* counts, never fails */
    const long n_alloc = st_alloc_count();
    const size_t heap0 = s_heap();

    int bad = 0;
    long n_failed = 0, n_recovered = 0;
    for (long n = 1; n <= n_alloc; n++) {
        const long log0 = s_log_size();
        memset(got, 0, (size_t)n_vocab * sizeof *got);
        const int r = s_step(mode, path, shared, n, got);
        const long log1 = s_log_size();
        if (r == 1) {
            n_failed++;
            if (log0 >= 0 && log1 <= log0) {
                printf("allocation %ld of %ld: the failure was reported without an error line\n", n, n_alloc);
                bad = 1;
            }
        } else if (r == 0 && !memcmp(got, ref, (size_t)n_vocab * sizeof *got)) {
            n_recovered++;
            fprintf(stderr, "st-fault-walk: allocation %ld of %ld failing: recovered\n", n, n_alloc);
        } else {
            printf("allocation %ld of %ld: %s\n", n, n_alloc,
                   r == -1   ? "the model loaded but does not decode"
                   : r == -2 ? "the model loaded without its tokenizer"
                             : "recovered with different logits");
            bad = 1;
        }
        const size_t heap = s_heap();
        if (heap != heap0) {
            printf("allocation %ld of %ld failing leaves %+lld heap bytes\n", n, n_alloc,
                   (long long)heap - (long long)heap0);
            bad = 1;
        }
    }
    printf("%s: %ld allocations; failing each: %ld reported, %ld recovered with the same logits%s\n", names[mode],
           n_alloc, n_failed, n_recovered, bad ? "; FAILED (above)" : "");
    st_model_destroy(&shared);
    free(ref);
    free(got);
    return bad || n_alloc == 0;
}
