/* matmul_q6_k_avx2: Q6_K weights x Q8_K activations, one row at a time and
 * up to 4 tokens per pass over the row.
 *
 * Q4_K_M files keep the output head, half of attn_v and of the experts' down
 * matrices in Q6_K. As in matmul_q45_k_avx2.c, a super-block of one row is
 * unpacked once (6-bit quants rebuilt from ql/qh, 32 at a time, and the
 * scales picked for each 32) and used by every token of the pass. Per (row,
 * token) the integer sums are exact and the float steps are those of
 * st_vec_dot_q6_k_q8_k_avx2, so the result is that dot product's, bit for bit.
 */
#include "kernels_avx2.h"
#include "simd_avx2.h"

#include <immintrin.h>

static inline __attribute__((always_inline)) void s_row(const void *vw, int nb, const st_block_q8_k *const *x,
                                                        int nt, float *out) {
    const st_block_q6_k *w = vw;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    __m256 acc[ST_KQ_TOK_CHUNK];
    for (int t = 0; t < ST_KQ_TOK_CHUNK; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)w[b].scales);
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        __m256i sumi[ST_KQ_TOK_CHUNK];
        for (int t = 0; t < ST_KQ_TOK_CHUNK; t++) sumi[t] = _mm256_setzero_si256();
        const uint8_t *ql = w[b].ql, *qh = w[b].qh;
        for (int half = 0; half < 2; half++, ql += 64, qh += 32) {
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
                const int c = 4 * half + k; /* groups 2c, 2c+1 */
                const __m128i pick = _mm_set_epi64x(0x0101010101010101ll * (2 * c + 1), 0x0101010101010101ll * (2 * c));
                const __m256i sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
                for (int t = 0; t < nt; t++) {
                    const int8_t *y = x[t][b].qs + 128 * half + 32 * k;
                    const __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)y));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, sc));
                }
            }
        }
        const float dw = _cvtsh_ss(w[b].d);
        for (int t = 0; t < nt; t++) {
            /* the -32 offset of the quants: 32 * sum_g scale_g bsums_g */
            const __m256i offset = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)x[t][b].bsums));
            const __m256i s = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(offset, 5));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[t][b].d), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    for (int t = 0; t < nt; t++) out[t] = st_hsum_avx2(acc[t]);
}

void st_matmul_q6_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    st_kq_matmul_avx2(s_row, sizeof(st_block_q6_k), n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}
