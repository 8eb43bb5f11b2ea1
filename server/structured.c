/* structured: the request fields that shape an answer (response_format,
 * tools, tool_choice) and the tool calls read back from it.
 *
 * response_format json_object / json_schema compiles a grammar (model/
 * schema.h) that the scheduler applies to every token. Tools follow Qwen3's
 * chat template: they are listed in the system turn, a call is a
 * <tool_call>{"name": ..., "arguments": ...}</tool_call> block in the
 * assistant turn, and tool results go back as <tool_response> blocks in a
 * user turn. tool_choice "required" or a named function generates the call
 * under a grammar made from the functions' parameter schemas, so its
 * arguments always parse and validate; "auto" leaves the choice to the model
 * and reads back whatever well-formed blocks it wrote; "none" leaves the
 * tools out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"
#include "server_internal.h"

#define BAD(...) (*err = st_api_error("invalid_request_error", __VA_ARGS__), 400)
#define ST_TOOLS_MAX 64
#define OPEN_TAG "<tool_call>"
#define CLOSE_TAG "</tool_call>"

typedef st_textbuf_t sbuf_t;

static void s_add(sbuf_t *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void s_puts(sbuf_t *b, const char *s) { s_add(b, s, strlen(s)); }

/* ---- the request ------------------------------------------------------------------ */

static bool s_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > 64) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '-' || *s == '.'))
            return false;
    return true;
}

/* The function object of tools[i], checked. */
static const cJSON *s_function(const cJSON *tool, int i, char **err, int *status) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(tool, "type");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(tool, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
    if (!cJSON_IsObject(tool) || !cJSON_IsString(type) || strcmp(type->valuestring, "function") ||
        !cJSON_IsObject(fn)) {
        *status = BAD("tools[%d] must be {\"type\": \"function\", \"function\": {...}}", i);
        return NULL;
    }
    if (!cJSON_IsString(name) || !s_name_ok(name->valuestring)) {
        *status = BAD("tools[%d].function.name must be 1 to 64 letters, digits, '_', '-' or '.'", i);
        return NULL;
    }
    if ((desc && !cJSON_IsString(desc)) || (params && !cJSON_IsObject(params))) {
        *status = BAD("tools[%d].function: 'description' must be a string and 'parameters' an object", i);
        return NULL;
    }
    return fn;
}

/* The grammar of a call to one of the functions fns[0..n). */
static int s_call_grammar(const cJSON *const *fns, int n, st_job_t *job, char **err) {
    const char *names[ST_TOOLS_MAX];
    const cJSON *params[ST_TOOLS_MAX];
    for (int i = 0; i < n; i++) {
        names[i] = cJSON_GetObjectItemCaseSensitive(fns[i], "name")->valuestring;
        params[i] = cJSON_GetObjectItemCaseSensitive(fns[i], "parameters");
    }
    char msg[320];
    job->grammar = st_schema_tool_call(n, names, params, msg, sizeof msg);
    return job->grammar ? 0 : BAD("tools: function parameters: %s", msg);
}

static int s_response_format(const cJSON *rf, st_job_t *job, char **err) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    if (!cJSON_IsObject(rf) || !cJSON_IsString(type))
        return BAD("'response_format' must be an object with a string 'type'");
    const char *t = type->valuestring;
    if (!strcmp(t, "text")) return 0;
    if (!strcmp(t, "json_object")) {
        job->grammar = st_schema_any_object();
        return job->grammar ? 0 : BAD("no memory for the grammar");
    }
    if (strcmp(t, "json_schema")) return BAD("response_format.type '%.40s' is not text, json_object or json_schema", t);
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(js, "name");
    const cJSON *strict = cJSON_GetObjectItemCaseSensitive(js, "strict");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    if (!cJSON_IsObject(js)) return BAD("response_format.json_schema must be an object");
    if (name && !cJSON_IsString(name)) return BAD("response_format.json_schema.name must be a string");
    if (strict && !cJSON_IsBool(strict) && !cJSON_IsNull(strict))
        return BAD("response_format.json_schema.strict must be a boolean");
    if (!schema) return BAD("response_format.json_schema.schema is missing");
    char msg[320];
    job->grammar = st_schema_compile(schema, msg, sizeof msg);
    return job->grammar ? 0 : BAD("response_format.json_schema.schema: %s", msg);
}

int st_structured_parse(const cJSON *o, st_api_kind_t kind, st_api_req_t *out, char **err) {
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(o, "response_format");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(o, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(o, "tool_choice");
    if (cJSON_IsNull(rf)) rf = NULL;
    if (cJSON_IsNull(tools)) tools = NULL;
    if (cJSON_IsNull(choice)) choice = NULL;
    out->tools = ST_TOOLS_NONE;
    if (tools || choice) {
        if (kind != ST_API_CHAT) return BAD("'tools' and 'tool_choice' are for chat completions");
        int n = cJSON_GetArraySize(tools);
        if (!cJSON_IsArray(tools) || n < 1 || n > ST_TOOLS_MAX)
            return BAD("'tools' must be an array of 1 to %d functions", ST_TOOLS_MAX);
        const cJSON *fns[ST_TOOLS_MAX];
        int status = 0, i = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, tools) {
            if (!(fns[i] = s_function(t, i, err, &status))) return status;
            for (int j = 0; j < i; j++)
                if (!strcmp(cJSON_GetObjectItemCaseSensitive(fns[j], "name")->valuestring,
                            cJSON_GetObjectItemCaseSensitive(fns[i], "name")->valuestring))
                    return BAD("tools[%d]: two functions are named '%s'", i,
                               cJSON_GetObjectItemCaseSensitive(fns[i], "name")->valuestring);
            i++;
        }
        out->tools = ST_TOOLS_AUTO;
        const char *c = cJSON_IsString(choice) ? choice->valuestring : NULL;
        if (!choice || (c && !strcmp(c, "auto"))) {
            /* the model chooses */
        } else if (c && !strcmp(c, "none")) {
            out->tools = ST_TOOLS_NONE;
        } else if (c && !strcmp(c, "required")) {
            out->tools = ST_TOOLS_FORCED;
        } else {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(choice, "function");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(choice, "type");
            if (!cJSON_IsObject(choice) || !cJSON_IsString(type) || strcmp(type->valuestring, "function") ||
                !cJSON_IsString(name))
                return BAD("'tool_choice' must be \"auto\", \"none\", \"required\" or "
                           "{\"type\": \"function\", \"function\": {\"name\": ...}}");
            int k = -1;
            for (int j = 0; j < n; j++)
                if (!strcmp(cJSON_GetObjectItemCaseSensitive(fns[j], "name")->valuestring, name->valuestring)) k = j;
            if (k < 0) return BAD("tool_choice names '%.64s', which is not in 'tools'", name->valuestring);
            fns[0] = fns[k];
            n = 1;
            out->tools = ST_TOOLS_FORCED;
        }
        if (out->tools == ST_TOOLS_FORCED) {
            if (rf) return BAD("'response_format' cannot be combined with a required tool call");
            return s_call_grammar(fns, n, &out->job, err);
        }
    }
    return rf ? s_response_format(rf, &out->job, err) : 0;
}

/* ---- the prompt ------------------------------------------------------------------- */

/* Text of a message's content: a string, null, or an array of {type:"text", text}. */
static bool s_content(sbuf_t *b, const cJSON *c) {
    if (cJSON_IsString(c)) return s_puts(b, c->valuestring), true;
    if (!c || cJSON_IsNull(c)) return true;
    if (!cJSON_IsArray(c)) return false;
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsObject(p) || !cJSON_IsString(t)) return false;
        s_puts(b, t->valuestring);
    }
    return true;
}

bool st_tools_in_messages(const cJSON *msgs) {
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_GetObjectItemCaseSensitive(m, "tool_calls") ||
            (cJSON_IsString(role) && !strcmp(role->valuestring, "tool")))
            return true;
    }
    return false;
}

/* An assistant message's calls as <tool_call> blocks (arguments: a JSON text, or an object). */
static bool s_calls(sbuf_t *b, const cJSON *calls, bool after_content) {
    const cJSON *c;
    bool first = true;
    cJSON_ArrayForEach(c, calls) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsString(name) || !(cJSON_IsString(args) || cJSON_IsObject(args))) return false;
        if (after_content || !first) s_puts(b, "\n");
        first = false;
        char *nm = cJSON_PrintUnformatted(name), *a = cJSON_IsString(args) ? NULL : cJSON_PrintUnformatted(args);
        s_puts(b, "<tool_call>\n{\"name\": ");
        s_puts(b, nm ? nm : "\"\"");
        s_puts(b, ", \"arguments\": ");
        s_puts(b, cJSON_IsString(args) ? args->valuestring : a ? a : "{}");
        s_puts(b, "}\n</tool_call>");
        free(nm);
        free(a);
    }
    return cJSON_IsArray(calls);
}

/* The growing list of turns. */
typedef struct {
    st_chat_msg_t *m;
    int n, cap;
    bool failed;
} turns_t;

static void s_turn(turns_t *t, const char *role, sbuf_t *b) {
    if (t->failed || b->failed ||
        (t->n == t->cap && !(t->m = realloc(t->m, (size_t)(t->cap = t->cap * 2 + 8) * sizeof *t->m)))) {
        t->failed = true;
        free(b->p);
    } else {
        t->m[t->n++] = (st_chat_msg_t){role, b->p ? b->p : strdup(""), b->len};
        t->failed |= !t->m[t->n - 1].content;
    }
    *b = (sbuf_t){0};
}

void st_tools_messages_free(st_chat_msg_t *m, int n) {
    for (int i = 0; i < n; i++) free((char *)m[i].content);
    free(m);
}

st_chat_msg_t *st_tools_messages(const cJSON *msgs, const cJSON *tools, int *n_out, char **err, int *status) {
    turns_t t = {0};
    sbuf_t b = {0};
    int n = cJSON_GetArraySize(msgs), i = 0;
    const cJSON *m = cJSON_IsArray(msgs) ? msgs->child : NULL;
    const cJSON *role0 = cJSON_GetObjectItemCaseSensitive(m, "role");
    bool sys0 =
        cJSON_IsString(role0) && (!strcmp(role0->valuestring, "system") || !strcmp(role0->valuestring, "developer"));
    if (!cJSON_IsArray(msgs) || n < 1) return *status = BAD("'messages' must be a non-empty array"), NULL;
    if (tools) { /* Qwen3: the tools in the system turn, after the system message's own text */
        if (sys0) {
            if (!s_content(&b, cJSON_GetObjectItemCaseSensitive(m, "content"))) goto bad;
            s_puts(&b, "\n\n");
            m = m->next, i++;
        }
        s_puts(&b, "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
                   "with function signatures within <tools></tools> XML tags:\n<tools>");
        const cJSON *tool;
        cJSON_ArrayForEach(tool, tools) {
            char *j = cJSON_PrintUnformatted(tool);
            s_puts(&b, "\n");
            s_puts(&b, j ? j : "");
            free(j);
        }
        s_puts(&b, "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                   "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
                   "\"arguments\": <args-json-object>}\n</tool_call>");
        s_turn(&t, "system", &b);
    }
    for (; m; m = m->next, i++) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        const char *r = cJSON_IsString(role) ? role->valuestring : "";
        if (!cJSON_IsObject(m)) goto bad;
        if (!strcmp(r, "tool")) { /* a run of tool results is one user turn */
            if (b.len) s_puts(&b, "\n");
            s_puts(&b, "<tool_response>\n");
            if (!s_content(&b, content)) goto bad;
            s_puts(&b, "\n</tool_response>");
            const cJSON *nr = cJSON_GetObjectItemCaseSensitive(m->next, "role");
            if (!(cJSON_IsString(nr) && !strcmp(nr->valuestring, "tool"))) s_turn(&t, "user", &b);
            continue;
        }
        static const char *const roles[] = {"system", "user", "assistant", "developer"};
        int k = 0;
        while (k < 4 && strcmp(r, roles[k])) k++;
        if (k == 4) {
            st_tools_messages_free(t.m, t.n);
            free(b.p);
            *status = BAD("messages[%d].role '%.40s' is not system, developer, user, assistant or tool", i, r);
            return NULL;
        }
        if (!s_content(&b, content)) goto bad;
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        if (calls && !cJSON_IsNull(calls) && (k != 2 || !s_calls(&b, calls, b.len > 0))) {
            st_tools_messages_free(t.m, t.n);
            free(b.p);
            *status = BAD("messages[%d].tool_calls must be an array of {\"function\": {\"name\": ..., \"arguments\": "
                          "...}} in an assistant message",
                          i);
            return NULL;
        }
        s_turn(&t, roles[k == 3 ? 0 : k], &b);
    }
    if (t.failed) {
        st_tools_messages_free(t.m, t.n);
        return *status = 500, *err = st_api_error("server_error", "no memory"), NULL;
    }
    *n_out = t.n;
    return t.m;
bad:
    st_tools_messages_free(t.m, t.n);
    free(b.p);
    *status = BAD("messages[%d] needs a string 'role' and a string (or text parts) 'content'", i);
    return NULL;
}

/* ---- the answer ------------------------------------------------------------------- */

/* The well-formed <tool_call> blocks of text as OpenAI tool_calls, or NULL
 * when there is none (or one is malformed: then it is all content); *content
 * gets the text outside the blocks (trimmed; NULL when empty). */
static cJSON *s_parse_calls(const char *text, const char *id, char **content) {
    *content = NULL;
    cJSON *calls = cJSON_CreateArray();
    sbuf_t rest = {0};
    const char *p = text;
    int k = 0;
    for (const char *open; calls && (open = strstr(p, OPEN_TAG)); k++) {
        const char *body = open + strlen(OPEN_TAG), *close = strstr(body, CLOSE_TAG);
        cJSON *j = close ? cJSON_ParseWithLength(body, (size_t)(close - body)) : NULL;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(j, "arguments");
        char *a = cJSON_IsObject(args) ? cJSON_PrintUnformatted(args) : NULL;
        if (!cJSON_IsObject(j) || !cJSON_IsString(name) || !a) {
            cJSON_Delete(j);
            free(a);
            cJSON_Delete(calls);
            calls = NULL;
            break;
        }
        s_add(&rest, p, (size_t)(open - p));
        char cid[96];
        snprintf(cid, sizeof cid, "call_%.60s_%d", id, k);
        cJSON *c = cJSON_CreateObject(), *fn;
        cJSON_AddStringToObject(c, "id", cid);
        cJSON_AddStringToObject(c, "type", "function");
        fn = cJSON_AddObjectToObject(c, "function");
        cJSON_AddStringToObject(fn, "name", name->valuestring);
        cJSON_AddStringToObject(fn, "arguments", a);
        cJSON_AddItemToArray(calls, c);
        free(a);
        cJSON_Delete(j);
        p = close + strlen(CLOSE_TAG);
    }
    if (calls && k == 0) cJSON_Delete(calls), calls = NULL;
    if (!calls) {
        free(rest.p);
        rest = (sbuf_t){0};
        p = text;
    }
    s_puts(&rest, p);
    size_t a = 0, e = rest.len;
    while (a < e && strchr(" \t\r\n", rest.p[a])) a++;
    while (e > a && strchr(" \t\r\n", rest.p[e - 1])) e--;
    if (e > a && !rest.failed) {
        memmove(rest.p, rest.p + a, e - a);
        rest.p[e - a] = '\0';
        *content = rest.p;
    } else {
        free(rest.p);
    }
    return calls;
}

cJSON *st_tools_answer(const st_api_req_t *r, const char *text, const char *id, char **content) {
    if (r->tools == ST_TOOLS_NONE) {
        *content = strdup(text);
        return NULL;
    }
    return s_parse_calls(text, id, content);
}

/* The longest end of s (n bytes) that could begin OPEN_TAG. */
static size_t s_tag_prefix(const char *s, size_t n) {
    size_t t = strlen(OPEN_TAG);
    for (size_t k = n < t - 1 ? n : t - 1; k > 0; k--)
        if (!memcmp(s + n - k, OPEN_TAG, k)) return k;
    return 0;
}

char *st_tools_stream_text(st_api_req_t *r, const char *text, size_t len) {
    sbuf_t *h = &r->held;
    s_add(h, text, len);
    if (h->failed) return NULL;
    if (r->tools == ST_TOOLS_FORCED || r->in_call) return strdup("");
    char *open = strstr(h->p, OPEN_TAG);
    size_t out = open ? (size_t)(open - h->p) : h->len - s_tag_prefix(h->p, h->len);
    if (open) r->in_call = true;
    char *s = malloc(out + 1);
    if (!s) return NULL;
    memcpy(s, h->p, out);
    s[out] = '\0';
    memmove(h->p, h->p + out, h->len - out + 1);
    h->len -= out;
    return s;
}

cJSON *st_tools_stream_end(st_api_req_t *r, const char *id, char **content) {
    const char *held = r->held.p ? r->held.p : "";
    if (!r->in_call && r->tools != ST_TOOLS_FORCED) {
        *content = held[0] ? strdup(held) : NULL;
        return NULL;
    }
    cJSON *calls = s_parse_calls(held, id, content);
    if (!calls) { /* not a call after all: what was held back is content as written */
        free(*content);
        *content = held[0] ? strdup(held) : NULL;
    }
    return calls;
}
