/*
 * sampler.c — the token sampler of sampler.h: penalties, top-k, top-p, min-p,
 * temperature and a seeded draw over one logits vector.
 *
 * Nothing here sorts the vocabulary (n_vocab up to 262144, and the budget
 * is well under a millisecond a token):
 *   - prepare: one vector pass copies the logits into work[] (NaN -> -inf,
 *     +inf -> FLT_MAX) and keeps the max of every block of BLK logits; the
 *     penalties then touch only the tokens in the history window.
 *   - top-k: if tau is the k-th largest block max, k blocks hold a logit >=
 *     tau, so the k-th largest logit is >= tau and only blocks whose max is
 *     >= tau can hold the top k. A k-heap runs over those blocks alone and
 *     its k survivors are sorted.
 *   - top-p with top-k off: the weights exp(l - max) of the whole vocabulary
 *     give the total; the tokens within D nats of the max (D = 4, 16, 64,
 *     then all, until their mass reaches top_p) are summed into NBUCKET
 *     buckets by distance below the max; the buckets tell in which one the
 *     cumulative mass crosses top_p, and only that bucket is sorted.
 *   - min-p is a threshold on logits; temperature and the draw are one pass
 *     of weights (per-block sums when no filter is on, so the draw rescans
 *     one block, not the vocabulary).
 * The weights come from a float exp (the Cephes expf polynomial) written
 * with GCC/Clang vector extensions, so it runs SIMD on any target, with a
 * scalar twin doing the same operations for tails: with -ffp-contract=off
 * both round identically, so a weight does not depend on a token's place.
 *
 * Owns: the sampler and its scratch, all allocated by fg_sampler_init.
 */
#include "runtime/sampler.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/err.h"

#define BLK 64             /* logits per block of block maxima */
#define NBUCKET 1024       /* top-p buckets below the max ... */
#define BUCKET_SCALE 32.0f /* ... each 1/32 nat wide; the last takes the rest */
#define VW 4               /* floats per vector: 16 bytes, native on SSE2 and NEON */

typedef float vf __attribute__((vector_size(VW * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VW * sizeof(int32_t))));
typedef uint32_t vu __attribute__((vector_size(VW * sizeof(uint32_t))));

/* A logit and its token, for the heap and the sorts. */
typedef struct pair {
    float l;
    int32_t id;
} pair;

struct fg_sampler {
    fg_sampler_params p;
    int32_t n_vocab;
    int32_t n_blk;   /* ceil(n_vocab / BLK) */
    uint64_t seed;   /* resolved: never FG_SAMPLER_SEED_RANDOM */
    fg_sampler_rng rng;

    float *work;     /* (n_blk * BLK) penalized logits; -inf past n_vocab */
    float *bmax;     /* (n_blk) max of each block of work */
    float *bsum;     /* (n_blk) top-k block heap; block weight sums */
    float *ebuf;     /* (n_blk * BLK) weights exp(l - max) for dense top-p */
    pair *pairs;     /* (n_blk * BLK) heap and sort scratch */
    float max;       /* max of work, after penalties */

    /* The candidate set: every finite entry of work if dense, else these
     * n_cand entries (sorted descending if sorted). */
    bool dense, sorted;
    int32_t n_cand;
    int32_t *cid;    /* (n_blk * BLK): branch-free gathers may write one */
    float *clogit;   /* (n_blk * BLK) penalized logits   past the last */
    float *cp;       /* (n_blk * BLK) weights, then probabilities */

    /* Penalty history: the last ring_len (<= repeat_last_n) accepted tokens
     * and how often each occurs among them. */
    int32_t *ring;   /* (repeat_last_n) */
    int32_t ring_len, ring_pos;
    int32_t *count;  /* (n_vocab) */

    double bmass[VW][NBUCKET]; /* top-p: summed weights per bucket, per lane */

    fg_logit_bias *bias; /* (n_bias) the logit biases, tokens ascending and distinct */
    int32_t n_bias;
};

/* ---- Random numbers -------------------------------------------------------
 *
 * splitmix64 (Steele, Lea and Flood, 2014), as in Vigna's reference code:
 *     x += 0x9e3779b97f4a7c15;
 *     z = x; z = (z ^ z >> 30) * 0xbf58476d1ce4e5b9;
 *     z = (z ^ z >> 27) * 0x94d049bb133111eb; return z ^ z >> 31;
 * It expands a 64-bit seed into the 256-bit state of xoshiro256** (Blackman
 * and Vigna, 2018): s[0..3] = four successive splitmix64 outputs, then each
 * step returns rotl(s1 * 5, 7) * 9 and updates
 *     t = s1 << 17; s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3; s2 ^= t;
 *     s3 = rotl(s3, 45).
 * A uniform double in [0, 1) is (next >> 11) * 2^-53. */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void fg_sampler_rng_seed(fg_sampler_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

uint64_t fg_sampler_rng_next(fg_sampler_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

double fg_sampler_rng_uniform(fg_sampler_rng *r)
{
    return (double)(fg_sampler_rng_next(r) >> 11) * 0x1.0p-53;
}

/* A seed for FG_SAMPLER_SEED_RANDOM: both clocks and an address, mixed. Not
 * for cryptography; it only has to differ between runs. */
static uint64_t seed_from_clock(const void *salt)
{
    struct timespec a = {0}, b = {0};
    clock_gettime(CLOCK_REALTIME, &a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    uint64_t x = (uint64_t)a.tv_sec * 1000000000u + (uint64_t)a.tv_nsec;
    x ^= ((uint64_t)b.tv_nsec << 32) ^ (uint64_t)b.tv_sec ^ (uint64_t)(uintptr_t)salt;
    uint64_t seed = splitmix64(&x);
    return seed == FG_SAMPLER_SEED_RANDOM ? 0 : seed;
}

uint64_t fg_sampler_random_seed(void)
{
    static _Atomic uint64_t calls; /* two calls in one clock tick still differ */
    return seed_from_clock((const void *)(uintptr_t)(atomic_fetch_add(&calls, 1) * 0x9e3779b97f4a7c15u));
}

/* ---- exp ------------------------------------------------------------------
 *
 * exp(x) for x <= 0 in float, after Cephes' expf: x = n ln2 + r with n the
 * nearest integer to x log2(e) (rounded by adding 1.5 * 2^23), ln2 split in
 * two so r is exact, e^r by a degree-7 polynomial on |r| <= ln2 / 2, and
 * 2^n built in the exponent bits. Relative error under 1e-7. Inputs below
 * EXP_LO (so -inf) give exactly 0: a weight under e^-87 of the largest one
 * does not matter, and a banned token must weigh nothing. */

#define EXP_LO (-87.0f)
#define EXP_LOG2E 1.44269504088896341f
#define EXP_ROUND 12582912.0f /* 1.5 * 2^23 */
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

/* exp((x - sub) * mul), one lane. */
static inline float exp_lane(float x, float sub, float mul)
{
    x = (x - sub) * mul;
    if (!(x >= EXP_LO))
        return 0.0f;
    float t = x * EXP_LOG2E + EXP_ROUND;
    float n = t - EXP_ROUND;
    float r = x - n * EXP_LN2_HI;
    r = r - n * EXP_LN2_LO;
    float q = EXP_P0;
    q = q * r + EXP_P1;
    q = q * r + EXP_P2;
    q = q * r + EXP_P3;
    q = q * r + EXP_P4;
    q = q * r + EXP_P5;
    float y = q * r * r + r + 1.0f;
    uint32_t tb, sb;
    memcpy(&tb, &t, sizeof tb);
    sb = (tb - 0x4B400000u + 127u) << 23; /* t's low bits hold n */
    float scale;
    memcpy(&scale, &sb, sizeof scale);
    return y * scale;
}

/* Lane-wise mask ? a : b (a macro: vector arguments would change the ABI
 * of a function between targets, which GCC warns about). */
#define VSEL(mask, a, b) ((vf)(((mask) & (vi)(a)) | (~(mask) & (vi)(b))))

/* dst[0..VW) = exp_lane(src[i], sub, mul), the same operations in vectors. */
static inline void exp_vec(const float *src, float sub, float mul, float *dst)
{
    vf x;
    memcpy(&x, src, sizeof x);
    x = (x - sub) * mul;
    vi ok = x >= EXP_LO;
    x = VSEL(ok, x, (vf){0} + EXP_LO);
    vf t = x * EXP_LOG2E + EXP_ROUND;
    vf n = t - EXP_ROUND;
    vf r = x - n * EXP_LN2_HI;
    r = r - n * EXP_LN2_LO;
    vf q = (vf){0} + EXP_P0;
    q = q * r + EXP_P1;
    q = q * r + EXP_P2;
    q = q * r + EXP_P3;
    q = q * r + EXP_P4;
    q = q * r + EXP_P5;
    vf y = q * r * r + r + 1.0f;
    vu sb = ((vu)t - 0x4B400000u + 127u) << 23;
    y = y * (vf)sb;
    y = (vf)((vi)y & ok);
    memcpy(dst, &y, sizeof y);
}

/* dst[i] = exp((src[i] - sub) * mul) for i < n. */
static void exp_array(const float *src, float sub, float mul, float *dst, int32_t n)
{
    int32_t i = 0;
    for (; i + VW <= n; i += VW)
        exp_vec(src + i, sub, mul, dst + i);
    for (; i < n; i++)
        dst[i] = exp_lane(src[i], sub, mul);
}

/* The sum of BLK floats, in a fixed order (lane sums, then lanes). */
static float block_sum(const float *e)
{
    vf acc = {0};
    for (int j = 0; j < BLK; j += VW) {
        vf x;
        memcpy(&x, e + j, sizeof x);
        acc += x;
    }
    float t = 0.0f;
    for (int k = 0; k < VW; k++)
        t += acc[k];
    return t;
}

/* ---- Parameters ---------------------------------------------------------- */

fg_sampler_params fg_sampler_defaults(void)
{
    return (fg_sampler_params){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = FG_SAMPLER_SEED_RANDOM,
    };
}

/* The comparisons are written so that NaN fails them. */
fg_status fg_sampler_check(const fg_sampler_params *p)
{
    if (!(p->temperature >= 0.0f && p->temperature <= FLT_MAX))
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "sampler: temperature %g is out of range: it must be finite and >= 0 (0 = greedy)",
                          (double)p->temperature);
    if (p->top_k < 0)
        return fg_err_set(FG_ERR_INVALID_ARG, "sampler: top_k %d is out of range: it must be >= 0 (0 = off)",
                          (int)p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return fg_err_set(FG_ERR_INVALID_ARG, "sampler: top_p %g is out of range: it must be in (0, 1] (1 = off)",
                          (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return fg_err_set(FG_ERR_INVALID_ARG, "sampler: min_p %g is out of range: it must be in [0, 1] (0 = off)",
                          (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f && p->repeat_penalty <= FLT_MAX))
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "sampler: repeat_penalty %g is out of range: it must be finite and > 0 (1 = off)",
                          (double)p->repeat_penalty);
    if (p->repeat_last_n < 0)
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "sampler: repeat_last_n %d is out of range: it must be >= 0 (0 = no penalties)",
                          (int)p->repeat_last_n);
    if (!(fabsf(p->presence_penalty) <= FLT_MAX))
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "sampler: presence_penalty %g is out of range: it must be finite (0 = off)",
                          (double)p->presence_penalty);
    if (!(fabsf(p->frequency_penalty) <= FLT_MAX))
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "sampler: frequency_penalty %g is out of range: it must be finite (0 = off)",
                          (double)p->frequency_penalty);
    if (p->n_logit_bias < 0 || (p->n_logit_bias > 0 && !p->logit_bias))
        return fg_err_set(FG_ERR_INVALID_ARG, "sampler: n_logit_bias %d is out of range: it must be >= 0, with the entries given",
                          (int)p->n_logit_bias);
    for (int32_t i = 0; i < p->n_logit_bias; i++) {
        if (p->logit_bias[i].token < 0)
            return fg_err_set(FG_ERR_INVALID_ARG, "sampler: logit_bias entry %d has token %d: a token id is >= 0", (int)i,
                              (int)p->logit_bias[i].token);
        if (!(fabsf(p->logit_bias[i].bias) <= FLT_MAX))
            return fg_err_set(FG_ERR_INVALID_ARG, "sampler: logit_bias of token %d is %g: it must be finite", 
                              (int)p->logit_bias[i].token, (double)p->logit_bias[i].bias);
    }
    return FG_OK;
}

/* Orders bias entries by token, then by their place in the caller's list
 * (carried in the entry's sort key), so that the last of equal tokens can
 * be kept. */
typedef struct bias_at {
    fg_logit_bias b;
    int32_t at;
} bias_at;

static int bias_cmp(const void *pa, const void *pb)
{
    const bias_at *a = pa, *b = pb;
    if (a->b.token != b->b.token) return a->b.token < b->b.token ? -1 : 1;
    return a->at < b->at ? -1 : a->at > b->at;
}

/* s->bias = p's entries, sorted, a repeated token keeping its last bias. */
static fg_status copy_bias(fg_sampler *s, const fg_sampler_params *p)
{
    int32_t n = p->n_logit_bias;
    s->p.logit_bias = NULL;
    s->p.n_logit_bias = 0;
    if (n <= 0) return FG_OK; /* fg_sampler_check refused n < 0 */
    for (int32_t i = 0; i < n; i++)
        if (p->logit_bias[i].token >= s->n_vocab)
            return fg_err_set(FG_ERR_INVALID_ARG, "sampler: logit_bias token %d is outside the vocabulary of %d",
                              (int)p->logit_bias[i].token, (int)s->n_vocab);
    bias_at *t = malloc((size_t)n * sizeof *t);
    s->bias = malloc((size_t)n * sizeof *s->bias);
    if (!t || !s->bias) {
        free(t);
        return fg_err_set(FG_ERR_NOMEM, "sampler: out of memory for %d logit biases", (int)n);
    }
    for (int32_t i = 0; i < n; i++) t[i] = (bias_at){p->logit_bias[i], i};
    qsort(t, (size_t)n, sizeof *t, bias_cmp);
    for (int32_t i = 0; i < n; i++)
        if (i + 1 == n || t[i + 1].b.token != t[i].b.token) s->bias[s->n_bias++] = t[i].b;
    free(t);
    s->p.logit_bias = s->bias;
    s->p.n_logit_bias = s->n_bias;
    return FG_OK;
}

/* ---- Lifetime and history ------------------------------------------------ */

#define MAX_VOCAB (INT32_MAX - BLK)

fg_status fg_sampler_init(const fg_sampler_params *p, int32_t n_vocab, fg_sampler **out)
{
    *out = NULL;
    FG_TRY(fg_sampler_check(p));
    if (n_vocab < 1 || n_vocab > MAX_VOCAB)
        return fg_err_set(FG_ERR_INVALID_ARG, "sampler: n_vocab %d is out of range: it must be in [1, %d]",
                          (int)n_vocab, (int)MAX_VOCAB);
    fg_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return fg_err_set(FG_ERR_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->n_blk = (int32_t)(((int64_t)n_vocab + BLK - 1) / BLK);
    size_t n = (size_t)n_vocab, npad = (size_t)s->n_blk * BLK, nb = (size_t)s->n_blk;
    s->work = malloc(npad * sizeof *s->work);
    s->bmax = malloc(nb * sizeof *s->bmax);
    s->bsum = malloc(nb * sizeof *s->bsum);
    s->ebuf = malloc(npad * sizeof *s->ebuf);
    s->pairs = malloc(npad * sizeof *s->pairs);
    s->cid = malloc(npad * sizeof *s->cid);
    s->clogit = malloc(npad * sizeof *s->clogit);
    s->cp = malloc(npad * sizeof *s->cp);
    if (!s->work || !s->bmax || !s->bsum || !s->ebuf || !s->pairs || !s->cid || !s->clogit ||
        !s->cp)
        goto nomem;
    if (p->repeat_last_n > 0) {
        s->ring = malloc((size_t)p->repeat_last_n * sizeof *s->ring);
        s->count = calloc(n, sizeof *s->count);
        if (!s->ring || !s->count)
            goto nomem;
    }
    fg_status st = copy_bias(s, p);
    if (st != FG_OK) {
        fg_sampler_free(s);
        return st;
    }
    s->seed = p->seed == FG_SAMPLER_SEED_RANDOM && !p->seed_exact ? seed_from_clock(s) : p->seed;
    fg_sampler_rng_seed(&s->rng, s->seed);
    *out = s;
    return FG_OK;
nomem:
    fg_sampler_free(s);
    return fg_err_set(FG_ERR_NOMEM, "sampler: out of memory for the scratch of a %d-token vocabulary",
                      (int)n_vocab);
}

void fg_sampler_free(fg_sampler *s)
{
    if (!s)
        return;
    free(s->work);
    free(s->bmax);
    free(s->bsum);
    free(s->ebuf);
    free(s->pairs);
    free(s->cid);
    free(s->clogit);
    free(s->cp);
    free(s->ring);
    free(s->count);
    free(s->bias);
    free(s);
}

/* The ring fills slots 0, 1, ... and then overwrites the oldest, so its
 * live entries are always ring[0..ring_len), in some rotation. */
void fg_sampler_accept(fg_sampler *s, int32_t id)
{
    FG_ASSERT(id >= 0 && id < s->n_vocab);
    int32_t cap = s->p.repeat_last_n;
    if (cap == 0)
        return;
    if (s->ring_len == cap)
        s->count[s->ring[s->ring_pos]]--;
    else
        s->ring_len++;
    s->ring[s->ring_pos] = id;
    s->count[id]++;
    s->ring_pos = s->ring_pos + 1 == cap ? 0 : s->ring_pos + 1;
}

void fg_sampler_reset(fg_sampler *s)
{
    for (int32_t i = 0; i < s->ring_len; i++)
        s->count[s->ring[i]] = 0;
    s->ring_len = s->ring_pos = 0;
    fg_sampler_rng_seed(&s->rng, s->seed);
}

uint64_t fg_sampler_seed(const fg_sampler *s)
{
    return s->seed;
}

/* ---- Prepare: copy, sanitize, penalize ----------------------------------- */

static float block_max(const float *w)
{
    float m = -INFINITY;
    for (int j = 0; j < BLK; j++)
        m = w[j] > m ? w[j] : m;
    return m;
}

static float sanitize(float l)
{
    if (l != l)
        return -INFINITY;
    return l > FLT_MAX ? FLT_MAX : l;
}

/* work[t] += bias for each entry (clamped as sanitize does), then the
 * touched blocks' maxima again (entries are sorted, so each block once). */
static void apply_bias(fg_sampler *s)
{
    float *w = s->work;
    for (int32_t i = 0; i < s->n_bias; i++) {
        int32_t t = s->bias[i].token;
        w[t] = sanitize(w[t] + s->bias[i].bias);
        int32_t b = t / BLK;
        if (i + 1 == s->n_bias || s->bias[i + 1].token / BLK != b) s->bmax[b] = block_max(w + (size_t)b * BLK);
    }
}

/* Applies the penalties to work[] (llama.cpp's arithmetic, in float) for
 * each distinct token of the window, and refreshes the block maxima they
 * touch. A token is done once: its count is negated while in use. */
static void apply_penalties(fg_sampler *s)
{
    const float rp = s->p.repeat_penalty, freq = s->p.frequency_penalty, pres = s->p.presence_penalty;
    if (s->ring_len == 0 || (rp == 1.0f && freq == 0.0f && pres == 0.0f))
        return;
    float *w = s->work;
    for (int32_t i = 0; i < s->ring_len; i++) {
        int32_t t = s->ring[i], c = s->count[t];
        if (c <= 0)
            continue;
        float l = w[t];
        if (l <= 0.0f)
            l *= rp;
        else
            l /= rp;
        l -= (float)c * freq + (float)(c > 0) * pres;
        w[t] = sanitize(l);
        s->count[t] = -c;
    }
    for (int32_t i = 0; i < s->ring_len; i++) {
        int32_t t = s->ring[i];
        if (s->count[t] < 0) {
            s->count[t] = -s->count[t];
            int32_t b = t / BLK;
            s->bmax[b] = block_max(w + (size_t)b * BLK);
        }
    }
}

/* work[] = sanitized logits, penalized; bmax[] and max to match. Fails if
 * nothing is above -inf. */
static fg_status prepare(fg_sampler *s, const float *logits)
{
    const int32_t n = s->n_vocab, full = n / BLK;
    float *w = s->work;
    const vf ninf = (vf){0} - INFINITY, big = (vf){0} + FLT_MAX;
    for (int32_t b = 0; b < full; b++) {
        vf m = ninf;
        for (int j = 0; j < BLK; j += VW) {
            size_t i = (size_t)b * BLK + (size_t)j;
            vf x;
            memcpy(&x, logits + i, sizeof x);
            x = VSEL(x != x, ninf, x);
            x = VSEL(x > big, big, x);
            memcpy(w + i, &x, sizeof x);
            m = VSEL(x > m, x, m);
        }
        float bm = m[0];
        for (int k = 1; k < VW; k++)
            bm = m[k] > bm ? m[k] : bm;
        s->bmax[b] = bm;
    }
    if (full < s->n_blk) {
        size_t base = (size_t)full * BLK;
        for (size_t i = base; i < base + BLK; i++)
            w[i] = i < (size_t)n ? sanitize(logits[i]) : -INFINITY;
        s->bmax[full] = block_max(w + base);
    }
    apply_bias(s);
    apply_penalties(s);
    float m = -INFINITY;
    for (int32_t b = 0; b < s->n_blk; b++)
        m = s->bmax[b] > m ? s->bmax[b] : m;
    if (m == -INFINITY)
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "sampler: no token can be sampled: all %d logits are -inf or NaN", (int)n);
    s->max = m;
    return FG_OK;
}

/* The lowest id whose logit is the max. */
static int32_t argmax(const fg_sampler *s)
{
    int32_t b = 0;
    while (s->bmax[b] != s->max)
        b++;
    const float *w = s->work + (size_t)b * BLK;
    int32_t j = 0;
    while (w[j] != s->max)
        j++;
    return b * BLK + j;
}

/* ---- Filters ------------------------------------------------------------- */

/* a before b in the candidate order: higher logit, then lower id. */
static inline bool before(pair a, pair b)
{
    return a.l > b.l || (a.l == b.l && a.id < b.id);
}

/* Min-heap of floats: h[0] is the smallest of the k largest seen. */
static void fheap_down(float *h, int32_t n, int32_t i)
{
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && h[c + 1] < h[c])
            c++;
        if (!(h[c] < h[i]))
            return;
        float t = h[c];
        h[c] = h[i];
        h[i] = t;
        i = c;
    }
}

/* Heap of pairs with the last in candidate order at the root. */
static void pheap_down(pair *h, int32_t n, int32_t i)
{
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && before(h[c], h[c + 1]))
            c++;
        if (!before(h[i], h[c]))
            return;
        pair t = h[c];
        h[c] = h[i];
        h[i] = t;
        i = c;
    }
}

static void pheap_up(pair *h, int32_t i)
{
    while (i > 0) {
        int32_t parent = (i - 1) / 2;
        if (!before(h[parent], h[i]))
            return;
        pair t = h[parent];
        h[parent] = h[i];
        h[i] = t;
        i = parent;
    }
}

/* Sorts a[0..n) into candidate order: heapsort, because glibc's qsort may
 * allocate and sampling must not (the order is total, so any correct sort
 * gives the same result). */
static void sort_pairs(pair *a, int32_t n)
{
    for (int32_t i = n / 2 - 1; i >= 0; i--)
        pheap_down(a, n, i);
    for (int32_t end = n - 1; end > 0; end--) {
        pair t = a[0];
        a[0] = a[end];
        a[end] = t;
        pheap_down(a, end, 0);
    }
}

static void set_cands_from_pairs(fg_sampler *s, const pair *src, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        s->cid[i] = src[i].id;
        s->clogit[i] = src[i].l;
    }
    s->n_cand = n;
    s->dense = false;
}

/* Keeps the k first finite logits in candidate order, sorted (see the file
 * comment for why only blocks with a max >= tau are read). */
static void top_k(fg_sampler *s, int32_t k)
{
    const int32_t nb = s->n_blk;
    float tau = -INFINITY;
    if (k <= nb) {
        float *h = s->bsum;
        for (int32_t b = 0; b < k; b++)
            h[b] = s->bmax[b];
        for (int32_t i = k / 2 - 1; i >= 0; i--)
            fheap_down(h, k, i);
        for (int32_t b = k; b < nb; b++) {
            if (s->bmax[b] > h[0]) {
                h[0] = s->bmax[b];
                fheap_down(h, k, 0);
            }
        }
        tau = h[0];
    }
    pair *h = s->pairs;
    int32_t m = 0;
    for (int32_t b = 0; b < nb; b++) {
        if (s->bmax[b] < tau || s->bmax[b] == -INFINITY)
            continue;
        const float *w = s->work + (size_t)b * BLK;
        for (int32_t j = 0; j < BLK; j++) {
            if (w[j] < tau || w[j] == -INFINITY)
                continue;
            pair e = {w[j], b * BLK + j};
            if (m < k) {
                h[m] = e;
                pheap_up(h, m++);
            } else if (before(e, h[0])) {
                h[0] = e;
                pheap_down(h, m, 0);
            }
        }
    }
    sort_pairs(h, m);
    set_cands_from_pairs(s, h, m);
    s->sorted = true;
}

/* Top-p over sorted candidates: softmax at temperature 1, shortest prefix
 * with cumulative probability >= p. */
static void top_p_sorted(fg_sampler *s, float p)
{
    int32_t n = s->n_cand;
    exp_array(s->clogit, s->clogit[0], 1.0f, s->cp, n);
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++)
        sum += s->cp[i];
    double cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        cum += s->cp[i];
        if (cum / sum >= (double)p) {
            s->n_cand = i + 1;
            return;
        }
    }
}

/* The sum of e[j] over the j < BLK with w[j] >= thr, in a fixed order. */
static float block_sum_above(const float *w, const float *e, float thr)
{
    vf acc = {0};
    for (int j = 0; j < BLK; j += VW) {
        vf x, y;
        memcpy(&x, w + j, sizeof x);
        memcpy(&y, e + j, sizeof y);
        acc += (vf)((vi)y & (x >= thr));
    }
    float t = 0.0f;
    for (int k = 0; k < VW; k++)
        t += acc[k];
    return t;
}

/* Sorts r[0..n) and appends it to the candidates until the cumulative
 * weight *cum reaches p * sum (or r ends). */
static void top_p_take(fg_sampler *s, pair *r, int32_t n, double *cum, double sum, float p)
{
    sort_pairs(r, n);
    for (int32_t j = 0; j < n; j++) {
        s->cid[s->n_cand] = r[j].id;
        s->clogit[s->n_cand++] = r[j].l;
        *cum += s->ebuf[r[j].id];
        if (*cum / sum >= (double)p)
            return;
    }
}

/* The top-p buckets of VW logits l[] (distance below the max m in units of
 * 1 / scale, the last bucket taking everything further, -inf included),
 * and whether each is >= thr (lanes -1 or 0). */
static inline void top_p_bucket_vec(const float *l, float m, float scale, float thr, int32_t *k, int32_t *in)
{
    vf x, d;
    memcpy(&x, l, sizeof x);
    d = ((vf){0} + m - x) * scale;
    d = VSEL(d < (float)(NBUCKET - 1), d, (vf){0} + (float)(NBUCKET - 1));
    vi kv = __builtin_convertvector(d, vi), iv = x >= thr;
    memcpy(k, &kv, sizeof kv);
    memcpy(in, &iv, sizeof iv);
}

/* Top-p over the whole vocabulary. The weights exp(l - max) of every token
 * give the total. The cut then lies among the tokens no further than some
 * distance D below the max whose mass reaches top_p: D starts at 4 nats
 * and grows 4x until that holds, each try a masked sum over the blocks
 * whose max is close enough (for a peaked distribution, a few blocks).
 * Those tokens, the region, fall into NBUCKET buckets by distance below
 * the max; the bucket sums give the bucket where the cumulative mass
 * crosses top_p, and only that bucket is sorted. The result is the
 * region's tokens of the earlier buckets, in id order, then the needed
 * prefix of the crossing one, sorted. */
static void top_p_dense(fg_sampler *s, float p)
{
    const int32_t nb = s->n_blk;
    const float *w = s->work, m = s->max;
    double sum = 0.0;
    for (int32_t b = 0; b < nb; b++) {
        float *e = s->ebuf + (size_t)b * BLK;
        exp_array(w + (size_t)b * BLK, m, 1.0f, e, BLK);
        sum += block_sum(e);
    }

    float dist = 4.0f, thr;
    for (;;) {
        if (!(dist < -EXP_LO)) { /* weights beyond are 0: take every finite token */
            thr = -FLT_MAX;
            break;
        }
        thr = m - dist;
        double mass = 0.0;
        for (int32_t b = 0; b < nb; b++)
            if (s->bmax[b] >= thr)
                mass += block_sum_above(w + (size_t)b * BLK, s->ebuf + (size_t)b * BLK, thr);
        if (mass / sum >= (double)p)
            break;
        dist *= 4.0f;
    }

    /* Bucket sums over the region, branch-free, one histogram per vector
     * lane so that successive adds to one bucket need not wait on each
     * other. */
    const float scale = (float)NBUCKET / dist;
    memset(s->bmass, 0, sizeof s->bmass);
    for (int32_t b = 0; b < nb; b++) {
        if (s->bmax[b] < thr)
            continue;
        const float *wb = w + (size_t)b * BLK, *eb = s->ebuf + (size_t)b * BLK;
        for (int32_t j = 0; j < BLK; j += VW) {
            int32_t k[VW], in[VW];
            top_p_bucket_vec(wb + j, m, scale, thr, k, in);
            for (int32_t v = 0; v < VW; v++)
                s->bmass[v][k[v]] += in[v] ? (double)eb[j + v] : 0.0;
        }
    }

    /* The crossing bucket by bucket sums. The element sums of the scan that
     * follows may round differently and not quite reach top_p by the end of
     * the bucket; then the whole bucket stays (a last-bit matter). */
    int32_t cross = NBUCKET - 1;
    double cum = 0.0;
    for (int32_t k = 0; k < NBUCKET; k++) {
        double bm = 0.0;
        for (int v = 0; v < VW; v++)
            bm += s->bmass[v][k];
        if ((cum + bm) / sum >= (double)p) {
            cross = k;
            break;
        }
        cum += bm;
    }
    /* One pass: the earlier buckets to the candidates, the crossing one to
     * pairs; both branch-free. */
    int32_t nc = 0, nx = 0;
    pair *r = s->pairs;
    for (int32_t b = 0; b < nb; b++) {
        if (s->bmax[b] < thr)
            continue;
        const float *wb = w + (size_t)b * BLK;
        for (int32_t j = 0; j < BLK; j += VW) {
            int32_t k[VW], in[VW];
            top_p_bucket_vec(wb + j, m, scale, thr, k, in);
            for (int32_t v = 0; v < VW; v++) {
                int32_t id = b * BLK + j + v;
                s->cid[nc] = id;
                s->clogit[nc] = wb[j + v];
                nc += in[v] & (k[v] < cross);
                r[nx] = (pair){wb[j + v], id};
                nx += in[v] & (k[v] == cross);
            }
        }
    }
    s->n_cand = nc;
    top_p_take(s, r, nx, &cum, sum, p);
    s->dense = false;
    s->sorted = false;
}

/* Min-p: logits >= max + logf(min_p), the max being that of the set (every
 * filter keeps the overall max, so it is s->max). */
static void min_p(fg_sampler *s, float mp)
{
    const float thr = s->max + logf(mp);
    int32_t nc = 0;
    if (s->dense) {
        for (int32_t i = 0; i < s->n_vocab; i++) {
            float l = s->work[i];
            if (l >= thr && l != -INFINITY) {
                s->cid[nc] = i;
                s->clogit[nc++] = l;
            }
        }
        s->dense = false;
        s->sorted = false;
    } else {
        for (int32_t i = 0; i < s->n_cand; i++) {
            if (s->clogit[i] >= thr) {
                s->cid[nc] = s->cid[i];
                s->clogit[nc++] = s->clogit[i];
            }
        }
    }
    s->n_cand = nc;
}

/* Runs the chain after prepare: leaves the candidate set in s. */
static void filter(fg_sampler *s)
{
    const fg_sampler_params *p = &s->p;
    s->dense = true;
    s->sorted = false;
    if (p->top_k > 0 && p->top_k < s->n_vocab)
        top_k(s, p->top_k);
    if (p->top_p < 1.0f) {
        if (s->dense)
            top_p_dense(s, p->top_p);
        else if (s->n_cand > 1)
            top_p_sorted(s, p->top_p);
    }
    if (p->min_p > 0.0f)
        min_p(s, p->min_p);
}

/* 1 / temperature, or 0 for greedy (temperature 0, or so small that its
 * inverse overflows: the limit is greedy anyway). */
static float inv_temp(const fg_sampler *s)
{
    if (s->p.temperature == 0.0f)
        return 0.0f;
    float inv = 1.0f / s->p.temperature;
    return inv <= FLT_MAX ? inv : 0.0f;
}

/* ---- The draw ------------------------------------------------------------ */

/* Weights of the candidate list into cp; returns their sum. */
static double cand_weights(fg_sampler *s, float inv_t)
{
    exp_array(s->clogit, s->max, inv_t, s->cp, s->n_cand);
    double sum = 0.0;
    for (int32_t i = 0; i < s->n_cand; i++)
        sum += s->cp[i];
    return sum;
}

/* The first index whose running sum of w passes r (skipping zero weights),
 * else the last positive one, else -1. *cum carries the running sum. */
static int32_t pick(const float *w, int32_t n, double r, double *cum)
{
    int32_t last = -1;
    for (int32_t i = 0; i < n; i++) {
        if (w[i] > 0.0f) {
            last = i;
            *cum += w[i];
            if (*cum > r)
                return i;
        }
    }
    return last;
}

static int32_t draw_cands(fg_sampler *s, float inv_t, double u)
{
    double sum = cand_weights(s, inv_t), cum = 0.0;
    int32_t i = pick(s->cp, s->n_cand, u * sum, &cum);
    FG_ASSERT(i >= 0);
    return s->cid[i];
}

/* No filter on: per-block weight sums, then the weights of one block. */
static int32_t draw_dense(fg_sampler *s, float inv_t, double u)
{
    const int32_t nb = s->n_blk;
    double sum = 0.0;
    for (int32_t b = 0; b < nb; b++) {
        float e[BLK];
        exp_array(s->work + (size_t)b * BLK, s->max, inv_t, e, BLK);
        float t = block_sum(e);
        s->bsum[b] = t;
        sum += t;
    }
    double r = u * sum, cum = 0.0;
    int32_t b = pick(s->bsum, nb, r, &cum);
    FG_ASSERT(b >= 0);
    cum -= s->bsum[b];
    float e[BLK];
    exp_array(s->work + (size_t)b * BLK, s->max, inv_t, e, BLK);
    int32_t j = pick(e, BLK, r, &cum);
    FG_ASSERT(j >= 0);
    return b * BLK + j;
}

bool fg_sampler_is_greedy(const fg_sampler *s)
{
    return inv_temp(s) == 0.0f;
}

bool fg_sampler_has_penalties(const fg_sampler *s)
{
    const fg_sampler_params *p = &s->p;
    return p->repeat_last_n > 0 &&
           (p->repeat_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f);
}

void fg_sampler_next_row(fg_sampler *s, fg_sample_row *row)
{
    FG_ASSERT(!fg_sampler_has_penalties(s));
    bool greedy = fg_sampler_is_greedy(s);
    *row = (fg_sample_row){.temperature = greedy ? 0.0f : s->p.temperature, .top_k = s->p.top_k, .top_p = s->p.top_p,
                           .min_p = s->p.min_p, .u = greedy ? 0.0 : fg_sampler_rng_uniform(&s->rng),
                           .n_bias = s->n_bias, .bias = s->bias};
}

fg_status fg_sampler_sample(fg_sampler *s, const float *logits, int32_t *id)
{
    FG_TRY(prepare(s, logits));
    float inv_t = inv_temp(s);
    if (inv_t == 0.0f) {
        *id = argmax(s);
        return FG_OK;
    }
    filter(s);
    double u = fg_sampler_rng_uniform(&s->rng);
    *id = s->dense ? draw_dense(s, inv_t, u) : draw_cands(s, inv_t, u);
    return FG_OK;
}

fg_status fg_sampler_candidates(fg_sampler *s, const float *logits, fg_sampler_cands *out)
{
    FG_TRY(prepare(s, logits));
    float inv_t = inv_temp(s);
    if (inv_t == 0.0f) {
        int32_t i = argmax(s);
        s->cid[0] = i;
        s->clogit[0] = s->work[i];
        s->cp[0] = 1.0f;
        s->n_cand = 1;
    } else {
        filter(s);
        if (s->dense)
            min_p(s, 0.0f); /* every finite token: the threshold is -inf */
        double sum = cand_weights(s, inv_t);
        for (int32_t i = 0; i < s->n_cand; i++)
            s->cp[i] = (float)(s->cp[i] / sum);
    }
    *out = (fg_sampler_cands){s->cid, s->clogit, s->cp, s->n_cand};
    return FG_OK;
}
