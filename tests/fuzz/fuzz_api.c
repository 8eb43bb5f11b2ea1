/* fuzz_api: the HTTP API's request parsing (st_api_parse, what
 * /v1/chat/completions and /v1/completions run on a request body) on any
 * bytes, without a socket, with the small in-memory vocabulary of
 * fuzz_vocab. First input byte: bit 0 = completion (else chat), bits 1-2 =
 * the context (8, 64, 512 or 4096 tokens), bit 3 = a default max_tokens of
 * 16 (else what the context leaves); the rest is the body.
 *
 * Checked: a refusal is a 400 or 500 with an OpenAI error object; an
 * accepted request has a prompt of 1..n_ctx-1 ids in the vocabulary, a
 * max_tokens that fits the context, at most ST_SERVER_MAX_STOP non-empty
 * stop strings of at most ST_SERVER_MAX_STOP_LEN bytes, and its response and
 * stream chunks format as JSON. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "fuzz_vocab.h"
#include "model.h"
#include "server_internal.h"
#include "st_log.h"

static st_model_t g_model; /* only the tokenizer is used */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (g_model.tok) return 0;
    if (!getenv("ST_LOG")) st_log_set_level((st_log_level_t)-1); /* silent: refusals are the normal case */
    g_model.tok = st_fuzz_vocab();
    return 0;
}

/* The error JSON of a refusal: {"error":{"message":"...","type":"...",...}}. */
static void s_check_error(const char *err) {
    cJSON *o = err ? cJSON_Parse(err) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "type")))
        abort();
    cJSON_Delete(o);
}

/* A formatted response must parse back as a JSON object. */
static void s_check_json(char *s, size_t skip) {
    if (!s) abort();
    cJSON *o = cJSON_Parse(s + skip);
    if (!cJSON_IsObject(o)) abort();
    cJSON_Delete(o);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_model.tok) LLVMFuzzerInitialize(NULL, NULL);
    if (size < 1) return 0;
    static const int ctx[4] = {8, 64, 512, 4096};
    st_api_t api = {.m = &g_model, .model_name = "fuzz", .n_ctx = ctx[(data[0] >> 1) & 3]};
    api.sp = st_sampler_default_params();
    api.default_max_tokens = data[0] & 8 ? 16 : 0;
    const st_api_kind_t kind = data[0] & 1 ? ST_API_COMPLETION : ST_API_CHAT;
    /* the body in a buffer of exactly its size: no NUL after it, as from the socket */
    const size_t len = size - 1;
    char *body = malloc(len ? len : 1);
    if (!body) return 0;
    memcpy(body, data + 1, len);
    st_api_req_t req;
    char *err = NULL;
    int status = st_api_parse(&api, kind, body, len, &req, &err);
    free(body);
    if (getenv("ST_FUZZ_VERBOSE")) fprintf(stderr, "fuzz_api: %d %s\n", status, err ? err : "");
    if (status) {
        if (status != 400 && status != 500) abort();
        s_check_error(err);
        free(err);
        return 0;
    }
    if (err) abort();
    const st_job_t *j = &req.job;
    const int V = st_tokenizer_n_vocab(g_model.tok);
    if (j->n_prompt < 1 || j->n_prompt >= api.n_ctx || !j->prompt) abort();
    for (int i = 0; i < j->n_prompt; i++)
        if (j->prompt[i] < 0 || j->prompt[i] >= V) abort();
    if (j->max_tokens < 1 || j->n_prompt + j->max_tokens > api.n_ctx) abort();
    if (j->n_stop < 0 || j->n_stop > ST_SERVER_MAX_STOP) abort();
    for (int i = 0; i < j->n_stop; i++)
        if (!j->stop[i] || !j->stop[i][0] || strlen(j->stop[i]) > ST_SERVER_MAX_STOP_LEN) abort();
    if (req.kind != kind) abort();
    /* what the server would send back for it */
    st_req_out_t done = {.text = NULL, .done = true, .finish = "stop", .n_prompt = j->n_prompt, .n_generated = 1};
    s_check_json(st_api_response(&api, &req, "cmpl-fuzz", "ok", &done), 0);
    s_check_json(st_api_chunk(&api, &req, "cmpl-fuzz", "ok", true, NULL), 6); /* "data: " */
    s_check_json(st_api_chunk(&api, &req, "cmpl-fuzz", NULL, false, &done), 6);
    st_api_req_free(&req);
    return 0;
}
