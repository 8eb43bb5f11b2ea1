/* fuzz_wire: the protocol decoder on any bytes. Input: 4 bytes (little-endian
 * length of the raw frame that came with the message; only its size matters
 * to the checks) then one Envelope. A message st_wire_decode accepts is
 * checked against a small model's shape (st_wire_check), encoded again and
 * decoded again: what we accepted must survive a round trip unchanged in
 * type and request id. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "st_kernels.h"
#include "st_log.h"
#include "wire.h"

static st_wire_shape_t g_shape;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!getenv("ST_LOG")) st_log_set_level((st_log_level_t)-1); /* silent: refusals are the normal case */
    /* as in test_wire: 4 layers, n_embd 64, n_ff_exp 32, 8 experts, top 2, Q4_0 */
    g_shape = (st_wire_shape_t){.n_layer = 4, .n_embd = 64, .n_ff_exp = 32, .n_expert = 8, .n_expert_used = 2};
    st_wire_shape_set_types(&g_shape, ST_TYPE_Q4_0, ST_TYPE_Q4_0, ST_TYPE_Q4_0);
    g_shape.down_type[2] = ST_TYPE_Q8_0; /* per-layer types, as llama-quantize's mixes make them */
    for (int i = 0; i < ST_WIRE_HASH_BYTES; i++) g_shape.model_hash[i] = (uint8_t)(i * 7 + 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (g_shape.n_layer == 0) LLVMFuzzerInitialize(NULL, NULL);
    if (size < 4) return 0;
    const size_t frame_len = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
    data += 4, size -= 4;
    char why[256];
    st_wire_msg_t m;
    if (st_wire_decode(data, size, &m, why, sizeof why) != 0) return 0;
    (void)st_wire_check(&m, &g_shape, frame_len, why, sizeof why);
    (void)st_wire_check(&m, NULL, frame_len, why, sizeof why);
    if (m.type == ST_MSG_HELLO) (void)st_wire_same_release(m.hello.software);
    if (m.type == ST_MSG_INVENTORY) (void)st_wire_same_release(m.inventory.software);
    if (m.type == ST_MSG_HELLO || m.type == ST_MSG_ASSIGN) {
        const st_wire_shape_t *s = m.type == ST_MSG_HELLO ? &m.hello.shape : &m.assign.shape;
        if (st_wire_check_shape(s, why, sizeof why) == 0) {
            for (uint32_t l = 0; l <= s->n_layer; l++) { /* one past the end too */
                uint64_t sizes[3];
                (void)st_wire_matrix_bytes(s, l, sizes);
                (void)st_wire_act_row_bytes(s, l);
            }
            (void)st_wire_max_expert_bytes(s);
            (void)st_wire_max_tokens(s);
            (void)st_wire_max_result_frame(s);
        }
    }
    /* round trip */
    const size_t cap = st_wire_encoded_size(&m);
    uint8_t *buf = malloc(cap ? cap : 1);
    size_t len = 0;
    if (!buf || st_wire_encode(&m, buf, cap, &len) != 0) abort(); /* accepted, so encodable */
    st_wire_msg_t m2;
    if (st_wire_decode(buf, len, &m2, why, sizeof why) != 0 || m2.type != m.type || m2.request_id != m.request_id)
        abort();
    st_wire_msg_clear(&m2);
    free(buf);
    st_wire_msg_clear(&m);
    return 0;
}
