/*
 * bpe.h — byte-level BPE (tokenizer.ggml.model = gpt2): the tables it adds to
 * an fg_vocab, and its encoder and byte unmapping. Not part of the API.
 *
 * Built on vocab.h (lookup, the merge loop) and pretok.h (the split into
 * pieces); used by tokenizer.c. An fg_bpe is built once at load and
 * read-only afterwards.
 */
#ifndef FG_TOKENIZER_BPE_H
#define FG_TOKENIZER_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "forge.h"
#include "gguf/gguf.h"
#include "tokenizer/pretok.h"
#include "tokenizer/vocab.h"

/* (left id, right id) -> (rank, merged id), from tokenizer.ggml.merges. */
typedef struct fg_pairmap {
    uint64_t *key;    /* (cap) (left << 32 | right) + 1; 0 = empty */
    int32_t *rank;    /* (cap) */
    int32_t *merged;  /* (cap) */
    uint32_t mask;    /* cap - 1, cap a power of two */
} fg_pairmap;

typedef struct fg_bpe {
    const fg_vocab *vocab; /* the vocabulary these tables index; not owned */
    fg_pairmap merges;
    int32_t char_tok[256]; /* id of the one-character token for byte b, or -1 */
    fg_pretok *pretok;     /* owned */
} fg_bpe;

/* Builds the byte-level tables (char_tok, merges, pretok) of v, which must
 * outlive b, from g into a zeroed b. Free with fg_bpe_free, also after a
 * failure. */
fg_status fg_bpe_load(fg_bpe *b, const fg_vocab *v, const fg_gguf *g);
void fg_bpe_free(fg_bpe *b);

/* Encodes one raw-text fragment (no special tokens in it), appending to out. */
fg_status fg_bpe_encode(const fg_bpe *b, fg_vocab_scratch *s, const char *text, size_t len, fg_tokens *out);

/* Appends the bytes that byte-level text s[0..len) stands for to buf; returns
 * the count (possibly > cap, nothing written past cap). */
size_t fg_bpe_unmap(const char *s, size_t len, char *buf, size_t cap);

#endif
