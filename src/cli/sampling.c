/*
 * sampling.c — the sampling and stopping options that forge run and chat
 * share, parsed into sampler parameters.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "cli/cli.h"

void fg_cli_gen_defaults(fg_cli_gen_opts *g, int32_t n_predict)
{
    memset(g, 0, sizeof *g);
    g->sp = fg_sampler_defaults();
    g->n_predict = n_predict;
}

static const char *const opt_names[] = {
    [OPT_TEMP - OPT_TEMP] = "temp",
    [OPT_TOP_K - OPT_TEMP] = "top-k",
    [OPT_TOP_P - OPT_TEMP] = "top-p",
    [OPT_MIN_P - OPT_TEMP] = "min-p",
    [OPT_REPEAT_PENALTY - OPT_TEMP] = "repeat-penalty",
    [OPT_REPEAT_LAST_N - OPT_TEMP] = "repeat-last-n",
    [OPT_PRESENCE - OPT_TEMP] = "presence-penalty",
    [OPT_FREQUENCY - OPT_TEMP] = "frequency-penalty",
};

int fg_cli_gen_opt(const char *cmd, int c, const char *arg, fg_cli_gen_opts *g)
{
    char *end;
    switch (c) {
    case 'n': {
        long v = strtol(arg, &end, 10);
        if (*arg == 0 || *end || v < -1 || v == 0 || v > INT32_MAX)
            return fg_cli_usage_error(cmd, "-n must be -1 (until EOS or a full context) or a token count >= 1, not '%s'",
                                      arg);
        g->n_predict = (int32_t)v;
        return 0;
    }
    case OPT_TEMP:
    case OPT_TOP_P:
    case OPT_MIN_P:
    case OPT_REPEAT_PENALTY:
    case OPT_PRESENCE:
    case OPT_FREQUENCY: {
        double v = strtod(arg, &end);
        if (*arg == 0 || *end || v != v)
            return fg_cli_usage_error(cmd, "--%s needs a number, not '%s'", opt_names[c - OPT_TEMP], arg);
        float *dst = c == OPT_TEMP ? &g->sp.temperature
                     : c == OPT_TOP_P ? &g->sp.top_p
                     : c == OPT_MIN_P ? &g->sp.min_p
                     : c == OPT_REPEAT_PENALTY ? &g->sp.repeat_penalty
                     : c == OPT_PRESENCE ? &g->sp.presence_penalty
                                         : &g->sp.frequency_penalty;
        *dst = (float)v;
        return 0;
    }
    case OPT_TOP_K:
    case OPT_REPEAT_LAST_N: {
        long v = strtol(arg, &end, 10);
        if (*arg == 0 || *end || v < INT32_MIN || v > INT32_MAX)
            return fg_cli_usage_error(cmd, "--%s needs an integer, not '%s'", opt_names[c - OPT_TEMP], arg);
        *(c == OPT_TOP_K ? &g->sp.top_k : &g->sp.repeat_last_n) = (int32_t)v;
        return 0;
    }
    case OPT_SEED:
        g->sp.seed = strtoull(arg, &end, 10);
        if (*arg == 0 || *end || *arg == '-' || g->sp.seed == FG_SAMPLER_SEED_RANDOM)
            return fg_cli_usage_error(cmd, "--seed must be an integer in 0..2^64-2, not '%s'", arg);
        return 0;
    case OPT_STOP:
        if (g->n_stops == FG_CLI_MAX_STOPS) return fg_cli_usage_error(cmd, "at most %d --stop strings", FG_CLI_MAX_STOPS);
        if (!*arg) return fg_cli_usage_error(cmd, "--stop needs a non-empty string");
        g->stops[g->n_stops++] = arg;
        return 0;
    case OPT_IGNORE_EOS:
        g->ignore_eos = true;
        return 0;
    }
    return -1;
}

int fg_cli_gen_check(const char *cmd, const fg_cli_gen_opts *g)
{
    if (fg_sampler_check(&g->sp) != FG_OK) return fg_cli_usage_error(cmd, "%s", fg_last_error());
    return 0;
}

void fg_cli_gen_help(const fg_cli_gen_opts *d)
{
    printf("generation:\n"
           "  -n, --n-predict N      tokens to generate (default: %d; -1: until EOS or a full context)\n"
           "      --stop TEXT        stop when TEXT is generated (repeatable; not printed)\n"
           "      --ignore-eos       do not stop at end-of-generation tokens\n\n"
           "sampling (temperature 0 is greedy):\n"
           "      --temp T           temperature (default: %.2f)\n"
           "      --top-k K          keep the K most likely tokens, 0 = off (default: %d)\n"
           "      --top-p P          keep the smallest set with probability >= P, 1 = off (default: %.2f)\n"
           "      --min-p P          drop tokens below P x the top probability, 0 = off (default: %.2f)\n"
           "      --repeat-penalty R penalize repeated tokens, 1 = off (default: %.2f)\n"
           "      --repeat-last-n N  tokens the penalties look back over (default: %d)\n"
           "      --presence-penalty F, --frequency-penalty F   OpenAI-style penalties (default: 0)\n"
           "      --seed S           random seed (default: a fresh one, printed)\n\n",
           d->n_predict, d->sp.temperature, d->sp.top_k, d->sp.top_p, d->sp.min_p, d->sp.repeat_penalty,
           d->sp.repeat_last_n);
}

fg_request_params fg_cli_gen_request(const fg_cli_gen_opts *g, const int32_t *prompt, size_t n, int32_t ctx)
{
    fg_request_params p = fg_request_params_default();
    p.prompt = prompt;
    p.n_prompt = n;
    p.max_tokens = g->n_predict > 0 && (int64_t)n + g->n_predict <= ctx ? g->n_predict : -1;
    const fg_sampler_params *s = &g->sp;
    p.sampling = (fg_sampling){.temperature = s->temperature, .top_k = s->top_k, .top_p = s->top_p,
                               .min_p = s->min_p, .repeat_penalty = s->repeat_penalty,
                               .repeat_last_n = s->repeat_last_n, .presence_penalty = s->presence_penalty,
                               .frequency_penalty = s->frequency_penalty, .seed = s->seed,
                               .logit_bias = s->logit_bias, .n_logit_bias = s->n_logit_bias,
                               .seed_exact = s->seed_exact};
    p.stops = g->stops;
    p.n_stops = g->n_stops;
    p.ignore_eos = g->ignore_eos;
    return p;
}
