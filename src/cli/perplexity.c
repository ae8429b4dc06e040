/*
 * perplexity.c — `forge perplexity -f FILE`: the model's perplexity on a
 * text, computed the way llama.cpp's perplexity tool does so the two can be
 * compared number for number.
 *
 * The file is tokenized whole (with BOS if the vocabulary adds one) and cut
 * into chunks of n_ctx tokens; each chunk is evaluated from an empty context
 * with its first token replaced by BOS (when the vocabulary adds one), and
 * only its second half is scored: the negative log-likelihood of token i+1
 * under the logits after token i, for i in [n_ctx/2, n_ctx-1). PPL is
 * exp(mean NLL); the error is the standard error of the mean NLL carried
 * through exp, as llama.cpp prints it.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "cli/cli.h"
#include "runtime/generate.h"

enum { OPT_CHUNKS = OPT_CMD_FIRST, OPT_REFERENCE };

static void help(void)
{
    printf("usage: forge perplexity [options] -f FILE\n\n"
           "Perplexity of the model on FILE, as llama.cpp's perplexity tool computes it:\n"
           "chunks of -c tokens, each scored on its second half.\n\n"
           "  -f, --file FILE        the text\n"
           "      --chunks N         score only the first N chunks (default: all)\n");
    fg_cli_engine_help();
    printf("  (-c defaults to 512 here, as in llama.cpp's tool)\n"
           "  -h, --help             show this help\n");
}

typedef struct nll_ctx {
    const int32_t *chunk; /* the chunk's tokens (targets) */
    int32_t first;        /* first position scored */
    int32_t n_ctx, n_vocab;
    double nll, nll2;     /* sums of NLL and NLL^2 */
    int64_t count;
} nll_ctx;

/* Scores position i: -log softmax(logits)[chunk[i+1]], in double. */
static void score(void *p, int32_t i, const float *logits)
{
    nll_ctx *c = p;
    if (i < c->first || i >= c->n_ctx - 1) return;
    float mx = logits[0];
    for (int32_t v = 1; v < c->n_vocab; v++)
        if (logits[v] > mx) mx = logits[v];
    double sum = 0;
    for (int32_t v = 0; v < c->n_vocab; v++) sum += exp((double)logits[v] - mx);
    double nll = log(sum) + mx - logits[c->chunk[i + 1]];
    c->nll += nll;
    c->nll2 += nll * nll;
    c->count++;
}

static void progress(int done, int total, double ppl, double eta_s)
{
    fputc('\r', stderr);
    fg_cli_bar((uint64_t)done, (uint64_t)total);
    fprintf(stderr, " %d/%d chunks  ppl %.4f  eta %.0f s ", done, total, ppl, eta_s);
    fflush(stderr);
}

int fg_cli_perplexity(int argc, char **argv)
{
    static const struct option opts[] = {
        FG_CLI_ENGINE_OPTIONS,
        {"file", required_argument, 0, 'f'},
        {"chunks", required_argument, 0, OPT_CHUNKS},
        {"reference", no_argument, 0, OPT_REFERENCE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    fg_cli_engine_opts eo = {.n_ctx = 512};
    const char *file = NULL;
    long max_chunks = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, FG_CLI_ENGINE_SHORT "f:h", opts, NULL)) != -1) {
        int r = fg_cli_engine_opt("perplexity", c, optarg, &eo);
        if (r >= 0) {
            if (r) return r;
            continue;
        }
        char *end;
        switch (c) {
        case 'f': file = optarg; break;
        case OPT_CHUNKS:
            max_chunks = strtol(optarg, &end, 10);
            if (*end || max_chunks < 1) return fg_cli_usage_error("perplexity", "--chunks must be a positive count");
            break;
        case OPT_REFERENCE: eo.reference = true; break;
        case 'h': help(); return 0;
        default: return fg_cli_usage_error("perplexity", "unknown option");
        }
    }
    if (optind < argc) return fg_cli_usage_error("perplexity", "unexpected argument '%s'", argv[optind]);
    if (!file) return fg_cli_usage_error("perplexity", "give the text with -f FILE");
    if (eo.n_ctx < 16) return fg_cli_usage_error("perplexity", "-c must be at least 16");

    char *text;
    size_t len;
    fg_status rst = fg_cli_read_file(file, &text, &len);
    if (rst != FG_OK) return fg_cli_fail(rst);

    fg_cli_engine e;
    fg_tokens toks = {0};
    fg_status st = fg_cli_engine_load(&eo, &e);
    if (st == FG_OK) st = fg_tok_encode(e.model->tok, text, len, true, false, &toks);
    free(text);
    int32_t n_ctx = eo.n_ctx;
    int64_t n_chunks = st == FG_OK ? (int64_t)toks.n / n_ctx : 0;
    if (st == FG_OK && n_chunks < 1)
        st = fg_err_set(FG_ERR_INVALID_ARG, "%s has %zu tokens, fewer than one chunk of %d (-c)", file, toks.n, n_ctx);
    if (st != FG_OK) {
        fg_tokens_free(&toks);
        fg_cli_engine_free(&e);
        return fg_cli_fail(st);
    }
    if (max_chunks && max_chunks < n_chunks) n_chunks = max_chunks;
    fprintf(stderr, "perplexity: %zu tokens, %lld chunks of %d, scoring tokens %d..%d of each\n", toks.n,
            (long long)n_chunks, n_ctx, n_ctx / 2 + 1, n_ctx - 1);

    bool add_bos = fg_tok_add_bos(e.model->tok) && fg_tok_bos(e.model->tok) >= 0;
    int32_t *chunk = malloc((size_t)n_ctx * sizeof *chunk);
    nll_ctx nc = {.chunk = chunk, .first = n_ctx / 2, .n_ctx = n_ctx, .n_vocab = fg_model_n_vocab(e.model)};
    double t0 = fg_now_ms();
    for (int64_t k = 0; k < n_chunks && st == FG_OK; k++) {
        memcpy(chunk, toks.ids + k * n_ctx, (size_t)n_ctx * sizeof *chunk);
        /* The scored targets keep the real first token; only the input sees BOS. */
        int32_t first_tok = chunk[0];
        if (add_bos) chunk[0] = fg_tok_bos(e.model->tok);
        fg_session_truncate(e.session, 0);
        st = fg_session_eval_all(e.session, chunk, n_ctx, score, &nc);
        chunk[0] = first_tok;
        double elapsed = (fg_now_ms() - t0) / 1e3;
        progress((int)(k + 1), (int)n_chunks, exp(nc.nll / (double)nc.count),
                 elapsed / (double)(k + 1) * (double)(n_chunks - k - 1));
    }
    fprintf(stderr, "\n");
    int rc = 0;
    if (st != FG_OK) {
        rc = fg_cli_fail(st);
    } else {
        double mean = nc.nll / (double)nc.count;
        double var = nc.nll2 / (double)nc.count - mean * mean;
        double err = nc.count > 1 ? sqrt(var / (double)(nc.count - 1)) : 0;
        double secs = (fg_now_ms() - t0) / 1e3;
        printf("Final estimate: PPL = %.4f +/- %.5f\n", exp(mean), exp(mean) * err);
        fprintf(stderr, "perplexity: %lld scored tokens in %.1f s (%.1f tokens/s evaluated)\n", (long long)nc.count, secs,
                (double)n_chunks * n_ctx / secs);
    }
    free(chunk);
    fg_tokens_free(&toks);
    fg_cli_engine_free(&e);
    return rc;
}
