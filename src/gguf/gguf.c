/*
 * gguf.c — the GGUF reader and strict validator.
 *
 * A GGUF file is: header (magic, version, tensor count, kv count), the metadata
 * key/values, the tensor infos (name, dims, type, offset), padding to
 * general.alignment, then the tensor data. Every count, length and offset in
 * it is untrusted: each read goes through a cursor that checks the bytes are
 * there, every size is computed with overflow checks, and every count is
 * bounded by the bytes left before anything is allocated for it. Errors name
 * the file, the field and its byte offset, and say what is wrong.
 *
 * The fg_gguf owns the mapping (or borrows a caller's buffer) and one list of
 * heap blocks (the parsed arrays and tables), freed together by fg_gguf_close.
 */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/utf8.h"

/* Nested arrays deeper than this are rejected: no real file needs more, and
 * the parser recurses once per level. */
enum { FG_GGUF_MAX_DEPTH = 8 };

/* ---- Heap blocks owned by one fg_gguf -------------------------------------- */

typedef struct fg_block {
    struct fg_block *next;
    max_align_t data[];
} fg_block;

static void *gguf_alloc(fg_gguf *g, size_t size)
{
    if (size > SIZE_MAX - sizeof(fg_block)) return NULL;
    fg_block *b = malloc(sizeof(fg_block) + (size ? size : 1));
    if (!b) return NULL;
    b->next = g->arena_;
    g->arena_ = b;
    return b->data;
}

static void gguf_free_blocks(fg_gguf *g)
{
    fg_block *b = g->arena_;
    while (b) {
        fg_block *next = b->next;
        free(b);
        b = next;
    }
    g->arena_ = NULL;
}

/* ---- The cursor: every read is bounds-checked ------------------------------ */

typedef struct cursor {
    fg_gguf *g;
    uint64_t off;
} cursor;

static uint64_t cur_left(const cursor *c)
{
    return c->g->size - c->off;
}

static fg_status cur_truncated(const cursor *c, uint64_t need, const char *what)
{
    return fg_err_set(FG_ERR_FORMAT,
                      "%s: %s at byte %llu: needs %llu bytes but the file ends at byte %llu; "
                      "the file is truncated or corrupt",
                      c->g->path, what, (unsigned long long)c->off, (unsigned long long)need,
                      (unsigned long long)c->g->size);
}

static fg_status cur_bytes(cursor *c, uint64_t n, const char *what, const uint8_t **out)
{
    if (n > cur_left(c)) return cur_truncated(c, n, what);
    *out = c->g->map + c->off;
    c->off += n;
    return FG_OK;
}

static uint64_t load_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static fg_status cur_u32(cursor *c, const char *what, uint32_t *out)
{
    const uint8_t *p;
    FG_TRY(cur_bytes(c, 4, what, &p));
    *out = (uint32_t)load_le(p, 4);
    return FG_OK;
}

static fg_status cur_u64(cursor *c, const char *what, uint64_t *out)
{
    const uint8_t *p;
    FG_TRY(cur_bytes(c, 8, what, &p));
    *out = load_le(p, 8);
    return FG_OK;
}

/* Reads a string: u64 length then that many bytes, which must be valid UTF-8. */
static fg_status cur_str(cursor *c, const char *what, fg_gguf_str *out)
{
    uint64_t at = c->off, len;
    FG_TRY(cur_u64(c, what, &len));
    if (len > cur_left(c)) {
        c->off = at;
        return fg_err_set(FG_ERR_FORMAT,
                          "%s: %s at byte %llu: string length %llu runs past the end of the file "
                          "(%llu bytes left); the file is truncated or corrupt",
                          c->g->path, what, (unsigned long long)at, (unsigned long long)len,
                          (unsigned long long)cur_left(c));
    }
    const uint8_t *p;
    FG_TRY(cur_bytes(c, len, what, &p));
    size_t bad;
    if (!fg_utf8_valid(p, len, &bad)) {
        return fg_err_set(FG_ERR_FORMAT, "%s: %s at byte %llu: string is not valid UTF-8 (bad byte 0x%02x at byte %llu)",
                          c->g->path, what, (unsigned long long)at, p[bad],
                          (unsigned long long)(at + 8 + bad));
    }
    out->ptr = (const char *)p;
    out->len = len;
    return FG_OK;
}

/* ---- Small utilities ------------------------------------------------------- */

static const char *const vtype_names[FG_GGUF_VTYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool",  "string", "array", "uint64", "int64", "float64",
};

static const uint8_t vtype_sizes[FG_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *fg_gguf_vtype_name(fg_gguf_vtype t)
{
    return (unsigned)t < FG_GGUF_VTYPE_COUNT ? vtype_names[t] : "?";
}

size_t fg_gguf_vtype_size(fg_gguf_vtype t)
{
    return (unsigned)t < FG_GGUF_VTYPE_COUNT ? vtype_sizes[t] : 0;
}

bool fg_gguf_str_eq(fg_gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

static uint64_t hash_bytes(const char *p, uint64_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

/* A printable, bounded rendering of a name for messages (names are valid UTF-8
 * but may be long). */
static const char *name_for_msg(fg_gguf_str s, char *buf, size_t cap)
{
    size_t n = s.len < cap - 4 ? (size_t)s.len : cap - 4;
    /* Do not cut a character in half. */
    n = fg_utf8_complete_prefix((const uint8_t *)s.ptr, n);
    memcpy(buf, s.ptr, n);
    strcpy(buf + n, n < s.len ? "..." : "");
    return buf;
}

/* Open-addressed index from names to entry numbers: the table holds i+1 (0 is
 * empty). Used to catch duplicate keys and tensor names, and for tensor lookup. */
static uint64_t *index_build(fg_gguf *g, uint64_t n, uint64_t *cap_out)
{
    uint64_t cap = 16;
    while (cap < n * 2) cap *= 2;
    uint64_t *t = gguf_alloc(g, cap * sizeof *t);
    if (t) memset(t, 0, cap * sizeof *t);
    *cap_out = cap;
    return t;
}

/* Inserts entry i named s; returns the earlier entry with that name + 1, or 0. */
static uint64_t index_insert(uint64_t *t, uint64_t cap, fg_gguf_str s, uint64_t i,
                             const fg_gguf_str *(*name_of)(const fg_gguf *, uint64_t),
                             const fg_gguf *g)
{
    uint64_t h = hash_bytes(s.ptr, s.len) & (cap - 1);
    while (t[h]) {
        const fg_gguf_str *o = name_of(g, t[h] - 1);
        if (o->len == s.len && memcmp(o->ptr, s.ptr, s.len) == 0) return t[h];
        h = (h + 1) & (cap - 1);
    }
    t[h] = i + 1;
    return 0;
}

static const fg_gguf_str *kv_name(const fg_gguf *g, uint64_t i)
{
    return &g->kv[i].key;
}

static const fg_gguf_str *tensor_name(const fg_gguf *g, uint64_t i)
{
    return &g->tensors[i].name;
}

/* ---- Metadata values --------------------------------------------------------- */

static fg_status parse_value(cursor *c, fg_gguf_vtype type, fg_gguf_value *out, const char *key,
                             int depth);

static fg_status check_vtype(cursor *c, uint32_t t, uint64_t at, const char *key, const char *what)
{
    if (t >= FG_GGUF_VTYPE_COUNT) {
        return fg_err_set(FG_ERR_FORMAT,
                          "%s: key '%s' at byte %llu: unknown %s %u (valid types are 0..12); "
                          "the file is corrupt or from a newer GGUF version",
                          c->g->path, key, (unsigned long long)at, what, t);
    }
    return FG_OK;
}

static fg_status parse_array(cursor *c, fg_gguf_value *out, const char *key, int depth)
{
    uint64_t at = c->off;
    uint32_t et;
    uint64_t n;
    FG_TRY(cur_u32(c, "array element type", &et));
    FG_TRY(check_vtype(c, et, at, key, "array element type"));
    FG_TRY(cur_u64(c, "array length", &n));
    if (et == FG_GGUF_ARRAY && depth + 1 >= FG_GGUF_MAX_DEPTH) {
        return fg_err_set(FG_ERR_FORMAT, "%s: key '%s' at byte %llu: arrays nested deeper than %d levels",
                          c->g->path, key, (unsigned long long)at, FG_GGUF_MAX_DEPTH);
    }
    /* Every element takes at least this many bytes, which bounds n by the bytes
     * left before anything is allocated for it. */
    uint64_t min_elem = et == FG_GGUF_STRING ? 8 : et == FG_GGUF_ARRAY ? 12 : vtype_sizes[et];
    if (n > cur_left(c) / min_elem) {
        return fg_err_set(FG_ERR_FORMAT,
                          "%s: key '%s' at byte %llu: array of %llu %s elements does not fit in the "
                          "%llu bytes left in the file; the file is truncated or corrupt",
                          c->g->path, key, (unsigned long long)at, (unsigned long long)n,
                          fg_gguf_vtype_name(et), (unsigned long long)cur_left(c));
    }
    out->type = FG_GGUF_ARRAY;
    out->v.arr.elem = (fg_gguf_vtype)et;
    out->v.arr.n = n;
    out->v.arr.data = NULL;
    out->v.arr.strs = NULL;
    out->v.arr.items = NULL;
    if (et == FG_GGUF_STRING) {
        fg_gguf_str *s = gguf_alloc(c->g, n * sizeof *s);
        if (!s) return fg_err_set(FG_ERR_NOMEM, "%s: out of memory for array '%s'", c->g->path, key);
        for (uint64_t i = 0; i < n; i++) FG_TRY(cur_str(c, key, &s[i]));
        out->v.arr.strs = s;
    } else if (et == FG_GGUF_ARRAY) {
        fg_gguf_value *items = gguf_alloc(c->g, n * sizeof *items);
        if (!items) return fg_err_set(FG_ERR_NOMEM, "%s: out of memory for array '%s'", c->g->path, key);
        for (uint64_t i = 0; i < n; i++) FG_TRY(parse_array(c, &items[i], key, depth + 1));
        out->v.arr.items = items;
    } else {
        const uint8_t *p;
        FG_TRY(cur_bytes(c, n * min_elem, key, &p));
        if (et == FG_GGUF_BOOL) {
            for (uint64_t i = 0; i < n; i++) {
                if (p[i] > 1) {
                    return fg_err_set(FG_ERR_FORMAT, "%s: key '%s': bool array element %llu at byte %llu is %u, not 0 or 1",
                                      c->g->path, key, (unsigned long long)i,
                                      (unsigned long long)(p - c->g->map + i), p[i]);
                }
            }
        }
        out->v.arr.data = p;
    }
    return FG_OK;
}

static fg_status parse_value(cursor *c, fg_gguf_vtype type, fg_gguf_value *out, const char *key,
                             int depth)
{
    const uint8_t *p;
    uint64_t at = c->off;
    out->type = type;
    switch (type) {
    case FG_GGUF_UINT8:
    case FG_GGUF_UINT16:
    case FG_GGUF_UINT32:
    case FG_GGUF_UINT64:
        FG_TRY(cur_bytes(c, vtype_sizes[type], key, &p));
        out->v.u = load_le(p, vtype_sizes[type]);
        return FG_OK;
    case FG_GGUF_INT8:
    case FG_GGUF_INT16:
    case FG_GGUF_INT32:
    case FG_GGUF_INT64: {
        int n = vtype_sizes[type];
        FG_TRY(cur_bytes(c, (uint64_t)n, key, &p));
        uint64_t u = load_le(p, n);
        /* Sign-extend from n bytes. */
        if (n < 8 && (u >> (8 * n - 1)) & 1) u |= ~0ull << (8 * n);
        out->v.i = (int64_t)u;
        return FG_OK;
    }
    case FG_GGUF_FLOAT32: {
        FG_TRY(cur_bytes(c, 4, key, &p));
        uint32_t u = (uint32_t)load_le(p, 4);
        float f;
        memcpy(&f, &u, 4);
        out->v.f = f;
        return FG_OK;
    }
    case FG_GGUF_FLOAT64: {
        FG_TRY(cur_bytes(c, 8, key, &p));
        uint64_t u = load_le(p, 8);
        memcpy(&out->v.f, &u, 8);
        return FG_OK;
    }
    case FG_GGUF_BOOL:
        FG_TRY(cur_bytes(c, 1, key, &p));
        if (*p > 1) {
            return fg_err_set(FG_ERR_FORMAT, "%s: key '%s' at byte %llu: bool value is %u, not 0 or 1",
                              c->g->path, key, (unsigned long long)at, *p);
        }
        out->v.b = *p == 1;
        return FG_OK;
    case FG_GGUF_STRING:
        return cur_str(c, key, &out->v.str);
    case FG_GGUF_ARRAY:
        return parse_array(c, out, key, depth);
    case FG_GGUF_VTYPE_COUNT:
        break;
    }
    FG_ASSERT(0);
    return FG_ERR_FORMAT;
}

static fg_status parse_kvs(cursor *c)
{
    fg_gguf *g = c->g;
    /* A kv takes at least 8 (key length) + 4 (type) + 1 (smallest value) bytes. */
    if (g->n_kv > cur_left(c) / 13) {
        return fg_err_set(FG_ERR_FORMAT,
                          "%s: header at byte 16: metadata count %llu cannot fit in the %llu bytes "
                          "after the header; the file is truncated or corrupt",
                          g->path, (unsigned long long)g->n_kv, (unsigned long long)cur_left(c));
    }
    g->kv = gguf_alloc(g, g->n_kv * sizeof *g->kv);
    uint64_t cap;
    uint64_t *idx = index_build(g, g->n_kv, &cap);
    if (!g->kv || !idx) return fg_err_set(FG_ERR_NOMEM, "%s: out of memory for metadata", g->path);

    for (uint64_t i = 0; i < g->n_kv; i++) {
        fg_gguf_kv *kv = &g->kv[i];
        char what[64], key[160];
        kv->offset = c->off;
        snprintf(what, sizeof what, "key of metadata entry #%llu", (unsigned long long)i);
        FG_TRY(cur_str(c, what, &kv->key));
        name_for_msg(kv->key, key, sizeof key);
        if (kv->key.len == 0 || memchr(kv->key.ptr, 0, kv->key.len)) {
            return fg_err_set(FG_ERR_FORMAT, "%s: %s at byte %llu: key is empty or contains a NUL byte",
                              g->path, what, (unsigned long long)kv->offset);
        }
        uint64_t dup = index_insert(idx, cap, kv->key, i, kv_name, g);
        if (dup) {
            return fg_err_set(FG_ERR_FORMAT, "%s: key '%s' at byte %llu: duplicate of the key at byte %llu",
                              g->path, key, (unsigned long long)kv->offset,
                              (unsigned long long)g->kv[dup - 1].offset);
        }
        uint64_t tat = c->off;
        uint32_t t;
        FG_TRY(cur_u32(c, "value type", &t));
        FG_TRY(check_vtype(c, t, tat, key, "value type"));
        FG_TRY(parse_value(c, (fg_gguf_vtype)t, &kv->val, key, 0));
    }
    return FG_OK;
}

/* general.alignment, if present, must be a uint32 power of two. */
static fg_status read_alignment(fg_gguf *g)
{
    g->alignment = FG_GGUF_DEFAULT_ALIGNMENT;
    const fg_gguf_kv *kv = fg_gguf_find(g, "general.alignment");
    if (!kv) return FG_OK;
    if (kv->val.type != FG_GGUF_UINT32) {
        return fg_err_set(FG_ERR_FORMAT, "%s: key 'general.alignment' at byte %llu has type %s; it must be uint32",
                          g->path, (unsigned long long)kv->offset, fg_gguf_vtype_name(kv->val.type));
    }
    uint64_t a = kv->val.v.u;
    if (a == 0 || (a & (a - 1)) != 0) {
        return fg_err_set(FG_ERR_FORMAT, "%s: key 'general.alignment' at byte %llu is %llu; it must be a power of two",
                          g->path, (unsigned long long)kv->offset, (unsigned long long)a);
    }
    g->alignment = (uint32_t)a;
    return FG_OK;
}

/* ---- Tensor infos ------------------------------------------------------------ */

static fg_status parse_tensor_infos(cursor *c, uint64_t *info_offsets)
{
    fg_gguf *g = c->g;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        fg_gguf_tensor *t = &g->tensors[i];
        char what[64], name[160];
        uint64_t at = c->off;
        info_offsets[i] = at;
        snprintf(what, sizeof what, "name of tensor info #%llu", (unsigned long long)i);
        FG_TRY(cur_str(c, what, &t->name));
        name_for_msg(t->name, name, sizeof name);
        if (t->name.len == 0 || memchr(t->name.ptr, 0, t->name.len)) {
            return fg_err_set(FG_ERR_FORMAT, "%s: %s at byte %llu: name is empty or contains a NUL byte",
                              g->path, what, (unsigned long long)at);
        }
        uint64_t dat = c->off;
        FG_TRY(cur_u32(c, "tensor dimension count", &t->n_dims));
        if (t->n_dims < 1 || t->n_dims > FG_GGUF_MAX_DIMS) {
            return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s' at byte %llu: %u dimensions (must be 1..%d)",
                              g->path, name, (unsigned long long)dat, t->n_dims, FG_GGUF_MAX_DIMS);
        }
        uint64_t n_elems = 1;
        for (uint32_t d = 0; d < FG_GGUF_MAX_DIMS; d++) {
            uint64_t ne = 1;
            uint64_t neat = c->off;
            if (d < t->n_dims) FG_TRY(cur_u64(c, "tensor dimension", &ne));
            if (ne > (uint64_t)INT64_MAX || (ne && n_elems > (uint64_t)INT64_MAX / ne)) {
                return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s': dimension %u at byte %llu is %llu, so the element count overflows",
                                  g->path, name, d, (unsigned long long)neat, (unsigned long long)ne);
            }
            t->ne[d] = (int64_t)ne;
            n_elems *= ne;
        }
        t->n_elems = n_elems;
        uint64_t tat = c->off;
        uint32_t type;
        FG_TRY(cur_u32(c, "tensor type", &type));
        const fg_type_info *ti = fg_type_get(type);
        if (!ti) {
            return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s' at byte %llu: unknown tensor type id %u; "
                              "the file is corrupt or needs a newer forge",
                              g->path, name, (unsigned long long)tat, type);
        }
        t->type = (fg_type)type;
        if (t->ne[0] % ti->block_size != 0) {
            return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s': row length %lld is not a multiple of the %s block size %u",
                              g->path, name, (long long)t->ne[0], ti->name, ti->block_size);
        }
        /* nbytes = blocks * type_size, checked for overflow. */
        uint64_t blocks = n_elems / ti->block_size;
        if (blocks > UINT64_MAX / ti->type_size) {
            return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s': byte size overflows", g->path, name);
        }
        t->nbytes = blocks * ti->type_size;
        uint64_t oat = c->off;
        FG_TRY(cur_u64(c, "tensor data offset", &t->offset));
        if (t->offset % g->alignment != 0) {
            return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s' at byte %llu: data offset %llu is not a multiple of the alignment %u",
                              g->path, name, (unsigned long long)oat, (unsigned long long)t->offset,
                              g->alignment);
        }
    }
    return FG_OK;
}

static int cmp_by_offset(const void *a, const void *b, void *ctx)
{
    const fg_gguf_tensor *ts = ctx;
    uint64_t x = ts[*(const uint64_t *)a].offset, y = ts[*(const uint64_t *)b].offset;
    return x < y ? -1 : x > y;
}

/* A small merge sort with a context pointer (qsort_r is not C11). */
static void sort_idx(uint64_t *v, uint64_t *tmp, uint64_t n,
                     int (*cmp)(const void *, const void *, void *), void *ctx)
{
    if (n < 2) return;
    uint64_t h = n / 2;
    sort_idx(v, tmp, h, cmp, ctx);
    sort_idx(v + h, tmp, n - h, cmp, ctx);
    uint64_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = cmp(&v[j], &v[i], ctx) < 0 ? v[j++] : v[i++];
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

/* Places the data section and checks every tensor's bytes lie inside it,
 * without overlapping another's, and that names are unique. */
static fg_status check_tensor_data(fg_gguf *g, const uint64_t *info_offsets, uint64_t end_of_infos)
{
    uint64_t a = g->alignment;
    uint64_t data = end_of_infos + (a - end_of_infos % a) % a;
    if (g->n_tensors == 0) {
        g->data_offset = data < g->size ? data : g->size;
        return FG_OK;
    }
    if (data > g->size) {
        return fg_err_set(FG_ERR_FORMAT, "%s: tensor data section would start at byte %llu, past the end of the file (%llu bytes); the file is truncated",
                          g->path, (unsigned long long)data, (unsigned long long)g->size);
    }
    g->data_offset = data;
    uint64_t avail = g->size - data;

    uint64_t cap;
    g->tensor_hash_ = index_build(g, g->n_tensors, &cap);
    uint64_t *order = gguf_alloc(g, 2 * g->n_tensors * sizeof *order);
    if (!g->tensor_hash_ || !order) return fg_err_set(FG_ERR_NOMEM, "%s: out of memory for the tensor table", g->path);
    g->tensor_hash_cap_ = cap;

    char name[160], name2[160];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        fg_gguf_tensor *t = &g->tensors[i];
        name_for_msg(t->name, name, sizeof name);
        uint64_t dup = index_insert(g->tensor_hash_, cap, t->name, i, tensor_name, g);
        if (dup) {
            return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s' (info at byte %llu): duplicate of the tensor at byte %llu",
                              g->path, name, (unsigned long long)info_offsets[i],
                              (unsigned long long)info_offsets[dup - 1]);
        }
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            return fg_err_set(FG_ERR_FORMAT,
                              "%s: tensor '%s' (info at byte %llu): its %llu bytes of %s data at data offset %llu "
                              "(file byte %llu) run past the end of the file (%llu bytes); the file is truncated or corrupt",
                              g->path, name, (unsigned long long)info_offsets[i],
                              (unsigned long long)t->nbytes, fg_type_name(t->type),
                              (unsigned long long)t->offset, (unsigned long long)(data + t->offset),
                              (unsigned long long)g->size);
        }
        t->data = g->map + data + t->offset;
        order[i] = i;
    }
    sort_idx(order, order + g->n_tensors, g->n_tensors, cmp_by_offset, g->tensors);
    for (uint64_t k = 1; k < g->n_tensors; k++) {
        const fg_gguf_tensor *p = &g->tensors[order[k - 1]], *t = &g->tensors[order[k]];
        if (p->offset + p->nbytes > t->offset) {
            return fg_err_set(FG_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap: [%llu, +%llu) and [%llu, +%llu) in the data section",
                              g->path, name_for_msg(p->name, name, sizeof name),
                              name_for_msg(t->name, name2, sizeof name2),
                              (unsigned long long)p->offset, (unsigned long long)p->nbytes,
                              (unsigned long long)t->offset, (unsigned long long)t->nbytes);
        }
    }
    return FG_OK;
}

/* ---- Open / close ------------------------------------------------------------ */

static fg_status parse(fg_gguf *g)
{
    cursor c = {.g = g, .off = 0};
    uint32_t magic;
    if (g->size < 4) {
        return fg_err_set(FG_ERR_FORMAT, "%s: file is %llu bytes, too short to be GGUF (a GGUF file starts with the 4 bytes 'GGUF')",
                          g->path, (unsigned long long)g->size);
    }
    FG_TRY(cur_u32(&c, "magic", &magic));
    if (magic != FG_GGUF_MAGIC) {
        return fg_err_set(FG_ERR_FORMAT, "%s: byte 0: not a GGUF file (magic is %02x %02x %02x %02x, expected 'GGUF')",
                          g->path, g->map[0], g->map[1], g->map[2], g->map[3]);
    }
    FG_TRY(cur_u32(&c, "version", &g->version));
    if (g->version != 2 && g->version != 3) {
        return fg_err_set(FG_ERR_FORMAT, "%s: byte 4: GGUF version %u is not supported (forge reads versions 2 and 3)%s",
                          g->path, g->version, g->version == 1 ? "; convert the file with a current llama.cpp" : "");
    }
    FG_TRY(cur_u64(&c, "tensor count", &g->n_tensors));
    FG_TRY(cur_u64(&c, "metadata count", &g->n_kv));
    FG_TRY(parse_kvs(&c));
    FG_TRY(read_alignment(g));

    /* A tensor info takes at least 8 (name length) + 1 (name) + 4 (dims)
     * + 8 (one dim) + 4 (type) + 8 (offset) bytes. */
    if (g->n_tensors > cur_left(&c) / 33) {
        return fg_err_set(FG_ERR_FORMAT, "%s: header at byte 8: tensor count %llu cannot fit in the %llu bytes left after the metadata; the file is truncated or corrupt",
                          g->path, (unsigned long long)g->n_tensors, (unsigned long long)cur_left(&c));
    }
    g->tensors = gguf_alloc(g, g->n_tensors * sizeof *g->tensors);
    uint64_t *info_offsets = malloc((g->n_tensors ? g->n_tensors : 1) * sizeof *info_offsets);
    if (!g->tensors || !info_offsets) {
        free(info_offsets);
        return fg_err_set(FG_ERR_NOMEM, "%s: out of memory for %llu tensor infos", g->path,
                          (unsigned long long)g->n_tensors);
    }
    memset(g->tensors, 0, g->n_tensors * sizeof *g->tensors);
    fg_status st = parse_tensor_infos(&c, info_offsets);
    if (st == FG_OK) st = check_tensor_data(g, info_offsets, c.off);
    free(info_offsets);
    return st;
}

static fg_status gguf_new(const char *name, fg_gguf **out)
{
    fg_gguf *g = calloc(1, sizeof *g);
    char *path = strdup(name ? name : "<memory>");
    if (!g || !path) {
        free(g);
        free(path);
        return fg_err_set(FG_ERR_NOMEM, "out of memory opening %s", name);
    }
    g->path = path;
    *out = g;
    return FG_OK;
}

fg_status fg_gguf_open_memory(const void *buf, size_t size, const char *name, fg_gguf **out)
{
    *out = NULL;
    fg_gguf *g;
    FG_TRY(gguf_new(name, &g));
    g->map = buf;
    g->size = size;
    fg_status st = parse(g);
    if (st != FG_OK) {
        fg_gguf_close(g);
        return st;
    }
    *out = g;
    return FG_OK;
}

fg_status fg_gguf_open(const char *path, fg_gguf **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return fg_err_set(FG_ERR_IO, "%s: cannot open: %s%s", path, strerror(errno),
                          errno == ENOENT ? " (check the path, or run `tools/fetch-model` for the default model)" : "");
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return fg_err_set(FG_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return fg_err_set(FG_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return fg_err_set(FG_ERR_FORMAT, "%s: file is empty; a GGUF file starts with the 4 bytes 'GGUF'", path);
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return fg_err_set(FG_ERR_IO, "%s: cannot map: %s", path, strerror(e));

    fg_gguf *g;
    fg_status st = gguf_new(path, &g);
    if (st != FG_OK) {
        munmap(map, (size_t)sb.st_size);
        return st;
    }
    g->map = map;
    g->size = (uint64_t)sb.st_size;
    g->owns_map_ = true;
    st = parse(g);
    if (st != FG_OK) {
        fg_gguf_close(g);
        return st;
    }
    *out = g;
    return FG_OK;
}

void fg_gguf_close(fg_gguf *g)
{
    if (!g) return;
    if (g->owns_map_) munmap((void *)g->map, (size_t)g->size);
    gguf_free_blocks(g);
    free(g->path);
    free(g);
}

/* ---- Lookup -------------------------------------------------------------------- */

const fg_gguf_kv *fg_gguf_find(const fg_gguf *g, const char *key)
{
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (fg_gguf_str_eq(g->kv[i].key, key)) return &g->kv[i];
    }
    return NULL;
}

const fg_gguf_tensor *fg_gguf_find_tensor(const fg_gguf *g, const char *name)
{
    if (!g->tensor_hash_) return NULL;
    size_t n = strlen(name);
    uint64_t cap = g->tensor_hash_cap_;
    uint64_t h = hash_bytes(name, n) & (cap - 1);
    while (g->tensor_hash_[h]) {
        const fg_gguf_tensor *t = &g->tensors[g->tensor_hash_[h] - 1];
        if (t->name.len == n && memcmp(t->name.ptr, name, n) == 0) return t;
        h = (h + 1) & (cap - 1);
    }
    return NULL;
}

static fg_status find_kv(const fg_gguf *g, const char *key, const fg_gguf_kv **out)
{
    *out = fg_gguf_find(g, key);
    if (!*out) return fg_err_set(FG_ERR_NOT_FOUND, "%s: metadata key '%s' is missing", g->path, key);
    return FG_OK;
}

static fg_status wrong_type(const fg_gguf *g, const fg_gguf_kv *kv, const char *want)
{
    char key[160];
    return fg_err_set(FG_ERR_FORMAT, "%s: key '%s' at byte %llu has type %s; expected %s", g->path,
                      name_for_msg(kv->key, key, sizeof key), (unsigned long long)kv->offset,
                      fg_gguf_vtype_name(kv->val.type), want);
}

static bool is_unsigned(fg_gguf_vtype t)
{
    return t == FG_GGUF_UINT8 || t == FG_GGUF_UINT16 || t == FG_GGUF_UINT32 || t == FG_GGUF_UINT64;
}

static bool is_signed(fg_gguf_vtype t)
{
    return t == FG_GGUF_INT8 || t == FG_GGUF_INT16 || t == FG_GGUF_INT32 || t == FG_GGUF_INT64;
}

fg_status fg_gguf_get_int(const fg_gguf *g, const char *key, int64_t *out)
{
    const fg_gguf_kv *kv;
    FG_TRY(find_kv(g, key, &kv));
    if (is_signed(kv->val.type)) {
        *out = kv->val.v.i;
        return FG_OK;
    }
    if (is_unsigned(kv->val.type) && kv->val.v.u <= (uint64_t)INT64_MAX) {
        *out = (int64_t)kv->val.v.u;
        return FG_OK;
    }
    return wrong_type(g, kv, "an integer");
}

fg_status fg_gguf_get_float(const fg_gguf *g, const char *key, double *out)
{
    const fg_gguf_kv *kv;
    FG_TRY(find_kv(g, key, &kv));
    if (kv->val.type == FG_GGUF_FLOAT32 || kv->val.type == FG_GGUF_FLOAT64) *out = kv->val.v.f;
    else if (is_signed(kv->val.type)) *out = (double)kv->val.v.i;
    else if (is_unsigned(kv->val.type)) *out = (double)kv->val.v.u;
    else return wrong_type(g, kv, "a number");
    return FG_OK;
}

fg_status fg_gguf_get_bool(const fg_gguf *g, const char *key, bool *out)
{
    const fg_gguf_kv *kv;
    FG_TRY(find_kv(g, key, &kv));
    if (kv->val.type != FG_GGUF_BOOL) return wrong_type(g, kv, "bool");
    *out = kv->val.v.b;
    return FG_OK;
}

fg_status fg_gguf_get_str(const fg_gguf *g, const char *key, fg_gguf_str *out)
{
    const fg_gguf_kv *kv;
    FG_TRY(find_kv(g, key, &kv));
    if (kv->val.type != FG_GGUF_STRING) return wrong_type(g, kv, "string");
    *out = kv->val.v.str;
    return FG_OK;
}

fg_status fg_gguf_get_arr(const fg_gguf *g, const char *key, fg_gguf_vtype elem,
                          const fg_gguf_value **out)
{
    const fg_gguf_kv *kv;
    FG_TRY(find_kv(g, key, &kv));
    if (kv->val.type != FG_GGUF_ARRAY) return wrong_type(g, kv, "array");
    if (elem != FG_GGUF_VTYPE_COUNT && kv->val.v.arr.elem != elem) {
        char key_buf[160];
        return fg_err_set(FG_ERR_FORMAT, "%s: key '%s' at byte %llu is an array of %s; expected an array of %s",
                          g->path, name_for_msg(kv->key, key_buf, sizeof key_buf),
                          (unsigned long long)kv->offset, fg_gguf_vtype_name(kv->val.v.arr.elem),
                          fg_gguf_vtype_name(elem));
    }
    *out = &kv->val;
    return FG_OK;
}

int64_t fg_gguf_arr_int(const fg_gguf_value *a, uint64_t i)
{
    FG_ASSERT(a->type == FG_GGUF_ARRAY && i < a->v.arr.n);
    fg_gguf_vtype t = a->v.arr.elem;
    int n = vtype_sizes[t];
    FG_ASSERT(n > 0);
    uint64_t u = load_le(a->v.arr.data + i * (uint64_t)n, n);
    if (t == FG_GGUF_FLOAT32 || t == FG_GGUF_FLOAT64) {
        /* Truncated toward zero and saturated: a cast of NaN or of a value
         * outside int64 would be undefined behaviour. */
        double d = fg_gguf_arr_float(a, i);
        if (d != d) return 0;
        if (d >= 9223372036854775807.0) return INT64_MAX;
        if (d <= -9223372036854775808.0) return INT64_MIN;
        return (int64_t)d;
    }
    if (is_signed(t) && n < 8 && (u >> (8 * n - 1)) & 1) u |= ~0ull << (8 * n);
    return (int64_t)u;
}

double fg_gguf_arr_float(const fg_gguf_value *a, uint64_t i)
{
    FG_ASSERT(a->type == FG_GGUF_ARRAY && i < a->v.arr.n);
    fg_gguf_vtype t = a->v.arr.elem;
    const uint8_t *p = a->v.arr.data + i * (uint64_t)vtype_sizes[t];
    if (t == FG_GGUF_FLOAT32) {
        uint32_t u = (uint32_t)load_le(p, 4);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    if (t == FG_GGUF_FLOAT64) {
        uint64_t u = load_le(p, 8);
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    return (double)fg_gguf_arr_int(a, i);
}
