/* quant_ref: scalar conversions between floats and the stored formats.
 *
 * from_float quantizes activations (Q8_0, Q8_K) or weights (Q4_0) exactly as
 * ggml's reference quantizers do, so a model file we write and the activation
 * rows we feed to the dot products carry the same bits as llama.cpp's.
 * to_float dequantizes (embedding lookups, tests). Portable C, no intrinsics.
 */
#include "kernels_ref.h"

#include <assert.h>
#include <math.h>
#include <string.h>

void st_from_float_f32_ref(int n, const float *x, void *y) { memcpy(y, x, (size_t)n * sizeof *x); }

void st_from_float_f16_ref(int n, const float *x, void *y) {
    uint16_t *h = y;
    for (int i = 0; i < n; i++) h[i] = st_fp32_to_fp16(x[i]);
}

void st_from_float_bf16_ref(int n, const float *x, void *y) {
    uint16_t *h = y;
    for (int i = 0; i < n; i++) h[i] = st_fp32_to_bf16(x[i]);
}

/* Q4_0: d = (signed value of largest magnitude) / -8, q = x/d + 8 truncated, at most 15. */
void st_quantize_row_q4_0_ref(int n, const float *x, st_block_q4_0 *y) {
    assert(n % ST_QK4_0 == 0);
    for (int b = 0; b < n / ST_QK4_0; b++, x += ST_QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < ST_QK4_0; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = st_fp32_to_fp16(d);
        for (int j = 0; j < ST_QK4_0 / 2; j++) {
            int lo = (int8_t)(x[j] * id + 8.5f), hi = (int8_t)(x[j + ST_QK4_0 / 2] * id + 8.5f);
            lo = lo < 15 ? lo : 15;
            hi = hi < 15 ? hi : 15;
            y[b].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

/* Q8_0: d = amax / 127, q = round(x / d), halves away from zero (roundf). */
void st_quantize_row_q8_0_ref(int n, const float *x, st_block_q8_0 *y) {
    assert(n % ST_QK8_0 == 0);
    for (int b = 0; b < n / ST_QK8_0; b++, x += ST_QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < ST_QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = st_fp32_to_fp16(d);
        for (int j = 0; j < ST_QK8_0; j++) y[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void st_from_float_q4_0_ref(int n, const float *x, void *y) { st_quantize_row_q4_0_ref(n, x, y); }

void st_from_float_q8_0_ref(int n, const float *x, void *y) { st_quantize_row_q8_0_ref(n, x, y); }

/* Q8_K: scale -127 / (signed value of largest magnitude, first one found), round to
 * nearest even, plus the sums of each 16 quants that the K-quant dot products use. */
void st_from_float_q8_k_ref(int n, const float *x, void *vy) {
    assert(n % ST_QK_K == 0);
    st_block_q8_k *y = vy;
    for (int b = 0; b < n / ST_QK_K; b++, x += ST_QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < ST_QK_K; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < ST_QK_K; j++) {
            int v = (int)rintf(iscale * x[j]); /* default rounding mode: nearest even */
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int g = 0; g < ST_QK_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += y[b].qs[g * 16 + j];
            y[b].bsums[g] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

void st_to_float_f32_ref(int n, const void *x, float *y) { memcpy(y, x, (size_t)n * sizeof *y); }

void st_to_float_f16_ref(int n, const void *x, float *y) {
    const uint16_t *h = x;
    for (int i = 0; i < n; i++) y[i] = st_fp16_to_fp32(h[i]);
}

void st_axpy_f32_ref(int n, float a, const void *vx, float *y) {
    const float *x = vx;
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void st_axpy_f16_ref(int n, float a, const void *vx, float *y) {
    const uint16_t *x = vx;
    for (int i = 0; i < n; i++) y[i] += a * st_fp16_to_fp32(x[i]);
}

void st_to_float_bf16_ref(int n, const void *x, float *y) {
    const uint16_t *h = x;
    for (int i = 0; i < n; i++) y[i] = st_bf16_to_fp32(h[i]);
}

void st_to_float_q4_0_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK4_0 == 0);
    const st_block_q4_0 *x = vx;
    for (int b = 0; b < n / ST_QK4_0; b++, y += ST_QK4_0) {
        const float d = st_fp16_to_fp32(x[b].d);
        for (int j = 0; j < ST_QK4_0 / 2; j++) {
            y[j] = (float)((x[b].qs[j] & 0x0f) - 8) * d;
            y[j + ST_QK4_0 / 2] = (float)((x[b].qs[j] >> 4) - 8) * d;
        }
    }
}

void st_to_float_q8_0_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK8_0 == 0);
    const st_block_q8_0 *x = vx;
    for (int b = 0; b < n / ST_QK8_0; b++, y += ST_QK8_0) {
        const float d = st_fp16_to_fp32(x[b].d);
        for (int j = 0; j < ST_QK8_0; j++) y[j] = (float)x[b].qs[j] * d;
    }
}

/* Q6_K: 256 values in halves of 128. In a half, element l + 32 * k (l < 32, k < 4)
 * takes its low 4 bits from ql[l + 32 * (k & 1)] (low nibble for k < 2, high for
 * k >= 2) and its high 2 bits from bits 2k..2k+1 of qh[l]; value (q - 32) * d *
 * scales[element / 16]. */
void st_to_float_q6_k_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK_K == 0);
    const st_block_q6_k *x = vx;
    for (int b = 0; b < n / ST_QK_K; b++) {
        const float d = st_fp16_to_fp32(x[b].d);
        const uint8_t *ql = x[b].ql, *qh = x[b].qh;
        const int8_t *sc = x[b].scales;
        for (int half = 0; half < 2; half++, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int q0 = (ql[l] & 0xf) | ((qh[l] >> 0) & 3) << 4;
                const int q1 = (ql[l + 32] & 0xf) | ((qh[l] >> 2) & 3) << 4;
                const int q2 = (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4;
                const int q3 = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4;
                const int is = l / 16;
                y[l] = d * sc[is + 0] * (float)(q0 - 32);
                y[l + 32] = d * sc[is + 2] * (float)(q1 - 32);
                y[l + 64] = d * sc[is + 4] * (float)(q2 - 32);
                y[l + 96] = d * sc[is + 6] * (float)(q3 - 32);
            }
        }
    }
}

void st_to_float_q8_k_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK_K == 0);
    const st_block_q8_k *x = vx;
    for (int b = 0; b < n / ST_QK_K; b++, y += ST_QK_K)
        for (int j = 0; j < ST_QK_K; j++) y[j] = x[b].d * (float)x[b].qs[j];
}
