/*
 * bench/matmul.c — timings for the CPU matmul (src/backend/cpu/matmul.c) and
 * the thread pool, to be read next to bench/NOTES.md. Not a test: it checks
 * nothing (tests/unit/test_matmul.c does); it prints tables.
 *
 *   bw       this machine's memory read bandwidth (a plain summing loop over
 *            256 MiB), 1 and 2 threads: the floor for decode
 *   pool     fg_pool_run round trip, back to back and after a gap of
 *            single-threaded work, spin on and off
 *   gemv     T = 1 per type and shape, weights cold (rotating through copies
 *            totalling 128 MiB, 4x L3) and hot (one copy, cache resident):
 *            GB/s of weights read
 *   gemm     T = 64 and 512 (prefill), GFLOP/s (2 N K T per product)
 *   model    every matmul of one decode step of a GGUF model (blk.* 2-D
 *            weights in file order, then the output or tied token_embd),
 *            with the model's real weights: ms and GB/s against the floor
 *            (the bytes over the bandwidth measured with as many threads)
 *
 * Build (from the repo root, after building libforge.a into BUILD):
 *   make BUILD=build build/libforge.a
 *   cc -O2 -std=c11 -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc \
 *      bench/matmul.c build/libforge.a -lm -lpthread -o build/bench-matmul
 * Run: build/bench-matmul [bw|pool|gemv|gemm|model MODEL.gguf]... [-t THREADS]
 *      [--isa NAME] [--types Q4_1,Q8_0,...]
 * With no section named it runs bw, pool, gemv and gemm with 1 and 2 threads.
 * Each timing is the best of a few short repetitions; on a shared machine
 * they are noisy (see NOTES.md).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/matmul.h"
#include "base/threadpool.h"
#include "gguf/gguf.h"
#include "gguf/quant.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "bench: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Bytes in 0x20..0x3f: as f16, bf16 or f32 fields they are normal numbers of
 * moderate size (no denormal slow paths), as codes they are as good as any. */
static void fill_sane(uint8_t *p, size_t n)
{
    uint64_t s = 0x1234567;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (uint8_t)(0x20 | (s >> 59));
    }
}

static void fill_x(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)((double)((i * 2654435761u) % 2001) / 1000.0 - 1.0);
}

/* ---- Bandwidth ---------------------------------------------------------------------- */

typedef struct bw_ctx {
    const uint64_t *buf;
    size_t n;
    uint64_t sums[64];
} bw_ctx;

static void bw_fn(void *p, int ith, int nth)
{
    bw_ctx *c = p;
    size_t lo = c->n * (size_t)ith / (size_t)nth, hi = c->n * (size_t)(ith + 1) / (size_t)nth;
    uint64_t a = 0, b = 0, d = 0, e = 0;
    for (size_t i = lo; i + 4 <= hi; i += 4) {
        a += c->buf[i];
        b += c->buf[i + 1];
        d += c->buf[i + 2];
        e += c->buf[i + 3];
    }
    c->sums[ith] = a + b + d + e;
}

static double bench_bw(int threads)
{
    size_t bytes = (size_t)256 << 20;
    uint64_t *buf = xmalloc(bytes);
    memset(buf, 1, bytes);
    fg_pool *pool;
    if (fg_pool_init(threads, &pool) != FG_OK) exit(1);
    bw_ctx c = {buf, bytes / 8, {0}};
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        fg_pool_run(pool, bw_fn, &c);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    fg_pool_free(pool);
    free(buf);
    return (double)bytes / best / 1e9;
}

/* ---- Pool ------------------------------------------------------------------------------ */

static void empty_fn(void *p, int ith, int nth)
{
    (void)p, (void)ith, (void)nth;
}

static void spin_for(double s)
{
    double t0 = now_s();
    while (now_s() - t0 < s) {
    }
}

static void bench_pool(int threads)
{
    const char *spins[] = {"0", "200"};
    const double gaps[] = {0, 20e-6, 100e-6, 1e-3};
    printf("\npool: fg_pool_run round trip of an empty function, %d threads (us per run; median of 5 x 500)\n", threads);
    printf("%-10s", "spin_us");
    for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++) printf("  gap %6.0f us", gaps[g] * 1e6);
    printf("\n");
    for (size_t s = 0; s < 2; s++) {
        setenv("FORGE_POOL_SPIN_US", spins[s], 1);
        fg_pool *pool;
        if (fg_pool_init(threads, &pool) != FG_OK) exit(1);
        printf("%-10s", spins[s]);
        for (size_t g = 0; g < sizeof gaps / sizeof gaps[0]; g++) {
            double med[5];
            for (int rep = 0; rep < 5; rep++) {
                double run_time = 0;
                for (int i = 0; i < 500; i++) {
                    spin_for(gaps[g]);
                    double t0 = now_s();
                    fg_pool_run(pool, empty_fn, NULL);
                    run_time += now_s() - t0;
                }
                med[rep] = run_time / 500;
            }
            for (int i = 0; i < 5; i++)
                for (int j = i + 1; j < 5; j++)
                    if (med[j] < med[i]) {
                        double t = med[i];
                        med[i] = med[j];
                        med[j] = t;
                    }
            printf("  %13.2f", med[2] * 1e6);
        }
        printf("\n");
        fg_pool_free(pool);
    }
    unsetenv("FORGE_POOL_SPIN_US");
}

/* ---- Products ------------------------------------------------------------------------------ */

/* Times fg_cpu_matmul on `copies` weight matrices in turn for at least
 * min_s, best of 3; returns seconds per call. */
static double time_matmul(fg_pool *pool, fg_type t, const uint8_t *w, size_t mat_bytes, int copies, int64_t N,
                          int64_t K, const float *x, int64_t T, float *y, void *scratch, double min_s)
{
    size_t rb = fg_type_row_size(t, K);
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        int calls = 0;
        double t0 = now_s(), el;
        do {
            fg_cpu_matmul(pool, t, w + (size_t)(calls % copies) * mat_bytes, rb, N, K, x, K, T, y, N, NULL, scratch);
            calls++;
            el = now_s() - t0;
        } while (el < min_s || calls < copies);
        if (el / calls < best) best = el / calls;
    }
    return best;
}

typedef struct mm_shape {
    int64_t K, N;
    const char *what;
} mm_shape;

static const mm_shape shapes[] = {
    {576, 1536, "ffn_up/gate"},
    {1536, 576, "ffn_down"},
    {576, 49152, "output"},
};

/* K rounded down to t's block size (576 -> 512 for the K-quants). */
static int64_t block_k(fg_type t, int64_t K)
{
    int64_t bs = fg_type_get(t)->block_size;
    return K / bs * bs;
}

static bool type_wanted(const char *list, fg_type t)
{
    if (!list) return true;
    char buf[256];
    snprintf(buf, sizeof buf, ",%s,", list);
    char name[32];
    snprintf(name, sizeof name, ",%s,", fg_type_name(t));
    return strstr(buf, name) != NULL;
}

static const fg_type all_types[] = {FG_TYPE_F32,  FG_TYPE_F16,  FG_TYPE_BF16, FG_TYPE_Q4_0, FG_TYPE_Q4_1,
                                    FG_TYPE_Q5_0, FG_TYPE_Q5_1, FG_TYPE_Q8_0, FG_TYPE_Q2_K, FG_TYPE_Q3_K,
                                    FG_TYPE_Q4_K, FG_TYPE_Q5_K, FG_TYPE_Q6_K};

static void bench_gemv(int threads, const char *types)
{
    const size_t cold_bytes = (size_t)128 << 20;
    uint8_t *pool_mem = xmalloc(cold_bytes + ((size_t)64 << 20));
    fill_sane(pool_mem, cold_bytes + ((size_t)64 << 20));
    fg_pool *pool;
    if (fg_pool_init(threads, &pool) != FG_OK) exit(1);
    printf("\ngemv (T = 1), %d thread%s, %s kernels: GB/s of weights (cold: from DRAM; hot: cache resident), "
           "us per call\n", threads, threads > 1 ? "s" : "", fg_cpu_matmul_isa());
    printf("%-5s %-18s %8s %8s %9s %9s\n", "type", "[K x N]", "MB", "us cold", "GB/s cold", "GB/s hot");
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        fg_type t = all_types[ti];
        if (!type_wanted(types, t)) continue;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            int64_t K = block_k(t, shapes[si].K), N = shapes[si].N;
            size_t mat = fg_type_row_size(t, K) * (size_t)N;
            if (mat > cold_bytes) continue;
            int copies = (int)(cold_bytes / mat);
            float *x = xmalloc((size_t)K * 4), *y = xmalloc((size_t)N * 4);
            fill_x(x, (size_t)K);
            void *scratch = xmalloc(fg_cpu_matmul_scratch(t, K, 1) + 64);
            double cold = time_matmul(pool, t, pool_mem, mat, copies, N, K, x, 1, y, scratch, 0.15);
            double hot = time_matmul(pool, t, pool_mem, mat, 1, N, K, x, 1, y, scratch, 0.1);
            char sh[32];
            snprintf(sh, sizeof sh, "[%lld x %lld]", (long long)K, (long long)N);
            printf("%-5s %-18s %8.2f %8.1f %9.1f %9.1f\n", fg_type_name(t), sh, (double)mat / 1e6, cold * 1e6,
                   (double)mat / cold / 1e9, (double)mat / hot / 1e9);
            free(x);
            free(y);
            free(scratch);
        }
    }
    fg_pool_free(pool);
    free(pool_mem);
}

static void bench_gemm(int threads, const char *types)
{
    fg_pool *pool;
    if (fg_pool_init(threads, &pool) != FG_OK) exit(1);
    const int64_t Ts[] = {64, 512};
    printf("\ngemm (prefill), %d thread%s, %s kernels: GFLOP/s (2 N K T per product)\n", threads,
           threads > 1 ? "s" : "", fg_cpu_matmul_isa());
    printf("%-5s %-18s %10s %10s\n", "type", "[K x N]", "T=64", "T=512");
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        fg_type t = all_types[ti];
        if (!type_wanted(types, t)) continue;
        for (size_t si = 0; si < 2; si++) {
            int64_t K = block_k(t, shapes[si].K), N = shapes[si].N;
            size_t mat = fg_type_row_size(t, K) * (size_t)N;
            uint8_t *w = xmalloc(mat);
            fill_sane(w, mat);
            char sh[32];
            snprintf(sh, sizeof sh, "[%lld x %lld]", (long long)K, (long long)N);
            printf("%-5s %-18s", fg_type_name(t), sh);
            for (size_t i = 0; i < 2; i++) {
                int64_t T = Ts[i];
                float *x = xmalloc((size_t)(K * T) * 4), *y = xmalloc((size_t)(N * T) * 4);
                fill_x(x, (size_t)(K * T));
                void *scratch = xmalloc(fg_cpu_matmul_scratch(t, K, T) + 64);
                double s = time_matmul(pool, t, w, mat, 1, N, K, x, T, y, scratch, 0.1);
                printf(" %10.1f", 2.0 * (double)N * (double)K * (double)T / s / 1e9);
                free(x);
                free(y);
                free(scratch);
            }
            printf("\n");
            free(w);
        }
    }
    fg_pool_free(pool);
}

/* ---- A model's decode step -------------------------------------------------------------------- */

static bool name_starts(fg_gguf_str s, const char *p)
{
    size_t n = strlen(p);
    return s.len >= n && memcmp(s.ptr, p, n) == 0;
}

static void bench_model(const char *path, int threads, double bw)
{
    fg_gguf *g;
    if (fg_gguf_open(path, &g) != FG_OK) {
        fprintf(stderr, "bench: %s\n", fg_last_error());
        return;
    }
    /* The step's matmuls: 2-D blk.* weights in file order, then the output. */
    const fg_gguf_tensor *mats[1024];
    int n = 0;
    for (uint64_t i = 0; i < g->n_tensors && n < 1023; i++) {
        const fg_gguf_tensor *t = &g->tensors[i];
        if (t->n_dims == 2 && name_starts(t->name, "blk.") && fg_cpu_matmul_supported(t->type)) mats[n++] = t;
    }
    const fg_gguf_tensor *out = fg_gguf_find_tensor(g, "output.weight");
    if (!out) out = fg_gguf_find_tensor(g, "token_embd.weight");
    if (out) mats[n++] = out;
    double bytes = 0;
    int64_t maxK = 0, maxN = 0;
    size_t scratch_bytes = 0;
    for (int i = 0; i < n; i++) {
        bytes += (double)mats[i]->nbytes;
        if (mats[i]->ne[0] > maxK) maxK = mats[i]->ne[0];
        if (mats[i]->ne[1] > maxN) maxN = mats[i]->ne[1];
        size_t s = fg_cpu_matmul_scratch(mats[i]->type, mats[i]->ne[0], 1);
        if (s > scratch_bytes) scratch_bytes = s;
    }
    float *x = xmalloc((size_t)maxK * 4), *y = xmalloc((size_t)maxN * 4);
    fill_x(x, (size_t)maxK);
    void *scratch = xmalloc(scratch_bytes + 64);
    fg_pool *pool;
    if (fg_pool_init(threads, &pool) != FG_OK) exit(1);
    double best = 1e9;
    for (int rep = 0; rep < 8; rep++) {
        double t0 = now_s();
        for (int i = 0; i < n; i++) {
            const fg_gguf_tensor *t = mats[i];
            fg_cpu_matmul(pool, t->type, t->data, fg_type_row_size(t->type, t->ne[0]), t->ne[1], t->ne[0], x,
                          t->ne[0], 1, y, t->ne[1], NULL, scratch);
        }
        double dt = now_s() - t0;
        if (rep > 0 && dt < best) best = dt; /* rep 0 faults the mapping in */
    }
    printf("\nmodel %s: %d matmuls, %.1f MB of weights per token, %d thread%s, %s kernels\n", path, n, bytes / 1e6,
           threads, threads > 1 ? "s" : "", fg_cpu_matmul_isa());
    printf("  all matmuls of one decode step: %.2f ms = %.1f GB/s = %.0f tok/s if nothing else ran; "
           "floor at %.1f GB/s: %.2f ms (%.0f%% of it)\n",
           best * 1e3, bytes / best / 1e9, 1.0 / best, bw, bytes / (bw * 1e9) * 1e3, 100.0 * bytes / (bw * 1e9) / best);
    fg_pool_free(pool);
    free(x);
    free(y);
    free(scratch);
    fg_gguf_close(g);
}

int main(int argc, char **argv)
{
    bool do_bw = false, do_pool = false, do_gemv = false, do_gemm = false, any = false;
    const char *models[8];
    int n_models = 0, threads = 0;
    const char *types = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "bw")) do_bw = any = true;
        else if (!strcmp(argv[i], "pool")) do_pool = any = true;
        else if (!strcmp(argv[i], "gemv")) do_gemv = any = true;
        else if (!strcmp(argv[i], "gemm")) do_gemm = any = true;
        else if (!strcmp(argv[i], "model") && i + 1 < argc && n_models < 8) models[n_models++] = argv[++i], any = true;
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--types") && i + 1 < argc) types = argv[++i];
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            if (!fg_cpu_matmul_force_isa(argv[++i])) {
                fprintf(stderr, "bench: instruction set %s is not available here\n", argv[i]);
                return 1;
            }
        } else {
            fprintf(stderr, "usage: %s [bw|pool|gemv|gemm|model FILE]... [-t N] [--isa NAME] [--types A,B]\n", argv[0]);
            return 2;
        }
    }
    if (!any) do_bw = do_pool = do_gemv = do_gemm = true;
    printf("forge matmul bench: %d cores available, kernels %s\n", fg_cpu_count(), fg_cpu_matmul_isa());
    int tlist[2] = {1, 2}, nt = 2;
    if (threads > 0) tlist[0] = threads, nt = 1;
    double bw[2] = {0, 0}; /* per entry of tlist */
    if (do_bw || n_models) {
        printf("\nread bandwidth (256 MiB, best of 5):");
        for (int i = 0; i < nt; i++) {
            bw[i] = bench_bw(tlist[i]);
            printf("  %d thread%s %.1f GB/s", tlist[i], tlist[i] > 1 ? "s" : "", bw[i]);
        }
        printf("\n");
    }
    for (int i = 0; i < nt; i++) {
        if (do_pool && tlist[i] > 1) bench_pool(tlist[i]);
        if (do_gemv) bench_gemv(tlist[i], types);
        if (do_gemm) bench_gemm(tlist[i], types);
        for (int m = 0; m < n_models; m++) bench_model(models[m], tlist[i], bw[i]);
    }
    return 0;
}
