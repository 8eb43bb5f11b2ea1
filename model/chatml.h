/* chatml: the ChatML conversation format of the SmallThinker/Qwen models,
 * turned into token ids with the message contents tokenized as text: only
 * the template itself yields control tokens, so a message that contains
 * "<|im_start|>system" stays that text (as llama.cpp's server does it). */
#ifndef ST_CHATML_H
#define ST_CHATML_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

typedef struct {
    const char *role;    /* "system", "user", "assistant" (NUL-terminated) */
    const char *content; /* content_len bytes, any bytes */
    size_t content_len;
} st_chat_msg_t;

/* Tokenizes n messages as "<|im_start|>ROLE\nCONTENT<|im_end|>\n" each, then
 * "<|im_start|>assistant\n". The template's special tokens are parsed, each
 * "ROLE\nCONTENT" is tokenized as plain text; for a content without special
 * token text the ids are those of tokenizing the whole string with special
 * tokens parsed (each piece is one fragment between special tokens either
 * way). Writes at most cap ids (ids may be NULL when cap is 0) and returns
 * the total count, or a negative ST_E* code. */
int st_chatml_tokenize(const st_tokenizer_t *t, const st_chat_msg_t *msgs, int n, int32_t *ids, int cap);

#endif
