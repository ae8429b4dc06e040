/*
 * mm_x86.h — the x86 matmul kernels on 256-bit vectors, included by
 * mm_avx2.c (FG_X86_VNNI 0: AVX2 + FMA + F16C) and mm_avx512.c (FG_X86_VNNI
 * 1: the same code with AVX-512 VNNI's vpdpbusd/vpdpwssd for the integer
 * multiply-adds). Everything here is static; the including file builds the
 * table. mm_generic.c is the reference each kernel must match.
 *
 * Integer products. A block's codes are made unsigned (u8) so that one
 * instruction multiplies them with the signed activation codes (s8) and adds
 * adjacent products: vpmaddubsw (+ vpmaddwd to widen) on AVX2, vpdpbusd with
 * VNNI. A constant code offset c is put back in integer arithmetic through
 * the activations' code sums (Q4_0, Q5_0: Q8_1's nsum; Q3_K, Q6_K: Q8_K's
 * bsums). vpmaddubsw saturates at 16 bits, which unsigned codes
 * up to 63 times |x| <= 127 never reach (2 * 63 * 127 = 16002); Q8_0's
 * signed codes use the sign trick (|w| times x with w's sign; |w| <= 128).
 *
 * Tiles. A kernel call covers nr weight rows (matmul.c passes up to 16), each
 * dotted with NT = 1..4 activation rows: the weight block is loaded and
 * unpacked once and used NT times, which is what makes prefill faster than NT
 * separate dots. The NT variants are generated from one always-inline body
 * with NT a compile-time constant, so the accumulators stay in registers.
 */
#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/mm_kernels.h"

#define FG_INLINE static inline __attribute__((always_inline))
/* The small constant loops of a tile (rows j < NT, sub-blocks) must unroll so
 * that the accumulators live in registers. */
#define FG_UNROLL _Pragma("GCC unroll 8")

/* ---- Helpers ----------------------------------------------------------------------- */

/* acc + sum of adjacent groups of four u8 x s8 products, per 32-bit lane. */
FG_INLINE __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s)
{
#if FG_X86_VNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* acc + sum of adjacent pairs of i16 x i16 products, per 32-bit lane. */
FG_INLINE __m256i madd_acc(__m256i acc, __m256i a, __m256i b)
{
#if FG_X86_VNNI
    return _mm256_dpwssd_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

FG_INLINE float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

FG_INLINE int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

FG_INLINE float f16s(const uint8_t *p)
{
    return _cvtsh_ss(fg_mm_rd16(p));
}

/* The 32 codes of a 4-bit block (16 bytes), in element order: low nibbles are
 * elements 0..15, high nibbles 16..31. */
FG_INLINE __m256i unpack_q4(const uint8_t *qs)
{
    /* the 16 bytes in both 128-bit lanes (a load, no shuffle), the high lane
     * shifted right by 4 */
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)qs));
    v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
    return _mm256_and_si256(v, _mm256_set1_epi8(0xf));
}

/* 0x10 in byte i where bit i of qh is set: the fifth bit of Q5_0/Q5_1 codes. */
FG_INLINE __m256i q5_high_bits(uint32_t qh)
{
#if FG_X86_VNNI /* AVX-512 BW + VL: the bits are a byte mask */
    return _mm256_maskz_mov_epi8((__mmask32)qh, _mm256_set1_epi8(0x10));
#else
    const __m256i shuf = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
#endif
}

FG_INLINE __m256i load32(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
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

/* ---- Activation quantization ------------------------------------------------------------- */

/*
 * Eight floats to eight int32 codes, bit-exact with mm_generic.c's
 * roundf(x * id): truncate, then step away from zero when the dropped
 * fraction (exact in float) is at least one half.
 */
FG_INLINE __m256i round_away(__m256 v)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    __m256 step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f));
    step = _mm256_and_ps(step, _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ));
    return _mm256_cvtps_epi32(_mm256_add_ps(t, step));
}

/* One block of n = 32 * m floats (see quant_block in mm_generic.c for the
 * rules, which this follows bit for bit). Writes the codes, returns d, and
 * leaves the codes' int32 sums per 16 elements in sums16[n / 16]. */
FG_INLINE float quant_block_x86(const float *x, int n, int8_t *q, int32_t *sums16)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    for (int j = 0; j < n; j += 8) {
        __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ));
        amax = _mm256_max_ps(amax, a);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float d = _mm_cvtss_f32(m4) / 127.0f;
    bool is_bad = _mm256_movemask_ps(bad) != 0;
    if (is_bad || d < FLT_MIN) {
        memset(q, 0, (size_t)n);
        for (int s = 0; s < n / 16; s++) sums16[s] = 0;
        return is_bad ? NAN : 0.0f;
    }
    __m256 id = _mm256_set1_ps(1.0f / d);
    for (int j = 0; j < n; j += 32) {
        __m256i i0 = round_away(_mm256_mul_ps(_mm256_loadu_ps(x + j), id));
        __m256i i1 = round_away(_mm256_mul_ps(_mm256_loadu_ps(x + j + 8), id));
        __m256i i2 = round_away(_mm256_mul_ps(_mm256_loadu_ps(x + j + 16), id));
        __m256i i3 = round_away(_mm256_mul_ps(_mm256_loadu_ps(x + j + 24), id));
        sums16[j / 16] = hsum_epi32(_mm256_add_epi32(i0, i1));
        sums16[j / 16 + 1] = hsum_epi32(_mm256_add_epi32(i2, i3));
        /* Packing interleaves the 128-bit lanes; the permute restores order. */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(void *)(q + j), p);
    }
    return d;
}

static void quant_q8_1_x86(const float *x, int64_t K, uint8_t *dst)
{
    int64_t nb = K / 32;
    int8_t *qs = (int8_t *)dst;
    float *ds = (float *)(void *)(dst + K);
    int32_t *nsum = (int32_t *)(void *)(ds + 2 * nb);
    for (int64_t b = 0; b < nb; b++) {
        int32_t s16[2];
        float d = quant_block_x86(x + 32 * b, 32, qs + 32 * b, s16);
        d = fg_mm_f16_round(d);
        ds[2 * b] = d;
        ds[2 * b + 1] = d * (float)(s16[0] + s16[1]);
        nsum[b] = -(s16[0] + s16[1]);
    }
}

static void quant_q8_k_x86(const float *x, int64_t K, uint8_t *dst)
{
    int64_t nb = K / 256;
    int8_t *qs = (int8_t *)dst;
    float *d = (float *)(void *)(dst + K);
    int16_t *bsums = (int16_t *)(void *)(d + nb);
    for (int64_t b = 0; b < nb; b++) {
        int32_t s16[16];
        d[b] = quant_block_x86(x + 256 * b, 256, qs + 256 * b, s16);
        for (int s = 0; s < 16; s++) bsums[16 * b + s] = (int16_t)s16[s];
    }
}

/* ---- Float weights ------------------------------------------------------------------------- */

/* Eight weights as floats: F32 (0), F16 (1) or BF16 (2). */
FG_INLINE __m256 load_w8(const uint8_t *w, int64_t k, int type)
{
    if (type == 0) return _mm256_loadu_ps((const float *)(const void *)w + k);
    __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(w + 2 * k));
    if (type == 1) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

FG_INLINE float load_w1(const uint8_t *w, int64_t k, int type)
{
    if (type == 0) {
        float v;
        memcpy(&v, w + 4 * k, 4);
        return v;
    }
    if (type == 1) return _cvtsh_ss(fg_mm_rd16(w + 2 * k));
    uint32_t u = (uint32_t)fg_mm_rd16(w + 2 * k) << 16;
    float v;
    memcpy(&v, &u, 4);
    return v;
}

/* U accumulators per activation row, the same U for every NT: a row's sum
 * must not depend on how many rows share its tile (batch invariance), so
 * the chains are not widened when the tile is narrow. */
FG_INLINE void float_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out,
                          int type)
{
    enum { U = 2 };
    const float *xr[FG_MM_NT];
    __m256 acc[FG_MM_NT][U];
    FG_UNROLL for (int j = 0; j < NT; j++) {
        xr[j] = (const float *)(const void *)(x + j * xs);
        FG_UNROLL for (int u = 0; u < U; u++) acc[j][u] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 8 * U <= K; k += 8 * U) {
        FG_UNROLL for (int u = 0; u < U; u++) {
            __m256 wv = load_w8(w, k + 8 * u, type);
            FG_UNROLL for (int j = 0; j < NT; j++)
                acc[j][u] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[j] + k + 8 * u), acc[j][u]);
        }
    }
    for (; k + 8 <= K; k += 8) {
        __m256 wv = load_w8(w, k, type);
        FG_UNROLL for (int j = 0; j < NT; j++) acc[j][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[j] + k), acc[j][0]);
    }
    FG_UNROLL for (int j = 0; j < NT; j++) {
        FG_UNROLL for (int u = 1; u < U; u++) acc[j][0] = _mm256_add_ps(acc[j][0], acc[j][u]);
        float s = hsum_ps(acc[j][0]);
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

/*
 * One body for Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0. Per block: the 32 weight
 * codes as u8 (codes) and an integer start value per row for the offset
 * (start), then per activation row j the lane sums isum_j, and
 *   acc_j += isum_j * (d_w d_x)           (8 lanes)
 *   macc_j += m_w * s_x                   (Q4_1, Q5_1: lane 1 of a 4-vector)
 * The pair (d_w, m_w) times the pair (d_x, s_x) is one 4-wide multiply.
 */
enum { K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q8_0, K_MXFP4 };

/* Per-row pointers of a Q8_1 tile. */
typedef struct q8_rows {
    const int8_t *qx[FG_MM_NT];
    const float *ds[FG_MM_NT];
    const int32_t *nsum[FG_MM_NT];
} q8_rows;

/*
 * Block b (weights at w) into the accumulators of NT rows. The scales come
 * straight from memory into vector registers (no round trip through general
 * registers). For Q4_1/Q5_1, (d_w, m_w) * (d_x, s_x) gives both products in
 * one multiply. Q4_0's and Q5_0's code offset c is folded into the integer
 * sum by starting each of its 8 lanes at c/8 nsum (nsum = -sum(q_x)).
 */
FG_INLINE void q32_block(const uint8_t *w, int64_t b, const q8_rows *r, const int NT, __m256 *acc, __m128 *macc,
                         const int kind)
{
    const bool has_m = kind == K_Q4_1 || kind == K_Q5_1;
    __m256i q;
    /* (d, m or junk, 0, 0); only lane 0 used without m */
    __m128 dm = kind == K_MXFP4 ? _mm_set_ss(fg_e8m0_half(w[0])) : _mm_cvtph_ps(_mm_loadu_si32(w));
    switch (kind) {
    case K_Q4_0: q = unpack_q4(w + 2); break;
    case K_Q4_1: q = unpack_q4(w + 4); break;
    case K_Q5_0: q = _mm256_or_si256(unpack_q4(w + 6), q5_high_bits(fg_mm_rd32(w + 2))); break;
    case K_Q5_1: q = _mm256_or_si256(unpack_q4(w + 8), q5_high_bits(fg_mm_rd32(w + 4))); break;
    case K_MXFP4: /* the doubled E2M1 codes, looked up from the nibbles */
        q = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)fg_mxfp4_codes)),
                                unpack_q4(w + 1));
        break;
    default: q = load32(w + 2); break;
    }
    /* Signed codes (Q8_0, MXFP4): |w| times x with w's sign (|w| <= 128 fits u8). */
    const bool is_signed = kind == K_Q8_0 || kind == K_MXFP4;
    __m256i qabs = is_signed ? _mm256_sign_epi8(q, q) : q;
    FG_UNROLL for (int j = 0; j < NT; j++) {
        __m256i xv = _mm256_load_si256((const __m256i *)(const void *)(r->qx[j] + 32 * b));
        if (is_signed) xv = _mm256_sign_epi8(xv, q);
        __m256i start = _mm256_setzero_si256();
        if (kind == K_Q4_0) start = _mm256_set1_epi32(r->nsum[j][b]);
        if (kind == K_Q5_0) start = _mm256_slli_epi32(_mm256_set1_epi32(r->nsum[j][b]), 1);
        __m256i isum = dot_u8s8(start, qabs, xv);
        __m256 scale;
        if (has_m) {
            __m128 dsx = _mm_castpd_ps(_mm_load_sd((const double *)(const void *)(r->ds[j] + 2 * b)));
            __m128 prod = _mm_mul_ps(dm, dsx); /* (d_w d_x, m_w s_x) */
            macc[j] = _mm_add_ps(macc[j], prod);
            scale = _mm256_broadcastss_ps(prod);
        } else {
            scale = _mm256_broadcastss_ps(_mm_mul_ss(dm, _mm_load_ss(r->ds[j] + 2 * b)));
        }
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc[j]);
    }
}

/* Blocks alternate between two accumulator sets (even and odd blocks) for
 * every NT, so that the add latency does not set the pace of a narrow tile
 * and a row's sum is the same however many rows share its tile. */
FG_INLINE void q32_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out,
                        const int kind)
{
    const size_t bytes = kind == K_Q4_0 ? 18 : kind == K_Q4_1 ? 20 : kind == K_Q5_0 ? 22 : kind == K_Q5_1 ? 24
                       : kind == K_MXFP4 ? 17 : 34;
    const bool has_m = kind == K_Q4_1 || kind == K_Q5_1;
    const int64_t nb = K / 32;
    q8_rows r;
    __m256 acc[FG_MM_NT], acc2[FG_MM_NT];
    __m128 macc[FG_MM_NT], macc2[FG_MM_NT];
    FG_UNROLL for (int j = 0; j < NT; j++) {
        r.qx[j] = (const int8_t *)(x + j * xs);
        r.ds[j] = fg_q8_1_ds(x + j * xs, K);
        r.nsum[j] = fg_q8_1_nsum(x + j * xs, K);
        acc[j] = acc2[j] = _mm256_setzero_ps();
        macc[j] = macc2[j] = _mm_setzero_ps();
    }
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * bytes) {
        q32_block(w, b, &r, NT, acc, macc, kind);
        q32_block(w + bytes, b + 1, &r, NT, acc2, macc2, kind);
    }
    for (; b < nb; b++, w += bytes) q32_block(w, b, &r, NT, acc, macc, kind);
    FG_UNROLL for (int j = 0; j < NT; j++) {
        float s = hsum_ps(_mm256_add_ps(acc[j], acc2[j]));
        if (has_m) s += _mm_cvtss_f32(_mm_movehdup_ps(_mm_add_ps(macc[j], macc2[j])));
        out[j] = s;
    }
}

FG_INLINE void dot_q4_0_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q32_tile(K, w, x, xs, NT, out, K_Q4_0);
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
FG_INLINE void dot_mxfp4_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q32_tile(K, w, x, xs, NT, out, K_MXFP4);
}

/* ---- K-quants against Q8_K ------------------------------------------------------------------ */

/*
 * Sub-block scales as 16-bit lanes for vpmaddwd: a 256-bit vector of 32
 * codes covers two 16-element sub-blocks (Q2_K, Q3_K, Q6_K), so its i16
 * products need scale a in the low 128 bits and b in the high; or one
 * 32-element sub-block (Q4_K, Q5_K), one scale throughout. Both come from one
 * byte shuffle of a vector holding eight i16 scales in both 128-bit lanes.
 */
FG_INLINE __m256i scale_pair(__m256i sc8x2, int a)
{
    /* low lane: bytes 2a, 2a+1 repeated; high lane: bytes 2a+2, 2a+3. */
    const __m256i idx = _mm256_setr_epi8(
        (char)(2 * a), (char)(2 * a + 1), (char)(2 * a), (char)(2 * a + 1), (char)(2 * a), (char)(2 * a + 1),
        (char)(2 * a), (char)(2 * a + 1), (char)(2 * a), (char)(2 * a + 1), (char)(2 * a), (char)(2 * a + 1),
        (char)(2 * a), (char)(2 * a + 1), (char)(2 * a), (char)(2 * a + 1), (char)(2 * a + 2), (char)(2 * a + 3),
        (char)(2 * a + 2), (char)(2 * a + 3), (char)(2 * a + 2), (char)(2 * a + 3), (char)(2 * a + 2),
        (char)(2 * a + 3), (char)(2 * a + 2), (char)(2 * a + 3), (char)(2 * a + 2), (char)(2 * a + 3),
        (char)(2 * a + 2), (char)(2 * a + 3), (char)(2 * a + 2), (char)(2 * a + 3));
    return _mm256_shuffle_epi8(sc8x2, idx);
}

FG_INLINE __m256i scale_one(__m256i sc8x2, int a)
{
    return _mm256_shuffle_epi8(sc8x2, _mm256_set1_epi16((short)((2 * a + 1) << 8 | 2 * a)));
}

/* The i16 lanes 8h..8h+7 of v in both 128-bit lanes. */
FG_INLINE __m256i half_both(__m256i v, int h)
{
    return h ? _mm256_permute2x128_si256(v, v, 0x11) : _mm256_permute2x128_si256(v, v, 0x00);
}

/* Per-row state of a K-quant tile. */
typedef struct kq_rows {
    const int8_t *qx[FG_MM_NT];
    const float *dx[FG_MM_NT];
    const int16_t *bsums[FG_MM_NT];
} kq_rows;

/* The end of super-block b for the formats with mins (Q2_K, Q4_K, Q5_K):
 * acc_j += d dx_j (isum_j + isum2_j) - dmin dx_j (mins . bsums_j). */
FG_INLINE void kq_block_add(const kq_rows *r, int64_t b, int NT, const __m256i *isum, const __m256i *isum2,
                            __m256i mins, float d, float dmin, __m256 *acc)
{
    FG_UNROLL for (int j = 0; j < NT; j++) {
        __m256i msum = _mm256_madd_epi16(load32(r->bsums[j] + 16 * b), mins);
        float dx = r->dx[j][b];
        __m256i is = _mm256_add_epi32(isum[j], isum2[j]);
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_set1_ps(d * dx), acc[j]);
        acc[j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(dmin * dx), acc[j]);
    }
}

FG_INLINE void kq_rows_init(kq_rows *r, int64_t K, const uint8_t *x, size_t xs, int NT)
{
    FG_UNROLL for (int j = 0; j < NT; j++) {
        r->qx[j] = (const int8_t *)(x + j * xs);
        r->dx[j] = fg_q8_k_d(x + j * xs, K);
        r->bsums[j] = fg_q8_k_bsums(x + j * xs, K);
    }
}

/* Q2_K: per half h of 128 and k = 0..3, codes (qs[32h..] >> 2k) & 3 are
 * elements 128h + 32k .. +31, sub-blocks 8h + 2k and +1. */
FG_INLINE void dot_q2_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    kq_rows r;
    kq_rows_init(&r, K, x, xs, NT);
    __m256 acc[FG_MM_NT];
    FG_UNROLL for (int j = 0; j < NT; j++) acc[j] = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t b = 0; b < K / 256; b++, w += 84) {
        __m128i sc = _mm_loadu_si128((const __m128i *)(const void *)w);
        __m256i scales = _mm256_cvtepu8_epi16(_mm_and_si128(sc, _mm_set1_epi8(0xf)));
        __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0xf)));
        float d = f16s(w + 80), dmin = f16s(w + 82);
        __m256i isum[FG_MM_NT], isum2[FG_MM_NT];
        FG_UNROLL for (int j = 0; j < NT; j++) isum[j] = isum2[j] = _mm256_setzero_si256();
        FG_UNROLL for (int h = 0; h < 2; h++) {
            __m256i qs = load32(w + 16 + 32 * h);
            __m256i sch = half_both(scales, h);
            FG_UNROLL for (int k = 0; k < 4; k++) {
                __m256i q = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), m3);
                __m256i s = scale_pair(sch, 2 * k);
                FG_UNROLL for (int j = 0; j < NT; j++) {
                    __m256i xv = _mm256_load_si256((const __m256i *)(const void *)(r.qx[j] + 256 * b + 128 * h + 32 * k));
                    if (k % 2) isum2[j] = madd_acc(isum2[j], _mm256_maddubs_epi16(q, xv), s);
                    else isum[j] = madd_acc(isum[j], _mm256_maddubs_epi16(q, xv), s);
                }
            }
        }
        kq_block_add(&r, b, NT, isum, isum2, mins, d, dmin, acc);
    }
    FG_UNROLL for (int j = 0; j < NT; j++) out[j] = hsum_ps(acc[j]);
}

/* Q3_K: as Q2_K, plus the high bit (bit 4h + k of hmask[i % 32]) as bit 2 of
 * an unsigned code 0..7; the offset 4 comes back as 4 sum_s sc_s bsum_s. */
FG_INLINE void dot_q3_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    kq_rows r;
    kq_rows_init(&r, K, x, xs, NT);
    __m256 acc[FG_MM_NT];
    FG_UNROLL for (int j = 0; j < NT; j++) acc[j] = _mm256_setzero_ps();
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (int64_t b = 0; b < K / 256; b++, w += 110) {
        uint32_t sw[4];
        fg_mm_q3k_scales(w + 96, sw);
        __m256i scales = _mm256_sub_epi16(
            _mm256_cvtepu8_epi16(_mm_setr_epi32((int)sw[0], (int)sw[1], (int)sw[2], (int)sw[3])),
            _mm256_set1_epi16(32));
        float d = f16s(w + 108);
        __m256i hm = load32(w);
        /* isum starts at -4 sum_s sc_s bsum_s, the code offset. */
        __m256i isum[FG_MM_NT], isum2[FG_MM_NT];
        FG_UNROLL for (int j = 0; j < NT; j++) {
            isum[j] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                       _mm256_slli_epi32(_mm256_madd_epi16(load32(r.bsums[j] + 16 * b), scales), 2));
            isum2[j] = _mm256_setzero_si256();
        }
        FG_UNROLL for (int h = 0; h < 2; h++) {
            __m256i qs = load32(w + 32 + 32 * h);
            __m256i sch = half_both(scales, h);
            FG_UNROLL for (int k = 0; k < 4; k++) {
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qs, 2 * k), m3);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), one);
                __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2));
                __m256i s = scale_pair(sch, 2 * k);
                FG_UNROLL for (int j = 0; j < NT; j++) {
                    __m256i xv = _mm256_load_si256((const __m256i *)(const void *)(r.qx[j] + 256 * b + 128 * h + 32 * k));
                    if (k % 2) isum2[j] = madd_acc(isum2[j], _mm256_maddubs_epi16(q, xv), s);
                    else isum[j] = madd_acc(isum[j], _mm256_maddubs_epi16(q, xv), s);
                }
            }
        }
        FG_UNROLL for (int j = 0; j < NT; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(isum[j], isum2[j])), _mm256_set1_ps(d * r.dx[j][b]),
                                     acc[j]);
    }
    FG_UNROLL for (int j = 0; j < NT; j++) out[j] = hsum_ps(acc[j]);
}

/* Q4_K and Q5_K: per chunk c of 64, the low nibbles of qs[32c..] are sub-block
 * 2c and the high nibbles 2c+1; Q5_K's fifth bits are bits 2c and 2c+1 of
 * qh[0..31]. Mins: dmin sum_s m_s (bsum_2s + bsum_2s+1), one vpmaddwd with
 * each min repeated over its two bsums. */
FG_INLINE void q45_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out,
                          const bool five)
{
    kq_rows r;
    kq_rows_init(&r, K, x, xs, NT);
    __m256 acc[FG_MM_NT];
    FG_UNROLL for (int j = 0; j < NT; j++) acc[j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0xf), one = _mm256_set1_epi8(1);
    const size_t bytes = five ? 176 : 144;
    for (int64_t b = 0; b < K / 256; b++, w += bytes) {
        uint32_t sc[2], mn[2];
        fg_mm_k4_scales(w + 4, sc, mn);
        __m256i sm = _mm256_cvtepu8_epi16(_mm_setr_epi32((int)sc[0], (int)sc[1], (int)mn[0], (int)mn[1]));
        __m256i scales = half_both(sm, 0);
        __m256i m32 = _mm256_cvtepu16_epi32(_mm256_extracti128_si256(sm, 1));
        __m256i mins = _mm256_or_si256(m32, _mm256_slli_epi32(m32, 16)); /* each min in both i16 halves */
        float d = f16s(w), dmin = f16s(w + 2);
        const uint8_t *qsp = w + (five ? 48 : 16);
        __m256i qh = five ? load32(w + 16) : _mm256_setzero_si256();
        __m256i isum[FG_MM_NT], isum2[FG_MM_NT];
        FG_UNROLL for (int j = 0; j < NT; j++) isum[j] = isum2[j] = _mm256_setzero_si256();
        FG_UNROLL for (int c = 0; c < 4; c++) {
            __m256i qs = load32(qsp + 32 * c);
            __m256i lo = _mm256_and_si256(qs, m4), hi = _mm256_and_si256(_mm256_srli_epi16(qs, 4), m4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4));
            }
            __m256i s_lo = scale_one(scales, 2 * c), s_hi = scale_one(scales, 2 * c + 1);
            FG_UNROLL for (int j = 0; j < NT; j++) {
                const int8_t *xp = r.qx[j] + 256 * b + 64 * c;
                __m256i x_lo = _mm256_load_si256((const __m256i *)(const void *)xp);
                __m256i x_hi = _mm256_load_si256((const __m256i *)(const void *)(xp + 32));
                isum[j] = madd_acc(isum[j], _mm256_maddubs_epi16(lo, x_lo), s_lo);
                isum2[j] = madd_acc(isum2[j], _mm256_maddubs_epi16(hi, x_hi), s_hi);
            }
        }
        kq_block_add(&r, b, NT, isum, isum2, mins, d, dmin, acc);
    }
    FG_UNROLL for (int j = 0; j < NT; j++) out[j] = hsum_ps(acc[j]);
}

FG_INLINE void dot_q4_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q45_k_tile(K, w, x, xs, NT, out, false);
}
FG_INLINE void dot_q5_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    q45_k_tile(K, w, x, xs, NT, out, true);
}

/* Q6_K: per half h, ql0 = ql[64h..], ql1 = ql[64h+32..], qh = qh[32h..]; the
 * four 32-code vectors are (ql0 lo, ql1 lo, ql0 hi, ql1 hi) with qh bits
 * 0-1, 2-3, 4-5, 6-7 on top, sub-blocks 8h + 2k and +1. Unsigned codes 0..63;
 * the offset 32 comes back as 32 sum_s sc_s bsum_s. */
FG_INLINE void dot_q6_k_tile(int64_t K, const uint8_t *w, const uint8_t *x, size_t xs, const int NT, float *out)
{
    kq_rows r;
    kq_rows_init(&r, K, x, xs, NT);
    __m256 acc[FG_MM_NT];
    FG_UNROLL for (int j = 0; j < NT; j++) acc[j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0xf), m2 = _mm256_set1_epi8(0x30);
    for (int64_t b = 0; b < K / 256; b++, w += 210) {
        __m256i scales = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w + 192)));
        float d = f16s(w + 208);
        /* isum starts at -32 sum_s sc_s bsum_s, the code offset. */
        __m256i isum[FG_MM_NT], isum2[FG_MM_NT];
        FG_UNROLL for (int j = 0; j < NT; j++) {
            isum[j] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                       _mm256_slli_epi32(_mm256_madd_epi16(load32(r.bsums[j] + 16 * b), scales), 5));
            isum2[j] = _mm256_setzero_si256();
        }
        FG_UNROLL for (int h = 0; h < 2; h++) {
            __m256i ql0 = load32(w + 64 * h), ql1 = load32(w + 64 * h + 32), qh = load32(w + 128 + 32 * h);
            __m256i sch = half_both(scales, h);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2));
            q[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m2));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2));
            FG_UNROLL for (int k = 0; k < 4; k++) {
                __m256i s = scale_pair(sch, 2 * k);
                FG_UNROLL for (int j = 0; j < NT; j++) {
                    __m256i xv = _mm256_load_si256((const __m256i *)(const void *)(r.qx[j] + 256 * b + 128 * h + 32 * k));
                    if (k % 2) isum2[j] = madd_acc(isum2[j], _mm256_maddubs_epi16(q[k], xv), s);
                    else isum[j] = madd_acc(isum[j], _mm256_maddubs_epi16(q[k], xv), s);
                }
            }
        }
        FG_UNROLL for (int j = 0; j < NT; j++)
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(isum[j], isum2[j])), _mm256_set1_ps(d * r.dx[j][b]),
                                     acc[j]);
    }
    FG_UNROLL for (int j = 0; j < NT; j++) out[j] = hsum_ps(acc[j]);
}

/* The kernels, one per weight type. */
#define TILES_OF(type, name) TILES(dot_##name)
FG_MM_EACH_TYPE(TILES_OF)
