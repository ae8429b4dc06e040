/*
 * test_attn.c — the CPU attention kernels (backend/cpu/attn.h): the plain C
 * version against a double-precision sum, and the SIMD version against the
 * plain C one bit for bit, at every head size forge's architectures use and
 * at odd ones, over runs of keys that end inside and outside a SIMD step.
 * The op around them (causal range, GQA, softmax, paged KV) is checked end
 * to end by test_forward.c against HF transformers.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/attn.h"

static uint64_t rng = 0x9E3779B97F4A7C15u;

static float unif(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static const int32_t dims[] = {64, 80, 96, 128, 256, 8, 7, 13};
static const int32_t lens[] = {1, 3, 8, 9, 17, 64, 100, 513};

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

typedef struct case_data {
    int32_t d, n;
    int64_t ld;
    float *q, *k, *p, *out, *out2;
} case_data;

/* Random q, keys at a row stride wider than d (as in the cache), and
 * probabilities that sum to 1. */
static case_data make_case(int32_t d, int32_t n)
{
    case_data c = {d, n, d + 8, NULL, NULL, NULL, NULL, NULL};
    c.q = malloc((size_t)d * sizeof(float));
    c.k = malloc((size_t)n * (size_t)c.ld * sizeof(float));
    c.p = malloc((size_t)n * sizeof(float));
    size_t out_n = (size_t)(n > d ? n : d);
    c.out = malloc(out_n * sizeof(float));
    c.out2 = malloc(out_n * sizeof(float));
    for (int32_t i = 0; i < d; i++) c.q[i] = unif();
    for (int64_t i = 0; i < (int64_t)n * c.ld; i++) c.k[i] = unif();
    float sum = 0;
    for (int32_t j = 0; j < n; j++) sum += (c.p[j] = unif() + 1.0f);
    for (int32_t j = 0; j < n; j++) c.p[j] /= sum;
    return c;
}

static void free_case(case_data *c)
{
    free(c->q);
    free(c->k);
    free(c->p);
    free(c->out);
    free(c->out2);
}

Test(attn_kernels, generic_matches_double_sums)
{
    const fg_cpu_attn_kernels *g = fg_cpu_attn_generic();
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
        for (size_t ni = 0; ni < sizeof lens / sizeof *lens; ni++) {
            case_data c = make_case(dims[di], lens[ni]);
            g->scores(c.q, c.k, c.ld, c.d, c.n, c.out);
            for (int32_t j = 0; j < c.n; j++) {
                double want = 0, mag = 0;
                for (int32_t i = 0; i < c.d; i++) {
                    want += (double)c.q[i] * c.k[(size_t)j * (size_t)c.ld + (size_t)i];
                    mag += fabs((double)c.q[i] * c.k[(size_t)j * (size_t)c.ld + (size_t)i]);
                }
                cr_assert_leq(fabs(c.out[j] - want), 1e-6 * mag + 1e-30, "d %d n %d key %d: %.9g, want %.9g", c.d, c.n,
                              j, c.out[j], want);
            }
            g->weighted_sum(c.p, c.k, c.ld, c.d, c.n, c.out);
            for (int32_t i = 0; i < c.d; i++) {
                double want = 0;
                for (int32_t j = 0; j < c.n; j++) want += (double)c.p[j] * c.k[(size_t)j * (size_t)c.ld + (size_t)i];
                cr_assert_leq(fabs(c.out[i] - want), 1e-6, "d %d n %d dim %d: %.9g, want %.9g", c.d, c.n, i, c.out[i],
                              want);
            }
            free_case(&c);
        }
    }
}

Test(attn_kernels, simd_equals_generic_bit_for_bit)
{
    const fg_cpu_attn_kernels *g = fg_cpu_attn_generic(), *s = fg_cpu_attn_avx2();
    if (!s) cr_skip_test("SKIPPED: this build or CPU has no AVX2 attention kernels");
    cr_assert_str_eq(fg_cpu_attn()->isa, s->isa, "the fastest kernels this CPU runs are not the ones chosen");
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
        for (size_t ni = 0; ni < sizeof lens / sizeof *lens; ni++) {
            case_data c = make_case(dims[di], lens[ni]);
            g->scores(c.q, c.k, c.ld, c.d, c.n, c.out);
            s->scores(c.q, c.k, c.ld, c.d, c.n, c.out2);
            for (int32_t j = 0; j < c.n; j++)
                cr_assert_eq(bits(c.out2[j]), bits(c.out[j]), "scores d %d n %d key %d: %a, generic %a", c.d, c.n, j,
                             c.out2[j], c.out[j]);
            g->weighted_sum(c.p, c.k, c.ld, c.d, c.n, c.out);
            s->weighted_sum(c.p, c.k, c.ld, c.d, c.n, c.out2);
            for (int32_t i = 0; i < c.d; i++)
                cr_assert_eq(bits(c.out2[i]), bits(c.out[i]), "weighted sum d %d n %d dim %d: %a, generic %a", c.d,
                             c.n, i, c.out2[i], c.out[i]);
            free_case(&c);
        }
    }
}
