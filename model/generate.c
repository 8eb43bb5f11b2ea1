/* The generation loop (see generate.h): st_gen_step, st_generate on top of
 * it for one sequence, and the UTF-8 helpers for its text. */
#include "generate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "st_log.h"

struct st_gen {
    st_ctx_t *c;
    const st_model_t *m;
    int n_batch, n_rows;
    /* the pass: n_tok tokens, each with its cache and whether its logits row is wanted */
    int n_tok;
    st_kv_t **kvs;
    int32_t *toks;
    bool *want;
    /* the wanted rows, in token order: their sequence and prompt position (-1: a generated token) */
    int n_out;
    st_gen_seq_t **row_seq;
    int *row_pos;
    float *logits; /* n_rows x n_vocab */
    /* the draws of a step: per wanted row, whether it may leave its logits to the head backend;
     * the rows that draw, their tokens; those drawn by the backend (sampler, stash index, draw) */
    bool *defer;
    int *draw_row, n_draw;
    int32_t *tok;
    st_sampler_t **bk_smp;
    int *bk_idx, *bk_draw;
    int32_t *bk_tok;
};

st_gen_t *st_gen_new(st_ctx_t *c, int n_rows) {
    st_gen_t *g = calloc(1, sizeof *g);
    if (!g) {
        st_fail(ST_ENOMEM, "no memory for the generation loop");
        return NULL;
    }
    g->c = c;
    g->m = st_ctx_model(c);
    g->n_batch = st_ctx_params(c)->n_batch;
    g->n_rows = n_rows < 1 ? 1 : n_rows;
    g->kvs = calloc((size_t)g->n_batch, sizeof *g->kvs);
    g->toks = calloc((size_t)g->n_batch, sizeof *g->toks);
    g->want = calloc((size_t)g->n_batch, sizeof *g->want);
    g->row_seq = calloc((size_t)g->n_rows, sizeof *g->row_seq);
    g->row_pos = calloc((size_t)g->n_rows, sizeof *g->row_pos);
    g->logits = malloc((size_t)g->n_rows * g->m->cfg.n_vocab * sizeof(float));
    const size_t R = (size_t)g->n_rows;
    g->defer = calloc(R, sizeof *g->defer);
    g->draw_row = calloc(R, sizeof *g->draw_row);
    g->tok = calloc(R, sizeof *g->tok);
    g->bk_smp = calloc(R, sizeof *g->bk_smp);
    g->bk_idx = calloc(R, sizeof *g->bk_idx);
    g->bk_draw = calloc(R, sizeof *g->bk_draw);
    g->bk_tok = calloc(R, sizeof *g->bk_tok);
    if (!g->kvs || !g->toks || !g->want || !g->row_seq || !g->row_pos || !g->logits || !g->defer || !g->draw_row ||
        !g->tok || !g->bk_smp || !g->bk_idx || !g->bk_draw || !g->bk_tok) {
        st_fail(ST_ENOMEM, "no memory for %d rows of logits", g->n_rows);
        st_gen_destroy(&g);
    }
    return g;
}

void st_gen_destroy(st_gen_t **gp) {
    st_gen_t *g = *gp;
    if (!g) return;
    free(g->kvs);
    free(g->toks);
    free(g->want);
    free(g->row_seq);
    free(g->row_pos);
    free(g->logits);
    free(g->defer), free(g->draw_row), free(g->tok);
    free(g->bk_smp), free(g->bk_idx), free(g->bk_draw), free(g->bk_tok);
    free(g);
    *gp = NULL;
}

/* Appends a token of q at prompt position pos (-1: its last sampled token). */
static void s_add(st_gen_t *g, st_gen_seq_t *q, int32_t tok, int pos, bool want) {
    g->kvs[g->n_tok] = q->kv;
    g->toks[g->n_tok] = tok;
    g->want[g->n_tok++] = want;
    if (!want) return;
    g->row_seq[g->n_out] = q;
    g->row_pos[g->n_out++] = pos;
}

/* Fills the pass: a token of each running sequence, then prompt tokens of
 * those still prefilling, while the batch and the logits rows last. */
static void s_plan(st_gen_t *g, st_gen_seq_t *const *seqs, int n_seqs) {
    g->n_tok = g->n_out = 0;
    for (int i = 0; i < n_seqs && g->n_tok < g->n_batch && g->n_out < g->n_rows; i++) {
        st_gen_seq_t *q = seqs[i];
        if (q->end == ST_GEN_RUNNING && q->n_generated > 0) s_add(g, q, q->last, -1, true);
    }
    for (int i = 0; i < n_seqs && g->n_tok < g->n_batch; i++) {
        st_gen_seq_t *q = seqs[i];
        if (q->end != ST_GEN_RUNNING || q->n_fed >= q->n_prompt) continue;
        int take = q->n_prompt - q->n_fed, room = g->n_rows - g->n_out;
        if (take > g->n_batch - g->n_tok) take = g->n_batch - g->n_tok;
        if (q->prompt_logits && take > room) take = room;
        if (!q->prompt_logits && q->n_fed + take == q->n_prompt && room == 0) take--; /* its last needs a row */
        for (int k = 0; k < take; k++) {
            int pos = q->n_fed + k;
            s_add(g, q, q->prompt[pos], pos, q->prompt_logits || pos == q->n_prompt - 1);
        }
        q->n_fed += take; /* by the time anyone reads it, the pass has run */
    }
}

/* Whether wanted row r draws a token (a generated token's, or a prompt's last). */
static bool s_draws(const st_gen_t *g, int r) {
    return g->row_pos[r] < 0 || g->row_pos[r] == g->row_seq[r]->n_prompt - 1;
}

/* Whether row r needs no whole logits: a draw without a constraint, by a
 * sequence that wants no prompt logits (the head backend may draw it from
 * its nodes' candidates). */
static bool s_draw_only(const st_gen_t *g, int r) {
    const st_gen_seq_t *q = g->row_seq[r];
    return s_draws(g, r) && !q->prompt_logits && !st_sampler_constrained(q->smp) &&
           (q->n_generated > 0 || q->n_predict >= 1);
}

/* The tokens of the step's draws: each row computed whole by its sampler,
 * those the head backend stashed in one go (one round to its nodes for all
 * of them). A failed draw leaves a negative code as its token. */
static void s_draw(st_gen_t *g) {
    const size_t V = (size_t)g->m->cfg.n_vocab;
    int n_bk = 0;
    for (int d = 0; d < g->n_draw; d++) {
        const int r = g->draw_row[d], si = st_ctx_head_stashed(g->c, r);
        st_sampler_t *smp = g->row_seq[r]->smp;
        if (si < 0) {
            g->tok[d] = st_sampler_sample(smp, g->logits + (size_t)r * V);
        } else {
            g->bk_smp[n_bk] = smp, g->bk_idx[n_bk] = si, g->bk_draw[n_bk++] = d;
        }
    }
    if (n_bk == 0) return;
    const int rc = st_ctx_sample_stashed(g->c, g->bk_smp, g->bk_idx, n_bk, g->bk_tok);
    if (rc < 0) st_log(ST_LOG_WARN, "the head's draws for %d sequences failed: %s", n_bk, st_strerror(rc));
    for (int j = 0; j < n_bk; j++) g->tok[g->bk_draw[j]] = rc < 0 ? rc : g->bk_tok[j];
}

/* The sequence's drawn token (negative: the constraint allowed nothing, or
 * the head backend failed, logged), then checked for the end. */
static void s_take(st_gen_t *g, st_gen_seq_t *q, int32_t tok, const st_gen_hooks_t *h) {
    const st_tokenizer_t *tk = g->m->tok;
    if (tok < 0) {
        q->end = ST_GEN_ERROR;
        return;
    }
    st_sampler_accept(q->smp, tok);
    q->last = tok;
    if (q->out) q->out[q->n_generated] = tok;
    q->n_generated++;
    bool eog = tk && st_token_is_eog(tk, tok);
    char piece[256];
    int n = 0;
    if (tk && !eog) {
        n = st_token_to_piece(tk, tok, false, piece, (int)sizeof piece);
        if (n < 0) n = 0;
        if (n > (int)sizeof piece) n = (int)sizeof piece; /* longest Qwen token is far shorter */
    }
    if (eog)
        q->end = ST_GEN_EOG;
    else if (q->n_generated >= q->n_predict)
        q->end = ST_GEN_LENGTH;
    if (h && h->token && !h->token(h->arg, q, tok, piece, n) && q->end != ST_GEN_EOG) q->end = ST_GEN_STOP;
}

int st_gen_step(st_gen_t *g, st_gen_seq_t *const *seqs, int n_seqs, const st_gen_hooks_t *h) {
    for (int i = 0; i < n_seqs; i++) {
        st_gen_seq_t *q = seqs[i];
        if (q->end == ST_GEN_RUNNING && q->n_generated == 0 && q->n_fed >= q->n_prompt) {
            st_log(ST_LOG_WARN, "a sequence with no prompt left to prefill (%d of %d)", q->n_fed, q->n_prompt);
            q->end = ST_GEN_ERROR;
        }
    }
    s_plan(g, seqs, n_seqs);
    if (g->n_tok == 0) return 0;
    if (h && h->between_steps) h->between_steps(h->arg);
    /* rows that only draw: a head on the nodes draws them from their candidates */
    for (int r = 0; r < g->n_out; r++) g->defer[r] = s_draw_only(g, r);
    st_ctx_defer_head(g->c, g->defer, g->n_out);
    int rc = st_decode_mixed(g->c, g->kvs, g->toks, g->n_tok, g->want, g->logits);
    if (rc < 0) { /* their caches no longer match their tokens */
        st_ctx_defer_head(g->c, NULL, 0);
        for (int i = 0; i < n_seqs; i++)
            if (seqs[i]->end == ST_GEN_RUNNING && seqs[i]->n_fed > 0) seqs[i]->end = ST_GEN_ERROR;
        return rc;
    }
    const size_t V = (size_t)g->m->cfg.n_vocab;
    g->n_draw = 0;
    for (int r = 0; r < g->n_out; r++) {
        st_gen_seq_t *q = g->row_seq[r];
        const int pos = g->row_pos[r];
        if (pos >= 0 && q->prompt_logits)
            memcpy(q->prompt_logits + (size_t)pos * V, g->logits + (size_t)r * V, V * sizeof(float));
        if (!s_draws(g, r)) continue;
        if (q->n_generated == 0) { /* the prompt is in the cache: the penalty window's start */
            for (int i = 0; i < q->n_prompt; i++) st_sampler_accept(q->smp, q->prompt[i]);
            if (q->n_predict < 1) {
                q->end = ST_GEN_LENGTH;
                continue;
            }
        }
        g->draw_row[g->n_draw++] = r;
    }
    s_draw(g);
    for (int d = 0; d < g->n_draw; d++) s_take(g, g->row_seq[g->draw_row[d]], g->tok[d], h);
    st_ctx_defer_head(g->c, NULL, 0);
    return g->n_tok;
}

static void s_between_steps(void *arg) {
    const st_generate_cb_t *cb = arg;
    if (cb->between_steps) cb->between_steps(cb->between_steps_arg);
}

static bool s_token(void *arg, st_gen_seq_t *q, int32_t tok, const char *piece, int len) {
    const st_generate_cb_t *cb = arg;
    return q->end == ST_GEN_EOG || !cb->token || cb->token(cb->token_arg, tok, piece, len);
}

int st_generate(st_ctx_t *c, st_kv_t *kv, st_sampler_t *smp, const int32_t *prompt, int n_prompt, int n_predict,
                float *prompt_logits, int32_t *out_tokens, const st_generate_cb_t *cb, st_generate_result_t *res) {
    const st_generate_cb_t none = {0};
    memset(res, 0, sizeof *res);
    res->n_prompt = n_prompt;
    if (n_prompt < 1) return st_fail(ST_EINVAL, "empty prompt");
    st_gen_t *g = st_gen_new(c, prompt_logits ? st_ctx_params(c)->n_batch : 1);
    if (!g) return ST_ENOMEM;
    st_gen_seq_t q = {.kv = kv,
                      .smp = smp,
                      .prompt = prompt,
                      .n_prompt = n_prompt,
                      .n_predict = n_predict,
                      .prompt_logits = prompt_logits,
                      .out = out_tokens};
    st_gen_seq_t *seqs[1] = {&q};
    const st_gen_hooks_t hooks = {s_between_steps, s_token, (void *)(cb ? cb : &none)};
    int rc = 0;
    double t0 = st_now_ms(), t1 = 0;
    while (rc >= 0 && q.end == ST_GEN_RUNNING) {
        rc = st_gen_step(g, seqs, 1, &hooks);
        if (!t1 && q.n_fed == n_prompt) t1 = st_now_ms();
    }
    double t2 = st_now_ms();
    if (!t1) t1 = t2;
    res->prompt_ms = t1 - t0;
    res->generate_ms = t2 - t1;
    res->n_generated = q.n_generated;
    st_gen_destroy(&g);
    if (rc >= 0 && q.end == ST_GEN_ERROR) rc = st_fail(ST_EINVAL, "the sampler allowed no token");
    return rc < 0 ? rc : 0;
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
