/*
 * openai.c — the routes of forge serve: OpenAI's completions and chat
 * completions (buffered and SSE), models, tokenization, request status and
 * cancellation, health and metrics; and the route table that srv_routes_handle
 * dispatches by (path, then method, then whether the engine is ready and
 * the server still takes generation requests).
 *
 * A generation request becomes a job, one engine request per choice, kept
 * in the registry behind /v1/requests/{id} (jobs.c).
 *
 * Limits: a request fans out into at most max_choices engine requests
 * (else 413) and is admitted only if all of them fit the engine's queue
 * (else 429 before any starts). Its body is checked and its memory
 * reserved before parsing (body.c); the reservation lasts until the tree
 * and token arrays are freed, which is before a request starts waiting on
 * the engine.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/routes.h"

enum { STALL_MS = 60000 }; /* /health: a step older than this, with work, is a stuck engine */

/* A request as its route sees it. */
typedef struct route_call {
    const char *body;     /* len bytes, not NUL-terminated */
    size_t len;
    const char *id;       /* the path's {id}; NULL for a route without one */
    const srv_peer *peer; /* the client, polled while a route waits */
} route_call;

/* ---- Generation routes ----------------------------------------------------------------------- */

/* The steps in order: the body admitted and parsed (params.c), the job
 * made and submitted (jobs.c), the tree and token arrays freed (the
 * memory reservation ends), then the output (stream.c). */
static void generate(srv_routes *r, bool chat, const route_call *q, srv_response *out)
{
    const char *body = q->body;
    size_t len = q->len;
    size_t held = 0;
    if (!srv_body_admit(&r->budget, body, len, &held, out)) return;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root || !cJSON_IsObject(root)) {
        srv_error(out, 400, NULL, root ? "the body must be a JSON object" : "the body is not valid JSON");
        cJSON_Delete(root);
        srv_budget_release(&r->budget, &held);
        return;
    }
    srv_gen_spec g = {.chat = chat};
    bool ok = srv_parse_params(r, root, body, len, &g, out);
    if (ok && chat) {
        bool agp = true;
        ok = srv_check_choices(r, 1, g.n, out) && srv_json_bool(root, "add_generation_prompt", &agp, out);
        if (ok) ok = srv_parse_messages(r, cJSON_GetObjectItemCaseSensitive(root, "messages"), agp, &g.prompts[0], out);
        g.n_prompts = ok ? 1 : 0;
    } else if (ok) {
        ok = srv_parse_prompt(r, cJSON_GetObjectItemCaseSensitive(root, "prompt"), &g, out);
    }
    if (ok) ok = srv_check_choices(r, g.n_prompts, g.n, out);
    srv_job *j = ok ? srv_job_new(r, chat, g.n_prompts * g.n) : NULL;
    if (ok && !j) {
        srv_error(out, 500, NULL, "out of memory");
        ok = false;
    }
    if (ok) {
        snprintf(out->request_id, sizeof out->request_id, "%s", j->id);
        if (!srv_job_submit(r, &g, j, out)) {
            srv_job_abandon(r, j);
            ok = false;
        } else if (!srv_job_register(r, j)) {
            srv_job_abandon(r, j);
            srv_error(out, 500, NULL, "out of memory");
            ok = false;
        }
    }
    /* The engine has its own copies of the prompts and stop strings (which
     * point into root): the tree and the token arrays go before the wait,
     * the counts stay for usage. */
    cJSON_Delete(root);
    for (int p = 0; p < g.n_prompts; p++) {
        g.prompts[p].first = g.prompts[p].n ? g.prompts[p].ids[0] : -1;
        free(g.prompts[p].ids);
        g.prompts[p].ids = NULL;
    }
    g.n_stops = 0;
    srv_budget_release(&r->budget, &held);
    if (ok) {
        for (int p = 0; p < g.n_prompts; p++) srv_metrics_observe_n(r->metrics, g.n);
        if (g.stream) srv_generate_stream(r, &g, j, out);
        else srv_generate_buffered(r, &g, j, q->peer, out);
    }
    srv_spec_free(&g);
}

static void route_completions(srv_routes *r, const route_call *q, srv_response *out)
{
    generate(r, false, q, out);
}

static void route_chat(srv_routes *r, const route_call *q, srv_response *out)
{
    generate(r, true, q, out);
}

/* ---- Other routes ------------------------------------------------------------------------------ */

/* /v1/models, or /v1/models/{id} when q->id is set. */
static void route_models(srv_routes *r, const route_call *q, srv_response *out)
{
    const char *which = q->id;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", r->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)r->started);
    cJSON_AddStringToObject(m, "owned_by", "forge");
    cJSON_AddNumberToObject(m, "max_model_len", r->ctx);
    if (which) {
        if (strcmp(which, r->model_name) != 0) {
            cJSON_Delete(m);
            srv_error(out, 404, "model", "the model '%.200s' does not exist", which);
            return;
        }
        srv_json_reply(out, 200, m);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), m);
    srv_json_reply(out, 200, o);
}

/* llama-server's and vLLM's shapes: {"content"} or {"prompt"} (or vLLM's
 * {"messages"}), add_special / add_special_tokens, with_pieces. Text is
 * tokenized with special tokens parsed, as llama-server does; messages as
 * the chat route does. */
static void route_tokenize(srv_routes *r, const route_call *q, srv_response *out)
{
    const char *body = q->body;
    size_t len = q->len;
    size_t held = 0;
    if (!srv_body_admit(&r->budget, body, len, &held, out)) return;
    cJSON *root = srv_json_object(body, len, out);
    if (!root) {
        srv_budget_release(&r->budget, &held);
        return;
    }
    bool add_special = true, pieces = false, agp = true;
    srv_tokens t = {0};
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "content");
    if (!text) text = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    bool ok = srv_json_bool(root, "add_special", &add_special, out) &&
              srv_json_bool(root, "add_special_tokens", &add_special, out) &&
              srv_json_bool(root, "with_pieces", &pieces, out) &&
              srv_json_bool(root, "add_generation_prompt", &agp, out);
    if (ok && msgs) {
        ok = srv_parse_messages(r, msgs, agp, &t, out);
    } else if (ok && !cJSON_IsString(text)) {
        srv_error(out, 400, "content", "'content' (or 'prompt') must be a string");
        ok = false;
    } else if (ok && fg_model_tokenize(r->m, text->valuestring, strlen(text->valuestring), add_special, true, &t.ids,
                                       &t.n) != FG_OK) {
        srv_error(out, 400, "content", "cannot tokenize: %s", fg_last_error());
        ok = false;
    }
    cJSON_Delete(root);
    /* What is held now: the body, the ids and the reply, ~8 bytes a token
     * and with pieces ~24 more and the text again. */
    char what[96];
    snprintf(what, sizeof what, "a reply of %zu tokens%s", t.n, pieces ? " with pieces" : "");
    if (ok) ok = srv_budget_reserve(&r->budget, &held, len + t.n * (pieces ? 36 : 12) + (pieces ? len : 0), what, out);
    if (ok) {
        out->status = 200;
        out->body = srv_render_tokenize(r, &t, pieces);
        if (!out->body) srv_error(out, 500, NULL, "out of memory");
    }
    free(t.ids);
    srv_budget_release(&r->budget, &held);
}

static void route_detokenize(srv_routes *r, const route_call *q, srv_response *out)
{
    const char *body = q->body;
    size_t len = q->len;
    size_t held = 0;
    if (!srv_body_admit(&r->budget, body, len, &held, out)) return;
    cJSON *root = srv_json_object(body, len, out);
    if (!root) {
        srv_budget_release(&r->budget, &held);
        return;
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    srv_tokens t = {0};
    if (!cJSON_IsArray(a)) {
        srv_error(out, 400, "tokens", "'tokens' must be an array of token ids");
    } else if (srv_token_array(r, a, &t, out)) {
        char *s = NULL;
        if (fg_model_detokenize(r->m, t.ids, t.n, false, &s) != FG_OK) {
            srv_error(out, 400, "tokens", "%s", fg_last_error());
        } else {
            cJSON *o = cJSON_CreateObject();
            srv_json_add_text(o, "content", s, strlen(s));
            srv_json_add_text(o, "prompt", s, strlen(s));
            srv_json_reply(out, 200, o);
        }
        free(s);
    } else if (out->status == 400) {
        /* srv_token_array named the bad id */
        free(out->body);
        out->body = NULL;
        srv_error(out, 400, "tokens", "'tokens' must hold token ids in 0..%d", r->n_vocab - 1);
    }
    free(t.ids);
    cJSON_Delete(root);
    srv_budget_release(&r->budget, &held);
}

/* /v1/requests/{id} and its cancel: the job's status, after cancelling
 * what still runs of it if asked. */
static void request(srv_routes *r, const char *id, bool cancel, srv_response *out)
{
    pthread_mutex_lock(&r->mu);
    srv_job *j = srv_job_find(r, id);
    cJSON *o = NULL;
    if (j && cancel && !j->done)
        for (int i = 0; i < j->n; i++) fg_request_cancel(r->e, j->eng[i]);
    if (j) o = srv_render_job(r, j);
    pthread_mutex_unlock(&r->mu);
    if (!j) srv_error(out, 404, "id", "no request '%.100s' (unknown, or ended long ago)", id);
    else if (!o) srv_error(out, 500, NULL, "out of memory");
    else srv_json_reply(out, 200, o);
}

static void route_request(srv_routes *r, const route_call *q, srv_response *out)
{
    request(r, q->id, false, out);
}

static void route_cancel(srv_routes *r, const route_call *q, srv_response *out)
{
    request(r, q->id, true, out);
}

static void route_health(srv_routes *r, const route_call *q, srv_response *out)
{
    pthread_mutex_lock(&r->mu);
    fg_engine *e = r->e;
    bool closing = r->closing;
    pthread_mutex_unlock(&r->mu);
    cJSON *o = cJSON_CreateObject();
    int status = 200;
    if (!e) {
        status = 503;
        cJSON_AddStringToObject(o, "status", "loading");
    } else {
        fg_engine_stats s;
        fg_engine_stats_get(e, &s);
        bool stuck = s.running + s.waiting > 0 && s.ms_since_step > STALL_MS;
        status = stuck || closing ? 503 : 200;
        cJSON_AddStringToObject(o, "status", stuck ? "stalled" : closing ? "closing" : "ok");
        cJSON_AddNumberToObject(o, "requests_running", s.running);
        cJSON_AddNumberToObject(o, "requests_waiting", s.waiting);
        cJSON_AddNumberToObject(o, "ms_since_step", round(s.ms_since_step));
    }
    srv_json_reply(out, status, o);
}

static void route_metrics(srv_routes *r, const route_call *q, srv_response *out)
{
    pthread_mutex_lock(&r->mu);
    fg_engine *e = r->e;
    pthread_mutex_unlock(&r->mu);
    out->status = 200;
    out->body = srv_metrics_render(r->metrics, e, r->model_name);
    out->content_type = "text/plain; version=0.0.4; charset=utf-8";
    if (!out->body) srv_error(out, 500, NULL, "out of memory");
}

/* ---- The route table ------------------------------------------------------------------------------ */

enum {
    NEEDS_ENGINE = 1 << 0, /* 503 with Retry-After while the model loads */
    GENERATES = 1 << 1,    /* 503 once the server is shutting down */
};

/* How a route's path is matched: whole, or a prefix followed by an {id}
 * and a tail. An ID is one segment (no '/'); a NAME runs to the end of
 * the path and may hold '/' (model names such as "org/model"). */
typedef enum path_kind { PATH_WHOLE, PATH_ID, PATH_NAME } path_kind;

typedef struct route {
    const char *method;
    const char *path;      /* PATH_WHOLE: the path; else what comes before the {id} */
    path_kind kind;
    const char *tail;      /* PATH_ID: what follows the {id} ("" for nothing) */
    unsigned flags;        /* NEEDS_ENGINE, GENERATES */
    void (*fn)(srv_routes *r, const route_call *q, srv_response *out);
} route;

static const route ROUTES[] = {
    {"GET", "/health", PATH_WHOLE, NULL, 0, route_health},
    {"GET", "/v1/health", PATH_WHOLE, NULL, 0, route_health},
    {"GET", "/metrics", PATH_WHOLE, NULL, 0, route_metrics},
    {"POST", "/v1/completions", PATH_WHOLE, NULL, NEEDS_ENGINE | GENERATES, route_completions},
    {"POST", "/v1/chat/completions", PATH_WHOLE, NULL, NEEDS_ENGINE | GENERATES, route_chat},
    {"GET", "/v1/models", PATH_WHOLE, NULL, NEEDS_ENGINE, route_models},
    {"GET", "/v1/models/", PATH_NAME, "", NEEDS_ENGINE, route_models},
    {"POST", "/tokenize", PATH_WHOLE, NULL, NEEDS_ENGINE, route_tokenize},
    {"POST", "/detokenize", PATH_WHOLE, NULL, NEEDS_ENGINE, route_detokenize},
    {"GET", "/v1/requests/", PATH_ID, "", NEEDS_ENGINE, route_request},
    {"POST", "/v1/requests/", PATH_ID, "/cancel", NEEDS_ENGINE, route_cancel},
};

/* Whether path is rt's; its {id}, non-empty and shorter than cap, goes
 * into id. */
static bool route_match(const route *rt, const char *path, char *id, size_t cap)
{
    if (rt->kind == PATH_WHOLE) return strcmp(path, rt->path) == 0;
    size_t np = strlen(rt->path);
    if (strncmp(path, rt->path, np) != 0) return false;
    const char *rest = path + np;
    size_t n = rt->kind == PATH_NAME ? strlen(rest) : strcspn(rest, "/");
    if (n == 0 || n >= cap || strcmp(rest + n, rt->tail) != 0) return false;
    memcpy(id, rest, n);
    id[n] = 0;
    return true;
}

/* A path is matched before its method, so that a known path asked with
 * the wrong method is a 405 naming the right one, not a 404. */
void srv_routes_handle(srv_routes *r, const char *method, const char *path, const char *body, size_t len,
                       const srv_peer *peer, srv_response *out)
{
    memset(out, 0, sizeof *out);
    char id[128] = "";
    const route *rt = NULL;
    for (size_t i = 0; !rt && i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if (route_match(&ROUTES[i], path, id, sizeof id)) rt = &ROUTES[i];
    if (!rt) {
        srv_error(out, 404, NULL, "no route %.16s %.200s", method, path);
        return;
    }
    if (strcmp(method, rt->method) != 0) {
        srv_error(out, 405, NULL, "this route takes %s, not %s", rt->method, method);
        return;
    }
    pthread_mutex_lock(&r->mu);
    bool ready = r->e != NULL, closing = r->closing;
    pthread_mutex_unlock(&r->mu);
    if ((rt->flags & NEEDS_ENGINE) && !ready) {
        srv_error(out, 503, NULL, "the model is loading; retry when /health answers 200");
        out->retry_after = 1;
        return;
    }
    if ((rt->flags & GENERATES) && closing) {
        srv_error(out, 503, NULL, "the server is shutting down");
        return;
    }
    route_call q = {body, len, rt->kind == PATH_WHOLE ? NULL : id, peer};
    rt->fn(r, &q, out);
}
