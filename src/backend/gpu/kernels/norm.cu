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
    float scale = 1.0f / sqrtf(partial[0] / (float)group + eps);
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

/* Threads per row block: enough to cover wide rows in a few steps. */
static int norm_threads(int64_t group)
{
    return group >= 2048 ? 512 : group >= 1024 ? 256 : group >= 256 ? 128 : 64;
}

cudaError_t fg_gpu_rms_norm(const float *x, int64_t ldx, const float *w, int64_t ne0, int64_t group, float eps,
                            int32_t n, float *out, int64_t ldo, cudaStream_t s)
{
    int threads = norm_threads(group);
    unsigned blocks = (unsigned)(n * (ne0 / group));
    rms_norm_kernel<<<blocks, threads, 0, s>>>(x, ldx, w, ne0, group, eps, out, ldo, NULL, NULL);
    return cudaGetLastError();
}

cudaError_t fg_gpu_rms_norm_q8(const float *x, int64_t ldx, const float *w, int64_t ne0, float eps, int32_t n,
                               float *out, int64_t ldo, void *scratch, cudaStream_t s)
{
    int threads = norm_threads(ne0);
    int8_t *xq = (int8_t *)scratch;
    float2 *xs = (float2 *)(xq + 8 * ne0);
    rms_norm_kernel<<<(unsigned)n, threads, 0, s>>>(x, ldx, w, ne0, ne0, eps, out, ldo, xq, xs);
    return cudaGetLastError();
}
