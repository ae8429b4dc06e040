/*
 * q8.cuh — the int8 quantization of activations that the integer GEMV
 * (mmvq.cuh) reads: per 32 values, d = max|v| / 127, codes round(v / d) to
 * nearest even, and the sum of the codes. Kernels that produce a GEMV's
 * input (RMSNorm, SwiGLU) call it to quantize their output as they write it,
 * saving the GEMV its own quantizing launch.
 */
#ifndef FG_BACKEND_GPU_Q8_CUH
#define FG_BACKEND_GPU_Q8_CUH

#include <stdint.h>

#include "backend/gpu/compat.h"

static __device__ __forceinline__ void fg_q8_block(const float v[32], int8_t *codes, float2 *ds)
{
    float amax = 0.0f;
#pragma unroll
    for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(v[k]));
    float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    int *out = (int *)codes, sum = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int w = 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int q = __float2int_rn(v[4 * k + j] * id);
            sum += q;
            w |= (q & 0xff) << (8 * j);
        }
        out[k] = w;
    }
    *ds = make_float2(d, (float)sum);
}

/* The same quantization done by 32 lanes together, lane l holding element
 * l of the block (so the kernel that computes the values reads and writes
 * them coalesced): the same max, scale, codes and sum, bit for bit. All 32
 * lanes must call it. */
static __device__ __forceinline__ void fg_q8_lanes(float v, int lane, int8_t *codes, float2 *ds)
{
    float amax = fg_max32(fabsf(v));
    float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
    int q = __float2int_rn(v * id);
    codes[lane] = (int8_t)q;
    int sum = fg_sum32(q);
    if (lane == 0) *ds = make_float2(d, (float)sum);
}

#endif
