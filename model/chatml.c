/* chatml: ChatML turns to token ids, contents as text (see chatml.h).
 *
 * The template is cut at its special tokens: "<|im_start|>", then the turn's
 * "ROLE\nCONTENT" tokenized with parse_special off, then "<|im_end|>\n" with
 * the next "<|im_start|>". Since tokenizing with special tokens parsed also
 * splits the text at them and runs BPE on each piece alone, cutting there
 * changes nothing for ordinary contents; it only stops a content from
 * producing control tokens. A BOS (tokenizers with add_bos_token) is kept
 * from the first piece only.
 */
#include "chatml.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "st_log.h"

typedef struct {
    int32_t *ids;
    int cap, n, n_bos;
} s_out_t;

/* Appends the ids of text (minus the BOS every call adds, except the first). */
static int s_add(const st_tokenizer_t *t, s_out_t *o, const char *text, size_t len, bool special) {
    int32_t *dst = o->n < o->cap ? o->ids + o->n : NULL;
    int room = o->n < o->cap ? o->cap - o->n : 0;
    int k = st_tokenize(t, text, len, special, dst, room);
    if (k < 0) return k;
    int skip = o->n > 0 ? o->n_bos : 0;
    if (skip && dst) memmove(dst, dst + skip, (size_t)((k < room ? k : room) - skip) * sizeof *dst);
    if (k - skip > INT_MAX - o->n) return st_fail(ST_ERANGE, "%d + %d tokens", o->n, k - skip);
    o->n += k - skip;
    return 0;
}

int st_chatml_tokenize(const st_tokenizer_t *t, const st_chat_msg_t *msgs, int n, int32_t *ids, int cap) {
    if (!t || n < 0 || (n > 0 && !msgs) || cap < 0 || (cap > 0 && !ids)) return st_fail(ST_EINVAL, "bad arguments");
    int n_bos = st_tokenize(t, "", 0, false, NULL, 0); /* 1 when the tokenizer adds a BOS */
    if (n_bos < 0) return n_bos;
    s_out_t o = {ids, cap, 0, n_bos};
    int rc = s_add(t, &o, "<|im_start|>", 12, true);
    for (int i = 0; rc == 0 && i < n; i++) {
        size_t rl = strlen(msgs[i].role);
        char *turn = malloc(rl + 1 + msgs[i].content_len);
        if (!turn) return st_fail(ST_ENOMEM, "a message of %zu bytes", msgs[i].content_len);
        memcpy(turn, msgs[i].role, rl);
        turn[rl] = '\n';
        if (msgs[i].content_len) memcpy(turn + rl + 1, msgs[i].content, msgs[i].content_len);
        rc = s_add(t, &o, turn, rl + 1 + msgs[i].content_len, false);
        free(turn);
        if (rc == 0) rc = s_add(t, &o, "<|im_end|>\n<|im_start|>", 23, true);
    }
    if (rc == 0) rc = s_add(t, &o, "assistant\n", 10, true);
    return rc < 0 ? rc : o.n;
}
