/*
 * server.h — forge's OpenAI-compatible HTTP server:
 *   http.c     the libmicrohttpd adapter: the daemon (a thread per
 *              connection), request bodies and their limit, the API key,
 *              Host, CORS and Content-Type, disconnect detection, buffered
 *              and SSE responses, shutdown;
 *   conns.c    connections (private header http.h): the listening socket
 *              and its acceptor, the limit sized from the machine, the
 *              header and body deadlines;
 *   openai.c   the routes and their table (private header routes.h):
 *              JSON in and out (cJSON, json.c), parameter checking
 *              (params.c), submission to the engine and the request
 *              registry behind /v1/requests/{id} (jobs.c), responses in
 *              OpenAI's shapes (render.c), answering whole or as SSE
 *              (stream.c);
 *   body.c     a body before parsing (UTF-8, U+0000) and the memory a
 *              request may take; raw member text (64-bit seeds);
 *   metrics.c  Prometheus text for /metrics (vLLM's names, under both a
 *              "forge:" and a "vllm:" prefix).
 *
 * Threads: libmicrohttpd runs each connection on its own thread, which may
 * block while its request generates. Those threads talk to the engine only
 * through forge.h's thread-safe calls; only the engine thread touches the
 * backend. The engine arrives after the server starts (fg_server_set_engine):
 * until then every route but /health and /metrics answers 503.
 *
 * The first section is what `forge serve` uses; the rest is shared by
 * http.c, the route files and metrics.c.
 */
#ifndef FG_SERVER_SERVER_H
#define FG_SERVER_SERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forge.h"

typedef struct fg_server fg_server;

typedef struct fg_server_config {
    const char *host;         /* address to bind; NULL = 127.0.0.1 */
    int port;                 /* 0 = any free port (fg_server_port tells which) */
    const char *api_key;      /* NULL: no authentication; "" is refused, so that an
                                 unset variable cannot switch authentication off */
    const char *model_name;   /* the name /v1/models lists and responses carry */
    size_t max_body;          /* bytes of a request body; larger is 413 */
    int max_connections;      /* concurrent connections (a thread each); 0: sized
                                 from the machine (fg_server_get_info tells) */
    int max_per_ip;           /* connections from one client address; 0: no cap */
    int header_timeout_s;     /* a request's headers must arrive within this many
                                 seconds of its start; 0: 10 */
    int body_timeout_s;       /* its body within this many seconds of its headers; 0: 30 */
    int idle_timeout_s;       /* a connection silent this long is closed; 0: 30 */
    const char *cors_origins; /* origins allowed cross-origin, comma-separated, or "*";
                                 NULL or "": none */
    /* What one request may ask of the generation and tokenization routes,
     * so that a small body can neither fan out into a flood of engine
     * requests nor make the server parse its way out of memory. */
    int max_choices;          /* choices (prompts x n) in one request; more is 413. 0: 64 */
    size_t request_mem;       /* bytes one request may take to parse and tokenize (its JSON tree,
                                 text copies, token ids, a /tokenize reply); more is 413. 0: 128 MiB */
    size_t mem_budget;        /* bytes all requests being parsed may take together; more is 429.
                                 0: 512 MiB */
} fg_server_config;

/* What the server runs with, for the start-up line. */
typedef struct fg_server_info {
    int max_connections, max_per_ip;
    bool loopback; /* bound to a loopback address (the Host header is checked) */
    bool auth;     /* an API key is required */
} fg_server_info;

/* Binds and starts serving (503 until fg_server_set_engine). Close with
 * fg_server_close. A configuration that cannot work (an empty key, a bad
 * origin, a connection limit over the open-file limit) is
 * FG_ERR_INVALID_ARG with a message naming the option. */
fg_status fg_server_start(const fg_server_config *c, fg_server **out);
int fg_server_port(const fg_server *s);
void fg_server_get_info(const fg_server *s, fg_server_info *out);
/* The engine is open: the routes serve. e must outlive the server's use of
 * it, which ends in fg_server_close. */
void fg_server_set_engine(fg_server *s, fg_engine *e);
/* Stops accepting connections and closes those that are not in a request;
 * requests in flight go on. Generation requests are 503 from here on. */
void fg_server_quiesce(fg_server *s);
/* Requests generating now (what a drain waits for). */
int fg_server_live(fg_server *s);
/* Quiesces, lets requests in flight finish for up to drain_ms, then
 * cancels the rest and waits for their connections to end. */
void fg_server_shutdown(fg_server *s, int drain_ms);
/* Shuts down (drain 0) if not done yet, and frees the server. */
void fg_server_close(fg_server *s);

/* ---- Shared by http.c, the route files and metrics.c ------------------------- */

/* Histograms and counters the engine does not keep (metrics.c). */
enum { SRV_HIST_MAX_BUCKETS = 24 };
typedef struct srv_hist {
    const double *bounds; /* (n) upper bounds in seconds, ascending */
    int n;
    uint64_t counts[SRV_HIST_MAX_BUCKETS]; /* not cumulative */
    uint64_t count;
    double sum;
} srv_hist;

typedef struct srv_metrics {
    pthread_mutex_t mu;
    srv_hist ttft, itl, e2e;
    srv_hist queue, prefill, decode, inference; /* per request: the phases of e2e */
    srv_hist prompt_len, gen_len, max_tokens;   /* per request, in tokens: buckets 1, 2, 5, 10, ... up to ctx */
    srv_hist n_param;                           /* per prompt: the n asked for */
    double len_bounds[SRV_HIST_MAX_BUCKETS];    /* the token-count buckets (srv_metrics_set_ctx) */
    uint64_t success[FG_FINISH_ERROR + 1]; /* ended requests, by fg_finish_reason */
    uint64_t http_4xx, http_5xx;
} srv_metrics;

/* OpenAI's finish_reason for forge's: "stop" (an end-of-generation token or
 * a stop string), "length" (max_tokens or a full context), "abort" (vLLM's,
 * for a cancelled request) or "error"; NULL for a request not ended. The
 * one place the API's names are written: responses, /v1/requests and the
 * metrics' finished_reason labels all take them from here. */
const char *srv_finish_reason(fg_finish_reason f);

void srv_metrics_init(srv_metrics *m);
void srv_metrics_free(srv_metrics *m);
/* The context length, which the token-count histograms' buckets go up to
 * (vLLM's 1-2-5 series to max_model_len); before any observation. */
void srv_metrics_set_ctx(srv_metrics *m, int32_t ctx);
/* Records an ended engine request: TTFT, its mean inter-token latency once
 * per token after the first, end-to-end latency and its phases (queue,
 * prefill, decode, inference), its prompt and generated token counts, the
 * max_tokens it ran with, and its finish reason. */
void srv_metrics_observe(srv_metrics *m, const fg_request_info *info, int32_t max_tokens);
/* Records the n of one prompt of a generation request. */
void srv_metrics_observe_n(srv_metrics *m, int n);
void srv_metrics_status(srv_metrics *m, int http_status);
/* The Prometheus text exposition; malloc'd, freed by the caller. e may be
 * NULL (loading): the engine's gauges are then 0. */
char *srv_metrics_render(srv_metrics *m, fg_engine *e, const char *model_name);

/* A response from a route for http.c to send. */
typedef struct srv_stream srv_stream;
typedef struct srv_response {
    int status;
    char *body;               /* malloc'd JSON or text, or NULL with stream */
    const char *content_type; /* NULL: application/json */
    int retry_after;          /* > 0: a Retry-After header, seconds */
    char request_id[64];      /* non-empty: an X-Request-Id header */
    srv_stream *stream;       /* an SSE body, read by srv_stream_read */
} srv_response;

/* Whether the client of a connection went away (http.c): the routes poll it
 * while they wait on the engine. */
typedef struct srv_peer {
    bool (*gone)(void *ctx);
    void *ctx;
} srv_peer;

/* The memory that requests being parsed may take (body.c): at most
 * request_mem bytes each, mem_budget together. */
typedef struct srv_budget {
    pthread_mutex_t mu;
    size_t request_mem, mem_budget;
    size_t held; /* under mu: bytes reserved now */
} srv_budget;

void srv_budget_init(srv_budget *b, size_t request_mem, size_t mem_budget);
void srv_budget_free(srv_budget *b);
/* Checks a body before it is parsed (UTF-8 without U+0000 or raw control
 * characters in strings: else 400) and adds what parsing and tokenizing it
 * will take to the caller's reservation *held (0 to start). False with the
 * error in out: 400, 413 (over request_mem) or 429 (over mem_budget). */
bool srv_body_admit(srv_budget *b, const char *body, size_t len, size_t *held, srv_response *out);
/* Sets the reservation *held to want bytes: 413 if that passes
 * request_mem, 429 if growing it would take the requests being parsed past
 * mem_budget; what says what the bytes are for, in the message. */
bool srv_budget_reserve(srv_budget *b, size_t *held, size_t want, const char *what, srv_response *out);
/* Ends the reservation (*held becomes 0). */
void srv_budget_release(srv_budget *b, size_t *held);
/* The raw text (*v, *vn bytes) of the body's top-level member name: its
 * first occurrence, the one cJSON_GetObjectItemCaseSensitive finds. The
 * body must be valid JSON. False if absent or its key is written with
 * escapes. */
bool srv_body_member(const char *body, size_t len, const char *name, const char **v, size_t *vn);

/* The routes' state (jobs.c): c's model name and request limits. */
typedef struct srv_routes srv_routes;
fg_status srv_routes_init(const fg_server_config *c, srv_metrics *m, srv_routes **out);
void srv_routes_free(srv_routes *r);
void srv_routes_set_engine(srv_routes *r, fg_engine *e);
bool srv_routes_ready(srv_routes *r);
/* Requests generating now, and cancelling them all (shutdown). Once
 * closing, new generation requests are 503. */
int srv_routes_live(srv_routes *r);
void srv_routes_closing(srv_routes *r);
void srv_routes_cancel_all(srv_routes *r);
/* Answers one request (openai.c): method, path (without the query), body
 * (len bytes, not NUL-terminated). */
void srv_routes_handle(srv_routes *r, const char *method, const char *path, const char *body, size_t len,
                       const srv_peer *peer, srv_response *out);
/* An error response (json.c): OpenAI's {"error": {"message", "type", "param", "code"}}. */
void srv_error(srv_response *out, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* SSE (stream.c): up to max bytes of the stream into buf; blocks until
 * there are some. Returns the count, -1 at the end, -2 when the client
 * went away or the stream failed. srv_stream_free ends the request (cancelling what still
 * runs) and records it. */
long srv_stream_read(srv_stream *st, char *buf, size_t max, const srv_peer *peer);
void srv_stream_free(srv_stream *st);

#endif
