/* The generation loop and ChatML prompt building (see generate.h). */
#include "generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "st_log.h"

int st_generate(st_ctx_t *c, st_kv_t *kv, st_sampler_t *smp, const int32_t *prompt, int n_prompt, int n_predict,
                float *prompt_logits, int32_t *out_tokens, const st_generate_cb_t *cb, st_generate_result_t *res) {
    const st_generate_cb_t none = {0};
    if (!cb) cb = &none;
    const st_model_t *m = st_ctx_model(c);
    const int V = m->cfg.n_vocab;
    memset(res, 0, sizeof *res);
    res->n_prompt = n_prompt;
    if (n_prompt < 1) return st_fail(ST_EINVAL, "empty prompt");
    float *logits = malloc((size_t)V * sizeof(float));
    if (!logits) return st_fail(ST_ENOMEM, "no memory for logits");
    int rc = 0;
    double t0 = st_now_ms();
    if (cb->between_steps) cb->between_steps(cb->between_steps_arg);
    if (prompt_logits) {
        rc = st_decode(c, kv, prompt, n_prompt, prompt_logits, true);
        if (rc == 0) memcpy(logits, prompt_logits + (size_t)(n_prompt - 1) * V, (size_t)V * sizeof(float));
    } else {
        rc = st_decode(c, kv, prompt, n_prompt, logits, false);
    }
    for (int i = 0; i < n_prompt; i++) st_sampler_accept(smp, prompt[i]);
    double t1 = st_now_ms();
    res->prompt_ms = t1 - t0;
    char piece[256];
    for (int i = 0; rc == 0 && i < n_predict; i++) {
        int32_t tok = st_sampler_sample(smp, logits);
        st_sampler_accept(smp, tok);
        if (out_tokens) out_tokens[i] = tok;
        res->n_generated++;
        bool eog = m->tok && st_token_is_eog(m->tok, tok);
        int n = 0;
        if (m->tok && !eog) {
            n = st_token_to_piece(m->tok, tok, false, piece, (int)sizeof piece);
            if (n < 0) n = 0;
            if (n > (int)sizeof piece) n = (int)sizeof piece; /* longest Qwen token is far shorter */
        }
        if (eog) {
            res->stopped_eog = true;
            break;
        }
        if (cb->token && !cb->token(cb->token_arg, tok, piece, n)) break;
        if (i + 1 == n_predict) break;
        if (cb->between_steps) cb->between_steps(cb->between_steps_arg);
        rc = st_decode(c, kv, &tok, 1, logits, false);
    }
    res->generate_ms = st_now_ms() - t1;
    free(logits);
    return rc;
}

int st_utf8_seq_len(const unsigned char *s, size_t avail) {
    unsigned char c = s[0];
    int n;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0)
        n = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        n = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        n = 4, cp = c & 0x07;
    else
        return 0;
    for (int i = 1; i < n; i++) {
        if ((size_t)i >= avail) return -1;
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

char *st_utf8_sanitize(const char *s, size_t len) {
    char *out = malloc(len * 3 + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        int n = st_utf8_seq_len((const unsigned char *)s + i, len - i);
        if (n <= 0) { /* invalid, or cut short by the end */
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, (size_t)n);
            o += (size_t)n;
            i += (size_t)n;
        }
    }
    out[o] = '\0';
    return out;
}
