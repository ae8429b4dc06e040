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

#include <cjson/cJSON.h>

#include "backend/backend.h"
#include "model/forward.h"
#include "model/model.h"
#include "runtime/runner.h"
#include "runtime/session.h"

/* 1 in a build under AddressSanitizer (timing checks then only report). */
#if defined(__SANITIZE_ADDRESS__)
#define FG_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FG_TEST_SANITIZED 1
#endif
#endif
#ifndef FG_TEST_SANITIZED
#define FG_TEST_SANITIZED 0
#endif

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

/* fg_test_golden_open, then the rest of the file parsed as JSON (free with
 * cJSON_Delete); NULL (with a message on stderr) if either fails. */
cJSON *fg_test_golden_json(const char *rel, const char *kind, int ver);

/* Calls fn(path, want) for each "file<TAB>substring" line of
 * tests/data/<dir>/MANIFEST (the bad-file corpora), with path the file's path
 * from the repo root; returns the number of lines, or -1 if the manifest
 * cannot be read or a line has no tab. */
int fg_test_manifest_each(const char *dir, void (*fn)(const char *path, const char *want));

/* A byte string that may hold NUL bytes. */
typedef struct fg_test_str {
    char *s; /* malloc'd, NUL-terminated for convenience */
    size_t n;
} fg_test_str;

/* Decodes the JSON string literal at *p (which must point at its opening
 * quote) into a malloc'd byte string, keeping U+0000 (cJSON's valuestring
 * stops there). Advances *p past the closing quote; false if malformed. */
bool fg_test_json_string(const char **p, fg_test_str *out);

/* A list of test strings, e.g. the shared tokenizer corpus. */
typedef struct fg_test_corpus {
    fg_test_str *v;
    size_t n;
} fg_test_corpus;

/* Reads tests/data/<rel>: the header line "forge-golden <kind> v1", then a
 * JSON array of strings. False (with a message on stderr) if the file is
 * missing, has another header or is not such an array. */
bool fg_test_corpus_load(const char *rel, const char *kind, fg_test_corpus *out);
void fg_test_corpus_free(fg_test_corpus *c);

/* A model on a backend with a forward context (batches of 64) and one
 * session: the end-to-end tests' set-up. fg_test_rig_open takes ownership
 * of be (freed by fg_test_rig_close, or at once on failure) and returns the
 * failing status with its message in fg_last_error. */
typedef struct fg_test_rig {
    fg_model *m;
    fg_backend *be;
    fg_forward *f;
    fg_session *s;
} fg_test_rig;
fg_status fg_test_rig_open(fg_test_rig *r, const char *path, fg_backend *be, int32_t n_ctx, fg_type kv);

/* Steps the runner until the n requests ids are all finished; FG_ERR_FULL
 * (with a message) if they are not within max_steps steps. */
fg_status fg_test_runner_finish(fg_runner *e, const uint64_t *ids, int n, int max_steps);
void fg_test_rig_close(fg_test_rig *r);

/* The index of the largest of n values (the first of equals). */
int32_t fg_test_argmax(const float *v, int32_t n);

/* An fg_session_eval_all callback keeping every position's logits in
 * dst[i * n_vocab ..]; ctx is an fg_test_keep. */
typedef struct fg_test_keep {
    float *dst;
    int32_t n_vocab;
} fg_test_keep;
void fg_test_keep_logits(void *ctx, int32_t i, const float *logits);

/* The end-to-end comparison with transformers on a synthetic llama model
 * (tests/data/llama-synth/<type>.json, tools/make_llama_synth.py): the
 * rig's logits at every position of the golden's prompt (one batch), as the
 * largest per-position ||forge - ref|| / ||ref|| and the largest absolute
 * difference, and how many of the 64 greedy tokens (token by token) match
 * before the first difference. False, with a message on stderr, if the
 * golden cannot be read or forge fails. */
typedef struct fg_test_synth {
    double max_rel, max_abs;
    int n_pos, greedy_same, n_greedy;
} fg_test_synth;
bool fg_test_synth_compare(fg_test_rig *r, const char *type, fg_test_synth *out);

/* The argmax of the rig's logits at each of n teacher-forced positions of
 * ids (one batch, from an empty session) into top[n], and, if margin is not
 * NULL, how far the largest logit is above the second into margin[n]. */
fg_status fg_test_top1(fg_test_rig *r, const int32_t *ids, int n, int32_t *top, float *margin);

#endif
