/* setup: the coordinator's cluster as steps (see setup.h). */
#include "setup.h"

#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "cluster_file.h"
#include "curve.h"
#include "node_mem.h"
#include "pair.h"
#include "st_log.h"

#define PROG "st-coordinator"

/* Nodes that answer within this of the first are placed together: nodes
 * booting together would otherwise each take a placement (and pushes) of
 * their own. */
#define JOIN_GRACE_MS 1000

/* How often the HTTP view asks each node for its board: the view refreshes
 * once a second, and memory and temperature change more slowly. */
#define BOARD_EVERY_MS 2000

struct st_coord {
    st_coord_opts_t o;
    const st_model_t *m;
    st_wire_shape_t shape;
    st_node_addr_t *addrs; /* the nodes given at the start */
    int n_addrs;
    st_cluster_t *cl;
    st_remote_head_t *rh; /* the head sharded over the nodes (NULL: here) */
    bool head_decided;
    st_expert_hashes_t *hashes;
    st_placement_t *pl; /* NULL: no node placed yet */
    st_remote_moe_t *rm;
    st_pair_t *pair;      /* --pair: boards pairing (NULL: none) */
    bool waiting;         /* for --min-nodes */
    double wait_until_ms; /* --min-nodes-timeout (INFINITY: none) */
    struct drained {      /* per node index (n_drained of them) */
        bool on;          /* st_coord_drain took it out of placement */
        uint32_t n_kept;  /* its share then: still in its store, so an undrain need not send it again */
        st_wire_ref_t *kept;
    } * drained;
    int n_drained;
};

/* ---- node list ------------------------------------------------------------ */

static int s_add_node(st_node_addr_t **v, int *n, const char *url, size_t url_len, const char *key, size_t key_len) {
    if (url_len == 0 || url_len >= sizeof((*v)->url)) {
        fprintf(stderr, PROG ": bad node address '%.*s'\n", (int)url_len, url);
        return -1;
    }
    if (key_len && key_len != ST_Z85_KEY_LEN) {
        fprintf(stderr, PROG ": node %.*s: the public key must be %d Z85 characters\n", (int)url_len, url,
                ST_Z85_KEY_LEN);
        return -1;
    }
    const bool bare = !memmem(url, url_len, "://", 3); /* HOST:PORT, as st-node --listen takes it */
    if (bare && url_len + 6 >= sizeof((*v)->url)) {
        fprintf(stderr, PROG ": bad node address '%.*s'\n", (int)url_len, url);
        return -1;
    }
    st_node_addr_t *nv = realloc(*v, (size_t)(*n + 1) * sizeof *nv);
    if (!nv) return -1;
    *v = nv;
    memset(&nv[*n], 0, sizeof nv[*n]);
    snprintf(nv[*n].url, sizeof nv[*n].url, "%s%.*s", bare ? "tcp://" : "", (int)url_len, url);
    memcpy(nv[*n].server_key, key, key_len);
    (*n)++;
    return 0;
}

st_node_addr_t *st_coord_node_list(const char *nodes, const char *cluster_file, int *n, bool allow_empty) {
    st_node_addr_t *v = NULL;
    *n = 0;
    if (nodes) {
        for (const char *p = nodes; *p;) {
            size_t len = strcspn(p, ",");
            if (len && s_add_node(&v, n, p, len, "", 0) < 0) goto fail;
            p += len + (p[len] == ',');
        }
    }
    if (cluster_file) {
        FILE *f = fopen(cluster_file, "r");
        if (!f) {
            fprintf(stderr, PROG ": cannot read the cluster file %s: %s\n", cluster_file, strerror(errno));
            goto fail;
        }
        char *line = NULL; /* any length: a long comment read in pieces would leave a piece as a node */
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
            line[strcspn(line, "\r\n")] = '\0';
            const char *url = line + strspn(line, " \t");
            if (*url == '#') continue; /* only a whole line: '#' is also a Z85 character, so keys may hold it */
            size_t ul = strcspn(url, " \t");
            const char *key = url + ul + strspn(url + ul, " \t");
            size_t kl = strcspn(key, " \t");
            if (ul && s_add_node(&v, n, url, ul, key, kl) < 0) {
                free(line);
                fclose(f);
                goto fail;
            }
        }
        free(line);
        fclose(f);
    }
    if (*n == 0 && allow_empty) return v ? v : calloc(1, sizeof *v);
    if (*n == 0) {
        fprintf(stderr, PROG ": no nodes: give --nodes URL,... or --cluster FILE\n");
        goto fail;
    }
    return v;
fail:
    free(v);
    return NULL;
}

/* ---- state files beside the model ----------------------------------------- */

/* path of the state file MODEL+suffix, in state_dir or beside the model */
static void s_state_path(const st_coord_t *c, const char *suffix, char *out, size_t cap) {
    const char *model = c->o.model_path;
    if (!c->o.state_dir) {
        snprintf(out, cap, "%s%s", model, suffix);
        return;
    }
    const char *base = strrchr(model, '/');
    snprintf(out, cap, "%s/%s%s", c->o.state_dir, base ? base + 1 : model, suffix);
}

/* Routing profile: "st-profile 1 L X" then L lines of X counts. */
static uint64_t *s_profile_load(const char *path, int L, int X) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    int v, l, x;
    uint64_t *c = NULL;
    if (fscanf(f, "st-profile %d %d %d", &v, &l, &x) == 3 && v == 1 && l == L && x == X &&
        (c = calloc((size_t)L * X, sizeof *c))) {
        for (size_t i = 0; i < (size_t)L * X; i++) {
            unsigned long long u;
            if (fscanf(f, "%llu", &u) != 1) {
                free(c);
                c = NULL;
                break;
            }
            c[i] = u;
        }
    }
    fclose(f);
    return c;
}

static void s_profile_save(const char *path, const uint64_t *add, int L, int X) {
    uint64_t *c = s_profile_load(path, L, X);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    bool ok = f != NULL;
    if (f) {
        fprintf(f, "st-profile 1 %d %d\n", L, X);
        for (int l = 0; l < L; l++)
            for (int e = 0; e < X; e++)
                fprintf(f, "%llu%c", (unsigned long long)(add[l * X + e] + (c ? c[l * X + e] : 0)),
                        e + 1 == X ? '\n' : ' ');
        ok = fclose(f) == 0;
    }
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        st_log(ST_LOG_WARN, "cannot write the routing profile %s", path);
    }
    free(c);
}

/* ---- placement ------------------------------------------------------------ */

static int s_read_shard(void *arg, uint32_t layer, uint32_t e, uint64_t off, void *dst, size_t len) {
    return st_expert_hashes_read(((st_coord_t *)arg)->hashes, layer, e, off, dst, len);
}

/* Whether node i was taken out of placement (drained or removed): it gets no share. */
static bool s_left(const st_coord_t *c, int i) {
    return (i < c->n_drained && c->drained[i].on) || st_cluster_is_removed(c->cl, i);
}

/* How s_place places: at setup, a join, or an st-ctl action. */
typedef struct {
    const char *what;  /* NULL at setup, else "join", "drain"...: the label of the summary line */
    bool keep_down;    /* a node that is down keeps its share (it rejoins later) */
    bool live_profile; /* this run's routing counts join the saved profile (rebalance) */
    int defer;         /* node whose ASSIGN goes out only after the others have their experts, or -1 */
} place_how_t;

/* What a node has for cached experts and head slices, and what one expert costs of it: its
 * INVENTORY's; from a node before those fields, st-plan's rule (node_mem.h) on its --mem. */
static void s_node_room(const st_coord_t *c, const st_wire_inventory_t *inv, uint64_t *room, uint64_t *cost) {
    if (inv->expert_cost) {
        *room = inv->room;
        *cost = inv->expert_cost;
        return;
    }
    const st_wire_shape_t *s = &c->shape;
    const uint64_t eb = st_wire_max_expert_bytes(s);
    const uint64_t fixed = st_node_fixed_bytes(s->n_layer * s->n_expert, eb, st_wire_max_tokens(s), s->n_expert_used,
                                               s->n_embd, (int)inv->threads);
    *room = inv->mem_budget > fixed ? inv->mem_budget - fixed : 0;
    *cost = st_node_expert_cost(eb, 0);
}

/* --head: sharded or here, decided once at the first placement over `up` nodes. */
static void s_head_decide(st_coord_t *c, int up) {
    c->head_decided = true;
    if (c->o.head == ST_HEAD_LOCAL) return;
    const uint64_t slice = st_remote_head_slice_bytes(c->m, up);
    bool room = true;
    for (int i = 0; i < st_cluster_n_nodes(c->cl); i++) {
        const st_wire_inventory_t *inv = st_cluster_inventory(c->cl, i);
        uint64_t node_room = 0, cost;
        if (inv) s_node_room(c, inv, &node_room, &cost);
        if (st_cluster_is_up(c->cl, i) && inv && node_room / 4 < slice) room = false;
    }
    if (c->o.head == ST_HEAD_AUTO && !room) {
        st_log(ST_LOG_INFO, "head: computed here (--head local): a slice of %llu B is over a quarter of a node's room",
               (unsigned long long)slice);
        return;
    }
    if (!room)
        st_log(ST_LOG_WARN, "head: --head sharded with slices of %llu B: some node gives most of its room to it",
               (unsigned long long)slice);
    char path[4096];
    s_state_path(c, ".st-head-hashes", path, sizeof path);
    c->rh = st_remote_head_new(c->m, c->cl, (int)c->o.timeout_ms, (int)c->o.push_timeout_ms, c->shape.model_hash, path);
    if (!c->rh)
        st_log(ST_LOG_WARN, "head: no memory for the sharded head: computed here");
    else
        st_log(ST_LOG_INFO, "head: sharded over %d nodes (slices of %llu B at most)", up, (unsigned long long)slice);
}

/* Places the experts over the nodes and sends each node up its ASSIGN, then
 * pushes what it lacks. A node "holds" an expert when its INVENTORY showed
 * it with the right hash, or when it is in the share it was last assigned
 * (and pushed): placement keeps experts where they are, so when a node joins
 * only what it takes over moves. With keep_down (a join), a node that is
 * down but has a share keeps it (it rejoins later) instead of handing it to
 * the others. A drained or removed node gets nothing; a drained node is told
 * last (defer), once the others hold its experts, so a failed push leaves it
 * its share. *out gets the placement (NULL when no node is up), chg (may be
 * NULL) what moved. 0, or an exit status. */
static int s_place(st_coord_t *c, st_placement_t **out, const place_how_t *how, st_coord_change_t *chg) {
    const bool join = how->what != NULL;
    const st_coord_opts_t *ca = &c->o;
    const st_model_t *m = c->m;
    const int L = m->cfg.n_layer, X = m->cfg.n_expert, N = st_cluster_n_nodes(c->cl);
    char path[4096], hex[2 * ST_WIRE_HASH_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, c->shape.model_hash, ST_WIRE_HASH_BYTES);
    st_place_node_t *pn = calloc((size_t)N, sizeof *pn);
    uint8_t *held = calloc((size_t)N * L * X, 1);
    double *prof = NULL;
    s_state_path(c, ".st-profile", path, sizeof path);
    uint64_t *counts = s_profile_load(path, L, X);
    if (counts && (prof = calloc((size_t)L * X, sizeof *prof)))
        for (size_t i = 0; i < (size_t)L * X; i++) prof[i] = (double)counts[i];
    free(counts);
    const char **names = calloc((size_t)N, sizeof *names);
    st_cluster_assign_t *as = calloc((size_t)N, sizeof *as);
    uint32_t *before = calloc((size_t)N, sizeof *before); /* experts of each node's previous share */
    if (how->live_profile && c->rm && (prof || (prof = calloc((size_t)L * X, sizeof *prof)))) {
        const uint64_t *live = st_remote_moe_route_counts(c->rm);
        for (size_t i = 0; i < (size_t)L * X; i++) prof[i] += (double)live[i];
    }
    st_placement_t *pl = NULL;
    int rc = pn && held && names && as && before ? 0 : 1;
    uint64_t held_total = 0;
    int n_in = 0; /* nodes up that take a share */
    for (int i = 0; rc == 0 && i < N; i++) {
        names[i] = st_cluster_url(c->cl, i);
        const st_wire_inventory_t *inv = st_cluster_inventory(c->cl, i);
        const st_wire_ref_t *share = st_cluster_share(c->cl, i, &before[i]);
        if (s_left(c, i) || (!st_cluster_is_up(c->cl, i) && !(how->keep_down && before[i])) || !inv)
            continue; /* budget 0: gets nothing */
        n_in += st_cluster_is_up(c->cl, i);
        uint8_t *h = held + (size_t)i * L * X;
        for (uint32_t k = 0; k < inv->n_held; k++) {
            const st_wire_ref_t *r = &inv->held[k];
            const uint8_t *want = st_expert_hash(c->hashes, (int)r->layer, (int)r->expert);
            if (r->layer < (uint32_t)L && r->expert < (uint32_t)X && r->has_hash && want &&
                !memcmp(want, r->hash, ST_WIRE_HASH_BYTES))
                h[r->layer * X + r->expert] = 1;
        }
        for (uint32_t k = 0; k < before[i]; k++)
            if (share[k].layer < (uint32_t)L && share[k].expert < (uint32_t)X)
                h[share[k].layer * X + share[k].expert] = 1;
        for (uint32_t k = 0; i < c->n_drained && k < c->drained[i].n_kept; k++) /* an undrained node's old share */
            h[c->drained[i].kept[k].layer * X + c->drained[i].kept[k].expert] = 1;
        uint64_t n_held = 0;
        for (int s = 0; s < L * X; s++) n_held += h[s];
        held_total += n_held;
        uint64_t room, cost;
        s_node_room(c, inv, &room, &cost);
        /* a store record fits the largest layer's expert */
        pn[i] = (st_place_node_t){.mem_budget = inv->mem_budget,
                                  .room = room,
                                  .expert_cost = cost,
                                  .store_cap = n_held * st_wire_max_expert_bytes(&c->shape) + inv->store_free,
                                  .held = h};
        st_log(ST_LOG_INFO,
               "node %d %s (%s): --mem %.1f MiB, %.1f MiB of it for experts (%.3f MiB each)%s, store free %.1f MiB, "
               "holds %llu experts",
               i, names[i], inv->node_id, (double)inv->mem_budget / (1 << 20), (double)room / (1 << 20),
               (double)cost / (1 << 20), inv->expert_cost ? "" : " by st-plan's rule",
               (double)inv->store_free / (1 << 20), (unsigned long long)n_held);
    }
    /* the head's slices go to the nodes up that take a share (placement counts them in their budgets) */
    if (!c->head_decided && n_in > 0) s_head_decide(c, n_in);
    for (int i = 0; rc == 0 && c->rh && i < N; i++) pn[i].head = st_cluster_is_up(c->cl, i) && !s_left(c, i);
    uint64_t layer_bytes[ST_WIRE_MAX_LAYERS]; /* of one expert, per layer: types differ by layer */
    for (int l = 0; l < L && l < ST_WIRE_MAX_LAYERS; l++) layer_bytes[l] = st_wire_expert_bytes(&c->shape, (uint32_t)l);
    if (rc == 0 && n_in > 0) { /* nobody up: no placement (NULL), every expert computed here */
        st_place_params_t pp = {.n_layer = L,
                                .n_expert = X,
                                .replication = (int)ca->replication,
                                .profile = prof,
                                .pin_fraction = ca->pin_fraction,
                                .layer_bytes = layer_bytes,
                                .head_rows = c->rh ? (uint32_t)m->cfg.n_vocab : 0,
                                .head_row_bytes = m->output.row_bytes};
        if (!(pl = st_placement_new(&pp, pn, N))) rc = 1;
    }
    if (rc == 0 && n_in > 0) {
        st_placement_print(pl, stderr, names);
        s_state_path(c, ".placement.json", path, sizeof path);
        if (st_placement_save_json(pl, path, names, hex) < 0)
            st_log(ST_LOG_WARN, "placement not saved");
        else
            st_log(ST_LOG_INFO, "placement saved to %s", path);
    }

    /* ASSIGN and push */
    if (rc == 0 && n_in > 0) {
        for (int i = 0; i < N; i++) {
            int n = st_placement_node_experts(pl, i);
            as[i].experts = calloc((size_t)n + 1, sizeof *as[i].experts);
            as[i].pinned = calloc((size_t)n + 1, sizeof *as[i].pinned);
            if (!as[i].experts || !as[i].pinned) {
                rc = 1;
                break;
            }
            for (int l = 0; l < L; l++)
                for (int e = 0; e < X; e++) {
                    if (!st_placement_owns(pl, i, l, e)) continue;
                    st_wire_ref_t r = {(uint32_t)l, (uint32_t)e, true, {0}};
                    memcpy(r.hash, st_expert_hash(c->hashes, l, e), ST_WIRE_HASH_BYTES);
                    as[i].experts[as[i].n_experts++] = r;
                    if (st_placement_pinned(pl, i, l, e)) as[i].pinned[as[i].n_pinned++] = r;
                }
        }
        if (rc == 0) {
            if (how->defer >= 0) as[how->defer].keep = true;
            st_cluster_assign(c->cl, as);
            uint32_t missing = 0;
            for (int i = 0; i < N; i++)
                if (st_cluster_is_up(c->cl, i)) missing += as[i].n_missing;
            int64_t pushed = st_cluster_push(c->cl, as, s_read_shard, c, (int)ca->push_timeout_ms, ca->quiet_push);
            if (pushed >= 0 && how->defer >= 0) { /* the others hold its experts now: the drained node last */
                for (int i = 0; i < N; i++) as[i].keep = i != how->defer;
                st_cluster_assign(c->cl, as);
            }
            if (chg) {
                chg->experts_pushed = missing;
                chg->bytes_pushed = pushed > 0 ? pushed : 0;
            }
            if (pushed < 0)
                rc = 1;
            else if (!join)
                fprintf(stderr, "cluster: %d of %d nodes up, %llu experts already held, %u pushed (%lld shard bytes)\n",
                        st_cluster_n_up(c->cl), N, (unsigned long long)held_total, missing, (long long)pushed);
            else { /* what moved: per node, experts before -> after and how many it was sent */
                fprintf(stderr, "cluster: %s: %d of %d nodes up, %u experts pushed (%lld shard bytes);", how->what,
                        st_cluster_n_up(c->cl), N, missing, (long long)pushed);
                for (int i = 0; i < N; i++)
                    fprintf(stderr, " node %d %u -> %u experts, %u pushed;", i, before[i], as[i].n_experts,
                            st_cluster_is_up(c->cl, i) ? as[i].n_missing : 0);
                fprintf(stderr, "\n");
            }
        }
    }
    /* the head's slices, over the nodes up now (they hold their ASSIGN) */
    if (rc == 0 && n_in > 0 && c->rh && st_remote_head_place(c->rh, pl, ca->quiet_push) < 0) rc = 1;
    st_cluster_assign_free(as, N);
    free(as);
    free(pn);
    free(held);
    free(prof);
    free(names);
    free(before);
    if (rc) st_placement_destroy(&pl);
    *out = pl;
    return rc;
}

/* ---- pairing ---------------------------------------------------------------- */

/* --pair: listens for boards. With no node in the cluster file yet, the
 * cluster starts empty and the run waits for the first board (--min-nodes
 * 1 unless given): a server answers /health meanwhile, with the code. */
static int s_pair_start(st_coord_t *c, const char *public_z85) {
    uint8_t key[ST_PAKE_KEY];
    if (!zmq_z85_decode(key, public_z85)) return ST_EINVAL;
    st_pair_opts_t po = {.url = c->o.pair_url,
                         .cluster_file = c->o.cluster_file,
                         .ttl_s = (int)c->o.pair_ttl_s,
                         .max_attempts = 10,
                         .discovery_port = (int)c->o.discovery_port,
                         .code_file = c->o.pair_code_file}; /* max_total_attempts: pair.c's default, 1000 */
    if (!(c->pair = st_pair_new(&po, key))) return ST_EIO;
    if (c->n_addrs > 0) return 0;
    if (c->o.min_nodes < 1) c->o.min_nodes = 1;
    st_log(ST_LOG_INFO, "no node in %s yet: waiting for %ld board(s) to pair (st-node --join %s --code CODE ...)",
           c->o.cluster_file, c->o.min_nodes, st_pair_endpoint(c->pair));
    return 0;
}

/* ---- setup ------------------------------------------------------------------ */

st_coord_t *st_coord_new(const st_model_t *m, const st_coord_opts_t *o, const st_node_addr_t *nodes, int n_nodes) {
    st_coord_t *c = calloc(1, sizeof *c);
    if (!c || !(c->addrs = malloc((size_t)(n_nodes + 1) * sizeof *c->addrs))) { /* + 1: --pair may start empty */
        free(c);
        st_fail(ST_ENOMEM, "no memory");
        return NULL;
    }
    c->o = *o;
    c->m = m;
    memcpy(c->addrs, nodes, (size_t)n_nodes * sizeof *nodes);
    c->n_addrs = n_nodes;
    if (st_remote_model_shape(m, &c->shape) < 0) st_coord_destroy(&c);
    return c;
}

void st_coord_destroy(st_coord_t **cp) {
    st_coord_t *c = *cp;
    if (!c) return;
    st_pair_destroy(&c->pair);
    st_remote_moe_destroy(&c->rm);
    st_remote_head_destroy(&c->rh);
    st_placement_destroy(&c->pl);
    st_expert_hashes_destroy(&c->hashes);
    st_cluster_destroy(&c->cl);
    free(c->addrs);
    for (int i = 0; i < c->n_drained; i++) free(c->drained[i].kept);
    free(c->drained);
    free(c);
    *cp = NULL;
}

int st_coord_setup(st_coord_t *c) {
    const st_coord_opts_t *o = &c->o;
    char path[4096];
    st_cluster_opts_t co = {.insecure = o->insecure, .timeout_ms = (int)o->timeout_ms, .id = o->id};
    co.max_frame = (int64_t)st_wire_max_result_frame(&c->shape) + 4096;
    if (co.max_frame < (int64_t)ST_WIRE_MAX_FRAME + 4096)
        co.max_frame = (int64_t)ST_WIRE_MAX_FRAME + 4096; /* head results */
    if (o->insecure)
        st_log(ST_LOG_WARN, "--insecure: traffic to the nodes is neither encrypted nor authenticated");
    else if (st_curve_load_secret(o->key_file, co.secret_key, co.public_key) < 0)
        return 1;
    if (o->pair_url && s_pair_start(c, co.public_key) < 0) {
        sodium_memzero(co.secret_key, sizeof co.secret_key);
        return 1;
    }
    c->cl = st_cluster_new(c->addrs, c->n_addrs, &co);
    sodium_memzero(co.secret_key, sizeof co.secret_key);
    if (!c->cl) return 1;

    int up = st_cluster_hello(c->cl, &c->shape);
    if (up < 0) return 1;
    if (up == 0 && !o->min_nodes) {
        if (o->no_fallback) {
            fprintf(stderr, PROG ": no node answered (see above) and --no-fallback is set\n");
            return 1;
        }
        st_log(ST_LOG_WARN, "no node answered: every expert is computed here, from the model file, until nodes "
                            "answer (they are probed)");
    }

    /* expert hashes: the ASSIGN carries one per expert, and held shards are checked against them */
    s_state_path(c, ".st-hashes", path, sizeof path);
    c->hashes = st_expert_hashes_new(c->m, &c->shape, path);
    if (!c->hashes || st_expert_hashes_fill(c->hashes, NULL, (int)o->threads) < 0) return 1;
    st_expert_hashes_save(c->hashes);

    c->wait_until_ms = o->min_nodes_timeout_s ? st_now_ms() + 1e3 * (double)o->min_nodes_timeout_s : INFINITY;
    c->waiting = up < o->min_nodes;
    if (c->waiting) { /* placed once enough nodes answered (st_coord_join), not over the first ones */
        st_log(ST_LOG_INFO, "waiting for %ld nodes (--min-nodes): %d up; the experts are placed when they answer",
               o->min_nodes, up);
        return 0;
    }
    const place_how_t how = {.defer = -1};
    int rc = s_place(c, &c->pl, &how, NULL);
    if (rc) return rc;
    if (st_cluster_n_up(c->cl) < up && o->no_fallback) {
        fprintf(stderr, PROG ": a node failed during setup (see above) and --no-fallback is set\n");
        return 1;
    }
    return 0;
}

bool st_coord_waiting(st_coord_t *c, char *why, size_t cap) {
    if (!c->waiting || !c->cl) return false;
    const int up = st_cluster_n_up(c->cl), want = (int)c->o.min_nodes;
    if (up >= want) {
        st_log(ST_LOG_INFO, "%d of %d nodes up (--min-nodes %d): going on", up, st_cluster_n_nodes(c->cl), want);
        c->waiting = false;
    } else if (st_now_ms() > c->wait_until_ms) {
        st_log(ST_LOG_WARN,
               "--min-nodes %d: only %d node(s) up after %ld s: going on with them, the others join when they answer",
               want, up, c->o.min_nodes_timeout_s);
        c->waiting = false;
    } else if (why) {
        snprintf(why, cap, "%d of the %d nodes of --min-nodes up, %d answered", up, want,
                 up + st_cluster_n_joining(c->cl, NULL));
    }
    return c->waiting;
}

int st_coord_wait(st_coord_t *c) {
    while (st_coord_waiting(c, NULL, 0)) {
        st_coord_between_steps(c);
        if (st_cluster_idle(c->cl, 100) < 0) return 1;
    }
    st_coord_join(c); /* after --min-nodes-timeout: the nodes that are up */
    if (st_cluster_n_up(c->cl) == 0 && c->o.no_fallback) {
        fprintf(stderr, PROG ": no node is up (see above) and --no-fallback is set\n");
        return 1;
    }
    return 0;
}

int st_coord_max_batch(const st_coord_t *c, int n_batch) {
    uint32_t max_tok = st_wire_max_tokens(&c->shape); /* one EXPERT_COMPUTE per node per layer and batch */
    if ((uint32_t)n_batch <= max_tok) return n_batch;
    st_log(ST_LOG_INFO, "--batch %d capped at %u tokens (the largest expert request)", n_batch, max_tok);
    return (int)max_tok;
}

int st_coord_attach(st_coord_t *c, st_ctx_t *ctx) {
    st_remote_opts_t ro = {(int)c->o.timeout_ms, !c->o.no_fallback,  !c->o.no_prefetch,
                           c->o.stats,           c->o.result_format, c->o.overlap};
    st_remote_moe_destroy(&c->rm);
    c->rm = st_remote_moe_new(ctx, c->cl, c->pl, &ro);
    if (!c->rm) return ST_ENOMEM;
    st_moe_backend_t b = st_remote_moe_backend(c->rm);
    st_ctx_set_moe(ctx, &b);
    if (c->rh) {
        st_head_backend_t hb = st_remote_head_backend(c->rh, ctx);
        st_ctx_set_head(ctx, &hb);
    }
    return 0;
}

/* ---- between steps: nodes that come back, join, are added --------------------- */

void st_coord_between_steps(st_coord_t *c) {
    if (!c->cl) return;
    if (c->pair && st_pair_take(c->pair) > 0) st_coord_reread(c, "pairing"); /* they join as on SIGHUP */
    st_cluster_maintain(c->cl);
    st_coord_join(c);
    if (c->rh) st_remote_head_between_steps(c->rh);
}

void st_coord_idle(st_coord_t *c) {
    if (!c->cl) return;
    st_coord_between_steps(c);
    st_cluster_idle(c->cl, 0);
}

void st_coord_ask_board(st_coord_t *c) {
    if (c->cl) st_cluster_ask_board(c->cl, BOARD_EVERY_MS);
}

int st_coord_join(st_coord_t *c) {
    if (!c->cl) return 0;
    double first;
    const int n = st_cluster_n_joining(c->cl, &first), up = st_cluster_n_up(c->cl);
    bool due = n > 0 && st_now_ms() - first >= JOIN_GRACE_MS;
    if (c->waiting) /* --min-nodes: once, when enough have answered */
        due = (n > 0 || !c->pl) && up + n >= c->o.min_nodes;
    else if (!c->pl && up > 0) /* --min-nodes-timeout passed: the nodes that are up */
        due = true;
    if (!due) return 0;
    const double t0 = st_now_ms();
    st_cluster_admit(c->cl);
    st_log(ST_LOG_INFO, "%d node(s) joining, %d up: placing the experts again", n, up);
    st_placement_t *pl = NULL;
    const place_how_t how = {.what = "join", .keep_down = true, .defer = -1};
    if (s_place(c, &pl, &how, NULL) != 0 || (c->rm && st_remote_moe_set_placement(c->rm, pl) < 0)) {
        st_log(ST_LOG_WARN, "no new placement: the joining nodes get nothing");
        st_placement_destroy(&pl);
        return 0;
    }
    st_placement_destroy(&c->pl); /* the HTTP view reads it on this thread too (scheduler): not in use */
    c->pl = pl;
    st_log(ST_LOG_INFO, "experts placed over %d node(s) in %.0f ms", st_cluster_n_up(c->cl), st_now_ms() - t0);
    return n;
}

int st_coord_reread(st_coord_t *c, const char *why) {
    const char *file = c->o.cluster_file;
    if (!file) {
        st_log(ST_LOG_INFO,
               "%s: the nodes come from --nodes: nothing to re-read (list them in --cluster FILE "
               "to add nodes to a running coordinator)",
               why);
        return 0;
    }
    if (!c->cl) return 0;
    int n_all = 0;
    st_node_addr_t *all = st_coord_node_list(NULL, file, &n_all, false);
    if (!all) {
        st_log(ST_LOG_WARN, "%s: the cluster file %s is unreadable or empty: nothing changes", why, file);
        return 0;
    }
    int n_add = 0;
    for (int i = 0; i < n_all; i++) {
        bool known = false;
        for (int k = 0; k < st_cluster_n_nodes(c->cl) && !known; k++)
            if ((known = !strcmp(all[i].url, st_cluster_url(c->cl, k))) && !c->o.insecure && all[i].server_key[0] &&
                !st_cluster_is_removed(c->cl, k))
                st_cluster_rekey(c->cl, k, all[i].server_key); /* a node that paired again: its new key */
        for (int k = 0; k < n_add && !known; k++) known = !strcmp(all[i].url, all[k].url);
        if (!known) all[n_add++] = all[i];
    }
    int added = n_add ? st_cluster_add(c->cl, all, n_add) : 0;
    free(all);
    if (added < 0)
        st_log(ST_LOG_WARN, "%s: the new nodes could not be added", why);
    else if (n_add == 0)
        st_log(ST_LOG_INFO, "%s: no new node in the cluster file", why);
    else
        st_log(ST_LOG_INFO, "%s: %d new node(s) in the cluster file: they join when they answer", why, added);
    return added > 0 ? added : 0;
}

/* ---- steering (st-ctl): drain, remove, rebalance, between steps -------------- */

__attribute__((format(printf, 3, 4))) static int s_refuse(st_coord_change_t *chg, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(chg->message, sizeof chg->message, fmt, ap);
    va_end(ap);
    st_log(ST_LOG_WARN, "%s", chg->message);
    return code;
}

/* Places again as how says and switches the generation to the result. */
static int s_replace(st_coord_t *c, const place_how_t *how, st_coord_change_t *chg) {
    const double t0 = st_now_ms();
    st_placement_t *pl = NULL;
    if (s_place(c, &pl, how, chg) != 0 || !pl || (c->rm && st_remote_moe_set_placement(c->rm, pl) < 0)) {
        st_placement_destroy(&pl);
        return s_refuse(chg, ST_EIO, "%s: no new placement (see the coordinator's log)", how->what);
    }
    st_placement_destroy(&c->pl); /* the HTTP view reads it on this thread too (scheduler): not in use */
    c->pl = pl;
    chg->ms = st_now_ms() - t0;
    chg->nodes_up = st_cluster_n_up(c->cl);
    return 0;
}

/* Nodes up that take a share, other than node. */
static int s_serving(const st_coord_t *c, int node) {
    int n = 0;
    for (int i = 0; i < st_cluster_n_nodes(c->cl); i++) n += i != node && st_cluster_is_up(c->cl, i) && !s_left(c, i);
    return n;
}

static int s_check_node(const st_coord_t *c, int node, st_coord_change_t *chg) {
    if (!c->cl || node < 0 || node >= st_cluster_n_nodes(c->cl))
        return s_refuse(chg, ST_EINVAL, "there is no node %d", node);
    if (st_cluster_is_removed(c->cl, node))
        return s_refuse(chg, ST_EINVAL, "node %d (%s) was removed", node, st_cluster_url(c->cl, node));
    if (!c->pl) return s_refuse(chg, ST_EINVAL, "no experts are placed yet (waiting for --min-nodes?)");
    return 0;
}

bool st_coord_drained(const st_coord_t *c, int node) { return node < c->n_drained && c->drained[node].on; }

int st_coord_drain(st_coord_t *c, int node, st_coord_change_t *chg) {
    memset(chg, 0, sizeof *chg);
    int rc = s_check_node(c, node, chg);
    if (rc) return rc;
    const char *url = st_cluster_url(c->cl, node);
    if (st_coord_drained(c, node)) {
        snprintf(chg->message, sizeof chg->message, "node %d (%s) is drained already", node, url);
        return 0;
    }
    if (s_serving(c, node) == 0)
        return s_refuse(chg, ST_EINVAL,
                        "node %d (%s) is the only node up that serves experts: draining it would leave them all to "
                        "the coordinator (add a node first)",
                        node, url);
    if (node >= c->n_drained) {
        const int n = st_cluster_n_nodes(c->cl);
        struct drained *d = realloc(c->drained, (size_t)n * sizeof *d);
        if (!d) return s_refuse(chg, ST_ENOMEM, "no memory");
        memset(d + c->n_drained, 0, (size_t)(n - c->n_drained) * sizeof *d);
        c->drained = d;
        c->n_drained = n;
    }
    struct drained *dn = &c->drained[node];
    const int before = st_placement_node_experts(c->pl, node);
    uint32_t n_share;
    const st_wire_ref_t *share = st_cluster_share(c->cl, node, &n_share);
    free(dn->kept);
    dn->n_kept = 0;
    if (n_share && (dn->kept = malloc(n_share * sizeof *dn->kept))) {
        memcpy(dn->kept, share, n_share * sizeof *dn->kept);
        dn->n_kept = n_share;
    }
    dn->on = true;
    st_log(ST_LOG_INFO, "draining node %d (%s): its %d experts move to the other nodes", node, url, before);
    const place_how_t how = {.what = "drain", .keep_down = true, .defer = node};
    if ((rc = s_replace(c, &how, chg)) != 0) {
        dn->on = false;
        return rc;
    }
    chg->experts_moved = before;
    snprintf(chg->message, sizeof chg->message,
             "node %d (%s) drained: its %d experts moved to %d other node(s), %u pushed (%lld shard bytes) in %.0f ms",
             node, url, before, s_serving(c, node), chg->experts_pushed, (long long)chg->bytes_pushed, chg->ms);
    st_log(ST_LOG_INFO, "%s", chg->message);
    return 0;
}

int st_coord_undrain(st_coord_t *c, int node, st_coord_change_t *chg) {
    memset(chg, 0, sizeof *chg);
    int rc = s_check_node(c, node, chg);
    if (rc) return rc;
    const char *url = st_cluster_url(c->cl, node);
    if (!st_coord_drained(c, node)) return s_refuse(chg, ST_EINVAL, "node %d (%s) is not drained", node, url);
    struct drained *dn = &c->drained[node];
    dn->on = false;
    const place_how_t how = {.what = "undrain", .keep_down = true, .defer = -1};
    if ((rc = s_replace(c, &how, chg)) != 0) {
        dn->on = true;
        return rc;
    }
    free(dn->kept); /* its share is the cluster's record again */
    dn->kept = NULL;
    dn->n_kept = 0;
    chg->experts_moved = st_placement_node_experts(c->pl, node);
    snprintf(chg->message, sizeof chg->message,
             "node %d (%s) is back in placement%s: it takes %d experts, %u pushed (%lld shard bytes) in %.0f ms", node,
             url, st_cluster_is_up(c->cl, node) ? "" : " (down: it serves them once it rejoins)", chg->experts_moved,
             chg->experts_pushed, (long long)chg->bytes_pushed, chg->ms);
    st_log(ST_LOG_INFO, "%s", chg->message);
    return 0;
}

int st_coord_remove(st_coord_t *c, int node, st_coord_change_t *chg) {
    memset(chg, 0, sizeof *chg);
    int rc = s_check_node(c, node, chg);
    if (rc) return rc;
    const char *url = st_cluster_url(c->cl, node);
    const int held = st_placement_node_experts(c->pl, node);
    if (st_cluster_is_up(c->cl, node) && !st_coord_drained(c, node))
        return s_refuse(chg, ST_EINVAL, "node %d (%s) is up and serves %d experts: drain it first", node, url, held);
    st_cluster_remove(c->cl, node);
    if (held > 0) { /* down with a share: the others take it */
        const place_how_t how = {.what = "remove", .keep_down = true, .defer = -1};
        if ((rc = s_replace(c, &how, chg)) != 0) return rc;
        chg->experts_moved = held;
    }
    char *msg = chg->message;
    const size_t cap = sizeof chg->message;
    size_t k = (size_t)snprintf(msg, cap, "node %d (%s) removed%s", node, url,
                                held ? ": its experts moved to the nodes up" : " (it held no experts)");
    if (k >= cap) k = cap - 1; /* cut short: what follows is cut */
    /* out of the cluster file too, or it is back at the next start */
    const char *cf = c->o.cluster_file;
    const int dropped = cf ? st_cluster_file_drop(cf, url) : 0;
    if (dropped > 0)
        snprintf(msg + k, cap - k, "; taken out of the cluster file %s", cf);
    else if (dropped < 0)
        snprintf(msg + k, cap - k,
                 "; the cluster file %s could not be rewritten (see the coordinator's log): take its line out by "
                 "hand, or it is back at the next start",
                 cf);
    else
        snprintf(msg + k, cap - k, "%s", cf ? "; the cluster file does not list it" : " (it came from --nodes)");
    st_log(ST_LOG_INFO, "%s", chg->message);
    return 0;
}

int st_coord_rebalance(st_coord_t *c, st_coord_change_t *chg) {
    memset(chg, 0, sizeof *chg);
    if (!c->cl || !c->pl) return s_refuse(chg, ST_EINVAL, "no experts are placed yet (waiting for --min-nodes?)");
    if (s_serving(c, -1) == 0) return s_refuse(chg, ST_EINVAL, "no node is up to place the experts on");
    int down_experts = 0; /* what the coordinator computes now: the shares of nodes that are down */
    for (int i = 0; i < st_cluster_n_nodes(c->cl) && i < st_placement_n_nodes(c->pl); i++)
        if (!st_cluster_is_up(c->cl, i)) down_experts += st_placement_node_experts(c->pl, i);
    const place_how_t how = {.what = "rebalance", .live_profile = true, .defer = -1};
    int rc = s_replace(c, &how, chg);
    if (rc) return rc;
    chg->experts_moved = down_experts;
    snprintf(chg->message, sizeof chg->message,
             "rebalanced over %d node(s) up: %d experts of nodes that are down moved to them, %u pushed (%lld shard "
             "bytes) in %.0f ms",
             s_serving(c, -1), down_experts, chg->experts_pushed, (long long)chg->bytes_pushed, chg->ms);
    st_log(ST_LOG_INFO, "%s", chg->message);
    return 0;
}

/* ---- the end of a run -------------------------------------------------------- */

void st_coord_print_stats(st_coord_t *c, FILE *f) {
    if (!c->rm) return;
    st_remote_moe_finish(c->rm);
    st_remote_moe_print_stats(c->rm, f);
    if (c->rh)
        st_remote_head_print_stats(c->rh, f);
    else
        fprintf(f, "cluster: head computed here (--head local): %zu B of head weights read per hidden state\n",
                (size_t)c->m->output.row_bytes * (size_t)c->m->cfg.n_vocab);
}

void st_coord_save(st_coord_t *c) {
    if (!c->rm) return;
    char path[4096];
    st_remote_moe_finish(c->rm);
    s_state_path(c, ".st-profile", path, sizeof path);
    s_profile_save(path, st_remote_moe_route_counts(c->rm), c->m->cfg.n_layer, c->m->cfg.n_expert);
}

const st_cluster_t *st_coord_cluster(const st_coord_t *c) { return c->cl; }
const st_placement_t *st_coord_placement(const st_coord_t *c) { return c->pl; }
const st_remote_moe_t *st_coord_remote(const st_coord_t *c) { return c->rm; }

bool st_coord_pairing(const st_coord_t *c, char *code, size_t cap, int *seconds_left) {
    char buf[ST_PAKE_CODE_BUF];
    if (!c->pair || cap < sizeof buf) return false;
    st_pair_code(c->pair, buf, seconds_left);
    memcpy(code, buf, sizeof buf);
    return true;
}
