/*
 * pretok.c — the pre-tokenizers of byte-level BPE: regex sequences chosen by
 * tokenizer.ggml.pre, run with PCRE2.
 *
 * Input: a tokenizer.ggml.pre name at init, then any byte string to split.
 * Output: pieces (views into the caller's text) handed to a callback in order.
 * Owns: the compiled (and, where the host allows, JIT-compiled) regexes; they
 * are read-only after init, so one fg_pretok serves any number of threads.
 *
 * Which names share which sequence follows llama.cpp's reading of
 * tokenizer.ggml.pre, since GGUF files are written by its converter. The
 * regexes are the ones in the models' tokenizer.json files, not llama.cpp's
 * hand adaptations for std::regex: PCRE2 has \p{..} and scoped (?i:..), and
 * tools/gen_pretok_goldens.py checks every sequence against HF tokenizers.
 *
 * One deliberate rewrite: PCRE2 10.42 lets \s match U+180E MONGOLIAN VOWEL
 * SEPARATOR, which stopped being White_Space in Unicode 6.3 and which neither
 * HF tokenizers nor Python's regex treat as space. So \s and \S reach PCRE2
 * spelled \p{White_Space} and \P{White_Space}, which agree with both on every
 * code point.
 *
 * Invalid UTF-8 never reaches PCRE2. The text is cut into maximal valid runs,
 * split by the regexes, and maximal invalid runs, each one piece as it is.
 * That lets every pcre2_match call skip its UTF check (PCRE2_NO_UTF_CHECK).
 * PCRE2_MATCH_INVALID_UTF would be the library's own answer, but under it
 * PCRE2 ignores PCRE2_NO_UTF_CHECK and the interpreter re-validates the whole
 * rest of the subject on every call, which is quadratic: one-character pieces
 * over 64 KiB of digits took 3.6 s.
 */
#include "tokenizer/pretok.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "base/err.h"
#include "base/utf8.h"


/* ---- The sequences ------------------------------------------------------ */

enum { FG_PRETOK_MAX_REGEX = 6 };

/* GPT-2, as HF ByteLevel(use_regex=true) has it. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

/* cl100k (Llama 3, GLM-4): letters take one leading non-letter, digits go in
 * runs of up to three, newlines gather with the whitespace before them. */
#define RE_LLAMA3                                                                        \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"             \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* Qwen2: cl100k with every digit alone. */
#define RE_QWEN2                                                                         \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"                  \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* Qwen3.5: Qwen2 with combining marks kept on their letters. */
#define RE_QWEN35                                                                        \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}"          \
    "| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* o200k (GPT-4o, Llama 4): a word ends where lower case turns upper. */
#define RE_GPT4O                                                                         \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"                                                      \
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"                                                      \
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* Mistral tekken: o200k's words without contractions, single digits. */
#define RE_TEKKEN                                                                        \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" \
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" \
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* BLOOM: runs up to a space or one of a few sentence marks. */
#define RE_BLOOM " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"

/* The distinct chains of regexes; several names may share one. */
enum fg_pretok_seq {
    SEQ_DEFAULT,
    SEQ_GPT2,
    SEQ_SMOLLM,
    SEQ_LLAMA3,
    SEQ_QWEN2,
    SEQ_QWEN35,
    SEQ_GPT4O,
    SEQ_TEKKEN,
    SEQ_DEEPSEEK3,
    SEQ_DEEPSEEK_CODER,
    SEQ_BLOOM,
    SEQ_VIKING,
    SEQ_GEMMA4,
    SEQ_COUNT,
};

static const struct fg_pretok_seq_def {
    const char *regex[FG_PRETOK_MAX_REGEX + 1]; /* applied in order; NULL-terminated */
    bool byte_level;                            /* see fg_pretok_byte_level */
} k_seqs[SEQ_COUNT] = {
    /* llama.cpp's fallback for a missing or "default" name: Falcon's HF chain
     * (punctuation runs, GPT-2, digit runs, digits in threes). */
    [SEQ_DEFAULT] = {{"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL},
                     true},
    [SEQ_GPT2] = {{RE_GPT2, NULL}, true},
    /* HF Digits(individual_digits) then ByteLevel's GPT-2 regex. */
    [SEQ_SMOLLM] = {{"\\p{N}", RE_GPT2, NULL}, true},
    [SEQ_LLAMA3] = {{RE_LLAMA3, NULL}, true},
    [SEQ_QWEN2] = {{RE_QWEN2, NULL}, true},
    [SEQ_QWEN35] = {{RE_QWEN35, NULL}, true},
    [SEQ_GPT4O] = {{RE_GPT4O, NULL}, true},
    [SEQ_TEKKEN] = {{RE_TEKKEN, NULL}, true},
    /* Digits in threes, then Han and kana runs, then the rest. */
    [SEQ_DEEPSEEK3] = {{"\\p{N}{1,3}",
                        "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
                        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"
                        "|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*"
                        "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
                        NULL},
                       true},
    [SEQ_DEEPSEEK_CODER] = {{"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+",
                             "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+", "\\p{N}", NULL},
                            true},
    [SEQ_BLOOM] = {{RE_BLOOM, NULL}, true},
    [SEQ_VIKING] = {{RE_BLOOM, "\\p{N}", NULL}, true},
    /* SentencePiece-style BPE: only newline runs are split off. */
    [SEQ_GEMMA4] = {{"[^\\n]+|[\\n]+", NULL}, false},
};

/* tokenizer.ggml.pre values and their sequence, grouped by sequence. */
#define FG_PRETOK_NAMES(X)                                                               \
    X("default", SEQ_DEFAULT)                                                            \
    X("gpt2", SEQ_GPT2) X("gpt-2", SEQ_GPT2) X("phi-2", SEQ_GPT2) X("mpt", SEQ_GPT2)     \
    X("olmo", SEQ_GPT2) X("jais", SEQ_GPT2) X("roberta-bpe", SEQ_GPT2)                   \
    X("jina-v1-en", SEQ_GPT2) X("jina-v2-code", SEQ_GPT2) X("jina-es", SEQ_GPT2)         \
    X("jina-de", SEQ_GPT2) X("jina-v2-es", SEQ_GPT2) X("jina-v2-de", SEQ_GPT2)           \
    X("gigachat", SEQ_GPT2) X("a.x-4.0", SEQ_GPT2) X("mellum", SEQ_GPT2)                 \
    X("modern-bert", SEQ_GPT2) X("exaone4", SEQ_GPT2) X("trillion", SEQ_GPT2)            \
    X("granite-docling", SEQ_GPT2)                                                       \
    X("smollm", SEQ_SMOLLM) X("starcoder", SEQ_SMOLLM) X("refact", SEQ_SMOLLM)           \
    X("command-r", SEQ_SMOLLM) X("codeshell", SEQ_SMOLLM) X("exaone", SEQ_SMOLLM)        \
    X("minerva-7b", SEQ_SMOLLM) X("mellum2", SEQ_SMOLLM)                                 \
    X("llama3", SEQ_LLAMA3) X("llama-v3", SEQ_LLAMA3) X("llama-bpe", SEQ_LLAMA3)         \
    X("falcon3", SEQ_LLAMA3) X("falcon-h1", SEQ_LLAMA3) X("pixtral", SEQ_LLAMA3)         \
    X("midm-2.0", SEQ_LLAMA3) X("lfm2", SEQ_LLAMA3) X("dbrx", SEQ_LLAMA3)                \
    X("smaug-bpe", SEQ_LLAMA3) X("chatglm-bpe", SEQ_LLAMA3) X("glm4", SEQ_LLAMA3)        \
    X("qwen2", SEQ_QWEN2) X("deepseek-r1-qwen", SEQ_QWEN2) X("megrez", SEQ_QWEN2)        \
    X("stablelm2", SEQ_QWEN2) X("hunyuan", SEQ_QWEN2) X("grok-2", SEQ_QWEN2)             \
    X("solar-open", SEQ_QWEN2)                                                           \
    X("qwen35", SEQ_QWEN35)                                                              \
    X("gpt-4o", SEQ_GPT4O) X("llama4", SEQ_GPT4O) X("minimax-m2", SEQ_GPT4O)             \
    X("kanana2", SEQ_GPT4O)                                                              \
    X("tekken", SEQ_TEKKEN)                                                              \
    X("deepseek-v3", SEQ_DEEPSEEK3) X("hunyuan-dense", SEQ_DEEPSEEK3)                    \
    X("joyai-llm", SEQ_DEEPSEEK3)                                                        \
    X("deepseek-coder", SEQ_DEEPSEEK_CODER)                                              \
    X("bloom", SEQ_BLOOM) X("poro-chat", SEQ_BLOOM) X("gpt3-finnish", SEQ_BLOOM)         \
    X("viking", SEQ_VIKING)                                                              \
    X("gemma4", SEQ_GEMMA4)

#define FG_PRETOK_NAME_STR(name, seq) name,
#define FG_PRETOK_NAME_SEQ(name, seq) seq,
static const char *const k_names[] = {FG_PRETOK_NAMES(FG_PRETOK_NAME_STR) NULL};
static const unsigned char k_name_seq[] = {FG_PRETOK_NAMES(FG_PRETOK_NAME_SEQ)};

struct fg_pretok {
    const char *name;                            /* one of k_names */
    const struct fg_pretok_seq_def *seq;
    size_t n_regex;
    pcre2_code *code[FG_PRETOK_MAX_REGEX];       /* (n_regex) compiled seq->regex */
    bool jit;                                    /* all of code[] JIT-compiled */
};

const char *const *fg_pretok_names(void)
{
    return k_names;
}

/* ---- Building ----------------------------------------------------------- */

/* Returns a malloc'd copy of pattern with \s and \S spelled as the Unicode
 * White_Space property (see the file header for why), or NULL if out of
 * memory. An escaped backslash is copied as a pair, so "\\s" stays a literal
 * backslash followed by 's'. */
static char *fg_pretok_spell_spaces(const char *pattern)
{
    static const char ws[] = "\\p{White_Space}", not_ws[] = "\\P{White_Space}";
    size_t len = strlen(pattern), n_esc = 0;
    for (size_t i = 0; i < len; i++) {
        if (pattern[i] == '\\') {
            n_esc++;
            i++;
        }
    }
    char *out = malloc(len + n_esc * (sizeof ws - 3) + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (pattern[i] == '\\' && (pattern[i + 1] == 's' || pattern[i + 1] == 'S')) {
            const char *rep = pattern[i + 1] == 's' ? ws : not_ws;
            memcpy(out + o, rep, sizeof ws - 1);
            o += sizeof ws - 1;
            i++;
        } else if (pattern[i] == '\\' && pattern[i + 1]) {
            out[o++] = pattern[i++];
            out[o++] = pattern[i];
        } else {
            out[o++] = pattern[i];
        }
    }
    out[o] = 0;
    return out;
}

/* The message for an unknown name lists every known one, so a user who meets
 * it can tell a typo from a model forge does not support yet. */
static fg_status fg_pretok_unknown(const char *name)
{
    char list[768];
    size_t n = 0;
    for (size_t i = 0; k_names[i] && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", k_names[i]);
    return fg_err_set(FG_ERR_UNSUPPORTED,
                      "pre-tokenizer '%.64s' (tokenizer.ggml.pre) is not one forge implements; "
                      "known: %s",
                      name, list);
}

fg_status fg_pretok_init_ex(const char *name, bool use_jit, fg_pretok **out)
{
    if (!out) return fg_err_set(FG_ERR_INVALID_ARG, "fg_pretok_init: out is NULL");
    *out = NULL;
    if (!name) return fg_err_set(FG_ERR_INVALID_ARG, "fg_pretok_init: name is NULL");

    size_t idx = 0;
    while (k_names[idx] && strcmp(k_names[idx], name) != 0) idx++;
    if (!k_names[idx]) return fg_pretok_unknown(name);

    uint32_t unicode = 0;
    if (pcre2_config(PCRE2_CONFIG_UNICODE, &unicode) < 0 || !unicode)
        return fg_err_set(FG_ERR_UNSUPPORTED,
                          "pre-tokenizer '%s': this libpcre2-8 was built without Unicode "
                          "support, which the BPE regexes need",
                          name);

    fg_pretok *p = calloc(1, sizeof *p);
    if (!p) return fg_err_set(FG_ERR_NOMEM, "pre-tokenizer '%s': out of memory", name);
    p->name = k_names[idx];
    p->seq = &k_seqs[k_name_seq[idx]];
    p->jit = use_jit;

    fg_status st = FG_OK;
    for (; p->seq->regex[p->n_regex]; p->n_regex++) {
        char *spelled = fg_pretok_spell_spaces(p->seq->regex[p->n_regex]);
        if (!spelled) {
            st = fg_err_set(FG_ERR_NOMEM, "pre-tokenizer '%s': out of memory", name);
            goto err;
        }
        int code = 0;
        PCRE2_SIZE at = 0;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)spelled, PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP, &code,
                                       &at, NULL);
        free(spelled);
        if (!re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(code, msg, sizeof msg);
            st = fg_err_set(FG_ERR_UNSUPPORTED,
                            "pre-tokenizer '%s': PCRE2 cannot compile regex %zu (at offset "
                            "%zu): %s",
                            name, p->n_regex + 1, (size_t)at, (const char *)msg);
            goto err;
        }
        p->code[p->n_regex] = re;
        /* JIT is an optimisation: where it is missing or refused (no JIT in
         * this build, no executable memory), pcre2_match interprets. */
        if (use_jit && pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) != 0) p->jit = false;
    }
    *out = p;
    return FG_OK;

err:
    fg_pretok_free(p);
    return st;
}

fg_status fg_pretok_init(const char *name, fg_pretok **out)
{
    return fg_pretok_init_ex(name, true, out);
}

void fg_pretok_free(fg_pretok *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_regex; i++) pcre2_code_free(p->code[i]);
    free(p);
}

const char *const *fg_pretok_patterns(const fg_pretok *p)
{
    return p->seq->regex;
}

bool fg_pretok_byte_level(const fg_pretok *p)
{
    return p->seq->byte_level;
}

bool fg_pretok_jit(const fg_pretok *p)
{
    return p->jit;
}

/* ---- Splitting ---------------------------------------------------------- */

struct fg_pretok_run {
    const fg_pretok *p;
    pcre2_match_data *md; /* this call's own: holds one match (start, end) */
    fg_pretok_cb cb;
    void *ud;
};

/* Finds the first non-empty match of regex `level` in s[0..n) that starts at
 * or after `from`; *found says whether there was one, [*start, *end) is it.
 *
 * Empty matches make no piece, but they steer where the search goes on, as in
 * Python's finditer: after one at q the search resumes at q with an empty
 * match there ruled out. (No current regex can match empty; this keeps the
 * loop finite and faithful if one ever does.)
 *
 * JIT runs on a small machine stack; if a match outgrows it, the interpreter,
 * which keeps its backtracking on the heap, takes that match over. */
static fg_status fg_pretok_next_match(struct fg_pretok_run *r, size_t level, const char *s,
                                      size_t n, size_t from, bool *found, size_t *start,
                                      size_t *end)
{
    const pcre2_code *re = r->p->code[level];
    uint32_t opts = PCRE2_NO_UTF_CHECK; /* s is valid UTF-8: fg_pretok_split checked */
    for (;;) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, opts, r->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, opts | PCRE2_NO_JIT, r->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) {
            *found = false;
            return FG_OK;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            fg_status st = rc == PCRE2_ERROR_NOMEMORY ? FG_ERR_NOMEM : FG_ERR_UNSUPPORTED;
            return fg_err_set(st,
                              "pre-tokenizer '%s': regex %zu gave up at byte %zu of a %zu-byte "
                              "piece (PCRE2: %s); split the text into smaller parts",
                              r->p->name, level + 1, from, n, (const char *)msg);
        }
        /* rc == 0 only says the ovector has no room for capture groups; the
         * whole match, pair 0, is there either way. */
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
        if (ov[1] > ov[0]) {
            *found = true;
            *start = ov[0];
            *end = ov[1];
            return FG_OK;
        }
        from = ov[0];
        opts = PCRE2_NO_UTF_CHECK | PCRE2_NOTEMPTY_ATSTART;
    }
}

/* Splits s[0..n) by regex `level` and hands every piece, match or gap, to the
 * next level; past the last regex, pieces go to the caller. The recursion is
 * as deep as the sequence is long (at most FG_PRETOK_MAX_REGEX). */
static fg_status fg_pretok_split_level(struct fg_pretok_run *r, size_t level, const char *s,
                                       size_t n)
{
    if (level == r->p->n_regex) return r->cb(s, n, r->ud);
    size_t done = 0; /* s[0..done) has been passed on */
    for (;;) {
        bool found = false;
        size_t start = 0, end = 0;
        FG_TRY(fg_pretok_next_match(r, level, s, n, done, &found, &start, &end));
        if (!found) break;
        if (start > done) FG_TRY(fg_pretok_split_level(r, level + 1, s + done, start - done));
        FG_TRY(fg_pretok_split_level(r, level + 1, s + start, end - start));
        done = end;
    }
    if (done < n) FG_TRY(fg_pretok_split_level(r, level + 1, s + done, n - done));
    return FG_OK;
}

fg_status fg_pretok_split(const fg_pretok *p, const char *text, size_t len, fg_pretok_cb cb,
                          void *ud)
{
    if (!p || !cb || (!text && len))
        return fg_err_set(FG_ERR_INVALID_ARG, "fg_pretok_split: %s is NULL",
                          !p ? "the pre-tokenizer" : !cb ? "the callback" : "the text");
    if (len == 0) return FG_OK;

    /* Match data is per call, not per fg_pretok, so that threads can share p. */
    struct fg_pretok_run r = {p, pcre2_match_data_create(1, NULL), cb, ud};
    if (!r.md) return fg_err_set(FG_ERR_NOMEM, "pre-tokenizer '%s': out of memory", p->name);
    /* Valid runs go through the regexes; each invalid run is a piece. */
    const uint8_t *u = (const uint8_t *)text;
    fg_status st = FG_OK;
    for (size_t at = 0; at < len && st == FG_OK;) {
        size_t end = len, bad; /* [at, end) is valid */
        if (!fg_utf8_valid(u + at, len - at, &bad)) end = at + bad;
        if (end > at) st = fg_pretok_split_level(&r, 0, text + at, end - at);
        size_t next = end; /* [end, next) is invalid */
        uint32_t cp;
        while (next < len && fg_utf8_decode(u + next, len - next, &cp) == 0) next++;
        if (next > end && st == FG_OK) st = cb(text + end, next - end, ud);
        at = next;
    }
    pcre2_match_data_free(r.md);
    return st;
}
