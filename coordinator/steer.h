/* steer: st-ctl's actions as the HTTP server hands them over (POST
 * /admin/drain, /admin/undrain and /admin/remove with {"node": NODE},
 * /admin/rebalance):
 * the node, named by its index, URL or id as /health shows them, resolved;
 * the action run (st_coord_drain, st_coord_undrain, st_coord_remove,
 * st_coord_rebalance in setup.c); what it did as JSON. Runs on the scheduler thread, between two
 * steps of the sequences running, so the tokens do not change.
 */
#ifndef ST_STEER_H
#define ST_STEER_H

#include <stddef.h>

/* The st_server_view_t.admin of st-coordinator: coord is its st_coord_t.
 * Returns an HTTP status (200 done; 400 a bad request or unknown node; 404
 * an unknown action; 409 refused in this state, e.g. removing a node that
 * still serves) with a malloc'd JSON answer in *reply: {"ok", "action",
 * "node", "url", "message", "experts_moved", "experts_pushed",
 * "bytes_pushed", "ms", "running"}, or an OpenAI-style {"error": ...}. */
int st_steer_admin(void *coord, const char *action, const char *body, size_t len, int running, char **reply);

#endif
