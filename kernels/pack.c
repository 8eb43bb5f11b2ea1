/* pack: a weight matrix rearranged in place into a table's packed layout.
 *
 * A matmul that computes R rows at once wants, for each block position, the
 * R rows' scales side by side and their quants interleaved a few bytes at a
 * time, so that one vector load gives "bytes 4c..4c+3 of every row". On the
 * file's layout it builds that with loads and shuffles on every pass; packed
 * once at load, the weights are read as they are stored. Each group of R
 * rows keeps its R * row-size bytes, so the packed matrix replaces the plain
 * one: one copy of the weights, never two.
 */
#include "st_kernels.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Q4_0, R rows: block b of the group at b * 18R: R scales (2R bytes), then
 * chunks c = 0..3 of 4R bytes, row j's bytes 4c..4c+3 at 4j within chunk c. */
static void s_pack_group_q4_0(int R, int nb, const uint8_t *src, size_t row_bytes, uint8_t *dst) {
    for (int b = 0; b < nb; b++) {
        uint8_t *o = dst + (size_t)b * sizeof(st_block_q4_0) * R;
        for (int j = 0; j < R; j++) {
            const st_block_q4_0 *blk = (const st_block_q4_0 *)(src + (size_t)j * row_bytes) + b;
            memcpy(o + 2 * j, &blk->d, 2);
            for (int c = 0; c < 4; c++) memcpy(o + 2 * R + 4 * R * c + 4 * j, blk->qs + 4 * c, 4);
        }
    }
}

/* K-quants, R rows (the 8-row windows of kernels/avx2/simd_avx2.h): block b
 * of the group at b * size * R; the 16 bytes at offset o of the R rows'
 * blocks at R * o, as 4 vectors of 4R bytes (bytes o + 4c.. of row j at
 * R * o + 4R * c + 4j); the rows' last size % 16 bytes one row after the
 * other at R * (size - size % 16). */
static void s_pack_group_kq(int R, int nb, size_t size, const uint8_t *src, size_t row_bytes, uint8_t *dst) {
    const size_t whole = size / 16 * 16, rest = size - whole;
    for (int b = 0; b < nb; b++) {
        uint8_t *o = dst + (size_t)b * size * R;
        for (int j = 0; j < R; j++) {
            const uint8_t *blk = src + (size_t)j * row_bytes + (size_t)b * size;
            for (size_t w = 0; w < whole; w += 16)
                for (int c = 0; c < 4; c++) memcpy(o + R * w + 4 * R * c + 4 * j, blk + w + 4 * c, 4);
            memcpy(o + R * whole + rest * j, blk + whole, rest);
        }
    }
}

/* ST_PACK=0 in the environment: nothing is packed (to compare). Read once,
 * as st_kernels_select reads ST_KERNELS: a node asks at every request. */
static bool s_pack_off(void) {
    static atomic_int off = -1;
    int v = atomic_load_explicit(&off, memory_order_relaxed);
    if (v < 0) {
        const char *env = getenv("ST_PACK");
        v = env && strcmp(env, "0") == 0;
        atomic_store_explicit(&off, v, memory_order_relaxed);
    }
    return v;
}

bool st_packable(const st_kernels_t *k, st_type_t t, int n_in, int64_t n_rows) {
    if (t != ST_TYPE_Q4_0 && t != ST_TYPE_Q4_K && t != ST_TYPE_Q5_K && t != ST_TYPE_Q6_K) return false;
    if (s_pack_off()) return false;
    const int R = k->pack_rows[t];
    return R > 0 && ST_PACK_MAX_ROWS % R == 0 && k->matmul_packed[t] && n_rows % R == 0 && n_in > 0 &&
           n_in % st_type_traits(t)->blck == 0;
}

bool st_pack(const st_kernels_t *k, st_type_t t, int n_in, int64_t n_rows, void *w) {
    if (!st_packable(k, t, n_in, n_rows)) return false;
    const int R = k->pack_rows[t];
    const size_t row_bytes = st_row_size(t, n_in), group_bytes = row_bytes * (size_t)R;
    uint8_t *tmp = malloc(group_bytes);
    if (!tmp) return false;
    for (int64_t g = 0; g < n_rows / R; g++) {
        uint8_t *grp = (uint8_t *)w + (size_t)g * group_bytes;
        memcpy(tmp, grp, group_bytes);
        if (t == ST_TYPE_Q4_0)
            s_pack_group_q4_0(R, n_in / ST_QK4_0, tmp, row_bytes, grp);
        else
            s_pack_group_kq(R, n_in / ST_QK_K, st_type_traits(t)->size, tmp, row_bytes, grp);
    }
    free(tmp);
    return true;
}
