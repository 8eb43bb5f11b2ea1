/* pair: the coordinator's side of pairing (see pair.h; the exchange itself
 * is proto/pake.c's).
 *
 * The thread polls the ROUTER and the UDP socket every 200 ms at most, and
 * between them replaces an expired code and drops exchanges older than
 * SESSION_MS. An exchange is keyed by the ROUTER's routing id, which is new
 * for every connection: a message replayed on another connection finds no
 * exchange open, and every exchange takes one PROOF, right or wrong.
 *
 * Wrong proofs are counted per address (the Peer-Address the socket gives):
 * one address gets max_attempts against a code, then it is refused (before
 * any exchange) until the code changes, so one machine on the LAN cannot
 * kill the code the user is typing into the boards. A flood from many
 * addresses is held by the count over all of them: after max_total_attempts
 * (1000 by default) the code is replaced. A code is 10 symbols of 31, 31^10
 * = 8.2e14 codes, and each exchange tests one guess (the PAKE gives nothing
 * to test offline), so a code falls in at most 1000 / 8.2e14 = 1.2e-12 of
 * its lifetimes; since each new code is drawn afresh, a flood needs about
 * 8.2e14 tries on average: 26000 years at 1000 exchanges a second.
 *
 * Refusals are logged through three limiters (common/log_limit.h), keyed by
 * the address: wrong codes, tries of an address out of wrong tries, and
 * the other refusals (busy, malformed, replayed). Each address gets its
 * first lines, then one summary per interval ("pairing: 523 more wrong tries
 * from 10.0.0.7 in the last 60 s"). Not again at each new code: a flood
 * from many addresses replaces the code every max_total_attempts tries,
 * and would get everyone's first lines again each time.
 */
#include "pair.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "cluster_file.h"
#include "curve.h"
#include "log_limit.h"
#include "st_log.h"

#define POLL_MS 200
#define MAX_SESSIONS 64     /* exchanges open at once */
#define SESSIONS_PER_PEER 8 /* of them from one address */
#define TOTAL_PER_PEER 100  /* default max_total_attempts: 100 addresses' worth */
#define SESSION_MS 30000    /* an exchange not finished by then is dropped */
#define MAX_ROUTING_ID 256  /* ZeroMQ's routing ids are 5 bytes; a peer cannot choose ours */

typedef struct {
    bool used;
    uint8_t rid[MAX_ROUTING_ID];
    size_t rid_len;
    st_pake_t pake;
    uint64_t code_gen; /* the code the exchange started with */
    double t0;
    char peer[64];
} s_session_t;

typedef struct {
    char peer[64];
    int wrong; /* wrong proofs against the current code */
} s_sender_t;

struct st_pair {
    st_pair_opts_t o;
    uint8_t coord_key[ST_PAKE_KEY];
    void *zctx, *router;
    int udp;
    int port; /* of the ROUTER */
    char endpoint[256];
    pthread_t thread;
    bool started;
    atomic_int stop;
    atomic_int paired;
    pthread_mutex_t mu; /* code, expires_ms: read by other threads (st_pair_code) */
    char code[ST_PAKE_CODE_BUF];
    double expires_ms;
    uint64_t code_gen;
    int attempts;        /* wrong proofs against the current code, from every address */
    s_sender_t *senders; /* the addresses with wrong proofs against it (max_total_attempts at most) */
    int n_senders;
    st_log_limit_t *log_wrong;  /* wrong codes, per address */
    st_log_limit_t *log_locked; /* tries of an address out of wrong tries, per address */
    st_log_limit_t *log_other;  /* busy, malformed, replayed, per address */
    s_session_t sess[MAX_SESSIONS];
};

/* Whether to log a refusal of peer's, or only count it (see the top). */
static bool s_log_ok(st_log_limit_t *l, const char *peer) { return st_log_limit_ok(l, peer, st_now_ms()); }

/* The code into the code file (0600 from the start; a temporary file, then rename). */
static void s_code_file(const st_pair_t *p, const char *code) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", p->o.code_file, (int)getpid()) >= (int)sizeof tmp) return;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    char line[ST_PAKE_CODE_BUF + 1];
    const int n = snprintf(line, sizeof line, "%s\n", code);
    bool ok = fd >= 0 && write(fd, line, (size_t)n) == n;
    if (fd >= 0) ok &= close(fd) == 0;
    if (!ok || rename(tmp, p->o.code_file) != 0) {
        unlink(tmp);
        st_log(ST_LOG_WARN, "cannot write the pairing code to %s: %s", p->o.code_file, strerror(errno));
    }
}

/* A new code, printed for the user (the interface line "pairing code: CODE"). */
static void s_new_code(st_pair_t *p, const char *why) {
    pthread_mutex_lock(&p->mu);
    st_pake_code_new(p->code);
    p->expires_ms = st_now_ms() + 1e3 * p->o.ttl_s;
    p->code_gen++;
    p->attempts = 0;
    p->n_senders = 0;
    char code[ST_PAKE_CODE_BUF];
    memcpy(code, p->code, sizeof code);
    pthread_mutex_unlock(&p->mu);
    fprintf(stderr, "pairing code: %s\n", code);
    if (p->o.code_file) s_code_file(p, code);
    st_log(ST_LOG_INFO, "pairing on %s: %s; the code is valid %d min, for up to %d wrong tries per address (%d in all)",
           p->endpoint, why, (p->o.ttl_s + 59) / 60, p->o.max_attempts, p->o.max_total_attempts);
}

/* The URL the coordinator reaches the node at: its endpoint, with a wildcard
 * host replaced by the address it paired from. 0, or ST_EPROTO when the
 * endpoint is not tcp://HOST:PORT with a port number. */
static int s_node_url(const char *endpoint, const char *peer, char *out, size_t cap) {
    if (strncmp(endpoint, "tcp://", 6) != 0) return ST_EPROTO;
    const char *host = endpoint + 6, *colon = strrchr(host, ':');
    if (!colon) return ST_EPROTO;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end || errno || port < 1 || port > 65535) return ST_EPROTO;
    const size_t hl = (size_t)(colon - host);
    const bool any = (hl == 1 && host[0] == '*') || (hl == 7 && !strncmp(host, "0.0.0.0", 7)) ||
                     (hl == 4 && !strncmp(host, "[::]", 4)) || hl == 0;
    int n = any ? snprintf(out, cap, strchr(peer, ':') ? "tcp://[%s]:%ld" : "tcp://%s:%ld", peer, port)
                : snprintf(out, cap, "tcp://%.*s:%ld", (int)hl, host, port);
    return n > 0 && (size_t)n < cap ? 0 : ST_EPROTO;
}

/* ---- the exchange ---------------------------------------------------------------- */

static s_session_t *s_find(st_pair_t *p, const uint8_t *rid, size_t len) {
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (p->sess[i].used && p->sess[i].rid_len == len && !memcmp(p->sess[i].rid, rid, len)) return &p->sess[i];
    return NULL;
}

/* The wrong proofs an address made against the current code (NULL: none yet, and
 * add is false). */
static s_sender_t *s_sender(st_pair_t *p, const char *peer, bool add) {
    for (int i = 0; i < p->n_senders; i++)
        if (!strcmp(p->senders[i].peer, peer)) return &p->senders[i];
    if (!add || p->n_senders >= p->o.max_total_attempts) return NULL; /* (each entry holds one try of the total) */
    s_sender_t *x = &p->senders[p->n_senders++];
    snprintf(x->peer, sizeof x->peer, "%s", peer);
    x->wrong = 0;
    return x;
}

/* Whether peer has used up its wrong proofs against the current code. */
static bool s_locked(st_pair_t *p, const char *peer) {
    const s_sender_t *x = s_sender(p, peer, false);
    return x && x->wrong >= p->o.max_attempts;
}

static void s_close(s_session_t *s) {
    st_pake_wipe(&s->pake);
    s->used = false;
}

static void s_send(st_pair_t *p, const uint8_t *rid, size_t rid_len, const uint8_t *msg, int len) {
    if (len <= 0) return;
    if (zmq_send(p->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return;
    zmq_send(p->router, msg, (size_t)len, ZMQ_DONTWAIT);
}

static void s_refuse(st_pair_t *p, const uint8_t *rid, size_t rid_len, int reason) {
    uint8_t m[16];
    s_send(p, rid, rid_len, m, st_pake_refused(reason, m, sizeof m));
}

/* An address past its wrong proofs: refused before any exchange, until the code changes. */
static void s_refuse_tries(st_pair_t *p, const uint8_t *rid, size_t rid_len, const char *peer) {
    if (s_log_ok(p->log_locked, peer))
        st_log(ST_LOG_WARN, "pairing refused from %s: %d wrong tries from there already, until the code changes", peer,
               p->o.max_attempts);
    s_refuse(p, rid, rid_len, ST_PAKE_R_TRIES);
}

static void s_on_hello(st_pair_t *p, const uint8_t *rid, size_t rid_len, const uint8_t *msg, size_t len,
                       const char *peer) {
    if (s_locked(p, peer)) {
        s_refuse_tries(p, rid, rid_len, peer);
        return;
    }
    s_session_t *s = s_find(p, rid, rid_len);
    int from_peer = 0;
    for (int i = 0; i < MAX_SESSIONS; i++)
        from_peer += p->sess[i].used && &p->sess[i] != s && !strcmp(p->sess[i].peer, peer);
    if (from_peer >= SESSIONS_PER_PEER) {
        if (s_log_ok(p->log_other, peer))
            st_log(ST_LOG_WARN, "pairing: %d exchanges open from %s: refused, busy", from_peer, peer);
        s_refuse(p, rid, rid_len, ST_PAKE_R_BUSY);
        return;
    }
    for (int i = 0; !s && i < MAX_SESSIONS; i++)
        if (!p->sess[i].used) s = &p->sess[i];
    if (!s) {
        if (s_log_ok(p->log_other, peer))
            st_log(ST_LOG_WARN, "pairing: %d exchanges open: %s refused, busy", MAX_SESSIONS, peer);
        s_refuse(p, rid, rid_len, ST_PAKE_R_BUSY);
        return;
    }
    char code[ST_PAKE_CODE_BUF];
    pthread_mutex_lock(&p->mu);
    memcpy(code, p->code, sizeof code);
    pthread_mutex_unlock(&p->mu);
    uint8_t out[ST_PAKE_MAX_MSG];
    int n = st_pake_coord_challenge(&s->pake, code, msg, len, out, sizeof out);
    sodium_memzero(code, sizeof code);
    if (n < 0) {
        if (s_log_ok(p->log_other, peer)) st_log(ST_LOG_WARN, "pairing: malformed hello from %s: refused", peer);
        s_close(s);
        s_refuse(p, rid, rid_len, ST_PAKE_R_BAD);
        return;
    }
    s->used = true;
    memcpy(s->rid, rid, rid_len);
    s->rid_len = rid_len;
    s->code_gen = p->code_gen;
    s->t0 = st_now_ms();
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    s_send(p, rid, rid_len, out, n);
}

static void s_on_proof(st_pair_t *p, const uint8_t *rid, size_t rid_len, const uint8_t *msg, size_t len,
                       const char *peer) {
    s_session_t *s = s_find(p, rid, rid_len);
    if (!s) {
        if (s_log_ok(p->log_other, peer))
            st_log(ST_LOG_WARN, "pairing: a proof from %s with no exchange open (replayed?): refused", peer);
        s_refuse(p, rid, rid_len, ST_PAKE_R_BAD);
        return;
    }
    if (s->code_gen != p->code_gen) {
        if (s_log_ok(p->log_other, peer))
            st_log(ST_LOG_WARN, "pairing: %s proved against a code that has been replaced: refused", peer);
        s_close(s);
        s_refuse(p, rid, rid_len, ST_PAKE_R_EXPIRED);
        return;
    }
    if (s_locked(p, peer)) { /* its tries ran out while this exchange was open: not tested */
        s_close(s);
        s_refuse_tries(p, rid, rid_len, peer);
        return;
    }
    st_pake_node_info_t node;
    int rc = st_pake_coord_verify(&s->pake, msg, len, &node);
    if (rc == ST_EAUTH) {
        s_sender_t *x = s_sender(p, peer, true);
        const int mine = x ? ++x->wrong : 0;
        p->attempts++;
        if (s_log_ok(p->log_wrong, peer))
            st_log(ST_LOG_WARN,
                   "pairing refused from %s: wrong code (or a replayed or tampered message), attempt %d of %d from "
                   "there (%d of %d in all with this code)",
                   peer, mine, p->o.max_attempts, p->attempts, p->o.max_total_attempts);
        s_close(s);
        s_refuse(p, rid, rid_len, ST_PAKE_R_WRONG);
        if (p->attempts >= p->o.max_total_attempts) {
            st_log(ST_LOG_WARN, "pairing: %d wrong tries from %d address(es): that code is dead", p->attempts,
                   p->n_senders);
            s_new_code(p, "a new code after too many wrong tries");
        } else if (mine == p->o.max_attempts && s_log_ok(p->log_locked, peer)) { /* its first "out of tries" line */
            st_log(ST_LOG_WARN, "pairing: %s is refused until the code changes; the others can still pair with it",
                   peer);
        }
        return;
    }
    char url[300], key[ST_CURVE_Z85_LEN + 1];
    if (rc < 0 || s_node_url(node.endpoint, peer, url, sizeof url) < 0) {
        if (s_log_ok(p->log_other, peer)) st_log(ST_LOG_WARN, "pairing: malformed proof from %s: refused", peer);
        s_close(s);
        s_refuse(p, rid, rid_len, ST_PAKE_R_BAD);
        return;
    }
    zmq_z85_encode(key, node.key, ST_PAKE_KEY);
    char comment[ST_PAKE_MAX_ID + 16];
    snprintf(comment, sizeof comment, "%s, paired", node.id[0] ? node.id : "(no id)");
    if (st_cluster_file_put(p->o.cluster_file, url, key, comment) < 0) {
        s_close(s);
        s_refuse(p, rid, rid_len, ST_PAKE_R_BUSY);
        return;
    }
    uint8_t out[ST_PAKE_MAX_MSG];
    s_send(p, rid, rid_len, out, st_pake_coord_welcome(&s->pake, p->coord_key, out, sizeof out));
    s_close(s);
    st_log(ST_LOG_INFO, "paired node %s at %s (key %s, from %s): written to %s", node.id[0] ? node.id : "(no id)", url,
           key, peer, p->o.cluster_file);
    atomic_fetch_add(&p->paired, 1);
}

/* One message on the ROUTER: [routing id][body], anything else is dropped. */
static void s_on_router(st_pair_t *p) {
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, p->router, ZMQ_DONTWAIT) < 0) goto done;
    if (!zmq_msg_more(&id) || zmq_msg_recv(&body, p->router, ZMQ_DONTWAIT) < 0) goto done;
    bool extra = zmq_msg_more(&body);
    while (zmq_msg_more(&body)) { /* a second frame is not ours: drain it */
        zmq_msg_close(&body);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&body, p->router, ZMQ_DONTWAIT) < 0) break;
    }
    const char *addr = zmq_msg_gets(&body, "Peer-Address");
    char peer[64];
    snprintf(peer, sizeof peer, "%s", addr ? addr : "?");
    const uint8_t *rid = zmq_msg_data(&id), *msg = zmq_msg_data(&body);
    const size_t rid_len = zmq_msg_size(&id), len = zmq_msg_size(&body);
    if (rid_len == 0 || rid_len > MAX_ROUTING_ID) goto done;
    int type = !extra && len > 5 && len <= ST_PAKE_MAX_MSG && !memcmp(msg, "STP1", 4) ? msg[4] : -1;
    if (type == ST_PAKE_HELLO)
        s_on_hello(p, rid, rid_len, msg, len, peer);
    else if (type == ST_PAKE_PROOF)
        s_on_proof(p, rid, rid_len, msg, len, peer);
    else {
        if (s_log_ok(p->log_other, peer))
            st_log(ST_LOG_WARN, "pairing: a message that is not ours from %s (%zu B): refused", peer, len);
        s_refuse(p, rid, rid_len, ST_PAKE_R_BAD);
    }
done:
    zmq_msg_close(&id);
    zmq_msg_close(&body);
}

/* A discovery datagram: exactly the question, answered with the port. */
static void s_on_udp(st_pair_t *p) {
    uint8_t buf[64];
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(p->udp, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
    if (n != (ssize_t)strlen(ST_PAKE_DISCOVERY_ASK) || memcmp(buf, ST_PAKE_DISCOVERY_ASK, (size_t)n)) return;
    uint8_t ans[16];
    size_t k = strlen(ST_PAKE_DISCOVERY_ANSWER);
    memcpy(ans, ST_PAKE_DISCOVERY_ANSWER, k);
    ans[k++] = (uint8_t)(p->port & 0xff); /* little-endian */
    ans[k++] = (uint8_t)(p->port >> 8);
    sendto(p->udp, ans, k, MSG_DONTWAIT, (struct sockaddr *)&from, fl);
}

static void *s_thread(void *arg) {
    st_pair_t *p = arg;
    while (!atomic_load(&p->stop)) {
        zmq_pollitem_t it[2] = {{p->router, 0, ZMQ_POLLIN, 0}, {NULL, p->udp, ZMQ_POLLIN, 0}};
        int n = zmq_poll(it, p->udp >= 0 ? 2 : 1, POLL_MS);
        if (n < 0 && zmq_errno() != EINTR) break;
        if (n > 0 && (it[0].revents & ZMQ_POLLIN))
            for (int k = 0; k < 64; k++) { /* a burst, then the clock */
                int ev = 0;
                size_t sz = sizeof ev;
                if (zmq_getsockopt(p->router, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN)) break;
                s_on_router(p);
            }
        if (n > 0 && p->udp >= 0 && (it[1].revents & ZMQ_POLLIN)) s_on_udp(p);
        const double now = st_now_ms();
        st_log_limit_tick(p->log_wrong, now); /* a flood that stopped is summed up now, not at its next try */
        st_log_limit_tick(p->log_locked, now);
        st_log_limit_tick(p->log_other, now);
        if (now > p->expires_ms) s_new_code(p, "the code expired: a new one");
        for (int i = 0; i < MAX_SESSIONS; i++)
            if (p->sess[i].used && now - p->sess[i].t0 > SESSION_MS) s_close(&p->sess[i]);
    }
    return NULL;
}

/* ---- life ------------------------------------------------------------------------ */

static int s_udp_open(int port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = INADDR_ANY};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        st_log(ST_LOG_WARN, "pairing: no discovery (UDP port %d: %s); boards need --join tcp://HOST:PORT", port,
               strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

st_pair_t *st_pair_new(const st_pair_opts_t *o, const uint8_t coord_key[ST_PAKE_KEY]) {
    st_pair_t *p = calloc(1, sizeof *p);
    if (!p) {
        st_fail(ST_ENOMEM, "no memory");
        return NULL;
    }
    p->o = *o;
    if (p->o.max_attempts < 1) p->o.max_attempts = 1;
    if (p->o.max_total_attempts < 1) p->o.max_total_attempts = TOTAL_PER_PEER * p->o.max_attempts;
    p->udp = -1;
    memcpy(p->coord_key, coord_key, ST_PAKE_KEY);
    pthread_mutex_init(&p->mu, NULL);
    const double every = p->o.log_interval_ms > 0 ? p->o.log_interval_ms : 60000;
    p->log_wrong =
        st_log_limit_new(&(st_log_limit_opts_t){.prefix = "pairing", .what = "wrong tries", .interval_ms = every});
    p->log_locked = st_log_limit_new(&(st_log_limit_opts_t){
        .prefix = "pairing", .what = "tries refused (out of wrong tries)", .interval_ms = every});
    p->log_other = st_log_limit_new(&(st_log_limit_opts_t){
        .prefix = "pairing", .what = "refused messages (busy, malformed or replayed)", .interval_ms = every});
    if (!p->log_wrong || !p->log_locked || !p->log_other ||
        !(p->senders = calloc((size_t)p->o.max_total_attempts, sizeof *p->senders))) {
        st_fail(ST_ENOMEM, "no memory");
        st_pair_destroy(&p);
        return NULL;
    }
    /* RCVHWM 0: a full receive queue is what lets a peer that floods PINGs
     * and resets abort libzmq 4.3.4 (`!_io_error`, zeromq/libzmq#4841; see
     * cluster.c). This thread reads at once and messages are small. */
    const int maxmsg = ST_PAKE_MAX_MSG, linger = 0, unlimited = 0;
    size_t sz = sizeof p->endpoint;
    if (!(p->zctx = zmq_ctx_new()) || !(p->router = zmq_socket(p->zctx, ZMQ_ROUTER)) ||
        zmq_setsockopt(p->router, ZMQ_MAXMSGSIZE, &(int64_t){maxmsg}, sizeof(int64_t)) ||
        zmq_setsockopt(p->router, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(p->router, ZMQ_RCVHWM, &unlimited, sizeof unlimited) || zmq_bind(p->router, o->url) != 0 ||
        zmq_getsockopt(p->router, ZMQ_LAST_ENDPOINT, p->endpoint, &sz) != 0) {
        st_fail(ST_EIO, "cannot listen for pairings on %s: %s", o->url, zmq_strerror(zmq_errno()));
        st_pair_destroy(&p);
        return NULL;
    }
    const char *colon = strrchr(p->endpoint, ':');
    p->port = colon ? atoi(colon + 1) : 0;
    if (o->discovery_port > 0) p->udp = s_udp_open(o->discovery_port);
    s_new_code(p, p->udp >= 0 ? "boards on this LAN find it by UDP broadcast" : "boards need its address");
    if (pthread_create(&p->thread, NULL, s_thread, p) != 0) {
        st_fail(ST_EIO, "cannot start the pairing thread");
        st_pair_destroy(&p);
        return NULL;
    }
    p->started = true;
    return p;
}

void st_pair_destroy(st_pair_t **pp) {
    st_pair_t *p = *pp;
    if (!p) return;
    if (p->started) {
        atomic_store(&p->stop, 1);
        pthread_join(p->thread, NULL);
    }
    for (int i = 0; i < MAX_SESSIONS; i++) s_close(&p->sess[i]);
    if (p->router) zmq_close(p->router);
    if (p->zctx) zmq_ctx_term(p->zctx);
    if (p->udp >= 0) close(p->udp);
    pthread_mutex_destroy(&p->mu);
    free(p->senders);
    st_log_limit_destroy(&p->log_wrong); /* the counts still held are summed up */
    st_log_limit_destroy(&p->log_locked);
    st_log_limit_destroy(&p->log_other);
    sodium_memzero(p->code, sizeof p->code);
    free(p);
    *pp = NULL;
}

int st_pair_take(st_pair_t *p) { return atomic_exchange(&p->paired, 0); }

void st_pair_code(const st_pair_t *cp, char out[ST_PAKE_CODE_BUF], int *seconds_left) {
    st_pair_t *p = (st_pair_t *)cp; /* the lock only */
    pthread_mutex_lock(&p->mu);
    memcpy(out, p->code, ST_PAKE_CODE_BUF);
    if (seconds_left) *seconds_left = (int)((p->expires_ms - st_now_ms()) / 1e3);
    pthread_mutex_unlock(&p->mu);
}

const char *st_pair_endpoint(const st_pair_t *p) { return p->endpoint; }
