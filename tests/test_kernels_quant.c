/* Tests for the weight formats Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and
 * the Q8_1 activation format, against computations written here from the
 * format descriptions (ggml-common.h, ggml-quants.c), element by element and
 * in double precision, independent of kernels/ref:
 *   - every table's to_float against a per-element decoder;
 *   - the reference dot products against a double dot of the decoded rows,
 *     with ggml's Q8_1 semantics (the minimum term is m_w * s_x);
 *   - the Q8_1 quantizer against hand-computed blocks and ggml's rules;
 *   - zero blocks and saturated quants on every table.
 * test_kernels.c adds these types to its SIMD-vs-reference and matmul checks.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "st_kernels.h"

static const st_type_t s_types[] = {ST_TYPE_Q4_1, ST_TYPE_Q5_0, ST_TYPE_Q5_1, ST_TYPE_Q2_K,
                                    ST_TYPE_Q3_K, ST_TYPE_Q4_K, ST_TYPE_Q5_K};
#define N_TYPES (int)(sizeof s_types / sizeof s_types[0])

static double h2d(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return st_fp16_to_fp32(h);
}
static int bit(const uint8_t *p, int i) { return (p[i / 8] >> (i % 8)) & 1; }

/* Element e of a block: value = scale * q + min, from the byte offsets of
 * ggml-common.h. *mag receives |scale * q| + |min| (the size of the terms). */
static double decode(st_type_t t, const uint8_t *b, int e, double *mag) {
    double scale = 0, min = 0;
    int q = 0;
    switch (t) {
    case ST_TYPE_Q4_1:   /* d, m, qs[16] */
    case ST_TYPE_Q5_1: { /* d, m, qh[4], qs[16] */
        const uint8_t *qs = b + (t == ST_TYPE_Q4_1 ? 4 : 8);
        q = e < 16 ? qs[e] & 15 : qs[e - 16] >> 4;
        if (t == ST_TYPE_Q5_1) q += 16 * bit(b + 4, e);
        scale = h2d(b);
        min = h2d(b + 2);
        break;
    }
    case ST_TYPE_Q5_0: { /* d, qh[4], qs[16] */
        q = (e < 16 ? b[6 + e] & 15 : b[6 + e - 16] >> 4) + 16 * bit(b + 2, e) - 16;
        scale = h2d(b);
        break;
    }
    case ST_TYPE_Q2_K: { /* scales[16], qs[64], d, dmin */
        const int h = e / 128, k = (e % 128) / 32, l = e % 32, g = e / 16;
        q = (b[16 + 32 * h + l] >> (2 * k)) & 3;
        scale = h2d(b + 80) * (b[g] & 15);
        min = -h2d(b + 82) * (b[g] >> 4);
        break;
    }
    case ST_TYPE_Q3_K: { /* hmask[32], qs[64], scales[12], d */
        const int h = e / 128, k = (e % 128) / 32, l = e % 32, g = e / 16;
        q = ((b[32 + 32 * h + l] >> (2 * k)) & 3) - (bit(b + l, 4 * h + k) ? 0 : 4);
        const uint8_t *sc = b + 96;
        const int lo = g < 8 ? sc[g] & 15 : sc[g - 8] >> 4, hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
        scale = h2d(b + 108) * ((lo | hi << 4) - 32);
        break;
    }
    case ST_TYPE_Q4_K:   /* d, dmin, scales[12], qs[128] */
    case ST_TYPE_Q5_K: { /* d, dmin, scales[12], qh[32], qs[128] */
        const int j = e / 64, i = (e % 64) / 32, l = e % 32, g = e / 32;
        const uint8_t *qs = b + (t == ST_TYPE_Q4_K ? 16 : 48), *sc = b + 4;
        q = i ? qs[32 * j + l] >> 4 : qs[32 * j + l] & 15;
        if (t == ST_TYPE_Q5_K) q += 16 * bit(b + 16 + l, 2 * j + i);
        int s6, m6; /* 6-bit scale and min of group g */
        if (g < 4) {
            s6 = sc[g] & 63;
            m6 = sc[g + 4] & 63;
        } else {
            s6 = (sc[g + 4] & 15) | (sc[g - 4] >> 6) << 4;
            m6 = (sc[g + 4] >> 4) | (sc[g] >> 6) << 4;
        }
        scale = h2d(b) * s6;
        min = -h2d(b + 2) * m6;
        break;
    }
    default: cr_assert_fail("no decoder for %s", st_type_name(t));
    }
    *mag = fabs(scale * q) + fabs(min);
    return scale * q + min;
}

/* A random row with fp16 scales of the sizes llama-quantize writes. */
static void fill_row(st_type_t t, uint8_t *row, int n) {
    const st_type_traits_t *tr = st_type_traits(t);
    for (size_t i = 0; i < st_row_size(t, n); i++) row[i] = (uint8_t)st_test_rng_u32();
    for (int b = 0; b < n / tr->blck; b++) {
        uint8_t *p = row + (size_t)b * tr->size;
        uint16_t a = st_fp32_to_fp16(st_test_rng_float(-0.01f, 0.01f)),
                 m = st_fp32_to_fp16(st_test_rng_float(-0.05f, 0.05f));
        switch (t) {
        case ST_TYPE_Q2_K:
            memcpy(p + 80, &a, 2);
            memcpy(p + 82, &m, 2);
            break;
        case ST_TYPE_Q3_K: memcpy(p + 108, &a, 2); break;
        case ST_TYPE_Q5_0: memcpy(p, &a, 2); break;
        default: memcpy(p, &a, 2); memcpy(p + 2, &m, 2); /* Q4_1, Q5_1, Q4_K, Q5_K: d then m / dmin */
        }
    }
}

/* every table built into this binary that the CPU can run, ref first */
static const st_kernels_t *s_tables[5];
static int s_n_tables(void) {
    const char *names[] = {"ref", "avx2", "avx512", "neon", "neon-dotprod"};
    int k = 0;
    for (int i = 0; i < 5; i++)
        if (st_kernels_by_name(names[i])) s_tables[k++] = st_kernels_by_name(names[i]);
    return k;
}

Test(kernels_quant, every_table_dequantizes_like_the_format_says) {
    static uint8_t row[9 * 176];
    static float y[9 * 256];
    const int nt = s_n_tables();
    for (int ti = 0; ti < N_TYPES; ti++) {
        const st_type_t t = s_types[ti];
        const st_type_traits_t *tr = st_type_traits(t);
        for (int nb = 1; nb <= 9 * 256 / tr->blck && nb <= 9; nb += 2) {
            const int n = nb * tr->blck;
            st_test_rng_seed(11 * t + nb);
            fill_row(t, row, n);
            for (int k = 0; k < nt; k++) {
                cr_assert_not_null(s_tables[k]->to_float[t], "%s to_float %s", s_tables[k]->name, tr->name);
                s_tables[k]->to_float[t](n, row, y);
                for (int e = 0; e < n; e++) {
                    double mag;
                    const double want = decode(t, row + (size_t)(e / tr->blck) * tr->size, e % tr->blck, &mag);
                    /* ggml rounds scale * sub-scale to float first, then * q, then - min: 3 roundings */
                    cr_assert(fabs(y[e] - want) <= 4 * 0x1p-24 * mag, "%s %s n=%d e=%d: %.9g vs %.9g",
                              s_tables[k]->name, tr->name, n, e, (double)y[e], want);
                }
            }
        }
    }
}

/* Activations: mostly small, a few outliers; one all-zero block in five. */
static void fill_acts(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = st_test_rng_float(-1.0f, 1.0f) * ((st_test_rng_u32() % 16) == 0 ? 8.0f : 1.0f);
    for (int i = 0; i < n; i++)
        if ((i / 32) % 5 == 2) x[i] = 0.0f;
}

/* dot(w, x) in double from the decoded weights and the stored activation
 * blocks; Q8_1 adds m_w * s_x per block as ggml defines it. *mag: sum of |terms|. */
static double dot_double(st_type_t t, const uint8_t *w, const uint8_t *xq, int n, double *mag) {
    const st_type_traits_t *tr = st_type_traits(t), *xr = st_type_traits(tr->vec_dot_type);
    double sum = 0, m = 0;
    for (int e = 0; e < n; e++) {
        const uint8_t *xb = xq + (size_t)(e / xr->blck) * xr->size;
        double xv;
        if (tr->vec_dot_type == ST_TYPE_Q8_K) {
            float d;
            memcpy(&d, xb, 4);
            xv = (double)d * (int8_t)xb[4 + e % 256];
        } else { /* Q8_0: d, qs[32]; Q8_1: d, s, qs[32] */
            const int off = tr->vec_dot_type == ST_TYPE_Q8_1 ? 4 : 2;
            xv = h2d(xb) * (int8_t)xb[off + e % 32];
        }
        const uint8_t *wb = w + (size_t)(e / tr->blck) * tr->size;
        double wmag, wv = decode(t, wb, e % tr->blck, &wmag);
        if (tr->vec_dot_type == ST_TYPE_Q8_1) { /* scale * q only; the minimum comes with s below */
            wv -= h2d(wb + 2);
            if (e % 32 == 0) {
                sum += h2d(wb + 2) * h2d(xb + 2);
                m += fabs(h2d(wb + 2) * h2d(xb + 2));
            }
        }
        sum += wv * xv;
        m += wmag * fabs(xv);
    }
    *mag = m;
    return sum;
}

Test(kernels_quant, every_table_dot_matches_a_double_dot) {
    static uint8_t w[33 * 176], xq[33 * 292];
    static float x[33 * 256];
    const int nt = s_n_tables();
    for (int ti = 0; ti < N_TYPES; ti++) {
        const st_type_t t = s_types[ti];
        const st_type_traits_t *tr = st_type_traits(t);
        for (int nb = 1; nb <= 33; nb += (tr->blck == 32 ? 4 : 1)) { /* up to 33 blocks of 32, 9 super-blocks */
            if (tr->blck == 256 && nb > 9) break;
            const int n = nb * tr->blck;
            st_test_rng_seed(1000 * t + nb);
            fill_row(t, w, n);
            fill_acts(x, n);
            st_kernels_ref.from_float[tr->vec_dot_type](n, x, xq);
            double mag;
            const double want = dot_double(t, w, xq, n, &mag);
            for (int k = 0; k < nt; k++) {
                float got;
                s_tables[k]->vec_dot[t](n, &got, w, xq);
                /* exact integer block sums; the float scaling and the sums of < 100 terms per
                 * lane round: (number of roundings) * 2^-24 * sum|terms| < 1e-5 * sum|terms| */
                cr_assert(fabs(got - want) <= 1e-5 * mag + 1e-30, "%s %s n=%d: %.9g vs %.9g", s_tables[k]->name,
                          tr->name, n, (double)got, want);
            }
        }
    }
}

Test(kernels_quant, zero_weights_or_zero_activations_give_zero) {
    static uint8_t w[4 * 256], xq[4 * 292]; /* Q5_1: 24 B per 32 is the widest row */
    static float x[4 * 256];
    const int nt = s_n_tables();
    for (int ti = 0; ti < N_TYPES; ti++) {
        const st_type_t t = s_types[ti];
        const int n = 4 * 256;
        const st_type_t vt = st_type_traits(t)->vec_dot_type;
        st_test_rng_seed(5 + t);
        memset(w, 0, sizeof w); /* all scales and minimums zero */
        memset(x, 0, sizeof x);
        st_kernels_ref.from_float[vt](n, x, xq);
        for (int k = 0; k < nt; k++) {
            float got = 1.0f;
            s_tables[k]->vec_dot[t](n, &got, w, xq);
            cr_assert_eq(got, 0.0f, "%s %s zero x zero", s_tables[k]->name, st_type_name(t));
            fill_row(t, w, n);
            s_tables[k]->vec_dot[t](n, &got, w, xq); /* random weights, zero activations (d = s = 0) */
            cr_assert_eq(got, 0.0f, "%s %s w x zero", s_tables[k]->name, st_type_name(t));
            memset(w, 0, sizeof w);
        }
    }
}

/* Saturated quants (all bits 0 or all 1, so 5th bits, high bits and 6-bit
 * scales at their extremes) against activations of +-127 with scales of 1:
 * every integer path must hold its sums (int16 pairs and all). Sums reach
 * 2^24 and beyond, so the float order may move the last bit. */
Test(kernels_quant, saturated_blocks_match_ref) {
    static uint8_t w[8 * 256], xq[8 * 292]; /* Q5_1: 24 B per 32 is the widest row */
    const int nt = s_n_tables();
    for (int ti = 0; ti < N_TYPES; ti++) {
        const st_type_t t = s_types[ti];
        const st_type_traits_t *tr = st_type_traits(t), *xr = st_type_traits(tr->vec_dot_type);
        const int n = 8 * 256;
        for (int pattern = 0; pattern < 4; pattern++) {
            memset(w, pattern & 1 ? 0xff : 0x00, sizeof w);
            const int8_t q = pattern & 2 ? 127 : -127;
            for (int b = 0; b < n / tr->blck; b++) { /* scales 1.0 (fp16 0x3c00), minimums -0.5 (0xb800) */
                uint8_t *p = w + (size_t)b * tr->size;
                const uint16_t one = 0x3c00, half = 0xb800;
                switch (t) {
                case ST_TYPE_Q2_K:
                    memcpy(p + 80, &one, 2);
                    memcpy(p + 82, &half, 2);
                    break;
                case ST_TYPE_Q3_K: memcpy(p + 108, &one, 2); break;
                case ST_TYPE_Q5_0: memcpy(p, &one, 2); break;
                default: memcpy(p, &one, 2); memcpy(p + 2, &half, 2);
                }
            }
            for (int b = 0; b < n / xr->blck; b++) {
                uint8_t *p = xq + (size_t)b * xr->size;
                if (tr->vec_dot_type == ST_TYPE_Q8_K) {
                    const float d = 1.0f;
                    memcpy(p, &d, 4);
                    memset(p + 4, (uint8_t)q, 256);
                    for (int g = 0; g < 16; g++) {
                        const int16_t s = (int16_t)(16 * q);
                        memcpy(p + 260 + 2 * g, &s, 2);
                    }
                } else {
                    const int off = tr->vec_dot_type == ST_TYPE_Q8_1 ? 4 : 2;
                    const uint16_t one = 0x3c00, s = st_fp32_to_fp16(32.0f * q);
                    memcpy(p, &one, 2);
                    if (off == 4) memcpy(p + 2, &s, 2);
                    memset(p + off, (uint8_t)q, 32);
                }
            }
            float want;
            st_kernels_ref.vec_dot[t](n, &want, w, xq);
            double mag;
            const double exact = dot_double(t, w, xq, n, &mag);
            cr_assert(fabs(want - exact) <= 1e-6 * mag, "ref %s pattern %d: %.9g vs %.9g", tr->name, pattern,
                      (double)want, exact);
            for (int k = 1; k < nt; k++) {
                float got;
                s_tables[k]->vec_dot[t](n, &got, w, xq);
                cr_assert(fabsf(got - want) <= 1e-6f * fabsf(want), "%s %s pattern %d: %.9g vs %.9g", s_tables[k]->name,
                          tr->name, pattern, (double)got, (double)want);
            }
        }
    }
}

/* ---- Q8_1 activations (ggml quantize_row_q8_1_ref) ---- */

Test(kernels_quant, q8_1_quantize_known_block) {
    /* amax = 127 so d = 1 and q = roundf(x): halves away from zero; s = d * sum(q) */
    float x[32] = {127, -127, 0.5f, -0.5f, 1.5f, 2.5f, -2.5f, 2.49f, 0.49f, -100.2f, 3};
    const int8_t want[32] = {127, -127, 1, -1, 2, 3, -3, 2, 0, -100, 3};
    int sum = 0;
    for (int j = 0; j < 32; j++) sum += want[j];
    cr_assert_eq(sum, -93);
    st_block_q8_1 b;
    st_kernels_ref.from_float[ST_TYPE_Q8_1](32, x, &b);
    cr_assert_eq(b.d, 0x3c00); /* fp16 1.0 */
    cr_assert_eq(b.s, 0xd5d0); /* fp16 -93.0 */
    for (int j = 0; j < 32; j++) cr_assert_eq(b.qs[j], want[j], "j=%d: %d", j, b.qs[j]);
    float y[32];
    st_kernels_ref.to_float[ST_TYPE_Q8_1](32, &b, y);
    for (int j = 0; j < 32; j++) cr_assert_eq(y[j], (float)want[j]);
}

Test(kernels_quant, q8_1_quantize_zero_block) {
    float x[64] = {0};
    x[40] = -3.0f; /* second block not zero */
    st_block_q8_1 b[2];
    memset(b, 0x55, sizeof b);
    st_kernels_ref.from_float[ST_TYPE_Q8_1](64, x, b);
    cr_assert_eq(b[0].d, 0);
    cr_assert_eq(b[0].s, 0);
    for (int j = 0; j < 32; j++) cr_assert_eq(b[0].qs[j], 0);
    cr_assert_eq(b[1].qs[8], -127);
    cr_assert_eq(b[1].s, st_fp32_to_fp16(-127.0f * (3.0f / 127.0f)));
}

/* Random rows: the rules of ggml's reference, checked value by value: d is
 * amax / 127 rounded to fp16, q the nearest integer to x * 127 / amax (|q| <=
 * 127, ties away from zero), s = fp16(sum(q) * amax / 127) with the unrounded d. */
Test(kernels_quant, q8_1_quantize_follows_ggml_rules) {
    static float x[64 * 32];
    static st_block_q8_1 b[64];
    st_test_rng_seed(81);
    fill_acts(x, 64 * 32);
    for (int i = 0; i < 64 * 32; i += 7) x[i] = (float)(int)(x[i] * 100) + 0.5f; /* halves */
    st_kernels_ref.from_float[ST_TYPE_Q8_1](64 * 32, x, b);
    for (int k = 0; k < 64; k++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * k + j]));
        const float d = amax / 127.0f;
        cr_assert_eq(b[k].d, st_fp32_to_fp16(d), "block %d", k);
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            const double v = d != 0.0f ? (double)x[32 * k + j] * (double)(1.0f / d) : 0.0;
            const int q = b[k].qs[j];
            cr_assert(q >= -127 && q <= 127);
            cr_assert(fabs(v - q) <= 0.5 + 1e-5, "block %d j=%d: %g -> %d", k, j, v, q);
            sum += q;
        }
        cr_assert_eq(b[k].s, st_fp32_to_fp16((float)sum * d), "block %d", k);
    }
    /* every table quantizes to the same bits */
    const int nt = s_n_tables();
    for (int t = 1; t < nt; t++) {
        static st_block_q8_1 got[64];
        s_tables[t]->from_float[ST_TYPE_Q8_1](64 * 32, x, got);
        cr_assert(memcmp(got, b, sizeof b) == 0, "%s", s_tables[t]->name);
    }
}

/* The Q3_K, Q4_K, Q5_K and Q6_K matmuls give each (row, token) the bits of the same
 * table's dot product, whatever the token count (chunks of 4 and leftovers)
 * or row list: rows 1..10 in one call (the Arm kernels: groups of 4 rows and
 * a last group of 2), then 5 listed rows (a group of 4 and one of 1), row 0
 * among them. */
static void s_matmul_is_the_dot_product(st_type_t t) {
    enum { NB = 6, ROWS = 11, TOK = 9 };
    static uint8_t w[ROWS * NB * 210], xq[TOK * NB * 292];
    static float x[TOK * NB * 256], y[TOK * ROWS];
    const int n = NB * 256, nt = s_n_tables();
    const size_t wr = st_row_size(t, n), xr = st_row_size(ST_TYPE_Q8_K, n);
    st_test_rng_seed(444 + t);
    for (int r = 0; r < ROWS; r++) {
        if (t == ST_TYPE_Q6_K) { /* random bits, small fp16 d (last 2 bytes of each block) */
            for (size_t i = 0; i < wr; i++) w[r * wr + i] = (uint8_t)st_test_rng_u32();
            for (int b = 0; b < NB; b++) {
                const uint16_t d = st_fp32_to_fp16(st_test_rng_float(-0.002f, 0.002f));
                memcpy(w + r * wr + (size_t)b * 210 + 208, &d, 2);
            }
        } else {
            fill_row(t, w + r * wr, n);
        }
    }
    fill_acts(x, TOK * n);
    for (int k = 0; k < TOK; k++) st_kernels_ref.from_float[ST_TYPE_Q8_K](n, x + (size_t)k * n, xq + k * xr);
    const int32_t list[] = {7, 2, 10, 0, 5};
    for (int k = 0; k < nt; k++) {
        for (int n_tok = 1; n_tok <= TOK; n_tok++) {
            memset(y, 0, sizeof y);
            st_matmul(s_tables[k], t, w, n, 1, ROWS, xq, xr, n_tok, y, ROWS);
            st_matmul_rows(s_tables[k], t, w, n, list, 5, xq, xr, n_tok, y, ROWS); /* same values again */
            for (int i = 0; i < n_tok; i++)
                for (int r = 0; r < ROWS; r++) {
                    float want;
                    s_tables[k]->vec_dot[t](n, &want, w + r * wr, xq + i * xr);
                    cr_assert(memcmp(&want, &y[i * ROWS + r], sizeof want) == 0,
                              "%s %s n_tok %d row %d token %d: %a vs %a", s_tables[k]->name, st_type_name(t), n_tok, r,
                              i, (double)y[i * ROWS + r], (double)want);
                }
        }
    }
}

Test(kernels_quant, q3_k_matmul_is_the_dot_product_bit_for_bit) { s_matmul_is_the_dot_product(ST_TYPE_Q3_K); }
Test(kernels_quant, q4_k_matmul_is_the_dot_product_bit_for_bit) { s_matmul_is_the_dot_product(ST_TYPE_Q4_K); }
Test(kernels_quant, q5_k_matmul_is_the_dot_product_bit_for_bit) { s_matmul_is_the_dot_product(ST_TYPE_Q5_K); }
Test(kernels_quant, q6_k_matmul_is_the_dot_product_bit_for_bit) { s_matmul_is_the_dot_product(ST_TYPE_Q6_K); }
