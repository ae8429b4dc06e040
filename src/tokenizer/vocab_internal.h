/*
 * vocab_internal.h — the inside of an fg_tokenizer, shared by tokenizer.c
 * (load, special-token matching, detokenization), bpe.c (the merge loop and
 * byte-level BPE) and spm.c (SentencePiece-style BPE). Not part of the API.
 *
 * Everything here is built once at load and read-only afterwards, which is
 * what makes an fg_tokenizer safe to share between threads: per-call state
 * lives in an fg_tok_scratch owned by the encode call.
 */
#ifndef FG_TOKENIZER_VOCAB_INTERNAL_H
#define FG_TOKENIZER_VOCAB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/pretok.h"
#include "tokenizer/tokenizer.h"

/* ---- String -> id hash (open addressing, linear probing) -------------------- */

/* Maps byte strings to token ids. Keys are not copied: each slot's id indexes
 * the owner's (key_off, key_len) arrays into its pool, so a slot is 8 bytes. */
typedef struct fg_strmap {
    uint32_t *hash;   /* (cap) full 32-bit hash of the key, 0 = empty slot */
    int32_t *id;      /* (cap) */
    uint32_t mask;    /* cap - 1, cap a power of two */
} fg_strmap;

uint32_t fg_tok_hash(const char *s, size_t len);

/* ---- Special-token trie ------------------------------------------------------ */

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

/* ---- BPE merge table (gpt2) ------------------------------------------------- */

/* (left id, right id) -> (rank, merged id), from tokenizer.ggml.merges. */
typedef struct fg_pairmap {
    uint64_t *key;    /* (cap) (left << 32 | right) + 1; 0 = empty */
    int32_t *rank;    /* (cap) */
    int32_t *merged;  /* (cap) */
    uint32_t mask;
} fg_pairmap;

/* ---- The tokenizer ------------------------------------------------------------ */

struct fg_tokenizer {
    fg_vocab_kind kind;
    char model_name[16];   /* "llama" or "gpt2" */
    char *pre_name;        /* tokenizer.ggml.pre, or "default"; owned */
    int32_t n_vocab;

    /* Token texts as stored in the file, NUL-separated in one pool. */
    char *pool;            /* owned */
    uint32_t *text_off;    /* (n_vocab) */
    uint32_t *text_len;    /* (n_vocab) */
    uint8_t *type;         /* (n_vocab) fg_token_type */
    fg_strmap by_text;     /* exact stored text -> id (a later duplicate wins) */

    int32_t bos, eos, eot, unk, pad;
    bool add_bos, add_eos, add_space_prefix;
    int32_t eog[16];       /* ids that end generation */
    int n_eog;

    fg_trie special;       /* tokens matched whole in text */

    /* SPM only. */
    uint64_t *spm_group;   /* (n_vocab) merge priority of a token, lower merges first */
    int32_t byte_tok[256]; /* id of <0xXX>, or -1 */
    /* Gemma files store multi-space tokens with real spaces; HF looks them up as
     * runs of U+2581. alias maps that respelling to the token. */
    char *alias_pool;      /* owned */
    uint32_t *alias_off, *alias_len; /* (n_alias) */
    int32_t *alias_id;     /* (n_alias) */
    int32_t n_alias;
    fg_strmap alias;       /* key i -> alias i (ids in this map index alias_*) */

    /* BPE only. */
    fg_pairmap merges;
    int32_t char_tok[256]; /* id of the one-character token for byte b, or -1 */
    fg_pretok *pretok;     /* owned */
};

/* ---- Helpers shared by the files ---------------------------------------------- */

/* The id whose stored text is exactly s[0..len), or -1. */
int32_t fg_tok_lookup(const fg_tokenizer *t, const char *s, size_t len);

/* Per-call scratch for the merge loop, reused across the pieces of one encode
 * call so small pieces do not each hit malloc. Zero-initialize; free with
 * fg_tok_scratch_free. */
typedef struct fg_sym {
    int32_t id;       /* current token id, or -1 while it is an unknown character */
    int32_t prev, next; /* neighbours in the list, -1 at the ends */
    uint32_t start;   /* byte offset of the symbol in the piece */
    uint32_t len;     /* bytes; 0 once merged into its left neighbour */
    uint32_t nchars;  /* code points, for HF's merge tie-break */
    bool frozen;      /* byte-fallback or unknown: never merges */
} fg_sym;

typedef struct fg_merge_cand {
    uint64_t key;     /* priority, lower first */
    uint32_t pos;     /* start of the left symbol: leftmost first on ties */
    int32_t left, right;
    uint32_t left_len, right_len; /* lengths when pushed, to detect stale entries */
    int32_t merged;
} fg_merge_cand;

typedef struct fg_tok_scratch {
    fg_sym *sym;
    size_t sym_cap;
    fg_merge_cand *heap;
    size_t heap_n, heap_cap;
    char *buf;        /* piece text after byte mapping / space escaping */
    size_t buf_cap;
} fg_tok_scratch;

void fg_tok_scratch_free(fg_tok_scratch *s);
fg_status fg_tok_scratch_reserve(fg_tok_scratch *s, size_t n_sym, size_t n_buf);

/* Decides whether adjacent symbols l and r merge. Returns false if they do not;
 * otherwise sets *key (lower merges first) and *merged. text is the piece. */
typedef bool (*fg_pair_fn)(const fg_tokenizer *t, const char *text, const fg_sym *l,
                           const fg_sym *r, uint64_t *key, int32_t *merged);

/* The BPE merge loop shared by both vocab kinds: repeatedly merges the best
 * adjacent pair (lowest key, then leftmost) until no pair merges, then appends
 * the surviving symbols' ids to out. s->sym[0..n) is the initial list. Runs in
 * O(n log n) with a binary heap and lazy deletion of stale candidates. */
fg_status fg_bpe_merge(const fg_tokenizer *t, fg_tok_scratch *s, const char *text, size_t n,
                       fg_pair_fn pair, fg_tokens *out);

/* Loads the byte-level parts (char_tok, merges, pretok) after the common vocab. */
fg_status fg_bpe_load(fg_tokenizer *t, const fg_gguf *g);
void fg_bpe_free(fg_tokenizer *t);
/* Encodes one raw-text fragment (no special tokens in it) with byte-level BPE. */
fg_status fg_bpe_encode(const fg_tokenizer *t, fg_tok_scratch *s, const char *text, size_t len,
                        fg_tokens *out);
/* Appends the bytes that byte-level text s[0..len) stands for; returns the count
 * (possibly > cap, nothing written past cap). */
size_t fg_bpe_unmap(const char *s, size_t len, char *buf, size_t cap);

/* Loads the SPM parts (merge priorities, byte tokens, aliases). arch is
 * general.architecture (may be NULL). */
fg_status fg_spm_load(fg_tokenizer *t, const fg_gguf *g, const char *arch);
void fg_spm_free(fg_tokenizer *t);
/* Encodes one raw-text fragment; at_text_start says whether it begins the text
 * (HF's Metaspace adds the space prefix only there). */
fg_status fg_spm_encode(const fg_tokenizer *t, fg_tok_scratch *s, const char *text, size_t len,
                        bool at_text_start, fg_tokens *out);

/* Map helpers used by load code. build fills m with ids 0..n-1 keyed by
 * (pool + off[i], len[i]); a later duplicate key replaces the earlier id. */
fg_status fg_strmap_build(fg_strmap *m, const char *pool, const uint32_t *off,
                          const uint32_t *len, int32_t n);
int32_t fg_strmap_get(const fg_strmap *m, const char *pool, const uint32_t *off,
                      const uint32_t *len, const char *s, size_t slen);
void fg_strmap_free(fg_strmap *m);

#endif
