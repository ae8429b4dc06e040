/*
 * session.h — one sequence on one forward context: feed it tokens (a prompt
 * is prefilled in batches of up to n_batch tokens), read the logits of the
 * last one. The KV blocks of the sequence are the pool's first ones in
 * order, so position p lives in slot p.
 *
 * This is the single-stream path (forge run, chat, perplexity); the serving
 * runtime will schedule many sequences over the same forward context.
 */
#ifndef FG_RUNTIME_SESSION_H
#define FG_RUNTIME_SESSION_H

#include "model/forward.h"

typedef struct fg_session fg_session;

fg_status fg_session_init(fg_forward *f, int32_t n_vocab, fg_session **out);
void fg_session_free(fg_session *s);

/* Appends n tokens to the sequence and runs them; afterwards
 * fg_session_logits holds the logits after the last one. Fails with a clear
 * message, changing nothing, if they do not fit in the context. */
fg_status fg_session_eval(fg_session *s, const int32_t *ids, int32_t n);

/* Like fg_session_eval, but the step ends in sampling on the backend with
 * *row (backend.h): *next is the token after the last one, and only that id
 * leaves the device (a GPU downloads 4 bytes instead of the logits).
 * fg_session_logits is not updated. n >= 1. A backend whose logits are on
 * the host (fg_session_logits_on_host) samples greedy rows only. */
fg_status fg_session_eval_sample(fg_session *s, const int32_t *ids, int32_t n, const fg_sample_row *row,
                                 int32_t *next);
bool fg_session_logits_on_host(const fg_session *s);

/* Like fg_session_eval, but calls fn with the logits after every token
 * (index i of ids, n_vocab floats), batch by batch: for perplexity. */
fg_status fg_session_eval_all(fg_session *s, const int32_t *ids, int32_t n,
                              void (*fn)(void *ctx, int32_t i, const float *logits), void *ctx);

const float *fg_session_logits(const fg_session *s);
int32_t fg_session_n_past(const fg_session *s);
int32_t fg_session_n_ctx(const fg_session *s);

/* Forgets every token from position n on (n <= n_past). */
void fg_session_truncate(fg_session *s, int32_t n);

#endif
