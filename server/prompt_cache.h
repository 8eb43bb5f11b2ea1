/* prompt_cache: the KV caches of finished sequences, kept so that a new
 * request whose prompt starts like one of them prefills only the rest (a
 * conversation's next turn starts with the previous turn's prompt and
 * answer). An LRU of (tokens, KV cache) entries under a byte budget; used by
 * the scheduler thread only.
 */
#ifndef ST_PROMPT_CACHE_H
#define ST_PROMPT_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"

typedef struct st_pcache st_pcache_t;

typedef struct {
    uint64_t hits, misses;  /* lookups that reused at least one token / none */
    uint64_t cached_tokens; /* prompt tokens reused (not prefilled) in all */
    uint64_t evictions;     /* entries dropped for the budget */
    int entries;
    size_t bytes, budget;
} st_pcache_stats_t;

/* A cache for sequences of context c (borrowed) holding at most budget bytes
 * of KV (0: keeps nothing). NULL when out of memory. */
st_pcache_t *st_pcache_new(st_ctx_t *c, size_t budget);
void st_pcache_destroy(st_pcache_t **pc);

/* A new KV cache of capacity n_ctx for a sequence whose prompt is
 * prompt[0..n), holding the longest prefix of it that an entry can give
 * exactly (at most n - 1 tokens: the last one is decoded for its logits);
 * *n_cached gets its length (0 on a miss). The entry stays cached. The caller
 * owns the result; NULL when out of memory. */
st_kv_t *st_pcache_take(st_pcache_t *pc, const int32_t *prompt, int n, int n_ctx, int *n_cached);

/* Keeps a finished sequence: *kv holds the tokens tokens[0..st_kv_pos(*kv)).
 * Takes *kv (cached, or freed when it does not fit) and NULLs it; entries
 * whose tokens are a prefix of these are dropped (this one serves them). */
void st_pcache_keep(st_pcache_t *pc, const int32_t *tokens, st_kv_t **kv);

void st_pcache_stats(const st_pcache_t *pc, st_pcache_stats_t *out);

#endif
