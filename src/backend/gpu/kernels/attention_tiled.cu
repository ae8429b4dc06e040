/*
 * attention_tiled.cu — causal attention for prefill: a tile of 64
 * consecutive query tokens of one sequence against the sequence's keys, 64
 * at a time, for one query head per block (flash-attention's loop on CUDA
 * cores; a tensor-core version is the next step).
 *
 * Per key tile the block stages K and V (F16, through the block table) in
 * shared memory, computes the 64 x 64 scores (each thread a 4 x 4 patch),
 * applies the causal mask (key position > query position, or outside the
 * sliding window) and soft-capping, updates each query row's running max
 * and sum (four threads per row), and accumulates P V into registers (each
 * thread 4 rows x D/16 dims), rescaled when a row's max grows. Key tiles past
 * the tile's last query position are skipped.
 *
 * The host uses it only when every 64-token tile of the batch is one
 * sequence's consecutive positions (a prefill chunk); other batches take
 * attention.cu's kernel. D (the head dim, K and V alike) is a template
 * parameter: 64 and 128.
 */
#include <math.h>

#include "backend/gpu/kernels/kernels.h"

enum { TQ = 64, TK = 64, TT = 256 };

template <int D> struct tiled_smem {
    float q[TQ][D + 1];     /* the tile's queries, pre-scaled */
    __half k[TK][D + 2];    /* +2 halves: rows start in different banks */
    __half v[TK][D];
    float s[TQ][TK + 1];    /* scores, then probabilities */
    float corr[TQ];         /* each row's rescale factor for this key tile */
    float l[TQ];
};

template <int D>
__global__ void __launch_bounds__(TT) attention_tiled_kernel(fg_gpu_attn_args a)
{
    extern __shared__ __align__(16) unsigned char raw[];
    tiled_smem<D> &sm = *(tiled_smem<D> *)raw;
    int tid = threadIdx.x, h = blockIdx.x;
    int64_t t0 = (int64_t)blockIdx.y * TQ;
    int nq = a.n_tokens - t0 < TQ ? (int)(a.n_tokens - t0) : TQ;
    int32_t hk = h / (a.n_head / a.n_head_kv);
    int32_t p0 = a.pos[t0], p_last = p0 + nq - 1;
    const int32_t *table = a.block_tables + (int64_t)a.seq[t0] * a.max_blocks;
    const __half *K = (const __half *)a.kc + (int64_t)hk * D, *V = (const __half *)a.vc + (int64_t)hk * D;

    for (int i = tid; i < TQ * D; i += TT) {
        int r = i / D, d = i % D;
        sm.q[r][d] = r < nq ? a.q[(t0 + r) * a.ldq + (int64_t)h * D + d] * a.scale : 0.0f;
    }
    /* Row state: the four threads of row r = tid / 4 keep its max; l lives
     * in shared memory. */
    int srow = tid / 4, spart = tid % 4;
    float m_row = -INFINITY;
    if (spart == 0) sm.l[srow] = 0.0f;

    /* Output patch: rows 4 og .. +3, dims dg + 16 j. */
    constexpr int DJ = D / 16;
    int og = tid / 16, dg = tid % 16;
    float o[4][DJ];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < DJ; j++) o[i][j] = 0.0f;

    int32_t first = a.window > 0 && p0 - a.window + 1 > 0 ? p0 - a.window + 1 : 0;
    first -= first % TK;
    for (int32_t k0 = first; k0 <= p_last; k0 += TK) {
        __syncthreads(); /* the previous tile's V and P are consumed */
        for (int i = tid; i < TK * (D / 2); i += TT) {
            int r = i / (D / 2), c = i % (D / 2);
            int32_t j = k0 + r;
            __half2 kv = __floats2half2_rn(0.0f, 0.0f), vv = kv;
            if (j <= p_last) {
                int64_t slot = (int64_t)table[j / a.block_size] * a.block_size + j % a.block_size;
                kv = ((const __half2 *)(K + slot * a.k_row))[c];
                vv = ((const __half2 *)(V + slot * a.v_row))[c];
            }
            *(__half2 *)&sm.k[r][2 * c] = kv;
            *(__half2 *)&sm.v[r][2 * c] = vv;
        }
        __syncthreads();
        /* Scores: rows 4 qg .. +3, keys kg + 16 j. */
        {
            int qg = tid / 16, kg = tid % 16;
            float acc[4][4] = {};
#pragma unroll 4
            for (int d = 0; d < D; d++) {
                float qv[4], kv[4];
#pragma unroll
                for (int i = 0; i < 4; i++) qv[i] = sm.q[4 * qg + i][d];
#pragma unroll
                for (int j = 0; j < 4; j++) kv[j] = __half2float(sm.k[kg + 16 * j][d]);
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] += qv[i] * kv[j];
            }
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int32_t qp = p0 + 4 * qg + i, lo = a.window > 0 ? qp - a.window + 1 : 0;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    int32_t kp = k0 + kg + 16 * j;
                    float s = acc[i][j];
                    if (a.softcap > 0.0f) s = a.softcap * tanhf(s / a.softcap);
                    sm.s[4 * qg + i][kg + 16 * j] = kp > qp || kp < lo ? -INFINITY : s;
                }
            }
        }
        __syncthreads();
        /* Online softmax, four threads per row, 16 keys each. */
        {
            float mx = -INFINITY;
#pragma unroll
            for (int j = 0; j < 16; j++) mx = fmaxf(mx, sm.s[srow][16 * spart + j]);
            mx = fmaxf(mx, fg_shfl_xor(mx, 1));
            mx = fmaxf(mx, fg_shfl_xor(mx, 2));
            float m_new = fmaxf(m_row, mx);
            float corr = m_new == -INFINITY ? 1.0f : expf(m_row - m_new), sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 16; j++) {
                float s = sm.s[srow][16 * spart + j];
                float pj = s == -INFINITY ? 0.0f : expf(s - m_new);
                sm.s[srow][16 * spart + j] = pj;
                sum += pj;
            }
            sum += fg_shfl_xor(sum, 1);
            sum += fg_shfl_xor(sum, 2);
            m_row = m_new;
            if (spart == 0) {
                sm.l[srow] = sm.l[srow] * corr + sum;
                sm.corr[srow] = corr;
            }
        }
        __syncthreads();
        /* O = O corr + P V. */
        {
            float c[4];
#pragma unroll
            for (int i = 0; i < 4; i++) c[i] = sm.corr[4 * og + i];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < DJ; j++) o[i][j] *= c[i];
#pragma unroll 4
            for (int k = 0; k < TK; k++) {
                float pv[4], vv[DJ];
#pragma unroll
                for (int i = 0; i < 4; i++) pv[i] = sm.s[4 * og + i][k];
#pragma unroll
                for (int j = 0; j < DJ; j++) vv[j] = __half2float(sm.v[k][dg + 16 * j]);
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < DJ; j++) o[i][j] += pv[i] * vv[j];
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int r = 4 * og + i;
        if (r >= nq) continue;
        float inv = 1.0f / sm.l[r];
#pragma unroll
        for (int j = 0; j < DJ; j++) a.out[(t0 + r) * a.ldo + (int64_t)h * D + dg + 16 * j] = o[i][j] * inv;
    }
}

template <int D> static cudaError_t launch_tiled(const fg_gpu_attn_args *a, cudaStream_t s)
{
    size_t smem = sizeof(tiled_smem<D>);
    static bool raised = false; /* the opt-in above 48 KB, once per process and head dim */
    if (!raised) {
        cudaError_t e = cudaFuncSetAttribute(reinterpret_cast<const void *>(&attention_tiled_kernel<D>),
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)smem);
        if (e != cudaSuccess) return e;
        raised = true;
    }
    dim3 grid((unsigned)a->n_head, (unsigned)((a->n_tokens + TQ - 1) / TQ));
    attention_tiled_kernel<D><<<grid, TT, smem, s>>>(*a);
    return cudaGetLastError();
}

bool fg_gpu_attention_tiled_ok(const fg_gpu_attn_args *a, int warp)
{
    return warp == 32 && a->head_dim_k == a->head_dim_v && (a->head_dim_k == 64 || a->head_dim_k == 128);
}

cudaError_t fg_gpu_attention_tiled(const fg_gpu_attn_args *a, cudaStream_t s)
{
    return a->head_dim_k == 64 ? launch_tiled<64>(a, s) : launch_tiled<128>(a, s);
}
