/*
 * routes.h — the routes' private header, shared by the files behind
 * srv_routes_* (server.h):
 *   openai.c   the route table and the routes: models, tokenize, requests,
 *              health, metrics, and the generation routes' steps in order;
 *   json.c     JSON in and out: errors, replies, UTF-8, checked fields.
 *
 * Nothing here is seen by http.c, conns.c, body.c or metrics.c, which
 * know the routes only through server.h.
 */
#ifndef FG_SERVER_ROUTES_H
#define FG_SERVER_ROUTES_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"
#include "server/server.h"

/* ---- JSON (json.c) ------------------------------------------------------------------------- */

/* Prints j unformatted and deletes it; the text is malloc'd (NULL when out
 * of memory). */
char *srv_json_print(cJSON *j);
/* A JSON reply of status, taking j; out of memory is a 500. */
void srv_json_reply(srv_response *out, int status, cJSON *j);
/* s (n bytes) as valid UTF-8 for JSON: invalid bytes become U+FFFD (a
 * token may be part of a character). Malloc'd, NUL-terminated. */
char *srv_utf8_clean(const char *s, size_t n);
/* Adds s (n bytes, made valid UTF-8) to obj as the string member name. */
cJSON *srv_json_add_text(cJSON *obj, const char *name, const char *s, size_t n);
/* Appends s (valid UTF-8) to o as a JSON string literal. */
bool srv_json_append_string(fg_buf *o, const char *s, size_t n);

/* The body as a JSON object, or NULL with a 400 in out. */
cJSON *srv_json_object(const char *body, size_t len, srv_response *out);
/* Optional fields of root: absent or null leaves *v; a wrong type, a
 * non-integer where one is wanted or a number outside [lo, hi] is a 400
 * naming the field (false). */
bool srv_json_num(const cJSON *root, const char *name, double lo, double hi, bool integer, double *v,
                  srv_response *out);
bool srv_json_bool(const cJSON *root, const char *name, bool *v, srv_response *out);
/* A 400 unless the field is absent, null or a string. */
bool srv_json_check_string(const cJSON *root, const char *name, srv_response *out);

#endif
