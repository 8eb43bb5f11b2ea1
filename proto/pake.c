/* pake: pairing by a short code, CPace over ristretto255 (see pake.h).
 *
 * Why a PAKE: the code is short (10 symbols of 31, about 2^49.5), so a key
 * derived from it alone, or a MAC keyed by it, can be guessed offline from
 * one captured exchange. Here the code only chooses the generator of a
 * Diffie-Hellman exchange: a passive listener learns nothing it can test a
 * guess against, and an active one gets one guess per exchange, which the
 * coordinator counts and limits (coordinator/pair.c).
 *
 * The exchange (node N connects to coordinator C; every message is "STP1",
 * a type byte, then fixed fields; lengths are one byte):
 *
 *   N -> C  HELLO      n_n                             (16 random bytes)
 *   C -> N  CHALLENGE  n_c, Y_c = y_c * G               (16 + 32)
 *   N -> C  PROOF      Y_n = y_n * G, node key, len endpoint, len id, MAC_n
 *   C -> N  WELCOME    coordinator key, MAC_c           (or REFUSED, reason)
 *
 *   G   = ristretto255_from_hash(BLAKE2b-512("st-pair-v1 G" || len(code) || code || n_c || n_n))
 *   T   = "st-pair-v1" || n_n || n_c || Y_c || Y_n
 *   K   = y_n * Y_c = y_c * Y_n     (refused when it is the identity)
 *   k_n || k_c = BLAKE2b-512(key = K, "st-pair-v1 keys" || T)
 *   MAC_n = HMAC-SHA512-256(k_n, T || the PROOF up to its MAC)
 *   MAC_c = HMAC-SHA512-256(k_c, T || MAC_n || the WELCOME up to its MAC)
 *
 * The node proves first and the coordinator answers a wrong proof with
 * REFUSED, never with a proof of its own, so it is no oracle. Both nonces and
 * both scalars are fresh each exchange: a replayed PROOF meets a new n_c and
 * fails; the MACs cover every byte of both keys, the endpoint and the id, so
 * a tampered message fails too. The CURVE keys are trusted only after the
 * MAC that covers them verified. REFUSED is not authenticated: it can only
 * end an exchange that would have failed anyway.
 */
#include "pake.h"

#include <sodium.h>
#include <stdbool.h>
#include <string.h>

#include "st_log.h"

#define MAGIC "STP1"
#define MAGIC_LEN 4
#define HDR (MAGIC_LEN + 1)
#define T_LABEL "st-pair-v1"
#define T_LEN (sizeof T_LABEL - 1 + 2 * ST_PAKE_NONCE + 2 * ST_PAKE_POINT)

/* ---- codes ---- */

void st_pake_code_new(char out[ST_PAKE_CODE_BUF]) {
    const uint32_t n = sizeof ST_PAKE_ALPHABET - 1;
    int k = 0;
    for (int i = 0; i < ST_PAKE_CODE_LEN; i++) {
        if (i == ST_PAKE_CODE_LEN / 2) out[k++] = '-';
        out[k++] = ST_PAKE_ALPHABET[randombytes_uniform(n)];
    }
    out[k] = '\0';
}

int st_pake_code_normalize(const char *in, char out[ST_PAKE_CODE_LEN + 1]) {
    int k = 0;
    for (const char *p = in; *p; p++) {
        char ch = *p;
        if (ch == '-' || ch == ' ') continue;
        if (ch >= 'a' && ch <= 'z') ch = (char)(ch - 'a' + 'A');
        if (k == ST_PAKE_CODE_LEN || !strchr(ST_PAKE_ALPHABET, ch)) return ST_EINVAL;
        out[k++] = ch;
    }
    out[k] = '\0';
    return k == ST_PAKE_CODE_LEN ? 0 : ST_EINVAL;
}

/* ---- the math ---- */

void st_pake_generator(const char *code, const uint8_t n_c[ST_PAKE_NONCE], const uint8_t n_n[ST_PAKE_NONCE],
                       uint8_t G[ST_PAKE_POINT]) {
    static const char label[] = "st-pair-v1 G";
    const uint8_t code_len = (uint8_t)strlen(code);
    uint8_t h[crypto_core_ristretto255_HASHBYTES];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h);
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof label - 1);
    crypto_generichash_update(&st, &code_len, 1);
    crypto_generichash_update(&st, (const uint8_t *)code, code_len);
    crypto_generichash_update(&st, n_c, ST_PAKE_NONCE);
    crypto_generichash_update(&st, n_n, ST_PAKE_NONCE);
    crypto_generichash_final(&st, h, sizeof h);
    crypto_core_ristretto255_from_hash(G, h);
    sodium_memzero(h, sizeof h);
    sodium_memzero(&st, sizeof st);
}

void st_pake_confirm_keys(const uint8_t K[ST_PAKE_POINT], const uint8_t *T, size_t T_len, uint8_t k_n[32],
                          uint8_t k_c[32]) {
    static const char label[] = "st-pair-v1 keys";
    uint8_t out[64];
    crypto_generichash_state st;
    crypto_generichash_init(&st, K, ST_PAKE_POINT, sizeof out);
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof label - 1);
    crypto_generichash_update(&st, T, T_len);
    crypto_generichash_final(&st, out, sizeof out);
    memcpy(k_n, out, 32);
    memcpy(k_c, out + 32, 32);
    sodium_memzero(out, sizeof out);
    sodium_memzero(&st, sizeof st);
}

static void s_transcript(const st_pake_t *s, uint8_t T[T_LEN]) {
    size_t k = 0;
    memcpy(T + k, T_LABEL, sizeof T_LABEL - 1), k += sizeof T_LABEL - 1;
    memcpy(T + k, s->n_n, ST_PAKE_NONCE), k += ST_PAKE_NONCE;
    memcpy(T + k, s->n_c, ST_PAKE_NONCE), k += ST_PAKE_NONCE;
    memcpy(T + k, s->Y_c, ST_PAKE_POINT), k += ST_PAKE_POINT;
    memcpy(T + k, s->Y_n, ST_PAKE_POINT);
}

/* y: a fresh scalar; mine = y * G for this exchange's generator. */
static int s_share(st_pake_t *s, uint8_t mine[ST_PAKE_POINT]) {
    uint8_t G[ST_PAKE_POINT];
    st_pake_generator(s->code, s->n_c, s->n_n, G);
    crypto_core_ristretto255_scalar_random(s->y);
    int rc = crypto_scalarmult_ristretto255(mine, s->y, G);
    sodium_memzero(G, sizeof G);
    return rc == 0 ? 0 : ST_EPROTO;
}

/* K = y * theirs, then the confirmation keys. ST_EPROTO when theirs is not a
 * valid element or K is the identity (a peer forcing a known K). */
static int s_keys(st_pake_t *s, const uint8_t theirs[ST_PAKE_POINT]) {
    uint8_t K[ST_PAKE_POINT], T[T_LEN];
    if (!crypto_core_ristretto255_is_valid_point(theirs) || crypto_scalarmult_ristretto255(K, s->y, theirs) != 0)
        return ST_EPROTO;
    s_transcript(s, T);
    st_pake_confirm_keys(K, T, sizeof T, s->k_n, s->k_c);
    sodium_memzero(K, sizeof K);
    sodium_memzero(s->y, sizeof s->y); /* not needed any more */
    return 0;
}

/* HMAC-SHA512-256(key, T || a || b). */
static void s_mac(const st_pake_t *s, const uint8_t key[32], const uint8_t *a, size_t a_len, const uint8_t *b,
                  size_t b_len, uint8_t mac[ST_PAKE_MAC]) {
    uint8_t T[T_LEN];
    s_transcript(s, T);
    crypto_auth_hmacsha512256_state st;
    crypto_auth_hmacsha512256_init(&st, key, 32);
    crypto_auth_hmacsha512256_update(&st, T, sizeof T);
    crypto_auth_hmacsha512256_update(&st, a, a_len);
    if (b_len) crypto_auth_hmacsha512256_update(&st, b, b_len);
    crypto_auth_hmacsha512256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
}

/* ---- framing ---- */

static size_t s_header(uint8_t *out, int type) {
    memcpy(out, MAGIC, MAGIC_LEN);
    out[MAGIC_LEN] = (uint8_t)type;
    return HDR;
}

/* The type of msg (after checking its magic), or -1. */
static int s_type(const uint8_t *msg, size_t len) {
    if (len < HDR || memcmp(msg, MAGIC, MAGIC_LEN) != 0) return -1;
    return msg[MAGIC_LEN];
}

/* Whether msg is a REFUSED message; *reason (may be NULL) gets its reason (1..), else 0. */
static bool s_refused(const uint8_t *msg, size_t len, int *reason) {
    int r = 0;
    if (s_type(msg, len) == ST_PAKE_REFUSED && len == HDR + 1)
        r = msg[HDR] >= 1 && msg[HDR] < ST_PAKE_R_COUNT ? msg[HDR] : ST_PAKE_R_BAD;
    if (reason) *reason = r;
    return r != 0;
}

/* Printable ASCII without spaces: what an endpoint or an id may hold. */
static bool s_printable(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x21 || p[i] > 0x7e) return false;
    return true;
}

/* ---- the node's side ---- */

int st_pake_node_hello(st_pake_t *s, const char *code, uint8_t *out, size_t cap) {
    memset(s, 0, sizeof *s);
    if (st_pake_code_normalize(code, s->code) < 0) return ST_EINVAL;
    if (cap < HDR + ST_PAKE_NONCE) return ST_ERANGE;
    randombytes_buf(s->n_n, sizeof s->n_n);
    size_t k = s_header(out, ST_PAKE_HELLO);
    memcpy(out + k, s->n_n, ST_PAKE_NONCE);
    s->step = ST_PAKE_CHALLENGE;
    return (int)(k + ST_PAKE_NONCE);
}

int st_pake_node_proof(st_pake_t *s, const uint8_t *msg, size_t len, const st_pake_node_info_t *me, uint8_t *out,
                       size_t cap, int *reason) {
    if (s_refused(msg, len, reason)) return ST_EAUTH;
    if (s->step != ST_PAKE_CHALLENGE || s_type(msg, len) != ST_PAKE_CHALLENGE ||
        len != HDR + ST_PAKE_NONCE + ST_PAKE_POINT)
        return ST_EPROTO;
    memcpy(s->n_c, msg + HDR, ST_PAKE_NONCE);
    memcpy(s->Y_c, msg + HDR + ST_PAKE_NONCE, ST_PAKE_POINT);
    const size_t ep = strlen(me->endpoint), id = strlen(me->id);
    if (ep == 0 || ep > ST_PAKE_MAX_ENDPOINT || id > ST_PAKE_MAX_ID) return ST_EINVAL;
    if (cap < HDR + ST_PAKE_POINT + ST_PAKE_KEY + 2 + ep + id + ST_PAKE_MAC) return ST_ERANGE;
    if (s_share(s, s->Y_n) < 0 || s_keys(s, s->Y_c) < 0) return ST_EPROTO;
    size_t k = s_header(out, ST_PAKE_PROOF);
    memcpy(out + k, s->Y_n, ST_PAKE_POINT), k += ST_PAKE_POINT;
    memcpy(out + k, me->key, ST_PAKE_KEY), k += ST_PAKE_KEY;
    out[k++] = (uint8_t)ep;
    memcpy(out + k, me->endpoint, ep), k += ep;
    out[k++] = (uint8_t)id;
    memcpy(out + k, me->id, id), k += id;
    s_mac(s, s->k_n, out, k, NULL, 0, s->mac_n);
    memcpy(out + k, s->mac_n, ST_PAKE_MAC), k += ST_PAKE_MAC;
    s->step = ST_PAKE_WELCOME;
    return (int)k;
}

int st_pake_node_finish(st_pake_t *s, const uint8_t *msg, size_t len, uint8_t coord_key[ST_PAKE_KEY], int *reason) {
    if (s_refused(msg, len, reason)) return ST_EAUTH;
    if (s->step != ST_PAKE_WELCOME || s_type(msg, len) != ST_PAKE_WELCOME || len != HDR + ST_PAKE_KEY + ST_PAKE_MAC)
        return ST_EPROTO;
    uint8_t want[ST_PAKE_MAC];
    s_mac(s, s->k_c, s->mac_n, ST_PAKE_MAC, msg, HDR + ST_PAKE_KEY, want);
    const bool ok = sodium_memcmp(want, msg + HDR + ST_PAKE_KEY, ST_PAKE_MAC) == 0;
    s->step = 0; /* one answer only */
    if (!ok) return ST_EAUTH;
    memcpy(coord_key, msg + HDR, ST_PAKE_KEY);
    return 0;
}

/* ---- the coordinator's side ---- */

int st_pake_coord_challenge(st_pake_t *s, const char *code, const uint8_t *msg, size_t len, uint8_t *out, size_t cap) {
    memset(s, 0, sizeof *s);
    if (s_type(msg, len) != ST_PAKE_HELLO || len != HDR + ST_PAKE_NONCE) return ST_EPROTO;
    if (st_pake_code_normalize(code, s->code) < 0) return ST_EINVAL;
    if (cap < HDR + ST_PAKE_NONCE + ST_PAKE_POINT) return ST_ERANGE;
    memcpy(s->n_n, msg + HDR, ST_PAKE_NONCE);
    randombytes_buf(s->n_c, sizeof s->n_c);
    if (s_share(s, s->Y_c) < 0) return ST_EPROTO;
    size_t k = s_header(out, ST_PAKE_CHALLENGE);
    memcpy(out + k, s->n_c, ST_PAKE_NONCE), k += ST_PAKE_NONCE;
    memcpy(out + k, s->Y_c, ST_PAKE_POINT), k += ST_PAKE_POINT;
    s->step = ST_PAKE_PROOF;
    return (int)k;
}

int st_pake_coord_verify(st_pake_t *s, const uint8_t *msg, size_t len, st_pake_node_info_t *node) {
    if (s->step != ST_PAKE_PROOF) return ST_EPROTO;
    s->step = 0; /* one proof per exchange, right or wrong */
    const size_t fixed = HDR + ST_PAKE_POINT + ST_PAKE_KEY;
    if (s_type(msg, len) != ST_PAKE_PROOF || len < fixed + 2 + ST_PAKE_MAC) return ST_EPROTO;
    size_t k = fixed;
    const size_t ep = msg[k++];
    if (ep == 0 || ep > ST_PAKE_MAX_ENDPOINT || k + ep + 1 + ST_PAKE_MAC > len) return ST_EPROTO;
    const uint8_t *ep_p = msg + k;
    k += ep;
    const size_t id = msg[k++];
    if (id > ST_PAKE_MAX_ID || k + id + ST_PAKE_MAC != len) return ST_EPROTO;
    const uint8_t *id_p = msg + k;
    k += id;
    if (!s_printable(ep_p, ep) || !s_printable(id_p, id)) return ST_EPROTO;
    memcpy(s->Y_n, msg + HDR, ST_PAKE_POINT);
    if (s_keys(s, s->Y_n) < 0) return ST_EPROTO;
    uint8_t want[ST_PAKE_MAC];
    s_mac(s, s->k_n, msg, k, NULL, 0, want);
    if (sodium_memcmp(want, msg + k, ST_PAKE_MAC) != 0) return ST_EAUTH;
    memcpy(s->mac_n, want, ST_PAKE_MAC);
    memcpy(node->key, msg + HDR + ST_PAKE_POINT, ST_PAKE_KEY);
    memcpy(node->endpoint, ep_p, ep);
    node->endpoint[ep] = '\0';
    memcpy(node->id, id_p, id);
    node->id[id] = '\0';
    s->step = ST_PAKE_WELCOME;
    return 0;
}

int st_pake_coord_welcome(st_pake_t *s, const uint8_t coord_key[ST_PAKE_KEY], uint8_t *out, size_t cap) {
    if (s->step != ST_PAKE_WELCOME) return ST_EINVAL;
    if (cap < HDR + ST_PAKE_KEY + ST_PAKE_MAC) return ST_ERANGE;
    size_t k = s_header(out, ST_PAKE_WELCOME);
    memcpy(out + k, coord_key, ST_PAKE_KEY), k += ST_PAKE_KEY;
    s_mac(s, s->k_c, s->mac_n, ST_PAKE_MAC, out, k, out + k);
    s->step = 0;
    return (int)(k + ST_PAKE_MAC);
}

int st_pake_refused(int reason, uint8_t *out, size_t cap) {
    if (cap < HDR + 1) return ST_ERANGE;
    size_t k = s_header(out, ST_PAKE_REFUSED);
    out[k++] = (uint8_t)reason;
    return (int)k;
}

const char *st_pake_reason(int reason) {
    switch (reason) {
    case ST_PAKE_R_WRONG: return "wrong code";
    case ST_PAKE_R_EXPIRED: return "the code expired; a new one is shown on the coordinator";
    case ST_PAKE_R_BAD: return "malformed message";
    case ST_PAKE_R_BUSY: return "too many pairings at once; try again";
    case ST_PAKE_R_TRIES: return "too many wrong tries from this address; wait for the coordinator's next code";
    default: return "refused";
    }
}

void st_pake_wipe(st_pake_t *s) { sodium_memzero(s, sizeof *s); }
