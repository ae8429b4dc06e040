/*
 * f16_avx2.c — F16C row conversions (built with -mavx2 -mf16c by the
 * Makefile's *_avx2.c rule; without those flags it compiles to a stub that
 * reports them unavailable). Used only after a run-time check.
 */
#include "backend/cpu/f16.h"

#include <stddef.h>

#if defined(__F16C__) && defined(__AVX2__)
#include <immintrin.h>

#include "gguf/quant.h"

static void to_f32(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(src + i))));
    for (; i < n; i++) dst[i] = fg_f16_to_f32(src[i]);
}

static void to_f16(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) dst[i] = fg_f32_to_f16(src[i]);
}

static const fg_cpu_f16_kernels kernels = {to_f32, to_f16};

const fg_cpu_f16_kernels *fg_cpu_f16_kernels_f16c(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2") ? &kernels : NULL;
}
#else
const fg_cpu_f16_kernels *fg_cpu_f16_kernels_f16c(void)
{
    return NULL;
}
#endif
