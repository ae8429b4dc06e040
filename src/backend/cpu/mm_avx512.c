/*
 * mm_avx512.c — the matmul kernels for x86 CPUs with AVX-512 F/BW/VL and
 * VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later).
 *
 * The kernels are mm_x86.h's 256-bit code with VNNI's vpdpbusd (u8 x s8
 * products summed in fours into i32, one instruction where AVX2 needs three)
 * and vpdpwssd, and Q5's fifth bits expanded from a mask register: 15-30%
 * faster per block than AVX2 on Zen 4 (bench/NOTES.md). 256-bit vectors keep
 * one 32-element block per register, the natural unit of every format. A
 * 512-bit version of the float kernels (F32/F16/BF16, masked tails) measured
 * half the speed of the 256-bit ones on Zen 4 and was dropped. BF16 weights
 * are widened exactly (a shift) and multiplied with the f32 activations;
 * vdpbf16ps would need the activations rounded to bf16, an error of up to
 * 2^-9 per element, which the F32/F16/BF16 error budget (1e-5) does not
 * allow.
 *
 * Built with the AVX-512 flags by the Makefile's %_avx512.o rule and used
 * only after cpuid (and the OS's saving of ZMM state) says so; without those
 * flags the file is empty and the getter returns NULL.
 */
#include "backend/cpu/mm_kernels.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && \
    defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define FG_X86_VNNI 1
#include "backend/cpu/mm_x86.h"

static const fg_mm_kernels avx512 = {
    .isa = "avx512vnni",
    .quant_q8_1 = quant_q8_1_x86,
    .quant_q8_k = quant_q8_k_x86,
    .dot = FG_MM_DOT_TABLE,
};

const fg_mm_kernels *fg_mm_kernels_avx512(void)
{
    return &avx512;
}
#else
const fg_mm_kernels *fg_mm_kernels_avx512(void)
{
    return NULL;
}
#endif
