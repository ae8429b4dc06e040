/*
 * spm.h — SentencePiece-style BPE (tokenizer.ggml.model = llama): the tables
 * it adds to an fg_vocab, and its encoder and piece decoding. Not part of the
 * API.
 *
 * Built on vocab.h (lookup, the string map, the merge loop); used by
 * tokenizer.c. An fg_spm is built once at load and read-only afterwards.
 */
#ifndef FG_TOKENIZER_SPM_H
#define FG_TOKENIZER_SPM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forge.h"
#include "gguf/gguf.h"
#include "tokenizer/vocab.h"

typedef struct fg_spm {
    const fg_vocab *vocab; /* the vocabulary these tables index; not owned */
    uint64_t *group;       /* (n_vocab) merge priority of a token, lower merges first */
    int32_t byte_tok[256]; /* id of <0xXX>, or -1: the byte fallback */
    /* Gemma files store multi-space tokens with real spaces; HF looks them up as
     * runs of U+2581. alias maps that respelling to the token. */
    char *alias_pool;      /* owned */
    uint32_t *alias_off, *alias_len; /* (n_alias) */
    int32_t *alias_id;     /* (n_alias) */
    int32_t n_alias;
    fg_strmap alias;       /* key i -> alias i (ids in this map index alias_*) */
} fg_spm;

/* Builds the SPM tables of v, which must outlive spm, from g into a zeroed spm:
 * merge priorities (from tokenizer.ggml.scores, or file order for Gemma, as
 * general.architecture tells), byte tokens and aliases. Free with
 * fg_spm_free, also after a failure. */
fg_status fg_spm_load(fg_spm *spm, const fg_vocab *v, const fg_gguf *g);
void fg_spm_free(fg_spm *spm);

/* Encodes one raw-text fragment (no special tokens in it), appending to out;
 * at_text_start says whether it begins the text (HF's Metaspace adds the
 * space prefix only there). */
fg_status fg_spm_encode(const fg_spm *spm, fg_vocab_scratch *s, const char *text, size_t len, bool at_text_start,
                        fg_tokens *out);

/* True if id is reached through an alias (and so is not matched whole in text). */
bool fg_spm_is_alias(const fg_spm *spm, int32_t id);

/* Appends the bytes that the stored piece s[0..len) stands for to buf: a byte
 * token's <0xXX> as its byte (byte_token: its type is FG_TOKEN_BYTE), else the
 * text with U+2581 as a space. Returns the count (possibly > cap, nothing
 * written past cap). */
size_t fg_spm_unmap(const char *s, size_t len, bool byte_token, char *buf, size_t cap);

#endif
