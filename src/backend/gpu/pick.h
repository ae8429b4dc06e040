/*
 * pick.h — the kernels of the GPU backend's op families, named: which one
 * an op launches is one function per family (kernels.h's
 * fg_gpu_matmul_pick and fg_gpu_attention_pick), which the dispatch, the
 * profiler (its rows are "op.kernel") and the tests (gpu.h's
 * fg_backend_gpu_*_pick) all ask. Plain C, shared by the kernels and the
 * backend's C callers.
 */
#ifndef FG_BACKEND_GPU_PICK_H
#define FG_BACKEND_GPU_PICK_H

/* Matmuls. */
typedef enum fg_gpu_mm_kernel {
    FG_GPU_MM_GEMV,        /* the f32 GEMV, FG_GPU_GEMV_SLOTS tokens a launch */
    FG_GPU_MM_GEMM,        /* the tiled f32 GEMM (above FG_GPU_GEMV_MAX_T tokens, HIP builds) */
    FG_GPU_MM_MMVQ,        /* the integer GEMV on int8 activations, all T rows quantized at once */
    FG_GPU_MM_MMVQ_CHUNKS, /* the same, FG_GPU_Q8_ROWS rows quantized at a time (batch-invariant, big T) */
    FG_GPU_MM_MMQ,         /* the tensor-core GEMM dequantizing as it goes (mmq.cuh) */
    FG_GPU_MM_BLAS,        /* cuBLAS on f16 slabs of the weights (gemm_blas.cu) */
    FG_GPU_MM_N_KERNELS
} fg_gpu_mm_kernel;

/* Attention. */
typedef enum fg_gpu_attn_kernel {
    FG_GPU_ATTN_TILED,  /* the tiled prefill kernel (attention_tiled.cu) */
    FG_GPU_ATTN_GQA,    /* a block per (token, KV head), unsplit: batches */
    FG_GPU_ATTN_DECODE, /* a block per (token, KV head, split): decoding */
    FG_GPU_ATTN_SPLIT,  /* a block per (token, head, split): the general kernel */
    FG_GPU_ATTN_N_KERNELS
} fg_gpu_attn_kernel;

/* The kernel's name in the profile ("mmvq", "tiled", ...). A switch, not a
 * designated table: this header is C and C++ alike. */
static inline const char *fg_gpu_mm_kernel_name(fg_gpu_mm_kernel k)
{
    switch (k) {
    case FG_GPU_MM_GEMV: return "gemv";
    case FG_GPU_MM_GEMM: return "gemm";
    case FG_GPU_MM_MMVQ: return "mmvq";
    case FG_GPU_MM_MMVQ_CHUNKS: return "mmvq_chunks";
    case FG_GPU_MM_MMQ: return "mmq";
    case FG_GPU_MM_BLAS: return "blas";
    default: return "?";
    }
}

static inline const char *fg_gpu_attn_kernel_name(fg_gpu_attn_kernel k)
{
    switch (k) {
    case FG_GPU_ATTN_TILED: return "tiled";
    case FG_GPU_ATTN_GQA: return "gqa";
    case FG_GPU_ATTN_DECODE: return "decode";
    case FG_GPU_ATTN_SPLIT: return "split";
    default: return "?";
    }
}

/* The arithmetic of a matmul kernel, which the tests pick their reference
 * and tolerance by: 'q' on int8 activations (each 32 rounded to d x int8),
 * 'h' on f16 tensor cores, 'f' in f32. */
static inline char fg_gpu_mm_kernel_arith(fg_gpu_mm_kernel k)
{
    switch (k) {
    case FG_GPU_MM_MMVQ: case FG_GPU_MM_MMVQ_CHUNKS: return 'q';
    case FG_GPU_MM_MMQ: case FG_GPU_MM_BLAS: return 'h';
    default: return 'f';
    }
}

#endif
