/* board: what the planner knows about one machine of a cluster - its RAM,
 * memory bandwidth, matmul rates, storage, messaging and network speed.
 *
 * A board comes from a profile file (written by `st-bench --profile FILE` on
 * the machine itself, or by hand) or from the built-in table of Raspberry Pi
 * boards made from published figures (README, "The 21B on Raspberry Pis").
 *
 * Profile files are text, one `key = value` per line, `#` starts a comment,
 * every number in plain SI units (bytes, bytes/s, seconds, multiply-adds/s):
 *
 *   name = pi5-8g                 a label
 *   ram = 8589934592              bytes of RAM
 *   mem = 7516192768              bytes a node gives to experts (--mem); default ram - 512 MiB
 *   threads = 4
 *   page_size = 16384             the kernel's page size (st-node's cache maps each expert
 *                                 in whole pages); default 4096
 *   mem_bw = 1.0e10               streaming read bandwidth, all threads (bytes/s)
 *   mem_bw.1 = 6.0e9              ... with 1, 2, ... threads (informational)
 *   matmul.q4_0 = 1.7e10 5.4e10 5.4e10   multiply-adds/s at 1, 8 and 64 tokens, one
 *                                 call at a time (a node's expert between waits)
 *   unpacked.q4_0 = 1.2e10 3.1e10 3.3e10   the same in the file's layout: a node that cannot
 *                                 hold all its experts does not repack them (default: matmul.*)
 *   stream.q4_0 = 1.7e10          the same at 1 token, back to back over 256 MiB
 *                                 (the coordinator's dense weights, streamed)
 *   disk_direct = 8.0e7           reads of expert-sized blocks with O_DIRECT (bytes/s)
 *   disk_buffered = 8.0e7         the same through the page cache
 *   disk = 3.2e10                 bytes of storage for the expert store
 *   rtt = 1.5e-4                  one small ZeroMQ request/reply over loopback after
 *                                 both ends slept, as a layer's round trip finds them (s)
 *   msg_bps = 1.0e9               ZeroMQ throughput over loopback, 1 MiB messages
 *   net_bps = 1.17625e8           the board's network link (bytes/s; 941 Mbit/s)
 *   spread.matmul.q4_0 = 1.02 1.05 1.4   slowest over fastest of the timed blocks behind
 *                                 each rate (optional, >= 1): also spread.unpacked.TYPE,
 *                                 spread.stream.TYPE, spread.mem_bw.N, spread.rtt,
 *                                 spread.msg_bps. Each rate is its fastest block; a large
 *                                 spread says the machine was busy while it was measured
 *
 * Unknown keys are an error (a typo must not pass silently); missing ones
 * take the defaults named above or, for rates, are derived (st_board_fill).
 */
#ifndef ST_BOARD_H
#define ST_BOARD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "st_kernels.h"

#define ST_BOARD_MAX_THREADS 64
#define ST_BOARD_N_BATCH 3 /* matmul rates at 1, 8 and 64 tokens */
/* A rate whose timed blocks spread more than this (slowest over fastest) was
 * measured on a busy machine: st-bench --profile and st-plan warn. */
#define ST_BOARD_BUSY_SPREAD 1.5

extern const int st_board_batch[ST_BOARD_N_BATCH]; /* {1, 8, 64} */

typedef struct {
    char name[64];
    uint64_t ram;                                     /* bytes */
    uint64_t mem;                                     /* a node's expert budget (bytes) */
    int threads;                                      /* cores used */
    uint64_t page_size;                               /* the kernel's page size in bytes (4096 unless told) */
    double mem_bw;                                    /* bytes/s, all threads */
    double mem_bw_t[ST_BOARD_MAX_THREADS + 1];        /* [n]: with n threads (0: not measured) */
    double matmul[ST_TYPE_COUNT][ST_BOARD_N_BATCH];   /* multiply-adds/s, one call at a time; 0: unknown type */
    double unpacked[ST_TYPE_COUNT][ST_BOARD_N_BATCH]; /* the same with the weights in the file's layout; 0: as
                                                       * matmul (types the kernels never pack) */
    double stream[ST_TYPE_COUNT]; /* multiply-adds/s at 1 token, matrices back to back over more than
                                   * the caches (the coordinator's dense work); 0: matmul[t][0] */
    double disk_direct;           /* bytes/s */
    double disk_buffered;         /* bytes/s */
    uint64_t disk;                /* bytes of storage */
    char disk_kind[16];           /* "microSD", "NVMe", "measured" */
    double rtt;                   /* s */
    double msg_bps;               /* bytes/s */
    double net_bps;               /* bytes/s */
    struct {                      /* slowest over fastest timed block of each rate above (0: not recorded) */
        double mem_bw_t[ST_BOARD_MAX_THREADS + 1];
        double matmul[ST_TYPE_COUNT][ST_BOARD_N_BATCH];
        double unpacked[ST_TYPE_COUNT][ST_BOARD_N_BATCH];
        double stream[ST_TYPE_COUNT];
        double rtt;
        double msg_bps;
    } spread;
} st_board_t;

/* Fills b with the built-in board called name ("pi5-2g", "pi4-8g", ...,
 * optionally with "+nvme" or "+ssd" for that storage instead of the
 * microSD card). 0, or ST_EINVAL (logged, listing the known names). */
int st_board_builtin(const char *name, st_board_t *b);
/* Names of the built-in boards, for --help: a static string. */
const char *st_board_builtin_names(void);

/* Reads a profile file into b. 0, or a negative ST_E* code after logging the
 * file, the line and what is wrong with it. */
int st_board_load(const char *path, st_board_t *b);
/* A built-in name, or else a profile file. */
int st_board_get(const char *spec, st_board_t *b);
/* Writes b as a profile file (the format above). 0 or a negative ST_E* code. */
int st_board_save(const st_board_t *b, FILE *f);

/* Completes a board after loading: mem from ram, matmul rates of types it
 * lacks from its Q4_0 rates (compute) and its bandwidth (1 token), disk and
 * network defaults. ST_EINVAL (logged) when nothing usable is left (no
 * bandwidth, no matmul rate). */
int st_board_fill(st_board_t *b);

/* The largest spread recorded in b (0 when none is: a built-in board, an
 * older profile) among its memory bandwidth, messaging and the matmul rates
 * of the weight types in `types` (bit t: type t; 0: every type), the rate it
 * belongs to written into what ("matmul.Q4_0 at 64 tokens"), and into
 * *n_busy (if not NULL) how many of those rates spread more than
 * ST_BOARD_BUSY_SPREAD. */
double st_board_worst_spread(const st_board_t *b, uint64_t types, char *what, size_t what_size, int *n_busy);

/* Seconds to multiply a rows x cols matrix of type t with n_tok tokens on b:
 * the measured rates at 1, 8 and 64 tokens, the time interpolated linearly in
 * between and growing linearly past 64. `streamed`: one of many matrices
 * read back to back (the coordinator's), whose 1-token rate is stream[t]. */
double st_board_matmul_s(const st_board_t *b, st_type_t t, int64_t rows, int64_t cols, double n_tok, bool streamed);
/* The same, one call, with the weights in the file's layout (unpacked rates where the board has them). */
double st_board_matmul_unpacked_s(const st_board_t *b, st_type_t t, int64_t rows, int64_t cols, double n_tok);

#endif
