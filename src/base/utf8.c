/*
 * utf8.c — strict UTF-8 decoding (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF).
 */
#include "base/utf8.h"

int fg_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    if (n == 0) return 0;
    int len = fg_utf8_seq_len(s[0]);
    if (len == 0 || (size_t)len > n) return 0;
    if (len == 1) {
        *cp = s[0];
        return 1;
    }
    uint32_t c = s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_cp[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return len;
}

int fg_utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool fg_utf8_valid(const uint8_t *s, size_t n, size_t *bad_at)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int len = fg_utf8_decode(s + i, n - i, &cp);
        if (len == 0) {
            if (bad_at) *bad_at = i;
            return false;
        }
        i += (size_t)len;
    }
    return true;
}

size_t fg_utf8_complete_prefix(const uint8_t *s, size_t n)
{
    /* Only the last 3 bytes can belong to an unfinished sequence. */
    size_t start = n > 3 ? n - 3 : 0;
    for (size_t i = n; i > start; i--) {
        uint8_t c = s[i - 1];
        if ((c & 0xC0) == 0x80) continue; /* continuation: keep looking for its lead */
        int len = fg_utf8_seq_len(c);
        if (len > 1 && (size_t)len > n - (i - 1)) {
            /* A lead byte whose sequence runs past the end: hold it back if the
             * bytes after it so far are all continuations. */
            return i - 1;
        }
        return n;
    }
    return n;
}
