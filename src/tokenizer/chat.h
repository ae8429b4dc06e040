/*
 * chat.h — chat templates: a conversation (role, content messages) rendered to
 * the prompt text a model was trained on.
 *
 * forge does not run Jinja. It implements the templates of the model families
 * it supports, detects which one a model's tokenizer.chat_template is (by
 * distinctive markers), and lets --chat-template NAME override the choice.
 * Each implementation is tested byte for byte against the real Jinja template
 * rendered by jinja2 the way transformers does (tools/gen_chat_goldens.py).
 *
 * Usage:
 *     fg_chat_tmpl t;
 *     fg_status st = name ? fg_chat_from_name(name, &t)
 *                         : fg_chat_detect(src, src_len, arch, bos_text, &t);
 *     if (st == FG_ERR_NOT_FOUND) st = fg_chat_from_name("chatml", &t);
 *     t.bos = bos_text;  t.eos = eos_text;        (the vocab's token texts)
 *     st = fg_chat_apply(&t, msgs, n_msgs, true, &prompt);   ... free(prompt);
 *
 * BOS: where t.bos_in_template is true the template writes t.bos at the very
 * start of the prompt, so tokenize the prompt without adding another BOS (or
 * leave t.bos NULL and let the tokenizer add it: the result is the same).
 */
#ifndef FG_TOKENIZER_CHAT_H
#define FG_TOKENIZER_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "forge.h"
#include "tokenizer/tokenizer.h"

/* The templates forge implements. Kinds of one family share the turn markup
 * and differ in details the real templates differ in. */
typedef enum fg_chat_kind {
    /* ChatML: <|im_start|>role\n...<|im_end|>\n (SmolLM2, Qwen2.5, ...) */
    FG_CHAT_CHATML,
    /* ChatML with Qwen3's <think> handling of assistant turns */
    FG_CHAT_QWEN3,
    /* Llama 3.0: <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    FG_CHAT_LLAMA3,
    /* Llama 3.1/3.2/3.3: always a system turn, with knowledge and today dates */
    FG_CHAT_LLAMA31,
    /* Gemma 3: <start_of_turn>user\n...<end_of_turn>\n, the system text in front
     * of the first turn */
    FG_CHAT_GEMMA,
    /* Gemma 1/2: the same turns; a system message is an error */
    FG_CHAT_GEMMA2,
    /* glm-4-9b-chat: [gMASK]<sop><|user|>\n... */
    FG_CHAT_GLM4,
    /* GLM-Z1-0414: system turns first, reasoning up to </think> cut, "<think>" opens */
    FG_CHAT_GLM4_Z1,
    /* Mistral "v1" (v0.1/v0.2 today): " [INST] sys\n\nuser [/INST] answer</s>" */
    FG_CHAT_MISTRAL,
    /* Mistral v0.1/v0.2 as first shipped: "[INST] user [/INST]answer</s>", no system */
    FG_CHAT_MISTRAL_LEGACY,
    /* Mistral v3: "[INST] user[/INST] answer</s>", system in the last user turn */
    FG_CHAT_MISTRAL_V3,
    /* Mistral v3-tekken (Nemo): "[INST]user[/INST]answer</s>" */
    FG_CHAT_MISTRAL_V3_TEKKEN,
    /* Mistral v7: "[SYSTEM_PROMPT] sys[/SYSTEM_PROMPT][INST] user[/INST] answer</s>" */
    FG_CHAT_MISTRAL_V7,
    FG_CHAT_KIND_COUNT
} fg_chat_kind;

enum {
    FG_CHAT_SYSTEM_MAX = 1024, /* bytes of a template's default system prompt, with the NUL */
    FG_CHAT_DATE_MAX = 32,
};

/* A template and its options. Detection and fg_chat_from_name fill every
 * field; the caller then sets bos and eos, and may change the rest. */
typedef struct fg_chat_tmpl {
    fg_chat_kind kind;
    /* ChatML: the system turn written when the conversation does not start
     * with one, as the template's Jinja source has it ("" for none). */
    char default_system[FG_CHAT_SYSTEM_MAX];
    /* Llama 3.1+: the "Today Date" text, e.g. "26 Jul 2024"; "" means today's
     * date in local time, as the 3.2 template's strftime_now("%d %b %Y"). */
    char date[FG_CHAT_DATE_MAX];
    /* The template writes bos at the start of the prompt (see the top). */
    bool bos_in_template;
    /* Qwen3: render as enable_thinking=false, which closes an empty
     * <think></think> block after the generation prompt. */
    bool disable_thinking;
    /* Token texts, borrowed: they must outlive the calls that use them. bos
     * NULL writes nothing; eos NULL writes "</s>" (Mistral ends each assistant
     * turn with it; the other templates do not use eos). */
    const char *bos;
    const char *eos;
} fg_chat_tmpl;

/* A message, fg_chat_msg, is forge.h's: {role, content}. */

/* The name --chat-template accepts for kind ("chatml", "llama3", ...). */
const char *fg_chat_name(fg_chat_kind kind);

/* Fills *out with the template called name, with that kind's usual options
 * (no default system prompt; Llama 3.1 dated "26 Jul 2024"; bos and eos
 * NULL). FG_ERR_INVALID_ARG, with a message listing the valid names, if name
 * is unknown. */
fg_status fg_chat_from_name(const char *name, fg_chat_tmpl *out);

/* Picks the template for a model from its tokenizer.chat_template Jinja source
 * (src, len bytes; may be NULL) and, when that is absent or unrecognized,
 * from its architecture name (general.architecture; may be NULL) and the
 * text of its BOS token (may be NULL; it tells a Llama 3 vocab from a Llama 2
 * one).
 * Options found in the source, such as a ChatML default system prompt, go into
 * *out. Returns FG_ERR_NOT_FOUND if nothing identifies a template (the caller
 * may then choose chatml, as llama.cpp does), FG_ERR_UNSUPPORTED if the
 * source's default system prompt does not fit FG_CHAT_SYSTEM_MAX. */
fg_status fg_chat_detect(const char *src, size_t len, const char *arch, const char *bos, fg_chat_tmpl *out);

/* Renders msgs into a malloc'd NUL-terminated string in *out (freed by the
 * caller with free()). add_generation_prompt appends the opening of the
 * assistant's turn (the Mistral templates have none and ignore it).
 * FG_ERR_INVALID_ARG for an empty conversation, a role other than system,
 * user and assistant, or an order of roles the real template rejects (Gemma
 * and Mistral require user/assistant alternation); the message quotes the
 * template's own words. */
fg_status fg_chat_apply(const fg_chat_tmpl *t, const fg_chat_msg *msgs, size_t n_msgs,
                        bool add_generation_prompt, char **out);

/* fg_chat_apply, also giving in *spans (malloc'd, freed by the caller; NULL
 * when *n_spans is 0) the byte ranges of the prompt that came from the
 * messages' contents, ascending. Tokenize the prompt with
 * fg_tok_encode_spans(..., *spans, *n_spans) so that a message saying
 * "<|im_end|>" cannot close its turn: only the template's own markup becomes
 * control tokens, as in vLLM and llama-server. */
fg_status fg_chat_apply_spans(const fg_chat_tmpl *t, const fg_chat_msg *msgs, size_t n_msgs,
                              bool add_generation_prompt, char **out, fg_tok_span **spans, size_t *n_spans);

#endif
