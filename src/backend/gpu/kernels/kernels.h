/*
 * kernels.h — the launchers of the GPU kernels, one family per .cu file
 * (matmul.cu with gemm_blas.cu, attention.cu, attention_tiled.cu, norm.cu,
 * rope.cu, elementwise.cu, sample.cu; the .cuh files are their shared
 * device code: dequant, q8, mmq, mmvq). Each queues
 * its kernel(s) on `s` and returns the launch's error; the backend (gpu.cu)
 * checks it. Shapes: activations are rows of F32 with a row stride in
 * floats (ld*); weights are rows of GGUF blocks with a stride in bytes.
 * `warp` is the device's warp width (32, or 64 on CDNA).
 */
#ifndef FG_BACKEND_GPU_KERNELS_H
#define FG_BACKEND_GPU_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/gpu/compat.h"
#include "backend/gpu/pick.h"

/* Whether the kernels compute with weights of GGUF type `type` whose rows
 * hold k elements. */
bool fg_gpu_type_ok(int type, int64_t k);

/* Q4_0, Q8_0 and MXFP4 weights are regrouped on the GPU (dequant.cuh): rows
 * take fg_gpu_weight_row_bytes(type, k) bytes there (0 for a type kept in
 * its GGUF layout). fg_gpu_regroup rearranges rows uploaded in the GGUF
 * layout, at that stride, in place. */
size_t fg_gpu_weight_row_bytes(int type, int64_t k);
cudaError_t fg_gpu_regroup(int type, void *w, size_t row_bytes, int64_t rows, int64_t k, cudaStream_t s);

/* out[r] = x[rows[r]] for r < n, rows of ne0 floats. */
cudaError_t fg_gpu_gather(const float *x, int64_t ldx, int64_t ne0, const int32_t *rows, int32_t n, float *out,
                          int64_t ldo, cudaStream_t s);

/* out[t] = row ids[t] of table, as F32 (t < n). */
cudaError_t fg_gpu_embed(int type, const void *table, size_t row_bytes, int64_t ne0, const int32_t *ids, int32_t n,
                         float *out, int64_t ldo, cudaStream_t s);

/* Token counts above this take the prefill kernels (the tensor-core or
 * tiled GEMM, cuBLAS); a GEMV launch computes up to FG_GPU_GEMV_SLOTS
 * tokens at once (its token slots), so bigger decode steps take several. */
enum { FG_GPU_GEMV_MAX_T = 32, FG_GPU_GEMV_SLOTS = 8 };

/* The scratch holds the int8 activations of up to FG_GPU_Q8_ROWS tokens
 * (the integer GEMV's): codes xq[t][K], then per 32 {d, sum of codes} at
 * fg_gpu_q8_scales. */
enum { FG_GPU_Q8_ROWS = 32 };
static inline float2 *fg_gpu_q8_scales(void *scratch, int64_t K)
{
    return (float2 *)((int8_t *)scratch + (int64_t)FG_GPU_Q8_ROWS * K);
}

/* From FG_GPU_MMQ_MIN_T tokens up to FG_GPU_MMQ_MAX_T, Q4_0, Q8_0 and MXFP4
 * matmuls of a CUDA build run on the tensor cores, dequantizing as they go
 * (mmq.cuh); below, the integer GEMV. (H100, 8B Q4_0: 6 and 8 streams
 * decode 1,120 and 1,495 t/s this way against 936 and 1,080 on the GEMV;
 * 4 streams the same.) */
enum { FG_GPU_MMQ_MIN_T = 5, FG_GPU_MMQ_MAX_T = 256 };

/* The kernel (pick.h) a matmul of GGUF type `type` over T tokens of K
 * elements takes: with scratch (a matmul scratch of fg_gpu_matmul_scratch(K)
 * bytes; without one no integer kernel runs), blas (cuBLAS and its scratch
 * fit this shape: CUDA builds) and inv (batch-invariant mode: every token's
 * row by the same kernel and order of sums whatever T: the tensor-core GEMM
 * for Q4_0, Q8_0 and MXFP4 in launches of FG_GPU_MMQ_MAX_T tokens, the
 * integer GEMV for the other types that have one, the float GEMV for the
 * rest). The one function the dispatch, the profiler and the tests ask. */
fg_gpu_mm_kernel fg_gpu_matmul_pick(int type, int32_t T, int64_t K, bool inv, bool scratch, bool blas);

/* y[t][j] = x[t] . w[j] (+ bias[j]) (+ add[t][j]) for t < T, j < N; w is N
 * rows of K elements. add may alias y. k is fg_gpu_matmul_pick's kernel for
 * these arguments (not FG_GPU_MM_BLAS, which fg_gpu_matmul_blas launches).
 * scratch (fg_gpu_matmul_scratch(K) bytes of device memory, or NULL for the
 * float kernels) holds the int8 activations of the integer GEMV. x_ready
 * says scratch already holds x quantized (backend.h's hand-offs). */
cudaError_t fg_gpu_matmul(fg_gpu_mm_kernel k, int type, const void *w, size_t row_bytes, int64_t N, int64_t K,
                          const float *x, int64_t ldx, int32_t T, const float *bias, const float *add, int64_t ldadd,
                          float *y, int64_t ldy, void *scratch, bool x_ready, bool inv, int warp, cudaStream_t s);
size_t fg_gpu_matmul_scratch(int64_t K);

/* Several matmuls of one input x in one launch: y_i[t][j] = x[t] . w_i[j]
 * (+ bias_i[j]), for up to three weights of one type and row length K
 * whose fg_gpu_matmul_pick (not batch-invariant) is k, where
 * fg_gpu_matmul_n_ok(k, T). Scratch and x_ready as for fg_gpu_matmul (the
 * scratch is required). */
typedef struct fg_gpu_mm_out {
    const void *w;
    size_t row_bytes;
    int64_t N;
    const float *bias;
    float *y;
    int64_t ldy;
} fg_gpu_mm_out;

static inline bool fg_gpu_matmul_n_ok(fg_gpu_mm_kernel k, int32_t T)
{
    return k == FG_GPU_MM_MMQ || (k == FG_GPU_MM_MMVQ && T <= FG_GPU_GEMV_SLOTS);
}
cudaError_t fg_gpu_matmul_n(fg_gpu_mm_kernel k, int type, int n, const fg_gpu_mm_out *outs, int64_t K, const float *x,
                            int64_t ldx, int32_t T, void *scratch, bool x_ready, int warp, cudaStream_t s);

/* cuBLAS (CUDA builds): a handle bound to stream s (NULL on failure), and
 * the tensor-core prefill matmul, same contract as fg_gpu_matmul, with
 * scratch of fg_gpu_blas_scratch(largest K, largest T) bytes: a slab of
 * FG_GPU_BLAS_SLAB f16 weights and the f16 activations. */
#if !defined(FG_GPU_HIP)
enum { FG_GPU_BLAS_SLAB = 1 << 25 };
void *fg_gpu_blas_create(cudaStream_t s);
void fg_gpu_blas_destroy(void *handle);
size_t fg_gpu_blas_scratch(int64_t max_k, int32_t max_t);
cudaError_t fg_gpu_matmul_blas(void *handle, int type, const void *w, size_t row_bytes, int64_t N, int64_t K,
                               const float *x, int64_t ldx, int32_t T, const float *bias, const float *add,
                               int64_t ldadd, float *y, int64_t ldy, void *scratch, cudaStream_t s);
#endif

/* RMSNorm over groups of `group` elements of each of n rows of ne0, times
 * w[group]; out may alias x. */
cudaError_t fg_gpu_rms_norm(const float *x, int64_t ldx, const float *w, int64_t ne0, int64_t group, float eps,
                            int32_t n, float *out, int64_t ldo, cudaStream_t s);

/* Whole-row RMSNorm (ne0 a multiple of 32) that also leaves its output
 * quantized in a matmul scratch (fg_gpu_matmul_scratch(ne0) bytes), as the
 * integer GEMV reads it: the GEMV then runs with x_ready. n <= FG_GPU_Q8_ROWS. */
cudaError_t fg_gpu_rms_norm_q8(const float *x, int64_t ldx, const float *w, int64_t ne0, float eps, int32_t n,
                               float *out, int64_t ldo, void *scratch, cudaStream_t s);

/* Rotates the first n_rot dims of each head of each row (normal or NeoX
 * pairs) in place at position pos[t]; freq_factors (n_rot/2) may be NULL. */
cudaError_t fg_gpu_rope(float *x, int64_t ldx, int64_t ne0, int32_t head_dim, bool neox, int32_t n_rot, float base,
                        float freq_scale, const float *freq_factors, const int32_t *pos, int32_t n, cudaStream_t s);

/* Stores n rows of k (k_row) and v (v_row) as F16 at rows slot[t] of the
 * layer's caches. */
cudaError_t fg_gpu_kv_store(const float *k, int64_t ldk, const float *v, int64_t ldv, int64_t k_row, int64_t v_row,
                            const int32_t *slot, int32_t n, void *kc, void *vc, cudaStream_t s);

/* RoPE of q (n_head heads) and k (k_row / head_dim heads) in place, and the
 * store of k and v as F16 at rows slot[t] of the layer's caches (kc, vc),
 * for n tokens: fg_gpu_rope then fg_gpu_kv_store in one launch. */
typedef struct fg_gpu_rope_store_args {
    float *q;
    int64_t ldq;
    float *k;
    int64_t ldk;
    const float *v;
    int64_t ldv;
    int32_t n_head, head_dim, n_rot;
    bool neox;
    float freq_scale;
    const float *ff; /* freq factors (n_rot/2) or NULL */
    const int32_t *pos, *slot;
    __half *kc, *vc;
    int64_t k_row, v_row;
} fg_gpu_rope_store_args;

cudaError_t fg_gpu_rope_store(const fg_gpu_rope_store_args *a, float base, int32_t n, cudaStream_t s);

typedef struct fg_gpu_attn_args {
    const float *q;
    int64_t ldq;
    const void *kc, *vc; /* F16 caches: rows of k_row / v_row halves, one per slot */
    int64_t k_row, v_row;
    const int32_t *pos, *seq, *block_tables;
    int32_t max_blocks, block_size;
    int32_t n_tokens, n_head, n_head_kv, head_dim_k, head_dim_v;
    float scale, softcap;
    int32_t window;
    float *out;
    int64_t ldo;
} fg_gpu_attn_args;

/* Causal attention of each query row over its sequence's cached keys, each
 * (token, head)'s keys split n_splits ways (fg_gpu_attention_splits) with
 * partial results in scratch (fg_gpu_attention_scratch bytes; NULL runs
 * one split). With several splits and q8 (a matmul scratch for K = n_head
 * x head_dim_v, n_tokens <= 8), the merge also leaves the output quantized
 * there for the integer GEMV (head_dim_v must then be a multiple of 32). */
cudaError_t fg_gpu_attention(const fg_gpu_attn_args *a, int n_splits, float *scratch, void *q8, int warp,
                             cudaStream_t s);
size_t fg_gpu_attention_scratch(int32_t n_tokens, int64_t o_row, int32_t n_head);
/* The same attention with one block per (token, KV head) computing the
 * 2, 4 or 8 query heads that share it (GQA), unsplit: batched decoding. */
bool fg_gpu_attention_gqa_ok(const fg_gpu_attn_args *a);
cudaError_t fg_gpu_attention_gqa(const fg_gpu_attn_args *a, int warp, cudaStream_t s);
/* Decoding over long contexts (attention.cu's attention_decode_kernel): one
 * block per (token, KV head, split) for all the KV head's query heads,
 * rows read by whole 32-lane groups; splits and q8 as fg_gpu_attention's.
 * Head dims 64, 128, 256 (K and V alike), groups of 1, 2, 4, 8 query heads
 * per KV head (not 8 at 256). */
bool fg_gpu_attention_decode_ok(const fg_gpu_attn_args *a);
cudaError_t fg_gpu_attention_decode(const fg_gpu_attn_args *a, int n_splits, float *scratch, void *q8,
                                    cudaStream_t s);
/* The tiled prefill kernel (attention_tiled.cu): for batches whose every
 * FG_GPU_ATTN_TILE-token tile is one sequence's consecutive positions, head
 * dims 64 and 128 (K and V alike), 32-wide warps. The tensor-core form of a
 * CUDA build takes 128 queries a block, the CUDA-core one 64. */
#if defined(FG_GPU_HIP)
enum { FG_GPU_ATTN_TILE = 64 };
#else
enum { FG_GPU_ATTN_TILE = 128 };
#endif
bool fg_gpu_attention_tiled_ok(const fg_gpu_attn_args *a, int warp);
cudaError_t fg_gpu_attention_tiled(const fg_gpu_attn_args *a, cudaStream_t s);
/* How many ways to split the keys so that n_tokens x n_head x splits blocks
 * fill about twice the n_sm multiprocessors (1 for prefill). */
int fg_gpu_attention_splits(int32_t n_tokens, int32_t n_head, int n_sm);

/* What the choice of an attention kernel depends on besides its arguments:
 * the device, the mode and the step. */
typedef struct fg_gpu_attn_where {
    int warp, n_sm;
    bool invariant;      /* batch-invariant mode: one kernel, unsplit, at every step size */
    bool tiles_uniform;  /* every FG_GPU_ATTN_TILE-token tile is one sequence's consecutive positions */
    int32_t split_max_t; /* the most tokens the split-KV scratch holds partial results of (decode-sized steps) */
    int64_t part_row;    /* that scratch's row per token (n_head x head_dim_v at most) */
} fg_gpu_attn_where;

/* The kernel (pick.h) of a's attention, and into *splits how many ways it
 * splits the keys (1 but for FG_GPU_ATTN_DECODE and FG_GPU_ATTN_SPLIT on
 * decode-sized steps). The one function the dispatch, the profiler and the
 * tests ask. */
fg_gpu_attn_kernel fg_gpu_attention_pick(const fg_gpu_attn_args *a, const fg_gpu_attn_where *w, int *splits);

/* out = silu(g) * u over n rows of ne0; out may alias g. */
/* out = gelu_tanh(g) * u (GeGLU), and x *= sc, for n rows of ne0. */
cudaError_t fg_gpu_geglu(const float *g, int64_t ldg, const float *u, int64_t ldu, int64_t ne0, int32_t n, float *out,
                         int64_t ldo, cudaStream_t s);
cudaError_t fg_gpu_scale(float *x, int64_t ldx, int64_t ne0, int32_t n, float sc, cudaStream_t s);

/* out[t] += x[t] for n rows of ne0. */
cudaError_t fg_gpu_add(const float *x, int64_t ldx, int64_t ne0, int32_t n, float *out, int64_t ldo, cudaStream_t s);

cudaError_t fg_gpu_swiglu(const float *g, int64_t ldg, const float *u, int64_t ldu, int64_t ne0, int32_t n, float *out,
                          int64_t ldo, cudaStream_t s);

/* A row's sampling parameters as the step buffer holds them (eight 32-bit
 * words; u, a double in [0, 1), as its low and high words). Its logit
 * biases are n_bias (token, bias bits) word pairs from pair bias_at of the
 * step's bias list, tokens ascending and distinct. */
typedef struct fg_gpu_sample_row {
    float temperature; /* 0: greedy */
    int32_t top_k;     /* 0: off */
    float top_p;       /* 1: off */
    float min_p;       /* 0: off */
    uint32_t u_lo, u_hi;
    int32_t bias_at, n_bias;
} fg_gpu_sample_row;

/* ids[r] = a token sampled from the n logits of row r of x with params[r]
 * (sample.cu), for r < rows; -1 for a row with nothing above -inf. The
 * rows' logit biases (from bias, the step's list) are first added to x in
 * place. */
cudaError_t fg_gpu_sample(float *x, int64_t ldx, int64_t n, int32_t rows, const fg_gpu_sample_row *params,
                          const int32_t *bias, int32_t *ids, cudaStream_t s);

/* Reads `bytes` of buf once (a bandwidth probe). */
cudaError_t fg_gpu_read_bw(const void *buf, size_t bytes, int n_sm, cudaStream_t s);

/* SwiGLU that also quantizes its output into a matmul scratch, as
 * fg_gpu_rms_norm_q8 (ne0 a multiple of 32, n <= FG_GPU_Q8_ROWS). */
cudaError_t fg_gpu_swiglu_q8(const float *g, int64_t ldg, const float *u, int64_t ldu, int64_t ne0, int32_t n,
                             float *out, int64_t ldo, void *scratch, cudaStream_t s);

#endif
