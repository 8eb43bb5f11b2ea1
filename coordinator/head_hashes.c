/* head_hashes: the head slices' hashes and their cache file (see head_hashes.h). */
#include "head_hashes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "st_log.h"

#define HEAD_HASHES_MAGIC "STHEAD01"
#define HEAD_HASHES_MAX 256 /* entries: a few cuts of up to a few dozen slices each */
#define HEAD_KEY_BYTES (8 + ST_WIRE_HASH_BYTES + 8 * 6)
#define HEAD_ENTRY_BYTES (4 + 4 + ST_WIRE_HASH_BYTES)

typedef struct {
    uint32_t lo, hi;
    uint8_t hash[ST_WIRE_HASH_BYTES];
} entry_t;

struct st_head_hashes {
    const st_model_t *m;
    char *path;
    uint8_t key[HEAD_KEY_BYTES]; /* what the file must start with */
    entry_t *e;                  /* n, oldest first */
    int n;
    uint64_t read_bytes;
    bool dirty;
};

static void s_u64le(uint64_t v, uint8_t *out) {
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (8 * i));
}

static void s_u32le(uint32_t v, uint8_t *out) {
    for (int i = 0; i < 4; i++) out[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t s_get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* magic, model hash, file size, mtime (s, ns), head type, rows, row bytes */
static void s_key(st_head_hashes_t *h, const uint8_t model_hash[ST_WIRE_HASH_BYTES]) {
    const st_model_t *m = h->m;
    struct stat sb = {0};
    if (stat(st_gguf_path(m->gguf), &sb) != 0) memset(&sb, 0, sizeof sb);
    uint8_t *k = h->key;
    memcpy(k, HEAD_HASHES_MAGIC, 8);
    memcpy(k + 8, model_hash, ST_WIRE_HASH_BYTES);
    k += 8 + ST_WIRE_HASH_BYTES;
    s_u64le(st_gguf_file_size(m->gguf), k);
    s_u64le((uint64_t)sb.st_mtim.tv_sec, k + 8);
    s_u64le((uint64_t)sb.st_mtim.tv_nsec, k + 16);
    s_u64le((uint64_t)m->output.type, k + 24);
    s_u64le((uint64_t)m->cfg.n_vocab, k + 32);
    s_u64le((uint64_t)m->output.row_bytes, k + 40);
}

static void s_load(st_head_hashes_t *h) {
    FILE *f = h->path ? fopen(h->path, "rb") : NULL;
    if (!f) return;
    uint8_t key[HEAD_KEY_BYTES], cnt[4], rec[HEAD_ENTRY_BYTES];
    bool ok = fread(key, 1, sizeof key, f) == sizeof key && !memcmp(key, h->key, sizeof key) &&
              fread(cnt, 1, 4, f) == 4 && s_get32(cnt) <= HEAD_HASHES_MAX;
    const uint32_t n = ok ? s_get32(cnt) : 0;
    for (uint32_t i = 0; ok && i < n; i++) {
        ok = fread(rec, 1, sizeof rec, f) == sizeof rec;
        entry_t e = {s_get32(rec), s_get32(rec + 4), {0}};
        memcpy(e.hash, rec + 8, ST_WIRE_HASH_BYTES);
        ok = ok && e.lo < e.hi && e.hi <= (uint32_t)h->m->cfg.n_vocab;
        if (ok) h->e[h->n++] = e;
    }
    fclose(f);
    if (!ok) {
        h->n = 0;
        st_log(ST_LOG_DEBUG, "%s does not match the model: head slices hashed again", h->path);
    }
}

st_head_hashes_t *st_head_hashes_new(const st_model_t *m, const uint8_t model_hash[ST_WIRE_HASH_BYTES],
                                     const char *cache_path) {
    st_head_hashes_t *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->m = m;
    h->e = calloc(HEAD_HASHES_MAX, sizeof *h->e);
    h->path = cache_path ? strdup(cache_path) : NULL;
    if (!h->e || (cache_path && !h->path)) {
        st_head_hashes_destroy(&h);
        return NULL;
    }
    s_key(h, model_hash);
    s_load(h);
    return h;
}

void st_head_hashes_destroy(st_head_hashes_t **hp) {
    if (!hp || !*hp) return;
    free((*hp)->e);
    free((*hp)->path);
    free(*hp);
    *hp = NULL;
}

int st_head_hashes_get(st_head_hashes_t *h, uint32_t lo, uint32_t hi, uint8_t out[ST_WIRE_HASH_BYTES]) {
    if (lo >= hi || hi > (uint32_t)h->m->cfg.n_vocab) return ST_ERANGE;
    for (int i = 0; i < h->n; i++)
        if (h->e[i].lo == lo && h->e[i].hi == hi) {
            memcpy(out, h->e[i].hash, ST_WIRE_HASH_BYTES);
            return 0;
        }
    const size_t bytes = (size_t)(hi - lo) * h->m->output.row_bytes;
    st_wire_hash(h->m->output.data + (size_t)lo * h->m->output.row_bytes, bytes, out);
    h->read_bytes += bytes;
    if (h->n == HEAD_HASHES_MAX) { /* the oldest goes */
        memmove(h->e, h->e + 1, (size_t)(HEAD_HASHES_MAX - 1) * sizeof *h->e);
        h->n--;
    }
    h->e[h->n] = (entry_t){lo, hi, {0}};
    memcpy(h->e[h->n++].hash, out, ST_WIRE_HASH_BYTES);
    h->dirty = true;
    return 1;
}

uint64_t st_head_hashes_read_bytes(const st_head_hashes_t *h) { return h->read_bytes; }

void st_head_hashes_save(st_head_hashes_t *h) {
    if (!h->dirty || !h->path) return;
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%d", h->path, (int)getpid()) >= sizeof tmp) return;
    FILE *f = fopen(tmp, "wb");
    uint8_t cnt[4], rec[HEAD_ENTRY_BYTES];
    s_u32le((uint32_t)h->n, cnt);
    bool ok = f && fwrite(h->key, 1, sizeof h->key, f) == sizeof h->key && fwrite(cnt, 1, 4, f) == 4;
    for (int i = 0; ok && i < h->n; i++) {
        s_u32le(h->e[i].lo, rec);
        s_u32le(h->e[i].hi, rec + 4);
        memcpy(rec + 8, h->e[i].hash, ST_WIRE_HASH_BYTES);
        ok = fwrite(rec, 1, sizeof rec, f) == sizeof rec;
    }
    if (f) ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, h->path) != 0) {
        unlink(tmp);
        st_log(ST_LOG_WARN, "cannot write the head hash cache %s (the head is hashed again next time)", h->path);
        return;
    }
    h->dirty = false;
}
