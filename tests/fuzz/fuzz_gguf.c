/*
 * fuzz_gguf.c — libFuzzer target for the GGUF reader.
 *
 * Feeds each input to fg_gguf_open_memory and, when it is accepted, touches
 * everything the reader hands out (every string, array element and the first
 * and last byte of every tensor), so an out-of-bounds view is caught by ASan
 * even if the parser itself never reads past the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"

static volatile uint64_t sink;

static void touch_value(const fg_gguf_value *v)
{
    if (v->type == FG_GGUF_STRING) {
        if (v->v.str.len) sink += (uint8_t)v->v.str.ptr[0] + (uint8_t)v->v.str.ptr[v->v.str.len - 1];
        return;
    }
    if (v->type != FG_GGUF_ARRAY) return;
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        if (v->v.arr.elem == FG_GGUF_STRING) {
            fg_gguf_value s = {.type = FG_GGUF_STRING, .v.str = v->v.arr.strs[i]};
            touch_value(&s);
        } else if (v->v.arr.elem == FG_GGUF_ARRAY) {
            touch_value(&v->v.arr.items[i]);
        } else {
            sink += (uint64_t)fg_gguf_arr_int(v, i);
            double d = fg_gguf_arr_float(v, i);
            uint64_t bits;
            memcpy(&bits, &d, sizeof bits);
            sink += bits;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, exactly size bytes, so ASan sees any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    fg_gguf *g;
    if (fg_gguf_open_memory(buf, size, "fuzz", &g) == FG_OK) {
        for (uint64_t i = 0; i < g->n_kv; i++) touch_value(&g->kv[i].val);
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const fg_gguf_tensor *t = &g->tensors[i];
            const uint8_t *p = t->data;
            if (t->nbytes) sink += p[0] + p[t->nbytes - 1];
            char name[64];
            size_t n = t->name.len < sizeof name - 1 ? t->name.len : sizeof name - 1;
            memcpy(name, t->name.ptr, n);
            name[n] = 0;
            sink += fg_gguf_find_tensor(g, name) != NULL;
        }
        int64_t iv;
        double dv;
        fg_gguf_get_int(g, "general.alignment", &iv);
        fg_gguf_get_float(g, "llama.rope.freq_base", &dv);
        fg_gguf_close(g);
    }
    free(buf);
    return 0;
}
