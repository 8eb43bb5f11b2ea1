/* table_avx512: the AVX-512 dispatch table (F, VL, BW, VNNI, on top of AVX2,
 * FMA and F16C). Only the Q4_0 matmuls (plain and packed) have their own
 * kernels so far; every other
 * entry is the AVX2 one, so the table is complete. */
#include "kernels_avx512.h"

const st_kernels_t st_kernels_avx512 = {
    .name = "avx512",
    .vec_dot =
        {
            [ST_TYPE_F32] = st_vec_dot_f32_f32_avx2,
            [ST_TYPE_F16] = st_vec_dot_f16_f16_avx2,
            [ST_TYPE_BF16] = st_vec_dot_bf16_bf16_avx2,
            [ST_TYPE_Q4_0] = st_vec_dot_q4_0_q8_0_avx2,
            [ST_TYPE_Q8_0] = st_vec_dot_q8_0_q8_0_avx2,
            [ST_TYPE_Q6_K] = st_vec_dot_q6_k_q8_k_avx2,
            [ST_TYPE_Q4_1] = st_vec_dot_q4_1_q8_1_avx2,
            [ST_TYPE_Q5_0] = st_vec_dot_q5_0_q8_0_avx2,
            [ST_TYPE_Q5_1] = st_vec_dot_q5_1_q8_1_avx2,
            [ST_TYPE_Q2_K] = st_vec_dot_q2_k_q8_k_avx2,
            [ST_TYPE_Q3_K] = st_vec_dot_q3_k_q8_k_avx2,
            [ST_TYPE_Q4_K] = st_vec_dot_q4_k_q8_k_avx2,
            [ST_TYPE_Q5_K] = st_vec_dot_q5_k_q8_k_avx2,
        },
    .from_float =
        {
            [ST_TYPE_F32] = st_from_float_f32_ref,
            [ST_TYPE_F16] = st_from_float_f16_avx2,
            [ST_TYPE_BF16] = st_from_float_bf16_ref,
            [ST_TYPE_Q4_0] = st_from_float_q4_0_ref,
            [ST_TYPE_Q8_0] = st_from_float_q8_0_avx2,
            [ST_TYPE_Q8_1] = st_from_float_q8_1_ref,
            [ST_TYPE_Q8_K] = st_from_float_q8_k_avx2,
        },
    .to_float =
        {
            [ST_TYPE_F32] = st_to_float_f32_ref,
            [ST_TYPE_F16] = st_to_float_f16_avx2,
            [ST_TYPE_BF16] = st_to_float_bf16_avx2,
            [ST_TYPE_Q4_0] = st_to_float_q4_0_avx2,
            [ST_TYPE_Q8_0] = st_to_float_q8_0_avx2,
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
    .matmul =
        {
            [ST_TYPE_Q4_0] = st_matmul_q4_0_q8_0_avx512,
            [ST_TYPE_Q3_K] = st_matmul_q3_k_q8_k_avx2,
            [ST_TYPE_Q4_K] = st_matmul_q4_k_q8_k_avx2,
            [ST_TYPE_Q5_K] = st_matmul_q5_k_q8_k_avx2,
            [ST_TYPE_Q6_K] = st_matmul_q6_k_q8_k_avx2,
        },
    .axpy =
        {
            [ST_TYPE_F32] = st_axpy_f32_avx2,
            [ST_TYPE_F16] = st_axpy_f16_avx2,
        },
    .pack_rows = {[ST_TYPE_Q4_0] = 16, [ST_TYPE_Q4_K] = 8, [ST_TYPE_Q5_K] = 8, [ST_TYPE_Q6_K] = 8},
    .matmul_packed = {[ST_TYPE_Q4_0] = st_matmul_q4_0x16_q8_0_avx512,
                      [ST_TYPE_Q4_K] = st_matmul_q4_k_x8_q8_k_avx2,
                      [ST_TYPE_Q5_K] = st_matmul_q5_k_x8_q8_k_avx2,
                      [ST_TYPE_Q6_K] = st_matmul_q6_k_x8_q8_k_avx2},
};
