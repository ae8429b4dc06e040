/*
 * fuzz_vocab.c — libFuzzer target for the tokenizer loader.
 *
 * Each input is a GGUF image. When the reader accepts it and fg_tok_load
 * builds a tokenizer from its metadata (seeds: the files in tests/data/vocab), the
 * tokenizer encodes and streams back a few fixed strings and the input's last
 * bytes, so corrupt vocabularies (bad ids, odd merges, byte tokens missing)
 * are exercised end to end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

static void roundtrip(const fg_tokenizer *tok, const char *text, size_t len)
{
    fg_tokens ids = {0};
    if (fg_tok_encode(tok, text, len, true, true, &ids) == FG_OK) {
        fg_detok d;
        char *out = NULL;
        size_t out_len = 0, out_cap = 0;
        fg_detok_init(&d, tok, true);
        for (size_t i = 0; i < ids.n; i++) fg_detok_push(&d, ids.ids[i], &out, &out_len, &out_cap);
        fg_detok_flush(&d, &out, &out_len, &out_cap);
        free(out);
        char *whole = NULL;
        if (fg_tok_decode(tok, ids.ids, ids.n, false, &whole) == FG_OK) free(whole);
    }
    fg_tokens_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    fg_gguf *g;
    if (fg_gguf_open_memory(buf, size, "fuzz", &g) == FG_OK) {
        fg_tokenizer *tok;
        if (fg_tok_load(g, &tok) == FG_OK) {
            static const char *const texts[] = {"", "hello world", " <|im_start|>user\n\u00e9\u4e16\U0001F600",
                                                "<s>a</s>  \t\n 12345"};
            for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) roundtrip(tok, texts[i], strlen(texts[i]));
            size_t tail = size < 256 ? size : 256;
            roundtrip(tok, (const char *)buf + size - tail, tail);
            for (int32_t id = -1; id <= fg_tok_n_vocab(tok); id += 97) {
                char piece[64];
                fg_tok_token_bytes(tok, id, true, piece, sizeof piece);
            }
            fg_tok_free(tok);
        }
        fg_gguf_close(g);
    }
    free(buf);
    return 0;
}
