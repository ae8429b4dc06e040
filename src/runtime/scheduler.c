/*
 * scheduler.c — continuous batching over the paged KV cache (scheduler.h).
 *
 * A request's tokens are its prompt followed by what it has generated
 * ("known" tokens); `computed` of them have their KV in the cache. A step
 * computes a chunk of each scheduled request's uncomputed tokens; a chunk
 * that reaches the last known token yields logits, and so the next token.
 * A decoding request has exactly one uncomputed token. A preempted request
 * loses its cache (computed = 0) but keeps its tokens, so recomputing it is
 * a prefill of prompt and generated tokens together.
 *
 * Requests live in a fixed pool; an id is (serial << 20 | pool slot), so
 * lookups are direct and a stale id is recognized. The waiting queue is a
 * ring of pool slots (preempted requests go back to its front); the running
 * list is in admission order, so its last entry is the newest, the one
 * preemption takes.
 */
#include "runtime/scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

enum { SLOT_BITS = 20 };

typedef struct req {
    uint64_t id; /* 0: the pool slot is free */
    fg_req_state state;
    int32_t *tok; /* (n_prompt + max_new) prompt, then generated tokens */
    int32_t n_prompt, n_gen, max_new, eos;
    int32_t seq;      /* its KV cache sequence while running, else -1 */
    int32_t computed; /* known tokens whose KV is in the cache */
    int32_t chunk;    /* tokens planned for the step in flight */
    int32_t n_cached, n_preempted;
    bool prompt_rows; /* fg_sched_want_prompt_rows */
} req;

struct fg_sched {
    fg_sched_params p;
    fg_kvcache *kv;
    int32_t n_pool;
    req *pool;
    uint64_t serial;
    int32_t *wait; /* ring of pool slots */
    int32_t wait_head, n_wait;
    int32_t *run; /* (max_running) pool slots, oldest admitted first */
    int32_t n_run;
    bool planned;

    /* The plan (capacity max_step_tokens tokens, max_running sequences). */
    int32_t *ids, *pos, *seqi, *slot, *tables, *logits_token, *planned_req;
    uint64_t *logits_req, *seq_req;
    int32_t prompt_rows_left; /* of FG_SCHED_PROMPT_ROWS, in the step being planned */
    int32_t n_planned;
};

static int32_t known(const req *r)
{
    return r->n_prompt + r->n_gen;
}

static req *lookup(const fg_sched *s, uint64_t id)
{
    uint32_t i = (uint32_t)(id & ((1u << SLOT_BITS) - 1));
    if (id == 0 || i >= (uint32_t)s->n_pool || s->pool[i].id != id) return NULL;
    return &s->pool[i];
}

/* ---- Set-up -------------------------------------------------------------- */

fg_status fg_sched_init(const fg_sched_params *p, fg_kvcache *kv, fg_sched **out)
{
    *out = NULL;
    if (p->max_step_tokens < 1 || p->max_running < 1 || p->max_waiting < 1 ||
        p->max_running + p->max_waiting >= (1 << SLOT_BITS))
        return fg_err_set(FG_ERR_INVALID_ARG, "scheduler: a step budget of %d tokens, %d running and %d waiting is not valid",
                          p->max_step_tokens, p->max_running, p->max_waiting);
    fg_sched *s = calloc(1, sizeof *s);
    if (!s) return fg_err_set(FG_ERR_NOMEM, "scheduler: out of memory");
    s->p = *p;
    s->kv = kv;
    s->n_pool = p->max_running + p->max_waiting;
    size_t nt = (size_t)p->max_step_tokens, nr = (size_t)p->max_running;
    s->pool = calloc((size_t)s->n_pool, sizeof *s->pool);
    s->wait = malloc((size_t)s->n_pool * sizeof *s->wait);
    s->run = malloc(nr * sizeof *s->run);
    s->ids = malloc(nt * sizeof *s->ids);
    s->pos = malloc(nt * sizeof *s->pos);
    s->seqi = malloc(nt * sizeof *s->seqi);
    s->slot = malloc(nt * sizeof *s->slot);
    s->tables = malloc(nr * (size_t)fg_kvcache_max_blocks(kv) * sizeof *s->tables);
    s->logits_token = malloc(nr * sizeof *s->logits_token);
    s->logits_req = malloc(nr * sizeof *s->logits_req);
    s->planned_req = malloc(nr * sizeof *s->planned_req);
    s->seq_req = malloc(nr * sizeof *s->seq_req);
    if (!s->pool || !s->wait || !s->run || !s->ids || !s->pos || !s->seqi || !s->slot || !s->tables ||
        !s->logits_token || !s->logits_req || !s->planned_req || !s->seq_req) {
        fg_sched_free(s);
        return fg_err_set(FG_ERR_NOMEM, "scheduler: out of memory");
    }
    *out = s;
    return FG_OK;
}

void fg_sched_free(fg_sched *s)
{
    if (!s) return;
    for (int32_t i = 0; s->pool && i < s->n_pool; i++) free(s->pool[i].tok);
    free(s->pool), free(s->wait), free(s->run), free(s->ids), free(s->pos), free(s->seqi), free(s->slot);
    free(s->tables), free(s->logits_token), free(s->logits_req), free(s->planned_req), free(s->seq_req);
    free(s);
}

/* ---- Queues -------------------------------------------------------------- */

static int32_t wait_at(const fg_sched *s, int32_t k)
{
    return s->wait[(s->wait_head + k) % s->n_pool];
}

static void wait_push_back(fg_sched *s, int32_t i)
{
    s->wait[(s->wait_head + s->n_wait++) % s->n_pool] = i;
}

static void wait_push_front(fg_sched *s, int32_t i)
{
    s->wait_head = (s->wait_head + s->n_pool - 1) % s->n_pool;
    s->wait[s->wait_head] = i;
    s->n_wait++;
}

static void wait_remove(fg_sched *s, int32_t i)
{
    int32_t k = 0;
    while (k < s->n_wait && wait_at(s, k) != i) k++;
    FG_ASSERT(k < s->n_wait);
    for (; k + 1 < s->n_wait; k++) s->wait[(s->wait_head + k) % s->n_pool] = wait_at(s, k + 1);
    s->n_wait--;
}

static void run_remove(fg_sched *s, int32_t i)
{
    int32_t k = 0;
    while (k < s->n_run && s->run[k] != i) k++;
    FG_ASSERT(k < s->n_run);
    memmove(s->run + k, s->run + k + 1, (size_t)(s->n_run - k - 1) * sizeof *s->run);
    s->n_run--;
}

/* Frees a running request's cache and takes it off the running list. */
static void stop_running(fg_sched *s, req *r)
{
    fg_kvcache_seq_free(s->kv, r->seq);
    r->seq = -1;
    r->computed = 0;
    run_remove(s, (int32_t)(r - s->pool));
}

/* The newest running request with nothing planned this step goes back to
 * the front of the queue, without its cache. False if there is none. */
static bool preempt_newest(fg_sched *s, const req *keep)
{
    for (int32_t k = s->n_run - 1; k >= 0; k--) {
        req *r = &s->pool[s->run[k]];
        if (r->chunk > 0 || r == keep) continue;
        stop_running(s, r);
        r->state = FG_REQ_WAITING;
        r->n_preempted++;
        wait_push_front(s, (int32_t)(r - s->pool));
        return true;
    }
    return false;
}

/* ---- Requests ------------------------------------------------------------ */

fg_status fg_sched_submit(fg_sched *s, const int32_t *prompt, int32_t n, int32_t max_new, int32_t eos, uint64_t *id)
{
    if (n < 1 || max_new < 1)
        return fg_err_set(FG_ERR_INVALID_ARG, "a request needs at least one prompt token and one to generate (%d, %d)",
                          n, max_new);
    fg_kvcache_usage u;
    fg_kvcache_usage_get(s->kv, &u);
    int32_t bs = fg_kvcache_block_size(s->kv), mb = fg_kvcache_max_blocks(s->kv), cap = (mb < u.n_blocks ? mb : u.n_blocks) * bs;
    if (n + max_new > cap)
        return fg_err_set(FG_ERR_INVALID_ARG, "a request of %d prompt tokens and up to %d more exceeds the context of %d",
                          n, max_new, cap);
    if (s->n_wait >= s->p.max_waiting)
        return fg_err_set(FG_ERR_FULL, "the queue is full: %d requests are waiting", s->n_wait);
    int32_t i = 0;
    while (i < s->n_pool && s->pool[i].id) i++;
    if (i == s->n_pool)
        return fg_err_set(FG_ERR_FULL, "all %d request slots hold requests not yet released", s->n_pool);
    int32_t *tok = malloc((size_t)(n + max_new) * sizeof *tok);
    if (!tok) return fg_err_set(FG_ERR_NOMEM, "out of memory for a request of %d tokens", n + max_new);
    memcpy(tok, prompt, (size_t)n * sizeof *tok);
    s->pool[i] = (req){(++s->serial << SLOT_BITS) | (uint64_t)i, FG_REQ_WAITING, tok, n, 0, max_new, eos, -1, 0, 0, 0, 0, false};
    wait_push_back(s, i);
    *id = s->pool[i].id;
    return FG_OK;
}

/* Ends a waiting or running request in state `end`, freeing its blocks. */
static fg_status end_request(fg_sched *s, uint64_t id, fg_req_state end)
{
    FG_ASSERT(!s->planned);
    req *r = lookup(s, id);
    if (!r || r->state == FG_REQ_FINISHED || r->state == FG_REQ_CANCELLED || r->state == FG_REQ_FAILED)
        return fg_err_set(FG_ERR_NOT_FOUND, "request %llu is not queued or running", (unsigned long long)id);
    if (r->state == FG_REQ_WAITING) wait_remove(s, (int32_t)(r - s->pool));
    else stop_running(s, r);
    r->state = end;
    return FG_OK;
}

fg_status fg_sched_want_prompt_rows(fg_sched *s, uint64_t id)
{
    req *r = lookup(s, id);
    if (!r || r->state != FG_REQ_WAITING || r->n_preempted > 0)
        return fg_err_set(FG_ERR_NOT_FOUND, "request %llu is not waiting for its first admission", (unsigned long long)id);
    r->prompt_rows = true;
    return FG_OK;
}

/* The most tokens r may take this step: its uncomputed ones within the
 * budget and, while its prompt needs logits rows, the step's rows left. */
static int32_t chunk_want(const fg_sched *s, const req *r, int32_t budget)
{
    int32_t want = known(r) - r->computed < budget ? known(r) - r->computed : budget;
    if (r->prompt_rows) { /* positions below n_prompt - 1 are rows; the last prompt token's is the usual one */
        int32_t end = r->computed + want < r->n_prompt - 1 ? r->computed + want : r->n_prompt - 1;
        if (end - r->computed > s->prompt_rows_left) want = s->prompt_rows_left;
    }
    return want;
}

fg_status fg_sched_cancel(fg_sched *s, uint64_t id)
{
    return end_request(s, id, FG_REQ_CANCELLED);
}

fg_status fg_sched_finish(fg_sched *s, uint64_t id)
{
    return end_request(s, id, FG_REQ_FINISHED);
}

fg_status fg_sched_info(const fg_sched *s, uint64_t id, fg_req_info *out)
{
    const req *r = lookup(s, id);
    if (!r) return fg_err_set(FG_ERR_NOT_FOUND, "no request %llu", (unsigned long long)id);
    *out = (fg_req_info){r->state, r->n_prompt, r->n_gen, r->n_cached, r->n_preempted, r->tok + r->n_prompt};
    return FG_OK;
}

void fg_sched_release(fg_sched *s, uint64_t id)
{
    req *r = lookup(s, id);
    FG_ASSERT(r && (r->state == FG_REQ_FINISHED || r->state == FG_REQ_CANCELLED || r->state == FG_REQ_FAILED));
    free(r->tok);
    *r = (req){0};
}

int32_t fg_sched_n_waiting(const fg_sched *s)
{
    return s->n_wait;
}

int32_t fg_sched_n_running(const fg_sched *s)
{
    return s->n_run;
}

/* ---- Planning ------------------------------------------------------------ */

/* Appends the next n uncomputed tokens of r to the plan. */
static fg_status plan_chunk(fg_sched *s, fg_sched_batch *b, req *r, int32_t n, int32_t *budget)
{
    int32_t at = b->n_tokens, sq = b->n_seqs, n_cp = 0;
    fg_kv_copy cp[1];
    FG_TRY(fg_kvcache_append(s->kv, r->seq, r->tok + r->computed, n, s->slot + at, cp, &n_cp));
    FG_ASSERT(n_cp == 0); /* the scheduler never forks: no block it writes is shared */
    for (int32_t i = 0; i < n; i++) {
        s->ids[at + i] = r->tok[r->computed + i];
        s->pos[at + i] = r->computed + i;
        s->seqi[at + i] = sq;
    }
    if (r->computed + n == known(r)) {
        s->logits_token[b->n_logits] = at + n - 1;
        s->logits_req[b->n_logits++] = r->id;
    }
    if (r->prompt_rows && r->computed < r->n_prompt - 1) {
        int32_t end = r->computed + n < r->n_prompt - 1 ? r->computed + n : r->n_prompt - 1;
        s->prompt_rows_left -= end - r->computed;
        FG_ASSERT(s->prompt_rows_left >= 0);
    }
    r->chunk = n;
    s->planned_req[sq] = (int32_t)(r - s->pool);
    s->seq_req[sq] = r->id;
    b->n_tokens += n;
    b->n_seqs++;
    *budget -= n;
    return FG_OK;
}

fg_status fg_sched_plan(fg_sched *s, fg_sched_batch *b)
{
    FG_ASSERT(!s->planned);
    int32_t budget = s->p.max_step_tokens;
    s->prompt_rows_left = FG_SCHED_PROMPT_ROWS;
    *b = (fg_sched_batch){0};
    b->max_blocks = fg_kvcache_max_blocks(s->kv);

    /* 1. Decodes, oldest first; a token that finds no block preempts the
     * newest request not yet planned (possibly this one). */
    for (int32_t k = 0; k < s->n_run && budget > 0; k++) {
        req *r = &s->pool[s->run[k]];
        if (known(r) - r->computed != 1) continue;
        while (fg_kvcache_room(s->kv, r->seq) < 1 && preempt_newest(s, NULL) && r->seq >= 0) {
        }
        if (r->seq < 0) break; /* it was the newest: the rest are newer still, and gone */
        if (fg_kvcache_room(s->kv, r->seq) < 1) continue;
        FG_TRY(plan_chunk(s, b, r, 1, &budget));
    }
    /* 2. Prefill chunks of running requests, as large as the budget and the
     * free blocks allow; the oldest may preempt newer ones to progress. */
    for (int32_t k = 0; k < s->n_run && budget > 0; k++) {
        req *r = &s->pool[s->run[k]];
        if (r->chunk > 0 || known(r) - r->computed < 1) continue;
        int32_t want = chunk_want(s, r, budget);
        if (want < 1) continue; /* its prompt rows must wait for the next step */
        while (k == 0 && fg_kvcache_room(s->kv, r->seq) < want && preempt_newest(s, r)) {
        }
        int32_t room = fg_kvcache_room(s->kv, r->seq), n = room < want ? room : want;
        if (n > 0) FG_TRY(plan_chunk(s, b, r, n, &budget));
    }
    /* 3. Admissions in arrival order, while the budget, the running list
     * and the blocks allow; the first that does not fit waits at the front. */
    while (s->n_wait > 0 && budget > 0 && s->n_run < s->p.max_running) {
        int32_t i = wait_at(s, 0);
        req *r = &s->pool[i];
        if (fg_kvcache_seq_new(s->kv, &r->seq) != FG_OK) {
            r->seq = -1;
            break;
        }
        r->computed = r->prompt_rows ? 0 : fg_kvcache_match_prefix(s->kv, r->seq, r->tok, known(r));
        int32_t want = chunk_want(s, r, budget);
        int32_t room = fg_kvcache_room(s->kv, r->seq), n = room < want ? room : want;
        if (n < 1 || (n < want && s->n_run > 0)) { /* let the running ones finish and free blocks first */
            fg_kvcache_seq_free(s->kv, r->seq);
            r->seq = -1;
            r->computed = 0;
            break;
        }
        s->wait_head = (s->wait_head + 1) % s->n_pool;
        s->n_wait--;
        s->run[s->n_run++] = i;
        r->state = FG_REQ_PREFILLING;
        r->n_cached = r->computed < r->n_prompt ? r->computed : r->n_prompt;
        FG_TRY(plan_chunk(s, b, r, n, &budget));
    }

    /* Block tables of the planned sequences, after every append. */
    for (int32_t q = 0; q < b->n_seqs; q++) {
        int32_t nb;
        const int32_t *t = fg_kvcache_table(s->kv, s->pool[s->planned_req[q]].seq, &nb);
        int32_t *row = s->tables + (size_t)q * (size_t)b->max_blocks;
        memcpy(row, t, (size_t)nb * sizeof *row);
        for (int32_t j = nb; j < b->max_blocks; j++) row[j] = 0;
    }
    b->ids = s->ids, b->pos = s->pos, b->seq = s->seqi, b->slot = s->slot;
    b->block_tables = s->tables;
    b->logits_token = s->logits_token, b->logits_req = s->logits_req;
    b->seq_req = s->seq_req;
    s->n_planned = b->n_seqs;
    s->planned = true;
    return FG_OK;
}

void fg_sched_commit(fg_sched *s, const int32_t *sampled)
{
    FG_ASSERT(s->planned);
    s->planned = false;
    int32_t row = 0;
    for (int32_t q = 0; q < s->n_planned; q++) {
        req *r = &s->pool[s->planned_req[q]];
        r->computed += r->chunk;
        r->chunk = 0;
        if (r->computed < known(r)) continue; /* a prefill chunk short of the end: no token yet */
        FG_ASSERT(s->logits_req[row] == r->id);
        int32_t t = sampled[row++];
        r->tok[known(r)] = t;
        r->n_gen++;
        r->state = FG_REQ_DECODING;
        if (r->n_gen == r->max_new || t == r->eos) {
            stop_running(s, r);
            r->state = FG_REQ_FINISHED;
        }
    }
}

void fg_sched_fail(fg_sched *s)
{
    FG_ASSERT(s->planned);
    s->planned = false;
    for (int32_t q = 0; q < s->n_planned; q++) {
        req *r = &s->pool[s->planned_req[q]];
        fg_kvcache_seq_uncompute(s->kv, r->seq, r->computed);
        r->chunk = 0;
        stop_running(s, r);
        r->state = FG_REQ_FAILED;
    }
}
