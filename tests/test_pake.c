/* Tests of proto/pake: both sides of a pairing agree with the right code and
 * not with a wrong one; replayed, tampered and malformed messages are
 * refused; and one exchange matches a known-answer vector computed apart from
 * this code: tests/pake/kat.py (Python's hashlib and hmac, and a plain Python
 * ristretto255, r255.py, checked against RFC 9496's vectors). */
#include <criterion/criterion.h>
#include <sodium.h>
#include <string.h>

#include "pake.h"
#include "st_log.h"

/* python3 tests/pake/kat.py: code ABCDE23456, n_c = 00..0f, n_n = 10..1f,
 * scalars y_n = 20..3f and y_c = 40..5f (little-endian bytes), node key
 * a0..bf, endpoint tcp://(star):5555, id board-1, coordinator key c0..df. */
static const uint8_t kat_G[32] = {0x14, 0xb8, 0xa5, 0x67, 0x77, 0xbc, 0x05, 0x14, 0x89, 0x36, 0x97,
                                  0xaa, 0x71, 0x39, 0x47, 0xa7, 0x5d, 0x47, 0x82, 0x99, 0x89, 0xc5,
                                  0xfe, 0x9e, 0x15, 0xa1, 0x41, 0x9c, 0x4a, 0x26, 0x99, 0x5f};
static const uint8_t kat_Y_n[32] = {0xe0, 0x45, 0x09, 0x23, 0x54, 0x66, 0x8a, 0xc4, 0x0a, 0x9d, 0xaf,
                                    0xf5, 0x88, 0xca, 0x80, 0x2b, 0x00, 0xab, 0xe4, 0xda, 0x3e, 0x59,
                                    0x8e, 0x6b, 0x8d, 0xbf, 0xf6, 0x40, 0xf1, 0x89, 0xac, 0x4e};
static const uint8_t kat_Y_c[32] = {0x0a, 0xf2, 0xf8, 0x3d, 0x99, 0x7d, 0x24, 0xa8, 0xd3, 0x68, 0x26,
                                    0xbe, 0x65, 0x83, 0xb2, 0x50, 0x1b, 0x2d, 0x83, 0x97, 0x9d, 0x15,
                                    0x91, 0xa4, 0xab, 0x38, 0xd3, 0x98, 0xe2, 0xb2, 0x89, 0x62};
static const uint8_t kat_K[32] = {0x90, 0xe7, 0xb2, 0x9b, 0x17, 0x39, 0x86, 0x59, 0xc2, 0xd3, 0x93,
                                  0xdf, 0x71, 0x7b, 0xd1, 0xbc, 0xa6, 0x5d, 0x0f, 0x87, 0xa4, 0x13,
                                  0x1d, 0x27, 0x4b, 0x1e, 0x1c, 0x5b, 0x99, 0x6d, 0x7b, 0x74};
static const uint8_t kat_k_n[32] = {0x09, 0xd2, 0x89, 0x1b, 0x1a, 0x5c, 0x0d, 0xc7, 0x8e, 0x98, 0x2b,
                                    0x61, 0x1a, 0x36, 0xc8, 0xd8, 0xcc, 0xe8, 0x15, 0x11, 0xc2, 0xe2,
                                    0xed, 0x2f, 0x4e, 0x58, 0x71, 0x71, 0x87, 0x1a, 0x56, 0xbb};
static const uint8_t kat_k_c[32] = {0xd6, 0x79, 0x68, 0x95, 0x88, 0xdd, 0xd4, 0x02, 0xdc, 0x28, 0x98,
                                    0x95, 0x6d, 0x56, 0xe5, 0xe3, 0xdd, 0x6e, 0x52, 0x49, 0x3d, 0x5e,
                                    0xc9, 0xd2, 0xb1, 0x11, 0x10, 0x79, 0xff, 0x6c, 0x63, 0x1c};
static const uint8_t kat_proof[122] = {
    0x53, 0x54, 0x50, 0x31, 0x03, 0xe0, 0x45, 0x09, 0x23, 0x54, 0x66, 0x8a, 0xc4, 0x0a, 0x9d, 0xaf, 0xf5, 0x88,
    0xca, 0x80, 0x2b, 0x00, 0xab, 0xe4, 0xda, 0x3e, 0x59, 0x8e, 0x6b, 0x8d, 0xbf, 0xf6, 0x40, 0xf1, 0x89, 0xac,
    0x4e, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf, 0xb0,
    0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xbb, 0xbc, 0xbd, 0xbe, 0xbf, 0x0c, 0x74, 0x63,
    0x70, 0x3a, 0x2f, 0x2f, 0x2a, 0x3a, 0x35, 0x35, 0x35, 0x35, 0x07, 0x62, 0x6f, 0x61, 0x72, 0x64, 0x2d, 0x31,
    0x37, 0x56, 0xf9, 0xfb, 0x07, 0xdf, 0x3b, 0x8b, 0xa4, 0x86, 0x69, 0xd3, 0xf6, 0x69, 0xff, 0x47, 0x08, 0x6a,
    0x41, 0x93, 0xc1, 0x31, 0xb4, 0xce, 0x7a, 0x26, 0x1a, 0x21, 0x83, 0x41, 0x6d, 0xef};
static const uint8_t kat_welcome[69] = {
    0x53, 0x54, 0x50, 0x31, 0x04, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc,
    0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde,
    0xdf, 0x59, 0x2e, 0xea, 0x91, 0x62, 0xf3, 0x3c, 0x0d, 0x3c, 0x99, 0xa1, 0x5d, 0x23, 0xba, 0x7b, 0x14, 0x6a,
    0x60, 0xc0, 0x1b, 0xab, 0x15, 0xc1, 0x8c, 0x79, 0xf6, 0x11, 0xf7, 0x60, 0x85, 0x62, 0x11};

static void setup(void) {
    cr_assert(sodium_init() >= 0);
    st_log_set_level(ST_LOG_ERROR);
}

TestSuite(pake, .init = setup);

static st_pake_node_info_t s_node_info(void) {
    st_pake_node_info_t me = {.endpoint = "tcp://*:5555", .id = "board-1"};
    for (int i = 0; i < ST_PAKE_KEY; i++) me.key[i] = (uint8_t)(0xa0 + i);
    return me;
}

static void s_coord_key(uint8_t k[ST_PAKE_KEY]) {
    for (int i = 0; i < ST_PAKE_KEY; i++) k[i] = (uint8_t)(0xc0 + i);
}

/* Messages of one exchange, kept for replays. */
typedef struct {
    uint8_t hello[ST_PAKE_MAX_MSG], challenge[ST_PAKE_MAX_MSG], proof[ST_PAKE_MAX_MSG], welcome[ST_PAKE_MAX_MSG];
    int hello_len, challenge_len, proof_len, welcome_len;
    st_pake_t node, coord;
} exchange_t;

/* Runs HELLO, CHALLENGE, PROOF with the node's and the coordinator's codes;
 * the coordinator's verdict on the proof. */
static int s_until_proof(exchange_t *x, const char *node_code, const char *coord_code) {
    st_pake_node_info_t me = s_node_info();
    x->hello_len = st_pake_node_hello(&x->node, node_code, x->hello, sizeof x->hello);
    cr_assert_gt(x->hello_len, 0);
    x->challenge_len = st_pake_coord_challenge(&x->coord, coord_code, x->hello, (size_t)x->hello_len, x->challenge,
                                               sizeof x->challenge);
    cr_assert_gt(x->challenge_len, 0);
    x->proof_len =
        st_pake_node_proof(&x->node, x->challenge, (size_t)x->challenge_len, &me, x->proof, sizeof x->proof, NULL);
    cr_assert_gt(x->proof_len, 0);
    st_pake_node_info_t got;
    return st_pake_coord_verify(&x->coord, x->proof, (size_t)x->proof_len, &got);
}

Test(pake, right_code_both_sides_get_the_other_key) {
    exchange_t x;
    st_pake_node_info_t me = s_node_info(), got;
    x.hello_len = st_pake_node_hello(&x.node, "abcde-23456", x.hello, sizeof x.hello); /* case and dash as typed */
    x.challenge_len =
        st_pake_coord_challenge(&x.coord, "ABCDE23456", x.hello, (size_t)x.hello_len, x.challenge, sizeof x.challenge);
    x.proof_len = st_pake_node_proof(&x.node, x.challenge, (size_t)x.challenge_len, &me, x.proof, sizeof x.proof, NULL);
    cr_assert_gt(x.proof_len, 0);
    cr_assert_eq(st_pake_coord_verify(&x.coord, x.proof, (size_t)x.proof_len, &got), 0);
    cr_assert_arr_eq(got.key, me.key, ST_PAKE_KEY);
    cr_assert_str_eq(got.endpoint, "tcp://*:5555");
    cr_assert_str_eq(got.id, "board-1");
    cr_assert_arr_eq(x.node.k_n, x.coord.k_n, 32, "both sides derive the same keys");
    cr_assert_arr_eq(x.node.k_c, x.coord.k_c, 32);
    uint8_t ck[ST_PAKE_KEY], out[ST_PAKE_KEY];
    s_coord_key(ck);
    x.welcome_len = st_pake_coord_welcome(&x.coord, ck, x.welcome, sizeof x.welcome);
    cr_assert_gt(x.welcome_len, 0);
    cr_assert_eq(st_pake_node_finish(&x.node, x.welcome, (size_t)x.welcome_len, out, NULL), 0);
    cr_assert_arr_eq(out, ck, ST_PAKE_KEY);
}

Test(pake, wrong_code_is_refused_and_keys_differ) {
    exchange_t x;
    cr_assert_eq(s_until_proof(&x, "ABCDE23457", "ABCDE23456"), ST_EAUTH);
    cr_assert(memcmp(x.node.k_n, x.coord.k_n, 32) != 0);
    /* and the coordinator has no proof to give for it */
    uint8_t ck[ST_PAKE_KEY], out[ST_PAKE_MAX_MSG];
    s_coord_key(ck);
    cr_assert_lt(st_pake_coord_welcome(&x.coord, ck, out, sizeof out), 0);
}

Test(pake, nonces_and_shares_are_fresh_each_exchange) {
    exchange_t a, b;
    cr_assert_eq(s_until_proof(&a, "ABCDE23456", "ABCDE23456"), 0);
    cr_assert_eq(s_until_proof(&b, "ABCDE23456", "ABCDE23456"), 0);
    cr_assert(memcmp(a.hello, b.hello, (size_t)a.hello_len) != 0);
    cr_assert(memcmp(a.challenge, b.challenge, (size_t)a.challenge_len) != 0);
    cr_assert(memcmp(a.node.k_n, b.node.k_n, 32) != 0);
}

Test(pake, replayed_proof_is_refused) {
    exchange_t a, b;
    cr_assert_eq(s_until_proof(&a, "ABCDE23456", "ABCDE23456"), 0);
    /* the same proof a second time on its own exchange: one proof per exchange */
    st_pake_node_info_t got;
    cr_assert_eq(st_pake_coord_verify(&a.coord, a.proof, (size_t)a.proof_len, &got), ST_EPROTO);
    /* replayed after the same HELLO: the coordinator's nonce and share are new */
    b.challenge_len =
        st_pake_coord_challenge(&b.coord, "ABCDE23456", a.hello, (size_t)a.hello_len, b.challenge, sizeof b.challenge);
    cr_assert_gt(b.challenge_len, 0);
    cr_assert_eq(st_pake_coord_verify(&b.coord, a.proof, (size_t)a.proof_len, &got), ST_EAUTH);
}

Test(pake, replayed_welcome_is_refused) {
    exchange_t a, b;
    uint8_t ck[ST_PAKE_KEY], out[ST_PAKE_KEY];
    s_coord_key(ck);
    cr_assert_eq(s_until_proof(&a, "ABCDE23456", "ABCDE23456"), 0);
    a.welcome_len = st_pake_coord_welcome(&a.coord, ck, a.welcome, sizeof a.welcome);
    cr_assert_eq(s_until_proof(&b, "ABCDE23456", "ABCDE23456"), 0);
    cr_assert_eq(st_pake_node_finish(&b.node, a.welcome, (size_t)a.welcome_len, out, NULL), ST_EAUTH);
}

Test(pake, every_tampered_byte_of_a_proof_is_refused) {
    for (int i = 0;; i++) {
        exchange_t x;
        st_pake_node_info_t me = s_node_info(), got;
        x.hello_len = st_pake_node_hello(&x.node, "ABCDE23456", x.hello, sizeof x.hello);
        x.challenge_len = st_pake_coord_challenge(&x.coord, "ABCDE23456", x.hello, (size_t)x.hello_len, x.challenge,
                                                  sizeof x.challenge);
        x.proof_len =
            st_pake_node_proof(&x.node, x.challenge, (size_t)x.challenge_len, &me, x.proof, sizeof x.proof, NULL);
        if (i == x.proof_len) break;
        x.proof[i] ^= 0x04; /* stays printable in the endpoint and id */
        int rc = st_pake_coord_verify(&x.coord, x.proof, (size_t)x.proof_len, &got);
        cr_assert(rc == ST_EAUTH || rc == ST_EPROTO, "byte %d changed: %d", i, rc);
    }
}

Test(pake, every_tampered_byte_of_a_welcome_is_refused) {
    uint8_t ck[ST_PAKE_KEY], out[ST_PAKE_KEY];
    s_coord_key(ck);
    for (int i = 0;; i++) {
        exchange_t x;
        cr_assert_eq(s_until_proof(&x, "ABCDE23456", "ABCDE23456"), 0);
        x.welcome_len = st_pake_coord_welcome(&x.coord, ck, x.welcome, sizeof x.welcome);
        if (i == x.welcome_len) break;
        x.welcome[i] ^= 0x01;
        int rc = st_pake_node_finish(&x.node, x.welcome, (size_t)x.welcome_len, out, NULL);
        cr_assert(rc == ST_EAUTH || rc == ST_EPROTO, "byte %d changed: %d", i, rc);
    }
}

Test(pake, a_challenge_with_the_identity_or_a_bad_point_is_refused) {
    exchange_t x;
    st_pake_node_info_t me = s_node_info();
    x.hello_len = st_pake_node_hello(&x.node, "ABCDE23456", x.hello, sizeof x.hello);
    x.challenge_len =
        st_pake_coord_challenge(&x.coord, "ABCDE23456", x.hello, (size_t)x.hello_len, x.challenge, sizeof x.challenge);
    uint8_t bad[ST_PAKE_MAX_MSG];
    memcpy(bad, x.challenge, (size_t)x.challenge_len);
    memset(bad + 5 + ST_PAKE_NONCE, 0, ST_PAKE_POINT); /* the identity: K would be known to anyone */
    cr_assert_eq(st_pake_node_proof(&x.node, bad, (size_t)x.challenge_len, &me, x.proof, sizeof x.proof, NULL),
                 ST_EPROTO);
    x.hello_len = st_pake_node_hello(&x.node, "ABCDE23456", x.hello, sizeof x.hello);
    memset(bad + 5 + ST_PAKE_NONCE, 0xff, ST_PAKE_POINT); /* not a canonical encoding */
    cr_assert_eq(st_pake_node_proof(&x.node, bad, (size_t)x.challenge_len, &me, x.proof, sizeof x.proof, NULL),
                 ST_EPROTO);
}

Test(pake, truncated_and_oversized_messages_are_refused) {
    exchange_t x;
    cr_assert_eq(s_until_proof(&x, "ABCDE23456", "ABCDE23456"), 0);
    st_pake_t c;
    uint8_t out[ST_PAKE_MAX_MSG], big[ST_PAKE_MAX_MSG + 8] = {0};
    for (int n = 0; n < x.hello_len; n++)
        cr_assert_eq(st_pake_coord_challenge(&c, "ABCDE23456", x.hello, (size_t)n, out, sizeof out), ST_EPROTO);
    memcpy(big, x.hello, (size_t)x.hello_len);
    cr_assert_eq(st_pake_coord_challenge(&c, "ABCDE23456", big, (size_t)x.hello_len + 1, out, sizeof out), ST_EPROTO);
    for (int n = 0; n < x.proof_len; n++) {
        st_pake_node_info_t got;
        cr_assert_gt(st_pake_coord_challenge(&c, "ABCDE23456", x.hello, (size_t)x.hello_len, out, sizeof out), 0);
        cr_assert_eq(st_pake_coord_verify(&c, x.proof, (size_t)n, &got), ST_EPROTO, "proof cut at %d", n);
    }
    /* a proof whose endpoint length points past its end */
    memcpy(big, x.proof, (size_t)x.proof_len);
    big[5 + ST_PAKE_POINT + ST_PAKE_KEY] = 0xff;
    st_pake_node_info_t got;
    cr_assert_gt(st_pake_coord_challenge(&c, "ABCDE23456", x.hello, (size_t)x.hello_len, out, sizeof out), 0);
    cr_assert_eq(st_pake_coord_verify(&c, big, (size_t)x.proof_len, &got), ST_EPROTO);
    /* a HELLO where a PROOF is expected, and a message without the magic */
    cr_assert_gt(st_pake_coord_challenge(&c, "ABCDE23456", x.hello, (size_t)x.hello_len, out, sizeof out), 0);
    cr_assert_eq(st_pake_coord_verify(&c, x.hello, (size_t)x.hello_len, &got), ST_EPROTO);
    memcpy(big, x.hello, (size_t)x.hello_len);
    big[0] = 'X';
    cr_assert_eq(st_pake_coord_challenge(&c, "ABCDE23456", big, (size_t)x.hello_len, out, sizeof out), ST_EPROTO);
}

Test(pake, refusal_reaches_the_node_with_its_reason) {
    exchange_t x;
    st_pake_node_info_t me = s_node_info();
    uint8_t msg[16], out[ST_PAKE_MAX_MSG], key[ST_PAKE_KEY];
    int reason = 0;
    x.hello_len = st_pake_node_hello(&x.node, "ABCDE23456", x.hello, sizeof x.hello);
    int n = st_pake_refused(ST_PAKE_R_EXPIRED, msg, sizeof msg);
    cr_assert_eq(st_pake_node_proof(&x.node, msg, (size_t)n, &me, out, sizeof out, &reason), ST_EAUTH);
    cr_assert_eq(reason, ST_PAKE_R_EXPIRED);
    cr_assert_eq(s_until_proof(&x, "ABCDE23457", "ABCDE23456"), ST_EAUTH);
    n = st_pake_refused(ST_PAKE_R_WRONG, msg, sizeof msg);
    cr_assert_eq(st_pake_node_finish(&x.node, msg, (size_t)n, key, &reason), ST_EAUTH);
    cr_assert_eq(reason, ST_PAKE_R_WRONG);
    cr_assert_str_eq(st_pake_reason(reason), "wrong code");
}

Test(pake, codes_are_ten_symbols_of_the_alphabet) {
    char code[ST_PAKE_CODE_BUF], norm[ST_PAKE_CODE_LEN + 1], other[ST_PAKE_CODE_BUF];
    st_pake_code_new(code);
    st_pake_code_new(other);
    cr_assert_eq(strlen(code), 11);
    cr_assert_eq(code[5], '-');
    cr_assert_str_neq(code, other); /* 2^-49 to fail by chance */
    cr_assert_eq(st_pake_code_normalize(code, norm), 0);
    for (int i = 0; i < ST_PAKE_CODE_LEN; i++) cr_assert_not_null(strchr(ST_PAKE_ALPHABET, norm[i]));
    cr_assert_eq(st_pake_code_normalize("abcde 23456", norm), 0);
    cr_assert_str_eq(norm, "ABCDE23456");
    cr_assert_eq(st_pake_code_normalize("ABCDE2345", norm), ST_EINVAL);   /* too short */
    cr_assert_eq(st_pake_code_normalize("ABCDE234567", norm), ST_EINVAL); /* too long */
    cr_assert_eq(st_pake_code_normalize("ABCDE2345O", norm), ST_EINVAL);  /* O is not in the alphabet */
    cr_assert_eq(st_pake_code_normalize("ABCDE2345\x01", norm), ST_EINVAL);
}

/* The generator, the shares, K and the keys as kat.py computes them. */
Test(pake, math_matches_the_known_answer_vector) {
    uint8_t n_c[16], n_n[16], y_n[32], y_c[32], G[32], Y_n[32], Y_c[32], K[32], k_n[32], k_c[32];
    for (int i = 0; i < 16; i++) n_c[i] = (uint8_t)i, n_n[i] = (uint8_t)(16 + i);
    for (int i = 0; i < 32; i++) y_n[i] = (uint8_t)(32 + i), y_c[i] = (uint8_t)(64 + i);
    st_pake_generator("ABCDE23456", n_c, n_n, G);
    cr_assert_arr_eq(G, kat_G, 32);
    cr_assert_eq(crypto_scalarmult_ristretto255(Y_n, y_n, G), 0);
    cr_assert_eq(crypto_scalarmult_ristretto255(Y_c, y_c, G), 0);
    cr_assert_arr_eq(Y_n, kat_Y_n, 32);
    cr_assert_arr_eq(Y_c, kat_Y_c, 32);
    cr_assert_eq(crypto_scalarmult_ristretto255(K, y_n, Y_c), 0);
    cr_assert_arr_eq(K, kat_K, 32);
    uint8_t T[10 + 16 + 16 + 32 + 32];
    memcpy(T, "st-pair-v1", 10);
    memcpy(T + 10, n_n, 16);
    memcpy(T + 26, n_c, 16);
    memcpy(T + 42, Y_c, 32);
    memcpy(T + 74, Y_n, 32);
    st_pake_confirm_keys(K, T, sizeof T, k_n, k_c);
    cr_assert_arr_eq(k_n, kat_k_n, 32);
    cr_assert_arr_eq(k_c, kat_k_c, 32);
}

/* The coordinator's side on the vector's exchange: it accepts kat.py's PROOF
 * (whose MAC Python computed) and writes kat.py's WELCOME byte for byte. */
Test(pake, coordinator_matches_the_known_answer_vector) {
    st_pake_t c = {.code = "ABCDE23456", .step = ST_PAKE_PROOF};
    for (int i = 0; i < 16; i++) c.n_c[i] = (uint8_t)i, c.n_n[i] = (uint8_t)(16 + i);
    for (int i = 0; i < 32; i++) c.y[i] = (uint8_t)(64 + i);
    memcpy(c.Y_c, kat_Y_c, 32);
    st_pake_node_info_t got;
    cr_assert_eq(st_pake_coord_verify(&c, kat_proof, sizeof kat_proof, &got), 0);
    cr_assert_str_eq(got.endpoint, "tcp://*:5555");
    cr_assert_str_eq(got.id, "board-1");
    cr_assert_arr_eq(got.key, kat_proof + 5 + 32, 32);
    uint8_t ck[ST_PAKE_KEY], out[ST_PAKE_MAX_MSG];
    s_coord_key(ck);
    int n = st_pake_coord_welcome(&c, ck, out, sizeof out);
    cr_assert_eq(n, (int)sizeof kat_welcome);
    cr_assert_arr_eq(out, kat_welcome, sizeof kat_welcome);
}
