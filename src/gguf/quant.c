/*
 * quant.c — the scalar reference for ggml's block formats: dequantization to
 * f32 and a double-accumulated dot product, plus the f16/bf16 conversions.
 *
 * Input is the raw bytes of a tensor row as they sit in the GGUF mmap; output
 * is f32. Nothing here allocates or owns memory.
 *
 * Every SIMD and GPU kernel is tested against this file, so it is written to be
 * read, not to be fast: each format's block layout is spelled out with byte
 * offsets, and each dequantizer says, for element i of the block, which bits
 * hold it. Blocks are read byte by byte (GGUF is little-endian) and never cast
 * to structs, so unaligned rows are fine and UBSan stays quiet.
 *
 * The arithmetic follows the `gguf` Python package (gguf/quants.py), which
 * matches ggml's C reference: the same float32 operations in the same order.
 * tests/unit/test_quant.c checks bit-exactness against goldens from
 * tools/gen_quant_goldens.py.
 *
 * Why bit-exactness is robust: every product here is exact in float32. An f16
 * scale has at most 11 significant bits, a sub-block scale or min at most 7
 * and a code at most 6, and no format needs more than 23 bits in all (Q6_K:
 * 11 + 7 + 5), with results far from float32 overflow or underflow. So the only
 * rounding in any format is the final `+ m` / `- dmin * min`, and any order of
 * the products, or a fused multiply-add, gives the same bits. SIMD and GPU
 * kernels can therefore match this file exactly, provided they compute in
 * float32 and add the min last, as one rounding.
 */
#include "gguf/quant.h"

#include <string.h>

#include "base/err.h"

/* ---- Byte access --------------------------------------------------------- */

static uint16_t rd_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* An f16 field of a block (scales and mins are stored as IEEE half). */
static float rd_f16(const uint8_t *p)
{
    return fg_f16_to_f32(rd_u16(p));
}

/* A byte as two's-complement int8, without relying on the implementation-
 * defined conversion of out-of-range values to a signed type. */
static int as_i8(uint8_t b)
{
    return b < 128 ? (int)b : (int)b - 256;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ---- Half and bfloat16 --------------------------------------------------- */

/*
 * IEEE binary16: sign(1) exponent(5, bias 15) mantissa(10). Every half is
 * exactly representable as a float. NaN payloads are kept (shifted into the top
 * of the float mantissa), as numpy does; the quiet bit is not forced.
 */
float fg_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;

    if (exp == 0x1f) /* Inf (man == 0) or NaN */
        return f32_from_bits(sign | 0x7f800000u | man << 13);
    if (exp == 0) {
        /* Zero or subnormal: man * 2^-24, exact in float (a normal float for
         * man > 0); the sign is applied by bits so that -0 stays -0. */
        float mag = (float)man * 0x1p-24f;
        return f32_from_bits(sign | f32_bits(mag));
    }
    /* Normal: rebias the exponent from 15 to 127. */
    return f32_from_bits(sign | (exp + 112) << 23 | man << 13);
}

/*
 * Float to half, rounding to nearest with ties to even (numpy's astype). Values
 * at or above 65520 (halfway between 65504, the largest half, and 65536)
 * become Inf; values at or below 2^-25 (half the smallest subnormal) become a
 * signed zero. NaN keeps the top 10 bits of its payload, or becomes 0x7c01 if
 * those are all zero, so that it stays a NaN (numpy's rule).
 */
uint16_t fg_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;

    if (ax > 0x7f800000u) { /* NaN */
        uint32_t payload = (ax & 0x7fffffu) >> 13;
        return (uint16_t)(sign | 0x7c00 | (payload ? payload : 1));
    }
    if (ax >= 0x477ff000u) /* >= 65520, including Inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax <= 0x33000000u) /* <= 2^-25 */
        return sign;

    uint32_t exp = ax >> 23;              /* biased float exponent */
    uint32_t man = (ax & 0x7fffffu) | 0x800000u; /* with the implicit 1 */
    uint32_t h, rem, half;
    if (exp < 113) {
        /* Below 2^-14: a half subnormal, counting units of 2^-24. The value is
         * man * 2^(exp - 150), so the unit count is man >> (126 - exp); the
         * shift is 14..24 here. */
        uint32_t shift = 126 - exp;
        h = man >> shift;
        rem = man & ((1u << shift) - 1);
        half = 1u << (shift - 1);
    } else {
        /* Normal: rebias 127 -> 15 and keep the top 10 mantissa bits. */
        h = (exp - 112) << 10 | (man & 0x7fffffu) >> 13;
        rem = man & 0x1fff;
        half = 0x1000;
    }
    /* Round half to even. A carry out of the mantissa correctly bumps the
     * exponent (subnormal -> smallest normal, or 65504 + ulp -> excluded above). */
    if (rem > half || (rem == half && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

/* bfloat16 is the top half of a float, so widening is a shift (exact, NaN
 * payloads kept). */
float fg_bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

/*
 * Float to bfloat16, round to nearest even by adding 0x7fff plus the lowest
 * kept bit and truncating; overflow rounds to Inf through the carry. NaN keeps
 * its sign and top payload bits and gets the quiet bit (0x40) set, so it cannot
 * truncate to Inf. This is ggml_compute_fp32_to_bf16, which the `gguf` package
 * reproduces.
 */
uint16_t fg_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* ---- Block formats -------------------------------------------------------
 *
 * Each dequantizer turns one block at `b` into block_size floats at `y`. All
 * multi-byte fields are little-endian; "f16" is an IEEE half. In the K-quants
 * a 256-element super-block holds sub-blocks of 16 or 32 elements, each with
 * its own small integer scale (and min) that multiplies the f16 super-scale.
 */

/* F32, F16, BF16: blocks of one element. */
static void dq_f32(const uint8_t *b, float *y)
{
    y[0] = f32_from_bits(rd_u32(b));
}

static void dq_f16(const uint8_t *b, float *y)
{
    y[0] = fg_f16_to_f32(rd_u16(b));
}

static void dq_bf16(const uint8_t *b, float *y)
{
    y[0] = fg_bf16_to_f32(rd_u16(b));
}

/*
 * Q4_0: 32 elements in 18 bytes, symmetric 4-bit.
 *   off  0  f16 d
 *   off  2  u8  qs[16]   element j in the low nibble of qs[j], j+16 in the high
 * y = d * (q - 8)
 */
static void dq_q4_0(const uint8_t *b, float *y)
{
    float d = rd_f16(b);
    const uint8_t *qs = b + 2;
    for (int i = 0; i < 32; i++) {
        int q = (qs[i % 16] >> (4 * (i / 16))) & 0xf;
        y[i] = d * (float)(q - 8);
    }
}

/*
 * Q4_1: 32 elements in 20 bytes, 4-bit with an offset.
 *   off  0  f16 d
 *   off  2  f16 m
 *   off  4  u8  qs[16]   nibbles as in Q4_0
 * y = d * q + m
 */
static void dq_q4_1(const uint8_t *b, float *y)
{
    float d = rd_f16(b), m = rd_f16(b + 2);
    const uint8_t *qs = b + 4;
    for (int i = 0; i < 32; i++) {
        int q = (qs[i % 16] >> (4 * (i / 16))) & 0xf;
        y[i] = d * (float)q + m;
    }
}

/*
 * Q5_0: 32 elements in 22 bytes, symmetric 5-bit.
 *   off  0  f16 d
 *   off  2  u32 qh       bit i is bit 4 of element i
 *   off  6  u8  qs[16]   low 4 bits, nibbles as in Q4_0
 * y = d * (q - 16)
 */
static void dq_q5_0(const uint8_t *b, float *y)
{
    float d = rd_f16(b);
    uint32_t qh = rd_u32(b + 2);
    const uint8_t *qs = b + 6;
    for (int i = 0; i < 32; i++) {
        int q = ((qs[i % 16] >> (4 * (i / 16))) & 0xf) | (int)((qh >> i) & 1) << 4;
        y[i] = d * (float)(q - 16);
    }
}

/*
 * Q5_1: 32 elements in 24 bytes, 5-bit with an offset.
 *   off  0  f16 d
 *   off  2  f16 m
 *   off  4  u32 qh       bit i is bit 4 of element i
 *   off  8  u8  qs[16]   low 4 bits, nibbles as in Q4_0
 * y = d * q + m
 */
static void dq_q5_1(const uint8_t *b, float *y)
{
    float d = rd_f16(b), m = rd_f16(b + 2);
    uint32_t qh = rd_u32(b + 4);
    const uint8_t *qs = b + 8;
    for (int i = 0; i < 32; i++) {
        int q = ((qs[i % 16] >> (4 * (i / 16))) & 0xf) | (int)((qh >> i) & 1) << 4;
        y[i] = d * (float)q + m;
    }
}

/*
 * Q8_0: 32 elements in 34 bytes.
 *   off  0  f16 d
 *   off  2  i8  qs[32]
 * y = q * d
 */
static void dq_q8_0(const uint8_t *b, float *y)
{
    float d = rd_f16(b);
    for (int i = 0; i < 32; i++)
        y[i] = (float)as_i8(b[2 + i]) * d;
}

/*
 * Q2_K: 256 elements in 84 bytes; 16 sub-blocks of 16 with 4-bit scale and min.
 *   off  0  u8  scales[16]  sub-block s: scale = low nibble, min = high nibble
 *   off 16  u8  qs[64]      2-bit q of element i: qs[32*(i/128) + i%32]
 *                           bits 2*k..2*k+1 with k = (i%128)/32
 *   off 80  f16 d           super-scale for the scales
 *   off 82  f16 dmin        super-scale for the mins
 * y = (d * scale) * q - (dmin * min), s = i/16
 */
static void dq_q2_k(const uint8_t *b, float *y)
{
    const uint8_t *scales = b, *qs = b + 16;
    float d = rd_f16(b + 80), dmin = rd_f16(b + 82);
    for (int i = 0; i < 256; i++) {
        int s = i / 16;
        float dl = d * (float)(scales[s] & 0xf);
        float ml = dmin * (float)(scales[s] >> 4);
        int q = (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        y[i] = dl * (float)q - ml;
    }
}

/*
 * Q3_K: 256 elements in 110 bytes; 16 sub-blocks of 16 with 6-bit scales.
 *   off   0  u8  hmask[32]   bit i/32 of hmask[i%32] is the high bit of element i
 *   off  32  u8  qs[64]      low 2 bits, placed as in Q2_K
 *   off  96  u8  scales[12]  16 six-bit scales, biased by 32 (see below)
 *   off 108  f16 d
 * q = low2 - (high ? 0 : 4), in -4..3 (a set high bit means "no offset").
 * y = (d * (scale - 32)) * q, s = i/16
 *
 * Scale s: low 4 bits are the low nibble of scales[s] for s < 8, else the high
 * nibble of scales[s-8]; high 2 bits are bits 2*(s/4)..+1 of scales[8 + s%4].
 */
static int q3_k_scale(const uint8_t *scales, int s)
{
    int lo = s < 8 ? scales[s] & 0xf : scales[s - 8] >> 4;
    int hi = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
    return (lo | hi << 4) - 32;
}

static void dq_q3_k(const uint8_t *b, float *y)
{
    const uint8_t *hmask = b, *qs = b + 32, *scales = b + 96;
    float d = rd_f16(b + 108);
    for (int i = 0; i < 256; i++) {
        float dl = d * (float)q3_k_scale(scales, i / 16);
        int lo = (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        int hi = (hmask[i % 32] >> (i / 32)) & 1;
        y[i] = dl * (float)(lo - (hi ? 0 : 4));
    }
}

/*
 * The 12-byte scale/min block shared by Q4_K and Q5_K: 8 six-bit scales and 8
 * six-bit mins, one pair per 32-element sub-block s.
 *   s < 4:  scale = scales[s] & 63,         min = scales[s+4] & 63
 *   s >= 4: scale = (scales[s+4] & 15) | (scales[s-4] >> 6) << 4
 *           min   = (scales[s+4] >> 4) | (scales[s]   >> 6) << 4
 */
static void k4_scale_min(const uint8_t *scales, int s, int *sc, int *m)
{
    if (s < 4) {
        *sc = scales[s] & 63;
        *m = scales[s + 4] & 63;
    } else {
        *sc = (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4;
        *m = (scales[s + 4] >> 4) | (scales[s] >> 6) << 4;
    }
}

/*
 * Q4_K: 256 elements in 144 bytes; 8 sub-blocks of 32.
 *   off  0  f16 d
 *   off  2  f16 dmin
 *   off  4  u8  scales[12]  see k4_scale_min
 *   off 16  u8  qs[128]     4-bit q of element i: qs[32*(i/64) + i%32],
 *                           low nibble if (i/32) is even, else high
 * y = (d * scale) * q - (dmin * min), s = i/32
 */
static void dq_q4_k(const uint8_t *b, float *y)
{
    float d = rd_f16(b), dmin = rd_f16(b + 2);
    const uint8_t *scales = b + 4, *qs = b + 16;
    for (int i = 0; i < 256; i++) {
        int sc, m;
        k4_scale_min(scales, i / 32, &sc, &m);
        float dl = d * (float)sc, ml = dmin * (float)m;
        int q = (qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 0xf;
        y[i] = dl * (float)q - ml;
    }
}

/*
 * Q5_K: 256 elements in 176 bytes; Q4_K plus a fifth bit.
 *   off  0  f16 d
 *   off  2  f16 dmin
 *   off  4  u8  scales[12]  see k4_scale_min
 *   off 16  u8  qh[32]      bit i/32 of qh[i%32] is bit 4 of element i
 *   off 48  u8  qs[128]     low 4 bits, placed as in Q4_K
 * y = (d * scale) * q - (dmin * min), s = i/32
 */
static void dq_q5_k(const uint8_t *b, float *y)
{
    float d = rd_f16(b), dmin = rd_f16(b + 2);
    const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + 48;
    for (int i = 0; i < 256; i++) {
        int sc, m;
        k4_scale_min(scales, i / 32, &sc, &m);
        float dl = d * (float)sc, ml = dmin * (float)m;
        int lo = (qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 0xf;
        int hi = (qh[i % 32] >> (i / 32)) & 1;
        y[i] = dl * (float)(lo | hi << 4) - ml;
    }
}

/*
 * Q6_K: 256 elements in 210 bytes; 16 sub-blocks of 16 with int8 scales.
 *   off   0  u8  ql[128]     low 4 bits of element i: ql[64*(i/128) + i%64],
 *                            low nibble if (i%128) < 64, else high
 *   off 128  u8  qh[64]      high 2 bits: qh[32*(i/128) + i%32],
 *                            bits 2*k..2*k+1 with k = (i%128)/32
 *   off 192  i8  scales[16]
 *   off 208  f16 d
 * y = (d * scale) * (q - 32), s = i/16
 */
static void dq_q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b, *qh = b + 128, *scales = b + 192;
    float d = rd_f16(b + 208);
    for (int i = 0; i < 256; i++) {
        float dl = d * (float)as_i8(scales[i / 16]);
        int lo = (ql[64 * (i / 128) + i % 64] >> (4 * ((i % 128) / 64))) & 0xf;
        int hi = (qh[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
        y[i] = dl * (float)((lo | hi << 4) - 32);
    }
}

/*
 * MXFP4 (OCP Microscaling, as ggml stores it): 32 elements in 17 bytes.
 *   off  0  u8  e        E8M0 shared exponent: the block scale is 2^(e - 127)
 *   off  1  u8  qs[16]   E2M1 codes, nibbles as in Q4_0
 * An E2M1 code is sign(1) exponent(2) mantissa(1): magnitudes 0, 0.5, 1, 1.5,
 * 2, 3, 4, 6. ggml keeps them doubled, as the integers fg_mxfp4_codes, and
 * halves the scale instead: y = code2 * 2^(e - 128). Both factors are exact and
 * the product has at most 4 significant bits, so it is exact too (or, for e
 * above 252, overflows to Inf as the package's does; e = 255, which the spec
 * reserves for NaN, is read as a scale like any other, as ggml does).
 */
const int8_t fg_mxfp4_codes[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* 2^(e - 128) as a float: subnormal for e = 0 and 1 (bit 21 or 22 of the
 * mantissa), else the biased exponent e - 1. */
float fg_e8m0_half(uint8_t e)
{
    return f32_from_bits(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23);
}

static void dq_mxfp4(const uint8_t *b, float *y)
{
    float d = fg_e8m0_half(b[0]);
    const uint8_t *qs = b + 1;
    for (int i = 0; i < 32; i++) {
        int q = (qs[i % 16] >> (4 * (i / 16))) & 0xf;
        y[i] = d * (float)fg_mxfp4_codes[q];
    }
}

/* ---- Rows ---------------------------------------------------------------- */

typedef void (*fg_dequant_block_fn)(const uint8_t *block, float *y);

static const fg_dequant_block_fn fg_dequant_blocks[FG_TYPE_COUNT] = {
    [FG_TYPE_F32] = dq_f32,   [FG_TYPE_F16] = dq_f16,   [FG_TYPE_BF16] = dq_bf16,
    [FG_TYPE_Q4_0] = dq_q4_0, [FG_TYPE_Q4_1] = dq_q4_1, [FG_TYPE_Q5_0] = dq_q5_0,
    [FG_TYPE_Q5_1] = dq_q5_1, [FG_TYPE_Q8_0] = dq_q8_0, [FG_TYPE_Q2_K] = dq_q2_k,
    [FG_TYPE_Q3_K] = dq_q3_k, [FG_TYPE_Q4_K] = dq_q4_k, [FG_TYPE_Q5_K] = dq_q5_k,
    [FG_TYPE_Q6_K] = dq_q6_k, [FG_TYPE_MXFP4] = dq_mxfp4,
};

bool fg_quant_supported(fg_type t)
{
    return (unsigned)t < FG_TYPE_COUNT && fg_dequant_blocks[t] != NULL;
}

/* Callers check fg_quant_supported and the row length first; getting either
 * wrong here is a bug, not bad input. */
void fg_dequant_row(fg_type t, const void *src, float *dst, int64_t n)
{
    FG_ASSERT(fg_quant_supported(t));
    const fg_type_info *ti = fg_type_get((uint32_t)t);
    FG_ASSERT(n >= 0 && n % ti->block_size == 0);

    const uint8_t *b = src;
    fg_dequant_block_fn dq = fg_dequant_blocks[t];
    for (int64_t i = 0; i < n; i += ti->block_size) {
        dq(b, dst + i);
        b += ti->type_size;
    }
}

/* Dequantizes a chunk of at most FG_DOT_CHUNK elements at a time into a stack
 * buffer, then accumulates products in double, in element order. Each product
 * of two floats is exact in double, so the only rounding is in the sum. */
enum { FG_DOT_CHUNK = 256 };

double fg_vec_dot(fg_type t, const void *w, const float *x, int64_t n)
{
    FG_ASSERT(fg_quant_supported(t));
    const fg_type_info *ti = fg_type_get((uint32_t)t);
    FG_ASSERT(n >= 0 && n % ti->block_size == 0);
    FG_ASSERT(ti->block_size <= FG_DOT_CHUNK && FG_DOT_CHUNK % ti->block_size == 0);

    const uint8_t *b = w;
    float y[FG_DOT_CHUNK];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i += FG_DOT_CHUNK) {
        int64_t len = n - i < FG_DOT_CHUNK ? n - i : FG_DOT_CHUNK;
        fg_dequant_row(t, b, y, len);
        b += (size_t)(len / ti->block_size) * ti->type_size;
        for (int64_t j = 0; j < len; j++)
            sum += (double)y[j] * (double)x[i + j];
    }
    return sum;
}
