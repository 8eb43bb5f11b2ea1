/* threadpool: a fixed set of worker threads that run one parallel job at a
 * time; the calling thread takes part as thread 0.
 *
 * A job is a range of work items claimed one at a time from a shared counter
 * by whichever threads are running: the caller starts on the items at once,
 * and a worker that is asleep or descheduled (other processes want the CPU,
 * as on a machine running a whole local cluster) joins when it gets there
 * instead of holding the job up with a fixed share.
 *
 * Built for the forward pass, which issues thousands of short jobs per token
 * (one per matmul): idle workers spin on a generation counter for a short
 * while, then yield, then sleep on a condition variable, so back-to-back jobs
 * do not pay a wake-up each. A caller about to block (on the network, say)
 * parks them: they sleep at once rather than take CPU from the processes it
 * waits for. No thread is ever created after st_pool_new().
 */
#ifndef ST_THREADPOOL_H
#define ST_THREADPOOL_H

typedef struct st_pool st_pool_t;

/* fn(arg, item, ith): work item `item`, run by thread ith (0 = the caller;
 * ith < st_pool_size(), an index for per-thread scratch). */
typedef void (*st_pool_item_fn)(void *arg, int item, int ith);

/* n_threads >= 1 (1: no worker threads, jobs run inline). NULL on failure. */
st_pool_t *st_pool_new(int n_threads);
void st_pool_destroy(st_pool_t **pool);
int st_pool_size(const st_pool_t *pool);

/* Runs fn once for each item in [0, n_items), on any threads, and returns
 * when all are done. Which thread runs an item, and in what order, varies
 * from run to run: items must not depend on it. Not reentrant: one caller
 * thread at a time. */
void st_pool_for(st_pool_t *pool, int n_items, st_pool_item_fn fn, void *arg);

/* The caller will not start a job for a while (it is about to block on I/O):
 * idle workers go to sleep now instead of spinning. The next job wakes them. */
void st_pool_park(st_pool_t *pool);

/* Splits [0, n) into nth near-equal contiguous parts; part ith is [*lo, *hi). */
void st_split_range(int n, int ith, int nth, int *lo, int *hi);

/* Guided split of [0, n) for st_pool_for: part i is [bounds[i], bounds[i+1]),
 * each about a (2 nth)-th of what is left but at least min_part, so the first
 * parts are long (streaming) and the last short (threads finish together).
 * Writes at most max_parts parts (the last takes the rest); returns the count
 * (0 when n <= 0). bounds holds max_parts + 1 entries. */
int st_split_guided(int n, int nth, int min_part, int *bounds, int max_parts);

/* Number of online CPUs (at least 1). */
int st_cpu_count(void);

#endif
