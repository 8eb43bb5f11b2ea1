/* parse: strict parsing of command-line values (whole string, range checked). */
#ifndef ST_PARSE_H
#define ST_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Each returns true and stores the value when s is entirely a valid number in [lo, hi]. */
bool st_parse_int(const char *s, long lo, long hi, long *out);
bool st_parse_float(const char *s, double lo, double hi, double *out);
/* "1G", "512M", "1.5GiB", "4096" (bytes) -> bytes. */
bool st_parse_size(const char *s, uint64_t *out);

/* "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT" (both 127.0.0.1) -> host (NUL-terminated, at
 * most cap bytes with the NUL) and port 0..65535. False for anything else, a host alone too
 * ("localhost8080" has no port). */
bool st_parse_hostport(const char *s, char *host, size_t cap, int *port);

/* True for "localhost" and numeric loopback addresses (127.0.0.0/8, ::1). */
bool st_is_loopback_host(const char *host);

/* Comma-separated ints ("1,2,3") into a malloc'd array; NULL on a bad list. */
int32_t *st_parse_int_list(const char *s, long lo, long hi, int *n_out);

#endif
