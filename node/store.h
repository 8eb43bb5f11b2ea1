/* store: a node's experts on disk, per model, surviving restarts.
 *
 * DIR/<model hash in hex>/ holds experts.dat, a flat file of records of
 * st_store_record_bytes() (an expert's gate|up|down bytes, padded to 4096 so
 * records can be read with O_DIRECT and never fill the page cache), and
 * index, which says which (layer, expert) lives in which record and with which
 * BLAKE2b-256 hash. The index is rewritten whole (temp file, fsync, rename)
 * after each expert completes, and only after the expert's data are synced:
 * a crash leaves the old index or the new one, never a half-written one.
 *
 * A directory is made only for a model the node is assigned, and their
 * number is bounded (st_store_make_room): a peer that names many models
 * cannot fill the disk with empty stores.
 *
 * Nothing on disk is trusted: the index is checked field by field and by its
 * own hash, every record is re-hashed when the store is opened and again on
 * every read; a record that does not match is dropped.
 */
#ifndef ST_STORE_H
#define ST_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

typedef struct st_store st_store_t;

/* Opens (creating when needed) the store of shape's model under dir and
 * verifies every record the index lists; marks it as just used. NULL on
 * failure (logged). */
st_store_t *st_store_open(const char *dir, const st_wire_shape_t *shape);
void st_store_close(st_store_t **s);

/* Whether dir already holds a store (a directory) for shape's model. */
bool st_store_exists(const char *dir, const st_wire_shape_t *shape);
/* Makes room under dir for one more model's store: while dir holds
 * max_models model directories or more, removes the least recently used one
 * that holds no expert (logged), never keep's (a model hash, or NULL). 0;
 * ST_ERANGE when the rest all hold experts (the empty ones are removed all
 * the same); ST_EIO. */
int st_store_make_room(const char *dir, int max_models, const uint8_t *keep);

const st_wire_shape_t *st_store_shape(const st_store_t *s);
/* Bytes of one record: the largest layer's expert bytes rounded up to 4096
 * (a record of layer l holds st_wire_expert_bytes(shape, l) bytes). */
size_t st_store_record_bytes(const st_store_t *s);
/* Memory the store itself uses (index, staging buffer), for budgeting. */
size_t st_store_mem_bytes(const st_store_t *s);
/* The same two figures for a store of shape, before one is open (st-node's
 * INVENTORY for a model it has not stored yet). */
size_t st_store_record_bytes_for(const st_wire_shape_t *shape);
size_t st_store_mem_bytes_for(const st_wire_shape_t *shape);
/* Free bytes in the file system holding the store. */
uint64_t st_store_free_bytes(const st_store_t *s);

int st_store_count(const st_store_t *s);
/* Writes up to cap held experts (with their hashes) to out; returns how many
 * are held in all. */
int st_store_list(const st_store_t *s, st_wire_ref_t *out, int cap);
/* Hash of a held expert, or NULL when it is not held. Borrowed until the next
 * call that changes the store. */
const uint8_t *st_store_hash(const st_store_t *s, uint32_t layer, uint32_t expert);

/* Stores one chunk of an expert. Chunks come in order: offset must equal the
 * bytes received so far for that expert (offset 0 (re)starts it). The chunk
 * is checked against chunk_hash before anything is written. When the last
 * byte arrives the whole expert is checked against want (the hash its
 * assignment gives), synced, and entered in the index (*complete = true);
 * it replaces any earlier version. Returns 0; ST_EPROTO for a bad chunk
 * hash, an out-of-order offset, or a whole-expert mismatch (then the partial
 * expert is discarded and the index is unchanged); ST_ERANGE for ids outside
 * the shape; ST_ENOMEM when too many experts are in progress; ST_EIO. */
int st_store_put(st_store_t *s, uint32_t layer, uint32_t expert, const uint8_t want[ST_WIRE_HASH_BYTES],
                 uint64_t offset, const void *data, size_t len, const uint8_t chunk_hash[ST_WIRE_HASH_BYTES],
                 bool *complete);

/* Reads a held expert into buf (st_store_record_bytes() bytes, 4096-aligned
 * for O_DIRECT) and checks its hash. 0; ST_ERANGE when not held; ST_EFORMAT
 * when the bytes no longer match (the record is dropped from the index);
 * ST_EIO. */
int st_store_read(st_store_t *s, uint32_t layer, uint32_t expert, void *buf);

/* Drops a held expert from the index (its record becomes free). */
int st_store_remove(st_store_t *s, uint32_t layer, uint32_t expert);

/* ---- slices of the output head (HEAD_ASSIGN): DIR/head-<hash in hex>.dat ----
 * A slice's bytes and nothing else: trusted only when the file's size and
 * BLAKE2b-256 hash are what the assignment names. */

/* Reads dir's file of the slice with hash into buf (bytes): true when it is
 * a regular file of exactly bytes bytes with that hash. A file that does not
 * match is removed (logged); an absent one is no error. */
bool st_store_head_load(const char *dir, const uint8_t hash[ST_WIRE_HASH_BYTES], void *buf, uint64_t bytes);
/* Writes a slice's file (a temporary file, fsync, rename). 0, or ST_EIO
 * (logged: the node keeps the slice in RAM only). */
int st_store_head_save(const char *dir, const uint8_t hash[ST_WIRE_HASH_BYTES], const void *buf, uint64_t bytes);
/* Removes dir's slice files but those of the n_keep hashes in keep. */
void st_store_head_prune(const char *dir, const uint8_t (*keep)[ST_WIRE_HASH_BYTES], int n_keep);

#endif
