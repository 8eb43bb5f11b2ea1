/* steer: st-ctl's admin requests to setup.c's actions (see steer.h). */
#include "steer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "setup.h"
#include "st_log.h"

/* {"error": {"message": msg, ...}} as the API's errors (malloc'd). */
static char *s_error(const char *msg) {
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", "invalid_request_error");
    cJSON_AddNullToObject(e, "code");
    char *j = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return j;
}

/* The node a request names: its index (a number, or digits), its URL (with
 * or without tcp://) or its id, if exactly one node has it. -1 with why. */
static int s_node(const st_cluster_t *cl, const cJSON *v, char *why, size_t cap) {
    const int n = st_cluster_n_nodes(cl);
    char buf[300];
    if (cJSON_IsNumber(v)) {
        snprintf(buf, sizeof buf, "%.17g", v->valuedouble);
    } else if (cJSON_IsString(v) && *v->valuestring && strlen(v->valuestring) < sizeof buf) {
        snprintf(buf, sizeof buf, "%s", v->valuestring);
    } else {
        snprintf(why, cap, "give the node as {\"node\": INDEX, URL or ID}");
        return -1;
    }
    if (buf[strspn(buf, "0123456789")] == '\0') {
        long i = strtol(buf, NULL, 10);
        if (i < n && strlen(buf) < 6) return (int)i;
        snprintf(why, cap, "there is no node %s (the nodes are 0 to %d)", buf, n - 1);
        return -1;
    }
    int found = -1, matches = 0;
    for (int i = 0; i < n; i++) {
        const char *url = st_cluster_url(cl, i);
        const st_wire_inventory_t *inv = st_cluster_inventory(cl, i);
        bool hit = !strcmp(url, buf) || (!strncmp(url, "tcp://", 6) && !strcmp(url + 6, buf)) ||
                   (inv && !strcmp(inv->node_id, buf));
        if (hit && !st_cluster_is_removed(cl, i)) found = i, matches++;
    }
    if (matches == 1) return found;
    if (matches)
        snprintf(why, cap, "%d nodes go by '%s': name it by index or URL", matches, buf);
    else
        snprintf(why, cap, "no node is called '%s'", buf);
    return -1;
}

int st_steer_admin(void *coord, const char *action, const char *body, size_t len, int running, char **reply) {
    st_coord_t *c = coord;
    const st_cluster_t *cl = st_coord_cluster(c);
    const bool drain = !strcmp(action, "drain"), undrain = !strcmp(action, "undrain"),
               remove = !strcmp(action, "remove"), rebalance = !strcmp(action, "rebalance");
    if (!drain && !undrain && !remove && !rebalance) {
        char msg[128];
        snprintf(msg, sizeof msg, "no admin action '%.60s' (drain, undrain, remove, rebalance)", action);
        *reply = s_error(msg);
        return 404;
    }
    if (!cl) {
        *reply = s_error("no cluster yet");
        return 409;
    }
    int node = -1;
    char why[400] = "";
    cJSON *req = len ? cJSON_ParseWithLength(body, len) : cJSON_CreateObject();
    if (!cJSON_IsObject(req)) {
        cJSON_Delete(req);
        *reply = s_error("the body must be a JSON object");
        return 400;
    }
    if (!rebalance && (node = s_node(cl, cJSON_GetObjectItemCaseSensitive(req, "node"), why, sizeof why)) < 0) {
        cJSON_Delete(req);
        *reply = s_error(why);
        return 400;
    }
    cJSON_Delete(req);
    st_coord_change_t chg;
    int rc = drain     ? st_coord_drain(c, node, &chg)
             : undrain ? st_coord_undrain(c, node, &chg)
             : remove  ? st_coord_remove(c, node, &chg)
                       : st_coord_rebalance(c, &chg);
    if (rc < 0) {
        *reply = s_error(chg.message);
        return 409;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "ok", true);
    cJSON_AddStringToObject(o, "action", action);
    if (node >= 0) {
        cJSON_AddNumberToObject(o, "node", node);
        cJSON_AddStringToObject(o, "url", st_cluster_url(cl, node));
    }
    cJSON_AddStringToObject(o, "message", chg.message);
    cJSON_AddNumberToObject(o, "experts_moved", chg.experts_moved);
    cJSON_AddNumberToObject(o, "experts_pushed", chg.experts_pushed);
    cJSON_AddNumberToObject(o, "bytes_pushed", (double)chg.bytes_pushed);
    cJSON_AddNumberToObject(o, "ms", chg.ms);
    cJSON_AddNumberToObject(o, "running", running); /* it happened between two of their steps */
    *reply = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return 200;
}
