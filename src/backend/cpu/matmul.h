/*
 * matmul.h — the CPU backend's matrix product on quantized weights.
 *
 * y[t][n] = sum_k W[n][k] * x[t][k] for a weight matrix W of N rows of K
 * elements in any supported type (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and T activation rows of K floats.
 * As in llama.cpp, activations are first quantized to the weight type's
 * partner format (Q8_0, Q8_1 or Q8_K) and the dot products are integer, with
 * SIMD kernels picked at run time (x86: AVX2 baseline, AVX-512/VNNI where
 * present; ARM: NEON) over a scalar generic version that is their reference.
 * The work is split across the pool by rows of W.
 */
#ifndef FG_BACKEND_CPU_MATMUL_H
#define FG_BACKEND_CPU_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "base/threadpool.h"
#include "gguf/types.h"

/* True if fg_cpu_matmul implements weight type t. */
bool fg_cpu_matmul_supported(fg_type t);

/* Scratch bytes fg_cpu_matmul needs for T rows of K activations (the
 * quantized copy of x); the caller allocates it once, at load time. */
size_t fg_cpu_matmul_scratch(fg_type t, int64_t K, int64_t T);

/* y (T rows of N floats, row stride ldy floats) = x (T rows of K floats, row
 * stride ldx) times W^T, W being N rows of K elements of type t with row
 * stride w_row_bytes. If add is not NULL, y = add + x W^T (a residual, T rows
 * with the same stride ldy; add may alias y). scratch has
 * fg_cpu_matmul_scratch(t, K, T) bytes, any alignment (it may be NULL when
 * that is 0: the float types read x directly). pool may be NULL (one
 * thread). */
void fg_cpu_matmul(fg_pool *pool, fg_type t, const void *W, size_t w_row_bytes, int64_t N, int64_t K,
                   const float *x, int64_t ldx, int64_t T, float *y, int64_t ldy, const float *add,
                   void *scratch);

/* The instruction set the kernels use on this machine ("avx512vnni",
 * "avx2", "neon", "generic"), for logs and benchmarks. */
const char *fg_cpu_matmul_isa(void);

/* For tests: force the generic kernels (true) or the best available (false). */
void fg_cpu_matmul_force_generic(bool on);

/* For tests and benchmarks: the instruction sets this CPU can use, generic
 * first and the best last (at most cap names written; returns the count), and
 * forcing one of them by name (NULL: back to the best). Returns false, and
 * changes nothing, if isa is not among them. Not thread-safe against a
 * running matmul. */
int fg_cpu_matmul_isas(const char **names, int cap);
bool fg_cpu_matmul_force_isa(const char *isa);

#endif
