/*
 * bpe.c — the BPE merge loop, and byte-level BPE (tokenizer.ggml.model = gpt2).
 *
 * The merge loop is shared with spm.c: a piece starts as a list of symbols
 * (one per character), and the best adjacent pair is merged until none is
 * left. "Best" is the caller's key (merge rank here, score in spm.c), ties
 * going to the leftmost pair, as HF tokenizers' Word::merge_all orders them.
 * Candidates sit in a binary heap; a merge only invalidates the candidates
 * touching its two symbols, and those are recognised as stale when popped
 * (their recorded lengths no longer match), so a piece of n characters costs
 * O(n log n) — a 100 KB run of one character is no slower than prose.
 *
 * Byte-level BPE: text is split into pieces by the pre-tokenizer that
 * tokenizer.ggml.pre names (pretok.c); each byte of a piece becomes the
 * printable code point GPT-2's bytes_to_unicode assigns it, whose one-character
 * token starts the symbol list; merges come from tokenizer.ggml.merges, rank =
 * position in that list.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/utf8.h"
#include "tokenizer/vocab_internal.h"

/* ---- Scratch ---------------------------------------------------------------- */

void fg_tok_scratch_free(fg_tok_scratch *s)
{
    free(s->sym);
    free(s->heap);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

fg_status fg_tok_scratch_reserve(fg_tok_scratch *s, size_t n_sym, size_t n_buf)
{
    if (n_sym > s->sym_cap) {
        size_t cap = n_sym < 64 ? 64 : n_sym + n_sym / 2;
        fg_sym *p = realloc(s->sym, cap * sizeof *p);
        if (!p) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for %zu symbols", cap);
        s->sym = p;
        s->sym_cap = cap;
    }
    if (n_buf > s->buf_cap) {
        size_t cap = n_buf < 256 ? 256 : n_buf + n_buf / 2;
        char *p = realloc(s->buf, cap);
        if (!p) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte buffer", cap);
        s->buf = p;
        s->buf_cap = cap;
    }
    return FG_OK;
}

/* ---- Merge loop ----------------------------------------------------------------- */

static inline bool cand_less(const fg_merge_cand *a, const fg_merge_cand *b)
{
    return a->key < b->key || (a->key == b->key && a->pos < b->pos);
}

static fg_status heap_push(fg_tok_scratch *s, const fg_merge_cand *c)
{
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        fg_merge_cand *h = realloc(s->heap, cap * sizeof *h);
        if (!h) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for %zu merge candidates", cap);
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_less(c, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = *c;
    return FG_OK;
}

static fg_merge_cand heap_pop(fg_tok_scratch *s)
{
    fg_merge_cand top = s->heap[0];
    fg_merge_cand last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!cand_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static fg_status try_pair(const fg_tokenizer *t, fg_tok_scratch *s, const char *text, int32_t l, int32_t r,
                          fg_pair_fn pair)
{
    const fg_sym *L = &s->sym[l], *R = &s->sym[r];
    if (L->frozen || R->frozen) return FG_OK;
    fg_merge_cand c;
    if (!pair(t, text, L, R, &c.key, &c.merged)) return FG_OK;
    c.pos = L->start;
    c.left = l;
    c.right = r;
    c.left_len = L->len;
    c.right_len = R->len;
    return heap_push(s, &c);
}

fg_status fg_bpe_merge(const fg_tokenizer *t, fg_tok_scratch *s, const char *text, size_t n,
                       fg_pair_fn pair, fg_tokens *out)
{
    if (n == 0) return FG_OK;
    fg_sym *sym = s->sym;
    for (size_t i = 0; i < n; i++) {
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) FG_TRY(try_pair(t, s, text, (int32_t)i, (int32_t)i + 1, pair));

    while (s->heap_n) {
        fg_merge_cand c = heap_pop(s);
        fg_sym *L = &sym[c.left], *R = &sym[c.right];
        /* Stale if either side has grown or been absorbed since the push. */
        if (L->len != c.left_len || R->len != c.right_len || L->next != c.right) continue;
        L->id = c.merged;
        L->len += R->len;
        L->nchars += R->nchars;
        L->next = R->next;
        if (R->next >= 0) sym[R->next].prev = c.left;
        R->len = 0;
        if (L->prev >= 0) FG_TRY(try_pair(t, s, text, L->prev, c.left, pair));
        if (L->next >= 0) FG_TRY(try_pair(t, s, text, c.left, L->next, pair));
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next)
        if (sym[i].id >= 0) FG_TRY(fg_tokens_push(out, sym[i].id));
    return FG_OK;
}

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
            if (n < cap) buf[n] = (char)g_map.inv[cp];
            n++;
        } else {
            /* Not a byte-level character (a mislabelled added token): keep it. */
            size_t m = k > 0 ? (size_t)k : 1;
            for (size_t j = 0; j < m; j++, n++)
                if (n < cap) buf[n] = s[i + j];
        }
        i += k > 0 ? (size_t)k : 1;
    }
    return n;
}

/* ---- Merge table ------------------------------------------------------------------ */

static uint32_t pair_slot(uint64_t key, uint32_t mask)
{
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 32) & mask;
}

static bool pair_get(const fg_pairmap *m, int32_t l, int32_t r, int32_t *rank, int32_t *merged)
{
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    for (uint32_t p = pair_slot(key, m->mask); m->key[p]; p = (p + 1) & m->mask) {
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
    uint64_t key = (((uint64_t)(uint32_t)l << 32) | (uint32_t)r) + 1;
    uint32_t p = pair_slot(key, m->mask);
    while (m->key[p] && m->key[p] != key) p = (p + 1) & m->mask;
    /* A repeated pair takes its later rank, as HF's merge map (built by
     * collecting into a hash map) does. */
    m->key[p] = key;
    m->rank[p] = rank;
    m->merged[p] = merged;
}

fg_status fg_bpe_load(fg_tokenizer *t, const fg_gguf *g)
{
    pthread_once(&g_map_once, byte_map_build);
    for (int b = 0; b < 256; b++) t->char_tok[b] = fg_tok_lookup(t, g_map.utf8[b], g_map.len[b]);

    const fg_gguf_value *merges;
    if (!fg_gguf_find(g, "tokenizer.ggml.merges"))
        return fg_err_set(FG_ERR_FORMAT, "%s: tokenizer.ggml.merges is missing; a gpt2 (byte-level BPE) "
                          "vocabulary needs its merges", g->path);
    FG_TRY(fg_gguf_get_arr(g, "tokenizer.ggml.merges", FG_GGUF_STRING, &merges));
    uint64_t n = merges->v.arr.n;
    if (n >= (1u << 30))
        return fg_err_set(FG_ERR_UNSUPPORTED, "%s: tokenizer.ggml.merges has %llu entries", g->path,
                          (unsigned long long)n);
    uint32_t cap = 16;
    while (cap < n * 2) cap *= 2;
    fg_pairmap *m = &t->merges;
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
        int32_t l = fg_tok_lookup(t, s.ptr, ll), r = fg_tok_lookup(t, sp + 1, rl);
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
        int32_t merged = fg_tok_lookup(t, cat, ll + rl);
        /* A merge naming a token the vocabulary lacks can never apply. */
        if (l < 0 || r < 0 || merged < 0) continue;
        pair_put(m, l, r, (int32_t)i, merged);
    }
    free(cat);

    fg_status st = fg_pretok_init(t->pre_name, &t->pretok);
    if (st != FG_OK) return fg_err_wrap(st, "%s: tokenizer.ggml.pre", g->path);
    /* Gemma 4's BPE merges raw UTF-8 with spaces as U+2581, not the byte map
     * this file implements; refuse it rather than produce wrong ids. */
    if (!fg_pretok_byte_level(t->pretok))
        return fg_err_set(FG_ERR_UNSUPPORTED,
                          "%s: tokenizer.ggml.pre '%s' is a BPE without the byte-level map, which forge "
                          "does not implement yet",
                          g->path, t->pre_name);
    return FG_OK;
}

void fg_bpe_free(fg_tokenizer *t)
{
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.merged);
    memset(&t->merges, 0, sizeof t->merges);
    fg_pretok_free(t->pretok);
    t->pretok = NULL;
}

/* ---- Encoding ----------------------------------------------------------------------- */

static bool bpe_pair(const fg_tokenizer *t, const char *text, const fg_sym *l, const fg_sym *r, uint64_t *key,
                     int32_t *merged)
{
    (void)text;
    int32_t rank;
    if (!pair_get(&t->merges, l->id, r->id, &rank, merged)) return false;
    *key = (uint64_t)rank;
    return true;
}

typedef struct bpe_ctx {
    const fg_tokenizer *t;
    fg_tok_scratch *s;
    fg_tokens *out;
} bpe_ctx;

static fg_status bpe_piece(const char *piece, size_t len, void *ud)
{
    bpe_ctx *c = ud;
    const fg_tokenizer *t = c->t;
    if (len == 1) {
        int32_t id = t->char_tok[(uint8_t)piece[0]];
        return id >= 0 ? fg_tokens_push(c->out, id) : FG_OK;
    }
    FG_TRY(fg_tok_scratch_reserve(c->s, len, 0));
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)piece[i];
        int32_t id = t->char_tok[b];
        /* A byte whose character the vocabulary lacks (SmolLM2 has no token
         * for 0x1D) is dropped, as HF's byte-level BPE (which has no unknown
         * token) and llama.cpp both do. */
        if (id < 0) continue;
        c->s->sym[n++] = (fg_sym){.id = id, .start = (uint32_t)i, .len = 1, .nchars = 1};
    }
    /* Symbols span the raw piece's bytes: the merge loop only compares
     * lengths and positions, and pairs are looked up by id. */
    return fg_bpe_merge(t, c->s, piece, n, bpe_pair, c->out);
}

fg_status fg_bpe_encode(const fg_tokenizer *t, fg_tok_scratch *s, const char *text, size_t len, fg_tokens *out)
{
    bpe_ctx c = {t, s, out};
    return fg_pretok_split(t->pretok, text, len, bpe_piece, &c);
}
