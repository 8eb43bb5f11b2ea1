/* chat_fit: the newest turns of a conversation that fit (see chat_fit.h).
 *
 * ChatML puts special tokens around every message, and tokenization splits
 * at special tokens, so a prompt's tokens are the sum of its messages' (each
 * counted as the prompt of that message alone, less the empty prompt's
 * tokens). Each message is tokenized once, the cut is found on the sums, and
 * the kept prompt is tokenized once more to be sure: a hostile client's many
 * small turns cost linear time, not a tokenization per turn.
 */
#include "chat_fit.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "st_log.h"

static bool s_system(const st_chat_msg_t *m) { return !strcmp(m->role, "system"); }
static bool s_user(const st_chat_msg_t *m) { return !strcmp(m->role, "user"); }

int st_chat_fit(const st_tokenizer_t *t, st_chat_msg_t *msgs, int n, int room, int n_ctx, int *n_kept, int *n_tokens) {
    int *cnt = malloc((size_t)(n > 0 ? n : 1) * sizeof *cnt);
    st_chat_msg_t *tmp = malloc((size_t)(n > 0 ? n : 1) * sizeof *tmp);
    int rc = !cnt || !tmp ? st_fail(ST_ENOMEM, "%d messages", n) : 0;
    int base = rc ? rc : st_chatml_tokenize(t, NULL, 0, NULL, 0); /* the empty prompt */
    if (base < 0) rc = base;
    long total = base;
    for (int i = 0; rc == 0 && i < n; i++) {
        int k = st_chatml_tokenize(t, &msgs[i], 1, NULL, 0);
        if (k < 0) rc = k;
        cnt[i] = k - base;
        total += cnt[i];
    }
    /* the last user message: it and what follows stay */
    int last_user = n - 1;
    while (last_user > 0 && !s_user(&msgs[last_user])) last_user--;
    int cut = 0; /* the non-system messages before cut are left out */
    while (rc == 0 && total + room > n_ctx) {
        int first = cut; /* the oldest turn still in */
        while (first < last_user && s_system(&msgs[first])) first++;
        if (first >= last_user) { /* only the last turn is left */
            *n_tokens = (int)total;
            rc = ST_ERANGE;
            break;
        }
        int next = first + 1; /* it runs to the next user message */
        while (next < last_user && !s_user(&msgs[next])) next++;
        for (int i = first; i < next; i++)
            if (!s_system(&msgs[i])) total -= cnt[i];
        cut = next;
    }
    if (rc == 0) {
        int k = 0, d = 0;
        for (int i = 0; i < n; i++) /* kept: system messages anywhere, everything from cut on */
            if (s_system(&msgs[i]) || i >= cut) tmp[k++] = msgs[i];
        *n_kept = k;
        for (int i = 0; i < n; i++)
            if (!(s_system(&msgs[i]) || i >= cut)) tmp[k + d++] = msgs[i];
        memcpy(msgs, tmp, (size_t)n * sizeof *msgs);
        int got = st_chatml_tokenize(t, msgs, *n_kept, NULL, 0);
        if (got < 0)
            rc = got;
        else if (got != total)
            rc = st_fail(ST_EINVAL, "the kept messages make %d tokens, counted %ld", got, total);
        else
            *n_tokens = got;
    }
    free(cnt);
    free(tmp);
    return rc;
}
