/*
 * session.c — see session.h.
 */
#include "runtime/session.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

struct fg_session {
    fg_forward *f;
    int32_t n_vocab, n_ctx, n_batch, n_past;
    /* Step inputs, n_batch each, and the identity block table. */
    int32_t *pos, *seq, *slot, *table;
    float *logits; /* n_batch * n_vocab: room for eval_all's batches */
};

fg_status fg_session_init(fg_forward *f, int32_t n_vocab, fg_session **out)
{
    *out = NULL;
    fg_session *s = calloc(1, sizeof *s);
    if (!s) return fg_err_set(FG_ERR_NOMEM, "out of memory");
    s->f = f;
    s->n_vocab = n_vocab;
    s->n_ctx = fg_forward_n_ctx(f);
    s->n_batch = fg_forward_n_batch(f);
    int32_t n_blocks = s->n_ctx / FG_KV_BLOCK_SIZE;
    s->pos = malloc((size_t)s->n_batch * sizeof *s->pos);
    s->seq = calloc((size_t)s->n_batch, sizeof *s->seq);
    s->slot = malloc((size_t)s->n_batch * sizeof *s->slot);
    s->table = malloc((size_t)n_blocks * sizeof *s->table);
    s->logits = malloc((size_t)s->n_batch * (size_t)n_vocab * sizeof *s->logits);
    if (!s->pos || !s->seq || !s->slot || !s->table || !s->logits) {
        int32_t n_ctx = s->n_ctx;
        fg_session_free(s);
        return fg_err_set(FG_ERR_NOMEM, "out of memory for a session of %d tokens", n_ctx);
    }
    for (int32_t b = 0; b < n_blocks; b++) s->table[b] = b;
    *out = s;
    return FG_OK;
}

void fg_session_free(fg_session *s)
{
    if (!s) return;
    free(s->pos);
    free(s->seq);
    free(s->slot);
    free(s->table);
    free(s->logits);
    free(s);
}

/* Runs ids in batches; all_logits asks for every token's logits (to fn). */
static fg_status eval(fg_session *s, const int32_t *ids, int32_t n, bool all_logits,
                      void (*fn)(void *, int32_t, const float *), void *ctx, const fg_sample_row *row, int32_t *next)
{
    if (n < 0 || n > s->n_ctx - s->n_past) {
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "%d more tokens do not fit in the context: %d of %d are used; "
                          "use a larger context (-c) or a shorter prompt",
                          n, s->n_past, s->n_ctx);
    }
    int32_t start = s->n_past;
    for (int32_t done = 0; done < n;) {
        int32_t k = n - done < s->n_batch ? n - done : s->n_batch;
        for (int32_t i = 0; i < k; i++) s->pos[i] = s->slot[i] = s->n_past + i;
        fg_batch b = {.n_tokens = k, .ids = ids + done, .pos = s->pos, .seq = s->seq, .slot = s->slot,
                      .n_seqs = 1, .max_blocks = s->n_ctx / FG_KV_BLOCK_SIZE, .block_tables = s->table};
        bool last = done + k == n;
        int32_t from = all_logits ? 0 : last ? k - 1 : k;
        if (row && last) {
            b.n_sample = 1;
            b.sample = row;
        }
        fg_status st = row && last ? fg_forward_step_sample(s->f, &b, from, next)
                                   : fg_forward_step(s->f, &b, from, s->logits);
        if (st != FG_OK) {
            s->n_past = start; /* the partial sequence is not usable */
            return st;
        }
        if (all_logits) {
            for (int32_t i = 0; i < k; i++) fn(ctx, done + i, s->logits + (size_t)i * (size_t)s->n_vocab);
        }
        s->n_past += k;
        done += k;
    }
    if (all_logits && n > 0) {
        /* fg_session_logits: the last token's, at the front. */
        int32_t last = (n - 1) % s->n_batch;
        memmove(s->logits, s->logits + (size_t)last * (size_t)s->n_vocab, (size_t)s->n_vocab * sizeof(float));
    }
    return FG_OK;
}

fg_status fg_session_eval(fg_session *s, const int32_t *ids, int32_t n)
{
    return eval(s, ids, n, false, NULL, NULL, NULL, NULL);
}

fg_status fg_session_eval_sample(fg_session *s, const int32_t *ids, int32_t n, const fg_sample_row *row,
                                 int32_t *next)
{
    if (n < 1) return fg_err_set(FG_ERR_INVALID_ARG, "sampled evaluation needs at least one token");
    return eval(s, ids, n, false, NULL, NULL, row, next);
}

bool fg_session_logits_on_host(const fg_session *s)
{
    return fg_forward_logits_on_host(s->f);
}

fg_status fg_session_eval_all(fg_session *s, const int32_t *ids, int32_t n,
                              void (*fn)(void *ctx, int32_t i, const float *logits), void *ctx)
{
    return eval(s, ids, n, true, fn, ctx, NULL, NULL);
}

const float *fg_session_logits(const fg_session *s)
{
    return s->logits;
}

int32_t fg_session_n_past(const fg_session *s)
{
    return s->n_past;
}

int32_t fg_session_n_ctx(const fg_session *s)
{
    return s->n_ctx;
}

void fg_session_truncate(fg_session *s, int32_t n)
{
    FG_ASSERT(n >= 0 && n <= s->n_past);
    s->n_past = n;
}
