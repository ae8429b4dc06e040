/*
 * run.c — `forge run -p PROMPT`: generate a continuation and stream it.
 *
 * One request on the engine (forge.h): the text goes to stdout as it is
 * generated; the timings go to stderr from the request's status: prompt
 * tokens/s (prefill), generation tokens/s and time to first token, measured
 * the way llama.cpp reports them.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#include "base/err.h"
#include "cli/cli.h"
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
    fg_cli_serving_help();
    printf("  -h, --help             show this help\n");
}

/* Renders text as a user turn (after an optional system message) with the
 * model's chat template, or the one named; *text is replaced. */
static fg_status render_chat(const fg_model *m, const char *tmpl_name, const char *system, char **text)
{
    fg_chat_tmpl tmpl;
    fg_chat_msg msgs[2];
    size_t n = 0;
    if (system) msgs[n++] = (fg_chat_msg){"system", system};
    msgs[n++] = (fg_chat_msg){"user", *text};
    char *rendered = NULL;
    FG_TRY(fg_model_chat_template(m->gguf, m->tok, tmpl_name, &tmpl, NULL));
    FG_TRY(fg_chat_apply(&tmpl, msgs, n, true, &rendered));
    free(*text);
    *text = rendered;
    return FG_OK;
}

static void print_timings(const fg_request_info *i)
{
    /* Prefill: from the first step that ran it to its first token; generation:
     * from then to the end, at the mean time between tokens. */
    double prompt_ms = i->ttft_ms >= 0 ? i->ttft_ms - i->queue_ms : 0;
    double gen_ms = i->ttft_ms >= 0 ? i->total_ms - i->ttft_ms : 0;
    fprintf(stderr,
            "\nforge: prompt %d tokens in %.1f ms (%.1f t/s) | generation %d tokens in %.1f ms (%.1f t/s) | "
            "time to first token %.1f ms | stop: %s | seed %llu\n",
            i->n_prompt, prompt_ms, prompt_ms > 0 ? i->n_prompt / (prompt_ms / 1e3) : 0.0, i->n_gen, gen_ms,
            i->decode_ms_per_token > 0 ? 1e3 / i->decode_ms_per_token : 0.0, i->ttft_ms >= 0 ? i->ttft_ms : 0.0,
            fg_finish_reason_str(i->finish), (unsigned long long)i->seed);
}

int fg_cli_run(int argc, char **argv)
{
    static const struct option opts[] = {
        FG_CLI_ENGINE_OPTIONS,
        FG_CLI_SERVING_OPTIONS,
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

    char *text = NULL;
    if (file) {
        fg_status rst = fg_cli_read_file(file, &text, NULL);
        if (rst != FG_OK) return fg_cli_fail(rst);
    } else if (!(text = strdup(prompt))) {
        fprintf(stderr, "forge: error: out of memory\n");
        return 1;
    }
    fg_engine *e = NULL;
    fg_status st = fg_cli_engine_open(&eo, 1, &e);
    const fg_model *m = e ? fg_engine_model(e) : NULL;
    fg_engine_stats es = {0};
    if (e) fg_engine_stats_get(e, &es);
    fg_tokens ids = {0};
    if (st == FG_OK && chat) st = render_chat(m, tmpl_name, system, &text);
    if (st == FG_OK) st = fg_tok_encode(m->tok, text, strlen(text), true, true, &ids);
    if (st == FG_OK && (int64_t)ids.n >= es.ctx)
        st = fg_err_set(FG_ERR_INVALID_ARG, "the prompt is %zu tokens, %s the context of %d; shorten it or raise -c", ids.n,
                        (int64_t)ids.n > es.ctx ? "longer than" : "which fills", es.ctx);
    uint64_t id = 0;
    fg_request_params rp = fg_cli_gen_request(&go, ids.ids, ids.n, es.ctx);
    if (st == FG_OK) st = fg_engine_submit(e, &rp, &id);
    fg_request_info info;
    if (st == FG_OK) st = fg_cli_stream(e, id, NULL, &info);
    int rc = 0;
    if (st != FG_OK) {
        rc = fg_cli_fail(st);
    } else {
        printf("\n");
        print_timings(&info);
    }
    if (id) fg_request_release(e, id);
    fg_tokens_free(&ids);
    free(text);
    fg_engine_close(e);
    return rc;
}
