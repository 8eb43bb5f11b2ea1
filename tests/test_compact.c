/* Compact results (st-coordinator --wire compact | compact16) against st-run,
 * the single-process reference, with real st-node processes on loopback.
 *
 * A compact node returns one partial sum per (token, node) instead of one
 * vector per (token, expert): the sum is grouped otherwise (compact), and
 * rounded to f16 with a power-of-two scale per row (compact16). Neither gives
 * st-run's bits, so the logits are held to a bound argued from that rounding:
 *  - f16 keeps 11 significant bits of each row scaled so that its largest
 *    value lies in [2^14, 2^15): every value moves by at most 2^-11 of the
 *    row's largest, so a layer's MoE output moves by at most ~2^-11 of its
 *    scale. The residual stream carries each layer's error to the final norm
 *    and the output head is linear in it: over L layers the logits move by at
 *    most ~L x 2^-11 of their largest magnitude, as long as nothing amplifies
 *    it. Hence the model here: f32 weights (no 8-bit activation rounding, which
 *    turns any float difference into jumps of ~1 on random models, see
 *    test_model_oracle), an f32 KV cache (KV below) and 4 layers.
 *  - compact (f32) adds a token's top-k products in another order: each of
 *    the k-1 additions rounds by 2^-24, so L x k x 2^-24.
 * Greedy tokens may part from st-run's only where st-run's top two logits are
 * closer than twice that bound (the only place an error within the bound can
 * swap them); where they part, st-run is run on the common prefix to check its
 * gap there. A node killed mid-answer (replication 2) still gives every token,
 * parting from st-run only at such near-ties. And the bytes: compact16 brings
 * back fewer bytes per decode token than compact, which brings back fewer than
 * exact ("B per token" of --stats).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "testutil.h"

#define BIN ST_BINARY_DIR
#define PROMPT "The quick brown fox jumps over the lazy dog"
#define N_LAYERS 4
#define TOP_K 4
#define N_PREDICT 24
/* st-run's default f16 KV cache would round each K and V value to 11 bits: a value moved across a
 * rounding boundary by the smallest difference becomes a 2^-11 step (f32 compact logits then part by
 * ~1e-4, not ~1e-7). Both sides keep f32 K and V, so what is measured is the wire's own rounding. */
#define KV "--kv-type f32"
#define N_PREDICT_S "24"

typedef st_test_cluster_t cluster_t;
typedef st_test_run_t run_t;

TestSuite(compact, .fini = st_test_cleanup, .timeout = 300);

/* f32 weights, 4 layers, 16 experts top-4 (a node gets several pairs of a token), rows of 256 */
static const char *s_model(void) {
    static char path[1024];
    const char *args[] = {"--type",    "f32", "--hidden",       "256", "--expert-ffn", "256", "--layers", "4",
                          "--experts", "16",  "--experts-used", "4",   "--seed",       "11",  NULL};
    cr_assert_not_null(st_test_model(args, path, sizeof path), "st-synth failed");
    return path;
}

/* The bound on |logit - st-run's| as a fraction of the row's largest |logit| (see the top). */
static double s_bound(const char *wire) {
    return !strcmp(wire, "compact16") ? N_LAYERS * ldexp(1, -11) : N_LAYERS * TOP_K * ldexp(1, -24);
}

static run_t s_run(const char *dir, const char *tag, const char *model, const char *nodes, const char *extra) {
    char args[4096];
    if (nodes)
        snprintf(args, sizeof args, "-m '%s' --nodes %s --insecure --state-dir '%s' --quiet-push -t 1 " KV " %s", model,
                 nodes, dir, extra);
    else
        snprintf(args, sizeof args, "-m '%s' -t 1 " KV " %s", model, extra);
    run_t r = st_test_run(dir, tag, NULL, nodes ? "st-coordinator" : "st-run", args, 120);
    cr_assert_eq(r.status, 0, "%s failed:\n%s", tag, r.err);
    return r;
}

/* Largest |a - b| over each row of n_vocab logits, against bound x the row's largest |a|. */
static void s_within(const run_t *ref, const run_t *got, double bound, const char *what) {
    cr_assert_not_null(got->logits, "%s wrote no logits", what);
    cr_assert_eq(got->logits_len, ref->logits_len, "%s: logits size", what);
    const float *a = (const float *)ref->logits, *b = (const float *)got->logits;
    const size_t n = ref->logits_len / sizeof(float), V = 151669; /* the synthetic models' Qwen3 vocabulary */
    cr_assert_eq(n % V, 0, "%s: %zu logits", what, n);
    double worst = 0;
    for (size_t r = 0; r < n / V; r++) {
        double scale = 0, d = 0;
        for (size_t i = r * V; i < (r + 1) * V; i++) {
            scale = fmax(scale, fabs(a[i]));
            d = fmax(d, fabs((double)a[i] - b[i]));
        }
        cr_assert_leq(d, bound * scale, "%s: row %zu off by %g, bound %g x %g", what, r, d, bound, scale);
        worst = fmax(worst, d / scale);
    }
    cr_log_info("%s: logits off by at most %.3g of the row's largest (bound %.3g)", what, worst, bound);
}

/* "B per token" of --stats: the bytes nodes sent back per decode token. */
static double s_bytes_in(const char *err) {
    const char *p = strstr(err, " B per token (");
    double in = -1;
    cr_assert_not_null(p, "no decode byte count:\n%s", err);
    cr_assert_eq(sscanf(strchr(p, ',') + 1, " %lf in)", &in), 1, "%.200s", p);
    return in;
}

/* One int array of st-run's --json output. */
static int s_tokens(const char *json, const char *key, int *out, int cap) {
    cJSON *o = cJSON_Parse(json);
    cr_assert_not_null(o, "not JSON: %s", json);
    const cJSON *a = cJSON_GetObjectItem(o, key);
    int n = 0;
    for (const cJSON *it = a ? a->child : NULL; it && n < cap; it = it->next) out[n++] = it->valueint;
    cJSON_Delete(o);
    return n;
}

/* The greedy tokens of got (compact) against want (st-run): where they first part, st-run's top two
 * logits after the common prefix must be within twice the bound. Returns where they part (-1: never). */
static int s_part_only_at_near_ties(const char *dir, const char *model, const char *want, const char *got,
                                    double bound) {
    int p[256], a[N_PREDICT], b[N_PREDICT];
    const int np = s_tokens(want, "prompt_tokens", p, 200), na = s_tokens(want, "generated_tokens", a, N_PREDICT);
    cr_assert_eq(s_tokens(got, "generated_tokens", b, N_PREDICT), na, "not as many tokens as st-run");
    int at = 0;
    while (at < na && a[at] == b[at]) at++;
    if (at == na) return -1;
    char ids[4096] = "", args[4200];
    size_t len = 0;
    for (int i = 0; i < np + at; i++)
        len += (size_t)snprintf(ids + len, sizeof ids - len, "%s%d", i ? "," : "", i < np ? p[i] : a[i - np]);
    snprintf(args, sizeof args, "--tokens %s -n 0 --logits-out @LOGITS", ids);
    run_t r = s_run(dir, "at-part", model, NULL, args);
    const size_t V = 151669;
    const float *row = (const float *)r.logits + (r.logits_len / sizeof(float) - V);
    float top = -INFINITY, second = -INFINITY, scale = 0;
    for (size_t i = 0; i < V; i++) {
        scale = fmaxf(scale, fabsf(row[i]));
        if (row[i] > top)
            second = top, top = row[i];
        else if (row[i] > second)
            second = row[i];
    }
    cr_assert_leq(top - second, 2 * bound * scale, "tokens part at %d where st-run's top-2 gap is %g (bound %g)", at,
                  top - second, 2 * bound * scale);
    cr_log_info("tokens part at %d, st-run's top-2 gap %g there (at most %g allowed)", at, top - second,
                2 * bound * scale);
    st_test_run_free(&r);
    return at;
}

/* One test per node count: each is 7 runs of the model, and under qemu on a
 * loaded machine the three together came near the suite's timeout. */
static void s_logits_and_bytes_on(int n) {
    const char *model = s_model();
    char dir[256];
    st_test_tmpdir(dir, sizeof dir, "compact");
    run_t ref = s_run(dir, "ref", model, NULL, "-p '" PROMPT "' -n 0 --logits-out @LOGITS");
    const char *modes[] = {"exact", "compact", "compact16"};
    cluster_t c;
    st_test_cluster_start(&c, "compact", false, n);
    char nodes[1024], what[96], extra[256];
    st_test_cluster_urls(&c, nodes, sizeof nodes);
    double in[3];
    for (int m = 0; m < 3; m++) {
        snprintf(extra, sizeof extra, "--wire %s -p '" PROMPT "' -n 0 --logits-out @LOGITS", modes[m]);
        run_t r = s_run(c.dir, modes[m], model, nodes, extra);
        snprintf(what, sizeof what, "--wire %s on %d node(s)", modes[m], n);
        if (m == 0)
            cr_assert_eq(memcmp(r.logits, ref.logits, ref.logits_len), 0, "%s: not st-run's bits", what);
        else
            s_within(&ref, &r, s_bound(modes[m]), what);
        st_test_run_free(&r);
        /* decode bytes: a few greedy tokens */
        snprintf(extra, sizeof extra, "--wire %s -p '" PROMPT "' -n 4 --temp 0 --stats", modes[m]);
        r = s_run(c.dir, "bytes", model, nodes, extra);
        in[m] = s_bytes_in(r.err);
        st_test_run_free(&r);
    }
    cr_log_info("%d node(s): %.0f, %.0f, %.0f B back per decode token (exact, compact, compact16)", n, in[0], in[1],
                in[2]);
    /* a row per involved node instead of one per pair; an f16 row is half an f32 row plus its scale */
    cr_assert_lt(in[1], in[0], "%d node(s): compact %g B, exact %g B", n, in[1], in[0]);
    cr_assert_lt(in[2], 0.6 * in[1], "%d node(s): compact16 %g B, compact %g B", n, in[2], in[1]);
    st_test_cluster_destroy(&c);
    st_test_run_free(&ref);
    st_test_tmpdir_remove(dir);
}

Test(compact, logits_within_the_rounding_bound_and_fewer_bytes_on_1_node) { s_logits_and_bytes_on(1); }
Test(compact, logits_within_the_rounding_bound_and_fewer_bytes_on_2_nodes) { s_logits_and_bytes_on(2); }
Test(compact, logits_within_the_rounding_bound_and_fewer_bytes_on_3_nodes) { s_logits_and_bytes_on(3); }

Test(compact, greedy_tokens_part_from_st_run_only_at_near_ties) {
    const char *model = s_model();
    cluster_t c;
    st_test_cluster_start(&c, "compact-greedy", false, 3);
    char nodes[1024], extra[256];
    st_test_cluster_urls(&c, nodes, sizeof nodes);
    const char *gen = "-p '" PROMPT "' -n " N_PREDICT_S " --temp 0 --json";
    run_t ref = s_run(c.dir, "ref", model, NULL, gen);
    for (int m = 0; m < 2; m++) {
        const char *mode = m ? "compact16" : "compact";
        snprintf(extra, sizeof extra, "--wire %s %s", mode, gen);
        run_t r = s_run(c.dir, mode, model, nodes, extra);
        s_part_only_at_near_ties(c.dir, model, ref.out, r.out, s_bound(mode));
        st_test_run_free(&r);
    }
    st_test_run_free(&ref);
    st_test_cluster_destroy(&c);
}

/* st-coordinator --wire compact16 with replication 2 on c's nodes, generating N_PREDICT tokens;
 * node `kill_node` gets SIGKILL once decode token 8 is printed (the coordinator stopped meanwhile). */
static run_t s_run_killing(cluster_t *c, const char *model, int kill_node, bool *killed_mid) {
    char nodes[1024], cmd[4096], out[300], err[300];
    st_test_cluster_urls(c, nodes, sizeof nodes);
    snprintf(out, sizeof out, "%s/kill.out", c->dir);
    snprintf(err, sizeof err, "%s/kill.err", c->dir);
    snprintf(cmd, sizeof cmd,
             "exec %s'%s/st-coordinator' -m '%s' --nodes %s --insecure --replication 2 --state-dir '%s' --quiet-push "
             "--stats --timeout-ms 5000 --wire compact16 " KV " -p '%s' -n %d --temp 0 --json -t 1 > '%s' 2> '%s'",
             st_test_run_prefix(), BIN, model, nodes, c->dir, PROMPT, N_PREDICT, out, err);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    pid_t pid = st_test_spawn(argv, NULL, NULL, SIGKILL);
    const double deadline = st_now_ms() + 120000;
    *killed_mid = false;
    for (;;) {
        char *e = st_file_read(err, 0, NULL);
        const bool seen = e && strstr(e, "stats: token 8:");
        free(e);
        if (seen) {
            kill(pid, SIGSTOP);
            e = st_file_read(err, 0, NULL);
            char last[32];
            snprintf(last, sizeof last, "stats: token %d:", N_PREDICT - 1);
            *killed_mid = e && !strstr(e, last);
            free(e);
            st_test_node_stop(&c->nodes[kill_node].p, SIGKILL);
            kill(pid, SIGCONT);
            break;
        }
        cr_assert_lt(st_now_ms(), deadline, "the coordinator did not reach decode token 8");
        if (st_test_wait(pid, 0) >= 0) cr_assert_fail("the coordinator ended before decode token 8");
        poll(NULL, 0, 1); /* polling a file for a line, bounded by the deadline */
    }
    int st = st_test_wait(pid, (int)(deadline - st_now_ms()));
    if (st < 0) st_test_stop(pid, SIGKILL, 5000);
    run_t r = {.status = st, .out = st_file_read(out, 0, NULL), .err = st_file_read(err, 0, NULL)};
    cr_assert_not_null(r.out);
    cr_assert_not_null(r.err);
    cr_assert_eq(st, 0, "the coordinator failed:\n%s", r.err);
    return r;
}

Test(compact, node_killed_mid_answer_is_replaced_and_tokens_part_only_at_near_ties) {
    const char *model = s_model();
    cluster_t c;
    st_test_cluster_start(&c, "compact-kill", false, 3);
    run_t ref = s_run(c.dir, "ref", model, NULL, "-p '" PROMPT "' -n " N_PREDICT_S " --temp 0 --json");
    bool mid;
    run_t r = s_run_killing(&c, model, 1, &mid);
    cr_assert(mid, "the generation was over before the node was killed");
    cr_assert_not_null(strstr(r.err, "is down"), "the dead node was not marked down:\n%s", r.err);
    unsigned long long resent = 0, fallback = 0;
    const char *p = strstr(r.err, " computed here (fallback), ");
    cr_assert(p && sscanf(p, " computed here (fallback), %llu re-sent", &resent) == 1, "no summary:\n%s", r.err);
    while (p > r.err && p[-1] != ' ') p--;
    cr_assert(sscanf(p, "%llu computed here", &fallback) == 1, "no summary:\n%s", r.err);
    /* the replicas took its pairs: re-sent, or (when the sharded head's step saw it die first, between two
     * tokens) sent there from the start; none computed here */
    cr_assert(resent > 0 || fallback == 0, "the replicas did not take the dead node's pairs:\n%s", r.err);
    s_part_only_at_near_ties(c.dir, model, ref.out, r.out, s_bound("compact16"));
    free(r.out), free(r.err);
    st_test_run_free(&ref);
    st_test_cluster_destroy(&c);
}
