/*
 * cli.h — what the forge subcommands share: their entry points, the default
 * model path and error printing.
 */
#ifndef FG_CLI_H
#define FG_CLI_H

#include "forge.h"

int fg_cli_info(int argc, char **argv);
int fg_cli_tokenize(int argc, char **argv);

/* The model used when -m is not given: $FORGE_MODEL, else the default model
 * under $FORGE_MODEL_DIR or models/. */
const char *fg_cli_default_model(void);

/* Prints "forge: error: <fg_last_error()>" to stderr and returns exit code 1. */
int fg_cli_fail(fg_status st);

/* Prints "forge CMD: error: <msg>" plus a --help hint; returns exit code 2. */
int fg_cli_usage_error(const char *cmd, const char *fmt, ...);

#endif
