/* st-delay-proxy: a TCP proxy that holds every chunk it reads for a fixed
 * delay before passing it on, both ways, in order. The network tests use it
 * for link latency because this machine's kernel has no netem.
 *
 *   st-delay-proxy --listen HOST:PORT --to HOST:PORT --delay MS
 *
 * It prints "listening on HOST:PORT" (the port it got when given 0) on
 * stdout, then serves until SIGTERM/SIGINT. Each accepted connection gets
 * its own connection to --to; what one side sends reaches the other side
 * --delay ms after the proxy read it (later when that side is slower), and
 * a half close is passed on after the delay too. A reset or error on either
 * side closes both.
 *
 * One thread, one poll() loop. Each direction has a fixed ring buffer and a
 * fixed ring of chunk records (length, due time): a read takes at most the
 * free space and one record, so memory per connection is bounded and a slow
 * receiver stops the proxy from reading its sender (TCP back-pressure), as a
 * real link would. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"

#define RING_BYTES (1u << 20) /* bytes held per direction */
#define RING_CHUNKS 1024      /* reads held per direction */
#define MAX_CONNS 128

typedef struct {
    uint32_t len;
    double due; /* ms, st_now_ms */
} chunk_t;

typedef struct {
    uint8_t buf[RING_BYTES];
    size_t head, used; /* bytes: oldest unsent at head */
    chunk_t ch[RING_CHUNKS];
    unsigned ch_head, ch_n; /* chunk records, oldest first */
    bool eof_in;            /* the source closed its side */
    double eof_due;         /* when to pass the close on */
    bool eof_out;           /* passed on (shutdown of the destination) */
} dir_t;

typedef struct {
    int fd[2];       /* 0: the client, 1: upstream */
    bool connecting; /* upstream connect() in progress */
    dir_t d[2];      /* d[0]: client -> upstream, d[1]: upstream -> client */
} conn_t;

static volatile sig_atomic_t s_stop;
static void s_on_signal(int sig) { (void)sig, s_stop = 1; }

static int s_usage(void) {
    fprintf(stderr, "usage: st-delay-proxy --listen HOST:PORT --to HOST:PORT --delay MS\n"
                    "  holds every chunk MS milliseconds before forwarding it, both ways, in order;\n"
                    "  prints 'listening on HOST:PORT' on stdout (PORT 0: any free port)\n");
    return 2;
}

/* "HOST:PORT" -> address (numeric or resolved); 0 or -1. */
static int s_addr(const char *spec, struct sockaddr_storage *sa, socklen_t *len) {
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof host) return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai) || !ai) return -1;
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static void s_tune(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void s_conn_close(conn_t **cp) {
    conn_t *c = *cp;
    for (int i = 0; i < 2; i++)
        if (c->fd[i] >= 0) close(c->fd[i]);
    free(c);
    *cp = NULL;
}

/* Reads what fits from fd into d; false when the connection is to be closed. */
static bool s_read(dir_t *d, int fd, double now, int delay) {
    while (!d->eof_in && d->used < RING_BYTES && d->ch_n < RING_CHUNKS) {
        size_t tail = (d->head + d->used) % RING_BYTES;
        size_t room = tail >= d->head && d->used < RING_BYTES ? RING_BYTES - tail : d->head - tail;
        ssize_t n = read(fd, d->buf + tail, room);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        if (n == 0) {
            d->eof_in = true;
            d->eof_due = now + delay;
            return true;
        }
        d->used += (size_t)n;
        d->ch[(d->ch_head + d->ch_n++) % RING_CHUNKS] = (chunk_t){(uint32_t)n, now + delay};
    }
    return true;
}

/* Writes the due chunks of d to fd (and a due close); false on a write error. */
static bool s_write(dir_t *d, int fd, double now) {
    while (d->ch_n > 0 && d->ch[d->ch_head].due <= now) {
        chunk_t *c = &d->ch[d->ch_head];
        size_t contig = RING_BYTES - d->head < c->len ? RING_BYTES - d->head : c->len;
        ssize_t n = send(fd, d->buf + d->head, contig, MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        d->head = (d->head + (size_t)n) % RING_BYTES;
        d->used -= (size_t)n;
        c->len -= (uint32_t)n;
        if (c->len == 0) d->ch_head = (d->ch_head + 1) % RING_CHUNKS, d->ch_n--;
        if ((size_t)n < contig) return true; /* the socket is full */
    }
    if (d->ch_n == 0 && d->eof_in && !d->eof_out && d->eof_due <= now) {
        shutdown(fd, SHUT_WR);
        d->eof_out = true;
    }
    return true;
}

/* The next time something of d falls due (INFINITY-like 1e300 when nothing). */
static double s_due(const dir_t *d) {
    if (d->ch_n > 0) return d->ch[d->ch_head].due;
    if (d->eof_in && !d->eof_out) return d->eof_due;
    return 1e300;
}

int main(int argc, char **argv) {
    const char *listen_spec = NULL, *to_spec = NULL;
    long delay = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            s_usage();
            return 0;
        }
        if (i + 1 >= argc) return s_usage();
        if (!strcmp(argv[i], "--listen"))
            listen_spec = argv[++i];
        else if (!strcmp(argv[i], "--to"))
            to_spec = argv[++i];
        else if (!strcmp(argv[i], "--delay")) {
            char *end;
            delay = strtol(argv[++i], &end, 10);
            if (*end || delay < 0 || delay > 60000) return s_usage();
        } else
            return s_usage();
    }
    if (!listen_spec || !to_spec || delay < 0) return s_usage();
    struct sockaddr_storage la, ta;
    socklen_t llen, tlen;
    if (s_addr(listen_spec, &la, &llen) || s_addr(to_spec, &ta, &tlen)) {
        fprintf(stderr, "st-delay-proxy: bad address %s or %s\n", listen_spec, to_spec);
        return 2;
    }
    signal(SIGTERM, s_on_signal);
    signal(SIGINT, s_on_signal);
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(la.ss_family, SOCK_STREAM, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&la, llen) || listen(lfd, 64)) {
        fprintf(stderr, "st-delay-proxy: cannot listen on %s: %s\n", listen_spec, strerror(errno));
        return 1;
    }
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    struct sockaddr_storage got;
    socklen_t glen = sizeof got;
    getsockname(lfd, (struct sockaddr *)&got, &glen);
    char host[128], port[16];
    getnameinfo((struct sockaddr *)&got, glen, host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
    printf("listening on %s:%s\n", host, port);
    fflush(stdout);

    conn_t *conns[MAX_CONNS] = {0};
    int at[MAX_CONNS]; /* index of a connection's first pollfd (-1: not polled this turn) */
    struct pollfd pf[1 + 2 * MAX_CONNS];
    unsigned long long n_conns = 0;
    while (!s_stop) {
        const double now = st_now_ms();
        double next = now + 1000;
        int np = 0;
        pf[np++] = (struct pollfd){lfd, POLLIN, 0};
        for (int k = 0; k < MAX_CONNS; k++) {
            conn_t *c = conns[k];
            at[k] = -1;
            if (!c) continue;
            at[k] = np;
            for (int s = 0; s < 2; s++) { /* side s reads into d[s] and writes d[1 - s] */
                short ev = 0;
                const dir_t *in = &c->d[s], *out = &c->d[1 - s];
                bool connected = !(s == 1 && c->connecting);
                if (!in->eof_in && in->used < RING_BYTES && in->ch_n < RING_CHUNKS && connected) ev |= POLLIN;
                if (c->connecting && s == 1)
                    ev |= POLLOUT;
                else if (out->ch_n > 0 && out->ch[out->ch_head].due <= now)
                    ev |= POLLOUT;
                double due = s_due(out);
                if (due < next) next = due;
                pf[np++] = (struct pollfd){ev ? c->fd[s] : -1, ev, 0}; /* -1: no POLLHUP spin */
            }
        }
        int wait = next <= now ? 0 : (int)(next - now + 0.999);
        int r = poll(pf, (nfds_t)np, wait);
        if (r < 0 && errno != EINTR) {
            perror("st-delay-proxy: poll");
            return 1;
        }
        const double t = st_now_ms();
        if (r > 0 && (pf[0].revents & POLLIN)) { /* new clients */
            for (;;) {
                int cfd = accept(lfd, NULL, NULL);
                if (cfd < 0) break;
                int k = 0;
                while (k < MAX_CONNS && conns[k]) k++;
                conn_t *c = k < MAX_CONNS ? calloc(1, sizeof *c) : NULL;
                if (!c) {
                    close(cfd);
                    continue;
                }
                c->fd[0] = cfd;
                c->fd[1] = socket(ta.ss_family, SOCK_STREAM, 0);
                s_tune(cfd);
                s_tune(c->fd[1]);
                c->connecting = true;
                if (c->fd[1] < 0 || (connect(c->fd[1], (struct sockaddr *)&ta, tlen) && errno != EINPROGRESS)) {
                    s_conn_close(&c);
                    continue;
                }
                conns[k] = c;
                at[k] = -1;
                n_conns++;
            }
        }
        for (int k = 0; k < MAX_CONNS; k++) {
            conn_t *c = conns[k];
            if (!c || at[k] < 0) continue; /* accepted just now: nothing to do yet */
            bool ok = true;
            for (int s = 0; s < 2 && ok; s++) {
                short re = pf[at[k] + s].revents;
                if (s == 1 && c->connecting && (re & (POLLOUT | POLLERR | POLLHUP))) {
                    int err = 0;
                    socklen_t el = sizeof err;
                    getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &el);
                    if (err)
                        ok = false;
                    else
                        c->connecting = false;
                    re &= ~POLLOUT;
                }
                if (!ok) break;
                if (re & (POLLIN | POLLHUP | POLLERR)) ok = s_read(&c->d[s], c->fd[s], t, (int)delay);
            }
            for (int s = 0; s < 2 && ok; s++)
                if (!(s == 0 && c->connecting)) ok = s_write(&c->d[s], c->fd[1 - s], t);
            if (ok && c->d[0].eof_out && c->d[1].eof_out) ok = false; /* both sides closed: done */
            if (!ok) s_conn_close(&conns[k]);
        }
    }
    fprintf(stderr, "st-delay-proxy: stopping after %llu connections\n", n_conns);
    for (int k = 0; k < MAX_CONNS; k++)
        if (conns[k]) s_conn_close(&conns[k]);
    close(lfd);
    return 0;
}
