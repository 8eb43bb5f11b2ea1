/* Text helpers: UTF-8 validation and repair for output (generate.h), the
 * tokenizer's llama.cpp-compatible UTF-8 decoder and encoder
 * (tokenizer_internal.h). Expected bytes are written out by hand from the
 * UTF-8 definition. (ChatML is tokenized by st_chatml_tokenize, checked in
 * test_tokenizer against hand-written ChatML strings.) */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "tokenizer_internal.h"

#define U(s) ((const unsigned char *)(s))

Test(utf8, seq_len_valid_invalid_and_incomplete) {
    cr_assert_eq(st_utf8_seq_len(U("A"), 1), 1);
    cr_assert_eq(st_utf8_seq_len(U("\xC3\xA9"), 2), 2);         /* U+00E9 */
    cr_assert_eq(st_utf8_seq_len(U("\xE2\x82\xAC"), 3), 3);     /* U+20AC */
    cr_assert_eq(st_utf8_seq_len(U("\xF0\x9F\x98\x80"), 4), 4); /* U+1F600 */
    cr_assert_eq(st_utf8_seq_len(U("\xF4\x8F\xBF\xBF"), 4), 4); /* U+10FFFF, the last */
    cr_assert_eq(st_utf8_seq_len(U("\xC3"), 1), -1, "may still complete");
    cr_assert_eq(st_utf8_seq_len(U("\xF0\x9F\x98"), 3), -1);
    cr_assert_eq(st_utf8_seq_len(U("\x80"), 1), 0, "a continuation byte first");
    cr_assert_eq(st_utf8_seq_len(U("\xC3\x28"), 2), 0, "no continuation byte");
    cr_assert_eq(st_utf8_seq_len(U("\xC0\x80"), 2), 0, "overlong U+0000");
    cr_assert_eq(st_utf8_seq_len(U("\xE0\x9F\xBF"), 3), 0, "overlong U+07FF");
    cr_assert_eq(st_utf8_seq_len(U("\xED\xA0\x80"), 3), 0, "surrogate U+D800");
    cr_assert_eq(st_utf8_seq_len(U("\xF4\x90\x80\x80"), 4), 0, "U+110000");
    cr_assert_eq(st_utf8_seq_len(U("\xF8\x88\x80\x80\x80"), 5), 0, "no 5-byte forms");
}

Test(utf8, sanitize_replaces_each_bad_byte) {
    char *s = st_utf8_sanitize("a\xC3(b", 4);
    cr_assert_str_eq(s, "a\xEF\xBF\xBD(b");
    free(s);
    s = st_utf8_sanitize("\xE2\x82", 2); /* cut short: each byte becomes U+FFFD */
    cr_assert_str_eq(s, "\xEF\xBF\xBD\xEF\xBF\xBD");
    free(s);
    s = st_utf8_sanitize("ok \xE2\x82\xAC", 6);
    cr_assert_str_eq(s, "ok \xE2\x82\xAC", "valid text is copied as is");
    free(s);
    s = st_utf8_sanitize("x\0y", 3); /* NUL is valid UTF-8: kept, the string ends there */
    cr_assert_eq(memcmp(s, "x\0y", 4), 0);
    free(s);
    s = st_utf8_sanitize("", 0);
    cr_assert_str_eq(s, "");
    free(s);
}

/* The tokenizer's decoder follows llama.cpp (unicode_cpt_from_utf8): no
 * overlong or surrogate checks, U+FFFD and one byte for anything else. */
Test(utf8, tokenizer_decoder_as_llama_cpp) {
    size_t i = 0;
    cr_assert_eq(st_tok_utf8_next(U("\xC3\xA9x"), 3, &i), 0xE9);
    cr_assert_eq(i, 2);
    cr_assert_eq(st_tok_utf8_next(U("\xC3\xA9x"), 3, &i), 'x');
    cr_assert_eq(i, 3);
    i = 0;
    cr_assert_eq(st_tok_utf8_next(U("\xF0\x9F\x98\x80"), 4, &i), 0x1F600);
    cr_assert_eq(i, 4);
    i = 0;
    cr_assert_eq(st_tok_utf8_next(U("\xC0\x80"), 2, &i), 0, "overlong decoded as is");
    cr_assert_eq(i, 2);
    i = 0;
    cr_assert_eq(st_tok_utf8_next(U("\xED\xA0\x80"), 3, &i), 0xD800, "surrogate decoded as is");
    cr_assert_eq(i, 3);
    i = 0;
    cr_assert_eq(st_tok_utf8_next(U("\xE2\x82"), 2, &i), 0xFFFD, "cut by the end");
    cr_assert_eq(i, 1);
    i = 0;
    cr_assert_eq(st_tok_utf8_next(U("\xF4\x90\x80\x80"), 4, &i), 0xFFFD, "above U+10FFFF");
    cr_assert_eq(i, 1);
    i = 0;
    cr_assert_eq(st_tok_utf8_next(U("\x80"), 1, &i), 0xFFFD);
    cr_assert_eq(i, 1);
    i = 0;
    cr_assert_eq(st_tok_utf8_next(U("\xC3("), 2, &i), 0xFFFD, "no continuation byte");
    cr_assert_eq(i, 1);
}

Test(utf8, tokenizer_encoder_at_each_length_boundary) {
    static const struct {
        uint32_t cpt;
        const char *bytes;
    } cases[] = {{0x00, "\x00"},
                 {0x7F, "\x7F"},
                 {0x80, "\xC2\x80"},
                 {0x7FF, "\xDF\xBF"},
                 {0x800, "\xE0\xA0\x80"},
                 {0xFFFF, "\xEF\xBF\xBF"},
                 {0x10000, "\xF0\x90\x80\x80"},
                 {0x10FFFF, "\xF4\x8F\xBF\xBF"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        uint8_t u[4];
        const size_t want = cases[k].cpt ? strlen(cases[k].bytes) : 1;
        cr_assert_eq(st_tok_utf8_put(cases[k].cpt, u), want, "U+%04X", cases[k].cpt);
        cr_assert_eq(memcmp(u, cases[k].bytes, want), 0, "U+%04X", cases[k].cpt);
        size_t i = 0;
        cr_assert_eq(st_tok_utf8_next(u, want, &i), cases[k].cpt, "U+%04X round trip", cases[k].cpt);
        cr_assert_eq(i, want);
    }
}
