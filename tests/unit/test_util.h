/*
 * test_util.h — helpers shared by the Criterion unit tests: locating the
 * fetched models and committed goldens, and reading whole files.
 *
 * Goldens live in tests/data/ and start with a header line
 *     forge-golden <kind> v<version>
 * that fg_test_golden_open checks, so a stale or foreign file fails loudly.
 */
#ifndef FG_TEST_UTIL_H
#define FG_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Path of a fetched model under $FORGE_MODEL_DIR (default "models"), written
 * into buf. Returns false if the file is absent; the test should then call
 * cr_skip_test("SKIPPED: ...") naming the model and `make models`. */
bool fg_test_model_path(const char *file, char *buf, size_t cap);

#define FG_TEST_SMOLLM2 "SmolLM2-135M-Instruct.Q4_1.gguf"
#define FG_TEST_GEMMA3 "gemma-3-270m-q4_k_m.gguf"

/* Reads a whole file into a malloc'd buffer (NUL-terminated, *len excludes the
 * NUL). Returns NULL if it cannot be read. */
char *fg_test_read_file(const char *path, size_t *len);

/* Opens tests/data/<rel>, checks its header line is "forge-golden <kind> v<ver>"
 * and returns the stream positioned after it; NULL (with a message on stderr)
 * on any mismatch. */
FILE *fg_test_golden_open(const char *rel, const char *kind, int ver);

#endif
