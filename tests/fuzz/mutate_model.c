/*
 * mutate_model.c — the model loader against damaged headers (issue 14):
 * N mutations of a real GGUF model's header, metadata and tensor table,
 * each loaded as forge run loads a model, none may crash.
 *
 * usage: mutate-model MODEL [N [SEED]]     (default 1000 files, seed 1)
 *        mutate-model MODEL --case I [SEED]  (one case again, to debug it)
 *
 * The prefix before the tensor data (a few MB for SmolLM2: the vocabulary)
 * is where every mutation lands:
 *   - random bytes anywhere in it, or only in the header, the model's
 *     hyperparameters and the tensor table (the part past the vocabulary);
 *   - boundary values (0, 1, all ones, the signed limits, off by one, ...)
 *     written into its u32/u64 fields: counts, string lengths, value types,
 *     array lengths, tensor dims, types and offsets, integer values;
 *   - NaN, infinities, zero, huge and tiny values in its float values;
 *   - truncation at a random byte of it.
 * Each mutated image is loaded through fg_gguf_open_memory and the steps of
 * fg_engine_open: fg_model_open_gguf (hyperparameters, tokenizer), the chat
 * template, a CPU backend and fg_forward_init (tensor shapes, placing the
 * weights); a file that loads then tokenizes a prompt and runs two
 * steps of it, so that a model that loads with garbage in it must not crash
 * either. The run is meant for the ASan + UBSan build (make asan), where a
 * bad read or an undefined operation stops it with a report; what it prints
 * is how many images each stage refused and how many ran.
 *
 * The file is mapped copy-on-write and only the prefix is written (and
 * restored after each case), so the 100 MB of weights are read from the
 * page cache, never copied; truncated images are copied into buffers of
 * exactly their size, so that ASan sees a read past their end.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "base/err.h"
#include "gguf/gguf.h"
#include "model/forward.h"
#include "model/model.h"
#include "runtime/session.h"

/* ---- The fields of the prefix ----------------------------------------------------- */

typedef enum field_kind { F_INT, F_FLOAT } field_kind;

/* What a field is: the framing (counts, lengths, value types), a value (a
 * hyperparameter, a token id, an element of a numeric array), or a tensor's
 * dimension, type or offset. */
typedef enum field_role { R_FRAME, R_VALUE, R_TENSOR, R_COUNT } field_role;

/* A fixed-size field of the file: offset, width in bytes, and whether it
 * is outside the vocabulary's big arrays (the header, every scalar value,
 * the tensor table), where a mutation most often means something. */
typedef struct field {
    uint64_t off;
    uint8_t width;
    uint8_t kind;
    uint8_t role;
    bool head;
} field;

typedef struct fields {
    field *v;
    size_t n, cap;
} fields;

static void add(fields *fs, uint64_t off, int width, field_kind kind, field_role role, bool head)
{
    if (fs->n == fs->cap) {
        fs->cap = fs->cap ? 2 * fs->cap : 4096;
        fs->v = realloc(fs->v, fs->cap * sizeof *fs->v);
        if (!fs->v) abort();
    }
    fs->v[fs->n++] = (field){off, (uint8_t)width, (uint8_t)kind, (uint8_t)role, head};
}

static uint64_t walk_value(const uint8_t *p, uint64_t at, uint32_t type, fields *fs, bool head);

static uint64_t rd64(const uint8_t *p, uint64_t at)
{
    uint64_t v;
    memcpy(&v, p + at, 8);
    return v;
}

static uint32_t rd32(const uint8_t *p, uint64_t at)
{
    uint32_t v;
    memcpy(&v, p + at, 4);
    return v;
}

static uint64_t walk_str(const uint8_t *p, uint64_t at, fields *fs, bool head)
{
    add(fs, at, 8, F_INT, R_FRAME, head);
    return at + 8 + rd64(p, at);
}

static uint64_t walk_value(const uint8_t *p, uint64_t at, uint32_t type, fields *fs, bool head)
{
    static const uint8_t width[FG_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == FG_GGUF_STRING) return walk_str(p, at, fs, head);
    if (type == FG_GGUF_ARRAY) {
        uint32_t elem = rd32(p, at);
        uint64_t n = rd64(p, at + 4);
        add(fs, at, 4, F_INT, R_FRAME, head);
        add(fs, at + 4, 8, F_INT, R_FRAME, head);
        at += 12;
        /* Elements of a long array (the vocabulary) are bulk. */
        for (uint64_t i = 0; i < n; i++) at = walk_value(p, at, elem, fs, head && n <= 16);
        return at;
    }
    bool is_float = type == FG_GGUF_FLOAT32 || type == FG_GGUF_FLOAT64;
    if (width[type] >= 4) add(fs, at, width[type], is_float ? F_FLOAT : F_INT, R_VALUE, head);
    return at + width[type];
}

/* The fields of the valid file p, and the byte range its long arrays (the
 * vocabulary, the merges) take, [*bulk_start, *bulk_end); *end is the end
 * of the tensor table. */
static void walk(const uint8_t *p, const fg_gguf *g, fields *fs, uint64_t *bulk_start, uint64_t *bulk_end,
                 uint64_t *end)
{
    add(fs, 8, 8, F_INT, R_FRAME, true);  /* tensor count */
    add(fs, 16, 8, F_INT, R_FRAME, true); /* kv count */
    uint64_t at = 24;
    *bulk_start = *bulk_end = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        uint64_t key_at = at;
        at = walk_str(p, at, fs, true);
        uint32_t type = rd32(p, at);
        add(fs, at, 4, F_INT, R_FRAME, true);
        bool bulk = type == FG_GGUF_ARRAY && rd64(p, at + 8) > 16;
        at = walk_value(p, at + 4, type, fs, true);
        if (bulk) {
            if (!*bulk_start) *bulk_start = key_at;
            *bulk_end = at;
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        at = walk_str(p, at, fs, true);
        uint32_t n_dims = rd32(p, at);
        add(fs, at, 4, F_INT, R_FRAME, true);
        at += 4;
        for (uint32_t d = 0; d < n_dims; d++, at += 8) add(fs, at, 8, F_INT, R_TENSOR, true);
        add(fs, at, 4, F_INT, R_TENSOR, true);     /* type */
        add(fs, at + 4, 8, F_INT, R_TENSOR, true); /* offset */
        at += 12;
    }
    *end = at;
    if (!*bulk_start) *bulk_start = *bulk_end = at;
}

/* ---- Mutations -------------------------------------------------------------------- */

/* splitmix64: a deterministic stream per (seed, case). */
static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
    return n ? next(s) % n : 0;
}

typedef struct mutation {
    char what[160];
    size_t size; /* the image's length: the file's, or a truncation's */
} mutation;

/* Writes mutation `index` of the stream `seed` into img (the prefix of
 * prefix_len bytes, restored by the caller) and says what it was. */
static void mutate(uint8_t *img, uint64_t prefix_len, uint64_t file_len, const fields *fs, const fields *heads,
                   uint64_t bulk_start, uint64_t bulk_end, uint64_t end, uint64_t seed, uint64_t index, mutation *mu)
{
    uint64_t s = seed * 0x100000001b3ull + index;
    next(&s);
    mu->size = file_len;
    uint64_t pick = below(&s, 100);
    if (pick < 15) { /* random bytes anywhere in the prefix */
        int n = 1 + (int)below(&s, 8);
        uint64_t first = 0;
        for (int i = 0; i < n; i++) {
            uint64_t at = below(&s, prefix_len);
            if (!i) first = at;
            /* Printable ASCII half the time, which keeps most strings valid UTF-8. */
            img[at] = below(&s, 2) ? (uint8_t)(0x20 + below(&s, 0x5f)) : (uint8_t)next(&s);
        }
        snprintf(mu->what, sizeof mu->what, "%d random bytes, the first at %" PRIu64, n, first);
    } else if (pick < 30) { /* random bytes outside the vocabulary: header, hyperparameters, tensor table */
        int n = 1 + (int)below(&s, 4);
        uint64_t first = 0;
        for (int i = 0; i < n; i++) {
            uint64_t at = below(&s, end - (bulk_end - bulk_start));
            if (at >= bulk_start) at += bulk_end - bulk_start;
            if (!i) first = at;
            if (below(&s, 2)) img[at] ^= (uint8_t)(1u << below(&s, 8));
            else img[at] = (uint8_t)next(&s);
        }
        snprintf(mu->what, sizeof mu->what, "%d header bytes, the first at %" PRIu64, n, first);
    } else if (pick < 80) { /* a boundary value in an integer field: a value, a tensor's, the framing */
        const fields *from = below(&s, 4) ? heads : fs;
        uint64_t r = below(&s, 10);
        field_role role = r < 5 ? R_VALUE : r < 8 ? R_TENSOR : R_FRAME;
        const field *f;
        do f = &from->v[below(&s, from->n)]; while (f->kind != F_INT || (f->role != role && below(&s, 64)));
        uint64_t old = f->width == 8 ? rd64(img, f->off) : rd32(img, f->off);
        const uint64_t cand[] = {0, 1, 2, 3, old + 1, old - 1, old * 2, old / 2, 0x7f, 0x80, 0xff, 0x7fff, 0xffff,
                                 0x7fffffffu, 0x80000000u, 0xffffffffu, 0x100000000ull, 0x7fffffffffffffffull,
                                 0x8000000000000000ull, ~0ull, old ^ (1ull << below(&s, 64)), prefix_len, file_len};
        uint64_t v = cand[below(&s, sizeof cand / sizeof cand[0])];
        if (f->width == 8) memcpy(img + f->off, &v, 8);
        else memcpy(img + f->off, &(uint32_t){(uint32_t)v}, 4);
        snprintf(mu->what, sizeof mu->what, "u%d at %" PRIu64 ": %" PRIu64 " -> %" PRIu64, 8 * f->width, f->off, old,
                 f->width == 8 ? v : (uint32_t)v);
    } else if (pick < 90) { /* a special value in a float field */
        const field *f = NULL;
        for (int tries = 0; tries < 1000 && !f; tries++) {
            const field *c = &heads->v[below(&s, heads->n)];
            if (c->kind == F_FLOAT) f = c;
        }
        if (!f) {
            snprintf(mu->what, sizeof mu->what, "no float field: unchanged");
            return;
        }
        const double cand[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0, -0.0, 1e-45, 1e-30, 1e30, 3.4e38, -1.0,
                               4.29e9, 1.0, 0.5};
        double v = cand[below(&s, sizeof cand / sizeof cand[0])];
        if (f->width == 8) memcpy(img + f->off, &v, 8);
        else memcpy(img + f->off, &(float){(float)v}, 4);
        snprintf(mu->what, sizeof mu->what, "f%d at %" PRIu64 " -> %g", 8 * f->width, f->off, v);
    } else { /* a truncation within the prefix */
        mu->size = below(&s, prefix_len + 1);
        snprintf(mu->what, sizeof mu->what, "truncated to %zu bytes", mu->size);
    }
}

/* ---- Loading ------------------------------------------------------------------------ */

enum stage { S_GGUF, S_MODEL, S_FORWARD, S_STEP, S_RAN, S_COUNT };
static const char *stage_names[S_COUNT] = {
    "refused by the GGUF reader", "refused opening the model (hyperparameters, tokenizer)",
    "refused placing the weights (fg_forward_init: shapes, types)", "loaded; a step failed cleanly",
    "loaded and ran two steps",
};

/* Loads the image as the engine does; returns how far it got. */
static enum stage load(const uint8_t *img, size_t size, const char *name, int n_threads)
{
    fg_gguf *g;
    if (fg_gguf_open_memory(img, size, name, &g) != FG_OK) return S_GGUF;
    fg_model *m;
    if (fg_model_open_gguf(g, &m) != FG_OK) return S_MODEL;
    enum stage at = S_FORWARD;
    fg_chat_tmpl tmpl;
    const char *how;
    (void)fg_model_chat_template(m->gguf, m->tok, NULL, &tmpl, &how); /* forge chat, forge info */
    fg_backend *be = NULL;
    fg_forward *f = NULL;
    fg_session *ses = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (fg_backend_cpu_init(n_threads, false, &be) != FG_OK) {
        fprintf(stderr, "mutate-model: cannot start a CPU backend: %s\n", fg_last_error());
        exit(2);
    }
    if (fg_forward_init(m, be, 32, 8, FG_TYPE_F16, NULL, NULL, &f) != FG_OK) goto done;
    at = S_STEP;
    if (fg_session_init(f, fg_model_n_vocab(m), &ses) != FG_OK) goto done;
    const char *prompt = "<|im_start|>user\nHello, world! 1, 2, 3<|im_end|>";
    if (fg_model_tokenize(m, prompt, strlen(prompt), true, true, &ids, &n_ids) != FG_OK) goto done;
    int32_t n = n_ids < 6 ? (int32_t)n_ids : 6;
    if (n == 0) goto done;
    char *text;
    if (fg_model_detokenize(m, ids, (size_t)n, true, &text) == FG_OK) free(text);
    /* A prefill, then one decode step after it. */
    if (fg_session_eval(ses, ids, n > 1 ? n - 1 : n) != FG_OK) goto done;
    if (n > 1 && fg_session_eval(ses, ids + n - 1, 1) != FG_OK) goto done;
    volatile float sink = fg_session_logits(ses)[0]; /* read: garbage is fine, a bad read is not */
    (void)sink;
    at = S_RAN;
done:
    free(ids);
    fg_session_free(ses);
    fg_forward_free(f);
    fg_backend_free(be);
    fg_model_close(m);
    return at;
}

/* The case being loaded, for a crash's last words: the case index and its
 * mutation, so that `--case I` reruns it. */
static char current[256];

#if defined(__SANITIZE_ADDRESS__)
#define FG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FG_ASAN 1
#endif
#endif

#ifdef FG_ASAN
void __sanitizer_set_death_callback(void (*callback)(void));
static void on_death(void)
{
    fprintf(stderr, "mutate-model: died on %s\n", current);
}
#else
static void on_signal(int sig)
{
    (void)!write(2, "mutate-model: died on ", 22);
    (void)!write(2, current, strlen(current));
    (void)!write(2, "\n", 1);
    signal(sig, SIG_DFL);
    raise(sig);
}
#endif

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: mutate-model MODEL [N [SEED]] | MODEL --case I [SEED]\n");
        return 2;
    }
    const char *path = argv[1];
    long n = 1000, only = -1;
    uint64_t seed = 1;
    int a = 2;
    if (a < argc && strcmp(argv[a], "--case") == 0 && a + 1 < argc) {
        only = atol(argv[a + 1]);
        a += 2;
    } else if (a < argc) {
        n = atol(argv[a++]);
    }
    if (a < argc) seed = strtoull(argv[a], NULL, 10);

    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("SKIPPED mutate-model: %s: %s; run 'make models'\n", path, strerror(errno));
        return 0;
    }
    struct stat st;
    fstat(fd, &st);
    size_t file_len = (size_t)st.st_size;
    /* Copy-on-write: the mutations touch only the prefix's pages. */
    uint8_t *img = mmap(NULL, file_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    close(fd);
    if (img == MAP_FAILED) {
        fprintf(stderr, "mutate-model: %s: cannot map: %s\n", path, strerror(errno));
        return 1;
    }
    fg_gguf *g;
    if (fg_gguf_open_memory(img, file_len, path, &g) != FG_OK) {
        fprintf(stderr, "mutate-model: %s is not a valid model to start from: %s\n", path, fg_last_error());
        return 1;
    }
    uint64_t prefix_len = g->data_offset, bulk_start, bulk_end, end;
    fields fs = {0}, heads = {0};
    walk(img, g, &fs, &bulk_start, &bulk_end, &end);
    fg_gguf_close(g);
    for (size_t i = 0; i < fs.n; i++)
        if (fs.v[i].head) add(&heads, fs.v[i].off, fs.v[i].width, fs.v[i].kind, fs.v[i].role, true);
    uint8_t *orig = malloc(prefix_len);
    memcpy(orig, img, prefix_len);
    int n_threads = 2;

#ifdef FG_ASAN
    __sanitizer_set_death_callback(on_death);
#else
    signal(SIGSEGV, on_signal);
    signal(SIGFPE, on_signal);
    signal(SIGABRT, on_signal);
    signal(SIGBUS, on_signal);
#endif
    /* The unchanged file must load and run: otherwise every count below
     * would mean nothing. */
    snprintf(current, sizeof current, "the unchanged file");
    if (load(img, file_len, path, n_threads) != S_RAN) {
        fprintf(stderr, "mutate-model: %s itself does not load and run: %s\n", path, fg_last_error());
        return 1;
    }

    long counts[S_COUNT] = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long first = only >= 0 ? only : 0, last = only >= 0 ? only + 1 : n;
    for (long i = first; i < last; i++) {
        mutation mu;
        mutate(img, prefix_len, file_len, &fs, &heads, bulk_start, bulk_end, end, seed, (uint64_t)i, &mu);
        snprintf(current, sizeof current, "case %ld (seed %" PRIu64 "): %s", i, seed, mu.what);
        char name[64];
        snprintf(name, sizeof name, "case-%ld.gguf", i);
        enum stage at;
        if (mu.size < file_len) {
            /* Exactly sized, so that a read past the end is ASan's to see. */
            uint8_t *cut = malloc(mu.size ? mu.size : 1);
            memcpy(cut, img, mu.size);
            at = load(cut, mu.size, name, n_threads);
            free(cut);
        } else {
            at = load(img, file_len, name, n_threads);
        }
        counts[at]++;
        if (only >= 0) printf("%s: %s%s%s\n", current, stage_names[at], at < S_RAN ? ": " : "",
                              at < S_RAN ? fg_last_error() : "");
        memcpy(img, orig, prefix_len);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    long total = last - first;
    printf("mutate-model: %ld mutated files of %s (seed %" PRIu64 "; prefix %" PRIu64 " bytes, %zu fields) in %.1f s, "
           "no crash:\n", total, path, seed, prefix_len, fs.n, secs);
    for (int s = 0; s < S_COUNT; s++) printf("  %6ld  %s\n", counts[s], stage_names[s]);
    free(orig);
    free(fs.v);
    free(heads.v);
    munmap(img, file_len);
    return 0;
}
