/*
 * runner.h — many requests served over one forward context: each step the
 * scheduler (scheduler.h) plans a batch over the paged KV cache
 * (kvcache.h), the forward runs it, and each request's own sampler picks
 * its next token.
 *
 * Sampling: a request whose sampler has no penalties is sampled by the
 * backend's sample op when its logits are not on the host (a GPU: the step
 * then downloads ids only); otherwise the logits rows are read and each
 * request's fg_sampler picks. Greedy requests use the sample op everywhere.
 *
 * Synchronous: the caller (the engine thread) drives fg_runner_step. It owns
 * the forward context, the cache and the scheduler; it borrows the model
 * and the backend, which must outlive it. Not thread-safe.
 */
#ifndef FG_RUNTIME_RUNNER_H
#define FG_RUNTIME_RUNNER_H

#include "backend/backend.h"
#include "model/forward.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"

typedef struct fg_runner fg_runner;

typedef struct fg_runner_params {
    int32_t kv_tokens;       /* the KV pool, in tokens (rounded up to whole blocks) */
    int32_t max_seq_tokens;  /* the longest sequence (prompt + generated) */
    int32_t max_running;     /* sequences in one step */
    int32_t max_step_tokens; /* the token budget of one step */
    int32_t max_waiting;     /* the queue bound */
} fg_runner_params;

/* A runner with an F16 KV pool (llama.cpp's default). fg_runner_init_kv
 * takes the pool's type (F16 or F32) and reports the weights' placement to
 * progress (may be NULL), as fg_forward_init does. */
fg_status fg_runner_init(const fg_model *m, fg_backend *be, const fg_runner_params *p, fg_runner **out);
fg_status fg_runner_init_kv(const fg_model *m, fg_backend *be, const fg_runner_params *p, fg_type kv_type,
                            fg_forward_progress progress, void *progress_ctx, fg_runner **out);
void fg_runner_free(fg_runner *e);

/* Queues a request: prompt (copied), up to max_new tokens, stopping at eos
 * (-1: never), sampled with *sp. FG_ERR_FULL when the queue is full. */
fg_status fg_runner_submit(fg_runner *e, const int32_t *prompt, int32_t n, int32_t max_new, int32_t eos,
                           const fg_sampler_params *sp, uint64_t *id);

/* Runs one step; *n_tokens receives the tokens it computed (0: idle). */
fg_status fg_runner_step(fg_runner *e, int32_t *n_tokens);

/* Asks for the log-probabilities of request id's tokens from now on, with
 * n_top (0..FG_MAX_TOP_LOGPROBS) alternatives: its rows are then sampled on
 * the host. fg_runner_last_logprob gives those of its latest token
 * (FG_ERR_NOT_FOUND before the first, or for a request that did not ask). */
fg_status fg_runner_want_logprobs(fg_runner *e, uint64_t id, int32_t n_top);
fg_status fg_runner_last_logprob(const fg_runner *e, uint64_t id, fg_token_logprob *out);

/* Asks for the log-probabilities of request id's prompt tokens, each given
 * those before it, with n_top (0..FG_MAX_TOP_LOGPROBS) alternatives: the
 * request must be waiting for its first admission. It then attaches no
 * cached prefix, and its prefill steps read logits rows for its prompt
 * positions on the host (at most FG_SCHED_PROMPT_ROWS a step, for all such
 * requests together). fg_runner_prompt_logprobs gives the n_prompt - 1
 * entries (prompt tokens 1.., the first having no context) once its first
 * token is sampled; valid until release. */
fg_status fg_runner_want_prompt_logprobs(fg_runner *e, uint64_t id, int32_t n_top);
fg_status fg_runner_prompt_logprobs(const fg_runner *e, uint64_t id, const fg_token_logprob **out, int32_t *n);

fg_status fg_runner_info(const fg_runner *e, uint64_t id, fg_req_info *out);
fg_status fg_runner_cancel(fg_runner *e, uint64_t id);
/* Finishes a request now (fg_sched_finish): the caller found its end (an
 * end-of-generation token other than its eos, a stop string). */
fg_status fg_runner_finish(fg_runner *e, uint64_t id);
/* Forgets a finished or cancelled request. */
void fg_runner_release(fg_runner *e, uint64_t id);

void fg_runner_kv_usage(const fg_runner *e, fg_kvcache_usage *u);
/* Requests running (admitted, holding blocks) and waiting (queued or
 * preempted). */
void fg_runner_counts(const fg_runner *e, int32_t *running, int32_t *waiting);

#endif
