/* proc_mem: VmRSS and VmHWM from /proc/self/status (see proc_mem.h). */
#include "proc_mem.h"

#include <stdio.h>

void st_proc_memory(uint64_t *rss, uint64_t *peak) {
    unsigned long long rss_kb = 0, peak_kb = 0, kb;
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) rss_kb = kb;
        if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) peak_kb = kb;
    }
    if (f) fclose(f);
    if (rss) *rss = (uint64_t)rss_kb * 1024;
    if (peak) *peak = (uint64_t)peak_kb * 1024;
}
