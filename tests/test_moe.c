/* st_moe_combine: the weighted sum of per-pair expert outputs that a cluster
 * uses to match the single-process result bit for bit. Expected values are
 * worked by hand in float arithmetic (each product rounded, then each sum, in
 * routing order j = 0..k-1). */
#include <criterion/criterion.h>
#include <string.h>

#include "moe.h"

Test(moe_combine, weighted_sum_per_token) {
    /* 2 tokens, k = 2, n_embd = 3; weights and outputs exact in binary */
    const int32_t ids[4] = {5, 1, 2, 7};
    const float w[4] = {0.5f, 0.25f, 1.0f, 0.125f};
    const float y[12] = {1, 2, 3, /* t0 j0 */ 4, 5, 6, /* t0 j1 */ -1, 0, 8, /* t1 j0 */ 8, 16, -8 /* t1 j1 */};
    const st_route_t r = {.layer = 0, .n_tok = 2, .k = 2, .ids = ids, .w = w};
    float out[6];
    memset(out, 0xFF, sizeof out); /* NaN: every element must be written */
    st_moe_combine(&r, 3, y, out);
    /* t0: 0.5*(1,2,3) + 0.25*(4,5,6) = (0.5+1, 1+1.25, 1.5+1.5) */
    const float want[6] = {1.5f, 2.25f, 3.0f, /* t1: 1*(-1,0,8) + 0.125*(8,16,-8) */ 0.0f, 2.0f, 7.0f};
    for (int i = 0; i < 6; i++) cr_assert_eq(out[i], want[i], "out[%d] = %g, want %g", i, out[i], want[i]);
}

Test(moe_combine, sums_in_routing_order) {
    /* k = 3 on one token, one element: 1e8 + 1 rounds to 1e8 in float (the
     * spacing there is 8), so routing order gives (1e8 + 1) - 1e8 = 0, while
     * summing the two large terms first would give 1 */
    const int32_t ids[3] = {0, 1, 2};
    const float w[3] = {1.0f, 1.0f, 1.0f};
    const float y[3] = {1e8f, 1.0f, -1e8f};
    const st_route_t r = {.n_tok = 1, .k = 3, .ids = ids, .w = w};
    float out[1] = {42.0f};
    st_moe_combine(&r, 1, y, out);
    cr_assert_eq(out[0], 0.0f, "got %g", out[0]);
    /* the same terms in another routing order: -1e8 + 1e8 = 0, then + 1 */
    const float y2[3] = {-1e8f, 1e8f, 1.0f};
    st_moe_combine(&r, 1, y2, out);
    cr_assert_eq(out[0], 1.0f, "got %g", out[0]);
}

Test(moe_combine, one_expert_scales_and_overwrites) {
    const int32_t ids[2] = {3, 3};
    const float w[2] = {2.0f, -0.5f};
    const float y[4] = {1.5f, -3.0f, 10.0f, 0.25f};
    const st_route_t r = {.n_tok = 2, .k = 1, .ids = ids, .w = w};
    float out[4] = {100, 100, 100, 100}; /* overwritten, not added to */
    st_moe_combine(&r, 2, y, out);
    const float want[4] = {3.0f, -6.0f, -5.0f, -0.125f};
    for (int i = 0; i < 4; i++) cr_assert_eq(out[i], want[i], "out[%d] = %g", i, out[i]);
}
