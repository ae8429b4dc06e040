/*
 * norm.cu — RMSNorm: y = x / sqrt(mean(x^2) + eps) * w over groups of
 * `group` elements (a whole row, or one head for QK-norm).
 *
 * One block per (row, group): its threads stride over the group summing
 * squares, reduce through the warps and shared memory, then scale. The sum
 * is kept in float per thread and combined as a tree, which is at least as
 * accurate as the CPU's sequential double sum needs for the tests' 1e-5.
 */
#include "backend/gpu/kernels/kernels.h"
#include "backend/gpu/kernels/q8.cuh"

/* 1 / sqrt(mean of squares + eps) for the block's group, from each
 * thread's partial sum of squares: summed through the warps and partial
 * (shared memory, one slot per warp and one for the total). */
static __device__ __forceinline__ float rms_scale(float ss, float *partial, int64_t group, float eps)
{
    ss = fg_warp_sum(ss);
    int warp = threadIdx.x / FG_WARP, n_warps = blockDim.x / FG_WARP;
    if (threadIdx.x % FG_WARP == 0) partial[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        ss = threadIdx.x < n_warps ? partial[threadIdx.x] : 0.0f;
        ss = fg_warp_sum(ss);
        if (threadIdx.x == 0) partial[0] = ss;
    }
    __syncthreads();
    return 1.0f / sqrtf(partial[0] / (float)group + eps);
}

__global__ void rms_norm_kernel(const float *x, int64_t ldx, const float *__restrict__ w, int64_t ne0, int64_t group,
                                float eps, float *out, int64_t ldo, int8_t *xq, float2 *xs)
{
    __shared__ float partial[1024 / 32];
    int64_t groups = ne0 / group, r = blockIdx.x / groups, g0 = (blockIdx.x % groups) * group;
    const float *xr = x + r * ldx + g0;
    float ss = 0.0f;
    /* Unrolled so a thread's loads are in flight together: a decode step
     * normalizes one row, a single block whose loop is otherwise a chain of
     * memory latencies. */
#pragma unroll 8
    for (int64_t i = threadIdx.x; i < group; i += blockDim.x) ss += xr[i] * xr[i];
    float scale = rms_scale(ss, partial, group, eps);
    float *yr = out + r * ldo + g0;
    if (!xq) {
#pragma unroll 8
        for (int64_t i = threadIdx.x; i < group; i += blockDim.x) yr[i] = xr[i] * scale * w[i];
        return;
    }
    /* Whole rows (group = ne0, a multiple of 32): each group of 32 threads
     * writes a 32-block and quantizes it together (q8.cuh), for the GEMV
     * that reads it. */
    int lane = threadIdx.x % 32, n_groups = blockDim.x / 32;
    for (int64_t b = threadIdx.x / 32; b < group / 32; b += n_groups) {
        int64_t e = 32 * b + lane;
        float v = xr[e] * scale * w[e];
        yr[e] = v;
        fg_q8_lanes(v, lane, xq + r * ne0 + 32 * b, xs + r * (ne0 / 32) + b);
    }
}

/* The same norm with the group held in registers: thread i holds float4s
 * i, i + blockDim, ... (up to NV of them) of its group, loaded all at once,
 * so the block waits on memory once. A decode step normalizes a single row,
 * and the strided loop above is a chain of latencies there (11 us for a
 * 4096 row on an H200; this form takes a few). With xq, whole rows are also
 * quantized for the integer GEMV: a 32-block is eight consecutive threads'
 * float4s, and its max and code sum are reduced over those eight lanes,
 * giving the codes and scale of q8.cuh bit for bit. */
template <int NV>
__global__ void rms_norm_vec_kernel(const float *x, int64_t ldx, const float *__restrict__ w, int64_t ne0,
                                    int64_t group, float eps, float *out, int64_t ldo, int8_t *xq, float2 *xs)
{
    __shared__ float partial[1024 / 32];
    int64_t groups = ne0 / group, r = blockIdx.x / groups, g0 = (blockIdx.x % groups) * group;
    const float4 *xr = (const float4 *)(x + r * ldx + g0);
    int n4 = (int)(group / 4);
    const float4 *wr = (const float4 *)w;
    float4 v[NV], wv[NV]; /* the weights are fetched with x: one wait on memory, not two */
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int c = threadIdx.x + k * blockDim.x;
        v[k] = c < n4 ? xr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        wv[k] = c < n4 ? wr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    float scale = rms_scale(ss, partial, group, eps);
    float4 *yr = (float4 *)(out + r * ldo + g0);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int c = threadIdx.x + k * blockDim.x;
        bool in = c < n4;
        float4 a = v[k], b = wv[k];
        float4 y = make_float4(a.x * scale * b.x, a.y * scale * b.y, a.z * scale * b.z, a.w * scale * b.w);
        if (in) yr[c] = y;
        if (!xq) continue;
        /* 32-block c / 8 of the row: its eight lanes are all in or all out
         * (n4 is a multiple of 8 and blockDim of 32). */
        float amax = fmaxf(fmaxf(fabsf(y.x), fabsf(y.y)), fmaxf(fabsf(y.z), fabsf(y.w)));
#pragma unroll
        for (int o = 4; o > 0; o >>= 1) amax = fmaxf(amax, fg_shfl_xor(amax, o, 8));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        int q0 = __float2int_rn(y.x * id), q1 = __float2int_rn(y.y * id), q2 = __float2int_rn(y.z * id),
            q3 = __float2int_rn(y.w * id);
        int sum = q0 + q1 + q2 + q3;
#pragma unroll
        for (int o = 4; o > 0; o >>= 1) sum += fg_shfl_xor(sum, o, 8);
        if (in) {
            ((int *)(xq + r * ne0))[c] = (q0 & 0xff) | (q1 & 0xff) << 8 | (q2 & 0xff) << 16 | (q3 & 0xff) << 24;
            if (c % 8 == 0) xs[r * (ne0 / 32) + c / 8] = make_float2(d, (float)sum);
        }
    }
}

/* Groups of at most 512 elements (QK-norm: one head) without the int8
 * output: one warp per (row, group), the group's float4s held in its lanes
 * (lane l: float4s l, l + 32, ...), the sum of squares reduced by shuffles
 * alone, eight groups to a block. A block of one warp per head, as above,
 * spent more on scheduling and barriers than on the data: half the GB/s of
 * the attention norm over as many bytes (bench/NOTES.md). */
enum { NORM_WARP_BLOCK = 256 };

template <int NV>
__global__ void __launch_bounds__(NORM_WARP_BLOCK) rms_norm_warp_kernel(const float *x, int64_t ldx,
                                                                        const float *__restrict__ w, int64_t ne0,
                                                                        int64_t group, float eps, int64_t n_groups,
                                                                        float *out, int64_t ldo)
{
    int64_t gw = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / FG_WARP;
    if (gw >= n_groups) return; /* a whole warp */
    int lane = threadIdx.x % FG_WARP;
    int64_t groups = ne0 / group, r = gw / groups, g0 = (gw % groups) * group;
    const float4 *xr = (const float4 *)(x + r * ldx + g0), *wr = (const float4 *)w;
    int n4 = (int)(group / 4);
    float4 v[NV], wv[NV];
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int c = lane + k * FG_WARP;
        v[k] = c < n4 ? xr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        wv[k] = c < n4 ? wr[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        ss += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
    }
    float scale = 1.0f / sqrtf(fg_warp_sum(ss) / (float)group + eps);
    float4 *yr = (float4 *)(out + r * ldo + g0);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int c = lane + k * FG_WARP;
        float4 a = v[k], b = wv[k];
        if (c < n4) yr[c] = make_float4(a.x * scale * b.x, a.y * scale * b.y, a.z * scale * b.z, a.w * scale * b.w);
    }
}

/* Launches the warp-per-group form for groups of up to 512 elements whose
 * rows are 16-byte aligned; returns false otherwise. */
static bool rms_norm_warp(const float *x, int64_t ldx, const float *w, int64_t ne0, int64_t group, float eps,
                          int32_t n, float *out, int64_t ldo, cudaStream_t s)
{
    if (group > 512 || group % 4 || ldx % 4 || ldo % 4 || (uintptr_t)x % 16 || (uintptr_t)out % 16 || (uintptr_t)w % 16)
        return false;
    int64_t n_groups = (int64_t)n * (ne0 / group), per_block = NORM_WARP_BLOCK / FG_WARP;
    unsigned blocks = (unsigned)((n_groups + per_block - 1) / per_block);
    int nv = (int)((group / 4 + FG_WARP - 1) / FG_WARP);
    if (nv == 1) rms_norm_warp_kernel<1><<<blocks, NORM_WARP_BLOCK, 0, s>>>(x, ldx, w, ne0, group, eps, n_groups, out, ldo);
    else if (nv == 2) rms_norm_warp_kernel<2><<<blocks, NORM_WARP_BLOCK, 0, s>>>(x, ldx, w, ne0, group, eps, n_groups, out, ldo);
    else rms_norm_warp_kernel<4><<<blocks, NORM_WARP_BLOCK, 0, s>>>(x, ldx, w, ne0, group, eps, n_groups, out, ldo);
    return true;
}

/* Threads per row block for the strided kernel: enough to cover wide rows
 * in a few steps. */
static int norm_threads(int64_t group)
{
    return group >= 2048 ? 512 : group >= 1024 ? 256 : group >= 256 ? 128 : 64;
}

/* Launches the register-held form when the group's float4s fit NV <= 4 per
 * thread of a block of up to 1024 and every row start is 16-byte aligned;
 * returns false otherwise. */
static bool rms_norm_vec(const float *x, int64_t ldx, const float *w, int64_t ne0, int64_t group, float eps,
                         int32_t n, float *out, int64_t ldo, int8_t *xq, float2 *xs, cudaStream_t s)
{
    if (group % 32 || ldx % 4 || ldo % 4 || (uintptr_t)x % 16 || (uintptr_t)out % 16 || (uintptr_t)w % 16) return false;
    int64_t n4 = group / 4, threads = n4 < 1024 ? (n4 + 31) / 32 * 32 : 1024, nv = (n4 + threads - 1) / threads;
    unsigned blocks = (unsigned)(n * (ne0 / group));
    if (nv == 1) rms_norm_vec_kernel<1><<<blocks, (unsigned)threads, 0, s>>>(x, ldx, w, ne0, group, eps, out, ldo, xq, xs);
    else if (nv == 2) rms_norm_vec_kernel<2><<<blocks, (unsigned)threads, 0, s>>>(x, ldx, w, ne0, group, eps, out, ldo, xq, xs);
    else if (nv <= 4) rms_norm_vec_kernel<4><<<blocks, (unsigned)threads, 0, s>>>(x, ldx, w, ne0, group, eps, out, ldo, xq, xs);
    else return false;
    return true;
}

cudaError_t fg_gpu_rms_norm(const float *x, int64_t ldx, const float *w, int64_t ne0, int64_t group, float eps,
                            int32_t n, float *out, int64_t ldo, cudaStream_t s)
{
    if (rms_norm_warp(x, ldx, w, ne0, group, eps, n, out, ldo, s)) return cudaGetLastError();
    if (rms_norm_vec(x, ldx, w, ne0, group, eps, n, out, ldo, NULL, NULL, s)) return cudaGetLastError();
    int threads = norm_threads(group);
    unsigned blocks = (unsigned)(n * (ne0 / group));
    rms_norm_kernel<<<blocks, threads, 0, s>>>(x, ldx, w, ne0, group, eps, out, ldo, NULL, NULL);
    return cudaGetLastError();
}

cudaError_t fg_gpu_rms_norm_q8(const float *x, int64_t ldx, const float *w, int64_t ne0, float eps, int32_t n,
                               float *out, int64_t ldo, void *scratch, cudaStream_t s)
{
    int8_t *xq = (int8_t *)scratch;
    float2 *xs = fg_gpu_q8_scales(scratch, ne0);
    if (rms_norm_vec(x, ldx, w, ne0, ne0, eps, n, out, ldo, xq, xs, s)) return cudaGetLastError();
    int threads = norm_threads(ne0);
    rms_norm_kernel<<<(unsigned)n, threads, 0, s>>>(x, ldx, w, ne0, ne0, eps, out, ldo, xq, xs);
    return cudaGetLastError();
}
