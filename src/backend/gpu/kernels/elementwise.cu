/*
 * elementwise.cu — SwiGLU: out = silu(g) * u, one thread per element; or,
 * feeding an integer GEMV, the same with each 32 threads quantizing their
 * block as they write it.
 */
#include "backend/gpu/kernels/kernels.h"
#include "backend/gpu/kernels/q8.cuh"

__global__ void swiglu_kernel(const float *g, int64_t ldg, const float *__restrict__ u, int64_t ldu, int64_t ne0,
                              float *out, int64_t ldo)
{
    int64_t t = blockIdx.y, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= ne0) return;
    float a = g[t * ldg + i];
    out[t * ldo + i] = a / (1.0f + expf(-a)) * u[t * ldu + i];
}

cudaError_t fg_gpu_swiglu(const float *g, int64_t ldg, const float *u, int64_t ldu, int64_t ne0, int32_t n, float *out,
                          int64_t ldo, cudaStream_t s)
{
    dim3 grid((unsigned)((ne0 + 255) / 256), (unsigned)n);
    swiglu_kernel<<<grid, 256, 0, s>>>(g, ldg, u, ldu, ne0, out, ldo);
    return cudaGetLastError();
}

__global__ void swiglu_q8_kernel(const float *g, int64_t ldg, const float *__restrict__ u, int64_t ldu, int64_t ne0,
                                 float *out, int64_t ldo, int8_t *xq, float2 *xs)
{
    /* One thread per element; each aligned group of 32 threads is one
     * quantization block (ne0 is a multiple of 32, so groups never
     * straddle the end). */
    int64_t t = blockIdx.y, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i - i % 32 >= ne0) return;
    float a = g[t * ldg + i], v = a / (1.0f + expf(-a)) * u[t * ldu + i];
    out[t * ldo + i] = v;
    fg_q8_lanes(v, (int)(i % 32), xq + t * ne0 + (i - i % 32), xs + t * (ne0 / 32) + i / 32);
}

cudaError_t fg_gpu_swiglu_q8(const float *g, int64_t ldg, const float *u, int64_t ldu, int64_t ne0, int32_t n,
                             float *out, int64_t ldo, void *scratch, cudaStream_t s)
{
    int8_t *xq = (int8_t *)scratch;
    float2 *xs = (float2 *)(xq + 8 * ne0);
    dim3 grid((unsigned)((ne0 + 255) / 256), (unsigned)n);
    swiglu_q8_kernel<<<grid, 256, 0, s>>>(g, ldg, u, ldu, ne0, out, ldo, xq, xs);
    return cudaGetLastError();
}
