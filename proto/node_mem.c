/* node_mem: a node's fixed bytes and room for experts (see node_mem.h). */
#include "node_mem.h"

#include "wire.h"

#define STORE_ALIGN 4096   /* store.c's ST_STORE_ALIGN: records are whole blocks */
#define STORE_INFLIGHT 16  /* store.c's ST_STORE_MAX_INFLIGHT: slots beyond the keys */
#define PAGE 4096          /* lru.c maps each entry in whole pages: 4 KiB unless told */
#define LRU_ENTRY_BYTES 64 /* sizeof lru.c's entry_t on 64-bit */

uint64_t st_node_reserve_bytes(uint32_t max_tokens, uint32_t n_expert_used, uint32_t n_embd, int threads) {
    const uint64_t rx = (uint64_t)ST_NODE_RX_MSGS * (ST_WIRE_MAX_FRAME + ST_WIRE_MAX_ENVELOPE / 16);
    const uint64_t tx = (uint64_t)(ST_NODE_HWM + 1) * max_tokens * n_expert_used * n_embd * sizeof(float);
    return rx + tx + ST_NODE_SLACK + (uint64_t)(threads > 0 ? threads : 1) * ST_NODE_THREAD_SLACK;
}

static uint64_t s_round(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

uint64_t st_node_index_bytes(uint32_t n_keys, uint64_t expert_bytes) {
    /* per key a slot (int32) and a hash; per slot a busy byte; one record of scratch */
    return (uint64_t)n_keys * (sizeof(int32_t) + ST_WIRE_HASH_BYTES) + n_keys + STORE_INFLIGHT +
           s_round(expert_bytes, STORE_ALIGN);
}

uint64_t st_node_expert_cost(uint64_t expert_bytes, uint64_t page_size) {
    return s_round(s_round(expert_bytes, STORE_ALIGN), page_size ? page_size : PAGE) + LRU_ENTRY_BYTES;
}

uint64_t st_node_fixed_bytes(uint32_t n_keys, uint64_t expert_bytes, uint32_t max_tokens, uint32_t n_expert_used,
                             uint32_t n_embd, int threads) {
    return ST_NODE_RUNTIME_BYTES + st_node_index_bytes(n_keys, expert_bytes) +
           st_node_reserve_bytes(max_tokens, n_expert_used, n_embd, threads);
}
