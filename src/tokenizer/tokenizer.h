/*
 * tokenizer.h — text <-> token ids, built from a GGUF file's tokenizer.ggml.*
 * metadata.
 *
 * Two vocabulary kinds, chosen by tokenizer.ggml.model:
 *   "llama" — SentencePiece-style BPE: pieces merged by score, spaces as U+2581,
 *             byte fallback through <0xXX> tokens.
 *   "gpt2"  — byte-level BPE: text split by the pre-tokenizer regex that
 *             tokenizer.ggml.pre names (PCRE2, UTF+UCP+JIT), bytes mapped to
 *             printable code points, pieces merged by merge rank.
 * Control tokens written in the text are matched whole when parse_special is
 * set, user-defined ones always (as HF tokenizers and llama.cpp do), leftmost-
 * longest. add_bos/add_eos follow the file's flags. Where HF tokenizers and
 * llama.cpp differ, forge follows HF (its tests compare against HF's ids).
 *
 * Ownership: an fg_tokenizer copies what it needs out of the fg_gguf, so it may
 * outlive it. It is immutable after load and safe to share between threads.
 */
#ifndef FG_TOKENIZER_H
#define FG_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forge.h"
#include "gguf/gguf.h"

typedef enum fg_vocab_kind {
    FG_VOCAB_SPM, /* tokenizer.ggml.model = "llama" */
    FG_VOCAB_BPE, /* tokenizer.ggml.model = "gpt2" */
} fg_vocab_kind;

/* tokenizer.ggml.token_type values. */
typedef enum fg_token_type {
    FG_TOKEN_UNDEFINED = 0,
    FG_TOKEN_NORMAL = 1,
    FG_TOKEN_UNKNOWN = 2,
    FG_TOKEN_CONTROL = 3,
    FG_TOKEN_USER_DEFINED = 4,
    FG_TOKEN_UNUSED = 5,
    FG_TOKEN_BYTE = 6,
} fg_token_type;

typedef struct fg_tokenizer fg_tokenizer;

/* A growable array of token ids. Zero-initialize; free with fg_tokens_free. */
typedef struct fg_tokens {
    int32_t *ids;
    size_t n, cap;
} fg_tokens;

fg_status fg_tokens_push(fg_tokens *t, int32_t id);
void fg_tokens_free(fg_tokens *t);

/* Builds a tokenizer from g's metadata. Fails with a message naming the key if
 * the vocabulary is missing, malformed, or of a kind/pre-tokenizer forge does
 * not implement. */
fg_status fg_tok_load(const fg_gguf *g, fg_tokenizer **out);
void fg_tok_free(fg_tokenizer *t);

fg_vocab_kind fg_tok_kind(const fg_tokenizer *t);
const char *fg_tok_model_name(const fg_tokenizer *t); /* "llama" or "gpt2" */
const char *fg_tok_pre_name(const fg_tokenizer *t);   /* tokenizer.ggml.pre, or "default" */
int32_t fg_tok_n_vocab(const fg_tokenizer *t);

/* Special token ids, -1 where the vocab has none. */
int32_t fg_tok_bos(const fg_tokenizer *t);
int32_t fg_tok_eos(const fg_tokenizer *t);
int32_t fg_tok_eot(const fg_tokenizer *t);
int32_t fg_tok_unk(const fg_tokenizer *t);
int32_t fg_tok_pad(const fg_tokenizer *t);
bool fg_tok_add_bos(const fg_tokenizer *t);
bool fg_tok_add_eos(const fg_tokenizer *t);
/* True for tokens that end generation (EOS, EOT, <|im_end|>, <end_of_turn>, ...). */
bool fg_tok_is_eog(const fg_tokenizer *t, int32_t id);

/* The vocab entry of id as stored (byte-level or U+2581 form); *len set. */
const char *fg_tok_text(const fg_tokenizer *t, int32_t id, size_t *len);
fg_token_type fg_tok_type(const fg_tokenizer *t, int32_t id);
/* The id of a vocab entry with exactly this text, or -1. */
int32_t fg_tok_find(const fg_tokenizer *t, const char *text, size_t len);

/* Appends the ids of text[0..len) to out. add_special: BOS/EOS per the file's
 * flags. parse_special: control tokens in the text match whole (user-defined
 * ones always do). */
fg_status fg_tok_encode(const fg_tokenizer *t, const char *text, size_t len, bool add_special,
                        bool parse_special, fg_tokens *out);

/* A byte range of a text: [off, off + len). */
typedef struct fg_tok_span {
    size_t off, len;
} fg_tok_span;

/* fg_tok_encode, except that inside the n_plain spans (ascending, not
 * overlapping) control tokens are never matched: text there that spells
 * "<|im_end|>" stays plain text, as if encoded with parse_special false. For
 * a rendered chat, whose message contents are the plain spans: the
 * template's own markup becomes control tokens, a user's text never does. */
fg_status fg_tok_encode_spans(const fg_tokenizer *t, const char *text, size_t len, bool add_special,
                              bool parse_special, const fg_tok_span *plain, size_t n_plain, fg_tokens *out);

/* The bytes that token id stands for (byte-level and U+2581 undone, <0xXX> as
 * its byte). Control tokens give their text only if render_special. Writes at
 * most cap bytes and returns the full length (which may exceed cap). */
size_t fg_tok_token_bytes(const fg_tokenizer *t, int32_t id, bool render_special, char *buf,
                          size_t cap);

/* Decodes a whole sequence to a malloc'd NUL-terminated string in *out, with
 * the same leading-space rule as the streaming decoder. */
fg_status fg_tok_decode(const fg_tokenizer *t, const int32_t *ids, size_t n, bool render_special,
                        char **out);
/* The same, also giving the length in *out_len: the text may hold U+0000. */
fg_status fg_tok_decode_len(const fg_tokenizer *t, const int32_t *ids, size_t n, bool render_special,
                            char **out, size_t *out_len);

/* Streaming detokenizer: push ids one by one; it emits only whole UTF-8
 * characters, holding back the bytes of a character split across tokens until
 * its last byte arrives. Zero-initialize with fg_detok_init. */
typedef struct fg_detok {
    const fg_tokenizer *tok;
    bool render_special;
    bool at_start;          /* for the SPM leading-space rule */
    uint8_t pending[8];     /* bytes of an unfinished character */
    size_t n_pending;
} fg_detok;

void fg_detok_init(fg_detok *d, const fg_tokenizer *t, bool render_special);
/* Appends the text that id completes to out (growable, malloc'd, *out_len
 * bytes used, NUL-terminated). Returns FG_ERR_NOMEM on allocation failure. */
fg_status fg_detok_push(fg_detok *d, int32_t id, char **out, size_t *out_len, size_t *out_cap);
/* Emits whatever is still pending (invalid trailing bytes as U+FFFD). */
fg_status fg_detok_flush(fg_detok *d, char **out, size_t *out_len, size_t *out_cap);

#endif
