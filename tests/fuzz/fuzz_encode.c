/*
 * fuzz_encode.c — libFuzzer target for encoding arbitrary text.
 *
 * Loads the committed synthetic vocabularies (tests/data/vocab: one byte-level
 * BPE, one SentencePiece) and, if $FORGE_FUZZ_MODEL names a model file, its
 * vocabulary too, once. Each input's first byte picks the vocabulary and the
 * flags; the rest is the text, any bytes at all. Encoding must succeed or fail
 * cleanly, and the streamed decode must equal the whole decode.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

static fg_tokenizer *vocabs[3];
static int n_vocabs;

static void load(const char *path)
{
    fg_gguf *g;
    if (fg_gguf_open(path, &g) != FG_OK || fg_tok_load(g, &vocabs[n_vocabs]) != FG_OK) {
        fprintf(stderr, "fuzz_encode: cannot load %s: %s\n", path, fg_last_error());
        abort();
    }
    n_vocabs++;
    fg_gguf_close(g);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    load("tests/data/vocab/tok_bpe.gguf");
    load("tests/data/vocab/tok_spm.gguf");
    const char *m = getenv("FORGE_FUZZ_MODEL");
    if (m && *m) load(m);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const fg_tokenizer *tok = vocabs[data[0] % n_vocabs];
    bool add_special = data[0] & 0x10, parse_special = data[0] & 0x20;
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    fg_tokens ids = {0};
    if (fg_tok_encode(tok, text, size - 1, add_special, parse_special, &ids) == FG_OK) {
        for (size_t i = 0; i < ids.n; i++) {
            if (ids.ids[i] < 0 || ids.ids[i] >= fg_tok_n_vocab(tok)) abort();
        }
        fg_detok d;
        char *out = NULL, *whole = NULL;
        size_t out_len = 0, out_cap = 0, whole_len = 0;
        fg_detok_init(&d, tok, true);
        for (size_t i = 0; i < ids.n; i++) fg_detok_push(&d, ids.ids[i], &out, &out_len, &out_cap);
        fg_detok_flush(&d, &out, &out_len, &out_cap);
        if (fg_tok_decode_len(tok, ids.ids, ids.n, true, &whole, &whole_len) == FG_OK) {
            if (whole_len != out_len || (out_len && memcmp(whole, out, out_len) != 0)) abort();
            free(whole);
        }
        free(out);
    }
    fg_tokens_free(&ids);
    free(text);
    return 0;
}
