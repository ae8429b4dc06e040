/*
 * test_scheduler.c — continuous batching (runtime/scheduler.c) over the
 * paged KV cache, driven by a fake model whose next token is a fixed
 * function of the request and how many tokens it has generated. So every
 * request's output is known in advance, whatever batches, chunks and
 * preemptions it went through.
 *
 * Checked on every planned step: the budget, each sequence's chunk is its
 * next positions in order, every slot is the one its block table gives and
 * no two tokens share one. Over random workloads of thousands of requests
 * (shared prompt prefixes, random lengths, cancellations, a pool small
 * enough to force preemption): every request ends, finished ones with
 * exactly the expected tokens, and no block stays used when idle. A request
 * the caller finishes (fg_sched_finish) ends at once, freeing its blocks.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/scheduler.h"

enum { BS = 16 };

/* The fake model: the token a request generates after g of its own. */
static int32_t next_token(const int32_t *prompt, int32_t n_prompt, int32_t g)
{
    return (int32_t)(((uint32_t)prompt[0] * 31u + (uint32_t)n_prompt * 17u + (uint32_t)g * 7u) % 5000u);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* Checks a plan against the cache and answers its logits rows with the
 * fake model; returns the tokens planned. */
static int32_t run_step(fg_sched *s, fg_kvcache *kv, const fg_sched_params *p, int32_t *sampled, int32_t *slot_seen,
                        int32_t n_slots, int32_t step)
{
    fg_sched_batch b;
    cr_assert_eq(fg_sched_plan(s, &b), FG_OK, "%s", fg_last_error());
    cr_assert(b.n_tokens <= p->max_step_tokens);
    cr_assert(b.n_seqs <= p->max_running);
    for (int32_t i = 0; i < n_slots; i++) slot_seen[i] = -1;
    for (int32_t i = 0; i < b.n_tokens; i++) {
        if (i > 0 && b.seq[i] == b.seq[i - 1]) cr_assert_eq(b.pos[i], b.pos[i - 1] + 1, "positions in order");
        const int32_t *t = b.block_tables + (size_t)b.seq[i] * (size_t)b.max_blocks;
        cr_assert_eq(b.slot[i], t[b.pos[i] / BS] * BS + b.pos[i] % BS, "step %d token %d: slot off its block table",
                     step, i);
        cr_assert_eq(slot_seen[b.slot[i]], -1, "step %d: slot %d written twice", step, b.slot[i]);
        slot_seen[b.slot[i]] = i;
    }
    for (int32_t r = 0; r < b.n_logits; r++) {
        fg_req_info info;
        cr_assert_eq(fg_sched_info(s, b.logits_req[r], &info), FG_OK);
        int32_t tk = b.logits_token[r];
        cr_assert(tk >= 0 && tk < b.n_tokens);
        cr_assert_eq(b.pos[tk], info.n_prompt + info.n_gen - 1, "logits come from the last known token");
        const int32_t *prompt = info.gen - info.n_prompt;
        sampled[r] = next_token(prompt, info.n_prompt, info.n_gen);
    }
    fg_sched_commit(s, sampled);
    cr_assert(fg_kvcache_check(kv));
    return b.n_tokens;
}

typedef struct expect {
    uint64_t id;
    int32_t prompt0, n_prompt, max_new, eos;
    bool cancelled, done;
} expect;

static void check_output(const expect *e, const fg_req_info *info, const int32_t *prompt)
{
    int32_t g = 0;
    for (; g < e->max_new; g++) {
        int32_t t = next_token(prompt, e->n_prompt, g);
        cr_assert(g < info->n_gen, "request %llu: %d tokens, expected more", (unsigned long long)e->id, info->n_gen);
        cr_assert_eq(info->gen[g], t, "request %llu token %d", (unsigned long long)e->id, g);
        if (t == e->eos) break;
    }
    cr_assert_eq(info->n_gen, g < e->max_new ? g + 1 : e->max_new);
}

/* A cache of n_blocks (max_bps a sequence) and a scheduler over it. */
static void open_sched(int32_t n_blocks, int32_t max_bps, const fg_sched_params *p, fg_kvcache **kv, fg_sched **s)
{
    cr_assert_eq(fg_kvcache_init(n_blocks, BS, p->max_running, max_bps, kv), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_sched_init(p, *kv, s), FG_OK, "%s", fg_last_error());
}

static void workload(int32_t n_req, int32_t n_blocks, const fg_sched_params *p, uint64_t seed)
{
    rng = seed;
    enum { MAXB = 24 };
    fg_kvcache *kv;
    fg_sched *s;
    open_sched(n_blocks, MAXB, p, &kv, &s);
    expect *ex = calloc((size_t)n_req, sizeof *ex);
    int32_t **prompts = calloc((size_t)n_req, sizeof *prompts);
    int32_t *sampled = malloc((size_t)p->max_running * sizeof *sampled);
    int32_t *seen = malloc((size_t)n_blocks * BS * sizeof *seen);
    int32_t submitted = 0, ended = 0, full = 0, cancels = 0, preempted = 0, cached = 0;
    long steps = 0, tokens = 0;
    while (ended < n_req) {
        /* A few arrivals a step, prompts from eight families sharing prefixes. */
        for (int a = rnd(4); a > 0 && submitted < n_req; a--) {
            expect *e = &ex[submitted];
            int32_t fam = (int32_t)rnd(8), n = 1 + (int32_t)rnd(200);
            int32_t max_new = 1 + (int32_t)rnd(60);
            if (n + max_new > MAXB * BS) n = MAXB * BS - max_new;
            int32_t *pr = malloc((size_t)n * sizeof *pr);
            for (int32_t i = 0; i < n; i++) pr[i] = i < 100 ? fam * 1000 + i : (int32_t)rnd(5000);
            /* An end token the fake model may produce early, or none. */
            int32_t eos = rnd(3) ? next_token(pr, n, (int32_t)rnd((uint32_t)max_new + 20)) : -1;
            fg_status st = fg_sched_submit(s, pr, n, max_new, eos, &e->id);
            if (st == FG_ERR_FULL) {
                full++;
                free(pr);
                break;
            }
            cr_assert_eq(st, FG_OK, "%s", fg_last_error());
            *e = (expect){e->id, pr[0], n, max_new, eos, false, false};
            prompts[submitted++] = pr;
        }
        /* Now and then a cancellation, waiting or running alike. */
        if (submitted > 0 && rnd(20) == 0) {
            expect *e = &ex[rnd((uint32_t)submitted)];
            if (!e->done && !e->cancelled && fg_sched_cancel(s, e->id) == FG_OK) e->cancelled = true, cancels++;
        }
        tokens += run_step(s, kv, p, sampled, seen, n_blocks * BS, (int32_t)steps);
        steps++;
        cr_assert(steps < 200000, "the workload does not end: %d of %d requests ended", ended, n_req);
        /* Collect what ended. */
        for (int32_t i = 0; i < submitted; i++) {
            expect *e = &ex[i];
            if (e->done) continue;
            fg_req_info info;
            cr_assert_eq(fg_sched_info(s, e->id, &info), FG_OK);
            if (info.state != FG_REQ_FINISHED && info.state != FG_REQ_CANCELLED) continue;
            cr_assert_eq(info.state == FG_REQ_CANCELLED, e->cancelled);
            preempted += info.n_preempted > 0;
            cached += info.n_cached > 0;
            if (!e->cancelled) check_output(e, &info, prompts[i]);
            e->done = true;
            ended++;
            fg_sched_release(s, e->id);
        }
    }
    fg_kvcache_usage u;
    fg_kvcache_usage_get(kv, &u);
    cr_assert_eq(u.used, 0, "%d blocks still used with nothing running", u.used);
    cr_assert_eq(u.n_seqs, 0);
    cr_assert_eq(fg_sched_n_running(s), 0);
    cr_assert_eq(fg_sched_n_waiting(s), 0);
    cr_log_info("scheduler workload: %d requests in %ld steps, %ld tokens; %d cancelled, %d preempted, %d with prefix hits, "
                "%d queue-full refusals",
                n_req, steps, tokens, cancels, preempted, cached, full);
    cr_assert(preempted > 0 && cached > 0 && cancels > 0, "the workload exercised preemption %d, prefix hits %d, cancels %d",
              preempted, cached, cancels);
    for (int32_t i = 0; i < n_req; i++) free(prompts[i]);
    free(prompts), free(ex), free(sampled), free(seen);
    fg_sched_free(s);
    fg_kvcache_free(kv);
}

Test(scheduler, random_workload_ends_every_request_without_leaks)
{
    fg_sched_params p = {256, 16, 32};
    workload(3000, 96, &p, 0x1234567ull);
}

Test(scheduler, tight_pool_and_budget)
{
    fg_sched_params p = {48, 6, 8};
    workload(1500, 30, &p, 0xabcdefull);
}

/* Outputs are the fake model's exactly, through preemption and chunking:
 * a few requests on a pool that holds about one of them at a time. */
Test(scheduler, preempted_requests_resume_with_the_same_tokens)
{
    fg_kvcache *kv;
    fg_sched *s;
    fg_sched_params p = {40, 4, 8};
    open_sched(12, 12, &p, &kv, &s);
    int32_t prompts[4][100];
    uint64_t id[4];
    expect ex[4];
    for (int r = 0; r < 4; r++) {
        for (int i = 0; i < 100; i++) prompts[r][i] = r * 500 + i;
        cr_assert_eq(fg_sched_submit(s, prompts[r], 60 + 10 * r, 80, -1, &id[r]), FG_OK, "%s", fg_last_error());
        ex[r] = (expect){id[r], prompts[r][0], 60 + 10 * r, 80, -1, false, false};
    }
    int32_t sampled[4], seen[12 * BS], steps = 0, preempted = 0;
    for (int done = 0; done < 4 && steps < 10000; steps++) {
        run_step(s, kv, &p, sampled, seen, 12 * BS, steps);
        done = 0;
        for (int r = 0; r < 4; r++) {
            fg_req_info info;
            fg_sched_info(s, id[r], &info);
            done += info.state == FG_REQ_FINISHED;
        }
    }
    for (int r = 0; r < 4; r++) {
        fg_req_info info;
        fg_sched_info(s, id[r], &info);
        cr_assert_eq(info.state, FG_REQ_FINISHED, "request %d did not finish", r);
        check_output(&ex[r], &info, prompts[r]);
        preempted += info.n_preempted;
        fg_sched_release(s, id[r]);
    }
    cr_assert(preempted > 0, "the pool was meant to force preemption");
    fg_kvcache_free(kv);
    fg_sched_free(s);
}

/* A second request with the same 1,000-token prefix computes only what
 * follows it; the queue bound; cancellation frees blocks at once. */
Test(scheduler, prefix_reuse_queue_bound_and_cancel)
{
    fg_kvcache *kv;
    fg_sched *s;
    fg_sched_params p = {512, 4, 2};
    open_sched(256, 80, &p, &kv, &s);
    int32_t prompt[1010], sampled[4], seen[256 * BS];
    for (int i = 0; i < 1010; i++) prompt[i] = (i * 37) % 3000;
    uint64_t a, b;
    cr_assert_eq(fg_sched_submit(s, prompt, 1000, 4, -1, &a), FG_OK);
    long t_first = 0, t_second = 0;
    fg_req_info info;
    do {
        t_first += run_step(s, kv, &p, sampled, seen, 256 * BS, 0);
        fg_sched_info(s, a, &info);
    } while (info.state != FG_REQ_FINISHED);
    fg_sched_release(s, a);
    prompt[1000] = 7; /* a different continuation after the shared 1,000 */
    cr_assert_eq(fg_sched_submit(s, prompt, 1010, 4, -1, &b), FG_OK);
    do {
        t_second += run_step(s, kv, &p, sampled, seen, 256 * BS, 0);
        fg_sched_info(s, b, &info);
    } while (info.state != FG_REQ_FINISHED);
    cr_assert_eq(info.n_cached, 992, "the first 62 full blocks of the prefix are reused (%d)", info.n_cached);
    cr_assert_eq(t_first, 1000 + 3, "the first request computes its prompt and 3 decodes");
    cr_assert_eq(t_second, 1010 - 992 + 3, "the second computes %ld tokens", t_second);
    fg_sched_release(s, b);

    /* The queue holds two waiting requests. */
    uint64_t q[3];
    cr_assert_eq(fg_sched_submit(s, prompt, 10, 4, -1, &q[0]), FG_OK);
    cr_assert_eq(fg_sched_submit(s, prompt + 10, 10, 4, -1, &q[1]), FG_OK);
    cr_assert_eq(fg_sched_submit(s, prompt + 20, 10, 4, -1, &q[2]), FG_ERR_FULL);
    cr_assert_eq(fg_sched_cancel(s, q[1]), FG_OK);
    cr_assert_eq(fg_sched_submit(s, prompt + 20, 10, 4, -1, &q[2]), FG_OK);
    run_step(s, kv, &p, sampled, seen, 256 * BS, 0);
    fg_kvcache_usage u0, u1;
    fg_kvcache_usage_get(kv, &u0);
    cr_assert(u0.used > 0);
    cr_assert_eq(fg_sched_cancel(s, q[0]), FG_OK);
    cr_assert_eq(fg_sched_cancel(s, q[2]), FG_OK);
    fg_kvcache_usage_get(kv, &u1);
    cr_assert_eq(u1.used, 0, "cancelling frees every block at once");
    cr_assert_eq(fg_sched_cancel(s, q[2]), FG_ERR_NOT_FOUND);
    for (int i = 0; i < 3; i++) fg_sched_release(s, q[i]);
    cr_assert_eq(fg_sched_info(s, q[0], &info), FG_ERR_NOT_FOUND);
    fg_sched_free(s);
    fg_kvcache_free(kv);
}

/* The caller's end of a request (another end-of-generation token, a stop
 * string): running or waiting, it finishes now and a running one's blocks
 * are free before the next plan. */
Test(scheduler, finish_ends_a_request_at_once)
{
    fg_kvcache *kv;
    fg_sched *s;
    fg_sched_params p = {64, 1, 4};
    open_sched(32, 16, &p, &kv, &s);
    int32_t prompt[40], sampled[1], seen[32 * BS];
    for (int i = 0; i < 40; i++) prompt[i] = 100 + i;
    uint64_t a, b;
    cr_assert_eq(fg_sched_submit(s, prompt, 40, 8, -1, &a), FG_OK);
    cr_assert_eq(fg_sched_submit(s, prompt + 1, 20, 8, -1, &b), FG_OK);
    run_step(s, kv, &p, sampled, seen, 32 * BS, 0);
    fg_req_info info;
    fg_sched_info(s, a, &info);
    cr_assert_eq(info.state, FG_REQ_DECODING);
    cr_assert_eq(info.n_gen, 1);
    fg_kvcache_usage u;
    fg_kvcache_usage_get(kv, &u);
    cr_assert(u.used > 0);
    cr_assert_eq(fg_sched_finish(s, a), FG_OK);
    fg_sched_info(s, a, &info);
    cr_assert_eq(info.state, FG_REQ_FINISHED);
    cr_assert_eq(info.n_gen, 1, "its tokens are kept");
    fg_kvcache_usage_get(kv, &u);
    cr_assert_eq(u.used, 0, "its blocks are free at once");
    cr_assert_eq(fg_sched_n_running(s), 0);
    cr_assert_eq(fg_sched_finish(s, a), FG_ERR_NOT_FOUND, "an ended request cannot end again");
    /* b was waiting behind it (one running at a time). */
    fg_sched_info(s, b, &info);
    cr_assert_eq(info.state, FG_REQ_WAITING);
    cr_assert_eq(fg_sched_finish(s, b), FG_OK);
    cr_assert_eq(fg_sched_n_waiting(s), 0);
    cr_assert(fg_kvcache_check(kv));
    fg_sched_release(s, a);
    fg_sched_release(s, b);
    fg_sched_free(s);
    fg_kvcache_free(kv);
}
