/* clock: the one monotonic clock of the tree (CLOCK_MONOTONIC: durations and
 * deadlines, unmoved by changes of the date), in the unit each caller wants. */
#ifndef ST_CLOCK_H
#define ST_CLOCK_H

#include <stdint.h>

/* Seconds since an arbitrary fixed point (boot). */
double st_now_s(void);
/* The same in milliseconds. */
double st_now_ms(void);
/* The same in whole microseconds. */
uint64_t st_now_us(void);

#endif
