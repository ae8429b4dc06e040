/*
 * arch.c — the architecture table (see arch.h). Issue-by-issue, entries are
 * added here and the plan in forward.c grows the options they need.
 */
#include "model/arch.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "base/err.h"

static const fg_arch archs[] = {
    /* Llama 1-3, Mistral (with its optional sliding window), SmolLM:
     * llama.cpp's converter permutes q/k so that RoPE rotates adjacent
     * pairs. */
    {.name = "llama", .rope = FG_ROPE_NORMAL},
    /* Qwen2 / Qwen2.5: q/k/v biases (optional tensors of the shared plan),
     * NeoX RoPE (q/k kept in HF's order). */
    {.name = "qwen2", .rope = FG_ROPE_NEOX},
    /* Qwen3: no biases; each q and k head RMS-normalized before RoPE. */
    {.name = "qwen3", .rope = FG_ROPE_NEOX, .qk_norm = true},
    /* Phi-3: fused q/k/v and gate/up weights, NeoX RoPE. */
    {.name = "phi3", .rope = FG_ROPE_NEOX, .fused_qkv = true, .fused_gate_up = true},
    /* GLM-4-0414: q/k/v biases, partial rotary (rope.dimension_count, pairs
     * adjacent as HF's interleaved GLM rotary), fused gate/up, sandwich
     * norms. */
    {.name = "glm4", .rope = FG_ROPE_NORMAL, .fused_gate_up = true, .post_norms = true},
    /* GLM-4 (ChatGLM, GLM-4-9B-chat): q/k/v fused with a bias (or, from the
     * HF-format checkpoint, separate with biases), partial rotary with
     * adjacent pairs, few KV heads, fused gate/up. */
    {.name = "chatglm", .rope = FG_ROPE_NORMAL, .fused_qkv = true, .fused_gate_up = true},
    /* Gemma 3: GeGLU, embeddings scaled by sqrt(n_embd), pre- and post-norms
     * (the file's norms already hold Gemma's 1 + w), QK-norm, five
     * sliding-window layers (local RoPE base) to one global, tied output. */
    {.name = "gemma3", .rope = FG_ROPE_NEOX, .qk_norm = true, .post_norms = true, .geglu = true, .embed_scale = true,
     .swa_pattern = 6},
};

const fg_arch *fg_arch_find(const char *name)
{
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (name && strcmp(archs[i].name, name) == 0) return &archs[i];
    return NULL;
}

/* The table's names joined by ", ", built once from the table so that the
 * list in messages cannot drift from it. */
static char arch_names[256];
static pthread_once_t arch_names_once = PTHREAD_ONCE_INIT;

static void join_arch_names(void)
{
    size_t at = 0;
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        at += (size_t)snprintf(arch_names + at, sizeof arch_names - at, "%s%s", i ? ", " : "", archs[i].name);
    FG_ASSERT(at < sizeof arch_names);
}

const char *fg_arch_names(void)
{
    pthread_once(&arch_names_once, join_arch_names);
    return arch_names;
}

fg_status fg_arch_get(const char *path, const char *name, const fg_arch **out)
{
    *out = fg_arch_find(name);
    if (*out) return FG_OK;
    return fg_err_set(FG_ERR_UNSUPPORTED, "%s: architecture '%s' is not supported (forge runs: %s)", path, name,
                      fg_arch_names());
}
