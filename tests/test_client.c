/* st-chat and st-ctl (client/) against a hostile HTTP server on the LAN: a
 * socket in this test that answers with a body that never ends, an SSE
 * event that never ends (one line without a newline), or endless events
 * of text. Each client must leave with status 1 and a message naming the
 * URL and the limit (16 MiB, client/body.h), having read about that
 * much and no more: the server sends up to SERVER_CAP (16 times the limit;
 * it stops earlier when the client hangs up), and the client's peak RSS
 * (wait4) stays under its RSS on a normal answer plus 4 times the limit
 * (8 under ASan, whose quarantine keeps freed buffers).
 * Before the bound, st-ctl's RSS grew with every byte (and its copies with
 * their square: strlen of the whole body per 16 KiB piece).
 *
 * At the edge: an answer of exactly ST_CLIENT_MAX_BODY bytes is taken, one
 * byte more is refused; a 64-node /health of the 21B is far below it.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define LIMIT ((size_t)16 << 20) /* the README's (client/body.h's ST_CLIENT_MAX_BODY) */
#define SERVER_CAP (16 * LIMIT)  /* what an endless answer sends at most: the test must end anyway */
#define WAIT_MS 120000

static char g_dir[256];

static void setup(void) {
    signal(SIGPIPE, SIG_IGN);
    st_test_tmpdir(g_dir, sizeof g_dir, "client");
}

TestSuite(client, .init = setup, .fini = st_test_cleanup, .timeout = 300);

/* ---- the server -------------------------------------------------------------- */

typedef enum {
    ANSWER_SIZED,         /* 200, Content-Length: size, a JSON object of exactly size bytes */
    ANSWER_ENDLESS,       /* 200, no length, "{\"pad\":\"xxxx..." until the client leaves */
    ANSWER_ENDLESS_LINE,  /* 200 text/event-stream, "data: {\"choices\":..." with no newline, ever */
    ANSWER_ENDLESS_EVENTS /* 200 text/event-stream, one valid 4 KiB text event after another */
} answer_t;

typedef struct {
    int fd; /* listening */
    int port;
    answer_t answer; /* to the path under test (every other path: a small /v1/models) */
    const char *path;
    size_t size;      /* ANSWER_SIZED */
    size_t sent;      /* bytes of the answer under test sent (its body) */
    bool hung_up;     /* the client closed before SERVER_CAP */
    pthread_t thread; /* serves connections until fd is shut down */
} server_t;

static bool s_send_all(int c, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(c, p, n, MSG_NOSIGNAL);
        if (k <= 0) return false;
        p += k, n -= (size_t)k;
    }
    return true;
}

/* The request head (and a small body after it, ignored); false when the client left. */
static bool s_read_request(int c, char *req, size_t cap) {
    size_t len = 0;
    req[0] = '\0';
    while (!strstr(req, "\r\n\r\n")) {
        if (len + 1 >= cap) return false;
        ssize_t k = recv(c, req + len, cap - 1 - len, 0);
        if (k <= 0) return false;
        req[len += (size_t)k] = '\0';
    }
    return true;
}

/* Sends filler after head until SERVER_CAP or the client leaves; each piece from piece(). */
static void s_endless(server_t *s, int c, const char *head, const char *first, const char *piece) {
    if (!s_send_all(c, head, strlen(head)) || !s_send_all(c, first, strlen(first))) return;
    s->sent = strlen(first);
    const size_t n = strlen(piece);
    while (s->sent < SERVER_CAP) {
        if (!s_send_all(c, piece, n)) {
            s->hung_up = true;
            return;
        }
        s->sent += n;
    }
}

static void *s_serve(void *arg) {
    server_t *s = arg;
    static char pad[64 << 10], event[8 << 10];
    memset(pad, 'x', sizeof pad - 1);
    /* one valid SSE event of 4000 bytes of text */
    int k = snprintf(event, sizeof event, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"");
    memset(event + k, 'y', 4000);
    snprintf(event + k + 4000, sizeof event - (size_t)k - 4000, "\"},\"finish_reason\":null}]}\n\n");
    for (;;) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0) return NULL;
        char req[8192];
        if (!s_read_request(c, req, sizeof req)) {
            close(c);
            continue;
        }
        char target[128];
        snprintf(target, sizeof target, " %s ", s->path);
        if (!strstr(req, target)) { /* st-chat's first request */
            const char *models = "{\"object\":\"list\",\"data\":[{\"id\":\"hostile.gguf\",\"object\":\"model\"}]}";
            char head[256];
            snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: "
                     "close\r\n\r\n",
                     strlen(models));
            if (s_send_all(c, head, strlen(head))) s_send_all(c, models, strlen(models));
        } else if (s->answer == ANSWER_SIZED) { /* {"status":"ok","nodes":[],"pad":"xxx...x"} of s->size bytes */
            const char *open = "{\"status\":\"ok\",\"nodes\":[],\"pad\":\"", *close_ = "\"}";
            char head[256];
            snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: "
                     "close\r\n\r\n",
                     s->size);
            size_t fill = s->size - strlen(open) - strlen(close_);
            bool ok = s_send_all(c, head, strlen(head)) && s_send_all(c, open, strlen(open));
            s->sent = strlen(open);
            while (ok && fill) {
                size_t n = fill < sizeof pad - 1 ? fill : sizeof pad - 1;
                ok = s_send_all(c, pad, n);
                fill -= n, s->sent += n;
            }
            if (ok && s_send_all(c, close_, strlen(close_))) s->sent += strlen(close_);
            s->hung_up = !ok;
        } else if (s->answer == ANSWER_ENDLESS) {
            s_endless(s, c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
                      "{\"pad\":\"", pad);
        } else {
            const char *head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";
            if (s->answer == ANSWER_ENDLESS_LINE)
                s_endless(s, c, head, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"", pad);
            else
                s_endless(s, c, head, "", event);
        }
        close(c);
    }
}

static void s_server_start(server_t *s, answer_t answer, const char *path, size_t size) {
    *s = (server_t){.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), .answer = answer, .path = path, .size = size};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert(s->fd >= 0 && bind(s->fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(s->fd, 8) == 0);
    cr_assert_eq(getsockname(s->fd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    cr_assert_eq(pthread_create(&s->thread, NULL, s_serve, s), 0);
}

static void s_server_stop(server_t *s) {
    shutdown(s->fd, SHUT_RDWR);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

/* ---- the client ---------------------------------------------------------------- */

typedef struct {
    int status;     /* exit status, 128 + signal */
    long rss_kib;   /* peak RSS */
    char err[4096]; /* its stderr (the start) */
} run_t;

/* Runs BIN/prog with args (NULL-terminated) and stdin from the text in, within WAIT_MS. */
static run_t s_run(const char *prog, const char *const *args, const char *in) {
    char path[300], inf[300], errf[300];
    snprintf(path, sizeof path, "%s/%s", ST_BINARY_DIR, prog);
    snprintf(inf, sizeof inf, "%s/stdin", g_dir);
    snprintf(errf, sizeof errf, "%s/stderr", g_dir);
    FILE *f = fopen(inf, "w");
    cr_assert_not_null(f);
    fputs(in, f);
    cr_assert_eq(fclose(f), 0);
    const char *argv[16] = {path};
    for (int i = 0; args[i]; i++) argv[i + 1] = args[i];
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int i = open(inf, O_RDONLY), o = open("/dev/null", O_WRONLY),
            e = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (i < 0 || o < 0 || e < 0) _exit(127);
        dup2(i, 0), dup2(o, 1), dup2(e, 2);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    run_t r = {.status = -1};
    struct rusage ru;
    int st;
    for (const double dl = st_now_ms() + WAIT_MS;;) {
        pid_t w = wait4(pid, &st, WNOHANG, &ru);
        cr_assert_geq(w, 0, "wait4: %s", strerror(errno));
        if (w == pid) break;
        if (st_now_ms() > dl) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            cr_assert_fail("%s did not exit within %d ms", prog, WAIT_MS);
        }
        poll(NULL, 0, 10); /* polling its exit, bounded by the deadline */
    }
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.rss_kib = ru.ru_maxrss;
    char *e = st_file_read(errf, 0, NULL);
    snprintf(r.err, sizeof r.err, "%s", e ? e : "");
    free(e);
    return r;
}

/* The client's peak RSS on a small answer: what it costs without any answer to speak of. */
static long s_baseline_kib(const char *prog) {
    server_t s;
    s_server_start(&s, ANSWER_SIZED, "/health", 64);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    const char *args[] = {"--url", url, NULL};
    run_t r = s_run(prog, args, "/stats\n/quit\n");
    s_server_stop(&s);
    cr_assert_eq(r.status, 0, "%s on a small answer: %s", prog, r.err);
    return r.rss_kib;
}

/* The refusal: status 1, the message with the URL + path and the limit, about the
 * limit read and no more held. */
static void s_refused(const char *prog, const run_t *r, const server_t *s, const char *what, long base_kib) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s of http://127.0.0.1:%d%s passed 16 MiB", prog, what, s->port, s->path);
    cr_log_info("%s: peak RSS %ld KiB (%ld KiB on a small answer), the server sent %zu B; said: %s", prog, r->rss_kib,
                base_kib, s->sent, r->err);
    cr_assert_eq(r->status, 1, "%s exited %d: %s", prog, r->status, r->err);
    cr_assert(strstr(r->err, msg), "want '%s' in: %s", msg, r->err);
    cr_assert(s->hung_up, "the client read all %zu B the server had", s->sent);
    cr_assert_geq(s->sent, LIMIT, "refused after %zu B only: not for its size", s->sent);
#ifdef __SANITIZE_ADDRESS__ /* ASan's quarantine keeps the freed buffers resident: RSS is not the client's own */
    const long bound = base_kib + 8 * (long)(LIMIT >> 10);
#else
    const long bound = base_kib + 4 * (long)(LIMIT >> 10);
#endif
    cr_assert_lt(r->rss_kib, bound, "%s held %ld KiB: more than %ld KiB", prog, r->rss_kib, bound);
}

/* prog against a server giving answer at path: it stops with the message about what, in bounded memory. */
static void s_refuses(const char *prog, answer_t answer, const char *path, const char *what) {
    const long base = s_baseline_kib(prog);
    server_t s;
    s_server_start(&s, answer, path, 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
    const bool ctl = !strcmp(prog, "st-ctl");
    const char *args[] = {"--url", url, ctl ? "status" : NULL, NULL};
    run_t r = s_run(prog, args, ctl ? "" : "hello\n/quit\n");
    s_server_stop(&s);
    s_refused(prog, &r, &s, what, base);
}

Test(client, ctl_refuses_an_endless_health) { s_refuses("st-ctl", ANSWER_ENDLESS, "/health", "the answer"); }

Test(client, chat_refuses_an_endless_models_answer) {
    s_refuses("st-chat", ANSWER_ENDLESS, "/v1/models", "the answer");
}

Test(client, chat_refuses_an_endless_sse_line) {
    s_refuses("st-chat", ANSWER_ENDLESS_LINE, "/v1/chat/completions", "one SSE event");
}

Test(client, chat_refuses_endless_events_of_text) {
    s_refuses("st-chat", ANSWER_ENDLESS_EVENTS, "/v1/chat/completions", "the answer's text");
}

/* The edge: exactly the limit is an answer (st-ctl reads it: no node, "a single process"), one
 * byte more is not. */
Test(client, ctl_takes_the_limit_and_refuses_one_byte_more) {
    for (int over = 0; over <= 1; over++) {
        server_t s;
        s_server_start(&s, ANSWER_SIZED, "/health", LIMIT + (size_t)over);
        char url[64];
        snprintf(url, sizeof url, "http://127.0.0.1:%d", s.port);
        const char *args[] = {"--url", url, "status", NULL};
        run_t r = s_run("st-ctl", args, "");
        s_server_stop(&s);
        if (!over) {
            cr_assert_eq(r.status, 0, "an answer of exactly %zu B: %s", LIMIT, r.err);
            cr_assert_eq(s.sent, LIMIT);
        } else {
            cr_assert_eq(r.status, 1, "an answer of %zu B", LIMIT + 1);
            cr_assert(strstr(r.err, "passed 16 MiB"), "%s", r.err);
        }
    }
}
