/* cluster_file: the cluster file rewritten in place (see cluster_file.h). */
#include "cluster_file.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "file.h"
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

typedef struct {
    const char *url, *key;
} match_t;

static bool s_drop(const char *line, void *arg) {
    const match_t *m = arg;
    return s_matches(line, m->url, m->key);
}

/* path without the lines that match url or key (key may be NULL), and add
 * (a whole line, or NULL) at its end (st_file_rewrite_lines). The lines
 * dropped in *dropped. */
static int s_rewrite(const char *path, const char *url, const char *key, const char *add, int *dropped) {
    match_t m = {url, key};
    if (st_file_rewrite_lines(path, s_drop, &m, add, dropped) < 0)
        return st_fail(ST_EIO, "cannot rewrite the cluster file %s: %s", path, strerror(errno));
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
