/*
 * test_gpu_ops.c — the GPU tier's merge gate: every op of the GPU backend
 * against the CPU backend in reference mode (scalar dequantization, double
 * sums, no f16 roundings beyond the F16 KV cache both keep), through the
 * backend interface they share.
 *
 * Each check draws fresh random inputs (seeded from the clock; the seed is
 * printed with any failure), fills the GPU output with NaN first so an
 * element the kernel never wrote fails, and measures ||gpu - cpu|| / ||cpu||
 * against DESIGN.md's thresholds (fp32 arithmetic: far under 1e-3). Shapes
 * cover every quant type the GPU computes with, token counts on both sides
 * of the GEMV/GEMM switch, odd lengths, seq_q != seq_k (decode with an
 * offset and a chunk after a prefill), GQA groups 1, 2, 4, 8 and MQA, head
 * dims 64..256, sliding windows, soft-capping, and shuffled block tables.
 *
 * Without a GPU every test says SKIPPED.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "backend/gpu/gpu.h"
#include "gguf/quant.h"
#include "gguf/types.h"
#include "runtime/sampler.h"

/* ---- Set-up ------------------------------------------------------------------------ */

static uint64_t rng_state, seed;

static void seed_rng(void)
{
    seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 20);
    rng_state = seed | 1;
}

static uint64_t next_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static float unif(void) /* [-1, 1) */
{
    return (float)((next_u64() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static int rnd(int n)
{
    return (int)(next_u64() % (uint64_t)n);
}

static fg_backend *cpu, *gpu;

static void fresh_backends(void);

static void need_gpu(void)
{
    if (fg_backend_gpu_count() == 0) {
        const char *api = fg_backend_gpu_api();
        cr_skip_test("SKIPPED: no GPU on this machine (%s)", api ? api : "and no GPU backend in this build");
    }
    seed_rng();
    fresh_backends();
}

static void done(void)
{
    fg_backend_free(cpu);
    fg_backend_free(gpu);
    cpu = gpu = NULL;
}

/* New backends within a test (a KV pool is allocated once per backend). */
static void fresh_backends(void)
{
    done();
    cr_assert_eq(fg_backend_cpu_init(1, true, &cpu), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_backend_gpu_init(0, &gpu), FG_OK, "%s", fg_last_error());
}

/* An activation on both backends, filled with the same host rows. */
typedef struct pair {
    fg_tensor c, g;
    int64_t ne0, rows;
} pair;

static pair make_pair(int64_t ne0, int64_t rows, const float *host)
{
    pair p = {.ne0 = ne0, .rows = rows};
    cr_assert_eq(cpu->ops->alloc(cpu, ne0, rows, &p.c), FG_OK, "%s", fg_last_error());
    cr_assert_eq(gpu->ops->alloc(gpu, ne0, rows, &p.g), FG_OK, "%s", fg_last_error());
    if (host) {
        cr_assert_eq(cpu->ops->write(cpu, &p.c, (int32_t)rows, host), FG_OK);
        cr_assert_eq(gpu->ops->write(gpu, &p.g, (int32_t)rows, host), FG_OK, "%s", fg_last_error());
    }
    return p;
}

static float *random_rows(int64_t n, float scale)
{
    float *x = malloc((size_t)n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = unif() * scale;
    return x;
}

static pair random_pair(int64_t ne0, int64_t rows, float scale)
{
    float *x = random_rows(ne0 * rows, scale);
    pair p = make_pair(ne0, rows, x);
    free(x);
    return p;
}

/* Fills the GPU side with NaN, so unwritten elements fail the comparison. */
static void poison(pair *p)
{
    float *x = malloc((size_t)(p->ne0 * p->rows) * sizeof *x);
    for (int64_t i = 0; i < p->ne0 * p->rows; i++) x[i] = NAN;
    cr_assert_eq(gpu->ops->write(gpu, &p->g, (int32_t)p->rows, x), FG_OK);
    free(x);
}

/* ||gpu - cpu|| / ||cpu|| over the first `rows` rows; fails on NaN. */
static double rel_err(const pair *p, int32_t rows, const char *what)
{
    size_t n = (size_t)(p->ne0 * rows);
    float *c = malloc(n * sizeof *c), *g = malloc(n * sizeof *g);
    cr_assert_eq(cpu->ops->read(cpu, &p->c, rows, c), FG_OK);
    cr_assert_eq(gpu->ops->read(gpu, &p->g, rows, g), FG_OK, "%s: %s", what, fg_last_error());
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(isfinite(g[i]), "%s: element %zu (row %zu) is %f on the GPU (cpu %f); seed %llu", what, i,
                  i / (size_t)p->ne0, g[i], c[i], (unsigned long long)seed);
        num += ((double)g[i] - c[i]) * ((double)g[i] - c[i]);
        den += (double)c[i] * c[i];
    }
    free(c);
    free(g);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void expect_close(const pair *p, int32_t rows, double tol, const char *what)
{
    double e = rel_err(p, rows, what);
    cr_expect_leq(e, tol, "%s: relative error %.3g > %.3g; seed %llu", what, e, tol, (unsigned long long)seed);
}

/* ---- Weights ------------------------------------------------------------------------ */

/* Random blocks of `type` whose scale fields are sane halves (any bit
 * pattern is a valid quant, but a random f16 scale can be Inf or NaN). */
static void *random_weight(fg_type type, int64_t K, int64_t N, size_t *bytes)
{
    const fg_type_info *ti = fg_type_get(type);
    size_t row = fg_type_row_size(type, K);
    *bytes = row * (size_t)N;
    uint8_t *w = malloc(*bytes);
    if (type == FG_TYPE_F32) {
        for (int64_t i = 0; i < K * N; i++) ((float *)w)[i] = unif();
        return w;
    }
    if (type == FG_TYPE_F16 || type == FG_TYPE_BF16) {
        for (int64_t i = 0; i < K * N; i++)
            ((uint16_t *)w)[i] = type == FG_TYPE_F16 ? fg_f32_to_f16(unif()) : fg_f32_to_bf16(unif());
        return w;
    }
    for (size_t i = 0; i < *bytes; i++) w[i] = (uint8_t)next_u64();
    if (type == FG_TYPE_MXFP4) { /* E8M0 exponents 120..124: scales 2^-8..2^-4, codes up to 12 */
        for (size_t b = 0; b < *bytes / ti->type_size; b++) w[b * ti->type_size] = (uint8_t)(120 + rnd(5));
        return w;
    }
    int d_off = type == FG_TYPE_Q6_K ? 208 : 0;
    bool has_m = type == FG_TYPE_Q4_1 || type == FG_TYPE_Q5_1 || type == FG_TYPE_Q4_K || type == FG_TYPE_Q5_K;
    float scale = ti->block_size == 256 ? 0.01f : 0.05f;
    for (size_t b = 0; b < *bytes / ti->type_size; b++) {
        uint8_t *blk = w + b * ti->type_size;
        uint16_t d = fg_f32_to_f16(scale * (0.5f + 0.5f * unif())), m = fg_f32_to_f16(scale * unif());
        memcpy(blk + d_off, &d, 2);
        if (has_m) memcpy(blk + 2, &m, 2);
    }
    return w;
}

typedef struct wpair {
    fg_tensor c, g;
    void *host;
} wpair;

static wpair make_weight(fg_type type, int64_t K, int64_t N)
{
    wpair w = {0};
    size_t bytes;
    w.host = random_weight(type, K, N, &bytes);
    (void)bytes;
    fg_weight_src t = {.name = "test.weight", .type = type, .ne0 = K, .rows = N, .data = w.host};
    cr_assert_eq(cpu->ops->weight(cpu, &t, &w.c), FG_OK, "%s", fg_last_error());
    cr_assert_eq(gpu->ops->weight(gpu, &t, &w.g), FG_OK, "%s", fg_last_error());
    return w; /* host stays alive: the CPU backend's weight is a view of it */
}

static wpair make_vector(const float *v, int64_t n)
{
    wpair w = {0};
    w.host = malloc((size_t)n * sizeof(float));
    memcpy(w.host, v, (size_t)n * sizeof(float));
    fg_weight_src t = {.name = "test.vector", .type = FG_TYPE_F32, .ne0 = n, .rows = 1, .data = w.host};
    cr_assert_eq(cpu->ops->weight(cpu, &t, &w.c), FG_OK);
    cr_assert_eq(gpu->ops->weight(gpu, &t, &w.g), FG_OK, "%s", fg_last_error());
    return w;
}

/* Steps a plain batch of n tokens of one sequence at positions pos0..,
 * slots 0..n-1 (ops then work on n rows). */
static void step_plain(int32_t n, int32_t pos0)
{
    int32_t *ids = calloc((size_t)n, 4), *pos = calloc((size_t)n, 4), *seq = calloc((size_t)n, 4),
            *slot = calloc((size_t)n, 4);
    int32_t n_blocks = (n + 15) / 16;
    int32_t *table = calloc((size_t)n_blocks, 4);
    for (int32_t i = 0; i < n; i++) pos[i] = pos0 + i, slot[i] = i;
    for (int32_t b = 0; b < n_blocks; b++) table[b] = b;
    fg_batch b = {.n_tokens = n, .ids = ids, .pos = pos, .seq = seq, .slot = slot,
                  .n_seqs = 1, .max_blocks = n_blocks, .block_tables = table};
    cr_assert_eq(cpu->ops->step_begin(cpu, &b), FG_OK);
    cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK, "%s", fg_last_error());
    free(ids), free(pos), free(seq), free(slot), free(table);
}

/* KV storage for up to max_n tokens (needed before any step), then a plain
 * step of n tokens. */
/* The arithmetic of the kernel the GPU's matmul dispatch picks for type
 * over T tokens of K: 'q', 'h' or 'f' (pick.h). */
static char mm_arith(fg_type type, int32_t T, int64_t K)
{
    return fg_gpu_mm_kernel_arith(fg_backend_gpu_matmul_pick(gpu, type, T, K));
}

/* Batch-invariant mode, which the GPU backend takes from the environment. */
static bool invariant_mode(void)
{
    const char *e = getenv("FORGE_BATCH_INVARIANT");
    return e && *e && strcmp(e, "0") != 0;
}

static void begin_simple(int32_t max_n, int32_t n, int32_t pos0, int64_t kv_row)
{
    int32_t n_slots = (max_n + 15) / 16 * 16;
    cr_assert_eq(cpu->ops->kv_alloc(cpu, 1, n_slots, 16, kv_row, kv_row, kv_row, FG_TYPE_F16), FG_OK);
    cr_assert_eq(gpu->ops->kv_alloc(gpu, 1, n_slots, 16, kv_row, kv_row, kv_row, FG_TYPE_F16), FG_OK, "%s", fg_last_error());
    step_plain(n, pos0);
}

/* ---- matmul and embed ------------------------------------------------------------ */

/* The values the GPU's int8 activations stand for: per 32, d = max|x|/127
 * and codes rounded to nearest even (mmvq.cuh / q8.cuh). */
static void q8_roundtrip(float *x, int64_t n)
{
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[32 * b + i]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        for (int i = 0; i < 32; i++) x[32 * b + i] = rintf(x[32 * b + i] * id) * d;
    }
}

/* dst's CPU side = src's CPU rows as the GPU's int8 activations stand for
 * them (the reference input of a GEMV that reads src quantized). */
static void cpu_q8_copy(const pair *src, pair *dst, int32_t rows)
{
    float *host = malloc((size_t)(src->ne0 * rows) * sizeof *host);
    cr_assert_eq(cpu->ops->read(cpu, &src->c, rows, host), FG_OK);
    q8_roundtrip(host, src->ne0 * rows);
    cr_assert_eq(cpu->ops->write(cpu, &dst->c, rows, host), FG_OK);
    free(host);
}

static const fg_type gpu_types[] = {FG_TYPE_F32, FG_TYPE_F16, FG_TYPE_BF16, FG_TYPE_Q4_0, FG_TYPE_Q4_1, FG_TYPE_Q5_0,
                                    FG_TYPE_Q5_1, FG_TYPE_Q8_0, FG_TYPE_Q4_K, FG_TYPE_Q5_K, FG_TYPE_Q6_K,
                                    FG_TYPE_MXFP4};
enum { N_GPU_TYPES = sizeof gpu_types / sizeof *gpu_types };

Test(gpu_ops, matmul_every_type_gemv_and_gemm, .init = need_gpu, .fini = done)
{
    /* (N, K, T): T <= 32 takes the GEMV kernels (eight tokens a launch),
     * larger the tiled GEMM; Q4_0, Q8_0 and MXFP4 from 5 tokens the f16
     * tensor-core GEMM (CUDA), with token tiles of 16, 32 and 64, partial
     * row tiles and several token tiles. */
    static const int shapes[][3] = {{64, 256, 1}, {97, 512, 2}, {130, 256, 5}, {70, 512, 8}, {133, 768, 9},
                                    {90, 256, 32}, {200, 512, 77}, {64, 1024, 130}, {33, 512, 33},
                                    {40, 8448, 3}, {256, 4096, 64}, {128, 1024, 16}, {300, 2304, 256}};
    begin_simple(256, 256, 0, 8);
    for (int ti = 0; ti < N_GPU_TYPES; ti++) {
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            int N = shapes[si][0], K = shapes[si][1], T = shapes[si][2];
            wpair w = make_weight(gpu_types[ti], K, N);
            /* The integer GEMV (Q4_0, Q4_1, Q8_0, Q4_K, MXFP4 at T <= 32) quantizes the
             * activations to int8 per 32 (d = max|x|/127, round to nearest
             * even): the CPU reference gets the activations those codes
             * stand for, so both compute the same function to f32 rounding. */
            char kind = mm_arith(gpu_types[ti], T, K);
            bool q8 = kind == 'q';
            float *xh = random_rows((int64_t)K * T, 1.0f), *xr = malloc((size_t)K * T * sizeof(float));
            memcpy(xr, xh, (size_t)K * T * sizeof(float));
            if (q8) q8_roundtrip(xr, (int64_t)K * T);
            pair x = make_pair(K, T, xh), y = random_pair(N, T, 1.0f);
            cr_assert_eq(cpu->ops->write(cpu, &x.c, T, xr), FG_OK);
            free(xh);
            free(xr);
            /* With a bias and a residual add (into y itself) on odd shapes. */
            bool extras = si % 2 == 1;
            float *bv = random_rows(N, 1.0f);
            wpair bias = make_vector(bv, N);
            if (!extras) poison(&y);
            cr_assert_eq(cpu->ops->matmul(cpu, &w.c, extras ? &bias.c : NULL, &x.c, extras ? &y.c : NULL, T, &y.c, false), FG_OK);
            cr_assert_eq(gpu->ops->matmul(gpu, &w.g, extras ? &bias.g : NULL, &x.g, extras ? &y.g : NULL, T, &y.g, false), FG_OK,
                         "%s", fg_last_error());
            char what[96];
            snprintf(what, sizeof what, "matmul %s N %d K %d T %d%s", fg_type_name(gpu_types[ti]), N, K, T,
                     extras ? " +bias +add" : "");
            /* Above 32 tokens a CUDA build multiplies f16 operands on the
             * tensor cores (cuBLAS): DESIGN.md's fp16 tier. */
            expect_close(&y, T, kind == 'h' ? 3e-3 : 1e-5, what);
            free(bv);
            free(bias.host);
            free(w.host);
        }
    }
}

/* Decode-sized steps: RMSNorm and SwiGLU leave their output quantized for
 * the integer GEMV that follows (no quantizing launch of its own), and two
 * GEMVs on the same input share one quantization. Each stage is compared
 * with the CPU reference, the GEMVs against the activations the int8 codes
 * stand for. */
Test(gpu_ops, fused_quantization_feeds_the_gemv, .init = need_gpu, .fini = done)
{
    enum { K = 512, N = 96, T = 3 };
    if (mm_arith(FG_TYPE_Q4_0, T, K) != 'q')
        cr_skip_test("SKIPPED: Q4_0 and Q8_0 take the f16 GEMM at %d tokens here (batch-invariant mode), not the "
                     "integer GEMV this test is about",
                     T);
    wpair w1 = make_weight(FG_TYPE_Q4_0, K, N), w2 = make_weight(FG_TYPE_Q4_K, K, N), w3 = make_weight(FG_TYPE_Q8_0, K, N);
    begin_simple(8, T, 0, 8);
    float *nv = random_rows(K, 1.0f);
    wpair nw = make_vector(nv, K);
    pair x = random_pair(K, T, 2.0f), h = make_pair(K, T, NULL), y1 = make_pair(N, T, NULL), y2 = make_pair(N, T, NULL),
         hq = make_pair(K, T, NULL), g = random_pair(K, T, 3.0f), u = random_pair(K, T, 1.0f), sw = make_pair(K, T, NULL),
         y3 = make_pair(N, T, NULL);
    poison(&h), poison(&y1), poison(&y2), poison(&sw), poison(&y3);

    cr_assert_eq(cpu->ops->rms_norm(cpu, &x.c, &nw.c, K, 1e-5f, &h.c, false), FG_OK);
    cr_assert_eq(gpu->ops->rms_norm(gpu, &x.g, &nw.g, K, 1e-5f, &h.g, true), FG_OK, "%s", fg_last_error());
    expect_close(&h, T, 1e-5, "fused rms_norm output");
    cpu_q8_copy(&h, &hq, T);
    cr_assert_eq(cpu->ops->matmul(cpu, &w1.c, NULL, &hq.c, NULL, T, &y1.c, false), FG_OK);
    cr_assert_eq(gpu->ops->matmul(gpu, &w1.g, NULL, &h.g, NULL, T, &y1.g, true), FG_OK, "%s", fg_last_error());
    expect_close(&y1, T, 1e-5, "Q4_0 GEMV on the fused rms_norm quantization");
    cr_assert_eq(cpu->ops->matmul(cpu, &w2.c, NULL, &hq.c, NULL, T, &y2.c, false), FG_OK);
    cr_assert_eq(gpu->ops->matmul(gpu, &w2.g, NULL, &h.g, NULL, T, &y2.g, true), FG_OK, "%s", fg_last_error());
    expect_close(&y2, T, 1e-5, "Q4_K GEMV sharing that quantization");

    cr_assert_eq(cpu->ops->swiglu(cpu, &g.c, &u.c, &sw.c, false), FG_OK);
    cr_assert_eq(gpu->ops->swiglu(gpu, &g.g, &u.g, &sw.g, true), FG_OK, "%s", fg_last_error());
    expect_close(&sw, T, 1e-6, "fused swiglu output");
    cpu_q8_copy(&sw, &hq, T);
    cr_assert_eq(cpu->ops->matmul(cpu, &w3.c, NULL, &hq.c, NULL, T, &y3.c, false), FG_OK);
    cr_assert_eq(gpu->ops->matmul(gpu, &w3.g, NULL, &sw.g, NULL, T, &y3.g, true), FG_OK, "%s", fg_last_error());
    expect_close(&y3, T, 1e-5, "Q8_0 GEMV on the fused swiglu quantization");

    /* A hand-off lasts one op: an op between the norm and the matmul (here
     * one that rewrites h) ends it, and the matmul quantizes h anew even
     * though it is told quant_in. */
    cr_assert_eq(gpu->ops->rms_norm(gpu, &x.g, &nw.g, K, 1e-5f, &h.g, true), FG_OK, "%s", fg_last_error());
    cr_assert_eq(cpu->ops->add(cpu, &g.c, &h.c), FG_OK);
    cr_assert_eq(gpu->ops->add(gpu, &g.g, &h.g), FG_OK, "%s", fg_last_error());
    expect_close(&h, T, 1e-5, "h + g after the norm");
    cpu_q8_copy(&h, &hq, T);
    cr_assert_eq(cpu->ops->matmul(cpu, &w1.c, NULL, &hq.c, NULL, T, &y1.c, false), FG_OK);
    cr_assert_eq(gpu->ops->matmul(gpu, &w1.g, NULL, &h.g, NULL, T, &y1.g, true), FG_OK, "%s", fg_last_error());
    expect_close(&y1, T, 1e-5, "Q4_0 GEMV after an op that ended the hand-off");
    free(nv);
    free(nw.host);
    free(w1.host), free(w2.host), free(w3.host);
}

/* Rows whose 32-blocks do not fill whole groups of eight (Q4_0, Q8_0 and
 * MXFP4 are regrouped by eight on the GPU, rows padded): the GEMV, the GEMM
 * and the embedding on rows of 5 and 17 blocks. */
Test(gpu_ops, matmul_and_embed_rows_of_odd_block_counts, .init = need_gpu, .fini = done)
{
    static const fg_type types[] = {FG_TYPE_Q4_0, FG_TYPE_Q8_0, FG_TYPE_Q4_1, FG_TYPE_Q5_0, FG_TYPE_MXFP4};
    static const int shapes[][3] = {{37, 160, 1}, {50, 544, 3}, {45, 160, 40}};
    begin_simple(40, 40, 0, 8);
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            int N = shapes[si][0], K = shapes[si][1], T = shapes[si][2];
            step_plain(T, 0);
            wpair w = make_weight(types[ti], K, N);
            char kind = mm_arith(types[ti], T, K);
            bool q8 = kind == 'q';
            float *xh = random_rows((int64_t)K * T, 1.0f), *xr = malloc((size_t)K * T * sizeof(float));
            memcpy(xr, xh, (size_t)K * T * sizeof(float));
            if (q8) q8_roundtrip(xr, (int64_t)K * T);
            pair x = make_pair(K, T, xh), y = make_pair(N, T, NULL);
            cr_assert_eq(cpu->ops->write(cpu, &x.c, T, xr), FG_OK);
            poison(&y);
            cr_assert_eq(cpu->ops->matmul(cpu, &w.c, NULL, &x.c, NULL, T, &y.c, false), FG_OK);
            cr_assert_eq(gpu->ops->matmul(gpu, &w.g, NULL, &x.g, NULL, T, &y.g, false), FG_OK, "%s", fg_last_error());
            char what[96];
            snprintf(what, sizeof what, "matmul %s N %d K %d T %d", fg_type_name(types[ti]), N, K, T);
            expect_close(&y, T, kind == 'h' ? 3e-3 : 1e-5, what);

            /* Embedding rows 0, N-1 and random ones of the same weight. */
            int32_t ids[3] = {0, N - 1, rnd(N)}, pos[3] = {0, 1, 2}, seq[3] = {0}, slot[3] = {0, 1, 2}, table[1] = {0};
            fg_batch b = {.n_tokens = 3, .ids = ids, .pos = pos, .seq = seq, .slot = slot,
                          .n_seqs = 1, .max_blocks = 1, .block_tables = table};
            cr_assert_eq(cpu->ops->step_begin(cpu, &b), FG_OK);
            cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK);
            pair e = make_pair(K, 3, NULL);
            poison(&e);
            cr_assert_eq(cpu->ops->embed(cpu, &w.c, &e.c), FG_OK);
            cr_assert_eq(gpu->ops->embed(gpu, &w.g, &e.g), FG_OK, "%s", fg_last_error());
            snprintf(what, sizeof what, "embed %s K %d", fg_type_name(types[ti]), K);
            expect_close(&e, 3, 1e-6, what);
            free(xh), free(xr), free(w.host);
        }
    }
}

/* matmul_n (one launch for matmuls sharing an input) against the CPU's
 * separate matmuls: q/k/v-like triples with biases, gate/up-like pairs,
 * each integer-GEMV type, and a pair of mixed types (which the GPU runs
 * as separate launches). */
Test(gpu_ops, matmul_n_shares_one_launch, .init = need_gpu, .fini = done)
{
    static const fg_type types[][3] = {{FG_TYPE_Q4_0, FG_TYPE_Q4_0, FG_TYPE_Q4_0},
                                       {FG_TYPE_Q8_0, FG_TYPE_Q8_0, FG_TYPE_Q8_0},
                                       {FG_TYPE_Q4_K, FG_TYPE_Q4_K, FG_TYPE_Q4_K},
                                       {FG_TYPE_Q4_1, FG_TYPE_Q4_1, FG_TYPE_Q4_1},
                                       {FG_TYPE_Q4_K, FG_TYPE_Q6_K, FG_TYPE_Q4_K},
                                       {FG_TYPE_MXFP4, FG_TYPE_MXFP4, FG_TYPE_MXFP4}};
    enum { K = 512 };
    static const int Ns[3] = {96, 32, 33};
    /* From FG_GPU_MMQ_MIN_T tokens: Q4_0, Q8_0 and MXFP4 on the tensor-core GEMM (f16),
     * whose 128-row tiles here end inside each part. */
    static const int Ts[] = {1, 4, 7, 9, 40, 70};
    begin_simple(70, 1, 0, 8);
    for (size_t ci = 0; ci < sizeof types / sizeof *types; ci++) {
        for (size_t tj = 0; tj < sizeof Ts / sizeof *Ts; tj++) {
            int T = Ts[tj], n = ci % 2 ? 2 : 3;
            char kind = mm_arith(types[ci][0], T, K);
            if (T > 8 && (kind != 'h' || types[ci][0] != types[ci][1])) continue;
            step_plain(T, 0);
            wpair w[3], b[3];
            pair y[3];
            const fg_tensor *wc[3], *wg[3], *bc[3], *bg[3];
            fg_tensor *yc[3], *yg[3];
            for (int i = 0; i < n; i++) {
                w[i] = make_weight(types[ci][i], K, Ns[i]);
                float *bv = random_rows(Ns[i], 1.0f);
                b[i] = make_vector(bv, Ns[i]);
                free(bv);
                y[i] = make_pair(Ns[i], T, NULL);
                poison(&y[i]);
                wc[i] = &w[i].c, wg[i] = &w[i].g, bc[i] = i == 1 ? NULL : &b[i].c, bg[i] = i == 1 ? NULL : &b[i].g;
                yc[i] = &y[i].c, yg[i] = &y[i].g;
            }
            float *xh = random_rows((int64_t)K * T, 1.0f);
            pair x = make_pair(K, T, xh);
            if (kind == 'q') q8_roundtrip(xh, (int64_t)K * T);
            cr_assert_eq(cpu->ops->write(cpu, &x.c, T, xh), FG_OK);
            cr_assert_eq(cpu->ops->matmul_n(cpu, n, wc, bc, &x.c, yc, false), FG_OK);
            cr_assert_eq(gpu->ops->matmul_n(gpu, n, wg, bg, &x.g, yg, false), FG_OK, "%s", fg_last_error());
            for (int i = 0; i < n; i++) {
                char what[96];
                snprintf(what, sizeof what, "matmul_n %d of %d, %s N %d T %d", i, n, fg_type_name(types[ci][i]), Ns[i], T);
                /* Q6_K has no integer GEMV: its float GEMV reads the exact
                 * activations, which differ from the reference's by the int8
                 * rounding (about 0.5% of each). */
                expect_close(&y[i], T, types[ci][i] == FG_TYPE_Q6_K ? 2e-2 : kind == 'h' ? 3e-3 : 1e-5, what);
                free(w[i].host), free(b[i].host);
            }
            free(xh);
        }
    }
}

Test(gpu_ops, embed_every_type, .init = need_gpu, .fini = done)
{
    enum { T = 37 };
    int32_t ids[T], pos[T], seq[T], slot[T], table[3] = {0, 1, 2};
    for (int ti = 0; ti < N_GPU_TYPES; ti++) {
        int64_t ne0 = 512, rows = 300;
        wpair w = make_weight(gpu_types[ti], ne0, rows);
        for (int i = 0; i < T; i++) ids[i] = rnd((int)rows), pos[i] = i, seq[i] = 0, slot[i] = i;
        ids[0] = 0, ids[1] = (int32_t)rows - 1;
        fg_batch b = {.n_tokens = T, .ids = ids, .pos = pos, .seq = seq, .slot = slot,
                      .n_seqs = 1, .max_blocks = 3, .block_tables = table};
        if (ti == 0) {
            cr_assert_eq(cpu->ops->kv_alloc(cpu, 1, 48, 16, 8, 8, 8, FG_TYPE_F16), FG_OK);
            cr_assert_eq(gpu->ops->kv_alloc(gpu, 1, 48, 16, 8, 8, 8, FG_TYPE_F16), FG_OK);
        }
        pair out = make_pair(ne0, T, NULL);
        poison(&out);
        cr_assert_eq(cpu->ops->step_begin(cpu, &b), FG_OK);
        cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK);
        cr_assert_eq(cpu->ops->embed(cpu, &w.c, &out.c), FG_OK);
        cr_assert_eq(gpu->ops->embed(gpu, &w.g, &out.g), FG_OK, "%s", fg_last_error());
        char what[64];
        snprintf(what, sizeof what, "embed %s", fg_type_name(gpu_types[ti]));
        expect_close(&out, T, 1e-6, what);
        free(w.host);
    }
}

/* ---- rms_norm, rope, swiglu ----------------------------------------------------------- */

Test(gpu_ops, rms_norm_rows_and_heads, .init = need_gpu, .fini = done)
{
    /* Whole rows, and heads of 64..512 (one warp per head: 1, 2 or 4
     * float4s per lane, 80 leaving lanes idle) over many tokens. */
    static const int shapes[][3] = {{576, 576, 1}, {4096, 4096, 7}, {640, 640, 33}, {1024, 64, 5}, {768, 128, 12},
                                    {80 * 3, 80, 3}, {2048, 256, 33}, {1536, 512, 9}, {384, 384, 2}};
    begin_simple(33, 1, 0, 8);
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        int ne0 = shapes[i][0], group = shapes[i][1], T = shapes[i][2];
        step_plain(T, 0);
        pair x = random_pair(ne0, T, 3.0f), y = make_pair(ne0, T, NULL);
        float *wv = random_rows(group, 1.0f);
        wpair w = make_vector(wv, group);
        poison(&y);
        cr_assert_eq(cpu->ops->rms_norm(cpu, &x.c, &w.c, group, 1e-5f, &y.c, false), FG_OK);
        cr_assert_eq(gpu->ops->rms_norm(gpu, &x.g, &w.g, group, 1e-5f, &y.g, false), FG_OK, "%s", fg_last_error());
        char what[64];
        snprintf(what, sizeof what, "rms_norm ne0 %d group %d T %d", ne0, group, T);
        expect_close(&y, T, 1e-5, what);
        free(wv);
        free(w.host);
    }
}

Test(gpu_ops, rope_normal_neox_partial_scaled, .init = need_gpu, .fini = done)
{
    /* head_dim, n_rot, heads, mode, freq_factors, pos0 */
    static const int cases[][6] = {{64, 64, 9, 0, 0, 0},      {128, 128, 4, 1, 0, 3},  {128, 64, 3, 1, 0, 1000},
                                   {80, 40, 5, 0, 0, 77},      {128, 128, 8, 0, 1, 30000}, {256, 256, 2, 1, 0, 100000},
                                   {96, 32, 4, 0, 0, 5}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int hd = cases[i][0], n_rot = cases[i][1], heads = cases[i][2], T = 11;
        if (i == 0) begin_simple(T, T, cases[i][5], 8);
        else {
            int32_t ids[11] = {0}, pos[11], seq[11] = {0}, slot[11], table[1] = {0};
            for (int t = 0; t < T; t++) pos[t] = cases[i][5] + 13 * t, slot[t] = t;
            fg_batch b = {.n_tokens = T, .ids = ids, .pos = pos, .seq = seq, .slot = slot,
                          .n_seqs = 1, .max_blocks = 1, .block_tables = table};
            cr_assert_eq(cpu->ops->step_begin(cpu, &b), FG_OK);
            cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK);
        }
        pair x = random_pair((int64_t)hd * heads, T, 2.0f);
        float ffv[128];
        for (int k = 0; k < n_rot / 2; k++) ffv[k] = 1.0f + 7.0f * (unif() + 1.0f);
        wpair ff = make_vector(ffv, n_rot / 2);
        fg_rope rc = {cases[i][3] ? FG_ROPE_NEOX : FG_ROPE_NORMAL, n_rot, i == 2 ? 1e6f : 10000.0f,
                      i == 3 ? 0.25f : 1.0f, cases[i][4] ? ff.c.data : NULL};
        fg_rope rg = rc;
        rg.freq_factors = cases[i][4] ? ff.g.data : NULL;
        cr_assert_eq(cpu->ops->rope(cpu, &x.c, hd, &rc), FG_OK);
        cr_assert_eq(gpu->ops->rope(gpu, &x.g, hd, &rg), FG_OK, "%s", fg_last_error());
        char what[96];
        snprintf(what, sizeof what, "rope hd %d n_rot %d %s%s pos %d..", hd, n_rot, cases[i][3] ? "neox" : "normal",
                 cases[i][4] ? " freq_factors" : "", cases[i][5]);
        /* Angles up to ~1e5 rad: cosf/sinf of the same float agree to a few
         * ulp of the angle's magnitude. */
        expect_close(&x, T, cases[i][5] >= 30000 ? 1e-4 : 1e-5, what);
        free(ff.host);
    }
}

Test(gpu_ops, swiglu, .init = need_gpu, .fini = done)
{
    begin_simple(19, 19, 0, 8);
    pair g = random_pair(1536, 19, 6.0f), u = random_pair(1536, 19, 2.0f), y = make_pair(1536, 19, NULL);
    poison(&y);
    cr_assert_eq(cpu->ops->swiglu(cpu, &g.c, &u.c, &y.c, false), FG_OK);
    cr_assert_eq(gpu->ops->swiglu(gpu, &g.g, &u.g, &y.g, false), FG_OK, "%s", fg_last_error());
    expect_close(&y, 19, 1e-6, "swiglu");
}

/* GeGLU (gelu_tanh(gate) * up) and the embedding scale of Gemma's plan. */
Test(gpu_ops, geglu_and_scale, .init = need_gpu, .fini = done)
{
    begin_simple(19, 19, 0, 8);
    pair g = random_pair(1536, 19, 6.0f), u = random_pair(1536, 19, 2.0f), y = make_pair(1536, 19, NULL);
    poison(&y);
    cr_assert_eq(cpu->ops->geglu(cpu, &g.c, &u.c, &y.c), FG_OK);
    cr_assert_eq(gpu->ops->geglu(gpu, &g.g, &u.g, &y.g), FG_OK, "%s", fg_last_error());
    expect_close(&y, 19, 1e-6, "geglu");
    cr_assert_eq(cpu->ops->scale(cpu, &y.c, 25.3f), FG_OK);
    cr_assert_eq(gpu->ops->scale(gpu, &y.g, 25.3f), FG_OK, "%s", fg_last_error());
    expect_close(&y, 19, 1e-6, "scale");
}

/* The residual add of post-norm plans: out += x over the step's rows. */
Test(gpu_ops, add, .init = need_gpu, .fini = done)
{
    begin_simple(23, 23, 0, 8);
    pair x = random_pair(1000, 23, 3.0f), y = random_pair(1000, 23, 1.0f);
    cr_assert_eq(cpu->ops->add(cpu, &x.c, &y.c), FG_OK);
    cr_assert_eq(gpu->ops->add(gpu, &x.g, &y.g), FG_OK, "%s", fg_last_error());
    expect_close(&y, 23, 1e-7, "add");
}

/* Greedy sampling on the GPU against the CPU backend's (an argmax): random
 * rows of a vocabulary-sized width and an odd one, with planted ties (the
 * lower index wins), NaN (never wins) and +inf (wins). */
Test(gpu_ops, sample_greedy_rows_ties_nan_inf, .init = need_gpu, .fini = done)
{
    static const int widths[] = {128256, 49153, 7};
    begin_simple(8, 5, 0, 8);
    fg_sample_row rows[5];
    memset(rows, 0, sizeof rows);
    for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
        int n = widths[wi], T = 5;
        float *x = random_rows((int64_t)n * T, 10.0f);
        /* row 1: a tie for the max at two places; row 2: NaN beside the max;
         * row 3: two +inf; row 4: the max at the last index */
        x[1 * n + n / 3] = 20.0f, x[1 * n + n / 2] = 20.0f, x[1 * n + n - 1] = 20.0f;
        x[2 * n + 1] = NAN, x[2 * n + 2] = 15.0f, x[2 * n] = NAN;
        x[3 * n + n - 1] = INFINITY, x[3 * n + n / 2] = INFINITY;
        x[4 * n + n - 1] = 30.0f;
        pair l = make_pair(n, T, x);
        int32_t ic[5], ig[5], zero[5] = {0}, slot[5] = {0, 1, 2, 3, 4}, table[1] = {0};
        fg_batch b = {.n_tokens = T, .ids = zero, .pos = slot, .seq = zero, .slot = slot,
                      .n_seqs = 1, .max_blocks = 1, .block_tables = table, .n_sample = T, .sample = rows};
        cr_assert_eq(cpu->ops->step_begin(cpu, &b), FG_OK);
        cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK, "%s", fg_last_error());
        cr_assert_eq(cpu->ops->sample(cpu, &l.c, T, ic), FG_OK, "%s", fg_last_error());
        cr_assert_eq(gpu->ops->sample(gpu, &l.g, T, ig), FG_OK, "%s", fg_last_error());
        for (int t = 0; t < T; t++)
            cr_expect_eq(ig[t], ic[t], "greedy width %d row %d: GPU %d, CPU %d; seed %llu", n, t, ig[t], ic[t],
                         (unsigned long long)seed);
        for (int i = 0; i < n; i++) x[i] = i % 2 ? NAN : -INFINITY;
        cr_assert_eq(gpu->ops->write(gpu, &l.g, 1, x), FG_OK);
        b.n_sample = 1;
        cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK, "%s", fg_last_error());
        cr_expect_eq(gpu->ops->sample(gpu, &l.g, 1, ig), FG_ERR_INVALID_ARG, "a row of -inf and NaN must fail");
        free(x);
    }
}

/* Stochastic sampling on the GPU against the host sampler (runtime/sampler.c,
 * an independent implementation of the same filters): R copies of one row of
 * logits, row r drawn with u = (r + 1/2) / R. The GPU inverts the CDF of the
 * candidates in id order, so token i must be drawn R p_i times, to within
 * the grid's rounding, where p_i is the host sampler's probability of i
 * (fg_sampler_candidates); no token outside its candidates may appear.
 * Settings: no filter, llama.cpp's defaults, top-p alone (every token in
 * play), top-k cutting through a tie (the lower ids stay), min-p alone, top-k
 * then top-p, a high temperature, a top-k above the vocabulary (off) with
 * top-p; rows of a real vocabulary's width with NaN and -inf. Last (the
 * op adds them to the logits in place), logit biases: the leader banned,
 * a low token raised, biases on the NaN and -inf tokens (still never
 * drawn), with filters and greedy. */
Test(gpu_ops, sample_matches_the_host_sampler_distribution, .init = need_gpu, .fini = done)
{
    enum { R = 2048, N = 32000 };
    static const fg_sampler_params base = {1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 0.0f, 0.0f, 1, NULL, 0, false};
    struct { float t; int k; float p, minp; bool bias; } cases[] = {
        {1.0f, 0, 1.0f, 0.0f, 0}, {0.8f, 40, 0.95f, 0.05f, 0}, {1.3f, 0, 0.9f, 0.0f, 0}, {0.7f, 6, 1.0f, 0.0f, 0},
        {1.0f, 0, 1.0f, 0.2f, 0}, {1.0f, 50, 0.5f, 0.0f, 0},   {2.5f, 200, 1.0f, 0.0f, 0}, {1.0f, 40000, 0.8f, 0.0f, 0},
        {0.8f, 40, 0.95f, 0.05f, 1}, {1.0f, 0, 1.0f, 0.0f, 1}, {0.0f, 0, 1.0f, 0.0f, 1}};
    /* Applied in place, so each case's bias is relative to the one before:
     * case 9 adds the same again, case 10 makes token 5 the maximum. */
    static const fg_logit_bias bias[] = {{3, 3.0f}, {4, 10.0f}, {5, 4.0f}, {100, -100.0f}, {31999, 0.25f}};
    static const fg_logit_bias bias2[] = {{3, 6.0f}, {4, 20.0f}, {5, 8.0f}, {100, -200.0f}, {31999, 0.5f}};
    static const fg_logit_bias bias3[] = {{3, 6.0f}, {4, 20.0f}, {5, 20.0f}, {100, -200.0f}, {31999, 0.5f}};
    static const fg_logit_bias raise5[] = {{3, 0.0f}, {4, 0.0f}, {5, 12.0f}, {100, 0.0f}, {31999, 0.0f}};
    begin_simple(8, 1, 0, 8);
    float *x = malloc(N * sizeof *x), *xs = malloc((size_t)N * R * sizeof *xs);
    fg_sample_row *rows = malloc(R * sizeof *rows);
    int32_t *ids = malloc(R * sizeof *ids), *count = calloc(N, sizeof *count), zero[1] = {0}, table[1] = {0};
    /* Two rows: a flat one (most candidates sets are thousands of tokens:
     * the kernel's whole-row path) and a peaked one, like a model's (its
     * shared-memory path). Both with a few clear leaders, a tie straddling
     * the 6th place, NaN and -inf. */
    for (int shape = 0; shape < 2; shape++) {
        for (int i = 0; i < N; i++) x[i] = shape == 0 ? 4.0f * unif() : unif() - 3.0f;
        if (shape == 1)
            for (int i = 0; i < 120; i++) x[rnd(N)] = 5.0f + 3.0f * unif();
        x[100] = 9.0f, x[2000] = 8.5f, x[31999] = 8.5f, x[7] = 8.0f;
        x[500] = 7.5f, x[600] = 7.5f, x[700] = 7.5f, x[800] = 7.5f;
        x[3] = NAN, x[4] = -INFINITY;
        for (int r = 0; r < R; r++) memcpy(xs + (size_t)r * N, x, (size_t)N * sizeof *x);
        pair l = make_pair(N, R, xs);
        for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
            fg_sampler_params sp = base;
            sp.temperature = cases[ci].t, sp.top_k = cases[ci].k, sp.top_p = cases[ci].p, sp.min_p = cases[ci].minp;
            /* The host sampler sees the original row with the biases so far
             * (bias2, bias3: the sums), the GPU adds this case's to its row. */
            const fg_logit_bias *host_bias = ci == 8 ? bias : ci == 9 ? bias2 : bias3;
            int32_t nb = cases[ci].bias ? 5 : 0;
            if (nb) sp.logit_bias = host_bias, sp.n_logit_bias = nb;
            for (int r = 0; r < R; r++)
                rows[r] = (fg_sample_row){sp.temperature, sp.top_k, sp.top_p, sp.min_p, (r + 0.5) / R, nb,
                                          ci == 10 ? raise5 : bias};
            fg_batch b = {.n_tokens = 1, .ids = zero, .pos = zero, .seq = zero, .slot = zero,
                          .n_seqs = 1, .max_blocks = 1, .block_tables = table, .n_sample = R, .sample = rows};
            cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK, "%s", fg_last_error());
            cr_assert_eq(gpu->ops->sample(gpu, &l.g, R, ids), FG_OK, "%s", fg_last_error());
            fg_sampler *smp;
            cr_assert_eq(fg_sampler_init(&sp, N, &smp), FG_OK, "%s", fg_last_error());
            fg_sampler_cands c;
            cr_assert_eq(fg_sampler_candidates(smp, x, &c), FG_OK, "%s", fg_last_error());
            memset(count, 0, N * sizeof *count);
            for (int r = 0; r < R; r++) {
                cr_assert(ids[r] >= 0 && ids[r] < N, "case %zu: id %d", ci, ids[r]);
                count[ids[r]]++;
            }
            double *p = calloc(N, sizeof *p);
            for (int32_t i = 0; i < c.n; i++) p[c.id[i]] = c.p[i];
            int worst = 0;
            double worst_d = 0;
            for (int i = 0; i < N; i++) {
                double d = fabs(count[i] - R * p[i]);
                if (d > worst_d) worst_d = d, worst = i;
            }
            cr_expect_leq(worst_d, 2.0,
                          "%s row, case %zu (t %.2f k %d p %.2f min_p %.2f): token %d drawn %d times of %d, host "
                          "probability %.5f (%d candidates)",
                          shape ? "peaked" : "flat", ci, sp.temperature, sp.top_k, sp.top_p, sp.min_p, worst, count[worst],
                          R, p[worst], c.n);
            free(p);
            fg_sampler_free(smp);
        }
    }
    free(rows), free(ids), free(count), free(x), free(xs);
}

/* The gather op (the rows that need logits) against the CPU's. */
Test(gpu_ops, gather_rows, .init = need_gpu, .fini = done)
{
    begin_simple(40, 1, 0, 8);
    int32_t ids[37] = {0}, pos[37], seq[37] = {0}, slot[37], table[3] = {0, 1, 2}, rows[5] = {0, 3, 4, 20, 36};
    for (int i = 0; i < 37; i++) pos[i] = i, slot[i] = i;
    fg_batch b = {.n_tokens = 37, .ids = ids, .pos = pos, .seq = seq, .slot = slot,
                  .n_seqs = 1, .max_blocks = 3, .block_tables = table, .n_out = 5, .out_rows = rows};
    cr_assert_eq(cpu->ops->step_begin(cpu, &b), FG_OK);
    cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK, "%s", fg_last_error());
    pair x = random_pair(576, 37, 1.0f), y = make_pair(576, 5, NULL);
    poison(&y);
    cr_assert_eq(cpu->ops->gather(cpu, &x.c, &y.c), FG_OK);
    cr_assert_eq(gpu->ops->gather(gpu, &x.g, &y.g), FG_OK, "%s", fg_last_error());
    expect_close(&y, 5, 0.0, "gather");
    rows[2] = 37; /* out of the step */
    cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_ERR_INVALID_ARG, "a row outside the step is refused");
}

/* ---- kv_store + attention ------------------------------------------------------------ */

/* Two steps over three sequences whose blocks are scattered through the
 * pool: a prefill of odd lengths, then decode tokens and a chunk that
 * continue them (queries whose positions start after the cached keys). */
static void attention_case(int n_head, int n_kv, int hd, int window, float softcap)
{
    enum { BS = 16, N_SEQ = 3, MAXB = 16 };
    int64_t k_row = (int64_t)n_kv * hd;
    int n_blocks = N_SEQ * MAXB;
    cr_assert_eq(cpu->ops->kv_alloc(cpu, 2, n_blocks * BS, BS, k_row, k_row, (int64_t)n_head * hd, FG_TYPE_F16), FG_OK);
    cr_assert_eq(gpu->ops->kv_alloc(gpu, 2, n_blocks * BS, BS, k_row, k_row, (int64_t)n_head * hd, FG_TYPE_F16), FG_OK, "%s", fg_last_error());
    int perm[N_SEQ * MAXB];
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = rnd(i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t table[N_SEQ * MAXB];
    for (int i = 0; i < n_blocks; i++) table[i] = perm[i];
    int len0[N_SEQ] = {1 + rnd(40), 17 + rnd(100), 3 + rnd(7)}; /* prefill lengths */
    int add[N_SEQ] = {1, 1, 5 + rnd(20)};                        /* then decode, decode, a chunk */
    /* Step 2 decodes one token of each sequence: few enough tokens that
     * the GPU splits each (token, head)'s keys (split-KV), chunks left
     * empty included. */
    for (int step = 0; step < 3; step++) {
        int32_t ids[256], pos[256], seq[256], slot[256];
        int n = 0;
        for (int s = 0; s < N_SEQ; s++) {
            int p0 = step == 0 ? 0 : step == 1 ? len0[s] : len0[s] + add[s];
            int p1 = step == 0 ? len0[s] : step == 1 ? len0[s] + add[s] : len0[s] + add[s] + 1;
            for (int p = p0; p < p1; p++, n++) {
                ids[n] = 0, pos[n] = p, seq[n] = s;
                slot[n] = table[s * MAXB + p / BS] * BS + p % BS;
            }
        }
        fg_batch b = {.n_tokens = n, .ids = ids, .pos = pos, .seq = seq, .slot = slot,
                      .n_seqs = N_SEQ, .max_blocks = MAXB, .block_tables = table};
        cr_assert_eq(cpu->ops->step_begin(cpu, &b), FG_OK);
        cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK, "%s", fg_last_error());
        pair q = random_pair((int64_t)n_head * hd, n, 1.0f), k = random_pair(k_row, n, 1.0f),
             v = random_pair(k_row, n, 1.0f), o = make_pair((int64_t)n_head * hd, n, NULL);
        for (int layer = 0; layer < 2; layer++) {
            cr_assert_eq(cpu->ops->kv_store(cpu, layer, &k.c, &v.c), FG_OK);
            cr_assert_eq(gpu->ops->kv_store(gpu, layer, &k.g, &v.g), FG_OK, "%s", fg_last_error());
        }
        fg_attn a = {n_head, n_kv, hd, hd, 1.0f / sqrtf((float)hd) * 3.0f, window, softcap};
        poison(&o);
        cr_assert_eq(cpu->ops->attention(cpu, 1, &q.c, &a, &o.c, false), FG_OK);
        cr_assert_eq(gpu->ops->attention(gpu, 1, &q.g, &a, &o.g, false), FG_OK, "%s", fg_last_error());
        char what[128];
        snprintf(what, sizeof what, "attention heads %d/%d hd %d window %d softcap %g, step %d (%d tokens)", n_head,
                 n_kv, hd, window, softcap, step, n);
        expect_close(&o, n, 1e-5, what);
    }
}

Test(gpu_ops, attention_gqa_groups_and_head_dims, .init = need_gpu, .fini = done)
{
    static const int cases[][3] = {{4, 4, 64}, {8, 4, 128}, {8, 2, 64}, {16, 2, 128}, {8, 1, 80},
                                   {12, 3, 96}, {4, 1, 256}, {9, 3, 64}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        attention_case(cases[i][0], cases[i][1], cases[i][2], 0, 0.0f);
        fresh_backends();
    }
}

/* Whether a prefill tile of head dim hd multiplies on the tensor cores
 * (a CUDA build), Q and the probabilities rounded to f16: DESIGN.md's fp16
 * tier. */
static bool mma_prefill(int hd)
{
    const char *api = fg_backend_gpu_api();
    return (hd == 64 || hd == 128) && api && strcmp(api, "CUDA") == 0;
}

/* One sequence: a prefill of 200 tokens, then a chunk of 77 continuing it,
 * then one decode token: the first two take the tiled prefill kernel (every
 * tile, 64 or 128 tokens, is one sequence's consecutive positions; tensor
 * cores in a CUDA build), the last the split-KV decode. Blocks are scattered through
 * the pool. */
static void attention_one_sequence(int n_head, int n_kv, int hd, int window, float softcap)
{
    enum { BS = 16, MAXB = 24 };
    int64_t k_row = (int64_t)n_kv * hd;
    cr_assert_eq(cpu->ops->kv_alloc(cpu, 1, MAXB * BS, BS, k_row, k_row, (int64_t)n_head * hd, FG_TYPE_F16), FG_OK);
    cr_assert_eq(gpu->ops->kv_alloc(gpu, 1, MAXB * BS, BS, k_row, k_row, (int64_t)n_head * hd, FG_TYPE_F16), FG_OK,
                 "%s", fg_last_error());
    int32_t table[MAXB];
    for (int i = 0; i < MAXB; i++) table[i] = i;
    for (int i = MAXB - 1; i > 0; i--) {
        int j = rnd(i + 1), t = table[i];
        table[i] = table[j], table[j] = t;
    }
    static const int spans[][2] = {{0, 200}, {200, 277}, {277, 278}};
    for (int step = 0; step < 3; step++) {
        int32_t ids[300], pos[300], seq[300], slot[300];
        int n = 0;
        for (int p = spans[step][0]; p < spans[step][1]; p++, n++)
            ids[n] = 0, pos[n] = p, seq[n] = 0, slot[n] = table[p / BS] * BS + p % BS;
        fg_batch b = {.n_tokens = n, .ids = ids, .pos = pos, .seq = seq, .slot = slot,
                      .n_seqs = 1, .max_blocks = MAXB, .block_tables = table};
        cr_assert_eq(cpu->ops->step_begin(cpu, &b), FG_OK);
        cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK, "%s", fg_last_error());
        pair q = random_pair((int64_t)n_head * hd, n, 1.0f), k = random_pair(k_row, n, 1.0f),
             v = random_pair(k_row, n, 1.0f), o = make_pair((int64_t)n_head * hd, n, NULL);
        cr_assert_eq(cpu->ops->kv_store(cpu, 0, &k.c, &v.c), FG_OK);
        cr_assert_eq(gpu->ops->kv_store(gpu, 0, &k.g, &v.g), FG_OK, "%s", fg_last_error());
        fg_attn a = {n_head, n_kv, hd, hd, 1.0f / sqrtf((float)hd) * 3.0f, window, softcap};
        poison(&o);
        cr_assert_eq(cpu->ops->attention(cpu, 0, &q.c, &a, &o.c, false), FG_OK);
        int splits;
        fg_gpu_attn_kernel kern = fg_backend_gpu_attention_pick(gpu, &a, &splits);
        cr_assert_eq(gpu->ops->attention(gpu, 0, &q.g, &a, &o.g, false), FG_OK, "%s", fg_last_error());
        /* The prefill steps take the tiled kernel at its head dims, the
         * decode token the split-KV one. */
        if (!invariant_mode() && mma_prefill(hd))
            cr_assert_eq(kern, step < 2 ? FG_GPU_ATTN_TILED : FG_GPU_ATTN_DECODE, "step %d took the %s kernel", step,
                         fg_gpu_attn_kernel_name(kern));
        if (!invariant_mode() && step == 2) cr_assert_gt(splits, 1, "the decode token's keys are split");
        char what[128];
        snprintf(what, sizeof what, "one-sequence attention heads %d/%d hd %d window %d softcap %g, positions %d..%d",
                 n_head, n_kv, hd, window, softcap, spans[step][0], spans[step][1] - 1);
        expect_close(&o, n, kern == FG_GPU_ATTN_TILED && mma_prefill(hd) ? 3e-3 : 1e-5, what);
    }
}

Test(gpu_ops, attention_prefill_tiles, .init = need_gpu, .fini = done)
{
    attention_one_sequence(8, 2, 128, 0, 0.0f);
    fresh_backends();
    attention_one_sequence(4, 4, 64, 0, 0.0f);
    fresh_backends();
    attention_one_sequence(8, 1, 64, 50, 0.0f);
    fresh_backends();
    attention_one_sequence(4, 2, 128, 0, 20.0f);
    fresh_backends();
    attention_one_sequence(6, 3, 80, 0, 0.0f); /* not a tiled head dim: the general kernel */
}

/* rope_store (RoPE of q and k and the KV store in one launch) against the
 * CPU's rope, rope, kv_store; then attention over what it stored, and the
 * output projection reading the quantization that the split-KV merge
 * leaves for it on decode steps. A prefill of 20 tokens, one decode token,
 * a chunk of 3. */
Test(gpu_ops, rope_store_attention_and_the_merged_quantization, .init = need_gpu, .fini = done)
{
    /* n_head, n_kv, head_dim, n_rot, neox */
    static const int cases[][5] = {{8, 2, 128, 128, 0}, {4, 4, 64, 32, 1}, {6, 2, 96, 96, 1}};
    static const int spans[][2] = {{0, 20}, {20, 21}, {21, 24}};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        if (ci > 0) fresh_backends();
        int n_head = cases[ci][0], n_kv = cases[ci][1], hd = cases[ci][2];
        int64_t k_row = (int64_t)n_kv * hd, o_row = (int64_t)n_head * hd;
        wpair wo = make_weight(FG_TYPE_Q4_0, o_row, 64);
        cr_assert_eq(cpu->ops->kv_alloc(cpu, 1, 64, 16, k_row, k_row, o_row, FG_TYPE_F16), FG_OK);
        cr_assert_eq(gpu->ops->kv_alloc(gpu, 1, 64, 16, k_row, k_row, o_row, FG_TYPE_F16), FG_OK, "%s", fg_last_error());
        fg_rope rp = {cases[ci][4] ? FG_ROPE_NEOX : FG_ROPE_NORMAL, cases[ci][3], 10000.0f, 1.0f, NULL};
        fg_attn a = {n_head, n_kv, hd, hd, 1.0f / sqrtf((float)hd) * 3.0f, 0, 0.0f};
        for (int step = 0; step < 3; step++) {
            int32_t ids[20] = {0}, pos[20], seq[20] = {0}, slot[20], table[4] = {2, 0, 3, 1};
            int n = spans[step][1] - spans[step][0];
            for (int i = 0; i < n; i++) {
                pos[i] = spans[step][0] + i;
                slot[i] = table[pos[i] / 16] * 16 + pos[i] % 16;
            }
            fg_batch b = {.n_tokens = n, .ids = ids, .pos = pos, .seq = seq, .slot = slot,
                          .n_seqs = 1, .max_blocks = 4, .block_tables = table};
            cr_assert_eq(cpu->ops->step_begin(cpu, &b), FG_OK);
            cr_assert_eq(gpu->ops->step_begin(gpu, &b), FG_OK, "%s", fg_last_error());
            pair q = random_pair(o_row, n, 1.0f), k = random_pair(k_row, n, 1.0f), v = random_pair(k_row, n, 1.0f),
                 o = make_pair(o_row, n, NULL), oq = make_pair(o_row, n, NULL), y = make_pair(64, n, NULL);
            cr_assert_eq(cpu->ops->rope_store(cpu, 0, &q.c, &k.c, &v.c, hd, &rp), FG_OK);
            cr_assert_eq(gpu->ops->rope_store(gpu, 0, &q.g, &k.g, &v.g, hd, &rp), FG_OK, "%s", fg_last_error());
            char what[128];
            snprintf(what, sizeof what, "rope_store heads %d/%d hd %d n_rot %d %s, positions %d..%d", n_head, n_kv, hd,
                     cases[ci][3], cases[ci][4] ? "neox" : "normal", spans[step][0], spans[step][1] - 1);
            expect_close(&q, n, 1e-5, what);
            expect_close(&k, n, 1e-5, what);
            poison(&o), poison(&y);
            cr_assert_eq(cpu->ops->attention(cpu, 0, &q.c, &a, &o.c, false), FG_OK);
            cr_assert_eq(gpu->ops->attention(gpu, 0, &q.g, &a, &o.g, true), FG_OK, "%s", fg_last_error());
            /* k is rotated by each backend's own RoPE, then rounded to f16
             * in the cache: a last-bit difference can round one element of
             * a cached key to the next f16 (1e-3 of it). */
            /* prefill-sized steps: the tensor-core kernel's fp16 tier */
            expect_close(&o, n, n > 8 && mma_prefill(hd) ? 3e-3 : 1e-4, "attention over the rope_store cache");
            /* Decode-sized steps: the GEMV on the int8 codes the merge left;
             * larger ones: the f16 tensor-core GEMM on the output itself. */
            bool q8 = mm_arith(FG_TYPE_Q4_0, n, o_row) == 'q';
            if (q8) cpu_q8_copy(&o, &oq, n);
            cr_assert_eq(cpu->ops->matmul(cpu, &wo.c, NULL, q8 ? &oq.c : &o.c, NULL, 0, &y.c, false), FG_OK);
            cr_assert_eq(gpu->ops->matmul(gpu, &wo.g, NULL, &o.g, NULL, 0, &y.g, true), FG_OK, "%s", fg_last_error());
            expect_close(&y, n, q8 ? 1e-3 : 3e-3, "output projection of the attention (merged quantization on decode)");
        }
        free(wo.host);
    }
}

Test(gpu_ops, attention_window_and_softcap, .init = need_gpu, .fini = done)
{
    attention_case(8, 2, 64, 7, 0.0f);
    fresh_backends();
    attention_case(4, 4, 128, 0, 20.0f);
}
