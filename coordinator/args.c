/* args: st-coordinator's command line (see args.h). */
#include "args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "curve.h"
#include "pair.h"
#include "parse.h"
#include "wire.h"

#define PROG "st-coordinator"

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
    OPT_MIN_NODES_TIMEOUT,
    OPT_PAIR,
    OPT_PAIR_TTL,
    OPT_DISCOVERY_PORT,
    OPT_WIRE,
    OPT_PAIR_CODE_FILE,
    OPT_OVERLAP,
    OPT_HEAD
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
                                       {"pair", required_argument, 0, OPT_PAIR},
                                       {"pair-ttl", required_argument, 0, OPT_PAIR_TTL},
                                       {"discovery-port", required_argument, 0, OPT_DISCOVERY_PORT},
                                       {"wire", required_argument, 0, OPT_WIRE},
                                       {"pair-code-file", required_argument, 0, OPT_PAIR_CODE_FILE},
                                       {"overlap", required_argument, 0, OPT_OVERLAP},
                                       {"head", required_argument, 0, OPT_HEAD},
                                       {0, 0, 0, 0}};

static void s_usage(FILE *f) {
    fprintf(
        f,
        "usage: st-coordinator -m MODEL (--nodes URL,... | --cluster FILE) (--insecure | --key FILE)\n"
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
        "      --pair URL         let boards pair with a code: listens on URL (tcp://HOST:PORT), prints\n"
        "                         \"pairing code: CODE\" on stderr (new at every start, valid --pair-ttl; an\n"
        "                         address with 10 wrong tries is refused until the next code, and after 1000 in\n"
        "                         all a new code is printed). A board that proves it (st-node --join --code CODE) is\n"
        "                         written into --cluster FILE and joins; it gets this coordinator's key. Needs\n"
        "                         --cluster and --key (both made when missing); with no node yet, the run waits for "
        "one\n"
        "      --pair-ttl S       seconds a pairing code is valid, then a new one is printed (default 600)\n"
        "      --pair-code-file FILE  also write each code there (mode 0600), for boards started by a script\n"
        "                         on the same machine (docker-compose)\n"
        "      --discovery-port N UDP port answering boards that look for the coordinator (default %d;\n"
        "                         0: none, boards then need --join tcp://HOST:PORT)\n"
        "      --insecure         plain TCP: no encryption, no authentication (logs a warning)\n"
        "      --key FILE         the coordinator's CURVE secret key file (from st-keygen; give the nodes its\n"
        "                         .pub in their --allow file)\n"
        "      --replication R    copies of each expert and of each head slice (--head sharded, at most 8),\n"
        "                         where a node's room allows (its --mem less its own bytes; default 1)\n"
        "      --timeout-ms N     deadline of each expert round trip and of ASSIGN (default 10000); the first\n"
        "                         HELLO to a node waits at least 5000 ms (TCP connect and CURVE handshake)\n"
        "      --push-timeout-ms N  deadline of each shard chunk acknowledgement (default 60000)\n"
        "      --no-fallback      fail when a node is down instead of computing its experts here\n"
        "      --no-prefetch      do not send EXPERT_PREFETCH hints after routing\n"
        "      --wire MODE        what the nodes send back (default exact):\n"
        "                         exact      one f32 vector per (token, expert), summed here: st-run's bits\n"
        "                         compact    one f32 partial sum per (token, node): fewer bytes back,\n"
        "                                    other rounding (float sums in another order)\n"
        "                         compact16  the same in f16, scaled per row: about half of compact's\n"
        "                                    bytes back; logits off by ~2e-4 of their scale (more where\n"
        "                                    8-bit activations or routing amplify it)\n"
        "      --overlap on|off   --http: a decode step of several users runs as two micro-batches, the\n"
        "                         attention of one here while the nodes compute the other's experts; the\n"
        "                         same tokens, but each micro-batch reads the dense weights again (default\n"
        "                         off: 0.73x with 8 users on one 2-core machine, see the README)\n"
        "      --pin-fraction F   share of a node's RAM for pinned hot experts, with a profile (default 0.5)\n"
        "      --state-dir DIR    where MODEL.placement.json/.st-hashes/.st-head-hashes/.st-profile go\n"
        "                         (default: beside the model)\n"
        "      --id NAME          coordinator id sent to the nodes (default st-coordinator)\n"
        "      --head MODE        the output head (the vocabulary x n_embd matrix): 'sharded' cuts its rows over\n"
        "                         the nodes up (each computes its slice; the rows are pushed once and kept in\n"
        "                         their stores; a slice whose node fails goes to a replica, see --replication,\n"
        "                         else is computed here); 'local' computes it here. Default: sharded when every\n"
        "                         node's room (--mem less st-node's own bytes) is at least 4 times its\n"
        "                         slice, else local (the choice is logged). The logits are the same bits\n"
        "                         either way\n"
        "      --quiet-push       no shard push progress line\n"
        "      --stats            also: per decode token round trips, bytes and node compute per node\n"
        "\n"
        "generation (as st-run)\n",
        ST_PAKE_DISCOVERY_PORT);
    st_cli_usage_options(f);
    st_cli_usage_tail(f);
}

static int s_bad(const char *flag, const char *val) {
    fprintf(stderr, PROG ": invalid value '%s' for %s (see --help)\n", val, flag);
    return 2;
}

static int s_handle(void *arg, int opt, const char *v) {
    st_coord_opts_t *c = arg;
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
    case OPT_PAIR:
        if (strncmp(v, "tcp://", 6)) return s_bad("--pair", v);
        c->pair_url = v;
        break;
    case OPT_PAIR_TTL:
        if (!st_parse_int(v, 10, 86400 * 7, &c->pair_ttl_s)) return s_bad("--pair-ttl", v);
        break;
    case OPT_PAIR_CODE_FILE: c->pair_code_file = v; break;
    case OPT_HEAD:
        if (!strcmp(v, "local"))
            c->head = ST_HEAD_LOCAL;
        else if (!strcmp(v, "sharded"))
            c->head = ST_HEAD_SHARDED;
        else
            return s_bad("--head", v);
        break;
    case OPT_DISCOVERY_PORT:
        if (!st_parse_int(v, 0, 65535, &c->discovery_port)) return s_bad("--discovery-port", v);
        break;
    case OPT_WIRE: {
        static const char *modes[ST_RESULT_FORMAT_COUNT] = {"exact", "compact", "compact16"};
        uint32_t i = 0; /* the modes in st_wire_result_format_t's order */
        while (i < ST_RESULT_FORMAT_COUNT && strcmp(v, modes[i]) != 0) i++;
        if (i == ST_RESULT_FORMAT_COUNT) return s_bad("--wire", v);
        c->result_format = i;
        break;
    }
    case OPT_OVERLAP:
        if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0) return s_bad("--overlap", v);
        c->overlap = !strcmp(v, "on");
        break;
    case OPT_HTTP:
        fprintf(stderr, PROG ": the HTTP API (--http) is not built yet; use the one-shot flags (-p ...)\n");
        return 2;
    default: return 2;
    }
    return 0;
}

/* What can be checked before the model loads (minutes for 12 GB on a Pi): the key, each node's
 * public key, --min-nodes, the state directory, st-run's flags. 0, or 2 after saying what is wrong. */
static int s_check(const st_coord_opts_t *ca, const st_cli_args_t *a, const st_node_addr_t *nodes, int n) {
    if (a->mem) { /* st-run's flag: said before the load, not after */
        fprintf(stderr, PROG ": --mem is st-run's (experts read from storage in one process); here the nodes hold\n"
                             "  the experts: give each st-node its --mem\n");
        return 2;
    }
#ifndef ST_HAVE_SERVER
    if (a->http && !a->prompt && !a->prompt_file && !a->tokens) {
        fprintf(stderr, PROG ": this build has no HTTP server (install libmicrohttpd-dev and rebuild)\n");
        return 2;
    }
#endif
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
    if (ca->min_nodes > n && !ca->pair_url) { /* with --pair, boards are still to come */
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

/* --pair: checks its companions, and makes the key pair and the cluster
 * file when missing (a first start with nothing but a code). 0, or 2. */
static int s_pair_files(const st_coord_opts_t *o) {
    if (o->insecure || o->nodes) {
        fprintf(stderr,
                PROG ": --pair gives the boards this coordinator's key: it takes --cluster FILE and --key FILE,\n"
                     "  not --insecure or --nodes\n");
        return 2;
    }
    if (!o->cluster_file || !o->key_file) {
        fprintf(stderr, PROG ": --pair needs --cluster FILE (paired boards are written there) and --key FILE (its\n"
                             "  public key goes to the boards); both are made when missing\n");
        return 2;
    }
    if (access(o->key_file, F_OK) != 0) {
        const size_t kl = strlen(o->key_file);
        char base[4096];
        if (kl < 5 || kl >= sizeof base || strcmp(o->key_file + kl - 4, ".key") != 0) {
            fprintf(stderr, PROG ": --key %s does not exist; to make it, name it NAME.key (NAME.pub goes beside it)\n",
                    o->key_file);
            return 2;
        }
        memcpy(base, o->key_file, kl - 4);
        base[kl - 4] = '\0';
        char pub[ST_CURVE_Z85_LEN + 1];
        if (st_curve_keygen(base, pub) < 0) return 2;
        fprintf(stderr, PROG ": made the coordinator key pair %s (public key %s)\n", o->key_file, pub);
    }
    if (access(o->cluster_file, F_OK) != 0) {
        FILE *f = fopen(o->cluster_file, "w");
        if (!f ||
            fputs("# URL NODE_PUBLIC_KEY: written by st-coordinator --pair (boards paired with a code)\n", f) < 0 ||
            fclose(f) != 0) {
            fprintf(stderr, PROG ": cannot make the cluster file %s: %s\n", o->cluster_file, strerror(errno));
            return 2;
        }
    }
    return 0;
}

int st_coord_args(int argc, char **argv, st_coord_opts_t *o, st_cli_args_t *a, st_node_addr_t **nodes, int *n_nodes) {
    *o = (st_coord_opts_t){.replication = 1,
                           .timeout_ms = 10000,
                           .push_timeout_ms = 60000,
                           .pin_fraction = 0.5,
                           .pair_ttl_s = 600,
                           .discovery_port = ST_PAKE_DISCOVERY_PORT};
    *nodes = NULL;
    *n_nodes = 0;
    const st_cli_extra_t extra = {s_opts, s_handle, o, s_usage};
    int status = st_cli_parse(PROG, argc, argv, a, &extra);
    if (status) return status;
    o->model_path = a->model;
    o->threads = a->threads;
    o->stats = a->stats;
    if (o->nodes && !o->insecure) {
        fprintf(stderr, PROG ": --nodes carries no node keys: use --cluster FILE (lines 'URL NODE_PUBLIC_KEY') with\n"
                             "  --key FILE, or add --insecure for plain TCP on a network you trust\n");
        return 2;
    }
    if (o->pair_code_file && !o->pair_url) {
        fprintf(stderr, PROG ": --pair-code-file goes with --pair URL\n");
        return 2;
    }
    if (o->pair_url && (status = s_pair_files(o)) != 0) return status;
    if (!(*nodes = st_coord_node_list(o->nodes, o->cluster_file, n_nodes, o->pair_url != NULL))) return 2;
    if ((status = s_check(o, a, *nodes, *n_nodes)) != 0) {
        free(*nodes);
        *nodes = NULL;
    }
    return status;
}
