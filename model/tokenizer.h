/* tokenizer: byte-level BPE (GGUF tokenizer.ggml.model = "gpt2") with the
 * "qwen2" pre-tokenizer, as llama.cpp does it.
 *
 * Built from the GGUF's tokenizer.ggml.{tokens,token_type,merges} arrays.
 * Text of special tokens (CONTROL type, and USER_DEFINED always, as
 * llama.cpp) is split out before pre-tokenization when parse_special is true;
 * the rest is split with the qwen2 regex (PCRE2, Unicode) and each piece is
 * byte-mapped and merged by merge rank.
 */
#ifndef ST_TOKENIZER_H
#define ST_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct st_tokenizer st_tokenizer_t;

/* NULL (logged) when the GGUF lacks a usable gpt2/qwen2 vocabulary; *err
 * (may be NULL) gets why: a negative ST_E* code (ST_ENOMEM when memory ran
 * out, which the model loader does not take for a missing tokenizer), 0 on
 * success. Copies what it needs: g may be closed afterwards. The tokenizer is
 * read-only once built, so any number of threads may use it at once. */
st_tokenizer_t *st_tokenizer_from_gguf(const st_gguf_t *g, int *err);
/* Frees *t and sets it to NULL; safe on NULL. */
void st_tokenizer_destroy(st_tokenizer_t **t);

int32_t st_tokenizer_n_vocab(const st_tokenizer_t *t);
/* BOS and EOS ids (tokenizer.ggml.{bos,eos}_token_id, llama.cpp's defaults otherwise), or -1. */
int32_t st_tokenizer_bos(const st_tokenizer_t *t);
int32_t st_tokenizer_eos(const st_tokenizer_t *t);

/* Tokenizes len bytes of text (need not be NUL-terminated, any bytes: as in
 * llama.cpp, each byte that starts no complete UTF-8 sequence is read as
 * U+FFFD). Writes at most cap ids (ids may be NULL when cap is 0) and
 * returns the total number of tokens (call again with a larger buffer when it
 * exceeds cap), or a negative ST_E* code. No BOS is added unless the GGUF's
 * tokenizer.ggml.add_bos_token is true. */
int st_tokenize(const st_tokenizer_t *t, const char *text, size_t len, bool parse_special, int32_t *ids, int cap);

/* The bytes token id stands for. Control tokens give their text only when
 * render_special. Writes at most cap bytes (no NUL) and returns the full
 * length, or a negative code for a bad id. */
int st_token_to_piece(const st_tokenizer_t *t, int32_t id, bool render_special, char *buf, int cap);

/* End of generation: <|im_end|>, <|endoftext|>, eos id, and the other ids llama.cpp treats as EOG. */
bool st_token_is_eog(const st_tokenizer_t *t, int32_t id);
/* Id whose text is exactly text, or -1. */
int32_t st_tokenizer_find(const st_tokenizer_t *t, const char *text);

#endif
