/* sparse-read: does reading a random half of a buffer, in pieces of the size
 * of a ReGLU row, cost half of reading all of it? (It does not: see
 * bench/README.md.) Reads a 1 GiB buffer with 1 and 2 threads, every piece
 * and then a random half of them, best of 3.
 *   cc -O2 -mavx2 -pthread bench/sparse-read.c -o /tmp/sparse-read
 *   /tmp/sparse-read 768     # piece size in bytes, a multiple of 32 */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SIZE (1L << 30)

static uint8_t *buf, *keep;
static long piece, n_pieces;

typedef struct {
    long lo, hi;
    int all;
    __m256i sink;
} part_t;

static double s_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *s_read(void *p) {
    part_t *a = p;
    __m256i s = _mm256_setzero_si256();
    for (long c = a->lo; c < a->hi; c++) {
        if (!a->all && !keep[c]) continue;
        const __m256i *q = (const __m256i *)(buf + c * piece);
        for (long i = 0; i < piece / 32; i++) s = _mm256_xor_si256(s, _mm256_loadu_si256(q + i));
    }
    a->sink = s;
    return NULL;
}

static double s_pass(int nth, int all) {
    pthread_t t[2];
    part_t a[2];
    double t0 = s_now();
    for (int i = 0; i < nth; i++) {
        a[i] = (part_t){n_pieces * i / nth, n_pieces * (i + 1) / nth, all, _mm256_setzero_si256()};
        pthread_create(&t[i], NULL, s_read, &a[i]);
    }
    for (int i = 0; i < nth; i++) pthread_join(t[i], NULL);
    return s_now() - t0;
}

int main(int argc, char **argv) {
    piece = argc > 1 ? atol(argv[1]) : 768;
    if (piece < 32 || piece % 32) return fprintf(stderr, "piece size: a multiple of 32\n"), 2;
    n_pieces = SIZE / piece;
    buf = aligned_alloc(64, SIZE);
    keep = malloc((size_t)n_pieces);
    if (!buf || !keep) return 1;
    memset(buf, 1, SIZE);
    srand(1);
    long kept = 0;
    for (long i = 0; i < n_pieces; i++) kept += keep[i] = (uint8_t)(rand() % 2);
    for (int nth = 1; nth <= 2; nth++) {
        double all = 1e9, half = 1e9;
        for (int r = 0; r < 3; r++) {
            double x = s_pass(nth, 1);
            all = x < all ? x : all;
            x = s_pass(nth, 0);
            half = x < half ? x : half;
        }
        printf("%ld-byte pieces, %d thread(s): all %.1f ms (%.1f GB/s); a random %.0f%% of them %.1f ms = %.0f%% of "
               "the time\n",
               piece, nth, 1e3 * all, SIZE / all / 1e9, 100.0 * kept / n_pieces, 1e3 * half, 100 * half / all);
    }
    return 0;
}
