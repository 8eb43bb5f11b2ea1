/* plan: where a cluster of boards would put a model's experts and how fast it
 * would run, predicted from the boards' profiles (board.h) and the model's
 * shapes, without loading a weight.
 *
 * The placement is the coordinator's own (coordinator/placement.c) with each
 * node's budget and disk. The speed follows the decode step the cluster runs
 * (README, "The planner's model"), per layer and serially:
 *
 *   coordinator attention + router (st_board_matmul_s on its board), and
 *     attention over the KV cache (a decode step's tokens after --prompt
 *     positions; a prompt chunk's after the chunks before it)
 *   -> activations to the involved nodes (bytes / link rate)
 *   -> the slowest involved node: its experts' compute, plus reads of the
 *      experts that are not in its RAM, less what the prefetch sent before
 *      attention hid (expected value over uniform routing, exact: the number
 *      of ways each node's experts can be hit, summed over the layer's
 *      subsets of experts, not a sample)
 *   -> results back (bytes / link rate)
 *   + one round trip's latency (link delay both ways, messaging cost, and
 *     the expected cost of lost segments: a round trip for one inside a
 *     message, a tail-loss probe and a round trip for a message's last)
 * then the output head on the coordinator. U users decode U tokens per step
 * (one step's waits shared); a prompt runs in chunks of n_batch tokens, each
 * chunk one step over the cluster.
 *
 * Issue 18's options change three things. A head sharded over the nodes
 * (the placement's slices and their replicas, charged to the nodes' --mem as
 * the coordinator charges them) leaves the coordinator and costs one round
 * trip per step, for all its users' draws together: their hidden states out
 * to every slice's primary, the slowest primary's matmul of those rows, its
 * best candidates per user back. Compact results
 * return one row per (token, node) instead of one per (token, expert): f32,
 * or f16 with a 4-byte scale, and send each pair's routing weight out.
 * Overlap cuts a decode step of U >= 2 users into two micro-batches: while
 * one is out at the nodes the coordinator computes the other's attention, so
 * a layer takes the largest of: the coordinator's work on both, the transfer
 * of both, the nodes' compute (and reads) of both, either half's own
 * coordinator work and wait; instead of their sum.
 */
#ifndef ST_PLAN_H
#define ST_PLAN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "board.h"
#include "model.h"
#include "placement.h"

/* A network link between the coordinator and every node (a switch port each). */
typedef struct {
    double rate;  /* bytes/s of each port; 0: the boards' own net_bps */
    double delay; /* one-way seconds */
    double loss;  /* fraction of packets lost, each way */
} st_link_t;

/* Parses RATE:DELAY[:LOSS] ("1gbit:0.1ms", "100mbit:20ms:1%"); rates in
 * bit/s with k/m/g (bit or bps) suffixes, delays in s/ms/us. false on a bad
 * string. */
bool st_link_parse(const char *s, st_link_t *link);

/* What the planner needs of a model: shapes, types and bytes. */
typedef struct {
    char desc[160];
    int n_layer, n_expert, n_expert_used, n_embd, n_ff, n_vocab, n_head, n_head_kv, head_dim;
    int n_swa;                  /* sliding window of the layers flagged is_swa (0: none) */
    bool is_swa[ST_MAX_LAYERS]; /* layer attends over the last n_swa positions only */
    uint64_t file_bytes;
    uint64_t dense_bytes;                       /* resident on the coordinator: attention, norms, routers, head */
    uint64_t embd_bytes;                        /* token embeddings: mapped, one row read per token */
    uint64_t expert_bytes;                      /* all experts, one copy */
    uint64_t layer_expert_bytes[ST_MAX_LAYERS]; /* one expert of each layer */
    struct {
        st_type_t type;
        int64_t rows, cols;
    } dense[ST_MAX_LAYERS][5], /* wq, wk, wv, wo, router */
        exp[ST_MAX_LAYERS][3], /* gate, up, down of one expert */
        head;
    uint64_t act_bytes;  /* one token's activation row as sent to a node */
    uint64_t head_bytes; /* the output head (output.weight, or the tied embeddings) */
} st_plan_model_t;

/* Reads the shapes of a loaded model (no weight is touched). 0 or ST_EUNSUP. */
int st_plan_model_from(const st_model_t *m, st_plan_model_t *pm);

/* Where the output head runs (st-coordinator --head). */
typedef enum {
    ST_PLAN_HEAD_LOCAL,   /* on the coordinator */
    ST_PLAN_HEAD_SHARDED, /* in vocabulary slices on the nodes */
    ST_PLAN_HEAD_AUTO     /* sharded when every node's --mem is at least 4 slices, as the coordinator decides */
} st_plan_head_t;

/* What the nodes return per layer (st-coordinator --wire). */
typedef enum {
    ST_PLAN_WIRE_EXACT,    /* one f32 row per (token, expert) */
    ST_PLAN_WIRE_COMPACT,  /* one f32 row per (token, node) */
    ST_PLAN_WIRE_COMPACT16 /* one f16 row and a f32 scale per (token, node) */
} st_plan_wire_t;

typedef struct {
    const st_board_t *coord;
    const st_board_t *nodes; /* n_nodes boards (mem: each node's --mem) */
    int n_nodes;
    st_link_t link;
    int users;           /* concurrent users (decode batch), >= 1 */
    int prompt;          /* prompt tokens for the time to first token */
    int n_batch;         /* prompt chunk (the coordinator's --batch; 64) */
    int n_ctx;           /* context per user, for the coordinator's KV cache */
    st_plan_head_t head; /* where the output head runs */
    int replication;     /* copies of each expert and head slice (--replication; 0 or 1: one) */
    st_plan_wire_t wire; /* the nodes' results */
    bool overlap;        /* decode of >= 2 users in two overlapped micro-batches */
} st_plan_params_t;

/* One step's time by part (seconds). */
typedef struct {
    double coord;    /* coordinator dense compute: attention, router, head */
    double node;     /* the slowest node's expert compute, per layer, summed */
    double storage;  /* what its reads add on top (not hidden by the prefetch) */
    double transfer; /* activations out and results back */
    double latency;  /* round trips: delay both ways, messaging, lost packets */
    double overlap;  /* of the parts above, the time hidden by overlapped micro-batches */
    double total;    /* the parts less overlap */
} st_plan_step_t;

typedef struct {
    int experts;         /* placed on the node, all layers and copies */
    uint64_t bytes;      /* of those experts: its store on disk beside its head slices */
    int head_slices;     /* head slices it holds (its own and replicas) */
    uint64_t head_bytes; /* their bytes: in its --mem before the experts, and on its disk */
    uint64_t fixed;      /* of its --mem that st-node keeps for itself (node_mem.h) */
    uint64_t room;       /* experts its cache holds: --mem less fixed and head bytes, over one expert's cost */
    uint64_t ram;        /* of the experts held in RAM (room of them at most) */
    uint64_t stream;     /* read from its store when used */
    double ram_fraction;
    bool over_budget; /* more experts than room: st-node streams them and keeps the file's layout (unpacked) */
} st_plan_node_t;

typedef struct {
    st_placement_t *placement;
    st_plan_node_t *nodes; /* n_nodes */
    int n_nodes;
    uint64_t coord_ram;                       /* dense weights + KV caches + buffers */
    bool head_sharded;                        /* the head's slices are on the nodes (decided for auto) */
    st_plan_step_t decode1, decodeN, prefill; /* prefill: the whole prompt */
    double decode_tps_1, decode_tps_n, prefill_tps, ttft_s;
    const char *bottleneck; /* name of decode1's largest part */
    char warnings[4][256];
    int n_warnings;
} st_plan_t;

/* Places the experts (and the head's slices) as the coordinator does, and
 * predicts. With replicas, each layer's compute is modelled on the primary
 * copies alone (the coordinator sends a pair to its least-loaded owner up, so
 * replicas spread a layer's pairs: a pessimistic figure for the nodes' part).
 * NULL after a clear error (logged) when the setup is impossible: the experts fit on no store, the coordinator's board
 * cannot hold the dense weights, bad parameters. */
st_plan_t *st_plan_new(const st_plan_model_t *m, const st_plan_params_t *p);
void st_plan_destroy(st_plan_t **plan);

/* Expected time of the slowest of n nodes when d of the x experts of a layer
 * are used (uniformly at random, without repeats): node i holds ram[i] experts
 * in RAM and disk[i] on its store, an expert takes compute[i] s and a read
 * read[i] s more, reads start `hide` s before the results are wanted. Exact
 * (exposed for the tests); negative on bad input. */
double st_plan_expected_max(int n, const int *ram, const int *disk, const double *compute, const double *read,
                            double hide, int d);

/* The part of a step that takes longest ("coordinator", "nodes", "storage", "network", "round trips"). */
const char *st_plan_bottleneck(const st_plan_step_t *s);

#endif
