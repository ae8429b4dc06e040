/*
 * weights.c — see weights.h: which tensors of the file each architecture
 * takes, their shapes, and placing them on the backend.
 */
#include "model/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"

/* One load in progress. */
typedef struct loader {
    const fg_model *m;
    const fg_arch *arch;
    fg_backend *be;
    fg_forward_progress progress;
    void *ctx;
    uint64_t placed, total; /* tensor bytes placed so far, and in the file */
    fg_weights *w;
} loader;

/* Places rows x ne0 of type at data (host memory: the mmap) on the backend
 * as the weight `name`. */
static fg_status place(loader *f, const char *name, fg_type type, int64_t ne0, int64_t rows, const void *data,
                       fg_tensor *out)
{
    const fg_weight_src src = {.name = name, .type = type, .ne0 = ne0, .rows = rows, .data = data};
    fg_status st = f->be->ops->weight(f->be, &src, out);
    return st == FG_OK ? FG_OK : fg_err_wrap(st, "%s", f->m->gguf->path);
}

/* Whether t is exactly ne0 x rows (rows 1: a vector of ne0), else the error
 * naming it and both shapes. Every dimension is compared, none divided by:
 * GGUF allows a dimension of 0, and a third one would be read past. */
static fg_status check_shape(const loader *f, const fg_gguf_tensor *t, int64_t ne0, int64_t rows)
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
static fg_status get_w(loader *f, fg_tensor *out, bool required, int64_t ne0, int64_t rows, const char *fmt,
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
    fg_status st = place(f, name, t->type, ne0, rows, t->data, out);
    if (st != FG_OK) return st;
    f->placed += t->nbytes;
    if (f->progress) f->progress(f->ctx, f->placed, f->total);
    return FG_OK;
}

/* Places rows [first, first + n) of t (a fused weight whose rows stack
 * several matrices) as a weight of its own: each row is a whole number of
 * blocks, so the range is contiguous bytes of the file. */
static fg_status place_rows(loader *f, const char *name, const fg_gguf_tensor *t, int64_t first, int64_t n,
                           fg_tensor *out)
{
    size_t rb = fg_type_row_size(t->type, t->ne[0]);
    FG_TRY(place(f, name, t->type, t->ne[0], n, (const uint8_t *)t->data + (size_t)first * rb, out));
    f->placed += (uint64_t)n * rb;
    if (f->progress) f->progress(f->ctx, f->placed, f->total);
    return FG_OK;
}

/* A fused weight (a printf pattern over the layer): checks its shape, ne0
 * x the parts' rows, and places each part. */
static fg_status get_fused(loader *f, const char *fmt, int layer, int64_t ne0, int n, const int64_t *rows,
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
    for (int64_t i = 0, first = 0; i < n; first += rows[i], i++) FG_TRY(place_rows(f, name, t, first, rows[i], out[i]));
    return FG_OK;
}

/* The optional bias of a fused weight (F32, the parts' rows in all),
 * placed as one vector per part; absent leaves the parts' data NULL. */
static fg_status get_fused_bias(loader *f, const char *fmt, int layer, int n, const int64_t *rows,
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
    /* a vector's elements are its one row's: split it as a row of part sizes */
    for (int64_t i = 0, first = 0; i < n; first += rows[i], i++)
        FG_TRY(place(f, name, FG_TYPE_F32, rows[i], 1, (const float *)t->data + first, out[i]));
    f->placed += t->nbytes;
    if (f->progress) f->progress(f->ctx, f->placed, f->total);
    return FG_OK;
}

/* Norms and biases are read as F32 vectors by every backend. */
static fg_status get_vec(loader *f, fg_tensor *out, bool required, int64_t n, const char *fmt, int layer)
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

static fg_status load_all(loader *f)
{
    const fg_hparams *hp = &f->m->hp;
    int64_t d = hp->n_embd, n_vocab = fg_tok_n_vocab(f->m->tok);
    int64_t q_dim = hp->n_head * hp->head_dim_k, k_dim = hp->n_head_kv * hp->head_dim_k,
            v_dim = hp->n_head_kv * hp->head_dim_v, o_dim = hp->n_head * hp->head_dim_v;
    if (hp->n_ff <= 0)
        return fg_err_set(FG_ERR_FORMAT, "%s: %s.feed_forward_length is missing", f->m->gguf->path, hp->arch);

    FG_TRY(get_w(f, &f->w->tok_embd, true, d, n_vocab, "token_embd.weight", 0));
    FG_TRY(get_vec(f, &f->w->out_norm, true, d, "output_norm.weight", 0));
    FG_TRY(get_w(f, &f->w->output, false, d, n_vocab, "output.weight", 0));
    if (!f->w->output.data) f->w->output = f->w->tok_embd; /* tied embeddings */

    for (int l = 0; l < hp->n_layer; l++) {
        fg_layer_weights *w = &f->w->layers[l];
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
    FG_TRY(get_w(f, &f->w->rope_freqs, false, hp->n_rot / 2, 1, "rope_freqs.weight", 0));
    if (f->w->rope_freqs.data && f->w->rope_freqs.type != FG_TYPE_F32)
        return fg_err_set(FG_ERR_FORMAT, "%s: tensor 'rope_freqs.weight' must be %lld F32 values",
                          f->m->gguf->path, (long long)(hp->n_rot / 2));
    return FG_OK;
}

fg_status fg_weights_load(const fg_model *m, const fg_arch *arch, fg_backend *be, fg_forward_progress progress,
                          void *progress_ctx, fg_weights *out)
{
    memset(out, 0, sizeof *out);
    loader f = {.m = m, .arch = arch, .be = be, .progress = progress, .ctx = progress_ctx, .w = out};
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) f.total += m->gguf->tensors[i].nbytes;
    out->layers = calloc((size_t)m->hp.n_layer, sizeof *out->layers);
    if (!out->layers) return fg_err_set(FG_ERR_NOMEM, "out of memory");
    fg_status st = load_all(&f);
    if (st != FG_OK) fg_weights_free(out);
    return st;
}

void fg_weights_free(fg_weights *w)
{
    free(w->layers);
    w->layers = NULL;
}
