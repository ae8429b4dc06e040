/*
 * scheduler.h — iteration-level (continuous) batching of requests over the
 * paged KV cache (kvcache.h).
 *
 * Each step the scheduler plans one batch under a token budget:
 *   1. decodes first: every running request whose known tokens are all in
 *      the cache but for its last sampled one contributes that token;
 *   2. then prefill chunks: running requests still prefilling, oldest
 *      first, then waiting requests admitted in arrival order (each first
 *      attaches the cached blocks that begin its tokens: prefix caching),
 *      each taking as many tokens as the budget left allows.
 * When a token needs a block and none is free, the newest running request
 * is preempted: its blocks are freed and it goes back to the front of the
 * queue, to be recomputed from its prompt and the tokens it generated
 * (which are kept). Admission stops at the first waiting request that does
 * not fit, so the oldest request always progresses: none starves.
 *
 * The caller runs the planned batch, samples a token for each of the plan's
 * logits rows (the last token of each sequence whose chunk reaches its last
 * known token), and commits them: requests that reach their token limit or
 * their end token finish and free their blocks. Other ends are the
 * caller's to decide between steps (fg_sched_finish, fg_sched_cancel).
 *
 * Requests are identified by the ids fg_sched_submit returns. Everything is
 * allocated at init (the queue is bounded: submit says FG_ERR_FULL) but a
 * request's own token arrays at submit. Not thread-safe: the engine thread
 * owns it, and calls cancel between steps.
 */
#ifndef FG_RUNTIME_SCHEDULER_H
#define FG_RUNTIME_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "forge.h"
#include "runtime/kvcache.h"

typedef struct fg_sched fg_sched;

typedef struct fg_sched_params {
    int32_t max_step_tokens; /* the token budget of one step */
    int32_t max_running;     /* sequences in one step */
    int32_t max_waiting;     /* the queue bound */
} fg_sched_params;

typedef enum fg_req_state {
    FG_REQ_WAITING,
    FG_REQ_PREFILLING,
    FG_REQ_DECODING,
    FG_REQ_FINISHED,
    FG_REQ_CANCELLED,
    FG_REQ_FAILED, /* the step that ran it failed */
} fg_req_state;

typedef struct fg_req_info {
    fg_req_state state;
    int32_t n_prompt, n_gen;   /* tokens of the prompt; generated so far */
    int32_t n_cached;          /* prompt tokens found in the prefix cache at its (last) admission */
    int32_t n_preempted;       /* times it lost its blocks */
    const int32_t *gen;        /* the generated tokens (valid until it is released) */
} fg_req_info;

/* One planned step, in the shape the backend's batch takes: token i is
 * ids[i] at position pos[i] of batch sequence seq[i], written to KV slot
 * slot[i]; block_tables holds n_seqs rows of max_blocks. Logits row r is
 * token logits_token[r]'s, to be sampled for request logits_req[r]. The
 * arrays belong to the scheduler, valid until the next plan. */
typedef struct fg_sched_batch {
    int32_t n_tokens;
    const int32_t *ids, *pos, *seq, *slot;
    int32_t n_seqs, max_blocks;
    const int32_t *block_tables;
    const uint64_t *seq_req; /* (n_seqs) the request of each batch sequence */
    int32_t n_logits;
    const int32_t *logits_token;
    const uint64_t *logits_req;
} fg_sched_batch;

fg_status fg_sched_init(const fg_sched_params *p, fg_kvcache *kv, fg_sched **out);
void fg_sched_free(fg_sched *s);

/* Queues a request: the prompt (n >= 1 tokens, copied), at most max_new
 * tokens to generate (>= 1), stopping early at eos (or never: -1). */
fg_status fg_sched_submit(fg_sched *s, const int32_t *prompt, int32_t n, int32_t max_new, int32_t eos, uint64_t *id);

/* Request id (waiting, never yet admitted) needs the logits of every prompt
 * token (prompt logprobs): it never attaches cached blocks, and its prompt
 * chunks, together with those of every such request in a step, hold at most
 * FG_SCHED_PROMPT_ROWS tokens. FG_ERR_NOT_FOUND if it is not waiting. */
enum { FG_SCHED_PROMPT_ROWS = 64 };
fg_status fg_sched_want_prompt_rows(fg_sched *s, uint64_t id);

/* Cancels a waiting or running request; a running one frees its blocks
 * now. FG_ERR_NOT_FOUND for an unknown or already released id. */
fg_status fg_sched_cancel(fg_sched *s, uint64_t id);

/* Finishes a waiting or running request now, as its end token would: the
 * caller decided its output is complete (another end-of-generation token,
 * a stop string). Its blocks are freed now. FG_ERR_NOT_FOUND as cancel. */
fg_status fg_sched_finish(fg_sched *s, uint64_t id);

/* Plans the next step into *b (n_tokens = 0 when nothing is runnable). A
 * plan must be committed before the next one. */
fg_status fg_sched_plan(fg_sched *s, fg_sched_batch *b);

/* The sampled token of each of the plan's logits rows. */
void fg_sched_commit(fg_sched *s, const int32_t *sampled);

/* The planned step could not run: its requests fail and free their blocks. */
void fg_sched_fail(fg_sched *s);

fg_status fg_sched_info(const fg_sched *s, uint64_t id, fg_req_info *out);

/* Forgets a finished, cancelled or failed request (its id becomes unknown). */
void fg_sched_release(fg_sched *s, uint64_t id);

int32_t fg_sched_n_waiting(const fg_sched *s);
int32_t fg_sched_n_running(const fg_sched *s);

#endif
