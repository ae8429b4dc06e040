/*
 * engine.c — what the commands that run a model share: the model/backend
 * options, and opening the model either on the engine of forge.h (run,
 * chat) or on a backend with one session (perplexity, bench). The device
 * choice and the default context are the library's (runtime/load.h), so
 * both ways pick the same.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/err.h"
#include "cli/cli.h"
#include "runtime/load.h"

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
    case OPT_KV_FRACTION: {
        char *end;
        double v = strtod(arg, &end);
        if (*arg == 0 || *end || !(v > 0 && v <= 1))
            return fg_cli_usage_error(cmd, "--kv-fraction must be a number in (0, 1], not '%s'", arg);
        o->kv_fraction = (float)v;
        return 0;
    }
    case OPT_BATCH_INVARIANT: o->batch_invariant = true; return 0;
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

void fg_cli_serving_help(void)
{
    printf("      --kv-fraction F    the share of free memory (after the weights) for the KV cache, in (0, 1]\n"
           "                         (default: 0.9 on a GPU; on the CPU the cache is one context)\n"
           "      --batch-invariant  GPU: the same kernels at every batch size, so output does not depend on\n"
           "                         what else is batched (slower; the CPU always is)\n");
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

/* Running past the training context works, but the model was never
 * trained to attend that far: say so. */
static void warn_long_ctx(const fg_model *m, int32_t n_ctx)
{
    if (m->hp.n_ctx_train > 0 && n_ctx > m->hp.n_ctx_train)
        fprintf(stderr, "forge: warning: context %d is longer than the model was trained for (%lld)\n", n_ctx,
                (long long)m->hp.n_ctx_train);
}

fg_status fg_cli_engine_load(const fg_cli_engine_opts *o, fg_cli_engine *e)
{
    memset(e, 0, sizeof *e);
    fg_status st = fg_model_open(o->model ? o->model : fg_cli_default_model(), &e->model);
    if (st != FG_OK) return st;
    int32_t n_ctx = o->n_ctx > 0 ? o->n_ctx : fg_load_default_ctx(e->model);
    warn_long_ctx(e->model, n_ctx);
    int32_t n_batch = o->n_batch > 0 ? o->n_batch : 512;
    load_bar bar = {false};
    st = fg_backend_open(o->device, o->n_threads, o->reference, &e->be);
    if (st == FG_OK && fg_backend_on_device(e->be)) fprintf(stderr, "forge: GPU: %s\n", e->be->ops->describe(e->be));
    if (st == FG_OK && o->batch_invariant) e->be->ops->set_batch_invariant(e->be, true);
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

fg_status fg_cli_engine_open(const fg_cli_engine_opts *o, int32_t max_running, fg_engine **out)
{
    fg_engine_config c = fg_engine_config_default();
    c.device = o->device;
    c.n_threads = o->n_threads;
    c.cpu_reference = o->reference;
    c.ctx = o->n_ctx;
    c.max_step_tokens = o->n_batch;
    c.kv_type = o->kv_f32 ? FG_KV_F32 : FG_KV_F16;
    if (o->kv_fraction > 0) c.kv_fraction = o->kv_fraction;
    c.batch_invariant = o->batch_invariant;
    c.max_running = max_running;
    c.max_waiting = max_running;
    load_bar bar = {false};
    c.on_load_progress = load_progress;
    c.load_progress_ud = &bar;
    fg_status st = fg_engine_open(o->model ? o->model : fg_cli_default_model(), &c, out);
    if (bar.drawn) fputc('\n', stderr);
    if (st != FG_OK) return st;
    fg_engine_stats s;
    fg_engine_stats_get(*out, &s);
    if (strcmp(s.device, "cpu") != 0) fprintf(stderr, "forge: GPU: %s\n", s.device);
    warn_long_ctx(fg_engine_model(*out), s.ctx);
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

fg_status fg_cli_stream(fg_engine *e, uint64_t id, fg_buf *reply, fg_request_info *info)
{
    char buf[4096];
    for (;;) {
        FG_TRY(fg_request_wait(e, id, -1));
        /* The status first: once it says ended, the poll after it takes the rest. */
        FG_TRY(fg_request_status(e, id, info));
        size_t n;
        do {
            FG_TRY(fg_request_poll(e, id, NULL, 0, NULL, buf, sizeof buf, &n));
            fwrite(buf, 1, n, stdout);
            if (reply && !fg_buf_append(reply, buf, n)) return fg_err_set(FG_ERR_NOMEM, "out of memory for the reply");
        } while (n == sizeof buf);
        fflush(stdout);
        if (info->state == FG_REQUEST_FAILED) return fg_err_set(FG_ERR_DEVICE, "%s", info->error);
        if (info->state >= FG_REQUEST_FINISHED) return FG_OK;
        /* Tokens are polled too, so the next wait blocks until new output. */
        int32_t ids[256];
        while (fg_request_poll(e, id, ids, 256, &n, NULL, 0, NULL) == FG_OK && n == 256) {
        }
    }
}
