/*
 * f16.c — see f16.h: the scalar versions and the run-time choice.
 */
#include "backend/cpu/f16.h"

#include <pthread.h>

#include "gguf/quant.h"

static void to_f32_scalar(const uint16_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = fg_f16_to_f32(src[i]);
}

static void to_f16_scalar(const float *src, uint16_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = fg_f32_to_f16(src[i]);
}

static fg_cpu_f16_kernels chosen = {to_f32_scalar, to_f16_scalar};
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    const fg_cpu_f16_kernels *k = fg_cpu_f16_kernels_f16c();
    if (k) chosen = *k;
}

void fg_cpu_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n)
{
    pthread_once(&once, choose);
    chosen.to_f32(src, dst, n);
}

void fg_cpu_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n)
{
    pthread_once(&once, choose);
    chosen.to_f16(src, dst, n);
}
