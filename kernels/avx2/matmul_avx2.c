/* matmul_avx2: Q4_0 weights x Q8_0 activations, 8 rows at a time, any number
 * of tokens, on the weights as stored in the file (no repacked copy).
 *
 * A one-row dot product spends most of its time on per-block overhead: the
 * nibbles are unpacked, two maddubs and a madd reduce 32 products, and the
 * int32 lanes of each block need a float conversion and an FMA of their own.
 * Here 8 consecutive rows are read together and transposed on the fly (one
 * 32-bit group of 4 nibble pairs per row per lane), so that for one block:
 *   - lane j of every vector belongs to row j: the 8 block sums come out of
 *     one madd in row order, with no horizontal reduction;
 *   - the unpacked nibbles are reused by up to 4 tokens;
 *   - the -8 offset of Q4_0 is applied once per block and token, as
 *     8 * sum(y) subtracted from the integer block sum (sum(y) precomputed
 *     per token and block, shared by all rows).
 * Products are exact integers per block, as in the reference; the block sum is
 * scaled by d_w * d_x and accumulated with FMA into the row's lane. Only the
 * float rounding differs from st_vec_dot_q4_0_q8_0_ref (fma, lane order).
 * Rows past the last group of 8 use the one-row AVX2 dot product.
 *
 * int16 range: maddubs of (0..15) x (-128..127) gives pairs within +-3840; eight
 * of them (32 products of one block and row) stay within +-30720 < 32767.
 */
#include "kernels_avx2.h"

#include <assert.h>
#include <immintrin.h>

#define TOK_CHUNK 4  /* tokens sharing one unpack of the weights (registers) */
#define TOK_PASS 64  /* tokens per pass over a group of 8 rows (kept in L1 meanwhile) */
#define BLK_PASS 64  /* blocks per pass (2048 inputs): bounds the per-token tables */

typedef struct {
    float dx[TOK_PASS][BLK_PASS];    /* activation scales as floats */
    int32_t sy8[TOK_PASS][BLK_PASS]; /* 8 * sum of the block's 32 quants */
} tok_tables_t;

/* 8 * sum(y) of one Q8_0 block */
static inline int32_t s_sum8(const st_block_q8_0 *x) {
    const __m256i y = _mm256_loadu_si256((const __m256i *)x->qs);
    const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), y);
    const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return 8 * _mm_cvtsi128_si32(s);
}

/* Scales of block b of 8 rows, row_bytes apart, as 8 floats in row order. */
static inline __m256 s_scales8(const uint8_t *wb, size_t row_bytes) {
    const uint16_t *d0 = (const uint16_t *)wb;
    __m128i h = _mm_cvtsi32_si128(*d0);
    h = _mm_insert_epi16(h, *(const uint16_t *)(wb + row_bytes), 1);
    h = _mm_insert_epi16(h, *(const uint16_t *)(wb + 2 * row_bytes), 2);
    h = _mm_insert_epi16(h, *(const uint16_t *)(wb + 3 * row_bytes), 3);
    h = _mm_insert_epi16(h, *(const uint16_t *)(wb + 4 * row_bytes), 4);
    h = _mm_insert_epi16(h, *(const uint16_t *)(wb + 5 * row_bytes), 5);
    h = _mm_insert_epi16(h, *(const uint16_t *)(wb + 6 * row_bytes), 6);
    h = _mm_insert_epi16(h, *(const uint16_t *)(wb + 7 * row_bytes), 7);
    return _mm256_cvtph_ps(h);
}

/* 8 rows x NT tokens over blocks [0, nb) of the current pass; acc[t] lane j = row j. */
static inline void s_rows8(const uint8_t *w, size_t row_bytes, int nb, const st_block_q8_0 *const *xt,
                           const float (*dx)[BLK_PASS], const int32_t (*sy8)[BLK_PASS], int NT, __m256 *acc) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    /* the 8 rows are one contiguous range: prefetch the next group's as we go, a
     * block's share (8 x 18 bytes) per step, so DRAM streams while we compute */
    const uint8_t *pf = w + 8 * row_bytes;
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = w + (size_t)b * sizeof(st_block_q4_0);
        _mm_prefetch((const char *)pf + (size_t)b * 144, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + (size_t)b * 144 + 64, _MM_HINT_T0);
        _mm_prefetch((const char *)pf + (size_t)b * 144 + 128, _MM_HINT_T0);
        const uint8_t *q = wb + 2;
        /* rows j and j+4 in the two 128-bit halves, then a 4x4 transpose of dwords per half */
        const __m256i a0 = _mm256_loadu2_m128i((const __m128i *)(q + 4 * row_bytes), (const __m128i *)q);
        const __m256i a1 = _mm256_loadu2_m128i((const __m128i *)(q + 5 * row_bytes), (const __m128i *)(q + row_bytes));
        const __m256i a2 = _mm256_loadu2_m128i((const __m128i *)(q + 6 * row_bytes), (const __m128i *)(q + 2 * row_bytes));
        const __m256i a3 = _mm256_loadu2_m128i((const __m128i *)(q + 7 * row_bytes), (const __m128i *)(q + 3 * row_bytes));
        const __m256i t0 = _mm256_unpacklo_epi32(a0, a1), t1 = _mm256_unpackhi_epi32(a0, a1);
        const __m256i t2 = _mm256_unpacklo_epi32(a2, a3), t3 = _mm256_unpackhi_epi32(a2, a3);
        __m256i g[4]; /* g[k] lane j: bytes 4k..4k+3 of row j's nibbles */
        g[0] = _mm256_unpacklo_epi64(t0, t2);
        g[1] = _mm256_unpackhi_epi64(t0, t2);
        g[2] = _mm256_unpacklo_epi64(t1, t3);
        g[3] = _mm256_unpackhi_epi64(t1, t3);
        __m256i s16[TOK_CHUNK];
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m256i lo = _mm256_and_si256(g[k], m4);                        /* elements 4k..4k+3 */
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(g[k], 4), m4);  /* elements 16+4k.. */
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const int32_t *y = (const int32_t *)xt[t][b].qs;
                s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(y[k])));
                s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(y[4 + k])));
            }
        }
        const __m256 dw = s_scales8(wb, row_bytes);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const __m256i si = _mm256_sub_epi32(_mm256_madd_epi16(s16[t], ones), _mm256_set1_epi32(sy8[t][b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_mul_ps(dw, _mm256_set1_ps(dx[t][b])), acc[t]);
        }
    }
}

/* The same for one token count known at compile time, so acc and s16 stay in registers. */
#define ROWS8_NT(NT)                                                                                              \
    static void s_rows8_##NT(const uint8_t *w, size_t row_bytes, int nb, const st_block_q8_0 *const *xt,        \
                             const float (*dx)[BLK_PASS], const int32_t (*sy8)[BLK_PASS], __m256 *acc) {         \
        s_rows8(w, row_bytes, nb, xt, dx, sy8, NT, acc);                                                         \
    }
ROWS8_NT(1)
ROWS8_NT(2)
ROWS8_NT(3)
ROWS8_NT(4)

void st_matmul_q4_0_q8_0_avx2(int n_in, const void *vw, int r0, int r1, const void *vx, size_t x_stride, int n_tok,
                              float *y, size_t y_stride) {
    assert(n_in % ST_QK4_0 == 0);
    const int nb_all = n_in / ST_QK4_0;
    const size_t row_bytes = (size_t)nb_all * sizeof(st_block_q4_0);
    const uint8_t *w = vw;
    const uint8_t *x = vx;
    tok_tables_t tt;
    const st_block_q8_0 *xt[TOK_PASS];
    for (int b0 = 0; b0 < nb_all; b0 += BLK_PASS) {
        const int nb = nb_all - b0 < BLK_PASS ? nb_all - b0 : BLK_PASS;
        const bool first = b0 == 0;
        for (int tp = 0; tp < n_tok; tp += TOK_PASS) {
            const int ntp = n_tok - tp < TOK_PASS ? n_tok - tp : TOK_PASS;
            for (int t = 0; t < ntp; t++) {
                xt[t] = (const st_block_q8_0 *)(x + (size_t)(tp + t) * x_stride) + b0;
                for (int b = 0; b < nb; b++) {
                    tt.dx[t][b] = _cvtsh_ss(xt[t][b].d);
                    tt.sy8[t][b] = s_sum8(&xt[t][b]);
                }
            }
            int r = r0;
            for (; r + 8 <= r1; r += 8) {
                const uint8_t *wr = w + (size_t)r * row_bytes + (size_t)b0 * sizeof(st_block_q4_0);
                for (int t0 = 0; t0 < ntp; t0 += TOK_CHUNK) {
                    const int nt = ntp - t0 < TOK_CHUNK ? ntp - t0 : TOK_CHUNK;
                    __m256 acc[TOK_CHUNK];
                    const st_block_q8_0 *const *x4 = xt + t0;
                    switch (nt) {
                    case 1: s_rows8_1(wr, row_bytes, nb, x4, tt.dx + t0, tt.sy8 + t0, acc); break;
                    case 2: s_rows8_2(wr, row_bytes, nb, x4, tt.dx + t0, tt.sy8 + t0, acc); break;
                    case 3: s_rows8_3(wr, row_bytes, nb, x4, tt.dx + t0, tt.sy8 + t0, acc); break;
                    default: s_rows8_4(wr, row_bytes, nb, x4, tt.dx + t0, tt.sy8 + t0, acc); break;
                    }
                    for (int t = 0; t < nt; t++) {
                        float *yr = y + (size_t)(tp + t0 + t) * y_stride + r;
                        _mm256_storeu_ps(yr, first ? acc[t] : _mm256_add_ps(acc[t], _mm256_loadu_ps(yr)));
                    }
                }
            }
            for (; r < r1; r++) { /* leftover rows, one at a time */
                const uint8_t *wr = w + (size_t)r * row_bytes + (size_t)b0 * sizeof(st_block_q4_0);
                for (int t = 0; t < ntp; t++) {
                    float s;
                    st_vec_dot_q4_0_q8_0_avx2(nb * ST_QK4_0, &s, wr, xt[t]);
                    float *yr = y + (size_t)(tp + t) * y_stride + r;
                    *yr = first ? s : *yr + s;
                }
            }
        }
    }
}
