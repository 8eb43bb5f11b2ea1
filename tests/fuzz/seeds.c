/* seeds: writes the valid messages that seed the corpora of the head
 * messages and compact results, built with st_wire_encode so that a change
 * of the protocol (its version, a field) is one run away:
 *   fuzz-seeds tests/fuzz/corpus
 * writes the head-, compute-compact- and result-compact- files of corpus/wire
 * (fuzz_wire's layout: 4 bytes of frame length, then the Envelope) and the
 * files of corpus/head (fuzz_head.h's layout). The head candidates are what a node computes
 * (st_sampler_part_eval), so that they pass the coordinator's check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_head.h"
#include "sampler.h"
#include "st_log.h"

#define ROWS (FH_HI - FH_LO)

static const char *g_root;

static void s_write(const char *target, const char *name, const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s/%s", g_root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(a, 1, al, f) != al || (bl && fwrite(b, 1, bl, f) != bl) || fclose(f) != 0) {
        fprintf(stderr, "fuzz-seeds: cannot write %s\n", path);
        exit(1);
    }
    printf("%s (%zu B)\n", path, al + bl);
}

/* m encoded: fuzz_wire's input (frame length, Envelope) and fuzz_head's (flags, L, Envelope, frame) */
static void s_seed(const char *name, const st_wire_msg_t *m, const void *frame, size_t flen, int flags, bool wire) {
    uint8_t env[4096], in[4096 + 3];
    size_t len = 0;
    if (st_wire_encode(m, env, sizeof env, &len) != 0) {
        fprintf(stderr, "fuzz-seeds: %s does not encode\n", name);
        exit(1);
    }
    if (wire) {
        const uint8_t fl[4] = {(uint8_t)flen, (uint8_t)(flen >> 8), (uint8_t)(flen >> 16), (uint8_t)(flen >> 24)};
        memcpy(in, fl, 4);
        memcpy(in + 4, env, len);
        s_write("wire", name, in, len + 4, NULL, 0);
    }
    if (flags < 0) return;
    in[0] = (uint8_t)flags, in[1] = (uint8_t)len, in[2] = (uint8_t)(len >> 8);
    memcpy(in + 3, env, len);
    s_write("head", name, in, len + 3, frame, flen);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz-seeds CORPUS_DIR (tests/fuzz/corpus)\n");
        return 2;
    }
    g_root = argv[1];
    st_log_set_level(ST_LOG_ERROR);
    const st_wire_head_assign_t a = fh_assign();
    float x[2 * FH_EMBD];
    for (int i = 0; i < 2 * FH_EMBD; i++) x[i] = (float)(i % 13) / 4.0f - 1.5f;

    st_wire_msg_t m = {.type = ST_MSG_HEAD_ASSIGN, .request_id = 1, .head_assign = a};
    s_seed("head-assign", &m, NULL, 0, 0, true);

    uint8_t chunk[1000];
    for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = (uint8_t)(i * 7);
    m = (st_wire_msg_t){.type = ST_MSG_HEAD_PUT, .request_id = 2};
    m.head_put =
        (st_wire_head_put_t){.offset = 0, .total = st_wire_head_bytes(FH_TYPE, FH_EMBD, FH_LO, FH_HI), .lo = FH_LO};
    st_wire_hash(chunk, sizeof chunk, m.head_put.chunk_hash);
    s_seed("head-put", &m, chunk, sizeof chunk, 0, true);

    m = (st_wire_msg_t){.type = ST_MSG_HEAD_ACK, .request_id = 3, .head_ack = {.offset = 1000, .ok = true}};
    s_seed("head-ack", &m, NULL, 0, -1, true);

    m = (st_wire_msg_t){
        .type = ST_MSG_HEAD_COMPUTE, .request_id = 4, .head_compute = {.n_seq = 2, .full = true, .lo = FH_LO}};
    s_seed("head-compute-full", &m, x, sizeof x, 0, true);

    /* two sequences: penalties (3 ids in the slice and one outside it, then one), a temperature, greedy */
    float temp[2] = {0.7f, 0.0f}, rp[2] = {1.1f, 1.0f}, pp[2] = {0.5f, 0.0f}, fp[2] = {0.2f, 0.0f};
    uint32_t pen_n[2] = {4, 1}, pen_id[5] = {100, 5, 200, 351, 97}, pen_count[5] = {1, 2, 1, 3, 1};
    m = (st_wire_msg_t){.type = ST_MSG_HEAD_COMPUTE, .request_id = 5};
    m.head_compute = (st_wire_head_compute_t){.n_seq = 2,
                                              .n_cand = 8,
                                              .lo = FH_LO,
                                              .temp = temp,
                                              .repeat_penalty = rp,
                                              .presence_penalty = pp,
                                              .frequency_penalty = fp,
                                              .pen_n = pen_n,
                                              .n_pen = 5,
                                              .pen_id = pen_id,
                                              .pen_count = pen_count};
    s_seed("head-compute-cand", &m, x, sizeof x, 0, true);

    float y[ROWS];
    fh_logits(y, ROWS);
    m = (st_wire_msg_t){.type = ST_MSG_HEAD_RESULT, .request_id = 4, .head_result = {.n_seq = 1, .full = true}};
    s_seed("head-result-full", &m, y, sizeof y, 0, false);

    /* candidates as a node makes them: k = 8 at temperature 0.8 (flags: temp, top-k), and k = 1 greedy */
    const int ks[2] = {8, 1};
    const float ts[2] = {0.8f, 0.0f};
    for (int j = 0; j < 2; j++) {
        int32_t ids[8];
        float vals[8], mx;
        double sum, sum_t;
        fh_logits(y, ROWS);
        if (st_sampler_part_eval(y, ROWS, FH_LO, NULL, ts[j], ks[j], ids, vals, &mx, &sum, &sum_t) != ks[j]) return 1;
        uint8_t frame[64];
        for (int i = 0; i < ks[j]; i++) memcpy(frame + 8 * i, &ids[i], 4), memcpy(frame + 8 * i + 4, &vals[i], 4);
        m = (st_wire_msg_t){.type = ST_MSG_HEAD_RESULT, .request_id = 5};
        m.head_result = (st_wire_head_result_t){
            .n_seq = 1, .n_cand = (uint32_t)ks[j], .max = &mx, .sum = &sum, .sum_temp = &sum_t, .compute_us = 17};
        s_seed(j ? "head-result-greedy" : "head-result-cand", &m, frame, (size_t)ks[j] * 8, j ? 0 : 3, !j);
    }

    /* the node's slice file: whole and matching its own hash, and one under the wrong hash */
    uint8_t file[3 + 200];
    file[1] = 200, file[2] = 0;
    memcpy(file + 3, chunk, 200);
    file[0] = FH_FILE | FH_OWN_HASH;
    s_write("head", "file-good", file, sizeof file, NULL, 0);
    file[0] = FH_FILE;
    s_write("head", "file-wrong-hash", file, sizeof file, NULL, 0);

    /* compact results (fuzz_wire's shape: n_embd 64, Q4_0 experts, so Q8_0 activations of 68 B a row) */
    int32_t tok[4] = {0, 0, 1, 1}, ex[4] = {1, 3, 2, 0};
    float w[4] = {0.6f, 0.4f, 0.7f, 0.3f};
    m = (st_wire_msg_t){.type = ST_MSG_EXPERT_COMPUTE, .request_id = 6};
    m.compute = (st_wire_compute_t){.layer = 1,
                                    .n_tokens = 2,
                                    .act_type = ST_TYPE_Q8_0,
                                    .n_pairs = 4,
                                    .pair_token = tok,
                                    .pair_expert = ex,
                                    .result_format = ST_RESULT_PER_TOKEN_F16,
                                    .pair_weight = w};
    s_seed("compute-compact-f16", &m, NULL, 2 * 68, -1, true);
    m.compute.result_format = ST_RESULT_PER_TOKEN_F32;
    s_seed("compute-compact-f32", &m, NULL, 2 * 68, -1, true);
    m = (st_wire_msg_t){.type = ST_MSG_EXPERT_RESULT, .request_id = 6};
    m.result = (st_wire_result_t){.n_pairs = 4, .compute_us = 90, .cache_hits = 4, .result_format = 2, .n_rows = 2};
    s_seed("result-compact-f16", &m, NULL, 2 * (4 + 2 * 64), -1, true);
    m.result.result_format = ST_RESULT_PER_TOKEN_F32;
    s_seed("result-compact-f32", &m, NULL, 2 * 4 * 64, -1, true);
    return 0;
}
