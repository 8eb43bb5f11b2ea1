/* grammar: what a constrained answer may say, and a matcher that walks its
 * bytes.
 *
 * A grammar is a graph of nodes compiled from a JSON schema (schema.h) or
 * built for a tool call: objects with ordered properties, arrays, strings,
 * numbers with bounds, literals (enum, const, true/false/null), unions told
 * apart by their first byte, sequences and literal-led alternatives. It is
 * deterministic: every prefix has one parse, so the matcher's state is one
 * stack of frames (no backtracking), small enough to copy for each token a
 * sampler tries (vocab_mask.h).
 *
 * The matcher accepts a byte only if the text stays a prefix of some complete
 * answer (it never reaches a dead end), and tells how many bytes the shortest
 * completion still needs: the sampler uses it to close the answer before its
 * token budget runs out. The text it accepts is compact JSON with at most one
 * space after ':' and ',', strings without \u escapes, numbers without
 * exponents (integers up to 15 digits, other numbers up to 12 integer and 6
 * fraction digits): a subset of what the schema allows, never more.
 */
#ifndef ST_GRAMMAR_H
#define ST_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_GRAMMAR_MAX_DEPTH 32 /* frames of the matcher's stack (nesting) */

typedef struct st_grammar st_grammar_t;

/* One frame: a node being matched and where in it (grammar.c reads it). */
typedef struct {
    int32_t node;
    uint8_t phase;
    uint8_t n;       /* number: bytes of text; string: continuation bytes pending */
    uint8_t lo, hi;  /* string: range of the next continuation byte */
    int32_t a, b, c; /* per kind: counts, literal ranges, property indices */
    uint64_t cand;   /* candidate keys or alternatives (bit per index) */
    char text[24];   /* number: its text so far */
} st_gframe_t;

/* The matcher's state: copy it (st_gstate_copy) to try bytes and drop them. */
typedef struct {
    int depth;  /* frames in use; 0 when the answer is finished */
    bool ended; /* the root has been matched completely and popped */
    st_gframe_t f[ST_GRAMMAR_MAX_DEPTH];
} st_gstate_t;

void st_grammar_destroy(st_grammar_t **g);

/* The state before the first byte. */
void st_gstate_init(st_gstate_t *s, const st_grammar_t *g);
/* Copies the frames in use only (cheaper than an assignment). */
void st_gstate_copy(st_gstate_t *dst, const st_gstate_t *src);
/* Feeds one byte: true when the text stays a valid prefix (s advanced),
 * false when the byte would break it (s is then unspecified: feed a copy). */
bool st_gstate_feed(st_gstate_t *s, const st_grammar_t *g, unsigned char c);
/* Feeds len bytes; false at the first one refused. */
bool st_gstate_feed_bytes(st_gstate_t *s, const st_grammar_t *g, const char *p, size_t len);
/* The text so far is a complete answer (it may still go on, as a number may). */
bool st_gstate_complete(const st_gstate_t *s, const st_grammar_t *g);
/* Complete, and no byte can follow. */
bool st_gstate_finished(const st_gstate_t *s);
/* Bytes the shortest completion needs (0 when complete). */
int st_gstate_min_remaining(const st_gstate_t *s, const st_grammar_t *g);
/* Bytes of the shortest complete answer. */
int st_grammar_min_length(const st_grammar_t *g);

#endif
