/*
 * backend.h — the op interface every backend implements (the CPU and the GPU).
 *
 * There is no graph library: model/forward.c calls these ops in order, and
 * that sequence is the execution plan. A backend owns its memory (weights,
 * activations, the KV pool), all allocated at load time; ops never allocate.
 *
 * Layout. Activations are row-major: a tensor of T rows of C floats holds one
 * token per row (a token's hidden state, its q for all heads, ...). Weights
 * are N rows of K elements in their GGUF type (the ggml layout: ne[0] = K is
 * a row). The KV pool is paged: per layer, K and V rows of
 * n_kv_heads * head_dim elements for n_blocks * block_size token slots.
 *
 * Steps. fg_backend_step_begin hands the backend the step's batch once (ids,
 * positions, sequence of each token, KV slot of each token, per-sequence
 * block tables): on a GPU that is the step's single upload. Ops then read the
 * batch from the backend's copy; none takes a host array.
 *
 * Hand-offs. A matmul whose backend computes with int8 activations
 * quantizes its input first. Where that input is the output of the op just
 * before (a norm, the attention, the SwiGLU), the producer can leave it
 * quantized as it writes it, and the matmul skip that pass. The plan says so
 * at both ends: the producer is called with quant_out, the matmul with
 * quant_in; nothing is cached between other ops. A matmul called with
 * quant_in, or that quantized x itself, hands x on the same way to a matmul
 * of the same x right after it. A backend decides per step whether a
 * hand-off pays (it may not at every step size) and ignores the flags where
 * it has no such pass (the CPU's).
 *
 * Tensor parallelism comes later: no op may assume it sees a whole weight
 * matrix, only the rows it is given.
 */
#ifndef FG_BACKEND_BACKEND_H
#define FG_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forge.h"
#include "gguf/types.h"

/* A 2-D tensor in backend memory: rows of ne0 elements of type, row stride
 * row_bytes. Views (a column range of a row-major activation, a weight in the
 * mmap) are just different data/ne0/row_bytes. */
typedef struct fg_tensor {
    fg_type type;
    int64_t ne0;      /* elements per row */
    int64_t rows;     /* rows allocated (activations: the batch capacity) */
    size_t row_bytes; /* bytes from one row to the next */
    void *data;
} fg_tensor;

/* How a step samples one of its logits rows (the sample op). Each filter
 * keeps a prefix of the row's tokens ranked by (logit descending, id
 * ascending), NaN counting as -inf and +inf as FLT_MAX:
 *   top_k   the first k (0: off);
 *   top_p   the shortest prefix of those whose softmax mass at temperature 1
 *           reaches top_p of theirs (1: off);
 *   min_p   the logits >= max + log(min_p) (0: off);
 * the candidates are the shortest of the three. The draw: the first
 * candidate, in id order, at which the running sum of exp((l - max) /
 * temperature) exceeds u times the candidates' total. temperature 0 is
 * greedy: the lowest id of the maxima. Before all of it the row's logit
 * biases are added. These are the host sampler's
 * filters and distribution (runtime/sampler.h, less its penalties), drawn
 * in another order. */
typedef struct fg_sample_row {
    float temperature;
    int32_t top_k;
    float top_p;
    float min_p;
    double u; /* the draw, uniform in [0, 1); unused when greedy */
    /* Added to the row's logits before everything else (each clamped to
     * FLT_MAX after): n_bias entries, tokens ascending and distinct, in
     * host memory valid until the step's sample op returns (a GPU backend
     * takes them into the step's one upload). */
    int32_t n_bias;
    const fg_logit_bias *bias;
} fg_sample_row;

/* One step's tokens. All arrays are host memory owned by the caller and read
 * only inside fg_backend_step_begin. */
typedef struct fg_batch {
    int32_t n_tokens;
    const int32_t *ids;          /* [n_tokens] token ids */
    const int32_t *pos;          /* [n_tokens] position of each token in its sequence */
    const int32_t *seq;          /* [n_tokens] index of its sequence in this batch */
    const int32_t *slot;         /* [n_tokens] KV slot: block * block_size + offset */
    int32_t n_seqs;
    int32_t max_blocks;          /* row length of block_tables */
    const int32_t *block_tables; /* [n_seqs][max_blocks] KV block ids of each sequence */
    /* Nonzero when the ops of this step, up to its read, are the forward
     * plan's fixed sequence for this value and the batch's shape: a GPU
     * backend may then capture them once and replay them (CUDA/HIP graphs).
     * Zero (callers that issue ops one by one, such as tests) never replays. */
    int32_t graph_key;
    /* The sampling of the rows the step's sample op will take (its logits
     * rows, in order): part of the step's one upload. NULL if none. */
    int32_t n_sample;
    const fg_sample_row *sample;
    /* The tokens (indices into this batch, ascending) whose rows the
     * gather op collects: the last token of each sequence that needs
     * logits. NULL if none. */
    int32_t n_out;
    const int32_t *out_rows;
} fg_batch;

typedef enum fg_rope_mode {
    FG_ROPE_NORMAL, /* rotate pairs (2i, 2i+1): llama's permuted q/k */
    FG_ROPE_NEOX,   /* rotate pairs (i, i + n_rot/2): GPT-NeoX, Qwen, Gemma */
} fg_rope_mode;

typedef struct fg_rope {
    fg_rope_mode mode;
    int32_t n_rot;          /* dims rotated (<= head_dim; the rest pass through) */
    float base;             /* rope.freq_base */
    float freq_scale;       /* 1 / linear scaling factor */
    const float *freq_factors; /* [n_rot/2] divisors of each frequency (Llama 3.1 rope_freqs) in backend
                                * memory (a placed weight), or NULL */
} fg_rope;

/* The largest head dimension (k and v) the attention op takes: the CPU
 * backend keeps a query head on the stack. Loading refuses larger ones
 * (fg_hparams_read). */
#define FG_HEAD_DIM_MAX 512

typedef struct fg_attn {
    int32_t n_head, n_head_kv, head_dim_k, head_dim_v;
    float scale;          /* usually 1/sqrt(head_dim_k) */
    int32_t window;       /* sliding window in tokens, 0 for none */
    float softcap;        /* logit soft-capping, 0 for none */
} fg_attn;

/* A weight to place (the weight op): rows of ne0 elements of type, one
 * after another at data, fg_type_row_size(type, ne0) bytes each, in host
 * memory that outlives the backend (the CPU's weights are views of it).
 * name, which errors quote, need only last the call. A file-format
 * neutral record: model/weights.c makes one per tensor, or per row range
 * of a fused one. */
typedef struct fg_weight_src {
    const char *name;
    fg_type type;
    int64_t ne0, rows;
    const void *data;
} fg_weight_src;

typedef struct fg_backend fg_backend;

typedef struct fg_backend_ops {
    const char *name;
    /* Activations live in host memory: reading logits costs no copy. */
    bool logits_on_host;
    void (*free)(fg_backend *be);
    /* The memory still free for buffers (the KV pool), in bytes: the
     * device's on a GPU, the host's available RAM on the CPU. */
    fg_status (*mem_free)(fg_backend *be, uint64_t *bytes);
    /* A line naming the device: "cpu", or the GPU with its memory and
     * compute capability / gfx arch. */
    const char *(*describe)(const fg_backend *be);
    /* Batch-invariant mode (fg_engine_config's batch_invariant): every op
     * computes each token's row with the same kernel and order of sums
     * whatever the step's size and other sequences, so a request's greedy
     * tokens do not depend on what it is batched with. The CPU backend
     * always is and ignores it. Set before the first step. */
    void (*set_batch_invariant)(fg_backend *be, bool on);
    /* The device's read bandwidth in GB/s (1e9 bytes), for benchmarks: it
     * allocates, so never while serving. FG_ERR_UNSUPPORTED where the
     * backend has no such measurement (the CPU's). */
    fg_status (*measure_bw)(fg_backend *be, double *gb_per_s);

    /* Places a weight: the CPU backend returns a view of src's memory (the
     * mmap), a GPU backend uploads it. Fails, naming the tensor, for a type
     * the backend cannot compute with. */
    fg_status (*weight)(fg_backend *be, const fg_weight_src *src, fg_tensor *out);
    /* An activation buffer of rows x ne0 floats (F32). */
    fg_status (*alloc)(fg_backend *be, int64_t ne0, int64_t rows, fg_tensor *out);
    /* The paged KV pool: n_layer x (K, V) of n_slots rows. o_row is the
     * attention output's row (n_head x head_dim_v), for backends that keep
     * partial results per query head (split-KV decoding). */
    fg_status (*kv_alloc)(fg_backend *be, int32_t n_layer, int64_t n_slots, int32_t block_size,
                          int64_t k_row, int64_t v_row, int64_t o_row, fg_type type);

    fg_status (*step_begin)(fg_backend *be, const fg_batch *b);

    /* out[t] = row ids[t] of table, dequantized to F32. */
    fg_status (*embed)(fg_backend *be, const fg_tensor *table, fg_tensor *out);
    /* RMSNorm of each group of `group` elements of each of the step's rows
     * (group = ne0 for a whole row, head_dim for per-head QK-norm), times w
     * (group elements, F32), into out (may alias x). quant_out: out is the
     * next op's matmul input (see "Hand-offs" below). */
    fg_status (*rms_norm)(fg_backend *be, const fg_tensor *x, const fg_tensor *w, int64_t group, float eps,
                          fg_tensor *out, bool quant_out);
    /* out = x W^T (+ bias) (+ add) for the step's rows; add may alias out.
     * If rows is not 0 it replaces the step's token count (e.g. logits for the
     * last token only: x and out then point at that row). quant_in: x was
     * written by the op just before, called with quant_out (Hand-offs). */
    fg_status (*matmul)(fg_backend *be, const fg_tensor *w, const fg_tensor *bias, const fg_tensor *x,
                        const fg_tensor *add, int32_t rows, fg_tensor *out, bool quant_in);
    /* out[i] = x W_i^T (+ bias_i) for i < n (1..3) over the step's rows:
     * matmuls that share their input (q, k, v; gate, up), which a backend
     * may run as one. bias may be NULL, or hold NULL entries. quant_in as
     * matmul's. */
    fg_status (*matmul_n)(fg_backend *be, int n, const fg_tensor *const *w, const fg_tensor *const *bias,
                          const fg_tensor *x, fg_tensor *const *out, bool quant_in);
    /* out[r] = x[out_rows[r]] for the step's n_out rows (fg_batch). */
    fg_status (*gather)(fg_backend *be, const fg_tensor *x, fg_tensor *out);
    /* Rotates the first n_rot dims of each head_dim-sized head of each row in
     * place, at the step's positions. */
    fg_status (*rope)(fg_backend *be, fg_tensor *x, int32_t head_dim, const fg_rope *rp);
    /* Writes the step's k and v rows into layer's KV pool at their slots. */
    fg_status (*kv_store)(fg_backend *be, int32_t layer, const fg_tensor *k, const fg_tensor *v);
    /* rope on q and on k, then kv_store of k and v: one op, so a backend
     * can do all three in one pass. */
    fg_status (*rope_store)(fg_backend *be, int32_t layer, fg_tensor *q, fg_tensor *k, const fg_tensor *v,
                            int32_t head_dim, const fg_rope *rp);
    /* Causal attention of the step's q rows (n_head heads) over their
     * sequences' KV in layer (positions 0..pos), GQA by n_head/n_head_kv. */
    fg_status (*attention)(fg_backend *be, int32_t layer, const fg_tensor *q, const fg_attn *a,
                           fg_tensor *out, bool quant_out);
    /* out = silu(gate) * up, elementwise over the step's rows. */
    fg_status (*swiglu)(fg_backend *be, const fg_tensor *gate, const fg_tensor *up, fg_tensor *out, bool quant_out);
    /* out += x, elementwise over the step's rows: the residual add of the
     * plans whose sublayer output is normalized before it (post-norms). */
    fg_status (*add)(fg_backend *be, const fg_tensor *x, fg_tensor *out);
    /* out = gelu_tanh(gate) * up (GeGLU, Gemma), elementwise over the step's
     * rows; gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
    fg_status (*geglu)(fg_backend *be, const fg_tensor *gate, const fg_tensor *up, fg_tensor *out);
    /* x *= s over the step's rows (Gemma's embedding scale). */
    fg_status (*scale)(fg_backend *be, fg_tensor *x, float s);
    /* Samples `rows` rows of logits (rows = the step's n_sample), row r with
     * the step's sample[r], and copies the ids, and only them, to host
     * memory: on a GPU, the step's one download. Fails, naming the row, if
     * a row has no logit above -inf. A backend with logits_on_host may
     * sample greedy rows only (FG_ERR_UNSUPPORTED otherwise): its caller
     * samples the logits themselves at no copy. */
    fg_status (*sample)(fg_backend *be, const fg_tensor *logits, int32_t rows, int32_t *ids);
    /* Copies `rows` rows of an activation into host memory (logits). */
    fg_status (*read)(fg_backend *be, const fg_tensor *x, int32_t rows, float *host);
    /* Copies `rows` rows of host floats into an activation. Not part of a
     * step (the step's one upload is step_begin's): for setting up and for
     * tests that feed an op directly. */
    fg_status (*write)(fg_backend *be, fg_tensor *x, int32_t rows, const float *host);
} fg_backend_ops;

struct fg_backend {
    const fg_backend_ops *ops;
};

/* Checks a step's batch against a KV pool of n_slots slots: every token's
 * slot, sequence and position, the gathered rows and the sampling rows.
 * The error names who (the backend) and the first bad entry. Backends call
 * it in step_begin before taking anything from the batch. */
fg_status fg_batch_check(const fg_batch *b, int64_t n_slots, const char *who);

/* Opens the backend `device` names: "auto" (or NULL: the GPU when this
 * build has one and a device is present, else the CPU), "cpu", "cuda" or
 * "hip". An explicit GPU that this build or machine lacks is an error that
 * says so, never a quiet CPU run. n_threads (0: one per core) and reference
 * (exact arithmetic, for tests; CPU only) are the CPU backend's.
 * fg_backend_on_device tells which was opened. */
fg_status fg_backend_open(const char *device, int32_t n_threads, bool reference, fg_backend **out);

/* The CPU backend with n_threads workers (0: one per core). reference
 * selects exact arithmetic for tests: matmuls over f32 activations with the
 * dequantized weights, summed in double (no Q8 activation quantization), so
 * that logits can be compared with an f32 implementation such as HF
 * transformers to float rounding. It is several times slower. */
fg_status fg_backend_cpu_init(int n_threads, bool reference, fg_backend **out);

/* Whether the backend computes in device memory of its own (a GPU): its
 * activations are not in host memory. */
static inline bool fg_backend_on_device(const fg_backend *be)
{
    return !be->ops->logits_on_host;
}

static inline void fg_backend_free(fg_backend *be)
{
    if (be) be->ops->free(be);
}

#endif
