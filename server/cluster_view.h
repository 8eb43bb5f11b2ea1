/* cluster_view: what st-coordinator shows of its cluster through the HTTP
 * server (/health, /metrics, the web chat's picture): per node its address,
 * whether it is up, RAM budget, the experts placed on it (per layer), round
 * trips, bytes, timeouts, node compute time and expert cache hits.
 *
 * Round-trip latency per node is measured here: the view wraps the remote
 * MoE backend and charges the wall time of each layer's expert step to every
 * node that owns one of the routed experts (the step waits for all of them,
 * so this is the latency a node's participation costs, not its network RTT
 * alone).
 */
#ifndef ST_CLUSTER_VIEW_H
#define ST_CLUSTER_VIEW_H

#include "cluster.h"
#include "placement.h"
#include "remote_moe.h"
#include "server.h"

typedef struct st_cluster_view st_cluster_view_t;

/* The coordinator's objects by address: they are created later (setup runs
 * in the server's on_params hook), so the view reads them when it is asked. */
st_cluster_view_t *st_cluster_view_new(st_cluster_t *const *cl, st_placement_t *const *pl, st_remote_moe_t *const *rm);
void st_cluster_view_destroy(st_cluster_view_t **v);
/* The st_server_view_t to pass to st_server_main (v must outlive the server). */
st_server_view_t st_cluster_view_server(st_cluster_view_t *v);

#endif
