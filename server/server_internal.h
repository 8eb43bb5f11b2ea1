/* server_internal: the parts of the server library and what they share.
 *   scheduler.c  queue + continuous batching (st_sched_*, st_req_*)
 *   prompt_cache.c  finished sequences' KV caches, reused by later prompts (prompt_cache.h)
 *   api.c        OpenAI request parsing and response formatting (st_api_*)
 *   structured.c response_format, tools and tool_choice; tool calls read back (st_structured_*, st_tools_*)
 *   metrics.c    Prometheus text and the /health JSON (st_metrics_*)
 *   http.c       libmicrohttpd daemon, routing, auth, body limit (st_http_*)
 */
#ifndef ST_SERVER_INTERNAL_H
#define ST_SERVER_INTERNAL_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chatml.h"
#include "forward.h"
#include "grammar.h"
#include "model.h"
#include "prompt_cache.h"
#include "sampler.h"
#include "server.h"

#define ST_SERVER_MAX_BODY (1 << 20) /* bytes of one request body */
#define ST_SERVER_MAX_STOP 4         /* stop strings per request (as OpenAI) */
#define ST_SERVER_MAX_STOP_LEN 256

/* ---- scheduler ------------------------------------------------------------ */

typedef struct st_sched st_sched_t;
typedef struct st_req st_req_t;

typedef struct {
    int32_t *prompt; /* taken by st_sched_submit */
    int n_prompt;
    int max_tokens;
    st_sampler_params_t sp;
    int n_stop;
    char *stop[ST_SERVER_MAX_STOP]; /* taken by st_sched_submit */
    bool cache_prompt;              /* start from (and leave) a cached prefix of the prompt */
    st_grammar_t *grammar;          /* what the answer must follow (NULL: free text); taken by st_sched_submit */
} st_job_t;

typedef struct {
    uint64_t requests_done, requests_failed, requests_rejected, requests_cancelled;
    uint64_t prompt_tokens, generated_tokens, batch_steps, batch_seqs;
    double ttft_sum_s;
    uint64_t ttft_count;
    uint64_t ttft_bucket[8]; /* cumulative counts per st_sched_ttft_bounds */
    double tokens_per_s;     /* generated tokens over the last 10 s */
    st_pcache_stats_t cache; /* the prompt cache */
    int queued, active, parallel, queue_max, n_ctx;
} st_sched_stats_t;
extern const double st_sched_ttft_bounds[8];

/* The scheduler thread on c (borrowed, used only by that thread from now on),
 * with a prompt cache of kv_budget bytes (0: none). view may be NULL. NULL on
 * failure. */
st_sched_t *st_sched_new(st_ctx_t *c, int parallel, int queue_max, int n_ctx, size_t kv_budget,
                         const st_server_view_t *view);
/* Stops the thread: running and queued requests end with finish_reason
 * "error", new ones are refused. Requests stay readable until released. */
void st_sched_stop(st_sched_t *s);
/* Stops (if needed) and frees; every request must have been released. */
void st_sched_destroy(st_sched_t **s);
/* Queues a job (takes its prompt and stop strings in every case). NULL with
 * *err = ST_ERANGE when the queue is full, ST_ENOMEM otherwise. */
st_req_t *st_sched_submit(st_sched_t *s, st_job_t *job, int *err);

typedef struct {
    char *text; /* new text since the last call (valid UTF-8, malloc'd, may be "") */
    size_t len;
    bool done;
    const char *finish; /* "stop", "length", "error" when done */
    int n_prompt, n_generated;
    int n_cached; /* prompt tokens taken from the prompt cache */
} st_req_out_t;

/* Waits up to timeout_ms for new text or the end; 0, or ST_ETIMEOUT with out
 * still filled (empty text). The caller frees out->text. */
int st_req_wait(st_req_t *r, st_req_out_t *out, int timeout_ms);
/* The client is gone or done: cancels the request if it runs, drops the
 * caller's reference and NULLs *r. */
void st_req_release(st_req_t **r);

void st_sched_stats(st_sched_t *s, st_sched_stats_t *out);
/* Whether the scheduler waits before it serves (st_server_view_t.waiting),
 * as of its last check, with the reason in why. */
bool st_sched_waiting(st_sched_t *s, char *why, size_t cap);
/* The latest cluster view as a JSON array (malloc'd text; "[]" without a view). */
char *st_sched_nodes_json(st_sched_t *s);
/* An admin action (POST /admin/ACTION) for the view, run on the scheduler
 * thread at its next point between steps; waits for it. Returns an HTTP
 * status and a malloc'd JSON answer in *reply (404 without an admin view,
 * 503 when the scheduler stops first). */
int st_sched_admin(st_sched_t *s, const char *action, const char *body, size_t len, char **reply);
/* The view's pairing code (st_server_view_t.pairing), false when none. */
bool st_sched_pairing(st_sched_t *s, char *code, size_t cap, int *seconds_left);

/* ---- API -------------------------------------------------------------------- */

typedef enum { ST_API_CHAT, ST_API_COMPLETION } st_api_kind_t;

typedef enum { ST_TOOLS_NONE, ST_TOOLS_AUTO, ST_TOOLS_FORCED } st_tools_mode_t;

typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} st_textbuf_t;

typedef struct {
    st_api_kind_t kind;
    bool stream, include_usage;
    st_job_t job;
    st_tools_mode_t tools; /* tool calls: none, the model's choice, or one required */
    st_textbuf_t held;     /* streaming with tools: text held back (it is, or may start, a call) */
    bool in_call;
} st_api_req_t;

typedef struct {
    const st_model_t *m;
    const char *model_name;
    st_sampler_params_t sp; /* defaults for fields a request leaves out */
    int default_max_tokens; /* <= 0: what the context leaves */
    bool drop_old_turns;    /* a chat too long for n_ctx loses its oldest turns (else 400) */
    int n_ctx;              /* per sequence */
} st_api_t;

/* Parses a request body. 0, or an HTTP status (400...) with a malloc'd
 * OpenAI-style error JSON in *err_json. */
int st_api_parse(const st_api_t *api, st_api_kind_t kind, const char *body, size_t len, st_api_req_t *out,
                 char **err_json);
void st_api_req_free(st_api_req_t *r);
/* {"error":{"message":msg,"type":type,"code":null}} (malloc'd). */
char *st_api_error(const char *type, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whole response of a non-streamed request (malloc'd JSON). */
char *st_api_response(const st_api_t *api, const st_api_req_t *r, const char *id, const char *text,
                      const st_req_out_t *o);
/* One SSE event "data: {...}\n\n" (malloc'd): a text delta, or with finish
 * set the closing chunk, then with include_usage a chunk with "choices": []
 * and the usage (the others then carry "usage": null; without it none has
 * usage). role: first chat chunk. With tools, text
 * that is (or may be) a tool call is held back in r and goes out at the end
 * as a delta.tool_calls chunk (the result may then be "" or two events). */
char *st_api_chunk(const st_api_t *api, st_api_req_t *r, const char *id, const char *text, bool role,
                   const st_req_out_t *finish);
char *st_api_models(const st_api_t *api);

/* ---- structured answers: response_format, tools (structured.c) ----------------- */

/* Reads response_format, tools and tool_choice of body: out->job.grammar
 * (what the answer must follow) and out->tools. 0, or 400 with *err_json. */
int st_structured_parse(const cJSON *body, st_api_kind_t kind, st_api_req_t *out, char **err_json);
/* Some message is a tool result or carries tool calls. */
bool st_tools_in_messages(const cJSON *msgs);
/* The chat's turns in Qwen3's tool format (for st_chatml_tokenize): tools
 * (NULL: none) in the system turn, assistant tool_calls as <tool_call>
 * blocks, a run of tool results as <tool_response> blocks in one user turn.
 * *n_out turns, contents malloc'd (st_tools_messages_free). NULL with
 * *status and *err_json on a bad message. */
st_chat_msg_t *st_tools_messages(const cJSON *msgs, const cJSON *tools, int *n_out, char **err_json, int *status);
void st_tools_messages_free(st_chat_msg_t *m, int n);
/* The tool calls of a whole answer as an OpenAI tool_calls array (NULL: none;
 * ids from the response id), *content the text outside them (NULL when empty). */
cJSON *st_tools_answer(const st_api_req_t *r, const char *text, const char *id, char **content);
/* Streaming with tools: takes new text, returns what may go out as content
 * now (malloc'd, may be ""; NULL on no memory) and holds back the rest. */
char *st_tools_stream_text(st_api_req_t *r, const char *text, size_t len);
/* At the end of a stream: the held-back calls (NULL: none, then *content is
 * the held text, or NULL when there is none). */
cJSON *st_tools_stream_end(st_api_req_t *r, const char *id, char **content);

/* ---- metrics ------------------------------------------------------------------ */

/* Prometheus text exposition of s (and per-node series from the view), plus
 * the HTTP counters; malloc'd. */
char *st_metrics_text(st_sched_t *s, const uint64_t *http_status_counts);
/* The /health JSON (malloc'd). */
char *st_metrics_health(st_sched_t *s, const char *model_name, double uptime_s);

/* ---- HTTP --------------------------------------------------------------------- */

typedef struct st_http st_http_t;

typedef struct {
    long max_conn, max_conn_per_ip;    /* connections at once: in all, from one address */
    long header_timeout, body_timeout; /* seconds to send the request line + headers, then the body */
} st_http_limits_t;

/* Binds host:port (port 0: any free port) and serves. NULL on failure (logged).
 * api_key may be NULL (then a non-loopback address is refused). */
st_http_t *st_http_new(const char *hostport, const char *api_key, const st_http_limits_t *lim, st_sched_t *s,
                       const st_api_t *api);
void st_http_destroy(st_http_t **h);
/* "http://HOST:PORT" as bound (port resolved). */
const char *st_http_url(const st_http_t *h);

/* The embedded web chat page (generated from webui/index.html). */
extern const unsigned char st_webui_html[];
extern const size_t st_webui_html_len;

#endif
