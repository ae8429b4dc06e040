/*
 * load.c — see load.h.
 */
#include "runtime/load.h"

#include <string.h>
#include <strings.h>

#include "base/err.h"

int32_t fg_load_default_ctx(const fg_model *m)
{
    int64_t train = m->hp.n_ctx_train;
    return train > 0 && train < FG_LOAD_CTX_CAP ? (int32_t)train : FG_LOAD_CTX_CAP;
}

fg_status fg_load_pool_tokens(const fg_model *m, fg_backend *be, int64_t kv_tokens, float kv_fraction,
                              bool kv_f32, int32_t ctx, int64_t cap, int32_t step, int64_t *out)
{
    bool gpu = fg_backend_on_device(be);
    if (kv_tokens > 0) {
        if (kv_tokens < ctx)
            return fg_err_set(FG_ERR_INVALID_ARG, "engine config: kv_tokens %lld is less than one sequence of ctx %d tokens",
                              (long long)kv_tokens, ctx);
        *out = kv_tokens;
        return FG_OK;
    }
    const fg_hparams *hp = &m->hp;
    uint64_t per_token = (uint64_t)hp->n_layer * (uint64_t)hp->n_head_kv * (uint64_t)(hp->head_dim_k + hp->head_dim_v) *
                         (kv_f32 ? 4u : 2u);
    uint64_t free_bytes = 0, weights = 0;
    fg_status st = be->ops->mem_free(be, &free_bytes);
    if (st != FG_OK && gpu) return st;
    if (st != FG_OK) free_bytes = UINT64_MAX; /* the CPU cap alone, then */
    for (uint64_t i = 0; gpu && i < m->gguf->n_tensors; i++) weights += m->gguf->tensors[i].nbytes;
    uint64_t act = (uint64_t)step * 4u *
                   (uint64_t)(2 * hp->n_embd + hp->n_head * (hp->head_dim_k + hp->head_dim_v) +
                              hp->n_head_kv * (hp->head_dim_k + hp->head_dim_v) + 2 * hp->n_ff + fg_model_n_vocab(m));
    uint64_t left = free_bytes > weights + act ? free_bytes - weights - act : 0;
    double n = (double)kv_fraction * (double)left / (double)per_token;
    if (cap > FG_LOAD_MAX_POOL_TOKENS) cap = FG_LOAD_MAX_POOL_TOKENS;
    *out = n < (double)cap ? (int64_t)n : cap;
    if (*out < ctx)
        return fg_err_set(FG_ERR_NOMEM,
                          "the KV pool would hold %lld tokens (kv_fraction %.2f of %.1f MB free after %.1f MB of weights "
                          "and activations, %llu bytes a token), less than one sequence of %d; lower the context (-c), "
                          "raise kv_fraction or set kv_tokens",
                          (long long)*out, (double)kv_fraction, left / 1e6, (weights + act) / 1e6,
                          (unsigned long long)per_token, ctx);
    return FG_OK;
}
