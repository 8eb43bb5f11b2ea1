/* proc_mem: the process's memory as the kernel counts it (/proc/self/status),
 * read in one place for the expert cache's budget, node heartbeats, /metrics
 * and st-bench. */
#ifndef ST_PROC_MEM_H
#define ST_PROC_MEM_H

#include <stdint.h>

/* Resident set now (VmRSS) and its peak (VmHWM), in bytes; either pointer may
 * be NULL. A value the kernel does not report (no /proc) is 0. */
void st_proc_memory(uint64_t *rss, uint64_t *peak);

#endif
