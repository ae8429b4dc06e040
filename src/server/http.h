/*
 * http.h — private to http.c (requests and responses) and conns.c
 * (connections: the listening socket, the acceptor, the connection limit
 * and the deadlines): the server's state, which both see.
 */
#ifndef FG_SERVER_HTTP_H
#define FG_SERVER_HTTP_H

#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "server/server.h"

/* One TCP connection (libmicrohttpd's socket context), on conns.c's list
 * from its start to its end. */
typedef struct conn_rec {
    struct conn_rec *prev, *next;
    MHD_socket fd;
    int phase;       /* CONN_* */
    double since_ms; /* when the phase began (fg_now_ms) */
    bool cut;        /* the watchdog shut its socket down */
} conn_rec;

/* What a connection is doing, for its deadline: waiting for a request's
 * headers (header deadline), for its body (body deadline), or handling it
 * (none: generating takes what it takes, writing is under the idle
 * timeout). */
enum { CONN_HEAD, CONN_BODY, CONN_BUSY };

struct fg_server {
    struct MHD_Daemon *d;
    srv_routes *routes;
    srv_metrics metrics;
    char *api_key;
    size_t max_body;
    int port;
    int max_connections, max_per_ip;
    bool loopback;        /* bound to 127/8 or ::1: the Host header is checked */
    char **origins;       /* (n_origins) allowed CORS origins */
    int n_origins;
    bool any_origin;      /* --cors-origins '*' */
    bool quiesced, shut;
    atomic_int in_flight; /* requests from their request line until they end */
    unsigned idle_s;      /* libmicrohttpd's idle timeout, seconds */

    /* conns.c. conns_mu guards the list, the phases, n_conns, quiesced and
     * wd_stop. */
    int listen_fd;
    pthread_t acc, wd;
    bool acc_running, wd_running, wd_stop;
    pthread_mutex_t conns_mu;
    pthread_cond_t wd_cv, slot_cv;
    int n_conns; /* handed to libmicrohttpd and not yet closed */
    conn_rec *conns;
    double header_ms, body_ms;
};

/* libmicrohttpd's own limit is ours plus this: its count of a closing
 * connection drops a little after ours, and at its limit it would close a
 * new connection at once. */
enum { CONN_MHD_MARGIN = 64 };

/* ---- conns.c ------------------------------------------------------------------ */

/* Initializes the fields above (listen_fd -1, the lock, the conditions). */
void srv_conns_init(fg_server *s);
/* Descriptors the open-file limit leaves for connections. */
long srv_conns_fd_room(void);
/* The connection limit sized from the machine. */
int srv_conns_machine_limit(void);
bool srv_conns_is_loopback(const struct sockaddr *a);
/* Binds and listens on a (sets s->port); the FG_ERR_IO message names host. */
fg_status srv_conns_listen(fg_server *s, const struct addrinfo *a, const char *host, int port);
/* Starts the watchdog, then the acceptor (s->d must be running). */
fg_status srv_conns_start(fg_server *s);
/* Closes the listening socket and joins the acceptor; the watchdog then
 * closes every connection not in a request. */
void srv_conns_quiesce(fg_server *s);
/* Joins the watchdog and frees what srv_conns_init made. */
void srv_conns_free(fg_server *s);
/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION callback (cls: the server). */
void srv_conns_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode toe);
/* A connection's record (NULL if it has none) and its phase changes. */
conn_rec *srv_conn_rec(struct MHD_Connection *c);
void srv_conn_phase(fg_server *s, conn_rec *r, int phase);

#endif
