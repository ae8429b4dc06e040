/*
 * textstream.h — generated token ids to the text a caller may show: whole
 * UTF-8 characters only (the tokenizer's streaming detokenizer), stop
 * strings found and cut off, and text that may still turn out to be the
 * start of a stop string held back until it cannot.
 *
 * Used by the single-sequence loop (generate.c) and by the engine thread for
 * each request (engine.c), so both stream and stop the same way.
 *
 * Usage: fg_textstream_push each generated id; afterwards buf[0..ready) may
 * be emitted, then fg_textstream_take drops it. When generation ends other
 * than by a stop string, fg_textstream_flush releases the rest. Owns buf;
 * borrows the tokenizer and the stop strings, which must outlive it.
 */
#ifndef FG_RUNTIME_TEXTSTREAM_H
#define FG_RUNTIME_TEXTSTREAM_H

#include <stdbool.h>
#include <stddef.h>

#include "tokenizer/tokenizer.h"

typedef struct fg_textstream {
    fg_detok d;
    const char *const *stops; /* (n_stops) non-empty stop strings */
    int32_t n_stops;
    char *buf;    /* (cap) decoded and not yet taken: ready bytes, then held ones */
    size_t len, cap;
    size_t ready; /* bytes at the front of buf that may be emitted */
} fg_textstream;

void fg_textstream_init(fg_textstream *t, const fg_tokenizer *tok, const char *const *stops, int32_t n_stops);
void fg_textstream_free(fg_textstream *t);

/* Decodes id. *stop is set when a stop string is now complete: the text
 * from its start on is dropped, and what came before it is ready. Fails
 * only when out of memory. */
fg_status fg_textstream_push(fg_textstream *t, int32_t id, bool *stop);

/* Generation ended without a stop string: a partial character is flushed
 * (as U+FFFD) and every held byte becomes ready. */
fg_status fg_textstream_flush(fg_textstream *t);

/* Drops the ready bytes, once the caller has emitted them. */
void fg_textstream_take(fg_textstream *t);

#endif
