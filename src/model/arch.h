/*
 * arch.h — one table entry per architecture forge runs: what its forward pass
 * needs beyond the shared llama-style plan (RoPE pairing, optional pieces).
 * Tensor names follow llama.cpp's GGUF convention (blk.N.attn_q.weight, ...)
 * for every architecture.
 */
#ifndef FG_MODEL_ARCH_H
#define FG_MODEL_ARCH_H

#include <stdbool.h>

#include "backend/backend.h"

typedef struct fg_arch {
    const char *name;   /* general.architecture */
    fg_rope_mode rope;  /* how q/k pairs are rotated */
    bool qk_norm;       /* RMSNorm of each q and k head before RoPE (attn_q_norm, attn_k_norm) */
    bool fused_qkv;     /* q, k, v in one attn_qkv.weight (and its bias in attn_qkv.bias),
                         * split into row ranges at load; every architecture takes a fused
                         * tensor when the file has one */
    bool fused_gate_up; /* gate and up in one ffn_up.weight (2 n_ff rows, gate first) */
    bool post_norms;    /* each sublayer's output RMS-normalized before its residual add
                         * (post_attention_norm, post_ffw_norm: "sandwich" norms) */
    bool geglu;         /* FFN gelu_tanh(gate) * up instead of silu(gate) * up */
    bool embed_scale;   /* embeddings times sqrt(n_embd) */
    int swa_pattern;    /* > 0: of each swa_pattern layers the first swa_pattern - 1 attend in the
                         * sliding window with the local RoPE base, the last globally */
} fg_arch;

/* The entry for general.architecture = name, or NULL if forge does not run
 * it. */
const fg_arch *fg_arch_find(const char *name);

/* The supported names, comma-separated, for error messages. */
const char *fg_arch_names(void);

/* The entry for name as fg_arch_find, or FG_ERR_UNSUPPORTED with the message
 * a user sees for a model forge cannot run: it names the file (path), the
 * architecture and the ones forge runs. */
fg_status fg_arch_get(const char *path, const char *name, const fg_arch **out);

#endif
