/*
 * conns.c — the server's connections (see http.h): each is a thread of
 * libmicrohttpd's, so their number is what bounds the server's threads.
 *
 * The limit is sized from the machine (open files, threads, memory) unless
 * given, and libmicrohttpd caps each client address. The listening socket
 * is ours: an acceptor thread hands connections to libmicrohttpd only while
 * there is room. At its limit libmicrohttpd would accept and close each new
 * connection, so a flood holding every slot would refuse every other
 * client; left in the kernel's backlog instead, a new client waits for the
 * next slot a deadline frees.
 *
 * libmicrohttpd's idle timeout restarts on every byte, so a client sending
 * one byte a second would hold its connection for ever. A watchdog thread
 * gives each request a deadline for its headers (from the connection's
 * start, or from the end of the previous request on a kept-alive one) and
 * one for its body (from the headers), and shuts down the socket of one
 * that misses it. Once quiesced it closes every connection not in a
 * request.
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "server/http.h"

enum {
    WATCH_MS = 100,     /* how often the watchdog looks */
    FD_RESERVE = 64,    /* descriptors kept for the model, the log, the listener */
    CONN_MEM = 4 << 20, /* bytes budgeted per connection when sizing from memory */
    MAX_CONNECTIONS = 65536,
};

void srv_conns_init(fg_server *s)
{
    s->listen_fd = -1;
    pthread_mutex_init(&s->conns_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wd_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&s->slot_cv, NULL);
}

/* ---- Sizing ------------------------------------------------------------------------ */

static long read_long(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

/* The open-file limit less what the process needs besides connections. */
long srv_conns_fd_room(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024 - FD_RESERVE;
    long n = rl.rlim_cur == RLIM_INFINITY ? MAX_CONNECTIONS + FD_RESERVE : (long)rl.rlim_cur;
    return n - FD_RESERVE;
}

/* The connections this machine can hold: each is a socket, a thread (with
 * its stack and libmicrohttpd's 32 KiB buffer) and whatever body it brings.
 * The least of: the open files left; half the threads the user and the
 * kernel allow; a quarter of the memory (the cgroup's, when it has less) at
 * CONN_MEM each. */
int srv_conns_machine_limit(void)
{
    long n = srv_conns_fd_room();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NPROC, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (long)(rl.rlim_cur / 2) < n)
        n = (long)(rl.rlim_cur / 2);
    long tmax = read_long("/proc/sys/kernel/threads-max");
    if (tmax > 0 && tmax / 2 < n) n = tmax / 2;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double mem = pages > 0 && page > 0 ? (double)pages * (double)page : 0;
    long cg = read_long("/sys/fs/cgroup/memory.max"); /* "max" reads as -1 */
    if (cg > 0 && (double)cg < mem) mem = (double)cg;
    if (mem > 0 && mem / 4 / CONN_MEM < (double)n) n = (long)(mem / 4 / CONN_MEM);
    if (n > MAX_CONNECTIONS) n = MAX_CONNECTIONS;
    return n < 16 ? 16 : (int)n;
}

bool srv_conns_is_loopback(const struct sockaddr *a)
{
    if (a->sa_family == AF_INET) return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
    if (a->sa_family != AF_INET6) return false;
    const struct in6_addr *x = &((const struct sockaddr_in6 *)a)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(x) || (IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127);
}

/* ---- Connection records --------------------------------------------------------- */

conn_rec *srv_conn_rec(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void srv_conn_phase(fg_server *s, conn_rec *r, int phase)
{
    if (!r) return;
    pthread_mutex_lock(&s->conns_mu);
    r->phase = phase;
    r->since_ms = fg_now_ms();
    pthread_mutex_unlock(&s->conns_mu);
}

/* Each connection is on the list from its start to its end; libmicrohttpd
 * tells of its end before it closes the socket, so a socket on the list is
 * always the connection's own. */
void srv_conns_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode toe)
{
    fg_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_rec *r = ci ? calloc(1, sizeof *r) : NULL;
        if (!r) return; /* no memory: this one goes without deadlines */
        r->fd = ci->connect_fd;
        r->phase = CONN_HEAD;
        r->since_ms = fg_now_ms();
        pthread_mutex_lock(&s->conns_mu);
        r->next = s->conns;
        if (s->conns) s->conns->prev = r;
        s->conns = r;
        pthread_mutex_unlock(&s->conns_mu);
        *socket_context = r;
        return;
    }
    conn_rec *r = *socket_context;
    pthread_mutex_lock(&s->conns_mu);
    s->n_conns--;
    pthread_cond_signal(&s->slot_cv);
    if (r) {
        if (r->prev) r->prev->next = r->next;
        else s->conns = r->next;
        if (r->next) r->next->prev = r->prev;
    }
    pthread_mutex_unlock(&s->conns_mu);
    free(r);
    *socket_context = NULL;
}

/* ---- The listening socket and the acceptor ---------------------------------------- */

fg_status srv_conns_listen(fg_server *s, const struct addrinfo *a, const char *host, int port)
{
    int one = 1;
    s->listen_fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0 || setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(s->listen_fd, a->ai_addr, a->ai_addrlen) != 0 || listen(s->listen_fd, SOMAXCONN) != 0)
        return fg_err_set(FG_ERR_IO, "cannot listen on %s:%d: %s", host, port, strerror(errno));
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    s->port = port;
    if (getsockname(s->listen_fd, (struct sockaddr *)&bound, &bl) == 0)
        s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    return FG_OK;
}

/* Accepts while there is room, and hands each connection to libmicrohttpd
 * (which applies the per-address cap, closing one over it at once). Ends
 * when quiesced (the listening socket shut down). */
static void *acceptor_main(void *arg)
{
    fg_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->conns_mu);
        while (!s->quiesced && s->n_conns >= s->max_connections) pthread_cond_wait(&s->slot_cv, &s->conns_mu);
        bool stop = s->quiesced;
        pthread_mutex_unlock(&s->conns_mu);
        if (stop) break;
        struct sockaddr_storage a;
        socklen_t al = sizeof a;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&a, &al, SOCK_CLOEXEC);
        if (fd < 0) {
            pthread_mutex_lock(&s->conns_mu);
            stop = s->quiesced;
            pthread_mutex_unlock(&s->conns_mu);
            if (stop) break;
            /* Out of descriptors or memory: the client waits in the backlog. */
            if (errno != EINTR && errno != ECONNABORTED)
                nanosleep(&(struct timespec){0, 50 * 1000000L}, NULL);
            continue;
        }
        pthread_mutex_lock(&s->conns_mu);
        s->n_conns++;
        pthread_mutex_unlock(&s->conns_mu);
        /* On failure libmicrohttpd has closed fd, and told of no start.
         * (One it fails to set up later, in its own thread, for want of
         * memory for the connection's pool, is never told of and stays
         * counted: the limit would shrink by one each time.) */
        if (MHD_add_connection(s->d, fd, (struct sockaddr *)&a, al) != MHD_YES) {
            pthread_mutex_lock(&s->conns_mu);
            s->n_conns--;
            pthread_mutex_unlock(&s->conns_mu);
        }
    }
    return NULL;
}

/* ---- The watchdog ----------------------------------------------------------------- */

/* Shuts down the sockets of requests past their header or body deadline,
 * and, once quiesced, of every connection not in a request. libmicrohttpd
 * then reads the end of input and closes the connection; no response is
 * sent, as nginx sends none for its client_header_timeout. */
static void *watchdog_main(void *arg)
{
    fg_server *s = arg;
    pthread_mutex_lock(&s->conns_mu);
    while (!s->wd_stop) {
        double now = fg_now_ms();
        for (conn_rec *r = s->conns; r; r = r->next) {
            if (r->cut || r->phase == CONN_BUSY) continue;
            double limit = r->phase == CONN_HEAD ? s->header_ms : s->body_ms;
            if (s->quiesced || now - r->since_ms > limit) {
                shutdown(r->fd, SHUT_RDWR);
                r->cut = true;
            }
        }
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_nsec += WATCH_MS * 1000000L;
        if (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->wd_cv, &s->conns_mu, &t);
    }
    pthread_mutex_unlock(&s->conns_mu);
    return NULL;
}

fg_status srv_conns_start(fg_server *s)
{
    if (pthread_create(&s->wd, NULL, watchdog_main, s) != 0)
        return fg_err_set(FG_ERR_IO, "server: cannot start the watchdog thread");
    s->wd_running = true;
    if (pthread_create(&s->acc, NULL, acceptor_main, s) != 0)
        return fg_err_set(FG_ERR_IO, "server: cannot start the acceptor thread");
    s->acc_running = true;
    return FG_OK;
}

void srv_conns_quiesce(fg_server *s)
{
    pthread_mutex_lock(&s->conns_mu);
    s->quiesced = true;
    pthread_cond_signal(&s->wd_cv);
    pthread_cond_signal(&s->slot_cv);
    pthread_mutex_unlock(&s->conns_mu);
    /* Shutting the listening socket down wakes the acceptor from accept
     * (EINVAL); connections still in the backlog are reset. */
    if (s->listen_fd >= 0) shutdown(s->listen_fd, SHUT_RDWR);
    if (s->acc_running) pthread_join(s->acc, NULL);
    s->acc_running = false;
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
}

void srv_conns_free(fg_server *s)
{
    if (s->wd_running) {
        pthread_mutex_lock(&s->conns_mu);
        s->wd_stop = true;
        pthread_cond_signal(&s->wd_cv);
        pthread_mutex_unlock(&s->conns_mu);
        pthread_join(s->wd, NULL);
        s->wd_running = false;
    }
    pthread_cond_destroy(&s->wd_cv);
    pthread_cond_destroy(&s->slot_cv);
    pthread_mutex_destroy(&s->conns_mu);
}
