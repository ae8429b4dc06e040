/*
 * qmix.h — which type each tensor gets when a model is quantized: the file
 * types (mixes) of llama.cpp's quantize and its per-tensor rules.
 *
 * A mix names a default type and a general.file_type value. The rules then
 * keep some tensors as they are (1-D tensors, norms, and the others llama.cpp
 * never quantizes), give output.weight (or token_embd.weight when the model
 * ties it to the output) Q6_K, give some attn_v and ffn_down layers more bits
 * in the _M mixes, and fall back to a type whose block fits a row whose length
 * is not a multiple of 256 (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, else
 * F16). Written from llama.cpp's src/llama-quant.cpp (tensor categories,
 * llama_tensor_get_type, the shape fallback), for the mixes forge writes;
 * tests/unit/test_quantize.c checks the choices against llama.cpp's own on
 * synthetic models (tools/gen_quantize_goldens.py).
 */
#ifndef FG_GGUF_QMIX_H
#define FG_GGUF_QMIX_H

#include <stdbool.h>
#include <stdint.h>

#include "forge.h"
#include "gguf/gguf.h"

typedef struct fg_qmix {
    const char *name; /* "Q4_K_M" */
    uint32_t ftype;   /* llama.cpp's llama_ftype, written as general.file_type */
    fg_type base;     /* the type of a tensor no rule singles out */
} fg_qmix;

/* The mix called name (case-insensitive; "Q4_K" and "Q5_K" are llama.cpp's
 * aliases of Q4_K_M and Q5_K_M), or NULL. */
const fg_qmix *fg_qmix_find(const char *name);

/* The accepted names, comma-separated, for messages and --help. */
const char *fg_qmix_names(void);

/* Chooses the output type of every tensor of g: out[i] for g->tensors[i].
 * A tensor that is not quantized keeps its type. pure: every quantized
 * tensor gets the mix's base type (llama.cpp's --pure), shape fallbacks
 * still applying. Fails, naming the tensor, where no type fits a row. */
fg_status fg_qmix_plan(const fg_gguf *g, const fg_qmix *mix, bool pure, fg_type *out);

/* True if llama.cpp's rules would quantize this tensor at all (2-D or more,
 * a weight, not a norm, ...). */
bool fg_qmix_allows(const fg_gguf_tensor *t);

#endif
