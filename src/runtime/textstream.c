/*
 * textstream.c — see textstream.h.
 */
#include "runtime/textstream.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

void fg_textstream_init(fg_textstream *t, const fg_tokenizer *tok, const char *const *stops, int32_t n_stops)
{
    memset(t, 0, sizeof *t);
    fg_detok_init(&t->d, tok, false);
    t->stops = stops;
    t->n_stops = n_stops;
}

void fg_textstream_free(fg_textstream *t)
{
    free(t->buf);
    t->buf = NULL;
    t->len = t->cap = t->ready = 0;
}

/* The length of the longest suffix of s[0..n) that is a proper prefix of a
 * stop string: those bytes must wait for more text. */
static size_t held_suffix(const fg_textstream *t, const char *s, size_t n)
{
    size_t hold = 0;
    for (int32_t i = 0; i < t->n_stops; i++) {
        size_t sl = strlen(t->stops[i]);
        if (sl == 0) continue;
        for (size_t k = sl - 1 < n ? sl - 1 : n; k > hold; k--) {
            if (memcmp(s + n - k, t->stops[i], k) == 0) {
                hold = k;
                break;
            }
        }
    }
    return hold;
}

/* The offset of the earliest stop string in the pending text, or -1. No stop
 * string can begin in text already emitted: held_suffix kept back every
 * byte that could have begun one. */
static long find_stop(const fg_textstream *t)
{
    long best = -1;
    for (int32_t i = 0; i < t->n_stops; i++) {
        size_t sl = strlen(t->stops[i]);
        if (sl == 0 || sl > t->len) continue;
        for (size_t at = 0; at + sl <= t->len; at++) {
            if (memcmp(t->buf + at, t->stops[i], sl) == 0) {
                if (best < 0 || (long)at < best) best = (long)at;
                break;
            }
        }
    }
    return best;
}

fg_status fg_textstream_push(fg_textstream *t, int32_t id, bool *stop)
{
    *stop = false;
    FG_TRY(fg_detok_push(&t->d, id, &t->buf, &t->len, &t->cap));
    long at = find_stop(t);
    if (at >= 0) {
        t->len = t->ready = (size_t)at;
        *stop = true;
        return FG_OK;
    }
    t->ready = t->len - held_suffix(t, t->buf, t->len);
    return FG_OK;
}

fg_status fg_textstream_flush(fg_textstream *t)
{
    FG_TRY(fg_detok_flush(&t->d, &t->buf, &t->len, &t->cap));
    t->ready = t->len;
    return FG_OK;
}

void fg_textstream_take(fg_textstream *t)
{
    if (t->ready == 0) return;
    memmove(t->buf, t->buf + t->ready, t->len - t->ready);
    t->len -= t->ready;
    t->ready = 0;
}
