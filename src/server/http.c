/*
 * http.c — the libmicrohttpd adapter of server.h: one daemon with a thread
 * per connection, so a route may block on the engine (fg_request_wait) and
 * an SSE reader may block until the next token without holding up other
 * clients.
 *
 * Connections, their limits and deadlines are conns.c's (see http.h).
 *
 * Per request: the Host header is checked when bound to loopback (DNS
 * rebinding); a Transfer-Encoding other than chunked is refused; the body
 * is gathered up to max_body bytes (a larger one is 413: at once when
 * Content-Length says so, else after the rest is discarded); OPTIONS
 * answers CORS preflights without the key; the API key is checked for the
 * /v1 routes and tokenization (not /health or /metrics); a body must be
 * JSON (415); then openai.c answers. Every JSON body sent is valid UTF-8
 * (bytes that are not become U+FFFD: an echoed path may hold any).
 *
 * A client that goes away is noticed by polling its socket while the
 * routes wait: an error or a reset is gone. An end of input (FIN) is not:
 * a client may shut down its write side and keep reading. During a
 * buffered request nothing else is written, so on a FIN the socket is
 * probed once with an interim "100 Continue" (which HTTP/1.1 clients must
 * accept before the final response): a client that closed answers it with
 * a reset, which the next poll sees. A stream's own writes do that job.
 *
 * Owns: the daemon, the routes and the metrics (and, through conns.c, the
 * listening socket and its threads).
 */
#define _GNU_SOURCE /* POLLRDHUP */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/utf8.h"
#include "server/http.h"

enum { MAX_ORIGINS = 64 };

/* A request's state across libmicrohttpd's calls. */
typedef struct conn_ctx {
    fg_buf body;
    bool too_big;
    bool headers;   /* the access handler has seen the headers */
    bool responded; /* we queued a response (else libmicrohttpd made its own) */
    bool http11;    /* the client speaks HTTP/1.1 (may be sent a 100) */
    bool probed;    /* a 100 Continue was sent to test a half-closed client */
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

/* Whether the socket is broken (an error, a reset, both directions shut);
 * *fin says whether the client has ended its input. */
static bool socket_broken(struct MHD_Connection *c, MHD_socket *fd, bool *fin)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    *fin = false;
    if (!ci) return true;
    *fd = ci->connect_fd;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) < 0) return false;
    *fin = (p.revents & POLLRDHUP) != 0;
    return (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
}

/* A buffered request's peer: nothing has been written yet, so a FIN is
 * answered with one probe (see the file's header). */
static bool buffered_peer_gone(void *ctx)
{
    conn_ctx *cc = ctx;
    MHD_socket fd;
    bool fin;
    if (socket_broken(cc->c, &fd, &fin)) return true;
    if (fin && cc->http11 && !cc->probed) {
        static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
        cc->probed = true;
        ssize_t n = send(fd, probe, sizeof probe - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
    }
    return false;
}

/* A stream's peer: its writes provoke the reset of a client that closed. */
static bool stream_peer_gone(void *ctx)
{
    stream_ctx *sc = ctx;
    MHD_socket fd;
    bool fin;
    return socket_broken(sc->c, &fd, &fin);
}

/* ---- Responses ------------------------------------------------------------------ */

/* body, made valid UTF-8: bytes that are not become U+FFFD. JSON's syntax
 * is ASCII, so such bytes are inside strings and the result stays JSON.
 * Frees body when it returns a new string; NULL (body freed) on no memory. */
static char *utf8_fix(char *body)
{
    size_t n = strlen(body), bad;
    if (fg_utf8_valid((const uint8_t *)body, n, &bad)) return body;
    fg_buf o = {0};
    bool okay = fg_buf_append(&o, body, bad);
    for (size_t i = bad; okay && i < n;) {
        uint32_t cp;
        int k = fg_utf8_decode((const uint8_t *)body + i, n - i, &cp);
        okay = k > 0 ? fg_buf_append(&o, body + i, (size_t)k) : fg_buf_append(&o, "\xEF\xBF\xBD", 3);
        i += k > 0 ? (size_t)k : 1;
    }
    free(body);
    if (!okay) free(o.s);
    return okay ? o.s : NULL;
}

static bool origin_allowed(const fg_server *s, const char *origin)
{
    if (s->any_origin) return true;
    for (int i = 0; i < s->n_origins; i++)
        if (strcasecmp(origin, s->origins[i]) == 0) return true;
    return false;
}

/* CORS headers for a request from an allowed Origin, and Vary: Origin
 * whenever the answer depends on it. */
static void add_cors(const fg_server *s, struct MHD_Connection *c, struct MHD_Response *resp)
{
    if (!s->any_origin && s->n_origins == 0) return;
    if (!s->any_origin) MHD_add_response_header(resp, "Vary", "Origin");
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    if (!origin || !origin_allowed(s, origin)) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->any_origin ? "*" : origin);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
}

static enum MHD_Result send_buffer(fg_server *s, struct MHD_Connection *c, srv_response *r)
{
    if (r->body && !r->content_type) r->body = utf8_fix(r->body);
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
    add_cors(s, c, resp);
    srv_metrics_status(&s->metrics, r->status);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream_ctx *sc = cls;
    srv_peer peer = {stream_peer_gone, sc};
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
    add_cors(s, c, resp);
    srv_metrics_status(&s->metrics, r->status);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_response(fg_server *s, conn_ctx *cc, srv_response *r)
{
    cc->responded = true;
    srv_conn_phase(s, cc->rec, CONN_BUSY);
    return r->stream ? send_stream(s, cc->c, r) : send_buffer(s, cc->c, r);
}

/* A header list made only of header-name characters, commas and spaces,
 * safe to echo back. */
static bool header_list_ok(const char *v)
{
    size_t n = strlen(v);
    return n > 0 && n < 1024 && strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_, ") == n;
}

/* OPTIONS: a CORS preflight from an allowed origin gets what it asks for
 * (the methods, the headers it names, for 10 minutes); one from another
 * origin is 403; a plain OPTIONS gets Allow. No key is needed: browsers
 * send preflights without credentials. */
static enum MHD_Result send_options(fg_server *s, conn_ctx *cc)
{
    struct MHD_Connection *c = cc->c;
    const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
    const char *method = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Method");
    if (origin && method && !origin_allowed(s, origin)) {
        srv_response r = {0};
        srv_error(&r, 403, NULL,
                  "cross-origin requests from '%.200s' are not allowed: start the server with --cors-origins "
                  "listing it",
                  origin);
        return send_response(s, cc, &r);
    }
    cc->responded = true;
    srv_conn_phase(s, cc->rec, CONN_BUSY);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, POST, OPTIONS");
    if (origin && method) {
        const char *want = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
        add_cors(s, c, resp);
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                want && header_list_ok(want) ? want : "Authorization, Content-Type");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    }
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_NO_CONTENT, resp);
    MHD_destroy_response(resp);
    return ret;
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

/* A Host header naming the loopback: localhost (or a name under it, which
 * browsers resolve to loopback themselves), 127.x.y.z or [::1], with an
 * optional port. Anything else at a loopback server is a page's request
 * through a name that was rebound to 127.0.0.1. */
static bool loopback_host(const char *h)
{
    char name[256];
    const char *end;
    if (h[0] == '[') {
        end = strchr(h, ']');
        if (!end || end - h != 4 || strncmp(h, "[::1", 4) != 0) return false;
        end++;
        snprintf(name, sizeof name, "::1");
    } else {
        end = strchr(h, ':');
        if (!end) end = h + strlen(h);
        if ((size_t)(end - h) >= sizeof name || end == h) return false;
        memcpy(name, h, (size_t)(end - h));
        name[end - h] = 0;
    }
    if (*end == ':' && (!end[1] || strspn(end + 1, "0123456789") != strlen(end + 1))) return false;
    if (*end && *end != ':') return false;
    size_t n = strlen(name);
    if (strcasecmp(name, "localhost") == 0 || strcmp(name, "::1") == 0) return true;
    if (n > 10 && strcasecmp(name + n - 10, ".localhost") == 0) return true;
    struct in_addr a;
    return inet_pton(AF_INET, name, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* application/json, or any application/...+json, parameters allowed. */
static bool json_type(const char *ct)
{
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t n = strcspn(ct, "; \t");
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0) return true;
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* Checks made as soon as the headers are in, before any body is read: a
 * refusal here sends its error and closes the connection. */
static bool refuse_early(fg_server *s, struct MHD_Connection *c, srv_response *r)
{
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (s->loopback && host && !loopback_host(host)) {
        srv_error(r, 403, NULL,
                  "the Host header '%.100s' is not a loopback name: this server listens on a loopback address "
                  "and answers only localhost, 127.0.0.1 or [::1] (a guard against DNS rebinding); serve "
                  "other names with --host",
                  host);
        return true;
    }
    /* libmicrohttpd decodes only "chunked"; with any other coding it would
     * read the body until the client closes. RFC 9112 6.1: a coding not
     * ending in chunked leaves the length unknown (400); one that ends in
     * it but adds another is not implemented (501). */
    const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te && strcasecmp(te, "chunked") != 0) {
        size_t n = strlen(te);
        while (n > 0 && (te[n - 1] == ' ' || te[n - 1] == '\t')) n--;
        bool chunked_last = n >= 7 && strncasecmp(te + n - 7, "chunked", 7) == 0;
        srv_error(r, chunked_last ? 501 : 400, NULL,
                  "Transfer-Encoding '%.100s' is not supported: send the body as is with Content-Length, or "
                  "chunked",
                  te);
        return true;
    }
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

/* libmicrohttpd's URI logger runs as soon as the request line is parsed:
 * the request's state starts here, so that its end is reported even when
 * libmicrohttpd itself refuses the request (its own error responses are
 * counted in on_completed). */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)uri;
    fg_server *s = cls;
    conn_ctx *cc = calloc(1, sizeof *cc);
    if (!cc) return NULL;
    cc->c = c;
    cc->rec = srv_conn_rec(c);
    atomic_fetch_add(&s->in_flight, 1);
    return cc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **ptr)
{
    fg_server *s = cls;
    conn_ctx *cc = *ptr;
    if (!cc) {
        cc = on_request_line(s, url, c);
        if (!cc) return MHD_NO;
        *ptr = cc;
    }
    if (!cc->headers) {
        cc->headers = true;
        cc->http11 = version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0;
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
    if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0) return send_options(s, cc);
    if (s->api_key && needs_key(url)) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!auth || strncmp(auth, "Bearer ", 7) != 0 || !same_secret(auth + 7, s->api_key)) {
            srv_error(&r, 401, NULL, auth ? "incorrect API key provided" : "no API key provided: send the header "
                                                                            "'Authorization: Bearer KEY'");
            return send_response(s, cc, &r);
        }
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (cc->body.len > 0 && ct && !json_type(ct)) {
        srv_error(&r, 415, NULL,
                  "the body's Content-Type is '%.100s'; send it as 'Content-Type: application/json' (curl -d "
                  "sends a form unless given -H 'Content-Type: application/json')",
                  ct);
        return send_response(s, cc, &r);
    }
    srv_peer peer = {buffered_peer_gone, cc};
    srv_routes_handle(s->routes, method, url, cc->body.s ? cc->body.s : "", cc->body.len, &peer, &r);
    return send_response(s, cc, &r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ptr, enum MHD_RequestTerminationCode why)
{
    (void)why;
    fg_server *s = cls;
    conn_ctx *cc = *ptr;
    if (!cc) return;
    if (!cc->responded) {
        /* libmicrohttpd refused the request itself (a malformed header, a
         * chunk line too long, ...): count its status like ours. */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
        if (ci) srv_metrics_status(&s->metrics, (int)ci->http_status);
    }
    /* A kept-alive connection's next request must send its headers in time
     * from now. */
    srv_conn_phase(s, cc->rec, CONN_HEAD);
    atomic_fetch_sub(&s->in_flight, 1);
    free(cc->body.s);
    free(cc);
    *ptr = NULL;
}

/* ---- The daemon ----------------------------------------------------------------- */

/* Parses --cors-origins: "*", or origins "scheme://host[:port]" separated
 * by commas. */
static fg_status parse_origins(fg_server *s, const char *list)
{
    if (!list || !*list) return FG_OK;
    const char *p = list;
    while (*p) {
        p += strspn(p, " ,");
        size_t n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ') n--;
        if (n == 0) break;
        if (n == 1 && *p == '*') {
            s->any_origin = true;
        } else {
            const char *sep = strstr(p, "://");
            bool ok = sep && sep > p && (size_t)(sep - p) + 3 < n && n < 256 &&
                      strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-") ==
                          (size_t)(sep - p);
            for (size_t i = (size_t)(sep ? sep - p : 0) + 3; ok && i < n; i++)
                ok = p[i] != '/' && p[i] != '?' && p[i] != '#' && p[i] != ' ' && (unsigned char)p[i] > 0x20;
            if (!ok)
                return fg_err_set(FG_ERR_INVALID_ARG,
                                  "--cors-origins: '%.*s' is not an origin: give scheme://host[:port] (no path), "
                                  "comma-separated, or '*'",
                                  (int)(n < 200 ? n : 200), p);
            if (s->n_origins == MAX_ORIGINS)
                return fg_err_set(FG_ERR_INVALID_ARG, "--cors-origins: more than %d origins", MAX_ORIGINS);
            char *o = strndup(p, n);
            if (!o) return fg_err_set(FG_ERR_NOMEM, "server: out of memory");
            s->origins[s->n_origins++] = o;
        }
        p += strcspn(p, ",");
    }
    return FG_OK;
}

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
    char **origins = calloc(MAX_ORIGINS, sizeof *origins);
    if (!s || !origins) {
        free(s);
        free(origins);
        freeaddrinfo(ai);
        return fg_err_set(FG_ERR_NOMEM, "server: out of memory");
    }
    s->origins = origins;
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
    fg_status st = parse_origins(s, cfg->cors_origins);
    if (st == FG_OK && cfg->api_key && !s->api_key) st = fg_err_set(FG_ERR_NOMEM, "server: out of memory");
    if (st == FG_OK) st = srv_routes_init(cfg, &s->metrics, &s->routes);
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
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_URI_LOG_CALLBACK, on_request_line, s,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
                            srv_conns_notify, s, MHD_OPTION_CONNECTION_LIMIT,
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
    for (int i = 0; i < s->n_origins; i++) free(s->origins[i]);
    free(s->origins);
    free(s->api_key);
    free(s);
}
