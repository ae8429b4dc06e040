/*
 * types.h — the ggml tensor types a GGUF file may name, with their block
 * geometry. The GGUF validator knows every type so that any well-formed file
 * can be inspected (`forge info`); whether forge can compute with a type is a
 * separate question that quant.h answers (fg_quant_supported).
 */
#ifndef FG_GGUF_TYPES_H
#define FG_GGUF_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Values are the on-disk ggml type ids; gaps are ids ggml has retired. */
typedef enum fg_type {
    FG_TYPE_F32 = 0,
    FG_TYPE_F16 = 1,
    FG_TYPE_Q4_0 = 2,
    FG_TYPE_Q4_1 = 3,
    FG_TYPE_Q5_0 = 6,
    FG_TYPE_Q5_1 = 7,
    FG_TYPE_Q8_0 = 8,
    FG_TYPE_Q8_1 = 9,
    FG_TYPE_Q2_K = 10,
    FG_TYPE_Q3_K = 11,
    FG_TYPE_Q4_K = 12,
    FG_TYPE_Q5_K = 13,
    FG_TYPE_Q6_K = 14,
    FG_TYPE_Q8_K = 15,
    FG_TYPE_IQ2_XXS = 16,
    FG_TYPE_IQ2_XS = 17,
    FG_TYPE_IQ3_XXS = 18,
    FG_TYPE_IQ1_S = 19,
    FG_TYPE_IQ4_NL = 20,
    FG_TYPE_IQ3_S = 21,
    FG_TYPE_IQ2_S = 22,
    FG_TYPE_IQ4_XS = 23,
    FG_TYPE_I8 = 24,
    FG_TYPE_I16 = 25,
    FG_TYPE_I32 = 26,
    FG_TYPE_I64 = 27,
    FG_TYPE_F64 = 28,
    FG_TYPE_IQ1_M = 29,
    FG_TYPE_BF16 = 30,
    FG_TYPE_TQ1_0 = 34,
    FG_TYPE_TQ2_0 = 35,
    FG_TYPE_MXFP4 = 39,
    FG_TYPE_NVFP4 = 40,
    FG_TYPE_Q1_0 = 41,
    FG_TYPE_COUNT = 42
} fg_type;

typedef struct fg_type_info {
    const char *name;     /* "Q4_K"; NULL for ids that are not a type */
    uint32_t block_size;  /* elements per block */
    uint32_t type_size;   /* bytes per block */
} fg_type_info;

/* Geometry of type id t, or NULL if t is not a known ggml type. */
const fg_type_info *fg_type_get(uint32_t t);

/* Name of a type, "?" if unknown. */
const char *fg_type_name(uint32_t t);

/* Looks a type up by name (case-insensitive); false if unknown. */
bool fg_type_from_name(const char *name, fg_type *out);

/* Bytes of a row of n elements (n a multiple of the block size). */
size_t fg_type_row_size(fg_type t, int64_t n);

#endif
