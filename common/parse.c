/* Strict number parsing for command-line flags. */
#include "parse.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool st_parse_int(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool st_parse_float(const char *s, double lo, double hi, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool st_parse_size(const char *s, uint64_t *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0) return false;
    double mul = 1;
    if (*end) {
        switch (*end) {
        case 'k':
        case 'K': mul = 1024.0; break;
        case 'm':
        case 'M': mul = 1024.0 * 1024; break;
        case 'g':
        case 'G': mul = 1024.0 * 1024 * 1024; break;
        case 't':
        case 'T': mul = 1024.0 * 1024 * 1024 * 1024; break;
        default: return false;
        }
        end++;
        if (*end && strcasecmp(end, "iB") && strcasecmp(end, "B")) return false;
    }
    double b = v * mul;
    if (b > 1.8e19) return false;
    *out = (uint64_t)b;
    return true;
}

int32_t *st_parse_int_list(const char *s, long lo, long hi, int *n_out) {
    if (!s || !*s) return NULL;
    int n = 1;
    for (const char *p = s; *p; p++) n += *p == ',';
    int32_t *v = malloc((size_t)n * sizeof *v);
    char *copy = strdup(s);
    if (!v || !copy) goto fail;
    int i = 0;
    for (char *save, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        long x;
        if (i >= n || !st_parse_int(tok, lo, hi, &x)) goto fail;
        v[i++] = (int32_t)x;
    }
    if (i != n) goto fail; /* empty element such as "1,,2" */
    free(copy);
    *n_out = n;
    return v;
fail:
    free(v);
    free(copy);
    return NULL;
}
