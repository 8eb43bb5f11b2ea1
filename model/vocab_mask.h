/* vocab_mask: a grammar applied to a tokenizer's vocabulary, so that every
 * sampled token keeps the answer a valid prefix (grammar.h).
 *
 * st_vocab_t holds each token's bytes (as the answer's text gets them) sorted
 * bytewise, with the length each shares with the one before: walking them in
 * that order is a walk over a trie of the vocabulary, and a prefix the
 * grammar refuses skips every token that starts with it.
 *
 * st_gmask_t is one sequence's constraint. Before a draw it masks the logits:
 * first it tries the best tokens by logit, one by one, and stops when it has
 * as many allowed ones as the sampler will look at (one when greedy, top_k
 * otherwise); only when those are not enough (or top_k is off) does it walk
 * the whole vocabulary. A token is allowed when its bytes keep the text a
 * valid prefix and the shortest completion after it still fits in the tokens
 * left (every byte exists as a token of its own), so the answer is complete
 * when max_tokens runs out; end-of-generation tokens are allowed when the
 * text is complete.
 */
#ifndef ST_VOCAB_MASK_H
#define ST_VOCAB_MASK_H

#include <stdbool.h>
#include <stdint.h>

#include "grammar.h"
#include "sampler.h"
#include "tokenizer.h"

typedef struct st_vocab st_vocab_t;
typedef struct st_gmask st_gmask_t;

/* The vocabulary's bytes (read-only afterwards: share it between threads).
 * NULL on no memory. */
st_vocab_t *st_vocab_new(const st_tokenizer_t *tok);
void st_vocab_destroy(st_vocab_t **v);
/* Every one of the 256 bytes is a token of its own (else a budget could be missed). */
bool st_vocab_has_all_bytes(const st_vocab_t *v);

/* A constraint for one answer of at most max_tokens tokens (g and v are
 * borrowed and must outlive it). NULL on no memory. */
st_gmask_t *st_gmask_new(const st_grammar_t *g, const st_vocab_t *v, int max_tokens);
void st_gmask_destroy(st_gmask_t **m);
/* Sets the logits of the tokens that may not come next to -INFINITY, at
 * least among the n_best best allowed ones (n_best <= 0: all of them).
 * 0, or ST_ERANGE when no token is allowed (cannot happen while the budget
 * holds and every byte is a token). */
int st_gmask_apply(st_gmask_t *m, float *logits, int n_vocab, int n_best);
/* Records the token drawn: 0, or ST_EINVAL when the grammar refuses it. */
int st_gmask_accept(st_gmask_t *m, int32_t token);
/* m as a sampler's constraint (st_sampler_constrain); m stays the caller's. */
st_sampler_constraint_t st_gmask_constraint(st_gmask_t *m);
/* The answer is complete and nothing may follow. */
bool st_gmask_finished(const st_gmask_t *m);
/* The text so far is complete (it could end here). */
bool st_gmask_complete(const st_gmask_t *m);

typedef struct {
    uint64_t applies, full_walks, tokens_checked, bytes_fed;
} st_gmask_stats_t;
/* Counters since st_gmask_new (for benchmarks). */
st_gmask_stats_t st_gmask_stats(const st_gmask_t *m);

#endif
