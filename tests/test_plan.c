/* The planner: its arithmetic on small cases worked by hand (the expected
 * numbers are derived in the comments, not taken from the code), board
 * profiles, and st-plan as a user runs it (--json parsed, clear errors for an
 * unknown board, a malformed cluster file and an impossible setup).
 *
 * st-plan reads only the model's shapes: the tests use a small synthetic
 * model, never the 21B-shaped file. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "board.h"
#include "file.h"
#include "plan.h"
#include "st_log.h"
#include "testutil.h"

#define ST_PLAN ST_BINARY_DIR "/st-plan"
#define MS 1e-3

static void setup(void) { st_log_set_level(ST_LOG_ERROR); }
TestSuite(plan, .init = setup);

static void s_near(double got, double want, double rel, const char *what) {
    cr_assert(fabs(got - want) <= rel * fabs(want) + 1e-12, "%s: %.9g, expected %.9g", what, got, want);
}

/* ---- the expected slowest node ------------------------------------------- */

Test(plan, expected_max_two_nodes_all_in_ram) {
    /* 4 experts, 2 per node, 2 used, 1 s each. Of the C(4,2) = 6 pairs, 2 sit
     * on one node (that node takes 2 s), 4 are split (1 s): E = (2*2 + 4*1)/6 = 4/3 */
    int ram[2] = {2, 2}, disk[2] = {0, 0};
    double cmp[2] = {1, 1}, rd[2] = {0, 0};
    s_near(st_plan_expected_max(2, ram, disk, cmp, rd, 0, 2), 4.0 / 3, 1e-12, "E[max]");
    /* all 4 used: each node computes 2: 2 s exactly; 1 used: 1 s */
    s_near(st_plan_expected_max(2, ram, disk, cmp, rd, 0, 4), 2.0, 1e-12, "d=4");
    s_near(st_plan_expected_max(2, ram, disk, cmp, rd, 0, 1), 1.0, 1e-12, "d=1");
    cr_assert_eq(st_plan_expected_max(2, ram, disk, cmp, rd, 0, 0), 0.0);
    cr_assert_lt(st_plan_expected_max(2, ram, disk, cmp, rd, 0, 5), 0.0, "more used than there are");
}

Test(plan, expected_max_with_reads_and_prefetch) {
    /* node A: expert Ar in RAM, Ad on disk; node B: B1, B2 in RAM. compute 1 s,
     * a read 3 s, 1 s of it hidden by the prefetch. The 6 pairs:
     *   {Ar,Ad}: A = max(0, 3-1) + 2 = 4      {Ar,B1}, {Ar,B2}: 1
     *   {Ad,B1}, {Ad,B2}: A = max(0, 3-1) + 1 = 3      {B1,B2}: B = 2
     * E = (4 + 1 + 1 + 3 + 3 + 2) / 6 = 14/6 */
    int ram[2] = {1, 2}, disk[2] = {1, 0};
    double cmp[2] = {1, 1}, rd[2] = {3, 3};
    s_near(st_plan_expected_max(2, ram, disk, cmp, rd, 1, 2), 14.0 / 6, 1e-12, "E[max]");
    /* a prefetch that hides the whole read: {Ar,Ad} 2, {Ad,Bx} 1: E = (2+1+1+1+1+2)/6 = 8/6 */
    s_near(st_plan_expected_max(2, ram, disk, cmp, rd, 5, 2), 8.0 / 6, 1e-12, "hidden reads");
}

/* ---- boards ---------------------------------------------------------------- */

Test(plan, matmul_time_interpolates_the_measured_batches) {
    st_board_t b = {.name = "t", .ram = 1ull << 30, .mem_bw = 1e9};
    double r[3] = {1e9, 4e9, 8e9};
    memcpy(b.matmul[ST_TYPE_Q4_0], r, sizeof r);
    cr_assert_eq(st_board_fill(&b), 0);
    /* 1000 x 1000 = 1e6 MACs: 1 token 1e6/1e9 = 1 ms; 8 tokens 8e6/4e9 = 2 ms;
     * 4.5 tokens halfway: 1.5 ms; 64 tokens 64e6/8e9 = 8 ms; 128: twice that */
    s_near(st_board_matmul_s(&b, ST_TYPE_Q4_0, 1000, 1000, 1, false), 1 * MS, 1e-12, "1 token");
    s_near(st_board_matmul_s(&b, ST_TYPE_Q4_0, 1000, 1000, 8, false), 2 * MS, 1e-12, "8 tokens");
    s_near(st_board_matmul_s(&b, ST_TYPE_Q4_0, 1000, 1000, 4.5, false), 1.5 * MS, 1e-12, "4.5 tokens");
    s_near(st_board_matmul_s(&b, ST_TYPE_Q4_0, 1000, 1000, 64, false), 8 * MS, 1e-12, "64 tokens");
    s_near(st_board_matmul_s(&b, ST_TYPE_Q4_0, 1000, 1000, 128, false), 16 * MS, 1e-12, "128 tokens");
    /* streamed at 0.5e9 at 1 token: 2 ms; 4.5 tokens halfway to 8's 2 ms: 2 ms; no stream rate: as one call */
    b.stream[ST_TYPE_Q4_0] = 0.5e9;
    s_near(st_board_matmul_s(&b, ST_TYPE_Q4_0, 1000, 1000, 1, true), 2 * MS, 1e-12, "streamed, 1 token");
    s_near(st_board_matmul_s(&b, ST_TYPE_Q4_0, 1000, 1000, 4.5, true), 2 * MS, 1e-12, "streamed, 4.5 tokens");
    s_near(st_board_matmul_s(&b, ST_TYPE_Q4_0, 1000, 1000, 1, false), 1 * MS, 1e-12, "one call");
    s_near(st_board_matmul_s(&b, ST_TYPE_Q8_0, 1000, 1000, 1, true),
           st_board_matmul_s(&b, ST_TYPE_Q8_0, 1000, 1000, 1, false), 1e-12, "Q8_0: no stream rate");
}

Test(plan, rates_a_board_lacks_come_from_its_bandwidth_and_q4_0) {
    /* Pi 5: 10 GB/s, Q4_0 at 64 tokens 53e9 MAC/s. One token streams the
     * weights: Q4_0 holds 32 weights in 18 bytes, 10e9 * 32/18 = 17.78e9;
     * 8 tokens: min(8 x that, 53e9) = 53e9. Q8_0 (34 bytes per 32) measured
     * at 64 tokens: 40e9; one token 10e9 * 32/34 = 9.41e9. */
    st_board_t b;
    cr_assert_eq(st_board_builtin("pi5-2g", &b), 0);
    s_near(b.matmul[ST_TYPE_Q4_0][0], 10e9 * 32 / 18, 1e-12, "q4_0 at 1");
    s_near(b.matmul[ST_TYPE_Q4_0][1], 53e9, 1e-12, "q4_0 at 8");
    s_near(b.matmul[ST_TYPE_Q8_0][0], 10e9 * 32 / 34, 1e-12, "q8_0 at 1");
    s_near(b.matmul[ST_TYPE_Q8_0][2], 40e9, 1e-12, "q8_0 at 64");
    cr_assert_eq(b.ram, 2ull << 30);
    cr_assert_eq(b.mem, (2ull << 30) - (512ull << 20), "a 2 GB node gives 1.5 GiB to experts");
    cr_assert_eq(b.page_size, 16384, "Raspberry Pi OS's Pi 5 kernel (kernel_2712) has 16 KiB pages");
    s_near(b.net_bps, 941e6 / 8, 1e-12, "gigabit Ethernet");
    st_board_t nv;
    cr_assert_eq(st_board_builtin("pi5-2g+nvme", &nv), 0);
    cr_assert_gt(nv.disk_direct, 4 * b.disk_direct, "NVMe is several times a microSD card");
    cr_assert_lt(st_board_builtin("pi5-3g", &b), 0);
    cr_assert_lt(st_board_builtin("pi4-16g", &b), 0, "no 16 GB Pi 4");
    cr_assert_lt(st_board_builtin("pi4-4g+nvme", &b), 0, "a Pi 4 has no NVMe slot");
}

Test(plan, profile_files_round_trip_and_refuse_bad_lines) {
    char path[] = "/tmp/st-test-plan-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    st_board_t b;
    cr_assert_eq(st_board_builtin("pi4-4g", &b), 0);
    cr_assert_eq(b.page_size, 4096, "a Pi 4 runs kernel8.img: 4 KiB pages");
    b.page_size = 65536;
    b.mem_bw_t[1] = 2.5e9;
    b.rtt = 123e-6;
    b.stream[ST_TYPE_Q4_0] = 7e9;
    b.unpacked[ST_TYPE_Q4_0][0] = 1e9, b.unpacked[ST_TYPE_Q4_0][1] = 2e9, b.unpacked[ST_TYPE_Q4_0][2] = 3e9;
    cr_assert_eq(st_board_save(&b, f), 0);
    fclose(f);
    st_board_t c;
    cr_assert_eq(st_board_load(path, &c), 0);
    cr_assert_str_eq(c.name, "pi4-4g");
    cr_assert_eq(c.ram, b.ram);
    cr_assert_eq(c.mem, b.mem);
    cr_assert_eq(c.page_size, 65536);
    s_near(c.mem_bw, b.mem_bw, 1e-3, "mem_bw");
    s_near(c.mem_bw_t[1], 2.5e9, 1e-3, "mem_bw.1");
    s_near(c.rtt, 123e-6, 1e-3, "rtt");
    s_near(c.stream[ST_TYPE_Q4_0], 7e9, 1e-3, "stream");
    s_near(c.unpacked[ST_TYPE_Q4_0][2], 3e9, 1e-3, "unpacked");
    cr_assert_eq(c.unpacked[ST_TYPE_Q8_0][0], 0.0, "no unpacked rate: none written");
    s_near(c.matmul[ST_TYPE_Q8_0][2], b.matmul[ST_TYPE_Q8_0][2], 1e-3, "matmul");
    s_near(c.disk_direct, b.disk_direct, 1e-3, "disk");

    const char *bad[] = {"mem_bw 5e9\n",            /* no '=' */
                         "mem_bw = fast\n",         /* not a number */
                         "memory_bw = 5e9\n",       /* unknown key: a typo must not pass */
                         "matmul.q4_0 = 1e9 2e9\n", /* three rates */
                         "matmul.q9_9 = 1 2 3\n",   /* unknown type */
                         "page_size = 12288\n",     /* not a power of two */
                         "page_size = 2048\n",      /* below 4 KiB */
                         "ram = 4G\n"};             /* no bandwidth, no rate: nothing to plan with */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fopen(path, "w");
        fprintf(f, "# a profile\nname = x\n%s", bad[i]);
        if (strncmp(bad[i], "ram", 3)) fprintf(f, "mem_bw = 1e10\nmatmul.q4_0 = 1e9 2e9 3e9\n");
        fclose(f);
        cr_assert_lt(st_board_load(path, &c), 0, "accepted: %s", bad[i]);
    }
    /* the page size: 16 KiB when told, 4 KiB when the file has none */
    for (int told = 0; told < 2; told++) {
        f = fopen(path, "w");
        fprintf(f, "name = x\nmem_bw = 1e10\nmatmul.q4_0 = 1e9 2e9 3e9\n%s", told ? "page_size = 16384\n" : "");
        fclose(f);
        cr_assert_eq(st_board_load(path, &c), 0);
        cr_assert_eq(c.page_size, told ? 16384 : 4096);
    }
    unlink(path);
}

/* The spread keys (slowest over fastest timed block of a rate) are optional:
 * a profile written before them loads as before, with no spread; written ones
 * come back; a spread below 1 or of the wrong arity is refused. */
Test(plan, profile_spread_keys_are_optional) {
    char path[] = "/tmp/st-test-plan-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    /* an older profile, as st-bench wrote them before the spreads */
    fprintf(f, "name = old\nram = 4294967296\nthreads = 1\nmem_bw = 1e10\nmem_bw.1 = 1e10\n"
               "matmul.Q4_0 = 1e10 5e10 8e10\nunpacked.Q4_0 = 9e9 4e10 6e10\nstream.Q4_0 = 9e9\n"
               "disk_direct = 1e9\ndisk_buffered = 5e8\nrtt = 5e-5\nmsg_bps = 2e8\n");
    fclose(f);
    st_board_t b;
    cr_assert_eq(st_board_load(path, &b), 0);
    char what[64] = "x";
    int busy = -1;
    cr_assert_eq(st_board_worst_spread(&b, 0, what, sizeof what, &busy), 0.0, "no spread recorded");
    cr_assert_str_eq(what, "");
    cr_assert_eq(busy, 0);

    /* every spread key, written and read back */
    b.spread.mem_bw_t[1] = 1.25, b.spread.stream[ST_TYPE_Q4_0] = 1.5, b.spread.rtt = 1.125;
    b.spread.msg_bps = 3.5; /* the worst: 1 MiB messages */
    b.spread.matmul[ST_TYPE_Q4_0][0] = 1.01, b.spread.matmul[ST_TYPE_Q4_0][1] = 1.02;
    b.spread.matmul[ST_TYPE_Q4_0][2] = 2.25;
    b.spread.unpacked[ST_TYPE_Q4_0][0] = 1.03, b.spread.unpacked[ST_TYPE_Q4_0][1] = 1.04;
    b.spread.unpacked[ST_TYPE_Q4_0][2] = 1.75;
    f = fopen(path, "w");
    cr_assert_eq(st_board_save(&b, f), 0);
    fclose(f);
    st_board_t c;
    cr_assert_eq(st_board_load(path, &c), 0);
    s_near(c.spread.mem_bw_t[1], 1.25, 1e-3, "spread.mem_bw.1");
    s_near(c.spread.stream[ST_TYPE_Q4_0], 1.5, 1e-3, "spread.stream");
    s_near(c.spread.rtt, 1.125, 1e-3, "spread.rtt");
    s_near(c.spread.msg_bps, 3.5, 1e-3, "spread.msg_bps");
    s_near(c.spread.matmul[ST_TYPE_Q4_0][2], 2.25, 1e-3, "spread.matmul");
    s_near(c.spread.unpacked[ST_TYPE_Q4_0][1], 1.04, 1e-3, "spread.unpacked");
    cr_assert_eq(c.spread.matmul[ST_TYPE_Q8_0][0], 0.0, "no spread for a type not measured");
    /* above 1.5: msg 3.5, matmul@64 2.25, unpacked@64 1.75 (stream's 1.5 is not above) */
    cr_assert_eq(st_board_worst_spread(&c, 0, what, sizeof what, &busy), c.spread.msg_bps);
    cr_assert_str_eq(what, "1 MiB messages");
    cr_assert_eq(busy, 3);
    c.spread.msg_bps = 1;
    s_near(st_board_worst_spread(&c, 0, what, sizeof what, NULL), 2.25, 1e-3, "next worst");
    cr_assert_str_eq(what, "matmul.Q4_0 at 64 tokens");
    /* only the types asked for: without Q4_0, mem_bw.1's 1.25 is the worst */
    s_near(st_board_worst_spread(&c, 1ull << ST_TYPE_Q8_0, what, sizeof what, &busy), 1.25, 1e-3, "Q8_0 only");
    cr_assert_str_eq(what, "memory bandwidth with 1 thread");
    cr_assert_eq(busy, 0);

    const char *bad[] = {"spread.rtt = 0.5\n",             /* faster than the fastest: not a spread */
                         "spread.rtt = 1 2\n",             /* one rate, one spread */
                         "spread.matmul.q4_0 = 1.1 1.2\n", /* three rates */
                         "spread.stream.q9_9 = 1.1\n",     /* unknown type */
                         "spread.mem_bw.0 = 1.1\n",        /* no such thread count */
                         "spread.mem_bw = 1.1\n",          /* which thread count? */
                         "spread.disk_direct = 1.1\n"};    /* not recorded for storage */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fopen(path, "w");
        fprintf(f, "name = x\nmem_bw = 1e10\nmatmul.q4_0 = 1e9 2e9 3e9\n%s", bad[i]);
        fclose(f);
        cr_assert_lt(st_board_load(path, &c), 0, "accepted: %s", bad[i]);
    }
    unlink(path);
}

Test(plan, link_strings) {
    st_link_t l;
    cr_assert(st_link_parse("100mbit:20ms:1%", &l));
    s_near(l.rate, 12.5e6, 1e-12, "rate");
    s_near(l.delay, 0.020, 1e-12, "delay");
    s_near(l.loss, 0.01, 1e-12, "loss");
    cr_assert(st_link_parse("1gbit:0.1ms", &l));
    s_near(l.rate, 125e6, 1e-12, "1 gbit");
    s_near(l.delay, 1e-4, 1e-12, "0.1 ms");
    cr_assert_eq(l.loss, 0.0);
    const char *bad[] = {
        "", "100mbit", "fast:1ms", "100mbit:1parsec", "100mbit:1ms:1%x", "100mbit:1ms:1:2", "100mbit:1ms:60%"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) cr_assert_not(st_link_parse(bad[i], &l), "%s", bad[i]);
}

/* ---- a whole plan, by hand -------------------------------------------------- */

/* 2 layers, 4 experts (2 used), n_embd 1000, expert ffn 500, all Q4_0. Per
 * layer: wq 1000x1000, wk and wv 200x1000, wo 1000x1000, router 4x1000 =
 * 2.404e6 MACs; an expert: gate and up 500x1000, down 1000x500 = 1.5e6; head
 * 10000 x 1000 = 1e7. A token's row to a node: 1000 bytes. */
static void s_tiny_model(st_plan_model_t *m, uint64_t expert_bytes) {
    memset(m, 0, sizeof *m);
    snprintf(m->desc, sizeof m->desc, "hand-made");
    m->n_layer = 2, m->n_expert = 4, m->n_expert_used = 2, m->n_embd = 1000, m->n_ff = 500;
    m->n_vocab = 10000; /* no attention heads: attention over the cache has its own test */
    m->dense_bytes = 1 << 20, m->expert_bytes = 8 * expert_bytes, m->file_bytes = (1 << 20) + 8 * expert_bytes;
    const int64_t dense[5][2] = {{1000, 1000}, {200, 1000}, {200, 1000}, {1000, 1000}, {4, 1000}};
    for (int l = 0; l < 2; l++) {
        m->layer_expert_bytes[l] = expert_bytes;
        for (int k = 0; k < 5; k++)
            m->dense[l][k].type = ST_TYPE_Q4_0, m->dense[l][k].rows = dense[k][0], m->dense[l][k].cols = dense[k][1];
        for (int k = 0; k < 3; k++)
            m->exp[l][k].type = ST_TYPE_Q4_0, m->exp[l][k].rows = k < 2 ? 500 : 1000,
            m->exp[l][k].cols = k < 2 ? 1000 : 500;
    }
    m->head.type = ST_TYPE_Q4_0, m->head.rows = 10000, m->head.cols = 1000;
    m->act_bytes = 1000;
}

/* 1e9 multiply-adds/s at every batch size (time linear in tokens), 1 GB/s
 * messaging, 0.2 ms loopback round trip, 8 GiB RAM, 1 GiB disk. */
static st_board_t s_flat_board(uint64_t mem, double disk_bps) {
    st_board_t b = {.name = "flat", .ram = 8ull << 30, .mem = mem, .mem_bw = 1e9, .disk = 1ull << 30};
    for (int i = 0; i < 3; i++) b.matmul[ST_TYPE_Q4_0][i] = 1e9;
    b.disk_direct = disk_bps, b.rtt = 0.2e-3, b.msg_bps = 1e9, b.net_bps = 1e9;
    cr_assert_eq(st_board_fill(&b), 0);
    return b;
}

Test(plan, one_node_in_ram_by_hand) {
    st_plan_model_t *m = calloc(1, sizeof *m);
    s_tiny_model(m, 1000);
    st_board_t coord = s_flat_board(1ull << 30, 1e8), node = s_flat_board(1ull << 30, 1e8);
    /* link 1e6 B/s (8 Mbit/s), 0.5 ms each way */
    st_plan_params_t p = {&coord, &node, 1, {1e6, 0.5e-3, 0}, .users = 2, .prompt = 3, .n_batch = 2, .n_ctx = 16};
    st_plan_t *pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    cr_assert_eq(pl->nodes[0].experts, 8);
    cr_assert_not(pl->nodes[0].over_budget);
    /* 1 user, per layer: attention 2.404 ms; out 1000 B / 1e6 = 1 ms; the
     * node computes both experts, 2 x 1.5 = 3 ms; back 2 rows x 4000 B / 1e6
     * = 8 ms; round trip 2 x 0.5 + 0.2 = 1.2 ms. Head 10 ms.
     *   coordinator 2 x 2.404 + 10 = 14.808; nodes 6; network 18; round trips 2.4;
     *   total 41.208 ms: 24.267 tok/s */
    s_near(pl->decode1.coord, 14.808 * MS, 1e-9, "coordinator");
    s_near(pl->decode1.node, 6 * MS, 1e-9, "nodes");
    cr_assert_eq(pl->decode1.storage, 0.0);
    cr_assert_eq(node.unpacked[ST_TYPE_Q4_0][0], 0.0, "(the unpacked rates, set below, do not apply here)");
    s_near(pl->decode1.transfer, 18 * MS, 1e-9, "transfer");
    s_near(pl->decode1.latency, 2.4 * MS, 1e-9, "round trips");
    s_near(pl->decode_tps_1, 1 / (41.208 * MS), 1e-9, "decode tok/s");
    /* 2 users: the 2 tokens use 4 x (1 - (1/2)^2) = 3 experts on average,
     * 2 x 2 / 3 tokens each: 1.5 ms x 4/3 = 2 ms each, 6 ms per layer. Per
     * layer: attention 4.808, out 2 ms, back 16 ms, round trip 1.2: 30.008;
     * x 2 + head 20 ms = 80.016 ms for 2 tokens: 24.995 tok/s */
    s_near(pl->decodeN.node, 12 * MS, 1e-9, "nodes, 2 users");
    s_near(pl->decodeN.total, 80.016 * MS, 1e-9, "step, 2 users");
    s_near(pl->decode_tps_n, 2 / (80.016 * MS), 1e-9, "decode tok/s, 2 users");
    /* 3 prompt tokens in chunks of 2: a 2-token step without logits (60.016
     * ms) and a 1-token step with them (41.208 ms): 101.224 ms */
    s_near(pl->ttft_s, 101.224 * MS, 1e-9, "time to first token");
    s_near(pl->prefill_tps, 3 / (101.224 * MS), 1e-9, "prefill tok/s");
    cr_assert_str_eq(pl->bottleneck, "network");
    st_plan_destroy(&pl);
    cr_assert_null(pl);
    /* 1% loss, 1 user: a round trip is 1 ms, a tail-loss probe max(2 ms, 10 ms).
     * Out, 1000 B, one segment (its last): 0.01 x (10 + 1) = 0.11 ms; back,
     * 8000 B, 6 segments: (1 - 0.99^5) x 1 + 0.01 x 11 = 0.0490099 + 0.11 ms;
     * 0.2690099 ms per layer: round trips 2.4 + 0.5380198 = 2.9380198 ms */
    p.link.loss = 0.01;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    s_near(pl->decode1.latency, 2.9380198 * MS, 1e-7, "round trips with loss");
    st_plan_destroy(&pl);
    /* the node holds all its experts: it packs them, and its unpacked rates change nothing */
    for (int i = 0; i < 3; i++) node.unpacked[ST_TYPE_Q4_0][i] = 0.5e9;
    p.link.loss = 0;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    s_near(pl->decode1.node, 6 * MS, 1e-9, "nodes, packed");
    st_plan_destroy(&pl);
    free(m);
}

/* What st-node keeps of its --mem for the tiny model with 1 MB experts, 1 thread (node_mem.h,
 * worked by hand): 512 tokens a request (4 MiB frame / 1000 B rows, at most 512);
 *   receive 4 x (4194304 + 65536) = 17039360, send 3 x 512 x 2 x 1000 x 4 = 12288000,
 *   slack 4194304 + 262144; index 8 keys x (4 + 32) + 8 + 16 busy bytes + one record of
 *   1003520 (1e6 rounded up to 4 KiB) = 1003832; process and compute 64 MiB = 67108864:
 *   101896504 B. One cached expert: 1003520 + a 64-byte entry = 1003584 B. */
#define TINY_FIXED_1MB 101896504ull
#define TINY_ONE_1MB 1003584ull

/* A board whose profile says the machine was busy (a spread above
 * ST_BOARD_BUSY_SPREAD) gets a warning in the plan, once per profile; the
 * spread changes no prediction. */
Test(plan, busy_profile_warns) {
    st_plan_model_t *m = calloc(1, sizeof *m);
    s_tiny_model(m, 1000);
    st_board_t coord = s_flat_board(1ull << 30, 1e8), nodes[2] = {s_flat_board(1ull << 30, 1e8), nodes[0]};
    st_plan_params_t p = {&coord, nodes, 2, {1e6, 0.5e-3, 0}, .users = 1, .prompt = 3, .n_batch = 2, .n_ctx = 16};
    st_plan_t *quiet = st_plan_new(m, &p);
    cr_assert_not_null(quiet);
    cr_assert_eq(quiet->n_warnings, 0);
    /* 1.5x is not above the threshold; 1.6x at one token is */
    for (int i = 0; i < 2; i++) nodes[i].spread.rtt = 1.5, nodes[i].spread.matmul[ST_TYPE_Q4_0][0] = 1.6;
    st_plan_t *pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    cr_assert_eq(pl->n_warnings, 1, "one warning for two nodes of one profile: %d", pl->n_warnings);
    cr_assert_not_null(strstr(pl->warnings[0], "node 0's board flat was profiled on a busy machine (matmul.Q4_0 at 1 "
                                               "token: its timed blocks spread 1.60x)"),
                       "%s", pl->warnings[0]);
    cr_assert_eq(pl->decode_tps_1, quiet->decode_tps_1, "the spread changes no prediction");
    cr_assert_eq(pl->prefill_tps, quiet->prefill_tps);
    st_plan_destroy(&pl);
    /* the coordinator's too, for a type the model uses (all Q4_0, no attention heads: no F16) */
    coord.spread.stream[ST_TYPE_F16] = 5;
    pl = st_plan_new(m, &p);
    cr_assert_eq(pl->n_warnings, 1, "F16 is not used");
    st_plan_destroy(&pl);
    coord.spread.stream[ST_TYPE_Q4_0] = 4;
    pl = st_plan_new(m, &p);
    cr_assert_eq(pl->n_warnings, 2);
    cr_assert_not_null(strstr(pl->warnings[0], "the coordinator's board flat was profiled on a busy machine "
                                               "(stream.Q4_0: its timed blocks spread 4.00x)"),
                       "%s", pl->warnings[0]);
    st_plan_destroy(&pl);
    /* nodes of different profiles each warn */
    nodes[1].spread.matmul[ST_TYPE_Q4_0][0] = 1.7;
    pl = st_plan_new(m, &p);
    cr_assert_eq(pl->n_warnings, 3);
    cr_assert_not_null(strstr(pl->warnings[2], "node 1's board flat"), "%s", pl->warnings[2]);
    st_plan_destroy(&pl);
    st_plan_destroy(&quiet);
    free(m);
}
Test(plan, a_node_over_its_budget_streams_by_hand) {
    st_plan_model_t *m = calloc(1, sizeof *m);
    s_tiny_model(m, 1000000); /* 1 MB experts: 8 MB on the node */
    /* room for 4 experts after the node's own bytes: half of each layer in RAM (2 of 4), half
     * read at 1e8 B/s: 10 ms each */
    st_board_t coord = s_flat_board(1ull << 30, 1e8), node = s_flat_board(TINY_FIXED_1MB + 4 * TINY_ONE_1MB, 1e8);
    st_plan_params_t p = {&coord, &node, 1, {1e6, 0.5e-3, 0}, .users = 1, .prompt = 1, .n_batch = 1, .n_ctx = 16};
    st_plan_t *pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    cr_assert(pl->nodes[0].over_budget);
    cr_assert_eq(pl->nodes[0].ram, 4000000);
    cr_assert_eq(pl->nodes[0].stream, 4000000);
    /* the reads start before attention: hidden 2.404 + 1 (out) + 0.5 (delay) = 3.904 ms.
     * Pairs of the 4 experts: both in RAM (1 of 6): 3 ms; one read (4 of 6):
     * 10 - 3.904 + 3 = 9.096; two reads (1 of 6): 20 - 3.904 + 3 = 19.096.
     * E = (3 + 4 x 9.096 + 19.096) / 6 = 9.746667 ms per layer: compute 3, storage 6.746667 */
    s_near(pl->decode1.node, 6 * MS, 1e-9, "compute");
    s_near(pl->decode1.storage, 2 * 6.746667 * MS, 1e-6, "storage");
    cr_assert_str_eq(pl->bottleneck, "network");
    st_plan_destroy(&pl);
    /* not all its experts fit: the node keeps the file's layout, computed at its unpacked rates
     * (0.5e9 at every batch): 3 ms an expert, 6 ms a layer for the two used, 12 ms in all */
    for (int i = 0; i < 3; i++) node.unpacked[ST_TYPE_Q4_0][i] = 0.5e9;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    s_near(pl->decode1.node, 12 * MS, 1e-9, "compute, unpacked");
    cr_assert_gt(pl->n_warnings, 0, "no warning for a node over its budget");
    st_plan_destroy(&pl);
    free(m);
}

/* The board's page size sets an expert's cost: the tiny model's 1 MB experts are records of
 * 1003520 B (245 blocks of 4 KiB); on 16 KiB pages 62 pages, 1015808 B, + 64 = 1015872 B. A
 * node whose --mem holds its own bytes and 8 experts at 4 KiB pages (8 x 1003584 B):
 *   4 KiB: room 8, all 8 in RAM; 16 KiB: 8028672 / 1015872 = 7.90: 7 in RAM, 1 MB streamed. */
Test(plan, a_16k_page_kernel_holds_fewer_experts_by_hand) {
    st_plan_model_t *m = calloc(1, sizeof *m);
    s_tiny_model(m, 1000000);
    st_board_t coord = s_flat_board(1ull << 30, 1e8), node = s_flat_board(TINY_FIXED_1MB + 8 * TINY_ONE_1MB, 1e8);
    st_plan_params_t p = {&coord, &node, 1, {1e6, 0.5e-3, 0}, .users = 1, .prompt = 1, .n_batch = 1, .n_ctx = 16};
    cr_assert_eq(node.page_size, 4096, "a board without page_size: 4 KiB");
    st_plan_t *pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    cr_assert_eq(pl->nodes[0].fixed, TINY_FIXED_1MB);
    cr_assert_eq(pl->nodes[0].room, 8);
    cr_assert_not(pl->nodes[0].over_budget);
    cr_assert_eq(pl->nodes[0].stream, 0);
    st_plan_destroy(&pl);
    node.page_size = 16384;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    cr_assert_eq(pl->nodes[0].room, 7);
    cr_assert(pl->nodes[0].over_budget);
    cr_assert_eq(pl->nodes[0].ram, 7000000);
    cr_assert_eq(pl->nodes[0].stream, 1000000);
    st_plan_destroy(&pl);
    free(m);
}

/* Issue 18's options on the one-node case above (1 user: 41.208 ms; per
 * layer attention 2.404, out 1 ms, node 3 ms, back 8 ms, round trip 1.2 ms;
 * head 10 ms on the coordinator). */
Test(plan, head_wire_and_overlap_options_by_hand) {
    st_plan_model_t *m = calloc(1, sizeof *m);
    s_tiny_model(m, 1000);
    m->head_bytes = 10000 * 560; /* 560 B a row (the planner takes the bytes as given): 5.6 MB */
    m->dense_bytes += m->head_bytes;
    st_board_t coord = s_flat_board(1ull << 30, 1e8), node = s_flat_board(1ull << 30, 1e8);
    st_plan_params_t p = {&coord, &node, 1, {1e6, 0.5e-3, 0}, .users = 2, .prompt = 1, .n_batch = 1, .n_ctx = 16};
    st_plan_t *local = st_plan_new(m, &p);
    cr_assert_not_null(local);

    /* Sharded head, one node: its slice is the whole head, 5.6 MB of its --mem and none of the
     * coordinator's. The head is one more round trip per drawn token: 1000 f32 out (4000 B,
     * 4 ms), 1e7 MACs on the node (10 ms), 64 candidates of 8 B, a 4 B maximum and two 8 B
     * sums back (532 B, 0.532 ms), 1.2 ms.
     *   coordinator 4.808; nodes 6 + 10 = 16; network 18 + 4.532 = 22.532; round trips 3.6:
     *   46.94 ms. 2 users: both draws in one round, 8000 B out (8 ms), the node's matmul of 2
     *   rows (its rate at 1 and 8 rows, 10 and 80 ms, interpolated: 20 ms), 1064 B back
     *   (1.064 ms), 1.2 ms: 30.264 ms after the layers' 2 x (4.808 + 2 + 6 + 16 + 1.2) =
     *   60.016 ms: 90.28 ms */
    cr_assert_not(local->head_sharded);
    p.head = ST_PLAN_HEAD_SHARDED;
    st_plan_t *pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    cr_assert(pl->head_sharded);
    cr_assert_eq(pl->nodes[0].head_slices, 1);
    cr_assert_eq(pl->nodes[0].head_bytes, 5600000);
    cr_assert_eq(local->coord_ram - pl->coord_ram, 5600000, "the coordinator still holds the head");
    s_near(pl->decode1.coord, 4.808 * MS, 1e-9, "coordinator, head sharded");
    s_near(pl->decode1.node, 16 * MS, 1e-9, "nodes, head sharded");
    s_near(pl->decode1.transfer, 22.532 * MS, 1e-9, "transfer, head sharded");
    s_near(pl->decode1.latency, 3.6 * MS, 1e-9, "round trips, head sharded");
    s_near(pl->decode1.total, 46.94 * MS, 1e-9, "step, head sharded");
    s_near(pl->decodeN.total, 90.28 * MS, 1e-9, "2 users, head sharded: one round for both draws");
    st_plan_destroy(&pl);
    /* auto: sharded when the node's --mem (1 GiB) is at least 4 slices (22.4 MB): yes; with a
     * head of 5600 B rows (56 MB) and --mem 200 MB, no (the coordinator's rule, setup.c) */
    p.head = ST_PLAN_HEAD_AUTO;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    cr_assert(pl->head_sharded);
    st_plan_destroy(&pl);
    node.mem = 200000000;
    m->head_bytes = 10000 * 5600;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    cr_assert_not(pl->head_sharded);
    cr_assert_eq(pl->nodes[0].head_bytes, 0);
    s_near(pl->decode1.total, 41.208 * MS, 1e-9, "step, head auto -> local");
    st_plan_destroy(&pl);
    node.mem = 1ull << 30;
    m->head_bytes = 10000 * 560;
    p.head = ST_PLAN_HEAD_LOCAL;

    /* Compact results: the node holds all 4 experts, so every token uses it: out 1000 B of row
     * + 2 pairs x 4 B of weights = 1008 B (1.008 ms); back one 4000 B row (4 ms) instead of
     * two. Transfer 2 x 5.008 = 10.016 ms: 14.808 + 6 + 10.016 + 2.4 = 33.224 ms.
     * compact16: back 1000 x 2 + 4 = 2004 B (2.004 ms): 2 x 3.012 = 6.024: 29.232 ms */
    p.wire = ST_PLAN_WIRE_COMPACT;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    s_near(pl->decode1.transfer, 10.016 * MS, 1e-9, "transfer, compact");
    s_near(pl->decode1.total, 33.224 * MS, 1e-9, "step, compact");
    st_plan_destroy(&pl);
    p.wire = ST_PLAN_WIRE_COMPACT16;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    s_near(pl->decode1.total, 29.232 * MS, 1e-9, "step, compact16");
    st_plan_destroy(&pl);
    p.wire = ST_PLAN_WIRE_EXACT;

    /* Overlap, 2 users: two micro-batches of 1 token, each a 1-user layer (coordinator 2.404,
     * node 3, transfer 9, round trip 1.2: 15.604 ms). A layer takes the largest of: the
     * coordinator on both 4.808, the wire 18, the node 6, one half's own 15.604: 18 ms, of
     * 31.208 of parts (13.208 hidden). Two layers and the head for 2 tokens (20 ms): 56 ms,
     * against 80.016 without overlap; one user is not split (41.208). */
    p.overlap = true;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    s_near(pl->decodeN.total, 56 * MS, 1e-9, "step, 2 users overlapped");
    s_near(pl->decodeN.overlap, 2 * 13.208 * MS, 1e-9, "hidden by overlap");
    s_near(pl->decode_tps_n, 2 / (56 * MS), 1e-9, "decode tok/s, 2 users overlapped");
    s_near(pl->decode1.total, 41.208 * MS, 1e-9, "1 user, overlap on");
    cr_assert_eq(pl->decode1.overlap, 0.0);
    st_plan_destroy(&pl);
    st_plan_destroy(&local);
    free(m);
}

/* The head's slices as placement.c cuts them, over 3 nodes: bounds at floor(10000 k / 3) rounded
 * down to 16 rows: 0, 3328, 6656, 10000; slices of 3328, 3328 and 3344 rows (560 B each:
 * 1863680, 1863680 and 1872640 B). */
Test(plan, head_slices_and_replicas_as_the_coordinator_places_them) {
    st_plan_model_t *m = calloc(1, sizeof *m);
    s_tiny_model(m, 1000000); /* 1 MB experts: 8 MB in all */
    m->head_bytes = 10000 * 560;
    m->dense_bytes += m->head_bytes;
    st_board_t coord = s_flat_board(1ull << 30, 1e8), nodes[3];
    /* --mem 4 MB beside the node's own bytes: after its slice a node keeps 2136320 B (nodes 0,
     * 1) or 2127360 B (node 2) for experts. The placement shares the 8 experts by --mem less the
     * slice, nearly equal: 2.67, 2.67 and 2.66: 2 each, the remaining 2 to the largest
     * remainders (nodes 0 and 1): 3, 3, 2. Room for 2136320 / 1003584 = 2 experts (2127360 /
     * 1003584: 2 on node 2): node 0 holds 2 of its 3 MB in RAM and streams 1 MB; node 2's fit. */
    for (int i = 0; i < 3; i++) nodes[i] = s_flat_board(TINY_FIXED_1MB + 4000000, 1e8);
    st_plan_params_t p = {&coord,           nodes,       3,
                          {1e6, 0.5e-3, 0}, .users = 1,  .prompt = 1,
                          .n_batch = 1,     .n_ctx = 16, .head = ST_PLAN_HEAD_SHARDED};
    st_plan_t *pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    const uint64_t slice[3] = {1863680, 1863680, 1872640}, expert_bytes[3] = {3000000, 3000000, 2000000};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(pl->nodes[i].head_slices, 1, "node %d", i);
        cr_assert_eq(pl->nodes[i].head_bytes, slice[i], "node %d", i);
        cr_assert_eq(pl->nodes[i].bytes, expert_bytes[i], "node %d", i);
    }
    cr_assert_eq(pl->nodes[0].room, 2);
    cr_assert_eq(pl->nodes[0].ram, 2000000);
    cr_assert_eq(pl->nodes[0].stream, 1000000);
    cr_assert(pl->nodes[0].over_budget);
    cr_assert_eq(pl->nodes[2].ram, 2000000);
    cr_assert_not(pl->nodes[2].over_budget);
    /* the head per token: the slowest slice, 3344 x 1000 MACs = 3.344 ms; 4000 B out to each
     * of 3 nodes through the coordinator's port (12 ms) and 532 B back from each (1.596 ms) */
    st_plan_params_t q = p;
    q.head = ST_PLAN_HEAD_LOCAL;
    st_plan_t *local = st_plan_new(m, &q);
    cr_assert_not_null(local);
    s_near(pl->decode1.node - local->decode1.node, 3.344 * MS, 1e-6, "the slowest slice");
    s_near(pl->decode1.transfer - local->decode1.transfer, 13.596 * MS, 1e-6, "the head's transfer");
    s_near(pl->decode1.latency - local->decode1.latency, 1.2 * MS, 1e-9, "one more round trip");
    s_near(local->decode1.coord - pl->decode1.coord, 10 * MS, 1e-9, "the head off the coordinator");
    st_plan_destroy(&local);
    st_plan_destroy(&pl);

    /* --replication 2 with room (1 GiB each): every slice gets a second copy on another node,
     * the fewest slices first, so each node ends with 2 slices; the head's time is the
     * primaries' (replicas answer only for a failed node) */
    for (int i = 0; i < 3; i++) nodes[i].mem = 1ull << 30;
    p.replication = 2;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    uint64_t all = 0;
    int experts = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(pl->nodes[i].head_slices, 2, "node %d", i);
        cr_assert_gt(pl->nodes[i].head_bytes, slice[i], "node %d holds a replica beside its slice", i);
        all += pl->nodes[i].head_bytes;
        experts += pl->nodes[i].experts;
    }
    cr_assert_eq(all, 2 * 5600000, "two copies of the head");
    cr_assert_eq(experts, 16, "two copies of the 8 experts");
    p.replication = 1;
    q = p;
    st_plan_t *one = st_plan_new(m, &q);
    cr_assert_not_null(one);
    s_near(pl->decode1.total, one->decode1.total, 1e-12, "replicas do not change the step (primaries)");
    st_plan_destroy(&one);
    st_plan_destroy(&pl);
    free(m);
}

/* The 21B cut to 8 layers on 2 nodes of --mem 1 GiB (bench/plan-check's case): 64 experts of
 * 3317760 B a layer (top 6), n_embd 2560, Q8_0 activation rows of 2720 B, a head of 151936
 * rows of 1440 B sharded in 2 slices of 75968 rows (109393920 B), 1 thread. By hand
 * (node_mem.h): 512 tokens a request (4194304 / 2720 = 1542, at most 512);
 *   receive 4 x (4194304 + 65536) = 17039360; send 3 x 512 x 6 x 2560 x 4 = 94371840;
 *   slack 4194304 + 262144; index 512 x 36 + 512 + 16 + 3317760 (810 pages) = 3336720;
 *   process and compute 67108864: 186313232 B fixed. One expert 3317760 + 64 = 3317824 B.
 *   Room: (1073741824 - 186313232 - 109393920) / 3317824 = 234.5: 234 of the 256 each node
 *   holds (32 a layer). 234 x 3317760 = 776355840 B in RAM, 22 x 3317760 = 72990720 B read on
 *   demand (st-node logged room for 242 with its measured 39.4 MB instead of 64 MiB). The
 *   old rule (--mem less the head slice, 964347904 B, against 849346560 B) said all fit. */
Test(plan, node_fixed_bytes_and_head_slice_leave_room_for_fewer_experts) {
    st_plan_model_t *m = calloc(1, sizeof *m);
    s_tiny_model(m, 3317760);
    m->n_layer = 8, m->n_expert = 64, m->n_expert_used = 6, m->n_embd = 2560, m->n_ff = 768;
    m->n_vocab = 151936, m->act_bytes = 2720;
    for (int l = 0; l < 8; l++) {
        m->layer_expert_bytes[l] = 3317760;
        for (int k = 0; k < 3; k++)
            m->exp[l][k].type = ST_TYPE_Q4_0, m->exp[l][k].rows = k < 2 ? 768 : 2560,
            m->exp[l][k].cols = k < 2 ? 2560 : 768;
    }
    m->expert_bytes = 512ull * 3317760;
    m->head.rows = 151936, m->head.cols = 2560, m->head_bytes = 151936ull * 1440;
    st_board_t coord = s_flat_board(1ull << 30, 1e8),
               nodes[2] = {s_flat_board(1ull << 30, 1e8), s_flat_board(1ull << 30, 1e8)};
    st_plan_params_t p = {&coord,           nodes,       2,
                          {125e6, 1e-4, 0}, .users = 1,  .prompt = 1,
                          .n_batch = 1,     .n_ctx = 16, .head = ST_PLAN_HEAD_SHARDED};
    st_plan_t *pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    for (int i = 0; i < 2; i++) {
        const st_plan_node_t *n = &pl->nodes[i];
        cr_assert_eq(n->head_bytes, 109393920, "node %d", i);
        cr_assert_eq(n->experts, 256, "node %d", i);
        cr_assert_eq(n->fixed, 186313232, "node %d", i);
        cr_assert_eq(n->room, 234, "node %d", i);
        cr_assert(n->over_budget, "node %d", i);
        cr_assert_eq(n->ram, 776355840, "node %d", i);
        cr_assert_eq(n->stream, 72990720, "node %d", i);
        s_near(n->ram_fraction, 234.0 / 256, 1e-12, "node's share in RAM");
    }
    cr_assert_gt(pl->decode1.storage, 0, "the experts not in RAM are read when used");
    cr_assert_eq(pl->n_warnings, 1);
    cr_assert(strstr(pl->warnings[0], "all nodes hold more experts than their budget: up to 9%"), "%s",
              pl->warnings[0]);
    st_plan_destroy(&pl);
    /* --mem that cannot hold the node's own bytes, its slice and one expert: no plan */
    nodes[0].mem = nodes[1].mem = 186313232 + 109393920 + 3317824 - 1;
    cr_assert_null(st_plan_new(m, &p));
    nodes[0].mem = nodes[1].mem = 186313232 + 109393920 + 3317824;
    pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    cr_assert_eq(pl->nodes[0].room, 1);
    st_plan_destroy(&pl);
    free(m);
}

/* Attention over the KV cache on the coordinator: 4 query heads of 100 over 1 KV head, an f16
 * cache; the board's f16 rate at 1 token is set to 1e8 multiply-adds/s (1e9 B/s of bandwidth).
 * A position costs a dot and an axpy of 100 per query head: 800 multiply-adds, 8 us (its 400 B
 * of K and V take 0.4 us: the compute is slower). Layer 1 has a sliding window of 50. */
Test(plan, attention_over_the_kv_cache_by_hand) {
    st_plan_model_t *m = calloc(1, sizeof *m);
    s_tiny_model(m, 1000);
    st_board_t coord = s_flat_board(1ull << 30, 1e8), node = s_flat_board(1ull << 30, 1e8);
    st_plan_params_t p = {&coord, &node, 1, {1e6, 0.5e-3, 0}, .users = 2, .prompt = 99, .n_batch = 64, .n_ctx = 128};
    st_plan_t *none = st_plan_new(m, &p); /* no heads: no attention */
    cr_assert_not_null(none);
    m->n_head = 4, m->n_head_kv = 1, m->head_dim = 100, m->n_swa = 50, m->is_swa[1] = true;
    coord.matmul[ST_TYPE_F16][0] = 1e8;
    st_plan_t *pl = st_plan_new(m, &p);
    cr_assert_not_null(pl);
    /* decode after the 99-token prompt: layer 0 attends over 100 positions (0.8 ms), layer 1
     * over its window of 50 (0.4 ms): 1.2 ms a token; 2 users 2.4 ms */
    s_near(pl->decode1.coord - none->decode1.coord, 1.2 * MS, 1e-9, "1 user");
    s_near(pl->decodeN.coord - none->decodeN.coord, 2.4 * MS, 1e-9, "2 users");
    /* the prompt in chunks of 64 and 35. Chunk 1 (positions 0..63): layer 0 sums 1..64 = 2080
     * positions, layer 1 1..50 and 14 x 50 = 1975; chunk 2 (64..98): layer 0 sums 65..99 =
     * 2870, layer 1 35 x 50 = 1750. 8675 positions x 8 us = 69.4 ms */
    s_near(pl->prefill.coord - none->prefill.coord, 69.4 * MS, 1e-9, "prefill");
    st_plan_destroy(&pl);
    st_plan_destroy(&none);
    free(m);
}

Test(plan, impossible_setups_get_no_prediction) {
    st_plan_model_t *m = calloc(1, sizeof *m);
    s_tiny_model(m, 1000000);
    st_board_t coord = s_flat_board(1ull << 30, 1e8), node = s_flat_board(1ull << 30, 1e8);
    st_plan_params_t p = {&coord, &node, 1, {1e6, 0.5e-3, 0}, .users = 1, .prompt = 1, .n_batch = 1, .n_ctx = 16};
    node.disk = 4000000; /* 8 MB of experts on a 4 MB store */
    cr_assert_null(st_plan_new(m, &p));
    node.disk = 1ull << 30;
    coord.ram = 1 << 20; /* the dense weights alone are 1 MiB */
    cr_assert_null(st_plan_new(m, &p));
    free(m);
}

/* ---- st-plan ---------------------------------------------------------------- */

static const char *s_model(void) {
    static char path[1024];
    const char *const args[] = {"--type",         "q4_0", "--hidden",     "256", "--layers", "4", "--experts", "16",
                                "--experts-used", "4",    "--expert-ffn", "256", "--seed",   "3", NULL};
    cr_assert_not_null(st_test_model(args, path, sizeof path));
    return path;
}

/* Runs st-plan with args; stdout into out, stderr into err; its exit status. */
static int s_plan(char *out, size_t cap, char *err, size_t ecap, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int s_plan(char *out, size_t cap, char *err, size_t ecap, const char *fmt, ...) {
    char args[3000], cmd[4096], errpath[] = "/tmp/st-test-plan-err-XXXXXX";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    int fd = mkstemp(errpath);
    cr_assert_geq(fd, 0);
    close(fd);
    snprintf(cmd, sizeof cmd, "%s'%s' %s 2>'%s'", st_test_run_prefix(), ST_PLAN, args, errpath);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    char *e = st_file_read(errpath, 0, NULL);
    snprintf(err, ecap, "%s", e ? e : "");
    free(e);
    unlink(errpath);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(plan, st_plan_json_describes_the_placement_and_the_prediction, .timeout = 120) {
    static char out[1 << 16], err[1 << 14];
    const char *model = s_model();
    int st = s_plan(out, sizeof out, err, sizeof err, "-m '%s' --boards pi5-2g:3 --coordinator pi5-4g --users 4 --json",
                    model);
    cr_assert_eq(st, 0, "st-plan failed:\n%s", err);
    cJSON *o = cJSON_Parse(out);
    cr_assert_not_null(o, "not JSON: %s", out);
    cJSON *nodes = cJSON_GetObjectItem(o, "nodes");
    cr_assert_eq(cJSON_GetArraySize(nodes), 3);
    int experts = 0;
    for (int i = 0; i < 3; i++) {
        cJSON *n = cJSON_GetArrayItem(nodes, i);
        cr_assert_str_eq(cJSON_GetObjectItem(n, "board")->valuestring, "pi5-2g");
        experts += cJSON_GetObjectItem(n, "experts")->valueint;
        cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(n, "over_budget")), "a small model fits in RAM");
    }
    cr_assert_eq(experts, 4 * 16, "every expert of the 4 layers x 16 placed once");
    const double tps = cJSON_GetObjectItem(o, "predicted_decode_tps")->valuedouble;
    const double step = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "decode_step"), "total_s")->valuedouble;
    cr_assert_gt(tps, 0);
    s_near(tps, 1 / step, 1e-9, "decode tok/s is one over the step");
    const double tps4 = cJSON_GetObjectItem(o, "predicted_decode_tps_users")->valuedouble;
    const double step4 = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "decode_step_users"), "total_s")->valuedouble;
    s_near(tps4, 4 / step4, 1e-9, "4 users share a step");
    cr_assert_gt(tps4, tps, "4 users get more tokens per second in all than one");
    cr_assert_gt(cJSON_GetObjectItem(o, "predicted_prefill_tps")->valuedouble, 0);
    cr_assert_gt(cJSON_GetObjectItem(o, "predicted_ttft_s")->valuedouble, 0);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "coordinator"), "board")->valuestring, "pi5-4g");
    cr_assert_not_null(cJSON_GetObjectItem(o, "bottleneck")->valuestring);
    cr_assert_gt(cJSON_GetArraySize(cJSON_GetObjectItem(o, "would_help")), 0);
    cJSON_Delete(o);
}

/* st-plan reads the same prediction from a profile with or without spreads,
 * and a busy one adds its warning to the text and the JSON, nothing else. */
Test(plan, st_plan_with_spread_keys_predicts_as_before, .timeout = 120) {
    static char old[1 << 15], quiet[1 << 15], busy[1 << 15], err[1 << 14];
    char dir[] = "/tmp/st-test-plan-spread-XXXXXX", prof[128];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(prof, sizeof prof, "%s/b.prof", dir);
    const char *base = "name = vm-1t\nram = 4294967296\nthreads = 1\nmem_bw = 5.6e9\nmem_bw.1 = 5.6e9\n"
                       "matmul.F32 = 2.5e9 1e10 8.3e9\nmatmul.F16 = 4.5e9 1.4e10 1e10\n"
                       "matmul.Q4_0 = 1.27e10 7.9e10 1.36e11\nunpacked.Q4_0 = 1.2e10 6.3e10 9.1e10\n"
                       "stream.F32 = 1.3e9\nstream.F16 = 2.9e9\nstream.Q4_0 = 8.1e9\n"
                       "disk_direct = 1.7e9\ndisk_buffered = 9.4e8\nrtt = 5.5e-5\nmsg_bps = 1.5e8\n";
    const char *const spreads[3] = {"", "spread.matmul.Q4_0 = 1.05 1.04 1.03\nspread.rtt = 1.2\n",
                                    "spread.matmul.Q4_0 = 1.05 2.5 1.03\nspread.rtt = 1.2\n"};
    char *const outs[3] = {old, quiet, busy};
    const char *model = s_model();
    for (int json = 0; json < 2; json++)
        for (int i = 0; i < 3; i++) {
            FILE *f = fopen(prof, "w");
            fprintf(f, "%s%s", base, spreads[i]);
            fclose(f);
            cr_assert_eq(s_plan(outs[i], sizeof old, err, sizeof err, "-m '%s' --boards '%s:2' --coordinator '%s'%s",
                                model, prof, prof, json ? " --json" : ""),
                         0, "%s", err);
            /* no warning but the busy one */
            cr_assert_eq(strstr(outs[i], "busy machine") != NULL, i == 2, "%s", outs[i]);
        }
    cr_assert_str_eq(old, quiet, "quiet spreads change nothing");
    cJSON *o = cJSON_Parse(old), *b = cJSON_Parse(busy);
    cr_assert(o && b);
    const char *keys[] = {"predicted_decode_tps", "predicted_prefill_tps", "predicted_ttft_s"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        cr_assert_not_null(cJSON_GetObjectItem(o, keys[k]), "%s", keys[k]);
        cr_assert_eq(cJSON_GetObjectItem(o, keys[k])->valuedouble, cJSON_GetObjectItem(b, keys[k])->valuedouble, "%s",
                     keys[k]);
    }
    cJSON *w = cJSON_GetObjectItem(b, "warnings");
    /* the coordinator's board and the nodes' are the same profile: one warning each */
    const int n = cJSON_GetArraySize(w);
    cr_assert_eq(n, cJSON_GetArraySize(cJSON_GetObjectItem(o, "warnings")) + 2);
    cr_assert_not_null(strstr(cJSON_GetArrayItem(w, n - 2)->valuestring,
                              "the coordinator's board vm-1t was profiled on a busy machine (matmul.Q4_0 at 8 tokens: "
                              "its timed blocks spread 2.50x)"));
    cr_assert_not_null(strstr(cJSON_GetArrayItem(w, n - 1)->valuestring, "node 0's board vm-1t was profiled"));
    cJSON_Delete(o);
    cJSON_Delete(b);
    st_test_system("rm -rf '%s'", dir);
}

Test(plan, st_plan_errors_are_clear, .timeout = 120) {
    static char out[1 << 16], err[1 << 14];
    const char *model = s_model();
    cr_assert_eq(s_plan(out, sizeof out, err, sizeof err, "--help"), 0);
    cr_assert_not_null(strstr(out, "--boards"));
    /* an unknown board */
    cr_assert_neq(s_plan(out, sizeof out, err, sizeof err, "-m '%s' --boards pi9-2g:4", model), 0);
    cr_assert_not_null(strstr(err, "unknown board 'pi9-2g'"), "%s", err);
    cr_assert_eq(out[0], 0, "a prediction was printed: %s", out);
    /* a malformed cluster file: the line is named */
    char path[] = "/tmp/st-test-plan-cluster-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "# nodes\ncoordinator pi5-8g\npi5-2g 2\npi5-4g mem=lots\n");
    fclose(f);
    cr_assert_neq(s_plan(out, sizeof out, err, sizeof err, "-m '%s' --cluster '%s'", model, path), 0);
    cr_assert_not_null(strstr(err, ":4: cannot read 'mem=lots'"), "%s", err);
    cr_assert_eq(out[0], 0);
    /* an impossible setup: the experts fit on no store */
    f = fopen(path, "w");
    fprintf(f, "pi5-2g 2 disk=64K\n");
    fclose(f);
    cr_assert_neq(s_plan(out, sizeof out, err, sizeof err, "-m '%s' --cluster '%s'", model, path), 0);
    cr_assert_not_null(strstr(err, "do not fit"), "%s", err);
    cr_assert_eq(out[0], 0);
    /* the same file made possible: a prediction */
    f = fopen(path, "w");
    fprintf(f, "coordinator pi4-4g\npi5-2g 2 disk=1G\n");
    fclose(f);
    cr_assert_eq(s_plan(out, sizeof out, err, sizeof err, "-m '%s' --cluster '%s'", model, path), 0, "%s", err);
    cr_assert_not_null(strstr(out, "decode: 1 user"), "%s", out);
    cr_assert_not_null(strstr(out, "coordinator (pi4-4g)"), "%s", out);
    unlink(path);
    /* bad flags */
    cr_assert_eq(s_plan(out, sizeof out, err, sizeof err, "-m '%s' --boards pi5-2g:4 --link fast", model), 2);
    cr_assert_eq(s_plan(out, sizeof out, err, sizeof err, "-m '%s'", model), 2);
    cr_assert_not_null(strstr(err, "--boards or --cluster"), "%s", err);
    cr_assert_eq(s_plan(out, sizeof out, err, sizeof err, "-m '%s' --boards pi5-2g:4 --wire f8", model), 2);
    cr_assert_not_null(strstr(err, "invalid value 'f8' for --wire"), "%s", err);
    cr_assert_eq(s_plan(out, sizeof out, err, sizeof err, "-m '%s' --boards pi5-2g:4 --head nodes", model), 2);
    cr_assert_eq(s_plan(out, sizeof out, err, sizeof err, "-m '%s' --boards pi5-2g:4 --overlap yes", model), 2);
    /* the options named in the report */
    cr_assert_eq(s_plan(out, sizeof out, err, sizeof err,
                        "-m '%s' --boards pi5-2g:4 --head sharded --wire compact16 --overlap on", model),
                 0, "%s", err);
    cr_assert_not_null(strstr(out, "options: head sharded over the nodes, results compact16, micro-batches overlapped"),
                       "%s", out);
    cr_assert_not_null(strstr(out, "hidden by overlap"), "%s", out);
}

/* st-bench --profile measures this machine into a file st-plan takes as a
 * board. The rates depend on the machine and its load, so only what holds
 * anywhere, loaded or not, is checked: every figure present and positive
 * (no ratio between rates: on a busy machine a 64-token call is preempted
 * where a 1-token call is not), a round trip under a second. */
Test(plan, st_bench_profile_is_a_board_for_st_plan, .timeout = 600) {
    static char out[1 << 16], err[1 << 14];
    char dir[] = "/tmp/st-test-profile-XXXXXX", prof[128];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(prof, sizeof prof, "%s/this.prof", dir);
    cr_assert_eq(st_test_system("%s'%s/st-bench' --profile '%s' -t 1 --block 1M --types q4_0 > /dev/null 2> '%s/log'",
                                st_test_run_prefix(), ST_BINARY_DIR, prof, dir),
                 0, "st-bench --profile failed");
    /* --types q4_0: only Q4_0 measured (st-plan stands it in for the rest) */
    cr_assert_eq(st_test_system("grep -q '^matmul.Q4_0 = ' '%s' && ! grep -q '^matmul.Q6_K' '%s'", prof, prof), 0);
    cr_assert_eq(st_test_system("%s'%s/st-bench' --profile '%s' --types q4_0,q9_9 > /dev/null 2>&1",
                                st_test_run_prefix(), ST_BINARY_DIR, prof),
                 2, "an unknown type is refused");
    st_board_t b;
    cr_assert_eq(st_board_load(prof, &b), 0);
    cr_assert_gt(b.ram, 0);
    cr_assert_eq(b.threads, 1);
    cr_assert_gt(b.mem_bw_t[1], 0);
    for (int i = 0; i < 3; i++) cr_assert_gt(b.matmul[ST_TYPE_Q4_0][i], 0);
    cr_assert_gt(b.stream[ST_TYPE_Q4_0], 0);
    cr_assert_gt(b.disk_direct, 0);
    cr_assert_gt(b.disk_buffered, 0);
    cr_assert(b.rtt > 0 && b.rtt < 1, "round trip %g s", b.rtt);
    cr_assert_gt(b.msg_bps, 0);
    /* every rate but storage records its spread, >= 1 by definition (the board's load, not checked) */
    for (int i = 0; i < 3; i++) cr_assert_geq(b.spread.matmul[ST_TYPE_Q4_0][i], 1.0);
    cr_assert_geq(b.spread.mem_bw_t[1], 1.0);
    cr_assert_geq(b.spread.stream[ST_TYPE_Q4_0], 1.0);
    cr_assert_geq(b.spread.rtt, 1.0);
    cr_assert_geq(b.spread.msg_bps, 1.0);
    const char *model = s_model();
    cr_assert_eq(s_plan(out, sizeof out, err, sizeof err, "-m '%s' --boards '%s:2' --coordinator '%s' --json", model,
                        prof, prof),
                 0, "%s", err);
    cJSON *o = cJSON_Parse(out);
    cr_assert_not_null(o);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "nodes"), 0), "board")->valuestring,
                     b.name);
    cr_assert_gt(cJSON_GetObjectItem(o, "predicted_decode_tps")->valuedouble, 0);
    cJSON_Delete(o);
    st_test_system("rm -rf '%s'", dir);
}
