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
#include "backend/gpu/kernels/q8.cuh"

enum { ATTN_THREADS = 128, ATTN_MAX_D = 256, ATTN_R = ATTN_MAX_D / FG_WARP, ATTN_MAX_SPLITS = 32 };

/* The keys [*start, *p] token t of a block attends to: from the sliding
 * window's first (or 0) to its position, narrowed with several splits to
 * split z's chunk (empty for a split past the end: *start > *p). Chunks
 * follow the device-side position, so a captured graph stays valid. */
static __device__ __forceinline__ void attn_keys(const fg_gpu_attn_args &a, int64_t t, int n_splits, int z,
                                                 int32_t *start, int32_t *p)
{
    *p = a.pos[t];
    *start = a.window > 0 && *p - a.window + 1 > 0 ? *p - a.window + 1 : 0;
    if (n_splits > 1) {
        int32_t chunk = (*p - *start + n_splits) / n_splits, last = *start + (z + 1) * chunk - 1;
        *start += z * chunk;
        *p = last < *p ? last : *p;
    }
}

/* Online-softmax state of G query heads, R output elements a lane each:
 * max -inf, sum 0, outputs 0. */
template <int G, int R>
static __device__ __forceinline__ void attn_zero(float (&m)[G], float (&l)[G], float (&acc)[G][R])
{
#pragma unroll
    for (int g = 0; g < G; g++) {
        m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
        for (int r = 0; r < R; r++) acc[g][r] = 0.0f;
    }
}

__global__ void __launch_bounds__(ATTN_THREADS) attention_kernel(fg_gpu_attn_args a, int n_splits, float *part)
{
    extern __shared__ float sm[];
    int h = blockIdx.x, lane = threadIdx.x % FG_WARP, warp = threadIdx.x / FG_WARP, nw = blockDim.x / FG_WARP;
    int64_t t = blockIdx.y;
    int32_t hk = h / (a.n_head / a.n_head_kv), Dk = a.head_dim_k, Dv = a.head_dim_v;
    float *qs = sm, *ms = sm + Dk, *ls = ms + nw, *os = ls + nw; /* q[Dk], m[nw], l[nw], o[nw][Dv] */

    const float *q = a.q + t * a.ldq + (int64_t)h * Dk;
    for (int i = threadIdx.x; i < Dk; i += blockDim.x) qs[i] = q[i];
    __syncthreads();

    int32_t p, start;
    attn_keys(a, t, n_splits, (int)blockIdx.z, &start, &p);
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
#pragma unroll 8
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
    if (n_splits > 1) {
        /* Partial result (t, h, z): Dv unnormalized outputs, then max, sum.
         * An empty chunk leaves M = -inf, L = 0, outputs 0. */
        float *pp = part + (((int64_t)t * a.n_head + h) * n_splits + blockIdx.z) * (Dv + 2);
        for (int d = threadIdx.x; d < Dv; d += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < nw; w++) o += M == -INFINITY ? 0.0f : os[w * Dv + d] * expf(ms[w] - M);
            pp[d] = o;
        }
        if (threadIdx.x == 0) {
            pp[Dv] = M;
            pp[Dv + 1] = M == -INFINITY ? 0.0f : L;
        }
        return;
    }
    for (int d = threadIdx.x; d < Dv; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < nw; w++) o += os[w * Dv + d] * expf(ms[w] - M);
        a.out[t * a.ldo + (int64_t)h * Dv + d] = o / L;
    }
}

/* Merges the n_splits partial results of each (token, head): the first 32
 * threads read the splits' maxima and sums side by side and leave each
 * split's weight exp(m_z - M) / L in shared memory, then each output
 * element is one pass over the splits. With xq, the output row (K
 * elements, Dv a multiple of 32) is also quantized for the integer GEMV,
 * one 32-block per warp (q8.cuh). */
__global__ void attention_merge_kernel(const float *__restrict__ part, int n_splits, int32_t n_head, int32_t Dv,
                                       float *out, int64_t ldo, int8_t *xq, float2 *xs, int64_t K)
{
    __shared__ float wz[ATTN_MAX_SPLITS];
    int h = blockIdx.x;
    int64_t t = blockIdx.y;
    const float *pp = part + ((int64_t)t * n_head + h) * n_splits * (Dv + 2);
    if (threadIdx.x < 32) {
        int z = threadIdx.x;
        float m = z < n_splits ? pp[z * (Dv + 2) + Dv] : -INFINITY;
        float l = z < n_splits ? pp[z * (Dv + 2) + Dv + 1] : 0.0f;
        float M = fg_max32(m); /* finite: split 0 holds the first key */
        float w = m == -INFINITY ? 0.0f : expf(m - M);
        float L = fg_sum32(l * w);
        if (z < n_splits) wz[z] = w / L;
    }
    __syncthreads();
    for (int d0 = 0; d0 < Dv; d0 += blockDim.x) {
        int d = d0 + threadIdx.x;
        if (d0 + (int)(threadIdx.x / 32) * 32 >= Dv) break; /* whole groups of 32 leave together */
        float o = 0.0f;
        if (d < Dv) {
#pragma unroll 4
            for (int z = 0; z < n_splits; z++) o += pp[z * (Dv + 2) + d] * wz[z];
            out[t * ldo + (int64_t)h * Dv + d] = o;
        }
        if (xq) {
            int64_t e = (int64_t)h * Dv + d0 + (threadIdx.x / 32) * 32;
            fg_q8_lanes(o, threadIdx.x % 32, xq + t * K + e, xs + t * (K / 32) + e / 32);
        }
    }
}

/* Batched decoding: one block per (query token, KV head) computes all G
 * query heads that share the KV head (GQA), so each K and V row is read
 * once for G heads, not G times. As attention_kernel otherwise: the warps
 * take the keys FG_WARP at a time, a lane scores one key against the G
 * query rows (staged in shared memory), online softmax per head, the value
 * sum with the head dimension across the lanes, and a merge of the warps
 * through shared memory. No split of the keys: a batch has blocks enough. */
template <int G>
__global__ void __launch_bounds__(ATTN_THREADS) attention_gqa_kernel(fg_gpu_attn_args a)
{
    extern __shared__ float sm[];
    int hk = blockIdx.x, lane = threadIdx.x % FG_WARP, warp = threadIdx.x / FG_WARP, nw = blockDim.x / FG_WARP;
    int64_t t = blockIdx.y;
    int32_t Dk = a.head_dim_k, Dv = a.head_dim_v;
    /* q[G][Dk], m[nw][G], l[nw][G], o[nw][G][Dv] */
    float *qs = sm, *ms = qs + G * Dk, *ls = ms + nw * G, *os = ls + nw * G;

    const float *q = a.q + t * a.ldq + (int64_t)hk * G * Dk;
    for (int i = threadIdx.x; i < G * Dk; i += blockDim.x) qs[i] = q[i];
    __syncthreads();

    int32_t p, start;
    attn_keys(a, t, 1, 0, &start, &p);
    const int32_t *table = a.block_tables + (int64_t)a.seq[t] * a.max_blocks;
    const __half *K = (const __half *)a.kc + (int64_t)hk * Dk, *V = (const __half *)a.vc + (int64_t)hk * Dv;

    float m[G], l[G], acc[G][ATTN_R];
    attn_zero(m, l, acc);

    for (int32_t j0 = start + warp * FG_WARP; j0 <= p; j0 += nw * FG_WARP) {
        int32_t j = j0 + lane;
        int slot = 0;
        float s[G];
#pragma unroll
        for (int g = 0; g < G; g++) s[g] = 0.0f;
        if (j <= p) {
            slot = table[j / a.block_size] * a.block_size + j % a.block_size;
            const __half2 *k2 = (const __half2 *)(K + (int64_t)slot * a.k_row);
#pragma unroll 4
            for (int i = 0; i < Dk / 2; i++) {
                float2 kv = __half22float2(k2[i]);
#pragma unroll
                for (int g = 0; g < G; g++) s[g] += qs[g * Dk + 2 * i] * kv.x + qs[g * Dk + 2 * i + 1] * kv.y;
            }
        }
        float pj[G];
#pragma unroll
        for (int g = 0; g < G; g++) {
            float sg = -INFINITY;
            if (j <= p) {
                sg = s[g] * a.scale;
                if (a.softcap > 0.0f) sg = a.softcap * tanhf(sg / a.softcap);
            }
            float m_new = fmaxf(m[g], fg_warp_max(sg)); /* finite: lane 0's key is in range */
            float corr = expf(m[g] - m_new);
            pj[g] = j <= p ? expf(sg - m_new) : 0.0f;
            l[g] = l[g] * corr + fg_warp_sum(pj[g]);
#pragma unroll
            for (int r = 0; r < ATTN_R; r++) acc[g][r] *= corr;
            m[g] = m_new;
        }
        int32_t n_keys = p - j0 + 1 < FG_WARP ? p - j0 + 1 : FG_WARP;
        for (int32_t kk = 0; kk < n_keys; kk++) {
            const __half *vrow = V + (int64_t)fg_shfl(slot, kk) * a.v_row;
            float v[ATTN_R];
#pragma unroll
            for (int r = 0; r < ATTN_R; r++) {
                int d = r * FG_WARP + lane;
                v[r] = d < Dv ? __half2float(vrow[d]) : 0.0f;
            }
#pragma unroll
            for (int g = 0; g < G; g++) {
                float pk = fg_shfl(pj[g], kk);
#pragma unroll
                for (int r = 0; r < ATTN_R; r++) acc[g][r] += pk * v[r];
            }
        }
    }

#pragma unroll
    for (int g = 0; g < G; g++) {
        if (lane == 0) {
            ms[warp * G + g] = m[g];
            ls[warp * G + g] = l[g];
        }
#pragma unroll
        for (int r = 0; r < ATTN_R; r++) {
            int d = r * FG_WARP + lane;
            if (d < Dv) os[(warp * G + g) * Dv + d] = acc[g][r];
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * Dv; i += blockDim.x) {
        int g = i / Dv, d = i % Dv;
        float M = -INFINITY, L = 0.0f, o = 0.0f;
        for (int w = 0; w < nw; w++) M = fmaxf(M, ms[w * G + g]);
        for (int w = 0; w < nw; w++) {
            float c = expf(ms[w * G + g] - M);
            L += ls[w * G + g] * c;
            o += os[(w * G + g) * Dv + d] * c;
        }
        a.out[t * a.ldo + ((int64_t)hk * G + g) * Dv + d] = o / L;
    }
}

/* Launches the merge of n_splits partial results (with q8: the output
 * quantized too, when head_dim_v allows). */
static void attention_merge(const fg_gpu_attn_args *a, int n_splits, const float *scratch, void *q8, cudaStream_t s)
{
    int64_t K = (int64_t)a->n_head * a->head_dim_v;
    int8_t *xq = q8 && a->head_dim_v % 32 == 0 ? (int8_t *)q8 : NULL;
    float2 *xs = xq ? fg_gpu_q8_scales(xq, K) : NULL;
    attention_merge_kernel<<<dim3((unsigned)a->n_head, (unsigned)a->n_tokens), 128, 0, s>>>(
        scratch, n_splits, a->n_head, a->head_dim_v, a->out, a->ldo, xq, xs, K);
}

/*
 * Decoding (a few query tokens, long contexts): one block per (token, KV
 * head, split of the keys), all G query heads of the KV head at once, so
 * each K and V row is read once for G heads. Its four 32-lane groups take
 * the split's keys NK = 8 at a time in turn. A lane holds E = D / 32
 * consecutive dims of each query head (in registers) and of each key and
 * value row, so a group reads a row with one coalesced load of D halves,
 * and the eight rows' loads are in flight together.
 *
 * Scores: each lane's partial dot products for 8 keys x G heads are summed
 * over the group by a reduce-scatter (9 shuffles per head for 8 keys, not
 * 40): after exchanging halves at xor 16, 8 and 4 each lane holds one key's
 * partial sum, kk = bits 4, 3, 2 of the lane, completed by xor 2 and 1.
 * The online softmax's max and sum over the 8 keys are three more shuffles
 * each (lanes that differ in bits 0-1 hold the same key), and each key's
 * probability is broadcast once per head for the value sum. The groups'
 * running results meet in shared memory; with several splits they go to
 * the scratch as attention_kernel's do, and attention_merge_kernel ends
 * them (its output-quantizing form included).
 */
enum { DEC_NK = 8, DEC_GROUPS = ATTN_THREADS / 32 };

/* E halves of a row, as loaded (E / 2 words); kept packed until used, so
 * that eight keys' K and V slices fit in registers at D = 256. */
template <int E> struct dec_row {
    uint32_t w[E / 2];
};

template <int E> static __device__ __forceinline__ dec_row<E> dec_load(const __half *p)
{
    dec_row<E> r;
    if constexpr (E == 2) {
        r.w[0] = *(const uint32_t *)p;
    } else if constexpr (E == 4) {
        uint2 u = *(const uint2 *)p;
        r.w[0] = u.x, r.w[1] = u.y;
    } else {
        uint4 u = *(const uint4 *)p;
        r.w[0] = u.x, r.w[1] = u.y, r.w[2] = u.z, r.w[3] = u.w;
    }
    return r;
}

static __device__ __forceinline__ float2 dec_f2(uint32_t w)
{
    return __half22float2(*(const __half2 *)&w);
}

template <int G, int D>
__global__ void __launch_bounds__(ATTN_THREADS) attention_decode_kernel(fg_gpu_attn_args a, int n_splits, float *part)
{
    enum { E = D / 32, NK = DEC_NK, NG = DEC_GROUPS };
    __shared__ float ms[NG][G], ls[NG][G];
    __shared__ float os[NG][G][D];
    const int hk = blockIdx.x, lane = threadIdx.x % 32, grp = threadIdx.x / 32;
    const int base = (int)(threadIdx.x % FG_WARP) - lane; /* this group's first lane in the wavefront */
    const int64_t t = blockIdx.y;

    float q[G][E];
    const float *qrow = a.q + t * a.ldq + (int64_t)hk * G * D + E * lane;
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int e = 0; e < E; e++) q[g][e] = qrow[g * D + e];

    int32_t p, start;
    attn_keys(a, t, n_splits, (int)blockIdx.z, &start, &p);
    const int32_t *table = a.block_tables + (int64_t)a.seq[t] * a.max_blocks;
    const __half *K = (const __half *)a.kc + (int64_t)hk * D + E * lane,
                 *V = (const __half *)a.vc + (int64_t)hk * D + E * lane;
    /* the key whose score this lane ends up holding, and whose lane holds key k */
    const int kk = (lane >> 4 & 1) * 4 + (lane >> 3 & 1) * 2 + (lane >> 2 & 1);

    float m[G], l[G], acc[G][E];
    attn_zero(m, l, acc);

    for (int32_t j0 = start + grp * NK; j0 <= p; j0 += NG * NK) {
        dec_row<E> kr[NK], vr[NK];
#pragma unroll
        for (int k = 0; k < NK; k++) {
            int32_t j = j0 + k <= p ? j0 + k : p; /* past the end: a valid row, masked below */
            int64_t slot = (int64_t)table[j / a.block_size] * a.block_size + j % a.block_size;
            kr[k] = dec_load<E>(K + slot * a.k_row);
            vr[k] = dec_load<E>(V + slot * a.v_row);
        }
        /* partial dots, then the reduce-scatter over the group */
        float s[G];
#pragma unroll
        for (int g = 0; g < G; g++) {
            float v[NK];
#pragma unroll
            for (int k = 0; k < NK; k++) {
                float d = 0.0f;
#pragma unroll
                for (int e = 0; e < E / 2; e++) {
                    float2 kv = dec_f2(kr[k].w[e]);
                    d += q[g][2 * e] * kv.x + q[g][2 * e + 1] * kv.y;
                }
                v[k] = d;
            }
            const bool b4 = lane & 16, b3 = lane & 8, b2 = lane & 4;
            float w[4], x[2];
#pragma unroll
            for (int k = 0; k < 4; k++) w[k] = (b4 ? v[k + 4] : v[k]) + fg_shfl_xor(b4 ? v[k] : v[k + 4], 16, 32);
#pragma unroll
            for (int k = 0; k < 2; k++) x[k] = (b3 ? w[k + 2] : w[k]) + fg_shfl_xor(b3 ? w[k] : w[k + 2], 8, 32);
            float y = (b2 ? x[1] : x[0]) + fg_shfl_xor(b2 ? x[0] : x[1], 4, 32);
            y += fg_shfl_xor(y, 2, 32);
            y += fg_shfl_xor(y, 1, 32);
            s[g] = y;
        }
        const bool live = j0 + kk <= p;
        float pk[G];
#pragma unroll
        for (int g = 0; g < G; g++) {
            float sg = -INFINITY;
            if (live) {
                sg = s[g] * a.scale;
                if (a.softcap > 0.0f) sg = a.softcap * tanhf(sg / a.softcap);
            }
            float mx = sg;
            mx = fmaxf(mx, fg_shfl_xor(mx, 4, 32));
            mx = fmaxf(mx, fg_shfl_xor(mx, 8, 32));
            mx = fmaxf(mx, fg_shfl_xor(mx, 16, 32));
            float m_new = fmaxf(m[g], mx); /* finite: key j0 is live */
            float corr = expf(m[g] - m_new);
            pk[g] = live ? expf(sg - m_new) : 0.0f;
            float sum = pk[g];
            sum += fg_shfl_xor(sum, 4, 32);
            sum += fg_shfl_xor(sum, 8, 32);
            sum += fg_shfl_xor(sum, 16, 32);
            l[g] = l[g] * corr + sum;
            m[g] = m_new;
#pragma unroll
            for (int e = 0; e < E; e++) acc[g][e] *= corr;
        }
#pragma unroll
        for (int k = 0; k < NK; k++) {
            const int src = base + (k >> 2 & 1) * 16 + (k >> 1 & 1) * 8 + (k & 1) * 4;
            float vf[E];
#pragma unroll
            for (int e = 0; e < E / 2; e++) {
                float2 vv = dec_f2(vr[k].w[e]);
                vf[2 * e] = vv.x, vf[2 * e + 1] = vv.y;
            }
#pragma unroll
            for (int g = 0; g < G; g++) {
                float pkk = fg_shfl(pk[g], src); /* 0 for a key past the end */
#pragma unroll
                for (int e = 0; e < E; e++) acc[g][e] += pkk * vf[e];
            }
        }
    }

#pragma unroll
    for (int g = 0; g < G; g++) {
        if (lane == 0) ms[grp][g] = m[g], ls[grp][g] = l[g];
#pragma unroll
        for (int e = 0; e < E; e++) os[grp][g][E * lane + e] = acc[g][e];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        int g = i / D, d = i % D;
        float M = -INFINITY, L = 0.0f, o = 0.0f;
        for (int w = 0; w < NG; w++) M = fmaxf(M, ms[w][g]);
        for (int w = 0; w < NG; w++) {
            float c = ms[w][g] == -INFINITY ? 0.0f : expf(ms[w][g] - M);
            L += ls[w][g] * c;
            o += os[w][g][d] * c;
        }
        int64_t h = (int64_t)hk * G + g;
        if (n_splits > 1) { /* partial (t, h, z): outputs, then max and sum; an empty chunk: -inf, 0 */
            float *pp = part + (((int64_t)t * a.n_head + h) * n_splits + blockIdx.z) * (D + 2);
            pp[d] = M == -INFINITY ? 0.0f : o;
            if (d == 0) pp[D] = M, pp[D + 1] = M == -INFINITY ? 0.0f : L;
        } else {
            a.out[t * a.ldo + h * D + d] = o / L;
        }
    }
}

bool fg_gpu_attention_decode_ok(const fg_gpu_attn_args *a)
{
    int G = a->n_head_kv > 0 && a->n_head % a->n_head_kv == 0 ? a->n_head / a->n_head_kv : 0, D = a->head_dim_k;
    return a->head_dim_v == D && (D == 64 || D == 128 || D == 256) && (G == 1 || G == 2 || G == 4 || G == 8) &&
           !(G == 8 && D == 256) && a->k_row % 8 == 0 && a->v_row % 8 == 0;
}

template <int G, int D> static void attention_decode_launch(const fg_gpu_attn_args *a, int n_splits, float *part,
                                                            cudaStream_t s)
{
    dim3 grid((unsigned)a->n_head_kv, (unsigned)a->n_tokens, (unsigned)n_splits);
    attention_decode_kernel<G, D><<<grid, ATTN_THREADS, 0, s>>>(*a, n_splits, part);
}

template <int G> static void attention_decode_d(const fg_gpu_attn_args *a, int n_splits, float *part, cudaStream_t s)
{
    if (a->head_dim_k == 64) attention_decode_launch<G, 64>(a, n_splits, part, s);
    else if (a->head_dim_k == 128) attention_decode_launch<G, 128>(a, n_splits, part, s);
    else if constexpr (G < 8) attention_decode_launch<G, 256>(a, n_splits, part, s);
}

cudaError_t fg_gpu_attention_decode(const fg_gpu_attn_args *a, int n_splits, float *scratch, void *q8,
                                    cudaStream_t s)
{
    if (!fg_gpu_attention_decode_ok(a)) return cudaErrorInvalidValue;
    if (n_splits > 1 && !scratch) n_splits = 1;
    switch (a->n_head / a->n_head_kv) {
    case 1: attention_decode_d<1>(a, n_splits, scratch, s); break;
    case 2: attention_decode_d<2>(a, n_splits, scratch, s); break;
    case 4: attention_decode_d<4>(a, n_splits, scratch, s); break;
    default: attention_decode_d<8>(a, n_splits, scratch, s); break;
    }
    if (n_splits > 1) attention_merge(a, n_splits, scratch, q8, s);
    return cudaGetLastError();
}

template <int G> static void attention_gqa_launch(const fg_gpu_attn_args *a, int warp, cudaStream_t s)
{
    int nw = ATTN_THREADS / warp;
    size_t smem = (size_t)(G * a->head_dim_k + 2 * nw * G + nw * G * a->head_dim_v) * sizeof(float);
    if (smem > 48 * 1024)
        (void)cudaFuncSetAttribute((const void *)attention_gqa_kernel<G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)smem);
    attention_gqa_kernel<G><<<dim3((unsigned)a->n_head_kv, (unsigned)a->n_tokens), ATTN_THREADS, smem, s>>>(*a);
}

bool fg_gpu_attention_gqa_ok(const fg_gpu_attn_args *a)
{
    int G = a->n_head / a->n_head_kv;
    return a->n_head % a->n_head_kv == 0 && (G == 2 || G == 4 || G == 8) && a->head_dim_k <= ATTN_MAX_D &&
           a->head_dim_v <= ATTN_MAX_D && a->head_dim_k % 2 == 0;
}

cudaError_t fg_gpu_attention_gqa(const fg_gpu_attn_args *a, int warp, cudaStream_t s)
{
    if (!fg_gpu_attention_gqa_ok(a)) return cudaErrorInvalidValue;
    switch (a->n_head / a->n_head_kv) {
    case 2: attention_gqa_launch<2>(a, warp, s); break;
    case 4: attention_gqa_launch<4>(a, warp, s); break;
    default: attention_gqa_launch<8>(a, warp, s); break;
    }
    return cudaGetLastError();
}

size_t fg_gpu_attention_scratch(int32_t n_tokens, int64_t o_row, int32_t n_head)
{
    return (size_t)n_tokens * ATTN_MAX_SPLITS * (size_t)(o_row + 2 * n_head) * sizeof(float);
}

int fg_gpu_attention_splits(int32_t n_tokens, int32_t n_head, int n_sm)
{
    int pairs = n_tokens * n_head, splits = (2 * n_sm + pairs - 1) / pairs;
    return splits < 1 ? 1 : splits > ATTN_MAX_SPLITS ? ATTN_MAX_SPLITS : splits;
}

/* Batches (and every step in batch-invariant mode) take one unsplit kernel:
 * the tiled one where the batch's tiles allow it, else the GQA-sharing one;
 * decode-sized steps split the keys over enough blocks to fill the GPU, in
 * the decode kernel where it applies. */
fg_gpu_attn_kernel fg_gpu_attention_pick(const fg_gpu_attn_args *a, const fg_gpu_attn_where *w, int *splits)
{
    *splits = 1;
    bool batched = a->n_tokens > w->split_max_t || w->invariant;
    if (batched && !w->invariant && w->tiles_uniform && fg_gpu_attention_tiled_ok(a, w->warp)) return FG_GPU_ATTN_TILED;
    if (batched && fg_gpu_attention_gqa_ok(a)) return FG_GPU_ATTN_GQA;
    bool decode = !batched && fg_gpu_attention_decode_ok(a);
    if (!batched && (int64_t)a->n_head * a->head_dim_v <= w->part_row)
        *splits = fg_gpu_attention_splits(a->n_tokens, decode ? a->n_head_kv : a->n_head, w->n_sm);
    return decode ? FG_GPU_ATTN_DECODE : FG_GPU_ATTN_SPLIT;
}

cudaError_t fg_gpu_attention(const fg_gpu_attn_args *a, int n_splits, float *scratch, void *q8, int warp,
                             cudaStream_t s)
{
    if (a->head_dim_k > ATTN_MAX_D || a->head_dim_v > ATTN_MAX_D || a->head_dim_k % 2) return cudaErrorInvalidValue;
    if (n_splits > 1 && !scratch) n_splits = 1;
    int nw = ATTN_THREADS / warp;
    size_t smem = (size_t)(a->head_dim_k + 2 * nw + nw * a->head_dim_v) * sizeof(float);
    dim3 grid((unsigned)a->n_head, (unsigned)a->n_tokens, (unsigned)n_splits);
    attention_kernel<<<grid, ATTN_THREADS, smem, s>>>(*a, n_splits, scratch);
    if (n_splits > 1) attention_merge(a, n_splits, scratch, q8, s);
    return cudaGetLastError();
}
