/* vec_dot_avx2: dot products with AVX2, FMA and F16C.
 *
 * Quantized blocks: 8-bit products are summed in pairs with maddubs (unsigned
 * x signed -> int16), then in fours with madd (-> int32), so each block's sum
 * is an exact integer as in the reference; the block sum is scaled by the two
 * scales and accumulated with FMA into 8 float lanes, reduced once at the end.
 * Only the order of the float additions differs from the reference.
 * Float formats: 4 independent FMA accumulators of 8 lanes hide the FMA latency.
 */
#include "kernels_avx2.h"
#include "simd_avx2.h"

#include <assert.h>
#include <immintrin.h>

void st_vec_dot_f32_f32_avx2(int n, float *s, const void *vw, const void *vx) {
    const float *w = vw, *x = vx;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float sum = st_hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) sum += w[i] * x[i];
    *s = sum;
}

static inline __m256 s_load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

void st_vec_dot_f16_f16_avx2(int n, float *s, const void *vw, const void *vx) {
    const uint16_t *w = vw, *x = vx;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(s_load_f16(w + i), s_load_f16(x + i), a0);
        a1 = _mm256_fmadd_ps(s_load_f16(w + i + 8), s_load_f16(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(s_load_f16(w + i + 16), s_load_f16(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(s_load_f16(w + i + 24), s_load_f16(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(s_load_f16(w + i), s_load_f16(x + i), a0);
    float sum = st_hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) sum += _cvtsh_ss(w[i]) * _cvtsh_ss(x[i]);
    *s = sum;
}

static inline __m256 s_load_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

void st_vec_dot_bf16_bf16_avx2(int n, float *s, const void *vw, const void *vx) {
    const uint16_t *w = vw, *x = vx;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(s_load_bf16(w + i), s_load_bf16(x + i), a0);
        a1 = _mm256_fmadd_ps(s_load_bf16(w + i + 8), s_load_bf16(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(s_load_bf16(w + i + 16), s_load_bf16(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(s_load_bf16(w + i + 24), s_load_bf16(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(s_load_bf16(w + i), s_load_bf16(x + i), a0);
    float sum = st_hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) sum += st_bf16_to_fp32(w[i]) * st_bf16_to_fp32(x[i]);
    *s = sum;
}

/* 32 nibbles of a Q4_0 block as bytes 0..15: low nibbles in bytes 0-15, high in 16-31 */
static inline __m256i s_nibbles(const uint8_t *qs) {
    const __m128i t = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f));
}

/* sum over a Q4_0 x Q8_0 block as 8 int32 lanes, as floats: (q - 8) . y computed as
 * q . y - 8 . y, both with maddubs (q and 8 unsigned, y signed: any y, -128 too) */
static inline __m256 s_block_q4_0_q8_0(const st_block_q4_0 *w, const st_block_q8_0 *x) {
    const __m256i q = s_nibbles(w->qs), y = _mm256_loadu_si256((const __m256i *)x->qs);
    const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, y), _mm256_maddubs_epi16(_mm256_set1_epi8(8), y));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

void st_vec_dot_q4_0_q8_0_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q4_0 *w = vw;
    const st_block_q8_0 *x = vx;
    const int nb = n / ST_QK8_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) { /* two independent chains for ILP */
        const __m256 d0 = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        const __m256 d1 = _mm256_set1_ps(_cvtsh_ss(w[b + 1].d) * _cvtsh_ss(x[b + 1].d));
        acc0 = _mm256_fmadd_ps(d0, s_block_q4_0_q8_0(&w[b], &x[b]), acc0);
        acc1 = _mm256_fmadd_ps(d1, s_block_q4_0_q8_0(&w[b + 1], &x[b + 1]), acc1);
    }
    if (b < nb) {
        const __m256 d0 = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        acc0 = _mm256_fmadd_ps(d0, s_block_q4_0_q8_0(&w[b], &x[b]), acc0);
    }
    *s = st_hsum_avx2(_mm256_add_ps(acc0, acc1));
}

/* signed x signed bytes via |w| (unsigned) x (y with w's sign); like ggml this needs
 * w, y != -128, which Q8_0 quantizers never write */
static inline __m256 s_block_q8_0_q8_0(const st_block_q8_0 *w, const st_block_q8_0 *x) {
    const __m256i a = _mm256_loadu_si256((const __m256i *)w->qs), y = _mm256_loadu_si256((const __m256i *)x->qs);
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(y, a));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

void st_vec_dot_q8_0_q8_0_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q8_0 *w = vw, *x = vx;
    const int nb = n / ST_QK8_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        const __m256 d0 = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        const __m256 d1 = _mm256_set1_ps(_cvtsh_ss(w[b + 1].d) * _cvtsh_ss(x[b + 1].d));
        acc0 = _mm256_fmadd_ps(d0, s_block_q8_0_q8_0(&w[b], &x[b]), acc0);
        acc1 = _mm256_fmadd_ps(d1, s_block_q8_0_q8_0(&w[b + 1], &x[b + 1]), acc1);
    }
    if (b < nb) {
        const __m256 d0 = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        acc0 = _mm256_fmadd_ps(d0, s_block_q8_0_q8_0(&w[b], &x[b]), acc0);
    }
    *s = st_hsum_avx2(_mm256_add_ps(acc0, acc1));
}

/* Q6_K x Q8_K. The 6-bit quants q are rebuilt unsigned (0..63) 32 at a time;
 * sum_g scale_g sum (q - 32) y = sum_g scale_g (q . y) - 32 sum_g scale_g bsums_g,
 * so the -32 offset costs one madd per super-block thanks to Q8_K's bsums.
 * maddubs(q, y) pairs stay within int16 (2 * 63 * 128). Float steps: per
 * super-block one exact int32 sum, then acc = fma(d_w * d_x, sum, acc) in a
 * scalar from 0, those of the 8-row matmul (matmul_q6_k_avx2.c), which gives
 * each row this function's bits. */
void st_vec_dot_q6_k_q8_k_avx2(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q6_k *w = vw;
    const st_block_q8_k *x = vx;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    /* chunk c of 32 quants covers groups 2c and 2c+1: bytes 0-7 pick scale 2c, 8-15 pick 2c+1 */
    __m128i pick[8];
    for (int c = 0; c < 8; c++)
        pick[c] = _mm_set_epi64x(0x0101010101010101ll * (2 * c + 1), 0x0101010101010101ll * (2 * c));
    __m128 acc = _mm_setzero_ps();
    for (int b = 0; b < n / ST_QK_K; b++) {
        const float d = _cvtsh_ss(w[b].d) * x[b].d;
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)w[b].scales);
        const __m256i offset =
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc8), _mm256_loadu_si256((const __m256i *)x[b].bsums));
        const uint8_t *ql = w[b].ql, *qh = w[b].qh;
        const int8_t *y = x[b].qs;
        __m256i sumi = _mm256_setzero_si256();
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, y += 128) {
            const __m256i h = _mm256_loadu_si256((const __m256i *)qh);
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
            for (int k = 0; k < 4; k++) {
                const __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)(y + 32 * k)));
                const __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick[4 * half + k]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, sc));
            }
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(offset, 5));
        __m128i r = _mm_add_epi32(_mm256_castsi256_si128(sumi), _mm256_extracti128_si256(sumi, 1));
        r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0x4e));
        r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0xb1));
        acc = _mm_fmadd_ss(_mm_set_ss(d), _mm_cvtepi32_ps(r), acc);
    }
    *s = _mm_cvtss_f32(acc);
}
