/*
 * threadpool.h — a fork-join pool of worker threads for the CPU backend.
 *
 * fg_pool_run hands the same function to every thread with its index and the
 * thread count and returns when all have finished: the shape of every CPU op
 * (split rows, heads or tokens by index). The calling thread is worker 0, so a
 * pool of n threads starts n-1. Workers wait on a condition variable between
 * runs, so an idle pool costs no CPU. One run at a time: fg_pool_run is not
 * reentrant and must be called from one thread (the engine thread).
 */
#ifndef FG_BASE_THREADPOOL_H
#define FG_BASE_THREADPOOL_H

#include "forge.h"

typedef struct fg_pool fg_pool;

/* Starts a pool of n_threads (>= 1; the caller counts as one). */
fg_status fg_pool_init(int n_threads, fg_pool **out);
void fg_pool_free(fg_pool *p);
int fg_pool_size(const fg_pool *p);

/* Calls fn(ctx, ith, nth) once for each ith in [0, nth) with nth =
 * fg_pool_size(p), in parallel, and returns when every call has returned. */
void fg_pool_run(fg_pool *p, void (*fn)(void *ctx, int ith, int nth), void *ctx);

/* The number of CPU cores available to this process (sched_getaffinity). */
int fg_cpu_count(void);

#endif
