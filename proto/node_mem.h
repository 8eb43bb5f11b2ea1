/* node_mem: what a node's --mem holds beside its cached experts, as st-node
 * charges it (node/node.c) and st-plan predicts it (plan/plan.c) - one rule
 * for both, so the planner's room for experts is the node's.
 *
 * st-node charges, out of --mem: its resident bytes after start-up and the
 * heap of its compute context and buffers (both measured at run time), its
 * store's index, the reserves below, and then each cached expert at
 * st_node_expert_cost. The planner cannot measure the first two: it charges
 * ST_NODE_RUNTIME_BYTES for them, a bound (39.5 MB measured for the 21B on
 * x86-64: 6.3 MB process, 33.2 MB compute), which the node logs when it is
 * exceeded.
 */
#ifndef ST_NODE_MEM_H
#define ST_NODE_MEM_H

#include <stdint.h>

#define ST_NODE_HWM 2                       /* replies queued per peer */
#define ST_NODE_RX_MSGS 4                   /* messages a coordinator has in flight at most (cluster.c's PUSH_WINDOW) */
#define ST_NODE_SLACK (4u << 20)            /* stacks, libc and zmq bookkeeping not measured otherwise */
#define ST_NODE_THREAD_SLACK (256u << 10)   /* per compute thread */
#define ST_NODE_RUNTIME_BYTES (64ull << 20) /* planner's bound on a node's base RSS + compute heap */

/* The node's reserves: receive (ST_NODE_RX_MSGS messages of at most a max
 * frame and envelope), send (ST_NODE_HWM + 1 replies of max_tokens x
 * n_expert_used rows of n_embd floats), ST_NODE_SLACK and the threads' slack. */
uint64_t st_node_reserve_bytes(uint32_t max_tokens, uint32_t n_expert_used, uint32_t n_embd, int threads);

/* Bytes of a store index over n_keys experts (layers x experts) whose largest
 * is expert_bytes (store.c's st_store_mem_bytes, less its struct). */
uint64_t st_node_index_bytes(uint32_t n_keys, uint64_t expert_bytes);

/* Bytes one cached expert of at most expert_bytes costs (a store record,
 * rounded up to pages of page_size bytes, and the cache's entry): lru.c's
 * st_lru_entry_cost of the store's record on a kernel of that page size
 * (st-node: sysconf; st-plan: the board's page_size; 0 means 4096). */
uint64_t st_node_expert_cost(uint64_t expert_bytes, uint64_t page_size);

/* The planner's fixed bytes of a node: ST_NODE_RUNTIME_BYTES, the index and
 * the reserves. */
uint64_t st_node_fixed_bytes(uint32_t n_keys, uint64_t expert_bytes, uint32_t max_tokens, uint32_t n_expert_used,
                             uint32_t n_embd, int threads);

/* A node's room, the bytes it has for cached experts and head slices, is
 * --mem less its fixed bytes; st-node reports it in INVENTORY, st-plan
 * computes it with st_node_fixed_bytes, and placement.c counts the experts
 * it holds beside its head slices at st_node_expert_cost each. */

#endif
