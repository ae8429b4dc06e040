/*
 * generate.h — the generation loop of one sequence: prefill a prompt, then
 * sample, stream and feed back tokens until EOS/EOT, a stop string, the token
 * limit or the end of the context.
 *
 * Text is streamed through a callback in whole UTF-8 characters. Output that
 * could still turn out to be the start of a stop string is held back until it
 * cannot; a matched stop string is not emitted.
 */
#ifndef FG_RUNTIME_GENERATE_H
#define FG_RUNTIME_GENERATE_H

#include "runtime/sampler.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"

typedef struct fg_gen_params {
    int32_t n_predict;        /* tokens to generate at most; < 0: until another stop */
    const char *const *stops; /* stop strings (NULL-free array of n_stops) */
    int32_t n_stops;
    bool ignore_eos;          /* keep going past end-of-generation tokens */
} fg_gen_params;

typedef struct fg_gen_stats {
    int32_t n_prompt, n_gen;
    double prompt_ms;  /* prefill time */
    double gen_ms;     /* time from the first sampled token to the last */
    double ttft_ms;    /* from the call to the first emitted token */
    fg_finish_reason stop; /* forge.h's reasons: EOS, STOP (a stop string), LENGTH (n_predict
                            * tokens), CONTEXT (the context is full) or CANCELLED (emit asked to stop) */
} fg_gen_stats;

/* Called with each piece of text, in order; returning false stops. */
typedef bool (*fg_gen_emit)(void *ud, const char *text, size_t len);

/* Feeds prompt (n_prompt ids, appended to what s already holds) and
 * generates. Generated ids are appended to out_ids if not NULL. The sampler
 * sees the prompt and generated ids (for its penalties). */
fg_status fg_generate(fg_session *s, const fg_tokenizer *tok, fg_sampler *smp, const int32_t *prompt,
                      int32_t n_prompt, const fg_gen_params *p, fg_gen_emit emit, void *ud, fg_tokens *out_ids,
                      fg_gen_stats *stats);

#endif
