/*
 * mm_generic.c — the scalar matmul kernels: activation quantization (Q8_1,
 * Q8_K) and the dot product of one weight row with quantized or f32
 * activation rows, for every supported weight type.
 *
 * This is the reference the SIMD kernels (mm_avx2.c, mm_avx512.c, mm_neon.c)
 * are tested against, and the fallback on other CPUs, so it is written to be
 * read. Every SIMD kernel computes the same integer block sums as these
 * (exactly) and differs only in the order in which it adds the float terms.
 * Formats: see gguf/quant.c for the weights and mm_kernels.h for the
 * activations.
 *
 * A block's contribution, with d the scales and q the codes:
 *   Q4_0 Q5_0 Q8_0   d_w d_x sum(q_w q_x)
 *   MXFP4            the same, q_w the doubled E2M1 code, d_w the halved scale
 *   Q4_1 Q5_1        d_w d_x sum(q_w q_x) + m_w s_x
 *   K-quants         d_x (d sum_s sc_s sum_s(q_w q_x) - dmin sum_s m_s bsum_s)
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/mm_kernels.h"
#include "gguf/quant.h"

static float f16(const uint8_t *p)
{
    return fg_f16_to_f32(fg_mm_rd16(p));
}

/* ---- Activation quantization ------------------------------------------------- */

/*
 * One block of n floats to int8 codes with d = amax / 127 and codes
 * round-half-away-from-zero(x * (1/d)), exactly as ggml's
 * quantize_row_q8_0_ref (and gguf.quants.Q8_0): the reciprocal is taken in
 * float and multiplied, not divided per element. A block holding a NaN or an
 * infinity gets d = NaN and zero codes, so the outputs it feeds become NaN
 * instead of garbage; a block so small that 1/d would overflow (amax below
 * 127 * FLT_MIN) is quantized to zero. Returns d; *sum gets the codes' sum.
 */
static float quant_block(const float *x, int n, int8_t *q, int32_t *sum)
{
    float amax = 0.0f;
    bool bad = false;
    for (int j = 0; j < n; j++) {
        float a = fabsf(x[j]);
        bad |= !(a <= FLT_MAX); /* NaN or Inf */
        amax = a > amax ? a : amax;
    }
    *sum = 0;
    float d = amax / 127.0f;
    if (bad || d < FLT_MIN) {
        for (int j = 0; j < n; j++) q[j] = 0;
        return bad ? NAN : 0.0f;
    }
    float id = 1.0f / d;
    for (int j = 0; j < n; j++) {
        q[j] = (int8_t)roundf(x[j] * id);
        *sum += q[j];
    }
    return d;
}

static void quant_q8_1(const float *x, int64_t K, uint8_t *dst)
{
    int64_t nb = K / 32;
    int8_t *qs = (int8_t *)dst;
    float *ds = (float *)(void *)(dst + K);
    int32_t *nsum = (int32_t *)(void *)(ds + 2 * nb);
    for (int64_t b = 0; b < nb; b++) {
        int32_t sum;
        float d = quant_block(x + 32 * b, 32, qs + 32 * b, &sum);
        d = fg_mm_f16_round(d);
        ds[2 * b] = d;
        ds[2 * b + 1] = d * (float)sum;
        nsum[b] = -sum;
    }
}

static void quant_q8_k(const float *x, int64_t K, uint8_t *dst)
{
    int64_t nb = K / 256;
    int8_t *qs = (int8_t *)dst;
    float *d = (float *)(void *)(dst + K);
    int16_t *bsums = (int16_t *)(void *)(d + nb);
    for (int64_t b = 0; b < nb; b++) {
        int32_t sum;
        d[b] = quant_block(x + 256 * b, 256, qs + 256 * b, &sum);
        for (int s = 0; s < 16; s++) {
            int v = 0;
            for (int j = 0; j < 16; j++) v += qs[256 * b + 16 * s + j];
            bsums[16 * b + s] = (int16_t)v;
        }
    }
}

/* ---- Float weights ----------------------------------------------------------- */

/* Eight running sums, as an 8-lane SIMD kernel keeps, so that a long row does
 * not lose precision in one serial float sum. */
static float dot_float_row(int64_t K, const uint8_t *w, int type, const float *x)
{
    float acc[8] = {0};
    for (int64_t k = 0; k < K; k++) {
        float v;
        if (type == 0) {
            uint32_t u = fg_mm_rd32(w + 4 * k);
            memcpy(&v, &u, 4);
        } else if (type == 1) {
            v = fg_f16_to_f32(fg_mm_rd16(w + 2 * k));
        } else {
            v = fg_bf16_to_f32(fg_mm_rd16(w + 2 * k));
        }
        acc[k % 8] += v * x[k];
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static float dot_f32_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    return dot_float_row(K, w, 0, (const float *)(const void *)x);
}

static float dot_f16_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    return dot_float_row(K, w, 1, (const float *)(const void *)x);
}

static float dot_bf16_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    return dot_float_row(K, w, 2, (const float *)(const void *)x);
}

/* ---- 32-element blocks against Q8_1 ---------------------------------------------- */

/* Element i of a 4-bit block: low nibble of qs[i] for i < 16, else the high
 * nibble of qs[i - 16]. */
static int nib(const uint8_t *qs, int i)
{
    return i < 16 ? qs[i] & 0xf : qs[i - 16] >> 4;
}

static float dot_q4_0_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    const int8_t *qx = (const int8_t *)x;
    const float *ds = fg_q8_1_ds(x, K);
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 32; b++, w += 18, qx += 32) {
        int isum = 0;
        for (int i = 0; i < 32; i++) isum += (nib(w + 2, i) - 8) * qx[i];
        sum += f16(w) * ds[2 * b] * (float)isum;
    }
    return sum;
}

static float dot_q4_1_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    const int8_t *qx = (const int8_t *)x;
    const float *ds = fg_q8_1_ds(x, K);
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 32; b++, w += 20, qx += 32) {
        int isum = 0;
        for (int i = 0; i < 32; i++) isum += nib(w + 4, i) * qx[i];
        sum += f16(w) * ds[2 * b] * (float)isum + f16(w + 2) * ds[2 * b + 1];
    }
    return sum;
}

static float dot_q5_0_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    const int8_t *qx = (const int8_t *)x;
    const float *ds = fg_q8_1_ds(x, K);
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 32; b++, w += 22, qx += 32) {
        uint32_t qh = fg_mm_rd32(w + 2);
        int isum = 0;
        for (int i = 0; i < 32; i++) isum += ((nib(w + 6, i) | (int)((qh >> i) & 1) << 4) - 16) * qx[i];
        sum += f16(w) * ds[2 * b] * (float)isum;
    }
    return sum;
}

static float dot_q5_1_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    const int8_t *qx = (const int8_t *)x;
    const float *ds = fg_q8_1_ds(x, K);
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 32; b++, w += 24, qx += 32) {
        uint32_t qh = fg_mm_rd32(w + 4);
        int isum = 0;
        for (int i = 0; i < 32; i++) isum += (nib(w + 8, i) | (int)((qh >> i) & 1) << 4) * qx[i];
        sum += f16(w) * ds[2 * b] * (float)isum + f16(w + 2) * ds[2 * b + 1];
    }
    return sum;
}

static float dot_q8_0_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    const int8_t *qx = (const int8_t *)x;
    const float *ds = fg_q8_1_ds(x, K);
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 32; b++, w += 34, qx += 32) {
        const int8_t *qw = (const int8_t *)(w + 2);
        int isum = 0;
        for (int i = 0; i < 32; i++) isum += qw[i] * qx[i];
        sum += f16(w) * ds[2 * b] * (float)isum;
    }
    return sum;
}

/* MXFP4: the doubled E2M1 codes times the halved E8M0 scale (gguf/quant.c). */
static float dot_mxfp4_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    const int8_t *qx = (const int8_t *)x;
    const float *ds = fg_q8_1_ds(x, K);
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 32; b++, w += 17, qx += 32) {
        int isum = 0;
        for (int i = 0; i < 32; i++) isum += fg_mxfp4_codes[nib(w + 1, i)] * qx[i];
        sum += fg_e8m0_half(w[0]) * ds[2 * b] * (float)isum;
    }
    return sum;
}

/* ---- K-quants against Q8_K ----------------------------------------------------------- */

/* Q2_K: 16 sub-blocks of 16, code i at bits 2((i%128)/32) of qs[32(i/128) + i%32]. */
static float dot_q2_k_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    const int8_t *qx = (const int8_t *)x;
    const float *dx = fg_q8_k_d(x, K);
    const int16_t *bsums = fg_q8_k_bsums(x, K);
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 256; b++, w += 84, qx += 256, bsums += 16) {
        const uint8_t *scales = w, *qs = w + 16;
        int isum = 0, msum = 0;
        for (int s = 0; s < 16; s++) {
            int dot = 0;
            for (int i = 16 * s; i < 16 * s + 16; i++) dot += ((qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3) * qx[i];
            isum += (scales[s] & 0xf) * dot;
            msum += (scales[s] >> 4) * bsums[s];
        }
        sum += dx[b] * (f16(w + 80) * (float)isum - f16(w + 82) * (float)msum);
    }
    return sum;
}

/* Q3_K: code = low 2 bits (placed as in Q2_K) + 4 * high bit - 4; 16 signed scales. */
static float dot_q3_k_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    const int8_t *qx = (const int8_t *)x;
    const float *dx = fg_q8_k_d(x, K);
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 256; b++, w += 110, qx += 256) {
        const uint8_t *hmask = w, *qs = w + 32;
        uint32_t sc[4];
        fg_mm_q3k_scales(w + 96, sc);
        int isum = 0;
        for (int s = 0; s < 16; s++) {
            int dot = 0;
            for (int i = 16 * s; i < 16 * s + 16; i++) {
                int lo = (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
                int hi = (hmask[i % 32] >> (i / 32)) & 1;
                dot += (lo + 4 * hi - 4) * qx[i];
            }
            isum += ((int)((sc[s / 4] >> (8 * (s % 4))) & 0xff) - 32) * dot;
        }
        sum += dx[b] * (f16(w + 108) * (float)isum);
    }
    return sum;
}

/* Q4_K and Q5_K: 8 sub-blocks of 32; code i in the low (even i/32) or high
 * nibble of qs[32(i/64) + i%32], plus for Q5_K bit i/32 of qh[i%32] as bit 4. */
static float dot_q45_k_row(int64_t K, const uint8_t *w, const uint8_t *x, bool five)
{
    const int8_t *qx = (const int8_t *)x;
    const float *dx = fg_q8_k_d(x, K);
    const int16_t *bsums = fg_q8_k_bsums(x, K);
    size_t bytes = five ? 176 : 144;
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 256; b++, w += bytes, qx += 256, bsums += 16) {
        const uint8_t *qh = w + 16, *qs = w + (five ? 48 : 16);
        uint32_t sc[2], m[2];
        fg_mm_k4_scales(w + 4, sc, m);
        int isum = 0, msum = 0;
        for (int s = 0; s < 8; s++) {
            int dot = 0;
            for (int i = 32 * s; i < 32 * s + 32; i++) {
                int q = (qs[32 * (i / 64) + i % 32] >> (4 * ((i / 32) % 2))) & 0xf;
                if (five) q |= ((qh[i % 32] >> (i / 32)) & 1) << 4;
                dot += q * qx[i];
            }
            isum += (int)((sc[s / 4] >> (8 * (s % 4))) & 0xff) * dot;
            msum += (int)((m[s / 4] >> (8 * (s % 4))) & 0xff) * (bsums[2 * s] + bsums[2 * s + 1]);
        }
        sum += dx[b] * (f16(w) * (float)isum - f16(w + 2) * (float)msum);
    }
    return sum;
}

static float dot_q4_k_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    return dot_q45_k_row(K, w, x, false);
}

static float dot_q5_k_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    return dot_q45_k_row(K, w, x, true);
}

/* Q6_K: 16 sub-blocks of 16, code = (low 4 | high 2 << 4) - 32, int8 scales. */
static float dot_q6_k_row(int64_t K, const uint8_t *w, const uint8_t *x)
{
    const int8_t *qx = (const int8_t *)x;
    const float *dx = fg_q8_k_d(x, K);
    float sum = 0.0f;
    for (int64_t b = 0; b < K / 256; b++, w += 210, qx += 256) {
        const uint8_t *ql = w, *qh = w + 128;
        const int8_t *scales = (const int8_t *)(w + 192);
        int isum = 0;
        for (int s = 0; s < 16; s++) {
            int dot = 0;
            for (int i = 16 * s; i < 16 * s + 16; i++) {
                int lo = (ql[64 * (i / 128) + i % 64] >> (4 * ((i % 128) / 64))) & 0xf;
                int hi = (qh[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
                dot += ((lo | hi << 4) - 32) * qx[i];
            }
            isum += scales[s] * dot;
        }
        sum += dx[b] * (f16(w + 208) * (float)isum);
    }
    return sum;
}

/* ---- The table --------------------------------------------------------------------- */

/* One row kernel applied to each pair of weight and activation rows. */
#define ROWS(name)                                                                                     \
    static void name(int64_t K, const uint8_t *w, size_t ws, int nr, const uint8_t *x, size_t xs, int nt, \
                     float *out)                                                                       \
    {                                                                                                  \
        for (int r = 0; r < nr; r++)                                                                   \
            for (int j = 0; j < nt; j++) out[r * FG_MM_NT + j] = name##_row(K, w + r * ws, x + j * xs); \
    }
#define ROWS_OF(type, name) ROWS(dot_##name)
FG_MM_EACH_TYPE(ROWS_OF)

static const fg_mm_kernels generic = {
    .isa = "generic",
    .quant_q8_1 = quant_q8_1,
    .quant_q8_k = quant_q8_k,
    .dot = FG_MM_DOT_TABLE,
};

const fg_mm_kernels *fg_mm_kernels_generic(void)
{
    return &generic;
}
