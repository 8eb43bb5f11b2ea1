/* schema: JSON schemas compiled into grammars (grammar.h).
 *
 * Understood: type (one or a list), properties, required, items, minItems,
 * maxItems, minLength, maxLength, minimum, maximum, exclusiveMinimum,
 * exclusiveMaximum, enum, const, anyOf/oneOf whose alternatives start with
 * different JSON types, and the annotations (title, description, default,
 * examples, $schema, $id, $comment, $defs, additionalProperties, ...). Any
 * other keyword is refused by name, since ignoring it could let through an
 * answer the schema rejects. Properties come out in the schema's order;
 * optional ones may be left out and no others are added.
 */
#ifndef ST_SCHEMA_H
#define ST_SCHEMA_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "grammar.h"

#define ST_SCHEMA_MAX_DEPTH 12         /* nesting of schemas in a schema */
#define ST_SCHEMA_MAX_NODES 4096       /* grammar nodes of one schema */
#define ST_SCHEMA_MAX_TEXT 65536       /* bytes of property names and enum values */
#define ST_SCHEMA_MAX_PROPERTIES 64    /* per object */
#define ST_SCHEMA_MAX_ENUM 512         /* values of one enum */
#define ST_SCHEMA_MAX_MIN_LENGTH 65536 /* bytes of the shortest answer the schema allows */

/* The grammar of the JSON texts that schema accepts. NULL with the reason in
 * err (cap bytes, NUL-terminated), which names the keyword and where it is
 * ("'pattern' is not supported (at /properties/name)"). The caller owns the
 * grammar (st_grammar_destroy). */
st_grammar_t *st_schema_compile(const cJSON *schema, char *err, size_t cap);
/* Any JSON object (response_format "json_object"). */
st_grammar_t *st_schema_any_object(void);
/* One tool call in Qwen3's format:
 *   <tool_call>\n{"name": NAME, "arguments": ARGS}\n</tool_call>
 * where NAME is one of names[0..n) and ARGS follows that function's parameter
 * schema (params[i]; NULL: any object). NULL with the reason in err. */
st_grammar_t *st_schema_tool_call(int n, const char *const *names, const cJSON *const *params, char *err, size_t cap);

#endif
