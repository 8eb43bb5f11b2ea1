/* kquants_matmul.h: the Q4_K, Q5_K and Q6_K x Q8_K matmuls for both Arm
 * tables, written once over s_dot16 and int_dot.h's 4-row driver
 * (s_matmul_groups), as kquants_dot.h is for the dot products.
 *
 * Q4_K_M files are mostly Q4_K with Q6_K for some tensors (output head, parts
 * of attn_v and of the experts' down matrices), Q5_K_M files the same with
 * Q5_K, so prompt processing and batched decoding on a Pi run through these.
 * A super-block of each of 4 rows is unpacked once (the packed scales; the
 * quants 64 (Q4_K, Q5_K) or 32 (Q6_K) at a time) and used by up to 4 tokens.
 * Q4_K and Q5_K share one group function, as their dot products do: Q5_K adds
 * the fifth bit from qh to the Q4_K nibbles (quants 0..31 in place of 0..15),
 * testing qh's bits in place for each 64 quants (the dot product shifts qh
 * along in 2 registers; for 4 rows that would spill). Per token and group of quants of one scale, the 4
 * rows' dot products come out of s_dot16 and one pairwise-add tree in row
 * order (lane j = row j) and are weighted by the 4 rows' scales in one
 * multiply-accumulate: the scales are transposed once per super-block so that
 * lane j holds row j's. The minimum (Q4_K, Q5_K) and -32 offset (Q6_K) terms
 * against Q8_K's bsums stay per token, computed per row as the dot products do.
 *
 * Each (row, token) result is the table's dot product, bit for bit: its
 * super-block sums are the same exact int32s (the same products, grouped
 * otherwise; bounds in kquants_dot.h and int_dot.h), and its float steps are
 * the dot product's, done lane by lane (without FMA: the build has
 * -ffp-contract=off). So it does not depend on the group the row falls in, the
 * row list or the other tokens of the call, and neon and neon-dotprod still
 * agree (test_kernels_quant: q4_k/q5_k/q6_k_matmul_is_the_dot_product_bit_for_bit).
 */
#ifndef ST_KQUANTS_MATMUL_H
#define ST_KQUANTS_MATMUL_H

#include "int_dot.h"

/* the bytes [off, off + n) of the 4 rows pf, one prefetch per cache line */
static inline __attribute__((always_inline)) void s_prefetch4(const uint8_t *const *pf, size_t off, size_t n) {
#pragma GCC unroll 4
    for (int j = 0; j < ST_NEON_NR; j++)
        for (size_t o = 0; o < n; o += 64) __builtin_prefetch(pf[j] + off + o);
}

/* s_group_fn for Q4_K (q5 false) or Q5_K: the steps of s_vec_dot_q45_k for 4
 * rows in 4 lanes. Both layouts start with d, dmin, scales[12]; Q5_K's qh (the
 * fifth bits) comes before qs. */
static inline __attribute__((always_inline)) void s_group_q45_k(const uint8_t *const *w, const uint8_t *const *pf,
                                                                int nb, bool q5, const uint8_t *const *xt, int NT,
                                                                float32x4_t *acc) {
    const size_t bs = q5 ? sizeof(st_block_q5_k) : sizeof(st_block_q4_k);
    const size_t qs_off = q5 ? offsetof(st_block_q5_k, qs) : offsetof(st_block_q4_k, qs);
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk[ST_NEON_NR]; /* the 4 rows' super-blocks b */
#pragma GCC unroll 4
        for (int j = 0; j < ST_NEON_NR; j++) blk[j] = w[j] + (size_t)b * bs;
        if (pf) s_prefetch4(pf, (size_t)b * bs, bs);
        uint8_t sc[ST_NEON_NR][8], mn[ST_NEON_NR][8], sct[32];
#pragma GCC unroll 4
        for (int j = 0; j < ST_NEON_NR; j++) s_scale_min_k4(blk[j] + offsetof(st_block_q4_k, scales), sc[j], mn[j]);
        /* sct[4g + j]: scale g of row j */
        vst4_u8(sct, (uint8x8x4_t){{vld1_u8(sc[0]), vld1_u8(sc[1]), vld1_u8(sc[2]), vld1_u8(sc[3])}});

        int32x4_t isum[ST_NEON_NT];
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) isum[t] = vdupq_n_s32(0);
        for (int c = 0; c < 4; c++) { /* quants 64c..64c+63: groups 2c, 2c + 1 */
            int8x16_t q[ST_NEON_NR][4];
            /* Q5_K: the fifth bits of groups 2c, 2c + 1 are bits 2c, 2c + 1 of
             * qh[0..31], tested in place (no qh shifted along c: kept for 4
             * rows, that would take 8 more registers) and or-ed in as 16 */
            const uint8x16_t m_lo = vdupq_n_u8((uint8_t)(1u << 2 * c)), m_hi = vdupq_n_u8((uint8_t)(2u << 2 * c));
            const uint8x16_t sixteen = vdupq_n_u8(16);
#pragma GCC unroll 4
            for (int j = 0; j < ST_NEON_NR; j++) {
                s_unpack_q45_k(blk[j] + qs_off + 32 * c, false, NULL, q[j]);
                if (q5) {
                    const uint8_t *qh = blk[j] + offsetof(st_block_q5_k, qh);
                    const uint8x16_t h0 = vld1q_u8(qh), h1 = vld1q_u8(qh + 16);
                    q[j][0] = vorrq_s8(q[j][0], vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h0, m_lo), sixteen)));
                    q[j][1] = vorrq_s8(q[j][1], vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h1, m_lo), sixteen)));
                    q[j][2] = vorrq_s8(q[j][2], vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h0, m_hi), sixteen)));
                    q[j][3] = vorrq_s8(q[j][3], vreinterpretq_s8_u8(vandq_u8(vtstq_u8(h1, m_hi), sixteen)));
                }
            }
            const uint16x8_t s16 = vmovl_u8(vld1_u8(sct + 8 * c));
            const int32x4_t s_lo = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(s16)));
            const int32x4_t s_hi = vreinterpretq_s32_u32(vmovl_high_u16(s16));
#pragma GCC unroll 4
            for (int t = 0; t < NT; t++) {
                const int8_t *y = ((const st_block_q8_k *)xt[t])[b].qs + 64 * c;
                int32x4_t p[ST_NEON_NR];
                const int8x16_t y0 = vld1q_s8(y), y1 = vld1q_s8(y + 16), y2 = vld1q_s8(y + 32), y3 = vld1q_s8(y + 48);
#pragma GCC unroll 4
                for (int j = 0; j < ST_NEON_NR; j++) p[j] = s_dot16(s_dot16(vdupq_n_s32(0), q[j][0], y0), q[j][1], y1);
                isum[t] = vmlaq_s32(isum[t], s_totals4(p[0], p[1], p[2], p[3]), s_lo);
#pragma GCC unroll 4
                for (int j = 0; j < ST_NEON_NR; j++) p[j] = s_dot16(s_dot16(vdupq_n_s32(0), q[j][2], y2), q[j][3], y3);
                isum[t] = vmlaq_s32(isum[t], s_totals4(p[0], p[1], p[2], p[3]), s_hi);
            }
        }

        const size_t o = offsetof(st_block_q4_k, dmin);
        const float32x4_t dw = s_scales4(blk[0], blk[1], blk[2], blk[3]); /* d: at offset 0 */
        const float32x4_t dmin = s_scales4(blk[0] + o, blk[1] + o, blk[2] + o, blk[3] + o);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const st_block_q8_k *x = (const st_block_q8_k *)xt[t] + b;
            /* the minimums against the sums of 32 activations, per row as the dot product does */
            const int16x8_t bsums = vpaddq_s16(vld1q_s16(x->bsums), vld1q_s16(x->bsums + 8));
            int32x4_t pm[ST_NEON_NR];
#pragma GCC unroll 4
            for (int j = 0; j < ST_NEON_NR; j++) {
                const int16x8_t m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(mn[j])));
                pm[j] = vmlal_high_s16(vmull_s16(vget_low_s16(m), vget_low_s16(bsums)), m, bsums);
            }
            const float32x4_t fsum = vcvtq_f32_s32(isum[t]);
            const float32x4_t fmins = vcvtq_f32_s32(s_totals4(pm[0], pm[1], pm[2], pm[3]));
            /* the dot product's steps: sum += d_x d_w isum - d_x dmin_w imins */
            acc[t] = vaddq_f32(
                acc[t], vsubq_f32(vmulq_f32(vmulq_n_f32(dw, x->d), fsum), vmulq_f32(vmulq_n_f32(dmin, x->d), fmins)));
        }
    }
}

/* s_group_fn for Q6_K: the steps of s_vec_dot_q6_k for 4 rows in 4 lanes; the
 * quants 32 at a time (a pair of groups of 16 with a scale each) */
static inline __attribute__((always_inline)) void s_group_q6_k(const uint8_t *const *w, const uint8_t *const *pf,
                                                               int nb, const uint8_t *const *xt, int NT,
                                                               float32x4_t *acc) {
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) acc[t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        const st_block_q6_k *blk[ST_NEON_NR];
#pragma GCC unroll 4
        for (int j = 0; j < ST_NEON_NR; j++) blk[j] = (const st_block_q6_k *)w[j] + b;
        if (pf) s_prefetch4(pf, (size_t)b * sizeof(st_block_q6_k), sizeof(st_block_q6_k));
        int8_t sct[64]; /* sct[4g + j]: scale g of row j */
        vst4q_s8(sct, (int8x16x4_t){{vld1q_s8(blk[0]->scales), vld1q_s8(blk[1]->scales), vld1q_s8(blk[2]->scales),
                                     vld1q_s8(blk[3]->scales)}});

        int32x4_t isum[ST_NEON_NT];
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) isum[t] = vdupq_n_s32(0);
        for (int half = 0; half < 2; half++) {
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) { /* quants 128 half + 32k..: groups 8 half + 2k, 8 half + 2k + 1 */
                /* loads not merged with the other pairs' (the same ql, qh bytes): merged, they spill */
                __asm__ volatile("" ::: "memory");
                int8x16_t q[ST_NEON_NR][2];
#pragma GCC unroll 4
                for (int j = 0; j < ST_NEON_NR; j++)
                    s_unpack_q6_k_pair(blk[j]->ql + 64 * half, blk[j]->qh + 32 * half, k, q[j]);
                const int16x8_t s16 = vmovl_s8(vld1_s8(sct + 4 * (8 * half + 2 * k)));
                const int32x4_t s_lo = vmovl_s16(vget_low_s16(s16)), s_hi = vmovl_high_s16(s16);
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const int8_t *y = ((const st_block_q8_k *)xt[t])[b].qs + 128 * half + 32 * k;
                    const int8x16_t y0 = vld1q_s8(y), y1 = vld1q_s8(y + 16);
                    int32x4_t p[ST_NEON_NR];
#pragma GCC unroll 4
                    for (int j = 0; j < ST_NEON_NR; j++) p[j] = s_dot16(vdupq_n_s32(0), q[j][0], y0);
                    isum[t] = vmlaq_s32(isum[t], s_totals4(p[0], p[1], p[2], p[3]), s_lo);
#pragma GCC unroll 4
                    for (int j = 0; j < ST_NEON_NR; j++) p[j] = s_dot16(vdupq_n_s32(0), q[j][1], y1);
                    isum[t] = vmlaq_s32(isum[t], s_totals4(p[0], p[1], p[2], p[3]), s_hi);
                }
            }
        }

        const float32x4_t dw = s_scales4((const uint8_t *)&blk[0]->d, (const uint8_t *)&blk[1]->d,
                                         (const uint8_t *)&blk[2]->d, (const uint8_t *)&blk[3]->d);
#pragma GCC unroll 4
        for (int t = 0; t < NT; t++) {
            const st_block_q8_k *x = (const st_block_q8_k *)xt[t] + b;
            /* the -32 offset of the quants: 32 sum_g scale_g bsums_g, per row as the dot product does */
            const int16x8_t bs0 = vld1q_s16(x->bsums), bs1 = vld1q_s16(x->bsums + 8);
            int32x4_t pm[ST_NEON_NR];
#pragma GCC unroll 4
            for (int j = 0; j < ST_NEON_NR; j++) {
                const int8x16_t sc = vld1q_s8(blk[j]->scales);
                const int16x8_t sc0 = vmovl_s8(vget_low_s8(sc)), sc1 = vmovl_high_s8(sc);
                int32x4_t m = vmull_s16(vget_low_s16(sc0), vget_low_s16(bs0));
                m = vmlal_high_s16(m, sc0, bs0);
                m = vmlal_s16(m, vget_low_s16(sc1), vget_low_s16(bs1));
                pm[j] = vmlal_high_s16(m, sc1, bs1);
            }
            const int32x4_t s = vmlsq_n_s32(isum[t], s_totals4(pm[0], pm[1], pm[2], pm[3]), 32);
            /* the dot product's steps: sum += d_w d_x isum */
            acc[t] = vaddq_f32(acc[t], vmulq_f32(vmulq_n_f32(dw, x->d), vcvtq_f32_s32(s)));
        }
    }
}

#define ST_NEON_KQ_GROUP(NAME, BODY, NT)                                                                               \
    static void NAME(const uint8_t *const *w, const uint8_t *const *pf, int nb, const uint8_t *const *xt,              \
                     float32x4_t *acc) {                                                                               \
        BODY(w, pf, nb, xt, NT, acc);                                                                                  \
    }
#define s_group_q4_k(w, pf, nb, xt, NT, acc) s_group_q45_k(w, pf, nb, false, xt, NT, acc)
#define s_group_q5_k(w, pf, nb, xt, NT, acc) s_group_q45_k(w, pf, nb, true, xt, NT, acc)
ST_NEON_KQ_GROUP(s_group_q4_k_1, s_group_q4_k, 1)
ST_NEON_KQ_GROUP(s_group_q4_k_2, s_group_q4_k, 2)
ST_NEON_KQ_GROUP(s_group_q4_k_3, s_group_q4_k, 3)
ST_NEON_KQ_GROUP(s_group_q4_k_4, s_group_q4_k, 4)

ST_NEON_KQ_GROUP(s_group_q5_k_1, s_group_q5_k, 1)
ST_NEON_KQ_GROUP(s_group_q5_k_2, s_group_q5_k, 2)
ST_NEON_KQ_GROUP(s_group_q5_k_3, s_group_q5_k, 3)
ST_NEON_KQ_GROUP(s_group_q5_k_4, s_group_q5_k, 4)

ST_NEON_KQ_GROUP(s_group_q6_k_1, s_group_q6_k, 1)
ST_NEON_KQ_GROUP(s_group_q6_k_2, s_group_q6_k, 2)
ST_NEON_KQ_GROUP(s_group_q6_k_3, s_group_q6_k, 3)
ST_NEON_KQ_GROUP(s_group_q6_k_4, s_group_q6_k, 4)

static const s_group_fn s_group_q4_k_fns[ST_NEON_NT] = {s_group_q4_k_1, s_group_q4_k_2, s_group_q4_k_3, s_group_q4_k_4};
static const s_group_fn s_group_q5_k_fns[ST_NEON_NT] = {s_group_q5_k_1, s_group_q5_k_2, s_group_q5_k_3, s_group_q5_k_4};
static const s_group_fn s_group_q6_k_fns[ST_NEON_NT] = {s_group_q6_k_1, s_group_q6_k_2, s_group_q6_k_3, s_group_q6_k_4};

/* st_matmul_fn for Q4_K weights */
static void s_matmul_q4_k(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x, size_t x_stride,
                          int n_tok, float *y, size_t y_stride) {
    assert(n_in % ST_QK_K == 0);
    const int nb = n_in / ST_QK_K;
    s_matmul_groups(s_group_q4_k_fns, (size_t)nb * sizeof(st_block_q4_k), nb, w, rows, r0, r1, x, x_stride, n_tok, y,
                    y_stride);
}

/* st_matmul_fn for Q5_K weights */
static void s_matmul_q5_k(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x, size_t x_stride,
                          int n_tok, float *y, size_t y_stride) {
    assert(n_in % ST_QK_K == 0);
    const int nb = n_in / ST_QK_K;
    s_matmul_groups(s_group_q5_k_fns, (size_t)nb * sizeof(st_block_q5_k), nb, w, rows, r0, r1, x, x_stride, n_tok, y,
                    y_stride);
}

/* st_matmul_fn for Q6_K weights */
static void s_matmul_q6_k(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x, size_t x_stride,
                          int n_tok, float *y, size_t y_stride) {
    assert(n_in % ST_QK_K == 0);
    const int nb = n_in / ST_QK_K;
    s_matmul_groups(s_group_q6_k_fns, (size_t)nb * sizeof(st_block_q6_k), nb, w, rows, r0, r1, x, x_stride, n_tok, y,
                    y_stride);
}

#endif
