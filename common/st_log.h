/* st_log: one-line logging to stderr and the project's error codes.
 *
 * Every fallible function returns 0 or a negative ST_E* code and logs one
 * line; st_fail() does both in one statement:
 *     return st_fail(ST_EFORMAT, "tensor %s: bad offset", name);
 * A line is "PROGRAM: LEVEL: message", with the calling function's name after
 * the level at debug level (-v, ST_LOG=debug). Write messages a user can act
 * on ("cannot open GGUF file X: No such file or directory"); the program name
 * and the level come first by themselves.
 */
#ifndef ST_LOG_H
#define ST_LOG_H

#include <stdarg.h>

enum {
    ST_OK = 0,
    ST_EINVAL = -1,   /* bad argument or flag */
    ST_ENOMEM = -2,   /* allocation failed or over a memory budget */
    ST_EIO = -3,      /* read/write/mmap failed */
    ST_EFORMAT = -4,  /* malformed file (GGUF, golden file...) */
    ST_EUNSUP = -5,   /* valid but unsupported (tensor type, architecture) */
    ST_EPROTO = -6,   /* malformed network message */
    ST_ETIMEOUT = -7, /* a deadline passed */
    ST_ERANGE = -8,   /* value outside the model's shapes or our limits */
    ST_EAUTH = -9,    /* a peer failed to prove what it claims (a wrong pairing code, a bad MAC) */
};

typedef enum { ST_LOG_ERROR, ST_LOG_WARN, ST_LOG_INFO, ST_LOG_DEBUG } st_log_level_t;

/* Messages above this level are dropped. Default ST_LOG_INFO; ST_LOG env var
 * ("error", "warn", "info", "debug") overrides it at the first call. A level
 * below ST_LOG_ERROR, (st_log_level_t)-1, drops every message (the fuzz
 * harnesses, where refusals are the normal case). */
void st_log_set_level(st_log_level_t level);
st_log_level_t st_log_get_level(void);

void st_log_at(st_log_level_t level, const char *func, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define st_log(level, ...) st_log_at((level), __func__, __VA_ARGS__)

/* Logs an error line prefixed with the calling function's name and returns code. */
int st_fail_at(int code, const char *func, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define st_fail(code, ...) st_fail_at((code), __func__, __VA_ARGS__)

/* Short text for an ST_E* code ("malformed input", ...). */
const char *st_strerror(int code);

#endif
