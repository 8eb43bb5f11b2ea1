/* quant_avx2: activation quantization and dequantization with AVX2 + F16C.
 *
 * Every function here gives the same bits as its reference (the tests compare
 * with memcmp): the same float operations in the same order per element, the
 * same rounding (roundf for Q8_0, nearest even for Q8_K), the same choice of
 * maximum. ggml's own AVX2 Q8_0 quantizer rounds differently (127/amax, ties
 * to even); we keep the reference behaviour so both tables agree exactly.
 */
#include "kernels_avx2.h"

#include <assert.h>
#include <immintrin.h>
#include <string.h>

static inline __m256 s_abs(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

static inline float s_hmax(__m256 v) {
    __m128 r = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_max_ps(r, _mm_movehl_ps(r, r));
    r = _mm_max_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* roundf: to nearest, halves away from zero. v - trunc(v) is exact. */
static inline __m256 s_round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 up = _mm256_cmp_ps(s_abs(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_set1_ps(-0.0f)));
    return _mm256_add_ps(t, _mm256_and_ps(up, one));
}

/* 4 x 8 int32 (each within int8) -> 32 int8 in order */
static inline __m256i s_pack_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

void st_from_float_q8_0_avx2(int n, const float *x, void *vy) {
    assert(n % ST_QK8_0 == 0);
    st_block_q8_0 *y = vy;
    for (int b = 0; b < n / ST_QK8_0; b++, x += ST_QK8_0) {
        __m256 v[4];
        for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        const float amax =
            s_hmax(_mm256_max_ps(_mm256_max_ps(s_abs(v[0]), s_abs(v[1])), _mm256_max_ps(s_abs(v[2]), s_abs(v[3]))));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(s_round_away(_mm256_mul_ps(v[k], _mm256_set1_ps(id))));
        _mm256_storeu_si256((__m256i *)y[b].qs, s_pack_i8(q[0], q[1], q[2], q[3]));
    }
}

/* sum of the 8 lanes of a and of b: returns {sum a, sum b} in lanes 0, 1 */
static inline __m128i s_hsum2_epi32(__m256i a, __m256i b) {
    __m256i h = _mm256_hadd_epi32(a, b); /* a01 a23 b01 b23 | a45 a67 b45 b67 */
    h = _mm256_hadd_epi32(h, h);         /* a0123 b0123 .. | a4567 b4567 .. */
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

void st_from_float_q8_k_avx2(int n, const float *x, void *vy) {
    assert(n % ST_QK_K == 0);
    st_block_q8_k *y = vy;
    for (int b = 0; b < n / ST_QK_K; b++, x += ST_QK_K) {
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < ST_QK_K; k += 8) m = _mm256_max_ps(m, s_abs(_mm256_loadu_ps(x + k)));
        const float amax = s_hmax(m);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        /* the reference keeps the first element of largest magnitude, with its sign */
        float max = 0.0f;
        for (int k = 0; k < ST_QK_K; k += 8) {
            const int hit =
                _mm256_movemask_ps(_mm256_cmp_ps(s_abs(_mm256_loadu_ps(x + k)), _mm256_set1_ps(amax), _CMP_EQ_OQ));
            if (hit) {
                max = x[k + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i cap = _mm256_set1_epi32(127);
        for (int k = 0; k < ST_QK_K; k += 32) {
            __m256i q[4];
            for (int j = 0; j < 4; j++) /* cvtps rounds to nearest even, like rintf */
                q[j] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + k + 8 * j))), cap);
            _mm256_storeu_si256((__m256i *)(y[b].qs + k), s_pack_i8(q[0], q[1], q[2], q[3]));
            const __m128i sums = s_hsum2_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            y[b].bsums[k / 16] = (int16_t)_mm_cvtsi128_si32(sums);
            y[b].bsums[k / 16 + 1] = (int16_t)_mm_extract_epi32(sums, 1);
        }
        y[b].d = 1.0f / iscale;
    }
}

void st_from_float_f16_avx2(int n, const float *x, void *vy) {
    uint16_t *y = vy;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = st_fp32_to_fp16(x[i]); /* same bits as F16C (tested) */
}

void st_to_float_f16_avx2(int n, const void *vx, float *y) {
    const uint16_t *x = vx;
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    for (; i < n; i++) y[i] = st_fp16_to_fp32(x[i]);
}

void st_axpy_f32_avx2(int n, float a, const void *vx, float *y) {
    const float *x = vx;
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) y[i] += a * x[i];
}

void st_axpy_f16_avx2(int n, float a, const void *vx, float *y) {
    const uint16_t *x = vx;
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(va, v)));
    }
    for (; i < n; i++) y[i] += a * st_fp16_to_fp32(x[i]);
}

void st_to_float_bf16_avx2(int n, const void *vx, float *y) {
    const uint16_t *x = vx;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
        _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < n; i++) y[i] = st_bf16_to_fp32(x[i]);
}

/* 32 int8 -> 4 x 8 floats times d, stored in order */
static inline void s_store_scaled(__m256i q, float d, float *y) {
    const __m256 vd = _mm256_set1_ps(d);
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), vd));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), vd));
    _mm256_storeu_ps(y + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), vd));
    _mm256_storeu_ps(y + 24, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), vd));
}

void st_to_float_q4_0_avx2(int n, const void *vx, float *y) {
    assert(n % ST_QK4_0 == 0);
    const st_block_q4_0 *x = vx;
    for (int b = 0; b < n / ST_QK4_0; b++, y += ST_QK4_0) {
        const __m128i t = _mm_loadu_si128((const __m128i *)x[b].qs);
        __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f));
        s_store_scaled(_mm256_sub_epi8(q, _mm256_set1_epi8(8)), _cvtsh_ss(x[b].d), y);
    }
}

void st_to_float_q8_0_avx2(int n, const void *vx, float *y) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q8_0 *x = vx;
    for (int b = 0; b < n / ST_QK8_0; b++, y += ST_QK8_0)
        s_store_scaled(_mm256_loadu_si256((const __m256i *)x[b].qs), _cvtsh_ss(x[b].d), y);
}
