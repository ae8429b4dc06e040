/*
 * forward.c — the execution plan of the llama family, written once as calls
 * to backend ops (backend.h).
 *
 * Per layer, for the step's T tokens (rows):
 *   h = rmsnorm(x) * attn_norm
 *   q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)
 *   (qk_norm architectures: q, k = rmsnorm of each head * q_norm, k_norm)
 *   rope(q), rope(k) at the tokens' positions; k, v -> KV pool at their slots
 *   x = x + attention(q, KV) Wo^T             (residual fused into the matmul;
 *                                              post-norm architectures normalize
 *                                              the sublayer's output first)
 *   h = rmsnorm(x) * ffn_norm
 *   x = x + (silu(h Wgate^T) * h Wup^T) Wdown^T
 * then logits = rmsnorm(x) * output_norm  Woutput^T (Woutput = token_embd
 * when the file ties them), only for the rows asked for.
 */
#include "model/forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "model/arch.h"
#include "model/weights.h"

struct fg_forward {
    const fg_model *m;
    fg_backend *be;
    const fg_arch *arch;
    int32_t n_ctx, n_batch;
    int32_t *rows; /* (n_batch) logits rows of a step run through fg_forward_step */
    fg_weights w;
    fg_rope rope, rope_swa; /* global layers; sliding-window layers (swa_pattern) */
    fg_attn attn, attn_swa;
    /* Activations, n_batch rows each. */
    fg_tensor x, h, q, k, v, att, gate, up, logits;
};

/* Rope scaling from the file: linear is supported; other kinds are refused
 * rather than silently ignored. */
static fg_status read_rope(fg_forward *f)
{
    const fg_gguf *g = f->m->gguf;
    const fg_hparams *hp = &f->m->hp;
    f->rope = (fg_rope){.mode = f->arch->rope, .n_rot = (int32_t)hp->n_rot, .base = (float)hp->rope_base,
                        .freq_scale = 1.0f};
    char key[128];
    fg_gguf_str type = {0};
    snprintf(key, sizeof key, "%s.rope.scaling.type", hp->arch);
    if (fg_gguf_find(g, key)) FG_TRY(fg_gguf_get_str(g, key, &type));
    double factor = 1.0;
    snprintf(key, sizeof key, "%s.rope.scaling.factor", hp->arch);
    if (fg_gguf_find(g, key)) FG_TRY(fg_gguf_get_float(g, key, &factor));
    if (type.len == 0 || fg_gguf_str_eq(type, "none")) return FG_OK;
    if (fg_gguf_str_eq(type, "linear")) {
        FG_TRY(fg_hparams_check_rope_scale(g, hp->arch, factor));
        f->rope.freq_scale = (float)(1.0 / factor);
        return FG_OK;
    }
    return fg_err_set(FG_ERR_UNSUPPORTED, "%s: %s.rope.scaling.type '%.*s' is not supported yet (forge supports none, linear)",
                      g->path, hp->arch, (int)type.len, type.ptr);
}

/* The sliding-window layers' RoPE: the local base (<arch>.rope.freq_base_swa,
 * else Gemma's 10000), unscaled. */
static fg_status read_rope_swa(fg_forward *f)
{
    const fg_gguf *g = f->m->gguf;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.freq_base_swa", f->m->hp.arch);
    double base = 10000.0;
    if (fg_gguf_find(g, key)) {
        FG_TRY(fg_gguf_get_float(g, key, &base));
        FG_TRY(fg_hparams_check_rope_base(g, f->m->hp.arch, "rope.freq_base_swa", base));
    }
    f->rope_swa = f->rope;
    f->rope_swa.base = (float)base;
    f->rope_swa.freq_scale = 1.0f;
    return FG_OK;
}

fg_status fg_forward_init(const fg_model *m, fg_backend *be, int32_t n_ctx, int32_t n_batch, fg_type kv_type,
                          fg_forward_progress progress, void *progress_ctx, fg_forward **out)
{
    *out = NULL;
    const fg_hparams *hp = &m->hp;
    const fg_arch *arch;
    FG_TRY(fg_arch_get(m->gguf->path, hp->arch, &arch));
    if (n_ctx < 1 || n_batch < 1)
        return fg_err_set(FG_ERR_INVALID_ARG, "context (%d) and batch (%d) must be positive", n_ctx, n_batch);
    n_ctx = (n_ctx + FG_KV_BLOCK_SIZE - 1) / FG_KV_BLOCK_SIZE * FG_KV_BLOCK_SIZE;
    if (n_batch > n_ctx) n_batch = n_ctx;

    fg_forward *f = calloc(1, sizeof *f);
    if (!f) return fg_err_set(FG_ERR_NOMEM, "out of memory");
    f->m = m;
    f->be = be;
    f->arch = arch;
    f->n_ctx = n_ctx;
    f->n_batch = n_batch;
    f->rows = malloc((size_t)n_batch * sizeof *f->rows);
    fg_status st = f->rows ? FG_OK : fg_err_set(FG_ERR_NOMEM, "out of memory");
    if (st == FG_OK) st = read_rope(f);
    if (st == FG_OK) st = read_rope_swa(f);
    if (st == FG_OK) st = fg_weights_load(m, arch, be, progress, progress_ctx, &f->w);
    /* Llama 3.1-style frequency factors, on the global layers */
    if (st == FG_OK) f->rope.freq_factors = f->w.rope_freqs.data; /* backend memory, or NULL */
    if (st != FG_OK) {
        fg_forward_free(f);
        return st;
    }
    f->attn = (fg_attn){.n_head = (int32_t)hp->n_head, .n_head_kv = (int32_t)hp->n_head_kv,
                        .head_dim_k = (int32_t)hp->head_dim_k, .head_dim_v = (int32_t)hp->head_dim_v,
                        .scale = 1.0f / sqrtf((float)hp->head_dim_k),
                        /* Mistral's sliding window (llama.attention.sliding_window): each
                         * token attends to itself and the window - 1 before it; with
                         * swa_pattern only the sliding layers do */
                        .window = hp->sliding_window > 0 && hp->sliding_window < INT32_MAX
                                      ? (int32_t)hp->sliding_window : 0};
    f->attn_swa = f->attn;
    if (arch->swa_pattern > 0) f->attn.window = 0;

    const fg_backend_ops *o = be->ops;
    int64_t d = hp->n_embd;
    int64_t q_dim = hp->n_head * hp->head_dim_k, k_dim = hp->n_head_kv * hp->head_dim_k,
            v_dim = hp->n_head_kv * hp->head_dim_v, o_dim = hp->n_head * hp->head_dim_v;
    if ((st = o->alloc(be, d, n_batch, &f->x)) || (st = o->alloc(be, d, n_batch, &f->h)) ||
        (st = o->alloc(be, q_dim, n_batch, &f->q)) || (st = o->alloc(be, k_dim, n_batch, &f->k)) ||
        (st = o->alloc(be, v_dim, n_batch, &f->v)) || (st = o->alloc(be, o_dim, n_batch, &f->att)) ||
        (st = o->alloc(be, hp->n_ff, n_batch, &f->gate)) || (st = o->alloc(be, hp->n_ff, n_batch, &f->up)) ||
        (st = o->alloc(be, f->w.output.rows, n_batch, &f->logits)) ||
        (st = o->kv_alloc(be, (int32_t)hp->n_layer, n_ctx, FG_KV_BLOCK_SIZE, k_dim, v_dim, o_dim, kv_type))) {
        fg_forward_free(f);
        return st;
    }
    *out = f;
    return FG_OK;
}

void fg_forward_free(fg_forward *f)
{
    if (!f) return;
    fg_weights_free(&f->w);
    free(f->rows);
    free(f);
}

int32_t fg_forward_n_ctx(const fg_forward *f)
{
    return f->n_ctx;
}

int32_t fg_forward_n_batch(const fg_forward *f)
{
    return f->n_batch;
}

/* A view of rows [first, ...) of an activation. */
static fg_tensor rows_from(const fg_tensor *t, int32_t first)
{
    fg_tensor v = *t;
    v.data = (char *)t->data + (size_t)first * t->row_bytes;
    v.rows = t->rows - first;
    return v;
}

/* ---- The plan ----------------------------------------------------------------------- */

/* x += in W^T: the residual fused into the matmul; or, with post-norms,
 * x += rmsnorm(in W^T) * post_norm (through h, free at this point). quant_in:
 * the op before wrote `in` with quant_out (backend.h's hand-offs). */
static fg_status sublayer_out(fg_forward *f, const fg_tensor *w, const fg_tensor *in, const fg_tensor *post_norm,
                              bool quant_in)
{
    const fg_backend_ops *o = f->be->ops;
    if (!f->arch->post_norms) return o->matmul(f->be, w, NULL, in, &f->x, 0, &f->x, quant_in);
    FG_TRY(o->matmul(f->be, w, NULL, in, NULL, 0, &f->h, quant_in));
    FG_TRY(o->rms_norm(f->be, &f->h, post_norm, f->m->hp.n_embd, (float)f->m->hp.norm_eps, &f->h, false));
    return o->add(f->be, &f->h, &f->x);
}

/* Runs the plan for batch b, leaving the logits of its tokens logits_from..
 * in f->logits. sampled says the step ends in the sample op rather than a
 * read (a different op sequence, so a different graph key). */
static fg_status plan(fg_forward *f, const fg_batch *b, bool sampled)
{
    const fg_backend_ops *o = f->be->ops;
    fg_backend *be = f->be;
    const fg_hparams *hp = &f->m->hp;
    float eps = (float)hp->norm_eps;
    if (b->n_tokens < 1 || b->n_tokens > f->n_batch)
        return fg_err_set(FG_ERR_INVALID_ARG, "a step has %d tokens; it must have 1..%d", b->n_tokens, f->n_batch);
    int32_t n_out = b->n_out;
    if (n_out < 0 || n_out > b->n_tokens)
        return fg_err_set(FG_ERR_INVALID_ARG, "%d logits rows asked of a step of %d tokens", n_out, b->n_tokens);
    /* The last n_out tokens are read in place; any other rows are gathered
     * first. */
    bool tail = true;
    for (int32_t r = 0; r < n_out; r++) tail = tail && b->out_rows[r] == b->n_tokens - n_out + r;

    /* The plan below depends only on the batch's shape, the number of logit
     * rows and whether they are gathered, which key the backend's step
     * graphs. */
    fg_batch bg = *b;
    bg.graph_key = 4 * (1 + n_out) + (tail ? 0 : 2) + (sampled ? 1 : 0);
    FG_TRY(o->step_begin(be, &bg));
    FG_TRY(o->embed(be, &f->w.tok_embd, &f->x));
    if (f->arch->embed_scale) FG_TRY(o->scale(be, &f->x, sqrtf((float)hp->n_embd)));
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const fg_layer_weights *w = &f->w.layers[l];
        int pat = f->arch->swa_pattern;
        bool swa = pat > 0 && l % pat < pat - 1;
        const fg_rope *rope = swa ? &f->rope_swa : &f->rope;
        const fg_attn *attn = swa ? &f->attn_swa : &f->attn;
        FG_TRY(o->rms_norm(be, &f->x, &w->attn_norm, hp->n_embd, eps, &f->h, true));
        const fg_tensor *wqkv[3] = {&w->wq, &w->wk, &w->wv};
        const fg_tensor *bqkv[3] = {w->bq.data ? &w->bq : NULL, w->bk.data ? &w->bk : NULL, w->bv.data ? &w->bv : NULL};
        fg_tensor *qkv[3] = {&f->q, &f->k, &f->v};
        FG_TRY(o->matmul_n(be, 3, wqkv, bqkv, &f->h, qkv, true));
        if (f->arch->qk_norm) {
            FG_TRY(o->rms_norm(be, &f->q, &w->q_norm, hp->head_dim_k, eps, &f->q, false));
            FG_TRY(o->rms_norm(be, &f->k, &w->k_norm, hp->head_dim_k, eps, &f->k, false));
        }
        FG_TRY(o->rope_store(be, l, &f->q, &f->k, &f->v, attn->head_dim_k, rope));
        FG_TRY(o->attention(be, l, &f->q, attn, &f->att, true));
        FG_TRY(sublayer_out(f, &w->wo, &f->att, &w->post_attn_norm, true));
        FG_TRY(o->rms_norm(be, &f->x, &w->ffn_norm, hp->n_embd, eps, &f->h, true));
        const fg_tensor *wgu[2] = {&w->w_gate, &w->w_up};
        fg_tensor *gu[2] = {&f->gate, &f->up};
        FG_TRY(o->matmul_n(be, 2, wgu, NULL, &f->h, gu, true));
        FG_TRY(f->arch->geglu ? o->geglu(be, &f->gate, &f->up, &f->gate)
                              : o->swiglu(be, &f->gate, &f->up, &f->gate, true));
        FG_TRY(sublayer_out(f, &w->w_down, &f->gate, &w->post_ffn_norm, !f->arch->geglu));
    }
    if (n_out == 0) return FG_OK;
    /* The output matmul reads the final norm's rows quantized where it
     * takes all of them in place. */
    bool whole = tail && n_out == b->n_tokens;
    FG_TRY(o->rms_norm(be, &f->x, &f->w.out_norm, hp->n_embd, eps, &f->h, whole));
    fg_tensor h_out = rows_from(&f->h, b->n_tokens - n_out);
    if (!tail) { /* the layers are done with x: it takes the gathered rows */
        FG_TRY(o->gather(be, &f->h, &f->x));
        h_out = f->x;
    }
    return o->matmul(be, &f->w.output, NULL, &h_out, NULL, n_out, &f->logits, whole);
}

fg_status fg_forward_run(fg_forward *f, const fg_batch *b, float *logits, int32_t *ids)
{
    FG_ASSERT(!logits != !ids);
    if (ids && (b->n_sample != b->n_out || !b->sample))
        return fg_err_set(FG_ERR_INVALID_ARG, "a sampled step needs sampling parameters for its %d logits rows, not %d",
                          b->n_out, b->n_sample);
    FG_TRY(plan(f, b, ids != NULL));
    if (b->n_out == 0) return FG_OK;
    return ids ? f->be->ops->sample(f->be, &f->logits, b->n_out, ids) : f->be->ops->read(f->be, &f->logits, b->n_out, logits);
}

/* b with its last n_tokens - logits_from tokens as the logits rows. */
static fg_status with_tail(fg_forward *f, const fg_batch *b, int32_t logits_from, fg_batch *out)
{
    if (logits_from < 0 || logits_from > b->n_tokens)
        return fg_err_set(FG_ERR_INVALID_ARG, "logits_from %d is outside 0..%d", logits_from, b->n_tokens);
    *out = *b;
    out->n_out = b->n_tokens - logits_from;
    for (int32_t r = 0; r < out->n_out; r++) f->rows[r] = logits_from + r;
    out->out_rows = f->rows;
    return FG_OK;
}

fg_status fg_forward_step(fg_forward *f, const fg_batch *b, int32_t logits_from, float *logits)
{
    fg_batch t;
    FG_TRY(with_tail(f, b, logits_from, &t));
    return t.n_out > 0 ? fg_forward_run(f, &t, logits, NULL) : plan(f, &t, false);
}

fg_status fg_forward_step_sample(fg_forward *f, const fg_batch *b, int32_t logits_from, int32_t *ids)
{
    fg_batch t;
    FG_TRY(with_tail(f, b, logits_from, &t));
    return t.n_out > 0 ? fg_forward_run(f, &t, NULL, ids) : plan(f, &t, true);
}

bool fg_forward_logits_on_host(const fg_forward *f)
{
    return f->be->ops->logits_on_host;
}
