/* rng: the kernel tests' seeded random numbers (xorshift64*), so that every
 * machine and every run draws the same data and a failure replays. One stream
 * per process: Criterion runs each test in a process of its own, and each
 * test seeds it before drawing. */
#ifndef ST_TEST_RNG_H
#define ST_TEST_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Starts the stream from seed (any value, 0 included). */
void st_test_rng_seed(uint64_t seed);
/* The next 32 random bits. */
uint32_t st_test_rng_u32(void);
/* Uniform in [lo, hi), 24 bits of resolution. */
float st_test_rng_float(float lo, float hi);
/* n random bytes at p. */
void st_test_rng_bytes(void *p, size_t n);

#endif
