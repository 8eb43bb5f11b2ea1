/* quant_neon: activation quantization (Q8_0, Q8_K) and dequantization (Q4_0,
 * Q8_0, Q4_K, Q5_K, Q6_K) with ARMv8-A ASIMD; both Arm tables use them.
 *
 * Every function gives the same bits as its reference (the tests compare
 * with memcmp): the same float operations per element, the same choice of
 * maximum (fmaxnm ignores NaNs as fmaxf does), and the reference's rounding,
 * which ARMv8 has as instructions: fcvtas (nearest, halves away from zero)
 * is roundf for Q8_0, fcvtns (nearest even) is rintf for Q8_K. ggml's own NEON Q8_0 quantizer rounds
 * halves to even instead; we keep the reference's rule so that every table,
 * x86 or Arm, quantizes an activation row to the same bytes.
 */
#include "kernels_neon.h"
#include "kunpack.h"

#include <arm_neon.h>
#include <assert.h>
#include <string.h>

/* fp16 bits of f (fcvt, nearest even: the bits of st_fp32_to_fp16, tested) */
static inline uint16_t s_f2h(float f) {
    const __fp16 h = (__fp16)f;
    uint16_t u;
    memcpy(&u, &h, sizeof u);
    return u;
}

static inline float s_h2f(uint16_t u) {
    __fp16 h;
    memcpy(&h, &u, sizeof h);
    return (float)h;
}

/* 4 x 4 int32, each within int8, -> 16 int8 in order (plain narrowing: in range by construction) */
static inline int8x16_t s_narrow16(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    const int16x8_t lo = vcombine_s16(vmovn_s32(a), vmovn_s32(b)), hi = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
    return vcombine_s8(vmovn_s16(lo), vmovn_s16(hi));
}

/* Q8_0: d = amax / 127, q = roundf(x / d) (as x * (1 / d), like the reference) */
void st_from_float_q8_0_neon(int n, const float *x, void *vy) {
    assert(n % ST_QK8_0 == 0);
    st_block_q8_0 *y = vy;
    for (int b = 0; b < n / ST_QK8_0; b++, x += ST_QK8_0) {
        float32x4_t v[8];
        for (int k = 0; k < 8; k++) v[k] = vld1q_f32(x + 4 * k);
        float32x4_t m = vabsq_f32(v[0]);
        for (int k = 1; k < 8; k++) m = vmaxnmq_f32(m, vabsq_f32(v[k]));
        const float amax = vmaxnmvq_f32(m);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = s_f2h(d);
        int32x4_t q[8];
        for (int k = 0; k < 8; k++) q[k] = vcvtaq_s32_f32(vmulq_n_f32(v[k], id));
        vst1q_s8(y[b].qs, s_narrow16(q[0], q[1], q[2], q[3]));
        vst1q_s8(y[b].qs + 16, s_narrow16(q[4], q[5], q[6], q[7]));
    }
}

/* Q8_K: scale -127 / (the first element of largest magnitude, with its sign),
 * q = rintf(scale * x) capped at 127, the sums of each 16 quants, d = 1 / scale */
void st_from_float_q8_k_neon(int n, const float *x, void *vy) {
    assert(n % ST_QK_K == 0);
    st_block_q8_k *y = vy;
    for (int b = 0; b < n / ST_QK_K; b++, x += ST_QK_K) {
        float32x4_t m = vdupq_n_f32(0.0f);
        for (int k = 0; k < ST_QK_K; k += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + k)));
        const float amax = vmaxnmvq_f32(m);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float max = 0.0f;
        for (int k = 0; k < ST_QK_K; k++)
            if (x[k] == amax || x[k] == -amax) {
                max = x[k];
                break;
            }
        const float iscale = -127.0f / max;
        const int32x4_t cap = vdupq_n_s32(127);
        for (int k = 0; k < ST_QK_K; k += 16) {
            int32x4_t q[4];
            for (int j = 0; j < 4; j++)
                q[j] = vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + k + 4 * j), iscale)), cap);
            vst1q_s8(y[b].qs + k, s_narrow16(q[0], q[1], q[2], q[3]));
            y[b].bsums[k / 16] = (int16_t)vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])));
        }
        y[b].d = 1.0f / iscale;
    }
}

/* 32 int8 -> 32 floats times d, in order: float(q) * d as the reference */
static inline void s_store_scaled(int8x16_t lo, int8x16_t hi, float d, float *y) {
    const int16x8_t h[4] = {vmovl_s8(vget_low_s8(lo)), vmovl_high_s8(lo), vmovl_s8(vget_low_s8(hi)), vmovl_high_s8(hi)};
    for (int k = 0; k < 4; k++) {
        vst1q_f32(y + 8 * k, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(h[k]))), d));
        vst1q_f32(y + 8 * k + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(h[k])), d));
    }
}

void st_to_float_q4_0_neon(int n, const void *vx, float *y) {
    assert(n % ST_QK4_0 == 0);
    const st_block_q4_0 *x = vx;
    for (int b = 0; b < n / ST_QK4_0; b++, y += ST_QK4_0) {
        const uint8x16_t v = vld1q_u8(x[b].qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), vdupq_n_s8(8));
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), vdupq_n_s8(8));
        s_store_scaled(lo, hi, s_h2f(x[b].d), y);
    }
}

void st_to_float_q8_0_neon(int n, const void *vx, float *y) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q8_0 *x = vx;
    for (int b = 0; b < n / ST_QK8_0; b++, y += ST_QK8_0)
        s_store_scaled(vld1q_s8(x[b].qs), vld1q_s8(x[b].qs + 16), s_h2f(x[b].d), y);
}

/* 16 quants -> floats: float(q) * dl - ml, the reference's two roundings
 * (-ffp-contract=off keeps them two) */
static inline void s_store16(int8x16_t q, float dl, float ml, float *y) {
    const int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_high_s8(q);
    const int32x4_t v[4] = {vmovl_s16(vget_low_s16(lo)), vmovl_high_s16(lo), vmovl_s16(vget_low_s16(hi)),
                            vmovl_high_s16(hi)};
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) vst1q_f32(y + 4 * k, vsubq_f32(vmulq_n_f32(vcvtq_f32_s32(v[k]), dl), vdupq_n_f32(ml)));
}

/* Q4_K (q5 false) or Q5_K: group g of 32 is d * scale_g * q - dmin * min_g */
static inline __attribute__((always_inline)) void s_to_float_q45_k(int n, const void *vx, bool q5, float *y) {
    assert(n % ST_QK_K == 0);
    const size_t bs = q5 ? sizeof(st_block_q5_k) : sizeof(st_block_q4_k);
    const uint8_t *x = vx;
    for (int b = 0; b < n / ST_QK_K; b++, x += bs) {
        uint16_t d16, dmin16;
        memcpy(&d16, x, 2);
        memcpy(&dmin16, x + 2, 2);
        const float d = s_h2f(d16), dmin = s_h2f(dmin16);
        uint8_t sc[8], mn[8];
        s_scale_min_k4(x + 4, sc, mn);
        uint8x16_t h[2] = {vdupq_n_u8(0), vdupq_n_u8(0)};
        if (q5) {
            h[0] = vld1q_u8(x + offsetof(st_block_q5_k, qh));
            h[1] = vld1q_u8(x + offsetof(st_block_q5_k, qh) + 16);
        }
        const uint8_t *qs = x + (q5 ? offsetof(st_block_q5_k, qs) : offsetof(st_block_q4_k, qs));
        for (int j = 0; j < 4; j++, qs += 32, y += 64) {
            int8x16_t q[4];
            s_unpack_q45_k(qs, q5, h, q);
            for (int k = 0; k < 4; k++) {
                const int g = 2 * j + k / 2;
                s_store16(q[k], d * (float)sc[g], dmin * (float)mn[g], y + 16 * k);
            }
        }
    }
}

void st_to_float_q4_k_neon(int n, const void *x, float *y) { s_to_float_q45_k(n, x, false, y); }

void st_to_float_q5_k_neon(int n, const void *x, float *y) { s_to_float_q45_k(n, x, true, y); }

/* Q6_K: element e is d * scales[e / 16] * (q - 32); the product of the two
 * scales first, as the reference. No minimum: subtracting 0 leaves every
 * float as it is, -0 included. */
void st_to_float_q6_k_neon(int n, const void *vx, float *y) {
    assert(n % ST_QK_K == 0);
    const st_block_q6_k *x = vx;
    for (int b = 0; b < n / ST_QK_K; b++) {
        const float d = s_h2f(x[b].d);
        for (int half = 0; half < 2; half++, y += 128) {
            int8x16_t q[8];
            s_unpack_q6_k(x[b].ql + 64 * half, x[b].qh + 32 * half, q);
            for (int g = 0; g < 8; g++)
                s_store16(vsubq_s8(q[g], vdupq_n_s8(32)), d * (float)x[b].scales[8 * half + g], 0.0f, y + 16 * g);
        }
    }
}
