/* head_hashes: the BLAKE2b-256 hashes of slices of the output head (what a
 * HEAD_ASSIGN names and a node's store file is checked against), kept in a
 * cache file beside the model so that a later start reads nothing of the
 * head to hash it (0.1 GB on the 4B, 0.2-0.3 GB on the 21B).
 *
 * The file is keyed like the experts' .st-hashes: the model hash, the
 * file's size and mtime, and the head's shape (type, rows, row bytes); a
 * file whose key differs is ignored and rewritten. Entries are by rows
 * [lo, hi), so each cut (one per node count) is hashed once; the oldest go
 * past HEAD_HASHES_MAX entries.
 */
#ifndef ST_HEAD_HASHES_H
#define ST_HEAD_HASHES_H

#include <stdint.h>

#include "model.h"
#include "wire.h"

typedef struct st_head_hashes st_head_hashes_t;

/* For m's output head (borrowed, must outlive it), model_hash as in the
 * HELLO's shape; loaded from cache_path when it matches (NULL: no cache).
 * NULL on no memory. */
st_head_hashes_t *st_head_hashes_new(const st_model_t *m, const uint8_t model_hash[ST_WIRE_HASH_BYTES],
                                     const char *cache_path);
void st_head_hashes_destroy(st_head_hashes_t **h);

/* The hash of rows [lo, hi) into out: 0 from the cache, 1 computed (the
 * rows read through the model's mapping: the caller drops their pages),
 * or ST_ERANGE for rows outside the head. */
int st_head_hashes_get(st_head_hashes_t *h, uint32_t lo, uint32_t hi, uint8_t out[ST_WIRE_HASH_BYTES]);

/* Head bytes read to compute hashes since st_head_hashes_new. */
uint64_t st_head_hashes_read_bytes(const st_head_hashes_t *h);

/* Writes the cache file if hashes were computed (atomically; a failure only
 * warns: the cache is an optimisation). */
void st_head_hashes_save(st_head_hashes_t *h);

#endif
