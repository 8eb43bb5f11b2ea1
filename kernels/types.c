/* types: what each ggml type id means (block size, bytes per block, the
 * activation format its dot products take) and the fp16/bf16 conversions.
 *
 * The traits table lists every id a GGUF file may hold, so that the reader can
 * size any tensor even when we have no kernel for it (supported = false). The
 * numbers are the ones ggml writes; removed ids (4, 5, 31-33, 36-38) are NULL.
 *
 * fp16 conversion is plain bit manipulation, round to nearest even, and gives
 * the same bits as the F16C instructions (NaNs included: quieted, payload kept),
 * so the reference kernels and the AVX2 ones agree exactly on scales.
 * bf16 rounds like ggml: nearest even, NaNs forced quiet.
 */
#include "st_kernels.h"

#include <assert.h>
#include <string.h>

#define T(id, nm, b, sz, vdt, sup) [id] = {nm, b, sz, vdt, sup}

static const st_type_traits_t s_traits[ST_TYPE_COUNT] = {
    T(ST_TYPE_F32, "F32", 1, 4, ST_TYPE_F32, true),
    T(ST_TYPE_F16, "F16", 1, 2, ST_TYPE_F16, true),
    T(ST_TYPE_Q4_0, "Q4_0", 32, 18, ST_TYPE_Q8_0, true),
    T(ST_TYPE_Q4_1, "Q4_1", 32, 20, ST_TYPE_Q8_1, true),
    T(ST_TYPE_Q5_0, "Q5_0", 32, 22, ST_TYPE_Q8_0, true),
    T(ST_TYPE_Q5_1, "Q5_1", 32, 24, ST_TYPE_Q8_1, true),
    T(ST_TYPE_Q8_0, "Q8_0", 32, 34, ST_TYPE_Q8_0, true),
    T(ST_TYPE_Q8_1, "Q8_1", 32, 36, ST_TYPE_Q8_1, false),
    T(ST_TYPE_Q2_K, "Q2_K", 256, 84, ST_TYPE_Q8_K, true),
    T(ST_TYPE_Q3_K, "Q3_K", 256, 110, ST_TYPE_Q8_K, true),
    T(ST_TYPE_Q4_K, "Q4_K", 256, 144, ST_TYPE_Q8_K, true),
    T(ST_TYPE_Q5_K, "Q5_K", 256, 176, ST_TYPE_Q8_K, true),
    T(ST_TYPE_Q6_K, "Q6_K", 256, 210, ST_TYPE_Q8_K, true),
    T(ST_TYPE_Q8_K, "Q8_K", 256, 292, ST_TYPE_Q8_K, false),
    T(ST_TYPE_IQ2_XXS, "IQ2_XXS", 256, 66, ST_TYPE_Q8_K, false),
    T(ST_TYPE_IQ2_XS, "IQ2_XS", 256, 74, ST_TYPE_Q8_K, false),
    T(ST_TYPE_IQ3_XXS, "IQ3_XXS", 256, 98, ST_TYPE_Q8_K, false),
    T(ST_TYPE_IQ1_S, "IQ1_S", 256, 50, ST_TYPE_Q8_K, false),
    T(ST_TYPE_IQ4_NL, "IQ4_NL", 32, 18, ST_TYPE_Q8_0, false),
    T(ST_TYPE_IQ3_S, "IQ3_S", 256, 110, ST_TYPE_Q8_K, false),
    T(ST_TYPE_IQ2_S, "IQ2_S", 256, 82, ST_TYPE_Q8_K, false),
    T(ST_TYPE_IQ4_XS, "IQ4_XS", 256, 136, ST_TYPE_Q8_K, false),
    T(ST_TYPE_I8, "I8", 1, 1, ST_TYPE_I8, false),
    T(ST_TYPE_I16, "I16", 1, 2, ST_TYPE_I16, false),
    T(ST_TYPE_I32, "I32", 1, 4, ST_TYPE_I32, false),
    T(ST_TYPE_I64, "I64", 1, 8, ST_TYPE_I64, false),
    T(ST_TYPE_F64, "F64", 1, 8, ST_TYPE_F64, false),
    T(ST_TYPE_IQ1_M, "IQ1_M", 256, 56, ST_TYPE_Q8_K, false),
    T(ST_TYPE_BF16, "BF16", 1, 2, ST_TYPE_BF16, true),
    T(ST_TYPE_TQ1_0, "TQ1_0", 256, 54, ST_TYPE_Q8_K, false),
    T(ST_TYPE_TQ2_0, "TQ2_0", 256, 66, ST_TYPE_Q8_K, false),
    T(ST_TYPE_MXFP4, "MXFP4", 32, 17, ST_TYPE_Q8_0, false),
};

#undef T

const st_type_traits_t *st_type_traits(int type) {
    if (type < 0 || type >= ST_TYPE_COUNT || !s_traits[type].name) return NULL;
    return &s_traits[type];
}

const char *st_type_name(int type) {
    const st_type_traits_t *t = st_type_traits(type);
    return t ? t->name : "unknown";
}

size_t st_row_size(st_type_t type, int64_t n) {
    const st_type_traits_t *t = st_type_traits((int)type);
    assert(t && n >= 0 && n % t->blck == 0);
    return t->size * (size_t)(n / t->blck);
}

static uint32_t s_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float s_float(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float st_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) /* inf; NaN comes back quiet, like F16C */
        return s_float(sign | 0x7f800000 | (mant ? 0x400000 : 0) | mant << 13);
    if (exp != 0) return s_float(sign | (exp + 112) << 23 | mant << 13);
    if (mant == 0) return s_float(sign);
    /* subnormal half: shift the leading 1 up to the implicit bit */
    uint32_t e = 113;
    while (!(mant & 0x400)) {
        mant <<= 1;
        e--;
    }
    return s_float(sign | e << 23 | (mant & 0x3ff) << 13);
}

/* q >> shift rounded to nearest, ties to even (shift in 1..31) */
static uint32_t s_shift_rne(uint32_t q, int shift) {
    uint32_t r = q >> shift, rem = q & ((1u << shift) - 1), half = 1u << (shift - 1);
    return r + (rem > half || (rem == half && (r & 1)));
}

uint16_t st_fp32_to_fp16(float f) {
    uint32_t x = s_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x > 0x7f800000) return sign | 0x7e00 | ((x >> 13) & 0x3ff); /* NaN: quiet, keep payload */
    if (x >= 0x477ff000) return sign | 0x7c00;                      /* >= 65520 rounds to inf */
    uint32_t e = x >> 23;
    if (e >= 113) /* normal half; a carry out of the mantissa bumps the exponent, as it should */
        return sign | (uint16_t)s_shift_rne(((e - 112) << 23) | (x & 0x7fffff), 13);
    if (e < 102) return sign; /* below 2^-25: rounds to zero */
    /* subnormal half: units of 2^-24; the value is mant * 2^(e - 150) */
    return sign | (uint16_t)s_shift_rne((x & 0x7fffff) | 0x800000, (int)(126 - e));
}

float st_bf16_to_fp32(uint16_t h) { return s_float((uint32_t)h << 16); }

uint16_t st_fp32_to_bf16(float f) {
    uint32_t x = s_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 64); /* NaN: force quiet */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}
