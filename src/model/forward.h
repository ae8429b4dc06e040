/*
 * forward.h — the execution plan: a model's forward pass as a sequence of
 * backend ops, layer by layer.
 *
 * fg_forward_init places the weights on a backend (CPU: views into the mmap)
 * and allocates everything a step needs for batches of up to n_batch tokens
 * and a KV pool of n_ctx tokens; fg_forward_step then allocates nothing.
 *
 * Ownership: the fg_forward borrows the model and the backend (both must
 * outlive it) and owns nothing on the heap but its own tables; the buffers it
 * allocates belong to the backend.
 */
#ifndef FG_MODEL_FORWARD_H
#define FG_MODEL_FORWARD_H

#include "backend/backend.h"
#include "model/model.h"
#include "model/weights.h"

enum { FG_KV_BLOCK_SIZE = 16 };

typedef struct fg_forward fg_forward;

/* Checks the model has every tensor its architecture needs, with the shapes
 * its hyperparameters imply, and prepares a backend to run it with a KV cache
 * of kv_type (F16, as llama.cpp's default, or F32). n_ctx is rounded up to a
 * whole number of KV blocks. Errors name the tensor. progress may be NULL. */
/* fg_forward_progress: model/weights.h. */

fg_status fg_forward_init(const fg_model *m, fg_backend *be, int32_t n_ctx, int32_t n_batch, fg_type kv_type,
                          fg_forward_progress progress, void *progress_ctx, fg_forward **out);
void fg_forward_free(fg_forward *f);

int32_t fg_forward_n_ctx(const fg_forward *f);
int32_t fg_forward_n_batch(const fg_forward *f);

/* Runs one batch (at most n_batch tokens). Logits of tokens logits_from ..
 * n_tokens-1 are written to logits, n_vocab floats per token, in order;
 * logits_from = n_tokens asks for none. */
fg_status fg_forward_step(fg_forward *f, const fg_batch *b, int32_t logits_from, float *logits);

/* The same step ending in sampling on the backend: b->sample holds the
 * parameters of each logits row (n_sample = n_tokens - logits_from), and ids
 * receives the sampled tokens; only the ids leave the device. */
fg_status fg_forward_step_sample(fg_forward *f, const fg_batch *b, int32_t logits_from, int32_t *ids);

/* Runs one batch whose logits rows are b->out_rows (n_out of them,
 * ascending token indices; any tokens, e.g. the last of each sequence):
 * their logits go to logits (n_out x n_vocab floats), or, with ids instead,
 * they are sampled on the backend with b->sample (n_sample = n_out) and
 * only the ids come back. Exactly one of logits and ids is given. */
fg_status fg_forward_run(fg_forward *f, const fg_batch *b, float *logits, int32_t *ids);

/* Whether the backend's logits are in host memory anyway (the CPU): its
 * sample op then takes greedy rows only, and a sampler reads the logits. */
bool fg_forward_logits_on_host(const fg_forward *f);

#endif
