/*
 * jobs.c — the routes' state and the job registry.
 *
 * A generation request becomes a "job": one engine request per choice
 * (n choices for each prompt; choices share their prompt, so the engine's
 * prefix cache computes it once). Each job gets an id ("cmpl-...",
 * "chatcmpl-...") that the response carries and that /v1/requests/{id}
 * looks up. The registry keeps live jobs, and the final status of the
 * last REGISTRY_KEEP ended ones, after their engine requests are released.
 *
 * Locks: the registry's mutex may be held while calling the engine (status,
 * cancel, release), never the other way round: the engine calls nothing of
 * ours (no callbacks; the routes poll). A request's choices are submitted
 * together under a second mutex, so that they are admitted to the engine's
 * queue all or none.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/routes.h"

enum {
    REGISTRY_KEEP = 4096,           /* ended jobs remembered for the status route */
    DEFAULT_MAX_CHOICES = 64,
    DEFAULT_COMPLETION_TOKENS = 16, /* OpenAI's default max_tokens for /v1/completions */
};
#define DEFAULT_REQUEST_MEM ((size_t)128 << 20)
#define DEFAULT_MEM_BUDGET ((size_t)512 << 20)

/* ---- The registry ---------------------------------------------------------------------------- */

static void job_free(srv_job *j)
{
    if (!j) return;
    free(j->eng);
    free(j->max_tokens);
    free(j->fin);
    free(j);
}

srv_job *srv_job_new(srv_routes *r, bool chat, int n)
{
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->eng = calloc((size_t)n, sizeof *j->eng);
    j->fin = calloc((size_t)n, sizeof *j->fin);
    j->max_tokens = calloc((size_t)n, sizeof *j->max_tokens);
    if (!j->eng || !j->fin || !j->max_tokens) {
        job_free(j);
        return NULL;
    }
    j->chat = chat;
    j->n = n;
    j->created = (int64_t)time(NULL);
    pthread_mutex_lock(&r->mu);
    uint64_t k = ++r->serial;
    pthread_mutex_unlock(&r->mu);
    snprintf(j->id, sizeof j->id, "%s-%016llx%08llx", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)fg_sampling_random_seed(), (unsigned long long)(k & 0xffffffffu));
    return j;
}

/* Adds a live job; forgets the oldest ended one when the registry is full.
 * False when out of memory. */
bool srv_job_register(srv_routes *r, srv_job *j)
{
    pthread_mutex_lock(&r->mu);
    if (r->n_jobs >= REGISTRY_KEEP) {
        for (int i = 0; i < r->n_jobs; i++) {
            if (!r->jobs[i]->done) continue;
            job_free(r->jobs[i]);
            memmove(r->jobs + i, r->jobs + i + 1, (size_t)(r->n_jobs - i - 1) * sizeof *r->jobs);
            r->n_jobs--;
            break;
        }
    }
    bool ok = true;
    if (r->n_jobs == r->cap_jobs) {
        int cap = r->cap_jobs ? 2 * r->cap_jobs : 256;
        srv_job **t = realloc(r->jobs, (size_t)cap * sizeof *t);
        if (t) {
            r->jobs = t;
            r->cap_jobs = cap;
        } else {
            ok = false;
        }
    }
    if (ok) {
        r->jobs[r->n_jobs++] = j;
        r->live++;
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* Under mu. */
srv_job *srv_job_find(srv_routes *r, const char *id)
{
    for (int i = r->n_jobs - 1; i >= 0; i--)
        if (strcmp(r->jobs[i]->id, id) == 0) return r->jobs[i];
    return NULL;
}

bool srv_state_ended(fg_request_state s)
{
    return s == FG_REQUEST_FINISHED || s == FG_REQUEST_CANCELLED || s == FG_REQUEST_FAILED;
}

/* Ends a job: what still runs is cancelled, the final statuses kept, the
 * engine requests released and the metrics told. The job stays in the
 * registry (the registry frees it). */
void srv_job_finish(srv_routes *r, srv_job *j)
{
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < j->n; i++) {
        if (!j->eng[i]) continue;
        fg_request_cancel(r->e, j->eng[i]); /* no-op for one that ended */
        if (fg_request_status(r->e, j->eng[i], &j->fin[i]) != FG_OK) j->fin[i].state = FG_REQUEST_CANCELLED;
        fg_request_release(r->e, j->eng[i]);
        j->eng[i] = 0;
    }
    j->done = true;
    r->live--;
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < j->n; i++) srv_metrics_observe(r->metrics, &j->fin[i], j->max_tokens[i]);
}

/* A job that never got registered: its engine requests go. */
void srv_job_abandon(srv_routes *r, srv_job *j)
{
    for (int i = 0; i < j->n; i++)
        if (j->eng[i]) fg_request_release(r->e, j->eng[i]);
    job_free(j);
}

/* ---- Submission ------------------------------------------------------------------------------ */

/* Checks lengths and submits every choice; on failure cancels what was
 * submitted. The job's eng[] are set. A request's choices are admitted
 * together: if they do not all fit the engine's queue now, none is
 * submitted and the answer is 429, so a request that fans out cannot leave
 * the next client queued behind hundreds of its choices. */
bool srv_job_submit(srv_routes *r, const srv_gen_spec *g, srv_job *j, srv_response *out)
{
    for (int p = 0; p < g->n_prompts; p++) {
        const srv_tokens *t = &g->prompts[p];
        if (t->n == 0) {
            srv_error(out, 400, g->chat ? "messages" : "prompt", "the prompt is empty");
            return false;
        }
        int32_t want = g->max_tokens > 0 ? g->max_tokens : 0;
        if ((int64_t)t->n + want > r->ctx || (int64_t)t->n >= r->ctx) {
            srv_error(out, 400, g->chat ? "messages" : "prompt",
                      "this model's maximum context length is %d tokens; the request has %zu prompt tokens and "
                      "asks for %d more",
                      r->ctx, t->n, want > 0 ? want : 1);
            return false;
        }
    }
    /* Only this route submits, under submit_mu, and the engine's queue only
     * shrinks meanwhile: what fits now still fits after the last submit. */
    pthread_mutex_lock(&r->submit_mu);
    fg_engine_stats es;
    fg_engine_stats_get(r->e, &es);
    if (j->n > es.max_waiting - es.queued) {
        pthread_mutex_unlock(&r->submit_mu);
        if (j->n > es.max_waiting)
            srv_error(out, 429, NULL, "this request needs %d places in the queue (%d prompts x n = %d) and the queue "
                                      "has %d (forge serve --max-queue); send fewer prompts or a smaller n",
                      j->n, g->n_prompts, g->n, es.max_waiting);
        else
            srv_error(out, 429, NULL, "the server is busy: %d of the queue's %d places (forge serve --max-queue) are "
                                      "taken and this request needs %d (%d prompts x n = %d); retry later",
                      es.queued, es.max_waiting, j->n, g->n_prompts, g->n);
        return false;
    }
    bool ok = true;
    for (int p = 0, k = 0; ok && p < g->n_prompts; p++) {
        const srv_tokens *t = &g->prompts[p];
        for (int c = 0; ok && c < g->n; c++, k++) {
            fg_request_params rp = fg_request_params_default();
            rp.prompt = t->ids;
            rp.n_prompt = t->n;
            if (g->score_only) rp.max_tokens = 0;
            else if (g->max_tokens > 0) rp.max_tokens = g->max_tokens;
            else if (!g->chat) rp.max_tokens = DEFAULT_COMPLETION_TOKENS < r->ctx - (int32_t)t->n ? DEFAULT_COMPLETION_TOKENS
                                                                                            : r->ctx - (int32_t)t->n;
            rp.sampling = g->sampling;
            if (g->seeded) rp.sampling.seed = g->sampling.seed + (uint64_t)c; /* mod 2^64 */
            else rp.sampling.seed = FG_SEED_RANDOM;
            rp.sampling.seed_exact = g->seeded;
            rp.sampling.logit_bias = g->bias;
            rp.sampling.n_logit_bias = g->n_bias;
            rp.stops = g->stops;
            rp.n_stops = g->n_stops;
            rp.logprobs = g->logprobs;
            rp.ignore_eos = g->ignore_eos;
            rp.top_logprobs = g->top_logprobs;
            /* The engine scores the prompt for echo's logprobs, for
             * prompt_logprobs, and for max_tokens 0, which it takes only so. */
            bool echo_lp = g->echo && g->logprobs;
            rp.prompt_logprobs = echo_lp || g->prompt_logprobs >= 0 || g->score_only;
            rp.prompt_top_logprobs = echo_lp && g->top_logprobs > g->prompt_logprobs ? g->top_logprobs
                                     : g->prompt_logprobs > 0                         ? g->prompt_logprobs
                                                                                      : 0;
            j->max_tokens[k] = rp.max_tokens >= 0 ? rp.max_tokens : r->ctx - (int32_t)t->n;
            fg_status st = fg_engine_submit(r->e, &rp, &j->eng[k]);
            if (st != FG_OK) {
                j->eng[k] = 0;
                if (st == FG_ERR_FULL)
                    srv_error(out, 429, NULL, "the server is busy: its queue is full; retry later");
                else if (st == FG_ERR_INVALID_ARG)
                    srv_error(out, 400, NULL, "%s", fg_last_error());
                else
                    srv_error(out, 500, NULL, "%s", fg_last_error());
                ok = false;
            }
        }
    }
    pthread_mutex_unlock(&r->submit_mu);
    return ok;
}

/* ---- The routes' state ------------------------------------------------------------------------ */

fg_status srv_routes_init(const fg_server_config *c, srv_metrics *m, srv_routes **out)
{
    srv_routes *r = calloc(1, sizeof *r);
    if (!r || !(r->model_name = strdup(c->model_name ? c->model_name : "forge"))) {
        free(r);
        return FG_ERR_NOMEM;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->submit_mu, NULL);
    r->max_choices = c->max_choices > 0 ? c->max_choices : DEFAULT_MAX_CHOICES;
    srv_budget_init(&r->budget, c->request_mem ? c->request_mem : DEFAULT_REQUEST_MEM,
                    c->mem_budget ? c->mem_budget : DEFAULT_MEM_BUDGET);
    r->metrics = m;
    r->started = (int64_t)time(NULL);
    *out = r;
    return FG_OK;
}

void srv_routes_free(srv_routes *r)
{
    if (!r) return;
    for (int i = 0; i < r->n_jobs; i++) job_free(r->jobs[i]);
    free(r->jobs);
    fg_chat_close(r->chat);
    free(r->model_name);
    srv_budget_free(&r->budget);
    pthread_mutex_destroy(&r->submit_mu);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void srv_routes_set_engine(srv_routes *r, fg_engine *e)
{
    const fg_model *m = fg_engine_model(e);
    fg_engine_stats s;
    fg_engine_stats_get(e, &s);
    fg_chat *chat = NULL;
    fg_status st = fg_chat_open(m, NULL, &chat);
    pthread_mutex_lock(&r->mu);
    r->m = m;
    r->ctx = s.ctx;
    r->n_vocab = fg_model_n_vocab(m);
    srv_metrics_set_ctx(r->metrics, s.ctx);
    r->chat = chat;
    if (st != FG_OK) snprintf(r->chat_error, sizeof r->chat_error, "%s", fg_last_error());
    r->e = e; /* last: the routes serve once they see it */
    pthread_mutex_unlock(&r->mu);
}

bool srv_routes_ready(srv_routes *r)
{
    pthread_mutex_lock(&r->mu);
    bool ok = r->e != NULL;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

int srv_routes_live(srv_routes *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->live;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void srv_routes_closing(srv_routes *r)
{
    pthread_mutex_lock(&r->mu);
    r->closing = true;
    pthread_mutex_unlock(&r->mu);
}

void srv_routes_cancel_all(srv_routes *r)
{
    pthread_mutex_lock(&r->mu);
    r->closing = true;
    for (int i = 0; i < r->n_jobs; i++)
        for (int k = 0; !r->jobs[i]->done && k < r->jobs[i]->n; k++)
            if (r->jobs[i]->eng[k]) fg_request_cancel(r->e, r->jobs[i]->eng[k]);
    pthread_mutex_unlock(&r->mu);
}
