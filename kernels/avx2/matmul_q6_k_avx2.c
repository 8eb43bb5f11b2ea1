/* matmul_q6_k_avx2: Q6_K weights x Q8_K activations, 8 rows per step (row j
 * in lane j, st_kq8_matmul_avx2) and up to 4 tokens per pass over them.
 *
 * Q4_K_M files keep the output head, half of attn_v and of the experts' down
 * matrices in Q6_K, so this runs at every decoded token. Row by row, most of a
 * super-block's work was on the weights' side (a scale pick per 32 quants, a
 * horizontal sum per row); here the 16-byte pieces of ql, qh and scales of 8
 * rows are transposed (st_kq8_transpose16) so that each 32-bit lane holds 4
 * consecutive bytes of one row. The 6-bit quants of 4 elements per lane are
 * rebuilt from ql and qh with the row code's masks (unsigned, 0..63), and
 * maddubs multiplies them with 4 broadcast activation bytes. Two maddubs (8
 * products per int16, within +-32256) go into one madd with the sub-block's
 * scales, (sc_j, sc_j) in lane j, built once per super-block by pshufb from
 * the transposed scales. The -32 offset of the quants is 32 * sum_g sc_g *
 * bsums_g (Q8_K's sums of 16 activations): 8 madds per token with pairs of
 * scales times 32. The next group's rows are prefetched step by step
 * (st_kq8_prefetch). On packed weights (st_pack) the pieces are loaded
 * already transposed and the 8 d side by side, with the same results.
 *
 * Per (row, token) each super-block's sum is the exact int32 of the reference,
 * and the float steps are those of st_vec_dot_q6_k_q8_k_avx2 (acc = fma(d_w *
 * d_x, sum, acc) per super-block, from 0), so the result is that dot
 * product's, bit for bit, whatever the grouping of rows and tokens.
 */
#include "kernels_avx2.h"
#include "simd_avx2.h"

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

enum { QH = offsetof(st_block_q6_k, qh), SC = offsetof(st_block_q6_k, scales), D = offsetof(st_block_q6_k, d) };

static inline __attribute__((always_inline)) void s_group(const uint8_t *const *p0, const uint8_t *const *pn, int nb,
                                                          bool packed, const st_block_q8_k *const *x, const int NT,
                                                          __m256 *out) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256 acc[ST_KQ8_TOK_CHUNK];
    const uint8_t *p[8]; /* the rows' current super-blocks */
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) p[j] = p0[j];
#pragma GCC unroll 16
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        if (!packed)
            st_kq8_prefetch(pn, b, nb, sizeof(st_block_q6_k));
        else if (pn)
            st_kq8_prefetch_packed(p[0], 0, sizeof(st_block_q6_k)); /* p[0] walks: step b is at its start */
        __m256i s8[4];
        st_kq8_load16(p, packed, SC, s8);
        __m256i isum[ST_KQ8_TOK_CHUNK];
#pragma GCC unroll 16
        for (int t = 0; t < NT; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 16
        for (int h = 0; h < 2; h++) {
#pragma GCC unroll 16
            for (int o = 0; o < 32; o += 16) {
                /* lane j: ql[l..l+3], ql[l+32..], qh[l..] of half h, l = o + 4k */
                __m256i a[4], c[4], e[4];
                st_kq8_load16(p, packed, 64 * h + o, a);
                st_kq8_load16(p, packed, 64 * h + 32 + o, c);
                st_kq8_load16(p, packed, QH + 32 * h + o, e);
                /* sc[s] lane j = (c, c) as int16, c the scale of sub-block 8h + 2s + o/16 of row j
                 * (pshufb puts c in the high byte of both words, srai sign-extends) */
                __m256i sc[4];
#pragma GCC unroll 16
                for (int s = 0; s < 4; s++) {
                    const int i = (2 * s + o / 16) % 4;
                    sc[s] = st_kq8_scale_pair(s8[2 * h + s / 2], i, i, 8);
                }
#pragma GCC unroll 16
                for (int kk = 0; kk < 4; kk += 2) {
                    /* q[s][i]: elements 128h + 32s + o + 4(kk + i) .. + 3, sub-block 8h + 2s + o/16 */
                    __m256i q[4][2];
#pragma GCC unroll 16
                    for (int i = 0; i < 2; i++) {
                        const int k = kk + i;
                        q[0][i] = _mm256_or_si256(_mm256_and_si256(a[k], m4),
                                                  _mm256_and_si256(_mm256_slli_epi16(e[k], 4), m30));
                        q[1][i] = _mm256_or_si256(_mm256_and_si256(c[k], m4),
                                                  _mm256_and_si256(_mm256_slli_epi16(e[k], 2), m30));
                        q[2][i] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a[k], 4), m4),
                                                  _mm256_and_si256(e[k], m30));
                        q[3][i] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c[k], 4), m4),
                                                  _mm256_and_si256(_mm256_srli_epi16(e[k], 2), m30));
                    }
#pragma GCC unroll 16
                    for (int t = 0; t < NT; t++) {
                        const int8_t *y = x[t][b].qs + 128 * h + o + 4 * kk;
#pragma GCC unroll 16
                        for (int s = 0; s < 4; s++) {
                            const __m256i p0 =
                                _mm256_maddubs_epi16(q[s][0], _mm256_set1_epi32(st_load_i32(y + 32 * s)));
                            const __m256i p1 =
                                _mm256_maddubs_epi16(q[s][1], _mm256_set1_epi32(st_load_i32(y + 32 * s + 4)));
                            isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_add_epi16(p0, p1), sc[s]));
                        }
                    }
                }
            }
        }
        __m128i d16;
        if (packed) { /* the 8 rows' d, side by side after the transposed pieces */
            d16 = _mm_loadu_si128((const __m128i *)(p[0] + 8 * D));
        } else {
            d16 = _mm_cvtsi32_si128(st_load_u16(p[0] + D));
            d16 = _mm_insert_epi16(d16, st_load_u16(p[1] + D), 1);
            d16 = _mm_insert_epi16(d16, st_load_u16(p[2] + D), 2);
            d16 = _mm_insert_epi16(d16, st_load_u16(p[3] + D), 3);
            d16 = _mm_insert_epi16(d16, st_load_u16(p[4] + D), 4);
            d16 = _mm_insert_epi16(d16, st_load_u16(p[5] + D), 5);
            d16 = _mm_insert_epi16(d16, st_load_u16(p[6] + D), 6);
            d16 = _mm_insert_epi16(d16, st_load_u16(p[7] + D), 7);
        }
        const __m256 dw = _mm256_cvtph_ps(d16);
        /* sc32[m] lane j = 32 * (scale 2m, scale 2m + 1) of row j, for the offsets */
        __m256i sc32[8];
#pragma GCC unroll 16
        for (int m = 0; m < 8; m++) sc32[m] = st_kq8_scale_pair(s8[m / 2], 2 * (m % 2), 2 * (m % 2) + 1, 3);
#pragma GCC unroll 16
        for (int t = 0; t < NT; t++) {
            /* the -32 offset of the quants: 32 * sum_g scale_g bsums_g */
            __m256i ofs = _mm256_setzero_si256();
#pragma GCC unroll 16
            for (int m = 0; m < 8; m++)
                ofs = _mm256_add_epi32(
                    ofs, _mm256_madd_epi16(sc32[m], _mm256_set1_epi32(st_load_i32(&x[t][b].bsums[2 * m]))));
            const __m256i s = _mm256_sub_epi32(isum[t], ofs);
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x[t][b].d)), _mm256_cvtepi32_ps(s), acc[t]);
        }
        if (packed) {
            p[0] += 8 * sizeof(st_block_q6_k);
        } else {
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) p[j] += sizeof(st_block_q6_k);
        }
    }
#pragma GCC unroll 16
    for (int t = 0; t < NT; t++) out[t] = acc[t];
}

static void s_group_q6k(const uint8_t *const *p, const uint8_t *const *pn, int nb, const st_block_q8_k *const *x,
                        int nt, __m256 *out) {
    switch (nt) {
    case 1: s_group(p, pn, nb, false, x, 1, out); break;
    case 2: s_group(p, pn, nb, false, x, 2, out); break;
    case 3: s_group(p, pn, nb, false, x, 3, out); break;
    default: s_group(p, pn, nb, false, x, 4, out); break;
    }
}

static void s_group_q6k_packed(const uint8_t *const *p, const uint8_t *const *pn, int nb, const st_block_q8_k *const *x,
                               int nt, __m256 *out) {
    switch (nt) {
    case 1: s_group(p, pn, nb, true, x, 1, out); break;
    case 2: s_group(p, pn, nb, true, x, 2, out); break;
    case 3: s_group(p, pn, nb, true, x, 3, out); break;
    default: s_group(p, pn, nb, true, x, 4, out); break;
    }
}

void st_matmul_q6_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq8_matmul_avx2(s_group_q6k, sizeof(st_block_q6_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q6_k_x8_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                 size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq8_matmul_packed_avx2(s_group_q6k_packed, sizeof(st_block_q6_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y,
                              y_stride);
}
