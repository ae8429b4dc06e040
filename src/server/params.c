/*
 * params.c — a generation request's body parsed into an srv_gen_spec: the
 * prompts (a completion's strings or token ids, a chat's messages through
 * the model's template) and every other parameter, each checked, a bad one
 * a 400 naming it.
 *
 * Sampling defaults are OpenAI's (temperature 1, top_p 1, no top-k, no
 * min-p), not llama.cpp's; logprobs are the model's raw log-softmax, as
 * vLLM reports them. A seed given with n > 1 seeds choice i with seed + i,
 * so the choices differ and the whole response is reproducible. Seeds take
 * the whole 64-bit range, read from the body's digits (cJSON keeps numbers
 * as doubles, exact only to 2^53).
 *
 * Text: a body must be UTF-8 without U+0000 (cJSON would cut a string
 * there) and without raw control characters in strings; anything else is a
 * 400 before parsing. Chat messages are tokenized so that only the
 * template's markup becomes control tokens; a raw completion prompt is
 * tokenized with special-token parsing on, as llama-server does, so that a
 * caller writing its own template gets its control tokens.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/routes.h"

enum { MAX_N = 64 }; /* choices per prompt */

/* ---- Prompts ------------------------------------------------------------------------------------ */

void srv_spec_free(srv_gen_spec *g)
{
    for (int i = 0; i < g->n_prompts; i++) {
        free(g->prompts[i].ids);
        free(g->prompts[i].echo);
    }
}

bool srv_token_array(srv_routes *r, const cJSON *a, srv_tokens *t, srv_response *out)
{
    int n = cJSON_GetArraySize(a);
    t->ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *t->ids);
    if (!t->ids) {
        srv_error(out, 500, NULL, "out of memory");
        return false;
    }
    t->n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a)
    {
        if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < 0 ||
            x->valuedouble >= r->n_vocab) {
            srv_error(out, 400, "prompt", "prompt token %zu is not a token id in 0..%d", t->n, r->n_vocab - 1);
            return false;
        }
        t->ids[t->n++] = (int32_t)x->valuedouble;
    }
    return true;
}

static bool text_tokens(srv_routes *r, const char *text, srv_tokens *t, srv_response *out)
{
    if (fg_model_tokenize(r->m, text, strlen(text), true, true, &t->ids, &t->n) != FG_OK) {
        srv_error(out, 400, "prompt", "cannot tokenize the prompt: %s", fg_last_error());
        return false;
    }
    return true;
}

/* The choice bound: one request becomes at most max_choices engine
 * requests. */
bool srv_check_choices(srv_routes *r, int prompts, int n, srv_response *out)
{
    if ((int64_t)prompts * n <= r->max_choices) return true;
    srv_error(out, 413, "n", "this request asks for %d choices (%d prompts x n = %d), over the limit of %d a request "
                             "(forge serve --max-choices); send fewer prompts or a smaller n",
              prompts * n, prompts, n, r->max_choices);
    return false;
}

/* echo: the prompt as text, a string as given and token ids as they
 * decode (as vLLM echoes them). */
static bool keep_echo(srv_routes *r, const char *text, srv_tokens *t, srv_response *out)
{
    if (text) t->echo = strdup(text);
    else if (fg_model_detokenize(r->m, t->ids, t->n, false, &t->echo) != FG_OK) t->echo = NULL;
    if (!t->echo) srv_error(out, 500, NULL, "out of memory");
    return t->echo != NULL;
}

/* One prompt of /v1/completions: a string or an array of token ids. */
static bool parse_one_prompt(srv_routes *r, const cJSON *x, const srv_gen_spec *g, srv_tokens *t, srv_response *out)
{
    bool text = cJSON_IsString(x);
    if (!(text ? text_tokens(r, x->valuestring, t, out) : srv_token_array(r, x, t, out))) return false;
    return !g->echo || keep_echo(r, text ? x->valuestring : NULL, t, out);
}

/* /v1/completions: a string, an array of strings, an array of token ids,
 * or an array of arrays of token ids. */
bool srv_parse_prompt(srv_routes *r, const cJSON *p, srv_gen_spec *g, srv_response *out)
{
    if (!p) {
        srv_error(out, 400, "prompt", "'prompt' is required");
        return false;
    }
    if (cJSON_IsString(p)) {
        g->n_prompts = 1;
        return parse_one_prompt(r, p, g, &g->prompts[0], out);
    }
    if (!cJSON_IsArray(p) || cJSON_GetArraySize(p) == 0) {
        srv_error(out, 400, "prompt", "'prompt' must be a string, an array of strings or an array of token ids");
        return false;
    }
    const cJSON *first = cJSON_GetArrayItem(p, 0);
    if (cJSON_IsNumber(first)) {
        g->n_prompts = 1;
        return parse_one_prompt(r, p, g, &g->prompts[0], out);
    }
    if (cJSON_GetArraySize(p) > SRV_MAX_PROMPTS) {
        srv_error(out, 400, "prompt", "at most %d prompts in one request", SRV_MAX_PROMPTS);
        return false;
    }
    if (!srv_check_choices(r, cJSON_GetArraySize(p), g->n, out)) return false; /* before tokenizing them */
    const cJSON *x;
    cJSON_ArrayForEach(x, p)
    {
        if (!(cJSON_IsString(x) && cJSON_IsString(first)) && !(cJSON_IsArray(x) && cJSON_IsArray(first))) {
            srv_error(out, 400, "prompt", "'prompt' mixes types: give strings, or arrays of token ids");
            return false;
        }
        if (!parse_one_prompt(r, x, g, &g->prompts[g->n_prompts++], out)) return false;
    }
    return true;
}

/* ---- Chat messages ---------------------------------------------------------------------------- */

/* A message's content: a string, or an array of {"type": "text", "text"}
 * parts, or null (an empty assistant turn). Malloc'd. Parts are joined with
 * "\n" between them, as vLLM (for templates that take string content, which
 * forge's all do) and llama-server (concat_typed_text) join them; the join
 * is one pass over the parts, linear in their total length. */
static char *message_content(const cJSON *c, int i, srv_response *out)
{
    if (!c || cJSON_IsNull(c)) return strdup("");
    if (cJSON_IsString(c)) return strdup(c->valuestring);
    if (!cJSON_IsArray(c)) {
        srv_error(out, 400, "messages", "messages[%d].content must be a string or an array of text parts", i);
        return NULL;
    }
    fg_buf b = {0};
    bool first = true, ok = fg_buf_append(&b, "", 0);
    const cJSON *part;
    cJSON_ArrayForEach(part, c)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 || !cJSON_IsString(text)) {
            free(b.s);
            srv_error(out, 400, "messages", "messages[%d].content: only parts of type 'text' are supported", i);
            return NULL;
        }
        if (ok && !first) ok = fg_buf_append(&b, "\n", 1);
        if (ok) ok = fg_buf_append(&b, text->valuestring, strlen(text->valuestring));
        first = false;
    }
    if (!ok) {
        free(b.s);
        return NULL; /* the caller answers out of memory */
    }
    return b.s;
}

/* Renders messages with the model's chat template and tokenizes them. */
bool srv_parse_messages(srv_routes *r, const cJSON *msgs, bool add_generation_prompt, srv_tokens *t,
                        srv_response *out)
{
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        srv_error(out, 400, "messages", "'messages' must be a non-empty array");
        return false;
    }
    if (!r->chat) {
        srv_error(out, 400, "messages", "this model has no usable chat template: %s", r->chat_error);
        return false;
    }
    int n = cJSON_GetArraySize(msgs);
    fg_chat_msg *m = calloc((size_t)n, sizeof *m);
    bool ok = m != NULL;
    for (int i = 0; ok && i < n; i++) {
        const cJSON *msg = cJSON_GetArrayItem(msgs, i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        if (!cJSON_IsObject(msg) || !cJSON_IsString(role)) {
            srv_error(out, 400, "messages", "messages[%d] must be an object with a string 'role'", i);
            ok = false;
            break;
        }
        const char *rs = role->valuestring;
        if (strcmp(rs, "developer") == 0) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant")) {
            srv_error(out, 400, "messages", "messages[%d].role '%.64s' is not supported: use system, user or assistant",
                      i, role->valuestring);
            ok = false;
            break;
        }
        m[i].role = rs;
        m[i].content = message_content(cJSON_GetObjectItemCaseSensitive(msg, "content"), i, out);
        if (!m[i].content) ok = false;
    }
    /* The template's markup becomes control tokens; the messages' text
     * never does, whatever it spells. */
    if (ok && fg_chat_tokenize(r->chat, m, (size_t)n, add_generation_prompt, &t->ids, &t->n) != FG_OK) {
        srv_error(out, 400, "messages", "%s", fg_last_error());
        ok = false;
    }
    for (int i = 0; m && i < n; i++) free((char *)m[i].content);
    free(m);
    if (!ok && out->status == 0) srv_error(out, 500, NULL, "out of memory");
    return ok;
}

/* ---- The other parameters --------------------------------------------------------------------- */

static bool parse_stop(const cJSON *s, srv_gen_spec *g, srv_response *out)
{
    if (!s || cJSON_IsNull(s)) return true;
    if (cJSON_IsString(s)) {
        if (!*s->valuestring) return true; /* "" stops nothing */
        g->stops[g->n_stops++] = s->valuestring;
        return true;
    }
    if (!cJSON_IsArray(s) || cJSON_GetArraySize(s) > FG_REQUEST_MAX_STOPS) {
        srv_error(out, 400, "stop", "'stop' must be a string or an array of at most %d strings", FG_REQUEST_MAX_STOPS);
        return false;
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, s)
    {
        if (!cJSON_IsString(x)) {
            srv_error(out, 400, "stop", "'stop' must be a string or an array of strings");
            return false;
        }
        if (strlen(x->valuestring) > FG_REQUEST_MAX_STOP_LEN) {
            srv_error(out, 400, "stop", "a stop string is longer than %d bytes", FG_REQUEST_MAX_STOP_LEN);
            return false;
        }
        if (*x->valuestring) g->stops[g->n_stops++] = x->valuestring;
    }
    return true;
}

/* seed: an integer in [0, 2^64 - 1], or -1 for a fresh one (llama.cpp's
 * convention). The digits are read from the body, since cJSON's double
 * would round seeds above 2^53 together; one written with a fraction or
 * exponent must be an integer a double holds exactly. */
static bool parse_seed(const cJSON *root, const char *body, size_t len, srv_gen_spec *g, srv_response *out)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "seed");
    if (!f || cJSON_IsNull(f)) return true;
    static const char range[] = "it must be an integer in [0, 18446744073709551615], or -1 for a fresh one";
    if (!cJSON_IsNumber(f)) {
        srv_error(out, 400, "seed", "'seed' must be a number: %s", range);
        return false;
    }
    const char *v = "";
    size_t vn = 0, digits = 0;
    bool raw = srv_body_member(body, len, "seed", &v, &vn);
    while (raw && digits < vn && v[digits] >= '0' && v[digits] <= '9') digits++;
    if (raw && vn > 0 && digits == vn) {
        char buf[32];
        unsigned long long x = 0;
        errno = 0;
        if (vn < sizeof buf) {
            memcpy(buf, v, vn);
            buf[vn] = 0;
            x = strtoull(buf, NULL, 10);
        }
        if (vn >= sizeof buf || errno == ERANGE) {
            srv_error(out, 400, "seed", "'seed' is %.*s, out of range: %s", (int)(vn < 40 ? vn : 40), v, range);
            return false;
        }
        g->sampling.seed = x;
        g->seeded = true;
        return true;
    }
    double x = f->valuedouble;
    if (x == -1) return true;
    if (!isfinite(x) || x != floor(x) || x < 0 || x > 9007199254740992.0) {
        srv_error(out, 400, "seed", "'seed' is %.17g: %s%s", x, range,
                  x > 0 && x == floor(x) ? " (above 2^53 write it with its digits, without a fraction or exponent)" : "");
        return false;
    }
    g->sampling.seed = (uint64_t)x;
    g->seeded = true;
    return true;
}

/* response_format: forge has no constrained sampling yet, so only "text"
 * (what every request gets) is accepted; json_object and json_schema are
 * refused rather than ignored, so no client takes free text for JSON. */
static bool parse_response_format(const cJSON *root, srv_response *out)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    if (!f || cJSON_IsNull(f)) return true;
    const cJSON *type = cJSON_IsObject(f) ? cJSON_GetObjectItemCaseSensitive(f, "type") : NULL;
    if (!cJSON_IsString(type)) {
        srv_error(out, 400, "response_format", "'response_format' must be an object with a string 'type', such as "
                                               "{\"type\": \"text\"}");
        return false;
    }
    const char *t = type->valuestring;
    if (strcmp(t, "text") == 0) return true;
    if (strcmp(t, "json_object") == 0 || strcmp(t, "json_schema") == 0) {
        srv_error(out, 400, "response_format", "response_format type '%s' is not supported yet: forge has no "
                                               "structured-output (constrained) sampling; use {\"type\": \"text\"}", t);
        return false;
    }
    srv_error(out, 400, "response_format", "response_format type '%.64s' is unknown: the types are text, json_object "
                                           "and json_schema, and forge supports text", t);
    return false;
}

/* logit_bias, as OpenAI's: {"token id": bias in [-100, 100]}, at most
 * FG_MAX_LOGIT_BIAS entries; a key must be a token id written in decimal
 * digits. The engine adds the biases to the logits before sampling (-100
 * in effect bans a token, +100 forces it). */
static bool parse_logit_bias(srv_routes *r, const cJSON *root, srv_gen_spec *g, srv_response *out)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "logit_bias");
    if (!f || cJSON_IsNull(f)) return true;
    if (!cJSON_IsObject(f)) {
        srv_error(out, 400, "logit_bias", "'logit_bias' must be an object mapping token ids to biases in [-100, 100]");
        return false;
    }
    int n = cJSON_GetArraySize(f);
    if (n > FG_MAX_LOGIT_BIAS) {
        srv_error(out, 400, "logit_bias", "'logit_bias' has %d entries, over the limit of %d", n, FG_MAX_LOGIT_BIAS);
        return false;
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, f)
    {
        const char *k = x->string;
        size_t digits = strspn(k, "0123456789");
        long long id = digits > 0 && digits <= 10 && !k[digits] ? strtoll(k, NULL, 10) : -1;
        if (id < 0 || id >= r->n_vocab) {
            srv_error(out, 400, "logit_bias", "'logit_bias' key '%.32s' is not a token id: keys are token ids in 0..%d",
                      k, r->n_vocab - 1);
            return false;
        }
        if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble)) {
            srv_error(out, 400, "logit_bias", "'logit_bias' of token %lld must be a number in [-100, 100]", id);
            return false;
        }
        if (x->valuedouble < -100 || x->valuedouble > 100) {
            srv_error(out, 400, "logit_bias", "'logit_bias' of token %lld is %g, out of range: it must be in [-100, 100]",
                      id, x->valuedouble);
            return false;
        }
        g->bias[g->n_bias++] = (fg_logit_bias){(int32_t)id, (float)x->valuedouble};
    }
    return true;
}

/* Everything but the prompt, which the route parses. body is the request's
 * text, for the seed's digits. */
bool srv_parse_params(srv_routes *r, const cJSON *root, const char *body, size_t len, srv_gen_spec *g,
                      srv_response *out)
{
    g->n = 1;
    g->sampling = fg_sampling_default();
    g->sampling.temperature = 1.0f; /* OpenAI's defaults */
    g->sampling.top_k = 0;
    g->sampling.top_p = 1.0f;
    g->sampling.min_p = 0.0f;
    double v;
    if (!srv_json_check_string(root, "model", out) || !srv_json_check_string(root, "user", out)) return false;
#define NUM(name, lo, hi, integer, dst)                                                \
    v = NAN;                                                                           \
    if (!srv_json_num(root, name, lo, hi, integer, &v, out)) return false;             \
    if (!isnan(v)) dst = v;
    double max_tokens = -1, max_completion = -1, top_k = 0;
    NUM("max_tokens", 0, 1 << 24, true, max_tokens)
    NUM("max_completion_tokens", 0, 1 << 24, true, max_completion)
    if (max_completion >= 0) max_tokens = max_completion;
    g->max_tokens = max_tokens > 0 ? (int32_t)max_tokens : 0;
    g->score_only = max_tokens == 0;
    NUM("temperature", 0, 100, false, g->sampling.temperature)
    NUM("top_p", 1e-9, 1, false, g->sampling.top_p)
    NUM("top_k", -1, 1 << 30, true, top_k)
    g->sampling.top_k = top_k < 0 ? 0 : (int32_t)top_k;
    NUM("min_p", 0, 1, false, g->sampling.min_p)
    NUM("presence_penalty", -2, 2, false, g->sampling.presence_penalty)
    NUM("frequency_penalty", -2, 2, false, g->sampling.frequency_penalty)
    NUM("repetition_penalty", 1e-6, 100, false, g->sampling.repeat_penalty)
    NUM("repeat_last_n", 0, 1 << 20, true, g->sampling.repeat_last_n)
    double n = 1;
    if (!parse_seed(root, body, len, g, out) || !parse_response_format(root, out)) return false;
    NUM("n", 1, MAX_N, true, n)
    g->n = (int)n;
    if (!srv_json_bool(root, "stream", &g->stream, out) || !srv_json_bool(root, "ignore_eos", &g->ignore_eos, out))
        return false;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) {
            srv_error(out, 400, "stream_options", "'stream_options' must be an object");
            return false;
        }
        if (!srv_json_bool(so, "include_usage", &g->include_usage, out)) return false;
        if (!g->stream) { /* as OpenAI and vLLM answer */
            srv_error(out, 400, "stream_options", "'stream_options' is only allowed with 'stream': true");
            return false;
        }
    }
    if (!parse_stop(cJSON_GetObjectItemCaseSensitive(root, "stop"), g, out)) return false;
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
    if (g->chat) {
        if (!srv_json_bool(root, "logprobs", &g->logprobs, out)) return false;
        double top = -1;
        NUM("top_logprobs", 0, FG_MAX_TOP_LOGPROBS, true, top)
        if (top >= 0 && !g->logprobs) {
            srv_error(out, 400, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
            return false;
        }
        g->top_logprobs = top > 0 ? (int)top : 0;
    } else if (lp && !cJSON_IsNull(lp)) {
        double top = -1;
        NUM("logprobs", 0, FG_MAX_TOP_LOGPROBS, true, top)
        g->logprobs = true;
        g->top_logprobs = (int)top;
    }
    /* Scoring: echo (completions) and vLLM's prompt_logprobs, which
     * max_tokens 0 needs, as lm-eval's local-completions sends it. */
    if (!g->chat && !srv_json_bool(root, "echo", &g->echo, out)) return false;
    double plp = -1;
    NUM("prompt_logprobs", 0, FG_MAX_TOP_LOGPROBS, true, plp)
    g->prompt_logprobs = (int)plp;
    if (g->prompt_logprobs >= 0 && g->stream) { /* as vLLM answers */
        srv_error(out, 400, "prompt_logprobs", "'prompt_logprobs' is not available with 'stream': true");
        return false;
    }
    if (g->score_only && !g->echo && g->prompt_logprobs < 0) {
        srv_error(out, 400, "max_tokens", "'max_tokens' 0 generates nothing: it scores the prompt, with 'echo' "
                                          "(/v1/completions) or 'prompt_logprobs'; otherwise it must be at least 1");
        return false;
    }
#undef NUM
    return parse_logit_bias(r, root, g, out);
}
