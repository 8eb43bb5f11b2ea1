/* st-run as a user runs it: flags, outputs, exit codes.
 *
 * Expected ids and text come from llama.cpp through the reference oracle, on
 * the tiny F32 model (st-synth --type f32 == make-smallthinker.mjs --type f32):
 *   node oracle.mjs --model tiny-f32.gguf --prompt "hi there" --chat --n 4
 *   -> prompt_tokens [151644,872,198,6023,1052,151645,198,151644,77091,198]
 *      generated_tokens [151571,83683,29083,82747], text "𝖖 inconvenient (# moderators"
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define ST_RUN ST_BINARY_DIR "/st-run"

/* Runs cmd, captures stdout into out (NUL-terminated), returns the exit status. */
static int s_run(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int s_run(char *out, size_t cap, const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void s_assert_ids(cJSON *arr, const int *want, int n, const char *what) {
    cr_assert_eq(cJSON_GetArraySize(arr), n, "%s: %d ids, want %d", what, cJSON_GetArraySize(arr), n);
    for (int i = 0; i < n; i++) cr_assert_eq((int)cJSON_GetArrayItem(arr, i)->valuedouble, want[i], "%s[%d]", what, i);
}

Test(cli, help_exits_zero_and_lists_the_interface) {
    static char out[16384];
    cr_assert_eq(s_run(out, sizeof out, "%s%s --help", st_test_run_prefix(), ST_RUN), 0);
    const char *flags[] = {"-m", "-p",     "-n",       "--chat",       "--temp",    "--top-k", "--top-p", "--seed",
                           "-t", "--json", "--tokens", "--logits-out", "--kv-type", "--ctx",   "--help"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        cr_expect(strstr(out, flags[i]), "--help does not mention %s", flags[i]);
}

Test(cli, wrong_flags_fail_with_a_message) {
    static char out[4096];
    cr_assert_eq(s_run(out, sizeof out, "%s%s --bogus 2>&1", st_test_run_prefix(), ST_RUN), 2);
    cr_assert(strstr(out, "--bogus"), "message names the flag: %s", out);
    cr_assert_eq(s_run(out, sizeof out, "%s%s -m x.gguf -p hi -n -3 2>&1", st_test_run_prefix(), ST_RUN), 2);
    cr_assert_eq(s_run(out, sizeof out, "%s%s -m x.gguf 2>&1", st_test_run_prefix(), ST_RUN), 2, "no prompt");
    cr_assert_eq(s_run(out, sizeof out, "%s%s -m x.gguf -p hi --kv-type q4 2>&1", st_test_run_prefix(), ST_RUN), 2);
}

Test(cli, missing_or_broken_model_fails_cleanly) {
    static char out[4096];
    int rc = s_run(out, sizeof out, "%s%s -m /nonexistent/model.gguf -p hi 2>&1", st_test_run_prefix(), ST_RUN);
    cr_assert(rc != 0 && rc != -1, "exit %d", rc);
    cr_assert(strstr(out, "/nonexistent/model.gguf"), "message names the file: %s", out);
    char broken[64]; /* this process's own: another build's test_cli may run at the same time */
    snprintf(broken, sizeof broken, "/tmp/st-cli-broken-%d.gguf", (int)getpid());
    FILE *f = fopen(broken, "wb");
    cr_assert_not_null(f);
    fputs("GGUF this is not a model", f);
    fclose(f);
    rc = s_run(out, sizeof out, "%s%s -m %s -p hi 2>&1", st_test_run_prefix(), ST_RUN, broken);
    remove(broken);
    cr_assert(rc != 0 && rc != -1, "exit %d", rc);
}

Test(cli, json_chat_greedy_matches_llama_cpp) {
    static char out[65536];
    cr_assert_eq(s_run(out, sizeof out, "%s%s -m '%s' -p 'hi there' --chat -n 4 --temp 0 --json -t 2 2>/dev/null",
                       st_test_run_prefix(), ST_RUN, st_test_tiny_model()),
                 0);
    cJSON *j = cJSON_Parse(out);
    cr_assert_not_null(j, "not JSON: %s", out);
    const int prompt[] = {151644, 872, 198, 6023, 1052, 151645, 198, 151644, 77091, 198};
    const int gen[] = {151571, 83683, 29083, 82747};
    s_assert_ids(cJSON_GetObjectItem(j, "prompt_tokens"), prompt, 10, "prompt_tokens");
    s_assert_ids(cJSON_GetObjectItem(j, "generated_tokens"), gen, 4, "generated_tokens");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "text")->valuestring, "𝖖 inconvenient (# moderators");
    cJSON_Delete(j);
}

Test(cli, streamed_text_equals_json_text) {
    static char out[65536];
    cr_assert_eq(s_run(out, sizeof out, "%s%s -m '%s' -p 'hi there' --chat -n 4 --temp 0 -t 2 2>/dev/null",
                       st_test_run_prefix(), ST_RUN, st_test_tiny_model()),
                 0);
    cr_assert_str_eq(out, "𝖖 inconvenient (# moderators\n");
}

Test(cli, n0_json_prints_only_the_prompt_ids) {
    static char out[65536];
    cr_assert_eq(s_run(out, sizeof out, "%s%s -m '%s' -p 'hi there' --chat -n 0 --json 2>/dev/null",
                       st_test_run_prefix(), ST_RUN, st_test_tiny_model()),
                 0);
    cJSON *j = cJSON_Parse(out);
    cr_assert_not_null(j);
    const int prompt[] = {151644, 872, 198, 6023, 1052, 151645, 198, 151644, 77091, 198};
    s_assert_ids(cJSON_GetObjectItem(j, "prompt_tokens"), prompt, 10, "prompt_tokens");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "generated_tokens")), 0);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "text")->valuestring, "");
    cJSON_Delete(j);
    /* the empty prompt: no tokens, nothing to run, still valid JSON */
    cr_assert_eq(s_run(out, sizeof out, "%s%s -m '%s' -p '' -n 0 --json 2>/dev/null", st_test_run_prefix(), ST_RUN,
                       st_test_tiny_model()),
                 0);
    j = cJSON_Parse(out);
    cr_assert_not_null(j);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "prompt_tokens")), 0);
    cJSON_Delete(j);
}

Test(cli, logits_out_has_one_row_per_prompt_position) {
    static char out[4096];
    char file[64]; /* this process's own: another build's test_cli may run at the same time */
    snprintf(file, sizeof file, "/tmp/st-cli-logits-%d.bin", (int)getpid());
    cr_assert_eq(s_run(out, sizeof out, "%s%s -m '%s' --tokens 785,3974,13876,38835 --logits-out %s -t 2 2>/dev/null",
                       st_test_run_prefix(), ST_RUN, st_test_tiny_model(), file),
                 0);
    struct stat sb;
    cr_assert_eq(stat(file, &sb), 0);
    cr_assert_eq((long long)sb.st_size, 4LL * 151669 * 4, "4 rows of n_vocab float32");
    /* --logits-out defaults to -n 0: nothing generated on stdout */
    cr_assert_str_eq(out, "");
    remove(file);
}

/* --version of every installed program: exactly one line "PROG RELEASE (git REV)" with the
 * release CMake's project(VERSION) sets and, in a git checkout, a revision that names a
 * commit of this repository; exit status 0, nothing on stderr. */
Test(cli, version_is_one_line_for_every_program) {
    const char *progs[] = {"st-run",  "st-bench",       "st-synth", "st-keygen",
                           "st-node", "st-coordinator", "st-chat",  "st-ctl"};
    char err_path[64];
    snprintf(err_path, sizeof err_path, "/tmp/st-cli-version-%d.err", (int)getpid());
    bool in_git = st_test_system("git -C '%s' rev-parse --git-dir >/dev/null 2>&1", ST_SOURCE_DIR) == 0;
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", ST_BINARY_DIR, progs[i]);
        struct stat sb;
        if (stat(path, &sb) != 0) { /* st-coordinator/st-node need libzmq, st-chat libcurl + libedit */
            cr_log_warn("%s not built: skipped", progs[i]);
            continue;
        }
        static char out[4096];
        cr_assert_eq(s_run(out, sizeof out, "%s%s --version 2>%s", st_test_run_prefix(), path, err_path), 0,
                     "%s --version: exit status", progs[i]);
        size_t err_len = 0;
        char *err = st_file_read(err_path, 0, &err_len);
        cr_expect_eq(err_len, 0, "%s --version wrote to stderr: %s", progs[i], err ? err : "");
        free(err);
        char *nl = strchr(out, '\n');
        cr_assert(nl && nl[1] == '\0', "%s --version: want exactly one line, got '%s'", progs[i], out);
        char want[256];
        snprintf(want, sizeof want, "%s %s", progs[i], ST_TEST_PROJECT_VERSION);
        cr_assert(!strncmp(out, want, strlen(want)), "%s --version: '%s' does not start with '%s'", progs[i], out,
                  want);
        const char *rest = out + strlen(want);
        if (!in_git) continue;
        char rev[64];
        cr_assert_eq(sscanf(rest, " (git %63[0-9a-f])\n", rev), 1, "%s --version: no git revision in '%s'", progs[i],
                     out);
        cr_assert_eq(st_test_system("git -C '%s' cat-file -e '%s^{commit}' 2>/dev/null", ST_SOURCE_DIR, rev), 0,
                     "%s --version: %s is not a commit of this repository", progs[i], rev);
    }
    remove(err_path);
}

/* ---- arguments are checked before the model loads ---------------------------------------------
 * The model path below does not exist: a check that waited for the load would report the model
 * instead (and on a Pi, after minutes of reading 12 GB). */

#define NO_MODEL "/nonexistent/model.gguf"

/* Runs a command (2>&1 in it: its messages too) into out; its exit status. */
#define S_RUN_ERR(out, ...) s_run(out, sizeof out, __VA_ARGS__)

Test(cli, bad_http_address_is_named_before_the_model_loads) {
    static char out[4096];
    const char *progs[] = {ST_BINARY_DIR "/st-run", ST_BINARY_DIR "/st-coordinator --nodes 127.0.0.1:9 --insecure"};
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        if (i == 1 && access(ST_BINARY_DIR "/st-coordinator", X_OK) != 0) continue;
        cr_assert_eq(S_RUN_ERR(out, "%s%s -m " NO_MODEL " --http localhost8080 2>&1", st_test_run_prefix(), progs[i]),
                     2, "%s: %s", progs[i], out);
        cr_assert(strstr(out, "bad --http address 'localhost8080'") && strstr(out, "HOST:PORT"), "%s: %s", progs[i],
                  out);
        cr_assert(!strstr(out, "loopback") && !strstr(out, NO_MODEL), "%s: %s", progs[i], out);
        /* a LAN address without a key: refused before the load, and the way out is named */
        cr_assert_eq(S_RUN_ERR(out, "%s%s -m " NO_MODEL " --http 0.0.0.0:8080 2>&1", st_test_run_prefix(), progs[i]), 2,
                     "%s: %s", progs[i], out);
        cr_assert(strstr(out, "--api-key") && !strstr(out, NO_MODEL), "%s: %s", progs[i], out);
        cr_assert_eq(S_RUN_ERR(out, "%s%s -m " NO_MODEL " --http 127.0.0.1:99999 2>&1", st_test_run_prefix(), progs[i]),
                     2, "%s: %s", progs[i], out);
        cr_assert(strstr(out, "bad --http address") && !strstr(out, NO_MODEL), "%s: %s", progs[i], out);
    }
    /* a good address goes on to the load, which names the file */
    cr_assert_eq(S_RUN_ERR(out, "%s%s -m " NO_MODEL " --http 127.0.0.1:0 2>&1", st_test_run_prefix(), ST_RUN), 1, "%s",
                 out);
    cr_assert(strstr(out, "cannot open GGUF file " NO_MODEL ": No such file or directory"), "%s", out);
}

Test(cli, user_facing_errors_name_no_internal_function) {
    static char out[4096];
    cr_assert_eq(S_RUN_ERR(out, "%s%s -m " NO_MODEL " -p hi 2>&1", st_test_run_prefix(), ST_RUN), 1);
    cr_assert_str_eq(out, "st-run: error: cannot open GGUF file " NO_MODEL ": No such file or directory\n");
    /* -v adds the function, for developers */
    cr_assert_eq(S_RUN_ERR(out, "%s%s -v -m " NO_MODEL " -p hi 2>&1", st_test_run_prefix(), ST_RUN), 1);
    cr_assert(strstr(out, "st-run: error: s_open_file: cannot open GGUF file"), "%s", out);
    /* st-chat speaks like the others, not getopt */
    if (access(ST_BINARY_DIR "/st-chat", X_OK) == 0) {
        cr_assert_eq(S_RUN_ERR(out, "%s" ST_BINARY_DIR "/st-chat --bogus 2>&1", st_test_run_prefix()), 2);
        cr_assert_str_eq(out, "st-chat: unknown or incomplete option '--bogus' (see --help)\n");
        cr_assert_eq(S_RUN_ERR(out, "%s" ST_BINARY_DIR "/st-chat --temp hot 2>&1", st_test_run_prefix()), 2);
        cr_assert_str_eq(out, "st-chat: invalid value 'hot' for --temp (see --help)\n");
    }
    if (access(ST_BINARY_DIR "/st-ctl", X_OK) == 0) { /* st-ctl too; a wrong command or a missing NODE is usage */
        cr_assert_eq(S_RUN_ERR(out, "%s" ST_BINARY_DIR "/st-ctl --bogus 2>&1", st_test_run_prefix()), 2);
        cr_assert_str_eq(out, "st-ctl: unknown or incomplete option '--bogus' (see --help)\n");
        cr_assert_eq(S_RUN_ERR(out, "%s" ST_BINARY_DIR "/st-ctl drian 1 2>&1", st_test_run_prefix()), 2);
        cr_assert_str_eq(out,
                         "st-ctl: unknown command 'drian' (status, drain, undrain, remove, rebalance; see --help)\n");
        cr_assert_eq(S_RUN_ERR(out, "%s" ST_BINARY_DIR "/st-ctl drain 2>&1", st_test_run_prefix()), 2);
        cr_assert_str_eq(out, "st-ctl: drain needs a NODE: its index, address or id as 'st-ctl status' shows\n");
    }
}

Test(cli, coordinator_checks_key_and_state_dir_before_the_model_loads) {
    if (access(ST_BINARY_DIR "/st-coordinator", X_OK) != 0) cr_skip_test("no st-coordinator in this build");
    static char out[4096];
    char cluster[64];
    snprintf(cluster, sizeof cluster, "/tmp/st-cli-cluster-%d", (int)getpid());
    FILE *f = fopen(cluster, "w");
    cr_assert_not_null(f);
    fprintf(f, "127.0.0.1:9 %s\n", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"); /* a Z85 key, unused */
    fclose(f);
    const char *coord = ST_BINARY_DIR "/st-coordinator -m " NO_MODEL " -p hi";
    cr_assert_eq(
        S_RUN_ERR(out, "%s%s --cluster %s --key /nonexistent/c.key 2>&1", st_test_run_prefix(), coord, cluster), 2,
        "%s", out);
    cr_assert(strstr(out, "cannot read the key file /nonexistent/c.key: No such file or directory"), "%s", out);
    cr_assert(!strstr(out, NO_MODEL), "the model was opened first: %s", out);
    cr_assert_eq(S_RUN_ERR(out, "%s%s --cluster %s 2>&1", st_test_run_prefix(), coord, cluster), 2, "%s", out);
    cr_assert(strstr(out, "--key FILE"), "%s", out);
    cr_assert_eq(S_RUN_ERR(out, "%s%s --nodes 127.0.0.1:9 --insecure --state-dir /nonexistent/state 2>&1",
                           st_test_run_prefix(), coord),
                 2, "%s", out);
    cr_assert(strstr(out, "--state-dir /nonexistent/state") && !strstr(out, NO_MODEL), "%s", out);
    cr_assert_eq(S_RUN_ERR(out, "%s%s --nodes 127.0.0.1:9 --insecure --mem 1G 2>&1", st_test_run_prefix(), coord), 2,
                 "%s", out);
    cr_assert(strstr(out, "--mem is st-run's") && !strstr(out, NO_MODEL), "%s", out);
    cr_assert_eq(S_RUN_ERR(out, "%s%s --cluster /nonexistent/cluster --key x 2>&1", st_test_run_prefix(), coord), 2);
    cr_assert(strstr(out, "cannot read the cluster file /nonexistent/cluster: No such file"), "%s", out);
    remove(cluster);
}

/* st-node --listen HOST:PORT means tcp://HOST:PORT (as --http takes HOST:PORT); other
 * transports are refused with the form it wants. */
Test(cli, node_listen_takes_host_port_without_tcp) {
    if (access(ST_BINARY_DIR "/st-node", X_OK) != 0) cr_skip_test("no st-node in this build");
    char store[64];
    snprintf(store, sizeof store, "/tmp/st-cli-store-%d", (int)getpid());
    const char *argv[] = {
        ST_BINARY_DIR "/st-node", "--listen", "127.0.0.1:0", "--mem", "64M", "--store", store, "--insecure", NULL};
    st_test_node_t nd;
    cr_assert_eq(st_test_node_start(&nd, argv, "/dev/null", 20000), 0, "st-node did not start");
    cr_assert(!strncmp(nd.url, "tcp://127.0.0.1:", 16) && atoi(nd.url + 16) > 0, "listening on '%s'", nd.url);
    st_test_node_stop(&nd, SIGTERM);
    static char out[4096];
    cr_assert_eq(S_RUN_ERR(out,
                           "%s" ST_BINARY_DIR "/st-node --listen ipc:///tmp/x --mem 64M --store %s --insecure 2>&1",
                           st_test_run_prefix(), store),
                 2);
    cr_assert(strstr(out, "--listen ipc:///tmp/x: want tcp://HOST:PORT"), "%s", out);
    st_test_system("rm -rf '%s'", store);
}

/* --timeout-ms shorter than the first contact's minimum: the HELLO message says what was
 * waited and that it is not --timeout-ms (it looked ignored). Nobody listens on the port. */
Test(cli, hello_timeout_message_names_the_wait_really_used, .timeout = 120) {
    if (access(ST_BINARY_DIR "/st-coordinator", X_OK) != 0) cr_skip_test("no st-coordinator in this build");
    static char out[8192];
    int rc = S_RUN_ERR(out,
                       "%s" ST_BINARY_DIR "/st-coordinator -m '%s' --nodes 127.0.0.1:9 --insecure "
                       "--timeout-ms 2000 --no-fallback -p hi -n 1 2>&1",
                       st_test_run_prefix(), st_test_tiny_model());
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "no answer to HELLO within 5000 ms") &&
                  strstr(out, "a first contact waits 5000 ms, not --timeout-ms 2000"),
              "%s", out);
}

/* ---- st-chat against a server whose /health is not what it expects ---------- */

typedef struct {
    int fd;
    const char *body;
} fake_server_t;

/* Answers every connection with 200 and body (HTTP/1.0, then close), until the
 * listening socket is shut down. */
static void *s_fake_serve(void *arg) {
    fake_server_t *f = arg;
    for (;;) {
        int c = accept(f->fd, NULL, NULL);
        if (c < 0) return NULL;
        char req[4096];
        ssize_t n = recv(c, req, sizeof req, 0); /* one read: the client's requests are small */
        (void)n;
        char head[256];
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                          strlen(f->body));
        if (send(c, head, (size_t)hl, MSG_NOSIGNAL) == hl) send(c, f->body, strlen(f->body), MSG_NOSIGNAL);
        close(c);
    }
}

/* st-chat's /stats reads the server's /health: fields missing or of another
 * type (a server of another version, or a hostile one) are shown as "?" or 0,
 * never dereferenced (it crashed with SIGSEGV on {"status":7}). */
Test(cli, chat_stats_survive_a_health_of_another_shape, .timeout = 60) {
    char path[1024];
    snprintf(path, sizeof path, "%s/st-chat", ST_BINARY_DIR);
    struct stat sb;
    if (stat(path, &sb) != 0) cr_skip_test("st-chat is not built here");
    const char *bodies[] = {
        "{}",
        "{\"status\":7,\"mode\":[],\"tokens_per_s\":\"fast\",\"nodes\":{}}",
        "{\"status\":\"ok\",\"nodes\":[{\"up\":true,\"experts\":\"x\",\"id\":3},7,null],\"prompt_cache\":{\"hits\":[]}"
        "}",
        "[1,2,3]",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        fake_server_t f = {.fd = socket(AF_INET, SOCK_STREAM, 0), .body = bodies[i]};
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t sl = sizeof sa;
        cr_assert(f.fd >= 0 && bind(f.fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(f.fd, 8) == 0);
        cr_assert_eq(getsockname(f.fd, (struct sockaddr *)&sa, &sl), 0);
        pthread_t th;
        cr_assert_eq(pthread_create(&th, NULL, s_fake_serve, &f), 0);
        char out[8192];
        int st = s_run(out, sizeof out, "printf '/stats\\n/quit\\n' | %s'%s' --url http://127.0.0.1:%d 2>&1",
                       st_test_run_prefix(), path, ntohs(sa.sin_port)); /* the prefix: qemu when cross-built */
        shutdown(f.fd, SHUT_RDWR);
        pthread_join(th, NULL);
        close(f.fd);
        cr_assert_eq(st, 0, "body %s: st-chat exited %d:\n%s", bodies[i], st, out);
        cr_assert(strstr(out, "this session:"), "body %s: no /stats output:\n%s", bodies[i], out);
    }
}
