/* file: whole-file reading by growing a buffer as fread fills it, so pipes and
 * /proc files (whose size stat cannot tell) read like regular files. */
#include "file.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

char *st_file_read(const char *path, size_t max, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    int err = 0;
    for (;;) {
        if (n + 1 >= cap) { /* room for at least one byte and the '\0' */
            const size_t want = cap ? cap * 2 : 65536;
            char *b = want > cap ? realloc(buf, want) : NULL;
            if (!b) {
                err = ENOMEM;
                break;
            }
            buf = b;
            cap = want;
        }
        const size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (max && n > max) {
            err = EFBIG;
            break;
        }
        if (r == 0) {
            if (ferror(f)) err = errno ? errno : EIO;
            break;
        }
    }
    fclose(f);
    if (err) {
        free(buf);
        errno = err;
        return NULL;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}
