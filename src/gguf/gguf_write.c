/*
 * gguf_write.c — the GGUF writer, for tests and `forge quantize`.
 *
 * Metadata values are serialized into their on-disk bytes as they are set, so
 * writing is a straight copy: header, key/values in the order first set,
 * tensor infos, padding, then each tensor's data padded to the alignment.
 * The writer owns copies of keys, names and values; tensor data is borrowed
 * until fg_gguf_writer_write.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "gguf/gguf.h"

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
} wbuf;

typedef struct wkv {
    char *key;
    wbuf val; /* type id + value bytes */
} wkv;

typedef struct wtensor {
    char *name;
    fg_type type;
    uint32_t n_dims;
    int64_t ne[FG_GGUF_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
} wtensor;

struct fg_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

static fg_status wb_put(wbuf *b, const void *src, size_t n)
{
    if (n > SIZE_MAX - b->n) return fg_err_set(FG_ERR_NOMEM, "gguf writer: value too large");
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap = cap > SIZE_MAX / 2 ? b->n + n : cap * 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) return fg_err_set(FG_ERR_NOMEM, "gguf writer: out of memory");
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
    return FG_OK;
}

static fg_status wb_le(wbuf *b, uint64_t v, int n)
{
    uint8_t tmp[8];
    for (int i = 0; i < n; i++) tmp[i] = (uint8_t)(v >> (8 * i));
    return wb_put(b, tmp, (size_t)n);
}

static fg_status wb_str(wbuf *b, const char *s, uint64_t len)
{
    FG_TRY(wb_le(b, len, 8));
    return wb_put(b, s, (size_t)len);
}

fg_gguf_writer *fg_gguf_writer_init(void)
{
    return calloc(1, sizeof(fg_gguf_writer));
}

void fg_gguf_writer_free(fg_gguf_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

/* Returns the slot for key, emptied, creating it at the end if new. */
static fg_status slot(fg_gguf_writer *w, const char *key, wbuf **out)
{
    if (!key || !*key) return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: empty key");
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            w->kv[i].val.n = 0;
            *out = &w->kv[i].val;
            return FG_OK;
        }
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *kv = realloc(w->kv, cap * sizeof *kv);
        if (!kv) return fg_err_set(FG_ERR_NOMEM, "gguf writer: out of memory");
        w->kv = kv;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) return fg_err_set(FG_ERR_NOMEM, "gguf writer: out of memory");
    w->kv[w->n_kv] = (wkv){.key = k};
    *out = &w->kv[w->n_kv++].val;
    return FG_OK;
}

static fg_status set_scalar(fg_gguf_writer *w, const char *key, fg_gguf_vtype t, uint64_t bits)
{
    wbuf *b;
    FG_TRY(slot(w, key, &b));
    FG_TRY(wb_le(b, t, 4));
    return wb_le(b, bits, (int)fg_gguf_vtype_size(t));
}

fg_status fg_gguf_writer_set_u32(fg_gguf_writer *w, const char *key, uint32_t v)
{
    return set_scalar(w, key, FG_GGUF_UINT32, v);
}

fg_status fg_gguf_writer_set_i32(fg_gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, FG_GGUF_INT32, (uint32_t)v);
}

fg_status fg_gguf_writer_set_u64(fg_gguf_writer *w, const char *key, uint64_t v)
{
    return set_scalar(w, key, FG_GGUF_UINT64, v);
}

fg_status fg_gguf_writer_set_f32(fg_gguf_writer *w, const char *key, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return set_scalar(w, key, FG_GGUF_FLOAT32, u);
}

fg_status fg_gguf_writer_set_bool(fg_gguf_writer *w, const char *key, bool v)
{
    return set_scalar(w, key, FG_GGUF_BOOL, v ? 1 : 0);
}

fg_status fg_gguf_writer_set_str(fg_gguf_writer *w, const char *key, const char *v)
{
    wbuf *b;
    FG_TRY(slot(w, key, &b));
    FG_TRY(wb_le(b, FG_GGUF_STRING, 4));
    return wb_str(b, v, strlen(v));
}

fg_status fg_gguf_writer_set_arr(fg_gguf_writer *w, const char *key, fg_gguf_vtype elem,
                                 const void *data, uint64_t n)
{
    size_t es = fg_gguf_vtype_size(elem);
    if (es == 0) return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: key '%s': arrays of %s need their own setter", key, fg_gguf_vtype_name(elem));
    if (n > SIZE_MAX / es) return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: key '%s': array too long", key);
    wbuf *b;
    FG_TRY(slot(w, key, &b));
    FG_TRY(wb_le(b, FG_GGUF_ARRAY, 4));
    FG_TRY(wb_le(b, elem, 4));
    FG_TRY(wb_le(b, n, 8));
    /* Elements are written little-endian from host order; forge targets
     * little-endian hosts only, so this is a copy. */
    return wb_put(b, data, (size_t)(n * es));
}

fg_status fg_gguf_writer_set_arr_str(fg_gguf_writer *w, const char *key,
                                     const char *const *strs, uint64_t n)
{
    wbuf *b;
    FG_TRY(slot(w, key, &b));
    FG_TRY(wb_le(b, FG_GGUF_ARRAY, 4));
    FG_TRY(wb_le(b, FG_GGUF_STRING, 4));
    FG_TRY(wb_le(b, n, 8));
    for (uint64_t i = 0; i < n; i++) FG_TRY(wb_str(b, strs[i], strlen(strs[i])));
    return FG_OK;
}

/* Serializes a parsed value's payload (without its type id). */
static fg_status put_value(wbuf *b, const fg_gguf_value *v)
{
    switch (v->type) {
    case FG_GGUF_UINT8: case FG_GGUF_UINT16: case FG_GGUF_UINT32: case FG_GGUF_UINT64:
        return wb_le(b, v->v.u, (int)fg_gguf_vtype_size(v->type));
    case FG_GGUF_INT8: case FG_GGUF_INT16: case FG_GGUF_INT32: case FG_GGUF_INT64:
        return wb_le(b, (uint64_t)v->v.i, (int)fg_gguf_vtype_size(v->type));
    case FG_GGUF_FLOAT32: {
        float f = (float)v->v.f;
        uint32_t u;
        memcpy(&u, &f, 4);
        return wb_le(b, u, 4);
    }
    case FG_GGUF_FLOAT64: {
        uint64_t u;
        memcpy(&u, &v->v.f, 8);
        return wb_le(b, u, 8);
    }
    case FG_GGUF_BOOL:
        return wb_le(b, v->v.b ? 1 : 0, 1);
    case FG_GGUF_STRING:
        return wb_str(b, v->v.str.ptr, v->v.str.len);
    case FG_GGUF_ARRAY: {
        FG_TRY(wb_le(b, v->v.arr.elem, 4));
        FG_TRY(wb_le(b, v->v.arr.n, 8));
        if (v->v.arr.elem == FG_GGUF_STRING) {
            for (uint64_t i = 0; i < v->v.arr.n; i++)
                FG_TRY(wb_str(b, v->v.arr.strs[i].ptr, v->v.arr.strs[i].len));
        } else if (v->v.arr.elem == FG_GGUF_ARRAY) {
            for (uint64_t i = 0; i < v->v.arr.n; i++) FG_TRY(put_value(b, &v->v.arr.items[i]));
        } else {
            FG_TRY(wb_put(b, v->v.arr.data, (size_t)(v->v.arr.n * fg_gguf_vtype_size(v->v.arr.elem))));
        }
        return FG_OK;
    }
    case FG_GGUF_VTYPE_COUNT:
        break;
    }
    return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: value of unknown type %d", (int)v->type);
}

fg_status fg_gguf_writer_set_value(fg_gguf_writer *w, const char *key, const fg_gguf_value *v)
{
    wbuf *b;
    FG_TRY(slot(w, key, &b));
    FG_TRY(wb_le(b, v->type, 4));
    return put_value(b, v);
}

fg_status fg_gguf_writer_add_tensor(fg_gguf_writer *w, const char *name, fg_type type,
                                    uint32_t n_dims, const int64_t *ne, const void *data)
{
    const fg_type_info *ti = fg_type_get((uint32_t)type);
    if (!ti) return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: tensor '%s': unknown type %d", name, (int)type);
    if (n_dims < 1 || n_dims > FG_GGUF_MAX_DIMS)
        return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: tensor '%s': %u dims", name, n_dims);
    if (ne[0] % ti->block_size != 0)
        return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: tensor '%s': row of %lld is not a multiple of the %s block size %u",
                          name, (long long)ne[0], ti->name, ti->block_size);
    for (size_t i = 0; i < w->n_t; i++) {
        if (strcmp(w->t[i].name, name) == 0)
            return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: duplicate tensor '%s'", name);
    }
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t) return fg_err_set(FG_ERR_NOMEM, "gguf writer: out of memory");
        w->t = t;
        w->cap_t = cap;
    }
    wtensor t = {.type = type, .n_dims = n_dims, .data = data};
    uint64_t n = 1;
    for (uint32_t d = 0; d < FG_GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        if (t.ne[d] < 0) return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: tensor '%s': negative dim", name);
        n *= (uint64_t)t.ne[d];
    }
    t.nbytes = n / ti->block_size * ti->type_size;
    t.name = strdup(name);
    if (!t.name) return fg_err_set(FG_ERR_NOMEM, "gguf writer: out of memory");
    w->t[w->n_t++] = t;
    return FG_OK;
}

static uint64_t pad_to(uint64_t x, uint64_t a)
{
    return (a - x % a) % a;
}

fg_status fg_gguf_writer_write(fg_gguf_writer *w, const char *path, uint32_t alignment)
{
    return fg_gguf_writer_write_with(w, path, alignment, NULL, NULL);
}

fg_status fg_gguf_writer_write_with(fg_gguf_writer *w, const char *path, uint32_t alignment,
                                    fg_gguf_tensor_data_fn data_fn, void *ctx)
{
    if (alignment == 0 || (alignment & (alignment - 1)))
        return fg_err_set(FG_ERR_INVALID_ARG, "gguf writer: alignment %u is not a power of two", alignment);
    if (alignment != FG_GGUF_DEFAULT_ALIGNMENT)
        FG_TRY(fg_gguf_writer_set_u32(w, "general.alignment", alignment));

    wbuf head = {0};
    fg_status st = FG_OK;
#define PUT(x)                          \
    do {                                \
        if ((st = (x)) != FG_OK) goto out; \
    } while (0)
    PUT(wb_le(&head, FG_GGUF_MAGIC, 4));
    PUT(wb_le(&head, 3, 4));
    PUT(wb_le(&head, w->n_t, 8));
    PUT(wb_le(&head, w->n_kv, 8));
    for (size_t i = 0; i < w->n_kv; i++) {
        PUT(wb_str(&head, w->kv[i].key, strlen(w->kv[i].key)));
        PUT(wb_put(&head, w->kv[i].val.p, w->kv[i].val.n));
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        PUT(wb_str(&head, t->name, strlen(t->name)));
        PUT(wb_le(&head, t->n_dims, 4));
        for (uint32_t d = 0; d < t->n_dims; d++) PUT(wb_le(&head, (uint64_t)t->ne[d], 8));
        PUT(wb_le(&head, (uint64_t)t->type, 4));
        PUT(wb_le(&head, off, 8));
        off += t->nbytes + pad_to(t->nbytes, alignment);
    }
    static const uint8_t zeros[64];
    uint64_t pad = w->n_t ? pad_to(head.n, alignment) : 0;
    while (pad) {
        uint64_t k = pad < sizeof zeros ? pad : sizeof zeros;
        PUT(wb_put(&head, zeros, (size_t)k));
        pad -= k;
    }

    FILE *f = fopen(path, "wb");
    if (!f) {
        st = fg_err_set(FG_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    bool ok = fwrite(head.p, 1, head.n, f) == head.n;
    for (size_t i = 0; ok && i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        const void *data = t->data;
        if (data_fn && (st = data_fn(ctx, i, &data)) != FG_OK) {
            fclose(f);
            goto out;
        }
        ok = fwrite(data, 1, (size_t)t->nbytes, f) == t->nbytes;
        for (uint64_t p = pad_to(t->nbytes, alignment); ok && p;) {
            uint64_t k = p < sizeof zeros ? p : sizeof zeros;
            ok = fwrite(zeros, 1, (size_t)k, f) == k;
            p -= k;
        }
    }
    if (fclose(f) != 0) ok = false;
    if (!ok) st = fg_err_set(FG_ERR_IO, "%s: write failed: %s", path, strerror(errno));
#undef PUT
out:
    free(head.p);
    return st;
}
