/* placement: experts to nodes (see placement.h for the rules).
 *
 * Everything is integer bookkeeping over n_layer x n_expert slots; the only
 * floating point is in the proportional shares and the profile order, and
 * ties are broken by node index rotated by layer, so the result is the same
 * on every run and every machine.
 *
 * Dimension letters (model.h): E n_embd, F n_ff_exp, X n_expert, K
 * n_expert_used, L n_layer, B n_batch, N nodes, V n_vocab, D head_dim, H n_head.
 */
#include "placement.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "st_log.h"

struct st_placement {
    int n_nodes, n_layer, n_expert, R;
    uint64_t *layer_bytes; /* n_layer: bytes of one expert of each layer */
    uint64_t max_bytes;    /* the largest of them */
    uint64_t *node_bytes;  /* bytes of the experts per node */
    uint64_t *node_cost;   /* bytes of its budget one expert takes on each node */
    uint64_t *node_room;   /* experts each node holds in RAM beside its head slices */
    int *owners;           /* [(l * X + e) * R + r], -1 = none */
    uint8_t *pinned;       /* same indexing */
    int *n_owners;         /* [l * X + e] */
    int *node_count;       /* experts per node */
    int dropped;           /* replicas that fit nowhere */
    /* the output head: n_head slices, slice k rows [head_bound[k], head_bound[k + 1]) */
    int n_head, head_R; /* slices; copies of each wanted (capped at the flagged nodes) */
    uint64_t head_row_bytes;
    uint32_t *head_bound; /* n_head + 1 */
    int *head_owners;     /* [k * ST_PLACE_MAX_HEAD_COPIES + r] */
    int *head_n_owners;   /* [k] */
    uint64_t *node_head;  /* bytes of head slices per node */
    int *node_head_count; /* head slices per node */
    int head_dropped;     /* replicas of slices that fit nowhere */
};

static size_t s_slot(const st_placement_t *pl, int l, int e) { return (size_t)l * pl->n_expert + e; }

/* Bound i of n equal slices of V rows: multiples of ST_PLACE_HEAD_ALIGN, the last ends at V. */
static uint32_t s_head_bound(uint32_t V, int i, int n) {
    if (i >= n) return V;
    uint64_t b = (uint64_t)V * (uint64_t)i / (uint64_t)n;
    return (uint32_t)(b / ST_PLACE_HEAD_ALIGN * ST_PLACE_HEAD_ALIGN);
}

uint64_t st_placement_head_slice_bytes(uint32_t rows, uint64_t row_bytes, int n) {
    uint32_t most = 0;
    for (int i = 0; i < n; i++) {
        const uint32_t r = s_head_bound(rows, i + 1, n) - s_head_bound(rows, i, n);
        most = r > most ? r : most;
    }
    return (uint64_t)most * row_bytes;
}

static uint64_t s_head_bytes(const st_placement_t *pl, int k) {
    return (uint64_t)(pl->head_bound[k + 1] - pl->head_bound[k]) * pl->head_row_bytes;
}

static void s_add_head_owner(st_placement_t *pl, int k, int node) {
    pl->head_owners[k * ST_PLACE_MAX_HEAD_COPIES + pl->head_n_owners[k]++] = node;
    pl->node_head[node] += s_head_bytes(pl, k);
    pl->node_head_count[node]++;
}

static bool s_head_owns(const st_placement_t *pl, int k, int node) {
    for (int r = 0; r < pl->head_n_owners[k]; r++)
        if (pl->head_owners[k * ST_PLACE_MAX_HEAD_COPIES + r] == node) return true;
    return false;
}

/* Node i's room in bytes (before its head slices) and in experts beside them. */
static uint64_t s_room_bytes(const st_place_node_t *nodes, int i) {
    return nodes[i].expert_cost ? nodes[i].room : nodes[i].mem_budget;
}

static void s_set_room(st_placement_t *pl, const st_place_node_t *nodes, int i) {
    const uint64_t room = s_room_bytes(nodes, i);
    pl->node_room[i] = (room > pl->node_head[i] ? room - pl->node_head[i] : 0) / pl->node_cost[i];
}

/* The head's first copies: slice k to the k-th node flagged head. */
static void s_place_head(st_placement_t *pl, const st_place_params_t *p, const st_place_node_t *nodes) {
    int k = 0;
    for (int i = 0; i < pl->n_nodes; i++) {
        if (!nodes[i].head) continue;
        pl->head_bound[k] = s_head_bound(p->head_rows, k, pl->n_head);
        pl->head_bound[k + 1] = s_head_bound(p->head_rows, k + 1, pl->n_head);
        s_add_head_owner(pl, k++, i);
    }
}

/* Copies 2..head_R of each slice, after the experts' first copies and before
 * their replicas: to a flagged node that does not hold it and whose budget
 * has room for it beside its load; the fewest slices first, then the lowest
 * load relative to the budget, then ring order from the primary. */
static void s_place_head_replicas(st_placement_t *pl, const st_place_node_t *nodes) {
    const int N = pl->n_nodes;
    for (int r = 1; r < pl->head_R; r++)
        for (int k = 0; k < pl->n_head; k++) {
            const uint64_t sb = s_head_bytes(pl, k);
            const int primary = pl->head_owners[k * ST_PLACE_MAX_HEAD_COPIES];
            int best = -1;
            double best_ratio = 0;
            for (int j = 1; j < N; j++) {
                const int i = (primary + j) % N;
                const uint64_t load = (uint64_t)pl->node_count[i] * pl->node_cost[i] + pl->node_head[i];
                if (!nodes[i].head || s_head_owns(pl, k, i) || pl->node_head_count[i] >= ST_PLACE_MAX_HEAD_SLICES ||
                    load + sb > s_room_bytes(nodes, i))
                    continue;
                const double ratio = (double)(load + sb) / (double)s_room_bytes(nodes, i);
                if (best < 0 || pl->node_head_count[i] < pl->node_head_count[best] ||
                    (pl->node_head_count[i] == pl->node_head_count[best] && ratio < best_ratio))
                    best = i, best_ratio = ratio;
            }
            if (best < 0)
                pl->head_dropped++;
            else
                s_add_head_owner(pl, k, best);
        }
}

/* Shares of total slots proportional to w[i], each at most cap[i] (water
 * filling: nodes whose share would exceed their cap are fixed at the cap and
 * the rest is shared again), rounded by largest remainder. */
static void s_shares(int n, const double *w, const int64_t *cap, int64_t total, int64_t *out) {
    bool *fixed = calloc((size_t)n, sizeof *fixed);
    double *ideal = calloc((size_t)n, sizeof *ideal);
    int64_t left = total;
    for (;;) {
        double W = 0;
        for (int i = 0; i < n; i++)
            if (!fixed[i]) W += w[i];
        bool changed = false;
        for (int i = 0; i < n; i++) {
            if (fixed[i]) continue;
            ideal[i] = W > 0 ? (double)left * w[i] / W : 0;
            if (ideal[i] > (double)cap[i]) {
                fixed[i] = true;
                out[i] = cap[i];
                left -= cap[i];
                changed = true;
            }
        }
        if (!changed) break;
    }
    int64_t given = 0;
    for (int i = 0; i < n; i++)
        if (!fixed[i]) given += (out[i] = (int64_t)ideal[i]);
    for (int64_t r = left - given; r > 0; r--) { /* largest remainders, lower index first */
        int best = -1;
        for (int i = 0; i < n; i++) {
            if (fixed[i] || out[i] >= cap[i]) continue;
            double rem = ideal[i] - (double)out[i];
            if (best < 0 || rem > ideal[best] - (double)out[best]) best = i;
        }
        if (best < 0) break;
        out[best]++;
    }
    free(fixed);
    free(ideal);
}

/* Experts of a layer, hottest first (stable: equal counts keep id order). */
static void s_hot_order(const st_place_params_t *p, int l, int *order) {
    const int X = p->n_expert;
    for (int e = 0; e < X; e++) order[e] = e;
    if (!p->profile) return;
    const double *f = p->profile + (size_t)l * X;
    for (int i = 1; i < X; i++) { /* insertion sort: X is small (<= a few hundred) */
        int v = order[i], j = i;
        while (j > 0 && f[order[j - 1]] < f[v]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

static bool s_held(const st_place_node_t *nodes, int i, size_t slot) { return nodes[i].held && nodes[i].held[slot]; }

static void s_add_owner(st_placement_t *pl, size_t slot, int node) {
    pl->owners[slot * pl->R + pl->n_owners[slot]++] = node;
    pl->node_count[node]++;
    pl->node_bytes[node] += pl->layer_bytes[slot / (size_t)pl->n_expert];
}

/* First copies of layer l: per-layer quotas from cumulative targets, then
 * sticky (held) experts, then the rest hottest first. */
static void s_place_layer(st_placement_t *pl, const st_place_params_t *p, const st_place_node_t *nodes,
                          const int64_t *Q, int l, int *quota, int *order) {
    const int N = pl->n_nodes, X = pl->n_expert, L = pl->n_layer;
    int given = 0;
    for (int i = 0; i < N; i++) { /* everyone's whole per-layer share first */
        int64_t base = Q[i] / L, room = Q[i] - pl->node_count[i];
        quota[i] = (int)(base < room ? base : room);
        given += quota[i];
    }
    for (int s = given; s < X; s++) { /* the remainders to the largest cumulative deficits */
        int best = -1;
        double best_def = 0;
        for (int k = 0; k < N; k++) {
            int i = (k + l) % N;
            int64_t have = pl->node_count[i] + quota[i];
            if (have >= Q[i]) continue;
            double def = (double)Q[i] * (l + 1) / L - (double)have;
            if (best < 0 || def > best_def) best = i, best_def = def;
        }
        quota[best]++; /* sum(Q) = L * X, so some node always has room */
    }
    s_hot_order(p, l, order);
    int *left = quota; /* consumed below */
    int *full = calloc(N > 0 ? (size_t)N : 1, sizeof *full);
    for (int i = 0; i < N; i++) full[i] = quota[i];
    /* sticky pass: experts with the fewest holders first, so an expert only
     * one node holds is not crowded out by one that several hold */
    for (int holders = 1; holders <= N; holders++) {
        for (int oi = 0; oi < X; oi++) {
            int e = order[oi], best = -1, n_held = 0;
            size_t slot = s_slot(pl, l, e);
            if (pl->n_owners[slot]) continue;
            for (int i = 0; i < N; i++) n_held += s_held(nodes, i, slot);
            if (n_held != holders) continue;
            for (int i = 0; i < N; i++)
                if (left[i] > 0 && s_held(nodes, i, slot) && (best < 0 || left[i] > left[best])) best = i;
            if (best >= 0) {
                s_add_owner(pl, slot, best);
                left[best]--;
            }
        }
    }
    for (int oi = 0; oi < X; oi++) { /* the rest: most quota left (as a fraction) first */
        int e = order[oi], best = -1;
        size_t slot = s_slot(pl, l, e);
        if (pl->n_owners[slot]) continue;
        for (int k = 0; k < N; k++) {
            int i = (k + l) % N;
            if (left[i] <= 0) continue;
            if (best < 0 || (double)left[i] / full[i] > (double)left[best] / full[best]) best = i;
        }
        s_add_owner(pl, slot, best);
        left[best]--;
    }
    free(full);
}

/* Copy r of every expert, where RAM allows: prefer a node that holds it,
 * then the node with the fewest copies in this layer relative to its weight,
 * then the lowest load relative to budget. */
static void s_place_replicas(st_placement_t *pl, const st_place_params_t *p, const st_place_node_t *nodes,
                             const double *w, int *layer_count, int *order) {
    const int N = pl->n_nodes, X = pl->n_expert;
    for (int r = 1; r < pl->R; r++) {
        for (int l = 0; l < pl->n_layer; l++) {
            const uint64_t eb = pl->layer_bytes[l];
            memset(layer_count, 0, (size_t)N * sizeof *layer_count);
            for (int e = 0; e < X; e++) {
                size_t slot = s_slot(pl, l, e);
                for (int k = 0; k < pl->n_owners[slot]; k++) layer_count[pl->owners[slot * pl->R + k]]++;
            }
            s_hot_order(p, l, order);
            for (int oi = 0; oi < X; oi++) {
                size_t slot = s_slot(pl, l, order[oi]);
                int best = -1;
                double best_key[3] = {0, 0, 0};
                for (int k = 0; k < N; k++) {
                    int i = (k + l + r) % N;
                    bool owner = false;
                    for (int j = 0; j < pl->n_owners[slot]; j++) owner |= pl->owners[slot * pl->R + j] == i;
                    const uint64_t load = pl->node_bytes[i], count = (uint64_t)pl->node_count[i];
                    uint64_t store = nodes[i].store_cap ? nodes[i].store_cap : nodes[i].mem_budget;
                    if (owner || count + 1 > pl->node_room[i] || load + eb > store) continue;
                    double key[3] = {s_held(nodes, i, slot) ? 0 : 1, (layer_count[i] + 1) / w[i],
                                     (double)(count + 1) / (double)pl->node_room[i]};
                    bool better = best < 0;
                    for (int q = 0; !better && q < 3; q++) {
                        if (key[q] < best_key[q]) better = true;
                        if (key[q] != best_key[q]) break;
                    }
                    if (better) best = i, memcpy(best_key, key, sizeof key);
                }
                if (best < 0) {
                    pl->dropped++;
                    continue;
                }
                s_add_owner(pl, slot, best);
                layer_count[best]++;
            }
        }
    }
}

/* Each node pins its hottest experts (profile > 0) up to pin_fraction of its room. */
static void s_pin(st_placement_t *pl, const st_place_params_t *p) {
    if (!p->profile || p->pin_fraction <= 0) return;
    const size_t S = (size_t)pl->n_layer * pl->n_expert;
    for (int i = 0; i < pl->n_nodes; i++) {
        const uint64_t room = (uint64_t)((double)pl->node_room[i] * (p->pin_fraction > 1 ? 1 : p->pin_fraction));
        for (uint64_t used = 0;;) {
            size_t best = S; /* hottest unpinned expert the node owns that still fits */
            int best_r = 0;
            for (size_t s = 0; s < S; s++)
                for (int r = 0; r < pl->n_owners[s]; r++)
                    if (pl->owners[s * pl->R + r] == i && !pl->pinned[s * pl->R + r] && p->profile[s] > 0 &&
                        used + 1 <= room && (best == S || p->profile[s] > p->profile[best]))
                        best = s, best_r = r;
            if (best == S) break;
            pl->pinned[best * pl->R + best_r] = 1;
            used++;
        }
    }
}

st_placement_t *st_placement_new(const st_place_params_t *p, const st_place_node_t *nodes, int n_nodes) {
    bool sizes_ok = p && p->n_layer >= 1 && (p->layer_bytes || p->expert_bytes);
    for (int l = 0; sizes_ok && p->layer_bytes && l < p->n_layer; l++) sizes_ok = p->layer_bytes[l] > 0;
    if (!p || !nodes || n_nodes < 1 || n_nodes > 4096 || p->n_layer < 1 || p->n_expert < 1 || !sizes_ok ||
        p->replication < 1) {
        st_fail(ST_EINVAL, "bad placement parameters (%d nodes, %d layers, %d experts, R %d)", n_nodes,
                p ? p->n_layer : 0, p ? p->n_expert : 0, p ? p->replication : 0);
        return NULL;
    }
    const int N = n_nodes, L = p->n_layer, X = p->n_expert;
    const int64_t total = (int64_t)L * X;
    st_placement_t *pl = calloc(1, sizeof *pl);
    double *w = calloc((size_t)N, sizeof *w);
    int64_t *cap = calloc((size_t)N, sizeof *cap), *Q = calloc((size_t)N, sizeof *Q),
            *ram = calloc((size_t)N, sizeof *ram);
    int *quota = calloc((size_t)N, sizeof *quota), *order = calloc((size_t)X, sizeof *order);
    if (!pl || !w || !cap || !Q || !ram || !quota || !order) goto fail;
    pl->n_nodes = N;
    pl->n_layer = L;
    pl->n_expert = X;
    pl->R = p->replication < N ? p->replication : N;
    pl->layer_bytes = malloc((size_t)L * sizeof *pl->layer_bytes);
    pl->node_bytes = calloc((size_t)N, sizeof *pl->node_bytes);
    pl->node_cost = calloc((size_t)N, sizeof *pl->node_cost);
    pl->node_room = calloc((size_t)N, sizeof *pl->node_room);
    pl->node_head = calloc((size_t)N, sizeof *pl->node_head);
    pl->node_head_count = calloc((size_t)N, sizeof *pl->node_head_count);
    if (!pl->layer_bytes || !pl->node_bytes || !pl->node_cost || !pl->node_room || !pl->node_head ||
        !pl->node_head_count)
        goto fail;
    if (p->head_rows && p->head_row_bytes)
        for (int i = 0; i < N; i++) pl->n_head += nodes[i].head;
    if (pl->n_head) {
        pl->head_row_bytes = p->head_row_bytes;
        pl->head_R = pl->R < pl->n_head ? pl->R : pl->n_head;
        pl->head_R = pl->head_R < ST_PLACE_MAX_HEAD_COPIES ? pl->head_R : ST_PLACE_MAX_HEAD_COPIES;
        pl->head_bound = calloc((size_t)pl->n_head + 1, sizeof *pl->head_bound);
        pl->head_owners = malloc((size_t)pl->n_head * ST_PLACE_MAX_HEAD_COPIES * sizeof *pl->head_owners);
        pl->head_n_owners = calloc((size_t)pl->n_head, sizeof *pl->head_n_owners);
        if (!pl->head_bound || !pl->head_owners || !pl->head_n_owners) goto fail;
        s_place_head(pl, p, nodes);
    }
    uint64_t all_bytes = 0; /* of one copy of every expert */
    for (int l = 0; l < L; l++) {
        pl->layer_bytes[l] = p->layer_bytes ? p->layer_bytes[l] : p->expert_bytes;
        pl->max_bytes = pl->layer_bytes[l] > pl->max_bytes ? pl->layer_bytes[l] : pl->max_bytes;
        all_bytes += pl->layer_bytes[l] * (uint64_t)X;
    }
    /* the experts get what the primary slices leave, in whole experts of the node's cost
     * (a node's cache entry holds the largest layer's expert) */
    for (int i = 0; i < N; i++) {
        pl->node_cost[i] = nodes[i].expert_cost > pl->max_bytes ? nodes[i].expert_cost : pl->max_bytes;
        s_set_room(pl, nodes, i);
    }
    pl->owners = malloc((size_t)total * pl->R * sizeof *pl->owners);
    pl->pinned = calloc((size_t)total * pl->R, 1);
    pl->n_owners = calloc((size_t)total, sizeof *pl->n_owners);
    pl->node_count = calloc((size_t)N, sizeof *pl->node_count);
    if (!pl->owners || !pl->pinned || !pl->n_owners || !pl->node_count) goto fail;
    for (size_t i = 0; i < (size_t)total * pl->R; i++) pl->owners[i] = -1;

    bool any_budget = false;
    int64_t cap_sum = 0, ram_sum = 0;
    for (int i = 0; i < N; i++) any_budget |= nodes[i].mem_budget > 0;
    for (int i = 0; i < N; i++) {
        const uint64_t budget = nodes[i].mem_budget > pl->node_head[i] ? nodes[i].mem_budget - pl->node_head[i] : 0;
        w[i] = any_budget ? (double)budget : 1.0;
        uint64_t c = nodes[i].store_cap ? nodes[i].store_cap : budget;
        cap[i] = any_budget ? (int64_t)(c / pl->max_bytes) : total; /* in the largest layer's experts: safe */
        if (cap[i] > total) cap[i] = total;
        if (w[i] <= 0) w[i] = 1e-9; /* a node with no budget only takes what others cannot */
        cap_sum += cap[i];
        ram[i] = any_budget ? (pl->node_room[i] < (uint64_t)cap[i] ? (int64_t)pl->node_room[i] : cap[i]) : cap[i];
        ram_sum += ram[i];
    }
    if (cap_sum < total) {
        st_fail(ST_ENOMEM,
                "the nodes can store %lld of the %lld experts (%.1f MiB, counted in experts of the "
                "largest layer, of %.2f MiB; all experts: %.1f MiB): add nodes or memory",
                (long long)cap_sum, (long long)total, (double)cap_sum * pl->max_bytes / (1 << 20),
                (double)pl->max_bytes / (1 << 20), (double)all_bytes / (1 << 20));
        goto fail;
    }
    if (ram_sum >= total) { /* every expert in RAM: shares by --mem, none over its room */
        s_shares(N, w, ram, total, Q);
    } else { /* each node's room filled, the rest by --mem up to the stores */
        for (int i = 0; i < N; i++) cap[i] -= ram[i];
        s_shares(N, w, cap, total - ram_sum, Q);
        for (int i = 0; i < N; i++) Q[i] += ram[i];
    }
    for (int l = 0; l < L; l++) s_place_layer(pl, p, nodes, Q, l, quota, order);
    s_place_head_replicas(pl, nodes);
    for (int i = 0; i < N; i++) s_set_room(pl, nodes, i); /* the experts' replicas fit beside every slice */
    s_place_replicas(pl, p, nodes, w, quota, order);
    s_pin(pl, p);
    free(w);
    free(cap);
    free(ram);
    free(Q);
    free(quota);
    free(order);
    return pl;
fail:
    if (pl && !pl->owners) st_fail(ST_ENOMEM, "no memory for the placement");
    free(w);
    free(cap);
    free(ram);
    free(Q);
    free(quota);
    free(order);
    st_placement_destroy(&pl);
    return NULL;
}

void st_placement_destroy(st_placement_t **plp) {
    if (!plp || !*plp) return;
    st_placement_t *pl = *plp;
    free(pl->owners);
    free(pl->pinned);
    free(pl->n_owners);
    free(pl->node_count);
    free(pl->layer_bytes);
    free(pl->node_bytes);
    free(pl->node_cost);
    free(pl->node_room);
    free(pl->head_bound);
    free(pl->head_owners);
    free(pl->head_n_owners);
    free(pl->node_head);
    free(pl->node_head_count);
    free(pl);
    *plp = NULL;
}

int st_placement_n_nodes(const st_placement_t *pl) { return pl->n_nodes; }
int st_placement_n_layer(const st_placement_t *pl) { return pl->n_layer; }
int st_placement_n_expert(const st_placement_t *pl) { return pl->n_expert; }
int st_placement_replication(const st_placement_t *pl) { return pl->R; }
int st_placement_replicas_dropped(const st_placement_t *pl) { return pl->dropped; }
int st_placement_head_slices(const st_placement_t *pl) { return pl->n_head; }
int st_placement_head_replicas_dropped(const st_placement_t *pl) { return pl->head_dropped; }

void st_placement_head_slice(const st_placement_t *pl, int k, uint32_t *lo, uint32_t *hi) {
    const bool in = k >= 0 && k < pl->n_head;
    *lo = in ? pl->head_bound[k] : 0;
    *hi = in ? pl->head_bound[k + 1] : 0;
}

int st_placement_head_n_owners(const st_placement_t *pl, int k) {
    return k >= 0 && k < pl->n_head ? pl->head_n_owners[k] : 0;
}

int st_placement_head_owner(const st_placement_t *pl, int k, int r) {
    if (k < 0 || k >= pl->n_head || r < 0 || r >= pl->head_n_owners[k]) return -1;
    return pl->head_owners[k * ST_PLACE_MAX_HEAD_COPIES + r];
}

int st_placement_node_head_slices(const st_placement_t *pl, int node) {
    return node >= 0 && node < pl->n_nodes ? pl->node_head_count[node] : 0;
}

uint64_t st_placement_node_head_bytes(const st_placement_t *pl, int node) {
    return node >= 0 && node < pl->n_nodes ? pl->node_head[node] : 0;
}

static bool s_in_range(const st_placement_t *pl, int l, int e) {
    return l >= 0 && l < pl->n_layer && e >= 0 && e < pl->n_expert;
}

int st_placement_n_owners(const st_placement_t *pl, int l, int e) {
    return s_in_range(pl, l, e) ? pl->n_owners[s_slot(pl, l, e)] : 0;
}

int st_placement_owner(const st_placement_t *pl, int l, int e, int r) {
    if (!s_in_range(pl, l, e) || r < 0 || r >= pl->n_owners[s_slot(pl, l, e)]) return -1;
    return pl->owners[s_slot(pl, l, e) * pl->R + r];
}

static int s_owner_index(const st_placement_t *pl, int node, int l, int e) {
    if (!s_in_range(pl, l, e)) return -1;
    size_t s = s_slot(pl, l, e);
    for (int r = 0; r < pl->n_owners[s]; r++)
        if (pl->owners[s * pl->R + r] == node) return r;
    return -1;
}

bool st_placement_owns(const st_placement_t *pl, int node, int l, int e) { return s_owner_index(pl, node, l, e) >= 0; }

bool st_placement_pinned(const st_placement_t *pl, int node, int l, int e) {
    int r = s_owner_index(pl, node, l, e);
    return r >= 0 && pl->pinned[s_slot(pl, l, e) * pl->R + r];
}

int st_placement_node_experts(const st_placement_t *pl, int node) {
    return node >= 0 && node < pl->n_nodes ? pl->node_count[node] : 0;
}

uint64_t st_placement_node_bytes(const st_placement_t *pl, int node) {
    return node >= 0 && node < pl->n_nodes ? pl->node_bytes[node] : 0;
}

uint64_t st_placement_node_room(const st_placement_t *pl, int node) {
    return node >= 0 && node < pl->n_nodes ? pl->node_room[node] : 0;
}

static int s_pinned_count(const st_placement_t *pl, int node) {
    int n = 0;
    for (size_t s = 0; s < (size_t)pl->n_layer * pl->n_expert; s++)
        for (int r = 0; r < pl->n_owners[s]; r++) n += pl->owners[s * pl->R + r] == node && pl->pinned[s * pl->R + r];
    return n;
}

void st_placement_print(const st_placement_t *pl, FILE *f, const char *const *names) {
    fprintf(f, "placement: %d layers x %d experts of up to %.2f MiB on %d node%s, replication %d", pl->n_layer,
            pl->n_expert, (double)pl->max_bytes / (1 << 20), pl->n_nodes, pl->n_nodes == 1 ? "" : "s", pl->R);
    if (pl->dropped) fprintf(f, " (%d replicas did not fit in RAM)", pl->dropped);
    if (pl->n_head)
        fprintf(f, "; head: %d slices of up to %.2f MiB, %d copies each", pl->n_head,
                (double)st_placement_head_slice_bytes(pl->head_bound[pl->n_head], pl->head_row_bytes, pl->n_head) /
                    (1 << 20),
                pl->head_R);
    if (pl->head_dropped) fprintf(f, " (%d slice replicas did not fit in RAM)", pl->head_dropped);
    fprintf(f, "\n");
    for (int i = 0; i < pl->n_nodes; i++) {
        int lo = pl->n_expert, hi = 0;
        for (int l = 0; l < pl->n_layer; l++) {
            int n = 0;
            for (int e = 0; e < pl->n_expert; e++) n += st_placement_owns(pl, i, l, e);
            lo = n < lo ? n : lo;
            hi = n > hi ? n : hi;
        }
        fprintf(f, "  node %d %-28s %5d experts %9.1f MiB, %d-%d per layer, %d pinned", i,
                names && names[i] ? names[i] : "", pl->node_count[i],
                (double)st_placement_node_bytes(pl, i) / (1 << 20), lo, hi, s_pinned_count(pl, i));
        if (pl->n_head) {
            fprintf(f, ", head slices");
            for (int k = 0; k < pl->n_head; k++)
                for (int r = 0; r < pl->head_n_owners[k]; r++)
                    if (pl->head_owners[k * ST_PLACE_MAX_HEAD_COPIES + r] == i) fprintf(f, " %d%s", k, r ? "r" : "");
            fprintf(f, " (%.1f MiB)", (double)pl->node_head[i] / (1 << 20));
        }
        fprintf(f, "\n");
    }
    for (int i = 0; i < pl->n_nodes; i++) /* beyond its room a node reads experts from its store per use */
        if (pl->node_room[i] && (uint64_t)pl->node_count[i] > pl->node_room[i])
            st_log(ST_LOG_WARN,
                   "node %d %s: its share, %d experts (%.1f MiB), exceeds its room for %llu in RAM (%.1f MiB at "
                   "%.2f MiB each, beside %.1f MiB of head slices): %llu will be read from its store when used "
                   "(slower); add nodes or memory to keep every expert in RAM",
                   i, names && names[i] ? names[i] : "", pl->node_count[i], (double)pl->node_bytes[i] / (1 << 20),
                   (unsigned long long)pl->node_room[i], (double)(pl->node_room[i] * pl->node_cost[i]) / (1 << 20),
                   (double)pl->node_cost[i] / (1 << 20), (double)pl->node_head[i] / (1 << 20),
                   (unsigned long long)((uint64_t)pl->node_count[i] - pl->node_room[i]));
}

int st_placement_save_json(const st_placement_t *pl, const char *path, const char *const *names,
                           const char *model_hash_hex) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return st_fail(ST_ENOMEM, "no memory");
    if (model_hash_hex) cJSON_AddStringToObject(o, "model_hash", model_hash_hex);
    cJSON_AddNumberToObject(o, "n_layer", pl->n_layer);
    cJSON_AddNumberToObject(o, "n_expert", pl->n_expert);
    cJSON_AddNumberToObject(o, "expert_bytes", (double)pl->max_bytes); /* the largest layer's */
    cJSON_AddNumberToObject(o, "replication", pl->R);
    cJSON_AddNumberToObject(o, "replicas_dropped", pl->dropped);
    cJSON *jn = cJSON_AddArrayToObject(o, "nodes");
    for (int i = 0; i < pl->n_nodes; i++) {
        cJSON *n = cJSON_CreateObject();
        cJSON_AddStringToObject(n, "name", names && names[i] ? names[i] : "");
        cJSON_AddNumberToObject(n, "experts", pl->node_count[i]);
        cJSON_AddNumberToObject(n, "bytes", (double)st_placement_node_bytes(pl, i));
        cJSON_AddNumberToObject(n, "pinned", s_pinned_count(pl, i));
        cJSON_AddNumberToObject(n, "head_slices", pl->node_head_count[i]);
        cJSON_AddNumberToObject(n, "head_bytes", (double)pl->node_head[i]);
        cJSON_AddItemToArray(jn, n);
    }
    if (pl->n_head) { /* "head": {"slices": [{"lo", "hi", "nodes": [primary, replicas...]}...]} */
        cJSON *jh = cJSON_AddObjectToObject(o, "head");
        cJSON_AddNumberToObject(jh, "rows", pl->head_bound[pl->n_head]);
        cJSON_AddNumberToObject(jh, "row_bytes", (double)pl->head_row_bytes);
        cJSON_AddNumberToObject(jh, "copies", pl->head_R);
        cJSON_AddNumberToObject(jh, "replicas_dropped", pl->head_dropped);
        cJSON *js = cJSON_AddArrayToObject(jh, "slices");
        for (int k = 0; k < pl->n_head; k++) {
            cJSON *sl = cJSON_CreateObject();
            cJSON_AddNumberToObject(sl, "lo", pl->head_bound[k]);
            cJSON_AddNumberToObject(sl, "hi", pl->head_bound[k + 1]);
            cJSON_AddItemToObject(
                sl, "nodes",
                cJSON_CreateIntArray(pl->head_owners + k * ST_PLACE_MAX_HEAD_COPIES, pl->head_n_owners[k]));
            cJSON_AddItemToArray(js, sl);
        }
    }
    /* layers[l][e] = [owner nodes...]; a "pinned" list of [layer, expert, node] */
    cJSON *jl = cJSON_AddArrayToObject(o, "layers");
    cJSON *jp = cJSON_AddArrayToObject(o, "pinned");
    for (int l = 0; l < pl->n_layer; l++) {
        cJSON *row = cJSON_CreateArray();
        for (int e = 0; e < pl->n_expert; e++) {
            size_t s = s_slot(pl, l, e);
            cJSON_AddItemToArray(row, cJSON_CreateIntArray(pl->owners + s * pl->R, pl->n_owners[s]));
            for (int r = 0; r < pl->n_owners[s]; r++)
                if (pl->pinned[s * pl->R + r]) {
                    int v[3] = {l, e, pl->owners[s * pl->R + r]};
                    cJSON_AddItemToArray(jp, cJSON_CreateIntArray(v, 3));
                }
        }
        cJSON_AddItemToArray(jl, row);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return st_fail(ST_ENOMEM, "no memory for the placement JSON");
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= sizeof tmp) {
        free(text);
        return st_fail(ST_EINVAL, "path too long");
    }
    FILE *f = fopen(tmp, "w");
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f) ok = fclose(f) == 0 && ok;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return st_fail(ST_EIO, "cannot write %s", path);
    }
    return 0;
}
