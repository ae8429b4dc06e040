/*
 * test_gpu_model.c — the GPU backend running a whole model through the
 * execution plan, against the CPU backend's reference arithmetic (f32
 * activations, F16 KV cache as on the GPU) on the same file, and the step
 * transfer rule: a decode step makes exactly one upload (the packed batch)
 * and one download (its logits, or only the sampled id when it samples on
 * the GPU).
 *
 * Also the GPU against HF transformers on the synthetic llama models of
 * tests/data/llama-synth (tools/make_llama_synth.py; the CPU side of that
 * check is tests/unit/test_llama_synth.c).
 *
 * The model of the first two tests is $FORGE_GPU_TEST_MODEL if set (e.g. a synthetic-weight file
 * of a real shape), else the fetched SmolLM2-135M-Instruct; without either,
 * or without a GPU, the tests say SKIPPED.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/gpu/gpu.h"
#include "model/forward.h"
#include "model/model.h"
#include "runtime/runner.h"
#include "runtime/session.h"
#include "../unit/test_util.h"

typedef fg_test_rig rig;

static char model_path[4096];

static void need_gpu_and_model(void)
{
    if (fg_backend_gpu_count() == 0) {
        const char *api = fg_backend_gpu_api();
        cr_skip_test("SKIPPED: no GPU on this machine (%s)", api ? api : "and no GPU backend in this build");
    }
    const char *env = getenv("FORGE_GPU_TEST_MODEL");
    if (env && *env) snprintf(model_path, sizeof model_path, "%s", env);
    else if (!fg_test_model_path("SmolLM2-135M-Instruct.Q4_1.gguf", model_path, sizeof model_path))
        cr_skip_test("SKIPPED: no model (set FORGE_GPU_TEST_MODEL or run tools/fetch-model smollm2)");
}

/* The model at path on the GPU, or on the CPU backend in reference mode;
 * both with an F16 KV cache. */
static void rig_open_path(rig *r, const char *path, bool on_gpu, int32_t n_ctx)
{
    fg_backend *be;
    if (on_gpu) cr_assert_eq(fg_backend_gpu_init(0, &be), FG_OK, "%s", fg_last_error());
    else cr_assert_eq(fg_backend_cpu_init(0, true, &be), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_test_rig_open(r, path, be, n_ctx, FG_TYPE_F16), FG_OK, "%s", fg_last_error());
}

static void rig_open(rig *r, bool on_gpu, int32_t n_ctx)
{
    rig_open_path(r, model_path, on_gpu, n_ctx);
}

/* The GPU against the CPU reference on the model at path: teacher-forced
 * logits at every position of ids (prefilled in batches of 64, so both the
 * GEMM and, for the tail, the GEMV paths run), then a free-running greedy
 * continuation. Top-1 agreement must reach 99% of the positions that are not
 * ties (at most 10% are); with float weights the logits must match closely
 * and the continuation for 64 tokens. */
static void gpu_matches_cpu(const char *path, const int32_t *ids, int32_t n)
{
    rig g, c;
    rig_open_path(&g, path, true, 512);
    rig_open_path(&c, path, false, 512);
    int32_t n_vocab = fg_model_n_vocab(g.m);
    fg_test_keep kg = {malloc((size_t)n * (size_t)n_vocab * sizeof(float)), n_vocab};
    fg_test_keep kc = {malloc((size_t)n * (size_t)n_vocab * sizeof(float)), n_vocab};
    cr_assert_eq(fg_session_eval_all(g.s, ids, n, fg_test_keep_logits, &kg), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_session_eval_all(c.s, ids, n, fg_test_keep_logits, &kc), FG_OK, "%s", fg_last_error());
    /* A position whose reference top-2 margin is within twice the largest
     * logit difference there is a tie the two arithmetics may break either
     * way: counted apart (and bounded), not as a disagreement. */
    int agree = 0, ties = 0, tie_agree = 0;
    double worst = 0;
    for (int32_t i = 0; i < n; i++) {
        const float *a = kg.dst + (size_t)i * n_vocab, *b = kc.dst + (size_t)i * n_vocab;
        double num = 0, den = 0, dmax = 0;
        for (int32_t v = 0; v < n_vocab; v++) {
            cr_assert(isfinite(a[v]), "position %d logit %d is %f on the GPU", i, v, a[v]);
            num += ((double)a[v] - b[v]) * ((double)a[v] - b[v]);
            den += (double)b[v] * b[v];
            if (fabs((double)a[v] - b[v]) > dmax) dmax = fabs((double)a[v] - b[v]);
        }
        double e = sqrt(num / (den > 0 ? den : 1));
        if (e > worst) worst = e;
        int32_t top = fg_test_argmax(b, n_vocab);
        float second = -INFINITY;
        for (int32_t v = 0; v < n_vocab; v++)
            if (v != top && b[v] > second) second = b[v];
        bool same = fg_test_argmax(a, n_vocab) == top;
        if ((double)b[top] - second <= 2 * dmax) ties++, tie_agree += same;
        else agree += same;
    }
    /* Greedy continuation, token by token (the decode path). */
    enum { N_GEN = 64 };
    int32_t tg = fg_test_argmax(fg_session_logits(g.s), n_vocab), tc = fg_test_argmax(fg_session_logits(c.s), n_vocab);
    int same = 0;
    while (same < N_GEN && tg == tc) {
        same++;
        cr_assert_eq(fg_session_eval(g.s, &tg, 1), FG_OK, "%s", fg_last_error());
        cr_assert_eq(fg_session_eval(c.s, &tc, 1), FG_OK, "%s", fg_last_error());
        tg = fg_test_argmax(fg_session_logits(g.s), n_vocab);
        tc = fg_test_argmax(fg_session_logits(c.s), n_vocab);
    }
    fprintf(stderr,
            "gpu_model %s: %d positions, top-1 agreement %d/%d (%d/%d more at ties), max relative logit error %.3g; "
            "greedy identical for %d of %d tokens\n",
            path, n, agree, n - ties, tie_agree, ties, worst, same, N_GEN);
    /* With float weights the GPU decodes in f32 like the reference; with
     * Q4_0/Q4_1/Q8_0/Q4_K its decode GEMV takes int8 activations (as
     * llama.cpp's does), so only agreement of the picks is required there. */
    const fg_gguf_tensor *wq = fg_gguf_find_tensor(g.m->gguf, "blk.0.attn_q.weight");
    bool float_weights = wq && (wq->type == FG_TYPE_F32 || wq->type == FG_TYPE_F16 || wq->type == FG_TYPE_BF16);
    cr_expect_geq(agree * 100, (n - ties) * 99, "top-1 agreement %d/%d is under 99%%", agree, n - ties);
    cr_expect_leq(ties * 10, n, "%d of %d positions are ties: more than 10%%", ties, n);
    /* Prefill matmuls on a CUDA build take f16 operands (cuBLAS, or the
     * tensor-core GEMM of Q4_0 and Q8_0): the teacher-forced logits carry
     * that rounding. */
    cr_expect_leq(worst, float_weights ? 5e-3 : 3e-2, "max relative logit error %.3g", worst);
    if (float_weights) cr_expect_eq(same, N_GEN, "greedy continuations part after %d tokens", same);
    free(kg.dst);
    free(kc.dst);
    fg_test_rig_close(&g);
    fg_test_rig_close(&c);
}

Test(gpu_model, logits_and_greedy_match_cpu_reference, .init = need_gpu_and_model, .timeout = 600)
{
    fg_model *m;
    cr_assert_eq(fg_model_open(model_path, &m), FG_OK, "%s", fg_last_error());
    const char *text = "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein published four papers "
                       "that changed physics: on the photoelectric effect, Brownian motion, special relativity and "
                       "the equivalence of mass and energy. def fib(n):\n    return n if n < 2 else fib(n-1)+fib(n-2)\n";
    int32_t *ids;
    size_t n_ids;
    cr_assert_eq(fg_model_tokenize(m, text, strlen(text), true, false, &ids, &n_ids), FG_OK);
    fg_model_close(m);
    gpu_matches_cpu(model_path, ids, (int32_t)n_ids);
    free(ids);
}

Test(gpu_model, decode_step_is_one_upload_one_download, .init = need_gpu_and_model)
{
    rig g;
    rig_open(&g, true, 256);
    /* Five ids spread over the vocabulary, whatever its size
     * (FORGE_GPU_TEST_MODEL may name a 320-token synthetic file). */
    int32_t n_vocab = fg_model_n_vocab(g.m), prompt[5];
    for (int k = 0; k < 5; k++) prompt[k] = 1 + (int32_t)((int64_t)k * (n_vocab - 2) / 4);
    cr_assert_eq(fg_session_eval(g.s, prompt, 5), FG_OK, "%s", fg_last_error());
    /* Logits out (the host sampler's path), then sampling on the GPU,
     * greedy and with llama.cpp's default filters: the download is then the
     * sampled id alone. */
    int32_t next = fg_test_argmax(fg_session_logits(g.s), n_vocab);
    for (int step = 0; step < 9; step++) {
        bool sampled = step >= 3;
        fg_sample_row row = {step < 6 ? 0.0f : 0.8f, 40, 0.95f, 0.05f, 0.37 + 0.1 * step, 0, NULL};
        fg_backend_gpu_transfers_reset(g.be);
        int32_t id = next;
        cr_assert_eq(sampled ? fg_session_eval_sample(g.s, &id, 1, &row, &next) : fg_session_eval(g.s, &id, 1), FG_OK,
                     "%s", fg_last_error());
        if (!sampled) next = fg_test_argmax(fg_session_logits(g.s), n_vocab);
        fg_gpu_transfers t;
        fg_backend_gpu_transfers(g.be, &t);
        cr_expect_eq(t.uploads, 1, "decode step %d made %llu uploads", step, (unsigned long long)t.uploads);
        cr_expect_eq(t.downloads, 1, "decode step %d made %llu downloads", step, (unsigned long long)t.downloads);
        if (sampled)
            cr_expect_eq(t.bytes_down, 4, "a sampled decode step downloaded %llu bytes, not the one id",
                         (unsigned long long)t.bytes_down);
    }
    fg_test_rig_close(&g);
}

static void need_gpu(void)
{
    if (fg_backend_gpu_count() == 0) {
        const char *api = fg_backend_gpu_api();
        cr_skip_test("SKIPPED: no GPU on this machine (%s)", api ? api : "and no GPU backend in this build");
    }
}

/* F32/F16 weights: the GPU computes in f32 but keeps the KV cache in F16,
 * so its logits sit ~1e-4 from transformers' and the greedy picks (whose
 * margins the golden keeps above 0.02) must all agree. Q8_0/Q4_0: the GEMV
 * quantizes activations to int8, as llama.cpp's does; the error is
 * reported and bounded (measured 1.7-2.9e-2 on an H200: 64-wide rows give
 * int8 activations few elements to average over), the picks are not
 * required. */
static void synth_on_gpu(const char *type, bool float_weights)
{
    char path[512];
    snprintf(path, sizeof path, "tests/data/llama-synth/%s.gguf", type);
    fg_backend *be;
    cr_assert_eq(fg_backend_gpu_init(0, &be), FG_OK, "%s", fg_last_error());
    fg_test_rig r;
    cr_assert_eq(fg_test_rig_open(&r, path, be, 128, FG_TYPE_F16), FG_OK, "%s", fg_last_error());
    fg_test_synth s;
    cr_assert(fg_test_synth_compare(&r, type, &s), "llama-synth %s: the comparison did not run", type);
    fprintf(stderr,
            "llama-synth %-8s GPU vs transformers: %d positions, max relative logit error %.2e, max |dlogit| %.2e; "
            "greedy identical for %d of %d tokens\n",
            type, s.n_pos, s.max_rel, s.max_abs, s.greedy_same, s.n_greedy);
    cr_expect_leq(s.max_rel, float_weights ? 2e-3 : 5e-2, "%s: max relative logit error %.3g", type, s.max_rel);
    if (float_weights)
        cr_expect_eq(s.greedy_same, s.n_greedy, "%s: greedy continuations part after %d tokens", type, s.greedy_same);
    fg_test_rig_close(&r);
}

Test(gpu_synth, gqa_f32, .init = need_gpu) { synth_on_gpu("gqa-f32", true); }
Test(gpu_synth, gqa_f16, .init = need_gpu) { synth_on_gpu("gqa-f16", true); }
Test(gpu_synth, gqa_q8_0, .init = need_gpu) { synth_on_gpu("gqa-q8_0", false); }
Test(gpu_synth, gqa_q4_0, .init = need_gpu) { synth_on_gpu("gqa-q4_0", false); }
Test(gpu_synth, mqa_f32, .init = need_gpu) { synth_on_gpu("mqa-f32", true); }
Test(gpu_synth, mqa_f16, .init = need_gpu) { synth_on_gpu("mqa-f16", true); }
Test(gpu_synth, mqa_q8_0, .init = need_gpu) { synth_on_gpu("mqa-q8_0", false); }
Test(gpu_synth, mqa_q4_0, .init = need_gpu) { synth_on_gpu("mqa-q4_0", false); }
Test(gpu_synth, gqa_mxfp4, .init = need_gpu) { synth_on_gpu("gqa-mxfp4", false); }
Test(gpu_synth, mqa_mxfp4, .init = need_gpu) { synth_on_gpu("mqa-mxfp4", false); }
/* Qwen2 (q/k/v biases, NeoX RoPE) and Qwen3 (per-head q/k RMSNorm, NeoX,
 * 32-dim heads: n_embd / n_head is 16). */
Test(gpu_synth, qwen2_f32, .init = need_gpu) { synth_on_gpu("qwen2-f32", true); }
Test(gpu_synth, qwen2_f16, .init = need_gpu) { synth_on_gpu("qwen2-f16", true); }
Test(gpu_synth, qwen2_q8_0, .init = need_gpu) { synth_on_gpu("qwen2-q8_0", false); }
Test(gpu_synth, qwen2_q4_0, .init = need_gpu) { synth_on_gpu("qwen2-q4_0", false); }
Test(gpu_synth, qwen3_f32, .init = need_gpu) { synth_on_gpu("qwen3-f32", true); }
Test(gpu_synth, qwen3_f16, .init = need_gpu) { synth_on_gpu("qwen3-f16", true); }
Test(gpu_synth, qwen3_q8_0, .init = need_gpu) { synth_on_gpu("qwen3-q8_0", false); }
Test(gpu_synth, qwen3_q4_0, .init = need_gpu) { synth_on_gpu("qwen3-q4_0", false); }
/* Mistral: an 8-token sliding window. */
Test(gpu_synth, mistral_f32, .init = need_gpu) { synth_on_gpu("mistral-f32", true); }
Test(gpu_synth, mistral_f16, .init = need_gpu) { synth_on_gpu("mistral-f16", true); }
Test(gpu_synth, mistral_q8_0, .init = need_gpu) { synth_on_gpu("mistral-q8_0", false); }
Test(gpu_synth, mistral_q4_0, .init = need_gpu) { synth_on_gpu("mistral-q4_0", false); }
/* Phi-3: fused q/k/v and gate/up weights, split at load. */
Test(gpu_synth, phi3_f32, .init = need_gpu) { synth_on_gpu("phi3-f32", true); }
Test(gpu_synth, phi3_f16, .init = need_gpu) { synth_on_gpu("phi3-f16", true); }
Test(gpu_synth, phi3_q8_0, .init = need_gpu) { synth_on_gpu("phi3-q8_0", false); }
Test(gpu_synth, phi3_q4_0, .init = need_gpu) { synth_on_gpu("phi3-q4_0", false); }
/* GLM-4-0414: partial rotary, fused gate/up, sandwich norms (the add op). */
Test(gpu_synth, glm4_f32, .init = need_gpu) { synth_on_gpu("glm4-f32", true); }
Test(gpu_synth, glm4_f16, .init = need_gpu) { synth_on_gpu("glm4-f16", true); }
Test(gpu_synth, glm4_q8_0, .init = need_gpu) { synth_on_gpu("glm4-q8_0", false); }
Test(gpu_synth, glm4_q4_0, .init = need_gpu) { synth_on_gpu("glm4-q4_0", false); }
/* GLM-4-9B-chat (chatglm): fused q/k/v with a fused bias, partial rotary. */
Test(gpu_synth, chatglm_f32, .init = need_gpu) { synth_on_gpu("chatglm-f32", true); }
Test(gpu_synth, chatglm_f16, .init = need_gpu) { synth_on_gpu("chatglm-f16", true); }
Test(gpu_synth, chatglm_q8_0, .init = need_gpu) { synth_on_gpu("chatglm-q8_0", false); }
Test(gpu_synth, chatglm_q4_0, .init = need_gpu) { synth_on_gpu("chatglm-q4_0", false); }
/* Gemma 3: GeGLU, scaled embeddings, sliding-window and global layers. */
Test(gpu_synth, gemma3_f32, .init = need_gpu) { synth_on_gpu("gemma3-f32", true); }
Test(gpu_synth, gemma3_f16, .init = need_gpu) { synth_on_gpu("gemma3-f16", true); }
Test(gpu_synth, gemma3_q8_0, .init = need_gpu) { synth_on_gpu("gemma3-q8_0", false); }
Test(gpu_synth, gemma3_q4_0, .init = need_gpu) { synth_on_gpu("gemma3-q4_0", false); }

/* The quantized synthetic models (the files the transformers check reads)
 * on the GPU against the CPU reference: 120 teacher-forced positions of
 * random tokens, top-1 agreement >= 99%. */
static void synth_matches_cpu(const char *type)
{
    char path[512];
    snprintf(path, sizeof path, "tests/data/llama-synth/%s.gguf", type);
    fg_model *m;
    cr_assert_eq(fg_model_open(path, &m), FG_OK, "%s", fg_last_error());
    int32_t n_vocab = fg_model_n_vocab(m), ids[120];
    fg_model_close(m);
    uint64_t x = 12345;
    for (int i = 0; i < 120; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = 1 + (int32_t)((x >> 33) % (uint64_t)(n_vocab - 1));
    }
    gpu_matches_cpu(path, ids, 120);
}

Test(gpu_synth, gqa_q8_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("gqa-q8_0"); }
Test(gpu_synth, gqa_q4_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("gqa-q4_0"); }
Test(gpu_synth, mqa_q8_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("mqa-q8_0"); }
Test(gpu_synth, mqa_q4_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("mqa-q4_0"); }
Test(gpu_synth, gqa_mxfp4_matches_cpu, .init = need_gpu) { synth_matches_cpu("gqa-mxfp4"); }
Test(gpu_synth, mqa_mxfp4_matches_cpu, .init = need_gpu) { synth_matches_cpu("mqa-mxfp4"); }
Test(gpu_synth, qwen2_q8_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("qwen2-q8_0"); }
Test(gpu_synth, qwen3_q8_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("qwen3-q8_0"); }
Test(gpu_synth, mistral_q8_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("mistral-q8_0"); }
Test(gpu_synth, phi3_q8_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("phi3-q8_0"); }
Test(gpu_synth, glm4_q8_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("glm4-q8_0"); }
Test(gpu_synth, chatglm_q8_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("chatglm-q8_0"); }
Test(gpu_synth, gemma3_q8_0_matches_cpu, .init = need_gpu) { synth_matches_cpu("gemma3-q8_0"); }

/* The engine (scheduler + paged KV cache + forward) on the GPU: one greedy
 * request gives the session path's tokens; five at once all finish, with
 * every block free afterwards. (Token-exact batch invariance is the
 * batch-invariant mode's, tested below.) */
Test(gpu_synth, engine_serves_requests, .init = need_gpu, .timeout = 120)
{
    const char *path = "tests/data/llama-synth/gqa-f32.gguf";
    fg_model *m;
    cr_assert_eq(fg_model_open(path, &m), FG_OK, "%s", fg_last_error());
    fg_backend *be;
    cr_assert_eq(fg_backend_gpu_init(0, &be), FG_OK, "%s", fg_last_error());
    fg_runner_params p = {1024, 256, 8, 32, 16};
    fg_runner *e;
    cr_assert_eq(fg_runner_init(m, be, &p, &e), FG_OK, "%s", fg_last_error());
    fg_sampler_params sp = fg_sampler_defaults();
    sp.temperature = 0.0f;
    int32_t prompt[5][40], n_vocab = fg_model_n_vocab(m);
    uint64_t ids[5];
    for (int r = 0; r < 5; r++) {
        for (int i = 0; i < 40; i++) prompt[r][i] = 1 + (r * 53 + i * 29) % (n_vocab - 1);
        cr_assert_eq(fg_runner_submit(e, prompt[r], 10 + 7 * r, 16, -1, &sp, &ids[r]), FG_OK, "%s", fg_last_error());
    }
    cr_assert_eq(fg_test_runner_finish(e, ids, 5, 5000), FG_OK, "%s", fg_last_error());
    /* Request 0 against the session path on a fresh GPU backend. */
    fg_req_info info;
    fg_runner_info(e, ids[0], &info);
    fg_backend *be2;
    cr_assert_eq(fg_backend_gpu_init(0, &be2), FG_OK, "%s", fg_last_error());
    fg_test_rig r;
    cr_assert_eq(fg_test_rig_open(&r, path, be2, 256, FG_TYPE_F16), FG_OK, "%s", fg_last_error());
    const fg_sample_row greedy = {0};
    int32_t next, same = 0;
    cr_assert_eq(fg_session_eval_sample(r.s, prompt[0], 10, &greedy, &next), FG_OK, "%s", fg_last_error());
    while (same < 16 && info.gen[same] == next) {
        int32_t t = next;
        same++;
        cr_assert_eq(fg_session_eval_sample(r.s, &t, 1, &greedy, &next), FG_OK);
    }
    fprintf(stderr, "gpu engine: 5 requests served; request 0 equals the session path for %d of 16 tokens\n", same);
    cr_expect_eq(same, 16, "engine and session part after %d tokens", same);
    fg_test_rig_close(&r);
    for (int i = 0; i < 5; i++) fg_runner_release(e, ids[i]);
    fg_kvcache_usage u;
    fg_runner_kv_usage(e, &u);
    cr_assert_eq(u.used, 0);
    fg_runner_free(e);
    fg_backend_free(be);
    fg_model_close(m);
}

enum { INV_N = 12, INV_GEN = 24 };

/* The INV_N requests' greedy tokens from a fresh GPU engine (so no prefix
 * is cached from another run), served all at once or one at a time. */
static void serve(const char *path, bool invariant, bool together, int32_t prompt[][64], const int32_t *len,
                  int32_t out[][INV_GEN])
{
    fg_model *m;
    cr_assert_eq(fg_model_open(path, &m), FG_OK, "%s", fg_last_error());
    fg_backend *be;
    cr_assert_eq(fg_backend_gpu_init(0, &be), FG_OK, "%s", fg_last_error());
    fg_backend_gpu_set_batch_invariant(be, invariant);
    fg_runner_params p = {4096, 256, 16, 48, 16};
    fg_runner *e;
    cr_assert_eq(fg_runner_init(m, be, &p, &e), FG_OK, "%s", fg_last_error());
    fg_sampler_params sp = fg_sampler_defaults();
    sp.temperature = 0.0f;
    uint64_t ids[INV_N];
    for (int r0 = 0; r0 < INV_N; r0 += together ? INV_N : 1) {
        int n = together ? INV_N : 1;
        for (int r = r0; r < r0 + n; r++)
            cr_assert_eq(fg_runner_submit(e, prompt[r], len[r], INV_GEN, -1, &sp, &ids[r]), FG_OK, "%s",
                         fg_last_error());
        cr_assert_eq(fg_test_runner_finish(e, ids + r0, n, 20000), FG_OK, "%s", fg_last_error());
    }
    for (int r = 0; r < INV_N; r++) {
        fg_req_info info;
        cr_assert_eq(fg_runner_info(e, ids[r], &info), FG_OK);
        memcpy(out[r], info.gen, sizeof out[r]);
        fg_runner_release(e, ids[r]);
    }
    fg_kvcache_usage u;
    fg_runner_kv_usage(e, &u);
    cr_expect_eq(u.used, 0, "%d blocks still used", u.used);
    fg_runner_free(e);
    fg_backend_free(be);
    fg_model_close(m);
}

/* Batch invariance on the GPU (batch-invariant mode): twelve greedy
 * requests served together, with chunked prefills between the decodes and
 * up to twelve tokens a decode step, give exactly the tokens each gives
 * alone (one token a decode step, its prompt in one chunk). Q4_0 weights
 * (the tensor-core GEMM at every size) and F16 (the float GEMV), GQA
 * attention. In the default mode the count that match is printed, not
 * required. */
static void invariance_prompts(const char *path, bool invariant, int32_t prompt[][64], const int32_t *len)
{
    int32_t together[INV_N][INV_GEN], alone[INV_N][INV_GEN];
    serve(path, invariant, true, prompt, len, together);
    serve(path, invariant, false, prompt, len, alone);
    int same = 0;
    for (int r = 0; r < INV_N; r++) {
        same += memcmp(together[r], alone[r], sizeof alone[r]) == 0;
        for (int g = 0; invariant && g < INV_GEN; g++)
            cr_expect_eq(together[r][g], alone[r][g], "%s request %d token %d: %d together, %d alone", path, r, g,
                         together[r][g], alone[r][g]);
    }
    fprintf(stderr, "gpu batch invariance (%s mode) %s: %d of %d requests give the same %d tokens together as alone\n",
            invariant ? "batch-invariant" : "default", path, same, INV_N, INV_GEN);
}

static void invariance_case(const char *path, bool invariant)
{
    int32_t prompt[INV_N][64], len[INV_N];
    for (int r = 0; r < INV_N; r++) {
        len[r] = 5 + (r * 17) % 56;
        for (int i = 0; i < len[r]; i++) prompt[r][i] = 1 + (r * 97 + i * 31 + i * i) % 300;
    }
    invariance_prompts(path, invariant, prompt, len);
}

/* Issue 14, item 1: short prompts, identical or prefixes of each other
 * (the issue's 7 tokens four times, shorter and longer ones, a block and a
 * bit), submitted together. */
static void short_shared_case(const char *path, const int32_t *base, int32_t n_base)
{
    static const int32_t lens[INV_N] = {7, 7, 7, 7, 5, 12, 3, 18, 7, 9, 16, 17};
    int32_t prompt[INV_N][64];
    for (int r = 0; r < INV_N; r++)
        for (int i = 0; i < lens[r]; i++) prompt[r][i] = base[i % n_base];
    invariance_prompts(path, true, prompt, lens);
}

Test(gpu_synth, batch_invariant_mode_gives_each_request_its_tokens_alone, .init = need_gpu, .timeout = 300)
{
    invariance_case("tests/data/llama-synth/gqa-q4_0.gguf", true);
    invariance_case("tests/data/llama-synth/gqa-f16.gguf", true);
    invariance_case("tests/data/llama-synth/gqa-q4_0.gguf", false);
}

Test(gpu_model, identical_and_overlapping_short_prompts_together, .init = need_gpu_and_model, .timeout = 300)
{
    static const int32_t issue[] = {57, 2875, 260, 2455, 282, 1029, 314, 4511, 355, 2389, 30, 2543, 288, 1250, 17, 18, 19, 20};
    short_shared_case(model_path, issue, 18);
}

Test(gpu_synth, identical_and_overlapping_short_prompts_together, .init = need_gpu, .timeout = 300)
{
    static const int32_t synth[] = {57, 275, 260, 255, 282, 129, 34, 11, 55, 289, 30, 243, 288, 150, 17, 18, 19, 20};
    short_shared_case("tests/data/llama-synth/gqa-q4_0.gguf", synth, 18);
    short_shared_case("tests/data/llama-synth/gqa-f16.gguf", synth, 18);
}

/* logit_bias on the GPU: the biases travel in the step's upload and the
 * sample op adds them (runner.c keeps such rows on the backend). Greedy:
 * +100 on one token makes every token it; -100 on the plain greedy first
 * token bans it. Sampled: a banned token is never drawn. */
static void runner_tokens(fg_runner *e, const int32_t *prompt, int32_t n, const fg_sampler_params *sp, int32_t n_gen,
                          int32_t *out)
{
    uint64_t id;
    cr_assert_eq(fg_runner_submit(e, prompt, n, n_gen, -1, sp, &id), FG_OK, "%s", fg_last_error());
    cr_assert_eq(fg_test_runner_finish(e, &id, 1, 5000), FG_OK, "%s", fg_last_error());
    fg_req_info info;
    cr_assert_eq(fg_runner_info(e, id, &info), FG_OK);
    cr_assert_eq(info.n_gen, n_gen);
    memcpy(out, info.gen, (size_t)n_gen * sizeof *out);
    fg_runner_release(e, id);
}

Test(gpu_synth, logit_bias_on_the_sample_op, .init = need_gpu, .timeout = 120)
{
    fg_model *m;
    cr_assert_eq(fg_model_open("tests/data/llama-synth/gqa-f16.gguf", &m), FG_OK, "%s", fg_last_error());
    fg_backend *be;
    cr_assert_eq(fg_backend_gpu_init(0, &be), FG_OK, "%s", fg_last_error());
    fg_runner_params p = {1024, 256, 8, 64, 16};
    fg_runner *e;
    cr_assert_eq(fg_runner_init(m, be, &p, &e), FG_OK, "%s", fg_last_error());
    int32_t prompt[20], plain[24], got[24];
    for (int i = 0; i < 20; i++) prompt[i] = 1 + (i * 37) % 300;
    fg_sampler_params sp = fg_sampler_defaults();
    sp.temperature = 0.0f;
    runner_tokens(e, prompt, 20, &sp, 24, plain);
    const fg_logit_bias force[] = {{5, 1.0f}, {123, 100.0f}};
    sp.logit_bias = force, sp.n_logit_bias = 2;
    runner_tokens(e, prompt, 20, &sp, 24, got);
    for (int i = 0; i < 24; i++) cr_expect_eq(got[i], 123, "greedy token %d is %d, not the forced 123", i, got[i]);
    const fg_logit_bias ban[] = {{plain[0], -100.0f}};
    sp.logit_bias = ban, sp.n_logit_bias = 1;
    runner_tokens(e, prompt, 20, &sp, 24, got);
    for (int i = 0; i < 24; i++) cr_expect_neq(got[i], plain[0], "greedy token %d is the banned %d", i, plain[0]);
    sp.temperature = 1.0f, sp.top_k = 0, sp.top_p = 1.0f, sp.min_p = 0.0f;
    for (uint64_t seed = 0; seed < 4; seed++) {
        sp.seed = seed;
        runner_tokens(e, prompt, 20, &sp, 24, got);
        for (int i = 0; i < 24; i++) cr_expect_neq(got[i], plain[0], "seed %d token %d is the banned %d", (int)seed, i, plain[0]);
    }
    fprintf(stderr, "gpu logit_bias: forced 24 of 24 greedy tokens; the banned token %d never drawn in 5 x 24\n", plain[0]);
    fg_runner_free(e);
    fg_backend_free(be);
    fg_model_close(m);
}
