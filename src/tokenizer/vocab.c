/*
 * vocab.c — the vocabulary both tokenizer kinds share, and the BPE merge loop
 * they both run.
 *
 * Input: an fg_gguf with tokenizer.ggml.* keys. Output: an fg_vocab that owns
 * copies of the token texts (one pool), their types, the ids and flags the
 * file names, and the text -> id map; the fg_gguf may be closed afterwards.
 * Also here: fg_tokens (the output of every encoder), the string map, and the
 * per-call scratch of the merge loop.
 *
 * The merge loop: a piece starts as a list of symbols (one per character),
 * and the best adjacent pair is merged until none is left. "Best" is the
 * caller's key (merge rank in bpe.c, score in spm.c), ties going to the
 * leftmost pair, as HF tokenizers' Word::merge_all orders them. Candidates sit
 * in a binary heap; a merge only invalidates the candidates touching its two
 * symbols, and those are recognised as stale when popped (their recorded
 * lengths no longer match), so a piece of n characters costs O(n log n) — a
 * 100 KB run of one character is no slower than prose.
 */
#include "tokenizer/vocab.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

/* ---- Token arrays ---------------------------------------------------------- */

fg_status fg_tokens_push(fg_tokens *t, int32_t id)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        int32_t *ids = realloc(t->ids, cap * sizeof *ids);
        if (!ids) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for %zu token ids", cap);
        t->ids = ids;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return FG_OK;
}

void fg_tokens_free(fg_tokens *t)
{
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

/* ---- String map ------------------------------------------------------------ */

/* FNV-1a with a final avalanche, so that linear probing over the low bits sees
 * well-mixed values even for the many short, similar token strings. Never 0,
 * which marks an empty slot. */
static uint32_t str_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    return h ? h : 1;
}

fg_status fg_strmap_build(fg_strmap *m, const char *pool, const uint32_t *off, const uint32_t *len,
                          int32_t n)
{
    uint32_t cap = fg_vocab_table_cap((uint64_t)n);
    m->hash = calloc(cap, sizeof *m->hash);
    m->id = malloc(cap * sizeof *m->id);
    if (!m->hash || !m->id) {
        fg_strmap_free(m);
        return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for a %u-slot hash table", cap);
    }
    m->mask = cap - 1;
    for (int32_t i = 0; i < n; i++) {
        const char *s = pool + off[i];
        uint32_t h = str_hash(s, len[i]);
        uint32_t p = h & m->mask;
        while (m->hash[p]) {
            int32_t j = m->id[p];
            if (m->hash[p] == h && len[j] == len[i] && memcmp(pool + off[j], s, len[i]) == 0) break;
            p = (p + 1) & m->mask;
        }
        m->hash[p] = h;
        m->id[p] = i; /* a later duplicate replaces the earlier one, as in HF's vocab dict */
    }
    return FG_OK;
}

int32_t fg_strmap_get(const fg_strmap *m, const char *pool, const uint32_t *off, const uint32_t *len,
                      const char *s, size_t slen)
{
    if (!m->hash) return -1;
    uint32_t h = str_hash(s, slen);
    for (uint32_t p = h & m->mask; m->hash[p]; p = (p + 1) & m->mask) {
        int32_t j = m->id[p];
        if (m->hash[p] == h && len[j] == slen && memcmp(pool + off[j], s, slen) == 0) return j;
    }
    return -1;
}

void fg_strmap_free(fg_strmap *m)
{
    free(m->hash);
    free(m->id);
    memset(m, 0, sizeof *m);
}

/* ---- Loading ------------------------------------------------------------------ */

/* An optional token-id key: absent gives -1; present must name a token. */
static fg_status load_id(const fg_gguf *g, const char *key, int32_t n_vocab, int32_t *out)
{
    *out = -1;
    if (!fg_gguf_find(g, key)) return FG_OK;
    int64_t v;
    FG_TRY(fg_gguf_get_int(g, key, &v));
    if (v < 0) return FG_OK; /* some converters write -1 for "none" */
    if (v >= n_vocab)
        return fg_err_set(FG_ERR_FORMAT, "%s: %s is %lld, but the vocabulary has %d tokens", g->path, key,
                          (long long)v, n_vocab);
    *out = (int32_t)v;
    return FG_OK;
}

static fg_status load_flag(const fg_gguf *g, const char *key, bool dflt, bool *out)
{
    *out = dflt;
    if (!fg_gguf_find(g, key)) return FG_OK;
    return fg_gguf_get_bool(g, key, out);
}

/* tokenizer.ggml.model: "llama" (SentencePiece BPE) or "gpt2" (byte-level BPE). */
static fg_status load_kind(const fg_gguf *g, fg_vocab_kind *kind)
{
    fg_gguf_str model;
    if (!fg_gguf_find(g, "tokenizer.ggml.model"))
        return fg_err_set(FG_ERR_NOT_FOUND, "%s: no tokenizer: metadata key 'tokenizer.ggml.model' is missing",
                          g->path);
    FG_TRY(fg_gguf_get_str(g, "tokenizer.ggml.model", &model));
    if (fg_gguf_str_eq(model, "llama")) *kind = FG_VOCAB_SPM;
    else if (fg_gguf_str_eq(model, "gpt2")) *kind = FG_VOCAB_BPE;
    else
        return fg_err_set(FG_ERR_UNSUPPORTED,
                          "%s: tokenizer.ggml.model is '%.*s'; forge implements 'llama' (SentencePiece BPE) "
                          "and 'gpt2' (byte-level BPE)",
                          g->path, (int)(model.len > 64 ? 64 : model.len), model.ptr);
    return FG_OK;
}

fg_status fg_vocab_load(fg_vocab *v, const fg_gguf *g)
{
    fg_status st;
    FG_TRY(load_kind(g, &v->kind));

    const fg_gguf_value *toks;
    if ((st = fg_gguf_get_arr(g, "tokenizer.ggml.tokens", FG_GGUF_STRING, &toks)) != FG_OK) goto err;
    uint64_t n = toks->v.arr.n;
    if (n == 0) {
        st = fg_err_set(FG_ERR_FORMAT, "%s: tokenizer.ggml.tokens is empty", g->path);
        goto err;
    }
    if (n >= (1u << 24)) {
        st = fg_err_set(FG_ERR_UNSUPPORTED, "%s: tokenizer.ggml.tokens has %llu tokens; forge supports < 2^24",
                        g->path, (unsigned long long)n);
        goto err;
    }
    v->n_vocab = (int32_t)n;

    /* One pool for all token texts, each NUL-terminated for convenience. */
    uint64_t pool_size = 0;
    for (uint64_t i = 0; i < n; i++) pool_size += toks->v.arr.strs[i].len + 1;
    if (pool_size > UINT32_MAX) {
        st = fg_err_set(FG_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.tokens holds %llu bytes of text; forge supports < 4 GiB", g->path,
                        (unsigned long long)pool_size);
        goto err;
    }
    v->pool = malloc(pool_size);
    v->text_off = malloc(n * sizeof *v->text_off);
    v->text_len = malloc(n * sizeof *v->text_len);
    v->type = malloc(n);
    if (!v->pool || !v->text_off || !v->text_len || !v->type) {
        st = fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for %llu tokens", (unsigned long long)n);
        goto err;
    }
    uint32_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        fg_gguf_str s = toks->v.arr.strs[i];
        memcpy(v->pool + at, s.ptr, s.len);
        v->pool[at + s.len] = 0;
        v->text_off[i] = at;
        v->text_len[i] = (uint32_t)s.len;
        at += (uint32_t)s.len + 1;
    }

    if (fg_gguf_find(g, "tokenizer.ggml.token_type")) {
        const fg_gguf_value *types;
        if ((st = fg_gguf_get_arr(g, "tokenizer.ggml.token_type", FG_GGUF_VTYPE_COUNT, &types)) != FG_OK) goto err;
        fg_gguf_vtype e = types->v.arr.elem;
        if (types->v.arr.n != n || e == FG_GGUF_STRING || e == FG_GGUF_ARRAY || e == FG_GGUF_FLOAT32 ||
            e == FG_GGUF_FLOAT64 || e == FG_GGUF_BOOL) {
            st = fg_err_set(FG_ERR_FORMAT, "%s: tokenizer.ggml.token_type must be %llu integers (one per token)",
                            g->path, (unsigned long long)n);
            goto err;
        }
        for (uint64_t i = 0; i < n; i++) {
            int64_t ty = fg_gguf_arr_int(types, i);
            if (ty < FG_TOKEN_UNDEFINED || ty > FG_TOKEN_BYTE) {
                st = fg_err_set(FG_ERR_FORMAT, "%s: tokenizer.ggml.token_type[%llu] is %lld; valid types are 0..6",
                                g->path, (unsigned long long)i, (long long)ty);
                goto err;
            }
            v->type[i] = (uint8_t)ty;
        }
    } else {
        memset(v->type, FG_TOKEN_NORMAL, n);
    }

    if ((st = load_id(g, "tokenizer.ggml.bos_token_id", v->n_vocab, &v->bos)) ||
        (st = load_id(g, "tokenizer.ggml.eos_token_id", v->n_vocab, &v->eos)) ||
        (st = load_id(g, "tokenizer.ggml.eot_token_id", v->n_vocab, &v->eot)) ||
        (st = load_id(g, "tokenizer.ggml.unknown_token_id", v->n_vocab, &v->unk)) ||
        (st = load_id(g, "tokenizer.ggml.padding_token_id", v->n_vocab, &v->pad)))
        goto err;
    /* Defaults as llama.cpp and HF's GGUF loader take them: SentencePiece
     * vocabularies add BOS and a space prefix unless told otherwise. */
    bool spm = v->kind == FG_VOCAB_SPM;
    if ((st = load_flag(g, "tokenizer.ggml.add_bos_token", spm, &v->add_bos)) ||
        (st = load_flag(g, "tokenizer.ggml.add_eos_token", false, &v->add_eos)) ||
        (st = load_flag(g, "tokenizer.ggml.add_space_prefix", spm, &v->add_space_prefix)))
        goto err;

    fg_gguf_str pre = {"default", 7};
    if (fg_gguf_find(g, "tokenizer.ggml.pre") &&
        (st = fg_gguf_get_str(g, "tokenizer.ggml.pre", &pre)) != FG_OK)
        goto err;
    v->pre_name = malloc(pre.len + 1);
    if (!v->pre_name) {
        st = fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory");
        goto err;
    }
    memcpy(v->pre_name, pre.ptr, pre.len);
    v->pre_name[pre.len] = 0;

    if ((st = fg_strmap_build(&v->by_text, v->pool, v->text_off, v->text_len, v->n_vocab)) != FG_OK) goto err;
    return FG_OK;
err:
    fg_vocab_free(v);
    return st;
}

void fg_vocab_free(fg_vocab *v)
{
    fg_strmap_free(&v->by_text);
    free(v->pre_name);
    free(v->pool);
    free(v->text_off);
    free(v->text_len);
    free(v->type);
    memset(v, 0, sizeof *v);
}

int32_t fg_vocab_lookup(const fg_vocab *v, const char *s, size_t len)
{
    return fg_strmap_get(&v->by_text, v->pool, v->text_off, v->text_len, s, len);
}

/* ---- Scratch ---------------------------------------------------------------- */

void fg_vocab_scratch_free(fg_vocab_scratch *s)
{
    free(s->sym);
    free(s->heap);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

fg_status fg_vocab_scratch_reserve(fg_vocab_scratch *s, size_t n_sym, size_t n_buf)
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

struct fg_merge_cand {
    uint64_t key;     /* priority, lower first */
    uint32_t pos;     /* start of the left symbol: leftmost first on ties */
    int32_t left, right;
    uint32_t left_len, right_len; /* lengths when pushed, to detect stale entries */
    int32_t merged;
};
typedef struct fg_merge_cand fg_merge_cand;

static inline bool cand_less(const fg_merge_cand *a, const fg_merge_cand *b)
{
    return a->key < b->key || (a->key == b->key && a->pos < b->pos);
}

static fg_status heap_push(fg_vocab_scratch *s, const fg_merge_cand *c)
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

static fg_merge_cand heap_pop(fg_vocab_scratch *s)
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

static fg_status try_pair(fg_vocab_scratch *s, const char *text, int32_t l, int32_t r, fg_pair_fn pair,
                          const void *ctx)
{
    const fg_sym *L = &s->sym[l], *R = &s->sym[r];
    if (L->frozen || R->frozen) return FG_OK;
    fg_merge_cand c;
    if (!pair(ctx, text, L, R, &c.key, &c.merged)) return FG_OK;
    c.pos = L->start;
    c.left = l;
    c.right = r;
    c.left_len = L->len;
    c.right_len = R->len;
    return heap_push(s, &c);
}

fg_status fg_vocab_merge(fg_vocab_scratch *s, const char *text, size_t n, fg_pair_fn pair, const void *ctx,
                         fg_tokens *out)
{
    if (n == 0) return FG_OK;
    fg_sym *sym = s->sym;
    for (size_t i = 0; i < n; i++) {
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) FG_TRY(try_pair(s, text, (int32_t)i, (int32_t)i + 1, pair, ctx));

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
        if (L->prev >= 0) FG_TRY(try_pair(s, text, L->prev, c.left, pair, ctx));
        if (L->next >= 0) FG_TRY(try_pair(s, text, c.left, L->next, pair, ctx));
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next)
        if (sym[i].id >= 0) FG_TRY(fg_tokens_push(out, sym[i].id));
    return FG_OK;
}
