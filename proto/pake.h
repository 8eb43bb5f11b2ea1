/* pake: pairing a node with a coordinator by a short code, both ends of the
 * exchange (CPace over ristretto255, with libsodium; the design comment is at
 * the top of pake.c).
 *
 * The functions here are pure: messages in and out of caller buffers, no
 * socket, no clock. coordinator/pair.c and node/join.c carry them over
 * ZeroMQ. A session (st_pake_t) holds a secret scalar and keys: wipe it with
 * st_pake_wipe when done.
 */
#ifndef ST_PAKE_H
#define ST_PAKE_H

#include <stddef.h>
#include <stdint.h>

#define ST_PAKE_CODE_LEN 10                                /* characters of a code, without the dash */
#define ST_PAKE_CODE_BUF 12                                /* "ABCDE-FGHJK" and its NUL */
#define ST_PAKE_NONCE 16                                   /* bytes of each side's nonce */
#define ST_PAKE_POINT 32                                   /* an encoded ristretto255 element */
#define ST_PAKE_MAC 32                                     /* crypto_auth (HMAC-SHA512-256) */
#define ST_PAKE_KEY 32                                     /* a CURVE public key (binary) */
#define ST_PAKE_MAX_ENDPOINT 200                           /* the node's --listen endpoint */
#define ST_PAKE_MAX_ID 64                                  /* the node's id */
#define ST_PAKE_MAX_MSG 512                                /* every message fits */
#define ST_PAKE_ALPHABET "23456789ABCDEFGHJKMNPQRSTUVWXYZ" /* 31 symbols: no 0/O, 1/I/L */

/* Discovery (UDP; it grants nothing but an address): a node broadcasts the
 * question, a coordinator answers with its pairing port, 2 bytes
 * little-endian, from the address the node then connects to. */
#define ST_PAKE_DISCOVERY_PORT 5557
#define ST_PAKE_DISCOVERY_ASK "ST-PAIR?"
#define ST_PAKE_DISCOVERY_ANSWER "ST-PAIR!"

/* Message types (the byte after the "STP1" magic). */
enum { ST_PAKE_HELLO = 1, ST_PAKE_CHALLENGE, ST_PAKE_PROOF, ST_PAKE_WELCOME, ST_PAKE_REFUSED };

/* Why a coordinator refused (REFUSED's reason byte). */
enum { ST_PAKE_R_WRONG = 1, ST_PAKE_R_EXPIRED, ST_PAKE_R_BAD, ST_PAKE_R_BUSY, ST_PAKE_R_TRIES, ST_PAKE_R_COUNT };

/* What the node tells about itself in its PROOF. */
typedef struct {
    uint8_t key[ST_PAKE_KEY];                /* its CURVE public key */
    char endpoint[ST_PAKE_MAX_ENDPOINT + 1]; /* where it serves, e.g. tcp://HOST:5555 or a wildcard host */
    char id[ST_PAKE_MAX_ID + 1];             /* its name, for the logs */
} st_pake_node_info_t;

/* One exchange's state, on either side. */
typedef struct {
    char code[ST_PAKE_CODE_LEN + 1]; /* normalised */
    uint8_t n_n[ST_PAKE_NONCE], n_c[ST_PAKE_NONCE];
    uint8_t y[32]; /* this side's secret scalar */
    uint8_t Y_n[ST_PAKE_POINT], Y_c[ST_PAKE_POINT];
    uint8_t k_n[32], k_c[32];   /* the two confirmation keys */
    uint8_t mac_n[ST_PAKE_MAC]; /* the node's proof, bound into the coordinator's */
    int step;                   /* which message this side expects next */
} st_pake_t;

/* ---- codes ---- */

/* A fresh random code, "ABCDE-FGHJK" (ST_PAKE_ALPHABET, uniform). */
void st_pake_code_new(char out[ST_PAKE_CODE_BUF]);
/* Upper-cases in, drops dashes and spaces, and checks ST_PAKE_CODE_LEN
 * symbols of the alphabet remain: 0 and the ten symbols in out, or ST_EINVAL. */
int st_pake_code_normalize(const char *in, char out[ST_PAKE_CODE_LEN + 1]);

/* ---- the math (exposed for the known-answer tests) ---- */

/* The generator of one exchange: ristretto255_from_hash(BLAKE2b-512("st-pair-v1 G" ||
 * len(code) || code || n_c || n_n)). code is normalised. */
void st_pake_generator(const char *code, const uint8_t n_c[ST_PAKE_NONCE], const uint8_t n_n[ST_PAKE_NONCE],
                       uint8_t G[ST_PAKE_POINT]);
/* The two confirmation keys from the shared element K and the transcript:
 * k_n || k_c = BLAKE2b-512(key = K, "st-pair-v1 keys" || T). */
void st_pake_confirm_keys(const uint8_t K[ST_PAKE_POINT], const uint8_t *T, size_t T_len, uint8_t k_n[32],
                          uint8_t k_c[32]);

/* ---- the node's side ---- */

/* Starts an exchange with code (normalised here): HELLO into out (cap >=
 * ST_PAKE_MAX_MSG). Its length, or ST_EINVAL for a bad code. */
int st_pake_node_hello(st_pake_t *s, const char *code, uint8_t *out, size_t cap);
/* Takes the coordinator's CHALLENGE and writes the PROOF carrying me. Its
 * length; ST_EPROTO for a malformed challenge; ST_EAUTH when the coordinator
 * refused (reason in *reason, may be NULL). */
int st_pake_node_proof(st_pake_t *s, const uint8_t *msg, size_t len, const st_pake_node_info_t *me, uint8_t *out,
                       size_t cap, int *reason);
/* Takes the coordinator's answer to the PROOF: on WELCOME with a valid MAC,
 * its CURVE public key into coord_key and 0. ST_EAUTH when refused (reason
 * in *reason) or when the MAC is wrong (*reason = 0); ST_EPROTO when
 * malformed. */
int st_pake_node_finish(st_pake_t *s, const uint8_t *msg, size_t len, uint8_t coord_key[ST_PAKE_KEY], int *reason);

/* ---- the coordinator's side ---- */

/* Takes a node's HELLO for the current code and writes the CHALLENGE. Its
 * length, or ST_EPROTO for a malformed hello. */
int st_pake_coord_challenge(st_pake_t *s, const char *code, const uint8_t *msg, size_t len, uint8_t *out, size_t cap);
/* Checks the node's PROOF: 0 and the node's info; ST_EAUTH when its MAC is
 * wrong (a wrong code, a replayed or tampered message); ST_EPROTO when
 * malformed. */
int st_pake_coord_verify(st_pake_t *s, const uint8_t *msg, size_t len, st_pake_node_info_t *node);
/* After st_pake_coord_verify succeeded: the WELCOME carrying coord_key. Its length. */
int st_pake_coord_welcome(st_pake_t *s, const uint8_t coord_key[ST_PAKE_KEY], uint8_t *out, size_t cap);
/* A REFUSED message with reason (ST_PAKE_R_*). Its length. */
int st_pake_refused(int reason, uint8_t *out, size_t cap);
/* A reason in words ("wrong code", ...). */
const char *st_pake_reason(int reason);

/* Wipes a session (its scalar and keys). */
void st_pake_wipe(st_pake_t *s);

#endif
