/*
 * test_threadpool.c — checks the fork-join pool (src/base/threadpool.c): every
 * index runs exactly once per run with the right thread count, for pools of 1
 * to 8 threads and thousands of runs in a row (the spin and the sleep paths
 * both: runs back to back, and runs after the workers have gone to sleep);
 * the caller is worker 0; writes made in a run are visible after it; a pool
 * can be freed while idle, right after creation, and after sleeping.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "base/threadpool.h"

enum { MAX_THREADS = 8 };

typedef struct count_ctx {
    _Atomic int calls[MAX_THREADS];
    _Atomic int bad_nth;
    int nth_want;
    pthread_t caller;
    _Atomic int caller_not_0;
    int plain[MAX_THREADS]; /* written without atomics: visible after the run */
} count_ctx;

static void count_fn(void *p, int ith, int nth)
{
    count_ctx *c = p;
    if (nth != c->nth_want || ith < 0 || ith >= nth) {
        atomic_fetch_add(&c->bad_nth, 1);
        return;
    }
    atomic_fetch_add(&c->calls[ith], 1);
    if (ith == 0 && !pthread_equal(pthread_self(), c->caller)) atomic_fetch_add(&c->caller_not_0, 1);
    c->plain[ith]++;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

Test(threadpool, every_index_once_per_run)
{
    for (int n = 1; n <= MAX_THREADS; n++) {
        fg_pool *p;
        cr_assert_eq(fg_pool_init(n, &p), FG_OK);
        cr_assert_eq(fg_pool_size(p), n);
        count_ctx c = {.nth_want = n, .caller = pthread_self()};
        const int runs = 2000;
        for (int r = 0; r < runs; r++) {
            fg_pool_run(p, count_fn, &c);
            /* After each run every index has run exactly r + 1 times. */
            for (int i = 0; i < n; i++) {
                cr_assert_eq(atomic_load(&c.calls[i]), r + 1, "pool of %d, run %d: index %d ran %d times", n, r, i,
                             atomic_load(&c.calls[i]));
                cr_assert_eq(c.plain[i], r + 1);
            }
            /* Now and then let the workers stop spinning and sleep. */
            if (r % 500 == 499) sleep_ms(5);
        }
        cr_assert_eq(atomic_load(&c.bad_nth), 0);
        cr_assert_eq(atomic_load(&c.caller_not_0), 0, "index 0 must run on the calling thread");
        fg_pool_free(p);
    }
}

Test(threadpool, free_while_idle)
{
    for (int n = 1; n <= MAX_THREADS; n++) {
        fg_pool *p;
        cr_assert_eq(fg_pool_init(n, &p), FG_OK);
        fg_pool_free(p); /* right away, workers possibly not started yet */
        cr_assert_eq(fg_pool_init(n, &p), FG_OK);
        count_ctx c = {.nth_want = n, .caller = pthread_self()};
        fg_pool_run(p, count_fn, &c);
        sleep_ms(n == 3 ? 50 : 1); /* once past the spin, into the condition-variable sleep */
        fg_pool_run(p, count_fn, &c);
        for (int i = 0; i < n; i++) cr_assert_eq(atomic_load(&c.calls[i]), 2);
        fg_pool_free(p);
    }
    fg_pool_free(NULL);
}

/* Uneven work: index i sleeps a little, so the caller waits on the others. */
static void uneven_fn(void *p, int ith, int nth)
{
    count_ctx *c = p;
    (void)nth;
    if (ith == nth - 1) sleep_ms(1);
    atomic_fetch_add(&c->calls[ith], 1);
}

Test(threadpool, caller_waits_for_slow_workers)
{
    fg_pool *p;
    cr_assert_eq(fg_pool_init(4, &p), FG_OK);
    count_ctx c = {.nth_want = 4};
    for (int r = 0; r < 50; r++) {
        fg_pool_run(p, uneven_fn, &c);
        for (int i = 0; i < 4; i++) cr_assert_eq(atomic_load(&c.calls[i]), r + 1);
    }
    fg_pool_free(p);
}

Test(threadpool, rejects_bad_sizes_and_counts_cpus)
{
    fg_pool *p = (fg_pool *)1;
    cr_assert_eq(fg_pool_init(0, &p), FG_ERR_INVALID_ARG);
    cr_assert_null(p);
    cr_assert_eq(fg_pool_init(-3, &p), FG_ERR_INVALID_ARG);
    int n = fg_cpu_count();
    cr_assert(n >= 1 && n <= 65536, "fg_cpu_count() = %d", n);
}
