/* Tests of node/store: experts written chunk by chunk are verified, survive a
 * restart, and anything that does not match its hash (a chunk, a whole
 * expert, a record changed on disk, a damaged index) is refused or dropped. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_kernels.h"
#include "lru.h"
#include "node_mem.h"
#include "st_log.h"
#include "store.h"
#include "wire.h"

static char g_dir[256];

static void setup(void) {
    st_log_set_level(ST_LOG_ERROR);
    snprintf(g_dir, sizeof g_dir, "/tmp/st-test-store-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}
static void teardown(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    cr_assert_eq(system(cmd), 0);
}
TestSuite(store, .init = setup, .fini = teardown);

/* 2 layers x 4 experts, n_embd 64, n_ff_exp 64, Q8_0: 3 x 64 rows x 68 B = 13056 B per expert */
static st_wire_shape_t s_shape(void) {
    st_wire_shape_t s = {.n_layer = 2, .n_embd = 64, .n_ff_exp = 64, .n_expert = 4, .n_expert_used = 2};
    st_wire_shape_set_types(&s, ST_TYPE_Q8_0, ST_TYPE_Q8_0, ST_TYPE_Q8_0);
    memset(s.model_hash, 0x5a, sizeof s.model_hash);
    return s;
}

/* bytes of one expert of the (uniform) test shape */
#define EB(s) st_wire_expert_bytes(s, 0)

/* random bytes of one expert of layer l */
static uint8_t *s_layer_expert_bytes(const st_wire_shape_t *s, uint32_t l, int seed, uint8_t hash[32]) {
    const uint64_t n = st_wire_expert_bytes(s, l);
    uint8_t *b = malloc(n);
    srand((unsigned)seed);
    for (uint64_t i = 0; i < n; i++) b[i] = (uint8_t)rand();
    st_wire_hash(b, n, hash);
    return b;
}

static uint8_t *s_expert_bytes(const st_wire_shape_t *s, int seed, uint8_t hash[32]) {
    return s_layer_expert_bytes(s, 0, seed, hash);
}

/* pushes a whole expert in chunks of `chunk` bytes; returns the last rc */
static int s_push(st_store_t *st, uint32_t l, uint32_t e, const uint8_t *b, const uint8_t want[32], size_t chunk,
                  bool *complete) {
    const uint64_t total = st_wire_expert_bytes(st_store_shape(st), l);
    int rc = 0;
    for (uint64_t off = 0; off < total && rc == 0; off += chunk) {
        size_t n = total - off < chunk ? (size_t)(total - off) : chunk;
        uint8_t h[32];
        st_wire_hash(b + off, n, h);
        rc = st_store_put(st, l, e, want, off, b + off, n, h, complete);
        if (off + n < total) cr_assert(!*complete);
    }
    return rc;
}

static void *s_aligned(size_t n) {
    void *p = NULL;
    cr_assert_eq(posix_memalign(&p, 4096, n), 0);
    return p;
}

Test(store, write_verify_read_and_restart) {
    st_wire_shape_t sh = s_shape();
    st_store_t *st = st_store_open(g_dir, &sh);
    cr_assert_not_null(st);
    cr_assert_eq(st_store_count(st), 0);
    cr_assert_eq(st_store_record_bytes(st) % 4096, 0);
    cr_assert_geq(st_store_record_bytes(st), EB(&sh));
    uint8_t h1[32], h2[32];
    uint8_t *b1 = s_expert_bytes(&sh, 1, h1), *b2 = s_expert_bytes(&sh, 2, h2);
    bool complete = false;
    cr_assert_eq(s_push(st, 1, 3, b1, h1, 5000, &complete), 0);
    cr_assert(complete);
    cr_assert_eq(s_push(st, 0, 0, b2, h2, ST_WIRE_MAX_CHUNK, &complete), 0); /* one chunk */
    cr_assert(complete);
    cr_assert_eq(st_store_count(st), 2);
    cr_assert_arr_eq(st_store_hash(st, 1, 3), h1, 32);
    cr_assert_null(st_store_hash(st, 1, 2));
    cr_assert_null(st_store_hash(st, 9, 0)); /* outside the shape: no crash */
    uint8_t *buf = s_aligned(st_store_record_bytes(st));
    cr_assert_eq(st_store_read(st, 1, 3, buf), 0);
    cr_assert_arr_eq(buf, b1, EB(&sh));
    cr_assert_eq(st_store_read(st, 1, 2, buf), ST_ERANGE);
    cr_assert_gt(st_store_free_bytes(st), 0);
    st_store_close(&st);
    cr_assert_null(st);

    /* a restart finds both, verified, in (layer, expert) order */
    st = st_store_open(g_dir, &sh);
    cr_assert_not_null(st);
    st_wire_ref_t refs[8];
    cr_assert_eq(st_store_list(st, refs, 8), 2);
    cr_assert(refs[0].layer == 0 && refs[0].expert == 0 && refs[0].has_hash);
    cr_assert_arr_eq(refs[0].hash, h2, 32);
    cr_assert(refs[1].layer == 1 && refs[1].expert == 3);
    cr_assert_eq(st_store_read(st, 0, 0, buf), 0);
    cr_assert_arr_eq(buf, b2, EB(&sh));
    /* another model's store under the same directory is separate */
    st_wire_shape_t other = sh;
    other.model_hash[0] ^= 1;
    st_store_t *st2 = st_store_open(g_dir, &other);
    cr_assert_eq(st_store_count(st2), 0);
    st_store_close(&st2);
    st_store_close(&st);
    free(buf), free(b1), free(b2);
}

/* st-plan counts a node's store index and cached experts with node_mem.c's
 * copies of the store's and the cache's arithmetic: they must agree with
 * what the node charges, but for the store struct itself (its directory
 * path and in-flight slots: the same bytes for any shape, within the
 * planner's runtime bound), so two shapes leave the same difference. */
Test(store, the_planner_counts_the_index_and_an_expert_as_the_node_does) {
    int64_t diff[2];
    for (int i = 0; i < 2; i++) {
        st_wire_shape_t sh = s_shape();
        if (i) sh.n_expert = 32, sh.n_embd = 128;
        const uint64_t eb = st_wire_max_expert_bytes(&sh); /* as st-plan passes it */
        st_store_t *st = st_store_open(g_dir, &sh);
        cr_assert_not_null(st);
        diff[i] = (int64_t)st_store_mem_bytes(st) - (int64_t)st_node_index_bytes(sh.n_layer * sh.n_expert, eb);
        cr_assert(diff[i] >= 0 && diff[i] < 65536, "store %zu B, planner %lld B less", st_store_mem_bytes(st),
                  (long long)diff[i]);
        cr_assert_eq(st_node_expert_cost(eb, (uint64_t)sysconf(_SC_PAGESIZE)),
                     st_lru_entry_cost(st_store_record_bytes(st)));
        st_store_close(&st);
    }
    cr_assert_eq(diff[0], diff[1], "the planner's index grows unlike the store's: %lld, %lld B apart",
                 (long long)diff[0], (long long)diff[1]);
}

Test(store, corrupt_chunk_is_rejected_before_writing) {
    st_wire_shape_t sh = s_shape();
    st_store_t *st = st_store_open(g_dir, &sh);
    uint8_t h[32];
    uint8_t *b = s_expert_bytes(&sh, 3, h);
    uint8_t ch[32];
    st_wire_hash(b, 4096, ch);
    bool complete;
    cr_assert_eq(st_store_put(st, 0, 1, h, 0, b, 4096, ch, &complete), 0);
    /* second chunk: one bit flipped in transit */
    st_wire_hash(b + 4096, 4096, ch);
    b[5000] ^= 1;
    cr_assert_eq(st_store_put(st, 0, 1, h, 4096, b + 4096, 4096, ch, &complete), ST_EPROTO);
    b[5000] ^= 1;
    /* the good chunk is then accepted at the same offset and the expert completes */
    cr_assert_eq(st_store_put(st, 0, 1, h, 4096, b + 4096, 4096, ch, &complete), 0);
    size_t rest = (size_t)EB(&sh) - 8192;
    st_wire_hash(b + 8192, rest, ch);
    cr_assert_eq(st_store_put(st, 0, 1, h, 8192, b + 8192, rest, ch, &complete), 0);
    cr_assert(complete);
    uint8_t *buf = s_aligned(st_store_record_bytes(st));
    cr_assert_eq(st_store_read(st, 0, 1, buf), 0);
    cr_assert_arr_eq(buf, b, EB(&sh));
    st_store_close(&st);
    free(buf), free(b);
}

Test(store, whole_expert_mismatch_is_not_stored) {
    st_wire_shape_t sh = s_shape();
    st_store_t *st = st_store_open(g_dir, &sh);
    uint8_t h[32], wrong[32];
    uint8_t *b = s_expert_bytes(&sh, 4, h);
    memcpy(wrong, h, 32);
    wrong[31] ^= 0x80; /* the assignment expects other bytes: every chunk is fine, the whole is not */
    bool complete = true;
    cr_assert_eq(s_push(st, 1, 1, b, wrong, 4096, &complete), ST_EPROTO);
    cr_assert(!complete);
    cr_assert_eq(st_store_count(st), 0);
    cr_assert_null(st_store_hash(st, 1, 1));
    st_store_close(&st);
    st = st_store_open(g_dir, &sh); /* and not after a restart either */
    cr_assert_eq(st_store_count(st), 0);
    st_store_close(&st);
    free(b);
}

Test(store, chunks_out_of_order_are_refused) {
    st_wire_shape_t sh = s_shape();
    st_store_t *st = st_store_open(g_dir, &sh);
    uint8_t h[32], ch[32];
    uint8_t *b = s_expert_bytes(&sh, 5, h);
    bool complete;
    st_wire_hash(b + 4096, 4096, ch);
    cr_assert_eq(st_store_put(st, 0, 2, h, 4096, b + 4096, 4096, ch, &complete), ST_EPROTO); /* no start */
    st_wire_hash(b, 4096, ch);
    cr_assert_eq(st_store_put(st, 0, 2, h, 0, b, 4096, ch, &complete), 0);
    st_wire_hash(b + 8192, 4096, ch);
    cr_assert_eq(st_store_put(st, 0, 2, h, 8192, b + 8192, 4096, ch, &complete), ST_EPROTO); /* a gap */
    st_wire_hash(b, 100, ch);
    cr_assert_eq(st_store_put(st, 9, 0, h, 0, b, 100, ch, &complete), ST_ERANGE);
    cr_assert_eq(st_store_put(st, 0, 2, h, EB(&sh), b, 100, ch, &complete), ST_ERANGE);
    /* offset 0 restarts the transfer */
    cr_assert_eq(s_push(st, 0, 2, b, h, 3000, &complete), 0);
    cr_assert(complete);
    st_store_close(&st);
    free(b);
}

static void s_flip_byte(const char *path, off_t off) {
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0, "%s", path);
    uint8_t c;
    cr_assert_eq(pread(fd, &c, 1, off), 1);
    c ^= 0x01;
    cr_assert_eq(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void s_model_path(const st_wire_shape_t *sh, const char *name, char *out, size_t cap) {
    char hex[65];
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", sh->model_hash[i]);
    snprintf(out, cap, "%s/%s/%s", g_dir, hex, name);
}

Test(store, tampered_data_file_is_detected) {
    st_wire_shape_t sh = s_shape();
    st_store_t *st = st_store_open(g_dir, &sh);
    uint8_t h1[32], h2[32];
    uint8_t *b1 = s_expert_bytes(&sh, 6, h1), *b2 = s_expert_bytes(&sh, 7, h2);
    bool complete;
    cr_assert_eq(s_push(st, 0, 0, b1, h1, 8192, &complete), 0);
    cr_assert_eq(s_push(st, 0, 1, b2, h2, 8192, &complete), 0);
    st_store_close(&st);
    char path[600];
    s_model_path(&sh, "experts.dat", path, sizeof path);
    struct stat s;
    cr_assert_eq(stat(path, &s), 0);
    cr_assert_eq((uint64_t)s.st_size, 2 * ((EB(&sh) + 4095) / 4096 * 4096)); /* two 4096-aligned records */
    s_flip_byte(path, 100);                                                  /* inside record 0 */
    st = st_store_open(g_dir, &sh);
    cr_assert_eq(st_store_count(st), 1); /* the damaged expert is dropped at open */
    cr_assert_null(st_store_hash(st, 0, 0));
    cr_assert_not_null(st_store_hash(st, 0, 1));
    /* damage found on a later read too */
    const off_t rec = (off_t)st_store_record_bytes(st);
    s_flip_byte(path, rec + 7);
    uint8_t *buf = s_aligned((size_t)rec);
    cr_assert_eq(st_store_read(st, 0, 1, buf), ST_EFORMAT);
    cr_assert_eq(st_store_count(st), 0);
    st_store_close(&st);
    st = st_store_open(g_dir, &sh);
    cr_assert_eq(st_store_count(st), 0);
    st_store_close(&st);
    free(buf), free(b1), free(b2);
}

Test(store, damaged_index_starts_empty) {
    st_wire_shape_t sh = s_shape();
    st_store_t *st = st_store_open(g_dir, &sh);
    uint8_t h[32];
    uint8_t *b = s_expert_bytes(&sh, 8, h);
    bool complete;
    cr_assert_eq(s_push(st, 1, 2, b, h, 8192, &complete), 0);
    st_store_close(&st);
    char path[600];
    s_model_path(&sh, "index", path, sizeof path);
    s_flip_byte(path, 70); /* the index's own checksum no longer matches */
    st = st_store_open(g_dir, &sh);
    cr_assert_not_null(st);
    cr_assert_eq(st_store_count(st), 0);
    /* and the store is usable again */
    cr_assert_eq(s_push(st, 1, 2, b, h, 8192, &complete), 0);
    cr_assert_eq(st_store_count(st), 1);
    st_store_close(&st);
    /* a truncated index likewise */
    cr_assert_eq(truncate(path, 20), 0);
    st = st_store_open(g_dir, &sh);
    cr_assert_eq(st_store_count(st), 0);
    st_store_close(&st);
    free(b);
}

Test(store, new_version_replaces_the_old) {
    st_wire_shape_t sh = s_shape();
    st_store_t *st = st_store_open(g_dir, &sh);
    uint8_t h1[32], h2[32];
    uint8_t *b1 = s_expert_bytes(&sh, 9, h1), *b2 = s_expert_bytes(&sh, 10, h2);
    bool complete;
    cr_assert_eq(s_push(st, 0, 3, b1, h1, 8192, &complete), 0);
    cr_assert_eq(s_push(st, 0, 3, b2, h2, 8192, &complete), 0);
    cr_assert_eq(st_store_count(st), 1);
    cr_assert_arr_eq(st_store_hash(st, 0, 3), h2, 32);
    uint8_t *buf = s_aligned(st_store_record_bytes(st));
    cr_assert_eq(st_store_read(st, 0, 3, buf), 0);
    cr_assert_arr_eq(buf, b2, EB(&sh));
    cr_assert_eq(st_store_remove(st, 0, 3), 0);
    cr_assert_eq(st_store_count(st), 0);
    st_store_close(&st);
    free(buf), free(b1), free(b2);
}

Test(store, bad_shape_is_refused) {
    st_wire_shape_t sh = s_shape();
    sh.gate_type[1] = 99; /* no such type */
    cr_assert_null(st_store_open(g_dir, &sh));
}

/* llama-quantize's mixes: experts of different layers differ in size. Records
 * fit the largest; each holds (and hashes) exactly its layer's bytes. */
Test(store, per_layer_expert_sizes) {
    st_wire_shape_t sh = s_shape();
    sh.down_type[1] = ST_TYPE_Q4_0; /* layer 1: 2 x 64 x 68 + 64 x 36 B */
    const uint64_t e0 = st_wire_expert_bytes(&sh, 0), e1 = st_wire_expert_bytes(&sh, 1);
    cr_assert_eq(e0, 3 * 64 * 68);
    cr_assert_eq(e1, 2 * 64 * 68 + 64 * 36);
    st_store_t *st = st_store_open(g_dir, &sh);
    cr_assert_not_null(st);
    cr_assert_eq(st_store_record_bytes(st), (e0 + 4095) / 4096 * 4096);
    uint8_t h0[32], h1[32];
    uint8_t *b0 = s_layer_expert_bytes(&sh, 0, 21, h0), *b1 = s_layer_expert_bytes(&sh, 1, 22, h1);
    bool complete = false;
    cr_assert_eq(s_push(st, 1, 2, b1, h1, 4096, &complete), 0);
    cr_assert(complete);
    cr_assert_eq(s_push(st, 0, 2, b0, h0, 4096, &complete), 0);
    cr_assert(complete);
    /* a chunk past layer 1's end (but inside layer 0's size) is refused */
    uint8_t ch[32];
    st_wire_hash(b0, 100, ch);
    cr_assert_eq(st_store_put(st, 1, 3, h0, e1, b0, 100, ch, &complete), ST_ERANGE);
    st_store_close(&st);
    /* reopened: both verified with their own sizes */
    st = st_store_open(g_dir, &sh);
    cr_assert_not_null(st);
    cr_assert_eq(st_store_count(st), 2);
    uint8_t *buf = s_aligned(st_store_record_bytes(st));
    cr_assert_eq(st_store_read(st, 1, 2, buf), 0);
    cr_assert_arr_eq(buf, b1, e1);
    cr_assert_eq(st_store_read(st, 0, 2, buf), 0);
    cr_assert_arr_eq(buf, b0, e0);
    st_store_close(&st);
    /* the same model hash with another type mix is another index: it starts empty */
    st_wire_shape_t other = sh;
    other.down_type[1] = ST_TYPE_Q8_0;
    st = st_store_open(g_dir, &other);
    cr_assert_not_null(st);
    cr_assert_eq(st_store_count(st), 0);
    st_store_close(&st);
    free(buf), free(b0), free(b1);
}

/* Model directories are made for a model only when its store is opened, and
 * st_store_make_room bounds how many are kept: the least recently used that
 * hold no expert go first, ones with experts (a valid index listing some) and
 * the one to keep never do, and anything that is not a model's store stays. */
Test(store, model_directories_are_bounded) {
    st_wire_shape_t sh[6];
    for (int i = 0; i < 6; i++) {
        sh[i] = s_shape();
        sh[i].model_hash[0] = (uint8_t)i;
        cr_assert_not(st_store_exists(g_dir, &sh[i]));
    }
    uint8_t h[32];
    uint8_t *b = s_expert_bytes(&sh[0], 7, h);
    char path[512];
    for (int i = 0; i < 5; i++) {
        st_store_t *st = st_store_open(g_dir, &sh[i]);
        cr_assert_not_null(st);
        bool complete = false;
        if (i == 1 || i == 3) cr_assert_eq(s_push(st, 0, 1, b, h, ST_WIRE_MAX_CHUNK, &complete), 0);
        st_store_close(&st);
        cr_assert(st_store_exists(g_dir, &sh[i]));
    }
    cr_assert_not(st_store_exists(g_dir, &sh[5]));
    /* last used in the order 0, 1, 2, 3, 4 (set here: opening them took less than a tick) */
    char hex[65];
    for (int i = 0; i < 5; i++) {
        for (int j = 0; j < 32; j++) snprintf(hex + 2 * j, 3, "%02x", sh[i].model_hash[j]);
        snprintf(path, sizeof path, "%s/%s", g_dir, hex);
        const struct timespec t[2] = {{.tv_sec = 1000000 + i}, {.tv_sec = 1000000 + i}};
        cr_assert_eq(utimensat(AT_FDCWD, path, t, 0), 0);
    }
    /* not model stores: left alone */
    snprintf(path, sizeof path, "%s/node.key", g_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/%064d", g_dir, 0); /* a model's name, but a file */
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);

    /* 5 stores, at most 4: the two oldest empty ones (0 and 2) go, 1 and 3 hold experts */
    cr_assert_eq(st_store_make_room(g_dir, 4, NULL), 0);
    const bool after1[5] = {false, true, false, true, true};
    for (int i = 0; i < 5; i++) cr_assert_eq(st_store_exists(g_dir, &sh[i]), after1[i], "model %d", i);
    /* at most 3: only 4 is empty, and it is the one to keep */
    cr_assert_eq(st_store_make_room(g_dir, 3, sh[4].model_hash), ST_ERANGE);
    cr_assert(st_store_exists(g_dir, &sh[4]));
    cr_assert_eq(st_store_make_room(g_dir, 3, NULL), 0);
    cr_assert_not(st_store_exists(g_dir, &sh[4]));
    /* at most 2 with 2 stores that hold experts: refused, both kept */
    cr_assert_eq(st_store_make_room(g_dir, 2, NULL), ST_ERANGE);
    cr_assert(st_store_exists(g_dir, &sh[1]) && st_store_exists(g_dir, &sh[3]));
    /* a damaged index lists nothing (the store would start empty): that one may go */
    for (int j = 0; j < 32; j++) snprintf(hex + 2 * j, 3, "%02x", sh[3].model_hash[j]);
    snprintf(path, sizeof path, "%s/%s/index", g_dir, hex);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, "X", 1, 20), 1);
    close(fd);
    cr_assert_eq(st_store_make_room(g_dir, 2, NULL), 0);
    cr_assert_not(st_store_exists(g_dir, &sh[3]));
    cr_assert(st_store_exists(g_dir, &sh[1]));
    snprintf(path, sizeof path, "%s/node.key", g_dir);
    cr_assert_eq(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/%064d", g_dir, 0);
    cr_assert_eq(access(path, F_OK), 0);
    free(b);
}

/* DIR/head-<hash>.dat: kept and read back; trusted only at its exact size and hash (a changed byte:
 * refused and removed; a short or long file: refused); a FIFO in its place does not block the
 * node; pruning keeps the files of the slices named and removes the others. */
Test(store, head_slice_file_is_checked_on_load) {
    enum { N = 5000 };
    uint8_t *b = malloc(N), *got = malloc(N), h[32], h2[32];
    for (int i = 0; i < N; i++) b[i] = (uint8_t)(i * 31 + 7);
    st_wire_hash(b, N, h);
    char hex[65], path[400], other[400];
    for (int j = 0; j < 32; j++) snprintf(hex + 2 * j, 3, "%02x", h[j]);
    snprintf(path, sizeof path, "%s/head-%s.dat", g_dir, hex);

    cr_assert_not(st_store_head_load(g_dir, h, got, N), "a slice loaded with no file");
    cr_assert_eq(st_store_head_save(g_dir, h, b, N), 0);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, N);
    cr_assert_eq(st.st_mode & 0777, 0600);
    memset(got, 0, N);
    cr_assert(st_store_head_load(g_dir, h, got, N));
    cr_assert_eq(memcmp(got, b, N), 0);
    /* the size the assignment names is not the file's: refused, the file stays (a new push replaces it) */
    cr_assert_not(st_store_head_load(g_dir, h, got, N - 1));
    cr_assert_eq(access(path, F_OK), 0);
    /* one byte changed: refused and removed */
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, "\x55", 1, 4321), 1);
    close(fd);
    cr_assert_not(st_store_head_load(g_dir, h, got, N), "a changed slice file was trusted");
    cr_assert_neq(access(path, F_OK), 0, "a changed slice file was kept");
    /* a FIFO where the file should be: refused at once, not a read that waits for a writer */
    cr_assert_eq(mkfifo(path, 0600), 0);
    cr_assert_not(st_store_head_load(g_dir, h, got, N));
    cr_assert_eq(unlink(path), 0);

    /* two slices' files: pruning keeps those named, removes the rest */
    cr_assert_eq(st_store_head_save(g_dir, h, b, N), 0);
    st_wire_hash(b, N / 2, h2);
    for (int j = 0; j < 32; j++) snprintf(hex + 2 * j, 3, "%02x", h2[j]);
    snprintf(other, sizeof other, "%s/head-%s.dat", g_dir, hex);
    cr_assert_eq(st_store_head_save(g_dir, h2, b, N / 2), 0);
    uint8_t keep[2][32];
    memcpy(keep[0], h, 32), memcpy(keep[1], h2, 32);
    st_store_head_prune(g_dir, (const uint8_t(*)[32])keep, 2);
    cr_assert(access(path, F_OK) == 0 && access(other, F_OK) == 0, "a slice named was removed");
    st_store_head_prune(g_dir, (const uint8_t(*)[32])keep + 1, 1);
    cr_assert_neq(access(path, F_OK), 0, "the slice no longer named was kept");
    cr_assert(st_store_head_load(g_dir, h2, got, N / 2));
    cr_assert_eq(memcmp(got, b, N / 2), 0);
    /* a directory it cannot write into: an error, nothing left behind */
    snprintf(other, sizeof other, "%s/no-such-dir", g_dir);
    cr_assert_eq(st_store_head_save(other, h, b, N), ST_EIO);
    free(b), free(got);
}
