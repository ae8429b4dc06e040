/*
 * engine.c — what forge run, chat and perplexity share: the model/backend
 * options and loading a model onto a backend for one sequence.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "backend/gpu/gpu.h"
#include "base/err.h"
#include "cli/cli.h"

int fg_cli_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, int32_t *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < lo || v > hi)
        return fg_cli_usage_error(cmd, "%s must be an integer in %ld..%ld, not '%s'", opt, lo, hi, s);
    *out = (int32_t)v;
    return 0;
}

int fg_cli_engine_opt(const char *cmd, int c, const char *arg, fg_cli_engine_opts *o)
{
    switch (c) {
    case 'm': o->model = arg; return 0;
    case 'c': return fg_cli_parse_int(cmd, "-c/--ctx-size", arg, 0, 1 << 24, &o->n_ctx);
    case 'b': return fg_cli_parse_int(cmd, "-b/--batch-size", arg, 1, 1 << 16, &o->n_batch);
    case 't': return fg_cli_parse_int(cmd, "-t/--threads", arg, 0, 1024, &o->n_threads);
    case OPT_KV_TYPE:
        if (strcasecmp(arg, "f16") == 0) o->kv_f32 = false;
        else if (strcasecmp(arg, "f32") == 0) o->kv_f32 = true;
        else return fg_cli_usage_error(cmd, "--kv-type must be f16 or f32, not '%s'", arg);
        return 0;
    case OPT_DEVICE:
        if (strcmp(arg, "cpu") && strcmp(arg, "auto") && strcmp(arg, "cuda") && strcmp(arg, "hip"))
            return fg_cli_usage_error(cmd, "--device must be auto, cpu, cuda or hip, not '%s'", arg);
        o->device = arg;
        return 0;
    }
    return -1;
}

void fg_cli_engine_help(void)
{
    printf("model and backend:\n"
           "  -m, --model PATH       the model (default: %s)\n"
           "  -c, --ctx-size N       context length in tokens (default: the model's, at most 4096)\n"
           "  -b, --batch-size N     prompt tokens per step (default: 512)\n"
           "  -t, --threads N        CPU threads (default: one per core)\n"
           "      --kv-type T        KV cache type: f16 (default, as llama.cpp) or f32\n"
           "      --device D         auto (default), cpu, cuda or hip\n",
           fg_cli_default_model());
}

/* The weight-loading bar: drawn on a terminal, for models of 256 MB and
 * more (smaller ones load before anyone would read it). */
typedef struct load_bar {
    bool drawn;
} load_bar;

static void load_progress(void *ctx, uint64_t done, uint64_t total)
{
    load_bar *b = ctx;
    if (total < (256u << 20) || !isatty(STDERR_FILENO)) return;
    fprintf(stderr, "\rforge: loading weights ");
    fg_cli_bar(done, total);
    fprintf(stderr, " %3d%% (%.1f of %.1f GB)", (int)(100 * done / total), done / 1e9, total / 1e9);
    fflush(stderr);
    b->drawn = true;
}

fg_status fg_cli_engine_load(const fg_cli_engine_opts *o, fg_cli_engine *e)
{
    memset(e, 0, sizeof *e);
    const char *dev = o->device ? o->device : "auto";
    const char *api = fg_backend_gpu_api();
    bool want_gpu = strcmp(dev, "cuda") == 0 || strcmp(dev, "hip") == 0;
    if (want_gpu && api && strcasecmp(api, dev) != 0)
        return fg_err_set(FG_ERR_UNSUPPORTED, "--device %s: this build of forge has a %s backend, not %s; use --device %s",
                          dev, api, dev, api[0] == 'C' ? "cuda" : "hip");
    bool use_gpu = want_gpu || (strcmp(dev, "auto") == 0 && !o->reference && fg_backend_gpu_count() > 0);
    fg_status st = fg_model_open(o->model ? o->model : fg_cli_default_model(), &e->model);
    if (st != FG_OK) return st;
    int32_t n_ctx = o->n_ctx;
    if (n_ctx <= 0) n_ctx = e->model->hp.n_ctx_train > 0 && e->model->hp.n_ctx_train < 4096 ? (int32_t)e->model->hp.n_ctx_train : 4096;
    if (e->model->hp.n_ctx_train > 0 && n_ctx > e->model->hp.n_ctx_train)
        fprintf(stderr, "forge: warning: context %d is longer than the model was trained for (%lld)\n", n_ctx,
                (long long)e->model->hp.n_ctx_train);
    int32_t n_batch = o->n_batch > 0 ? o->n_batch : 512;
    load_bar bar = {false};
    if (use_gpu && o->reference) {
        fg_cli_engine_free(e);
        return fg_err_set(FG_ERR_INVALID_ARG, "--reference is a CPU backend mode; use it with --device cpu");
    }
    st = use_gpu ? fg_backend_gpu_init(0, &e->be) : fg_backend_cpu_init(o->n_threads, o->reference, &e->be);
    if (st == FG_OK && use_gpu) fprintf(stderr, "forge: GPU: %s\n", fg_backend_gpu_describe(e->be));
    if (st == FG_OK && o->model_only) return FG_OK;
    if (st != FG_OK ||
        (st = fg_forward_init(e->model, e->be, n_ctx, n_batch, o->kv_f32 ? FG_TYPE_F32 : FG_TYPE_F16, load_progress,
                              &bar, &e->fwd)) != FG_OK ||
        (st = fg_session_init(e->fwd, fg_model_n_vocab(e->model), &e->session)) != FG_OK) {
        if (bar.drawn) fputc('\n', stderr);
        fg_cli_engine_free(e);
        return st;
    }
    if (bar.drawn) fputc('\n', stderr);
    return FG_OK;
}

void fg_cli_engine_free(fg_cli_engine *e)
{
    fg_session_free(e->session);
    fg_forward_free(e->fwd);
    fg_backend_free(e->be);
    fg_model_close(e->model);
    memset(e, 0, sizeof *e);
}
