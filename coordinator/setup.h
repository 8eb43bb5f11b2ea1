/* setup: the coordinator's cluster as the steps st-coordinator's main()
 * calls in order, testable without it:
 *
 *   st_coord_new      the model's expert shape, nothing on the network
 *   st_coord_setup    connect, HELLO every node for its INVENTORY, hash the
 *                     experts, place them, ASSIGN each node its share, push
 *                     what it lacks
 *   st_coord_wait     (one-shot) until --min-nodes are up
 *   st_coord_attach   the remote MoE backend on the generation's context
 *   st_coord_between_steps   called by the generation loop (st_gen_step,
 *                     one-shot or HTTP) before each step: pushes to nodes
 *                     that come back, nodes that answered join
 *                     (st_coord_join); st_coord_reread on SIGHUP
 *   st_coord_drain, st_coord_undrain, st_coord_remove, st_coord_rebalance
 *                     st-ctl's actions,
 *                     between steps (the HTTP scheduler runs them there)
 *   st_coord_save     the routing profile, for the next placement
 *
 * Next to the model (or in state_dir) it keeps MODEL.placement.json (the
 * placement, for people and tools), MODEL.st-hashes (expert hashes, so the
 * model is hashed once) and MODEL.st-profile (routing counts, so the next
 * placement pins hot experts). Everything runs on one thread, the one that
 * owns the cluster's sockets.
 */
#ifndef ST_SETUP_H
#define ST_SETUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "cluster.h"
#include "forward.h"
#include "model.h"
#include "placement.h"
#include "experts.h"
#include "remote_head.h"
#include "remote_moe.h"

/* --head: where the output head runs. */
typedef enum {
    ST_HEAD_AUTO = 0, /* sharded when every node up has room for its slice (4 x its size in --mem), else local */
    ST_HEAD_LOCAL,    /* here (today's behaviour) */
    ST_HEAD_SHARDED,  /* by vocabulary over the nodes up (remote_head.h) */
    ST_HEAD_COUNT
} st_head_mode_t;

/* What the command line says (st-coordinator --help). */
typedef struct {
    const char *nodes;        /* --nodes URL,URL (insecure only), or NULL */
    const char *cluster_file; /* --cluster FILE ("URL NODE_PUBLIC_KEY" lines), re-read by st_coord_reread */
    const char *key_file, *state_dir, *id;
    const char *pair_url;            /* --pair: listen for boards pairing with a code (pair.h) */
    long pair_ttl_s, discovery_port; /* a code's lifetime; UDP port answered (0: none) */
    const char *pair_code_file;      /* --pair-code-file: each code also goes there */
    const char *model_path;          /* for the state files' names */
    bool insecure, no_fallback, no_prefetch, quiet_push, stats;
    long replication, timeout_ms, push_timeout_ms, threads;
    long min_nodes, min_nodes_timeout_s; /* 0: no minimum; no time limit */
    double pin_fraction;
    uint32_t result_format; /* --wire: what the nodes return (st_remote_opts_t.result_format) */
    bool overlap;           /* --overlap on: decode steps of several sequences as two micro-batches */
    st_head_mode_t head;    /* --head */
} st_coord_opts_t;

/* The nodes of --nodes and of the cluster file (malloc'd, *n of them), or
 * NULL after printing why (unreadable file, bad address or key, no node
 * unless allow_empty). */
st_node_addr_t *st_coord_node_list(const char *nodes, const char *cluster_file, int *n, bool allow_empty);

typedef struct st_coord st_coord_t;

/* For model m (borrowed, must outlive it) and o (copied; its strings are
 * borrowed). NULL (logged) when the model's experts cannot be served. */
st_coord_t *st_coord_new(const st_model_t *m, const st_coord_opts_t *o, const st_node_addr_t *nodes, int n_nodes);
/* Stops the backend (st_coord_attach's), closes the connections, frees. */
void st_coord_destroy(st_coord_t **c);

/* With --pair, starts listening for boards (their lines go into the
 * cluster file; with none there yet, the cluster starts empty and
 * --min-nodes is at least 1). Connects, HELLOs
 * every node, hashes the experts (or reads their cache), places them over
 * the nodes that answered, ASSIGNs and pushes. With --min-nodes and fewer
 * up, the placement waits for them (st_coord_join).
 * 0, or a process exit status (1; 2 for a missing key). */
int st_coord_setup(st_coord_t *c);
/* Whether the run still waits for --min-nodes, with the reason in why (may be
 * NULL). Stops waiting for good once enough nodes are up or the time is over. */
bool st_coord_waiting(st_coord_t *c, char *why, size_t cap);
/* Waits (taking in the nodes' answers) until st_coord_waiting is false, then
 * places the experts if they are not yet. 0, or a process exit status. */
int st_coord_wait(st_coord_t *c);

/* The largest batch one EXPERT_COMPUTE carries: n_batch capped to it. */
int st_coord_max_batch(const st_coord_t *c, int n_batch);
/* Creates the remote MoE backend for ctx and installs it (st_ctx_set_moe);
 * with the head sharded, the remote head backend too (st_ctx_set_head).
 * 0 or a negative ST_E* code. */
int st_coord_attach(st_coord_t *c, st_ctx_t *ctx);

/* Between two steps of a generation, or while idle: re-reads the cluster
 * file when boards paired, pushes to nodes that come back without their
 * experts, then st_coord_join. */
void st_coord_between_steps(st_coord_t *c);
/* With no request in flight (a server between requests): st_coord_between_steps,
 * then takes in what the nodes sent (st_cluster_idle). */
void st_coord_idle(st_coord_t *c);
/* Asks the nodes how their boards are doing (memory, temperature), at most
 * every two seconds each, for the HTTP view; the answers come in during the
 * cluster's waits (st_cluster_board). */
void st_coord_ask_board(st_coord_t *c);
/* Nodes that answered with no share (never answered before, or added) are
 * admitted and the experts placed again over all nodes, keeping each where it
 * is, so only what the newcomers take over moves. Waits a second after the
 * first answer, or, for --min-nodes, until enough have answered, so that
 * nodes coming up together are placed once. Returns how many joined. */
int st_coord_join(st_coord_t *c);
/* Re-reads the cluster file (SIGHUP, or a board paired; why names it in the
 * log): nodes not seen before are added, down until they answer their probe;
 * nothing waits for them. A known node whose key changed (it paired again) is
 * reconnected with its new key (st_cluster_rekey). Returns how many were
 * added (0 with --nodes: logged). */
int st_coord_reread(st_coord_t *c, const char *why);

/* What an st-ctl action did (st_coord_drain...), for its answer. */
typedef struct {
    int experts_moved;       /* experts whose node changed */
    uint32_t experts_pushed; /* of them, sent to a node that did not hold them */
    int64_t bytes_pushed;
    int nodes_up;
    double ms;
    char message[400]; /* one line for people: what happened, or why not */
} st_coord_change_t;

/* Drains node (st-ctl drain): places the experts again without it, ASSIGNs
 * and pushes to the others, then switches the generation to that placement
 * and sends the node an empty ASSIGN; it stays connected, out of placement
 * (rebalance and joins give it nothing). Call between steps: the tokens do
 * not change (every placement gives the same bits). Refused (a negative
 * ST_E* code, why in chg->message) for an unknown or removed node, before any
 * placement, or when no other node up would serve. */
int st_coord_drain(st_coord_t *c, int node, st_coord_change_t *chg);
bool st_coord_drained(const st_coord_t *c, int node);
/* Puts a drained node back in placement (st-ctl undrain): the experts are
 * placed again over it and the others, keeping them where they are while
 * shares allow, so it takes back a share (what its store still holds is
 * not sent again). Refused for a node that is not drained. */
int st_coord_undrain(st_coord_t *c, int node, st_coord_change_t *chg);
/* Removes node for good (st-ctl remove): refused while it is up and not
 * drained; a node that is down with a share has it placed on the others.
 * Its lines are taken out of the cluster file, so it stays out at the next
 * start (chg->message says whether; a file that cannot be rewritten only
 * warns: the node is out of this run all the same). */
int st_coord_remove(st_coord_t *c, int node, st_coord_change_t *chg);
/* Places the experts again over the nodes up (st-ctl rebalance), keeping
 * them where they are while shares allow: the shares of nodes that are down
 * go to the others (the coordinator stops computing them), and this run's
 * routing counts join the profile that pins hot experts. Between steps. */
int st_coord_rebalance(st_coord_t *c, st_coord_change_t *chg);

/* --stats: the remote backend's summary on f. */
void st_coord_print_stats(st_coord_t *c, FILE *f);
/* Adds this run's routing counts to MODEL.st-profile (a failure only warns). */
void st_coord_save(st_coord_t *c);

/* For the HTTP view (borrowed, valid until the next step or destroy; NULL
 * before setup, or with no placement yet). */
const st_cluster_t *st_coord_cluster(const st_coord_t *c);
const st_placement_t *st_coord_placement(const st_coord_t *c);
const st_remote_moe_t *st_coord_remote(const st_coord_t *c);
/* With --pair: the current code and its seconds left, true; false without.
 * Any thread (the code is behind a lock). */
bool st_coord_pairing(const st_coord_t *c, char *code, size_t cap, int *seconds_left);

#endif
