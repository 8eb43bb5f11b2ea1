/* remote_head: the output head sharded by vocabulary over the nodes (an
 * st_head_backend_t).
 *
 * st_remote_head_place() takes the slices of rows the placement cut
 * (placement.c: one per node, replicas where budgets allow), sends each node
 * a HEAD_ASSIGN per slice it holds (its slots) and pushes the rows it lacks
 * in hashed HEAD_PUT chunks; a node whose store already holds a slice (a
 * restart) gets nothing pushed. The rows are the file's bytes in the file's
 * type; their hashes are cached beside the model (head_hashes.h).
 *
 * Per step the backend sends each slice's primary one HEAD_COMPUTE with the
 * hidden states after the output norm, checks each reply
 * (st_wire_check_head_result) and copies the slice's logits into place. A
 * slice whose primary is known down (marked down, or it failed a step: not
 * asked again until a HEAD_ASSIGN between steps finds it serving) goes to a
 * live replica in the same round, a node being asked for several slices at
 * once; one whose owner refuses, answers wrongly or misses its deadline
 * goes to the next replica in one more round (the same checks); only
 * when no owner delivers it is it computed here from the model's own head
 * (left mapped: only the pages of that slice are read), so the logits are
 * the single process's bits whoever computed them. Sequences that need no
 * whole logits (st_ctx_defer_head: no --logits-out, no grammar) draw instead:
 * the step's draws send their hidden states, each with its sampler's
 * parameters and penalty window, in one HEAD_COMPUTE per slice, and get the
 * slice's best candidates per sequence with its maximum and sums, merged by
 * st_sampler_sample_parts (st-run's token; the draws those sent do not
 * decide ask again for more candidates, together, or for the whole logits,
 * together). A node that lost
 * a slice (it restarted) gets its HEAD_ASSIGN again between steps and serves
 * it again once it has it.
 */
#ifndef ST_REMOTE_HEAD_H
#define ST_REMOTE_HEAD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cluster.h"
#include "forward.h"
#include "model.h"
#include "placement.h"

typedef struct st_remote_head st_remote_head_t;

/* For model m over cluster cl (both borrowed, must outlive it); timeout_ms:
 * deadline of one HEAD_COMPUTE (and of a HEAD_ASSIGN); push_timeout_ms: of
 * each pushed chunk's ack; the slices' hashes cached in hash_cache (may be
 * NULL; see head_hashes.h) under model_hash. NULL on no memory. */
st_remote_head_t *st_remote_head_new(const st_model_t *m, st_cluster_t *cl, int timeout_ms, int push_timeout_ms,
                                     const uint8_t model_hash[ST_WIRE_HASH_BYTES], const char *hash_cache);
void st_remote_head_destroy(st_remote_head_t **h);

/* Bytes of the largest slice with n nodes holding one (what each node's
 * budget gives up for it). */
uint64_t st_remote_head_slice_bytes(const st_model_t *m, int n);

/* The head's slices as placement pl cut them (st_placement_head_*; none, or
 * pl NULL: the head stays here): assigns each node its slices (primary and
 * replicas, one HEAD_ASSIGN slot each) and pushes what it lacks (a progress
 * line on stderr unless quiet). Returns how many slices some node holds,
 * or a negative ST_E* code. */
int st_remote_head_place(st_remote_head_t *h, const st_placement_t *pl, bool quiet);
/* Between steps: nodes up that lost slices are assigned them again (served
 * again once their store has them; meanwhile a replica or this process
 * computes them). */
void st_remote_head_between_steps(st_remote_head_t *h);

/* The backend to install with st_ctx_set_head(ctx, ...); ctx computes the
 * fallback slices (it must be the context whose head is replaced). */
st_head_backend_t st_remote_head_backend(st_remote_head_t *h, st_ctx_t *ctx);

typedef struct {
    uint64_t calls, rows;           /* logits() calls, hidden states (one per sequence and step) */
    uint64_t bytes_out, bytes_in;   /* HEAD_COMPUTE and HEAD_RESULT, envelopes and frames */
    uint64_t fallback_rows;         /* vocabulary rows x hidden states computed here */
    uint64_t fallback_weight_bytes; /* head bytes read here for them */
    uint64_t push_bytes;            /* slice bytes pushed */
    uint64_t hashed_bytes;          /* head bytes read to hash slices (none when the cache had them) */
    double wait_ms;                 /* waiting for the nodes' head results */
    uint64_t asked_again;           /* draws that needed more candidates */
    uint64_t whole;                 /* draws that needed the whole logits */
    uint64_t by_replica;            /* slices answered by a replica (their primary failed or is down) */
    uint64_t steps;                 /* steps (one token per sequence): logits() and sample() calls */
    uint64_t asks, rounds;          /* requests for every slice, and their rounds (HEAD_COMPUTEs out, replies in) */
    uint64_t retried_steps;         /* steps with a request that needed a second round (an owner failed in it) */
} st_remote_head_totals_t;
/* --stats: the head's share of the wire and of the weights read here. */
void st_remote_head_print_stats(const st_remote_head_t *h, FILE *f);

#endif
