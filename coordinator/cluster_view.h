/* cluster_view: what st-coordinator shows of its cluster through the HTTP
 * server (/health, /metrics, the web chat's picture): per node its address,
 * whether it is up, RAM budget and the memory it really uses (its HEARTBEAT
 * answers: RSS, its cgroup's charge and page cache), CPU temperature and
 * throttling where the board reports them, the experts placed on it (per
 * layer) and how many of them the coordinator computes while it is down,
 * round trips, bytes, timeouts, node compute time, expert cache hits and the
 * mean round trip of its expert requests (remote_moe measures each node's
 * own, from sending its EXPERT_COMPUTE to its result).
 */
#ifndef ST_CLUSTER_VIEW_H
#define ST_CLUSTER_VIEW_H

#include "server.h"
#include "setup.h"

typedef struct st_cluster_view st_cluster_view_t;

/* The view of c (borrowed, must outlive it). NULL on no memory. */
st_cluster_view_t *st_cluster_view_new(const st_coord_t *c);
void st_cluster_view_destroy(st_cluster_view_t **v);
/* The st_server_view_t to pass to st_server_main (v must outlive the server):
 * its nodes callback; the caller adds idle, between_steps and waiting. */
st_server_view_t st_cluster_view_server(st_cluster_view_t *v);

#endif
