/* cluster_view: the coordinator's cluster as JSON for the server (see
 * cluster_view.h). Runs on the scheduler thread, the one that owns the
 * cluster's sockets, so reading the counters needs no lock. A node that is
 * down shows its counters (history) but no board, hit rate or round trip:
 * those would be stale. */
#include "cluster_view.h"

#include <stdlib.h>
#include <string.h>

struct st_cluster_view {
    const st_coord_t *c;
};

/* The node's real memory next to its budget: its cgroup's charge (RSS and
 * page cache) when it is alone in one, else its RSS; and the board's
 * temperature and throttling where it reports them (absent: no field). */
static void s_board(cJSON *o, const st_wire_board_t *b, double age_ms) {
    cJSON_AddNumberToObject(o, "mem_used", (double)(b->has_cgroup ? b->cgroup_mem : b->rss));
    cJSON_AddNumberToObject(o, "rss", (double)b->rss);
    cJSON_AddNumberToObject(o, "rss_file", (double)b->rss_file);
    cJSON_AddNumberToObject(o, "expert_cache_bytes", (double)b->cache_bytes);
    if (b->has_cgroup) {
        cJSON_AddNumberToObject(o, "page_cache", (double)b->cgroup_file);
        cJSON_AddNumberToObject(o, "cgroup_mem", (double)b->cgroup_mem);
        if (b->cgroup_max) cJSON_AddNumberToObject(o, "cgroup_max", (double)b->cgroup_max);
    }
    if (b->has_temp) cJSON_AddNumberToObject(o, "temp_c", b->temp_mc / 1e3);
    if (b->has_throttled) cJSON_AddNumberToObject(o, "throttled", b->throttled);
    cJSON_AddNumberToObject(o, "board_age_ms", age_ms);
}

/* Experts of node i that no owner that is up serves: the coordinator computes them. */
static int s_computed_here(const st_placement_t *pl, const st_cluster_t *cl, int i) {
    const int L = st_placement_n_layer(pl), X = st_placement_n_expert(pl);
    int n = 0;
    for (int l = 0; l < L; l++)
        for (int e = 0; e < X; e++) {
            if (!st_placement_owns(pl, i, l, e)) continue;
            bool served = false;
            for (int r = 0; r < st_placement_n_owners(pl, l, e) && !served; r++)
                served = st_cluster_is_up(cl, st_placement_owner(pl, l, e, r));
            n += !served;
        }
    return n;
}

static void s_nodes(void *arg, cJSON *nodes) {
    st_cluster_view_t *v = arg;
    const st_cluster_t *cl = st_coord_cluster(v->c);
    const st_placement_t *pl = st_coord_placement(v->c);
    const st_remote_moe_t *rm = st_coord_remote(v->c);
    if (!cl) return;
    int n = st_cluster_n_nodes(cl);
    int L = pl ? st_placement_n_layer(pl) : 0, X = pl ? st_placement_n_expert(pl) : 0;
    for (int i = 0; i < n; i++) {
        if (st_cluster_is_removed(cl, i)) continue; /* st-ctl remove: gone */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", i); /* how st-ctl names it */
        const st_wire_inventory_t *inv = st_cluster_inventory(cl, i);
        const st_node_stats_t *ns = st_cluster_stats(cl, i);
        cJSON_AddStringToObject(o, "url", st_cluster_url(cl, i));
        cJSON_AddStringToObject(o, "id", inv ? inv->node_id : "");
        const char *sw = inv ? strchr(inv->software, ' ') : NULL; /* "st-node 0.4.0 (git ...)" */
        cJSON_AddStringToObject(o, "version", sw ? sw + 1 : "");  /* "": not known, or before 0.4.0 */
        cJSON_AddBoolToObject(o, "up", st_cluster_is_up(cl, i));
        const bool drained = st_coord_drained(v->c, i);
        cJSON_AddBoolToObject(o, "drained", drained);
        cJSON_AddStringToObject(o, "state", drained ? "drained" : st_cluster_is_up(cl, i) ? "up" : "down");
        cJSON_AddNumberToObject(o, "mem_budget", inv ? (double)inv->mem_budget : 0);
        cJSON_AddNumberToObject(o, "store_free", inv ? (double)inv->store_free : 0);
        cJSON_AddNumberToObject(o, "threads", inv ? inv->threads : 0);
        if (pl && i < st_placement_n_nodes(pl)) {
            cJSON_AddNumberToObject(o, "experts", st_placement_node_experts(pl, i));
            cJSON_AddNumberToObject(o, "expert_bytes", (double)st_placement_node_bytes(pl, i));
            cJSON *layers = cJSON_AddArrayToObject(o, "layers"); /* experts held per layer */
            int pinned = 0;
            for (int l = 0; l < L; l++) {
                int k = 0;
                for (int e = 0; e < X; e++) {
                    k += st_placement_owns(pl, i, l, e);
                    pinned += st_placement_pinned(pl, i, l, e);
                }
                cJSON_AddItemToArray(layers, cJSON_CreateNumber(k));
            }
            cJSON_AddNumberToObject(o, "pinned", pinned);
            cJSON_AddNumberToObject(o, "n_expert", X);
            cJSON_AddNumberToObject(o, "computed_here", s_computed_here(pl, cl, i));
            /* slices of the output head it holds (its own and replicas of others'), 0 with --head local */
            cJSON_AddNumberToObject(o, "head_slices", st_placement_node_head_slices(pl, i));
            cJSON_AddNumberToObject(o, "head_bytes", (double)st_placement_node_head_bytes(pl, i));
        }
        double age_ms = 0;
        const st_wire_board_t *b = st_cluster_board(cl, i, &age_ms);
        if (b) s_board(o, b, age_ms);
        if (ns) {
            cJSON_AddNumberToObject(o, "requests", (double)ns->requests);
            cJSON_AddNumberToObject(o, "bytes_out", (double)ns->bytes_out);
            cJSON_AddNumberToObject(o, "bytes_in", (double)ns->bytes_in);
            cJSON_AddNumberToObject(o, "timeouts", (double)ns->timeouts);
            cJSON_AddNumberToObject(o, "errors", (double)ns->errors);
        }
        if (rm && st_cluster_is_up(cl, i)) { /* a down node's rates are stale: not shown */
            st_remote_node_totals_t t = st_remote_moe_node_totals(rm, i);
            const uint64_t look = t.cache_hits + t.cache_misses + t.cache_prefetched;
            cJSON_AddNumberToObject(o, "cache_hits", (double)t.cache_hits);
            cJSON_AddNumberToObject(o, "cache_misses", (double)t.cache_misses);
            cJSON_AddNumberToObject(o, "cache_prefetched", (double)t.cache_prefetched);
            cJSON_AddNumberToObject(o, "hit_rate", look ? (double)t.cache_hits / (double)look : 0);
            cJSON_AddNumberToObject(o, "prefetch_rate", look ? (double)t.cache_prefetched / (double)look : 0);
            cJSON_AddNumberToObject(o, "compute_ms", t.round_trips ? t.compute_us / 1e3 / (double)t.round_trips : 0);
            cJSON_AddNumberToObject(o, "rtt_ms", t.round_trips ? t.rtt_ms / (double)t.round_trips : 0);
        }
        cJSON_AddItemToArray(nodes, o);
    }
}

/* --pair's code for /health and the web page (any thread: st_pair_code locks). */
static bool s_pairing(void *arg, char *code, size_t cap, int *seconds_left) {
    return st_coord_pairing(((st_cluster_view_t *)arg)->c, code, cap, seconds_left);
}

st_cluster_view_t *st_cluster_view_new(const st_coord_t *c) {
    st_cluster_view_t *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->c = c;
    return v;
}

void st_cluster_view_destroy(st_cluster_view_t **vp) {
    free(*vp);
    *vp = NULL;
}

st_server_view_t st_cluster_view_server(st_cluster_view_t *v) {
    st_server_view_t s = {.arg = v, .nodes = s_nodes, .pairing = s_pairing};
    return s;
}
