/*
 * tokenizer.c — loading a vocabulary from GGUF metadata, matching special
 * tokens written in the text, and turning ids back into text (whole or
 * streamed).
 *
 * Input: an fg_gguf with tokenizer.ggml.* keys. Output: an immutable
 * fg_tokenizer that owns copies of everything it uses (token texts in one
 * pool, hash tables, the special-token trie), so the fg_gguf may be closed.
 * The merge algorithms themselves live in bpe.c (byte-level BPE and the merge
 * loop both kinds share) and spm.c (SentencePiece-style BPE).
 *
 * Where HF tokenizers and llama.cpp disagree, forge follows HF tokenizers,
 * the reference its tests compare against: special tokens are found leftmost-
 * longest (HF's Aho-Corasick) rather than longest-first.
 */
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/utf8.h"
#include "tokenizer/vocab_internal.h"

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
uint32_t fg_tok_hash(const char *s, size_t len)
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

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t c = 16;
    while (c < n) c *= 2;
    return c;
}

fg_status fg_strmap_build(fg_strmap *m, const char *pool, const uint32_t *off, const uint32_t *len,
                          int32_t n)
{
    uint32_t cap = pow2_at_least((uint64_t)n * 2);
    m->hash = calloc(cap, sizeof *m->hash);
    m->id = malloc(cap * sizeof *m->id);
    if (!m->hash || !m->id) {
        fg_strmap_free(m);
        return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for a %u-slot hash table", cap);
    }
    m->mask = cap - 1;
    for (int32_t i = 0; i < n; i++) {
        const char *s = pool + off[i];
        uint32_t h = fg_tok_hash(s, len[i]);
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
    uint32_t h = fg_tok_hash(s, slen);
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

int32_t fg_tok_lookup(const fg_tokenizer *t, const char *s, size_t len)
{
    return fg_strmap_get(&t->by_text, t->pool, t->text_off, t->text_len, s, len);
}

/* ---- Special-token trie ------------------------------------------------------ */

static fg_status trie_init(fg_trie *tr)
{
    memset(tr, 0, sizeof *tr);
    tr->cap_nodes = 64;
    tr->term = malloc((size_t)tr->cap_nodes * sizeof *tr->term);
    tr->term_special = malloc((size_t)tr->cap_nodes);
    tr->edge_mask = 63;
    tr->edge_key = calloc(tr->edge_mask + 1, sizeof *tr->edge_key);
    tr->edge_child = malloc((tr->edge_mask + 1) * sizeof *tr->edge_child);
    if (!tr->term || !tr->term_special || !tr->edge_key || !tr->edge_child)
        return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for the special-token trie");
    tr->n_nodes = 1; /* the root */
    tr->term[0] = -1;
    tr->term_special[0] = 0;
    return FG_OK;
}

static void trie_free(fg_trie *tr)
{
    free(tr->term);
    free(tr->term_special);
    free(tr->edge_key);
    free(tr->edge_child);
    memset(tr, 0, sizeof *tr);
}

static inline uint32_t edge_slot(uint64_t key, uint32_t mask)
{
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 32) & mask;
}

static int32_t trie_child(const fg_trie *tr, int32_t node, uint8_t c)
{
    uint64_t key = (((uint64_t)node << 8) | c) + 1;
    for (uint32_t p = edge_slot(key, tr->edge_mask); tr->edge_key[p]; p = (p + 1) & tr->edge_mask)
        if (tr->edge_key[p] == key) return tr->edge_child[p];
    return -1;
}

static fg_status trie_grow_edges(fg_trie *tr)
{
    uint32_t cap = (tr->edge_mask + 1) * 2;
    uint64_t *keys = calloc(cap, sizeof *keys);
    int32_t *child = malloc(cap * sizeof *child);
    if (!keys || !child) {
        free(keys);
        free(child);
        return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for the special-token trie");
    }
    for (uint32_t i = 0; i <= tr->edge_mask; i++) {
        if (!tr->edge_key[i]) continue;
        uint32_t p = edge_slot(tr->edge_key[i], cap - 1);
        while (keys[p]) p = (p + 1) & (cap - 1);
        keys[p] = tr->edge_key[i];
        child[p] = tr->edge_child[i];
    }
    free(tr->edge_key);
    free(tr->edge_child);
    tr->edge_key = keys;
    tr->edge_child = child;
    tr->edge_mask = cap - 1;
    return FG_OK;
}

/* Adds text as a path ending in token id; a later token with the same text
 * replaces the earlier one (HF resolves added tokens through its vocab dict,
 * where the last duplicate wins). */
static fg_status trie_insert(fg_trie *tr, const char *text, size_t len, int32_t id, bool special)
{
    if (len == 0) return FG_OK;
    tr->first[(uint8_t)text[0]] = true;
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)text[i];
        int32_t next = trie_child(tr, node, c);
        if (next < 0) {
            if ((uint32_t)(tr->n_edges + 1) * 2 > tr->edge_mask + 1) FG_TRY(trie_grow_edges(tr));
            if (tr->n_nodes == tr->cap_nodes) {
                int32_t cap = tr->cap_nodes * 2;
                int32_t *term = realloc(tr->term, (size_t)cap * sizeof *term);
                if (!term) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for the trie");
                tr->term = term;
                uint8_t *sp = realloc(tr->term_special, (size_t)cap);
                if (!sp) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for the trie");
                tr->term_special = sp;
                tr->cap_nodes = cap;
            }
            next = tr->n_nodes++;
            tr->term[next] = -1;
            tr->term_special[next] = 0;
            uint64_t key = (((uint64_t)node << 8) | c) + 1;
            uint32_t p = edge_slot(key, tr->edge_mask);
            while (tr->edge_key[p]) p = (p + 1) & tr->edge_mask;
            tr->edge_key[p] = key;
            tr->edge_child[p] = next;
            tr->n_edges++;
        }
        node = next;
    }
    tr->term[node] = id;
    tr->term_special[node] = special;
    return FG_OK;
}

/* The longest token that starts at text[0] and is allowed (special ones only
 * with parse_special); returns its id and sets *mlen, or -1. */
static int32_t trie_match(const fg_trie *tr, const char *text, size_t len, bool parse_special,
                          size_t *mlen)
{
    int32_t best = -1;
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        node = trie_child(tr, node, (uint8_t)text[i]);
        if (node < 0) break;
        if (tr->term[node] >= 0 && (parse_special || !tr->term_special[node])) {
            best = tr->term[node];
            *mlen = i + 1;
        }
    }
    return best;
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

/* Texts of tokens that end a turn in the chat formats forge knows; llama.cpp
 * treats the same set as end-of-generation. */
static const char *const k_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "_<EOT>", "<|end_of_text|>", "<|return|>", "<|call|>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
};

static void add_eog(fg_tokenizer *t, int32_t id)
{
    if (id < 0 || t->n_eog == (int)(sizeof t->eog / sizeof t->eog[0])) return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    t->eog[t->n_eog++] = id;
}

static void find_eog(fg_tokenizer *t)
{
    size_t n_texts = sizeof k_eog_texts / sizeof k_eog_texts[0];
    if (t->eot < 0) {
        /* The turn-end token of the chat format, when the file names none. */
        for (size_t i = 0; i < 4 && t->eot < 0; i++) {
            int32_t id = fg_tok_lookup(t, k_eog_texts[i], strlen(k_eog_texts[i]));
            if (id >= 0 && t->type[id] == FG_TOKEN_CONTROL) t->eot = id;
        }
    }
    add_eog(t, t->eos);
    add_eog(t, t->eot);
    for (size_t i = 0; i < n_texts; i++) {
        int32_t id = fg_tok_lookup(t, k_eog_texts[i], strlen(k_eog_texts[i]));
        if (id >= 0 && (t->type[id] == FG_TOKEN_CONTROL || t->type[id] == FG_TOKEN_USER_DEFINED))
            add_eog(t, id);
    }
}

static bool is_alias(const fg_tokenizer *t, int32_t id)
{
    for (int32_t i = 0; i < t->n_alias; i++)
        if (t->alias_id[i] == id) return true;
    return false;
}

/* The tokens HF matches whole in text before any normalization: control and
 * unknown tokens and the ids the file names as bos/eos/unk/pad (special: only
 * with parse_special), and user-defined tokens (always). */
static fg_status build_special(fg_tokenizer *t)
{
    FG_TRY(trie_init(&t->special));
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->type[id];
        bool named = id == t->bos || id == t->eos || id == t->unk || id == t->pad;
        bool special = ty == FG_TOKEN_CONTROL || ty == FG_TOKEN_UNKNOWN || named;
        bool user = ty == FG_TOKEN_USER_DEFINED && !is_alias(t, id);
        if ((!special && !user) || t->text_len[id] == 0) continue;
        FG_TRY(trie_insert(&t->special, t->pool + t->text_off[id], t->text_len[id], id, special));
    }
    return FG_OK;
}

fg_status fg_tok_load(const fg_gguf *g, fg_tokenizer **out)
{
    *out = NULL;
    fg_status st;
    fg_gguf_str model;
    if (!fg_gguf_find(g, "tokenizer.ggml.model"))
        return fg_err_set(FG_ERR_NOT_FOUND, "%s: no tokenizer: metadata key 'tokenizer.ggml.model' is missing",
                          g->path);
    FG_TRY(fg_gguf_get_str(g, "tokenizer.ggml.model", &model));
    fg_vocab_kind kind;
    if (fg_gguf_str_eq(model, "llama")) kind = FG_VOCAB_SPM;
    else if (fg_gguf_str_eq(model, "gpt2")) kind = FG_VOCAB_BPE;
    else
        return fg_err_set(FG_ERR_UNSUPPORTED,
                          "%s: tokenizer.ggml.model is '%.*s'; forge implements 'llama' (SentencePiece BPE) "
                          "and 'gpt2' (byte-level BPE)",
                          g->path, (int)(model.len > 64 ? 64 : model.len), model.ptr);

    const fg_gguf_value *toks;
    FG_TRY(fg_gguf_get_arr(g, "tokenizer.ggml.tokens", FG_GGUF_STRING, &toks));
    uint64_t n = toks->v.arr.n;
    if (n == 0) return fg_err_set(FG_ERR_FORMAT, "%s: tokenizer.ggml.tokens is empty", g->path);
    if (n >= (1u << 24))
        return fg_err_set(FG_ERR_UNSUPPORTED, "%s: tokenizer.ggml.tokens has %llu tokens; forge supports < 2^24",
                          g->path, (unsigned long long)n);

    fg_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory");
    t->kind = kind;
    snprintf(t->model_name, sizeof t->model_name, "%s", kind == FG_VOCAB_SPM ? "llama" : "gpt2");
    t->n_vocab = (int32_t)n;
    for (int i = 0; i < 256; i++) t->byte_tok[i] = t->char_tok[i] = -1;

    /* One pool for all token texts, each NUL-terminated for convenience. */
    uint64_t pool_size = 0;
    for (uint64_t i = 0; i < n; i++) pool_size += toks->v.arr.strs[i].len + 1;
    if (pool_size > UINT32_MAX) {
        st = fg_err_set(FG_ERR_UNSUPPORTED,
                        "%s: tokenizer.ggml.tokens holds %llu bytes of text; forge supports < 4 GiB", g->path,
                        (unsigned long long)pool_size);
        goto err;
    }
    t->pool = malloc(pool_size);
    t->text_off = malloc(n * sizeof *t->text_off);
    t->text_len = malloc(n * sizeof *t->text_len);
    t->type = malloc(n);
    if (!t->pool || !t->text_off || !t->text_len || !t->type) {
        st = fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory for %llu tokens", (unsigned long long)n);
        goto err;
    }
    uint32_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        fg_gguf_str s = toks->v.arr.strs[i];
        memcpy(t->pool + at, s.ptr, s.len);
        t->pool[at + s.len] = 0;
        t->text_off[i] = at;
        t->text_len[i] = (uint32_t)s.len;
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
            int64_t v = fg_gguf_arr_int(types, i);
            if (v < FG_TOKEN_UNDEFINED || v > FG_TOKEN_BYTE) {
                st = fg_err_set(FG_ERR_FORMAT, "%s: tokenizer.ggml.token_type[%llu] is %lld; valid types are 0..6",
                                g->path, (unsigned long long)i, (long long)v);
                goto err;
            }
            t->type[i] = (uint8_t)v;
        }
    } else {
        memset(t->type, FG_TOKEN_NORMAL, n);
    }

    if ((st = load_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos)) ||
        (st = load_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos)) ||
        (st = load_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot)) ||
        (st = load_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk)) ||
        (st = load_id(g, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad)))
        goto err;
    /* Defaults as llama.cpp and HF's GGUF loader take them: SentencePiece
     * vocabularies add BOS and a space prefix unless told otherwise. */
    bool spm = kind == FG_VOCAB_SPM;
    if ((st = load_flag(g, "tokenizer.ggml.add_bos_token", spm, &t->add_bos)) ||
        (st = load_flag(g, "tokenizer.ggml.add_eos_token", false, &t->add_eos)) ||
        (st = load_flag(g, "tokenizer.ggml.add_space_prefix", spm, &t->add_space_prefix)))
        goto err;

    fg_gguf_str pre = {"default", 7};
    if (fg_gguf_find(g, "tokenizer.ggml.pre") &&
        (st = fg_gguf_get_str(g, "tokenizer.ggml.pre", &pre)) != FG_OK)
        goto err;
    t->pre_name = malloc(pre.len + 1);
    if (!t->pre_name) {
        st = fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory");
        goto err;
    }
    memcpy(t->pre_name, pre.ptr, pre.len);
    t->pre_name[pre.len] = 0;

    char arch[64] = "";
    fg_gguf_str arch_s;
    if (fg_gguf_find(g, "general.architecture") && fg_gguf_get_str(g, "general.architecture", &arch_s) == FG_OK)
        snprintf(arch, sizeof arch, "%.*s", (int)(arch_s.len < 63 ? arch_s.len : 63), arch_s.ptr);

    if ((st = fg_strmap_build(&t->by_text, t->pool, t->text_off, t->text_len, t->n_vocab)) != FG_OK) goto err;
    st = kind == FG_VOCAB_SPM ? fg_spm_load(t, g, arch) : fg_bpe_load(t, g);
    if (st != FG_OK) goto err;
    find_eog(t);
    if ((st = build_special(t)) != FG_OK) goto err;
    *out = t;
    return FG_OK;
err:
    fg_tok_free(t);
    return st;
}

void fg_tok_free(fg_tokenizer *t)
{
    if (!t) return;
    fg_spm_free(t);
    fg_bpe_free(t);
    trie_free(&t->special);
    fg_strmap_free(&t->by_text);
    free(t->pre_name);
    free(t->pool);
    free(t->text_off);
    free(t->text_len);
    free(t->type);
    free(t);
}

/* ---- Accessors ---------------------------------------------------------------- */

fg_vocab_kind fg_tok_kind(const fg_tokenizer *t) { return t->kind; }
const char *fg_tok_model_name(const fg_tokenizer *t) { return t->model_name; }
const char *fg_tok_pre_name(const fg_tokenizer *t) { return t->pre_name; }
int32_t fg_tok_n_vocab(const fg_tokenizer *t) { return t->n_vocab; }
int32_t fg_tok_bos(const fg_tokenizer *t) { return t->bos; }
int32_t fg_tok_eos(const fg_tokenizer *t) { return t->eos; }
int32_t fg_tok_eot(const fg_tokenizer *t) { return t->eot; }
int32_t fg_tok_unk(const fg_tokenizer *t) { return t->unk; }
int32_t fg_tok_pad(const fg_tokenizer *t) { return t->pad; }
bool fg_tok_add_bos(const fg_tokenizer *t) { return t->add_bos; }
bool fg_tok_add_eos(const fg_tokenizer *t) { return t->add_eos; }

bool fg_tok_is_eog(const fg_tokenizer *t, int32_t id)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

const char *fg_tok_text(const fg_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->text_len[id];
    return t->pool + t->text_off[id];
}

fg_token_type fg_tok_type(const fg_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab) return FG_TOKEN_UNDEFINED;
    return (fg_token_type)t->type[id];
}

int32_t fg_tok_find(const fg_tokenizer *t, const char *text, size_t len)
{
    return fg_tok_lookup(t, text, len);
}

/* ---- Encoding -------------------------------------------------------------------- */

static fg_status encode_raw(const fg_tokenizer *t, fg_tok_scratch *s, const char *text, size_t len,
                            bool at_text_start, fg_tokens *out)
{
    if (len == 0) return FG_OK;
    if (t->kind == FG_VOCAB_SPM) return fg_spm_encode(t, s, text, len, at_text_start, out);
    return fg_bpe_encode(t, s, text, len, out);
}

/* Splits text at the special tokens written in it (leftmost-longest, as HF's
 * added-vocabulary matcher does) and encodes the text between them. Inside
 * the plain spans control tokens are not matched (user-defined ones still
 * are), and a control token in markup may not reach into a plain span: a
 * match is cut at the next span's start. The text between matches is encoded
 * whole even where it crosses a span's edge, so a conversation whose
 * contents hold no control-token text gets exactly the ids of the whole
 * string. */
fg_status fg_tok_encode_spans(const fg_tokenizer *t, const char *text, size_t len, bool add_special,
                              bool parse_special, const fg_tok_span *plain, size_t n_plain, fg_tokens *out)
{
    if (len > UINT32_MAX / 4)
        return fg_err_set(FG_ERR_INVALID_ARG, "tokenizer: a %zu-byte text is too long to encode at once", len);
    for (size_t k = 0; k < n_plain; k++)
        if (plain[k].off > len || plain[k].len > len - plain[k].off || (k && plain[k].off < plain[k - 1].off + plain[k - 1].len))
            return fg_err_set(FG_ERR_INVALID_ARG, "tokenizer: plain span %zu is out of order or past the text", k);
    fg_status st = FG_OK;
    fg_tok_scratch s = {0};
    if (add_special && t->add_bos && t->bos >= 0 && (st = fg_tokens_push(out, t->bos))) goto done;

    size_t raw = 0, k = 0;
    for (size_t i = 0; i < len;) {
        while (k < n_plain && plain[k].off + plain[k].len <= i) k++; /* plain[k]: the first span not behind i */
        size_t mlen = 0;
        int32_t id = -1;
        if (t->special.first[(uint8_t)text[i]]) {
            bool in_plain = k < n_plain && plain[k].off <= i;
            size_t room = len - i;
            if (parse_special && !in_plain && k < n_plain) room = plain[k].off - i;
            if (parse_special && !in_plain) id = trie_match(&t->special, text + i, room, true, &mlen);
            if (id < 0) id = trie_match(&t->special, text + i, len - i, false, &mlen);
        }
        if (id < 0) {
            i++;
            continue;
        }
        if ((st = encode_raw(t, &s, text + raw, i - raw, raw == 0, out)) || (st = fg_tokens_push(out, id)))
            goto done;
        i += mlen;
        raw = i;
    }
    if ((st = encode_raw(t, &s, text + raw, len - raw, raw == 0, out))) goto done;
    if (add_special && t->add_eos && t->eos >= 0) st = fg_tokens_push(out, t->eos);
done:
    fg_tok_scratch_free(&s);
    return st;
}

fg_status fg_tok_encode(const fg_tokenizer *t, const char *text, size_t len, bool add_special,
                        bool parse_special, fg_tokens *out)
{
    return fg_tok_encode_spans(t, text, len, add_special, parse_special, NULL, 0, out);
}

/* ---- Token bytes --------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static size_t put(char *buf, size_t cap, size_t at, const char *s, size_t n)
{
    if (at < cap) memcpy(buf + at, s, at + n <= cap ? n : cap - at);
    return at + n;
}

size_t fg_tok_token_bytes(const fg_tokenizer *t, int32_t id, bool render_special, char *buf, size_t cap)
{
    if (id < 0 || id >= t->n_vocab) return 0;
    const char *s = t->pool + t->text_off[id];
    size_t len = t->text_len[id];
    switch ((fg_token_type)t->type[id]) {
    case FG_TOKEN_CONTROL:
    case FG_TOKEN_UNKNOWN:
    case FG_TOKEN_UNUSED:
        return render_special ? put(buf, cap, 0, s, len) : 0;
    case FG_TOKEN_USER_DEFINED:
        return put(buf, cap, 0, s, len); /* stored as the raw text it matches */
    case FG_TOKEN_BYTE:
        if (t->kind == FG_VOCAB_SPM && len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' &&
            hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            char b = (char)(hexval(s[3]) * 16 + hexval(s[4]));
            return put(buf, cap, 0, &b, 1);
        }
        break;
    default:
        break;
    }
    if (t->kind == FG_VOCAB_BPE) return fg_bpe_unmap(s, len, buf, cap);
    /* SPM: U+2581 (E2 96 81) stands for a space. */
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (i + 3 <= len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            n = put(buf, cap, n, " ", 1);
            i += 3;
        } else {
            size_t j = i + 1;
            while (j < len && s[j] != '\xe2') j++;
            n = put(buf, cap, n, s + i, j - i);
            i = j;
        }
    }
    return n;
}

/* ---- Streaming detokenizer ------------------------------------------------------ */

static fg_status out_append(char **out, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap || !*out) {
        size_t c = *cap ? *cap : 64;
        while (c < *len + n + 1) c *= 2;
        char *p = realloc(*out, c);
        if (!p) return fg_err_set(FG_ERR_NOMEM, "detokenizer: out of memory for %zu bytes", c);
        *out = p;
        *cap = c;
    }
    memcpy(*out + *len, s, n);
    *len += n;
    (*out)[*len] = 0;
    return FG_OK;
}

/* How many bytes at s[0..n) form a valid UTF-8 sequence or a valid prefix of
 * one (the "maximal subpart" of Unicode's U+FFFD substitution practice), and
 * the full length the lead byte announces in *need (0 if it is no lead). */
static size_t utf8_valid_prefix(const uint8_t *s, size_t n, size_t *need)
{
    uint8_t c = s[0];
    size_t len = (size_t)fg_utf8_seq_len(c);
    if (len == 0 || c == 0xC0 || c == 0xC1 || c > 0xF4) {
        *need = 0;
        return 0;
    }
    *need = len;
    size_t k = 1;
    while (k < len && k < n) {
        uint8_t lo = 0x80, hi = 0xBF;
        if (k == 1) {
            if (c == 0xE0) lo = 0xA0;
            else if (c == 0xED) hi = 0x9F;
            else if (c == 0xF0) lo = 0x90;
            else if (c == 0xF4) hi = 0x8F;
        }
        if (s[k] < lo || s[k] > hi) break;
        k++;
    }
    return k;
}

static const char k_replacement[] = "\xef\xbf\xbd"; /* U+FFFD */

/* Emits the whole characters of pending + p[0..n), replaces invalid bytes with
 * U+FFFD, and keeps an unfinished character at the end in d->pending. */
static fg_status detok_emit(fg_detok *d, const char *p, size_t n, char **out, size_t *out_len,
                            size_t *out_cap)
{
    uint8_t stack[256];
    size_t m = d->n_pending + n;
    uint8_t *w = m <= sizeof stack ? stack : malloc(m);
    if (!w) return fg_err_set(FG_ERR_NOMEM, "detokenizer: out of memory");
    memcpy(w, d->pending, d->n_pending);
    if (n) memcpy(w + d->n_pending, p, n);
    d->n_pending = 0;

    fg_status st = FG_OK;
    size_t i = 0, run = 0; /* w[run..i) is valid text not yet appended */
    while (i < m) {
        if (w[i] < 0x80) {
            i++;
            continue;
        }
        size_t need, k = utf8_valid_prefix(w + i, m - i, &need);
        if (need && k == need) {
            i += k;
            continue;
        }
        if ((st = out_append(out, out_len, out_cap, (const char *)w + run, i - run))) goto done;
        if (need && i + k == m) { /* an unfinished character: wait for its other bytes */
            memcpy(d->pending, w + i, k);
            d->n_pending = k;
            run = i = m;
            break;
        }
        if ((st = out_append(out, out_len, out_cap, k_replacement, 3))) goto done;
        i += k ? k : 1;
        run = i;
    }
    st = out_append(out, out_len, out_cap, (const char *)w + run, i - run);
done:
    if (w != stack) free(w);
    return st;
}

void fg_detok_init(fg_detok *d, const fg_tokenizer *t, bool render_special)
{
    memset(d, 0, sizeof *d);
    d->tok = t;
    d->render_special = render_special;
    d->at_start = true;
}

fg_status fg_detok_push(fg_detok *d, int32_t id, char **out, size_t *out_len, size_t *out_cap)
{
    const fg_tokenizer *t = d->tok;
    char stack[256];
    size_t n = fg_tok_token_bytes(t, id, d->render_special, stack, sizeof stack);
    char *b = stack;
    if (n > sizeof stack) {
        b = malloc(n);
        if (!b) return fg_err_set(FG_ERR_NOMEM, "detokenizer: out of memory");
        fg_tok_token_bytes(t, id, d->render_special, b, n);
    }
    size_t skip = 0;
    if (n > 0 && d->at_start) {
        /* The space prefix the encoder added comes back as a leading space:
         * drop it once, from the start of the text (HF's Strip(left=1)). */
        if (t->kind == FG_VOCAB_SPM && t->add_space_prefix && b[0] == ' ') skip = 1;
        d->at_start = false;
    }
    /* Make sure *out exists even when nothing is emitted. */
    fg_status st = out_append(out, out_len, out_cap, "", 0);
    if (st == FG_OK) st = detok_emit(d, b + skip, n - skip, out, out_len, out_cap);
    if (b != stack) free(b);
    return st;
}

fg_status fg_detok_flush(fg_detok *d, char **out, size_t *out_len, size_t *out_cap)
{
    fg_status st = out_append(out, out_len, out_cap, "", 0);
    if (st == FG_OK && d->n_pending) {
        d->n_pending = 0; /* an unfinished character is one maximal subpart */
        st = out_append(out, out_len, out_cap, k_replacement, 3);
    }
    return st;
}

fg_status fg_tok_decode(const fg_tokenizer *t, const int32_t *ids, size_t n, bool render_special, char **out)
{
    size_t len;
    return fg_tok_decode_len(t, ids, n, render_special, out, &len);
}

fg_status fg_tok_decode_len(const fg_tokenizer *t, const int32_t *ids, size_t n, bool render_special, char **out,
                            size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    char *s = NULL;
    size_t len = 0, cap = 0;
    fg_detok d;
    fg_detok_init(&d, t, render_special);
    fg_status st = FG_OK;
    for (size_t i = 0; i < n && st == FG_OK; i++) st = fg_detok_push(&d, ids[i], &s, &len, &cap);
    if (st == FG_OK) st = fg_detok_flush(&d, &s, &len, &cap);
    if (st != FG_OK) {
        free(s);
        return st;
    }
    *out = s;
    *out_len = len;
    return FG_OK;
}
