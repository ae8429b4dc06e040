/*
 * f16.h — rows of IEEE half floats to and from f32 for the CPU backend (the
 * F16 KV cache), with F16C where the CPU has it. Both directions round to
 * nearest even, exactly as the scalar fg_f32_to_f16 / fg_f16_to_f32 in
 * gguf/quant.h, which they must match bit for bit.
 */
#ifndef FG_BACKEND_CPU_F16_H
#define FG_BACKEND_CPU_F16_H

#include <stdint.h>

void fg_cpu_f16_to_f32_row(const uint16_t *src, float *dst, int64_t n);
void fg_cpu_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n);

/* The F16C versions, or NULL when this build or CPU lacks them. */
typedef struct fg_cpu_f16_kernels {
    void (*to_f32)(const uint16_t *src, float *dst, int64_t n);
    void (*to_f16)(const float *src, uint16_t *dst, int64_t n);
} fg_cpu_f16_kernels;
const fg_cpu_f16_kernels *fg_cpu_f16_kernels_f16c(void);

#endif
