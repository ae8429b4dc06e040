/*
 * test_util.c — see test_util.h.
 */
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool fg_test_model_path(const char *file, char *buf, size_t cap)
{
    const char *dir = getenv("FORGE_MODEL_DIR");
    if (!dir || !*dir) dir = "models";
    snprintf(buf, cap, "%s/%s", dir, file);
    return access(buf, R_OK) == 0;
}

char *fg_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
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
