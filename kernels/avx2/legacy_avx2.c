/* legacy_avx2: Q4_1 x Q8_1, Q5_0 x Q8_0 and Q5_1 x Q8_1 dot products with
 * AVX2, FMA and F16C (layouts in kernels/ref/legacy_ref.c).
 *
 * The quants are unpacked to unsigned bytes (0..15 or 0..31, the fifth bit
 * spread from its 32-bit mask), multiplied with the signed activations by
 * maddubs (pairs within +-7936, no int16 overflow) and summed to int32 by
 * madd: each block's integer sum is exact, as in the reference. Q5_0's -16
 * offset is subtracted as 16 * y, also with maddubs, so any y works (-128
 * too). The minimum of Q4_1/Q5_1 adds m_w * s_x per block, summed in a
 * scalar apart from the 8 float lanes, as ggml's AVX2 kernel does. Only the
 * order of the float additions differs from the reference.
 */
#include "kernels_avx2.h"
#include "simd_avx2.h"

#include <assert.h>
#include <immintrin.h>
#include <string.h>

/* 32 nibbles: low nibbles are elements 0-15, high nibbles 16-31 */
static inline __m256i s_nibbles(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f));
}

/* byte j = 0x10 where bit j of the little-endian u32 at qh is set, else 0 */
static inline __m256i s_fifth_bits(const uint8_t *qh) {
    uint32_t u;
    memcpy(&u, qh, sizeof u);
    const __m256i spread =
        _mm256_shuffle_epi8(_mm256_set1_epi32((int)u),
                            _mm256_setr_epi64x(0, 0x0101010101010101ll, 0x0202020202020202ll, 0x0303030303030303ll));
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201ll);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

/* sum of unsigned q x signed y over 32 bytes, as 8 int32 lanes in float */
static inline __m256 s_dot_u8_i8(__m256i q, __m256i y) {
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1)));
}

void st_vec_dot_q4_1_q8_1_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q4_1 *w = vw;
    const st_block_q8_1 *x = vx;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int b = 0; b < n / ST_QK8_0; b++) {
        summs += _cvtsh_ss(w[b].m) * _cvtsh_ss(x[b].s);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        const __m256 p = s_dot_u8_i8(s_nibbles(w[b].qs), _mm256_loadu_si256((const __m256i *)x[b].qs));
        acc = _mm256_fmadd_ps(d, p, acc);
    }
    *s = st_hsum_avx2(acc) + summs;
}

void st_vec_dot_q5_0_q8_0_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q5_0 *w = vw;
    const st_block_q8_0 *x = vx;
    const __m256i sixteen = _mm256_set1_epi8(16), ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / ST_QK8_0; b++) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        const __m256i q = _mm256_or_si256(s_nibbles(w[b].qs), s_fifth_bits(w[b].qh)); /* 0..31 */
        const __m256i y = _mm256_loadu_si256((const __m256i *)x[b].qs);
        const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q, y), _mm256_maddubs_epi16(sixteen, y));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones)), acc);
    }
    *s = st_hsum_avx2(acc);
}

void st_vec_dot_q5_1_q8_1_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q5_1 *w = vw;
    const st_block_q8_1 *x = vx;
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int b = 0; b < n / ST_QK8_0; b++) {
        summs += _cvtsh_ss(w[b].m) * _cvtsh_ss(x[b].s);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        const __m256i q = _mm256_or_si256(s_nibbles(w[b].qs), s_fifth_bits(w[b].qh));
        const __m256 p = s_dot_u8_i8(q, _mm256_loadu_si256((const __m256i *)x[b].qs));
        acc = _mm256_fmadd_ps(d, p, acc);
    }
    *s = st_hsum_avx2(acc) + summs;
}
