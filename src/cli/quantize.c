/*
 * quantize.c — `forge quantize IN.gguf OUT.gguf TYPE`: writes a quantized copy
 * of a model.
 *
 * Input: a GGUF whose weights are F32, F16 or BF16. Output: the same metadata
 * (general.file_type set to llama.cpp's value for TYPE, and
 * general.quantization_version 2), the same tensors in the same order and
 * alignment, each with the type llama.cpp's quantize would give it
 * (gguf/qmix.c), quantized by ggml's reference algorithms (gguf/quantize.c).
 *
 * The output is written one tensor at a time: a quantized tensor lives in one
 * buffer only while it is written, and copied tensors go straight from the
 * input's mmap. Rows are split over a thread pool in chunks of about 16 MB of
 * input, and a progress bar is drawn between chunks on a terminal for files
 * of 256 MB and more. A failed run removes the partial output.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/threadpool.h"
#include "cli/cli.h"
#include "gguf/gguf.h"
#include "gguf/qmix.h"
#include "gguf/quant.h"
#include "gguf/quantize.h"

static void help(void)
{
    printf("usage: forge quantize [options] IN.gguf OUT.gguf TYPE\n\n"
           "Writes a copy of IN with its F32/F16/BF16 weights quantized, choosing each\n"
           "tensor's type as llama.cpp's quantize does (norms and 1-D tensors stay as they\n"
           "are, output.weight gets Q6_K, the _M mixes give some attn_v and ffn_down layers\n"
           "Q6_K, rows that do not fit a block fall back to a smaller block), with ggml's\n"
           "reference quantizers, so the output matches llama.cpp's bit for bit.\n\n"
           "TYPE: %s\n\n"
           "options:\n"
           "  -t, --threads N   threads (default: one per core)\n"
           "      --pure        every quantized tensor gets TYPE's base type (no mix rules)\n"
           "  -h, --help        show this help\n",
           fg_qmix_names());
}

/* ---- One run ------------------------------------------------------------------ */

typedef struct quant_job {
    const fg_gguf *g;
    const fg_type *types;  /* (n_tensors) output type of each tensor */
    fg_pool *pool;
    uint8_t *buf;          /* the current tensor's output */
    size_t buf_cap;
    float *scratch;        /* (n_threads, row) f32 rows for F16/BF16 sources */
    size_t scratch_row;    /* floats per thread in scratch */
    /* the chunk being run */
    const fg_gguf_tensor *t;
    fg_type type;
    int64_t row0, nrows;
    int64_t bad_row;       /* a row with a NaN/Inf, or -1 */
    /* progress */
    uint64_t done, total;
    bool bar, drawn;
    int n_quantized, n_fallback;
} quant_job;

static void draw_bar(quant_job *j)
{
    if (!j->bar) return;
    fprintf(stderr, "\rforge: quantizing ");
    fg_cli_bar(j->done, j->total);
    fprintf(stderr, " %3d%% (%.1f of %.1f GB)", (int)(100 * j->done / (j->total ? j->total : 1)), j->done / 1e9,
            j->total / 1e9);
    fflush(stderr);
    j->drawn = true;
}

/* Worker ith of nth: its share of the chunk's rows, each widened to f32
 * (F16/BF16 sources), checked for NaN/Inf and quantized. */
static void quant_rows(void *ctx, int ith, int nth)
{
    quant_job *j = ctx;
    const fg_gguf_tensor *t = j->t;
    int64_t n = t->ne[0];
    int64_t per = (j->nrows + nth - 1) / nth;
    int64_t r0 = j->row0 + per * ith, r1 = r0 + per;
    if (r1 > j->row0 + j->nrows) r1 = j->row0 + j->nrows;
    size_t in_row = fg_type_row_size(t->type, n), out_row = fg_type_row_size(j->type, n);
    float *tmp = j->scratch + (size_t)ith * j->scratch_row;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *src = (const uint8_t *)t->data + (size_t)r * in_row;
        const float *x;
        if (t->type == FG_TYPE_F32 && ((uintptr_t)src % sizeof(float)) == 0) {
            x = (const float *)src;
        } else {
            fg_dequant_row(t->type, src, tmp, n);
            x = tmp;
        }
        for (int64_t i = 0; i < n; i++) {
            if (!isfinite(x[i])) {
                j->bad_row = r; /* any one of them is worth reporting */
                return;
            }
        }
        fg_quantize_row(j->type, x, j->buf + (size_t)r * out_row, n);
    }
}

static fg_status quantize_tensor(quant_job *j, const fg_gguf_tensor *t, fg_type type)
{
    int64_t n = t->ne[0];
    int64_t rows = (int64_t)(t->n_elems / (uint64_t)(n ? n : 1));
    size_t need = fg_type_row_size(type, n) * (size_t)rows;
    if (need > j->buf_cap) {
        free(j->buf);
        j->buf = malloc(need ? need : 1);
        j->buf_cap = j->buf ? need : 0;
        if (!j->buf) return fg_err_set(FG_ERR_NOMEM, "out of memory for the %zu bytes of tensor '%.*s'", need,
                                       (int)t->name.len, t->name.ptr);
    }
    if ((size_t)n > j->scratch_row) {
        free(j->scratch);
        j->scratch = malloc((size_t)n * sizeof(float) * (size_t)fg_pool_size(j->pool));
        j->scratch_row = j->scratch ? (size_t)n : 0;
        if (!j->scratch) return fg_err_set(FG_ERR_NOMEM, "out of memory for rows of %lld", (long long)n);
    }
    size_t in_row = fg_type_row_size(t->type, n);
    int64_t chunk = (int64_t)((16u << 20) / (in_row ? in_row : 1));
    if (chunk < 1) chunk = 1;
    j->t = t;
    j->type = type;
    j->bad_row = -1;
    for (int64_t r = 0; r < rows; r += chunk) {
        j->row0 = r;
        j->nrows = rows - r < chunk ? rows - r : chunk;
        fg_pool_run(j->pool, quant_rows, j);
        if (j->bad_row >= 0)
            return fg_err_set(FG_ERR_FORMAT,
                              "%s: tensor '%.*s' row %lld holds a NaN or Inf; the weights are corrupt and cannot be "
                              "quantized",
                              j->g->path, (int)t->name.len, t->name.ptr, (long long)j->bad_row);
        j->done += (uint64_t)j->nrows * in_row;
        draw_bar(j);
    }
    return FG_OK;
}

/* The writer's data source: tensor i's bytes, quantized now or straight from
 * the input's mmap. */
static fg_status tensor_data(void *ctx, size_t i, const void **data)
{
    quant_job *j = ctx;
    const fg_gguf_tensor *t = &j->g->tensors[i];
    if (j->types[i] == t->type) {
        *data = t->data;
        j->done += t->nbytes;
        draw_bar(j);
        return FG_OK;
    }
    FG_TRY(quantize_tensor(j, t, j->types[i]));
    *data = j->buf;
    return FG_OK;
}

/* Every tensor that changes type must come from a float type. */
static fg_status check_sources(const fg_gguf *g, const fg_type *types)
{
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fg_gguf_tensor *t = &g->tensors[i];
        if (types[i] == t->type || t->type == FG_TYPE_F32 || t->type == FG_TYPE_F16 || t->type == FG_TYPE_BF16)
            continue;
        return fg_err_set(FG_ERR_UNSUPPORTED,
                          "%s: tensor '%.*s' has type %s; forge quantize reads F32, F16 or BF16 weights only "
                          "(requantizing an already quantized model compounds its rounding errors): quantize "
                          "from the original F32/F16/BF16 GGUF instead",
                          g->path, (int)t->name.len, t->name.ptr, fg_type_name(t->type));
    }
    return FG_OK;
}

static bool is_split_key(fg_gguf_str k)
{
    return fg_gguf_str_eq(k, "split.no") || fg_gguf_str_eq(k, "split.count") ||
           fg_gguf_str_eq(k, "split.tensors.count");
}

/* The output's header: IN's metadata with the new file type, and every
 * tensor with its new type (data comes later, from tensor_data). */
static fg_status build_writer(const fg_gguf *g, const fg_qmix *mix, const fg_type *types, fg_gguf_writer *w)
{
    char key[65536];
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const fg_gguf_kv *kv = &g->kv[i];
        if (is_split_key(kv->key)) continue;
        if (kv->key.len >= sizeof key)
            return fg_err_set(FG_ERR_UNSUPPORTED, "%s: a metadata key of %llu bytes is too long", g->path,
                              (unsigned long long)kv->key.len);
        memcpy(key, kv->key.ptr, (size_t)kv->key.len);
        key[kv->key.len] = 0;
        FG_TRY(fg_gguf_writer_set_value(w, key, &kv->val));
    }
    FG_TRY(fg_gguf_writer_set_u32(w, "general.quantization_version", 2));
    FG_TRY(fg_gguf_writer_set_u32(w, "general.file_type", mix->ftype));
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fg_gguf_tensor *t = &g->tensors[i];
        char *name = strndup(t->name.ptr, (size_t)t->name.len);
        if (!name) return fg_err_set(FG_ERR_NOMEM, "out of memory");
        fg_status st = fg_gguf_writer_add_tensor(w, name, types[i], t->n_dims, t->ne, NULL);
        free(name);
        FG_TRY(st);
    }
    return FG_OK;
}

static bool same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int fg_cli_quantize(int argc, char **argv)
{
    enum { OPT_PURE = OPT_CMD_FIRST };
    static const struct option opts[] = {
        {"threads", required_argument, 0, 't'}, {"pure", no_argument, 0, OPT_PURE}, {"help", no_argument, 0, 'h'}, {0}};
    int32_t n_threads = 0;
    bool pure = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'h': help(); return 0;
        case 't': {
            int rc = fg_cli_parse_int("quantize", "--threads", optarg, 1, 1024, &n_threads);
            if (rc) return rc;
            break;
        }
        case OPT_PURE: pure = true; break;
        default: return fg_cli_usage_error("quantize", "unknown option");
        }
    }
    if (argc - optind != 3) return fg_cli_usage_error("quantize", "give IN.gguf OUT.gguf TYPE");
    const char *in = argv[optind], *out = argv[optind + 1], *tname = argv[optind + 2];
    const fg_qmix *mix = fg_qmix_find(tname);
    if (!mix) return fg_cli_usage_error("quantize", "unknown TYPE '%s'; valid: %s", tname, fg_qmix_names());
    if (same_file(in, out))
        return fg_cli_usage_error("quantize", "OUT '%s' is the input file; write to another file", out);

    fg_gguf *g = NULL;
    fg_gguf_writer *w = NULL;
    fg_type *types = NULL;
    quant_job job = {0};
    bool wrote = false;
    fg_status st = fg_gguf_open(in, &g);
    if (st != FG_OK) goto done;
    types = malloc((g->n_tensors ? g->n_tensors : 1) * sizeof *types);
    w = fg_gguf_writer_init();
    if (!types || !w) {
        st = fg_err_set(FG_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = fg_qmix_plan(g, mix, pure, types)) != FG_OK || (st = check_sources(g, types)) != FG_OK ||
        (st = build_writer(g, mix, types, w)) != FG_OK)
        goto done;
    if ((st = fg_pool_init(n_threads ? n_threads : fg_cpu_count(), &job.pool)) != FG_OK) goto done;

    job.g = g;
    job.types = types;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        job.total += g->tensors[i].nbytes;
        if (types[i] != g->tensors[i].type) job.n_quantized++;
        if (types[i] != g->tensors[i].type && types[i] != mix->base && fg_type_get(types[i])->block_size == 32 &&
            fg_type_get(mix->base)->block_size == 256)
            job.n_fallback++;
    }
    job.bar = job.total >= (256u << 20) && isatty(STDERR_FILENO);
    wrote = true;
    st = fg_gguf_writer_write_with(w, out, g->alignment, tensor_data, &job);
    if (job.drawn) fputc('\n', stderr);
    if (st == FG_OK) {
        struct stat so;
        uint64_t out_size = stat(out, &so) == 0 ? (uint64_t)so.st_size : 0;
        fprintf(stderr, "forge: %s -> %s (%s): %d of %llu tensors quantized, %.2f MB -> %.2f MB\n", in, out, mix->name,
                job.n_quantized, (unsigned long long)g->n_tensors, g->size / 1e6, out_size / 1e6);
        if (job.n_fallback)
            fprintf(stderr, "forge: %d tensors have rows that are not a multiple of 256 and use a 32-element type\n",
                    job.n_fallback);
    }

done:
    if (st != FG_OK && wrote) remove(out);
    fg_pool_free(job.pool);
    free(job.buf);
    free(job.scratch);
    free(types);
    fg_gguf_writer_free(w);
    fg_gguf_close(g);
    return st == FG_OK ? 0 : fg_cli_fail(st);
}
