/*
 * json.c — JSON in and out for the routes (cJSON): OpenAI's error object,
 * replies, text made valid UTF-8, and the checked reading of a request's
 * optional fields (a wrong type or a value out of range is a 400 naming
 * the field).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "server/routes.h"

static const char *error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    }
    return status >= 500 ? "server_error" : "invalid_request_error";
}

char *srv_json_print(cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* The message may quote the client's bytes (a role, a path), cut anywhere
 * by a %.64s or by the buffer: http.c makes every JSON body it sends valid
 * UTF-8. */
void srv_error(srv_response *out, int status, const char *param, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", error_type(status));
    if (param) cJSON_AddStringToObject(e, "param", param);
    else cJSON_AddNullToObject(e, "param");
    cJSON_AddNumberToObject(e, "code", status);
    out->status = status;
    out->body = srv_json_print(root);
    out->content_type = NULL;
    if (status == 429) out->retry_after = 1;
}

void srv_json_reply(srv_response *out, int status, cJSON *j)
{
    out->status = status;
    out->body = srv_json_print(j);
    if (!out->body) srv_error(out, 500, NULL, "out of memory");
}

/* Valid UTF-8 for JSON: invalid bytes become U+FFFD (a token may be part of
 * a character). Malloc'd. */
char *srv_utf8_clean(const char *s, size_t n)
{
    char *o = malloc(3 * n + 1), *p = o;
    if (!o) return NULL;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int k = fg_utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (k > 0) {
            memcpy(p, s + i, (size_t)k);
            p += k;
            i += (size_t)k;
        } else {
            memcpy(p, "\xEF\xBF\xBD", 3);
            p += 3;
            i++;
        }
    }
    *p = 0;
    return o;
}

cJSON *srv_json_add_text(cJSON *obj, const char *name, const char *s, size_t n)
{
    char *c = srv_utf8_clean(s, n);
    cJSON *r = cJSON_AddStringToObject(obj, name, c ? c : "");
    free(c);
    return r;
}

/* Reads an optional number field: absent or null leaves *v; a wrong type,
 * a non-integer where one is wanted, or a value outside [lo, hi] is a 400
 * naming the field. */
bool srv_json_num(const cJSON *root, const char *name, double lo, double hi, bool integer, double *v,
                  srv_response *out)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!f || cJSON_IsNull(f)) return true;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble)) {
        srv_error(out, 400, name, "'%s' must be a number", name);
        return false;
    }
    double x = f->valuedouble;
    if (integer && x != floor(x)) {
        srv_error(out, 400, name, "'%s' must be an integer, not %g", name, x);
        return false;
    }
    if (x < lo || x > hi) {
        srv_error(out, 400, name, "'%s' is %g, out of range: it must be in [%g, %g]", name, x, lo, hi);
        return false;
    }
    *v = x;
    return true;
}

bool srv_json_bool(const cJSON *root, const char *name, bool *v, srv_response *out)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!f || cJSON_IsNull(f)) return true;
    if (!cJSON_IsBool(f)) {
        srv_error(out, 400, name, "'%s' must be a boolean", name);
        return false;
    }
    *v = cJSON_IsTrue(f);
    return true;
}

bool srv_json_check_string(const cJSON *root, const char *name, srv_response *out)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, name);
    if (f && !cJSON_IsNull(f) && !cJSON_IsString(f)) {
        srv_error(out, 400, name, "'%s' must be a string", name);
        return false;
    }
    return true;
}

cJSON *srv_json_object(const char *body, size_t len, srv_response *out)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) srv_error(out, 400, NULL, "the body is not valid JSON");
    else if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        root = NULL;
        srv_error(out, 400, NULL, "the body must be a JSON object");
    }
    return root;
}

/* Appends s (valid UTF-8) as a JSON string literal. */
bool srv_json_append_string(fg_buf *o, const char *s, size_t n)
{
    bool ok = fg_buf_append(o, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; ok && i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)s[i] : 0;
        if (i < n && c >= 0x20 && c != '"' && c != '\\') continue;
        ok = fg_buf_append(o, s + run, i - run);
        run = i + 1;
        if (!ok || i == n) break;
        char esc[8];
        int k = c == '"' ? snprintf(esc, sizeof esc, "\\\"") : c == '\\' ? snprintf(esc, sizeof esc, "\\\\")
                : c == '\n' ? snprintf(esc, sizeof esc, "\\n") : c == '\t' ? snprintf(esc, sizeof esc, "\\t")
                : c == '\r' ? snprintf(esc, sizeof esc, "\\r") : snprintf(esc, sizeof esc, "\\u%04x", c);
        ok = fg_buf_append(o, esc, (size_t)k);
    }
    return ok && fg_buf_append(o, "\"", 1);
}
