/* Fault injection (common/alloc.h): st-fault-walk fails each allocation of a
 * step in turn, one run per allocation, and checks that the failure was
 * reported with an error line (or recovered from with the same logits), that
 * the heap is back where it was, and (in the sanitizer build, where
 * LeakSanitizer checks the program at exit) that nothing leaked. Here: the
 * walk's exit status, its summary, and that the seam did fail something.
 *
 * The remote backend is walked whole: st-coordinator against a real st-node,
 * with ST_TEST_ALLOC_FAIL=N failing its N-th allocation (setup, the cluster's
 * messages, the remote MoE step, generation). Each run must end with the
 * reference output or with an error line and a nonzero status: no signal, no
 * hang, no sanitizer report (LeakSanitizer checks the coordinator at exit in
 * the sanitizer build), and the node keeps serving. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "testutil.h"

/* Runs the walk over mode on a tiny Q4_0 model (packed by the resident and
 * streaming loaders); asserts it passed and failed at least min_alloc
 * allocations with a reported error. */
static void s_walk(const char *mode, long min_alloc) {
    char model[1024];
    cr_assert_not_null(st_test_model(ST_SYNTH("--type", "q4_0"), model, sizeof model), "st-synth failed");
    char out[256], err[256];
    snprintf(out, sizeof out, "/tmp/st-faults-%s-%d.out", mode, (int)getpid());
    snprintf(err, sizeof err, "/tmp/st-faults-%s-%d.err", mode, (int)getpid());
    /* no per-thread cache: what it holds would count as in use in the heap check */
    const int rc = st_test_system("GLIBC_TUNABLES=glibc.malloc.tcache_count=0 %s%s/st-fault-walk %s '%s' >'%s' 2>'%s'",
                                  st_test_run_prefix(), ST_BINARY_DIR, mode, model, out, err);
    char *o = st_file_read(out, 0, NULL), *e = st_file_read(err, 0, NULL);
    cr_assert_not_null(o);
    cr_assert_not_null(e);
    const char *tail = strlen(e) > 2000 ? e + strlen(e) - 2000 : e;
    cr_assert_eq(rc, 0, "st-fault-walk %s exited %d:\n%s\nstderr ends:\n%s", mode, rc, o, tail);
    long n_alloc = 0, n_reported = 0, n_recovered = 0;
    char name[32];
    cr_assert_eq(sscanf(o, "%31[a-z]: %ld allocations; failing each: %ld reported, %ld recovered", name, &n_alloc,
                        &n_reported, &n_recovered),
                 4, "summary: %s", o);
    cr_assert_str_eq(name, mode);
    cr_assert_eq(n_reported + n_recovered, n_alloc, "%s", o);
    cr_assert_geq(n_reported, min_alloc, "the seam failed too little: %s", o);
    cr_log_info("%s (%s)", o, model);
    free(o);
    free(e);
    remove(out);
    remove(err);
}

/* st_model_load: GGUF index, hash tables, tokenizer, layer table. */
TestSuite(faults, .fini = st_test_cleanup); /* a failed remote_backend leaves no node nor directory */

Test(faults, model_load, .timeout = 600) { s_walk("load", 10); }

/* st_model_load_resident: the same plus the packing of Q4_0 matrices. */
Test(faults, model_load_resident, .timeout = 600) { s_walk("resident", 10); }

/* st_model_load_streaming: the coordinator's load (dense matrices packed). */
Test(faults, model_load_streaming, .timeout = 600) { s_walk("streaming", 10); }

/* st_ctx_new (scratch buffers, thread pool) and st_kv_new. */
Test(faults, context_and_cache, .timeout = 600) { s_walk("ctx", 5); }

/* Coordinator allocations walked at most: every one up to this many, then
 * evenly spaced ones (a run costs a model load and a connection). */
#define REMOTE_WALK_MAX 160

static long s_alloc_count(const char *err) {
    const char *p = strstr(err, "st_alloc: ");
    long n = -1;
    cr_assert(p && sscanf(p, "st_alloc: %ld allocations", &n) == 1, "no allocation count:\n%s", err);
    return n;
}

Test(faults, remote_backend, .timeout = 900) {
    if (*st_test_run_prefix()) cr_skip_test("under an emulator: 160 coordinator runs would take an hour");
    char model[1024];
    cr_assert_not_null(st_test_model(ST_SYNTH("--type", "q4_0"), model, sizeof model), "st-synth failed");
    st_test_cluster_t c;
    st_test_cluster_start(&c, "faults", false, 1);
    char nodes[512], args[2048], env[64];
    st_test_cluster_flags(&c, nodes, sizeof nodes);
    snprintf(args, sizeof args, "-m '%s' %s --state-dir '%s' --quiet-push -p 'Hello there' -n 3 --temp 0 --json -t 1",
             model, nodes, c.dir);
    st_test_run_t ref = st_test_run(c.dir, "ref", "ST_TEST_ALLOC_FAIL=1000000000", "st-coordinator", args, 120);
    cr_assert_eq(ref.status, 0, "the reference run failed:\n%s", ref.err);
    const long n_alloc = s_alloc_count(ref.err);
    cr_assert_gt(n_alloc, 0);
    const long step = n_alloc > REMOTE_WALK_MAX ? (n_alloc + REMOTE_WALK_MAX - 1) / REMOTE_WALK_MAX : 1;
    long runs = 0, failed = 0, recovered = 0;
    for (long n = 1; n <= n_alloc; n += step, runs++) {
        snprintf(env, sizeof env, "ST_TEST_ALLOC_FAIL=%ld", n);
        st_test_run_t r = st_test_run(c.dir, "walk", env, "st-coordinator", args, 120);
        cr_assert_neq(r.status, 124, "allocation %ld of %ld failing: the coordinator hung", n, n_alloc);
        cr_assert_lt(r.status, 128, "allocation %ld of %ld failing: killed by signal %d:\n%s", n, n_alloc,
                     r.status - 128, r.err);
        cr_assert_null(strstr(r.err, "Sanitizer"), "allocation %ld of %ld failing:\n%s", n, n_alloc, r.err);
        cr_assert_null(strstr(r.err, "runtime error"), "allocation %ld of %ld failing:\n%s", n, n_alloc, r.err);
        if (r.status == 0) {
            cr_assert_str_eq(r.out, ref.out, "allocation %ld of %ld failing: recovered with another output", n,
                             n_alloc);
            recovered++;
        } else {
            cr_assert_not_null(strstr(r.err, "error"), "allocation %ld of %ld failing: status %d without an error:\n%s",
                               n, n_alloc, r.status, r.err);
            failed++;
        }
        st_test_run_free(&r);
    }
    /* the node went through all of that and still serves */
    cr_assert_eq(kill(c.nodes[0].p.pid, 0), 0, "the node died");
    st_test_run_t last = st_test_run(c.dir, "last", NULL, "st-coordinator", args, 120);
    cr_assert_eq(last.status, 0, "%s", last.err);
    cr_assert_str_eq(last.out, ref.out);
    cr_log_info("remote: %ld allocations, %ld walked: %ld reported, %ld recovered with the same output", n_alloc, runs,
                failed, recovered);
    cr_assert_gt(failed, runs / 2, "the seam failed too little");
    st_test_run_free(&last);
    st_test_run_free(&ref);
    st_test_cluster_destroy(&c);
}
