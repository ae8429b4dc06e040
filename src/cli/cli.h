/*
 * cli.h — what the forge subcommands share: their entry points, the default
 * model path and error printing.
 */
#ifndef FG_CLI_H
#define FG_CLI_H

#include "backend/backend.h"
#include "base/buf.h"
#include "forge.h"
#include "model/forward.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/session.h"

int fg_cli_info(int argc, char **argv);
int fg_cli_tokenize(int argc, char **argv);
int fg_cli_run(int argc, char **argv);
int fg_cli_chat(int argc, char **argv);
int fg_cli_perplexity(int argc, char **argv);
int fg_cli_bench(int argc, char **argv);
int fg_cli_quantize(int argc, char **argv);
int fg_cli_serve(int argc, char **argv);

/* ---- Loading a model to run it (engine.c) ---------------------------------- */

/* Long-option codes shared by the commands that run a model; a command's
 * own codes start at OPT_CMD_FIRST. */
enum {
    OPT_KV_TYPE = 1000,
    OPT_DEVICE,
    OPT_TEMP,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_MIN_P,
    OPT_REPEAT_PENALTY,
    OPT_REPEAT_LAST_N,
    OPT_PRESENCE,
    OPT_FREQUENCY,
    OPT_SEED,
    OPT_STOP,
    OPT_IGNORE_EOS,
    OPT_KV_FRACTION,
    OPT_BATCH_INVARIANT,
    OPT_CMD_FIRST,
};

/* getopt_long entries for the shared options, to splice into a command's table. */
#define FG_CLI_ENGINE_OPTIONS                                                                  \
    {"model", required_argument, 0, 'm'}, {"ctx-size", required_argument, 0, 'c'},              \
        {"batch-size", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},      \
        {"kv-type", required_argument, 0, OPT_KV_TYPE}, {"device", required_argument, 0, OPT_DEVICE}
#define FG_CLI_ENGINE_SHORT "m:c:b:t:"
/* The options of the commands that run on the engine (forge.h's fg_engine):
 * run and chat. fg_cli_engine_opt takes them too. */
#define FG_CLI_SERVING_OPTIONS                                                                 \
    {"kv-fraction", required_argument, 0, OPT_KV_FRACTION}, {"batch-invariant", no_argument, 0, OPT_BATCH_INVARIANT}

typedef struct fg_cli_engine_opts {
    const char *model;   /* NULL: the default model */
    int32_t n_ctx;       /* 0: the model's, at most 4096 */
    int32_t n_batch;     /* 0: 512 */
    int32_t n_threads;   /* 0: one per core */
    bool kv_f32;         /* KV cache in F32 instead of F16 */
    const char *device;  /* NULL: auto */
    bool reference;      /* exact CPU arithmetic (tests) */
    bool model_only;     /* load the model and open the backend, but no forward context or session */
    float kv_fraction;   /* the engine's KV pool share of free memory; 0: its default */
    bool batch_invariant; /* the engine's batch-invariant mode */
} fg_cli_engine_opts;

/* ---- Sampling and stopping options (sampling.c) ----------------------------- */

#define FG_CLI_GEN_OPTIONS                                                                              \
    {"n-predict", required_argument, 0, 'n'}, {"temp", required_argument, 0, OPT_TEMP},                  \
        {"top-k", required_argument, 0, OPT_TOP_K}, {"top-p", required_argument, 0, OPT_TOP_P},          \
        {"min-p", required_argument, 0, OPT_MIN_P},                                                      \
        {"repeat-penalty", required_argument, 0, OPT_REPEAT_PENALTY},                                    \
        {"repeat-last-n", required_argument, 0, OPT_REPEAT_LAST_N},                                      \
        {"presence-penalty", required_argument, 0, OPT_PRESENCE},                                        \
        {"frequency-penalty", required_argument, 0, OPT_FREQUENCY}, {"seed", required_argument, 0, OPT_SEED}, \
        {"stop", required_argument, 0, OPT_STOP}, {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS}
#define FG_CLI_GEN_SHORT "n:"

enum { FG_CLI_MAX_STOPS = 16 };

typedef struct fg_cli_gen_opts {
    fg_sampler_params sp;
    int32_t n_predict;
    const char *stops[FG_CLI_MAX_STOPS];
    int32_t n_stops;
    bool ignore_eos;
} fg_cli_gen_opts;

/* Defaults: llama.cpp's sampling defaults, n_predict as given. */
void fg_cli_gen_defaults(fg_cli_gen_opts *g, int32_t n_predict);
/* Like fg_cli_engine_opt, for the sampling and stopping options. */
int fg_cli_gen_opt(const char *cmd, int c, const char *arg, fg_cli_gen_opts *g);
/* Range-checks the sampling parameters; 0, or 2 after a usage error. */
int fg_cli_gen_check(const char *cmd, const fg_cli_gen_opts *g);
void fg_cli_gen_help(const fg_cli_gen_opts *defaults);
/* A request for prompt[0..n) on an engine of context ctx, with g's
 * sampling, stops and EOS choice; -n beyond the context (or -1) becomes
 * max_tokens -1: until the context is full. p borrows g's stop strings. */
fg_request_params fg_cli_gen_request(const fg_cli_gen_opts *g, const int32_t *prompt, size_t n, int32_t ctx);

typedef struct fg_cli_engine {
    fg_model *model;
    fg_backend *be;
    fg_forward *fwd;
    fg_session *session;
} fg_cli_engine;

/* Handles option c if it is a shared one: returns 0 when taken, 2 (after
 * printing a usage error) when its value is bad, -1 when not a shared option. */
int fg_cli_engine_opt(const char *cmd, int c, const char *arg, fg_cli_engine_opts *o);
/* Parses option opt's value s as an integer in lo..hi into *out; 0, or a
 * usage error (fg_cli_usage_error's return) naming the option and range. */
int fg_cli_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, int32_t *out);
void fg_cli_engine_help(void);
void fg_cli_serving_help(void);
/* The model on a backend with a forward context and one session, for the
 * commands that drive one sequence themselves (perplexity, bench). */
fg_status fg_cli_engine_load(const fg_cli_engine_opts *o, fg_cli_engine *e);
void fg_cli_engine_free(fg_cli_engine *e);
/* The model on an engine (forge.h) serving up to max_running sequences:
 * what run and chat use. Prints the GPU line and the weights' progress bar
 * as fg_cli_engine_load does. Close with fg_engine_close. */
fg_status fg_cli_engine_open(const fg_cli_engine_opts *o, int32_t max_running, fg_engine **out);

/* Streams the text of request id to stdout as the engine makes it (and
 * appends it to reply, if not NULL) until the request ends; *info is then
 * its final status. A FAILED request fails with its message. */
fg_status fg_cli_stream(fg_engine *e, uint64_t id, fg_buf *reply, fg_request_info *info);

/* The model used when -m is not given: $FORGE_MODEL, else the default model
 * under $FORGE_MODEL_DIR or models/. */
const char *fg_cli_default_model(void);

/* Reads a whole file (path NULL: standard input) into a malloc'd
 * NUL-terminated buffer in *out, *len bytes (may be NULL). */
fg_status fg_cli_read_file(const char *path, char **out, size_t *len);

/* Prints "forge: error: <fg_last_error()>" to stderr and returns exit code 1. */
int fg_cli_fail(fg_status st);

/* Writes a progress bar, "[####      ]", for done of total to stderr (the
 * caller writes what goes around it, and \r to redraw). */
void fg_cli_bar(uint64_t done, uint64_t total);

/* Prints "forge CMD: error: <msg>" plus a --help hint; returns exit code 2. */
int fg_cli_usage_error(const char *cmd, const char *fmt, ...);

#endif
