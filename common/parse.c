/* Strict parsing of command-line values: numbers, sizes, HOST:PORT. */
#include "parse.h"

#include <arpa/inet.h>
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

bool st_parse_hostport(const char *s, char *host, size_t cap, int *port) {
    if (!s || !*s || cap == 0) return false;
    const char *h = s, *colon;
    size_t hl;
    if (strspn(s, "0123456789") == strlen(s)) { /* a port alone: loopback */
        h = "127.0.0.1", hl = strlen(h), colon = s - 1;
    } else if (s[0] == '[') { /* [v6]:port */
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') return false;
        h = s + 1, hl = (size_t)(end - h), colon = end + 1;
    } else {
        colon = strchr(s, ':');
        if (!colon || strchr(colon + 1, ':')) return false; /* no port, or a bare v6 address */
        hl = (size_t)(colon - s);
        if (hl == 0) h = "127.0.0.1", hl = strlen(h);
    }
    if (hl == 0 || hl >= cap) return false;
    long p;
    if (strspn(colon + 1, "0123456789") != strlen(colon + 1) || !st_parse_int(colon + 1, 0, 65535, &p)) return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return true;
}

bool st_is_loopback_host(const char *host) {
    struct in_addr a4;
    struct in6_addr a6;
    if (!strcmp(host, "localhost")) return true;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}
