/* api: the OpenAI request and response formats, checked field by field.
 *
 * A body is parsed with cJSON; each known field must have its type and range
 * or the request fails with 400 and an OpenAI-style error object naming the
 * field (unknown fields are ignored, as OpenAI's own server does for
 * compatible clients). A chat becomes the token ids of its ChatML turns and
 * the assistant prompt (st_chatml_tokenize, as `st-run --chat -p TEXT` does
 * for one user message), the contents tokenized as text so that a message
 * cannot open a turn of its own; a /v1/completions prompt is raw text with
 * special tokens parsed. A U+0000 in any string is refused (400) rather than
 * cut where cJSON's C strings end.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_fit.h"
#include "chatml.h"
#include "generate.h"
#include "server_internal.h"
#include "st_log.h"
#include "tokenizer.h"

char *st_api_error(const char *type, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *clean = st_utf8_sanitize(msg, strlen(msg));
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", clean ? clean : "error");
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddNullToObject(e, "code");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    free(clean);
    return s;
}

#define BAD(...) (*err = st_api_error("invalid_request_error", __VA_ARGS__), 400)

/* Number field: absent -> 1 (keep default), ok -> 0 with *v, wrong -> -1. */
static int s_num(const cJSON *o, const char *name, double lo, double hi, bool integer, double *v) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!x || cJSON_IsNull(x)) return 1;
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble) || x->valuedouble < lo || x->valuedouble > hi) return -1;
    if (integer && x->valuedouble != floor(x->valuedouble)) return -1;
    *v = x->valuedouble;
    return 0;
}

/* Text of a message's content: a string, or an array of {type:"text", text}. */
static int s_content(const cJSON *c, char **out) {
    if (cJSON_IsString(c)) return (*out = strdup(c->valuestring)) ? 0 : -1;
    if (cJSON_IsNull(c)) return (*out = strdup("")) ? 0 : -1;
    if (!cJSON_IsArray(c)) return -1;
    size_t len = 1;
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(t)) return -1;
        len += strlen(t->valuestring);
    }
    if (!(*out = calloc(1, len))) return -1;
    cJSON_ArrayForEach(p, c) strcat(*out, cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring);
    return 0;
}

static void s_msgs_free(st_chat_msg_t *m, int n) {
    for (int i = 0; i < n; i++) free((char *)m[i].content);
    free(m);
}

/* The messages, checked (roles known, "developer" taken as "system");
 * contents are malloc'd. NULL with *status and *err set. */
static st_chat_msg_t *s_chat_messages(const cJSON *msgs, int *n_out, char **err, int *status) {
    int n = cJSON_GetArraySize(msgs);
    if (!cJSON_IsArray(msgs) || n < 1) return *status = BAD("'messages' must be a non-empty array"), NULL;
    st_chat_msg_t *m = calloc((size_t)n, sizeof *m);
    if (!m) return NULL;
    const cJSON *msg;
    int i = 0;
    cJSON_ArrayForEach(msg, msgs) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        char *text = NULL;
        if (!cJSON_IsObject(msg) || !cJSON_IsString(role) ||
            s_content(cJSON_GetObjectItemCaseSensitive(msg, "content"), &text) < 0) {
            s_msgs_free(m, i);
            *status = BAD("messages[%d] needs a string 'role' and a string (or text parts) 'content'", i);
            return NULL;
        }
        static const char *const roles[] = {"system", "user", "assistant", "developer"};
        int k = 0;
        while (k < 4 && strcmp(role->valuestring, roles[k])) k++;
        if (k == 4) {
            s_msgs_free(m, i);
            free(text);
            *status =
                BAD("messages[%d].role '%.40s' is not system, developer, user or assistant", i, role->valuestring);
            return NULL;
        }
        m[i++] = (st_chat_msg_t){roles[k == 3 ? 0 : k], text, strlen(text)};
    }
    *n_out = n;
    return m;
}

/* True when a JSON string in body holds U+0000, raw or as the escape \u0000:
 * cJSON's strings end there, so the text after it (or a role "user\u0000x")
 * would be cut silently. Outside strings a backslash is not valid JSON. */
static bool s_has_nul(const char *body, size_t len) {
    if (memchr(body, '\0', len)) return true;
    for (const char *p = body, *end = body + len; (p = memmem(p, (size_t)(end - p), "u0000", 5)); p += 5) {
        size_t bs = 0; /* an odd run of backslashes before the u makes it an escape */
        while (p - bs > body && p[-1 - (ptrdiff_t)bs] == '\\') bs++;
        if (bs % 2) return true;
    }
    return false;
}

int st_api_parse(const st_api_t *api, st_api_kind_t kind, const char *body, size_t blen, st_api_req_t *out,
                 char **err) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->job.sp = api->sp;
    out->job.cache_prompt = true;
    *err = NULL;
    if (s_has_nul(body, blen)) return BAD("a string in the body holds U+0000 (NUL), which is not accepted");
    cJSON *o = cJSON_ParseWithLength(body, blen);
    if (!o) return BAD("the body is not valid JSON");
    int status = 0, n = 0, n_msgs = 0;
    char *text = NULL;
    st_chat_msg_t *msgs = NULL;
    double v;
    if (!cJSON_IsObject(o)) {
        status = BAD("the body must be a JSON object");
        goto out;
    }
    const cJSON *x;
#define FIELD_NUM(name, lo, hi, integer, dst)                                                                          \
    switch (s_num(o, name, lo, hi, integer, &v)) {                                                                     \
    case 0: dst; break;                                                                                                \
    case -1:                                                                                                           \
        status =                                                                                                       \
            BAD("'%s' must be %s in [%g, %g]", name, integer ? "an integer" : "a number", (double)(lo), (double)(hi)); \
        goto out;                                                                                                      \
    }
    int max_tokens = api->default_max_tokens;
    FIELD_NUM("max_tokens", 1, 1 << 24, true, max_tokens = (int)v);
    FIELD_NUM("max_completion_tokens", 1, 1 << 24, true, max_tokens = (int)v);
    FIELD_NUM("temperature", 0, 100, false, out->job.sp.temp = (float)v);
    FIELD_NUM("top_p", 0, 1, false, out->job.sp.top_p = v > 0 ? (float)v : 1e-6f);
    FIELD_NUM("top_k", 0, 1 << 24, true, out->job.sp.top_k = (int)v);
    FIELD_NUM("min_p", 0, 1, false, out->job.sp.min_p = (float)v);
    FIELD_NUM("repeat_penalty", 0.001, 100, false, out->job.sp.repeat_penalty = (float)v);
    FIELD_NUM("seed", 0, 9007199254740991.0, true, out->job.sp.seed = (uint64_t)v);
    FIELD_NUM("presence_penalty", -2, 2, false, out->job.sp.presence_penalty = (float)v);
    FIELD_NUM("frequency_penalty", -2, 2, false, out->job.sp.frequency_penalty = (float)v);
    FIELD_NUM("n", 1, 1, true, (void)v);
    if ((x = cJSON_GetObjectItemCaseSensitive(o, "stream")) && !cJSON_IsNull(x)) {
        if (!cJSON_IsBool(x)) {
            status = BAD("'stream' must be a boolean");
            goto out;
        }
        out->stream = cJSON_IsTrue(x);
    }
    if ((x = cJSON_GetObjectItemCaseSensitive(o, "cache_prompt")) && !cJSON_IsNull(x)) {
        if (!cJSON_IsBool(x)) {
            status = BAD("'cache_prompt' must be a boolean");
            goto out;
        }
        out->job.cache_prompt = cJSON_IsTrue(x);
    }
    if ((x = cJSON_GetObjectItemCaseSensitive(o, "stream_options")) && !cJSON_IsNull(x)) {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(x, "include_usage");
        if (!cJSON_IsObject(x) || (u && !cJSON_IsBool(u))) {
            status = BAD("'stream_options' must be an object with a boolean 'include_usage'");
            goto out;
        }
        out->include_usage = cJSON_IsTrue(u);
    }
    if ((x = cJSON_GetObjectItemCaseSensitive(o, "model")) && !cJSON_IsNull(x) && !cJSON_IsString(x)) {
        status = BAD("'model' must be a string");
        goto out;
    }
    if ((x = cJSON_GetObjectItemCaseSensitive(o, "stop")) && !cJSON_IsNull(x)) {
        const cJSON *one = x, *e;
        if (cJSON_IsArray(x) && cJSON_GetArraySize(x) > ST_SERVER_MAX_STOP)
            one = NULL;
        else if (cJSON_IsArray(x))
            cJSON_ArrayForEach(e, x) if (!cJSON_IsString(e)) one = NULL;
        if (!one || !(cJSON_IsString(x) || cJSON_IsArray(x))) {
            status = BAD("'stop' must be a string or an array of at most %d strings", ST_SERVER_MAX_STOP);
            goto out;
        }
        const cJSON *list = cJSON_IsString(x) ? NULL : x;
        for (e = list ? list->child : x; e; e = list ? e->next : NULL) {
            size_t sl = strlen(e->valuestring);
            if (sl == 0) continue;
            if (sl > ST_SERVER_MAX_STOP_LEN) {
                status = BAD("a stop string is longer than %d bytes", ST_SERVER_MAX_STOP_LEN);
                goto out;
            }
            out->job.stop[out->job.n_stop++] = strdup(e->valuestring);
        }
    }
    if ((status = st_structured_parse(o, kind, out, err))) goto out;
    if (kind == ST_API_CHAT) {
        const cJSON *mj = cJSON_GetObjectItemCaseSensitive(o, "messages");
        if (out->tools != ST_TOOLS_NONE || st_tools_in_messages(mj)) /* Qwen3's tool format */
            msgs =
                st_tools_messages(mj, out->tools != ST_TOOLS_NONE ? cJSON_GetObjectItemCaseSensitive(o, "tools") : NULL,
                                  &n_msgs, err, &status);
        else
            msgs = s_chat_messages(mj, &n_msgs, err, &status);
        if (!msgs) {
            if (!status) status = 500, *err = st_api_error("server_error", "no memory");
            goto out;
        }
    } else {
        x = cJSON_GetObjectItemCaseSensitive(o, "prompt");
        if (cJSON_IsArray(x) && cJSON_GetArraySize(x) == 1) x = x->child;
        if (!cJSON_IsString(x)) {
            status = BAD("'prompt' must be a string (or an array of one string)");
            goto out;
        }
        text = strdup(x->valuestring);
        if (!text) {
            status = 500, *err = st_api_error("server_error", "no memory");
            goto out;
        }
    }
    if (!api->m->tok) {
        status = 400, *err = st_api_error("invalid_request_error", "the model has no tokenizer");
        goto out;
    }
    int n_use = n_msgs; /* messages in the prompt: --drop-old-turns may leave the oldest out */
    if (msgs && api->drop_old_turns) {
        int room = max_tokens > 0 ? max_tokens : api->n_ctx / 4; /* no max_tokens: a quarter for the answer */
        int nt = 0, rc = st_chat_fit(api->m->tok, msgs, n_msgs, room, api->n_ctx, &n_use, &nt);
        if (rc == ST_ERANGE) {
            status =
                BAD("the conversation's last turn (with the system messages) has %d tokens; with %d for the answer "
                    "it does not fit the context of %d tokens",
                    nt, room, api->n_ctx);
            goto out;
        }
        if (rc < 0) {
            status = 500, *err = st_api_error("server_error", "tokenization failed");
            goto out;
        }
        if (n_use < n_msgs)
            st_log(ST_LOG_INFO, "--drop-old-turns: the oldest %d of %d messages left out (%d prompt tokens)",
                   n_msgs - n_use, n_msgs, nt);
    }
    const char *hint = msgs && !api->drop_old_turns ? " (a server started with --drop-old-turns leaves out the oldest "
                                                      "turns instead)"
                                                    : "";
    /* a raw prompt may hold special tokens; chat contents are text (special tokens only from the template) */
    for (int pass = 0; pass < 2; pass++) {
        int32_t *ids = pass ? out->job.prompt : NULL;
        int got = msgs ? st_chatml_tokenize(api->m->tok, msgs, n_use, ids, n)
                       : st_tokenize(api->m->tok, text, strlen(text), true, ids, n);
        if (pass == 0) n = got;
        if (got < 0 || (pass && got != n)) {
            status = 500, *err = st_api_error("server_error", "tokenization failed");
            goto out;
        }
        if (pass == 0 && n < 1) {
            status = BAD("the prompt is empty");
            goto out;
        }
        if (pass == 0 && n >= api->n_ctx) {
            status = BAD("the prompt has %d tokens; the context holds %d%s", n, api->n_ctx, hint);
            goto out;
        }
        if (pass == 0 && !(out->job.prompt = malloc((size_t)n * sizeof(int32_t)))) {
            status = 500, *err = st_api_error("server_error", "no memory");
            goto out;
        }
    }
    out->job.n_prompt = n;
    if (max_tokens <= 0) max_tokens = api->n_ctx - n;
    if (n + max_tokens > api->n_ctx) {
        status = BAD("prompt (%d tokens) + max_tokens (%d) exceed the context of %d tokens%s", n, max_tokens,
                     api->n_ctx, hint);
        goto out;
    }
    if (out->job.grammar && max_tokens < st_grammar_min_length(out->job.grammar)) {
        status = BAD("max_tokens (%d) is below the %d bytes of the shortest answer the format allows (a token may "
                     "be one byte)",
                     max_tokens, st_grammar_min_length(out->job.grammar));
        goto out;
    }
    out->job.max_tokens = max_tokens;
out:
    free(text);
    if (msgs) s_msgs_free(msgs, n_msgs);
    cJSON_Delete(o);
    if (status) st_api_req_free(out);
    return status;
}

void st_api_req_free(st_api_req_t *r) {
    free(r->job.prompt);
    r->job.prompt = NULL;
    for (int i = 0; i < r->job.n_stop; i++) free(r->job.stop[i]);
    r->job.n_stop = 0;
    st_grammar_destroy(&r->job.grammar);
    free(r->held.p);
    r->held = (st_textbuf_t){0};
}

static cJSON *s_usage(const st_req_out_t *o) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", o->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", o->n_generated);
    cJSON_AddNumberToObject(u, "total_tokens", o->n_prompt + o->n_generated);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    if (d) cJSON_AddNumberToObject(d, "cached_tokens", o->n_cached);
    return u;
}

static const char *s_finish(const st_req_out_t *o) {
    return o->finish && !strcmp(o->finish, "length") ? "length"
           : o->finish && !strcmp(o->finish, "stop") ? "stop"
                                                     : "error";
}

static cJSON *s_head(const st_api_t *api, const st_api_req_t *r, const char *id, bool chunk) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object",
                            r->kind == ST_API_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                   : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)time(NULL));
    cJSON_AddStringToObject(o, "model", api->model_name);
    return o;
}

char *st_api_response(const st_api_t *api, const st_api_req_t *r, const char *id, const char *text,
                      const st_req_out_t *f) {
    cJSON *o = s_head(api, r, id, false);
    cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(ch, c);
    cJSON_AddNumberToObject(c, "index", 0);
    const char *finish = s_finish(f);
    if (r->kind == ST_API_CHAT) {
        cJSON *msg = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        char *content = NULL;
        cJSON *calls = st_tools_answer(r, text, id, &content);
        if (content)
            cJSON_AddStringToObject(msg, "content", content);
        else
            cJSON_AddNullToObject(msg, "content");
        if (calls) cJSON_AddItemToObject(msg, "tool_calls", calls), finish = "tool_calls";
        free(content);
    } else {
        cJSON_AddStringToObject(c, "text", text);
        cJSON_AddNullToObject(c, "logprobs");
    }
    cJSON_AddStringToObject(c, "finish_reason", finish);
    cJSON_AddItemToObject(o, "usage", s_usage(f));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* "data: {o}\n\n" (malloc'd); o is freed. */
static char *s_sse(cJSON *o) {
    char *j = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!j) return NULL;
    size_t n = strlen(j) + 16;
    char *s = malloc(n);
    if (s) snprintf(s, n, "data: %s\n\n", j);
    free(j);
    return s;
}

/* One SSE event: a delta (role, text or tool calls), or the closing chunk when f is set. */
static char *s_event(const st_api_t *api, const st_api_req_t *r, const char *id, const char *text, bool role,
                     cJSON *calls, const st_req_out_t *f, const char *finish) {
    cJSON *o = s_head(api, r, id, true);
    cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(ch, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (r->kind == ST_API_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role) cJSON_AddStringToObject(d, "role", "assistant");
        if (text) cJSON_AddStringToObject(d, "content", text);
        if (calls) cJSON_AddItemReferenceToObject(d, "tool_calls", calls);
    } else {
        cJSON_AddStringToObject(c, "text", text ? text : "");
        cJSON_AddNullToObject(c, "logprobs");
    }
    if (f)
        cJSON_AddStringToObject(c, "finish_reason", finish ? finish : s_finish(f));
    else
        cJSON_AddNullToObject(c, "finish_reason");
    if (r->include_usage) cJSON_AddNullToObject(o, "usage"); /* as OpenAI: null until the usage chunk */
    return s_sse(o);
}

/* stream_options.include_usage: the chunk after the closing one, no choices, the usage. */
static char *s_usage_event(const st_api_t *api, const st_api_req_t *r, const char *id, const st_req_out_t *f) {
    cJSON *o = s_head(api, r, id, true);
    cJSON_AddArrayToObject(o, "choices");
    cJSON_AddItemToObject(o, "usage", s_usage(f));
    return s_sse(o);
}

char *st_api_chunk(const st_api_t *api, st_api_req_t *r, const char *id, const char *text, bool role,
                   const st_req_out_t *f) {
    bool tools = r->kind == ST_API_CHAT && r->tools != ST_TOOLS_NONE;
    if (!f && (!tools || role)) return s_event(api, r, id, text, role, NULL, NULL, NULL);
    if (!f) { /* text that may be (part of) a tool call is held back */
        char *t = st_tools_stream_text(r, text ? text : "", text ? strlen(text) : 0);
        char *e = t && t[0] ? s_event(api, r, id, t, false, NULL, NULL, NULL) : t ? strdup("") : NULL;
        free(t);
        return e;
    }
    char *content = NULL;
    cJSON *calls = tools ? st_tools_stream_end(r, id, &content) : NULL;
    int i = 0;
    for (cJSON *c = calls ? calls->child : NULL; c; c = c->next) cJSON_AddNumberToObject(c, "index", i++);
    char *ev[4] = {content ? s_event(api, r, id, content, false, NULL, NULL, NULL) : NULL,
                   calls ? s_event(api, r, id, NULL, false, calls, NULL, NULL) : NULL,
                   s_event(api, r, id, text, role, NULL, f, calls ? "tool_calls" : NULL),
                   r->include_usage ? s_usage_event(api, r, id, f) : NULL};
    size_t len[4], total = 0;
    for (int k = 0; k < 4; k++) total += len[k] = ev[k] ? strlen(ev[k]) : 0;
    char *all = ev[2] && (ev[3] || !r->include_usage) ? malloc(total + 1) : NULL;
    if (all) {
        total = 0;
        for (int k = 0; k < 4; k++) memcpy(all + total, ev[k] ? ev[k] : "", len[k]), total += len[k];
        all[total] = '\0';
    }
    for (int k = 0; k < 4; k++) free(ev[k]);
    free(content);
    cJSON_Delete(calls);
    return all;
}

char *st_api_models(const st_api_t *api) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *d = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
    cJSON_AddItemToArray(d, m);
    cJSON_AddStringToObject(m, "id", api->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "st-cluster");
    cJSON_AddNumberToObject(m, "context_length", api->n_ctx);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
