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
 *
 * The fake model also keeps the KV pool's contents: each planned token
 * writes (its token, its position) into its slot, the whole step's writes
 * before any read (as the forward stores every token's K and V before a
 * layer's attention), and every token's attention then reads the slots of
 * all its earlier positions through its block table; each must hold that
 * sequence's own token at that position. So a prefix hit on a block nobody
 * computed, or on another prompt's block, fails the test where it happens:
 * identical and overlapping short prompts submitted together, shared
 * prefixes, preemption, and a step that failed.
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

/* The fake KV pool: what each slot holds, (token << 20 | position), or -1
 * when never written. Sized by the first plan of a test (one process per
 * test). */
static int64_t *kv_data;
static int32_t kv_n_slots;

static int64_t kv_entry(int32_t token, int32_t pos)
{
    return (int64_t)token << 20 | pos;
}

/* The fake forward of plan b: writes every token's entry, then checks what
 * each token reads. A token's sequence content is known for the positions
 * the plan itself holds (its chunk) and, through the request of a logits
 * row, for all of them. */
static void fake_forward(fg_sched *s, const fg_sched_batch *b, int32_t n_slots, int32_t step)
{
    if (!kv_data) {
        kv_n_slots = n_slots;
        kv_data = malloc((size_t)n_slots * sizeof *kv_data);
        cr_assert_not_null(kv_data);
        for (int32_t i = 0; i < n_slots; i++) kv_data[i] = -1;
    }
    cr_assert_eq(n_slots, kv_n_slots);
    for (int32_t i = 0; i < b->n_tokens; i++) kv_data[b->slot[i]] = kv_entry(b->ids[i], b->pos[i]);
    /* Every position before a chunk's tokens was written, by this step or an earlier one, for its own position. */
    for (int32_t i = 0; i < b->n_tokens; i++) {
        if (i > 0 && b->seq[i] == b->seq[i - 1]) continue; /* the chunk's first token reads the least */
        const int32_t *t = b->block_tables + (size_t)b->seq[i] * (size_t)b->max_blocks;
        for (int32_t q = 0; q < b->pos[i]; q++) {
            int64_t v = kv_data[t[q / BS] * BS + q % BS];
            cr_assert(v >= 0 && (v & 0xfffff) == q,
                      "step %d: a token at position %d reads position %d from a slot %s", step, b->pos[i], q,
                      v < 0 ? "never computed" : "computed for another position");
        }
    }
    /* The last token of a request reads exactly its own tokens. */
    for (int32_t r = 0; r < b->n_logits; r++) {
        fg_req_info info;
        cr_assert_eq(fg_sched_info(s, b->logits_req[r], &info), FG_OK);
        const int32_t *tok = info.gen - info.n_prompt;
        int32_t tk = b->logits_token[r];
        const int32_t *t = b->block_tables + (size_t)b->seq[tk] * (size_t)b->max_blocks;
        for (int32_t q = 0; q <= b->pos[tk]; q++)
            cr_assert_eq(kv_data[t[q / BS] * BS + q % BS], kv_entry(tok[q], q),
                         "step %d: request %llu reads another token's KV at position %d", step,
                         (unsigned long long)b->logits_req[r], q);
    }
}

/* The plan run_step ran last (its arrays stay valid until the next plan). */
static fg_sched_batch last_plan;

/* Checks a plan against the cache and answers its logits rows with the
 * fake model; returns the tokens planned. */
static int32_t run_step(fg_sched *s, fg_kvcache *kv, const fg_sched_params *p, int32_t *sampled, int32_t *slot_seen,
                        int32_t n_slots, int32_t step)
{
    fg_sched_batch b;
    cr_assert_eq(fg_sched_plan(s, &b), FG_OK, "%s", fg_last_error());
    last_plan = b;
    fake_forward(s, &b, n_slots, step);
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

/* Runs the requests ids[0..n) to their end (the fake model), checking each
 * output and freeing them. */
static void run_all(fg_sched *s, fg_kvcache *kv, const fg_sched_params *p, const uint64_t *ids, const expect *ex,
                    int32_t *const *prompts, int n, int32_t n_slots)
{
    int32_t sampled[16], *seen = malloc((size_t)n_slots * sizeof *seen);
    cr_assert(seen && p->max_running <= 16);
    for (int steps = 0;; steps++) {
        cr_assert(steps < 10000, "the requests do not end");
        int done = 0;
        for (int r = 0; r < n; r++) {
            fg_req_info info;
            fg_sched_info(s, ids[r], &info);
            done += info.state == FG_REQ_FINISHED;
        }
        if (done == n) break;
        run_step(s, kv, p, sampled, seen, n_slots, steps);
    }
    for (int r = 0; r < n; r++) {
        fg_req_info info;
        fg_sched_info(s, ids[r], &info);
        check_output(&ex[r], &info, prompts[r]);
        fg_sched_release(s, ids[r]);
    }
    free(seen);
}

/* Issue 14, item 1: short prompts (shorter than a block, a block and a
 * bit, two blocks), identical or one a prefix of another, submitted
 * together, so that one is admitted in the step that computes (and
 * indexes) the blocks the others would attach to; with a step budget that
 * takes them whole and one that chunks them; and again once their blocks
 * are cached. */
Test(scheduler, identical_and_overlapping_short_prompts_together)
{
    static const int32_t sets[][5] = {
        {7, 7, 0},         {7, 7, 7, 7, 0},  {16, 16, 0},      {17, 17, 17, 0},  {33, 33, 0},
        {7, 3, 12, 7, 0},  {16, 17, 18, 0},  {17, 16, 33, 0},  {33, 17, 16, 1, 0}, {1, 1, 2, 0},
    };
    static const int32_t budgets[] = {256, 16, 5};
    int32_t base[40];
    for (int i = 0; i < 40; i++) base[i] = 57 + i * 13;
    for (size_t bi = 0; bi < sizeof budgets / sizeof budgets[0]; bi++) {
        fg_sched_params p = {budgets[bi], 5, 8};
        fg_kvcache *kv;
        fg_sched *s;
        open_sched(64, 8, &p, &kv, &s);
        for (int round = 0; round < 2; round++) { /* the second finds the first's blocks cached */
            for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
                uint64_t ids[5];
                expect ex[5];
                int32_t *prompts[5];
                int n = 0;
                for (; n < 5 && sets[si][n] > 0; n++) {
                    prompts[n] = base;
                    cr_assert_eq(fg_sched_submit(s, base, sets[si][n], 20, -1, &ids[n]), FG_OK, "%s", fg_last_error());
                    ex[n] = (expect){ids[n], base[0], sets[si][n], 20, -1, false, false};
                }
                run_all(s, kv, &p, ids, ex, prompts, n, 64 * BS);
            }
        }
        fg_kvcache_usage u;
        fg_kvcache_usage_get(kv, &u);
        cr_assert_eq(u.used, 0);
        cr_assert(u.prefix_hits > 0, "the prompts shared blocks");
        fg_sched_free(s);
        fg_kvcache_free(kv);
        free(kv_data);
        kv_data = NULL;
    }
}

/* A step that failed computed nothing: the blocks it filled must not serve
 * a later prompt's prefix (they were indexed when planned). */
Test(scheduler, a_failed_step_leaves_no_block_to_attach_to)
{
    fg_sched_params p = {256, 4, 8};
    fg_kvcache *kv;
    fg_sched *s;
    open_sched(32, 8, &p, &kv, &s);
    int32_t prompt[40];
    for (int i = 0; i < 40; i++) prompt[i] = 200 + i;
    uint64_t a, b, c;
    cr_assert_eq(fg_sched_submit(s, prompt, 40, 4, -1, &a), FG_OK);
    cr_assert_eq(fg_sched_submit(s, prompt, 35, 4, -1, &b), FG_OK);
    fg_sched_batch bt;
    cr_assert_eq(fg_sched_plan(s, &bt), FG_OK);
    cr_assert(bt.n_tokens > 0);
    fg_sched_fail(s);
    fg_req_info info;
    cr_assert_eq(fg_sched_info(s, a, &info), FG_OK);
    cr_assert_eq(info.state, FG_REQ_FAILED);
    fg_sched_release(s, a);
    fg_sched_release(s, b);
    cr_assert(fg_kvcache_check(kv));
    cr_assert_eq(fg_sched_submit(s, prompt, 40, 4, -1, &c), FG_OK);
    expect ex = {c, prompt[0], 40, 4, -1, false, false};
    int32_t *pr = prompt;
    run_all(s, kv, &p, &c, &ex, &pr, 1, 32 * BS);
    fg_kvcache_usage u;
    fg_kvcache_usage_get(kv, &u);
    cr_assert_eq(u.prefix_hits, 32, "only the second request's hit on the first's two planned blocks (%llu)",
                 (unsigned long long)u.prefix_hits);
    fg_sched_free(s);
    fg_kvcache_free(kv);
}

/* Requests that want prompt rows (prompt logprobs): together at most
 * FG_SCHED_PROMPT_ROWS of their prompt positions a step, never a cached
 * prefix, and the fake model's outputs still; others beside them
 * unaffected. */
Test(scheduler, prompt_rows_are_bounded_per_step_and_never_cached)
{
    fg_sched_params p = {512, 4, 8};
    fg_kvcache *kv;
    fg_sched *s;
    open_sched(128, 16, &p, &kv, &s);
    int32_t base[200];
    for (int i = 0; i < 200; i++) base[i] = 300 + i;
    uint64_t ids[4];
    expect ex[4];
    const int32_t lens[4] = {150, 100, 120, 40};
    for (int round = 0; round < 2; round++) {
        for (int r = 0; r < 4; r++) {
            cr_assert_eq(fg_sched_submit(s, base, lens[r], 5, -1, &ids[r]), FG_OK);
            if (r < 3) cr_assert_eq(fg_sched_want_prompt_rows(s, ids[r]), FG_OK);
            ex[r] = (expect){ids[r], base[0], lens[r], 5, -1, false, false};
        }
        int32_t sampled[4], *seen = malloc(128 * BS * sizeof *seen);
        for (int step = 0; step < 1000; step++) {
            int done = 0;
            for (int r = 0; r < 4; r++) {
                fg_req_info info;
                fg_sched_info(s, ids[r], &info);
                done += info.state == FG_REQ_FINISHED;
            }
            if (done == 4) break;
            run_step(s, kv, &p, sampled, seen, 128 * BS, step);
            const fg_sched_batch *b = &last_plan;
            int rows = 0;
            for (int32_t i = 0; i < b->n_tokens; i++) {
                uint64_t rq = b->seq_req[b->seq[i]];
                for (int r = 0; r < 3; r++) rows += rq == ids[r] && b->pos[i] < lens[r] - 1;
            }
            cr_assert(rows <= FG_SCHED_PROMPT_ROWS, "step %d: %d prompt rows", step, rows);
        }
        for (int r = 0; r < 4; r++) {
            fg_req_info info;
            fg_sched_info(s, ids[r], &info);
            cr_assert_eq(info.state, FG_REQ_FINISHED);
            check_output(&ex[r], &info, base);
            if (r < 3) cr_assert_eq(info.n_cached, 0, "round %d request %d attached %d cached tokens", round, r, info.n_cached);
            else if (round == 1) cr_assert(info.n_cached > 0, "the plain request uses the cache");
            fg_sched_release(s, ids[r]);
        }
        free(seen);
    }
    cr_assert_eq(fg_sched_want_prompt_rows(s, 12345), FG_ERR_NOT_FOUND);
    fg_sched_free(s);
    fg_kvcache_free(kv);
}
