/*
 * serve.c — `forge serve`: the OpenAI-compatible HTTP server (src/server/).
 *
 * The server listens at once and the model loads on a second thread, so
 * /health answers 503 while it loads and 200 once the engine serves. The
 * main thread waits for SIGINT or SIGTERM (blocked in every thread, taken
 * with sigtimedwait): on the first it stops accepting connections, lets
 * requests in flight run for up to --drain seconds, cancels the rest, and
 * exits 0; a second signal cuts the drain short (cancelling at once), or,
 * while the model still loads, exits 1 without waiting for it. A model that
 * fails to load ends the server with exit 1.
 *
 * Each connection is a thread of the server, so the open-file soft limit
 * is raised to the hard limit first, as nginx and others do: the default
 * connection limit is sized from it.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "server/server.h"

enum {
    OPT_HOST = OPT_CMD_FIRST,
    OPT_PORT,
    OPT_API_KEY,
    OPT_PARALLEL,
    OPT_MAX_QUEUE,
    OPT_ALIAS,
    OPT_MAX_BODY,
    OPT_DRAIN,
    OPT_HEADER_TIMEOUT,
    OPT_BODY_TIMEOUT,
    OPT_IDLE_TIMEOUT,
    OPT_MAX_CONNECTIONS,
    OPT_MAX_PER_IP,
    OPT_CORS,
    OPT_MAX_CHOICES,
    OPT_REQUEST_MEM,
    OPT_MEM_BUDGET,
};

static void help(void)
{
    printf("usage: forge serve [options]\n\n"
           "An OpenAI-compatible HTTP server: POST /v1/completions, /v1/chat/completions,\n"
           "/tokenize, /detokenize, /v1/requests/{id}/cancel; GET /v1/models, /v1/requests/{id},\n"
           "/health, /metrics. The model loads in the background (/health answers 503 until\n"
           "it is ready). SIGINT or SIGTERM stops it cleanly.\n\n"
           "      --host ADDR        address to listen on (default: 127.0.0.1)\n"
           "      --port N           port (default: 8080; 0: any free port, printed at start)\n"
           "      --api-key KEY      require 'Authorization: Bearer KEY' on every route but /health\n"
           "                         and /metrics (default: $FORGE_API_KEY, else none; an empty key\n"
           "                         is an error)\n"
           "      --ctx N            context length of each sequence (same as -c)\n"
           "      --parallel N       sequences decoded together (default: 64 on a GPU, 8 on the CPU)\n"
           "      --max-queue N      requests waiting before new ones get 429 (default: 256)\n"
           "      --alias NAME       the model name the API reports (default: the file's base name)\n"
           "      --max-body BYTES   largest request body; larger is 413 (default: 8388608)\n"
           "      --drain SECONDS    on SIGINT/SIGTERM, how long requests in flight may finish before\n"
           "                         they are cancelled (default: 10); a second signal cancels at once\n"
           "      --max-connections N  concurrent connections, a thread each (default: sized from the\n"
           "                         open-file limit, threads and memory; printed at start)\n"
           "      --max-conns-per-ip N connections from one client address (default: 256; 0: no cap)\n"
           "      --header-timeout S a request's headers must arrive within S seconds of its start\n"
           "                         (or of the previous request's end on a kept-alive connection)\n"
           "                         (default: 10)\n"
           "      --body-timeout S   its body within S seconds of its headers (default: 30)\n"
           "      --idle-timeout S   a connection with no traffic for S seconds is closed (default: 30)\n"
           "      --cors-origins LIST  origins allowed to call the API from a browser: comma-separated\n"
           "                         scheme://host[:port], or '*' (default: none). OPTIONS preflights\n"
           "                         need no key. Bound to loopback, the server answers only a Host of\n"
           "                         localhost, 127.0.0.1 or [::1] (DNS rebinding)\n"
           "      --max-choices N    choices (prompts x n) in one request; more is 413 (default: 64)\n"
           "      --request-mem MIB  memory one request may take to parse and tokenize; more is 413\n"
           "                         (default: 128)\n"
           "      --mem-budget MIB   memory all requests being parsed may take; more is 429 (default: 512)\n\n");
    fg_cli_engine_help();
    fg_cli_serving_help();
    printf("  -h, --help             show this help\n");
}

typedef struct loader {
    fg_cli_engine_opts eo;
    int32_t parallel, max_queue;
    fg_engine *e;
    fg_status st;
    char error[1024];
    atomic_bool done;
} loader;

static void *load_main(void *arg)
{
    loader *l = arg;
    fg_engine_config c = fg_engine_config_default();
    c.device = l->eo.device;
    c.n_threads = l->eo.n_threads;
    c.ctx = l->eo.n_ctx;
    c.max_step_tokens = l->eo.n_batch;
    c.kv_type = l->eo.kv_f32 ? FG_KV_F32 : FG_KV_F16;
    if (l->eo.kv_fraction > 0) c.kv_fraction = l->eo.kv_fraction;
    c.batch_invariant = l->eo.batch_invariant;
    c.max_running = l->parallel;
    c.max_waiting = l->max_queue;
    l->st = fg_engine_open(l->eo.model ? l->eo.model : fg_cli_default_model(), &c, &l->e);
    if (l->st != FG_OK) snprintf(l->error, sizeof l->error, "%s", fg_last_error());
    atomic_store(&l->done, true);
    return NULL;
}

/* The file's base name without .gguf. */
static void model_name(const char *path, char *out, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, cap, "%s", b);
    size_t n = strlen(out);
    if (n > 5 && strcmp(out + n - 5, ".gguf") == 0) out[n - 5] = 0;
}

int fg_cli_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        FG_CLI_ENGINE_OPTIONS,
        FG_CLI_SERVING_OPTIONS,
        {"ctx", required_argument, 0, 'c'},
        {"host", required_argument, 0, OPT_HOST},
        {"port", required_argument, 0, OPT_PORT},
        {"api-key", required_argument, 0, OPT_API_KEY},
        {"parallel", required_argument, 0, OPT_PARALLEL},
        {"max-queue", required_argument, 0, OPT_MAX_QUEUE},
        {"alias", required_argument, 0, OPT_ALIAS},
        {"max-body", required_argument, 0, OPT_MAX_BODY},
        {"drain", required_argument, 0, OPT_DRAIN},
        {"header-timeout", required_argument, 0, OPT_HEADER_TIMEOUT},
        {"body-timeout", required_argument, 0, OPT_BODY_TIMEOUT},
        {"idle-timeout", required_argument, 0, OPT_IDLE_TIMEOUT},
        {"max-connections", required_argument, 0, OPT_MAX_CONNECTIONS},
        {"max-conns-per-ip", required_argument, 0, OPT_MAX_PER_IP},
        {"cors-origins", required_argument, 0, OPT_CORS},
        {"max-choices", required_argument, 0, OPT_MAX_CHOICES},
        {"request-mem", required_argument, 0, OPT_REQUEST_MEM},
        {"mem-budget", required_argument, 0, OPT_MEM_BUDGET},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    loader *l = calloc(1, sizeof *l);
    if (!l) return 1;
    fg_server_config sc = {.host = "127.0.0.1", .port = 8080, .max_body = 8u << 20};
    int32_t port = 8080, max_body = 8 << 20, drain = 10, header_s = 10, body_s = 30, idle_s = 30, max_conns = 0,
            per_ip = 256;
    bool key_given = false;
    int32_t max_choices = 64, request_mib = 128, budget_mib = 512;
    char alias[256] = "";
    int c, rc = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, FG_CLI_ENGINE_SHORT "h", opts, NULL)) != -1) {
        int r = fg_cli_engine_opt("serve", c, optarg, &l->eo);
        if (r >= 0) {
            if (r) rc = r;
            if (rc) break;
            continue;
        }
        switch (c) {
        case OPT_HOST: sc.host = optarg; break;
        case OPT_PORT: rc = fg_cli_parse_int("serve", "--port", optarg, 0, 65535, &port); break;
        case OPT_API_KEY:
            sc.api_key = optarg;
            key_given = true;
            if (!*optarg)
                rc = fg_cli_usage_error("serve", "--api-key is empty: give a key, or leave the option out to run "
                                                 "without authentication");
            break;
        case OPT_PARALLEL: rc = fg_cli_parse_int("serve", "--parallel", optarg, 1, 4096, &l->parallel); break;
        case OPT_MAX_QUEUE: rc = fg_cli_parse_int("serve", "--max-queue", optarg, 1, 65536, &l->max_queue); break;
        case OPT_ALIAS: snprintf(alias, sizeof alias, "%s", optarg); break;
        case OPT_MAX_BODY: rc = fg_cli_parse_int("serve", "--max-body", optarg, 1024, 1 << 30, &max_body); break;
        case OPT_DRAIN: rc = fg_cli_parse_int("serve", "--drain", optarg, 0, 86400, &drain); break;
        case OPT_HEADER_TIMEOUT:
            rc = fg_cli_parse_int("serve", "--header-timeout", optarg, 1, 3600, &header_s);
            break;
        case OPT_BODY_TIMEOUT: rc = fg_cli_parse_int("serve", "--body-timeout", optarg, 1, 86400, &body_s); break;
        case OPT_IDLE_TIMEOUT: rc = fg_cli_parse_int("serve", "--idle-timeout", optarg, 1, 86400, &idle_s); break;
        case OPT_MAX_CONNECTIONS:
            rc = fg_cli_parse_int("serve", "--max-connections", optarg, 1, 65536, &max_conns);
            break;
        case OPT_MAX_PER_IP:
            rc = fg_cli_parse_int("serve", "--max-conns-per-ip", optarg, 0, 65536, &per_ip);
            break;
        case OPT_CORS: sc.cors_origins = optarg; break;
        case OPT_MAX_CHOICES: rc = fg_cli_parse_int("serve", "--max-choices", optarg, 1, 65536, &max_choices); break;
        case OPT_REQUEST_MEM: rc = fg_cli_parse_int("serve", "--request-mem", optarg, 1, 1 << 20, &request_mib); break;
        case OPT_MEM_BUDGET: rc = fg_cli_parse_int("serve", "--mem-budget", optarg, 1, 1 << 20, &budget_mib); break;
        case 'h': help(); free(l); return 0;
        default: rc = fg_cli_usage_error("serve", "unknown option"); break;
        }
        if (rc) break;
    }
    if (!rc && optind < argc) rc = fg_cli_usage_error("serve", "unexpected argument '%s'", argv[optind]);
    if (!rc && !key_given) {
        /* A deploy script whose variable is unset must not turn
         * authentication off without a word. */
        const char *env = getenv("FORGE_API_KEY");
        if (env && !*env)
            rc = fg_cli_usage_error("serve", "FORGE_API_KEY is set but empty: give it a key, or unset it to run "
                                             "without authentication");
        sc.api_key = env;
    }
    if (rc) {
        free(l);
        return rc;
    }
    sc.port = port;
    sc.max_body = (size_t)max_body;
    sc.header_timeout_s = header_s;
    sc.body_timeout_s = body_s;
    sc.idle_timeout_s = idle_s;
    sc.max_connections = max_conns;
    sc.max_per_ip = per_ip;
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max == RLIM_INFINITY ? 1 << 20 : nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile); /* failing, the smaller limit sizes the server */
    }
    sc.max_choices = max_choices;
    sc.request_mem = (size_t)request_mib << 20;
    sc.mem_budget = (size_t)budget_mib << 20;
    if (!alias[0]) model_name(l->eo.model ? l->eo.model : fg_cli_default_model(), alias, sizeof alias);
    sc.model_name = alias;

    /* Every thread started from here on inherits the mask, so the signals
     * reach only sigtimedwait below. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    fg_server *srv = NULL;
    fg_status st = fg_server_start(&sc, &srv);
    if (st != FG_OK) {
        free(l);
        if (st == FG_ERR_INVALID_ARG) return fg_cli_usage_error("serve", "%s", fg_last_error());
        return fg_cli_fail(st);
    }
    fg_server_info si;
    fg_server_get_info(srv, &si);
    char per_ip_text[32] = "no cap per address";
    if (si.max_per_ip > 0) snprintf(per_ip_text, sizeof per_ip_text, "%d per address", si.max_per_ip);
    fprintf(stderr, "forge serve: listening on http://%s:%d (model %s loading; %s; up to %d connections, %s)\n",
            sc.host, fg_server_port(srv), alias, si.auth ? "API key required" : "no API key: authentication off",
            si.max_connections, per_ip_text);
    if (!si.auth && !si.loopback)
        fprintf(stderr, "forge serve: warning: %s is not a loopback address and there is no API key: anyone who "
                        "can reach it can use the API (set --api-key or FORGE_API_KEY)\n",
                sc.host);
    pthread_t lt;
    if (pthread_create(&lt, NULL, load_main, l) != 0) {
        fg_server_close(srv);
        free(l);
        fprintf(stderr, "forge: error: cannot start the loading thread\n");
        return 1;
    }
    bool joined = false, ready = false;
    int sig = 0;
    for (;;) {
        struct timespec slice = {0, 100 * 1000000L};
        sig = sigtimedwait(&sigs, NULL, &slice);
        if (sig == SIGINT || sig == SIGTERM) break;
        if (!joined && atomic_load(&l->done)) {
            pthread_join(lt, NULL);
            joined = true;
            if (l->st != FG_OK) {
                fprintf(stderr, "forge: error: %s\n", l->error);
                rc = 1;
                break;
            }
            fg_engine_stats es;
            fg_engine_stats_get(l->e, &es);
            fg_server_set_engine(srv, l->e);
            ready = true;
            fprintf(stderr, "forge serve: ready: %s on %s, context %d, %d sequences, KV %lld tokens\n", alias,
                    es.device, es.ctx, es.max_running, (long long)es.kv_tokens);
        }
    }
    if (sig == SIGINT || sig == SIGTERM) {
        fprintf(stderr, "forge serve: %s: stopping (requests in flight have %d s to finish; a second signal "
                        "stops at once)\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM", ready ? drain : 0);
        fg_server_quiesce(srv);
        /* The drain, watching for a second signal as uvicorn and
         * llama-server do. */
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (double ms = 0; ready && ms < drain * 1000.0 && fg_server_live(srv) > 0;) {
            int again = sigtimedwait(&sigs, NULL, &(struct timespec){0, 20 * 1000000L});
            if (again == SIGINT || again == SIGTERM) {
                fprintf(stderr, "forge serve: %s again: cancelling the requests in flight\n",
                        again == SIGINT ? "SIGINT" : "SIGTERM");
                break;
            }
            clock_gettime(CLOCK_MONOTONIC, &t);
            ms = (double)(t.tv_sec - t0.tv_sec) * 1e3 + (double)(t.tv_nsec - t0.tv_nsec) / 1e6;
        }
    }
    fg_server_shutdown(srv, 0);
    /* A load cannot be interrupted: wait for it, unless a signal comes. */
    while (!joined && !atomic_load(&l->done)) {
        int again = sigtimedwait(&sigs, NULL, &(struct timespec){0, 100 * 1000000L});
        if (again == SIGINT || again == SIGTERM) {
            fprintf(stderr, "forge serve: %s: exiting without waiting for the model to load\n",
                    again == SIGINT ? "SIGINT" : "SIGTERM");
            _exit(1);
        }
    }
    if (!joined) pthread_join(lt, NULL);
    fg_server_close(srv);
    fg_engine_close(l->e);
    free(l);
    if (rc == 0) fprintf(stderr, "forge serve: stopped\n");
    return rc;
}
