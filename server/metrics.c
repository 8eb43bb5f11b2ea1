/* metrics: what the server reports about itself. /metrics is Prometheus'
 * text format (counters end in _total, one HELP/TYPE pair per family);
 * /health is JSON for people and the web chat's cluster view. Both read the
 * scheduler's counters and the latest cluster view (a JSON array the
 * scheduler thread refreshes, see server.h), so no HTTP thread touches the
 * cluster's sockets. Per-node series take every numeric field of a node
 * object that this table names.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proc_mem.h"
#include "server_internal.h"
#include "version.h"

typedef struct {
    char *p;
    size_t len, cap;
} out_t;

__attribute__((format(printf, 2, 3))) static void s_put(out_t *o, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (o->p && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n + 1) * 2;
        char *p = realloc(o->p, cap);
        if (!p) return;
        o->p = p;
        o->cap = cap;
    }
}

static void s_family(out_t *o, const char *name, const char *type, const char *help) {
    s_put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as Prometheus' text format wants it: \\, \" and \n escaped (node ids and
 * versions come from the nodes), at most 127 bytes of it. */
static const char *s_label(const cJSON *v, char buf[256]) {
    const char *s = cJSON_IsString(v) ? v->valuestring : "";
    size_t n = 0;
    for (; *s && n < 127; s++) {
        if (*s == '\\' || *s == '"')
            buf[n++] = '\\', buf[n++] = *s;
        else if (*s == '\n')
            buf[n++] = '\\', buf[n++] = 'n';
        else
            buf[n++] = *s;
    }
    buf[n] = '\0';
    return buf;
}

/* node object field -> metric */
static const struct {
    const char *field, *metric, *type, *help;
} s_node_series[] = {
    {"up", "st_node_up", "gauge", "1 while the node answers, 0 once it was marked down"},
    {"drained", "st_node_drained", "gauge", "1 while the node is drained out of placement (st-ctl drain)"},
    {"mem_budget", "st_node_memory_budget_bytes", "gauge", "RAM budget the node announced (--mem)"},
    {"mem_used", "st_node_memory_used_bytes", "gauge",
     "memory the node really uses: its cgroup's charge (RSS and page cache) when alone in one, else its RSS"},
    {"rss", "st_node_resident_memory_bytes", "gauge", "the node process's resident set"},
    {"page_cache", "st_node_page_cache_bytes", "gauge", "page cache charged to the node's cgroup"},
    {"cgroup_max", "st_node_cgroup_limit_bytes", "gauge", "memory limit of the node's cgroup"},
    {"expert_cache_bytes", "st_node_expert_cache_bytes", "gauge", "bytes of experts in the node's RAM cache"},
    {"temp_c", "st_node_cpu_temperature_celsius", "gauge", "the node board's CPU temperature"},
    {"throttled", "st_node_throttled_flags", "gauge", "a Raspberry Pi's get_throttled bits (0: never throttled)"},
    {"computed_here", "st_node_experts_computed_here", "gauge",
     "experts of the node that the coordinator computes (no owner up)"},
    {"expert_bytes", "st_node_expert_bytes", "gauge", "bytes of the experts placed on the node"},
    {"experts", "st_node_experts", "gauge", "(layer, expert) pairs placed on the node"},
    {"pinned", "st_node_experts_pinned", "gauge", "experts the node keeps pinned in RAM"},
    {"requests", "st_node_requests_total", "counter", "round trips sent to the node"},
    {"rtt_ms", "st_node_round_trip_ms", "gauge", "mean round-trip latency of expert requests (ms)"},
    {"compute_ms", "st_node_compute_ms", "gauge", "mean compute time the node reports per request (ms)"},
    {"bytes_out", "st_node_bytes_sent_total", "counter", "bytes sent to the node"},
    {"bytes_in", "st_node_bytes_received_total", "counter", "bytes received from the node"},
    {"timeouts", "st_node_timeouts_total", "counter", "requests to the node that passed their deadline"},
    {"errors", "st_node_errors_total", "counter", "ERROR replies from the node"},
    {"cache_hits", "st_node_cache_hits_total", "counter", "expert uses found in RAM before they were named"},
    {"cache_misses", "st_node_cache_misses_total", "counter", "expert uses read from the node's store on demand"},
    {"cache_prefetched", "st_node_cache_prefetched_total", "counter",
     "expert uses read from the node's store ahead, on the prefetch hint"},
    {"hit_rate", "st_node_cache_hit_rate", "gauge", "share of expert uses found in RAM (not read for them)"},
    {"prefetch_rate", "st_node_cache_prefetch_rate", "gauge", "share of expert uses read ahead on the prefetch hint"},
};

char *st_metrics_text(st_sched_t *s, const uint64_t *http) {
    st_sched_stats_t st;
    st_sched_stats(s, &st);
    out_t o = {0};
    s_family(&o, "st_http_requests_total", "counter", "HTTP requests answered, by status class");
    static const char *cls[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 0; i < 5; i++)
        s_put(&o, "st_http_requests_total{code=\"%s\"} %llu\n", cls[i], (unsigned long long)http[i]);
    s_family(&o, "st_requests_total", "counter", "generation requests by outcome");
    s_put(&o, "st_requests_total{outcome=\"done\"} %llu\n", (unsigned long long)st.requests_done);
    s_put(&o, "st_requests_total{outcome=\"failed\"} %llu\n", (unsigned long long)st.requests_failed);
    s_put(&o, "st_requests_total{outcome=\"rejected\"} %llu\n", (unsigned long long)st.requests_rejected);
    s_put(&o, "st_requests_total{outcome=\"cancelled\"} %llu\n", (unsigned long long)st.requests_cancelled);
    s_family(&o, "st_queue_length", "gauge", "requests waiting for a free sequence");
    s_put(&o, "st_queue_length %d\n", st.queued);
    s_family(&o, "st_queue_limit", "gauge", "requests that may wait (--queue)");
    s_put(&o, "st_queue_limit %d\n", st.queue_max);
    s_family(&o, "st_sequences_active", "gauge", "sequences being decoded");
    s_put(&o, "st_sequences_active %d\n", st.active);
    s_family(&o, "st_sequences_max", "gauge", "sequences decoded together at most (--parallel)");
    s_put(&o, "st_sequences_max %d\n", st.parallel);
    s_family(&o, "st_prompt_tokens_total", "counter",
             "prompt tokens prefilled (not those taken from the prompt cache)");
    s_put(&o, "st_prompt_tokens_total %llu\n", (unsigned long long)st.prompt_tokens);
    const st_pcache_stats_t *pc = &st.cache;
    s_family(&o, "st_prompt_cache_lookups_total", "counter",
             "new sequences that reused a cached prompt prefix (hit) or none (miss)");
    s_put(&o, "st_prompt_cache_lookups_total{result=\"hit\"} %llu\n", (unsigned long long)pc->hits);
    s_put(&o, "st_prompt_cache_lookups_total{result=\"miss\"} %llu\n", (unsigned long long)pc->misses);
    s_family(&o, "st_prompt_cache_tokens_total", "counter", "prompt tokens taken from the prompt cache, not prefilled");
    s_put(&o, "st_prompt_cache_tokens_total %llu\n", (unsigned long long)pc->cached_tokens);
    s_family(&o, "st_prompt_cache_evictions_total", "counter", "cached sequences dropped to stay within --kv-budget");
    s_put(&o, "st_prompt_cache_evictions_total %llu\n", (unsigned long long)pc->evictions);
    s_family(&o, "st_prompt_cache_entries", "gauge", "finished sequences whose KV cache is kept");
    s_put(&o, "st_prompt_cache_entries %d\n", pc->entries);
    s_family(&o, "st_prompt_cache_bytes", "gauge", "bytes of KV cache kept for prompt reuse");
    s_put(&o, "st_prompt_cache_bytes %llu\n", (unsigned long long)pc->bytes);
    s_family(&o, "st_prompt_cache_budget_bytes", "gauge", "the prompt cache's limit (--kv-budget)");
    s_put(&o, "st_prompt_cache_budget_bytes %llu\n", (unsigned long long)pc->budget);
    s_family(&o, "st_generated_tokens_total", "counter", "tokens generated");
    s_put(&o, "st_generated_tokens_total %llu\n", (unsigned long long)st.generated_tokens);
    s_family(&o, "st_tokens_per_second", "gauge", "tokens generated per second over the last 10 s");
    s_put(&o, "st_tokens_per_second %.3f\n", st.tokens_per_s);
    s_family(&o, "st_batch_steps_total", "counter", "batched decode steps");
    s_put(&o, "st_batch_steps_total %llu\n", (unsigned long long)st.batch_steps);
    s_family(&o, "st_batch_sequences_total", "counter", "sequences over all batched decode steps");
    s_put(&o, "st_batch_sequences_total %llu\n", (unsigned long long)st.batch_seqs);
    s_family(&o, "st_time_to_first_token_seconds", "histogram", "from request to first generated token");
    for (int b = 0; b < 8; b++)
        s_put(&o, "st_time_to_first_token_seconds_bucket{le=\"%g\"} %llu\n", st_sched_ttft_bounds[b],
              (unsigned long long)st.ttft_bucket[b]);
    s_put(&o, "st_time_to_first_token_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)st.ttft_count);
    s_put(&o, "st_time_to_first_token_seconds_sum %.6f\n", st.ttft_sum_s);
    s_put(&o, "st_time_to_first_token_seconds_count %llu\n", (unsigned long long)st.ttft_count);
    uint64_t rss, peak;
    st_proc_memory(&rss, &peak);
    s_family(&o, "st_process_resident_memory_bytes", "gauge", "resident memory of this process");
    s_put(&o, "st_process_resident_memory_bytes %llu\n", (unsigned long long)rss);
    s_family(&o, "st_process_peak_resident_memory_bytes", "gauge", "peak resident memory of this process");
    s_put(&o, "st_process_peak_resident_memory_bytes %llu\n", (unsigned long long)peak);

    s_family(&o, "st_build_info", "gauge", "this program's version (label), always 1");
    s_put(&o, "st_build_info{program=\"%s\",version=\"%s\"} 1\n", program_invocation_short_name, st_version());

    char *nj = st_sched_nodes_json(s);
    cJSON *nodes = nj ? cJSON_Parse(nj) : NULL;
    free(nj);
    const cJSON *n;
    bool head = false;
    cJSON_ArrayForEach(n, nodes) { /* versions are labels: one series per node, always 1 */
        char url[256], id[256], version[256];
        if (!head) s_family(&o, "st_node_info", "gauge", "the node's id and version as it announced them, always 1");
        head = true;
        s_put(&o, "st_node_info{node=\"%s\",id=\"%s\",version=\"%s\"} 1\n",
              s_label(cJSON_GetObjectItemCaseSensitive(n, "url"), url),
              s_label(cJSON_GetObjectItemCaseSensitive(n, "id"), id),
              s_label(cJSON_GetObjectItemCaseSensitive(n, "version"), version));
    }
    for (size_t k = 0; k < sizeof s_node_series / sizeof s_node_series[0]; k++) {
        bool head = false;
        const cJSON *n;
        cJSON_ArrayForEach(n, nodes) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(n, s_node_series[k].field);
            const cJSON *url = cJSON_GetObjectItemCaseSensitive(n, "url");
            if (!cJSON_IsNumber(v) && !cJSON_IsBool(v)) continue;
            if (!head) s_family(&o, s_node_series[k].metric, s_node_series[k].type, s_node_series[k].help);
            head = true;
            double x = cJSON_IsBool(v) ? cJSON_IsTrue(v) : v->valuedouble;
            s_put(&o, "%s{node=\"%s\"} %.17g\n", s_node_series[k].metric, cJSON_IsString(url) ? url->valuestring : "?",
                  x);
        }
    }
    cJSON_Delete(nodes);
    return o.p;
}

char *st_metrics_health(st_sched_t *s, const char *model_name, double uptime_s) {
    st_sched_stats_t st;
    st_sched_stats(s, &st);
    cJSON *o = cJSON_CreateObject();
    char *nj = st_sched_nodes_json(s);
    cJSON *nodes = nj ? cJSON_Parse(nj) : NULL;
    free(nj);
    if (!nodes) nodes = cJSON_CreateArray();
    int n_up = 0, n = cJSON_GetArraySize(nodes);
    const cJSON *x;
    cJSON_ArrayForEach(x, nodes) n_up += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "up"));
    char why[256];
    if (st_sched_waiting(s, why, sizeof why)) {
        cJSON_AddStringToObject(o, "status", "waiting");
        cJSON_AddStringToObject(o, "waiting_for", why);
    } else {
        cJSON_AddStringToObject(o, "status", n == 0 || n_up == n ? "ok" : n_up > 0 ? "degraded" : "fallback");
    }
    cJSON_AddStringToObject(o, "mode", n ? "cluster" : "single");
    cJSON_AddStringToObject(o, "model", model_name);
    cJSON_AddStringToObject(o, "version", st_version());
    cJSON_AddNumberToObject(o, "uptime_s", uptime_s);
    cJSON_AddNumberToObject(o, "queued", st.queued);
    cJSON_AddNumberToObject(o, "active", st.active);
    cJSON_AddNumberToObject(o, "parallel", st.parallel);
    cJSON_AddNumberToObject(o, "n_ctx", st.n_ctx);
    cJSON_AddNumberToObject(o, "tokens_per_s", st.tokens_per_s);
    cJSON_AddNumberToObject(o, "generated_tokens", (double)st.generated_tokens);
    cJSON *pc = cJSON_AddObjectToObject(o, "prompt_cache");
    if (pc) {
        cJSON_AddNumberToObject(pc, "hits", (double)st.cache.hits);
        cJSON_AddNumberToObject(pc, "misses", (double)st.cache.misses);
        cJSON_AddNumberToObject(pc, "cached_tokens", (double)st.cache.cached_tokens);
        cJSON_AddNumberToObject(pc, "entries", st.cache.entries);
        cJSON_AddNumberToObject(pc, "bytes", (double)st.cache.bytes);
        cJSON_AddNumberToObject(pc, "budget", (double)st.cache.budget);
    }
    cJSON_AddNumberToObject(o, "ttft_avg_s", st.ttft_count ? st.ttft_sum_s / st.ttft_count : 0);
    uint64_t rss, peak;
    st_proc_memory(&rss, &peak);
    cJSON_AddNumberToObject(o, "rss_bytes", (double)rss);
    cJSON_AddNumberToObject(o, "nodes_up", n_up);
    char code[32];
    int left = 0;
    if (st_sched_pairing(s, code, sizeof code, &left)) { /* behind the API key, like the rest of /health */
        cJSON *pr = cJSON_AddObjectToObject(o, "pairing");
        if (pr) {
            cJSON_AddStringToObject(pr, "code", code);
            cJSON_AddNumberToObject(pr, "expires_in_s", left);
        }
    }
    cJSON_AddItemToObject(o, "nodes", nodes);
    char *j = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return j;
}
