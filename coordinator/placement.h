/* placement: which node(s) own each (layer, expert) pair.
 *
 * A pure function of its inputs (node budgets, what each node already holds,
 * the model's shapes, the replication factor and an optional routing profile),
 * so a restarted coordinator or node gets the same answer and nothing moves.
 *
 *   0. A node's room: the experts its `room` (what st-node has for cached
 *      experts and head slices once its own bytes are out of its --mem) holds
 *      beside its head slices, each costing expert_cost (a store record in
 *      whole pages and the cache's entry, as st-node charges it).
 *   1. First copies: every node gets a share of the n_layer x n_expert experts
 *      proportional to its RAM budget (--mem, less its head slice; largest
 *      remainder), never more than its room when all experts fit in the
 *      nodes' rooms, never more than it can store (its store capacity, or
 *      its budget when it reports none). When they do not all fit, each node
 *      first gets its room's worth and the rest is shared by budget: beyond
 *      RAM a node serves experts from its store (slower, but placed). The
 *      budget, not the room, weighs the shares: it is what the user set, the
 *      same at every start, where the room moves with what the node measures
 *      of itself (a restart must not move experts).
 *   2. Per layer: each node gets floor(share / n_layer) experts of every
 *      layer, the remainders going to the largest cumulative deficits, so
 *      each layer's experts sit on all nodes and a token's k experts run in
 *      parallel.
 *   3. Inside a layer an expert stays on a node that already holds it while
 *      that node's quota lasts (restart and join move only what must move);
 *      the others are dealt hottest first (profile order) to the node with the
 *      most quota left, so hot experts of a layer land on different nodes.
 *   4. Replicas (copies 2..R) go only where RAM allows: a node never gets a
 *      replica that would take it over its room. Replicas that fit nowhere
 *      are counted (st_placement_replicas_dropped).
 *   5. With a profile, each node pins its hottest experts up to pin_fraction
 *      of its room.
 *
 * The output head (when head_rows > 0) is cut by vocabulary into one slice
 * per node flagged `head` (equal, in multiples of 16 rows), node k of them
 * holding slice k. Its slices count against the budgets before the experts:
 * a node's primary slice comes out of its budget before its experts' share
 * is weighed (1.), and replicas of slices (copies 2..R, at most
 * ST_PLACE_MAX_HEAD_COPIES) go, before any expert's replica, to flagged nodes
 * whose budget still has room for them after their first copies of experts:
 * the fewest slices first, then the lowest load relative to the budget.
 */
#ifndef ST_PLACEMENT_H
#define ST_PLACEMENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define ST_PLACE_HEAD_ALIGN 16      /* head slice bounds: whole packed row groups */
#define ST_PLACE_MAX_HEAD_COPIES 8  /* copies of one head slice */
#define ST_PLACE_MAX_HEAD_SLICES 16 /* slices on one node (its own and replicas): the wire's slots */

typedef struct {
    uint64_t mem_budget;  /* bytes of RAM the node was given (--mem): weighs its share (0: unknown, weighs like
                           * the others) */
    uint64_t room;        /* of them, bytes for cached experts and head slices (INVENTORY's room, or st-plan's
                           * --mem less st-node's own bytes), when expert_cost is set */
    uint64_t expert_cost; /* bytes of room one cached expert takes (INVENTORY's expert_cost, st_node_expert_cost;
                           * at least the largest layer's expert bytes); 0: the room is mem_budget and an expert
                           * its largest layer's bytes */
    uint64_t store_cap;   /* bytes its store can hold (held + free): the hard limit; 0: its mem_budget */
    const uint8_t *held;  /* n_layer * n_expert flags: expert already in its store (NULL: none) */
    bool head;            /* takes a slice of the output head (with head_rows > 0) */
} st_place_node_t;

typedef struct {
    int n_layer;
    int n_expert;
    uint64_t expert_bytes;       /* gate + up + down bytes of one expert, when layer_bytes is NULL */
    int replication;             /* copies wanted per expert, >= 1 (capped at the node count) */
    const double *profile;       /* n_layer * n_expert routing frequencies, or NULL */
    double pin_fraction;         /* of a node's budget for pinned hot experts (needs a profile) */
    const uint64_t *layer_bytes; /* n_layer: bytes of one expert of each layer (llama-quantize's mixes
                                  * vary types by layer), or NULL: expert_bytes for all. Store and RAM
                                  * capacities count in the largest layer's experts, loads in exact bytes. */
    uint32_t head_rows;          /* the output head's rows (n_vocab), cut into slices; 0: no head slices */
    uint64_t head_row_bytes;     /* bytes of one row of it */
} st_place_params_t;

typedef struct st_placement st_placement_t;

/* Places the experts on n_nodes >= 1 nodes. NULL (logged, naming the
 * shortfall) when the nodes cannot store one copy of every expert or on bad
 * parameters. The caller keeps the inputs; the result does not point at them. */
st_placement_t *st_placement_new(const st_place_params_t *p, const st_place_node_t *nodes, int n_nodes);
void st_placement_destroy(st_placement_t **pl);

int st_placement_n_nodes(const st_placement_t *pl);
int st_placement_n_layer(const st_placement_t *pl);
int st_placement_n_expert(const st_placement_t *pl);
int st_placement_replication(const st_placement_t *pl); /* effective R (after the node-count cap) */

/* Owners of (layer, expert): count, and owner r (0 = primary) as a node index. */
int st_placement_n_owners(const st_placement_t *pl, int layer, int expert);
int st_placement_owner(const st_placement_t *pl, int layer, int expert, int r);
/* Whether node owns (layer, expert), and whether it should pin it in RAM. */
bool st_placement_owns(const st_placement_t *pl, int node, int layer, int expert);
bool st_placement_pinned(const st_placement_t *pl, int node, int layer, int expert);

int st_placement_node_experts(const st_placement_t *pl, int node); /* experts (all copies) on node */
uint64_t st_placement_node_bytes(const st_placement_t *pl, int node);
/* Experts node holds in RAM: its room less its head slices, over its expert cost. */
uint64_t st_placement_node_room(const st_placement_t *pl, int node);
int st_placement_replicas_dropped(const st_placement_t *pl);

/* The output head's slices: how many (0: none placed), slice k's rows
 * [*lo, *hi), its owners (owner 0 is the primary, the others replicas;
 * -1 when out of range), a node's slices and their bytes, and the replicas
 * of slices that fit nowhere. */
int st_placement_head_slices(const st_placement_t *pl);
void st_placement_head_slice(const st_placement_t *pl, int k, uint32_t *lo, uint32_t *hi);
int st_placement_head_n_owners(const st_placement_t *pl, int k);
int st_placement_head_owner(const st_placement_t *pl, int k, int r);
int st_placement_node_head_slices(const st_placement_t *pl, int node);
uint64_t st_placement_node_head_bytes(const st_placement_t *pl, int node);
int st_placement_head_replicas_dropped(const st_placement_t *pl);
/* Bytes of the largest of n equal slices of a head of rows x row_bytes. */
uint64_t st_placement_head_slice_bytes(uint32_t rows, uint64_t row_bytes, int n);

/* Human-readable summary (one line per node); logs a warning for each node
 * whose share exceeds its room (it will read the rest from its store).
 * names may be NULL. */
void st_placement_print(const st_placement_t *pl, FILE *f, const char *const *names);
/* Writes the placement as JSON to path (atomically: temp file + rename).
 * names and model_hash_hex may be NULL. 0 or a negative ST_E* code. */
int st_placement_save_json(const st_placement_t *pl, const char *path, const char *const *names,
                           const char *model_hash_hex);

#endif
