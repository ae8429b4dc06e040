/*
 * utf8.h — UTF-8 validation and sequence lengths, shared by the GGUF validator
 * (strings must be valid) and the tokenizers (streaming detokenization must
 * never emit half a character).
 */
#ifndef FG_BASE_UTF8_H
#define FG_BASE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the sequence announced by lead byte c: 1..4, or 0 if c cannot start
 * a sequence (a continuation byte or 0xF8..0xFF). */
static inline int fg_utf8_seq_len(uint8_t c)
{
    if (c < 0x80) return 1;
    if (c < 0xC0) return 0;
    if (c < 0xE0) return 2;
    if (c < 0xF0) return 3;
    if (c < 0xF8) return 4;
    return 0;
}

/* Decodes one well-formed code point at s[0..n) into *cp and returns its
 * length, or returns 0 if the bytes there are not a valid, shortest-form,
 * non-surrogate UTF-8 sequence. */
int fg_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);

/* Encodes cp (<= 0x10FFFF) into out (4 bytes room); returns the length. */
int fg_utf8_encode(uint32_t cp, char *out);

/* True if s[0..n) is entirely valid UTF-8; else *bad_at is the first bad offset. */
bool fg_utf8_valid(const uint8_t *s, size_t n, size_t *bad_at);

/* The length of the longest prefix of s[0..n) that does not end inside an
 * incomplete sequence: bytes after it are a partial character that more input
 * may complete. Invalid bytes count as complete (they are never completed). */
size_t fg_utf8_complete_prefix(const uint8_t *s, size_t n);

#endif
