/* kquants_avx2: Q2_K, Q3_K, Q4_K and Q5_K x Q8_K dot products with AVX2,
 * FMA and F16C (layouts in kernels/ref/kquants_ref.c).
 *
 * Each super-block is unpacked 32 quants at a time into unsigned bytes
 * (Q2_K 0..3, Q3_K's low 2 bits, Q4_K 0..15, Q5_K 0..31), multiplied with
 * the activations by maddubs (pairs within +-7936) and weighted by the group
 * scales with madd, so each super-block's sum is an exact int32 as in the
 * reference. Q3_K's -4 (high bit clear) is a second maddubs of 4 with the
 * same activations; the minimums of Q2_K/Q4_K/Q5_K are sum_g min_g * bsums_g
 * from Q8_K's precomputed sums of 16 activations.
 *
 * For Q2_K the int32 lanes and the float steps (d_w * d_x times the integer
 * sums, into 8 float lanes with FMA) are those of ggml's AVX2 kernel, which
 * llama.cpp runs for these weights on AVX2 machines: the same bits, not only
 * the same value up to rounding. Q3_K, Q4_K and Q5_K take the float steps of
 * their 8-row matmuls (matmul_q3_k_avx2.c, matmul_q45_k_avx2.c), which have
 * no lanes within a row: the exact integer sums of a super-block, then one
 * FMA (two for Q4_K/Q5_K: scales and minimums). Against the reference, only
 * the float rounding order differs.
 */
#include "kernels_avx2.h"
#include "simd_avx2.h"

#include <assert.h>
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

static inline int s_hsum_i32(__m256i v) {
    __m128i r = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0x4e));
    r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0xb1));
    return _mm_cvtsi128_si32(r);
}

/* a * b + c rounded once, as the lanes' _mm256_fmadd_ps (not left to -ffp-contract) */
static inline float s_fma(float a, float b, float c) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

/* For 16 int8 group scales sc8: chunk c of 32 quants covers groups 2c and 2c+1;
 * the result holds scale 2c in int16 lanes 0-7 and 2c+1 in lanes 8-15, to madd
 * with maddubs's 16 pair sums of that chunk. */
static inline __m256i s_pick_scales(__m128i sc8, int c) {
    const __m128i pick = _mm_set_epi64x(0x0101010101010101ll * (2 * c + 1), 0x0101010101010101ll * (2 * c));
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
}

/* Q2_K and Q3_K share the quant layout: chunk c = 4h + k holds bits 2k..2k+1 of
 * the 32 bytes qs[32h..]; the high bit of Q3_K is bit c of hmask[l]. */
void st_vec_dot_q2_k_q8_k_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q2_k *w = vw;
    const st_block_q8_k *x = vx;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / ST_QK_K; b++) {
        const __m128i sm = _mm_loadu_si128((const __m128i *)w[b].scales);
        const __m128i sc8 = _mm_and_si128(sm, m4), mn8 = _mm_and_si128(_mm_srli_epi16(sm, 4), m4);
        const __m256i bs = _mm256_loadu_si256((const __m256i *)x[b].bsums);
        const __m256i pm = _mm256_madd_epi16(_mm256_cvtepi8_epi16(mn8), bs); /* lane i: groups 2i, 2i+1 */
        const float dall = x[b].d * _cvtsh_ss(w[b].d), dmin = -x[b].d * _cvtsh_ss(w[b].dmin);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(pm), acc);
        const int8_t *y = x[b].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * h));
            for (int k = 0; k < 4; k++, y += 32) {
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
                const __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)y));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s_pick_scales(sc8, 4 * h + k)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dall), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = st_hsum_avx2(acc);
}

/* The 16 scales of a Q3_K super-block as signed bytes (-32..31). */
static inline __m128i s_scales_q3k(const uint8_t *q) {
    uint32_t a[3];
    memcpy(a, q, 12);
    const uint32_t m2 = 0x03030303u, m4 = 0x0f0f0f0fu;
    const __m128i v = _mm_set_epi32(
        (int)(((a[1] >> 4) & m4) | (((a[2] >> 6) & m2) << 4)), (int)(((a[0] >> 4) & m4) | (((a[2] >> 4) & m2) << 4)),
        (int)((a[1] & m4) | (((a[2] >> 2) & m2) << 4)), (int)((a[0] & m4) | ((a[2] & m2) << 4)));
    return _mm_sub_epi8(v, _mm_set1_epi8(32));
}

void st_vec_dot_q3_k_q8_k_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q3_k *w = vw;
    const st_block_q8_k *x = vx;
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    float acc = 0.0f;
    for (int b = 0; b < n / ST_QK_K; b++) {
        const __m128i sc8 = s_scales_q3k(w[b].scales);
        const __m256i hm = _mm256_loadu_si256((const __m256i *)w[b].hmask);
        const int8_t *y = x[b].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * h));
            for (int k = 0; k < 4; k++, y += 32) {
                const int c = 4 * h + k;
                /* q = low2 - (high bit clear ? 4 : 0): (low2 . y) - (4 . y) where the bit is clear,
                 * pairs within +-1792 */
                const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
                const __m256i four = _mm256_slli_epi16(_mm256_andnot_si256(_mm256_srli_epi16(hm, c), one), 2);
                const __m256i yv = _mm256_loadu_si256((const __m256i *)y);
                const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(lo, yv), _mm256_maddubs_epi16(four, yv));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, s_pick_scales(sc8, c)));
            }
        }
        /* the float steps of matmul_q3_k_avx2.c's lanes: the exact sum, then one FMA */
        acc = s_fma(x[b].d * _cvtsh_ss(w[b].d), (float)s_hsum_i32(sumi), acc);
    }
    *s = acc;
}

/* The 8 scales and 8 minimums of a Q4_K/Q5_K super-block, as bytes 0-7 and 8-15. */
static inline __m128i s_scale_min_k4(const uint8_t *q) {
    uint32_t u[4];
    memcpy(u, q, 12);
    const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    const uint32_t mins_hi = ((u[2] >> 4) & m4) | (((u[1] >> 6) & m2) << 4);
    const uint32_t mins_lo = u[1] & m6;
    const uint32_t sc_hi = (u[2] & m4) | (((u[0] >> 6) & m2) << 4);
    const uint32_t sc_lo = u[0] & m6;
    return _mm_set_epi32((int)mins_hi, (int)mins_lo, (int)sc_hi, (int)sc_lo);
}

/* Q4_K (qh NULL) or Q5_K: 64 elements per step j, the low nibbles of
 * qs[32j..32j+31] (group 2j) then the high ones (group 2j+1). */
static inline __attribute__((always_inline)) float s_dot_q45k(int n, const uint8_t *base, size_t stride, size_t qs_off,
                                                              ptrdiff_t qh_off, const st_block_q8_k *x) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    float acc = 0.0f, accm = 0.0f;
    for (int b = 0; b < n / ST_QK_K; b++) {
        const uint8_t *blk = base + (size_t)b * stride;
        uint16_t d16, dmin16;
        memcpy(&d16, blk, 2);
        memcpy(&dmin16, blk + 2, 2);
        const __m128i smn = s_scale_min_k4(blk + 4);
        const __m256i sm16 = _mm256_cvtepu8_epi16(smn); /* scales in lanes 0-7, mins in 8-15 */
        const __m256i bs = _mm256_loadu_si256((const __m256i *)x[b].bsums);
        const __m128i bs2 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        const __m128i pm = _mm_madd_epi16(_mm256_extracti128_si256(sm16, 1), bs2);
        __m128i t = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 0x4e));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
        const int summs = _mm_cvtsi128_si32(t);
        const uint8_t *qs = blk + qs_off;
        const __m256i hbits =
            qh_off >= 0 ? _mm256_loadu_si256((const __m256i *)(blk + qh_off)) : _mm256_setzero_si256();
        uint8_t sc[16];
        _mm_storeu_si128((__m128i *)sc, smn);
        const int8_t *y = x[b].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++, y += 64) {
            const __m256i bits = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
            __m256i lo = _mm256_and_si256(bits, m4), hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if (qh_off >= 0) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j), one), 4));
                hi = _mm256_or_si256(hi,
                                     _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * j + 1), one), 4));
            }
            const __m256i pl = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)y));
            const __m256i ph = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(y + 32)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(pl, _mm256_set1_epi16(sc[2 * j])));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(ph, _mm256_set1_epi16(sc[2 * j + 1])));
        }
        /* the float steps of matmul_q45_k_avx2.c's lanes: exact sums, then one FMA each */
        const float d = _cvtsh_ss(d16) * x[b].d, dmin = _cvtsh_ss(dmin16) * x[b].d;
        acc = s_fma(d, (float)s_hsum_i32(sumi), acc);
        accm = s_fma(dmin, (float)summs, accm);
    }
    return acc - accm;
}

void st_vec_dot_q4_k_q8_k_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    *s = s_dot_q45k(n, vw, sizeof(st_block_q4_k), offsetof(st_block_q4_k, qs), -1, vx);
}

void st_vec_dot_q5_k_q8_k_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    *s = s_dot_q45k(n, vw, sizeof(st_block_q5_k), offsetof(st_block_q5_k, qs), (ptrdiff_t)offsetof(st_block_q5_k, qh),
                    vx);
}
