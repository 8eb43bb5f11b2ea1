/* simd_avx2: small AVX2 helpers shared by the kernels/avx2 files (compiled
 * with their flags): the horizontal sum, and the driver of the K-quant
 * matmuls (8 rows per step, row j in lane j). */
#ifndef ST_SIMD_AVX2_H
#define ST_SIMD_AVX2_H

#include <assert.h>
#include <immintrin.h>
#include <string.h>

#include "st_kernels.h"

/* Unaligned little loads (memcpy: one mov, and no undefined behaviour), e.g.
 * 4 quants of an activation block for a broadcast, or an fp16 scale */
static inline int32_t st_load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint16_t st_load_u16(const void *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Sum of the 8 lanes, in the order every AVX2 dot product here uses. */
static inline float st_hsum_avx2(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* ---- 8 rows per step, row j in lane j ----
 * A one-row K-quant dot product spends most of each super-block on the
 * weights' side (scale unpacking, one multiply per 16 or 32 products to apply
 * the sub-block scales, a horizontal sum per row) and is compute-bound at one
 * token: a third of the memory bandwidth. Kernels of this kind read 8 rows at
 * once, transposed on the fly so that lane j of every vector belongs to row j
 * (as the Q4_0 matmul does): scales are applied 8 rows per multiply, and no
 * horizontal sums remain. Their dot products use the same float steps per
 * super-block (the exact integer sums, then FMAs), so each (row, token) gets
 * the bits of the table's vec_dot whatever the grouping. */

enum { ST_KQ8_TOK_CHUNK = 4 };
/* tokens sharing one unpack of a group's super-blocks */

/* Rows p[0..7] (super-blocks of the type) against nt <= ST_KQ8_TOK_CHUNK
 * tokens (x[t]: token t's first block): out[t] lane j = row j's result.
 * pn: the next group's rows, to prefetch with st_kq8_prefetch, or NULL. */
typedef void (*st_kq8_group_fn)(const uint8_t *const *p, const uint8_t *const *pn, int nb,
                                const st_block_q8_k *const *x, int nt, __m256 *out);

/* Step b of 8 (the next group's rows pn, when not NULL) towards L1 while
 * this group does its step b: 8 rows read in step are more streams than the
 * hardware prefetchers follow well from DRAM. Consecutive rows (st_matmul)
 * are one range, prefetched in order, which measured faster than 8 per-row
 * streams or none (bench/README.md, "Kernel measurements"); listed rows get
 * block b of each row. */
static inline __attribute__((always_inline)) void st_kq8_prefetch(const uint8_t *const *pn, int b, int nb,
                                                                  size_t block_bytes) {
    if (!pn) return;
    if (pn[7] == pn[0] + 7 * (size_t)nb * block_bytes) {
        const uint8_t *f = pn[0] + 8 * block_bytes * (size_t)b;
        for (size_t o = 0; o < 8 * block_bytes; o += 64) _mm_prefetch((const char *)f + o, _MM_HINT_T0);
        return;
    }
    for (int j = 0; j < 8; j++)
        for (size_t o = 0; o < block_bytes; o += 64)
            _mm_prefetch((const char *)pn[j] + (size_t)b * block_bytes + o, _MM_HINT_T0);
}

/* 16 bytes at offset off of the 8 rows, as 4 vectors: g[k] lane j = bytes
 * 4k..4k+3 of row j (rows j and j+4 in the two 128-bit halves, then a 4x4
 * transpose of dwords per half). */
static inline __attribute__((always_inline)) void st_kq8_transpose16(const uint8_t *const *p, size_t off,
                                                                     __m256i g[4]) {
    const __m256i a0 = _mm256_loadu2_m128i((const __m128i *)(p[4] + off), (const __m128i *)(p[0] + off));
    const __m256i a1 = _mm256_loadu2_m128i((const __m128i *)(p[5] + off), (const __m128i *)(p[1] + off));
    const __m256i a2 = _mm256_loadu2_m128i((const __m128i *)(p[6] + off), (const __m128i *)(p[2] + off));
    const __m256i a3 = _mm256_loadu2_m128i((const __m128i *)(p[7] + off), (const __m128i *)(p[3] + off));
    const __m256i t0 = _mm256_unpacklo_epi32(a0, a1), t1 = _mm256_unpackhi_epi32(a0, a1);
    const __m256i t2 = _mm256_unpacklo_epi32(a2, a3), t3 = _mm256_unpackhi_epi32(a2, a3);
    g[0] = _mm256_unpacklo_epi64(t0, t2);
    g[1] = _mm256_unpackhi_epi64(t0, t2);
    g[2] = _mm256_unpacklo_epi64(t1, t3);
    g[3] = _mm256_unpackhi_epi64(t1, t3);
}

/* Packed K-quant weights (st_pack, 8 rows per group): super-block b of a
 * group is 8 * block_bytes bytes at 8 * b * block_bytes from the group's
 * start, and the 16 bytes at offset o of its 8 rows are stored at 8 * o as
 * st_kq8_transpose16's 4 vectors; the rows' last block_bytes % 16 bytes (Q6_K's
 * d) follow one row after the other. A group function given packed = true
 * takes p[0] = the packed group (or its current super-block, as it walks)
 * instead of 8 row pointers, and loads what it would have transposed. */
static inline __attribute__((always_inline)) void st_kq8_load16(const uint8_t *const *p, bool packed, size_t off,
                                                                __m256i g[4]) {
    if (!packed) {
        st_kq8_transpose16(p, off, g);
        return;
    }
    const uint8_t *q = p[0] + 8 * off;
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) g[k] = _mm256_loadu_si256((const __m256i *)(q + 32 * k));
}

/* Bytes ahead of the packed stream that are prefetched, with the packed Q4_0
 * kernel's hint and distance (matmul_q4_0_q8_0.h says why). */
#define ST_KQ8_PACK_AHEAD 9216

/* Step b's 8 * block_bytes of a packed group, ST_KQ8_PACK_AHEAD bytes ahead. */
static inline __attribute__((always_inline)) void st_kq8_prefetch_packed(const uint8_t *group, int b,
                                                                         size_t block_bytes) {
    const uint8_t *f = group + 8 * block_bytes * (size_t)b + ST_KQ8_PACK_AHEAD;
    for (size_t o = 0; o < 8 * block_bytes; o += 64) _mm_prefetch((const char *)f + o, _MM_HINT_T0);
}

/* Lane j of v holds 4 bytes of row j; the result's lane j is (byte i0, byte
 * i1) of it as two signed int16, times 2^(8 - shift): a madd operand that
 * applies row j's signed 8-bit scales (pshufb puts each byte in the high half
 * of a word, the arithmetic shift brings it down with its sign). */
static inline __attribute__((always_inline)) __m256i st_kq8_scale_pair(__m256i v, int i0, int i1, int shift) {
    const int m = 0x80 | i0 << 8 | 0x80 << 16 | i1 << 24;
    const __m256i sel = _mm256_setr_epi32(m, m + 0x04000400, m + 0x08000800, m + 0x0c000c00, m, m + 0x04000400,
                                          m + 0x08000800, m + 0x0c000c00);
    return _mm256_srai_epi16(_mm256_shuffle_epi8(v, sel), shift);
}

/* The st_matmul_fn of a K-quant whose groups of 8 rows go through group():
 * consecutive or listed rows; the last 1..7 rows form a group padded with
 * copies of the last one (lanes are independent, so a row's bits do not
 * depend on its group). */
static inline __attribute__((always_inline)) void st_kq8_matmul_avx2(st_kq8_group_fn group, size_t block_bytes,
                                                                     int n_in, const void *vw, const int32_t *rows,
                                                                     int r0, int r1, const void *vx, size_t x_stride,
                                                                     int n_tok, float *y, size_t y_stride) {
    assert(n_in % ST_QK_K == 0);
    const int nb = n_in / ST_QK_K;
    const size_t row_bytes = (size_t)nb * block_bytes;
    const uint8_t *w = vw, *x = vx;
    for (int i = r0; i < r1; i += 8) {
        const int n = r1 - i < 8 ? r1 - i : 8;
        int r[8];
        const uint8_t *p[8];
        for (int j = 0; j < 8; j++) {
            r[j] = rows ? rows[i + (j < n ? j : n - 1)] : i + (j < n ? j : n - 1);
            p[j] = w + (size_t)r[j] * row_bytes;
        }
        const uint8_t *pn[8]; /* the next group's rows, prefetched meanwhile */
        const bool more = i + 8 < r1;
        for (int j = 0; j < 8 && more; j++) {
            const int rn = i + 8 + j < r1 ? i + 8 + j : r1 - 1;
            pn[j] = w + (size_t)(rows ? rows[rn] : rn) * row_bytes;
        }
        for (int t0 = 0; t0 < n_tok; t0 += ST_KQ8_TOK_CHUNK) {
            const int nt = n_tok - t0 < ST_KQ8_TOK_CHUNK ? n_tok - t0 : ST_KQ8_TOK_CHUNK;
            const st_block_q8_k *xt[ST_KQ8_TOK_CHUNK];
            for (int t = 0; t < nt; t++) xt[t] = (const st_block_q8_k *)(x + (size_t)(t0 + t) * x_stride);
            __m256 out[ST_KQ8_TOK_CHUNK];
            group(p, more && t0 == 0 ? pn : NULL, nb, xt, nt, out);
            for (int t = 0; t < nt; t++) {
                float o[8];
                _mm256_storeu_ps(o, out[t]);
                float *yt = y + (size_t)(t0 + t) * y_stride;
                for (int j = 0; j < n; j++) yt[r[j]] = o[j];
            }
        }
    }
}

/* The st_matmul_fn of a packed K-quant (consecutive whole groups of 8 rows):
 * group() gets p[0] = the packed group, and pn non-NULL on the first pass
 * over it (the one that prefetches). Same bits as st_kq8_matmul_avx2. */
static inline __attribute__((always_inline)) void
st_kq8_matmul_packed_avx2(st_kq8_group_fn group, size_t block_bytes, int n_in, const void *vw, const int32_t *rows,
                          int r0, int r1, const void *vx, size_t x_stride, int n_tok, float *y, size_t y_stride) {
    assert(!rows && n_in % ST_QK_K == 0 && r0 % 8 == 0 && r1 % 8 == 0);
    (void)rows;
    const size_t row_bytes = (size_t)(n_in / ST_QK_K) * block_bytes;
    const uint8_t *w = vw, *x = vx;
    for (int i = r0; i < r1; i += 8) {
        const uint8_t *p[8] = {w + (size_t)i * row_bytes};
        for (int t0 = 0; t0 < n_tok; t0 += ST_KQ8_TOK_CHUNK) {
            const int nt = n_tok - t0 < ST_KQ8_TOK_CHUNK ? n_tok - t0 : ST_KQ8_TOK_CHUNK;
            const st_block_q8_k *xt[ST_KQ8_TOK_CHUNK];
            for (int t = 0; t < nt; t++) xt[t] = (const st_block_q8_k *)(x + (size_t)(t0 + t) * x_stride);
            __m256 out[ST_KQ8_TOK_CHUNK];
            group(p, t0 == 0 ? p : NULL, n_in / ST_QK_K, xt, nt, out);
            for (int t = 0; t < nt; t++) _mm256_storeu_ps(y + (size_t)(t0 + t) * y_stride + i, out[t]);
        }
    }
}

#endif
