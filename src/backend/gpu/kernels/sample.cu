/*
 * sample.cu — sampling on the GPU, so that a decode step downloads token ids
 * rather than logits. Greedy for now: the argmax of each row.
 *
 * One block per row: each thread keeps the best (value, index) of a strided
 * share of the row, read as float4 where the row allows, then the block
 * reduces the pairs. Ties go to the lower index, and NaN never wins (every
 * comparison with it is false), so the result is the CPU backend's argmax.
 * A row with nothing above -inf gives -1.
 */
#include <math.h>

#include "backend/gpu/kernels/kernels.h"

enum { ARGMAX_THREADS = 1024 };

/* Whether (v, i) beats (bv, bi): larger, or equal with a lower index. */
static __device__ __forceinline__ bool beats(float v, int i, float bv, int bi)
{
    return v > bv || (v == bv && i >= 0 && (bi < 0 || i < bi));
}

static __device__ __forceinline__ void take(float v, int i, float *bv, int *bi)
{
    if (v > *bv) *bv = v, *bi = i; /* ascending i within a thread: the first of equal maxima stays */
}

__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(const float *__restrict__ x, int64_t ldx, int n,
                                                                int32_t *ids)
{
    __shared__ float sv[ARGMAX_THREADS / 32];
    __shared__ int si[ARGMAX_THREADS / 32];
    const float *row = x + (int64_t)blockIdx.x * ldx;
    float bv = -INFINITY;
    int bi = -1;
    if (ldx % 4 == 0 && ((uintptr_t)x & 15) == 0) {
        const float4 *r4 = (const float4 *)row;
        int n4 = n / 4;
#pragma unroll 4
        for (int i = threadIdx.x; i < n4; i += blockDim.x) {
            float4 v = r4[i];
            take(v.x, 4 * i, &bv, &bi);
            take(v.y, 4 * i + 1, &bv, &bi);
            take(v.z, 4 * i + 2, &bv, &bi);
            take(v.w, 4 * i + 3, &bv, &bi);
        }
        for (int i = 4 * n4 + threadIdx.x; i < n; i += blockDim.x) take(row[i], i, &bv, &bi);
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) take(row[i], i, &bv, &bi);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float v = fg_shfl_xor(bv, o, 32);
        int i = fg_shfl_xor(bi, o, 32);
        if (beats(v, i, bv, bi)) bv = v, bi = i;
    }
    int g = threadIdx.x / 32, ng = blockDim.x / 32;
    if (threadIdx.x % 32 == 0) sv[g] = bv, si[g] = bi;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < ng; k++)
            if (beats(sv[k], si[k], bv, bi)) bv = sv[k], bi = si[k];
        ids[blockIdx.x] = bv > -INFINITY ? bi : -1;
    }
}

cudaError_t fg_gpu_argmax(const float *x, int64_t ldx, int64_t n, int32_t rows, int32_t *ids, cudaStream_t s)
{
    argmax_kernel<<<(unsigned)rows, ARGMAX_THREADS, 0, s>>>(x, ldx, (int)n, ids);
    return cudaGetLastError();
}
