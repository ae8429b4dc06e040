/*
 * test_engine_api.c — the public engine API of forge.h (runtime/engine.c)
 * on the CPU backend: greedy output equal to the single-sequence
 * fg_generate path token for token and byte for byte (the synthetic llama
 * model, and SmolLM2 through its chat template when fetched); four threads
 * submitting at once, each request getting exactly its output alone;
 * cancellation while decoding and while queued, with the KV pool back to
 * empty and the engine serving on; the queue bound; every invalid
 * parameter named; stop strings, max_tokens, a full context and a callback
 * that cancels; status counts and timings, prefix-cache hits; and closing
 * with requests in flight (leaks show under `make asan`).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/utf8.h"
#include "forge.h"
#include "runtime/generate.h"
#include "test_util.h"
#include "tokenizer/chat.h"

#define SYNTH "tests/data/llama-synth/gqa-q4_0.gguf"

/* ---- Helpers ----------------------------------------------------------------- */

/* An engine on the CPU with steps of 64 tokens; kv_tokens 0: the pool
 * holds max_running full contexts. */
static fg_engine *open_engine_kv(const char *path, int32_t max_running, int32_t max_waiting, int64_t kv_tokens)
{
    fg_engine_config c = fg_engine_config_default();
    c.device = "cpu";
    c.n_threads = 2;
    c.max_running = max_running;
    c.max_step_tokens = 64;
    c.max_waiting = max_waiting;
    c.kv_tokens = kv_tokens;
    fg_engine *e = NULL;
    cr_assert_eq(fg_engine_open(path, &c, &e), FG_OK, "%s", fg_last_error());
    return e;
}

static fg_engine *open_engine(const char *path, int32_t max_running, int32_t max_waiting)
{
    return open_engine_kv(path, max_running, max_waiting, 0);
}

static void prompt_of(int r, int32_t n, int32_t *p)
{
    for (int32_t i = 0; i < n; i++) p[i] = 3 + (r * 97 + i * 31) % 317;
}

static fg_request_params greedy(const int32_t *prompt, size_t n, int32_t max_tokens)
{
    fg_request_params p = fg_request_params_default();
    p.prompt = prompt;
    p.n_prompt = n;
    p.max_tokens = max_tokens;
    p.sampling.temperature = 0;
    p.sampling.seed = 1;
    return p;
}

/* A request's whole output, gathered by polling until it ends. */
typedef struct output {
    int32_t tok[512];
    size_t n_tok;
    char text[8192];
    size_t n_text;
    fg_request_info info;
} output;

static void drain(fg_engine *e, uint64_t id, output *o)
{
    for (;;) {
        cr_assert_eq(fg_request_wait(e, id, 30000), FG_OK, "%s", fg_last_error());
        /* The status first: once it says ended, the poll after it gets the rest. */
        cr_assert_eq(fg_request_status(e, id, &o->info), FG_OK);
        size_t nt, nx;
        cr_assert_eq(fg_request_poll(e, id, o->tok + o->n_tok, 512 - o->n_tok, &nt, o->text + o->n_text,
                                     sizeof o->text - 1 - o->n_text, &nx),
                     FG_OK);
        o->n_tok += nt;
        o->n_text += nx;
        o->text[o->n_text] = 0;
        if (o->info.state >= FG_REQUEST_FINISHED) return;
    }
}

static void run_alone(fg_engine *e, const fg_request_params *p, output *o)
{
    memset(o, 0, sizeof *o);
    uint64_t id;
    cr_assert_eq(fg_engine_submit(e, p, &id), FG_OK, "%s", fg_last_error());
    drain(e, id, o);
    cr_assert_eq(fg_request_release(e, id), FG_OK);
}

/* Waits (a bounded while) until the engine is idle with no block used. */
static void wait_idle(fg_engine *e)
{
    fg_engine_stats s;
    for (int i = 0; i < 5000; i++) {
        fg_engine_stats_get(e, &s);
        if (s.running == 0 && s.waiting == 0 && s.kv_used == 0) return;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    cr_assert_fail("the engine did not become idle: %d running, %d waiting, %d blocks used", s.running, s.waiting,
                   s.kv_used);
}

static bool emit_text(void *ud, const char *text, size_t len)
{
    output *o = ud;
    memcpy(o->text + o->n_text, text, len);
    o->n_text += len;
    o->text[o->n_text] = 0;
    return true;
}

/* fg_generate on a session (the single-sequence path forge perplexity and
 * the old run/chat used), greedy: the independent reference. */
static fg_finish_reason reference_with(const char *path, const int32_t *prompt, int32_t n, int32_t n_predict,
                                     const fg_logit_bias *bias, int32_t n_bias, bool ignore_eos, output *o)
{
    memset(o, 0, sizeof *o);
    fg_backend *be;
    cr_assert_eq(fg_backend_cpu_init(2, false, &be), FG_OK);
    fg_test_rig rig;
    cr_assert_eq(fg_test_rig_open(&rig, path, be, 256 + n, FG_TYPE_F16), FG_OK, "%s", fg_last_error());
    fg_sampler_params sp = fg_sampler_defaults();
    sp.temperature = 0;
    sp.seed = 1;
    sp.logit_bias = bias, sp.n_logit_bias = n_bias;
    fg_sampler *smp;
    cr_assert_eq(fg_sampler_init(&sp, fg_model_n_vocab(rig.m), &smp), FG_OK);
    fg_gen_params gp = {.n_predict = n_predict, .ignore_eos = ignore_eos};
    fg_tokens ids = {0};
    fg_gen_stats stats;
    cr_assert_eq(fg_generate(rig.s, rig.m->tok, smp, prompt, n, &gp, emit_text, o, &ids, &stats), FG_OK, "%s",
                 fg_last_error());
    memcpy(o->tok, ids.ids, ids.n * sizeof *ids.ids);
    o->n_tok = ids.n;
    fg_tokens_free(&ids);
    fg_sampler_free(smp);
    fg_test_rig_close(&rig);
    return stats.stop;
}

static fg_finish_reason reference(const char *path, const int32_t *prompt, int32_t n, int32_t n_predict, output *o)
{
    return reference_with(path, prompt, n, n_predict, NULL, 0, false, o);
}

static void same_output(const output *got, const output *want, const char *what)
{
    cr_assert_eq(got->n_tok, want->n_tok, "%s: %zu tokens, the reference %zu", what, got->n_tok, want->n_tok);
    for (size_t i = 0; i < want->n_tok; i++)
        cr_assert_eq(got->tok[i], want->tok[i], "%s: token %zu is %d, the reference %d", what, i, got->tok[i],
                     want->tok[i]);
    cr_assert_eq(got->n_text, want->n_text, "%s: %zu bytes of text, the reference %zu", what, got->n_text, want->n_text);
    cr_assert(memcmp(got->text, want->text, want->n_text) == 0, "%s: text '%s', the reference '%s'", what, got->text,
              want->text);
}

/* ---- Agreement with the single-sequence path --------------------------------- */

Test(engine_api, greedy_request_equals_fg_generate, .timeout = 120)
{
    int32_t prompt[40];
    prompt_of(1, 40, prompt);
    output want, got;
    fg_finish_reason stop = reference(SYNTH, prompt, 40, 48, &want);
    fg_engine *e = open_engine(SYNTH, 4, 8);
    fg_request_params p = greedy(prompt, 40, 48);
    run_alone(e, &p, &got);
    same_output(&got, &want, "synthetic model");
    cr_assert_eq(got.info.state, FG_REQUEST_FINISHED);
    cr_assert_eq(got.info.finish, stop == FG_FINISH_EOS ? FG_FINISH_EOS : FG_FINISH_LENGTH, "finish %s",
                 fg_finish_reason_str(got.info.finish));
    fg_engine_close(e);
}

/* A real model through its chat template, to its end-of-turn token. */
Test(engine_api, smollm2_chat_reply_equals_fg_generate, .timeout = 300)
{
    char path[512];
    if (!fg_test_model_path(FG_TEST_SMOLLM2, path, sizeof path))
        cr_skip_test("SKIPPED: %s not found; run 'make models'", path);
    fg_engine *e = open_engine(path, 2, 4);
    const fg_model *m = fg_engine_model(e);
    fg_chat_tmpl t;
    cr_assert_eq(fg_model_chat_template(m->gguf, m->tok, NULL, &t, NULL), FG_OK);
    fg_chat_msg msg = {"user", "Say hi."};
    char *text;
    cr_assert_eq(fg_chat_apply(&t, &msg, 1, true, &text), FG_OK);
    int32_t *ids;
    size_t n;
    cr_assert_eq(fg_model_tokenize(m, text, strlen(text), true, true, &ids, &n), FG_OK);
    free(text);
    output want, got;
    fg_finish_reason stop = reference(path, ids, (int32_t)n, 96, &want);
    fg_request_params p = greedy(ids, n, 96);
    run_alone(e, &p, &got);
    same_output(&got, &want, "SmolLM2");
    cr_assert_eq(stop, FG_FINISH_EOS, "the reference reply ends with its end-of-turn token");
    cr_assert_eq(got.info.finish, FG_FINISH_EOS, "finish %s", fg_finish_reason_str(got.info.finish));
    cr_log_info("SmolLM2 reply (%zu tokens): %s", got.n_tok, got.text);
    free(ids);
    fg_engine_close(e);
}

/* ---- Many threads ---------------------------------------------------------------- */

enum { N_THREADS = 4, PER_THREAD = 3, N_CONC = N_THREADS * PER_THREAD };

typedef struct conc {
    fg_engine *e;
    int t;
    const output *alone; /* (N_CONC) */
    output got[PER_THREAD];
    int32_t prompts[PER_THREAD][64];
} conc;

static bool collect_token(void *ud, uint64_t id, int32_t token, const char *text, size_t len)
{
    output *o = ud;
    o->tok[o->n_tok++] = token;
    memcpy(o->text + o->n_text, text, len);
    o->n_text += len;
    return true;
}

static int32_t conc_len(int r)
{
    return 5 + (r * 13) % 50;
}

/* Threads 0 and 2 poll, 1 and 3 take callbacks; every request is submitted
 * before any is waited for, so they run together. */
static void *conc_thread(void *arg)
{
    conc *c = arg;
    uint64_t ids[PER_THREAD];
    bool cb = c->t % 2 == 1;
    for (int k = 0; k < PER_THREAD; k++) {
        int r = c->t * PER_THREAD + k;
        prompt_of(r, conc_len(r), c->prompts[k]);
        fg_request_params p = greedy(c->prompts[k], (size_t)conc_len(r), 24 + r);
        p.ignore_eos = true;
        memset(&c->got[k], 0, sizeof c->got[k]);
        if (cb) p.on_token = collect_token, p.ud = &c->got[k];
        if (fg_engine_submit(c->e, &p, &ids[k]) != FG_OK) return (void *)fg_last_error();
    }
    for (int k = 0; k < PER_THREAD; k++) {
        output *o = &c->got[k];
        if (cb) {
            do { /* the text went to the callback; polling the ids lets wait block again */
                int32_t scratch[512];
                fg_request_wait(c->e, ids[k], 30000);
                fg_request_status(c->e, ids[k], &o->info);
                fg_request_poll(c->e, ids[k], scratch, 512, &(size_t){0}, NULL, 0, NULL);
            } while (o->info.state < FG_REQUEST_FINISHED);
        } else {
            drain(c->e, ids[k], o);
        }
        fg_request_release(c->e, ids[k]);
    }
    return NULL;
}

/* Four threads submit three requests each at once; each gets exactly what
 * it gets alone. On a pool of one context (16 blocks for up to 8 running
 * requests of up to 7 blocks) some are preempted and recomputed: the same
 * output still. */
static void concurrent(fg_engine *e, const output *alone, bool want_preemption)
{
    static conc cs[N_THREADS];
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        cs[t] = (conc){.e = e, .t = t, .alone = alone};
        cr_assert_eq(pthread_create(&th[t], NULL, conc_thread, &cs[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++) {
        void *err;
        pthread_join(th[t], &err);
        cr_assert_null(err, "thread %d: %s", t, (const char *)err);
    }
    int preempted = 0;
    for (int t = 0; t < N_THREADS; t++)
        for (int k = 0; k < PER_THREAD; k++) {
            int r = t * PER_THREAD + k;
            char what[64];
            snprintf(what, sizeof what, "thread %d request %d (%s)", t, k, t % 2 ? "callback" : "poll");
            cr_assert_eq(cs[t].got[k].info.state, FG_REQUEST_FINISHED, "%s", what);
            cr_assert_eq(cs[t].got[k].info.finish, FG_FINISH_LENGTH, "%s", what);
            same_output(&cs[t].got[k], &alone[r], what);
            preempted += cs[t].got[k].info.n_preempted;
        }
    cr_assert(!want_preemption || preempted > 0, "the small pool was meant to force preemption");
    wait_idle(e);
    fg_engine_stats s;
    fg_engine_stats_get(e, &s);
    cr_assert_eq(s.kv_used, 0);
    cr_assert_eq(s.running + s.waiting, 0);
}

Test(engine_api, concurrent_submitters_each_get_their_output_alone, .timeout = 300)
{
    static output alone[N_CONC];
    fg_engine *e = open_engine(SYNTH, 8, 16);
    for (int r = 0; r < N_CONC; r++) {
        int32_t prompt[64];
        prompt_of(r, conc_len(r), prompt);
        fg_request_params p = greedy(prompt, (size_t)conc_len(r), 24 + r);
        p.ignore_eos = true;
        run_alone(e, &p, &alone[r]);
        cr_assert_eq(alone[r].n_tok, (size_t)(24 + r));
    }
    concurrent(e, alone, false);
    fg_engine_stats s;
    fg_engine_stats_get(e, &s);
    cr_assert_eq(s.finished, 2 * N_CONC);
    fg_engine_close(e);
    e = open_engine_kv(SYNTH, 8, 16, 256);
    concurrent(e, alone, true);
    fg_engine_close(e);
}

/* ---- Cancellation and the queue ------------------------------------------------- */

/* A callback that, at token `at`, holds the engine thread until the test
 * lets it go: the request is then certainly mid-decode, and whatever was
 * submitted meanwhile certainly still queued. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int at, seen;
    bool reached, open;
    bool answer; /* what the callback returns at `at` */
} gate;

static bool gate_token(void *ud, uint64_t id, int32_t token, const char *text, size_t len)
{
    gate *g = ud;
    pthread_mutex_lock(&g->mu);
    bool hold = ++g->seen == g->at, answer = true;
    if (hold) {
        g->reached = true;
        pthread_cond_broadcast(&g->cv);
        while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
        answer = g->answer;
    }
    pthread_mutex_unlock(&g->mu);
    return answer;
}

static void gate_init(gate *g, int at)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->at = at;
    g->answer = true;
}

static void gate_wait_reached(gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->reached) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_free(gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

Test(engine_api, cancel_while_decoding_and_while_queued, .timeout = 120)
{
    fg_engine *e = open_engine(SYNTH, 1, 8);
    int32_t pa[50], pb[20];
    prompt_of(0, 50, pa);
    prompt_of(1, 20, pb);
    gate g;
    gate_init(&g, 4);
    fg_request_params a = greedy(pa, 50, 150);
    a.ignore_eos = true;
    a.on_token = gate_token;
    a.ud = &g;
    uint64_t ida, idb;
    cr_assert_eq(fg_engine_submit(e, &a, &ida), FG_OK, "%s", fg_last_error());
    gate_wait_reached(&g);
    /* a is decoding, held in its 4th token's callback; b waits behind it
     * (one running sequence at a time). */
    fg_request_params b = greedy(pb, 20, 10);
    cr_assert_eq(fg_engine_submit(e, &b, &idb), FG_OK, "%s", fg_last_error());
    fg_engine_stats s;
    fg_engine_stats_get(e, &s);
    cr_assert(s.kv_used > 0, "a holds blocks while decoding");
    fg_request_info info;
    cr_assert_eq(fg_request_status(e, idb, &info), FG_OK);
    cr_assert_eq(info.state, FG_REQUEST_QUEUED);
    cr_assert_eq(fg_request_cancel(e, idb), FG_OK);
    cr_assert_eq(fg_request_status(e, idb, &info), FG_OK);
    cr_assert_eq(info.state, FG_REQUEST_CANCELLED, "cancelled while queued: %s", fg_request_state_str(info.state));
    cr_assert_eq(info.finish, FG_FINISH_CANCELLED);
    cr_assert_eq(info.n_gen, 0);
    cr_assert_eq(fg_request_cancel(e, ida), FG_OK);
    cr_assert_eq(fg_request_status(e, ida, &info), FG_OK);
    cr_assert_eq(info.state, FG_REQUEST_CANCELLED, "cancelled while decoding: %s", fg_request_state_str(info.state));
    gate_open(&g);
    wait_idle(e); /* a's blocks are freed before the next step */
    cr_assert_eq(fg_request_status(e, ida, &info), FG_OK);
    cr_assert_eq(info.state, FG_REQUEST_CANCELLED);
    cr_assert(info.n_gen <= 4, "no token is published after the cancellation (%d)", info.n_gen);
    cr_assert_eq(fg_request_cancel(e, ida), FG_OK, "cancelling an ended request changes nothing");
    /* The engine goes on serving, with the same output as before. */
    output o1, o2;
    fg_request_params c = greedy(pb, 20, 10);
    run_alone(e, &c, &o1);
    run_alone(e, &c, &o2);
    cr_assert_eq(o1.info.state, FG_REQUEST_FINISHED);
    same_output(&o2, &o1, "after a cancellation");
    wait_idle(e);
    fg_engine_stats_get(e, &s);
    cr_assert_eq(s.cancelled, 2);
    cr_assert_eq(s.kv_used, 0);
    /* Released ids are unknown. */
    cr_assert_eq(fg_request_release(e, ida), FG_OK);
    cr_assert_eq(fg_request_release(e, idb), FG_OK);
    cr_assert_eq(fg_request_release(e, idb), FG_ERR_NOT_FOUND);
    cr_assert_eq(fg_request_status(e, ida, &info), FG_ERR_NOT_FOUND);
    cr_assert_eq(fg_request_cancel(e, 12345), FG_ERR_NOT_FOUND);
    cr_assert_eq(fg_request_wait(e, 12345, 0), FG_ERR_NOT_FOUND);
    gate_free(&g);
    fg_engine_close(e);
}

/* A client that goes away: releasing a request that is still running
 * cancels it and frees its blocks. */
Test(engine_api, release_while_running_cancels_it, .timeout = 120)
{
    fg_engine *e = open_engine(SYNTH, 2, 8);
    int32_t pa[30];
    prompt_of(3, 30, pa);
    gate g;
    gate_init(&g, 2);
    fg_request_params a = greedy(pa, 30, 200);
    a.ignore_eos = true;
    a.on_token = gate_token;
    a.ud = &g;
    uint64_t id;
    cr_assert_eq(fg_engine_submit(e, &a, &id), FG_OK, "%s", fg_last_error());
    gate_wait_reached(&g);
    cr_assert_eq(fg_request_release(e, id), FG_OK);
    gate_open(&g);
    wait_idle(e);
    fg_engine_stats s;
    fg_engine_stats_get(e, &s);
    cr_assert_eq(s.cancelled, 1);
    gate_free(&g);
    fg_engine_close(e);
}

Test(engine_api, queue_full_is_a_clear_refusal, .timeout = 120)
{
    fg_engine *e = open_engine(SYNTH, 1, 2);
    int32_t prompt[16];
    prompt_of(2, 16, prompt);
    gate g;
    gate_init(&g, 3); /* past the first step, so a no longer counts as queued */
    fg_request_params a = greedy(prompt, 16, 100);
    a.ignore_eos = true;
    a.on_token = gate_token;
    a.ud = &g;
    uint64_t ida, q[3];
    cr_assert_eq(fg_engine_submit(e, &a, &ida), FG_OK);
    gate_wait_reached(&g);
    fg_request_params b = greedy(prompt, 16, 4);
    cr_assert_eq(fg_engine_submit(e, &b, &q[0]), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_engine_submit(e, &b, &q[1]), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_engine_submit(e, &b, &q[2]), FG_ERR_FULL);
    cr_assert(strstr(fg_last_error(), "queue is full: 2 requests are waiting (max_waiting 2)"), "%s", fg_last_error());
    /* A cancelled one makes room at once. */
    cr_assert_eq(fg_request_cancel(e, q[0]), FG_OK);
    cr_assert_eq(fg_engine_submit(e, &b, &q[2]), FG_OK, "%s", fg_last_error());
    gate_open(&g);
    output o;
    memset(&o, 0, sizeof o);
    drain(e, q[2], &o);
    cr_assert_eq(o.info.state, FG_REQUEST_FINISHED);
    for (int i = 0; i < 3; i++) fg_request_release(e, q[i]);
    fg_request_release(e, ida);
    gate_free(&g);
    fg_engine_close(e);
}

/* ---- Invalid input ------------------------------------------------------------------ */

static void refused(fg_engine *e, const fg_request_params *p, const char *want)
{
    uint64_t id = 99;
    cr_assert_eq(fg_engine_submit(e, p, &id), FG_ERR_INVALID_ARG, "expected a refusal naming '%s'", want);
    cr_assert(strstr(fg_last_error(), want), "the message '%s' does not say '%s'", fg_last_error(), want);
}

Test(engine_api, invalid_request_parameters_are_named, .timeout = 60)
{
    fg_engine *e = open_engine(SYNTH, 2, 4);
    int32_t prompt[300];
    prompt_of(0, 300, prompt);
    fg_request_params p = greedy(prompt, 10, 8);
    refused(e, NULL, "no parameters");
    p.n_prompt = 0;
    refused(e, &p, "prompt is empty");
    p.n_prompt = 300;
    refused(e, &p, "prompt is 300 tokens, longer than the context of 256");
    p = greedy(prompt, 10, 8);
    prompt[3] = 320;
    refused(e, &p, "prompt token 3 is 320, outside the vocabulary of 320");
    prompt[3] = -1;
    refused(e, &p, "prompt token 3 is -1");
    prompt[3] = 7;
    p.max_tokens = 0;
    refused(e, &p, "max_tokens 0 is out of range");
    p.max_tokens = 250;
    refused(e, &p, "max_tokens 250 is out of range: with a prompt of 10 tokens and a context of 256 it must be in 1..246");
    p.max_tokens = -2;
    refused(e, &p, "max_tokens -2");
    p = greedy(prompt, 256, -1);
    refused(e, &p, "fills the context of 256");
    p = greedy(prompt, 10, 8);
    p.sampling.temperature = -1;
    refused(e, &p, "temperature -1 is out of range");
    p = greedy(prompt, 10, 8);
    p.sampling.top_p = 0;
    refused(e, &p, "top_p 0 is out of range");
    p = greedy(prompt, 10, 8);
    p.sampling.min_p = 2;
    refused(e, &p, "min_p 2 is out of range");
    p = greedy(prompt, 10, 8);
    p.sampling.top_k = -3;
    refused(e, &p, "top_k -3");
    p = greedy(prompt, 10, 8);
    const char *stops[20] = {"ok", "", "\xff"};
    p.stops = stops;
    p.n_stops = 2;
    refused(e, &p, "stop string 1 is empty");
    stops[1] = "\xff";
    refused(e, &p, "stop string 1 is not valid UTF-8");
    p.n_stops = 17;
    refused(e, &p, "n_stops 17 is out of range");
    p.n_stops = 1;
    p.stops = NULL;
    refused(e, &p, "n_stops 1");
    /* Nothing was queued by any of it. */
    fg_engine_stats s;
    fg_engine_stats_get(e, &s);
    cr_assert_eq(s.submitted, 0);
    fg_engine_close(e);
}

static void open_refused(const char *path, const fg_engine_config *c, fg_status want_st, const char *want)
{
    fg_engine *e = (fg_engine *)1;
    cr_assert_eq(fg_engine_open(path, c, &e), want_st, "expected a refusal naming '%s'", want);
    cr_assert_null(e);
    cr_assert(strstr(fg_last_error(), want), "the message '%s' does not say '%s'", fg_last_error(), want);
}

Test(engine_api, invalid_engine_config_is_named, .timeout = 60)
{
    fg_engine_config c = fg_engine_config_default();
    c.device = "cpu";
    c.kv_fraction = 0;
    open_refused(SYNTH, &c, FG_ERR_INVALID_ARG, "kv_fraction 0 is out of range: it must be in (0, 1]");
    c = fg_engine_config_default();
    c.max_running = -1;
    open_refused(SYNTH, &c, FG_ERR_INVALID_ARG, "max_running -1 is out of range: it must be in 0..4096");
    c = fg_engine_config_default();
    c.max_step_tokens = 1 << 20;
    open_refused(SYNTH, &c, FG_ERR_INVALID_ARG, "max_step_tokens 1048576 is out of range");
    c = fg_engine_config_default();
    c.max_waiting = -5;
    open_refused(SYNTH, &c, FG_ERR_INVALID_ARG, "max_waiting -5 is out of range");
    c = fg_engine_config_default();
    c.ctx = -5;
    open_refused(SYNTH, &c, FG_ERR_INVALID_ARG, "ctx -5 is out of range");
    c = fg_engine_config_default();
    c.n_threads = 5000;
    open_refused(SYNTH, &c, FG_ERR_INVALID_ARG, "n_threads 5000 is out of range");
    c = fg_engine_config_default();
    c.device = "tpu";
    open_refused(SYNTH, &c, FG_ERR_INVALID_ARG, "device 'tpu' is not one of auto, cpu, cuda, hip");
    c = fg_engine_config_default();
    c.device = "cpu";
    c.kv_tokens = 100;
    open_refused(SYNTH, &c, FG_ERR_INVALID_ARG, "kv_tokens 100 is less than one sequence of ctx 256");
    c.kv_tokens = 0;
    c.kv_type = (fg_kv_type)7;
    open_refused(SYNTH, &c, FG_ERR_INVALID_ARG, "kv_type 7");
    open_refused("/no/such/model.gguf", NULL, FG_ERR_IO, "/no/such/model.gguf");
    open_refused(NULL, NULL, FG_ERR_INVALID_ARG, "no model path");
}

/* ---- How requests end ------------------------------------------------------------------ */

static bool cancel_at_5(void *ud, uint64_t id, int32_t token, const char *text, size_t len)
{
    int *n = ud;
    return ++*n < 5;
}

Test(engine_api, stop_strings_length_context_and_callback_cancel, .timeout = 120)
{
    fg_engine *e = open_engine(SYNTH, 4, 8);
    int32_t prompt[256];
    prompt_of(5, 256, prompt);
    fg_request_params p = greedy(prompt, 12, 40);
    p.ignore_eos = true;
    output full, cut;
    run_alone(e, &p, &full);
    cr_assert_eq(full.info.finish, FG_FINISH_LENGTH);
    cr_assert_eq(full.n_tok, 40);
    cr_assert_eq(full.info.n_gen, 40);
    /* A stop string from the middle of that text: whole characters, first
     * occurring where it is taken. */
    size_t at = full.n_text / 2, len = 0;
    while (at > 0 && fg_utf8_seq_len((uint8_t)full.text[at]) == 0) at--;
    for (size_t k = at; k < full.n_text && len < 3;) {
        int l = fg_utf8_seq_len((uint8_t)full.text[k]);
        k += l ? (size_t)l : 1;
        len = k - at;
    }
    char stop[16] = {0};
    memcpy(stop, full.text + at, len);
    const char *first = NULL; /* the text may hold NUL bytes: no strstr */
    for (size_t k = 0; !first && k + len <= full.n_text; k++)
        if (memcmp(full.text + k, stop, len) == 0) first = full.text + k;
    cr_assert(first && len > 0 && fg_utf8_valid((const uint8_t *)stop, len, &(size_t){0}), "a usable stop string");
    const char *stops[] = {stop};
    p.stops = stops;
    p.n_stops = 1;
    run_alone(e, &p, &cut);
    cr_assert_eq(cut.info.finish, FG_FINISH_STOP, "finish %s", fg_finish_reason_str(cut.info.finish));
    cr_assert_eq(cut.n_text, (size_t)(first - full.text), "the text ends where the stop string begins: '%s' vs '%s'",
                 cut.text, full.text);
    cr_assert(memcmp(cut.text, full.text, cut.n_text) == 0);
    cr_assert(cut.n_tok < full.n_tok);
    for (size_t i = 0; i < cut.n_tok; i++) cr_assert_eq(cut.tok[i], full.tok[i]);

    /* max_tokens -1 runs to the end of the context. */
    fg_request_params q = greedy(prompt, 250, -1);
    q.ignore_eos = true;
    output ctx;
    run_alone(e, &q, &ctx);
    cr_assert_eq(ctx.info.finish, FG_FINISH_CONTEXT, "finish %s", fg_finish_reason_str(ctx.info.finish));
    cr_assert_eq(ctx.info.n_gen, 6);

    /* A callback returning false cancels at that token. */
    int n = 0;
    fg_request_params r = greedy(prompt, 12, 40);
    r.ignore_eos = true;
    r.on_token = cancel_at_5;
    r.ud = &n;
    output cb;
    run_alone(e, &r, &cb);
    cr_assert_eq(cb.info.state, FG_REQUEST_CANCELLED);
    cr_assert_eq(cb.info.finish, FG_FINISH_CANCELLED);
    cr_assert_eq(cb.info.n_gen, 5);
    cr_assert_eq(n, 5, "no callback after the one that said stop");
    wait_idle(e);
    fg_engine_close(e);
}

/* ---- Status: counts, timings, prefix caching ---------------------------------------- */

Test(engine_api, status_counts_timings_and_prefix_cache, .timeout = 120)
{
    fg_engine *e = open_engine(SYNTH, 4, 8);
    fg_engine_stats s;
    fg_engine_stats_get(e, &s);
    cr_assert_eq(s.ctx, 256, "the model's training context");
    cr_assert_eq(s.max_running, 4);
    cr_assert_eq(s.block_size, 16);
    cr_assert_eq(s.kv_tokens, 4 * 256, "the CPU pool is max_running contexts");
    cr_assert_eq(strcmp(s.device, "cpu"), 0);
    int32_t prompt[120];
    prompt_of(7, 120, prompt);
    fg_request_params p = greedy(prompt, 100, 8);
    p.ignore_eos = true;
    output a, b;
    run_alone(e, &p, &a);
    fg_request_info *i = &a.info;
    cr_assert_eq(i->n_prompt, 100);
    cr_assert_eq(i->n_gen, 8);
    cr_assert_eq(i->n_cached, 0);
    cr_assert_eq(i->seed, 1);
    cr_assert(i->queue_ms >= 0 && i->queue_ms <= i->ttft_ms && i->ttft_ms <= i->total_ms,
              "queue %.3f ms <= ttft %.3f ms <= total %.3f ms", i->queue_ms, i->ttft_ms, i->total_ms);
    cr_assert(i->decode_ms_per_token > 0 && i->decode_ms_per_token * 7 <= i->total_ms - i->ttft_ms + 1e-9,
              "decode %.4f ms a token", i->decode_ms_per_token);
    /* The same first 96 tokens (six full blocks), another ending. */
    prompt[98] = 11, prompt[99] = 12;
    p = greedy(prompt, 110, 8);
    p.ignore_eos = true;
    run_alone(e, &p, &b);
    cr_assert_eq(b.info.n_cached, 96, "the shared prefix's six full blocks are reused (%d)", b.info.n_cached);
    wait_idle(e);
    fg_engine_stats_get(e, &s);
    cr_assert_eq(s.prompt_tokens, 210);
    cr_assert_eq(s.cached_tokens, 96);
    cr_assert_eq(s.generated_tokens, 16);
    cr_assert_eq(s.finished, 2);
    cr_assert(s.kv_cached > 0, "finished requests' full blocks stay cached");
    /* A random seed is picked at submission and reported. */
    p.sampling.seed = FG_SEED_RANDOM;
    uint64_t id;
    cr_assert_eq(fg_engine_submit(e, &p, &id), FG_OK);
    fg_request_info info;
    fg_request_status(e, id, &info);
    cr_assert_neq(info.seed, FG_SEED_RANDOM);
    fg_request_release(e, id);
    fg_engine_close(e);
}

/* fg_sampling_random_seed: what FG_SEED_RANDOM gets, fresh on each call. */
Test(engine_api, random_seeds_are_fresh)
{
    uint64_t seen[64];
    for (int i = 0; i < 64; i++) {
        seen[i] = fg_sampling_random_seed();
        cr_assert_neq(seen[i], FG_SEED_RANDOM);
        for (int k = 0; k < i; k++) cr_assert_neq(seen[i], seen[k], "calls %d and %d gave the same seed", k, i);
    }
}

/* ---- Closing ------------------------------------------------------------------------------ */

static bool count_token(void *ud, uint64_t id, int32_t token, const char *text, size_t len)
{
    (*(int *)ud)++;
    return true;
}

Test(engine_api, close_with_requests_in_flight, .timeout = 120)
{
    fg_engine *e = open_engine(SYNTH, 2, 16);
    int32_t prompt[64];
    prompt_of(9, 64, prompt);
    int seen = 0;
    uint64_t ids[10];
    for (int k = 0; k < 10; k++) {
        fg_request_params p = greedy(prompt, (size_t)(20 + k), 200);
        p.ignore_eos = true;
        const char *stops[] = {"zz", "\n\n"};
        p.stops = stops;
        p.n_stops = 2;
        if (k % 2) p.on_token = count_token, p.ud = &seen;
        cr_assert_eq(fg_engine_submit(e, &p, &ids[k]), FG_OK, "%s", fg_last_error());
    }
    fg_request_wait(e, ids[0], 10000);
    fg_request_release(e, ids[2]); /* some released, some not: close frees them all */
    fg_request_release(e, ids[5]);
    fg_engine_close(e);
    cr_assert(seen >= 0);
}

/* ---- Log-probabilities (fg_request_params.logprobs) -------------------------- */

/* A greedy request that asks for logprobs gives the same tokens as one that
 * does not (it is sampled on the host instead of by the sample op); each
 * token is the most likely of its alternatives, with a log-probability <= 0
 * equal to the first alternative's, alternatives in descending order, and
 * probabilities summing to at most 1. A request without logprobs has none. */
Test(engine_api, logprobs_of_greedy_tokens)
{
    fg_engine *e = open_engine(SYNTH, 2, 4);
    int32_t prompt[12];
    prompt_of(3, 12, prompt);
    fg_request_params p = greedy(prompt, 12, 10);
    p.ignore_eos = true;
    output plain, with;
    run_alone(e, &p, &plain);
    p.logprobs = true;
    p.top_logprobs = 5;
    memset(&with, 0, sizeof with);
    uint64_t id;
    cr_assert_eq(fg_engine_submit(e, &p, &id), FG_OK, "%s", fg_last_error());
    drain(e, id, &with);
    cr_assert_eq(with.n_tok, plain.n_tok);
    cr_assert_eq(memcmp(with.tok, plain.tok, plain.n_tok * sizeof *plain.tok), 0);
    fg_token_logprob lp[16];
    size_t n = 0;
    cr_assert_eq(fg_request_logprobs(e, id, 0, lp, 16, &n), FG_OK, "%s", fg_last_error());
    cr_assert_eq(n, with.n_tok);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(lp[i].token, with.tok[i]);
        cr_assert_eq(lp[i].n_top, 5);
        cr_assert_eq(lp[i].top_token[0], lp[i].token, "token %zu: greedy picks the most likely", i);
        cr_assert_float_eq(lp[i].logprob, lp[i].top_logprob[0], 1e-6);
        cr_assert(lp[i].logprob <= 0);
        double sum = 0;
        for (int k = 0; k < 5; k++) {
            if (k) cr_assert(lp[i].top_logprob[k] <= lp[i].top_logprob[k - 1]);
            sum += exp(lp[i].top_logprob[k]);
        }
        cr_assert(sum <= 1.0 + 1e-4, "token %zu: top-5 probabilities sum to %g", i, sum);
    }
    cr_assert_eq(with.n_tok, 10);
    cr_assert_eq(fg_request_logprobs(e, id, with.n_tok - 1, lp, 2, &n), FG_OK); /* past the end: what there is */
    cr_assert_eq(n, 1);
    cr_assert_eq(lp[0].token, with.tok[with.n_tok - 1]);
    cr_assert_eq(fg_request_release(e, id), FG_OK);
    p.logprobs = false;
    cr_assert_eq(fg_engine_submit(e, &p, &id), FG_OK);
    cr_assert_eq(fg_request_logprobs(e, id, 0, lp, 16, &n), FG_ERR_INVALID_ARG);
    cr_assert_eq(fg_request_release(e, id), FG_OK);
    p.logprobs = true;
    p.top_logprobs = FG_MAX_TOP_LOGPROBS + 1;
    cr_assert_eq(fg_engine_submit(e, &p, &id), FG_ERR_INVALID_ARG);
    cr_assert(strstr(fg_last_error(), "top_logprobs"));
    fg_engine_close(e);
}

/* ---- logit_bias -------------------------------------------------------------- */

/* logit_bias through the engine: a banned greedy token gives way to what
 * the session path with the same biases picks; +100 on one token makes it
 * every token; sampled requests never draw a banned token; the bias list is
 * the caller's to free after submit; out-of-range entries are named. */
Test(engine_api, logit_bias_bans_and_forces_tokens, .timeout = 120)
{
    fg_engine *e = open_engine(SYNTH, 2, 4);
    int32_t prompt[12];
    prompt_of(5, 12, prompt);
    fg_request_params p = greedy(prompt, 12, 12);
    p.ignore_eos = true;
    output plain, got, want;
    run_alone(e, &p, &plain);

    fg_logit_bias *ban = malloc(2 * sizeof *ban);
    ban[0] = (fg_logit_bias){plain.tok[0], -100.0f};
    ban[1] = (fg_logit_bias){17, 2.5f};
    p.sampling.logit_bias = ban, p.sampling.n_logit_bias = 2;
    memset(&got, 0, sizeof got);
    uint64_t id;
    cr_assert_eq(fg_engine_submit(e, &p, &id), FG_OK, "%s", fg_last_error());
    fg_logit_bias saved[2] = {ban[0], ban[1]};
    memset(ban, 0xff, 2 * sizeof *ban); /* copied at submit */
    drain(e, id, &got);
    fg_request_release(e, id);
    reference_with(SYNTH, prompt, 12, 12, saved, 2, true, &want); /* the session path, the same biases */
    cr_assert_neq(got.tok[0], plain.tok[0], "the banned token %d", plain.tok[0]);
    cr_assert_eq(got.n_tok, want.n_tok);
    for (size_t i = 0; i < want.n_tok; i++)
        cr_assert_eq(got.tok[i], want.tok[i], "token %zu: engine %d, session path %d", i, got.tok[i], want.tok[i]);
    for (size_t i = 0; i < got.n_tok; i++) cr_assert_neq(got.tok[i], plain.tok[0]);

    const fg_logit_bias force[] = {{77, 100.0f}};
    p.sampling.logit_bias = force, p.sampling.n_logit_bias = 1;
    run_alone(e, &p, &got);
    for (size_t i = 0; i < got.n_tok; i++) cr_assert_eq(got.tok[i], 77, "token %zu is %d, not the forced 77", i, got.tok[i]);

    p.sampling.temperature = 1.0f, p.sampling.top_k = 0, p.sampling.top_p = 1.0f, p.sampling.min_p = 0.0f;
    p.max_tokens = 64;
    p.sampling.logit_bias = saved, p.sampling.n_logit_bias = 1;
    for (int seed = 0; seed < 4; seed++) {
        p.sampling.seed = (uint64_t)seed;
        run_alone(e, &p, &got);
        for (size_t i = 0; i < got.n_tok; i++) cr_assert_neq(got.tok[i], saved[0].token, "seed %d token %zu", seed, i);
    }
    free(ban);

    const fg_logit_bias out_of_vocab[] = {{fg_model_n_vocab(fg_engine_model(e)), 1.0f}}, nan_bias[] = {{3, NAN}};
    p.sampling.logit_bias = out_of_vocab;
    cr_assert_eq(fg_engine_submit(e, &p, &id), FG_ERR_INVALID_ARG);
    cr_assert(strstr(fg_last_error(), "logit_bias token") && strstr(fg_last_error(), "outside the vocabulary"), "%s",
              fg_last_error());
    p.sampling.logit_bias = nan_bias;
    cr_assert_eq(fg_engine_submit(e, &p, &id), FG_ERR_INVALID_ARG);
    cr_assert(strstr(fg_last_error(), "logit_bias") && strstr(fg_last_error(), "finite"), "%s", fg_last_error());
    p.sampling.logit_bias = force, p.sampling.n_logit_bias = FG_MAX_LOGIT_BIAS + 1;
    cr_assert_eq(fg_engine_submit(e, &p, &id), FG_ERR_INVALID_ARG);
    cr_assert(strstr(fg_last_error(), "logit_bias has"), "%s", fg_last_error());
    wait_idle(e);
    fg_engine_close(e);
}

/* ---- Prompt logprobs --------------------------------------------------------- */

typedef struct lsm_ctx {
    int32_t n_vocab;
    const int32_t *prompt;
    double *want; /* (n) want[i]: log p(prompt[i + 1] | prompt[..i]) */
} lsm_ctx;

static void lsm_row(void *ud, int32_t i, const float *l)
{
    lsm_ctx *c = ud;
    double mx = -INFINITY, sum = 0;
    for (int32_t k = 0; k < c->n_vocab; k++) mx = l[k] > mx ? l[k] : mx;
    for (int32_t k = 0; k < c->n_vocab; k++) sum += exp((double)l[k] - mx);
    c->want[i] = (double)l[c->prompt[i + 1 < 150 ? i + 1 : i]] - mx - log(sum);
}

/* Prompt logprobs (OpenAI's echo, vLLM's prompt_logprobs): each prompt
 * token's log-probability given those before it equals the log-softmax of
 * the session path's logits there; a 150-token prompt takes several steps
 * (64 prompt rows a step) beside a plain request with the same prompt,
 * which is untouched; a scoring request (max_tokens 0) outputs nothing and
 * ends "length"; with a prompt in the prefix cache, the scoring request
 * still computes it all. */
Test(engine_api, prompt_logprobs_match_the_session_logits, .timeout = 120)
{
    enum { NP = 150 };
    int32_t prompt[NP];
    prompt_of(7, NP, prompt);
    double want[NP];
    fg_backend *be;
    cr_assert_eq(fg_backend_cpu_init(2, false, &be), FG_OK);
    fg_test_rig rig;
    cr_assert_eq(fg_test_rig_open(&rig, SYNTH, be, 512, FG_TYPE_F16), FG_OK, "%s", fg_last_error());
    lsm_ctx c = {fg_model_n_vocab(rig.m), prompt, want};
    cr_assert_eq(fg_session_eval_all(rig.s, prompt, NP, lsm_row, &c), FG_OK, "%s", fg_last_error());
    fg_test_rig_close(&rig);

    fg_engine *e = open_engine(SYNTH, 4, 8);
    fg_request_params plain = greedy(prompt, NP, 6), scored = plain, score_only = plain;
    plain.ignore_eos = scored.ignore_eos = true;
    output want_plain, got_plain, got_scored, got_score_only;
    run_alone(e, &plain, &want_plain);
    scored.prompt_logprobs = true, scored.prompt_top_logprobs = 3;
    score_only.prompt_logprobs = true, score_only.max_tokens = 0;
    uint64_t ids[3];
    memset(&got_plain, 0, sizeof got_plain), memset(&got_scored, 0, sizeof got_scored);
    memset(&got_score_only, 0, sizeof got_score_only);
    cr_assert_eq(fg_engine_submit(e, &scored, &ids[0]), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_engine_submit(e, &plain, &ids[1]), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_engine_submit(e, &score_only, &ids[2]), FG_OK, "%s", fg_last_error());
    drain(e, ids[0], &got_scored);
    drain(e, ids[1], &got_plain);
    drain(e, ids[2], &got_score_only);
    same_output(&got_plain, &want_plain, "the plain request beside scoring ones");
    same_output(&got_scored, &want_plain, "the scored request's own tokens");
    cr_assert_eq(got_score_only.n_tok, 0, "max_tokens 0 outputs nothing (%zu tokens)", got_score_only.n_tok);
    cr_assert_eq(got_score_only.info.finish, FG_FINISH_LENGTH);
    for (int k = 0; k < 3; k += 2) {
        static fg_token_logprob lp[NP];
        size_t n = 0;
        cr_assert_eq(fg_request_prompt_logprobs(e, ids[k], 0, lp, NP, &n), FG_OK, "%s", fg_last_error());
        cr_assert_eq(n, NP - 1, "request %d: %zu prompt logprobs", k, n);
        for (int i = 0; i < NP - 1; i++) {
            cr_assert_eq(lp[i].token, prompt[i + 1]);
            cr_assert(fabs(lp[i].logprob - want[i]) <= 1e-4, "request %d prompt token %d: logprob %.6f, session %.6f", k,
                      i + 1, (double)lp[i].logprob, want[i]);
            cr_assert_eq(lp[i].n_top, k == 0 ? 3 : 0);
            if (k == 0) cr_assert(lp[i].top_logprob[0] >= lp[i].logprob - 1e-6f);
        }
        cr_assert_eq(got_scored.info.n_cached, 0, "a scoring request attaches no cached prefix");
    }
    size_t n;
    fg_token_logprob one;
    cr_assert_eq(fg_request_prompt_logprobs(e, ids[1], 0, &one, 1, &n), FG_ERR_INVALID_ARG);
    for (int k = 0; k < 3; k++) fg_request_release(e, ids[k]);
    plain.max_tokens = 0;
    cr_assert_eq(fg_engine_submit(e, &plain, &ids[0]), FG_ERR_INVALID_ARG, "max_tokens 0 without prompt_logprobs");
    wait_idle(e);
    fg_engine_close(e);
}
