/*
 * render.c — the routes' answers in OpenAI's shapes (and vLLM's where
 * OpenAI has none): finish reasons, logprobs (chat's content list and
 * completions' parallel arrays, echo's prompt tokens first, vLLM's
 * prompt_logprobs), usage, a response's head, a job's status for
 * /v1/requests/{id}, and /tokenize's reply.
 *
 * Token texts are the tokens' bytes with special tokens rendered, made
 * valid UTF-8 (a token may be part of a character). Logprobs are the
 * model's raw log-softmax, as the engine keeps them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/routes.h"

/* ---- Finish reasons ----------------------------------------------------------------------------- */

const char *srv_finish_reason(fg_finish_reason f)
{
    switch (f) {
    case FG_FINISH_EOS:
    case FG_FINISH_STOP: return "stop";
    case FG_FINISH_LENGTH:
    case FG_FINISH_CONTEXT: return "length";
    case FG_FINISH_CANCELLED: return "abort";
    case FG_FINISH_ERROR: return "error";
    case FG_FINISH_NONE: break;
    }
    return NULL;
}

/* ---- Logprobs in OpenAI's two shapes --------------------------------------------------------- */

static char *token_text(srv_routes *r, int32_t tok, size_t *len)
{
    char *s = NULL;
    if (fg_model_detokenize(r->m, &tok, 1, true, &s) != FG_OK) s = strdup("");
    *len = s ? strlen(s) : 0;
    return s;
}

static cJSON *chat_lp_entry(srv_routes *r, int32_t tok, float lp)
{
    cJSON *o = cJSON_CreateObject();
    size_t n;
    char *s = token_text(r, tok, &n);
    srv_json_add_text(o, "token", s ? s : "", n);
    cJSON_AddNumberToObject(o, "logprob", lp);
    cJSON *b = cJSON_AddArrayToObject(o, "bytes");
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)s[i]));
    free(s);
    return o;
}

/* Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]} */
cJSON *srv_render_chat_logprobs(srv_routes *r, const fg_token_logprob *lp, size_t n)
{
    cJSON *o = cJSON_CreateObject(), *content = cJSON_AddArrayToObject(o, "content");
    for (size_t i = 0; i < n; i++) {
        cJSON *e = chat_lp_entry(r, lp[i].token, lp[i].logprob);
        cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
        for (int k = 0; k < lp[i].n_top; k++)
            cJSON_AddItemToArray(top, chat_lp_entry(r, lp[i].top_token[k], lp[i].top_logprob[k]));
        cJSON_AddItemToArray(content, e);
    }
    return o;
}

/* Completions: {"tokens", "token_logprobs", "top_logprobs": [{text: lp}],
 * "text_offset"}, filled by lp_add. */
cJSON *srv_render_lp_object(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddArrayToObject(o, "tokens");
    cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON_AddArrayToObject(o, "text_offset");
    return o;
}

/* Appends token tok to a completions logprobs object, with at most max_top
 * of lp's likeliest; lp NULL for a prompt's first token, which has no
 * context: its logprob and top_logprobs are null, as OpenAI and vLLM give
 * them with echo. *offset is the token's text_offset, then advanced. */
static void lp_add(srv_routes *r, cJSON *o, int32_t tok, const fg_token_logprob *lp, int max_top, size_t *offset)
{
    size_t len;
    char *s = token_text(r, tok, &len);
    char *c = srv_utf8_clean(s ? s : "", len);
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(o, "tokens"), cJSON_CreateString(c ? c : ""));
    free(c);
    free(s);
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(o, "token_logprobs"),
                         lp ? cJSON_CreateNumber(lp->logprob) : cJSON_CreateNull());
    cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(o, "text_offset"), cJSON_CreateNumber((double)*offset));
    *offset += len;
    cJSON *tops = cJSON_GetObjectItemCaseSensitive(o, "top_logprobs");
    if (!lp) {
        cJSON_AddItemToArray(tops, cJSON_CreateNull());
        return;
    }
    /* OpenAI: "the API will always return the logprob of the sampled
     * token, so there may be up to logprobs+1 elements"; vLLM puts it
     * first. So logprobs 0 gives the sampled token alone. */
    cJSON *top = cJSON_CreateObject();
    for (int k = -1; k < lp->n_top && k < max_top; k++) {
        size_t tl;
        char *ts = token_text(r, k < 0 ? lp->token : lp->top_token[k], &tl);
        char *tc = srv_utf8_clean(ts ? ts : "", tl);
        if (tc && !cJSON_GetObjectItemCaseSensitive(top, tc))
            cJSON_AddNumberToObject(top, tc, k < 0 ? lp->logprob : lp->top_logprob[k]);
        free(tc);
        free(ts);
    }
    cJSON_AddItemToArray(tops, top);
}

/* Appends generated tokens' logprobs. */
void srv_render_lp_add(srv_routes *r, cJSON *o, const fg_token_logprob *lp, size_t n, size_t *offset)
{
    for (size_t i = 0; i < n; i++) lp_add(r, o, lp[i].token, &lp[i], lp[i].n_top, offset);
}

/* The logprobs of a choice's prompt tokens after the first (n_prompt - 1
 * of them), malloc'd; *n is 0 until the engine has computed the prompt. */
static fg_token_logprob *prompt_lps(srv_routes *r, uint64_t id, size_t n_prompt, size_t *n)
{
    *n = 0;
    fg_token_logprob *lp = malloc((n_prompt > 1 ? n_prompt - 1 : 1) * sizeof *lp);
    if (lp && n_prompt > 1 && fg_request_prompt_logprobs(r->e, id, 0, lp, n_prompt - 1, n) != FG_OK) *n = 0;
    return lp;
}

/* echo with logprobs: the prompt's tokens first, each with at most
 * max_top of its likeliest. */
void srv_render_lp_add_prompt(srv_routes *r, cJSON *o, uint64_t id, const srv_tokens *t, int max_top,
                              size_t *offset)
{
    size_t n;
    fg_token_logprob *lp = prompt_lps(r, id, t->n, &n);
    lp_add(r, o, t->first, NULL, 0, offset);
    for (size_t k = 0; lp && k < n; k++) lp_add(r, o, lp[k].token, &lp[k], max_top, offset);
    free(lp);
}

/* vLLM's prompt_logprobs: [null, {"<id>": {"logprob", "rank",
 * "decoded_token"}, ...}, ...], an entry per prompt token (the first has
 * no context) holding that token and the max_top likeliest. rank is the
 * place among the likeliest (1 first); null for a prompt token outside
 * them, whose rank in the whole vocabulary forge does not compute. */
cJSON *srv_render_prompt_logprobs(srv_routes *r, uint64_t id, const srv_tokens *t, int max_top)
{
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, cJSON_CreateNull());
    size_t n;
    fg_token_logprob *lp = prompt_lps(r, id, t->n, &n);
    for (size_t k = 0; lp && k < n; k++) {
        cJSON *e = cJSON_CreateObject();
        for (int q = -1; q < lp[k].n_top && q < max_top; q++) {
            int32_t tok = q < 0 ? lp[k].token : lp[k].top_token[q];
            int rank = q + 1;
            for (int u = 0; q < 0 && u < lp[k].n_top && u < max_top; u++)
                if (lp[k].top_token[u] == tok && rank == 0) rank = u + 1;
            char key[16];
            snprintf(key, sizeof key, "%d", (int)tok);
            if (cJSON_GetObjectItemCaseSensitive(e, key)) continue;
            cJSON *v = cJSON_AddObjectToObject(e, key);
            cJSON_AddNumberToObject(v, "logprob", q < 0 ? lp[k].logprob : lp[k].top_logprob[q]);
            if (rank > 0) cJSON_AddNumberToObject(v, "rank", rank);
            else cJSON_AddNullToObject(v, "rank");
            size_t tl;
            char *ts = token_text(r, tok, &tl);
            srv_json_add_text(v, "decoded_token", ts ? ts : "", ts ? tl : 0);
            free(ts);
        }
        cJSON_AddItemToArray(a, e);
    }
    free(lp);
    return a;
}

fg_token_logprob *srv_gen_logprobs(srv_routes *r, uint64_t id, int32_t n_gen, size_t *n)
{
    *n = 0;
    fg_token_logprob *lp = malloc((size_t)(n_gen > 0 ? n_gen : 1) * sizeof *lp);
    if (lp && fg_request_logprobs(r->e, id, 0, lp, (size_t)n_gen, n) != FG_OK) *n = 0;
    return lp;
}

/* ---- Responses -------------------------------------------------------------------------------- */

cJSON *srv_render_usage(const srv_gen_spec *g, const srv_job *j, const fg_request_info *info)
{
    int64_t prompt = 0, gen = 0, cached = 0;
    for (int p = 0; p < g->n_prompts; p++) prompt += (int64_t)g->prompts[p].n;
    for (int i = 0; i < j->n; i++) {
        gen += info[i].n_gen;
        if (i % g->n == 0) cached += info[i].n_cached;
    }
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)gen);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + gen));
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(u, "prompt_tokens_details"), "cached_tokens", (double)cached);
    return u;
}

cJSON *srv_render_head(srv_routes *r, const srv_job *j, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", r->model_name);
    cJSON_AddStringToObject(o, "system_fingerprint", "forge-" FORGE_VERSION);
    return o;
}

static cJSON *info_json(const fg_request_info *in)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "state", fg_request_state_str(in->state));
    const char *f = srv_finish_reason(in->finish);
    if (f) cJSON_AddStringToObject(o, "finish_reason", f);
    else cJSON_AddNullToObject(o, "finish_reason");
    cJSON_AddNumberToObject(o, "prompt_tokens", in->n_prompt);
    cJSON_AddNumberToObject(o, "cached_tokens", in->n_cached);
    cJSON_AddNumberToObject(o, "completion_tokens", in->n_gen);
    cJSON_AddNumberToObject(o, "preemptions", in->n_preempted);
#define MS(name, v)                                                  \
    if ((v) >= 0) cJSON_AddNumberToObject(o, name, round((v) * 1000) / 1000); \
    else cJSON_AddNullToObject(o, name);
    MS("queue_time_ms", in->queue_ms)
    MS("time_to_first_token_ms", in->ttft_ms)
    MS("total_time_ms", in->total_ms)
#undef MS
    cJSON_AddNumberToObject(o, "tokens_per_second",
                            in->decode_ms_per_token > 0 ? round(1e6 / in->decode_ms_per_token) / 1000 : 0);
    if (in->error[0]) cJSON_AddStringToObject(o, "error", in->error);
    return o;
}

/* The job's state: the least advanced of its choices while any runs; once
 * all ended, failed or cancelled if any was, else finished. Under mu. */
cJSON *srv_render_job(srv_routes *r, const srv_job *j)
{
    fg_request_info *info = calloc(j->n > 0 ? (size_t)j->n : 1, sizeof *info);
    if (!info) return NULL;
    for (int i = 0; i < j->n; i++) {
        if (j->done) info[i] = j->fin[i];
        else if (fg_request_status(r->e, j->eng[i], &info[i]) != FG_OK) info[i].state = FG_REQUEST_CANCELLED;
    }
    fg_request_state s = FG_REQUEST_FINISHED;
    bool any_open = false;
    for (int i = 0; i < j->n; i++)
        if (!srv_state_ended(info[i].state) && (!any_open || info[i].state < s)) {
            s = info[i].state;
            any_open = true;
        }
    for (int i = 0; !any_open && i < j->n; i++)
        if (info[i].state == FG_REQUEST_FAILED || (info[i].state == FG_REQUEST_CANCELLED && s != FG_REQUEST_FAILED))
            s = info[i].state;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "object", "request");
    cJSON_AddNumberToObject(o, "created", (double)j->created);
    cJSON_AddStringToObject(o, "model", r->model_name);
    cJSON_AddStringToObject(o, "state", fg_request_state_str(s));
    /* The first choice's figures, with token counts summed over choices. */
    cJSON *first = info_json(&info[0]);
    int64_t gen = 0;
    for (int i = 0; i < j->n; i++) gen += info[i].n_gen;
    cJSON_ReplaceItemInObject(first, "completion_tokens", cJSON_CreateNumber((double)gen));
    const cJSON *x;
    cJSON_ArrayForEach(x, first)
    {
        if (strcmp(x->string, "state") != 0) cJSON_AddItemToObject(o, x->string, cJSON_Duplicate(x, true));
    }
    cJSON_Delete(first);
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; i < j->n; i++) {
        cJSON *c = info_json(&info[i]);
        cJSON_AddNumberToObject(c, "index", i);
        cJSON_AddItemToArray(choices, c);
    }
    free(info);
    return o;
}

/* {"tokens": [...], "count", "max_model_len"}, written straight into one
 * buffer: a tree of a few cJSON nodes per token took ~940 MB for the 2 M
 * tokens of an 8 MB text with pieces. */
char *srv_render_tokenize(srv_routes *r, const srv_tokens *t, bool pieces)
{
    fg_buf o = {0};
    bool ok = fg_buf_append(&o, "{\"tokens\":[", 11);
    char num[64];
    for (size_t i = 0; ok && i < t->n; i++) {
        int k = snprintf(num, sizeof num, pieces ? "%s{\"id\":%d,\"piece\":" : "%s%d", i ? "," : "", (int)t->ids[i]);
        ok = fg_buf_append(&o, num, (size_t)k);
        if (ok && pieces) {
            size_t n;
            char *s = token_text(r, t->ids[i], &n);
            char *c = srv_utf8_clean(s ? s : "", s ? n : 0);
            ok = c && srv_json_append_string(&o, c, strlen(c)) && fg_buf_append(&o, "}", 1);
            free(c);
            free(s);
        }
    }
    int k = snprintf(num, sizeof num, "],\"count\":%zu,\"max_model_len\":%d}", t->n, (int)r->ctx);
    if (ok) ok = fg_buf_append(&o, num, (size_t)k);
    if (!ok) {
        free(o.s);
        return NULL;
    }
    return o.s;
}
