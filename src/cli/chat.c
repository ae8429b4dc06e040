/*
 * chat.c — `forge chat`: an interactive conversation with the model.
 *
 * Each turn renders the whole conversation with the model's chat template,
 * tokenizes it and submits it to the engine (forge.h) as one request; the
 * engine's prefix cache finds the blocks of the turns before, so only the
 * new text is computed. The reply streams as it is generated. When the
 * conversation no longer fits in the context (leaving room for a reply of -n
 * tokens), the oldest turns are dropped, the system message kept. Line
 * editing and history come from libedit; /reset starts over, /exit (or
 * Ctrl-D) leaves.
 */
#include <editline/readline.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "cli/cli.h"
#include "tokenizer/chat.h"

enum { OPT_SYSTEM = OPT_CMD_FIRST, OPT_TEMPLATE, OPT_TIMINGS };

static void help(void)
{
    fg_cli_gen_opts d;
    fg_cli_gen_defaults(&d, 512);
    printf("usage: forge chat [options]\n\n"
           "Talks with the model in a loop, with its chat template; the conversation is kept\n"
           "within the context window (oldest turns dropped first). Type /reset to start\n"
           "over and /exit or Ctrl-D to leave.\n\n"
           "  -s, --system TEXT      a system message\n"
           "      --chat-template NAME  this template instead of the model's\n"
           "      --timings          after each reply, its token counts (and the prompt tokens reused\n"
           "                         from the cache) and speeds on stderr (default: on a terminal)\n\n");
    fg_cli_gen_help(&d);
    fg_cli_engine_help();
    fg_cli_serving_help();
    printf("  -h, --help             show this help\n");
}

typedef struct conversation {
    fg_chat_msg *msgs;
    size_t n, cap;
} conversation;

static fg_status conv_add(conversation *c, const char *role, const char *content)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 16;
        fg_chat_msg *m = realloc(c->msgs, cap * sizeof *m);
        if (!m) return fg_err_set(FG_ERR_NOMEM, "out of memory");
        c->msgs = m;
        c->cap = cap;
    }
    char *copy = strdup(content);
    if (!copy) return fg_err_set(FG_ERR_NOMEM, "out of memory");
    c->msgs[c->n++] = (fg_chat_msg){role, copy};
    return FG_OK;
}

/* Drops the oldest non-system message; false if there is none to drop. */
static bool conv_drop_oldest(conversation *c)
{
    size_t first = c->n && strcmp(c->msgs[0].role, "system") == 0 ? 1 : 0;
    if (c->n <= first + 1) return false; /* keep at least the newest message */
    free((char *)c->msgs[first].content);
    memmove(c->msgs + first, c->msgs + first + 1, (c->n - first - 1) * sizeof *c->msgs);
    c->n--;
    return true;
}

static void conv_clear(conversation *c, bool keep_system)
{
    size_t keep = keep_system && c->n && strcmp(c->msgs[0].role, "system") == 0 ? 1 : 0;
    for (size_t i = keep; i < c->n; i++) free((char *)c->msgs[i].content);
    c->n = keep;
}

/* Renders and tokenizes the conversation, dropping old turns until it fits
 * in n_ctx - reserve tokens. */
static fg_status render_fitting(const fg_model *m, const fg_chat_tmpl *t, conversation *c, int32_t budget,
                                fg_tokens *ids)
{
    for (;;) {
        char *prompt = NULL;
        FG_TRY(fg_chat_apply(t, c->msgs, c->n, true, &prompt));
        ids->n = 0;
        fg_status st = fg_tok_encode(m->tok, prompt, strlen(prompt), true, true, ids);
        free(prompt);
        FG_TRY(st);
        if ((int64_t)ids->n <= budget) return FG_OK;
        if (!conv_drop_oldest(c))
            return fg_err_set(FG_ERR_INVALID_ARG, "the message is %zu tokens with the template, more than the %d the "
                                                  "context leaves for it; raise -c or lower -n",
                              ids->n, budget);
    }
}

int fg_cli_chat(int argc, char **argv)
{
    static const struct option opts[] = {
        FG_CLI_ENGINE_OPTIONS,
        FG_CLI_SERVING_OPTIONS,
        FG_CLI_GEN_OPTIONS,
        {"system", required_argument, 0, 's'},
        {"chat-template", required_argument, 0, OPT_TEMPLATE},
        {"timings", no_argument, 0, OPT_TIMINGS},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    fg_cli_engine_opts eo = {0};
    fg_cli_gen_opts go;
    fg_cli_gen_defaults(&go, 512);
    const char *system = NULL, *tmpl_name = NULL;
    bool tty = isatty(STDIN_FILENO), timings = tty;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, FG_CLI_ENGINE_SHORT FG_CLI_GEN_SHORT "s:h", opts, NULL)) != -1) {
        int r = fg_cli_engine_opt("chat", c, optarg, &eo);
        if (r < 0) r = fg_cli_gen_opt("chat", c, optarg, &go);
        if (r >= 0) {
            if (r) return r;
            continue;
        }
        switch (c) {
        case 's': system = optarg; break;
        case OPT_TEMPLATE: tmpl_name = optarg; break;
        case OPT_TIMINGS: timings = true; break;
        case 'h': help(); return 0;
        default: return fg_cli_usage_error("chat", "unknown option");
        }
    }
    if (optind < argc) return fg_cli_usage_error("chat", "unexpected argument '%s'", argv[optind]);
    if (fg_cli_gen_check("chat", &go)) return 2;

    fg_engine *e = NULL;
    fg_chat_tmpl tmpl;
    fg_status st = fg_cli_engine_open(&eo, 1, &e);
    const fg_model *m = e ? fg_engine_model(e) : NULL;
    const char *how = NULL;
    if (st == FG_OK) st = fg_model_chat_template(m->gguf, m->tok, tmpl_name, &tmpl, &how);
    if (st != FG_OK) {
        fg_engine_close(e);
        return fg_cli_fail(st);
    }
    fg_engine_stats es;
    fg_engine_stats_get(e, &es);
    int32_t n_ctx = es.ctx;
    int32_t reserve = go.n_predict > 0 && go.n_predict < n_ctx / 2 ? go.n_predict : n_ctx / 4;
    if (tty)
        fprintf(stderr, "forge chat: %s, template %s (%s), context %d; /reset starts over, /exit or Ctrl-D leaves\n",
                m->hp.arch, fg_chat_name(tmpl.kind), how, n_ctx);

    conversation conv = {0};
    fg_tokens ids = {0};
    if (system) st = conv_add(&conv, "system", system);
    int rc = 0;
    while (st == FG_OK) {
        char *line = readline(tty ? "> " : "");
        if (!line) break;
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0) {
            free(line);
            break;
        }
        if (strcmp(line, "/reset") == 0) {
            conv_clear(&conv, true);
            fprintf(stderr, "(conversation reset)\n");
            free(line);
            continue;
        }
        if (!*line) {
            free(line);
            continue;
        }
        add_history(line);
        st = conv_add(&conv, "user", line);
        free(line);
        if (st == FG_OK) st = render_fitting(m, &tmpl, &conv, n_ctx - reserve, &ids);
        if (st != FG_OK) {
            /* A message that cannot fit is reported, not fatal: drop it. */
            fprintf(stderr, "forge: error: %s\n", fg_last_error());
            if (conv.n && strcmp(conv.msgs[conv.n - 1].role, "user") == 0) {
                free((char *)conv.msgs[conv.n - 1].content);
                conv.n--;
            }
            st = FG_OK;
            continue;
        }
        fg_request_params rp = fg_cli_gen_request(&go, ids.ids, ids.n, n_ctx);
        uint64_t id = 0;
        fg_buf reply = {0};
        fg_request_info info;
        st = fg_engine_submit(e, &rp, &id);
        if (st == FG_OK) st = fg_cli_stream(e, id, &reply, &info);
        if (id) fg_request_release(e, id);
        printf("\n");
        if (st == FG_OK) st = conv_add(&conv, "assistant", reply.s ? reply.s : "");
        free(reply.s);
        if (st == FG_OK && timings) {
            double prompt_ms = info.ttft_ms - info.queue_ms;
            fprintf(stderr, "(%d prompt tokens, %d of them cached, at %.1f t/s, %d generated at %.1f t/s)\n",
                    info.n_prompt, info.n_cached, prompt_ms > 0 ? (info.n_prompt - info.n_cached) / (prompt_ms / 1e3) : 0.0,
                    info.n_gen, info.decode_ms_per_token > 0 ? 1e3 / info.decode_ms_per_token : 0.0);
        }
    }
    if (st != FG_OK) rc = fg_cli_fail(st);
    conv_clear(&conv, false);
    free(conv.msgs);
    fg_tokens_free(&ids);
    fg_engine_close(e);
    return rc;
}
