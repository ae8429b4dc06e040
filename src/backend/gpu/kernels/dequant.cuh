/*
 * dequant.cuh — device-side decoding of the GGUF block formats the GPU
 * backend computes with, eight elements at a time.
 *
 * fg_dq8<TYPE>(row, g, w) writes elements [8g, 8g + 8) of a weight row to
 * w[0..8). Eight divides every block size (32, 256), so the eight always sit
 * in one block and share its scales; a warp whose lanes take consecutive g
 * reads consecutive bytes. The layouts are those of gguf/quant.c (the scalar
 * reference, checked against the gguf package), restated per field below,
 * except for Q4_0, Q8_0 and MXFP4, which the backend regroups at upload
 * (below).
 * Loads are as wide as each field's alignment allows: blocks of 22 and 210
 * bytes leave their fields only 2-byte aligned.
 */
#ifndef FG_BACKEND_GPU_DEQUANT_CUH
#define FG_BACKEND_GPU_DEQUANT_CUH

#include <stdint.h>

#include "backend/gpu/compat.h"

/* The GGUF type ids (gguf/types.h), as compile-time constants for templates. */
enum {
    FG_DQ_F32 = 0, FG_DQ_F16 = 1, FG_DQ_Q4_0 = 2, FG_DQ_Q4_1 = 3, FG_DQ_Q5_0 = 6, FG_DQ_Q5_1 = 7,
    FG_DQ_Q8_0 = 8, FG_DQ_Q4_K = 12, FG_DQ_Q5_K = 13, FG_DQ_Q6_K = 14, FG_DQ_BF16 = 30, FG_DQ_MXFP4 = 39,
};

static __device__ __forceinline__ float fg_h2f(uint16_t h)
{
    __half x;
    memcpy(&x, &h, 2);
    return __half2float(x);
}

static __device__ __forceinline__ uint16_t fg_ld16(const uint8_t *p)
{
    return *(const uint16_t *)p;
}

/* 4 bytes at a 2-byte aligned address. */
static __device__ __forceinline__ uint32_t fg_ld32_a2(const uint8_t *p)
{
    return (uint32_t)fg_ld16(p) | (uint32_t)fg_ld16(p + 2) << 16;
}

/* 8 bytes at a 2-byte aligned address, as two little-endian words. */
static __device__ __forceinline__ void fg_ld64_a2(const uint8_t *p, uint32_t q[2])
{
    q[0] = fg_ld32_a2(p);
    q[1] = fg_ld32_a2(p + 4);
}

static __device__ __forceinline__ void fg_ld64_a4(const uint8_t *p, uint32_t q[2])
{
    q[0] = *(const uint32_t *)p;
    q[1] = *(const uint32_t *)(p + 4);
}

static __device__ __forceinline__ int fg_byte(const uint32_t q[2], int i)
{
    return (int)((q[i / 4] >> (8 * (i % 4))) & 0xff);
}

/* The scale and min of 32-element sub-block s in Q4_K / Q5_K (quant.c's
 * k4_scale_min). */
static __device__ __forceinline__ void fg_k4_scale_min(const uint8_t *scales, int s, int *sc, int *m)
{
    if (s < 4) {
        *sc = scales[s] & 63;
        *m = scales[s + 4] & 63;
    } else {
        *sc = (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4;
        *m = (scales[s + 4] >> 4) | (scales[s] >> 6) << 4;
    }
}

template <int TYPE> struct fg_dq;

/* F32 / F16 / BF16: rows of plain elements (rows of 8k elements are at least
 * 16-byte aligned for F32, 4-byte for the halves). */
template <> struct fg_dq<FG_DQ_F32> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        const float4 *p = (const float4 *)(row + 32 * g);
        float4 a = p[0], b = p[1];
        w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
    }
};

template <> struct fg_dq<FG_DQ_F16> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        const uint32_t *p = (const uint32_t *)(row + 16 * g);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t u = p[i];
            w[2 * i] = fg_h2f((uint16_t)u);
            w[2 * i + 1] = fg_h2f((uint16_t)(u >> 16));
        }
    }
};

template <> struct fg_dq<FG_DQ_BF16> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        const uint32_t *p = (const uint32_t *)(row + 16 * g);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t u = p[i];
            w[2 * i] = __uint_as_float(u << 16);
            w[2 * i + 1] = __uint_as_float(u & 0xffff0000u);
        }
    }
};

/* Q4_0, Q8_0 and MXFP4 are stored on the GPU in groups of eight blocks
 * (fg_gpu_regroup rearranges them at upload): the eight scales first (f16,
 * or MXFP4's E8M0 bytes), then the eight blocks' codes. A GGUF block is 18,
 * 34 or 17 bytes, so its codes sit at 2-byte (or no) alignment and a lane
 * needs eight or more loads to fetch them; in a group they are 16-byte (MXFP4:
 * 8-byte) aligned and a lane fetches a block's codes in one or two vector
 * loads. A group spans as many bytes as its eight GGUF blocks, so the
 * regrouping is in place. A row is padded to whole groups, the padding blocks
 * all zero. */
enum { FG_Q4_0_GROUP = 144, FG_Q8_0_GROUP = 272, FG_MXFP4_GROUP = 136 };

/* MXFP4's E8M0 exponent e as the halved scale 2^(e - 128) (gguf/quant.c's
 * fg_e8m0_half): subnormal for e < 2. */
static __device__ __forceinline__ float fg_e8m0_half(uint32_t e)
{
    return __uint_as_float(e < 2 ? 0x00200000u << e : (e - 1) << 23);
}

/* Four MXFP4 codes, one in the low nibble of each byte of q (the high
 * nibbles are ignored), as four int8 doubled E2M1 values (0, 1, 2, 3, 4, 6,
 * 8, 12 and their negatives): a byte permute looks the magnitude up from the
 * code's low three bits and another its negative; bit 3, the sign, picks. */
static __device__ __forceinline__ int fg_mxfp4_word(uint32_t q)
{
    uint32_t idx = q & 0x07070707u, t = idx | idx >> 4;
    uint32_t sel = __byte_perm(t, 0, 0x4420); /* the four 3-bit indices as selector nibbles */
    uint32_t pos = __byte_perm(0x03020100u, 0x0c080604u, sel);
    uint32_t neg = __byte_perm(0xfdfeff00u, 0xf4f8fafcu, sel);
    uint32_t sign = ((q >> 3) & 0x01010101u) * 0xffu;
    return (int)((pos & ~sign) | (neg & sign));
}

/* Q4_0 codes: 16 bytes per 32 elements; element j is the low nibble of
 * qs[j] (j < 16) or the high nibble of qs[j - 16]; y = d (q - 8). Block b:
 * d at 144 (b/8) + 2 (b%8), qs at 144 (b/8) + 16 + 16 (b%8). */
template <> struct fg_dq<FG_DQ_Q4_0> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        int64_t b = g / 4;
        const uint8_t *grp = row + FG_Q4_0_GROUP * (b / 8);
        int j = 8 * (int)(g % 4), sh = j < 16 ? 0 : 4;
        float d = fg_h2f(fg_ld16(grp + 2 * (b % 8)));
        uint2 u = *(const uint2 *)(grp + 16 + 16 * (b % 8) + j % 16);
        uint32_t q[2] = {u.x, u.y};
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = d * (float)(((fg_byte(q, i) >> sh) & 0xf) - 8);
    }
};

/* Q4_1: 20 bytes per 32: f16 d, f16 m, qs[16] as Q4_0; y = d q + m. */
template <> struct fg_dq<FG_DQ_Q4_1> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        const uint8_t *b = row + 20 * (g / 4);
        int j = 8 * (int)(g % 4), sh = j < 16 ? 0 : 4;
        float d = fg_h2f(fg_ld16(b)), m = fg_h2f(fg_ld16(b + 2));
        uint32_t q[2];
        fg_ld64_a4(b + 4 + j % 16, q);
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = d * (float)((fg_byte(q, i) >> sh) & 0xf) + m;
    }
};

/* Q5_0: 22 bytes per 32: f16 d, u32 qh (bit j: bit 4 of element j), qs[16]
 * as Q4_0; y = d (q - 16). */
template <> struct fg_dq<FG_DQ_Q5_0> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        const uint8_t *b = row + 22 * (g / 4);
        int j = 8 * (int)(g % 4), sh = j < 16 ? 0 : 4;
        float d = fg_h2f(fg_ld16(b));
        uint32_t qh = fg_ld32_a2(b + 2) >> j, q[2];
        fg_ld64_a2(b + 6 + j % 16, q);
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = d * (float)((((fg_byte(q, i) >> sh) & 0xf) | (int)((qh >> i) & 1) << 4) - 16);
    }
};

/* Q5_1: 24 bytes per 32: f16 d, f16 m, u32 qh, qs[16]; y = d q + m. */
template <> struct fg_dq<FG_DQ_Q5_1> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        const uint8_t *b = row + 24 * (g / 4);
        int j = 8 * (int)(g % 4), sh = j < 16 ? 0 : 4;
        float d = fg_h2f(fg_ld16(b)), m = fg_h2f(fg_ld16(b + 2));
        uint32_t qh = *(const uint32_t *)(b + 4) >> j, q[2];
        fg_ld64_a4(b + 8 + j % 16, q);
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = d * (float)(((fg_byte(q, i) >> sh) & 0xf) | (int)((qh >> i) & 1) << 4) + m;
    }
};

/* Q8_0 codes: i8 qs[32] per 32 elements; y = d q. Block b: d at
 * 272 (b/8) + 2 (b%8), qs at 272 (b/8) + 16 + 32 (b%8). */
template <> struct fg_dq<FG_DQ_Q8_0> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        int64_t b = g / 4;
        const uint8_t *grp = row + FG_Q8_0_GROUP * (b / 8);
        float d = fg_h2f(fg_ld16(grp + 2 * (b % 8)));
        uint2 u = *(const uint2 *)(grp + 16 + 32 * (b % 8) + 8 * (g % 4));
        uint32_t q[2] = {u.x, u.y};
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = d * (float)(int8_t)fg_byte(q, i);
    }
};

/* MXFP4 codes: 16 bytes per 32 elements, nibbles as in Q4_0; y = code2 *
 * 2^(e - 128). Block b: e at 136 (b/8) + b%8, codes at 136 (b/8) + 8 + 16
 * (b%8). */
template <> struct fg_dq<FG_DQ_MXFP4> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        int64_t b = g / 4;
        const uint8_t *grp = row + FG_MXFP4_GROUP * (b / 8);
        int j = 8 * (int)(g % 4), sh = j < 16 ? 0 : 4;
        float d = fg_e8m0_half(grp[b % 8]);
        uint2 u = *(const uint2 *)(grp + 8 + 16 * (b % 8) + j % 16);
        uint32_t q[2] = {(uint32_t)fg_mxfp4_word(u.x >> sh), (uint32_t)fg_mxfp4_word(u.y >> sh)};
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = d * (float)(int8_t)fg_byte(q, i);
    }
};

/* Q4_K: 144 bytes per 256: f16 d, f16 dmin, scales[12], qs[128]; element i
 * (of the super-block) is qs[32 (i/64) + i%32], low nibble if (i/32) is even;
 * y = d sc q - dmin m with (sc, m) of sub-block i/32. */
template <> struct fg_dq<FG_DQ_Q4_K> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        const uint8_t *b = row + 144 * (g / 32);
        int i0 = 8 * (int)(g % 32), s = i0 / 32, sc, m;
        fg_k4_scale_min(b + 4, s, &sc, &m);
        float dl = fg_h2f(fg_ld16(b)) * (float)sc, ml = fg_h2f(fg_ld16(b + 2)) * (float)m;
        uint32_t q[2];
        fg_ld64_a4(b + 16 + 32 * (i0 / 64) + i0 % 32, q);
        int sh = 4 * (s % 2);
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = dl * (float)((fg_byte(q, i) >> sh) & 0xf) - ml;
    }
};

/* Q5_K: 176 bytes per 256: f16 d, f16 dmin, scales[12], qh[32] (bit i/32 of
 * qh[i%32] is bit 4 of element i), qs[128] as Q4_K. */
template <> struct fg_dq<FG_DQ_Q5_K> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        const uint8_t *b = row + 176 * (g / 32);
        int i0 = 8 * (int)(g % 32), s = i0 / 32, sc, m;
        fg_k4_scale_min(b + 4, s, &sc, &m);
        float dl = fg_h2f(fg_ld16(b)) * (float)sc, ml = fg_h2f(fg_ld16(b + 2)) * (float)m;
        uint32_t q[2], h[2];
        fg_ld64_a4(b + 48 + 32 * (i0 / 64) + i0 % 32, q);
        fg_ld64_a4(b + 16 + i0 % 32, h);
        int sh = 4 * (s % 2);
#pragma unroll
        for (int i = 0; i < 8; i++)
            w[i] = dl * (float)(((fg_byte(q, i) >> sh) & 0xf) | ((fg_byte(h, i) >> s) & 1) << 4) - ml;
    }
};

/* Q6_K: 210 bytes per 256: ql[128], qh[64], i8 scales[16], f16 d. Low 4
 * bits of element i: ql[64 (i/128) + i%64], low nibble if i%128 < 64; high
 * 2 bits: qh[32 (i/128) + i%32] >> 2 ((i%128)/32); y = d scale[i/16] (q - 32). */
template <> struct fg_dq<FG_DQ_Q6_K> {
    static __device__ __forceinline__ void get8(const uint8_t *row, int64_t g, float w[8])
    {
        const uint8_t *b = row + 210 * (g / 32);
        int i0 = 8 * (int)(g % 32);
        float dl = fg_h2f(fg_ld16(b + 208)) * (float)(int8_t)b[192 + i0 / 16];
        uint32_t l[2], h[2];
        fg_ld64_a2(b + 64 * (i0 / 128) + i0 % 64, l);
        fg_ld64_a2(b + 128 + 32 * (i0 / 128) + i0 % 32, h);
        int shl = 4 * ((i0 % 128) / 64), shh = 2 * ((i0 % 128) / 32);
#pragma unroll
        for (int i = 0; i < 8; i++)
            w[i] = dl * (float)((((fg_byte(l, i) >> shl) & 0xf) | ((fg_byte(h, i) >> shh) & 3) << 4) - 32);
    }
};

/* Calls F<TYPE>::run(args...) for a runtime type id; returns false for a
 * type the GPU backend does not compute with. */
#define FG_DQ_DISPATCH(type, F, ...)                                   \
    ([&]() -> bool {                                                   \
        switch ((int)(type)) {                                         \
        case FG_DQ_F32: F<FG_DQ_F32>::run(__VA_ARGS__); return true;   \
        case FG_DQ_F16: F<FG_DQ_F16>::run(__VA_ARGS__); return true;   \
        case FG_DQ_BF16: F<FG_DQ_BF16>::run(__VA_ARGS__); return true; \
        case FG_DQ_Q4_0: F<FG_DQ_Q4_0>::run(__VA_ARGS__); return true; \
        case FG_DQ_Q4_1: F<FG_DQ_Q4_1>::run(__VA_ARGS__); return true; \
        case FG_DQ_Q5_0: F<FG_DQ_Q5_0>::run(__VA_ARGS__); return true; \
        case FG_DQ_Q5_1: F<FG_DQ_Q5_1>::run(__VA_ARGS__); return true; \
        case FG_DQ_Q8_0: F<FG_DQ_Q8_0>::run(__VA_ARGS__); return true; \
        case FG_DQ_Q4_K: F<FG_DQ_Q4_K>::run(__VA_ARGS__); return true; \
        case FG_DQ_Q5_K: F<FG_DQ_Q5_K>::run(__VA_ARGS__); return true; \
        case FG_DQ_Q6_K: F<FG_DQ_Q6_K>::run(__VA_ARGS__); return true; \
        case FG_DQ_MXFP4: F<FG_DQ_MXFP4>::run(__VA_ARGS__); return true; \
        }                                                              \
        return false;                                                  \
    }())

#endif
