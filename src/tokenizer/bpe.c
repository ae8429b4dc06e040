/*
 * bpe.c — byte-level BPE (tokenizer.ggml.model = gpt2): SmolLM2, Qwen, Llama 3
 * and friends.
 *
 * Text is split into pieces by the pre-tokenizer that tokenizer.ggml.pre
 * names (pretok.c); each byte of a piece becomes the printable code point
 * GPT-2's bytes_to_unicode assigns it, whose one-character token starts the
 * symbol list; then the merge loop in vocab.c merges pairs by merge rank,
 * rank = position in tokenizer.ggml.merges.
 *
 * Input: the fg_vocab (token texts, the pre-tokenizer name) and the merges
 * from the fg_gguf. Output: an fg_bpe that owns the merge table and the
 * pre-tokenizer. Uses vocab.c and pretok.c only.
 */
#include "tokenizer/bpe.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/utf8.h"

/* ---- GPT-2 byte <-> code point mapping ------------------------------------------ */

/* bytes_to_unicode: printable Latin-1 bytes (! .. ~, ¡ .. ¬, ® .. ÿ) stand for
 * themselves; the other 68 bytes get U+0100 onwards, in byte order. */
static bool byte_is_printable(int b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

/* Small tables so the hot paths do no searching; built once. */
typedef struct byte_map {
    char utf8[256][2];     /* UTF-8 of byte b's code point (1 or 2 bytes) */
    uint8_t len[256];
    int16_t inv[256 + 68]; /* byte that code point cp stands for, -1 if none */
} byte_map;

static byte_map g_map;
static pthread_once_t g_map_once = PTHREAD_ONCE_INIT;

static void byte_map_build(void)
{
    for (int cp = 0; cp < 256 + 68; cp++) g_map.inv[cp] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int cp = byte_is_printable(b) ? b : next++;
        char u[4];
        int n = fg_utf8_encode((uint32_t)cp, u);
        memcpy(g_map.utf8[b], u, (size_t)n);
        g_map.len[b] = (uint8_t)n;
        g_map.inv[cp] = (int16_t)b;
    }
}

size_t fg_bpe_unmap(const char *s, size_t len, char *buf, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = fg_utf8_decode((const uint8_t *)s + i, len - i, &cp);
        if (k > 0 && cp < 256 + 68 && g_map.inv[cp] >= 0) {
            char b = (char)g_map.inv[cp];
            n = fg_vocab_put(buf, cap, n, &b, 1);
        } else {
            /* Not a byte-level character (a mislabelled added token): keep it. */
            n = fg_vocab_put(buf, cap, n, s + i, k > 0 ? (size_t)k : 1);
        }
        i += k > 0 ? (size_t)k : 1;
    }
    return n;
}

/* ---- Merge table ------------------------------------------------------------------ */

static uint64_t pair_key(int32_t l, int32_t r)
{
    return (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
}

static bool pair_get(const fg_pairmap *m, int32_t l, int32_t r, int32_t *rank, int32_t *merged)
{
    uint64_t key = pair_key(l, r);
    for (uint32_t p = fg_vocab_slot64(key, m->mask); m->key[p]; p = (p + 1) & m->mask) {
        if (m->key[p] == key) {
            *rank = m->rank[p];
            *merged = m->merged[p];
            return true;
        }
    }
    return false;
}

static void pair_put(fg_pairmap *m, int32_t l, int32_t r, int32_t rank, int32_t merged)
{
    uint64_t key = pair_key(l, r);
    uint32_t p = fg_vocab_slot64(key, m->mask);
    while (m->key[p] && m->key[p] != key) p = (p + 1) & m->mask;
    /* A repeated pair takes its later rank, as HF's merge map (built by
     * collecting into a hash map) does. */
    m->key[p] = key;
    m->rank[p] = rank;
    m->merged[p] = merged;
}

fg_status fg_bpe_load(fg_bpe *b, const fg_vocab *v, const fg_gguf *g)
{
    b->vocab = v;
    pthread_once(&g_map_once, byte_map_build);
    for (int c = 0; c < 256; c++) b->char_tok[c] = fg_vocab_lookup(v, g_map.utf8[c], g_map.len[c]);

    const fg_gguf_value *merges;
    if (!fg_gguf_find(g, "tokenizer.ggml.merges"))
        return fg_err_set(FG_ERR_FORMAT, "%s: tokenizer.ggml.merges is missing; a gpt2 (byte-level BPE) "
                          "vocabulary needs its merges", g->path);
    FG_TRY(fg_gguf_get_arr(g, "tokenizer.ggml.merges", FG_GGUF_STRING, &merges));
    uint64_t n = merges->v.arr.n;
    if (n >= (1u << 30))
        return fg_err_set(FG_ERR_UNSUPPORTED, "%s: tokenizer.ggml.merges has %llu entries", g->path,
                          (unsigned long long)n);
    uint32_t cap = fg_vocab_table_cap(n);
    fg_pairmap *m = &b->merges;
    m->key = calloc(cap, sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->merged = malloc(cap * sizeof *m->merged);
    char *cat = NULL;
    size_t cat_cap = 0;
    if (!m->key || !m->rank || !m->merged)
        return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for %llu merges", (unsigned long long)n);
    m->mask = cap - 1;
    for (uint64_t i = 0; i < n; i++) {
        fg_gguf_str s = merges->v.arr.strs[i];
        /* "left right"; the separator is the first space after the first
         * character (a byte-level token never holds a real space). */
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp) {
            free(cat);
            return fg_err_set(FG_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu] '%.*s' is not 'left right'", g->path,
                              (unsigned long long)i, (int)(s.len > 64 ? 64 : s.len), s.ptr);
        }
        size_t ll = (size_t)(sp - s.ptr), rl = s.len - ll - 1;
        int32_t l = fg_vocab_lookup(v, s.ptr, ll), r = fg_vocab_lookup(v, sp + 1, rl);
        if (ll + rl > cat_cap) {
            cat_cap = (ll + rl) * 2;
            char *c = realloc(cat, cat_cap);
            if (!c) {
                free(cat);
                return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory");
            }
            cat = c;
        }
        memcpy(cat, s.ptr, ll);
        memcpy(cat + ll, sp + 1, rl);
        int32_t merged = fg_vocab_lookup(v, cat, ll + rl);
        /* A merge naming a token the vocabulary lacks can never apply. */
        if (l < 0 || r < 0 || merged < 0) continue;
        pair_put(m, l, r, (int32_t)i, merged);
    }
    free(cat);

    fg_status st = fg_pretok_init(v->pre_name, &b->pretok);
    if (st != FG_OK) return fg_err_wrap(st, "%s: tokenizer.ggml.pre", g->path);
    /* Gemma 4's BPE merges raw UTF-8 with spaces as U+2581, not the byte map
     * this file implements; refuse it rather than produce wrong ids. */
    if (!fg_pretok_byte_level(b->pretok))
        return fg_err_set(FG_ERR_UNSUPPORTED,
                          "%s: tokenizer.ggml.pre '%s' is a BPE without the byte-level map, which forge "
                          "does not implement yet",
                          g->path, v->pre_name);
    return FG_OK;
}

void fg_bpe_free(fg_bpe *b)
{
    free(b->merges.key);
    free(b->merges.rank);
    free(b->merges.merged);
    fg_pretok_free(b->pretok);
    memset(b, 0, sizeof *b);
}

/* ---- Encoding ----------------------------------------------------------------------- */

static bool bpe_pair(const void *ctx, const char *text, const fg_sym *l, const fg_sym *r, uint64_t *key,
                     int32_t *merged)
{
    const fg_bpe *b = ctx;
    (void)text;
    int32_t rank;
    if (!pair_get(&b->merges, l->id, r->id, &rank, merged)) return false;
    *key = (uint64_t)rank;
    return true;
}

typedef struct bpe_ctx {
    const fg_bpe *b;
    fg_vocab_scratch *s;
    fg_tokens *out;
} bpe_ctx;

static fg_status bpe_piece(const char *piece, size_t len, void *ud)
{
    bpe_ctx *c = ud;
    const fg_bpe *b = c->b;
    if (len == 1) {
        int32_t id = b->char_tok[(uint8_t)piece[0]];
        return id >= 0 ? fg_tokens_push(c->out, id) : FG_OK;
    }
    FG_TRY(fg_vocab_scratch_reserve(c->s, len, 0));
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = b->char_tok[(uint8_t)piece[i]];
        /* A byte whose character the vocabulary lacks (SmolLM2 has no token
         * for 0x1D) is dropped, as HF's byte-level BPE (which has no unknown
         * token) and llama.cpp both do. */
        if (id < 0) continue;
        c->s->sym[n++] = (fg_sym){.id = id, .start = (uint32_t)i, .len = 1, .nchars = 1};
    }
    /* Symbols span the raw piece's bytes: the merge loop only compares
     * lengths and positions, and pairs are looked up by id. */
    return fg_vocab_merge(c->s, piece, n, bpe_pair, b, c->out);
}

fg_status fg_bpe_encode(const fg_bpe *b, fg_vocab_scratch *s, const char *text, size_t len, fg_tokens *out)
{
    bpe_ctx c = {b, s, out};
    return fg_pretok_split(b->pretok, text, len, bpe_piece, &c);
}
