/* matmul: a weight matrix times a batch of activation rows. The table's
 * matmul kernel for the weight type when it has one (several rows and tokens
 * per step); otherwise the table's vec_dot with rows as the outer loop, so
 * each weight row is read from memory once and stays in L1 while every token
 * uses it. The caller splits rows between threads.
 */
#include "st_kernels.h"

#include <assert.h>

void st_matmul(const st_kernels_t *k, st_type_t wtype, const void *w, int n_in, int r0, int r1, const void *x,
               size_t x_stride, int n_tok, float *y, size_t y_stride) {
    assert(r0 >= 0 && r0 <= r1 && n_tok >= 0);
    if (r0 == r1 || n_tok == 0) return;
    if (k->matmul[wtype]) {
        k->matmul[wtype](n_in, w, NULL, r0, r1, x, x_stride, n_tok, y, y_stride);
        return;
    }
    const st_vec_dot_fn dot = k->vec_dot[wtype];
    assert(dot);
    const size_t row_size = st_row_size(wtype, n_in);
    const char *wrow = (const char *)w + (size_t)r0 * row_size;
    const char *xs = x;
    for (int r = r0; r < r1; r++, wrow += row_size)
        for (int t = 0; t < n_tok; t++) dot(n_in, y + (size_t)t * y_stride + r, wrow, xs + (size_t)t * x_stride);
}

void st_matmul_packed(const st_kernels_t *k, st_type_t wtype, const void *w, int n_in, int r0, int r1, const void *x,
                      size_t x_stride, int n_tok, float *y, size_t y_stride) {
    assert(k->matmul_packed[wtype] && r0 >= 0 && r0 <= r1 && n_tok >= 0);
    assert(r0 % k->pack_rows[wtype] == 0 && r1 % k->pack_rows[wtype] == 0);
    if (r0 == r1 || n_tok == 0) return;
    k->matmul_packed[wtype](n_in, w, NULL, r0, r1, x, x_stride, n_tok, y, y_stride);
}

void st_matmul_rows(const st_kernels_t *k, st_type_t wtype, const void *w, int n_in, const int32_t *rows, int n_rows,
                    const void *x, size_t x_stride, int n_tok, float *y, size_t y_stride) {
    assert(n_rows >= 0 && n_tok >= 0 && (rows || n_rows == 0));
    if (n_rows == 0 || n_tok == 0) return;
    if (k->matmul[wtype]) {
        k->matmul[wtype](n_in, w, rows, 0, n_rows, x, x_stride, n_tok, y, y_stride);
        return;
    }
    const st_vec_dot_fn dot = k->vec_dot[wtype];
    assert(dot);
    const size_t row_size = st_row_size(wtype, n_in);
    const char *xs = x;
    for (int i = 0; i < n_rows; i++) {
        const char *wrow = (const char *)w + (size_t)rows[i] * row_size;
        for (int t = 0; t < n_tok; t++) dot(n_in, y + (size_t)t * y_stride + rows[i], wrow, xs + (size_t)t * x_stride);
    }
}
