/* pair: the coordinator's side of pairing (st-coordinator --pair URL).
 *
 * A thread of its own owns a ZeroMQ ROUTER bound to URL and a UDP socket on
 * the discovery port, so boards pair while the coordinator hashes, pushes or
 * generates. On the ROUTER it runs the code exchange of proto/pake.h with
 * each board (plain TCP: the exchange itself proves the code; no key is
 * trusted before its MAC verifies). On the UDP socket it answers discovery
 * broadcasts with the pairing port, which grants nothing but the address.
 *
 * The code is printed on stderr as "pairing code: CODE", new at every start,
 * and replaced by a new one (printed the same way) when it expires or after
 * max_total_attempts wrong proofs from all addresses. One address may make
 * max_attempts wrong proofs against a code, then it is refused until the code
 * changes, while the others still pair with it. Refusals are logged with
 * the peer's address: the first 3 of each kind per address, then one line
 * per address and interval with the count ("pairing: 523 more wrong tries
 * from 10.0.0.7 in the last 60 s").
 * A board that proves the code has its "URL KEY" line written into the
 * cluster file (atomically: a line with the same URL or key is replaced),
 * and st_pair_take tells the coordinator's thread to re-read the file: the
 * board then joins as a node added on SIGHUP does (setup.h).
 */
#ifndef ST_PAIR_H
#define ST_PAIR_H

#include <stdint.h>

#include "pake.h"

typedef struct {
    const char *url;          /* where to listen, tcp://HOST:PORT */
    const char *cluster_file; /* where paired nodes go */
    int ttl_s;                /* a code's lifetime */
    int max_attempts;         /* wrong proofs one address may make against a code */
    int discovery_port;       /* UDP port answered (0: no discovery) */
    const char *code_file;    /* each new code is also written here (mode 0600), or NULL */
    int max_total_attempts;   /* wrong proofs of all addresses a code survives (0: 100 * max_attempts) */
    double log_interval_ms;   /* refusals past an address's first lines: one summary this often (0: 60 s) */
} st_pair_opts_t;

typedef struct st_pair st_pair_t;

/* Binds the pairing socket and the discovery port, prints the first code
 * and starts the thread. coord_key: the coordinator's CURVE public key
 * (binary), given to every board that pairs. NULL on failure (logged; a
 * discovery port in use only warns). */
st_pair_t *st_pair_new(const st_pair_opts_t *o, const uint8_t coord_key[ST_PAKE_KEY]);
/* Stops the thread, closes the sockets, frees; *p = NULL. */
void st_pair_destroy(st_pair_t **p);
/* Nodes paired since the last call (the cluster file has them). */
int st_pair_take(st_pair_t *p);
/* The current code ("ABCDE-FGHJK") and its remaining seconds (may be NULL). */
void st_pair_code(const st_pair_t *p, char out[ST_PAKE_CODE_BUF], int *seconds_left);
/* The endpoint bound (with the port chosen for "*"). */
const char *st_pair_endpoint(const st_pair_t *p);

#endif
