/*
 * buf.h — a growable byte string: malloc'd, NUL-terminated once anything
 * has been appended. Zero-initialize to start; free(b.s) to end.
 */
#ifndef FG_BASE_BUF_H
#define FG_BASE_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct fg_buf {
    char *s;
    size_t len, cap;
} fg_buf;

/* Appends n bytes of data (and keeps a NUL after them). False, with b
 * unchanged, if memory runs out. */
bool fg_buf_append(fg_buf *b, const void *data, size_t n);

#endif
