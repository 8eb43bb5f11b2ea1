/* common/: strict value parsing (parse.c), the whole-file reader, the
 * monotonic clock, the process memory reader, the allocation fault seam and
 * the log limiter.
 * Expected values are worked out by hand from the documented behaviour. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "file.h"
#include "log_limit.h"
#include "parse.h"
#include "proc_mem.h"
#include "st_log.h"

/* ---- parse.c ---------------------------------------------------------------- */

Test(parse, int_whole_string_in_range) {
    long v = 0;
    cr_assert(st_parse_int("42", 0, 100, &v));
    cr_assert_eq(v, 42);
    cr_assert(st_parse_int("-7", -10, 10, &v));
    cr_assert_eq(v, -7);
    cr_assert(st_parse_int("100", 0, 100, &v), "the upper bound is inclusive");
    cr_assert_eq(v, 100);
    v = 5;
    cr_assert_not(st_parse_int("101", 0, 100, &v));
    cr_assert_not(st_parse_int("-1", 0, 100, &v));
    cr_assert_not(st_parse_int("", 0, 100, &v));
    cr_assert_not(st_parse_int(NULL, 0, 100, &v));
    cr_assert_not(st_parse_int("12abc", 0, 100, &v), "trailing junk");
    cr_assert_not(st_parse_int("12 ", 0, 100, &v), "trailing space");
    cr_assert_not(st_parse_int("1.5", 0, 100, &v));
    cr_assert_not(st_parse_int("99999999999999999999", LONG_MIN, LONG_MAX, &v), "overflow (ERANGE)");
    cr_assert_eq(v, 5, "a refused value leaves *out alone");
}

Test(parse, float_finite_in_range) {
    double v = 0;
    cr_assert(st_parse_float("0.25", 0, 1, &v));
    cr_assert_eq(v, 0.25);
    cr_assert(st_parse_float("1e-2", 0, 1, &v));
    cr_assert_eq(v, 0.01);
    cr_assert_not(st_parse_float("1.5", 0, 1, &v));
    cr_assert_not(st_parse_float("nan", -1e9, 1e9, &v));
    cr_assert_not(st_parse_float("inf", -1e9, 1e9, &v));
    cr_assert_not(st_parse_float("0.5x", 0, 1, &v));
    cr_assert_not(st_parse_float("", 0, 1, &v));
    cr_assert_not(st_parse_float("1e999", 0, 1e300, &v), "overflow");
}

Test(parse, size_units) {
    uint64_t v = 0;
    cr_assert(st_parse_size("4096", &v));
    cr_assert_eq(v, 4096);
    cr_assert(st_parse_size("1K", &v));
    cr_assert_eq(v, 1024);
    cr_assert(st_parse_size("512M", &v));
    cr_assert_eq(v, 512ull << 20);
    cr_assert(st_parse_size("1.5GiB", &v));
    cr_assert_eq(v, 3ull << 29); /* 1.5 * 2^30 */
    cr_assert(st_parse_size("2g", &v));
    cr_assert_eq(v, 2ull << 30);
    cr_assert(st_parse_size("1TB", &v));
    cr_assert_eq(v, 1ull << 40);
    cr_assert(st_parse_size("0", &v));
    cr_assert_eq(v, 0);
    cr_assert_not(st_parse_size("-1M", &v));
    cr_assert_not(st_parse_size("1X", &v));
    cr_assert_not(st_parse_size("1Mx", &v));
    cr_assert_not(st_parse_size("M", &v));
    cr_assert_not(st_parse_size("", &v));
    cr_assert_not(st_parse_size("20000000T", &v), "beyond 64 bits");
}

Test(parse, int_list) {
    int n = 0;
    int32_t *v = st_parse_int_list("1,2, 30", 0, 100, &n);
    cr_assert_not_null(v);
    cr_assert_eq(n, 3);
    cr_assert_eq(v[0], 1);
    cr_assert_eq(v[1], 2);
    cr_assert_eq(v[2], 30);
    free(v);
    v = st_parse_int_list("7", 0, 100, &n);
    cr_assert_not_null(v);
    cr_assert_eq(n, 1);
    cr_assert_eq(v[0], 7);
    free(v);
    cr_assert_null(st_parse_int_list("1,,2", 0, 100, &n), "empty element");
    cr_assert_null(st_parse_int_list("1,2,", 0, 100, &n), "trailing comma");
    cr_assert_null(st_parse_int_list(",1", 0, 100, &n), "leading comma");
    cr_assert_null(st_parse_int_list("1,101", 0, 100, &n), "out of range");
    cr_assert_null(st_parse_int_list("1;2", 0, 100, &n));
    cr_assert_null(st_parse_int_list("", 0, 100, &n));
}

Test(parse, hostport) {
    char host[64];
    int port = 0;
    cr_assert(st_parse_hostport("example.org:8080", host, sizeof host, &port));
    cr_assert_str_eq(host, "example.org");
    cr_assert_eq(port, 8080);
    cr_assert(st_parse_hostport("8080", host, sizeof host, &port), "a port alone");
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(port, 8080);
    cr_assert(st_parse_hostport(":9", host, sizeof host, &port));
    cr_assert_str_eq(host, "127.0.0.1");
    cr_assert_eq(port, 9);
    cr_assert(st_parse_hostport("[::1]:443", host, sizeof host, &port));
    cr_assert_str_eq(host, "::1");
    cr_assert_eq(port, 443);
    cr_assert(st_parse_hostport("0.0.0.0:0", host, sizeof host, &port));
    cr_assert_eq(port, 0);
    cr_assert_not(st_parse_hostport("host:", host, sizeof host, &port), "no port");
    cr_assert_not(st_parse_hostport("host", host, sizeof host, &port), "no colon");
    cr_assert_not(st_parse_hostport("host:65536", host, sizeof host, &port));
    cr_assert_not(st_parse_hostport("host:-1", host, sizeof host, &port));
    cr_assert_not(st_parse_hostport("host:80x", host, sizeof host, &port));
    cr_assert_not(st_parse_hostport("::1:80", host, sizeof host, &port), "a bare v6 address");
    cr_assert_not(st_parse_hostport("[::1]80", host, sizeof host, &port));
    cr_assert_not(st_parse_hostport("averyveryverylonghostname:80", host, 8, &port), "longer than the buffer");
}

Test(parse, loopback_hosts) {
    cr_assert(st_is_loopback_host("127.0.0.1"));
    cr_assert(st_is_loopback_host("127.255.0.3"));
    cr_assert(st_is_loopback_host("localhost"));
    cr_assert(st_is_loopback_host("::1"));
    cr_assert_not(st_is_loopback_host("0.0.0.0"));
    cr_assert_not(st_is_loopback_host("128.0.0.1"));
    cr_assert_not(st_is_loopback_host("::"));
    cr_assert_not(st_is_loopback_host("example.org"));
}

/* ---- file.c ----------------------------------------------------------------- */

/* Writes n bytes (i * 7 + 3 mod 256: zeros included) to a temp file. */
static void s_write(char *path, size_t cap, size_t n) {
    snprintf(path, cap, "/tmp/st-test-common-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "wb");
    cr_assert_not_null(f);
    for (size_t i = 0; i < n; i++) fputc((int)((i * 7 + 3) & 0xFF), f);
    cr_assert_eq(fclose(f), 0);
}

Test(file, whole_file_at_buffer_boundaries) {
    /* the reader grows its buffer from 64 KiB: sizes around each doubling */
    const size_t sizes[] = {0, 1, 65534, 65535, 65536, 65537, 131071, 131072, 300000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char path[64];
        s_write(path, sizeof path, sizes[k]);
        size_t len = 12345;
        char *s = st_file_read(path, 0, &len);
        cr_assert_not_null(s, "%zu bytes", sizes[k]);
        cr_assert_eq(len, sizes[k]);
        for (size_t i = 0; i < len; i++)
            cr_assert_eq((unsigned char)s[i], (i * 7 + 3) & 0xFF, "byte %zu of %zu", i, len);
        cr_assert_eq(s[len], '\0');
        free(s);
        unlink(path);
    }
}

Test(file, limit_missing_and_proc) {
    char path[64];
    s_write(path, sizeof path, 1000);
    size_t len = 0;
    char *s = st_file_read(path, 1000, &len);
    cr_assert_not_null(s, "exactly the limit");
    cr_assert_eq(len, 1000);
    free(s);
    errno = 0;
    cr_assert_null(st_file_read(path, 999, &len));
    cr_assert_eq(errno, EFBIG);
    unlink(path);
    errno = 0;
    cr_assert_null(st_file_read(path, 0, &len));
    cr_assert_eq(errno, ENOENT);
    /* stat says 0 bytes for /proc files: read until EOF all the same */
    s = st_file_read("/proc/self/status", 0, &len);
    cr_assert_not_null(s);
    cr_assert_gt(len, 0);
    cr_assert_not_null(strstr(s, "VmRSS:"));
    cr_assert_eq(strlen(s), len);
    free(s);
}

/* ---- clock.c, proc_mem.c ---------------------------------------------------- */

Test(clock, monotonic_units_agree) {
    const double before = st_now_ms(), s0 = st_now_s(), ms0 = st_now_ms();
    const uint64_t us0 = st_now_us();
    /* the same clock in ms and s: the read in s lies between the reads in ms around it (within
     * 1 ns of rounding). No bound on the gap: a loaded machine, or qemu, may deschedule the test
     * between two reads for longer than any bound */
    cr_assert(s0 * 1e3 >= before - 1e-6 && s0 * 1e3 <= ms0 + 1e-6, "the same clock in ms and s: %.6f, %.6f, %.6f",
              before, s0 * 1e3, ms0);
    cr_assert_geq((double)us0 + 1.0, ms0 * 1e3, "read later, never earlier (whole us)");
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    /* no upper bound: the machine may be busy */
    cr_assert_geq(st_now_ms() - ms0, 20.0);
    cr_assert_geq(st_now_us() - us0, 20000u);
    cr_assert_geq(st_now_s() - s0, 0.020);
}

Test(proc_mem, rss_follows_touched_memory) {
    uint64_t rss0 = 0, peak0 = 0;
    st_proc_memory(&rss0, &peak0);
    cr_assert_gt(rss0, 0);
    cr_assert_geq(peak0, rss0);
    const size_t n = 64u << 20;
    char *p = malloc(n);
    cr_assert_not_null(p);
    memset(p, 1, n);
    uint64_t rss1 = 0, peak1 = 0;
    st_proc_memory(&rss1, NULL);
    st_proc_memory(NULL, &peak1);
    cr_assert_geq(rss1, rss0 + (48u << 20), "64 MiB touched: %llu -> %llu", (unsigned long long)rss0,
                  (unsigned long long)rss1);
    cr_assert_geq(peak1, rss1);
    free(p);
}

/* ---- alloc.c ---------------------------------------------------------------- */

Test(alloc, fails_the_nth_call_once_or_from_then_on) {
    void *a, *b, *c;
    st_alloc_fail_at(2, 0);
    a = st_malloc(16);
    b = st_calloc(4, 4);
    c = st_realloc(NULL, 16);
    cr_assert_not_null(a);
    cr_assert_null(b, "the 2nd allocation fails");
    cr_assert_not_null(c, "not sticky: the 3rd succeeds");
    cr_assert_eq(st_alloc_count(), 3);
    cr_assert_eq(st_alloc_failed(), 1);
    free(a);
    free(c);

    st_alloc_fail_at(1, 1);
    cr_assert_null(st_strdup("x"));
    cr_assert_null(st_malloc(1));
    void *keep = malloc(8);
    cr_assert_null(st_realloc(keep, 64), "a failed realloc leaves the block");
    free(keep);
    cr_assert_eq(st_alloc_count(), 3);
    cr_assert_eq(st_alloc_failed(), 3);

    st_alloc_fail_at(0, 0);
    a = st_malloc(8);
    cr_assert_not_null(a, "disarmed");
    free(a);
    cr_assert_eq(st_alloc_count(), 3, "disarmed: nothing counted, the last counts kept");
    char *d = st_strdup("abc");
    cr_assert_str_eq(d, "abc");
    free(d);
}

/* A level below ST_LOG_ERROR drops everything, st_fail's errors too (the fuzz harnesses' setting:
 * it once meant "unset", so they logged every refusal). */
Test(log, below_error_is_silent, .init = cr_redirect_stderr) {
    st_log_set_level((st_log_level_t)-1);
    st_log(ST_LOG_ERROR, "an error");
    cr_assert_eq(st_fail(ST_EPROTO, "a refusal"), ST_EPROTO);
    st_log_set_level(ST_LOG_ERROR);
    st_log(ST_LOG_WARN, "a warning");
    cr_assert_eq(st_fail(ST_EIO, "shown"), ST_EIO);
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char got[256] = "";
    const size_t n = fread(got, 1, sizeof got - 1, f);
    got[n] = '\0';
    const char *line = strstr(got, ": error: shown\n"); /* after the program's name */
    cr_assert(line && !strchr(got, '\n')[1] && strchr(got, '\n') == line + strlen(": error: shown"), "stderr: '%s'",
              got);
}

static bool s_starts_with_a(const char *line, void *arg) {
    (void)arg;
    return line[0] == 'a';
}

/* Line files rewritten in one step (the cluster file, allow files): lines dropped by the caller's
 * rule, long ones kept whole, a last line without '\n' ended, the file's mode kept, nothing left
 * beside it. */
Test(file, rewrite_lines) {
    char dir[] = "/tmp/st-test-file-XXXXXX", path[64], cmd[96];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/f", dir);
    int dropped = -1;
    cr_assert_eq(st_file_rewrite_lines(path, NULL, NULL, NULL, &dropped), -1); /* missing, nothing to add */
    cr_assert_eq(errno, ENOENT);
    cr_assert_eq(st_file_rewrite_lines(path, NULL, NULL, "x 1\n", &dropped), 0);
    char *t = st_file_read(path, 0, NULL);
    cr_assert_str_eq(t, "x 1\n");
    free(t);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0644);

    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("a 1\n# ", f);
    for (int i = 0; i < 3000; i++) fputc('c', f);
    fputs("\nab 2\nb 3", f); /* no '\n' at the end */
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(path, 0600), 0);
    cr_assert_eq(st_file_rewrite_lines(path, s_starts_with_a, NULL, "a 4\n", &dropped), 0);
    cr_assert_eq(dropped, 2);
    t = st_file_read(path, 0, NULL);
    cr_assert(!strncmp(t, "# ccc", 5) && strlen(t) == 2 + 3000 + 1 + 4 + 4, "%.40s... (%zu B)", t, strlen(t));
    cr_assert_str_eq(t + 3003, "b 3\na 4\n");
    free(t);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "the mode was not kept");
    /* nothing to drop or add: left alone */
    const struct timespec before = st.st_mtim;
    cr_assert_eq(st_file_rewrite_lines(path, NULL, NULL, NULL, &dropped), 0);
    cr_assert_eq(dropped, 0);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(st.st_mtim.tv_sec == before.tv_sec && st.st_mtim.tv_nsec == before.tv_nsec, "rewritten for nothing");
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", dir); /* no temporary file left */
    cr_assert_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* ---- log_limit.c ------------------------------------------------------------- */

/* The redirected stderr so far: what came since the last call appended to buf (first "": the
 * redirected stream is read once). */
static const char *s_stderr(char *buf, size_t cap) {
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    const size_t len = strlen(buf), n = fread(buf + len, 1, cap - 1 - len, f);
    buf[len + n] = '\0';
    return buf;
}

static int s_lines(const char *text) {
    int n = 0;
    for (const char *p = text; (p = strchr(p, '\n')); p++) n++;
    return n;
}

/* One address: its first 3 lines, then counted; the summary once the interval since the first
 * counted event has passed (not a millisecond before), with the count; a key quiet for an interval
 * starts again with its first lines. The times are the test's own clock. */
Test(log_limit, first_lines_then_one_summary_per_interval, .init = cr_redirect_stderr) {
    st_log_set_level(ST_LOG_WARN);
    st_log_limit_t *l = st_log_limit_new(&(st_log_limit_opts_t){.prefix = "pairing", .what = "wrong tries"});
    cr_assert_not_null(l);
    int passed = 0;
    for (int i = 0; i < 526; i++) passed += st_log_limit_ok(l, "10.0.0.7", i * 100.0); /* 0 .. 52.5 s */
    cr_assert_eq(passed, 3, "the first 3 lines, and only they");
    char out[4096] = "";
    cr_assert_str_eq(s_stderr(out, sizeof out), "", "no summary before its interval");
    st_log_limit_tick(l, 60299.9); /* the first counted event was the 4th, at 300 ms */
    cr_assert_str_eq(s_stderr(out, sizeof out), "");
    st_log_limit_tick(l, 60300);
    cr_assert(strstr(s_stderr(out, sizeof out), "warn: pairing: 523 more wrong tries from 10.0.0.7 in the last 60 s\n"),
              "%s", out);
    cr_assert_eq(s_lines(out), 1, "%s", out);
    st_log_limit_tick(l, 70000);
    cr_assert_eq(s_lines(s_stderr(out, sizeof out)), 1, "nothing counted since: no more summaries");
    /* still known at 70 s (its last event was at 52.5 s): counted, summed up at the next reset */
    cr_assert_not(st_log_limit_ok(l, "10.0.0.7", 70000));
    cr_assert_not(st_log_limit_ok(l, "10.0.0.7", 71000));
    /* quiet from 71 s: forgotten at 131 s (the summary due at 130 s comes first), then 3 lines again */
    st_log_limit_tick(l, 130000);
    cr_assert(strstr(s_stderr(out, sizeof out), "pairing: 2 more wrong tries from 10.0.0.7 in the last 60 s\n"), "%s",
              out);
    cr_assert_not(st_log_limit_ok(l, "10.0.0.7", 130999), "not quiet for a whole interval yet");
    st_log_limit_tick(l, 190999); /* its summary, and then it is forgotten: quiet for an interval */
    cr_assert(strstr(s_stderr(out, sizeof out), "pairing: 1 more wrong tries from 10.0.0.7 in the last 60 s\n"), "%s",
              out);
    for (int i = 0; i < 3; i++) cr_assert(st_log_limit_ok(l, "10.0.0.7", 200000 + i), "a fresh start: line %d", i);
    cr_assert_not(st_log_limit_ok(l, "10.0.0.7", 200003));
    st_log_limit_destroy(&l); /* the one counted event is summed up */
    cr_assert_null(l);
    cr_assert(strstr(s_stderr(out, sizeof out), "pairing: 1 more wrong tries from 10.0.0.7 in the last 0 s\n"), "%s",
              out);
    cr_assert_eq(s_lines(out), 4, "%s", out);
    /* no prefix and no key: the summary names neither */
    l = st_log_limit_new(&(st_log_limit_opts_t){.what = "refused requests", .first = 1});
    cr_assert(st_log_limit_ok(l, NULL, 0));
    cr_assert_not(st_log_limit_ok(l, NULL, 1));
    st_log_limit_tick(l, 60001);
    cr_assert(strstr(s_stderr(out, sizeof out), "warn: 1 more refused requests in the last 60 s\n"), "%s", out);
    st_log_limit_destroy(&l);
    cr_assert(st_log_limit_ok(NULL, "x", 0), "no limiter: every line");
}

/* Two keys told apart: the third and later addresses share "other addresses", which gets its own
 * first line; the counts add up per entry. */
Test(log_limit, past_max_keys_addresses_share_one_entry, .init = cr_redirect_stderr) {
    st_log_set_level(ST_LOG_WARN);
    st_log_limit_t *l = st_log_limit_new(
        &(st_log_limit_opts_t){.prefix = "st-node", .what = "refused keys", .first = 1, .max_keys = 2});
    const char *addr[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"};
    int passed = 0;
    for (int round = 0; round < 10; round++)
        for (int a = 0; a < 5; a++) passed += st_log_limit_ok(l, addr[a], round * 10.0 + a);
    cr_assert_eq(passed, 3, "10.0.0.1, 10.0.0.2 and the first of the others");
    st_log_limit_destroy(&l); /* what is counted is summed up */
    char out[4096] = "";
    s_stderr(out, sizeof out);
    cr_assert(strstr(out, "st-node: 9 more refused keys from 10.0.0.1 in the last 0 s\n"), "%s", out);
    cr_assert(strstr(out, "st-node: 9 more refused keys from 10.0.0.2 in the last 0 s\n"), "%s", out);
    cr_assert(strstr(out, "st-node: 29 more refused keys from other addresses in the last 0 s\n"), "%s", out);
    cr_assert_eq(s_lines(out), 3, "%s", out);
}

/* A flood: a million events from 1000 addresses over 10 minutes of the test's clock, a tick each
 * second. The lines stay few (64 keys * 3 first lines + 3 for the others, then at most 65
 * summaries a minute: under 1000 in all), and every event is either a line let through or in a
 * summary's count. */
Test(log_limit, a_flood_stays_bounded_and_every_event_is_counted, .init = cr_redirect_stderr) {
    st_log_set_level(ST_LOG_WARN);
    st_log_limit_t *l = st_log_limit_new(&(st_log_limit_opts_t){.prefix = "pairing", .what = "refusals"});
    const int N = 1000000, ADDRS = 1000;
    unsigned long long passed = 0;
    double now = 0;
    for (int i = 0; i < N; i++) {
        char a[32];
        snprintf(a, sizeof a, "10.0.%d.%d", (i % ADDRS) / 256, (i % ADDRS) % 256);
        now = i * 0.6; /* 600 s in all */
        passed += st_log_limit_ok(l, a, now);
        if (i % 1667 == 0) st_log_limit_tick(l, now);
    }
    st_log_limit_destroy(&l);
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char line[512];
    unsigned long long counted = 0;
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        lines++;
        const char *p = strstr(line, "pairing: ");
        unsigned long long n;
        cr_assert(p && sscanf(p, "pairing: %llu more refusals from", &n) == 1, "not a summary: %s", line);
        counted += n;
    }
    cr_log_info("%d events: %llu lines let through, %d summary lines", N, passed, lines);
    cr_assert_lt(lines, 1000, "%d lines for %d events", lines, N);
    cr_assert_eq(passed, 64 * 3 + 3, "lines let through");
    cr_assert_eq(passed + counted, (unsigned long long)N, "%llu let through + %llu in summaries", passed, counted);
}
