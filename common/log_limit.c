/* log_limit: first lines per key, then counts and a summary per interval (see
 * log_limit.h).
 *
 * The keys live in one small array searched linearly: max_keys is tens, and
 * an event costs far less than the message that caused it. Slot max_keys is
 * the shared "other addresses" entry. The summary says how long the counting
 * ran ("in the last 60 s"), from the first event counted to the summary.
 */
#include "log_limit.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_log.h"

#define KEY_MAX 64 /* a key longer than this is cut: an address fits */

typedef struct {
    bool used;
    char key[KEY_MAX];
    int logged;      /* lines let through since the key was (re)started */
    uint64_t held;   /* events counted since the last summary */
    double since_ms; /* the first of them */
    double last_ms;  /* the key's last event */
} s_key_t;

struct st_log_limit {
    st_log_limit_opts_t o;
    pthread_mutex_t mu;
    s_key_t *keys; /* max_keys, then "other addresses" */
};

static void s_summary(const st_log_limit_t *l, s_key_t *k, double now_ms) {
    if (!k->held) return;
    const double s = (now_ms - k->since_ms) / 1e3;
    st_log(ST_LOG_WARN, "%s%s%llu more %s%s%s in the last %.0f s", l->o.prefix, l->o.prefix[0] ? ": " : "",
           (unsigned long long)k->held, l->o.what, k->key[0] ? " from " : "", k->key, s > 0 ? s : 0.0);
    k->held = 0;
}

/* Due summaries written; a key quiet for an interval with nothing counted is forgotten. */
static void s_tick(st_log_limit_t *l, s_key_t *k, double now_ms) {
    if (!k->used) return;
    if (k->held && now_ms - k->since_ms >= l->o.interval_ms) s_summary(l, k, now_ms);
    if (!k->held && now_ms - k->last_ms >= l->o.interval_ms) k->used = false;
}

st_log_limit_t *st_log_limit_new(const st_log_limit_opts_t *o) {
    st_log_limit_t *l = calloc(1, sizeof *l);
    if (!l) {
        st_fail(ST_ENOMEM, "no memory for a log limiter");
        return NULL;
    }
    l->o = *o;
    if (!l->o.prefix) l->o.prefix = "";
    if (!l->o.what) l->o.what = "lines";
    if (l->o.first <= 0) l->o.first = 3;
    if (l->o.interval_ms <= 0) l->o.interval_ms = 60000;
    if (l->o.max_keys <= 0) l->o.max_keys = 64;
    if (!(l->keys = calloc((size_t)l->o.max_keys + 1, sizeof *l->keys))) {
        st_fail(ST_ENOMEM, "no memory for a log limiter");
        free(l);
        return NULL;
    }
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

void st_log_limit_destroy(st_log_limit_t **pl) {
    st_log_limit_t *l = *pl;
    if (!l) return;
    double last = 0; /* the caller's clock: its last event */
    for (int i = 0; i <= l->o.max_keys; i++)
        if (l->keys[i].used && l->keys[i].last_ms > last) last = l->keys[i].last_ms;
    for (int i = 0; i <= l->o.max_keys; i++)
        if (l->keys[i].used) s_summary(l, &l->keys[i], last);
    pthread_mutex_destroy(&l->mu);
    free(l->keys);
    free(l);
    *pl = NULL;
}

void st_log_limit_tick(st_log_limit_t *l, double now_ms) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i <= l->o.max_keys; i++) s_tick(l, &l->keys[i], now_ms);
    pthread_mutex_unlock(&l->mu);
}

/* The key's entry: found, a free (or forgotten) slot, or "other addresses". */
static s_key_t *s_find(st_log_limit_t *l, const char *key, double now_ms) {
    s_key_t *free_slot = NULL;
    for (int i = 0; i < l->o.max_keys; i++) {
        s_key_t *k = &l->keys[i];
        s_tick(l, k, now_ms);
        if (k->used && !strncmp(k->key, key, sizeof k->key - 1)) return k;
        if (!k->used && !free_slot) free_slot = k;
    }
    s_key_t *k = free_slot ? free_slot : &l->keys[l->o.max_keys];
    s_tick(l, k, now_ms);
    if (!k->used) {
        *k = (s_key_t){.used = true, .last_ms = now_ms};
        snprintf(k->key, sizeof k->key, "%s", free_slot ? key : "other addresses");
    }
    return k;
}

bool st_log_limit_ok(st_log_limit_t *l, const char *key, double now_ms) {
    if (!l) return true;
    pthread_mutex_lock(&l->mu);
    s_key_t *k = s_find(l, key ? key : "", now_ms);
    k->last_ms = now_ms;
    bool ok = k->logged < l->o.first;
    if (ok) {
        k->logged++;
    } else if (!k->held++) {
        k->since_ms = now_ms;
    }
    pthread_mutex_unlock(&l->mu);
    return ok;
}
