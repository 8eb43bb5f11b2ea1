/* int_dot_neon: the integer kernels of int_dot.h, kquants_dot.h,
 * kquants_matmul.h and legacy_dot.h with plain ARMv8-A ASIMD (every 64-bit
 * Arm core: Raspberry Pi 4's Cortex-A72 has no sdot).
 *
 * s_dot16 multiplies the two halves with vmull_s8 (exact int16 products: at
 * most 128 * 128 = 16384) and adds neighbouring products into int32 lanes
 * with vpadalq_s16, which widens before it adds, so nothing can overflow.
 * This is ggml's ggml_vdotq_s32 for CPUs without the dot-product extension.
 */
#include "kernels_neon.h"

#include <arm_neon.h>

static inline int32x4_t s_dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
}

#include "int_dot.h"
#include "kquants_dot.h"
#include "kquants_matmul.h"
#include "legacy_dot.h"

void st_vec_dot_q4_0_q8_0_neon(int n, float *s, const void *w, const void *x) { *s = s_vec_dot_q8(n, w, true, x); }

void st_vec_dot_q8_0_q8_0_neon(int n, float *s, const void *w, const void *x) { *s = s_vec_dot_q8(n, w, false, x); }

void st_vec_dot_q6_k_q8_k_neon(int n, float *s, const void *w, const void *x) { *s = s_vec_dot_q6_k(n, w, x); }

void st_vec_dot_q4_1_q8_1_neon(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_legacy(n, w, false, true, x);
}

void st_vec_dot_q5_0_q8_0_neon(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_legacy(n, w, true, false, x);
}

void st_vec_dot_q5_1_q8_1_neon(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_legacy(n, w, true, true, x);
}

void st_vec_dot_q2_k_q8_k_neon(int n, float *s, const void *w, const void *x) { *s = s_vec_dot_q23_k(n, w, false, x); }

void st_vec_dot_q3_k_q8_k_neon(int n, float *s, const void *w, const void *x) { *s = s_vec_dot_q23_k(n, w, true, x); }

void st_vec_dot_q4_k_q8_k_neon(int n, float *s, const void *w, const void *x) { *s = s_vec_dot_q45_k(n, w, false, x); }

void st_vec_dot_q5_k_q8_k_neon(int n, float *s, const void *w, const void *x) { *s = s_vec_dot_q45_k(n, w, true, x); }

void st_matmul_q4_0_q8_0_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q8(true, n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q8_0_q8_0_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q8(false, n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q4_k_q8_k_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q4_k(n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q5_k_q8_k_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q5_k(n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q6_k_q8_k_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q6_k(n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}
