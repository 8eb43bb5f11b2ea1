/* Logging to stderr. Level from st_log_set_level() or the ST_LOG environment
 * variable; one fprintf per line so lines from threads do not interleave.
 * A line reads "st-node: error: cannot listen on ...": the program first (the
 * processes of a cluster share terminals and journals), then the level; the
 * function that logged it only at debug level (-v), where it helps a developer
 * and would only puzzle a user. */
#include "st_log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEVEL_UNSET (-100) /* not -1: a level below ST_LOG_ERROR is a setting too (nothing logged) */
static int s_level = LEVEL_UNSET;

static void s_init_level(void) {
    if (s_level != LEVEL_UNSET) return;
    const char *env = getenv("ST_LOG");
    s_level = ST_LOG_INFO;
    if (!env) return;
    if (!strcmp(env, "error"))
        s_level = ST_LOG_ERROR;
    else if (!strcmp(env, "warn"))
        s_level = ST_LOG_WARN;
    else if (!strcmp(env, "debug"))
        s_level = ST_LOG_DEBUG;
}

void st_log_set_level(st_log_level_t level) { s_level = (int)level; }

st_log_level_t st_log_get_level(void) {
    s_init_level();
    return (st_log_level_t)s_level;
}

static void s_vlog(st_log_level_t level, const char *func, const char *fmt, va_list ap) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[1024];
    int n = s_level >= ST_LOG_DEBUG
                ? snprintf(line, sizeof line, "%s: %s: %s: ", program_invocation_short_name, names[level], func)
                : snprintf(line, sizeof line, "%s: %s: ", program_invocation_short_name, names[level]);
    if (n < 0 || (size_t)n >= sizeof line) n = 0;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    fprintf(stderr, "%s\n", line);
}

void st_log_at(st_log_level_t level, const char *func, const char *fmt, ...) {
    if ((int)level > (int)st_log_get_level()) return;
    va_list ap;
    va_start(ap, fmt);
    s_vlog(level, func, fmt, ap);
    va_end(ap);
}

int st_fail_at(int code, const char *func, const char *fmt, ...) {
    if ((int)st_log_get_level() >= ST_LOG_ERROR) { /* an int: the enum may be unsigned, and -1 silences */
        va_list ap;
        va_start(ap, fmt);
        s_vlog(ST_LOG_ERROR, func, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *st_strerror(int code) {
    switch (code) {
    case ST_OK: return "ok";
    case ST_EINVAL: return "invalid argument";
    case ST_ENOMEM: return "out of memory";
    case ST_EIO: return "i/o error";
    case ST_EFORMAT: return "malformed input";
    case ST_EUNSUP: return "unsupported";
    case ST_EPROTO: return "protocol error";
    case ST_ETIMEOUT: return "timed out";
    case ST_ERANGE: return "out of range";
    case ST_EAUTH: return "authentication failed";
    default: return "unknown error";
    }
}
