/*
 * stream.c — a submitted job's output: waited for and answered whole, or
 * streamed as server-sent events (OpenAI's chunks, then "data: [DONE]").
 *
 * Both poll the engine (fg_request_poll, fg_request_wait in slices of
 * WAIT_SLICE_MS), checking between slices whether the client went away:
 * then the job ends and its engine requests are cancelled. A stream's
 * events are made as its connection reads them (srv_stream_read, on
 * http.c's thread for the connection). The job ends (srv_job_finish) when
 * the answer is built or the stream is freed.
 */
#include <stdlib.h>
#include <string.h>

#include "server/routes.h"

enum { WAIT_SLICE_MS = 100 }; /* how often a waiting route checks its client */

/* ---- Buffered ------------------------------------------------------------------------------------ */

/* Takes request id's new text into g, and its new token ids (so that the
 * next wait blocks until there is more). */
static void drain_text(fg_engine *e, uint64_t id, fg_buf *g)
{
    char buf[4096];
    int32_t toks[256];
    size_t n, nt;
    do {
        n = 0;
        if (fg_request_poll(e, id, NULL, 0, NULL, buf, sizeof buf, &n) == FG_OK && n) fg_buf_append(g, buf, n);
    } while (n == sizeof buf);
    while (fg_request_poll(e, id, toks, 256, &nt, NULL, 0, NULL) == FG_OK && nt == 256) {
    }
}

void srv_generate_buffered(srv_routes *r, const srv_gen_spec *g, srv_job *j, const srv_peer *peer,
                           srv_response *out)
{
    fg_buf *text = calloc((size_t)j->n, sizeof *text);
    fg_request_info *info = calloc((size_t)j->n, sizeof *info);
    bool gone = false;
    if (!text || !info) {
        free(text), free(info);
        srv_job_finish(r, j);
        srv_error(out, 500, NULL, "out of memory");
        return;
    }
    for (int i = 0; g->echo && i < j->n; i++) {
        const char *echo = g->prompts[i / g->n].echo;
        fg_buf_append(&text[i], echo, strlen(echo));
    }
    for (;;) {
        int open = -1;
        for (int i = 0; i < j->n; i++) {
            fg_request_status(r->e, j->eng[i], &info[i]); /* before the poll: once ended, the poll takes the rest */
            drain_text(r->e, j->eng[i], &text[i]);
            if (!srv_state_ended(info[i].state) && open < 0) open = i;
        }
        if (open < 0) break;
        if (peer && peer->gone(peer->ctx)) {
            gone = true;
            break;
        }
        fg_request_wait(r->e, j->eng[open], WAIT_SLICE_MS);
    }
    int failed = -1;
    for (int i = 0; i < j->n; i++)
        if (info[i].state == FG_REQUEST_FAILED && failed < 0) failed = i;
    if (gone) {
        srv_error(out, 499, NULL, "the client closed the connection");
    } else if (failed >= 0) {
        srv_error(out, 500, NULL, "generation failed: %s", info[failed].error);
    } else {
        cJSON *o = srv_render_head(r, j, g->chat ? "chat.completion" : "text_completion");
        cJSON *choices = cJSON_AddArrayToObject(o, "choices");
        for (int i = 0; i < j->n; i++) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddNumberToObject(c, "index", i);
            if (g->chat) {
                cJSON *msg = cJSON_AddObjectToObject(c, "message");
                cJSON_AddStringToObject(msg, "role", "assistant");
                srv_json_add_text(msg, "content", text[i].s ? text[i].s : "", text[i].len);
            } else {
                srv_json_add_text(c, "text", text[i].s ? text[i].s : "", text[i].len);
            }
            const srv_tokens *prompt = &g->prompts[i / g->n];
            if (g->logprobs) {
                size_t n, offset = 0;
                fg_token_logprob *lp = srv_gen_logprobs(r, j->eng[i], info[i].n_gen, &n);
                cJSON *l = g->chat ? srv_render_chat_logprobs(r, lp, n) : srv_render_lp_object();
                if (!g->chat && g->echo) srv_render_lp_add_prompt(r, l, j->eng[i], prompt, g->top_logprobs, &offset);
                if (!g->chat) srv_render_lp_add(r, l, lp, n, &offset);
                cJSON_AddItemToObject(c, "logprobs", l);
                free(lp);
            } else {
                cJSON_AddNullToObject(c, "logprobs");
            }
            cJSON_AddStringToObject(c, "finish_reason", srv_finish_reason(info[i].finish));
            if (g->prompt_logprobs >= 0 && !g->chat)
                cJSON_AddItemToObject(c, "prompt_logprobs",
                                      srv_render_prompt_logprobs(r, j->eng[i], prompt, g->prompt_logprobs));
            cJSON_AddItemToArray(choices, c);
        }
        /* vLLM's chat response carries the prompt's logprobs once, beside
         * the choices (which share the prompt). */
        if (g->prompt_logprobs >= 0 && g->chat)
            cJSON_AddItemToObject(o, "prompt_logprobs",
                                  srv_render_prompt_logprobs(r, j->eng[0], &g->prompts[0], g->prompt_logprobs));
        cJSON_AddItemToObject(o, "usage", srv_render_usage(g, j, info));
        srv_json_reply(out, 200, o);
    }
    for (int i = 0; i < j->n; i++) free(text[i].s);
    free(text);
    free(info);
    srv_job_finish(r, j);
}

/* ---- Streamed (SSE) ------------------------------------------------------------------------------ */

struct srv_stream {
    srv_routes *r;
    srv_job *j;
    srv_gen_spec g;            /* the prompts stay for usage; the stop pointers are not used after submit */
    bool *ended;           /* (n) its last chunk is out */
    bool *echoed;          /* (n) with echo: its prompt is out */
    size_t *lp_next;       /* (n) logprobs sent so far */
    size_t *text_off;      /* (n) completions: text_offset so far */
    fg_request_info *info; /* (n) */
    fg_buf out;            /* bytes not yet handed to the connection */
    size_t out_off;
    bool final;            /* [DONE] is in out */
};

static void sse_event(srv_stream *st, cJSON *o)
{
    char *s = srv_json_print(o);
    if (!s) return;
    fg_buf_append(&st->out, "data: ", 6);
    fg_buf_append(&st->out, s, strlen(s));
    fg_buf_append(&st->out, "\n\n", 2);
    free(s);
}

static cJSON *chunk(srv_stream *st, int i, cJSON **choice)
{
    cJSON *o = srv_render_head(st->r, st->j, st->g.chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(*choice, "index", i);
    cJSON_AddItemToArray(choices, *choice);
    if (st->g.include_usage) cJSON_AddNullToObject(o, "usage");
    return o;
}

/* One choice's chunk: text (may be empty), the logprobs of its new tokens
 * (taken; NULL: null) and a finish reason (NULL: none yet). */
static void emit(srv_stream *st, int i, const char *text, size_t len, cJSON *logprobs, const char *finish)
{
    cJSON *c, *o = chunk(st, i, &c);
    if (st->g.chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (len || !finish) srv_json_add_text(d, "content", text, len);
    } else {
        srv_json_add_text(c, "text", text, len);
    }
    cJSON_AddItemToObject(c, "logprobs", logprobs ? logprobs : cJSON_CreateNull());
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    sse_event(st, o);
}

/* Turns whatever the engine has made since the last call into events. */
static void produce(srv_stream *st)
{
    srv_routes *r = st->r;
    srv_job *j = st->j;
    bool all = true;
    for (int i = 0; i < j->n; i++) {
        if (st->ended[i]) continue;
        fg_request_info *info = &st->info[i];
        fg_request_status(r->e, j->eng[i], info);
        if (st->g.echo && !st->echoed[i]) {
            /* The prompt comes first; its logprobs, if asked for, once the
             * engine has them (with the first token, or at the end). */
            if (st->g.logprobs && info->n_gen == 0 && !srv_state_ended(info->state)) {
                all = false;
                continue;
            }
            const srv_tokens *prompt = &st->g.prompts[i / st->g.n];
            cJSON *l = NULL;
            if (st->g.logprobs) {
                l = srv_render_lp_object();
                srv_render_lp_add_prompt(r, l, j->eng[i], prompt, st->g.top_logprobs, &st->text_off[i]);
            }
            emit(st, i, prompt->echo, strlen(prompt->echo), l, NULL);
            st->echoed[i] = true;
        }
        fg_buf text = {0};
        drain_text(r->e, j->eng[i], &text);
        fg_token_logprob *lp = NULL;
        size_t n_lp = 0;
        if (st->g.logprobs && (size_t)info->n_gen > st->lp_next[i]) {
            size_t want = (size_t)info->n_gen - st->lp_next[i];
            lp = malloc(want * sizeof *lp);
            if (lp && fg_request_logprobs(r->e, j->eng[i], st->lp_next[i], lp, want, &n_lp) != FG_OK) n_lp = 0;
            st->lp_next[i] += n_lp;
        }
        bool ended = srv_state_ended(info->state);
        if (info->state == FG_REQUEST_FAILED) {
            cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
            cJSON_AddStringToObject(e, "message", info->error);
            cJSON_AddStringToObject(e, "type", "server_error");
            cJSON_AddNullToObject(e, "param");
            cJSON_AddNumberToObject(e, "code", 500);
            sse_event(st, o);
        }
        if (text.len || n_lp) {
            cJSON *l = NULL;
            if (n_lp && st->g.chat) {
                l = srv_render_chat_logprobs(r, lp, n_lp);
            } else if (n_lp) {
                l = srv_render_lp_object();
                srv_render_lp_add(r, l, lp, n_lp, &st->text_off[i]);
            }
            emit(st, i, text.s ? text.s : "", text.len, l, NULL);
        }
        if (ended) {
            emit(st, i, "", 0, NULL, srv_finish_reason(info->finish));
            st->ended[i] = true;
        } else {
            all = false;
        }
        free(lp);
        free(text.s);
    }
    if (!all) return;
    if (st->g.include_usage) {
        cJSON *o = srv_render_head(r, j, st->g.chat ? "chat.completion.chunk" : "text_completion");
        cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToObject(o, "usage", srv_render_usage(&st->g, j, st->info));
        sse_event(st, o);
    }
    fg_buf_append(&st->out, "data: [DONE]\n\n", 14);
    st->final = true;
}

long srv_stream_read(srv_stream *st, char *buf, size_t max, const srv_peer *peer)
{
    for (;;) {
        if (st->out_off < st->out.len) {
            size_t n = st->out.len - st->out_off;
            if (n > max) n = max;
            memcpy(buf, st->out.s + st->out_off, n);
            st->out_off += n;
            return (long)n;
        }
        st->out.len = st->out_off = 0;
        if (st->final) return -1;
        produce(st);
        if (st->out.len) continue;
        if (peer && peer->gone(peer->ctx)) return -2;
        for (int i = 0; i < st->j->n; i++)
            if (!st->ended[i]) {
                fg_request_wait(st->r->e, st->j->eng[i], WAIT_SLICE_MS);
                break;
            }
    }
}

void srv_stream_free(srv_stream *st)
{
    if (!st) return;
    srv_job_finish(st->r, st->j);
    srv_spec_free(&st->g);
    free(st->ended), free(st->echoed), free(st->lp_next), free(st->text_off), free(st->info), free(st->out.s);
    free(st);
}

void srv_generate_stream(srv_routes *r, srv_gen_spec *g, srv_job *j, srv_response *out)
{
    srv_stream *st = calloc(1, sizeof *st);
    if (st) {
        st->ended = calloc((size_t)j->n, sizeof *st->ended);
        st->echoed = calloc((size_t)j->n, sizeof *st->echoed);
        st->lp_next = calloc((size_t)j->n, sizeof *st->lp_next);
        st->text_off = calloc((size_t)j->n, sizeof *st->text_off);
        st->info = calloc((size_t)j->n, sizeof *st->info);
    }
    if (!st || !st->ended || !st->echoed || !st->lp_next || !st->text_off || !st->info) {
        if (st) free(st->ended), free(st->echoed), free(st->lp_next), free(st->text_off), free(st->info);
        free(st);
        srv_job_finish(r, j);
        srv_error(out, 500, NULL, "out of memory");
        return;
    }
    st->r = r;
    st->j = j;
    st->g = *g; /* takes the prompts */
    g->n_prompts = 0;
    st->g.n_stops = 0;
    if (g->chat) /* OpenAI opens each choice with the role */
        for (int i = 0; i < j->n; i++) {
            cJSON *c, *o = chunk(st, i, &c);
            cJSON *d = cJSON_AddObjectToObject(c, "delta");
            cJSON_AddStringToObject(d, "role", "assistant");
            cJSON_AddStringToObject(d, "content", "");
            cJSON_AddNullToObject(c, "logprobs");
            cJSON_AddNullToObject(c, "finish_reason");
            sse_event(st, o);
        }
    out->status = 200;
    out->stream = st;
}
