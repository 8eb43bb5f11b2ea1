/* matmul_q3_k_avx2: Q3_K weights x Q8_K activations, 8 rows per step (row j
 * in lane j, st_kq8_matmul_avx2) and up to 4 tokens per pass over them.
 *
 * Q3_K_M files are mostly Q3_K. Row by row the dot product is compute-bound
 * (far below memory speed per thread: bench/README.md, "Kernel measurements"):
 * per 32 quants it rebuilds them, runs
 * two maddubs (the -4 of a clear high bit is a second product) and picks a
 * scale pair. Here the pieces of 8 rows are transposed (st_kq8_transpose16:
 * lane j = 4 consecutive bytes of row j), and each quant is rebuilt unsigned,
 * u = low 2 bits | high bit << 2 (0..7), so that q = u - 4:
 *   sum_g sc_g sum q y = sum_g sc_g (u . y) - 4 sum_g sc_g bsums_g,
 * one maddubs per 4 quants of 8 rows, 4 of them (int16 sums within +-7168)
 * per madd with the 16-quant group's scales (lane j = row j's), and the -4
 * term from Q8_K's sums of 16 activations, 8 madds per token. The 16 packed
 * 6-bit scales of 8 rows are unpacked by a few vector ops on the transposed
 * bytes 94..109 of the block (the last 2 of qs, the 12 scale bytes, d: in
 * bounds, unlike 16 bytes from the scales).
 *
 * Per (row, token) each super-block's sum is the exact int32 of the reference,
 * and the float steps are those of st_vec_dot_q3_k_q8_k_avx2 (acc = fma(d_w *
 * d_x, sum, acc) per super-block, from 0), so the result is that dot
 * product's, bit for bit, whatever the grouping of rows and tokens.
 */
#include "kernels_avx2.h"
#include "simd_avx2.h"

#include <immintrin.h>
#include <stddef.h>

enum { HM = offsetof(st_block_q3_k, hmask), QS = offsetof(st_block_q3_k, qs), WIN = offsetof(st_block_q3_k, d) - 14 };

/* Bit `bit` of each byte of v moved to bit 2, other bits cleared (16-bit
 * shifts: the bits that cross between bytes land outside bit 2). */
static inline __attribute__((always_inline)) __m256i s_bit_to_2(__m256i v, int bit) {
    const __m256i m = _mm256_set1_epi8(0x04);
    if (bit < 2) return _mm256_and_si256(_mm256_slli_epi16(v, 2 - bit), m);
    if (bit > 2) return _mm256_and_si256(_mm256_srli_epi16(v, bit - 2), m);
    return _mm256_and_si256(v, m);
}

static inline __attribute__((always_inline)) void s_group(const uint8_t *const *p0, const uint8_t *const *pn, int nb,
                                                          const st_block_q8_k *const *x, const int NT, __m256 *out) {
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256 acc[ST_KQ8_TOK_CHUNK];
    const uint8_t *p[8]; /* the rows' current super-blocks */
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) p[j] = p0[j];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        st_kq8_prefetch(pn, b, nb, sizeof(st_block_q3_k));
        /* w[k] lane j: bytes 94 + 4k.. of row j; a0..a2: the 12 scale bytes, dv: d */
        __m256i w[4];
        st_kq8_transpose16(p, WIN, w);
        const __m256i a0 = _mm256_or_si256(_mm256_srli_epi32(w[0], 16), _mm256_slli_epi32(w[1], 16));
        const __m256i a1 = _mm256_or_si256(_mm256_srli_epi32(w[1], 16), _mm256_slli_epi32(w[2], 16));
        const __m256i a2 = _mm256_or_si256(_mm256_srli_epi32(w[2], 16), _mm256_slli_epi32(w[3], 16));
        const __m256i dv = _mm256_permute4x64_epi64(_mm256_packus_epi32(_mm256_srli_epi32(w[3], 16), w[3]), 0x08);
        const __m256 dw = _mm256_cvtph_ps(_mm256_castsi256_si128(dv));
        /* sc[i] byte g of lane j: scale 4i + g of row j, -32..31 (ggml's packing: low
         * nibbles of bytes 0-7, high nibbles of 0-7, 2-bit pairs of bytes 8-11) */
        const __m256i m32 = _mm256_set1_epi8(32);
        __m256i sc[4];
        sc[0] = _mm256_or_si256(_mm256_and_si256(a0, m4), _mm256_and_si256(_mm256_slli_epi16(a2, 4), m30));
        sc[1] = _mm256_or_si256(_mm256_and_si256(a1, m4), _mm256_and_si256(_mm256_slli_epi16(a2, 2), m30));
        sc[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a0, 4), m4), _mm256_and_si256(a2, m30));
        sc[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a1, 4), m4),
                                _mm256_and_si256(_mm256_srli_epi16(a2, 2), m30));
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) sc[i] = _mm256_sub_epi8(sc[i], m32);
        __m256i hm[8]; /* lane j: hmask bytes 4g.. of row j: the high bits of quants l = 4g.. of every chunk */
        st_kq8_transpose16(p, HM, hm);
        st_kq8_transpose16(p, HM + 16, hm + 4);
        __m256i isum[ST_KQ8_TOK_CHUNK];
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            /* the -4 term: 4 * sum_g sc_g bsums_g, pairs of scales (2m, 2m+1) */
            __m256i ofs = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int m = 0; m < 8; m++)
                ofs = _mm256_add_epi32(ofs,
                                       _mm256_madd_epi16(st_kq8_scale_pair(sc[m / 2], 2 * (m % 2), 2 * (m % 2) + 1, 6),
                                                         _mm256_set1_epi32(st_load_i32(&x[t][b].bsums[2 * m]))));
            isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(), ofs);
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i q[8]; /* lane j: qs bytes 32h + 4g.. of row j */
            st_kq8_transpose16(p, QS + 32 * (size_t)h, q);
            st_kq8_transpose16(p, QS + 32 * (size_t)h + 16, q + 4);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) { /* chunk c: quants 128h + 32k + l, groups 2c (l < 16) and 2c + 1 */
                const int c = 4 * h + k;
#pragma GCC unroll 2
                for (int half = 0; half < 2; half++) {
                    const int g16 = 2 * c + half;
                    const __m256i scp = st_kq8_scale_pair(sc[g16 / 4], g16 % 4, g16 % 4, 8);
                    __m256i s16[ST_KQ8_TOK_CHUNK];
#pragma GCC unroll 4
                    for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
                    for (int g = 4 * half; g < 4 * half + 4; g++) {
                        const __m256i u =
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q[g], 2 * k), m3), s_bit_to_2(hm[g], c));
#pragma GCC unroll 4
                        for (int t = 0; t < NT; t++) {
                            const int8_t *y = x[t][b].qs + 128 * h + 32 * k + 4 * g;
                            s16[t] =
                                _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(u, _mm256_set1_epi32(st_load_i32(y))));
                        }
                    }
#pragma GCC unroll 4
                    for (int t = 0; t < NT; t++) isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s16[t], scp));
                }
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x[t][b].d)), _mm256_cvtepi32_ps(isum[t]), acc[t]);
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) p[j] += sizeof(st_block_q3_k);
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) out[t] = acc[t];
}

static void s_group_q3k(const uint8_t *const *p, const uint8_t *const *pn, int nb, const st_block_q8_k *const *x,
                        int nt, __m256 *out) {
    switch (nt) {
    case 1: s_group(p, pn, nb, x, 1, out); break;
    case 2: s_group(p, pn, nb, x, 2, out); break;
    case 3: s_group(p, pn, nb, x, 3, out); break;
    default: s_group(p, pn, nb, x, 4, out); break;
    }
}

void st_matmul_q3_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq8_matmul_avx2(s_group_q3k, sizeof(st_block_q3_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}
