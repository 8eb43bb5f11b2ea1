/* simd_avx2: small AVX2 helpers shared by the kernels/avx2 files (compiled
 * with their flags): the horizontal sum, and the row-by-row driver of the
 * K-quant matmuls. */
#ifndef ST_SIMD_AVX2_H
#define ST_SIMD_AVX2_H

#include <assert.h>
#include <immintrin.h>

#include "st_kernels.h"

/* Sum of the 8 lanes, in the order every AVX2 dot product here uses. */
static inline float st_hsum_avx2(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

enum { ST_KQ_TOK_CHUNK = 4 }; /* tokens sharing one unpack of a row's super-blocks */

/* One row of nb super-blocks against nt <= ST_KQ_TOK_CHUNK tokens: out[t]. */
typedef void (*st_kq_row_fn)(const void *w, int nb, const st_block_q8_k *const *x, int nt, float *out);

/* The st_matmul_fn of a K-quant whose rows go through row(): rows outer (a row
 * of a few hundred bytes stays in L1 while every token uses it), tokens in
 * chunks of ST_KQ_TOK_CHUNK. */
static inline __attribute__((always_inline)) void st_kq_matmul_avx2(st_kq_row_fn row, size_t block_bytes, int n_in,
                                                                     const void *vw, const int32_t *rows, int r0,
                                                                     int r1, const void *vx, size_t x_stride,
                                                                     int n_tok, float *y, size_t y_stride) {
    assert(n_in % ST_QK_K == 0);
    const int nb = n_in / ST_QK_K;
    const size_t row_bytes = (size_t)nb * block_bytes;
    const uint8_t *w = vw, *x = vx;
    for (int i = r0; i < r1; i++) {
        const int r = rows ? rows[i] : i;
        for (int t0 = 0; t0 < n_tok; t0 += ST_KQ_TOK_CHUNK) {
            const int nt = n_tok - t0 < ST_KQ_TOK_CHUNK ? n_tok - t0 : ST_KQ_TOK_CHUNK;
            const st_block_q8_k *xt[ST_KQ_TOK_CHUNK];
            for (int t = 0; t < nt; t++) xt[t] = (const st_block_q8_k *)(x + (size_t)(t0 + t) * x_stride);
            float out[ST_KQ_TOK_CHUNK];
            row(w + (size_t)r * row_bytes, nb, xt, nt, out);
            for (int t = 0; t < nt; t++) y[(size_t)(t0 + t) * y_stride + r] = out[t];
        }
    }
}

#endif
