/*
 * matmul.c — fg_cpu_matmul: picks the kernels for this CPU, quantizes the
 * activations into the scratch, and splits the dot products across the pool.
 *
 * Kernels. mm_generic.c has every kernel; each instruction set this CPU has
 * (checked once with cpuid, in increasing order: AVX2, AVX-512; or NEON)
 * overrides the entries it implements. Tests can force any set that is
 * present (fg_cpu_matmul_force_isa).
 *
 * Work split. The output is cut into chunks of (rows of W) x (tokens): a chunk
 * is a run of rows, a multiple of 16 so that threads never write the same
 * cache line of y at T = 1, times a block of tokens small enough that its
 * quantized activations stay in L2 while each weight row, read once from
 * memory, is dotted with every token of the block from L1. There are about 8
 * chunks per thread. Each thread owns a contiguous range of them (a lane) and
 * works through it in order, so that at T = 1 it streams one contiguous part
 * of W: handing chunks out round-robin from one counter made the threads'
 * reads interleave, and SmolLM2's decode matmuls took 4.8 ms instead of 3.4
 * (bench/NOTES.md). A thread whose lane is empty steals chunks from the
 * others', so one that the OS delays, on a machine shared with other work,
 * does fewer chunks instead of holding everyone up.
 *
 * The quantization of x is O(T K) against the matmul's O(T K N), so it runs
 * on the calling thread for small batches and as a separate pool run, split by
 * rows of x, for prefill-sized ones.
 */
#include "backend/cpu/matmul.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "backend/cpu/mm_kernels.h"
#include "base/err.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define FG_X86 1
#endif

/* ---- Kernel selection ----------------------------------------------------------------- */

#if FG_X86
static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

/* What the CPU and the OS support: the instructions (cpuid) and the saving of
 * their registers across context switches (xgetbv). */
static void x86_features(bool *avx2, bool *avx512)
{
    unsigned a, b, c, d;
    *avx2 = *avx512 = false;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool fma = c >> 12 & 1, osxsave = c >> 27 & 1, avx = c >> 28 & 1, f16c = c >> 29 & 1;
    if (!osxsave || !avx) return;
    uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return; /* SSE and AVX state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return;
    *avx2 = (b >> 5 & 1) && fma && f16c;
    bool f = b >> 16 & 1, bw = b >> 30 & 1, vl = b >> 31 & 1, vnni = c >> 11 & 1;
    *avx512 = *avx2 && f && bw && vl && vnni && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM state */
}
#endif

enum { MAX_TABLES = 4 };

/* tables[0] is generic; each later one is the one before it with one more
 * instruction set's kernels laid over it. The last is the best. */
static fg_mm_kernels tables[MAX_TABLES];
static int n_tables;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static _Atomic(const fg_mm_kernels *) forced;

static void overlay(const fg_mm_kernels *over)
{
    if (!over) return;
    fg_mm_kernels t = tables[n_tables - 1];
    t.isa = over->isa;
    if (over->quant_q8_1) t.quant_q8_1 = over->quant_q8_1;
    if (over->quant_q8_k) t.quant_q8_k = over->quant_q8_k;
    for (int i = 0; i < FG_TYPE_COUNT; i++)
        if (over->dot[i]) t.dot[i] = over->dot[i];
    tables[n_tables++] = t;
}

static void build_tables(void)
{
    tables[0] = *fg_mm_kernels_generic();
    n_tables = 1;
#if FG_X86
    bool avx2, avx512;
    x86_features(&avx2, &avx512);
    if (avx2) overlay(fg_mm_kernels_avx2());
    if (avx512) overlay(fg_mm_kernels_avx512());
#endif
#if defined(__aarch64__)
    overlay(fg_mm_kernels_neon()); /* NEON is part of the aarch64 baseline */
#endif
}

static const fg_mm_kernels *kernels(void)
{
    pthread_once(&tables_once, build_tables);
    const fg_mm_kernels *f = atomic_load_explicit(&forced, memory_order_relaxed);
    return f ? f : &tables[n_tables - 1];
}

const char *fg_cpu_matmul_isa(void)
{
    return kernels()->isa;
}

void fg_cpu_matmul_force_generic(bool on)
{
    fg_cpu_matmul_force_isa(on ? "generic" : NULL);
}

bool fg_cpu_matmul_force_isa(const char *isa)
{
    pthread_once(&tables_once, build_tables);
    if (!isa) {
        atomic_store(&forced, NULL);
        return true;
    }
    for (int i = 0; i < n_tables; i++) {
        if (strcmp(tables[i].isa, isa) == 0) {
            atomic_store(&forced, &tables[i]);
            return true;
        }
    }
    return false;
}

int fg_cpu_matmul_isas(const char **names, int cap)
{
    pthread_once(&tables_once, build_tables);
    for (int i = 0; i < n_tables && i < cap; i++) names[i] = tables[i].isa;
    return n_tables;
}

/* ---- Types and scratch ----------------------------------------------------------------- */

bool fg_cpu_matmul_supported(fg_type t)
{
    return (unsigned)t < FG_TYPE_COUNT && fg_mm_kernels_generic()->dot[t] != NULL;
}

size_t fg_cpu_matmul_scratch(fg_type t, int64_t K, int64_t T)
{
    size_t row = fg_mm_act_row_bytes(fg_mm_act_of(t), K);
    return row ? row * (size_t)T + 64 : 0;
}

/* ---- The product ------------------------------------------------------------------------- */

/* A contiguous range of chunks [next, end): its owner thread takes them in
 * order, others steal from the same end once their own lane is empty. One
 * cache line each, so owners do not contend. */
enum { MAX_LANES = 64 };
typedef struct mm_lane {
    _Alignas(64) _Atomic int64_t next;
    int64_t end;
} mm_lane;

typedef struct mm_job {
    fg_mm_dot_fn dot;
    fg_mm_quant_fn quant;
    const uint8_t *W;
    size_t w_row_bytes;
    int64_t N, K, T;
    const float *x; /* (T, ldx) */
    int64_t ldx;
    const uint8_t *xa; /* the rows the kernel reads: quantized (T, xs bytes) or x itself */
    uint8_t *xq;       /* the quantized rows, in the scratch */
    size_t xs;
    float *y; /* (T, ldy) */
    const float *add; /* (T, ldy) or NULL; may be y */
    int64_t ldy;
    int64_t rows_per_chunk, n_row_chunks, toks_per_block, n_chunks;
    int n_lanes;
    mm_lane lanes[MAX_LANES];
} mm_job;

static void quant_rows(void *p, int ith, int nth)
{
    mm_job *j = p;
    for (int64_t t = ith; t < j->T; t += nth) j->quant(j->x + t * j->ldx, j->K, j->xq + (size_t)t * j->xs);
}

/* Rows are handed to the kernel ROW_GROUP at a time, their results staged
 * in a small buffer so that the residual add and the strided store of y stay
 * here. */
enum { ROW_GROUP = 16 };

static void do_chunk(const mm_job *j, int64_t c)
{
    int64_t r0 = (c % j->n_row_chunks) * j->rows_per_chunk, t0 = (c / j->n_row_chunks) * j->toks_per_block;
    int64_t r1 = r0 + j->rows_per_chunk < j->N ? r0 + j->rows_per_chunk : j->N;
    int64_t t1 = t0 + j->toks_per_block < j->T ? t0 + j->toks_per_block : j->T;
    float out[ROW_GROUP * FG_MM_NT];
    for (int64_t n = r0; n < r1; n += ROW_GROUP) {
        int nr = r1 - n < ROW_GROUP ? (int)(r1 - n) : ROW_GROUP;
        const uint8_t *w = j->W + (size_t)n * j->w_row_bytes;
        for (int64_t t = t0; t < t1; t += FG_MM_NT) {
            int nt = t1 - t < FG_MM_NT ? (int)(t1 - t) : FG_MM_NT;
            j->dot(j->K, w, j->w_row_bytes, nr, j->xa + (size_t)t * j->xs, j->xs, nt, out);
            for (int i = 0; i < nt; i++) {
                float *y = j->y + (size_t)(t + i) * (size_t)j->ldy + (size_t)n;
                const float *add = j->add ? j->add + (size_t)(t + i) * (size_t)j->ldy + (size_t)n : NULL;
                for (int r = 0; r < nr; r++) y[r] = add ? add[r] + out[r * FG_MM_NT + i] : out[r * FG_MM_NT + i];
            }
        }
    }
}

static void dot_rows(void *p, int ith, int nth)
{
    mm_job *j = p;
    (void)nth;
    for (int k = 0; k < j->n_lanes; k++) {
        mm_lane *l = &j->lanes[(ith + k) % j->n_lanes];
        for (;;) {
            int64_t c = atomic_fetch_add_explicit(&l->next, 1, memory_order_relaxed);
            if (c >= l->end) break;
            do_chunk(j, c);
        }
    }
}

/* Below this many activations (T * K) quantization runs on the calling thread. */
enum { QUANT_PARALLEL_MIN = 1 << 16 };
/* Bytes of activation rows a token block may hold: a quarter of a 1 MiB L2
 * (Zen 4), half of the 512 KiB of older cores. */
enum { TOKEN_BLOCK_BYTES = 256 << 10 };

void fg_cpu_matmul(fg_pool *pool, fg_type t, const void *W, size_t w_row_bytes, int64_t N, int64_t K,
                   const float *x, int64_t ldx, int64_t T, float *y, int64_t ldy, const float *add,
                   void *scratch)
{
    FG_ASSERT(fg_cpu_matmul_supported(t));
    const fg_type_info *ti = fg_type_get((uint32_t)t);
    FG_ASSERT(K > 0 && K % ti->block_size == 0 && w_row_bytes >= fg_type_row_size(t, K));
    if (N <= 0 || T <= 0) return;

    const fg_mm_kernels *k = kernels();
    fg_mm_act act = fg_mm_act_of(t);
    int nth = pool ? fg_pool_size(pool) : 1;
    mm_job j = {
        .dot = k->dot[t],
        .W = W, .w_row_bytes = w_row_bytes, .N = N, .K = K, .T = T,
        .x = x, .ldx = ldx, .y = y, .add = add, .ldy = ldy,
    };

    if (act == FG_MM_ACT_F32) {
        j.xa = (const uint8_t *)x;
        j.xs = (size_t)ldx * sizeof(float);
    } else {
        FG_ASSERT(scratch != NULL);
        j.quant = act == FG_MM_ACT_Q8_1 ? k->quant_q8_1 : k->quant_q8_k;
        j.xq = (uint8_t *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
        j.xs = fg_mm_act_row_bytes(act, K);
        j.xa = j.xq;
        if (T * K < QUANT_PARALLEL_MIN || nth == 1) quant_rows(&j, 0, 1);
        else fg_pool_run(pool, quant_rows, &j);
    }

    /* Token blocks: all of T when it is small, else a multiple of FG_MM_NT
     * tokens whose activation rows fit TOKEN_BLOCK_BYTES. */
    int64_t tb = T;
    if (T > FG_MM_NT) {
        int64_t fit = (int64_t)(TOKEN_BLOCK_BYTES / j.xs) / FG_MM_NT * FG_MM_NT;
        if (fit < FG_MM_NT) fit = FG_MM_NT;
        if (fit < tb) tb = fit;
    }
    j.toks_per_block = tb;
    int64_t n_tok_blocks = (T + tb - 1) / tb;
    /* Row chunks: enough that there are 8 chunks per thread in all. */
    int64_t want = (8 * (int64_t)nth + n_tok_blocks - 1) / n_tok_blocks;
    int64_t rows = (N + want - 1) / want;
    rows = (rows + 15) / 16 * 16;
    j.rows_per_chunk = rows;
    j.n_row_chunks = (N + rows - 1) / rows;
    j.n_chunks = j.n_row_chunks * n_tok_blocks;
    bool parallel = nth > 1 && j.n_chunks > 1;
    j.n_lanes = !parallel ? 1 : nth < MAX_LANES ? nth : MAX_LANES;
    for (int l = 0; l < j.n_lanes; l++) {
        atomic_init(&j.lanes[l].next, j.n_chunks * l / j.n_lanes);
        j.lanes[l].end = j.n_chunks * (l + 1) / j.n_lanes;
    }
    if (parallel) fg_pool_run(pool, dot_rows, &j);
    else dot_rows(&j, 0, 1);
}
