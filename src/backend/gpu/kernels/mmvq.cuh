/*
 * mmvq.cuh — integer-dot GEMV for the 32-blocks with a plain byte layout
 * (Q4_0, Q4_1, Q8_0) and Q4_K, used by matmul.cu for small batches.
 *
 * The activations are first quantized to int8 per 32 elements (d = max|x| /
 * 127, q = round(x / d)), so one __dp4a multiplies four weight codes by four
 * activation codes and adds them in one instruction, and the activation
 * bytes read per weight drop from 4 to 1. A thread takes one "unit" of 16
 * weights (half a block) per step: four dp4a. The quantizer also stores
 * each block's sum of activation codes, which the offsets of Q4_0 and Q4_1
 * need once per block.
 *   Q4_0: w = d (q - 8):  sum w x = d dx (sum q qx - 8 sum qx)
 *   Q4_1: w = d q + m:    sum w x = dx (d sum q qx + m sum qx)
 *   Q8_0: w = d q:        sum w x = d dx sum q qx
 */
#ifndef FG_BACKEND_GPU_MMVQ_CUH
#define FG_BACKEND_GPU_MMVQ_CUH

#include "backend/gpu/kernels/dequant.cuh"
#include "backend/gpu/kernels/q8.cuh"

#if defined(FG_GPU_HIP)
static __device__ __forceinline__ int fg_dp4a(int a, int b, int c)
{
    return __builtin_amdgcn_sdot4(a, b, c, false);
}
#else
static __device__ __forceinline__ int fg_dp4a(int a, int b, int c)
{
    return __dp4a(a, b, c);
}
#endif

/* A unit is 16 weights: half a 32-block. The activation side of block b
 * is codes xq[32 b ..] with xs[b] = {d, sum of the block's 32 codes}. */
struct fg_wunit {
    int a0, a1, b0, b1; /* Q4: low nibbles (a) and high nibbles (b); Q8_0: a0 a1 b0 b1 in order */
    float d, m;
};

template <int TYPE> struct fg_q;

/* Q4_0 unit u: block u/2, half h = u%2: code bytes 8h..8h+7, whose low
 * nibbles are elements 8h..8h+7 and high nibbles 16+8h..16+8h+7. The -8
 * offset enters once per block, through the unit with h = 0. */
template <> struct fg_q<FG_DQ_Q4_0> {
    static __device__ __forceinline__ fg_wunit load(const uint8_t *row, int64_t u)
    {
        const uint8_t *blk = row + 18 * (u / 2);
        uint32_t q0 = fg_ld32_a2(blk + 2 + 8 * (u % 2)), q1 = fg_ld32_a2(blk + 6 + 8 * (u % 2));
        return {(int)(q0 & 0x0f0f0f0fu), (int)(q1 & 0x0f0f0f0fu), (int)((q0 >> 4) & 0x0f0f0f0fu),
                (int)((q1 >> 4) & 0x0f0f0f0fu), fg_h2f(fg_ld16(blk)), 0.0f};
    }
    static __device__ __forceinline__ float dot(const fg_wunit &w, const int8_t *xq, const float2 *xs, int64_t u)
    {
        const int *x = (const int *)(xq + 32 * (u / 2) + 8 * (u % 2));
        int s = fg_dp4a(w.a0, x[0], fg_dp4a(w.a1, x[1], fg_dp4a(w.b0, x[4], fg_dp4a(w.b1, x[5], 0))));
        float2 ds = xs[u / 2];
        return w.d * ds.x * ((float)s - (u % 2 == 0 ? 8.0f * ds.y : 0.0f));
    }
};

template <> struct fg_q<FG_DQ_Q4_1> {
    static __device__ __forceinline__ fg_wunit load(const uint8_t *row, int64_t u)
    {
        const uint8_t *blk = row + 20 * (u / 2);
        const uint32_t *q = (const uint32_t *)(blk + 4 + 8 * (u % 2));
        uint32_t q0 = q[0], q1 = q[1];
        return {(int)(q0 & 0x0f0f0f0fu), (int)(q1 & 0x0f0f0f0fu), (int)((q0 >> 4) & 0x0f0f0f0fu),
                (int)((q1 >> 4) & 0x0f0f0f0fu), fg_h2f(fg_ld16(blk)), fg_h2f(fg_ld16(blk + 2))};
    }
    static __device__ __forceinline__ float dot(const fg_wunit &w, const int8_t *xq, const float2 *xs, int64_t u)
    {
        const int *x = (const int *)(xq + 32 * (u / 2) + 8 * (u % 2));
        int s = fg_dp4a(w.a0, x[0], fg_dp4a(w.a1, x[1], fg_dp4a(w.b0, x[4], fg_dp4a(w.b1, x[5], 0))));
        float2 ds = xs[u / 2];
        return ds.x * (w.d * (float)s + (u % 2 == 0 ? w.m * ds.y : 0.0f));
    }
};

/* Q8_0 unit u: codes 16 (u%2) .. +15 of block u/2. */
template <> struct fg_q<FG_DQ_Q8_0> {
    static __device__ __forceinline__ fg_wunit load(const uint8_t *row, int64_t u)
    {
        const uint8_t *blk = row + 34 * (u / 2), *q = blk + 2 + 16 * (u % 2);
        return {(int)fg_ld32_a2(q), (int)fg_ld32_a2(q + 4), (int)fg_ld32_a2(q + 8), (int)fg_ld32_a2(q + 12),
                fg_h2f(fg_ld16(blk)), 0.0f};
    }
    static __device__ __forceinline__ float dot(const fg_wunit &w, const int8_t *xq, const float2 *xs, int64_t u)
    {
        const int *x = (const int *)(xq + 16 * u);
        int s = fg_dp4a(w.a0, x[0], fg_dp4a(w.a1, x[1], fg_dp4a(w.b0, x[2], fg_dp4a(w.b1, x[3], 0))));
        return w.d * xs[u / 2].x * (float)s;
    }
};

/* Q4_K unit u: super-block u/16 (144 bytes), sub-block s = (u%16)/2 of 32
 * weights, half h = u%2: code bytes qs[32 (s/2) + 16 h .. +15], nibble s%2,
 * which are the row's elements 16u .. 16u+15, so the activations are
 * linear too. w = (d sc) q - (dmin m): the min enters once per sub-block,
 * through the unit with h = 0, with the sub-block's activation sum. */
template <> struct fg_q<FG_DQ_Q4_K> {
    static __device__ __forceinline__ fg_wunit load(const uint8_t *row, int64_t u)
    {
        const uint8_t *blk = row + 144 * (u / 16);
        int s = (int)(u % 16) / 2, sc, m;
        fg_k4_scale_min(blk + 4, s, &sc, &m);
        uint4 q = *(const uint4 *)(blk + 16 + 32 * (s / 2) + 16 * (u % 2));
        int sh = 4 * (s % 2);
        return {(int)((q.x >> sh) & 0x0f0f0f0fu), (int)((q.y >> sh) & 0x0f0f0f0fu), (int)((q.z >> sh) & 0x0f0f0f0fu),
                (int)((q.w >> sh) & 0x0f0f0f0fu), fg_h2f(fg_ld16(blk)) * (float)sc,
                fg_h2f(fg_ld16(blk + 2)) * (float)m};
    }
    static __device__ __forceinline__ float dot(const fg_wunit &w, const int8_t *xq, const float2 *xs, int64_t u)
    {
        const int *x = (const int *)(xq + 16 * u);
        int s = fg_dp4a(w.a0, x[0], fg_dp4a(w.a1, x[1], fg_dp4a(w.b0, x[2], fg_dp4a(w.b1, x[3], 0))));
        float2 ds = xs[u / 2];
        return ds.x * (w.d * (float)s - (u % 2 == 0 ? w.m * ds.y : 0.0f));
    }
};

/* x rows (T of them, K floats at stride ldx) to int8 codes xq[T][K] and per
 * 32 elements xs[T][K/32] = {d, sum of the codes}. One thread per block. */
static __global__ void fg_quantize_q8_kernel(const float *__restrict__ x, int64_t ldx, int64_t K, int32_t T,
                                             int8_t *xq, float2 *xs)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, nb = K / 32;
    if (i >= nb * T) return;
    int64_t t = i / nb, b = i % nb;
    const float4 *p = (const float4 *)(x + t * ldx + 32 * b);
    float v[32];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float4 f = p[k];
        v[4 * k] = f.x, v[4 * k + 1] = f.y, v[4 * k + 2] = f.z, v[4 * k + 3] = f.w;
    }
    fg_q8_block(v, xq + t * K + 32 * b, xs + t * nb + b);
}

/* The end of a one-row-per-block GEMV: the block's per-thread sums of each
 * token (acc) reduced through the warps and part (shared memory), plus the
 * bias and residual, stored as y[t][n]. */
template <int NT>
static __device__ __forceinline__ void fg_row_store(const float (&acc)[NT], float (*part)[NT], int64_t n, int32_t T,
                                                    const float *bias, const float *add, int64_t ldadd, float *y,
                                                    int64_t ldy)
{
    int lane = threadIdx.x % FG_WARP, warp = threadIdx.x / FG_WARP, nw = blockDim.x / FG_WARP;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float s = fg_warp_sum(acc[t]);
        if (lane == 0) part[warp][t] = s;
    }
    __syncthreads();
    if (threadIdx.x < NT && threadIdx.x < T) {
        int t = threadIdx.x;
        float s = 0.0f;
        for (int i = 0; i < nw; i++) s += part[i][t];
        if (bias) s += bias[n];
        if (add) s += add[t * ldadd + n];
        y[t * ldy + n] = s;
    }
}

template <int TYPE, int NT>
__global__ void __launch_bounds__(128) fg_mmvq_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int64_t K,
                                                      const int8_t *__restrict__ xq, const float2 *__restrict__ xs,
                                                      int32_t T, const float *__restrict__ bias, const float *add,
                                                      int64_t ldadd, float *y, int64_t ldy)
{
    __shared__ float part[128 / 32][NT];
    int64_t n = blockIdx.x, n_units = K / 16;
    const uint8_t *row = w + (size_t)n * row_bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
#pragma unroll 4
    for (int64_t u = threadIdx.x; u < n_units; u += blockDim.x) {
        fg_wunit wu = fg_q<TYPE>::load(row, u);
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (t < T) acc[t] += fg_q<TYPE>::dot(wu, xq + t * K, xs + t * (K / 32), u);
    }
    fg_row_store<NT>(acc, part, n, T, bias, add, ldadd, y, ldy);
}

#endif
