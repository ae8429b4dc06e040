/*
 * mm_avx2.c — the matmul kernels for x86 CPUs with AVX2, FMA and F16C
 * (Haswell and later, Zen): the code of mm_x86.h with the AVX2 integer
 * multiply-adds (vpmaddubsw + vpmaddwd). Built with -mavx2 -mfma -mf16c by
 * the Makefile's %_avx2.o rule and used only after cpuid says so; without
 * those flags (another architecture) the file is empty and the getter
 * returns NULL.
 */
#include "backend/cpu/mm_kernels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define FG_X86_VNNI 0
#include "backend/cpu/mm_x86.h"

static const fg_mm_kernels avx2 = {
    .isa = "avx2",
    .quant_q8_1 = quant_q8_1_x86,
    .quant_q8_k = quant_q8_k_x86,
    .dot = FG_MM_DOT_TABLE,
};

const fg_mm_kernels *fg_mm_kernels_avx2(void)
{
    return &avx2;
}
#else
const fg_mm_kernels *fg_mm_kernels_avx2(void)
{
    return NULL;
}
#endif
