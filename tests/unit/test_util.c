/*
 * test_util.c — see test_util.h.
 */
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/utf8.h"

bool fg_test_model_path(const char *file, char *buf, size_t cap)
{
    const char *dir = getenv("FORGE_MODEL_DIR");
    if (!dir || !*dir) dir = "models";
    snprintf(buf, cap, "%s/%s", dir, file);
    return access(buf, R_OK) == 0;
}

/* Reads the rest of f into a malloc'd NUL-terminated buffer; closes f. */
static char *read_stream(FILE *f, size_t *len)
{
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

char *fg_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    return f ? read_stream(f, len) : NULL;
}

cJSON *fg_test_golden_json(const char *rel, const char *kind, int ver)
{
    FILE *f = fg_test_golden_open(rel, kind, ver);
    if (!f) return NULL;
    size_t n;
    char *text = read_stream(f, &n);
    if (!text) return NULL;
    cJSON *doc = cJSON_ParseWithLength(text, n);
    if (!doc) fprintf(stderr, "golden tests/data/%s: not valid JSON after the header\n", rel);
    free(text);
    return doc;
}

FILE *fg_test_golden_open(const char *rel, const char *kind, int ver)
{
    char path[1024];
    snprintf(path, sizeof path, "tests/data/%s", rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "golden %s: cannot open (run tests from the repo root)\n", path);
        return NULL;
    }
    char line[256], want[256];
    snprintf(want, sizeof want, "forge-golden %s v%d\n", kind, ver);
    if (!fgets(line, sizeof line, f) || strcmp(line, want) != 0) {
        fprintf(stderr, "golden %s: header is not '%.*s'\n", path, (int)strlen(want) - 1, want);
        fclose(f);
        return NULL;
    }
    return f;
}

int fg_test_manifest_each(const char *dir, void (*fn)(const char *path, const char *want))
{
    char path[1024];
    snprintf(path, sizeof path, "tests/data/%s/MANIFEST", dir);
    char *manifest = fg_test_read_file(path, NULL);
    if (!manifest) return -1;
    int n = 0;
    char *save;
    for (char *line = strtok_r(manifest, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        if (!tab) {
            n = -1;
            break;
        }
        *tab = 0;
        snprintf(path, sizeof path, "tests/data/%s/%s", dir, line);
        fn(path, tab + 1);
        n++;
    }
    free(manifest);
    return n;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

bool fg_test_json_string(const char **p, fg_test_str *out)
{
    const char *s = *p;
    if (*s++ != '"') return false;
    /* The decoded string is never longer than its escaped form. */
    char *buf = malloc(strlen(s) + 1);
    size_t n = 0;
    if (!buf) return false;
    while (*s && *s != '"') {
        if (*s != '\\') {
            buf[n++] = *s++;
            continue;
        }
        s++;
        char c = *s++;
        switch (c) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            int hi = hex4(s);
            if (hi < 0) goto bad;
            s += 4;
            uint32_t cp = (uint32_t)hi;
            if (hi >= 0xD800 && hi <= 0xDBFF) {
                int lo = s[0] == '\\' && s[1] == 'u' ? hex4(s + 2) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF) goto bad;
                s += 6;
                cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
            } else if (hi >= 0xDC00 && hi <= 0xDFFF) {
                goto bad;
            }
            n += (size_t)fg_utf8_encode(cp, buf + n);
            break;
        }
        default: goto bad;
        }
    }
    if (*s != '"') goto bad;
    *p = s + 1;
    buf[n] = 0;
    *out = (fg_test_str){buf, n};
    return true;
bad:
    free(buf);
    return false;
}

static const char *skip_space(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    return p;
}

bool fg_test_corpus_load(const char *rel, const char *kind, fg_test_corpus *out)
{
    *out = (fg_test_corpus){0};
    FILE *f = fg_test_golden_open(rel, kind, 1);
    if (!f) return false;
    fclose(f);
    char path[1024];
    snprintf(path, sizeof path, "tests/data/%s", rel);
    char *file = fg_test_read_file(path, NULL);
    if (!file) return false;
    const char *p = skip_space(strchr(file, '\n') + 1);
    bool ok = *p++ == '[';
    size_t cap = 0;
    while (ok && *(p = skip_space(p)) != ']') {
        if (out->n == cap) {
            cap = cap ? 2 * cap : 512;
            fg_test_str *v = realloc(out->v, cap * sizeof *v);
            if (!v) break;
            out->v = v;
        }
        ok = fg_test_json_string(&p, &out->v[out->n]);
        if (!ok) break;
        out->n++;
        p = skip_space(p);
        if (*p == ',') p++;
        else ok = *p == ']';
    }
    if (!ok) {
        fprintf(stderr, "%s: string %zu is not valid JSON, or the file is not a JSON array of strings\n", path,
                out->n);
        fg_test_corpus_free(out);
    }
    free(file);
    return ok;
}

void fg_test_corpus_free(fg_test_corpus *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->v[i].s);
    free(c->v);
    *c = (fg_test_corpus){0};
}

fg_status fg_test_rig_open(fg_test_rig *r, const char *path, fg_backend *be, int32_t n_ctx, fg_type kv)
{
    memset(r, 0, sizeof *r);
    r->be = be;
    fg_status st = fg_model_open(path, &r->m);
    if (st == FG_OK) st = fg_forward_init(r->m, r->be, n_ctx, 64, kv, NULL, NULL, &r->f);
    if (st == FG_OK) st = fg_session_init(r->f, fg_model_n_vocab(r->m), &r->s);
    if (st != FG_OK) fg_test_rig_close(r);
    return st;
}

void fg_test_rig_close(fg_test_rig *r)
{
    fg_session_free(r->s);
    fg_forward_free(r->f);
    fg_backend_free(r->be);
    fg_model_close(r->m);
    memset(r, 0, sizeof *r);
}

int32_t fg_test_argmax(const float *v, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

void fg_test_keep_logits(void *ctx, int32_t i, const float *logits)
{
    fg_test_keep *k = ctx;
    memcpy(k->dst + (size_t)i * (size_t)k->n_vocab, logits, (size_t)k->n_vocab * sizeof(float));
}

bool fg_test_synth_compare(fg_test_rig *r, const char *type, fg_test_synth *out)
{
    char rel[128];
    snprintf(rel, sizeof rel, "llama-synth/%s.json", type);
    cJSON *g = fg_test_golden_json(rel, "llama-synth", 1);
    if (!g) return false;
    const cJSON *prompt = cJSON_GetObjectItem(g, "prompt"), *logits = cJSON_GetObjectItem(g, "logits"),
                *greedy = cJSON_GetObjectItem(g, "greedy");
    int n = cJSON_GetArraySize(prompt), n_greedy = cJSON_GetArraySize(greedy);
    int32_t n_vocab = fg_model_n_vocab(r->m);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    fg_test_keep k = {malloc((size_t)n * (size_t)n_vocab * sizeof(float)), n_vocab};
    bool ok = ids && k.dst && cJSON_GetArraySize(logits) == n;
    for (int i = 0; ok && i < n; i++) ids[i] = (int32_t)cJSON_GetArrayItem(prompt, i)->valuedouble;
    *out = (fg_test_synth){0, 0, n, 0, n_greedy};
    fg_session_truncate(r->s, 0);
    if (ok && fg_session_eval_all(r->s, ids, n, fg_test_keep_logits, &k) != FG_OK) {
        fprintf(stderr, "llama-synth %s: %s\n", type, fg_last_error());
        ok = false;
    }
    for (int p = 0; ok && p < n; p++) {
        const cJSON *row = cJSON_GetArrayItem(logits, p);
        double num = 0, den = 0;
        for (int32_t v = 0; v < n_vocab; v++) {
            double want = cJSON_GetArrayItem(row, v)->valuedouble, got = k.dst[(size_t)p * (size_t)n_vocab + (size_t)v];
            if (got != got) got = 1e30; /* NaN fails every bound */
            num += (got - want) * (got - want);
            den += want * want;
            if (fabs(got - want) > out->max_abs) out->max_abs = fabs(got - want);
        }
        double e = sqrt(num / (den > 0 ? den : 1));
        if (e > out->max_rel) out->max_rel = e;
    }
    /* Greedy, one token at a time after the prompt (the decode path). */
    for (int i = 0; ok && i < n_greedy; i++) {
        int32_t next = fg_test_argmax(fg_session_logits(r->s), n_vocab);
        if (next != (int32_t)cJSON_GetArrayItem(greedy, i)->valuedouble) break;
        out->greedy_same++;
        if (fg_session_eval(r->s, &next, 1) != FG_OK) {
            fprintf(stderr, "llama-synth %s: %s\n", type, fg_last_error());
            ok = false;
        }
    }
    free(ids);
    free(k.dst);
    cJSON_Delete(g);
    return ok;
}

fg_status fg_test_top1(fg_test_rig *r, const int32_t *ids, int n, int32_t *top, float *margin)
{
    int32_t n_vocab = fg_model_n_vocab(r->m);
    fg_test_keep k = {malloc((size_t)n * (size_t)n_vocab * sizeof(float)), n_vocab};
    if (!k.dst) return fg_err_set(FG_ERR_NOMEM, "no memory for %d rows of logits", n);
    fg_session_truncate(r->s, 0);
    fg_status st = fg_session_eval_all(r->s, ids, n, fg_test_keep_logits, &k);
    for (int p = 0; st == FG_OK && p < n; p++) {
        const float *row = k.dst + (size_t)p * (size_t)n_vocab;
        top[p] = fg_test_argmax(row, n_vocab);
        float second = -INFINITY;
        for (int32_t v = 0; v < n_vocab; v++)
            if (v != top[p] && row[v] > second) second = row[v];
        if (margin) margin[p] = row[top[p]] - second;
    }
    free(k.dst);
    return st;
}

fg_status fg_test_runner_finish(fg_runner *e, const uint64_t *ids, int n, int max_steps)
{
    for (int steps = 0; steps < max_steps; steps++) {
        int32_t t;
        FG_TRY(fg_runner_step(e, &t));
        int done = 0;
        for (int i = 0; i < n; i++) {
            fg_req_info info;
            FG_TRY(fg_runner_info(e, ids[i], &info));
            done += info.state == FG_REQ_FINISHED;
        }
        if (done == n) return FG_OK;
    }
    return fg_err_set(FG_ERR_FULL, "the runner did not finish %d requests in %d steps", n, max_steps);
}
