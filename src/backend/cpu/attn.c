/*
 * attn.c — see attn.h: the plain C kernels and the run-time choice.
 */
#include "backend/cpu/attn.h"

#include <pthread.h>

static void scores_generic(const float *q, const float *k, int64_t ldk, int32_t dk, int32_t n, float *score)
{
    for (int32_t j = 0; j < n; j++) {
        const float *kj = k + (size_t)j * (size_t)ldk;
        float l[8] = {0};
        int32_t d = 0;
        for (; d + 8 <= dk; d += 8)
            for (int i = 0; i < 8; i++) l[i] += q[d + i] * kj[d + i];
        float s = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
        for (; d < dk; d++) s += q[d] * kj[d];
        score[j] = s;
    }
}

static void weighted_sum_generic(const float *p, const float *v, int64_t ldv, int32_t dv, int32_t n, float *o)
{
    for (int32_t d = 0; d < dv; d++) o[d] = 0;
    for (int32_t j = 0; j < n; j++) {
        const float *vj = v + (size_t)j * (size_t)ldv;
        for (int32_t d = 0; d < dv; d++) o[d] += p[j] * vj[d];
    }
}

static const fg_cpu_attn_kernels generic = {"generic", scores_generic, weighted_sum_generic};

const fg_cpu_attn_kernels *fg_cpu_attn_generic(void)
{
    return &generic;
}

static const fg_cpu_attn_kernels *chosen = &generic;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    const fg_cpu_attn_kernels *k = fg_cpu_attn_avx2();
    if (k) chosen = k;
}

const fg_cpu_attn_kernels *fg_cpu_attn(void)
{
    pthread_once(&once, choose);
    return chosen;
}
