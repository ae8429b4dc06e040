/*
 * test_sampler.c — checks the token sampler (src/runtime/sampler.c) against
 * references computed here in double precision, independently of it.
 *
 * What must hold:
 *   - parameters: llama.cpp's defaults; each out-of-range value (NaN too) is
 *     FG_ERR_INVALID_ARG naming the parameter and its range;
 *   - the random stream is splitmix64 + xoshiro256** bit for bit (values from
 *     a Python transcription, quoted below);
 *   - kept sets are exact for top-k, top-p and min-p, ties and boundaries
 *     included (ties go to the lower id; top-p's cumulative mass hitting p
 *     exactly stops there; min-p keeps a logit exactly at max + logf(min_p));
 *   - the chain is llama.cpp's: top-p over the top-k survivors, top-p and
 *     min-p before temperature; on random logits of 1k and 262k tokens the
 *     candidates and their probabilities match a double-precision reference
 *     chain (sets exactly, unless a token sits within 1e-6 of the top-p cut;
 *     probabilities to 1e-5);
 *   - penalty arithmetic gives exact values (dyadic inputs), over the window;
 *   - a seed gives the same tokens twice, after reset too; another differs;
 *   - draws follow the distribution: chi-square over 100k samples at T = 1,
 *     0.7 and 1.6, with and without filters, p-value > 1e-6 (and a wrong
 *     distribution is rejected, to show the test has power);
 *   - greedy is the argmax after penalties, ties to the lowest id; -inf and
 *     NaN logits are never candidates; +inf is certain; all -inf is an error;
 *   - timing (printed, loosely bounded outside sanitizer builds).
 */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "runtime/sampler.h"
#include "test_util.h"

/* ---- Helpers ------------------------------------------------------------- */

/* Every filter and penalty off, temperature 1, a fixed seed. */
static fg_sampler_params plain(void)
{
    fg_sampler_params p = fg_sampler_defaults();
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 0;
    p.seed = 1234;
    return p;
}

static fg_sampler *mk(fg_sampler_params p, int32_t n)
{
    fg_sampler *s = NULL;
    fg_status st = fg_sampler_init(&p, n, &s);
    cr_assert_eq(st, FG_OK, "fg_sampler_init: %s", fg_last_error());
    return s;
}

static int cmp_int(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The candidate ids, sorted ascending, into ids (capacity cap); returns n. */
static int32_t kept(fg_sampler *s, const float *logits, int32_t *ids, int32_t cap)
{
    fg_sampler_cands c;
    fg_status st = fg_sampler_candidates(s, logits, &c);
    cr_assert_eq(st, FG_OK, "fg_sampler_candidates: %s", fg_last_error());
    cr_assert_leq(c.n, cap);
    memcpy(ids, c.id, (size_t)c.n * sizeof *ids);
    qsort(ids, (size_t)c.n, sizeof *ids, cmp_int);
    return c.n;
}

/* Asserts that the kept set of params p over logits is exactly want[]. */
static void expect_set(fg_sampler_params p, const float *logits, int32_t n, const int32_t *want, int32_t nwant,
                       const char *what)
{
    fg_sampler *s = mk(p, n);
    int32_t got[256];
    int32_t ng = kept(s, logits, got, 256);
    char gs[512] = "", ws[512] = "";
    for (int32_t i = 0; i < ng; i++)
        snprintf(gs + strlen(gs), sizeof gs - strlen(gs), " %d", (int)got[i]);
    for (int32_t i = 0; i < nwant; i++)
        snprintf(ws + strlen(ws), sizeof ws - strlen(ws), " %d", (int)want[i]);
    cr_assert(ng == nwant && memcmp(got, want, (size_t)ng * sizeof *got) == 0, "%s: kept {%s } want {%s }",
              what, gs, ws);
    fg_sampler_free(s);
}

/* Deterministic test data: splitmix64 and a standard normal by Box-Muller. */
static uint64_t tr_state;
static uint64_t tr_next(void)
{
    uint64_t z = (tr_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}
static double tr_unif(void)
{
    return ((double)(tr_next() >> 11) + 0.5) * 0x1.0p-53;
}
static double tr_normal(void)
{
    return sqrt(-2.0 * log(tr_unif())) * cos(6.283185307179586 * tr_unif());
}

/* LLM-like logits: normal(0, 2.5), a few tokens lifted by up to 12. */
static void fill_logits(float *l, int32_t n, uint64_t seed)
{
    tr_state = seed;
    for (int32_t i = 0; i < n; i++)
        l[i] = (float)(2.5 * tr_normal());
    for (int k = 0; k < 20; k++)
        l[tr_next() % (uint64_t)n] += (float)(12.0 * tr_unif());
}

/* ---- Reference chain (double precision) ---------------------------------- */

typedef struct rpair {
    double l;
    int32_t id;
} rpair;

static int rcmp(const void *pa, const void *pb)
{
    const rpair *a = pa, *b = pb;
    if (a->l != b->l)
        return a->l > b->l ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* The reference result: the kept tokens in descending order, with the
 * final probabilities, and the range [n_lo, n_hi] of top-p cut sizes that
 * are within 1e-6 of p (a float exp may legitimately land either side). */
typedef struct ref {
    rpair *v;
    double *prob;
    int32_t n, n_lo, n_hi;
} ref;

/* logits are the penalized ones; the chain as sampler.h states it. */
static ref ref_chain(const float *logits, int32_t n, fg_sampler_params p)
{
    ref r = {malloc((size_t)n * sizeof *r.v), malloc((size_t)n * sizeof *r.prob), 0, 0, 0};
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        float l = logits[i];
        if (isnan(l) || l == -INFINITY)
            continue;
        r.v[m++] = (rpair){l > FLT_MAX ? FLT_MAX : l, i};
    }
    qsort(r.v, (size_t)m, sizeof *r.v, rcmp);
    if (p.temperature == 0.0f)
        m = 1;
    if (p.top_k > 0 && p.top_k < m)
        m = p.top_k;
    int32_t lo = m, hi = m;
    if (p.top_p < 1.0f && p.temperature > 0.0f) {
        double sum = 0.0, cum = 0.0;
        for (int32_t i = 0; i < m; i++)
            sum += exp(r.v[i].l - r.v[0].l);
        int32_t cut = m;
        lo = hi = -1;
        for (int32_t i = 0; i < m; i++) {
            cum += exp(r.v[i].l - r.v[0].l);
            double c = cum / sum;
            if (lo < 0 && c >= p.top_p - 1e-6)
                lo = i + 1;
            if (cut == m && c >= p.top_p)
                cut = i + 1;
            if (hi < 0 && c >= p.top_p + 1e-6)
                hi = i + 1;
        }
        if (lo < 0)
            lo = m;
        if (hi < 0)
            hi = m;
        m = cut;
    }
    if (p.min_p > 0.0f && p.temperature > 0.0f) {
        float thr = (float)r.v[0].l + logf(p.min_p); /* the documented threshold, in float */
        int32_t k = 0;
        while (k < m && r.v[k].l >= thr)
            k++;
        /* min-p cuts a sorted list, so a top-p range shrinks to it too */
        m = k;
        lo = lo < k ? lo : k;
        hi = hi < k ? hi : k;
    }
    r.n = m;
    r.n_lo = lo;
    r.n_hi = hi;
    double t = p.temperature > 0.0f ? p.temperature : 1.0, sum = 0.0;
    for (int32_t i = 0; i < m; i++)
        sum += exp((r.v[i].l - r.v[0].l) / t);
    for (int32_t i = 0; i < m; i++)
        r.prob[i] = exp((r.v[i].l - r.v[0].l) / t) / sum;
    return r;
}

static void ref_free(ref *r)
{
    free(r->v);
    free(r->prob);
}

/* Checks fg_sampler_candidates against ref_chain on the same logits. */
static void check_against_ref(fg_sampler_params p, const float *logits, int32_t n, const char *what)
{
    fg_sampler *s = mk(p, n);
    fg_sampler_cands c;
    cr_assert_eq(fg_sampler_candidates(s, logits, &c), FG_OK, "%s", fg_last_error());
    ref r = ref_chain(logits, n, p);
    cr_assert(c.n >= r.n_lo && c.n <= r.n_hi, "%s: %d candidates, reference %d (allowed %d..%d)", what,
              (int)c.n, (int)r.n, (int)r.n_lo, (int)r.n_hi);
    /* The same tokens as the reference's first c.n, with the same
     * probabilities (renormalized if the count differs by a near-tie). */
    int32_t *want = malloc((size_t)c.n * sizeof *want), *got = malloc((size_t)c.n * sizeof *got);
    double rsum = 0.0, t = p.temperature > 0.0f ? p.temperature : 1.0;
    for (int32_t i = 0; i < c.n; i++) {
        want[i] = r.v[i].id;
        got[i] = c.id[i];
        rsum += exp((r.v[i].l - r.v[0].l) / t);
    }
    qsort(want, (size_t)c.n, sizeof *want, cmp_int);
    qsort(got, (size_t)c.n, sizeof *got, cmp_int);
    cr_assert(memcmp(want, got, (size_t)c.n * sizeof *got) == 0, "%s: kept set differs from the reference", what);
    double psum = 0.0, maxerr = 0.0;
    for (int32_t i = 0; i < c.n; i++) {
        double want_p = exp(((double)c.logit[i] - r.v[0].l) / t) / rsum;
        double err = fabs(c.p[i] - want_p);
        maxerr = err > maxerr ? err : maxerr;
        psum += c.p[i];
    }
    cr_assert(maxerr < 1e-5, "%s: probability off by %g", what, maxerr);
    cr_assert(fabs(psum - 1.0) < 1e-4, "%s: probabilities sum to %.9f", what, psum);
    free(want);
    free(got);
    ref_free(&r);
    fg_sampler_free(s);
}

/* ---- Chi-square ---------------------------------------------------------- */

/* Regularized upper incomplete gamma Q(a, x): the power series of P for
 * x < a + 1, else the continued fraction of Q (modified Lentz). */
static double gamma_q(double a, double x)
{
    if (x <= 0.0)
        return 1.0;
    double lpre = -x + a * log(x) - lgamma(a);
    if (x < a + 1.0) {
        double term = 1.0 / a, sum = term;
        for (int n = 1; n < 10000; n++) {
            term *= x / (a + n);
            sum += term;
            if (term < sum * 1e-16)
                break;
        }
        return 1.0 - exp(lpre) * sum;
    }
    double b = x + 1.0 - a, c = 1e300, d = 1.0 / b, h = d;
    for (int i = 1; i < 10000; i++) {
        double an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if (fabs(d) < 1e-300)
            d = 1e-300;
        c = b + an / c;
        if (fabs(c) < 1e-300)
            c = 1e-300;
        d = 1.0 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-16)
            break;
    }
    return exp(lpre) * h;
}

/* P(X >= x) for X chi-square with df degrees of freedom. */
static double chi2_sf(double x, int df)
{
    return gamma_q(df / 2.0, x / 2.0);
}

/* The x with chi2_sf(x, df) = alpha, by bisection. */
static double chi2_isf(double alpha, int df)
{
    double lo = 0.0, hi = 1000.0;
    for (int i = 0; i < 200; i++) {
        double mid = 0.5 * (lo + hi);
        if (chi2_sf(mid, df) > alpha)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

Test(sampler, chi2_reference_values)
{
    /* Textbook critical values (e.g. NIST/SEMATECH e-Handbook, table
     * 1.3.6.7.4): df 10 at 0.05, 0.01, 0.001; df 11 at 0.001. */
    cr_assert(fabs(chi2_isf(0.05, 10) - 18.307) < 2e-3);
    cr_assert(fabs(chi2_isf(0.01, 10) - 23.209) < 2e-3);
    cr_assert(fabs(chi2_isf(0.001, 10) - 29.588) < 2e-3);
    cr_assert(fabs(chi2_isf(0.001, 11) - 31.264) < 2e-3);
    /* Both branches of gamma_q: df 2 has the closed form e^(-x/2). */
    cr_assert(fabs(chi2_sf(1.0, 2) - exp(-0.5)) < 1e-12);
    cr_assert(fabs(chi2_sf(9.0, 2) - exp(-4.5)) < 1e-12);
}

#define CHI_N 100000
#define CHI_ALPHA 1e-6

/* Draws CHI_N tokens and returns the chi-square p-value against want[]
 * (probabilities per token id, n ids; ids with want 0 must never come). */
static double chi2_draws(fg_sampler *s, const float *logits, const double *want, int32_t n, double *stat,
                         int *df)
{
    long *cnt = calloc((size_t)n, sizeof *cnt);
    for (int i = 0; i < CHI_N; i++) {
        int32_t id = -1;
        cr_assert_eq(fg_sampler_sample(s, logits, &id), FG_OK);
        cr_assert(id >= 0 && id < n);
        cr_assert(want[id] > 0.0, "drew token %d, which has probability 0", (int)id);
        cnt[id]++;
    }
    double x = 0.0;
    int k = 0;
    for (int32_t i = 0; i < n; i++) {
        if (want[i] <= 0.0)
            continue;
        double e = want[i] * CHI_N;
        cr_assert(e >= 5.0, "expected count %g too small for chi-square", e);
        x += (cnt[i] - e) * (cnt[i] - e) / e;
        k++;
    }
    free(cnt);
    *stat = x;
    *df = k - 1;
    return chi2_sf(x, k - 1);
}

/* 12 categories spread over a 200-token vocabulary (so over 4 blocks of the
 * sampler's block walk); the other tokens are -inf. */
#define CHI_V 200
static const int32_t chi_ids[12] = {3, 17, 64, 65, 90, 127, 128, 150, 151, 170, 190, 199};
static const float chi_l[12] = {2.0f, 1.5f, 1.2f, 1.0f, 0.7f, 0.5f, 0.2f, 0.0f, -0.3f, -0.5f, -0.8f, -1.0f};

static void chi_logits(float *l)
{
    for (int i = 0; i < CHI_V; i++)
        l[i] = -INFINITY;
    for (int i = 0; i < 12; i++)
        l[chi_ids[i]] = chi_l[i];
}

/* want = the reference chain's distribution for params p. */
static void chi_want(const float *l, fg_sampler_params p, double *want)
{
    ref r = ref_chain(l, CHI_V, p);
    cr_assert_eq(r.n_lo, r.n_hi, "the test's top-p cut must not be a near-tie");
    for (int i = 0; i < CHI_V; i++)
        want[i] = 0.0;
    for (int32_t i = 0; i < r.n; i++)
        want[r.v[i].id] = r.prob[i];
    ref_free(&r);
}

static void chi_case(fg_sampler_params p, const char *what)
{
    float l[CHI_V];
    double want[CHI_V];
    chi_logits(l);
    chi_want(l, p, want);
    fg_sampler *s = mk(p, CHI_V);
    double stat;
    int df;
    double pv = chi2_draws(s, l, want, CHI_V, &stat, &df);
    double crit = chi2_isf(CHI_ALPHA, df);
    fprintf(stderr, "sampler chi2 %-34s df %2d  stat %7.2f  critical(1e-6) %6.2f  p %.4f\n", what, df, stat,
            crit, pv);
    cr_assert(pv > CHI_ALPHA, "%s: chi-square %.2f with %d df, p = %.3g", what, stat, df, pv);
    fg_sampler_free(s);
}

Test(sampler, chi2_t1_no_filter)
{
    chi_case(plain(), "T=1, no filter");
}

Test(sampler, chi2_t07_no_filter)
{
    fg_sampler_params p = plain();
    p.temperature = 0.7f;
    chi_case(p, "T=0.7, no filter");
}

Test(sampler, chi2_t16_top_k)
{
    fg_sampler_params p = plain();
    p.temperature = 1.6f;
    p.top_k = 10;
    chi_case(p, "T=1.6, top_k 10");
}

Test(sampler, chi2_t07_top_p_min_p)
{
    fg_sampler_params p = plain();
    p.temperature = 0.7f;
    p.top_p = 0.9f;
    p.min_p = 0.1f;
    chi_case(p, "T=0.7, top_p 0.9, min_p 0.1");
}

Test(sampler, chi2_t13_min_p_only)
{
    fg_sampler_params p = plain();
    p.temperature = 1.3f;
    p.min_p = 0.2f;
    chi_case(p, "T=1.3, min_p 0.2");
}

/* The test can tell: draws at T = 0.7 fail against the T = 1 law. */
Test(sampler, chi2_rejects_wrong_distribution)
{
    float l[CHI_V];
    double want[CHI_V];
    chi_logits(l);
    chi_want(l, plain(), want);
    fg_sampler_params p = plain();
    p.temperature = 0.7f;
    fg_sampler *s = mk(p, CHI_V);
    double stat;
    int df;
    double pv = chi2_draws(s, l, want, CHI_V, &stat, &df);
    cr_assert(pv < CHI_ALPHA, "T=0.7 draws passed as T=1: chi-square %.2f, p = %.3g", stat, pv);
    fg_sampler_free(s);
}

/* ---- Parameters ---------------------------------------------------------- */

Test(sampler, defaults_are_llamacpp)
{
    fg_sampler_params p = fg_sampler_defaults();
    cr_assert_eq(p.temperature, 0.8f);
    cr_assert_eq(p.top_k, 40);
    cr_assert_eq(p.top_p, 0.95f);
    cr_assert_eq(p.min_p, 0.05f);
    cr_assert_eq(p.repeat_penalty, 1.0f);
    cr_assert_eq(p.repeat_last_n, 64);
    cr_assert_eq(p.presence_penalty, 0.0f);
    cr_assert_eq(p.frequency_penalty, 0.0f);
    cr_assert_eq(p.seed, FG_SAMPLER_SEED_RANDOM);
    cr_assert_eq(fg_sampler_check(&p), FG_OK);
}

static void expect_invalid(fg_sampler_params p, const char *name, const char *range)
{
    fg_sampler *s = (fg_sampler *)&s;
    cr_assert_eq(fg_sampler_check(&p), FG_ERR_INVALID_ARG, "%s accepted", name);
    cr_assert_eq(fg_sampler_init(&p, 10, &s), FG_ERR_INVALID_ARG);
    cr_assert_null(s);
    const char *msg = fg_last_error();
    cr_assert(strstr(msg, name) && strstr(msg, range), "message '%s' should name %s and %s", msg, name, range);
}

Test(sampler, invalid_parameters)
{
    fg_sampler_params p;
    const float bad_t[] = {-0.1f, -INFINITY, INFINITY, NAN};
    for (int i = 0; i < 4; i++) {
        p = plain();
        p.temperature = bad_t[i];
        expect_invalid(p, "temperature", ">= 0");
    }
    p = plain();
    p.top_k = -1;
    expect_invalid(p, "top_k", ">= 0");
    const float bad_p[] = {0.0f, -0.5f, 1.0000001f, NAN};
    for (int i = 0; i < 4; i++) {
        p = plain();
        p.top_p = bad_p[i];
        expect_invalid(p, "top_p", "(0, 1]");
    }
    const float bad_m[] = {-0.01f, 1.01f, NAN};
    for (int i = 0; i < 3; i++) {
        p = plain();
        p.min_p = bad_m[i];
        expect_invalid(p, "min_p", "[0, 1]");
    }
    const float bad_r[] = {0.0f, -1.0f, INFINITY, NAN};
    for (int i = 0; i < 4; i++) {
        p = plain();
        p.repeat_penalty = bad_r[i];
        expect_invalid(p, "repeat_penalty", "> 0");
    }
    p = plain();
    p.repeat_last_n = -1;
    expect_invalid(p, "repeat_last_n", ">= 0");
    p = plain();
    p.presence_penalty = NAN;
    expect_invalid(p, "presence_penalty", "finite");
    p = plain();
    p.frequency_penalty = -INFINITY;
    expect_invalid(p, "frequency_penalty", "finite");

    /* The edges of the ranges are valid. */
    p = plain();
    p.temperature = 0.0f;
    p.top_p = 1.0f;
    p.min_p = 1.0f;
    p.top_k = 0;
    p.presence_penalty = -2.0f;
    cr_assert_eq(fg_sampler_check(&p), FG_OK);
    p.min_p = 0.0f;
    p.top_p = FLT_MIN;
    cr_assert_eq(fg_sampler_check(&p), FG_OK);

    fg_sampler *s = NULL;
    p = plain();
    cr_assert_eq(fg_sampler_init(&p, 0, &s), FG_ERR_INVALID_ARG);
    cr_assert(strstr(fg_last_error(), "n_vocab"));
}

/* ---- Random stream ------------------------------------------------------- */

/* From this Python transcription of the generators in sampler.c:
 *   M = 2**64 - 1
 *   def sm(x): x = (x + 0x9e3779b97f4a7c15) & M; z = x
 *       z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
 *       z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M; return x, z ^ (z >> 31)
 *   rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M
 *   state: four sm() outputs from the seed; output rotl(s1 * 5 & M, 7) * 9 & M;
 *   t = s1 << 17 & M; s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t;
 *   s3 = rotl(s3, 45)
 * splitmix64 from 0 starting 0xe220a8397b1dcdaf is the published check. */
Test(sampler, rng_known_answers)
{
    static const struct {
        uint64_t seed, out[4];
    } kat[] = {
        {0, {0x99ec5f36cb75f2b4u, 0xbf6e1f784956452au, 0x1a5f849d4933e6e0u, 0x6aa594f1262d2d2cu}},
        {42, {0x15780b2e0c2ec716u, 0x6104d9866d113a7eu, 0xae17533239e499a1u, 0xecb8ad4703b360a1u}},
        {0xFFFFFFFFFFFFFFFEu,
         {0x9c0f746bebf6fd59u, 0xe3b62be9ec055080u, 0xf970658bf1ebf2ccu, 0xc7bb3d47050a7640u}},
    };
    for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
        fg_sampler_rng r;
        fg_sampler_rng_seed(&r, kat[k].seed);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(fg_sampler_rng_next(&r), kat[k].out[i], "seed %llu output %d",
                         (unsigned long long)kat[k].seed, i);
    }
    fg_sampler_rng r;
    fg_sampler_rng_seed(&r, 0);
    cr_assert_eq(r.s[0], 0xe220a8397b1dcdafu);
    fg_sampler_rng_seed(&r, 0);
    cr_assert_eq(fg_sampler_rng_uniform(&r), (double)(0x99ec5f36cb75f2b4u >> 11) * 0x1.0p-53);
}

/* ---- Greedy -------------------------------------------------------------- */

static int32_t sample1(fg_sampler *s, const float *l)
{
    int32_t id = -1;
    fg_status st = fg_sampler_sample(s, l, &id);
    cr_assert_eq(st, FG_OK, "fg_sampler_sample: %s", fg_last_error());
    return id;
}

Test(sampler, greedy_argmax_lowest_id)
{
    fg_sampler_params p = plain();
    p.temperature = 0.0f;
    float l[300];
    for (int i = 0; i < 300; i++)
        l[i] = (float)(i % 7) * 0.25f;
    /* 1.5 first at id 6; ties later, in other blocks too, lose */
    fg_sampler *s = mk(p, 300);
    cr_assert_eq(sample1(s, l), 6);
    l[200] = 3.0f;
    l[250] = 3.0f;
    cr_assert_eq(sample1(s, l), 200);
    l[5] = NAN;
    l[4] = -INFINITY;
    cr_assert_eq(sample1(s, l), 200);
    l[299] = INFINITY;
    l[298] = INFINITY;
    cr_assert_eq(sample1(s, l), 298);
    /* greedy ignores the filters and is the same call after call */
    fg_sampler_free(s);
    p.top_k = 1;
    p.top_p = 0.01f;
    p.min_p = 0.9f;
    s = mk(p, 300);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(sample1(s, l), 298);
    fg_sampler_cands c;
    cr_assert_eq(fg_sampler_candidates(s, l, &c), FG_OK);
    cr_assert(c.n == 1 && c.id[0] == 298 && c.p[0] == 1.0f && c.logit[0] == FLT_MAX);
    fg_sampler_free(s);

    /* a temperature whose inverse overflows float is greedy too */
    p = plain();
    p.temperature = 1e-39f;
    l[299] = l[298] = 0.0f;
    s = mk(p, 300);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(sample1(s, l), 200);
    fg_sampler_free(s);
}

Test(sampler, greedy_after_penalties)
{
    fg_sampler_params p = plain();
    p.temperature = 0.0f;
    p.repeat_penalty = 1.1f;
    p.repeat_last_n = 8;
    const float l[4] = {5.0f, 4.9f, -1.0f, 0.0f};
    fg_sampler *s = mk(p, 4);
    cr_assert_eq(sample1(s, l), 0);
    fg_sampler_accept(s, 0); /* 5 / 1.1 = 4.545 < 4.9 */
    cr_assert_eq(sample1(s, l), 1);
    fg_sampler_accept(s, 1);
    cr_assert_eq(sample1(s, l), 0); /* both penalized: 4.545 > 4.4545 */
    fg_sampler_free(s);
}

/* ---- Non-finite logits --------------------------------------------------- */

Test(sampler, nonfinite_logits)
{
    float l[16];
    for (int i = 0; i < 16; i++)
        l[i] = (float)(i % 4) * 0.1f;
    l[3] = -INFINITY;
    l[7] = NAN;
    l[11] = -INFINITY;
    l[15] = NAN;
    float copy[16];
    memcpy(copy, l, sizeof l);
    fg_sampler *s = mk(plain(), 16);
    int32_t ids[16];
    int32_t n = kept(s, l, ids, 16);
    const int32_t want[12] = {0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14};
    cr_assert(n == 12 && memcmp(ids, want, sizeof want) == 0, "-inf/NaN tokens must not be candidates");
    for (int i = 0; i < 20000; i++) {
        int32_t id = sample1(s, l);
        cr_assert(id % 4 != 3, "drew token %d with a non-finite logit", (int)id);
    }
    cr_assert(memcmp(copy, l, sizeof l) == 0, "sampling changed the logits");
    fg_sampler_free(s);

    /* +inf is certain; two share the mass equally. */
    l[9] = INFINITY;
    s = mk(plain(), 16);
    fg_sampler_cands c;
    cr_assert_eq(fg_sampler_candidates(s, l, &c), FG_OK);
    for (int32_t i = 0; i < c.n; i++)
        cr_assert_eq(c.p[i], c.id[i] == 9 ? 1.0f : 0.0f);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(sample1(s, l), 9);
    l[2] = INFINITY;
    cr_assert_eq(fg_sampler_candidates(s, l, &c), FG_OK);
    for (int32_t i = 0; i < c.n; i++)
        cr_assert_eq(c.p[i], (c.id[i] == 9 || c.id[i] == 2) ? 0.5f : 0.0f);
    fg_sampler_free(s);

    /* Nothing finite: a clear error, in every mode. */
    for (int i = 0; i < 16; i++)
        l[i] = i % 2 ? NAN : -INFINITY;
    fg_sampler_params modes[3] = {plain(), fg_sampler_defaults(), plain()};
    modes[2].temperature = 0.0f;
    for (int m = 0; m < 3; m++) {
        s = mk(modes[m], 16);
        int32_t id = 77;
        cr_assert_eq(fg_sampler_sample(s, l, &id), FG_ERR_INVALID_ARG);
        cr_assert(strstr(fg_last_error(), "-inf or NaN"), "message: %s", fg_last_error());
        cr_assert_eq(fg_sampler_candidates(s, l, &c), FG_ERR_INVALID_ARG);
        fg_sampler_free(s);
    }
}

/* ---- Top-k --------------------------------------------------------------- */

Test(sampler, top_k_sets)
{
    const float l[8] = {1.0f, 5.0f, 5.0f, 5.0f, 5.0f, 2.0f, -INFINITY, 3.0f};
    fg_sampler_params p = plain();
    p.top_k = 3; /* a tie across the cut: lower ids stay */
    expect_set(p, l, 8, (const int32_t[]){1, 2, 3}, 3, "top_k 3");
    p.top_k = 4;
    expect_set(p, l, 8, (const int32_t[]){1, 2, 3, 4}, 4, "top_k 4");
    p.top_k = 5;
    expect_set(p, l, 8, (const int32_t[]){1, 2, 3, 4, 7}, 5, "top_k 5");
    p.top_k = 1;
    expect_set(p, l, 8, (const int32_t[]){1}, 1, "top_k 1");
    p.top_k = 7; /* 7 finite logits: all of them, never the -inf one */
    expect_set(p, l, 8, (const int32_t[]){0, 1, 2, 3, 4, 5, 7}, 7, "top_k 7");
    p.top_k = 8; /* >= n_vocab: off */
    expect_set(p, l, 8, (const int32_t[]){0, 1, 2, 3, 4, 5, 7}, 7, "top_k 8");
    p.top_k = 1000;
    expect_set(p, l, 8, (const int32_t[]){0, 1, 2, 3, 4, 5, 7}, 7, "top_k 1000");
}

/* Many ties (logits on a 1/4 grid), ascending and descending runs (the
 * block-max bound's worst cases), k around the block count. */
Test(sampler, top_k_large_vs_reference)
{
    const int32_t n = 262144;
    float *l = malloc((size_t)n * sizeof *l);
    const int32_t ks[] = {1, 2, 40, 1000, 4096, 4097, 20000};
    for (int shape = 0; shape < 3; shape++) {
        tr_state = 99 + (uint64_t)shape;
        for (int32_t i = 0; i < n; i++) {
            if (shape == 0)
                l[i] = floorf((float)(3.0 * tr_normal()) * 4.0f) / 4.0f;
            else if (shape == 1)
                l[i] = (float)i * 1e-4f;
            else
                l[i] = (float)(n - i) * 1e-4f + (i % 64 == 0 ? 5.0f : 0.0f);
        }
        for (size_t k = 0; k < sizeof ks / sizeof ks[0]; k++) {
            fg_sampler_params p = plain();
            p.top_k = ks[k];
            char what[64];
            snprintf(what, sizeof what, "shape %d top_k %d", shape, (int)ks[k]);
            check_against_ref(p, l, n, what);
        }
    }
    free(l);
}

/* ---- Top-p --------------------------------------------------------------- */

/* Eight equal logits: probabilities exactly 1/8, so the cumulative mass
 * hits 3/8 exactly at the third token. Both code paths: top_k off (the
 * bucketed whole-vocabulary top-p) and top_k on (the sorted list). */
Test(sampler, top_p_exact_boundary)
{
    float l[20];
    for (int i = 0; i < 20; i++)
        l[i] = -INFINITY;
    const int32_t ties[8] = {2, 3, 5, 7, 11, 13, 17, 19};
    for (int i = 0; i < 8; i++)
        l[ties[i]] = 0.5f;
    for (int path = 0; path < 2; path++) {
        fg_sampler_params p = plain();
        p.top_k = path ? 15 : 0;
        p.top_p = 0.375f;
        expect_set(p, l, 20, ties, 3, "top_p = 3/8 exactly");
        p.top_p = nextafterf(0.375f, 1.0f);
        expect_set(p, l, 20, ties, 4, "top_p just above 3/8");
        p.top_p = nextafterf(0.375f, 0.0f);
        expect_set(p, l, 20, ties, 3, "top_p just below 3/8");
        p.top_p = 0.125f;
        expect_set(p, l, 20, ties, 1, "top_p = 1/8");
        p.top_p = 1e-9f;
        expect_set(p, l, 20, ties, 1, "tiny top_p");
        p.top_p = 0.875f;
        expect_set(p, l, 20, ties, 7, "top_p = 7/8");
        p.top_p = 1.0f;
        expect_set(p, l, 20, ties, 8, "top_p 1 (off)");
    }
}

Test(sampler, top_p_distinct_logits)
{
    /* softmax: 0.6439, 0.2369, 0.0871, 0.0321 (ids 4, 0, 2, 1) */
    const float l[5] = {2.0f, 0.0f, 1.0f, -INFINITY, 3.0f};
    for (int path = 0; path < 2; path++) {
        fg_sampler_params p = plain();
        p.top_k = path ? 4 : 0;
        p.top_p = 0.6f;
        expect_set(p, l, 5, (const int32_t[]){4}, 1, "top_p 0.6");
        p.top_p = 0.7f;
        expect_set(p, l, 5, (const int32_t[]){0, 4}, 2, "top_p 0.7");
        p.top_p = 0.9f;
        expect_set(p, l, 5, (const int32_t[]){0, 2, 4}, 3, "top_p 0.9");
        p.top_p = 0.99f;
        expect_set(p, l, 5, (const int32_t[]){0, 1, 2, 4}, 4, "top_p 0.99");
    }
}

/* llama.cpp's order: top-p renormalizes over the top-k survivors, and it
 * runs before temperature. */
Test(sampler, top_p_after_top_k_before_temperature)
{
    const float l[6] = {3.0f, 2.0f, 1.0f, 0.0f, -1.0f, -2.0f};
    fg_sampler_params p = plain();
    /* over the top 2, token 0 has e^3 / (e^3 + e^2) = 0.731 >= 0.7; over
     * all six it has 0.63, which would keep two */
    p.top_k = 2;
    p.top_p = 0.7f;
    expect_set(p, l, 6, (const int32_t[]){0}, 1, "top_p over top_k");
    p.top_k = 0;
    expect_set(p, l, 6, (const int32_t[]){0, 1}, 2, "top_p over all");

    /* at T = 1 token 0 has 0.731 < 0.8, so two stay; had T = 0.25 come
     * first it would have 0.982 and stand alone. Their probabilities are
     * then softmax(l / 0.25) over the two. */
    const float l2[4] = {1.0f, 0.0f, -5.0f, -6.0f};
    p = plain();
    p.top_p = 0.8f;
    p.temperature = 0.25f;
    fg_sampler *s = mk(p, 4);
    fg_sampler_cands c;
    cr_assert_eq(fg_sampler_candidates(s, l2, &c), FG_OK);
    cr_assert_eq(c.n, 2);
    double p0 = exp(4.0) / (exp(4.0) + 1.0);
    for (int32_t i = 0; i < 2; i++)
        cr_assert(fabs(c.p[i] - (c.id[i] == 0 ? p0 : 1.0 - p0)) < 1e-6, "token %d p %g", (int)c.id[i],
                  (double)c.p[i]);
    fg_sampler_free(s);

    /* min-p also sees the distribution before temperature: at T = 1 token
     * 1 has p / p_max = e^-1 = 0.37 >= 0.3 and stays, though at T = 0.25
     * that ratio would be e^-4 = 0.018. */
    p = plain();
    p.min_p = 0.3f;
    p.temperature = 0.25f;
    expect_set(p, l2, 4, (const int32_t[]){0, 1}, 2, "min_p before temperature");
}

/* ---- Min-p --------------------------------------------------------------- */

Test(sampler, min_p_exact_boundary)
{
    for (int shift = 0; shift < 2; shift++) {
        const float m = shift ? 10.0f : 0.0f, thr = m + logf(0.25f);
        const float l[7] = {m, thr, nextafterf(thr, -INFINITY), m - 1.0f, m - 2.0f, -INFINITY, nextafterf(thr, INFINITY)};
        for (int path = 0; path < 2; path++) {
            fg_sampler_params p = plain();
            p.top_k = path ? 6 : 0;
            p.min_p = 0.25f;
            expect_set(p, l, 7, (const int32_t[]){0, 1, 3, 6}, 4, "min_p 0.25");
            p.min_p = 1.0f; /* only the max */
            expect_set(p, l, 7, (const int32_t[]){0}, 1, "min_p 1");
            p.min_p = 1e-30f; /* everything finite */
            expect_set(p, l, 7, (const int32_t[]){0, 1, 2, 3, 4, 6}, 6, "tiny min_p");
        }
    }
    /* ties at the max all survive min_p = 1 */
    const float t[5] = {1.0f, 2.0f, 2.0f, 0.0f, 2.0f};
    fg_sampler_params p = plain();
    p.min_p = 1.0f;
    expect_set(p, t, 5, (const int32_t[]){1, 2, 4}, 3, "min_p 1 with ties");
}

/* ---- The whole chain against the reference -------------------------------- */

Test(sampler, chain_vs_reference)
{
    const int32_t sizes[] = {1000, 49152, 262144};
    fg_sampler_params cfg[7];
    for (int i = 0; i < 7; i++)
        cfg[i] = plain();
    cfg[0] = fg_sampler_defaults();
    cfg[0].seed = 5;
    cfg[1].top_k = 0, cfg[1].top_p = 0.9f, cfg[1].temperature = 0.7f;
    cfg[2].top_k = 0, cfg[2].top_p = 0.95f, cfg[2].min_p = 0.05f, cfg[2].temperature = 1.2f;
    cfg[3].top_k = 0, cfg[3].top_p = 0.5f;
    cfg[4].top_k = 100, cfg[4].top_p = 0.8f, cfg[4].min_p = 0.02f, cfg[4].temperature = 1.5f;
    cfg[5].min_p = 0.01f, cfg[5].temperature = 0.9f;
    cfg[6].top_k = 0, cfg[6].top_p = 0.99999f; /* deep into the tail */
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int32_t n = sizes[si];
        float *l = malloc((size_t)n * sizeof *l);
        for (int rep = 0; rep < 2; rep++) {
            fill_logits(l, n, 1000 * si + (uint64_t)rep);
            if (rep == 1) /* flatter: the top-p cut falls deep in the tail */
                for (int32_t i = 0; i < n; i++)
                    l[i] *= 0.3f;
            for (int c = 0; c < 7; c++) {
                char what[64];
                snprintf(what, sizeof what, "n %d rep %d config %d", (int)n, rep, c);
                check_against_ref(cfg[c], l, n, what);
            }
        }
        free(l);
    }
}

/* Every sampled token is a candidate, under the defaults. */
Test(sampler, samples_are_candidates)
{
    const int32_t n = 5000;
    float *l = malloc((size_t)n * sizeof *l);
    fill_logits(l, n, 77);
    fg_sampler_params p = fg_sampler_defaults();
    p.seed = 8;
    fg_sampler *s = mk(p, n);
    fg_sampler_cands c;
    cr_assert_eq(fg_sampler_candidates(s, l, &c), FG_OK);
    char *in = calloc((size_t)n, 1);
    for (int32_t i = 0; i < c.n; i++)
        in[c.id[i]] = 1;
    for (int i = 0; i < 5000; i++)
        cr_assert(in[sample1(s, l)]);
    free(in);
    free(l);
    fg_sampler_free(s);
}

/* ---- Penalties ----------------------------------------------------------- */

/* The penalized logit of each token, as the candidates report them (all
 * filters off, so every finite token is a candidate). */
static void penalized(fg_sampler *s, const float *l, float *out, int32_t n)
{
    fg_sampler_cands c;
    cr_assert_eq(fg_sampler_candidates(s, l, &c), FG_OK);
    cr_assert_eq(c.n, n);
    for (int32_t i = 0; i < c.n; i++)
        out[c.id[i]] = c.logit[i];
}

Test(sampler, penalty_arithmetic)
{
    const float l[8] = {4.0f, -3.0f, 0.0f, 1.0f, 2.0f, 3.0f, -1.0f, 0.5f};
    fg_sampler_params p = plain();
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    p.repeat_last_n = 4;
    fg_sampler *s = mk(p, 8);
    const int32_t hist[5] = {0, 1, 0, 2, 0}; /* window of 4: 1 0 2 0 */
    for (int i = 0; i < 5; i++)
        fg_sampler_accept(s, hist[i]);
    float got[8];
    penalized(s, l, got, 8);
    /* token 0, count 2:  4 / 2 - (2 * 0.5 + 0.25) =  0.75
     * token 1, count 1: -3 * 2 - (1 * 0.5 + 0.25) = -6.75
     * token 2, count 1:  0 * 2 - 0.75             = -0.75 (0 multiplies) */
    const float want[8] = {0.75f, -6.75f, -0.75f, 1.0f, 2.0f, 3.0f, -1.0f, 0.5f};
    for (int i = 0; i < 8; i++)
        cr_assert_eq(got[i], want[i], "token %d: %g, want %g", i, (double)got[i], (double)want[i]);

    /* Two more tokens push 1 and a 0 out: window 2 0 3 3. */
    fg_sampler_accept(s, 3);
    fg_sampler_accept(s, 3);
    penalized(s, l, got, 8);
    const float want2[8] = {4.0f / 2 - 0.75f, -3.0f, 0.0f * 2 - 0.75f, 1.0f / 2 - 1.25f, 2.0f, 3.0f, -1.0f, 0.5f};
    for (int i = 0; i < 8; i++)
        cr_assert_eq(got[i], want2[i], "after sliding, token %d: %g, want %g", i, (double)got[i],
                     (double)want2[i]);

    /* reset forgets the history */
    fg_sampler_reset(s);
    penalized(s, l, got, 8);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(got[i], l[i]);
    fg_sampler_free(s);

    /* repeat penalty alone, not a power of two: l / 1.1 in float, l * 1.1 */
    p = plain();
    p.repeat_penalty = 1.1f;
    p.repeat_last_n = 64;
    s = mk(p, 8);
    fg_sampler_accept(s, 0);
    fg_sampler_accept(s, 1);
    fg_sampler_accept(s, 1);
    penalized(s, l, got, 8);
    cr_assert_eq(got[0], 3.6363635063171387f); /* float(4 / 1.1f), to the last bit */
    cr_assert_eq(got[1], -3.3000001907348633f); /* float(-3 * 1.1f) */
    cr_assert_eq(got[2], 0.0f);
    fg_sampler_free(s);

    /* presence and frequency alone, negative ones raise (OpenAI's range) */
    p = plain();
    p.presence_penalty = -1.0f;
    p.frequency_penalty = 0.125f;
    p.repeat_last_n = 16;
    s = mk(p, 8);
    for (int i = 0; i < 3; i++)
        fg_sampler_accept(s, 5);
    fg_sampler_accept(s, 6);
    penalized(s, l, got, 8);
    cr_assert_eq(got[5], 3.0f - (3 * 0.125f - 1.0f)); /* 3.625 */
    cr_assert_eq(got[6], -1.0f - (0.125f - 1.0f));   /* -0.125 */
    cr_assert_eq(got[4], 2.0f);
    fg_sampler_free(s);

    /* repeat_last_n = 0: no history, no penalties */
    p = plain();
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 1.0f;
    p.repeat_last_n = 0;
    s = mk(p, 8);
    fg_sampler_accept(s, 0);
    penalized(s, l, got, 8);
    cr_assert_eq(got[0], 4.0f);
    fg_sampler_free(s);
}

/* A long history over a large vocabulary, against a recount here. */
Test(sampler, penalty_window_large)
{
    const int32_t n = 50000, last_n = 300;
    float *l = malloc((size_t)n * sizeof *l), *got = malloc((size_t)n * sizeof *got);
    int32_t *hist = malloc(2000 * sizeof *hist), *cnt = calloc((size_t)n, sizeof *cnt);
    fill_logits(l, n, 3);
    fg_sampler_params p = plain();
    p.repeat_penalty = 1.3f;
    p.frequency_penalty = 0.2f;
    p.presence_penalty = 0.4f;
    p.repeat_last_n = last_n;
    fg_sampler *s = mk(p, n);
    tr_state = 17;
    for (int i = 0; i < 2000; i++) {
        hist[i] = (int32_t)(tr_next() % 400) * 97; /* repeats, across blocks */
        fg_sampler_accept(s, hist[i]);
    }
    for (int i = 2000 - last_n; i < 2000; i++)
        cnt[hist[i]]++;
    penalized(s, l, got, n);
    for (int32_t t = 0; t < n; t++) {
        float want = l[t];
        if (cnt[t] > 0) {
            want = want <= 0.0f ? want * 1.3f : want / 1.3f;
            want -= (float)cnt[t] * 0.2f + 0.4f;
        }
        cr_assert_eq(got[t], want, "token %d count %d: %g, want %g", (int)t, (int)cnt[t], (double)got[t],
                     (double)want);
    }
    fg_sampler_free(s);
    free(l);
    free(got);
    free(hist);
    free(cnt);
}

/* ---- Seeds --------------------------------------------------------------- */

static void draw_seq(fg_sampler *s, const float *l, int32_t *out, int n)
{
    for (int i = 0; i < n; i++) {
        out[i] = sample1(s, l);
        fg_sampler_accept(s, out[i]);
    }
}

Test(sampler, seed_reproducible)
{
    const int32_t n = 1000;
    float l[1000];
    fill_logits(l, n, 11);
    for (int32_t i = 0; i < n; i++)
        l[i] *= 0.4f; /* flat enough that many tokens are in play */
    fg_sampler_params p = fg_sampler_defaults();
    p.repeat_penalty = 1.1f;
    p.seed = 42;
    int32_t a[2000], b[2000], c[2000];
    fg_sampler *s1 = mk(p, n), *s2 = mk(p, n);
    draw_seq(s1, l, a, 2000);
    draw_seq(s2, l, b, 2000);
    cr_assert(memcmp(a, b, sizeof a) == 0, "same seed, different tokens");
    fg_sampler_reset(s1);
    draw_seq(s1, l, c, 2000);
    cr_assert(memcmp(a, c, sizeof a) == 0, "reset did not replay the stream");
    int distinct = 0;
    for (int i = 0; i < 2000; i++)
        distinct += a[i] != a[0];
    cr_assert_gt(distinct, 100, "the test logits should not be near-greedy");
    fg_sampler_free(s2);

    p.seed = 43;
    s2 = mk(p, n);
    draw_seq(s2, l, b, 2000);
    int diff = 0;
    for (int i = 0; i < 2000; i++)
        diff += a[i] != b[i];
    cr_assert_gt(diff, 1000, "seeds 42 and 43 gave %d differing tokens of 2000", diff);
    cr_assert_eq(fg_sampler_seed(s2), 43);
    fg_sampler_free(s1);
    fg_sampler_free(s2);

    /* A random seed is reported and replays. */
    p.seed = FG_SAMPLER_SEED_RANDOM;
    s1 = mk(p, n);
    s2 = mk(p, n);
    uint64_t seed = fg_sampler_seed(s1);
    cr_assert_neq(seed, FG_SAMPLER_SEED_RANDOM);
    cr_assert_neq(seed, fg_sampler_seed(s2), "two random seeds were equal");
    draw_seq(s1, l, a, 2000);
    fg_sampler_free(s2);
    p.seed = seed;
    s2 = mk(p, n);
    draw_seq(s2, l, b, 2000);
    cr_assert(memcmp(a, b, sizeof a) == 0, "the reported seed does not replay");
    fg_sampler_free(s1);
    fg_sampler_free(s2);
}

/* ---- Timing -------------------------------------------------------------- */

static double now_s(void)
{
    return fg_now_ms() / 1e3;
}


/* Per-token time at two vocabulary sizes, with a 64-token history and 1.1
 * repeat penalty: the best of 5 runs of 50 tokens each, over 4 alternating
 * logit vectors. The bound is loose (the target is 1 ms at 262144); it
 * catches a sort of the vocabulary sneaking in, not jitter. */
Test(sampler, timing, .timeout = 120)
{
    const int32_t sizes[2] = {49152, 262144};
    const char *names[5] = {"greedy", "defaults (k40 p.95 m.05 T.8)", "k0 p.95 m.05 T.8", "k0 p.95 T1",
                            "no filter T1"};
    for (int si = 0; si < 2; si++) {
        int32_t n = sizes[si];
        float *l[4];
        for (int v = 0; v < 4; v++) {
            l[v] = malloc((size_t)n * sizeof *l[v]);
            fill_logits(l[v], n, 500 + (uint64_t)v);
        }
        for (int c = 0; c < 5; c++) {
            fg_sampler_params p = fg_sampler_defaults();
            p.seed = 3;
            p.repeat_penalty = 1.1f;
            if (c == 0)
                p.temperature = 0.0f;
            if (c >= 2)
                p.top_k = 0;
            if (c >= 3)
                p.min_p = 0.0f, p.temperature = 1.0f;
            if (c == 4)
                p.top_p = 1.0f;
            fg_sampler *s = mk(p, n);
            for (int i = 0; i < 64; i++)
                fg_sampler_accept(s, (int32_t)((i * 7919) % n));
            double best = 1e9;
            for (int run = 0; run < 5; run++) {
                double t0 = now_s();
                for (int i = 0; i < 50; i++) {
                    int32_t id = sample1(s, l[i % 4]);
                    fg_sampler_accept(s, id);
                }
                double dt = (now_s() - t0) / 50;
                best = dt < best ? dt : best;
            }
            fprintf(stderr, "sampler timing n_vocab %6d  %-30s %7.3f ms/token\n", (int)n, names[c], best * 1e3);
            if (!FG_TEST_SANITIZED)
                cr_expect_lt(best, 0.020, "%s at %d: %.3f ms per token", names[c], (int)n, best * 1e3);
            fg_sampler_free(s);
        }
        for (int v = 0; v < 4; v++)
            free(l[v]);
    }
}

/* Which settings a backend's sample op can take (no penalties), and the
 * row it gets: the same parameters, and the draw fg_sampler_sample would
 * have used. */
Test(sampler, backend_rows_take_the_same_draws)
{
    fg_sampler_params p = plain();
    p.temperature = 0.0f;
    fg_sampler *s = mk(p, 100);
    cr_expect(fg_sampler_is_greedy(s) && !fg_sampler_has_penalties(s));
    fg_sampler_free(s);
    p.repeat_last_n = 64; /* a window, but every penalty neutral */
    s = mk(p, 100);
    cr_expect(!fg_sampler_has_penalties(s));
    fg_sampler_free(s);
    p.repeat_penalty = 1.1f;
    s = mk(p, 100);
    cr_expect(fg_sampler_has_penalties(s), "a repeat penalty");
    fg_sampler_free(s);
    p.repeat_penalty = 1.0f, p.presence_penalty = 0.5f;
    s = mk(p, 100);
    cr_expect(fg_sampler_has_penalties(s), "a presence penalty");
    fg_sampler_free(s);

    p = plain();
    p.temperature = 0.7f, p.top_k = 5, p.top_p = 0.9f, p.min_p = 0.1f;
    fg_sampler *a = mk(p, 100);
    cr_expect(!fg_sampler_is_greedy(a));
    fg_sampler_rng rng;
    fg_sampler_rng_seed(&rng, fg_sampler_seed(a));
    for (int i = 0; i < 5; i++) {
        fg_sample_row row;
        fg_sampler_next_row(a, &row);
        cr_expect(row.temperature == 0.7f && row.top_k == 5 && row.top_p == 0.9f && row.min_p == 0.1f);
        double u = fg_sampler_rng_uniform(&rng);
        cr_expect(row.u == u, "draw %d: %.17g, the stream's is %.17g", i, row.u, u);
    }
    fg_sampler_free(a);
    p.temperature = 0.0f;
    a = mk(p, 100);
    fg_sample_row row;
    fg_sampler_next_row(a, &row);
    cr_expect(row.temperature == 0.0f && row.u == 0.0, "greedy takes no draw");
    fg_sampler_free(a);
}

/* ---- Logit bias ---------------------------------------------------------- */

/* out = x with the biases added by hand, in list order, a later entry for a
 * token replacing an earlier one (what a JSON object's repeated key does). */
static void add_by_hand(const float *x, int32_t n, const fg_logit_bias *b, int nb, float *out)
{
    memcpy(out, x, (size_t)n * sizeof *x);
    for (int i = 0; i < nb; i++) {
        bool later = false;
        for (int j = i + 1; j < nb; j++) later = later || b[j].token == b[i].token;
        if (!later) out[b[i].token] += b[i].bias;
    }
}

/* A sampler with logit biases draws exactly what one without draws from
 * the logits with the biases added by hand: the same ids, the same
 * candidates and probabilities, through greedy, each filter, penalties and
 * temperature; a token listed twice takes its later bias; a banned leader
 * (-100) is never drawn, a +100 token always is when greedy; the backend
 * row carries the sorted, merged list. */
Test(sampler, logit_bias_is_added_to_the_logits_first)
{
    enum { N = 3000, DRAWS = 200 };
    float *x = malloc(N * sizeof *x), *xb = malloc(N * sizeof *xb);
    uint64_t st = 99;
    for (int i = 0; i < N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((st >> 40) % 10000) / 1000.0f - 4.0f;
    }
    x[1234] = 9.5f; /* the leader, banned */
    const fg_logit_bias forced[] = {{1234, -100.0f}, {7, 3.0f}, {2999, 5.5f}, {7, 6.25f}, {0, -2.0f}, {513, 100.0f}};
    const fg_logit_bias shaped[] = {{1234, -100.0f}, {7, 3.0f}, {2999, 5.5f}, {7, 6.25f}, {0, -2.0f}};
    struct { float t; int k; float p, mp, rep; } cases[] = {
        {0.0f, 0, 1.0f, 0.0f, 1.0f}, {1.0f, 0, 1.0f, 0.0f, 1.0f}, {0.8f, 40, 0.95f, 0.05f, 1.0f},
        {1.5f, 0, 0.9f, 0.0f, 1.0f}, {1.0f, 0, 1.0f, 0.01f, 1.0f}, {0.9f, 20, 1.0f, 0.0f, 1.3f}};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const fg_logit_bias *list = ci == 0 ? forced : shaped;
        int nb = ci == 0 ? 6 : 5;
        add_by_hand(x, N, list, nb, xb);
        fg_sampler_params p = plain();
        p.temperature = cases[ci].t, p.top_k = cases[ci].k, p.top_p = cases[ci].p, p.min_p = cases[ci].mp;
        p.repeat_penalty = cases[ci].rep, p.repeat_last_n = cases[ci].rep != 1.0f ? 16 : 0;
        p.seed = 7 + ci;
        fg_sampler *a = mk(p, N);
        p.logit_bias = list, p.n_logit_bias = nb;
        fg_sampler *b = mk(p, N);
        for (int d = 0; d < DRAWS; d++) {
            int32_t ia, ib;
            cr_assert_eq(fg_sampler_sample(a, xb, &ia), FG_OK);
            cr_assert_eq(fg_sampler_sample(b, x, &ib), FG_OK);
            cr_assert_eq(ib, ia, "case %zu draw %d: %d with the biases, %d from the biased logits", ci, d, ib, ia);
            cr_assert_neq(ib, 1234, "the banned leader is never drawn");
            if (ci == 0) cr_assert_eq(ib, 513, "greedy: the +100 token");
            fg_sampler_accept(a, ia);
            fg_sampler_accept(b, ib);
        }
        fg_sampler_cands ca, cb;
        cr_assert_eq(fg_sampler_candidates(a, xb, &ca), FG_OK);
        int32_t na = ca.n, *id = malloc((size_t)na * sizeof *id);
        float *pr = malloc((size_t)na * sizeof *pr);
        memcpy(id, ca.id, (size_t)na * sizeof *id), memcpy(pr, ca.p, (size_t)na * sizeof *pr);
        cr_assert_eq(fg_sampler_candidates(b, x, &cb), FG_OK);
        cr_assert_eq(cb.n, na, "case %zu: %d candidates with the biases, %d from the biased logits", ci, cb.n, na);
        for (int32_t i = 0; i < na; i++) {
            int32_t j = 0;
            while (j < cb.n && cb.id[j] != id[i]) j++;
            cr_assert(j < cb.n && cb.p[j] == pr[i], "case %zu: candidate %d", ci, id[i]);
        }
        free(id), free(pr);
        if (ci == 0) {
            fg_sample_row row;
            fg_sampler_next_row(b, &row);
            cr_assert_eq(row.n_bias, 5, "the backend row: 6 entries, token 7 merged");
            const int32_t want_tok[] = {0, 7, 513, 1234, 2999};
            const float want_b[] = {-2.0f, 6.25f, 100.0f, -100.0f, 5.5f};
            for (int i = 0; i < 5; i++)
                cr_assert(row.bias[i].token == want_tok[i] && row.bias[i].bias == want_b[i], "row bias %d: %d %g", i,
                          row.bias[i].token, (double)row.bias[i].bias);
        }
        fg_sampler_free(a);
        fg_sampler_free(b);
    }
    free(x), free(xb);
}

Test(sampler, logit_bias_invalid_entries_are_named)
{
    fg_sampler_params p = plain();
    const fg_logit_bias nan_b[] = {{5, NAN}}, inf_b[] = {{5, INFINITY}}, neg[] = {{-1, 1.0f}}, big[] = {{100, 1.0f}};
    p.logit_bias = nan_b, p.n_logit_bias = 1;
    expect_invalid(p, "logit_bias", "finite");
    p.logit_bias = inf_b;
    expect_invalid(p, "logit_bias", "finite");
    p.logit_bias = neg;
    expect_invalid(p, "logit_bias", ">= 0");
    p.logit_bias = NULL;
    expect_invalid(p, "n_logit_bias", "entries given");
    p.logit_bias = big;
    cr_assert_eq(fg_sampler_check(&p), FG_OK, "the vocabulary is init's to check");
    fg_sampler *s = NULL;
    cr_assert_eq(fg_sampler_init(&p, 100, &s), FG_ERR_INVALID_ARG);
    cr_assert(strstr(fg_last_error(), "logit_bias token 100 is outside the vocabulary of 100"), "%s", fg_last_error());
    cr_assert_null(s);
}
