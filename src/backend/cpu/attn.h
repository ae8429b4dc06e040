/*
 * attn.h — the inner loops of the CPU backend's attention: the scores of one
 * query against a run of keys, and the probability-weighted sum of a run of
 * values. Keys and values are f32 rows (the cache's F16 rows widened once per
 * run of queries by cpu.c).
 *
 * Every version computes the same sums in the same order, so they agree bit
 * for bit: a score is eight running lane sums over the head dimension (lane
 * k takes elements d with d % 8 == k, in order), added as
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), then the tail; an output
 * element is the sum over keys in key order. There is no fused multiply-add.
 */
#ifndef FG_BACKEND_CPU_ATTN_H
#define FG_BACKEND_CPU_ATTN_H

#include <stdint.h>

typedef struct fg_cpu_attn_kernels {
    const char *isa;
    /* score[j] = q . k[j * ldk .. + dk) for j < n. */
    void (*scores)(const float *q, const float *k, int64_t ldk, int32_t dk, int32_t n, float *score);
    /* o[d] = sum over j < n of p[j] * v[j * ldv + d] for d < dv. */
    void (*weighted_sum)(const float *p, const float *v, int64_t ldv, int32_t dv, int32_t n, float *o);
} fg_cpu_attn_kernels;

/* The fastest version this CPU runs (chosen once). */
const fg_cpu_attn_kernels *fg_cpu_attn(void);
/* The plain C version, the reference the others match. */
const fg_cpu_attn_kernels *fg_cpu_attn_generic(void);
/* The AVX2 version, or NULL when this build or CPU lacks it. */
const fg_cpu_attn_kernels *fg_cpu_attn_avx2(void);

#endif
