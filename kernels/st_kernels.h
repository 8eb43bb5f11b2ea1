/* st_kernels: quantized block formats, type traits and the dispatch table of
 * compute kernels (dot products, activation quantization, dequantization).
 *
 * One table per instruction set (ref = portable scalar C, always built; avx2;
 * avx512 = AVX2 + VNNI matmul; on aarch64 neon = plain ASIMD and neon-dotprod =
 * ASIMD + sdot). st_kernels_select() probes the CPU once and returns the best
 * table; callers never see #ifdef __AVX2__. Kernels never allocate:
 * every buffer is the caller's.
 *
 * Numerics follow ggml so that results match llama.cpp: a weight row of type T
 * is multiplied with an activation row converted to st_type_traits(T)->vec_dot_type
 * (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants, F16 for
 * F16, BF16 for BF16).
 */
#ifndef ST_KERNELS_H
#define ST_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ggml type ids: these numbers are stored in GGUF files. */
typedef enum {
    ST_TYPE_F32 = 0,
    ST_TYPE_F16 = 1,
    ST_TYPE_Q4_0 = 2,
    ST_TYPE_Q4_1 = 3,
    ST_TYPE_Q5_0 = 6,
    ST_TYPE_Q5_1 = 7,
    ST_TYPE_Q8_0 = 8,
    ST_TYPE_Q8_1 = 9,
    ST_TYPE_Q2_K = 10,
    ST_TYPE_Q3_K = 11,
    ST_TYPE_Q4_K = 12,
    ST_TYPE_Q5_K = 13,
    ST_TYPE_Q6_K = 14,
    ST_TYPE_Q8_K = 15,
    ST_TYPE_IQ2_XXS = 16,
    ST_TYPE_IQ2_XS = 17,
    ST_TYPE_IQ3_XXS = 18,
    ST_TYPE_IQ1_S = 19,
    ST_TYPE_IQ4_NL = 20,
    ST_TYPE_IQ3_S = 21,
    ST_TYPE_IQ2_S = 22,
    ST_TYPE_IQ4_XS = 23,
    ST_TYPE_I8 = 24,
    ST_TYPE_I16 = 25,
    ST_TYPE_I32 = 26,
    ST_TYPE_I64 = 27,
    ST_TYPE_F64 = 28,
    ST_TYPE_IQ1_M = 29,
    ST_TYPE_BF16 = 30,
    ST_TYPE_TQ1_0 = 34,
    ST_TYPE_TQ2_0 = 35,
    ST_TYPE_MXFP4 = 39,
    ST_TYPE_COUNT = 40 /* size of per-type tables; ids >= this are unknown */
} st_type_t;

#define ST_QK4_0 32
#define ST_QK8_0 32
#define ST_QK_K 256

typedef struct {
    uint16_t d;               /* fp16 scale */
    uint8_t qs[ST_QK4_0 / 2]; /* element j: low nibble of qs[j]; j+16: high nibble; value (q-8)*d */
} st_block_q4_0;
_Static_assert(sizeof(st_block_q4_0) == 18, "GGUF Q4_0 layout");

typedef struct {
    uint16_t d;          /* fp16 scale */
    int8_t qs[ST_QK8_0]; /* value q*d */
} st_block_q8_0;
_Static_assert(sizeof(st_block_q8_0) == 34, "GGUF Q8_0 layout");

typedef struct {
    uint16_t d;               /* fp16 scale */
    uint16_t m;               /* fp16 minimum */
    uint8_t qs[ST_QK4_0 / 2]; /* nibbles as in Q4_0; value q*d + m */
} st_block_q4_1;
_Static_assert(sizeof(st_block_q4_1) == 20, "GGUF Q4_1 layout");

typedef struct {
    uint16_t d;               /* fp16 scale */
    uint8_t qh[4];            /* bit j of this little-endian u32: 5th bit of element j */
    uint8_t qs[ST_QK4_0 / 2]; /* low 4 bits, nibbles as in Q4_0; value (q-16)*d */
} st_block_q5_0;
_Static_assert(sizeof(st_block_q5_0) == 22, "GGUF Q5_0 layout");

typedef struct {
    uint16_t d;               /* fp16 scale */
    uint16_t m;               /* fp16 minimum */
    uint8_t qh[4];            /* 5th bits as in Q5_0 */
    uint8_t qs[ST_QK4_0 / 2]; /* low 4 bits as in Q5_0; value q*d + m */
} st_block_q5_1;
_Static_assert(sizeof(st_block_q5_1) == 24, "GGUF Q5_1 layout");

typedef struct {
    uint16_t d;          /* fp16 scale */
    uint16_t s;          /* fp16 of d * sum(qs): the activation side of the Q4_1/Q5_1 minimum term */
    int8_t qs[ST_QK8_0]; /* value q*d */
} st_block_q8_1;
_Static_assert(sizeof(st_block_q8_1) == 36, "ggml Q8_1 layout");

/* K-quants: super-blocks of 256. Element layouts are spelled out in kernels/ref/quant_ref.c. */
typedef struct {
    uint8_t scales[ST_QK_K / 16]; /* per 16 elements: scale (low nibble), min (high nibble) */
    uint8_t qs[ST_QK_K / 4];      /* 2-bit quants */
    uint16_t d;                   /* fp16 super-block scale of the scales */
    uint16_t dmin;                /* fp16 super-block scale of the mins */
} st_block_q2_k;
_Static_assert(sizeof(st_block_q2_k) == 84, "GGUF Q2_K layout");

typedef struct {
    uint8_t hmask[ST_QK_K / 8]; /* high bit of each quant */
    uint8_t qs[ST_QK_K / 4];    /* low 2 bits */
    uint8_t scales[12];         /* 16 6-bit scales, packed, stored +32 */
    uint16_t d;                 /* fp16 super-block scale */
} st_block_q3_k;
_Static_assert(sizeof(st_block_q3_k) == 110, "GGUF Q3_K layout");

typedef struct {
    uint16_t d;              /* fp16 super-block scale of the scales */
    uint16_t dmin;           /* fp16 super-block scale of the mins */
    uint8_t scales[12];      /* 8 6-bit scales and 8 6-bit mins of 32-element groups, packed */
    uint8_t qs[ST_QK_K / 2]; /* 4-bit quants */
} st_block_q4_k;
_Static_assert(sizeof(st_block_q4_k) == 144, "GGUF Q4_K layout");

typedef struct {
    uint16_t d; /* as Q4_K */
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[ST_QK_K / 8]; /* 5th bit of each quant */
    uint8_t qs[ST_QK_K / 2]; /* low 4 bits */
} st_block_q5_k;
_Static_assert(sizeof(st_block_q5_k) == 176, "GGUF Q5_K layout");

typedef struct {
    uint8_t ql[ST_QK_K / 2];     /* quants, lower 4 bits */
    uint8_t qh[ST_QK_K / 4];     /* quants, upper 2 bits */
    int8_t scales[ST_QK_K / 16]; /* 8-bit scales of 16-element groups */
    uint16_t d;                  /* fp16 super-block scale */
} st_block_q6_k;
_Static_assert(sizeof(st_block_q6_k) == 210, "GGUF Q6_K layout");

typedef struct {
    float d;                     /* scale */
    int8_t qs[ST_QK_K];          /* quants */
    int16_t bsums[ST_QK_K / 16]; /* sums of groups of 16 quants */
} st_block_q8_k;
_Static_assert(sizeof(st_block_q8_k) == 292, "ggml Q8_K layout");

typedef struct {
    const char *name;       /* "Q4_0"; NULL when the id is unknown */
    int blck;               /* elements per block */
    size_t size;            /* bytes per block */
    st_type_t vec_dot_type; /* activation format for dot products with this weight type */
    bool supported;         /* kernels exist for it as a weight type */
} st_type_traits_t;

/* Traits of a ggml type id, or NULL for an id we do not know at all. */
const st_type_traits_t *st_type_traits(int type);
/* "Q4_0", or "unknown" for an unknown id. */
const char *st_type_name(int type);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t st_row_size(st_type_t type, int64_t n);

/* fp16 / bf16 <-> f32, round to nearest even (same bits as ggml's reference). */
float st_fp16_to_fp32(uint16_t h);
uint16_t st_fp32_to_fp16(float f);
float st_bf16_to_fp32(uint16_t h);
uint16_t st_fp32_to_bf16(float f);

/* s[0] = dot(w row, x row) over n elements; w in the weight type, x in its vec_dot_type. */
typedef void (*st_vec_dot_fn)(int n, float *s, const void *w, const void *x);
/* Convert n floats into a row of the table's type (activation quantization). */
typedef void (*st_from_float_fn)(int n, const float *x, void *y);
/* Convert a row of n elements of the table's type back to floats. */
typedef void (*st_to_float_fn)(int n, const void *x, float *y);
/* y[0..n) += a * x[0..n), x a row of the table's type (F32, F16: a KV cache):
 * attention's weighted sum of values. Each element is multiplied, then added
 * (two roundings, no FMA), so every table gives the same bits. */
typedef void (*st_axpy_fn)(int n, float a, const void *x, float *y);
/* st_matmul() / st_matmul_rows() for one weight type (arguments as there, w =
 * row 0; rows NULL: rows r0..r1-1, else rows[r0..r1)): several rows and tokens
 * per step, so weights are unpacked once for many products. Results agree
 * with the table's vec_dot up to float rounding. */
typedef void (*st_matmul_fn)(int n_in, const void *w, const int32_t *rows, int r0, int r1, const void *x,
                             size_t x_stride, int n_tok, float *y, size_t y_stride);

/* Callers cut packed matrices at multiples of this many rows. */
#define ST_PACK_MAX_ROWS 16

typedef struct {
    const char *name;                           /* "ref", "avx2", ... */
    st_vec_dot_fn vec_dot[ST_TYPE_COUNT];       /* by weight type */
    st_from_float_fn from_float[ST_TYPE_COUNT]; /* by target type: F32, F16, BF16, Q8_0, Q8_1, Q8_K, (Q4_0) */
    st_to_float_fn to_float[ST_TYPE_COUNT];     /* by stored type */
    st_matmul_fn matmul[ST_TYPE_COUNT];         /* by weight type; NULL: rows x tokens of vec_dot */
    st_axpy_fn axpy[ST_TYPE_COUNT];             /* by stored type: F32, F16 */
    /* Packed weights (st_pack): rows interleaved pack_rows[t] at a time (0: the
     * table does not pack type t), so the matmul reads them without
     * transposing; matmul_packed takes consecutive rows only (rows NULL), r0
     * and r1 multiples of pack_rows[t], and gives matmul's bits. */
    int pack_rows[ST_TYPE_COUNT]; /* each divides ST_PACK_MAX_ROWS */
    st_matmul_fn matmul_packed[ST_TYPE_COUNT];
} st_kernels_t;

extern const st_kernels_t st_kernels_ref;
#if defined(__x86_64__)
/* Absent from -DST_REF_ONLY builds (avx512 also from compilers without it):
 * outside kernels/, use st_kernels_by_name("avx2") / ("avx512"). */
extern const st_kernels_t st_kernels_avx2;
extern const st_kernels_t st_kernels_avx512; /* AVX-512 F/VL/BW/VNNI */
#elif defined(__aarch64__)
/* Absent from -DST_REF_ONLY builds: outside kernels/, use st_kernels_by_name("neon")
 * / ("neon-dotprod"). */
extern const st_kernels_t st_kernels_neon;         /* ARMv8-A ASIMD (Pi 4: Cortex-A72) */
extern const st_kernels_t st_kernels_neon_dotprod; /* + the dot-product extension (Pi 5: Cortex-A76) */
#endif

/* Best table for this CPU, probed once; ST_KERNELS=ref (or avx2, neon...) forces a table. */
const st_kernels_t *st_kernels_select(void);
/* The table called name ("ref", "avx2", "neon-dotprod"...), or NULL when it is not built into this
 * binary or this CPU cannot run it. Lets tests and benchmarks compare tables. */
const st_kernels_t *st_kernels_by_name(const char *name);

/* Weight quantization exactly as ggml's reference quantizers (and llama-quantize):
 * used to write model files. n is a multiple of the block size. */
void st_quantize_row_q4_0_ref(int n, const float *x, st_block_q4_0 *y);
void st_quantize_row_q8_0_ref(int n, const float *x, st_block_q8_0 *y);

/* Rearranges a matrix of n_rows rows of n_in elements of type t, in place,
 * into table k's packed layout (see st_kernels_t.pack_rows): each group of R
 * = pack_rows[t] consecutive rows keeps its bytes, interleaved block by block
 * (Q4_0: the R fp16 scales, then four chunks of 4R bytes, chunk c holding
 * bytes 4c..4c+3 of each row's 16 nibble bytes, row after row; Q4_K, Q5_K,
 * Q6_K: every 16 bytes of the R rows' super-blocks as 4 such chunks, see
 * pack.c). False, with nothing changed, when k does not pack t, n_rows is not
 * a multiple of R or memory for one group is lacking. */
bool st_pack(const st_kernels_t *k, st_type_t t, int n_in, int64_t n_rows, void *w);
/* Whether st_pack would pack such a matrix (memory aside); never with
 * ST_PACK=0 in the environment, so every process keeps the file's layout. */
bool st_packable(const st_kernels_t *k, st_type_t t, int n_in, int64_t n_rows);

/* y[t][r] = dot(W row r, x row t) for rows r in [r0, r1) and tokens t in [0, n_tok).
 * w: first row of W (weight type wtype, rows of n_in elements, contiguous);
 * x: n_tok activation rows already converted to the vec_dot_type, x_stride bytes apart;
 * y: floats, row t starts at y + t * y_stride (y_stride counted in floats, not bytes),
 *    and y[t * y_stride + r] receives row r: only columns [r0, r1) are written, so
 *    threads given disjoint row ranges can share y. */
void st_matmul(const st_kernels_t *k, st_type_t wtype, const void *w, int n_in, int r0, int r1, const void *x,
               size_t x_stride, int n_tok, float *y, size_t y_stride);

/* st_matmul on a matrix packed for table k (st_pack): the same bits; r0
 * and r1 are multiples of k->pack_rows[wtype]. */
void st_matmul_packed(const st_kernels_t *k, st_type_t wtype, const void *w, int n_in, int r0, int r1, const void *x,
                      size_t x_stride, int n_tok, float *y, size_t y_stride);

/* The same for the n_rows rows listed in rows (any order, each in range, no
 * repeats): y[t * y_stride + rows[i]] = dot(W row rows[i], x row t); nothing
 * else of y is written. For sparse products, e.g. the up rows of the neurons
 * that ReGLU keeps: listed rows cost about what consecutive ones do. */
void st_matmul_rows(const st_kernels_t *k, st_type_t wtype, const void *w, int n_in, const int32_t *rows, int n_rows,
                    const void *x, size_t x_stride, int n_tok, float *y, size_t y_stride);

#endif
