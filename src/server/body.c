/*
 * body.c — a request body before and beside cJSON: the checks that come
 * before parsing, the memory a request may take, and raw member text.
 *
 * A small body can ask for a lot: 8 bodies of 3 M token ids each took the
 * server to 2.27 GB, held, and a 7.8 MB /tokenize with pieces ~940 MB. So
 * before parsing, one pass over the body (scan_body) refuses what is not
 * UTF-8 or holds U+0000, and counts its JSON values and string bytes; from
 * those, what parsing and tokenizing it will hold (80 bytes a value, as
 * cJSON allocates, and 12 bytes a string byte for the copies and token
 * ids) must fit the per-request limit (413) and, with the requests being
 * parsed now, the budget (429). A route holds its reservation until the
 * tree and token arrays are freed, and may grow it (a /tokenize reply).
 *
 * Inputs: the body's bytes (not NUL-terminated). Owns: the budget's count,
 * under its mutex.
 */
#include <stdio.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "base/utf8.h"
#include "server/server.h"

enum {
    JSON_VALUE_BYTES = 80, /* what cJSON allocates for one value: its node and the allocator's overhead */
    TEXT_COPY_FACTOR = 12, /* bytes held per byte of strings: copies (tree, joined content, rendered prompt)
                            * and token ids (at most one per byte, 4 bytes each, in arrays that double) */
    TRIM_ABOVE = 16 << 20, /* after freeing more than this, give the heap back to the system */
};

void srv_budget_init(srv_budget *b, size_t request_mem, size_t mem_budget)
{
    pthread_mutex_init(&b->mu, NULL);
    b->request_mem = request_mem;
    b->mem_budget = mem_budget;
    b->held = 0;
}

void srv_budget_free(srv_budget *b)
{
    pthread_mutex_destroy(&b->mu);
}

/* ---- Before parsing ------------------------------------------------------------------- */

typedef struct body_info {
    size_t values;    /* JSON values: the nodes cJSON will allocate */
    size_t str_bytes; /* bytes inside strings */
} body_info;

/* One pass over the body, allocating nothing. It must be UTF-8 (RFC 8259:
 * a prompt's invalid bytes are refused, not dropped), and its strings may
 * hold neither raw control characters (JSON forbids them) nor \u0000, at
 * which cJSON would silently cut the string (a role "user\u0000x" would
 * read as "user"). Counts what the memory estimate needs: values as one
 * plus the commas and openings outside strings. False with a 400. */
static bool scan_body(const char *b, size_t n, body_info *bi, srv_response *out)
{
    size_t bad = 0;
    if (!fg_utf8_valid((const uint8_t *)b, n, &bad)) {
        srv_error(out, 400, NULL, "the body is not valid UTF-8 (at byte %zu): JSON text must be UTF-8", bad);
        return false;
    }
    size_t values = 1, str = 0;
    bool in_str = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!in_str) {
            if (c == '"') in_str = true;
            else if (c == ',' || c == '[' || c == '{') values++;
            continue;
        }
        if (c == '"') {
            in_str = false;
        } else if (c < 0x20) {
            srv_error(out, 400, NULL, "a string in the body holds a raw control character (0x%02x at byte %zu): "
                                      "JSON needs it escaped, as \\n or \\u%04x", c, i, c);
            return false;
        } else if (c == '\\' && i + 1 < n) {
            if (b[i + 1] == 'u' && i + 5 < n && memcmp(b + i + 2, "0000", 4) == 0) {
                srv_error(out, 400, NULL, "a string in the body holds U+0000 (\\u0000 at byte %zu), which forge "
                                          "does not accept", i);
                return false;
            }
            i++;
            str++;
        } else {
            str++;
        }
    }
    bi->values = values;
    bi->str_bytes = str;
    return true;
}

static size_t mib_up(size_t bytes)
{
    return (bytes + (1u << 20) - 1) >> 20;
}

bool srv_budget_reserve(srv_budget *b, size_t *held, size_t want, const char *what, srv_response *out)
{
    if (want > b->request_mem) {
        srv_error(out, 413, NULL, "this request would take about %zu MiB (%s), over the limit of %zu MiB a request "
                                  "(forge serve --request-mem); send less, or raise --request-mem",
                  mib_up(want), what, b->request_mem >> 20);
        return false;
    }
    size_t more = want > *held ? want - *held : 0;
    pthread_mutex_lock(&b->mu);
    size_t busy = b->held - *held;
    bool ok = busy + want <= b->mem_budget || more == 0;
    if (ok) b->held = busy + want;
    pthread_mutex_unlock(&b->mu);
    if (!ok) {
        srv_error(out, 429, NULL, "the server is busy: the requests it is parsing hold %zu MiB of its %zu MiB "
                                  "memory budget (forge serve --mem-budget) and this one needs %zu MiB; retry later",
                  mib_up(busy), b->mem_budget >> 20, mib_up(want));
        return false;
    }
    *held = want;
    return true;
}

/* glibc keeps a large heap freed by a connection thread in that thread's
 * arena; it is given back here, after a large reservation ends. */
void srv_budget_release(srv_budget *b, size_t *held)
{
    if (!*held) return;
    pthread_mutex_lock(&b->mu);
    b->held -= *held;
    pthread_mutex_unlock(&b->mu);
#ifdef __GLIBC__
    if (*held > TRIM_ABOVE) malloc_trim(0);
#endif
    *held = 0;
}

bool srv_body_admit(srv_budget *b, const char *body, size_t len, size_t *held, srv_response *out)
{
    body_info bi;
    if (!scan_body(body, len, &bi, out)) return false;
    char what[128];
    snprintf(what, sizeof what, "a %zu-byte body of %zu JSON values", len, bi.values);
    return srv_budget_reserve(b, held, *held + len + bi.values * JSON_VALUE_BYTES + bi.str_bytes * TEXT_COPY_FACTOR,
                              what, out);
}

/* ---- Raw member text -------------------------------------------------------------------- */

/* Skips the JSON value at b[i] (the body parsed, so it is well formed);
 * returns the index after it. */
static size_t skip_value(const char *b, size_t n, size_t i)
{
    int depth = 0;
    bool in_str = false;
    for (; i < n; i++) {
        char c = b[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') {
                in_str = false;
                if (depth == 0) return i + 1;
            }
            continue;
        }
        if (c == '"') in_str = true;
        else if (c == '[' || c == '{') depth++;
        else if (c == ']' || c == '}') {
            if (depth == 0) return i;
            if (--depth == 0) return i + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return i;
        }
    }
    return i;
}

static size_t skip_ws(const char *b, size_t n, size_t i)
{
    while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) i++;
    return i;
}

bool srv_body_member(const char *b, size_t n, const char *name, const char **v, size_t *vn)
{
    size_t klen = strlen(name), i = skip_ws(b, n, 0);
    if (i >= n || b[i] != '{') return false;
    for (i++;;) {
        i = skip_ws(b, n, i);
        if (i >= n || b[i] != '"') return false;
        size_t ks = i + 1, ke = skip_value(b, n, i) - 1;
        i = skip_ws(b, n, ke + 1);
        if (i >= n || b[i] != ':') return false;
        size_t vs = skip_ws(b, n, i + 1), ve = skip_value(b, n, vs);
        if (ke - ks == klen && memcmp(b + ks, name, klen) == 0) {
            *v = b + vs;
            *vn = ve - vs;
            return true;
        }
        i = skip_ws(b, n, ve);
        if (i >= n || b[i] != ',') return false;
        i++;
    }
}
