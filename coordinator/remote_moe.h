/* remote_moe: the MoE step of the forward pass run on the cluster
 * (an st_moe_backend_t; the experts' identity is experts.h's).
 *
 * Per layer: prefetch() (right after routing, before attention) picks the
 * node that computes each (token, expert) pair and tells each node which of
 * its experts are coming (one-way EXPERT_PREFETCH); compute() converts the
 * activations once to the gate weight's vec_dot format, sends every involved
 * node one EXPERT_COMPUTE with its pairs and the rows of the tokens they use,
 * computes meanwhile the pairs no node can take (fallback, from the model
 * file), gathers the per-pair EXPERT_RESULT vectors into routing order and
 * sums them with st_moe_combine(), so the result is bit-identical to the
 * single-process path whatever the placement (the compact result formats
 * instead sum each node's pairs on the node: see st_remote_opts_t). A node that misses its
 * deadline or answers with an error is marked down and its pairs are
 * computed locally (fallback) or the step fails with an error naming it.
 * With o.overlap, compute() is also offered in two halves, begin() (convert,
 * send, fallback) and end() (gather, replicas, combine), for two micro-batches
 * in flight at once (st_moe_backend_t); each has its own requests and buffers,
 * and the results of one that arrive while the other waits are kept.
 */
#ifndef ST_REMOTE_MOE_H
#define ST_REMOTE_MOE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster.h"
#include "forward.h"
#include "model.h"
#include "placement.h"

typedef struct {
    int timeout_ms; /* deadline of one EXPERT_COMPUTE round trip */
    bool fallback;  /* compute the pairs of a node that is down here (else: fail) */
    bool prefetch;  /* send EXPERT_PREFETCH after routing */
    bool stats;     /* one line per decode token on stderr */
    /* what the nodes return (st_wire_result_format_t): ST_RESULT_PER_PAIR_F32 (0) is exact, one vector
     * per (token, expert) summed here as st-run does; a PER_TOKEN format sends the routing weights and
     * gets one partial sum per (token, node), fewer bytes but other rounding */
    uint32_t result_format;
    /* a decode step of several sequences as two micro-batches in a ping-pong: one's attention runs
     * here while the nodes compute the other's experts (st_moe_backend_t.begin/end) */
    bool overlap;
} st_remote_opts_t;

typedef struct st_remote_moe st_remote_moe_t;

/* The backend for ctx (whose model must be the one placed). cl and pl are
 * borrowed and must outlive it; pl may be NULL (no node placed yet: every
 * pair is computed here, or fails without fallback). NULL on no memory. */
st_remote_moe_t *st_remote_moe_new(st_ctx_t *ctx, st_cluster_t *cl, const st_placement_t *pl,
                                   const st_remote_opts_t *o);
void st_remote_moe_destroy(st_remote_moe_t **r);
/* Switches to pl (borrowed, must outlive r or the next switch), a placement
 * over the cluster's first nodes (the cluster may have grown, st_cluster_add,
 * since). Call between steps (st_generate_cb_t.between_steps, the server's
 * st_server_view_t.between_steps). 0 or a negative ST_E* code. */
int st_remote_moe_set_placement(st_remote_moe_t *r, const st_placement_t *pl);
/* The st_moe_backend_t to install with st_ctx_set_moe(). */
st_moe_backend_t st_remote_moe_backend(st_remote_moe_t *r);

/* Closes the current step's statistics (call after the generation). */
void st_remote_moe_finish(st_remote_moe_t *r);
/* Summary: round trips, bytes and node compute per decode token and node,
 * prefetch hits, fallback pairs. */
void st_remote_moe_print_stats(const st_remote_moe_t *r, FILE *f);

typedef struct {
    uint64_t decode_tokens, prefill_steps, prefill_tokens;
    uint64_t rt_decode;        /* EXPERT_COMPUTE round trips during decode */
    uint64_t involved_decode;  /* (token, layer, node) triples with pairs on the node */
    int max_rt_per_layer_node; /* most round trips one node got in one layer */
    uint64_t bytes_out_decode, bytes_in_decode;
    uint64_t fallback_pairs; /* pairs computed by the coordinator */
    uint64_t resent_pairs;   /* pairs re-sent to a replica after their node failed */
    uint64_t remote_pairs;
    double wait_ms_decode;     /* wall time spent waiting for node results during decode */
    double max_wait_ms;        /* longest single wait for node results (bounded by timeout_ms) */
    uint64_t waits;            /* waits for node results (one per round of a layer) */
    uint64_t overlapped_steps; /* steps run as two micro-batches (--overlap) */
} st_remote_totals_t;

/* Routing counts so far: n_layer x n_expert (token, expert) selections. */
const uint64_t *st_remote_moe_route_counts(const st_remote_moe_t *r);

/* One node's totals over closed steps (prefill and decode): round trips,
 * node compute time, the expert uses it reported (hits: in RAM before
 * they were named; prefetched: read ahead on the prefetch hint; misses: read
 * on demand), and the
 * summed round-trip time of its requests (sending an EXPERT_COMPUTE to its
 * result: network and compute; the HTTP server's cluster view and /metrics).
 * Zeros for a bad node index. */
typedef struct {
    uint64_t round_trips, compute_us, cache_hits, cache_misses, cache_prefetched;
    double rtt_ms;
} st_remote_node_totals_t;
st_remote_node_totals_t st_remote_moe_node_totals(const st_remote_moe_t *r, int node);

#endif
