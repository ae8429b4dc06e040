/*
 * run.c — `forge run -p PROMPT`: generate a continuation and stream it.
 *
 * The text goes to stdout as it is generated; the timings go to stderr:
 * prompt tokens/s (prefill), generation tokens/s and time to first token,
 * measured the way llama.cpp reports them.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#include "base/err.h"
#include "cli/cli.h"
#include "runtime/generate.h"
#include "runtime/sampler.h"
#include "tokenizer/chat.h"

enum { OPT_CHAT = OPT_CMD_FIRST, OPT_SYSTEM, OPT_TEMPLATE, OPT_REFERENCE };

static void help(void)
{
    fg_cli_gen_opts d;
    fg_cli_gen_defaults(&d, 128);
    printf("usage: forge run [options] -p PROMPT\n\n"
           "Generates a continuation of PROMPT and streams it to stdout; prompt and\n"
           "generation speed and time to first token go to stderr.\n\n"
           "prompt:\n"
           "  -p, --prompt TEXT      the prompt\n"
           "  -f, --file FILE        read the prompt from FILE\n"
           "      --chat             render the prompt as a user turn with the chat template\n"
           "      --system TEXT      with --chat: a system message\n"
           "      --chat-template NAME  with --chat: this template instead of the model's\n\n");
    fg_cli_gen_help(&d);
    fg_cli_engine_help();
    printf("  -h, --help             show this help\n");
}

static bool emit_stdout(void *ud, const char *text, size_t len)
{
    (void)ud;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return true;
}

int fg_cli_run(int argc, char **argv)
{
    static const struct option opts[] = {
        FG_CLI_ENGINE_OPTIONS,
        FG_CLI_GEN_OPTIONS,
        {"prompt", required_argument, 0, 'p'},
        {"file", required_argument, 0, 'f'},
        {"chat", no_argument, 0, OPT_CHAT},
        {"system", required_argument, 0, OPT_SYSTEM},
        {"chat-template", required_argument, 0, OPT_TEMPLATE},
        {"reference", no_argument, 0, OPT_REFERENCE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    fg_cli_engine_opts eo = {0};
    fg_cli_gen_opts go;
    fg_cli_gen_defaults(&go, 128);
    bool chat = false;
    const char *prompt = NULL, *file = NULL, *system = NULL, *tmpl_name = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, FG_CLI_ENGINE_SHORT FG_CLI_GEN_SHORT "p:f:h", opts, NULL)) != -1) {
        int r = fg_cli_engine_opt("run", c, optarg, &eo);
        if (r < 0) r = fg_cli_gen_opt("run", c, optarg, &go);
        if (r >= 0) {
            if (r) return r;
            continue;
        }
        switch (c) {
        case 'p': prompt = optarg; break;
        case 'f': file = optarg; break;
        case OPT_CHAT: chat = true; break;
        case OPT_SYSTEM: system = optarg; break;
        case OPT_TEMPLATE: tmpl_name = optarg; break;
        case OPT_REFERENCE: eo.reference = true; break;
        case 'h': help(); return 0;
        default: return fg_cli_usage_error("run", "unknown option");
        }
    }
    if (optind < argc) return fg_cli_usage_error("run", "unexpected argument '%s' (the prompt goes after -p)", argv[optind]);
    if (!prompt == !file) return fg_cli_usage_error("run", "give the prompt with -p TEXT or -f FILE");
    if ((system || tmpl_name) && !chat) return fg_cli_usage_error("run", "--system and --chat-template need --chat");
    if (fg_cli_gen_check("run", &go)) return 2;
    fg_gen_params gp = {.n_predict = go.n_predict, .stops = go.stops, .n_stops = go.n_stops, .ignore_eos = go.ignore_eos};

    char *text = NULL;
    if (file) {
        fg_status rst = fg_cli_read_file(file, &text, NULL);
        if (rst != FG_OK) return fg_cli_fail(rst);
    } else if (!(text = strdup(prompt))) {
        fprintf(stderr, "forge: error: out of memory\n");
        return 1;
    }
    fg_cli_engine e;
    fg_status st = fg_cli_engine_load(&eo, &e);
    fg_sampler *smp = NULL;
    fg_tokens ids = {0};
    if (st == FG_OK && chat) {
        fg_chat_tmpl tmpl;
        fg_chat_msg msgs[2];
        size_t n = 0;
        if (system) msgs[n++] = (fg_chat_msg){"system", system};
        msgs[n++] = (fg_chat_msg){"user", text};
        char *rendered = NULL;
        st = fg_model_chat_template(e.model->gguf, e.model->tok, tmpl_name, &tmpl, NULL);
        if (st == FG_OK) st = fg_chat_apply(&tmpl, msgs, n, true, &rendered);
        if (st == FG_OK) {
            free(text);
            text = rendered;
        }
    }
    if (st == FG_OK) st = fg_tok_encode(e.model->tok, text, strlen(text), true, true, &ids);
    if (st == FG_OK && (int64_t)ids.n > fg_session_n_ctx(e.session)) {
        st = fg_err_set(FG_ERR_INVALID_ARG, "the prompt is %zu tokens, longer than the context of %d; shorten it or raise -c",
                        ids.n, fg_session_n_ctx(e.session));
    }
    if (st == FG_OK) st = fg_sampler_init(&go.sp, fg_model_n_vocab(e.model), &smp);
    fg_gen_stats stats;
    if (st == FG_OK)
        st = fg_generate(e.session, e.model->tok, smp, ids.ids, (int32_t)ids.n, &gp, emit_stdout, NULL, NULL, &stats);
    int rc = 0;
    if (st != FG_OK) {
        rc = fg_cli_fail(st);
    } else {
        printf("\n");
        fprintf(stderr,
                "\nforge: prompt %d tokens in %.1f ms (%.1f t/s) | generation %d tokens in %.1f ms (%.1f t/s) | "
                "time to first token %.1f ms | stop: %s | seed %llu\n",
                stats.n_prompt, stats.prompt_ms, stats.n_prompt / (stats.prompt_ms / 1e3), stats.n_gen, stats.gen_ms,
                stats.gen_ms > 0 ? stats.n_gen / (stats.gen_ms / 1e3) : 0.0, stats.ttft_ms,
                fg_stop_reason_name(stats.stop), (unsigned long long)fg_sampler_seed(smp));
    }
    fg_sampler_free(smp);
    fg_tokens_free(&ids);
    free(text);
    fg_cli_engine_free(&e);
    return rc;
}
