/*
 * test_tokenizer.c — the tokenizer against HF tokenizers' ids, plus the
 * properties the goldens cannot show.
 *
 * Goldens: tools/gen_tok_goldens.py runs HF transformers/tokenizers on the GGUF
 * vocabularies of SmolLM2 (byte-level BPE) and Gemma 3 (SentencePiece, 262k)
 * over the shared corpus (tests/data/tok_corpus.json) and writes the ids to
 * tests/data/tok/<model>.txt; every string must give exactly those ids, with
 * special tokens parsed and as plain text. Beyond them: decode(encode(s)) == s,
 * streamed decoding equals whole decoding and never emits half a character,
 * BOS/EOS flags, end-of-generation ids, load and encode speed, and a tiny
 * synthetic vocabulary written with the GGUF writer for byte fallback, unknown
 * tokens, merge order and special-token matching.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/utf8.h"
#include "gguf/gguf.h"
#include "base/clock.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"


/* ---- Corpus ----------------------------------------------------------------- */

typedef fg_test_str bstr;
typedef fg_test_corpus corpus;

/* Reads tests/data/<rel>: a header line "forge-golden <kind> v1", then a JSON
 * array of strings. */
static corpus load_corpus_file(const char *rel, const char *kind)
{
    corpus c;
    cr_assert(fg_test_corpus_load(rel, kind, &c), "tests/data/%s is missing, stale or malformed", rel);
    return c;
}

/* The shared corpus (tests/data/tok_corpus.json, from gen_pretok_goldens.py). */
static corpus load_corpus(void)
{
    corpus c = load_corpus_file("tok_corpus.json", "corpus");
    cr_assert_geq(c.n, 300, "the corpus has %zu strings; it should have at least 300", c.n);
    return c;
}

/* FNV-1a 64 over each string's length (u64 LE) and bytes; see gen_tok_goldens.py. */
static uint64_t corpus_hash(const corpus *c)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < c->n; i++) {
        uint64_t n = c->v[i].n;
        for (int k = 0; k < 8; k++) h = (h ^ ((n >> (8 * k)) & 0xFF)) * 0x100000001B3ull;
        for (size_t k = 0; k < c->v[i].n; k++) h = (h ^ (uint8_t)c->v[i].s[k]) * 0x100000001B3ull;
    }
    return h;
}

/* ---- Models ------------------------------------------------------------------- */

typedef struct loaded {
    fg_gguf *g;
    fg_tokenizer *t;
    double load_s; /* fg_tok_load alone */
} loaded;

static double now_s(void)
{
    return fg_now_ms() / 1e3;
}

static loaded load_model(const char *file)
{
    char path[1024];
    if (!fg_test_model_path(file, path, sizeof path))
        cr_skip_test("SKIPPED: %s not found; run `make models`", file);
    loaded m = {0};
    cr_assert_eq(fg_gguf_open(path, &m.g), FG_OK, "%s", fg_last_error());
    double t0 = now_s();
    cr_assert_eq(fg_tok_load(m.g, &m.t), FG_OK, "%s", fg_last_error());
    m.load_s = now_s() - t0;
    return m;
}

static void unload(loaded *m)
{
    fg_tok_free(m->t);
    fg_gguf_close(m->g);
}

/* ---- Goldens -------------------------------------------------------------------- */

static void print_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "    %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Compares every line of tests/data/tok/<golden> with forge's ids. Modes: s/p
 * are shared-corpus strings with special tokens parsed / as text, x/q the same
 * for the tokenizer's own edge cases (tests/data/tok/extra_corpus.json). */
static void check_goldens(const char *golden, const char *model_file)
{
    loaded m = load_model(model_file);
    corpus c = load_corpus();
    corpus x = load_corpus_file("tok/extra_corpus.json", "tok");
    char rel[256];
    snprintf(rel, sizeof rel, "tok/%s", golden);
    FILE *f = fg_test_golden_open(rel, "tok", 1);
    cr_assert(f, "tests/data/%s is missing or stale; run tools/gen_tok_goldens.py", rel);

    size_t n_lines = 0, n_bad = 0, n_mode[4] = {0}, bad_mode[4] = {0};
    static const char modes[] = "spxq";
    static char line[1 << 17];
    int32_t *want = malloc(sizeof line * sizeof *want / 2);
    while (fgets(line, sizeof line, f)) {
        size_t ll = strlen(line);
        cr_assert(ll > 0 && line[ll - 1] == '\n', "%s: line too long", rel);
        if (strncmp(line, "model ", 6) == 0) {
            cr_assert(strncmp(line + 6, model_file, strlen(model_file)) == 0, "%s is for %s", rel, line + 6);
            continue;
        }
        if (strncmp(line, "corpus ", 7) == 0 || strncmp(line, "extra ", 6) == 0) {
            const corpus *which = line[0] == 'c' ? &c : &x;
            char name[128];
            size_t n;
            unsigned long long h;
            cr_assert_eq(sscanf(line, "%*s %127s %zu %llx", name, &n, &h), 3, "%s: bad line '%s'", rel, line);
            cr_assert(n == which->n && h == corpus_hash(which),
                      "%s was made from another %s (%zu strings); run tools/gen_tok_goldens.py", rel, name, n);
            continue;
        }
        if (strncmp(line, "reference ", 10) == 0) continue;
        char mode;
        size_t idx;
        int used;
        cr_assert(sscanf(line, "%c %zu:%n", &mode, &idx, &used) == 2 && strchr(modes, mode), "%s: bad line '%s'",
                  rel, line);
        int mi = (int)(strchr(modes, mode) - modes);
        const corpus *src = mi < 2 ? &c : &x;
        cr_assert_lt(idx, src->n, "%s: line '%.40s' names a string past the corpus", rel, line);
        size_t nw = 0;
        for (char *p = line + used, *end; *p && *p != '\n'; p = end) {
            long v = strtol(p, &end, 10);
            cr_assert(end != p, "%s: bad id in '%.40s'", rel, line);
            want[nw++] = (int32_t)v;
        }
        const bstr *str = &src->v[idx];
        bool parse_special = mode == 's' || mode == 'x';
        fg_tokens got = {0};
        cr_assert_eq(fg_tok_encode(m.t, str->s, str->n, true, parse_special, &got), FG_OK, "%s", fg_last_error());
        n_lines++;
        n_mode[mi]++;
        if (got.n != nw || (nw && memcmp(got.ids, want, nw * sizeof *want) != 0)) {
            if (n_bad < 10) {
                fprintf(stderr, "  %s: mismatch on %s string %zu (special %s) \"%.*s\"\n", golden,
                        mi < 2 ? "corpus" : "extra", idx, parse_special ? "parsed" : "as text",
                        (int)(str->n > 80 ? 80 : str->n), str->s);
                print_ids("HF   ", want, nw);
                print_ids("forge", got.ids, got.n);
            }
            n_bad++;
            bad_mode[mi]++;
        }
        fg_tokens_free(&got);
    }
    fclose(f);
    fprintf(stderr,
            "tokenizer goldens %s: corpus %zu strings: %zu mismatches (special parsed), %zu of %zu (special as "
            "text); extra %zu strings: %zu mismatches, %zu of %zu (special as text)\n",
            golden, n_mode[0], bad_mode[0], bad_mode[1], n_mode[1], n_mode[2], bad_mode[2], bad_mode[3], n_mode[3]);
    cr_assert_eq(n_mode[0], c.n, "%s covers %zu of %zu corpus strings", rel, n_mode[0], c.n);
    cr_assert_eq(n_mode[2], x.n, "%s covers %zu of %zu extra strings", rel, n_mode[2], x.n);
    cr_assert_eq(n_bad, 0, "%zu of %zu golden lines differ from HF tokenizers", n_bad, n_lines);
    free(want);
    fg_test_corpus_free(&c);
    fg_test_corpus_free(&x);
    unload(&m);
}

Test(tokenizer, goldens_smollm2_bpe) { check_goldens("smollm2.txt", FG_TEST_SMOLLM2); }
Test(tokenizer, goldens_gemma3_spm, .timeout = 60) { check_goldens("gemma3.txt", FG_TEST_GEMMA3); }

/* ---- Round trip and streaming ----------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the
 * other 68 get U+0100 onwards in byte order. Writes the UTF-8, NUL-terminated. */
static void byte_level_char(int b, char out[4])
{
    int cp = b, next = 256;
    for (int i = 0; i <= b; i++) {
        bool printable = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE;
        if (!printable) cp = i == b ? next : cp, next++;
    }
    out[fg_utf8_encode((uint32_t)cp, out)] = 0;
}

/* True if every byte of s can be encoded: always for SPM (byte fallback), and
 * for byte-level BPE when the vocabulary has each byte's character (SmolLM2
 * lacks the one for 0x1D, which HF and forge both drop). */
static bool encodable(const fg_tokenizer *t, const bstr *s)
{
    /* SPM: U+2581 written in the text is a space to the model. */
    if (fg_tok_kind(t) != FG_VOCAB_BPE) {
        for (size_t i = 0; i + 3 <= s->n; i++)
            if (memcmp(s->s + i, "\xe2\x96\x81", 3) == 0) return false;
        return true;
    }
    for (size_t i = 0; i < s->n; i++) {
        char ch[4];
        byte_level_char((uint8_t)s->s[i], ch);
        if (fg_tok_find(t, ch, strlen(ch)) < 0) return false;
    }
    return true;
}

static void check_roundtrip_and_stream(const char *model_file)
{
    loaded m = load_model(model_file);
    corpus c = load_corpus(), x = load_corpus_file("tok/extra_corpus.json", "tok");
    size_t n_bad = 0, n_held = 0, n_lossy = 0;
    for (size_t i = 0; i < c.n + x.n; i++) {
        const bstr *s = i < c.n ? &c.v[i] : &x.v[i - c.n];
        fg_tokens ids = {0};
        cr_assert_eq(fg_tok_encode(m.t, s->s, s->n, false, true, &ids), FG_OK, "%s", fg_last_error());
        char *whole;
        size_t whole_n;
        cr_assert_eq(fg_tok_decode_len(m.t, ids.ids, ids.n, true, &whole, &whole_n), FG_OK, "%s", fg_last_error());
        cr_assert_eq(whole[whole_n], 0);
        if (!encodable(m.t, s)) {
            n_lossy++;
        } else if (whole_n != s->n || memcmp(whole, s->s, s->n) != 0) {
            if (n_bad < 5)
                fprintf(stderr, "  %s: decode(encode(s)) != s for string %zu: \"%s\"\n", model_file, i, whole);
            n_bad++;
        }

        /* Streamed: each chunk whole UTF-8, together the whole decode. */
        fg_detok d;
        fg_detok_init(&d, m.t, true);
        char *acc = NULL, *chunk = NULL;
        size_t acc_n = 0, acc_cap = 0, chunk_n = 0, chunk_cap = 0;
        for (size_t k = 0; k < ids.n; k++) {
            chunk_n = 0;
            cr_assert_eq(fg_detok_push(&d, ids.ids[k], &chunk, &chunk_n, &chunk_cap), FG_OK);
            size_t bad_at;
            cr_assert(fg_utf8_valid((const uint8_t *)chunk, chunk_n, &bad_at),
                      "%s string %zu: token %zu streamed invalid UTF-8 at byte %zu", model_file, i, k, bad_at);
            if (d.n_pending) n_held++;
            if (acc_n + chunk_n + 1 > acc_cap) {
                acc_cap = 2 * (acc_n + chunk_n + 1);
                acc = realloc(acc, acc_cap);
            }
            memcpy(acc + acc_n, chunk, chunk_n);
            acc_n += chunk_n;
        }
        chunk_n = 0;
        cr_assert_eq(fg_detok_flush(&d, &chunk, &chunk_n, &chunk_cap), FG_OK);
        cr_assert_eq(chunk_n, 0, "%s string %zu: bytes left pending at the end", model_file, i);
        cr_assert(acc_n == whole_n && (acc_n == 0 || memcmp(acc, whole, acc_n) == 0),
                  "%s string %zu: streamed decode differs from whole decode", model_file, i);
        free(acc);
        free(chunk);
        free(whole);
        fg_tokens_free(&ids);
    }
    fprintf(stderr,
            "tokenizer roundtrip %s: %zu strings, %zu not lossless, %zu skipped (bytes the vocab cannot encode, "
            "U+2581), "
            "%zu tokens ended mid-character\n",
            model_file, c.n + x.n, n_bad, n_lossy, n_held);
    cr_assert_eq(n_bad, 0);
    cr_assert_lt(n_lossy, 10, "too many corpus strings skipped as not lossless");
    fg_test_corpus_free(&c);
    fg_test_corpus_free(&x);
    unload(&m);
}

Test(tokenizer, roundtrip_and_stream_smollm2) { check_roundtrip_and_stream(FG_TEST_SMOLLM2); }
Test(tokenizer, roundtrip_and_stream_gemma3, .timeout = 60) { check_roundtrip_and_stream(FG_TEST_GEMMA3); }

/* ---- Flags, special ids, speed --------------------------------------------------------- */

static size_t encode_n(const fg_tokenizer *t, const char *s, bool add_special, bool parse_special, int32_t *ids,
                       size_t cap)
{
    fg_tokens out = {0};
    cr_assert_eq(fg_tok_encode(t, s, strlen(s), add_special, parse_special, &out), FG_OK, "%s", fg_last_error());
    for (size_t i = 0; i < out.n && i < cap; i++) ids[i] = out.ids[i];
    size_t n = out.n;
    fg_tokens_free(&out);
    return n;
}

Test(tokenizer, smollm2_metadata)
{
    loaded m = load_model(FG_TEST_SMOLLM2);
    cr_assert_eq(fg_tok_kind(m.t), FG_VOCAB_BPE);
    cr_assert_str_eq(fg_tok_model_name(m.t), "gpt2");
    cr_assert_str_eq(fg_tok_pre_name(m.t), "smollm");
    cr_assert_eq(fg_tok_n_vocab(m.t), 49152);
    cr_assert_eq(fg_tok_bos(m.t), 1);
    cr_assert_eq(fg_tok_eos(m.t), 2);
    cr_assert_eq(fg_tok_unk(m.t), 0);
    cr_assert_eq(fg_tok_pad(m.t), 2);
    cr_assert(!fg_tok_add_bos(m.t) && !fg_tok_add_eos(m.t));
    cr_assert(fg_tok_is_eog(m.t, 2));                               /* <|im_end|> */
    cr_assert(fg_tok_is_eog(m.t, 0));                               /* <|endoftext|> */
    cr_assert(!fg_tok_is_eog(m.t, 1));                              /* <|im_start|> */
    cr_assert_eq(fg_tok_find(m.t, "<|im_start|>", 12), 1);
    cr_assert_eq(fg_tok_type(m.t, 1), FG_TOKEN_CONTROL);

    int32_t ids[16];
    /* No BOS for SmolLM2 even with add_special. */
    size_t n = encode_n(m.t, "<|im_start|>user", true, true, ids, 16);
    cr_assert_eq(ids[0], 1);
    cr_assert_eq(n, 2);
    /* Not parsed: the control token's text is ordinary text. */
    n = encode_n(m.t, "<|im_start|>", true, false, ids, 16);
    cr_assert(n > 1 && ids[0] != 1);
    cr_assert_eq(encode_n(m.t, "", true, true, ids, 16), 0);

    /* Byte-level decoding: Ġ is a space, control text only on request. */
    char buf[64];
    int32_t hello[8];
    size_t nh = encode_n(m.t, " Hello", false, false, hello, 8);
    cr_assert_eq(nh, 1);
    size_t bl = fg_tok_token_bytes(m.t, hello[0], false, buf, sizeof buf);
    cr_assert(bl == 6 && memcmp(buf, " Hello", 6) == 0);
    cr_assert_eq(fg_tok_token_bytes(m.t, 2, false, buf, sizeof buf), 0);
    cr_assert_eq(fg_tok_token_bytes(m.t, 2, true, buf, sizeof buf), 10);
    /* cap smaller than the token: the full length comes back, no overrun. */
    cr_assert_eq(fg_tok_token_bytes(m.t, hello[0], false, buf, 2), 6);
    unload(&m);
}

Test(tokenizer, gemma3_metadata_and_flags, .timeout = 60)
{
    loaded m = load_model(FG_TEST_GEMMA3);
    cr_assert_eq(fg_tok_kind(m.t), FG_VOCAB_SPM);
    cr_assert_str_eq(fg_tok_model_name(m.t), "llama");
    cr_assert_eq(fg_tok_n_vocab(m.t), 262144);
    cr_assert_eq(fg_tok_bos(m.t), 2);
    cr_assert_eq(fg_tok_eos(m.t), 1);
    cr_assert(fg_tok_add_bos(m.t) && !fg_tok_add_eos(m.t));
    int32_t eot = fg_tok_find(m.t, "<end_of_turn>", 13);
    cr_assert_geq(eot, 0);
    cr_assert_eq(fg_tok_eot(m.t), eot);
    cr_assert(fg_tok_is_eog(m.t, eot) && fg_tok_is_eog(m.t, 1) && !fg_tok_is_eog(m.t, 2));

    int32_t a[16], b[16];
    size_t na = encode_n(m.t, "Hello world", true, true, a, 16);
    size_t nb = encode_n(m.t, "Hello world", false, true, b, 16);
    cr_assert_eq(na, nb + 1);
    cr_assert_eq(a[0], 2, "BOS first when add_special");
    cr_assert(memcmp(a + 1, b, nb * sizeof *b) == 0);
    cr_assert_eq(encode_n(m.t, "", true, true, a, 16), 1);
    cr_assert_eq(encode_n(m.t, "", false, true, a, 16), 0);
    /* User-defined tokens ("\n\n", "<table>") match even when special ones don't. */
    na = encode_n(m.t, "<start_of_turn>\n\n<table>", false, false, a, 16);
    cr_assert_eq(a[na - 1], fg_tok_find(m.t, "<table>", 7));
    cr_assert_eq(a[na - 2], fg_tok_find(m.t, "\n\n", 2));
    cr_assert_neq(a[0], fg_tok_find(m.t, "<start_of_turn>", 15));

    /* Decoding: BOS hidden unless rendered, byte tokens as bytes. */
    int32_t ids[] = {2, (int32_t)fg_tok_find(m.t, "<0xE2>", 6), (int32_t)fg_tok_find(m.t, "<0x82>", 6),
                     (int32_t)fg_tok_find(m.t, "<0xAC>", 6)};
    char *s;
    cr_assert_eq(fg_tok_decode(m.t, ids, 4, false, &s), FG_OK);
    cr_assert_str_eq(s, "\xe2\x82\xac");
    free(s);
    cr_assert_eq(fg_tok_decode(m.t, ids, 4, true, &s), FG_OK);
    cr_assert_str_eq(s, "<bos>\xe2\x82\xac");
    free(s);
    unload(&m);
}

static char *make_text(const corpus *c, size_t bytes, size_t *len)
{
    char *s = malloc(bytes + 512);
    size_t n = 0;
    for (size_t i = 0; n < bytes; i = (i + 1) % c->n) {
        memcpy(s + n, c->v[i].s, c->v[i].n);
        n += c->v[i].n;
        s[n++] = '\n';
    }
    *len = n;
    return s;
}

static double time_encode(const fg_tokenizer *t, const char *s, size_t n, size_t *n_tok)
{
    fg_tokens out = {0};
    double t0 = now_s();
    cr_assert_eq(fg_tok_encode(t, s, n, false, true, &out), FG_OK, "%s", fg_last_error());
    double dt = now_s() - t0;
    *n_tok = out.n;
    fg_tokens_free(&out);
    return dt;
}

static void check_speed(const char *model_file)
{
    loaded m = load_model(model_file);
    corpus c = load_corpus();
    double limit = FG_TEST_SANITIZED ? 20.0 : 1.0;
    size_t n;
    char *mixed = make_text(&c, 100000, &n);
    size_t n_tok;
    double dt_mixed = time_encode(m.t, mixed, n, &n_tok);
    fprintf(stderr, "tokenizer speed %s: load %.3f s; 100 KB corpus text -> %zu tokens in %.3f s", model_file,
            m.load_s, n_tok, dt_mixed);
    cr_assert_lt(dt_mixed, limit);
    /* Inputs that are one long word or one long run: quadratic merging would show here. */
    const char *fills[] = {"a", " ", "ab", "\xe4\xb8\x96", "9", "\xf0\x9f\x98\x80"};
    for (size_t k = 0; k < sizeof fills / sizeof fills[0]; k++) {
        size_t fl = strlen(fills[k]);
        for (size_t i = 0; i + fl <= n; i += fl) memcpy(mixed + i, fills[k], fl);
        size_t len = n / fl * fl;
        double dt = time_encode(m.t, mixed, len, &n_tok);
        fprintf(stderr, "; run of '%s' -> %zu tokens in %.3f s", fills[k], n_tok, dt);
        cr_assert_lt(dt, limit, "%zu bytes of '%s' took %.3f s", len, fills[k], dt);
    }
    fprintf(stderr, "\n");
    cr_assert_lt(m.load_s, FG_TEST_SANITIZED ? 20.0 : 1.0, "loading the vocabulary took %.3f s", m.load_s);
    free(mixed);
    fg_test_corpus_free(&c);
    unload(&m);
}

Test(tokenizer, speed_smollm2, .timeout = 120) { check_speed(FG_TEST_SMOLLM2); }
Test(tokenizer, speed_gemma3, .timeout = 120) { check_speed(FG_TEST_GEMMA3); }

/* One tokenizer shared by threads: each encodes the whole corpus and must get
 * what a single thread gets. */
typedef struct thread_job {
    const fg_tokenizer *t;
    const corpus *c;
    size_t n_tokens;
    uint64_t hash; /* of all ids, in order */
    bool ok;
} thread_job;

static void *encode_corpus(void *arg)
{
    thread_job *j = arg;
    j->ok = true;
    j->hash = 1469598103934665603ull;
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < j->c->n; i++) {
            fg_tokens out = {0};
            if (fg_tok_encode(j->t, j->c->v[i].s, j->c->v[i].n, true, true, &out) != FG_OK) j->ok = false;
            for (size_t k = 0; k < out.n; k++) j->hash = (j->hash ^ (uint32_t)out.ids[k]) * 1099511628211ull;
            j->n_tokens += out.n;
            fg_tokens_free(&out);
        }
    }
    return NULL;
}

Test(tokenizer, threads_share_one_tokenizer, .timeout = 60)
{
    loaded m = load_model(FG_TEST_SMOLLM2);
    corpus c = load_corpus();
    thread_job ref = {m.t, &c, 0, 0, false};
    encode_corpus(&ref);
    cr_assert(ref.ok);
    pthread_t th[4];
    thread_job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){m.t, &c, 0, 0, false};
        cr_assert_eq(pthread_create(&th[i], NULL, encode_corpus, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_assert(jobs[i].ok && jobs[i].hash == ref.hash && jobs[i].n_tokens == ref.n_tokens,
                  "thread %d got other ids", i);
    }
    fg_test_corpus_free(&c);
    unload(&m);
}

/* ---- A synthetic vocabulary ------------------------------------------------------------- */

typedef struct tiny_tok {
    const char *text;
    int32_t type;
    float score;
} tiny_tok;

/* Writes a GGUF holding only tokenizer metadata and opens its tokenizer. */
static fg_tokenizer *tiny_load(const char *model, const tiny_tok *toks, size_t n, bool byte_tokens,
                               const char *const *merges, size_t n_merges, bool add_space_prefix, bool add_eos,
                               fg_gguf **g_out)
{
    size_t total = n + (byte_tokens ? 256 : 0);
    const char **texts = calloc(total, sizeof *texts);
    int32_t *types = calloc(total, sizeof *types);
    float *scores = calloc(total, sizeof *scores);
    char (*hex)[8] = calloc(256, sizeof *hex);
    for (size_t i = 0; i < n; i++) {
        texts[i] = toks[i].text;
        types[i] = toks[i].type;
        scores[i] = toks[i].score;
    }
    for (size_t b = 0; byte_tokens && b < 256; b++) {
        snprintf(hex[b], 8, "<0x%02X>", (unsigned)b);
        texts[n + b] = hex[b];
        types[n + b] = FG_TOKEN_BYTE;
    }
    fg_gguf_writer *w = fg_gguf_writer_init();
    cr_assert(w);
    cr_assert_eq(fg_gguf_writer_set_str(w, "general.architecture", "llama"), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_str(w, "tokenizer.ggml.model", model), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", texts, total), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", FG_GGUF_INT32, types, total), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_arr(w, "tokenizer.ggml.scores", FG_GGUF_FLOAT32, scores, total), FG_OK);
    if (merges) {
        cr_assert_eq(fg_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, n_merges), FG_OK);
        cr_assert_eq(fg_gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt2"), FG_OK);
    }
    cr_assert_eq(fg_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", add_space_prefix), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", add_eos), FG_OK);
    char path[] = "/tmp/forge-tok-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(fg_gguf_writer_write(w, path, 32), FG_OK, "%s", fg_last_error());
    fg_gguf_writer_free(w);
    cr_assert_eq(fg_gguf_open(path, g_out), FG_OK, "%s", fg_last_error());
    unlink(path);
    fg_tokenizer *t;
    cr_assert_eq(fg_tok_load(*g_out, &t), FG_OK, "%s", fg_last_error());
    free(texts);
    free(types);
    free(scores);
    free(hex);
    return t;
}

#define SP "\xe2\x96\x81"
enum { U = 0, B = 1, E = 2 }; /* <unk>, <s>, </s> */
static const tiny_tok k_spm[] = {
    {"<unk>", FG_TOKEN_UNKNOWN, 0},
    {"<s>", FG_TOKEN_CONTROL, 0},
    {"</s>", FG_TOKEN_CONTROL, 0},
    {SP, FG_TOKEN_NORMAL, -1},      /* 3 */
    {"a", FG_TOKEN_NORMAL, -2},     /* 4 */
    {"b", FG_TOKEN_NORMAL, -3},     /* 5 */
    {"c", FG_TOKEN_NORMAL, -4},     /* 6 */
    {"ab", FG_TOKEN_NORMAL, -5},    /* 7 */
    {"bc", FG_TOKEN_NORMAL, -6},    /* 8: lower score than ab: "abc" -> ab c */
    {SP "a", FG_TOKEN_NORMAL, -7},  /* 9 */
    {SP "ab", FG_TOKEN_NORMAL, -8}, /* 10 */
    {"<tool>", FG_TOKEN_USER_DEFINED, 0}, /* 11 */
    {"<ctl>", FG_TOKEN_CONTROL, 0},       /* 12 */
    {"cd", FG_TOKEN_USER_DEFINED, 0},     /* 13 */
    {"bcd", FG_TOKEN_USER_DEFINED, 0},    /* 14 */
    {"aa", FG_TOKEN_NORMAL, -0.5f},       /* 15 */
};
#define N_SPM (sizeof k_spm / sizeof k_spm[0])

static void expect_ids(const fg_tokenizer *t, const char *text, bool add_special, bool parse_special,
                       const int32_t *want, size_t n_want)
{
    fg_tokens out = {0};
    cr_assert_eq(fg_tok_encode(t, text, strlen(text), add_special, parse_special, &out), FG_OK, "%s",
                 fg_last_error());
    bool same = out.n == n_want && memcmp(out.ids, want, n_want * sizeof *want) == 0;
    if (!same) {
        fprintf(stderr, "encoding \"%s\":\n", text);
        print_ids("want", want, n_want);
        print_ids("got ", out.ids, out.n);
    }
    cr_assert(same, "encoding \"%s\" gave other ids (see stderr)", text);
    fg_tokens_free(&out);
}

#define EXPECT(t, text, add, parse, ...)                                                              \
    do {                                                                                              \
        const int32_t want_[] = {__VA_ARGS__};                                                        \
        expect_ids(t, text, add, parse, want_, sizeof want_ / sizeof want_[0]);                      \
    } while (0)

static int32_t byte_id(size_t b) { return (int32_t)(N_SPM + b); }

Test(tokenizer, tiny_spm_merges_prefix_and_fallback)
{
    fg_gguf *g;
    fg_tokenizer *t = tiny_load("llama", k_spm, N_SPM, true, NULL, 0, true, true, &g);
    cr_assert_eq(fg_tok_kind(t), FG_VOCAB_SPM);
    cr_assert(fg_tok_add_bos(t), "SPM files add BOS unless they say otherwise");
    /* Space prefix, best score first, BOS and EOS from the flags. */
    EXPECT(t, "ab", true, true, B, 10, E);
    EXPECT(t, "abc", false, true, 10, 6);
    EXPECT(t, "bc", false, true, 3, 8);
    /* "aaa": aa is the best merge; the leftmost pair goes first. */
    EXPECT(t, "aaa", false, true, 3, 15, 4);
    /* A text starting with a space gets no second prefix (HF Metaspace "first"). */
    EXPECT(t, " a", false, true, 9);
    /* Byte fallback for a character with no token: é = C3 A9. */
    EXPECT(t, "\xc3\xa9", false, true, 3, byte_id(0xC3), byte_id(0xA9));
    /* Special tokens: control only with parse_special; user-defined always;
     * the prefix goes only on the text at offset 0. */
    EXPECT(t, "<ctl>a", false, true, 12, 4);
    EXPECT(t, "a<tool>b", false, false, 9, 11, 5);
    /* Leftmost-longest: "ab" is not special, so "bcd" wins at offset 1... */
    EXPECT(t, "abcd", false, true, 9, 14);
    /* ...and at one position the longer token wins over "cd" starting later. */
    EXPECT(t, "cbcd", false, true, 3, 6, 14);

    /* Decoding: the prefix space is dropped once; bytes reassemble. */
    int32_t ids[] = {B, 10, 3, 4, byte_id(0xC3), byte_id(0xA9)};
    char *s;
    cr_assert_eq(fg_tok_decode(t, ids, 6, false, &s), FG_OK);
    cr_assert_str_eq(s, "ab a\xc3\xa9");
    free(s);
    fg_tok_free(t);
    fg_gguf_close(g);
}

Test(tokenizer, tiny_spm_unknown_without_byte_tokens)
{
    fg_gguf *g;
    fg_tokenizer *t = tiny_load("llama", k_spm, N_SPM, false, NULL, 0, false, false, &g);
    /* Two unknown characters in a row fuse into one <unk> (HF fuse_unk). */
    EXPECT(t, "a\xc3\xa9\xe4\xb8\x96" "b", false, true, 4, U, 5);
    EXPECT(t, "\xc3\xa9" "a\xc3\xa9", false, true, U, 4, U);
    /* <unk> is special: rendered only on request. */
    int32_t ids[] = {4, U, 5};
    char *s;
    cr_assert_eq(fg_tok_decode(t, ids, 3, false, &s), FG_OK);
    cr_assert_str_eq(s, "ab");
    free(s);
    fg_tok_free(t);
    fg_gguf_close(g);
}

Test(tokenizer, stream_holds_split_characters)
{
    fg_gguf *g;
    fg_tokenizer *t = tiny_load("llama", k_spm, N_SPM, true, NULL, 0, false, false, &g);
    fg_detok d;
    fg_detok_init(&d, t, false);
    char *out = NULL;
    size_t n = 0, cap = 0;
    /* 😀 = F0 9F 98 80 arrives one byte token at a time. */
    const uint8_t emoji[] = {0xF0, 0x9F, 0x98, 0x80};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(fg_detok_push(&d, byte_id(emoji[i]), &out, &n, &cap), FG_OK);
        cr_assert_eq(n, 0, "byte %d of 4 emitted early", i);
    }
    cr_assert_eq(fg_detok_push(&d, byte_id(emoji[3]), &out, &n, &cap), FG_OK);
    cr_assert(n == 4 && memcmp(out, emoji, 4) == 0);
    /* An invalid byte becomes U+FFFD at once; an unfinished character at the
     * end becomes one U+FFFD at flush. */
    n = 0;
    cr_assert_eq(fg_detok_push(&d, byte_id(0xFF), &out, &n, &cap), FG_OK);
    cr_assert_eq(fg_detok_push(&d, 4, &out, &n, &cap), FG_OK);
    cr_assert_eq(fg_detok_push(&d, byte_id(0xE4), &out, &n, &cap), FG_OK);
    cr_assert_eq(fg_detok_push(&d, byte_id(0xB8), &out, &n, &cap), FG_OK);
    cr_assert_str_eq(out, "\xef\xbf\xbd" "a");
    /* A lead byte followed by a non-continuation: the held bytes are one U+FFFD. */
    cr_assert_eq(fg_detok_push(&d, 5, &out, &n, &cap), FG_OK);
    cr_assert_str_eq(out, "\xef\xbf\xbd" "a" "\xef\xbf\xbd" "b");
    cr_assert_eq(fg_detok_push(&d, byte_id(0xE4), &out, &n, &cap), FG_OK);
    cr_assert_eq(fg_detok_flush(&d, &out, &n, &cap), FG_OK);
    cr_assert_str_eq(out, "\xef\xbf\xbd" "a" "\xef\xbf\xbd" "b" "\xef\xbf\xbd");
    free(out);

    /* Whole decode of the same ids gives the same text. */
    int32_t ids[] = {byte_id(0xFF), 4, byte_id(0xE4), byte_id(0xB8), 5, byte_id(0xE4)};
    char *s;
    cr_assert_eq(fg_tok_decode(t, ids, 6, false, &s), FG_OK);
    cr_assert_str_eq(s, "\xef\xbf\xbd" "a" "\xef\xbf\xbd" "b" "\xef\xbf\xbd");
    free(s);
    fg_tok_free(t);
    fg_gguf_close(g);
}

/* GPT-2 byte-level BPE: byte 0x20 is "Ġ" (U+0120), 0x0A is "Ċ" (U+010A). */
Test(tokenizer, tiny_bpe_merge_ranks)
{
    static char chars[256][4];
    tiny_tok toks[256 + 8];
    size_t n = 0;
    toks[n++] = (tiny_tok){"<|endoftext|>", FG_TOKEN_CONTROL, 0};
    toks[n++] = (tiny_tok){"<|im_start|>", FG_TOKEN_CONTROL, 0};
    toks[n++] = (tiny_tok){"<|im_end|>", FG_TOKEN_CONTROL, 0};
    /* The 256 byte characters in byte order. */
    for (int b = 0; b < 256; b++) {
        byte_level_char(b, chars[b]);
        toks[n++] = (tiny_tok){chars[b], FG_TOKEN_NORMAL, 0};
    }
    size_t base = n;
    toks[n++] = (tiny_tok){"aa", FG_TOKEN_NORMAL, 0};                 /* base + 0 */
    toks[n++] = (tiny_tok){"\xc4\xa0" "a", FG_TOKEN_NORMAL, 0};       /* base + 1: " a" */
    toks[n++] = (tiny_tok){"\xc4\xa0" "aa", FG_TOKEN_NORMAL, 0};      /* base + 2 */
    toks[n++] = (tiny_tok){"bc", FG_TOKEN_NORMAL, 0};                 /* base + 3 */
    toks[n++] = (tiny_tok){"ab", FG_TOKEN_NORMAL, 0};                 /* base + 4 */
    const char *merges[] = {"b c", "a a", "\xc4\xa0 a", "\xc4\xa0" "a a", "a b"};
    fg_gguf *g;
    fg_tokenizer *t = tiny_load("gpt2", toks, n, false, merges, 5, false, false, &g);
    cr_assert_eq(fg_tok_kind(t), FG_VOCAB_BPE);
    cr_assert(!fg_tok_add_bos(t), "byte-level files add no BOS unless they say so");
    int32_t A = 3 + 'a', G = 3 + 0x20;
    /* "abc": b c has the better rank although a b is leftmost. */
    EXPECT(t, "abc", true, true, A, (int32_t)base + 3);
    /* "aaa": equal ranks, the leftmost pair first. */
    EXPECT(t, "aaa", false, true, (int32_t)base, A);
    EXPECT(t, " a", false, true, (int32_t)base + 1);
    /* " aa": a a (rank 1) beats Ġ a (rank 2), and "Ġ aa" is no merge, so the
     * vocab's "Ġaa" is never reached. */
    EXPECT(t, " aa", false, true, G, (int32_t)base);
    /* Control tokens whole when parsed; newline is byte 0x0A's character. */
    EXPECT(t, "<|im_start|>a\n", false, true, 1, A, 3 + 0x0A);
    char *s;
    int32_t ids[] = {1, (int32_t)base + 2, G, 3 + 0x0A, 2};
    cr_assert_eq(fg_tok_decode(t, ids, 5, true, &s), FG_OK);
    cr_assert_str_eq(s, "<|im_start|> aa \n<|im_end|>");
    free(s);
    fg_tok_free(t);
    fg_gguf_close(g);
}

/* ---- Errors ------------------------------------------------------------------------------- */

Test(tokenizer, unsupported_model_is_named)
{
    fg_gguf_writer *w = fg_gguf_writer_init();
    const char *toks[] = {"a"};
    cr_assert_eq(fg_gguf_writer_set_str(w, "tokenizer.ggml.model", "t5"), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 1), FG_OK);
    char path[] = "/tmp/forge-tok-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    cr_assert_eq(fg_gguf_writer_write(w, path, 32), FG_OK);
    fg_gguf_writer_free(w);
    fg_gguf *g;
    cr_assert_eq(fg_gguf_open(path, &g), FG_OK);
    unlink(path);
    fg_tokenizer *t = NULL;
    cr_assert_eq(fg_tok_load(g, &t), FG_ERR_UNSUPPORTED);
    cr_assert_null(t);
    cr_assert(strstr(fg_last_error(), "tokenizer.ggml.model") && strstr(fg_last_error(), "t5"), "%s",
              fg_last_error());
    fg_gguf_close(g);
}
