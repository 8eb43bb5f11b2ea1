/* file: whole-file reading by growing a buffer as fread fills it, so pipes and
 * /proc files (whose size stat cannot tell) read like regular files; line
 * files rewritten through a temporary file and a rename. */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

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

int st_file_rewrite_lines(const char *path, bool (*drop)(const char *line, void *arg), void *arg, const char *add,
                          int *dropped) {
    char tmp[4200];
    int n_dropped = 0;
    if (dropped) *dropped = 0;
    if (snprintf(tmp, sizeof tmp, "%s.new.%d", path, (int)getpid()) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    FILE *in = fopen(path, "r");
    if (!in && (errno != ENOENT || !add)) return -1;
    struct stat st;
    const mode_t mode = in && fstat(fileno(in), &st) == 0 ? (st.st_mode & 07777) : 0644;
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        const int err = errno;
        if (fd >= 0) close(fd), unlink(tmp);
        if (in) fclose(in);
        errno = err;
        return -1;
    }
    fchmod(fd, mode); /* the umask may have narrowed it */
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    bool ok = true;
    while (in && (n = getline(&line, &cap, in)) > 0) {
        if (drop && drop(line, arg)) {
            n_dropped++;
            continue;
        }
        ok &= fwrite(line, 1, (size_t)n, out) == (size_t)n;
        if (line[n - 1] != '\n') ok &= fputc('\n', out) != EOF;
    }
    ok &= !in || !ferror(in);
    free(line);
    if (in) fclose(in);
    if (add) ok &= fputs(add, out) != EOF;
    ok &= fflush(out) == 0 && fsync(fileno(out)) == 0;
    ok &= fclose(out) == 0;
    if (ok && !add && n_dropped == 0) { /* nothing to change */
        unlink(tmp);
        return 0;
    }
    if (!ok || rename(tmp, path) != 0) {
        const int err = errno ? errno : EIO;
        unlink(tmp);
        errno = err;
        return -1;
    }
    if (dropped) *dropped = n_dropped;
    return 0;
}
