/*
 * pretok.h — pre-tokenizers for byte-level BPE: split text into the pieces
 * that BPE merges within, by the regex sequence that tokenizer.ggml.pre names.
 *
 * The patterns are the ones the models' own tokenizer.json files use, run with
 * PCRE2 (UTF + UCP, JIT-compiled when available). A sequence of several regexes
 * applies each one to the pieces of the previous one, as HF tokenizers'
 * Sequence of Split(Isolated) pre-tokenizers does: text between matches is kept
 * as pieces of its own, so the pieces always concatenate back to the input.
 *
 * An fg_pretok is immutable after init and safe to use from several threads
 * (each call makes its own match data).
 */
#ifndef FG_TOKENIZER_PRETOK_H
#define FG_TOKENIZER_PRETOK_H

#include <stdbool.h>
#include <stddef.h>

#include "forge.h"

typedef struct fg_pretok fg_pretok;

/* Called once per piece, in order; piece points into the caller's text.
 * Returning non-OK stops the split and is passed back to the caller. */
typedef fg_status (*fg_pretok_cb)(const char *piece, size_t len, void *ud);

/* Builds the pre-tokenizer for tokenizer.ggml.pre = name ("default", "gpt2",
 * "llama-bpe", "qwen2", "smollm", "chatglm-bpe", "glm4", ...). An unknown name
 * is FG_ERR_UNSUPPORTED with a message that lists the known ones. */
fg_status fg_pretok_init(const char *name, fg_pretok **out);
void fg_pretok_free(fg_pretok *p);

/* Splits text[0..len) (valid UTF-8 expected; invalid bytes must not crash and
 * are passed through inside pieces) and calls cb for each piece. Pieces are
 * never empty and an empty text has none. Each maximal run of invalid UTF-8
 * is a piece of its own; the valid text between such runs is split as if each
 * stretch were a text by itself. */
fg_status fg_pretok_split(const fg_pretok *p, const char *text, size_t len, fg_pretok_cb cb,
                          void *ud);

/* The names fg_pretok_init accepts, NULL-terminated. */
const char *const *fg_pretok_names(void);

/* As fg_pretok_init, with JIT compilation skipped when use_jit is false: for
 * tests that hold the interpreter to the same pieces, and for hosts that forbid
 * executable memory. fg_pretok_init uses JIT where PCRE2 has it. */
fg_status fg_pretok_init_ex(const char *name, bool use_jit, fg_pretok **out);

/* The regexes p applies, in order, as the models' tokenizer.json spells them;
 * NULL-terminated. (PCRE2 is handed a rewrite with \s spelled \p{White_Space}:
 * in PCRE2 10.42 \s also matches U+180E, which Unicode and HF do not.) */
const char *const *fg_pretok_patterns(const fg_pretok *p);

/* True if BPE maps each piece's bytes to GPT-2's printable code points before
 * merging (every byte-level BPE). False for SentencePiece-style BPE ("gemma4"):
 * the caller replaces spaces with U+2581 before splitting and merges raw UTF-8. */
bool fg_pretok_byte_level(const fg_pretok *p);

/* True if every regex of p runs JIT-compiled. */
bool fg_pretok_jit(const fg_pretok *p);

#endif
