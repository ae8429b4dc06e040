/*
 * attention_tiled.cu — causal attention for prefill: a tile of 64
 * consecutive query tokens of one sequence against the sequence's keys, 64
 * at a time, for one query head per block: flash-attention's loop, on the
 * CUDA cores here and on the tensor cores in the mma form further down.
 *
 * Per key tile the block stages K and V (F16, through the block table) in
 * shared memory, computes the 64 x 64 scores (each thread a 4 x 4 patch),
 * applies the causal mask (key position > query position, or outside the
 * sliding window) and soft-capping, updates each query row's running max
 * and sum (four threads per row), and accumulates P V into registers (each
 * thread 4 rows x D/16 dims), rescaled when a row's max grows. Key tiles past
 * the tile's last query position are skipped.
 *
 * The host uses it only when every tile of the batch (FG_GPU_ATTN_TILE
 * tokens: 64 here, 128 for the tensor-core form below) is one sequence's
 * consecutive positions (a prefill chunk); other batches take
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

#if !defined(FG_GPU_HIP)
/*
 * The tensor-core form (CUDA, sm_80 and up): the same tiles and masks, with
 * Q K^T and P V on mma.m16n8k16 (f16 operands, f32 accumulators), as
 * flash-attention 2 does. Eight warps, each 16 of the tile's 128 query
 * rows; per 64-key tile the block stages K and V (F16, through the block
 * table; rows past the tile's last position zeroed) in shared memory, the
 * next tile's copy (cp.async) running while this one is used; each warp
 * computes its 16 x 64 scores in registers, masks them (causal, window),
 * soft-caps, takes the online softmax per row (a row's 64 scores are spread
 * over the four lanes of a quad: two shuffles), and multiplies P, rounded
 * to f16, by V, P taken straight from the score accumulators (their layout
 * is the next mma's A fragment). Q (times the scale, rounded to f16) is
 * held in registers as A fragments for the whole key loop. Fragments come
 * from shared memory by ldmatrix (V's transposed), rows padded by 8 halves
 * so that the eight rows of a fragment fall in different banks.
 */
enum { MQ = FG_GPU_ATTN_TILE, MK = 64, MT = 2 * MQ, MPAD = 8 };

/* Q, and two stages of K and V: the next key tile is copied in (cp.async)
 * while the current one is multiplied. */
template <int D> struct mma_smem {
    __half q[MQ][D + MPAD];
    __half k[2][MK][D + MPAD];
    __half v[2][MK][D + MPAD];
};

/* 16 bytes from global to shared, or 16 zero bytes when !valid. */
static __device__ __forceinline__ void fa_cp16(void *dst, const void *src, bool valid)
{
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
}

/* Queues the K and V rows of keys k0 .. k0 + MK - 1 (zeros past p_last) into stage st. */
template <int D>
static __device__ __forceinline__ void fa_load_kv(mma_smem<D> &sm, int st, const fg_gpu_attn_args &a,
                                                  const int32_t *table, const __half *K, const __half *V, int32_t k0,
                                                  int32_t p_last)
{
    for (int i = threadIdx.x; i < MK * (D / 8); i += MT) {
        int r = i / (D / 8), c = 8 * (i % (D / 8));
        int32_t j = k0 + r;
        bool valid = j <= p_last;
        int64_t slot = valid ? (int64_t)table[j / a.block_size] * a.block_size + j % a.block_size : 0;
        fa_cp16(&sm.k[st][r][c], K + slot * a.k_row + c, valid);
        fa_cp16(&sm.v[st][r][c], V + slot * a.v_row + c, valid);
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

static __device__ __forceinline__ void fa_ldm_x4(uint32_t r[4], const void *p)
{
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

static __device__ __forceinline__ void fa_ldm_x4_t(uint32_t r[4], const void *p)
{
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

static __device__ __forceinline__ void fa_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t fa_pack(float x, float y)
{
    __half2 h = __floats2half2_rn(x, y);
    return *(uint32_t *)&h;
}

template <int D>
__global__ void __launch_bounds__(MT) attention_mma_kernel(fg_gpu_attn_args a)
{
    enum { NB = MK / 8, KD = D / 16, ND = D / 8 };
    extern __shared__ __align__(16) unsigned char raw[];
    mma_smem<D> &sm = *(mma_smem<D> *)raw;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, qd = lane % 4;
    const int h = blockIdx.x;
    const int64_t t0 = (int64_t)blockIdx.y * MQ;
    const int nq = a.n_tokens - t0 < MQ ? (int)(a.n_tokens - t0) : MQ;
    const int32_t hk = h / (a.n_head / a.n_head_kv);
    const int32_t p0 = a.pos[t0], p_last = p0 + nq - 1;
    const int32_t *table = a.block_tables + (int64_t)a.seq[t0] * a.max_blocks;
    const __half *K = (const __half *)a.kc + (int64_t)hk * D, *V = (const __half *)a.vc + (int64_t)hk * D;

    /* Scores in base 2: Q carries log2(e), so the softmax takes exp2f (one
     * MUFU op) where expf takes several instructions; soft-capping, rare,
     * undoes it around its tanh. */
    const float log2e = 1.4426950408889634f, qscale = a.scale * log2e;
    for (int i = tid; i < MQ * D / 2; i += MT) {
        int r = i / (D / 2), c = 2 * (i % (D / 2));
        float2 v = make_float2(0.0f, 0.0f);
        if (r < nq) {
            const float *qr = a.q + (t0 + r) * a.ldq + (int64_t)h * D + c;
            v = make_float2(qr[0] * qscale, qr[1] * qscale);
        }
        *(__half2 *)&sm.q[r][c] = __floats2half2_rn(v.x, v.y);
    }
    __syncthreads();
    /* this warp's Q rows as A fragments: rows 16 warp + (lanes 0-7, 8-15 of
     * each matrix), dims 16 kd + (0-7, 8-15) */
    uint32_t qa[KD][4];
    {
        int r = 16 * warp + (lane % 16), c = 8 * (lane / 16);
#pragma unroll
        for (int kd = 0; kd < KD; kd++) fa_ldm_x4(qa[kd], &sm.q[r][16 * kd + c]);
    }
    const int32_t qp0 = p0 + 16 * warp + g, qp1 = qp0 + 8; /* this lane's two query rows */
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    float o[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

    int32_t first = a.window > 0 && p0 - a.window + 1 > 0 ? p0 - a.window + 1 : 0;
    first -= first % MK;
    fa_load_kv<D>(sm, 0, a, table, K, V, first, p_last);
    for (int32_t k0 = first, st = 0; k0 <= p_last; k0 += MK, st ^= 1) {
        if (k0 + MK <= p_last) { /* the next tile into the other stage, then wait for this one */
            fa_load_kv<D>(sm, st ^ 1, a, table, K, V, k0 + MK, p_last);
            asm volatile("cp.async.wait_group 1;\n" ::: "memory");
        } else {
            asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        }
        __syncthreads();
        /* S = Q K^T: 16 rows x 64 keys a warp, n-block nb is keys 8 nb .. */
        float sc[NB][4];
#pragma unroll
        for (int nb = 0; nb < NB; nb++) sc[nb][0] = sc[nb][1] = sc[nb][2] = sc[nb][3] = 0.0f;
#pragma unroll
        for (int kd = 0; kd < KD; kd++) {
#pragma unroll
            for (int nb = 0; nb < NB; nb += 2) {
                /* matrices: keys 8 nb + (0-7) at dims 16 kd + (0-7), (8-15); then keys 8 (nb + 1) + ... */
                uint32_t b[4];
                int r = 8 * nb + (lane % 8) + 8 * (lane / 16), c = 16 * kd + 8 * ((lane / 8) % 2);
                fa_ldm_x4(b, &sm.k[st][r][c]);
                fa_mma(sc[nb], qa[kd], b[0], b[1]);
                fa_mma(sc[nb + 1], qa[kd], b[2], b[3]);
            }
        }
        /* masks, soft-cap, online softmax: element e of n-block nb is row
         * (e < 2 ? g : g + 8), key k0 + 8 nb + 2 qd + e % 2 */
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int32_t kp = k0 + 8 * nb + 2 * qd + e % 2, qp = e < 2 ? qp0 : qp1;
                float s = sc[nb][e];
                if (a.softcap > 0.0f) s = a.softcap * log2e * tanhf(s / (a.softcap * log2e));
                bool out_of = kp > qp || kp > p_last || (a.window > 0 && kp < qp - a.window + 1);
                s = out_of ? -INFINITY : s;
                sc[nb][e] = s;
                if (e < 2) mx0 = fmaxf(mx0, s);
                else mx1 = fmaxf(mx1, s);
            }
        }
        mx0 = fmaxf(mx0, fg_shfl_xor(mx0, 1, 32));
        mx0 = fmaxf(mx0, fg_shfl_xor(mx0, 2, 32));
        mx1 = fmaxf(mx1, fg_shfl_xor(mx1, 1, 32));
        mx1 = fmaxf(mx1, fg_shfl_xor(mx1, 2, 32));
        float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        float c0 = n0 == -INFINITY ? 1.0f : exp2f(m0 - n0), c1 = n1 == -INFINITY ? 1.0f : exp2f(m1 - n1);
        m0 = n0, m1 = n1;
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float s = sc[nb][e], mm = e < 2 ? n0 : n1;
                float pj = s == -INFINITY ? 0.0f : exp2f(s - mm);
                sc[nb][e] = pj;
                if (e < 2) s0 += pj;
                else s1 += pj;
            }
        }
        l0 = l0 * c0 + s0, l1 = l1 * c1 + s1; /* this lane's share; the quad's sum at the end */
#pragma unroll
        for (int n = 0; n < ND; n++) o[n][0] *= c0, o[n][1] *= c0, o[n][2] *= c1, o[n][3] *= c1;
        /* O += P V: k-step kk is keys 16 kk ..; its A fragment is n-blocks 2 kk and 2 kk + 1 */
#pragma unroll
        for (int kk = 0; kk < MK / 16; kk++) {
            uint32_t pa[4] = {fa_pack(sc[2 * kk][0], sc[2 * kk][1]), fa_pack(sc[2 * kk][2], sc[2 * kk][3]),
                              fa_pack(sc[2 * kk + 1][0], sc[2 * kk + 1][1]), fa_pack(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
            for (int n = 0; n < ND; n += 2) {
                /* V transposed: matrices keys 16 kk + (0-7), (8-15) at dims 8 n .., then at dims 8 (n + 1) .. */
                uint32_t b[4];
                int r = 16 * kk + (lane % 8) + 8 * ((lane / 8) % 2), c = 8 * n + 8 * (lane / 16);
                fa_ldm_x4_t(b, &sm.v[st][r][c]);
                fa_mma(o[n], pa, b[0], b[1]);
                fa_mma(o[n + 1], pa, b[2], b[3]);
            }
        }
        __syncthreads(); /* this stage is refilled two tiles on */
    }
    l0 += fg_shfl_xor(l0, 1, 32);
    l0 += fg_shfl_xor(l0, 2, 32);
    l1 += fg_shfl_xor(l1, 1, 32);
    l1 += fg_shfl_xor(l1, 2, 32);
    const int r0 = 16 * warp + g, r1 = r0 + 8;
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
#pragma unroll
    for (int n = 0; n < ND; n++) {
        int d = 8 * n + 2 * qd;
        if (r0 < nq) {
            float *y = a.out + (t0 + r0) * a.ldo + (int64_t)h * D + d;
            y[0] = o[n][0] * i0, y[1] = o[n][1] * i0;
        }
        if (r1 < nq) {
            float *y = a.out + (t0 + r1) * a.ldo + (int64_t)h * D + d;
            y[0] = o[n][2] * i1, y[1] = o[n][3] * i1;
        }
    }
}

template <int D> static cudaError_t launch_mma(const fg_gpu_attn_args *a, cudaStream_t s)
{
    size_t smem = sizeof(mma_smem<D>);
    static bool raised = false; /* the opt-in above 48 KB, once per process and head dim */
    if (!raised) {
        cudaError_t e = cudaFuncSetAttribute(reinterpret_cast<const void *>(&attention_mma_kernel<D>),
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
        raised = true;
    }
    dim3 grid((unsigned)a->n_head, (unsigned)((a->n_tokens + MQ - 1) / MQ));
    attention_mma_kernel<D><<<grid, MT, smem, s>>>(*a);
    return cudaGetLastError();
}
#endif

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
#if !defined(FG_GPU_HIP)
    return a->head_dim_k == 64 ? launch_mma<64>(a, s) : launch_mma<128>(a, s);
#else
    return a->head_dim_k == 64 ? launch_tiled<64>(a, s) : launch_tiled<128>(a, s);
#endif
}
