/* float_neon: dot products and conversions of the float formats (F32, F16,
 * BF16) with ARMv8-A ASIMD; both Arm tables use them.
 *
 * Dot products widen to f32 and keep 8 independent accumulators of 4 lanes
 * (32 lanes, as the AVX2 table has, so a lane adds at most n/32 terms), with
 * FMA; the reference accumulates in double, so only the rounding differs.
 * ggml multiplies F16 in f16 arithmetic where the CPU has it (Pi 5); we stay
 * in f32 like its x86 path: more accurate, and the same on Pi 4 and Pi 5.
 * fp16 <-> f32 use fcvt (nearest even, NaNs quieted with their payload): the
 * same bits as st_fp16_to_fp32 / st_fp32_to_fp16 (tested on every half and
 * on random floats).
 */
#include "kernels_neon.h"

#include <arm_neon.h>

typedef enum { S_F32, S_F16, S_BF16 } s_fmt_t;

/* elements i..i+3 of a row of format f, as floats */
static inline __attribute__((always_inline)) float32x4_t s_load4(const void *p, int i, s_fmt_t f) {
    if (f == S_F32) return vld1q_f32((const float *)p + i);
    const uint16x4_t h = vld1_u16((const uint16_t *)p + i);
    if (f == S_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16)); /* bf16: the top half of an f32 */
}

static inline __attribute__((always_inline)) float s_load1(const void *p, int i, s_fmt_t f) {
    if (f == S_F32) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    return f == S_F16 ? st_fp16_to_fp32(h) : st_bf16_to_fp32(h);
}

static inline __attribute__((always_inline)) float s_dot(int n, const void *w, const void *x, s_fmt_t f) {
    float32x4_t a[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) a[k] = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 32 <= n; i += 32)
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) a[k] = vfmaq_f32(a[k], s_load4(w, i + 4 * k, f), s_load4(x, i + 4 * k, f));
    /* the rest into a[0]: a[variable] would keep the whole array in memory */
    for (; i + 4 <= n; i += 4) a[0] = vfmaq_f32(a[0], s_load4(w, i, f), s_load4(x, i, f));
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) a[k] = vaddq_f32(a[k], a[k + 4]);
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])));
    for (; i < n; i++) sum += s_load1(w, i, f) * s_load1(x, i, f);
    return sum;
}

void st_vec_dot_f32_f32_neon(int n, float *s, const void *w, const void *x) { *s = s_dot(n, w, x, S_F32); }

void st_vec_dot_f16_f16_neon(int n, float *s, const void *w, const void *x) { *s = s_dot(n, w, x, S_F16); }

void st_vec_dot_bf16_bf16_neon(int n, float *s, const void *w, const void *x) { *s = s_dot(n, w, x, S_BF16); }

void st_from_float_f16_neon(int n, const float *x, void *vy) {
    uint16_t *y = vy;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(x + i)), vld1q_f32(x + i + 4));
        vst1q_u16(y + i, vreinterpretq_u16_f16(h));
    }
    for (; i < n; i++) y[i] = st_fp32_to_fp16(x[i]);
}

void st_to_float_f16_neon(int n, const void *vx, float *y) {
    const uint16_t *x = vx;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
        vst1q_f32(y + i, vcvt_f32_f16(vget_low_f16(h)));
        vst1q_f32(y + i + 4, vcvt_high_f32_f16(h));
    }
    for (; i < n; i++) y[i] = st_fp16_to_fp32(x[i]);
}

void st_axpy_f32_neon(int n, float a, const void *vx, float *y) {
    const float *x = vx;
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vmulq_n_f32(vld1q_f32(x + i), a)));
    for (; i < n; i++) y[i] += a * x[i];
}

void st_axpy_f16_neon(int n, float a, const void *vx, float *y) {
    const uint16_t *x = vx;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
        vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vmulq_n_f32(vcvt_f32_f16(vget_low_f16(h)), a)));
        vst1q_f32(y + i + 4, vaddq_f32(vld1q_f32(y + i + 4), vmulq_n_f32(vcvt_high_f32_f16(h), a)));
    }
    for (; i < n; i++) y[i] += a * st_fp16_to_fp32(x[i]);
}

void st_to_float_bf16_neon(int n, const void *vx, float *y) {
    const uint16_t *x = vx;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const uint16x8_t h = vld1q_u16(x + i);
        vst1q_f32(y + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)));
        vst1q_f32(y + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)));
    }
    for (; i < n; i++) y[i] = st_bf16_to_fp32(x[i]);
}
