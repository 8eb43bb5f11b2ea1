/* Thread pool: items claimed from a shared counter; spin, yield, then sleep
 * between jobs (see header).
 *
 * Entering a job: a worker counts itself in `active`, then checks `open`;
 * the caller, once every item is claimed, clears `open` and waits for
 * `active` to reach 0. Both pairs are sequentially consistent, so either the
 * worker sees the job closed (and leaves without touching it) or the caller
 * sees the worker and waits for it: the job's arguments, on the caller's
 * stack, are never read after st_pool_for() returns. */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "alloc.h"

#define SPIN_ITERS 4096  /* pause-polls before yielding the CPU (~10-50 us) */
#define YIELD_ITERS 2000 /* sched_yield-polls before a worker sleeps (~ms when others want the CPU) */

struct st_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;     /* incremented for each job */
    atomic_bool open;    /* the current job takes new workers */
    atomic_int active;   /* workers inside the current job */
    atomic_int next;     /* next unclaimed item */
    atomic_int sleepers; /* workers blocked (or about to block) on cv */
    atomic_bool parked;  /* idle workers sleep at once (st_pool_park) */
    atomic_bool stop;
    int n_items;
    st_pool_item_fn fn;
    void *arg;
};

typedef struct {
    st_pool_t *pool;
    int ith;
} worker_arg_t;

static inline void s_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void s_claim_items(st_pool_t *pool, int ith) {
    for (int i; (i = atomic_fetch_add_explicit(&pool->next, 1, memory_order_relaxed)) < pool->n_items;)
        pool->fn(pool->arg, i, ith);
}

/* Blocks until the generation moves past `seen` (or stop): spin, yield, sleep. */
static unsigned s_wait_job(st_pool_t *pool, unsigned seen) {
    unsigned g;
    int spins = 0;
    while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen && !atomic_load(&pool->stop)) {
        const bool parked = atomic_load_explicit(&pool->parked, memory_order_relaxed);
        if (!parked && ++spins < SPIN_ITERS) {
            s_cpu_relax();
            continue;
        }
        if (!parked && spins < SPIN_ITERS + YIELD_ITERS) {
            sched_yield(); /* on a busy machine, let the thread we wait for run */
            continue;
        }
        pthread_mutex_lock(&pool->mu);
        atomic_fetch_add(&pool->sleepers, 1);
        while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop)) pthread_cond_wait(&pool->cv, &pool->mu);
        atomic_fetch_sub(&pool->sleepers, 1);
        pthread_mutex_unlock(&pool->mu);
        spins = 0;
    }
    return g;
}

static void *s_worker(void *p) {
    worker_arg_t *wa = p;
    st_pool_t *pool = wa->pool;
    const int ith = wa->ith;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        seen = s_wait_job(pool, seen);
        if (atomic_load(&pool->stop)) return NULL;
        atomic_fetch_add(&pool->active, 1);
        if (atomic_load(&pool->open)) s_claim_items(pool, ith);
        atomic_fetch_sub_explicit(&pool->active, 1, memory_order_release);
    }
}

st_pool_t *st_pool_new(int n_threads) {
    if (n_threads < 1) return NULL;
    st_pool_t *pool = st_calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->n = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->open, false);
    atomic_init(&pool->active, 0);
    atomic_init(&pool->next, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->parked, false);
    atomic_init(&pool->stop, false);
    if (n_threads > 1) {
        pool->threads = st_calloc((size_t)n_threads - 1, sizeof *pool->threads);
        if (!pool->threads) goto fail;
        for (int i = 1; i < n_threads; i++) {
            worker_arg_t *wa = st_malloc(sizeof *wa);
            if (!wa) goto fail_started;
            wa->pool = pool;
            wa->ith = i;
            if (pthread_create(&pool->threads[i - 1], NULL, s_worker, wa) != 0) {
                free(wa);
                goto fail_started;
            }
            continue;
        fail_started:
            pool->n = i; /* join only what started */
            st_pool_destroy(&pool);
            return NULL;
        }
    }
    return pool;
fail:
    free(pool);
    return NULL;
}

void st_pool_destroy(st_pool_t **pp) {
    if (!pp || !*pp) return;
    st_pool_t *pool = *pp;
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stop, true);
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 1; i < pool->n; i++) pthread_join(pool->threads[i - 1], NULL);
    free(pool->threads);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool);
    *pp = NULL;
}

int st_pool_size(const st_pool_t *pool) { return pool->n; }

void st_pool_for(st_pool_t *pool, int n_items, st_pool_item_fn fn, void *arg) {
    if (n_items <= 0) return;
    if (pool->n == 1 || n_items == 1) {
        for (int i = 0; i < n_items; i++) fn(arg, i, 0);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    pool->n_items = n_items;
    atomic_store_explicit(&pool->next, 0, memory_order_relaxed);
    atomic_store(&pool->parked, false);
    atomic_store(&pool->open, true);
    atomic_fetch_add_explicit(&pool->gen, 1, memory_order_release);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
    }
    s_claim_items(pool, 0);
    atomic_store(&pool->open, false);
    for (int spins = 0; atomic_load_explicit(&pool->active, memory_order_acquire) > 0; spins++) {
        if (spins < SPIN_ITERS)
            s_cpu_relax();
        else
            sched_yield();
    }
}

void st_pool_park(st_pool_t *pool) { atomic_store_explicit(&pool->parked, true, memory_order_relaxed); }

void st_split_range(int n, int ith, int nth, int *lo, int *hi) {
    int base = n / nth, rem = n % nth;
    *lo = ith * base + (ith < rem ? ith : rem);
    *hi = *lo + base + (ith < rem ? 1 : 0);
}

int st_split_guided(int n, int nth, int min_part, int *bounds, int max_parts) {
    if (n <= 0 || max_parts < 1) return 0;
    if (nth < 1) nth = 1;
    if (min_part < 1) min_part = 1;
    int k = 0, at = 0;
    bounds[0] = 0;
    while (at < n) {
        int part = (n - at) / (2 * nth);
        if (part < min_part) part = min_part;
        if (part > n - at || k == max_parts - 1) part = n - at;
        at += part;
        bounds[++k] = at;
    }
    return k;
}

int st_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
