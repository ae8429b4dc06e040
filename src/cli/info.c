/*
 * info.c — `forge info MODEL`: what a GGUF file holds, after full validation.
 *
 * Prints the file facts, architecture and hyperparameters, tensor counts and
 * bytes by type, the vocabulary and its special tokens, and the chat template
 * forge will use. --json prints the same facts as one JSON object (the e2e
 * tests compare it with the `gguf` Python package's reading). A file that
 * fails validation prints the reader's message and exits 1.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

static void help(void)
{
    printf("usage: forge info [options] [MODEL]\n\n"
           "Validates a GGUF file and prints its architecture, hyperparameters, tensor\n"
           "counts and bytes by type, vocabulary, special tokens and chat template.\n\n"
           "options:\n"
           "  -m, --model PATH   the model (default: %s)\n"
           "      --json         print one JSON object instead of text\n"
           "  -h, --help         show this help\n",
           fg_cli_default_model());
}

/* llama.cpp's general.file_type values (LlamaFileType), for display. */
static const char *ftype_name(int64_t ft)
{
    static const struct { int v; const char *n; } names[] = {
        {0, "F32"}, {1, "F16"}, {2, "Q4_0"}, {3, "Q4_1"}, {7, "Q8_0"}, {8, "Q5_0"}, {9, "Q5_1"},
        {10, "Q2_K"}, {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"}, {14, "Q4_K_S"},
        {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"}, {18, "Q6_K"}, {19, "IQ2_XXS"},
        {20, "IQ2_XS"}, {21, "Q2_K_S"}, {22, "IQ3_XS"}, {23, "IQ3_XXS"}, {24, "IQ1_S"},
        {25, "IQ4_NL"}, {26, "IQ3_S"}, {27, "IQ3_M"}, {28, "IQ2_S"}, {29, "IQ2_M"},
        {30, "IQ4_XS"}, {31, "IQ1_M"}, {32, "BF16"}, {36, "TQ1_0"}, {37, "TQ2_0"},
        {38, "MXFP4_MOE"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].v == ft) return names[i].n;
    return "unknown";
}

static void human_bytes(double b, char *buf, size_t cap)
{
    const char *u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) {
        b /= 1000;
        i++;
    }
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", b, u[i]);
}

/* A string metadata value copied into buf (truncated), or NULL if absent. */
static const char *meta_str(const fg_gguf *g, const char *key, char *buf, size_t cap)
{
    const fg_gguf_kv *kv = fg_gguf_find(g, key);
    if (!kv || kv->val.type != FG_GGUF_STRING) return NULL;
    size_t n = kv->val.v.str.len < cap - 1 ? (size_t)kv->val.v.str.len : cap - 1;
    memcpy(buf, kv->val.v.str.ptr, n);
    buf[n] = 0;
    return buf;
}

/* A token's vocab text, escaped for one line, into buf. */
static const char *token_text(const fg_tokenizer *t, int32_t id, char *buf, size_t cap)
{
    if (id < 0) return "";
    size_t len;
    const char *s = fg_tok_text(t, id, &len);
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') o += (size_t)snprintf(buf + o, cap - o, "\\n");
        else if (c < 0x20) o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        else buf[o++] = (char)c;
    }
    buf[o] = 0;
    return buf;
}

typedef struct type_stat {
    uint64_t count, bytes, elems;
} type_stat;

int fg_cli_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *path = NULL;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': path = optarg; break;
        case 'j': json = true; break;
        case 'h': help(); return 0;
        default: return fg_cli_usage_error("info", "unknown option");
        }
    }
    if (optind < argc) {
        if (path || optind + 1 < argc) return fg_cli_usage_error("info", "give one model");
        path = argv[optind];
    }
    if (!path) path = fg_cli_default_model();

    fg_gguf *g;
    fg_status st = fg_gguf_open(path, &g);
    if (st != FG_OK) return fg_cli_fail(st);

    int rc = 0;
    char buf[512], buf2[64];
    fg_hparams hp;
    fg_status hp_st = fg_hparams_read(g, &hp);
    char hp_err[1024] = "";
    if (hp_st != FG_OK) {
        snprintf(hp_err, sizeof hp_err, "%s", fg_last_error());
        rc = 1;
    }
    fg_tokenizer *tok = NULL;
    char tok_err[1024] = "";
    fg_status tok_st = FG_OK;
    if (fg_gguf_find(g, "tokenizer.ggml.model")) {
        tok_st = fg_tok_load(g, &tok);
        if (tok_st != FG_OK) {
            snprintf(tok_err, sizeof tok_err, "%s", fg_last_error());
            rc = 1;
        }
    }

    type_stat stats[FG_TYPE_COUNT] = {{0}};
    uint64_t total_bytes = 0, total_elems = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fg_gguf_tensor *t = &g->tensors[i];
        stats[t->type].count++;
        stats[t->type].bytes += t->nbytes;
        stats[t->type].elems += t->n_elems;
        total_bytes += t->nbytes;
        total_elems += t->n_elems;
    }
    int64_t ftype = -1;
    fg_gguf_get_int(g, "general.file_type", &ftype);

    /* The chat template forge will use, and how it was chosen. */
    fg_chat_tmpl tmpl;
    const char *how = NULL, *tmpl_name = NULL;
    bool has_src = fg_gguf_find(g, "tokenizer.chat_template") != NULL;
    if (tok && fg_model_chat_template(g, tok, NULL, &tmpl, &how) == FG_OK) tmpl_name = fg_chat_name(tmpl.kind);

    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", path);
        cJSON_AddNumberToObject(o, "file_size", (double)g->size);
        cJSON_AddNumberToObject(o, "gguf_version", g->version);
        cJSON_AddNumberToObject(o, "n_kv", (double)g->n_kv);
        cJSON_AddNumberToObject(o, "alignment", g->alignment);
        if (meta_str(g, "general.name", buf, sizeof buf)) cJSON_AddStringToObject(o, "name", buf);
        if (meta_str(g, "general.architecture", buf, sizeof buf)) cJSON_AddStringToObject(o, "architecture", buf);
        if (ftype >= 0) cJSON_AddStringToObject(o, "file_type", ftype_name(ftype));
        if (hp_st == FG_OK) {
            cJSON *h = cJSON_AddObjectToObject(o, "hparams");
            cJSON_AddNumberToObject(h, "n_layer", (double)hp.n_layer);
            cJSON_AddNumberToObject(h, "n_embd", (double)hp.n_embd);
            cJSON_AddNumberToObject(h, "n_head", (double)hp.n_head);
            cJSON_AddNumberToObject(h, "n_head_kv", (double)hp.n_head_kv);
            cJSON_AddNumberToObject(h, "head_dim_k", (double)hp.head_dim_k);
            cJSON_AddNumberToObject(h, "head_dim_v", (double)hp.head_dim_v);
            cJSON_AddNumberToObject(h, "n_ff", (double)hp.n_ff);
            cJSON_AddNumberToObject(h, "n_ctx_train", (double)hp.n_ctx_train);
            cJSON_AddNumberToObject(h, "n_rot", (double)hp.n_rot);
            cJSON_AddNumberToObject(h, "rope_base", hp.rope_base);
            cJSON_AddNumberToObject(h, "norm_eps", hp.norm_eps);
            cJSON_AddNumberToObject(h, "sliding_window", (double)hp.sliding_window);
        } else {
            cJSON_AddStringToObject(o, "hparams_error", hp_err);
        }
        cJSON_AddNumberToObject(o, "n_params", (double)total_elems);
        cJSON_AddNumberToObject(o, "n_tensors", (double)g->n_tensors);
        cJSON_AddNumberToObject(o, "tensor_bytes", (double)total_bytes);
        cJSON *by = cJSON_AddObjectToObject(o, "tensors_by_type");
        for (int t = 0; t < FG_TYPE_COUNT; t++) {
            if (!stats[t].count) continue;
            cJSON *e = cJSON_AddObjectToObject(by, fg_type_name((uint32_t)t));
            cJSON_AddNumberToObject(e, "count", (double)stats[t].count);
            cJSON_AddNumberToObject(e, "bytes", (double)stats[t].bytes);
            cJSON_AddNumberToObject(e, "elements", (double)stats[t].elems);
        }
        if (tok) {
            cJSON *v = cJSON_AddObjectToObject(o, "vocab");
            cJSON_AddStringToObject(v, "model", fg_tok_model_name(tok));
            cJSON_AddStringToObject(v, "pre", fg_tok_pre_name(tok));
            cJSON_AddNumberToObject(v, "size", fg_tok_n_vocab(tok));
            cJSON_AddBoolToObject(v, "add_bos", fg_tok_add_bos(tok));
            cJSON_AddBoolToObject(v, "add_eos", fg_tok_add_eos(tok));
            const struct { const char *n; int32_t id; } sp[] = {
                {"bos", fg_tok_bos(tok)}, {"eos", fg_tok_eos(tok)}, {"eot", fg_tok_eot(tok)},
                {"unk", fg_tok_unk(tok)}, {"pad", fg_tok_pad(tok)},
            };
            cJSON *s = cJSON_AddObjectToObject(v, "special");
            for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
                if (sp[i].id < 0) continue;
                cJSON *e = cJSON_AddObjectToObject(s, sp[i].n);
                cJSON_AddNumberToObject(e, "id", sp[i].id);
                cJSON_AddStringToObject(e, "text", token_text(tok, sp[i].id, buf, sizeof buf));
            }
        } else if (tok_st != FG_OK) {
            cJSON_AddStringToObject(o, "vocab_error", tok_err);
        }
        if (tmpl_name) {
            cJSON_AddStringToObject(o, "chat_template", tmpl_name);
            cJSON_AddStringToObject(o, "chat_template_from", how);
        }
        cJSON_AddBoolToObject(o, "has_chat_template", has_src);
        char *s = cJSON_Print(o);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
        human_bytes((double)g->size, buf2, sizeof buf2);
        printf("file:            %s\n", path);
        printf("size:            %s (%llu bytes), GGUF v%u, %llu metadata keys, alignment %u\n", buf2,
               (unsigned long long)g->size, g->version, (unsigned long long)g->n_kv, g->alignment);
        if (meta_str(g, "general.name", buf, sizeof buf)) printf("name:            %s\n", buf);
        if (meta_str(g, "general.architecture", buf, sizeof buf)) printf("architecture:    %s\n", buf);
        if (ftype >= 0) printf("file type:       %s\n", ftype_name(ftype));
        if (hp_st == FG_OK) {
            printf("hyperparameters:\n");
            printf("  n_layer        %lld\n", (long long)hp.n_layer);
            printf("  n_embd         %lld\n", (long long)hp.n_embd);
            printf("  n_head         %lld\n", (long long)hp.n_head);
            printf("  n_head_kv      %lld  (%s, group size %lld)\n", (long long)hp.n_head_kv,
                   hp.n_head_kv == hp.n_head ? "MHA" : hp.n_head_kv == 1 ? "MQA" : "GQA",
                   (long long)(hp.n_head / hp.n_head_kv));
            printf("  head_dim       %lld (k), %lld (v)\n", (long long)hp.head_dim_k, (long long)hp.head_dim_v);
            if (hp.n_ff >= 0) printf("  n_ff           %lld\n", (long long)hp.n_ff);
            if (hp.n_ctx_train >= 0) printf("  n_ctx_train    %lld\n", (long long)hp.n_ctx_train);
            printf("  rope           base %g, %lld of %lld dims\n", hp.rope_base, (long long)hp.n_rot,
                   (long long)hp.head_dim_k);
            printf("  norm_eps       %g\n", hp.norm_eps);
            if (hp.sliding_window >= 0) printf("  sliding_window %lld\n", (long long)hp.sliding_window);
        } else {
            printf("hyperparameters: error: %s\n", hp_err);
        }
        printf("parameters:      %.2f M\n", (double)total_elems / 1e6);
        human_bytes((double)total_bytes, buf2, sizeof buf2);
        printf("tensors:         %llu, %s\n", (unsigned long long)g->n_tensors, buf2);
        for (int t = 0; t < FG_TYPE_COUNT; t++) {
            if (!stats[t].count) continue;
            human_bytes((double)stats[t].bytes, buf2, sizeof buf2);
            printf("  %-8s %5llu tensors  %12s  %.3f bits/weight\n", fg_type_name((uint32_t)t),
                   (unsigned long long)stats[t].count, buf2,
                   stats[t].elems ? 8.0 * (double)stats[t].bytes / (double)stats[t].elems : 0.0);
        }
        if (tok) {
            printf("vocab:           %d tokens, %s (%s), pre-tokenizer %s\n", fg_tok_n_vocab(tok),
                   fg_tok_model_name(tok),
                   fg_tok_kind(tok) == FG_VOCAB_BPE ? "byte-level BPE" : "SentencePiece BPE",
                   fg_tok_pre_name(tok));
            printf("special tokens: ");
            const struct { const char *n; int32_t id; } sp[] = {
                {"bos", fg_tok_bos(tok)}, {"eos", fg_tok_eos(tok)}, {"eot", fg_tok_eot(tok)},
                {"unk", fg_tok_unk(tok)}, {"pad", fg_tok_pad(tok)},
            };
            for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
                if (sp[i].id >= 0) printf(" %s %d '%s'", sp[i].n, sp[i].id, token_text(tok, sp[i].id, buf, sizeof buf));
            }
            printf("\n                 add_bos %s, add_eos %s\n", fg_tok_add_bos(tok) ? "yes" : "no",
                   fg_tok_add_eos(tok) ? "yes" : "no");
        } else if (tok_st != FG_OK) {
            printf("vocab:           error: %s\n", tok_err);
        } else {
            printf("vocab:           none (no tokenizer.ggml.model)\n");
        }
        if (tmpl_name) {
            const char *why = strcmp(how, "template") == 0 ? "detected from tokenizer.chat_template"
                              : strcmp(how, "arch") == 0
                                  ? (has_src ? "template not recognized; chosen by architecture"
                                             : "none in the file; chosen by architecture")
                                  : (has_src ? "template not recognized; ChatML fallback, override with --chat-template"
                                             : "none in the file; ChatML fallback, override with --chat-template");
            printf("chat template:   %s (%s)\n", tmpl_name, why);
        } else {
            printf("chat template:   none (no vocabulary)\n");
        }
    }
    if (hp_st != FG_OK) fprintf(stderr, "forge: error: %s\n", hp_err);
    if (tok_st != FG_OK) fprintf(stderr, "forge: error: %s\n", tok_err);
    fg_tok_free(tok);
    fg_gguf_close(g);
    return rc;
}
