/*
 * mm_kernels.h — internal to the CPU matmul: the layout of quantized
 * activations and the table of per-instruction-set kernels that matmul.c
 * picks from at run time.
 *
 * Every instruction set provides the same kernels (mm_generic.c is the
 * reference; mm_avx2.c, mm_avx512.c and mm_neon.c override it) and a getter
 * that returns NULL when the file was not compiled for that set, so the
 * dispatcher needs no build-time knowledge of which files have real code.
 *
 * Activations. A row of K floats is quantized once per matmul into the weight
 * type's partner format, laid out struct-of-arrays so that SIMD loads of the
 * codes are aligned and a block's scalars sit next to their neighbours':
 *
 *   Q8_1, partner of Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 MXFP4 (blocks of 32, nb = K/32):
 *     off 0          i8    qs[K]      round-half-away-from-zero(x / d)
 *     off K          f32   ds[2nb]    pairs (d, s): d = amax / 127 rounded to the
 *                                     nearest f16 value (as ggml stores it), amax the
 *                                     block's max |x|; s = d * sum(qs of the block),
 *                                     exact (11 + 13 significant bits)
 *     off K + 8nb    i32   nsum[nb]   -sum(qs of the block)
 *   The codes and d are ggml's Q8_0 (which stores d as f16: here it is kept
 *   as an f32 holding the f16 value, so the products are ggml's and no
 *   conversion is needed in the dot; forge's logits then track llama.cpp's
 *   more closely on models that amplify such differences); s is ggml's Q8_1
 *   term for the weight formats with an offset m: sum (d_w q_w + m)(d_x q_x)
 *   = d_w d_x sum(q_w q_x) + m s. A kernel loads the pair (d, s) with one
 *   8-byte load. nsum lets kernels that multiply unsigned weight codes fold a
 *   constant code offset c back in integer arithmetic: sum (q_w - c) q_x =
 *   sum q_w q_x + c nsum, exact and cheaper than a float term (Q4_0: c = 8,
 *   Q5_0: 16).
 *
 *   Q8_K, partner of Q2_K..Q6_K (blocks of 256, nb = K/256):
 *     off 0          i8    qs[K]
 *     off K          f32   d[nb]      amax / 127
 *     off K + 4nb    i16   bsums[K/16]  sums of 16 consecutive codes
 *   (ggml's Q8_K scales by the signed max, d = -max/127; here the rule is
 *   Q8_1's, so |q| <= 127 in both.) bsums give the sub-block mins and code
 *   offsets of the K-quants in integer arithmetic.
 *
 * Rows are 64-byte aligned in the scratch buffer; fg_mm_act_row_bytes is the
 * stride. For the float weight types (F32, F16, BF16) activations are not
 * quantized: the kernels read the caller's f32 rows.
 */
#ifndef FG_BACKEND_CPU_MM_KERNELS_H
#define FG_BACKEND_CPU_MM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "gguf/quant.h"
#include "gguf/types.h"

/* The most activation rows one dot kernel call handles. */
enum { FG_MM_NT = 4 };

typedef enum fg_mm_act {
    FG_MM_ACT_F32, /* not quantized: the kernel reads f32 rows */
    FG_MM_ACT_Q8_1,
    FG_MM_ACT_Q8_K,
} fg_mm_act;

/* Quantizes K floats (a multiple of the format's block size) into one row of
 * the format at dst (64-byte aligned). */
typedef void (*fg_mm_quant_fn)(const float *x, int64_t K, uint8_t *dst);

/* out[r * FG_MM_NT + j] = sum_k W_r[k] x_j[k] for r < nr and j < nt
 * (1 <= nt <= FG_MM_NT): nr weight rows of K elements, row r at w + r *
 * w_stride bytes, against nt activation rows, row j at x + j * x_stride bytes
 * (in the partner format of the weight type, or f32). Rows are looped inside
 * the kernel so that a call's fixed costs are paid once per nr rows. */
typedef void (*fg_mm_dot_fn)(int64_t K, const uint8_t *w, size_t w_stride, int nr, const uint8_t *x,
                             size_t x_stride, int nt, float *out);

typedef struct fg_mm_kernels {
    const char *isa;
    fg_mm_quant_fn quant_q8_1, quant_q8_k; /* NULL: use the generic one */
    fg_mm_dot_fn dot[FG_TYPE_COUNT];       /* NULL: not overridden */
} fg_mm_kernels;

/* The weight types every kernel set computes with, as X(type, name): a set
 * defines dot_<name> for each (FG_MM_EACH_TYPE(X) generates those
 * definitions from one wrapper macro) and fills its table with
 * FG_MM_DOT_TABLE, so the list lives here once. */
#define FG_MM_EACH_TYPE(X)                                                                              \
    X(F32, f32) X(F16, f16) X(BF16, bf16) X(Q4_0, q4_0) X(Q4_1, q4_1) X(Q5_0, q5_0) X(Q5_1, q5_1)       \
    X(Q8_0, q8_0) X(Q2_K, q2_k) X(Q3_K, q3_k) X(Q4_K, q4_k) X(Q5_K, q5_k) X(Q6_K, q6_k) X(MXFP4, mxfp4)
#define FG_MM_DOT_ENTRY(type, name) [FG_TYPE_##type] = dot_##name,
#define FG_MM_DOT_TABLE {FG_MM_EACH_TYPE(FG_MM_DOT_ENTRY)}

const fg_mm_kernels *fg_mm_kernels_generic(void);
const fg_mm_kernels *fg_mm_kernels_avx2(void);   /* x86 AVX2 + FMA + F16C */
const fg_mm_kernels *fg_mm_kernels_avx512(void); /* x86 AVX-512 F/BW/VL + VNNI */
const fg_mm_kernels *fg_mm_kernels_neon(void);   /* aarch64 NEON */

/* The partner format of weight type t; only meaningful for types the matmul
 * supports. */
static inline fg_mm_act fg_mm_act_of(fg_type t)
{
    switch (t) {
    case FG_TYPE_Q4_0: case FG_TYPE_Q4_1: case FG_TYPE_Q5_0: case FG_TYPE_Q5_1: case FG_TYPE_Q8_0:
    case FG_TYPE_MXFP4:
        return FG_MM_ACT_Q8_1;
    case FG_TYPE_Q2_K: case FG_TYPE_Q3_K: case FG_TYPE_Q4_K: case FG_TYPE_Q5_K: case FG_TYPE_Q6_K:
        return FG_MM_ACT_Q8_K;
    default:
        return FG_MM_ACT_F32;
    }
}

/* Bytes of one quantized activation row of K elements, rounded up to 64. */
static inline size_t fg_mm_act_row_bytes(fg_mm_act a, int64_t K)
{
    size_t k = (size_t)K, n;
    switch (a) {
    case FG_MM_ACT_Q8_1: n = k + 12 * (k / 32); break;
    case FG_MM_ACT_Q8_K: n = k + 4 * (k / 256) + 2 * (k / 16); break;
    default: return 0;
    }
    return (n + 63) & ~(size_t)63;
}

/* Field accessors of a quantized row (see the layout above). The offsets are
 * multiples of 4 and rows are 64-byte aligned, so the casts are aligned. */
static inline const float *fg_q8_1_ds(const uint8_t *row, int64_t K)
{
    return (const float *)(const void *)(row + K);
}
static inline const int32_t *fg_q8_1_nsum(const uint8_t *row, int64_t K)
{
    return (const int32_t *)(const void *)(row + K + 8 * (K / 32));
}
static inline const float *fg_q8_k_d(const uint8_t *row, int64_t K)
{
    return (const float *)(const void *)(row + K);
}
static inline const int16_t *fg_q8_k_bsums(const uint8_t *row, int64_t K)
{
    return (const int16_t *)(const void *)(row + K + 4 * (K / 256));
}

/* x rounded to the nearest f16 value (the precision ggml stores activation
 * scales in). */
static inline float fg_mm_f16_round(float x)
{
    return fg_f16_to_f32(fg_f32_to_f16(x));
}

/* Little-endian reads from weight blocks, which are not aligned (compilers
 * turn these into single loads). */
static inline uint16_t fg_mm_rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t fg_mm_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * The 12-byte scale/min block of Q4_K and Q5_K unpacked four at a time: the
 * bytes of sc[0] are the scales of sub-blocks 0..3, sc[1] of 4..7, and m[]
 * the mins likewise (see k4_scale_min in gguf/quant.c for the bit layout).
 */
static inline void fg_mm_k4_scales(const uint8_t *scales, uint32_t sc[2], uint32_t m[2])
{
    uint32_t a = fg_mm_rd32(scales), b = fg_mm_rd32(scales + 4), c = fg_mm_rd32(scales + 8);
    sc[0] = a & 0x3f3f3f3fu;
    m[0] = b & 0x3f3f3f3fu;
    sc[1] = (c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u);
    m[1] = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u);
}

/*
 * The 12-byte scale block of Q3_K unpacked to 16 unbiased 6-bit values (0..63;
 * subtract 32 for the signed scale), four per word: word w holds sub-blocks
 * 4w..4w+3. Low 4 bits: nibble (s / 8) of scales[s % 8]; high 2 bits: bits
 * 2(s/4)..+1 of scales[8 + s%4].
 */
static inline void fg_mm_q3k_scales(const uint8_t *scales, uint32_t out[4])
{
    uint32_t a0 = fg_mm_rd32(scales), a1 = fg_mm_rd32(scales + 4), h = fg_mm_rd32(scales + 8);
    out[0] = (a0 & 0x0f0f0f0fu) | ((h & 0x03030303u) << 4);
    out[1] = (a1 & 0x0f0f0f0fu) | (((h >> 2) & 0x03030303u) << 4);
    out[2] = ((a0 >> 4) & 0x0f0f0f0fu) | (((h >> 4) & 0x03030303u) << 4);
    out[3] = ((a1 >> 4) & 0x0f0f0f0fu) | (((h >> 6) & 0x03030303u) << 4);
}

#endif
