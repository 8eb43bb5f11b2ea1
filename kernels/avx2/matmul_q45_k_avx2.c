/* matmul_q45_k_avx2: Q4_K and Q5_K weights x Q8_K activations, 8 rows per
 * step with row j in lane j, up to 4 tokens per pass over the group.
 *
 * Q4_K_M files are mostly Q4_K, Q5_K_M files Q5_K; decode reads every weight
 * once per token, so at one token this kernel must keep up with memory. The
 * one-row dot product cannot: per super-block it unpacks 12 bytes of 6-bit
 * scales and minimums in scalar code, applies each sub-block scale with a
 * multiply of its own and ends each row with a horizontal sum (below memory
 * speed per thread: bench/README.md, "Kernel measurements"). Here the 8 rows
 * of a group are transposed on the fly (st_kq8_transpose16: lane j = 4
 * consecutive bytes of row j), so that
 *   - the 6-bit scales and minimums of 8 rows are unpacked by a few vector
 *     ops, and spread into per-sub-block vectors (lane j = row j's scale) by
 *     one shuffle each;
 *   - a 32-element sub-block costs 8 maddubs for 8 rows (the activation's 4
 *     bytes broadcast, as in the Q4_0 matmul) and one madd with its scales;
 *   - the minimum term of 8 rows is 4 madds with Q8_K's block sums.
 * A lane's integer sums per super-block (isum: scales times quant products;
 * msum: minimums times block sums) are exact, then the float steps are those
 * of st_vec_dot_q4_k/q5_k_q8_k_avx2: acc = fma(d_w * d_x, isum, acc),
 * accm = fma(dmin_w * d_x, msum, accm), result acc - accm. So each (row,
 * token) gets the dot product's bits, whatever the group or the row list.
 * Q5_K adds the fifth bit of each quant from qh, transposed the same way.
 * On packed weights (st_pack) the pieces are loaded already transposed
 * (st_kq8_load16), with the same results.
 */
#include "kernels_avx2.h"
#include "simd_avx2.h"

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

/* Bit `bit` of each byte of v moved to bit 4, other bits cleared (16-bit
 * shifts: the bits that cross between bytes land outside bit 4). */
static inline __attribute__((always_inline)) __m256i s_bit_to_4(__m256i v, int bit) {
    const __m256i m = _mm256_set1_epi8(0x10);
    if (bit < 4) return _mm256_and_si256(_mm256_slli_epi16(v, 4 - bit), m);
    if (bit > 4) return _mm256_and_si256(_mm256_srli_epi16(v, bit - 4), m);
    return _mm256_and_si256(v, m);
}

/* Lane j of v holds 4 bytes of row j; dword i of each half becomes
 * (byte 4i+a, byte 4i+b) as two int16: a madd operand per row. */
static inline __attribute__((always_inline)) __m256i s_pair16(__m256i v, int a, int b) {
    const __m128i sel = _mm_setr_epi8((char)a, -1, (char)b, -1, (char)(4 + a), -1, (char)(4 + b), -1, (char)(8 + a), -1,
                                      (char)(8 + b), -1, (char)(12 + a), -1, (char)(12 + b), -1);
    return _mm256_shuffle_epi8(v, _mm256_broadcastsi128_si256(sel));
}

static inline __attribute__((always_inline)) void s_group_q45k(const uint8_t *const *p, const uint8_t *const *pn,
                                                               int nb, size_t stride, size_t qs_off, ptrdiff_t qh_off,
                                                               bool packed, const st_block_q8_k *const *x, int NT,
                                                               __m256 *out) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m6 = _mm256_set1_epi8(0x3f), m30 = _mm256_set1_epi8(0x30);
    /* (d, dmin) fp16 pairs of 4 rows per half -> 4 d then 4 dmin per half */
    const __m256i pick_d =
        _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
    /* Q5_K: bytes of a 32-element group may reach 4 * 7936 in int16, Q4_K 8 * 3840 */
    const int flush = qh_off >= 0 ? 4 : 8;
    __m256 acc[ST_KQ8_TOK_CHUNK], accm[ST_KQ8_TOK_CHUNK];
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) acc[t] = accm[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const size_t off = (size_t)b * stride;
        if (!packed)
            st_kq8_prefetch(pn, b, nb, stride);
        else if (pn)
            st_kq8_prefetch_packed(p[0], b, stride);
        __m256i h[4]; /* h[0]: (d, dmin); h[1..3]: the 12 scale bytes */
        st_kq8_load16(p, packed, off, h);
        const __m256i dd = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(h[0], pick_d), 0xD8);
        const __m256 dw = _mm256_cvtph_ps(_mm256_castsi256_si128(dd));
        const __m256 dminw = _mm256_cvtph_ps(_mm256_extracti128_si256(dd, 1));
        /* ggml's get_scale_min_k4 on 8 rows: bytes g of sc03 = scale g, of sc47 = scale 4+g, ... */
        const __m256i sc03 = _mm256_and_si256(h[1], m6), m03 = _mm256_and_si256(h[2], m6);
        const __m256i sc47 =
            _mm256_or_si256(_mm256_and_si256(h[3], m4), _mm256_and_si256(_mm256_srli_epi16(h[1], 2), m30));
        const __m256i m47 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(h[3], 4), m4),
                                            _mm256_and_si256(_mm256_srli_epi16(h[2], 2), m30));
        __m256i qh[8];
        if (qh_off >= 0) {
            st_kq8_load16(p, packed, off + (size_t)qh_off, qh);
            st_kq8_load16(p, packed, off + (size_t)qh_off + 16, qh + 4);
        }
        __m256i isum[ST_KQ8_TOK_CHUNK], msum[ST_KQ8_TOK_CHUNK];
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            /* minimums: sub-block sums of y in int16 pairs (2g', 2g'+1), one madd per pair */
            const __m256i bs = _mm256_loadu_si256((const __m256i *)x[t][b].bsums);
            const __m128i ys = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            const __m256i ms01 =
                _mm256_add_epi32(_mm256_madd_epi16(s_pair16(m03, 0, 1), _mm256_set1_epi32(_mm_extract_epi32(ys, 0))),
                                 _mm256_madd_epi16(s_pair16(m03, 2, 3), _mm256_set1_epi32(_mm_extract_epi32(ys, 1))));
            const __m256i ms23 =
                _mm256_add_epi32(_mm256_madd_epi16(s_pair16(m47, 0, 1), _mm256_set1_epi32(_mm_extract_epi32(ys, 2))),
                                 _mm256_madd_epi16(s_pair16(m47, 2, 3), _mm256_set1_epi32(_mm_extract_epi32(ys, 3))));
            msum[t] = _mm256_add_epi32(ms01, ms23);
            isum[t] = _mm256_setzero_si256();
        }
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) { /* 64 elements: sub-blocks 2j (low nibbles) and 2j+1 (high) */
            const __m256i sl = s_pair16(j < 2 ? sc03 : sc47, 2 * j % 4, 2 * j % 4);
            const __m256i sh = s_pair16(j < 2 ? sc03 : sc47, 2 * j % 4 + 1, 2 * j % 4 + 1);
            __m256i g[8];
            st_kq8_load16(p, packed, off + qs_off + 32 * (size_t)j, g);
            st_kq8_load16(p, packed, off + qs_off + 32 * (size_t)j + 16, g + 4);
            __m256i s_lo[ST_KQ8_TOK_CHUNK], s_hi[ST_KQ8_TOK_CHUNK];
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) s_lo[t] = s_hi[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                __m256i lo = _mm256_and_si256(g[k], m4), hi = _mm256_and_si256(_mm256_srli_epi16(g[k], 4), m4);
                if (qh_off >= 0) {
                    lo = _mm256_or_si256(lo, s_bit_to_4(qh[k], 2 * j));
                    hi = _mm256_or_si256(hi, s_bit_to_4(qh[k], 2 * j + 1));
                }
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const int8_t *y = x[t][b].qs + 64 * j + 4 * k;
                    s_lo[t] = _mm256_add_epi16(s_lo[t], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(st_load_i32(y))));
                    s_hi[t] =
                        _mm256_add_epi16(s_hi[t], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(st_load_i32(y + 32))));
                }
                if ((k + 1) % flush == 0) {
#pragma GCC unroll 4
                    for (int t = 0; t < NT; t++) {
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s_lo[t], sl));
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(s_hi[t], sh));
                        s_lo[t] = s_hi[t] = _mm256_setzero_si256();
                    }
                }
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const __m256 dx = _mm256_set1_ps(x[t][b].d);
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(isum[t]), acc[t]);
            accm[t] = _mm256_fmadd_ps(_mm256_mul_ps(dminw, dx), _mm256_cvtepi32_ps(msum[t]), accm[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) out[t] = _mm256_sub_ps(acc[t], accm[t]);
}

/* One function per token count (and layout), so the sums stay in registers. */
#define GROUP(NAME, T, QH, PACKED, NT)                                                                                 \
    static void NAME(const uint8_t *const *p, const uint8_t *const *pn, int nb, const st_block_q8_k *const *x, int nt, \
                     __m256 *out) {                                                                                    \
        (void)nt;                                                                                                      \
        s_group_q45k(p, pn, nb, sizeof(T), offsetof(T, qs), QH, PACKED, x, NT, out);                                   \
    }
#define QH5 (ptrdiff_t) offsetof(st_block_q5_k, qh)
GROUP(s_q4k_1, st_block_q4_k, -1, false, 1)
GROUP(s_q4k_2, st_block_q4_k, -1, false, 2)
GROUP(s_q4k_3, st_block_q4_k, -1, false, 3)
GROUP(s_q4k_4, st_block_q4_k, -1, false, 4)
GROUP(s_q5k_1, st_block_q5_k, QH5, false, 1)
GROUP(s_q5k_2, st_block_q5_k, QH5, false, 2)
GROUP(s_q5k_3, st_block_q5_k, QH5, false, 3)
GROUP(s_q5k_4, st_block_q5_k, QH5, false, 4)
GROUP(s_q4kp_1, st_block_q4_k, -1, true, 1)
GROUP(s_q4kp_2, st_block_q4_k, -1, true, 2)
GROUP(s_q4kp_3, st_block_q4_k, -1, true, 3)
GROUP(s_q4kp_4, st_block_q4_k, -1, true, 4)
GROUP(s_q5kp_1, st_block_q5_k, QH5, true, 1)
GROUP(s_q5kp_2, st_block_q5_k, QH5, true, 2)
GROUP(s_q5kp_3, st_block_q5_k, QH5, true, 3)
GROUP(s_q5kp_4, st_block_q5_k, QH5, true, 4)

static const st_kq8_group_fn s_q4k[2][ST_KQ8_TOK_CHUNK] = {{s_q4k_1, s_q4k_2, s_q4k_3, s_q4k_4},
                                                           {s_q4kp_1, s_q4kp_2, s_q4kp_3, s_q4kp_4}};
static const st_kq8_group_fn s_q5k[2][ST_KQ8_TOK_CHUNK] = {{s_q5k_1, s_q5k_2, s_q5k_3, s_q5k_4},
                                                           {s_q5kp_1, s_q5kp_2, s_q5kp_3, s_q5kp_4}};

static void s_group_q4k(const uint8_t *const *p, const uint8_t *const *pn, int nb, const st_block_q8_k *const *x,
                        int nt, __m256 *out) {
    s_q4k[0][nt - 1](p, pn, nb, x, nt, out);
}
static void s_group_q4k_packed(const uint8_t *const *p, const uint8_t *const *pn, int nb, const st_block_q8_k *const *x,
                               int nt, __m256 *out) {
    s_q4k[1][nt - 1](p, pn, nb, x, nt, out);
}
static void s_group_q5k(const uint8_t *const *p, const uint8_t *const *pn, int nb, const st_block_q8_k *const *x,
                        int nt, __m256 *out) {
    s_q5k[0][nt - 1](p, pn, nb, x, nt, out);
}
static void s_group_q5k_packed(const uint8_t *const *p, const uint8_t *const *pn, int nb, const st_block_q8_k *const *x,
                               int nt, __m256 *out) {
    s_q5k[1][nt - 1](p, pn, nb, x, nt, out);
}

void st_matmul_q4_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq8_matmul_avx2(s_group_q4k, sizeof(st_block_q4_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q5_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq8_matmul_avx2(s_group_q5k, sizeof(st_block_q5_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q4_k_x8_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                 size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq8_matmul_packed_avx2(s_group_q4k_packed, sizeof(st_block_q4_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y,
                              y_stride);
}

void st_matmul_q5_k_x8_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                 size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq8_matmul_packed_avx2(s_group_q5k_packed, sizeof(st_block_q5_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y,
                              y_stride);
}
