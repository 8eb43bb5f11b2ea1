/* expert_cache: memory-budgeted experts (`--mem SIZE`; the README's numbers).
 *
 * The dense weights stay in the GGUF mapping; the expert matrices are never
 * touched through it. They are read from the file (O_DIRECT, 4096-aligned
 * supersets of each 32-aligned matrix) by a few I/O threads into a fixed set
 * of slots, one slot per (layer, expert) holding its gate, up and down. The
 * pre-attention router's choices arrive through prefetch() before attention
 * runs, so the reads overlap attention; compute() evaluates each expert as
 * soon as its three matrices are in, with st_experts_eval (bit-identical to
 * the normal path). Eviction keeps the most used experts: least frequently
 * used (counts halved as they age), ties to the least recently used, never an
 * expert of the layer being computed.
 *
 * Budget: st_expert_cache_install() takes the whole process's budget (page
 * cache included, as a memory cgroup counts it) and leaves for the slots what
 * the dense weights, the KV cache, the process so far and a margin do not
 * need; a budget that cannot hold one layer's worth of experts is refused.
 */
#ifndef ST_EXPERT_CACHE_H
#define ST_EXPERT_CACHE_H

#include <stdint.h>

#include "forward.h"

typedef struct st_expert_cache st_expert_cache_t;

typedef struct {
    uint64_t cache_bytes; /* bytes of expert slots (required) */
    int n_io_threads;     /* reads in flight; 0: default (8) */
    int no_direct;        /* 1: buffered reads + posix_fadvise(DONTNEED) instead of O_DIRECT */
} st_expert_cache_params_t;

typedef struct {
    uint64_t tokens;         /* tokens whose experts went through the cache */
    uint64_t lookups;        /* (layer step, expert) requests */
    uint64_t hits;           /* of those, already resident or on their way */
    uint64_t loads;          /* experts read from storage */
    uint64_t bytes_read;     /* bytes read from storage (aligned spans) */
    uint64_t reads;          /* pread calls */
    double read_busy_s;      /* wall time with at least one read in flight */
    double wait_s;           /* time compute() waited for reads */
    int n_slots;             /* experts the cache holds */
    int slots_used;          /* slots ever filled (never more than n_slots) */
    uint64_t slot_bytes;     /* bytes of one slot */
    uint64_t cache_bytes;    /* budget of the slots */
    uint64_t resident_bytes; /* slots_used * slot_bytes: always <= cache_bytes */
    int direct;              /* 1 when reading with O_DIRECT */
} st_expert_cache_stats_t;

/* Bytes of one slot (gate + up + down of one expert, 4096-aligned spans) of
 * c's model; 0 when the model's experts cannot be read from its file. */
uint64_t st_expert_cache_slot_bytes(const st_ctx_t *c);

/* Bytes the rest of the process needs under a whole-process budget: current
 * RSS, dense weights not yet resident, the KV cache of n_ctx positions,
 * token-embedding rows, a margin. */
uint64_t st_expert_cache_reserve(const st_ctx_t *c, uint64_t mem_total);

/* A cache for c's model (which must come from a file). NULL after logging a
 * clear reason: experts not in the file, budget smaller than one layer's
 * experts (min(n_expert, n_batch * k) slots), I/O thread failure. The context
 * must outlive the cache. Installs nothing: see st_expert_cache_backend. */
st_expert_cache_t *st_expert_cache_new(st_ctx_t *c, const st_expert_cache_params_t *p);
/* Stops the I/O threads, frees, sets *ec = NULL; safe on NULL. Uninstall the
 * backend (st_ctx_set_moe(c, NULL)) first if the context lives on. */
void st_expert_cache_destroy(st_expert_cache_t **ec);

/* The MoE backend reading through ec (arg = ec). */
st_moe_backend_t st_expert_cache_backend(st_expert_cache_t *ec);

/* A consistent copy of the counters. */
void st_expert_cache_stats(st_expert_cache_t *ec, st_expert_cache_stats_t *s);

/* What a whole-process budget mem_total leaves for the slots of c's model. */
typedef struct {
    uint64_t slot_bytes; /* one slot (st_expert_cache_slot_bytes); 0: experts not readable from the file */
    uint64_t reserve;    /* the rest of the process (st_expert_cache_reserve) */
    int min_slots;       /* experts one layer step needs: min(n_expert, n_batch * n_expert_used) */
    uint64_t min_total;  /* reserve + min_slots * slot_bytes: the smallest budget that works */
} st_expert_cache_budget_t;

/* Fills b for c's model under mem_total. */
void st_expert_cache_budget(const st_ctx_t *c, uint64_t mem_total, st_expert_cache_budget_t *b);

/* For `--mem SIZE`: fills b, creates a cache with the slot budget mem_total -
 * b->reserve and installs it on c (*out owns it). Returns 0; ST_EUNSUP when
 * the experts cannot be read from the file (b->slot_bytes 0) and ST_ERANGE
 * when mem_total < b->min_total, both without logging so the program can say
 * why with b's figures; ST_EIO when st_expert_cache_new failed (it logged why). */
int st_expert_cache_install(st_ctx_t *c, uint64_t mem_total, st_expert_cache_budget_t *b, st_expert_cache_t **out);

#endif
