/* args: st-coordinator's command line: its own options (--nodes,
 * --cluster, --key, --min-nodes...; --help lists them with their defaults)
 * on top of st-run's (cli/), and the checks that can be made before the
 * model loads, which takes minutes for 12 GB on a Pi. */
#ifndef ST_ARGS_H
#define ST_ARGS_H

#include "cli.h"
#include "setup.h"

/* Parses argv into *o and *a, reads the node list (--nodes, the cluster
 * file) into *nodes (malloc'd, *n_nodes of them) and checks what it can: the
 * key file, each node's key, --min-nodes against the list, --state-dir,
 * flags of st-run's that do not apply. 0, or the exit status after printing
 * why (2; 0 after --help or --version is st_cli_parse's exit). */
int st_coord_args(int argc, char **argv, st_coord_opts_t *o, st_cli_args_t *a, st_node_addr_t **nodes, int *n_nodes);

#endif
