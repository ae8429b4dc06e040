/*
 * mmvq.cuh — integer-dot GEMV for Q4_0, Q4_1, Q8_0, Q4_K and MXFP4, used by
 * matmul.cu for small batches.
 *
 * The activations are first quantized to int8 per 32 elements (d = max|x| /
 * 127, q = round(x / d)), so one dp4a multiplies four weight codes by four
 * activation codes and adds them in one instruction, and the activation
 * bytes read per weight drop from 4 to 1. The quantizer also stores each
 * block's sum of activation codes, which the offsets of Q4_0, Q4_1 and
 * Q4_K need once per block.
 *   Q4_0: w = d (q - 8):        sum w x = d dx (sum q qx - 8 sum qx)
 *   Q4_1: w = d q + m:          sum w x = dx (d sum q qx + m sum qx)
 *   Q8_0: w = d q:              sum w x = d dx sum q qx
 *   MXFP4: w = 2^(e-128) c:     sum w x = 2^(e-128) dx sum c qx (c the doubled
 *                               E2M1 value, an int8 looked up from the code)
 *   Q4_K: w = (d sc) q - dmin m: sum w x = dx (d sc sum q qx - dmin m sum qx)
 *
 * One warp computes one output row (for up to eight tokens): lane l takes
 * the row's units l, l + warp, ... A unit is what one lane decodes from
 * aligned vector loads: a whole 32-block of Q4_0 or Q8_0 (16 or 32 bytes of
 * codes, regrouped at upload: dequant.cuh), a Q4_1 block, or a pair of Q4_K
 * sub-blocks (64 weights sharing 32 bytes of codes). The loop is unrolled
 * so that a lane's loads for several units are in flight together; a warp
 * reads its row in contiguous 512-byte spans. The warp's sums are reduced
 * by shuffles alone: no shared memory, no block barrier, so a warp leaves
 * as soon as its row is done.
 *
 * One launch may cover the rows of up to three matrices that read the same
 * activations (q, k and v; gate and up): fg_mmvq_parts lists them.
 */
#ifndef FG_BACKEND_GPU_MMVQ_CUH
#define FG_BACKEND_GPU_MMVQ_CUH

#include "backend/gpu/kernels/dequant.cuh"
#include "backend/gpu/kernels/kernels.h"
#include "backend/gpu/kernels/q8.cuh"

#if defined(FG_GPU_HIP)
static __device__ __forceinline__ int fg_dp4a(int a, int b, int c)
{
    return __builtin_amdgcn_sdot4(a, b, c, false);
}
#else
static __device__ __forceinline__ int fg_dp4a(int a, int b, int c)
{
    return __dp4a(a, b, c);
}
#endif

/* Sum of the products of 16 weight codes (four words) with 16 activation
 * codes. */
static __device__ __forceinline__ int fg_dot16(int w0, int w1, int w2, int w3, int4 x)
{
    return fg_dp4a(w0, x.x, fg_dp4a(w1, x.y, fg_dp4a(w2, x.z, fg_dp4a(w3, x.w, 0))));
}

/* The activation side of 32-block b of a token: codes xq[32 b ..], xs[b] =
 * {d, sum of the block's codes}. */
struct fg_xblk {
    int4 lo, hi; /* codes 0..15, 16..31 */
    float2 ds;
};

static __device__ __forceinline__ fg_xblk fg_xload(const int8_t *xq, const float2 *xs, int b)
{
    const int4 *p = (const int4 *)(xq + 32 * b);
    return {p[0], p[1], xs[b]};
}

template <int TYPE> struct fg_q;

/* Q4_0, regrouped: a unit is block u (16 bytes of codes, f16 d). */
template <> struct fg_q<FG_DQ_Q4_0> {
    enum { UNIT = 32 };
    struct w_t {
        uint4 q;
        float d;
    };
    static __device__ __forceinline__ w_t load(const uint8_t *row, int u)
    {
        const uint8_t *grp = row + FG_Q4_0_GROUP * (u / 8);
        return {*(const uint4 *)(grp + 16 + 16 * (u % 8)), fg_h2f(fg_ld16(grp + 2 * (u % 8)))};
    }
    static __device__ __forceinline__ float dot(const w_t &w, const int8_t *xq, const float2 *xs, int u)
    {
        fg_xblk x = fg_xload(xq, xs, u);
        const uint32_t m = 0x0f0f0f0fu;
        int s = fg_dot16((int)(w.q.x & m), (int)(w.q.y & m), (int)(w.q.z & m), (int)(w.q.w & m), x.lo) +
                fg_dot16((int)((w.q.x >> 4) & m), (int)((w.q.y >> 4) & m), (int)((w.q.z >> 4) & m),
                         (int)((w.q.w >> 4) & m), x.hi);
        return w.d * x.ds.x * ((float)s - 8.0f * x.ds.y);
    }
};

/* Q4_1 (GGUF layout, 20-byte blocks, 4-byte aligned): a unit is block u. */
template <> struct fg_q<FG_DQ_Q4_1> {
    enum { UNIT = 32 };
    struct w_t {
        uint32_t q[4];
        float d, m;
    };
    static __device__ __forceinline__ w_t load(const uint8_t *row, int u)
    {
        const uint32_t *b = (const uint32_t *)(row + 20 * u);
        uint32_t dm = b[0];
        return {{b[1], b[2], b[3], b[4]}, fg_h2f((uint16_t)dm), fg_h2f((uint16_t)(dm >> 16))};
    }
    static __device__ __forceinline__ float dot(const w_t &w, const int8_t *xq, const float2 *xs, int u)
    {
        fg_xblk x = fg_xload(xq, xs, u);
        const uint32_t m = 0x0f0f0f0fu;
        int s = fg_dot16((int)(w.q[0] & m), (int)(w.q[1] & m), (int)(w.q[2] & m), (int)(w.q[3] & m), x.lo) +
                fg_dot16((int)((w.q[0] >> 4) & m), (int)((w.q[1] >> 4) & m), (int)((w.q[2] >> 4) & m),
                         (int)((w.q[3] >> 4) & m), x.hi);
        return x.ds.x * (w.d * (float)s + w.m * x.ds.y);
    }
};

/* Q8_0, regrouped: a unit is block u (32 bytes of codes, f16 d). */
template <> struct fg_q<FG_DQ_Q8_0> {
    enum { UNIT = 32 };
    struct w_t {
        int4 lo, hi;
        float d;
    };
    static __device__ __forceinline__ w_t load(const uint8_t *row, int u)
    {
        const uint8_t *grp = row + FG_Q8_0_GROUP * (u / 8);
        const int4 *q = (const int4 *)(grp + 16 + 32 * (u % 8));
        return {q[0], q[1], fg_h2f(fg_ld16(grp + 2 * (u % 8)))};
    }
    static __device__ __forceinline__ float dot(const w_t &w, const int8_t *xq, const float2 *xs, int u)
    {
        fg_xblk x = fg_xload(xq, xs, u);
        int s = fg_dot16(w.lo.x, w.lo.y, w.lo.z, w.lo.w, x.lo) + fg_dot16(w.hi.x, w.hi.y, w.hi.z, w.hi.w, x.hi);
        return w.d * x.ds.x * (float)s;
    }
};

/* MXFP4, regrouped: a unit is block u (16 bytes of codes at 8-byte
 * alignment, the E8M0 exponent in the group's header), its nibbles looked
 * up as int8 doubled E2M1 values (fg_mxfp4_word). */
template <> struct fg_q<FG_DQ_MXFP4> {
    enum { UNIT = 32 };
    struct w_t {
        uint2 q0, q1;
        float d;
    };
    static __device__ __forceinline__ w_t load(const uint8_t *row, int u)
    {
        const uint8_t *grp = row + FG_MXFP4_GROUP * (u / 8);
        const uint2 *q = (const uint2 *)(grp + 8 + 16 * (u % 8));
        return {q[0], q[1], fg_e8m0_half(grp[u % 8])};
    }
#if !defined(FG_GPU_HIP)
    /* Eight codes per word as they lie: the word's low half is the codes of
     * elements (4k, 16+4k, 4k+1, 16+4k+1) of word k, its high half the next
     * two pairs, so each half is a byte-permute selector as it stands. prmt
     * looks a selector nibble's low three bits up in the table of
     * magnitudes, and for a nibble with bit 3 (the code's sign) set it
     * yields the table byte's sign replicated: 0, as every magnitude is
     * positive. So one lookup gives the positive codes' magnitudes (P) and
     * one with bit 3 flipped the negative codes' (N), and the dot is
     * dp4a(P, x) - dp4a(N, x) over the activations permuted to the same
     * interleaved order: four lookups, two permutes and four dp4a per word,
     * where fg_mxfp4_word takes ten instructions per four codes. The
     * sign mode is PTX prmt's own: CUDA's __byte_perm masks selectors to
     * three bits, and HIP's has no such mode (HIP takes fg_mxfp4_word
     * below). */
    static __device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel)
    {
        uint32_t d;
        asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
        return d;
    }
    static __device__ __forceinline__ void word(uint32_t q, int xl, int xh, int &sp, int &sn)
    {
        const uint32_t lo = 0x03020100u, hi = 0x0c080604u; /* magnitudes of codes 0..7 */
        int xa = (int)prmt((uint32_t)xl, (uint32_t)xh, 0x5140), xb = (int)prmt((uint32_t)xl, (uint32_t)xh, 0x7362);
        uint32_t q2 = q >> 16;
        sp = fg_dp4a((int)prmt(lo, hi, q), xa, fg_dp4a((int)prmt(lo, hi, q2), xb, sp));
        sn = fg_dp4a((int)prmt(lo, hi, q ^ 0x8888u), xa, fg_dp4a((int)prmt(lo, hi, q2 ^ 0x8888u), xb, sn));
    }
    static __device__ __forceinline__ float dot(const w_t &w, const int8_t *xq, const float2 *xs, int u)
    {
        fg_xblk x = fg_xload(xq, xs, u);
        int sp = 0, sn = 0;
        word(w.q0.x, x.lo.x, x.hi.x, sp, sn);
        word(w.q0.y, x.lo.y, x.hi.y, sp, sn);
        word(w.q1.x, x.lo.z, x.hi.z, sp, sn);
        word(w.q1.y, x.lo.w, x.hi.w, sp, sn);
        return w.d * x.ds.x * (float)(sp - sn);
    }
#else
    static __device__ __forceinline__ float dot(const w_t &w, const int8_t *xq, const float2 *xs, int u)
    {
        fg_xblk x = fg_xload(xq, xs, u);
        int s = fg_dot16(fg_mxfp4_word(w.q0.x), fg_mxfp4_word(w.q0.y), fg_mxfp4_word(w.q1.x), fg_mxfp4_word(w.q1.y),
                         x.lo) +
                fg_dot16(fg_mxfp4_word(w.q0.x >> 4), fg_mxfp4_word(w.q0.y >> 4), fg_mxfp4_word(w.q1.x >> 4),
                         fg_mxfp4_word(w.q1.y >> 4), x.hi);
        return w.d * x.ds.x * (float)s;
    }
#endif
};

/* Q4_K (144-byte super-blocks of 256: f16 d, f16 dmin, 12 bytes of 6-bit
 * scales and mins, 128 bytes of codes): unit u is sub-blocks 2i and 2i + 1
 * of super-block u/4 (i = u%4), whose 64 weights are the low and high
 * nibbles of the same 32 code bytes, qs[32 i ..]. They are the row's
 * elements 64u .. 64u+63: activation blocks 2u and 2u + 1. */
template <> struct fg_q<FG_DQ_Q4_K> {
    enum { UNIT = 64 };
    struct w_t {
        uint4 q0, q1;
        float d0, m0, d1, m1; /* d sc and dmin m of the two sub-blocks */
    };
    static __device__ __forceinline__ w_t load(const uint8_t *row, int u)
    {
        const uint8_t *blk = row + 144 * (u / 4);
        int i = u % 4, sc0, m0, sc1, m1;
        const uint4 *q = (const uint4 *)(blk + 16 + 32 * i);
        uint32_t dm = *(const uint32_t *)blk;
        fg_k4_scale_min(blk + 4, 2 * i, &sc0, &m0);
        fg_k4_scale_min(blk + 4, 2 * i + 1, &sc1, &m1);
        float d = fg_h2f((uint16_t)dm), dmin = fg_h2f((uint16_t)(dm >> 16));
        return {q[0], q[1], d * (float)sc0, dmin * (float)m0, d * (float)sc1, dmin * (float)m1};
    }
    static __device__ __forceinline__ float dot(const w_t &w, const int8_t *xq, const float2 *xs, int u)
    {
        fg_xblk a = fg_xload(xq, xs, 2 * u), b = fg_xload(xq, xs, 2 * u + 1);
        const uint32_t m = 0x0f0f0f0fu;
        int s0 = fg_dot16((int)(w.q0.x & m), (int)(w.q0.y & m), (int)(w.q0.z & m), (int)(w.q0.w & m), a.lo) +
                 fg_dot16((int)(w.q1.x & m), (int)(w.q1.y & m), (int)(w.q1.z & m), (int)(w.q1.w & m), a.hi);
        int s1 = fg_dot16((int)((w.q0.x >> 4) & m), (int)((w.q0.y >> 4) & m), (int)((w.q0.z >> 4) & m),
                          (int)((w.q0.w >> 4) & m), b.lo) +
                 fg_dot16((int)((w.q1.x >> 4) & m), (int)((w.q1.y >> 4) & m), (int)((w.q1.z >> 4) & m),
                          (int)((w.q1.w >> 4) & m), b.hi);
        return a.ds.x * (w.d0 * (float)s0 - w.m0 * a.ds.y) + b.ds.x * (w.d1 * (float)s1 - w.m1 * b.ds.y);
    }
};

/* x rows (T of them, K floats at stride ldx) to int8 codes xq[T][K] and per
 * 32 elements xs[T][K/32] = {d, sum of the codes}: one warp per 32-block
 * (fg_q8_lanes), so the loads are coalesced and every block is its own. */
static __global__ void fg_quantize_q8_kernel(const float *__restrict__ x, int64_t ldx, int64_t K, int32_t T,
                                             int8_t *xq, float2 *xs)
{
    int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32, nb = K / 32;
    int lane = threadIdx.x % 32;
    if (i >= nb * T) return; /* whole groups of 32 lanes leave together */
    int64_t t = i / nb, b = i % nb;
    fg_q8_lanes(x[t * ldx + 32 * b + lane], lane, xq + t * K + 32 * b, xs + t * nb + b);
}

/* The rows of one launch: part i's rows are rows first[i] .. first[i+1]-1
 * of the launch; row n of part i is y[t][n] = x[t] . w[n] (+ bias[n])
 * (+ add[t][n]). */
enum { FG_MMVQ_MAX_PARTS = 3 };

struct fg_mmvq_part {
    const uint8_t *w;
    size_t row_bytes;
    const float *bias, *add;
    int64_t ldadd;
    float *y;
    int64_t ldy;
};

struct fg_mmvq_parts {
    int n;
    int64_t first[FG_MMVQ_MAX_PARTS + 1];
    fg_mmvq_part p[FG_MMVQ_MAX_PARTS];
};

enum { FG_MMVQ_THREADS = 128 };

/* R rows per warp: with several tokens, the activations a lane loads for a
 * unit serve R rows, not one (the loads are the same addresses through
 * __restrict__ pointers, so the compiler issues them once). Rows past the
 * last compute on the last and store nothing. */
template <int TYPE, int NT, int R>
__global__ void __launch_bounds__(FG_MMVQ_THREADS) fg_mmvq_kernel(const fg_mmvq_parts parts, int64_t K,
                                                                  const int8_t *__restrict__ xq,
                                                                  const float2 *__restrict__ xs, int32_t T)
{
    int lane = threadIdx.x % FG_WARP;
    int64_t r0 = ((int64_t)blockIdx.x * (FG_MMVQ_THREADS / FG_WARP) + threadIdx.x / FG_WARP) * R,
            total = parts.first[parts.n];
    if (r0 >= total) return; /* a whole warp */
    const uint8_t *row[R];
    int pi[R];
    int64_t n[R];
#pragma unroll
    for (int i = 0; i < R; i++) {
        int64_t r = r0 + i < total ? r0 + i : total - 1;
        int k = 0;
        while (k + 1 < parts.n && r >= parts.first[k + 1]) k++;
        pi[i] = k;
        n[i] = r - parts.first[k];
        row[i] = parts.p[k].w + (size_t)n[i] * parts.p[k].row_bytes;
    }
    const int n_units = (int)(K / fg_q<TYPE>::UNIT), nb = (int)(K / 32);
    enum { UNROLL = R == 1 ? 4 : 2 };

    float acc[R][NT];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[i][t] = 0.0f;
#pragma unroll UNROLL
    for (int u = lane; u < n_units; u += FG_WARP) {
        typename fg_q<TYPE>::w_t wu[R];
#pragma unroll
        for (int i = 0; i < R; i++) wu[i] = fg_q<TYPE>::load(row[i], u);
#pragma unroll
        for (int t = 0; t < NT; t++)
            if (t < T)
#pragma unroll
                for (int i = 0; i < R; i++) acc[i][t] += fg_q<TYPE>::dot(wu[i], xq + t * K, xs + t * nb, u);
    }
#pragma unroll
    for (int i = 0; i < R; i++) {
        const fg_mmvq_part &P = parts.p[pi[i]];
        bool live = r0 + i < total;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float s = fg_warp_sum(acc[i][t]);
            if (live && lane == t && t < T) {
                if (P.bias) s += P.bias[n[i]];
                if (P.add) s += P.add[t * P.ldadd + n[i]];
                P.y[t * P.ldy + n[i]] = s;
            }
        }
    }
}

#endif
