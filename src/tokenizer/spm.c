/*
 * spm.c — SentencePiece-style BPE (tokenizer.ggml.model = llama): Llama 2,
 * Gemma, Mistral and friends.
 *
 * A raw-text fragment (no special tokens in it) has its spaces written as
 * U+2581 "▁", gets a leading ▁ when the file asks for a space prefix, and is
 * split into characters. A character with no token of its own falls back to
 * its bytes' <0xXX> tokens (or the unknown token), which never merge. Then any
 * two adjacent symbols whose concatenation is a token may merge; the merge
 * loop in vocab.c always takes the best one first. Decoding undoes both: a
 * <0xXX> token gives its byte, U+2581 gives a space.
 *
 * "Best" is what HF tokenizers does with a GGUF vocabulary, since forge is
 * tested against it: transformers rebuilds merges from the vocab and orders
 * them by the merged token's score (Gemma: by its position in the file, as its
 * scores do not follow merge order), then by the longer left piece, then the
 * longer right piece, then token order; ties between equal pairs go to the
 * leftmost. SentencePiece itself (and llama.cpp) break score ties by position
 * only; the two differ only on vocabularies with tied scores.
 *
 * Gemma files also store multi-space tokens with real spaces ("  ") where
 * the model looks them up as "▁▁"; they are found here through an alias map
 * under that spelling, and they are not matched whole in the text (which is
 * what HF's GGUF loader does; llama.cpp matches them as user-defined tokens).
 *
 * Input: the fg_vocab (token texts, unk, the space-prefix flag), and the
 * scores and architecture from the fg_gguf. Output: an fg_spm that owns the
 * merge priorities and the alias map. Uses vocab.c only.
 */
#include "tokenizer/spm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/utf8.h"

#define SPACE_MARK "\xe2\x96\x81" /* U+2581 */

/* ---- Loading ------------------------------------------------------------------ */

/* Python's str.isspace(), which decides what transformers respells. */
static bool py_isspace(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Code points in s if it contains a space and nothing but whitespace, else 0. */
static size_t blank_run_chars(const char *s, size_t len)
{
    bool space = false;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = fg_utf8_decode((const uint8_t *)s + i, len - i, &cp);
        if (k <= 0 || !py_isspace(cp)) return 0;
        space |= cp == ' ';
        i += (size_t)k;
        n++;
    }
    return space ? n : 0;
}

/* Gemma's scores do not follow merge order, so its tokens merge in file
 * order instead. An architecture key that is absent or not a string is no
 * Gemma; the name is compared as a C string, up to its first NUL. */
static bool is_gemma(const fg_gguf *g)
{
    char arch[64] = "";
    fg_gguf_str s;
    if (fg_gguf_find(g, "general.architecture") && fg_gguf_get_str(g, "general.architecture", &s) == FG_OK)
        snprintf(arch, sizeof arch, "%.*s", (int)(s.len < 63 ? s.len : 63), s.ptr);
    return strcmp(arch, "gemma") == 0 || strcmp(arch, "gemma2") == 0 || strcmp(arch, "gemma3") == 0;
}

typedef struct score_idx {
    float score;
    int32_t id;
} score_idx;

static int cmp_score_desc(const void *a, const void *b)
{
    const score_idx *x = a, *y = b;
    /* NaN sorts last. */
    bool xn = x->score != x->score, yn = y->score != y->score;
    if (xn != yn) return xn ? 1 : -1;
    if (!xn && x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static fg_status build_aliases(fg_spm *spm, const fg_vocab *v)
{
    size_t pool = 0;
    int32_t n = 0;
    for (int32_t id = 0; id < v->n_vocab; id++) {
        size_t k = blank_run_chars(v->pool + v->text_off[id], v->text_len[id]);
        if (k) {
            pool += 3 * k;
            n++;
        }
    }
    if (n == 0) return FG_OK;
    spm->alias_pool = malloc(pool ? pool : 1);
    spm->alias_off = malloc((size_t)n * sizeof *spm->alias_off);
    spm->alias_len = malloc((size_t)n * sizeof *spm->alias_len);
    spm->alias_id = malloc((size_t)n * sizeof *spm->alias_id);
    if (!spm->alias_pool || !spm->alias_off || !spm->alias_len || !spm->alias_id)
        return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory");
    uint32_t at = 0;
    for (int32_t id = 0; id < v->n_vocab; id++) {
        size_t k = blank_run_chars(v->pool + v->text_off[id], v->text_len[id]);
        if (!k) continue;
        int32_t a = spm->n_alias++;
        spm->alias_off[a] = at;
        spm->alias_len[a] = (uint32_t)(3 * k);
        spm->alias_id[a] = id;
        for (size_t j = 0; j < k; j++, at += 3) memcpy(spm->alias_pool + at, SPACE_MARK, 3);
    }
    return fg_strmap_build(&spm->alias, spm->alias_pool, spm->alias_off, spm->alias_len, spm->n_alias);
}

fg_status fg_spm_load(fg_spm *spm, const fg_vocab *v, const fg_gguf *g)
{
    spm->vocab = v;
    for (int b = 0; b < 256; b++) spm->byte_tok[b] = -1;
    int32_t n = v->n_vocab;
    bool gemma = is_gemma(g);
    spm->group = malloc((size_t)n * sizeof *spm->group);
    if (!spm->group) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory");

    if (gemma) {
        for (int32_t i = 0; i < n; i++) spm->group[i] = ((uint64_t)i << 40) | (uint64_t)i;
    } else {
        /* Dense rank of the score, best first: equal scores share a group. */
        score_idx *si = malloc((size_t)n * sizeof *si);
        if (!si) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory");
        const fg_gguf_value *scores = NULL;
        if (fg_gguf_find(g, "tokenizer.ggml.scores")) {
            fg_status st = fg_gguf_get_arr(g, "tokenizer.ggml.scores", FG_GGUF_VTYPE_COUNT, &scores);
            fg_gguf_vtype e = st == FG_OK ? scores->v.arr.elem : FG_GGUF_STRING;
            if (st == FG_OK && (scores->v.arr.n != (uint64_t)n || e == FG_GGUF_STRING || e == FG_GGUF_ARRAY ||
                                e == FG_GGUF_BOOL))
                st = fg_err_set(FG_ERR_FORMAT, "%s: tokenizer.ggml.scores must be %d numbers (one per token)",
                                g->path, n);
            if (st != FG_OK) {
                free(si);
                return st;
            }
        }
        for (int32_t i = 0; i < n; i++) {
            si[i].score = scores ? (float)fg_gguf_arr_float(scores, (uint64_t)i) : 0.0f;
            si[i].id = i;
        }
        qsort(si, (size_t)n, sizeof *si, cmp_score_desc);
        uint64_t group = 0;
        for (int32_t i = 0; i < n; i++) {
            if (i > 0 && cmp_score_desc(&(score_idx){si[i - 1].score, 0}, &(score_idx){si[i].score, 0}) != 0)
                group++;
            spm->group[si[i].id] = (group << 40) | (uint64_t)si[i].id;
        }
        free(si);
    }

    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        spm->byte_tok[b] = fg_vocab_lookup(v, hex, 6);
    }
    if (gemma) FG_TRY(build_aliases(spm, v));
    return FG_OK;
}

void fg_spm_free(fg_spm *spm)
{
    free(spm->group);
    free(spm->alias_pool);
    free(spm->alias_off);
    free(spm->alias_len);
    free(spm->alias_id);
    fg_strmap_free(&spm->alias);
    memset(spm, 0, sizeof *spm);
}

bool fg_spm_is_alias(const fg_spm *spm, int32_t id)
{
    for (int32_t i = 0; i < spm->n_alias; i++)
        if (spm->alias_id[i] == id) return true;
    return false;
}

/* ---- Encoding ----------------------------------------------------------------- */

/* The token whose text, as the SPM model spells it, is s[0..len); -1 if none.
 * Where an alias and a stored text collide, the later id wins (HF's dict). */
static int32_t spm_lookup(const fg_spm *spm, const char *s, size_t len)
{
    int32_t id = fg_vocab_lookup(spm->vocab, s, len);
    if (spm->n_alias && len >= 3 && memcmp(s, SPACE_MARK, 3) == 0) {
        int32_t a = fg_strmap_get(&spm->alias, spm->alias_pool, spm->alias_off, spm->alias_len, s, len);
        if (a >= 0 && spm->alias_id[a] > id) id = spm->alias_id[a];
    }
    return id;
}

static bool spm_pair(const void *ctx, const char *text, const fg_sym *l, const fg_sym *r, uint64_t *key,
                     int32_t *merged)
{
    const fg_spm *spm = ctx;
    int32_t id = spm_lookup(spm, text + l->start, (size_t)l->len + r->len);
    if (id < 0) return false;
    uint64_t ll = l->nchars > 255 ? 0 : 255 - l->nchars;
    uint64_t rr = r->nchars > 255 ? 0 : 255 - r->nchars;
    *key = spm->group[id] | ll << 32 | rr << 24;
    *merged = id;
    return true;
}

fg_status fg_spm_encode(const fg_spm *spm, fg_vocab_scratch *s, const char *text, size_t len, bool at_text_start,
                        fg_tokens *out)
{
    const fg_vocab *v = spm->vocab;
    /* HF's Metaspace(prepend_scheme="first"): the prefix goes only on the text
     * at offset 0, and not when it already starts with a space. */
    bool prefix = v->add_space_prefix && at_text_start && text[0] != ' ' &&
                  !(len >= 3 && memcmp(text, SPACE_MARK, 3) == 0);
    size_t cap = 3 * len + 3;
    FG_TRY(fg_vocab_scratch_reserve(s, cap, cap));
    char *buf = s->buf;
    size_t m = 0;
    if (prefix) {
        memcpy(buf, SPACE_MARK, 3);
        m = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + m, SPACE_MARK, 3);
            m += 3;
        } else {
            buf[m++] = text[i];
        }
    }

    size_t n = 0;
    for (size_t i = 0; i < m;) {
        uint32_t cp;
        int k = fg_utf8_decode((const uint8_t *)buf + i, m - i, &cp);
        size_t cl = k > 0 ? (size_t)k : 1; /* an invalid byte is a character of its own */
        int32_t id = spm_lookup(spm, buf + i, cl);
        if (id >= 0) {
            s->sym[n++] = (fg_sym){.id = id, .start = (uint32_t)i, .len = (uint32_t)cl, .nchars = 1};
            i += cl;
            continue;
        }
        bool bytes_ok = true;
        for (size_t j = 0; j < cl; j++) bytes_ok &= spm->byte_tok[(uint8_t)buf[i + j]] >= 0;
        if (bytes_ok) {
            for (size_t j = 0; j < cl; j++)
                s->sym[n++] = (fg_sym){.id = spm->byte_tok[(uint8_t)buf[i + j]], .start = (uint32_t)(i + j),
                                       .len = 1, .nchars = 1, .frozen = true};
        } else if (v->unk >= 0) {
            /* Consecutive unknown characters fuse into one unknown token. */
            if (n > 0 && s->sym[n - 1].frozen && s->sym[n - 1].id == v->unk &&
                s->sym[n - 1].start + s->sym[n - 1].len == i)
                s->sym[n - 1].len += (uint32_t)cl;
            else
                s->sym[n++] = (fg_sym){.id = v->unk, .start = (uint32_t)i, .len = (uint32_t)cl, .nchars = 1,
                                       .frozen = true};
        } else {
            return fg_err_set(FG_ERR_NOT_FOUND,
                              "tokenizer: character at byte %zu has no token, no <0xXX> byte tokens and the "
                              "vocabulary has no unknown token",
                              i);
        }
        i += cl;
    }
    return fg_vocab_merge(s, buf, n, spm_pair, spm, out);
}

/* ---- Decoding ------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

size_t fg_spm_unmap(const char *s, size_t len, bool byte_token, char *buf, size_t cap)
{
    if (byte_token && len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && hexval(s[3]) >= 0 &&
        hexval(s[4]) >= 0) {
        char b = (char)(hexval(s[3]) * 16 + hexval(s[4]));
        return fg_vocab_put(buf, cap, 0, &b, 1);
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (i + 3 <= len && memcmp(s + i, SPACE_MARK, 3) == 0) {
            n = fg_vocab_put(buf, cap, n, " ", 1);
            i += 3;
        } else {
            size_t j = i + 1;
            while (j < len && s[j] != SPACE_MARK[0]) j++;
            n = fg_vocab_put(buf, cap, n, s + i, j - i);
            i = j;
        }
    }
    return n;
}
