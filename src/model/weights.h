/*
 * weights.h — a model's weights placed on a backend: each architecture's
 * tensors (model/arch.h) found in the file by name, their shapes checked
 * against the hyperparameters, and handed to the backend as neutral
 * descriptors (backend.h's fg_weight_src), fused ones split by rows.
 *
 * Ownership: the tensors belong to the backend (CPU: views into the mmap,
 * which the model keeps); fg_weights owns only its layer table.
 */
#ifndef FG_MODEL_WEIGHTS_H
#define FG_MODEL_WEIGHTS_H

#include "backend/backend.h"
#include "model/arch.h"
#include "model/model.h"

/* Called after each weight is placed with the bytes placed so far and the
 * model's total tensor bytes (a GPU upload of a large model takes seconds). */
typedef void (*fg_forward_progress)(void *ctx, uint64_t done, uint64_t total);

typedef struct fg_layer_weights {
    fg_tensor attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
    fg_tensor bq, bk, bv; /* data NULL when the file has no bias */
    fg_tensor q_norm, k_norm; /* (head_dim_k) per-head norms, qk_norm architectures */
    fg_tensor post_attn_norm, post_ffn_norm; /* post_norms architectures */
} fg_layer_weights;

typedef struct fg_weights {
    fg_tensor tok_embd, out_norm, output; /* output is tok_embd where the file ties them */
    fg_tensor rope_freqs;                 /* (n_rot / 2) F32, or data NULL */
    fg_layer_weights *layers;             /* n_layer */
} fg_weights;

/* Places every weight m's architecture needs on be, checking each shape;
 * errors name the file and the tensor. progress may be NULL. */
fg_status fg_weights_load(const fg_model *m, const fg_arch *arch, fg_backend *be, fg_forward_progress progress,
                          void *progress_ctx, fg_weights *out);
void fg_weights_free(fg_weights *w);

#endif
