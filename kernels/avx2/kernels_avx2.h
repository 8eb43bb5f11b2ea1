/* kernels_avx2: the AVX2+FMA+F16C kernels by name, for kernels/avx2 only.
 * Same arguments and results as the _ref functions they replace. */
#ifndef ST_KERNELS_AVX2_H
#define ST_KERNELS_AVX2_H

#include "../ref/kernels_ref.h"

void st_vec_dot_f32_f32_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_f16_f16_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_bf16_bf16_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_0_q8_0_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q8_0_q8_0_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q6_k_q8_k_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_1_q8_1_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_0_q8_0_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_1_q8_1_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q2_k_q8_k_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q3_k_q8_k_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_k_q8_k_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_k_q8_k_avx2(int n, float *s, const void *w, const void *x);

/* Q4_0 packed 8 rows per group (st_pack): consecutive rows only. */
void st_matmul_q4_0x8_q8_0_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                size_t x_stride, int n_tok, float *y, size_t y_stride);
/* Q4_K, Q5_K and Q6_K packed 8 rows per group (st_pack, simd_avx2.h): consecutive rows only. */
void st_matmul_q4_k_x8_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                 size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q5_k_x8_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                 size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q6_k_x8_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                 size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q6_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q3_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q4_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q5_k_q8_k_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);
void st_matmul_q4_0_q8_0_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride);

void st_from_float_f16_avx2(int n, const float *x, void *y);
void st_from_float_q8_0_avx2(int n, const float *x, void *y);
void st_from_float_q8_k_avx2(int n, const float *x, void *y);

void st_to_float_f16_avx2(int n, const void *x, float *y);
void st_axpy_f32_avx2(int n, float a, const void *x, float *y);
void st_axpy_f16_avx2(int n, float a, const void *x, float *y);
void st_to_float_bf16_avx2(int n, const void *x, float *y);
void st_to_float_q4_0_avx2(int n, const void *x, float *y);
void st_to_float_q8_0_avx2(int n, const void *x, float *y);

#endif
