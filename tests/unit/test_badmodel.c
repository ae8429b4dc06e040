/*
 * test_badmodel.c — models forge cannot run fail at load with an error
 * naming what is unsupported (issue 7, "Bad files").
 *
 * Each bad file is a committed synthetic llama (tests/data/llama-synth)
 * copied through forge's GGUF writer with one thing changed, written to
 * /tmp at test time:
 *   - general.architecture set to one forge does not run (bert, gpt-oss),
 *     its hyperparameter keys renamed to match as a converter writes them;
 *   - one 2-D weight given a type no forge backend computes with (IQ2_XXS,
 *     TQ2_0; the bytes are zeros, never read).
 *   - the cases of tests/data/bad-model/CASES (issue 14): a hyperparameter
 *     no model can have (an odd rope dimension, an infinite RoPE base, an
 *     epsilon of 4.29e9, ...) or a tensor of the wrong shape (ne[0] = 0,
 *     ...), which must be refused at load naming the key or tensor, never
 *     divided by, asserted on at the first step or run to garbage.
 * All go through the load paths the CLI takes on the CPU backend:
 * fg_engine_open (forge run, chat, serve) and fg_model_open +
 * fg_backend_open + fg_forward_init (perplexity, bench). The unchanged copy
 * loads on both, so the one change is what fails. The e2e tier checks the
 * same through `forge run` (tests/e2e/make_bad_models.py, and
 * tests/e2e/make_bad_smollm2.py for the CASES on the real SmolLM2).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forge.h"
#include "gguf/gguf.h"
#include "model/arch.h"
#include "model/forward.h"
#include "model/model.h"
#include "runtime/load.h"
#include "test_util.h"

/* What a variant changes in its source file. */
typedef struct variant {
    const char *arch;      /* general.architecture to write, llama.* keys renamed to it; NULL: kept */
    const char *tokenizer; /* tokenizer.ggml.model to write; NULL: kept */
    const char *tensor;    /* the weight whose type changes; NULL: none */
    fg_type type;          /* its new type */
    const char *changes;   /* a CASES line's changes (tests/data/bad-model/CASES); NULL: none */
} variant;

/* The value of change "KEY[:TYPE]=VALUE" set on w, in TYPE or else the type
 * the key has in g. */
static void set_changed_key(fg_gguf_writer *w, const fg_gguf *g, const char *change)
{
    char key[256], type[8] = "";
    const char *eq = strchr(change, '='), *colon = strchr(change, ':');
    cr_assert(eq, "change '%s' has no '='", change);
    const char *key_end = colon && colon < eq ? colon : eq;
    snprintf(key, sizeof key, "%.*s", (int)(key_end - change), change);
    if (key_end == colon) snprintf(type, sizeof type, "%.*s", (int)(eq - colon - 1), colon + 1);
    if (!type[0]) {
        const fg_gguf_kv *kv = fg_gguf_find(g, key);
        cr_assert(kv, "change '%s': the source has no key %s; give its type", change, key);
        const char *names[FG_GGUF_VTYPE_COUNT] = {[FG_GGUF_UINT32] = "u32", [FG_GGUF_INT32] = "i32",
                                                  [FG_GGUF_UINT64] = "u64", [FG_GGUF_FLOAT32] = "f32",
                                                  [FG_GGUF_STRING] = "str"};
        cr_assert(names[kv->val.type], "change '%s': key type %s is not one a case sets", change,
                  fg_gguf_vtype_name(kv->val.type));
        snprintf(type, sizeof type, "%s", names[kv->val.type]);
    }
    const char *v = eq + 1;
    fg_status st;
    if (strcmp(type, "u32") == 0) st = fg_gguf_writer_set_u32(w, key, (uint32_t)strtoul(v, NULL, 10));
    else if (strcmp(type, "i32") == 0) st = fg_gguf_writer_set_i32(w, key, (int32_t)strtol(v, NULL, 10));
    else if (strcmp(type, "u64") == 0) st = fg_gguf_writer_set_u64(w, key, strtoull(v, NULL, 10));
    else if (strcmp(type, "f32") == 0) st = fg_gguf_writer_set_f32(w, key, strtof(v, NULL));
    else if (strcmp(type, "str") == 0) st = fg_gguf_writer_set_str(w, key, v);
    else cr_assert_fail("change '%s': unknown type %s", change, type);
    cr_assert_eq(st, FG_OK, "%s", fg_last_error());
}

/* Applies the space-separated changes to the file's keys (on w, after the
 * copied ones: a repeated key replaces the value) or to tensor name's
 * dimensions ne ("TENSOR[D]=N"). With name NULL, the keys; else that
 * tensor's. */
static void apply_changes(const char *changes, fg_gguf_writer *w, const fg_gguf *g, const char *name, int64_t *ne)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", changes);
    char *save;
    for (char *c = strtok_r(buf, " ", &save); c; c = strtok_r(NULL, " ", &save)) {
        char *br = strchr(c, '[');
        if (!br || br > strchr(c, '=')) {
            if (!name) set_changed_key(w, g, c);
            continue;
        }
        if (!name || strncmp(c, name, (size_t)(br - c)) != 0 || name[br - c]) continue;
        int d = atoi(br + 1);
        cr_assert(d >= 0 && d < FG_GGUF_MAX_DIMS, "change '%s'", c);
        ne[d] = strtoll(strchr(c, '=') + 1, NULL, 10);
    }
}

/* Copies src (a llama file) to a new temporary file, path (of at least 64
 * bytes), with v's changes. */
static void write_variant(const char *src, const variant *v, char *path)
{
    strcpy(path, "/tmp/forge-badmodel-XXXXXX.gguf");
    int fd = mkstemps(path, 5);
    cr_assert_geq(fd, 0);
    close(fd);
    fg_gguf *g;
    cr_assert_eq(fg_gguf_open(src, &g), FG_OK, "%s", fg_last_error());
    fg_gguf_writer *w = fg_gguf_writer_init();
    cr_assert_not_null(w);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const fg_gguf_kv *kv = &g->kv[i];
        char key[256];
        cr_assert_lt(kv->key.len, sizeof key);
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.ptr);
        if (strcmp(key, "general.alignment") == 0) continue; /* the writer's own */
        if (v->arch && strcmp(key, "general.architecture") == 0) {
            cr_assert_eq(fg_gguf_writer_set_str(w, key, v->arch), FG_OK);
        } else if (v->tokenizer && strcmp(key, "tokenizer.ggml.model") == 0) {
            cr_assert_eq(fg_gguf_writer_set_str(w, key, v->tokenizer), FG_OK);
        } else if (v->arch && strncmp(key, "llama.", 6) == 0) {
            char renamed[300];
            snprintf(renamed, sizeof renamed, "%s.%s", v->arch, key + 6);
            cr_assert_eq(fg_gguf_writer_set_value(w, renamed, &kv->val), FG_OK, "%s", fg_last_error());
        } else {
            cr_assert_eq(fg_gguf_writer_set_value(w, key, &kv->val), FG_OK, "%s", fg_last_error());
        }
    }
    if (v->changes) apply_changes(v->changes, w, g, NULL, NULL);
    void *bad = NULL;
    bool changed = false;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fg_gguf_tensor *t = &g->tensors[i];
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        fg_type type = t->type;
        const void *data = t->data;
        if (v->tensor && strcmp(name, v->tensor) == 0) {
            int64_t rows = (int64_t)(t->n_elems / (uint64_t)t->ne[0]);
            type = v->type;
            data = bad = calloc((size_t)rows, fg_type_row_size(type, t->ne[0]));
            cr_assert_not_null(bad);
            changed = true;
        }
        int64_t ne[FG_GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        if (v->changes) apply_changes(v->changes, w, g, name, ne);
        cr_assert_eq(fg_gguf_writer_add_tensor(w, name, type, t->n_dims, ne, data), FG_OK, "%s", fg_last_error());
    }
    cr_assert(!v->tensor || changed, "%s has no tensor %s", src, v->tensor);
    cr_assert_eq(fg_gguf_writer_write(w, path, g->alignment), FG_OK, "%s", fg_last_error());
    fg_gguf_writer_free(w);
    free(bad);
    fg_gguf_close(g);
}

/* The engine of forge run on the CPU: small, one thread. */
static fg_status engine_open(const char *path, fg_engine **e)
{
    fg_engine_config c = fg_engine_config_default();
    c.device = "cpu";
    c.n_threads = 1;
    c.ctx = 64;
    c.max_running = 1;
    c.max_step_tokens = 16;
    return fg_engine_open(path, &c, e);
}

/* The other load path (perplexity, bench): model, CPU backend, forward
 * context. Stops at the first failure; everything is freed either way. */
static fg_status forward_open(const char *path)
{
    fg_model *m = NULL;
    fg_backend *be = NULL;
    fg_forward *f = NULL;
    fg_status st = fg_model_open(path, &m);
    if (st == FG_OK) st = fg_backend_open("cpu", 1, false, &be);
    if (st == FG_OK) st = fg_forward_init(m, be, 64, 16, FG_TYPE_F16, NULL, NULL, &f);
    fg_forward_free(f);
    fg_backend_free(be);
    fg_model_close(m);
    return st;
}

/* Asserts that st is FG_ERR_UNSUPPORTED and the message holds each of the
 * NULL-terminated strings. */
static void expect_unsupported(fg_status st, const char *how, ...)
{
    cr_assert_eq(st, FG_ERR_UNSUPPORTED, "%s: status %s, not unsupported: %s", how, fg_status_str(st), fg_last_error());
    va_list ap;
    va_start(ap, how);
    for (const char *want; (want = va_arg(ap, const char *));)
        cr_assert(strstr(fg_last_error(), want), "%s: the message lacks '%s': %s", how, want, fg_last_error());
    va_end(ap);
}

/* ---- The copy itself is a model forge runs ------------------------------------------- */

Test(badmodel, unchanged_copy_loads)
{
    const char *srcs[] = {"tests/data/llama-synth/gqa-q4_0.gguf", "tests/data/llama-synth/mqa-q4_0.gguf"};
    for (size_t i = 0; i < sizeof srcs / sizeof srcs[0]; i++) {
        char path[64];
        write_variant(srcs[i], &(variant){0}, path);
        cr_assert_eq(forward_open(path), FG_OK, "%s: %s", srcs[i], fg_last_error());
        fg_engine *e = NULL;
        cr_assert_eq(engine_open(path, &e), FG_OK, "%s: %s", srcs[i], fg_last_error());
        fg_engine_close(e);
        unlink(path);
    }
}

/* ---- An architecture forge does not run ----------------------------------------------- */

static void check_arch(const variant *v)
{
    char path[64], quoted[80];
    write_variant("tests/data/llama-synth/gqa-q4_0.gguf", v, path);
    snprintf(quoted, sizeof quoted, "architecture '%s'", v->arch);

    fg_model *m = (fg_model *)1;
    expect_unsupported(fg_model_open(path, &m), "fg_model_open", path, quoted, fg_arch_names(), (char *)NULL);
    cr_assert_null(m);
    printf("badmodel: %s: %s\n", v->arch, fg_last_error());
    expect_unsupported(forward_open(path), "model + backend + forward", path, quoted, fg_arch_names(), (char *)NULL);
    fg_engine *e = (fg_engine *)1;
    expect_unsupported(engine_open(path, &e), "fg_engine_open", path, quoted, fg_arch_names(), (char *)NULL);
    cr_assert_null(e);
    unlink(path);
}

/* BERT as llama.cpp's converter writes it also has a WordPiece vocabulary
 * ("bert"), which forge does not read either: the architecture is what the
 * error names. */
Test(badmodel, arch_bert) { check_arch(&(variant){.arch = "bert", .tokenizer = "bert"}); }
Test(badmodel, arch_gpt_oss) { check_arch(&(variant){.arch = "gpt-oss"}); }

/* The architecture is judged before the rest of the metadata: a file with
 * nothing but general.architecture names it, not the keys it lacks. */
Test(badmodel, arch_before_other_metadata)
{
    char path[] = "/tmp/forge-badmodel-XXXXXX.gguf";
    close(mkstemps(path, 5));
    fg_gguf_writer *w = fg_gguf_writer_init();
    cr_assert_eq(fg_gguf_writer_set_str(w, "general.architecture", "bert"), FG_OK);
    cr_assert_eq(fg_gguf_writer_write(w, path, 32), FG_OK, "%s", fg_last_error());
    fg_gguf_writer_free(w);
    fg_model *m;
    expect_unsupported(fg_model_open(path, &m), "fg_model_open", path, "architecture 'bert'", fg_arch_names(),
                       (char *)NULL);
    unlink(path);
}

/* ---- A weight of a type forge cannot compute with ----------------------------------- */

/* The mqa shape: rows of 256 (n_embd) fit the 256-element blocks of these
 * types. ffn_up is the last weight but one placed, attn_k among the first:
 * the weights placed before the failure are released (make asan). */
static void check_type(const char *tensor, fg_type type)
{
    char path[64], quoted[96];
    write_variant("tests/data/llama-synth/mqa-q4_0.gguf", &(variant){.tensor = tensor, .type = type}, path);
    snprintf(quoted, sizeof quoted, "tensor '%s'", tensor);

    /* The file itself is valid: types are judged where a backend places the weights. */
    fg_model *m;
    cr_assert_eq(fg_model_open(path, &m), FG_OK, "%s", fg_last_error());
    fg_model_close(m);
    expect_unsupported(forward_open(path), "model + backend + forward", path, quoted, fg_type_name(type),
                       (char *)NULL);
    printf("badmodel: %s %s: %s\n", tensor, fg_type_name(type), fg_last_error());
    fg_engine *e = (fg_engine *)1;
    expect_unsupported(engine_open(path, &e), "fg_engine_open", path, quoted, fg_type_name(type), (char *)NULL);
    cr_assert_null(e);
    unlink(path);
}

Test(badmodel, type_iq2_xxs) { check_type("blk.0.ffn_up.weight", FG_TYPE_IQ2_XXS); }
Test(badmodel, type_tq2_0) { check_type("blk.0.attn_k.weight", FG_TYPE_TQ2_0); }
Test(badmodel, type_tq2_0_embeddings) { check_type("token_embd.weight", FG_TYPE_TQ2_0); }

/* ---- Hyperparameters and shapes no model can have (issue 14) ------------------------ */

/* One case of tests/data/bad-model/CASES on the synthetic llama: refused
 * as FG_ERR_FORMAT with a message naming the file and holding want, on both
 * load paths; the engine is never returned (forge serve would report
 * healthy, then fail its first step). Returns whether it was; a failure is
 * printed. */
static bool check_case(const char *name, const char *changes, const char *want)
{
    char path[64];
    write_variant("tests/data/llama-synth/gqa-q4_0.gguf", &(variant){.changes = changes}, path);
    bool ok = true;
    const char *how[] = {"model + backend + forward", "fg_engine_open"};
    for (int i = 0; i < 2 && ok; i++) {
        fg_status st;
        if (i == 0) {
            st = forward_open(path);
        } else {
            fg_engine *e = NULL;
            st = engine_open(path, &e);
            ok = e == NULL;
            fg_engine_close(e);
        }
        const char *msg = fg_last_error();
        if (st != FG_ERR_FORMAT || !strstr(msg, path) || !strstr(msg, want) || !ok) {
            printf("badmodel: FAIL %s (%s) by %s: status %s, wanted '%s' in: %s\n", name, changes, how[i],
                   fg_status_str(st), want, st == FG_OK ? "(loaded)" : msg);
            ok = false;
        } else if (i == 0) {
            printf("badmodel: %s: %s\n", name, msg);
        }
    }
    unlink(path);
    return ok;
}

Test(badmodel, bad_hparams_and_shapes_are_refused_at_load)
{
    char *cases = fg_test_read_file("tests/data/bad-model/CASES", NULL);
    cr_assert_not_null(cases, "tests/data/bad-model/CASES: %s", strerror(errno));
    int n = 0, n_bad = 0;
    char *save;
    for (char *line = strtok_r(cases, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') continue;
        char *changes = strchr(line, '\t'), *want = changes ? strchr(changes + 1, '\t') : NULL;
        cr_assert(want, "tests/data/bad-model/CASES: line '%s' is not name<TAB>changes<TAB>want", line);
        *changes++ = 0;
        *want++ = 0;
        n++;
        n_bad += !check_case(line, changes, want);
    }
    free(cases);
    cr_assert_geq(n, 40, "tests/data/bad-model/CASES has %d cases", n);
    cr_assert_eq(n_bad, 0, "%d of %d bad models were not refused as they must be (listed above)", n_bad, n);
}
