/*
 * metrics.c — /metrics in the Prometheus text format, with vLLM's metric
 * names under a "forge:" prefix and a model_name label, so that dashboards
 * built for vLLM read forge with a changed prefix.
 *
 * Gauges and token counters come from the engine (fg_engine_stats_get);
 * the latency histograms and the finish-reason counters are kept here, fed
 * by the routes as each request ends (srv_metrics_observe). Inter-token
 * latency is observed as the request's mean decode interval, once per
 * token after the first (the engine keeps the mean, not each interval).
 * Buckets are vLLM's.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

static const double TTFT_BOUNDS[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                     1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double ITL_BOUNDS[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double E2E_BOUNDS[] = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,   5.0,   10.0,   15.0, 20.0,
                                    30.0, 40.0, 50.0, 60.0, 120., 240.0, 480.0, 960.0, 1920.0, 7680.0};

static void hist_init(srv_hist *h, const double *bounds, int n)
{
    memset(h, 0, sizeof *h);
    h->bounds = bounds;
    h->n = n;
}

static void hist_observe(srv_hist *h, double v, uint64_t times)
{
    int i = 0;
    while (i < h->n && v > h->bounds[i]) i++;
    if (i < h->n) h->counts[i] += times; /* above the last bound: only in +Inf */
    h->count += times;
    h->sum += v * (double)times;
}

void srv_metrics_init(srv_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->ttft, TTFT_BOUNDS, sizeof TTFT_BOUNDS / sizeof *TTFT_BOUNDS);
    hist_init(&m->itl, ITL_BOUNDS, sizeof ITL_BOUNDS / sizeof *ITL_BOUNDS);
    hist_init(&m->e2e, E2E_BOUNDS, sizeof E2E_BOUNDS / sizeof *E2E_BOUNDS);
}

void srv_metrics_free(srv_metrics *m)
{
    pthread_mutex_destroy(&m->mu);
}

void srv_metrics_observe(srv_metrics *m, const fg_request_info *info)
{
    int reason = SRV_REASON_ABORT;
    switch (info->finish) {
    case FG_FINISH_EOS:
    case FG_FINISH_STOP: reason = SRV_REASON_STOP; break;
    case FG_FINISH_LENGTH:
    case FG_FINISH_CONTEXT: reason = SRV_REASON_LENGTH; break;
    case FG_FINISH_ERROR: reason = SRV_REASON_ERROR; break;
    default: break;
    }
    pthread_mutex_lock(&m->mu);
    if (info->ttft_ms >= 0) hist_observe(&m->ttft, info->ttft_ms / 1e3, 1);
    if (info->n_gen >= 2) hist_observe(&m->itl, info->decode_ms_per_token / 1e3, (uint64_t)(info->n_gen - 1));
    hist_observe(&m->e2e, info->total_ms / 1e3, 1);
    m->success[reason]++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_status(srv_metrics *m, int http_status)
{
    pthread_mutex_lock(&m->mu);
    if (http_status >= 500) m->http_5xx++;
    else if (http_status >= 400) m->http_4xx++;
    pthread_mutex_unlock(&m->mu);
}

/* ---- Rendering ------------------------------------------------------------------ */

typedef struct outbuf {
    char *s;
    size_t len, cap;
    bool failed;
} outbuf;

__attribute__((format(printf, 2, 3))) static void put(outbuf *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = o->cap - o->len;
        int n = o->s ? vsnprintf(o->s + o->len, room, fmt, ap) : -1;
        va_end(ap);
        if (o->s && n >= 0 && (size_t)n < room) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap ? 2 * o->cap : 8192;
        char *ns = realloc(o->s, cap);
        if (!ns) {
            o->failed = true;
            return;
        }
        o->s = ns;
        o->cap = cap;
    }
}

static void metric(outbuf *o, const char *type, const char *name, const char *help, const char *label, double v)
{
    put(o, "# HELP forge:%s %s\n# TYPE forge:%s %s\nforge:%s{%s} %.17g\n", name, help, name, type, name, label, v);
}

static void hist(outbuf *o, const char *name, const char *help, const char *label, const srv_hist *h)
{
    put(o, "# HELP forge:%s %s\n# TYPE forge:%s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->counts[i];
        put(o, "forge:%s_bucket{%s,le=\"%g\"} %llu\n", name, label, h->bounds[i], (unsigned long long)cum);
    }
    put(o, "forge:%s_bucket{%s,le=\"+Inf\"} %llu\n", name, label, (unsigned long long)h->count);
    put(o, "forge:%s_sum{%s} %.17g\nforge:%s_count{%s} %llu\n", name, label, h->sum, name, label,
        (unsigned long long)h->count);
}

char *srv_metrics_render(srv_metrics *m, fg_engine *e, const char *model_name)
{
    fg_engine_stats s = {0};
    if (e) fg_engine_stats_get(e, &s);
    char label[256];
    /* The name is ours (a file's base name or --alias): escape what the
     * label syntax needs. */
    size_t k = 0;
    k += (size_t)snprintf(label, sizeof label, "model_name=\"");
    for (const char *p = model_name; *p && k < sizeof label - 4; p++) {
        if (*p == '"' || *p == '\\') label[k++] = '\\';
        label[k++] = *p == '\n' ? ' ' : *p;
    }
    label[k++] = '"';
    label[k] = 0;

    outbuf o = {0};
    metric(&o, "gauge", "num_requests_running", "Requests in the engine's current batch (prefilling or decoding).",
           label, s.running);
    metric(&o, "gauge", "num_requests_waiting", "Requests waiting to be scheduled.", label, s.waiting);
    metric(&o, "gauge", "kv_cache_usage_perc", "KV-cache usage: 1 means 100 percent of the blocks are held.", label,
           s.kv_blocks > 0 ? (double)s.kv_used / s.kv_blocks : 0.0);
    metric(&o, "counter", "prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.", label,
           (double)s.prompt_tokens);
    metric(&o, "counter", "prefix_cache_hits_total", "Prompt tokens found in the prefix cache.", label,
           (double)s.cached_tokens);
    metric(&o, "counter", "prompt_tokens_total", "Prompt tokens processed.", label, (double)s.prompt_tokens);
    metric(&o, "counter", "generation_tokens_total", "Tokens generated.", label, (double)s.generated_tokens);
    pthread_mutex_lock(&m->mu);
    static const char *const reasons[] = {"stop", "length", "abort", "error"};
    put(&o, "# HELP forge:request_success_total Requests ended, by finish reason.\n"
            "# TYPE forge:request_success_total counter\n");
    for (int i = 0; i < 4; i++)
        put(&o, "forge:request_success_total{%s,finished_reason=\"%s\"} %llu\n", label, reasons[i],
            (unsigned long long)m->success[i]);
    hist(&o, "time_to_first_token_seconds", "Time to the first generated token.", label, &m->ttft);
    hist(&o, "inter_token_latency_seconds", "Time between generated tokens.", label, &m->itl);
    hist(&o, "e2e_request_latency_seconds", "Time from submission to the end of a request.", label, &m->e2e);
    put(&o, "# HELP forge:http_responses_total HTTP responses by status class.\n"
            "# TYPE forge:http_responses_total counter\n"
            "forge:http_responses_total{%s,code=\"4xx\"} %llu\nforge:http_responses_total{%s,code=\"5xx\"} %llu\n",
        label, (unsigned long long)m->http_4xx, label, (unsigned long long)m->http_5xx);
    pthread_mutex_unlock(&m->mu);
    if (o.failed) {
        free(o.s);
        return NULL;
    }
    return o.s;
}
