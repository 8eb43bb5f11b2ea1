/* Thread pool: generation counter + spin-then-sleep workers (see header). */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define SPIN_ITERS 4096    /* pause-polls before yielding the CPU (~10-50 us) */
#define YIELD_ITERS 2000   /* sched_yield-polls before a worker sleeps (~ms when others want the CPU) */

struct st_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;     /* incremented for each job */
    atomic_int pending;  /* workers still running the current job */
    atomic_int sleepers; /* workers blocked (or about to block) on cv */
    atomic_bool stop;
    st_pool_fn fn;
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

static void *s_worker(void *p) {
    worker_arg_t *wa = p;
    st_pool_t *pool = wa->pool;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool->gen, memory_order_acquire)) == seen &&
               !atomic_load(&pool->stop)) {
            if (++spins < SPIN_ITERS) {
                s_cpu_relax();
                continue;
            }
            if (spins < SPIN_ITERS + YIELD_ITERS) {
                sched_yield(); /* on a busy machine, let the thread we wait for run */
                continue;
            }
            pthread_mutex_lock(&pool->mu);
            atomic_fetch_add(&pool->sleepers, 1);
            while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cv, &pool->mu);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mu);
            spins = 0;
        }
        if (atomic_load(&pool->stop)) return NULL;
        seen = g;
        pool->fn(pool->arg, ith, pool->n);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
    }
}

st_pool_t *st_pool_new(int n_threads) {
    if (n_threads < 1) return NULL;
    st_pool_t *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->n = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->stop, false);
    if (n_threads > 1) {
        pool->threads = calloc((size_t)n_threads - 1, sizeof *pool->threads);
        if (!pool->threads) goto fail;
        for (int i = 1; i < n_threads; i++) {
            worker_arg_t *wa = malloc(sizeof *wa);
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

void st_pool_run(st_pool_t *pool, st_pool_fn fn, void *arg) {
    if (pool->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store(&pool->pending, pool->n - 1);
    atomic_fetch_add_explicit(&pool->gen, 1, memory_order_release);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->cv);
        pthread_mutex_unlock(&pool->mu);
    }
    fn(arg, 0, pool->n);
    for (int spins = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; spins++) {
        if (spins < SPIN_ITERS) s_cpu_relax();
        else sched_yield();
    }
}

void st_split_range(int n, int ith, int nth, int *lo, int *hi) {
    int base = n / nth, rem = n % nth;
    *lo = ith * base + (ith < rem ? ith : rem);
    *hi = *lo + base + (ith < rem ? 1 : 0);
}

int st_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
