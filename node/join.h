/* join: the node's side of pairing (st-node --join [URL] --code CODE).
 *
 * Finds the coordinator when no URL is given (a UDP broadcast on every IPv4
 * interface that has one, and on loopback; the first "ST-PAIR!" answer
 * names the pairing port), then runs the code exchange of proto/pake.h over
 * a ZeroMQ DEALER. Once the coordinator's proof verifies, its CURVE key is
 * added to the node's allow file (atomically), and the coordinator has the
 * node's key and address in its cluster file: the node then serves as if the
 * keys had been copied by hand, across restarts of either side.
 */
#ifndef ST_JOIN_H
#define ST_JOIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *url;         /* the coordinator's --pair URL; NULL: discover it */
    const char *code;        /* as typed ("abcde-23456" is fine) */
    const char *endpoint;    /* where this node serves (its --listen), told to the coordinator */
    const char *id;          /* this node's name, for the coordinator's log */
    const uint8_t *node_key; /* this node's CURVE public key, 32 bytes */
    const char *allow_file;  /* the coordinator's key is added here */
    int discovery_port;      /* UDP port of the broadcast */
    int timeout_s;           /* give up after this long (the coordinator may still be starting) */
} st_join_opts_t;

/* Pairs (retrying until the coordinator answers or timeout_s passes). 0;
 * ST_EAUTH when the coordinator refused the code or failed to prove it
 * (logged with the reason); ST_ETIMEOUT; ST_EIO (the allow file). */
int st_join(const st_join_opts_t *o);

/* Broadcasts "ST-PAIR?" on port every 500 ms until a coordinator answers or
 * timeout_ms passes: its pairing URL (tcp://ADDRESS:PORT) into url. 0 or
 * ST_ETIMEOUT / ST_EIO. */
int st_join_discover(int port, int timeout_ms, char *url, size_t cap);

/* Whether the allow file holds at least one key (a line that starts with
 * one): the node is paired already. */
bool st_join_paired(const char *allow_file);

#endif
