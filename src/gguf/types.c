/*
 * types.c — the ggml type table (block geometry per on-disk type id).
 */
#include "gguf/types.h"

#include <strings.h>

static const fg_type_info fg_types[FG_TYPE_COUNT] = {
    [FG_TYPE_F32] = {"F32", 1, 4},
    [FG_TYPE_F16] = {"F16", 1, 2},
    [FG_TYPE_Q4_0] = {"Q4_0", 32, 18},
    [FG_TYPE_Q4_1] = {"Q4_1", 32, 20},
    [FG_TYPE_Q5_0] = {"Q5_0", 32, 22},
    [FG_TYPE_Q5_1] = {"Q5_1", 32, 24},
    [FG_TYPE_Q8_0] = {"Q8_0", 32, 34},
    [FG_TYPE_Q8_1] = {"Q8_1", 32, 40},
    [FG_TYPE_Q2_K] = {"Q2_K", 256, 84},
    [FG_TYPE_Q3_K] = {"Q3_K", 256, 110},
    [FG_TYPE_Q4_K] = {"Q4_K", 256, 144},
    [FG_TYPE_Q5_K] = {"Q5_K", 256, 176},
    [FG_TYPE_Q6_K] = {"Q6_K", 256, 210},
    [FG_TYPE_Q8_K] = {"Q8_K", 256, 292},
    [FG_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66},
    [FG_TYPE_IQ2_XS] = {"IQ2_XS", 256, 74},
    [FG_TYPE_IQ3_XXS] = {"IQ3_XXS", 256, 98},
    [FG_TYPE_IQ1_S] = {"IQ1_S", 256, 50},
    [FG_TYPE_IQ4_NL] = {"IQ4_NL", 32, 18},
    [FG_TYPE_IQ3_S] = {"IQ3_S", 256, 110},
    [FG_TYPE_IQ2_S] = {"IQ2_S", 256, 82},
    [FG_TYPE_IQ4_XS] = {"IQ4_XS", 256, 136},
    [FG_TYPE_I8] = {"I8", 1, 1},
    [FG_TYPE_I16] = {"I16", 1, 2},
    [FG_TYPE_I32] = {"I32", 1, 4},
    [FG_TYPE_I64] = {"I64", 1, 8},
    [FG_TYPE_F64] = {"F64", 1, 8},
    [FG_TYPE_IQ1_M] = {"IQ1_M", 256, 56},
    [FG_TYPE_BF16] = {"BF16", 1, 2},
    [FG_TYPE_TQ1_0] = {"TQ1_0", 256, 54},
    [FG_TYPE_TQ2_0] = {"TQ2_0", 256, 66},
    [FG_TYPE_MXFP4] = {"MXFP4", 32, 17},
    [FG_TYPE_NVFP4] = {"NVFP4", 64, 36},
    [FG_TYPE_Q1_0] = {"Q1_0", 128, 18},
};

const fg_type_info *fg_type_get(uint32_t t)
{
    if (t >= FG_TYPE_COUNT || fg_types[t].name == NULL) return NULL;
    return &fg_types[t];
}

const char *fg_type_name(uint32_t t)
{
    const fg_type_info *ti = fg_type_get(t);
    return ti ? ti->name : "?";
}

bool fg_type_from_name(const char *name, fg_type *out)
{
    for (uint32_t t = 0; t < FG_TYPE_COUNT; t++) {
        if (fg_types[t].name && strcasecmp(fg_types[t].name, name) == 0) {
            *out = (fg_type)t;
            return true;
        }
    }
    return false;
}

size_t fg_type_row_size(fg_type t, int64_t n)
{
    const fg_type_info *ti = fg_type_get((uint32_t)t);
    return ti ? (size_t)(n / ti->block_size) * ti->type_size : 0;
}
