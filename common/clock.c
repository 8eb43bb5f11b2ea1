/* clock: CLOCK_MONOTONIC read in one place (see clock.h). */
#include "clock.h"

#include <time.h>

static struct timespec s_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts;
}

double st_now_s(void) {
    const struct timespec ts = s_now();
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double st_now_ms(void) {
    const struct timespec ts = s_now();
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

uint64_t st_now_us(void) {
    const struct timespec ts = s_now();
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
