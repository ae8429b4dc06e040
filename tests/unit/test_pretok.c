/*
 * test_pretok.c — the pre-tokenizers against the goldens that
 * tools/gen_pretok_goldens.py writes with Python's regex package.
 *
 * Every name fg_pretok_names() lists must split every string of the shared
 * corpus (tests/data/tok_corpus.json) into exactly the golden pieces, with JIT
 * and with the interpreter. Beyond the goldens: pieces always tile the input
 * (random bytes, invalid UTF-8 and long runs included), unknown names fail
 * with a message that lists the known ones, and threads may share one
 * pre-tokenizer.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "test_util.h"
#include "tokenizer/pretok.h"

/* ---- Reading the corpus and goldens ------------------------------------- */

typedef fg_test_str bstr;

typedef struct bstrs {
    bstr *v;
    size_t n, cap;
} bstrs;

static void bstrs_push(bstrs *a, char *s, size_t n)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        cr_assert(a->v);
    }
    a->v[a->n++] = (bstr){s, n};
}

static void bstrs_free(bstrs *a)
{
    for (size_t i = 0; i < a->n; i++) free(a->v[i].s);
    free(a->v);
    *a = (bstrs){0};
}

/* The shared corpus, from tools/gen_pretok_goldens.py. */
static bstrs load_corpus(void)
{
    fg_test_corpus c;
    cr_assert(fg_test_corpus_load("tok_corpus.json", "corpus", &c),
              "tests/data/tok_corpus.json is missing or stale; run tools/gen_pretok_goldens.py");
    cr_assert(c.n >= 300, "the corpus has %zu strings; it should have at least 300", c.n);
    return (bstrs){c.v, c.n, c.n};
}

/* One tests/data/pretok/<id>.txt: a sequence, the names that use it and the
 * byte lengths of the pieces of every corpus string. */
typedef struct golden {
    char id[64];
    size_t corpus_n;
    int byte_level;
    bstrs patterns, names;
    size_t **lens;  /* (corpus_n) piece lengths of each string */
    size_t *n_lens; /* (corpus_n) */
} golden;

static void golden_free(golden *g)
{
    bstrs_free(&g->patterns);
    bstrs_free(&g->names);
    for (size_t i = 0; i < g->corpus_n; i++) free(g->lens[i]);
    free(g->lens);
    free(g->n_lens);
}

static void load_golden(const char *id, golden *g)
{
    char rel[128];
    snprintf(rel, sizeof rel, "pretok/%s.txt", id);
    *g = (golden){0};
    snprintf(g->id, sizeof g->id, "%s", id);
    FILE *f = fg_test_golden_open(rel, "pretok", 1);
    cr_assert(f, "%s is missing or stale; run tools/gen_pretok_goldens.py", rel);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) >= 0) {
        line[strcspn(line, "\n")] = 0;
        if (strncmp(line, "corpus ", 7) == 0) {
            g->corpus_n = strtoul(line + 7, NULL, 10);
            g->lens = calloc(g->corpus_n, sizeof *g->lens);
            g->n_lens = calloc(g->corpus_n, sizeof *g->n_lens);
            cr_assert(g->lens && g->n_lens);
        } else if (strncmp(line, "byte_level ", 11) == 0) {
            g->byte_level = atoi(line + 11);
        } else if (strncmp(line, "pattern ", 8) == 0) {
            const char *p = line + 8;
            bstr s;
            cr_assert(fg_test_json_string(&p, &s), "%s: bad pattern line", rel);
            bstrs_push(&g->patterns, s.s, s.n);
        } else if (strncmp(line, "name ", 5) == 0) {
            bstrs_push(&g->names, strdup(line + 5), strlen(line + 5));
        } else {
            char *p;
            size_t i = strtoul(line, &p, 10);
            cr_assert(*p == ':' && i < g->corpus_n, "%s: bad line '%s'", rel, line);
            size_t *v = malloc((strlen(p) / 2 + 1) * sizeof *v), n = 0;
            cr_assert(v);
            for (p++; *p;) {
                char *e;
                v[n++] = strtoul(p, &e, 10);
                cr_assert(e != p, "%s: bad lengths for string %zu", rel, i);
                p = e;
                while (*p == ' ') p++;
            }
            g->lens[i] = v;
            g->n_lens[i] = n;
        }
    }
    free(line);
    fclose(f);
}

static bstrs load_index(void)
{
    FILE *f = fg_test_golden_open("pretok/index.txt", "pretok", 1);
    cr_assert(f, "tests/data/pretok/index.txt is missing or stale");
    bstrs ids = {0};
    char buf[128];
    while (fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\n")] = 0;
        if (buf[0]) bstrs_push(&ids, strdup(buf), strlen(buf));
    }
    fclose(f);
    return ids;
}

/* ---- Collecting pieces -------------------------------------------------- */

/* The pieces of one split, checked as they arrive: each must be non-empty and
 * start where the previous one ended, so that together they tile the text. */
typedef struct pieces {
    const char *text;
    size_t pos;
    size_t *len;
    size_t n, cap;
    bool tiled;
    size_t stop_after; /* return FG_ERR_IO once this many arrived (0: never) */
} pieces;

static fg_status collect(const char *piece, size_t len, void *ud)
{
    pieces *ps = ud;
    if (piece != ps->text + ps->pos || len == 0) ps->tiled = false;
    ps->pos += len;
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 32;
        ps->len = realloc(ps->len, ps->cap * sizeof *ps->len);
        if (!ps->len) return FG_ERR_NOMEM;
    }
    ps->len[ps->n++] = len;
    if (ps->stop_after && ps->n == ps->stop_after) return FG_ERR_IO;
    return FG_OK;
}

/* Splits text and asserts that the pieces tile it exactly. */
static void split_tiled(const fg_pretok *p, const char *name, const char *text, size_t n,
                        pieces *out)
{
    free(out->len);
    *out = (pieces){.text = text, .tiled = true};
    fg_status st = fg_pretok_split(p, text, n, collect, out);
    cr_assert_eq(st, FG_OK, "%s: split failed: %s", name, fg_last_error());
    cr_assert(out->tiled && out->pos == n, "%s: pieces do not tile a %zu-byte input", name, n);
}

static void print_escaped(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f) fprintf(f, "\\x%02x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void print_pieces(FILE *f, const char *label, const char *s, const size_t *len, size_t n)
{
    fprintf(f, "    %s:", label);
    for (size_t i = 0, at = 0; i < n; at += len[i++]) {
        fputc(' ', f);
        print_escaped(f, s + at, len[i]);
    }
    fputc('\n', f);
}

/* ---- Goldens ------------------------------------------------------------ */

/* Every name of every golden, JIT on and off: same patterns, same byte_level
 * flag, and the same pieces for every corpus string. */
Test(pretok, matches_python_regex_goldens)
{
    bstrs corpus = load_corpus();
    bstrs ids = load_index();
    size_t n_checked = 0, n_bad = 0, n_names = 0;
    pieces ps = {0};
    for (size_t gi = 0; gi < ids.n; gi++) {
        golden g;
        load_golden(ids.v[gi].s, &g);
        cr_assert_eq(g.corpus_n, corpus.n,
                     "pretok/%s.txt covers %zu corpus strings but the corpus has %zu; "
                     "run tools/gen_pretok_goldens.py",
                     g.id, g.corpus_n, corpus.n);
        for (size_t ni = 0; ni < g.names.n; ni++) {
            const char *name = g.names.v[ni].s;
            n_names++;
            for (int jit = 1; jit >= 0; jit--) {
                fg_pretok *p = NULL;
                cr_assert_eq(fg_pretok_init_ex(name, jit, &p), FG_OK, "%s: %s", name,
                             fg_last_error());
                if (jit && gi == 0 && ni == 0)
                    cr_log_info("PCRE2 JIT is %s", fg_pretok_jit(p) ? "on" : "unavailable");
                if (!jit) cr_assert(!fg_pretok_jit(p));

                const char *const *pat = fg_pretok_patterns(p);
                size_t np = 0;
                while (pat[np]) np++;
                cr_assert_eq(np, g.patterns.n, "%s: %zu regexes, golden has %zu", name, np,
                             g.patterns.n);
                for (size_t k = 0; k < np; k++)
                    cr_assert_str_eq(pat[k], g.patterns.v[k].s,
                                     "%s: regex %zu differs from the golden's", name, k + 1);
                cr_assert_eq(fg_pretok_byte_level(p), g.byte_level != 0, "%s: byte_level", name);

                for (size_t i = 0; i < corpus.n; i++) {
                    const bstr *s = &corpus.v[i];
                    split_tiled(p, name, s->s, s->n, &ps);
                    n_checked++;
                    bool same = ps.n == g.n_lens[i] &&
                                (ps.n == 0 || memcmp(ps.len, g.lens[i], ps.n * sizeof *ps.len) == 0);
                    if (same) continue;
                    if (n_bad++ < 10) {
                        fprintf(stderr, "%s (%s) corpus[%zu] ", name, jit ? "jit" : "interp", i);
                        print_escaped(stderr, s->s, s->n);
                        fputc('\n', stderr);
                        print_pieces(stderr, "want", s->s, g.lens[i], g.n_lens[i]);
                        print_pieces(stderr, "got ", s->s, ps.len, ps.n);
                    }
                }
                fg_pretok_free(p);
            }
        }
        golden_free(&g);
    }
    free(ps.len);
    cr_log_info("%zu names x %zu corpus strings x {jit, interpreter}: %zu splits, %zu differ",
                n_names, corpus.n, n_checked, n_bad);
    cr_assert_eq(n_bad, 0, "%zu of %zu splits differ from the Python goldens", n_bad, n_checked);
    bstrs_free(&ids);
    bstrs_free(&corpus);
}

/* The goldens name every supported pre name exactly once, and nothing else. */
Test(pretok, goldens_cover_every_name)
{
    bstrs ids = load_index();
    const char *const *names = fg_pretok_names();
    size_t n_known = 0;
    while (names[n_known]) n_known++;
    int *seen = calloc(n_known, sizeof *seen);
    cr_assert(seen);
    for (size_t gi = 0; gi < ids.n; gi++) {
        golden g;
        load_golden(ids.v[gi].s, &g);
        for (size_t ni = 0; ni < g.names.n; ni++) {
            size_t k = 0;
            while (k < n_known && strcmp(names[k], g.names.v[ni].s) != 0) k++;
            cr_assert(k < n_known, "pretok/%s.txt names '%s', which forge does not know", g.id,
                      g.names.v[ni].s);
            seen[k]++;
        }
        golden_free(&g);
    }
    for (size_t k = 0; k < n_known; k++)
        cr_assert_eq(seen[k], 1, "'%s' appears in %d goldens, not 1", names[k], seen[k]);
    free(seen);
    bstrs_free(&ids);
}

/* ---- Errors and arguments ----------------------------------------------- */

Test(pretok, unknown_name_lists_known_ones)
{
    fg_pretok *p = (fg_pretok *)1;
    cr_assert_eq(fg_pretok_init("no-such-pre", &p), FG_ERR_UNSUPPORTED);
    cr_assert_null(p);
    const char *msg = fg_last_error();
    cr_assert(strstr(msg, "'no-such-pre'"), "message does not name the input: %s", msg);
    for (const char *const *n = fg_pretok_names(); *n; n++)
        cr_assert(strstr(msg, *n), "message does not list '%s': %s", *n, msg);

    cr_assert_eq(fg_pretok_init("", &p), FG_ERR_UNSUPPORTED);
    cr_assert_eq(fg_pretok_init("GPT2", &p), FG_ERR_UNSUPPORTED, "names are case-sensitive");
    cr_assert_eq(fg_pretok_init(NULL, &p), FG_ERR_INVALID_ARG);
    cr_assert_eq(fg_pretok_init("gpt2", NULL), FG_ERR_INVALID_ARG);
}

Test(pretok, arguments_and_empty_text)
{
    fg_pretok *p;
    cr_assert_eq(fg_pretok_init("llama-bpe", &p), FG_OK);
    pieces ps = {.tiled = true};
    cr_assert_eq(fg_pretok_split(p, "", 0, collect, &ps), FG_OK);
    cr_assert_eq(fg_pretok_split(p, NULL, 0, collect, &ps), FG_OK);
    cr_assert_eq(ps.n, 0, "an empty text has no pieces");
    cr_assert_eq(fg_pretok_split(p, NULL, 3, collect, &ps), FG_ERR_INVALID_ARG);
    cr_assert_eq(fg_pretok_split(p, "abc", 3, NULL, &ps), FG_ERR_INVALID_ARG);
    cr_assert_eq(fg_pretok_split(NULL, "abc", 3, collect, &ps), FG_ERR_INVALID_ARG);
    fg_pretok_free(p);
    fg_pretok_free(NULL);
}

/* A callback's failure stops the split at once and comes back unchanged. */
Test(pretok, callback_error_stops_split)
{
    fg_pretok *p;
    cr_assert_eq(fg_pretok_init("smollm", &p), FG_OK);
    const char *text = "one two 345 six";
    pieces ps = {.text = text, .tiled = true, .stop_after = 3};
    cr_assert_eq(fg_pretok_split(p, text, strlen(text), collect, &ps), FG_ERR_IO);
    cr_assert_eq(ps.n, 3);
    free(ps.len);
    fg_pretok_free(p);
}

Test(pretok, gemma4_is_not_byte_level)
{
    fg_pretok *p;
    cr_assert_eq(fg_pretok_init("gemma4", &p), FG_OK);
    cr_assert_not(fg_pretok_byte_level(p));
    fg_pretok_free(p);
    cr_assert_eq(fg_pretok_init("smollm", &p), FG_OK);
    cr_assert(fg_pretok_byte_level(p));
    fg_pretok_free(p);
}

/* ---- Arbitrary bytes ---------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Fragments for random inputs: valid text of every class the regexes care
 * about, and the malformed UTF-8 an upstream caller might pass on. */
static const char *const k_frags[] = {
    "a", "Z", "the", " ", "  ", "\t", "\n", "\r\n", "\r", "1", "234", "'s", "'LL", "!", "?!",
    "<|im_start|>", "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\xcc\x81",
    "\xe2\x80\x8d", "\xc2\xa0", "\xe3\x80\x80", "\xd9\xa3", "\xe0\xa4\xbf",
    "\x80",             /* lone continuation byte */
    "\xbf\xbf",         /* two of them */
    "\xc3",             /* lead byte without its continuation */
    "\xe4\xb8",         /* three-byte sequence cut short */
    "\xf0\x9f\x98",     /* four-byte sequence cut short */
    "\xc0\xaf",         /* overlong '/' */
    "\xe0\x80\xaf",     /* overlong, three bytes */
    "\xed\xa0\x80",     /* UTF-16 surrogate */
    "\xf4\x90\x80\x80", /* above U+10FFFF */
    "\xf8\x88\x80\x80\x80", "\xfe", "\xff", "\x00",
};

/* Random byte strings, half pure noise and half mixes of the fragments above,
 * through every name with JIT and with the interpreter: no crash, the pieces
 * tile the input, and both engines agree piece for piece. */
Test(pretok, random_bytes_tile_and_engines_agree)
{
    uint64_t seed = 0x9e3779b97f4a7c15u;
    const size_t n_frags = sizeof k_frags / sizeof *k_frags;
    char buf[256];
    pieces a = {0}, b = {0};
    size_t n_inputs = 0;
    for (const char *const *name = fg_pretok_names(); *name; name++) {
        fg_pretok *pj, *pi;
        cr_assert_eq(fg_pretok_init_ex(*name, true, &pj), FG_OK);
        cr_assert_eq(fg_pretok_init_ex(*name, false, &pi), FG_OK);
        for (int iter = 0; iter < 300; iter++) {
            size_t n = 0;
            if (iter % 2 == 0) {
                n = rng_next(&seed) % 96;
                for (size_t i = 0; i < n; i++) buf[i] = (char)(rng_next(&seed) & 0xff);
            } else {
                size_t k = rng_next(&seed) % 24;
                for (size_t i = 0; i < k; i++) {
                    const char *f = k_frags[rng_next(&seed) % n_frags];
                    size_t fl = f[0] ? strlen(f) : 1; /* "\x00" is one NUL byte */
                    if (n + fl > sizeof buf) break;
                    memcpy(buf + n, f, fl);
                    n += fl;
                }
            }
            split_tiled(pj, *name, buf, n, &a);
            split_tiled(pi, *name, buf, n, &b);
            cr_assert(a.n == b.n && (a.n == 0 || memcmp(a.len, b.len, a.n * sizeof *a.len) == 0),
                      "%s: JIT and interpreter split a %zu-byte random input differently", *name,
                      n);
            n_inputs++;
        }
        fg_pretok_free(pj);
        fg_pretok_free(pi);
    }
    free(a.len);
    free(b.len);
    cr_log_info("%zu random inputs, every name, JIT and interpreter", n_inputs);
}

/* Each maximal run of invalid UTF-8 is a piece of its own, and the valid
 * stretches around it split as texts by themselves. */
Test(pretok, invalid_utf8_runs_are_pieces)
{
    fg_pretok *p;
    pieces ps = {0};

    cr_assert_eq(fg_pretok_init("gpt2", &p), FG_OK);
    const char text[] = "ab\xff\xfe" "cd \xc3";
    split_tiled(p, "gpt2", text, sizeof text - 1, &ps);
    size_t want[] = {2, 2, 2, 1, 1}; /* "ab" "\xff\xfe" "cd" " " "\xc3" */
    cr_assert_eq(ps.n, 5);
    cr_assert_arr_eq(ps.len, want, sizeof want);
    fg_pretok_free(p);

    /* BLOOM's regex leaves '(' to the gaps; an invalid byte still stands apart
     * from its neighbours, as does a truncated sequence before a letter. */
    cr_assert_eq(fg_pretok_init("bloom", &p), FG_OK);
    const char text2[] = "(\x80(\xe4\xb8z";
    split_tiled(p, "bloom", text2, sizeof text2 - 1, &ps);
    size_t want2[] = {1, 1, 1, 2, 1}; /* "(" "\x80" "(" "\xe4\xb8" "z" */
    cr_assert_eq(ps.n, 5);
    cr_assert_arr_eq(ps.len, want2, sizeof want2);
    fg_pretok_free(p);
    free(ps.len);
}

/* ---- Long inputs -------------------------------------------------------- */

/* Long runs of one class are where backtracking regexes blow up (the
 * whitespace lookahead, the case-change rules) and where per-call costs turn
 * quadratic (PCRE2_MATCH_INVALID_UTF's re-validation did: 3.6 s for 64 KiB of
 * digits). 256 KiB of each must split within the timeout, JIT and not; that
 * takes about 2 s at -O2. */
Test(pretok, long_runs_stay_linear, .timeout = 60)
{
    enum { N = 1 << 18 };
    static const char *const units[] = {" ", "a", "A", "7", "\n", "\t ", "\xe4\xb8\xad", "aB",
                                        "\xcc\x81", "!", "\xff", " \n"};
    static const char *const names[] = {"default", "gpt2", "smollm", "llama-bpe", "qwen2",
                                        "qwen35", "gpt-4o", "tekken", "deepseek-v3",
                                        "deepseek-coder", "bloom", "viking", "gemma4"};
    char *buf = malloc(N + 8);
    cr_assert(buf);
    pieces ps = {0};
    for (size_t ui = 0; ui < sizeof units / sizeof *units; ui++) {
        size_t ul = strlen(units[ui]), n = 0;
        while (n + ul <= N) memcpy(buf + n, units[ui], ul), n += ul;
        buf[n++] = 'x'; /* a different class at the end forces the lookaheads to back off */
        for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
            for (int jit = 1; jit >= 0; jit--) {
                fg_pretok *p;
                cr_assert_eq(fg_pretok_init_ex(names[k], jit, &p), FG_OK);
                split_tiled(p, names[k], buf, n, &ps);
                fg_pretok_free(p);
            }
        }
    }
    free(ps.len);
    free(buf);
}

/* ---- Threads ------------------------------------------------------------ */

typedef struct thread_job {
    const fg_pretok *p;
    const bstrs *corpus;
    size_t *total; /* (corpus->n) number of pieces per string, written */
} thread_job;

static void *thread_split(void *arg)
{
    thread_job *job = arg;
    pieces ps = {0};
    for (int rep = 0; rep < 20; rep++) {
        for (size_t i = 0; i < job->corpus->n; i++) {
            const bstr *s = &job->corpus->v[i];
            ps = (pieces){.text = s->s, .tiled = true, .len = ps.len, .cap = ps.cap};
            if (fg_pretok_split(job->p, s->s, s->n, collect, &ps) != FG_OK || !ps.tiled)
                job->total[i] = SIZE_MAX;
            else
                job->total[i] = ps.n;
        }
    }
    free(ps.len);
    return NULL;
}

/* One fg_pretok shared by four threads gives each the same pieces. */
Test(pretok, threads_share_one_pretok)
{
    enum { T = 4 };
    bstrs corpus = load_corpus();
    fg_pretok *p;
    cr_assert_eq(fg_pretok_init("llama-bpe", &p), FG_OK);
    pthread_t th[T];
    thread_job jobs[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (thread_job){p, &corpus, calloc(corpus.n, sizeof(size_t))};
        cr_assert(jobs[t].total);
        cr_assert_eq(pthread_create(&th[t], NULL, thread_split, &jobs[t]), 0);
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    for (size_t i = 0; i < corpus.n; i++) {
        cr_assert_neq(jobs[0].total[i], SIZE_MAX, "corpus[%zu] failed in a thread", i);
        for (int t = 1; t < T; t++)
            cr_assert_eq(jobs[t].total[i], jobs[0].total[i], "threads disagree on corpus[%zu]",
                         i);
    }
    for (int t = 0; t < T; t++) free(jobs[t].total);
    fg_pretok_free(p);
    bstrs_free(&corpus);
}
