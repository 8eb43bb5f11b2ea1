/* vec_dot_ref: scalar dot products and the reference dispatch table.
 *
 * Integer formats sum integer products per block and scale each block sum by
 * the product of the two scales, in the order ggml's generic kernels use, so
 * these are the yardstick every SIMD table is tested against. Float formats
 * multiply in float and accumulate in double, as ggml's scalar path does.
 */
#include "kernels_ref.h"

#include <assert.h>

void st_vec_dot_f32_f32_ref(int n, float *s, const void *vw, const void *vx) {
    const float *w = vw, *x = vx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)(w[i] * x[i]);
    *s = (float)sum;
}

void st_vec_dot_f16_f16_ref(int n, float *s, const void *vw, const void *vx) {
    const uint16_t *w = vw, *x = vx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)(st_fp16_to_fp32(w[i]) * st_fp16_to_fp32(x[i]));
    *s = (float)sum;
}

void st_vec_dot_bf16_bf16_ref(int n, float *s, const void *vw, const void *vx) {
    const uint16_t *w = vw, *x = vx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (double)(st_bf16_to_fp32(w[i]) * st_bf16_to_fp32(x[i]));
    *s = (float)sum;
}

void st_vec_dot_q4_0_q8_0_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q4_0 *w = vw;
    const st_block_q8_0 *x = vx;
    float sum = 0.0f;
    for (int b = 0; b < n / ST_QK8_0; b++) {
        int lo = 0, hi = 0; /* elements 0..15 (low nibbles) and 16..31 (high nibbles) */
        for (int j = 0; j < ST_QK4_0 / 2; j++) {
            lo += ((w[b].qs[j] & 0x0f) - 8) * x[b].qs[j];
            hi += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + ST_QK4_0 / 2];
        }
        sum += (float)(lo + hi) * (st_fp16_to_fp32(w[b].d) * st_fp16_to_fp32(x[b].d));
    }
    *s = sum;
}

void st_vec_dot_q8_0_q8_0_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q8_0 *w = vw, *x = vx;
    float sum = 0.0f;
    for (int b = 0; b < n / ST_QK8_0; b++) {
        int sumi = 0;
        for (int j = 0; j < ST_QK8_0; j++) sumi += w[b].qs[j] * x[b].qs[j];
        sum += (float)sumi * (st_fp16_to_fp32(w[b].d) * st_fp16_to_fp32(x[b].d));
    }
    *s = sum;
}

/* Q6_K x Q8_K: unpack the 6-bit quants (layout in quant_ref.c), then keep 8
 * integer lanes (element % 8) of scale * q6 * q8 per super-block and 8 float
 * lanes across super-blocks, summed at the end, like ggml's generic kernel. */
void st_vec_dot_q6_k_q8_k_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q6_k *w = vw;
    const st_block_q8_k *x = vx;
    float lanes[8] = {0};
    for (int b = 0; b < n / ST_QK_K; b++) {
        int8_t q[ST_QK_K];
        const uint8_t *ql = w[b].ql, *qh = w[b].qh;
        for (int half = 0; half < 2; half++, ql += 64, qh += 32) {
            int8_t *a = q + 128 * half;
            for (int l = 0; l < 32; l++) {
                a[l] = (int8_t)(((ql[l] & 0xf) | ((qh[l] >> 0) & 3) << 4) - 32);
                a[l + 32] = (int8_t)(((ql[l + 32] & 0xf) | ((qh[l] >> 2) & 3) << 4) - 32);
                a[l + 64] = (int8_t)(((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32);
                a[l + 96] = (int8_t)(((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32);
            }
        }
        int32_t acc[8] = {0};
        for (int j = 0; j < ST_QK_K; j++) acc[j % 8] += w[b].scales[j / 16] * (q[j] * x[b].qs[j]);
        const float d = st_fp16_to_fp32(w[b].d) * x[b].d;
        for (int l = 0; l < 8; l++) lanes[l] += d * (float)acc[l];
    }
    float sum = 0.0f;
    for (int l = 0; l < 8; l++) sum += lanes[l];
    *s = sum;
}

const st_kernels_t st_kernels_ref = {
    .name = "ref",
    .vec_dot =
        {
            [ST_TYPE_F32] = st_vec_dot_f32_f32_ref,
            [ST_TYPE_F16] = st_vec_dot_f16_f16_ref,
            [ST_TYPE_BF16] = st_vec_dot_bf16_bf16_ref,
            [ST_TYPE_Q4_0] = st_vec_dot_q4_0_q8_0_ref,
            [ST_TYPE_Q8_0] = st_vec_dot_q8_0_q8_0_ref,
            [ST_TYPE_Q6_K] = st_vec_dot_q6_k_q8_k_ref,
            [ST_TYPE_Q4_1] = st_vec_dot_q4_1_q8_1_ref,
            [ST_TYPE_Q5_0] = st_vec_dot_q5_0_q8_0_ref,
            [ST_TYPE_Q5_1] = st_vec_dot_q5_1_q8_1_ref,
            [ST_TYPE_Q2_K] = st_vec_dot_q2_k_q8_k_ref,
            [ST_TYPE_Q3_K] = st_vec_dot_q3_k_q8_k_ref,
            [ST_TYPE_Q4_K] = st_vec_dot_q4_k_q8_k_ref,
            [ST_TYPE_Q5_K] = st_vec_dot_q5_k_q8_k_ref,
        },
    .from_float =
        {
            [ST_TYPE_F32] = st_from_float_f32_ref,
            [ST_TYPE_F16] = st_from_float_f16_ref,
            [ST_TYPE_BF16] = st_from_float_bf16_ref,
            [ST_TYPE_Q4_0] = st_from_float_q4_0_ref,
            [ST_TYPE_Q8_0] = st_from_float_q8_0_ref,
            [ST_TYPE_Q8_1] = st_from_float_q8_1_ref,
            [ST_TYPE_Q8_K] = st_from_float_q8_k_ref,
        },
    .to_float =
        {
            [ST_TYPE_F32] = st_to_float_f32_ref,
            [ST_TYPE_F16] = st_to_float_f16_ref,
            [ST_TYPE_BF16] = st_to_float_bf16_ref,
            [ST_TYPE_Q4_0] = st_to_float_q4_0_ref,
            [ST_TYPE_Q8_0] = st_to_float_q8_0_ref,
            [ST_TYPE_Q6_K] = st_to_float_q6_k_ref,
            [ST_TYPE_Q8_K] = st_to_float_q8_k_ref,
            [ST_TYPE_Q8_1] = st_to_float_q8_1_ref,
            [ST_TYPE_Q4_1] = st_to_float_q4_1_ref,
            [ST_TYPE_Q5_0] = st_to_float_q5_0_ref,
            [ST_TYPE_Q5_1] = st_to_float_q5_1_ref,
            [ST_TYPE_Q2_K] = st_to_float_q2_k_ref,
            [ST_TYPE_Q3_K] = st_to_float_q3_k_ref,
            [ST_TYPE_Q4_K] = st_to_float_q4_k_ref,
            [ST_TYPE_Q5_K] = st_to_float_q5_k_ref,
        },
    .axpy =
        {
            [ST_TYPE_F32] = st_axpy_f32_ref,
            [ST_TYPE_F16] = st_axpy_f16_ref,
        },
};
