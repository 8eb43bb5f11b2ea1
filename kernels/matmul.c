/* matmul: a weight matrix times a batch of activation rows, over the table's
 * vec_dot. Rows are the outer loop so each weight row is read from memory once
 * and stays in L1 while every token uses it; the caller splits rows between
 * threads. A fused multi-token kernel can replace the inner loop later without
 * changing this interface.
 */
#include "st_kernels.h"

#include <assert.h>

void st_matmul(const st_kernels_t *k, st_type_t wtype, const void *w, int n_in, int r0, int r1,
               const void *x, size_t x_stride, int n_tok, float *y, size_t y_stride) {
    const st_vec_dot_fn dot = k->vec_dot[wtype];
    assert(dot && r0 >= 0 && r0 <= r1 && n_tok >= 0);
    const size_t row_size = st_row_size(wtype, n_in);
    const char *wrow = (const char *)w + (size_t)r0 * row_size;
    const char *xs = x;
    for (int r = r0; r < r1; r++, wrow += row_size)
        for (int t = 0; t < n_tok; t++) dot(n_in, y + (size_t)t * y_stride + r, wrow, xs + (size_t)t * x_stride);
}
