/* measure: this machine as a board (board.h), for `st-bench --profile`.
 *
 * Each rate is measured the way the cluster uses the machine: the memory
 * read bandwidth over a buffer far bigger than the caches (1..N threads), the
 * matmul of every weight type on expert-shaped matrices (packed where this
 * CPU's kernels pack, as a node holds them in RAM) with 1, 8 and 64 tokens,
 * one call at a time with a pause after each as a node computes an expert
 * between waits (on a board emulated by a CPU quota a short burst runs at
 * full speed, as it does between waits), cycling over a working set that
 * does not fit in the caches, reads of expert-sized blocks from a file in the
 * store's directory (O_DIRECT, and through the page cache after dropping
 * it), and a ZeroMQ request/reply with CURVE over loopback (the round trip of
 * a small message after both ends slept, and the rate of 1 MiB ones). The
 * 1-token rate is also measured streamed: matrices back to back over 256
 * MiB, as the coordinator reads its dense weights. RAM is the machine's, or
 * the memory cgroup's limit when lower.
 *
 * Every rate but the storage reads is the fastest of at least 4 timed blocks
 * (a block of calls: its median call; a pass; a block of round trips: its
 * median), taken until the fastest two agree within 10 % or 15 blocks, since
 * a descheduled vCPU or a core shared with another process makes blocks
 * slower, never faster. The slowest over the fastest block is the rate's
 * spread (board.h); st_measure_board warns when one exceeds
 * ST_BOARD_BUSY_SPREAD.
 */
#ifndef ST_MEASURE_H
#define ST_MEASURE_H

#include <stdint.h>

#include "board.h"

typedef struct {
    int threads;          /* as the node or coordinator will run (-t) */
    const char *disk_dir; /* where the store would be: a scratch file goes there */
    uint64_t block;       /* bytes per read: one expert (0: the 21B's 3,317,760) */
    uint64_t types;       /* bit t: measure weight type t (0: every type; st-plan uses Q4_0's
                             rates for a type not measured) */
} st_measure_opts_t;

/* Streaming read bandwidth with n_threads threads, bytes/s (the fastest of 8
 * or more passes over 256 MiB, in a child process so the buffer counts in no
 * budget), and the passes' spread into *spread (may be NULL); 0 on failure. */
double st_measure_bandwidth(int n_threads, double *spread);

/* Measures everything above into b (name, RAM, rates; the network link is
 * not measured: st-plan takes it from --link). 0, or a negative ST_E* code
 * when a measurement could not run (logged); a storage or messaging failure
 * leaves that rate 0 with a warning, which st_board_fill then defaults; the
 * matmul rates of types o->types leaves out stay 0 (st_board_load derives
 * them from Q4_0's when the profile is read). */
int st_measure_board(const st_measure_opts_t *o, st_board_t *b);

#endif
