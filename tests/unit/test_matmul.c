/*
 * test_matmul.c — checks the CPU matmul (src/backend/cpu/matmul.c and the
 * kernels mm_*.c) on every instruction set this machine has, generic
 * included.
 *
 * Activation quantization:
 *   - Q8_0 codes and scales bit-exact against gguf.quants.quantize(x, Q8_0)
 *     (tests/data/matmul/q8_0_act.bin, from tools/gen_matmul_goldens.py);
 *   - Q8_1 (codes, d, s = d * sum) and Q8_K (codes, d, bsums) bit-exact
 *     against a scalar reference written here from the format definition;
 *   - a NaN or Inf in a block makes its d NaN (and the outputs NaN).
 *
 * Products, for each weight type x instruction set x shape (odd N; K of 32,
 * 64, 256, 4096 as the block size allows, plus odd K for the float types;
 * T = 1, 3, 5, 17; residual add on and off, aliasing y; row strides of W, x
 * and y wider than a row, W and the scratch unaligned; 1 to 3 threads),
 * against three references:
 *   exact  fg_vec_dot(W row, x), the double-precision dequantized dot of
 *          gguf/quant.c. Quantizing x to Q8 moves each element by at most
 *          d/2 (d = amax/127 of its block), so each output may move by at
 *          most sum_k |W_k| d_k / 2: checked per output (rigorous, plus 1e-5
 *          of sum |W x| for the kernel's float rounding). In aggregate the
 *          rounding error is uniform in +-d/2, so ||dy||/||y|| ~
 *          amax / (127 sqrt(12) rms(x)): about 5e-3 for normal x in blocks of
 *          32 (amax ~ 2.1 rms) and 7e-3 in blocks of 256 (amax ~ 2.9 rms); the
 *          check is <= 2e-2, the factor of ~3 covering the smallest shapes
 *          (5 outputs). F32/F16/BF16 weights: <= 1e-5 (no activation rounding).
 *   q8     fg_vec_dot(W row, x^) with x^ = q * d the reference-quantized
 *          activations: this removes the quantization error, leaving only
 *          float rounding, so the integer parts must be exact. Bound 1e-5.
 *   generic  the generic kernels' result, for every SIMD set. Bound 1e-5
 *          (the same integer sums, float terms added in another order).
 * Relative errors are ||y - ref|| / ||ref dot|| over all outputs (the
 * residual is excluded from the norm, so adding it cannot hide an error);
 * every check is written so that a NaN fails it. Padding columns of y beyond
 * N must be untouched, and 1, 2, 5 or 8 threads must give the same bits.
 */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/matmul.h"
#include "backend/cpu/mm_kernels.h"
#include "base/threadpool.h"
#include "gguf/quant.h"
#include "test_util.h"

/* ---- Random data ---------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(void) /* [0, 1) */
{
    return (double)(rng_u64() >> 11) * 0x1p-53;
}

static float rng_normal(void)
{
    double u = rng_uniform(), v = rng_uniform();
    return (float)(sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v));
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Where a block's f16 fields are: scale-like (positive, up to `big`) and, for
 * Q4_1/Q5_1, the offset m (either sign). */
typedef struct f16_fields {
    int d[2], nd; /* byte offsets of scale fields */
    int m;        /* byte offset of a signed offset field, or -1 */
} f16_fields;

static f16_fields fields_of(fg_type t)
{
    switch (t) {
    case FG_TYPE_Q4_0: case FG_TYPE_Q5_0: case FG_TYPE_Q8_0: return (f16_fields){{0}, 1, -1};
    case FG_TYPE_Q4_1: case FG_TYPE_Q5_1: return (f16_fields){{0}, 1, 2};
    case FG_TYPE_Q2_K: return (f16_fields){{80, 82}, 2, -1};
    case FG_TYPE_Q3_K: return (f16_fields){{108}, 1, -1};
    case FG_TYPE_Q4_K: case FG_TYPE_Q5_K: return (f16_fields){{0, 2}, 2, -1};
    case FG_TYPE_Q6_K: return (f16_fields){{208}, 1, -1};
    default: return (f16_fields){{0}, 0, -1};
    }
}

/* N rows of K weights of type t, row stride rb bytes (padding random too).
 * Quantized blocks are random bytes (every code pattern) with their f16
 * scales replaced by random finite values of a realistic size. */
static uint8_t *make_weights(fg_type t, int64_t N, int64_t K, size_t rb)
{
    uint8_t *w = malloc((size_t)N * rb);
    cr_assert_not_null(w);
    for (size_t i = 0; i < (size_t)N * rb; i++) w[i] = (uint8_t)rng_u64();
    const fg_type_info *ti = fg_type_get(t);
    for (int64_t n = 0; n < N; n++) {
        uint8_t *row = w + n * rb;
        for (int64_t k = 0; k < K; k++) {
            float v = rng_normal() * 0.1f;
            if (t == FG_TYPE_F32) memcpy(row + 4 * k, &v, 4);
            else if (t == FG_TYPE_F16) put16(row + 2 * k, fg_f32_to_f16(v));
            else if (t == FG_TYPE_BF16) put16(row + 2 * k, fg_f32_to_bf16(v));
        }
        if (ti->block_size == 1) continue;
        f16_fields f = fields_of(t);
        for (int64_t b = 0; b < K / ti->block_size; b++) {
            uint8_t *blk = row + b * ti->type_size;
            for (int i = 0; i < f.nd; i++) put16(blk + f.d[i], fg_f32_to_f16((float)(0.002 + 0.02 * rng_uniform())));
            if (f.m >= 0) put16(blk + f.m, fg_f32_to_f16((float)(0.1 * (rng_uniform() - 0.5))));
            if (t == FG_TYPE_MXFP4) blk[0] = (uint8_t)(118 + rng_u64() % 6); /* scales 2^-10..2^-5 */
        }
    }
    return w;
}

/* ---- Reference activation quantization ----------------------------------------------------- */

/* Round half away from zero, written as numpy's np_roundf in gguf.quants:
 * floor(|v|) plus one if the fraction is at least 1/2. */
static int ref_round(float v)
{
    float a = fabsf(v), fl = floorf(a);
    float r = fl + floorf(2.0f * (a - fl));
    return (int)(v < 0 ? -r : r);
}

/* One block by the Q8 definition: d = max|x| / 127 (float), codes
 * round(x * (1/d)); zero codes if d is 0; NaN d (and zero codes) if the block
 * holds a NaN or Inf. */
/* x rounded to the nearest f16 value, through numpy-checked conversions
 * (test_quant.c checks fg_f32_to_f16 against numpy's astype(float16)). */
static float ref_f16_round(float x)
{
    return fg_f16_to_f32(fg_f32_to_f16(x));
}

static float ref_quant_block(const float *x, int n, int8_t *q)
{
    float amax = 0;
    bool finite = true;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i])) finite = false;
        else if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
    }
    float d = amax / 127.0f;
    if (!finite || d < FLT_MIN) {
        memset(q, 0, (size_t)n);
        return finite ? 0.0f : NAN;
    }
    float id = 1.0f / d;
    for (int i = 0; i < n; i++) q[i] = (int8_t)ref_round(x[i] * id);
    return d;
}

/* x^ = q * d for a row, by the reference, and each element's d in dk;
 * block is 32 (Q8_1) or 256 (Q8_K). */
static void ref_dequant_act(const float *x, int64_t K, int block, float *xhat, float *dk)
{
    int8_t q[256];
    for (int64_t b = 0; b < K / block; b++) {
        float d = ref_quant_block(x + b * block, block, q);
        if (block == 32) d = ref_f16_round(d); /* Q8_1 keeps ggml's f16 scale */
        for (int i = 0; i < block; i++) {
            xhat[b * block + i] = (float)q[i] * d;
            dk[b * block + i] = d;
        }
    }
}

/* ---- Kernel sets ------------------------------------------------------------------------------ */

static int isa_list(const char **names)
{
    int n = fg_cpu_matmul_isas(names, 8);
    cr_assert(n >= 1 && n <= 8 && strcmp(names[0], "generic") == 0);
    return n;
}

/* The kernel table behind an instruction set name, as matmul.c builds it. */
static const fg_mm_kernels *table_of(const char *isa)
{
    if (strcmp(isa, "generic") == 0) return fg_mm_kernels_generic();
    if (strcmp(isa, "avx2") == 0) return fg_mm_kernels_avx2();
    if (strcmp(isa, "avx512vnni") == 0) return fg_mm_kernels_avx512();
    if (strcmp(isa, "neon") == 0) return fg_mm_kernels_neon();
    cr_assert_fail("unknown instruction set %s", isa);
    return NULL;
}

static fg_mm_quant_fn quant_of(const char *isa, fg_mm_act a)
{
    const fg_mm_kernels *k = table_of(isa);
    fg_mm_quant_fn f = a == FG_MM_ACT_Q8_1 ? k->quant_q8_1 : k->quant_q8_k;
    if (!f) f = a == FG_MM_ACT_Q8_1 ? fg_mm_kernels_generic()->quant_q8_1 : fg_mm_kernels_generic()->quant_q8_k;
    return f;
}

static uint8_t *alloc_act(fg_mm_act a, int64_t K)
{
    uint8_t *p = aligned_alloc(64, fg_mm_act_row_bytes(a, K));
    cr_assert_not_null(p);
    return p;
}

/* ---- Activation quantization tests -------------------------------------------------------------- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

Test(matmul, q8_0_activations_match_gguf)
{
    FILE *f = fg_test_golden_open("matmul/q8_0_act.bin", "matmul", 1);
    cr_assert_not_null(f, "tests/data/matmul/q8_0_act.bin: missing or bad header; run tools/gen_matmul_goldens.py");
    uint32_t hdr[2];
    cr_assert_eq(fread(hdr, 4, 2, f), 2);
    int64_t rows = hdr[0], K = hdr[1], nb = K / 32;
    cr_assert(rows > 0 && rows < 100 && K % 32 == 0 && K <= 4096);
    float *x = malloc((size_t)(rows * K) * 4);
    uint8_t *want = malloc((size_t)(rows * nb * 34));
    cr_assert_eq(fread(x, 4, (size_t)(rows * K), f), (size_t)(rows * K));
    cr_assert_eq(fread(want, 34, (size_t)(rows * nb), f), (size_t)(rows * nb));
    cr_assert_eq(fgetc(f), EOF, "trailing bytes in the golden");
    fclose(f);

    const char *isas[8];
    int n_isa = isa_list(isas);
    uint8_t *act = alloc_act(FG_MM_ACT_Q8_1, K);
    for (int i = 0; i < n_isa; i++) {
        for (int64_t r = 0; r < rows; r++) {
            quant_of(isas[i], FG_MM_ACT_Q8_1)(x + r * K, K, act);
            const float *ds = fg_q8_1_ds(act, K);
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = want + (r * nb + b) * 34;
                uint16_t d16 = (uint16_t)(blk[0] | blk[1] << 8);
                cr_assert_eq(fg_f32_to_f16(ds[2 * b]), d16, "%s row %lld block %lld: d %g -> f16 %04x, gguf %04x",
                             isas[i], (long long)r, (long long)b, ds[2 * b], fg_f32_to_f16(ds[2 * b]), d16);
                cr_assert(memcmp(act + 32 * b, blk + 2, 32) == 0, "%s row %lld block %lld: codes differ from gguf",
                          isas[i], (long long)r, (long long)b);
            }
        }
    }
    free(act);
    free(x);
    free(want);
}

/* Rows that stress the quantizer: normal data at several scales, exact ties
 * (d = 1, values k + 1/2), zero and single-value blocks, 1e30 and 1e-30. */
static void make_act_rows(float *x, int64_t rows, int64_t K)
{
    for (int64_t r = 0; r < rows; r++) {
        float scale = (float)pow(10.0, (double)(r % 7) - 3.0);
        for (int64_t k = 0; k < K; k++) x[r * K + k] = rng_normal() * scale;
    }
    /* row 0: ties in every block (amax 127 so d = 1) */
    for (int64_t k = 0; k < K; k++)
        x[k] = k % 32 == 0 ? 127.0f : (float)((int)(rng_u64() % 253) - 126) + 0.5f;
    /* row 1: a zero block, a one-value block, huge and tiny blocks */
    if (rows > 1 && K >= 128) {
        for (int k = 0; k < 32; k++) x[K + k] = 0.0f;
        for (int k = 32; k < 64; k++) x[K + k] = k == 40 ? -2.5f : 0.0f;
        for (int k = 64; k < 96; k++) x[K + k] = rng_normal() * 1e30f;
        for (int k = 96; k < 128; k++) x[K + k] = rng_normal() * 1e-30f;
    }
}

Test(matmul, q8_1_and_q8_k_activations_match_reference)
{
    rng_state = 11;
    const int64_t K = 1024, rows = 9;
    float *x = malloc((size_t)(rows * K) * 4);
    make_act_rows(x, rows, K);
    const char *isas[8];
    int n_isa = isa_list(isas);
    uint8_t *act = alloc_act(FG_MM_ACT_Q8_1, K), *actk = alloc_act(FG_MM_ACT_Q8_K, K);
    int8_t q[256];
    for (int i = 0; i < n_isa; i++) {
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * K;
            quant_of(isas[i], FG_MM_ACT_Q8_1)(xr, K, act);
            const float *ds = fg_q8_1_ds(act, K);
            const int32_t *nsum = fg_q8_1_nsum(act, K);
            for (int64_t b = 0; b < K / 32; b++) {
                float d = ref_f16_round(ref_quant_block(xr + 32 * b, 32, q));
                int sum = 0;
                for (int j = 0; j < 32; j++) sum += q[j];
                cr_assert_eq(f32_bits(ds[2 * b]), f32_bits(d), "%s Q8_1 row %lld block %lld: d %a, want %a", isas[i],
                             (long long)r, (long long)b, ds[2 * b], d);
                cr_assert(memcmp(act + 32 * b, q, 32) == 0, "%s Q8_1 row %lld block %lld: codes", isas[i],
                          (long long)r, (long long)b);
                cr_assert_eq(f32_bits(ds[2 * b + 1]), f32_bits(d * (float)sum), "%s Q8_1 s", isas[i]);
                cr_assert_eq(nsum[b], -sum, "%s Q8_1 nsum", isas[i]);
            }
            quant_of(isas[i], FG_MM_ACT_Q8_K)(xr, K, actk);
            const float *dk = fg_q8_k_d(actk, K);
            const int16_t *bsums = fg_q8_k_bsums(actk, K);
            for (int64_t b = 0; b < K / 256; b++) {
                float d = ref_quant_block(xr + 256 * b, 256, q);
                cr_assert_eq(f32_bits(dk[b]), f32_bits(d), "%s Q8_K row %lld block %lld: d %a, want %a", isas[i],
                             (long long)r, (long long)b, dk[b], d);
                cr_assert(memcmp(actk + 256 * b, q, 256) == 0, "%s Q8_K codes", isas[i]);
                for (int s = 0; s < 16; s++) {
                    int sum = 0;
                    for (int j = 0; j < 16; j++) sum += q[16 * s + j];
                    cr_assert_eq(bsums[16 * b + s], sum, "%s Q8_K bsums", isas[i]);
                }
            }
        }
    }
    free(act);
    free(actk);
    free(x);
}

Test(matmul, nonfinite_activation_gives_nan)
{
    rng_state = 12;
    const int64_t K = 256, N = 5;
    const fg_type types[] = {FG_TYPE_Q4_0, FG_TYPE_Q4_1, FG_TYPE_Q8_0, FG_TYPE_Q4_K, FG_TYPE_Q6_K, FG_TYPE_F32};
    const char *isas[8];
    int n_isa = isa_list(isas);
    float x[256], y[5];
    for (int i = 0; i < n_isa; i++) {
        cr_assert(fg_cpu_matmul_force_isa(isas[i]));
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            for (int bad = 0; bad < 2; bad++) {
                for (int k = 0; k < K; k++) x[k] = rng_normal();
                x[77] = bad ? INFINITY : NAN;
                size_t rb = fg_type_row_size(types[ti], K);
                uint8_t *w = make_weights(types[ti], N, K, rb);
                void *scratch = malloc(fg_cpu_matmul_scratch(types[ti], K, 1) + 1);
                fg_cpu_matmul(NULL, types[ti], w, rb, N, K, x, K, 1, y, N, NULL, scratch);
                /* Float weights give Inf or NaN, as f32 arithmetic does;
                 * quantized ones NaN (the block's d is NaN). */
                for (int n = 0; n < N; n++)
                    cr_assert(types[ti] == FG_TYPE_F32 ? !isfinite(y[n]) : isnan(y[n]), "%s %s: x holds %s, y[%d] = %g",
                              isas[i], fg_type_name(types[ti]), bad ? "Inf" : "NaN", n, y[n]);
                free(w);
                free(scratch);
            }
        }
    }
    fg_cpu_matmul_force_isa(NULL);
}

/* ---- Products ------------------------------------------------------------------------------------ */

typedef struct shape {
    int64_t N, K, T;
} shape;

typedef struct worst {
    double exact, bound_ratio, q8, generic;
} worst;

static double rel_err(const float *y, const double *ref, const double *dot, int64_t T, int64_t N, int64_t ldy)
{
    double num = 0, den = 0;
    for (int64_t t = 0; t < T; t++) {
        for (int64_t n = 0; n < N; n++) {
            double e = (double)y[t * ldy + n] - ref[t * N + n];
            num += e * e;
            den += dot[t * N + n] * dot[t * N + n];
        }
    }
    return sqrt(num) / sqrt(den);
}

/* y = [add +] x W^T through fg_cpu_matmul, with padded strides; checks that
 * padding is untouched. Returns y (T rows of stride ldy). */
static float *run_matmul(fg_pool *pool, fg_type t, const uint8_t *w, size_t rb, shape s, const float *x,
                         int64_t ldx, const float *add, int64_t ldy)
{
    float *y = malloc((size_t)(s.T * ldy) * 4);
    cr_assert_not_null(y);
    for (int64_t i = 0; i < s.T * ldy; i++) y[i] = add ? add[i] : -12345.0f;
    size_t ss = fg_cpu_matmul_scratch(t, s.K, s.T);
    uint8_t *scratch = malloc(ss + 1); /* misaligned on purpose */
    cr_assert_not_null(scratch);
    fg_cpu_matmul(pool, t, w, rb, s.N, s.K, x, ldx, s.T, y, ldy, add ? y : NULL, scratch + 1);
    free(scratch);
    for (int64_t tt = 0; tt < s.T; tt++)
        for (int64_t n = s.N; n < ldy; n++)
            cr_assert_eq(f32_bits(y[tt * ldy + n]), f32_bits(add ? add[tt * ldy + n] : -12345.0f),
                         "%s: padding of y written (row %lld col %lld)", fg_type_name(t), (long long)tt, (long long)n);
    return y;
}

static void check_shape(fg_type t, shape s, bool with_add, int pool_threads, worst *wst)
{
    const fg_type_info *ti = fg_type_get(t);
    fg_mm_act act = fg_mm_act_of(t);
    size_t rb = fg_type_row_size(t, s.K) + 2 * ti->type_size + 3; /* padded, unaligned */
    int64_t ldx = s.K + 5, ldy = s.N + 3, TN = s.T * s.N;
    uint8_t *w = make_weights(t, s.N, s.K, rb);
    float *x = malloc((size_t)(s.T * ldx) * 4), *xhat = malloc((size_t)s.K * 4), *dk = malloc((size_t)s.K * 4);
    float *wf = malloc((size_t)(s.N * s.K) * 4);
    float *add = with_add ? malloc((size_t)(s.T * ldy) * 4) : NULL;
    double *dot = malloc((size_t)TN * 8), *ref = malloc((size_t)TN * 8), *refq = malloc((size_t)TN * 8);
    double *qbound = malloc((size_t)TN * 8);
    cr_assert(x && xhat && dk && wf && dot && ref && refq && qbound);
    for (int64_t i = 0; i < s.T * ldx; i++) x[i] = rng_normal();
    if (add)
        for (int64_t i = 0; i < s.T * ldy; i++) add[i] = rng_normal();
    for (int64_t n = 0; n < s.N; n++) fg_dequant_row(t, w + n * rb, wf + n * s.K, s.K);

    /* References, and the most that rounding x to x^ can move each output:
     * |x - x^| <= d/2 per element (plus a relative 2^-22 for the float
     * multiply by 1/d), so |dot(W, x) - dot(W, x^)| <= sum |W| d / 2. */
    for (int64_t tt = 0; tt < s.T; tt++) {
        const float *xr = x + tt * ldx;
        if (act != FG_MM_ACT_F32) ref_dequant_act(xr, s.K, act == FG_MM_ACT_Q8_1 ? 32 : 256, xhat, dk);
        for (int64_t n = 0; n < s.N; n++) {
            size_t at = (size_t)(tt * s.N + n);
            double a = add ? (double)add[tt * ldy + n] : 0.0;
            dot[at] = fg_vec_dot(t, w + n * rb, xr, s.K);
            ref[at] = dot[at] + a;
            double qb = 0, mag = 0;
            for (int64_t k = 0; k < s.K; k++) {
                double wa = fabs((double)wf[n * s.K + k]);
                mag += wa * fabs((double)xr[k]);
                if (act != FG_MM_ACT_F32) qb += wa * (0.5 * dk[k] + 0x1p-22 * fabs((double)xr[k]));
            }
            /* float rounding of the kernel's own sums */
            qbound[at] = qb + 1e-5 * mag + 1e-6 * fabs(a);
            refq[at] = (act == FG_MM_ACT_F32 ? dot[at] : fg_vec_dot(t, w + n * rb, xhat, s.K)) + a;
        }
    }

    fg_pool *pool = NULL;
    cr_assert_eq(fg_pool_init(pool_threads, &pool), FG_OK);
    const char *isas[8];
    int n_isa = isa_list(isas);
    float *yg = NULL;
    double bound_exact = act == FG_MM_ACT_F32 ? 1e-5 : 2e-2;
    for (int i = 0; i < n_isa; i++) {
        cr_assert(fg_cpu_matmul_force_isa(isas[i]));
        float *y = run_matmul(pool, t, w, rb, s, x, ldx, add, ldy);
        for (int64_t tt = 0; tt < s.T; tt++) {
            for (int64_t n = 0; n < s.N; n++) {
                size_t at = (size_t)(tt * s.N + n);
                double e = fabs((double)y[tt * ldy + n] - ref[at]);
                cr_assert(e <= qbound[at], "%s %s N=%lld K=%lld T=%lld: y[%lld][%lld] = %.9g, exact %.9g: error %.3g "
                          "exceeds what activation rounding allows (%.3g)", fg_type_name(t), isas[i], (long long)s.N,
                          (long long)s.K, (long long)s.T, (long long)tt, (long long)n, y[tt * ldy + n], ref[at], e,
                          qbound[at]);
                if (e / qbound[at] > wst[i].bound_ratio) wst[i].bound_ratio = e / qbound[at];
            }
        }
        double e_exact = rel_err(y, ref, dot, s.T, s.N, ldy), e_q8 = rel_err(y, refq, dot, s.T, s.N, ldy);
        cr_assert(e_exact <= bound_exact, "%s %s N=%lld K=%lld T=%lld: rel err vs exact %.3g > %.0e", fg_type_name(t),
                  isas[i], (long long)s.N, (long long)s.K, (long long)s.T, e_exact, bound_exact);
        cr_assert(e_q8 <= 1e-5, "%s %s N=%lld K=%lld T=%lld: rel err vs quantized-x reference %.3g > 1e-5",
                  fg_type_name(t), isas[i], (long long)s.N, (long long)s.K, (long long)s.T, e_q8);
        if (e_exact > wst[i].exact) wst[i].exact = e_exact;
        if (e_q8 > wst[i].q8) wst[i].q8 = e_q8;
        if (i == 0) {
            yg = y;
            continue;
        }
        double num = 0, den = 0;
        for (int64_t tt = 0; tt < s.T; tt++) {
            for (int64_t n = 0; n < s.N; n++) {
                double e = (double)y[tt * ldy + n] - yg[tt * ldy + n];
                num += e * e;
                den += dot[tt * s.N + n] * dot[tt * s.N + n];
            }
        }
        double e_gen = sqrt(num) / sqrt(den);
        cr_assert(e_gen <= 1e-5, "%s %s N=%lld K=%lld T=%lld: rel diff from generic %.3g > 1e-5", fg_type_name(t),
                  isas[i], (long long)s.N, (long long)s.K, (long long)s.T, e_gen);
        if (e_gen > wst[i].generic) wst[i].generic = e_gen;
        free(y);
    }
    fg_cpu_matmul_force_isa(NULL);
    fg_pool_free(pool);
    free(yg);
    free(w);
    free(wf);
    free(x);
    free(xhat);
    free(dk);
    free(add);
    free(dot);
    free(ref);
    free(refq);
    free(qbound);
}

static void check_type(fg_type t)
{
    rng_state = 1000 + (uint64_t)t;
    cr_assert(fg_cpu_matmul_supported(t));
    const fg_type_info *ti = fg_type_get(t);
    const int64_t Ks[] = {32, 64, 256, 4096, 37, 4099};
    const shape NT[] = {{37, 0, 1}, {37, 0, 3}, {129, 0, 17}, {1, 0, 5}};
    const char *isas[8];
    int n_isa = isa_list(isas);
    worst wst[8] = {{0}};
    int run = 0;
    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
        int64_t K = Ks[ki];
        if (K % ti->block_size != 0) continue;
        for (size_t si = 0; si < sizeof NT / sizeof NT[0]; si++) {
            shape s = NT[si];
            s.K = K;
            if (K == 4099 && s.T > 3) continue; /* keep the float types' odd-K runs short */
            check_shape(t, s, run % 2 == 1, 1 + run % 3, wst);
            run++;
        }
    }
    for (int i = 0; i < n_isa; i++)
        cr_log_info("matmul %-4s %-10s worst: rel err vs exact %.2e (error/bound %.2f), vs q8 reference %.2e, "
                    "vs generic %.2e", fg_type_name(t), isas[i], wst[i].exact, wst[i].bound_ratio, wst[i].q8,
                    wst[i].generic);
}

Test(matmul, f32) { check_type(FG_TYPE_F32); }
Test(matmul, f16) { check_type(FG_TYPE_F16); }
Test(matmul, bf16) { check_type(FG_TYPE_BF16); }
Test(matmul, q4_0) { check_type(FG_TYPE_Q4_0); }
Test(matmul, q4_1) { check_type(FG_TYPE_Q4_1); }
Test(matmul, q5_0) { check_type(FG_TYPE_Q5_0); }
Test(matmul, q5_1) { check_type(FG_TYPE_Q5_1); }
Test(matmul, q8_0) { check_type(FG_TYPE_Q8_0); }
Test(matmul, q2_k) { check_type(FG_TYPE_Q2_K); }
Test(matmul, q3_k) { check_type(FG_TYPE_Q3_K); }
Test(matmul, q4_k) { check_type(FG_TYPE_Q4_K); }
Test(matmul, q5_k) { check_type(FG_TYPE_Q5_K); }
Test(matmul, q6_k) { check_type(FG_TYPE_Q6_K); }
Test(matmul, mxfp4) { check_type(FG_TYPE_MXFP4); }

/* Every output is computed by the same kernel call whichever thread takes
 * its chunk, and the activations are quantized the same way whether split
 * across threads or not, so the thread count must not change a single bit.
 * Large enough to use the parallel quantization (T K >= 65536) and to make
 * threads steal chunks from each other's lanes. */
Test(matmul, thread_count_does_not_change_results)
{
    rng_state = 77;
    const fg_type types[] = {FG_TYPE_Q4_0, FG_TYPE_Q4_K, FG_TYPE_F16};
    const int64_t N = 1000, K = 2048, T = 37;
    float *x = malloc((size_t)(T * K) * 4), *y1 = malloc((size_t)(T * N) * 4), *yn = malloc((size_t)(T * N) * 4);
    cr_assert(x && y1 && yn);
    for (int64_t i = 0; i < T * K; i++) x[i] = rng_normal();
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        fg_type t = types[ti];
        size_t rb = fg_type_row_size(t, K);
        uint8_t *w = make_weights(t, N, K, rb);
        void *scratch = malloc(fg_cpu_matmul_scratch(t, K, T) + 64);
        fg_cpu_matmul(NULL, t, w, rb, N, K, x, K, T, y1, N, NULL, scratch);
        const int sizes[] = {2, 5, 8};
        for (size_t si = 0; si < 3; si++) {
            fg_pool *pool;
            cr_assert_eq(fg_pool_init(sizes[si], &pool), FG_OK);
            for (int rep = 0; rep < 3; rep++) {
                memset(yn, 0xff, (size_t)(T * N) * 4);
                fg_cpu_matmul(pool, t, w, rb, N, K, x, K, T, yn, N, NULL, scratch);
                cr_assert(memcmp(y1, yn, (size_t)(T * N) * 4) == 0, "%s: %d threads give other bits than 1",
                          fg_type_name(t), sizes[si]);
            }
            fg_pool_free(pool);
        }
        free(w);
        free(scratch);
    }
    free(x);
    free(y1);
    free(yn);
}

/* Batch invariance: one activation row gives the same bits whatever else is
 * in the batch. The kernels take tokens FG_MM_NT at a time, so the row is
 * put at every position of batches of 1 to 9 rows (tiles of 1, 2, 3 and 4
 * tokens, alone and beside full ones) among other rows; every type, every
 * instruction set. Tile-width-dependent accumulation (two partial sums for
 * narrow tiles, one for full ones) once made two identical prompts in one
 * step decode differently (issue 14, item 1). */
Test(matmul, a_row_gives_the_same_bits_at_any_batch_position)
{
    rng_state = 4242;
    const fg_type types[] = {FG_TYPE_F32,  FG_TYPE_F16,  FG_TYPE_BF16, FG_TYPE_Q4_0, FG_TYPE_Q4_1,
                             FG_TYPE_Q5_0, FG_TYPE_Q5_1, FG_TYPE_Q8_0, FG_TYPE_Q2_K, FG_TYPE_Q3_K,
                             FG_TYPE_Q4_K, FG_TYPE_Q5_K, FG_TYPE_Q6_K, FG_TYPE_MXFP4};
    const int64_t N = 40, K = 1024, TMAX = 9;
    float *x = malloc((size_t)(TMAX * K) * 4), *probe = malloc((size_t)K * 4);
    float *y1 = malloc((size_t)N * 4), *y = malloc((size_t)(TMAX * N) * 4);
    cr_assert(x && probe && y1 && y);
    for (int64_t k = 0; k < K; k++) probe[k] = rng_normal();
    const char *isas[8];
    int n_isa = isa_list(isas);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        fg_type t = types[ti];
        size_t rb = fg_type_row_size(t, K);
        uint8_t *w = make_weights(t, N, K, rb);
        void *scratch = malloc(fg_cpu_matmul_scratch(t, K, TMAX) + 64);
        cr_assert_not_null(scratch);
        for (int i = 0; i < n_isa; i++) {
            cr_assert(fg_cpu_matmul_force_isa(isas[i]));
            fg_cpu_matmul(NULL, t, w, rb, N, K, probe, K, 1, y1, N, NULL, scratch);
            for (int64_t T = 1; T <= TMAX; T++) {
                for (int64_t at = 0; at < T; at++) {
                    for (int64_t i2 = 0; i2 < T * K; i2++) x[i2] = rng_normal();
                    memcpy(x + at * K, probe, (size_t)K * 4);
                    fg_cpu_matmul(NULL, t, w, rb, N, K, x, K, T, y, N, NULL, scratch);
                    for (int64_t n = 0; n < N; n++)
                        cr_assert_eq(f32_bits(y[at * N + n]), f32_bits(y1[n]),
                                     "%s %s: output %lld of a row at position %lld of %lld is %.9g, alone %.9g",
                                     fg_type_name(t), isas[i], (long long)n, (long long)at, (long long)T,
                                     y[at * N + n], y1[n]);
                }
            }
        }
        free(w);
        free(scratch);
    }
    fg_cpu_matmul_force_isa(NULL);
    free(x);
    free(probe);
    free(y1);
    free(y);
}

Test(matmul, supported_types_and_scratch)
{
    const fg_type yes[] = {FG_TYPE_F32,  FG_TYPE_F16,  FG_TYPE_BF16, FG_TYPE_Q4_0, FG_TYPE_Q4_1,
                           FG_TYPE_Q5_0, FG_TYPE_Q5_1, FG_TYPE_Q8_0, FG_TYPE_Q2_K, FG_TYPE_Q3_K,
                           FG_TYPE_Q4_K, FG_TYPE_Q5_K, FG_TYPE_Q6_K, FG_TYPE_MXFP4};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) cr_assert(fg_cpu_matmul_supported(yes[i]));
    cr_assert(!fg_cpu_matmul_supported(FG_TYPE_Q8_1));
    cr_assert(!fg_cpu_matmul_supported(FG_TYPE_IQ4_NL));
    cr_assert(!fg_cpu_matmul_supported((fg_type)200));
    cr_assert_eq(fg_cpu_matmul_scratch(FG_TYPE_F16, 4096, 7), 0);
    cr_assert_geq(fg_cpu_matmul_scratch(FG_TYPE_Q4_0, 4096, 7), 7 * (4096 + 12 * 128));
    cr_assert_geq(fg_cpu_matmul_scratch(FG_TYPE_Q6_K, 4096, 7), 7 * (4096 + 4 * 16 + 2 * 256));
    /* The best set is last and is what runs by default. */
    const char *isas[8];
    int n = isa_list(isas);
    cr_assert_str_eq(fg_cpu_matmul_isa(), isas[n - 1]);
    fg_cpu_matmul_force_generic(true);
    cr_assert_str_eq(fg_cpu_matmul_isa(), "generic");
    fg_cpu_matmul_force_generic(false);
    cr_assert_str_eq(fg_cpu_matmul_isa(), isas[n - 1]);
    cr_assert(!fg_cpu_matmul_force_isa("sse9"));
    for (int i = 0; i < n; i++) cr_log_info("matmul: instruction set %d here: %s", i, isas[i]);
}
