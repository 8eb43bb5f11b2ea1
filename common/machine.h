/* machine: how the machine a program runs on is doing, as Linux reports it:
 * the process's resident memory, its memory cgroup (anonymous memory and
 * page cache charged to it, and its limit) when the process is alone in it,
 * the CPU temperature (/sys/class/thermal) and a Raspberry Pi's throttling
 * flags (the firmware's get_throttled, what `vcgencmd get_throttled` shows).
 * st-node reports it in its HEARTBEAT answers.
 *
 * Every reading can be absent (no cgroup of its own, no thermal zone, not a
 * Pi): absent is said (has_* false), never turned into a zero.
 */
#ifndef ST_MACHINE_H
#define ST_MACHINE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint64_t rss, rss_file; /* VmRSS, and its RssFile part (bytes) */
    bool has_cgroup;        /* alone in its memory cgroup (v2 or v1) */
    uint64_t cgroup_mem;    /* memory.current (v2) or memory.usage_in_bytes (v1) */
    uint64_t cgroup_file;   /* page cache: memory.stat "file" (v2) or "cache" (v1) */
    uint64_t cgroup_max;    /* memory.max or memory.limit_in_bytes; 0: no limit */
    bool has_temp;
    int32_t temp_mc; /* millidegrees Celsius, of the zone that is the CPU's (see machine.c) */
    bool has_throttled;
    uint32_t throttled; /* bit 0 under-voltage now, 1 frequency capped, 2 throttled, 3 soft temperature
                         * limit; bits 16-19 the same since boot */
} st_machine_t;

/* Reads the machine under root ("" for the real one; tests give a directory
 * laid out as / with proc/self/status, proc/self/cgroup, sys/...). Never
 * fails: what cannot be read is absent (rss 0 when /proc is missing). */
void st_machine_read(const char *root, st_machine_t *out);

#endif
