/* threadpool: a fixed set of worker threads that run one parallel job at a
 * time; the calling thread takes part as thread 0.
 *
 * Built for the forward pass, which issues thousands of short jobs per token
 * (one per matmul): workers spin on a generation counter for a short while
 * before sleeping on a condition variable, so back-to-back jobs do not pay a
 * wake-up each. No thread is ever created after st_pool_new().
 */
#ifndef ST_THREADPOOL_H
#define ST_THREADPOOL_H

typedef struct st_pool st_pool_t;

/* fn(arg, ith, nth): thread ith of nth; the job is done when all returned. */
typedef void (*st_pool_fn)(void *arg, int ith, int nth);

/* n_threads >= 1 (1: no worker threads, jobs run inline). NULL on failure. */
st_pool_t *st_pool_new(int n_threads);
void st_pool_destroy(st_pool_t **pool);
int st_pool_size(const st_pool_t *pool);

/* Runs fn on every thread and returns when all have finished. Not reentrant:
 * one caller thread at a time. */
void st_pool_run(st_pool_t *pool, st_pool_fn fn, void *arg);

/* Splits [0, n) into nth near-equal contiguous parts; part ith is [*lo, *hi). */
void st_split_range(int n, int ith, int nth, int *lo, int *hi);

/* Number of online CPUs (at least 1). */
int st_cpu_count(void);

#endif
