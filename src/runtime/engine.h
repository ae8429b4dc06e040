/*
 * engine.h — many requests served over one forward context: each step the
 * scheduler (scheduler.h) plans a batch over the paged KV cache
 * (kvcache.h), the forward runs it, and each request's own sampler picks
 * its next token.
 *
 * Sampling: a request whose sampler has no penalties is sampled by the
 * backend's sample op when its logits are not on the host (a GPU: the step
 * then downloads ids only); otherwise the logits rows are read and each
 * request's fg_sampler picks. Greedy requests use the sample op everywhere.
 *
 * Synchronous for now: the caller drives fg_engine_step. The engine owns
 * the forward context, the cache and the scheduler; it borrows the model
 * and the backend, which must outlive it. Not thread-safe.
 */
#ifndef FG_RUNTIME_ENGINE_H
#define FG_RUNTIME_ENGINE_H

#include "backend/backend.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"

typedef struct fg_engine fg_engine;

typedef struct fg_engine_params {
    int32_t kv_tokens;       /* the KV pool, in tokens (rounded up to whole blocks) */
    int32_t max_seq_tokens;  /* the longest sequence (prompt + generated) */
    int32_t max_running;     /* sequences in one step */
    int32_t max_step_tokens; /* the token budget of one step */
    int32_t max_waiting;     /* the queue bound */
} fg_engine_params;

fg_status fg_engine_init(const fg_model *m, fg_backend *be, const fg_engine_params *p, fg_engine **out);
void fg_engine_free(fg_engine *e);

/* Queues a request: prompt (copied), up to max_new tokens, stopping at eos
 * (-1: never), sampled with *sp. FG_ERR_FULL when the queue is full. */
fg_status fg_engine_submit(fg_engine *e, const int32_t *prompt, int32_t n, int32_t max_new, int32_t eos,
                           const fg_sampler_params *sp, uint64_t *id);

/* Runs one step; *n_tokens receives the tokens it computed (0: idle). */
fg_status fg_engine_step(fg_engine *e, int32_t *n_tokens);

fg_status fg_engine_info(const fg_engine *e, uint64_t id, fg_req_info *out);
fg_status fg_engine_cancel(fg_engine *e, uint64_t id);
/* Forgets a finished or cancelled request. */
void fg_engine_release(fg_engine *e, uint64_t id);

void fg_engine_kv_usage(const fg_engine *e, fg_kvcache_usage *u);

#endif
