/*
 * gpu.cu — the GPU backend's host side (gpu.h): memory, the step's upload,
 * and one entry point per op of backend.h that checks its arguments, queues
 * its kernel on the backend's stream (the kernels/ files) and checks the launch.
 *
 * Written as C in a .cu file so that nvcc and hipcc compile it with the
 * kernels; compat.h maps the CUDA names to HIP.
 *
 * Ownership: the backend owns every device buffer it hands out (weights,
 * activations, KV pool), the pinned staging buffer of the step's inputs and
 * the stream; fg_backend_free releases them all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend/gpu/gpu.h"
#include "base/clock.h"
#include "base/err.h"
#include "gguf/quant.h"
#include "gguf/types.h"
}
#include "backend/gpu/compat.h"
#include "backend/gpu/kernels/kernels.h"

/* A captured step and the shape it was captured for. */
typedef struct gpu_graph {
    int32_t n_tokens, n_seqs, max_blocks, key;
    cudaGraphExec_t exec;
} gpu_graph;


/* FORGE_GPU_PROFILE's table: a row per op of the ops table (each reports
 * under its own name, as do step_begin and read), which the table's size in
 * pointers bounds, and one per kernel of the matmul and attention families
 * (their rows are "matmul.mmvq", "attention.tiled", ...). */
enum { PROF_ROWS = sizeof(fg_backend_ops) / sizeof(void *) + FG_GPU_MM_N_KERNELS + FG_GPU_ATTN_N_KERNELS };
typedef struct gpu_backend {
    fg_backend base;
    int device, warp;
    char desc[512];
    cudaStream_t stream;
    bool sync_each_op; /* FORGE_GPU_SYNC=1 */

    /* FORGE_GPU_PROFILE=1: each op is synchronized and timed from the end of
     * the op before it (so host work in between counts too); the totals go
     * to stderr when the backend is freed. */
    bool profile;
    double prof_last;
    struct prof_row {
        const char *op;
        double ms, gpu_ms;
        long calls;
    } prof[PROF_ROWS];
    int n_prof;
    cudaEvent_t prof_ev[2];

    /* Every device buffer handed out, freed with the backend. */
    void **allocs;
    size_t n_allocs, cap_allocs;

    /* The step's inputs: packed on the host in pinned memory (ids, pos, seq,
     * slot: n_tokens each; then the n_seqs x max_blocks block tables) and
     * uploaded in one copy. `uploaded` is recorded after that copy so the
     * next step waits for it before reusing the staging buffer. */
    int32_t cap_tokens;    /* the largest activation row count allocated */
    int64_t cap_step;      /* int32s in h_step / d_step */
    int32_t *h_step, *d_step;
    cudaEvent_t uploaded;
    bool upload_pending;
    int32_t n_tokens, n_seqs, max_blocks;
    bool tiles_uniform; /* every FG_GPU_ATTN_TILE-token tile is one sequence's consecutive positions */
    const int32_t *d_ids, *d_pos, *d_seq, *d_slot, *d_tables; /* into d_step */
    const fg_gpu_sample_row *d_sample;                           /* into d_step: n_sample rows */
    const int32_t *d_bias;                                       /* into d_step: their logit biases */
    int32_t n_sample;
    const int32_t *d_out_rows; /* into d_step: the gather op's n_out rows */
    int32_t n_out;
    const int32_t *h_ids;                                        /* into h_step */

    /* cuBLAS (CUDA builds): the handle on our stream, and its prefill
     * scratch (f16 weight slab + f16 activations), grown as weights and
     * activations are placed to fit the widest weight (max_k) and the
     * largest activation row count. */
    void *blas;
    void *blas_scratch;
    size_t blas_scratch_bytes;
    int64_t max_k;

    /* Split-KV decoding's partial results, for steps of up to
     * GRAPH_MAX_T tokens (sized at kv_alloc from the attention output row). */
    float *att_part;
    int64_t o_row;
    int n_sm;

    /* KV pool: per layer, n_slots rows of k_row / v_row halves. */
    int32_t n_layer, block_size;
    int64_t n_slots, k_row, v_row;
    void **k, **v;

    /* The matmuls' int8 activations: fg_gpu_matmul_scratch(max_k) bytes
     * (grown while weights load). */
    void *mm_scratch;
    size_t mm_scratch_bytes;
    /* Every op that launches takes the next number (GPU_OP). The hand-off
     * (backend.h): op number q8_op left the q8_T rows of q8_K elements at
     * q8_src quantized in mm_scratch; only op number q8_op + 1 reads them. */
    uint64_t op_seq, q8_op;
    const void *q8_src;
    int32_t q8_T;
    int64_t q8_K;
    /* The most tokens a matmul of the weights placed so far quantizes its
     * input for (at least 8): ops that feed a matmul quantize their output
     * for it up to this step size. */
    int32_t q8_max_t;
    /* Batch-invariant mode (fg_backend_gpu_set_batch_invariant). */
    bool invariant;

    /* Graphs (CUDA/HIP graphs; off with FORGE_GPU_GRAPHS=0, and under
     * FORGE_GPU_SYNC or FORGE_GPU_PROFILE). A step of at most GRAPH_MAX_T
     * tokens is captured the first time its shape (tokens, sequences, block
     * table width) is seen, from the end of step_begin's upload to its
     * read (or the next step_begin); later steps of that shape run the ops'
     * host-side checks only and launch the graph. Kernel arguments are the
     * same every time: all buffers are fixed at load, and what changes
     * between steps (ids, positions, slots, block tables) lives in the
     * step buffer the upload refreshes. */
    bool graphs, capturing, replay;
    int graph_at; /* the entry being captured or replayed */
    gpu_graph graph[8];
    int n_graph, graph_next;

    /* Sampled token ids, one per logits row (cap_tokens of them). */
    int32_t *d_picked;
    size_t picked_bytes;

    fg_gpu_transfers xfer;
} gpu_backend;

enum { GRAPH_MAX_T = 8 };

/* 32-bit words of a sampling row in the step buffer. */
enum { SAMPLE_WORDS = sizeof(fg_gpu_sample_row) / sizeof(int32_t) };

static gpu_backend *gpu(fg_backend *be)
{
    return (gpu_backend *)be;
}

/* ---- Errors ------------------------------------------------------------------ */

static fg_status gpu_fail(cudaError_t e, const char *what, const char *file, int line)
{
    return fg_err_set(FG_ERR_DEVICE, "GPU (%s): %s failed at %s:%d: %s", FG_GPU_API, what, file, line,
                      cudaGetErrorString(e));
}

#define GPU_TRY(call)                                                              \
    do {                                                                           \
        cudaError_t gpu_e_ = (call);                                               \
        if (gpu_e_ != cudaSuccess) return gpu_fail(gpu_e_, #call, __FILE__, __LINE__); \
    } while (0)

/* Profiling: an event before the op's launches (op_done records one after). */
static void op_start(gpu_backend *g)
{
    if (g->profile) (void)cudaEventRecord(g->prof_ev[0], g->stream);
}

static void prof_add(gpu_backend *g, const char *op, bool timed)
{
    double t = fg_now_ms();
    float gpu_ms = 0.0f;
    if (timed) (void)cudaEventElapsedTime(&gpu_ms, g->prof_ev[0], g->prof_ev[1]);
    int i = 0;
    while (i < g->n_prof && strcmp(g->prof[i].op, op) != 0) i++;
    if (i == g->n_prof) {
        FG_ASSERT(g->n_prof < PROF_ROWS);
        g->prof[g->n_prof++] = {.op = op, .ms = 0.0, .gpu_ms = 0.0, .calls = 0};
    }
    if (g->prof_last > 0) g->prof[i].ms += t - g->prof_last;
    g->prof[i].gpu_ms += gpu_ms;
    g->prof[i].calls++;
    g->prof_last = t;
}

/* After an op's launches: the launch error, and with FORGE_GPU_SYNC=1 the
 * op's execution error too, naming the op and the caller's line. */
static fg_status op_done(gpu_backend *g, cudaError_t launch, const char *op, const char *file, int line)
{
    if (launch != cudaSuccess) return gpu_fail(launch, op, file, line);
    if (g->profile) (void)cudaEventRecord(g->prof_ev[1], g->stream);
    if (g->sync_each_op || g->profile) {
        cudaError_t e = cudaStreamSynchronize(g->stream);
        if (e != cudaSuccess) return gpu_fail(e, op, file, line);
        if (g->profile) prof_add(g, op, true);
    }
    return FG_OK;
}

/* The one protocol of every op, after its host-side checks (which run on a
 * graph replay too): the op takes its number (op_seq, which ends any
 * hand-off but the one to it); on a replay the graph launches its kernels,
 * so nothing more; else the profiler's start event, the launch expression,
 * and op_done with the op's name (a string literal: the profile keeps the
 * pointer) and the caller's line. */
#define GPU_OP(g, name, launch) \
    ((g)->op_seq++, (g)->replay ? FG_OK : (op_start(g), op_done((g), (launch), (name), __FILE__, __LINE__)))

/* ---- Memory ------------------------------------------------------------------ */

/* The error for a failed allocation of `bytes` for `what`, with the free
 * memory and what to do; clears the runtime's sticky error first. */
static fg_status alloc_fail(gpu_backend *g, size_t bytes, const char *what)
{
    (void)cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    return fg_err_set(FG_ERR_NOMEM,
                      "GPU %d: cannot allocate %.1f MiB for %s (%.1f MiB free of %.1f MiB); use a smaller "
                      "context (-c) or batch (-b), a smaller model, or --device cpu",
                      g->device, bytes / 1048576.0, what, free_b / 1048576.0, total_b / 1048576.0);
}

static fg_status dev_alloc(gpu_backend *g, size_t bytes, const char *what, void **out)
{
    if (g->n_allocs == g->cap_allocs) {
        size_t cap = g->cap_allocs ? 2 * g->cap_allocs : 64;
        void **a = (void **)realloc(g->allocs, cap * sizeof *a);
        if (!a) return fg_err_set(FG_ERR_NOMEM, "gpu backend: out of host memory");
        g->allocs = a;
        g->cap_allocs = cap;
    }
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) return alloc_fail(g, bytes, what);
    g->allocs[g->n_allocs++] = p;
    *out = p;
    return FG_OK;
}

/* Grows a scratch buffer (*buf of *have bytes, replaced rather than kept in
 * the allocation list) to at least need bytes. Scratches grow as weights
 * and activations are placed, at load time only. */
static fg_status grow_dev(gpu_backend *g, void **buf, size_t *have, size_t need, const char *what)
{
    if (need <= *have) return FG_OK;
    if (*buf) GPU_TRY(cudaFree(*buf));
    *buf = NULL;
    *have = 0;
    if (cudaMalloc(buf, need) != cudaSuccess) {
        *buf = NULL;
        return alloc_fail(g, need, what);
    }
    *have = need;
    return FG_OK;
}

/* The prefill matmul's scratch, grown as weights and activations are placed
 * (both at load time) to fit the widest weight and the largest batch. */
static fg_status grow_blas(gpu_backend *g)
{
#if !defined(FG_GPU_HIP)
    if (!g->blas || g->cap_tokens <= FG_GPU_GEMV_MAX_T || g->max_k <= 0) return FG_OK;
    return grow_dev(g, &g->blas_scratch, &g->blas_scratch_bytes, fg_gpu_blas_scratch(g->max_k, g->cap_tokens),
                    "the prefill matmul scratch");
#endif
    return FG_OK;
}

static fg_status gpu_weight(fg_backend *be, const fg_weight_src *src, fg_tensor *out)
{
    gpu_backend *g = gpu(be);
    int64_t ne0 = src->ne0, rows = src->rows;
    bool vector = src->type == FG_TYPE_F32 && rows == 1; /* norms, biases, rope factors */
    if (!vector && !fg_gpu_type_ok(src->type, ne0)) {
        /* Where the CPU computes with the type (Q2_K, Q3_K), it is the way
         * out; where it does not either, requantizing is. */
        return fg_err_set(FG_ERR_UNSUPPORTED,
                          "tensor '%s' has type %s with rows of %lld, which the GPU backend does not support "
                          "(it computes with F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K and MXFP4); "
                          "%s",
                          src->name, fg_type_name(src->type), (long long)ne0,
                          fg_quant_supported(src->type) ? "use --device cpu"
                                                        : "quantize the model from its F16/BF16 original to one of "
                                                          "those (forge quantize)");
    }
    if (!vector && ne0 > g->max_k) g->max_k = ne0;
    for (int32_t t = g->q8_max_t * 2; !vector && t <= FG_GPU_Q8_ROWS; t *= 2)
        if (fg_gpu_matmul_pick(src->type, t, ne0, false, true, false) == FG_GPU_MM_MMVQ) g->q8_max_t = t;
    if (g->max_k > 0)
        FG_TRY(grow_dev(g, &g->mm_scratch, &g->mm_scratch_bytes, fg_gpu_matmul_scratch(g->max_k),
                        "the matmul activations"));
    char what[160];
    snprintf(what, sizeof what, "tensor '%.100s'", src->name);
    void *p;
    size_t file_rb = fg_type_row_size(src->type, ne0), rb = vector ? 0 : fg_gpu_weight_row_bytes(src->type, ne0);
    if (rb == 0) {
        size_t bytes = file_rb * (size_t)rows;
        FG_TRY(dev_alloc(g, bytes, what, &p));
        GPU_TRY(cudaMemcpyAsync(p, src->data, bytes, cudaMemcpyHostToDevice, g->stream));
        rb = file_rb;
    } else { /* rows at the regrouped stride, then regrouped in place */
        FG_TRY(dev_alloc(g, rb * (size_t)rows, what, &p));
        GPU_TRY(cudaMemcpy2DAsync(p, rb, src->data, file_rb, file_rb, (size_t)rows, cudaMemcpyHostToDevice, g->stream));
        GPU_TRY(fg_gpu_regroup(src->type, p, rb, rows, ne0, g->stream));
    }
    GPU_TRY(cudaStreamSynchronize(g->stream)); /* the mmap pages need not outlive the copy */
    *out = (fg_tensor){.type = src->type, .ne0 = ne0, .rows = rows, .row_bytes = rb, .data = p};
    return grow_blas(g);
}

static fg_status gpu_alloc(fg_backend *be, int64_t ne0, int64_t rows, fg_tensor *out)
{
    gpu_backend *g = gpu(be);
    size_t bytes = (size_t)ne0 * (size_t)rows * sizeof(float);
    void *p;
    FG_TRY(dev_alloc(g, bytes, "an activation buffer", &p));
    GPU_TRY(cudaMemsetAsync(p, 0, bytes, g->stream));
    if (rows > g->cap_tokens) g->cap_tokens = (int32_t)rows;
    FG_TRY(grow_dev(g, (void **)&g->d_picked, &g->picked_bytes, (size_t)g->cap_tokens * sizeof(int32_t),
                    "the sampled token ids"));
    *out = (fg_tensor){.type = FG_TYPE_F32, .ne0 = ne0, .rows = rows, .row_bytes = (size_t)ne0 * sizeof(float), .data = p};
    return grow_blas(g);
}

/* Sizes the step's input buffers for `need` int32s. The forward plan
 * allocates its activations before the KV pool, so kv_alloc sizes them for
 * its largest batch and a step never grows them; only a caller that steps
 * bigger batches than it allocated for (a test) reaches the growth here. */
static fg_status grow_step(gpu_backend *g, int64_t need)
{
    if (need <= g->cap_step) return FG_OK;
    if (g->upload_pending) GPU_TRY(cudaEventSynchronize(g->uploaded));
    g->upload_pending = false;
    if (g->h_step) GPU_TRY(cudaFreeHost(g->h_step));
    if (g->d_step) GPU_TRY(cudaFree(g->d_step));
    g->h_step = g->d_step = NULL;
    g->cap_step = 0;
    GPU_TRY(cudaMallocHost((void **)&g->h_step, (size_t)need * sizeof(int32_t)));
    if (cudaMalloc((void **)&g->d_step, (size_t)need * sizeof(int32_t)) != cudaSuccess) {
        g->d_step = NULL;
        return alloc_fail(g, (size_t)need * sizeof(int32_t), "the step's inputs");
    }
    g->cap_step = need;
    return FG_OK;
}

static fg_status gpu_kv_alloc(fg_backend *be, int32_t n_layer, int64_t n_slots, int32_t block_size, int64_t k_row,
                              int64_t v_row, int64_t o_row, fg_type type)
{
    gpu_backend *g = gpu(be);
    if (type != FG_TYPE_F16)
        return fg_err_set(FG_ERR_UNSUPPORTED, "the GPU backend keeps the KV cache in F16, not %s; drop --kv-type",
                          fg_type_name(type));
    double need = (double)n_layer * (double)n_slots * (double)(k_row + v_row) * 2.0;
    size_t free_b = 0, total_b = 0;
    GPU_TRY(cudaMemGetInfo(&free_b, &total_b));
    if (need > (double)free_b) {
        return fg_err_set(FG_ERR_NOMEM,
                          "GPU %d: the KV cache for %lld tokens needs %.1f MiB but %.1f MiB are free; use a smaller "
                          "context (-c)",
                          g->device, (long long)n_slots, need / 1048576.0, free_b / 1048576.0);
    }
    g->k = (void **)calloc((size_t)n_layer, sizeof *g->k);
    g->v = (void **)calloc((size_t)n_layer, sizeof *g->v);
    if (!g->k || !g->v) return fg_err_set(FG_ERR_NOMEM, "gpu backend: out of host memory");
    for (int32_t l = 0; l < n_layer; l++) {
        FG_TRY(dev_alloc(g, (size_t)n_slots * (size_t)k_row * 2, "the KV cache", &g->k[l]));
        FG_TRY(dev_alloc(g, (size_t)n_slots * (size_t)v_row * 2, "the KV cache", &g->v[l]));
    }
    /* Head dims are even (the attention kernel requires it), so o_row / 2
     * bounds the query heads. */
    int32_t n_head_max = (int32_t)(o_row / 2);
    void *part;
    FG_TRY(dev_alloc(g, fg_gpu_attention_scratch(GRAPH_MAX_T, o_row, n_head_max), "split-KV attention", &part));
    g->att_part = (float *)part;

    g->o_row = o_row;
    g->n_layer = n_layer;
    g->n_slots = n_slots;
    g->block_size = block_size;
    g->k_row = k_row;
    g->v_row = v_row;

    /* The step buffer: four per-token arrays, block tables of up to
     * cap_tokens sequences (a batch has at most one sequence per token),
     * a sampling row and its most logit biases per sequence. */
    int32_t cap = g->cap_tokens > 0 ? g->cap_tokens : 1;
    return grow_step(g, (5 + SAMPLE_WORDS + 2 * FG_MAX_LOGIT_BIAS) * (int64_t)cap +
                            (int64_t)cap * ((n_slots + block_size - 1) / block_size));
}

/* ---- Graphs ---------------------------------------------------------------------- */

/* Ends a capture in progress (instantiating it) and launches the step's
 * graph if the ops were captured or skipped for a replay. */
static fg_status graph_finish(gpu_backend *g)
{
    if (g->capturing) {
        g->capturing = false;
        cudaGraph_t graph = NULL;
        GPU_TRY(cudaStreamEndCapture(g->stream, &graph));
        gpu_graph *e = &g->graph[g->graph_at];
        if (e->exec) GPU_TRY(cudaGraphExecDestroy(e->exec));
        e->exec = NULL;
        cudaError_t err = cudaGraphInstantiate(&e->exec, graph, 0);
        (void)cudaGraphDestroy(graph);
        if (err != cudaSuccess) {
            e->n_tokens = -1;
            return gpu_fail(err, "cudaGraphInstantiate", __FILE__, __LINE__);
        }
        g->replay = true;
    }
    if (g->replay) {
        g->replay = false;
        GPU_TRY(cudaGraphLaunch(g->graph[g->graph_at].exec, g->stream));
    }
    return FG_OK;
}

/* After the step's upload: replay a graph of this shape, or capture one. */
static fg_status graph_start(gpu_backend *g, int32_t n_tokens, int32_t n_seqs, int32_t max_blocks, int32_t key)
{
    if (!g->graphs || key == 0 || n_tokens > GRAPH_MAX_T) return FG_OK;
    for (int i = 0; i < g->n_graph; i++) {
        gpu_graph *e = &g->graph[i];
        if (e->exec && e->n_tokens == n_tokens && e->n_seqs == n_seqs && e->max_blocks == max_blocks && e->key == key) {
            g->graph_at = i;
            g->replay = true;
            return FG_OK;
        }
    }
    int at = g->n_graph < (int)(sizeof g->graph / sizeof *g->graph) ? g->n_graph++ : g->graph_next++ % g->n_graph;
    g->graph[at].n_tokens = n_tokens;
    g->graph[at].n_seqs = n_seqs;
    g->graph[at].max_blocks = max_blocks;
    g->graph[at].key = key;
    g->graph_at = at;
    GPU_TRY(cudaStreamBeginCapture(g->stream, cudaStreamCaptureModeThreadLocal));
    g->capturing = true;
    return FG_OK;
}

/* ---- The step's inputs --------------------------------------------------------- */

static fg_status gpu_step_begin(fg_backend *be, const fg_batch *b)
{
    gpu_backend *g = gpu(be);
    FG_ASSERT(g->k); /* kv_alloc came first */
    FG_TRY(fg_batch_check(b, g->n_slots, "gpu backend"));
    /* The step buffer: ids, pos, seq, slot (n each), block tables, sampling
     * rows, gathered rows, the rows' logit biases. */
    int64_t n = b->n_tokens, tables = (int64_t)b->n_seqs * b->max_blocks, n_sample = b->n_sample, n_out = b->n_out,
            at_sample = 4 * n + tables, at_out = at_sample + SAMPLE_WORDS * n_sample, at_bias = at_out + n_out,
            n_bias = 0;
    for (int64_t r = 0; r < n_sample; r++) {
        if (b->sample[r].n_bias < 0 || b->sample[r].n_bias > FG_MAX_LOGIT_BIAS || (b->sample[r].n_bias > 0 && !b->sample[r].bias))
            return fg_err_set(FG_ERR_INVALID_ARG, "gpu backend: sampling row %lld has %d logit biases (0..%d)",
                              (long long)r, b->sample[r].n_bias, FG_MAX_LOGIT_BIAS);
        n_bias += b->sample[r].n_bias;
    }
    int64_t need = at_bias + 2 * n_bias;
    FG_TRY(grow_step(g, need));
    FG_TRY(graph_finish(g)); /* a step without a read */
    if (g->upload_pending) GPU_TRY(cudaEventSynchronize(g->uploaded));
    g->op_seq++; /* no hand-off crosses steps */
    int32_t *h = g->h_step;
    memcpy(h, b->ids, (size_t)n * 4);
    memcpy(h + n, b->pos, (size_t)n * 4);
    memcpy(h + 2 * n, b->seq, (size_t)n * 4);
    memcpy(h + 3 * n, b->slot, (size_t)n * 4);
    memcpy(h + 4 * n, b->block_tables, (size_t)tables * 4);
    for (int64_t r = 0, bias_at = 0; r < n_sample; r++) {
        const fg_sample_row *sr = &b->sample[r];
        uint64_t u;
        memcpy(&u, &sr->u, 8);
        fg_gpu_sample_row row = {.temperature = sr->temperature, .top_k = sr->top_k, .top_p = sr->top_p,
                                 .min_p = sr->min_p, .u_lo = (uint32_t)u, .u_hi = (uint32_t)(u >> 32),
                                 .bias_at = (int32_t)bias_at, .n_bias = sr->n_bias};
        memcpy(h + at_sample + SAMPLE_WORDS * r, &row, sizeof row);
        for (int32_t i = 0; i < sr->n_bias; i++, bias_at++) {
            h[at_bias + 2 * bias_at] = sr->bias[i].token;
            memcpy(h + at_bias + 2 * bias_at + 1, &sr->bias[i].bias, 4);
        }
    }
    if (n_out > 0) memcpy(h + at_out, b->out_rows, (size_t)n_out * 4);
    GPU_TRY(cudaMemcpyAsync(g->d_step, h, (size_t)need * 4, cudaMemcpyHostToDevice, g->stream));
    GPU_TRY(cudaEventRecord(g->uploaded, g->stream));
    g->upload_pending = true;
    if (g->profile) {
        GPU_TRY(cudaStreamSynchronize(g->stream));
        prof_add(g, "step_begin", false);
    }
    g->xfer.uploads++;
    g->xfer.bytes_up += (uint64_t)need * 4;
    g->tiles_uniform = true;
    for (int64_t t = 0; t < n && g->tiles_uniform; t++) {
        int64_t t0 = t - t % FG_GPU_ATTN_TILE;
        g->tiles_uniform = b->seq[t] == b->seq[t0] && b->pos[t] == b->pos[t0] + (t - t0);
    }
    g->n_tokens = (int32_t)n;
    g->n_seqs = b->n_seqs;
    g->max_blocks = b->max_blocks;
    g->h_ids = h;
    g->d_ids = g->d_step;
    g->d_pos = g->d_step + n;
    g->d_seq = g->d_step + 2 * n;
    g->d_slot = g->d_step + 3 * n;
    g->d_tables = g->d_step + 4 * n;
    g->d_sample = (const fg_gpu_sample_row *)(g->d_step + at_sample);
    g->d_bias = g->d_step + at_bias;
    g->n_sample = (int32_t)n_sample;
    g->d_out_rows = g->d_step + at_out;
    g->n_out = (int32_t)n_out;
    return graph_start(g, (int32_t)n, b->n_seqs, b->max_blocks, b->graph_key);
}

/* ---- Ops ------------------------------------------------------------------------- */

/* Whether an op whose output rows have ne0 elements can leave them
 * quantized for the integer GEMV as it writes them (decode-sized steps). */
static bool q8_fusable(const gpu_backend *g, int64_t ne0)
{
    return g->n_tokens <= g->q8_max_t && ne0 % 32 == 0 && g->mm_scratch &&
           g->mm_scratch_bytes >= fg_gpu_matmul_scratch(ne0);
}

/* The op about to take its number (the next GPU_OP) leaves out's step rows
 * of ne0 quantized in the scratch, for the op after it. Called before
 * GPU_OP, so that a replay keeps the same account. */
static void q8_hand_off(gpu_backend *g, const fg_tensor *out, int64_t ne0)
{
    g->q8_op = g->op_seq + 1;
    g->q8_src = out->data;
    g->q8_T = g->n_tokens;
    g->q8_K = ne0;
}

/* Whether the op about to take its number may read x's T rows of K from
 * the scratch: the plan says the op before handed them over (quant_in) and
 * that op did. A hand-off of other rows is a plan that breaks backend.h's
 * contract. */
static bool q8_handed(const gpu_backend *g, bool quant_in, const fg_tensor *x, int32_t T, int64_t K)
{
    if (!quant_in || g->q8_op != g->op_seq || g->q8_T != T) return false;
    FG_ASSERT(g->q8_src == x->data && g->q8_K == K);
    return true;
}

static int64_t ld(const fg_tensor *t)
{
    return (int64_t)(t->row_bytes / sizeof(float));
}

static fg_status gpu_embed(fg_backend *be, const fg_tensor *table, fg_tensor *out)
{
    gpu_backend *g = gpu(be);
    for (int32_t t = 0; t < g->n_tokens; t++) {
        if (g->h_ids[t] < 0 || g->h_ids[t] >= table->rows)
            return fg_err_set(FG_ERR_INVALID_ARG, "token id %d is outside the vocabulary (%lld tokens)", g->h_ids[t],
                              (long long)table->rows);
    }
    return GPU_OP(g, "embed",
                  fg_gpu_embed(table->type, table->data, table->row_bytes, table->ne0, g->d_ids, g->n_tokens,
                               (float *)out->data, ld(out), g->stream));
}

static fg_status gpu_rms_norm(fg_backend *be, const fg_tensor *x, const fg_tensor *w, int64_t group, float eps,
                              fg_tensor *out, bool quant_out)
{
    gpu_backend *g = gpu(be);
    FG_ASSERT(w->type == FG_TYPE_F32 && w->ne0 == group && x->ne0 % group == 0);
    if (quant_out && group == x->ne0 && q8_fusable(g, x->ne0)) {
        q8_hand_off(g, out, x->ne0);
        return GPU_OP(g, "rms_norm",
                      fg_gpu_rms_norm_q8((const float *)x->data, ld(x), (const float *)w->data, x->ne0, eps,
                                         g->n_tokens, (float *)out->data, ld(out), g->mm_scratch, g->stream));
    }
    return GPU_OP(g, "rms_norm",
                  fg_gpu_rms_norm((const float *)x->data, ld(x), (const float *)w->data, x->ne0, group, eps,
                                  g->n_tokens, (float *)out->data, ld(out), g->stream));
}

/* fg_gpu_matmul_pick for w over T tokens in this backend: cuBLAS where its
 * scratch was sized for the shape (CUDA). */
static fg_gpu_mm_kernel mm_pick(const gpu_backend *g, int type, int32_t T, int64_t K)
{
    bool scratch = g->mm_scratch && g->mm_scratch_bytes >= fg_gpu_matmul_scratch(K);
    bool blas = g->blas_scratch && T <= g->cap_tokens && K <= g->max_k;
    return fg_gpu_matmul_pick(type, T, K, g->invariant, scratch, blas);
}

/* The profile's row of each matmul and attention kernel: string literals
 * (the profile keeps the pointers), in pick.h's order. */
static const char *const mm_op_name[] = {"matmul.gemv", "matmul.gemm", "matmul.mmvq",
                                         "matmul.mmvq_chunks", "matmul.mmq", "matmul.blas"};
static const char *const attn_op_name[] = {"attention.tiled", "attention.gqa", "attention.decode", "attention.split"};
static_assert(sizeof mm_op_name / sizeof *mm_op_name == FG_GPU_MM_N_KERNELS, "a profile row per matmul kernel");
static_assert(sizeof attn_op_name / sizeof *attn_op_name == FG_GPU_ATTN_N_KERNELS, "a profile row per attention kernel");

static fg_status gpu_matmul(fg_backend *be, const fg_tensor *w, const fg_tensor *bias, const fg_tensor *x,
                            const fg_tensor *add, int32_t rows, fg_tensor *out, bool quant_in)
{
    gpu_backend *g = gpu(be);
    int32_t T = rows ? rows : g->n_tokens;
    FG_ASSERT(x->ne0 == w->ne0 && ld(x) % 4 == 0); /* x rows are read as float4 */
    FG_ASSERT(!bias || (bias->type == FG_TYPE_F32 && bias->ne0 == w->rows));
    fg_gpu_mm_kernel k = mm_pick(g, w->type, T, w->ne0);
    const float *b = bias ? (const float *)bias->data : NULL, *a = add ? (const float *)add->data : NULL;
#if !defined(FG_GPU_HIP)
    if (k == FG_GPU_MM_BLAS)
        return GPU_OP(g, mm_op_name[k],
                      fg_gpu_matmul_blas(g->blas, w->type, w->data, w->row_bytes, w->rows, w->ne0,
                                         (const float *)x->data, ld(x), T, b, a, add ? ld(add) : 0,
                                         (float *)out->data, ld(out), g->blas_scratch, g->stream));
#endif
    bool ready = k == FG_GPU_MM_MMVQ && q8_handed(g, quant_in, x, T, w->ne0);
    /* Its quantization of x goes on to a matmul of the same x right after
     * (q, k and v of different types). */
    if (k == FG_GPU_MM_MMVQ && out->data != x->data && T == g->n_tokens) q8_hand_off(g, x, w->ne0);
    return GPU_OP(g, mm_op_name[k],
                  fg_gpu_matmul(k, w->type, w->data, w->row_bytes, w->rows, w->ne0, (const float *)x->data, ld(x), T,
                                b, a, add ? ld(add) : 0, (float *)out->data, ld(out), g->mm_scratch, ready,
                                g->invariant, g->warp, g->stream));
}

/* One launch for all n when they can share it (same type and row length,
 * the integer GEMV of a step of at most FG_GPU_GEMV_SLOTS tokens or the
 * tensor-core GEMM, not batch-invariant); otherwise n matmuls, each
 * handing its quantization of x to the next. */
static fg_status gpu_matmul_n(fg_backend *be, int n, const fg_tensor *const *w, const fg_tensor *const *bias,
                              const fg_tensor *x, fg_tensor *const *out, bool quant_in)
{
    gpu_backend *g = gpu(be);
    int32_t T = g->n_tokens;
    fg_gpu_mm_kernel k = mm_pick(g, w[0]->type, T, x->ne0);
    bool one = n >= 2 && n <= 3 && fg_gpu_matmul_n_ok(k, T) && !g->invariant && ld(x) % 4 == 0;
    for (int i = 0; one && i < n; i++) {
        one = w[i]->type == w[0]->type && w[i]->ne0 == x->ne0 && out[i]->data != x->data;
        if (bias && bias[i]) FG_ASSERT(bias[i]->type == FG_TYPE_F32 && bias[i]->ne0 == w[i]->rows);
    }
    if (!one) {
        for (int i = 0; i < n; i++)
            FG_TRY(gpu_matmul(be, w[i], bias ? bias[i] : NULL, x, NULL, 0, out[i], quant_in || i > 0));
        return FG_OK;
    }
    fg_gpu_mm_out outs[3];
    for (int i = 0; i < n; i++)
        outs[i] = (fg_gpu_mm_out){.w = w[i]->data, .row_bytes = w[i]->row_bytes, .N = w[i]->rows,
                                  .bias = bias && bias[i] ? (const float *)bias[i]->data : NULL,
                                  .y = (float *)out[i]->data, .ldy = ld(out[i])};
    bool ready = k == FG_GPU_MM_MMVQ && q8_handed(g, quant_in, x, T, x->ne0);
    if (k == FG_GPU_MM_MMVQ) q8_hand_off(g, x, x->ne0);
    return GPU_OP(g, mm_op_name[k],
                  fg_gpu_matmul_n(k, w[0]->type, n, outs, x->ne0, (const float *)x->data, ld(x), T, g->mm_scratch,
                                  ready, g->warp, g->stream));
}

static fg_status gpu_gather(fg_backend *be, const fg_tensor *x, fg_tensor *out)
{
    gpu_backend *g = gpu(be);
    FG_ASSERT(out->ne0 == x->ne0 && out->rows >= g->n_out);
    if (g->n_out == 0) return FG_OK; /* writes nothing */
    return GPU_OP(g, "gather",
                  fg_gpu_gather((const float *)x->data, ld(x), x->ne0, g->d_out_rows, g->n_out, (float *)out->data,
                                ld(out), g->stream));
}

static fg_status gpu_rope(fg_backend *be, fg_tensor *x, int32_t head_dim, const fg_rope *rp)
{
    gpu_backend *g = gpu(be);
    FG_ASSERT(rp->n_rot % 2 == 0 && rp->n_rot <= head_dim && x->ne0 % head_dim == 0);
    return GPU_OP(g, "rope",
                  fg_gpu_rope((float *)x->data, ld(x), x->ne0, head_dim, rp->mode == FG_ROPE_NEOX, rp->n_rot,
                              rp->base, rp->freq_scale, rp->freq_factors, g->d_pos, g->n_tokens, g->stream));
}

static fg_status gpu_kv_store(fg_backend *be, int32_t layer, const fg_tensor *k, const fg_tensor *v)
{
    gpu_backend *g = gpu(be);
    FG_ASSERT(layer >= 0 && layer < g->n_layer && k->ne0 == g->k_row && v->ne0 == g->v_row);
    return GPU_OP(g, "kv_store",
                  fg_gpu_kv_store((const float *)k->data, ld(k), (const float *)v->data, ld(v), g->k_row, g->v_row,
                                  g->d_slot, g->n_tokens, g->k[layer], g->v[layer], g->stream));
}

static fg_status gpu_rope_store(fg_backend *be, int32_t layer, fg_tensor *q, fg_tensor *k, const fg_tensor *v,
                                int32_t head_dim, const fg_rope *rp)
{
    gpu_backend *g = gpu(be);
    FG_ASSERT(rp->n_rot % 2 == 0 && rp->n_rot <= head_dim && q->ne0 % head_dim == 0);
    FG_ASSERT(layer >= 0 && layer < g->n_layer && k->ne0 == g->k_row && v->ne0 == g->v_row && k->ne0 % head_dim == 0);
    fg_gpu_rope_store_args a = {.q = (float *)q->data, .ldq = ld(q), .k = (float *)k->data, .ldk = ld(k),
                                .v = (const float *)v->data, .ldv = ld(v), .n_head = (int32_t)(q->ne0 / head_dim),
                                .head_dim = head_dim, .n_rot = rp->n_rot, .neox = rp->mode == FG_ROPE_NEOX,
                                .freq_scale = rp->freq_scale, .ff = rp->freq_factors, .pos = g->d_pos,
                                .slot = g->d_slot, .kc = (__half *)g->k[layer], .vc = (__half *)g->v[layer],
                                .k_row = g->k_row, .v_row = g->v_row};
    return GPU_OP(g, "rope_store", fg_gpu_rope_store(&a, rp->base, g->n_tokens, g->stream));
}

/* The attention arguments of the step's q rows in layer. */
static fg_gpu_attn_args attn_args(const gpu_backend *g, int32_t layer, const fg_tensor *q, const fg_attn *a,
                                  fg_tensor *out)
{
    return (fg_gpu_attn_args){.q = q ? (const float *)q->data : NULL, .ldq = q ? ld(q) : 0,
                              .kc = layer >= 0 ? g->k[layer] : NULL, .vc = layer >= 0 ? g->v[layer] : NULL,
                              .k_row = g->k_row, .v_row = g->v_row, .pos = g->d_pos, .seq = g->d_seq,
                              .block_tables = g->d_tables, .max_blocks = g->max_blocks, .block_size = g->block_size,
                              .n_tokens = g->n_tokens, .n_head = a->n_head, .n_head_kv = a->n_head_kv,
                              .head_dim_k = a->head_dim_k, .head_dim_v = a->head_dim_v, .scale = a->scale,
                              .softcap = a->softcap, .window = a->window, .out = out ? (float *)out->data : NULL,
                              .ldo = out ? ld(out) : 0};
}

static fg_gpu_attn_kernel attn_pick(const gpu_backend *g, const fg_gpu_attn_args *args, bool tiles_uniform,
                                    int *splits)
{
    fg_gpu_attn_where w = {.warp = g->warp, .n_sm = g->n_sm, .invariant = g->invariant,
                           .tiles_uniform = tiles_uniform, .split_max_t = GRAPH_MAX_T, .part_row = g->o_row};
    return fg_gpu_attention_pick(args, &w, splits);
}

static fg_status gpu_attention(fg_backend *be, int32_t layer, const fg_tensor *q, const fg_attn *a, fg_tensor *out,
                               bool quant_out)
{
    gpu_backend *g = gpu(be);
    FG_ASSERT(a->n_head % a->n_head_kv == 0 && a->n_head_kv * a->head_dim_k == g->k_row &&
              a->n_head_kv * a->head_dim_v == g->v_row);
    if (a->head_dim_k > 256 || a->head_dim_v > 256 || a->head_dim_k % 2)
        return fg_err_set(FG_ERR_UNSUPPORTED, "the GPU attention kernel handles even head dims up to 256, not %d/%d",
                          a->head_dim_k, a->head_dim_v);
    fg_gpu_attn_args args = attn_args(g, layer, q, a, out);
    int splits;
    fg_gpu_attn_kernel k = attn_pick(g, &args, g->tiles_uniform, &splits);
    const char *name = attn_op_name[k];
    if (k == FG_GPU_ATTN_TILED) return GPU_OP(g, name, fg_gpu_attention_tiled(&args, g->stream));
    if (k == FG_GPU_ATTN_GQA) return GPU_OP(g, name, fg_gpu_attention_gqa(&args, g->warp, g->stream));
    /* The split merge quantizes the output for the matmul that follows. */
    bool q8 = quant_out && splits > 1 && g->att_part && a->head_dim_v % 32 == 0 &&
              out->ne0 == (int64_t)a->n_head * a->head_dim_v && q8_fusable(g, out->ne0);
    void *q8s = q8 ? g->mm_scratch : NULL;
    if (q8) q8_hand_off(g, out, out->ne0);
    if (k == FG_GPU_ATTN_DECODE)
        return GPU_OP(g, name, fg_gpu_attention_decode(&args, splits, g->att_part, q8s, g->stream));
    return GPU_OP(g, name, fg_gpu_attention(&args, splits, g->att_part, q8s, g->warp, g->stream));
}

static fg_status gpu_swiglu(fg_backend *be, const fg_tensor *gate, const fg_tensor *up, fg_tensor *out, bool quant_out)
{
    gpu_backend *g = gpu(be);
    if (quant_out && q8_fusable(g, gate->ne0)) {
        q8_hand_off(g, out, gate->ne0);
        return GPU_OP(g, "swiglu",
                      fg_gpu_swiglu_q8((const float *)gate->data, ld(gate), (const float *)up->data, ld(up), gate->ne0,
                                       g->n_tokens, (float *)out->data, ld(out), g->mm_scratch, g->stream));
    }
    return GPU_OP(g, "swiglu",
                  fg_gpu_swiglu((const float *)gate->data, ld(gate), (const float *)up->data, ld(up), gate->ne0,
                                g->n_tokens, (float *)out->data, ld(out), g->stream));
}

static fg_status gpu_add(fg_backend *be, const fg_tensor *x, fg_tensor *out)
{
    gpu_backend *g = gpu(be);
    FG_ASSERT(x->ne0 == out->ne0);
    return GPU_OP(g, "add",
                  fg_gpu_add((const float *)x->data, ld(x), x->ne0, g->n_tokens, (float *)out->data, ld(out),
                             g->stream));
}

static fg_status gpu_geglu(fg_backend *be, const fg_tensor *gate, const fg_tensor *up, fg_tensor *out)
{
    gpu_backend *g = gpu(be);
    return GPU_OP(g, "geglu",
                  fg_gpu_geglu((const float *)gate->data, ld(gate), (const float *)up->data, ld(up), gate->ne0,
                               g->n_tokens, (float *)out->data, ld(out), g->stream));
}

static fg_status gpu_scale(fg_backend *be, fg_tensor *x, float s)
{
    gpu_backend *g = gpu(be);
    return GPU_OP(g, "scale", fg_gpu_scale((float *)x->data, ld(x), x->ne0, g->n_tokens, s, g->stream));
}

/* ---- Copies ------------------------------------------------------------------------ */

/* Waits for the step's download (queued on the stream) and counts it;
 * op names it in the profile, or NULL. */
static fg_status download_done(gpu_backend *g, uint64_t bytes, const char *op)
{
    GPU_TRY(cudaStreamSynchronize(g->stream));
    if (g->profile && op) prof_add(g, op, false);
    g->xfer.downloads++;
    g->xfer.bytes_down += bytes;
    return FG_OK;
}

static fg_status gpu_read(fg_backend *be, const fg_tensor *x, int32_t rows, float *host)
{
    gpu_backend *g = gpu(be);
    FG_TRY(graph_finish(g));
    size_t row = (size_t)x->ne0 * sizeof(float);
    if (x->row_bytes == row) {
        GPU_TRY(cudaMemcpyAsync(host, x->data, row * (size_t)rows, cudaMemcpyDeviceToHost, g->stream));
    } else {
        for (int32_t r = 0; r < rows; r++)
            GPU_TRY(cudaMemcpyAsync(host + (size_t)r * (size_t)x->ne0, (const char *)x->data + (size_t)r * x->row_bytes,
                                    row, cudaMemcpyDeviceToHost, g->stream));
    }
    return download_done(g, (uint64_t)row * (uint64_t)rows, "read");
}

/* The sampling runs inside the step's graph, from the parameters of the
 * step's upload; its ids are the step's one download. */
static fg_status gpu_sample(fg_backend *be, const fg_tensor *logits, int32_t rows, int32_t *ids)
{
    gpu_backend *g = gpu(be);
    if (rows != g->n_sample)
        return fg_err_set(FG_ERR_INVALID_ARG, "sample: %d rows asked, the step gave parameters for %d", rows, g->n_sample);
    FG_ASSERT(rows >= 1 && (size_t)rows * sizeof(int32_t) <= g->picked_bytes);
    FG_TRY(GPU_OP(g, "sample",
                  fg_gpu_sample((float *)logits->data, ld(logits), logits->ne0, rows, g->d_sample, g->d_bias,
                                g->d_picked, g->stream)));
    FG_TRY(graph_finish(g));
    GPU_TRY(cudaMemcpyAsync(ids, g->d_picked, (size_t)rows * sizeof(int32_t), cudaMemcpyDeviceToHost, g->stream));
    FG_TRY(download_done(g, (uint64_t)rows * sizeof(int32_t), NULL));
    for (int32_t r = 0; r < rows; r++)
        if (ids[r] < 0)
            return fg_err_set(FG_ERR_INVALID_ARG, "sampling: row %d has no logit above -inf (all -inf or NaN)", r);
    return FG_OK;
}

static fg_status gpu_write(fg_backend *be, fg_tensor *x, int32_t rows, const float *host)
{
    gpu_backend *g = gpu(be);
    FG_TRY(graph_finish(g));
    g->op_seq++; /* it writes x */
    size_t row = (size_t)x->ne0 * sizeof(float);
    for (int32_t r = 0; r < rows; r++)
        GPU_TRY(cudaMemcpyAsync((char *)x->data + (size_t)r * x->row_bytes, host + (size_t)r * (size_t)x->ne0, row,
                                cudaMemcpyHostToDevice, g->stream));
    GPU_TRY(cudaStreamSynchronize(g->stream));
    g->xfer.uploads++;
    g->xfer.bytes_up += (uint64_t)row * (uint64_t)rows;
    return FG_OK;
}

/* ---- Life cycle ------------------------------------------------------------------- */

static void gpu_free(fg_backend *be)
{
    gpu_backend *g = gpu(be);
    if (g->profile) {
        double total = 0;
        for (int i = 0; i < g->n_prof; i++) total += g->prof[i].ms;
        fprintf(stderr, "forge: GPU profile (each op synchronized; wall: from the previous op's end; gpu: between "
                        "events around its launches)\n");
        for (int i = 0; i < g->n_prof; i++)
            fprintf(stderr, "  %-10s %8ld calls  wall %9.2f ms %5.1f%% %8.1f us/call  gpu %8.1f us/call\n",
                    g->prof[i].op, g->prof[i].calls, g->prof[i].ms, 100.0 * g->prof[i].ms / (total > 0 ? total : 1),
                    1e3 * g->prof[i].ms / g->prof[i].calls, 1e3 * g->prof[i].gpu_ms / g->prof[i].calls);
    }
    if (g->capturing) {
        cudaGraph_t graph = NULL;
        (void)cudaStreamEndCapture(g->stream, &graph);
        if (graph) (void)cudaGraphDestroy(graph);
    }
    for (int i = 0; i < g->n_graph; i++)
        if (g->graph[i].exec) (void)cudaGraphExecDestroy(g->graph[i].exec);
    if (g->stream) (void)cudaStreamSynchronize(g->stream);
#if !defined(FG_GPU_HIP)
    fg_gpu_blas_destroy(g->blas);
#endif
    for (size_t i = 0; i < g->n_allocs; i++) (void)cudaFree(g->allocs[i]);
    if (g->h_step) (void)cudaFreeHost(g->h_step);
    if (g->d_step) (void)cudaFree(g->d_step);
    if (g->mm_scratch) (void)cudaFree(g->mm_scratch);
    if (g->d_picked) (void)cudaFree(g->d_picked);
    if (g->blas_scratch) (void)cudaFree(g->blas_scratch);
    if (g->uploaded) (void)cudaEventDestroy(g->uploaded);
    if (g->stream) (void)cudaStreamDestroy(g->stream);
    free(g->allocs);
    free(g->k);
    free(g->v);
    free(g);
}

static fg_status gpu_mem_free(fg_backend *be, uint64_t *bytes)
{
    gpu_backend *g = gpu(be);
    size_t free_b = 0, total_b = 0;
    GPU_TRY(cudaSetDevice(g->device)); /* the calling thread's device */
    GPU_TRY(cudaMemGetInfo(&free_b, &total_b));
    *bytes = free_b;
    return FG_OK;
}

static const fg_backend_ops gpu_ops = {
    .name = "gpu",
    .logits_on_host = false,
    .free = gpu_free,
    .mem_free = gpu_mem_free,
    .describe = fg_backend_gpu_describe,
    .set_batch_invariant = fg_backend_gpu_set_batch_invariant,
    .measure_bw = fg_backend_gpu_measure_bw,
    .weight = gpu_weight,
    .alloc = gpu_alloc,
    .kv_alloc = gpu_kv_alloc,
    .step_begin = gpu_step_begin,
    .embed = gpu_embed,
    .rms_norm = gpu_rms_norm,
    .matmul = gpu_matmul,
    .matmul_n = gpu_matmul_n,
    .gather = gpu_gather,
    .rope = gpu_rope,
    .kv_store = gpu_kv_store,
    .rope_store = gpu_rope_store,
    .attention = gpu_attention,
    .swiglu = gpu_swiglu,
    .add = gpu_add,
    .geglu = gpu_geglu,
    .scale = gpu_scale,
    .sample = gpu_sample,
    .read = gpu_read,
    .write = gpu_write,
};

extern "C" const char *fg_backend_gpu_api(void)
{
    return FG_GPU_API;
}

extern "C" int fg_backend_gpu_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" fg_status fg_backend_gpu_init(int device, fg_backend **out)
{
    *out = NULL;
    int n = fg_backend_gpu_count();
    if (n == 0)
        return fg_err_set(FG_ERR_UNSUPPORTED, "no %s device found (is the driver loaded?); use --device cpu", FG_GPU_API);
    if (device < 0 || device >= n)
        return fg_err_set(FG_ERR_INVALID_ARG, "GPU %d does not exist; this machine has %d", device, n);
    gpu_backend *g = (gpu_backend *)calloc(1, sizeof *g);
    if (!g) return fg_err_set(FG_ERR_NOMEM, "gpu backend: out of host memory");
    g->base.ops = &gpu_ops;
    g->device = device;
    const char *sync = getenv("FORGE_GPU_SYNC");
    g->sync_each_op = sync && strcmp(sync, "0") != 0 && *sync;
    const char *graphs = getenv("FORGE_GPU_GRAPHS");
    g->graphs = !(graphs && strcmp(graphs, "0") == 0);
    const char *prof = getenv("FORGE_GPU_PROFILE");
    g->profile = prof && strcmp(prof, "0") != 0 && *prof;
    if (g->profile && (cudaEventCreate(&g->prof_ev[0]) != cudaSuccess || cudaEventCreate(&g->prof_ev[1]) != cudaSuccess))
        g->profile = false;
    if (g->profile || g->sync_each_op) g->graphs = false;
    cudaDeviceProp prop;
    cudaError_t e;
    if ((e = cudaSetDevice(device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaEventCreate(&g->uploaded)) != cudaSuccess) {
        fg_status st = gpu_fail(e, "device setup", __FILE__, __LINE__);
        gpu_free(&g->base);
        return st;
    }
#if !defined(FG_GPU_HIP)
    g->blas = fg_gpu_blas_create(g->stream);
    if (!g->blas) {
        gpu_free(&g->base);
        return fg_err_set(FG_ERR_DEVICE, "GPU %d: cuBLAS could not be initialized (is libcublas installed and "
                          "matching the driver?)", device);
    }
#endif
    g->warp = prop.warpSize;
    g->q8_max_t = 8;
    const char *inv = getenv("FORGE_BATCH_INVARIANT");
    g->invariant = inv && *inv && strcmp(inv, "0") != 0;
    g->n_sm = prop.multiProcessorCount;
#if defined(FG_GPU_HIP)
    snprintf(g->desc, sizeof g->desc, "%.200s (%.100s), %.1f GiB, HIP", prop.name, prop.gcnArchName,
             prop.totalGlobalMem / 1073741824.0);
#else
    snprintf(g->desc, sizeof g->desc, "%.200s (sm_%d%d), %.1f GiB, CUDA", prop.name, prop.major, prop.minor,
             prop.totalGlobalMem / 1073741824.0);
#endif
    *out = &g->base;
    return FG_OK;
}

extern "C" void fg_backend_gpu_transfers(const fg_backend *be, fg_gpu_transfers *out)
{
    *out = ((const gpu_backend *)be)->xfer;
}

extern "C" void fg_backend_gpu_transfers_reset(fg_backend *be)
{
    memset(&gpu(be)->xfer, 0, sizeof gpu(be)->xfer);
}

extern "C" void fg_backend_gpu_set_batch_invariant(fg_backend *be, bool on)
{
    gpu(be)->invariant = on;
}

extern "C" fg_gpu_mm_kernel fg_backend_gpu_matmul_pick(const fg_backend *be, int type, int32_t T, int64_t K)
{
    return mm_pick((const gpu_backend *)be, type, T, K);
}

extern "C" fg_gpu_attn_kernel fg_backend_gpu_attention_pick(const fg_backend *be, const fg_attn *a, int *splits)
{
    const gpu_backend *g = (const gpu_backend *)be;
    fg_gpu_attn_args args = attn_args(g, -1, NULL, a, NULL);
    return attn_pick(g, &args, g->tiles_uniform, splits);
}

extern "C" const char *fg_backend_gpu_describe(const fg_backend *be)
{
    return ((const gpu_backend *)be)->desc;
}

extern "C" fg_status fg_backend_gpu_measure_bw(fg_backend *be, double *gb_per_s)
{
    gpu_backend *g = gpu(be);
    *gb_per_s = 0;
    FG_TRY(graph_finish(g));
    size_t free_b = 0, total_b = 0;
    GPU_TRY(cudaMemGetInfo(&free_b, &total_b));
    size_t bytes = free_b / 4 < ((size_t)1 << 30) ? free_b / 4 : ((size_t)1 << 30);
    bytes -= bytes % 4096;
    if (bytes < ((size_t)64 << 20))
        return fg_err_set(FG_ERR_NOMEM, "GPU %d: too little free memory (%.0f MiB) to measure bandwidth", g->device,
                          free_b / 1048576.0);
    void *buf = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    fg_status st = FG_OK;
    float ms = 0.0f;
    enum { WARM = 3, REPS = 20 };
    cudaError_t e = cudaMalloc(&buf, bytes);
    if (e == cudaSuccess) e = cudaMemsetAsync(buf, 0, bytes, g->stream);
    if (e == cudaSuccess) e = cudaEventCreate(&e0);
    if (e == cudaSuccess) e = cudaEventCreate(&e1);
    for (int i = 0; e == cudaSuccess && i < WARM; i++) e = fg_gpu_read_bw(buf, bytes, g->n_sm, g->stream);
    if (e == cudaSuccess) e = cudaEventRecord(e0, g->stream);
    for (int i = 0; e == cudaSuccess && i < REPS; i++) e = fg_gpu_read_bw(buf, bytes, g->n_sm, g->stream);
    if (e == cudaSuccess) e = cudaEventRecord(e1, g->stream);
    if (e == cudaSuccess) e = cudaEventSynchronize(e1);
    if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, e0, e1);
    if (e != cudaSuccess) st = gpu_fail(e, "the bandwidth probe", __FILE__, __LINE__);
    else *gb_per_s = (double)bytes * (double)REPS / (ms / 1e3) / 1e9;
    if (e0) (void)cudaEventDestroy(e0);
    if (e1) (void)cudaEventDestroy(e1);
    if (buf) (void)cudaFree(buf);
    return st;
}
