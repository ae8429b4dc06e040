/*
 * generate.c — see generate.h.
 */
#include "runtime/generate.h"

#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "runtime/textstream.h"

/* Runs ids, then picks the token after them into *next: on the backend
 * (on_backend), or from the logits by the sampler. */
static fg_status advance(fg_session *s, fg_sampler *smp, bool on_backend, const int32_t *ids, int32_t n, int32_t *next)
{
    if (on_backend) {
        fg_sample_row row;
        fg_sampler_next_row(smp, &row);
        return fg_session_eval_sample(s, ids, n, &row, next);
    }
    FG_TRY(fg_session_eval(s, ids, n));
    return fg_sampler_sample(smp, fg_session_logits(s), next);
}

fg_status fg_generate(fg_session *s, const fg_tokenizer *tok, fg_sampler *smp, const int32_t *prompt,
                      int32_t n_prompt, const fg_gen_params *p, fg_gen_emit emit, void *ud, fg_tokens *out_ids,
                      fg_gen_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    double t0 = fg_now_ms();
    stats->n_prompt = n_prompt;
    if (n_prompt < 1) return fg_err_set(FG_ERR_INVALID_ARG, "the prompt is empty: there is nothing to continue");
    /* Sampling without penalties runs on a GPU backend, so that only the
     * ids leave the device (greedy too on the CPU, where it is a plain
     * argmax); otherwise the sampler reads the logits. */
    bool on_backend = !fg_sampler_has_penalties(smp) && (fg_sampler_is_greedy(smp) || !fg_session_logits_on_host(s));
    for (int32_t i = 0; i < n_prompt; i++) fg_sampler_accept(smp, prompt[i]);
    int32_t next = -1;
    FG_TRY(advance(s, smp, on_backend, prompt, n_prompt, &next));
    double t1 = fg_now_ms();
    stats->prompt_ms = t1 - t0;

    fg_textstream ts;
    fg_textstream_init(&ts, tok, p->stops, p->n_stops);
    fg_status st = FG_OK;
    bool first = true, stop = false;
    stats->stop = FG_FINISH_LENGTH;
    for (int32_t n = 0; p->n_predict < 0 || n < p->n_predict; n++) {
        int32_t id = next;
        fg_sampler_accept(smp, id);
        if (out_ids && (st = fg_tokens_push(out_ids, id)) != FG_OK) break;
        stats->n_gen++;
        if (!p->ignore_eos && fg_tok_is_eog(tok, id)) {
            stats->stop = FG_FINISH_EOS;
            break;
        }
        if ((st = fg_textstream_push(&ts, id, &stop)) != FG_OK) break;
        if (stop) {
            stats->stop = FG_FINISH_STOP;
            break;
        }
        if (ts.ready > 0) {
            if (first) {
                stats->ttft_ms = fg_now_ms() - t0;
                first = false;
            }
            bool more = emit(ud, ts.buf, ts.ready);
            fg_textstream_take(&ts);
            if (!more) {
                stats->stop = FG_FINISH_CANCELLED;
                break;
            }
        }
        if (p->n_predict >= 0 && n + 1 >= p->n_predict) break; /* no need to run the last token */
        if (fg_session_n_past(s) >= fg_session_n_ctx(s)) {
            stats->stop = FG_FINISH_CONTEXT;
            break;
        }
        if ((st = advance(s, smp, on_backend, &id, 1, &next)) != FG_OK) break;
    }
    if (st == FG_OK && stats->stop != FG_FINISH_STOP && stats->stop != FG_FINISH_CANCELLED) st = fg_textstream_flush(&ts);
    if (st == FG_OK && ts.ready > 0) {
        if (first) stats->ttft_ms = fg_now_ms() - t0;
        emit(ud, ts.buf, ts.ready);
    }
    stats->gen_ms = fg_now_ms() - t1;
    fg_textstream_free(&ts);
    return st;
}
