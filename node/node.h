/* node: an expert server (st-node). One ROUTER socket, one thread that owns
 * it, a compute pool of -t threads.
 *
 * A coordinator says HELLO (model shape and hash) and gets the INVENTORY of
 * what this node's store holds for that model; ASSIGN gives the node its
 * experts (with hashes) and the pinned ones, and the ASSIGN_ACK lists the
 * experts still missing; SHARD_PUT chunks fill the store; EXPERT_PREFETCH
 * queues experts to load from the store while the socket is idle;
 * EXPERT_COMPUTE evaluates (token, expert) pairs and answers with one output
 * vector per pair. HEAD_ASSIGN gives it a slice of the output head's rows
 * (filled by HEAD_PUT chunks, kept in the store directory), and HEAD_COMPUTE
 * answers with that slice's logits or its best candidates after the
 * sampler's penalties. Any bad request gets an ERROR and the node goes on.
 *
 * Memory: everything the node allocates for a model (compute context,
 * scratch, reply and receive reserves, the store's buffers) is charged to one
 * budget, --mem, together with the process's resident size measured before
 * the model arrived; what is left is the expert cache (lru.h).
 */
#ifndef ST_NODE_H
#define ST_NODE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

typedef struct {
    const char *listen;    /* ZeroMQ endpoint to bind; "tcp://127.0.0.1:*" picks a free port */
    uint64_t mem;          /* --mem: bytes of RAM the node may use */
    const char *store_dir; /* --store */
    int threads;           /* -t: compute threads (0: all CPUs) */
    int batch;             /* tokens per internal compute step (0: 64) */
    const char *id;        /* node id (NULL: host name) */
    int max_models;        /* --max-models: model stores kept under store_dir (0: 8) */
    bool insecure;         /* plain TCP: no encryption, anyone may connect */
    /* CURVE (when !insecure): the node's key pair and the coordinator keys it
     * accepts (binary); a ZAP handler refuses every other key and logs it */
    char secret_key[41]; /* Z85; wiped by st_node_new */
    const uint8_t (*allow)[32];
    int n_allow;
} st_node_opts_t;

typedef struct st_node st_node_t;

/* Binds the socket (with CURVE: starts the ZAP handler thread first, and
 * wipes the secret key from *o once the socket has it). NULL on failure
 * (logged). */
st_node_t *st_node_new(st_node_opts_t *o);
void st_node_destroy(st_node_t **n);
/* The endpoint actually bound (with the port chosen for "*"). */
const char *st_node_endpoint(const st_node_t *n);
/* Serves until *stop becomes non-zero (checked at least every 200 ms).
 * Returns 0, or a negative ST_E* code on a fatal socket error. */
int st_node_run(st_node_t *n, volatile sig_atomic_t *stop);

/* What a node answers for sequence s of a HEAD_COMPUTE for candidates that
 * st_wire_check_head accepted (the serve loop's, exposed for the fuzz_head
 * target): the sequence's penalties (entries pen0 .. pen0 + pen_n[s] - 1 of
 * the lists) and temperature applied to y, the logits of the slice's rows
 * (ids lo, lo + 1, ...; changed in place), then its k <= rows best as
 * (uint32 id, float32 logit) pairs at out, and its maximum and sums at max,
 * sum and sum_temp. 0, or a negative ST_E* code. */
int st_node_head_cands(const st_wire_head_compute_t *c, uint32_t s, uint32_t pen0, float *y, uint32_t rows, uint32_t lo,
                       uint32_t k, uint8_t *out, float *max, double *sum, double *sum_temp);

#endif
