/* machine: the machine's state from /proc and /sys (see machine.h).
 *
 * The memory cgroup counts what a process costs its board: anonymous memory
 * and the page cache it brought in (which RSS leaves out). Its figures are
 * the process's own only when nothing else runs in that cgroup (a systemd
 * service, a container, with-mem-limit), so they are reported only then.
 * Among the thermal zones, the CPU's is the one whose type names it
 * ("cpu-thermal" on a Pi, "x86_pkg_temp", "soc_thermal"...), else zone 0.
 */
#include "machine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The first line of root/path, without its newline; false when unreadable. */
static bool s_line(const char *root, const char *path, char *out, size_t cap) {
    char p[1024];
    snprintf(p, sizeof p, "%s%s", root, path);
    FILE *f = fopen(p, "re");
    if (!f) return false;
    bool ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    if (ok) out[strcspn(out, "\n")] = '\0';
    return ok;
}

/* A decimal number alone on the first line of root/path. */
static bool s_u64(const char *root, const char *path, uint64_t *v) {
    char line[64], *end;
    if (!s_line(root, path, line, sizeof line) || !*line) return false;
    unsigned long long x = strtoull(line, &end, 10);
    if (*end || line[0] == '-') return false;
    *v = x;
    return true;
}

/* "NAME VALUE" in a memory.stat file. */
static bool s_stat(const char *root, const char *path, const char *name, uint64_t *v) {
    char p[1024], line[256];
    snprintf(p, sizeof p, "%s%s", root, path);
    FILE *f = fopen(p, "re");
    if (!f) return false;
    bool found = false;
    const size_t n = strlen(name);
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long long x;
        if (!strncmp(line, name, n) && line[n] == ' ' && sscanf(line + n + 1, "%llu", &x) == 1) *v = x, found = true;
    }
    fclose(f);
    return found;
}

/* Whether root/dir/cgroup.procs lists this process and nothing else. */
static bool s_alone(const char *root, const char *dir) {
    char p[1024], line[64];
    snprintf(p, sizeof p, "%s%s/cgroup.procs", root, dir);
    FILE *f = fopen(p, "re");
    if (!f) return false;
    int n = 0, mine = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        mine += atol(line) == (long)getpid();
    }
    fclose(f);
    return n == 1 && mine == 1;
}

static void s_cgroup(const char *root, st_machine_t *b) {
    char p[1100], line[1024], v1[900] = "", v2[900] = "";
    bool has_v1 = false, has_v2 = false;
    snprintf(p, sizeof p, "%s/proc/self/cgroup", root);
    FILE *f = fopen(p, "re");
    if (!f) return;
    while (fgets(line, sizeof line, f)) { /* "0::/path" (v2), "4:memory:/path" (v1) */
        line[strcspn(line, "\n")] = '\0';
        const char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || strlen(c2 + 1) >= sizeof v1) continue;
        if (!strncmp(line, "0::", 3)) has_v2 = true, snprintf(v2, sizeof v2, "%s", c2 + 1);
        for (const char *s = c1 + 1; s < c2;) { /* v1 controller list "cpu,cpuacct" */
            size_t n = strcspn(s, ",:");
            if (n == 6 && !strncmp(s, "memory", 6)) has_v1 = true, snprintf(v1, sizeof v1, "%s", c2 + 1);
            s += n + (s[n] == ',');
        }
    }
    fclose(f);
    char dir[1024], max[64];
    uint64_t x;
    if (has_v1) { /* a v1 memory line wins: v2's "0::" then holds no memory controller */
        snprintf(dir, sizeof dir, "/sys/fs/cgroup/memory%s", v1);
        snprintf(p, sizeof p, "%s/memory.usage_in_bytes", dir);
        if (!s_alone(root, dir) || !s_u64(root, p, &b->cgroup_mem)) return;
        snprintf(p, sizeof p, "%s/memory.stat", dir);
        if (!s_stat(root, p, "total_cache", &b->cgroup_file)) s_stat(root, p, "cache", &b->cgroup_file);
        snprintf(p, sizeof p, "%s/memory.limit_in_bytes", dir);
        if (s_u64(root, p, &x) && x < (1ull << 62)) b->cgroup_max = x; /* "unlimited" is a huge number */
        b->has_cgroup = true;
    } else if (has_v2) {
        snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", v2);
        snprintf(p, sizeof p, "%s/memory.current", dir);
        if (!strcmp(v2, "/") || !s_alone(root, dir) || !s_u64(root, p, &b->cgroup_mem)) return;
        snprintf(p, sizeof p, "%s/memory.stat", dir);
        s_stat(root, p, "file", &b->cgroup_file);
        snprintf(p, sizeof p, "%s/memory.max", dir);
        if (s_line(root, p, max, sizeof max) && strcmp(max, "max")) b->cgroup_max = strtoull(max, NULL, 10);
        b->has_cgroup = true;
    }
}

static void s_temperature(const char *root, st_machine_t *b) {
    static const char *const cpu_types[] = {"cpu", "soc", "x86_pkg"};
    int pick = -1;
    char p[256], type[128], t[64];
    for (int z = 0; z < 64 && pick < 0; z++) {
        snprintf(p, sizeof p, "/sys/class/thermal/thermal_zone%d/type", z);
        if (!s_line(root, p, type, sizeof type)) continue;
        for (size_t k = 0; k < sizeof cpu_types / sizeof *cpu_types; k++)
            if (strstr(type, cpu_types[k])) pick = z;
    }
    snprintf(p, sizeof p, "/sys/class/thermal/thermal_zone%d/temp", pick < 0 ? 0 : pick);
    char *end;
    if (!s_line(root, p, t, sizeof t) || !*t) return;
    long v = strtol(t, &end, 10);
    if (*end || v < -273000 || v > 1000000) return; /* not a temperature: absent */
    b->temp_mc = (int32_t)v;
    b->has_temp = true;
}

void st_machine_read(const char *root, st_machine_t *out) {
    memset(out, 0, sizeof *out);
    char p[1024], line[256];
    snprintf(p, sizeof p, "%s/proc/self/status", root);
    FILE *f = fopen(p, "re");
    unsigned long long kb;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) out->rss = (uint64_t)kb * 1024;
        if (sscanf(line, "RssFile: %llu kB", &kb) == 1) out->rss_file = (uint64_t)kb * 1024;
    }
    if (f) fclose(f);
    s_cgroup(root, out);
    s_temperature(root, out);
    /* the Pi firmware's flags, in hex as the kernel's raspberrypi driver prints them */
    char *end;
    if (s_line(root, "/sys/devices/platform/soc/soc:firmware/get_throttled", line, sizeof line) && *line) {
        unsigned long v = strtoul(line, &end, 16);
        if (!*end && v <= UINT32_MAX) out->throttled = (uint32_t)v, out->has_throttled = true;
    }
}
