/* zap: the node's gatekeeper for CURVE connections. A thread answers libzmq's
 * ZAP requests (RFC 27) on inproc://zeromq.zap.01: a client whose CURVE
 * public key is on the allow list is let in, any other is refused and
 * logged. The same thread watches the node socket's monitor and logs the
 * handshakes that fail before ZAP is asked (plain-text clients, wrong server
 * key, garbage), so every refused connection is in the log: the first 3 of
 * each address as lines, the rest counted, one line a minute
 * (common/log_limit.h). No secret passes through here.
 */
#ifndef ST_ZAP_H
#define ST_ZAP_H

#include <stdint.h>

typedef struct st_zap st_zap_t;

/* Starts the handler in zctx (before the node socket binds) and monitors
 * sock. allow: n_allow binary public keys, copied. NULL on failure (logged). */
st_zap_t *st_zap_new(void *zctx, void *sock, const uint8_t (*allow)[32], int n_allow);
/* Stops and joins the thread; call before closing sock. Sets *z = NULL. */
void st_zap_destroy(st_zap_t **z);
/* Connections refused so far (ZAP refusals and failed handshakes). */
uint64_t st_zap_refused(const st_zap_t *z);

#endif
