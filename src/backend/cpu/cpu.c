/*
 * cpu.c — the CPU backend: the ops of backend.h on host memory, split across
 * a thread pool.
 *
 * Weights are views into the GGUF mmap (never copied). Activations and the
 * KV pool are malloc'd at load time; the per-step copies of the batch and the
 * matmul's quantized-activation scratch grow to the largest step seen and are
 * then reused. The heavy op, matmul, lives in matmul.c (quantized activations,
 * integer SIMD dots); the others are here, written plainly: they are a small
 * share of the time at the batch sizes a CPU runs.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/cpu/attn.h"
#include "backend/cpu/f16.h"
#include "backend/cpu/matmul.h"
#include "base/err.h"
#include "base/threadpool.h"
#include "gguf/quant.h"

typedef struct cpu_backend {
    fg_backend base;
    fg_pool *pool;
    bool reference; /* exact matmuls, see fg_backend_cpu_init */

    /* The step's batch, copied (grow-only). */
    int32_t n_tokens, n_seqs, max_blocks;
    int32_t *ids, *pos, *seq, *slot, *block_tables;
    int32_t cap_tokens, cap_tables;
    fg_sample_row *sample; /* the step's sampling rows */
    int32_t n_sample, cap_sample;
    int32_t *out_rows; /* (cap_tokens) the step's gathered rows */
    int32_t n_out;

    /* KV pool: per layer, n_slots rows of k_row / v_row elements of kv_type
     * (F16 by default, as llama.cpp's cache; F32 on request). */
    int32_t n_layer, block_size;
    int64_t n_slots, k_row, v_row;
    fg_type kv_type;
    size_t kv_elem;
    void **k, **v;
    /* Attention scratch per pool thread: the K and V rows of one KV head over
     * a sequence, widened to f32 (n_slots x head_dim each), its scores, and
     * room for a row of halves (n_slots, or head_dim <= 512 for q). */
    float *att_scratch;
    size_t att_scratch_per_thread; /* floats */
    int32_t *runs; /* [3 * cap_tokens]: runs of consecutive tokens of one sequence (first, end, cost) */


    void *mm_scratch; /* matmul's quantized activations (grow-only) */
    size_t mm_scratch_size;

    /* Every buffer alloc() handed out, freed with the backend. */
    void **allocs;
    size_t n_allocs, cap_allocs;
} cpu_backend;

static cpu_backend *cpu(fg_backend *be)
{
    return (cpu_backend *)be;
}

static float *row_f32(const fg_tensor *t, int64_t r)
{
    return (float *)((char *)t->data + (size_t)r * t->row_bytes);
}

/* ---- Memory ------------------------------------------------------------------ */

static fg_status track(cpu_backend *c, void *p)
{
    if (c->n_allocs == c->cap_allocs) {
        size_t cap = c->cap_allocs ? 2 * c->cap_allocs : 32;
        void **a = realloc(c->allocs, cap * sizeof *a);
        if (!a) return fg_err_set(FG_ERR_NOMEM, "cpu backend: out of memory");
        c->allocs = a;
        c->cap_allocs = cap;
    }
    c->allocs[c->n_allocs++] = p;
    return FG_OK;
}

static fg_status cpu_weight(fg_backend *be, const fg_weight_src *src, fg_tensor *out)
{
    (void)be;
    if (!fg_cpu_matmul_supported(src->type)) {
        return fg_err_set(FG_ERR_UNSUPPORTED,
                          "tensor '%s' has type %s, which the CPU backend does not support (it computes with F32, "
                          "F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and MXFP4); "
                          "quantize the model from its F16/BF16 original to one of those (forge quantize)",
                          src->name, fg_type_name(src->type));
    }
    out->type = src->type;
    out->ne0 = src->ne0;
    out->rows = src->rows;
    out->row_bytes = fg_type_row_size(src->type, src->ne0);
    out->data = (void *)src->data;
    return FG_OK;
}

static fg_status cpu_alloc(fg_backend *be, int64_t ne0, int64_t rows, fg_tensor *out)
{
    cpu_backend *c = cpu(be);
    size_t bytes = (size_t)ne0 * (size_t)rows * sizeof(float);
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) {
        return fg_err_set(FG_ERR_NOMEM, "cpu backend: cannot allocate %zu bytes for an activation buffer (%lld x %lld)",
                          bytes, (long long)rows, (long long)ne0);
    }
    FG_TRY(track(c, p));
    memset(p, 0, bytes);
    *out = (fg_tensor){.type = FG_TYPE_F32, .ne0 = ne0, .rows = rows, .row_bytes = (size_t)ne0 * sizeof(float), .data = p};
    return FG_OK;
}

static fg_status cpu_kv_alloc(fg_backend *be, int32_t n_layer, int64_t n_slots, int32_t block_size, int64_t k_row,
                              int64_t v_row, int64_t o_row, fg_type type)
{
    cpu_backend *c = cpu(be);
    (void)o_row;
    if (type != FG_TYPE_F32 && type != FG_TYPE_F16)
        return fg_err_set(FG_ERR_UNSUPPORTED, "cpu backend: KV cache type %s is not supported (use F16 or F32)",
                          fg_type_name(type));
    c->kv_type = type;
    c->kv_elem = type == FG_TYPE_F16 ? 2 : 4;
    c->k = calloc((size_t)n_layer, sizeof *c->k);
    c->v = calloc((size_t)n_layer, sizeof *c->v);
    /* k_row and v_row bound one head's dims, so this covers every head size. */
    c->att_scratch_per_thread = (size_t)n_slots * (size_t)(k_row + v_row + 2) + 512;
    c->att_scratch = malloc((size_t)fg_pool_size(c->pool) * c->att_scratch_per_thread * sizeof(float));
    if (!c->k || !c->v || !c->att_scratch) return fg_err_set(FG_ERR_NOMEM, "cpu backend: out of memory");
    c->n_layer = n_layer;
    double bytes = (double)n_layer * (double)n_slots * (double)(k_row + v_row) * (double)c->kv_elem;
    for (int32_t l = 0; l < n_layer; l++) {
        c->k[l] = malloc((size_t)n_slots * (size_t)k_row * c->kv_elem);
        c->v[l] = malloc((size_t)n_slots * (size_t)v_row * c->kv_elem);
        if (!c->k[l] || !c->v[l]) {
            return fg_err_set(FG_ERR_NOMEM,
                              "cpu backend: cannot allocate the KV cache (%.1f MB for %lld tokens); "
                              "use a smaller context (-c)",
                              bytes / 1e6, (long long)n_slots);
        }
    }
    c->n_slots = n_slots;
    c->block_size = block_size;
    c->k_row = k_row;
    c->v_row = v_row;
    return FG_OK;
}

static fg_status grow_i32(int32_t **p, int32_t need)
{
    int32_t *q = realloc(*p, (size_t)need * sizeof *q);
    if (!q) return fg_err_set(FG_ERR_NOMEM, "cpu backend: out of memory");
    *p = q;
    return FG_OK;
}

static fg_status cpu_step_begin(fg_backend *be, const fg_batch *b)
{
    cpu_backend *c = cpu(be);
    FG_TRY(fg_batch_check(b, c->n_slots, "cpu backend"));
    if (b->n_tokens > c->cap_tokens) {
        FG_TRY(grow_i32(&c->ids, b->n_tokens));
        FG_TRY(grow_i32(&c->pos, b->n_tokens));
        FG_TRY(grow_i32(&c->seq, b->n_tokens));
        FG_TRY(grow_i32(&c->slot, b->n_tokens));
        FG_TRY(grow_i32(&c->runs, 3 * b->n_tokens));
        FG_TRY(grow_i32(&c->out_rows, b->n_tokens));
        c->cap_tokens = b->n_tokens;
    }
    if (b->n_seqs * b->max_blocks > c->cap_tables) {
        FG_TRY(grow_i32(&c->block_tables, b->n_seqs * b->max_blocks));
        c->cap_tables = b->n_seqs * b->max_blocks;
    }
    size_t n = (size_t)b->n_tokens * sizeof(int32_t);
    memcpy(c->ids, b->ids, n);
    memcpy(c->pos, b->pos, n);
    memcpy(c->seq, b->seq, n);
    memcpy(c->slot, b->slot, n);
    memcpy(c->block_tables, b->block_tables, (size_t)b->n_seqs * (size_t)b->max_blocks * sizeof(int32_t));
    if (b->n_out > 0) memcpy(c->out_rows, b->out_rows, (size_t)b->n_out * sizeof *c->out_rows);
    c->n_out = b->n_out;
    if (b->n_sample > c->cap_sample) {
        fg_sample_row *p = realloc(c->sample, (size_t)b->n_sample * sizeof *p);
        if (!p) return fg_err_set(FG_ERR_NOMEM, "cpu backend: out of memory for %d sampling rows", b->n_sample);
        c->sample = p;
        c->cap_sample = b->n_sample;
    }
    if (b->n_sample > 0) memcpy(c->sample, b->sample, (size_t)b->n_sample * sizeof *c->sample);
    c->n_sample = b->n_sample;
    c->n_tokens = b->n_tokens;
    c->n_seqs = b->n_seqs;
    c->max_blocks = b->max_blocks;
    return FG_OK;
}

/* ---- Row-parallel helpers ------------------------------------------------------- */

/* Splits [0, n) into nth nearly equal parts; part ith is [*lo, *hi). */
static void split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

/* Small ops run on the calling thread: below this many elements the pool's
 * wake-up costs more than the work. */
enum { PARALLEL_MIN_ELEMS = 1 << 15 };

static void run(cpu_backend *c, int64_t elems, void (*fn)(void *, int, int), void *ctx)
{
    if (elems < PARALLEL_MIN_ELEMS) fn(ctx, 0, 1);
    else fg_pool_run(c->pool, fn, ctx);
}

/* ---- embed --------------------------------------------------------------------- */

typedef struct embed_ctx {
    cpu_backend *c;
    const fg_tensor *table;
    fg_tensor *out;
} embed_ctx;

static void embed_fn(void *p, int ith, int nth)
{
    embed_ctx *e = p;
    int64_t lo, hi;
    split(e->c->n_tokens, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const char *src = (const char *)e->table->data + (size_t)e->c->ids[t] * e->table->row_bytes;
        fg_dequant_row(e->table->type, src, row_f32(e->out, t), e->table->ne0);
    }
}

static fg_status cpu_embed(fg_backend *be, const fg_tensor *table, fg_tensor *out)
{
    cpu_backend *c = cpu(be);
    for (int32_t t = 0; t < c->n_tokens; t++) {
        if (c->ids[t] < 0 || c->ids[t] >= table->rows)
            return fg_err_set(FG_ERR_INVALID_ARG, "token id %d is outside the vocabulary (%lld tokens)", c->ids[t],
                              (long long)table->rows);
    }
    embed_ctx e = {c, table, out};
    run(c, (int64_t)c->n_tokens * table->ne0, embed_fn, &e);
    return FG_OK;
}

/* ---- rms_norm ------------------------------------------------------------------- */

typedef struct norm_ctx {
    cpu_backend *c;
    const fg_tensor *x, *w;
    int64_t group;
    float eps;
    fg_tensor *out;
} norm_ctx;

static void norm_fn(void *p, int ith, int nth)
{
    norm_ctx *n = p;
    int64_t lo, hi;
    split(n->c->n_tokens, ith, nth, &lo, &hi);
    const float *w = n->w->data;
    for (int64_t t = lo; t < hi; t++) {
        const float *x = row_f32(n->x, t);
        float *y = row_f32(n->out, t);
        for (int64_t g0 = 0; g0 < n->x->ne0; g0 += n->group) {
            /* The sum of squares in double, as ggml does. */
            double ss = 0;
            for (int64_t i = 0; i < n->group; i++) ss += (double)x[g0 + i] * x[g0 + i];
            float scale = 1.0f / sqrtf((float)(ss / (double)n->group) + n->eps);
            for (int64_t i = 0; i < n->group; i++) y[g0 + i] = x[g0 + i] * scale * w[i];
        }
    }
}

static fg_status cpu_rms_norm(fg_backend *be, const fg_tensor *x, const fg_tensor *w, int64_t group, float eps,
                              fg_tensor *out, bool quant_out)
{
    (void)quant_out; /* every matmul quantizes its own input (backend.h's hand-offs) */
    cpu_backend *c = cpu(be);
    FG_ASSERT(w->type == FG_TYPE_F32 && w->ne0 == group && x->ne0 % group == 0);
    norm_ctx n = {c, x, w, group, eps, out};
    run(c, (int64_t)c->n_tokens * x->ne0, norm_fn, &n);
    return FG_OK;
}

/* ---- matmul ---------------------------------------------------------------------- */

/* The reference matmul: each thread dequantizes its weight rows one at a
 * time and dots them with every activation row in double. */
typedef struct ref_mm_ctx {
    const fg_tensor *w;
    const float *x, *add;
    float *y;
    int64_t ldx, ldy, T;
    float *scratch; /* ne0 floats per thread */
} ref_mm_ctx;

static void ref_mm_fn(void *p, int ith, int nth)
{
    ref_mm_ctx *r = p;
    int64_t K = r->w->ne0, lo, hi;
    split(r->w->rows, ith, nth, &lo, &hi);
    float *row = r->scratch + (size_t)ith * (size_t)K;
    for (int64_t n = lo; n < hi; n++) {
        fg_dequant_row(r->w->type, (const char *)r->w->data + (size_t)n * r->w->row_bytes, row, K);
        for (int64_t t = 0; t < r->T; t++) {
            const float *x = r->x + t * r->ldx;
            double sum = 0;
            for (int64_t k = 0; k < K; k++) sum += (double)row[k] * x[k];
            r->y[t * r->ldy + n] = (float)sum + (r->add ? r->add[t * r->ldy + n] : 0.0f);
        }
    }
}

static fg_status grow_scratch(cpu_backend *c, size_t need)
{
    if (need <= c->mm_scratch_size) return FG_OK;
    void *s = aligned_alloc(64, (need + 63) / 64 * 64);
    if (!s) return fg_err_set(FG_ERR_NOMEM, "cpu backend: out of memory for matmul scratch (%zu bytes)", need);
    free(c->mm_scratch);
    c->mm_scratch = s;
    c->mm_scratch_size = need;
    return FG_OK;
}

static fg_status cpu_matmul(fg_backend *be, const fg_tensor *w, const fg_tensor *bias, const fg_tensor *x,
                            const fg_tensor *add, int32_t rows, fg_tensor *out, bool quant_in)
{
    (void)quant_in;
    cpu_backend *c = cpu(be);
    int64_t T = rows ? rows : c->n_tokens;
    int64_t ldx = (int64_t)(x->row_bytes / sizeof(float)), ldy = (int64_t)(out->row_bytes / sizeof(float));
    FG_ASSERT(x->ne0 == w->ne0);
    if (c->reference) {
        FG_TRY(grow_scratch(c, (size_t)fg_pool_size(c->pool) * (size_t)w->ne0 * sizeof(float)));
        ref_mm_ctx r = {w, x->data, add ? add->data : NULL, out->data, ldx, ldy, T, c->mm_scratch};
        fg_pool_run(c->pool, ref_mm_fn, &r);
    } else {
        FG_TRY(grow_scratch(c, fg_cpu_matmul_scratch(w->type, w->ne0, T)));
        fg_cpu_matmul(c->pool, w->type, w->data, w->row_bytes, w->rows, w->ne0, x->data, ldx, T, out->data, ldy,
                      add ? add->data : NULL, c->mm_scratch);
    }
    if (bias) {
        FG_ASSERT(bias->type == FG_TYPE_F32 && bias->ne0 == w->rows);
        const float *b = bias->data;
        for (int64_t t = 0; t < T; t++) {
            float *y = row_f32(out, t);
            for (int64_t i = 0; i < w->rows; i++) y[i] += b[i];
        }
    }
    return FG_OK;
}

/* ---- rope ------------------------------------------------------------------------ */

typedef struct rope_ctx {
    cpu_backend *c;
    fg_tensor *x;
    int32_t head_dim;
    const fg_rope *rp;
} rope_ctx;

static void rope_fn(void *p, int ith, int nth)
{
    rope_ctx *r = p;
    const fg_rope *rp = r->rp;
    int64_t lo, hi;
    split(r->c->n_tokens, ith, nth, &lo, &hi);
    int32_t half = rp->n_rot / 2;
    int64_t n_heads = r->x->ne0 / r->head_dim;
    /* theta_i = pos * base^(-2i/n_rot), computed as ggml does, in float by
     * repeated multiplication, so positions far out round the same way. */
    float theta_scale = powf(rp->base, -2.0f / (float)rp->n_rot);
    for (int64_t t = lo; t < hi; t++) {
        float theta_base = (float)r->c->pos[t];
        float *row = row_f32(r->x, t);
        for (int32_t i = 0; i < half; i++) {
            float theta = rp->freq_scale * (rp->freq_factors ? theta_base / rp->freq_factors[i] : theta_base);
            theta_base *= theta_scale;
            float cs = cosf(theta), sn = sinf(theta);
            int32_t a = rp->mode == FG_ROPE_NEOX ? i : 2 * i;
            int32_t b = rp->mode == FG_ROPE_NEOX ? i + half : 2 * i + 1;
            for (int64_t h = 0; h < n_heads; h++) {
                float *v = row + h * r->head_dim;
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * cs - x1 * sn;
                v[b] = x0 * sn + x1 * cs;
            }
        }
    }
}

static fg_status cpu_rope(fg_backend *be, fg_tensor *x, int32_t head_dim, const fg_rope *rp)
{
    cpu_backend *c = cpu(be);
    FG_ASSERT(rp->n_rot % 2 == 0 && rp->n_rot <= head_dim && x->ne0 % head_dim == 0);
    rope_ctx r = {c, x, head_dim, rp};
    run(c, (int64_t)c->n_tokens * x->ne0, rope_fn, &r);
    return FG_OK;
}

/* ---- KV store and attention ------------------------------------------------------ */

/* Stores n floats as the KV type at dst (F16 rounds to nearest even). */
static void kv_put(const cpu_backend *c, void *dst, const float *src, int64_t n)
{
    if (c->kv_type == FG_TYPE_F32) memcpy(dst, src, (size_t)n * sizeof(float));
    else fg_cpu_f32_to_f16_row(src, dst, n);
}

/* Loads n values of the KV type at src as floats. */
static void kv_get_row(const cpu_backend *c, const void *src, float *dst, int64_t n)
{
    if (c->kv_type == FG_TYPE_F32) memcpy(dst, src, (size_t)n * sizeof(float));
    else fg_cpu_f16_to_f32_row(src, dst, n);
}

/* Rounds n floats in place to the nearest F16 values, through tmp (n halves). */
static void round_f16_row(float *x, uint16_t *tmp, int64_t n)
{
    fg_cpu_f32_to_f16_row(x, tmp, n);
    fg_cpu_f16_to_f32_row(tmp, x, n);
}

static fg_status cpu_kv_store(fg_backend *be, int32_t layer, const fg_tensor *k, const fg_tensor *v)
{
    cpu_backend *c = cpu(be);
    FG_ASSERT(layer >= 0 && layer < c->n_layer && k->ne0 == c->k_row && v->ne0 == c->v_row);
    for (int32_t t = 0; t < c->n_tokens; t++) {
        kv_put(c, (char *)c->k[layer] + (size_t)c->slot[t] * (size_t)c->k_row * c->kv_elem, row_f32(k, t), c->k_row);
        kv_put(c, (char *)c->v[layer] + (size_t)c->slot[t] * (size_t)c->v_row * c->kv_elem, row_f32(v, t), c->v_row);
    }
    return FG_OK;
}

typedef struct attn_ctx {
    cpu_backend *c;
    int32_t layer;
    const fg_tensor *q;
    const fg_attn *a;
    fg_tensor *out;
    int32_t n_runs; /* work items: n_runs x n_head */
    int64_t cost;   /* sum of the items' costs (keys attended) */
} attn_ctx;

/* Positions [start, pos] a query at pos attends to. */
static int32_t attn_start(const fg_attn *a, int32_t pos)
{
    return a->window > 0 && pos - a->window + 1 > 0 ? pos - a->window + 1 : 0;
}

/* Widens the K and V rows of KV head hk for positions [lo, hi] of the
 * sequence with block table `table` into kf / vf (head_dim floats each). */
static void gather_kv(const cpu_backend *c, int32_t layer, const int32_t *table, int32_t hk, int32_t lo, int32_t hi,
                      const fg_attn *a, float *kf, float *vf)
{
    const char *K = c->k[layer], *V = c->v[layer];
    for (int32_t j = lo; j <= hi; j++) {
        int64_t slot = (int64_t)table[j / c->block_size] * c->block_size + j % c->block_size;
        const char *k = K + ((size_t)slot * (size_t)c->k_row + (size_t)hk * (size_t)a->head_dim_k) * c->kv_elem;
        const char *v = V + ((size_t)slot * (size_t)c->v_row + (size_t)hk * (size_t)a->head_dim_v) * c->kv_elem;
        kv_get_row(c, k, kf + (size_t)(j - lo) * (size_t)a->head_dim_k, a->head_dim_k);
        kv_get_row(c, v, vf + (size_t)(j - lo) * (size_t)a->head_dim_v, a->head_dim_v);
    }
}

/* One query row of one head over keys [start, pos] already widened in kf/vf
 * (from position lo), in two passes over a score buffer, with the roundings
 * of llama.cpp's CPU attention when the cache is F16: q is rounded to F16 for
 * the q.k products and the normalized probabilities are rounded to F16
 * before they weight V. That keeps forge's logits close to llama.cpp's on
 * small models, whose many layers amplify such differences. */
static void attend_one(const attn_ctx *x, int64_t t, int32_t h, int32_t lo, const float *kf, const float *vf,
                       float *score, uint16_t *tmp)
{
    const cpu_backend *c = x->c;
    const fg_attn *a = x->a;
    /* Reference mode keeps q and the probabilities in f32: it is what other
     * backends are checked against. */
    bool f16 = c->kv_type == FG_TYPE_F16 && !c->reference;
    float *o = row_f32(x->out, t) + (size_t)h * (size_t)a->head_dim_v;
    int32_t pos = c->pos[t], start = attn_start(a, pos), n = pos - start + 1;

    float q[FG_HEAD_DIM_MAX];
    FG_ASSERT(a->head_dim_k <= FG_HEAD_DIM_MAX);
    memcpy(q, row_f32(x->q, t) + (size_t)h * (size_t)a->head_dim_k, (size_t)a->head_dim_k * sizeof(float));
    if (f16) round_f16_row(q, tmp, a->head_dim_k);

    const fg_cpu_attn_kernels *kern = fg_cpu_attn();
    kern->scores(q, kf + (size_t)(start - lo) * (size_t)a->head_dim_k, a->head_dim_k, a->head_dim_k, n, score);
    float m = -INFINITY;
    for (int32_t j = 0; j < n; j++) {
        float s = score[j] * a->scale;
        if (a->softcap > 0) s = a->softcap * tanhf(s / a->softcap);
        score[j] = s;
        if (s > m) m = s;
    }
    double sum = 0;
    for (int32_t j = 0; j < n; j++) sum += (score[j] = expf(score[j] - m));
    float inv = (float)(1.0 / sum);
    for (int32_t j = 0; j < n; j++) score[j] *= inv;
    if (f16) round_f16_row(score, tmp, n);
    kern->weighted_sum(score, vf + (size_t)(start - lo) * (size_t)a->head_dim_v, a->head_dim_v, a->head_dim_v, n, o);
}

/* Work item i is (run i / n_head, query head i % n_head): attend every
 * query of the run with that head. Thread ith takes the items that start in
 * its share of the total cost (keys attended), so a causal prefill, whose
 * later runs see more keys, still splits evenly. The KV head's K/V over the
 * positions the run's queries see are widened to f32 once per (run, KV head)
 * a thread meets: consecutive items of one thread share them, since the
 * query heads of a KV head (GQA/MQA) are adjacent. Splitting by query head
 * rather than KV head keeps a decode step (one run) spread over the pool. */
static void attn_fn(void *p, int ith, int nth)
{
    attn_ctx *x = p;
    const cpu_backend *c = x->c;
    const fg_attn *a = x->a;
    int32_t group = a->n_head / a->n_head_kv;
    float *kf = c->att_scratch + (size_t)ith * c->att_scratch_per_thread;
    float *vf = kf + (size_t)c->n_slots * (size_t)a->head_dim_k;
    float *score = vf + (size_t)c->n_slots * (size_t)a->head_dim_v;
    uint16_t *tmp = (uint16_t *)(score + c->n_slots); /* n_slots halves */
    int64_t lo_c, hi_c, at = 0;
    split(x->cost, ith, nth, &lo_c, &hi_c);
    int32_t have_run = -1, have_hk = -1, lo = 0;
    for (int64_t i = 0; i < (int64_t)x->n_runs * a->n_head && at < hi_c; i++) {
        int32_t r = (int32_t)(i / a->n_head), h = (int32_t)(i % a->n_head), hk = h / group;
        int32_t t0 = c->runs[3 * r], t1 = c->runs[3 * r + 1];
        bool mine = at >= lo_c;
        at += c->runs[3 * r + 2];
        if (!mine) continue;
        if (r != have_run || hk != have_hk) {
            int32_t hi = 0;
            lo = INT32_MAX;
            for (int32_t t = t0; t < t1; t++) {
                int32_t st = attn_start(a, c->pos[t]);
                lo = st < lo ? st : lo;
                hi = c->pos[t] > hi ? c->pos[t] : hi;
            }
            const int32_t *table = c->block_tables + (size_t)c->seq[t0] * (size_t)c->max_blocks;
            gather_kv(c, x->layer, table, hk, lo, hi, a, kf, vf);
            have_run = r;
            have_hk = hk;
        }
        for (int32_t t = t0; t < t1; t++) attend_one(x, t, h, lo, kf, vf, score, tmp);
    }
}

static fg_status cpu_attention(fg_backend *be, int32_t layer, const fg_tensor *q, const fg_attn *a, fg_tensor *out,
                               bool quant_out)
{
    (void)quant_out;
    cpu_backend *c = cpu(be);
    FG_ASSERT(a->n_head % a->n_head_kv == 0 && a->n_head_kv * a->head_dim_k == c->k_row &&
              a->n_head_kv * a->head_dim_v == c->v_row);
    /* Runs of up to 32 consecutive tokens of one sequence: each shares one
     * widening of its KV, and there are enough of them to spread a prefill
     * over the pool. */
    enum { RUN_MAX = 32 };
    int32_t n_runs = 0;
    int64_t cost = 0;
    for (int32_t t = 0; t < c->n_tokens;) {
        int32_t e = t + 1, keys = c->pos[t] - attn_start(a, c->pos[t]) + 1;
        while (e < c->n_tokens && e - t < RUN_MAX && c->seq[e] == c->seq[t]) {
            keys += c->pos[e] - attn_start(a, c->pos[e]) + 1;
            e++;
        }
        c->runs[3 * n_runs] = t;
        c->runs[3 * n_runs + 1] = e;
        c->runs[3 * n_runs + 2] = keys;
        cost += (int64_t)keys * a->n_head;
        n_runs++;
        t = e;
    }
    attn_ctx x = {c, layer, q, a, out, n_runs, cost};
    int64_t work = (int64_t)c->n_tokens * a->n_head * a->head_dim_k * (c->pos[c->n_tokens - 1] + 1);
    run(c, work, attn_fn, &x);
    return FG_OK;
}

/* ---- swiglu, geglu ---------------------------------------------------------------- */

/* Gated activations: out = act(gate) * up, SwiGLU (silu) or GeGLU
 * (gelu_tanh). */
static float silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* x/2 (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3) is x * sigmoid(2u)
 * (as 1 + tanh(u) = 2 sigmoid(2u)): one expf like silu's, where tanhf cost
 * 3-7x as much (bench/NOTES.md). */
static float gelu_tanh(float x)
{
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x / (1.0f + expf(-2.0f * u));
}

typedef struct gated_ctx {
    cpu_backend *c;
    const fg_tensor *gate, *up;
    fg_tensor *out;
    float (*act)(float);
} gated_ctx;

static void gated_fn(void *p, int ith, int nth)
{
    gated_ctx *s = p;
    int64_t lo, hi;
    split(s->c->n_tokens, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const float *g = row_f32(s->gate, t), *u = row_f32(s->up, t);
        float *y = row_f32(s->out, t);
        for (int64_t i = 0; i < s->gate->ne0; i++) y[i] = s->act(g[i]) * u[i];
    }
}

static fg_status gated(cpu_backend *c, const fg_tensor *gate, const fg_tensor *up, fg_tensor *out, float (*act)(float))
{
    gated_ctx s = {c, gate, up, out, act};
    run(c, (int64_t)c->n_tokens * gate->ne0, gated_fn, &s);
    return FG_OK;
}

static fg_status cpu_swiglu(fg_backend *be, const fg_tensor *gate, const fg_tensor *up, fg_tensor *out, bool quant_out)
{
    (void)quant_out;
    return gated(cpu(be), gate, up, out, silu);
}

static fg_status cpu_geglu(fg_backend *be, const fg_tensor *gate, const fg_tensor *up, fg_tensor *out)
{
    return gated(cpu(be), gate, up, out, gelu_tanh);
}

/* ---- add ------------------------------------------------------------------------- */

typedef struct add_ctx {
    cpu_backend *c;
    const fg_tensor *x;
    fg_tensor *out;
} add_ctx;

static void add_fn(void *p, int ith, int nth)
{
    add_ctx *a = p;
    int64_t lo, hi;
    split(a->c->n_tokens, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        const float *x = row_f32(a->x, t);
        float *y = row_f32(a->out, t);
        for (int64_t i = 0; i < a->x->ne0; i++) y[i] += x[i];
    }
}

static fg_status cpu_add(fg_backend *be, const fg_tensor *x, fg_tensor *out)
{
    cpu_backend *c = cpu(be);
    FG_ASSERT(x->ne0 == out->ne0);
    add_ctx a = {c, x, out};
    run(c, (int64_t)c->n_tokens * x->ne0, add_fn, &a);
    return FG_OK;
}

/* ---- scale ----------------------------------------------------------------------- */

static fg_status cpu_scale(fg_backend *be, fg_tensor *x, float s)
{
    cpu_backend *c = cpu(be);
    for (int64_t t = 0; t < c->n_tokens; t++) {
        float *y = row_f32(x, t);
        for (int64_t i = 0; i < x->ne0; i++) y[i] *= s;
    }
    return FG_OK;
}

/* ---- read, free, init ---------------------------------------------------------- */

static fg_status cpu_read(fg_backend *be, const fg_tensor *x, int32_t rows, float *host)
{
    (void)be;
    for (int32_t r = 0; r < rows; r++) memcpy(host + (size_t)r * (size_t)x->ne0, row_f32(x, r), (size_t)x->ne0 * sizeof(float));
    return FG_OK;
}

/* Greedy rows only: with the logits in host memory, the host sampler reads
 * them directly. */
static fg_status cpu_sample(fg_backend *be, const fg_tensor *logits, int32_t rows, int32_t *ids)
{
    cpu_backend *c = cpu(be);
    if (rows != c->n_sample)
        return fg_err_set(FG_ERR_INVALID_ARG, "sample: %d rows asked, the step gave parameters for %d", rows, c->n_sample);
    for (int32_t r = 0; r < rows; r++) {
        if (c->sample[r].temperature != 0.0f)
            return fg_err_set(FG_ERR_UNSUPPORTED,
                              "the CPU backend samples greedy rows only; sample its logits on the host (runtime/sampler.h)");
        const float *l = row_f32(logits, r);
        const fg_logit_bias *bias = c->sample[r].bias, *bias_end = bias + c->sample[r].n_bias;
        int32_t best = -1;
        float bv = -INFINITY;
        for (int64_t i = 0; i < logits->ne0; i++) { /* NaN and -inf never win; +inf counts as FLT_MAX */
            float v = l[i] > FLT_MAX ? FLT_MAX : l[i];
            if (bias < bias_end && bias->token == i) { /* sorted: the next entry is the next biased token */
                v += (bias++)->bias;
                if (v > FLT_MAX) v = FLT_MAX;
            }
            if (v > bv) bv = v, best = (int32_t)i;
        }
        if (best < 0)
            return fg_err_set(FG_ERR_INVALID_ARG, "sampling: row %d has no logit above -inf (all -inf or NaN)", r);
        ids[r] = best;
    }
    return FG_OK;
}

static fg_status cpu_write(fg_backend *be, fg_tensor *x, int32_t rows, const float *host)
{
    (void)be;
    for (int32_t r = 0; r < rows; r++) memcpy(row_f32(x, r), host + (size_t)r * (size_t)x->ne0, (size_t)x->ne0 * sizeof(float));
    return FG_OK;
}

static void cpu_free(fg_backend *be)
{
    cpu_backend *c = cpu(be);
    for (size_t i = 0; i < c->n_allocs; i++) free(c->allocs[i]);
    for (int32_t l = 0; c->k && l < c->n_layer; l++) {
        free(c->k[l]);
        free(c->v[l]);
    }
    free(c->k);
    free(c->v);
    free(c->att_scratch);
    free(c->runs);
    free(c->allocs);
    free(c->ids);
    free(c->pos);
    free(c->seq);
    free(c->slot);
    free(c->block_tables);
    free(c->sample);
    free(c->out_rows);
    free(c->mm_scratch);
    fg_pool_free(c->pool);
    free(c);
}

static fg_status cpu_matmul_n(fg_backend *be, int n, const fg_tensor *const *w, const fg_tensor *const *bias,
                              const fg_tensor *x, fg_tensor *const *out, bool quant_in)
{
    for (int i = 0; i < n; i++) FG_TRY(cpu_matmul(be, w[i], bias ? bias[i] : NULL, x, NULL, 0, out[i], quant_in));
    return FG_OK;
}

static fg_status cpu_gather(fg_backend *be, const fg_tensor *x, fg_tensor *out)
{
    cpu_backend *c = cpu(be);
    FG_ASSERT(out->ne0 == x->ne0 && out->rows >= c->n_out);
    for (int32_t r = 0; r < c->n_out; r++)
        memcpy(row_f32(out, r), row_f32(x, c->out_rows[r]), (size_t)x->ne0 * sizeof(float));
    return FG_OK;
}

static fg_status cpu_rope_store(fg_backend *be, int32_t layer, fg_tensor *q, fg_tensor *k, const fg_tensor *v,
                                int32_t head_dim, const fg_rope *rp)
{
    FG_TRY(cpu_rope(be, q, head_dim, rp));
    FG_TRY(cpu_rope(be, k, head_dim, rp));
    return cpu_kv_store(be, layer, k, v);
}

static fg_status cpu_mem_free(fg_backend *be, uint64_t *bytes)
{
    (void)be;
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages < 0 || page < 0) return fg_err_set(FG_ERR_UNSUPPORTED, "cpu backend: cannot tell the free memory");
    *bytes = (uint64_t)pages * (uint64_t)page;
    return FG_OK;
}

static const char *cpu_describe(const fg_backend *be)
{
    (void)be;
    return "cpu";
}

static void cpu_set_batch_invariant(fg_backend *be, bool on)
{
    (void)be, (void)on; /* always: each row's sums run in one order whatever the batch */
}

static fg_status cpu_measure_bw(fg_backend *be, double *gb_per_s)
{
    (void)be;
    *gb_per_s = 0;
    return fg_err_set(FG_ERR_UNSUPPORTED, "--measure-bw measures a GPU; this run is on the CPU");
}

static const fg_backend_ops cpu_ops = {
    .name = "cpu",
    .logits_on_host = true,
    .free = cpu_free,
    .mem_free = cpu_mem_free,
    .describe = cpu_describe,
    .set_batch_invariant = cpu_set_batch_invariant,
    .measure_bw = cpu_measure_bw,
    .weight = cpu_weight,
    .alloc = cpu_alloc,
    .kv_alloc = cpu_kv_alloc,
    .step_begin = cpu_step_begin,
    .embed = cpu_embed,
    .rms_norm = cpu_rms_norm,
    .matmul = cpu_matmul,
    .matmul_n = cpu_matmul_n,
    .gather = cpu_gather,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .rope_store = cpu_rope_store,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .geglu = cpu_geglu,
    .scale = cpu_scale,
    .sample = cpu_sample,
    .read = cpu_read,
    .write = cpu_write,
};

fg_status fg_backend_cpu_init(int n_threads, bool reference, fg_backend **out)
{
    *out = NULL;
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c) return fg_err_set(FG_ERR_NOMEM, "cpu backend: out of memory");
    c->base.ops = &cpu_ops;
    c->reference = reference;
    if (n_threads <= 0) n_threads = fg_cpu_count();
    fg_status st = fg_pool_init(n_threads, &c->pool);
    if (st != FG_OK) {
        free(c);
        return st;
    }
    *out = &c->base;
    return FG_OK;
}
