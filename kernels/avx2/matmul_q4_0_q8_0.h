/* matmul_q4_0_q8_0.h: the Q4_0 x Q8_0 matmul shared by the AVX2 and AVX-512
 * tables, included by one .c file of each (compiled with that ISA's flags).
 * The includer defines (after including this)
 *     static inline void s_block_sums(const __m256i g[4], const st_block_q8_0 *const *xt, int b, int NT,
 *                                     __m256i *si);
 * si[t] lane j = sum over the 32 elements of block b of q * y, q the unsigned
 * nibbles of row j (g[k] lane j holds bytes 4k..4k+3 of row j's qs: low nibbles
 * are elements 4k.., high nibbles 16+4k..) and y token t's quants: the only
 * step where the ISAs differ (maddubs + madd on AVX2, one vpdpbusd per 4
 * nibble bytes with VNNI). Everything else (8-row transpose, scales, the -8
 * offset, prefetch, passes, padding of the last rows) is here, once.
 * See matmul_avx2.c for the design.
 */
#ifndef ST_MATMUL_Q4_0_Q8_0_H
#define ST_MATMUL_Q4_0_Q8_0_H

#include <assert.h>
#include <immintrin.h>
#include <string.h>

#include "simd_avx2.h"
#include "st_kernels.h"

#define TOK_CHUNK 8 /* tokens sharing one unpack of the weights (8 against 4: 14% faster at 8 tokens) */
#define TOK_PASS 64 /* tokens per pass over a group of 8 rows (kept in L1 meanwhile) */
#define BLK_PASS 64 /* blocks per pass (2048 inputs): bounds the per-token tables */

typedef struct {
    float dx[TOK_PASS][BLK_PASS];    /* activation scales as floats */
    int32_t sy8[TOK_PASS][BLK_PASS]; /* 8 * sum of the block's 32 quants */
} tok_tables_t;

/* 8 * sum(y) of one Q8_0 block */
static inline int32_t s_sum8(const st_block_q8_0 *x) {
    const __m256i y = _mm256_loadu_si256((const __m256i *)x->qs);
    const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), y);
    const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return 8 * _mm_cvtsi128_si32(s);
}

/* Tokens [tp, tp + ntp), blocks [b0, b0 + nb) of a pass: xt[t] = token tp + t's
 * block b0, and its tables. */
static inline void s_tok_tables(const uint8_t *x, size_t x_stride, int tp, int ntp, int b0, int nb,
                                const st_block_q8_0 **xt, tok_tables_t *tt) {
    for (int t = 0; t < ntp; t++) {
        xt[t] = (const st_block_q8_0 *)(x + (size_t)(tp + t) * x_stride) + b0;
        for (int b = 0; b < nb; b++) {
            tt->dx[t][b] = _cvtsh_ss(xt[t][b].d);
            tt->sy8[t][b] = s_sum8(&xt[t][b]);
        }
    }
}

/* The 8 rows of a group: consecutive rows (base + j * stride) or listed ones
 * (p[j]); which one is a constant in each specialisation below. */
typedef struct {
    const uint8_t *const *p;
    const uint8_t *base;
    size_t stride;
} rows8_t;

static inline __attribute__((always_inline)) const uint8_t *s_at(const rows8_t *r, bool listed, int j) {
    return listed ? r->p[j] : r->base + (size_t)j * r->stride;
}

/* The ISA's step (see the top): integer sums of block b for NT tokens. */
static inline __attribute__((always_inline)) void s_block_sums(const __m256i g[4], const st_block_q8_0 *const *xt,
                                                               int b, int NT, __m256i *si);

/* fp16 scales of the 8 rows' block at byte offset off, as 8 floats in row order */
static inline __attribute__((always_inline)) __m256 s_scales8(const rows8_t *r, bool listed, size_t off) {
    __m128i h = _mm_cvtsi32_si128(st_load_u16(s_at(r, listed, 0) + off));
    h = _mm_insert_epi16(h, st_load_u16(s_at(r, listed, 1) + off), 1);
    h = _mm_insert_epi16(h, st_load_u16(s_at(r, listed, 2) + off), 2);
    h = _mm_insert_epi16(h, st_load_u16(s_at(r, listed, 3) + off), 3);
    h = _mm_insert_epi16(h, st_load_u16(s_at(r, listed, 4) + off), 4);
    h = _mm_insert_epi16(h, st_load_u16(s_at(r, listed, 5) + off), 5);
    h = _mm_insert_epi16(h, st_load_u16(s_at(r, listed, 6) + off), 6);
    h = _mm_insert_epi16(h, st_load_u16(s_at(r, listed, 7) + off), 7);
    return _mm256_cvtph_ps(h);
}

/* Rows r x NT tokens over blocks [0, nb) of the current pass; acc[t] lane j = row j.
 * pf: the next group's rows (prefetched), or NULL: consecutive rows are one range,
 * prefetched in order (8 x 18 bytes per block); listed ones row by row, row b % 8
 * getting 144 bytes every 8 blocks (nb * 18 bytes each in all). */
static inline __attribute__((always_inline)) void s_rows8(const rows8_t *r, const rows8_t *pf, bool listed, int nb,
                                                          const st_block_q8_0 *const *xt, const float (*dx)[BLK_PASS],
                                                          const int32_t (*sy8)[BLK_PASS], int NT, __m256 *acc) {
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const size_t off = (size_t)b * sizeof(st_block_q4_0);
        if (pf) {
            const uint8_t *f = listed ? pf->p[b & 7] + (size_t)(b >> 3) * 144 : pf->base + (size_t)b * 144;
            _mm_prefetch((const char *)f, _MM_HINT_T0);
            _mm_prefetch((const char *)f + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)f + 128, _MM_HINT_T0);
        }
        /* rows j and j+4 in the two 128-bit halves, then a 4x4 transpose of dwords per half */
        const size_t q = off + 2;
        const __m256i a0 =
            _mm256_loadu2_m128i((const __m128i *)(s_at(r, listed, 4) + q), (const __m128i *)(s_at(r, listed, 0) + q));
        const __m256i a1 =
            _mm256_loadu2_m128i((const __m128i *)(s_at(r, listed, 5) + q), (const __m128i *)(s_at(r, listed, 1) + q));
        const __m256i a2 =
            _mm256_loadu2_m128i((const __m128i *)(s_at(r, listed, 6) + q), (const __m128i *)(s_at(r, listed, 2) + q));
        const __m256i a3 =
            _mm256_loadu2_m128i((const __m128i *)(s_at(r, listed, 7) + q), (const __m128i *)(s_at(r, listed, 3) + q));
        const __m256i t0 = _mm256_unpacklo_epi32(a0, a1), t1 = _mm256_unpackhi_epi32(a0, a1);
        const __m256i t2 = _mm256_unpacklo_epi32(a2, a3), t3 = _mm256_unpackhi_epi32(a2, a3);
        __m256i g[4]; /* g[k] lane j: bytes 4k..4k+3 of row j's nibbles */
        g[0] = _mm256_unpacklo_epi64(t0, t2);
        g[1] = _mm256_unpackhi_epi64(t0, t2);
        g[2] = _mm256_unpacklo_epi64(t1, t3);
        g[3] = _mm256_unpackhi_epi64(t1, t3);
        __m256i si[TOK_CHUNK];
        s_block_sums(g, xt, b, NT, si);
        const __m256 dw = s_scales8(r, listed, off);
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const __m256i s = _mm256_sub_epi32(si[t], _mm256_set1_epi32(sy8[t][b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(dx[t][b])), acc[t]);
        }
    }
}

/* One function per (listing, token count), so acc and s16 stay in registers. */
#define ROWS8(NAME, LISTED, NT)                                                                                        \
    static void NAME(const rows8_t *r, const rows8_t *pf, int nb, const st_block_q8_0 *const *xt,                      \
                     const float(*dx)[BLK_PASS], const int32_t(*sy8)[BLK_PASS], __m256 *acc) {                         \
        s_rows8(r, pf, LISTED, nb, xt, dx, sy8, NT, acc);                                                              \
    }
ROWS8(s_rows8_c1, false, 1)
ROWS8(s_rows8_c2, false, 2)
ROWS8(s_rows8_c3, false, 3)
ROWS8(s_rows8_c4, false, 4)
ROWS8(s_rows8_c5, false, 5)
ROWS8(s_rows8_c6, false, 6)
ROWS8(s_rows8_c7, false, 7)
ROWS8(s_rows8_c8, false, 8)
ROWS8(s_rows8_l1, true, 1)
ROWS8(s_rows8_l2, true, 2)
ROWS8(s_rows8_l3, true, 3)
ROWS8(s_rows8_l4, true, 4)
ROWS8(s_rows8_l5, true, 5)
ROWS8(s_rows8_l6, true, 6)
ROWS8(s_rows8_l7, true, 7)
ROWS8(s_rows8_l8, true, 8)

typedef void (*rows8_fn)(const rows8_t *, const rows8_t *, int, const st_block_q8_0 *const *, const float (*)[BLK_PASS],
                         const int32_t (*)[BLK_PASS], __m256 *);
static const rows8_fn s_rows8_fns[2][TOK_CHUNK] = {
    {s_rows8_c1, s_rows8_c2, s_rows8_c3, s_rows8_c4, s_rows8_c5, s_rows8_c6, s_rows8_c7, s_rows8_c8},
    {s_rows8_l1, s_rows8_l2, s_rows8_l3, s_rows8_l4, s_rows8_l5, s_rows8_l6, s_rows8_l7, s_rows8_l8}};

/* One row x ntp tokens with the float steps of one lane of s_rows8: the same
 * integer block sums (computed another way), then acc = fma(sum, dw * dx, acc)
 * block after block; so a row gives the same bits on either path. For the
 * last 1..3 rows of a call, where a padded group of 8 would waste its lanes
 * (short runs of active up rows, say). acc[t] receives token t. */
static void s_row1(const uint8_t *wr, int nb, const st_block_q8_0 *const *xt, const float (*dx)[BLK_PASS],
                   const int32_t (*sy8)[BLK_PASS], int ntp, float *acc) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    for (int t = 0; t < ntp; t++) acc[t] = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = wr + (size_t)b * sizeof(st_block_q4_0);
        const __m128i qs = _mm_loadu_si128((const __m128i *)(blk + 2));
        const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), m4); /* elements 0..31 */
        const float dw = _cvtsh_ss(st_load_u16(blk));
        for (int t = 0; t < ntp; t++) {
            const __m256i yv = _mm256_loadu_si256((const __m256i *)xt[t][b].qs);
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, yv), ones); /* pairs within +-3840 */
            __m128i h = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
            const float sum = (float)(_mm_cvtsi128_si32(h) - sy8[t][b]);
            acc[t] = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(sum), _mm_set_ss(dw * dx[t][b]), _mm_set_ss(acc[t])));
        }
    }
}

/* Row i of the work: rows[r0 + i] when listed, else r0 + i. */
static inline int s_row(const int32_t *rows, int r0, int i) { return rows ? rows[r0 + i] : r0 + i; }

static void s_matmul_q4_0_q8_0(int n_in, const void *vw, const int32_t *rows, int r0, int r1, const void *vx,
                               size_t x_stride, int n_tok, float *y, size_t y_stride) {
    assert(n_in % ST_QK4_0 == 0);
    const int nb_all = n_in / ST_QK4_0, n = r1 - r0;
    const size_t row_bytes = (size_t)nb_all * sizeof(st_block_q4_0);
    const uint8_t *w = vw;
    const uint8_t *x = vx;
    tok_tables_t tt;
    const st_block_q8_0 *xt[TOK_PASS];
    for (int b0 = 0; b0 < nb_all; b0 += BLK_PASS) {
        const int nb = nb_all - b0 < BLK_PASS ? nb_all - b0 : BLK_PASS;
        const size_t boff = (size_t)b0 * sizeof(st_block_q4_0);
        const bool first = b0 == 0;
        for (int tp = 0; tp < n_tok; tp += TOK_PASS) {
            const int ntp = n_tok - tp < TOK_PASS ? n_tok - tp : TOK_PASS;
            s_tok_tables(x, x_stride, tp, ntp, b0, nb, xt, &tt);
            const uint8_t *p[16]; /* listed: this group's rows, then the next group's */
            int i = 0;
            if (rows)
                for (int j = 0; j < 8 && j < n; j++) p[8 + j] = w + (size_t)rows[r0 + j] * row_bytes + boff;
            for (; i + 8 <= n; i += 8) {
                const bool more = i + 16 <= n;
                rows8_t cur = {p, w + (size_t)(r0 + i) * row_bytes + boff, row_bytes};
                rows8_t next = {p + 8, cur.base + 8 * row_bytes, row_bytes};
                if (rows) {
                    for (int j = 0; j < 8; j++) p[j] = p[8 + j];
                    if (more)
                        for (int j = 0; j < 8; j++) p[8 + j] = w + (size_t)rows[r0 + i + 8 + j] * row_bytes + boff;
                }
                for (int t0 = 0; t0 < ntp; t0 += TOK_CHUNK) {
                    const int nt = ntp - t0 < TOK_CHUNK ? ntp - t0 : TOK_CHUNK;
                    __m256 acc[TOK_CHUNK];
                    s_rows8_fns[rows != NULL][nt - 1](&cur, more && t0 == 0 ? &next : NULL, nb, xt + t0, tt.dx + t0,
                                                      tt.sy8 + t0, acc);
                    float out[8];
                    for (int t = 0; t < nt; t++) {
                        float *yt = y + (size_t)(tp + t0 + t) * y_stride;
                        if (!rows) {
                            float *yr = yt + r0 + i;
                            _mm256_storeu_ps(yr, first ? acc[t] : _mm256_add_ps(acc[t], _mm256_loadu_ps(yr)));
                            continue;
                        }
                        _mm256_storeu_ps(out, acc[t]);
                        for (int j = 0; j < 8; j++) {
                            float *yr = yt + rows[r0 + i + j];
                            *yr = first ? out[j] : *yr + out[j];
                        }
                    }
                }
            }
            if (n - i > 0 && n - i <= 3) /* the last 1..3 rows, one at a time */
                for (; i < n; i++) {
                    const int r = s_row(rows, r0, i);
                    float acc[TOK_PASS];
                    s_row1(w + (size_t)r * row_bytes + boff, nb, xt, tt.dx, tt.sy8, ntp, acc);
                    for (int t = 0; t < ntp; t++) {
                        float *yr = y + (size_t)(tp + t) * y_stride + r;
                        *yr = first ? acc[t] : *yr + acc[t];
                    }
                }
            if (i < n) { /* the last 4..7 rows: a listed group padded with its last row */
                for (int j = 0; j < 8; j++)
                    p[j] = w + (size_t)s_row(rows, r0, i + (i + j < n ? j : n - 1 - i)) * row_bytes + boff;
                rows8_t cur = {p, NULL, 0};
                for (int t0 = 0; t0 < ntp; t0 += TOK_CHUNK) {
                    const int nt = ntp - t0 < TOK_CHUNK ? ntp - t0 : TOK_CHUNK;
                    __m256 acc[TOK_CHUNK];
                    s_rows8_fns[1][nt - 1](&cur, NULL, nb, xt + t0, tt.dx + t0, tt.sy8 + t0, acc);
                    float out[8];
                    for (int t = 0; t < nt; t++) {
                        _mm256_storeu_ps(out, acc[t]);
                        float *yt = y + (size_t)(tp + t0 + t) * y_stride;
                        for (int j = 0; i + j < n; j++) {
                            float *yr = yt + s_row(rows, r0, i + j);
                            *yr = first ? out[j] : *yr + out[j];
                        }
                    }
                }
            }
        }
    }
}

/* ---- packed Q4_0, 8 rows per group (st_pack) -------------------------------
 *
 * Block b of a group of 8 rows is 144 bytes: the 8 fp16 scales, then four
 * chunks of 32 bytes, lane j of chunk k = bytes 4k..4k+3 of row j: the g[k]
 * of s_rows8, loaded as they are, and the scales with one load. The steps
 * per (row, token) are s_rows8's, so the bits are the plain kernel's. The
 * stream is prefetched PACK_AHEAD bytes ahead, further than the hardware
 * prefetchers reach on their own (about 9 KiB keeps DRAM busy on Zen), into
 * all cache levels (T0). A non-temporal hint (NTA) gained 0-12% of tg32 on
 * Zen 5 but cost 40% on an Intel Xeon (6/167), where the lines it fetched
 * came too late: tg32 26.7 against 44.7 t/s, pp64 209 against 294 (4B Q4_0,
 * bench/README.md). */
#define PACK_AHEAD 9216

static inline __attribute__((always_inline)) void s_rows8_packed(const uint8_t *p, bool pf, int nb,
                                                                 const st_block_q8_0 *const *xt,
                                                                 const float (*dx)[BLK_PASS],
                                                                 const int32_t (*sy8)[BLK_PASS], int NT, __m256 *acc) {
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++, p += 8 * sizeof(st_block_q4_0)) {
        if (pf) {
            _mm_prefetch((const char *)p + PACK_AHEAD, _MM_HINT_T0);
            _mm_prefetch((const char *)p + PACK_AHEAD + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)p + PACK_AHEAD + 128, _MM_HINT_T0);
        }
        __m256i g[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) g[k] = _mm256_loadu_si256((const __m256i *)(p + 16 + 32 * k));
        __m256i si[TOK_CHUNK];
        s_block_sums(g, xt, b, NT, si);
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const __m256i s = _mm256_sub_epi32(si[t], _mm256_set1_epi32(sy8[t][b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(dx[t][b])), acc[t]);
        }
    }
}

/* One pass of a packed group's R rows (lane j = row j) against NT tokens,
 * written to y[t * y_stride + j]: stored on the first pass over the blocks,
 * added to it on the later ones (first = false); pf: prefetch the stream. Each
 * ISA file makes one per token count from its s_rows8_packed or s_rows16. */
typedef void (*packed_rows_fn)(const uint8_t *p, bool pf, int nb, const st_block_q8_0 *const *xt,
                               const float (*dx)[BLK_PASS], const int32_t (*sy8)[BLK_PASS], float *y, size_t y_stride,
                               bool first);

/* The matmul on Q4_0 packed R rows per group (st_pack): consecutive whole
 * groups only; rows_fns[nt - 1] computes nt tokens. */
static inline void s_matmul_q4_0_packed(int R, const packed_rows_fn *rows_fns, int n_in, const void *vw,
                                        const int32_t *rows, int r0, int r1, const void *vx, size_t x_stride, int n_tok,
                                        float *y, size_t y_stride) {
    assert(!rows && n_in % ST_QK4_0 == 0 && r0 % R == 0 && r1 % R == 0);
    (void)rows;
    const int nb_all = n_in / ST_QK4_0;
    const size_t group_bytes = (size_t)R * nb_all * sizeof(st_block_q4_0);
    const uint8_t *w = vw;
    tok_tables_t tt;
    const st_block_q8_0 *xt[TOK_PASS];
    for (int b0 = 0; b0 < nb_all; b0 += BLK_PASS) {
        const int nb = nb_all - b0 < BLK_PASS ? nb_all - b0 : BLK_PASS;
        for (int tp = 0; tp < n_tok; tp += TOK_PASS) {
            const int ntp = n_tok - tp < TOK_PASS ? n_tok - tp : TOK_PASS;
            s_tok_tables(vx, x_stride, tp, ntp, b0, nb, xt, &tt);
            for (int r = r0; r < r1; r += R) {
                const uint8_t *p = w + (size_t)(r / R) * group_bytes + (size_t)b0 * R * sizeof(st_block_q4_0);
                for (int t0 = 0; t0 < ntp; t0 += TOK_CHUNK) {
                    const int nt = ntp - t0 < TOK_CHUNK ? ntp - t0 : TOK_CHUNK;
                    rows_fns[nt - 1](p, t0 == 0, nb, xt + t0, tt.dx + t0, tt.sy8 + t0,
                                     y + (size_t)(tp + t0) * y_stride + r, y_stride, b0 == 0);
                }
            }
        }
    }
}

#endif
