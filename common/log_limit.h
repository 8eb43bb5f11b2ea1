/* log_limit: the log lines an outside peer can make us write, bounded.
 *
 * A hostile or broken peer on the LAN can trigger one log line per message
 * (a wrong pairing code, a key not allowed, a malformed request), and so fill
 * a board's journal. A limiter lets the first lines of each key (the peer's
 * address) through, so that the user sees who and why, then counts the rest
 * and writes one summary line per key and interval:
 *
 *     pairing: 523 more wrong tries from 10.0.0.7 in the last 60 s
 *
 * A key with no event for a whole interval (and nothing counted) is
 * forgotten: its next line is logged again. At most max_keys keys are told
 * apart; when they are all busy, the others share one entry named "other
 * addresses", so memory and lines stay bounded however many addresses a
 * flood comes from. Thread-safe. The clock is the caller's (st_now_ms()),
 * so that tests can drive it.
 */
#ifndef ST_LOG_LIMIT_H
#define ST_LOG_LIMIT_H

#include <stdbool.h>

typedef struct st_log_limit st_log_limit_t;

typedef struct {
    const char *prefix; /* the summary's start ("pairing"; NULL: none); borrowed for the limiter's life */
    const char *what;   /* what is counted ("wrong tries"); borrowed too */
    int first;          /* lines logged per key before they are only counted (0: 3) */
    double interval_ms; /* a summary per key at most this often (0: 60000) */
    int max_keys;       /* keys told apart (0: 64) */
} st_log_limit_opts_t;

/* A limiter; NULL when out of memory (logged). */
st_log_limit_t *st_log_limit_new(const st_log_limit_opts_t *o);
/* Writes the summaries of what is still counted, frees, *l = NULL. NULL is fine. */
void st_log_limit_destroy(st_log_limit_t **l);

/* One event of key (NULL or "": the summary names no address, as for
 * events that have none): true when the caller should log its line,
 * false when it was counted for a summary instead. Writes the key's summary
 * first when its interval has passed. A NULL limiter lets everything
 * through. */
bool st_log_limit_ok(st_log_limit_t *l, const char *key, double now_ms);
/* Writes the summaries whose interval has passed, and forgets quiet keys:
 * for a loop that wakes up anyway (a flood that stops is summed up without
 * waiting for its next event). */
void st_log_limit_tick(st_log_limit_t *l, double now_ms);

#endif
