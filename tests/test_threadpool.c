/* Thread pool: every item runs exactly once on a valid thread, jobs after a
 * park still complete, a worker held up does not hold the job up, and the
 * guided split covers its range. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "threadpool.h"

#define MAX_ITEMS 5000

typedef struct {
    int nth;
    _Atomic int runs[MAX_ITEMS];
    _Atomic int bad_thread;
} count_job_t;

static void s_count(void *arg, int item, int ith) {
    count_job_t *j = arg;
    atomic_fetch_add(&j->runs[item], 1);
    if (ith < 0 || ith >= j->nth) atomic_fetch_add(&j->bad_thread, 1);
}

static void s_check_job(st_pool_t *pool, int n_items) {
    count_job_t *j = calloc(1, sizeof *j);
    cr_assert_not_null(j);
    j->nth = st_pool_size(pool);
    st_pool_for(pool, n_items, s_count, j);
    for (int i = 0; i < n_items; i++)
        cr_assert_eq(atomic_load(&j->runs[i]), 1, "item %d of %d ran %d times", i, n_items, atomic_load(&j->runs[i]));
    for (int i = n_items > 0 ? n_items : 0; i < MAX_ITEMS; i++) cr_assert_eq(atomic_load(&j->runs[i]), 0);
    cr_assert_eq(atomic_load(&j->bad_thread), 0);
    free(j);
}

Test(threadpool, every_item_runs_once_for_any_size) {
    const int sizes[] = {0, 1, 2, 3, 7, 64, 1000, MAX_ITEMS};
    for (int nth = 1; nth <= 4; nth++) {
        st_pool_t *pool = st_pool_new(nth);
        cr_assert_not_null(pool);
        cr_assert_eq(st_pool_size(pool), nth);
        for (int rep = 0; rep < 200; rep++) s_check_job(pool, sizes[rep % 8]);
        st_pool_destroy(&pool);
        cr_assert_null(pool);
    }
}

static void s_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

Test(threadpool, parked_workers_wake_for_the_next_job) {
    st_pool_t *pool = st_pool_new(3);
    cr_assert_not_null(pool);
    for (int rep = 0; rep < 20; rep++) {
        st_pool_park(pool);
        s_sleep_ms(rep % 3); /* workers asleep, or on their way there */
        s_check_job(pool, 100 + rep);
    }
    st_pool_destroy(&pool);
}

/* Item 0 blocks whoever takes it until every other item is done: the job
 * only finishes if the other threads (the caller included) take the rest,
 * whatever the split. With a fixed share per thread it would deadlock. */
typedef struct {
    int n;
    _Atomic int done;
    _Atomic int gave_up; /* item 0 waited 5 s for the others */
} block_job_t;

static void s_block_first(void *arg, int item, int ith) {
    (void)ith;
    block_job_t *j = arg;
    if (item == 0) {
        int waits = 0;
        while (atomic_load(&j->done) < j->n - 1 && waits < 5000) waits++, s_sleep_ms(1);
        if (waits == 5000) atomic_store(&j->gave_up, 1);
    }
    atomic_fetch_add(&j->done, 1);
}

Test(threadpool, a_held_up_thread_does_not_hold_up_the_job, .timeout = 60) {
    st_pool_t *pool = st_pool_new(2);
    cr_assert_not_null(pool);
    for (int rep = 0; rep < 5; rep++) {
        block_job_t j = {64, 0, 0};
        st_pool_for(pool, j.n, s_block_first, &j);
        cr_assert_eq(atomic_load(&j.done), j.n);
        cr_assert_eq(atomic_load(&j.gave_up), 0, "the other items waited for the thread holding item 0");
    }
    st_pool_destroy(&pool);
}

Test(threadpool, guided_split_covers_the_range_long_parts_first) {
    int bounds[65];
    const int ns[] = {1, 7, 8, 9, 100, 18992, 1 << 20};
    for (int a = 0; a < 7; a++)
        for (int nth = 1; nth <= 8; nth++)
            for (int min = 1; min <= 16; min *= 4) {
                const int n = ns[a];
                const int k = st_split_guided(n, nth, min, bounds, 64);
                cr_assert(k >= 1 && k <= 64, "n %d nth %d: %d parts", n, nth, k);
                cr_assert_eq(bounds[0], 0);
                cr_assert_eq(bounds[k], n);
                for (int i = 0; i < k; i++) {
                    const int len = bounds[i + 1] - bounds[i];
                    cr_assert(len >= 1);
                    if (i + 1 < k) cr_assert(len >= min, "part %d of %d is %d < %d", i, k, len, min);
                    if (i + 2 < k) cr_assert(len >= bounds[i + 2] - bounds[i + 1], "parts grow at %d", i);
                }
                if (nth > 1 && n >= 64 * min) cr_assert(bounds[1] <= n / 2, "first part %d of %d", bounds[1], n);
            }
    cr_assert_eq(st_split_guided(0, 2, 1, bounds, 64), 0);
    cr_assert_eq(st_split_guided(10, 2, 1, bounds, 1), 1);
    cr_assert_eq(bounds[1], 10);
}
