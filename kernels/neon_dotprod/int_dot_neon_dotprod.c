/* int_dot_neon_dotprod: the integer kernels of int_dot.h, kquants_dot.h,
 * kquants_matmul.h and legacy_dot.h with the ARMv8.2 dot-product extension
 * (Raspberry Pi 5's Cortex-A76, most cores since).
 *
 * s_dot16 is one sdot: lane k of acc gets the 4 products of bytes 4k..4k+3,
 * exactly, in place of the two vmull + two vpadal of the plain table. This
 * file is compiled with -march=armv8.2-a+dotprod and only called when the
 * kernel reports the extension (HWCAP_ASIMDDP, see select.c); the results
 * are the same bits as the plain table's (int_dot.h).
 */
#include "../neon/kernels_neon.h"

#include <arm_neon.h>

#if !defined(__ARM_FEATURE_DOTPROD)
#error "compile with -march=armv8.2-a+dotprod (CMakeLists.txt does)"
#endif

static inline int32x4_t s_dot16(int32x4_t acc, int8x16_t a, int8x16_t b) { return vdotq_s32(acc, a, b); }

#include "../neon/int_dot.h"
#include "../neon/kquants_dot.h"
#include "../neon/kquants_matmul.h"
#include "../neon/legacy_dot.h"

void st_vec_dot_q4_0_q8_0_neon_dotprod(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_q8(n, w, true, x);
}

void st_vec_dot_q8_0_q8_0_neon_dotprod(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_q8(n, w, false, x);
}

void st_vec_dot_q6_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x) { *s = s_vec_dot_q6_k(n, w, x); }

void st_vec_dot_q4_1_q8_1_neon_dotprod(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_legacy(n, w, false, true, x);
}

void st_vec_dot_q5_0_q8_0_neon_dotprod(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_legacy(n, w, true, false, x);
}

void st_vec_dot_q5_1_q8_1_neon_dotprod(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_legacy(n, w, true, true, x);
}

void st_vec_dot_q2_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_q23_k(n, w, false, x);
}

void st_vec_dot_q3_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_q23_k(n, w, true, x);
}

void st_vec_dot_q4_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_q45_k(n, w, false, x);
}

void st_vec_dot_q5_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x) {
    *s = s_vec_dot_q45_k(n, w, true, x);
}

void st_matmul_q4_0_q8_0_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q8(true, n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q8_0_q8_0_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q8(false, n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q4_k_q8_k_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q4_k(n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q5_k_q8_k_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q5_k(n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_q6_k_q8_k_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q6_k(n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}
