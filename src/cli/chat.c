/*
 * chat.c — `forge chat`: an interactive conversation with the model.
 *
 * Each turn renders the whole conversation with the model's chat template,
 * tokenizes it, keeps the longest prefix the KV cache already holds and
 * evaluates only the rest, then streams the reply. When the conversation no
 * longer fits in the context (leaving room for a reply of -n tokens), the
 * oldest turns are dropped, the system message kept. Line editing and history
 * come from libedit; /reset starts over, /exit (or Ctrl-D) leaves.
 */
#include <editline/readline.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "cli/cli.h"
#include "runtime/generate.h"
#include "tokenizer/chat.h"

enum { OPT_SYSTEM = OPT_CMD_FIRST, OPT_TEMPLATE };

static void help(void)
{
    fg_cli_gen_opts d;
    fg_cli_gen_defaults(&d, 512);
    printf("usage: forge chat [options]\n\n"
           "Talks with the model in a loop, with its chat template; the conversation is kept\n"
           "within the context window (oldest turns dropped first). Type /reset to start\n"
           "over and /exit or Ctrl-D to leave.\n\n"
           "  -s, --system TEXT      a system message\n"
           "      --chat-template NAME  this template instead of the model's\n\n");
    fg_cli_gen_help(&d);
    fg_cli_engine_help();
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

typedef struct reply {
    char *text;
    size_t len, cap;
} reply;

static bool emit(void *ud, const char *text, size_t len)
{
    reply *r = ud;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    if (r->len + len + 1 > r->cap) {
        size_t cap = (r->len + len + 1) * 2;
        char *t = realloc(r->text, cap);
        if (!t) return false;
        r->text = t;
        r->cap = cap;
    }
    memcpy(r->text + r->len, text, len);
    r->len += len;
    r->text[r->len] = 0;
    return true;
}

/* Renders and tokenizes the conversation, dropping old turns until it fits
 * in n_ctx - reserve tokens. */
static fg_status render_fitting(const fg_cli_engine *e, const fg_chat_tmpl *t, conversation *c, int32_t budget,
                                fg_tokens *ids)
{
    for (;;) {
        char *prompt = NULL;
        FG_TRY(fg_chat_apply(t, c->msgs, c->n, true, &prompt));
        ids->n = 0;
        fg_status st = fg_tok_encode(e->model->tok, prompt, strlen(prompt), true, true, ids);
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
        FG_CLI_GEN_OPTIONS,
        {"system", required_argument, 0, 's'},
        {"chat-template", required_argument, 0, OPT_TEMPLATE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    fg_cli_engine_opts eo = {0};
    fg_cli_gen_opts go;
    fg_cli_gen_defaults(&go, 512);
    const char *system = NULL, *tmpl_name = NULL;
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
        case 'h': help(); return 0;
        default: return fg_cli_usage_error("chat", "unknown option");
        }
    }
    if (optind < argc) return fg_cli_usage_error("chat", "unexpected argument '%s'", argv[optind]);
    if (fg_cli_gen_check("chat", &go)) return 2;

    fg_cli_engine e;
    fg_chat_tmpl tmpl;
    fg_sampler *smp = NULL;
    fg_status st = fg_cli_engine_load(&eo, &e);
    const char *how = NULL;
    if (st == FG_OK) st = fg_model_chat_template(e.model->gguf, e.model->tok, tmpl_name, &tmpl, &how);
    if (st == FG_OK) st = fg_sampler_init(&go.sp, fg_model_n_vocab(e.model), &smp);
    if (st != FG_OK) {
        fg_cli_engine_free(&e);
        return fg_cli_fail(st);
    }
    int32_t n_ctx = fg_session_n_ctx(e.session);
    int32_t reserve = go.n_predict > 0 && go.n_predict < n_ctx / 2 ? go.n_predict : n_ctx / 4;
    bool tty = isatty(STDIN_FILENO);
    if (tty)
        fprintf(stderr, "forge chat: %s, template %s (%s), context %d; /reset starts over, /exit or Ctrl-D leaves\n",
                e.model->hp.arch, fg_chat_name(tmpl.kind), how, n_ctx);

    conversation conv = {0};
    fg_tokens ids = {0}, cached = {0}, out = {0};
    if (system) st = conv_add(&conv, "system", system);
    fg_gen_params gp = {.n_predict = go.n_predict, .stops = go.stops, .n_stops = go.n_stops, .ignore_eos = go.ignore_eos};
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
            cached.n = 0;
            fg_session_truncate(e.session, 0);
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
        if (st == FG_OK) st = render_fitting(&e, &tmpl, &conv, n_ctx - reserve, &ids);
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
        /* Reuse the KV of the longest prefix already evaluated. */
        size_t keep = 0;
        while (keep < cached.n && keep < ids.n && cached.ids[keep] == ids.ids[keep]) keep++;
        if (keep == ids.n) keep--; /* the last prompt token must run to give logits */
        fg_session_truncate(e.session, (int32_t)keep);
        fg_sampler_reset(smp);
        for (size_t i = 0; i < keep; i++) fg_sampler_accept(smp, ids.ids[i]);
        reply r = {0};
        fg_gen_stats stats;
        out.n = 0;
        st = fg_generate(e.session, e.model->tok, smp, ids.ids + keep, (int32_t)(ids.n - keep), &gp, emit, &r, &out,
                         &stats);
        printf("\n");
        if (st == FG_OK) st = conv_add(&conv, "assistant", r.text ? r.text : "");
        free(r.text);
        /* What the KV now holds: the prompt and the evaluated reply tokens. */
        cached.n = 0;
        for (size_t i = 0; i < ids.n && st == FG_OK; i++) st = fg_tokens_push(&cached, ids.ids[i]);
        for (size_t i = 0; i < out.n && (int32_t)cached.n < fg_session_n_past(e.session) && st == FG_OK; i++)
            st = fg_tokens_push(&cached, out.ids[i]);
        if (st == FG_OK && tty)
            fprintf(stderr, "(%d prompt tokens at %.1f t/s, %d generated at %.1f t/s)\n", stats.n_prompt,
                    stats.n_prompt / (stats.prompt_ms / 1e3), stats.n_gen,
                    stats.gen_ms > 0 ? stats.n_gen / (stats.gen_ms / 1e3) : 0.0);
    }
    if (st != FG_OK) rc = fg_cli_fail(st);
    conv_clear(&conv, false);
    free(conv.msgs);
    fg_tokens_free(&ids);
    fg_tokens_free(&cached);
    fg_tokens_free(&out);
    fg_sampler_free(smp);
    fg_cli_engine_free(&e);
    return rc;
}
