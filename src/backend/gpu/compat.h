/*
 * compat.h — one kernel source for CUDA and HIP.
 *
 * The GPU backend is written against the CUDA runtime API with the names
 * below; built with hipcc (FG_GPU_HIP) they map to HIP. Kernels use
 * FG_WARP (32 on NVIDIA and RDNA, 64 on CDNA) rather than a literal 32, and
 * the fg_shfl_* helpers rather than the *_sync intrinsics, since HIP's
 * shuffles take no mask.
 */
#ifndef FG_BACKEND_GPU_COMPAT_H
#define FG_BACKEND_GPU_COMPAT_H

#if defined(FG_GPU_HIP)
#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>

#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaErrorInvalidValue hipErrorInvalidValue
#define cudaGetErrorString hipGetErrorString
#define cudaGetLastError hipGetLastError
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaSetDevice hipSetDevice
#define cudaDeviceProp hipDeviceProp_t
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaMemGetInfo hipMemGetInfo
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaMallocHost hipHostMalloc
#define cudaFreeHost hipHostFree
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemcpy2DAsync hipMemcpy2DAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaStream_t hipStream_t
#define cudaStreamCreateWithFlags hipStreamCreateWithFlags
#define cudaStreamNonBlocking hipStreamNonBlocking
#define cudaStreamDestroy hipStreamDestroy
#define cudaStreamSynchronize hipStreamSynchronize
#define cudaEvent_t hipEvent_t
#define cudaEventCreate hipEventCreate
#define cudaEventDestroy hipEventDestroy
#define cudaEventRecord hipEventRecord
#define cudaEventSynchronize hipEventSynchronize
#define cudaEventElapsedTime hipEventElapsedTime
#define cudaFuncSetAttribute hipFuncSetAttribute
#define cudaFuncAttributeMaxDynamicSharedMemorySize hipFuncAttributeMaxDynamicSharedMemorySize
#define cudaGraph_t hipGraph_t
#define cudaGraphExec_t hipGraphExec_t
#define cudaStreamBeginCapture hipStreamBeginCapture
#define cudaStreamEndCapture hipStreamEndCapture
#define cudaStreamCaptureModeThreadLocal hipStreamCaptureModeThreadLocal
#define cudaGraphInstantiate(exec, graph, flags) hipGraphInstantiate(exec, graph, NULL, NULL, 0)
#define cudaGraphDestroy hipGraphDestroy
#define cudaGraphExecDestroy hipGraphExecDestroy
#define cudaGraphLaunch hipGraphLaunch
#define FG_GPU_API "HIP"
#else
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define FG_GPU_API "CUDA"
#endif

/* The warp (wavefront) width the kernels are compiled for. CDNA (gfx9) runs
 * 64-wide wavefronts; NVIDIA and RDNA 32-wide. */
#if defined(FG_GPU_HIP) && defined(__GFX9__)
#define FG_WARP 64
#else
#define FG_WARP 32
#endif

/* The value of v in lane (this lane ^ mask), within groups of `width`. */
static __device__ __forceinline__ float fg_shfl_xor(float v, int mask, int width = FG_WARP)
{
#if defined(FG_GPU_HIP)
    return __shfl_xor(v, mask, width);
#else
    return __shfl_xor_sync(0xffffffffu, v, mask, width);
#endif
}

static __device__ __forceinline__ int fg_shfl_xor(int v, int mask, int width = FG_WARP)
{
#if defined(FG_GPU_HIP)
    return __shfl_xor(v, mask, width);
#else
    return __shfl_xor_sync(0xffffffffu, v, mask, width);
#endif
}

/* Butterfly sums and maxima over a warp, or over each aligned group of 32
 * lanes (the 32 elements of a quantization block: half a CDNA wavefront, a
 * whole NVIDIA warp). */
static __device__ __forceinline__ float fg_warp_sum(float v)
{
#pragma unroll
    for (int o = FG_WARP / 2; o > 0; o >>= 1) v += fg_shfl_xor(v, o);
    return v;
}

static __device__ __forceinline__ float fg_warp_max(float v)
{
#pragma unroll
    for (int o = FG_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, fg_shfl_xor(v, o));
    return v;
}

static __device__ __forceinline__ float fg_max32(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, fg_shfl_xor(v, o, 32));
    return v;
}

static __device__ __forceinline__ int fg_sum32(int v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += fg_shfl_xor(v, o, 32);
    return v;
}

static __device__ __forceinline__ float fg_sum32(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += fg_shfl_xor(v, o, 32);
    return v;
}

/* The value of v in lane (this lane - delta) of each group of width lanes
 * (this lane's own below delta). */
static __device__ __forceinline__ unsigned fg_shfl_up(unsigned v, int delta, int width = FG_WARP)
{
#if defined(FG_GPU_HIP)
    return (unsigned)__shfl_up((int)v, delta, width);
#else
    return __shfl_up_sync(0xffffffffu, v, delta, width);
#endif
}

/* Lane src's value of v. */
static __device__ __forceinline__ float fg_shfl(float v, int src)
{
#if defined(FG_GPU_HIP)
    return __shfl(v, src, FG_WARP);
#else
    return __shfl_sync(0xffffffffu, v, src, FG_WARP);
#endif
}

static __device__ __forceinline__ int fg_shfl(int v, int src)
{
#if defined(FG_GPU_HIP)
    return __shfl(v, src, FG_WARP);
#else
    return __shfl_sync(0xffffffffu, v, src, FG_WARP);
#endif
}

#endif
