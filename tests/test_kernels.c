/* Tests for kernels/: type traits, fp16/bf16 conversions, the reference
 * quantizers against hand-computed values, the reference dot products against
 * a float dot of the dequantized rows, and every SIMD table against the
 * reference on seeded random data of odd sizes. On aarch64 (built with
 * gcc-aarch64-linux-gnu, run under qemu-aarch64 by scripts/test aarch64) the
 * same checks cover the neon and neon-dotprod tables.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "st_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#endif

/* ---- test utilities ---- */

/* Activation-like floats: mostly small, a few outliers (as hidden states have). */
static void fill_floats(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = st_test_rng_float(-1.0f, 1.0f) * ((st_test_rng_u32() % 16) == 0 ? 8.0f : 1.0f);
}

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A row of n elements of weight type t, random but well formed. */
static void fill_weights(st_type_t t, void *row, int n) {
    const st_kernels_t *ref = &st_kernels_ref;
    switch (t) {
    case ST_TYPE_Q4_0: {
        st_block_q4_0 *b = row;
        st_test_rng_bytes(b, st_row_size(t, n));
        for (int i = 0; i < n / ST_QK4_0; i++) b[i].d = st_fp32_to_fp16(st_test_rng_float(-0.02f, 0.02f));
        break;
    }
    case ST_TYPE_Q8_0: {
        st_block_q8_0 *b = row;
        st_test_rng_bytes(b, st_row_size(t, n));
        for (int i = 0; i < n / ST_QK8_0; i++) {
            b[i].d = st_fp32_to_fp16(st_test_rng_float(-0.01f, 0.01f));
            for (int j = 0; j < ST_QK8_0; j++)
                if (b[i].qs[j] == -128) b[i].qs[j] = -127; /* quantizers never write -128 */
        }
        break;
    }
    case ST_TYPE_Q6_K: {
        st_block_q6_k *b = row;
        st_test_rng_bytes(b, st_row_size(t, n)); /* any bits are valid quants and scales */
        for (int i = 0; i < n / ST_QK_K; i++) b[i].d = st_fp32_to_fp16(st_test_rng_float(-0.002f, 0.002f));
        break;
    }
    /* the other quantized formats: any bits are valid quants and scales; the
     * fp16 scales (and minimums) are set to sizes like llama-quantize writes */
    case ST_TYPE_Q4_1:
    case ST_TYPE_Q5_1: {
        const size_t bs = st_type_traits(t)->size;
        st_test_rng_bytes(row, st_row_size(t, n));
        for (int i = 0; i < n / 32; i++) {
            uint16_t dm[2] = {st_fp32_to_fp16(st_test_rng_float(0.0f, 0.01f)),
                              st_fp32_to_fp16(st_test_rng_float(-0.1f, 0.0f))};
            memcpy((uint8_t *)row + i * bs, dm, sizeof dm); /* d, m lead both blocks */
        }
        break;
    }
    case ST_TYPE_Q5_0: {
        st_block_q5_0 *b = row;
        st_test_rng_bytes(b, st_row_size(t, n));
        for (int i = 0; i < n / 32; i++) b[i].d = st_fp32_to_fp16(st_test_rng_float(-0.01f, 0.01f));
        break;
    }
    case ST_TYPE_Q2_K: {
        st_block_q2_k *b = row;
        st_test_rng_bytes(b, st_row_size(t, n));
        for (int i = 0; i < n / ST_QK_K; i++) {
            b[i].d = st_fp32_to_fp16(st_test_rng_float(0.0f, 0.004f));
            b[i].dmin = st_fp32_to_fp16(st_test_rng_float(0.0f, 0.004f));
        }
        break;
    }
    case ST_TYPE_Q3_K: {
        st_block_q3_k *b = row;
        st_test_rng_bytes(b, st_row_size(t, n));
        for (int i = 0; i < n / ST_QK_K; i++) b[i].d = st_fp32_to_fp16(st_test_rng_float(-0.002f, 0.002f));
        break;
    }
    case ST_TYPE_Q4_K:
    case ST_TYPE_Q5_K: {
        const size_t bs = st_type_traits(t)->size;
        st_test_rng_bytes(row, st_row_size(t, n));
        for (int i = 0; i < n / ST_QK_K; i++) {
            uint16_t dm[2] = {st_fp32_to_fp16(st_test_rng_float(0.0f, 0.0005f)),
                              st_fp32_to_fp16(st_test_rng_float(0.0f, 0.002f))};
            memcpy((uint8_t *)row + i * bs, dm, sizeof dm); /* d, dmin lead both blocks */
        }
        break;
    }
    default: { /* float formats */
        float *f = malloc((size_t)n * sizeof *f);
        fill_floats(f, n);
        ref->from_float[t](n, f, row);
        free(f);
    }
    }
}

/* A row of n activations converted with the reference to the vec_dot_type of t. */
static void fill_activations(st_type_t t, void *row, int n) {
    float *f = malloc((size_t)n * sizeof *f);
    fill_floats(f, n);
    st_kernels_ref.from_float[st_type_traits(t)->vec_dot_type](n, f, row);
    free(f);
}

/* sum |w_i * x_i| over the dequantized rows (double): the scale of the rounding
 * error of any summation order of the same terms. */
static double abs_dot(st_type_t t, const void *w, const void *x, int n, double *dot) {
    float *fw = malloc((size_t)n * sizeof *fw), *fx = malloc((size_t)n * sizeof *fx);
    st_kernels_ref.to_float[t](n, w, fw);
    st_kernels_ref.to_float[st_type_traits(t)->vec_dot_type](n, x, fx);
    double s = 0.0, d = 0.0;
    for (int i = 0; i < n; i++) {
        s += fabs((double)fw[i] * fx[i]);
        d += (double)fw[i] * fx[i];
    }
    free(fw);
    free(fx);
    if (dot) *dot = d;
    return s;
}

static const st_kernels_t *need(const char *name) {
    const st_kernels_t *k = st_kernels_by_name(name);
    if (!k) cr_skip_test("%s kernels not built or not supported by this CPU", name);
    return k;
}

static const st_type_t s_weight_types[] = {ST_TYPE_F32,  ST_TYPE_F16,  ST_TYPE_BF16, ST_TYPE_Q8_0, ST_TYPE_Q4_0,
                                           ST_TYPE_Q6_K, ST_TYPE_Q4_1, ST_TYPE_Q5_0, ST_TYPE_Q5_1, ST_TYPE_Q2_K,
                                           ST_TYPE_Q3_K, ST_TYPE_Q4_K, ST_TYPE_Q5_K};
#define N_WEIGHT_TYPES (int)(sizeof s_weight_types / sizeof s_weight_types[0])

/* Sizes to try for a type: odd block counts (1, 3, ..., 65 blocks of 32; 1..9
 * super-blocks of 256), and for float formats odd element counts plus big rows. */
static int sizes_for(st_type_t t, int *out) {
    int k = 0;
    const int blck = st_type_traits(t)->blck;
    if (blck == ST_QK_K)
        for (int nb = 1; nb <= 9; nb++) out[k++] = nb * ST_QK_K;
    else if (blck == 32)
        for (int nb = 1; nb <= 65; nb += 2) out[k++] = nb * 32;
    else {
        for (int n = 1; n <= 129; n += 2) out[k++] = n;
        out[k++] = 1536;
        out[k++] = 4099;
    }
    return k;
}

/* ---- traits ---- */

Test(kernels, traits_of_supported_types) {
    const struct {
        st_type_t t;
        const char *name;
        int blck;
        size_t size;
        st_type_t vdt;
    } want[] = {
        {ST_TYPE_F32, "F32", 1, 4, ST_TYPE_F32},        {ST_TYPE_F16, "F16", 1, 2, ST_TYPE_F16},
        {ST_TYPE_BF16, "BF16", 1, 2, ST_TYPE_BF16},     {ST_TYPE_Q4_0, "Q4_0", 32, 18, ST_TYPE_Q8_0},
        {ST_TYPE_Q8_0, "Q8_0", 32, 34, ST_TYPE_Q8_0},   {ST_TYPE_Q6_K, "Q6_K", 256, 210, ST_TYPE_Q8_K},
        {ST_TYPE_Q4_1, "Q4_1", 32, 20, ST_TYPE_Q8_1},   {ST_TYPE_Q5_0, "Q5_0", 32, 22, ST_TYPE_Q8_0},
        {ST_TYPE_Q5_1, "Q5_1", 32, 24, ST_TYPE_Q8_1},   {ST_TYPE_Q2_K, "Q2_K", 256, 84, ST_TYPE_Q8_K},
        {ST_TYPE_Q3_K, "Q3_K", 256, 110, ST_TYPE_Q8_K}, {ST_TYPE_Q4_K, "Q4_K", 256, 144, ST_TYPE_Q8_K},
        {ST_TYPE_Q5_K, "Q5_K", 256, 176, ST_TYPE_Q8_K},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const st_type_traits_t *tr = st_type_traits(want[i].t);
        cr_assert_not_null(tr);
        cr_assert_str_eq(tr->name, want[i].name);
        cr_assert_str_eq(st_type_name(want[i].t), want[i].name);
        cr_assert_eq(tr->blck, want[i].blck, "%s", want[i].name);
        cr_assert_eq(tr->size, want[i].size, "%s", want[i].name);
        cr_assert_eq(tr->vec_dot_type, want[i].vdt, "%s", want[i].name);
        cr_assert(tr->supported, "%s", want[i].name);
    }
}

Test(kernels, traits_of_known_unsupported_types) {
    /* sizes as in ggml-common.h, so a GGUF reader can size tensors it will not use */
    const struct {
        int id;
        int blck;
        size_t size;
    } want[] = {{9, 32, 36},   {15, 256, 292}, {16, 256, 66},  {17, 256, 74}, {18, 256, 98},
                {19, 256, 50}, {20, 32, 18},   {21, 256, 110}, {22, 256, 82}, {23, 256, 136},
                {24, 1, 1},    {25, 1, 2},     {26, 1, 4},     {27, 1, 8},    {28, 1, 8},
                {29, 256, 56}, {34, 256, 54},  {35, 256, 66},  {39, 32, 17}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const st_type_traits_t *tr = st_type_traits(want[i].id);
        cr_assert_not_null(tr, "id %d", want[i].id);
        cr_assert_eq(tr->blck, want[i].blck, "id %d", want[i].id);
        cr_assert_eq(tr->size, want[i].size, "id %d", want[i].id);
        cr_assert(!tr->supported, "id %d", want[i].id);
    }
    cr_assert_str_eq(st_type_name(ST_TYPE_Q8_1), "Q8_1");
    cr_assert_str_eq(st_type_name(ST_TYPE_IQ4_XS), "IQ4_XS");
}

Test(kernels, traits_of_unknown_id_is_null) {
    const int ids[] = {-1, 4, 5, 31, 32, 33, 36, 37, 38, ST_TYPE_COUNT, 1000};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        cr_assert_null(st_type_traits(ids[i]), "id %d", ids[i]);
        cr_assert_str_eq(st_type_name(ids[i]), "unknown");
    }
}

Test(kernels, row_size_of_each_type) {
    cr_assert_eq(st_row_size(ST_TYPE_F32, 10), 40);
    cr_assert_eq(st_row_size(ST_TYPE_F16, 10), 20);
    cr_assert_eq(st_row_size(ST_TYPE_BF16, 10), 20);
    cr_assert_eq(st_row_size(ST_TYPE_Q4_0, 64), 36);
    cr_assert_eq(st_row_size(ST_TYPE_Q8_0, 64), 68);
    cr_assert_eq(st_row_size(ST_TYPE_Q6_K, 512), 420);
    cr_assert_eq(st_row_size(ST_TYPE_Q8_K, 256), 292);
    cr_assert_eq(st_row_size(ST_TYPE_Q4_K, 256), 144);
    cr_assert_eq(st_row_size(ST_TYPE_Q4_0, 0), 0);
    /* spec sanity size: one 4B expert matrix, 1536 x 768 Q4_0 */
    cr_assert_eq(st_row_size(ST_TYPE_Q4_0, 1536) * 768, 663552);
}

Test(kernels, every_table_is_complete_for_supported_types) {
    const char *names[] = {"ref", "avx2", "avx512", "neon", "neon-dotprod"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const st_kernels_t *k = st_kernels_by_name(names[i]);
        if (!k) continue;
        cr_assert_str_eq(k->name, names[i]);
        for (int t = 0; t < ST_TYPE_COUNT; t++) {
            const st_type_traits_t *tr = st_type_traits(t);
            if (!tr || !tr->supported) continue;
            cr_assert_not_null(k->vec_dot[t], "%s vec_dot %s", k->name, tr->name);
            cr_assert_not_null(k->to_float[t], "%s to_float %s", k->name, tr->name);
            cr_assert_not_null(k->from_float[tr->vec_dot_type], "%s from_float %s", k->name, tr->name);
        }
        cr_assert_not_null(k->from_float[ST_TYPE_Q4_0]);
        cr_assert(k->axpy[ST_TYPE_F32] && k->axpy[ST_TYPE_F16], "%s axpy", k->name);
    }
    cr_assert_not_null(st_kernels_select());
    cr_assert_null(st_kernels_by_name("no-such-isa"));
    cr_assert_null(st_kernels_by_name(NULL));
}

/* axpy (attention's sum of values) is the same multiply-then-add in every
 * table, element by element: the bits of the reference, any length. */
Test(kernels, axpy_gives_the_reference_bits_in_every_table) {
    const char *names[] = {"avx2", "avx512", "neon", "neon-dotprod"};
    enum { N = 77 };
    float x32[N], y0[N], want[N], got[N];
    uint16_t x16[N];
    st_test_rng_seed(901);
    fill_floats(x32, N);
    fill_floats(y0, N);
    for (int i = 0; i < N; i++) x16[i] = st_fp32_to_fp16(x32[i]);
    const st_type_t types[] = {ST_TYPE_F32, ST_TYPE_F16};
    const void *xs[] = {x32, x16};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const st_kernels_t *k = st_kernels_by_name(names[i]);
        if (!k) continue;
        for (int ti = 0; ti < 2; ti++)
            for (int n = 0; n <= N; n += n < 20 ? 1 : 19) {
                memcpy(want, y0, sizeof want);
                memcpy(got, y0, sizeof got);
                st_kernels_ref.axpy[types[ti]](n, 0.37f, xs[ti], want);
                k->axpy[types[ti]](n, 0.37f, xs[ti], got);
                cr_assert(memcmp(want, got, sizeof want) == 0, "%s axpy %s n=%d", k->name, st_type_name(types[ti]), n);
            }
    }
    /* and the reference is y + a * x, rounded after each */
    memcpy(got, y0, sizeof got);
    st_kernels_ref.axpy[ST_TYPE_F16](N, -1.5f, x16, got);
    for (int i = 0; i < N; i++) {
        const float p = -1.5f * st_fp16_to_fp32(x16[i]);
        cr_assert_eq(got[i], y0[i] + p);
    }
}

/* ---- fp16 / bf16 ---- */

Test(kernels, fp16_known_values) {
    const struct {
        float f;
        uint16_t h;
    } v[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.0f, 0xc000},
        {65504.0f, 0x7bff},
        {65519.99f, 0x7bff},
        {65520.0f, 0x7c00},
        {1e10f, 0x7c00},
        {-INFINITY, 0xfc00},
        {0x1p-24f, 0x0001},
        {0x1p-25f, 0x0000}, /* tie: rounds to even (0) */
        {0x1.8p-25f, 0x0001},
        {0x1.8p-24f, 0x0002}, /* tie 1.5 -> 2 */
        {0x1p-14f, 0x0400},
        {0x1.ff8p-15f, 0x03ff},    /* largest subnormal */
        {0x1.ffcp-15f, 0x0400},    /* largest subnormal + half a step: tie, even -> min normal */
        {1.0f + 0x1p-11f, 0x3c00}, /* tie: even */
        {1.0f + 0x3p-11f, 0x3c02}, /* tie: even, upward */
        {0.1f, 0x2e66},
        {0x1p-26f, 0x0000},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        cr_assert_eq(st_fp32_to_fp16(v[i].f), v[i].h, "%a -> %04x, want %04x", (double)v[i].f, st_fp32_to_fp16(v[i].f),
                     v[i].h);
    }
    cr_assert_eq(st_fp16_to_fp32(0x0001), 0x1p-24f);
    cr_assert_eq(st_fp16_to_fp32(0x03ff), 0x1.ff8p-15f);
    cr_assert_eq(st_fp16_to_fp32(0x7bff), 65504.0f);
    cr_assert(isnan(st_fp16_to_fp32(0x7e00)));
    cr_assert(isnan(st_fp16_to_fp32(st_fp32_to_fp16(NAN))));
}

Test(kernels, fp16_round_trip_is_exact_for_all_halves) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = st_fp16_to_fp32((uint16_t)h);
        uint16_t back = st_fp32_to_fp16(f);
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        uint16_t want = nan ? (uint16_t)(h | 0x200) : (uint16_t)h; /* signalling NaNs come back quiet */
        cr_assert_eq(back, want, "%04x -> %a -> %04x", h, (double)f, back);
    }
}

Test(kernels, fp16_rounds_midpoints_to_even) {
    /* halfway between two adjacent finite halves (both signs), and a hair on either side */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        for (uint32_t s = 0; s <= 0x8000; s += 0x8000) {
            double a = st_fp16_to_fp32((uint16_t)(h | s)), b = st_fp16_to_fp32((uint16_t)((h + 1) | s));
            float mid = (float)((a + b) / 2); /* exact: halves have 11 bits */
            uint16_t even = (h & 1) ? (uint16_t)((h + 1) | s) : (uint16_t)(h | s);
            cr_assert_eq(st_fp32_to_fp16(mid), even, "mid of %04x", h | s);
            cr_assert_eq(st_fp32_to_fp16(nextafterf(mid, 0.0f)), (uint16_t)(h | s));
            cr_assert_eq(st_fp32_to_fp16(nextafterf(mid, s ? -INFINITY : INFINITY)), (uint16_t)((h + 1) | s));
        }
    }
}

/* The CPU's own fp16 conversions (F16C on x86-64, fcvt on aarch64); false when it has none */
#if defined(__x86_64__)
__attribute__((target("f16c"))) static uint16_t hw_fp16_from_float(float f) {
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}
__attribute__((target("f16c"))) static float hw_fp16_to_float(uint16_t h) { return _cvtsh_ss(h); }
static bool hw_fp16(void) { return __builtin_cpu_supports("f16c"); }
#elif defined(__aarch64__)
static uint16_t hw_fp16_from_float(float f) { /* fcvt h, s: nearest even (FPCR default), NaNs quieted */
    const __fp16 h = (__fp16)f;
    uint16_t u;
    memcpy(&u, &h, sizeof u);
    return u;
}
static float hw_fp16_to_float(uint16_t u) {
    __fp16 h;
    memcpy(&h, &u, sizeof h);
    return (float)h;
}
static bool hw_fp16(void) { return true; }
#endif

/* our conversions give the hardware's bits (the SIMD tables use the hardware ones) */
Test(kernels, fp16_matches_hardware_bits) {
#if defined(__x86_64__) || defined(__aarch64__)
    if (!hw_fp16()) cr_skip_test("no F16C");
    for (uint32_t h = 0; h < 65536; h++) {
        float a = st_fp16_to_fp32((uint16_t)h), b = hw_fp16_to_float((uint16_t)h);
        cr_assert_eq(f2u(a), f2u(b), "%04x", h);
    }
    st_test_rng_seed(16);
    for (int i = 0; i < 2000000; i++) { /* random bit patterns: every exponent, NaNs, subnormals */
        float f = u2f(st_test_rng_u32());
        cr_assert_eq(st_fp32_to_fp16(f), hw_fp16_from_float(f), "%08x", f2u(f));
    }
#else
    cr_skip_test("no fp16 conversion instructions known on this architecture");
#endif
}

Test(kernels, bf16_known_values_and_round_trip) {
    cr_assert_eq(st_fp32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(st_fp32_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie: even */
    cr_assert_eq(st_fp32_to_bf16(1.0f + 0x3p-8f), 0x3f82); /* tie: even, upward */
    cr_assert_eq(st_fp32_to_bf16(1.0f + 0x1.8p-8f), 0x3f81);
    cr_assert_eq(st_fp32_to_bf16(-INFINITY), 0xff80);
    cr_assert_eq(st_fp32_to_bf16(u2f(0x7f800001)), 0x7fc0); /* signalling NaN: forced quiet */
    cr_assert_eq(st_bf16_to_fp32(0xc040), -3.0f);
    for (uint32_t h = 0; h < 65536; h++) {
        bool nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        uint16_t want = nan ? (uint16_t)(h | 0x40) : (uint16_t)h;
        cr_assert_eq(st_fp32_to_bf16(st_bf16_to_fp32((uint16_t)h)), want, "%04x", h);
    }
}

/* ---- reference quantizers vs hand-computed values ---- */

Test(kernels, q4_0_quantize_known_block) {
    /* x = -16..15: the largest magnitude is -16, so d = -16 / -8 = 2, q = trunc(x / 2 + 8.5) capped
     * at 15: even x come back exact, odd x come back as x + 1, and 15 (q = 16) is capped to 14. */
    float x[32], y[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    st_block_q4_0 b;
    st_quantize_row_q4_0_ref(32, x, &b);
    cr_assert_eq(b.d, 0x4000);    /* fp16 2.0 */
    cr_assert_eq(b.qs[0], 0x80);  /* x[0] = -16 -> q 0, x[16] = 0 -> q 8 */
    cr_assert_eq(b.qs[15], 0xf8); /* x[15] = -1 -> q 8, x[31] = 15 -> q 15 */
    st_kernels_ref.to_float[ST_TYPE_Q4_0](32, &b, y);
    for (int j = 0; j < 32; j++) {
        int v = j - 16;
        float want = (float)(v == 15 ? 14 : (v & 1) ? v + 1 : v);
        cr_assert_eq(y[j], want, "j=%d: %g, want %g", j, (double)y[j], (double)want);
    }
}

Test(kernels, q4_0_quantize_zero_block) {
    float x[32] = {0}, y[32];
    st_block_q4_0 b;
    st_quantize_row_q4_0_ref(32, x, &b);
    cr_assert_eq(b.d, 0x8000); /* d = 0 / -8 = -0, as ggml writes it */
    for (int j = 0; j < 16; j++) cr_assert_eq(b.qs[j], 0x88);
    st_kernels_ref.to_float[ST_TYPE_Q4_0](32, &b, y);
    for (int j = 0; j < 32; j++) cr_assert_eq(y[j], 0.0f);
}

Test(kernels, q8_0_quantize_known_block) {
    /* amax = 127 so d = 1 and q = roundf(x): halves go away from zero (2.5 -> 3, -0.5 -> -1) */
    float x[32] = {127, -127, 0.5f, -0.5f, 1.5f, 2.5f, -2.5f, 2.49f, 0.49f, -100.2f, 3};
    const int8_t want[32] = {127, -127, 1, -1, 2, 3, -3, 2, 0, -100, 3};
    st_block_q8_0 b;
    st_quantize_row_q8_0_ref(32, x, &b);
    cr_assert_eq(b.d, 0x3c00); /* fp16 1.0 */
    for (int j = 0; j < 32; j++) cr_assert_eq(b.qs[j], want[j], "j=%d: %d", j, b.qs[j]);
    float y[32];
    st_kernels_ref.to_float[ST_TYPE_Q8_0](32, &b, y);
    for (int j = 0; j < 32; j++) cr_assert_eq(y[j], (float)want[j]);
}

Test(kernels, q8_k_quantize_known_block) {
    /* x = j - 128: the largest magnitude is -128, scale -127 / -128 = 0.9921875 (exact),
     * q = nearest-even(0.9921875 x), d = 1 / 0.9921875 */
    float x[256];
    for (int j = 0; j < 256; j++) x[j] = (float)(j - 128);
    st_block_q8_k b;
    st_kernels_ref.from_float[ST_TYPE_Q8_K](256, x, &b);
    cr_assert_eq(b.d, 1.0f / 0.9921875f);
    for (int j = 0; j < 256; j++) {
        double v = 0.9921875 * (j - 128);
        cr_assert_eq(b.qs[j], (int8_t)nearbyint(v), "j=%d", j);
    }
    cr_assert_eq(b.qs[0], -127);
    cr_assert_eq(b.qs[64], -64); /* -64 * 0.9921875 = -63.5: tie to even */
    cr_assert_eq(b.qs[192], 64); /* 64 * 0.9921875 = 63.5: tie to even */
    cr_assert_eq(b.qs[255], 126);
    for (int g = 0; g < 16; g++) {
        int sum = 0;
        for (int j = 0; j < 16; j++) sum += b.qs[g * 16 + j];
        cr_assert_eq(b.bsums[g], sum, "group %d", g);
    }
}

Test(kernels, quantize_error_is_within_half_a_step) {
    st_test_rng_seed(7);
    float x[1024], y[1024];
    fill_floats(x, 1024);
    st_block_q8_0 q8[32];
    st_quantize_row_q8_0_ref(1024, x, q8);
    st_kernels_ref.to_float[ST_TYPE_Q8_0](1024, q8, y);
    for (int j = 0; j < 1024; j++) { /* half a step, plus the fp16 rounding of d times |q| <= 127 */
        float d = st_fp16_to_fp32(q8[j / 32].d);
        cr_assert(fabsf(x[j] - y[j]) <= 0.5f * d + 127 * d * 0x1p-11f, "j=%d", j);
    }
    st_block_q4_0 q4[32];
    st_quantize_row_q4_0_ref(1024, x, q4);
    st_kernels_ref.to_float[ST_TYPE_Q4_0](1024, q4, y);
    for (int j = 0; j < 1024; j++) { /* a full step on the side opposite the max (8 is capped to 7) */
        float d = fabsf(st_fp16_to_fp32(q4[j / 32].d));
        cr_assert(fabsf(x[j] - y[j]) <= 1.01f * d, "j=%d", j);
    }
    st_block_q8_k qk[4];
    st_kernels_ref.from_float[ST_TYPE_Q8_K](1024, x, qk);
    st_kernels_ref.to_float[ST_TYPE_Q8_K](1024, qk, y);
    for (int j = 0; j < 1024; j++) cr_assert(fabsf(x[j] - y[j]) <= 0.501f * fabsf(qk[j / 256].d), "j=%d", j);
}

/* ---- reference dot products vs the dequantized rows ---- */

Test(kernels, ref_vec_dot_matches_dequantized_dot) {
    static uint8_t w[4099 * 4], x[4099 * 4];
    int sizes[128];
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const st_type_t t = s_weight_types[ti];
        /* Q8_1's s is d * sum(q) rounded to fp16, not the sum of the dequantized
         * activations: test_kernels_quant.c checks Q4_1/Q5_1 with that semantics */
        if (st_type_traits(t)->vec_dot_type == ST_TYPE_Q8_1) continue;
        const int ns = sizes_for(t, sizes);
        for (int si = 0; si < ns; si++) {
            const int n = sizes[si];
            st_test_rng_seed(100 * t + n);
            fill_weights(t, w, n);
            fill_activations(t, x, n);
            float got;
            double want;
            st_kernels_ref.vec_dot[t](n, &got, w, x);
            /* the block sums are exact integers; only the float scaling and summation round */
            double tol = 1e-5 * abs_dot(t, w, x, n, &want) + 1e-30;
            cr_assert(fabs(got - want) <= tol, "%s n=%d: %g vs %g", st_type_name(t), n, (double)got, want);
        }
    }
}

/* ---- SIMD tables vs the reference ---- */

static void check_vec_dot_matches_ref(const st_kernels_t *k) {
    static uint8_t w[4099 * 4], x[4099 * 4];
    int sizes[128];
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const st_type_t t = s_weight_types[ti];
        const int ns = sizes_for(t, sizes);
        for (int si = 0; si < ns; si++) {
            const int n = sizes[si];
            st_test_rng_seed(1234 + 100 * t + n);
            fill_weights(t, w, n);
            fill_activations(t, x, n);
            float want, got;
            st_kernels_ref.vec_dot[t](n, &want, w, x);
            k->vec_dot[t](n, &got, w, x);
            /* Same terms summed in another order (SIMD lanes, FMA, float vs double). Each
             * result is within (number of additions per lane) * 2^-24 * sum|terms| of the
             * exact value; < 200 additions per lane here, so 1e-5 * sum|w x| bounds both. */
            double tol = 1e-5 * abs_dot(t, w, x, n, NULL) + 1e-30;
            cr_assert(fabs((double)got - want) <= tol, "%s %s n=%d: %.9g vs ref %.9g (tol %g)", k->name,
                      st_type_name(t), n, (double)got, (double)want, tol);
        }
    }
}

static void check_extremes_match_ref(const st_kernels_t *k) {
    /* saturating quants: every Q4_0 nibble 0 or 15, Q8_0 +-127, Q6_K all ones, scales +-128,
     * activations +-127: the integer paths must not overflow (int16 pair sums and all) */
    static st_block_q4_0 w4[64];
    static st_block_q8_0 w8[64], x8[64];
    static st_block_q6_k w6[8];
    static st_block_q8_k xk[8];
    for (int pattern = 0; pattern < 4; pattern++) {
        const uint8_t nib = pattern & 1 ? 0xff : 0x00;
        const int8_t q = pattern & 2 ? 127 : -127;
        for (int b = 0; b < 64; b++) {
            w4[b].d = w8[b].d = x8[b].d = 0x3c00;
            memset(w4[b].qs, nib, sizeof w4[b].qs);
            memset(w8[b].qs, (pattern & 1) ? 127 : -127, sizeof w8[b].qs);
            memset(x8[b].qs, q, sizeof x8[b].qs);
        }
        for (int b = 0; b < 8; b++) {
            memset(w6[b].ql, nib, sizeof w6[b].ql);
            memset(w6[b].qh, nib, sizeof w6[b].qh);
            memset(w6[b].scales, pattern & 1 ? 127 : 0x80, sizeof w6[b].scales);
            w6[b].d = 0x3c00;
            xk[b].d = 1.0f;
            memset(xk[b].qs, q, sizeof xk[b].qs);
            for (int g = 0; g < 16; g++) xk[b].bsums[g] = (int16_t)(16 * q);
        }
        float want, got;
        st_kernels_ref.vec_dot[ST_TYPE_Q4_0](64 * 32, &want, w4, x8);
        k->vec_dot[ST_TYPE_Q4_0](64 * 32, &got, w4, x8);
        cr_assert_eq(got, want, "q4_0 pattern %d: %g vs %g", pattern, (double)got, (double)want);
        st_kernels_ref.vec_dot[ST_TYPE_Q8_0](64 * 32, &want, w8, x8);
        k->vec_dot[ST_TYPE_Q8_0](64 * 32, &got, w8, x8);
        cr_assert_eq(got, want, "q8_0 pattern %d: %g vs %g", pattern, (double)got, (double)want);
        st_kernels_ref.vec_dot[ST_TYPE_Q6_K](8 * 256, &want, w6, xk);
        k->vec_dot[ST_TYPE_Q6_K](8 * 256, &got, w6, xk);
        /* lane sums reach 2^24 here, past exact float integers: allow the order to matter */
        cr_assert(fabsf(got - want) <= 1e-6f * fabsf(want), "q6_K pattern %d: %g vs %g", pattern, (double)got,
                  (double)want);
    }
}

/* Quantizers must give the same bits as the reference, ties and zero blocks included. */
static void check_from_float_matches_ref(const st_kernels_t *k) {
    static float x[9 * 256 + 8];
    static uint8_t want[16384], got[16384];
    const st_type_t types[] = {ST_TYPE_F32,  ST_TYPE_F16,  ST_TYPE_BF16, ST_TYPE_Q8_0,
                               ST_TYPE_Q8_1, ST_TYPE_Q8_K, ST_TYPE_Q4_0};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const st_type_t t = types[ti];
        const int blck = st_type_traits(t)->blck, step = blck == 1 ? 7 : blck;
        for (int n = step; n <= 9 * 256 + 7; n += step * (blck == 32 ? 2 : 1)) {
            st_test_rng_seed(99 + n);
            fill_floats(x, n);
            const bool ties = (n / step) % 2; /* every 32 values peak at 127: scale 1, x.5 are ties */
            for (int i = 0; i < n; i++) {
                if (ties)
                    x[i] = i % 32 == 0 ? 127.0f : (float)(int)(x[i] * 100) + 0.5f;
                else if (i % 5 == 0)
                    x[i] = (float)(int)(x[i] * 100) + 0.5f; /* exact halves */
                if (i / 32 % 7 == 3) x[i] = 0.0f;           /* whole zero blocks */
            }
            memset(want, 0xaa, sizeof want);
            memset(got, 0xaa, sizeof got);
            st_kernels_ref.from_float[t](n, x, want);
            k->from_float[t](n, x, got);
            const size_t size = st_row_size(t, n);
            cr_assert(memcmp(want, got, size + 16) == 0, "%s from_float %s n=%d", k->name, st_type_name(t), n);
        }
    }
}

static void check_to_float_matches_ref(const st_kernels_t *k) {
    static uint8_t row[9 * 256 * 4];
    static float want[9 * 256 + 8], got[9 * 256 + 8];
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const st_type_t t = s_weight_types[ti];
        const int blck = st_type_traits(t)->blck, step = blck == 1 ? 7 : blck;
        for (int n = step; n <= 9 * 256; n += step) {
            st_test_rng_seed(77 + n);
            fill_weights(t, row, n);
            memset(want, 0, sizeof want);
            memset(got, 0, sizeof got);
            st_kernels_ref.to_float[t](n, row, want);
            k->to_float[t](n, row, got);
            cr_assert(memcmp(want, got, sizeof want) == 0, "%s to_float %s n=%d", k->name, st_type_name(t), n);
        }
    }
}

Test(kernels, avx2_vec_dot_matches_ref) { check_vec_dot_matches_ref(need("avx2")); }
Test(kernels, avx2_vec_dot_extremes_match_ref_exactly) { check_extremes_match_ref(need("avx2")); }
Test(kernels, avx2_from_float_matches_ref_bits) { check_from_float_matches_ref(need("avx2")); }
Test(kernels, avx2_to_float_matches_ref_bits) { check_to_float_matches_ref(need("avx2")); }
Test(kernels, avx512_vec_dot_matches_ref) { check_vec_dot_matches_ref(need("avx512")); }
Test(kernels, avx512_vec_dot_extremes_match_ref_exactly) { check_extremes_match_ref(need("avx512")); }
Test(kernels, avx512_from_float_matches_ref_bits) { check_from_float_matches_ref(need("avx512")); }
Test(kernels, avx512_to_float_matches_ref_bits) { check_to_float_matches_ref(need("avx512")); }
Test(kernels, neon_vec_dot_matches_ref) { check_vec_dot_matches_ref(need("neon")); }
Test(kernels, neon_vec_dot_extremes_match_ref_exactly) { check_extremes_match_ref(need("neon")); }
Test(kernels, neon_from_float_matches_ref_bits) { check_from_float_matches_ref(need("neon")); }
Test(kernels, neon_to_float_matches_ref_bits) { check_to_float_matches_ref(need("neon")); }
Test(kernels, neon_dotprod_vec_dot_matches_ref) { check_vec_dot_matches_ref(need("neon-dotprod")); }
Test(kernels, neon_dotprod_vec_dot_extremes_match_ref_exactly) { check_extremes_match_ref(need("neon-dotprod")); }
Test(kernels, neon_dotprod_from_float_matches_ref_bits) { check_from_float_matches_ref(need("neon-dotprod")); }
Test(kernels, neon_dotprod_to_float_matches_ref_bits) { check_to_float_matches_ref(need("neon-dotprod")); }

/* ---- matmul ---- */

/* st_matmul against the reference vec_dot for every row and token, on a shape
 * that exercises the multi-row kernels' edges: r0 not a multiple of 8, groups of
 * 8 rows plus leftovers, token counts around the 4-token chunks and past the
 * 64-token pass, rows longer than one 64-block pass; rows outside [r0, r1) and
 * columns of y past n_rows must stay untouched. */
static void check_matmul_matches_ref(const st_kernels_t *k, st_type_t t, int n_in, int n_rows, int r0, int r1,
                                     int n_tok) {
    const int y_stride = n_rows + 3;
    const size_t wrow = st_row_size(t, n_in);
    const size_t x_stride = st_row_size(st_type_traits(t)->vec_dot_type, n_in) + 40;
    uint8_t *w = malloc((size_t)n_rows * wrow), *x = malloc((size_t)n_tok * x_stride);
    float *y = malloc((size_t)n_tok * y_stride * sizeof *y);
    st_test_rng_seed(5 + 7 * t + n_in + n_rows + n_tok);
    for (int r = 0; r < n_rows; r++) fill_weights(t, w + r * wrow, n_in);
    for (int i = 0; i < n_tok; i++) fill_activations(t, x + i * x_stride, n_in);
    for (int i = 0; i < n_tok * y_stride; i++) y[i] = -12345.0f;
    st_matmul(k, t, w, n_in, r0, r1, x, x_stride, n_tok, y, y_stride);
    for (int i = 0; i < n_tok; i++) {
        for (int r = 0; r < y_stride; r++) {
            const float got = y[i * y_stride + r];
            if (r < r0 || r >= r1) {
                cr_assert_eq(got, -12345.0f, "%s %s: row %d token %d written", k->name, st_type_name(t), r, i);
                continue;
            }
            float want;
            st_kernels_ref.vec_dot[t](n_in, &want, w + r * wrow, x + i * x_stride);
            /* same exact integer block sums, float scaling summed in another order (lanes,
             * FMA, passes of 64 blocks added at the end): as for vec_dot, 1e-5 * sum|w x| */
            const double tol = 1e-5 * abs_dot(t, w + r * wrow, x + i * x_stride, n_in, NULL) + 1e-30;
            cr_assert(fabs((double)got - want) <= tol, "%s %s n_in=%d row %d of [%d,%d) token %d/%d: %.9g vs ref %.9g",
                      k->name, st_type_name(t), n_in, r, r0, r1, i, n_tok, (double)got, (double)want);
        }
    }
    free(w);
    free(x);
    free(y);
}

/* st_matmul_rows on a seeded random subset of rows, in random order: listed rows
 * match the reference, every other element of y stays untouched. */
static void check_matmul_rows_matches_ref(const st_kernels_t *k, st_type_t t, int n_in, int n_rows, int n_tok) {
    const int y_stride = n_rows + 3;
    const size_t wrow = st_row_size(t, n_in);
    const size_t x_stride = st_row_size(st_type_traits(t)->vec_dot_type, n_in) + 8;
    uint8_t *w = malloc((size_t)n_rows * wrow), *x = malloc((size_t)n_tok * x_stride);
    float *y = malloc((size_t)n_tok * y_stride * sizeof *y);
    int32_t *list = malloc((size_t)n_rows * sizeof *list);
    bool *listed = calloc((size_t)n_rows, sizeof *listed);
    st_test_rng_seed(77 + 3 * t + n_in + n_rows + n_tok);
    for (int r = 0; r < n_rows; r++) fill_weights(t, w + r * wrow, n_in);
    for (int i = 0; i < n_tok; i++) fill_activations(t, x + i * x_stride, n_in);
    int n_list = 0;
    for (int r = 0; r < n_rows; r++)
        if (st_test_rng_u32() % 3) list[n_list++] = r; /* about 2/3 of the rows */
    for (int i = n_list - 1; i > 0; i--) {             /* shuffled: any order is allowed */
        const int j = (int)(st_test_rng_u32() % (uint32_t)(i + 1));
        const int32_t tmp = list[i];
        list[i] = list[j];
        list[j] = tmp;
    }
    for (int i = 0; i < n_list; i++) listed[list[i]] = true;
    for (int i = 0; i < n_tok * y_stride; i++) y[i] = -12345.0f;
    st_matmul_rows(k, t, w, n_in, list, n_list, x, x_stride, n_tok, y, y_stride);
    for (int i = 0; i < n_tok; i++) {
        for (int r = 0; r < y_stride; r++) {
            const float got = y[i * y_stride + r];
            if (r >= n_rows || !listed[r]) {
                cr_assert_eq(got, -12345.0f, "%s %s: unlisted row %d token %d written", k->name, st_type_name(t), r, i);
                continue;
            }
            float want;
            st_kernels_ref.vec_dot[t](n_in, &want, w + r * wrow, x + i * x_stride);
            const double tol = 1e-5 * abs_dot(t, w + r * wrow, x + i * x_stride, n_in, NULL) + 1e-30; /* as above */
            cr_assert(fabs((double)got - want) <= tol, "%s %s listed row %d token %d/%d: %.9g vs ref %.9g", k->name,
                      st_type_name(t), r, i, n_tok, (double)got, (double)want);
        }
    }
    free(w);
    free(x);
    free(y);
    free(list);
    free(listed);
}

static void check_matmul_shapes(const st_kernels_t *k) {
    static const int toks[] = {1, 2, 3, 4, 5, 8, 9, 67};
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const st_type_t t = s_weight_types[ti];
        const int blck = st_type_traits(t)->blck;
        const int n_ins[] = {blck, 3 * blck, blck == 32 ? 65 * 32 : 5 * blck}; /* 65 blocks: two passes */
        for (size_t ni = 0; ni < sizeof n_ins / sizeof n_ins[0]; ni++)
            for (size_t nt = 0; nt < sizeof toks / sizeof toks[0]; nt++) {
                if (toks[nt] > 9 && ni != 1) continue; /* the long token run on one width is enough */
                check_matmul_matches_ref(k, t, n_ins[ni], 29, 3, 26, toks[nt]); /* 2 groups of 8 + 7 */
                check_matmul_matches_ref(k, t, n_ins[ni], 16, 0, 16, toks[nt]); /* whole groups only */
                check_matmul_matches_ref(k, t, n_ins[ni], 7, 1, 6, toks[nt]);   /* no whole group */
                check_matmul_rows_matches_ref(k, t, n_ins[ni], 40, toks[nt]);
                check_matmul_rows_matches_ref(k, t, n_ins[ni], 5, toks[nt]);
            }
    }
}

/* A (row, token) result must not depend on how the work is split: rows cut at
 * odd places, tokens one at a time, listed rows in pieces and in another order
 * all give the bits of one whole call (the cluster relies on it: a node computes
 * some rows or tokens of what st-run computes in one call). */
static void check_matmul_split_invariant(const st_kernels_t *k) {
    enum { N_IN = 65 * 32, ROWS = 37, TOK = 6 };
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const st_type_t t = s_weight_types[ti];
        if (N_IN % st_type_traits(t)->blck) continue;
        const size_t wrow = st_row_size(t, N_IN), x_stride = st_row_size(st_type_traits(t)->vec_dot_type, N_IN);
        uint8_t *w = malloc(ROWS * wrow), *x = malloc(TOK * x_stride);
        static float whole[TOK * ROWS], split[TOK * ROWS];
        st_test_rng_seed(31 + t);
        for (int r = 0; r < ROWS; r++) fill_weights(t, w + r * wrow, N_IN);
        for (int i = 0; i < TOK; i++) fill_activations(t, x + i * x_stride, N_IN);
        st_matmul(k, t, w, N_IN, 0, ROWS, x, x_stride, TOK, whole, ROWS);

        const int cuts[] = {0, 5, 13, 14, 16, 19, 29, ROWS}; /* rows in pieces of 5, 8, 1, 2, 3, 10, 8 */
        memset(split, 0, sizeof split);
        for (int c = 0; c + 1 < (int)(sizeof cuts / sizeof cuts[0]); c++)
            st_matmul(k, t, w, N_IN, cuts[c], cuts[c + 1], x, x_stride, TOK, split, ROWS);
        cr_assert(memcmp(whole, split, sizeof whole) == 0, "%s %s: rows split differently", k->name, st_type_name(t));

        memset(split, 0, sizeof split);
        for (int i = 0; i < TOK; i++)
            st_matmul(k, t, w, N_IN, 0, ROWS, x + i * x_stride, x_stride, 1, split + i * ROWS, ROWS);
        cr_assert(memcmp(whole, split, sizeof whole) == 0, "%s %s: one token at a time", k->name, st_type_name(t));

        int32_t list[ROWS];
        for (int r = 0; r < ROWS; r++) list[r] = (r * 11) % ROWS; /* 11 is prime to 37: a permutation */
        memset(split, 0, sizeof split);
        st_matmul_rows(k, t, w, N_IN, list, 3, x, x_stride, TOK, split, ROWS);
        st_matmul_rows(k, t, w, N_IN, list + 3, 20, x, x_stride, TOK, split, ROWS);
        st_matmul_rows(k, t, w, N_IN, list + 23, ROWS - 23, x, x_stride, TOK, split, ROWS);
        cr_assert(memcmp(whole, split, sizeof whole) == 0, "%s %s: listed rows in pieces", k->name, st_type_name(t));
        free(w);
        free(x);
    }
}

Test(kernels, ref_matmul_split_invariant) { check_matmul_split_invariant(&st_kernels_ref); }
Test(kernels, avx2_matmul_split_invariant) { check_matmul_split_invariant(need("avx2")); }
Test(kernels, avx512_matmul_split_invariant) { check_matmul_split_invariant(need("avx512")); }
Test(kernels, neon_matmul_split_invariant) { check_matmul_split_invariant(need("neon")); }
Test(kernels, neon_dotprod_matmul_split_invariant) { check_matmul_split_invariant(need("neon-dotprod")); }

Test(kernels, ref_matmul_matches_ref_vec_dot) { check_matmul_shapes(&st_kernels_ref); }
Test(kernels, avx2_matmul_matches_ref_vec_dot) { check_matmul_shapes(need("avx2")); }
Test(kernels, avx512_matmul_matches_ref_vec_dot) { check_matmul_shapes(need("avx512")); }
Test(kernels, neon_matmul_matches_ref_vec_dot) { check_matmul_shapes(need("neon")); }
Test(kernels, neon_dotprod_matmul_matches_ref_vec_dot) { check_matmul_shapes(need("neon-dotprod")); }

/* Saturating Q4_0 quants (every nibble 0 or 15) against activations at +-127 and
 * -128 (the format allows it, our quantizer never writes it), 8 rows x 5 tokens:
 * the int16 sums of the 8-row kernels must not overflow. Scales of 1 keep every
 * float an exact integer, so the result must equal the reference exactly. The
 * same for Q8_0 weights at +-127 against activations at +-127 (-128 is left
 * out: like ggml's, the AVX2 Q8_0 kernel needs |q| <= 127). */
static void check_matmul_extremes(const st_kernels_t *k) {
    enum { NB = 64, ROWS = 9, TOK = 5 };
    static st_block_q4_0 w[ROWS * NB];
    static st_block_q8_0 x[TOK * NB];
    for (int pattern = 0; pattern < 6; pattern++) {
        const uint8_t nib = pattern & 1 ? 0xff : 0x00;
        const int8_t q = (pattern >> 1) == 0 ? 127 : (pattern >> 1) == 1 ? -127 : -128;
        for (int b = 0; b < ROWS * NB; b++) {
            w[b].d = 0x3c00;
            memset(w[b].qs, nib, sizeof w[b].qs);
        }
        for (int b = 0; b < TOK * NB; b++) {
            x[b].d = 0x3c00;
            memset(x[b].qs, q, sizeof x[b].qs);
        }
        float y[TOK * ROWS];
        st_matmul(k, ST_TYPE_Q4_0, w, NB * 32, 0, ROWS, x, NB * sizeof(st_block_q8_0), TOK, y, ROWS);
        for (int i = 0; i < TOK * ROWS; i++) {
            float want;
            st_kernels_ref.vec_dot[ST_TYPE_Q4_0](NB * 32, &want, w + (i % ROWS) * NB, x + (i / ROWS) * NB);
            cr_assert_eq(y[i], want, "%s pattern %d, row %d token %d: %g vs %g", k->name, pattern, i % ROWS, i / ROWS,
                         (double)y[i], (double)want);
        }
    }
    static st_block_q8_0 w8[ROWS * NB];
    for (int pattern = 0; pattern < 4; pattern++) {
        for (int b = 0; b < ROWS * NB; b++) {
            w8[b].d = 0x3c00;
            memset(w8[b].qs, pattern & 1 ? 127 : -127, sizeof w8[b].qs);
        }
        for (int b = 0; b < TOK * NB; b++) {
            x[b].d = 0x3c00;
            memset(x[b].qs, pattern & 2 ? 127 : -127, sizeof x[b].qs);
        }
        float y[TOK * ROWS];
        st_matmul(k, ST_TYPE_Q8_0, w8, NB * 32, 0, ROWS, x, NB * sizeof(st_block_q8_0), TOK, y, ROWS);
        for (int i = 0; i < TOK * ROWS; i++) { /* sums are multiples of 32 below 2^25: exact floats */
            float want;
            st_kernels_ref.vec_dot[ST_TYPE_Q8_0](NB * 32, &want, w8 + (i % ROWS) * NB, x + (i / ROWS) * NB);
            cr_assert_eq(y[i], want, "%s q8_0 pattern %d, row %d token %d: %g vs %g", k->name, pattern, i % ROWS,
                         i / ROWS, (double)y[i], (double)want);
        }
    }
}

Test(kernels, avx2_matmul_extremes_match_ref_exactly) { check_matmul_extremes(need("avx2")); }
Test(kernels, avx512_matmul_extremes_match_ref_exactly) { check_matmul_extremes(need("avx512")); }
Test(kernels, neon_matmul_extremes_match_ref_exactly) { check_matmul_extremes(need("neon")); }
Test(kernels, neon_dotprod_matmul_extremes_match_ref_exactly) { check_matmul_extremes(need("neon-dotprod")); }

/* A table's packed matmul gives the bits of its plain matmul for every (row,
 * token): widths of 1, 3 and 65 blocks (two passes), 1..9 and 67 tokens,
 * the rows in one call and in group-aligned pieces; st_pack refuses a row
 * count that is not whole groups and leaves such a matrix as it was. So a
 * process on packed weights computes what a node on the file's layout does. */
static void check_packed_matmul_is_matmul(const st_kernels_t *k) {
    int n_packed = 0;
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const st_type_t t = s_weight_types[ti];
        const int R = k->pack_rows[t];
        if (R == 0) continue;
        n_packed++;
        cr_assert_not_null(k->matmul_packed[t], "%s %s: pack_rows without a packed matmul", k->name, st_type_name(t));
        const int blck = st_type_traits(t)->blck, rows = 3 * R;
        const int n_ins[] = {blck, 3 * blck, 65 * blck};
        static const int toks[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 67};
        for (size_t ni = 0; ni < sizeof n_ins / sizeof n_ins[0]; ni++) {
            const int n_in = n_ins[ni];
            const size_t wrow = st_row_size(t, n_in), x_stride = st_row_size(st_type_traits(t)->vec_dot_type, n_in);
            uint8_t *w = malloc(rows * wrow), *packed = malloc(rows * wrow), *x = malloc(67 * x_stride);
            float *plain_y = malloc(67 * rows * sizeof(float)), *packed_y = malloc(67 * rows * sizeof(float));
            st_test_rng_seed(900 + 13 * t + n_in);
            for (int r = 0; r < rows; r++) fill_weights(t, w + r * wrow, n_in);
            for (int i = 0; i < 67; i++) fill_activations(t, x + i * x_stride, n_in);
            memcpy(packed, w, rows * wrow);
            cr_assert(!st_pack(k, t, n_in, rows - 1, packed), "%s: packed %d rows, not whole groups", k->name,
                      rows - 1);
            cr_assert(memcmp(packed, w, rows * wrow) == 0, "%s: a refused pack changed the matrix", k->name);
            cr_assert(st_pack(k, t, n_in, rows, packed), "%s %s: pack refused", k->name, st_type_name(t));
            cr_assert(memcmp(packed, w, rows * wrow) != 0, "%s %s: pack changed nothing", k->name, st_type_name(t));
            for (size_t nt = 0; nt < sizeof toks / sizeof toks[0]; nt++) {
                const int n_tok = toks[nt];
                st_matmul(k, t, w, n_in, 0, rows, x, x_stride, n_tok, plain_y, rows);
                memset(packed_y, 0xff, (size_t)n_tok * rows * sizeof(float));
                k->matmul_packed[t](n_in, packed, NULL, 0, R, x, x_stride, n_tok, packed_y, rows);
                k->matmul_packed[t](n_in, packed, NULL, R, rows, x, x_stride, n_tok, packed_y, rows);
                for (int i = 0; i < n_tok * rows; i++)
                    cr_assert_eq(f2u(packed_y[i]), f2u(plain_y[i]),
                                 "%s %s n_in=%d %d tokens: row %d token %d: %.9g vs %.9g", k->name, st_type_name(t),
                                 n_in, n_tok, i % rows, i / rows, (double)packed_y[i], (double)plain_y[i]);
            }
            free(w);
            free(packed);
            free(x);
            free(plain_y);
            free(packed_y);
        }
    }
    cr_log_info("%s: %d packed types", k->name, n_packed);
}

Test(kernels, ref_packs_nothing) {
    for (int t = 0; t < ST_TYPE_COUNT; t++) cr_assert_eq(st_kernels_ref.pack_rows[t], 0);
    uint8_t w[18 * 16] = {0};
    cr_assert(!st_pack(&st_kernels_ref, ST_TYPE_Q4_0, 32, 16, w));
}
Test(kernels, avx2_packed_matmul_is_matmul_bit_for_bit) { check_packed_matmul_is_matmul(need("avx2")); }
Test(kernels, avx512_packed_matmul_is_matmul_bit_for_bit) {
    const st_kernels_t *k = need("avx512");
    cr_assert_gt(k->pack_rows[ST_TYPE_Q4_0], 0, "avx512 packs Q4_0");
    check_packed_matmul_is_matmul(k);
}

/* The two Arm tables give the same bits, for every weight type: their integer
 * kernels differ only in how exact int32 lane totals are grouped (neon/int_dot.h
 * and the headers beside it), and they share the rest. So a cluster of Pi 4
 * and Pi 5 nodes computes one answer. */
Test(kernels, neon_and_neon_dotprod_agree_bit_for_bit) {
    const st_kernels_t *a = need("neon"), *b = need("neon-dotprod");
    enum { ROWS = 13, TOK = 6 };
    for (int ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const st_type_t t = s_weight_types[ti];
        const int n_in = st_type_traits(t)->blck == ST_QK_K ? 5 * 256 : 65 * 32;
        const size_t wrow = st_row_size(t, n_in), x_stride = st_row_size(st_type_traits(t)->vec_dot_type, n_in);
        uint8_t *w = malloc(ROWS * wrow), *x = malloc(TOK * x_stride);
        static float ya[TOK * ROWS], yb[TOK * ROWS];
        st_test_rng_seed(404 + t);
        for (int r = 0; r < ROWS; r++) fill_weights(t, w + r * wrow, n_in);
        for (int i = 0; i < TOK; i++) fill_activations(t, x + i * x_stride, n_in);
        for (int r = 0; r < ROWS; r++) {
            float da, db;
            a->vec_dot[t](n_in, &da, w + r * wrow, x);
            b->vec_dot[t](n_in, &db, w + r * wrow, x);
            cr_assert_eq(f2u(da), f2u(db), "%s vec_dot row %d: %.9g vs %.9g", st_type_name(t), r, (double)da,
                         (double)db);
        }
        st_matmul(a, t, w, n_in, 0, ROWS, x, x_stride, TOK, ya, ROWS);
        st_matmul(b, t, w, n_in, 0, ROWS, x, x_stride, TOK, yb, ROWS);
        cr_assert(memcmp(ya, yb, sizeof ya) == 0, "%s matmul", st_type_name(t));
        free(w);
        free(x);
    }
}

/* ST_TEST_EXPECT_KERNELS names the table the CPU probe must pick: tests/CMakeLists.txt
 * sets it for the aarch64 runs, "neon-dotprod" under qemu's "max" CPU and "neon"
 * under QEMU_CPU=cortex-a72 (a Pi 4, no dot-product extension). */
Test(kernels, select_picks_the_best_table_for_the_cpu) {
    const char *want = getenv("ST_TEST_EXPECT_KERNELS");
    if (!want || !*want) cr_skip_test("ST_TEST_EXPECT_KERNELS not set");
    cr_assert_null(getenv("ST_KERNELS"), "ST_KERNELS overrides the probe");
    cr_assert_str_eq(st_kernels_select()->name, want);
    cr_assert_not_null(st_kernels_by_name(want));
#if defined(__aarch64__)
    const bool dotprod = (getauxval(AT_HWCAP) & (1ul << 20)) != 0; /* HWCAP_ASIMDDP */
    cr_assert_eq(st_kernels_by_name("neon-dotprod") != NULL, dotprod);
    cr_assert_not_null(st_kernels_by_name("neon"), "every aarch64 Linux CPU has ASIMD");
#endif
}
