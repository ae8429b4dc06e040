/*
 * test_runner.c — the engine (runtime/runner.c) on the CPU backend with a
 * synthetic llama model: batch invariance (greedy requests served together,
 * with chunked prefill interleaved with decodes, give exactly the tokens
 * each gives alone), agreement with the single-sequence session path, and
 * the KV pool back to empty when idle.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/runner.h"
#include "runtime/session.h"
#include "test_util.h"

enum { N_REQ = 5, N_GEN = 20 };

static const int32_t lens[N_REQ] = {5, 17, 33, 9, 48};

static void prompt_of(int r, int32_t *p, int32_t n_vocab)
{
    for (int32_t i = 0; i < lens[r]; i++) p[i] = 1 + (r * 97 + i * 31) % (n_vocab - 1);
}

static fg_runner *open_engine(fg_model **m, fg_backend **be, int32_t step_tokens)
{
    cr_assert_eq(fg_model_open("tests/data/llama-synth/gqa-q4_0.gguf", m), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_backend_cpu_init(2, false, be), FG_OK, "%s", fg_last_error());
    fg_runner_params p = {1024, 256, 8, step_tokens, 16};
    fg_runner *e;
    cr_assert_eq(fg_runner_init(*m, *be, &p, &e), FG_OK, "%s", fg_last_error());
    return e;
}

static void run_until_done(fg_runner *e, const uint64_t *ids, int n)
{
    cr_assert_eq(fg_test_runner_finish(e, ids, n, 10000), FG_OK, "%s", fg_last_error());
}

static void greedy_params(fg_sampler_params *sp)
{
    *sp = fg_sampler_defaults();
    sp->temperature = 0.0f;
    sp->seed = 1;
}

Test(runner, greedy_requests_together_give_what_each_gives_alone, .timeout = 120)
{
    fg_sampler_params sp;
    greedy_params(&sp);
    int32_t alone[N_REQ][N_GEN], prompt[64];
    int32_t n_vocab = 0;
    for (int r = 0; r < N_REQ; r++) {
        fg_model *m;
        fg_backend *be;
        fg_runner *e = open_engine(&m, &be, 64);
        n_vocab = fg_model_n_vocab(m);
        prompt_of(r, prompt, n_vocab);
        uint64_t id;
        cr_assert_eq(fg_runner_submit(e, prompt, lens[r], N_GEN, -1, &sp, &id), FG_OK, "%s", fg_last_error());
        run_until_done(e, &id, 1);
        fg_req_info info;
        fg_runner_info(e, id, &info);
        cr_assert_eq(info.n_gen, N_GEN);
        memcpy(alone[r], info.gen, sizeof alone[r]);
        fg_runner_release(e, id);
        fg_runner_free(e);
        fg_backend_free(be);
        fg_model_close(m);
    }
    /* All together, with a step budget of 16 tokens: prompts arrive in
     * chunks between the others' decodes. */
    static const int32_t budgets[] = {16, 256};
    for (int bi = 0; bi < 2; bi++) {
        fg_model *m;
        fg_backend *be;
        fg_runner *e = open_engine(&m, &be, budgets[bi]);
        uint64_t ids[N_REQ];
        for (int r = 0; r < N_REQ; r++) {
            prompt_of(r, prompt, n_vocab);
            cr_assert_eq(fg_runner_submit(e, prompt, lens[r], N_GEN, -1, &sp, &ids[r]), FG_OK, "%s", fg_last_error());
        }
        run_until_done(e, ids, N_REQ);
        for (int r = 0; r < N_REQ; r++) {
            fg_req_info info;
            fg_runner_info(e, ids[r], &info);
            for (int g = 0; g < N_GEN; g++)
                cr_assert_eq(info.gen[g], alone[r][g], "budget %d: request %d token %d is %d together, %d alone",
                             budgets[bi], r, g, info.gen[g], alone[r][g]);
            fg_runner_release(e, ids[r]);
        }
        fg_kvcache_usage u;
        fg_runner_kv_usage(e, &u);
        cr_assert_eq(u.used, 0, "blocks left used when idle: %d", u.used);
        fg_runner_free(e);
        fg_backend_free(be);
        fg_model_close(m);
    }
}

/* One request through the engine gives the session's greedy continuation
 * (the single-stream path forge run uses). */
Test(runner, one_request_matches_the_session_path, .timeout = 60)
{
    fg_model *m;
    fg_backend *be;
    fg_runner *e = open_engine(&m, &be, 64);
    int32_t prompt[64], n_vocab = fg_model_n_vocab(m);
    prompt_of(2, prompt, n_vocab);
    fg_sampler_params sp;
    greedy_params(&sp);
    uint64_t id;
    cr_assert_eq(fg_runner_submit(e, prompt, lens[2], N_GEN, -1, &sp, &id), FG_OK);
    run_until_done(e, &id, 1);
    fg_req_info info;
    fg_runner_info(e, id, &info);

    fg_backend *be2;
    cr_assert_eq(fg_backend_cpu_init(2, false, &be2), FG_OK);
    fg_test_rig r;
    cr_assert_eq(fg_test_rig_open(&r, "tests/data/llama-synth/gqa-q4_0.gguf", be2, 256, FG_TYPE_F16), FG_OK, "%s",
                 fg_last_error());
    const fg_sample_row greedy = {0};
    int32_t next;
    cr_assert_eq(fg_session_eval_sample(r.s, prompt, lens[2], &greedy, &next), FG_OK, "%s", fg_last_error());
    for (int g = 0; g < N_GEN; g++) {
        cr_assert_eq(info.gen[g], next, "token %d: engine %d, session %d", g, info.gen[g], next);
        int32_t t = next;
        cr_assert_eq(fg_session_eval_sample(r.s, &t, 1, &greedy, &next), FG_OK);
    }
    fg_test_rig_close(&r);
    fg_runner_release(e, id);
    fg_runner_free(e);
    fg_backend_free(be);
    fg_model_close(m);
}
