/* fuzz_head: what the head harness (fuzz_head.c) and the seed writer
 * (seeds.c) share: the slice the harness checks against and the layout of
 * its input.
 *
 * Input: one byte of flags, 2 bytes little-endian L, then either
 *  - (flags & FH_FILE) == 0: L bytes of Envelope, and the rest the raw frame
 *    that came with it; or
 *  - FH_FILE: the rest is the content of the node's head slice file, loaded
 *    as a slice of L bytes (its hash: of the content itself with FH_OWN_HASH,
 *    else a fixed one). */
#ifndef ST_FUZZ_HEAD_H
#define ST_FUZZ_HEAD_H

#include <stdint.h>

#include "st_kernels.h"
#include "wire.h"

#define FH_EMBD 64           /* n_embd */
#define FH_VOCAB 1000        /* n_vocab */
#define FH_LO 96             /* the slice is rows [FH_LO, FH_HI) */
#define FH_HI 352            /* 256 rows */
#define FH_TYPE ST_TYPE_Q8_0 /* 68 B a row */

#define FH_FILE 0x80
#define FH_OWN_HASH 0x40
/* the low bits pick the coordinator's sampler: temp, top-k, top-p, min-p (bits 0-3) */

/* The assignment the harness checks against (its hash: bytes 0, 1, 2, ...). */
static inline st_wire_head_assign_t fh_assign(void) {
    st_wire_head_assign_t a = {.n_vocab = FH_VOCAB, .type = FH_TYPE, .lo = FH_LO, .hi = FH_HI, .slot = 1, .n_slots = 2};
    for (int i = 0; i < ST_WIRE_HASH_BYTES; i++) a.hash[i] = (uint8_t)i;
    return a;
}

/* Logits of n rows a node would compute (a fixed, uneven spread with ties). */
static inline void fh_logits(float *y, int n) {
    for (int i = 0; i < n; i++) y[i] = (float)((i * 37) % 101) / 8.0f - 6.0f;
}

#endif
