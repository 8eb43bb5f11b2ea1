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

void st_matmul_q4_0_q8_0_avx512(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q4_0_q8_0(n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}
