/*
 * model.c — opening a model: GGUF file, hyperparameters, tokenizer. Backs the
 * fg_model_* calls of forge.h.
 */
#include "model/model.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "model/arch.h"

/* ---- Hyperparameters ------------------------------------------------------------ */

/* Reads "<arch>.<suffix>" as an integer into *out; absent keys leave *out as
 * it is unless required. *present (may be NULL) says whether the file has
 * the key. */
static fg_status hp_int(const fg_gguf *g, const char *arch, const char *suffix, bool required, int64_t *out,
                        bool *present)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int64_t v;
    fg_status st = fg_gguf_get_int(g, key, &v);
    if (present) *present = st == FG_OK;
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

/* The error for a hyperparameter no model of the architecture can have:
 * the file, the key (what names it), its value, the range it must be in
 * (a printf tail), and what the user can do. A file that gets here has
 * sound GGUF framing, so its metadata was damaged or written wrong. */
static fg_status FG_PRINTF(4, 5) hp_bad(const fg_gguf *g, const char *what, const char *value, const char *fmt, ...)
{
    char must[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(must, sizeof must, fmt, ap);
    va_end(ap);
    return fg_err_set(FG_ERR_FORMAT,
                      "%s: %s is %s; %s. The file's metadata is damaged or was written by a broken converter: "
                      "download or convert the model again",
                      g->path, what, value, must);
}

/* An integer hyperparameter in lo..hi, or the message naming it. */
static fg_status hp_check_int(const fg_gguf *g, const char *arch, const char *suffix, int64_t v, int64_t lo, int64_t hi)
{
    if (v >= lo && v <= hi) return FG_OK;
    char what[160], value[32];
    snprintf(what, sizeof what, "%s.%s", arch, suffix);
    snprintf(value, sizeof value, "%lld", (long long)v);
    return hp_bad(g, what, value, "it must be between %lld and %lld", (long long)lo, (long long)hi);
}

/* A float hyperparameter that must be finite and in (0, hi]; the backends
 * compute in float, so hi is at most FLT_MAX. typical says what models
 * use, for the message. */
static fg_status hp_check_positive(const fg_gguf *g, const char *arch, const char *suffix, double v, double hi,
                                   const char *typical)
{
    if (isfinite(v) && v > 0 && v <= hi) return FG_OK;
    char what[160], value[32], upto[48] = "";
    snprintf(what, sizeof what, "%s.%s", arch, suffix);
    snprintf(value, sizeof value, "%g", v);
    if (hi < FLT_MAX) snprintf(upto, sizeof upto, " and at most %g", hi);
    return hp_bad(g, what, value, "it must be a finite number above 0%s (%s)", upto, typical);
}

fg_status fg_hparams_check_rope_scale(const fg_gguf *g, const char *arch, double factor)
{
    return hp_check_positive(g, arch, "rope.scaling.factor", factor, FLT_MAX, "a linear scaling factor such as 2 or 4");
}

fg_status fg_hparams_check_rope_base(const fg_gguf *g, const char *arch, const char *suffix, double base)
{
    return hp_check_positive(g, arch, suffix, base, FLT_MAX, "models use 1e4 to 1e7");
}

/* Every hyperparameter the architectures use is checked here, against the
 * ranges of the models forge runs, before anything is sized from it: a
 * value that no model can have (a zero or odd rope dimension, an infinite
 * RoPE base, an epsilon of 4e9) is refused with its key, rather than
 * aborting at the first step or running to garbage. Tensor shapes are
 * checked against these values where the weights are placed (forward.c). */
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
    const int64_t count_max = 1 << 20; /* layers, widths, heads: far past any model */

    FG_TRY(hp_int(g, a, "block_count", true, &hp->n_layer, NULL));
    FG_TRY(hp_check_int(g, a, "block_count", hp->n_layer, 1, count_max));
    /* Each layer has tensors of its own, so a file of weights holds more
     * tensors than layers (a vocabulary-only file has none to count): the
     * KV pool and the layer table are sized from block_count. */
    if (g->n_tensors > 0 && (uint64_t)hp->n_layer > g->n_tensors) {
        char what[160], value[32];
        snprintf(what, sizeof what, "%s.block_count", a);
        snprintf(value, sizeof value, "%lld", (long long)hp->n_layer);
        return hp_bad(g, what, value, "the file has only %llu tensors, too few for that many layers",
                      (unsigned long long)g->n_tensors);
    }
    FG_TRY(hp_int(g, a, "embedding_length", true, &hp->n_embd, NULL));
    FG_TRY(hp_check_int(g, a, "embedding_length", hp->n_embd, 1, count_max));
    FG_TRY(hp_int(g, a, "attention.head_count", true, &hp->n_head, NULL));
    FG_TRY(hp_check_int(g, a, "attention.head_count", hp->n_head, 1, count_max));
    hp->n_head_kv = hp->n_head;
    FG_TRY(hp_int(g, a, "attention.head_count_kv", false, &hp->n_head_kv, NULL));
    FG_TRY(hp_check_int(g, a, "attention.head_count_kv", hp->n_head_kv, 1, hp->n_head));
    if (hp->n_head % hp->n_head_kv != 0) {
        char what[160], value[32];
        snprintf(what, sizeof what, "%s.attention.head_count_kv", a);
        snprintf(value, sizeof value, "%lld", (long long)hp->n_head_kv);
        return hp_bad(g, what, value, "%s.attention.head_count (%lld) is not a multiple of it, so the query heads "
                      "cannot share the KV heads in equal groups", a, (long long)hp->n_head);
    }

    /* Optional counts: -1 when absent (feed_forward_length is required
     * where the weights are placed, so that a vocabulary-only file still
     * opens for tokenizing). */
    bool present;
    hp->n_ff = hp->n_ctx_train = hp->sliding_window = -1;
    FG_TRY(hp_int(g, a, "feed_forward_length", false, &hp->n_ff, &present));
    if (present) FG_TRY(hp_check_int(g, a, "feed_forward_length", hp->n_ff, 1, count_max));
    FG_TRY(hp_int(g, a, "context_length", false, &hp->n_ctx_train, &present));
    if (present) FG_TRY(hp_check_int(g, a, "context_length", hp->n_ctx_train, 1, INT32_MAX));
    FG_TRY(hp_int(g, a, "attention.sliding_window", false, &hp->sliding_window, &present));
    if (present) FG_TRY(hp_check_int(g, a, "attention.sliding_window", hp->sliding_window, 0, INT32_MAX));

    /* Head dimensions: key_length (default n_embd / n_head) is even, as in
     * every model (RoPE rotates pairs of it), and both fit FG_HEAD_DIM_MAX,
     * the most the attention op takes. */
    hp->head_dim_k = hp->n_embd / hp->n_head;
    FG_TRY(hp_int(g, a, "attention.key_length", false, &hp->head_dim_k, &present));
    if (hp->head_dim_k < 2 || hp->head_dim_k > FG_HEAD_DIM_MAX || hp->head_dim_k % 2) {
        char what[320], value[32];
        if (present)
            snprintf(what, sizeof what, "%s.attention.key_length", a);
        else
            snprintf(what, sizeof what, "the head dimension %s.embedding_length / %s.attention.head_count (the file has "
                     "no %s.attention.key_length)", a, a, a);
        snprintf(value, sizeof value, "%lld", (long long)hp->head_dim_k);
        return hp_bad(g, what, value, "it must be even and between 2 and %d", FG_HEAD_DIM_MAX);
    }
    hp->head_dim_v = hp->head_dim_k;
    FG_TRY(hp_int(g, a, "attention.value_length", false, &hp->head_dim_v, NULL));
    FG_TRY(hp_check_int(g, a, "attention.value_length", hp->head_dim_v, 1, FG_HEAD_DIM_MAX));
    /* RoPE rotates pairs of each head's first n_rot dimensions. */
    hp->n_rot = hp->head_dim_k;
    FG_TRY(hp_int(g, a, "rope.dimension_count", false, &hp->n_rot, NULL));
    if (hp->n_rot < 2 || hp->n_rot > hp->head_dim_k || hp->n_rot % 2) {
        char what[160], value[32];
        snprintf(what, sizeof what, "%s.rope.dimension_count", a);
        snprintf(value, sizeof value, "%lld", (long long)hp->n_rot);
        return hp_bad(g, what, value, "it must be even and between 2 and the head dimension, %lld, as RoPE rotates "
                      "pairs of each head's dimensions", (long long)hp->head_dim_k);
    }

    hp->rope_base = 10000.0;
    hp->norm_eps = 1e-5;
    FG_TRY(hp_float(g, a, "rope.freq_base", &hp->rope_base));
    FG_TRY(fg_hparams_check_rope_base(g, a, "rope.freq_base", hp->rope_base));
    FG_TRY(hp_float(g, a, "attention.layer_norm_rms_epsilon", &hp->norm_eps));
    FG_TRY(hp_check_positive(g, a, "attention.layer_norm_rms_epsilon", hp->norm_eps, 0.1, "models use 1e-5 or 1e-6"));
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

/* ---- Chat templates (forge.h) ---------------------------------------------- */

struct fg_chat {
    const fg_model *m;
    fg_chat_tmpl t; /* bos and eos borrowed from m's tokenizer */
};

fg_status fg_chat_open(const fg_model *m, const char *name, fg_chat **out)
{
    *out = NULL;
    fg_chat *c = malloc(sizeof *c);
    if (!c) return fg_err_set(FG_ERR_NOMEM, "%s: out of memory for the chat template", m->gguf->path);
    fg_status st = fg_model_chat_template(m->gguf, m->tok, name, &c->t, NULL);
    if (st != FG_OK) {
        free(c);
        return st;
    }
    c->m = m;
    *out = c;
    return FG_OK;
}

void fg_chat_close(fg_chat *c)
{
    free(c);
}

fg_status fg_chat_tokenize(const fg_chat *c, const fg_chat_msg *msgs, size_t n_msgs, bool add_generation_prompt,
                           int32_t **ids, size_t *n_ids)
{
    char *prompt = NULL;
    fg_tok_span *spans = NULL;
    size_t n_spans = 0;
    FG_TRY(fg_chat_apply_spans(&c->t, msgs, n_msgs, add_generation_prompt, &prompt, &spans, &n_spans));
    /* The markup's control tokens are parsed; the spans (the messages'
     * contents) are plain text. add_special adds BOS only where the
     * template does not write it (fg_model_chat_template). */
    fg_tokens t = {0};
    fg_status st = fg_tok_encode_spans(c->m->tok, prompt, strlen(prompt), true, true, spans, n_spans, &t);
    free(prompt);
    free(spans);
    if (st != FG_OK) {
        fg_tokens_free(&t);
        return fg_err_wrap(st, "cannot tokenize the conversation");
    }
    *ids = t.ids;
    *n_ids = t.n;
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
    fg_gguf *g;
    FG_TRY(fg_gguf_open(path, &g));
    return fg_model_open_gguf(g, out);
}

fg_status fg_model_open_gguf(fg_gguf *g, fg_model **out)
{
    *out = NULL;
    fg_model *m = calloc(1, sizeof *m);
    if (!m) {
        fg_status st = fg_err_set(FG_ERR_NOMEM, "%s: out of memory", g->path);
        fg_gguf_close(g);
        return st;
    }
    m->gguf = g;
    fg_status st = check_arch(m->gguf);
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
