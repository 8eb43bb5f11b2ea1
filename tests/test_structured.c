/* The request fields that shape an answer (server/structured.c) without a
 * server: the tools prompt in Qwen3's chat format (the expected texts are
 * Qwen3's chat template rendered by hand), tool calls read back from an
 * answer, streamed text held back while it may be a call, and the 400s of
 * bad response_format / tools / tool_choice fields. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

/* The turns as the ChatML text st_chatml_tokenize tokenizes. */
static char *s_prompt(const char *msgs_json, const char *tools_json) {
    cJSON *m = cJSON_Parse(msgs_json), *t = tools_json ? cJSON_Parse(tools_json) : NULL;
    cr_assert_not_null(m);
    char *err = NULL;
    int status = 0, n = 0;
    st_chat_msg_t *turns = st_tools_messages(m, t, &n, &err, &status);
    cr_assert_not_null(turns, "status %d: %s", status, err ? err : "");
    size_t len = 64;
    for (int i = 0; i < n; i++) len += strlen(turns[i].role) + turns[i].content_len + 32;
    char *p = calloc(1, len);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(strlen(turns[i].content), turns[i].content_len);
        sprintf(p + strlen(p), "<|im_start|>%s\n%s<|im_end|>\n", turns[i].role, turns[i].content);
    }
    strcat(p, "<|im_start|>assistant\n");
    st_tools_messages_free(turns, n);
    cJSON_Delete(m);
    cJSON_Delete(t);
    return p;
}

#define TOOL "{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}"
#define TOOLS_BLOCK                                                                                                    \
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function "  \
    "signatures within <tools></tools> XML tags:\n<tools>\n" TOOL "\n</tools>\n\nFor each function call, return a "    \
    "json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "  \
    "<function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"

Test(structured, tools_prompt_is_qwen3s_template) {
    char *p = s_prompt("[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"hi\"}]",
                       "[" TOOL "]");
    cr_assert_str_eq(p, "<|im_start|>system\nBe brief.\n\n" TOOLS_BLOCK
                        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    free(p);
    p = s_prompt("[{\"role\":\"user\",\"content\":\"hi\"}]", "[" TOOL "]");
    cr_assert_str_eq(p, "<|im_start|>system\n" TOOLS_BLOCK "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    free(p);
}

Test(structured, calls_and_results_go_back_as_blocks) {
    char *p =
        s_prompt("[{\"role\":\"user\",\"content\":\"hi\"},"
                 "{\"role\":\"assistant\",\"content\":\"Let me see.\",\"tool_calls\":["
                 "{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}},"
                 "{\"id\":\"b\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":{\"y\":[2]}}}]},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"a\",\"content\":\"one\"},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"b\",\"content\":\"two\"},"
                 "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
                 "{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"three\"}]",
                 NULL);
    cr_assert_str_eq(
        p, "<|im_start|>user\nhi<|im_end|>\n"
           "<|im_start|>assistant\nLet me see.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\":1}}\n"
           "</tool_call>\n<tool_call>\n{\"name\": \"g\", \"arguments\": {\"y\":[2]}}\n</tool_call><|im_end|>\n"
           "<|im_start|>user\n<tool_response>\none\n</tool_response>\n<tool_response>\ntwo\n"
           "</tool_response><|im_end|>\n"
           "<|im_start|>assistant\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call><|im_end|>\n"
           "<|im_start|>user\n<tool_response>\nthree\n</tool_response><|im_end|>\n"
           "<|im_start|>assistant\n");
    free(p);
}

static st_api_req_t s_req(st_tools_mode_t mode) {
    st_api_req_t r;
    memset(&r, 0, sizeof r);
    r.kind = ST_API_CHAT;
    r.tools = mode;
    return r;
}

Test(structured, answers_split_into_content_and_calls) {
    st_api_req_t r = s_req(ST_TOOLS_AUTO);
    char *content = NULL;
    cJSON *calls = st_tools_answer(&r, "Sure.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call>",
                                   "chatcmpl-7", &content);
    cr_assert_not_null(calls);
    cr_assert_eq(cJSON_GetArraySize(calls), 1);
    cJSON *fn = cJSON_GetObjectItem(calls->child, "function");
    cr_assert_str_eq(cJSON_GetObjectItem(fn, "name")->valuestring, "f");
    cr_assert_str_eq(cJSON_GetObjectItem(fn, "arguments")->valuestring, "{\"x\":1}"); /* a JSON text, as OpenAI */
    cr_assert_str_eq(cJSON_GetObjectItem(calls->child, "id")->valuestring, "call_chatcmpl-7_0");
    cr_assert_str_eq(content, "Sure.");
    cJSON_Delete(calls);
    free(content);
    /* a malformed block is not a call: all of it stays content */
    calls = st_tools_answer(&r, "<tool_call>\n{\"name\": 3}\n</tool_call>", "x", &content);
    cr_assert_null(calls);
    cr_assert_str_eq(content, "<tool_call>\n{\"name\": 3}\n</tool_call>");
    free(content);
    r.tools = ST_TOOLS_NONE; /* without tools, blocks are text */
    calls = st_tools_answer(&r, "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", "x", &content);
    cr_assert_null(calls);
    cr_assert(strstr(content, "<tool_call>"));
    free(content);
}

Test(structured, streamed_text_is_held_while_it_may_start_a_call) {
    st_api_req_t r = s_req(ST_TOOLS_AUTO);
    char *out = st_tools_stream_text(&r, "Hello <tool", strlen("Hello <tool"));
    cr_assert_str_eq(out, "Hello "); /* "<tool" may begin "<tool_call>" */
    free(out);
    out = st_tools_stream_text(&r, "box> and", strlen("box> and"));
    cr_assert_str_eq(out, "<toolbox> and");
    free(out);
    out = st_tools_stream_text(&r, " <tool_call>\n{\"name\": \"f\", \"arguments\": {}}",
                               strlen(" <tool_call>\n{\"name\": \"f\", \"arguments\": {}}"));
    cr_assert_str_eq(out, " ");
    free(out);
    out = st_tools_stream_text(&r, "\n</tool_call>", strlen("\n</tool_call>"));
    cr_assert_str_eq(out, "");
    free(out);
    char *content = NULL;
    cJSON *calls = st_tools_stream_end(&r, "id", &content);
    cr_assert_not_null(calls);
    cr_assert_null(content);
    cJSON_Delete(calls);
    st_api_req_free(&r);
    /* what turns out not to be a call comes out at the end as it was */
    r = s_req(ST_TOOLS_AUTO);
    out = st_tools_stream_text(&r, "a <tool_call> b", strlen("a <tool_call> b"));
    cr_assert_str_eq(out, "a ");
    free(out);
    calls = st_tools_stream_end(&r, "id", &content);
    cr_assert_null(calls);
    cr_assert_str_eq(content, "<tool_call> b");
    free(content);
    st_api_req_free(&r);
}

static void s_bad(const char *body, const char *needle) {
    cJSON *o = cJSON_Parse(body);
    cr_assert_not_null(o, "%s", body);
    st_api_req_t r = s_req(ST_TOOLS_NONE);
    char *err = NULL;
    int status = st_structured_parse(o, ST_API_CHAT, &r, &err);
    cr_assert_eq(status, 400, "%s", body);
    cr_assert(err && strstr(err, needle), "%s: %s lacks %s", body, err ? err : "(null)", needle);
    free(err);
    st_api_req_free(&r);
    cJSON_Delete(o);
}

Test(structured, bad_fields_get_400_naming_them) {
    s_bad("{\"response_format\":{\"type\":\"yaml\"}}", "not text, json_object or json_schema");
    s_bad("{\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{\"type\":\"string\",\"format\":"
          "\"uri\"}}}}",
          "'format' is not supported");
    s_bad("{\"tools\":[]}", "'tools' must be an array of 1 to 64");
    s_bad("{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]}", "function.name");
    s_bad("{\"tools\":[" TOOL "," TOOL "]}", "two functions are named 'f'");
    s_bad("{\"tools\":[" TOOL "],\"tool_choice\":\"always\"}", "'tool_choice' must be");
    s_bad("{\"tools\":[" TOOL "],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}",
          "names 'g', which is not in 'tools'");
    s_bad("{\"tools\":[" TOOL "],\"tool_choice\":\"required\",\"response_format\":{\"type\":\"json_object\"}}",
          "cannot be combined");
    s_bad("{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\","
          "\"properties\":{\"a\":{\"allOf\":[]}}}}}],\"tool_choice\":\"required\"}",
          "'allOf' is not supported (at /f/properties/a)");
    s_bad("{\"tool_choice\":\"auto\"}", "'tools' must be an array");
}

Test(structured, good_fields_set_the_grammar_and_the_mode) {
    const char *bodies[] = {"{\"response_format\":{\"type\":\"json_object\"}}",
                            "{\"tools\":[" TOOL "],\"tool_choice\":\"required\"}",
                            "{\"tools\":[" TOOL
                            "],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}",
                            "{\"tools\":[" TOOL "]}",
                            "{\"tools\":[" TOOL "],\"tool_choice\":\"none\"}",
                            "{\"response_format\":{\"type\":\"text\"}}"};
    const st_tools_mode_t modes[] = {ST_TOOLS_NONE, ST_TOOLS_FORCED, ST_TOOLS_FORCED,
                                     ST_TOOLS_AUTO, ST_TOOLS_NONE,   ST_TOOLS_NONE};
    const bool grammar[] = {true, true, true, false, false, false};
    for (int i = 0; i < 6; i++) {
        cJSON *o = cJSON_Parse(bodies[i]);
        st_api_req_t r = s_req(ST_TOOLS_NONE);
        char *err = NULL;
        cr_assert_eq(st_structured_parse(o, ST_API_CHAT, &r, &err), 0, "%s: %s", bodies[i], err);
        cr_assert_eq(r.tools, modes[i], "%s", bodies[i]);
        cr_assert_eq(r.job.grammar != NULL, grammar[i], "%s", bodies[i]);
        st_api_req_free(&r);
        cJSON_Delete(o);
    }
}
