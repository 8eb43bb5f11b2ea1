/* st-coordinator: runs a SmallThinker model with its experts on st-node
 * processes. Same one-shot flags and output as st-run (cli/cli.c), so the
 * two can be compared byte for byte; the experts go through remote_moe.
 *
 * Start-up: load the model (mmap; expert bytes are read only to hash, push
 * or compute them as a fallback), HELLO every node for its INVENTORY, place
 * the experts (placement.c), ASSIGN each node its share, push what it lacks
 * (progress on stderr), then generate. Next to the model (or in --state-dir)
 * it keeps MODEL.placement.json (the placement, for people and tools),
 * MODEL.st-hashes (expert hashes, so the model is hashed once) and
 * MODEL.st-profile (routing counts, so the next placement pins hot experts).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cluster.h"
#include "curve.h"
#include "model.h"
#include "parse.h"
#include "placement.h"
#include "remote_moe.h"
#include "st_log.h"
#ifdef ST_HAVE_SERVER
#include "cluster_view.h"
#endif

#define PROG "st-coordinator"

typedef struct {
    const char *nodes, *cluster_file, *key_file, *state_dir, *id;
    bool insecure, no_fallback, no_prefetch, quiet_push;
    long replication, timeout_ms, push_timeout_ms;
    long min_nodes, min_nodes_timeout_s; /* 0: no minimum; no time limit */
    double pin_fraction;
} coord_args_t;

enum {
    OPT_NODES = ST_CLI_OPT_EXTRA,
    OPT_CLUSTER,
    OPT_KEY,
    OPT_INSECURE,
    OPT_REPL,
    OPT_TIMEOUT,
    OPT_PUSH_TIMEOUT,
    OPT_NO_FALLBACK,
    OPT_NO_PREFETCH,
    OPT_STATE_DIR,
    OPT_PIN,
    OPT_ID,
    OPT_HTTP,
    OPT_QUIET_PUSH,
    OPT_MIN_NODES,
    OPT_MIN_NODES_TIMEOUT
};

static const struct option s_opts[] = {{"nodes", required_argument, 0, OPT_NODES},
                                       {"cluster", required_argument, 0, OPT_CLUSTER},
                                       {"key", required_argument, 0, OPT_KEY},
                                       {"insecure", no_argument, 0, OPT_INSECURE},
                                       {"replication", required_argument, 0, OPT_REPL},
                                       {"timeout-ms", required_argument, 0, OPT_TIMEOUT},
                                       {"push-timeout-ms", required_argument, 0, OPT_PUSH_TIMEOUT},
                                       {"no-fallback", no_argument, 0, OPT_NO_FALLBACK},
                                       {"no-prefetch", no_argument, 0, OPT_NO_PREFETCH},
                                       {"state-dir", required_argument, 0, OPT_STATE_DIR},
                                       {"pin-fraction", required_argument, 0, OPT_PIN},
                                       {"id", required_argument, 0, OPT_ID},
                                       {"http", required_argument, 0, OPT_HTTP},
                                       {"quiet-push", no_argument, 0, OPT_QUIET_PUSH},
                                       {"min-nodes", required_argument, 0, OPT_MIN_NODES},
                                       {"min-nodes-timeout", required_argument, 0, OPT_MIN_NODES_TIMEOUT},
                                       {0, 0, 0, 0}};

static void s_usage(FILE *f) {
    fprintf(
        f, "usage: st-coordinator -m MODEL (--nodes URL,... | --cluster FILE) (--insecure | --key FILE)\n"
           "                      (-p TEXT | -f FILE | --tokens IDS) [options]\n"
           "\n"
           "Runs a SmallThinker GGUF model with its experts on st-node processes; prints exactly what\n"
           "st-run prints for the same flags.\n"
           "\n"
           "cluster\n"
           "      --nodes URLS       comma-separated node endpoints (only with --insecure), e.g.\n"
           "                         tcp://10.0.0.2:5555,tcp://10.0.0.3:5555\n"
           "      --cluster FILE     one node per line: URL NODE_PUBLIC_KEY (Z85, the node's node.pub); lines\n"
           "                         starting with '#' are comments. A node that is down or not started yet is\n"
           "                         probed (500 ms, backing off to 8 s) and joins when it answers: the experts\n"
           "                         are placed again, keeping each where it is. Re-read on SIGHUP (systemctl\n"
           "                         reload): nodes added to it are probed and join the same way\n"
           "      --min-nodes N      generate (or serve: requests wait, /health says \"waiting\") only once N\n"
           "                         nodes are up; the experts are placed once N have answered (default: at once)\n"
           "      --min-nodes-timeout S  wait at most S seconds for --min-nodes, then go on with the nodes that are\n"
           "                         up, the others joining when they answer (default: no limit)\n"
           "      --insecure         plain TCP: no encryption, no authentication (logs a warning)\n"
           "      --key FILE         the coordinator's CURVE secret key file (from st-keygen; give the nodes its\n"
           "                         .pub in their --allow file)\n"
           "      --replication R    copies of each expert, where the nodes' RAM allows (default 1)\n"
           "      --timeout-ms N     deadline of each expert round trip and of ASSIGN (default 10000); the first\n"
           "                         HELLO to a node waits at least 5000 ms (TCP connect and CURVE handshake)\n"
           "      --push-timeout-ms N  deadline of each shard chunk acknowledgement (default 60000)\n"
           "      --no-fallback      fail when a node is down instead of computing its experts here\n"
           "      --no-prefetch      do not send EXPERT_PREFETCH hints after routing\n"
           "      --pin-fraction F   share of a node's RAM for pinned hot experts, with a profile (default 0.5)\n"
           "      --state-dir DIR    where MODEL.placement.json/.st-hashes/.st-profile go (default: beside the model)\n"
           "      --id NAME          coordinator id sent to the nodes (default st-coordinator)\n"
           "      --quiet-push       no shard push progress line\n"
           "      --stats            also: per decode token round trips, bytes and node compute per node\n"
           "\n"
           "generation (as st-run)\n");
    st_cli_usage_options(f);
    st_cli_usage_tail(f);
}

static int s_bad(const char *flag, const char *val) {
    fprintf(stderr, PROG ": invalid value '%s' for %s (see --help)\n", val, flag);
    return 2;
}

static int s_handle(void *arg, int opt, const char *v) {
    coord_args_t *c = arg;
    double d;
    switch (opt) {
    case OPT_NODES: c->nodes = v; break;
    case OPT_CLUSTER: c->cluster_file = v; break;
    case OPT_KEY: c->key_file = v; break;
    case OPT_INSECURE: c->insecure = true; break;
    case OPT_REPL:
        if (!st_parse_int(v, 1, 64, &c->replication)) return s_bad("--replication", v);
        break;
    case OPT_TIMEOUT:
        if (!st_parse_int(v, 1, 86400000, &c->timeout_ms)) return s_bad("--timeout-ms", v);
        break;
    case OPT_PUSH_TIMEOUT:
        if (!st_parse_int(v, 1, 86400000, &c->push_timeout_ms)) return s_bad("--push-timeout-ms", v);
        break;
    case OPT_NO_FALLBACK: c->no_fallback = true; break;
    case OPT_NO_PREFETCH: c->no_prefetch = true; break;
    case OPT_STATE_DIR: c->state_dir = v; break;
    case OPT_PIN:
        if (!st_parse_float(v, 0, 1, &d)) return s_bad("--pin-fraction", v);
        c->pin_fraction = d;
        break;
    case OPT_ID: c->id = v; break;
    case OPT_QUIET_PUSH: c->quiet_push = true; break;
    case OPT_MIN_NODES:
        if (!st_parse_int(v, 1, 4096, &c->min_nodes)) return s_bad("--min-nodes", v);
        break;
    case OPT_MIN_NODES_TIMEOUT:
        if (!st_parse_int(v, 1, 100000000, &c->min_nodes_timeout_s)) return s_bad("--min-nodes-timeout", v);
        break;
    case OPT_HTTP:
        fprintf(stderr, PROG ": the HTTP API (--http) is not built yet; use the one-shot flags (-p ...)\n");
        return 2;
    default: return 2;
    }
    return 0;
}

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

static st_node_addr_t *s_node_list(const coord_args_t *ca, int *n) {
    st_node_addr_t *v = NULL;
    *n = 0;
    if (ca->nodes) {
        for (const char *p = ca->nodes; *p;) {
            size_t len = strcspn(p, ",");
            if (len && s_add_node(&v, n, p, len, "", 0) < 0) goto fail;
            p += len + (p[len] == ',');
        }
    }
    if (ca->cluster_file) {
        FILE *f = fopen(ca->cluster_file, "r");
        if (!f) {
            fprintf(stderr, PROG ": cannot read the cluster file %s: %s\n", ca->cluster_file, strerror(errno));
            goto fail;
        }
        char line[1024];
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = '\0';
            const char *url = line + strspn(line, " \t");
            if (*url == '#') continue; /* only a whole line: '#' is also a Z85 character, so keys may hold it */
            size_t ul = strcspn(url, " \t");
            const char *key = url + ul + strspn(url + ul, " \t");
            size_t kl = strcspn(key, " \t");
            if (ul && s_add_node(&v, n, url, ul, key, kl) < 0) {
                fclose(f);
                goto fail;
            }
        }
        fclose(f);
    }
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

static void s_state_path(const coord_args_t *ca, const char *model, const char *suffix, char *out, size_t cap) {
    if (!ca->state_dir) {
        snprintf(out, cap, "%s%s", model, suffix);
        return;
    }
    const char *base = strrchr(model, '/');
    snprintf(out, cap, "%s/%s%s", ca->state_dir, base ? base + 1 : model, suffix);
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

/* ---- the run ---------------------------------------------------------------- */

typedef struct {
    const coord_args_t *ca;
    const st_cli_args_t *a;
    st_model_t *m;
    st_wire_shape_t shape;
    st_node_addr_t *addrs;
    int n_nodes;
    st_cluster_t *cl;
    st_expert_hashes_t *hashes;
    st_placement_t *pl;
    st_remote_moe_t *rm;
    bool serving;         /* --http: the server waits for --min-nodes, not the setup */
    bool waiting;         /* for --min-nodes */
    double wait_until_ms; /* --min-nodes-timeout (INFINITY: none) */
} coord_t;

static int s_read_shard(void *arg, uint32_t layer, uint32_t e, uint64_t off, void *dst, size_t len) {
    return st_remote_expert_read(((coord_t *)arg)->m, layer, e, off, dst, len);
}

static int s_load_key(const char *path, char secret[ST_Z85_KEY_LEN + 1], char public[ST_Z85_KEY_LEN + 1]) {
    return st_curve_load_secret(path, secret, public) < 0 ? -1 : 0;
}

/* Places the experts over the nodes and sends each node up its ASSIGN, then
 * pushes what it lacks. A node "holds" an expert when its INVENTORY showed
 * it with the right hash, or when it is in the share it was last assigned
 * (and pushed): placement keeps experts where they are, so when a node joins
 * only what it takes over moves. At a join, a node that is down but has a
 * share keeps it (it rejoins later) instead of handing it to the others.
 * *out gets the placement (NULL when no node is up). 0, or an exit status. */
static int s_place(coord_t *c, st_placement_t **out, bool join) {
    const coord_args_t *ca = c->ca;
    const st_model_t *m = c->m;
    const int L = m->cfg.n_layer, X = m->cfg.n_expert, N = st_cluster_n_nodes(c->cl);
    const int up = st_cluster_n_up(c->cl);
    char path[4096], hex[2 * ST_WIRE_HASH_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, c->shape.model_hash, ST_WIRE_HASH_BYTES);
    st_place_node_t *pn = calloc((size_t)N, sizeof *pn);
    uint8_t *held = calloc((size_t)N * L * X, 1);
    double *prof = NULL;
    s_state_path(ca, c->a->model, ".st-profile", path, sizeof path);
    uint64_t *counts = s_profile_load(path, L, X);
    if (counts && (prof = calloc((size_t)L * X, sizeof *prof)))
        for (size_t i = 0; i < (size_t)L * X; i++) prof[i] = (double)counts[i];
    free(counts);
    const char **names = calloc((size_t)N, sizeof *names);
    st_cluster_assign_t *as = calloc((size_t)N, sizeof *as);
    uint32_t *before = calloc((size_t)N, sizeof *before); /* experts of each node's previous share */
    st_placement_t *pl = NULL;
    int rc = pn && held && names && as && before ? 0 : 1;
    uint64_t held_total = 0;
    for (int i = 0; rc == 0 && i < N; i++) {
        names[i] = st_cluster_url(c->cl, i);
        const st_wire_inventory_t *inv = st_cluster_inventory(c->cl, i);
        const st_wire_ref_t *share = st_cluster_share(c->cl, i, &before[i]);
        if ((!st_cluster_is_up(c->cl, i) && !(join && before[i])) || !inv) continue; /* budget 0: gets nothing */
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
        uint64_t n_held = 0;
        for (int s = 0; s < L * X; s++) n_held += h[s];
        held_total += n_held;
        /* a store record fits the largest layer's expert */
        pn[i] = (st_place_node_t){inv->mem_budget, n_held * st_wire_max_expert_bytes(&c->shape) + inv->store_free, h};
        st_log(ST_LOG_INFO, "node %d %s (%s): budget %.1f MiB, store free %.1f MiB, holds %llu experts", i, names[i],
               inv->node_id, (double)inv->mem_budget / (1 << 20), (double)inv->store_free / (1 << 20),
               (unsigned long long)n_held);
    }
    uint64_t layer_bytes[ST_WIRE_MAX_LAYERS]; /* of one expert, per layer: types differ by layer */
    for (int l = 0; l < L && l < ST_WIRE_MAX_LAYERS; l++) layer_bytes[l] = st_wire_expert_bytes(&c->shape, (uint32_t)l);
    if (rc == 0 && up > 0) { /* nobody up: no placement (NULL), every expert computed here */
        st_place_params_t pp = {.n_layer = L,
                                .n_expert = X,
                                .replication = (int)ca->replication,
                                .profile = prof,
                                .pin_fraction = ca->pin_fraction,
                                .layer_bytes = layer_bytes};
        if (!(pl = st_placement_new(&pp, pn, N))) rc = 1;
    }
    if (rc == 0 && up > 0) {
        st_placement_print(pl, stderr, names);
        s_state_path(ca, c->a->model, ".placement.json", path, sizeof path);
        if (st_placement_save_json(pl, path, names, hex) < 0)
            st_log(ST_LOG_WARN, "placement not saved");
        else
            st_log(ST_LOG_INFO, "placement saved to %s", path);
    }

    /* ASSIGN and push */
    if (rc == 0 && up > 0) {
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
            st_cluster_assign(c->cl, as);
            uint32_t missing = 0;
            for (int i = 0; i < N; i++)
                if (st_cluster_is_up(c->cl, i)) missing += as[i].n_missing;
            int64_t pushed = st_cluster_push(c->cl, as, s_read_shard, c, (int)ca->push_timeout_ms, ca->quiet_push);
            if (pushed < 0)
                rc = 1;
            else if (!join)
                fprintf(stderr, "cluster: %d of %d nodes up, %llu experts already held, %u pushed (%lld shard bytes)\n",
                        st_cluster_n_up(c->cl), N, (unsigned long long)held_total, missing, (long long)pushed);
            else { /* what moved: per node, experts before -> after and how many it was sent */
                fprintf(stderr, "cluster: join: %d of %d nodes up, %u experts pushed (%lld shard bytes);",
                        st_cluster_n_up(c->cl), N, missing, (long long)pushed);
                for (int i = 0; i < N; i++)
                    fprintf(stderr, " node %d %u -> %u experts, %u pushed;", i, before[i], as[i].n_experts,
                            st_cluster_is_up(c->cl, i) ? as[i].n_missing : 0);
                fprintf(stderr, "\n");
            }
        }
    }
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

/* ---- nodes joining a running coordinator ---------------------------------- */

static volatile sig_atomic_t s_hup; /* SIGHUP: re-read the cluster file */

static void s_on_hup(int sig) {
    (void)sig;
    s_hup = 1;
}

/* Nodes that answer within this of the first are placed together: nodes
 * booting together would otherwise each take a placement (and pushes) of
 * their own. */
#define JOIN_GRACE_MS 1000

/* SIGHUP: re-reads the cluster file; nodes not seen before are added to the
 * cluster, down until they answer their probe (nothing waits for them here;
 * s_admit places them). */
static void s_reread(coord_t *c) {
    if (!c->ca->cluster_file) {
        st_log(ST_LOG_INFO, "SIGHUP: the nodes come from --nodes: nothing to re-read (list them in --cluster FILE "
                            "to add nodes to a running coordinator)");
        return;
    }
    coord_args_t only = {.cluster_file = c->ca->cluster_file};
    int n_all = 0;
    st_node_addr_t *all = s_node_list(&only, &n_all);
    if (!all) {
        st_log(ST_LOG_WARN, "SIGHUP: the cluster file %s is unreadable or empty: nothing changes", c->ca->cluster_file);
        return;
    }
    int n_add = 0;
    for (int i = 0; i < n_all; i++) {
        bool known = false;
        for (int k = 0; k < st_cluster_n_nodes(c->cl) && !known; k++)
            known = !strcmp(all[i].url, st_cluster_url(c->cl, k));
        for (int k = 0; k < n_add && !known; k++) known = !strcmp(all[i].url, all[k].url);
        if (!known) all[n_add++] = all[i];
    }
    int added = n_add ? st_cluster_add(c->cl, all, n_add) : 0;
    free(all);
    if (added < 0)
        st_log(ST_LOG_WARN, "SIGHUP: the new nodes could not be added");
    else if (n_add == 0)
        st_log(ST_LOG_INFO, "SIGHUP: no new node in the cluster file");
    else
        st_log(ST_LOG_INFO, "SIGHUP: %d new node(s) in the cluster file: they join when they answer", added);
}

/* Whether the run still waits for --min-nodes (and, if so, why in why).
 * Stops waiting for good once enough nodes are up or the time is over. */
static bool s_waiting(coord_t *c, char *why, size_t cap) {
    if (!c->waiting) return false;
    const int up = st_cluster_n_up(c->cl), want = (int)c->ca->min_nodes;
    if (up >= want) {
        st_log(ST_LOG_INFO, "%d of %d nodes up (--min-nodes %d): going on", up, st_cluster_n_nodes(c->cl), want);
        c->waiting = false;
    } else if (st_now_ms() > c->wait_until_ms) {
        st_log(ST_LOG_WARN,
               "--min-nodes %d: only %d node(s) up after %ld s: going on with them, the others join when they answer",
               want, up, c->ca->min_nodes_timeout_s);
        c->waiting = false;
    } else if (why) {
        snprintf(why, cap, "%d of the %d nodes of --min-nodes up, %d answered", up, want,
                 up + st_cluster_n_joining(c->cl, NULL));
    }
    return c->waiting;
}

/* Nodes that answered with no share (never answered before, or added): they
 * are admitted and the experts placed again over all nodes, keeping each
 * where it is, so only what the newcomers take over moves (the summary line
 * says what moved where). Waits JOIN_GRACE_MS after the first answer, or,
 * for --min-nodes, until enough have answered, so that the experts are placed
 * once for nodes that come up together. Runs between steps, on the thread
 * that owns the cluster. */
static void s_admit(coord_t *c) {
    double first;
    const int n = st_cluster_n_joining(c->cl, &first), up = st_cluster_n_up(c->cl);
    bool due = n > 0 && st_now_ms() - first >= JOIN_GRACE_MS;
    if (c->waiting) /* --min-nodes: once, when enough have answered */
        due = (n > 0 || !c->pl) && up + n >= c->ca->min_nodes;
    else if (!c->pl && up > 0) /* --min-nodes-timeout passed: the nodes that are up */
        due = true;
    if (!due) return;
    const double t0 = st_now_ms();
    st_cluster_admit(c->cl);
    st_log(ST_LOG_INFO, "%d node(s) joining, %d up: placing the experts again", n, up);
    st_placement_t *pl = NULL;
    if (s_place(c, &pl, true) != 0 || (c->rm && st_remote_moe_set_placement(c->rm, pl) < 0)) {
        st_log(ST_LOG_WARN, "no new placement: the joining nodes get nothing");
        st_placement_destroy(&pl);
        return;
    }
    st_placement_destroy(&c->pl); /* the HTTP view reads it on this thread too (scheduler): not in use */
    c->pl = pl;
    st_log(ST_LOG_INFO, "experts placed over %d node(s) in %.0f ms", st_cluster_n_up(c->cl), st_now_ms() - t0);
}

/* Between two steps (a batch through all layers), or while idle: nodes that
 * come back and need experts pushed, nodes added on SIGHUP, nodes that
 * answered and join. */
static void s_between_steps(void *arg) {
    coord_t *c = arg;
    st_cluster_maintain(c->cl);
    if (s_hup) {
        s_hup = 0;
        s_reread(c);
    }
    s_admit(c);
}

/* The HTTP server between requests: joins on SIGHUP, rejoins, lost nodes. */
static void s_idle(void *arg) {
    coord_t *c = arg;
    if (!c->cl) return;
    s_between_steps(c);
    st_cluster_idle(c->cl, 0);
}

/* ---- setup ------------------------------------------------------------------ */

/* Connect, HELLO, place, ASSIGN, push. 0 or an exit status. */
static int s_setup(coord_t *c) {
    const coord_args_t *ca = c->ca;
    const st_model_t *m = c->m;
    char path[4096];
    if (st_remote_model_shape(m, &c->shape) < 0) return 1;

    st_cluster_opts_t o = {.insecure = ca->insecure, .timeout_ms = (int)ca->timeout_ms, .id = ca->id};
    o.max_frame = (int64_t)st_wire_max_result_frame(&c->shape) + 4096;
    if (ca->insecure) {
        st_log(ST_LOG_WARN, "--insecure: traffic to the nodes is neither encrypted nor authenticated");
    } else if (s_load_key(ca->key_file, o.secret_key, o.public_key) < 0) {
        return 1;
    }
    c->cl = st_cluster_new(c->addrs, c->n_nodes, &o);
    sodium_memzero(o.secret_key, sizeof o.secret_key);
    if (!c->cl) return 1;

    int up = st_cluster_hello(c->cl, &c->shape);
    if (up < 0) return 1;
    if (up == 0 && !ca->min_nodes) {
        if (ca->no_fallback) {
            fprintf(stderr, PROG ": no node answered (see above) and --no-fallback is set\n");
            return 1;
        }
        st_log(ST_LOG_WARN, "no node answered: every expert is computed here, from the model file, until nodes "
                            "answer (they are probed)");
    }

    /* expert hashes: the ASSIGN carries one per expert, and held shards are checked against them */
    s_state_path(ca, c->a->model, ".st-hashes", path, sizeof path);
    c->hashes = st_expert_hashes_new(m, &c->shape, path);
    if (!c->hashes || st_expert_hashes_fill(c->hashes, NULL, (int)c->a->threads) < 0) return 1;
    st_expert_hashes_save(c->hashes);

    c->wait_until_ms = ca->min_nodes_timeout_s ? st_now_ms() + 1e3 * (double)ca->min_nodes_timeout_s : INFINITY;
    c->waiting = up < ca->min_nodes;
    if (c->waiting) { /* placed once enough nodes answered (s_admit), not over the first ones */
        st_log(ST_LOG_INFO, "waiting for %ld nodes (--min-nodes): %d up; the experts are placed when they answer",
               ca->min_nodes, up);
    } else {
        int rc = s_place(c, &c->pl, false);
        if (rc) return rc;
        if (st_cluster_n_up(c->cl) < up && ca->no_fallback) {
            fprintf(stderr, PROG ": a node failed during setup (see above) and --no-fallback is set\n");
            return 1;
        }
    }
    if (c->serving) return 0; /* the server waits, answering /health meanwhile */
    while (s_waiting(c, NULL, 0)) {
        s_between_steps(c);
        if (st_cluster_idle(c->cl, 100) < 0) return 1;
    }
    s_admit(c); /* after --min-nodes-timeout: the nodes that are up */
    if (st_cluster_n_up(c->cl) == 0 && ca->no_fallback) {
        fprintf(stderr, PROG ": no node is up (see above) and --no-fallback is set\n");
        return 1;
    }
    return 0;
}

static int s_on_params(void *arg, st_ctx_params_t *p) {
    coord_t *c = arg;
    int rc = s_setup(c);
    if (rc) return rc;
    uint32_t max_tok = st_wire_max_tokens(&c->shape); /* one EXPERT_COMPUTE per node per layer and batch */
    if ((uint32_t)p->n_batch > max_tok) {
        st_log(ST_LOG_INFO, "--batch %d capped at %u tokens (the largest expert request)", p->n_batch, max_tok);
        p->n_batch = (int)max_tok;
    }
    return 0;
}

/* The server's view of --min-nodes (on the scheduler thread, like s_idle). */
static bool s_serve_waiting(void *arg, char *why, size_t cap) {
    coord_t *c = arg;
    return c->cl && s_waiting(c, why, cap);
}

static int s_on_ctx(void *arg, st_ctx_t *ctx) {
    coord_t *c = arg;
    st_remote_opts_t o = {(int)c->ca->timeout_ms, !c->ca->no_fallback, !c->ca->no_prefetch, c->a->stats};
    c->rm = st_remote_moe_new(ctx, c->cl, c->pl, &o);
    if (!c->rm) return 1;
    st_moe_backend_t b = st_remote_moe_backend(c->rm);
    st_ctx_set_moe(ctx, &b);
    return 0;
}

static void s_on_stats(void *arg, st_ctx_t *ctx, const st_generate_result_t *res) {
    (void)ctx;
    (void)res;
    coord_t *c = arg;
    if (!c->rm) return;
    st_remote_moe_finish(c->rm);
    st_remote_moe_print_stats(c->rm, stderr);
}

/* What can be checked before the model loads (minutes for 12 GB on a Pi): the key, each node's
 * public key, the state directory. 0, or 2 after saying what is wrong. */
static int s_check_args(const coord_args_t *ca, const st_node_addr_t *nodes, int n) {
    if (!ca->insecure) {
        if (!ca->key_file) {
            fprintf(stderr,
                    PROG ": encrypted transport needs --key FILE and each node's public key in --cluster FILE;\n"
                         "  pass --insecure to talk plain TCP on a network you trust\n");
            return 2;
        }
        if (access(ca->key_file, R_OK) != 0) { /* loaded (and its mode checked) when the nodes are contacted */
            fprintf(stderr, PROG ": cannot read the key file %s: %s\n", ca->key_file, strerror(errno));
            return 2;
        }
        for (int i = 0; i < n; i++)
            if (!nodes[i].server_key[0]) {
                fprintf(stderr, PROG ": node %s has no public key in %s (lines 'URL NODE_PUBLIC_KEY')\n", nodes[i].url,
                        ca->cluster_file);
                return 2;
            }
    }
    if (ca->min_nodes > n) {
        fprintf(stderr, PROG ": --min-nodes %ld, but %s lists %d node(s)\n", ca->min_nodes,
                ca->cluster_file ? "the cluster file" : "--nodes", n);
        return 2;
    }
    if (ca->state_dir && access(ca->state_dir, W_OK | X_OK) != 0) {
        fprintf(stderr, PROG ": --state-dir %s: %s (it must be a directory this user can write)\n", ca->state_dir,
                strerror(errno));
        return 2;
    }
    return 0;
}

int main(int argc, char **argv) {
    coord_args_t ca = {.replication = 1, .timeout_ms = 10000, .push_timeout_ms = 60000, .pin_fraction = 0.5};
    st_cli_args_t a;
    const st_cli_extra_t extra = {s_opts, s_handle, &ca, s_usage};
    int rc = st_cli_parse(PROG, argc, argv, &a, &extra);
    if (rc) return rc;
    if (sodium_init() < 0) {
        fprintf(stderr, PROG ": libsodium failed to initialise\n");
        return 1;
    }
    coord_t c = {.ca = &ca, .a = &a};
    if (a.mem) { /* st-run's flag: said before the load, not after */
        fprintf(stderr, PROG ": --mem is st-run's (experts read from storage in one process); here the nodes hold\n"
                             "  the experts: give each st-node its --mem\n");
        return 2;
    }
#ifndef ST_HAVE_SERVER
    if (a.http && !a.prompt && !a.prompt_file && !a.tokens) {
        fprintf(stderr, PROG ": this build has no HTTP server (install libmicrohttpd-dev and rebuild)\n");
        return 2;
    }
#endif
    if (ca.nodes && !ca.insecure) {
        fprintf(stderr, PROG ": --nodes carries no node keys: use --cluster FILE (lines 'URL NODE_PUBLIC_KEY') with\n"
                             "  --key FILE, or add --insecure for plain TCP on a network you trust\n");
        return 2;
    }
    c.addrs = s_node_list(&ca, &c.n_nodes);
    if (!c.addrs) return 2;
    if ((rc = s_check_args(&ca, c.addrs, c.n_nodes)) != 0) {
        free(c.addrs);
        return rc;
    }
    /* SIGHUP (systemctl reload): the cluster file's new nodes join (between steps); with --nodes it only logs */
    struct sigaction sa = {.sa_handler = s_on_hup, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);

    /* attention and the head run here, packed for the kernels; the experts stay as the file has
     * them, to be pushed to the nodes and, for a fallback, computed in that layout */
    c.m = st_model_load_streaming(a.model);
    if (!c.m) {
        free(c.addrs);
        return 1;
    }
    char desc[512];
    st_model_describe(c.m, desc, sizeof desc);
    st_log(ST_LOG_INFO, "%s", desc);

    const st_cli_hooks_t hooks = {&c, s_on_params, s_on_ctx, s_on_stats, s_between_steps};
    int status;
#ifdef ST_HAVE_SERVER
    if (a.http && !a.prompt && !a.prompt_file && !a.tokens) { /* serve the HTTP API (server/) */
        st_cluster_view_t *view = st_cluster_view_new(&c.cl, &c.pl, &c.rm);
        st_server_view_t sv = st_cluster_view_server(view);
        sv.idle = s_idle;
        sv.idle_arg = &c;
        sv.between_steps = s_between_steps;
        sv.waiting = s_serve_waiting;
        c.serving = true;
        status = view ? st_server_main(PROG, &a, c.m, &hooks, &sv) : 1;
        st_cluster_view_destroy(&view);
    } else
#endif
        status = st_cli_run(PROG, &a, c.m, &hooks);
    if (c.rm) {
        char path[4096];
        st_remote_moe_finish(c.rm);
        s_state_path(&ca, a.model, ".st-profile", path, sizeof path);
        s_profile_save(path, st_remote_moe_route_counts(c.rm), c.m->cfg.n_layer, c.m->cfg.n_expert);
    }
    st_remote_moe_destroy(&c.rm);
    st_placement_destroy(&c.pl);
    st_expert_hashes_destroy(&c.hashes);
    st_cluster_destroy(&c.cl);
    st_model_destroy(&c.m);
    free(c.addrs);
    return status;
}
