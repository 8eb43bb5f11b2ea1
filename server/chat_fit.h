/* chat_fit: a conversation too long for the context, cut to its newest
 * turns (st-run/st-coordinator --http --drop-old-turns). System messages
 * always stay; the oldest turns (a user message and what follows it up to
 * the next user message) are left out, whole, until the prompt leaves the
 * answer its room; the last user message and what follows it always stay.
 */
#ifndef ST_CHAT_FIT_H
#define ST_CHAT_FIT_H

#include "chatml.h"
#include "tokenizer.h"

/* Reorders msgs[0..n): the messages kept first, in their order (*n_kept of
 * them), then those left out (still the caller's to free). Kept are as many
 * of the newest turns as fit room + prompt tokens <= n_ctx; *n_tokens gets
 * the prompt's tokens (st_chatml_tokenize of the kept messages). 0, or
 * ST_ERANGE when even the last turn with the system messages does not fit
 * (msgs unchanged, *n_tokens that turn's prompt tokens), or another negative
 * ST_E* code. */
int st_chat_fit(const st_tokenizer_t *t, st_chat_msg_t *msgs, int n, int room, int n_ctx, int *n_kept, int *n_tokens);

#endif
