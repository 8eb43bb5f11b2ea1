/* moe: the expert computation. The local MoE step (routing weights times
 * ReGLU experts, what st_moe_backend_t replaces), the (token, expert) pair
 * evaluation a node runs, and the weighted sum a cluster uses to put the
 * experts' outputs together with the same bits as the local step.
 */
#ifndef ST_MOE_H
#define ST_MOE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forward.h"

/* The local expert computation (what st_moe_backend_t replaces). */
int st_moe_local(st_ctx_t *c, const st_route_t *r, const float *m, float *out);

/* Where one layer's expert matrices are: one pointer per expert (NULL when
 * not held). gate/up: n_ff_exp rows of n_embd; down: n_embd rows of n_ff_exp,
 * or n_ff_exp rows of n_embd when down_transposed (PowerInfer layout). */
typedef struct {
    st_type_t gate_type, up_type, down_type;
    bool down_transposed;
    const void *const *gate;
    const void *const *up;
    const void *const *down;
    bool gate_packed, up_packed, down_packed; /* packed for the context's kernels (st_pack); else the file's layout */
} st_expert_set_t;

/* The expert set of layer il of a loaded model. */
st_expert_set_t st_model_expert_set(const st_ctx_t *c, int il);

/* Evaluates n_pairs (token, expert) pairs: y[i] = expert_{ids[i]}(m[tok[i]])
 * (unweighted, n_embd floats each). m: n_tok x n_embd. At most n_batch *
 * n_expert_used pairs. Used locally and by st-node. The context's model may
 * be a shell holding only cfg (a node has no GGUF). */
int st_experts_eval(st_ctx_t *c, const st_expert_set_t *set, int n_pairs, const int32_t *tok, const int32_t *ids,
                    const float *m, int n_tok, float *y);

/* The same with the activations already converted to the gate weight's
 * vec_dot format (st_type_traits(set->gate_type)->vec_dot_type), n_tok rows
 * xq_stride bytes apart: what a node receives on the wire. */
int st_experts_eval_converted(st_ctx_t *c, const st_expert_set_t *set, int n_pairs, const int32_t *tok,
                              const int32_t *ids, const void *xq, size_t xq_stride, int n_tok, float *y);

/* out[t] = sum_j w_tj * y[t*k + j], summed in routing order j = 0..k-1
 * exactly as st_moe_local does (so a cluster gets bit-identical results). */
void st_moe_combine(const st_route_t *r, int n_embd, const float *y, float *out);

#endif
