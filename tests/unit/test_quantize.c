/*
 * test_quantize.c — the reference quantizers (src/gguf/quantize.c) and the
 * tensor-type choices (src/gguf/qmix.c).
 *
 * Quantizers: tests/data/quantize/rows.bin (tools/gen_quantize_goldens.py)
 * holds a 4096-float row with 16 segments of different character and, per
 * type, the bytes ggml's quantize_row_*_ref gives (for Q8_0 Q4_0 Q4_1 Q5_0
 * Q5_1 also equal to the `gguf` package's quantize) and the RMS error of
 * their dequantization. forge's bytes must be identical, whole row and in
 * rows of 256 and 512; its RMS error may not exceed llama.cpp's.
 *
 * Mixes: a synthetic 16-layer llama file written by the GGUF writer, planned
 * as Q4_K_M / Q5_K_M / Q4_K_S / Q8_0 / Q4_0, against llama.cpp's rules
 * (use_more_bits layers 0, 1, 4, 7, 10, 13, 14, 15 of 16). The e2e tests
 * check the same choices against llama.cpp itself on the synthetic models.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "gguf/qmix.h"
#include "gguf/quant.h"
#include "gguf/quantize.h"
#include "test_util.h"

static uint8_t *read_rest(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *len = n;
    return buf;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

Test(quantize, bit_identical_to_ggml_and_no_worse_rms)
{
    FILE *f = fg_test_golden_open("quantize/rows.bin", "quantize", 1);
    cr_assert_not_null(f, "tests/data/quantize/rows.bin missing or stale; run tools/gen_quantize_goldens.py");
    size_t len;
    uint8_t *buf = read_rest(f, &len), *p = buf;
    cr_assert_not_null(buf);
    uint32_t n = rd32(p);
    p += 4;
    float *x = malloc(n * sizeof *x), *deq = malloc(n * sizeof *deq);
    memcpy(x, p, n * sizeof *x);
    p += n * sizeof *x;
    uint32_t n_types = rd32(p);
    p += 4;
    cr_assert_eq(n_types, 8);
    uint8_t *got = malloc(n * 2);
    for (uint32_t k = 0; k < n_types; k++) {
        fg_type t = (fg_type)rd32(p);
        uint32_t source = rd32(p + 4), nbytes = rd32(p + 8);
        const uint8_t *want = p + 12;
        double want_rms;
        memcpy(&want_rms, want + nbytes, 8);
        p += 12 + nbytes + 8;
        cr_assert(p <= buf + len, "rows.bin truncated");
        cr_assert(fg_quantize_supported(t), "%s not supported", fg_type_name(t));
        cr_assert_eq(fg_type_row_size(t, n), nbytes);

        /* The whole row, then the same row as rows of 256 and 512: blocks
         * are independent, so the bytes must not change. */
        int64_t lens[] = {n, 256, 512};
        for (int li = 0; li < 3; li++) {
            memset(got, 0xAA, nbytes);
            size_t rb = fg_type_row_size(t, lens[li]);
            for (int64_t r = 0; r < (int64_t)n / lens[li]; r++)
                fg_quantize_row(t, x + r * lens[li], got + r * rb, lens[li]);
            size_t bs = fg_type_get(t)->type_size;
            for (size_t i = 0; i < nbytes; i++)
                cr_assert_eq(got[i], want[i], "%s (rows of %lld): byte %zu (block %zu) is %u, ggml's is %u",
                             fg_type_name(t), (long long)lens[li], i, i / bs, got[i], want[i]);
        }
        fg_dequant_row(t, got, deq, n);
        double se = 0;
        for (uint32_t i = 0; i < n; i++) se += ((double)deq[i] - x[i]) * ((double)deq[i] - x[i]);
        double rms = sqrt(se / n);
        cr_assert(rms <= want_rms * (1 + 1e-12), "%s: RMS error %.9g, llama.cpp's %.9g", fg_type_name(t), rms,
                  want_rms);
        cr_log_info("%s: bit-identical to ggml%s; RMS %.6g (llama.cpp %.6g)", fg_type_name(t),
                    source == 3 ? " and the gguf package" : "", rms, want_rms);
    }
    cr_assert_eq(p, buf + len, "rows.bin: trailing bytes");
    free(got);
    free(x);
    free(deq);
    free(buf);
}

Test(quantize, f16_bf16_f32_targets_round_like_numpy)
{
    float x[4] = {1.0f, 65520.0f, 1e-8f, -0.1f};
    uint8_t out[16];
    fg_quantize_row(FG_TYPE_F16, x, out, 4);
    cr_assert_eq(out[2] | out[3] << 8, 0x7c00); /* 65520 ties to Inf */
    fg_quantize_row(FG_TYPE_BF16, x, out, 4);
    cr_assert_eq(out[0] | out[1] << 8, 0x3f80);
    fg_quantize_row(FG_TYPE_F32, x, out, 4);
    cr_assert_eq(memcmp(out, x, 16), 0);
}

/* ---- Mixes ------------------------------------------------------------------- */

enum { N_LAYER = 16, EMBD = 256, FF = 512 };

static fg_gguf *synth_llama(bool tied)
{
    static float zeros[FF * EMBD];
    fg_gguf_writer *w = fg_gguf_writer_init();
    fg_gguf_writer_set_str(w, "general.architecture", "llama");
    fg_gguf_writer_set_u32(w, "llama.block_count", N_LAYER);
    fg_gguf_writer_set_u32(w, "llama.attention.head_count", 4);
    fg_gguf_writer_set_u32(w, "llama.attention.head_count_kv", 2);
    int64_t vec[1] = {EMBD}, emb[2] = {EMBD, 320}, sq[2] = {EMBD, EMBD}, kv[2] = {EMBD, 128},
            up[2] = {EMBD, FF}, down[2] = {FF, EMBD};
    fg_gguf_writer_add_tensor(w, "token_embd.weight", FG_TYPE_F32, 2, emb, zeros);
    /* Blocks out of order on purpose: llama.cpp counts layers in block order. */
    for (int li = N_LAYER - 1; li >= 0; li--) {
        char name[64];
        const struct { const char *n; int nd; const int64_t *ne; } ts[] = {
            {"attn_norm.weight", 1, vec}, {"attn_q.weight", 2, sq},  {"attn_k.weight", 2, kv},
            {"attn_v.weight", 2, kv},     {"attn_output.weight", 2, sq}, {"ffn_norm.weight", 1, vec},
            {"ffn_gate.weight", 2, up},   {"ffn_up.weight", 2, up},  {"ffn_down.weight", 2, down},
        };
        for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
            snprintf(name, sizeof name, "blk.%d.%s", li, ts[k].n);
            cr_assert_eq(fg_gguf_writer_add_tensor(w, name, FG_TYPE_F32, (uint32_t)ts[k].nd, ts[k].ne, zeros), FG_OK);
        }
    }
    fg_gguf_writer_add_tensor(w, "output_norm.weight", FG_TYPE_F32, 1, vec, zeros);
    if (!tied) fg_gguf_writer_add_tensor(w, "output.weight", FG_TYPE_F32, 2, emb, zeros);
    char path[] = "/tmp/forge-qmix-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(fg_gguf_writer_write(w, path, 32), FG_OK, "%s", fg_last_error());
    fg_gguf_writer_free(w);
    fg_gguf *g;
    cr_assert_eq(fg_gguf_open(path, &g), FG_OK, "%s", fg_last_error());
    unlink(path);
    return g;
}

static fg_type type_of(const fg_gguf *g, const fg_type *types, const char *name)
{
    const fg_gguf_tensor *t = fg_gguf_find_tensor(g, name);
    cr_assert_not_null(t, "%s", name);
    return types[t - g->tensors];
}

static bool more_bits(int i)
{
    return i < 2 || i >= 14 || (i - 2) % 3 == 2;
}

Test(quantize, mix_rules_match_llamacpp)
{
    fg_gguf *g = synth_llama(false);
    fg_type *types = calloc(g->n_tensors, sizeof *types);
    struct { const char *mix; fg_type base, v_more, down_more, out; } cases[] = {
        {"Q4_K_M", FG_TYPE_Q4_K, FG_TYPE_Q6_K, FG_TYPE_Q6_K, FG_TYPE_Q6_K},
        {"q4_k", FG_TYPE_Q4_K, FG_TYPE_Q6_K, FG_TYPE_Q6_K, FG_TYPE_Q6_K},
        {"Q5_K_M", FG_TYPE_Q5_K, FG_TYPE_Q6_K, FG_TYPE_Q6_K, FG_TYPE_Q6_K},
        {"Q8_0", FG_TYPE_Q8_0, FG_TYPE_Q8_0, FG_TYPE_Q8_0, FG_TYPE_Q8_0},
        {"Q4_0", FG_TYPE_Q4_0, FG_TYPE_Q4_0, FG_TYPE_Q4_0, FG_TYPE_Q6_K},
        {"Q6_K", FG_TYPE_Q6_K, FG_TYPE_Q6_K, FG_TYPE_Q6_K, FG_TYPE_Q6_K},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const fg_qmix *mix = fg_qmix_find(cases[c].mix);
        cr_assert_not_null(mix, "%s", cases[c].mix);
        cr_assert_eq(fg_qmix_plan(g, mix, false, types), FG_OK, "%s", fg_last_error());
        cr_assert_eq(type_of(g, types, "output.weight"), cases[c].out, "%s output", cases[c].mix);
        cr_assert_eq(type_of(g, types, "token_embd.weight"), cases[c].base, "%s token_embd", cases[c].mix);
        cr_assert_eq(type_of(g, types, "output_norm.weight"), FG_TYPE_F32);
        for (int li = 0; li < N_LAYER; li++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.attn_v.weight", li);
            cr_assert_eq(type_of(g, types, name), more_bits(li) ? cases[c].v_more : cases[c].base, "%s %s",
                         cases[c].mix, name);
            snprintf(name, sizeof name, "blk.%d.ffn_down.weight", li);
            cr_assert_eq(type_of(g, types, name), more_bits(li) ? cases[c].down_more : cases[c].base, "%s %s",
                         cases[c].mix, name);
            snprintf(name, sizeof name, "blk.%d.attn_q.weight", li);
            cr_assert_eq(type_of(g, types, name), cases[c].base);
            snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", li);
            cr_assert_eq(type_of(g, types, name), FG_TYPE_F32);
        }
    }
    /* Q4_K_S: the first 4 attn_v and the first n/8 ffn_down get Q5_K. */
    cr_assert_eq(fg_qmix_plan(g, fg_qmix_find("Q4_K_S"), false, types), FG_OK);
    cr_assert_eq(type_of(g, types, "blk.3.attn_v.weight"), FG_TYPE_Q5_K);
    cr_assert_eq(type_of(g, types, "blk.4.attn_v.weight"), FG_TYPE_Q4_K);
    cr_assert_eq(type_of(g, types, "blk.1.ffn_down.weight"), FG_TYPE_Q5_K);
    cr_assert_eq(type_of(g, types, "blk.2.ffn_down.weight"), FG_TYPE_Q4_K);
    /* --pure: one type everywhere it quantizes. */
    cr_assert_eq(fg_qmix_plan(g, fg_qmix_find("Q4_K_M"), true, types), FG_OK);
    cr_assert_eq(type_of(g, types, "output.weight"), FG_TYPE_Q4_K);
    cr_assert_eq(type_of(g, types, "blk.0.attn_v.weight"), FG_TYPE_Q4_K);
    cr_assert_null(fg_qmix_find("Q3_K_XL"));
    free(types);
    fg_gguf_close(g);

    /* Tied embeddings: token_embd is treated as the output. */
    g = synth_llama(true);
    types = calloc(g->n_tensors, sizeof *types);
    cr_assert_eq(fg_qmix_plan(g, fg_qmix_find("Q4_K_M"), false, types), FG_OK);
    cr_assert_eq(type_of(g, types, "token_embd.weight"), FG_TYPE_Q6_K);
    free(types);
    fg_gguf_close(g);
}
