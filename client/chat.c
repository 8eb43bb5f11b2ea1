/* st-chat: a terminal chat with the coordinator's OpenAI-compatible API.
 *
 * Each line is a user message; the answer streams in as it is generated
 * (SSE through libcurl's write callback), and the whole conversation is sent
 * each turn (the server's prompt cache spares prefilling what it has seen).
 * Lines are read with libedit (editing, history). Commands: /system TEXT, /reset, /stats,
 * /help, /quit. A coordinator that cannot be reached is named with the
 * reason and what to check, never a bare error code.
 *
 * Ctrl-C while an answer streams stops it (the transfer is aborted, so the
 * server cancels the sequence) and keeps what came so far in the
 * conversation; Ctrl-C at the prompt asks for a second one, which leaves.
 * The handler only counts (no SA_RESTART, so readline returns NULL and
 * curl's progress callback sees the count).
 *
 * What the server sends is bounded (body.h): an SSE event, or the text of an
 * answer, longer than ST_CLIENT_MAX_BODY ends st-chat with a message naming
 * the URL and the limit: such a server is broken or hostile.
 */
#include <curl/curl.h>
#include <editline/readline.h>
#include <cjson/cJSON.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "clock.h"
#include "version.h"

typedef struct {
    const char *url, *api_key;
    char *system;
    double temp;
    long max_tokens;
    cJSON *history; /* [{role, content}] */
    /* the current answer */
    st_client_body_t sse; /* SSE bytes not yet split into events */
    size_t sse_seen;      /* bytes of sse already searched for the end of an event */
    const char *too_big;  /* what passed ST_CLIENT_MAX_BODY ("one SSE event"), or NULL */
    st_client_body_t answer;
    int n_chunks;
    char finish[32];
    int completion_tokens, prompt_tokens, cached_tokens;
    double t_first, t_last;
    /* totals for /stats */
    int turns, tokens;
    double gen_s;
} chat_t;

static volatile sig_atomic_t s_interrupts; /* Ctrl-C presses not yet handled */

static void s_on_sigint(int sig) {
    (void)sig;
    s_interrupts++;
}

static void s_usage(FILE *f) {
    fprintf(f, "usage: st-chat [--url URL] [--api-key KEY] [options]\n"
               "\n"
               "Chats with a SmallThinker coordinator (st-coordinator --http) or st-run --http.\n"
               "\n"
               "      --url URL          the server (default http://127.0.0.1:8080)\n"
               "      --api-key KEY      bearer token (default: $ST_API_KEY, else none)\n"
               "      --system TEXT      system message (default: none; /system changes it)\n"
               "      --temp T           temperature (default: the server's)\n"
               "      --max-tokens N     longest answer (default 512)\n"
               "      --version          print the version and exit\n"
               "  -h, --help             this help\n"
               "\n"
               "commands: /system TEXT, /reset (forget the conversation), /stats, /help, /quit\n"
               "Ctrl-C stops an answer (what came so far stays in the conversation); twice at the prompt, leaves\n");
}

/* One SSE event of the answer. */
static void s_event(chat_t *c, const char *data) {
    if (!strcmp(data, "[DONE]")) return;
    cJSON *o = cJSON_Parse(data);
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    cJSON *content = cJSON_GetObjectItem(cJSON_GetObjectItem(ch, "delta"), "content");
    if (cJSON_IsString(content) && *content->valuestring) {
        size_t n = strlen(content->valuestring);
        /* endless events are as bad as an endless one; out of memory, the text is still shown */
        if (st_client_body_add(&c->answer, content->valuestring, n) && c->answer.too_big) {
            c->too_big = "the answer's text";
            cJSON_Delete(o);
            return;
        }
        if (!c->n_chunks++) c->t_first = st_now_s();
        c->t_last = st_now_s();
        fputs(content->valuestring, stdout);
        fflush(stdout);
    }
    cJSON *f = cJSON_GetObjectItem(ch, "finish_reason");
    if (cJSON_IsString(f)) snprintf(c->finish, sizeof c->finish, "%s", f->valuestring);
    cJSON *u = cJSON_GetObjectItem(o, "usage");
    if (cJSON_IsObject(u)) {
        const cJSON *ct = cJSON_GetObjectItem(u, "completion_tokens"), *pt = cJSON_GetObjectItem(u, "prompt_tokens");
        const cJSON *cached = cJSON_GetObjectItem(cJSON_GetObjectItem(u, "prompt_tokens_details"), "cached_tokens");
        if (cJSON_IsNumber(ct)) c->completion_tokens = ct->valueint;
        if (cJSON_IsNumber(pt)) c->prompt_tokens = pt->valueint;
        if (cJSON_IsNumber(cached)) c->cached_tokens = cached->valueint;
    }
    cJSON *e = cJSON_GetObjectItem(o, "error");
    if (e) fprintf(stderr, "\nst-chat: the server says: %s\n", cJSON_GetStringValue(cJSON_GetObjectItem(e, "message")));
    cJSON_Delete(o);
}

static size_t s_sse_cb(char *p, size_t sz, size_t n, void *arg) {
    chat_t *c = arg;
    size_t add = sz * n;
    if (s_interrupts) return 0;                /* stop now, not after this chunk is printed */
    if (st_client_body_add(&c->sse, p, add)) { /* one event that never ends */
        c->too_big = c->sse.too_big ? "one SSE event" : "one SSE event (out of memory)";
        return 0;
    }
    char *end;
    /* from where the last search stopped: a long event is searched once, not once per chunk */
    while ((end = strstr(c->sse.data + c->sse_seen, "\n\n"))) {
        *end = '\0';
        if (!strncmp(c->sse.data, "data: ", 6))
            s_event(c, c->sse.data + 6);
        else if (c->sse.data[0] == '{')
            s_event(c, c->sse.data); /* an error body, not SSE */
        size_t used = (size_t)(end + 2 - c->sse.data);
        memmove(c->sse.data, end + 2, c->sse.len - used + 1);
        c->sse.len -= used;
        c->sse_seen = 0;
        if (c->too_big) return 0;
    }
    c->sse_seen = c->sse.len ? c->sse.len - 1 : 0; /* a "\n" at the end may start the "\n\n" */
    return add;
}

static st_client_t s_client(const chat_t *c) {
    return (st_client_t){.prog = "st-chat",
                         .hint =
                             "is st-coordinator (or st-run) running with --http on that address, and the network up?",
                         .mid_line = true, /* an answer may be half printed */
                         .url = c->url,
                         .api_key = c->api_key,
                         .stop = &s_interrupts};
}

/* A request; body NULL = GET. Returns the HTTP status, 0 after Ctrl-C, -1
 * after saying why the server could not be reached or its answer was
 * refused, or -2 when cb refused it (c->too_big says what). */
static long s_request(chat_t *c, const char *path, const char *body, curl_write_callback cb, void *arg) {
    const st_client_t cl = s_client(c);
    return st_client_request(&cl, path, body, cb, arg);
}

/* One turn: the user's line, the answer streamed. false when the server's
 * answer was refused (said on stderr): st-chat then leaves. */
static bool s_turn(chat_t *c, const char *line) {
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddStringToObject(msg, "role", "user");
    cJSON_AddStringToObject(msg, "content", line);
    cJSON_AddItemToArray(c->history, msg);
    cJSON *req = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(req, "messages");
    if (c->system) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "role", "system");
        cJSON_AddStringToObject(s, "content", c->system);
        cJSON_AddItemToArray(msgs, s);
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, c->history) cJSON_AddItemToArray(msgs, cJSON_Duplicate(m, true));
    cJSON_AddBoolToObject(req, "stream", true);
    /* the token counts of the turn's summary line come in the stream's usage chunk */
    cJSON_AddBoolToObject(cJSON_AddObjectToObject(req, "stream_options"), "include_usage", true);
    cJSON_AddNumberToObject(req, "max_tokens", (double)c->max_tokens);
    if (c->temp >= 0) cJSON_AddNumberToObject(req, "temperature", c->temp);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    free(c->answer.data);
    c->answer = (st_client_body_t){0};
    c->sse.len = c->sse_seen = 0;
    c->too_big = NULL;
    c->n_chunks = 0;
    c->finish[0] = '\0';
    c->completion_tokens = c->prompt_tokens = c->cached_tokens = 0;
    double t0 = st_now_s();
    s_interrupts = 0;
    long st = s_request(c, "/v1/chat/completions", body, s_sse_cb, c);
    free(body);
    if (c->too_big && st < 0) { /* the answer so far is dropped with it: it is not the server's answer */
        const st_client_t cl = s_client(c);
        st_client_too_big(&cl, "/v1/chat/completions", c->too_big);
        return false;
    }
    if (st == 0 && !c->answer.len) {
        printf("\n[stopped before the answer began; that message is dropped, the conversation before it kept]\n");
        cJSON_DeleteItemFromArray(c->history, cJSON_GetArraySize(c->history) - 1);
    } else if (st == 0 || st == 200) {
        double dt = c->t_last > c->t_first ? c->t_last - c->t_first : 0;
        if (st == 0) {
            printf("\n[stopped after %d chunks; the answer so far stays in the conversation]\n", c->n_chunks);
        } else {
            char cached[64] = "";
            if (c->cached_tokens > 0)
                snprintf(cached, sizeof cached, ", %d of %d prompt tokens cached", c->cached_tokens, c->prompt_tokens);
            printf("\n[%d tokens, %.1f tok/s, first token after %.2f s%s%s%s]\n", c->completion_tokens,
                   dt > 0 && c->completion_tokens > 1 ? (c->completion_tokens - 1) / dt : 0.0,
                   c->n_chunks ? c->t_first - t0 : 0.0, cached, c->finish[0] ? ", " : "", c->finish);
        }
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "role", "assistant");
        cJSON_AddStringToObject(a, "content", c->answer.data ? c->answer.data : "");
        cJSON_AddItemToArray(c->history, a);
        c->turns++;
        c->tokens += c->completion_tokens;
        c->gen_s += st_now_s() - t0;
    } else {
        if (st > 0) fprintf(stderr, "st-chat: the server answered HTTP %ld (see above)\n", st);
        cJSON_DeleteItemFromArray(c->history, cJSON_GetArraySize(c->history) - 1); /* not answered: forget it */
    }
    return true;
}

/* A field of the server's /health, or a stand-in when it is missing or of
 * another type: the client must not trust the server's JSON. */
static double s_num(const cJSON *o, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(x) ? x->valuedouble : 0.0;
}

static const char *s_str(const cJSON *o, const char *key) {
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
    return v ? v : "?";
}

static void s_stats(chat_t *c) {
    st_client_body_t ans = {0};
    long st = s_request(c, "/health", NULL, st_client_body_cb, &ans);
    char *body = ans.data;
    printf("this session: %d turns, %d tokens, %.1f tok/s overall; %d messages in the conversation\n", c->turns,
           c->tokens, c->gen_s > 0 ? c->tokens / c->gen_s : 0.0, cJSON_GetArraySize(c->history));
    cJSON *o = st == 200 && body ? cJSON_Parse(body) : NULL;
    if (o) {
        const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(o, "nodes");
        printf("server: %s (%s), model %s, %.1f tok/s, %.0f active, %.0f queued, %.0f/%d nodes up\n",
               s_str(o, "status"), s_str(o, "mode"), s_str(o, "model"), s_num(o, "tokens_per_s"), s_num(o, "active"),
               s_num(o, "queued"), s_num(o, "nodes_up"), cJSON_IsArray(nodes) ? cJSON_GetArraySize(nodes) : 0);
        const cJSON *pc = cJSON_GetObjectItemCaseSensitive(o, "prompt_cache");
        if (cJSON_IsObject(pc))
            printf("prompt cache: %.0f hits, %.0f misses, %.0f prompt tokens reused; %.0f entries, %.1f of %.1f MiB\n",
                   s_num(pc, "hits"), s_num(pc, "misses"), s_num(pc, "cached_tokens"), s_num(pc, "entries"),
                   s_num(pc, "bytes") / 1048576.0, s_num(pc, "budget") / 1048576.0);
        const cJSON *n;
        if (cJSON_IsArray(nodes))
            cJSON_ArrayForEach(n, nodes) printf(
                "  %s %s: %s, %.0f experts, cache hits %.0f%%, prefetched %.0f%%, round trip %.2f ms\n", s_str(n, "id"),
                s_str(n, "url"), cJSON_IsTrue(cJSON_GetObjectItem(n, "up")) ? "up" : "DOWN", s_num(n, "experts"),
                100 * s_num(n, "hit_rate"), 100 * s_num(n, "prefetch_rate"), s_num(n, "rtt_ms"));
        cJSON_Delete(o);
    } else if (st > 0) {
        printf("server: /health answered HTTP %ld\n", st);
    }
    free(body);
}

static int s_bad(const char *flag, const char *val) {
    fprintf(stderr, "st-chat: invalid value '%s' for %s (see --help)\n", val, flag);
    return 2;
}

int main(int argc, char **argv) {
    chat_t c = {.url = "http://127.0.0.1:8080", .api_key = getenv("ST_API_KEY"), .temp = -1, .max_tokens = 512};
    static const struct option opts[] = {
        {"url", required_argument, 0, 'u'},        {"api-key", required_argument, 0, 'k'},
        {"system", required_argument, 0, 's'},     {"temp", required_argument, 0, 'T'},
        {"max-tokens", required_argument, 0, 'n'}, {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},          {0, 0, 0, 0}};
    int o;
    char *end;
    opterr = 0; /* our own messages, in the style of the other programs */
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'u': c.url = optarg; break;
        case 'k': c.api_key = optarg; break;
        case 's': c.system = strdup(optarg); break;
        case 'T':
            c.temp = strtod(optarg, &end);
            if (*end || end == optarg || c.temp < 0 || c.temp > 100) return s_bad("--temp", optarg);
            break;
        case 'n':
            c.max_tokens = strtol(optarg, &end, 10);
            if (*end || end == optarg || c.max_tokens < 1) return s_bad("--max-tokens", optarg);
            break;
        case 'h': s_usage(stdout); return 0;
        case 'V': st_version_print("st-chat"); return 0;
        default:
            fprintf(stderr, "st-chat: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) return fprintf(stderr, "st-chat: unexpected argument '%s' (see --help)\n", argv[optind]), 2;
    size_t ul = strlen(c.url);
    char *url = strdup(c.url);
    while (ul && url[ul - 1] == '/') url[--ul] = '\0'; /* "http://h:8080/" works too */
    c.url = url;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    st_client_body_t ans = {0};
    long st = s_request(&c, "/v1/models", NULL, st_client_body_cb, &ans);
    char *body = ans.data;
    if (st != 200) {
        if (st == 401)
            fprintf(stderr, "st-chat: %s wants an API key: pass --api-key KEY (or set ST_API_KEY)\n", c.url);
        else if (st > 0)
            fprintf(stderr, "st-chat: %s answered HTTP %ld to /v1/models: is it an st-coordinator?\n", c.url, st);
        free(body);
        curl_global_cleanup();
        return 1;
    }
    cJSON *models = cJSON_Parse(body);
    const char *name =
        cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(models, "data"), 0), "id"));
    printf("st-chat: connected to %s (model %s). /help lists the commands.\n", c.url, name ? name : "?");
    cJSON_Delete(models);
    free(body);
    c.history = cJSON_CreateArray();
    using_history();
    struct sigaction sa = {.sa_handler = s_on_sigint}; /* no SA_RESTART: readline returns on Ctrl-C */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    bool armed = false; /* the last thing the user did was a Ctrl-C: one more at the prompt leaves */
    int rc = 0;
    for (;;) {
        s_interrupts = 0;
        char *line = readline("> ");
        if (!line && s_interrupts && !armed) {
            printf("\n(Ctrl-C again to leave, or /quit)\n");
            armed = true;
            continue;
        }
        if (!line) { /* a second Ctrl-C, or end of input */
            printf("\n");
            break;
        }
        armed = false;
        char *t = line + strspn(line, " \t");
        if (*t) add_history(t);
        if (!*t) {
        } else if (!strcmp(t, "/quit") || !strcmp(t, "/exit")) {
            free(line);
            break;
        } else if (!strcmp(t, "/reset")) {
            cJSON_Delete(c.history);
            c.history = cJSON_CreateArray();
            printf("(conversation cleared)\n");
        } else if (!strncmp(t, "/system", 7) && (t[7] == ' ' || !t[7])) {
            free(c.system);
            const char *s = t + 7 + strspn(t + 7, " ");
            c.system = *s ? strdup(s) : NULL;
            printf(c.system ? "(system message set)\n" : "(system message cleared)\n");
        } else if (!strcmp(t, "/stats")) {
            s_stats(&c);
        } else if (!strcmp(t, "/help")) {
            printf("/system TEXT  set the system message (empty: none)\n/reset        forget the conversation\n"
                   "/stats        this session's and the server's numbers\n/quit         leave\n");
        } else if (t[0] == '/') {
            printf("unknown command %s (/help lists them)\n", t);
        } else {
            if (!s_turn(&c, t)) {
                rc = 1;
                free(line);
                break;
            }
            armed = s_interrupts > 0;
        }
        free(line);
    }
    cJSON_Delete(c.history);
    free(c.answer.data);
    free(c.sse.data);
    free(c.system);
    free(url);
    curl_global_cleanup();
    return rc;
}
