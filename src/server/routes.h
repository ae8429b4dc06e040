/*
 * routes.h — the routes' private header, shared by the files behind
 * srv_routes_* (server.h):
 *   openai.c   the route table and the routes: models, tokenize, requests,
 *              health, metrics, and the generation routes' steps in order;
 *   jobs.c     the routes' state (srv_routes) and the job registry: a
 *              request's engine requests, submitted together, ended and
 *              remembered;
 *   params.c   a generation request's body parsed and checked: prompts,
 *              messages, sampling, stops, seeds, logprobs;
 *   stream.c   a job's output, answered whole or streamed as SSE;
 *   render.c   the answers in OpenAI's shapes: logprobs, usage, a job's
 *              status, /tokenize's reply (the finish reasons' names are
 *              there too, declared in server.h for the metrics);
 *   json.c     JSON in and out: errors, replies, UTF-8, checked fields.
 *
 * Nothing here is seen by http.c, conns.c, body.c or metrics.c, which
 * know the routes only through server.h.
 */
#ifndef FG_SERVER_ROUTES_H
#define FG_SERVER_ROUTES_H

#include <cJSON.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "server/server.h"

/* ---- The routes' state and a request's parts ------------------------------------------------- */

enum { SRV_MAX_PROMPTS = 64 }; /* prompts in one /v1/completions request */

/* A generation request's engine requests, one per choice: prompt p's
 * choice c is entry p * n + c. */
typedef struct srv_job {
    char id[48];
    bool chat;
    int64_t created;       /* Unix seconds */
    int n;                 /* engine requests, one per choice */
    uint64_t *eng;         /* (n) */
    int32_t *max_tokens;   /* (n) what each ran with, for the metrics */
    fg_request_info *fin;  /* (n) the final status, once done */
    bool done;
} srv_job;

struct srv_routes {
    pthread_mutex_t mu;
    pthread_mutex_t submit_mu; /* one request's choices are admitted together or not at all */
    int max_choices;       /* engine requests one request may become */
    srv_budget budget;     /* the memory of requests being parsed */
    fg_engine *e;          /* NULL while loading */
    const fg_model *m;
    fg_chat *chat;         /* the model's chat template; NULL: none usable (chat_error says why) */
    char chat_error[256];
    int32_t ctx, n_vocab;
    bool closing;
    char *model_name;
    int64_t started;
    srv_metrics *metrics;
    srv_job **jobs;        /* (n_jobs) oldest first */
    int n_jobs, cap_jobs, live;
    uint64_t serial;
};

/* One prompt, tokenized. */
typedef struct srv_tokens {
    int32_t *ids;
    size_t n;
    int32_t first;          /* ids[0], kept after ids are freed: echo's logprobs begin with it */
    char *echo;             /* with echo: the prompt's text, malloc'd */
} srv_tokens;

/* A generation request, parsed. */
typedef struct srv_gen_spec {
    bool chat;
    srv_tokens prompts[SRV_MAX_PROMPTS];
    int n_prompts;
    int n;                  /* choices per prompt */
    int32_t max_tokens;     /* -1: until the context is full; 0: not given */
    bool score_only;        /* max_tokens 0: the prompt is scored, nothing generated */
    fg_sampling sampling;
    fg_logit_bias bias[FG_MAX_LOGIT_BIAS]; /* (n_bias) sampling.logit_bias points here at submission */
    int n_bias;
    bool seeded;
    const char *stops[FG_REQUEST_MAX_STOPS];
    int n_stops;
    bool logprobs;
    int top_logprobs;
    bool stream, include_usage;
    bool ignore_eos;        /* vLLM's extension */
    bool echo;              /* completions: each choice's text (and logprobs) begin with the prompt's */
    int prompt_logprobs;    /* vLLM's prompt_logprobs: -1 none, else how many of the likeliest */
} srv_gen_spec;

/* ---- Jobs (jobs.c) ------------------------------------------------------------------------- */

/* A job of n engine requests, none submitted yet, with a fresh id; NULL
 * when out of memory. */
srv_job *srv_job_new(srv_routes *r, bool chat, int n);
/* Checks the prompts' lengths against the context and submits every
 * choice (j->eng set). The choices are admitted together: if they do not
 * all fit the engine's queue now, none is submitted and the answer is 429.
 * False with the error in out; what was submitted is then left for
 * srv_job_abandon. */
bool srv_job_submit(srv_routes *r, const srv_gen_spec *g, srv_job *j, srv_response *out);
/* Adds a submitted job to the registry as live, forgetting the oldest
 * ended one when it is full. False when out of memory. */
bool srv_job_register(srv_routes *r, srv_job *j);
/* Ends a registered job: cancels what still runs, keeps the final
 * statuses, releases the engine requests and tells the metrics. The
 * registry keeps it (and frees it). */
void srv_job_finish(srv_routes *r, srv_job *j);
/* Frees a job that never got registered, releasing its engine requests. */
void srv_job_abandon(srv_routes *r, srv_job *j);
/* The registered job called id, or NULL. Under r->mu. */
srv_job *srv_job_find(srv_routes *r, const char *id);
/* Whether an engine request in state s has ended. */
bool srv_state_ended(fg_request_state s);

/* ---- Parsing (params.c) ---------------------------------------------------------------------- */

/* Every parameter but the prompt, which the route parses, into g (whose
 * chat is set); body (len bytes) is the request's text, for the seed's
 * digits. False with a 400 in out. */
bool srv_parse_params(srv_routes *r, const cJSON *root, const char *body, size_t len, srv_gen_spec *g,
                      srv_response *out);
/* /v1/completions' prompt p (a string, an array of strings, an array of
 * token ids or an array of arrays of them) into g's prompts, each with its
 * echo text if g asks for echo. */
bool srv_parse_prompt(srv_routes *r, const cJSON *p, srv_gen_spec *g, srv_response *out);
/* msgs, an array of {role, content} ("developer" is "system"; content a
 * string, text parts or null), rendered with the model's template and
 * tokenized into t. */
bool srv_parse_messages(srv_routes *r, const cJSON *msgs, bool add_generation_prompt, srv_tokens *t,
                        srv_response *out);
/* An array of token ids, each in the vocabulary, into t (t->ids malloc'd). */
bool srv_token_array(srv_routes *r, const cJSON *a, srv_tokens *t, srv_response *out);
/* The choice bound: prompts x n at most max_choices, else a 413. */
bool srv_check_choices(srv_routes *r, int prompts, int n, srv_response *out);
/* Frees the prompts' ids and echo texts. */
void srv_spec_free(srv_gen_spec *g);

/* ---- Output (stream.c) ------------------------------------------------------------------------ */

/* Waits for every choice of a submitted, registered job (or for its
 * client to go: 499) and answers the whole response; ends the job. */
void srv_generate_buffered(srv_routes *r, const srv_gen_spec *g, srv_job *j, const srv_peer *peer,
                           srv_response *out);
/* Answers 200 with an SSE stream of the job (out->stream), which takes
 * g's prompts (g is left without them) and ends the job when freed. */
void srv_generate_stream(srv_routes *r, srv_gen_spec *g, srv_job *j, srv_response *out);

/* ---- Rendering (render.c) -------------------------------------------------------------------- */

/* The head of a response or chunk: id, object, created, model,
 * system_fingerprint. */
cJSON *srv_render_head(srv_routes *r, const srv_job *j, const char *object);
/* usage: the prompts' tokens (each prompt once), the choices' generated
 * tokens, and the prefix-cache hits (info: the job's n statuses). */
cJSON *srv_render_usage(const srv_gen_spec *g, const srv_job *j, const fg_request_info *info);

/* The logprobs of engine request id's first n_gen generated tokens,
 * malloc'd (*n of them; 0 when the engine gives none). */
fg_token_logprob *srv_gen_logprobs(srv_routes *r, uint64_t id, int32_t n_gen, size_t *n);
/* Chat's shape: {"content": [{"token", "logprob", "bytes",
 * "top_logprobs": [...]}]} for n tokens. */
cJSON *srv_render_chat_logprobs(srv_routes *r, const fg_token_logprob *lp, size_t n);
/* Completions' shape: an empty {"tokens", "token_logprobs",
 * "top_logprobs", "text_offset"}, filled by the two calls after it.
 * *offset is the next token's text_offset, advanced by each. */
cJSON *srv_render_lp_object(void);
/* Appends n generated tokens' logprobs. */
void srv_render_lp_add(srv_routes *r, cJSON *o, const fg_token_logprob *lp, size_t n, size_t *offset);
/* Appends prompt t's tokens (echo with logprobs), each with at most
 * max_top of its likeliest; the first has no context (nulls). */
void srv_render_lp_add_prompt(srv_routes *r, cJSON *o, uint64_t id, const srv_tokens *t, int max_top,
                              size_t *offset);
/* vLLM's prompt_logprobs of engine request id's prompt t, with the max_top
 * likeliest at each position. */
cJSON *srv_render_prompt_logprobs(srv_routes *r, uint64_t id, const srv_tokens *t, int max_top);

/* A job's status for /v1/requests/{id}; NULL when out of memory. Under
 * r->mu. */
cJSON *srv_render_job(srv_routes *r, const srv_job *j);
/* /tokenize's reply for t, with each token's text if pieces; malloc'd,
 * NULL when out of memory. */
char *srv_render_tokenize(srv_routes *r, const srv_tokens *t, bool pieces);

/* ---- JSON (json.c) ------------------------------------------------------------------------- */

/* Prints j unformatted and deletes it; the text is malloc'd (NULL when out
 * of memory). */
char *srv_json_print(cJSON *j);
/* A JSON reply of status, taking j; out of memory is a 500. */
void srv_json_reply(srv_response *out, int status, cJSON *j);
/* s (n bytes) as valid UTF-8 for JSON: invalid bytes become U+FFFD (a
 * token may be part of a character). Malloc'd, NUL-terminated. */
char *srv_utf8_clean(const char *s, size_t n);
/* Adds s (n bytes, made valid UTF-8) to obj as the string member name. */
cJSON *srv_json_add_text(cJSON *obj, const char *name, const char *s, size_t n);
/* Appends s (valid UTF-8) to o as a JSON string literal. */
bool srv_json_append_string(fg_buf *o, const char *s, size_t n);

/* The body as a JSON object, or NULL with a 400 in out. */
cJSON *srv_json_object(const char *body, size_t len, srv_response *out);
/* Optional fields of root: absent or null leaves *v; a wrong type, a
 * non-integer where one is wanted or a number outside [lo, hi] is a 400
 * naming the field (false). */
bool srv_json_num(const cJSON *root, const char *name, double lo, double hi, bool integer, double *v,
                  srv_response *out);
bool srv_json_bool(const cJSON *root, const char *name, bool *v, srv_response *out);
/* A 400 unless the field is absent, null or a string. */
bool srv_json_check_string(const cJSON *root, const char *name, srv_response *out);

#endif
