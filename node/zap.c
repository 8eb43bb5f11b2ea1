/* zap: ZAP handler and handshake monitor of st-node (see zap.h).
 *
 * The thread owns two sockets: a REP bound to inproc://zeromq.zap.01, which
 * libzmq asks about each CURVE client after the key exchange (frames:
 * version, request id, domain, address, identity, mechanism, public key), and
 * a PAIR connected to the node socket's monitor. It polls both with a 200 ms
 * timeout and looks at its stop flag in between, and then writes the log
 * limiters' summaries that are due.
 */
#include "zap.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "clock.h"
#include "log_limit.h"
#include "st_log.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_POLL_MS 200
#define ZAP_MAX_FRAMES 8

struct st_zap {
    void *rep, *mon;
    uint8_t (*allow)[32];
    int n_allow;
    pthread_t thread;
    bool started;
    atomic_int stop;
    atomic_uint_fast64_t refused;
    char mon_ep[64];
    st_log_limit_t *log_keys;       /* keys not allowed, per address */
    st_log_limit_t *log_handshakes; /* failed handshakes (the monitor names no address) */
};

static bool s_allowed(const st_zap_t *z, const uint8_t *key) {
    bool ok = false;
    for (int i = 0; i < z->n_allow; i++) ok |= sodium_memcmp(z->allow[i], key, 32) == 0;
    return ok;
}

/* One ZAP request: read all frames (bounded), answer 200 or 400. */
static void s_on_zap(st_zap_t *z) {
    zmq_msg_t f[ZAP_MAX_FRAMES];
    int n = 0;
    bool more = true;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, z->rep, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (n < ZAP_MAX_FRAMES)
            f[n++] = m;
        else
            zmq_msg_close(&m);
    }
    if (n < 6) { /* not a ZAP request libzmq would send: a REP must still answer */
        for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
        zmq_send(z->rep, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(z->rep, "", 0, ZMQ_SNDMORE);
        zmq_send(z->rep, "500", 3, ZMQ_SNDMORE);
        zmq_send(z->rep, "bad request", 11, ZMQ_SNDMORE);
        zmq_send(z->rep, "", 0, ZMQ_SNDMORE);
        zmq_send(z->rep, "", 0, 0);
        return;
    }
    char address[64] = "?", mech[16] = "?";
    size_t al = zmq_msg_size(&f[3]) < sizeof address - 1 ? zmq_msg_size(&f[3]) : sizeof address - 1;
    memcpy(address, zmq_msg_data(&f[3]), al), address[al] = '\0';
    size_t ml = zmq_msg_size(&f[5]) < sizeof mech - 1 ? zmq_msg_size(&f[5]) : sizeof mech - 1;
    memcpy(mech, zmq_msg_data(&f[5]), ml), mech[ml] = '\0';
    const bool curve = !strcmp(mech, "CURVE") && n >= 7 && zmq_msg_size(&f[6]) == 32;
    const bool ok = curve && s_allowed(z, zmq_msg_data(&f[6]));
    if (!ok) {
        atomic_fetch_add(&z->refused, 1);
        if (st_log_limit_ok(z->log_keys, address, st_now_ms())) {
            char key[41] = "(none)";
            if (curve) zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
            st_log(ST_LOG_WARN, "refused a connection from %s: %s key %s is not on the allow list", address, mech, key);
        }
    }
    const char *code = ok ? "200" : "400", *text = ok ? "OK" : "key not allowed";
    zmq_send(z->rep, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), ZMQ_SNDMORE); /* version */
    zmq_send(z->rep, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE); /* request id */
    zmq_send(z->rep, code, 3, ZMQ_SNDMORE);
    zmq_send(z->rep, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(z->rep, "", 0, ZMQ_SNDMORE); /* user id */
    zmq_send(z->rep, "", 0, 0);           /* metadata */
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

/* One monitor event: [u16 event, u32 value] then the endpoint. */
static void s_on_event(st_zap_t *z) {
    uint8_t ev[6] = {0};
    char ep[256] = "";
    int n = zmq_recv(z->mon, ev, sizeof ev, ZMQ_DONTWAIT);
    if (n < 0) return;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(z->mon, ZMQ_RCVMORE, &more, &ml);
    if (more) {
        int k = zmq_recv(z->mon, ep, sizeof ep - 1, ZMQ_DONTWAIT);
        ep[k > 0 ? (k < (int)sizeof ep - 1 ? k : (int)sizeof ep - 1) : 0] = '\0';
    }
    uint16_t event;
    uint32_t value;
    memcpy(&event, ev, 2);
    memcpy(&value, ev + 2, 4);
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
        atomic_fetch_add(&z->refused, 1);
        if (st_log_limit_ok(z->log_handshakes, NULL, st_now_ms()))
            st_log(ST_LOG_WARN, "refused a connection on %s: handshake failed (%s, code 0x%x)", ep,
                   value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH ? "plain text or another security mechanism"
                                                                       : "not a CURVE client of this node's key",
                   (unsigned)value);
    } else if (event == ZMQ_EVENT_DISCONNECTED) {
        st_log(ST_LOG_DEBUG, "a peer disconnected from %s", ep);
    }
}

static void *s_thread(void *arg) {
    st_zap_t *z = arg;
    while (!atomic_load(&z->stop)) {
        zmq_pollitem_t it[2] = {{.socket = z->rep, .events = ZMQ_POLLIN}, {.socket = z->mon, .events = ZMQ_POLLIN}};
        int r = zmq_poll(it, 2, ZAP_POLL_MS);
        st_log_limit_tick(z->log_keys, st_now_ms()); /* a flood that stopped is summed up now */
        st_log_limit_tick(z->log_handshakes, st_now_ms());
        if (r <= 0) continue;
        if (it[0].revents & ZMQ_POLLIN) s_on_zap(z);
        if (it[1].revents & ZMQ_POLLIN) s_on_event(z);
    }
    return NULL;
}

st_zap_t *st_zap_new(void *zctx, void *sock, const uint8_t (*allow)[32], int n_allow) {
    st_zap_t *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    z->allow = malloc((size_t)(n_allow > 0 ? n_allow : 1) * sizeof *z->allow);
    if (!z->allow) goto fail;
    if (n_allow > 0) memcpy(z->allow, allow, (size_t)n_allow * sizeof *z->allow);
    z->n_allow = n_allow;
    z->log_keys = st_log_limit_new(&(st_log_limit_opts_t){.what = "connections refused (key not allowed)"});
    z->log_handshakes = st_log_limit_new(&(st_log_limit_opts_t){.what = "connections refused (handshake failed)"});
    if (!z->log_keys || !z->log_handshakes) goto fail;
    const int linger = 0;
    z->rep = zmq_socket(zctx, ZMQ_REP);
    if (!z->rep || zmq_setsockopt(z->rep, ZMQ_LINGER, &linger, sizeof linger) || zmq_bind(z->rep, ZAP_ENDPOINT)) {
        st_fail(ST_EIO, "ZAP handler: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    snprintf(z->mon_ep, sizeof z->mon_ep, "inproc://st-node-monitor-%p", (void *)z);
    const int events =
        ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_DISCONNECTED;
    if (zmq_socket_monitor(sock, z->mon_ep, events)) {
        st_fail(ST_EIO, "socket monitor: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    z->mon = zmq_socket(zctx, ZMQ_PAIR);
    if (!z->mon || zmq_setsockopt(z->mon, ZMQ_LINGER, &linger, sizeof linger) || zmq_connect(z->mon, z->mon_ep)) {
        st_fail(ST_EIO, "socket monitor: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (pthread_create(&z->thread, NULL, s_thread, z)) {
        st_fail(ST_EIO, "cannot start the ZAP thread");
        goto fail;
    }
    z->started = true;
    return z;
fail:
    st_zap_destroy(&z);
    return NULL;
}

void st_zap_destroy(st_zap_t **zp) {
    if (!zp || !*zp) return;
    st_zap_t *z = *zp;
    if (z->started) {
        atomic_store(&z->stop, 1);
        pthread_join(z->thread, NULL);
    }
    if (z->mon) zmq_close(z->mon);
    if (z->rep) zmq_close(z->rep);
    st_log_limit_destroy(&z->log_keys); /* the counts still held are summed up */
    st_log_limit_destroy(&z->log_handshakes);
    free(z->allow);
    free(z);
    *zp = NULL;
}

uint64_t st_zap_refused(const st_zap_t *z) { return atomic_load(&((st_zap_t *)z)->refused); }
