/*
 * bench/ops.c — timings of the ops issue 7 added to the backend interface
 * (QK-norm, partial RoPE, GeGLU, sliding-window attention, the post-norm
 * add), each beside the llama path's comparable op on the same backend and
 * shapes, for bench/NOTES.md. Not a test: it checks only that each timed
 * op's output is finite (tests/gpu/test_gpu_ops.c checks the numbers).
 *
 * The pairs (model shapes from the Hugging Face configs):
 *   QK-norm    rms_norm per head (group = head_dim) over the q rows and the
 *              k rows, each vs the llama path's norm (group = the whole
 *              row, as the attention norm) over rows as wide: Qwen3-8B,
 *              Gemma-3-4B, Gemma-3-1B. Ratio of speed (the per-head norm
 *              reads a weight of head_dim, not of the row: fewer bytes).
 *   RoPE       rope (of q) and rope_store (q, k, then k and v into the
 *              cache) on GLM-4-9B's heads (32 q, 2 kv, head_dim 128) with
 *              n_rot 64, adjacent pairs (GLM) and NeoX, vs the llama path's
 *              full n_rot 128, adjacent pairs. Ratio of speed (llama us /
 *              new us: at least 1 means the partial rope is no slower).
 *   GeGLU      vs SwiGLU on the same gate/up width n_ff. Ratio of GB/s.
 *   add        out += x (the post-norm residual) vs SwiGLU over as many
 *              elements (both move three f32 streams). Ratio of GB/s.
 *   attention  window W vs window 0 on the same heads at context C (--ctx,
 *              default 8192): decode (8 sequences, one token each at
 *              position C - 1) and one prefill chunk (512 tokens ending at
 *              C - 1); Gemma-3-1B (W 512), Gemma-3-4B (W 1024), Mistral-7B
 *              (W 4096). KV positions attended per second (summed over
 *              query tokens), its ratio, and the speed-up; and against
 *              full attention at context W (the same keys per query,
 *              without a window: what the window should cost).
 * All but attention run at T = 1, 64 and 512 tokens.
 *
 * Bytes (GB/s is 1e9 bytes a second) are what an op must move, reads plus
 * writes: f32 activations, the norm's weight, f16 cache rows. rope counts
 * only the rotated dims it reads and writes; rope_store those of q, plus k
 * read in full, its rotated dims written back and k and v written to the
 * cache. Decode attention counts each sequence's attended K and V rows
 * once (the lower bound under GQA) plus q and out; prefill attention is
 * compute-bound and gets no GB/s. Each op reads the same buffers call
 * after call, so the smaller steps run from the cache (as an op does in a
 * model on what the op before it wrote): their GB/s can pass the memory's.
 *
 * Timing: in one step, n calls back to back (n = --reps, fewer if a batch
 * would take over ~0.25 s), then a read of one float, which waits for the
 * device; time per call = the batch's time / n, the median of 5 batches
 * after a warm-up batch. On the GPU, steps of up to 8 tokens (T = 1, and
 * decode attention) run their n calls as one captured graph, as decode
 * steps do, so they time the kernels rather than the host's launches
 * (FORGE_GPU_GRAPHS=0 times plain launches); larger steps are plain
 * launches, as prefill is. No weight matrix is placed, so no op takes the
 * fused int8 quantization that feeds a decode GEMV in a model: every row
 * times the plain kernel.
 *
 * Build: make BUILD=build build/bench-ops (GPU=none for the CPU only)
 * Run:   build/bench-ops [--device cpu|gpu] [--reps N] [--ctx C]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/gpu/gpu.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/threadpool.h"

enum {
    MAX_T = 512,     /* the largest step: activations hold this many rows */
    BLOCK = 16,      /* KV block size, as the engine's */
    POS0 = 1000,     /* position of the first token of the non-attention steps */
    BATCHES = 5,     /* timed batches per measurement (the median is reported) */
    DECODE_SEQS = 8, /* sequences of a decode attention step */
};

static const int32_t token_counts[] = {1, 64, 512};
enum { N_T = sizeof token_counts / sizeof *token_counts };

typedef struct model_shape {
    const char *name;
    int32_t n_embd, n_head, n_head_kv, head_dim, n_ff, window;
} model_shape;

static const model_shape llama3_8b = {"Llama-3-8B", 4096, 32, 8, 128, 14336, 0};
static const model_shape mistral_7b = {"Mistral-7B", 4096, 32, 8, 128, 14336, 4096};
static const model_shape qwen3_8b = {"Qwen3-8B", 4096, 32, 8, 128, 12288, 0};
static const model_shape glm4_9b = {"GLM-4-9B", 4096, 32, 2, 128, 13696, 0};
static const model_shape glm4_0414 = {"GLM-4-0414", 4096, 32, 2, 128, 13696, 0};
static const model_shape gemma3_4b = {"Gemma-3-4B", 2560, 8, 4, 256, 10240, 1024};
static const model_shape gemma3_1b = {"Gemma-3-1B", 1152, 4, 1, 256, 6912, 512};

/* The widest activation row of the non-attention sections (Llama-3-8B's n_ff). */
enum { MAX_WIDTH = 14336 };

/* ---- Set-up ------------------------------------------------------------------------ */

static bool use_gpu = true;
static int n_reps = 200;
static int32_t n_ctx = 8192;
static int n_bad; /* measurements whose output was not finite */

/* A bench is a program, not the library: a failed call ends it, with the
 * backend's message. */
static void need(fg_status st, const char *what)
{
    if (st == FG_OK) return;
    fprintf(stderr, "bench-ops: %s: %s\n", what, fg_last_error());
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench-ops: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static float unif(void) /* [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* A backend and what the ops run on: three activation buffers of MAX_T
 * rows of `width` floats holding random values in [-1, 1), which each op
 * views at its own row width; a norm weight of `width` values near 1; and a
 * KV pool of one layer. host_w is the norm weight's host copy (the CPU
 * backend's weight is a view of it). rig_close frees them all. */
typedef struct rig {
    fg_backend *be;
    fg_tensor buf[3]; /* (MAX_T, width) */
    fg_tensor norm_w; /* (width) F32 */
    float *host_w;    /* (width) */
} rig;

static rig rig_open(int64_t width, int64_t kv_slots, int64_t k_row, int64_t o_row)
{
    rig g = {0};
    if (use_gpu) need(fg_backend_gpu_init(0, &g.be), "the GPU backend");
    else need(fg_backend_cpu_init(0, false, &g.be), "the CPU backend");
    const fg_backend_ops *o = g.be->ops;
    float *host = xmalloc((size_t)(width * MAX_T) * sizeof *host);
    for (int i = 0; i < 3; i++) {
        need(o->alloc(g.be, width, MAX_T, &g.buf[i]), "an activation buffer");
        for (int64_t j = 0; j < width * MAX_T; j++) host[j] = unif();
        need(o->write(g.be, &g.buf[i], MAX_T, host), "filling an activation buffer");
    }
    free(host);
    g.host_w = xmalloc((size_t)width * sizeof *g.host_w);
    for (int64_t j = 0; j < width; j++) g.host_w[j] = 1.0f + 0.1f * unif();
    fg_weight_src t = {.name = "bench.norm.weight", .type = FG_TYPE_F32, .ne0 = width, .rows = 1, .data = g.host_w};
    need(o->weight(g.be, &t, &g.norm_w), "placing the norm weight");
    need(o->kv_alloc(g.be, 1, kv_slots, BLOCK, k_row, k_row, o_row, FG_TYPE_F16), "the KV pool");
    return g;
}

static void rig_close(rig *g)
{
    fg_backend_free(g->be);
    free(g->host_w);
    *g = (rig){0};
}

/* buf seen as rows of ne0 floats (ne0 at most its width, so at least MAX_T
 * rows of them fit). */
static fg_tensor view(const fg_tensor *buf, int64_t ne0)
{
    return (fg_tensor){.type = FG_TYPE_F32, .ne0 = ne0, .rows = buf->ne0 * buf->rows / ne0,
                       .row_bytes = (size_t)ne0 * sizeof(float), .data = buf->data};
}

/* The first `group` values of the rig's norm weight. */
static fg_tensor norm_weight(const rig *g, int64_t group)
{
    fg_tensor w = g->norm_w;
    w.ne0 = group;
    w.row_bytes = (size_t)group * sizeof(float);
    return w;
}

/* A step of T tokens of one sequence at positions POS0.., slots 0.. (the
 * non-attention sections; the pool has MAX_T slots). */
typedef struct plain_step {
    int32_t ids[MAX_T], pos[MAX_T], seq[MAX_T], slot[MAX_T], table[MAX_T / BLOCK];
    fg_batch b;
} plain_step;

static void plain_step_init(plain_step *s, int32_t T)
{
    for (int32_t t = 0; t < T; t++) s->ids[t] = 0, s->pos[t] = POS0 + t, s->seq[t] = 0, s->slot[t] = t;
    for (int32_t i = 0; i < MAX_T / BLOCK; i++) s->table[i] = i;
    s->b = (fg_batch){.n_tokens = T, .ids = s->ids, .pos = s->pos, .seq = s->seq, .slot = s->slot, .n_seqs = 1,
                      .max_blocks = MAX_T / BLOCK, .block_tables = s->table};
}

/* ---- One op, timed ----------------------------------------------------------------- */

typedef enum op_kind { OP_RMS_NORM, OP_ROPE, OP_ROPE_STORE, OP_SWIGLU, OP_GEGLU, OP_ADD, OP_ATTENTION } op_kind;

/* One op's call, its arguments by kind:
 *   rms_norm    a -> c with weight w over groups of `group`
 *   rope        a (q) in place;  rope_store  a (q), b (k) in place, b and c (v) into layer 0's cache
 *   swiglu, geglu  gate a, up b -> c;  add  c += a
 *   attention   q a -> c over layer 0's cache */
typedef struct op_call {
    op_kind kind;
    fg_tensor a, b, c, w;
    int64_t group;
    int32_t head_dim;
    fg_rope rope;
    fg_attn attn;
} op_call;

/* The ops as the forward plan calls them: producers with quant_out (on the
 * GPU, decode-sized steps then also leave the output quantized). */
static fg_status call(fg_backend *be, op_call *o)
{
    const fg_backend_ops *ops = be->ops;
    switch (o->kind) {
    case OP_RMS_NORM: return ops->rms_norm(be, &o->a, &o->w, o->group, 1e-6f, &o->c, true);
    case OP_ROPE: return ops->rope(be, &o->a, o->head_dim, &o->rope);
    case OP_ROPE_STORE: return ops->rope_store(be, 0, &o->a, &o->b, &o->c, o->head_dim, &o->rope);
    case OP_SWIGLU: return ops->swiglu(be, &o->a, &o->b, &o->c, true);
    case OP_GEGLU: return ops->geglu(be, &o->a, &o->b, &o->c);
    case OP_ADD: return ops->add(be, &o->a, &o->c);
    case OP_ATTENTION: return ops->attention(be, 0, &o->a, &o->attn, &o->c, true);
    }
    return fg_err_set(FG_ERR_INVALID_ARG, "bench-ops: unknown op %d", (int)o->kind);
}

/* The activations the op writes (1 or 2 of them). */
static int outputs(const op_call *o, const fg_tensor **out)
{
    switch (o->kind) {
    case OP_ROPE: out[0] = &o->a; return 1;
    case OP_ROPE_STORE: out[0] = &o->a, out[1] = &o->b; return 2;
    default: out[0] = &o->c; return 1;
    }
}

/* Reads one float of x: the read is queued behind every op so far and
 * waits for it, so it marks the device's completion. */
static void sync_on(fg_backend *be, const fg_tensor *x)
{
    fg_tensor one = {.type = FG_TYPE_F32, .ne0 = 1, .rows = 1, .row_bytes = sizeof(float), .data = x->data};
    float sink;
    need(be->ops->read(be, &one, 1, &sink), "the synchronizing read");
}

/* Fails the run (n_bad) if the step's rows of the op's outputs hold a
 * value that is not finite: a sanity guard, not a correctness check. */
static void check_finite(fg_backend *be, const op_call *o, int32_t T, const char *what)
{
    const fg_tensor *out[2];
    int n = outputs(o, out);
    for (int i = 0; i < n; i++) {
        size_t count = (size_t)(out[i]->ne0 * T);
        float *h = xmalloc(count * sizeof *h);
        need(be->ops->read(be, out[i], T, h), what);
        size_t j = 0;
        while (j < count && isfinite(h[j])) j++;
        if (j < count) {
            fprintf(stderr, "bench-ops: %s, %d tokens: output element %zu (row %zu) is %g\n", what, T, j,
                    j / (size_t)out[i]->ne0, h[j]);
            n_bad++;
        }
        free(h);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Seconds per call of o in step b (see the file's header for the method),
 * then the finite check of its output. b's graph_key is set here: a fresh
 * key for each measurement, so that a GPU step of up to 8 tokens captures
 * its batch of calls once and replays it. */
static double time_op(fg_backend *be, fg_batch *b, op_call *o, const char *what)
{
    static int32_t last_key;
    const fg_tensor *out[2];
    outputs(o, out);

    /* One call, synchronized, sizes the batches. */
    b->graph_key = 0;
    need(be->ops->step_begin(be, b), "step_begin");
    double t0 = fg_now_ms();
    need(call(be, o), what);
    sync_on(be, out[0]);
    double probe_s = (fg_now_ms() - t0) * 1e-3;
    int n = n_reps;
    if (probe_s * n > 0.25) n = (int)(0.25 / probe_s);
    if (n < 1) n = 1;

    b->graph_key = ++last_key;
    double per_call[BATCHES];
    for (int i = -1; i < BATCHES; i++) { /* batch -1 warms up (and captures the graph) */
        need(be->ops->step_begin(be, b), "step_begin");
        double t = fg_now_ms();
        for (int k = 0; k < n; k++) need(call(be, o), what);
        sync_on(be, out[0]);
        if (i >= 0) per_call[i] = (fg_now_ms() - t) * 1e-3 / n;
    }
    check_finite(be, o, b->n_tokens, what);
    qsort(per_call, BATCHES, sizeof *per_call, cmp_double);
    return per_call[BATCHES / 2];
}

/* ---- The T = 1, 64, 512 tables --------------------------------------------------------- */

/* One line of a table: an op at each token count. ref rows are the llama
 * path's op, the denominator of the lines below them. */
typedef struct row {
    const char *op, *model;
    char shape[32];
    double us[N_T], gbs[N_T];
} row;

static void table_head(const char *title, const char *ratio)
{
    printf("\n%s\nratio: %s\n", title, ratio);
    printf("%-30s", "");
    for (int i = 0; i < N_T; i++) {
        char t[24];
        snprintf(t, sizeof t, "T = %d", token_counts[i]);
        printf("  %-21s", t);
    }
    printf("\n%-10s %-10s %-8s", "op", "model", "shape");
    for (int i = 0; i < N_T; i++) printf("  %8s %6s %5s", "us", "GB/s", "ratio");
    printf("\n");
}

/* A time in us, to 3-4 significant digits, in a column of 8. */
static void print_us(double us)
{
    printf("%8.*f", us < 10 ? 2 : us < 1000 ? 1 : 0, us);
}

/* Prints r; its ratio to ref by GB/s, or by speed (ref us / r us); no
 * ratio for a ref row itself (ref NULL). */
static void print_row(const row *r, const row *ref, bool by_speed)
{
    printf("%-10s %-10s %-8s", r->op, r->model, r->shape);
    for (int i = 0; i < N_T; i++) {
        printf("  ");
        print_us(r->us[i]);
        printf(" %6.1f ", r->gbs[i]);
        if (ref) printf("%5.2f", by_speed ? ref->us[i] / r->us[i] : r->gbs[i] / ref->gbs[i]);
        else printf("%5s", "-");
    }
    printf("\n");
    fflush(stdout);
}

/* Times o at each token count into r; a step moves bytes_per_token * T +
 * fixed_bytes. */
static void measure(rig *g, op_call *o, row *r, double bytes_per_token, double fixed_bytes)
{
    char what[64];
    snprintf(what, sizeof what, "%s %s %s", r->op, r->model, r->shape);
    for (int i = 0; i < N_T; i++) {
        plain_step s;
        plain_step_init(&s, token_counts[i]);
        double sec = time_op(g->be, &s.b, o, what);
        r->us[i] = sec * 1e6;
        r->gbs[i] = (bytes_per_token * token_counts[i] + fixed_bytes) / sec / 1e9;
    }
}

/* rms_norm of rows of ne0 in groups of `group`: reads x and w, writes out. */
static row norm_row(rig *g, const char *op, const model_shape *m, int32_t heads, int64_t ne0, int64_t group)
{
    row r = {.op = op, .model = m->name};
    if (heads) snprintf(r.shape, sizeof r.shape, "%d x %lld", heads, (long long)group);
    else snprintf(r.shape, sizeof r.shape, "%lld", (long long)ne0);
    op_call o = {.kind = OP_RMS_NORM, .a = view(&g->buf[0], ne0), .c = view(&g->buf[2], ne0),
                 .w = norm_weight(g, group), .group = group};
    measure(g, &o, &r, 2.0 * (double)ne0 * sizeof(float), (double)group * sizeof(float));
    return r;
}

static void bench_qk_norm(rig *g)
{
    static const model_shape *models[] = {&qwen3_8b, &gemma3_4b, &gemma3_1b};
    table_head("QK-norm: rms_norm of each head (group = head_dim) of the q and the k rows,\n"
               "each after the llama path's norm (one group over the whole row) of a row as wide",
               "speed, the whole-row norm's us / this row's (the same elements; a head's norm reads\n"
               "       a weight of head_dim, not of the row, so GB/s is not the measure)");
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        const model_shape *m = models[i];
        int64_t hd = m->head_dim;
        row ref = norm_row(g, "row_norm", m, 0, m->n_head * hd, m->n_head * hd);
        print_row(&ref, NULL, false);
        row q = norm_row(g, "q_norm", m, m->n_head, m->n_head * hd, hd);
        print_row(&q, &ref, true);
        ref = norm_row(g, "row_norm", m, 0, m->n_head_kv * hd, m->n_head_kv * hd);
        print_row(&ref, NULL, false);
        row k = norm_row(g, "k_norm", m, m->n_head_kv, m->n_head_kv * hd, hd);
        print_row(&k, &ref, true);
    }
}

static void bench_rope(rig *g)
{
    const model_shape *m = &glm4_9b;
    int32_t hd = m->head_dim;
    int64_t q_row = (int64_t)m->n_head * hd, k_row = (int64_t)m->n_head_kv * hd;
    static const struct { int32_t div; fg_rope_mode mode; } cases[] = {
        {1, FG_ROPE_NORMAL}, {2, FG_ROPE_NORMAL}, {2, FG_ROPE_NEOX}};
    table_head("Partial RoPE on GLM-4-9B's heads (32 q, 2 kv, head_dim 128): n_rot 64 vs the llama path's\n"
               "full 128 (shape: n_rot and pairs; adj = adjacent, llama's normal mode and GLM's; neox = halves)",
               "speed, the full rope's us / this row's");
    for (int store = 0; store < 2; store++) {
        row ref = {0};
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            int32_t n_rot = hd / cases[c].div;
            bool neox = cases[c].mode == FG_ROPE_NEOX;
            row r = {.op = store ? "rope_store" : "rope", .model = m->name};
            snprintf(r.shape, sizeof r.shape, "%d %s", n_rot, neox ? "neox" : "adj");
            op_call o = {.kind = store ? OP_ROPE_STORE : OP_ROPE, .a = view(&g->buf[0], q_row),
                         .b = view(&g->buf[1], k_row), .c = view(&g->buf[2], k_row), .head_dim = hd,
                         .rope = {cases[c].mode, n_rot, 10000.0f, 1.0f, NULL}};
            /* q's rotated dims, read and written; rope_store also reads k
             * and v, writes k's rotated dims back and k and v as f16. */
            double bytes = 2.0 * m->n_head * n_rot * sizeof(float);
            if (store)
                bytes += (double)k_row * sizeof(float) + (double)m->n_head_kv * n_rot * sizeof(float) + k_row * 2.0 +
                         (double)k_row * sizeof(float) + k_row * 2.0;
            measure(g, &o, &r, bytes, 0);
            print_row(&r, c ? &ref : NULL, true);
            if (c == 0) ref = r;
        }
    }
}

/* swiglu or geglu over rows of n: reads gate and up, writes out. */
static row glu_row(rig *g, bool geglu, const model_shape *m, int64_t n)
{
    row r = {.op = geglu ? "geglu" : "swiglu", .model = m->name};
    snprintf(r.shape, sizeof r.shape, "%lld", (long long)n);
    op_call o = {.kind = geglu ? OP_GEGLU : OP_SWIGLU, .a = view(&g->buf[0], n), .b = view(&g->buf[1], n),
                 .c = view(&g->buf[2], n)};
    measure(g, &o, &r, 3.0 * (double)n * sizeof(float), 0);
    return r;
}

static void bench_glu(rig *g)
{
    static const model_shape *models[] = {&llama3_8b, &gemma3_4b, &gemma3_1b};
    table_head("GeGLU (gelu_tanh(gate) * up) vs SwiGLU (silu(gate) * up) on the same n_ff",
               "GB/s / SwiGLU's on the line above");
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        row ref = glu_row(g, false, models[i], models[i]->n_ff);
        print_row(&ref, NULL, false);
        row r = glu_row(g, true, models[i], models[i]->n_ff);
        print_row(&r, &ref, false);
    }
}

static void bench_add(rig *g)
{
    static const model_shape *models[] = {&glm4_0414, &gemma3_4b, &gemma3_1b};
    table_head("Post-norms: add (out += x, the residual after the sublayer's norm) vs SwiGLU over as many\n"
               "elements (n_embd: both read two f32 rows and write one)",
               "GB/s / SwiGLU's on the line above");
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        const model_shape *m = models[i];
        row ref = glu_row(g, false, m, m->n_embd);
        print_row(&ref, NULL, false);
        row r = {.op = "add", .model = m->name};
        snprintf(r.shape, sizeof r.shape, "%d", m->n_embd);
        op_call o = {.kind = OP_ADD, .a = view(&g->buf[0], m->n_embd), .c = view(&g->buf[2], m->n_embd)};
        measure(g, &o, &r, 3.0 * m->n_embd * sizeof(float), 0);
        print_row(&r, &ref, false);
    }
}

/* ---- Attention ---------------------------------------------------------------------------- */

/* Writes k and v rows (the rig's buffers 1 and 2, random) into every slot of
 * the pool, MAX_T a step, so that attention reads finite values wherever
 * it looks. */
static void fill_cache(rig *g, int64_t n_slots, int64_t k_row)
{
    int32_t ids[MAX_T] = {0}, pos[MAX_T], seq[MAX_T] = {0}, slot[MAX_T], table[1] = {0};
    fg_tensor k = view(&g->buf[1], k_row), v = view(&g->buf[2], k_row);
    for (int64_t s0 = 0; s0 < n_slots; s0 += MAX_T) {
        int32_t n = n_slots - s0 < MAX_T ? (int32_t)(n_slots - s0) : MAX_T;
        for (int32_t t = 0; t < n; t++) pos[t] = t, slot[t] = (int32_t)(s0 + t);
        fg_batch b = {.n_tokens = n, .ids = ids, .pos = pos, .seq = seq, .slot = slot, .n_seqs = 1, .max_blocks = 1,
                      .block_tables = table};
        need(g->be->ops->step_begin(g->be, &b), "filling the KV cache");
        need(g->be->ops->kv_store(g->be, 0, &k, &v), "filling the KV cache");
    }
}

/* Decode and a prefill chunk over m's heads: full attention at context
 * n_ctx, full attention at a context of m's window (as many keys per query
 * as the window holds), then m's window at n_ctx. Sequence s owns blocks
 * s * n_ctx / BLOCK.. of the pool, in order; decode steps one token of each
 * of DECODE_SEQS sequences at the context's last position, the chunk MAX_T
 * tokens of sequence 0 ending there (a context shorter than MAX_T: the
 * chunk is the first MAX_T positions). */
static void bench_attention_model(const model_shape *m)
{
    int32_t hd = m->head_dim, per_seq = n_ctx / BLOCK;
    int64_t q_row = (int64_t)m->n_head * hd, k_row = (int64_t)m->n_head_kv * hd, n_slots = (int64_t)DECODE_SEQS * n_ctx;
    rig g = rig_open(q_row > k_row ? q_row : k_row, n_slots, k_row, q_row);
    fill_cache(&g, n_slots, k_row);
    int32_t *tables = xmalloc((size_t)DECODE_SEQS * (size_t)per_seq * sizeof *tables);
    for (int32_t i = 0; i < DECODE_SEQS * per_seq; i++) tables[i] = i;
    int32_t ids[MAX_T], pos[MAX_T], seq[MAX_T], slot[MAX_T];
    for (int prefill = 0; prefill < 2; prefill++) {
        int32_t T = prefill ? MAX_T : DECODE_SEQS;
        double full_s = 0, full_rate = 0, span_s = 0;
        for (int vi = 0; vi < 3; vi++) {
            int32_t window = vi == 2 ? m->window : 0, ctx = vi == 1 ? m->window : n_ctx;
            if (vi == 1 && ctx > n_ctx) ctx = n_ctx;
            int32_t end = prefill && ctx < T ? T : ctx; /* one past the last query position */
            for (int32_t t = 0; t < T; t++) {
                ids[t] = 0;
                pos[t] = prefill ? end - T + t : end - 1;
                seq[t] = prefill ? 0 : t;
                slot[t] = prefill ? pos[t] : t * n_ctx + pos[t];
            }
            fg_batch b = {.n_tokens = T, .ids = ids, .pos = pos, .seq = seq, .slot = slot,
                          .n_seqs = prefill ? 1 : DECODE_SEQS, .max_blocks = per_seq, .block_tables = tables};
            op_call o = {.kind = OP_ATTENTION, .a = view(&g.buf[0], q_row), .c = view(&g.buf[1], q_row),
                         .attn = {m->n_head, m->n_head_kv, hd, hd, 1.0f / sqrtf((float)hd), window, 0.0f}};
            char what[64];
            snprintf(what, sizeof what, "attention %s window %d context %d", m->name, window, end);
            double sec = time_op(g.be, &b, &o, what);
            /* Each token attends to itself and the window - 1 before it. */
            double positions = 0;
            for (int32_t t = 0; t < T; t++) positions += window > 0 && pos[t] + 1 > window ? window : pos[t] + 1;
            double rate = positions / sec;
            char heads[24], step[24], gbs[16] = "-";
            snprintf(heads, sizeof heads, "%d/%d x %d", m->n_head, m->n_head_kv, hd);
            snprintf(step, sizeof step, prefill ? "prefill %d" : "decode %d x 1", T);
            if (!prefill)
                snprintf(gbs, sizeof gbs, "%.1f",
                         (positions * 2.0 * (double)k_row * 2.0 + 2.0 * T * (double)q_row * sizeof(float)) / sec / 1e9);
            printf("%-10s %-10s %6d %6d  %-13s ", m->name, heads, window, end, step);
            print_us(sec * 1e6);
            printf(" %9.1f %7s", rate / 1e6, gbs);
            if (vi == 0) full_s = sec, full_rate = rate;
            if (vi == 1) span_s = sec;
            if (vi < 2) printf(" %6s %7s %7s\n", "-", "-", "-");
            else if (prefill) printf(" %6.2f %7.2f %7s\n", rate / full_rate, full_s / sec, "-");
            else printf(" %6.2f %7.2f %7.2f\n", rate / full_rate, full_s / sec, span_s / sec);
            fflush(stdout);
        }
    }
    free(tables);
    rig_close(&g);
}

static void bench_attention(void)
{
    printf("\nSliding-window attention vs full (window 0) at context %d: decode = %d sequences x 1 token\n"
           "at position %d; prefill = one chunk of %d tokens of one sequence ending there\n",
           n_ctx, DECODE_SEQS, n_ctx - 1, MAX_T);
    printf("rows: full attention at that context, full attention at a context of the window's length,\n"
           "then the window at that context. Mpos/s: KV positions attended per second (1e6), summed\n"
           "over query tokens; rate: that / the first row's; speedup: the first row's us / this one's;\n"
           "vs span: the second row's us / this one's (decode: the same keys per query without a\n"
           "window; a prefill chunk at the window's context is a causal ramp, not comparable)\n");
    printf("%-10s %-10s %6s %6s  %-13s %8s %9s %7s %6s %7s %7s\n", "model", "heads", "window", "ctx", "step", "us",
           "Mpos/s", "GB/s", "rate", "speedup", "vs span");
    static const model_shape *models[] = {&gemma3_1b, &gemma3_4b, &mistral_7b};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) bench_attention_model(models[i]);
}

/* ---- main --------------------------------------------------------------------------------- */

static int usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--device cpu|gpu] [--reps N] [--ctx C]\n"
            "  --device   the backend to time (default gpu)\n"
            "  --reps     calls per timed batch (default 200; fewer where a batch would pass ~0.25 s)\n"
            "  --ctx      attention context, a multiple of %d from %d (default 8192)\n",
            argv0, BLOCK, MAX_T);
    return 2;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            const char *d = argv[++i];
            if (strcmp(d, "cpu") && strcmp(d, "gpu")) return usage(argv[0]);
            use_gpu = !strcmp(d, "gpu");
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            n_reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) {
            n_ctx = atoi(argv[++i]);
        } else {
            return usage(argv[0]);
        }
    }
    if (n_reps < 1 || n_ctx < MAX_T || n_ctx % BLOCK) return usage(argv[0]);

    /* The non-attention sections share one rig; its pool fits rope_store's
     * GLM-4 k and v rows for MAX_T tokens. */
    rig g = rig_open(MAX_WIDTH, MAX_T, (int64_t)glm4_9b.n_head_kv * glm4_9b.head_dim,
                     (int64_t)glm4_9b.n_head * glm4_9b.head_dim);
    if (use_gpu) {
        double bw = 0;
        need(fg_backend_gpu_measure_bw(g.be, &bw), "measuring the read bandwidth");
        printf("forge bench-ops: GPU backend, %s; read bandwidth %.0f GB/s\n", fg_backend_gpu_describe(g.be), bw);
    } else {
        printf("forge bench-ops: CPU backend, %d threads\n", fg_cpu_count());
    }
    printf("us: per call, the median of %d batches of up to %d back-to-back calls, each ended by a\n"
           "synchronizing read; GB/s: the bytes the op must read and write (bench/ops.c says which)\n",
           BATCHES, n_reps);
    bench_qk_norm(&g);
    bench_rope(&g);
    bench_glu(&g);
    bench_add(&g);
    rig_close(&g);
    bench_attention();
    if (n_bad) fprintf(stderr, "bench-ops: %d timed op%s wrote values that are not finite\n", n_bad, n_bad > 1 ? "s" : "");
    return n_bad ? 1 : 0;
}
