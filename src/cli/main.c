/*
 * main.c — the forge command: dispatches to one subcommand per file.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "cli/cli.h"

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand commands[] = {
    {"info", fg_cli_info, "print a model's architecture, hyperparameters, tensors and vocab"},
    {"tokenize", fg_cli_tokenize, "print the token ids and pieces of a text"},
    {"run", fg_cli_run, "generate a continuation of a prompt and stream it"},
    {"chat", fg_cli_chat, "talk with a model in a loop, with its chat template"},
    {"perplexity", fg_cli_perplexity, "perplexity of a model on a text file (llama.cpp's method)"},
    {"bench", fg_cli_bench, "prompt and generation speed, like llama-bench"},
    {"quantize", fg_cli_quantize, "write a quantized copy of a model (Q8_0 ... Q4_K_M), as llama.cpp does"},
    {"serve", fg_cli_serve, "an OpenAI-compatible HTTP server (completions, chat, metrics)"},
};

static void usage(FILE *f)
{
    fprintf(f,
            "forge %s — LLM inference for GGUF models\n\n"
            "usage: forge COMMAND [options]   (forge COMMAND --help for its options)\n\n"
            "commands:\n",
            fg_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\noptions:\n"
               "  -h, --help     show this help\n"
               "  --version      print the version\n\n"
               "The default model is %s (fetch it with tools/fetch-model).\n",
            fg_cli_default_model());
}

const char *fg_cli_default_model(void)
{
    static char buf[4096];
    const char *m = getenv("FORGE_MODEL");
    if (m && *m) return m;
    const char *dir = getenv("FORGE_MODEL_DIR");
    snprintf(buf, sizeof buf, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", dir && *dir ? dir : "models");
    return buf;
}

fg_status fg_cli_read_file(const char *path, char **out, size_t *len)
{
    *out = NULL;
    FILE *f = path ? fopen(path, "rb") : stdin;
    if (!f) return fg_err_set(FG_ERR_IO, "%s: cannot open for reading: %s", path, strerror(errno));
    size_t cap = 65536, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n < 4096) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    bool failed = buf && ferror(f);
    if (path) fclose(f);
    if (!buf) return fg_err_set(FG_ERR_NOMEM, "%s: out of memory reading it", path ? path : "standard input");
    if (failed) {
        free(buf);
        return fg_err_set(FG_ERR_IO, "%s: read error", path ? path : "standard input");
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return FG_OK;
}

void fg_cli_bar(uint64_t done, uint64_t total)
{
    enum { WIDTH = 30 };
    int filled = total ? (int)(done * WIDTH / total) : WIDTH;
    fputc('[', stderr);
    for (int i = 0; i < WIDTH; i++) fputc(i < filled ? '#' : ' ', stderr);
    fputc(']', stderr);
}

int fg_cli_fail(fg_status st)
{
    fprintf(stderr, "forge: error: %s\n", fg_last_error());
    (void)st;
    return 1;
}

int fg_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "forge %s: error: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see forge %s --help)\n", cmd);
    va_end(ap);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("forge %s\n", fg_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(cmd, commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "forge: error: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
