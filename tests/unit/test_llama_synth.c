/*
 * test_llama_synth.c — the execution plan on the CPU backend against HF
 * transformers on small synthetic-weight llama models of two shapes (GQA:
 * 4 query heads over 2 KV heads of 16 dims, two layers; MQA: 2 query heads
 * sharing one KV head of 128 dims) with F32, F16, Q8_0 and Q4_0 weights
 * (tools/make_llama_synth.py). transformers
 * runs the same dequantized weights in float32, so the CPU backend's
 * reference arithmetic (f32 activations and KV cache) must match its logits
 * to float rounding and its 64 greedy tokens exactly, for every type. The
 * GPU tier checks the GPU backend against the same goldens
 * (tests/gpu/test_gpu_model.c).
 */
#include <criterion/criterion.h>
#include <stdio.h>

#include "test_util.h"

static void check(const char *type)
{
    char path[512];
    snprintf(path, sizeof path, "tests/data/llama-synth/%s.gguf", type);
    fg_backend *be;
    cr_assert_eq(fg_backend_cpu_init(1, true, &be), FG_OK, "%s", fg_last_error());
    fg_test_rig r;
    cr_assert_eq(fg_test_rig_open(&r, path, be, 128, FG_TYPE_F32), FG_OK, "%s", fg_last_error());
    fg_test_synth s;
    cr_assert(fg_test_synth_compare(&r, type, &s), "llama-synth %s: the comparison did not run", type);
    printf("llama-synth %-8s CPU reference vs transformers: %d positions, max relative logit error %.2e, "
           "max |dlogit| %.2e; greedy identical for %d of %d tokens\n",
           type, s.n_pos, s.max_rel, s.max_abs, s.greedy_same, s.n_greedy);
    cr_expect_leq(s.max_rel, 1e-5, "%s: max relative logit error %.3g", type, s.max_rel);
    cr_expect_eq(s.greedy_same, s.n_greedy, "%s: greedy continuations part after %d tokens", type, s.greedy_same);
    fg_test_rig_close(&r);
}

Test(llama_synth, gqa_f32) { check("gqa-f32"); }
Test(llama_synth, gqa_f16) { check("gqa-f16"); }
Test(llama_synth, gqa_q8_0) { check("gqa-q8_0"); }
Test(llama_synth, gqa_q4_0) { check("gqa-q4_0"); }
Test(llama_synth, mqa_f32) { check("mqa-f32"); }
Test(llama_synth, mqa_f16) { check("mqa-f16"); }
Test(llama_synth, mqa_q8_0) { check("mqa-q8_0"); }
Test(llama_synth, mqa_q4_0) { check("mqa-q4_0"); }
