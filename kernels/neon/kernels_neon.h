/* kernels_neon: the AArch64 Advanced SIMD kernels by name, for kernels/neon
 * and kernels/neon_dotprod only. Same arguments and results as the _ref
 * functions they replace.
 *
 * _neon: plain ARMv8-A ASIMD, every 64-bit Arm core (Raspberry Pi 4's
 * Cortex-A72 included). _neon_dotprod: the integer kernels again with the
 * ARMv8.2 dot-product instruction (sdot; Pi 5's Cortex-A76), compiled with
 * -march=armv8.2-a+dotprod and only called where the CPU reports it.
 */
#ifndef ST_KERNELS_NEON_H
#define ST_KERNELS_NEON_H

#include "../ref/kernels_ref.h"

/* float formats (neon/float_neon.c), shared by both tables */
void st_vec_dot_f32_f32_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_f16_f16_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_bf16_bf16_neon(int n, float *s, const void *w, const void *x);
void st_from_float_f16_neon(int n, const float *x, void *y);
void st_to_float_f16_neon(int n, const void *x, float *y);
void st_axpy_f32_neon(int n, float a, const void *x, float *y);
void st_axpy_f16_neon(int n, float a, const void *x, float *y);
void st_to_float_bf16_neon(int n, const void *x, float *y);

/* activation quantization, dequantization (neon/quant_neon.c), shared by both tables */
void st_from_float_q8_0_neon(int n, const float *x, void *y);
void st_from_float_q8_k_neon(int n, const float *x, void *y);
void st_to_float_q4_0_neon(int n, const void *x, float *y);
void st_to_float_q8_0_neon(int n, const void *x, float *y);
void st_to_float_q4_k_neon(int n, const void *x, float *y);
void st_to_float_q5_k_neon(int n, const void *x, float *y);
void st_to_float_q6_k_neon(int n, const void *x, float *y);

/* integer dot products: neon/int_dot_neon.c and neon_dotprod/int_dot_neon_dotprod.c,
 * both from neon/int_dot.h, neon/kquants_dot.h, neon/kquants_matmul.h and neon/legacy_dot.h */
void st_vec_dot_q4_0_q8_0_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_q8_0_q8_0_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_q6_k_q8_k_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_1_q8_1_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_0_q8_0_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_1_q8_1_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_q2_k_q8_k_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_q3_k_q8_k_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_k_q8_k_neon(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_k_q8_k_neon(int n, float *s, const void *w, const void *x);
void st_matmul_q4_0_q8_0_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q8_0_q8_0_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q4_k_q8_k_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q5_k_q8_k_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q6_k_q8_k_neon(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);

void st_vec_dot_q4_0_q8_0_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_vec_dot_q8_0_q8_0_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_vec_dot_q6_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_1_q8_1_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_0_q8_0_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_1_q8_1_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_vec_dot_q2_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_vec_dot_q3_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_k_q8_k_neon_dotprod(int n, float *s, const void *w, const void *x);
void st_matmul_q4_0_q8_0_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q8_0_q8_0_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q4_k_q8_k_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q5_k_q8_k_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q6_k_q8_k_neon_dotprod(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                      size_t x_stride, int n_tok, float *y, size_t y_stride);

#endif
