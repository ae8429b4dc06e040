/*
 * qmix.c — the tensor-type choices of llama.cpp's quantize (see qmix.h).
 *
 * Input: an open GGUF (names, shapes, a few hyperparameters) and a mix.
 * Output: one type per tensor. Nothing is owned beyond a temporary order.
 *
 * Some rules count: the i-th attn_v of n gets more bits in the _M mixes when
 * use_more_bits(i, n) (the first and last eighth of the layers and every third
 * one between), and so does the i-th ffn_down of n_layer. llama.cpp counts in
 * the order its loader sorts tensors (by block number, then by name), so this
 * file walks the tensors in that order too; the output keeps the file's order.
 */
#include "gguf/qmix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/err.h"

/* llama_ftype values (llama.h). */
static const fg_qmix fg_qmixes[] = {
    {"Q4_0", 2, FG_TYPE_Q4_0},     {"Q4_1", 3, FG_TYPE_Q4_1},     {"Q8_0", 7, FG_TYPE_Q8_0},
    {"Q5_0", 8, FG_TYPE_Q5_0},     {"Q5_1", 9, FG_TYPE_Q5_1},     {"Q4_K_S", 14, FG_TYPE_Q4_K},
    {"Q4_K_M", 15, FG_TYPE_Q4_K},  {"Q5_K_S", 16, FG_TYPE_Q5_K},  {"Q5_K_M", 17, FG_TYPE_Q5_K},
    {"Q6_K", 18, FG_TYPE_Q6_K},
};
enum { FTYPE_Q8_0 = 7, FTYPE_Q4_K_S = 14, FTYPE_Q4_K_M = 15, FTYPE_Q5_K_M = 17 };

const fg_qmix *fg_qmix_find(const char *name)
{
    if (strcasecmp(name, "Q4_K") == 0) name = "Q4_K_M";
    if (strcasecmp(name, "Q5_K") == 0) name = "Q5_K_M";
    for (size_t i = 0; i < sizeof fg_qmixes / sizeof fg_qmixes[0]; i++)
        if (strcasecmp(fg_qmixes[i].name, name) == 0) return &fg_qmixes[i];
    return NULL;
}

const char *fg_qmix_names(void)
{
    return "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K (= Q4_K_M), Q4_K_S, Q4_K_M, Q5_K (= Q5_K_M), Q5_K_S, Q5_K_M, Q6_K";
}

/* ---- Which tensors are quantized -------------------------------------------- */

static bool has(const fg_gguf_str s, const char *needle)
{
    size_t n = strlen(needle);
    for (uint64_t i = 0; i + n <= s.len; i++)
        if (memcmp(s.ptr + i, needle, n) == 0) return true;
    return false;
}

static bool ends_with(const fg_gguf_str s, const char *suffix)
{
    size_t n = strlen(suffix);
    return s.len >= n && memcmp(s.ptr + s.len - n, suffix, n) == 0;
}

/* ggml's n_dims: trailing dimensions of 1 do not count. */
static int ggml_dims(const fg_gguf_tensor *t)
{
    for (int d = FG_GGUF_MAX_DIMS - 1; d > 0; d--)
        if (t->ne[d] > 1) return d + 1;
    return 1;
}

/* Small or special tensors llama.cpp keeps as they are, by name part. */
static const char *const keep_parts[] = {
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
    "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
};

bool fg_qmix_allows(const fg_gguf_tensor *t)
{
    if (ggml_dims(t) < 2 || !ends_with(t->name, "weight")) return false;
    if (fg_gguf_str_eq(t->name, "position_embd.weight") || fg_gguf_str_eq(t->name, "token_types.weight"))
        return false;
    for (size_t i = 0; i < sizeof keep_parts / sizeof keep_parts[0]; i++)
        if (has(t->name, keep_parts[i])) return false;
    return true;
}

/* ---- Categories --------------------------------------------------------------- */

typedef enum cat {
    CAT_TOKEN_EMBD, CAT_ATTN_Q, CAT_ATTN_V, CAT_ATTN_K, CAT_ATTN_QKV, CAT_ATTN_KV_B,
    CAT_ATTN_OUTPUT, CAT_FFN_UP, CAT_FFN_GATE, CAT_FFN_DOWN, CAT_OUTPUT, CAT_OTHER
} cat;

static cat category(fg_gguf_str n)
{
    if (fg_gguf_str_eq(n, "output.weight")) return CAT_OUTPUT;
    if (fg_gguf_str_eq(n, "token_embd.weight") || fg_gguf_str_eq(n, "per_layer_token_embd.weight"))
        return CAT_TOKEN_EMBD;
    if (has(n, "attn_qkv.weight")) return CAT_ATTN_QKV;
    if (has(n, "attn_kv_b.weight")) return CAT_ATTN_KV_B;
    if (has(n, "attn_v.weight")) return CAT_ATTN_V;
    if (has(n, "attn_k.weight")) return CAT_ATTN_K;
    if (has(n, "attn_q.weight")) return CAT_ATTN_Q;
    if (has(n, "attn_output.weight")) return CAT_ATTN_OUTPUT;
    if (has(n, "ffn_up")) return CAT_FFN_UP;
    if (has(n, "ffn_gate")) return CAT_FFN_GATE;
    if (has(n, "ffn_down")) return CAT_FFN_DOWN;
    return CAT_OTHER;
}

/* The attention-value-like tensors are the most sensitive to quantization. */
static bool is_attn_v(cat c)
{
    return c == CAT_ATTN_V || c == CAT_ATTN_QKV || c == CAT_ATTN_KV_B;
}

/* "blk.N." -> N, else -1 (the loader's sort key). */
static long block_of(fg_gguf_str n)
{
    if (n.len < 5 || memcmp(n.ptr, "blk.", 4) != 0) return -1;
    long v = 0;
    uint64_t i = 4;
    if (i >= n.len || n.ptr[i] < '0' || n.ptr[i] > '9') return -1;
    while (i < n.len && n.ptr[i] >= '0' && n.ptr[i] <= '9' && v < 100000000) v = v * 10 + (n.ptr[i++] - '0');
    return v;
}

/* The loader's order: block number (-1 outside blocks), then name. */
static bool before(const fg_gguf *g, uint64_t ia, uint64_t ib)
{
    const fg_gguf_tensor *a = &g->tensors[ia], *b = &g->tensors[ib];
    long la = block_of(a->name), lb = block_of(b->name);
    if (la != lb) return la < lb;
    uint64_t n = a->name.len < b->name.len ? a->name.len : b->name.len;
    int c = memcmp(a->name.ptr, b->name.ptr, (size_t)n);
    return c ? c < 0 : a->name.len < b->name.len;
}

/* Stable bottom-up merge sort of idx[0..n) by before(); tmp holds n. */
static void sort_tensors(const fg_gguf *g, uint64_t *idx, uint64_t *tmp, uint64_t n)
{
    for (uint64_t w = 1; w < n; w *= 2) {
        for (uint64_t lo = 0; lo < n; lo += 2 * w) {
            uint64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            uint64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = before(g, idx[j], idx[i]) ? idx[j++] : idx[i++];
            while (i < mid) tmp[k++] = idx[i++];
            while (j < hi) tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof *idx);
    }
}

/* ---- The rules ------------------------------------------------------------------- */

typedef struct plan_state {
    uint32_t ftype;
    bool falcon, is_70b, tied;
    int64_t n_expert;
    int n_attn_v, i_attn_v;
    int n_layer, i_ffn_down;
} plan_state;

static bool use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* llama_tensor_get_type_impl, for the mixes of fg_qmixes. */
static fg_type choose(plan_state *s, const fg_gguf_tensor *t, cat c, fg_type type)
{
    uint32_t ft = s->ftype;
    if (c == CAT_OUTPUT || (s->tied && c == CAT_TOKEN_EMBD)) {
        uint32_t bs = fg_type_get(type)->block_size;
        if (s->falcon || t->ne[0] % bs != 0) return FG_TYPE_Q8_0;
        return type != FG_TYPE_Q8_0 ? FG_TYPE_Q6_K : type;
    }
    if (c == CAT_TOKEN_EMBD) return type;
    if (is_attn_v(c)) {
        if ((ft == FTYPE_Q4_K_M || ft == FTYPE_Q5_K_M) && use_more_bits(s->i_attn_v, s->n_attn_v))
            type = FG_TYPE_Q6_K;
        else if (ft == FTYPE_Q4_K_S && s->i_attn_v < 4)
            type = FG_TYPE_Q5_K;
        if (s->is_70b && type == FG_TYPE_Q4_K) type = FG_TYPE_Q5_K;
        if (s->n_expert == 8) type = FG_TYPE_Q8_0;
        s->i_attn_v++;
        return type;
    }
    if (c == CAT_ATTN_K) return s->n_expert == 8 ? FG_TYPE_Q8_0 : type;
    if (c == CAT_FFN_DOWN) {
        int i = s->i_ffn_down++, n = s->n_layer;
        if (s->n_expert > 1) i = (int)block_of(t->name);
        if (ft == FTYPE_Q4_K_M) {
            if (s->falcon)
                type = i < n / 16 ? FG_TYPE_Q6_K : use_more_bits(i, n) ? FG_TYPE_Q5_K : FG_TYPE_Q4_K;
            else if (use_more_bits(i, n))
                type = FG_TYPE_Q6_K;
        } else if (ft == FTYPE_Q5_K_M && use_more_bits(i, n)) {
            type = FG_TYPE_Q6_K;
        } else if (ft == FTYPE_Q4_K_S && !s->falcon && i < n / 8) {
            type = FG_TYPE_Q5_K;
        }
        return type;
    }
    if (c == CAT_ATTN_OUTPUT && !s->falcon && s->n_expert == 8 && (ft == FTYPE_Q4_K_S || ft == FTYPE_Q4_K_M))
        return FG_TYPE_Q5_K;
    return type;
}

/* A type whose block divides the row (tensor_type_fallback). */
static fg_status fit_row(const fg_gguf *g, const fg_gguf_tensor *t, fg_type type, fg_type *out)
{
    int64_t nx = t->ne[0];
    if (nx % fg_type_get(type)->block_size == 0) {
        *out = type;
        return FG_OK;
    }
    fg_type fb;
    switch (type) {
    case FG_TYPE_Q4_K: fb = FG_TYPE_Q5_0; break;
    case FG_TYPE_Q5_K: fb = FG_TYPE_Q5_1; break;
    case FG_TYPE_Q6_K: fb = FG_TYPE_Q8_0; break;
    default:
        return fg_err_set(FG_ERR_UNSUPPORTED,
                          "%s: tensor '%.*s' has rows of %lld elements, not a multiple of the %s block size %u; "
                          "llama.cpp has no fallback type for %s either: choose a K-quant mix (they fall back "
                          "to a 32-element type) or Q8_0",
                          g->path, (int)t->name.len, t->name.ptr, (long long)nx, fg_type_name(type),
                          fg_type_get(type)->block_size, fg_type_name(type));
    }
    *out = nx % 32 == 0 ? fb : FG_TYPE_F16;
    return FG_OK;
}

static int64_t get_int_or(const fg_gguf *g, const char *arch, const char *suffix, int64_t dflt)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const fg_gguf_kv *kv = fg_gguf_find(g, key);
    int64_t v;
    if (!kv || fg_gguf_get_int(g, key, &v) != FG_OK) return dflt;
    return v;
}

fg_status fg_qmix_plan(const fg_gguf *g, const fg_qmix *mix, bool pure, fg_type *out)
{
    plan_state s = {.ftype = mix->ftype, .tied = true};
    char arch[64] = "";
    fg_gguf_str a;
    if (fg_gguf_find(g, "general.architecture") && fg_gguf_get_str(g, "general.architecture", &a) == FG_OK)
        snprintf(arch, sizeof arch, "%.*s", (int)(a.len < 63 ? a.len : 63), a.ptr);
    s.falcon = strcmp(arch, "falcon") == 0;
    s.n_expert = get_int_or(g, arch, "expert_count", 0);
    long max_block = -1;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        cat c = category(g->tensors[i].name);
        if (is_attn_v(c)) s.n_attn_v++;
        if (c == CAT_OUTPUT) s.tied = false;
        long b = block_of(g->tensors[i].name);
        if (b > max_block) max_block = b;
    }
    s.n_layer = (int)get_int_or(g, arch, "block_count", max_block + 1);
    int64_t n_head = get_int_or(g, arch, "attention.head_count", 0);
    int64_t n_head_kv = get_int_or(g, arch, "attention.head_count_kv", n_head);
    s.is_70b = strcmp(arch, "llama") == 0 && s.n_layer == 80 && n_head != n_head_kv;

    uint64_t *order = malloc(2 * (g->n_tensors ? g->n_tensors : 1) * sizeof *order);
    if (!order) return fg_err_set(FG_ERR_NOMEM, "out of memory planning %llu tensors", (unsigned long long)g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++) order[i] = i;
    sort_tensors(g, order, order + g->n_tensors, g->n_tensors);

    fg_status st = FG_OK;
    for (uint64_t k = 0; k < g->n_tensors && st == FG_OK; k++) {
        const fg_gguf_tensor *t = &g->tensors[order[k]];
        if (!fg_qmix_allows(t)) {
            out[order[k]] = t->type;
            continue;
        }
        fg_type type = pure ? mix->base : choose(&s, t, category(t->name), mix->base);
        st = fit_row(g, t, type, &out[order[k]]);
    }
    free(order);
    return st;
}
