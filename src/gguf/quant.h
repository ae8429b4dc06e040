/*
 * quant.h — the scalar reference for ggml's block formats.
 *
 * For each supported type: dequantize a row to f32, and the dot product of a
 * quantized row with an f32 vector. These are the reference every SIMD and GPU
 * kernel is tested against, so they favour clarity over speed and follow the
 * formats' definitions exactly (bit-exact against the `gguf` Python package).
 *
 * Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K,
 * Q5_K, Q6_K, MXFP4.
 */
#ifndef FG_GGUF_QUANT_H
#define FG_GGUF_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf/types.h"

/* True if fg_dequant_row and fg_vec_dot implement type t. */
bool fg_quant_supported(fg_type t);

/* Dequantizes n elements (a multiple of t's block size) from src into dst. */
void fg_dequant_row(fg_type t, const void *src, float *dst, int64_t n);

/* sum_i dequant(w)[i] * x[i] over n elements (a multiple of the block size),
 * accumulated in double so that it is a reference, not a kernel. */
double fg_vec_dot(fg_type t, const void *w, const float *x, int64_t n);

/* MXFP4's E2M1 codes, doubled so that they are integers (0, 1, 2, 3, 4, 6,
 * 8, 12 and their negatives; index = the 4-bit code), and its E8M0 block
 * exponent e as the matching halved scale 2^(e - 128): element = code * scale,
 * exactly. */
extern const int8_t fg_mxfp4_codes[16];
float fg_e8m0_half(uint8_t e);

/* IEEE half and bfloat16 to float (exact; NaN and Inf preserved). */
float fg_f16_to_f32(uint16_t h);
float fg_bf16_to_f32(uint16_t h);
/* Round-to-nearest-even conversions, as numpy's astype(float16) does. */
uint16_t fg_f32_to_f16(float f);
uint16_t fg_f32_to_bf16(float f);

#endif
