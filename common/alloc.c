/* alloc: libc allocation behind a counter that tests can arm (see alloc.h).
 * Disarmed, the only cost is one relaxed load of s_armed per call. */
#include "alloc.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int s_armed;
static atomic_long s_count, s_failed, s_fail_at;
static atomic_int s_sticky;

void st_alloc_fail_at(long n, int sticky) {
    atomic_store(&s_armed, 0);
    if (n <= 0) return; /* disarmed: the counts stay readable */
    atomic_store(&s_count, 0);
    atomic_store(&s_failed, 0);
    atomic_store(&s_fail_at, n);
    atomic_store(&s_sticky, sticky);
    atomic_store(&s_armed, 1);
}

long st_alloc_count(void) { return atomic_load(&s_count); }
long st_alloc_failed(void) { return atomic_load(&s_failed); }

/* True when this allocation is to fail. */
static int s_fail(void) {
    if (!atomic_load_explicit(&s_armed, memory_order_relaxed)) return 0;
    const long i = atomic_fetch_add(&s_count, 1) + 1, at = atomic_load(&s_fail_at);
    if (i == at || (i > at && atomic_load(&s_sticky))) {
        atomic_fetch_add(&s_failed, 1);
        return 1;
    }
    return 0;
}

void *st_malloc(size_t n) { return s_fail() ? NULL : malloc(n); }

void *st_calloc(size_t n, size_t size) { return s_fail() ? NULL : calloc(n, size); }

void *st_realloc(void *p, size_t n) { return s_fail() ? NULL : realloc(p, n); }

char *st_strdup(const char *s) {
    if (s_fail()) return NULL;
    return strdup(s);
}

static void s_report(void) {
    fprintf(stderr, "st_alloc: %ld allocations, %ld failed\n", st_alloc_count(), st_alloc_failed());
}

/* ST_TEST_ALLOC_FAIL=N: a whole program walked from outside (see alloc.h) */
__attribute__((constructor)) static void s_from_env(void) {
    const char *v = getenv("ST_TEST_ALLOC_FAIL");
    if (!v || !*v) return;
    char *end;
    const long n = strtol(v, &end, 10);
    if (*end || n <= 0) return;
    st_alloc_fail_at(n, 0);
    atexit(s_report);
}
