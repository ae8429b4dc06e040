/*
 * attn_avx2.c — the attention kernels of attn.h with AVX2 (built with -mavx2
 * by the Makefile's *_avx2.c rule; without it this compiles to a stub that
 * reports them unavailable). Multiplies and adds stay separate instructions,
 * so the results equal the plain C kernels bit for bit (attn.h).
 */
#include "backend/cpu/attn.h"

#include <stddef.h>

#if defined(__AVX2__)
#include <immintrin.h>

/* The lane tree of attn.h for one key: ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). */
static float tree_sum(__m256 a)
{
    __m256 h = _mm256_hadd_ps(a, a);
    h = _mm256_hadd_ps(h, h);
    return _mm_cvtss_f32(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

/* Eight keys at once: eight lane-sum vectors, then the lane tree of each,
 * which hadd computes in exactly that order. */
static void scores8(const float *q, const float *k, int64_t ldk, int32_t dk, float *score)
{
    __m256 a[8];
    for (int i = 0; i < 8; i++) a[i] = _mm256_setzero_ps();
    for (int32_t d = 0; d < dk; d += 8) {
        __m256 qv = _mm256_loadu_ps(q + d);
        for (int i = 0; i < 8; i++)
            a[i] = _mm256_add_ps(a[i], _mm256_mul_ps(qv, _mm256_loadu_ps(k + (size_t)i * (size_t)ldk + d)));
    }
    __m256 x = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 y = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    __m256 lo = _mm256_permute2f128_ps(x, y, 0x20), hi = _mm256_permute2f128_ps(x, y, 0x31);
    _mm256_storeu_ps(score, _mm256_add_ps(lo, hi));
}

static void scores(const float *q, const float *k, int64_t ldk, int32_t dk, int32_t n, float *score)
{
    if (dk % 8 != 0) {
        fg_cpu_attn_generic()->scores(q, k, ldk, dk, n, score);
        return;
    }
    int32_t j = 0;
    for (; j + 8 <= n; j += 8) scores8(q, k + (size_t)j * (size_t)ldk, ldk, dk, score + j);
    for (; j < n; j++) {
        const float *kj = k + (size_t)j * (size_t)ldk;
        __m256 a = _mm256_setzero_ps();
        for (int32_t d = 0; d < dk; d += 8) a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(kj + d)));
        score[j] = tree_sum(a);
    }
}

/* o[0 .. 8W) over all n keys, in key order. */
#define WEIGHTED_SUM_W(W)                                                                                     \
    static void weighted_sum_##W(const float *p, const float *v, int64_t ldv, int32_t n, float *o)        \
    {                                                                                                         \
        __m256 a[W];                                                                                          \
        for (int i = 0; i < W; i++) a[i] = _mm256_setzero_ps();                                               \
        for (int32_t j = 0; j < n; j++) {                                                                     \
            __m256 pj = _mm256_broadcast_ss(p + j);                                                           \
            const float *vj = v + (size_t)j * (size_t)ldv;                                                    \
            for (int i = 0; i < W; i++) a[i] = _mm256_add_ps(a[i], _mm256_mul_ps(pj, _mm256_loadu_ps(vj + 8 * i))); \
        }                                                                                                     \
        for (int i = 0; i < W; i++) _mm256_storeu_ps(o + 8 * i, a[i]);                                        \
    }
WEIGHTED_SUM_W(8)
WEIGHTED_SUM_W(1)

static void weighted_sum(const float *p, const float *v, int64_t ldv, int32_t dv, int32_t n, float *o)
{
    if (dv % 8 != 0) {
        fg_cpu_attn_generic()->weighted_sum(p, v, ldv, dv, n, o);
        return;
    }
    int32_t d = 0;
    for (; d + 64 <= dv; d += 64) weighted_sum_8(p, v + d, ldv, n, o + d);
    for (; d < dv; d += 8) weighted_sum_1(p, v + d, ldv, n, o + d);
}

static const fg_cpu_attn_kernels kernels = {"avx2", scores, weighted_sum};

const fg_cpu_attn_kernels *fg_cpu_attn_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? &kernels : NULL;
}
#else
const fg_cpu_attn_kernels *fg_cpu_attn_avx2(void)
{
    return NULL;
}
#endif
