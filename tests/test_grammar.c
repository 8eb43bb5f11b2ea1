/* The grammar engine without a server: schemas compiled (schema.h), texts
 * matched byte by byte (grammar.h), and the vocabulary masked (vocab_mask.h).
 *
 * Accepted and refused texts are written by hand from the schemas; texts the
 * grammar generates (random bytes, or random logits through the sampler and
 * the mask, several seeds) are checked by the `jsonschema` Python package
 * (tests/grammar/validate.py), not by this code. The mask is compared with a
 * plain per-token check of the whole vocabulary.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "grammar.h"
#include "sampler.h"
#include "schema.h"
#include "testutil.h"
#include "tokenizer.h"
#include "vocab_mask.h"

static st_grammar_t *s_compile(const char *json) {
    cJSON *j = cJSON_Parse(json);
    cr_assert_not_null(j, "bad test schema %s", json);
    char err[256];
    st_grammar_t *g = st_schema_compile(j, err, sizeof err);
    cJSON_Delete(j);
    cr_assert_not_null(g, "%s: %s", json, err);
    return g;
}

/* How far text gets: its length when every byte is taken, else the index of the refused byte. */
static size_t s_taken(const st_grammar_t *g, const char *text, st_gstate_t *s) {
    st_gstate_init(s, g);
    for (size_t i = 0; text[i]; i++) {
        st_gstate_t t;
        st_gstate_copy(&t, s);
        if (!st_gstate_feed(&t, g, (unsigned char)text[i])) return i;
        st_gstate_copy(s, &t);
    }
    return strlen(text);
}

static void s_accepts(const st_grammar_t *g, const char *text) {
    st_gstate_t s;
    size_t n = s_taken(g, text, &s);
    cr_assert_eq(n, strlen(text), "refused at byte %zu of %s", n, text);
    cr_assert(st_gstate_complete(&s, g), "%s is not complete", text);
    cr_assert_eq(st_gstate_min_remaining(&s, g), 0, "%s", text);
}

/* text is a valid prefix up to (not including) byte at. */
static void s_refuses_at(const st_grammar_t *g, const char *text, size_t at) {
    st_gstate_t s;
    cr_assert_eq(s_taken(g, text, &s), at, "%s: refused at %zu, expected at %zu", text, s_taken(g, text, &s), at);
}

#define PERSON                                                                                                         \
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":5},"                             \
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},\"tags\":{\"type\":\"array\",\"items\":"             \
    "{\"enum\":[\"a\",\"bc\",7,null]},\"minItems\":1,\"maxItems\":2}},\"required\":[\"name\",\"age\"]}"

Test(grammar, object_takes_valid_texts_and_refuses_at_the_first_bad_byte) {
    st_grammar_t *g = s_compile(PERSON);
    s_accepts(g, "{\"name\": \"Bob\", \"age\": 42}");
    s_accepts(g, "{\"name\":\"\",\"age\":0}");
    s_accepts(g, "{\"name\":\"Zoë\",\"age\":120,\"tags\":[null, \"bc\"]}");
    s_accepts(g, "{\"name\":\"a\\n\\\"\",\"age\":7,\"tags\":[7]}");
    s_refuses_at(g, "{\"age\":1}", 2);                                /* name is required and comes first */
    s_refuses_at(g, "{\"name\":\"Bobbyy\"", 14);                      /* maxLength 5 */
    s_refuses_at(g, "{\"name\":\"a\",\"age\":121", 20);               /* maximum 120 */
    s_refuses_at(g, "{\"name\":\"a\",\"age\":-1", 19);                /* minimum 0 (-0 is 0) */
    s_refuses_at(g, "{\"name\":\"a\",\"age\":01", 19);                /* no leading zeros */
    s_refuses_at(g, "{\"name\":\"a\",\"age\":1.5", 19);               /* an integer */
    s_refuses_at(g, "{\"name\":\"a\"}", 11);                          /* age is required */
    s_refuses_at(g, "{\"name\":\"a\",\"age\":1,\"tags\":[]", 28);     /* minItems 1 */
    s_refuses_at(g, "{\"name\":\"a\",\"age\":1,\"tags\":[7,7,", 31);  /* maxItems 2 */
    s_refuses_at(g, "{\"name\":\"a\",\"age\":1,\"tags\":[\"b\"", 30); /* enum */
    s_refuses_at(g, "{\"name\":  \"a\"", 9);                          /* one space at most */
    s_refuses_at(g, "{\"name\":\"a\x01", 10);                         /* control characters are escaped */
    s_refuses_at(g, "{\"name\":\"\xC0\x80", 9);                       /* overlong UTF-8 */
    s_refuses_at(g, "{\"name\":\"\xED\xA0\x80", 10);                  /* a surrogate */
    s_refuses_at(g, "{\"name\":\"a\",\"age\":1,\"tags\":[7]}x", 31);  /* nothing after the end */
    st_grammar_destroy(&g);
    cr_assert_null(g);
}

Test(grammar, shortest_completion_is_counted_in_bytes) {
    st_grammar_t *g = s_compile(PERSON);
    /* {"name":"","age":0} */
    cr_assert_eq(st_grammar_min_length(g), 19);
    st_gstate_t s;
    s_taken(g, "{\"name\":\"ab", &s);
    cr_assert_eq(st_gstate_min_remaining(&s, g), 10); /* "  ,"age":0}  */
    s_taken(g, "{\"name\":\"ab\",\"age\":3", &s);
    cr_assert_eq(st_gstate_min_remaining(&s, g), 1);
    cr_assert_not(st_gstate_complete(&s, g));
    s_taken(g, "{\"name\":\"ab\",\"age\":3,", &s); /* committed to tags: "tags":[7]} */
    cr_assert_eq(st_gstate_min_remaining(&s, g), 11);
    s_taken(g, "{\"name\":\"ab\",\"age\":3}", &s);
    cr_assert(st_gstate_finished(&s));
    st_grammar_destroy(&g);
    /* a number that must reach 1000: "1000" */
    g = s_compile("{\"type\":\"integer\",\"minimum\":1000,\"maximum\":5000}");
    cr_assert_eq(st_grammar_min_length(g), 4);
    s_taken(g, "4", &s);
    cr_assert_eq(st_gstate_min_remaining(&s, g), 3);
    s_refuses_at(g, "6", 0);
    s_refuses_at(g, "50001", 4);
    s_accepts(g, "5000");
    st_grammar_destroy(&g);
}

Test(grammar, number_bounds_exclusive_and_fractional) {
    st_grammar_t *g = s_compile("{\"type\":\"number\",\"minimum\":0.5,\"exclusiveMaximum\":1.5}");
    s_accepts(g, "0.5");
    s_accepts(g, "1");
    s_accepts(g, "1.499999");
    s_accepts(g, "0.75");
    s_refuses_at(g, "1.5", 2); /* 1.5 excluded; 1.4... still possible after "1." */
    s_refuses_at(g, "0.4", 2);
    s_refuses_at(g, "2", 0);
    s_refuses_at(g, "-", 0);
    s_refuses_at(g, "1.4999999", 8); /* six fraction digits at most */
    st_gstate_t s;
    s_taken(g, "0", &s);
    cr_assert_not(st_gstate_complete(&s, g)); /* 0 < 0.5 */
    cr_assert_eq(st_gstate_min_remaining(&s, g), 2);
    st_grammar_destroy(&g);
    g = s_compile("{\"type\":\"number\",\"maximum\":-2.25}");
    s_accepts(g, "-2.25");
    s_accepts(g, "-3");
    s_refuses_at(g, "-2.20", 4); /* -2.2 may go on to -2.25..-2.29; -2.20x > -2.25 */
    s_accepts(g, "-2.26");
    s_refuses_at(g, "1", 0);
    st_grammar_destroy(&g);
}

Test(grammar, unions_enums_booleans_and_nested_arrays) {
    st_grammar_t *g =
        s_compile("{\"type\":\"object\",\"properties\":{\"v\":{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]},"
                  "\"w\":{\"type\":[\"boolean\",\"integer\"]},\"m\":{\"type\":\"array\",\"items\":{\"type\":\"array\","
                  "\"items\":{\"type\":\"number\"},\"maxItems\":2}}},\"required\":[\"v\",\"w\",\"m\"]}");
    s_accepts(g, "{\"v\":null,\"w\":true,\"m\":[]}");
    s_accepts(g, "{\"v\":\"x\",\"w\":-5,\"m\":[[1.5,2],[]]}");
    s_refuses_at(g, "{\"v\":1", 5);
    s_refuses_at(g, "{\"v\":null,\"w\":nul", 14); /* boolean or integer */
    s_refuses_at(g, "{\"v\":null,\"w\":fals,", 18);
    s_refuses_at(g, "{\"v\":null,\"w\":1,\"m\":[[1,2,", 25);
    st_grammar_destroy(&g);
    g = st_schema_any_object();
    s_accepts(g, "{}");
    s_accepts(g, "{\"a\": [1, {\"b\": null}, \"x\"], \"c\": -0.5, \"d\": false}");
    s_refuses_at(g, "[", 0);
    s_refuses_at(g, "{\"a\":tru}", 8);
    st_grammar_destroy(&g);
}

Test(grammar, tool_call_block_follows_the_named_function) {
    cJSON *p0 =
        cJSON_Parse("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}");
    cJSON *p1 = cJSON_Parse("{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},\"required\":[\"n\"]}");
    const char *names[] = {"get_weather", "get_time"};
    const cJSON *params[] = {p0, p1};
    char err[256];
    st_grammar_t *g = st_schema_tool_call(2, names, params, err, sizeof err);
    cr_assert_not_null(g, "%s", err);
    s_accepts(g, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>");
    s_accepts(g, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"n\":3}}\n</tool_call>");
    s_refuses_at(g, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"city\"", 48);
    s_refuses_at(g, "<tool_call>\n{\"name\": \"get_x", 26);
    st_gstate_t s;
    s_taken(g, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"n\":3}}\n</tool_call>", &s);
    cr_assert(st_gstate_finished(&s));
    st_grammar_destroy(&g);
    cJSON_Delete(p0);
    cJSON_Delete(p1);
}

static void s_refused(const char *schema, const char *needle) {
    cJSON *j = cJSON_Parse(schema);
    cr_assert_not_null(j);
    char err[256];
    st_grammar_t *g = st_schema_compile(j, err, sizeof err);
    cJSON_Delete(j);
    cr_assert_null(g, "%s compiled", schema);
    cr_assert(strstr(err, needle), "%s: error '%s' does not name %s", schema, err, needle);
}

Test(grammar, what_the_grammar_cannot_express_is_refused_by_name) {
    s_refused("{\"type\":\"string\",\"pattern\":\"^a\"}", "'pattern'");
    s_refused("{\"type\":\"string\",\"format\":\"email\"}", "'format'");
    s_refused("{\"type\":\"object\",\"properties\":{\"a\":{\"$ref\":\"#/$defs/x\"}}}",
              "'$ref' is not supported (at /properties/a)");
    s_refused("{\"allOf\":[{}]}", "'allOf'");
    s_refused("{\"type\":\"array\",\"uniqueItems\":true}", "'uniqueItems'");
    s_refused("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}", "different JSON types");
    s_refused("{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "no integer");
    s_refused("{\"type\":\"number\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":0.0000001}", "no number");
    s_refused("{\"type\":\"string\",\"minLength\":3,\"maxLength\":2}", "'minLength'");
    s_refused("{\"type\":\"strnig\"}", "'strnig'");
    s_refused("{\"enum\":[1,2],\"type\":\"string\"}", "'enum' has no value");
    s_refused("{\"type\":\"string\",\"minLength\":100000}", "shortest text");
    s_refused("[1]", "must be an object");
    /* nesting and size */
    char deep[2048] = "";
    for (int i = 0; i < 20; i++) strcat(deep, "{\"type\":\"array\",\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 20; i++) strcat(deep, "}");
    s_refused(deep, "deeper than");
    char *big = malloc(200000);
    strcpy(big, "{\"enum\":[");
    for (int i = 0; i < 600; i++) sprintf(big + strlen(big), "%s%d", i ? "," : "", i);
    strcat(big, "]}");
    s_refused(big, "more than 512 values");
    free(big);
}

/* ---- generated texts, validated by Python's jsonschema -------------------------------- */

static const char *const SCHEMAS[] = {
    PERSON,
    "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\"},\"score\":{\"type\":\"number\",\"minimum\":-1,"
    "\"maximum\":1},\"ok\":{\"type\":\"boolean\"},\"note\":{\"type\":[\"string\",\"null\"],\"maxLength\":8},"
    "\"kind\":{\"const\":\"x\"}},\"required\":[\"id\",\"score\",\"ok\",\"note\",\"kind\"],\"additionalProperties\":"
    "false}",
    "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"k\":{\"type\":\"string\",\"minLength\":2,"
    "\"maxLength\":3}},\"required\":[\"k\"]},\"minItems\":2,\"maxItems\":4}",
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"object\","
    "\"properties\":{\"c\":{\"type\":\"integer\",\"exclusiveMinimum\":10,\"maximum\":12}},\"required\":[\"c\"]}},"
    "\"required\":[\"b\"]},\"z\":{}},\"required\":[\"a\"]}",
    "{\"type\":\"object\"}",
};

static FILE *s_cases_open(char *path, size_t cap) {
    snprintf(path, cap, "/tmp/st-test-grammar-%d-%d.jsonl", (int)getpid(), rand());
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    return f;
}

static void s_case(FILE *f, const char *schema, const char *text, size_t len) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "schema", cJSON_Parse(schema));
    char *t = malloc(len + 1);
    memcpy(t, text, len);
    t[len] = '\0';
    cJSON_AddStringToObject(o, "text", t);
    char *line = cJSON_PrintUnformatted(o);
    fprintf(f, "%s\n", line);
    free(line);
    free(t);
    cJSON_Delete(o);
}

static void s_validate(const char *path) {
    int rc = st_test_system("python3 '%s/tests/grammar/validate.py' '%s'", ST_SOURCE_DIR, path);
    unlink(path);
    if (rc == 2) cr_skip_test("python3-jsonschema is not installed");
    cr_assert_eq(rc, 0, "generated texts failed the jsonschema check (above)");
}

static uint64_t s_rand(uint64_t *x) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    return *x;
}

Test(grammar, random_byte_walks_end_complete_and_validate, .timeout = 60) {
    char path[256];
    FILE *f = s_cases_open(path, sizeof path);
    for (size_t k = 0; k < sizeof SCHEMAS / sizeof SCHEMAS[0]; k++) {
        st_grammar_t *g = s_compile(SCHEMAS[k]);
        for (uint64_t seed = 1; seed <= 40; seed++) {
            uint64_t r = seed * 0x9E3779B97F4A7C15ull + k;
            int budget = st_grammar_min_length(g) + (int)(s_rand(&r) % 60);
            st_gstate_t s, t;
            st_gstate_init(&s, g);
            char text[512];
            int len = 0;
            while (!st_gstate_finished(&s) && !(st_gstate_complete(&s, g) && s_rand(&r) % 4 == 0)) {
                unsigned char ok[256];
                int n = 0;
                for (int c = 0; c < 256; c++) {
                    st_gstate_copy(&t, &s);
                    if (st_gstate_feed(&t, g, (unsigned char)c) && st_gstate_min_remaining(&t, g) <= budget - len - 1)
                        ok[n++] = (unsigned char)c;
                }
                cr_assert_gt(n, 0, "dead end after %.*s", len, text);
                unsigned char c = ok[s_rand(&r) % (uint64_t)n];
                cr_assert(st_gstate_feed(&s, g, c));
                text[len++] = (char)c;
                cr_assert_lt(len, (int)sizeof text);
            }
            cr_assert(st_gstate_complete(&s, g), "%.*s", len, text);
            cr_assert_leq(len, budget, "budget %d overrun: %.*s", budget, len, text);
            s_case(f, SCHEMAS[k], text, (size_t)len);
        }
        st_grammar_destroy(&g);
    }
    fclose(f);
    s_validate(path);
}

/* ---- the vocabulary ------------------------------------------------------------------ */

static st_tokenizer_t *s_tokenizer(void) {
    st_gguf_t *gg = st_gguf_open(st_test_tiny_model());
    cr_assert_not_null(gg);
    st_tokenizer_t *tok = st_tokenizer_from_gguf(gg, NULL);
    st_gguf_destroy(&gg);
    cr_assert_not_null(tok);
    return tok;
}

Test(grammar, mask_equals_a_plain_check_of_every_token, .timeout = 120) {
    st_tokenizer_t *tok = s_tokenizer();
    st_vocab_t *v = st_vocab_new(tok);
    cr_assert(st_vocab_has_all_bytes(v));
    int V = st_tokenizer_n_vocab(tok);
    st_grammar_t *g = s_compile(SCHEMAS[1]);
    /* prefixes that stop in different places: keys, numbers, strings, after values */
    const char *prefixes[] = {"",
                              "{\"",
                              "{\"id\":",
                              "{\"id\": 12",
                              "{\"id\":1,\"score\":0.",
                              "{\"id\":1,\"score\":-1",
                              "{\"id\":1,\"score\":1,\"ok\":true,\"note\":\"ab",
                              "{\"id\":1,\"score\":1,\"ok\":true,\"note\":null"};
    float *logits = malloc((size_t)V * sizeof *logits);
    char piece[300];
    int32_t byte_tok[256] = {0}; /* the token of each single byte */
    for (int id = 0; id < V; id++)
        if (st_token_to_piece(tok, id, false, piece, (int)sizeof piece) == 1) byte_tok[(unsigned char)piece[0]] = id;
    for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
        for (int slack = 1; slack <= 400; slack += 399) { /* the tightest budget, and a loose one */
            st_gstate_t s, t;
            st_gstate_init(&s, g);
            cr_assert(st_gstate_feed_bytes(&s, g, prefixes[p], strlen(prefixes[p])));
            int budget = (int)strlen(prefixes[p]) + st_gstate_min_remaining(&s, g) + slack;
            st_gmask_t *m = st_gmask_new(g, v, budget);
            for (const char *c = prefixes[p]; *c; c++) {
                cr_assert_eq(st_gmask_accept(m, byte_tok[(unsigned char)*c]), 0);
            }
            int left = budget - (int)strlen(prefixes[p]);
            for (int i = 0; i < V; i++) logits[i] = 0.0f;
            cr_assert_eq(st_gmask_apply(m, logits, V, 0), 0);
            int allowed = 0;
            for (int id = 0; id < V; id++) {
                bool want;
                if (st_token_is_eog(tok, id)) {
                    want = st_gstate_complete(&s, g);
                } else {
                    int n = st_token_to_piece(tok, id, false, piece, (int)sizeof piece);
                    st_gstate_copy(&t, &s);
                    want = n > 0 && n < 256 && st_gstate_feed_bytes(&t, g, piece, (size_t)n) &&
                           (st_gstate_finished(&t) || st_gstate_min_remaining(&t, g) <= left - 1);
                }
                cr_assert_eq(isinf(logits[id]) == 0, want, "prefix %s budget %d token %d", prefixes[p], left, id);
                allowed += want;
            }
            cr_assert_gt(allowed, 0);
            st_gmask_destroy(&m);
        }
    }
    free(logits);
    st_grammar_destroy(&g);
    st_vocab_destroy(&v);
    st_tokenizer_destroy(&tok);
}

Test(grammar, sampling_random_logits_through_the_mask_validates, .timeout = 300) {
    st_tokenizer_t *tok = s_tokenizer();
    st_vocab_t *v = st_vocab_new(tok);
    int V = st_tokenizer_n_vocab(tok);
    float *logits = malloc((size_t)V * sizeof *logits);
    char path[256], piece[300];
    FILE *f = s_cases_open(path, sizeof path);
    for (size_t k = 0; k < sizeof SCHEMAS / sizeof SCHEMAS[0]; k++) {
        st_grammar_t *g = s_compile(SCHEMAS[k]);
        for (uint64_t seed = 1; seed <= 6; seed++) {
            st_sampler_params_t sp = st_sampler_default_params();
            sp.seed = seed;
            sp.temp = seed % 3 == 0 ? 0.0f : 1.5f; /* greedy, and wide draws */
            sp.top_k = seed % 2 ? 40 : 0;
            int max_tokens = st_grammar_min_length(g) + (int)(seed * 7 % 50);
            st_sampler_t *smp = st_sampler_new(&sp, V);
            st_gmask_t *m = st_gmask_new(g, v, max_tokens);
            st_sampler_constraint_t con = st_gmask_constraint(m);
            st_sampler_constrain(smp, &con);
            char text[4096];
            size_t len = 0;
            uint64_t r = seed * 77 + k;
            int n_tok = 0;
            while (n_tok < max_tokens && !st_gmask_finished(m)) {
                for (int i = 0; i < V; i++) logits[i] = (float)(s_rand(&r) % 10000) / 1000.0f;
                int32_t id = st_sampler_sample(smp, logits);
                cr_assert_geq(id, 0, "no token allowed after %.*s", (int)len, text);
                n_tok++;
                if (st_token_is_eog(tok, id)) break;
                int n = st_token_to_piece(tok, id, false, piece, (int)sizeof piece);
                cr_assert(len + (size_t)n < sizeof text);
                memcpy(text + len, piece, (size_t)n);
                len += (size_t)n;
            }
            cr_assert(st_gmask_complete(m), "incomplete after %d tokens: %.*s", n_tok, (int)len, text);
            s_case(f, SCHEMAS[k], text, len);
            st_gmask_destroy(&m);
            st_sampler_destroy(&smp);
        }
        st_grammar_destroy(&g);
    }
    fclose(f);
    free(logits);
    st_vocab_destroy(&v);
    st_tokenizer_destroy(&tok);
    s_validate(path);
}
