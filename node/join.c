/* join: the node's side of pairing (see join.h; the exchange is
 * proto/pake.c's). Each try opens a fresh DEALER, so a coordinator that
 * restarted, or an exchange cut half-way, starts over cleanly with new
 * nonces; each message waits MSG_TIMEOUT_MS for its answer. */
#include "join.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "curve.h"
#include "file.h"
#include "pake.h"
#include "st_log.h"

#define MSG_TIMEOUT_MS 5000
#define RETRY_MS 1000
#define DISCOVER_EVERY_MS 500

/* ---- discovery --------------------------------------------------------------- */

/* "ST-PAIR?" to each interface's broadcast address and to loopback. */
static void s_broadcast(int fd, int port) {
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const size_t n = strlen(ST_PAKE_DISCOVERY_ASK);
    sendto(fd, ST_PAKE_DISCOVERY_ASK, n, 0, (struct sockaddr *)&to, sizeof to);
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) return;
    for (const struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) ||
            !(i->ifa_flags & IFF_BROADCAST) || !i->ifa_netmask)
            continue;
        /* from the address and mask: an address added without "brd +" has no broadcast address set */
        const uint32_t a = ((const struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
        const uint32_t m = ((const struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr;
        to.sin_addr.s_addr = a | ~m;
        sendto(fd, ST_PAKE_DISCOVERY_ASK, n, 0, (struct sockaddr *)&to, sizeof to);
    }
    freeifaddrs(ifs);
}

int st_join_discover(int port, int timeout_ms, char *url, size_t cap) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) return st_fail(ST_EIO, "UDP socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof one);
    st_log(ST_LOG_INFO, "looking for a coordinator on the LAN (UDP broadcast to port %d)", port);
    const double deadline = st_now_ms() + timeout_ms;
    double next = 0;
    int rc = ST_ETIMEOUT;
    while (rc == ST_ETIMEOUT && st_now_ms() < deadline) {
        if (st_now_ms() >= next) {
            s_broadcast(fd, port);
            next = st_now_ms() + DISCOVER_EVERY_MS;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, DISCOVER_EVERY_MS / 5) <= 0) continue;
        uint8_t buf[64];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        const size_t al = strlen(ST_PAKE_DISCOVERY_ANSWER);
        if (n != (ssize_t)al + 2 || memcmp(buf, ST_PAKE_DISCOVERY_ANSWER, al) != 0 || from.sin_family != AF_INET)
            continue; /* not an answer: ignored */
        const int pp = buf[al] | buf[al + 1] << 8;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
        if (pp == 0 || snprintf(url, cap, "tcp://%s:%d", ip, pp) >= (int)cap) continue;
        st_log(ST_LOG_INFO, "found a coordinator pairing at %s", url);
        rc = 0;
    }
    close(fd);
    if (rc) st_log(ST_LOG_ERROR, "no coordinator answered on UDP port %d within %d s", port, timeout_ms / 1000);
    return rc;
}

/* ---- the allow file ------------------------------------------------------------- */

bool st_join_paired(const char *allow_file) {
    FILE *f = fopen(allow_file, "r"); /* absent or empty (install-pi.sh makes it empty): not paired */
    if (!f) return false;
    char *line = NULL, key[ST_CURVE_Z85_LEN + 1];
    size_t cap = 0;
    bool paired = false;
    while (!paired && getline(&line, &cap, f) > 0) {
        const size_t n = strcspn(line, " \t\r\n");
        if (n != ST_CURVE_Z85_LEN) continue;
        memcpy(key, line, n);
        key[n] = '\0';
        paired = st_curve_valid_z85(key);
    }
    free(line);
    fclose(f);
    return paired;
}

/* Whether line starts with the key (Z85) arg. */
static bool s_same_key(const char *line, void *arg) {
    return !strncmp(line, arg, ST_CURVE_Z85_LEN) && (unsigned char)line[ST_CURVE_Z85_LEN] <= ' ';
}

/* Puts the key (Z85) in the allow file, in place of a line it had already
 * (st_file_rewrite_lines: a copy, then a rename). */
static int s_allow_add(const char *path, const char *key, const char *from) {
    char add[512];
    if (snprintf(add, sizeof add, "%s coordinator at %s, paired\n", key, from) >= (int)sizeof add)
        return st_fail(ST_EINVAL, "a line for the allow file is too long: %s", from);
    if (st_file_rewrite_lines(path, s_same_key, (void *)key, add, NULL) < 0)
        return st_fail(ST_EIO, "cannot write the allow file %s: %s", path, strerror(errno));
    return 0;
}

/* ---- the exchange -------------------------------------------------------------- */

/* Sends msg and waits for one answer (one frame) into ans. Its length (> 0), ST_ETIMEOUT, or
 * ST_EPROTO for an empty, oversized or multi-frame answer. */
static int s_ask(void *sock, const uint8_t *msg, int len, uint8_t *ans, size_t cap) {
    if (zmq_send(sock, msg, (size_t)len, 0) < 0) return ST_EIO;
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, MSG_TIMEOUT_MS) <= 0) return ST_ETIMEOUT;
    int n = zmq_recv(sock, ans, cap, ZMQ_DONTWAIT);
    int more = 0;
    size_t sz = sizeof more;
    if (n <= 0 || (size_t)n > cap || (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more))
        return ST_EPROTO; /* no message, larger than any, or more than one frame */
    return n;
}

/* One exchange with the coordinator at url: 0 with its key in coord_key; a
 * refusal is ST_EAUTH with its reason in *reason (0 for none). */
static int s_exchange(void *zctx, const st_join_opts_t *o, const char *url, uint8_t coord_key[ST_PAKE_KEY],
                      int *reason) {
    /* The default receive limit (1000) stays, unlike st-node's and the coordinator's sockets:
     * libzmq's abort on a reset connection (zeromq/libzmq#4841, node.c) needs its stopped input
     * restarted, which it does only once the reader has taken half the queue (500 messages); an
     * exchange takes two, then closes the socket. No limit would only let whatever answered the
     * discovery broadcast fill our memory. */
    void *sock = zmq_socket(zctx, ZMQ_DEALER);
    const int linger = 0;
    const int64_t maxmsg = ST_PAKE_MAX_MSG;
    if (!sock || zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) ||
        zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) || zmq_connect(sock, url) != 0) {
        int rc = st_fail(ST_EIO, "cannot connect to %s: %s", url, zmq_strerror(zmq_errno()));
        if (sock) zmq_close(sock);
        return rc;
    }
    st_pake_t s;
    st_pake_node_info_t me = {0};
    memcpy(me.key, o->node_key, ST_PAKE_KEY);
    snprintf(me.endpoint, sizeof me.endpoint, "%s", o->endpoint);
    snprintf(me.id, sizeof me.id, "%s", o->id ? o->id : "");
    uint8_t out[ST_PAKE_MAX_MSG], in[ST_PAKE_MAX_MSG];
    *reason = 0;
    int n = st_pake_node_hello(&s, o->code, out, sizeof out);
    if (n > 0) n = s_ask(sock, out, n, in, sizeof in);
    if (n > 0) n = st_pake_node_proof(&s, in, (size_t)n, &me, out, sizeof out, reason);
    if (n > 0) n = s_ask(sock, out, n, in, sizeof in);
    if (n > 0)
        n = st_pake_node_finish(&s, in, (size_t)n, coord_key, reason);
    else if (n == 0)
        n = ST_EPROTO; /* only st_pake_node_finish's 0 means a key that proved the code */
    st_pake_wipe(&s);
    zmq_close(sock);
    if (n == ST_EAUTH && *reason == ST_PAKE_R_BUSY)
        st_log(ST_LOG_INFO, "the coordinator at %s is busy with other pairings: trying again", url);
    else if (n == ST_EAUTH && *reason)
        st_log(ST_LOG_ERROR, "the coordinator at %s refused the pairing: %s", url, st_pake_reason(*reason));
    else if (n == ST_EAUTH)
        st_log(ST_LOG_ERROR, "the coordinator at %s failed to prove the code: its key is not trusted", url);
    else if (n == ST_EPROTO)
        st_log(ST_LOG_WARN, "a malformed pairing message from %s", url);
    return n < 0 ? n : 0;
}

int st_join(const st_join_opts_t *o) {
    char code[ST_PAKE_CODE_LEN + 1];
    if (st_pake_code_normalize(o->code, code) < 0)
        return st_fail(ST_EINVAL, "the code must be %d characters of %s (dashes and spaces are ignored)",
                       ST_PAKE_CODE_LEN, ST_PAKE_ALPHABET);
    void *zctx = zmq_ctx_new();
    if (!zctx) return st_fail(ST_EIO, "zmq_ctx_new failed");
    const double deadline = st_now_ms() + 1e3 * o->timeout_s;
    uint8_t coord_key[ST_PAKE_KEY];
    char url[300];
    int rc = ST_ETIMEOUT, reason = 0;
    for (int tries = 0; st_now_ms() < deadline; tries++) {
        if (tries) usleep(RETRY_MS * 1000);
        const int left = (int)(deadline - st_now_ms());
        if (o->url)
            snprintf(url, sizeof url, "%s", o->url);
        else if ((rc = st_join_discover(o->discovery_port, left > 0 ? left : 1, url, sizeof url)) < 0)
            break;
        st_log(ST_LOG_INFO, "pairing with the coordinator at %s", url);
        rc = s_exchange(zctx, o, url, coord_key, &reason);
        if (rc == ST_EAUTH && reason == ST_PAKE_R_BUSY) continue; /* its other exchanges end within 30 s */
        if (rc == 0 || rc == ST_EAUTH || rc == ST_EINVAL) break;
        st_log(ST_LOG_INFO, "no answer from %s (%s): trying again", url, st_strerror(rc));
    }
    zmq_ctx_term(zctx);
    if (rc == ST_ETIMEOUT) st_log(ST_LOG_ERROR, "pairing: no coordinator answered within %d s", o->timeout_s);
    if (rc == ST_EPROTO) st_log(ST_LOG_ERROR, "pairing: no well-formed answer within %d s", o->timeout_s);
    if (rc == ST_EAUTH && reason == ST_PAKE_R_BUSY)
        st_log(ST_LOG_ERROR, "pairing: the coordinator was busy with other pairings for %d s", o->timeout_s);
    if (rc) return rc;
    char z85[ST_CURVE_Z85_LEN + 1];
    zmq_z85_encode(z85, coord_key, ST_PAKE_KEY);
    if ((rc = s_allow_add(o->allow_file, z85, url)) < 0) return rc;
    st_log(ST_LOG_INFO, "paired with the coordinator at %s (key %s), written to %s", url, z85, o->allow_file);
    return 0;
}
