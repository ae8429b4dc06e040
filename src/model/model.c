/*
 * model.c — opening a model: GGUF file, hyperparameters, tokenizer. Backs the
 * fg_model_* calls of forge.h.
 */
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "model/arch.h"

/* Reads "<arch>.<suffix>" as an integer into *out; absent keys leave *out as
 * it is unless required. */
static fg_status hp_int(const fg_gguf *g, const char *arch, const char *suffix, bool required,
                        int64_t *out)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    fg_status st = fg_gguf_get_int(g, key, &v);
    if (st == FG_ERR_NOT_FOUND && !required) return FG_OK;
    if (st != FG_OK) return st;
    *out = v;
    return FG_OK;
}

static fg_status hp_float(const fg_gguf *g, const char *arch, const char *suffix, double *out)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    fg_status st = fg_gguf_get_float(g, key, out);
    return st == FG_ERR_NOT_FOUND ? FG_OK : st;
}

fg_status fg_hparams_read(const fg_gguf *g, fg_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    fg_gguf_str arch;
    FG_TRY(fg_gguf_get_str(g, "general.architecture", &arch));
    if (arch.len == 0 || arch.len >= sizeof hp->arch) {
        return fg_err_set(FG_ERR_FORMAT, "%s: general.architecture is %llu bytes long; expected a short name such as 'llama'",
                          g->path, (unsigned long long)arch.len);
    }
    memcpy(hp->arch, arch.ptr, arch.len);
    const char *a = hp->arch;

    FG_TRY(hp_int(g, a, "block_count", true, &hp->n_layer));
    FG_TRY(hp_int(g, a, "embedding_length", true, &hp->n_embd));
    FG_TRY(hp_int(g, a, "attention.head_count", true, &hp->n_head));
    hp->n_head_kv = hp->n_head;
    FG_TRY(hp_int(g, a, "attention.head_count_kv", false, &hp->n_head_kv));
    hp->n_ff = hp->n_ctx_train = hp->sliding_window = -1;
    FG_TRY(hp_int(g, a, "feed_forward_length", false, &hp->n_ff));
    FG_TRY(hp_int(g, a, "context_length", false, &hp->n_ctx_train));
    FG_TRY(hp_int(g, a, "attention.sliding_window", false, &hp->sliding_window));

    const struct { const char *key; int64_t v; } positive[] = {
        {"block_count", hp->n_layer},
        {"embedding_length", hp->n_embd},
        {"attention.head_count", hp->n_head},
        {"attention.head_count_kv", hp->n_head_kv},
    };
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++) {
        if (positive[i].v <= 0 || positive[i].v > (1 << 20)) {
            return fg_err_set(FG_ERR_FORMAT, "%s: %s.%s is %lld; it must be between 1 and %d",
                              g->path, a, positive[i].key, (long long)positive[i].v, 1 << 20);
        }
    }
    if (hp->n_head % hp->n_head_kv != 0) {
        return fg_err_set(FG_ERR_FORMAT, "%s: %s.attention.head_count (%lld) is not a multiple of head_count_kv (%lld)",
                          g->path, a, (long long)hp->n_head, (long long)hp->n_head_kv);
    }
    hp->head_dim_k = hp->n_embd / hp->n_head;
    FG_TRY(hp_int(g, a, "attention.key_length", false, &hp->head_dim_k));
    hp->head_dim_v = hp->head_dim_k;
    FG_TRY(hp_int(g, a, "attention.value_length", false, &hp->head_dim_v));
    hp->n_rot = hp->head_dim_k;
    FG_TRY(hp_int(g, a, "rope.dimension_count", false, &hp->n_rot));
    if (hp->head_dim_k <= 0 || hp->head_dim_v <= 0 || hp->n_rot < 0 || hp->n_rot > hp->head_dim_k) {
        return fg_err_set(FG_ERR_FORMAT, "%s: head dims k=%lld v=%lld rope=%lld are inconsistent",
                          g->path, (long long)hp->head_dim_k, (long long)hp->head_dim_v, (long long)hp->n_rot);
    }
    hp->rope_base = 10000.0;
    hp->norm_eps = 1e-5;
    FG_TRY(hp_float(g, a, "rope.freq_base", &hp->rope_base));
    FG_TRY(hp_float(g, a, "attention.layer_norm_rms_epsilon", &hp->norm_eps));
    return FG_OK;
}

fg_status fg_model_chat_template(const fg_gguf *g, const fg_tokenizer *tok, const char *name,
                                 fg_chat_tmpl *out, const char **detected)
{
    const char *how = "override";
    const char *bos = fg_tok_bos(tok) >= 0 ? fg_tok_text(tok, fg_tok_bos(tok), &(size_t){0}) : NULL;
    const char *eos = fg_tok_eos(tok) >= 0 ? fg_tok_text(tok, fg_tok_eos(tok), &(size_t){0}) : NULL;
    if (name) {
        FG_TRY(fg_chat_from_name(name, out));
    } else {
        const fg_gguf_kv *src = fg_gguf_find(g, "tokenizer.chat_template");
        fg_gguf_str arch = {0};
        char arch_buf[64] = "";
        if (fg_gguf_find(g, "general.architecture") && fg_gguf_get_str(g, "general.architecture", &arch) == FG_OK)
            snprintf(arch_buf, sizeof arch_buf, "%.*s", (int)(arch.len < 63 ? arch.len : 63), arch.ptr);
        /* The file's template first, then the architecture, then ChatML. */
        fg_status st = FG_ERR_NOT_FOUND;
        if (src && src->val.type == FG_GGUF_STRING) {
            st = fg_chat_detect(src->val.v.str.ptr, (size_t)src->val.v.str.len, NULL, NULL, out);
            how = "template";
        }
        if (st == FG_ERR_NOT_FOUND) {
            st = fg_chat_detect(NULL, 0, arch_buf[0] ? arch_buf : NULL, bos, out);
            how = "arch";
        }
        if (st == FG_ERR_NOT_FOUND) {
            st = fg_chat_from_name("chatml", out);
            how = "fallback";
        }
        if (st != FG_OK) return fg_err_wrap(st, "%s: tokenizer.chat_template", g->path);
    }
    out->bos = out->bos_in_template && !fg_tok_add_bos(tok) ? bos : NULL;
    out->eos = eos;
    if (detected) *detected = how;
    return FG_OK;
}

uint64_t fg_model_n_params(const fg_gguf *g)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) n += g->tensors[i].n_elems;
    return n;
}

/* A model is opened to be run, so its architecture is judged first: a file
 * of one forge does not run (bert, gpt-oss, ...) is refused by that name,
 * not by whatever else of it forge would then fail to read (hyperparameter
 * keys, a WordPiece tokenizer). An absent or malformed general.architecture
 * is left to fg_hparams_read, which names it. */
static fg_status check_arch(const fg_gguf *g)
{
    fg_gguf_str a;
    char name[64];
    if (!fg_gguf_find(g, "general.architecture") || fg_gguf_get_str(g, "general.architecture", &a) != FG_OK ||
        a.len == 0 || a.len >= sizeof name)
        return FG_OK;
    memcpy(name, a.ptr, a.len);
    name[a.len] = 0;
    const fg_arch *arch;
    return fg_arch_get(g->path, name, &arch);
}

fg_status fg_model_open(const char *path, fg_model **out)
{
    *out = NULL;
    fg_model *m = calloc(1, sizeof *m);
    if (!m) return fg_err_set(FG_ERR_NOMEM, "%s: out of memory", path);
    fg_status st = fg_gguf_open(path, &m->gguf);
    if (st == FG_OK) st = check_arch(m->gguf);
    if (st == FG_OK) st = fg_hparams_read(m->gguf, &m->hp);
    if (st == FG_OK) st = fg_tok_load(m->gguf, &m->tok);
    if (st != FG_OK) {
        fg_model_close(m);
        return st;
    }
    *out = m;
    return FG_OK;
}

void fg_model_close(fg_model *m)
{
    if (!m) return;
    fg_tok_free(m->tok);
    fg_gguf_close(m->gguf);
    free(m);
}

fg_status fg_model_tokenize(const fg_model *m, const char *text, size_t len, bool add_special,
                            bool parse_special, int32_t **ids, size_t *n_ids)
{
    fg_tokens t = {0};
    fg_status st = fg_tok_encode(m->tok, text, len, add_special, parse_special, &t);
    if (st != FG_OK) {
        fg_tokens_free(&t);
        return st;
    }
    *ids = t.ids;
    *n_ids = t.n;
    return FG_OK;
}

fg_status fg_model_detokenize(const fg_model *m, const int32_t *ids, size_t n_ids,
                              bool render_special, char **text)
{
    return fg_tok_decode(m->tok, ids, n_ids, render_special, text);
}

int32_t fg_model_n_vocab(const fg_model *m)
{
    return fg_tok_n_vocab(m->tok);
}
