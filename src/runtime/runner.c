/*
 * runner.c — the step loop of runner.h: plan (scheduler), run (forward),
 * sample (backend op or each request's sampler), commit.
 */
#include "runtime/runner.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "model/forward.h"

typedef struct runner_req {
    uint64_t id; /* 0: unused */
    fg_sampler *smp;
    int32_t n_top;       /* -1: no logprobs; else the alternatives wanted */
    bool has_lp;         /* lp holds the latest token's */
    fg_token_logprob lp;
    int32_t plp_top;        /* prompt logprobs: -1 none, else the alternatives wanted */
    int32_t n_prompt;
    fg_token_logprob *plp;  /* (n_prompt) entry p: prompt token p given those before it (p >= 1) */
} runner_req;

struct fg_runner {
    fg_forward *f;
    fg_kvcache *kv;
    fg_sched *sched;
    int32_t n_vocab, n_reqs;
    runner_req *reqs;     /* (n_reqs) each request's sampler */
    float *logits;        /* (max_running, n_vocab) */
    fg_sampler **row_smp; /* (max_running) the sampler of each logits row of the step */
    fg_sample_row *rows;  /* (max_running) */
    int32_t *picked;      /* (max_running) */
    /* Steps with prompt-logprob rows (allocated at the first request for
     * them): the logits of the step's usual rows and its prompt rows, the
     * batch tokens they come from, and what each row is. */
    int32_t max_running, n_plp_reqs;
    float *x_logits;         /* (max_running + FG_SCHED_PROMPT_ROWS, n_vocab) */
    int32_t *x_rows;         /* (max_running + FG_SCHED_PROMPT_ROWS) ascending batch tokens */
    int32_t *x_what;         /* (same) >= 0: the usual logits row; -1: a prompt row */
    runner_req **seq_plp;    /* (max_running) the request of each batch sequence if it wants prompt rows */
};

fg_status fg_runner_init(const fg_model *m, fg_backend *be, const fg_runner_params *p, fg_runner **out)
{
    return fg_runner_init_kv(m, be, p, FG_TYPE_F16, NULL, NULL, out);
}

fg_status fg_runner_init_kv(const fg_model *m, fg_backend *be, const fg_runner_params *p, fg_type kv_type,
                            fg_forward_progress progress, void *progress_ctx, fg_runner **out)
{
    *out = NULL;
    if (p->kv_tokens < 1 || p->max_seq_tokens < 1 || p->max_running < 1 || p->max_step_tokens < 1 || p->max_waiting < 1)
        return fg_err_set(FG_ERR_INVALID_ARG, "runner: every size must be positive");
    fg_runner *e = calloc(1, sizeof *e);
    if (!e) return fg_err_set(FG_ERR_NOMEM, "runner: out of memory");
    const int32_t bs = FG_KV_BLOCK_SIZE, n_blocks = (p->kv_tokens + bs - 1) / bs;
    e->n_vocab = fg_model_n_vocab(m);
    e->n_reqs = p->max_running + p->max_waiting;
    e->max_running = p->max_running;
    fg_sched_params sp = {p->max_step_tokens, p->max_running, p->max_waiting};
    fg_status st = fg_forward_init(m, be, n_blocks * bs, p->max_step_tokens, kv_type, progress, progress_ctx, &e->f);
    if (st == FG_OK) st = fg_kvcache_init(n_blocks, bs, p->max_running, (p->max_seq_tokens + bs - 1) / bs, &e->kv);
    if (st == FG_OK) st = fg_sched_init(&sp, e->kv, &e->sched);
    if (st == FG_OK) {
        e->reqs = calloc((size_t)e->n_reqs, sizeof *e->reqs);
        e->logits = malloc((size_t)p->max_running * (size_t)e->n_vocab * sizeof *e->logits);
        e->rows = malloc((size_t)p->max_running * sizeof *e->rows);
        e->picked = malloc((size_t)p->max_running * sizeof *e->picked);
        e->row_smp = malloc((size_t)p->max_running * sizeof *e->row_smp);
        if (!e->reqs || !e->logits || !e->rows || !e->picked || !e->row_smp) st = fg_err_set(FG_ERR_NOMEM, "runner: out of memory");
    }
    if (st != FG_OK) {
        fg_runner_free(e);
        return st;
    }
    *out = e;
    return FG_OK;
}

void fg_runner_free(fg_runner *e)
{
    if (!e) return;
    for (int32_t i = 0; e->reqs && i < e->n_reqs; i++) fg_sampler_free(e->reqs[i].smp), free(e->reqs[i].plp);
    free(e->reqs), free(e->logits), free(e->rows), free(e->picked), free(e->row_smp);
    free(e->x_logits), free(e->x_rows), free(e->x_what), free(e->seq_plp);
    fg_sched_free(e->sched);
    fg_kvcache_free(e->kv);
    fg_forward_free(e->f);
    free(e);
}

static runner_req *find(const fg_runner *e, uint64_t id)
{
    for (int32_t i = 0; i < e->n_reqs; i++)
        if (e->reqs[i].id == id) return &e->reqs[i];
    return NULL;
}

fg_status fg_runner_submit(fg_runner *e, const int32_t *prompt, int32_t n, int32_t max_new, int32_t eos,
                           const fg_sampler_params *sp, uint64_t *id)
{
    for (int32_t i = 0; i < n; i++)
        if (prompt[i] < 0 || prompt[i] >= e->n_vocab)
            return fg_err_set(FG_ERR_INVALID_ARG, "prompt token %d is %d, outside the vocabulary of %d", i, prompt[i],
                              e->n_vocab);
    runner_req *r = find(e, 0);
    if (!r) return fg_err_set(FG_ERR_FULL, "runner: every request slot is taken");
    fg_sampler *smp;
    FG_TRY(fg_sampler_init(sp, e->n_vocab, &smp));
    fg_status st = fg_sched_submit(e->sched, prompt, n, max_new, eos, id);
    if (st != FG_OK) {
        fg_sampler_free(smp);
        return st;
    }
    for (int32_t i = 0; i < n; i++) fg_sampler_accept(smp, prompt[i]);
    *r = (runner_req){.id = *id, .smp = smp, .n_top = -1, .plp_top = -1, .n_prompt = n};
    return FG_OK;
}

fg_status fg_runner_want_prompt_logprobs(fg_runner *e, uint64_t id, int32_t n_top)
{
    runner_req *r = find(e, id);
    if (!r) return fg_err_set(FG_ERR_NOT_FOUND, "runner: no request %llu", (unsigned long long)id);
    if (n_top < 0 || n_top > FG_MAX_TOP_LOGPROBS)
        return fg_err_set(FG_ERR_INVALID_ARG, "prompt_logprobs %d is out of range: it must be in 0..%d", n_top,
                          FG_MAX_TOP_LOGPROBS);
    if (!e->x_logits) {
        size_t rows = (size_t)e->max_running + FG_SCHED_PROMPT_ROWS;
        e->x_logits = malloc(rows * (size_t)e->n_vocab * sizeof *e->x_logits);
        e->x_rows = malloc(rows * sizeof *e->x_rows);
        e->x_what = malloc(rows * sizeof *e->x_what);
        e->seq_plp = malloc((size_t)e->max_running * sizeof *e->seq_plp);
        if (!e->x_logits || !e->x_rows || !e->x_what || !e->seq_plp) {
            free(e->x_logits), free(e->x_rows), free(e->x_what), free(e->seq_plp);
            e->x_logits = NULL, e->x_rows = e->x_what = NULL, e->seq_plp = NULL;
            return fg_err_set(FG_ERR_NOMEM, "runner: out of memory for %zu rows of prompt logits", rows);
        }
    }
    if (!r->plp) {
        fg_token_logprob *plp = calloc((size_t)r->n_prompt, sizeof *plp);
        if (!plp) return fg_err_set(FG_ERR_NOMEM, "runner: out of memory for %d prompt logprobs", r->n_prompt);
        fg_status st = fg_sched_want_prompt_rows(e->sched, id);
        if (st != FG_OK) {
            free(plp);
            return st;
        }
        r->plp = plp; /* counted in n_plp_reqs while it lives */
        e->n_plp_reqs++;
    }
    r->plp_top = n_top;
    return FG_OK;
}

fg_status fg_runner_prompt_logprobs(const fg_runner *e, uint64_t id, const fg_token_logprob **out, int32_t *n)
{
    const runner_req *r = find(e, id);
    fg_req_info info;
    if (!r || !r->plp || fg_sched_info(e->sched, id, &info) != FG_OK || info.n_gen == 0)
        return fg_err_set(FG_ERR_NOT_FOUND, "runner: no prompt logprobs for request %llu", (unsigned long long)id);
    *out = r->plp + 1;
    *n = r->n_prompt - 1;
    return FG_OK;
}

fg_status fg_runner_want_logprobs(fg_runner *e, uint64_t id, int32_t n_top)
{
    runner_req *r = find(e, id);
    if (!r) return fg_err_set(FG_ERR_NOT_FOUND, "runner: no request %llu", (unsigned long long)id);
    if (n_top < 0 || n_top > FG_MAX_TOP_LOGPROBS)
        return fg_err_set(FG_ERR_INVALID_ARG, "top_logprobs %d is out of range: it must be in 0..%d", n_top,
                          FG_MAX_TOP_LOGPROBS);
    r->n_top = n_top;
    return FG_OK;
}

fg_status fg_runner_last_logprob(const fg_runner *e, uint64_t id, fg_token_logprob *out)
{
    const runner_req *r = find(e, id);
    if (!r || !r->has_lp) return fg_err_set(FG_ERR_NOT_FOUND, "runner: no logprobs for request %llu", (unsigned long long)id);
    *out = r->lp;
    return FG_OK;
}

/* The log-softmax of one logits row (n floats) at token picked, and the n_top
 * largest entries, most likely first (ties: lower id first). Sums in double;
 * a -inf or NaN logit is a zero probability, reported as -9999 (as vLLM
 * clamps), so that JSON never sees an infinity. */
static void row_logprobs(const float *l, int32_t n, int32_t picked, int32_t n_top, fg_token_logprob *out)
{
    float mx = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (l[i] > mx) mx = l[i];
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        if (l[i] > -INFINITY) sum += exp((double)l[i] - mx);
    double lse = mx + log(sum);
#define LP(v) ((v) > -INFINITY ? (float)fmax((double)(v) - lse, -9999.0) : -9999.0f)
    out->token = picked;
    out->logprob = LP(l[picked]);
    out->n_top = 0;
    for (int32_t i = 0; i < n && n_top > 0; i++) {
        float v = l[i];
        if (!(v > -INFINITY)) continue;
        int32_t k = out->n_top;
        if (k == n_top) {
            if (!(v > l[out->top_token[k - 1]])) continue;
            k--; /* evicts the last */
        } else {
            out->n_top++;
        }
        while (k > 0 && v > l[out->top_token[k - 1]]) {
            out->top_token[k] = out->top_token[k - 1];
            k--;
        }
        out->top_token[k] = i;
    }
    for (int32_t k = 0; k < out->n_top; k++) out->top_logprob[k] = LP(l[out->top_token[k]]);
#undef LP
}

/* The host path for step b's logits rows r: request sampler picks, with
 * logprobs where asked. */
static fg_status sample_on_host(fg_runner *e, const fg_sched_batch *sb, int32_t r, const float *row)
{
    fg_status st = fg_sampler_sample(e->row_smp[r], row, &e->picked[r]);
    runner_req *rq = find(e, sb->logits_req[r]);
    if (st == FG_OK && rq->n_top >= 0) {
        row_logprobs(row, e->n_vocab, e->picked[r], rq->n_top, &rq->lp);
        rq->has_lp = true;
    }
    return st;
}

/* If some sequence of the step reads prompt rows (prompt logprobs), the
 * step's output rows: its usual logits rows and those prompt positions, in
 * batch order, into x_rows / x_what; returns how many, or 0 when none. */
static int32_t prompt_rows(fg_runner *e, const fg_sched_batch *sb)
{
    if (e->n_plp_reqs == 0) return 0;
    bool any = false;
    for (int32_t q = 0; q < sb->n_seqs; q++) {
        runner_req *rq = find(e, sb->seq_req[q]);
        e->seq_plp[q] = rq && rq->plp ? rq : NULL;
        any = any || e->seq_plp[q];
    }
    if (!any) return 0;
    int32_t n = 0, next = 0, n_rows = 0;
    for (int32_t i = 0; i < sb->n_tokens; i++) {
        const runner_req *rq = e->seq_plp[sb->seq[i]];
        if (next < sb->n_logits && sb->logits_token[next] == i) {
            e->x_rows[n] = i, e->x_what[n++] = next++;
        } else if (rq && sb->pos[i] < rq->n_prompt - 1) {
            e->x_rows[n] = i, e->x_what[n++] = -1;
            n_rows++;
        }
    }
    FG_ASSERT(n_rows <= FG_SCHED_PROMPT_ROWS && next == sb->n_logits);
    return n_rows > 0 ? n : 0;
}

/* Runs a step with prompt rows: every row to the host; the usual ones are
 * sampled there, a prompt row at position p gives the logprob of prompt
 * token p + 1. */
static fg_status run_with_prompt_rows(fg_runner *e, const fg_sched_batch *sb, fg_batch *b, int32_t n_out)
{
    b->n_out = n_out;
    b->out_rows = e->x_rows; /* row_smp: set by the step for its usual rows */
    FG_TRY(fg_forward_run(e->f, b, e->x_logits, NULL));
    for (int32_t j = 0; j < n_out; j++) {
        const float *row = e->x_logits + (size_t)j * (size_t)e->n_vocab;
        if (e->x_what[j] >= 0) {
            FG_TRY(sample_on_host(e, sb, e->x_what[j], row));
            continue;
        }
        int32_t i = e->x_rows[j], p = sb->pos[i];
        runner_req *rq = e->seq_plp[sb->seq[i]];
        fg_req_info info;
        FG_TRY(fg_sched_info(e->sched, rq->id, &info));
        row_logprobs(row, e->n_vocab, info.gen[p + 1 - info.n_prompt], rq->plp_top, &rq->plp[p + 1]);
    }
    return FG_OK;
}

fg_status fg_runner_step(fg_runner *e, int32_t *n_tokens)
{
    fg_sched_batch sb;
    FG_TRY(fg_sched_plan(e->sched, &sb));
    *n_tokens = sb.n_tokens;
    if (sb.n_tokens == 0) {
        fg_sched_commit(e->sched, NULL);
        return FG_OK;
    }
    fg_batch b = {.n_tokens = sb.n_tokens, .ids = sb.ids, .pos = sb.pos, .seq = sb.seq, .slot = sb.slot,
                  .n_seqs = sb.n_seqs, .max_blocks = sb.max_blocks, .block_tables = sb.block_tables,
                  .n_out = sb.n_logits, .out_rows = sb.logits_token};
    int32_t n_x = prompt_rows(e, &sb);
    /* On the backend if every row can be: no penalties, and greedy or
     * logits that would have to be copied to the host. */
    bool on_backend = sb.n_logits > 0;
    for (int32_t r = 0; r < sb.n_logits; r++) {
        runner_req *rq = find(e, sb.logits_req[r]);
        fg_sampler *smp = e->row_smp[r] = rq->smp;
        on_backend = on_backend && rq->n_top < 0 && !fg_sampler_has_penalties(smp) &&
                     (fg_sampler_is_greedy(smp) || !fg_forward_logits_on_host(e->f));
    }
    fg_status st;
    if (n_x > 0) {
        st = run_with_prompt_rows(e, &sb, &b, n_x);
    } else if (on_backend) {
        for (int32_t r = 0; r < sb.n_logits; r++) fg_sampler_next_row(e->row_smp[r], &e->rows[r]);
        b.n_sample = sb.n_logits;
        b.sample = e->rows;
        st = fg_forward_run(e->f, &b, NULL, e->picked);
    } else if (sb.n_logits > 0) {
        st = fg_forward_run(e->f, &b, e->logits, NULL);
        for (int32_t r = 0; r < sb.n_logits && st == FG_OK; r++)
            st = sample_on_host(e, &sb, r, e->logits + (size_t)r * (size_t)e->n_vocab);
    } else {
        st = fg_forward_run(e->f, &b, e->logits, NULL); /* prefill chunks only: no logits */
    }
    if (st != FG_OK) {
        fg_sched_fail(e->sched); /* its requests fail and free their blocks */
        return st;
    }
    for (int32_t r = 0; r < sb.n_logits; r++) fg_sampler_accept(e->row_smp[r], e->picked[r]);
    fg_sched_commit(e->sched, e->picked);
    return FG_OK;
}

fg_status fg_runner_info(const fg_runner *e, uint64_t id, fg_req_info *out)
{
    return fg_sched_info(e->sched, id, out);
}

fg_status fg_runner_cancel(fg_runner *e, uint64_t id)
{
    return fg_sched_cancel(e->sched, id);
}

fg_status fg_runner_finish(fg_runner *e, uint64_t id)
{
    return fg_sched_finish(e->sched, id);
}

void fg_runner_release(fg_runner *e, uint64_t id)
{
    fg_sched_release(e->sched, id);
    runner_req *r = find(e, id);
    if (r) {
        fg_sampler_free(r->smp);
        if (r->plp) e->n_plp_reqs--;
        free(r->plp);
        *r = (runner_req){0};
    }
}

void fg_runner_kv_usage(const fg_runner *e, fg_kvcache_usage *u)
{
    fg_kvcache_usage_get(e->kv, u);
}

void fg_runner_counts(const fg_runner *e, int32_t *running, int32_t *waiting)
{
    *running = fg_sched_n_running(e->sched);
    *waiting = fg_sched_n_waiting(e->sched);
}
