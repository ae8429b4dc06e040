/*
 * buf.c — see buf.h. Capacity doubles past what is needed, so n appends
 * cost O(total bytes).
 */
#include "base/buf.h"

#include <stdlib.h>
#include <string.h>

bool fg_buf_append(fg_buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = 2 * (b->len + n + 1);
        char *s = realloc(b->s, cap);
        if (!s) return false;
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->len, data, n);
    b->len += n;
    b->s[b->len] = 0;
    return true;
}
