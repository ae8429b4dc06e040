/*
 * matmul.cu — y = x W^T on quantized weights, and the embedding lookup that
 * shares their decoding (dequant.cuh).
 *
 * Small batches (decode) are bandwidth-bound: every weight
 * byte is read once per step. One block computes one output row: its
 * threads walk the row eight elements at a time (consecutive threads,
 * consecutive bytes), dequantize in registers, take the dot with each
 * token's activation row (which stays in L1/L2, shared by all blocks), and
 * reduce through the warps and shared memory. The token count is a template
 * parameter so the accumulators stay in registers. (One warp per row, or a
 * warp over several rows, ran 3-6x slower on an H100: too few loads in
 * flight per row to cover the memory latency.)
 *
 * Up to 32 tokens the GEMV runs in launches of eight. Larger batches
 * (prefill) are compute-bound: a block computes a 64-row x
 * 64-token tile of y, staging 32 columns of dequantized weights and of
 * activations in shared memory per step and giving each thread a 4 x 4
 * sub-tile of FMAs. This is the portable version; a tensor-core path comes
 * next to it.
 */
#include "backend/gpu/kernels/dequant.cuh"
#include "backend/gpu/kernels/kernels.h"
#include "backend/gpu/kernels/mmq.cuh"
#include "backend/gpu/kernels/mmvq.cuh"

/* ---- GEMV: T <= FG_GPU_GEMV_SLOTS ---------------------------------------------------------------- */

/* The end of a one-row-per-block GEMV: the block's per-thread sums of each
 * token (acc) reduced through the warps and part (shared memory), plus the
 * bias and residual, stored as y[t][n]. */
template <int NT>
static __device__ __forceinline__ void row_store(const float (&acc)[NT], float (*part)[NT], int64_t n, int32_t T,
                                                 const float *bias, const float *add, int64_t ldadd, float *y,
                                                 int64_t ldy)
{
    int lane = threadIdx.x % FG_WARP, warp = threadIdx.x / FG_WARP, nw = blockDim.x / FG_WARP;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float s = fg_warp_sum(acc[t]);
        if (lane == 0) part[warp][t] = s;
    }
    __syncthreads();
    if (threadIdx.x < NT && threadIdx.x < T) {
        int t = threadIdx.x;
        float s = 0.0f;
        for (int i = 0; i < nw; i++) s += part[i][t];
        if (bias) s += bias[n];
        if (add) s += add[t * ldadd + n];
        y[t * ldy + n] = s;
    }
}

template <int TYPE, int NT>
__global__ void __launch_bounds__(128) gemv_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int64_t N,
                                                   int64_t K, const float *__restrict__ x, int64_t ldx, int32_t T,
                                                   const float *__restrict__ bias, const float *add, int64_t ldadd,
                                                   float *y, int64_t ldy)
{
    __shared__ float part[128 / 32][NT];
    int64_t n = blockIdx.x;
    const uint8_t *row = w + (size_t)n * row_bytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    /* The block's threads split the row: consecutive threads take
     * consecutive groups of eight, so each load instruction of a warp reads
     * one contiguous span, and a row of K elements keeps K/8 loads in flight
     * across the block at once. */
#pragma unroll 4
    for (int64_t g = threadIdx.x; g < K / 8; g += blockDim.x) {
        float v[8];
        fg_dq<TYPE>::get8(row, g, v);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < T) {
                const float4 *xp = (const float4 *)(x + t * ldx + 8 * g);
                float4 a = xp[0], b = xp[1];
                acc[t] += v[0] * a.x + v[1] * a.y + v[2] * a.z + v[3] * a.w + v[4] * b.x + v[5] * b.y + v[6] * b.z +
                          v[7] * b.w;
            }
        }
    }
    row_store<NT>(acc, part, n, T, bias, add, ldadd, y, ldy);
}

/* ---- Tiled GEMM: T > FG_GPU_GEMV_MAX_T ----------------------------------------------------------- */

enum { TILE_N = 64, TILE_T = 64, TILE_K = 32, TILE_THREADS = 256 };

/* Up to this many tokens the GEMV kernels run, eight tokens per launch: the
 * tiled kernel has too few blocks to fill the GPU below a few dozen. */
enum { GEMV_MAX_T = FG_GPU_GEMV_MAX_T };

template <int TYPE>
__global__ void __launch_bounds__(TILE_THREADS) gemm_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int64_t N,
                                                            int64_t K, const float *__restrict__ x, int64_t ldx,
                                                            int32_t T, const float *__restrict__ bias,
                                                            const float *add, int64_t ldadd, float *y, int64_t ldy)
{
    /* k-major tiles: ws[k][n], xs[k][t]; +4 keeps float4 rows aligned and
     * spreads the transposing stores over the banks. */
    __shared__ float ws[TILE_K][TILE_N + 4];
    __shared__ float xs[TILE_K][TILE_T + 4];
    int tid = threadIdx.x;
    int64_t n0 = (int64_t)blockIdx.x * TILE_N, t0 = (int64_t)blockIdx.y * TILE_T;
    int ty = tid / 16, tx = tid % 16; /* this thread's rows n0 + 4ty.., tokens t0 + 4tx.. */
    float acc[4][4] = {};
    int lr = tid / 4, lp = tid % 4; /* loader: row / token lr, eighth lp of the 32 columns */
    for (int64_t k0 = 0; k0 < K; k0 += TILE_K) {
        float v[8];
        if (n0 + lr < N) fg_dq<TYPE>::get8(w + (size_t)(n0 + lr) * row_bytes, k0 / 8 + lp, v);
        else
            for (int i = 0; i < 8; i++) v[i] = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) ws[8 * lp + i][lr] = v[i];
        if (t0 + lr < T) {
            const float4 *xp = (const float4 *)(x + (t0 + lr) * ldx + k0 + 8 * lp);
            float4 a = xp[0], b = xp[1];
            v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        } else {
            for (int i = 0; i < 8; i++) v[i] = 0.0f;
        }
#pragma unroll
        for (int i = 0; i < 8; i++) xs[8 * lp + i][lr] = v[i];
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < TILE_K; k++) {
            float4 a = *(const float4 *)&ws[k][4 * ty], b = *(const float4 *)&xs[k][4 * tx];
            float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int64_t t = t0 + 4 * tx + j;
        if (t >= T) continue;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int64_t n = n0 + 4 * ty + i;
            if (n >= N) continue;
            float s = acc[i][j];
            if (bias) s += bias[n];
            if (add) s += add[t * ldadd + n];
            y[t * ldy + n] = s;
        }
    }
}

/* ---- Launchers ------------------------------------------------------------------- */

struct mm_args {
    fg_gpu_mm_kernel k; /* fg_gpu_matmul_pick's */
    void *scratch; /* fg_gpu_matmul_scratch(K) bytes, or NULL */
    bool x_ready;  /* scratch already holds these activations, quantized */
    bool inv;      /* batch-invariant mode: one kernel per type at every size */
    const uint8_t *w;
    size_t row_bytes;
    int64_t N, K;
    const float *x;
    int64_t ldx;
    int32_t T;
    const float *bias, *add;
    int64_t ldadd;
    float *y;
    int64_t ldy;
    int warp;
    cudaStream_t s;
};

/* The types with an integer-dot GEMV (mmvq.cuh). */
static constexpr bool has_mmvq(int type)
{
    return type == FG_DQ_Q4_0 || type == FG_DQ_Q4_1 || type == FG_DQ_Q8_0 || type == FG_DQ_Q4_K || type == FG_DQ_MXFP4;
}

/* One row a warp for one token (decode: as many warps as rows); two rows a
 * warp for several, so each activation load serves two rows (four measured
 * slower: 160+ registers a thread). */
template <int TYPE, int NT> struct mmvq_launch {
    enum { R = NT == 1 ? 1 : 2 };
    static void run(const fg_mmvq_parts &p, int64_t K, const int8_t *xq, const float2 *xs, int32_t nt, int warp,
                    cudaStream_t s)
    {
        int64_t rows = p.first[p.n], per_block = FG_MMVQ_THREADS / warp * R;
        fg_mmvq_kernel<TYPE, NT, R><<<(unsigned)((rows + per_block - 1) / per_block), FG_MMVQ_THREADS, 0, s>>>(
            p, K, xq, xs, nt);
    }
};

/* The integer GEMV over parts for nt <= FG_GPU_GEMV_SLOTS tokens whose
 * activations are in the scratch, quantized. */
template <int TYPE> static void mmvq_run(const fg_mmvq_parts &p, int64_t K, const int8_t *xq, const float2 *xs,
                                         int32_t nt, int warp, bool inv, cudaStream_t s)
{
    /* batch-invariant: one instantiation (one compiled arithmetic) for every size */
    if (inv) mmvq_launch<TYPE, FG_GPU_GEMV_SLOTS>::run(p, K, xq, xs, nt, warp, s);
    else if (nt == 1) mmvq_launch<TYPE, 1>::run(p, K, xq, xs, nt, warp, s);
    else if (nt == 2) mmvq_launch<TYPE, 2>::run(p, K, xq, xs, nt, warp, s);
    else if (nt <= 4) mmvq_launch<TYPE, 4>::run(p, K, xq, xs, nt, warp, s);
    else mmvq_launch<TYPE, FG_GPU_GEMV_SLOTS>::run(p, K, xq, xs, nt, warp, s);
}

/* Quantizes nt activation rows into the scratch, as the integer GEMV reads
 * them. */
static void quantize_q8(const float *x, int64_t ldx, int64_t K, int32_t nt, void *scratch, cudaStream_t s)
{
    int8_t *xq = (int8_t *)scratch;
    float2 *xs = fg_gpu_q8_scales(scratch, K);
    int64_t threads = 32 * nt * (K / 32);
    fg_quantize_q8_kernel<<<(unsigned)((threads + 255) / 256), 256, 0, s>>>(x, ldx, K, nt, xq, xs);
}

#if !defined(FG_GPU_HIP)
/* The types the tensor-core GEMM computes with (mmq.cuh, CUDA only). */
static constexpr bool has_mmq(int type)
{
    return type == FG_DQ_Q4_0 || type == FG_DQ_Q8_0 || type == FG_DQ_MXFP4;
}
#endif

/* Whether T tokens of this type take the tensor-core GEMM: from
 * FG_GPU_MMQ_MIN_T tokens, or always in batch-invariant mode (kernels.h). */
static bool use_mmq(int type, int32_t T, bool inv)
{
#if defined(FG_GPU_HIP)
    (void)type, (void)T, (void)inv;
    return false;
#else
    return (inv || (T >= FG_GPU_MMQ_MIN_T && T <= FG_GPU_MMQ_MAX_T)) && has_mmq(type);
#endif
}

/* The float capacity of the split-K partial sums in the matmul scratch
 * (32 MiB; none without the GEMM). */
#if defined(FG_GPU_HIP)
enum { MMQ_PARTIAL_FLOATS = 0 };
#else
enum { MMQ_PARTIAL_FLOATS = 1 << 23 };
#endif

/* The scratch: the GEMV's int8 activations, then the GEMM's f16 ones (none
 * without the GEMM), then the partial sums (fg_gpu_matmul_scratch). */
static size_t q8_bytes(int64_t K)
{
    return ((size_t)FG_GPU_Q8_ROWS * (size_t)(K + (K / 32) * (int64_t)sizeof(float2)) + 255) / 256 * 256;
}

static size_t f16_bytes(int64_t K)
{
    return MMQ_PARTIAL_FLOATS ? (size_t)FG_GPU_MMQ_MAX_T * (size_t)K * sizeof(__half) : 0;
}


#if !defined(FG_GPU_HIP)
static __half *mmq_f16(void *scratch, int64_t K)
{
    return (__half *)((uint8_t *)scratch + q8_bytes(K));
}

static float *mmq_partial(void *scratch, int64_t K)
{
    return (float *)((uint8_t *)scratch + q8_bytes(K) + f16_bytes(K));
}

/* A device attribute of the calling thread's device, cached per device
 * (fallback if the runtime cannot tell, then not cached). The caches are
 * written before any launch of a step by the one thread that runs the
 * backend. */
enum { MMQ_MAX_DEVICES = 64 };

static int mmq_device(void)
{
    int d = 0;
    return cudaGetDevice(&d) == cudaSuccess && d >= 0 && d < MMQ_MAX_DEVICES ? d : -1;
}

static int mmq_attr(int cache[MMQ_MAX_DEVICES], cudaDeviceAttr attr, int fallback)
{
    int d = mmq_device(), v = 0;
    if (d >= 0 && cache[d]) return cache[d];
    if (d < 0 || cudaDeviceGetAttribute(&v, attr, d) != cudaSuccess || v <= 0) return fallback;
    return cache[d] = v;
}

/* K splits for a launch of `tiles` row tiles (`total` rows): enough blocks
 * for two waves of the GPU's SMs, at most 8 and two groups a split, within
 * the partial sums' room at the largest batch. */
static int mmq_splits(int64_t tiles, int64_t total, int n_groups)
{
    static int sms[MMQ_MAX_DEVICES];
    int n_sm = mmq_attr(sms, cudaDevAttrMultiProcessorCount, 1);
    int64_t want = (2 * n_sm + tiles - 1) / tiles;
    int splits = (int)(want < 8 ? want : 8);
    while (splits > 1 && (splits * 2 > n_groups || (int64_t)splits * FG_GPU_MMQ_MAX_T * total > MMQ_PARTIAL_FLOATS))
        splits--;
    return splits;
}

template <int TYPE, int NT> static void mmq_launch(const fg_mmq_parts &p, int64_t K, const __half *xh, int32_t T,
                                                   float *partial, cudaStream_t s)
{
    static bool sized[MMQ_MAX_DEVICES]; /* the dynamic shared memory above 48 KB, once a device */
    int bytes = mmq_smem<TYPE, NT>::BYTES, d = mmq_device();
    if (d < 0 || !sized[d]) {
        if (cudaFuncSetAttribute(fg_mmq_kernel<TYPE, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) !=
            cudaSuccess)
            return; /* no launch: the caller's cudaGetLastError reports why */
        if (d >= 0) sized[d] = true;
    }
    int64_t tiles = p.tile_first[p.rows.n], total = p.rows.first[p.rows.n];
    int n_groups = (int)((K / 32 + 7) / 8), splits = mmq_splits(tiles, total, n_groups);
    int per = (n_groups + splits - 1) / splits;
    splits = (n_groups + per - 1) / per; /* no empty split */
    dim3 grid((unsigned)((T + NT - 1) / NT), (unsigned)tiles, (unsigned)splits);
    fg_mmq_kernel<TYPE, NT><<<grid, MMQ_THREADS, bytes, s>>>(p, K, xh, T, splits > 1 ? partial : NULL, per);
    if (splits > 1)
        fg_mmq_reduce_kernel<<<dim3((unsigned)((total + 127) / 128), (unsigned)T), 128, 0, s>>>(p.rows, partial, splits,
                                                                                              T);
}
#endif

/* The tensor-core GEMM over parts for up to FG_GPU_MMQ_MAX_T tokens of
 * x (K floats at stride ldx), converted to f16 in the scratch first: token
 * tiles of 16, 32 or 64. */
template <int TYPE> static void mmq_run(const fg_mmvq_parts &rows, int64_t K, const float *x, int64_t ldx, int32_t T,
                                        void *scratch, cudaStream_t s)
{
#if !defined(FG_GPU_HIP)
    if constexpr (has_mmq(TYPE)) {
        __half *xh = mmq_f16(scratch, K);
        float *partial = mmq_partial(scratch, K);
        fg_mmq_f16_kernel<<<dim3((unsigned)((K / 4 + 127) / 128), (unsigned)T), 128, 0, s>>>(x, ldx, K, T, xh);
        fg_mmq_parts p = {};
        p.rows = rows;
        for (int i = 0; i < rows.n; i++)
            p.tile_first[i + 1] = p.tile_first[i] + (rows.first[i + 1] - rows.first[i] + MMQ_ROWS - 1) / MMQ_ROWS;
        /* The largest token tile the batch needs whose stages fit the
         * device's shared memory (sm_89: 99 KB, too little for Q8_0 x 64). */
        static int smems[MMQ_MAX_DEVICES];
        int smem = mmq_attr(smems, cudaDevAttrMaxSharedMemoryPerBlockOptin, 48 * 1024);
        if (T <= 16 || mmq_smem<TYPE, 32>::BYTES > smem) mmq_launch<TYPE, 16>(p, K, xh, T, partial, s);
        else if (T <= 32 || mmq_smem<TYPE, 64>::BYTES > smem) mmq_launch<TYPE, 32>(p, K, xh, T, partial, s);
        else mmq_launch<TYPE, 64>(p, K, xh, T, partial, s);
    }
#else
    (void)rows, (void)K, (void)x, (void)ldx, (void)T, (void)scratch, (void)s;
#endif
}

template <int TYPE> struct mm_launch {
    /* The rows t0 .. t0+nt-1 as the one part of a launch. */
    static fg_mmvq_parts one_part(const mm_args &a, int32_t t0)
    {
        fg_mmvq_parts p = {};
        p.n = 1;
        p.first[1] = a.N;
        p.p[0] = {a.w, a.row_bytes, a.bias, a.add ? a.add + t0 * a.ldadd : NULL, a.ldadd, a.y + t0 * a.ldy, a.ldy};
        return p;
    }

    /* The integer GEMV of rows t0 .. t0+nt-1, whose int8 activations are
     * rows s0 .. of the scratch. */
    static void mmvq(const mm_args &a, int32_t t0, int32_t nt, int32_t s0)
    {
        const int8_t *xq = (const int8_t *)a.scratch + s0 * a.K;
        const float2 *xs = fg_gpu_q8_scales(a.scratch, a.K) + s0 * (a.K / 32);
        mmvq_run<TYPE>(one_part(a, t0), a.K, xq, xs, nt, a.warp, a.inv, a.s);
    }

    /* NT token slots; one block of 128 threads per weight row. */
    template <int NT> static void gemv(const mm_args &a, const float *x, const float *add, float *y, int32_t nt)
    {
        gemv_kernel<TYPE, NT><<<(unsigned)a.N, 128, 0, a.s>>>(a.w, a.row_bytes, a.N, a.K, x, a.ldx, nt, a.bias, add,
                                                              a.ldadd, y, a.ldy);
    }

    /* The kernel a.k names (fg_gpu_matmul_pick's choice for this type). */
    static void run(const mm_args &a)
    {
        enum { S = FG_GPU_GEMV_SLOTS };
        if constexpr (has_mmvq(TYPE)) {
            switch (a.k) {
            case FG_GPU_MM_MMQ:
                for (int32_t t0 = 0; t0 < a.T; t0 += FG_GPU_MMQ_MAX_T)
                    mmq_run<TYPE>(one_part(a, t0), a.K, a.x + t0 * a.ldx, a.ldx,
                                  a.T - t0 < FG_GPU_MMQ_MAX_T ? a.T - t0 : FG_GPU_MMQ_MAX_T, a.scratch, a.s);
                return;
            case FG_GPU_MM_MMVQ:
                if (!a.x_ready) quantize_q8(a.x, a.ldx, a.K, a.T, a.scratch, a.s);
                for (int32_t t0 = 0; t0 < a.T; t0 += S) mmvq(a, t0, a.T - t0 < S ? a.T - t0 : S, t0);
                return;
            case FG_GPU_MM_MMVQ_CHUNKS: /* rows quantized FG_GPU_Q8_ROWS at a time */
                for (int32_t c0 = 0; c0 < a.T; c0 += FG_GPU_Q8_ROWS) {
                    int32_t nc = a.T - c0 < FG_GPU_Q8_ROWS ? a.T - c0 : FG_GPU_Q8_ROWS;
                    quantize_q8(a.x + c0 * a.ldx, a.ldx, a.K, nc, a.scratch, a.s);
                    for (int32_t t0 = c0; t0 < c0 + nc; t0 += S) mmvq(a, t0, c0 + nc - t0 < S ? c0 + nc - t0 : S, t0 - c0);
                }
                return;
            default: break;
            }
        }
        if (a.k == FG_GPU_MM_GEMM) {
            dim3 grid((unsigned)((a.N + TILE_N - 1) / TILE_N), (unsigned)((a.T + TILE_T - 1) / TILE_T));
            gemm_kernel<TYPE><<<grid, TILE_THREADS, 0, a.s>>>(a.w, a.row_bytes, a.N, a.K, a.x, a.ldx, a.T, a.bias,
                                                             a.add, a.ldadd, a.y, a.ldy);
            return;
        }
        for (int32_t t0 = 0; t0 < a.T; t0 += S) {
            int32_t nt = a.T - t0 < S ? a.T - t0 : S;
            const float *x = a.x + t0 * a.ldx;
            const float *add = a.add ? a.add + t0 * a.ldadd : NULL;
            float *y = a.y + t0 * a.ldy;
            if (a.inv) gemv<S>(a, x, add, y, nt); /* one instantiation for every size */
            else if (nt == 1) gemv<1>(a, x, add, y, nt);
            else if (nt == 2) gemv<2>(a, x, add, y, nt);
            else if (nt <= 4) gemv<4>(a, x, add, y, nt);
            else gemv<S>(a, x, add, y, nt);
        }
    }
};

/* Rows must split into whole blocks and whole groups of eight. */
bool fg_gpu_type_ok(int type, int64_t k)
{
    switch (type) {
    case FG_DQ_F32: case FG_DQ_F16: case FG_DQ_BF16: return k % 8 == 0;
    case FG_DQ_Q4_0: case FG_DQ_Q4_1: case FG_DQ_Q5_0: case FG_DQ_Q5_1: case FG_DQ_Q8_0: case FG_DQ_MXFP4:
        return k % 32 == 0;
    case FG_DQ_Q4_K: case FG_DQ_Q5_K: case FG_DQ_Q6_K: return k % 256 == 0;
    }
    return false;
}

size_t fg_gpu_matmul_scratch(int64_t K)
{
    return q8_bytes(K) + f16_bytes(K) + (size_t)MMQ_PARTIAL_FLOATS * sizeof(float);
}

/* Which kernel a matmul takes. The integer kernels need the scratch (their
 * int8 activations, the GEMM's f16 ones). At prefill sizes the types of the
 * tensor-core GEMM take it, the others cuBLAS where blas (CUDA), else the
 * tiled GEMM; batch-invariant mode keeps one kernel per type at every size
 * (kernels.h). */
fg_gpu_mm_kernel fg_gpu_matmul_pick(int type, int32_t T, int64_t K, bool inv, bool scratch, bool blas)
{
    if (scratch && has_mmvq(type)) {
        if (use_mmq(type, T, inv)) return FG_GPU_MM_MMQ;
        if (T <= GEMV_MAX_T) return FG_GPU_MM_MMVQ;
        if (inv) return FG_GPU_MM_MMVQ_CHUNKS;
    }
    if (!inv && T > GEMV_MAX_T) {
        if (blas && K % 8 == 0) return FG_GPU_MM_BLAS;
        if (K % TILE_K == 0) return FG_GPU_MM_GEMM;
    }
    return FG_GPU_MM_GEMV;
}

cudaError_t fg_gpu_matmul(fg_gpu_mm_kernel k, int type, const void *w, size_t row_bytes, int64_t N, int64_t K,
                          const float *x, int64_t ldx, int32_t T, const float *bias, const float *add, int64_t ldadd,
                          float *y, int64_t ldy, void *scratch, bool x_ready, bool inv, int warp, cudaStream_t s)
{
    bool integer = k == FG_GPU_MM_MMQ || k == FG_GPU_MM_MMVQ || k == FG_GPU_MM_MMVQ_CHUNKS;
    if (k == FG_GPU_MM_BLAS || (integer && !scratch)) return cudaErrorInvalidValue;
    mm_args a = {.k = k, .scratch = scratch, .x_ready = x_ready, .inv = inv, .w = (const uint8_t *)w,
                 .row_bytes = row_bytes, .N = N, .K = K, .x = x, .ldx = ldx, .T = T, .bias = bias, .add = add,
                 .ldadd = ldadd, .y = y, .ldy = ldy, .warp = warp, .s = s};
    if (!FG_DQ_DISPATCH(type, mm_launch, a)) return cudaErrorInvalidValue;
    return cudaGetLastError();
}

template <int TYPE> struct mm_n_launch {
    static void run(fg_gpu_mm_kernel k, const fg_mmvq_parts &p, int64_t K, const float *x, int64_t ldx, void *scratch,
                    int32_t T, int warp, cudaStream_t s)
    {
        if constexpr (has_mmvq(TYPE)) {
            if (k == FG_GPU_MM_MMQ) mmq_run<TYPE>(p, K, x, ldx, T, scratch, s);
            else mmvq_run<TYPE>(p, K, (const int8_t *)scratch, fg_gpu_q8_scales(scratch, K), T, warp, false, s);
        }
    }
};

cudaError_t fg_gpu_matmul_n(fg_gpu_mm_kernel k, int type, int n, const fg_gpu_mm_out *outs, int64_t K, const float *x,
                            int64_t ldx, int32_t T, void *scratch, bool x_ready, int warp, cudaStream_t s)
{
    if (n < 1 || n > FG_MMVQ_MAX_PARTS || !scratch || !fg_gpu_matmul_n_ok(k, T) ||
        fg_gpu_matmul_pick(type, T, K, false, true, false) != k)
        return cudaErrorInvalidValue;
    fg_mmvq_parts p = {};
    p.n = n;
    for (int i = 0; i < n; i++) {
        p.first[i + 1] = p.first[i] + outs[i].N;
        p.p[i] = {(const uint8_t *)outs[i].w, outs[i].row_bytes, outs[i].bias, NULL, 0, outs[i].y, outs[i].ldy};
    }
    if (!x_ready && k == FG_GPU_MM_MMVQ) quantize_q8(x, ldx, K, T, scratch, s);
    if (!FG_DQ_DISPATCH(type, mm_n_launch, k, p, K, x, ldx, scratch, T, warp, s)) return cudaErrorInvalidValue;
    return cudaGetLastError();
}

/* ---- Regrouping Q4_0, Q8_0 and MXFP4 at upload --------------------------------- */

size_t fg_gpu_weight_row_bytes(int type, int64_t k)
{
    size_t groups = (size_t)((k / 32 + 7) / 8);
    if (type == FG_DQ_Q4_0) return groups * FG_Q4_0_GROUP;
    if (type == FG_DQ_Q8_0) return groups * FG_Q8_0_GROUP;
    if (type == FG_DQ_MXFP4) return groups * FG_MXFP4_GROUP;
    return 0;
}

/* Four bytes at any address, little-endian. */
static __device__ __forceinline__ uint32_t ld32_a1(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One thread per group of eight blocks of BB bytes (a scale of SB bytes:
 * f16, or MXFP4's E8M0 byte; then QW words of codes), in place: the group's
 * GGUF bytes are read whole before its regrouped bytes (same span: 8 BB =
 * 8 SB + 32 QW) are written. Blocks past the row's nb (padding) become
 * zero. */
template <int BB, int SB, int QW>
__global__ void regroup_kernel(uint8_t *w, size_t row_bytes, int64_t rows, int64_t nb)
{
    static_assert(8 * BB == 8 * SB + 32 * QW, "a group spans its eight blocks");
    int64_t groups = (nb + 7) / 8, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * groups) return;
    int64_t r = i / groups, s = i % groups;
    uint8_t *p = w + (size_t)r * row_bytes + (size_t)s * (8 * BB);
    int nv = nb - 8 * s < 8 ? (int)(nb - 8 * s) : 8;
    uint16_t d[8];
    uint32_t q[8][QW];
#pragma unroll
    for (int j = 0; j < 8; j++) {
        d[j] = j >= nv ? 0 : SB == 2 ? fg_ld16(p + BB * j) : p[BB * j];
#pragma unroll
        for (int k = 0; k < QW; k++)
            q[j][k] = j >= nv ? 0 : SB == 2 ? fg_ld32_a2(p + BB * j + 2 + 4 * k) : ld32_a1(p + BB * j + 1 + 4 * k);
    }
#pragma unroll
    for (int j = 0; j < 8; j++) {
        if (SB == 2) *(uint16_t *)(p + 2 * j) = d[j];
        else p[j] = (uint8_t)d[j];
#pragma unroll
        for (int k = 0; k < QW; k++) *(uint32_t *)(p + 8 * SB + 4 * QW * j + 4 * k) = q[j][k];
    }
}

cudaError_t fg_gpu_regroup(int type, void *w, size_t row_bytes, int64_t rows, int64_t k, cudaStream_t s)
{
    int64_t nb = k / 32, n = rows * ((nb + 7) / 8);
    unsigned blocks = (unsigned)((n + 127) / 128);
    if (type == FG_DQ_Q4_0) regroup_kernel<18, 2, 4><<<blocks, 128, 0, s>>>((uint8_t *)w, row_bytes, rows, nb);
    else if (type == FG_DQ_Q8_0) regroup_kernel<34, 2, 8><<<blocks, 128, 0, s>>>((uint8_t *)w, row_bytes, rows, nb);
    else if (type == FG_DQ_MXFP4) regroup_kernel<17, 1, 4><<<blocks, 128, 0, s>>>((uint8_t *)w, row_bytes, rows, nb);
    else return cudaErrorInvalidValue;
    return cudaGetLastError();
}

/* ---- Embedding ------------------------------------------------------------------- */

template <int TYPE>
__global__ void embed_kernel(const uint8_t *__restrict__ table, size_t row_bytes, int64_t ne0,
                             const int32_t *__restrict__ ids, float *out, int64_t ldo)
{
    int64_t t = blockIdx.y, g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (8 * g >= ne0) return;
    float v[8];
    fg_dq<TYPE>::get8(table + (size_t)ids[t] * row_bytes, g, v);
#pragma unroll
    for (int i = 0; i < 8; i++) out[t * ldo + 8 * g + i] = v[i];
}

struct embed_args {
    const uint8_t *table;
    size_t row_bytes;
    int64_t ne0;
    const int32_t *ids;
    int32_t n;
    float *out;
    int64_t ldo;
    cudaStream_t s;
};

template <int TYPE> struct embed_launch {
    static void run(const embed_args &a)
    {
        dim3 grid((unsigned)((a.ne0 / 8 + 127) / 128), (unsigned)a.n);
        embed_kernel<TYPE><<<grid, 128, 0, a.s>>>(a.table, a.row_bytes, a.ne0, a.ids, a.out, a.ldo);
    }
};

cudaError_t fg_gpu_embed(int type, const void *table, size_t row_bytes, int64_t ne0, const int32_t *ids, int32_t n,
                         float *out, int64_t ldo, cudaStream_t s)
{
    embed_args a = {(const uint8_t *)table, row_bytes, ne0, ids, n, out, ldo, s};
    if (!FG_DQ_DISPATCH(type, embed_launch, a)) return cudaErrorInvalidValue;
    return cudaGetLastError();
}
