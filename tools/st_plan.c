/* st-plan: how many boards a model needs, what each role holds, and how fast
 * the cluster would run, before anyone buys a board (plan/plan.h has the
 * model of a decode step, plan/board.h the boards).
 *
 * Steps: parse the flags, read the model's shapes (the GGUF is mapped, no
 * weight is read), build the boards (built-in names or profile files), plan,
 * print; then plan the variants (one more node, faster storage, a faster
 * coordinator) and say which helps most.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board.h"
#include "model.h"
#include "parse.h"
#include "plan.h"
#include "st_log.h"

#define MAX_NODES 1024
#define GIB 1073741824.0
#define MIB 1048576.0

static void s_usage(FILE *f) {
    fprintf(f,
            "usage: st-plan --model FILE (--cluster FILE | --boards BOARD:COUNT[,BOARD:COUNT...]) [options]\n"
            "\n"
            "Plans a cluster for a model without loading its weights: where the experts go (RAM or storage\n"
            "of each node), the memory and disk of each role, and the predicted time to first token,\n"
            "prefill and decode tokens/s for 1 and N users with the time per part, the bottleneck, and\n"
            "what would help most.\n"
            "\n"
            "  -m, --model FILE        GGUF model (only its header and shapes are read)\n"
            "      --boards LIST       the nodes: BOARD:COUNT, comma-separated (e.g. pi5-2g:8 or pi5-4g:2,pi5-2g:4)\n"
            "      --cluster FILE      the nodes, one line each: BOARD [COUNT] [mem=SIZE] [disk=SIZE];\n"
            "                          a line `coordinator BOARD` names the coordinator's board; # comments\n"
            "      --coordinator BOARD the coordinator's board (default pi5-8g)\n"
            "      --mem SIZE          every node's expert budget (st-node --mem; default: its RAM - 512 MiB)\n"
            "      --link RATE:DELAY[:LOSS]  each port's rate, one-way delay and loss (e.g. 1gbit:0.1ms,\n"
            "                          100mbit:20ms:1%%; default: the boards' Ethernet, 0.1 ms, no loss)\n"
            "      --users N           concurrent users decoded together (default 8)\n"
            "      --prompt N          prompt tokens for the time to first token, and the context the\n"
            "                          decode steps attend over (default 128)\n"
            "      --batch N           prompt tokens per step, as the coordinator's --batch (default 64)\n"
            "      --ctx N             context per user, for the coordinator's KV caches (default 1024)\n"
            "      --head auto|local|sharded  the output head, as st-coordinator --head: on the coordinator\n"
            "                          (local), or cut in vocabulary slices over the nodes, each charged to\n"
            "                          its node's --mem and answering its best candidates (one more round\n"
            "                          trip per step, for all its users); auto (default): sharded when every\n"
            "                          node's room is at least 4 times its slice, as the coordinator decides\n"
            "      --replication R     copies of each expert and head slice where a node's room has space for\n"
            "                          them, as st-coordinator --replication (default 1). A node's room:\n"
            "                          its --mem less st-node's own bytes, holding experts of whole pages\n"
            "                          of the board's page_size\n"
            "      --wire exact|compact|compact16  what nodes return per layer, as st-coordinator --wire:\n"
            "                          one f32 row per (token, expert) (default), or one per (token, node),\n"
            "                          f32 or f16\n"
            "      --overlap on|off    decode of 2 or more users in two overlapped micro-batches (default off)\n"
            "      --json              one JSON object instead of the report\n"
            "  -h, --help              this help\n"
            "\n"
            "BOARD: a built-in board, %s,\n"
            "or a profile file written by `st-bench --profile FILE` on the board.\n",
            st_board_builtin_names());
}

typedef struct {
    const char *model, *cluster, *boards, *coordinator;
    uint64_t mem;
    st_link_t link;
    bool have_link, json;
    long users, prompt, batch, ctx, replication;
    st_plan_head_t head;
    bool overlap;
    st_plan_wire_t wire;
} args_t;

enum {
    OPT_CLUSTER = 256,
    OPT_BOARDS,
    OPT_COORD,
    OPT_MEM,
    OPT_LINK,
    OPT_USERS,
    OPT_PROMPT,
    OPT_BATCH,
    OPT_CTX,
    OPT_JSON,
    OPT_HEAD,
    OPT_WIRE,
    OPT_OVERLAP,
    OPT_REPL
};

static int s_bad(const char *flag, const char *val) {
    fprintf(stderr, "st-plan: invalid value '%s' for %s (see --help)\n", val, flag);
    return 2;
}

static int s_parse_args(int argc, char **argv, args_t *a) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"cluster", required_argument, 0, OPT_CLUSTER},
                                         {"boards", required_argument, 0, OPT_BOARDS},
                                         {"coordinator", required_argument, 0, OPT_COORD},
                                         {"mem", required_argument, 0, OPT_MEM},
                                         {"link", required_argument, 0, OPT_LINK},
                                         {"users", required_argument, 0, OPT_USERS},
                                         {"prompt", required_argument, 0, OPT_PROMPT},
                                         {"batch", required_argument, 0, OPT_BATCH},
                                         {"ctx", required_argument, 0, OPT_CTX},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {"head", required_argument, 0, OPT_HEAD},
                                         {"wire", required_argument, 0, OPT_WIRE},
                                         {"overlap", required_argument, 0, OPT_OVERLAP},
                                         {"replication", required_argument, 0, OPT_REPL},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    *a = (args_t){.users = 8, .prompt = 128, .batch = 64, .ctx = 1024, .replication = 1, .head = ST_PLAN_HEAD_AUTO};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model = optarg; break;
        case OPT_CLUSTER: a->cluster = optarg; break;
        case OPT_BOARDS: a->boards = optarg; break;
        case OPT_COORD: a->coordinator = optarg; break;
        case OPT_MEM:
            if (!st_parse_size(optarg, &a->mem) || a->mem < (16u << 20)) return s_bad("--mem", optarg);
            break;
        case OPT_LINK:
            if (!st_link_parse(optarg, &a->link)) return s_bad("--link", optarg);
            a->have_link = true;
            break;
        case OPT_USERS:
            if (!st_parse_int(optarg, 1, 256, &a->users)) return s_bad("--users", optarg);
            break;
        case OPT_PROMPT:
            if (!st_parse_int(optarg, 1, 1 << 16, &a->prompt)) return s_bad("--prompt", optarg);
            break;
        case OPT_BATCH:
            if (!st_parse_int(optarg, 1, 4096, &a->batch)) return s_bad("--batch", optarg);
            break;
        case OPT_CTX:
            if (!st_parse_int(optarg, 1, 1 << 20, &a->ctx)) return s_bad("--ctx", optarg);
            break;
        case OPT_JSON: a->json = true; break;
        case OPT_HEAD:
            if (!strcmp(optarg, "auto"))
                a->head = ST_PLAN_HEAD_AUTO;
            else if (!strcmp(optarg, "local"))
                a->head = ST_PLAN_HEAD_LOCAL;
            else if (!strcmp(optarg, "sharded"))
                a->head = ST_PLAN_HEAD_SHARDED;
            else
                return s_bad("--head", optarg);
            break;
        case OPT_REPL: /* st-coordinator's bounds */
            if (!st_parse_int(optarg, 1, 64, &a->replication)) return s_bad("--replication", optarg);
            break;
        case OPT_WIRE:
            if (!strcmp(optarg, "exact"))
                a->wire = ST_PLAN_WIRE_EXACT;
            else if (!strcmp(optarg, "compact"))
                a->wire = ST_PLAN_WIRE_COMPACT;
            else if (!strcmp(optarg, "compact16"))
                a->wire = ST_PLAN_WIRE_COMPACT16;
            else
                return s_bad("--wire", optarg);
            break;
        case OPT_OVERLAP:
            if (strcmp(optarg, "on") && strcmp(optarg, "off")) return s_bad("--overlap", optarg);
            a->overlap = !strcmp(optarg, "on");
            break;
        case 'h': s_usage(stdout); exit(0);
        default:
            fprintf(stderr, "st-plan: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "st-plan: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (!a->model) {
        fprintf(stderr, "st-plan: --model FILE is required (see --help)\n");
        return 2;
    }
    if (!a->cluster == !a->boards) {
        fprintf(stderr, "st-plan: give the nodes with either --boards or --cluster (see --help)\n");
        return 2;
    }
    return 0;
}

/* ---- the nodes ----------------------------------------------------------- */

typedef struct {
    st_board_t *nodes;
    int n;
    char coord[256];
} cluster_t;

static int s_add_nodes(cluster_t *cl, const st_board_t *b, long count) {
    if (count < 1 || cl->n + count > MAX_NODES) return -1;
    for (long i = 0; i < count; i++) cl->nodes[cl->n++] = *b;
    return 0;
}

/* --boards pi5-2g:8,pi5-4g:2 */
static int s_parse_boards(const char *spec, cluster_t *cl) {
    char *copy = strdup(spec);
    int rc = copy ? 0 : 1;
    for (char *save, *tok = rc ? NULL : strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        long count = 1;
        if (colon) {
            *colon = 0;
            if (!st_parse_int(colon + 1, 1, MAX_NODES, &count)) {
                fprintf(stderr, "st-plan: --boards: bad count '%s' in '%s' (BOARD:COUNT)\n", colon + 1, spec);
                rc = 1;
                break;
            }
        }
        st_board_t b;
        if (st_board_get(tok, &b) < 0 || s_add_nodes(cl, &b, count) < 0) rc = 1;
    }
    free(copy);
    return rc;
}

/* One node line: BOARD [COUNT] [mem=SIZE] [disk=SIZE]; or `coordinator BOARD`. */
static int s_parse_cluster(const char *path, cluster_t *cl) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "st-plan: cannot open cluster file %s: %s\n", path, strerror(errno));
        return 1;
    }
    char line[1024];
    int ln = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        ln++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *w[8];
        int nw = 0;
        for (char *save, *t = strtok_r(line, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
            if (nw == 8) {
                nw = 9;
                break;
            }
            w[nw++] = t;
        }
        if (nw == 0) continue;
        if (nw > 4) {
            fprintf(stderr, "st-plan: %s:%d: too many words (BOARD [COUNT] [mem=SIZE] [disk=SIZE])\n", path, ln);
            rc = 1;
            break;
        }
        if (!strcmp(w[0], "coordinator")) {
            if (nw != 2 || strlen(w[1]) >= sizeof cl->coord) {
                fprintf(stderr, "st-plan: %s:%d: expected `coordinator BOARD`\n", path, ln);
                rc = 1;
            } else
                strcpy(cl->coord, w[1]);
            continue;
        }
        st_board_t b;
        if (st_board_get(w[0], &b) < 0) {
            fprintf(stderr, "st-plan: %s:%d: unknown board '%s'\n", path, ln, w[0]);
            rc = 1;
            break;
        }
        long count = 1;
        for (int i = 1; i < nw && rc == 0; i++) {
            uint64_t v;
            if (!strncmp(w[i], "mem=", 4) && st_parse_size(w[i] + 4, &v) && v >= (16u << 20))
                b.mem = v;
            else if (!strncmp(w[i], "disk=", 5) && st_parse_size(w[i] + 5, &v) && v > 0)
                b.disk = v;
            else if (i == 1 && st_parse_int(w[i], 1, MAX_NODES, &count))
                ;
            else {
                fprintf(stderr, "st-plan: %s:%d: cannot read '%s' (BOARD [COUNT] [mem=SIZE] [disk=SIZE])\n", path, ln,
                        w[i]);
                rc = 1;
            }
        }
        if (rc == 0 && b.mem > b.ram) {
            fprintf(stderr, "st-plan: %s:%d: mem= is more than the board's %.1f GiB of RAM\n", path, ln, b.ram / GIB);
            rc = 1;
        }
        if (rc == 0 && s_add_nodes(cl, &b, count) < 0) {
            fprintf(stderr, "st-plan: %s:%d: more than %d nodes\n", path, ln, MAX_NODES);
            rc = 1;
        }
    }
    fclose(f);
    if (rc == 0 && cl->n == 0) {
        fprintf(stderr, "st-plan: %s names no node\n", path);
        rc = 1;
    }
    return rc;
}

/* ---- variants: what would help most --------------------------------------- */

typedef struct {
    char what[160];
    double tps;
} variant_t;

static double s_variant_tps(const st_plan_model_t *m, const st_plan_params_t *p) {
    st_plan_t *pl = st_plan_new(m, p); /* a variant cannot fail where the plan did not */
    double t = pl ? pl->decode_tps_1 : 0;
    st_plan_destroy(&pl);
    return t;
}

/* The next faster built-in board for a role, or "" (same RAM or more). */
static void s_faster_board(const st_board_t *b, char *out, size_t cap) {
    out[0] = 0;
    if (!strncmp(b->name, "pi4-", 4)) snprintf(out, cap, "pi5-%s", b->name + 4);
    char *plus = strchr(out, '+');
    if (plus) *plus = 0;
    if (!strcmp(out, "pi5-2g") && b->ram > (2ull << 30)) out[0] = 0;
}

static int s_variants(const st_plan_model_t *m, const st_plan_params_t *p, variant_t *v) {
    int n = 0;
    st_board_t *nodes = malloc((size_t)(p->n_nodes + 1) * sizeof *nodes);
    if (!nodes) return 0;
    memcpy(nodes, p->nodes, (size_t)p->n_nodes * sizeof *nodes);
    st_plan_params_t q = *p;
    q.nodes = nodes;
    /* one more node like the last */
    nodes[p->n_nodes] = p->nodes[p->n_nodes - 1];
    q.n_nodes = p->n_nodes + 1;
    snprintf(v[n].what, sizeof v[n].what, "one more %s node", p->nodes[p->n_nodes - 1].name);
    if ((v[n].tps = s_variant_tps(m, &q)) > 0) n++;
    q.n_nodes = p->n_nodes;
    /* faster storage on every node whose built-in board has a faster option */
    bool changed = false;
    for (int i = 0; i < p->n_nodes; i++) {
        char name[80];
        const char *fast = !strncmp(nodes[i].name, "pi5-", 4)   ? "+nvme"
                           : !strncmp(nodes[i].name, "pi4-", 4) ? "+ssd"
                                                                : NULL;
        st_board_t b;
        if (!fast || strchr(nodes[i].name, '+')) continue;
        snprintf(name, sizeof name, "%s%s", nodes[i].name, fast);
        if (st_board_builtin(name, &b) == 0) {
            b.mem = nodes[i].mem;
            b.disk = nodes[i].disk;
            nodes[i] = b;
            changed = true;
        }
    }
    if (changed) {
        snprintf(v[n].what, sizeof v[n].what, "%s storage on the nodes instead of microSD",
                 strstr(nodes[0].name, "+ssd") ? "USB 3 SSD" : "NVMe");
        if ((v[n].tps = s_variant_tps(m, &q)) > 0) n++;
    }
    memcpy(nodes, p->nodes, (size_t)p->n_nodes * sizeof *nodes);
    /* a faster coordinator */
    char faster[80];
    st_board_t cb;
    s_faster_board(p->coord, faster, sizeof faster);
    if (faster[0] && st_board_builtin(faster, &cb) == 0) {
        q.coord = &cb;
        snprintf(v[n].what, sizeof v[n].what, "a %s coordinator instead of the %s", faster, p->coord->name);
        if ((v[n].tps = s_variant_tps(m, &q)) > 0) n++;
        q.coord = p->coord;
    }
    free(nodes);
    return n;
}

/* ---- output -------------------------------------------------------------- */

static const char *s_wire_name(st_plan_wire_t w) {
    return w == ST_PLAN_WIRE_COMPACT16 ? "compact16" : w == ST_PLAN_WIRE_COMPACT ? "compact" : "exact";
}

static void s_print_step_row(const char *name, double a, double b) {
    printf("  %-30s %9.1f %9.1f\n", name, 1e3 * a, 1e3 * b);
}

static void s_print(const st_plan_model_t *m, const st_plan_params_t *p, const st_plan_t *pl, const variant_t *v,
                    int nv) {
    printf("model: %s\n", m->desc);
    printf("  %.2f GiB: experts %.2f GiB (%d layers x %d, %.2f MiB each), dense weights %.2f GiB, token "
           "embeddings %.2f GiB\n",
           m->file_bytes / GIB, m->expert_bytes / GIB, m->n_layer, m->n_expert, m->layer_expert_bytes[0] / MIB,
           m->dense_bytes / GIB, m->embd_bytes / GIB);
    printf("cluster: coordinator %s, %d node%s; link %.0f Mbit/s per port, %.2f ms each way, %.2f%% loss\n",
           p->coord->name, p->n_nodes, p->n_nodes == 1 ? "" : "s",
           8e-6 * (p->link.rate > 0 ? p->link.rate : p->coord->net_bps), 1e3 * p->link.delay, 100 * p->link.loss);
    printf("options: head %s%s, results %s, micro-batches %s, replication %d\n",
           pl->head_sharded ? "sharded over the nodes" : "on the coordinator",
           p->head == ST_PLAN_HEAD_AUTO ? " (auto)" : "", s_wire_name(p->wire),
           p->overlap ? "overlapped" : "not overlapped", st_placement_replication(pl->placement));
    const char **names = calloc((size_t)p->n_nodes, sizeof *names);
    for (int i = 0; names && i < p->n_nodes; i++) names[i] = p->nodes[i].name;
    st_placement_print(pl->placement, stdout, names);
    free(names);
    printf("memory and disk per role:\n");
    printf("  coordinator (%s): %.2f GiB of RAM (dense weights %.2f GiB, KV caches for %d users x %d tokens, "
           "logits); disk: the model file, %.2f GiB\n",
           p->coord->name, pl->coord_ram / GIB,
           (m->dense_bytes - (pl->head_sharded && m->dense_bytes > m->head_bytes ? m->head_bytes : 0)) / GIB, p->users,
           p->n_ctx, m->file_bytes / GIB);
    for (int i = 0; i < p->n_nodes; i++) {
        const st_plan_node_t *n = &pl->nodes[i];
        printf("  node %d (%s): --mem %.2f GiB, %.2f GiB of it the node's own: %d experts, room for %llu, %.2f GiB "
               "in RAM, %.2f GiB streamed from %s%s; disk %.2f GiB%s\n",
               i, p->nodes[i].name, p->nodes[i].mem / GIB, n->fixed / GIB, n->experts, (unsigned long long)n->room,
               n->ram / GIB, n->stream / GIB, p->nodes[i].disk_kind,
               n->over_budget ? " (the file's layout, unpacked)" : "", (n->bytes + n->head_bytes) / GIB,
               n->over_budget ? " (over its budget)" : "");
        if (n->head_slices)
            printf("    and %d head slice%s, %.1f MiB of its --mem (and its disk)\n", n->head_slices,
                   n->head_slices == 1 ? "" : "s", n->head_bytes / MIB);
    }
    for (int i = 0; i < pl->n_warnings; i++) printf("warning: %s\n", pl->warnings[i]);
    printf("predicted:\n");
    printf("  time to first token (%d-token prompt): %.2f s; prefill %.1f tok/s\n", p->prompt, pl->ttft_s,
           pl->prefill_tps);
    printf("  decode: 1 user %.2f tok/s; %d users %.2f tok/s in all (%.2f each)\n", pl->decode_tps_1, p->users,
           pl->decode_tps_n, pl->decode_tps_n / p->users);
    printf("  one decode step, ms:                1 user  %2d users\n", p->users);
    s_print_step_row("coordinator dense compute", pl->decode1.coord, pl->decodeN.coord);
    s_print_step_row("node expert compute (slowest)", pl->decode1.node, pl->decodeN.node);
    s_print_step_row("storage reads (not hidden)", pl->decode1.storage, pl->decodeN.storage);
    s_print_step_row("network transfer", pl->decode1.transfer, pl->decodeN.transfer);
    s_print_step_row("round trips", pl->decode1.latency, pl->decodeN.latency);
    if (p->overlap) s_print_step_row("hidden by overlap", 0.0 - pl->decode1.overlap, 0.0 - pl->decodeN.overlap);
    s_print_step_row("total", pl->decode1.total, pl->decodeN.total);
    printf("  bottleneck: %s\n", pl->bottleneck);
    if (nv > 0) {
        int best = 0;
        for (int i = 1; i < nv; i++)
            if (v[i].tps > v[best].tps) best = i;
        printf("what would help (decode, 1 user):\n");
        for (int i = 0; i < nv; i++)
            printf("  %s %s: %.2f tok/s (%+.0f%%)\n", i == best ? "*" : " ", v[i].what, v[i].tps,
                   100 * (v[i].tps / pl->decode_tps_1 - 1));
    }
}

static cJSON *s_step_json(const st_plan_step_t *s) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "coordinator_s", s->coord);
    cJSON_AddNumberToObject(o, "node_compute_s", s->node);
    cJSON_AddNumberToObject(o, "storage_s", s->storage);
    cJSON_AddNumberToObject(o, "transfer_s", s->transfer);
    cJSON_AddNumberToObject(o, "round_trips_s", s->latency);
    cJSON_AddNumberToObject(o, "overlap_s", s->overlap);
    cJSON_AddNumberToObject(o, "total_s", s->total);
    return o;
}

static void s_print_json(const st_plan_model_t *m, const st_plan_params_t *p, const st_plan_t *pl, const variant_t *v,
                         int nv) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", m->desc);
    cJSON_AddNumberToObject(o, "model_bytes", (double)m->file_bytes);
    cJSON_AddNumberToObject(o, "expert_bytes", (double)m->expert_bytes);
    cJSON_AddNumberToObject(o, "dense_bytes", (double)m->dense_bytes);
    cJSON *c = cJSON_AddObjectToObject(o, "coordinator");
    cJSON_AddStringToObject(c, "board", p->coord->name);
    cJSON_AddNumberToObject(c, "ram_bytes", (double)pl->coord_ram);
    cJSON_AddNumberToObject(c, "disk_bytes", (double)m->file_bytes);
    cJSON *ns = cJSON_AddArrayToObject(o, "nodes");
    for (int i = 0; i < p->n_nodes; i++) {
        const st_plan_node_t *n = &pl->nodes[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "board", p->nodes[i].name);
        cJSON_AddNumberToObject(j, "mem_bytes", (double)p->nodes[i].mem);
        cJSON_AddNumberToObject(j, "experts", n->experts);
        cJSON_AddNumberToObject(j, "expert_bytes", (double)n->bytes);
        cJSON_AddNumberToObject(j, "ram_bytes", (double)n->ram);
        cJSON_AddNumberToObject(j, "stream_bytes", (double)n->stream);
        cJSON_AddNumberToObject(j, "fixed_bytes", (double)n->fixed);
        cJSON_AddNumberToObject(j, "room", (double)n->room);
        cJSON_AddNumberToObject(j, "head_slices", n->head_slices);
        cJSON_AddNumberToObject(j, "head_bytes", (double)n->head_bytes);
        cJSON_AddNumberToObject(j, "disk_bytes", (double)(n->bytes + n->head_bytes));
        cJSON_AddBoolToObject(j, "over_budget", n->over_budget);
        cJSON_AddItemToArray(ns, j);
    }
    cJSON_AddNumberToObject(o, "users", p->users);
    cJSON_AddStringToObject(o, "head", pl->head_sharded ? "sharded" : "local");
    cJSON_AddNumberToObject(o, "replication", st_placement_replication(pl->placement));
    cJSON_AddStringToObject(o, "wire", s_wire_name(p->wire));
    cJSON_AddBoolToObject(o, "overlap", p->overlap);
    cJSON_AddNumberToObject(o, "prompt_tokens", p->prompt);
    cJSON_AddNumberToObject(o, "predicted_ttft_s", pl->ttft_s);
    cJSON_AddNumberToObject(o, "predicted_prefill_tps", pl->prefill_tps);
    cJSON_AddNumberToObject(o, "predicted_decode_tps", pl->decode_tps_1);
    cJSON_AddNumberToObject(o, "predicted_decode_tps_users", pl->decode_tps_n);
    cJSON_AddItemToObject(o, "decode_step", s_step_json(&pl->decode1));
    cJSON_AddItemToObject(o, "decode_step_users", s_step_json(&pl->decodeN));
    cJSON_AddItemToObject(o, "prefill", s_step_json(&pl->prefill));
    cJSON_AddStringToObject(o, "bottleneck", pl->bottleneck);
    cJSON *w = cJSON_AddArrayToObject(o, "warnings");
    for (int i = 0; i < pl->n_warnings; i++) cJSON_AddItemToArray(w, cJSON_CreateString(pl->warnings[i]));
    cJSON *h = cJSON_AddArrayToObject(o, "would_help");
    for (int i = 0; i < nv; i++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "what", v[i].what);
        cJSON_AddNumberToObject(j, "decode_tps", v[i].tps);
        cJSON_AddItemToArray(h, j);
    }
    char *txt = cJSON_PrintUnformatted(o);
    if (txt) printf("%s\n", txt);
    free(txt);
    cJSON_Delete(o);
}

int main(int argc, char **argv) {
    args_t a;
    int rc = s_parse_args(argc, argv, &a);
    if (rc) return rc;
    cluster_t cl = {.nodes = calloc(MAX_NODES, sizeof(st_board_t))};
    if (!cl.nodes) return 1;
    rc = a.boards ? s_parse_boards(a.boards, &cl) : s_parse_cluster(a.cluster, &cl);
    st_board_t coord;
    const char *cname = a.coordinator ? a.coordinator : cl.coord[0] ? cl.coord : "pi5-8g";
    if (rc == 0 && st_board_get(cname, &coord) < 0) rc = 1;
    for (int i = 0; rc == 0 && a.mem && i < cl.n; i++) cl.nodes[i].mem = a.mem;
    st_model_t *model = rc == 0 ? st_model_load(a.model) : NULL;
    st_plan_model_t *pm = calloc(1, sizeof *pm);
    st_plan_t *pl = NULL;
    if (rc == 0 && (!model || !pm || st_plan_model_from(model, pm) < 0)) rc = 1;
    st_model_destroy(&model);
    st_plan_params_t p = {.coord = &coord,
                          .nodes = cl.nodes,
                          .n_nodes = cl.n,
                          .link = a.have_link ? a.link : (st_link_t){0, 100e-6, 0},
                          .users = (int)a.users,
                          .prompt = (int)a.prompt,
                          .n_batch = (int)a.batch,
                          .n_ctx = (int)a.ctx,
                          .head = a.head,
                          .replication = (int)a.replication,
                          .wire = a.wire,
                          .overlap = a.overlap};
    if (rc == 0 && !(pl = st_plan_new(pm, &p))) {
        fprintf(stderr, "st-plan: no prediction for this setup (see above)\n");
        rc = 1;
    }
    if (rc == 0) {
        variant_t v[4];
        int nv = s_variants(pm, &p, v);
        if (a.json)
            s_print_json(pm, &p, pl, v, nv);
        else
            s_print(pm, &p, pl, v, nv);
    }
    st_plan_destroy(&pl);
    free(pm);
    free(cl.nodes);
    return rc;
}
