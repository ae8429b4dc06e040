/*
 * err.c — the per-thread error message behind fg_last_error().
 */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FG_ERR_MSG_MAX = 1024 };

static _Thread_local char fg_err_msg[FG_ERR_MSG_MAX];

fg_status fg_err_set(fg_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fg_err_msg, sizeof fg_err_msg, fmt, ap);
    va_end(ap);
    return st;
}

fg_status fg_err_wrap(fg_status st, const char *fmt, ...)
{
    char prefix[FG_ERR_MSG_MAX], old[FG_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, fg_err_msg, sizeof old);
    /* Truncation is acceptable: the message is for people, and bounded. */
    size_t n = strnlen(prefix, sizeof prefix - 1);
    memcpy(fg_err_msg, prefix, n);
    if (n + 2 < sizeof fg_err_msg) {
        memcpy(fg_err_msg + n, ": ", 2);
        n += 2;
        size_t m = strnlen(old, sizeof fg_err_msg - 1 - n);
        memcpy(fg_err_msg + n, old, m);
        n += m;
    }
    fg_err_msg[n] = 0;
    return st;
}

const char *fg_last_error(void)
{
    return fg_err_msg[0] ? fg_err_msg : "no error";
}

const char *fg_status_str(fg_status st)
{
    switch (st) {
    case FG_OK: return "ok";
    case FG_ERR_INVALID_ARG: return "invalid argument";
    case FG_ERR_IO: return "i/o error";
    case FG_ERR_FORMAT: return "format error";
    case FG_ERR_UNSUPPORTED: return "unsupported";
    case FG_ERR_NOMEM: return "out of memory";
    case FG_ERR_NOT_FOUND: return "not found";
    case FG_ERR_DEVICE: return "device error";
    case FG_ERR_FULL: return "full";
    case FG_ERR_TIMEOUT: return "timed out";
    }
    return "unknown status";
}

const char *fg_version(void)
{
    return FORGE_VERSION;
}

void fg_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "forge: internal error: assertion '%s' failed at %s:%d; please report this\n",
            expr, file, line);
    abort();
}
