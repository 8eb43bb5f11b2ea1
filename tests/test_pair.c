/* Pairing with one code (issue 16): st-coordinator --pair and st-node --join
 * --code, the real programs.
 *
 * On loopback, with a small raw client (proto/pake over a DEALER) standing
 * in for a board: wrong codes are refused and logged with the peer's
 * address (its first 3, then counted in a summary line; a flood of them
 * makes a few lines whose counts add up, st_pair in this process); after 10
 * that address is refused even with the right code, while
 * another (127.0.0.2) still pairs with the same code; after max_total from
 * all addresses the code is dead and a new one printed (st_pair in this
 * process, with small limits); a board refused as busy (8 exchanges open from
 * its address) tries again and pairs once they end; a replayed
 * PROOF (on a new connection, after the same HELLO, twice on its own
 * exchange) and a tampered one are refused, and the same PROOF untouched is
 * then accepted, so the refusals came from the replay or the change.
 *
 * In network namespaces on a bridge (needs root and ip; skipped otherwise):
 * 8 boards started with --join --code and no address find the coordinator by
 * UDP broadcast, pair, and serve: the tokens are st-run's. Then both sides
 * restart with no pairing (the boards with their same command line), the
 * tokens again st-run's; a coordinator with a key the boards never paired
 * with is refused by every board. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "pair.h"
#include "pake.h"
#include "st_log.h"
#include "testutil.h"

#define BIN ST_BINARY_DIR
#define PROMPT "The quick brown fox jumps over the lazy dog"
#define N_PREDICT 16
#define N_BOARDS 8
#define WAIT_MS 60000

static char g_dir[64], g_ip[64];
static bool g_ns_made;

static void s_cleanup_namespaces(void) {
    st_test_system("'%s' netns list 2>/dev/null | awk '{print $1}' | grep '^stpr-' | while read ns; do "
                   "pid=${ns#stpr-}; pid=${pid%%%%-*}; "
                   "if [ \"$pid\" = %d ] || ! kill -0 \"$pid\" 2>/dev/null; then '%s' netns del \"$ns\"; fi; done",
                   g_ip, (int)getpid(), g_ip);
}

static void setup(void) {
    cr_assert(sodium_init() >= 0);
    st_log_set_level(ST_LOG_ERROR);
    st_test_tmpdir(g_dir, sizeof g_dir, "pair");
}

static void teardown(void) {
    st_test_cleanup();
    if (g_ns_made) s_cleanup_namespaces();
}

TestSuite(pair, .init = setup, .fini = teardown, .timeout = 300);

/* st-run's output for the prompt: the reference every cluster run must match. */
static char *s_reference(const char *model) {
    char path[300];
    snprintf(path, sizeof path, "%s/ref.out", g_dir);
    cr_assert_eq(st_test_system("timeout 120 '%s/st-run' -m '%s' -p '%s' -n %d --temp 0 --json -t 1 > '%s' 2>/dev/null",
                                BIN, model, PROMPT, N_PREDICT, path),
                 0);
    char *ref = st_file_read(path, 0, NULL);
    cr_assert_not_null(ref);
    return ref;
}

/* st-coordinator (one-shot: generates once min_nodes are up, 0: at once), in namespace
 * ns (NULL: here), stdout and stderr to DIR/TAG.out and .err. */
static pid_t s_coord_start(const char *ns, const char *model, const char *key, const char *extra, int min_nodes,
                           const char *tag) {
    char cmd[4096], pre[128] = "", min[32] = "";
    if (ns) snprintf(pre, sizeof pre, "'%s' netns exec %s ", g_ip, ns);
    if (min_nodes) snprintf(min, sizeof min, "--min-nodes %d", min_nodes);
    snprintf(cmd, sizeof cmd,
             "exec %s'%s/st-coordinator' -m '%s' --cluster '%s/cluster' --key '%s/%s' --state-dir '%s' --quiet-push "
             "%s -p '%s' -n %d --temp 0 --json -t 1 %s > '%s/%s.out' 2> '%s/%s.err'",
             pre, BIN, model, g_dir, g_dir, key, g_dir, min, PROMPT, N_PREDICT, extra, g_dir, tag, g_dir, tag);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return st_test_spawn(argv, NULL, NULL, SIGKILL);
}

/* The file's text once it holds `count` lines containing needle, within ms; NULL otherwise (caller frees). */
static char *s_wait_lines(const char *path, const char *needle, int count, int ms) {
    const double until = st_now_ms() + ms;
    do {
        char *t = st_file_read(path, 0, NULL);
        int n = 0;
        for (const char *p = t ? strstr(t, needle) : NULL; p; p = strstr(p + 1, needle)) n++;
        if (n >= count) return t;
        free(t);
        usleep(50 * 1000);
    } while (st_now_ms() < until);
    return NULL;
}

/* The k-th (1-based) "pairing code: CODE" of a coordinator's stderr. */
static void s_code(const char *err, int k, char code[ST_PAKE_CODE_BUF]) {
    char *t = s_wait_lines(err, "pairing code: ", k, WAIT_MS);
    cr_assert_not_null(t, "no pairing code #%d in %s", k, err);
    const char *p = t;
    for (int i = 0; i < k; i++) p = strstr(i ? p + 1 : p, "pairing code: ");
    cr_assert_eq(sscanf(p, "pairing code: %11s", code), 1);
    free(t);
}

/* The endpoint of "pairing on tcp://HOST:PORT: ..." (the port "*" chose). */
static void s_endpoint(const char *err, char *url, size_t cap) {
    char *t = s_wait_lines(err, "pairing on ", 1, WAIT_MS);
    cr_assert_not_null(t, "no pairing endpoint in %s", err);
    const char *p = strstr(t, "pairing on ") + strlen("pairing on ");
    size_t n = strcspn(p, " ");
    cr_assert(n > 1 && n < cap);
    snprintf(url, cap, "%.*s", (int)n - 1, p); /* without the ':' after it */
    free(t);
}

/* ---- a raw board: the exchange by hand, each message one DEALER round trip --- */

typedef struct {
    void *ctx, *sock;
} raw_t;

/* A connection to url (tcp://127.0.0.1:PORT) from source address src (NULL: any). */
static void s_raw_open_from(raw_t *r, const char *url, const char *src) {
    r->ctx = zmq_ctx_new();
    r->sock = zmq_socket(r->ctx, ZMQ_DEALER);
    int linger = 0, tmo = 10000;
    zmq_setsockopt(r->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(r->sock, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
    char ep[300];
    if (src)
        snprintf(ep, sizeof ep, "tcp://%s:0;%s", src, url + strlen("tcp://")); /* libzmq's source;destination */
    else
        snprintf(ep, sizeof ep, "%s", url);
    cr_assert_eq(zmq_connect(r->sock, ep), 0, "%s: %s", ep, zmq_strerror(zmq_errno()));
}

static void s_raw_open(raw_t *r, const char *url) { s_raw_open_from(r, url, NULL); }

static void s_raw_close(raw_t *r) {
    zmq_close(r->sock);
    zmq_ctx_term(r->ctx);
}

/* Sends msg, returns the answer's length (the test fails without one). */
static int s_raw_ask(raw_t *r, const uint8_t *msg, int len, uint8_t *ans) {
    cr_assert_eq(zmq_send(r->sock, msg, (size_t)len, 0), len);
    int n = zmq_recv(r->sock, ans, ST_PAKE_MAX_MSG, 0);
    cr_assert_gt(n, 0, "no answer from the coordinator");
    return n;
}

/* The reason of a REFUSED answer, 0 when it is not one. */
static int s_refusal(const uint8_t *m, int n) { return n == 6 && !memcmp(m, "STP1", 4) && m[4] == 5 ? m[5] : 0; }

static st_pake_node_info_t s_board(int k) {
    st_pake_node_info_t me = {0};
    randombytes_buf(me.key, sizeof me.key);
    snprintf(me.endpoint, sizeof me.endpoint, "tcp://127.0.0.1:%d", 20000 + k);
    snprintf(me.id, sizeof me.id, "raw-%d", k);
    return me;
}

/* HELLO and CHALLENGE on r with code; the PROOF for me into proof. */
static int s_raw_proof(raw_t *r, st_pake_t *s, const char *code, const st_pake_node_info_t *me, uint8_t *hello,
                       int *hello_len, uint8_t *proof) {
    uint8_t ans[ST_PAKE_MAX_MSG];
    *hello_len = st_pake_node_hello(s, code, hello, ST_PAKE_MAX_MSG);
    cr_assert_gt(*hello_len, 0);
    int n = s_raw_ask(r, hello, *hello_len, ans);
    int len = st_pake_node_proof(s, ans, (size_t)n, me, proof, ST_PAKE_MAX_MSG, NULL);
    cr_assert_gt(len, 0, "no challenge for a hello");
    return len;
}

/* A whole exchange with code from source address src (NULL: any): 0 with the
 * coordinator's key, or the refusal's reason (of the HELLO or the PROOF). */
static int s_raw_pair_from(const char *url, const char *src, const char *code, const st_pake_node_info_t *me,
                           uint8_t key[ST_PAKE_KEY]) {
    raw_t r;
    st_pake_t s;
    uint8_t hello[ST_PAKE_MAX_MSG], proof[ST_PAKE_MAX_MSG], ans[ST_PAKE_MAX_MSG];
    s_raw_open_from(&r, url, src);
    int hl = st_pake_node_hello(&s, code, hello, sizeof hello), reason = 0;
    cr_assert_gt(hl, 0);
    int n = s_raw_ask(&r, hello, hl, ans);
    int pl = st_pake_node_proof(&s, ans, (size_t)n, me, proof, sizeof proof, &reason);
    int rc = pl;
    if (pl > 0) {
        n = s_raw_ask(&r, proof, pl, ans);
        rc = st_pake_node_finish(&s, ans, (size_t)n, key, &reason);
    }
    s_raw_close(&r);
    cr_assert(rc == 0 || reason > 0, "an answer that is neither a valid welcome nor a refusal (%d)", rc);
    return rc == 0 ? 0 : reason;
}

/* The coordinator's public key, binary. */
static void s_coord_pub(const char *name, uint8_t key[32]) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s.pub", g_dir, name);
    char *z = st_file_read(path, 0, NULL);
    cr_assert_not_null(z);
    z[strcspn(z, "\n")] = '\0';
    cr_assert_not_null(zmq_z85_decode(key, z));
    free(z);
}

/* Lines of the cluster file that name a node. */
static int s_cluster_nodes(char *key_seen, const uint8_t key[32]) {
    char path[300], line[1024], z85[41];
    snprintf(path, sizeof path, "%s/cluster", g_dir);
    zmq_z85_encode(z85, key, 32);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    int n = 0;
    *key_seen = 0;
    while (fgets(line, sizeof line, f))
        if (line[0] != '#' && line[0] != '\n') {
            n++;
            if (strstr(line, z85)) *key_seen = 1;
        }
    fclose(f);
    return n;
}

/* The port of path's whole line "serving on http://127.0.0.1:PORT/" (--http 127.0.0.1:0), within
 * WAIT_MS; the "/" shows the line was not read half written. */
static int s_serving_port(const char *path) {
    const double until = st_now_ms() + WAIT_MS;
    int port = 0;
    char slash = 0;
    for (;;) {
        char *t = st_file_read(path, 0, NULL);
        const char *p = t ? strstr(t, "serving on http://127.0.0.1:") : NULL;
        const bool found = p && sscanf(p, "serving on http://127.0.0.1:%d%c", &port, &slash) == 2 && slash == '/';
        free(t);
        if (found) return port;
        cr_assert_lt(st_now_ms(), until, "no 'serving on' line in %s", path);
        usleep(50 * 1000);
    }
}

/* The code file holds code (and a newline), mode 0600. */
static void s_code_file_is(const char *code) {
    char path[300];
    snprintf(path, sizeof path, "%s/code", g_dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "no code file");
    cr_assert_eq(st.st_mode & 0777, 0600);
    char *t = st_file_read(path, 0, NULL);
    cr_assert_not_null(t);
    t[strcspn(t, "\n")] = '\0';
    cr_assert_str_eq(t, code);
    free(t);
}

/* The lines of path that contain needle. */
static int s_count_lines(const char *path, const char *needle) {
    char *t = st_file_read(path, 0, NULL);
    int n = 0;
    for (const char *p = t ? strstr(t, needle) : NULL; p; p = strstr(p + 1, needle)) n++;
    free(t);
    return n;
}

Test(pair, wrong_codes_are_refused_logged_and_limited_per_address) {
    const char *model = st_test_cluster_model();
    char err[300], code[ST_PAKE_CODE_BUF], url[128];
    snprintf(err, sizeof err, "%s/coord.err", g_dir);
    char extra[400];
    snprintf(extra, sizeof extra, "--pair tcp://127.0.0.1:* --discovery-port 0 --pair-code-file '%s/code'", g_dir);
    pid_t coord = s_coord_start(NULL, model, "coord.key", extra, 1, "coord");
    s_code(err, 1, code);
    s_endpoint(err, url, sizeof url);
    s_code_file_is(code);
    char wrong[ST_PAKE_CODE_BUF];
    memcpy(wrong, code, sizeof wrong);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';

    /* a real board with a wrong code: refused, says so, exits 3 (a service does not retry it) */
    char nlog[300], store[300];
    snprintf(nlog, sizeof nlog, "%s/node.err", g_dir);
    snprintf(store, sizeof store, "%s/store", g_dir);
    cr_assert_eq(st_test_system("timeout 60 '%s/st-node' --listen tcp://127.0.0.1:1 --join '%s' --code '%s' --store "
                                "'%s' --mem 256M 2> '%s'",
                                BIN, url, wrong, store, nlog),
                 3, "a refused code is exit status 3");
    cr_assert(st_test_file_has(nlog, "refused the pairing: wrong code", 0), "the board did not say why (%s)", nlog);
    cr_assert(st_test_file_has(err, "pairing refused from 127.0.0.1: wrong code", 0), "refusal not logged (%s)", err);

    /* a real board from the same address with the code as typed (lower case), and --advertise: the
     * cluster file names it so */
    const int port = st_test_port_hold(); /* --join needs a fixed port: one nothing else can take meanwhile */
    char listen[64], adv[64], store2[300], lower[ST_PAKE_CODE_BUF], cluster[300];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
    snprintf(adv, sizeof adv, "tcp://localhost:%d", port);
    snprintf(store2, sizeof store2, "%s/store2", g_dir);
    snprintf(cluster, sizeof cluster, "%s/cluster", g_dir);
    for (int i = 0; i < ST_PAKE_CODE_BUF; i++)
        lower[i] = (char)(code[i] >= 'A' && code[i] <= 'Z' ? code[i] + 32 : code[i]);
    const char *argv[] = {BIN "/st-node", "--listen", listen,  "--join", url,  "--code", lower, "--advertise", adv,
                          "--store",      store2,     "--mem", "256M",   "-t", "1",      NULL};
    st_test_node_t board;
    cr_assert_eq(st_test_node_start(&board, argv, nlog, 30000), 0, "the board did not serve (%s)", nlog);
    char want_line[200];
    snprintf(want_line, sizeof want_line, "%s %s", adv, board.pub);
    cr_assert(st_test_file_has(cluster, want_line, 5000), "no '%s' in the cluster file", want_line);
    st_test_node_stop(&board, SIGTERM);

    /* nine more wrong ones from 127.0.0.1 by hand: each refused; the first 3 of the address logged
     * with their count, the others only counted */
    uint8_t key[32], want[32];
    for (int i = 2; i <= 10; i++) {
        st_pake_node_info_t me = s_board(i);
        cr_assert_eq(s_raw_pair_from(url, "127.0.0.1", wrong, &me, key), ST_PAKE_R_WRONG, "wrong code #%d not refused",
                     i);
        char line[64];
        snprintf(line, sizeof line, "attempt %d of 10 from there", i);
        if (i <= 3) cr_assert(st_test_file_has(err, line, 5000), "'%s' not logged (%s)", line, err);
    }
    /* that address is done: refused even with the right code, and nothing of it is written */
    st_pake_node_info_t me = s_board(11);
    cr_assert_eq(s_raw_pair_from(url, "127.0.0.1", code, &me, key), ST_PAKE_R_TRIES,
                 "an address past its tries was not refused");
    cr_assert(st_test_file_has(err, "127.0.0.1 is refused until the code changes", 5000), "(%s)", err);
    char seen;
    cr_assert_eq(s_cluster_nodes(&seen, me.key), 1, "a refused board is in the cluster file");
    cr_assert(!seen);

    /* another address with the same code pairs: the code did not die of one address's tries */
    me = s_board(12);
    cr_assert_eq(s_raw_pair_from(url, "127.0.0.2", code, &me, key), 0, "the right code from 127.0.0.2 is refused");
    s_coord_pub("coord", want);
    cr_assert_arr_eq(key, want, 32, "the board got another key than coord.pub");
    cr_assert_eq(s_cluster_nodes(&seen, me.key), 2);
    cr_assert(seen, "the paired board's key is not in the cluster file");
    cr_assert(st_test_file_has(err, "from 127.0.0.2): written to", 5000), "(%s)", err);
    cr_assert_eq(s_count_lines(err, "pairing code: "), 1, "a new code was printed");
    cr_assert_eq(s_count_lines(err, "that code is dead"), 0);
    s_code_file_is(code);
    /* (the other 7 are summed up a minute after the 4th, or at the end: the flood test below) */
    cr_assert_eq(s_count_lines(err, "pairing refused from 127.0.0.1: wrong code"), 3, "the first 3 lines (%s)", err);
    st_test_stop(coord, SIGTERM, 5000);
}

/* The sum of N in the lines "PREFIX N SUFFIX" of path (a limiter's summaries), and their count in *lines. */
static unsigned long long s_sum_counts(const char *path, const char *prefix, const char *suffix, int *lines) {
    char *t = st_file_read(path, 0, NULL);
    cr_assert_not_null(t);
    unsigned long long sum = 0;
    *lines = 0;
    for (const char *p = strstr(t, prefix); p; p = strstr(p + 1, prefix)) {
        char *end;
        const unsigned long long n = strtoull(p + strlen(prefix), &end, 10);
        const char *eol = strchr(p, '\n');
        if (end == p + strlen(prefix) || strncmp(end, suffix, strlen(suffix)) || (eol && eol < end)) continue;
        sum += n;
        ++*lines;
    }
    free(t);
    return sum;
}

/* A flood of wrong proofs (st_pair in this process, summaries every 3 s: a key quiet for that long
 * is forgotten and gets its first lines again, which no exchange here waits for even under ASan on
 * a loaded machine; 300 ms was not enough): 60 wrong tries and 140 more refused as out of tries
 * from 127.0.0.3, 5 wrong ones from 127.0.0.4. Each address's first lines are logged (its first
 * try among them), the rest in summary lines whose counts add up to what was sent; a summary comes
 * while the coordinator runs (its thread's clock), the rest when it stops. Before, every wrong try
 * was a line, and the refusals of an address out of tries 10 a second. */
Test(pair, a_flood_of_wrong_proofs_makes_a_few_lines_whose_counts_add_up) {
    char cluster[300], log[300], url[128];
    snprintf(cluster, sizeof cluster, "%s/cluster", g_dir);
    snprintf(log, sizeof log, "%s/flood.err", g_dir);
    const int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644); /* this test's process: its stderr */
    cr_assert(fd >= 0 && dup2(fd, 2) == 2);
    close(fd);
    st_log_set_level(ST_LOG_WARN);
    st_pair_opts_t o = {.url = "tcp://127.0.0.1:*",
                        .cluster_file = cluster,
                        .ttl_s = 600,
                        .max_attempts = 60,
                        .max_total_attempts = 100000,
                        .log_interval_ms = 3000};
    uint8_t coord_key[ST_PAKE_KEY], key[ST_PAKE_KEY];
    randombytes_buf(coord_key, sizeof coord_key);
    st_pair_t *p = st_pair_new(&o, coord_key);
    cr_assert_not_null(p);
    snprintf(url, sizeof url, "%s", st_pair_endpoint(p));
    char code[ST_PAKE_CODE_BUF], wrong[ST_PAKE_CODE_BUF];
    st_pair_code(p, code, NULL);
    memcpy(wrong, code, sizeof wrong);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    const int WRONG = 60, OUT = 140, OTHER = 5;
    for (int i = 0; i < WRONG + OUT; i++) {
        st_pake_node_info_t me = s_board(i);
        cr_assert_eq(s_raw_pair_from(url, "127.0.0.3", wrong, &me, key), i < WRONG ? ST_PAKE_R_WRONG : ST_PAKE_R_TRIES,
                     "try %d", i + 1);
    }
    for (int i = 0; i < OTHER; i++) {
        st_pake_node_info_t me = s_board(1000 + i);
        cr_assert_eq(s_raw_pair_from(url, "127.0.0.4", wrong, &me, key), ST_PAKE_R_WRONG);
    }
    cr_assert(st_test_file_has(log, "pairing: 2 more wrong tries from 127.0.0.4 in the last ", 15000),
              "no summary while the coordinator runs (%s)", log);
    st_pair_destroy(&p);
    char *all = st_file_read(log, 0, NULL); /* for the messages */
    cr_assert_not_null(all);

    cr_assert_eq(s_count_lines(log, "pairing refused from 127.0.0.3: wrong code"), 3, "%s", all);
    cr_assert_eq(s_count_lines(log, "127.0.0.3: wrong code (or a replayed or tampered message), attempt 1 of 60"), 1,
                 "its first try is in the log:\n%s", all);
    int n_wrong, n_out, n_other;
    cr_assert_eq(s_sum_counts(log, "pairing: ", " more wrong tries from 127.0.0.3 in the last ", &n_wrong), WRONG - 3,
                 "%s", all);
    /* out of tries: the line at the 60th wrong one and the first 2 refusals, then counted */
    cr_assert_eq(s_count_lines(log, "127.0.0.3 is refused until the code changes"), 1, "%s", all);
    cr_assert_eq(s_count_lines(log, "pairing refused from 127.0.0.3: 60 wrong tries from there already"), 2, "%s", all);
    cr_assert_eq(
        s_sum_counts(log, "pairing: ", " more tries refused (out of wrong tries) from 127.0.0.3 in the last ", &n_out),
        1 + OUT - 3, "%s", all);
    cr_assert_eq(s_count_lines(log, "pairing refused from 127.0.0.4: wrong code"), 3, "%s", all);
    cr_assert_eq(s_sum_counts(log, "pairing: ", " more wrong tries from 127.0.0.4 in the last ", &n_other), OTHER - 3,
                 "%s", all);
    int lines = 0;
    for (const char *q = all; (q = strchr(q, '\n')); q++) lines++;
    /* 3 + 3 + 3 first lines, the pairing code, and the summaries: one per address and kind per
     * 3 s at most while the flood lasts */
    cr_log_info("%d lines for %d refusals: %d + %d + %d summaries", lines, WRONG + OUT + OTHER, n_wrong, n_out,
                n_other);
    cr_assert_eq(lines, 3 + 3 + 3 + 1 + n_wrong + n_out + n_other, "lines that are none of those:\n%s", all);
    cr_assert_lt(lines, 60, "%d lines for %d refusals:\n%s", lines, WRONG + OUT + OTHER, all);
    free(all);
}

/* st_pair in this process, with 2 wrong tries per address and 5 in all: a flood from
 * several addresses kills the code (a new one, and only it, pairs), and one address
 * cannot hold more than 8 of the 64 exchanges open. */
Test(pair, a_flood_from_many_addresses_kills_the_code) {
    char cluster[300], code_file[300], url[128];
    snprintf(cluster, sizeof cluster, "%s/cluster", g_dir);
    snprintf(code_file, sizeof code_file, "%s/code", g_dir);
    st_pair_opts_t o = {.url = "tcp://127.0.0.1:*",
                        .cluster_file = cluster,
                        .ttl_s = 600,
                        .max_attempts = 2,
                        .code_file = code_file,
                        .max_total_attempts = 5};
    uint8_t coord_key[ST_PAKE_KEY], key[ST_PAKE_KEY];
    randombytes_buf(coord_key, sizeof coord_key);
    st_pair_t *p = st_pair_new(&o, coord_key);
    cr_assert_not_null(p);
    snprintf(url, sizeof url, "%s", st_pair_endpoint(p));
    char code[ST_PAKE_CODE_BUF], code2[ST_PAKE_CODE_BUF], wrong[ST_PAKE_CODE_BUF];
    st_pair_code(p, code, NULL);
    s_code_file_is(code);
    memcpy(wrong, code, sizeof wrong);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';

    /* 8 exchanges open from 127.0.0.5: a 9th from there is refused, one from 127.0.0.6 is not */
    raw_t open[9];
    uint8_t hello[ST_PAKE_MAX_MSG], ans[ST_PAKE_MAX_MSG];
    for (int i = 0; i < 9; i++) {
        st_pake_t s;
        s_raw_open_from(&open[i], url, "127.0.0.5");
        const int hl = st_pake_node_hello(&s, code, hello, sizeof hello);
        const int n = s_raw_ask(&open[i], hello, hl, ans);
        if (i < 8)
            cr_assert_eq(n, 5 + ST_PAKE_NONCE + ST_PAKE_POINT, "exchange %d from one address refused", i + 1);
        else
            cr_assert_eq(s_refusal(ans, n), ST_PAKE_R_BUSY, "a 9th exchange from one address was opened");
    }
    st_pake_node_info_t me = s_board(1);
    cr_assert_eq(s_raw_pair_from(url, "127.0.0.6", code, &me, key), 0, "another address could not pair");
    cr_assert_arr_eq(key, coord_key, ST_PAKE_KEY);
    for (int i = 0; i < 9; i++) s_raw_close(&open[i]);

    /* 2 wrong from 127.0.0.2: then it is refused with the right code; the code lives */
    for (int i = 0; i < 2; i++) {
        me = s_board(10 + i);
        cr_assert_eq(s_raw_pair_from(url, "127.0.0.2", wrong, &me, key), ST_PAKE_R_WRONG);
    }
    me = s_board(12);
    cr_assert_eq(s_raw_pair_from(url, "127.0.0.2", code, &me, key), ST_PAKE_R_TRIES);
    /* 2 from 127.0.0.3 and 1 from 127.0.0.4: 5 in all, the code is dead and replaced */
    for (int i = 0; i < 3; i++) {
        me = s_board(20 + i);
        st_pair_code(p, code2, NULL);
        cr_assert_str_eq(code2, code, "the code was replaced after %d wrong tries, not 5", 2 + i);
        cr_assert_eq(s_raw_pair_from(url, i < 2 ? "127.0.0.3" : "127.0.0.4", wrong, &me, key), ST_PAKE_R_WRONG);
    }
    /* (the refusal is sent before the code is replaced) */
    for (const double until = st_now_ms() + 5000; st_pair_code(p, code2, NULL), !strcmp(code2, code);) {
        cr_assert_lt(st_now_ms(), until, "5 wrong tries from 3 addresses did not kill the code");
        usleep(1000);
    }
    cr_assert(st_test_file_has(code_file, code2, 5000), "the code file does not hold the new code");
    s_code_file_is(code2);
    me = s_board(30);
    cr_assert_eq(s_raw_pair_from(url, "127.0.0.4", code, &me, key), ST_PAKE_R_WRONG, "the dead code still pairs");
    /* the new code: every address starts again, 127.0.0.2 too */
    me = s_board(31);
    cr_assert_eq(s_raw_pair_from(url, "127.0.0.2", code2, &me, key), 0, "the new code is refused");
    char seen;
    cr_assert_eq(s_cluster_nodes(&seen, me.key), 2, "the boards of the right codes, and only they");
    cr_assert(seen);
    int taken = 0; /* (counted after the welcome is sent) */
    for (const double until = st_now_ms() + 5000; (taken += st_pair_take(p)) < 2; usleep(1000))
        cr_assert_lt(st_now_ms(), until, "%d boards paired, st_pair_take says %d", 2, taken);
    cr_assert_eq(taken, 2);
    st_pair_destroy(&p);
    cr_assert_null(p);
}

/* A board refused as busy (its address has 8 exchanges open, as boards behind one NAT
 * pairing at once may) tries again, and pairs once those exchanges are over. */
Test(pair, a_board_refused_as_busy_tries_again) {
    const char *model = st_test_cluster_model();
    char err[300], code[ST_PAKE_CODE_BUF], url[128], nlog[300], store[300];
    snprintf(err, sizeof err, "%s/coord.err", g_dir);
    snprintf(nlog, sizeof nlog, "%s/node.err", g_dir);
    snprintf(store, sizeof store, "%s/store", g_dir);
    pid_t coord = s_coord_start(NULL, model, "coord.key", "--pair tcp://127.0.0.1:* --discovery-port 0", 1, "coord");
    s_code(err, 1, code);
    s_endpoint(err, url, sizeof url);
    raw_t r[8];
    st_pake_t ps[8];
    uint8_t challenge[8][ST_PAKE_MAX_MSG];
    int cl[8];
    for (int i = 0; i < 8; i++) {
        uint8_t hello[ST_PAKE_MAX_MSG];
        s_raw_open_from(&r[i], url, "127.0.0.1");
        const int hl = st_pake_node_hello(&ps[i], code, hello, sizeof hello);
        cl[i] = s_raw_ask(&r[i], hello, hl, challenge[i]);
        cr_assert_eq(cl[i], 5 + ST_PAKE_NONCE + ST_PAKE_POINT, "exchange %d refused", i + 1);
    }
    const int port = st_test_port_hold();
    char listen[64];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
    const char *argv[] = {BIN "/st-node", "--listen", listen,  "--join", url,  "--code", code,
                          "--store",      store,      "--mem", "256M",   "-t", "1",      NULL};
    int out; /* (its stdout: read by nobody, closed at the end) */
    pid_t board = st_test_spawn(argv, &out, nlog, SIGTERM);
    cr_assert(st_test_file_has(nlog, "is busy with other pairings: trying again", WAIT_MS), "(%s)", nlog);
    cr_assert(st_test_file_has(err, "pairing: 8 exchanges open from 127.0.0.1: refused, busy", 0), "(%s)", err);
    for (int i = 0; i < 8; i++) { /* the 8 exchanges end: each pairs */
        uint8_t proof[ST_PAKE_MAX_MSG], ans[ST_PAKE_MAX_MSG], key[ST_PAKE_KEY];
        st_pake_node_info_t me = s_board(40 + i);
        const int pl = st_pake_node_proof(&ps[i], challenge[i], (size_t)cl[i], &me, proof, sizeof proof, NULL);
        cr_assert_gt(pl, 0);
        const int n = s_raw_ask(&r[i], proof, pl, ans);
        cr_assert_eq(st_pake_node_finish(&ps[i], ans, (size_t)n, key, NULL), 0, "exchange %d did not pair", i + 1);
        s_raw_close(&r[i]);
    }
    cr_assert(st_test_file_has(nlog, "paired with the coordinator at", WAIT_MS), "the board gave up (%s)", nlog);
    cr_assert_lt(st_test_wait(board, 0), 0, "the board exited after pairing (%s)", nlog);
    st_test_stop(board, SIGTERM, 5000);
    close(out);
    st_test_stop(coord, SIGTERM, 5000);
}

Test(pair, replayed_and_tampered_proofs_are_refused) {
    const char *model = st_test_cluster_model();
    char err[300], code[ST_PAKE_CODE_BUF], url[128];
    snprintf(err, sizeof err, "%s/coord.err", g_dir);
    pid_t coord = s_coord_start(NULL, model, "coord.key", "--pair tcp://127.0.0.1:* --discovery-port 0", 1, "coord");
    s_code(err, 1, code);
    s_endpoint(err, url, sizeof url);
    uint8_t hello[ST_PAKE_MAX_MSG], proof[ST_PAKE_MAX_MSG], ans[ST_PAKE_MAX_MSG], key[32];
    int hl, n;
    char seen;

    /* exchange 1 with the right code: its PROOF is made but held back */
    raw_t r1, r2;
    st_pake_t s1, s2;
    st_pake_node_info_t me = s_board(1);
    s_raw_open(&r1, url);
    const int pl = s_raw_proof(&r1, &s1, code, &me, hello, &hl, proof);

    /* that PROOF on another connection, with no exchange open there */
    s_raw_open(&r2, url);
    n = s_raw_ask(&r2, proof, pl, ans);
    cr_assert_eq(s_refusal(ans, n), ST_PAKE_R_BAD, "a proof with no exchange was not refused");
    cr_assert(st_test_file_has(err, "with no exchange open (replayed?): refused", 5000));
    /* ... and after the same HELLO: the coordinator's nonce and share are new */
    n = s_raw_ask(&r2, hello, hl, ans);
    cr_assert_eq(n, 5 + ST_PAKE_NONCE + ST_PAKE_POINT, "no challenge for a replayed hello");
    n = s_raw_ask(&r2, proof, pl, ans);
    cr_assert_eq(s_refusal(ans, n), ST_PAKE_R_WRONG, "a replayed proof was not refused");
    s_raw_close(&r2);

    /* a PROOF with one byte of the board's key changed, on its own exchange */
    st_pake_node_info_t other = s_board(2);
    uint8_t h2[ST_PAKE_MAX_MSG], p2[ST_PAKE_MAX_MSG];
    int hl2;
    s_raw_open(&r2, url);
    const int pl2 = s_raw_proof(&r2, &s2, code, &other, h2, &hl2, p2);
    p2[5 + ST_PAKE_POINT + 7] ^= 0x20;
    n = s_raw_ask(&r2, p2, pl2, ans);
    cr_assert_eq(s_refusal(ans, n), ST_PAKE_R_WRONG, "a tampered proof was not refused");
    s_raw_close(&r2);
    cr_assert(st_test_file_has(err, "attempt 2 of 10", 5000), "the refusals were not counted (%s)", err);
    cr_assert_eq(s_cluster_nodes(&seen, me.key), 0, "a refused proof reached the cluster file");

    /* the held-back PROOF on its own exchange: accepted, so the refusals above came from the replay */
    n = s_raw_ask(&r1, proof, pl, ans);
    cr_assert_eq(st_pake_node_finish(&s1, ans, (size_t)n, key, NULL), 0, "the original proof was refused");
    cr_assert_eq(s_cluster_nodes(&seen, me.key), 1);
    cr_assert(seen);
    /* and once more on the same connection: its exchange is over */
    n = s_raw_ask(&r1, proof, pl, ans);
    cr_assert_eq(s_refusal(ans, n), ST_PAKE_R_BAD, "a proof taken twice");
    s_raw_close(&r1);
    cr_assert_eq(s_cluster_nodes(&seen, me.key), 1);
    st_test_stop(coord, SIGTERM, 5000);
}

/* A "coordinator" that answers every HELLO with an empty message: the board must not take that
 * as a pairing (it once did, and wrote an uninitialised key to its allow file); it retries until
 * --join-timeout and exits 1 with no allow file. */
Test(pair, an_empty_answer_pairs_nothing) {
    void *ctx = zmq_ctx_new(), *router = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_bind(router, "tcp://127.0.0.1:*"), 0);
    char url[128], listen[64], store[300], allow[320], log[300];
    size_t sz = sizeof url;
    cr_assert_eq(zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, url, &sz), 0);
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", st_test_port_hold());
    snprintf(store, sizeof store, "%s/store-empty", g_dir);
    snprintf(allow, sizeof allow, "%s/allow", store);
    snprintf(log, sizeof log, "%s/empty.err", g_dir);
    const char *argv[] = {BIN "/st-node", "--listen", listen, "--join", url, "--code",         "ABCDE-23456", "--store",
                          store,          "--mem",    "64M",  "-t",     "1", "--join-timeout", "3",           NULL};
    pid_t node = st_test_spawn(argv, NULL, log, SIGKILL);
    int hellos = 0, st = -1;
    for (const double until = st_now_ms() + 30000; st < 0 && st_now_ms() < until;) {
        zmq_pollitem_t it = {router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) > 0) {
            uint8_t id[256], body[ST_PAKE_MAX_MSG];
            const int il = zmq_recv(router, id, sizeof id, 0), bl = zmq_recv(router, body, sizeof body, 0);
            if (il > 0 && (size_t)il <= sizeof id && bl > 5 && body[4] == ST_PAKE_HELLO) {
                hellos++;
                zmq_send(router, id, (size_t)il, ZMQ_SNDMORE);
                zmq_send(router, "", 0, 0);
            }
        }
        st = st_test_wait(node, 0);
    }
    zmq_close(router);
    zmq_ctx_term(ctx);
    if (st < 0) st_test_stop(node, SIGKILL, 5000);
    cr_assert_gt(hellos, 0, "the board never said HELLO (%s)", log);
    cr_assert_eq(st, 1, "the board did not give up pairing (status %d, %s)", st, log);
    cr_assert_neq(access(allow, F_OK), 0, "an empty answer wrote %s", allow);
    cr_assert(st_test_file_has(log, "no well-formed answer within 3 s", 0), "no reason given (%s)", log);
}

/* GET /health with the key into DIR/health.json, parsed (the caller deletes it). */
static cJSON *s_health(int http) {
    char path[300];
    snprintf(path, sizeof path, "%s/health.json", g_dir);
    cr_assert_eq(
        st_test_system("curl -sf -H 'Authorization: Bearer k3y' http://127.0.0.1:%d/health > '%s'", http, path), 0);
    cJSON *h = st_test_read_json(path);
    cr_assert_not_null(h);
    return h;
}

/* The web page's data: with no board yet the coordinator serves at once,
 * /health (behind the API key) says it waits and carries the code; a board
 * pairs with it and the cluster is ready. */
Test(pair, health_shows_the_pairing_code_and_waits_for_a_board) {
    const char *model = st_test_cluster_model();
    char err[300], code[ST_PAKE_CODE_BUF], url[128], out[300], cmd[2048];
    snprintf(err, sizeof err, "%s/coord.err", g_dir);
    snprintf(out, sizeof out, "%s/coord.out", g_dir);
    const int port = st_test_port_hold();
    snprintf(cmd, sizeof cmd,
             "exec '%s/st-coordinator' -m '%s' --cluster '%s/cluster' --key '%s/coord.key' --state-dir '%s' "
             "--quiet-push -t 1 --pair tcp://127.0.0.1:* --discovery-port 0 --http 127.0.0.1:0 --api-key k3y "
             "> '%s' 2> '%s'",
             BIN, model, g_dir, g_dir, g_dir, out, err);
    const char *cargv[] = {"/bin/sh", "-c", cmd, NULL};
    pid_t coord = st_test_spawn(cargv, NULL, NULL, SIGTERM);
    s_code(err, 1, code);
    s_endpoint(err, url, sizeof url);
    const int http = s_serving_port(out); /* it serves with no board */
    cJSON *h = s_health(http);
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(h, "pairing");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(pr, "code");
    const cJSON *left = cJSON_GetObjectItemCaseSensitive(pr, "expires_in_s");
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(h, "status");
    cr_assert(cJSON_IsString(c), "no pairing code in /health");
    cr_assert_str_eq(c->valuestring, code);
    cr_assert(cJSON_IsNumber(left) && left->valuedouble > 500 && left->valuedouble <= 600, "expires_in_s");
    cr_assert(cJSON_IsString(status) && !strcmp(status->valuestring, "waiting"), "not waiting for a board");
    cJSON_Delete(h);
    cr_assert_neq(st_test_system("curl -sf http://127.0.0.1:%d/health > /dev/null", http), 0, "served without the key");

    /* a board pairs: the cluster is ready. Its allow file holds a comment longer than any line
     * buffer: pairing keeps it one line, and the node reads it as one (before: split in two, the
     * second half "not a Z85 public key", and the board did not start) */
    char listen[64], store[300], nlog[300], allow[320];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
    snprintf(store, sizeof store, "%s/store", g_dir);
    snprintf(nlog, sizeof nlog, "%s/node.err", g_dir);
    snprintf(allow, sizeof allow, "%s/allow", store);
    cr_assert_eq(mkdir(store, 0700), 0);
    FILE *af = fopen(allow, "w");
    cr_assert_not_null(af);
    fputs("# keys of the coordinators this board serves;", af);
    for (int i = 0; i < 150; i++) fputs(" blah", af);
    fputc('\n', af);
    cr_assert_eq(fclose(af), 0);
    const char *argv[] = {BIN "/st-node", "--listen", listen,  "--join", url,  "--code", code,
                          "--store",      store,      "--mem", "256M",   "-t", "1",      NULL};
    st_test_node_t board;
    cr_assert_eq(st_test_node_start(&board, argv, nlog, 30000), 0, "the board did not serve (%s)", nlog);
    char *text = st_file_read(allow, 0, NULL);
    cr_assert_not_null(text);
    cr_assert_eq(strcspn(text, "\n"), strlen("# keys of the coordinators this board serves;") + 150 * 5,
                 "the comment line was cut: %s", text);
    free(text);
    cr_assert(st_test_file_has(err, "1 of 1 nodes up", WAIT_MS), "the board was not placed (%s)", err);
    const double until = st_now_ms() + WAIT_MS;
    bool ok = false;
    while (!ok && st_now_ms() < until) { /* the scheduler's view is refreshed about once a second */
        h = s_health(http);
        status = cJSON_GetObjectItemCaseSensitive(h, "status");
        ok = cJSON_IsString(status) && !strcmp(status->valuestring, "ok");
        cJSON_Delete(h);
        if (!ok) usleep(200 * 1000);
    }
    cr_assert(ok, "/health never said ok with the board up");
    st_test_node_stop(&board, SIGTERM);
    st_test_stop(coord, SIGTERM, 10000);
}

/* A board wiped (new store, new key) pairs again at the same address: the
 * running coordinator replaces its line and key and the board rejoins, its
 * share pushed again. */
Test(pair, a_board_that_pairs_again_with_a_new_key_rejoins) {
    const char *model = st_test_cluster_model();
    char err[300], code[ST_PAKE_CODE_BUF], url[128], out[300], cmd[2048];
    snprintf(err, sizeof err, "%s/coord.err", g_dir);
    snprintf(out, sizeof out, "%s/coord.out", g_dir);
    const int port = st_test_port_hold();
    snprintf(cmd, sizeof cmd,
             "exec '%s/st-coordinator' -m '%s' --cluster '%s/cluster' --key '%s/coord.key' --state-dir '%s' "
             "--quiet-push -t 1 --pair tcp://127.0.0.1:* --discovery-port 0 --http 127.0.0.1:0 > '%s' 2> '%s'",
             BIN, model, g_dir, g_dir, g_dir, out, err);
    const char *cargv[] = {"/bin/sh", "-c", cmd, NULL};
    pid_t coord = st_test_spawn(cargv, NULL, NULL, SIGTERM);
    s_code(err, 1, code);
    s_endpoint(err, url, sizeof url);
    char listen[64], store[300], nlog[300], cluster[300], line[200];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
    snprintf(store, sizeof store, "%s/store", g_dir);
    snprintf(nlog, sizeof nlog, "%s/node.err", g_dir);
    snprintf(cluster, sizeof cluster, "%s/cluster", g_dir);
    const char *argv[] = {BIN "/st-node", "--listen", listen,  "--join", url,  "--code", code,
                          "--store",      store,      "--mem", "256M",   "-t", "1",      NULL};
    st_test_node_t board;
    cr_assert_eq(st_test_node_start(&board, argv, nlog, 30000), 0, "the board did not serve (%s)", nlog);
    cr_assert(st_test_file_has(out, "serving on", WAIT_MS), "the server did not start (%s)", err);
    cr_assert(st_test_file_has(err, "1 of 1 nodes up", WAIT_MS), "the board was not placed (%s)", err);
    char old_key[41];
    memcpy(old_key, board.pub, sizeof old_key);

    /* wiped: a new store, so a new key and no allow file; the same command line pairs again */
    st_test_node_stop(&board, SIGTERM);
    cr_assert_eq(st_test_system("rm -rf '%s'", store), 0);
    cr_assert_eq(st_test_node_start(&board, argv, nlog, 30000), 0, "the wiped board did not serve (%s)", nlog);
    cr_assert_str_neq(board.pub, old_key, "a wiped store kept its key");
    cr_assert(st_test_file_has(err, "has a new key: reconnecting", WAIT_MS), "the new key was not taken (%s)", err);
    cr_assert(st_test_file_has(err, "rejoined: store verified", WAIT_MS), "the board did not rejoin (%s)", err);
    char *log = st_file_read(err, 0, NULL);
    const char *rj = strstr(log, "rejoined: store verified");
    long long sent = -1;
    cr_assert_eq(sscanf(strstr(rj, "experts, ") + 9, "%lld shard bytes sent", &sent), 1);
    cr_assert_gt(sent, 0, "nothing pushed to the wiped board");
    free(log);
    /* one line for that address, with the new key */
    snprintf(line, sizeof line, "%s %s", listen, board.pub);
    cr_assert(st_test_file_has(cluster, line, 0), "the cluster file does not have '%s'", line);
    char *cf = st_file_read(cluster, 0, NULL);
    cr_assert_null(strstr(cf, old_key), "the old key is still in the cluster file");
    free(cf);
    st_test_node_stop(&board, SIGTERM);
    st_test_stop(coord, SIGTERM, 10000);
}

/* ---- network namespaces: discovery on a bridge ------------------------------------- */

#define NS(ns, fmt, ...) st_test_system("'%s' netns exec %s " fmt, g_ip, ns, __VA_ARGS__)

static char g_ns_c[32], g_ns_n[N_BOARDS][32];

/* ns C with bridge br0 (10.78.0.1/24); board k in ns Nk at 10.78.0.(k+2) on a veth into br0. */
static void s_bridge(void) {
    if (geteuid() != 0) cr_skip_test("needs root (network namespaces)");
    const char *dirs[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"};
    g_ip[0] = '\0';
    for (size_t i = 0; i < 4 && !g_ip[0]; i++)
        if (access(dirs[i], X_OK) == 0) snprintf(g_ip, sizeof g_ip, "%s", dirs[i]);
    if (!g_ip[0]) cr_skip_test("needs `ip` (iproute2)");
    g_ns_made = true;
    s_cleanup_namespaces();
    const int pid = (int)getpid();
    snprintf(g_ns_c, sizeof g_ns_c, "stpr-%d-c", pid);
    if (st_test_system("'%s' netns add %s 2>/dev/null", g_ip, g_ns_c) != 0)
        cr_skip_test("cannot create a network namespace here (no CAP_NET_ADMIN?)");
    cr_assert_eq(NS(g_ns_c,
                    "sh -c 'ip link set lo up && ip link add br0 type bridge && "
                    "ip addr add 10.78.0.1/24 dev br0 && ip link set br0 up'%s",
                    ""),
                 0);
    for (int k = 0; k < N_BOARDS; k++) {
        snprintf(g_ns_n[k], sizeof g_ns_n[k], "stpr-%d-n%d", pid, k);
        cr_assert_eq(st_test_system("'%s' netns add %s", g_ip, g_ns_n[k]), 0);
        cr_assert_eq(NS(g_ns_c,
                        "sh -c 'ip link add vc%d type veth peer name vn%d netns %s && ip link set vc%d master br0 && "
                        "ip link set vc%d up'",
                        k, k, g_ns_n[k], k, k),
                     0);
        cr_assert_eq(NS(g_ns_n[k],
                        "sh -c 'ip link set lo up && ip addr add 10.78.0.%d/24 dev vn%d && ip link set vn%d up'", k + 2,
                        k, k),
                     0);
    }
}

/* Board k: st-node --join --code CODE with no address (discovery), in its namespace. */
static pid_t s_board_start(int k, const char *code) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "exec '%s' netns exec %s '%s/st-node' --listen tcp://10.78.0.%d:5555 --join --code '%s' --store "
             "'%s/store-%d' --mem 256M -t 1 --id board-%d > '%s/board-%d.out' 2>> '%s/board-%d.err'",
             g_ip, g_ns_n[k], BIN, k + 2, code, g_dir, k, k, g_dir, k, g_dir, k);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    return st_test_spawn(argv, NULL, NULL, SIGKILL);
}

/* Waits for the one-shot coordinator; its output (the test fails on a hang or an error). */
static char *s_coord_finish(pid_t pid, const char *tag) {
    int st = st_test_wait(pid, 180000);
    if (st < 0) st_test_stop(pid, SIGKILL, 5000);
    char path[300];
    snprintf(path, sizeof path, "%s/%s.err", g_dir, tag);
    char *err = st_file_read(path, 0, NULL);
    cr_assert_eq(st, 0, "%s: the coordinator failed (%d):\n%s", tag, st, err ? err : "");
    free(err);
    snprintf(path, sizeof path, "%s/%s.out", g_dir, tag);
    char *out = st_file_read(path, 0, NULL);
    cr_assert_not_null(out);
    return out;
}

Test(pair, boards_discover_pair_serve_and_restart_without_pairing) {
    const char *model = st_test_cluster_model();
    char *ref = s_reference(model);
    s_bridge();
    char err[300], code[ST_PAKE_CODE_BUF];
    snprintf(err, sizeof err, "%s/pair.err", g_dir);

    /* the coordinator waits for 8 boards; the boards know nothing but the code */
    pid_t coord = s_coord_start(g_ns_c, model, "coord.key", "--pair tcp://10.78.0.1:7600", N_BOARDS, "pair");
    s_code(err, 1, code);
    const double t0 = st_now_ms();
    pid_t boards[N_BOARDS];
    for (int k = 0; k < N_BOARDS; k++) boards[k] = s_board_start(k, code);
    char *t = s_wait_lines(err, "paired node board-", N_BOARDS, WAIT_MS);
    cr_assert_not_null(t, "not all %d boards paired:\n%s", N_BOARDS, t ? t : "");
    const double pair_ms = st_now_ms() - t0;
    free(t);
    char *out = s_coord_finish(coord, "pair");
    cr_assert_str_eq(out, ref, "the paired cluster's output differs from st-run's");
    free(out);
    cr_assert(st_test_file_has(err, "8 of 8 nodes up", 0), "not every board served (%s)", err);
    for (int k = 0; k < N_BOARDS; k++) {
        char line[64];
        snprintf(line, sizeof line, "tcp://10.78.0.%d:5555", k + 2);
        cr_assert(st_test_file_has(err, line, 0), "board %d not reached at its address", k);
    }

    /* restart both: the boards with the same command line (the code is stale: no pairing happens), the
     * coordinator with --pair again (a new code), as its service would */
    for (int k = 0; k < N_BOARDS; k++) st_test_stop(boards[k], SIGTERM, 10000);
    const double t1 = st_now_ms();
    for (int k = 0; k < N_BOARDS; k++) boards[k] = s_board_start(k, code);
    for (int k = 0; k < N_BOARDS; k++) {
        char log[300];
        snprintf(log, sizeof log, "%s/board-%d.err", g_dir, k);
        cr_assert(st_test_file_has(log, "already paired", WAIT_MS), "board %d paired again (%s)", k, log);
    }
    pid_t again = s_coord_start(g_ns_c, model, "coord.key", "--no-fallback --pair tcp://10.78.0.1:7600", N_BOARDS,
                                "again"); /* as a service restarts it: still pairing, with a new code */
    out = s_coord_finish(again, "again");
    const double restart_ms = st_now_ms() - t1;
    cr_assert_str_eq(out, ref, "after the restarts the output differs from st-run's");
    free(out);
    char again_err[300], code2[ST_PAKE_CODE_BUF];
    snprintf(again_err, sizeof again_err, "%s/again.err", g_dir);
    s_code(again_err, 1, code2);
    cr_assert_str_neq(code, code2, "the code did not change at the restart");
    cr_assert(!st_test_file_has(again_err, "paired node", 0), "a board paired again after the restart");

    /* a coordinator with a key no board paired with: every board refuses it */
    cr_assert_eq(st_test_system("'%s/st-keygen' '%s/stranger' > /dev/null 2>&1", BIN, g_dir), 0);
    pid_t stranger = s_coord_start(g_ns_c, model, "stranger.key", "--no-fallback", 0, "stranger");
    for (int k = 0; k < N_BOARDS; k++) {
        char log[300];
        snprintf(log, sizeof log, "%s/board-%d.err", g_dir, k);
        cr_assert(st_test_file_has(log, "is not on the allow list", WAIT_MS), "board %d let a stranger in", k);
    }
    /* no board answered it: with --no-fallback it gives up */
    cr_assert_eq(st_test_wait(stranger, WAIT_MS), 1, "the stranger's coordinator did not fail");
    cr_log_info("%d boards discovered the coordinator and paired in %.0f ms (from the code printed to the last "
                "\"paired node\" line); restarted and served again in %.0f ms",
                N_BOARDS, pair_ms, restart_ms);
    fprintf(stderr, "test_pair: %d boards paired in %.0f ms; restart to served output %.0f ms\n", N_BOARDS, pair_ms,
            restart_ms);
    free(ref);
}
