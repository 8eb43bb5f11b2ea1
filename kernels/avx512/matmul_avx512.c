/* matmul_avx512: the Q4_0 x Q8_0 matmul of matmul_avx2.c with VNNI block sums.
 *
 * vpdpbusd adds, in each 32-bit lane, the four products of unsigned bytes
 * (the nibbles, 0..15) with signed bytes (the Q8_0 quants) to an int32
 * accumulator, without saturation: one instruction per 4 nibble bytes of 8
 * rows replaces maddubs + add (+ the final madd) of AVX2, and the sums are
 * exact int32 from the start. The vectors stay 256-bit (AVX-512VL): the
 * 8-row transpose and everything around it are shared with AVX2
 * (matmul_q4_0_q8_0.h), and 256-bit operations avoid the frequency drop of
 * 512-bit ones on older Intel parts; Zen 4 splits 512-bit ones in two anyway.
 * AVX-512 has 32 vector registers, so all tokens' sums are kept in order
 * without the AVX2 file's register juggling.
 */
#include "kernels_avx512.h"

#include <immintrin.h>

#include "../avx2/matmul_q4_0_q8_0.h"

static inline __attribute__((always_inline)) void s_block_sums(const __m256i g[4], const st_block_q8_0 *const *xt,
                                                               int b, int NT, __m256i *si) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) si[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        const __m256i lo = _mm256_and_si256(g[k], m4);                       /* elements 4k..4k+3 */
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(g[k], 4), m4); /* elements 16+4k.. */
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const int8_t *y = xt[t][b].qs;
            si[t] = _mm256_dpbusd_epi32(si[t], lo, _mm256_set1_epi32(st_load_i32(y + 4 * k)));
            si[t] = _mm256_dpbusd_epi32(si[t], hi, _mm256_set1_epi32(st_load_i32(y + 16 + 4 * k)));
        }
    }
}

/* ---- packed Q4_0, 16 rows per group (st_pack) ------------------------------
 *
 * Block b of a group of 16 rows is 288 bytes: the 16 fp16 scales, then four
 * chunks of 64 bytes, lane j of chunk c = bytes 4c..4c+3 of row j. One
 * 512-bit load is one chunk of all 16 rows: no transpose and no scale
 * gathering, which cost the plain kernel more than its products (about 2.5x
 * slower on rows in L2: bench/README.md, "Kernel measurements"), so a token's
 * matmul can run at the memory's speed. Each (row, token) takes the
 * plain kernel's steps: the same exact int32 block sums, acc = fma(sum - 8 *
 * sum(y), d_w * d_x, acc) block after block from 0 in each pass of BLK_PASS
 * blocks, the passes added in order; so the bits are the plain kernel's.
 * The stream is prefetched PACK_AHEAD bytes ahead, as the 8-row kernel's. */

static inline __attribute__((always_inline)) void s_rows16(const uint8_t *p, bool pf, int nb,
                                                           const st_block_q8_0 *const *xt, const float (*dx)[BLK_PASS],
                                                           const int32_t (*sy8)[BLK_PASS], int NT, __m512 *acc) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++, p += 16 * sizeof(st_block_q4_0)) {
        if (pf)
#pragma GCC unroll 5
            for (int o = 0; o < 320; o += 64) _mm_prefetch((const char *)p + PACK_AHEAD + o, _MM_HINT_T0);
        __m512i si[TOK_CHUNK];
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) si[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            const __m512i g = _mm512_loadu_si512((const void *)(p + 32 + 64 * k));
            const __m512i lo = _mm512_and_si512(g, m4);                       /* elements 4k..4k+3 */
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(g, 4), m4); /* elements 16+4k.. */
#pragma GCC unroll 8
            for (int t = 0; t < NT; t++) {
                const int8_t *y = xt[t][b].qs;
                si[t] = _mm512_dpbusd_epi32(si[t], lo, _mm512_set1_epi32(st_load_i32(y + 4 * k)));
                si[t] = _mm512_dpbusd_epi32(si[t], hi, _mm512_set1_epi32(st_load_i32(y + 16 + 4 * k)));
            }
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const __m512i s = _mm512_sub_epi32(si[t], _mm512_set1_epi32(sy8[t][b]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(dx[t][b])), acc[t]);
        }
    }
}

/* One function per token count, so acc stays in registers. */
#define ROWS16(NT)                                                                                                     \
    static void s_rows16_##NT(const uint8_t *p, bool pf, int nb, const st_block_q8_0 *const *xt,                       \
                              const float(*dx)[BLK_PASS], const int32_t(*sy8)[BLK_PASS], float *y, size_t y_stride,    \
                              bool first) {                                                                            \
        __m512 acc[NT];                                                                                                \
        s_rows16(p, pf, nb, xt, dx, sy8, NT, acc);                                                                     \
        for (int t = 0; t < NT; t++) {                                                                                 \
            float *yr = y + (size_t)t * y_stride;                                                                      \
            _mm512_storeu_ps(yr, first ? acc[t] : _mm512_add_ps(acc[t], _mm512_loadu_ps(yr)));                         \
        }                                                                                                              \
    }
ROWS16(1)
ROWS16(2)
ROWS16(3)
ROWS16(4)
ROWS16(5)
ROWS16(6)
ROWS16(7)
ROWS16(8)
static const packed_rows_fn s_rows16_fns[TOK_CHUNK] = {s_rows16_1, s_rows16_2, s_rows16_3, s_rows16_4,
                                                       s_rows16_5, s_rows16_6, s_rows16_7, s_rows16_8};

void st_matmul_q4_0x16_q8_0_avx512(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                   size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q4_0_packed(16, s_rows16_fns, n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q4_0_q8_0_avx512(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q4_0_q8_0(n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}
