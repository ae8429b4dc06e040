/*
 * batch.c — the check every backend runs on a step's batch before taking
 * anything from it (backend.h).
 */
#include "backend/backend.h"
#include "base/err.h"

fg_status fg_batch_check(const fg_batch *b, int64_t n_slots, const char *who)
{
    if (b->n_tokens < 1) return fg_err_set(FG_ERR_INVALID_ARG, "%s: a step needs at least one token", who);
    for (int32_t t = 0; t < b->n_tokens; t++) {
        if (b->slot[t] < 0 || b->slot[t] >= n_slots || b->seq[t] < 0 || b->seq[t] >= b->n_seqs || b->pos[t] < 0)
            return fg_err_set(FG_ERR_INVALID_ARG, "%s: token %d of the batch has slot %d, seq %d, pos %d out of range", who,
                              t, b->slot[t], b->seq[t], b->pos[t]);
    }
    if (b->n_out < 0 || b->n_out > b->n_tokens)
        return fg_err_set(FG_ERR_INVALID_ARG, "%s: %d gathered rows for a step of %d tokens", who, b->n_out, b->n_tokens);
    for (int32_t r = 0; r < b->n_out; r++) {
        if (b->out_rows[r] < 0 || b->out_rows[r] >= b->n_tokens)
            return fg_err_set(FG_ERR_INVALID_ARG, "%s: gathered row %d is token %d of a step of %d", who, r,
                              b->out_rows[r], b->n_tokens);
    }
    if (b->n_sample < 0 || (b->n_sample > 0 && !b->sample))
        return fg_err_set(FG_ERR_INVALID_ARG, "%s: %d sampling rows without their parameters", who, b->n_sample);
    return FG_OK;
}
