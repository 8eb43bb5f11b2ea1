/* schema: a JSON schema (cJSON) compiled into a grammar's nodes (schema.h).
 *
 * One recursive pass: each schema becomes one node (an object's properties,
 * an enum's texts and a sequence's parts are appended contiguously once the
 * children are built). Every node records the length of its shortest text,
 * which the matcher sums to know how many bytes an answer still needs.
 * Numbers are bounded as integers scaled by 10^frac; a bound is rounded
 * inwards and then checked against strtod of the decimal text, which is what
 * a validator compares.
 */
#include "schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"

typedef struct {
    st_grammar_t *g;
    char *err;
    size_t cap;
    bool failed;
    char path[256];
} ctx_t;

static int32_t s_fail(ctx_t *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int32_t s_fail(ctx_t *x, const char *fmt, ...) {
    if (x->failed) return -1;
    x->failed = true;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (x->cap) snprintf(x->err, x->cap, "%s (at %s)", msg, x->path[0] ? x->path : "/");
    return -1;
}

static int32_t s_nomem(ctx_t *x) { return s_fail(x, "no memory for the grammar"); }

/* Appends "/seg" to the path; returns the old length to restore. */
static size_t s_path_push(ctx_t *x, const char *a, const char *b) {
    size_t n = strlen(x->path);
    snprintf(x->path + n, sizeof x->path - n, "/%s%s%.40s", a, b ? "/" : "", b ? b : "");
    return n;
}

static const char *const ANNOTATIONS[] = {"title",
                                          "description",
                                          "default",
                                          "examples",
                                          "$schema",
                                          "$id",
                                          "$comment",
                                          "$defs",
                                          "definitions",
                                          "deprecated",
                                          "readOnly",
                                          "writeOnly",
                                          "additionalProperties",
                                          NULL};
static const char *const KEYWORDS[] = {
    "type",      "properties", "required", "items",   "minItems",         "maxItems",
    "minLength", "maxLength",  "minimum",  "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "enum",      "const",      "anyOf",    "oneOf",   "uniqueItems",      NULL};

static bool s_in(const char *const *list, const char *s) {
    for (; *list; list++)
        if (!strcmp(*list, s)) return true;
    return false;
}

/* A non-negative integer keyword: absent -> dflt; -1 after a failure. */
static int64_t s_count(ctx_t *x, const cJSON *sch, const char *name, int64_t dflt, int64_t max) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(sch, name);
    if (!v) return dflt;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble))
        return s_fail(x, "'%s' must be a non-negative integer", name);
    if (v->valuedouble > (double)max) return s_fail(x, "'%s' is over %lld", name, (long long)max);
    return (int64_t)v->valuedouble;
}

static int32_t s_check_minlen(ctx_t *x, int32_t node, int64_t len) {
    if (len > ST_SCHEMA_MAX_MIN_LENGTH)
        return s_fail(x, "the shortest text this schema allows has %lld bytes (limit %d)", (long long)len,
                      ST_SCHEMA_MAX_MIN_LENGTH);
    x->g->nodes[node].minlen = (int32_t)len;
    return node;
}

static int32_t s_compile(ctx_t *x, const cJSON *sch, int depth);

/* ---- numbers ---------------------------------------------------------------------- */

/* The decimal text of m / 10^frac, as the matcher would accept it. */
static double s_scaled_value(int64_t m, int frac) {
    char t[40];
    uint64_t a = m < 0 ? (uint64_t)-m : (uint64_t)m, p = 1;
    for (int i = 0; i < frac; i++) p *= 10;
    int n = snprintf(t, sizeof t, "%s%llu", m < 0 ? "-" : "", (unsigned long long)(a / p));
    if (frac) snprintf(t + n, sizeof t - (size_t)n, ".%0*llu", frac, (unsigned long long)(a % p));
    return strtod(t, NULL);
}

/* The smallest m (lower) or largest (upper) whose value satisfies the bound,
 * clamped to [-cap, cap] (then possibly outside the bound: the caller checks). */
static int64_t s_bound(double b, bool upper, bool exclusive, int frac, int64_t cap) {
    long double s = (long double)b;
    for (int i = 0; i < frac; i++) s *= 10;
    if (s > (long double)cap) return upper ? cap : cap + 1;
    if (s < -(long double)cap) return upper ? -cap - 1 : -cap;
    int64_t m = (int64_t)(upper ? floorl(s) : ceill(s));
#define OK(v)                                                                                                          \
    (upper ? (exclusive ? s_scaled_value(v, frac) < b : s_scaled_value(v, frac) <= b)                                  \
           : (exclusive ? s_scaled_value(v, frac) > b : s_scaled_value(v, frac) >= b))
    for (int i = 0; i < 4 && !OK(m); i++) m += upper ? -1 : 1;
    for (int i = 0; i < 4 && OK(upper ? m + 1 : m - 1); i++) m += upper ? 1 : -1;
#undef OK
    return m;
}

static int32_t s_number(ctx_t *x, const cJSON *sch, bool integer) {
    int32_t n = g_add_node(x->g, G_NUMBER);
    if (n < 0) return s_nomem(x);
    int frac = integer ? 0 : 6, idig = integer ? 15 : 12;
    int64_t cap = 1;
    for (int i = 0; i < frac + idig; i++) cap *= 10;
    cap -= 1;
    int64_t lo = -cap, hi = cap;
    static const char *const names[] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
    const cJSON *emin = cJSON_GetObjectItemCaseSensitive(sch, "exclusiveMinimum");
    const cJSON *emax = cJSON_GetObjectItemCaseSensitive(sch, "exclusiveMaximum");
    for (int i = 0; i < 4; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(sch, names[i]);
        if (!v || (cJSON_IsBool(v) && i % 2)) continue; /* draft 4: a flag on minimum/maximum */
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return s_fail(x, "'%s' must be a number", names[i]);
        bool upper = i >= 2, excl = i % 2 || cJSON_IsTrue(upper ? emax : emin);
        int64_t m = s_bound(v->valuedouble, upper, excl, frac, cap);
        if (upper && m < hi) hi = m;
        if (!upper && m > lo) lo = m;
    }
    g_node_t *nd = &x->g->nodes[n];
    nd->frac = (int8_t)frac, nd->idig = (int8_t)idig, nd->lo = lo, nd->hi = hi;
    int len = lo <= hi ? g_number_minlen(nd) : -1;
    if (len < 0)
        return s_fail(x, "no %s with at most %d%s digits lies within the bounds", integer ? "integer" : "number", idig,
                      integer ? "" : " integer and 6 fraction");
    return s_check_minlen(x, n, len);
}

/* ---- literals ---------------------------------------------------------------------- */

static bool s_type_matches(const cJSON *v, const char *type) {
    if (!type) return true;
    if (!strcmp(type, "string")) return cJSON_IsString(v);
    if (!strcmp(type, "number")) return cJSON_IsNumber(v);
    if (!strcmp(type, "integer")) return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    if (!strcmp(type, "boolean")) return cJSON_IsBool(v);
    if (!strcmp(type, "null")) return cJSON_IsNull(v);
    if (!strcmp(type, "object")) return cJSON_IsObject(v);
    if (!strcmp(type, "array")) return cJSON_IsArray(v);
    return false;
}

/* enum / const: the values (of the schema's type, when it names one) as compact JSON texts. */
static int32_t s_literal(ctx_t *x, const cJSON *values, bool single, const char *type) {
    int32_t n = g_add_node(x->g, G_LITERAL);
    if (n < 0) return s_nomem(x);
    x->g->nodes[n].first = x->g->n_lits;
    int count = 0;
    for (const cJSON *v = single ? values : values->child; v; v = single ? NULL : v->next) {
        if (!s_type_matches(v, type)) continue;
        if (++count > ST_SCHEMA_MAX_ENUM) return s_fail(x, "'enum' has more than %d values", ST_SCHEMA_MAX_ENUM);
        char *t = cJSON_PrintUnformatted(v);
        if (!t) return s_nomem(x);
        int32_t l = g_add_lit(x->g, t, strlen(t));
        free(t);
        if (l < 0) return s_nomem(x);
    }
    x->g->nodes[n].count = count;
    if (!count) return s_fail(x, "'%s' has no value of type %s", single ? "const" : "enum", type ? type : "any");
    g_sort_lits(x->g, n);
    return n;
}

static int32_t s_words(ctx_t *x, const char *a, const char *b) {
    int32_t n = g_add_node(x->g, G_LITERAL);
    if (n < 0) return s_nomem(x);
    x->g->nodes[n].first = x->g->n_lits;
    if (g_add_lit(x->g, a, strlen(a)) < 0 || (b && g_add_lit(x->g, b, strlen(b)) < 0)) return s_nomem(x);
    x->g->nodes[n].count = b ? 2 : 1;
    g_sort_lits(x->g, n);
    return n;
}

/* ---- containers ------------------------------------------------------------------- */

typedef struct {
    char *key; /* JSON text of the name */
    int32_t node;
    bool required;
} prop_t;

static int32_t s_object(ctx_t *x, const cJSON *sch, int depth) {
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(sch, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(sch, "required");
    if (props && !cJSON_IsObject(props)) return s_fail(x, "'properties' must be an object");
    if (req && !cJSON_IsArray(req)) return s_fail(x, "'required' must be an array of strings");
    prop_t p[ST_SCHEMA_MAX_PROPERTIES];
    int np = 0;
    int32_t out = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, req) {
        if (!cJSON_IsString(e)) return s_fail(x, "'required' must be an array of strings");
    }
    /* the schema's properties in order, then required names it does not list (any value) */
    for (int pass = 0; pass < 2; pass++) {
        const cJSON *list = pass == 0 ? props : req;
        cJSON_ArrayForEach(e, list) {
            const char *name = pass == 0 ? e->string : e->valuestring;
            if (!name) continue;
            bool dup = false, required = false;
            for (int i = 0; i < np; i++) {
                char *t = cJSON_PrintUnformatted(&(cJSON){.type = cJSON_String, .valuestring = (char *)name});
                dup |= t && !strcmp(t, p[i].key);
                free(t);
            }
            if (dup && pass == 0) {
                s_fail(x, "property '%.40s' is listed twice", name);
                goto out;
            }
            if (dup) continue;
            if (np == ST_SCHEMA_MAX_PROPERTIES) {
                s_fail(x, "more than %d properties", ST_SCHEMA_MAX_PROPERTIES);
                goto out;
            }
            const cJSON *r;
            cJSON_ArrayForEach(r, req) required |= !strcmp(r->valuestring, name);
            size_t back = s_path_push(x, "properties", name);
            int32_t child = pass == 0 ? s_compile(x, e, depth + 1) : g_any(x->g);
            x->path[back] = '\0';
            if (child < 0) {
                if (!x->failed) s_nomem(x);
                goto out;
            }
            p[np].key = cJSON_PrintUnformatted(&(cJSON){.type = cJSON_String, .valuestring = (char *)name});
            if (!p[np].key) {
                s_nomem(x);
                goto out;
            }
            p[np].node = child;
            p[np++].required = required;
        }
    }
    int32_t n = g_add_node(x->g, G_OBJECT);
    if (n < 0) {
        s_nomem(x);
        goto out;
    }
    int32_t first = x->g->n_keys;
    for (int i = 0; i < np; i++)
        if (g_add_key(x->g, p[i].key, strlen(p[i].key), p[i].node, p[i].required) < 0) {
            s_nomem(x);
            goto out;
        }
    int64_t suf = 0, nreq = 0;
    for (int i = np - 1; i >= 0; i--) {
        g_key_t *k = &x->g->keys[first + i];
        if (k->required) suf += k->len + 1 + x->g->nodes[k->node].minlen, nreq++;
        k->suf_len = (int32_t)(suf > INT32_MAX / 2 ? INT32_MAX / 2 : suf);
        k->suf_n = (int32_t)nreq;
    }
    x->g->nodes[n].first = first;
    x->g->nodes[n].count = np;
    out = s_check_minlen(x, n, 2 + suf + (nreq > 0 ? nreq - 1 : 0));
out:
    for (int i = 0; i < np; i++) free(p[i].key);
    return x->failed ? -1 : out;
}

static int32_t s_array(ctx_t *x, const cJSON *sch, int depth) {
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(sch, "items");
    const cJSON *uniq = cJSON_GetObjectItemCaseSensitive(sch, "uniqueItems");
    int64_t min = s_count(x, sch, "minItems", 0, 1 << 20), max = s_count(x, sch, "maxItems", -1, 1 << 30);
    if (x->failed) return -1;
    if (max >= 0 && min > max) return s_fail(x, "'minItems' is over 'maxItems'");
    if (cJSON_IsTrue(uniq) && (max < 0 || max > 1)) return s_fail(x, "'uniqueItems' is not supported");
    size_t back = s_path_push(x, "items", NULL);
    int32_t item = items ? s_compile(x, items, depth + 1) : g_any(x->g);
    x->path[back] = '\0';
    if (item < 0) return x->failed ? -1 : s_nomem(x);
    int32_t n = g_add_node(x->g, G_ARRAY);
    if (n < 0) return s_nomem(x);
    g_node_t *nd = &x->g->nodes[n];
    nd->item = item, nd->min = (int32_t)min, nd->max = (int32_t)max;
    return s_check_minlen(x, n, 2 + min * x->g->nodes[item].minlen + (min > 0 ? min - 1 : 0));
}

static int32_t s_string(ctx_t *x, const cJSON *sch) {
    int64_t min = s_count(x, sch, "minLength", 0, 1 << 30), max = s_count(x, sch, "maxLength", -1, 1 << 30);
    if (x->failed) return -1;
    if (max >= 0 && min > max) return s_fail(x, "'minLength' is over 'maxLength'");
    int32_t n = g_add_node(x->g, G_STRING);
    if (n < 0) return s_nomem(x);
    x->g->nodes[n].min = (int32_t)min, x->g->nodes[n].max = (int32_t)max;
    return s_check_minlen(x, n, 2 + min);
}

/* A union of nodes told apart by their first byte. */
static int32_t s_union(ctx_t *x, const int32_t *alts, int n, const char *what) {
    int32_t u = g_add_node(x->g, G_UNION);
    if (u < 0) return s_nomem(x);
    unsigned seen = 0;
    int minlen = -1;
    for (int i = 0; i < n; i++) {
        unsigned m = g_first_classes(x->g, alts[i]);
        if ((m & 0x80u) || (m & seen))
            return s_fail(x,
                          "'%s' alternatives must start with different JSON types (an object, an array, a "
                          "string, a number, true, false, null)",
                          what);
        seen |= m;
        for (int c = 0; c < G_C_COUNT; c++)
            if (m & (1u << c)) x->g->nodes[u].alt[c] = alts[i];
        if (minlen < 0 || x->g->nodes[alts[i]].minlen < minlen) minlen = x->g->nodes[alts[i]].minlen;
    }
    x->g->nodes[u].minlen = minlen;
    return u;
}

/* ---- one schema ------------------------------------------------------------------ */

static int32_t s_typed(ctx_t *x, const cJSON *sch, const char *type, int depth) {
    if (!strcmp(type, "object")) return s_object(x, sch, depth);
    if (!strcmp(type, "array")) return s_array(x, sch, depth);
    if (!strcmp(type, "string")) return s_string(x, sch);
    if (!strcmp(type, "integer")) return s_number(x, sch, true);
    if (!strcmp(type, "number")) return s_number(x, sch, false);
    if (!strcmp(type, "boolean")) return s_words(x, "true", "false");
    if (!strcmp(type, "null")) return s_words(x, "null", NULL);
    return s_fail(x, "'type' '%.20s' is not a JSON schema type", type);
}

static int32_t s_compile(ctx_t *x, const cJSON *sch, int depth) {
    if (x->failed) return -1;
    if (x->g->n_nodes > ST_SCHEMA_MAX_NODES || x->g->text_bytes > ST_SCHEMA_MAX_TEXT)
        return s_fail(x, "the schema is too large (over %d nodes or %d bytes of names and values)", ST_SCHEMA_MAX_NODES,
                      ST_SCHEMA_MAX_TEXT);
    if (depth > ST_SCHEMA_MAX_DEPTH) return s_fail(x, "the schema nests deeper than %d levels", ST_SCHEMA_MAX_DEPTH);
    if (cJSON_IsTrue(sch)) return g_any(x->g) >= 0 ? x->g->any : s_nomem(x);
    if (!cJSON_IsObject(sch)) return s_fail(x, "a schema must be an object (or true)");
    const cJSON *k;
    cJSON_ArrayForEach(k, sch) {
        if (!s_in(KEYWORDS, k->string) && !s_in(ANNOTATIONS, k->string))
            return s_fail(x, "'%.40s' is not supported", k->string);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(sch, "type");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(sch, "enum");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(sch, "const");
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(sch, "anyOf");
    const char *anyname = "anyOf";
    if (!any) any = cJSON_GetObjectItemCaseSensitive(sch, "oneOf"), anyname = "oneOf";
    if (type && !cJSON_IsString(type) && !cJSON_IsArray(type))
        return s_fail(x, "'type' must be a string or an array of strings");
    if (cn || en) {
        if (en && !cJSON_IsArray(en)) return s_fail(x, "'enum' must be an array");
        if (cJSON_IsArray(type)) return s_fail(x, "'enum' or 'const' with a list of types is not supported");
        return s_literal(x, cn ? cn : en, cn != NULL, cJSON_IsString(type) ? type->valuestring : NULL);
    }
    if (any) {
        if (!cJSON_IsArray(any) || cJSON_GetArraySize(any) < 1)
            return s_fail(x, "'%s' must be a non-empty array of schemas", anyname);
        if (type) return s_fail(x, "'%s' beside 'type' is not supported", anyname);
        int32_t alts[G_C_COUNT];
        int n = 0, i = 0;
        const cJSON *a;
        cJSON_ArrayForEach(a, any) {
            char idx[16];
            snprintf(idx, sizeof idx, "%d", i++);
            if (n == G_C_COUNT) return s_fail(x, "'%s' has more alternatives than JSON types", anyname);
            size_t back = s_path_push(x, anyname, idx);
            alts[n] = s_compile(x, a, depth + 1);
            x->path[back] = '\0';
            if (alts[n++] < 0) return -1;
        }
        return n == 1 ? alts[0] : s_union(x, alts, n, anyname);
    }
    if (cJSON_IsString(type)) return s_typed(x, sch, type->valuestring, depth);
    if (cJSON_IsArray(type)) {
        int32_t alts[G_C_COUNT];
        int n = 0;
        bool has_number = false;
        const cJSON *t;
        cJSON_ArrayForEach(t, type) {
            if (!cJSON_IsString(t)) return s_fail(x, "'type' must be a string or an array of strings");
            has_number |= !strcmp(t->valuestring, "number");
        }
        cJSON_ArrayForEach(t, type) {
            if (has_number && !strcmp(t->valuestring, "integer")) continue; /* numbers include integers */
            if (n == G_C_COUNT) return s_fail(x, "'type' lists a type twice");
            if ((alts[n++] = s_typed(x, sch, t->valuestring, depth)) < 0) return -1;
        }
        if (n == 0) return s_fail(x, "'type' is an empty list");
        return n == 1 ? alts[0] : s_union(x, alts, n, "type");
    }
    /* no type: the one the keywords are about, else any value */
    static const char *const by_type[][4] = {{"object", "properties", "required", NULL},
                                             {"array", "items", "minItems", "maxItems"},
                                             {"string", "minLength", "maxLength", NULL},
                                             {"number", "minimum", "maximum", "exclusiveMinimum"},
                                             {"number", "exclusiveMaximum", NULL, NULL}};
    for (size_t i = 0; i < sizeof by_type / sizeof by_type[0]; i++)
        for (int j = 1; j < 4 && by_type[i][j]; j++)
            if (cJSON_GetObjectItemCaseSensitive(sch, by_type[i][j])) return s_typed(x, sch, by_type[i][0], depth);
    return g_any(x->g) >= 0 ? x->g->any : s_nomem(x);
}

static st_grammar_t *s_finish(ctx_t *x, int32_t root) {
    if (root < 0 || x->failed) {
        if (!x->failed) s_nomem(x);
        st_grammar_destroy(&x->g);
        return NULL;
    }
    x->g->root = root;
    return x->g;
}

st_grammar_t *st_schema_compile(const cJSON *schema, char *err, size_t cap) {
    ctx_t x = {.g = g_new(), .err = err, .cap = cap};
    if (cap) err[0] = '\0';
    if (!x.g) {
        if (cap) snprintf(err, cap, "no memory for the grammar");
        return NULL;
    }
    return s_finish(&x, s_compile(&x, schema, 0));
}

st_grammar_t *st_schema_any_object(void) {
    st_grammar_t *g = g_new();
    if (!g) return NULL;
    if (g_any(g) < 0) {
        st_grammar_destroy(&g);
        return NULL;
    }
    g->root = g->nodes[g->any].alt[G_C_OBJECT];
    return g;
}

static int32_t s_seq(ctx_t *x, const int32_t *parts, int n) {
    int32_t s = g_add_node(x->g, G_SEQ);
    if (s < 0) return s_nomem(x);
    int32_t first = x->g->n_kids;
    int64_t len = 0;
    for (int i = 0; i < n; i++) {
        if (g_add_kid(x->g, parts[i]) < 0) return s_nomem(x);
        len += x->g->nodes[parts[i]].minlen;
    }
    x->g->nodes[s].first = first;
    x->g->nodes[s].count = n;
    return s_check_minlen(x, s, len);
}

st_grammar_t *st_schema_tool_call(int n, const char *const *names, const cJSON *const *params, char *err, size_t cap) {
    ctx_t x = {.g = g_new(), .err = err, .cap = cap};
    if (cap) err[0] = '\0';
    if (!x.g || n < 1 || n > 64) {
        if (cap) snprintf(err, cap, n < 1 || n > 64 ? "1 to 64 functions" : "no memory for the grammar");
        st_grammar_destroy(&x.g);
        return NULL;
    }
    int32_t *bodies = calloc((size_t)n, sizeof *bodies);
    char **heads = calloc((size_t)n, sizeof *heads);
    int32_t root = -1;
    if (!bodies || !heads) {
        s_nomem(&x);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        char *name = cJSON_PrintUnformatted(&(cJSON){.type = cJSON_String, .valuestring = (char *)names[i]});
        size_t need = (name ? strlen(name) : 0) + 40;
        heads[i] = name ? malloc(need) : NULL;
        if (!heads[i]) {
            free(name);
            s_nomem(&x);
            goto out;
        }
        snprintf(heads[i], need, "{\"name\": %s, \"arguments\": ", name);
        free(name);
        for (int j = 0; j < i; j++)
            if (!strcmp(heads[i], heads[j])) {
                s_fail(&x, "two functions are named '%.40s'", names[i]);
                goto out;
            }
        size_t back = s_path_push(&x, names[i], NULL);
        int32_t args = params[i] ? s_compile(&x, params[i], 1) : -1;
        if (!params[i]) {
            st_grammar_t *g = x.g; /* any object */
            args = g_any(g) < 0 ? s_nomem(&x) : g->nodes[g->any].alt[G_C_OBJECT];
        }
        x.path[back] = '\0';
        int32_t close = args < 0 ? -1 : s_words(&x, "}", NULL);
        int32_t parts[2] = {args, close};
        if (close < 0 || (bodies[i] = s_seq(&x, parts, 2)) < 0) goto out;
    }
    int32_t alt = g_add_node(x.g, G_ALT);
    if (alt < 0) {
        s_nomem(&x);
        goto out;
    }
    int32_t first = x.g->n_keys, minlen = -1;
    for (int i = 0; i < n; i++) {
        if (g_add_key(x.g, heads[i], strlen(heads[i]), bodies[i], false) < 0) {
            s_nomem(&x);
            goto out;
        }
        int32_t v = (int32_t)strlen(heads[i]) + x.g->nodes[bodies[i]].minlen;
        if (minlen < 0 || v < minlen) minlen = v;
    }
    x.g->nodes[alt].first = first;
    x.g->nodes[alt].count = n;
    x.g->nodes[alt].minlen = minlen;
    int32_t open = s_words(&x, "<tool_call>\n", NULL), end = s_words(&x, "\n</tool_call>", NULL);
    if (open >= 0 && end >= 0) root = s_seq(&x, (int32_t[]){open, alt, end}, 3);
out:
    for (int i = 0; heads && i < n; i++) free(heads[i]);
    free(heads);
    free(bodies);
    return s_finish(&x, root);
}
