/* lru: expert cache under a byte budget (see lru.h).
 *
 * A chained hash table finds entries by key; a doubly linked list keeps them
 * in recency order (head = most recent). Eviction walks from the tail and
 * skips pinned and held entries, so its cost is the number of entries
 * skipped; a node holds at most a few thousand experts, so a list is enough.
 * Data live in their own anonymous mappings: munmap returns them to the
 * system at once, with none of malloc's retained arenas or fragmentation.
 */
#include "lru.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "st_log.h"

typedef struct entry {
    uint64_t key;
    void *data;
    size_t map_bytes; /* mapping size (pages) */
    uint64_t cost;
    int holds;
    bool pinned;
    struct entry *prev, *next; /* recency list */
    struct entry *chain;       /* hash bucket */
} entry_t;

struct st_lru {
    uint64_t budget, used, peak;
    entry_t **buckets;
    size_t n_buckets;
    int count;
    entry_t *head, *tail;
    st_lru_stats_t stats;
};

static size_t s_page(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

uint64_t st_lru_entry_cost(size_t bytes) {
    size_t pg = s_page();
    return (uint64_t)((bytes + pg - 1) / pg * pg) + sizeof(entry_t);
}

/* Buckets for max_entries: at most two entries a bucket before s_grow. */
static size_t s_buckets_for(uint32_t max_entries) {
    size_t n = 256;
    while (2 * n < max_entries) n *= 2;
    return n;
}

uint64_t st_lru_own_bytes(uint32_t max_entries) {
    return sizeof(st_lru_t) + s_buckets_for(max_entries) * sizeof(entry_t *);
}

st_lru_t *st_lru_new(uint64_t budget, uint32_t max_entries) {
    st_lru_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->budget = budget;
    l->n_buckets = s_buckets_for(max_entries);
    l->buckets = calloc(l->n_buckets, sizeof *l->buckets);
    if (!l->buckets) {
        free(l);
        return NULL;
    }
    /* the cache's own bookkeeping is charged like everything else */
    l->used = st_lru_own_bytes(max_entries);
    if (l->used > budget) {
        st_fail(ST_ENOMEM, "budget of %llu B cannot hold an empty cache", (unsigned long long)budget);
        st_lru_destroy(&l);
        return NULL;
    }
    l->peak = l->used;
    return l;
}

static void s_free_entry(entry_t *e) {
    munmap(e->data, e->map_bytes);
    free(e);
}

void st_lru_destroy(st_lru_t **lp) {
    if (!lp || !*lp) return;
    st_lru_t *l = *lp;
    for (entry_t *e = l->head, *next; e; e = next) {
        next = e->next;
        s_free_entry(e);
    }
    free(l->buckets);
    free(l);
    *lp = NULL;
}

static size_t s_bucket(const st_lru_t *l, uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)(key & (l->n_buckets - 1));
}

static entry_t *s_find(const st_lru_t *l, uint64_t key) {
    for (entry_t *e = l->buckets[s_bucket(l, key)]; e; e = e->chain)
        if (e->key == key) return e;
    return NULL;
}

static void s_unlink(st_lru_t *l, entry_t *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
}

static void s_push_front(st_lru_t *l, entry_t *e) {
    e->prev = NULL;
    e->next = l->head;
    if (l->head) l->head->prev = e;
    l->head = e;
    if (!l->tail) l->tail = e;
}

static void s_drop(st_lru_t *l, entry_t *e) {
    entry_t **pp = &l->buckets[s_bucket(l, e->key)];
    while (*pp != e) pp = &(*pp)->chain;
    *pp = e->chain;
    s_unlink(l, e);
    l->used -= e->cost;
    l->count--;
    s_free_entry(e);
}

/* Evicts from the cold end until need more bytes fit; false if they cannot. */
static bool s_make_room(st_lru_t *l, uint64_t need) {
    if (need > l->budget) return false;
    if (l->used + need <= l->budget) return true;
    /* evict nothing unless enough can go */
    uint64_t evictable = 0;
    for (entry_t *e = l->head; e; e = e->next)
        if (!e->pinned && e->holds == 0) evictable += e->cost;
    if (l->used - evictable + need > l->budget) return false;
    entry_t *e = l->tail;
    while (l->used + need > l->budget && e) {
        entry_t *prev = e->prev;
        if (!e->pinned && e->holds == 0) {
            s_drop(l, e);
            l->stats.evictions++;
        }
        e = prev;
    }
    return l->used + need <= l->budget;
}

static void s_add_used(st_lru_t *l, uint64_t n) {
    l->used += n;
    if (l->used > l->peak) l->peak = l->used;
}

int st_lru_charge(st_lru_t *l, int64_t bytes) {
    if (bytes < 0) {
        uint64_t b = (uint64_t)(-bytes);
        l->used = b > l->used ? 0 : l->used - b;
        return 0;
    }
    if (!s_make_room(l, (uint64_t)bytes))
        return st_fail(ST_ENOMEM, "%lld B do not fit: %llu of %llu B in use", (long long)bytes,
                       (unsigned long long)l->used, (unsigned long long)l->budget);
    s_add_used(l, (uint64_t)bytes);
    return 0;
}

void *st_lru_get(st_lru_t *l, uint64_t key) {
    entry_t *e = s_find(l, key);
    if (!e) {
        l->stats.misses++;
        return NULL;
    }
    l->stats.hits++;
    e->holds++;
    s_unlink(l, e);
    s_push_front(l, e);
    return e->data;
}

bool st_lru_contains(const st_lru_t *l, uint64_t key) { return s_find(l, key) != NULL; }

static void s_grow(st_lru_t *l) {
    size_t nb = l->n_buckets * 2;
    uint64_t extra = (nb - l->n_buckets) * sizeof(entry_t *);
    if (!s_make_room(l, extra)) return; /* longer chains instead */
    entry_t **b = calloc(nb, sizeof *b);
    if (!b) return;
    entry_t **old = l->buckets;
    size_t n_old = l->n_buckets;
    l->buckets = b;
    l->n_buckets = nb;
    for (size_t i = 0; i < n_old; i++)
        for (entry_t *e = old[i], *next; e; e = next) {
            next = e->chain;
            size_t k = s_bucket(l, e->key);
            e->chain = b[k];
            b[k] = e;
        }
    free(old);
    s_add_used(l, extra);
}

void *st_lru_insert(st_lru_t *l, uint64_t key, size_t bytes, bool pinned) {
    if (bytes == 0 || s_find(l, key)) return NULL;
    const uint64_t cost = st_lru_entry_cost(bytes);
    if (!s_make_room(l, cost)) {
        st_log(ST_LOG_DEBUG, "%zu B do not fit: %llu of %llu B in use", bytes, (unsigned long long)l->used,
               (unsigned long long)l->budget);
        return NULL;
    }
    entry_t *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    size_t pg = s_page();
    e->map_bytes = (bytes + pg - 1) / pg * pg;
    e->data = mmap(NULL, e->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (e->data == MAP_FAILED) {
        free(e);
        st_fail(ST_ENOMEM, "mmap of %zu B failed", bytes);
        return NULL;
    }
    e->key = key;
    e->cost = cost;
    e->holds = 1;
    e->pinned = pinned;
    size_t k = s_bucket(l, key);
    e->chain = l->buckets[k];
    l->buckets[k] = e;
    s_push_front(l, e);
    l->count++;
    s_add_used(l, cost);
    if ((size_t)l->count > 2 * l->n_buckets) s_grow(l);
    return e->data;
}

void st_lru_release(st_lru_t *l, uint64_t key) {
    entry_t *e = s_find(l, key);
    if (e && e->holds > 0) e->holds--;
}

int st_lru_pin(st_lru_t *l, uint64_t key, bool pinned) {
    entry_t *e = s_find(l, key);
    if (!e) return ST_ERANGE;
    e->pinned = pinned;
    return 0;
}

void st_lru_remove(st_lru_t *l, uint64_t key) {
    entry_t *e = s_find(l, key);
    if (e) s_drop(l, e);
}

uint64_t st_lru_budget(const st_lru_t *l) { return l->budget; }
uint64_t st_lru_used(const st_lru_t *l) { return l->used; }
uint64_t st_lru_peak(const st_lru_t *l) { return l->peak; }
int st_lru_count(const st_lru_t *l) { return l->count; }
st_lru_stats_t st_lru_stats(const st_lru_t *l) { return l->stats; }
