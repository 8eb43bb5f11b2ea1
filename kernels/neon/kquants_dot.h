/* kquants_dot.h: Q2_K, Q3_K, Q4_K and Q5_K x Q8_K dot products for both Arm
 * tables, written once over s_dot16 as int_dot.h is (the includer defines it
 * first; layouts in kernels/ref/kquants_ref.c).
 *
 * Each super-block is unpacked 16 quants at a time into signed bytes (Q2_K
 * 0..3, Q3_K -4..3, Q4_K 0..15, Q5_K 0..31), multiplied with the activations
 * by s_dot16 and weighted by the group's scale with one multiply-accumulate
 * per vector; the minimums of Q2_K/Q4_K/Q5_K are sum_g min_g * bsums_g from
 * Q8_K's sums of 16 activations. So a super-block is one exact int32 (and
 * one for its minimums), scaled once in float as ggml's NEON kernels do; only
 * lane totals are used, so neon and neon-dotprod give the same bits. Against
 * the reference only the float order differs (it keeps 8 float lanes for
 * Q3_K/Q4_K/Q5_K; Q2_K takes its float steps).
 *
 * Bounds: a group's dot product is at most 32 * 31 * 128 in size (Q5_K),
 * times a scale of at most 63, and a super-block adds 8 such groups (Q3_K:
 * 16 groups of 16 * 4 * 128 times at most 32): below 2^26, far from int32's end.
 */
#ifndef ST_KQUANTS_DOT_H
#define ST_KQUANTS_DOT_H

#include "int_dot.h"

/* Q4_K (q5 false) or Q5_K x Q8_K: group g of 32 quants against y[32g..]. */
static inline __attribute__((always_inline)) float s_vec_dot_q45_k(int n, const void *vw, bool q5, const void *vx) {
    assert(n % ST_QK_K == 0);
    const size_t bs = q5 ? sizeof(st_block_q5_k) : sizeof(st_block_q4_k);
    const uint8_t *w = vw;
    const st_block_q8_k *x = vx;
    float sum = 0.0f;
    for (int b = 0; b < n / ST_QK_K; b++, w += bs) {
        /* both layouts start with d, dmin, scales[12]; Q5_K's qh comes before qs */
        const uint8_t *qs = w + (q5 ? offsetof(st_block_q5_k, qs) : offsetof(st_block_q4_k, qs));
        uint8_t sc[8], mn[8];
        s_scale_min_k4(w + 4, sc, mn);
        const int16x8_t bsums = vpaddq_s16(vld1q_s16(x[b].bsums), vld1q_s16(x[b].bsums + 8)); /* per 32 */
        const int16x8_t mins = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn)));
        const int32_t imins =
            vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(mins), vget_low_s16(bsums)), mins, bsums));

        uint8x16_t h[2] = {vdupq_n_u8(0), vdupq_n_u8(0)};
        if (q5) {
            h[0] = vld1q_u8(w + offsetof(st_block_q5_k, qh));
            h[1] = vld1q_u8(w + offsetof(st_block_q5_k, qh) + 16);
        }
        const int8_t *y = x[b].qs;
        int32x4_t acc = vdupq_n_s32(0);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++, qs += 32, y += 64) {
            int8x16_t q[4];
            s_unpack_q45_k(qs, q5, h, q);
            const int32x4_t plo = s_dot16(s_dot16(vdupq_n_s32(0), q[0], vld1q_s8(y)), q[1], vld1q_s8(y + 16));
            const int32x4_t phi = s_dot16(s_dot16(vdupq_n_s32(0), q[2], vld1q_s8(y + 32)), q[3], vld1q_s8(y + 48));
            acc = vmlaq_n_s32(acc, plo, sc[2 * j]);
            acc = vmlaq_n_s32(acc, phi, sc[2 * j + 1]);
        }
        uint16_t d, dmin;
        memcpy(&d, w, 2);
        memcpy(&dmin, w + 2, 2);
        sum += x[b].d * s_h2f(d) * (float)vaddvq_s32(acc) - x[b].d * s_h2f(dmin) * (float)imins;
    }
    return sum;
}

/* Q2_K (q3 false) or Q3_K x Q8_K. The 32 bytes qs[32h..] hold chunks k = 0..3
 * of 32 quants (bits 2k, 2k+1; shifted down 2 per chunk), half a chunk per
 * group; Q3_K's high bit of chunk 4h + k is that bit of hmask[0..31] (shifted
 * down 1 per chunk), and a clear bit means -4. Q2_K's minimums: 16 of them
 * against the 16 bsums. */
static inline __attribute__((always_inline)) float s_vec_dot_q23_k(int n, const void *vw, bool q3, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q2_k *w2 = vw;
    const st_block_q3_k *w3 = vw;
    const st_block_q8_k *x = vx;
    const uint8x16_t m3 = vdupq_n_u8(3), m4 = vdupq_n_u8(0x0f), one = vdupq_n_u8(1);
    float sum = 0.0f;
    for (int b = 0; b < n / ST_QK_K; b++) {
        const uint8_t *qs = q3 ? w3[b].qs : w2[b].qs;
        int8_t sc[16];
        int32_t imins = 0;
        uint8x16_t h0 = vdupq_n_u8(0), h1 = vdupq_n_u8(0);
        if (q3) {
            s_scales_q3_k(w3[b].scales, sc);
            h0 = vld1q_u8(w3[b].hmask);
            h1 = vld1q_u8(w3[b].hmask + 16);
        } else {
            const uint8x16_t sm = vld1q_u8(w2[b].scales);
            vst1q_s8(sc, vreinterpretq_s8_u8(vandq_u8(sm, m4)));
            const uint8x16_t mn = vshrq_n_u8(sm, 4);
            const int16x8_t mn0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mn)));
            const int16x8_t mn1 = vreinterpretq_s16_u16(vmovl_high_u8(mn));
            const int16x8_t bs0 = vld1q_s16(x[b].bsums), bs1 = vld1q_s16(x[b].bsums + 8);
            int32x4_t p = vmull_s16(vget_low_s16(mn0), vget_low_s16(bs0));
            p = vmlal_high_s16(p, mn0, bs0);
            p = vmlal_s16(p, vget_low_s16(mn1), vget_low_s16(bs1));
            imins = vaddvq_s32(vmlal_high_s16(p, mn1, bs1));
        }
        const int8_t *y = x[b].qs;
        int32x4_t acc = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {
            uint8x16_t v0 = vld1q_u8(qs + 32 * h), v1 = vld1q_u8(qs + 32 * h + 16);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++, y += 32) {
                int8x16_t q0 = vreinterpretq_s8_u8(vandq_u8(v0, m3)), q1 = vreinterpretq_s8_u8(vandq_u8(v1, m3));
                if (q3) {
                    q0 = vsubq_s8(q0, vreinterpretq_s8_u8(vshlq_n_u8(vbicq_u8(one, h0), 2)));
                    q1 = vsubq_s8(q1, vreinterpretq_s8_u8(vshlq_n_u8(vbicq_u8(one, h1), 2)));
                    h0 = vshrq_n_u8(h0, 1);
                    h1 = vshrq_n_u8(h1, 1);
                }
                acc = vmlaq_n_s32(acc, s_dot16(vdupq_n_s32(0), q0, vld1q_s8(y)), sc[8 * h + 2 * k]);
                acc = vmlaq_n_s32(acc, s_dot16(vdupq_n_s32(0), q1, vld1q_s8(y + 16)), sc[8 * h + 2 * k + 1]);
                v0 = vshrq_n_u8(v0, 2);
                v1 = vshrq_n_u8(v1, 2);
            }
        }
        const float isum = (float)vaddvq_s32(acc);
        if (q3)
            sum += s_h2f(w3[b].d) * x[b].d * isum;
        else /* the reference's steps */
            sum += x[b].d * s_h2f(w2[b].d) * isum - x[b].d * s_h2f(w2[b].dmin) * (float)imins;
    }
    return sum;
}

#endif
