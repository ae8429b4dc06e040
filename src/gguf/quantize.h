/*
 * quantize.h — f32 rows to ggml's block formats: the quantizing half of the
 * scalar reference (quant.h is the dequantizing half).
 *
 * Each quantizer is ggml's reference algorithm, the one llama.cpp's quantize
 * uses when it has no importance matrix (quantize_row_*_ref): the same float32
 * operations in the same order, so the output is bit-identical to ggml's and,
 * for the types it implements (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0), to the `gguf`
 * Python package's. tests/unit/test_quantize.c checks both.
 *
 * Supported targets: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
 * Q5_K, Q6_K.
 */
#ifndef FG_GGUF_QUANTIZE_H
#define FG_GGUF_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf/types.h"

/* True if fg_quantize_row can produce type t. */
bool fg_quantize_supported(fg_type t);

/* Quantizes n floats (a multiple of t's block size) from x into
 * fg_type_row_size(t, n) bytes at dst. Input must be finite: a NaN or Inf
 * gives unspecified (but memory-safe) codes, as in ggml. */
void fg_quantize_row(fg_type t, const float *x, void *dst, int64_t n);

#endif
