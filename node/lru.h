/* lru: the node's RAM cache of experts under a byte budget.
 *
 * Entries are page-aligned anonymous mappings (one per expert), keyed by a
 * number (the node uses layer * n_expert + expert). Every byte is charged:
 * the mapping rounded up to whole pages and the entry's bookkeeping; fixed
 * buffers outside the cache (compute scratch, reply buffers...) are charged
 * with st_lru_charge, so one number says what the node holds. Inserting
 * evicts least-recently-used entries until the new one fits, or fails: the
 * budget is never exceeded. Pinned entries (hot experts) and held entries
 * (in use by the current request) are never evicted.
 */
#ifndef ST_LRU_H
#define ST_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct st_lru st_lru_t;

typedef struct {
    uint64_t hits, misses, evictions;
} st_lru_stats_t;

/* An empty cache that may use budget bytes, its own bookkeeping included:
 * st_lru_own_bytes(max_entries) are charged at once (the struct and a hash
 * table sized for max_entries entries, 0: 512; more grow it, charged then).
 * NULL on failure. */
st_lru_t *st_lru_new(uint64_t budget, uint32_t max_entries);
uint64_t st_lru_own_bytes(uint32_t max_entries);
/* Frees every entry; sets *l = NULL. Safe on NULL. */
void st_lru_destroy(st_lru_t **l);

/* Bytes an entry of `bytes` data is charged (pages + bookkeeping). */
uint64_t st_lru_entry_cost(size_t bytes);

/* Charges (bytes > 0) or refunds (bytes < 0) fixed memory outside the cache,
 * evicting unpinned entries to make room. 0, or ST_ENOMEM (nothing charged). */
int st_lru_charge(st_lru_t *l, int64_t bytes);

/* Data of key, marked most recently used and held (never evicted) until
 * st_lru_release; counts a hit. NULL when absent (counts a miss). */
void *st_lru_get(st_lru_t *l, uint64_t key);
/* True when key is cached (no side effects). */
bool st_lru_contains(const st_lru_t *l, uint64_t key);
/* A new entry of bytes (page-aligned, contents undefined), held, most
 * recently used; evicts as needed. NULL when it cannot fit (ST_ENOMEM
 * logged at debug level) or key is already present. Fill it, then release it;
 * if filling fails, st_lru_remove it. */
void *st_lru_insert(st_lru_t *l, uint64_t key, size_t bytes, bool pinned);
/* Ends one hold of key (a get or insert). */
void st_lru_release(st_lru_t *l, uint64_t key);
/* Pins or unpins a cached entry. ST_ERANGE when absent. */
int st_lru_pin(st_lru_t *l, uint64_t key, bool pinned);
/* Drops key (no-op when absent); it must not be held. */
void st_lru_remove(st_lru_t *l, uint64_t key);

uint64_t st_lru_budget(const st_lru_t *l);
uint64_t st_lru_used(const st_lru_t *l); /* entries + charges, <= budget */
uint64_t st_lru_peak(const st_lru_t *l); /* highest used so far */
int st_lru_count(const st_lru_t *l);
st_lru_stats_t st_lru_stats(const st_lru_t *l);

#endif
