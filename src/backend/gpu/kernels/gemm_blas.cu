/*
 * gemm_blas.cu — prefill matmuls on the tensor cores through cuBLAS (CUDA
 * builds only; the HIP build keeps the portable tiled kernel and needs no
 * hipBLAS).
 *
 * y = x W^T for T > 32 tokens: the weight is dequantized to f16 a slab of
 * rows at a time into a scratch buffer (dequant.cuh's decoders), x is
 * rounded to f16 once, and cublasGemmEx multiplies them with f32
 * accumulation into y. A residual add that aliases y enters as beta = 1; a
 * bias is added after. Operands in f16 put the result's relative error near
 * 1e-3 (DESIGN.md's fp16 tier), against 1e-6 for the f32 kernels.
 */
#if !defined(FG_GPU_HIP)
#include <cublas_v2.h>
#include <stdlib.h>

#include "backend/gpu/kernels/dequant.cuh"
#include "backend/gpu/kernels/kernels.h"

template <int TYPE>
__global__ void dequant_f16_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int64_t rows, int64_t K, __half *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, groups = K / 8;
    if (i >= rows * groups) return;
    int64_t r = i / groups, g = i % groups;
    float v[8];
    fg_dq<TYPE>::get8(w + (size_t)r * row_bytes, g, v);
    __half2 h[4];
#pragma unroll
    for (int k = 0; k < 4; k++) h[k] = __floats2half2_rn(v[2 * k], v[2 * k + 1]);
    *(uint4 *)(out + r * K + 8 * g) = *(const uint4 *)h;
}

__global__ void to_f16_kernel(const float *__restrict__ x, int64_t ldx, int64_t K, int32_t T, __half *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)T * K) return;
    int64_t t = i / K, k = i % K;
    out[i] = __float2half_rn(x[t * ldx + k]);
}

__global__ void add_bias_kernel(float *y, int64_t ldy, const float *__restrict__ bias, int64_t N)
{
    int64_t t = blockIdx.y, n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N) y[t * ldy + n] += bias[n];
}

struct dq16_args {
    const uint8_t *w;
    size_t row_bytes;
    int64_t rows, K;
    __half *out;
    cudaStream_t s;
};

template <int TYPE> struct dq16_launch {
    static void run(const dq16_args &a)
    {
        int64_t n = a.rows * (a.K / 8);
        dequant_f16_kernel<TYPE><<<(unsigned)((n + 255) / 256), 256, 0, a.s>>>(a.w, a.row_bytes, a.rows, a.K, a.out);
    }
};

size_t fg_gpu_blas_scratch(int64_t max_k, int32_t max_t)
{
    return (size_t)(FG_GPU_BLAS_SLAB + (int64_t)max_t * max_k) * sizeof(__half);
}

/* The handle and the workspace cuBLAS would otherwise allocate itself on a
 * first GEMM, during serving: it is given one at load (32 MiB, what NVIDIA
 * recommends for Hopper). */
typedef struct blas_ctx {
    cublasHandle_t h;
    void *ws;
} blas_ctx;

enum { BLAS_WORKSPACE = 32 << 20 };

cudaError_t fg_gpu_matmul_blas(void *handle, int type, const void *w, size_t row_bytes, int64_t N, int64_t K,
                               const float *x, int64_t ldx, int32_t T, const float *bias, const float *add,
                               int64_t ldadd, float *y, int64_t ldy, void *scratch, cudaStream_t s)
{
    cublasHandle_t h = ((blas_ctx *)handle)->h;
    __half *wh = (__half *)scratch, *xh = wh + FG_GPU_BLAS_SLAB;
    int64_t n_x = (int64_t)T * K;
    to_f16_kernel<<<(unsigned)((n_x + 255) / 256), 256, 0, s>>>(x, ldx, K, T, xh);
    float beta = 0.0f;
    if (add == y) beta = 1.0f;
    else if (add) {
        cudaError_t e = cudaMemcpy2DAsync(y, (size_t)ldy * sizeof(float), add, (size_t)ldadd * sizeof(float),
                                          (size_t)N * sizeof(float), (size_t)T, cudaMemcpyDeviceToDevice, s);
        if (e != cudaSuccess) return e;
        beta = 1.0f;
    }
    const float one = 1.0f;
    int64_t slab_rows = FG_GPU_BLAS_SLAB / K;
    for (int64_t n0 = 0; n0 < N; n0 += slab_rows) {
        int64_t rows = N - n0 < slab_rows ? N - n0 : slab_rows;
        dq16_args d = {(const uint8_t *)w + (size_t)n0 * row_bytes, row_bytes, rows, K, wh, s};
        if (!FG_DQ_DISPATCH(type, dq16_launch, d)) return cudaErrorInvalidValue;
        /* Column-major view: C (rows x T, ld ldy) = W_slab^T (K x rows)^T . X^T (K x T). */
        cublasStatus_t st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)rows, T, (int)K, &one, wh, CUDA_R_16F,
                                         (int)K, xh, CUDA_R_16F, (int)K, &beta, y + n0, CUDA_R_32F, (int)ldy,
                                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (st != CUBLAS_STATUS_SUCCESS) return cudaErrorUnknown;
    }
    if (bias) add_bias_kernel<<<dim3((unsigned)((N + 255) / 256), (unsigned)T), 256, 0, s>>>(y, ldy, bias, N);
    return cudaGetLastError();
}


void *fg_gpu_blas_create(cudaStream_t s)
{
    blas_ctx *c = (blas_ctx *)calloc(1, sizeof *c);
    if (!c) return NULL;
    if (cublasCreate(&c->h) != CUBLAS_STATUS_SUCCESS) {
        free(c);
        return NULL;
    }
    if (cublasSetStream(c->h, s) != CUBLAS_STATUS_SUCCESS || cudaMalloc(&c->ws, BLAS_WORKSPACE) != cudaSuccess ||
        cublasSetWorkspace(c->h, c->ws, BLAS_WORKSPACE) != CUBLAS_STATUS_SUCCESS) {
        fg_gpu_blas_destroy(c);
        return NULL;
    }
    return c;
}

void fg_gpu_blas_destroy(void *handle)
{
    blas_ctx *c = (blas_ctx *)handle;
    if (!c) return;
    if (c->h) cublasDestroy(c->h);
    if (c->ws) (void)cudaFree(c->ws);
    free(c);
}
#endif
