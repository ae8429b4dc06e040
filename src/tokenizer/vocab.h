/*
 * vocab.h — the vocabulary as a GGUF file states it, and the primitives both
 * vocabulary kinds build on: the string -> id map, the per-call scratch, and
 * the BPE merge loop. Not part of the API.
 *
 * This is the bottom of the tokenizer: bpe.c and spm.c build on it and on
 * nothing of each other's, and tokenizer.c sits on top of all three. It
 * includes tokenizer.h only for the public types (fg_tokens, fg_token_type,
 * fg_vocab_kind).
 *
 * Everything in an fg_vocab is built once at load and read-only afterwards,
 * which is what makes an fg_tokenizer safe to share between threads: per-call
 * state lives in an fg_vocab_scratch owned by the encode call.
 */
#ifndef FG_TOKENIZER_VOCAB_H
#define FG_TOKENIZER_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "forge.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

/* ---- Small helpers for open-addressed tables and bounded output ---------------- */

/* Slots for an open-addressed table of n keys: the power of two at least 2n
 * (load at most 1/2), and at least 16. */
static inline uint32_t fg_vocab_table_cap(uint64_t n)
{
    uint32_t c = 16;
    while (c < n * 2) c *= 2;
    return c;
}

/* The home slot of a 64-bit key (Fibonacci hashing: the high bits of the
 * product are well mixed even for keys that differ only in their low bits). */
static inline uint32_t fg_vocab_slot64(uint64_t key, uint32_t mask)
{
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 32) & mask;
}

/* Writes s[0..n) at buf[at..], as much of it as fits below cap, and returns
 * at + n: the length the whole text has, which may exceed cap. */
static inline size_t fg_vocab_put(char *buf, size_t cap, size_t at, const char *s, size_t n)
{
    if (at < cap) memcpy(buf + at, s, at + n <= cap ? n : cap - at);
    return at + n;
}

/* ---- String -> id map (open addressing, linear probing) ------------------------ */

/* Maps byte strings to ids. Keys are not copied: each slot's id indexes the
 * owner's (off, len) arrays into its pool, so a slot is 8 bytes. */
typedef struct fg_strmap {
    uint32_t *hash;   /* (cap) full 32-bit hash of the key, 0 = empty slot */
    int32_t *id;      /* (cap) */
    uint32_t mask;    /* cap - 1, cap a power of two */
} fg_strmap;

/* Fills m with ids 0..n-1 keyed by (pool + off[i], len[i]); a later duplicate
 * key replaces the earlier id, as in HF's vocab dict. Free with
 * fg_strmap_free, also after a failure. */
fg_status fg_strmap_build(fg_strmap *m, const char *pool, const uint32_t *off, const uint32_t *len,
                          int32_t n);
/* The id keyed by s[0..slen), or -1. pool, off and len are the ones m was built from. */
int32_t fg_strmap_get(const fg_strmap *m, const char *pool, const uint32_t *off, const uint32_t *len,
                      const char *s, size_t slen);
void fg_strmap_free(fg_strmap *m);

/* ---- The vocabulary --------------------------------------------------------------- */

/* What tokenizer.ggml.* says, common to both kinds. */
typedef struct fg_vocab {
    fg_vocab_kind kind;
    int32_t n_vocab;
    char *pre_name;        /* tokenizer.ggml.pre, or "default"; owned */

    /* Token texts as stored in the file, NUL-separated in one pool. */
    char *pool;            /* owned */
    uint32_t *text_off;    /* (n_vocab) */
    uint32_t *text_len;    /* (n_vocab) */
    uint8_t *type;         /* (n_vocab) fg_token_type */
    fg_strmap by_text;     /* exact stored text -> id (a later duplicate wins) */

    /* The ids the file names, -1 where it names none. tokenizer.c fills eot
     * from the chat format's turn-end token when the file has no eot key. */
    int32_t bos, eos, eot, unk, pad;
    bool add_bos, add_eos, add_space_prefix;
} fg_vocab;

/* Reads the kind, token texts and types, named ids, flags and pre-tokenizer
 * name from g into a zeroed v, and builds the text -> id map. Fails with a
 * message naming the key if any is missing or malformed, leaving v zeroed.
 * v owns copies of everything, so g may be closed afterwards. */
fg_status fg_vocab_load(fg_vocab *v, const fg_gguf *g);
void fg_vocab_free(fg_vocab *v);

/* The id whose stored text is exactly s[0..len), or -1. */
int32_t fg_vocab_lookup(const fg_vocab *v, const char *s, size_t len);

/* ---- The merge loop ---------------------------------------------------------------- */

/* One symbol of a piece being merged; the symbols form a doubly linked list
 * over s->sym. */
typedef struct fg_sym {
    int32_t id;       /* current token id, or -1 while it is an unknown character */
    int32_t prev, next; /* neighbours in the list, -1 at the ends */
    uint32_t start;   /* byte offset of the symbol in the piece */
    uint32_t len;     /* bytes; 0 once merged into its left neighbour */
    uint32_t nchars;  /* code points, for HF's merge tie-break */
    bool frozen;      /* byte-fallback or unknown: never merges */
} fg_sym;

struct fg_merge_cand; /* a heap entry, private to vocab.c */

/* Per-call scratch for the merge loop, reused across the pieces of one encode
 * call so small pieces do not each hit malloc. Zero-initialize; free with
 * fg_vocab_scratch_free. */
typedef struct fg_vocab_scratch {
    fg_sym *sym;      /* (sym_cap) the piece's symbols */
    size_t sym_cap;
    struct fg_merge_cand *heap; /* (heap_cap) candidates, heap_n in use */
    size_t heap_n, heap_cap;
    char *buf;        /* (buf_cap) piece text after byte mapping / space escaping */
    size_t buf_cap;
} fg_vocab_scratch;

/* Grows s, if need be, to hold n_sym symbols and n_buf bytes of buf. */
fg_status fg_vocab_scratch_reserve(fg_vocab_scratch *s, size_t n_sym, size_t n_buf);
void fg_vocab_scratch_free(fg_vocab_scratch *s);

/* Decides whether adjacent symbols l and r merge. Returns false if they do not;
 * otherwise sets *key (lower merges first) and *merged. ctx is the caller's
 * (its vocabulary kind's tables); text is the piece the symbols index. */
typedef bool (*fg_pair_fn)(const void *ctx, const char *text, const fg_sym *l, const fg_sym *r,
                           uint64_t *key, int32_t *merged);

/* The BPE merge loop both vocabulary kinds share: repeatedly merges the best
 * adjacent pair (lowest key, then leftmost) until no pair merges, then appends
 * the surviving symbols' ids to out. s->sym[0..n) is the initial list, with id,
 * start, len, nchars and frozen set; prev and next are filled here. Runs in
 * O(n log n) with a binary heap and lazy deletion of stale candidates. */
fg_status fg_vocab_merge(fg_vocab_scratch *s, const char *text, size_t n, fg_pair_fn pair,
                         const void *ctx, fg_tokens *out);

#endif
