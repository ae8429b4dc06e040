/*
 * load.h — what opening a model to run it takes: the backend a device name
 * stands for and the default context length, shared by the engine
 * (engine.c, behind fg_engine_open) and the commands that still drive one
 * sequence themselves (forge perplexity, forge bench through cli/engine.c);
 * and the engine's KV pool size.
 */
#ifndef FG_RUNTIME_LOAD_H
#define FG_RUNTIME_LOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/model.h"

/* The default context is the model's training context, at most this: longer
 * contexts cost KV memory that most runs never use. */
enum { FG_LOAD_CTX_CAP = 4096 };

/* The model's training context, capped at FG_LOAD_CTX_CAP (that cap when
 * the file does not say). */
int32_t fg_load_default_ctx(const fg_model *m);

/* The largest KV pool, in tokens: a tiny model on a large GPU would
 * otherwise get hundreds of millions of slots, whose bookkeeping (host)
 * and per-step block-table room (device) grow with the block count. A real
 * model's pool stays below it (an 8B model: about 0.5M tokens on 80 GB). */
#define FG_LOAD_MAX_POOL_TOKENS (1 << 22)

/* The KV pool, in tokens, for m on be before its weights are placed (the
 * forward places them and allocates the pool in one call): kv_tokens if it
 * is > 0; else kv_fraction of the free memory less what the weights (on a
 * GPU; the CPU maps them) and the activations of a step of `step` tokens
 * take, at most cap. F16 or F32 (kv_f32) entries. kv_fraction leaves room
 * for what the estimate misses. Fails, with the numbers and what to change,
 * when the pool would not hold one sequence of ctx tokens. */
fg_status fg_load_pool_tokens(const fg_model *m, fg_backend *be, int64_t kv_tokens, float kv_fraction,
                              bool kv_f32, int32_t ctx, int64_t cap, int32_t step, int64_t *out);

#endif
