/*
 * test_gguf.c — the GGUF reader and writer against the `gguf` Python package.
 *
 * tests/data/gguf/all_types.gguf was written by the package's GGUFWriter
 * (tools/make_gguf_fixtures.py) and all_types.json lists what is in it. The
 * reader must find exactly that; the writer, fed what the reader found, must
 * reproduce the package's file byte for byte. The bad-file corpus must be
 * rejected with the message its MANIFEST names, and every truncation and many
 * byte mutations of the good file must be handled without a crash (the asan
 * tier runs these under ASan/UBSan).
 */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "test_util.h"

static cJSON *load_expected(void)
{
    cJSON *j = fg_test_golden_json("gguf/all_types.json", "gguf", 1);
    cr_assert_not_null(j, "tests/data/gguf/all_types.json is missing, stale or not JSON");
    return j;
}

/* Compares a parsed value with its JSON description (elem = array element type). */
static void check_value(const char *key, const fg_gguf_value *v, int type, const cJSON *want)
{
    cr_assert_eq((int)v->type, type, "%s: type %d, want %d", key, (int)v->type, type);
    switch (v->type) {
    case FG_GGUF_UINT8: case FG_GGUF_UINT16: case FG_GGUF_UINT32: case FG_GGUF_UINT64:
        /* cJSON keeps numbers as doubles; compare through the string form for u64. */
        if (v->v.u > (1ull << 53)) {
            char buf[32];
            snprintf(buf, sizeof buf, "%llu", (unsigned long long)v->v.u);
            char *printed = cJSON_PrintUnformatted(want);
            cr_assert(strcmp(buf, printed) == 0 || (double)v->v.u == want->valuedouble, "%s: %s vs %s", key, buf, printed);
            free(printed);
        } else {
            cr_assert_eq((double)v->v.u, want->valuedouble, "%s", key);
        }
        break;
    case FG_GGUF_INT8: case FG_GGUF_INT16: case FG_GGUF_INT32: case FG_GGUF_INT64:
        cr_assert_eq((double)v->v.i, want->valuedouble, "%s: %lld", key, (long long)v->v.i);
        break;
    case FG_GGUF_FLOAT32: case FG_GGUF_FLOAT64:
        cr_assert_eq(v->v.f, want->valuedouble, "%s: %.17g vs %.17g", key, v->v.f, want->valuedouble);
        break;
    case FG_GGUF_BOOL:
        cr_assert_eq(v->v.b, cJSON_IsTrue(want), "%s", key);
        break;
    case FG_GGUF_STRING:
        cr_assert_eq(v->v.str.len, strlen(want->valuestring), "%s", key);
        cr_assert(memcmp(v->v.str.ptr, want->valuestring, v->v.str.len) == 0, "%s", key);
        break;
    default:
        cr_assert_fail("%s: unexpected type", key);
    }
}

static void check_array(const char *key, const fg_gguf_value *v, int elem, const cJSON *want)
{
    cr_assert_eq(v->type, FG_GGUF_ARRAY, "%s", key);
    cr_assert_eq((int)v->v.arr.n, cJSON_GetArraySize(want), "%s: length", key);
    if (elem == FG_GGUF_ARRAY) {
        /* The fixture's nested arrays hold int32 arrays. */
        for (uint64_t i = 0; i < v->v.arr.n; i++)
            check_array(key, &v->v.arr.items[i], FG_GGUF_INT32, cJSON_GetArrayItem(want, (int)i));
        return;
    }
    cr_assert_eq((int)v->v.arr.elem, elem, "%s: element type", key);
    for (uint64_t i = 0; i < v->v.arr.n; i++) {
        const cJSON *w = cJSON_GetArrayItem(want, (int)i);
        fg_gguf_value e = {.type = (fg_gguf_vtype)elem};
        if (elem == FG_GGUF_STRING) {
            e.v.str = v->v.arr.strs[i];
        } else if (elem == FG_GGUF_FLOAT32 || elem == FG_GGUF_FLOAT64) {
            e.v.f = fg_gguf_arr_float(v, i);
        } else if (elem == FG_GGUF_BOOL) {
            e.v.b = fg_gguf_arr_int(v, i) != 0;
        } else if (elem == FG_GGUF_UINT64) {
            e.v.u = (uint64_t)fg_gguf_arr_int(v, i);
        } else if (elem == FG_GGUF_UINT8 || elem == FG_GGUF_UINT16 || elem == FG_GGUF_UINT32) {
            e.v.u = (uint64_t)fg_gguf_arr_int(v, i);
        } else {
            e.v.i = fg_gguf_arr_int(v, i);
        }
        check_value(key, &e, elem, w);
    }
}

static void check_against_expected(const char *path, uint32_t version)
{
    cJSON *exp = load_expected();
    fg_gguf *g;
    cr_assert_eq(fg_gguf_open(path, &g), FG_OK, "%s", fg_last_error());
    cr_assert_eq(g->version, version);
    cr_assert_eq(g->alignment, (uint32_t)cJSON_GetObjectItem(exp, "alignment")->valuedouble);
    cr_assert_eq((double)g->data_offset, cJSON_GetObjectItem(exp, "data_offset")->valuedouble);

    const cJSON *kvs = cJSON_GetObjectItem(exp, "kv");
    cr_assert_eq((int)g->n_kv, cJSON_GetArraySize(kvs));
    int i = 0;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, kvs)
    {
        const char *key = cJSON_GetObjectItem(kv, "key")->valuestring;
        int type = (int)cJSON_GetObjectItem(kv, "type")->valuedouble;
        const cJSON *elem = cJSON_GetObjectItem(kv, "elem");
        const cJSON *value = cJSON_GetObjectItem(kv, "value");
        cr_assert(fg_gguf_str_eq(g->kv[i].key, key), "kv %d is not %s (order)", i, key);
        const fg_gguf_kv *found = fg_gguf_find(g, key);
        cr_assert_eq(found, &g->kv[i]);
        if (type == FG_GGUF_ARRAY) check_array(key, &found->val, (int)elem->valuedouble, value);
        else check_value(key, &found->val, type, value);
        i++;
    }

    const cJSON *ts = cJSON_GetObjectItem(exp, "tensors");
    cr_assert_eq((int)g->n_tensors, cJSON_GetArraySize(ts));
    const cJSON *t;
    cJSON_ArrayForEach(t, ts)
    {
        const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
        const fg_gguf_tensor *gt = fg_gguf_find_tensor(g, name);
        cr_assert_not_null(gt, "tensor %s not found", name);
        cr_assert_eq((int)gt->type, (int)cJSON_GetObjectItem(t, "type")->valuedouble, "%s", name);
        const cJSON *ne = cJSON_GetObjectItem(t, "ne");
        cr_assert_eq((int)gt->n_dims, cJSON_GetArraySize(ne), "%s", name);
        for (int d = 0; d < cJSON_GetArraySize(ne); d++)
            cr_assert_eq((double)gt->ne[d], cJSON_GetArrayItem(ne, d)->valuedouble, "%s dim %d", name, d);
        cr_assert_eq((double)gt->offset, cJSON_GetObjectItem(t, "offset")->valuedouble, "%s", name);
        cr_assert_eq((double)gt->nbytes, cJSON_GetObjectItem(t, "nbytes")->valuedouble, "%s", name);
        const char *hex = cJSON_GetObjectItem(t, "hex")->valuestring;
        cr_assert_eq(strlen(hex), 2 * gt->nbytes, "%s", name);
        for (uint64_t b = 0; b < gt->nbytes; b++) {
            unsigned x;
            sscanf(hex + 2 * b, "%2x", &x);
            cr_assert_eq(((const uint8_t *)gt->data)[b], x, "%s byte %llu", name, (unsigned long long)b);
        }
    }
    cr_assert_null(fg_gguf_find_tensor(g, "no.such.tensor"));
    fg_gguf_close(g);
    cJSON_Delete(exp);
}

Test(gguf, reads_every_type_v3)
{
    check_against_expected("tests/data/gguf/all_types.gguf", 3);
}

Test(gguf, reads_every_type_v2)
{
    check_against_expected("tests/data/gguf/all_types_v2.gguf", 2);
}

Test(gguf, typed_getters)
{
    fg_gguf *g;
    cr_assert_eq(fg_gguf_open("tests/data/gguf/all_types.gguf", &g), FG_OK, "%s", fg_last_error());
    int64_t iv;
    double dv;
    bool bv;
    fg_gguf_str sv;
    const fg_gguf_value *av;
    cr_assert_eq(fg_gguf_get_int(g, "t.i16", &iv), FG_OK);
    cr_assert_eq(iv, -32000);
    cr_assert_eq(fg_gguf_get_int(g, "t.u32", &iv), FG_OK);
    cr_assert_eq(iv, 4000000000ll);
    /* 18e18 does not fit in int64: an error, not a wrapped value. */
    cr_assert_eq(fg_gguf_get_int(g, "t.u64", &iv), FG_ERR_FORMAT);
    cr_assert(strstr(fg_last_error(), "t.u64") && strstr(fg_last_error(), "uint64"), "%s", fg_last_error());
    cr_assert_eq(fg_gguf_get_int(g, "t.str", &iv), FG_ERR_FORMAT);
    cr_assert(strstr(fg_last_error(), "has type string; expected an integer"), "%s", fg_last_error());
    cr_assert_eq(fg_gguf_get_int(g, "missing.key", &iv), FG_ERR_NOT_FOUND);
    cr_assert(strstr(fg_last_error(), "'missing.key' is missing"), "%s", fg_last_error());
    cr_assert_eq(fg_gguf_get_float(g, "t.f32", &dv), FG_OK);
    cr_assert_eq((float)dv, 3.14159f);
    cr_assert_eq(fg_gguf_get_float(g, "t.i8", &dv), FG_OK);
    cr_assert_eq(dv, -100.0);
    cr_assert_eq(fg_gguf_get_bool(g, "t.bool_true", &bv), FG_OK);
    cr_assert(bv);
    cr_assert_eq(fg_gguf_get_bool(g, "t.u8", &bv), FG_ERR_FORMAT);
    cr_assert_eq(fg_gguf_get_str(g, "general.architecture", &sv), FG_OK);
    cr_assert(fg_gguf_str_eq(sv, "test"));
    cr_assert_eq(fg_gguf_get_arr(g, "a.str", FG_GGUF_STRING, &av), FG_OK);
    cr_assert_eq(av->v.arr.n, 5);
    cr_assert_eq(av->v.arr.strs[4].len, 300);
    cr_assert_eq(fg_gguf_get_arr(g, "a.str", FG_GGUF_INT32, &av), FG_ERR_FORMAT);
    cr_assert(strstr(fg_last_error(), "array of string; expected an array of int32"), "%s", fg_last_error());
    fg_gguf_close(g);
}

/* Copies every key/value and tensor of a file into a writer. */
static fg_gguf_writer *copy_into_writer(const fg_gguf *g)
{
    fg_gguf_writer *w = fg_gguf_writer_init();
    cr_assert_not_null(w);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)g->kv[i].key.len, g->kv[i].key.ptr);
        cr_assert_eq(fg_gguf_writer_set_value(w, key, &g->kv[i].val), FG_OK, "%s", fg_last_error());
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fg_gguf_tensor *t = &g->tensors[i];
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        cr_assert_eq(fg_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data), FG_OK,
                     "%s", fg_last_error());
    }
    return w;
}

Test(gguf, writer_reproduces_reference_file)
{
    const char *ref = "tests/data/gguf/all_types.gguf";
    fg_gguf *g;
    cr_assert_eq(fg_gguf_open(ref, &g), FG_OK, "%s", fg_last_error());
    fg_gguf_writer *w = copy_into_writer(g);
    char out[] = "/tmp/forge-test-XXXXXX";
    int fd = mkstemp(out);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(fg_gguf_writer_write(w, out, g->alignment), FG_OK, "%s", fg_last_error());
    fg_gguf_writer_free(w);
    fg_gguf_close(g);

    size_t n_ref, n_out;
    char *a = fg_test_read_file(ref, &n_ref), *b = fg_test_read_file(out, &n_out);
    cr_assert_eq(n_out, n_ref, "forge wrote %zu bytes, the gguf package %zu", n_out, n_ref);
    for (size_t i = 0; i < n_ref; i++) cr_assert_eq(a[i], b[i], "first difference at byte %zu", i);
    free(a);
    free(b);
    unlink(out);
}

Test(gguf, writer_scalar_setters_round_trip)
{
    fg_gguf_writer *w = fg_gguf_writer_init();
    const char *strs[] = {"x", "", "ÿ"};
    int32_t ints[] = {-5, 7};
    float f[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    cr_assert_eq(fg_gguf_writer_set_str(w, "general.architecture", "llama"), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_u32(w, "a", 7), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_u32(w, "a", 9), FG_OK); /* replaces */
    cr_assert_eq(fg_gguf_writer_set_i32(w, "b", -3), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_u64(w, "c", 1ull << 40), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_f32(w, "d", 0.25f), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_bool(w, "e", true), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_arr_str(w, "f", strs, 3), FG_OK);
    cr_assert_eq(fg_gguf_writer_set_arr(w, "g", FG_GGUF_INT32, ints, 2), FG_OK);
    int64_t ne[2] = {4, 2};
    cr_assert_eq(fg_gguf_writer_add_tensor(w, "t", FG_TYPE_F32, 2, ne, f), FG_OK);
    cr_assert_eq(fg_gguf_writer_add_tensor(w, "t", FG_TYPE_F32, 2, ne, f), FG_ERR_INVALID_ARG);
    int64_t bad[1] = {33};
    cr_assert_eq(fg_gguf_writer_add_tensor(w, "q", FG_TYPE_Q4_0, 1, bad, f), FG_ERR_INVALID_ARG);
    char out[] = "/tmp/forge-test-XXXXXX";
    int fd = mkstemp(out);
    close(fd);
    cr_assert_eq(fg_gguf_writer_write(w, out, 128), FG_OK, "%s", fg_last_error());
    fg_gguf_writer_free(w);

    fg_gguf *g;
    cr_assert_eq(fg_gguf_open(out, &g), FG_OK, "%s", fg_last_error());
    int64_t iv;
    double dv;
    bool bv;
    const fg_gguf_value *av;
    cr_assert_eq(g->alignment, 128);
    cr_assert_eq(g->data_offset % 128, 0);
    cr_assert_eq(fg_gguf_get_int(g, "a", &iv), FG_OK);
    cr_assert_eq(iv, 9);
    cr_assert_eq(fg_gguf_get_int(g, "b", &iv), FG_OK);
    cr_assert_eq(iv, -3);
    cr_assert_eq(fg_gguf_get_int(g, "c", &iv), FG_OK);
    cr_assert_eq(iv, 1ll << 40);
    cr_assert_eq(fg_gguf_get_float(g, "d", &dv), FG_OK);
    cr_assert_eq(dv, 0.25);
    cr_assert_eq(fg_gguf_get_bool(g, "e", &bv), FG_OK);
    cr_assert(bv);
    cr_assert_eq(fg_gguf_get_arr(g, "f", FG_GGUF_STRING, &av), FG_OK);
    cr_assert(fg_gguf_str_eq(av->v.arr.strs[2], "ÿ"));
    cr_assert_eq(fg_gguf_get_arr(g, "g", FG_GGUF_INT32, &av), FG_OK);
    cr_assert_eq(fg_gguf_arr_int(av, 0), -5);
    const fg_gguf_tensor *t = fg_gguf_find_tensor(g, "t");
    cr_assert_not_null(t);
    cr_assert_eq(t->nbytes, sizeof f);
    cr_assert(memcmp(t->data, f, sizeof f) == 0);
    fg_gguf_close(g);
    unlink(out);
}

static void expect_gguf_error(const char *path, const char *want)
{
    fg_gguf *g = (fg_gguf *)1;
    cr_assert_neq(fg_gguf_open(path, &g), FG_OK, "%s was accepted", path);
    cr_assert_null(g);
    cr_assert(strstr(fg_last_error(), path), "%s: message does not name the file: %s", path, fg_last_error());
    cr_assert(strstr(fg_last_error(), want), "%s: message lacks '%s': %s", path, want, fg_last_error());
}

Test(gguf, bad_corpus_gives_named_errors)
{
    cr_assert_geq(fg_test_manifest_each("bad-gguf", expect_gguf_error), 60);
}

/* Every prefix of the good file, and byte mutations across its header and
 * metadata, must give FG_OK or a clean error (the asan tier checks no byte is
 * read out of bounds). The prefixes are copied into exactly-sized buffers. */
Test(gguf, every_truncation_and_mutation_is_safe)
{
    size_t n;
    uint8_t *good = (uint8_t *)fg_test_read_file("tests/data/gguf/all_types.gguf", &n);
    cr_assert_not_null(good);
    fg_gguf *g;
    cr_assert_eq(fg_gguf_open_memory(good, n, "good", &g), FG_OK);
    uint64_t data_end = g->data_offset;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        uint64_t e = g->data_offset + g->tensors[i].offset + g->tensors[i].nbytes;
        if (e > data_end) data_end = e;
    }
    uint64_t meta_end = g->data_offset;
    fg_gguf_close(g);

    for (size_t len = 0; len < data_end; len++) {
        uint8_t *buf = malloc(len ? len : 1);
        memcpy(buf, good, len);
        cr_assert_neq(fg_gguf_open_memory(buf, len, "prefix", &g), FG_OK, "prefix of %zu bytes accepted", len);
        free(buf);
    }
    uint32_t rng = 12345;
    uint8_t *buf = malloc(n);
    for (size_t pos = 0; pos < meta_end; pos++) {
        for (int k = 0; k < 4; k++) {
            rng = rng * 1664525u + 1013904223u;
            memcpy(buf, good, n);
            buf[pos] ^= (uint8_t)((rng >> 24) | 1);
            if (fg_gguf_open_memory(buf, n, "mutant", &g) == FG_OK) fg_gguf_close(g);
        }
    }
    free(buf);
    free(good);
}
