/*
 * sampler.h — picks the next token from a logits vector (n_vocab floats).
 *
 * The chain is llama.cpp's default one (common/common.h,
 * common_params_sampling::samplers: penalties, dry, top_n_sigma, top_k,
 * typ_p, top_p, min_p, xtc, temperature, then dist), less the stages forge
 * does not implement (dry, top_n_sigma, typ_p, xtc, all off by default there):
 *
 *   0. logit bias each listed token's bias added to its logit (llama.cpp's
 *                 chain starts with its logit-bias sampler);
 *   1. penalties  over the last repeat_last_n accepted tokens, each distinct
 *                 token t seen count(t) > 0 times there:
 *                   l = l > 0 ? l / repeat_penalty : l * repeat_penalty;
 *                   l -= count(t) * frequency_penalty + presence_penalty;
 *                 (llama.cpp's llama_sampler_penalties_apply, in float)
 *   2. top-k      keep the k largest logits (k = 0: off);
 *   3. top-p      softmax of the surviving logits at temperature 1, then keep
 *                 the shortest prefix, in descending order, whose cumulative
 *                 probability is >= top_p (top_p = 1: off);
 *   4. min-p      keep logits >= max + logf(min_p), i.e. p >= min_p * p_max
 *                 at temperature 1 (min_p = 0: off);
 *   5. temperature  probabilities softmax(l / temperature) over what is left,
 *                 and one draw from them.
 *
 * So top-p and min-p look at the penalized distribution *before* temperature,
 * as in llama.cpp. temperature = 0 is greedy: the argmax of the penalized
 * logits (every filter keeps the argmax, so the filters cannot change it).
 *
 * Orders and ties: "descending" means by logit, ties broken by lower token
 * id first (llama.cpp leaves ties to std::partial_sort, so unspecified). So a
 * tie at the k-th place keeps the lower ids, top-p cuts inside a tie group
 * after the lower ids, and greedy returns the lowest id among equal maxima.
 *
 * Non-finite logits: -inf marks a banned token, which is never a candidate
 * and never sampled; NaN is treated as -inf; +inf is treated as FLT_MAX (a
 * single +inf token is certain, several share the mass equally). If no token
 * has a logit above -inf, sampling fails with FG_ERR_INVALID_ARG.
 *
 * Randomness: xoshiro256** (Blackman and Vigna, 2018) seeded through
 * splitmix64; both are spelled out in sampler.c. Each non-greedy sample draws
 * exactly one 64-bit value, so the i-th sample after init or reset always
 * uses the i-th draw. Weights below e^-87 of the largest are flushed to zero.
 *
 * Costs: all scratch is allocated by fg_sampler_init (about 32 bytes per
 * vocabulary entry, plus 4 per repeat_last_n); sampling allocates nothing.
 * The sampler is not thread-safe; use one per sequence.
 */
#ifndef FG_RUNTIME_SAMPLER_H
#define FG_RUNTIME_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "forge.h"

/* A seed value asking fg_sampler_init for a fresh one from the clock (as
 * llama.cpp's LLAMA_DEFAULT_SEED does); fg_sampler_seed tells which. */
#define FG_SAMPLER_SEED_RANDOM UINT64_MAX

typedef struct fg_sampler_params {
    float temperature;       /* >= 0; 0 = greedy */
    int32_t top_k;           /* >= 0; 0 = off */
    float top_p;             /* (0, 1]; 1 = off */
    float min_p;             /* [0, 1]; 0 = off */
    float repeat_penalty;    /* > 0; 1 = off */
    int32_t repeat_last_n;   /* >= 0 tokens of history; 0 = no penalties.
                              * llama.cpp's -1 (= context size) is for the
                              * caller to resolve before init. */
    float presence_penalty;  /* finite; 0 = off (OpenAI's range is [-2, 2]) */
    float frequency_penalty; /* finite; 0 = off */
    uint64_t seed;           /* FG_SAMPLER_SEED_RANDOM = pick one */
    const fg_logit_bias *logit_bias; /* n_logit_bias (token, bias) pairs added to the logits first
                              * (before the penalties); tokens in [0, n_vocab), finite biases; a
                              * token listed twice takes its later bias. Copied by init */
    int32_t n_logit_bias;
    bool seed_exact;         /* seed is the seed even if it is FG_SAMPLER_SEED_RANDOM */
} fg_sampler_params;

/* llama.cpp's defaults (common_params_sampling): temperature 0.8, top_k 40,
 * top_p 0.95, min_p 0.05, repeat_penalty 1 (off), repeat_last_n 64,
 * presence and frequency 0, seed random. */
fg_sampler_params fg_sampler_defaults(void);

/* A fresh seed, never FG_SAMPLER_SEED_RANDOM: the one fg_sampler_init would
 * pick, for a caller that must know it before the sampler exists (the
 * engine reports a request's seed from its submission on). Thread-safe. */
uint64_t fg_sampler_random_seed(void);

/* FG_OK if every parameter is in range; otherwise FG_ERR_INVALID_ARG with a
 * message naming the first bad one and its valid range. fg_sampler_init
 * checks the same; this lets a CLI reject flags before loading a model. */
fg_status fg_sampler_check(const fg_sampler_params *p);

typedef struct fg_sampler fg_sampler;

/* A sampler over n_vocab tokens with parameters *p (copied). Free it with
 * fg_sampler_free. */
fg_status fg_sampler_init(const fg_sampler_params *p, int32_t n_vocab, fg_sampler **out);
void fg_sampler_free(fg_sampler *s);

/* Adds a token to the penalty history. As in llama.cpp, pass every prompt
 * token, then each sampled token once it is chosen: sampling does not accept
 * by itself. id must be in [0, n_vocab). */
void fg_sampler_accept(fg_sampler *s, int32_t id);

/* Samples a token id from logits (n_vocab floats, left unchanged) into *id.
 * Fails only if no logit is above -inf. */
fg_status fg_sampler_sample(fg_sampler *s, const float *logits, int32_t *id);

/* Whether sampling is the argmax: temperature 0, or so small that its
 * inverse overflows. */
bool fg_sampler_is_greedy(const fg_sampler *s);

/* Whether a penalty is in effect (a history window and a penalty that is
 * not neutral). A backend's sample op has no penalties. */
bool fg_sampler_has_penalties(const fg_sampler *s);

/* The next sample as a backend's sampling row (backend.h): the logit biases
 * (the sampler's sorted copy, valid while it lives), the filters and
 * temperature, and u taken from the stream exactly as fg_sampler_sample
 * takes it (one draw, none when greedy), so that the i-th token sampled
 * either way uses the i-th draw. For a sampler without penalties. */
void fg_sampler_next_row(fg_sampler *s, fg_sample_row *row);

/* Forgets the history and rewinds the random stream to its seed, so the
 * same calls again give the same tokens. */
void fg_sampler_reset(fg_sampler *s);

/* The seed in use (the one picked, if FG_SAMPLER_SEED_RANDOM was asked for):
 * print it so a run can be repeated. */
uint64_t fg_sampler_seed(const fg_sampler *s);

/* ---- For tests and diagnostics ------------------------------------------ */

/* The candidate set that fg_sampler_sample would draw from, without drawing:
 * n tokens with their penalized logits (before temperature) and their final
 * probabilities (after temperature, summing to 1), in an unspecified order.
 * Greedy gives the argmax alone with probability 1. The arrays are the
 * sampler's scratch: valid until its next call. */
typedef struct fg_sampler_cands {
    const int32_t *id;
    const float *logit;
    const float *p;
    int32_t n;
} fg_sampler_cands;

fg_status fg_sampler_candidates(fg_sampler *s, const float *logits, fg_sampler_cands *out);

/* The random stream alone: seeded as the sampler seeds it, next() gives the
 * xoshiro256** outputs and uniform() a double in [0, 1) from the top 53 bits
 * of one output. */
typedef struct fg_sampler_rng {
    uint64_t s[4];
} fg_sampler_rng;

void fg_sampler_rng_seed(fg_sampler_rng *r, uint64_t seed);
uint64_t fg_sampler_rng_next(fg_sampler_rng *r);
double fg_sampler_rng_uniform(fg_sampler_rng *r);

#endif
