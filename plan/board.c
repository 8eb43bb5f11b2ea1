/* board: built-in Raspberry Pi boards, profile files, the matmul time model.
 *
 * The built-in figures are published measurements (sources in the README,
 * "The 21B on Raspberry Pis"); where none exists the value is an assumption
 * and says so here. Everything else is derived the same way for every board
 * (st_board_fill), so a measured profile and a built-in one are read alike.
 */
#include "board.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "parse.h"
#include "st_log.h"

const int st_board_batch[ST_BOARD_N_BATCH] = {1, 8, 64};

#define MiB (1024.0 * 1024.0)
#define GiB (1024.0 * MiB)
#define NODE_RESERVE (512 * 1024 * 1024ull) /* the OS and its page cache (st-node keeps its own bytes inside --mem) */

typedef struct {
    const char *family; /* "pi5" */
    double mem_bw;      /* bytes/s in LLM decode */
    double q4_0_mac;    /* multiply-adds/s at 64 tokens (prompt processing) */
    double q8_0_mac;
    double sd_bps, fast_bps; /* microSD, and the fast storage option */
    const char *fast_name;   /* "nvme" */
    double rtt, msg_bps;
    int gbs[4];
    uint64_t page_size; /* Raspberry Pi OS's kernel for the board */
} family_t;

/* Pi 5: ~10 GB/s effective in decode (11.4 GB/s measured sustained per node by
 * distributed-llama's Qwen3-30B-A3B run); Llama 2 7B Q4_0 prompt at 8.1 tok/s
 * in llama.cpp (PR 6928) = 6.6e9 MACs x 8.1; TinyLlama 1.1B Q8_0 prompt at
 * 35-45 tok/s (llamafile's table); microSD ~80 MB/s, NVMe on the M.2 HAT+ at
 * PCIe Gen 2 ~416 MB/s (hdparm). Pi 4: STREAM 5.5 GB/s, of which decode is
 * assumed to get 4.5; TinyLlama Q8_0 prompt at 10 tok/s; microSD ~44 MB/s
 * (hdparm, the bus limit); a USB 3 SSD assumed at 300 MB/s. ZeroMQ + CURVE
 * round trip and message rate on a Pi: assumptions (st-bench --profile on the
 * board measures them). Pages: the Pi 5's firmware loads kernel_2712.img by
 * default, built with 16 KiB pages (raspberrypi/documentation, config_txt
 * boot.adoc; rpi-image-gen's pi5 layer: "the 2712 kernel which has a 16kB
 * page size"); the Pi 4 runs kernel8.img, 4 KiB pages. */
static const family_t s_families[] = {
    {"pi5", 10e9, 53e9, 40e9, 80e6, 416e6, "nvme", 200e-6, 1e9, {2, 4, 8, 16}, 16384},
    {"pi4", 4.5e9, 11e9, 11e9, 44e6, 300e6, "ssd", 400e-6, 0.5e9, {2, 4, 8, 0}, 4096},
};

const char *st_board_builtin_names(void) {
    return "pi4-2g pi4-4g pi4-8g pi5-2g pi5-4g pi5-8g pi5-16g (microSD storage; add +ssd to a pi4, +nvme to a pi5)";
}

int st_board_builtin(const char *name, st_board_t *b) {
    memset(b, 0, sizeof *b);
    for (size_t f = 0; f < sizeof s_families / sizeof s_families[0]; f++) {
        const family_t *F = &s_families[f];
        size_t fl = strlen(F->family);
        if (strncmp(name, F->family, fl) || name[fl] != '-') continue;
        char *end;
        errno = 0;
        long gb = strtol(name + fl + 1, &end, 10);
        if (errno || (*end != 'g' && *end != 'G')) break;
        bool fast = false;
        if (end[1] == '+' && !strcmp(end + 2, F->fast_name))
            fast = true;
        else if (end[1])
            break;
        bool known = false;
        for (int i = 0; i < 4; i++) known |= F->gbs[i] == gb;
        if (!known) break;
        snprintf(b->name, sizeof b->name, "%s", name);
        b->ram = (uint64_t)gb << 30;
        b->threads = 4;
        b->page_size = F->page_size;
        b->mem_bw = F->mem_bw;
        b->matmul[ST_TYPE_Q4_0][2] = F->q4_0_mac;
        b->matmul[ST_TYPE_Q8_0][2] = F->q8_0_mac;
        b->disk_direct = b->disk_buffered = fast ? F->fast_bps : F->sd_bps;
        snprintf(b->disk_kind, sizeof b->disk_kind, "%s", fast ? F->fast_name : "microSD");
        b->disk = 64ull << 30; /* a 64 GB card or drive */
        b->rtt = F->rtt;
        b->msg_bps = F->msg_bps;
        b->net_bps = 941e6 / 8; /* gigabit Ethernet, iperf3 TCP (Pi 4 and Pi 5 alike) */
        return st_board_fill(b);
    }
    return st_fail(ST_EINVAL, "unknown board '%s' (built in: %s; or a profile file from st-bench --profile)", name,
                   st_board_builtin_names());
}

/* Elements per byte of a type (its block over its size). */
static double s_elems_per_byte(st_type_t t) {
    const st_type_traits_t *tr = st_type_traits(t);
    return tr && tr->size ? (double)tr->blck / (double)tr->size : 0.0;
}

int st_board_fill(st_board_t *b) {
    if (!b->name[0]) snprintf(b->name, sizeof b->name, "board");
    if (b->threads < 1) b->threads = 1;
    if (!b->page_size) b->page_size = 4096;
    if (!b->mem && b->ram > NODE_RESERVE) b->mem = b->ram - NODE_RESERVE;
    if (b->mem_bw <= 0) /* best of the per-thread measurements */
        for (int t = 1; t <= ST_BOARD_MAX_THREADS; t++) b->mem_bw = fmax(b->mem_bw, b->mem_bw_t[t]);
    const double *q4 = b->matmul[ST_TYPE_Q4_0];
    double peak = fmax(q4[0], fmax(q4[1], q4[2])); /* the Q4_0 compute rate stands in for unknown types */
    if (peak <= 0)
        for (int t = 0; t < ST_TYPE_COUNT; t++) peak = fmax(peak, b->matmul[t][2]);
    if (b->mem_bw <= 0 || peak <= 0)
        return st_fail(ST_EINVAL, "board %s: no memory bandwidth or no matmul rate", b->name);
    for (int t = 0; t < ST_TYPE_COUNT; t++) {
        const st_type_traits_t *tr = st_type_traits(t);
        if (!tr || !tr->name || !tr->supported) continue;
        double *r = b->matmul[t];
        double top = r[2] > 0 ? r[2] : r[1] > 0 ? r[1] : peak;
        /* one token streams the weights: bandwidth-bound unless measured */
        if (r[0] <= 0) r[0] = fmin(top, b->mem_bw * s_elems_per_byte((st_type_t)t));
        if (r[1] <= 0) r[1] = fmin(top, 8 * r[0]);
        if (r[2] <= 0) r[2] = fmax(top, r[1]);
    }
    if (b->disk_direct <= 0) b->disk_direct = b->disk_buffered;
    if (b->disk_buffered <= 0) b->disk_buffered = b->disk_direct;
    if (b->disk_direct <= 0) b->disk_direct = b->disk_buffered = 80e6; /* a microSD card */
    if (!b->disk_kind[0]) snprintf(b->disk_kind, sizeof b->disk_kind, "measured");
    if (!b->disk) b->disk = 64ull << 30;
    if (b->rtt <= 0) b->rtt = 200e-6;
    if (b->msg_bps <= 0) b->msg_bps = 1e9;
    if (b->net_bps <= 0) b->net_bps = 941e6 / 8;
    return 0;
}

/* Seconds of a rows x cols matmul with n_tok tokens at rates r (1, 8, 64 tokens), the
 * 1-token call at `stream` when that is > 0. */
static double s_matmul_s(const double *r, double stream, int64_t rows, int64_t cols, double n_tok) {
    if (n_tok <= 0 || rows <= 0 || cols <= 0) return 0.0;
    const double macs = (double)rows * (double)cols;
    double ts[ST_BOARD_N_BATCH]; /* seconds of one call at each measured batch */
    for (int i = 0; i < ST_BOARD_N_BATCH; i++) ts[i] = macs * st_board_batch[i] / r[i];
    if (stream > 0) ts[0] = macs / stream;
    if (n_tok <= 1) return ts[0] * n_tok;
    for (int i = 1; i < ST_BOARD_N_BATCH; i++)
        if (n_tok <= st_board_batch[i]) {
            double f = (n_tok - st_board_batch[i - 1]) / (st_board_batch[i] - st_board_batch[i - 1]);
            return ts[i - 1] + f * (ts[i] - ts[i - 1]);
        }
    return ts[ST_BOARD_N_BATCH - 1] * n_tok / st_board_batch[ST_BOARD_N_BATCH - 1];
}

double st_board_matmul_s(const st_board_t *b, st_type_t t, int64_t rows, int64_t cols, double n_tok, bool streamed) {
    const bool known = (unsigned)t < ST_TYPE_COUNT;
    const double *r = known && b->matmul[t][0] > 0 ? b->matmul[t] : b->matmul[ST_TYPE_Q4_0];
    return s_matmul_s(r, streamed && known ? b->stream[t] : 0, rows, cols, n_tok);
}

double st_board_matmul_unpacked_s(const st_board_t *b, st_type_t t, int64_t rows, int64_t cols, double n_tok) {
    if ((unsigned)t < ST_TYPE_COUNT && b->unpacked[t][0] > 0) return s_matmul_s(b->unpacked[t], 0, rows, cols, n_tok);
    return st_board_matmul_s(b, t, rows, cols, n_tok, false);
}

/* v into the worst spread so far (what names it) and the count of busy ones. */
#define S_SPREAD(v, ...)                                                                                               \
    do {                                                                                                               \
        busy += (v) > ST_BOARD_BUSY_SPREAD;                                                                            \
        if ((v) > worst) worst = (v), snprintf(what, what_size, __VA_ARGS__);                                          \
    } while (0)

double st_board_worst_spread(const st_board_t *b, uint64_t types, char *what, size_t what_size, int *n_busy) {
    double worst = 0;
    int busy = 0;
    char none[1];
    if (!what || !what_size) what = none, what_size = sizeof none;
    what[0] = 0;
    for (int n = 1; n <= ST_BOARD_MAX_THREADS; n++)
        S_SPREAD(b->spread.mem_bw_t[n], "memory bandwidth with %d thread%s", n, n == 1 ? "" : "s");
    for (int t = 0; t < ST_TYPE_COUNT; t++) {
        if (types && !(types >> t & 1)) continue;
        for (int i = 0; i < ST_BOARD_N_BATCH; i++) {
            S_SPREAD(b->spread.matmul[t][i], "matmul.%s at %d token%s", st_type_name(t), st_board_batch[i],
                     i ? "s" : "");
            S_SPREAD(b->spread.unpacked[t][i], "unpacked.%s at %d token%s", st_type_name(t), st_board_batch[i],
                     i ? "s" : "");
        }
        S_SPREAD(b->spread.stream[t], "stream.%s", st_type_name(t));
    }
    S_SPREAD(b->spread.rtt, "the round trip");
    S_SPREAD(b->spread.msg_bps, "1 MiB messages");
    if (n_busy) *n_busy = busy;
    return worst;
}

/* ---- profile files ------------------------------------------------------- */

static int s_type_by_name(const char *s) {
    for (int t = 0; t < ST_TYPE_COUNT; t++) {
        const st_type_traits_t *tr = st_type_traits(t);
        if (tr && tr->name && !strcasecmp(tr->name, s)) return t;
    }
    return -1;
}

static bool s_num(const char *v, double *out) { return st_parse_float(v, 0, 1e30, out); }

/* Up to n numbers >= lo in val, separated by blanks: exactly n of them. */
static bool s_nums(char *val, double *r, int n, double lo) {
    char *save = NULL, *tok = strtok_r(val, " \t", &save);
    for (int i = 0; i < n; i++, tok = strtok_r(NULL, " \t", &save))
        if (!tok || !st_parse_float(tok, lo, 1e30, &r[i]) || r[i] <= 0) return false;
    return tok == NULL;
}

/* `spread.KEY = ...` (KEY after the prefix): one spread >= 1 per rate of KEY. */
static bool s_set_spread(st_board_t *b, const char *key, char *val) {
    long n;
    if (!strcmp(key, "rtt")) return s_nums(val, &b->spread.rtt, 1, 1);
    if (!strcmp(key, "msg_bps")) return s_nums(val, &b->spread.msg_bps, 1, 1);
    if (!strncmp(key, "mem_bw.", 7))
        return st_parse_int(key + 7, 1, ST_BOARD_MAX_THREADS, &n) && s_nums(val, &b->spread.mem_bw_t[n], 1, 1);
    const int t = s_type_by_name(strchr(key, '.') ? strchr(key, '.') + 1 : "");
    if (t < 0) return false;
    if (!strncmp(key, "stream.", 7)) return s_nums(val, &b->spread.stream[t], 1, 1);
    if (!strncmp(key, "matmul.", 7)) return s_nums(val, b->spread.matmul[t], ST_BOARD_N_BATCH, 1);
    if (!strncmp(key, "unpacked.", 9)) return s_nums(val, b->spread.unpacked[t], ST_BOARD_N_BATCH, 1);
    return false;
}

/* One `key = value` line; false when the key is unknown or the value bad. */
static bool s_set(st_board_t *b, const char *key, char *val) {
    double d;
    if (!strcmp(key, "name")) return snprintf(b->name, sizeof b->name, "%s", val) < (int)sizeof b->name;
    if (!strcmp(key, "disk_kind"))
        return snprintf(b->disk_kind, sizeof b->disk_kind, "%s", val) < (int)sizeof b->disk_kind;
    if (!strcmp(key, "ram") || !strcmp(key, "mem") || !strcmp(key, "disk")) {
        uint64_t v;
        if (!st_parse_size(val, &v) || v == 0) return false;
        *(!strcmp(key, "ram") ? &b->ram : !strcmp(key, "mem") ? &b->mem : &b->disk) = v;
        return true;
    }
    if (!strcmp(key, "page_size")) { /* a power of two, 4 KiB to 64 KiB (arm64's choices) */
        long n;
        if (!st_parse_int(val, 4096, 65536, &n) || (n & (n - 1))) return false;
        b->page_size = (uint64_t)n;
        return true;
    }
    if (!strcmp(key, "threads")) {
        long n;
        if (!st_parse_int(val, 1, ST_BOARD_MAX_THREADS, &n)) return false;
        b->threads = (int)n;
        return true;
    }
    if (!strncmp(key, "mem_bw.", 7)) {
        long n;
        if (!st_parse_int(key + 7, 1, ST_BOARD_MAX_THREADS, &n) || !s_num(val, &d)) return false;
        b->mem_bw_t[n] = d;
        return true;
    }
    if (!strncmp(key, "stream.", 7)) {
        int t = s_type_by_name(key + 7);
        return t >= 0 && s_num(val, &b->stream[t]) && b->stream[t] > 0;
    }
    const bool unpacked = !strncmp(key, "unpacked.", 9);
    if (unpacked || !strncmp(key, "matmul.", 7)) {
        int t = s_type_by_name(key + (unpacked ? 9 : 7));
        if (t < 0) return false;
        return s_nums(val, unpacked ? b->unpacked[t] : b->matmul[t], ST_BOARD_N_BATCH, 0);
    }
    if (!strncmp(key, "spread.", 7)) return s_set_spread(b, key + 7, val);
    struct {
        const char *key;
        double *v;
    } nums[] = {{"mem_bw", &b->mem_bw}, {"disk_direct", &b->disk_direct}, {"disk_buffered", &b->disk_buffered},
                {"rtt", &b->rtt},       {"msg_bps", &b->msg_bps},         {"net_bps", &b->net_bps}};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        if (!strcmp(key, nums[i].key)) return s_num(val, nums[i].v) && *nums[i].v > 0;
    return false;
}

static char *s_trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) *--e = 0;
    return s;
}

int st_board_load(const char *path, st_board_t *b) {
    memset(b, 0, sizeof *b);
    FILE *f = fopen(path, "r");
    if (!f) return st_fail(ST_EIO, "cannot open board profile %s: %s", path, strerror(errno));
    char line[1024];
    int ln = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        ln++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = st_fail(ST_EFORMAT, "%s:%d: line too long", path, ln);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = s_trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = st_fail(ST_EFORMAT, "%s:%d: expected `key = value`, got '%s'", path, ln, s);
            break;
        }
        *eq = 0;
        char *key = s_trim(s), *val = s_trim(eq + 1);
        char shown[256];
        snprintf(shown, sizeof shown, "%s", val); /* s_set may cut val into words */
        if (!s_set(b, key, val))
            rc = st_fail(ST_EFORMAT, "%s:%d: unknown key or bad value: %s = %s", path, ln, key, shown);
    }
    fclose(f);
    if (rc == 0 && (rc = st_board_fill(b)) < 0) st_log(ST_LOG_ERROR, "%s: not a usable board profile", path);
    return rc;
}

int st_board_get(const char *spec, st_board_t *b) {
    if (access(spec, F_OK) == 0) return st_board_load(spec, b); /* a profile file */
    return st_board_builtin(spec, b);
}

int st_board_save(const st_board_t *b, FILE *f) {
    fprintf(f, "# board profile (st-bench --profile); plain SI units: bytes, bytes/s, seconds, multiply-adds/s\n");
    fprintf(f, "name = %s\nram = %llu\nmem = %llu\nthreads = %d\npage_size = %llu\n", b->name,
            (unsigned long long)b->ram, (unsigned long long)b->mem, b->threads, (unsigned long long)b->page_size);
    fprintf(f, "mem_bw = %.4g\n", b->mem_bw);
    for (int t = 1; t <= ST_BOARD_MAX_THREADS; t++)
        if (b->mem_bw_t[t] > 0) fprintf(f, "mem_bw.%d = %.4g\n", t, b->mem_bw_t[t]);
    fprintf(f, "# matmul.TYPE = multiply-adds/s at 1, 8 and 64 tokens\n");
    for (int t = 0; t < ST_TYPE_COUNT; t++)
        if (b->matmul[t][0] > 0)
            fprintf(f, "matmul.%s = %.4g %.4g %.4g\n", st_type_name(t), b->matmul[t][0], b->matmul[t][1],
                    b->matmul[t][2]);
    fprintf(f, "# unpacked.TYPE = the same in the file's layout (types the kernels pack)\n");
    for (int t = 0; t < ST_TYPE_COUNT; t++)
        if (b->unpacked[t][0] > 0)
            fprintf(f, "unpacked.%s = %.4g %.4g %.4g\n", st_type_name(t), b->unpacked[t][0], b->unpacked[t][1],
                    b->unpacked[t][2]);
    for (int t = 0; t < ST_TYPE_COUNT; t++)
        if (b->stream[t] > 0) fprintf(f, "stream.%s = %.4g\n", st_type_name(t), b->stream[t]);
    fprintf(f, "disk_direct = %.4g\ndisk_buffered = %.4g\ndisk = %llu\ndisk_kind = %s\n", b->disk_direct,
            b->disk_buffered, (unsigned long long)b->disk, b->disk_kind);
    fprintf(f, "rtt = %.4g\nmsg_bps = %.4g\nnet_bps = %.4g\n", b->rtt, b->msg_bps, b->net_bps);
    char what[64];
    if (st_board_worst_spread(b, 0, what, sizeof what, NULL) <= 0) goto done;
    fprintf(f, "# spread.RATE = slowest over fastest of the timed blocks behind RATE (each rate is its fastest)\n");
    for (int t = 1; t <= ST_BOARD_MAX_THREADS; t++)
        if (b->spread.mem_bw_t[t] > 0) fprintf(f, "spread.mem_bw.%d = %.3f\n", t, b->spread.mem_bw_t[t]);
    for (int t = 0; t < ST_TYPE_COUNT; t++) {
        const double *m = b->spread.matmul[t], *u = b->spread.unpacked[t];
        if (m[0] > 0) fprintf(f, "spread.matmul.%s = %.3f %.3f %.3f\n", st_type_name(t), m[0], m[1], m[2]);
        if (u[0] > 0) fprintf(f, "spread.unpacked.%s = %.3f %.3f %.3f\n", st_type_name(t), u[0], u[1], u[2]);
        if (b->spread.stream[t] > 0) fprintf(f, "spread.stream.%s = %.3f\n", st_type_name(t), b->spread.stream[t]);
    }
    if (b->spread.rtt > 0) fprintf(f, "spread.rtt = %.3f\n", b->spread.rtt);
    if (b->spread.msg_bps > 0) fprintf(f, "spread.msg_bps = %.3f\n", b->spread.msg_bps);
done:
    return ferror(f) ? st_fail(ST_EIO, "cannot write the profile") : 0;
}
