/* fuzz_pake: both sides of the pairing exchange (proto/pake) on any bytes.
 * Input: one byte that picks the message under test, then the message:
 *   0  a HELLO, to the coordinator
 *   1  a PROOF, to a coordinator that has just answered a real HELLO
 *   2  a CHALLENGE, to a node that has just sent its HELLO
 *   3  a WELCOME or REFUSED, to a node that has just sent a real PROOF
 * Every length and field must be checked; an accepted PROOF or WELCOME would
 * mean a forged MAC (the input cannot know this run's fresh keys), so it
 * aborts. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "pake.h"
#include "st_log.h"

#include <sodium.h>

#define CODE "ABCDE23456"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!getenv("ST_LOG")) st_log_set_level((st_log_level_t)-1); /* silent: refusals are the normal case */
    return sodium_init() < 0 ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) ready = LLVMFuzzerInitialize(NULL, NULL) == 0;
    if (size < 1) return 0;
    const int what = data[0] % 4;
    data++, size--;
    st_pake_t node, coord;
    st_pake_node_info_t me = {.endpoint = "tcp://*:5555", .id = "fuzz"}, got;
    uint8_t hello[ST_PAKE_MAX_MSG], chal[ST_PAKE_MAX_MSG], proof[ST_PAKE_MAX_MSG], out[ST_PAKE_MAX_MSG], key[32];
    int reason = 0;
    const int hl = st_pake_node_hello(&node, CODE, hello, sizeof hello);
    if (what == 0) {
        (void)st_pake_coord_challenge(&coord, CODE, data, size, out, sizeof out);
        return 0;
    }
    if (what == 2) {
        (void)st_pake_node_proof(&node, data, size, &me, out, sizeof out, &reason);
        return 0;
    }
    const int cl = st_pake_coord_challenge(&coord, CODE, hello, (size_t)hl, chal, sizeof chal);
    if (what == 1) {
        if (st_pake_coord_verify(&coord, data, size, &got) == 0) abort(); /* a forged proof */
        return 0;
    }
    if (st_pake_node_proof(&node, chal, (size_t)cl, &me, proof, sizeof proof, &reason) <= 0) abort();
    if (st_pake_node_finish(&node, data, size, key, &reason) == 0) abort(); /* a forged welcome */
    return 0;
}
