/*
 * quantize.c — f32 rows to ggml's block formats (the reference quantizers).
 *
 * Input is a row of floats; output is the row's blocks, laid out as quant.c
 * documents them (byte offsets per format there). Nothing here allocates.
 *
 * Bit-identity with ggml is the contract, so each algorithm below is ggml's
 * reference one, written out again from its definition:
 *   - Q4_0, Q5_0: the scale is the element of largest magnitude divided by
 *     -8 (-16), so that element lands exactly on the most negative code;
 *     codes are trunc(x/d + 8.5) (+16.5), clamped.
 *   - Q4_1, Q5_1: scale (max-min)/15 (/31) and offset min; codes
 *     trunc((x-min)/d + 0.5).
 *   - Q8_0: scale amax/127, codes roundf(x/d) (halves away from zero).
 *   - Q4_K, Q5_K: per 32-element sub-block a weighted least-squares fit of a
 *     scale and a min over a small grid of candidate inverse scales
 *     (make_qkx2 below), then the sub-block scales and mins are themselves
 *     quantized to 6 bits against the super-block's f16 d and dmin, and the
 *     codes are recomputed against the scales actually stored.
 *   - Q6_K: per 16-element sub-block a symmetric fit weighted by x^2 that tries
 *     19 inverse scales around the one that maps the largest element to -32
 *     (make_qx below); 8-bit sub-block scales against the f16 d; codes
 *     recomputed as for Q4_K.
 * "x * id" multiplies by a float reciprocal rather than dividing, exactly as
 * ggml does, because the rounding of the reciprocal is part of the result.
 * The build uses -ffp-contract=off, so no multiply-add is fused and every
 * float operation rounds where the C expression says it does.
 */
#include "gguf/quantize.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "base/err.h"
#include "gguf/quant.h"

/* ---- Helpers --------------------------------------------------------------- */

static void wr_f16(uint8_t *p, float f)
{
    uint16_t h = fg_f32_to_f16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static float f16_round(float f)
{
    return fg_f16_to_f32(fg_f32_to_f16(f));
}

static void wr_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/*
 * Round to nearest, ties to even, for |f| < 2^22: adding 1.5 * 2^23 puts the
 * integer part in the low mantissa bits, where the float addition itself has
 * rounded it. ggml's K-quants round this way (not with roundf), so the
 * difference matters at exact halves.
 */
static int nearest_int(float f)
{
    float v = f + 12582912.0f;
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return (int)(u & 0x7fffffu) - 0x400000;
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- 32-element formats ---------------------------------------------------- */

/* The element of largest magnitude, signed; the first one on ties. */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, int n, float *mn, float *mx)
{
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

/* Q4_0 (18 bytes): f16 d, then element j in the low nibble of qs[j], j+16 in
 * the high one. The (int8_t) conversion truncates toward zero. */
static void q_q4_0(const float *x, uint8_t *b)
{
    float d = signed_absmax(x, 32) / -8;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    wr_f16(b, d);
    for (int j = 0; j < 16; j++) {
        int q0 = (int8_t)(x[j] * id + 8.5f);
        int q1 = (int8_t)(x[j + 16] * id + 8.5f);
        b[2 + j] = (uint8_t)((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
    }
}

/* Q4_1 (20 bytes): f16 d, f16 m, nibbles as Q4_0. */
static void q_q4_1(const float *x, uint8_t *b)
{
    float mn, mx;
    min_max(x, 32, &mn, &mx);
    float d = (mx - mn) / 15;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    wr_f16(b, d);
    wr_f16(b + 2, mn);
    for (int j = 0; j < 16; j++) {
        int q0 = (int8_t)((x[j] - mn) * id + 0.5f);
        int q1 = (int8_t)((x[j + 16] - mn) * id + 0.5f);
        b[4 + j] = (uint8_t)((q0 < 15 ? q0 : 15) | (q1 < 15 ? q1 : 15) << 4);
    }
}

/* Q5_0 (22 bytes): f16 d, u32 qh (bit j = bit 4 of element j), low nibbles. */
static void q_q5_0(const float *x, uint8_t *b)
{
    float d = signed_absmax(x, 32) / -16;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    wr_f16(b, d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int q0 = (int8_t)(x[j] * id + 16.5f);
        int q1 = (int8_t)(x[j + 16] * id + 16.5f);
        q0 = q0 < 31 ? q0 : 31;
        q1 = q1 < 31 ? q1 : 31;
        b[6 + j] = (uint8_t)((q0 & 0xf) | (q1 & 0xf) << 4);
        qh |= (uint32_t)(q0 >> 4 & 1) << j | (uint32_t)(q1 >> 4 & 1) << (j + 16);
    }
    wr_u32(b + 2, qh);
}

/* Q5_1 (24 bytes): f16 d, f16 m, u32 qh, low nibbles. ggml does not clamp
 * here: (max-min)/d rounds to at most 31.5 before truncation. */
static void q_q5_1(const float *x, uint8_t *b)
{
    float mn, mx;
    min_max(x, 32, &mn, &mx);
    float d = (mx - mn) / 31;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    wr_f16(b, d);
    wr_f16(b + 2, mn);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int q0 = (uint8_t)((x[j] - mn) * id + 0.5f);
        int q1 = (uint8_t)((x[j + 16] - mn) * id + 0.5f);
        b[8 + j] = (uint8_t)((q0 & 0xf) | (q1 & 0xf) << 4);
        qh |= (uint32_t)(q0 >> 4 & 1) << j | (uint32_t)(q1 >> 4 & 1) << (j + 16);
    }
    wr_u32(b + 4, qh);
}

/* Q8_0 (34 bytes): f16 d, int8 codes. */
static void q_q8_0(const float *x, uint8_t *b)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    wr_f16(b, d);
    for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

/* ---- K-quant searches ------------------------------------------------------ */

/*
 * Fits x[0..n) ~ scale * L - min with codes L in 0..nmax, minimizing the
 * weighted squared error. It starts from the plain min/max mapping, then
 * tries nstep+1 inverse scales (rmin + rdelta*is + nmax) / (max - min), each
 * with its closed-form least-squares scale and min (the min kept <= 0 in
 * value, i.e. an offset never above the smallest element), and keeps the
 * best. Returns the scale; *the_min gets the (non-negative) min to subtract.
 * This is ggml's make_qkx2_quants without its mean-absolute option.
 */
static float make_qkx2(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                       uint8_t *Laux, float rmin, float rdelta, int nstep)
{
    float mn = x[0], mx = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < mn) mn = x[i];
        if (x[i] > mx) mx = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (mn > 0) mn = 0;
    if (mx == mn) {
        memset(L, 0, (size_t)n);
        *the_min = -mn;
        return 0.0f;
    }
    float iscale = nmax / (mx - mn);
    float scale = 1 / iscale;
    float best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax);
        float diff = scale * L[i] + mn - x[i];
        best += w[i] * (diff * diff);
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (mx - mn);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * (x[i] - mn)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * Laux[i] + this_min - x[i];
            err += w[i] * (diff * diff);
        }
        if (err < best) {
            memcpy(L, Laux, (size_t)n);
            best = err;
            scale = this_scale;
            mn = this_min;
        }
    }
    *the_min = -mn;
    return scale;
}

/*
 * Symmetric fit x ~ scale * (L - nmax), L in 0..2*nmax-1, weights x^2: the
 * inverse scale that maps the largest-magnitude element to -nmax, then 18
 * more, -(nmax + 0.1*is)/max for is = -9..9, keeping the one whose
 * least-squares scale explains most of x (sumlx^2 / suml2). This is ggml's
 * make_qx_quants with rmse_type 1 and no importance weights.
 */
#define GROUP_MAX_EPS 1e-15f

static float make_qx(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float iscale = (float)(-nmax) / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++)
                L[i] = (int8_t)(nmax + clampi(nearest_int(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* ---- Q4_K and Q5_K ----------------------------------------------------------- */

/*
 * The shared part of Q4_K and Q5_K for one 256-element super-block: fits the
 * eight sub-blocks (codes 0..nmax), stores d, dmin and the 12 scale bytes at
 * b (k4_scale_min's packing in quant.c), and leaves the final codes in L.
 */
static void q_k4_scales(const float *x, uint8_t *b, int nmax, float rmin, int nstep, uint8_t L[256])
{
    float scales[8], mins[8], w[32];
    uint8_t Laux[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) w[l] = av_x + fabsf(xs[l]);
        scales[j] = make_qkx2(32, nmax, xs, w, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }

    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t *sc = b + 4;
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        /* As in ggml, the int goes through uint8_t before the clamp. */
        uint8_t ls = (uint8_t)nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xf) | (lm & 0xf) << 4);
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    wr_f16(b, max_scale / 63.f);
    wr_f16(b + 2, max_min / 63.f);

    /* Recompute the codes against the scales as stored (f16 and 6-bit). A
     * sub-block whose stored scale is zero keeps the search's codes. */
    float d_all = f16_round(max_scale / 63.f), dmin_all = f16_round(max_min / 63.f);
    for (int j = 0; j < 8; j++) {
        int s, m;
        if (j < 4) {
            s = sc[j] & 63;
            m = sc[j + 4] & 63;
        } else {
            s = (sc[j + 4] & 0xf) | (sc[j - 4] >> 6) << 4;
            m = (sc[j + 4] >> 4) | (sc[j] >> 6) << 4;
        }
        float d = d_all * s;
        if (d == 0.0f) continue;
        float dm = dmin_all * m;
        for (int i = 0; i < 32; i++)
            L[32 * j + i] = (uint8_t)clampi(nearest_int((x[32 * j + i] + dm) / d), 0, nmax);
    }
}

/* Q4_K (144 bytes): d, dmin, scales[12], qs[128] (element 64*k + i in the low
 * nibble of qs[32*k + i] for i < 32, element 64*k + 32 + i in its high one). */
static void q_q4_k(const float *x, uint8_t *b)
{
    uint8_t L[256];
    q_k4_scales(x, b, 15, -1.0f, 20, L);
    uint8_t *qs = b + 16;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 32; i++) qs[32 * k + i] = (uint8_t)(L[64 * k + i] | L[64 * k + 32 + i] << 4);
}

/* Q5_K (176 bytes): d, dmin, scales[12], qh[32] (bit e/32 of qh[e%32] is bit 4
 * of element e), qs[128] low nibbles laid out as Q4_K. */
static void q_q5_k(const float *x, uint8_t *b)
{
    uint8_t L[256];
    q_k4_scales(x, b, 31, -0.5f, 15, L);
    uint8_t *qh = b + 16, *qs = b + 48;
    memset(qh, 0, 32);
    for (int e = 0; e < 256; e++)
        if (L[e] > 15) qh[e % 32] |= (uint8_t)(1u << (e / 32));
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 32; i++)
            qs[32 * k + i] = (uint8_t)((L[64 * k + i] & 0xf) | (L[64 * k + 32 + i] & 0xf) << 4);
}

/* ---- Q6_K ------------------------------------------------------------------------ */

/* Q6_K (210 bytes): ql[128], qh[64], int8 scales[16], f16 d; the code layout
 * is dq_q6_k's in quant.c. */
static void q_q6_k(const float *x, uint8_t *b)
{
    int8_t L[256];
    float scales[16];
    float max_scale = 0, max_abs = 0;
    for (int s = 0; s < 16; s++) {
        scales[s] = make_qx(16, 32, x + 16 * s, L + 16 * s);
        if (fabsf(scales[s]) > max_abs) {
            max_abs = fabsf(scales[s]);
            max_scale = scales[s];
        }
    }
    memset(b, 0, 210);
    if (max_abs < GROUP_MAX_EPS) return; /* all zero: every field 0 */

    float iscale = -128.f / max_scale;
    wr_f16(b + 208, 1 / iscale);
    int8_t *sc = (int8_t *)(b + 192);
    for (int s = 0; s < 16; s++) {
        int v = nearest_int(iscale * scales[s]);
        sc[s] = (int8_t)(v < 127 ? v : 127);
    }
    float d_all = f16_round(1 / iscale);
    for (int s = 0; s < 16; s++) {
        float d = d_all * sc[s];
        if (d == 0.0f) continue;
        for (int i = 0; i < 16; i++)
            L[16 * s + i] = (int8_t)(clampi(nearest_int(x[16 * s + i] / d), -32, 31) + 32);
    }
    uint8_t *ql = b, *qh = b + 128;
    for (int e = 0; e < 256; e++) {
        int q = L[e];
        int half = e / 128, r = e % 128;
        ql[64 * half + r % 64] |= (uint8_t)((q & 0xf) << (4 * (r / 64)));
        qh[32 * half + r % 32] |= (uint8_t)((q >> 4 & 3) << (2 * (r / 32)));
    }
}

/* ---- Rows ------------------------------------------------------------------------ */

typedef void (*fg_quant_block_fn)(const float *x, uint8_t *block);

static const fg_quant_block_fn fg_quant_blocks[FG_TYPE_COUNT] = {
    [FG_TYPE_Q4_0] = q_q4_0, [FG_TYPE_Q4_1] = q_q4_1, [FG_TYPE_Q5_0] = q_q5_0,
    [FG_TYPE_Q5_1] = q_q5_1, [FG_TYPE_Q8_0] = q_q8_0, [FG_TYPE_Q4_K] = q_q4_k,
    [FG_TYPE_Q5_K] = q_q5_k, [FG_TYPE_Q6_K] = q_q6_k,
};

bool fg_quantize_supported(fg_type t)
{
    if (t == FG_TYPE_F32 || t == FG_TYPE_F16 || t == FG_TYPE_BF16) return true;
    return (unsigned)t < FG_TYPE_COUNT && fg_quant_blocks[t] != NULL;
}

void fg_quantize_row(fg_type t, const float *x, void *dst, int64_t n)
{
    FG_ASSERT(fg_quantize_supported(t));
    const fg_type_info *ti = fg_type_get((uint32_t)t);
    FG_ASSERT(n >= 0 && n % ti->block_size == 0);
    uint8_t *b = dst;
    switch (t) {
    case FG_TYPE_F32:
        memcpy(dst, x, (size_t)n * sizeof(float));
        return;
    case FG_TYPE_F16:
    case FG_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = t == FG_TYPE_F16 ? fg_f32_to_f16(x[i]) : fg_f32_to_bf16(x[i]);
            b[2 * i] = (uint8_t)h;
            b[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return;
    default:
        break;
    }
    fg_quant_block_fn q = fg_quant_blocks[t];
    for (int64_t i = 0; i < n; i += ti->block_size) {
        q(x + i, b);
        b += ti->type_size;
    }
}
