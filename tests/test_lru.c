/* Tests of node/lru: the expert cache never goes over its budget, evicts the
 * least recently used entry first, and never evicts pinned or held entries. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "lru.h"
#include "st_log.h"

#define KB 4096 /* one page: entries of this size cost one page + bookkeeping */

static void setup(void) { st_log_set_level(ST_LOG_ERROR); }
TestSuite(lru, .init = setup);

/* a cache with room for exactly n one-page entries after its own bookkeeping */
static st_lru_t *s_cache_for(int n) {
    st_lru_t *probe = st_lru_new(1 << 20, 0);
    uint64_t own = st_lru_used(probe);
    st_lru_destroy(&probe);
    return st_lru_new(own + (uint64_t)n * st_lru_entry_cost(KB), 0);
}

static void s_put(st_lru_t *l, uint64_t key, bool pinned) {
    uint8_t *p = st_lru_insert(l, key, KB, pinned);
    cr_assert_not_null(p, "insert %llu", (unsigned long long)key);
    memset(p, (int)key, KB); /* the memory is really there */
    st_lru_release(l, key);
}

Test(lru, evicts_least_recently_used_first) {
    st_lru_t *l = s_cache_for(3);
    s_put(l, 1, false);
    s_put(l, 2, false);
    s_put(l, 3, false);
    cr_assert_not_null(st_lru_get(l, 1)); /* 1 is now the most recent: 2 is the oldest */
    st_lru_release(l, 1);
    s_put(l, 4, false);
    cr_assert(st_lru_contains(l, 1) && !st_lru_contains(l, 2) && st_lru_contains(l, 3) && st_lru_contains(l, 4));
    s_put(l, 5, false); /* then 3 */
    cr_assert(!st_lru_contains(l, 3) && st_lru_contains(l, 1));
    const uint8_t *p = st_lru_get(l, 1);
    cr_assert_eq(p[KB - 1], 1); /* the data survived */
    st_lru_release(l, 1);
    st_lru_stats_t s = st_lru_stats(l);
    cr_assert_eq(s.evictions, 2);
    cr_assert_eq(s.hits, 2);
    st_lru_destroy(&l);
    cr_assert_null(l);
    st_lru_destroy(&l); /* safe twice */
}

Test(lru, pinned_entries_are_never_evicted) {
    st_lru_t *l = s_cache_for(3);
    s_put(l, 10, true);
    s_put(l, 11, false);
    s_put(l, 12, false);
    for (uint64_t k = 20; k < 30; k++) s_put(l, k, false); /* churn */
    cr_assert(st_lru_contains(l, 10));
    cr_assert_eq(st_lru_count(l), 3);
    /* with everything pinned nothing new fits */
    cr_assert_eq(st_lru_pin(l, 28, true), 0);
    cr_assert_eq(st_lru_pin(l, 29, true), 0);
    cr_assert_null(st_lru_insert(l, 99, KB, false));
    cr_assert_eq(st_lru_pin(l, 99, true), ST_ERANGE);
    /* unpinning makes room again */
    cr_assert_eq(st_lru_pin(l, 28, false), 0);
    s_put(l, 99, false);
    cr_assert(!st_lru_contains(l, 28) && st_lru_contains(l, 10) && st_lru_contains(l, 29));
    st_lru_destroy(&l);
}

Test(lru, held_entries_are_not_evicted) {
    st_lru_t *l = s_cache_for(2);
    cr_assert_not_null(st_lru_insert(l, 1, KB, false)); /* held, like an expert in use */
    cr_assert_not_null(st_lru_insert(l, 2, KB, false));
    cr_assert_null(st_lru_insert(l, 3, KB, false)); /* both held: no room */
    st_lru_release(l, 1);
    cr_assert_not_null(st_lru_insert(l, 3, KB, false)); /* 1, the oldest and no longer held, goes */
    cr_assert(!st_lru_contains(l, 1) && st_lru_contains(l, 2));
    st_lru_destroy(&l);
}

Test(lru, budget_is_never_exceeded) {
    const uint64_t budget = 1 << 20;
    st_lru_t *l = st_lru_new(budget, 0);
    srand(7);
    int held = 0;
    uint64_t held_key = 0;
    for (int i = 0; i < 5000; i++) {
        uint64_t key = (uint64_t)(rand() % 200);
        size_t bytes = (size_t)(1 + rand() % (3 * KB * 8)); /* odd sizes, up to 24 pages */
        switch (rand() % 4) {
        case 0:
            if (st_lru_get(l, key)) st_lru_release(l, key);
            break;
        case 1:
            if (!held && st_lru_get(l, key)) held = 1, held_key = key; /* keep one held for a while */
            break;
        case 2:
            if (held) st_lru_release(l, held_key), held = 0;
            break;
        default:
            if (st_lru_insert(l, key, bytes, rand() % 50 == 0)) st_lru_release(l, key);
        }
        if (rand() % 100 == 0) st_lru_charge(l, (int64_t)(rand() % (64 * KB))) == 0 ? (void)0 : (void)0;
        cr_assert_leq(st_lru_used(l), budget, "step %d: %llu B used", i, (unsigned long long)st_lru_used(l));
    }
    cr_assert_leq(st_lru_peak(l), budget);
    st_lru_destroy(&l);
}

Test(lru, fixed_charges_evict_and_refund) {
    st_lru_t *l = s_cache_for(4);
    for (uint64_t k = 0; k < 4; k++) s_put(l, k, false);
    const uint64_t before = st_lru_used(l);
    cr_assert_eq(st_lru_charge(l, (int64_t)st_lru_entry_cost(KB)), 0); /* pushes the oldest out */
    cr_assert(!st_lru_contains(l, 0));
    cr_assert_eq(st_lru_used(l), before);                                 /* one entry out, the same bytes charged */
    cr_assert_eq(st_lru_charge(l, (int64_t)st_lru_budget(l)), ST_ENOMEM); /* can never fit */
    cr_assert_eq(st_lru_charge(l, -(int64_t)st_lru_entry_cost(KB)), 0);
    s_put(l, 7, false);
    cr_assert_eq(st_lru_count(l), 4);
    st_lru_destroy(&l);
}

Test(lru, many_entries_rehash) {
    st_lru_t *l = st_lru_new(64ull << 20, 0);
    for (uint64_t k = 0; k < 3000; k++) s_put(l, k * 64 + 3, false);
    for (uint64_t k = 0; k < 3000; k++) cr_assert(st_lru_contains(l, k * 64 + 3), "key %llu", (unsigned long long)k);
    cr_assert_null(st_lru_insert(l, 3, KB, false)); /* duplicate */
    st_lru_remove(l, 3);
    cr_assert(!st_lru_contains(l, 3));
    cr_assert_eq(st_lru_count(l), 2999);
    cr_assert_null(st_lru_new(16, 0)); /* too small for its own bookkeeping */
    st_lru_destroy(&l);
}

/* A cache made for max_entries charges its whole table at once: a budget of its own bytes and
 * exactly 1200 entries holds 1200 (256 buckets would grow at 513 and 1025, charging 2048 and
 * 4096 B more then and evicting for them). 256 buckets by default: 2048 B of table. */
Test(lru, a_cache_sized_for_its_entries_holds_them_all) {
    cr_assert_eq(st_lru_own_bytes(1200) - st_lru_own_bytes(0), (1024 - 256) * sizeof(void *));
    cr_assert_eq(st_lru_own_bytes(512), st_lru_own_bytes(0));
    st_lru_t *l = st_lru_new(st_lru_own_bytes(1200) + 1200 * st_lru_entry_cost(KB), 1200);
    cr_assert_not_null(l);
    cr_assert_eq(st_lru_used(l), st_lru_own_bytes(1200));
    for (uint64_t k = 0; k < 1200; k++) s_put(l, k, false);
    cr_assert_eq(st_lru_count(l), 1200);
    cr_assert_eq(st_lru_stats(l).evictions, 0);
    st_lru_destroy(&l);
}
