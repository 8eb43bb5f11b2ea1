/* fuzz_vocab: a small byte-level BPE vocabulary built in memory once (the
 * 256 byte tokens, a few merges, Qwen's chat special tokens, the qwen2
 * pre-tokenizer: the same regex path as the real model), for the harnesses
 * that tokenize (tokenizer, api). Freed at exit. */
#ifndef ST_FUZZ_VOCAB_H
#define ST_FUZZ_VOCAB_H

#include "tokenizer.h"

/* The vocabulary (built on the first call; aborts if it cannot be built). */
st_tokenizer_t *st_fuzz_vocab(void);

#endif
