/*
 * clock.h — a monotonic clock for timings (generation stats, benchmarks,
 * the GPU backend's profile).
 */
#ifndef FG_BASE_CLOCK_H
#define FG_BASE_CLOCK_H

#ifdef __cplusplus
extern "C" {
#endif

/* Monotonic milliseconds. */
double fg_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
