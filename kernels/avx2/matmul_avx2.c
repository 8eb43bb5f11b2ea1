/* matmul_avx2: Q4_0 weights x Q8_0 activations, 8 rows at a time, any number
 * of tokens, on the weights as stored in the file (no repacked copy).
 *
 * A one-row dot product spends most of its time on per-block overhead: the
 * nibbles are unpacked, two maddubs and a madd reduce 32 products, and the
 * int32 lanes of each block need a float conversion and an FMA of their own.
 * Here 8 rows are read together and transposed on the fly (one 32-bit group
 * of 4 nibble pairs per row per lane), so that for one block:
 *   - lane j of every vector belongs to row j: the 8 block sums come out of
 *     one madd in row order, with no horizontal reduction;
 *   - the unpacked nibbles are reused by up to 8 tokens (the int16 sums of
 *     8 tokens fit the 16 registers; the float sums may go to the stack);
 *   - the -8 offset of Q4_0 is applied once per block and token, as
 *     8 * sum(y) subtracted from the integer block sum (sum(y) precomputed
 *     per token and block, shared by all rows).
 * The 8 rows are 8 pointers: consecutive rows, or any listed rows (the active
 * rows of a ReGLU up matrix). While one group is computed, the next group's
 * rows are prefetched, a block's share per step, so DRAM streams meanwhile.
 * Products are exact integers per block, as in the reference; the block sum is
 * scaled by d_w * d_x and accumulated with FMA into the row's lane. Only the
 * float rounding differs from st_vec_dot_q4_0_q8_0_ref (fma, lane order).
 * The last 4..7 rows go through the same code as a group padded with copies of
 * its last row, the last 1..3 through a one-row loop with the same float
 * steps as a lane, so each (row, token) result is the same float sequence
 * whatever r0, r1, the row list or the other tokens of the call: results are
 * bit-identical however callers split the work between threads or machines.
 *
 * The shared part lives in matmul_q4_0_q8_0.h (the AVX-512 table uses it too);
 * this file supplies the AVX2 block sums.
 */
#include "kernels_avx2.h"

#include <immintrin.h>

#include "matmul_q4_0_q8_0.h"

/* int16 range: maddubs of (0..15) x (-128..127) gives pairs within +-3840; the
 * eight of one block and row stay within +-30720 < 32767, then madd widens. */
static inline __attribute__((always_inline)) void s_block_sums(const __m256i g[4], const st_block_q8_0 *const *xt,
                                                               int b, int NT, __m256i *si) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i s16[TOK_CHUNK];
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) s16[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
    for (int k = 0; k < 4; k++) {
        const __m256i lo = _mm256_and_si256(g[k], m4);                       /* elements 4k..4k+3 */
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(g[k], 4), m4); /* elements 16+4k.. */
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++) {
            const int8_t *y = xt[t][b].qs;
            s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(st_load_i32(y + 4 * k))));
            s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(st_load_i32(y + 16 + 4 * k))));
            /* keeps the sums in order: reassociated, they need more registers than AVX2 has */
            __asm__("" : "+x"(s16[t]));
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++) si[t] = _mm256_madd_epi16(s16[t], _mm256_set1_epi16(1));
}

void st_matmul_q4_0_q8_0_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                              size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q4_0_q8_0(n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}

/* Packed, 8 rows per group: one function per token count, so acc stays in registers. */
#define ROWS8P(NT)                                                                                                     \
    static void s_rows8p_##NT(const uint8_t *p, bool pf, int nb, const st_block_q8_0 *const *xt,                       \
                              const float(*dx)[BLK_PASS], const int32_t(*sy8)[BLK_PASS], float *y, size_t y_stride,    \
                              bool first) {                                                                            \
        __m256 acc[NT];                                                                                                \
        s_rows8_packed(p, pf, nb, xt, dx, sy8, NT, acc);                                                               \
        for (int t = 0; t < NT; t++) {                                                                                 \
            float *yr = y + (size_t)t * y_stride;                                                                      \
            _mm256_storeu_ps(yr, first ? acc[t] : _mm256_add_ps(acc[t], _mm256_loadu_ps(yr)));                         \
        }                                                                                                              \
    }
ROWS8P(1)
ROWS8P(2)
ROWS8P(3)
ROWS8P(4)
ROWS8P(5)
ROWS8P(6)
ROWS8P(7)
ROWS8P(8)
static const packed_rows_fn s_rows8p_fns[TOK_CHUNK] = {s_rows8p_1, s_rows8p_2, s_rows8p_3, s_rows8p_4,
                                                       s_rows8p_5, s_rows8p_6, s_rows8p_7, s_rows8p_8};

void st_matmul_q4_0x8_q8_0_avx2(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                                size_t x_stride, int n_tok, float *y, size_t y_stride) {
    s_matmul_q4_0_packed(8, s_rows8p_fns, n_in, w, rows, r0, r1, x, x_stride, n_tok, y, y_stride);
}
