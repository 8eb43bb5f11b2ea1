/* legacy_dot.h: Q4_1 x Q8_1, Q5_0 x Q8_0 and Q5_1 x Q8_1 dot products for
 * both Arm tables, written once over s_dot16 as int_dot.h is (the includer
 * defines it first; layouts in kernels/ref/legacy_ref.c).
 *
 * A block's 32 quants become signed bytes (Q4_1 0..15, Q5_0 -16..15, Q5_1
 * 0..31), its products with the activations one exact int32 (at most
 * 32 * 31 * 128 in size), and as in s_vec_dot_q8 four blocks go through one
 * step, block b in float lane b % 4: acc += sum * (d_w d_x), and for Q4_1 /
 * Q5_1 acc += m_w * s_x, Q8_1's d * sum(q) standing in for the block's
 * activations as in ggml. Only lane totals are used, so neon and
 * neon-dotprod give the same bits; against the reference only the float
 * order differs.
 */
#ifndef ST_LEGACY_DOT_H
#define ST_LEGACY_DOT_H

#include "int_dot.h"

/* The quants of one block (q5: Q5_0 or Q5_1; min: Q4_1 or Q5_1): elements
 * 0..15 in lo, 16..31 in hi. The fifth bit of element j is bit j of the
 * little-endian qh; bytes 0, 1 of qh are spread over lo's lanes and bytes
 * 2, 3 over hi's, and each lane tests its own bit (j % 8). */
static inline __attribute__((always_inline)) void s_unpack_legacy(const uint8_t *blk, bool q5, bool min, int8x16_t *lo,
                                                                  int8x16_t *hi) {
    const uint8_t *qh = blk + (min ? 4 : 2), *qs = qh + (q5 ? 4 : 0);
    const uint8x16_t v = vld1q_u8(qs);
    uint8x16_t l = vandq_u8(v, vdupq_n_u8(0x0f)), h = vshrq_n_u8(v, 4);
    if (q5) {
        uint32_t bits;
        memcpy(&bits, qh, 4);
        const uint8x8_t b = vcreate_u8(bits);
        const uint8x16_t lane_bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040201008040201ull)), b4 = vdupq_n_u8(0x10);
        l = vorrq_u8(l, vandq_u8(vtstq_u8(vcombine_u8(vdup_lane_u8(b, 0), vdup_lane_u8(b, 1)), lane_bit), b4));
        h = vorrq_u8(h, vandq_u8(vtstq_u8(vcombine_u8(vdup_lane_u8(b, 2), vdup_lane_u8(b, 3)), lane_bit), b4));
    }
    *lo = vreinterpretq_s8_u8(l);
    *hi = vreinterpretq_s8_u8(h);
    if (q5 && !min) { /* Q5_0: value q - 16 */
        *lo = vsubq_s8(*lo, vdupq_n_s8(16));
        *hi = vsubq_s8(*hi, vdupq_n_s8(16));
    }
}

/* 4 consecutive blocks of w (bs bytes each) against 4 activation blocks (xs
 * bytes each: Q8_1 when min, else Q8_0), added to acc lane by lane. */
static inline __attribute__((always_inline)) float32x4_t s_legacy4(float32x4_t acc, const uint8_t *w, size_t bs,
                                                                   const uint8_t *x, size_t xs, bool q5, bool min) {
    const size_t xq = min ? offsetof(st_block_q8_1, qs) : offsetof(st_block_q8_0, qs);
    int32x4_t p[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        int8x16_t lo, hi;
        s_unpack_legacy(w + k * bs, q5, min, &lo, &hi);
        const int8_t *y = (const int8_t *)(x + k * xs + xq);
        p[k] = s_dot16(s_dot16(vdupq_n_s32(0), lo, vld1q_s8(y)), hi, vld1q_s8(y + 16));
    }
    const float32x4_t dw = s_scales4(w, w + bs, w + 2 * bs, w + 3 * bs),
                      dx = s_scales4(x, x + xs, x + 2 * xs, x + 3 * xs);
    acc = vfmaq_f32(acc, vcvtq_f32_s32(s_totals4(p[0], p[1], p[2], p[3])), vmulq_f32(dw, dx));
    if (min) /* the fp16 minimum and Q8_1's s follow the scales */
        acc = vfmaq_f32(acc, s_scales4(w + 2, w + bs + 2, w + 2 * bs + 2, w + 3 * bs + 2),
                        s_scales4(x + 2, x + xs + 2, x + 2 * xs + 2, x + 3 * xs + 2));
    return acc;
}

static inline __attribute__((always_inline)) float s_vec_dot_legacy(int n, const void *vw, bool q5, bool min,
                                                                    const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const size_t bs = q5 ? (min ? sizeof(st_block_q5_1) : sizeof(st_block_q5_0)) : sizeof(st_block_q4_1);
    const size_t xs = min ? sizeof(st_block_q8_1) : sizeof(st_block_q8_0);
    const uint8_t *w = vw, *x = vx;
    const int nb = n / ST_QK8_0;
    float32x4_t acc = vdupq_n_f32(0.0f);
    int b = 0;
    for (; b + 4 <= nb; b += 4) acc = s_legacy4(acc, w + b * bs, bs, x + b * xs, xs, q5, min);
    if (b < nb) { /* the last 1..3 blocks in the same lanes, beside zero blocks (scales 0: they add 0) */
        uint8_t wt[4 * sizeof(st_block_q5_1)] = {0}, xt[4 * sizeof(st_block_q8_1)] = {0};
        memcpy(wt, w + b * bs, (nb - b) * bs);
        memcpy(xt, x + b * xs, (nb - b) * xs);
        acc = s_legacy4(acc, wt, bs, xt, xs, q5, min);
    }
    return vaddvq_f32(acc);
}

#endif
