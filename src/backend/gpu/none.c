/*
 * none.c — the GPU backend's entry points in a build without one (no nvcc or
 * hipcc found, or GPU=none): they report that clearly instead of failing to
 * link. The Makefile leaves this file out of GPU builds.
 */
#include "backend/gpu/gpu.h"
#include "base/err.h"

const char *fg_backend_gpu_api(void)
{
    return NULL;
}

int fg_backend_gpu_count(void)
{
    return 0;
}

fg_status fg_backend_gpu_init(int device, fg_backend **out)
{
    (void)device;
    *out = NULL;
    return fg_err_set(FG_ERR_UNSUPPORTED,
                      "this build of forge has no GPU backend (it was built without nvcc or hipcc); "
                      "rebuild with CUDA or ROCm installed (make GPU=cuda or make GPU=hip), or use --device cpu");
}

void fg_backend_gpu_transfers(const fg_backend *be, fg_gpu_transfers *out)
{
    (void)be;
    *out = (fg_gpu_transfers){0};
}

void fg_backend_gpu_transfers_reset(fg_backend *be)
{
    (void)be;
}

fg_status fg_backend_gpu_measure_bw(fg_backend *be, double *gb_per_s)
{
    (void)be;
    *gb_per_s = 0;
    return fg_err_set(FG_ERR_UNSUPPORTED, "this build of forge has no GPU backend to measure");
}

const char *fg_backend_gpu_describe(const fg_backend *be)
{
    (void)be;
    return "no GPU backend in this build";
}

fg_gpu_mm_kernel fg_backend_gpu_matmul_pick(const fg_backend *be, int type, int32_t T, int64_t K)
{
    (void)be, (void)type, (void)T, (void)K;
    return FG_GPU_MM_GEMV;
}

fg_gpu_attn_kernel fg_backend_gpu_attention_pick(const fg_backend *be, const fg_attn *a, int *splits)
{
    (void)be, (void)a;
    *splits = 1;
    return FG_GPU_ATTN_SPLIT;
}

void fg_backend_gpu_set_batch_invariant(fg_backend *be, bool on)
{
    (void)be, (void)on;
}
