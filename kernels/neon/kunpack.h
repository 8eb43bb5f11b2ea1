/* kunpack.h: K-quant unpacking for both Arm tables, shared by the dot
 * products (int_dot.h, kquants_dot.h) and the dequantization (quant_neon.c):
 * the packed sub-block scales, and the quants of Q4_K / Q5_K / Q6_K as
 * unsigned bytes, 16 to a vector (layouts in kernels/ref/). Plain ASIMD
 * only, so any Arm file can include it; everything here is static.
 */
#ifndef ST_KUNPACK_H
#define ST_KUNPACK_H

#include <arm_neon.h>
#include <stdbool.h>
#include <string.h>

#include "st_kernels.h"

/* The 6-bit scales (sc) and minimums (mn) of a Q4_K / Q5_K super-block: bytes
 * 0..3 hold scales 0..3 and their top bits those of scales 4..7, bytes 4..7
 * the same for the minimums, and bytes 8..11 the low 4 bits of scales 4..7
 * (low nibbles) and of minimums 4..7 (high nibbles). Four at a time in a u32. */
static inline void s_scale_min_k4(const uint8_t *q, uint8_t sc[8], uint8_t mn[8]) {
    uint32_t a[3], s[2], m[2];
    memcpy(a, q, sizeof a);
    s[0] = a[0] & 0x3f3f3f3fu;
    m[0] = a[1] & 0x3f3f3f3fu;
    s[1] = (a[2] & 0x0f0f0f0fu) | ((a[0] >> 6) & 0x03030303u) << 4;
    m[1] = ((a[2] >> 4) & 0x0f0f0f0fu) | ((a[1] >> 6) & 0x03030303u) << 4;
    memcpy(sc, s, sizeof s);
    memcpy(mn, m, sizeof m);
}

/* The 16 signed scales (-32..31) of a Q3_K super-block: low 4 bits in the
 * nibbles of bytes 0..7 (scales 0..7 low, 8..15 high), top 2 bits in bytes
 * 8..11 (scale g: bits 2(g/4).. of byte 8 + g % 4), stored + 32. */
static inline void s_scales_q3_k(const uint8_t *q, int8_t sc[16]) {
    uint32_t a[3], u[4];
    memcpy(a, q, sizeof a);
    u[0] = (a[0] & 0x0f0f0f0fu) | (a[2] & 0x03030303u) << 4;
    u[1] = (a[1] & 0x0f0f0f0fu) | ((a[2] >> 2) & 0x03030303u) << 4;
    u[2] = ((a[0] >> 4) & 0x0f0f0f0fu) | ((a[2] >> 4) & 0x03030303u) << 4;
    u[3] = ((a[1] >> 4) & 0x0f0f0f0fu) | ((a[2] >> 6) & 0x03030303u) << 4;
    vst1q_s8(sc, vsubq_s8(vreinterpretq_s8_u32(vld1q_u32(u)), vdupq_n_s8(32)));
}

/* Quants 64j..64j+63 of a Q4_K (q5 false) or Q5_K super-block as bytes
 * 0..15 or 0..31: q[0], q[1] are group 2j (low nibbles of qs[0..31], qs
 * pointing at qs + 32j), q[2], q[3] group 2j + 1 (high nibbles). Q5_K's fifth
 * bits are bits 2j, 2j + 1 of qh[0..31]: h holds qh and is shifted down 2 per
 * call, so the bits to take are always bits 0 and 1. */
static inline __attribute__((always_inline)) void s_unpack_q45_k(const uint8_t *qs, bool q5, uint8x16_t h[2],
                                                                 int8x16_t q[4]) {
    const uint8x16_t m4 = vdupq_n_u8(0x0f), v0 = vld1q_u8(qs), v1 = vld1q_u8(qs + 16);
    uint8x16_t u[4] = {vandq_u8(v0, m4), vandq_u8(v1, m4), vshrq_n_u8(v0, 4), vshrq_n_u8(v1, 4)};
    if (q5) {
        const uint8x16_t one = vdupq_n_u8(1), two = vdupq_n_u8(2);
        u[0] = vorrq_u8(u[0], vshlq_n_u8(vandq_u8(h[0], one), 4));
        u[1] = vorrq_u8(u[1], vshlq_n_u8(vandq_u8(h[1], one), 4));
        u[2] = vorrq_u8(u[2], vshlq_n_u8(vandq_u8(h[0], two), 3));
        u[3] = vorrq_u8(u[3], vshlq_n_u8(vandq_u8(h[1], two), 3));
        h[0] = vshrq_n_u8(h[0], 2);
        h[1] = vshrq_n_u8(h[1], 2);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) q[k] = vreinterpretq_s8_u8(u[k]);
}

/* Elements 32k..32k+31 (k = 0..3, a constant) of half a Q6_K super-block (ql:
 * 64 bytes, qh: 32) as 6-bit quants 0..63 in bytes, q[0] and q[1] 16 each:
 * low 4 bits from the low (k < 2) or high nibbles of ql[32(k % 2)..], top 2
 * bits from bits 2k, 2k + 1 of qh[0..31]. A pair of groups of one scale each:
 * the matmul unpacks 4 rows a pair at a time. */
static inline __attribute__((always_inline)) void s_unpack_q6_k_pair(const uint8_t *ql, const uint8_t *qh, int k,
                                                                     int8x16_t q[2]) {
    const uint8x16_t m4 = vdupq_n_u8(0x0f), m30 = vdupq_n_u8(0x30);
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
        const uint8x16_t l = vld1q_u8(ql + 32 * (k % 2) + 16 * i), h = vld1q_u8(qh + 16 * i);
        const uint8x16_t lo = k < 2 ? vandq_u8(l, m4) : vshrq_n_u8(l, 4);
        const uint8x16_t hi = k == 0 ? vshlq_n_u8(h, 4) : k == 1 ? vshlq_n_u8(h, 2) : k == 2 ? h : vshrq_n_u8(h, 2);
        q[i] = vreinterpretq_s8_u8(vorrq_u8(lo, vandq_u8(hi, m30)));
    }
}

/* Half a Q6_K super-block as 6-bit quants 0..63 in bytes: q[g] holds its
 * elements 16g..16g+15, all of scale g of the half. */
static inline __attribute__((always_inline)) void s_unpack_q6_k(const uint8_t *ql, const uint8_t *qh, int8x16_t q[8]) {
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) s_unpack_q6_k_pair(ql, qh, k, q + 2 * k);
}

#endif
