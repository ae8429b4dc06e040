/*
 * attention.cu — causal attention over the paged F16 KV cache, for prefill
 * and decode alike (GQA/MQA by n_head / n_head_kv, optional sliding window
 * and logit soft-capping).
 *
 * One block per (query token, query head). The query row is staged in shared
 * memory; the block's warps take the sequence's keys FG_WARP at a time in
 * turn, each lane scoring one key (its slot found through the sequence's
 * block table), and keep a running max / sum / output in flash-attention
 * style (online softmax, output rescaled when the max grows). For the value
 * sum the lanes split the head dimension (lane d owns dims d, d + FG_WARP,
 * ...) and walk the warp's keys with their probabilities broadcast by
 * shuffle, so each V row is read with coalesced loads. The warps' partial
 * results are merged through shared memory at the end.
 *
 * Head dims up to 256 (the per-lane output lives in registers: 256 / FG_WARP
 * floats).
 */
#include <math.h>

#include "backend/gpu/kernels/kernels.h"

enum { ATTN_THREADS = 128, ATTN_MAX_D = 256, ATTN_R = ATTN_MAX_D / FG_WARP };

__global__ void __launch_bounds__(ATTN_THREADS) attention_kernel(fg_gpu_attn_args a)
{
    extern __shared__ float sm[];
    int h = blockIdx.x, lane = threadIdx.x % FG_WARP, warp = threadIdx.x / FG_WARP, nw = blockDim.x / FG_WARP;
    int64_t t = blockIdx.y;
    int32_t hk = h / (a.n_head / a.n_head_kv), Dk = a.head_dim_k, Dv = a.head_dim_v;
    float *qs = sm, *ms = sm + Dk, *ls = ms + nw, *os = ls + nw; /* q[Dk], m[nw], l[nw], o[nw][Dv] */

    const float *q = a.q + t * a.ldq + (int64_t)h * Dk;
    for (int i = threadIdx.x; i < Dk; i += blockDim.x) qs[i] = q[i];
    __syncthreads();

    int32_t p = a.pos[t], start = a.window > 0 && p - a.window + 1 > 0 ? p - a.window + 1 : 0;
    const int32_t *table = a.block_tables + (int64_t)a.seq[t] * a.max_blocks;
    const __half *K = (const __half *)a.kc + (int64_t)hk * Dk, *V = (const __half *)a.vc + (int64_t)hk * Dv;

    float m = -INFINITY, l = 0.0f, acc[ATTN_R];
#pragma unroll
    for (int r = 0; r < ATTN_R; r++) acc[r] = 0.0f;

    for (int32_t j0 = start + warp * FG_WARP; j0 <= p; j0 += nw * FG_WARP) {
        int32_t j = j0 + lane;
        int slot = 0;
        float s = -INFINITY;
        if (j <= p) {
            slot = table[j / a.block_size] * a.block_size + j % a.block_size;
            const __half2 *k2 = (const __half2 *)(K + (int64_t)slot * a.k_row);
            float dot = 0.0f;
            for (int i = 0; i < Dk / 2; i++) {
                float2 kv = __half22float2(k2[i]);
                dot += qs[2 * i] * kv.x + qs[2 * i + 1] * kv.y;
            }
            s = dot * a.scale;
            if (a.softcap > 0.0f) s = a.softcap * tanhf(s / a.softcap);
        }
        float m_new = fmaxf(m, fg_warp_max(s)); /* finite: lane 0's key is in range */
        float corr = expf(m - m_new), pj = j <= p ? expf(s - m_new) : 0.0f;
        l = l * corr + fg_warp_sum(pj);
#pragma unroll
        for (int r = 0; r < ATTN_R; r++) acc[r] *= corr;
        int32_t n_keys = p - j0 + 1 < FG_WARP ? p - j0 + 1 : FG_WARP;
        for (int32_t kk = 0; kk < n_keys; kk++) {
            float pk = fg_shfl(pj, kk);
            const __half *vrow = V + (int64_t)fg_shfl(slot, kk) * a.v_row;
#pragma unroll
            for (int r = 0; r < ATTN_R; r++) {
                int d = r * FG_WARP + lane;
                if (d < Dv) acc[r] += pk * __half2float(vrow[d]);
            }
        }
        m = m_new;
    }

    if (lane == 0) {
        ms[warp] = m;
        ls[warp] = l;
    }
#pragma unroll
    for (int r = 0; r < ATTN_R; r++) {
        int d = r * FG_WARP + lane;
        if (d < Dv) os[warp * Dv + d] = acc[r];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < nw; w++) M = fmaxf(M, ms[w]);
    float L = 0.0f;
    for (int w = 0; w < nw; w++) L += ls[w] * expf(ms[w] - M);
    for (int d = threadIdx.x; d < Dv; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < nw; w++) o += os[w * Dv + d] * expf(ms[w] - M);
        a.out[t * a.ldo + (int64_t)h * Dv + d] = o / L;
    }
}

cudaError_t fg_gpu_attention(const fg_gpu_attn_args *a, int warp, cudaStream_t s)
{
    if (a->head_dim_k > ATTN_MAX_D || a->head_dim_v > ATTN_MAX_D || a->head_dim_k % 2) return cudaErrorInvalidValue;
    int nw = ATTN_THREADS / warp;
    size_t smem = (size_t)(a->head_dim_k + 2 * nw + nw * a->head_dim_v) * sizeof(float);
    dim3 grid((unsigned)a->n_head, (unsigned)a->n_tokens);
    attention_kernel<<<grid, ATTN_THREADS, smem, s>>>(*a);
    return cudaGetLastError();
}
