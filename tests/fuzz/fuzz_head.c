/* fuzz_head: the sharded output head on any bytes, as both ends take it
 * (input layout in fuzz_head.h).
 *  - The node's side: HEAD_ASSIGN, HEAD_PUT and HEAD_COMPUTE checked against
 *    its slice (st_wire_check_head); an accepted HEAD_COMPUTE for candidates
 *    is then answered by the node's own code (st_node_head_cands: each
 *    sequence's penalties, from its range of the lists, and temperature, on
 *    fixed logits), and that answer must pass the coordinator's check (else
 *    abort: the two ends disagree on what is valid).
 *  - The coordinator's side: a HEAD_RESULT checked against the request it
 *    answers (st_wire_check_head_result, the frame read); accepted
 *    candidates go to the sampler's merge (st_sampler_sample_parts) beside a
 *    part of the coordinator's own, and a token drawn must be one of theirs
 *    (else abort).
 *  - The node's head slice file (st_store_head_load), in a directory made
 *    for the run in the working directory and removed at exit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "fuzz_head.h"
#include "node.h"
#include "sampler.h"
#include "st_log.h"
#include "store.h"

static char g_dir[64];

static void s_cleanup(void) {
    if (!g_dir[0]) return;
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_head: cannot remove %s\n", g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (!getenv("ST_LOG")) st_log_set_level((st_log_level_t)-1); /* silent: refusals are the normal case */
    /* in the working directory (bench/fuzz's work corpus, ctest's build dir), not /tmp: a fuzzer
     * that ends without exit() (a crash, -merge's runs) leaves it where its other files are */
    snprintf(g_dir, sizeof g_dir, "fuzz-head-files-XXXXXX");
    if (!mkdtemp(g_dir)) abort();
    atexit(s_cleanup);
    return 0;
}

/* The node's side of a checked HEAD_COMPUTE for candidates: its answer (st_node_head_cands, on fixed
 * logits) must pass the coordinator's check. */
static void s_node_eval(const st_wire_head_compute_t *c, const st_wire_head_assign_t *a) {
    enum { ROWS = FH_HI - FH_LO };
    const uint32_t k = c->n_cand < ROWS ? c->n_cand : ROWS;
    float y[ROWS], *mx = malloc(c->n_seq * sizeof *mx);
    double *sum = malloc(2 * c->n_seq * sizeof *sum);
    uint8_t *frame = malloc((size_t)c->n_seq * k * 8u);
    if (!mx || !sum || !frame) abort();
    for (uint32_t s = 0, pen0 = 0; s < c->n_seq; pen0 += c->pen_n[s++]) {
        fh_logits(y, ROWS);
        if (st_node_head_cands(c, s, pen0, y, ROWS, FH_LO, k, frame + (size_t)s * k * 8u, &mx[s], &sum[s],
                               &sum[c->n_seq + s]) != 0)
            abort(); /* a checked request the node cannot answer */
    }
    st_wire_msg_t r = {.type = ST_MSG_HEAD_RESULT};
    r.head_result =
        (st_wire_head_result_t){.n_seq = c->n_seq, .n_cand = k, .max = mx, .sum = sum, .sum_temp = sum + c->n_seq};
    char why[256];
    if (st_wire_check_head_result(&r, c, a, frame, (size_t)c->n_seq * k * 8u, why, sizeof why) != 0) {
        fprintf(stderr, "fuzz_head: the coordinator refuses the node's answer to a request it accepted: %s\n", why);
        abort();
    }
    free(mx), free(sum), free(frame);
}

/* The coordinator's side of a checked HEAD_RESULT: its first sequence's candidates, merged. */
static void s_coord_merge(const st_wire_head_result_t *r, const uint8_t *frame, int flags) {
    st_sampler_cand_t *cand = malloc(r->n_cand * sizeof *cand);
    if (!cand) abort();
    for (uint32_t i = 0; i < r->n_cand; i++) {
        memcpy(&cand[i].id, frame + 8u * i, 4);
        memcpy(&cand[i].logit, frame + 8u * i + 4, 4);
    }
    st_sampler_params_t p = st_sampler_default_params();
    p.temp = flags & 1 ? 0.8f : 0.0f;
    p.top_k = flags & 2 ? 5 : 0;
    p.top_p = flags & 4 ? 0.9f : 1.0f;
    p.min_p = flags & 8 ? 0.05f : 0.0f;
    p.seed = 42;
    st_sampler_t *smp = st_sampler_new(&p, FH_VOCAB);
    if (!smp) abort();
    /* the rows before the slice, as the coordinator computes a part itself */
    float y[FH_LO], vals[FH_LO];
    int32_t ids[FH_LO];
    fh_logits(y, FH_LO);
    st_sampler_part_t parts[2] = {{.cand = cand,
                                   .n_cand = (int)r->n_cand,
                                   .complete = r->n_cand == FH_HI - FH_LO,
                                   .max = r->max[0],
                                   .sum = r->sum[0],
                                   .sum_temp = r->sum_temp[0]}};
    const int k = (int)(r->n_cand < FH_LO ? r->n_cand : FH_LO);
    st_sampler_cand_t mine[FH_LO];
    const int got =
        st_sampler_part_eval(y, FH_LO, 0, NULL, p.temp, k, ids, vals, &parts[1].max, &parts[1].sum, &parts[1].sum_temp);
    if (got != k) abort();
    for (int i = 0; i < got; i++) mine[i] = (st_sampler_cand_t){ids[i], vals[i]};
    parts[1].cand = mine;
    parts[1].n_cand = got;
    parts[1].complete = got == FH_LO;
    int need = 0;
    const int32_t tok = st_sampler_sample_parts(smp, parts, 2, &need);
    if (tok >= 0) {
        bool known = false;
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < parts[j].n_cand; i++) known |= parts[j].cand[i].id == tok;
        if (!known) abort(); /* drew a token no part offered */
    }
    st_sampler_destroy(&smp);
    free(cand);
}

static void s_file(const uint8_t *data, size_t size, uint32_t bytes, int flags) {
    uint8_t hash[ST_WIRE_HASH_BYTES];
    char hex[2 * ST_WIRE_HASH_BYTES + 1];
    const st_wire_head_assign_t a = fh_assign();
    if (flags & FH_OWN_HASH)
        st_wire_hash(data, size, hash);
    else
        memcpy(hash, a.hash, sizeof hash);
    for (int i = 0; i < ST_WIRE_HASH_BYTES; i++) snprintf(hex + 2 * i, 3, "%02x", hash[i]);
    char path[160];
    snprintf(path, sizeof path, "%s/head-%s.dat", g_dir, hex);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) abort();
    uint8_t *buf = malloc(bytes ? bytes : 1);
    if (!buf) abort();
    const bool ok = st_store_head_load(g_dir, hash, buf, bytes);
    if (ok && (bytes != size || memcmp(buf, data, size))) abort(); /* trusted what is not the slice */
    free(buf);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_dir[0]) LLVMFuzzerInitialize(NULL, NULL);
    if (size < 3) return 0;
    const int flags = data[0];
    const uint32_t L = (uint32_t)data[1] | (uint32_t)data[2] << 8;
    data += 3, size -= 3;
    if (flags & FH_FILE) {
        s_file(data, size, L, flags);
        return 0;
    }
    if (L > size) return 0;
    const uint8_t *frame = data + L;
    const size_t flen = size - L;
    char why[256];
    st_wire_msg_t m;
    if (st_wire_decode(data, L, &m, why, sizeof why) != 0) return 0;
    const st_wire_head_assign_t a = fh_assign();
    (void)st_wire_check_head(&m, FH_EMBD, NULL, flen, why, sizeof why); /* before any HEAD_ASSIGN */
    if (st_wire_check_head(&m, FH_EMBD, &a, flen, why, sizeof why) == 0 && m.type == ST_MSG_HEAD_COMPUTE &&
        !m.head_compute.full)
        s_node_eval(&m.head_compute, &a);
    if (m.type == ST_MSG_HEAD_RESULT && m.head_result.n_cand <= ST_WIRE_MAX_HEAD_CAND) {
        /* the request it answers (a coordinator asks for 1 candidate at least) */
        const st_wire_head_compute_t req = {.n_seq = m.head_result.n_seq,
                                            .lo = FH_LO,
                                            .n_cand = m.head_result.n_cand ? m.head_result.n_cand : 1,
                                            .full = m.head_result.full};
        if (st_wire_check_head_result(&m, &req, &a, frame, flen, why, sizeof why) == 0 && !req.full)
            s_coord_merge(&m.head_result, frame, flags);
    }
    st_wire_msg_clear(&m);
    return 0;
}
