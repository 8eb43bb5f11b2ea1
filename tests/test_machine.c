/* machine: the readings of a Raspberry Pi under cgroup v2 and of a PC under
 * cgroup v1, from fake /proc and /sys trees written here by hand (the
 * expected numbers are the files' own), and what is absent stays absent:
 * no cgroup of its own, no thermal zone, not a Pi. Then the real machine:
 * this process's RSS as /proc/self/statm counts it. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "machine.h"
#include "testutil.h"

static char g_root[64];

/* Writes root/path (its directories made) with printf content. */
__attribute__((format(printf, 2, 3))) static void s_file(const char *path, const char *fmt, ...) {
    char p[512];
    snprintf(p, sizeof p, "%s%s", g_root, path);
    for (char *s = p + strlen(g_root) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        mkdir(p, 0700);
        *s = '/';
    }
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f, "%s", p);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

static void s_setup(void) {
    snprintf(g_root, sizeof g_root, "/tmp/st-test-machine-XXXXXX");
    cr_assert_not_null(mkdtemp(g_root));
    s_file("/proc/self/status", "Name:\tst-node\nVmHWM:\t  300000 kB\nVmRSS:\t  123456 kB\nRssAnon:\t  100000 "
                                "kB\nRssFile:\t   23456 kB\nThreads:\t5\n");
}

static void s_teardown(void) { st_test_system("rm -rf '%s'", g_root); }

TestSuite(machine, .init = s_setup, .fini = s_teardown);

Test(machine, raspberry_pi_under_cgroup_v2) {
    s_file("/proc/self/cgroup", "0::/system.slice/st-node.service\n");
    s_file("/sys/fs/cgroup/system.slice/st-node.service/cgroup.procs", "%d\n", (int)getpid());
    s_file("/sys/fs/cgroup/system.slice/st-node.service/memory.current", "1610612736\n");
    s_file("/sys/fs/cgroup/system.slice/st-node.service/memory.max", "2147483648\n");
    s_file("/sys/fs/cgroup/system.slice/st-node.service/memory.stat",
           "anon 1073741824\nfile_mapped 1000\nfile 536870912\nkernel 1234\n");
    s_file("/sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
    s_file("/sys/class/thermal/thermal_zone0/temp", "61850\n");
    s_file("/sys/devices/platform/soc/soc:firmware/get_throttled", "50005\n");
    st_machine_t b;
    st_machine_read(g_root, &b);
    cr_assert_eq(b.rss, 123456ull * 1024);
    cr_assert_eq(b.rss_file, 23456ull * 1024);
    cr_assert(b.has_cgroup);
    cr_assert_eq(b.cgroup_mem, 1610612736ull);
    cr_assert_eq(b.cgroup_file, 536870912ull, "memory.stat 'file', not 'file_mapped'");
    cr_assert_eq(b.cgroup_max, 2147483648ull);
    cr_assert(b.has_temp);
    cr_assert_eq(b.temp_mc, 61850);
    cr_assert(b.has_throttled);
    cr_assert_eq(b.throttled, 0x50005u, "hex, as vcgencmd get_throttled shows it");
}

Test(machine, pc_under_cgroup_v1_picks_the_cpu_zone) {
    s_file("/proc/self/cgroup", "9:name=systemd:/\n4:cpu,memory:/box/st\n0::/\n");
    s_file("/sys/fs/cgroup/memory/box/st/cgroup.procs", "%d\n", (int)getpid());
    s_file("/sys/fs/cgroup/memory/box/st/memory.usage_in_bytes", "314572800\n");
    s_file("/sys/fs/cgroup/memory/box/st/memory.limit_in_bytes", "9223372036854771712\n");
    s_file("/sys/fs/cgroup/memory/box/st/memory.stat", "cache 1000\nrss 2000\ntotal_cache 104857600\n");
    s_file("/sys/class/thermal/thermal_zone0/type", "acpitz\n");
    s_file("/sys/class/thermal/thermal_zone0/temp", "27800\n");
    s_file("/sys/class/thermal/thermal_zone2/type", "x86_pkg_temp\n");
    s_file("/sys/class/thermal/thermal_zone2/temp", "45000\n");
    st_machine_t b;
    st_machine_read(g_root, &b);
    cr_assert(b.has_cgroup);
    cr_assert_eq(b.cgroup_mem, 314572800ull);
    cr_assert_eq(b.cgroup_file, 104857600ull, "total_cache: its children's page cache too");
    cr_assert_eq(b.cgroup_max, 0, "v1's 'unlimited' is no limit");
    cr_assert(b.has_temp);
    cr_assert_eq(b.temp_mc, 45000, "the package zone, not ACPI's");
    cr_assert(!b.has_throttled, "not a Pi");
}

Test(machine, shared_cgroup_and_missing_sensors_are_absent) {
    s_file("/proc/self/cgroup", "0::/user.slice/session-1.scope\n");
    s_file("/sys/fs/cgroup/user.slice/session-1.scope/cgroup.procs", "1\n%d\n77\n", (int)getpid());
    s_file("/sys/fs/cgroup/user.slice/session-1.scope/memory.current", "999999\n");
    s_file("/sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
    s_file("/sys/class/thermal/thermal_zone0/temp", "garbage\n");
    st_machine_t b;
    st_machine_read(g_root, &b);
    cr_assert_eq(b.rss, 123456ull * 1024);
    cr_assert(!b.has_cgroup, "other processes share the cgroup: its figures are not the node's");
    cr_assert_eq(b.cgroup_mem, 0);
    cr_assert(!b.has_temp, "an unreadable temperature is absent, not 0");
    cr_assert(!b.has_throttled);
}

Test(machine, the_root_cgroup_is_not_the_nodes) {
    s_file("/proc/self/cgroup", "0::/\n");
    s_file("/sys/fs/cgroup/cgroup.procs", "%d\n", (int)getpid());
    s_file("/sys/fs/cgroup/memory.current", "5\n");
    st_machine_t b;
    st_machine_read(g_root, &b);
    cr_assert(!b.has_cgroup);
}

Test(machine, nothing_to_read_is_all_absent) {
    st_machine_t b;
    st_machine_read("/nonexistent-st-machine", &b);
    cr_assert(b.rss == 0 && !b.has_cgroup && !b.has_temp && !b.has_throttled);
}

Test(machine, this_process_rss_matches_statm) {
    st_machine_t b;
    st_machine_read("", &b);
    FILE *f = fopen("/proc/self/statm", "r");
    cr_assert_not_null(f);
    unsigned long long size, res;
    cr_assert_eq(fscanf(f, "%llu %llu", &size, &res), 2);
    fclose(f);
    const double want = (double)res * (double)sysconf(_SC_PAGESIZE);
    /* the two files are read a moment apart: allow some pages either way */
    cr_assert(b.rss > 0 && b.rss > want * 0.8 && b.rss < want * 1.25, "rss %llu, statm %.0f", (unsigned long long)b.rss,
              want);
}
