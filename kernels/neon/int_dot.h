/* int_dot.h: the integer kernels of both Arm tables (Q4_0 x Q8_0, Q8_0 x Q8_0,
 * Q6_K x Q8_K dot products; Q4_0 and Q8_0 matmuls, and the 4-row matmul
 * driver that kquants_matmul.h uses too), written once over
 *     static inline int32x4_t s_dot16(int32x4_t acc, int8x16_t a, int8x16_t b);
 * which the includer defines before including this file: acc plus the 16
 * products a[i] * b[i], spread over the 4 lanes in any way (sdot puts bytes
 * 4k..4k+3 in lane k; plain NEON widens with vmull_s8 and adds pairs). Each
 * result below only uses lane totals, exact integers whichever way they were
 * grouped, so the neon and neon-dotprod tables give the same bits, and a
 * cluster of Pi 4 and Pi 5 nodes computes one answer.
 *
 * Numerics as ggml's NEON kernels: a block's (or super-block's) products are
 * summed exactly in int32, then scaled by d_w * d_x and accumulated in float.
 * Only the float order differs from the reference: dot products keep 4
 * float lanes (block b in lane b % 4), the matmuls one lane per (row, token)
 * that adds its blocks in order, so a (row, token) result never depends on
 * r0, r1, the row list or the other tokens of the call (the split test).
 *
 * Included by neon/int_dot_neon.c and neon_dotprod/int_dot_neon_dotprod.c,
 * each compiled with its own flags; everything here is static.
 */
#ifndef ST_INT_DOT_H
#define ST_INT_DOT_H

#include <arm_neon.h>
#include <assert.h>
#include <stdbool.h>
#include <string.h>

#include "kunpack.h"
#include "st_kernels.h"

/* ---- small helpers ---- */

/* fp16 bits -> float (fcvt; same value as st_fp16_to_fp32 for every input, tested) */
static inline float s_h2f(uint16_t h) {
    __fp16 f;
    memcpy(&f, &h, sizeof f);
    return (float)f;
}

/* the fp16 scales at the start of 4 blocks, as floats */
static inline float32x4_t s_scales4(const uint8_t *b0, const uint8_t *b1, const uint8_t *b2, const uint8_t *b3) {
    uint16_t h[4];
    memcpy(&h[0], b0, 2);
    memcpy(&h[1], b1, 2);
    memcpy(&h[2], b2, 2);
    memcpy(&h[3], b3, 2);
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

/* 4 vectors of partial sums -> one vector of their 4 totals, in order */
static inline int32x4_t s_totals4(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    return vpaddq_s32(vpaddq_s32(a, b), vpaddq_s32(c, d));
}

/* One 32-element weight block as 32 signed bytes: Q4_0 nibbles minus 8 (low
 * nibbles are elements 0..15, high ones 16..31), or the Q8_0 quants. blk
 * points at the block (fp16 scale first). */
static inline __attribute__((always_inline)) void s_unpack32(const uint8_t *blk, bool q4, int8x16_t *lo,
                                                             int8x16_t *hi) {
    if (q4) {
        const uint8x16_t v = vld1q_u8(blk + 2);
        *lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), vdupq_n_s8(8));
        *hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8));
    } else {
        *lo = vld1q_s8((const int8_t *)(blk + 2));
        *hi = vld1q_s8((const int8_t *)(blk + 18));
    }
}

/* Partial sums of one block of w against one Q8_0 block (int32: |sum| <= 32 * 128 * 128) */
static inline __attribute__((always_inline)) int32x4_t s_block32(const uint8_t *wblk, bool q4, const st_block_q8_0 *x) {
    int8x16_t lo, hi;
    s_unpack32(wblk, q4, &lo, &hi);
    return s_dot16(s_dot16(vdupq_n_s32(0), lo, vld1q_s8(x->qs)), hi, vld1q_s8(x->qs + 16));
}

/* ---- dot products ---- */

/* Q4_0 or Q8_0 weights x Q8_0: 4 blocks per step, their exact sums in one
 * vector (lane k = block b + k), scaled and accumulated in 4 float lanes. */
static inline __attribute__((always_inline)) float s_vec_dot_q8(int n, const void *vw, bool q4, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const size_t bs = q4 ? sizeof(st_block_q4_0) : sizeof(st_block_q8_0);
    const uint8_t *w = vw;
    const st_block_q8_0 *x = vx;
    const int nb = n / ST_QK8_0;
    float32x4_t acc = vdupq_n_f32(0.0f);
    int b = 0;
    for (; b + 4 <= nb; b += 4) {
        const uint8_t *w0 = w + b * bs;
        const int32x4_t s = s_totals4(s_block32(w0, q4, &x[b]), s_block32(w0 + bs, q4, &x[b + 1]),
                                      s_block32(w0 + 2 * bs, q4, &x[b + 2]), s_block32(w0 + 3 * bs, q4, &x[b + 3]));
        const float32x4_t dw = s_scales4(w0, w0 + bs, w0 + 2 * bs, w0 + 3 * bs);
        const float32x4_t dx = s_scales4((const uint8_t *)&x[b], (const uint8_t *)&x[b + 1], (const uint8_t *)&x[b + 2],
                                         (const uint8_t *)&x[b + 3]);
        acc = vfmaq_f32(acc, vcvtq_f32_s32(s), vmulq_f32(dw, dx));
    }
    if (b < nb) { /* the last 1..3 blocks in the same lanes; missing ones add 0 * 0 */
        int32x4_t p[4];
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            p[k] = vdupq_n_s32(0);
            if (b + k < nb) {
                p[k] = s_block32(w + (b + k) * bs, q4, &x[b + k]);
                uint16_t hw;
                memcpy(&hw, w + (b + k) * bs, 2);
                d[k] = s_h2f(hw) * s_h2f(x[b + k].d);
            }
        }
        acc = vfmaq_f32(acc, vcvtq_f32_s32(s_totals4(p[0], p[1], p[2], p[3])), vld1q_f32(d));
    }
    return vaddvq_f32(acc);
}

/* Q6_K x Q8_K. The 6-bit quants are rebuilt unsigned (0..63), 16 per group of
 * one scale; sum_g sc_g sum (q - 32) y = sum_g sc_g (q . y) - 32 sum_g sc_g bsums_g,
 * so the -32 offset costs 4 multiply-adds per super-block (Q8_K's bsums). All
 * of a super-block is one exact int32 (at most 16 * 128 * 16 * 63 * 128 in
 * size), scaled once; this is ggml's NEON/SVE kernel. */
static inline float s_vec_dot_q6_k(int n, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q6_k *w = vw;
    const st_block_q8_k *x = vx;
    float sum = 0.0f;
    for (int b = 0; b < n / ST_QK_K; b++) {
        const int8x16_t sc = vld1q_s8(w[b].scales);
        const int16x8_t sc0 = vmovl_s8(vget_low_s8(sc)), sc1 = vmovl_high_s8(sc);
        const int16x8_t bs0 = vld1q_s16(x[b].bsums), bs1 = vld1q_s16(x[b].bsums + 8);
        int32x4_t mins = vmull_s16(vget_low_s16(sc0), vget_low_s16(bs0));
        mins = vmlal_high_s16(mins, sc0, bs0);
        mins = vmlal_s16(mins, vget_low_s16(sc1), vget_low_s16(bs1));
        mins = vmlal_high_s16(mins, sc1, bs1);

        const uint8_t *ql = w[b].ql, *qh = w[b].qh;
        const int8_t *y = x[b].qs, *scale = w[b].scales;
        int32x4_t acc = vdupq_n_s32(0);
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, y += 128, scale += 8) {
            int8x16_t q[8];
            s_unpack_q6_k(ql, qh, q);
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++)
                acc = vmlaq_n_s32(acc, s_dot16(vdupq_n_s32(0), q[g], vld1q_s8(y + 16 * g)), scale[g]);
        }
        const int32_t isum = vaddvq_s32(acc) - 32 * vaddvq_s32(mins);
        sum += s_h2f(w[b].d) * x[b].d * (float)isum;
    }
    return sum;
}

/* ---- matmul: Q4_0 or Q8_0 weights x Q8_0 activations ----
 *
 * 4 rows x up to 4 tokens per step: a block of each of the 4 rows is unpacked
 * once (8 registers) and used by every token; per token the 4 rows' sums
 * come out of s_dot16 and one pairwise-add tree in row order, so lane j of
 * the token's float accumulator is row j: acc = fma(sum, d_w * d_x, acc),
 * block after block. The rows are 4 pointers: consecutive rows or listed ones
 * (the active rows of a ReGLU up matrix); a last group of 1..3 rows repeats
 * its last row in the spare lanes. Listed rows of the next group are
 * prefetched while the first tokens run (consecutive rows stream by themselves).
 */

#define ST_NEON_NR 4 /* rows per step: the lanes of a float32x4 */
#define ST_NEON_NT 4 /* tokens per unpack of the weights */

static inline __attribute__((always_inline)) void s_group(const uint8_t *const *w, const uint8_t *const *pf, int nb,
                                                          bool q4, const uint8_t *const *xt, int NT, float32x4_t *acc) {
    const size_t bs = q4 ? sizeof(st_block_q4_0) : sizeof(st_block_q8_0);
    /* (-O2 does not unroll these small loops by itself; unrolled, the arrays live in registers) */
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        const size_t off = (size_t)b * bs;
        if (pf) {
#pragma GCC unroll 4
            for (int j = 0; j < ST_NEON_NR; j++) __builtin_prefetch(pf[j] + off);
        }
        int8x16_t lo[ST_NEON_NR], hi[ST_NEON_NR];
#pragma GCC unroll 4
        for (int j = 0; j < ST_NEON_NR; j++) s_unpack32(w[j] + off, q4, &lo[j], &hi[j]);
        const float32x4_t dw = s_scales4(w[0] + off, w[1] + off, w[2] + off, w[3] + off);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const st_block_q8_0 *x = (const st_block_q8_0 *)xt[t] + b;
            const int8x16_t xl = vld1q_s8(x->qs), xh = vld1q_s8(x->qs + 16);
            int32x4_t p[ST_NEON_NR];
#pragma GCC unroll 4
            for (int j = 0; j < ST_NEON_NR; j++) p[j] = s_dot16(s_dot16(vdupq_n_s32(0), lo[j], xl), hi[j], xh);
            const float32x4_t s = vcvtq_f32_s32(s_totals4(p[0], p[1], p[2], p[3]));
            acc[t] = vfmaq_f32(acc[t], s, vmulq_n_f32(dw, s_h2f(x->d)));
        }
    }
}

/* A group kernel: rows w[0..3] (their first blocks; pf: the next group's
 * rows to prefetch, or NULL) against the rows xt[t] of NT tokens, nb blocks;
 * acc[t] lane j = row j, token t. One function per (weight type, token
 * count): the loops unroll and acc stays in registers. */
typedef void (*s_group_fn)(const uint8_t *const *w, const uint8_t *const *pf, int nb, const uint8_t *const *xt,
                           float32x4_t *acc);

#define ST_NEON_GROUP(NAME, Q4, NT)                                                                                    \
    static void NAME(const uint8_t *const *w, const uint8_t *const *pf, int nb, const uint8_t *const *xt,              \
                     float32x4_t *acc) {                                                                               \
        s_group(w, pf, nb, Q4, xt, NT, acc);                                                                           \
    }
ST_NEON_GROUP(s_group_q4_1, true, 1)
ST_NEON_GROUP(s_group_q4_2, true, 2)
ST_NEON_GROUP(s_group_q4_3, true, 3)
ST_NEON_GROUP(s_group_q4_4, true, 4)
ST_NEON_GROUP(s_group_q8_1, false, 1)
ST_NEON_GROUP(s_group_q8_2, false, 2)
ST_NEON_GROUP(s_group_q8_3, false, 3)
ST_NEON_GROUP(s_group_q8_4, false, 4)

static const s_group_fn s_group_fns[2][ST_NEON_NT] = {{s_group_q8_1, s_group_q8_2, s_group_q8_3, s_group_q8_4},
                                                      {s_group_q4_1, s_group_q4_2, s_group_q4_3, s_group_q4_4}};

/* Row i of the work: rows[r0 + i] when listed, else r0 + i. */
static inline int s_row(const int32_t *rows, int r0, int i) { return rows ? rows[r0 + i] : r0 + i; }

/* The st_matmul_fn over group kernels: groups of 4 rows (a last group of 1..3
 * repeats its last row in the spare lanes), tokens in chunks of up to 4 that
 * go to fns[chunk size - 1]. Rows are row_bytes apart, nb blocks each. */
static void s_matmul_groups(const s_group_fn fns[ST_NEON_NT], size_t row_bytes, int nb, const void *vw,
                            const int32_t *rows, int r0, int r1, const void *vx, size_t x_stride, int n_tok, float *y,
                            size_t y_stride) {
    const int n = r1 - r0;
    const uint8_t *w = vw, *x = vx;
    for (int i = 0; i < n; i += ST_NEON_NR) {
        const int nr = n - i < ST_NEON_NR ? n - i : ST_NEON_NR;
        const uint8_t *wr[ST_NEON_NR], *pf[ST_NEON_NR];
        for (int j = 0; j < ST_NEON_NR; j++) /* spare lanes repeat the last row */
            wr[j] = w + (size_t)s_row(rows, r0, i + (j < nr ? j : nr - 1)) * row_bytes;
        const bool prefetch = rows && i + ST_NEON_NR < n;
        if (prefetch)
            for (int j = 0; j < ST_NEON_NR; j++) {
                const int k = i + ST_NEON_NR + j;
                pf[j] = w + (size_t)rows[r0 + (k < n ? k : n - 1)] * row_bytes;
            }
        for (int t0 = 0; t0 < n_tok; t0 += ST_NEON_NT) {
            const int nt = n_tok - t0 < ST_NEON_NT ? n_tok - t0 : ST_NEON_NT;
            const uint8_t *xt[ST_NEON_NT];
            for (int t = 0; t < nt; t++) xt[t] = x + (size_t)(t0 + t) * x_stride;
            float32x4_t acc[ST_NEON_NT];
            fns[nt - 1](wr, prefetch && t0 == 0 ? pf : NULL, nb, xt, acc);
            for (int t = 0; t < nt; t++) {
                float *yt = y + (size_t)(t0 + t) * y_stride;
                if (!rows && nr == ST_NEON_NR) {
                    vst1q_f32(yt + r0 + i, acc[t]);
                    continue;
                }
                float out[ST_NEON_NR];
                vst1q_f32(out, acc[t]);
                for (int j = 0; j < nr; j++) yt[s_row(rows, r0, i + j)] = out[j];
            }
        }
    }
}

/* st_matmul_fn for Q4_0 (q4) or Q8_0 weights */
static void s_matmul_q8(bool q4, int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                        size_t x_stride, int n_tok, float *y, size_t y_stride) {
    assert(n_in % ST_QK8_0 == 0);
    const int nb = n_in / ST_QK8_0;
    const size_t row_bytes = (size_t)nb * (q4 ? sizeof(st_block_q4_0) : sizeof(st_block_q8_0));
    s_matmul_groups(s_group_fns[q4], row_bytes, nb, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

#endif
