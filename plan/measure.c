/* measure: this machine as a board (see measure.h). */
#include "measure.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "st_kernels.h"
#include "st_log.h"
#include "threadpool.h"

#define BW_BUFFER (256u << 20) /* 256 MiB: 8x a 32 MiB L3; small enough for a 1 GiB budget */
#define MM_ROWS 768            /* an expert's gate: n_ff x n_embd of the 21B */
#define MM_COLS 2560
#define MM_SET (64u << 20)      /* matrices cycled through: past the caches */
#define STREAM_SET (256u << 20) /* the coordinator's dense weights stream from memory */
#define RTT_PAUSE_NS 2000000    /* before each timed round trip */
#define RTT_BLOCK 50            /* round trips per timed block */
#define MSG_BLOCK 16            /* 1 MiB messages per timed block */
#define MM_BLOCK 8              /* timed calls per block of a type and batch */
#define MM_PAUSE_NS 4000000     /* after each call: longer than a CPU quota period at 1/4 CPU */
#define DISK_FILE (128u << 20)  /* scratch file for the storage reads */
#define EXPERT_21B 3317760ull   /* bytes of one 21B Q4_0 expert: 3 x 1,105,920 */

/* ---- timed blocks -------------------------------------------------------- */

/* A rate is the fastest of several timed blocks, not one timing or the median
 * of all: a vCPU descheduled or a core taken by another process makes some
 * blocks slow, never one fast. Blocks are taken until the fastest two agree
 * within BLOCKS_AGREE (at least `min`, at most BLOCKS_MAX); the slowest over
 * the fastest is kept as the rate's spread, which tells a busy machine. */
#define BLOCKS_MAX 15
#define BLOCKS_AGREE 1.10

typedef struct {
    double t[BLOCKS_MAX]; /* seconds of each block */
    int n, min;
} blocks_t;

static void s_blocks_add(blocks_t *b, double t) {
    if (b->n < BLOCKS_MAX) b->t[b->n++] = t > 1e-9 ? t : 1e-9; /* every block counts: the loops end */
}

static double s_blocks_best(const blocks_t *b) {
    double best = 0;
    for (int i = 0; i < b->n; i++) best = i == 0 || b->t[i] < best ? b->t[i] : best;
    return best;
}

/* Slowest over fastest; 0 with no block. */
static double s_blocks_spread(const blocks_t *b) {
    double worst = 0;
    for (int i = 0; i < b->n; i++) worst = b->t[i] > worst ? b->t[i] : worst;
    return b->n ? worst / s_blocks_best(b) : 0;
}

static bool s_blocks_done(const blocks_t *b) {
    if (b->n >= BLOCKS_MAX) return true;
    if (b->n < b->min || b->n < 2) return false;
    double best = s_blocks_best(b), second = 0;
    bool skipped = false;
    for (int i = 0; i < b->n; i++) {
        if (b->t[i] == best && !skipped) {
            skipped = true;
            continue;
        }
        second = second == 0 || b->t[i] < second ? b->t[i] : second;
    }
    return second <= best * BLOCKS_AGREE;
}

/* ---- memory bandwidth ---------------------------------------------------- */

/* 16-byte vectors: native on every 64-bit target (SSE2, NEON), so the loop
 * compiles to plain vector loads without any ISA flag */
typedef uint64_t v2u64 __attribute__((vector_size(16)));

#define BW_PARTS 64 /* parts of the buffer claimed by the threads */

typedef struct {
    const v2u64 *buf;
    int n; /* cache lines (4 vectors each) */
    uint64_t sink[BW_PARTS];
} bw_job_t;

/* Part `part` of the buffer, 2 cache lines per step, 8 independent accumulators. */
static void s_bw_part(void *arg, int part, int ith) {
    bw_job_t *j = arg;
    int lo, hi;
    st_split_range(j->n / 2, part, BW_PARTS, &lo, &hi);
    v2u64 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    for (const v2u64 *p = j->buf + 8 * (size_t)lo, *e = j->buf + 8 * (size_t)hi; p < e; p += 8) {
        a0 ^= p[0];
        a1 ^= p[1];
        a2 ^= p[2];
        a3 ^= p[3];
        a4 ^= p[4];
        a5 ^= p[5];
        a6 ^= p[6];
        a7 ^= p[7];
    }
    v2u64 a = a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
    (void)ith;
    j->sink[part] = a[0] ^ a[1];
}

/* Fastest of 8 or more passes over a BW_BUFFER buffer with the pool's threads (timed
 * blocks), bytes/s, and their spread into *spread; 0 on failure. */
static double s_measure_bandwidth(st_pool_t *pool, double *spread) {
    void *buf = NULL;
    if (posix_memalign(&buf, (size_t)2 << 20, BW_BUFFER) != 0) return 0.0;
    madvise(buf, BW_BUFFER, MADV_HUGEPAGE); /* as the resident weights: the best the memory gives */
    memset(buf, 1, BW_BUFFER);              /* fault every page in before timing */
    bw_job_t j = {.buf = buf, .n = (int)(BW_BUFFER / 64)};
    blocks_t bl = {.min = 8};
    while (!s_blocks_done(&bl)) {
        const double t0 = st_now_s();
        st_pool_for(pool, BW_PARTS, s_bw_part, &j);
        s_blocks_add(&bl, st_now_s() - t0);
    }
    free(buf);
    *spread = s_blocks_spread(&bl);
    return bl.n ? BW_BUFFER / s_blocks_best(&bl) : 0.0;
}

/* The measurement in a child process, so that its buffer counts neither in our
 * peak RSS nor, after the child exits, against a --mem budget; in-process if
 * fork is not possible. bytes/s, 0 on failure. */
double st_measure_bandwidth(int n_threads, double *spread) {
    int fd[2] = {-1, -1};
    pid_t pid = -1;
    double dummy, r[2] = {0, 0}; /* bytes/s, spread */
    if (!spread) spread = &dummy;
    if (pipe(fd) == 0 && (pid = fork()) == 0) {
        close(fd[0]);
        st_pool_t *pool = st_pool_new(n_threads);
        r[0] = pool ? s_measure_bandwidth(pool, &r[1]) : 0.0;
        st_pool_destroy(&pool);
        _exit(write(fd[1], r, sizeof r) == (ssize_t)sizeof r ? 0 : 1);
    }
    if (pid > 0) {
        close(fd[1]);
        if (read(fd[0], r, sizeof r) != (ssize_t)sizeof r) r[0] = r[1] = 0.0;
        close(fd[0]);
        waitpid(pid, NULL, 0);
        *spread = r[1];
        return r[0];
    }
    if (pid < 0 && fd[0] >= 0) {
        close(fd[0]);
        close(fd[1]);
    }
    st_pool_t *pool = st_pool_new(n_threads);
    r[0] = pool ? s_measure_bandwidth(pool, spread) : 0.0;
    st_pool_destroy(&pool);
    return r[0];
}

/* ---- matmul -------------------------------------------------------------- */

static int s_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    const st_kernels_t *k;
    st_type_t t;
    const uint8_t *w;
    bool packed;
    const void *x;
    size_t x_row;
    int n_tok;
    float *y;
} mm_job_t;

#define MM_PARTS (MM_ROWS / 48) /* 48 rows: a multiple of every packing group */

static void s_mm_part(void *arg, int part, int ith) {
    const mm_job_t *j = arg;
    (void)ith;
    const int r0 = part * 48, r1 = r0 + 48;
    if (j->packed)
        st_matmul_packed(j->k, j->t, j->w, MM_COLS, r0, r1, j->x, j->x_row, j->n_tok, j->y, MM_ROWS);
    else
        st_matmul(j->k, j->t, j->w, MM_COLS, r0, r1, j->x, j->x_row, j->n_tok, j->y, MM_ROWS);
}

/* Multiply-adds/s of n_mat matrices of `mat` bytes at w with 1, 8 and 64 tokens into r,
 * one call at a time, packed or in the file's layout, and their spreads. */
static void s_call_rates(const mm_job_t *proto, st_pool_t *pool, const uint8_t *w, size_t n_mat, size_t mat,
                         double r[3], double spread[3]) {
    blocks_t bl[ST_BOARD_N_BATCH];
    size_t next = 0; /* the next matrix: every call reads one the caches do not hold */
    for (int b = 0; b < ST_BOARD_N_BATCH; b++) {
        bl[b] = (blocks_t){.min = 5};
        mm_job_t j = *proto;
        j.n_tok = st_board_batch[b];
        for (size_t m = 0; m < n_mat; m++) { /* warm-up: one pass */
            j.w = w + m * mat;
            st_pool_for(pool, MM_PARTS, s_mm_part, &j);
        }
    }
    /* one call at a time with a pause after it, as a node computes an expert
     * between waits; a block's time is its median call (a CPU quota lets a
     * short burst run at full speed, so a busy loop would measure the quota,
     * not the board). The batches take turns, so that each rate's blocks
     * spread over the whole measurement. */
    for (bool more = true; more;) {
        more = false;
        for (int b = 0; b < ST_BOARD_N_BATCH; b++) {
            if (s_blocks_done(&bl[b])) continue;
            more = true;
            mm_job_t j = *proto;
            j.n_tok = st_board_batch[b];
            double times[MM_BLOCK];
            for (int n = 0; n < MM_BLOCK; n++) {
                j.w = w + (next++ % n_mat) * mat;
                const double t0 = st_now_s();
                st_pool_for(pool, MM_PARTS, s_mm_part, &j);
                times[n] = st_now_s() - t0;
                st_pool_park(pool);
                nanosleep(&(struct timespec){0, MM_PAUSE_NS}, NULL);
            }
            qsort(times, MM_BLOCK, sizeof times[0], s_cmp);
            s_blocks_add(&bl[b], times[MM_BLOCK / 2]);
        }
    }
    for (int b = 0; b < ST_BOARD_N_BATCH; b++) {
        r[b] = (double)MM_ROWS * MM_COLS * st_board_batch[b] / s_blocks_best(&bl[b]);
        spread[b] = s_blocks_spread(&bl[b]);
    }
}

/* Multiply-adds/s of type t into b: with 1, 8 and 64 tokens, one call at a
 * time, as the kernels read it (packed where they pack it); where they pack
 * it, the same in the file's layout (else left 0); and at 1 token back to
 * back over STREAM_SET (0 when that much memory is not there); each with its
 * spread. false when the kernels cannot multiply t or memory is short. */
static bool s_matmul_rates(const st_kernels_t *k, st_pool_t *pool, st_type_t t, st_board_t *b) {
    const st_type_traits_t *tr = st_type_traits(t), *vt = tr ? st_type_traits(tr->vec_dot_type) : NULL;
    if (!tr || !tr->name || !tr->supported || !vt || !k->vec_dot[t] || !k->from_float[tr->vec_dot_type] ||
        MM_COLS % tr->blck || MM_COLS % vt->blck)
        return false;
    const size_t mat = (size_t)MM_ROWS * st_row_size(t, MM_COLS);
    size_t n_mat = MM_SET / mat + 1;
    if (n_mat < 4) n_mat = 4;
    const size_t x_row = st_row_size(tr->vec_dot_type, MM_COLS);
    uint8_t *w = NULL;
    float *xf = malloc((size_t)64 * MM_COLS * sizeof *xf), *y = malloc((size_t)64 * MM_ROWS * sizeof *y);
    void *x = malloc(64 * x_row);
    bool ok = xf && y && x && posix_memalign((void **)&w, 64, n_mat * mat) == 0;
    if (!ok) goto out;
    /* bytes 0x20..0x3f: every fp16/bf16/f32 scale or weight is a normal number below 2 */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n_mat * mat; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        w[i] = (uint8_t)(0x20 + (s & 0x1f));
    }
    for (int i = 0; i < 64 * MM_COLS; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        xf[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1);
    }
    for (int i = 0; i < 64; i++)
        k->from_float[tr->vec_dot_type](MM_COLS, xf + (size_t)i * MM_COLS, (uint8_t *)x + (size_t)i * x_row);
    const bool packed = st_packable(k, t, MM_COLS, MM_ROWS);
    /* a node that cannot hold all its experts computes them in the file's layout */
    if (packed)
        s_call_rates(&(mm_job_t){k, t, NULL, false, x, x_row, 1, y}, pool, w, n_mat, mat, b->unpacked[t],
                     b->spread.unpacked[t]);
    for (size_t m = 0; packed && m < n_mat; m++) st_pack(k, t, MM_COLS, MM_ROWS, w + m * mat);
    s_call_rates(&(mm_job_t){k, t, NULL, packed, x, x_row, 1, y}, pool, w, n_mat, mat, b->matmul[t],
                 b->spread.matmul[t]);
    /* streamed: as many matrices as STREAM_SET holds, back to back, in timed passes */
    const size_t n_stream = STREAM_SET / mat + 1;
    uint8_t *ws = NULL;
    if (posix_memalign((void **)&ws, 2 << 20, n_stream * mat) == 0) {
        madvise(ws, n_stream * mat, MADV_HUGEPAGE); /* as the coordinator's packed matrices */
        for (size_t m = 0; m < n_stream; m++) memcpy(ws + m * mat, w + (m % n_mat) * mat, mat);
        mm_job_t j = {k, t, NULL, packed, x, x_row, 1, y};
        blocks_t bl = {.min = 4};
        while (!s_blocks_done(&bl)) {
            const double t0 = st_now_s();
            for (size_t m = 0; m < n_stream; m++) {
                j.w = ws + m * mat;
                st_pool_for(pool, MM_PARTS, s_mm_part, &j);
            }
            s_blocks_add(&bl, st_now_s() - t0);
        }
        b->stream[t] = (double)n_stream * MM_ROWS * MM_COLS / s_blocks_best(&bl);
        b->spread.stream[t] = s_blocks_spread(&bl);
        free(ws);
    }
out:
    free(w);
    free(xf);
    free(y);
    free(x);
    return ok;
}

/* ---- storage ------------------------------------------------------------- */

/* Reads the file's blocks in a seeded random order for up to a second; bytes/s or 0. */
static double s_read_blocks(int fd, uint8_t *buf, uint64_t block, int n_blocks) {
    int *order = malloc((size_t)n_blocks * sizeof *order);
    if (!order) return 0;
    for (int i = 0; i < n_blocks; i++) order[i] = i;
    uint64_t s = 0x2545f4914f6cdd1dull;
    for (int i = n_blocks - 1; i > 0; i--) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        int j = (int)(s % (uint64_t)(i + 1)), v = order[i];
        order[i] = order[j], order[j] = v;
    }
    uint64_t bytes = 0;
    const double t0 = st_now_s();
    double dt = 0;
    for (int i = 0; i < n_blocks && (i < 4 || dt < 1.0); i++) {
        ssize_t got = pread(fd, buf, block, (off_t)((uint64_t)order[i] * block));
        if (got != (ssize_t)block) {
            free(order);
            return 0;
        }
        bytes += block;
        dt = st_now_s() - t0;
    }
    free(order);
    return dt > 0 ? (double)bytes / dt : 0;
}

/* Writes a scratch file in dir, then reads expert-sized blocks with O_DIRECT
 * and through the page cache (dropped first). Fills the rates and the free space. */
static void s_measure_disk(const char *dir, uint64_t block, st_board_t *b) {
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0) b->disk = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    char path[4096];
    snprintf(path, sizeof path, "%s/.st-profile-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        st_log(ST_LOG_WARN, "storage not measured: cannot create a file in %s: %s", dir, strerror(errno));
        return;
    }
    unlink(path); /* gone when closed, whatever happens */
    const int n_blocks = (int)(DISK_FILE / block) > 4 ? (int)(DISK_FILE / block) : 4;
    uint8_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, block) != 0) {
        close(fd);
        return;
    }
    memset(buf, 0x5a, block);
    bool ok = true;
    for (int i = 0; ok && i < n_blocks; i++)
        ok = pwrite(fd, buf, block, (off_t)((uint64_t)i * block)) == (ssize_t)block;
    ok = ok && fsync(fd) == 0;
    if (!ok) {
        st_log(ST_LOG_WARN, "storage not measured: cannot write %d MiB in %s", (int)(DISK_FILE >> 20), dir);
    } else {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        b->disk_buffered = s_read_blocks(fd, buf, block, n_blocks);
        char self[64];
        snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
        int dfd = open(self, O_RDONLY | O_DIRECT); /* the same (unlinked) file, without the page cache */
        if (dfd >= 0) {
            b->disk_direct = s_read_blocks(dfd, buf, block, n_blocks);
            close(dfd);
        } else
            st_log(ST_LOG_WARN, "no O_DIRECT in %s (%s): buffered reads stand in", dir, strerror(errno));
    }
    free(buf);
    close(fd);
}

/* ---- messaging ----------------------------------------------------------- */

typedef struct {
    void *sock;
} echo_t;

/* Echoes every message back until an empty one arrives. */
static void *s_echo(void *arg) {
    echo_t *e = arg;
    for (;;) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&id, e->sock, 0) < 0 || zmq_msg_recv(&body, e->sock, 0) < 0) break;
        const bool stop = zmq_msg_size(&body) == 0;
        zmq_msg_send(&id, e->sock, ZMQ_SNDMORE);
        zmq_msg_send(&body, e->sock, 0);
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        if (stop) break;
    }
    return NULL;
}

/* A ROUTER with CURVE on 127.0.0.1 in a thread, a DEALER with CURVE here, as
 * a node and the coordinator talk. */
static void s_measure_zmq(st_board_t *b) {
    char spub[41], ssec[41], cpub[41], csec[41], ep[64];
    void *ctx = zmq_ctx_new(), *srv = ctx ? zmq_socket(ctx, ZMQ_ROUTER) : NULL, *cli = NULL;
    size_t len = sizeof ep;
    int as_server = 1, ms = 5000;
    pthread_t th;
    bool started = false;
    uint8_t *big = malloc(1 << 20);
    if (!srv || !big || zmq_curve_keypair(spub, ssec) || zmq_curve_keypair(cpub, csec) ||
        zmq_setsockopt(srv, ZMQ_CURVE_SERVER, &as_server, sizeof as_server) ||
        zmq_setsockopt(srv, ZMQ_CURVE_SECRETKEY, ssec, 40) || zmq_bind(srv, "tcp://127.0.0.1:*") ||
        zmq_getsockopt(srv, ZMQ_LAST_ENDPOINT, ep, &len) || !(cli = zmq_socket(ctx, ZMQ_DEALER)) ||
        zmq_setsockopt(cli, ZMQ_CURVE_SERVERKEY, spub, 40) || zmq_setsockopt(cli, ZMQ_CURVE_PUBLICKEY, cpub, 40) ||
        zmq_setsockopt(cli, ZMQ_CURVE_SECRETKEY, csec, 40) || zmq_setsockopt(cli, ZMQ_RCVTIMEO, &ms, sizeof ms) ||
        zmq_connect(cli, ep)) {
        st_log(ST_LOG_WARN, "messaging not measured: %s", zmq_strerror(zmq_errno()));
        goto out;
    }
    echo_t e = {srv};
    if (pthread_create(&th, NULL, s_echo, &e) != 0) goto out;
    started = true;
    memset(big, 0x33, 1 << 20);
    char small[256] = {1};
    for (int i = 0; i < 100; i++) /* warm-up */
        if (zmq_send(cli, small, sizeof small, 0) < 0 || zmq_recv(cli, small, sizeof small, 0) < 0) {
            st_log(ST_LOG_WARN, "messaging not measured: no echo (%s)", zmq_strerror(zmq_errno()));
            goto out;
        }
    /* a block's round trip is its median one, each after both ends slept, as between a node's layers */
    blocks_t bl = {.min = 5};
    while (!s_blocks_done(&bl)) {
        double rtt[RTT_BLOCK];
        for (int i = 0; i < RTT_BLOCK; i++) {
            nanosleep(&(struct timespec){0, RTT_PAUSE_NS}, NULL);
            const double t0 = st_now_s();
            if (zmq_send(cli, small, sizeof small, 0) < 0 || zmq_recv(cli, small, sizeof small, 0) < 0) goto out;
            rtt[i] = st_now_s() - t0;
        }
        qsort(rtt, RTT_BLOCK, sizeof rtt[0], s_cmp);
        s_blocks_add(&bl, rtt[RTT_BLOCK / 2]);
    }
    b->rtt = s_blocks_best(&bl);
    b->spread.rtt = s_blocks_spread(&bl);
    bl = (blocks_t){.min = 5};
    while (!s_blocks_done(&bl)) {
        const double t0 = st_now_s();
        for (int i = 0; i < MSG_BLOCK; i++)
            if (zmq_send(cli, big, 1 << 20, 0) < 0 || zmq_recv(cli, big, 1 << 20, 0) < 0) goto out;
        s_blocks_add(&bl, st_now_s() - t0);
    }
    b->msg_bps = 2.0 * MSG_BLOCK * (1 << 20) / s_blocks_best(&bl);
    b->spread.msg_bps = s_blocks_spread(&bl);
out:
    if (started) {
        zmq_send(cli, "", 0, 0);
        pthread_join(th, NULL);
    }
    int linger = 0;
    if (cli) zmq_setsockopt(cli, ZMQ_LINGER, &linger, sizeof linger), zmq_close(cli);
    if (srv) zmq_setsockopt(srv, ZMQ_LINGER, &linger, sizeof linger), zmq_close(srv);
    if (ctx) zmq_ctx_term(ctx);
    free(big);
}

/* ---- RAM ----------------------------------------------------------------- */

/* MemTotal, or the memory cgroup's limit (v1 or v2) when lower. */
static uint64_t s_ram(void) {
    uint64_t ram = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/cgroup", "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        char *p = strstr(line, ":memory:"), *v2 = strncmp(line, "0::", 3) ? NULL : line + 3;
        char path[1200];
        if (p)
            snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s", p + 8);
        else if (v2)
            snprintf(path, sizeof path, "/sys/fs/cgroup%s", v2);
        else
            continue;
        path[strcspn(path, "\n")] = 0;
        strncat(path, p ? "/memory.limit_in_bytes" : "/memory.max", sizeof path - strlen(path) - 1);
        FILE *g = fopen(path, "r");
        unsigned long long lim;
        if (g && fscanf(g, "%llu", &lim) == 1 && lim > 0 && lim < ram) ram = lim;
        if (g) fclose(g);
    }
    if (f) fclose(f);
    return ram;
}

/* ---- the board ----------------------------------------------------------- */

int st_measure_board(const st_measure_opts_t *o, st_board_t *b) {
    memset(b, 0, sizeof *b);
    const int T = o->threads >= 1 && o->threads <= ST_BOARD_MAX_THREADS ? o->threads : 1;
    const st_kernels_t *k = st_kernels_select();
    char host[40] = "this-machine";
    gethostname(host, sizeof host - 1);
    snprintf(b->name, sizeof b->name, "%s-%dt-%s", host, T, k->name);
    b->ram = s_ram();
    b->threads = T;
    const long page = sysconf(_SC_PAGESIZE); /* st-node's cache maps experts in these */
    b->page_size = page > 0 ? (uint64_t)page : 4096;
    for (int t = 1; t <= T; t++) {
        b->mem_bw_t[t] = st_measure_bandwidth(t, &b->spread.mem_bw_t[t]);
        st_log(ST_LOG_INFO, "memory bandwidth, %d thread%s: %.2f GB/s", t, t == 1 ? "" : "s", b->mem_bw_t[t] / 1e9);
        if (b->mem_bw_t[t] > b->mem_bw) b->mem_bw = b->mem_bw_t[t];
    }
    st_pool_t *pool = st_pool_new(T);
    if (!pool) return st_fail(ST_ENOMEM, "no thread pool");
    for (int t = 0; t < ST_TYPE_COUNT; t++)
        if ((!o->types || (o->types >> t & 1)) && s_matmul_rates(k, pool, (st_type_t)t, b))
            st_log(ST_LOG_INFO,
                   "matmul %s: %.2f, %.2f, %.2f G multiply-adds/s at 1, 8, 64 tokens; unpacked %.2f, %.2f, %.2f; "
                   "streamed %.2f",
                   st_type_name(t), b->matmul[t][0] / 1e9, b->matmul[t][1] / 1e9, b->matmul[t][2] / 1e9,
                   b->unpacked[t][0] / 1e9, b->unpacked[t][1] / 1e9, b->unpacked[t][2] / 1e9, b->stream[t] / 1e9);
    st_pool_destroy(&pool);
    s_measure_disk(o->disk_dir ? o->disk_dir : ".", o->block ? o->block : EXPERT_21B, b);
    st_log(ST_LOG_INFO, "storage, %.2f MiB blocks: %.0f MB/s direct, %.0f MB/s buffered (cache dropped)",
           (o->block ? o->block : EXPERT_21B) / 1048576.0, b->disk_direct / 1e6, b->disk_buffered / 1e6);
    s_measure_zmq(b);
    st_log(ST_LOG_INFO, "ZeroMQ + CURVE on loopback: round trip %.1f us, %.0f MB/s in 1 MiB messages", 1e6 * b->rtt,
           b->msg_bps / 1e6);
    /* the matmul rates of types left out by o->types stay 0, so a saved profile
     * shows no derived rate as measured (loading derives them again) */
    st_board_t filled = *b;
    const int rc = st_board_fill(&filled);
    if (rc < 0) return rc;
    for (int t = 0; t < ST_TYPE_COUNT; t++)
        if (o->types && !(o->types >> t & 1)) memset(filled.matmul[t], 0, sizeof filled.matmul[t]);
    *b = filled;
    char what[64];
    int busy = 0;
    const double worst = st_board_worst_spread(b, o->types, what, sizeof what, &busy);
    if (busy)
        st_log(ST_LOG_WARN,
               "the machine was busy: %d rate%s spread more than %.1fx between their timed blocks (worst: %s, "
               "%.2fx). Each rate is its fastest block, but a quieter machine may measure faster: profile "
               "again when nothing else runs",
               busy, busy == 1 ? "" : "s", ST_BOARD_BUSY_SPREAD, what, worst);
    return 0;
}
