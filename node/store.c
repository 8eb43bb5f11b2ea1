/* store: experts on disk with an atomically replaced index (see store.h).
 *
 * Index file layout (all integers little-endian):
 *   "STSTORE2"                                  8 B magic
 *   n_layer n_embd n_ff_exp n_expert n_expert_used transposed   6 x u32
 *   max_expert_bytes record_bytes              2 x u64
 *   types_hash                                  32 B: BLAKE2b-256 of the n_layer gate,
 *                                               then up, then down type ids (1 B each)
 *   model_hash                                  32 B
 *   count                                       u32
 *   count x { layer u32, expert u32, slot u32, hash 32 B }
 *   BLAKE2b-256 of everything above             32 B
 * Record `slot` of experts.dat starts at slot * record_bytes. Experts of
 * different layers may differ in size (per-layer types): a record fits the
 * largest, and holds st_wire_expert_bytes(shape, layer) bytes of its expert.
 *
 * Chunks of an expert are hash-checked, written in place into a free record
 * and hashed incrementally; when the expert is whole its hash is compared
 * with the assignment's, the data file is synced and dropped from the page
 * cache, then the index is rewritten. Reads use O_DIRECT where the file
 * system allows it, else a normal read followed by POSIX_FADV_DONTNEED, so
 * store traffic does not count against the node's memory.
 *
 * Model directories are named by the model hash in hex; their modification
 * time says when they were last used (set at every open, and by every index
 * rename), which orders them for st_store_make_room.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "st_log.h"

#define ST_STORE_ALIGN 4096
#define ST_STORE_MAX_INFLIGHT 16
#define ST_STORE_HDR (8 + 6 * 4 + 2 * 8 + 2 * ST_WIRE_HASH_BYTES + 4)
#define ST_STORE_ENTRY (3 * 4 + ST_WIRE_HASH_BYTES)

typedef struct {
    bool used;
    uint32_t key, slot;
    uint64_t next; /* bytes received */
    uint8_t want[ST_WIRE_HASH_BYTES];
    crypto_generichash_state hs;
} inflight_t;

struct st_store {
    st_wire_shape_t shape;
    char dir[PATH_MAX];
    int fd, fd_direct; /* fd_direct: O_DIRECT reads, or -1 */
    size_t rec;
    uint32_t n_keys, n_slots;
    int32_t *slot_of;                    /* per key: record, or -1 */
    uint8_t (*hash)[ST_WIRE_HASH_BYTES]; /* per key */
    uint8_t *slot_busy;                  /* per record: held or being written */
    int count;
    inflight_t inflight[ST_STORE_MAX_INFLIGHT];
    void *stage; /* one aligned record, for verification at open */
};

/* ---- little-endian helpers ---- */
static void s_put32(uint8_t **p, uint32_t v) {
    for (int i = 0; i < 4; i++) *(*p)++ = (uint8_t)(v >> (8 * i));
}
static void s_put64(uint8_t **p, uint64_t v) {
    for (int i = 0; i < 8; i++) *(*p)++ = (uint8_t)(v >> (8 * i));
}
static uint32_t s_get32(const uint8_t **p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)(*p)[i] << (8 * i);
    *p += 4;
    return v;
}
static uint64_t s_get64(const uint8_t **p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)(*p)[i] << (8 * i);
    *p += 8;
    return v;
}

static int s_mkdir(const char *path) {
    if (mkdir(path, 0755) && errno != EEXIST) return st_fail(ST_EIO, "mkdir %s: %s", path, strerror(errno));
    return 0;
}

static int s_pwrite_all(int fd, const void *buf, size_t n, off_t off) {
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, n -= (size_t)w, off += w;
    }
    return 0;
}

/* reads up to n bytes; returns bytes read or -1 */
static ssize_t s_pread_all(int fd, void *buf, size_t n, off_t off) {
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* bytes of the expert stored under key */
static uint64_t s_key_bytes(const st_store_t *s, uint32_t key) {
    return st_wire_expert_bytes(&s->shape, key / s->shape.n_expert);
}

/* BLAKE2b-256 of the shape's per-layer type ids */
static void s_types_hash(const st_wire_shape_t *h, uint8_t out[ST_WIRE_HASH_BYTES]) {
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, ST_WIRE_HASH_BYTES);
    crypto_generichash_update(&st, h->gate_type, h->n_layer);
    crypto_generichash_update(&st, h->up_type, h->n_layer);
    crypto_generichash_update(&st, h->down_type, h->n_layer);
    crypto_generichash_final(&st, out, ST_WIRE_HASH_BYTES);
}

static void s_index_path(const st_store_t *s, char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", s->dir, name);
}

/* DIR/<model hash in hex> into out */
static int s_model_dir(const char *dir, const uint8_t hash[ST_WIRE_HASH_BYTES], char *out, size_t cap) {
    char hex[2 * ST_WIRE_HASH_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, hash, ST_WIRE_HASH_BYTES);
    if ((size_t)snprintf(out, cap, "%s/%s", dir, hex) >= cap) return st_fail(ST_EINVAL, "store path too long");
    return 0;
}

/* ---- index ---- */

static int s_write_index(st_store_t *s) {
    size_t n = ST_STORE_HDR + (size_t)s->count * ST_STORE_ENTRY + ST_WIRE_HASH_BYTES;
    uint8_t *buf = malloc(n), *p = buf;
    if (!buf) return st_fail(ST_ENOMEM, "index of %zu B", n);
    memcpy(p, "STSTORE2", 8), p += 8;
    const st_wire_shape_t *h = &s->shape;
    uint32_t f[6] = {h->n_layer, h->n_embd, h->n_ff_exp, h->n_expert, h->n_expert_used, h->down_transposed};
    for (int i = 0; i < 6; i++) s_put32(&p, f[i]);
    s_put64(&p, st_wire_max_expert_bytes(h));
    s_put64(&p, s->rec);
    s_types_hash(h, p), p += ST_WIRE_HASH_BYTES;
    memcpy(p, h->model_hash, ST_WIRE_HASH_BYTES), p += ST_WIRE_HASH_BYTES;
    s_put32(&p, (uint32_t)s->count);
    for (uint32_t k = 0; k < s->n_keys; k++) {
        if (s->slot_of[k] < 0) continue;
        s_put32(&p, k / h->n_expert);
        s_put32(&p, k % h->n_expert);
        s_put32(&p, (uint32_t)s->slot_of[k]);
        memcpy(p, s->hash[k], ST_WIRE_HASH_BYTES), p += ST_WIRE_HASH_BYTES;
    }
    crypto_generichash(p, ST_WIRE_HASH_BYTES, buf, (size_t)(p - buf), NULL, 0);
    char tmp[PATH_MAX + 16], final[PATH_MAX + 16];
    s_index_path(s, tmp, sizeof tmp, "index.tmp");
    s_index_path(s, final, sizeof final, "index");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;
    if (fd < 0 || s_pwrite_all(fd, buf, n, 0) || fsync(fd)) rc = st_fail(ST_EIO, "%s: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    free(buf);
    if (!rc && rename(tmp, final)) rc = st_fail(ST_EIO, "rename %s: %s", tmp, strerror(errno));
    if (!rc) { /* make the rename durable */
        int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return rc;
}

/* Loads the index if there is one; any inconsistency drops it whole (logged). */
static void s_read_index(st_store_t *s) {
    char path[PATH_MAX + 16];
    s_index_path(s, path, sizeof path, "index");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return; /* a new store */
    struct stat stt;
    const size_t max = ST_STORE_HDR + (size_t)s->n_keys * ST_STORE_ENTRY + ST_WIRE_HASH_BYTES;
    uint8_t *buf = NULL;
    const char *bad = NULL;
    if (fstat(fd, &stt) || stt.st_size < (off_t)(ST_STORE_HDR + ST_WIRE_HASH_BYTES) || (size_t)stt.st_size > max) {
        bad = "size";
        goto out;
    }
    size_t n = (size_t)stt.st_size;
    buf = malloc(n);
    if (!buf || s_pread_all(fd, buf, n, 0) != (ssize_t)n) {
        bad = "read";
        goto out;
    }
    uint8_t sum[ST_WIRE_HASH_BYTES];
    crypto_generichash(sum, sizeof sum, buf, n - ST_WIRE_HASH_BYTES, NULL, 0);
    if (sodium_memcmp(sum, buf + n - ST_WIRE_HASH_BYTES, sizeof sum)) {
        bad = "checksum";
        goto out;
    }
    const uint8_t *p = buf;
    if (memcmp(p, "STSTORE2", 8)) {
        bad = "magic";
        goto out;
    }
    p += 8;
    const st_wire_shape_t *h = &s->shape;
    uint32_t f[6];
    for (int i = 0; i < 6; i++) f[i] = s_get32(&p);
    uint64_t eb = s_get64(&p), rec = s_get64(&p);
    uint8_t th[ST_WIRE_HASH_BYTES];
    s_types_hash(h, th);
    if (f[0] != h->n_layer || f[1] != h->n_embd || f[2] != h->n_ff_exp || f[3] != h->n_expert ||
        f[4] != h->n_expert_used || f[5] != (uint32_t)h->down_transposed || eb != st_wire_max_expert_bytes(h) ||
        rec != s->rec || memcmp(p, th, ST_WIRE_HASH_BYTES) ||
        memcmp(p + ST_WIRE_HASH_BYTES, h->model_hash, ST_WIRE_HASH_BYTES)) {
        bad = "shape";
        goto out;
    }
    p += 2 * ST_WIRE_HASH_BYTES;
    uint32_t count = s_get32(&p);
    if (count > s->n_keys || n != ST_STORE_HDR + (size_t)count * ST_STORE_ENTRY + ST_WIRE_HASH_BYTES) {
        bad = "count";
        goto out;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint32_t layer = s_get32(&p), expert = s_get32(&p), slot = s_get32(&p);
        if (layer >= h->n_layer || expert >= h->n_expert || slot >= s->n_slots) {
            bad = "entry";
            break;
        }
        uint32_t k = layer * h->n_expert + expert;
        if (s->slot_of[k] >= 0 || s->slot_busy[slot]) {
            bad = "duplicate entry";
            break;
        }
        s->slot_of[k] = (int32_t)slot;
        s->slot_busy[slot] = 1;
        memcpy(s->hash[k], p, ST_WIRE_HASH_BYTES);
        p += ST_WIRE_HASH_BYTES;
        s->count++;
    }
out:
    if (bad) {
        st_log(ST_LOG_WARN, "%s: bad index (%s): starting empty", path, bad);
        for (uint32_t k = 0; k < s->n_keys; k++) s->slot_of[k] = -1;
        memset(s->slot_busy, 0, s->n_slots);
        s->count = 0;
    }
    free(buf);
    close(fd);
}

/* ---- records ---- */

static void s_drop_cache(const st_store_t *s, uint32_t slot) {
    posix_fadvise(s->fd, (off_t)slot * (off_t)s->rec, (off_t)s->rec, POSIX_FADV_DONTNEED);
}

/* reads the record of key (held) into buf (aligned, rec bytes); 0 or -1 */
static int s_read_record(st_store_t *s, uint32_t key, void *buf) {
    const uint32_t slot = (uint32_t)s->slot_of[key];
    const ssize_t eb = (ssize_t)s_key_bytes(s, key);
    const off_t off = (off_t)slot * (off_t)s->rec;
    if (s->fd_direct >= 0) {
        ssize_t r = s_pread_all(s->fd_direct, buf, s->rec, off);
        if (r >= eb) return 0;
        if (r < 0 && errno != EINVAL) return -1;
        /* this file system refuses O_DIRECT after all: read normally from now on */
        close(s->fd_direct);
        s->fd_direct = -1;
    }
    ssize_t r = s_pread_all(s->fd, buf, (size_t)eb, off);
    s_drop_cache(s, slot);
    return r == eb ? 0 : -1;
}

static bool s_record_ok(st_store_t *s, uint32_t key, const void *buf) {
    uint8_t h[ST_WIRE_HASH_BYTES];
    crypto_generichash(h, sizeof h, buf, s_key_bytes(s, key), NULL, 0);
    return sodium_memcmp(h, s->hash[key], sizeof h) == 0;
}

static void s_forget(st_store_t *s, uint32_t key) {
    if (s->slot_of[key] < 0) return;
    s->slot_busy[s->slot_of[key]] = 0;
    s->slot_of[key] = -1;
    s->count--;
}

st_store_t *st_store_open(const char *dir, const st_wire_shape_t *shape) {
    char why[256];
    if (st_wire_check_shape(shape, why, sizeof why)) {
        st_fail(ST_EINVAL, "bad shape: %s", why);
        return NULL;
    }
    st_store_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->fd = s->fd_direct = -1;
    s->shape = *shape;
    s->rec = st_store_record_bytes_for(shape);
    s->n_keys = shape->n_layer * shape->n_expert;
    s->n_slots = s->n_keys + ST_STORE_MAX_INFLIGHT;
    s->slot_of = malloc(s->n_keys * sizeof *s->slot_of);
    s->hash = calloc(s->n_keys, sizeof *s->hash);
    s->slot_busy = calloc(s->n_slots, 1);
    if (!s->slot_of || !s->hash || !s->slot_busy || posix_memalign(&s->stage, ST_STORE_ALIGN, s->rec)) {
        s->stage = NULL;
        st_fail(ST_ENOMEM, "store of %u experts", s->n_keys);
        goto fail;
    }
    for (uint32_t k = 0; k < s->n_keys; k++) s->slot_of[k] = -1;
    if (s_model_dir(dir, shape->model_hash, s->dir, sizeof s->dir) || s_mkdir(dir) || s_mkdir(s->dir)) goto fail;
    utimensat(AT_FDCWD, s->dir, NULL, 0); /* used now (the order of st_store_make_room) */
    char path[PATH_MAX + 16];
    s_index_path(s, path, sizeof path, "experts.dat");
    s->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        st_fail(ST_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    s->fd_direct = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    s_read_index(s);
    /* verify every record before it is announced */
    int dropped = 0;
    for (uint32_t k = 0; k < s->n_keys; k++) {
        if (s->slot_of[k] < 0) continue;
        if (s_read_record(s, k, s->stage) || !s_record_ok(s, k, s->stage)) {
            st_log(ST_LOG_WARN, "expert %u.%u in %s does not match its hash: dropped", k / shape->n_expert,
                   k % shape->n_expert, s->dir);
            s_forget(s, k);
            dropped++;
        }
    }
    if (dropped && s_write_index(s)) goto fail;
    st_log(ST_LOG_INFO, "store %s: %d experts verified%s", s->dir, s->count, dropped ? ", some dropped" : "");
    return s;
fail:
    st_store_close(&s);
    return NULL;
}

void st_store_close(st_store_t **sp) {
    if (!sp || !*sp) return;
    st_store_t *s = *sp;
    if (s->fd >= 0) close(s->fd);
    if (s->fd_direct >= 0) close(s->fd_direct);
    free(s->slot_of);
    free(s->hash);
    free(s->slot_busy);
    free(s->stage);
    free(s);
    *sp = NULL;
}

bool st_store_exists(const char *dir, const st_wire_shape_t *shape) {
    char path[PATH_MAX];
    struct stat st;
    return !s_model_dir(dir, shape->model_hash, path, sizeof path) && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---- the model directories under a store root ---- */

typedef struct {
    char name[2 * ST_WIRE_HASH_BYTES + 1];
    struct timespec used;
    bool empty; /* no expert listed by a valid index */
} model_dir_t;

static bool s_is_model_name(const char *name) {
    size_t i = 0;
    for (; name[i]; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f'))) return false;
    return i == 2 * ST_WIRE_HASH_BYTES;
}

/* Experts a model directory's index lists: 0 without a valid index (opening
 * that store would start empty too). Checks the size, magic and checksum only. */
static uint32_t s_index_count(const char *mdir) {
    char path[PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/index", mdir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    struct stat st;
    uint32_t count = 0;
    uint8_t *buf = NULL;
    const size_t min = ST_STORE_HDR + ST_WIRE_HASH_BYTES;
    if (fstat(fd, &st) || st.st_size < (off_t)min || st.st_size > (off_t)(64u << 20)) goto out;
    const size_t n = (size_t)st.st_size;
    uint8_t sum[ST_WIRE_HASH_BYTES];
    if (!(buf = malloc(n)) || s_pread_all(fd, buf, n, 0) != (ssize_t)n) goto out;
    crypto_generichash(sum, sizeof sum, buf, n - ST_WIRE_HASH_BYTES, NULL, 0);
    if (sodium_memcmp(sum, buf + n - ST_WIRE_HASH_BYTES, sizeof sum) || memcmp(buf, "STSTORE2", 8)) goto out;
    const uint8_t *p = buf + ST_STORE_HDR - 4;
    count = s_get32(&p);
    if (n != min + (size_t)count * ST_STORE_ENTRY) count = 0;
out:
    free(buf);
    close(fd);
    return count;
}

/* Removes a model directory and the files a store makes in it; 0 or -1 (logged). */
static int s_remove_model_dir(const char *dir, const char *name) {
    static const char *const files[] = {"index", "index.tmp", "experts.dat"};
    char path[PATH_MAX + 96];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s/%s", dir, name, files[i]);
        if (unlink(path) && errno != ENOENT) goto fail;
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!rmdir(path)) return 0;
fail:
    st_log(ST_LOG_WARN, "cannot remove %s: %s", path, strerror(errno));
    return -1;
}

static int s_by_use(const void *a, const void *b) {
    const model_dir_t *x = a, *y = b;
    if (x->used.tv_sec != y->used.tv_sec) return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
    if (x->used.tv_nsec != y->used.tv_nsec) return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
    return strcmp(x->name, y->name);
}

int st_store_make_room(const char *dir, int max_models, const uint8_t *keep) {
    if (max_models < 1) return st_fail(ST_EINVAL, "at most %d models", max_models);
    char keep_hex[2 * ST_WIRE_HASH_BYTES + 1] = "";
    if (keep) sodium_bin2hex(keep_hex, sizeof keep_hex, keep, ST_WIRE_HASH_BYTES);
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : st_fail(ST_EIO, "%s: %s", dir, strerror(errno));
    model_dir_t *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    const struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX + 96];
        struct stat st;
        if (!s_is_model_name(e->d_name)) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (lstat(path, &st) || !S_ISDIR(st.st_mode)) continue;
        if (n == cap) {
            model_dir_t *w = realloc(v, (cap = cap ? 2 * cap : 16) * sizeof *v);
            if (!w) {
                rc = st_fail(ST_ENOMEM, "list of model directories");
                break;
            }
            v = w;
        }
        memcpy(v[n].name, e->d_name, sizeof v[n].name);
        v[n].used = st.st_mtim;
        v[n].empty = s_index_count(path) == 0;
        n++;
    }
    closedir(d);
    if (rc) {
        free(v);
        return rc;
    }
    if (n > 1) qsort(v, n, sizeof *v, s_by_use); /* least recently used first (qsort of NULL is UB, even for 0) */
    size_t have = n;
    for (size_t i = 0; i < n && have >= (size_t)max_models; i++) {
        if (!v[i].empty || !strcmp(v[i].name, keep_hex) || s_remove_model_dir(dir, v[i].name)) continue;
        have--;
        st_log(ST_LOG_INFO, "removed the empty store of model %.16s... (least recently used) to keep at most %d models",
               v[i].name, max_models);
    }
    free(v);
    if (have >= (size_t)max_models)
        return st_fail(ST_ERANGE, "%s holds %zu model stores with experts or in use, the most kept (%d)", dir, have,
                       max_models);
    return 0;
}

const st_wire_shape_t *st_store_shape(const st_store_t *s) { return &s->shape; }
size_t st_store_record_bytes(const st_store_t *s) { return s->rec; }
size_t st_store_mem_bytes(const st_store_t *s) { return st_store_mem_bytes_for(&s->shape); }

size_t st_store_record_bytes_for(const st_wire_shape_t *shape) {
    return (size_t)((st_wire_max_expert_bytes(shape) + ST_STORE_ALIGN - 1) / ST_STORE_ALIGN * ST_STORE_ALIGN);
}

size_t st_store_mem_bytes_for(const st_wire_shape_t *shape) { /* as st_store_open sizes them */
    const size_t n_keys = (size_t)shape->n_layer * shape->n_expert;
    return sizeof(st_store_t) + n_keys * (sizeof(int32_t) + ST_WIRE_HASH_BYTES) + n_keys + ST_STORE_MAX_INFLIGHT +
           st_store_record_bytes_for(shape);
}

uint64_t st_store_free_bytes(const st_store_t *s) {
    struct statvfs v;
    if (fstatvfs(s->fd, &v)) return 0;
    return (uint64_t)v.f_bavail * v.f_frsize;
}

int st_store_count(const st_store_t *s) { return s->count; }

int st_store_list(const st_store_t *s, st_wire_ref_t *out, int cap) {
    int n = 0;
    for (uint32_t k = 0; k < s->n_keys; k++) {
        if (s->slot_of[k] < 0) continue;
        if (n < cap) {
            out[n] = (st_wire_ref_t){.layer = k / s->shape.n_expert, .expert = k % s->shape.n_expert, .has_hash = true};
            memcpy(out[n].hash, s->hash[k], ST_WIRE_HASH_BYTES);
        }
        n++;
    }
    return n;
}

static bool s_key(const st_store_t *s, uint32_t layer, uint32_t expert, uint32_t *key) {
    if (layer >= s->shape.n_layer || expert >= s->shape.n_expert) return false;
    *key = layer * s->shape.n_expert + expert;
    return true;
}

const uint8_t *st_store_hash(const st_store_t *s, uint32_t layer, uint32_t expert) {
    uint32_t k;
    return s_key(s, layer, expert, &k) && s->slot_of[k] >= 0 ? s->hash[k] : NULL;
}

static int s_free_slot(const st_store_t *s) {
    for (uint32_t i = 0; i < s->n_slots; i++)
        if (!s->slot_busy[i]) return (int)i;
    return -1;
}

static void s_abandon(st_store_t *s, inflight_t *f) {
    s->slot_busy[f->slot] = 0;
    f->used = false;
}

int st_store_put(st_store_t *s, uint32_t layer, uint32_t expert, const uint8_t want[ST_WIRE_HASH_BYTES],
                 uint64_t offset, const void *data, size_t len, const uint8_t chunk_hash[ST_WIRE_HASH_BYTES],
                 bool *complete) {
    *complete = false;
    uint32_t key;
    if (!s_key(s, layer, expert, &key)) return st_fail(ST_ERANGE, "expert %u.%u outside the model", layer, expert);
    const uint64_t eb = s_key_bytes(s, key);
    if (len == 0 || offset > eb || len > eb - offset)
        return st_fail(ST_ERANGE, "chunk [%llu, +%zu) of a %llu B expert", (unsigned long long)offset, len,
                       (unsigned long long)eb);
    /* 1. the chunk must be what the coordinator hashed */
    uint8_t h[ST_WIRE_HASH_BYTES];
    crypto_generichash(h, sizeof h, data, len, NULL, 0);
    if (sodium_memcmp(h, chunk_hash, sizeof h))
        return st_fail(ST_EPROTO, "expert %u.%u: chunk at %llu does not match its hash", layer, expert,
                       (unsigned long long)offset);
    /* 2. find or start the expert's transfer */
    inflight_t *f = NULL, *free_f = NULL;
    for (int i = 0; i < ST_STORE_MAX_INFLIGHT; i++) {
        if (s->inflight[i].used && s->inflight[i].key == key)
            f = &s->inflight[i];
        else if (!s->inflight[i].used && !free_f)
            free_f = &s->inflight[i];
    }
    if (offset == 0) {
        if (!f) {
            int slot = s_free_slot(s);
            if (!free_f || slot < 0) return st_fail(ST_ENOMEM, "%d experts already in transfer", ST_STORE_MAX_INFLIGHT);
            f = free_f;
            f->used = true;
            f->key = key;
            f->slot = (uint32_t)slot;
            s->slot_busy[slot] = 1;
        }
        f->next = 0;
        memcpy(f->want, want, ST_WIRE_HASH_BYTES);
        crypto_generichash_init(&f->hs, NULL, 0, ST_WIRE_HASH_BYTES);
    } else if (!f || f->next != offset || sodium_memcmp(f->want, want, ST_WIRE_HASH_BYTES)) {
        return st_fail(ST_EPROTO, "expert %u.%u: chunk at %llu out of order (expected %llu)", layer, expert,
                       (unsigned long long)offset, f ? (unsigned long long)f->next : 0ull);
    }
    /* 3. write in place, hash incrementally */
    const off_t base = (off_t)f->slot * (off_t)s->rec;
    if (s_pwrite_all(s->fd, data, len, base + (off_t)offset)) {
        int rc = st_fail(ST_EIO, "write to the store: %s", strerror(errno));
        s_abandon(s, f);
        return rc;
    }
    crypto_generichash_update(&f->hs, data, len);
    f->next += len;
    if (f->next < eb) return 0;
    /* 4. whole: verify against the assignment, make durable, then index */
    crypto_generichash_final(&f->hs, h, sizeof h);
    if (sodium_memcmp(h, f->want, sizeof h)) {
        s_abandon(s, f);
        return st_fail(ST_EPROTO, "expert %u.%u: whole-expert hash does not match the assignment: discarded", layer,
                       expert);
    }
    struct stat st;
    const off_t end = base + (off_t)s->rec;
    if ((fstat(s->fd, &st) == 0 && st.st_size < end && ftruncate(s->fd, end)) || fdatasync(s->fd)) {
        int rc = st_fail(ST_EIO, "sync of the store: %s", strerror(errno));
        s_abandon(s, f);
        return rc;
    }
    s_drop_cache(s, f->slot);
    const int32_t old_slot = s->slot_of[key];
    uint8_t old_hash[ST_WIRE_HASH_BYTES];
    memcpy(old_hash, s->hash[key], sizeof old_hash);
    if (old_slot >= 0) s->count--;
    s->slot_of[key] = (int32_t)f->slot;
    memcpy(s->hash[key], h, sizeof h);
    s->count++;
    f->used = false;
    int rc = s_write_index(s);
    if (rc) { /* keep the old version */
        s->slot_busy[f->slot] = 0;
        s->slot_of[key] = old_slot;
        memcpy(s->hash[key], old_hash, sizeof old_hash);
        if (old_slot < 0) s->count--;
        return rc;
    }
    if (old_slot >= 0) s->slot_busy[old_slot] = 0;
    *complete = true;
    return 0;
}

int st_store_read(st_store_t *s, uint32_t layer, uint32_t expert, void *buf) {
    uint32_t key;
    if (!s_key(s, layer, expert, &key) || s->slot_of[key] < 0)
        return st_fail(ST_ERANGE, "expert %u.%u is not in the store", layer, expert);
    if (s_read_record(s, key, buf)) return st_fail(ST_EIO, "read of expert %u.%u: %s", layer, expert, strerror(errno));
    if (!s_record_ok(s, key, buf)) {
        s_forget(s, key);
        s_write_index(s);
        return st_fail(ST_EFORMAT, "expert %u.%u changed on disk: dropped from the store", layer, expert);
    }
    return 0;
}

int st_store_remove(st_store_t *s, uint32_t layer, uint32_t expert) {
    uint32_t key;
    if (!s_key(s, layer, expert, &key) || s->slot_of[key] < 0) return ST_ERANGE;
    s_forget(s, key);
    return s_write_index(s);
}

/* ---- slices of the output head ---- */

static void s_head_name(const uint8_t hash[ST_WIRE_HASH_BYTES], char out[2 * ST_WIRE_HASH_BYTES + 10]) {
    char hex[2 * ST_WIRE_HASH_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, hash, ST_WIRE_HASH_BYTES);
    snprintf(out, 2 * ST_WIRE_HASH_BYTES + 10, "head-%s.dat", hex);
}

bool st_store_head_load(const char *dir, const uint8_t hash[ST_WIRE_HASH_BYTES], void *buf, uint64_t bytes) {
    char name[2 * ST_WIRE_HASH_BYTES + 10], path[PATH_MAX];
    s_head_name(hash, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO there must not block the node */
    if (fd < 0) return false;
    struct stat st;
    bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == bytes;
    for (uint64_t got = 0; ok && got < bytes;) {
        ssize_t r = read(fd, (uint8_t *)buf + got, bytes - got);
        if (r <= 0) ok = false;
        got += r > 0 ? (uint64_t)r : 0;
    }
    close(fd);
    uint8_t h[ST_WIRE_HASH_BYTES];
    if (ok) st_wire_hash(buf, bytes, h);
    if (ok && memcmp(h, hash, ST_WIRE_HASH_BYTES)) {
        st_log(ST_LOG_WARN, "%s does not match its hash: removed", path);
        unlink(path);
        ok = false;
    }
    return ok;
}

int st_store_head_save(const char *dir, const uint8_t hash[ST_WIRE_HASH_BYTES], const void *buf, uint64_t bytes) {
    char name[2 * ST_WIRE_HASH_BYTES + 10], path[PATH_MAX], tmp[PATH_MAX + 8];
    s_head_name(hash, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0;
    for (uint64_t put = 0; ok && put < bytes;) {
        ssize_t w = write(fd, (const uint8_t *)buf + put, bytes - put);
        if (w <= 0) ok = false;
        put += w > 0 ? (uint64_t)w : 0;
    }
    if (fd >= 0) { /* closed whatever fsync says */
        ok &= fsync(fd) == 0;
        ok &= close(fd) == 0;
    }
    if (!ok || rename(tmp, path)) {
        st_log(ST_LOG_WARN, "cannot keep the head slice in %s: %s (it stays in RAM)", path, strerror(errno));
        unlink(tmp);
        return ST_EIO;
    }
    return 0;
}

void st_store_head_prune(const char *dir, const uint8_t (*keep)[ST_WIRE_HASH_BYTES], int n_keep) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        const size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "head-", 5) || len < 9 || strcmp(e->d_name + len - 4, ".dat")) continue;
        bool kept = false;
        for (int k = 0; k < n_keep && !kept; k++) {
            char name[2 * ST_WIRE_HASH_BYTES + 10];
            s_head_name(keep[k], name);
            kept = !strcmp(e->d_name, name);
        }
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (!kept) unlink(path);
    }
    if (d) closedir(d);
}
