/* grammar_internal: the node graph shared by the matcher (grammar.c) and the
 * compilers that build it (schema.c). */
#ifndef ST_GRAMMAR_INTERNAL_H
#define ST_GRAMMAR_INTERNAL_H

#include "grammar.h"

typedef enum {
    G_OBJECT,     /* properties in order: a[first..first+count) of keys */
    G_OBJECT_ANY, /* any keys (free strings), any values */
    G_ARRAY,      /* items of one node, between min and max of them */
    G_STRING,     /* chars between min and max (code points) */
    G_NUMBER,     /* scaled integer in [lo, hi], frac fraction digits */
    G_LITERAL,    /* one of the sorted texts lits[first..first+count) */
    G_UNION,      /* alternatives chosen by the first byte's class */
    G_SEQ,        /* kids[first..first+count) one after the other */
    G_ALT,        /* one of keys[first..first+count): literal text, then its node */
} g_kind_t;

/* first-byte classes of a JSON value */
enum { G_C_OBJECT, G_C_ARRAY, G_C_STRING, G_C_NUMBER, G_C_TRUE, G_C_FALSE, G_C_NULL, G_C_COUNT };

typedef struct {
    g_kind_t kind;
    int32_t minlen; /* bytes of its shortest text */
    int32_t first, count;
    int32_t item;           /* array: item node */
    int32_t min, max;       /* array: items; string: chars; max < 0: unbounded */
    int64_t lo, hi;         /* number: bounds, scaled by 10^frac */
    int8_t frac, idig;      /* number: fraction digits (0: integer), integer digits */
    int32_t alt[G_C_COUNT]; /* union: node per class, -1 where none */
} g_node_t;

/* An object's property or an alternative's leading literal. */
typedef struct {
    char *text; /* the key as JSON ("\"name\""), or the literal */
    int32_t len;
    int32_t node;
    bool required;
    int32_t suf_len, suf_n; /* object: bytes and count of the required properties from here on */
} g_key_t;

typedef struct {
    char *text;
    int32_t len;
} g_lit_t;

struct st_grammar {
    g_node_t *nodes;
    int n_nodes, cap_nodes;
    g_key_t *keys;
    int n_keys, cap_keys;
    g_lit_t *lits;
    int n_lits, cap_lits;
    int32_t *kids;
    int n_kids, cap_kids;
    int32_t root;
    int32_t any;       /* the node of any JSON value, -1 until made */
    size_t text_bytes; /* keys and literals, for the size limit */
};

st_grammar_t *g_new(void);
/* Appends a node (zeroed but for kind), returns its index or -1 (no memory). */
int32_t g_add_node(st_grammar_t *g, g_kind_t kind);
/* Appends a key/literal (copies text), returns its index or -1. */
int32_t g_add_key(st_grammar_t *g, const char *text, size_t len, int32_t node, bool required);
int32_t g_add_lit(st_grammar_t *g, const char *text, size_t len);
int32_t g_add_kid(st_grammar_t *g, int32_t node);
/* Sorts a literal node's texts (bytewise) and drops duplicates; sets minlen. */
void g_sort_lits(st_grammar_t *g, int32_t node);
/* The classes (bitmask of G_C_*) a node's first byte can have. */
unsigned g_first_classes(const st_grammar_t *g, int32_t node);
/* The class of a value's first byte, or -1. */
int g_class_of(unsigned char c);
/* The node of any JSON value (made once per grammar); -1 on no memory. */
int32_t g_any(st_grammar_t *g);
/* Shortest text of a number node (minlen); -1 when no number fits. */
int g_number_minlen(const g_node_t *nd);

#endif
