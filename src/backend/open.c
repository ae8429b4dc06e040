/*
 * open.c — fg_backend_open (backend.h): the one place that chooses between
 * the CPU and the GPU backend, so that nothing above src/backend/ knows
 * which backends exist.
 */
#include <string.h>
#include <strings.h>

#include "backend/backend.h"
#include "backend/gpu/gpu.h"
#include "base/err.h"

fg_status fg_backend_open(const char *device, int32_t n_threads, bool reference, fg_backend **out)
{
    *out = NULL;
    const char *dev = device ? device : "auto";
    if (strcmp(dev, "cpu") && strcmp(dev, "auto") && strcmp(dev, "cuda") && strcmp(dev, "hip"))
        return fg_err_set(FG_ERR_INVALID_ARG, "device '%s' is not one of auto, cpu, cuda, hip", dev);
    const char *api = fg_backend_gpu_api();
    bool want_gpu = strcmp(dev, "cuda") == 0 || strcmp(dev, "hip") == 0;
    if (want_gpu && api && strcasecmp(api, dev) != 0)
        return fg_err_set(FG_ERR_UNSUPPORTED, "--device %s: this build of forge has a %s backend, not %s; use --device %s",
                          dev, api, dev, api[0] == 'C' ? "cuda" : "hip");
    bool use_gpu = want_gpu || (strcmp(dev, "auto") == 0 && !reference && fg_backend_gpu_count() > 0);
    if (use_gpu && reference)
        return fg_err_set(FG_ERR_INVALID_ARG, "--reference is a CPU backend mode; use it with --device cpu");
    if (n_threads < 0 || n_threads > 1024)
        return fg_err_set(FG_ERR_INVALID_ARG, "n_threads %d is out of range: it must be in 0..1024 (0: one per core)",
                          n_threads);
    return use_gpu ? fg_backend_gpu_init(0, out) : fg_backend_cpu_init(n_threads, reference, out);
}
