/* Test helpers shared by the Criterion suites: synthetic models generated on
 * demand with st-synth (cached), JSON golden files, file reading, and the
 * processes the integration tests start (st-node, st-coordinator): spawned
 * so that they die with the test, waited for with deadlines, reaped by the
 * fixture's fini even when a test fails midway. */
#ifndef ST_TESTUTIL_H
#define ST_TESTUTIL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "clock.h"
#include "file.h"
#include "forward.h"
#include "model.h"

/* Directory for generated test models: $ST_MODEL_CACHE or ~/.cache/st-models. */
const char *st_test_model_dir(void);

/* Path of a model made by `st-synth ARGS...` (NULL-terminated argv without
 * --out), generating it first if the cache lacks it. The file name is derived
 * from the arguments. Returns a static buffer per call (copy it), or NULL when
 * st-synth failed (the reason is printed). */
const char *st_test_model(const char *const *synth_args, char *path, size_t cap);

/* st-synth arguments in place, NULL-terminated: ST_SYNTH("--type", "q4_0"). */
#define ST_SYNTH(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Paths of the two models most tests use, made on first use; each fails the
 * test when st-synth fails. The tiny one: `st-synth --type f32` (the demo
 * shape). The cluster one: Q4_0, 512 wide, 4 layers of 16 experts (4 used),
 * seed 5, big enough that shares and pushes take real messages. */
const char *st_test_tiny_model(void);
const char *st_test_cluster_model(void);

/* The model `st-synth ARGS...` makes (st_test_model), loaded; fails the test
 * when it cannot be made or loaded. The caller destroys it. */
st_model_t *st_test_load(const char *const *synth_args);
/* The model file at path, loaded; fails the test when it cannot be. */
st_model_t *st_test_load_path(const char *path);
/* A context on m: n_ctx positions, batches of n_batch, 2 threads, the other
 * parameters st_ctx_default_params's; fails the test when it cannot be made. */
st_ctx_t *st_test_ctx(const st_model_t *m, int n_ctx, int n_batch);

/* llama-quantize from the oracle's tools ($LLAMA_BIN, else
 * ~/.cache/st-oracle/llama.cpp/build/bin), or NULL where it is absent (users
 * without ../shared: callers skip). */
const char *st_test_llama_quantize(void);

/* Path of `st-synth ARGS...` requantized by llama-quantize to type ("Q4_K_M",
 * "Q4_1"...), made once and cached beside the synthetic model. false when
 * llama-quantize is absent (skip the test); asserts when a step fails. */
bool st_test_quantized_model(const char *const *synth_args, const char *type, char *path, size_t cap);

/* Parsed JSON file (NULL if unreadable or malformed). */
cJSON *st_test_read_json(const char *path);

/* What goes before one of our programs in a shell command: "" natively, the
 * quoted emulator and a space when a cross-built test runs under one
 * (ST_TEST_EMULATOR, set by tests/CMakeLists.txt; see util/emulated_exec.c). */
const char *st_test_run_prefix(void);

/* Runs a shell command, returns its exit status (-1 if it could not run). */
int st_test_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- processes ---------------------------------------------------------- */

/* Forks and execs argv (NULL-terminated, argv[0] a path). Its stdout goes to
 * a pipe whose read end is stored in *out_fd (out_fd NULL: inherited), its
 * stderr is appended to log (NULL: inherited). The child gets death_sig when
 * the test process dies (PR_SET_PDEATHSIG) and is remembered for
 * st_test_kill_all. Returns its pid (the test fails when fork fails). */
pid_t st_test_spawn(const char *const *argv, int *out_fd, const char *log, int death_sig);
/* Reads a server's stdout (out_fd, closed after) until its line "serving on
 * http://127.0.0.1:PORT/" and returns PORT; fails the test when no such line
 * comes within wait_ms or the server exits first (log: its stderr, named). */
int st_test_serving_port(int out_fd, int wait_ms, const char *log);
/* Waits up to ms for pid; its status as a shell reports it (exit code, or
 * 128 + signal), or -1 when it is still running at the deadline. */
int st_test_wait(pid_t pid, int ms);
/* Sends sig, waits up to ms, then SIGKILLs; returns the status as st_test_wait. */
int st_test_stop(pid_t pid, int sig, int ms);
/* Stops every spawned process still running (SIGTERM, 2 s, SIGKILL): for a
 * suite's .fini, so a failed test leaves nothing behind. */
void st_test_kill_all(void);

/* ---- temporary directories ----------------------------------------------- */

/* Makes /tmp/st-test-TAG.pPID-XXXXXX (mkdtemp; PID: this process) into out
 * and remembers it for st_test_cleanup; fails the test when it cannot. First
 * removes the st-test directories of processes that are gone: a test killed
 * at its timeout runs no .fini (its children die with it, PR_SET_PDEATHSIG). */
void st_test_tmpdir(char *out, size_t cap, const char *tag);
/* Removes a directory of st_test_tmpdir with everything in it, and forgets it. */
void st_test_tmpdir_remove(const char *dir);
/* st_test_kill_all, then removes the directories of st_test_tmpdir still
 * there (a test that failed before removing its own): a suite's .fini. */
void st_test_cleanup(void);

/* A TCP port on 127.0.0.1 reserved for the rest of this process: a socket bound there with
 * SO_REUSEADDR, never listening, kept open. The kernel hands it to no bind to port 0 and no
 * outgoing connection on the machine (ctest runs suites side by side), while a program's own bind
 * and listen there (libzmq and libmicrohttpd set SO_REUSEADDR) succeed beside it, again after a
 * restart. A port found free and closed again could be taken by anyone before it is bound. */
int st_test_port_hold(void);

/* An st-node process. */
typedef struct {
    pid_t pid;
    int out;       /* its stdout, kept open until st_test_node_stop */
    char url[128]; /* from "listening on URL" */
    char pub[41];  /* from "node public key KEY" (CURVE), else "" */
} st_test_node_t;

/* Starts argv (st-node, or a wrapper running it) with stderr appended to
 * log and waits up to ms for its "listening on URL" line. 0 when listening;
 * the node's exit status (> 0) when it exited first. A node still silent at
 * the deadline fails the test. "--listen tcp://127.0.0.1:*" in argv becomes
 * a port of st_test_port_hold, so that the node can be started again on its
 * URL (a restart, a reboot) however long it was gone. */
int st_test_node_start(st_test_node_t *nd, const char *const *argv, const char *log, int ms);
/* Sends sig and waits (10 s, then SIGKILL); returns its exit status as
 * st_test_wait. Nothing to do (0) when it is not running. */
int st_test_node_stop(st_test_node_t *nd, int sig);

/* Polls path until it contains text or ms pass; whether it does. */
bool st_test_file_has(const char *path, const char *text, int ms);
/* N from a coordinator's "pushed (N shard bytes)" line; -1 when absent. */
long st_test_pushed(const char *err);
/* N of a coordinator's --stats "N slices answered by a replica" (the sharded
 * head's slices whose primary failed; asserts the line is there). */
unsigned long long st_test_head_by_replica(const char *err);
/* N and B of a coordinator's "N rejoins of nodes that were down (B shard bytes
 * sent to them)" summary (asserts it is there). */
unsigned long long st_test_rejoins(const char *err, unsigned long long *bytes);
/* Round trips of node k in the last decode token's --stats line (asserts). */
unsigned long long st_test_last_rt(const char *err, int k);

/* An st.proto Envelope written out by hand, so that its protocol version can be one this build
 * does not speak: fields 1 version, 2 type, 3 request id, 4 software, each value below 128 (one
 * byte varints), no body (a reader checks the version first). Its length in buf (>= 136 B). */
size_t st_test_foreign_envelope(uint8_t *buf, uint32_t version, uint32_t type, uint32_t rid, const char *software);

#endif
