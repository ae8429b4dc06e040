/*
 * test_quant.c — checks the scalar quant reference (src/gguf/quant.c) against
 * goldens from the `gguf` Python package, written by tools/gen_quant_goldens.py
 * into tests/data/quant/.
 *
 * Golden format (all little-endian after the "forge-golden quant v1" line; the
 * generator's docstring is the full description):
 *   <TYPE>.bin      u32 type, n_blocks, block_size, type_size;
 *                   u8 blocks[]; f32 want[n]; f32 x[n];
 *                   u32 part_len; f64 parts[n / part_len]; f64 dot
 *   f16_to_f32.bin  u32 n = 65536; f32 want[n] for half bit pattern i
 *   convert.bin     u32 n_bf16; u16 bf16[]; f32 want[];
 *                   u32 n_f32; f32 in[]; u16 f16_want[]; u16 bf16_want[]
 *
 * What must hold:
 *   - dequantization is bit-exact (float bit patterns, so -0 and +0 differ);
 *     golden values in the type files are finite, so a NaN never matches;
 *   - fg_vec_dot is within 1e-9 relative of numpy's float64 dot, for the whole
 *     row and for every block (or 32-element part of the float types);
 *   - f16/bf16 conversions match numpy bit for bit, except that a NaN need only
 *     be a NaN (payloads are not part of the contract).
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/quant.h"
#include "test_util.h"

/* ---- Reading goldens ----------------------------------------------------- */

/* A whole golden file after its header, consumed front to back. */
typedef struct golden {
    char name[64];
    uint8_t *buf;
    size_t len, pos;
} golden;

static void golden_load(golden *g, const char *name)
{
    char rel[96];
    snprintf(rel, sizeof rel, "quant/%s", name);
    snprintf(g->name, sizeof g->name, "%s", name);
    FILE *f = fg_test_golden_open(rel, "quant", 1);
    cr_assert_not_null(f, "tests/data/%s: missing or bad header; run tools/gen_quant_goldens.py", rel);
    size_t cap = 1 << 16;
    g->buf = malloc(cap);
    g->len = g->pos = 0;
    cr_assert_not_null(g->buf);
    size_t got;
    while ((got = fread(g->buf + g->len, 1, cap - g->len, f)) > 0) {
        g->len += got;
        if (g->len == cap) {
            cap *= 2;
            g->buf = realloc(g->buf, cap);
            cr_assert_not_null(g->buf);
        }
    }
    fclose(f);
}

/* The next n bytes; fails the test if the file is shorter. */
static const uint8_t *golden_take(golden *g, size_t n)
{
    cr_assert(n <= g->len - g->pos, "%s: truncated (wanted %zu bytes at offset %zu of %zu)",
              g->name, n, g->pos, g->len);
    const uint8_t *p = g->buf + g->pos;
    g->pos += n;
    return p;
}

static void golden_end(golden *g)
{
    cr_assert_eq(g->pos, g->len, "%s: %zu trailing bytes; format mismatch", g->name, g->len - g->pos);
    free(g->buf);
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t golden_u32(golden *g)
{
    return le32(golden_take(g, 4));
}

static double golden_f64(golden *g)
{
    const uint8_t *p = golden_take(g, 8);
    uint64_t u = (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* n little-endian u16 values into a malloc'd array. */
static uint16_t *golden_u16s(golden *g, size_t n)
{
    const uint8_t *p = golden_take(g, 2 * n);
    uint16_t *a = malloc(2 * n + 1);
    cr_assert_not_null(a);
    for (size_t i = 0; i < n; i++)
        a[i] = le16(p + 2 * i);
    return a;
}

/* n little-endian f32 values, kept as bit patterns, into a malloc'd array. */
static uint32_t *golden_f32s(golden *g, size_t n)
{
    const uint8_t *p = golden_take(g, 4 * n);
    uint32_t *a = malloc(4 * n + 1);
    cr_assert_not_null(a);
    for (size_t i = 0; i < n; i++)
        a[i] = le32(p + 4 * i);
    return a;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static bool f32_bits_nan(uint32_t u)
{
    return (u & 0x7fffffffu) > 0x7f800000u;
}

/* ---- Per-type goldens ---------------------------------------------------- */

/* One <TYPE>.bin, decoded. */
typedef struct type_golden {
    fg_type type;
    uint32_t n_blocks, block_size, type_size;
    int64_t n;              /* elements: n_blocks * block_size */
    uint8_t *blocks;        /* (n_blocks, type_size) raw bytes */
    uint32_t *want;         /* (n,) f32 bit patterns from gguf.quants.dequantize */
    float *x;               /* (n,) */
    uint32_t part_len;      /* elements per partial dot */
    double *parts;          /* (n / part_len,) */
    double dot;
} type_golden;

static void type_golden_load(type_golden *tg, fg_type t)
{
    const fg_type_info *ti = fg_type_get((uint32_t)t);
    cr_assert_not_null(ti);
    char name[64];
    snprintf(name, sizeof name, "%s.bin", ti->name);
    golden g;
    golden_load(&g, name);

    tg->type = t;
    cr_assert_eq(golden_u32(&g), (uint32_t)t, "%s: wrong type id", name);
    tg->n_blocks = golden_u32(&g);
    tg->block_size = golden_u32(&g);
    tg->type_size = golden_u32(&g);
    cr_assert_eq(tg->block_size, ti->block_size, "%s: block size %u, types.c says %u", name,
                 tg->block_size, ti->block_size);
    cr_assert_eq(tg->type_size, ti->type_size, "%s: type size %u, types.c says %u", name,
                 tg->type_size, ti->type_size);
    cr_assert_geq(tg->n_blocks, 16u, "%s: only %u blocks", name, tg->n_blocks);
    tg->n = (int64_t)tg->n_blocks * tg->block_size;

    size_t nbytes = (size_t)tg->n_blocks * tg->type_size;
    tg->blocks = malloc(nbytes);
    cr_assert_not_null(tg->blocks);
    memcpy(tg->blocks, golden_take(&g, nbytes), nbytes);
    tg->want = golden_f32s(&g, (size_t)tg->n);
    uint32_t *xb = golden_f32s(&g, (size_t)tg->n);
    tg->x = malloc(sizeof(float) * (size_t)tg->n);
    cr_assert_not_null(tg->x);
    for (int64_t i = 0; i < tg->n; i++)
        tg->x[i] = float_of(xb[i]);
    free(xb);

    tg->part_len = golden_u32(&g);
    cr_assert(tg->part_len > 0 && tg->part_len % tg->block_size == 0 && tg->n % tg->part_len == 0,
              "%s: bad part length %u", name, tg->part_len);
    int64_t n_parts = tg->n / tg->part_len;
    tg->parts = malloc(sizeof(double) * (size_t)n_parts);
    cr_assert_not_null(tg->parts);
    for (int64_t k = 0; k < n_parts; k++)
        tg->parts[k] = golden_f64(&g);
    tg->dot = golden_f64(&g);
    golden_end(&g);

    /* The type files hold finite values only (Inf/NaN live in the conversion
     * goldens), so a NaN from forge can never match one here. */
    for (int64_t i = 0; i < tg->n; i++)
        cr_assert(isfinite(float_of(tg->want[i])) && isfinite(tg->x[i]),
                  "%s: golden value %lld is not finite", name, (long long)i);
    cr_assert(isfinite(tg->dot), "%s: golden dot is not finite", name);
}

static void type_golden_free(type_golden *tg)
{
    free(tg->blocks);
    free(tg->want);
    free(tg->x);
    free(tg->parts);
}

/* Dequantizes src (the golden's blocks, possibly at another address) and
 * compares every element's bits with the golden; reports the first mismatch
 * with its block and the number of mismatches. */
static void expect_dequant(const type_golden *tg, const void *src, const char *how)
{
    /* One extra slot with a sentinel catches a write past the row. */
    float *got = malloc(sizeof(float) * (size_t)(tg->n + 1));
    cr_assert_not_null(got);
    const uint32_t sentinel = 0x7fa5a5a5u;
    got[tg->n] = float_of(sentinel);
    fg_dequant_row(tg->type, src, got, tg->n);
    cr_assert_eq(bits_of(got[tg->n]), sentinel, "%s: wrote past the end of the row",
                 fg_type_name(tg->type));

    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < tg->n; i++) {
        if (bits_of(got[i]) != tg->want[i]) {
            if (first < 0) first = i;
            bad++;
        }
    }
    if (bad) {
        uint32_t gb = bits_of(got[first]);
        cr_assert(bad == 0, "%s (%s): %lld of %lld elements differ; first at element %lld (block %lld, "
                "offset %lld): got %.9g (0x%08x), want %.9g (0x%08x)",
                fg_type_name(tg->type), how, (long long)bad, (long long)tg->n, (long long)first,
                (long long)(first / tg->block_size), (long long)(first % tg->block_size),
                (double)got[first], gb, (double)float_of(tg->want[first]), tg->want[first]);
    }
    free(got);
}

static void check_dequant(fg_type t)
{
    cr_assert(fg_quant_supported(t));
    type_golden tg;
    type_golden_load(&tg, t);

    expect_dequant(&tg, tg.blocks, "aligned");

    /* Rows in a GGUF mmap sit at any byte offset: the same bytes one past an
     * aligned address must give the same floats. */
    size_t nbytes = (size_t)tg.n_blocks * tg.type_size;
    uint8_t *shifted = malloc(nbytes + 1);
    cr_assert_not_null(shifted);
    memcpy(shifted + 1, tg.blocks, nbytes);
    expect_dequant(&tg, shifted + 1, "unaligned");
    free(shifted);

    type_golden_free(&tg);
}

/* |got - want| <= 1e-9 |want|; a zero reference must be met exactly, and a
 * NaN fails the comparison. Returns the relative error (0 for exact zeros). */
static double expect_dot(double got, double want, const char *what)
{
    double rel = want == 0.0 ? (got == 0.0 ? 0.0 : INFINITY) : fabs(got - want) / fabs(want);
    cr_assert(rel < 1e-9, "%s: got %.17g, want %.17g (relative error %.3g)", what, got, want, rel);
    return rel;
}

static void check_dot(fg_type t)
{
    type_golden tg;
    type_golden_load(&tg, t);
    const char *name = fg_type_name(t);
    char what[128];

    snprintf(what, sizeof what, "%s: whole-row dot", name);
    double worst = expect_dot(fg_vec_dot(t, tg.blocks, tg.x, tg.n), tg.dot, what);

    /* Each part on its own, so that blocks with small scales are checked too
     * (the whole-row dot is dominated by the largest ones). */
    size_t part_bytes = (size_t)(tg.part_len / tg.block_size) * tg.type_size;
    int64_t n_parts = tg.n / tg.part_len;
    for (int64_t k = 0; k < n_parts; k++) {
        snprintf(what, sizeof what, "%s: dot of part %lld", name, (long long)k);
        double got = fg_vec_dot(t, tg.blocks + (size_t)k * part_bytes, tg.x + k * tg.part_len,
                                tg.part_len);
        double rel = expect_dot(got, tg.parts[k], what);
        if (rel > worst) worst = rel;
    }
    cr_log_info("%s: %lld parts, worst relative dot error %.3g", name, (long long)n_parts, worst);

    /* An empty row is a valid input with a zero dot. */
    cr_assert_eq(fg_vec_dot(t, tg.blocks, tg.x, 0), 0.0);
    type_golden_free(&tg);
}

#define QUANT_TYPE_TESTS(T)                                  \
    Test(quant_dequant, T) { check_dequant(FG_TYPE_##T); }  \
    Test(quant_dot, T) { check_dot(FG_TYPE_##T); }

QUANT_TYPE_TESTS(F32)
QUANT_TYPE_TESTS(F16)
QUANT_TYPE_TESTS(BF16)
QUANT_TYPE_TESTS(Q4_0)
QUANT_TYPE_TESTS(Q4_1)
QUANT_TYPE_TESTS(Q5_0)
QUANT_TYPE_TESTS(Q5_1)
QUANT_TYPE_TESTS(Q8_0)
QUANT_TYPE_TESTS(Q2_K)
QUANT_TYPE_TESTS(Q3_K)
QUANT_TYPE_TESTS(Q4_K)
QUANT_TYPE_TESTS(Q5_K)
QUANT_TYPE_TESTS(Q6_K)
QUANT_TYPE_TESTS(MXFP4)

Test(quant, supported_types)
{
    const fg_type yes[] = {FG_TYPE_F32,  FG_TYPE_F16,  FG_TYPE_BF16, FG_TYPE_Q4_0, FG_TYPE_Q4_1,
                           FG_TYPE_Q5_0, FG_TYPE_Q5_1, FG_TYPE_Q8_0, FG_TYPE_Q2_K, FG_TYPE_Q3_K,
                           FG_TYPE_Q4_K, FG_TYPE_Q5_K, FG_TYPE_Q6_K, FG_TYPE_MXFP4};
    const fg_type no[] = {FG_TYPE_Q8_1,  FG_TYPE_Q8_K,  FG_TYPE_IQ4_NL, FG_TYPE_IQ2_XXS,
                          FG_TYPE_I8,    FG_TYPE_I32,   FG_TYPE_F64,    FG_TYPE_TQ2_0,
                          FG_TYPE_NVFP4, FG_TYPE_Q1_0,  (fg_type)4,     FG_TYPE_COUNT};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_expect(fg_quant_supported(yes[i]), "%s should be supported", fg_type_name(yes[i]));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_expect(!fg_quant_supported(no[i]), "type %d should not be supported", (int)no[i]);
}

/* F32 rows are copied bit for bit, specials included. */
Test(quant, f32_row_keeps_specials)
{
    const uint32_t in[] = {0x7fc00000u, 0x7f800001u, 0xff800000u, 0x80000000u, 0x00000001u,
                           0x7f7fffffu, 0x3f800000u, 0xffffffffu};
    enum { N = sizeof in / sizeof in[0] };
    uint8_t raw[4 * N];
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 4; k++)
            raw[4 * i + k] = (uint8_t)(in[i] >> (8 * k));
    float out[N];
    fg_dequant_row(FG_TYPE_F32, raw, out, N);
    for (int i = 0; i < N; i++)
        cr_expect_eq(bits_of(out[i]), in[i], "element %d: 0x%08x", i, bits_of(out[i]));
}

/* ---- Conversions --------------------------------------------------------- */

/* Equal bits, or both NaN. */
static bool same_f32(uint32_t got, uint32_t want)
{
    return got == want || (f32_bits_nan(got) && f32_bits_nan(want));
}

static bool f16_bits_nan(uint16_t h)
{
    return (h & 0x7fff) > 0x7c00;
}

static bool bf16_bits_nan(uint16_t h)
{
    return (h & 0x7fff) > 0x7f80;
}

/* Every half bit pattern: fg_f16_to_f32 and the F16 row path agree with
 * numpy, and f32 -> f16 takes every non-NaN half back to itself. */
Test(quant_convert, f16_to_f32_all_patterns)
{
    golden g;
    golden_load(&g, "f16_to_f32.bin");
    uint32_t n = golden_u32(&g);
    cr_assert_eq(n, 65536u);
    uint32_t *want = golden_f32s(&g, n);
    golden_end(&g);

    uint8_t *raw = malloc(2 * (size_t)n);
    float *row = malloc(sizeof(float) * n);
    cr_assert(raw && row);
    for (uint32_t i = 0; i < n; i++) {
        raw[2 * i] = (uint8_t)i;
        raw[2 * i + 1] = (uint8_t)(i >> 8);
    }
    fg_dequant_row(FG_TYPE_F16, raw, row, n);

    uint32_t n_nan = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)i;
        uint32_t got = bits_of(fg_f16_to_f32(h));
        cr_assert(same_f32(got, want[i]), "half 0x%04x: got 0x%08x, want 0x%08x", h, got, want[i]);
        cr_assert_eq(bits_of(row[i]), got, "half 0x%04x: F16 row gives 0x%08x", h, bits_of(row[i]));
        if (f32_bits_nan(want[i])) {
            n_nan++;
            cr_assert(f16_bits_nan(fg_f32_to_f16(float_of(got))), "half 0x%04x: NaN lost", h);
        } else {
            cr_assert_eq(fg_f32_to_f16(float_of(got)), h, "half 0x%04x: round trip gives 0x%04x", h,
                         fg_f32_to_f16(float_of(got)));
        }
    }
    cr_assert_eq(n_nan, 2u * 1023u, "the table should hold every NaN half");
    free(want);
    free(raw);
    free(row);
}

/* convert.bin, decoded. */
typedef struct convert_golden {
    uint32_t n_bf16;
    uint16_t *bf16;          /* (n_bf16,) inputs */
    uint32_t *bf16_want;     /* (n_bf16,) f32 bits */
    uint32_t n_f32;
    uint32_t *f32_in;        /* (n_f32,) f32 bits */
    uint16_t *f16_want;      /* (n_f32,) */
    uint16_t *bf16_out_want; /* (n_f32,) */
} convert_golden;

static void convert_golden_load(convert_golden *cg)
{
    golden g;
    golden_load(&g, "convert.bin");
    cg->n_bf16 = golden_u32(&g);
    cg->bf16 = golden_u16s(&g, cg->n_bf16);
    cg->bf16_want = golden_f32s(&g, cg->n_bf16);
    cg->n_f32 = golden_u32(&g);
    cg->f32_in = golden_f32s(&g, cg->n_f32);
    cg->f16_want = golden_u16s(&g, cg->n_f32);
    cg->bf16_out_want = golden_u16s(&g, cg->n_f32);
    golden_end(&g);
    cr_assert(cg->n_bf16 >= 1000 && cg->n_f32 >= 1000, "convert.bin: too few cases");
}

static void convert_golden_free(convert_golden *cg)
{
    free(cg->bf16);
    free(cg->bf16_want);
    free(cg->f32_in);
    free(cg->f16_want);
    free(cg->bf16_out_want);
}

Test(quant_convert, bf16_to_f32)
{
    convert_golden cg;
    convert_golden_load(&cg);
    uint8_t *raw = malloc(2 * (size_t)cg.n_bf16);
    float *row = malloc(sizeof(float) * cg.n_bf16);
    cr_assert(raw && row);
    for (uint32_t i = 0; i < cg.n_bf16; i++) {
        raw[2 * i] = (uint8_t)cg.bf16[i];
        raw[2 * i + 1] = (uint8_t)(cg.bf16[i] >> 8);
    }
    fg_dequant_row(FG_TYPE_BF16, raw, row, cg.n_bf16);

    uint32_t n_nan = 0, n_inf = 0, n_sub = 0;
    for (uint32_t i = 0; i < cg.n_bf16; i++) {
        uint16_t h = cg.bf16[i];
        uint32_t want = cg.bf16_want[i], got = bits_of(fg_bf16_to_f32(h));
        cr_assert(same_f32(got, want), "bf16 0x%04x: got 0x%08x, want 0x%08x", h, got, want);
        cr_assert_eq(bits_of(row[i]), got, "bf16 0x%04x: BF16 row gives 0x%08x", h, bits_of(row[i]));
        n_nan += bf16_bits_nan(h);
        n_inf += (h & 0x7fff) == 0x7f80;
        n_sub += (h & 0x7f80) == 0 && (h & 0x7f) != 0;
    }
    cr_assert(n_nan > 0 && n_inf > 0 && n_sub > 0, "convert.bin lacks NaN/Inf/subnormal bf16 cases");
    free(raw);
    free(row);
    convert_golden_free(&cg);
}

Test(quant_convert, f32_to_f16_rounding)
{
    convert_golden cg;
    convert_golden_load(&cg);
    uint32_t n_nan = 0, n_inf = 0;
    for (uint32_t i = 0; i < cg.n_f32; i++) {
        uint32_t in = cg.f32_in[i];
        uint16_t got = fg_f32_to_f16(float_of(in)), want = cg.f16_want[i];
        if (f16_bits_nan(want)) {
            n_nan++;
            cr_assert(f16_bits_nan(got), "f32 0x%08x: got 0x%04x, want a NaN", in, got);
        } else {
            cr_assert_eq(got, want, "f32 0x%08x (%.9g): got 0x%04x, want 0x%04x", in,
                         (double)float_of(in), got, want);
        }
        n_inf += (want & 0x7fff) == 0x7c00;
    }
    cr_assert(n_nan > 0 && n_inf > 0, "convert.bin lacks NaN/overflow cases");
    convert_golden_free(&cg);
}

Test(quant_convert, f32_to_bf16_rounding)
{
    convert_golden cg;
    convert_golden_load(&cg);
    uint32_t n_nan = 0;
    for (uint32_t i = 0; i < cg.n_f32; i++) {
        uint32_t in = cg.f32_in[i];
        uint16_t got = fg_f32_to_bf16(float_of(in)), want = cg.bf16_out_want[i];
        if (bf16_bits_nan(want)) {
            n_nan++;
            cr_assert(bf16_bits_nan(got), "f32 0x%08x: got 0x%04x, want a NaN", in, got);
        } else {
            cr_assert_eq(got, want, "f32 0x%08x (%.9g): got 0x%04x, want 0x%04x", in,
                         (double)float_of(in), got, want);
        }
    }
    cr_assert(n_nan > 0, "convert.bin lacks NaN cases");
    convert_golden_free(&cg);
}
