/* cluster_file: the cluster file rewritten in place (see cluster_file.h). */
#include "cluster_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st_log.h"

/* Whether token (n bytes) names url, with or without its "tcp://". */
static bool s_same_url(const char *token, size_t n, const char *url) {
    if (strlen(url) == n && !memcmp(token, url, n)) return true;
    return !memmem(token, n, "://", 3) && !strncmp(url, "tcp://", 6) && strlen(url + 6) == n &&
           !memcmp(token, url + 6, n);
}

/* Whether line is a node's line with url (or key, when not NULL). */
static bool s_matches(const char *line, const char *url, const char *key) {
    const char *u = line + strspn(line, " \t");
    if (*u == '#') return false; /* a comment; '#' in a key is Z85, so only a whole line */
    const size_t ul = strcspn(u, " \t\r\n");
    if (!ul) return false;
    if (s_same_url(u, ul, url)) return true;
    const char *k = u + ul + strspn(u + ul, " \t");
    const size_t kl = strcspn(k, " \t\r\n");
    return key && kl && strlen(key) == kl && !memcmp(k, key, kl);
}

/* Copies path into a temporary file without the lines that match url or key,
 * appends add (a whole line, or NULL), then renames it over path. The lines
 * dropped in *dropped. With nothing dropped nor added, path is left alone. */
static int s_rewrite(const char *path, const char *url, const char *key, const char *add, int *dropped) {
    char tmp[4200];
    *dropped = 0;
    if (snprintf(tmp, sizeof tmp, "%s.new.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return st_fail(ST_EINVAL, "cluster file path too long: %s", path);
    FILE *in = fopen(path, "r");
    if (!in && (errno != ENOENT || !add))
        return st_fail(ST_EIO, "cannot read the cluster file %s: %s", path, strerror(errno));
    struct stat st;
    const mode_t mode = in && fstat(fileno(in), &st) == 0 ? (st.st_mode & 07777) : 0644;
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!out) {
        const int rc = st_fail(ST_EIO, "cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd), unlink(tmp);
        if (in) fclose(in);
        return rc;
    }
    fchmod(fd, mode); /* the umask may have narrowed it */
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    bool ok = true;
    while (in && (n = getline(&line, &cap, in)) > 0) {
        if (s_matches(line, url, key)) {
            (*dropped)++;
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
    if (ok && !add && *dropped == 0) { /* nothing to change */
        unlink(tmp);
        return 0;
    }
    if (!ok || rename(tmp, path) != 0) {
        const int rc = st_fail(ST_EIO, "cannot rewrite the cluster file %s: %s", path, strerror(errno));
        unlink(tmp);
        *dropped = 0;
        return rc;
    }
    return 0;
}

int st_cluster_file_put(const char *path, const char *url, const char *key, const char *comment) {
    char add[1024];
    if (snprintf(add, sizeof add, "%s %s # %s\n", url, key, comment) >= (int)sizeof add)
        return st_fail(ST_EINVAL, "a cluster file line for %s is too long", url);
    int dropped;
    return s_rewrite(path, url, key, add, &dropped);
}

int st_cluster_file_drop(const char *path, const char *url) {
    int dropped;
    const int rc = s_rewrite(path, url, NULL, NULL, &dropped);
    return rc < 0 ? rc : dropped;
}
