/* kernels_avx512: the AVX-512 (F, VL, BW, VNNI) kernels by name, for
 * kernels/avx512 only. Same arguments and results as the functions they
 * replace; every other entry of the table is the AVX2 one. */
#ifndef ST_KERNELS_AVX512_H
#define ST_KERNELS_AVX512_H

#include "../avx2/kernels_avx2.h"

void st_matmul_q4_0_q8_0_avx512(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                size_t x_stride, int n_tok, float *y, size_t y_stride);
/* The same on Q4_0 packed 16 rows per group (st_pack): consecutive rows only. */
void st_matmul_q4_0x16_q8_0_avx512(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                   size_t x_stride, int n_tok, float *y, size_t y_stride);

#endif
