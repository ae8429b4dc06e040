/*
 * http.c — the libmicrohttpd adapter of server.h: one daemon with a thread
 * per connection, so a route may block on the engine (fg_request_wait) and
 * an SSE reader may block until the next token without holding up other
 * clients.
 *
 * Connections, their limits and deadlines are conns.c's (see http.h).
 *
 * Per request: the body is gathered up to max_body bytes (a larger one is
 * 413: at once when Content-Length says so, else after the rest is
 * discarded); the API key is checked for the /v1 routes and tokenization
 * (not /health or /metrics); then openai.c answers. A client that goes away
 * is noticed by peeking its socket (recv MSG_PEEK: 0 bytes = closed), which
 * the routes do while they wait, so a request whose client left is
 * cancelled within a tenth of a second instead of running to its end.
 *
 * Owns: the daemon, the routes and the metrics (and, through conns.c, the
 * listening socket and its threads).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/err.h"
#include "server/http.h"

/* A request's state across libmicrohttpd's calls. */
typedef struct conn_ctx {
    fg_buf body;
    bool too_big;
    bool headers;   /* the access handler has seen the headers */
    struct MHD_Connection *c;
    conn_rec *rec;
} conn_ctx;

/* The SSE reader's closure. */
typedef struct stream_ctx {
    srv_stream *st;
    struct MHD_Connection *c;
    fg_server *s;
} stream_ctx;

/* ---- The peer ----------------------------------------------------------------- */

static bool peer_gone(void *ctx)
{
    struct MHD_Connection *c = ctx;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return true;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return true;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

/* ---- Responses ------------------------------------------------------------------ */

static enum MHD_Result send_buffer(fg_server *s, struct MHD_Connection *c, srv_response *r)
{
    const char *body = r->body ? r->body : "";
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(body), (void *)body, r->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(r->body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type ? r->content_type : "application/json");
    if (r->retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", r->retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (r->request_id[0]) MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (r->status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    srv_metrics_status(&s->metrics, r->status);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream_ctx *sc = cls;
    srv_peer peer = {peer_gone, sc->c};
    long n = srv_stream_read(sc->st, buf, max, &peer);
    /* Waiting for a token is not idleness: restart libmicrohttpd's idle
     * timer (set from 0, it restarts), or a stream queued longer than the
     * idle timeout would be closed before its first event. */
    MHD_set_connection_option(sc->c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
    MHD_set_connection_option(sc->c, MHD_CONNECTION_OPTION_TIMEOUT, sc->s->idle_s);
    if (n == -1) return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    return (ssize_t)n;
}

static void stream_done(void *cls)
{
    stream_ctx *sc = cls;
    srv_stream_free(sc->st);
    free(sc);
}

static enum MHD_Result send_stream(fg_server *s, struct MHD_Connection *c, srv_response *r)
{
    stream_ctx *sc = malloc(sizeof *sc);
    if (!sc) {
        srv_stream_free(r->stream);
        return MHD_NO;
    }
    *sc = (stream_ctx){r->stream, c, s};
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, sc, stream_done);
    if (!resp) {
        stream_done(sc);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    if (r->request_id[0]) MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    srv_metrics_status(&s->metrics, r->status);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_response(fg_server *s, conn_ctx *cc, srv_response *r)
{
    srv_conn_phase(s, cc->rec, CONN_BUSY);
    return r->stream ? send_stream(s, cc->c, r) : send_buffer(s, cc->c, r);
}

/* ---- Requests ------------------------------------------------------------------- */

/* The routes that need the API key: everything but /health and /metrics,
 * as vLLM protects only its API. */
static bool needs_key(const char *url)
{
    return strcmp(url, "/health") != 0 && strcmp(url, "/metrics") != 0;
}

/* Compares in time independent of where the strings differ. */
static bool same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

/* Checks made as soon as the headers are in, before any body is read: a
 * refusal here sends its error and closes the connection. */
static bool refuse_early(fg_server *s, struct MHD_Connection *c, srv_response *r)
{
    /* A body over the limit is read and dropped, so that the client, still
     * sending, gets the 413 rather than a reset connection; one announced
     * absurdly large is refused before it is sent. */
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) / 64 > s->max_body) {
        srv_error(r, 413, NULL, "the request body is %.40s bytes, over the limit of %zu", cl, s->max_body);
        return true;
    }
    return false;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **ptr)
{
    (void)version;
    fg_server *s = cls;
    conn_ctx *cc = *ptr;
    if (!cc) {
        cc = calloc(1, sizeof *cc);
        if (!cc) return MHD_NO;
        cc->c = c;
        cc->rec = srv_conn_rec(c);
        *ptr = cc;
        atomic_fetch_add(&s->in_flight, 1);
    }
    if (!cc->headers) {
        cc->headers = true;
        srv_conn_phase(s, cc->rec, CONN_BODY);
        srv_response r = {0};
        if (refuse_early(s, c, &r)) return send_response(s, cc, &r);
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (cc->too_big || cc->body.len + n > s->max_body) {
            cc->too_big = true;
            return MHD_YES;
        }
        return fg_buf_append(&cc->body, upload, n) ? MHD_YES : MHD_NO;
    }
    srv_conn_phase(s, cc->rec, CONN_BUSY);
    srv_response r = {0};
    if (cc->too_big) {
        srv_error(&r, 413, NULL, "the request body is over the limit of %zu bytes", s->max_body);
        return send_response(s, cc, &r);
    }
    if (s->api_key && needs_key(url)) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth || strncmp(auth, "Bearer ", 7) != 0 || !same_secret(auth + 7, s->api_key)) {
            srv_error(&r, 401, NULL, auth ? "incorrect API key provided" : "no API key provided: send the header "
                                                                            "'Authorization: Bearer KEY'");
            return send_response(s, cc, &r);
        }
    }
    srv_peer peer = {peer_gone, c};
    srv_routes_handle(s->routes, method, url, cc->body.s ? cc->body.s : "", cc->body.len, &peer, &r);
    return send_response(s, cc, &r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ptr, enum MHD_RequestTerminationCode why)
{
    (void)c, (void)why;
    fg_server *s = cls;
    conn_ctx *cc = *ptr;
    if (!cc) return;
    /* A kept-alive connection's next request must send its headers in time
     * from now. */
    srv_conn_phase(s, cc->rec, CONN_HEAD);
    atomic_fetch_sub(&s->in_flight, 1);
    free(cc->body.s);
    free(cc);
    *ptr = NULL;
}

/* ---- The daemon ----------------------------------------------------------------- */

fg_status fg_server_start(const fg_server_config *cfg, fg_server **out)
{
    *out = NULL;
    if (cfg->api_key && !*cfg->api_key)
        return fg_err_set(FG_ERR_INVALID_ARG, "the API key is empty: give a key, or none to run without "
                                              "authentication");
    long room = srv_conns_fd_room();
    if (cfg->max_connections > room)
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "--max-connections %d: the open-file limit leaves room for %ld; raise 'ulimit -n' or "
                          "give fewer",
                          cfg->max_connections, room);
    const char *host = cfg->host && *cfg->host ? cfg->host : "127.0.0.1";
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) return fg_err_set(FG_ERR_INVALID_ARG, "--host %s: %s", host, gai_strerror(gai));
    fg_server *s = calloc(1, sizeof *s);
    if (!s) {
        freeaddrinfo(ai);
        return fg_err_set(FG_ERR_NOMEM, "server: out of memory");
    }
    srv_metrics_init(&s->metrics);
    srv_conns_init(s);
    s->max_body = cfg->max_body;
    s->header_ms = 1000.0 * (cfg->header_timeout_s > 0 ? cfg->header_timeout_s : 10);
    s->body_ms = 1000.0 * (cfg->body_timeout_s > 0 ? cfg->body_timeout_s : 30);
    s->idle_s = (unsigned)(cfg->idle_timeout_s > 0 ? cfg->idle_timeout_s : 30);
    s->max_connections = cfg->max_connections > 0 ? cfg->max_connections : srv_conns_machine_limit();
    s->max_per_ip = cfg->max_per_ip > 0 ? cfg->max_per_ip : 0;
    s->loopback = srv_conns_is_loopback(ai->ai_addr);
    if (cfg->api_key) s->api_key = strdup(cfg->api_key);
    fg_status st = FG_OK;
    if (cfg->api_key && !s->api_key) st = fg_err_set(FG_ERR_NOMEM, "server: out of memory");
    if (st == FG_OK) st = srv_routes_init(cfg->model_name, &s->metrics, &s->routes);
    if (st == FG_OK) st = srv_conns_listen(s, ai, host, cfg->port);
    freeaddrinfo(ai);
    if (st != FG_OK) {
        fg_server_close(s);
        return st;
    }
    /* No listening socket of libmicrohttpd's: conns.c accepts. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ITC |
                     MHD_USE_NO_LISTEN_SOCKET;
    errno = 0;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, srv_conns_notify, s, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)(s->max_connections + CONN_MHD_MARGIN), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                            (unsigned)s->max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, s->idle_s, MHD_OPTION_END);
    int err = errno;
    if (!s->d) {
        fg_server_close(s);
        return fg_err_set(FG_ERR_IO, "cannot start the HTTP server on %s:%d: %s", host, cfg->port,
                          err ? strerror(err) : "libmicrohttpd could not start");
    }
    st = srv_conns_start(s);
    if (st != FG_OK) {
        fg_server_close(s);
        return st;
    }
    *out = s;
    return FG_OK;
}

int fg_server_port(const fg_server *s)
{
    return s->port;
}

void fg_server_get_info(const fg_server *s, fg_server_info *out)
{
    *out = (fg_server_info){s->max_connections, s->max_per_ip, s->loopback, s->api_key != NULL};
}

void fg_server_set_engine(fg_server *s, fg_engine *e)
{
    srv_routes_set_engine(s->routes, e);
}

void fg_server_quiesce(fg_server *s)
{
    if (s->quiesced) return;
    srv_conns_quiesce(s);
    if (s->routes) srv_routes_closing(s->routes);
}

int fg_server_live(fg_server *s)
{
    return srv_routes_live(s->routes);
}

void fg_server_shutdown(fg_server *s, int drain_ms)
{
    fg_server_quiesce(s);
    if (s->shut || !s->d) return;
    s->shut = true;
    for (int waited = 0; waited < drain_ms && srv_routes_live(s->routes) > 0; waited += 20)
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    srv_routes_cancel_all(s->routes);
    /* Cancelled requests still send their ends (a stream's last events);
     * stopping the daemon would cut them. */
    for (int waited = 0; waited < 5000 && atomic_load(&s->in_flight) > 0; waited += 20)
        nanosleep(&(struct timespec){0, 20 * 1000000L}, NULL);
    MHD_stop_daemon(s->d); /* closes what is left and joins the connection threads */
    s->d = NULL;
}

void fg_server_close(fg_server *s)
{
    if (!s) return;
    fg_server_shutdown(s, 0);
    srv_conns_free(s);
    srv_routes_free(s->routes);
    srv_metrics_free(&s->metrics);
    free(s->api_key);
    free(s);
}
