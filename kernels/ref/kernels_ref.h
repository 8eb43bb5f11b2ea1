/* kernels_ref: the scalar reference kernels by name, for kernels/ only.
 *
 * Other tables (avx2...) point at these for the entries they do not speed up,
 * so every table is complete. Arguments as st_vec_dot_fn / st_from_float_fn /
 * st_to_float_fn in st_kernels.h; n is a multiple of the type's block size.
 */
#ifndef ST_KERNELS_REF_H
#define ST_KERNELS_REF_H

#include "st_kernels.h"

void st_vec_dot_f32_f32_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_f16_f16_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_bf16_bf16_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_0_q8_0_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q8_0_q8_0_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q6_k_q8_k_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_1_q8_1_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_0_q8_0_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_1_q8_1_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q2_k_q8_k_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q3_k_q8_k_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_k_q8_k_ref(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_k_q8_k_ref(int n, float *s, const void *w, const void *x);

void st_from_float_f32_ref(int n, const float *x, void *y);
void st_from_float_f16_ref(int n, const float *x, void *y);
void st_from_float_bf16_ref(int n, const float *x, void *y);
void st_from_float_q4_0_ref(int n, const float *x, void *y);
void st_from_float_q8_0_ref(int n, const float *x, void *y);
void st_from_float_q8_1_ref(int n, const float *x, void *y);
void st_from_float_q8_k_ref(int n, const float *x, void *y);

void st_to_float_f32_ref(int n, const void *x, float *y);
void st_to_float_f16_ref(int n, const void *x, float *y);
void st_axpy_f32_ref(int n, float a, const void *x, float *y);
void st_axpy_f16_ref(int n, float a, const void *x, float *y);
void st_to_float_bf16_ref(int n, const void *x, float *y);
void st_to_float_q4_0_ref(int n, const void *x, float *y);
void st_to_float_q8_0_ref(int n, const void *x, float *y);
void st_to_float_q6_k_ref(int n, const void *x, float *y);
void st_to_float_q8_k_ref(int n, const void *x, float *y);
void st_to_float_q8_1_ref(int n, const void *x, float *y);
void st_to_float_q4_1_ref(int n, const void *x, float *y);
void st_to_float_q5_0_ref(int n, const void *x, float *y);
void st_to_float_q5_1_ref(int n, const void *x, float *y);
void st_to_float_q2_k_ref(int n, const void *x, float *y);
void st_to_float_q3_k_ref(int n, const void *x, float *y);
void st_to_float_q4_k_ref(int n, const void *x, float *y);
void st_to_float_q5_k_ref(int n, const void *x, float *y);

#endif
