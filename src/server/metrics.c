/*
 * metrics.c — /metrics in the Prometheus text format, with vLLM's metric
 * names, label model_name and buckets, written twice: under a "forge:"
 * prefix and under vLLM's own "vllm:" prefix (with vLLM's engine="0" label
 * too), so that dashboards and alerts built for vLLM read forge unchanged.
 * The series are those vLLM's test suite expects (tests/entrypoints/openai/
 * test_metrics.py, EXPECTED_METRICS_V1) but its deprecated, hidden ones.
 *
 * Gauges, token counters, preemptions and the tokens-per-step histogram
 * come from the engine (fg_engine_stats_get); the per-request histograms
 * and the finish-reason counters are kept here, fed by the routes as each
 * request ends (srv_metrics_observe). Inter-token latency is observed as
 * the request's mean decode interval, once per token after the first (the
 * engine keeps the mean, not each interval). A request's phases are vLLM's:
 * queue = submission to its first step, prefill = first step to first
 * token, decode = first token to the end, inference = prefill + decode.
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

static const double N_BOUNDS[] = {1, 2, 5, 10, 20};

#define N_OF(a) ((int)(sizeof a / sizeof *a))

void srv_metrics_init(srv_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    hist_init(&m->ttft, TTFT_BOUNDS, N_OF(TTFT_BOUNDS));
    hist_init(&m->itl, ITL_BOUNDS, N_OF(ITL_BOUNDS));
    hist_init(&m->e2e, E2E_BOUNDS, N_OF(E2E_BOUNDS));
    hist_init(&m->queue, E2E_BOUNDS, N_OF(E2E_BOUNDS));
    hist_init(&m->prefill, E2E_BOUNDS, N_OF(E2E_BOUNDS));
    hist_init(&m->decode, E2E_BOUNDS, N_OF(E2E_BOUNDS));
    hist_init(&m->inference, E2E_BOUNDS, N_OF(E2E_BOUNDS));
    hist_init(&m->n_param, N_BOUNDS, N_OF(N_BOUNDS));
    srv_metrics_set_ctx(m, 1);
}

/* vLLM's build_1_2_5_buckets(max_model_len): 1, 2, 5, 10, 20, ... <= ctx. */
void srv_metrics_set_ctx(srv_metrics *m, int32_t ctx)
{
    int n = 0;
    for (double p = 1; n < SRV_HIST_MAX_BUCKETS; p *= 10)
        for (int k = 0; k < 3 && n < SRV_HIST_MAX_BUCKETS; k++) {
            double v = p * (k == 0 ? 1 : k == 1 ? 2 : 5);
            if (v > ctx) goto done;
            m->len_bounds[n++] = v;
        }
done:
    pthread_mutex_lock(&m->mu);
    hist_init(&m->prompt_len, m->len_bounds, n);
    hist_init(&m->gen_len, m->len_bounds, n);
    hist_init(&m->max_tokens, m->len_bounds, n);
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_free(srv_metrics *m)
{
    pthread_mutex_destroy(&m->mu);
}

void srv_metrics_observe(srv_metrics *m, const fg_request_info *info, int32_t max_tokens)
{
    /* A request without a reason (its status was lost: the routes record it
     * cancelled) counts as cancelled. */
    fg_finish_reason reason = info->finish > FG_FINISH_NONE && info->finish <= FG_FINISH_ERROR ? info->finish
                                                                                               : FG_FINISH_CANCELLED;
    pthread_mutex_lock(&m->mu);
    if (info->ttft_ms >= 0) hist_observe(&m->ttft, info->ttft_ms / 1e3, 1);
    if (info->n_gen >= 2) hist_observe(&m->itl, info->decode_ms_per_token / 1e3, (uint64_t)(info->n_gen - 1));
    hist_observe(&m->e2e, info->total_ms / 1e3, 1);
    /* A request cancelled in the queue spent all its time there; one
     * cancelled before its first token, the rest in prefill. */
    double total = info->total_ms > 0 ? info->total_ms : 0;
    double sched = info->queue_ms >= 0 ? info->queue_ms : total;
    double first = info->ttft_ms >= 0 ? info->ttft_ms : total;
    hist_observe(&m->queue, sched / 1e3, 1);
    hist_observe(&m->prefill, (first - sched) / 1e3, 1);
    hist_observe(&m->decode, (total - first) / 1e3, 1);
    hist_observe(&m->inference, (total - sched) / 1e3, 1);
    hist_observe(&m->prompt_len, info->n_prompt, 1);
    hist_observe(&m->gen_len, info->n_gen, 1);
    if (max_tokens > 0) hist_observe(&m->max_tokens, max_tokens, 1);
    m->success[reason]++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_observe_n(srv_metrics *m, int n)
{
    pthread_mutex_lock(&m->mu);
    hist_observe(&m->n_param, n, 1);
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

static void metric(outbuf *o, const char *pre, const char *type, const char *name, const char *help,
                   const char *label, double v)
{
    put(o, "# HELP %s:%s %s\n# TYPE %s:%s %s\n%s:%s{%s} %.17g\n", pre, name, help, pre, name, type, pre, name, label,
        v);
}

/* A histogram from non-cumulative counts over bounds (n of them), plus the
 * count above the last bound (in +Inf only). */
static void hist_counts(outbuf *o, const char *pre, const char *name, const char *help, const char *label,
                        const double *bounds, int n, const uint64_t *counts, uint64_t count, double sum)
{
    put(o, "# HELP %s:%s %s\n# TYPE %s:%s histogram\n", pre, name, help, pre, name);
    uint64_t cum = 0;
    for (int i = 0; i < n; i++) {
        cum += counts[i];
        put(o, "%s:%s_bucket{%s,le=\"%g\"} %llu\n", pre, name, label, bounds[i], (unsigned long long)cum);
    }
    put(o, "%s:%s_bucket{%s,le=\"+Inf\"} %llu\n", pre, name, label, (unsigned long long)count);
    put(o, "%s:%s_sum{%s} %.17g\n%s:%s_count{%s} %llu\n", pre, name, label, sum, pre, name, label,
        (unsigned long long)count);
}

static void hist(outbuf *o, const char *pre, const char *name, const char *help, const char *label, const srv_hist *h)
{
    hist_counts(o, pre, name, help, label, h->bounds, h->n, h->counts, h->count, h->sum);
}

/* Every series once, under prefix pre. Under m->mu. */
static void render(outbuf *o, const char *pre, const char *label, const fg_engine_stats *s, const srv_metrics *m)
{
    metric(o, pre, "gauge", "num_requests_running", "Requests in the engine's current batch (prefilling or decoding).",
           label, s->running);
    metric(o, pre, "gauge", "num_requests_waiting", "Requests waiting to be scheduled.", label, s->waiting);
    metric(o, pre, "gauge", "kv_cache_usage_perc", "KV-cache usage: 1 means 100 percent of the blocks are held.",
           label, s->kv_blocks > 0 ? (double)s->kv_used / s->kv_blocks : 0.0);
    metric(o, pre, "counter", "prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.", label,
           (double)s->prompt_tokens);
    metric(o, pre, "counter", "prefix_cache_hits_total", "Prompt tokens found in the prefix cache.", label,
           (double)s->cached_tokens);
    metric(o, pre, "counter", "num_preemptions_total", "Times a request lost its KV blocks and was queued again.",
           label, (double)s->preemptions);
    metric(o, pre, "counter", "prompt_tokens_total", "Prompt tokens processed.", label, (double)s->prompt_tokens);
    metric(o, pre, "counter", "generation_tokens_total", "Tokens generated.", label, (double)s->generated_tokens);
    static const double step_bounds[FG_STEP_TOKENS_BUCKETS - 1] = FG_STEP_TOKENS_BOUNDS;
    uint64_t steps = 0;
    for (int i = 0; i < FG_STEP_TOKENS_BUCKETS; i++) steps += s->steps_by_tokens[i];
    hist_counts(o, pre, "iteration_tokens_total", "Tokens per engine step.", label, step_bounds,
                FG_STEP_TOKENS_BUCKETS - 1, s->steps_by_tokens, steps, (double)s->step_tokens);
    /* vLLM's info gauge: the cache configuration in labels, value 1. */
    put(o, "# HELP %s:cache_config_info Information of the KV cache configuration.\n"
           "# TYPE %s:cache_config_info gauge\n"
           "%s:cache_config_info{%s,block_size=\"%d\",cache_dtype=\"%s\",enable_prefix_caching=\"True\","
           "num_gpu_blocks=\"%d\",kv_tokens=\"%lld\",device=\"%s\"} 1\n",
        pre, pre, pre, label, s->block_size, s->kv_type == FG_KV_F32 ? "float32" : "float16", s->kv_blocks,
        (long long)s->kv_tokens, strchr(s->device, '"') || strchr(s->device, '\\') ? "gpu" : s->device);
    /* A series per OpenAI finish reason (stop, length, abort, error, in the
     * order of forge's reasons): forge's reasons of one name (an
     * end-of-generation token and a stop string; max_tokens and a full
     * context) are summed under it. */
    put(o, "# HELP %s:request_success_total Requests ended, by finish reason.\n"
           "# TYPE %s:request_success_total counter\n", pre, pre);
    for (int f = FG_FINISH_EOS; f <= FG_FINISH_ERROR; f++) {
        const char *name = srv_finish_reason((fg_finish_reason)f);
        bool first = true;
        uint64_t n = 0;
        for (int g = FG_FINISH_EOS; g <= FG_FINISH_ERROR; g++) {
            if (strcmp(srv_finish_reason((fg_finish_reason)g), name) != 0) continue;
            if (g < f) first = false;
            n += m->success[g];
        }
        if (first)
            put(o, "%s:request_success_total{%s,finished_reason=\"%s\"} %llu\n", pre, label, name,
                (unsigned long long)n);
    }
    hist(o, pre, "request_prompt_tokens", "Prompt tokens of each request.", label, &m->prompt_len);
    hist(o, pre, "request_generation_tokens", "Tokens generated by each request.", label, &m->gen_len);
    hist(o, pre, "request_params_n", "The n request parameter.", label, &m->n_param);
    hist(o, pre, "request_params_max_tokens", "The max_tokens request parameter.", label, &m->max_tokens);
    hist(o, pre, "time_to_first_token_seconds", "Time to the first generated token.", label, &m->ttft);
    hist(o, pre, "inter_token_latency_seconds", "Time between generated tokens.", label, &m->itl);
    hist(o, pre, "e2e_request_latency_seconds", "Time from submission to the end of a request.", label, &m->e2e);
    hist(o, pre, "request_queue_time_seconds", "Time a request waited in the queue.", label, &m->queue);
    hist(o, pre, "request_inference_time_seconds", "Time a request ran (prefill and decode).", label, &m->inference);
    hist(o, pre, "request_prefill_time_seconds", "Time from a request's first step to its first token.", label,
         &m->prefill);
    hist(o, pre, "request_decode_time_seconds", "Time from a request's first token to its end.", label, &m->decode);
    put(o, "# HELP %s:http_responses_total HTTP responses by status class.\n"
           "# TYPE %s:http_responses_total counter\n"
           "%s:http_responses_total{%s,code=\"4xx\"} %llu\n%s:http_responses_total{%s,code=\"5xx\"} %llu\n",
        pre, pre, pre, label, (unsigned long long)m->http_4xx, pre, label, (unsigned long long)m->http_5xx);
}

char *srv_metrics_render(srv_metrics *m, fg_engine *e, const char *model_name)
{
    fg_engine_stats s = {0};
    if (e) fg_engine_stats_get(e, &s);
    char label[256], vlabel[288];
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
    snprintf(vlabel, sizeof vlabel, "%s,engine=\"0\"", label);

    outbuf o = {0};
    pthread_mutex_lock(&m->mu);
    render(&o, "forge", label, &s, m);
    render(&o, "vllm", vlabel, &s, m);
    pthread_mutex_unlock(&m->mu);
    if (o.failed) {
        free(o.s);
        return NULL;
    }
    return o.s;
}
