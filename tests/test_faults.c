/* Fault injection (common/alloc.h): st-fault-walk fails each allocation of a
 * step in turn, one run per allocation, and checks that the failure was
 * reported with an error line (or recovered from with the same logits), that
 * the heap is back where it was, and (in the sanitizer build, where
 * LeakSanitizer checks the program at exit) that nothing leaked. Here: the
 * walk's exit status, its summary, and that the seam did fail something. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define SYNTH(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Runs the walk over mode on a tiny Q4_0 model (packed by the resident and
 * streaming loaders); asserts it passed and failed at least min_alloc
 * allocations with a reported error. */
static void s_walk(const char *mode, long min_alloc) {
    char model[1024];
    cr_assert_not_null(st_test_model(SYNTH("--type", "q4_0"), model, sizeof model), "st-synth failed");
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
Test(faults, model_load, .timeout = 600) { s_walk("load", 10); }

/* st_model_load_resident: the same plus the packing of Q4_0 matrices. */
Test(faults, model_load_resident, .timeout = 600) { s_walk("resident", 10); }

/* st_model_load_streaming: the coordinator's load (dense matrices packed). */
Test(faults, model_load_streaming, .timeout = 600) { s_walk("streaming", 10); }

/* st_ctx_new (scratch buffers, thread pool) and st_kv_new. */
Test(faults, context_and_cache, .timeout = 600) { s_walk("ctx", 5); }
