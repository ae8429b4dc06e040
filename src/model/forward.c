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

typedef struct layer_w {
    fg_tensor attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
    fg_tensor bq, bk, bv; /* data NULL when the file has no bias */
    fg_tensor q_norm, k_norm; /* (head_dim_k) per-head norms, qk_norm architectures */
    fg_tensor post_attn_norm, post_ffn_norm; /* post_norms architectures */
} layer_w;

struct fg_forward {
    const fg_model *m;
    fg_backend *be;
    const fg_arch *arch;
    int32_t n_ctx, n_batch;
    int32_t *rows; /* (n_batch) logits rows of a step run through fg_forward_step */
    fg_tensor tok_embd, out_norm, output;
    fg_tensor rope_freqs; /* (n_rot / 2) F32, or data NULL */
    fg_forward_progress progress;
    void *progress_ctx;
    uint64_t placed, total; /* tensor bytes placed so far, and in the file */
    layer_w *layers;
    fg_rope rope, rope_swa; /* global layers; sliding-window layers (swa_pattern) */
    fg_attn attn, attn_swa;
    /* Activations, n_batch rows each. */
    fg_tensor x, h, q, k, v, att, gate, up, logits;
};

/* ---- Loading the weights ---------------------------------------------------------- */

/* Whether t is exactly ne0 x rows (rows 1: a vector of ne0), else the error
 * naming it and both shapes. Every dimension is compared, none divided by:
 * GGUF allows a dimension of 0, and a third one would be read past. */
static fg_status check_shape(const fg_forward *f, const fg_gguf_tensor *t, int64_t ne0, int64_t rows)
{
    if (t->ne[0] == ne0 && t->ne[1] == rows && t->ne[2] == 1 && t->ne[3] == 1) return FG_OK;
    char have[96] = "", want[48];
    for (uint32_t d = 0, at = 0; d < t->n_dims && at < sizeof have; d++)
        at += (uint32_t)snprintf(have + at, sizeof have - at, "%s%lld", d ? ", " : "", (long long)t->ne[d]);
    if (rows == 1)
        snprintf(want, sizeof want, "%lld", (long long)ne0);
    else
        snprintf(want, sizeof want, "%lld, %lld", (long long)ne0, (long long)rows);
    return fg_err_set(FG_ERR_FORMAT,
                      "%s: tensor '%.*s' has shape [%s]; a %s model with these hyperparameters needs [%s]. The file "
                      "is damaged, or its metadata does not match its weights: download or convert the model again",
                      f->m->gguf->path, (int)t->name.len, t->name.ptr, have, f->m->hp.arch, want);
}

/* Places tensor `name` (a printf pattern over the layer) on the backend and
 * checks its shape: ne0 elements per row and `rows` rows (check_shape).
 * Optional tensors that are absent leave out->data NULL. */
static fg_status get_w(fg_forward *f, fg_tensor *out, bool required, int64_t ne0, int64_t rows, const char *fmt,
                       int layer)
{
    char name[96];
    snprintf(name, sizeof name, fmt, layer);
    const fg_gguf *g = f->m->gguf;
    const fg_gguf_tensor *t = fg_gguf_find_tensor(g, name);
    memset(out, 0, sizeof *out);
    if (!t) {
        if (!required) return FG_OK;
        return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s' is missing; a %s model needs it", g->path, name,
                          f->m->hp.arch);
    }
    FG_TRY(check_shape(f, t, ne0, rows));
    fg_status st = f->be->ops->weight(f->be, t, out);
    if (st != FG_OK) return fg_err_wrap(st, "%s", g->path);
    f->placed += t->nbytes;
    if (f->progress) f->progress(f->progress_ctx, f->placed, f->total);
    return FG_OK;
}

/* Places rows [first, first + n) of t (a fused weight whose rows stack
 * several matrices) as a weight of its own: each row is a whole number of
 * blocks, so the range is contiguous bytes of the file. */
static fg_status place_rows(fg_forward *f, const fg_gguf_tensor *t, int64_t first, int64_t n, fg_tensor *out)
{
    fg_gguf_tensor part = *t;
    size_t rb = fg_type_row_size(t->type, t->ne[0]);
    part.ne[1] = n;
    part.n_elems = (uint64_t)n * (uint64_t)t->ne[0];
    part.nbytes = (uint64_t)n * rb;
    part.offset = t->offset + (uint64_t)first * rb;
    part.data = (const uint8_t *)t->data + (size_t)first * rb;
    fg_status st = f->be->ops->weight(f->be, &part, out);
    if (st != FG_OK) return fg_err_wrap(st, "%s", f->m->gguf->path);
    f->placed += part.nbytes;
    if (f->progress) f->progress(f->progress_ctx, f->placed, f->total);
    return FG_OK;
}

/* A fused weight (a printf pattern over the layer): checks its shape, ne0
 * x the parts' rows, and places each part. */
static fg_status get_fused(fg_forward *f, const char *fmt, int layer, int64_t ne0, int n, const int64_t *rows,
                           fg_tensor *const *out)
{
    char name[96];
    snprintf(name, sizeof name, fmt, layer);
    const fg_gguf *g = f->m->gguf;
    const fg_gguf_tensor *t = fg_gguf_find_tensor(g, name);
    if (!t) return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s' is missing; a %s model needs it", g->path, name, f->m->hp.arch);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += rows[i];
    FG_TRY(check_shape(f, t, ne0, total));
    for (int64_t i = 0, first = 0; i < n; first += rows[i], i++) FG_TRY(place_rows(f, t, first, rows[i], out[i]));
    return FG_OK;
}

/* The optional bias of a fused weight (F32, the parts' rows in all),
 * placed as one vector per part; absent leaves the parts' data NULL. */
static fg_status get_fused_bias(fg_forward *f, const char *fmt, int layer, int n, const int64_t *rows,
                                fg_tensor *const *out)
{
    char name[96];
    snprintf(name, sizeof name, fmt, layer);
    const fg_gguf *g = f->m->gguf;
    const fg_gguf_tensor *t = fg_gguf_find_tensor(g, name);
    for (int i = 0; i < n; i++) memset(out[i], 0, sizeof *out[i]);
    if (!t) return FG_OK;
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += rows[i];
    FG_TRY(check_shape(f, t, total, 1));
    if (t->type != FG_TYPE_F32)
        return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s' must be %lld F32 values", g->path, name, (long long)total);
    fg_gguf_tensor row = *t;
    row.ne[0] = total, row.ne[1] = 1, row.n_elems = (uint64_t)total;
    for (int64_t i = 0, first = 0; i < n; first += rows[i], i++) {
        /* a vector's elements are its one row's: split it as a row of part sizes */
        fg_gguf_tensor part = row;
        part.ne[0] = rows[i];
        part.n_elems = (uint64_t)rows[i];
        part.nbytes = (uint64_t)rows[i] * sizeof(float);
        part.offset = t->offset + (uint64_t)first * sizeof(float);
        part.data = (const float *)t->data + first;
        fg_status st = f->be->ops->weight(f->be, &part, out[i]);
        if (st != FG_OK) return fg_err_wrap(st, "%s", g->path);
    }
    f->placed += t->nbytes;
    if (f->progress) f->progress(f->progress_ctx, f->placed, f->total);
    return FG_OK;
}

/* Norms and biases are read as F32 vectors by every backend. */
static fg_status get_vec(fg_forward *f, fg_tensor *out, bool required, int64_t n, const char *fmt, int layer)
{
    FG_TRY(get_w(f, out, required, n, 1, fmt, layer));
    if (out->data && out->type != FG_TYPE_F32) {
        char name[96];
        snprintf(name, sizeof name, fmt, layer);
        return fg_err_set(FG_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s; forge expects F32 norms and biases",
                          f->m->gguf->path, name, fg_type_name(out->type));
    }
    return FG_OK;
}

static fg_status load_weights(fg_forward *f)
{
    const fg_hparams *hp = &f->m->hp;
    int64_t d = hp->n_embd, n_vocab = fg_tok_n_vocab(f->m->tok);
    int64_t q_dim = hp->n_head * hp->head_dim_k, k_dim = hp->n_head_kv * hp->head_dim_k,
            v_dim = hp->n_head_kv * hp->head_dim_v, o_dim = hp->n_head * hp->head_dim_v;
    if (hp->n_ff <= 0)
        return fg_err_set(FG_ERR_FORMAT, "%s: %s.feed_forward_length is missing", f->m->gguf->path, hp->arch);

    FG_TRY(get_w(f, &f->tok_embd, true, d, n_vocab, "token_embd.weight", 0));
    FG_TRY(get_vec(f, &f->out_norm, true, d, "output_norm.weight", 0));
    FG_TRY(get_w(f, &f->output, false, d, n_vocab, "output.weight", 0));
    if (!f->output.data) f->output = f->tok_embd; /* tied embeddings */

    for (int l = 0; l < hp->n_layer; l++) {
        layer_w *w = &f->layers[l];
        FG_TRY(get_vec(f, &w->attn_norm, true, d, "blk.%d.attn_norm.weight", l));
        char qkv_name[96];
        snprintf(qkv_name, sizeof qkv_name, "blk.%d.attn_qkv.weight", l);
        if (f->arch->fused_qkv && fg_gguf_find_tensor(f->m->gguf, qkv_name)) {
            const int64_t rows[3] = {q_dim, k_dim, v_dim};
            fg_tensor *parts[3] = {&w->wq, &w->wk, &w->wv}, *biases[3] = {&w->bq, &w->bk, &w->bv};
            FG_TRY(get_fused(f, "blk.%d.attn_qkv.weight", l, d, 3, rows, parts));
            FG_TRY(get_fused_bias(f, "blk.%d.attn_qkv.bias", l, 3, rows, biases));
        } else {
            FG_TRY(get_w(f, &w->wq, true, d, q_dim, "blk.%d.attn_q.weight", l));
            FG_TRY(get_w(f, &w->wk, true, d, k_dim, "blk.%d.attn_k.weight", l));
            FG_TRY(get_w(f, &w->wv, true, d, v_dim, "blk.%d.attn_v.weight", l));
            FG_TRY(get_vec(f, &w->bq, false, q_dim, "blk.%d.attn_q.bias", l));
            FG_TRY(get_vec(f, &w->bk, false, k_dim, "blk.%d.attn_k.bias", l));
            FG_TRY(get_vec(f, &w->bv, false, v_dim, "blk.%d.attn_v.bias", l));
        }
        if (f->arch->qk_norm) {
            FG_TRY(get_vec(f, &w->q_norm, true, hp->head_dim_k, "blk.%d.attn_q_norm.weight", l));
            FG_TRY(get_vec(f, &w->k_norm, true, hp->head_dim_k, "blk.%d.attn_k_norm.weight", l));
        }
        FG_TRY(get_w(f, &w->wo, true, o_dim, d, "blk.%d.attn_output.weight", l));
        FG_TRY(get_vec(f, &w->ffn_norm, true, d, "blk.%d.ffn_norm.weight", l));
        if (f->arch->post_norms) {
            FG_TRY(get_vec(f, &w->post_attn_norm, true, d, "blk.%d.post_attention_norm.weight", l));
            FG_TRY(get_vec(f, &w->post_ffn_norm, true, d, "blk.%d.post_ffw_norm.weight", l));
        }
        if (f->arch->fused_gate_up) {
            const int64_t rows[2] = {hp->n_ff, hp->n_ff};
            fg_tensor *parts[2] = {&w->w_gate, &w->w_up};
            FG_TRY(get_fused(f, "blk.%d.ffn_up.weight", l, d, 2, rows, parts));
        } else {
            FG_TRY(get_w(f, &w->w_gate, true, d, hp->n_ff, "blk.%d.ffn_gate.weight", l));
            FG_TRY(get_w(f, &w->w_up, true, d, hp->n_ff, "blk.%d.ffn_up.weight", l));
        }
        FG_TRY(get_w(f, &w->w_down, true, hp->n_ff, d, "blk.%d.ffn_down.weight", l));
    }

    /* Llama 3.1-style frequency factors. */
    FG_TRY(get_w(f, &f->rope_freqs, false, hp->n_rot / 2, 1, "rope_freqs.weight", 0));
    if (f->rope_freqs.data) {
        if (f->rope_freqs.type != FG_TYPE_F32)
            return fg_err_set(FG_ERR_FORMAT, "%s: tensor 'rope_freqs.weight' must be %lld F32 values",
                              f->m->gguf->path, (long long)(hp->n_rot / 2));
        f->rope.freq_factors = f->rope_freqs.data; /* backend memory */
    }
    return FG_OK;
}

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
    f->progress = progress;
    f->progress_ctx = progress_ctx;
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) f->total += m->gguf->tensors[i].nbytes;
    f->layers = calloc((size_t)hp->n_layer, sizeof *f->layers);
    f->rows = malloc((size_t)n_batch * sizeof *f->rows);
    fg_status st = f->layers && f->rows ? FG_OK : fg_err_set(FG_ERR_NOMEM, "out of memory");
    if (st == FG_OK) st = read_rope(f);
    if (st == FG_OK) st = read_rope_swa(f);
    if (st == FG_OK) st = load_weights(f);
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
        (st = o->alloc(be, f->output.rows, n_batch, &f->logits)) ||
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
    free(f->layers);
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
    FG_TRY(o->embed(be, &f->tok_embd, &f->x));
    if (f->arch->embed_scale) FG_TRY(o->scale(be, &f->x, sqrtf((float)hp->n_embd)));
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const layer_w *w = &f->layers[l];
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
    FG_TRY(o->rms_norm(be, &f->x, &f->out_norm, hp->n_embd, eps, &f->h, whole));
    fg_tensor h_out = rows_from(&f->h, b->n_tokens - n_out);
    if (!tail) { /* the layers are done with x: it takes the gathered rows */
        FG_TRY(o->gather(be, &f->h, &f->x));
        h_out = f->x;
    }
    return o->matmul(be, &f->output, NULL, &h_out, NULL, n_out, &f->logits, whole);
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
