/*
 * chat.c — the chat templates of chat.h, written out in C.
 *
 * Each renderer below is a transcription of one real Jinja template (listed,
 * with where each comes from, in tools/chat_templates/README.md) for
 * conversations of system, user and assistant messages: the same text in
 * the same order, the same trimming, and an error wherever the template calls
 * raise_exception. Where a template trims content it uses Python's
 * str.strip(), whose notion of whitespace is Unicode's, so the trimming here
 * decodes UTF-8 instead of stopping at ASCII.
 *
 * Detection reads the Jinja source only for fixed markers (the turn tokens,
 * "Cutting Knowledge Date", "[SYSTEM_PROMPT]") and for two literals it needs
 * verbatim: a ChatML default system prompt and a Llama 3.1 date. Nothing here
 * evaluates Jinja.
 *
 * Inputs: an fg_chat_tmpl (from fg_chat_detect or fg_chat_from_name) and the
 * messages. Output: one malloc'd prompt string, owned by the caller, and on
 * request the spans of it that came from the messages' contents (for
 * fg_tok_encode_spans). Nothing else is allocated or kept.
 */
#include "tokenizer/chat.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/err.h"
#include "base/utf8.h"

/* ---- Names --------------------------------------------------------------- */

static const char *const kind_names[FG_CHAT_KIND_COUNT] = {
    [FG_CHAT_CHATML] = "chatml",
    [FG_CHAT_QWEN3] = "qwen3",
    [FG_CHAT_LLAMA3] = "llama3",
    [FG_CHAT_LLAMA31] = "llama3.1",
    [FG_CHAT_GEMMA] = "gemma",
    [FG_CHAT_GEMMA2] = "gemma2",
    [FG_CHAT_GLM4] = "glm4",
    [FG_CHAT_GLM4_Z1] = "glm4-z1",
    [FG_CHAT_MISTRAL] = "mistral",
    [FG_CHAT_MISTRAL_LEGACY] = "mistral-legacy",
    [FG_CHAT_MISTRAL_V3] = "mistral-v3",
    [FG_CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [FG_CHAT_MISTRAL_V7] = "mistral-v7",
};

/* Other spellings people will type: llama.cpp's names, and model versions
 * whose template is one of ours. "llama3.2" differs from "llama3.1" only in
 * dating the system turn today, as the 3.2 template does. */
static const struct {
    const char *name;
    fg_chat_kind kind;
} kind_aliases[] = {
    {"mistral-v1", FG_CHAT_MISTRAL}, {"chatglm4", FG_CHAT_GLM4},    {"gemma3", FG_CHAT_GEMMA},
    {"llama3.2", FG_CHAT_LLAMA31},   {"llama3.3", FG_CHAT_LLAMA31},
};

/* The date the Llama 3.1 and 3.3 templates write when the caller gives none. */
#define LLAMA31_DATE "26 Jul 2024"

const char *fg_chat_name(fg_chat_kind kind)
{
    return (unsigned)kind < FG_CHAT_KIND_COUNT ? kind_names[kind] : "unknown";
}

/* Whether the real template of kind starts the prompt with bos_token. */
static bool kind_writes_bos(fg_chat_kind kind)
{
    switch (kind) {
    case FG_CHAT_CHATML:
    case FG_CHAT_QWEN3:
    case FG_CHAT_GLM4:
    case FG_CHAT_GLM4_Z1:
        return false;
    default:
        return true;
    }
}

static void tmpl_init(fg_chat_tmpl *out, fg_chat_kind kind)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->bos_in_template = kind_writes_bos(kind);
    if (kind == FG_CHAT_LLAMA31) snprintf(out->date, sizeof out->date, "%s", LLAMA31_DATE);
}

/* "chatml, qwen3, ...", for messages that tell the user what to type. */
static const char *name_list(char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = 0;
    for (int k = 0; k < FG_CHAT_KIND_COUNT && n < cap; k++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", k ? ", " : "", kind_names[k]);
    return buf;
}

fg_status fg_chat_from_name(const char *name, fg_chat_tmpl *out)
{
    if (!name || !out) return fg_err_set(FG_ERR_INVALID_ARG, "fg_chat_from_name: NULL argument");
    for (int k = 0; k < FG_CHAT_KIND_COUNT; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            tmpl_init(out, (fg_chat_kind)k);
            return FG_OK;
        }
    }
    for (size_t i = 0; i < sizeof kind_aliases / sizeof kind_aliases[0]; i++) {
        if (strcmp(name, kind_aliases[i].name) == 0) {
            tmpl_init(out, kind_aliases[i].kind);
            if (strcmp(name, "llama3.2") == 0) out->date[0] = 0;
            return FG_OK;
        }
    }
    char list[512];
    return fg_err_set(FG_ERR_INVALID_ARG, "unknown chat template '%s'; valid names: %s", name,
                      name_list(list, sizeof list));
}

/* ---- Python string operations on byte spans ------------------------------ */

/* A view of bytes inside a message; never owns them. */
typedef struct span {
    const char *p;
    size_t n;
} span;

static span span_of(const char *s) { return (span){s, strlen(s)}; }

/* The code points Python's str.isspace() accepts, which str.strip() removes:
 * ASCII tab..CR, the four information separators, space, NEL, NBSP, and the
 * Unicode space separators and line/paragraph separators. */
static bool py_isspace(uint32_t cp)
{
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Python's s.strip(): whitespace off both ends. Bytes that are not valid UTF-8
 * are never whitespace, so trimming stops at them. */
static span py_strip(span s)
{
    const uint8_t *u = (const uint8_t *)s.p;
    size_t a = 0, b = s.n;
    while (a < b) {
        uint32_t cp;
        int len = fg_utf8_decode(u + a, b - a, &cp);
        if (len == 0 || !py_isspace(cp)) break;
        a += (size_t)len;
    }
    while (b > a) {
        /* The last code point starts at most 3 continuation bytes back. */
        size_t start = b - 1;
        while (start > a && b - start < 4 && (u[start] & 0xC0) == 0x80) start--;
        uint32_t cp;
        int len = fg_utf8_decode(u + start, b - start, &cp);
        if (len == 0 || (size_t)len != b - start || !py_isspace(cp)) break;
        b = start;
    }
    return (span){s.p + a, b - a};
}

/* Python's s.lstrip('\n') / s.rstrip('\n'). */
static span lstrip_nl(span s)
{
    while (s.n && s.p[0] == '\n') s.p++, s.n--;
    return s;
}

static span rstrip_nl(span s)
{
    while (s.n && s.p[s.n - 1] == '\n') s.n--;
    return s;
}

/* Finds sep in s: the offset of its first occurrence (last if from_end), or
 * SIZE_MAX. Contents may hold any bytes, so this does not use strstr. */
static size_t span_find(span s, const char *sep, bool from_end)
{
    size_t k = strlen(sep);
    if (k > s.n) return SIZE_MAX;
    size_t found = SIZE_MAX;
    for (size_t i = 0; i + k <= s.n; i++) {
        if (memcmp(s.p + i, sep, k) == 0) {
            found = i;
            if (!from_end) break;
        }
    }
    return found;
}

/* Python's s.split(sep)[-1]: the text after the last sep, or all of s. */
static span after_last(span s, const char *sep)
{
    size_t at = span_find(s, sep, true);
    if (at == SIZE_MAX) return s;
    size_t skip = at + strlen(sep);
    return (span){s.p + skip, s.n - skip};
}

/* Python's s.split(sep)[0]: the text before the first sep, or all of s. */
static span before_first(span s, const char *sep)
{
    size_t at = span_find(s, sep, false);
    return at == SIZE_MAX ? s : (span){s.p, at};
}

static bool span_starts(span s, const char *pre)
{
    size_t k = strlen(pre);
    return s.n >= k && memcmp(s.p, pre, k) == 0;
}

static bool span_ends(span s, const char *suf)
{
    size_t k = strlen(suf);
    return s.n >= k && memcmp(s.p + s.n - k, suf, k) == 0;
}

/* ---- The output buffer --------------------------------------------------- */

/* A growing string. An allocation failure is remembered and reported once at
 * the end, so the renderers can append without checking every call. What
 * came from the messages' contents (sb_content) is also recorded as spans,
 * so that the tokenizer can keep control-token text in it from becoming
 * control tokens; everything else is the template's markup. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
    fg_tok_span *sp; /* (n_sp) content ranges of p, ascending, adjacent ones merged */
    size_t n_sp, cap_sp;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n)
{
    if (b->oom || n == 0) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_puts(sbuf *b, const char *s)
{
    if (s) sb_putn(b, s, strlen(s));
}

static void sb_span(sbuf *b, span s) { sb_putn(b, s.p, s.n); }

/* Appends text taken from a message's content. */
static void sb_content(sbuf *b, span s)
{
    if (b->oom || s.n == 0) return;
    size_t at = b->len;
    sb_putn(b, s.p, s.n);
    if (b->oom) return;
    if (b->n_sp && b->sp[b->n_sp - 1].off + b->sp[b->n_sp - 1].len == at) {
        b->sp[b->n_sp - 1].len += s.n;
        return;
    }
    if (b->n_sp == b->cap_sp) {
        size_t cap = b->cap_sp ? 2 * b->cap_sp : 16;
        fg_tok_span *np = realloc(b->sp, cap * sizeof *np);
        if (!np) {
            b->oom = true;
            return;
        }
        b->sp = np;
        b->cap_sp = cap;
    }
    b->sp[b->n_sp++] = (fg_tok_span){at, s.n};
}

static void sb_content_s(sbuf *b, const char *s) { sb_content(b, span_of(s)); }

/* ---- Messages ------------------------------------------------------------ */

typedef enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_OTHER } role;

static role role_of(const fg_chat_msg *m)
{
    if (strcmp(m->role, "system") == 0) return ROLE_SYSTEM;
    if (strcmp(m->role, "user") == 0) return ROLE_USER;
    if (strcmp(m->role, "assistant") == 0) return ROLE_ASSISTANT;
    return ROLE_OTHER;
}

/* The error for a conversation the real template rejects: its own words
 * (what raise_exception says), and where. */
static fg_status tmpl_raise(const fg_chat_tmpl *t, const fg_chat_msg *msgs, size_t i, const char *what)
{
    return fg_err_set(FG_ERR_INVALID_ARG, "chat template %s: %s (message %zu has role '%s')",
                      fg_chat_name(t->kind), what, i, msgs[i].role);
}

/* The alternation rule of the Gemma and Mistral templates: after an optional
 * leading system message, even positions are user turns and odd positions
 * are not. Note it is exactly the Jinja test (role == 'user') != (i % 2 == 0),
 * so a non-user role at an odd position passes it. */
static bool breaks_alternation(const fg_chat_msg *m, size_t pos)
{
    return (role_of(m) == ROLE_USER) != (pos % 2 == 0);
}

#define ALTERNATE_MSG "Conversation roles must alternate user/assistant/user/assistant/..."
#define ALTERNATE_AFTER_SYS_MSG \
    "After the optional system message, conversation roles must alternate user/assistant/user/assistant/..."
#define ONLY_USER_ASSISTANT_MSG \
    "Only user and assistant roles are supported, with the exception of an initial optional system message!"

/* ---- ChatML (SmolLM2, Qwen2.5, Qwen3) ------------------------------------ */

/* A turn; plain says whether its text is a message's (false: the
 * template's own default system prompt). */
static void chatml_turn(sbuf *b, const char *role_name, span content, bool plain)
{
    sb_puts(b, "<|im_start|>");
    sb_puts(b, role_name);
    sb_puts(b, "\n");
    if (plain) sb_content(b, content);
    else sb_span(b, content);
    sb_puts(b, "<|im_end|>\n");
}

/* SmolLM2 and Qwen2.5 write their default system turn when the conversation
 * does not open with one; every message is then a turn as it stands. */
static fg_status render_chatml(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    if (t->default_system[0] && role_of(&m[0]) != ROLE_SYSTEM)
        chatml_turn(b, "system", span_of(t->default_system), false);
    for (size_t i = 0; i < n; i++) chatml_turn(b, m[i].role, span_of(m[i].content), true);
    if (gen) sb_puts(b, "<|im_start|>assistant\n");
    return FG_OK;
}

/* Qwen3 keeps the reasoning only of assistant turns after the last real user
 * query (a user message that is not a wrapped <tool_response>): those get a
 * <think> block, which is empty for the final turn if it had no reasoning.
 * Earlier assistant turns lose everything up to their last </think>. */
static fg_status render_qwen3(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    size_t last_query = n - 1;
    for (size_t k = n; k-- > 0;) {
        span c = span_of(m[k].content);
        if (role_of(&m[k]) == ROLE_USER &&
            !(span_starts(c, "<tool_response>") && span_ends(c, "</tool_response>"))) {
            last_query = k;
            break;
        }
    }
    for (size_t i = 0; i < n; i++) {
        span all = span_of(m[i].content);
        if (role_of(&m[i]) != ROLE_ASSISTANT) {
            chatml_turn(b, m[i].role, all, true);
            continue;
        }
        span content = all, reasoning = {all.p, 0};
        if (span_find(all, "</think>", false) != SIZE_MAX) {
            content = lstrip_nl(after_last(all, "</think>"));
            reasoning = lstrip_nl(after_last(rstrip_nl(before_first(all, "</think>")), "<think>"));
        }
        sb_puts(b, "<|im_start|>assistant\n");
        if (i > last_query && (i == n - 1 || reasoning.n > 0)) {
            sb_puts(b, "<think>\n");
            sb_content(b, rstrip_nl(lstrip_nl(reasoning)));
            sb_puts(b, "\n</think>\n\n");
            sb_content(b, lstrip_nl(content));
        } else {
            sb_content(b, content);
        }
        sb_puts(b, "<|im_end|>\n");
    }
    if (gen) {
        sb_puts(b, "<|im_start|>assistant\n");
        if (t->disable_thinking) sb_puts(b, "<think>\n\n</think>\n\n");
    }
    return FG_OK;
}

/* ---- Llama 3 ------------------------------------------------------------- */

static void llama3_turn(sbuf *b, const char *role_name, span content)
{
    sb_puts(b, "<|start_header_id|>");
    sb_puts(b, role_name);
    sb_puts(b, "<|end_header_id|>\n\n");
    sb_content(b, py_strip(content));
    sb_puts(b, "<|eot_id|>");
}

static fg_status render_llama3(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    sb_puts(b, t->bos);
    for (size_t i = 0; i < n; i++) llama3_turn(b, m[i].role, span_of(m[i].content));
    if (gen) sb_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return FG_OK;
}

/* Llama 3.1 and later always open with a system turn that carries the
 * knowledge cutoff and today's date, then the caller's system text. */
static fg_status render_llama31(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    char today[FG_CHAT_DATE_MAX];
    const char *date = t->date;
    if (!date[0]) {
        time_t now = time(NULL);
        struct tm tm;
        if (!localtime_r(&now, &tm) || !strftime(today, sizeof today, "%d %b %Y", &tm))
            return fg_err_set(FG_ERR_INVALID_ARG, "chat template llama3.1: cannot format today's date");
        date = today;
    }
    size_t first = 0;
    span system = {"", 0};
    if (role_of(&m[0]) == ROLE_SYSTEM) {
        system = py_strip(span_of(m[0].content));
        first = 1;
    }
    sb_puts(b, t->bos);
    sb_puts(b, "<|start_header_id|>system<|end_header_id|>\n\n"
               "Cutting Knowledge Date: December 2023\nToday Date: ");
    sb_puts(b, date);
    sb_puts(b, "\n\n");
    sb_content(b, system);
    sb_puts(b, "<|eot_id|>");
    for (size_t i = first; i < n; i++) llama3_turn(b, m[i].role, span_of(m[i].content));
    if (gen) sb_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return FG_OK;
}

/* ---- Gemma --------------------------------------------------------------- */

/* Gemma has no system role. Gemma 3 puts the system text, untrimmed, in front
 * of the first turn after it; Gemma 1 and 2 refuse it. The assistant is
 * "model". */
static fg_status render_gemma(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    size_t first = 0;
    const char *prefix = NULL;
    if (role_of(&m[0]) == ROLE_SYSTEM) {
        if (t->kind == FG_CHAT_GEMMA2) return tmpl_raise(t, m, 0, "System role not supported");
        prefix = m[0].content;
        first = 1;
    }
    sb_puts(b, t->bos);
    for (size_t i = first; i < n; i++) {
        if (breaks_alternation(&m[i], i - first)) return tmpl_raise(t, m, i, ALTERNATE_MSG);
        sb_puts(b, "<start_of_turn>");
        sb_puts(b, role_of(&m[i]) == ROLE_ASSISTANT ? "model" : m[i].role);
        sb_puts(b, "\n");
        if (prefix && i == first) {
            sb_content_s(b, prefix);
            sb_puts(b, "\n\n");
        }
        sb_content(b, py_strip(span_of(m[i].content)));
        sb_puts(b, "<end_of_turn>\n");
    }
    if (gen) sb_puts(b, "<start_of_turn>model\n");
    return FG_OK;
}

/* ---- GLM-4 --------------------------------------------------------------- */

/* glm-4-9b-chat: turns in order, each "<|role|>\ncontent"; a message with
 * empty content is left out entirely. */
static fg_status render_glm4(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    (void)t;
    sb_puts(b, "[gMASK]<sop>");
    for (size_t i = 0; i < n; i++) {
        if (!m[i].content[0]) continue;
        sb_puts(b, "<|");
        sb_puts(b, m[i].role);
        sb_puts(b, "|>\n");
        sb_content_s(b, m[i].content);
    }
    if (gen) sb_puts(b, "<|assistant|>");
    return FG_OK;
}

/* GLM-Z1-0414: every system message first, then the other turns with any
 * reasoning (up to the last </think>) cut and the rest stripped. */
static fg_status render_glm4_z1(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    (void)t;
    sb_puts(b, "[gMASK]<sop>");
    for (size_t i = 0; i < n; i++) {
        if (role_of(&m[i]) != ROLE_SYSTEM) continue;
        sb_puts(b, "<|system|>\n");
        sb_content_s(b, m[i].content);
    }
    for (size_t i = 0; i < n; i++) {
        role r = role_of(&m[i]);
        if (r == ROLE_SYSTEM) continue;
        sb_puts(b, r == ROLE_USER ? "<|user|>\n" : "<|assistant|>\n");
        sb_content(b, py_strip(after_last(span_of(m[i].content), "</think>")));
    }
    if (gen) sb_puts(b, "<|assistant|>\n<think>");
    return FG_OK;
}

/* ---- Mistral ------------------------------------------------------------- */

/* The Mistral templates have no generation prompt: the prompt ends with the
 * user's [/INST], which is where the answer starts. */

static const char *mistral_eos(const fg_chat_tmpl *t) { return t->eos ? t->eos : "</s>"; }

/* The "v1" template now shipped with Mistral-7B-Instruct v0.1/v0.2 and
 * Mixtral: an optional system message joins the first user turn. */
static fg_status render_mistral(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    (void)gen;
    size_t first = 0;
    const char *system = NULL;
    if (role_of(&m[0]) == ROLE_SYSTEM) {
        system = m[0].content;
        first = 1;
    }
    sb_puts(b, t->bos);
    for (size_t i = first; i < n; i++) {
        if (breaks_alternation(&m[i], i - first)) return tmpl_raise(t, m, i, ALTERNATE_AFTER_SYS_MSG);
        switch (role_of(&m[i])) {
        case ROLE_USER:
            sb_puts(b, " [INST] ");
            if (system && i == first) {
                sb_content_s(b, system);
                sb_puts(b, "\n\n");
            }
            sb_content_s(b, m[i].content);
            sb_puts(b, " [/INST]");
            break;
        case ROLE_ASSISTANT:
            sb_puts(b, " ");
            sb_content_s(b, m[i].content);
            sb_puts(b, mistral_eos(t));
            break;
        default:
            return tmpl_raise(t, m, i, ONLY_USER_ASSISTANT_MSG);
        }
    }
    return FG_OK;
}

/* The original v0.1/v0.2 template: strict alternation from the first message,
 * so a system message is always an error. */
static fg_status render_mistral_legacy(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen,
                                       sbuf *b)
{
    (void)gen;
    sb_puts(b, t->bos);
    for (size_t i = 0; i < n; i++) {
        if (breaks_alternation(&m[i], i)) return tmpl_raise(t, m, i, ALTERNATE_MSG);
        switch (role_of(&m[i])) {
        case ROLE_USER:
            sb_puts(b, "[INST] ");
            sb_content_s(b, m[i].content);
            sb_puts(b, " [/INST]");
            break;
        case ROLE_ASSISTANT:
            sb_content_s(b, m[i].content);
            sb_puts(b, mistral_eos(t));
            break;
        default:
            return tmpl_raise(t, m, i, "Only user and assistant roles are supported!");
        }
    }
    return FG_OK;
}

/* v3 (Mistral-7B-Instruct-v0.3, Large 2407) and v3-tekken (Nemo): the
 * alternation is checked over the whole conversation before anything is
 * written, and the system message goes into the *last* message, only if that
 * is a user turn. v3 pads [INST] and trims answers; tekken does neither. */
static fg_status render_mistral_v3(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    (void)gen;
    bool tekken = t->kind == FG_CHAT_MISTRAL_V3_TEKKEN;
    size_t first = 0;
    const char *system = NULL;
    if (role_of(&m[0]) == ROLE_SYSTEM) {
        system = m[0].content;
        first = 1;
    }
    for (size_t i = first; i < n; i++)
        if (breaks_alternation(&m[i], i - first)) return tmpl_raise(t, m, i, ALTERNATE_AFTER_SYS_MSG);
    sb_puts(b, t->bos);
    for (size_t i = first; i < n; i++) {
        switch (role_of(&m[i])) {
        case ROLE_USER:
            sb_puts(b, tekken ? "[INST]" : "[INST] ");
            if (system && i == n - 1) {
                sb_content_s(b, system);
                sb_puts(b, "\n\n");
            }
            sb_content_s(b, m[i].content);
            sb_puts(b, "[/INST]");
            break;
        case ROLE_ASSISTANT:
            if (tekken) {
                sb_content_s(b, m[i].content);
            } else {
                sb_puts(b, " ");
                sb_content(b, py_strip(span_of(m[i].content)));
            }
            sb_puts(b, mistral_eos(t));
            break;
        default:
            return tmpl_raise(t, m, i, ONLY_USER_ASSISTANT_MSG);
        }
    }
    return FG_OK;
}

/* v7 (Large 2411): a real system turn, wherever it appears; no alternation. */
static fg_status render_mistral_v7(const fg_chat_tmpl *t, const fg_chat_msg *m, size_t n, bool gen, sbuf *b)
{
    (void)gen;
    sb_puts(b, t->bos);
    for (size_t i = 0; i < n; i++) {
        switch (role_of(&m[i])) {
        case ROLE_USER:
            sb_puts(b, "[INST] ");
            sb_content_s(b, m[i].content);
            sb_puts(b, "[/INST]");
            break;
        case ROLE_SYSTEM:
            sb_puts(b, "[SYSTEM_PROMPT] ");
            sb_content_s(b, m[i].content);
            sb_puts(b, "[/SYSTEM_PROMPT]");
            break;
        default:
            sb_puts(b, " ");
            sb_content_s(b, m[i].content);
            sb_puts(b, mistral_eos(t));
            break;
        }
    }
    return FG_OK;
}

/* ---- Applying ------------------------------------------------------------ */

typedef fg_status (*render_fn)(const fg_chat_tmpl *, const fg_chat_msg *, size_t, bool, sbuf *);

static const render_fn renderers[FG_CHAT_KIND_COUNT] = {
    [FG_CHAT_CHATML] = render_chatml,
    [FG_CHAT_QWEN3] = render_qwen3,
    [FG_CHAT_LLAMA3] = render_llama3,
    [FG_CHAT_LLAMA31] = render_llama31,
    [FG_CHAT_GEMMA] = render_gemma,
    [FG_CHAT_GEMMA2] = render_gemma,
    [FG_CHAT_GLM4] = render_glm4,
    [FG_CHAT_GLM4_Z1] = render_glm4_z1,
    [FG_CHAT_MISTRAL] = render_mistral,
    [FG_CHAT_MISTRAL_LEGACY] = render_mistral_legacy,
    [FG_CHAT_MISTRAL_V3] = render_mistral_v3,
    [FG_CHAT_MISTRAL_V3_TEKKEN] = render_mistral_v3,
    [FG_CHAT_MISTRAL_V7] = render_mistral_v7,
};

fg_status fg_chat_apply_spans(const fg_chat_tmpl *t, const fg_chat_msg *msgs, size_t n_msgs,
                              bool add_generation_prompt, char **out, fg_tok_span **spans, size_t *n_spans)
{
    if (!t || !out || (n_msgs && !msgs))
        return fg_err_set(FG_ERR_INVALID_ARG, "fg_chat_apply: NULL argument");
    *out = NULL;
    if (spans) *spans = NULL, *n_spans = 0;
    if ((unsigned)t->kind >= FG_CHAT_KIND_COUNT)
        return fg_err_set(FG_ERR_INVALID_ARG, "fg_chat_apply: template kind %d is out of range",
                          (int)t->kind);
    if (n_msgs == 0)
        return fg_err_set(FG_ERR_INVALID_ARG, "chat template %s: the conversation has no messages",
                          fg_chat_name(t->kind));
    for (size_t i = 0; i < n_msgs; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return fg_err_set(FG_ERR_INVALID_ARG, "chat message %zu has no %s", i,
                              msgs[i].role ? "content" : "role");
        /* Templates differ on other roles (tool, ipython, observation): some
         * render them, some drop them, some raise. forge has no tool calls,
         * so it refuses them everywhere rather than guess. */
        if (role_of(&msgs[i]) == ROLE_OTHER)
            return fg_err_set(FG_ERR_INVALID_ARG,
                              "chat message %zu has role '%s'; the roles are system, user and assistant", i,
                              msgs[i].role);
    }
    sbuf b = {0};
    fg_status st = renderers[t->kind](t, msgs, n_msgs, add_generation_prompt, &b);
    if (st == FG_OK && !b.p && !b.oom) {
        /* Every template writes something, but an empty prompt is still a string. */
        b.p = calloc(1, 1);
        b.oom = !b.p;
    }
    if (st == FG_OK && b.oom)
        st = fg_err_set(FG_ERR_NOMEM, "chat template %s: out of memory", fg_chat_name(t->kind));
    if (st != FG_OK) {
        free(b.p);
        free(b.sp);
        return st;
    }
    *out = b.p;
    if (spans) {
        *spans = b.sp;
        *n_spans = b.n_sp;
    } else {
        free(b.sp);
    }
    return FG_OK;
}

fg_status fg_chat_apply(const fg_chat_tmpl *t, const fg_chat_msg *msgs, size_t n_msgs,
                        bool add_generation_prompt, char **out)
{
    return fg_chat_apply_spans(t, msgs, n_msgs, add_generation_prompt, out, NULL, NULL);
}

/* ---- Detection ----------------------------------------------------------- */

/* The source is not NUL-terminated, so markers are searched within len. */
static bool has(span src, const char *marker) { return span_find(src, marker, false) != SIZE_MAX; }

/* Reads a Jinja string literal one byte at a time: s.p[*i] is inside the
 * literal, which opened with quote q. Returns the next byte of the literal's
 * value, or -1 at the closing quote or the end of the source. Jinja decodes
 * literals with Python's unicode-escape; the escapes chat templates use are
 * understood here, and any other keeps its backslash, as Python does. */
static int lit_next(span s, size_t *i, char q)
{
    if (*i >= s.n || s.p[*i] == q) return -1;
    char c = s.p[(*i)++];
    if (c != '\\' || *i >= s.n) return (unsigned char)c;
    static const char from[] = "ntr\\'\"", to[] = "\n\t\r\\'\"";
    const char *hit = s.p[*i] ? strchr(from, s.p[*i]) : NULL;
    if (!hit) return '\\';
    (*i)++;
    return (unsigned char)to[hit - from];
}

/* Copies into out the default system prompt of a ChatML template: a literal
 * system turn "<|im_start|>system\n...<|im_end|>" whose text is part of the
 * literal itself (the turn built from the caller's message is "...system\n'
 * + messages[0]['content']" and ends the literal first). The turn may sit in
 * a quoted Jinja string, with "\n" as a real newline or an escape, or in the
 * template's raw text. out is "" if there is none. */
static fg_status chatml_default_system(span src, char *out, size_t cap)
{
    static const char head[] = "<|im_start|>system";
    static const char tail[] = "<|im_end|>";
    size_t pos = 0;
    while (pos < src.n) {
        size_t rel = span_find((span){src.p + pos, src.n - pos}, head, false);
        if (rel == SIZE_MAX) break;
        size_t h = pos + rel;
        pos = h + 1;
        char q = h > 0 ? src.p[h - 1] : 0;
        bool quoted = q == '\'' || q == '"';
        size_t i = h + sizeof head - 1, n = 0;
        bool ok = false;
        int c = quoted ? lit_next(src, &i, q) : (i < src.n ? (unsigned char)src.p[i++] : -1);
        if (c != '\n') continue;
        for (;;) {
            if (quoted) {
                c = lit_next(src, &i, q);
            } else {
                if (i + 1 < src.n && src.p[i] == '{' && (src.p[i + 1] == '{' || src.p[i + 1] == '%'))
                    c = -1;
                else
                    c = i < src.n ? (unsigned char)src.p[i++] : -1;
            }
            if (c < 0) break;
            if (n + 1 >= cap)
                return fg_err_set(FG_ERR_UNSUPPORTED,
                                  "chat template: the default system prompt is longer than %zu bytes",
                                  cap - 1);
            out[n++] = (char)c;
            if (n >= sizeof tail - 1 && memcmp(out + n - (sizeof tail - 1), tail, sizeof tail - 1) == 0) {
                n -= sizeof tail - 1;
                ok = true;
                break;
            }
        }
        if (ok) {
            out[n] = 0;
            return FG_OK;
        }
    }
    out[0] = 0;
    return FG_OK;
}

/* The Llama 3.1 templates' fallback date: {%- set date_string = "26 Jul 2024" %}.
 * A template that asks strftime_now first (3.2) dates the prompt today. */
static void llama31_date(span src, char *out, size_t cap)
{
    if (has(src, "strftime_now")) {
        out[0] = 0;
        return;
    }
    static const char key[] = "date_string = \"";
    size_t at = span_find(src, key, false);
    snprintf(out, cap, "%s", LLAMA31_DATE);
    if (at == SIZE_MAX) return;
    size_t i = at + sizeof key - 1, n = 0;
    while (i < src.n && src.p[i] != '"' && n + 1 < cap) out[n++] = src.p[i++];
    if (i < src.n && src.p[i] == '"')
        out[n] = 0;
    else
        snprintf(out, cap, "%s", LLAMA31_DATE);
}

/* Which kind a Jinja source is, by its markers; -1 if none. */
static int kind_of_source(span s)
{
    if (has(s, "<|im_start|>")) {
        /* Phi-4 wraps ChatML roles in <|im_sep|>: not ChatML as written here. */
        if (has(s, "<|im_sep|>")) return -1;
        return has(s, "last_query_index") ? FG_CHAT_QWEN3 : FG_CHAT_CHATML;
    }
    if (has(s, "<|start_header_id|>"))
        return has(s, "Cutting Knowledge Date") ? FG_CHAT_LLAMA31 : FG_CHAT_LLAMA3;
    if (has(s, "<start_of_turn>"))
        return has(s, "System role not supported") ? FG_CHAT_GEMMA2 : FG_CHAT_GEMMA;
    if (has(s, "[gMASK]")) return has(s, "</think>") && has(s, "metadata") ? FG_CHAT_GLM4_Z1 : FG_CHAT_GLM4;
    if (has(s, "[INST]")) {
        if (has(s, "<<SYS>>")) return -1; /* Llama 2, not Mistral */
        if (has(s, "[SYSTEM_PROMPT]")) return FG_CHAT_MISTRAL_V7;
        if (has(s, "\"[INST]\" +") || has(s, "'[INST]' +")) return FG_CHAT_MISTRAL_V3_TEKKEN;
        if (has(s, "\"[INST] \" +")) return FG_CHAT_MISTRAL_V3;
        if (has(s, "' [INST] '")) return FG_CHAT_MISTRAL;
        if (has(s, "'[INST] ' + message['content'] + ' [/INST]'")) return FG_CHAT_MISTRAL_LEGACY;
        return FG_CHAT_MISTRAL;
    }
    return -1;
}

/* Which kind an architecture implies when the file has no template; -1 if
 * none. "llama" alone covers Llama 2, Llama 3 and Mistral, so only a Llama 3
 * BOS token settles it. */
static int kind_of_arch(const char *arch, const char *bos)
{
    static const struct {
        const char *arch;
        fg_chat_kind kind;
    } table[] = {
        {"gemma", FG_CHAT_GEMMA},   {"gemma2", FG_CHAT_GEMMA},   {"gemma3", FG_CHAT_GEMMA},
        {"gemma3n", FG_CHAT_GEMMA}, {"qwen2", FG_CHAT_CHATML},   {"qwen2moe", FG_CHAT_CHATML},
        {"qwen3", FG_CHAT_QWEN3},   {"qwen3moe", FG_CHAT_QWEN3}, {"chatglm", FG_CHAT_GLM4},
        {"glm4", FG_CHAT_GLM4},
    };
    if (!arch) return -1;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(arch, table[i].arch) == 0) return (int)table[i].kind;
    if (strcmp(arch, "llama") == 0 && bos && strcmp(bos, "<|begin_of_text|>") == 0) return FG_CHAT_LLAMA3;
    return -1;
}

fg_status fg_chat_detect(const char *src, size_t len, const char *arch, const char *bos, fg_chat_tmpl *out)
{
    if (!out || (len && !src)) return fg_err_set(FG_ERR_INVALID_ARG, "fg_chat_detect: NULL argument");
    span s = {src ? src : "", src ? len : 0};
    int kind = s.n ? kind_of_source(s) : -1;
    if (kind >= 0) {
        tmpl_init(out, (fg_chat_kind)kind);
        out->bos_in_template = has(s, "bos_token");
        if (kind == FG_CHAT_CHATML)
            FG_TRY(chatml_default_system(s, out->default_system, sizeof out->default_system));
        if (kind == FG_CHAT_LLAMA31) llama31_date(s, out->date, sizeof out->date);
        return FG_OK;
    }
    kind = kind_of_arch(arch, bos);
    if (kind >= 0) {
        tmpl_init(out, (fg_chat_kind)kind);
        return FG_OK;
    }
    char list[512];
    return fg_err_set(FG_ERR_NOT_FOUND,
                      "the model's chat template is %s and architecture '%s' implies none; "
                      "use --chat-template NAME (%s)",
                      s.n ? "none forge implements" : "missing", arch ? arch : "(none)",
                      name_list(list, sizeof list));
}
