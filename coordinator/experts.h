/* experts: the model's experts as the cluster sees them, their identity
 * apart from how they are computed: the experts' shape and the model hash
 * (what a node checks a HELLO against), each expert's bytes (what a push
 * sends, what a fallback computes) and each expert's BLAKE2b hash (what an
 * ASSIGN names and a node's store is checked against), with a cache file so
 * a model is hashed once.
 */
#ifndef ST_EXPERTS_H
#define ST_EXPERTS_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "wire.h"

/* The experts' shape of a loaded model, model_hash included: BLAKE2b-256 over
 * a version tag, the file size, the GGUF header (metadata + tensor infos, all
 * bytes before the data section) and the first and last 4 KiB of every
 * expert tensor. That reads a few MB, not the whole file, and identifies the
 * model (copies of the file keep their identity); the shards themselves are
 * checked with real per-expert hashes. 0 or a negative ST_E* code (ST_EUNSUP
 * when the layers' expert types differ). */
int st_remote_model_shape(const st_model_t *m, st_wire_shape_t *shape);

typedef struct st_expert_hashes st_expert_hashes_t;

/* Per-expert BLAKE2b-256 hashes, loaded from cache_path when that file
 * matches the model (same model hash, size and mtime), else computed on
 * demand (the experts read from the file, not the mapping, and dropped from
 * the page cache after). cache_path may be NULL (no cache). NULL on no memory. */
st_expert_hashes_t *st_expert_hashes_new(const st_model_t *m, const st_wire_shape_t *shape, const char *cache_path);
void st_expert_hashes_destroy(st_expert_hashes_t **h);
/* Computes the hashes of the flagged experts (n_layer x n_expert flags; NULL:
 * all) not yet known, with n_threads threads. Returns how many were computed. */
int st_expert_hashes_fill(st_expert_hashes_t *h, const uint8_t *want, int n_threads);
/* Copies len bytes at offset of expert (layer, e)'s gate|up|down bytes, read
 * from the model file and dropped from the page cache afterwards (a push
 * reads each byte once; through the mapping the pages would stay charged to
 * the coordinator's memory cgroup). */
int st_expert_hashes_read(const st_expert_hashes_t *h, uint32_t layer, uint32_t e, uint64_t offset, void *dst,
                          size_t len);
/* The hash of (layer, e), or NULL when not computed yet. */
const uint8_t *st_expert_hash(const st_expert_hashes_t *h, int layer, int e);
/* Writes the cache file if new hashes were computed (atomically; a failure
 * only warns: the cache is an optimisation). */
void st_expert_hashes_save(st_expert_hashes_t *h);

#endif
