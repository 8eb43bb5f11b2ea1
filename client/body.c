#include "body.h"

#include <stdlib.h>
#include <string.h>

size_t st_client_body_cb(char *p, size_t size, size_t n, void *arg) {
    char **buf = arg;
    size_t old = *buf ? strlen(*buf) : 0, add = size * n;
    char *b = realloc(*buf, old + add + 1);
    if (!b) return 0;
    memcpy(b + old, p, add);
    b[old + add] = '\0';
    *buf = b;
    return add;
}
