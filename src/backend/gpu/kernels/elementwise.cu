/*
 * elementwise.cu — SwiGLU: out = silu(g) * u, one thread per element.
 */
#include "backend/gpu/kernels/kernels.h"

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
