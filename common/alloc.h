/* alloc: the allocation functions of the model, context and remote backend
 * paths, with a fault seam (as SQLite's) so that tests can fail the N-th
 * allocation and walk N over a whole load to run every error path.
 *
 * Always compiled in: while no failure is armed, each call costs one relaxed
 * atomic load besides the libc call. */
#ifndef ST_ALLOC_H
#define ST_ALLOC_H

#include <stddef.h>

/* malloc, calloc, realloc and strdup, except that they return NULL when the
 * fault seam says so (the memory is then not allocated; realloc leaves p). */
void *st_malloc(size_t n);
void *st_calloc(size_t n, size_t size);
void *st_realloc(void *p, size_t n);
char *st_strdup(const char *s);

/* Arms the seam: counting from this call, the n-th allocation through the
 * functions above (1-based) fails, and so does every later one when sticky.
 * n = 0 disarms it. Counts from all threads (a test arms it around
 * single-threaded code to get a repeatable order). */
void st_alloc_fail_at(long n, int sticky);

/* Allocations counted while armed since the last arming (kept when disarmed),
 * and how many of them failed. To walk N: arm with LONG_MAX, run, disarm, read
 * the count, then arm with each n from 1 to it. */
long st_alloc_count(void);
long st_alloc_failed(void);

/* A program started with ST_TEST_ALLOC_FAIL=N in its environment (N > 0) arms
 * the seam before main (the N-th allocation fails) and prints
 * "st_alloc: C allocations, F failed" on stderr when it exits: how a test walks
 * N over a whole process, st-coordinator with its nodes say. */

#endif
