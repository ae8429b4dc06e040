/*
 * tokenizer.c — the top of the tokenizer (tokenizer.h): it loads a
 * vocabulary and its kind's tables, matches the special tokens written in the
 * text, hands the text between them to its kind's encoder, and turns ids back
 * into text (whole or streamed).
 *
 * Input: an fg_gguf with tokenizer.ggml.* keys. Output: an immutable
 * fg_tokenizer that owns copies of everything it uses, so the fg_gguf may be
 * closed: the fg_vocab (vocab.c: token texts, named ids, the text -> id map),
 * the tables of one kind (bpe.c: byte-level BPE; spm.c: SentencePiece-style
 * BPE), the end-of-generation ids and the special-token trie. Both kinds run
 * the merge loop in vocab.c; neither knows the other or this file.
 *
 * Where HF tokenizers and llama.cpp disagree, forge follows HF tokenizers,
 * the reference its tests compare against: special tokens are found leftmost-
 * longest (HF's Aho-Corasick) rather than longest-first.
 */
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/utf8.h"
#include "tokenizer/bpe.h"
#include "tokenizer/spm.h"
#include "tokenizer/vocab.h"

/* ---- The tokenizer ------------------------------------------------------------ */

/* A byte trie over the tokens matched whole in text (control, user-defined,
 * unknown, and the ids named by bos/eos/unk/pad). Children are found through
 * one open-addressed table keyed by (node << 8 | byte). */
typedef struct fg_trie {
    int32_t *term;        /* (n_nodes) token id ending here, or -1 */
    uint8_t *term_special;/* (n_nodes) 1 if that token is special (needs parse_special) */
    int32_t n_nodes, cap_nodes;
    uint64_t *edge_key;   /* (edge_mask + 1) node << 8 | byte, plus 1; 0 = empty */
    int32_t *edge_child;  /* (edge_mask + 1) */
    uint32_t edge_mask;
    int32_t n_edges;
    bool first[256];      /* bytes some token starts with: most positions fail here */
} fg_trie;

struct fg_tokenizer {
    fg_vocab v;            /* texts, types, named ids and flags */
    int32_t eog[16];       /* ids that end generation */
    int n_eog;
    fg_trie special;       /* tokens matched whole in text */
    fg_spm spm;            /* FG_VOCAB_SPM only; zero otherwise */
    fg_bpe bpe;            /* FG_VOCAB_BPE only; zero otherwise */
};

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

static int32_t trie_child(const fg_trie *tr, int32_t node, uint8_t c)
{
    uint64_t key = (((uint64_t)node << 8) | c) + 1;
    for (uint32_t p = fg_vocab_slot64(key, tr->edge_mask); tr->edge_key[p]; p = (p + 1) & tr->edge_mask)
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
        uint32_t p = fg_vocab_slot64(tr->edge_key[i], cap - 1);
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
            uint32_t p = fg_vocab_slot64(key, tr->edge_mask);
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
    if (t->v.eot < 0) {
        /* The turn-end token of the chat format, when the file names none. */
        for (size_t i = 0; i < 4 && t->v.eot < 0; i++) {
            int32_t id = fg_vocab_lookup(&t->v, k_eog_texts[i], strlen(k_eog_texts[i]));
            if (id >= 0 && t->v.type[id] == FG_TOKEN_CONTROL) t->v.eot = id;
        }
    }
    add_eog(t, t->v.eos);
    add_eog(t, t->v.eot);
    for (size_t i = 0; i < n_texts; i++) {
        int32_t id = fg_vocab_lookup(&t->v, k_eog_texts[i], strlen(k_eog_texts[i]));
        if (id >= 0 && (t->v.type[id] == FG_TOKEN_CONTROL || t->v.type[id] == FG_TOKEN_USER_DEFINED))
            add_eog(t, id);
    }
}

/* The tokens HF matches whole in text before any normalization: control and
 * unknown tokens and the ids the file names as bos/eos/unk/pad (special: only
 * with parse_special), and user-defined tokens (always). */
static fg_status build_special(fg_tokenizer *t)
{
    const fg_vocab *v = &t->v;
    FG_TRY(trie_init(&t->special));
    for (int32_t id = 0; id < v->n_vocab; id++) {
        uint8_t ty = v->type[id];
        bool named = id == v->bos || id == v->eos || id == v->unk || id == v->pad;
        bool special = ty == FG_TOKEN_CONTROL || ty == FG_TOKEN_UNKNOWN || named;
        bool user = ty == FG_TOKEN_USER_DEFINED && !fg_spm_is_alias(&t->spm, id);
        if ((!special && !user) || v->text_len[id] == 0) continue;
        FG_TRY(trie_insert(&t->special, v->pool + v->text_off[id], v->text_len[id], id, special));
    }
    return FG_OK;
}

fg_status fg_tok_load(const fg_gguf *g, fg_tokenizer **out)
{
    *out = NULL;
    fg_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return fg_err_set(FG_ERR_NOMEM, "tokenizer: out of memory");
    fg_status st = fg_vocab_load(&t->v, g);
    if (st != FG_OK) goto err;
    st = t->v.kind == FG_VOCAB_SPM ? fg_spm_load(&t->spm, &t->v, g) : fg_bpe_load(&t->bpe, &t->v, g);
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
    fg_spm_free(&t->spm);
    fg_bpe_free(&t->bpe);
    trie_free(&t->special);
    fg_vocab_free(&t->v);
    free(t);
}

/* ---- Accessors ---------------------------------------------------------------- */

fg_vocab_kind fg_tok_kind(const fg_tokenizer *t) { return t->v.kind; }
const char *fg_tok_model_name(const fg_tokenizer *t) { return t->v.kind == FG_VOCAB_SPM ? "llama" : "gpt2"; }
const char *fg_tok_pre_name(const fg_tokenizer *t) { return t->v.pre_name; }
int32_t fg_tok_n_vocab(const fg_tokenizer *t) { return t->v.n_vocab; }
int32_t fg_tok_bos(const fg_tokenizer *t) { return t->v.bos; }
int32_t fg_tok_eos(const fg_tokenizer *t) { return t->v.eos; }
int32_t fg_tok_eot(const fg_tokenizer *t) { return t->v.eot; }
int32_t fg_tok_unk(const fg_tokenizer *t) { return t->v.unk; }
int32_t fg_tok_pad(const fg_tokenizer *t) { return t->v.pad; }
bool fg_tok_add_bos(const fg_tokenizer *t) { return t->v.add_bos; }
bool fg_tok_add_eos(const fg_tokenizer *t) { return t->v.add_eos; }

bool fg_tok_is_eog(const fg_tokenizer *t, int32_t id)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

const char *fg_tok_text(const fg_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->v.n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->v.text_len[id];
    return t->v.pool + t->v.text_off[id];
}

fg_token_type fg_tok_type(const fg_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->v.n_vocab) return FG_TOKEN_UNDEFINED;
    return (fg_token_type)t->v.type[id];
}

int32_t fg_tok_find(const fg_tokenizer *t, const char *text, size_t len)
{
    return fg_vocab_lookup(&t->v, text, len);
}

/* ---- Encoding -------------------------------------------------------------------- */

static fg_status encode_raw(const fg_tokenizer *t, fg_vocab_scratch *s, const char *text, size_t len,
                            bool at_text_start, fg_tokens *out)
{
    if (len == 0) return FG_OK;
    if (t->v.kind == FG_VOCAB_SPM) return fg_spm_encode(&t->spm, s, text, len, at_text_start, out);
    return fg_bpe_encode(&t->bpe, s, text, len, out);
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
    fg_vocab_scratch s = {0};
    if (add_special && t->v.add_bos && t->v.bos >= 0 && (st = fg_tokens_push(out, t->v.bos))) goto done;

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
    if (add_special && t->v.add_eos && t->v.eos >= 0) st = fg_tokens_push(out, t->v.eos);
done:
    fg_vocab_scratch_free(&s);
    return st;
}

fg_status fg_tok_encode(const fg_tokenizer *t, const char *text, size_t len, bool add_special,
                        bool parse_special, fg_tokens *out)
{
    return fg_tok_encode_spans(t, text, len, add_special, parse_special, NULL, 0, out);
}

/* ---- Token bytes --------------------------------------------------------------- */

size_t fg_tok_token_bytes(const fg_tokenizer *t, int32_t id, bool render_special, char *buf, size_t cap)
{
    if (id < 0 || id >= t->v.n_vocab) return 0;
    const char *s = t->v.pool + t->v.text_off[id];
    size_t len = t->v.text_len[id];
    fg_token_type ty = (fg_token_type)t->v.type[id];
    switch (ty) {
    case FG_TOKEN_CONTROL:
    case FG_TOKEN_UNKNOWN:
    case FG_TOKEN_UNUSED:
        return render_special ? fg_vocab_put(buf, cap, 0, s, len) : 0;
    case FG_TOKEN_USER_DEFINED:
        return fg_vocab_put(buf, cap, 0, s, len); /* stored as the raw text it matches */
    default:
        break;
    }
    if (t->v.kind == FG_VOCAB_BPE) return fg_bpe_unmap(s, len, buf, cap);
    return fg_spm_unmap(s, len, ty == FG_TOKEN_BYTE, buf, cap);
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
        if (t->v.kind == FG_VOCAB_SPM && t->v.add_space_prefix && b[0] == ' ') skip = 1;
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
