/*
 * gguf.h — reading and writing GGUF files (versions 2 and 3).
 *
 * fg_gguf_open maps a file read-only and validates all of it before returning:
 * header, every metadata key/value (all 13 value types, arrays nested to any
 * depth), general.alignment, and the tensor table (names, dims, types, offsets
 * and sizes inside the file, no overlaps, no overflow, no duplicates). Any
 * violation is an FG_ERR_FORMAT whose message names the file, the field and the
 * byte offset. After a successful open, nothing in the file is read unchecked.
 *
 * Ownership: the fg_gguf owns the mapping and the parsed tables. Strings and
 * tensor data handed out are views into the mapping (strings are NOT
 * NUL-terminated; use .len) and live until fg_gguf_close.
 *
 * The writer (fg_gguf_writer_*) builds a file in memory order — metadata, then
 * tensor infos, then aligned tensor data — for tests and `forge quantize`.
 */
#ifndef FG_GGUF_H
#define FG_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forge.h"
#include "gguf/types.h"

#define FG_GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define FG_GGUF_DEFAULT_ALIGNMENT 32
#define FG_GGUF_MAX_DIMS 4

typedef enum fg_gguf_vtype {
    FG_GGUF_UINT8 = 0,
    FG_GGUF_INT8 = 1,
    FG_GGUF_UINT16 = 2,
    FG_GGUF_INT16 = 3,
    FG_GGUF_UINT32 = 4,
    FG_GGUF_INT32 = 5,
    FG_GGUF_FLOAT32 = 6,
    FG_GGUF_BOOL = 7,
    FG_GGUF_STRING = 8,
    FG_GGUF_ARRAY = 9,
    FG_GGUF_UINT64 = 10,
    FG_GGUF_INT64 = 11,
    FG_GGUF_FLOAT64 = 12,
    FG_GGUF_VTYPE_COUNT
} fg_gguf_vtype;

/* A string view into the mapping; not NUL-terminated. */
typedef struct fg_gguf_str {
    const char *ptr;
    uint64_t len;
} fg_gguf_str;

/* A metadata value. Scalars are widened into u/i/f/b. Arrays of numbers or bools
 * keep a pointer to their little-endian, possibly unaligned elements in the
 * mapping (read them with fg_gguf_arr_*); arrays of strings and of arrays are
 * parsed into strs / items. */
typedef struct fg_gguf_value {
    fg_gguf_vtype type;
    union {
        uint64_t u;    /* UINT8/16/32/64 */
        int64_t i;     /* INT8/16/32/64 */
        double f;      /* FLOAT32/64 */
        bool b;        /* BOOL */
        fg_gguf_str str;
        struct {
            fg_gguf_vtype elem;
            uint64_t n;
            const uint8_t *data;                /* numeric/bool elements */
            const fg_gguf_str *strs;            /* elem == STRING */
            const struct fg_gguf_value *items;  /* elem == ARRAY */
        } arr;
    } v;
} fg_gguf_value;

typedef struct fg_gguf_kv {
    fg_gguf_str key;
    fg_gguf_value val;
    uint64_t offset; /* byte offset of the key in the file, for messages */
} fg_gguf_kv;

typedef struct fg_gguf_tensor {
    fg_gguf_str name;
    uint32_t n_dims;
    int64_t ne[FG_GGUF_MAX_DIMS]; /* elements per dim, fastest first; unused dims = 1 */
    fg_type type;
    uint64_t offset;     /* from the start of the data section */
    uint64_t n_elems;
    uint64_t nbytes;
    const void *data;    /* view into the mapping */
} fg_gguf_tensor;

typedef struct fg_gguf {
    char *path;            /* owned copy, for messages */
    const uint8_t *map;    /* the whole file, read-only */
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv;
    fg_gguf_kv *kv;
    uint64_t n_tensors;
    fg_gguf_tensor *tensors;
    uint64_t data_offset;  /* start of the tensor data section */
    /* private */
    void *arena_;          /* backing store for parsed arrays */
    uint64_t *tensor_hash_; /* open-addressed index over tensors, by name */
    uint64_t tensor_hash_cap_;
    bool owns_map_;
} fg_gguf;

/* Opens and fully validates path. On failure *out is NULL and the message names
 * the file, the field and the byte offset. */
fg_status fg_gguf_open(const char *path, fg_gguf **out);

/* Validates a GGUF image already in memory (the fuzzer's entry point). buf must
 * outlive the result; name is used in messages. */
fg_status fg_gguf_open_memory(const void *buf, size_t size, const char *name, fg_gguf **out);

void fg_gguf_close(fg_gguf *g);

/* ---- Metadata lookup ------------------------------------------------------ */

/* The key/value with this key, or NULL. */
const fg_gguf_kv *fg_gguf_find(const fg_gguf *g, const char *key);

/* Typed getters. They return FG_ERR_NOT_FOUND (with a message) if the key is
 * absent and FG_ERR_FORMAT if its type does not fit: get_int accepts any
 * integer type whose value fits in int64; get_float accepts FLOAT32/64 and
 * integers; get_str only STRING; get_bool only BOOL. */
fg_status fg_gguf_get_int(const fg_gguf *g, const char *key, int64_t *out);
fg_status fg_gguf_get_float(const fg_gguf *g, const char *key, double *out);
fg_status fg_gguf_get_bool(const fg_gguf *g, const char *key, bool *out);
fg_status fg_gguf_get_str(const fg_gguf *g, const char *key, fg_gguf_str *out);
/* An array whose elements have type elem (any elem if elem == FG_GGUF_VTYPE_COUNT). */
fg_status fg_gguf_get_arr(const fg_gguf *g, const char *key, fg_gguf_vtype elem,
                          const fg_gguf_value **out);

/* Element i of a numeric array (i < arr.n), converted; floats read as
 * integers are truncated toward zero and saturated, NaN reads as 0. */
int64_t fg_gguf_arr_int(const fg_gguf_value *a, uint64_t i);
double fg_gguf_arr_float(const fg_gguf_value *a, uint64_t i);

/* True if s equals the NUL-terminated c. */
bool fg_gguf_str_eq(fg_gguf_str s, const char *c);

/* The name of a value type ("uint32", "array", ...), or "?" */
const char *fg_gguf_vtype_name(fg_gguf_vtype t);

/* Size in bytes of one element of a fixed-size type, 0 for STRING/ARRAY. */
size_t fg_gguf_vtype_size(fg_gguf_vtype t);

/* ---- Tensors ---------------------------------------------------------------- */

const fg_gguf_tensor *fg_gguf_find_tensor(const fg_gguf *g, const char *name);

/* ---- Writer ----------------------------------------------------------------- */

typedef struct fg_gguf_writer fg_gguf_writer;

fg_gguf_writer *fg_gguf_writer_init(void);
void fg_gguf_writer_free(fg_gguf_writer *w);

/* Each setter copies its inputs. Keys must be unique; a repeated key replaces
 * the earlier value. They return FG_ERR_NOMEM or FG_ERR_INVALID_ARG. */
fg_status fg_gguf_writer_set_u32(fg_gguf_writer *w, const char *key, uint32_t v);
fg_status fg_gguf_writer_set_i32(fg_gguf_writer *w, const char *key, int32_t v);
fg_status fg_gguf_writer_set_u64(fg_gguf_writer *w, const char *key, uint64_t v);
fg_status fg_gguf_writer_set_f32(fg_gguf_writer *w, const char *key, float v);
fg_status fg_gguf_writer_set_bool(fg_gguf_writer *w, const char *key, bool v);
fg_status fg_gguf_writer_set_str(fg_gguf_writer *w, const char *key, const char *v);
/* An array of n fixed-size elements of type elem, in host (little-endian) layout. */
fg_status fg_gguf_writer_set_arr(fg_gguf_writer *w, const char *key, fg_gguf_vtype elem,
                                 const void *data, uint64_t n);
fg_status fg_gguf_writer_set_arr_str(fg_gguf_writer *w, const char *key,
                                     const char *const *strs, uint64_t n);
/* Copies any value read from a file (nested arrays included). */
fg_status fg_gguf_writer_set_value(fg_gguf_writer *w, const char *key, const fg_gguf_value *v);

/* Adds a tensor; data (nbytes = fg_type_row_size(type, ne[0]) * rows) is copied
 * at fg_gguf_writer_write time, so it must stay valid until then. */
fg_status fg_gguf_writer_add_tensor(fg_gguf_writer *w, const char *name, fg_type type,
                                    uint32_t n_dims, const int64_t *ne, const void *data);

/* Writes version-3 GGUF to path with the given alignment (general.alignment is
 * written when it differs from 32). */
fg_status fg_gguf_writer_write(fg_gguf_writer *w, const char *path, uint32_t alignment);

/* The same, but each tensor's bytes come from data_fn(ctx, i, &data) just
 * before tensor i is written (tensors in the order added; data must stay
 * valid until the next call), so a file can be written one tensor at a time
 * (`forge quantize`). The data pointers given to add_tensor are ignored and
 * may be NULL. A failing data_fn stops the write with its status. */
typedef fg_status (*fg_gguf_tensor_data_fn)(void *ctx, size_t i, const void **data);
fg_status fg_gguf_writer_write_with(fg_gguf_writer *w, const char *path, uint32_t alignment,
                                    fg_gguf_tensor_data_fn data_fn, void *ctx);

#endif
