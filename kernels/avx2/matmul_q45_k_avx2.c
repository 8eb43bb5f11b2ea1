/* matmul_q45_k_avx2: Q4_K and Q5_K weights x Q8_K activations, one row at a
 * time and up to 4 tokens per pass over the row.
 *
 * The dot product of kquants_avx2.c spends a good part of each super-block on
 * the weights alone: the 12 packed bytes of 6-bit scales and minimums, two
 * fp16 conversions, 8 nibble unpacks. Here a super-block of one row is
 * unpacked once, 64 quants at a time, and used by every token of the pass
 * (Q4_K_M files are mostly Q4_K, Q5_K_M files Q5_K: prompt processing and
 * batched decoding run through this). Q5_K adds the fifth bit of each quant
 * from qh, as the dot product does. The minimum terms (per token: 8 madds of the minimums with
 * Q8_K's block sums) stay per token.
 *
 * For each (row, token) the integer super-block sums are exact and the float
 * steps are those of st_vec_dot_q4_k/q5_k_q8_k_avx2 (acc = fma(d, sum, acc) per
 * super-block in 8 lanes, the minimum term in a scalar, then the reduction),
 * so the result is that dot product's, bit for bit: it cannot depend on how
 * callers split rows or tokens.
 */
#include "kernels_avx2.h"
#include "simd_avx2.h"

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

/* 8 scales (bytes 0-7) and 8 minimums (bytes 8-15) of a super-block, as in kquants_avx2.c */
static inline __m128i s_scale_min_k4(const uint8_t *q) {
    uint32_t u[3];
    memcpy(u, q, 12);
    const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    return _mm_set_epi32((int)(((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4)), (int)(u[1] & m6),
                         (int)((u[2] & m4) | (((u[0] >> 6) & m2) << 4)), (int)(u[0] & m6));
}

/* sum_g min_g * (bsums[2g] + bsums[2g+1]), as in kquants_avx2.c */
static inline int s_min_sum(__m128i mins16, const st_block_q8_k *x) {
    const __m256i bs = _mm256_loadu_si256((const __m256i *)x->bsums);
    const __m128i bs2 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    const __m128i pm = _mm_madd_epi16(mins16, bs2);
    __m128i t = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0x4e));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    return _mm_cvtsi128_si32(t);
}

/* One row of super-blocks (stride bytes each: d, dmin, scales, then qh at
 * qh_off when >= 0, qs at qs_off) against nt (1..4) tokens; x[t] is token
 * t's first block. */
static inline __attribute__((always_inline)) void s_row_q45k(const uint8_t *base, size_t stride, size_t qs_off,
                                                             ptrdiff_t qh_off, int nb, const st_block_q8_k *const *x,
                                                             int nt, float *out) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256 acc[ST_KQ_TOK_CHUNK];
    float summ[ST_KQ_TOK_CHUNK];
    for (int t = 0; t < ST_KQ_TOK_CHUNK; t++) acc[t] = _mm256_setzero_ps(), summ[t] = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = base + (size_t)b * stride;
        uint16_t d16, dmin16;
        memcpy(&d16, blk, 2);
        memcpy(&dmin16, blk + 2, 2);
        const __m128i smn = s_scale_min_k4(blk + 4);
        const __m128i mins16 = _mm256_extracti128_si256(_mm256_cvtepu8_epi16(smn), 1);
        const __m256i hbits =
            qh_off >= 0 ? _mm256_loadu_si256((const __m256i *)(blk + qh_off)) : _mm256_setzero_si256();
        uint8_t sc[16];
        _mm_storeu_si128((__m128i *)sc, smn);
        __m256i sumi[ST_KQ_TOK_CHUNK];
        for (int t = 0; t < ST_KQ_TOK_CHUNK; t++) sumi[t] = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(blk + qs_off + 32 * j));
            __m256i lo = _mm256_and_si256(bits, m4), hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if (qh_off >= 0) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one), 4));
                hi = _mm256_or_si256(hi,
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one), 4));
            }
            const __m256i sl = _mm256_set1_epi16(sc[2 * j]), sh = _mm256_set1_epi16(sc[2 * j + 1]);
            for (int t = 0; t < nt; t++) {
                const int8_t *y = x[t][b].qs + 64 * j;
                const __m256i pl = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)y));
                const __m256i ph = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 32)));
                /* same association as the dot product: (sumi + lo part) + hi part */
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(pl, sl));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(ph, sh));
            }
        }
        const float dw = _cvtsh_ss(d16), dminw = _cvtsh_ss(dmin16);
        for (int t = 0; t < nt; t++) {
            const float d = dw * x[t][b].d, dmin = dminw * x[t][b].d;
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            summ[t] -= dmin * (float)s_min_sum(mins16, &x[t][b]);
        }
    }
    for (int t = 0; t < nt; t++) out[t] = st_hsum_avx2(acc[t]) + summ[t];
}

static void s_row_q4k(const void *w, int nb, const st_block_q8_k *const *x, int nt, float *out) {
    s_row_q45k(w, sizeof(st_block_q4_k), offsetof(st_block_q4_k, qs), -1, nb, x, nt, out);
}

static void s_row_q5k(const void *w, int nb, const st_block_q8_k *const *x, int nt, float *out) {
    s_row_q45k(w, sizeof(st_block_q5_k), offsetof(st_block_q5_k, qs), (ptrdiff_t)offsetof(st_block_q5_k, qh), nb, x, nt,
               out);
}

void st_matmul_q4_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq_matmul_avx2(s_row_q4k, sizeof(st_block_q4_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q5_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq_matmul_avx2(s_row_q5k, sizeof(st_block_q5_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}
