/*
 * test_f16.c — the CPU backend's row conversions between f32 and f16 (F16C
 * when present) against the scalar conversions of gguf/quant.h, which
 * test_quant.c checks against numpy bit for bit.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/f16.h"
#include "gguf/quant.h"

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

Test(f16_rows, every_half_widens_like_the_scalar)
{
    enum { N = 65536 };
    uint16_t *h = malloc(N * sizeof *h);
    float *f = malloc(N * sizeof *f);
    for (int i = 0; i < N; i++) h[i] = (uint16_t)i;
    fg_cpu_f16_to_f32_row(h, f, N);
    for (int i = 0; i < N; i++) {
        float want = fg_f16_to_f32((uint16_t)i);
        if (isnan(want)) cr_assert(isnan(f[i]), "half %04x: NaN became %a", i, f[i]);
        else cr_assert_eq(bits(f[i]), bits(want), "half %04x: %a, scalar %a", i, f[i], want);
    }
    free(h);
    free(f);
}

Test(f16_rows, floats_round_like_the_scalar)
{
    enum { N = 1 << 16 };
    float *f = malloc(N * sizeof *f);
    uint16_t *h = malloc(N * sizeof *h);
    uint32_t rng = 1;
    for (int i = 0; i < N; i++) {
        rng = rng * 1664525u + 1013904223u;
        uint32_t u = rng;
        /* Ties and near-ties of f16 rounding, subnormal and overflow ranges,
         * and random bit patterns (NaNs excluded: only their class is kept). */
        if (i % 4 == 0) u = (u & 0xC7FFE000u) | 0x00001000u;
        if (i % 4 == 1) u = 0x33000000u + (u & 0x00FFFFFFu);
        if (i % 4 == 2) u = 0x47000000u + (u & 0x01FFFFFFu);
        float x;
        memcpy(&x, &u, 4);
        f[i] = isnan(x) ? 1.0f : x;
    }
    fg_cpu_f32_to_f16_row(f, h, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(h[i], fg_f32_to_f16(f[i]), "%a: %04x, scalar %04x", f[i], h[i], fg_f32_to_f16(f[i]));
    /* Lengths that are not a multiple of the vector width. */
    for (int n = 0; n < 20; n++) {
        uint16_t out[20] = {0};
        fg_cpu_f32_to_f16_row(f, out, n);
        for (int i = 0; i < 20; i++) cr_assert_eq(out[i], i < n ? fg_f32_to_f16(f[i]) : 0, "n=%d i=%d", n, i);
    }
    free(f);
    free(h);
}
