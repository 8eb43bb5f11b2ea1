/* cluster_view: the coordinator's cluster as JSON for the server (see
 * cluster_view.h). Runs on the scheduler thread, the one that owns the
 * cluster's sockets, so reading the counters needs no lock. */
#include "cluster_view.h"
#include "clock.h"

#include <stdlib.h>
#include <string.h>

struct st_cluster_view {
    st_cluster_t *const *cl;
    st_placement_t *const *pl;
    st_remote_moe_t *const *rm;
    st_moe_backend_t inner;
    int n;
    double *rtt_ms; /* n: summed step wall time */
    uint64_t *rtt_n;
    uint8_t *seen;
};

static int s_prefetch(void *arg, const st_route_t *r) {
    st_cluster_view_t *v = arg;
    return v->inner.prefetch ? v->inner.prefetch(v->inner.arg, r) : 0;
}

static int s_compute(void *arg, const st_route_t *r, const float *m, float *out) {
    st_cluster_view_t *v = arg;
    double t0 = st_now_ms();
    int rc = v->inner.compute(v->inner.arg, r, m, out);
    double dt = st_now_ms() - t0;
    const st_placement_t *pl = *v->pl;
    if (!pl || !v->seen) return rc;
    memset(v->seen, 0, (size_t)v->n);
    for (int i = 0; i < r->n_tok * r->k; i++) {
        int o = st_placement_owner(pl, r->layer, r->ids[i], 0);
        if (o >= 0 && o < v->n && !v->seen[o]) {
            v->seen[o] = 1;
            v->rtt_ms[o] += dt;
            v->rtt_n[o]++;
        }
    }
    return rc;
}

static void s_attach(void *arg, st_ctx_t *c) {
    st_cluster_view_t *v = arg;
    if (!*v->rm || !*v->cl) return;
    v->n = st_cluster_n_nodes(*v->cl);
    v->rtt_ms = calloc((size_t)v->n, sizeof *v->rtt_ms);
    v->rtt_n = calloc((size_t)v->n, sizeof *v->rtt_n);
    v->seen = calloc((size_t)v->n, 1);
    if (!v->rtt_ms || !v->rtt_n || !v->seen) return;
    v->inner = st_remote_moe_backend(*v->rm);
    st_moe_backend_t b = {v, s_prefetch, s_compute};
    st_ctx_set_moe(c, &b);
}

static void s_nodes(void *arg, cJSON *nodes) {
    st_cluster_view_t *v = arg;
    const st_cluster_t *cl = *v->cl;
    const st_placement_t *pl = *v->pl;
    if (!cl) return;
    int n = st_cluster_n_nodes(cl);
    int L = pl ? st_placement_n_layer(pl) : 0, X = pl ? st_placement_n_expert(pl) : 0;
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        const st_wire_inventory_t *inv = st_cluster_inventory(cl, i);
        const st_node_stats_t *ns = st_cluster_stats(cl, i);
        cJSON_AddStringToObject(o, "url", st_cluster_url(cl, i));
        cJSON_AddStringToObject(o, "id", inv ? inv->node_id : "");
        const char *sw = inv ? strchr(inv->software, ' ') : NULL; /* "st-node 0.4.0 (git ...)" */
        cJSON_AddStringToObject(o, "version", sw ? sw + 1 : "");  /* "": not known, or before 0.4.0 */
        cJSON_AddBoolToObject(o, "up", st_cluster_is_up(cl, i));
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
        }
        if (ns) {
            cJSON_AddNumberToObject(o, "requests", (double)ns->requests);
            cJSON_AddNumberToObject(o, "bytes_out", (double)ns->bytes_out);
            cJSON_AddNumberToObject(o, "bytes_in", (double)ns->bytes_in);
            cJSON_AddNumberToObject(o, "timeouts", (double)ns->timeouts);
            cJSON_AddNumberToObject(o, "errors", (double)ns->errors);
        }
        if (*v->rm) {
            st_remote_node_totals_t t = st_remote_moe_node_totals(*v->rm, i);
            uint64_t look = t.cache_hits + t.cache_misses;
            cJSON_AddNumberToObject(o, "cache_hits", (double)t.cache_hits);
            cJSON_AddNumberToObject(o, "cache_misses", (double)t.cache_misses);
            cJSON_AddNumberToObject(o, "hit_rate", look ? (double)t.cache_hits / (double)look : 0);
            cJSON_AddNumberToObject(o, "compute_ms", t.round_trips ? t.compute_us / 1e3 / (double)t.round_trips : 0);
        }
        if (v->rtt_n && i < v->n)
            cJSON_AddNumberToObject(o, "rtt_ms", v->rtt_n[i] ? v->rtt_ms[i] / (double)v->rtt_n[i] : 0);
        cJSON_AddItemToArray(nodes, o);
    }
}

st_cluster_view_t *st_cluster_view_new(st_cluster_t *const *cl, st_placement_t *const *pl, st_remote_moe_t *const *rm) {
    st_cluster_view_t *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->cl = cl;
    v->pl = pl;
    v->rm = rm;
    return v;
}

void st_cluster_view_destroy(st_cluster_view_t **vp) {
    st_cluster_view_t *v = *vp;
    if (!v) return;
    free(v->rtt_ms);
    free(v->rtt_n);
    free(v->seen);
    free(v);
    *vp = NULL;
}

st_server_view_t st_cluster_view_server(st_cluster_view_t *v) {
    st_server_view_t s = {.arg = v, .nodes = s_nodes, .attach = s_attach};
    return s;
}
