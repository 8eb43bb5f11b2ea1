/* http: the HTTP side, on libmicrohttpd (one thread per connection, a
 * bounded number of connections), so no HTTP parsing of our own.
 *
 * Routes: GET / (web chat), GET /v1/models, POST /v1/chat/completions,
 * POST /v1/completions, GET /health, GET /metrics, POST /admin/ACTION
 * (st-ctl's drain, remove, rebalance: behind the key like the others, and
 * without a key only loopback is served). Bodies are limited to
 * ST_SERVER_MAX_BODY (413); a declared Content-Length over it is refused
 * before anything is read. With an API key every route but the page needs
 * "Authorization: Bearer KEY", compared in constant time (BLAKE2b of both,
 * then sodium_memcmp, so neither length nor content leaks). Without a key
 * only loopback addresses may be bound.
 *
 * Connections are bounded in total and per client address; a request line
 * and headers must arrive within header_timeout seconds of the connection
 * (or of the previous answer on a kept-alive one), the body within
 * body_timeout seconds of the headers, or a watchdog thread shuts the
 * connection down: a client that sends a byte every few seconds, or nothing,
 * cannot hold a connection for long, so idle ones cannot starve the others.
 *
 * A streamed answer is a libmicrohttpd content callback that blocks (this is
 * its own connection thread) until the scheduler has new text, and sends
 * `data: {chunk}` events, a comment line every 2 s of silence (which also
 * notices a client that left), and `data: [DONE]`.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "clock.h"
#include "parse.h"
#include "server_internal.h"
#include "st_log.h"

/* What a connection is doing, for the watchdog: its fd stays open (and
 * this record alive) until libmicrohttpd reports the connection closed, which
 * it does before closing the fd. */
typedef enum { S_HEAD, S_BODY, S_ANSWER } phase_t;

typedef struct watch {
    int fd;
    phase_t phase;
    double since; /* start of the phase */
    bool shut;
    struct watch *prev, *next;
} watch_t;

struct st_http {
    struct MHD_Daemon *d;
    st_http_limits_t lim;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    watch_t *watched;
    bool wstop, wstarted;
    pthread_t wth;
    st_sched_t *s;
    const st_api_t *api;
    bool has_key;
    uint8_t key_hash[crypto_generichash_BYTES];
    char url[300];
    double t0;
    atomic_ullong status[5];
    atomic_ullong next_id;
};

typedef struct {
    char *body;
    size_t len, cap;
    bool too_big;
} conn_t;

/* Answers code with body (taken; NULL: 500 "no memory"); allow, when not
 * NULL, is the Allow header of a 405. */
static enum MHD_Result s_send_allow(st_http_t *h, struct MHD_Connection *con, unsigned code, char *body,
                                    const char *type, const char *allow) {
    if (!body) {
        code = 500;
        body = strdup("{\"error\":{\"message\":\"no memory\",\"type\":\"server_error\",\"code\":null}}");
        type = "application/json";
        if (!body) return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (code == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (allow) MHD_add_response_header(r, "Allow", allow);
    enum MHD_Result rc = MHD_queue_response(con, code, r);
    MHD_destroy_response(r);
    if (code >= 100 && code < 600) h->status[code / 100 - 1]++;
    return rc;
}

static enum MHD_Result s_send(st_http_t *h, struct MHD_Connection *con, unsigned code, char *body, const char *type) {
    return s_send_allow(h, con, code, body, type, NULL);
}

/* 405 naming the methods the route takes. */
static enum MHD_Result s_not_allowed(st_http_t *h, struct MHD_Connection *con, const char *allow) {
    return s_send_allow(h, con, 405, st_api_error("invalid_request_error", "method not allowed here: use %s", allow),
                        "application/json", allow);
}

static enum MHD_Result s_error(st_http_t *h, struct MHD_Connection *con, unsigned code, const char *type,
                               const char *msg) {
    return s_send(h, con, code, st_api_error(type, "%s", msg), "application/json");
}

static bool s_authorized(st_http_t *h, struct MHD_Connection *con) {
    if (!h->has_key) return true;
    const char *auth = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return false;
    const char *tok = auth + 7;
    uint8_t got[crypto_generichash_BYTES];
    crypto_generichash(got, sizeof got, (const uint8_t *)tok, strlen(tok), NULL, 0);
    return sodium_memcmp(got, h->key_hash, sizeof got) == 0;
}

/* ---- streaming ------------------------------------------------------------------ */

typedef struct {
    st_http_t *h;
    st_req_t *req;
    st_api_req_t ar;
    char id[48];
    char *pend;
    size_t pend_len, pend_off;
    bool started, finished, done_sent;
} stream_t;

static void s_stream_set(stream_t *st, char *data) {
    free(st->pend);
    st->pend = data;
    st->pend_len = data ? strlen(data) : 0;
    st->pend_off = 0;
}

static ssize_t s_stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream_t *st = cls;
    while (st->pend_off >= st->pend_len) {
        if (st->done_sent) return MHD_CONTENT_READER_END_OF_STREAM;
        if (st->finished) {
            s_stream_set(st, strdup("data: [DONE]\n\n"));
            st->done_sent = true;
            break;
        }
        if (!st->started) { /* the role chunk at once: the client sees the answer has begun */
            st->started = true;
            if (st->ar.kind == ST_API_CHAT) {
                s_stream_set(st, st_api_chunk(st->h->api, &st->ar, st->id, "", true, NULL));
                continue;
            }
        }
        st_req_out_t o;
        int rc = st_req_wait(st->req, &o, 2000);
        if (rc == ST_ENOMEM) return MHD_CONTENT_READER_END_WITH_ERROR;
        char *a = o.len ? st_api_chunk(st->h->api, &st->ar, st->id, o.text, false, NULL) : NULL;
        char *b = o.done ? st_api_chunk(st->h->api, &st->ar, st->id, NULL, false, &o) : NULL;
        free(o.text);
        if (o.done) st->finished = true;
        if (!a && !b && !o.done) {
            s_stream_set(st, strdup(": waiting\n\n"));
            continue;
        }
        size_t la = a ? strlen(a) : 0, lb = b ? strlen(b) : 0;
        char *all = malloc(la + lb + 1);
        if (all) {
            memcpy(all, a ? a : "", la);
            memcpy(all + la, b ? b : "", lb + 1);
        }
        free(a);
        free(b);
        s_stream_set(st, all);
    }
    size_t n = st->pend_len - st->pend_off;
    if (n > max) n = max;
    memcpy(buf, st->pend + st->pend_off, n);
    st->pend_off += n;
    return (ssize_t)n;
}

static void s_stream_free(void *cls) {
    stream_t *st = cls;
    st_req_release(&st->req);
    st_api_req_free(&st->ar);
    free(st->pend);
    free(st);
}

/* libmicrohttpd's messages (a client that left mid-request, the connection
 * limit reached...) are routine under hostile clients: debug level. */
static void s_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    if (st_log_get_level() < ST_LOG_DEBUG) return;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    st_log(ST_LOG_DEBUG, "%s", msg);
}

/* ---- deadlines for reading a request ------------------------------------------- */

static void s_notify_connection(void *cls, struct MHD_Connection *con, void **socket_context,
                                enum MHD_ConnectionNotificationCode toe) {
    st_http_t *h = cls;
    watch_t *w = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!ci || !(w = calloc(1, sizeof *w))) return; /* not watched: MHD's idle timeout still applies */
        w->fd = ci->connect_fd;
        w->phase = S_HEAD;
        w->since = st_now_s();
        pthread_mutex_lock(&h->wmu);
        w->next = h->watched;
        if (h->watched) h->watched->prev = w;
        h->watched = w;
        pthread_mutex_unlock(&h->wmu);
        *socket_context = w;
    } else if (w) {
        pthread_mutex_lock(&h->wmu);
        if (w->prev)
            w->prev->next = w->next;
        else
            h->watched = w->next;
        if (w->next) w->next->prev = w->prev;
        pthread_mutex_unlock(&h->wmu);
        free(w);
        *socket_context = NULL;
    }
}

/* The connection's request moves on to phase (its deadline counts from now). */
static void s_phase(st_http_t *h, struct MHD_Connection *con, phase_t phase) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    watch_t *w = ci ? ci->socket_context : NULL;
    if (!w) return;
    pthread_mutex_lock(&h->wmu);
    w->phase = phase;
    w->since = st_now_s();
    pthread_mutex_unlock(&h->wmu);
}

/* The watchdog: a connection still sending its request line and headers
 * after header_timeout s, or its body after body_timeout s, is shut down
 * (its thread then reads EOF and libmicrohttpd closes it). MHD's own timeout
 * is one of inactivity, which a byte now and then resets; an answer being
 * sent (a stream) has no deadline. */
static void *s_watchdog(void *arg) {
    st_http_t *h = arg;
    pthread_mutex_lock(&h->wmu);
    while (!h->wstop) {
        double now = st_now_s();
        int shut = 0;
        for (watch_t *w = h->watched; w; w = w->next) {
            double limit = w->phase == S_HEAD   ? (double)h->lim.header_timeout
                           : w->phase == S_BODY ? (double)h->lim.body_timeout
                                                : -1;
            if (limit < 0 || w->shut || now - w->since < limit) continue;
            shutdown(w->fd, SHUT_RDWR);
            w->shut = true;
            shut++;
        }
        if (shut) st_log(ST_LOG_DEBUG, "closed %d connections past their request deadline", shut);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250000000L; /* deadlines are whole seconds: a quarter second is precise enough */
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&h->wcv, &h->wmu, &ts);
    }
    pthread_mutex_unlock(&h->wmu);
    return NULL;
}

/* ---- generation requests ------------------------------------------------------- */

/* True when the peer of fd has closed or reset the connection (what is still
 * unread stays queued: the peek takes nothing). A client that shuts down
 * only its sending side counts as gone, as in llama.cpp's server. */
static bool s_client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) return true;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static enum MHD_Result s_generate(st_http_t *h, struct MHD_Connection *con, st_api_kind_t kind, conn_t *cc) {
    st_api_req_t ar;
    char *err = NULL;
    int status = st_api_parse(h->api, kind, cc->body ? cc->body : "", cc->len, &ar, &err);
    if (status) return s_send(h, con, (unsigned)status, err, "application/json");
    char id[48];
    snprintf(id, sizeof id, "%s-%llx", kind == ST_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)atomic_fetch_add(&h->next_id, 1));
    st_job_t job = ar.job;
    memset(&ar.job, 0, sizeof ar.job);
    ar.job.n_prompt = job.n_prompt;
    int e = 0;
    st_req_t *req = st_sched_submit(h->s, &job, &e);
    if (!req) {
        st_api_req_free(&ar);
        return e == ST_ERANGE ? s_error(h, con, 429, "rate_limit_error", "the request queue is full; retry later")
                              : s_error(h, con, 500, "server_error", "no memory");
    }
    if (ar.stream) {
        stream_t *st = calloc(1, sizeof *st);
        if (!st) {
            st_req_release(&req);
            return s_error(h, con, 500, "server_error", "no memory");
        }
        st->h = h;
        st->req = req;
        st->ar = ar;
        memcpy(st->id, id, sizeof id);
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, s_stream_read, st, s_stream_free);
        if (!r) {
            s_stream_free(st);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no");
        enum MHD_Result rc = MHD_queue_response(con, 200, r);
        MHD_destroy_response(r);
        h->status[1]++;
        return rc;
    }
    /* whole answer: wait here (this connection's own thread), and cancel it
     * when the client hangs up (nothing reads the answer) */
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? ci->connect_fd : -1;
    char *text = NULL;
    size_t len = 0;
    st_req_out_t o = {0};
    double checked = st_now_s();
    for (;;) {
        int rc = st_req_wait(req, &o, 250);
        if (rc == ST_ENOMEM) break;
        if (!o.done && st_now_s() - checked >= 0.2 && (checked = st_now_s(), s_client_gone(fd))) {
            free(o.text);
            st_req_release(&req); /* cancels it */
            free(text);
            st_api_req_free(&ar);
            return MHD_NO; /* closes the connection */
        }
        char *t = realloc(text, len + o.len + 1);
        if (!t) {
            free(o.text);
            break;
        }
        text = t;
        memcpy(text + len, o.text, o.len);
        len += o.len;
        text[len] = '\0';
        free(o.text);
        if (o.done) break;
    }
    st_req_release(&req);
    char *body = o.done && text ? st_api_response(h->api, &ar, id, text, &o) : NULL;
    free(text);
    st_api_req_free(&ar);
    if (o.done && o.finish && !strcmp(o.finish, "error"))
        return s_error(h, con, 500, "server_error", "generation failed (see the server log)");
    return s_send(h, con, 200, body, "application/json");
}

/* ---- routing ---------------------------------------------------------------------- */

static enum MHD_Result s_handler(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                                 const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    st_http_t *h = cls;
    conn_t *cc = *con_cls;
    bool post = !strcmp(method, "POST"), get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (!cc) { /* first call: headers only */
        cc = calloc(1, sizeof *cc);
        if (!cc) return MHD_NO;
        *con_cls = cc;
        s_phase(h, con, S_BODY);
        const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > ST_SERVER_MAX_BODY) {
            cc->too_big = true;
            s_phase(h, con, S_ANSWER);
            return s_error(h, con, 413, "invalid_request_error", "the request body is too large");
        }
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        if (!cc->too_big && cc->len + *upload_size <= ST_SERVER_MAX_BODY) {
            if (cc->len + *upload_size + 1 > cc->cap) {
                size_t cap = (cc->len + *upload_size + 1) * 2;
                char *b = realloc(cc->body, cap > ST_SERVER_MAX_BODY + 1 ? ST_SERVER_MAX_BODY + 1 : cap);
                if (!b) return MHD_NO;
                cc->body = b;
                cc->cap = cap > ST_SERVER_MAX_BODY + 1 ? ST_SERVER_MAX_BODY + 1 : cap;
            }
            memcpy(cc->body + cc->len, upload, *upload_size);
            cc->len += *upload_size;
            cc->body[cc->len] = '\0';
        } else {
            cc->too_big = true;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    s_phase(h, con, S_ANSWER); /* the request is in: no deadline while it is answered */
    if (cc->too_big) return s_error(h, con, 413, "invalid_request_error", "the request body is too large");

    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {
        if (strcmp(method, "GET") && strcmp(method, "HEAD")) return s_not_allowed(h, con, "GET, HEAD");
        struct MHD_Response *r =
            MHD_create_response_from_buffer(st_webui_html_len, (void *)st_webui_html, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
        enum MHD_Result rc = MHD_queue_response(con, 200, r);
        MHD_destroy_response(r);
        h->status[1]++;
        return rc;
    }
    static const struct {
        const char *url;
        bool post;
        int what;
    } routes[] = {{"/v1/chat/completions", true, 0},
                  {"/v1/completions", true, 1},
                  {"/v1/models", false, 2},
                  {"/health", false, 3},
                  {"/metrics", false, 4}};
    if (!strncmp(url, "/admin/", 7)) { /* st-ctl: run by the scheduler between steps */
        if (!post) return s_not_allowed(h, con, "POST");
        if (!s_authorized(h, con))
            return s_error(h, con, 401, "authentication_error", "missing or wrong API key (Authorization: Bearer KEY)");
        char *reply = NULL;
        int status = st_sched_admin(h->s, url + 7, cc->body ? cc->body : "", cc->len, &reply);
        return s_send(h, con, status, reply, "application/json");
    }
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].url)) continue;
        if (routes[i].post ? !post : !get) return s_not_allowed(h, con, routes[i].post ? "POST" : "GET, HEAD");
        if (!s_authorized(h, con))
            return s_error(h, con, 401, "authentication_error", "missing or wrong API key (Authorization: Bearer KEY)");
        switch (routes[i].what) {
        case 0: return s_generate(h, con, ST_API_CHAT, cc);
        case 1: return s_generate(h, con, ST_API_COMPLETION, cc);
        case 2: return s_send(h, con, 200, st_api_models(h->api), "application/json");
        case 3: {
            return s_send(h, con, 200, st_metrics_health(h->s, h->api->model_name, st_now_s() - h->t0),
                          "application/json");
        }
        default: {
            uint64_t counts[5];
            for (int k = 0; k < 5; k++) counts[k] = h->status[k];
            return s_send(h, con, 200, st_metrics_text(h->s, counts), "text/plain; version=0.0.4");
        }
        }
    }
    return s_error(h, con, 404, "invalid_request_error", "no such route");
}

static void s_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode t) {
    (void)t;
    s_phase(cls, con, S_HEAD); /* kept alive: the next request has the header deadline */
    conn_t *cc = *con_cls;
    if (!cc) return;
    free(cc->body);
    free(cc);
    *con_cls = NULL;
}

st_http_t *st_http_new(const char *hostport, const char *api_key, const st_http_limits_t *lim, st_sched_t *s,
                       const st_api_t *api) {
    char host[256];
    int port;
    if (!st_parse_hostport(hostport, host, sizeof host, &port)) {
        st_fail(ST_EINVAL, "bad --http address '%s' (want HOST:PORT)", hostport);
        return NULL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai) {
        st_fail(ST_EINVAL, "cannot resolve '%s'", host);
        return NULL;
    }
    struct sockaddr_storage sa;
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    char numeric[INET6_ADDRSTRLEN] = "";
    bool v6 = sa.ss_family == AF_INET6;
    if (v6) {
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)port);
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, numeric, sizeof numeric);
    } else {
        ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)port);
        inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, numeric, sizeof numeric);
    }
    if (!st_is_loopback_host(numeric) && (!api_key || !*api_key)) {
        st_fail(ST_EINVAL, "%s is not a loopback address: serving it needs --api-key KEY", host);
        return NULL;
    }
    st_http_t *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->s = s;
    h->api = api;
    h->lim = *lim;
    pthread_mutex_init(&h->wmu, NULL);
    pthread_cond_init(&h->wcv, NULL);
    if (pthread_create(&h->wth, NULL, s_watchdog, h) != 0) {
        st_fail(ST_ENOMEM, "no watchdog thread");
        st_http_destroy(&h);
        return NULL;
    }
    h->wstarted = true;
    h->t0 = st_now_s();
    if (api_key && *api_key) {
        h->has_key = true;
        crypto_generichash(h->key_hash, sizeof h->key_hash, (const uint8_t *)api_key, strlen(api_key), NULL, 0);
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    h->d =
        MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, s_handler, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)lim->max_conn, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                         (unsigned)lim->max_conn_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
                         MHD_OPTION_NOTIFY_COMPLETED, s_completed, h, MHD_OPTION_NOTIFY_CONNECTION, s_notify_connection,
                         h, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, h, MHD_OPTION_END);
    if (!h->d) {
        st_fail(ST_EIO, "cannot serve HTTP on %s:%d (in use?)", host, port);
        st_http_destroy(&h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    if (di && di->port) port = di->port;
    snprintf(h->url, sizeof h->url, v6 ? "http://[%s]:%d" : "http://%s:%d", numeric, port);
    return h;
}

void st_http_destroy(st_http_t **hp) {
    st_http_t *h = *hp;
    if (!h) return;
    if (h->d) MHD_stop_daemon(h->d);
    if (h->wstarted) {
        pthread_mutex_lock(&h->wmu);
        h->wstop = true;
        pthread_cond_signal(&h->wcv);
        pthread_mutex_unlock(&h->wmu);
        pthread_join(h->wth, NULL);
    }
    pthread_cond_destroy(&h->wcv);
    pthread_mutex_destroy(&h->wmu);
    sodium_memzero(h->key_hash, sizeof h->key_hash);
    free(h);
    *hp = NULL;
}

const char *st_http_url(const st_http_t *h) { return h->url; }
