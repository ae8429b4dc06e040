/*
 * model.h — a model as forge sees it before any backend is involved: the
 * validated GGUF file, its architecture's hyperparameters and its tokenizer.
 *
 * fg_model (the public handle of forge.h) owns the fg_gguf (and through it the
 * mmap that weights are views into) and the tokenizer.
 */
#ifndef FG_MODEL_MODEL_H
#define FG_MODEL_MODEL_H

#include "forge.h"
#include "gguf/gguf.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

/* Hyperparameters read from "<arch>.*" keys. Values the file omits get the
 * defaults llama.cpp uses; -1 marks "absent and no default" (e.g. no sliding
 * window). */
typedef struct fg_hparams {
    char arch[64];          /* general.architecture */
    int64_t n_layer;        /* block_count */
    int64_t n_embd;         /* embedding_length */
    int64_t n_head;         /* attention.head_count */
    int64_t n_head_kv;      /* attention.head_count_kv (default n_head) */
    int64_t n_ff;           /* feed_forward_length (-1 if absent) */
    int64_t n_ctx_train;    /* context_length (-1 if absent) */
    int64_t head_dim_k;     /* attention.key_length (default n_embd / n_head) */
    int64_t head_dim_v;     /* attention.value_length (default head_dim_k) */
    int64_t n_rot;          /* rope.dimension_count (default head_dim_k) */
    int64_t sliding_window; /* attention.sliding_window (-1 if absent) */
    double rope_base;       /* rope.freq_base (default 10000) */
    double norm_eps;        /* attention.layer_norm_rms_epsilon (default 1e-5) */
} fg_hparams;

struct fg_model {
    fg_gguf *gguf;
    fg_tokenizer *tok;
    fg_hparams hp;
};

/* Reads the hyperparameters of g's architecture and checks each against
 * what a model can have: counts positive, n_head a multiple of n_head_kv,
 * head dims even (k) and at most FG_HEAD_DIM_MAX, the rope dimension even
 * and within the head, rope.freq_base finite and positive, the RMS epsilon
 * in (0, 0.1]. Missing required keys and impossible values are
 * FG_ERR_FORMAT naming the file, the key, its value and the range. */
fg_status fg_hparams_read(const fg_gguf *g, fg_hparams *hp);

/* The same checks for the RoPE values read where the forward pass is
 * built: a base ("<arch>.<suffix>", e.g. rope.freq_base_swa) and a linear
 * scaling factor, both finite and positive. */
fg_status fg_hparams_check_rope_base(const fg_gguf *g, const char *arch, const char *suffix, double base);
fg_status fg_hparams_check_rope_scale(const fg_gguf *g, const char *arch, double factor);

/* The chat template to use for a model: the one called name if name is not
 * NULL (--chat-template), else the one its tokenizer.chat_template or
 * architecture identifies, else ChatML, as llama.cpp falls back. *detected
 * (may be NULL) says how it was chosen: "override", "template", "arch" or
 * "fallback". bos/eos are set to the vocabulary's token texts (borrowed from
 * tok), bos only where the template writes it and the tokenizer will not add
 * it itself, so tokenizing the result with add_special never doubles BOS. */
fg_status fg_model_chat_template(const fg_gguf *g, const fg_tokenizer *tok, const char *name,
                                 fg_chat_tmpl *out, const char **detected);

/* fg_model_open (forge.h) for a GGUF image already open (fg_gguf_open_memory:
 * the mutation tests). Takes ownership of g, which is closed on failure. */
fg_status fg_model_open_gguf(fg_gguf *g, fg_model **out);

/* Total parameter count (elements of all tensors). */
uint64_t fg_model_n_params(const fg_gguf *g);

#endif
