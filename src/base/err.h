/*
 * err.h — error reporting for library code.
 *
 * Library functions return an fg_status and, on failure, leave a message in a
 * per-thread buffer that fg_last_error() returns. fg_err_set formats that
 * message and returns the status, so a failure site reads as one line:
 *     return fg_err_set(FG_ERR_FORMAT, "%s: tensor '%s' ...", path, name);
 * FG_ASSERT is for broken invariants only (bugs), never for bad input.
 */
#ifndef FG_BASE_ERR_H
#define FG_BASE_ERR_H

#include "forge.h"

#if defined(__GNUC__)
#define FG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define FG_PRINTF(a, b)
#endif

/* Sets this thread's error message and returns st. */
fg_status fg_err_set(fg_status st, const char *fmt, ...) FG_PRINTF(2, 3);

/* Prefixes the current message with "prefix: " (for adding context on the way
 * up) and returns st. */
fg_status fg_err_wrap(fg_status st, const char *fmt, ...) FG_PRINTF(2, 3);

void fg_assert_fail(const char *expr, const char *file, int line);

#define FG_ASSERT(x) ((x) ? (void)0 : fg_assert_fail(#x, __FILE__, __LINE__))

/* Propagates a failing status. */
#define FG_TRY(expr)                       \
    do {                                   \
        fg_status fg_try_st_ = (expr);     \
        if (fg_try_st_ != FG_OK)           \
            return fg_try_st_;             \
    } while (0)

#endif
