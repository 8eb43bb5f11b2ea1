/* legacy_ref: the 32-element formats besides Q4_0 and Q8_0, scalar.
 *
 * Q4_1 and Q5_1 store a scale and a minimum (value q*d + m, q unsigned);
 * Q5_0 stores a scale and a fifth bit per quant (value (q - 16)*d). Their dot
 * products take activations in Q8_1 (Q4_1, Q5_1) or Q8_0 (Q5_0), as in ggml.
 * Q8_1 is Q8_0 plus s = d * sum(q): the minimum term of a block is then
 * m_w * s_x, one product per block instead of a sum over its 32 elements.
 *
 * The integer sums and the float steps follow ggml's generic kernels
 * (ggml-cpu/quants.c), so these are the yardstick for the SIMD versions.
 */
#include "kernels_ref.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* Q8_1 as ggml's quantize_row_q8_1_ref: d = amax / 127, q = roundf(x / d) (halves
 * away from zero), s = fp16(d * sum q) with d the float before its fp16 rounding. */
void st_from_float_q8_1_ref(int n, const float *x, void *vy) {
    assert(n % ST_QK8_0 == 0);
    st_block_q8_1 *y = vy;
    for (int b = 0; b < n / ST_QK8_0; b++, x += ST_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < ST_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < ST_QK8_0; j++) {
            y[b].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[b].qs[j];
        }
        y[b].d = st_fp32_to_fp16(d);
        y[b].s = st_fp32_to_fp16((float)sum * d);
    }
}

void st_to_float_q8_1_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q8_1 *x = vx;
    for (int b = 0; b < n / ST_QK8_0; b++, y += ST_QK8_0) {
        const float d = st_fp16_to_fp32(x[b].d);
        for (int j = 0; j < ST_QK8_0; j++) y[j] = (float)x[b].qs[j] * d;
    }
}

static uint32_t s_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

/* Element j (< 16) of a Q5 block is the low nibble of qs[j] plus bit j of qh as
 * bit 4; element j + 16 the high nibble plus bit j + 16. Unsigned 0..31. */
static void s_unpack_q5(const uint8_t *qs, const uint8_t qh4[4], int q[32]) {
    const uint32_t qh = s_qh(qh4);
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 0x0f) | (int)((qh >> j) & 1) << 4;
        q[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

void st_to_float_q4_1_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK4_0 == 0);
    const st_block_q4_1 *x = vx;
    for (int b = 0; b < n / ST_QK4_0; b++, y += ST_QK4_0) {
        const float d = st_fp16_to_fp32(x[b].d), m = st_fp16_to_fp32(x[b].m);
        for (int j = 0; j < 16; j++) {
            y[j] = (float)(x[b].qs[j] & 0x0f) * d + m;
            y[j + 16] = (float)(x[b].qs[j] >> 4) * d + m;
        }
    }
}

void st_to_float_q5_0_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK4_0 == 0);
    const st_block_q5_0 *x = vx;
    int q[32];
    for (int b = 0; b < n / ST_QK4_0; b++, y += ST_QK4_0) {
        const float d = st_fp16_to_fp32(x[b].d);
        s_unpack_q5(x[b].qs, x[b].qh, q);
        for (int j = 0; j < 32; j++) y[j] = (float)(q[j] - 16) * d;
    }
}

void st_to_float_q5_1_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK4_0 == 0);
    const st_block_q5_1 *x = vx;
    int q[32];
    for (int b = 0; b < n / ST_QK4_0; b++, y += ST_QK4_0) {
        const float d = st_fp16_to_fp32(x[b].d), m = st_fp16_to_fp32(x[b].m);
        s_unpack_q5(x[b].qs, x[b].qh, q);
        for (int j = 0; j < 32; j++) y[j] = (float)q[j] * d + m;
    }
}

/* Q4_1 x Q8_1: sum += (d_w d_x) * sum(q_w q_x) + m_w * s_x per block. */
void st_vec_dot_q4_1_q8_1_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q4_1 *w = vw;
    const st_block_q8_1 *x = vx;
    float sum = 0.0f;
    for (int b = 0; b < n / ST_QK8_0; b++) {
        int lo = 0, hi = 0;
        for (int j = 0; j < 16; j++) {
            lo += (w[b].qs[j] & 0x0f) * x[b].qs[j];
            hi += (w[b].qs[j] >> 4) * x[b].qs[j + 16];
        }
        sum += (st_fp16_to_fp32(w[b].d) * st_fp16_to_fp32(x[b].d)) * (float)(lo + hi) +
               st_fp16_to_fp32(w[b].m) * st_fp16_to_fp32(x[b].s);
    }
    *s = sum;
}

void st_vec_dot_q5_0_q8_0_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q5_0 *w = vw;
    const st_block_q8_0 *x = vx;
    float sum = 0.0f;
    int q[32];
    for (int b = 0; b < n / ST_QK8_0; b++) {
        s_unpack_q5(w[b].qs, w[b].qh, q);
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += (q[j] - 16) * x[b].qs[j];
        sum += (st_fp16_to_fp32(w[b].d) * st_fp16_to_fp32(x[b].d)) * (float)sumi;
    }
    *s = sum;
}

void st_vec_dot_q5_1_q8_1_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q5_1 *w = vw;
    const st_block_q8_1 *x = vx;
    float sum = 0.0f;
    int q[32];
    for (int b = 0; b < n / ST_QK8_0; b++) {
        s_unpack_q5(w[b].qs, w[b].qh, q);
        int sumi = 0;
        for (int j = 0; j < 32; j++) sumi += q[j] * x[b].qs[j];
        sum += (st_fp16_to_fp32(w[b].d) * st_fp16_to_fp32(x[b].d)) * (float)sumi +
               st_fp16_to_fp32(w[b].m) * st_fp16_to_fp32(x[b].s);
    }
    *s = sum;
}
