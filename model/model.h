/* model: a SmallThinker model loaded from GGUF: its configuration (from
 * metadata only, with llama.cpp's defaults) and views of its weights inside
 * the mapping.
 *
 * Accepts files from llama.cpp's converter and from PowerInfer's:
 * ffn_down_exps stored transposed, no gating key, an extra lm_head_profiler
 * tensor. Weights are used in place; the only copies made are the
 * de-transposed down matrices of float-typed PowerInfer files.
 */
#ifndef ST_MODEL_H
#define ST_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "st_kernels.h"
#include "tokenizer.h"

#define ST_MAX_LAYERS 512

typedef enum { ST_GATING_SOFTMAX = 1, ST_GATING_SIGMOID = 2 } st_gating_t;

/* The shapes. In the code, one letter each: E n_embd, F n_ff_exp, X n_expert,
 * K n_expert_used, L n_layer, V n_vocab, D head_dim, H n_head; also B n_batch
 * (tokens per step) and N the nodes of a cluster. */
typedef struct {
    int n_vocab;
    int n_embd;
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim; /* attention.key_length (== value_length) */
    int n_expert;
    int n_expert_used;
    int n_ff_exp; /* rows of each expert's gate/up */
    int n_ctx_train;
    float rope_base;
    float rope_base_swa;
    float rms_eps;
    float expert_weights_scale; /* 0: none */
    st_gating_t gating;
    int n_swa;                    /* 0: no sliding window; else window size (llama.cpp forces 4096) */
    bool is_swa[ST_MAX_LAYERS];   /* layer uses the sliding window */
    bool use_rope[ST_MAX_LAYERS]; /* false: NoPE layer */
} st_config_t;

/* A 2-D (or 3-D, for merged experts) weight: n_rows rows of n_cols elements,
 * row_bytes apart; for 3-D, n_mat matrices of n_rows rows, mat_bytes apart. */
typedef struct {
    st_type_t type;
    const uint8_t *data;
    int64_t n_cols;
    int64_t n_rows;
    int64_t n_mat;
    size_t row_bytes;
    size_t mat_bytes;
    const char *name;
    int pack_rows; /* 0: the file's layout; else packed for the model's kernels (st_pack) */
} st_weight_t;

typedef struct {
    st_weight_t attn_norm;  /* [n_embd] F32 */
    st_weight_t wq, wk, wv; /* [n_embd] -> q/k/v; views into attn_qkv when fused */
    st_weight_t wo;         /* [n_head*head_dim] -> n_embd */
    st_weight_t ffn_norm;   /* [n_embd] F32 */
    st_weight_t router;     /* [n_embd] -> n_expert */
    st_weight_t gate_exps;  /* n_expert x [n_embd] -> n_ff_exp */
    st_weight_t up_exps;    /* n_expert x [n_embd] -> n_ff_exp */
    st_weight_t down_exps;  /* n_expert x [n_ff_exp] -> n_embd (or transposed, below) */
    bool down_transposed;   /* PowerInfer layout: row j of expert e = neuron j's output column */
} st_layer_t;

typedef struct st_model {
    st_gguf_t *gguf;
    st_config_t cfg;
    st_tokenizer_t *tok; /* NULL when the file has no usable vocabulary */
    st_weight_t tok_embd;
    st_weight_t output_norm;
    st_weight_t output; /* output.weight, or token_embd when tied */
    st_layer_t *layers;
    void **owned; /* buffers the loader allocated (de-transposed weights) */
    int n_owned;
    const st_kernels_t *kernels; /* the table the weights are packed for (st_model_pack), or NULL */
    bool head_mapped;            /* output.weight stays as the file has it (st_model_pack skips it) */
} st_model_t;

/* Loads path (validated GGUF, architecture smallthinker). NULL after logging
 * a clear reason. */
st_model_t *st_model_load(const char *path);
/* The same from a resident copy of the file (st_gguf_open_resident): for a
 * process that keeps every weight in RAM (no expert cache). Its matrices are
 * packed for this CPU's kernels (st_model_pack). */
st_model_t *st_model_load_resident(const char *path);
/* The same mapped, for a coordinator (its experts run on nodes): the dense
 * matrices (attention, output head) packed (st_model_pack) in private pages,
 * the experts left as the file has them. Not for a process under a memory
 * budget (--mem): the private copies cannot be reclaimed as file pages can.
 * pack_head false leaves the output head as the file has it (mapped, read
 * only where used: a head sharded over nodes, computed here on fallback). */
st_model_t *st_model_load_streaming(const char *path, bool pack_head);
/* Packs the matrices that only matmuls read (attention, output head, and
 * the experts when `experts`) for kernel table k, in place (st_pack), and
 * makes k the table of every context on m. On a file mapping (st_model_load)
 * the packed matrices' pages become private copies; pack the experts only
 * in a resident copy, where nothing else reads them as the file has them.
 * With ST_PACK=0 in the environment nothing is packed (st_packable). */
int st_model_pack(st_model_t *m, const st_kernels_t *k, bool experts);
/* The same from an already-open GGUF; takes ownership of *g (sets it NULL). */
st_model_t *st_model_from_gguf(st_gguf_t **g);
void st_model_destroy(st_model_t **m);

/* One-line description: "smallthinker 4 layers, 64 embd, 8 experts (top 2) ...". */
void st_model_describe(const st_model_t *m, char *buf, size_t cap);

/* Pointer to row r of matrix e of a weight. */
static inline const void *st_weight_row(const st_weight_t *w, int64_t e, int64_t r) {
    return w->data + (size_t)e * w->mat_bytes + (size_t)r * w->row_bytes;
}

#endif
