/* moe: routing (top-k of the router logits, sigmoid or softmax weights
 * renormalised over the k) and the local ReGLU expert computation. */
#ifndef ST_MOE_H
#define ST_MOE_H

#include "forward_internal.h"

/* Picks the experts of n_tok tokens from c->router (n_tok x n_expert logits)
 * into c->ids / c->wts and describes them in *r. */
void st_moe_route(st_ctx_t *c, int layer, int n_tok, st_route_t *r);

#endif
