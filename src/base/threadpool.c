/*
 * threadpool.c — the fork-join pool of threadpool.h.
 *
 * A run is published by bumping a generation counter; each worker waits for
 * the counter to move, calls the function with its index, and decrements a
 * pending count; the calling thread (worker 0) runs its own share and then
 * waits for pending to reach zero. The pool owns its threads, a mutex and two
 * condition variables; fg_pool_free joins the threads.
 *
 * Waiting is a spin followed by a sleep. A decode step is a few hundred
 * matmuls of ~0.1 ms each with small single-threaded ops between them, and
 * waking a sleeping thread is slow: on the 2-vCPU KVM machine of
 * bench/NOTES.md a condition-variable round trip took 30-70 µs when the other
 * vCPU was idle (the wake-up has to bring a halted vCPU back), against
 * 0.1-0.8 µs when the worker was spinning. So a waiting thread spins on the
 * atomic for up to spin_us (default 200 µs; FORGE_POOL_SPIN_US overrides, 0
 * disables) before it sleeps on the condition variable, and a pool between
 * requests costs no CPU. The spin yields the core (sched_yield) after its
 * first few checks: on a machine with more runnable threads than cores a pure
 * spin holds the core that the thread it waits for needs, which measured 400
 * µs per round trip against 6 µs with the yield. The spin is skipped
 * altogether when the pool has more threads than the process has cores.
 *
 * Sleeping uses the Dekker pattern on sequentially consistent atomics: the
 * sleeper announces itself (n_sleeping, main_sleeping) and re-checks the
 * condition under the mutex; the waker changes the condition first and then
 * looks for announced sleepers, taking the mutex to signal. One of the two
 * always sees the other, so no wake-up is lost.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */

#include "base/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "base/err.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

enum { DEFAULT_SPIN_US = 200 };


typedef struct worker {
    fg_pool *pool;
    int ith;
    pthread_t thread;
} worker;

struct fg_pool {
    int n;            /* threads, the caller included */
    int n_started;    /* worker threads actually created (n - 1 on success) */
    int64_t spin_ns;  /* how long a waiting thread spins before it sleeps */
    worker *workers;  /* (n - 1) */

    /* The current run: fn and ctx are written before gen is bumped (release)
     * and read after gen is seen to move (acquire). */
    void (*fn)(void *ctx, int ith, int nth);
    void *ctx;
    _Atomic unsigned gen;
    _Atomic int pending;  /* workers still inside the current run */
    _Atomic bool quit;

    pthread_mutex_t mu;
    pthread_cond_t cv_work;        /* a new run (or quit) for sleeping workers */
    pthread_cond_t cv_done;        /* pending reached 0, for a sleeping caller */
    _Atomic int n_sleeping;        /* workers waiting on cv_work */
    _Atomic bool main_sleeping;    /* the caller waits on cv_done */
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Spins until the run moves on (a new generation for a worker, pending = 0
 * for the caller) or budget_ns passes; true if it moved. The first ~64
 * checks are pause-spins; after that each check is followed by
 * sched_yield(), so that on a machine with more runnable threads than cores
 * a thread that this one waits for, queued on this core, gets to run (a pure
 * spin would hold the core for its whole budget). The clock is read every 16
 * checks.
 */
static bool spin_wait(const fg_pool *p, int64_t budget_ns, bool for_done, unsigned seen)
{
    int64_t deadline = 0;
    for (unsigned i = 1;; i++) {
        if (for_done) {
            if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0) return true;
        } else if (atomic_load_explicit(&p->gen, memory_order_acquire) != seen || atomic_load(&p->quit)) {
            return true;
        }
        if (budget_ns <= 0) return false;
        if (i < 64) {
            cpu_relax();
            continue;
        }
        sched_yield();
        if (i % 16 == 0) {
            int64_t t = now_ns();
            if (!deadline) deadline = t + budget_ns;
            else if (t > deadline) return false;
        }
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    fg_pool *p = w->pool;
    unsigned seen = 0; /* the generation of the last run this worker did */
    for (;;) {
        if (!spin_wait(p, p->spin_ns, false, seen)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->cv_work, &p->mu);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit)) break;
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        p->fn(p->ctx, w->ith, p->n);
        /* The last worker out wakes the caller if it went to sleep. */
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->main_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

static int64_t spin_setting_ns(int n_threads)
{
    long us = DEFAULT_SPIN_US;
    const char *env = getenv("FORGE_POOL_SPIN_US");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v >= 0 && v <= 1000000) us = v;
    }
    if (n_threads > fg_cpu_count()) us = 0;
    return (int64_t)us * 1000;
}

fg_status fg_pool_init(int n_threads, fg_pool **out)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return fg_err_set(FG_ERR_INVALID_ARG, "thread pool: %d threads requested; use 1 to 1024", n_threads);
    fg_pool *p = calloc(1, sizeof *p);
    if (!p) return fg_err_set(FG_ERR_NOMEM, "thread pool: out of memory");
    p->n = n_threads;
    p->spin_ns = spin_setting_ns(n_threads);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->quit, false);
    atomic_init(&p->n_sleeping, 0);
    atomic_init(&p->main_sleeping, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) goto err_nomem;
    }
    for (int i = 1; i < n_threads; i++) {
        worker *w = &p->workers[i - 1];
        w->pool = p;
        w->ith = i;
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            fg_pool_free(p);
            return fg_err_set(FG_ERR_NOMEM, "thread pool: cannot start thread %d of %d (error %d); use fewer threads",
                              i, n_threads, rc);
        }
        p->n_started++;
    }
    *out = p;
    return FG_OK;

err_nomem:
    fg_pool_free(p);
    return fg_err_set(FG_ERR_NOMEM, "thread pool: out of memory");
}

void fg_pool_free(fg_pool *p)
{
    if (!p) return;
    atomic_store(&p->quit, true);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv_work);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

int fg_pool_size(const fg_pool *p)
{
    return p->n;
}

void fg_pool_run(fg_pool *p, void (*fn)(void *ctx, int ith, int nth), void *ctx)
{
    if (p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes fn, ctx and pending */
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv_work);
        pthread_mutex_unlock(&p->mu);
    }

    fn(ctx, 0, p->n);

    if (!spin_wait(p, p->spin_ns, true, 0)) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->main_sleeping, true);
        while (atomic_load(&p->pending) != 0) pthread_cond_wait(&p->cv_done, &p->mu);
        atomic_store(&p->main_sleeping, false);
        pthread_mutex_unlock(&p->mu);
    }
    /* Everything the workers wrote is visible: the acquire load of pending
     * (in the spin or under the mutex) pairs with their seq_cst decrement. */
}

int fg_cpu_count(void)
{
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
