/*
 * engine.c — the public request API of forge.h: fg_engine, its engine
 * thread, and each request's life from submission to release.
 *
 * Two sides share one mutex (mu):
 *   - callers, on any thread, submit into an inbox, cancel, release, poll,
 *     wait, and read statuses and stats;
 *   - the engine thread moves the inbox into the runner (runner.c: the
 *     scheduler, KV cache, forward and samplers, which no other thread
 *     touches), runs steps, turns each new token into text (textstream.c:
 *     whole UTF-8 characters, stop strings), ends requests between steps
 *     (end-of-generation tokens, stop strings, cancellations), so that their
 *     blocks are free before the next step, and publishes what changed.
 * The engine thread holds mu only to exchange state: never during a step
 * or a callback. It sleeps on `work` while it has no request; callers wait
 * on `output`, which it broadcasts after each publication.
 *
 * A request record (ereq) lives from submit to release. Its fields come in
 * three groups: set at submit and read-only after; the engine thread's own;
 * shared under mu. The engine thread holds a record in its `active` list
 * from the moment it takes it from the inbox until the request ends; a
 * release before then only marks the record, and the engine thread frees it
 * when it lets go (engine_done tells which side frees).
 *
 * Owns: the model, the backend, the runner and every record.
 */
#include "forge.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/utf8.h"
#include "model/forward.h"
#include "model/model.h"
#include "runtime/load.h"
#include "runtime/runner.h"
#include "runtime/sampler.h"
#include "runtime/textstream.h"

enum {
    SLOT_BITS = 24,             /* a request id is serial << SLOT_BITS | its slot */
    DEFAULT_RUNNING_GPU = 64,
    DEFAULT_RUNNING_CPU = 8,
    DEFAULT_STEP_TOKENS = 512,
    DEFAULT_WAITING = 256,
    MAX_RUNNING = 4096,
    MAX_STEP_TOKENS = 1 << 16,
    MAX_WAITING = 1 << 16,
    MAX_CTX = 1 << 24,
};

typedef struct ereq ereq;
struct ereq {
    /* Set at submit, read-only afterwards. */
    uint64_t id;
    int32_t n_prompt, max_new;
    bool to_ctx;        /* max_tokens -1: reaching max_new means the context is full */
    bool ignore_eos;
    int32_t n_top;      /* -1: no logprobs; else top_logprobs */
    fg_sampler_params sp;
    char **stops;       /* (n_stops) copies */
    int32_t n_stops;
    fg_token_fn on_token;
    void *ud;
    double t_submit;
    int32_t *toks;      /* (max_new) the generated ids: the engine thread writes toks[n_seen] unlocked,
                         * then publishes n_gen; readers read below n_gen, under mu */
    fg_token_logprob *lps; /* (max_new) with logprobs, as toks */
    int32_t plp_top;    /* -1: no prompt logprobs; else prompt_top_logprobs */
    bool score_only;    /* max_tokens 0: the one token the runner samples is not output */
    fg_token_logprob *plps; /* (n_prompt - 1) prompt logprobs once n_plp is set; written before, under mu */
    int32_t n_plp;

    /* The engine thread's. */
    int32_t *prompt;    /* (n_prompt) until the runner has its own copy */
    uint64_t rid;       /* the runner's id; 0 while not handed over or after release */
    int32_t n_seen;     /* generated ids taken from the runner */
    fg_finish_reason why; /* set when the engine thread ends it */
    char why_msg[256];
    fg_req_state rstate; /* the runner's state, as last seen */
    int32_t r_cached, r_preempted;
    double x_sched, x_first, x_last; /* engine-side times, published to t_* */
    fg_textstream ts;
    ereq *prev, *next;  /* the active list, in submission order */

    /* Shared, under mu. */
    fg_request_state state;
    fg_finish_reason finish;
    char error[256];
    int32_t n_gen, n_cached, n_preempted;
    size_t n_polled;
    char *text;         /* (text_cap) text not yet polled (requests without a callback) */
    size_t text_len, text_cap;
    double t_sched, t_first, t_last, t_end; /* fg_now_ms(); -1: not yet */
    bool queued;        /* counted in n_queued: submitted, never yet scheduled, not ended */
    bool released;      /* the caller let it go: its id is unknown */
    bool engine_done;   /* the engine thread holds no reference: the record is the caller side's */
    ereq *inbox_next;
    atomic_bool cancel; /* set under mu; the engine thread reads it unlocked to stop early */
};

struct fg_engine {
    fg_model *model;
    fg_backend *be;
    fg_runner *run;
    int32_t n_vocab;

    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t work;   /* the engine thread waits here for requests */
    pthread_cond_t output; /* callers wait here for output */

    /* Under mu. */
    bool stop;
    fg_engine_stats stats;
    ereq **slots;          /* (n_slots) records by id slot; NULL: free */
    int32_t n_slots;
    uint64_t serial;
    ereq *inbox, *inbox_tail;
    int32_t n_queued;
    double t_beat;         /* fg_now_ms() when the engine thread last ended a step or went to sleep */

    /* The engine thread's. */
    ereq *active, *active_tail;
    char step_error[256];
};

/* ---- Names and defaults --------------------------------------------------- */

const char *fg_request_state_str(fg_request_state s)
{
    switch (s) {
    case FG_REQUEST_QUEUED: return "queued";
    case FG_REQUEST_PREFILLING: return "prefilling";
    case FG_REQUEST_DECODING: return "decoding";
    case FG_REQUEST_FINISHED: return "finished";
    case FG_REQUEST_CANCELLED: return "cancelled";
    case FG_REQUEST_FAILED: return "failed";
    }
    return "?";
}

const char *fg_finish_reason_str(fg_finish_reason r)
{
    switch (r) {
    case FG_FINISH_NONE: return "";
    case FG_FINISH_EOS: return "eos";
    case FG_FINISH_STOP: return "stop string";
    case FG_FINISH_LENGTH: return "length";
    case FG_FINISH_CONTEXT: return "context full";
    case FG_FINISH_CANCELLED: return "cancelled";
    case FG_FINISH_ERROR: return "error";
    }
    return "?";
}

fg_engine_config fg_engine_config_default(void)
{
    return (fg_engine_config){.device = "auto", .kv_fraction = 0.9f, .kv_type = FG_KV_F16};
}

fg_sampling fg_sampling_default(void)
{
    fg_sampler_params d = fg_sampler_defaults();
    return (fg_sampling){.temperature = d.temperature, .top_k = d.top_k, .top_p = d.top_p, .min_p = d.min_p,
                         .repeat_penalty = d.repeat_penalty, .repeat_last_n = d.repeat_last_n,
                         .presence_penalty = d.presence_penalty, .frequency_penalty = d.frequency_penalty,
                         .seed = FG_SEED_RANDOM};
}

uint64_t fg_sampling_random_seed(void)
{
    return fg_sampler_random_seed();
}

fg_request_params fg_request_params_default(void)
{
    return (fg_request_params){.max_tokens = -1, .sampling = fg_sampling_default()};
}

static fg_sampler_params sampler_params(const fg_sampling *s)
{
    return (fg_sampler_params){.temperature = s->temperature, .top_k = s->top_k, .top_p = s->top_p,
                               .min_p = s->min_p, .repeat_penalty = s->repeat_penalty,
                               .repeat_last_n = s->repeat_last_n, .presence_penalty = s->presence_penalty,
                               .frequency_penalty = s->frequency_penalty, .seed = s->seed,
                               .logit_bias = s->logit_bias, .n_logit_bias = s->n_logit_bias,
                               .seed_exact = s->seed_exact};
}

static bool ended(fg_request_state s)
{
    return s == FG_REQUEST_FINISHED || s == FG_REQUEST_CANCELLED || s == FG_REQUEST_FAILED;
}

/* ---- Opening: the KV pool --------------------------------------------------- */

static fg_status check_config(const fg_engine_config *c)
{
#define RANGE(field, lo, hi, what)                                                                            \
    if (c->field < (lo) || c->field > (hi))                                                                   \
        return fg_err_set(FG_ERR_INVALID_ARG, "engine config: " #field " %lld is out of range: it must be in %lld..%lld (%s)", \
                          (long long)c->field, (long long)(lo), (long long)(hi), what);
    RANGE(n_threads, 0, 1024, "0: one per core")
    RANGE(ctx, 0, MAX_CTX, "0: the model's, at most 4096")
    RANGE(kv_tokens, 0, FG_LOAD_MAX_POOL_TOKENS, "0: sized by kv_fraction")
    RANGE(max_running, 0, MAX_RUNNING, "0: 64 on a GPU, 8 on the CPU")
    RANGE(max_step_tokens, 0, MAX_STEP_TOKENS, "0: 512")
    RANGE(max_waiting, 0, MAX_WAITING, "0: 256")
#undef RANGE
    if (!(c->kv_fraction > 0.0f && c->kv_fraction <= 1.0f))
        return fg_err_set(FG_ERR_INVALID_ARG, "engine config: kv_fraction %g is out of range: it must be in (0, 1]",
                          (double)c->kv_fraction);
    if (c->kv_type != FG_KV_F16 && c->kv_type != FG_KV_F32)
        return fg_err_set(FG_ERR_INVALID_ARG, "engine config: kv_type %d is not FG_KV_F16 or FG_KV_F32", (int)c->kv_type);
    return FG_OK;
}

static void *engine_main(void *arg);

fg_status fg_engine_open(const char *model_path, const fg_engine_config *cfg, fg_engine **out)
{
    *out = NULL;
    fg_engine_config c = cfg ? *cfg : fg_engine_config_default();
    if (!model_path) return fg_err_set(FG_ERR_INVALID_ARG, "fg_engine_open: no model path");
    FG_TRY(check_config(&c));
    fg_engine *e = calloc(1, sizeof *e);
    if (!e) return fg_err_set(FG_ERR_NOMEM, "engine: out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* fg_request_wait's deadlines */
    pthread_cond_init(&e->output, &ca);
    pthread_condattr_destroy(&ca);

    fg_status st = fg_model_open(model_path, &e->model);
    if (st == FG_OK) st = fg_backend_open(c.device, c.n_threads, c.cpu_reference, &e->be);
    bool gpu = st == FG_OK && fg_backend_on_device(e->be);
    if (st == FG_OK && c.batch_invariant) e->be->ops->set_batch_invariant(e->be, true);
    fg_engine_stats *s = &e->stats;
    int64_t pool = 0;
    if (st == FG_OK) {
        e->n_vocab = fg_model_n_vocab(e->model);
        s->ctx = c.ctx > 0 ? c.ctx : fg_load_default_ctx(e->model);
        s->max_running = c.max_running > 0 ? c.max_running : gpu ? DEFAULT_RUNNING_GPU : DEFAULT_RUNNING_CPU;
        s->max_step_tokens = c.max_step_tokens > 0 ? c.max_step_tokens : DEFAULT_STEP_TOKENS;
        s->max_waiting = c.max_waiting > 0 ? c.max_waiting : DEFAULT_WAITING;
        s->block_size = FG_KV_BLOCK_SIZE;
        s->kv_type = c.kv_type;
        snprintf(s->device, sizeof s->device, "%s", e->be->ops->describe(e->be));
        /* On the CPU the pool is what the running sequences can fill, not
         * the machine's RAM. */
        int64_t cap = gpu ? FG_LOAD_MAX_POOL_TOKENS : (int64_t)s->max_running * s->ctx;
        st = fg_load_pool_tokens(e->model, e->be, c.kv_tokens, c.kv_fraction, c.kv_type == FG_KV_F32, s->ctx, cap,
                                 s->max_step_tokens, &pool);
    }
    if (st == FG_OK) {
        /* The runner's own queue stays short (the engine feeds it, keeping
         * the rest in its records): room for one step's admissions and the
         * requests preemption sends back. */
        fg_runner_params rp = {.kv_tokens = (int32_t)pool, .max_seq_tokens = s->ctx, .max_running = s->max_running,
                               .max_step_tokens = s->max_step_tokens, .max_waiting = 2 * s->max_running};
        st = fg_runner_init_kv(e->model, e->be, &rp, c.kv_type == FG_KV_F32 ? FG_TYPE_F32 : FG_TYPE_F16,
                               c.on_load_progress, c.load_progress_ud, &e->run);
    }
    if (st == FG_OK) {
        fg_kvcache_usage u;
        fg_runner_kv_usage(e->run, &u);
        s->kv_blocks = s->kv_free = u.n_blocks;
        s->kv_tokens = (int64_t)u.n_blocks * FG_KV_BLOCK_SIZE;
        if (pthread_create(&e->thread, NULL, engine_main, e) != 0)
            st = fg_err_set(FG_ERR_NOMEM, "engine: cannot start the engine thread: %s", strerror(errno));
        else
            e->started = true;
    }
    if (st != FG_OK) {
        fg_engine_close(e);
        return st;
    }
    *out = e;
    return FG_OK;
}

const fg_model *fg_engine_model(const fg_engine *e)
{
    return e->model;
}

fg_status fg_engine_stats_get(fg_engine *e, fg_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    out->queued = e->n_queued;
    out->ms_since_step = e->t_beat > 0 ? fg_now_ms() - e->t_beat : 0;
    pthread_mutex_unlock(&e->mu);
    return FG_OK;
}

/* ---- Records -------------------------------------------------------------- */

static void req_free(ereq *r)
{
    if (!r) return;
    for (int32_t i = 0; r->stops && i < r->n_stops; i++) free(r->stops[i]);
    free(r->stops);
    free((void *)r->sp.logit_bias);
    free(r->prompt);
    free(r->toks);
    free(r->lps);
    free(r->plps);
    free(r->text);
    fg_textstream_free(&r->ts);
    free(r);
}

/* The record of id, or NULL (unknown or released). Under mu. */
static ereq *lookup(const fg_engine *e, uint64_t id)
{
    uint64_t i = id & ((1u << SLOT_BITS) - 1);
    if (i >= (uint64_t)e->n_slots || !e->slots[i] || e->slots[i]->id != id) return NULL;
    return e->slots[i];
}

/* A free slot for a new record, growing the table; -1 when out of memory
 * or ids. Under mu. */
static int32_t free_slot(fg_engine *e)
{
    for (int32_t i = 0; i < e->n_slots; i++)
        if (!e->slots[i]) return i;
    int32_t n = e->n_slots ? 2 * e->n_slots : 64;
    if (n > (1 << SLOT_BITS)) return -1;
    ereq **t = realloc(e->slots, (size_t)n * sizeof *t);
    if (!t) return -1;
    memset(t + e->n_slots, 0, (size_t)(n - e->n_slots) * sizeof *t);
    e->slots = t;
    int32_t i = e->n_slots;
    e->n_slots = n;
    return i;
}

/* ---- Submission ----------------------------------------------------------- */

static fg_status check_request(const fg_engine *e, const fg_request_params *p, int32_t *max_new)
{
    int32_t ctx = e->stats.ctx;
    if (!p) return fg_err_set(FG_ERR_INVALID_ARG, "request: no parameters");
    if (p->n_prompt == 0 || !p->prompt)
        return fg_err_set(FG_ERR_INVALID_ARG, "request: prompt is empty: a request needs at least one token");
    if (p->n_prompt > (size_t)ctx)
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "request: prompt is %zu tokens, longer than the context of %d; shorten it or open the "
                          "engine with a larger ctx",
                          p->n_prompt, ctx);
    for (size_t i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= e->n_vocab)
            return fg_err_set(FG_ERR_INVALID_ARG, "request: prompt token %zu is %d, outside the vocabulary of %d", i,
                              p->prompt[i], e->n_vocab);
    int32_t n = (int32_t)p->n_prompt;
    if (p->max_tokens == -1) {
        if (n >= ctx)
            return fg_err_set(FG_ERR_INVALID_ARG,
                              "request: prompt is %d tokens, which fills the context of %d: nothing can be generated; "
                              "shorten it or open the engine with a larger ctx",
                              n, ctx);
        *max_new = ctx - n;
    } else if (p->max_tokens == 0 && p->prompt_logprobs) {
        if (n >= ctx)
            return fg_err_set(FG_ERR_INVALID_ARG, "request: a prompt of %d tokens to score needs a context above %d", n,
                              ctx);
        *max_new = 1; /* the runner samples one token, which is not output */
    } else if (p->max_tokens < 1 || p->max_tokens > ctx - n) {
        return fg_err_set(FG_ERR_INVALID_ARG,
                          "request: max_tokens %d is out of range: with a prompt of %d tokens and a context of %d it "
                          "must be in 1..%d, or -1 (until the context is full)",
                          p->max_tokens, n, ctx, ctx - n);
    } else {
        *max_new = p->max_tokens;
    }
    fg_sampler_params sp = sampler_params(&p->sampling);
    if (sp.n_logit_bias > FG_MAX_LOGIT_BIAS)
        return fg_err_set(FG_ERR_INVALID_ARG, "request: logit_bias has %d entries, more than the %d allowed",
                          sp.n_logit_bias, FG_MAX_LOGIT_BIAS);
    if (fg_sampler_check(&sp) != FG_OK) return fg_err_wrap(FG_ERR_INVALID_ARG, "request");
    for (int32_t i = 0; i < sp.n_logit_bias; i++)
        if (sp.logit_bias[i].token >= e->n_vocab)
            return fg_err_set(FG_ERR_INVALID_ARG, "request: logit_bias token %d is outside the vocabulary of %d",
                              sp.logit_bias[i].token, e->n_vocab);
    if (p->prompt_logprobs && (p->prompt_top_logprobs < 0 || p->prompt_top_logprobs > FG_MAX_TOP_LOGPROBS))
        return fg_err_set(FG_ERR_INVALID_ARG, "request: prompt_top_logprobs %d is out of range: it must be in 0..%d",
                          p->prompt_top_logprobs, FG_MAX_TOP_LOGPROBS);
    if (p->logprobs && (p->top_logprobs < 0 || p->top_logprobs > FG_MAX_TOP_LOGPROBS))
        return fg_err_set(FG_ERR_INVALID_ARG, "request: top_logprobs %d is out of range: it must be in 0..%d",
                          p->top_logprobs, FG_MAX_TOP_LOGPROBS);
    if (p->n_stops < 0 || p->n_stops > FG_REQUEST_MAX_STOPS || (p->n_stops > 0 && !p->stops))
        return fg_err_set(FG_ERR_INVALID_ARG, "request: n_stops %d is out of range: it must be in 0..%d, with stops given",
                          p->n_stops, FG_REQUEST_MAX_STOPS);
    for (int32_t i = 0; i < p->n_stops; i++) {
        const char *s = p->stops[i];
        size_t len = s ? strnlen(s, FG_REQUEST_MAX_STOP_LEN + 1) : 0, bad;
        if (len == 0 || len > FG_REQUEST_MAX_STOP_LEN)
            return fg_err_set(FG_ERR_INVALID_ARG, "request: stop string %d is %s: it must have 1..%d bytes", i,
                              !s ? "NULL" : len == 0 ? "empty" : "too long", FG_REQUEST_MAX_STOP_LEN);
        if (!fg_utf8_valid((const uint8_t *)s, len, &bad))
            return fg_err_set(FG_ERR_INVALID_ARG, "request: stop string %d is not valid UTF-8 (at byte %zu)", i, bad);
    }
    return FG_OK;
}

/* A record for p, with its own copies of everything p points to. */
static fg_status req_new(const fg_request_params *p, int32_t max_new, ereq **out)
{
    ereq *r = calloc(1, sizeof *r);
    if (!r) return fg_err_set(FG_ERR_NOMEM, "request: out of memory");
    r->n_prompt = (int32_t)p->n_prompt;
    r->max_new = max_new;
    r->to_ctx = p->max_tokens == -1;
    r->ignore_eos = p->ignore_eos;
    r->n_top = p->logprobs ? p->top_logprobs : -1;
    r->plp_top = p->prompt_logprobs ? p->prompt_top_logprobs : -1;
    r->score_only = p->max_tokens == 0;
    r->sp = sampler_params(&p->sampling);
    if (r->sp.seed == FG_SEED_RANDOM && !r->sp.seed_exact) r->sp.seed = fg_sampler_random_seed();
    r->sp.logit_bias = NULL; /* the copy, below */
    r->on_token = p->on_token;
    r->ud = p->ud;
    r->prompt = malloc(p->n_prompt * sizeof *r->prompt);
    r->toks = malloc((size_t)max_new * sizeof *r->toks);
    r->stops = calloc((size_t)p->n_stops + 1, sizeof *r->stops);
    if (r->n_top >= 0) r->lps = calloc((size_t)max_new, sizeof *r->lps);
    fg_logit_bias *bias = r->sp.n_logit_bias > 0 ? malloc((size_t)r->sp.n_logit_bias * sizeof *bias) : NULL;
    if (bias) memcpy(bias, p->sampling.logit_bias, (size_t)r->sp.n_logit_bias * sizeof *bias);
    r->sp.logit_bias = bias;
    if (r->plp_top >= 0 && p->n_prompt > 1) r->plps = malloc((p->n_prompt - 1) * sizeof *r->plps);
    bool ok = r->prompt && r->toks && r->stops && (r->n_top < 0 || r->lps) && (r->sp.n_logit_bias == 0 || bias) &&
              (r->plp_top < 0 || p->n_prompt == 1 || r->plps);
    for (int32_t i = 0; ok && i < p->n_stops; i++) ok = (r->stops[r->n_stops++] = strdup(p->stops[i])) != NULL;
    if (!ok) {
        req_free(r);
        return fg_err_set(FG_ERR_NOMEM, "request: out of memory for a prompt of %zu tokens", p->n_prompt);
    }
    memcpy(r->prompt, p->prompt, p->n_prompt * sizeof *r->prompt);
    r->state = FG_REQUEST_QUEUED;
    r->t_submit = fg_now_ms();
    r->t_sched = r->t_first = r->t_last = r->t_end = -1;
    r->x_sched = r->x_first = r->x_last = -1;
    r->rstate = FG_REQ_WAITING;
    *out = r;
    return FG_OK;
}

fg_status fg_engine_submit(fg_engine *e, const fg_request_params *p, uint64_t *id)
{
    int32_t max_new = 0;
    FG_TRY(check_request(e, p, &max_new));
    ereq *r = NULL;
    FG_TRY(req_new(p, max_new, &r));
    pthread_mutex_lock(&e->mu);
    fg_status st = FG_OK;
    int32_t slot = -1;
    if (e->stop)
        st = fg_err_set(FG_ERR_INVALID_ARG, "request: the engine is closing");
    else if (e->n_queued >= e->stats.max_waiting)
        st = fg_err_set(FG_ERR_FULL, "request: the queue is full: %d requests are waiting (max_waiting %d); retry later",
                        e->n_queued, e->stats.max_waiting);
    else if ((slot = free_slot(e)) < 0)
        st = fg_err_set(FG_ERR_NOMEM, "request: out of memory for the request table");
    if (st != FG_OK) {
        pthread_mutex_unlock(&e->mu);
        req_free(r);
        return st;
    }
    r->id = *id = (++e->serial << SLOT_BITS) | (uint64_t)slot;
    e->slots[slot] = r;
    if (e->inbox_tail) e->inbox_tail->inbox_next = r;
    else e->inbox = r;
    e->inbox_tail = r;
    r->queued = true;
    e->n_queued++;
    e->stats.submitted++;
    pthread_cond_signal(&e->work);
    pthread_mutex_unlock(&e->mu);
    return FG_OK;
}

/* ---- Callers: status, output, cancel, release ------------------------------ */

static double since(double t0, double t)
{
    return t < 0 ? -1 : t - t0;
}

fg_status fg_request_status(fg_engine *e, uint64_t id, fg_request_info *out)
{
    pthread_mutex_lock(&e->mu);
    const ereq *r = lookup(e, id);
    if (!r) {
        pthread_mutex_unlock(&e->mu);
        return fg_err_set(FG_ERR_NOT_FOUND, "no request %llu (unknown or released)", (unsigned long long)id);
    }
    *out = (fg_request_info){
        .state = r->state,
        .finish = r->finish,
        .n_prompt = r->n_prompt,
        .n_cached = r->n_cached,
        .n_gen = r->n_gen,
        .n_preempted = r->n_preempted,
        .seed = r->sp.seed,
        .queue_ms = since(r->t_submit, r->t_sched),
        .ttft_ms = since(r->t_submit, r->t_first),
        .decode_ms_per_token = r->n_gen >= 2 ? (r->t_last - r->t_first) / (r->n_gen - 1) : 0,
        .total_ms = (r->t_end >= 0 ? r->t_end : fg_now_ms()) - r->t_submit,
    };
    memcpy(out->error, r->error, sizeof out->error);
    pthread_mutex_unlock(&e->mu);
    return FG_OK;
}

fg_status fg_request_poll(fg_engine *e, uint64_t id, int32_t *tokens, size_t cap_tokens, size_t *n_tokens,
                          char *text, size_t cap_text, size_t *n_text)
{
    if (n_tokens) *n_tokens = 0;
    if (n_text) *n_text = 0;
    pthread_mutex_lock(&e->mu);
    ereq *r = lookup(e, id);
    if (!r) {
        pthread_mutex_unlock(&e->mu);
        return fg_err_set(FG_ERR_NOT_FOUND, "no request %llu (unknown or released)", (unsigned long long)id);
    }
    if (tokens && cap_tokens > 0) {
        size_t n = (size_t)r->n_gen - r->n_polled;
        if (n > cap_tokens) n = cap_tokens;
        memcpy(tokens, r->toks + r->n_polled, n * sizeof *tokens);
        r->n_polled += n;
        if (n_tokens) *n_tokens = n;
    }
    if (text && cap_text > 0 && r->text_len > 0) {
        size_t n = r->text_len;
        if (n > cap_text) n = fg_utf8_complete_prefix((const uint8_t *)r->text, cap_text); /* whole characters */
        memcpy(text, r->text, n);
        memmove(r->text, r->text + n, r->text_len - n);
        r->text_len -= n;
        if (n_text) *n_text = n;
    }
    pthread_mutex_unlock(&e->mu);
    return FG_OK;
}

fg_status fg_request_logprobs(fg_engine *e, uint64_t id, size_t first, fg_token_logprob *out, size_t cap, size_t *n)
{
    *n = 0;
    pthread_mutex_lock(&e->mu);
    const ereq *r = lookup(e, id);
    fg_status st = FG_OK;
    if (!r) st = fg_err_set(FG_ERR_NOT_FOUND, "no request %llu (unknown or released)", (unsigned long long)id);
    else if (!r->lps)
        st = fg_err_set(FG_ERR_INVALID_ARG, "request %llu was submitted without logprobs", (unsigned long long)id);
    else if (first < (size_t)r->n_gen) {
        size_t k = (size_t)r->n_gen - first;
        if (k > cap) k = cap;
        memcpy(out, r->lps + first, k * sizeof *out);
        *n = k;
    }
    pthread_mutex_unlock(&e->mu);
    return st;
}

fg_status fg_request_prompt_logprobs(fg_engine *e, uint64_t id, size_t first, fg_token_logprob *out, size_t cap,
                                     size_t *n)
{
    *n = 0;
    pthread_mutex_lock(&e->mu);
    const ereq *r = lookup(e, id);
    fg_status st = FG_OK;
    if (!r) st = fg_err_set(FG_ERR_NOT_FOUND, "no request %llu (unknown or released)", (unsigned long long)id);
    else if (r->plp_top < 0)
        st = fg_err_set(FG_ERR_INVALID_ARG, "request %llu was submitted without prompt_logprobs", (unsigned long long)id);
    else if (r->n_plp > 0 && first < (size_t)r->n_plp) {
        size_t k = (size_t)r->n_plp - first;
        if (k > cap) k = cap;
        memcpy(out, r->plps + first, k * sizeof *out);
        *n = k;
    }
    pthread_mutex_unlock(&e->mu);
    return st;
}

fg_status fg_request_wait(fg_engine *e, uint64_t id, int32_t timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms > 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&e->mu);
    fg_status st = FG_OK;
    for (;;) {
        const ereq *r = lookup(e, id); /* again after each wait: another thread may release it */
        if (!r) {
            st = fg_err_set(FG_ERR_NOT_FOUND, "no request %llu (unknown or released)", (unsigned long long)id);
            break;
        }
        if ((size_t)r->n_gen > r->n_polled || r->text_len > 0 || ended(r->state)) break;
        int rc = timeout_ms < 0 ? pthread_cond_wait(&e->output, &e->mu)
                                : pthread_cond_timedwait(&e->output, &e->mu, &deadline);
        if (rc == ETIMEDOUT) {
            st = fg_err_set(FG_ERR_TIMEOUT, "request %llu: no output within %d ms", (unsigned long long)id, timeout_ms);
            break;
        }
    }
    pthread_mutex_unlock(&e->mu);
    return st;
}

/* Ends r as cancelled for its callers now; the engine thread frees its
 * blocks before its next step. Under mu. */
static void cancel_locked(fg_engine *e, ereq *r)
{
    if (ended(r->state)) return;
    r->state = FG_REQUEST_CANCELLED;
    r->finish = FG_FINISH_CANCELLED;
    r->t_end = fg_now_ms();
    if (r->queued) {
        r->queued = false;
        e->n_queued--;
    }
    atomic_store(&r->cancel, true);
    pthread_cond_signal(&e->work);
    pthread_cond_broadcast(&e->output);
}

fg_status fg_request_cancel(fg_engine *e, uint64_t id)
{
    pthread_mutex_lock(&e->mu);
    ereq *r = lookup(e, id);
    if (r) cancel_locked(e, r);
    pthread_mutex_unlock(&e->mu);
    return r ? FG_OK : fg_err_set(FG_ERR_NOT_FOUND, "no request %llu (unknown or released)", (unsigned long long)id);
}

fg_status fg_request_release(fg_engine *e, uint64_t id)
{
    pthread_mutex_lock(&e->mu);
    ereq *r = lookup(e, id);
    if (r) {
        cancel_locked(e, r);
        e->slots[id & ((1u << SLOT_BITS) - 1)] = NULL;
        if (r->engine_done) req_free(r);
        else r->released = true; /* the engine thread frees it when it lets go */
    }
    pthread_mutex_unlock(&e->mu);
    return r ? FG_OK : fg_err_set(FG_ERR_NOT_FOUND, "no request %llu (unknown or released)", (unsigned long long)id);
}

/* ---- The engine thread: ending requests -------------------------------------- */

/* Ends r on the engine side (finish reason why, message msg for errors):
 * if the runner still runs it, it finishes or is cancelled there, which
 * frees its blocks now; the runner then forgets it. */
static void end_req(fg_engine *e, ereq *r, fg_finish_reason why, const char *msg)
{
    if (r->why != FG_FINISH_NONE) return;
    r->why = why;
    if (msg) snprintf(r->why_msg, sizeof r->why_msg, "%s", msg);
    if (!r->rid) return;
    if (r->rstate == FG_REQ_WAITING || r->rstate == FG_REQ_PREFILLING || r->rstate == FG_REQ_DECODING) {
        if (why == FG_FINISH_EOS || why == FG_FINISH_STOP) fg_runner_finish(e->run, r->rid);
        else fg_runner_cancel(e->run, r->rid);
    }
    fg_runner_release(e->run, r->rid);
    r->rid = 0;
}

/* Caller cancellations (and releases) reach the runner before the next
 * step, so their blocks are free for it. */
static void apply_cancels(fg_engine *e)
{
    for (ereq *r = e->active; r; r = r->next)
        if (atomic_load(&r->cancel)) end_req(e, r, FG_FINISH_CANCELLED, NULL);
}

/* ---- The engine thread: feeding the runner ------------------------------------ */

/* Hands queued requests to the runner in arrival order while its own queue
 * is short: a request in the runner holds a sampler (tens of bytes per
 * vocabulary entry), so the rest wait as records. */
static void feed(fg_engine *e)
{
    int32_t running, waiting;
    fg_runner_counts(e->run, &running, &waiting);
    for (ereq *r = e->active; r && waiting < e->stats.max_running; r = r->next) {
        if (r->rid || r->why != FG_FINISH_NONE) continue;
        fg_status st = fg_runner_submit(e->run, r->prompt, r->n_prompt, r->max_new, -1, &r->sp, &r->rid);
        if (st == FG_ERR_FULL) {
            r->rid = 0;
            return; /* the runner's queue is full of preempted requests: retry after the next step */
        }
        if (st != FG_OK) {
            r->rid = 0;
            end_req(e, r, FG_FINISH_ERROR, fg_last_error());
            continue;
        }
        if ((r->n_top >= 0 && fg_runner_want_logprobs(e->run, r->rid, r->n_top) != FG_OK) ||
            (r->plp_top >= 0 && fg_runner_want_prompt_logprobs(e->run, r->rid, r->plp_top) != FG_OK)) {
            end_req(e, r, FG_FINISH_ERROR, fg_last_error());
            continue;
        }
        free(r->prompt);
        r->prompt = NULL;
        fg_textstream_init(&r->ts, e->model->tok, (const char *const *)r->stops, r->n_stops);
        waiting++;
    }
}

/* ---- The engine thread: after a step ------------------------------------------ */

/* Takes r's new token (a step gives a request at most one), decides whether
 * it ends the request, and calls its callback. */
static void take_token(fg_engine *e, ereq *r, int32_t t, double now, bool runner_done)
{
    r->toks[r->n_seen++] = t;
    if (r->x_first < 0) r->x_first = now;
    r->x_last = now;
    fg_finish_reason why = FG_FINISH_NONE;
    fg_status st = FG_OK;
    bool stop = false;
    if (!r->ignore_eos && fg_tok_is_eog(e->model->tok, t)) why = FG_FINISH_EOS;
    else if ((st = fg_textstream_push(&r->ts, t, &stop)) != FG_OK) why = FG_FINISH_ERROR;
    else if (stop) why = FG_FINISH_STOP;
    else if (runner_done) why = r->to_ctx ? FG_FINISH_CONTEXT : FG_FINISH_LENGTH;
    /* Held-back text is final unless a stop string cut it. */
    if (why == FG_FINISH_EOS || why == FG_FINISH_LENGTH || why == FG_FINISH_CONTEXT)
        st = fg_textstream_flush(&r->ts);
    if (st != FG_OK) why = FG_FINISH_ERROR;
    if (why != FG_FINISH_NONE) end_req(e, r, why, why == FG_FINISH_ERROR ? fg_last_error() : NULL);
    if (r->on_token && why != FG_FINISH_ERROR && !atomic_load(&r->cancel)) {
        bool more = r->on_token(r->ud, r->id, t, r->ts.buf ? r->ts.buf : "", r->ts.ready);
        fg_textstream_take(&r->ts);
        if (!more) end_req(e, r, FG_FINISH_CANCELLED, NULL);
    }
}

/* The prompt logprobs, once the runner has them all (its first token). */
static void take_prompt_logprobs(fg_engine *e, ereq *r)
{
    const fg_token_logprob *lp;
    int32_t n;
    if (fg_runner_prompt_logprobs(e->run, r->rid, &lp, &n) != FG_OK || n != r->n_prompt - 1) return;
    if (n > 0) memcpy(r->plps, lp, (size_t)n * sizeof *lp);
    pthread_mutex_lock(&e->mu);
    r->n_plp = n > 0 ? n : -1; /* -1: done, a one-token prompt has none */
    pthread_mutex_unlock(&e->mu);
}

/* Reads what the step did to each request in the runner. step_st is the
 * step's status: a failed step failed its requests in the runner. */
static void collect(fg_engine *e, double t_step, fg_status step_st)
{
    double now = fg_now_ms();
    bool failed_any = false;
    for (ereq *r = e->active; r; r = r->next) {
        if (!r->rid || r->why != FG_FINISH_NONE) continue;
        fg_req_info info;
        if (fg_runner_info(e->run, r->rid, &info) != FG_OK) {
            end_req(e, r, FG_FINISH_ERROR, "engine: the runner lost the request");
            continue;
        }
        r->rstate = info.state;
        r->r_cached = info.n_cached;
        r->r_preempted = info.n_preempted;
        if (r->x_sched < 0 && (info.state != FG_REQ_WAITING || info.n_gen > 0)) r->x_sched = t_step;
        if (atomic_load(&r->cancel)) continue; /* apply_cancels ends it before the next step */
        if (r->plp_top >= 0 && r->n_plp == 0 && info.n_gen > 0) take_prompt_logprobs(e, r);
        if (r->score_only && info.n_gen > 0) {
            end_req(e, r, FG_FINISH_LENGTH, NULL);
            continue;
        }
        if (r->n_seen < info.n_gen && r->lps && fg_runner_last_logprob(e->run, r->rid, &r->lps[r->n_seen]) != FG_OK)
            r->lps[r->n_seen] = (fg_token_logprob){.token = info.gen[r->n_seen], .logprob = 0};
        if (r->n_seen < info.n_gen)
            take_token(e, r, info.gen[r->n_seen], now, info.state == FG_REQ_FINISHED && r->n_seen + 1 == info.n_gen);
        if (r->why == FG_FINISH_NONE && info.state == FG_REQ_FAILED) {
            end_req(e, r, FG_FINISH_ERROR, e->step_error);
            failed_any = true;
        }
    }
    /* A step that failed before the runner could blame its requests
     * (planning) fails every request the runner holds, rather than failing
     * again forever. */
    if (step_st != FG_OK && !failed_any)
        for (ereq *r = e->active; r; r = r->next)
            if (r->rid && r->why == FG_FINISH_NONE) end_req(e, r, FG_FINISH_ERROR, e->step_error);
}

/* A step that planned nothing while the runner holds requests would be
 * planned again, forever: fail them instead of spinning (a scheduler bug,
 * named as one). */
static void check_progress(fg_engine *e, int32_t n_tokens)
{
    int32_t running, waiting;
    fg_runner_counts(e->run, &running, &waiting);
    if (n_tokens > 0 || running + waiting == 0) return;
    char msg[256];
    snprintf(msg, sizeof msg, "engine: no step could be planned for %d running and %d waiting requests on a pool of %d "
                              "blocks; this is a bug, please report it", running, waiting, e->stats.kv_blocks);
    for (ereq *r = e->active; r; r = r->next)
        if (r->rid && r->why == FG_FINISH_NONE) end_req(e, r, FG_FINISH_ERROR, msg);
}

/* ---- The engine thread: publishing ------------------------------------------- */

static void append_text(ereq *r)
{
    size_t n = r->ts.ready;
    if (n == 0) return;
    if (r->text_len + n > r->text_cap) {
        size_t cap = 2 * (r->text_len + n);
        char *t = realloc(r->text, cap);
        if (!t) return; /* the text is lost to polling, the tokens are not */
        r->text = t;
        r->text_cap = cap;
    }
    memcpy(r->text + r->text_len, r->ts.buf, n);
    r->text_len += n;
    fg_textstream_take(&r->ts);
}

static void unlink_active(fg_engine *e, ereq *r)
{
    if (r->prev) r->prev->next = r->next;
    else e->active = r->next;
    if (r->next) r->next->prev = r->prev;
    else e->active_tail = r->prev;
    r->prev = r->next = NULL;
}

/* Publishes r's progress to its callers; an ended request leaves the
 * active list (and is freed if already released). Under mu. */
static void publish_req(fg_engine *e, ereq *r)
{
    fg_engine_stats *s = &e->stats;
    if (!ended(r->state)) {
        s->generated_tokens += (uint64_t)(r->n_seen - r->n_gen);
        r->n_gen = r->n_seen;
        if (!r->on_token) append_text(r);
        r->t_first = r->x_first;
        r->t_last = r->x_last;
        if (r->r_preempted > r->n_preempted) s->preemptions += (uint64_t)(r->r_preempted - r->n_preempted);
        r->n_preempted = r->r_preempted;
        if (r->t_sched < 0 && r->x_sched >= 0) {
            r->t_sched = r->x_sched;
            r->n_cached = r->r_cached;
            s->prompt_tokens += (uint64_t)r->n_prompt;
            s->cached_tokens += (uint64_t)r->n_cached;
        }
        if (r->queued && (r->t_sched >= 0 || r->why != FG_FINISH_NONE)) {
            r->queued = false;
            e->n_queued--;
        }
        r->state = r->rstate == FG_REQ_PREFILLING ? FG_REQUEST_PREFILLING
                   : r->rstate == FG_REQ_DECODING ? FG_REQUEST_DECODING
                                                 : FG_REQUEST_QUEUED;
        if (r->why != FG_FINISH_NONE) {
            r->state = r->why == FG_FINISH_CANCELLED ? FG_REQUEST_CANCELLED
                       : r->why == FG_FINISH_ERROR   ? FG_REQUEST_FAILED
                                                     : FG_REQUEST_FINISHED;
            r->finish = r->why;
            snprintf(r->error, sizeof r->error, "%s", r->why == FG_FINISH_ERROR ? r->why_msg : "");
            r->t_end = fg_now_ms();
        }
    }
    if (r->why == FG_FINISH_NONE) return;
    s->finished += r->state == FG_REQUEST_FINISHED;
    s->cancelled += r->state == FG_REQUEST_CANCELLED;
    s->failed += r->state == FG_REQUEST_FAILED;
    unlink_active(e, r);
    fg_textstream_free(&r->ts);
    r->engine_done = true;
    if (r->released) req_free(r);
}

/* Publishes every active request and the engine's load. Under mu. */
static void publish(fg_engine *e)
{
    for (ereq *r = e->active, *next; r; r = next) {
        next = r->next;
        publish_req(e, r);
    }
    fg_engine_stats *s = &e->stats;
    int32_t running, waiting, pending = 0;
    fg_runner_counts(e->run, &running, &waiting);
    for (const ereq *r = e->active; r; r = r->next) pending += r->rid == 0;
    fg_kvcache_usage u;
    fg_runner_kv_usage(e->run, &u);
    s->running = running;
    s->waiting = waiting + pending;
    s->kv_used = u.used;
    s->kv_cached = u.cached;
    s->kv_free = u.free;
    pthread_cond_broadcast(&e->output);
}

/* ---- The engine thread ---------------------------------------------------------- */

/* Moves the inbox to the end of the active list. Under mu. */
static void take_inbox(fg_engine *e)
{
    for (ereq *r = e->inbox, *next; r; r = next) {
        next = r->inbox_next;
        r->inbox_next = NULL;
        r->prev = e->active_tail;
        if (e->active_tail) e->active_tail->next = r;
        else e->active = r;
        e->active_tail = r;
    }
    e->inbox = e->inbox_tail = NULL;
}

static void *engine_main(void *arg)
{
    fg_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        take_inbox(e);
        if (e->stop) break;
        e->t_beat = fg_now_ms();
        if (!e->active) {
            pthread_cond_wait(&e->work, &e->mu);
            e->t_beat = fg_now_ms();
            continue;
        }
        pthread_mutex_unlock(&e->mu);
        apply_cancels(e);
        feed(e);
        double t_step = fg_now_ms();
        int32_t n_tokens = 0;
        fg_status st = fg_runner_step(e->run, &n_tokens);
        if (st != FG_OK) snprintf(e->step_error, sizeof e->step_error, "%s", fg_last_error());
        collect(e, t_step, st);
        if (st == FG_OK) check_progress(e, n_tokens);
        pthread_mutex_lock(&e->mu);
        e->stats.steps++;
        if (n_tokens > 0) {
            static const int32_t bounds[FG_STEP_TOKENS_BUCKETS - 1] = FG_STEP_TOKENS_BOUNDS;
            int b = 0;
            while (b < FG_STEP_TOKENS_BUCKETS - 1 && n_tokens > bounds[b]) b++;
            e->stats.steps_by_tokens[b]++;
            e->stats.step_tokens += (uint64_t)n_tokens;
        }
        publish(e);
    }
    /* Closing: whatever is left ends cancelled, without more callbacks. */
    for (ereq *r = e->active; r; r = r->next) {
        cancel_locked(e, r);
        end_req(e, r, FG_FINISH_CANCELLED, NULL);
    }
    publish(e);
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

void fg_engine_close(fg_engine *e)
{
    if (!e) return;
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_cond_signal(&e->work);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    for (int32_t i = 0; i < e->n_slots; i++) req_free(e->slots[i]);
    free(e->slots);
    fg_runner_free(e->run);
    fg_backend_free(e->be);
    fg_model_close(e->model);
    pthread_cond_destroy(&e->output);
    pthread_cond_destroy(&e->work);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
