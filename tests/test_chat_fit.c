/* --drop-old-turns (server/chat_fit.c): the newest whole turns that fit are
 * kept, system messages always, the last user message always. The expected
 * cut comes from tokenizing each candidate conversation whole with
 * st_chatml_tokenize (not from chat_fit's per-message sums). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "chat_fit.h"
#include "model.h"
#include "st_log.h"
#include "testutil.h"

static st_model_t *s_m;

static void s_setup(void) { s_m = st_test_load_path(st_test_tiny_model()); }
static void s_teardown(void) { st_model_destroy(&s_m); }
TestSuite(chat_fit, .init = s_setup, .fini = s_teardown);

static st_chat_msg_t s_msg(const char *role, const char *content) {
    return (st_chat_msg_t){role, content, strlen(content)};
}

static int s_tokens(const st_chat_msg_t *m, int n) {
    int k = st_chatml_tokenize(s_m->tok, m, n, NULL, 0);
    cr_assert_gt(k, 0);
    return k;
}

/* system, then turns of (user, assistant), then a last user message */
#define N_TURNS 6
static const char *s_user_text[N_TURNS + 1] = {"Tell me about foxes.",   "And wolves, please?", "Which one is faster?",
                                               "Where do they live?",    "What do they eat?",   "Do they meet?",
                                               "Summarise it in a line."};
static const char *s_bot_text[N_TURNS] = {"Foxes are small wild canids with bushy tails.",
                                          "Wolves live in packs and hunt together.",
                                          "Over a short distance the fox.",
                                          "Forests, tundra, deserts and cities too.",
                                          "Rodents, birds, fruit, and for wolves large prey.",
                                          "Rarely; wolves chase foxes away."};

static int s_conversation(st_chat_msg_t *m) {
    int n = 0;
    m[n++] = s_msg("system", "You answer briefly.");
    for (int t = 0; t < N_TURNS; t++) {
        m[n++] = s_msg("user", s_user_text[t]);
        m[n++] = s_msg("assistant", s_bot_text[t]);
    }
    m[n++] = s_msg("user", s_user_text[N_TURNS]);
    return n;
}

Test(chat_fit, keeps_the_newest_turns_that_fit) {
    st_chat_msg_t all[2 * N_TURNS + 2];
    const int n = s_conversation(all), room = 16;
    /* the prompt without its k oldest turns, tokenized whole */
    int with_dropped[N_TURNS + 1];
    for (int k = 0; k <= N_TURNS; k++) {
        st_chat_msg_t c[2 * N_TURNS + 2];
        int m = 0;
        c[m++] = all[0];
        for (int i = 1 + 2 * k; i < n; i++) c[m++] = all[i];
        with_dropped[k] = s_tokens(c, m);
    }
    cr_assert_eq(with_dropped[0], s_tokens(all, n));
    for (int n_ctx = with_dropped[N_TURNS] + room; n_ctx <= with_dropped[0] + room; n_ctx += 7) {
        int k = 0; /* the fewest turns to leave out */
        while (with_dropped[k] + room > n_ctx) k++;
        st_chat_msg_t m[2 * N_TURNS + 2];
        memcpy(m, all, sizeof all);
        int kept = -1, nt = -1;
        cr_assert_eq(st_chat_fit(s_m->tok, m, n, room, n_ctx, &kept, &nt), 0, "n_ctx %d", n_ctx);
        cr_assert_eq(kept, n - 2 * k, "n_ctx %d: %d messages kept, want %d", n_ctx, kept, n - 2 * k);
        cr_assert_eq(nt, with_dropped[k]);
        cr_assert_eq(m[0].content, all[0].content, "the system message first");
        for (int i = 1; i < kept; i++)
            cr_assert_eq(m[i].content, all[2 * k + i].content, "n_ctx %d, kept %d", n_ctx, i);
        for (int i = 0; i < 2 * k; i++) cr_assert_eq(m[kept + i].content, all[1 + i].content, "left out, in order");
    }
}

Test(chat_fit, system_messages_anywhere_stay) {
    st_chat_msg_t m[6] = {s_msg("user", s_user_text[0]),
                          s_msg("assistant", s_bot_text[0]),
                          s_msg("system", "From now on, answer in French."),
                          s_msg("user", s_user_text[1]),
                          s_msg("assistant", s_bot_text[1]),
                          s_msg("user", s_user_text[2])};
    st_chat_msg_t want[4] = {m[2], m[3], m[4], m[5]};
    int full = s_tokens(m, 6), cut = s_tokens(want, 4), kept = 0, nt = 0;
    cr_assert_eq(st_chat_fit(s_m->tok, m, 6, 8, cut + 8, &kept, &nt), 0);
    cr_assert_lt(cut, full);
    cr_assert_eq(kept, 4);
    cr_assert_eq(nt, cut);
    for (int i = 0; i < 4; i++) cr_assert_eq(m[i].content, want[i].content);
}

Test(chat_fit, the_last_turn_always_stays_or_the_request_fails) {
    st_chat_msg_t m[4] = {s_msg("system", "Be brief."), s_msg("user", s_user_text[0]),
                          s_msg("assistant", s_bot_text[0]), s_msg("user", s_user_text[1])};
    st_chat_msg_t last[2] = {m[0], m[3]}, before[4];
    memcpy(before, m, sizeof m);
    int need = s_tokens(last, 2), kept = 0, nt = 0;
    cr_assert_eq(st_chat_fit(s_m->tok, m, 4, 10, need + 10, &kept, &nt), 0);
    cr_assert_eq(kept, 2);
    cr_assert_eq(nt, need);
    memcpy(m, before, sizeof m);
    cr_assert_eq(st_chat_fit(s_m->tok, m, 4, 10, need + 9, &kept, &nt), ST_ERANGE);
    cr_assert_eq(nt, need, "the tokens of what could not be cut");
    for (int i = 0; i < 4; i++) cr_assert_eq(m[i].content, before[i].content, "unchanged on failure");
    /* one user message, too long: nothing to leave out */
    st_chat_msg_t one = s_msg("user", s_user_text[0]);
    cr_assert_eq(st_chat_fit(s_m->tok, &one, 1, 1, 3, &kept, &nt), ST_ERANGE);
}

Test(chat_fit, a_turn_runs_to_the_next_user_message) {
    /* an assistant message first, then a turn with two assistant messages */
    st_chat_msg_t m[6] = {s_msg("assistant", "Hello! Ask me anything."),
                          s_msg("user", s_user_text[0]),
                          s_msg("assistant", s_bot_text[0]),
                          s_msg("assistant", s_bot_text[1]),
                          s_msg("user", s_user_text[1]),
                          s_msg("user", s_user_text[2])};
    int kept = 0, nt = 0;
    /* room for all but the greeting: only it goes */
    int no_greeting = s_tokens(m + 1, 5);
    st_chat_msg_t c[6];
    memcpy(c, m, sizeof m);
    cr_assert_eq(st_chat_fit(s_m->tok, c, 6, 4, no_greeting + 4, &kept, &nt), 0);
    cr_assert_eq(kept, 5);
    cr_assert_eq(c[0].content, m[1].content);
    /* one token less: the whole turn of the first user message goes (both answers) */
    memcpy(c, m, sizeof m);
    cr_assert_eq(st_chat_fit(s_m->tok, c, 6, 4, no_greeting + 3, &kept, &nt), 0);
    cr_assert_eq(kept, 2);
    cr_assert_eq(c[0].content, m[4].content);
    cr_assert_eq(nt, s_tokens(m + 4, 2));
}
