/*
 * mmq.cuh — tensor-core GEMM on Q4_0, Q8_0 and MXFP4 weights (CUDA, sm_80 and
 * up), for batches of FG_GPU_MMQ_MIN_T to FG_GPU_MMQ_MAX_T tokens:
 * batched decoding, where the GEMV would read the weights once per eight
 * tokens (and spend dp4a work on each) and the cuBLAS path would
 * dequantize all of them to a buffer every step.
 *
 * The weights are dequantized to f16 in registers as the fragments are
 * built ((q - 8) d, or q d: exact small integers times d rounded to f16, as
 * the cuBLAS path's f16 copy), and multiplied with f16 activations by
 * mma.m16n8k16 into f32 accumulators. (An int8 mma on int8 activations
 * was tried first: its per-32-block scaling of every output element cost
 * 37 instructions per mma and ran at 15% of the bandwidth.)
 *
 * A block of 256 threads (eight warps) computes 128 rows x NT tokens (NT
 * 16, 32 or 64), each warp 16 rows x NT: every block reads the step's
 * activations once for 128 rows (with 64 rows, at 64 tokens, the
 * activations' traffic from L2 was 3.6 times the weights'), and two blocks
 * fit an SM (the kernel is latency-bound: 4 warps an SM ran at 10% of the
 * SM's warps, stalled on dependent instructions). K goes in steps of one regrouped group
 * (eight 32-blocks, 256 weights: dequant.cuh), double-buffered in shared
 * memory by cp.async: the 128 rows' group bytes and the NT tokens' 256 f16
 * activations, rows padded so that the fragment loads are free of bank
 * conflicts. Blocks past a row's end (a last group of fewer than eight)
 * have zero weights and zero-filled activations.
 *
 * Within each 16-wide k step a thread's four k slots (2q, 2q+1, 8+2q,
 * 9+2q) hold elements 4q..4q+3 of the step, for the weights and the
 * activations alike (the dot product does not depend on the order): the
 * activations are then one 64-bit load, and a Q4_0 thread's four weights
 * are the low (first step of a block) or high (second) nibbles of one
 * word of the block.
 *
 * The launch covers up to three matrices that read the same activations,
 * as the GEMV's (fg_mmvq_parts); a block's 128 rows are all of one part.
 *
 * Matrices of few row tiles (4096 rows: 32 blocks, for 132 SMs) split K
 * over grid.z so that every SM has blocks to run; the splits' sums meet in
 * fg_mmq_reduce_kernel. The split count depends on the matrix and the GPU
 * only, not on the token count, so a row's arithmetic is the same in a
 * batch of 9 tokens as of 256.
 */
#ifndef FG_BACKEND_GPU_MMQ_CUH
#define FG_BACKEND_GPU_MMQ_CUH

#if !defined(FG_GPU_HIP)

#include "backend/gpu/kernels/mmvq.cuh"

/* MT m16 tiles (16 MT rows) a warp, MMQ_THREADS / 32 warps a block. */
enum { MMQ_MT = 1, MMQ_THREADS = 256, MMQ_ROWS = 16 * MMQ_MT * (MMQ_THREADS / 32), MMQ_XSTRIDE = 544 };

struct fg_mmq_parts {
    fg_mmvq_parts rows;
    int64_t tile_first[FG_MMVQ_MAX_PARTS + 1]; /* part i's blocks: tile_first[i] .. tile_first[i+1]-1 */
};

/* A group's bytes and their row stride in shared memory: 144 and 272 are 4
 * words mod 32, so the 32-bit fragment loads of rows g = 0..7 fall in
 * different banks. The tokens' rows (512 bytes of f16) are padded to 544, 8
 * words mod 32, for their 64-bit loads by half-warps of rows 0..3. */
template <int TYPE> struct mmq_type;
template <> struct mmq_type<FG_DQ_Q4_0> {
    enum { GROUP = FG_Q4_0_GROUP, STRIDE = FG_Q4_0_GROUP };
};
template <> struct mmq_type<FG_DQ_Q8_0> {
    enum { GROUP = FG_Q8_0_GROUP, STRIDE = FG_Q8_0_GROUP };
};
/* MXFP4's 136-byte groups are 8-byte aligned in memory (copied in 8-byte
 * pieces) and padded to Q4_0's conflict-free 144 in shared memory. */
template <> struct mmq_type<FG_DQ_MXFP4> {
    enum { GROUP = FG_MXFP4_GROUP, STRIDE = FG_Q4_0_GROUP };
};

/* One stage: W the rows' group bytes, X the tokens' f16 activations. */
template <int TYPE, int NT> struct mmq_smem {
    enum {
        W = MMQ_ROWS * mmq_type<TYPE>::STRIDE,
        X = NT * MMQ_XSTRIDE,
        STAGE = W + X,
        BYTES = 2 * STAGE,
    };
};

static __device__ __forceinline__ void mmq_cp16(void *dst, const void *src)
{
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}

static __device__ __forceinline__ void mmq_cp8(void *dst, const void *src)
{
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(d), "l"(src) : "memory");
}

static __device__ __forceinline__ void mmq_commit()
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> static __device__ __forceinline__ void mmq_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* c += A (16 x 16, row) B (16 x 8, col), f16 in, f32 out. Not volatile:
 * pure, so the compiler may interleave the mmas with the loads. */
static __device__ __forceinline__ void mmq_mma(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t mmq_h2u(__half2 h)
{
    return *(uint32_t *)&h;
}

/* Two f16 values 1024 + n (n < 256, in the low bytes of u's two halves)
 * minus `bias`, times d: exact integers times d, rounded once to f16. */
static __device__ __forceinline__ uint32_t mmq_dq2(uint32_t u, __half2 bias, __half2 d)
{
    __half2 h = *(__half2 *)&u;
    return mmq_h2u(__hmul2(__hsub2(h, bias), d));
}

/* The A fragment words of one row for k step h (0, 1) of 32-block i: its
 * elements 16h + 4q .. 16h + 4q + 3, dequantized: lo = the first two,
 * hi = the last two. */
template <int TYPE>
static __device__ __forceinline__ void mmq_weights(const uint8_t *row, int i, int h, int q, uint32_t *lo,
                                                   uint32_t *hi)
{
    if constexpr (TYPE == FG_DQ_MXFP4) {
        /* Codes as Q4_0's nibbles (elements 16h + 4q.. are nibble h of bytes
         * 4q..4q+3). A doubled E2M1 value is an integer 0..12 whose f16 has
         * a zero low byte: its high byte is looked up from the code's low
         * three bits (0x00 0x3c 0x40 0x42 0x44 0x46 0x48 0x4a), bit 3 the
         * sign; times the block's 2^(e - 128) in f16, exact while e - 128
         * is within f16's -24..15 (real weights sit near -13..-3; the
         * cuBLAS path's f16 copy has the same range). */
        __half2 d = __float2half2_rn(fg_e8m0_half(row[i]));
        uint32_t c = *(const uint32_t *)(row + 8 + 16 * i + 4 * q) >> (4 * h);
        uint32_t idx = c & 0x07070707u, t = idx | idx >> 4;
        uint32_t hb = __byte_perm(0x42403c00u, 0x4a484644u, __byte_perm(t, 0, 0x4420)) | (c & 0x08080808u) << 4;
        uint32_t l = __byte_perm(hb, 0, 0x1404), u = __byte_perm(hb, 0, 0x3424); /* 0 hb0 0 hb1, 0 hb2 0 hb3 */
        *lo = mmq_h2u(__hmul2(*(const __half2 *)&l, d));
        *hi = mmq_h2u(__hmul2(*(const __half2 *)&u, d));
        return;
    }
    __half2 d = __half2half2(*(const __half *)(row + 2 * i));
    if constexpr (TYPE == FG_DQ_Q4_0) {
        /* element e < 16: low nibble of byte e; e >= 16: high nibble of byte
         * e - 16; bytes reordered b0 b2 b1 b3 so that one mask takes b0, b1 */
        uint32_t w = __byte_perm(*(const uint32_t *)(row + 16 + 16 * i + 4 * q), 0, 0x3120) >> (4 * h);
        const __half2 bias = __floats2half2_rn(1032.0f, 1032.0f);
        *lo = mmq_dq2((w & 0x000f000fu) | 0x64006400u, bias, d);
        *hi = mmq_dq2(((w >> 8) & 0x000f000fu) | 0x64006400u, bias, d);
    } else {
        /* int8 codes, offset to 0..255 and placed under the f16 exponent of 1024 */
        uint32_t w = *(const uint32_t *)(row + 16 + 32 * i + 16 * h + 4 * q) ^ 0x80808080u;
        const __half2 bias = __floats2half2_rn(1152.0f, 1152.0f);
        *lo = mmq_dq2(__byte_perm(w, 0x64646464u, 0x4140), bias, d);
        *hi = mmq_dq2(__byte_perm(w, 0x64646464u, 0x4342), bias, d);
    }
}

/* Queues group gi's weights and activations into stage buffer st. */
template <int TYPE, int NT>
static __device__ __forceinline__ void mmq_load(uint8_t *st, const uint8_t *w, size_t row_bytes, int64_t rows_left,
                                                const __half *x, int64_t K, int32_t t_left, int gi)
{
    enum { G = mmq_type<TYPE>::GROUP, WS = mmq_type<TYPE>::STRIDE, CB = G % 16 ? 8 : 16, WC = G / CB };
    uint8_t *sw = st, *sx = st + mmq_smem<TYPE, NT>::W;
    for (int c = threadIdx.x; c < MMQ_ROWS * WC; c += MMQ_THREADS) {
        int r = c / WC, j = c % WC;
        int64_t rr = r < rows_left ? r : rows_left - 1; /* rows past the end repeat the last; never stored */
        const uint8_t *src = w + (size_t)rr * row_bytes + (size_t)gi * G + CB * j;
        if (CB == 16) mmq_cp16(sw + r * WS + 16 * j, src);
        else mmq_cp8(sw + r * WS + 8 * j, src);
    }
    for (int c = threadIdx.x; c < NT * 32; c += MMQ_THREADS) {
        int t = c / 32, j = c % 32;
        int64_t k = 256 * (int64_t)gi + 8 * j;
        int tt = t < t_left ? t : t_left - 1;
        uint8_t *d = sx + t * MMQ_XSTRIDE + 16 * j;
        if (k < K) mmq_cp16(d, x + (int64_t)tt * K + k);
        else *(int4 *)d = make_int4(0, 0, 0, 0);
    }
}

template <int TYPE, int NT>
__global__ void __launch_bounds__(MMQ_THREADS) fg_mmq_kernel(const fg_mmq_parts P, int64_t K,
                                                             const __half *__restrict__ xh, int32_t T,
                                                             float *__restrict__ partial, int groups_per_split)
{
    enum { WS = mmq_type<TYPE>::STRIDE, NJ = NT / 8 };
    extern __shared__ __align__(16) uint8_t mmq_sm[];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, q = lane % 4;

    int pi = 0;
    /* token tiles vary fastest, so the blocks that read a row tile's weights
     * run together and the later ones find them in L2 */
    const int64_t tile = blockIdx.y;
    while (pi + 1 < P.rows.n && tile >= P.tile_first[pi + 1]) pi++;
    const fg_mmvq_part &part = P.rows.p[pi];
    const int64_t N = P.rows.first[pi + 1] - P.rows.first[pi], row0 = (tile - P.tile_first[pi]) * MMQ_ROWS;
    const int32_t t0 = (int32_t)blockIdx.x * NT;
    const uint8_t *w = part.w + (size_t)row0 * part.row_bytes;
    const __half *x = xh + (int64_t)t0 * K;
    const int64_t rows_left = N - row0;
    const int32_t t_left = T - t0;
    /* Split K: this block's groups g_first .. g_end-1; its sums go to
     * partial[z][t][row of the launch] for fg_mmq_reduce_kernel. */
    const int g_first = (int)blockIdx.z * groups_per_split, n_all = (int)((K / 32 + 7) / 8);
    const int n_groups = (n_all - g_first < groups_per_split ? n_all - g_first : groups_per_split);

    float acc[MMQ_MT][NJ][4];
#pragma unroll
    for (int m = 0; m < MMQ_MT; m++)
#pragma unroll
        for (int j = 0; j < NJ; j++) acc[m][j][0] = acc[m][j][1] = acc[m][j][2] = acc[m][j][3] = 0.0f;

    mmq_load<TYPE, NT>(mmq_sm, w, part.row_bytes, rows_left, x, K, t_left, g_first);
    mmq_commit();
    for (int gi = 0; gi < n_groups; gi++) {
        uint8_t *st = mmq_sm + (gi % 2) * mmq_smem<TYPE, NT>::STAGE;
        if (gi + 1 < n_groups) {
            mmq_load<TYPE, NT>(mmq_sm + ((gi + 1) % 2) * mmq_smem<TYPE, NT>::STAGE, w, part.row_bytes, rows_left, x,
                               K, t_left, g_first + gi + 1);
            mmq_commit();
            mmq_wait<1>();
        } else {
            mmq_wait<0>();
        }
        __syncthreads();
        /* the warp's rows: m tile m holds rows 16 (MT warp + m) + g and + 8 */
        const uint8_t *r0 = st + (16 * MMQ_MT * warp + g) * WS, *sx = st + mmq_smem<TYPE, NT>::W;
#pragma unroll 2
        for (int i = 0; i < 8; i++) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                uint32_t a[MMQ_MT][4];
#pragma unroll
                for (int m = 0; m < MMQ_MT; m++) {
                    mmq_weights<TYPE>(r0 + 16 * m * WS, i, h, q, &a[m][0], &a[m][2]);
                    mmq_weights<TYPE>(r0 + (16 * m + 8) * WS, i, h, q, &a[m][1], &a[m][3]);
                }
#pragma unroll
                for (int j = 0; j < NJ; j++) {
                    uint2 b = *(const uint2 *)(sx + (8 * j + g) * MMQ_XSTRIDE + 2 * (32 * i + 16 * h + 4 * q));
#pragma unroll
                    for (int m = 0; m < MMQ_MT; m++) mmq_mma(acc[m][j], a[m][0], a[m][1], a[m][2], a[m][3], b.x, b.y);
                }
            }
        }
        __syncthreads(); /* the stage is refilled next iteration */
    }

#pragma unroll
    for (int m = 0; m < MMQ_MT; m++) {
#pragma unroll
        for (int j = 0; j < NJ; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int64_t n = row0 + 16 * (MMQ_MT * warp + m) + g + (e >= 2 ? 8 : 0);
                int32_t t = t0 + 8 * j + 2 * q + (e % 2);
                if (n >= N || t >= T) continue;
                float v = acc[m][j][e];
                if (partial) {
                    int64_t total = P.rows.first[P.rows.n];
                    partial[((int64_t)blockIdx.z * T + t) * total + P.rows.first[pi] + n] = v;
                    continue;
                }
                if (part.bias) v += part.bias[n];
                if (part.add) v += part.add[t * part.ldadd + n];
                part.y[t * part.ldy + n] = v;
            }
        }
    }
}

/* x rows (T of them, K floats at stride ldx) to f16 xh[T][K]. */
static __global__ void fg_mmq_f16_kernel(const float *__restrict__ x, int64_t ldx, int64_t K, int32_t T, __half *xh)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (4 * i >= K) return;
    float4 v = *(const float4 *)(x + t * ldx + 4 * i);
    __half2 *o = (__half2 *)(xh + t * K + 4 * i);
    o[0] = __floats2half2_rn(v.x, v.y);
    o[1] = __floats2half2_rn(v.z, v.w);
}

/* y = the sum of the splits' partial sums, in split order (the same
 * rounding whatever the batch), plus bias and residual: one thread per
 * (token, row of the launch). */
static __global__ void fg_mmq_reduce_kernel(const fg_mmvq_parts P, const float *__restrict__ partial, int splits, int32_t T)
{
    int64_t total = P.first[P.n], r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int32_t t = blockIdx.y;
    if (r >= total) return;
    int pi = 0;
    while (pi + 1 < P.n && r >= P.first[pi + 1]) pi++;
    const fg_mmvq_part &part = P.p[pi];
    int64_t n = r - P.first[pi];
    float v = 0.0f;
    for (int z = 0; z < splits; z++) v += partial[((int64_t)z * T + t) * total + r];
    if (part.bias) v += part.bias[n];
    if (part.add) v += part.add[t * part.ldadd + n];
    part.y[t * part.ldy + n] = v;
}

#endif /* !FG_GPU_HIP */
#endif
