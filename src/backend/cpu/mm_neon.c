/*
 * mm_neon.c — the matmul kernels for aarch64 (NEON is part of the baseline,
 * so no flags and no run-time check are needed); elsewhere the file is empty
 * and the getter returns NULL.
 *
 * The quantized kernels compute exactly mm_generic.c's integer block and
 * sub-block sums, with weight codes made signed (Q4_0: q - 8, Q6_K: q - 32,
 * ...) so that one signed 8-bit dot instruction serves every format, and then
 * do the generic code's float arithmetic in the same order: their results are
 * bit-identical to generic. The 8-bit dot is vdotq_s32 where the compiler
 * targets the dot-product extension (__ARM_FEATURE_DOTPROD, e.g. -mcpu=native
 * on Apple M1 or Neoverse), else widening multiplies (vmull_s8 + pairwise
 * adds; |w x| <= 128 * 127 keeps pairs within i16). The float kernels use
 * four-lane FMAs.
 *
 * Each weight block is unpacked once and dotted with all NT activation rows
 * (tiles, as in mm_x86.h). Activation quantization is the generic one.
 */
#include "backend/cpu/mm_kernels.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#include <string.h>

#include "gguf/quant.h"

#define FG_INLINE static inline __attribute__((always_inline))

/* ---- Helpers -------------------------------------------------------------------- */

/* sum a[i] * x[i], i < 16 (as int32 lanes, to be added up by the caller). */
FG_INLINE int32x4_t dot16(int32x4_t acc, int8x16_t a, const int8_t *x)
{
    int8x16_t xv = vld1q_s8(x);
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, xv);
#else
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(xv));
    p = vmlal_s8(p, vget_high_s8(a), vget_high_s8(xv));
    return vpadalq_s16(acc, p);
#endif
}

FG_INLINE int dot32(int8x16_t a0, int8x16_t a1, const int8_t *x)
{
    return vaddvq_s32(dot16(dot16(vdupq_n_s32(0), a0, x), a1, x + 16));
}

FG_INLINE int dot16s(int8x16_t a, const int8_t *x)
{
    return vaddvq_s32(dot16(vdupq_n_s32(0), a, x));
}

static float f16s(const uint8_t *p)
{
    return fg_f16_to_f32(fg_mm_rd16(p));
}

/* 0x10 in byte i for each set bit i of the 16 bits b: Q5's fifth bit. */
FG_INLINE uint8x16_t q5_bits16(uint32_t b)
{
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    uint8x16_t v = vcombine_u8(vdup_n_u8((uint8_t)b), vdup_n_u8((uint8_t)(b >> 8)));
    return vandq_u8(vtstq_u8(v, vld1q_u8(bit)), vdupq_n_u8(0x10));
}

/* The kernel name(...) loops over its weight rows and calls name##_tile
 * with a constant NT for each. */
#define TILE_ROWS(name, NT)                                                                            \
    for (int r = 0; r < nr; r++) name##_tile(K, w + r * ws, x, xs, NT, out + r * FG_MM_NT)
#define TILES(name)                                                                                    \
    static void name(int64_t K, const uint8_t *w, size_t ws, int nr, const uint8_t *x, size_t xs, int nt, \
                     float *out)                                                                       \
    {                                                                                                  \
        switch (nt) {                                                                                  \
        case 1: TILE_ROWS(name, 1); break;                                                             \
        case 2: TILE_ROWS(name, 2); break;                                                             \
        case 3: TILE_ROWS(name, 3); break;                                                             \
        default: TILE_ROWS(name, 4); break;                                                            \
        }                                                                                              \
    }

/* ---- Float weights --------------------------------------------------------------------- */

/* Four weights as floats: F32 (0), F16 (1), BF16 (2). */
FG_INLINE float32x4_t load_w4(const uint8_t *w, int64_t k, int type)
{
    if (type == 0) return vreinterpretq_f32_u8(vld1q_u8(w + 4 * k));
    uint16x4_t h = vreinterpret_u16_u8(vld1_u8(w + 2 * k));
    if (type == 1) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

FG_INLINE float load_w1(const uint8_t *w, int64_t k, int type)
{
    if (type == 0) {
        float v;
        uint32_t u = fg_mm_rd32(w + 4 * k);
        memcpy(&v, &u, 4);
        return v;
    }
    if (type == 1) return fg_f16_to_f32(fg_mm_rd16(w + 2 * k));
    return fg_bf16_to_f32(fg_mm_rd16(w + 2 * k));
}

FG_INLINE void float_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out,
                          int type)
{
    const float *xr[FG_MM_NT];
    float32x4_t acc[FG_MM_NT][4];
    for (int j = 0; j < NT; j++) {
        xr[j] = (const float *)(const void *)(x + j * xs);
        for (int u = 0; u < 4; u++) acc[j][u] = vdupq_n_f32(0.0f);
    }
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        for (int u = 0; u < 4; u++) {
            float32x4_t wv = load_w4(w, k + 4 * u, type);
            for (int j = 0; j < NT; j++) acc[j][u] = vfmaq_f32(acc[j][u], wv, vld1q_f32(xr[j] + k + 4 * u));
        }
    }
    for (; k + 4 <= K; k += 4) {
        float32x4_t wv = load_w4(w, k, type);
        for (int j = 0; j < NT; j++) acc[j][0] = vfmaq_f32(acc[j][0], wv, vld1q_f32(xr[j] + k));
    }
    for (int j = 0; j < NT; j++) {
        float s = vaddvq_f32(vaddq_f32(vaddq_f32(acc[j][0], acc[j][1]), vaddq_f32(acc[j][2], acc[j][3])));
        for (int64_t kk = k; kk < K; kk++) s += load_w1(w, kk, type) * xr[j][kk];
        out[j] = s;
    }
}

FG_INLINE void dot_f32_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    float_tile(K, w, x, xs, NT, out, 0);
}
FG_INLINE void dot_f16_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    float_tile(K, w, x, xs, NT, out, 1);
}
FG_INLINE void dot_bf16_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    float_tile(K, w, x, xs, NT, out, 2);
}

/* ---- 32-element blocks against Q8_1 ------------------------------------------------------- */

enum { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0, K_MXFP4 };

/* As mm_generic.c: sum += d_w d_x isum (+ m_w s_x), per row, in block order. */
FG_INLINE void q32_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out,
                        const int kind)
{
    const size_t bytes = kind == K_Q4_0 ? 18 : kind == K_Q4_1 ? 20 : kind == K_Q5_0 ? 22 : kind == K_Q5_1 ? 24
                       : kind == K_MXFP4 ? 17 : 34;
    const int8x16_t codes = vld1q_s8(fg_mxfp4_codes);
    const int8_t *qx[FG_MM_NT];
    const float *ds[FG_MM_NT];
    float sum[FG_MM_NT];
    for (int j = 0; j < NT; j++) {
        qx[j] = (const int8_t *)(x + j * xs);
        ds[j] = fg_q8_1_ds(x + j * xs, K);
        sum[j] = 0.0f;
    }
    const uint8x16_t m4 = vdupq_n_u8(0xf);
    for (int64_t b = 0; b < K / 32; b++, w += bytes) {
        int8x16_t q0, q1;
        float d = kind == K_MXFP4 ? fg_e8m0_half(w[0]) : f16s(w), m = 0.0f;
        if (kind == K_MXFP4) { /* the doubled E2M1 codes, looked up from the nibbles */
            uint8x16_t raw = vld1q_u8(w + 1);
            q0 = vqtbl1q_s8(codes, vandq_u8(raw, m4));
            q1 = vqtbl1q_s8(codes, vshrq_n_u8(raw, 4));
        } else if (kind == K_Q8_0) {
            q0 = vld1q_s8((const int8_t *)(w + 2));
            q1 = vld1q_s8((const int8_t *)(w + 18));
        } else {
            size_t off = kind == K_Q4_0 ? 2 : kind == K_Q4_1 ? 4 : kind == K_Q5_0 ? 6 : 8;
            uint8x16_t raw = vld1q_u8(w + off);
            uint8x16_t lo = vandq_u8(raw, m4), hi = vshrq_n_u8(raw, 4);
            if (kind == K_Q5_0 || kind == K_Q5_1) {
                uint32_t qh = fg_mm_rd32(w + (kind == K_Q5_0 ? 2 : 4));
                lo = vorrq_u8(lo, q5_bits16(qh));
                hi = vorrq_u8(hi, q5_bits16(qh >> 16));
            }
            q0 = vreinterpretq_s8_u8(lo);
            q1 = vreinterpretq_s8_u8(hi);
            if (kind == K_Q4_0 || kind == K_Q5_0) {
                int8x16_t c = vdupq_n_s8(kind == K_Q4_0 ? 8 : 16);
                q0 = vsubq_s8(q0, c);
                q1 = vsubq_s8(q1, c);
            }
            if (kind == K_Q4_1 || kind == K_Q5_1) m = f16s(w + 2);
        }
        for (int j = 0; j < NT; j++) {
            int isum = dot32(q0, q1, qx[j] + 32 * b);
            if (kind == K_Q4_1 || kind == K_Q5_1) sum[j] += d * ds[j][2 * b] * (float)isum + m * ds[j][2 * b + 1];
            else sum[j] += d * ds[j][2 * b] * (float)isum;
        }
    }
    for (int j = 0; j < NT; j++) out[j] = sum[j];
}

FG_INLINE void dot_q4_0_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q32_tile(K, w, x, xs, NT, out, K_Q4_0);
}
FG_INLINE void dot_mxfp4_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q32_tile(K, w, x, xs, NT, out, K_MXFP4);
}
FG_INLINE void dot_q4_1_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q32_tile(K, w, x, xs, NT, out, K_Q4_1);
}
FG_INLINE void dot_q5_0_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q32_tile(K, w, x, xs, NT, out, K_Q5_0);
}
FG_INLINE void dot_q5_1_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q32_tile(K, w, x, xs, NT, out, K_Q5_1);
}
FG_INLINE void dot_q8_0_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q32_tile(K, w, x, xs, NT, out, K_Q8_0);
}

/* ---- K-quants against Q8_K ------------------------------------------------------------------- */

typedef struct kq_rows {
    const int8_t *qx[FG_MM_NT];
    const float *dx[FG_MM_NT];
    const int16_t *bsums[FG_MM_NT];
    float sum[FG_MM_NT];
    int isum[FG_MM_NT], msum[FG_MM_NT];
} kq_rows;

FG_INLINE void kq_init(kq_rows *r, int64_t K, const uint8_t *x, size_t xs, int NT)
{
    for (int j = 0; j < NT; j++) {
        r->qx[j] = (const int8_t *)(x + j * xs);
        r->dx[j] = fg_q8_k_d(x + j * xs, K);
        r->bsums[j] = fg_q8_k_bsums(x + j * xs, K);
        r->sum[j] = 0.0f;
    }
}

/* Codes of 16 elements 128h + 32k + 16u + i at 2 bits (Q2_K, Q3_K low bits). */
FG_INLINE uint8x16_t bits2(const uint8_t *qs, int h, int k, int u)
{
    uint8x16_t v = vld1q_u8(qs + 32 * h + 16 * u);
    return vandq_u8(vshlq_u8(v, vdupq_n_s8((int8_t)(-2 * k))), vdupq_n_u8(3));
}

FG_INLINE void dot_q2_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    kq_rows r;
    kq_init(&r, K, x, xs, NT);
    for (int64_t b = 0; b < K / 256; b++, w += 84) {
        const uint8_t *scales = w, *qs = w + 16;
        for (int j = 0; j < NT; j++) r.isum[j] = r.msum[j] = 0;
        for (int s = 0; s < 16; s++) {
            int h = s / 8, k = (s % 8) / 2, u = s % 2;
            int8x16_t q = vreinterpretq_s8_u8(bits2(qs, h, k, u));
            for (int j = 0; j < NT; j++) {
                r.isum[j] += (scales[s] & 0xf) * dot16s(q, r.qx[j] + 256 * b + 16 * s);
                r.msum[j] += (scales[s] >> 4) * r.bsums[j][16 * b + s];
            }
        }
        float d = f16s(w + 80), dmin = f16s(w + 82);
        for (int j = 0; j < NT; j++) r.sum[j] += r.dx[j][b] * (d * (float)r.isum[j] - dmin * (float)r.msum[j]);
    }
    for (int j = 0; j < NT; j++) out[j] = r.sum[j];
}

FG_INLINE void dot_q3_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    kq_rows r;
    kq_init(&r, K, x, xs, NT);
    for (int64_t b = 0; b < K / 256; b++, w += 110) {
        const uint8_t *hmask = w, *qs = w + 32;
        uint32_t sc[4];
        fg_mm_q3k_scales(w + 96, sc);
        for (int j = 0; j < NT; j++) r.isum[j] = 0;
        for (int s = 0; s < 16; s++) {
            int h = s / 8, k = (s % 8) / 2, u = s % 2;
            uint8x16_t hb = vld1q_u8(hmask + 16 * u);
            hb = vandq_u8(vshlq_u8(hb, vdupq_n_s8((int8_t)(-(4 * h + k)))), vdupq_n_u8(1));
            uint8x16_t uq = vorrq_u8(bits2(qs, h, k, u), vshlq_n_u8(hb, 2));
            int8x16_t q = vsubq_s8(vreinterpretq_s8_u8(uq), vdupq_n_s8(4));
            int scale = (int)((sc[s / 4] >> (8 * (s % 4))) & 0xff) - 32;
            for (int j = 0; j < NT; j++) r.isum[j] += scale * dot16s(q, r.qx[j] + 256 * b + 16 * s);
        }
        float d = f16s(w + 108);
        for (int j = 0; j < NT; j++) r.sum[j] += r.dx[j][b] * (d * (float)r.isum[j]);
    }
    for (int j = 0; j < NT; j++) out[j] = r.sum[j];
}

FG_INLINE void q45_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out,
                          const bool five)
{
    kq_rows r;
    kq_init(&r, K, x, xs, NT);
    const size_t bytes = five ? 176 : 144;
    const uint8x16_t m4 = vdupq_n_u8(0xf), one = vdupq_n_u8(1);
    for (int64_t b = 0; b < K / 256; b++, w += bytes) {
        const uint8_t *qh = w + 16, *qs = w + (five ? 48 : 16);
        uint32_t sc[2], mn[2];
        fg_mm_k4_scales(w + 4, sc, mn);
        for (int j = 0; j < NT; j++) r.isum[j] = r.msum[j] = 0;
        uint8x16_t h0 = five ? vld1q_u8(qh) : vdupq_n_u8(0), h1 = five ? vld1q_u8(qh + 16) : vdupq_n_u8(0);
        for (int s = 0; s < 8; s++) {
            int c = s / 2;
            uint8x16_t r0 = vld1q_u8(qs + 32 * c), r1 = vld1q_u8(qs + 32 * c + 16);
            uint8x16_t a0 = s % 2 ? vshrq_n_u8(r0, 4) : vandq_u8(r0, m4);
            uint8x16_t a1 = s % 2 ? vshrq_n_u8(r1, 4) : vandq_u8(r1, m4);
            if (five) {
                int8x16_t sh = vdupq_n_s8((int8_t)-s);
                a0 = vorrq_u8(a0, vshlq_n_u8(vandq_u8(vshlq_u8(h0, sh), one), 4));
                a1 = vorrq_u8(a1, vshlq_n_u8(vandq_u8(vshlq_u8(h1, sh), one), 4));
            }
            int scale = (int)((sc[s / 4] >> (8 * (s % 4))) & 0xff), mins = (int)((mn[s / 4] >> (8 * (s % 4))) & 0xff);
            for (int j = 0; j < NT; j++) {
                r.isum[j] += scale * dot32(vreinterpretq_s8_u8(a0), vreinterpretq_s8_u8(a1), r.qx[j] + 256 * b + 32 * s);
                r.msum[j] += mins * (r.bsums[j][16 * b + 2 * s] + r.bsums[j][16 * b + 2 * s + 1]);
            }
        }
        float d = f16s(w), dmin = f16s(w + 2);
        for (int j = 0; j < NT; j++) r.sum[j] += r.dx[j][b] * (d * (float)r.isum[j] - dmin * (float)r.msum[j]);
    }
    for (int j = 0; j < NT; j++) out[j] = r.sum[j];
}

FG_INLINE void dot_q4_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q45_k_tile(K, w, x, xs, NT, out, false);
}
FG_INLINE void dot_q5_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q45_k_tile(K, w, x, xs, NT, out, true);
}

/* Q6_K: elements 128h + 32k + 16u + i: low 4 bits from ql[64h + 32(k%2) +
 * 16u + i] (high nibble for k >= 2), high 2 bits from bits 2k of qh[32h + 16u
 * + i]; sub-block s = 8h + 2k + u. */
FG_INLINE void dot_q6_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    kq_rows r;
    kq_init(&r, K, x, xs, NT);
    const uint8x16_t m4 = vdupq_n_u8(0xf), m3 = vdupq_n_u8(3);
    for (int64_t b = 0; b < K / 256; b++, w += 210) {
        const uint8_t *ql = w, *qh = w + 128;
        const int8_t *scales = (const int8_t *)(w + 192);
        for (int j = 0; j < NT; j++) r.isum[j] = 0;
        for (int s = 0; s < 16; s++) {
            int h = s / 8, k = (s % 8) / 2, u = s % 2;
            uint8x16_t lo = vld1q_u8(ql + 64 * h + 32 * (k % 2) + 16 * u);
            lo = k >= 2 ? vshrq_n_u8(lo, 4) : vandq_u8(lo, m4);
            uint8x16_t hi = vandq_u8(vshlq_u8(vld1q_u8(qh + 32 * h + 16 * u), vdupq_n_s8((int8_t)(-2 * k))), m3);
            int8x16_t q = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, vshlq_n_u8(hi, 4))), vdupq_n_s8(32));
            for (int j = 0; j < NT; j++) r.isum[j] += scales[s] * dot16s(q, r.qx[j] + 256 * b + 16 * s);
        }
        float d = f16s(w + 208);
        for (int j = 0; j < NT; j++) r.sum[j] += r.dx[j][b] * (d * (float)r.isum[j]);
    }
    for (int j = 0; j < NT; j++) out[j] = r.sum[j];
}

#define TILES_OF(type, name) TILES(dot_##name)
FG_MM_EACH_TYPE(TILES_OF)

static const fg_mm_kernels neon = {
    .isa = "neon",
    .dot = FG_MM_DOT_TABLE,
};

const fg_mm_kernels *fg_mm_kernels_neon(void)
{
    return &neon;
}
#else
const fg_mm_kernels *fg_mm_kernels_neon(void)
{
    return NULL;
}
#endif
