/* rng: xorshift64* (see rng.h). */
#include "rng.h"

static uint64_t s_rng = 0x9E3779B97F4A7C15ull + 1; /* as seeded with 1: usable unseeded */

void st_test_rng_seed(uint64_t seed) { s_rng = seed * 0x9E3779B97F4A7C15ull + 1; }

uint32_t st_test_rng_u32(void) {
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return (uint32_t)((s_rng * 0x2545F4914F6CDD1Dull) >> 32);
}

float st_test_rng_float(float lo, float hi) { return lo + (hi - lo) * (float)(st_test_rng_u32() >> 8) / 16777216.0f; }

void st_test_rng_bytes(void *p, size_t n) {
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)st_test_rng_u32();
}
