/* kquants_ref: Q2_K, Q3_K, Q4_K and Q5_K, scalar: dequantization and the dot
 * products with Q8_K activations.
 *
 * A super-block holds 256 quants in groups (16 of 16 for Q2_K/Q3_K, 8 of 32 for
 * Q4_K/Q5_K), each group with its own small integer scale (and minimum), and
 * one or two fp16 super-block scales. Where element e sits:
 *   - Q2_K / Q3_K: e = 128 h + 32 k + l (h < 2, k < 4, l < 32): low 2 bits are
 *     bits 2k..2k+1 of qs[32 h + l]. Q3_K's third bit is bit 4h + k of hmask[l],
 *     and a clear bit means -4 (q in -4..3). Group e / 16.
 *     Q2_K scales[g]: scale in the low nibble, minimum in the high one; value
 *     d * scale * q - dmin * min. Q3_K: 16 6-bit scales stored + 32, low 4 bits
 *     in the nibbles of scales[0..7] (g < 8: low nibble of g, else high nibble
 *     of g - 8), high 2 bits in bits 2(g/4).. of scales[8 + g % 4]; value
 *     d * (scale - 32) * q.
 *   - Q4_K / Q5_K: e = 64 j + 32 i + l (j < 4, i < 2, l < 32): low 4 bits are
 *     the low (i = 0) or high (i = 1) nibble of qs[32 j + l]; Q5_K's fifth bit
 *     is bit 2j + i of qh[l]. Group g = e / 32 = 2j + i has a 6-bit scale and a
 *     6-bit minimum packed in 12 bytes (s_scale_min_k4); value
 *     d * scale * q - dmin * min.
 * The integer sums and the float steps follow ggml's generic kernels
 * (ggml-cpu/quants.c): 8 int32 lanes (element % 8) of scale * q * y per
 * super-block, scaled into 8 float lanes summed at the end; minimum terms
 * come from Q8_K's bsums (sums of 16 activations), never per element.
 */
#include "kernels_ref.h"

#include <assert.h>

/* The 8 scales and 8 minimums (6 bits each) of a Q4_K / Q5_K super-block. */
static void s_scale_min_k4(const uint8_t q[12], uint8_t sc[8], uint8_t mn[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (uint8_t)((q[j + 4] & 0x0f) | (q[j - 4] >> 6) << 4);
        mn[j] = (uint8_t)((q[j + 4] >> 4) | (q[j] >> 6) << 4);
    }
}

/* The 16 signed scales (-32..31) of a Q3_K super-block. */
static void s_scales_q3k(const uint8_t q[12], int sc[16]) {
    for (int g = 0; g < 16; g++) {
        const int lo = g < 8 ? q[g] & 0x0f : q[g - 8] >> 4;
        const int hi = (q[8 + g % 4] >> (2 * (g / 4))) & 3;
        sc[g] = (lo | hi << 4) - 32;
    }
}

/* quants of the 2-bit-based layouts: 0..3 (Q2_K), or -4..3 with Q3_K's hmask */
static void s_unpack_q2(const uint8_t *qs, const uint8_t *hmask, int8_t q[ST_QK_K]) {
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) {
                int v = (qs[32 * h + l] >> (2 * k)) & 3;
                if (hmask && !(hmask[l] & (1u << (4 * h + k)))) v -= 4;
                q[128 * h + 32 * k + l] = (int8_t)v;
            }
}

/* quants of the 4-bit-based layouts: 0..15 (Q4_K), or 0..31 with Q5_K's qh */
static void s_unpack_q4(const uint8_t *qs, const uint8_t *qh, int8_t q[ST_QK_K]) {
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 2; i++)
            for (int l = 0; l < 32; l++) {
                int v = i ? qs[32 * j + l] >> 4 : qs[32 * j + l] & 0x0f;
                if (qh && (qh[l] & (1u << (2 * j + i)))) v += 16;
                q[64 * j + 32 * i + l] = (int8_t)v;
            }
}

void st_to_float_q2_k_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK_K == 0);
    const st_block_q2_k *x = vx;
    int8_t q[ST_QK_K];
    for (int b = 0; b < n / ST_QK_K; b++, y += ST_QK_K) {
        const float d = st_fp16_to_fp32(x[b].d), dmin = st_fp16_to_fp32(x[b].dmin);
        s_unpack_q2(x[b].qs, NULL, q);
        for (int g = 0; g < 16; g++) {
            const float dl = d * (float)(x[b].scales[g] & 0x0f), ml = dmin * (float)(x[b].scales[g] >> 4);
            for (int l = 0; l < 16; l++) y[16 * g + l] = dl * (float)q[16 * g + l] - ml;
        }
    }
}

void st_to_float_q3_k_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK_K == 0);
    const st_block_q3_k *x = vx;
    int8_t q[ST_QK_K];
    int sc[16];
    for (int b = 0; b < n / ST_QK_K; b++, y += ST_QK_K) {
        const float d = st_fp16_to_fp32(x[b].d);
        s_unpack_q2(x[b].qs, x[b].hmask, q);
        s_scales_q3k(x[b].scales, sc);
        for (int g = 0; g < 16; g++) {
            const float dl = d * (float)sc[g];
            for (int l = 0; l < 16; l++) y[16 * g + l] = dl * (float)q[16 * g + l];
        }
    }
}

static void s_to_float_q45k(const uint8_t *scales, uint16_t d16, uint16_t dmin16, const int8_t *q, float *y) {
    uint8_t sc[8], mn[8];
    s_scale_min_k4(scales, sc, mn);
    const float d = st_fp16_to_fp32(d16), dmin = st_fp16_to_fp32(dmin16);
    for (int g = 0; g < 8; g++) {
        const float dl = d * (float)sc[g], ml = dmin * (float)mn[g];
        for (int l = 0; l < 32; l++) y[32 * g + l] = dl * (float)q[32 * g + l] - ml;
    }
}

void st_to_float_q4_k_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK_K == 0);
    const st_block_q4_k *x = vx;
    int8_t q[ST_QK_K];
    for (int b = 0; b < n / ST_QK_K; b++, y += ST_QK_K) {
        s_unpack_q4(x[b].qs, NULL, q);
        s_to_float_q45k(x[b].scales, x[b].d, x[b].dmin, q, y);
    }
}

void st_to_float_q5_k_ref(int n, const void *vx, float *y) {
    assert(n % ST_QK_K == 0);
    const st_block_q5_k *x = vx;
    int8_t q[ST_QK_K];
    for (int b = 0; b < n / ST_QK_K; b++, y += ST_QK_K) {
        s_unpack_q4(x[b].qs, x[b].qh, q);
        s_to_float_q45k(x[b].scales, x[b].d, x[b].dmin, q, y);
    }
}

/* Q2_K: per super-block, d_x d_w * sum_g scale_g (q . y)_g - d_x dmin_w * sum_g min_g bsums_g. */
void st_vec_dot_q2_k_q8_k_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q2_k *w = vw;
    const st_block_q8_k *x = vx;
    int8_t q[ST_QK_K];
    float sum = 0.0f;
    for (int b = 0; b < n / ST_QK_K; b++) {
        s_unpack_q2(w[b].qs, NULL, q);
        int summs = 0, isum = 0;
        for (int g = 0; g < 16; g++) {
            summs += x[b].bsums[g] * (w[b].scales[g] >> 4);
            int sg = 0;
            for (int l = 0; l < 16; l++) sg += q[16 * g + l] * x[b].qs[16 * g + l];
            isum += (w[b].scales[g] & 0x0f) * sg;
        }
        const float dall = x[b].d * st_fp16_to_fp32(w[b].d), dmin = x[b].d * st_fp16_to_fp32(w[b].dmin);
        sum += dall * (float)isum - dmin * (float)summs;
    }
    *s = sum;
}

void st_vec_dot_q3_k_q8_k_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q3_k *w = vw;
    const st_block_q8_k *x = vx;
    int8_t q[ST_QK_K];
    int sc[16];
    float lanes[8] = {0};
    for (int b = 0; b < n / ST_QK_K; b++) {
        s_unpack_q2(w[b].qs, w[b].hmask, q);
        s_scales_q3k(w[b].scales, sc);
        int32_t acc[8] = {0};
        for (int e = 0; e < ST_QK_K; e++) acc[e % 8] += sc[e / 16] * (q[e] * x[b].qs[e]);
        const float d = st_fp16_to_fp32(w[b].d) * x[b].d;
        for (int l = 0; l < 8; l++) lanes[l] += d * (float)acc[l];
    }
    float sum = 0.0f;
    for (int l = 0; l < 8; l++) sum += lanes[l];
    *s = sum;
}

/* Q4_K and Q5_K (q already unpacked): 8 lanes of scale * q * y, the minimum
 * term from bsums subtracted from a separate sum, as ggml's generic kernel. */
static void s_dot_q45k(const uint8_t *scales, uint16_t d16, uint16_t dmin16, const int8_t *q, const st_block_q8_k *x,
                       float lanes[8], float *summ) {
    uint8_t sc[8], mn[8];
    s_scale_min_k4(scales, sc, mn);
    int sumi = 0;
    for (int g = 0; g < 16; g++) sumi += x->bsums[g] * mn[g / 2];
    int32_t acc[8] = {0};
    for (int e = 0; e < ST_QK_K; e++) acc[e % 8] += sc[e / 32] * (q[e] * x->qs[e]);
    const float d = st_fp16_to_fp32(d16) * x->d, dmin = st_fp16_to_fp32(dmin16) * x->d;
    for (int l = 0; l < 8; l++) lanes[l] += d * (float)acc[l];
    *summ -= dmin * (float)sumi;
}

void st_vec_dot_q4_k_q8_k_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q4_k *w = vw;
    const st_block_q8_k *x = vx;
    int8_t q[ST_QK_K];
    float lanes[8] = {0}, sum = 0.0f;
    for (int b = 0; b < n / ST_QK_K; b++) {
        s_unpack_q4(w[b].qs, NULL, q);
        s_dot_q45k(w[b].scales, w[b].d, w[b].dmin, q, &x[b], lanes, &sum);
    }
    for (int l = 0; l < 8; l++) sum += lanes[l];
    *s = sum;
}

void st_vec_dot_q5_k_q8_k_ref(int n, float *s, const void *vw, const void *vx) {
    assert(n % ST_QK_K == 0);
    const st_block_q5_k *w = vw;
    const st_block_q8_k *x = vx;
    int8_t q[ST_QK_K];
    float lanes[8] = {0}, sum = 0.0f;
    for (int b = 0; b < n / ST_QK_K; b++) {
        s_unpack_q4(w[b].qs, w[b].qh, q);
        s_dot_q45k(w[b].scales, w[b].d, w[b].dmin, q, &x[b], lanes, &sum);
    }
    for (int l = 0; l < 8; l++) sum += lanes[l];
    *s = sum;
}
